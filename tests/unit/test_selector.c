/* Unit tests for keel/selector.h: the selector grammar, matching, the
 * canonical form, tag lists and tag checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/selector.h"

/* ---- helpers ------------------------------------------------------------ */

static keel_selector_t *parse_ok(const char *text) {
  keel_selector_t *s = (keel_selector_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_selector_parse(text, strlen(text), &s, &e);
  if (rc) fail_msg("parse(\"%s\") = %d: %s", text, rc, e.msg);
  assert_non_null(s);
  return s;
}

/* Canonical text of text, which MUST parse (caller frees). */
static char *canon(const char *text) {
  keel_selector_t *s = parse_ok(text);
  keel_buf_t b;
  keel_buf_init(&b, 1 << 20);
  assert_int_equal(keel_selector_format(s, &b), 0);
  keel_selector_free(s);
  if (!b.data) return strdup("");
  return keel_buf_steal(&b);
}

static void expect_canon(const char *text, const char *want) {
  char *got = canon(text);
  if (strcmp(got, want)) fail_msg("format(parse(\"%s\")) = \"%s\", want \"%s\"", text, got, want);
  free(got);
}

static void expect_error_n(const char *text, size_t len, const char *want) {
  keel_selector_t *s = (keel_selector_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_selector_parse(text, len, &s, &e);
  if (rc != KEEL_EINVAL) fail_msg("parse(\"%.*s\") = %d, want KEEL_EINVAL", (int)len, text, rc);
  assert_null(s);
  assert_int_equal(e.code, KEEL_EINVAL);
  if (want && strcmp(e.msg, want))
    fail_msg("parse(\"%.*s\"):\n  got  %s\n  want %s", (int)len, text, e.msg, want);
}

static void expect_error(const char *text, const char *want) {
  expect_error_n(text, strlen(text), want);
}

/* A fixed object: id "agent-7", hostname "web-01.example.com", tags below. */
static const char *const obj_tags[][2] = {
    {"env", "prod"}, {"role", "web"}, {"empty", ""}, {"a.b/c-d", "x:y@z+1"}, {"ID", "upper"},
};

static const char *obj_get(void *ud, const char *key) {
  int *calls = ud;
  if (calls) (*calls)++;
  /* The contract: never asked for the special keys. */
  if (!strcmp(key, "id") || !strcmp(key, "hostname")) fail_msg("get() asked for '%s'", key);
  for (size_t i = 0; i < sizeof obj_tags / sizeof obj_tags[0]; i++)
    if (!strcmp(obj_tags[i][0], key)) return obj_tags[i][1];
  return NULL;
}

static json_t *obj_json(void) {
  json_t *o = json_object();
  for (size_t i = 0; i < sizeof obj_tags / sizeof obj_tags[0]; i++)
    json_object_set_new(o, obj_tags[i][0], json_string(obj_tags[i][1]));
  return o;
}

/* Matches text against the fixed object both ways, and checks they agree. */
static void expect_match(const char *text, int want) {
  keel_selector_t *s = parse_ok(text);
  json_t *tags = obj_json();
  int got = keel_selector_match(s, "agent-7", "web-01.example.com", obj_get, NULL);
  int got_json = keel_selector_match_json(s, "agent-7", "web-01.example.com", tags);
  if (got != want) fail_msg("match(\"%s\") = %d, want %d", text, got, want);
  if (got_json != want) fail_msg("match_json(\"%s\") = %d, want %d", text, got_json, want);
  json_decref(tags);
  keel_selector_free(s);
}

/* ---- matching ----------------------------------------------------------- */

static void test_empty_matches_all(void **state) {
  static const char *const empties[] = {"", " ", "\t\r\n  "};
  for (size_t i = 0; i < 3; i++) {
    expect_match(empties[i], 1);
    expect_canon(empties[i], "");
  }
  /* NULL text with len 0 is the empty selector too. */
  keel_selector_t *s = NULL;
  assert_int_equal(keel_selector_parse(NULL, 0, &s, NULL), 0);
  assert_int_equal(keel_selector_match(s, NULL, NULL, NULL, NULL), 1);
  keel_selector_free(s);
  keel_selector_free(NULL);
}

static void test_eq(void **state) {
  expect_match("env=prod", 1);
  expect_match("env=dev", 0);
  expect_match("env=", 0);        /* present but not empty */
  expect_match("empty=", 1);      /* present with the empty value */
  expect_match("nope=", 0);       /* absent is not empty */
  expect_match("nope=x", 0);
  expect_match("env=PROD", 0);    /* values are case-sensitive */
  expect_match("ENV=prod", 0);    /* keys too */
  expect_match("a.b/c-d=x:y@z+1", 1);
}

static void test_ne(void **state) {
  expect_match("env!=dev", 1);
  expect_match("env!=prod", 0);
  expect_match("nope!=x", 1);     /* absent counts as different */
  expect_match("empty!=", 0);
  expect_match("env!=", 1);
  expect_match("nope!=", 1);
}

static void test_in_notin(void **state) {
  expect_match("env in (prod)", 1);
  expect_match("env in (dev,prod,stage)", 1);
  expect_match("env in (dev,stage)", 0);
  expect_match("nope in (a,b)", 0);
  expect_match("env notin (dev,stage)", 1);
  expect_match("env notin (dev,prod)", 0);
  expect_match("nope notin (a,b)", 1); /* absent: not in */
  expect_match("role in(web)", 1);
  expect_match("role notin(web)", 0);
}

static void test_exists(void **state) {
  expect_match("env", 1);
  expect_match("empty", 1);
  expect_match("nope", 0);
  expect_match("!nope", 1);
  expect_match("!env", 0);
  expect_match("!empty", 0);
  expect_match("in", 0); /* 'in' alone is a key */
  expect_match("!in", 1);
}

static void test_and(void **state) {
  expect_match("env=prod,role=web", 1);
  expect_match("env=prod,role=db", 0);
  expect_match("role=db,env=prod", 0);
  expect_match("env=prod,role in (web,api),!nope,empty,a.b/c-d!=q", 1);
  expect_match("env=prod,role in (web,api),!nope,empty,a.b/c-d!=x:y@z+1", 0);
}

/* id and hostname come from the object, always exist, and work with every
 * operator; obj_get fails the test if it is asked for them. */
static void test_special_keys(void **state) {
  expect_match("id=agent-7", 1);
  expect_match("id=upper", 0); /* the tag "ID" is a different key */
  expect_match("ID=upper", 1);
  expect_match("id!=agent-7", 0);
  expect_match("id!=agent-8", 1);
  expect_match("id in (agent-1,agent-7)", 1);
  expect_match("id notin (agent-1,agent-7)", 0);
  expect_match("id", 1);
  expect_match("!id", 0);
  expect_match("hostname=web-01.example.com", 1);
  expect_match("hostname!=web-01.example.com", 0);
  expect_match("hostname in (db-01,web-01.example.com)", 1);
  expect_match("hostname notin (db-01)", 1);
  expect_match("hostname", 1);
  expect_match("!hostname", 0);
  expect_match("hostname=web-01.example.com,id=agent-7,env=prod", 1);

  /* NULL id / hostname read as "": still present. */
  keel_selector_t *s = parse_ok("id=,hostname=,id,hostname");
  assert_int_equal(keel_selector_match(s, NULL, NULL, NULL, NULL), 1);
  keel_selector_free(s);
  s = parse_ok("!id");
  assert_int_equal(keel_selector_match(s, NULL, NULL, NULL, NULL), 0);
  keel_selector_free(s);
}

static void test_no_tags(void **state) {
  keel_selector_t *s = parse_ok("env!=prod,!role,x notin (a)");
  json_t *notobj = json_string("env=prod");
  assert_int_equal(keel_selector_match(s, "a", "h", NULL, NULL), 1);
  assert_int_equal(keel_selector_match_json(s, "a", "h", NULL), 1);
  assert_int_equal(keel_selector_match_json(s, "a", "h", notobj), 1);
  keel_selector_free(s);
  s = parse_ok("env");
  assert_int_equal(keel_selector_match(s, "a", "h", NULL, NULL), 0);
  assert_int_equal(keel_selector_match_json(s, "a", "h", NULL), 0);
  assert_int_equal(keel_selector_match(NULL, "a", "h", NULL, NULL), 0);
  keel_selector_free(s);
  json_decref(notobj);
}

/* Non-string members of a JSON tags object count as absent. */
static void test_match_json_non_strings(void **state) {
  json_t *tags = json_pack("{s:i,s:n,s:b,s:s}", "n", 1, "z", "t", 1, "s", "v");
  keel_selector_t *s = parse_ok("!n,!z,!t,n!=1,s=v");
  assert_int_equal(keel_selector_match_json(s, "a", "h", tags), 1);
  keel_selector_free(s);
  json_decref(tags);
}

/* Matching stops at the first term that fails. */
static void test_match_short_circuit(void **state) {
  keel_selector_t *s = parse_ok("env=dev,role=web,x,y");
  int calls = 0;
  assert_int_equal(keel_selector_match(s, "a", "h", obj_get, &calls), 0);
  assert_int_equal(calls, 1);
  keel_selector_free(s);
}

/* ---- whitespace and canonical form -------------------------------------- */

static void test_whitespace(void **state) {
  expect_canon("env = prod , role in ( web , api )", "env=prod,role in(api,web)");
  expect_canon("  env=prod,role in(web,api)  ", "env=prod,role in(api,web)");
  expect_canon("\tenv\t!=\tprod\n,\r\n! role", "env!=prod,!role");
  expect_canon("env =", "env=");
  expect_canon("env = , x", "env=,x");
  expect_canon("env notin(a)", "env notin(a)");
  expect_canon("k\nin\n(\nb\n,\na\n)", "k in(a,b)");
  expect_match("env = prod , role in ( web , api )", 1);
}

static void test_format(void **state) {
  expect_canon("env=prod", "env=prod");
  expect_canon("b=1,a=2", "b=1,a=2"); /* terms keep their order */
  expect_canon("x in (c,b,a,b,c)", "x in(a,b,c)"); /* sorted, deduplicated */
  expect_canon("x notin (B,a,A,b)", "x notin(A,B,a,b)"); /* bytewise */
  expect_canon("x in (a,a,a)", "x in(a)");
  expect_canon("x,!y,z!=,w=", "x,!y,z!=,w=");
  expect_canon("id in (b,a),hostname", "id in(a,b),hostname");
  expect_canon("env=prod,env=prod", "env=prod,env=prod"); /* repeated terms kept */
  expect_canon("in in (in),notin notin (notin)", "in in(in),notin notin(notin)");
  expect_canon("k_1.a/b-c=A_z.0:1/2@3+4-5", "k_1.a/b-c=A_z.0:1/2@3+4-5"); /* every class char */
}

static void test_format_appends_and_cap(void **state) {
  keel_selector_t *s = parse_ok("env=prod,role in (web,api)");
  keel_buf_t b;
  keel_buf_init(&b, 64);
  assert_int_equal(keel_buf_puts(&b, "target: "), 0);
  assert_int_equal(keel_selector_format(s, &b), 0);
  assert_string_equal(b.data, "target: env=prod,role in(api,web)");
  keel_buf_free(&b);

  /* Over the cap: KEEL_ETOOBIG and out unchanged. */
  keel_buf_init(&b, 20);
  assert_int_equal(keel_buf_puts(&b, "x: "), 0);
  assert_int_equal(keel_selector_format(s, &b), KEEL_ETOOBIG);
  assert_string_equal(b.data, "x: ");
  assert_int_equal(b.len, 3);
  keel_buf_free(&b);
  keel_selector_free(s);
}

/* Deterministic pseudo-random selectors: format is a fixed point of
 * parse-then-format, is never longer than the input, and matches alike. */
static uint64_t rnd_state = 88172645463325252ull;
static unsigned rnd(unsigned n) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return (unsigned)(rnd_state % n);
}

static void rnd_word(keel_buf_t *b, int key) {
  static const char *const words[] = {"env", "prod", "web", "role", "id", "hostname", "a.b",
                                      "x/y", "in", "notin", "agent-7", "Z9", "1", "empty"};
  static const char vchars[] = "aZ9._:/@+-";
  if (!key && rnd(4) == 0) {
    for (unsigned n = rnd(6); n; n--) keel_buf_append(b, &vchars[rnd(sizeof vchars - 1)], 1);
    return;
  }
  keel_buf_puts(b, words[rnd(sizeof words / sizeof words[0])]);
}

static void rnd_ws(keel_buf_t *b) {
  static const char *const ws[] = {"", "", "", " ", "  ", "\t", "\n"};
  keel_buf_puts(b, ws[rnd(7)]);
}

static void test_round_trip_random(void **state) {
  json_t *tags = obj_json();
  for (int iter = 0; iter < 2000; iter++) {
    keel_buf_t in, out1, out2;
    keel_selector_t *s1 = NULL, *s2 = NULL;
    keel_err_t e = {0};
    unsigned nterms = rnd(6);

    keel_buf_init(&in, 1 << 16);
    keel_buf_init(&out1, 1 << 16);
    keel_buf_init(&out2, 1 << 16);
    rnd_ws(&in);
    for (unsigned t = 0; t < nterms; t++) {
      unsigned op = rnd(6);
      if (t) {
        rnd_ws(&in);
        keel_buf_puts(&in, ",");
        rnd_ws(&in);
      }
      if (op == 5) {
        keel_buf_puts(&in, "!");
        rnd_ws(&in);
      }
      rnd_word(&in, 1);
      if (op < 2) {
        rnd_ws(&in);
        keel_buf_puts(&in, op ? "!=" : "=");
        rnd_ws(&in);
        rnd_word(&in, 0);
      } else if (op < 4) {
        keel_buf_puts(&in, rnd(2) ? " " : "\t");
        keel_buf_puts(&in, op == 2 ? "in" : "notin");
        rnd_ws(&in);
        keel_buf_puts(&in, "(");
        for (unsigned v = 0, nv = 1 + rnd(5); v < nv; v++) {
          if (v) keel_buf_puts(&in, ",");
          rnd_ws(&in);
          size_t before = in.len;
          do rnd_word(&in, 0);
          while (in.len == before); /* set values are non-empty */
          rnd_ws(&in);
        }
        keel_buf_puts(&in, ")");
      }
    }
    rnd_ws(&in);
    if (keel_selector_parse(in.data ? in.data : "", in.len, &s1, &e))
      fail_msg("parse(\"%s\"): %s", in.data, e.msg);
    assert_int_equal(keel_selector_format(s1, &out1), 0);
    assert_true(out1.len <= in.len);
    if (keel_selector_parse(out1.data ? out1.data : "", out1.len, &s2, &e))
      fail_msg("parse(\"%s\") (canonical of \"%s\"): %s", out1.data, in.data, e.msg);
    assert_int_equal(keel_selector_format(s2, &out2), 0);
    assert_int_equal(out1.len, out2.len);
    if (out1.len) assert_string_equal(out1.data, out2.data);
    assert_int_equal(keel_selector_match_json(s1, "agent-7", "web-01.example.com", tags),
                     keel_selector_match_json(s2, "agent-7", "web-01.example.com", tags));
    keel_selector_free(s1);
    keel_selector_free(s2);
    keel_buf_free(&in);
    keel_buf_free(&out1);
    keel_buf_free(&out2);
  }
  json_decref(tags);
}

/* ---- errors ------------------------------------------------------------- */

static void test_errors_columns(void **state) {
#define AFTER_KEY "expected '=', '!=', 'in', 'notin', ',' or end after key "
  static const char *const cases[][2] = {
      {"env prod", "selector: column 5: " AFTER_KEY "'env'"},
      {"a=b,env   >x", "selector: column 11: " AFTER_KEY "'env'"},
      {"role in (web", "selector: column 13: unterminated '(' opened at column 9"},
      {"role in (web,", "selector: column 14: unterminated '(' opened at column 9"},
      {"role in (web ", "selector: column 14: unterminated '(' opened at column 9"},
      {"role in (", "selector: column 10: unterminated '(' opened at column 9"},
      {"role in ()", "selector: column 10: expected a value in '(' opened at column 9"},
      {"role in (a,)", "selector: column 12: expected a value in '(' opened at column 9"},
      {"role in (,a)", "selector: column 10: expected a value in '(' opened at column 9"},
      {"role in (a b)", "selector: column 12: expected ',' or ')' after value 'a'"},
      {"role in (a)x", "selector: column 12: expected ',' or end after ')'"},
      {"role in (a))", "selector: column 12: expected ',' or end after ')'"},
      {"role in a", "selector: column 9: expected '(' after 'in'"},
      {"role notin", "selector: column 11: expected '(' after 'notin'"},
      {"role in (a$)", "selector: column 11: value 'a$': invalid character '$'"},
      {"role in (a=b)", "selector: column 11: value 'a=b': invalid character '='"},
      {"role inn (a)", "selector: column 6: " AFTER_KEY "'role'"},
      {"rolein (a)", "selector: column 8: " AFTER_KEY "'rolein'"},
      {"x!", "selector: column 2: " AFTER_KEY "'x'"},
      {"x!y", "selector: column 2: " AFTER_KEY "'x'"},
      {"x@y=1", "selector: column 2: key 'x@y': invalid character '@'"},
      {"env=pr$od", "selector: column 7: value 'pr$od': invalid character '$'"},
      {"env=a=b", "selector: column 6: value 'a=b': invalid character '='"},
      {"env==prod", "selector: column 5: value '=prod': invalid character '='"},
      {"env=pr od", "selector: column 8: expected ',' or end after value 'pr'"},
      {"env=(a)", "selector: column 5: expected a value, ',' or end after '='"},
      {"env!=(a)", "selector: column 6: expected a value, ',' or end after '!='"},
      {"env=a)", "selector: column 6: expected ',' or end after value 'a'"},
      {"!env=prod", "selector: column 5: expected ',' or end after '!env'"},
      {"!", "selector: column 2: expected a key after '!'"},
      {"!!x", "selector: column 2: expected a key after '!'"},
      {",", "selector: column 1: expected a key"},
      {"=v", "selector: column 1: expected a key"},
      {"(a)", "selector: column 1: expected a key"},
      {"env=prod,", "selector: column 10: expected a term after ','"},
      {"env=prod , ", "selector: column 12: expected a term after ','"},
      {"env=prod,,x", "selector: column 10: expected a key"},
      {".env", "selector: column 1: key '.env': must start with a letter or digit"},
      {"-x=1", "selector: column 1: key '-x': must start with a letter or digit"},
      {"env*x=1", "selector: column 4: key 'env*x': invalid character '*'"},
      {"k=\"v\"", "selector: column 3: value '\"v\"': invalid character '\"'"},
      {"k\x01", "selector: column 2: key 'k\\x01': invalid byte 0x01"},
      {"k=\xc3\xa9", "selector: column 3: value '\\xc3\\xa9': invalid byte 0xc3"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    expect_error(cases[i][0], cases[i][1]);
#undef AFTER_KEY
}

/* A NUL inside the given length is an ordinary invalid byte, not an end. */
static void test_errors_nul_and_binary(void **state) {
  expect_error_n("env=prod\0x", 10, "selector: column 9: value 'prod\\x00x': invalid byte 0x00");
  expect_error_n("\0", 1, "selector: column 1: key '\\x00': invalid byte 0x00");
  expect_error_n("env\0", 4, "selector: column 4: key 'env\\x00': invalid byte 0x00");
  expect_error("\xff\xfe", "selector: column 1: key '\\xff\\xfe': invalid byte 0xff");
  expect_error("k in (\x80)", "selector: column 7: value '\\x80': invalid byte 0x80");
  /* NULL text with a length. */
  keel_selector_t *s = (keel_selector_t *)0x1;
  keel_err_t e = {0};
  assert_int_equal(keel_selector_parse(NULL, 3, &s, &e), KEEL_EINVAL);
  assert_null(s);
  assert_true(e.msg[0]);
  /* e may be NULL. */
  assert_int_equal(keel_selector_parse("k=", 2, &s, NULL), 0);
  keel_selector_free(s);
  assert_int_equal(keel_selector_parse("k==", 3, &s, NULL), KEEL_EINVAL);
  assert_null(s);
}

/* Quoted text in messages is escaped and cut, so the message stays one
 * readable line whatever the input. */
static void test_error_quotes_are_bounded(void **state) {
  char text[300];
  keel_selector_t *s = NULL;
  keel_err_t e = {0};
  memset(text, 'a', sizeof text);
  text[0] = '\n';
  text[1] = 'b';
  text[150] = '\x07';
  text[299] = '\n';
  assert_int_equal(keel_selector_parse(text, sizeof text, &s, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "selector: column 151: key 'baaaa"));
  assert_non_null(strstr(e.msg, "...': invalid byte 0x07"));
  assert_null(strchr(e.msg, '\n'));
  assert_true(strlen(e.msg) < 200);
}

/* The text need not be NUL-terminated: an exact-size heap copy lets ASan
 * catch any read past len. */
static void test_not_nul_terminated(void **state) {
  static const char *const texts[] = {"env=prod", "env", "!env", "k in (a,b)", "k=",
                                      "k in (a",  "k!",  "env=prod,"};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    size_t n = strlen(texts[i]);
    char *p = malloc(n);
    keel_selector_t *s = NULL;
    memcpy(p, texts[i], n);
    int rc = keel_selector_parse(p, n, &s, NULL);
    assert_true(rc == 0 || rc == KEEL_EINVAL);
    keel_selector_free(s);
    free(p);
  }
  /* len shorter than the string: only len bytes count. */
  keel_selector_t *s = NULL;
  assert_int_equal(keel_selector_parse("env=prod,!role", 8, &s, NULL), 0);
  keel_buf_t b;
  keel_buf_init(&b, 100);
  assert_int_equal(keel_selector_format(s, &b), 0);
  assert_string_equal(b.data, "env=prod");
  keel_buf_free(&b);
  keel_selector_free(s);
}

/* ---- limits ------------------------------------------------------------- */

static char *repeat(char c, size_t n) {
  char *p = malloc(n + 1);
  memset(p, c, n);
  p[n] = '\0';
  return p;
}

static void test_limits_key_value(void **state) {
  char *k63 = repeat('k', 63), *k64 = repeat('k', 64), *v128 = repeat('v', 128),
       *v129 = repeat('v', 129), text[400], want[400];

  snprintf(text, sizeof text, "%s=%s", k63, v128);
  expect_canon(text, text);
  snprintf(text, sizeof text, "%s", k64);
  snprintf(want, sizeof want,
           "selector: column 64: key '%.40s...': longer than 63 characters", k64);
  expect_error(text, want);
  snprintf(text, sizeof text, "k=%s", v129);
  snprintf(want, sizeof want,
           "selector: column 131: value '%.40s...': longer than 128 characters", v129);
  expect_error(text, want);
  snprintf(text, sizeof text, "k in (a, %s)", v129);
  snprintf(want, sizeof want,
           "selector: column 138: value '%.40s...': longer than 128 characters", v129);
  expect_error(text, want);
  free(k63);
  free(k64);
  free(v128);
  free(v129);
}

static void test_limits_terms_values(void **state) {
  keel_buf_t b;
  keel_selector_t *s = NULL;
  keel_err_t e = {0};

  /* 64 terms are fine, a 65th is not. */
  keel_buf_init(&b, 1 << 16);
  for (int i = 0; i < 64; i++) keel_buf_printf(&b, "%sk%d", i ? "," : "", i);
  assert_int_equal(keel_selector_parse(b.data, b.len, &s, &e), 0);
  keel_selector_free(s);
  size_t col = b.len + 2;
  keel_buf_puts(&b, ",k64");
  assert_int_equal(keel_selector_parse(b.data, b.len, &s, &e), KEEL_EINVAL);
  char want[200];
  snprintf(want, sizeof want, "selector: column %zu: more than 64 terms", col);
  assert_string_equal(e.msg, want);
  keel_buf_free(&b);

  /* 64 values in a set are fine (duplicates count), a 65th is not. */
  keel_buf_init(&b, 1 << 16);
  keel_buf_puts(&b, "k in (");
  for (int i = 0; i < 64; i++) keel_buf_printf(&b, "%s%d", i ? "," : "", i % 3);
  keel_buf_puts(&b, ")");
  assert_int_equal(keel_selector_parse(b.data, b.len, &s, &e), 0);
  keel_selector_free(s);
  b.len -= 1;
  col = b.len + 2;
  keel_buf_puts(&b, ",x)");
  assert_int_equal(keel_selector_parse(b.data, b.len, &s, &e), KEEL_EINVAL);
  snprintf(want, sizeof want, "selector: column %zu: more than 64 values in '(' opened at column 6",
           col);
  assert_string_equal(e.msg, want);
  keel_buf_free(&b);
}

static void test_limits_length(void **state) {
  keel_selector_t *s = NULL;
  keel_err_t e = {0};
  /* 4096 bytes exactly: fine (mostly whitespace). */
  char *text = repeat(' ', 1 << 20);
  memcpy(text, "env=prod", 8);
  assert_int_equal(keel_selector_parse(text, 4096, &s, &e), 0);
  keel_selector_free(s);
  assert_int_equal(keel_selector_parse(text, 4097, &s, &e), KEEL_EINVAL);
  assert_null(s);
  assert_string_equal(e.msg, "selector: column 4097: longer than 4096 bytes");
  /* Huge input: the same length error, without scanning it. */
  assert_int_equal(keel_selector_parse(text, 1 << 20, &s, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "selector: column 4097: longer than 4096 bytes");
  assert_int_equal(keel_selector_parse(text, SIZE_MAX, &s, &e), KEEL_EINVAL);
  free(text);
}

/* ---- tag lists ---------------------------------------------------------- */

static void expect_tags(const char *text, const char *want_json) {
  json_t *o = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_tags_parse(text, strlen(text), &o, &e);
  if (rc) fail_msg("tags_parse(\"%s\") = %d: %s", text, rc, e.msg);
  char *got = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
  if (strcmp(got, want_json)) fail_msg("tags_parse(\"%s\") = %s, want %s", text, got, want_json);
  free(got);
  json_decref(o);
}

static void expect_tags_error(const char *text, const char *want) {
  json_t *o = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_tags_parse(text, strlen(text), &o, &e);
  if (rc != KEEL_EINVAL) fail_msg("tags_parse(\"%s\") = %d, want KEEL_EINVAL", text, rc);
  assert_null(o);
  if (strcmp(e.msg, want)) fail_msg("tags_parse(\"%s\"):\n  got  %s\n  want %s", text, e.msg, want);
}

static void test_tags_parse(void **state) {
  expect_tags("", "{}");
  expect_tags("  ", "{}");
  expect_tags("env=prod", "{\"env\":\"prod\"}");
  expect_tags("env=prod,role=web", "{\"env\":\"prod\",\"role\":\"web\"}");
  expect_tags(" env = prod , role = web ", "{\"env\":\"prod\",\"role\":\"web\"}");
  expect_tags("empty=", "{\"empty\":\"\"}");
  expect_tags("empty=,x=1", "{\"empty\":\"\",\"x\":\"1\"}");
  expect_tags("a.b/c-d=x:y@z+1", "{\"a.b/c-d\":\"x:y@z+1\"}");
  expect_tags("ID=1,Hostname=2", "{\"Hostname\":\"2\",\"ID\":\"1\"}");
  json_t *o = NULL;
  assert_int_equal(keel_tags_parse(NULL, 0, &o, NULL), 0);
  assert_int_equal(json_object_size(o), 0);
  json_decref(o);
}

static void test_tags_errors(void **state) {
  expect_tags_error("env=prod,env=dev", "tags: column 10: duplicate key 'env'");
  expect_tags_error("x!=1", "tags: column 2: key 'x!': invalid character '!'");
  expect_tags_error("env", "tags: column 4: expected '=' after key 'env'");
  expect_tags_error("env prod", "tags: column 5: expected '=' after key 'env'");
  expect_tags_error("env=prod,", "tags: column 10: expected a key after ','");
  expect_tags_error(",", "tags: column 1: expected a key");
  expect_tags_error("=v", "tags: column 1: expected a key");
  expect_tags_error("env=a b", "tags: column 7: expected ',' or end after value 'a'");
  expect_tags_error("env=a=b", "tags: column 6: value 'a=b': invalid character '='");
  expect_tags_error("env=(a)", "tags: column 5: value '(a)': invalid character '('");
  expect_tags_error("id=a", "tags: column 1: key 'id' is reserved (selectors match it "
                            "against the agent's id)");
  expect_tags_error("x=1, hostname=h", "tags: column 6: key 'hostname' is reserved (selectors "
                                       "match it against the agent's hostname)");
  expect_tags_error(".x=1", "tags: column 1: key '.x': must start with a letter or digit");

  /* 64 tags fine, 65th not; 4096 bytes fine, 4097 not. */
  keel_buf_t b;
  json_t *o = NULL;
  keel_err_t e = {0};
  keel_buf_init(&b, 1 << 16);
  for (int i = 0; i < 64; i++) keel_buf_printf(&b, "%sk%d=%d", i ? "," : "", i, i);
  assert_int_equal(keel_tags_parse(b.data, b.len, &o, &e), 0);
  assert_int_equal(json_object_size(o), 64);
  json_decref(o);
  keel_buf_puts(&b, ",k64=1");
  assert_int_equal(keel_tags_parse(b.data, b.len, &o, &e), KEEL_EINVAL);
  assert_null(o);
  assert_non_null(strstr(e.msg, "more than 64 tags"));
  keel_buf_free(&b);
  char *big = repeat(' ', 5000);
  memcpy(big, "a=1", 3);
  assert_int_equal(keel_tags_parse(big, 4096, &o, &e), 0);
  json_decref(o);
  assert_int_equal(keel_tags_parse(big, 4097, &o, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "tags: column 4097: longer than 4096 bytes");
  free(big);
}

static void test_tag_check(void **state) {
  keel_err_t e = {0};
  char *k63 = repeat('k', 63), *k64 = repeat('k', 64), *v128 = repeat('v', 128),
       *v129 = repeat('v', 129);

  assert_int_equal(keel_tag_check("env", "prod", &e), 0);
  assert_int_equal(keel_tag_check("a.b/c-d", "x:y@z+1", &e), 0);
  assert_int_equal(keel_tag_check("env", "", &e), 0);
  assert_int_equal(keel_tag_check(k63, v128, &e), 0);
  assert_int_equal(keel_tag_check("x!", "1", &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "key 'x!': invalid character '!'");
  assert_int_equal(keel_tag_check(k64, "1", &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "longer than 63 characters"));
  assert_int_equal(keel_tag_check("k", v129, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "key 'k': value 'vvv"));
  assert_non_null(strstr(e.msg, "longer than 128 characters"));
  assert_int_equal(keel_tag_check("k", "a b", &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "key 'k': value 'a b': invalid character ' '");
  assert_int_equal(keel_tag_check("", "v", &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "empty tag key");
  assert_int_equal(keel_tag_check(NULL, "v", &e), KEEL_EINVAL);
  assert_int_equal(keel_tag_check("k", NULL, &e), KEEL_EINVAL);
  assert_int_equal(keel_tag_check("id", "x", &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "reserved"));
  assert_int_equal(keel_tag_check("hostname", "x", &e), KEEL_EINVAL);
  assert_int_equal(keel_tag_check("-k", "x", NULL), KEEL_EINVAL);
  assert_int_equal(keel_tag_check("k\n", "x", &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "key 'k\\x0a': invalid byte 0x0a");
  free(k63);
  free(k64);
  free(v128);
  free(v129);
}

/* Whatever keel_tags_parse accepts, keel_tag_check accepts per tag, and
 * each tag is selectable with k=v. */
static void test_tags_and_selector_agree(void **state) {
  json_t *o = NULL;
  const char *k;
  json_t *v;
  assert_int_equal(keel_tags_parse("env=prod, a.b/c=x:y@z+1, e=", 27, &o, NULL), 0);
  json_object_foreach(o, k, v) {
    char text[300];
    assert_int_equal(keel_tag_check(k, json_string_value(v), NULL), 0);
    snprintf(text, sizeof text, "%s=%s", k, json_string_value(v));
    keel_selector_t *s = parse_ok(text);
    assert_int_equal(keel_selector_match_json(s, "a", "h", o), 1);
    keel_selector_free(s);
  }
  json_decref(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_matches_all),
      cmocka_unit_test(test_eq),
      cmocka_unit_test(test_ne),
      cmocka_unit_test(test_in_notin),
      cmocka_unit_test(test_exists),
      cmocka_unit_test(test_and),
      cmocka_unit_test(test_special_keys),
      cmocka_unit_test(test_no_tags),
      cmocka_unit_test(test_match_json_non_strings),
      cmocka_unit_test(test_match_short_circuit),
      cmocka_unit_test(test_whitespace),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_format_appends_and_cap),
      cmocka_unit_test(test_round_trip_random),
      cmocka_unit_test(test_errors_columns),
      cmocka_unit_test(test_errors_nul_and_binary),
      cmocka_unit_test(test_error_quotes_are_bounded),
      cmocka_unit_test(test_not_nul_terminated),
      cmocka_unit_test(test_limits_key_value),
      cmocka_unit_test(test_limits_terms_values),
      cmocka_unit_test(test_limits_length),
      cmocka_unit_test(test_tags_parse),
      cmocka_unit_test(test_tags_errors),
      cmocka_unit_test(test_tag_check),
      cmocka_unit_test(test_tags_and_selector_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
