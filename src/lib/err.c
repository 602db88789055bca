#include "keel/err.h"

#include <stdarg.h>
#include <stdio.h>

int keel_err_set(keel_err_t *e, int code, const char *fmt, ...) {
  if (e) {
    va_list ap;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

const char *keel_strerror(int code) {
  switch (code) {
  case KEEL_OK: return "ok";
  case KEEL_EINVAL: return "invalid input";
  case KEEL_ENOMEM: return "out of memory";
  case KEEL_EIO: return "i/o error";
  case KEEL_ENOENT: return "not found";
  case KEEL_EEXIST: return "already exists";
  case KEEL_ECONFLICT: return "version conflict";
  case KEEL_ETOOBIG: return "too big";
  case KEEL_EAUTH: return "not authenticated";
  case KEEL_EPERM: return "forbidden";
  case KEEL_ECORRUPT: return "integrity check failed";
  case KEEL_EAGAIN: return "try again";
  default: return "unknown error";
  }
}
