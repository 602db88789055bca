/* Unit tests for keel/json.h: parse errors, keel_json_check, canonical form,
 * keel_utf8_sanitize, and a cross-check of keel_buf_json_str against jansson. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/json.h"

static json_t *parse_ok(const char *text) {
  json_t *v = NULL;
  keel_err_t e = {0};
  int rc = keel_json_parse(text, strlen(text), &v, &e);
  if (rc) print_error("parse '%s': %s\n", text, e.msg);
  assert_int_equal(rc, 0);
  assert_non_null(v);
  return v;
}

/* Parses text, expects KEEL_EINVAL, and returns the message in e. */
static void parse_fail(const char *text, size_t len, keel_err_t *e) {
  json_t *v = (json_t *)1;
  memset(e, 0, sizeof *e);
  assert_int_equal(keel_json_parse(text, len, &v, e), KEEL_EINVAL);
  assert_int_equal(e->code, KEEL_EINVAL);
  assert_null(v);
  assert_true(e->msg[0] != '\0');
}

static void assert_contains(const char *haystack, const char *needle) {
  if (!strstr(haystack, needle)) fail_msg("'%s' does not contain '%s'", haystack, needle);
}

/* ---- parsing ------------------------------------------------------------ */

static void test_parse_values(void **state) {
  json_t *v = parse_ok("{\"a\": [1, 2], \"b\": \"x\"}");
  assert_true(json_is_object(v));
  assert_int_equal(json_array_size(json_object_get(v, "a")), 2);
  json_decref(v);
  /* Scalars are accepted so callers can name what they expected. */
  v = parse_ok("42");
  assert_int_equal(json_integer_value(v), 42);
  json_decref(v);
  v = parse_ok(" \"s\" \n");
  assert_string_equal(json_string_value(v), "s");
  json_decref(v);
  v = parse_ok("null");
  assert_true(json_is_null(v));
  json_decref(v);
}

static void test_parse_uses_len_only(void **state) {
  const char text[] = "{\"a\":1}GARBAGE";
  json_t *v = NULL;
  assert_int_equal(keel_json_parse(text, 7, &v, NULL), 0);
  assert_int_equal(json_integer_value(json_object_get(v, "a")), 1);
  json_decref(v);
}

static void test_parse_error_position(void **state) {
  const char *text = "{\"a\": 1,\n  \"b\": }";
  keel_err_t e;
  parse_fail(text, strlen(text), &e);
  assert_contains(e.msg, "malformed JSON");
  assert_contains(e.msg, "line 2, column ");
  assert_contains(e.msg, "(byte ");

  text = "[1, 2, x]";
  parse_fail(text, strlen(text), &e);
  assert_contains(e.msg, "line 1, column 8");
  assert_contains(e.msg, "(byte 8)");
}

static void test_parse_error_null_err(void **state) {
  json_t *v = NULL;
  assert_int_equal(keel_json_parse("{", 1, &v, NULL), KEEL_EINVAL);
  assert_null(v);
  assert_int_equal(keel_json_parse("", 0, &v, NULL), KEEL_EINVAL);
}

static void test_parse_empty_body(void **state) {
  keel_err_t e;
  parse_fail("", 0, &e);
  assert_contains(e.msg, "empty body");
  parse_fail("   \n", 4, &e);
  assert_contains(e.msg, "line ");
}

static void test_parse_duplicate_keys(void **state) {
  keel_err_t e;
  const char *text = "{\"a\": 1, \"a\": 2}";
  parse_fail(text, strlen(text), &e);
  assert_contains(e.msg, "duplicate");
  text = "{\"o\": {\"k\": 1, \"k\": 1}}";
  parse_fail(text, strlen(text), &e);
}

static void test_parse_trailing_garbage(void **state) {
  static const char *bad[] = {"{\"a\":1} x", "{}{}", "1 2", "[] ]", "\"a\"\"b\"", "{} /* c */"};
  keel_err_t e;
  json_t *v;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) parse_fail(bad[i], strlen(bad[i]), &e);
  /* Trailing whitespace is not garbage. */
  v = parse_ok("{} \n\t ");
  json_decref(v);
}

static void test_parse_rejects_nul_and_bad_utf8(void **state) {
  keel_err_t e;
  const char nul_escape[] = "\"a\\u0000b\"";
  const char raw_nul[] = "\"a\0b\"";
  const char bad_utf8[] = "\"\xff\"";
  parse_fail(nul_escape, sizeof nul_escape - 1, &e);
  parse_fail(raw_nul, sizeof raw_nul - 1, &e);
  parse_fail(bad_utf8, sizeof bad_utf8 - 1, &e);
}

/* ---- keel_json_check ---------------------------------------------------- */

static const keel_json_field_t user_fields[] = {
    {"name", KEEL_JSON_STRING, 1, 8},
    {"age", KEEL_JSON_INT, 0, 0},
    {"admin", KEEL_JSON_BOOL, 0, 0},
    {"meta", KEEL_JSON_OBJECT, 0, 0},
    {"tags", KEEL_JSON_ARRAY, 0, 2},
    {"note", KEEL_JSON_STRING, 0, 0},
    {NULL, 0, 0, 0},
};

/* Runs keel_json_check on text; returns rc and leaves the message in e. */
static int check(const char *text, keel_err_t *e) {
  json_t *v = parse_ok(text);
  char *before = keel_json_canonical(v);
  int rc;
  memset(e, 0, sizeof *e);
  rc = keel_json_check(v, user_fields, e);
  {
    char *after = keel_json_canonical(v); /* check changes nothing */
    assert_string_equal(before, after);
    free(after);
  }
  free(before);
  json_decref(v);
  return rc;
}

static void expect_check_error(const char *text, const char *msg) {
  keel_err_t e;
  assert_int_equal(check(text, &e), KEEL_EINVAL);
  assert_int_equal(e.code, KEEL_EINVAL);
  assert_string_equal(e.msg, msg);
}

static void test_check_ok(void **state) {
  keel_err_t e;
  assert_int_equal(check("{\"name\": \"ann\"}", &e), 0);
  assert_int_equal(check("{\"name\": \"ann\", \"age\": 3, \"admin\": true, \"meta\": {\"x\": 1},"
                         " \"tags\": [\"a\", \"b\"], \"note\": \"\"}",
                         &e),
                   0);
}

static void test_check_unknown_field(void **state) {
  char text[256], key[101], msg[128];
  expect_check_error("{\"name\": \"ann\", \"colour\": 1}", "unknown field 'colour'");
  expect_check_error("{\"Name\": \"ann\"}", "unknown field 'Name'");
  /* Long keys are quoted to at most 64 bytes. */
  memset(key, 'k', 100);
  key[100] = '\0';
  snprintf(text, sizeof text, "{\"%s\": 1}", key);
  snprintf(msg, sizeof msg, "unknown field '%.64s'", key);
  expect_check_error(text, msg);
}

static void test_check_wrong_type(void **state) {
  expect_check_error("{\"name\": 5}", "field 'name': expected a string");
  expect_check_error("{\"name\": null}", "field 'name': expected a string");
  expect_check_error("{\"name\": \"a\", \"age\": \"3\"}", "field 'age': expected an integer");
  expect_check_error("{\"name\": \"a\", \"age\": 3.0}", "field 'age': expected an integer");
  expect_check_error("{\"name\": \"a\", \"admin\": 1}", "field 'admin': expected a boolean");
  expect_check_error("{\"name\": \"a\", \"meta\": []}", "field 'meta': expected an object");
  expect_check_error("{\"name\": \"a\", \"tags\": {}}", "field 'tags': expected an array");
}

static void test_check_missing_required(void **state) {
  expect_check_error("{}", "missing required field 'name'");
  expect_check_error("{\"age\": 1}", "missing required field 'name'");
}

static void test_check_string_max_len(void **state) {
  keel_err_t e;
  char *text = malloc(5000);
  assert_int_equal(check("{\"name\": \"12345678\"}", &e), 0);
  expect_check_error("{\"name\": \"123456789\"}", "field 'name': longer than 8 bytes");
  /* Bytes, not characters: four 2-byte characters fit, five do not. */
  assert_int_equal(check("{\"name\": \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}", &e), 0);
  expect_check_error("{\"name\": \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}",
                     "field 'name': longer than 8 bytes");
  /* max_len 0 means 4096. */
  snprintf(text, 5000, "{\"name\": \"a\", \"note\": \"%4096s\"}", "x");
  assert_int_equal(check(text, &e), 0);
  snprintf(text, 5000, "{\"name\": \"a\", \"note\": \"%4097s\"}", "x");
  expect_check_error(text, "field 'note': longer than 4096 bytes");
  free(text);
}

static void test_check_string_with_nul(void **state) {
  json_t *obj = json_object();
  keel_err_t e = {0};
  json_object_set_new(obj, "name", json_stringn("a\0b", 3));
  assert_int_equal(keel_json_check(obj, user_fields, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "field 'name': contains a NUL character");
  json_decref(obj);
}

static void test_check_array_max_items(void **state) {
  static const keel_json_field_t unlimited[] = {{"tags", KEEL_JSON_ARRAY, 0, 0}, {NULL, 0, 0, 0}};
  keel_err_t e;
  json_t *v;
  assert_int_equal(check("{\"name\": \"a\", \"tags\": []}", &e), 0);
  assert_int_equal(check("{\"name\": \"a\", \"tags\": [1, 2]}", &e), 0);
  expect_check_error("{\"name\": \"a\", \"tags\": [1, 2, 3]}", "field 'tags': more than 2 items");
  v = parse_ok("{\"tags\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}");
  assert_int_equal(keel_json_check(v, unlimited, NULL), 0);
  json_decref(v);
}

static void test_check_non_object(void **state) {
  static const char *inputs[] = {"[]", "\"str\"", "1", "null", "true"};
  for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
    json_t *v = parse_ok(inputs[i]);
    keel_err_t e = {0};
    assert_int_equal(keel_json_check(v, user_fields, &e), KEEL_EINVAL);
    assert_string_equal(e.msg, "expected a JSON object");
    json_decref(v);
  }
  assert_int_equal(keel_json_check(NULL, user_fields, NULL), KEEL_EINVAL);
}

static void test_json_str_accessor(void **state) {
  json_t *v = parse_ok("{\"s\": \"x\", \"n\": 1}");
  assert_string_equal(keel_json_str(v, "s"), "x");
  assert_null(keel_json_str(v, "n"));
  assert_null(keel_json_str(v, "missing"));
  json_decref(v);
}

/* ---- canonical form ----------------------------------------------------- */

static void test_canonical_sorted_compact(void **state) {
  json_t *a = parse_ok("{ \"b\": 1,\n  \"a\": { \"z\": [ 1, 2, {\"y\": null, \"x\": true} ], \"c\": \"s\" },"
                       "  \"A\": false }");
  json_t *b = parse_ok("{\"A\":false,\"a\":{\"c\":\"s\",\"z\":[1,2,{\"x\":true,\"y\":null}]},\"b\":1}");
  char *ca = keel_json_canonical(a), *cb = keel_json_canonical(b);
  assert_string_equal(ca, "{\"A\":false,\"a\":{\"c\":\"s\",\"z\":[1,2,{\"x\":true,\"y\":null}]},\"b\":1}");
  assert_string_equal(ca, cb);
  free(ca);
  free(cb);
  json_decref(a);
  json_decref(b);

  a = parse_ok("\"x\\ny\"");
  ca = keel_json_canonical(a);
  assert_string_equal(ca, "\"x\\ny\"");
  free(ca);
  json_decref(a);
}

/* ---- keel_buf_json_str cross-check --------------------------------------- */

static uint32_t rng_state = 12345;

static uint32_t rng(void) { /* xorshift32: deterministic across runs */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* Fills s with a random NUL-terminated valid UTF-8 string: mostly ASCII
 * (controls included), with some multi-byte characters. */
static void random_utf8(char *s, size_t max) {
  static const char *multi[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf",
                                "\xef\xbf\xbf", "\xc2\x80", "\xf4\x8f\xbf\xbf"};
  size_t n = rng() % 40, len = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t r = rng();
    if (r % 8 == 0) {
      const char *m = multi[(r >> 8) % (sizeof multi / sizeof multi[0])];
      size_t ml = strlen(m);
      if (len + ml >= max) break;
      memcpy(s + len, m, ml);
      len += ml;
    } else {
      if (len + 1 >= max) break;
      s[len++] = (char)(1 + (r >> 8) % 127); /* 0x01..0x7f */
    }
  }
  s[len] = '\0';
}

static void test_buf_json_str_roundtrip(void **state) {
  char s[256];
  for (int i = 0; i < 500; i++) {
    keel_buf_t b;
    json_error_t je;
    json_t *v, *ref;
    char *dumped;

    random_utf8(s, sizeof s);
    keel_buf_init(&b, 4096);
    assert_int_equal(keel_buf_json_str(&b, s), 0);
    v = json_loadb(b.data, b.len, JSON_DECODE_ANY, &je);
    if (!v) fail_msg("jansson rejected %s: %s", b.data, je.text);
    assert_true(json_is_string(v));
    assert_int_equal(json_string_length(v), strlen(s));
    assert_memory_equal(json_string_value(v), s, strlen(s) + 1);

    /* And byte for byte what jansson itself writes. */
    ref = json_string(s);
    dumped = json_dumps(ref, JSON_ENCODE_ANY | JSON_COMPACT);
    assert_string_equal(b.data, dumped);
    free(dumped);
    json_decref(ref);
    json_decref(v);
    keel_buf_free(&b);
  }
}

/* ---- keel_utf8_sanitize ------------------------------------------------- */

static void test_utf8_sanitize(void **state) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"", ""},
      {"plain text", "plain text"},
      {"tab\tnl\n", "tab\tnl\n"},
      {"cr\r bel\x07 esc\x1b del\x7f", "cr? bel? esc? del?"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"\xff\xfe", "??"},
      {"\xc0\xaf", "??"},              /* overlong '/' */
      {"\xe0\x80\xaf", "???"},         /* overlong 3-byte */
      {"\xed\xa0\x80", "???"},         /* surrogate U+D800 */
      {"\xf4\x90\x80\x80", "????"},    /* > U+10FFFF */
      {"\xf0\x8f\xbf\xbf", "????"},    /* overlong 4-byte */
      {"a\xe2\x82", "a??"},            /* truncated at end */
      {"\xe2\x82z", "??z"},            /* truncated mid-string */
      {"\x80x", "?x"},                 /* lone continuation byte */
      {"csi\xc2\x9b" "2J", "csi??2J"}, /* C1 control U+009B */
      {"\xc2\x80\xc2\xa0", "??\xc2\xa0"}, /* U+0080 goes, NBSP stays */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", cases[i].in);
    assert_ptr_equal(keel_utf8_sanitize(buf), buf);
    assert_string_equal(buf, cases[i].out);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_values),
      cmocka_unit_test(test_parse_uses_len_only),
      cmocka_unit_test(test_parse_error_position),
      cmocka_unit_test(test_parse_error_null_err),
      cmocka_unit_test(test_parse_empty_body),
      cmocka_unit_test(test_parse_duplicate_keys),
      cmocka_unit_test(test_parse_trailing_garbage),
      cmocka_unit_test(test_parse_rejects_nul_and_bad_utf8),
      cmocka_unit_test(test_check_ok),
      cmocka_unit_test(test_check_unknown_field),
      cmocka_unit_test(test_check_wrong_type),
      cmocka_unit_test(test_check_missing_required),
      cmocka_unit_test(test_check_string_max_len),
      cmocka_unit_test(test_check_string_with_nul),
      cmocka_unit_test(test_check_array_max_items),
      cmocka_unit_test(test_check_non_object),
      cmocka_unit_test(test_json_str_accessor),
      cmocka_unit_test(test_canonical_sorted_compact),
      cmocka_unit_test(test_buf_json_str_roundtrip),
      cmocka_unit_test(test_utf8_sanitize),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
