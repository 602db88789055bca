/* Unit tests for keel/yaml.h: the core schema, tags, anchors and their
 * caps, duplicate keys, document counts, error positions, JSON input,
 * position lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/err.h"
#include "keel/json.h"
#include "keel/yaml.h"

/* ---- helpers ------------------------------------------------------------ */

static json_t *load_n(const char *text, size_t len, keel_yaml_pos_t **pos) {
  json_t *v = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_yaml_load("t.yaml", text, len, &v, pos, &e);
  if (rc) fail_msg("load(\"%s\") = %d: %s", text, rc, e.msg);
  assert_non_null(v);
  return v;
}

static json_t *load(const char *text) { return load_n(text, strlen(text), NULL); }

/* text loads to the value whose canonical JSON is want. */
static void expect_json(const char *text, const char *want) {
  json_t *v = load(text);
  char *got = keel_json_canonical(v);
  if (strcmp(got, want)) fail_msg("load(\"%s\") = %s, want %s", text, got, want);
  free(got);
  json_decref(v);
}

static void expect_error_n(const char *text, size_t len, int code, const char *want) {
  json_t *v = (json_t *)0x1;
  keel_yaml_pos_t *pos = (keel_yaml_pos_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_yaml_load("t.yaml", text, len, &v, &pos, &e);
  if (rc != code) fail_msg("load(\"%s\") = %d (%s), want %d", text, rc, e.msg, code);
  assert_null(v);
  assert_null(pos);
  assert_int_equal(e.code, code);
  if (strcmp(e.msg, want)) fail_msg("load(\"%s\"):\n  got  %s\n  want %s", text, e.msg, want);
}

static void expect_error(const char *text, const char *want) {
  expect_error_n(text, strlen(text), KEEL_EINVAL, want);
}

/* ---- scalars ------------------------------------------------------------ */

static void test_core_schema(void **state) {
  (void)state;
  expect_json("a: null\nb: Null\nc: NULL\nd: ~\ne:\n", "{\"a\":null,\"b\":null,\"c\":null,\"d\":null,\"e\":null}");
  expect_json("[true, True, TRUE, false, False, FALSE]", "[true,true,true,false,false,false]");
  expect_json("[yes, no, on, off, tRUE, nULL]", "[\"yes\",\"no\",\"on\",\"off\",\"tRUE\",\"nULL\"]");
  expect_json("[0, -12, +7, 0x1F, 0o17, 9223372036854775807, -9223372036854775808]",
              "[0,-12,7,31,15,9223372036854775807,-9223372036854775808]");
  expect_json("[1.5, -0.25, .5, 1., 1e3, 2.5E-1]", "[1.5,-0.25,0.5,1.0,1000.0,0.25]");
  /* YAML 1.1 forms are strings in 1.2: octal 017 is decimal, 0b, sexagesimal. */
  expect_json("[017, 0b101, 10:00, 1_000, 0x, 2027-12-31, 2027-12-31T00:00:00Z]",
              "[17,\"0b101\",\"10:00\",\"1_000\",\"0x\",\"2027-12-31\",\"2027-12-31T00:00:00Z\"]");
  expect_json("s: hello world\n", "{\"s\":\"hello world\"}");
}

static void test_quoted_and_block(void **state) {
  (void)state;
  expect_json("['1', \"true\", 'null', \"\", '0x10', \"~\"]",
              "[\"1\",\"true\",\"null\",\"\",\"0x10\",\"~\"]");
  expect_json("a: |\n  12\n  x\nb: >-\n  true\n", "{\"a\":\"12\\nx\\n\",\"b\":\"true\"}");
  expect_json("\"\\u00e9\\t\"", "\"\xc3\xa9\\t\"");
}

static void test_numbers_out_of_range(void **state) {
  (void)state;
  expect_error("n: 9223372036854775808\n",
               "t.yaml:1:4: integer '9223372036854775808' out of range (64-bit)");
  expect_error("n: 0x8000000000000000\n",
               "t.yaml:1:4: integer '0x8000000000000000' out of range (64-bit)");
  expect_error("n: .inf\n", "t.yaml:1:4: number '.inf' cannot be represented in JSON");
  expect_error("- .NaN\n", "t.yaml:1:3: number '.NaN' cannot be represented in JSON");
  expect_error("- 1e999\n", "t.yaml:1:3: number '1e999' cannot be represented in JSON");
}

static void test_tags(void **state) {
  (void)state;
  expect_json("[!!str 12, !!str true, !!str, !!int \"12\", !!bool 'false', !!null '', !!float 2, "
              "!!float \"0x10\", ! 12]",
              "[\"12\",\"true\",\"\",12,false,null,2.0,16.0,\"12\"]");
  expect_json("!!map {a: !!seq [1]}", "{\"a\":[1]}");
  expect_json("- !<tag:yaml.org,2002:int> 7\n", "[7]");
  expect_error("a: !foo x\n", "t.yaml:1:4: unsupported tag '!foo' on a scalar");
  expect_error("a: !!binary aGk=\n",
               "t.yaml:1:4: unsupported tag 'tag:yaml.org,2002:binary' on a scalar");
  expect_error("a: !!set {x: null}\n",
               "t.yaml:1:4: unsupported tag 'tag:yaml.org,2002:set' on a mapping");
  expect_error("a: !!map [1]\n", "t.yaml:1:4: unsupported tag 'tag:yaml.org,2002:map' on a sequence");
  expect_error("a: !!int x1\n", "t.yaml:1:10: 'x1' is not a valid !!int");
  expect_error("a: !!bool yes\n", "t.yaml:1:11: 'yes' is not a valid !!bool");
  expect_error("a: !!null 0\n", "t.yaml:1:11: '0' is not a valid !!null");
  expect_error("a: !!float abc\n", "t.yaml:1:12: 'abc' is not a valid !!float");
  expect_error("!x k: v\n", "t.yaml:1:1: unsupported tag '!x' on a scalar");
}

/* ---- structure ------------------------------------------------------------ */

static void test_keys(void **state) {
  (void)state;
  expect_json("1: a\ntrue: b\n~: c\n'q': d\n", "{\"1\":\"a\",\"q\":\"d\",\"true\":\"b\",\"~\":\"c\"}");
  expect_error("a: 1\nb: 2\na: 3\n", "t.yaml:3:1: duplicate key 'a' (lines 1 and 3)");
  expect_error("x:\n  k: 1\n  'k': 2\n", "t.yaml:3:3: duplicate key 'k' (lines 2 and 3)");
  expect_error("{a: 1, a: 2}", "t.yaml:1:8: duplicate key 'a' (lines 1 and 1)");
  expect_error("? [a]\n: 1\n", "t.yaml:1:3: mapping keys must be scalars");
  expect_error("? {a: 1}\n: 1\n", "t.yaml:1:3: mapping keys must be scalars");
  expect_error("a: &k x\n*k : 1\n", "t.yaml:2:1: an alias cannot be a mapping key");
  /* Not a merge: "<<" is an ordinary key. */
  expect_json("b: &b {x: 1}\nc: {<<: *b}\n", "{\"b\":{\"x\":1},\"c\":{\"<<\":{\"x\":1}}}");
}

static void test_anchors(void **state) {
  (void)state;
  expect_json("a: &x [1, {b: 2}]\nc: *x\nd: &s str\ne: *s\n",
              "{\"a\":[1,{\"b\":2}],\"c\":[1,{\"b\":2}],\"d\":\"str\",\"e\":\"str\"}");
  /* A later anchor of the same name wins for later aliases. */
  expect_json("- &a 1\n- *a\n- &a 2\n- *a\n", "[1,1,2,2]");
  expect_error("a: *nope\n", "t.yaml:1:4: alias '*nope' names no complete anchor before it");
  /* An alias inside its own anchor would be a cycle. */
  expect_error("a: &r [1, *r]\n", "t.yaml:1:11: alias '*r' names no complete anchor before it");
}

static void test_alias_copies_are_independent(void **state) {
  json_t *v = load("a: &x {k: 1}\nb: *x\n");
  (void)state;
  json_object_set_new(json_object_get(v, "b"), "k", json_integer(2));
  assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "a"), "k")), 1);
  json_decref(v);
}

static void test_billion_laughs(void **state) {
  const char *lol =
      "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
      "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
      "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
      "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
      "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
      "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
      "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
      "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
  json_t *v;
  (void)state;
  /* Up to d: 1 + 11 + 111 + 1111 + 11111 nodes and the keys' values: fine; e alone
   * would add 111111. */
  v = load_n(lol, (size_t)(strstr(lol, "e:") - lol), NULL);
  assert_int_equal(json_array_size(json_object_get(v, "d")), 10);
  json_decref(v);
  expect_error_n(lol, strlen(lol), KEEL_ETOOBIG,
                 "t.yaml:5:36: document too large: more than 100000 nodes after alias expansion");
}

static void test_depth_cap(void **state) {
  char buf[400];
  json_t *v;
  size_t n = 0;
  (void)state;
  for (int i = 0; i < 64; i++) buf[n++] = '[';
  for (int i = 0; i < 64; i++) buf[n++] = ']';
  v = load_n(buf, n, NULL);
  json_decref(v);
  n = 0;
  for (int i = 0; i < 65; i++) buf[n++] = '[';
  for (int i = 0; i < 65; i++) buf[n++] = ']';
  expect_error_n(buf, n, KEEL_ETOOBIG, "t.yaml:1:65: nested deeper than 64 levels");
  /* Depth reached through an alias counts too. */
  n = (size_t)snprintf(buf, sizeof buf, "a: &a [[[[[[[[[[1]]]]]]]]]]\nb: ");
  for (int i = 0; i < 56; i++) buf[n++] = '[';
  memcpy(buf + n, "*a", 2);
  n += 2;
  for (int i = 0; i < 56; i++) buf[n++] = ']';
  expect_error_n(buf, n, KEEL_ETOOBIG,
                 "t.yaml:2:60: nested deeper than 64 levels (through an alias)");
}

static void test_documents(void **state) {
  (void)state;
  expect_error("--- 1\n--- 2\n", "t.yaml:2:1: more than one document");
  expect_error("a: 1\n---\nb: 2\n", "t.yaml:2:1: more than one document");
  expect_error("", "t.yaml:1:1: empty document");
  expect_error("# only a comment\n\n", "t.yaml:3:1: empty document");
  expect_json("--- {a: 1}\n...\n", "{\"a\":1}");
  expect_json("%YAML 1.2\n---\nx\n", "\"x\"");
}

static void test_syntax_errors(void **state) {
  (void)state;
  expect_error("a: b: c\n", "t.yaml:1:5: invalid nested block mapping on the same line");
  expect_error("a: [1, 2\nb: 3\n", "t.yaml:3:1: flow sequence without a closing bracket");
  expect_error("a: \"abc\n", "t.yaml:1:5: double-quoted scalar without closing quote");
  expect_error("\t- 1\n", "t.yaml:1:2: plain scalar cannot start with '-' followed by blank");
}

static void test_size_cap(void **state) {
  size_t n = KEEL_YAML_MAX_INPUT + 1;
  char *big = malloc(n);
  (void)state;
  assert_non_null(big);
  memset(big, ' ', n);
  expect_error_n(big, n, KEEL_ETOOBIG, "t.yaml: larger than 4 MiB");
  free(big);
}

static void test_json_input(void **state) {
  (void)state;
  expect_json("{\"a\": [1, 2.5, \"x\", true, null], \"b\": {\"c\": \"\\u00e9\"}}",
              "{\"a\":[1,2.5,\"x\",true,null],\"b\":{\"c\":\"\xc3\xa9\"}}");
  expect_json("{\"a\":1,\"b\":[]}", "{\"a\":1,\"b\":[]}");
  expect_json("[]", "[]");
  expect_error("{\"a\": 1, \"a\": 2}", "t.yaml:1:10: duplicate key 'a' (lines 1 and 1)");
}

static void test_not_utf8(void **state) {
  (void)state;
  expect_error("a: \xff\n", "t.yaml:1:4: invalid UTF-8");
  expect_error("a: ok\nb: x\xc3\n", "t.yaml:2:5: invalid UTF-8");
  expect_error("a: \xed\xa0\x80\n", "t.yaml:1:4: invalid UTF-8"); /* a surrogate */
  expect_error("a: \xc0\xaf\n", "t.yaml:1:4: invalid UTF-8");     /* overlong */
  expect_json("a: caf\xc3\xa9\n", "{\"a\":\"caf\xc3\xa9\"}");
}

static void test_positions(void **state) {
  const char *text = "teams:\n"
                     "  - name: a\n"
                     "    kind: platform\n"
                     "  - name: b\n"
                     "    kind: partner\n"
                     "    members:\n"
                     "x/y~: {k: 1}\n"
                     "al: &q [1]\n"
                     "b2: *q\n";
  keel_yaml_pos_t *pos = NULL;
  json_t *v = load_n(text, strlen(text), &pos);
  int line = 0, col = 0;
  (void)state;
  assert_non_null(pos);
  assert_int_equal(keel_yaml_pos_lookup(pos, "", &line, &col), 0);
  assert_int_equal(line, 1), assert_int_equal(col, 1);
  assert_int_equal(keel_yaml_pos_lookup(pos, "/teams/1/kind", &line, &col), 0);
  assert_int_equal(line, 5), assert_int_equal(col, 11);
  assert_int_equal(keel_yaml_pos_lookup(pos, "/teams/0", &line, &col), 0);
  assert_int_equal(line, 2), assert_int_equal(col, 5);
  /* An empty value: its key's position. */
  assert_int_equal(keel_yaml_pos_lookup(pos, "/teams/1/members", &line, &col), 0);
  assert_int_equal(line, 6), assert_int_equal(col, 5);
  /* Missing: the nearest ancestor. */
  assert_int_equal(keel_yaml_pos_lookup(pos, "/teams/1/nope/deeper", &line, &col), 0);
  assert_int_equal(line, 2 + 2), assert_int_equal(col, 5);
  assert_int_equal(keel_yaml_pos_lookup(pos, "/teams/7/kind", &line, &col), 0);
  assert_int_equal(line, 2), assert_int_equal(col, 3);
  assert_int_equal(keel_yaml_pos_lookup(pos, "/teams/01", &line, &col), 0);
  assert_int_equal(line, 2), assert_int_equal(col, 3);
  /* Escapes. */
  assert_int_equal(keel_yaml_pos_lookup(pos, "/x~1y~0/k", &line, &col), 0);
  assert_int_equal(line, 7), assert_int_equal(col, 11);
  /* Through an alias: the alias's position. */
  assert_int_equal(keel_yaml_pos_lookup(pos, "/b2/0", &line, &col), 0);
  assert_int_equal(line, 9), assert_int_equal(col, 5);
  assert_int_equal(keel_yaml_pos_lookup(pos, "nope", &line, &col), KEEL_ENOENT);
  assert_int_equal(keel_yaml_pos_lookup(NULL, "", &line, &col), KEEL_ENOENT);
  keel_yaml_pos_free(pos);
  keel_yaml_pos_free(NULL);
  json_decref(v);
}

static void test_no_pos_wanted(void **state) {
  json_t *v = NULL;
  keel_err_t e = {0};
  (void)state;
  assert_int_equal(keel_yaml_load(NULL, "a: 1", 4, &v, NULL, &e), 0);
  json_decref(v);
  assert_int_equal(keel_yaml_load(NULL, "a: [", 4, &v, NULL, &e), KEEL_EINVAL);
  assert_null(v);
  assert_int_equal(strncmp(e.msg, "<input>:", 8), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_core_schema),
      cmocka_unit_test(test_quoted_and_block),
      cmocka_unit_test(test_numbers_out_of_range),
      cmocka_unit_test(test_tags),
      cmocka_unit_test(test_keys),
      cmocka_unit_test(test_anchors),
      cmocka_unit_test(test_alias_copies_are_independent),
      cmocka_unit_test(test_billion_laughs),
      cmocka_unit_test(test_depth_cap),
      cmocka_unit_test(test_documents),
      cmocka_unit_test(test_syntax_errors),
      cmocka_unit_test(test_size_cap),
      cmocka_unit_test(test_json_input),
      cmocka_unit_test(test_not_utf8),
      cmocka_unit_test(test_positions),
      cmocka_unit_test(test_no_pos_wanted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
