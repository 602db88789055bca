#include "keel/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keel/err.h"
#include "keel/time.h"

void keel_log(const keel_log_t *l, int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;

  if (!l || !l->fn || level > l->level) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  l->fn(l->ud, level, msg);
}

void keel_log_stderr(void *ud, int level, const char *msg) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  char ts[KEEL_TIME_STRLEN];

  keel_time_format(ts, keel_now_ms());
  fprintf(stderr, "%s %s[%s] %s\n", ts, ud ? (const char *)ud : "keel",
          names[level < 0 ? 0 : level > 3 ? 3 : level], msg);
}

int keel_log_level_parse(const char *s) {
  if (!strcmp(s, "error")) return KEEL_LOG_ERROR;
  if (!strcmp(s, "warn")) return KEEL_LOG_WARN;
  if (!strcmp(s, "info")) return KEEL_LOG_INFO;
  if (!strcmp(s, "debug")) return KEEL_LOG_DEBUG;
  return KEEL_EINVAL;
}
