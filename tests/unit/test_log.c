/* Unit tests for keel/log.h: thresholds, the NULL logger, the stderr sink
 * and level parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/err.h"
#include "keel/log.h"

/* A sink that records what it receives. */
typedef struct record {
  int n;
  int levels[16];
  char msgs[16][1100];
  void *last_ud;
} record_t;

static void record_sink(void *ud, int level, const char *msg) {
  record_t *r = ud;
  if (r->n < 16) {
    r->levels[r->n] = level;
    snprintf(r->msgs[r->n], sizeof r->msgs[r->n], "%s", msg);
  }
  r->last_ud = ud;
  r->n++;
}

static void log_all_levels(const keel_log_t *l) {
  keel_log(l, KEEL_LOG_ERROR, "e%d", 0);
  keel_log(l, KEEL_LOG_WARN, "w%d", 1);
  keel_log(l, KEEL_LOG_INFO, "i%d", 2);
  keel_log(l, KEEL_LOG_DEBUG, "d%d", 3);
}

static void test_threshold_info(void **state) {
  record_t r = {0};
  keel_log_t l = {record_sink, &r, KEEL_LOG_INFO};
  log_all_levels(&l);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.levels[0], KEEL_LOG_ERROR);
  assert_string_equal(r.msgs[0], "e0");
  assert_int_equal(r.levels[1], KEEL_LOG_WARN);
  assert_string_equal(r.msgs[1], "w1");
  assert_int_equal(r.levels[2], KEEL_LOG_INFO);
  assert_string_equal(r.msgs[2], "i2");
  assert_ptr_equal(r.last_ud, &r);
}

static void test_threshold_each_level(void **state) {
  for (int threshold = KEEL_LOG_ERROR; threshold <= KEEL_LOG_DEBUG; threshold++) {
    record_t r = {0};
    keel_log_t l = {record_sink, &r, threshold};
    log_all_levels(&l);
    assert_int_equal(r.n, threshold + 1);
    for (int i = 0; i < r.n; i++) assert_int_equal(r.levels[i], i);
  }
}

static void test_null_logger_is_noop(void **state) {
  record_t r = {0};
  keel_log_t no_fn = {NULL, &r, KEEL_LOG_DEBUG};
  keel_log(NULL, KEEL_LOG_ERROR, "dropped %s", "silently");
  log_all_levels(NULL);
  log_all_levels(&no_fn);
  assert_int_equal(r.n, 0);
}

static void test_formatting_and_truncation(void **state) {
  record_t r = {0};
  keel_log_t l = {record_sink, &r, KEEL_LOG_DEBUG};
  char big[2000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';

  keel_log(&l, KEEL_LOG_WARN, "%s=%d (%.1f%%)", "disk", 93, 93.5);
  assert_string_equal(r.msgs[0], "disk=93 (93.5%)");
  /* Long messages are cut, never overflow, and stay NUL-terminated. */
  keel_log(&l, KEEL_LOG_INFO, "%s", big);
  assert_int_equal(r.n, 2);
  assert_true(strlen(r.msgs[1]) > 0);
  assert_true(strlen(r.msgs[1]) < sizeof big - 1);
  assert_int_equal(strspn(r.msgs[1], "x"), strlen(r.msgs[1]));
}

static void test_level_parse(void **state) {
  static const char *bad[] = {"", "ERROR", "Warn", "warning", "info ", " debug", "trace", "3"};
  assert_int_equal(keel_log_level_parse("error"), KEEL_LOG_ERROR);
  assert_int_equal(keel_log_level_parse("warn"), KEEL_LOG_WARN);
  assert_int_equal(keel_log_level_parse("info"), KEEL_LOG_INFO);
  assert_int_equal(keel_log_level_parse("debug"), KEEL_LOG_DEBUG);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(keel_log_level_parse(bad[i]), KEEL_EINVAL);
}

/* Calls keel_log_stderr with stderr redirected to a temp file; returns
 * what was written (static buffer). */
static const char *capture_stderr(void *ud, int level, const char *msg) {
  static char out[512];
  FILE *tmp = tmpfile();
  int saved;
  size_t n;

  assert_non_null(tmp);
  fflush(stderr);
  saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
  keel_log_stderr(ud, level, msg);
  fflush(stderr);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  rewind(tmp);
  n = fread(out, 1, sizeof out - 1, tmp);
  out[n] = '\0';
  fclose(tmp);
  return out;
}

/* "<24-char timestamp> <name>[<level>] <msg>\n" */
static void expect_stderr_line(const char *line, const char *rest) {
  assert_true(strlen(line) > 25);
  assert_int_equal(line[4], '-');
  assert_int_equal(line[10], 'T');
  assert_int_equal(line[19], '.');
  assert_int_equal(line[23], 'Z');
  assert_int_equal(line[24], ' ');
  assert_string_equal(line + 25, rest);
}

static void test_stderr_sink(void **state) {
  expect_stderr_line(capture_stderr("keeld", KEEL_LOG_WARN, "disk full"), "keeld[warn] disk full\n");
  expect_stderr_line(capture_stderr(NULL, KEEL_LOG_INFO, "hi"), "keel[info] hi\n");
  /* Out-of-range levels are clamped, not used as an index. */
  expect_stderr_line(capture_stderr("k", 9, "x"), "k[debug] x\n");
  expect_stderr_line(capture_stderr("k", -3, "x"), "k[error] x\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_threshold_info),
      cmocka_unit_test(test_threshold_each_level),
      cmocka_unit_test(test_null_logger_is_noop),
      cmocka_unit_test(test_formatting_and_truncation),
      cmocka_unit_test(test_level_parse),
      cmocka_unit_test(test_stderr_sink),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
