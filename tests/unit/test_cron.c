/* Unit tests for runbook schedules (runbook/cron.h): every field form and
 * error, the Vixie day rule, rollovers and leap years, the search bound,
 * and a cross-check of k_cron_next against naive searches (through libc's
 * gmtime_r, not cron.c's calendar) over random specs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "keel/time.h"
#include "runbook/cron.h"

#define MIN_MS INT64_C(60000)
#define DAY_MS INT64_C(86400000)

static k_cron_t parse(const char *spec) {
  k_cron_t c;
  keel_err_t e = {0};
  if (k_cron_parse(spec, strlen(spec), &c, &e)) fail_msg("parse '%s': %s", spec, e.msg);
  return c;
}

static int64_t at(const char *rfc3339) {
  int64_t ms;
  if (keel_time_parse(rfc3339, &ms)) fail_msg("bad test time %s", rfc3339);
  return ms;
}

/* k_cron_next as text, so a failure shows the date. */
static const char *next(const char *spec, const char *after, char out[KEEL_TIME_STRLEN]) {
  k_cron_t c = parse(spec);
  int64_t r = k_cron_next(&c, at(after));
  if (r == -1) return "none";
  keel_time_format(out, r);
  return out;
}
#define NEXT(spec, after, want)                         \
  do {                                                  \
    char b_[KEEL_TIME_STRLEN];                          \
    assert_string_equal(next(spec, after, b_), want);   \
  } while (0)

static uint64_t bits(const int *v) {
  uint64_t m = 0;
  for (; *v >= 0; v++) m |= UINT64_C(1) << *v;
  return m;
}
#define BITS(...) bits((const int[]){__VA_ARGS__, -1})

static void test_fields(void **state) {
  k_cron_t c;
  (void)state;
  c = parse("* * * * *");
  assert_true(c.minute == (UINT64_C(1) << 60) - 1);
  assert_int_equal(c.hour, 0xffffff);
  assert_int_equal(c.mday, 0xfffffffe);
  assert_int_equal(c.month, 0x1ffe);
  assert_int_equal(c.wday, 0x7f);
  assert_int_equal(c.day_or, 0);
  c = parse("5 7 9 11 3");
  assert_true(c.minute == BITS(5));
  assert_int_equal(c.hour, BITS(7));
  assert_int_equal(c.mday, BITS(9));
  assert_int_equal(c.month, BITS(11));
  assert_int_equal(c.wday, BITS(3));
  assert_int_equal(c.day_or, 1);
  c = parse("*/15 */6 */10 */5 */2");
  assert_true(c.minute == BITS(0, 15, 30, 45));
  assert_int_equal(c.hour, BITS(0, 6, 12, 18));
  assert_int_equal(c.mday, BITS(1, 11, 21, 31));
  assert_int_equal(c.month, BITS(1, 6, 11));
  assert_int_equal(c.wday, BITS(0, 2, 4, 6));
  assert_int_equal(c.day_or, 0); /* both start with '*' */
  c = parse("10-12 0-2 28-31 2-4 1-5");
  assert_true(c.minute == BITS(10, 11, 12));
  assert_int_equal(c.hour, BITS(0, 1, 2));
  assert_int_equal(c.mday, BITS(28, 29, 30, 31));
  assert_int_equal(c.month, BITS(2, 3, 4));
  assert_int_equal(c.wday, BITS(1, 2, 3, 4, 5));
  c = parse("0-30/10 8-18/5 1-31/15 1-12/6 1-7/3");
  assert_true(c.minute == BITS(0, 10, 20, 30));
  assert_int_equal(c.hour, BITS(8, 13, 18));
  assert_int_equal(c.mday, BITS(1, 16, 31));
  assert_int_equal(c.month, BITS(1, 7));
  assert_int_equal(c.wday, BITS(0, 1, 4)); /* 1, 4, 7 = Sunday */
  /* lists mix every form; duplicates are harmless */
  c = parse("1,2,5-7,*/30,2 0,23 1,31 12,1 0,7");
  assert_true(c.minute == BITS(0, 1, 2, 5, 6, 7, 30));
  assert_int_equal(c.hour, BITS(0, 23));
  assert_int_equal(c.mday, BITS(1, 31));
  assert_int_equal(c.month, BITS(1, 12));
  assert_int_equal(c.wday, BITS(0));
  /* largest steps, single-value ranges, 3-digit numbers */
  c = parse("*/60 0-0/24 */31 12-12 */8");
  assert_true(c.minute == BITS(0));
  assert_int_equal(c.hour, BITS(0));
  assert_int_equal(c.mday, BITS(1));
  assert_int_equal(c.month, BITS(12));
  assert_int_equal(c.wday, BITS(0));
  c = parse("005 023 031 012 007");
  assert_true(c.minute == BITS(5));
  assert_int_equal(c.wday, BITS(0));
  /* day-of-week: 0 and 7 are both Sunday */
  assert_int_equal(parse("0 0 * * 0").wday, BITS(0));
  assert_int_equal(parse("0 0 * * 7").wday, BITS(0));
  assert_int_equal(parse("0 0 * * 6-7").wday, BITS(0, 6));
  assert_int_equal(parse("0 0 * * 0-7").wday, 0x7f);
  /* the day rule is decided by the text: '*' first means unrestricted */
  assert_int_equal(parse("0 0 1 * 1").day_or, 1);
  assert_int_equal(parse("0 0 1-31 * 1").day_or, 1);
  assert_int_equal(parse("0 0 * * 1").day_or, 0);
  assert_int_equal(parse("0 0 1 * *").day_or, 0);
  assert_int_equal(parse("0 0 */2 * 1").day_or, 0);
  assert_int_equal(parse("0 0 1 * *,1").day_or, 0);
  assert_int_equal(parse("0 0 1 * 0-7").day_or, 1);
}

static void test_blanks_and_normalize(void **state) {
  static const char *const cases[][2] = {
      {" 0\t3  * * 1-5 ", "0 3 * * 1-5"},
      {"\t\t*/15 0-23/2 1,15 * 0-7\t", "*/15 0-23/2 1,15 * 0-7"},
      {"0 3 * * *", "0 3 * * *"},
  };
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char out[64];
    size_t n = strlen(cases[i][0]);
    k_cron_t a = parse(cases[i][0]), b;
    assert_int_equal(k_cron_normalize(cases[i][0], n, out), strlen(cases[i][1]));
    assert_string_equal(out, cases[i][1]);
    b = parse(out);
    assert_memory_equal(&a, &b, sizeof a);
  }
}

static void expect_error(const char *spec, size_t len, const char *msg) {
  k_cron_t c, zero;
  keel_err_t e = {0};
  memset(&c, 0xa5, sizeof c);
  memset(&zero, 0, sizeof zero);
  assert_int_equal(k_cron_parse(spec, len, &c, &e), KEEL_EINVAL);
  assert_int_equal(e.code, KEEL_EINVAL);
  assert_string_equal(e.msg, msg);
  assert_memory_equal(&c, &zero, sizeof c);
}
#define ERR(spec, msg) expect_error(spec, strlen(spec), msg)
#define SYNTAX "expected numbers, ranges (1-5), steps (*/15), lists (1,2) or *"
#define FIELDS "expected 5 fields: minute hour day-of-month month day-of-week"

static void test_errors(void **state) {
  (void)state;
  ERR("", "'': " FIELDS);
  ERR(" \t ", "' ? ': " FIELDS);
  ERR("0 3 * *", "'0 3 * *': " FIELDS);
  ERR("0 3 * * * *", "'0 3 * * * *': " FIELDS);
  ERR("0 3 * * * * 1 2 3", "'0 3 * * * * 1 2 3': " FIELDS);
  ERR("60 * * * *", "field 1 (minute) '60': 60 is out of range 0-59");
  ERR("0 24 * * *", "field 2 (hour) '24': 24 is out of range 0-23");
  ERR("0 0 0 * *", "field 3 (day-of-month) '0': 0 is out of range 1-31");
  ERR("0 0 32 * *", "field 3 (day-of-month) '32': 32 is out of range 1-31");
  ERR("0 0 * 0 *", "field 4 (month) '0': 0 is out of range 1-12");
  ERR("0 0 * 1-13 *", "field 4 (month) '1-13': 13 is out of range 1-12");
  ERR("0 0 * * 8", "field 5 (day-of-week) '8': 8 is out of range 0-7");
  ERR("*/0 * * * *", "field 1 (minute) '*/0': step out of range 1-60");
  ERR("*/61 * * * *", "field 1 (minute) '*/61': step out of range 1-60");
  ERR("0 0 * * */9", "field 5 (day-of-week) '*/9': step out of range 1-8");
  ERR("*/ * * * *", "field 1 (minute) '*/': step out of range 1-60");
  ERR("5/15 * * * *", "field 1 (minute) '5/15': a step needs * or a range before it");
  ERR("0 5-3 * * *", "field 2 (hour) '5-3': range 5-3 goes backwards");
  ERR("0 1,,2 * * *", "field 2 (hour) '1,,2': " SYNTAX);
  ERR("0 3 * * MON", "field 5 (day-of-week) 'MON': " SYNTAX);
  ERR("1, * * * *", "field 1 (minute) '1,': " SYNTAX);
  ERR(",1 * * * *", "field 1 (minute) ',1': " SYNTAX);
  ERR("1- * * * *", "field 1 (minute) '1-': " SYNTAX);
  ERR("*-5 * * * *", "field 1 (minute) '*-5': " SYNTAX);
  ERR("0005 * * * *", "field 1 (minute) '0005': " SYNTAX);
  ERR("-1 * * * *", "field 1 (minute) '-1': " SYNTAX);
  ERR("0 3\n * * *", "field 2 (hour) '3?': " SYNTAX);
  ERR("@daily", "'@daily': " FIELDS);
  /* the first bad field is the one named */
  ERR("60 24 * * *", "field 1 (minute) '60': 60 is out of range 0-59");
  /* quoting is docwalk's: at most 64 bytes, then "..." */
  ERR("0 0 * * 1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,x",
      "field 5 (day-of-week) '1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,x': " SYNTAX);
  ERR("0 0 * * 1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,x",
      "field 5 (day-of-week) '1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,5,6,7,1,2,3,4,...': " SYNTAX);
  /* len is honoured: neither a NUL nor what follows it is read */
  expect_error("0 3 * * *", 7, "'0 3 * *': " FIELDS);
  {
    k_cron_t c;
    assert_int_equal(k_cron_parse("0 3 * * 1x", 9, &c, NULL), 0);
    assert_int_equal(c.wday, BITS(1));
  }
}

static void test_next_basic(void **state) {
  (void)state;
  NEXT("0 3 * * *", "2026-11-24T02:59:59.999Z", "2026-11-24T03:00:00.000Z");
  NEXT("0 3 * * *", "2026-11-24T03:00:00.000Z", "2026-11-25T03:00:00.000Z"); /* strictly after */
  NEXT("0 3 * * *", "2026-11-24T03:00:00.001Z", "2026-11-25T03:00:00.000Z");
  NEXT("0 3 * * *", "2026-11-24T02:59:00.000Z", "2026-11-24T03:00:00.000Z");
  NEXT("* * * * *", "2026-11-24T12:00:00.000Z", "2026-11-24T12:01:00.000Z");
  NEXT("* * * * *", "2026-11-24T11:59:59.999Z", "2026-11-24T12:00:00.000Z");
  NEXT("*/15 * * * *", "2026-11-24T12:44:30.000Z", "2026-11-24T12:45:00.000Z");
  NEXT("*/15 * * * *", "2026-11-24T12:45:00.000Z", "2026-11-24T13:00:00.000Z");
  NEXT("30 */6 * * *", "2026-11-24T06:31:00.000Z", "2026-11-24T12:30:00.000Z");
  NEXT("0-30/10 8-18/5 * * *", "2026-11-24T13:30:00.000Z", "2026-11-24T18:00:00.000Z");
  NEXT("5,10 1,2 * * *", "2026-11-24T01:10:00.000Z", "2026-11-24T02:05:00.000Z");
}

static void test_next_rollover(void **state) {
  (void)state;
  NEXT("30 * * * *", "2026-11-24T23:45:00.000Z", "2026-11-25T00:30:00.000Z");  /* day */
  NEXT("0 0 1 * *", "2026-02-15T00:00:00.000Z", "2026-03-01T00:00:00.000Z");   /* month */
  NEXT("0 0 1 * *", "2026-12-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z");   /* year */
  NEXT("0 0 1 1 *", "2026-12-31T23:59:00.000Z", "2027-01-01T00:00:00.000Z");
  NEXT("59 23 31 12 *", "2026-12-31T23:59:00.000Z", "2027-12-31T23:59:00.000Z");
  NEXT("59 23 31 12 *", "2026-12-31T23:58:59.999Z", "2026-12-31T23:59:00.000Z");
  NEXT("0 0 31 * *", "2026-01-31T00:00:00.000Z", "2026-03-31T00:00:00.000Z");  /* skips Feb */
  NEXT("0 0 31 * *", "2026-05-31T00:00:00.000Z", "2026-07-31T00:00:00.000Z");  /* skips Jun */
  NEXT("0 12 * 2 *", "2026-03-01T00:00:00.000Z", "2027-02-01T12:00:00.000Z");
  NEXT("0 0 * 1,7 *", "2026-01-31T00:00:00.000Z", "2026-07-01T00:00:00.000Z");
  NEXT("0 0 30 * *", "2026-01-30T00:00:00.000Z", "2026-03-30T00:00:00.000Z");
}

static void test_leap_years(void **state) {
  (void)state;
  NEXT("0 0 29 2 *", "2026-01-01T00:00:00.000Z", "2028-02-29T00:00:00.000Z");
  NEXT("0 0 29 2 *", "2028-02-29T00:00:00.000Z", "2032-02-29T00:00:00.000Z");
  NEXT("0 0 29 2 *", "2000-01-01T00:00:00.000Z", "2000-02-29T00:00:00.000Z"); /* 400: leap */
  NEXT("0 0 29 2 *", "2096-03-01T00:00:00.000Z", "2104-02-29T00:00:00.000Z"); /* 2100: not */
  NEXT("0 0 29 2 *", "2096-02-29T00:00:00.000Z", "2104-02-29T00:00:00.000Z"); /* the 8-year gap */
  NEXT("0 12 * 2 *", "2100-02-28T12:00:00.000Z", "2101-02-01T12:00:00.000Z");
  NEXT("0 12 * 2 *", "2028-02-28T12:00:00.000Z", "2028-02-29T12:00:00.000Z");
  NEXT("0 0 1 3 *", "2028-02-29T00:00:00.000Z", "2028-03-01T00:00:00.000Z");
  NEXT("59 23 28-29 2 *", "2027-02-28T23:59:00.000Z", "2028-02-28T23:59:00.000Z");
}

/* 2026-11-24 is a Tuesday. */
static void test_day_of_week(void **state) {
  (void)state;
  NEXT("0 9 * * 0", "2026-11-24T00:00:00.000Z", "2026-11-29T09:00:00.000Z");
  NEXT("0 9 * * 7", "2026-11-24T00:00:00.000Z", "2026-11-29T09:00:00.000Z");
  NEXT("0 9 * * 2", "2026-11-24T08:00:00.000Z", "2026-11-24T09:00:00.000Z");
  NEXT("0 9 * * 2", "2026-11-24T09:00:00.000Z", "2026-12-01T09:00:00.000Z");
  NEXT("0 9 * * 1-5", "2026-11-27T09:00:00.000Z", "2026-11-30T09:00:00.000Z"); /* Fri -> Mon */
  NEXT("0 9 * * 6,7", "2026-11-24T00:00:00.000Z", "2026-11-28T09:00:00.000Z");
  NEXT("0 0 * * *", "1970-01-01T00:00:00.000Z", "1970-01-02T00:00:00.000Z");
  NEXT("0 0 * * 4", "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00.000Z"); /* a Thursday */
}

/* Both day fields restricted: either; one starting with '*': both. */
static void test_day_rule(void **state) {
  (void)state;
  /* the 13th or any Friday: Friday 27th comes first */
  NEXT("0 0 13 * 5", "2026-11-24T00:00:00.000Z", "2026-11-27T00:00:00.000Z");
  NEXT("0 0 13 * 5", "2026-11-27T00:00:00.000Z", "2026-12-04T00:00:00.000Z");
  NEXT("0 0 13 * 5", "2026-12-11T00:00:00.000Z", "2026-12-13T00:00:00.000Z"); /* a Sunday */
  NEXT("0 0 13 * *", "2026-11-24T00:00:00.000Z", "2026-12-13T00:00:00.000Z");
  NEXT("0 0 * * 5", "2026-11-24T00:00:00.000Z", "2026-11-27T00:00:00.000Z");
  /* "*\/13" is 1, 14, 27 but counts as '*': Fridays that are one of those */
  NEXT("0 0 */13 * 5", "2026-11-24T00:00:00.000Z", "2026-11-27T00:00:00.000Z");
  NEXT("0 0 */13 * 5", "2026-11-27T00:00:00.000Z", "2027-01-01T00:00:00.000Z");
  /* and the other way round: "*\/7" is Sunday only, so a 1st that is a Sunday */
  NEXT("0 0 1 * */7", "2026-11-24T00:00:00.000Z", "2027-08-01T00:00:00.000Z");
  /* "1-31" is restricted, so with a weekday it means every day */
  NEXT("0 0 1-31 * 1", "2026-11-24T00:00:00.000Z", "2026-11-25T00:00:00.000Z");
  /* OR makes February 31st possible: any Monday in February */
  NEXT("0 0 31 2 1", "2026-01-01T00:00:00.000Z", "2026-02-02T00:00:00.000Z");
  NEXT("0 0 29 2 1", "2026-02-23T00:00:00.000Z", "2027-02-01T00:00:00.000Z");
}

static void test_impossible(void **state) {
  static const char *const never[] = {"0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *",
                                      "* * 30-31 2 *", "0 0 31 2 */2", "59 23 31 2,4 *"};
  int64_t t0 = keel_mono_ns();
  (void)state;
  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
    k_cron_t c = parse(never[i]);
    for (int64_t after = 0; after < 200 * 365 * DAY_MS; after += 7 * 365 * DAY_MS + 12345)
      if (k_cron_next(&c, after) != -1) fail_msg("'%s' matched after %lld", never[i], (long long)after);
  }
  /* ~180 searches of 9 years each: day by day this is well under a second
   * even under sanitizers; minute by minute it would take minutes */
  assert_true(keel_mono_ns() - t0 < INT64_C(2000000000));
}

static void test_bounds(void **state) {
  k_cron_t every = parse("* * * * *"), c;
  (void)state;
  /* nothing before the epoch */
  assert_int_equal(k_cron_next(&every, -1), 0);
  assert_int_equal(k_cron_next(&every, -5), 0);
  assert_int_equal(k_cron_next(&every, INT64_MIN), 0);
  assert_int_equal(k_cron_next(&every, 0), MIN_MS);
  /* nothing from year 10000 on */
  assert_int_equal(k_cron_next(&every, K_CRON_END_MS - MIN_MS - 1), K_CRON_END_MS - MIN_MS);
  assert_int_equal(k_cron_next(&every, K_CRON_END_MS - MIN_MS), -1);
  assert_int_equal(k_cron_next(&every, K_CRON_END_MS), -1);
  assert_int_equal(k_cron_next(&every, INT64_MAX), -1);
  assert_int_equal(K_CRON_END_MS, at("9999-12-31T23:59:00.000Z") + MIN_MS);
  c = parse("0 0 1 1 *");
  assert_int_equal(k_cron_next(&c, at("9999-01-01T00:00:00.000Z")), -1);
  assert_int_equal(k_cron_next(&c, at("9998-06-01T00:00:00.000Z")), at("9999-01-01T00:00:00.000Z"));
  /* the horizon: Feb 29 is found 8 years on, nothing is looked for later */
  c = parse("0 0 29 2 *");
  assert_int_equal(k_cron_next(&c, at("2096-02-29T00:00:00.000Z")), at("2104-02-29T00:00:00.000Z"));
  /* a zeroed (failed) spec matches nothing */
  memset(&c, 0, sizeof c);
  assert_int_equal(k_cron_next(&c, 0), -1);
}

/* ---- cross-check ------------------------------------------------------------ */

static uint64_t rnd_state = 0x9e3779b97f4a7c15u;
static uint32_t rnd(uint32_t n) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return (uint32_t)(rnd_state % n);
}

/* A random spec as text together with what it means, worked out here
 * independently of cron.c. */
typedef struct spec {
  char text[200];
  unsigned char set[5][64]; /* field, value */
  int star[5];              /* the field's text starts with '*' */
} spec_t;

static const int lo_of[5] = {0, 0, 1, 1, 0}, hi_of[5] = {59, 23, 31, 12, 7};

/* rare: days that exist in few months or none (29-31 in Feb, 31 in Apr),
 * with day-of-week unrestricted, so the horizon and -1 get exercised. */
static void gen_field(spec_t *s, int f, int rare, size_t *o) {
  static const int short_months[] = {2, 4, 6, 9, 11};
  int lo = lo_of[f], hi = hi_of[f], items;
  size_t start = *o;
  if (rare && f >= 2) {
    int a = f == 2 ? 29 + (int)rnd(3) : f == 3 ? short_months[rnd(5)] : 0;
    int z = f == 2 ? a + (int)rnd((uint32_t)(32 - a)) : f == 3 ? a : 7;
    int st = f == 4 ? 1 + (int)rnd(8) : 1;
    if (f == 4) *o += (size_t)sprintf(s->text + *o, "*/%d", st);
    else *o += (size_t)sprintf(s->text + *o, "%d-%d", a, z);
    for (int v = a; v <= z; v += st) s->set[f][v] = 1;
    goto out;
  }
  /* day and month fields are often '*' so that many specs match soon */
  if ((f == 2 || f == 3) && rnd(2)) {
    s->text[(*o)++] = '*';
    for (int v = lo; v <= hi; v++) s->set[f][v] = 1;
    goto out;
  }
  items = 1 + (int)rnd(3);
  for (int it = 0; it < items; it++) {
    int a = lo, z = hi, st = 1, form = (int)rnd(5);
    if (it) s->text[(*o)++] = ',';
    if (form == 0) {
      *o += (size_t)sprintf(s->text + *o, "*");
    } else if (form == 1) {
      st = 1 + (int)rnd((uint32_t)(hi - lo + 1));
      *o += (size_t)sprintf(s->text + *o, "*/%d", st);
    } else if (form == 2) {
      a = z = lo + (int)rnd((uint32_t)(hi - lo + 1));
      *o += (size_t)sprintf(s->text + *o, "%d", a);
    } else {
      a = lo + (int)rnd((uint32_t)(hi - lo + 1));
      z = a + (int)rnd((uint32_t)(hi - a + 1));
      if (form == 3) {
        *o += (size_t)sprintf(s->text + *o, "%d-%d", a, z);
      } else {
        st = 1 + (int)rnd((uint32_t)(hi - lo + 1));
        *o += (size_t)sprintf(s->text + *o, "%d-%d/%d", a, z, st);
      }
    }
    for (int v = a; v <= z; v += st) s->set[f][v] = 1;
  }
out:
  s->star[f] = s->text[start] == '*';
}

static void gen(spec_t *s) {
  size_t o = 0;
  int rare = !rnd(16);
  memset(s, 0, sizeof *s);
  for (int f = 0; f < 5; f++) {
    if (f) s->text[o++] = rnd(4) ? ' ' : '\t';
    gen_field(s, f, rare, &o);
  }
  s->text[o] = '\0';
  s->set[4][0] |= s->set[4][7];
}

static int day_ok(const spec_t *s, const struct tm *tm) {
  int dom = s->set[2][tm->tm_mday], dow = s->set[4][tm->tm_wday];
  if (!s->set[3][tm->tm_mon + 1]) return 0;
  return !s->star[2] && !s->star[4] ? dom || dow : dom && dow;
}

static int minute_ok(const spec_t *s, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  return s->set[0][tm.tm_min] && s->set[1][tm.tm_hour] && day_ok(s, &tm);
}

/* The whole contract the slow way: minute by minute on days that match,
 * day by day otherwise, up to the end of the horizon year. */
static int64_t oracle(const spec_t *s, int64_t after) {
  int64_t t = (after / MIN_MS + 1) * MIN_MS, last_year;
  time_t tt = (time_t)(t / 1000);
  struct tm tm;
  gmtime_r(&tt, &tm);
  last_year = tm.tm_year + 1900 + K_CRON_HORIZON_YEARS;
  for (;;) {
    int64_t day = t / DAY_MS * DAY_MS;
    tt = (time_t)(day / 1000);
    gmtime_r(&tt, &tm);
    if (tm.tm_year + 1900 > last_year) return -1;
    if (day_ok(s, &tm))
      for (int64_t m = t; m < day + DAY_MS; m += MIN_MS)
        if (minute_ok(s, m)) return m;
    t = day + DAY_MS;
  }
}

static int64_t random_after(void) {
  struct tm tm;
  static const int dim[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  memset(&tm, 0, sizeof tm);
  tm.tm_year = 70 + (int)rnd(140);
  tm.tm_mon = (int)rnd(12);
  if (rnd(2)) { /* near the end of a month, year or leap day */
    tm.tm_mday = dim[tm.tm_mon] - (int)rnd(3); /* Feb 29 of a common year is Mar 1 */
    tm.tm_hour = 23;
    tm.tm_min = 50 + (int)rnd(10);
  } else {
    tm.tm_mday = 1 + (int)rnd((uint32_t)dim[tm.tm_mon]);
    tm.tm_hour = (int)rnd(24);
    tm.tm_min = (int)rnd(60);
  }
  if (rnd(3)) tm.tm_sec = (int)rnd(60);
  return (int64_t)timegm(&tm) * 1000 + (tm.tm_sec ? (int64_t)rnd(1000) : 0);
}

static void test_cross_check(void **state) {
  int matched_soon = 0, never = 0;
  (void)state;
  for (int i = 0; i < 2000; i++) {
    spec_t s;
    k_cron_t c, zero;
    int64_t after, t0, got, want = -1;
    gen(&s);
    c = parse(s.text);
    memset(&zero, 0, sizeof zero);
    /* the masks are what the text means */
    for (int f = 0; f < 5; f++) {
      uint64_t m = f == 0 ? c.minute : f == 1 ? c.hour : f == 2 ? c.mday : f == 3 ? c.month : c.wday;
      for (int v = lo_of[f]; v <= (f == 4 ? 6 : hi_of[f]); v++)
        if (((m >> v) & 1) != s.set[f][v]) fail_msg("'%s': field %d value %d", s.text, f + 1, v);
    }
    assert_int_equal(c.day_or, !s.star[2] && !s.star[4]);
    for (int k = 0; k < 2; k++) {
      after = random_after();
      got = k_cron_next(&c, after);
      /* naive: minute by minute over the next two days */
      t0 = (after / MIN_MS + 1) * MIN_MS;
      for (int64_t t = t0; t < t0 + 2 * DAY_MS; t += MIN_MS)
        if (minute_ok(&s, t)) {
          want = t;
          break;
        }
      if (want >= 0) {
        matched_soon++;
        if (got != want)
          fail_msg("'%s' after %lld: got %lld, want %lld", s.text, (long long)after, (long long)got,
                   (long long)want);
      } else if (got != -1 && got < t0 + 2 * DAY_MS) {
        fail_msg("'%s' after %lld: got %lld, nothing matches that soon", s.text, (long long)after,
                 (long long)got);
      }
      /* exact, up to the horizon */
      want = oracle(&s, after);
      never += want == -1;
      if (got != want)
        fail_msg("'%s' after %lld: got %lld, oracle %lld", s.text, (long long)after,
                 (long long)got, (long long)want);
      want = -1;
    }
  }
  /* the generator exercises both outcomes */
  assert_true(matched_soon > 1000);
  assert_true(never > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fields),        cmocka_unit_test(test_blanks_and_normalize),
      cmocka_unit_test(test_errors),        cmocka_unit_test(test_next_basic),
      cmocka_unit_test(test_next_rollover), cmocka_unit_test(test_leap_years),
      cmocka_unit_test(test_day_of_week),   cmocka_unit_test(test_day_rule),
      cmocka_unit_test(test_impossible),    cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_cross_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
