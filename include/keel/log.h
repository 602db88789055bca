/* keel/log.h — logging without globals.
 *
 * libkeel never owns a logger: each program builds a keel_log_t (a sink
 * function, its user data, a threshold) and passes it to whatever logs.
 * A NULL keel_log_t * is valid and discards everything.
 */
#ifndef KEEL_LOG_H
#define KEEL_LOG_H

enum { KEEL_LOG_ERROR = 0, KEEL_LOG_WARN, KEEL_LOG_INFO, KEEL_LOG_DEBUG };

typedef void (*keel_log_fn)(void *ud, int level, const char *msg);

typedef struct keel_log {
  keel_log_fn fn;
  void *ud;
  int level; /* messages above this level are dropped */
} keel_log_t;

void keel_log(const keel_log_t *l, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A ready-made sink: one line per message on stderr with an ISO time and
 * the level.  ud is the program name (const char *) or NULL. */
void keel_log_stderr(void *ud, int level, const char *msg);

/* "error" | "warn" | "info" | "debug" -> level; KEEL_EINVAL otherwise. */
int keel_log_level_parse(const char *s);

#endif
