/* Unit tests for keel/config.h: parsing `key = value` files written to /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/buf.h"
#include "keel/config.h"
#include "keel/err.h"

/* Per-test state: the temp file and what the callback saw. */
typedef struct fixture {
  char path[64];
  keel_buf_t seen; /* "key=value;" per callback, in order */
  const char *fail_key; /* the callback fails on this key */
  int fail_code;
  int calls;
} fixture_t;

static int setup(void **state) {
  fixture_t *fx = calloc(1, sizeof *fx);
  if (!fx) return -1;
  keel_buf_init(&fx->seen, 1 << 16);
  fx->fail_code = KEEL_EINVAL;
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fixture_t *fx = *state;
  if (fx->path[0]) unlink(fx->path);
  keel_buf_free(&fx->seen);
  free(fx);
  return 0;
}

/* Writes len bytes of content to a fresh mkstemp file; path in fx->path. */
static void write_file_n(fixture_t *fx, const char *content, size_t len) {
  int fd;
  snprintf(fx->path, sizeof fx->path, "/tmp/keel-test-config-XXXXXX");
  fd = mkstemp(fx->path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, content, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
}

static void write_file(fixture_t *fx, const char *content) {
  write_file_n(fx, content, strlen(content));
}

static int collect(void *ud, const char *key, const char *value, keel_err_t *e) {
  fixture_t *fx = ud;
  fx->calls++;
  if (fx->fail_key && !strcmp(key, fx->fail_key))
    return keel_err_set(e, fx->fail_code, "bad value '%s'", value);
  return keel_buf_printf(&fx->seen, "%s=%s;", key, value);
}

static int load(fixture_t *fx, keel_err_t *e) {
  if (e) memset(e, 0, sizeof *e);
  return keel_config_load(fx->path, collect, fx, e);
}

/* Expects the load to fail with code and message "<path>:<suffix>". */
static void expect_error(fixture_t *fx, int code, const char *suffix) {
  keel_err_t e;
  char want[256];
  assert_int_equal(load(fx, &e), code);
  assert_int_equal(e.code, code);
  snprintf(want, sizeof want, "%s:%s", fx->path, suffix);
  assert_string_equal(e.msg, want);
}

static void test_order_and_trimming(void **state) {
  fixture_t *fx = *state;
  keel_err_t e;
  write_file(fx, "listen = 127.0.0.1:8080\n"
                 "body-limit=1048576\n"
                 "  name  =  two words  \n"
                 "\tdata-dir\t=\t/var/lib/keel\t\n"
                 "last = no newline");
  assert_int_equal(load(fx, &e), 0);
  assert_string_equal(fx->seen.data, "listen=127.0.0.1:8080;body-limit=1048576;name=two words;"
                                     "data-dir=/var/lib/keel;last=no newline;");
}

static void test_comments_and_blank_lines(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "# leading comment\n"
                 "\n"
                 "   \n"
                 "  # indented comment = not a key\n"
                 "a = 1\n"
                 "\t\n"
                 "#b = 2\n"
                 "c = 3\n"
                 "\n");
  assert_int_equal(load(fx, NULL), 0);
  assert_string_equal(fx->seen.data, "a=1;c=3;");
  assert_int_equal(fx->calls, 2);
}

static void test_crlf_and_special_values(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "a = 1\r\n"
                 "empty =\r\n"
                 "url = http://x/?a=b&c=d\r\n"
                 "hash = a # not a comment\r\n");
  assert_int_equal(load(fx, NULL), 0);
  assert_string_equal(fx->seen.data,
                      "a=1;empty=;url=http://x/?a=b&c=d;hash=a # not a comment;");
}

static void test_empty_file(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "");
  assert_int_equal(load(fx, NULL), 0);
  assert_int_equal(fx->calls, 0);
}

static void test_missing_equals(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "a = 1\n# c\nbogus line\nb = 2\n");
  expect_error(fx, KEEL_EINVAL, "3: expected 'key = value'");
  assert_string_equal(fx->seen.data, "a=1;"); /* stopped at line 3 */
}

static void test_empty_key(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "\n  = value\n");
  expect_error(fx, KEEL_EINVAL, "2: empty key");
  assert_int_equal(fx->calls, 0);
}

static void test_callback_error_prefixed(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "a = 1\n\nrole = wizard\nz = 9\n");
  fx->fail_key = "role";
  expect_error(fx, KEEL_EINVAL, "3: bad value 'wizard'");
  assert_string_equal(fx->seen.data, "a=1;");
  assert_int_equal(fx->calls, 2); /* z was never seen */
}

static void test_callback_error_code_preserved(void **state) {
  fixture_t *fx = *state;
  write_file(fx, "size = 99999999999\n");
  fx->fail_key = "size";
  fx->fail_code = KEEL_ETOOBIG;
  expect_error(fx, KEEL_ETOOBIG, "1: bad value '99999999999'");
  /* With no error struct the code still comes back. */
  assert_int_equal(load(fx, NULL), KEEL_ETOOBIG);
}

static void test_long_line(void **state) {
  fixture_t *fx = *state;
  size_t n = 5000;
  char *content = malloc(n + 16);
  keel_err_t e;
  memcpy(content, "a = 1\nk = ", 10);
  memset(content + 10, 'v', n);
  memcpy(content + 10 + n, "\n", 2);
  write_file(fx, content);
  free(content);
  assert_int_equal(load(fx, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, ":2: line longer than"));
  assert_int_equal(strncmp(e.msg, fx->path, strlen(fx->path)), 0);
}

static void test_nonexistent_file(void **state) {
  keel_err_t e = {0};
  const char *path = "/tmp/keel-test-config-does-not-exist/none.conf";
  assert_int_equal(keel_config_load(path, collect, *state, &e), KEEL_EIO);
  assert_int_equal(e.code, KEEL_EIO);
  assert_int_equal(strncmp(e.msg, path, strlen(path)), 0);
  assert_int_equal(keel_config_load(path, collect, *state, NULL), KEEL_EIO);
}

/* A path that opens but cannot be read (a directory) is an I/O error, not
 * an empty config. */
static void test_unreadable_path(void **state) {
  fixture_t *fx = *state;
  keel_err_t e = {0};
  assert_int_equal(keel_config_load("/tmp", collect, fx, &e), KEEL_EIO);
  assert_int_equal(fx->calls, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_order_and_trimming, setup, teardown),
      cmocka_unit_test_setup_teardown(test_comments_and_blank_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crlf_and_special_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_equals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_callback_error_prefixed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_callback_error_code_preserved, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nonexistent_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unreadable_path, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
