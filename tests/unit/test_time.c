/* Unit tests for keel/time.h: RFC 3339 format/parse and duration parsing.
 * No assertions depend on the current time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keel/err.h"
#include "keel/time.h"

static void expect_format(int64_t ms, const char *want) {
  char out[KEEL_TIME_STRLEN];
  memset(out, 'X', sizeof out);
  keel_time_format(out, ms);
  assert_string_equal(out, want);
  assert_int_equal(strlen(out), KEEL_TIME_STRLEN - 1);
}

static void expect_parse(const char *s, int64_t want) {
  int64_t got = -42;
  int rc = keel_time_parse(s, &got);
  if (rc) fail_msg("keel_time_parse(\"%s\") = %d, want 0", s, rc);
  if (got != want) fail_msg("keel_time_parse(\"%s\") -> %lld, want %lld", s, (long long)got, (long long)want);
}

static void expect_parse_fail(const char *s) {
  int64_t got = 0;
  int rc = keel_time_parse(s, &got);
  if (rc != KEEL_EINVAL)
    fail_msg("keel_time_parse(\"%s\") = %d (-> %lld), want KEEL_EINVAL", s, rc, (long long)got);
}

static void expect_duration(const char *s, int64_t want) {
  int64_t got = -42;
  int rc = keel_duration_parse(s, &got);
  if (rc) fail_msg("keel_duration_parse(\"%s\") = %d, want 0", s, rc);
  if (got != want)
    fail_msg("keel_duration_parse(\"%s\") -> %lld, want %lld", s, (long long)got, (long long)want);
}

static void expect_duration_fail(const char *s) {
  int64_t got = 0;
  int rc = keel_duration_parse(s, &got);
  if (rc != KEEL_EINVAL)
    fail_msg("keel_duration_parse(\"%s\") = %d (-> %lld), want KEEL_EINVAL", s, rc, (long long)got);
}

/* ---- format ------------------------------------------------------------- */

static void test_format_known(void **state) {
  expect_format(0, "1970-01-01T00:00:00.000Z");
  expect_format(1, "1970-01-01T00:00:00.001Z");
  expect_format(1234567890123, "2009-02-13T23:31:30.123Z");
  expect_format(951782400000, "2000-02-29T00:00:00.000Z");
  expect_format(4102444799999, "2099-12-31T23:59:59.999Z");
}

static void test_format_negative(void **state) {
  expect_format(-1, "1969-12-31T23:59:59.999Z");
  expect_format(-999, "1969-12-31T23:59:59.001Z");
  expect_format(-1000, "1969-12-31T23:59:59.000Z");
  expect_format(-1001, "1969-12-31T23:59:58.999Z");
  expect_format(-86400000, "1969-12-31T00:00:00.000Z");
  expect_format(-2208988800000, "1900-01-01T00:00:00.000Z");
}

/* "Always 24 characters", even for instants no 4-digit year can hold. */
static void test_format_extremes(void **state) {
  static const int64_t ms[] = {INT64_MAX, INT64_MIN, 253402300800000, -62167219200001};
  expect_format(253402300799999, "9999-12-31T23:59:59.999Z");
  expect_format(-62167219200000, "0000-01-01T00:00:00.000Z");
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
    char out[KEEL_TIME_STRLEN];
    keel_time_format(out, ms[i]);
    assert_int_equal(strlen(out), KEEL_TIME_STRLEN - 1);
    assert_int_equal(out[KEEL_TIME_STRLEN - 2], 'Z');
  }
}

/* ---- parse -------------------------------------------------------------- */

static void test_parse_utc(void **state) {
  expect_parse("1970-01-01T00:00:00Z", 0);
  expect_parse("1970-01-01T00:00:00.000Z", 0);
  expect_parse("2009-02-13T23:31:30.123Z", 1234567890123);
  expect_parse("2009-02-13t23:31:30.123z", 1234567890123);
  expect_parse("2009-02-13 23:31:30.123Z", 1234567890123);
  expect_parse("1969-12-31T23:59:59.999Z", -1);
  expect_parse("2000-02-29T00:00:00Z", 951782400000);
  expect_parse("2024-02-29T12:00:00Z", 1709208000000);
}

static void test_parse_offsets(void **state) {
  expect_parse("2009-02-14T00:31:30.123+01:00", 1234567890123);
  expect_parse("2009-02-13T18:01:30.123-05:30", 1234567890123);
  expect_parse("2009-02-13T23:31:30.123+00:00", 1234567890123);
  expect_parse("2009-02-13T23:31:30.123-00:00", 1234567890123);
  expect_parse("1970-01-01T00:00:00+23:59", -(23 * 60 + 59) * 60 * 1000LL);
  expect_parse("1969-12-31T23:00:00-01:00", 0);
}

static void test_parse_fractions(void **state) {
  expect_parse("1970-01-01T00:00:00.5Z", 500);
  expect_parse("1970-01-01T00:00:00.05Z", 50);
  expect_parse("1970-01-01T00:00:00.007Z", 7);
  expect_parse("1970-01-01T00:00:00.123456789Z", 123); /* truncated to ms */
  expect_parse("1970-01-01T00:00:01.999999+00:00", 1999);
  expect_parse("1969-12-31T23:59:59.5Z", -500);
}

static void test_parse_rejects_garbage(void **state) {
  static const char *bad[] = {
      "",
      "garbage",
      "2026-13-01T00:00:00Z",
      "2026-00-01T00:00:00Z",
      "2026-01-00T00:00:00Z",
      "2026-01-32T00:00:00Z",
      "2026-01-01T24:00:00Z",
      "2026-01-01T00:60:00Z",
      "2026-01-01T00:00:61Z",
      "2026-01-01T00:00:00",      /* missing zone */
      "2026-01-01T00:00:00.123",  /* missing zone after fraction */
      "2026-01-01T00:00:00.Z",    /* empty fraction */
      "2026-01-01T00:00:00Zx",    /* trailing chars */
      "2026-01-01T00:00:00Z ",
      "2026-01-01T00:00:00+01:00x",
      "2026-01-01T00:00:00+0100",
      "2026-01-01T00:00:00+01",
      "2026-01-01T00:00:00+24:00",
      "2026-01-01T00:00:00+01:60",
      "2026-01-01X00:00:00Z",
      "2026/01/01T00:00:00Z",
      "2026-1-01T00:00:00Z",
      "2026-01-01T0:00:00Z",
      " 2026-01-01T00:00:00Z",
      "+026-01-01T00:00:00Z",
      "2026-01-01T00:00:00UTC",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_parse_fail(bad[i]);
}

/* RFC 3339 5.7: the day must exist in that month and year. */
static void test_parse_rejects_impossible_dates(void **state) {
  expect_parse_fail("2026-02-29T00:00:00Z"); /* 2026 is not a leap year */
  expect_parse_fail("2026-02-30T00:00:00Z");
  expect_parse_fail("2026-04-31T00:00:00Z");
  expect_parse_fail("1900-02-29T00:00:00Z"); /* century, not a leap year */
}

static void test_round_trip(void **state) {
  static const int64_t fixed[] = {0, 1, -1, 999, -999, 1000, -1000, 1234567890123,
                                  951782400000, -2208988800000, 253402300799999};
  uint64_t x = 88172645463325252ull;
  char buf[KEEL_TIME_STRLEN];
  int64_t back;

  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    keel_time_format(buf, fixed[i]);
    assert_int_equal(keel_time_parse(buf, &back), 0);
    assert_int_equal(back, fixed[i]);
  }
  /* Deterministic pseudo-random instants between 1900 and 2100. */
  for (int i = 0; i < 500; i++) {
    int64_t ms;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    ms = (int64_t)(x % 6311433600000ull) - 2208988800000;
    keel_time_format(buf, ms);
    assert_int_equal(keel_time_parse(buf, &back), 0);
    if (back != ms) fail_msg("%lld -> %s -> %lld", (long long)ms, buf, (long long)back);
  }
}

/* ---- durations ---------------------------------------------------------- */

static void test_duration_valid(void **state) {
  expect_duration("1500ms", 1500);
  expect_duration("1ms", 1);
  expect_duration("30s", 30000);
  expect_duration("5m", 300000);
  expect_duration("1h", 3600000);
  expect_duration("1h30m", 5400000);
  expect_duration("7d", 604800000);
  expect_duration("1d2h3m4s5ms", 86400000 + 7200000 + 180000 + 4000 + 5);
  expect_duration("0s1ms", 1);
  expect_duration("90m", 5400000);
  expect_duration("007s", 7000);
  /* The largest whole number of days that fits in int64 milliseconds. */
  expect_duration("106751991167d", 106751991167LL * 86400000);
}

static void test_duration_rejects(void **state) {
  static const char *bad[] = {
      "", "5", "5x", "0s", "0ms", "0h0m", "ms", "s", "s5", "-5s", "+5s", " 5s", "5s ",
      "5 s", "1.5s", "5S", "5M", "1h30", "5mss", "5sm",
      "99999999999999999999d",    /* digits overflow */
      "106751991168d",            /* n * unit overflows */
      "9223372036854775807s",
      "106751991167d1d",          /* sum overflows */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_duration_fail(bad[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_known),
      cmocka_unit_test(test_format_negative),
      cmocka_unit_test(test_format_extremes),
      cmocka_unit_test(test_parse_utc),
      cmocka_unit_test(test_parse_offsets),
      cmocka_unit_test(test_parse_fractions),
      cmocka_unit_test(test_parse_rejects_garbage),
      cmocka_unit_test(test_parse_rejects_impossible_dates),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_duration_valid),
      cmocka_unit_test(test_duration_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
