/* keel/time.h — clocks, RFC 3339 timestamps and durations. All times are
 * integer milliseconds: wall clock since the Unix epoch, or monotonic. */
#ifndef KEEL_TIME_H
#define KEEL_TIME_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_TIME_STRLEN 25 /* "2026-11-24T12:03:09.123Z" + NUL */

int64_t keel_now_ms(void);   /* CLOCK_REALTIME */
int64_t keel_mono_ms(void);  /* CLOCK_MONOTONIC */
int64_t keel_mono_ns(void);

/* UTC, millisecond precision, always 24 characters. */
void keel_time_format(char out[KEEL_TIME_STRLEN], int64_t ms);
/* Accepts RFC 3339 (Z or +hh:mm offset, optional fraction). */
int keel_time_parse(const char *s, int64_t *ms);
/* "1500ms", "30s", "5m", "1h30m", "7d"; at least one unit; > 0. */
int keel_duration_parse(const char *s, int64_t *ms);

#endif
