/* keeld_testutil.h — helpers shared by the keeld unit tests: a temporary
 * data directory and a store opened in it. */
#ifndef KEELD_TESTUTIL_H
#define KEELD_TESTUTIL_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline int kt_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Fills dir (>= 256 bytes) with a new empty directory; returns 0. */
static inline int kt_mkdtemp(char *dir, size_t n) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, n, "%s/keeld-unit-XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(dir) ? 0 : -1;
}

static inline void kt_rmrf(const char *dir) {
  if (dir && dir[0]) nftw(dir, kt_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
