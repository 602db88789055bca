/* libFuzzer harness: runbook/cron.h.
 *
 * The whole input is the cron text (so seeds are plain specs), given to
 * k_cron_parse as exactly size bytes with no NUL terminator.  Beyond not
 * crashing:
 *   - errors are KEEL_EINVAL with a one-line message, and *out is zeroed;
 *   - a parsed spec has no empty mask and no bit outside its field's range;
 *     its normalized text is no longer than the input and parses to the
 *     same spec;
 *   - k_cron_next from fixed times and one taken from the input equals a
 *     naive search through libc's gmtime_r (minute by minute on matching
 *     days, day by day otherwise, up to the documented horizon), so the
 *     result is after the start, on a minute boundary, matches, and nothing
 *     earlier does; -1 exactly when the naive search finds nothing. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/err.h"
#include "runbook/cron.h"

#include "fuzz_check.h"

#define MIN_MS INT64_C(60000)
#define DAY_MS INT64_C(86400000)

static int day_ok(const k_cron_t *c, const struct tm *tm) {
  int dom = c->mday >> tm->tm_mday & 1, dow = c->wday >> tm->tm_wday & 1;
  if (!(c->month >> (tm->tm_mon + 1) & 1)) return 0;
  return c->day_or ? dom || dow : dom && dow;
}

static int minute_ok(const k_cron_t *c, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  return (c->minute >> tm.tm_min & 1) && (c->hour >> tm.tm_hour & 1) && day_ok(c, &tm);
}

/* k_cron_next's contract, the slow way. */
static int64_t naive_next(const k_cron_t *c, int64_t after) {
  int64_t t, last_year;
  time_t tt;
  struct tm tm;
  if (after >= K_CRON_END_MS) return -1;
  t = after < 0 ? 0 : (after / MIN_MS + 1) * MIN_MS;
  if (t >= K_CRON_END_MS) return -1;
  tt = (time_t)(t / 1000);
  gmtime_r(&tt, &tm);
  last_year = tm.tm_year + 1900 + K_CRON_HORIZON_YEARS;
  for (;;) {
    int64_t day = t / DAY_MS * DAY_MS;
    if (day >= K_CRON_END_MS) return -1;
    tt = (time_t)(day / 1000);
    gmtime_r(&tt, &tm);
    if (tm.tm_year + 1900 > last_year) return -1;
    if (day_ok(c, &tm))
      for (int64_t m = t; m < day + DAY_MS; m += MIN_MS)
        if (minute_ok(c, m)) return m;
    t = day + DAY_MS;
  }
}

static void check_next(const k_cron_t *c, int64_t after) {
  int64_t got = k_cron_next(c, after), want = naive_next(c, after);
  if (got != want) fprintf(stderr, "after %lld: got %lld, want %lld\n", (long long)after,
                           (long long)got, (long long)want);
  CHECK(got == want);
  if (got == -1) return;
  CHECK(got > after && got >= 0 && got < K_CRON_END_MS);
  CHECK(got % MIN_MS == 0);
  CHECK(minute_ok(c, got));
  CHECK(k_cron_next(c, got - 1) == got); /* stable just before it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int64_t afters[] = {
      INT64_MIN,
      -1,
      0,
      INT64_C(951782399999),    /* 2000-02-28T23:59:59.999Z: a 400-year leap day next */
      INT64_C(1795489199999),   /* 2026-11-24T02:59:59.999Z */
      INT64_C(1795489200000),   /* 2026-11-24T03:00:00.000Z */
      INT64_C(1830297540000),   /* 2027-12-31T23:59:00.000Z */
      INT64_C(4107542340000),   /* 2100-02-28T23:59:00.000Z: not a leap year */
      K_CRON_END_MS - 5 * 366 * DAY_MS,
      K_CRON_END_MS - MIN_MS - 1,
      INT64_MAX,
  };
  char *text = malloc(size ? size : 1), *norm = malloc(size + 1);
  k_cron_t c, back;
  keel_err_t e = {0};
  uint64_t h = 1469598103934665603u;
  int rc;

  CHECK(text && norm);
  if (size) memcpy(text, data, size); /* an exact-size copy: ASan sees any overread */
  memset(&c, 0xa5, sizeof c);
  rc = k_cron_parse(text, size, &c, &e);
  if (rc) {
    k_cron_t zero;
    memset(&zero, 0, sizeof zero);
    CHECK(rc == KEEL_EINVAL && e.code == rc);
    CHECK(e.msg[0] && !strchr(e.msg, '\n') && !strchr(e.msg, '\r'));
    CHECK(!memcmp(&c, &zero, sizeof c));
    CHECK(k_cron_next(&c, 0) == -1);
    goto out;
  }
  CHECK(c.minute && !(c.minute >> 60));
  CHECK(c.hour && !(c.hour >> 24));
  CHECK(c.mday && !(c.mday & 1));
  CHECK(c.month && !(c.month & 1) && !(c.month >> 13));
  CHECK(c.wday && !(c.wday >> 7));
  CHECK(c.day_or == 0 || c.day_or == 1);
  CHECK(k_cron_normalize(text, size, norm) <= size);
  CHECK(strlen(norm) <= size);
  CHECK(k_cron_parse(norm, strlen(norm), &back, &e) == 0);
  CHECK(!memcmp(&c, &back, sizeof c));
  for (size_t i = 0; i < sizeof afters / sizeof afters[0]; i++) check_next(&c, afters[i]);
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 1099511628211u;
  check_next(&c, (int64_t)(h % (uint64_t)K_CRON_END_MS));
out:
  free(text);
  free(norm);
  return 0;
}
