/* Unit tests for keel/buf.h: cap enforcement, growth, JSON string escaping,
 * steal and reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/grow.h"

/* Escapes s with keel_buf_json_str into a fresh buffer; caller frees. */
static char *json_str(const char *s) {
  keel_buf_t b;
  keel_buf_init(&b, 1 << 16);
  assert_int_equal(keel_buf_json_str(&b, s), 0);
  assert_int_equal(strlen(b.data), b.len);
  return keel_buf_steal(&b);
}

static void test_init_is_empty(void **state) {
  keel_buf_t b;
  keel_buf_init(&b, 100);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.max, 100);
  assert_null(b.data);
  assert_int_equal(keel_buf_puts(&b, ""), 0);
  assert_non_null(b.data);
  assert_string_equal(b.data, "");
  keel_buf_free(&b);
  assert_null(b.data);
  keel_buf_free(&b); /* idempotent */
}

static void test_append_exactly_to_max(void **state) {
  keel_buf_t b;
  keel_buf_init(&b, 8);
  assert_int_equal(keel_buf_append(&b, "abcd", 4), 0);
  assert_int_equal(keel_buf_append(&b, "efgh", 4), 0);
  assert_int_equal(b.len, 8);
  assert_string_equal(b.data, "abcdefgh");

  /* One more byte is over the cap: fails, nothing changes. */
  assert_int_equal(keel_buf_append(&b, "x", 1), KEEL_ETOOBIG);
  assert_int_equal(b.len, 8);
  assert_string_equal(b.data, "abcdefgh");
  assert_int_equal(keel_buf_puts(&b, "yz"), KEEL_ETOOBIG);
  assert_string_equal(b.data, "abcdefgh");

  /* Appending nothing at the cap is fine. */
  assert_int_equal(keel_buf_append(&b, "", 0), 0);
  assert_int_equal(b.len, 8);
  keel_buf_free(&b);
}

static void test_append_over_max_from_empty(void **state) {
  keel_buf_t b;
  keel_buf_init(&b, 4);
  assert_int_equal(keel_buf_append(&b, "abcde", 5), KEEL_ETOOBIG);
  assert_int_equal(b.len, 0);
  /* A length that would overflow len + n must not wrap around. */
  assert_int_equal(keel_buf_puts(&b, "ab"), 0);
  assert_int_equal(keel_buf_append(&b, "x", SIZE_MAX), KEEL_ETOOBIG);
  assert_int_equal(keel_buf_append(&b, "x", SIZE_MAX - 1), KEEL_ETOOBIG);
  assert_int_equal(b.len, 2);
  assert_string_equal(b.data, "ab");
  keel_buf_free(&b);
}

static void test_max_zero(void **state) {
  keel_buf_t b;
  char *p;
  keel_buf_init(&b, 0);
  assert_int_equal(keel_buf_append(&b, "x", 1), KEEL_ETOOBIG);
  assert_int_equal(keel_buf_printf(&b, "%d", 1), KEEL_ETOOBIG);
  assert_int_equal(keel_buf_printf(&b, "%s", ""), 0);
  assert_string_equal(b.data, "");
  p = keel_buf_steal(&b);
  assert_non_null(p);
  assert_string_equal(p, "");
  free(p);
}

static void test_printf_growth(void **state) {
  keel_buf_t b;
  char expect[8192];
  size_t off = 0;

  keel_buf_init(&b, 1 << 20);
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(keel_buf_printf(&b, "%d,", i), 0);
    off += (size_t)snprintf(expect + off, sizeof expect - off, "%d,", i);
  }
  assert_int_equal(b.len, off);
  assert_int_equal(strlen(b.data), b.len);
  assert_string_equal(b.data, expect);
  assert_true(b.cap > b.len);
  assert_true(b.cap <= b.max + 1);

  /* One big printf larger than the current capacity. */
  keel_buf_reset(&b);
  assert_int_equal(keel_buf_printf(&b, "[%5000s]", "x"), 0);
  assert_int_equal(b.len, 5002);
  assert_int_equal(b.data[0], '[');
  assert_int_equal(b.data[5000], 'x');
  assert_int_equal(b.data[5001], ']');
  assert_int_equal(b.data[5002], '\0');
  keel_buf_free(&b);
}

static void test_printf_cap(void **state) {
  keel_buf_t b;
  keel_buf_init(&b, 10);
  assert_int_equal(keel_buf_puts(&b, "12345"), 0);
  assert_int_equal(keel_buf_printf(&b, "%s", "678901"), KEEL_ETOOBIG);
  assert_int_equal(b.len, 5);
  assert_string_equal(b.data, "12345");
  assert_int_equal(keel_buf_printf(&b, "%d", 67890), 0);
  assert_int_equal(b.len, 10);
  assert_string_equal(b.data, "1234567890");
  keel_buf_free(&b);
}

static void test_json_str_escapes(void **state) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"", "\"\""},
      {"plain", "\"plain\""},
      {"a\"b", "\"a\\\"b\""},
      {"a\\b", "\"a\\\\b\""},
      {"\"\\\"", "\"\\\"\\\\\\\"\""},
      {"\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\""},
      {"\x01", "\"\\u0001\""},
      {"x\x1fy", "\"x\\u001Fy\""},
      {"\x0b\x1b", "\"\\u000B\\u001B\""},
      {"\x7f", "\"\x7f\""},
      {"a/b", "\"a/b\""},
      {"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80", "\"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = json_str(cases[i].in);
    assert_string_equal(got, cases[i].out);
    free(got);
  }
}

/* buf.c promises its output matches jansson's byte for byte (the audit
 * canonical form depends on it). */
static void test_json_str_matches_jansson(void **state) {
  static const char *inputs[] = {
      "", "abc", "\"quoted\"", "back\\slash", "\x01\x02\x03\x1e\x1f",
      "tab\there\nnewline\rcr\bbs\fff", "\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x89",
      "</script>",
  };
  for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
    json_t *v = json_string(inputs[i]);
    char *want, *got;
    assert_non_null(v);
    want = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    assert_non_null(want);
    got = json_str(inputs[i]);
    assert_string_equal(got, want);
    free(got);
    free(want);
    json_decref(v);
  }
}

/* The header: appends that would exceed max fail and leave the contents
 * unchanged.  keel_buf_json_str is such an append. */
static void test_json_str_over_cap_unchanged(void **state) {
  keel_buf_t b;
  int rc;
  char after[16];

  keel_buf_init(&b, 6);
  assert_int_equal(keel_buf_puts(&b, "ab"), 0);
  rc = keel_buf_json_str(&b, "xyz"); /* needs 5 bytes, 4 left */
  snprintf(after, sizeof after, "%s", b.data);
  keel_buf_free(&b); /* before asserting, so a failure does not leak */
  assert_int_equal(rc, KEEL_ETOOBIG);
  assert_string_equal(after, "ab");

  keel_buf_init(&b, 6);
  assert_int_equal(keel_buf_puts(&b, "ab"), 0);
  rc = keel_buf_json_str(&b, "xy"); /* exactly 4 */
  snprintf(after, sizeof after, "%s", b.data);
  keel_buf_free(&b);
  assert_int_equal(rc, 0);
  assert_string_equal(after, "ab\"xy\"");
}

static void test_steal_empty(void **state) {
  keel_buf_t b;
  char *p;
  keel_buf_init(&b, 16);
  p = keel_buf_steal(&b);
  assert_non_null(p);
  assert_string_equal(p, "");
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  free(p);
  keel_buf_free(&b);
}

static void test_steal_transfers_and_buffer_reusable(void **state) {
  keel_buf_t b;
  char *p;
  keel_buf_init(&b, 16);
  assert_int_equal(keel_buf_puts(&b, "hello"), 0);
  p = keel_buf_steal(&b);
  assert_string_equal(p, "hello");
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
  assert_int_equal(b.max, 16);
  /* The cap still applies after stealing. */
  assert_int_equal(keel_buf_append(&b, "0123456789abcdefg", 17), KEEL_ETOOBIG);
  assert_int_equal(keel_buf_puts(&b, "again"), 0);
  assert_string_equal(b.data, "again");
  assert_string_equal(p, "hello");
  free(p);
  keel_buf_free(&b);
}

static void test_reset(void **state) {
  keel_buf_t b;
  char *before;
  size_t cap;

  keel_buf_init(&b, 64);
  keel_buf_reset(&b); /* never allocated: fine */
  assert_int_equal(b.len, 0);
  assert_int_equal(keel_buf_puts(&b, "some text"), 0);
  before = b.data;
  cap = b.cap;
  keel_buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_ptr_equal(b.data, before);
  assert_int_equal(b.cap, cap);
  assert_string_equal(b.data, "");
  /* After a reset the full max is available again. */
  assert_int_equal(keel_buf_printf(&b, "%64s", "x"), 0);
  assert_int_equal(b.len, 64);
  keel_buf_free(&b);
}

/* max = SIZE_MAX is the natural way to ask for "no cap" (for example a
 * body limit of -1 cast to size_t).  Run in a child: if the buffer
 * under-allocates, the sanitizer aborts the child, not the suite. */
static void test_max_size_max(void **state) {
  pid_t pid = fork();
  int status = 0;
  assert_true(pid >= 0);
  if (pid == 0) {
    keel_buf_t b;
    int ok;
    keel_buf_init(&b, SIZE_MAX);
    ok = keel_buf_puts(&b, "hello") == 0 && keel_buf_printf(&b, " %d", 42) == 0 &&
         b.cap >= b.len + 1 && strcmp(b.data, "hello 42") == 0;
    keel_buf_free(&b);
    _exit(ok ? 0 : 1);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* keel_grow: doubling from `first`, the same pointer while there is room,
 * NULL (and the array and cap untouched) when the size would overflow. */
static void test_grow(void **state) {
  int *v = NULL, *nv;
  size_t cap = 0;
  (void)state;
  for (size_t n = 0; n < 100; n++) {
    nv = keel_grow(v, &cap, n, sizeof *v, 4);
    assert_non_null(nv);
    v = nv;
    v[n] = (int)n;
    assert_true(cap > n);
  }
  assert_int_equal(cap, 128);
  assert_ptr_equal(keel_grow(v, &cap, 100, sizeof *v, 4), v);
  for (int i = 0; i < 100; i++) assert_int_equal(v[i], i);
  {
    size_t big = SIZE_MAX / 2 + 1;
    assert_null(keel_grow(v, &big, big, sizeof *v, 4));
    assert_int_equal(big, SIZE_MAX / 2 + 1);
  }
  free(v);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_is_empty),
      cmocka_unit_test(test_grow),
      cmocka_unit_test(test_append_exactly_to_max),
      cmocka_unit_test(test_append_over_max_from_empty),
      cmocka_unit_test(test_max_zero),
      cmocka_unit_test(test_printf_growth),
      cmocka_unit_test(test_printf_cap),
      cmocka_unit_test(test_json_str_escapes),
      cmocka_unit_test(test_json_str_matches_jansson),
      cmocka_unit_test(test_json_str_over_cap_unchanged),
      cmocka_unit_test(test_steal_empty),
      cmocka_unit_test(test_steal_transfers_and_buffer_reusable),
      cmocka_unit_test(test_reset),
      cmocka_unit_test(test_max_size_max),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
