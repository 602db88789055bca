/* keel/err.h — the one error convention of libkeel and the programs.
 *
 * Every fallible function returns int: 0 on success, a negative KEEL_E* code
 * on failure (like libuv's UV_E*).  Functions that can say more also take a
 * keel_err_t * (may be NULL) into which they write a one-line human message
 * naming what is wrong ("field 'role': expected one of admin, operator,
 * viewer").  The message is for people; callers branch on the code only.
 */
#ifndef KEEL_ERR_H
#define KEEL_ERR_H

#include <stddef.h>

enum {
  KEEL_OK = 0,
  KEEL_EINVAL = -1,     /* bad input: malformed, wrong type, unknown field */
  KEEL_ENOMEM = -2,
  KEEL_EIO = -3,        /* storage or OS failure */
  KEEL_ENOENT = -4,     /* no such object */
  KEEL_EEXIST = -5,     /* already exists */
  KEEL_ECONFLICT = -6,  /* stale version (optimistic concurrency) */
  KEEL_ETOOBIG = -7,    /* over a configured size cap */
  KEEL_EAUTH = -8,      /* not authenticated */
  KEEL_EPERM = -9,      /* authenticated, not allowed */
  KEEL_ECORRUPT = -10,  /* integrity check failed */
  KEEL_EAGAIN = -11,    /* try again later */
};

typedef struct keel_err {
  int code;
  char msg[256];
} keel_err_t;

/* Records code and a printf-style message in e (if e is not NULL) and
 * returns code, so callers can write `return keel_err_set(e, KEEL_EINVAL, ...)`. */
int keel_err_set(keel_err_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Static, never NULL. */
const char *keel_strerror(int code);

#endif
