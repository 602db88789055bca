/* keeld_testutil.h — helpers shared by the keeld unit tests: a temporary
 * data directory, a file's text, a number read from the store. */
#ifndef KEELD_TESTUTIL_H
#define KEELD_TESTUTIL_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

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

/* The whole file at path, NUL-terminated (the caller frees it), *len its
 * size; NULL when it cannot be read. */
static inline char *kt_slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (!fp) return NULL;
  if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1))) {
    if (fread(buf, 1, (size_t)n, fp) == (size_t)n) {
      buf[n] = '\0';
      *len = (size_t)n;
    } else {
      free(buf);
      buf = NULL;
    }
  }
  fclose(fp);
  return buf;
}

static inline int kt_int_row(void *ud, const k_val_t *c, int n) {
  if (n > 0 && c[0].type == K_VAL_INT) *(int64_t *)ud = c[0].i;
  return 0;
}

/* The integer in the first column of sql's first row ("SELECT COUNT(*)
 * ..."); -1 when there is none or the query fails. */
static inline int64_t kt_int(k_store_t *s, const char *sql) {
  int64_t v = -1;
  keel_err_t e = {0};
  if (k_store_exec(s, sql, NULL, 0, kt_int_row, &v, &e)) return -1;
  return v;
}

#endif
