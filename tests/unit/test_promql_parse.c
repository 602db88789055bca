/* Unit tests for the PromQL parser (promql/promql.h): ASTs of good input
 * (precedence, associativity, literals, selectors, modifiers) and the
 * exact error text of bad input.  The error texts are Prometheus 2.42's;
 * tests/promql/peer.sh checks most of them against the real thing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "promql/promql.h"

/* An S-expression of the AST, to compare trees as text. */
static void put(char *b, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char *b, size_t cap, const char *fmt, ...) {
  size_t n = strlen(b);
  va_list ap;
  va_start(ap, fmt);
  if (n < cap) vsnprintf(b + n, cap - n, fmt, ap);
  va_end(ap);
}

static const char *const binops[] = {"+", "-", "*", "/", "%", "^", "atan2", "==", "!=",
                                     ">", "<", ">=", "<=", "and", "or", "unless"};
static const char *const aggops[] = {"sum", "avg", "count", "min", "max", "group", "stddev",
                                     "stdvar", "topk", "bottomk", "count_values", "quantile"};
static const char *const mops[] = {"=", "!=", "=~", "!~"};

static void dump(const k_pq_node_t *n, char *b, size_t cap) {
  char f[K_PROMQL_FLOAT_BUF];
  switch (n->kind) {
  case K_PQ_NUMBER: put(b, cap, "%s", k_promql_format_float(n->u.number, f)); break;
  case K_PQ_STRING: put(b, cap, "'%s'", n->u.string); break;
  case K_PQ_VSEL:
    put(b, cap, "%s{", n->u.vsel.name ? n->u.vsel.name : "");
    for (size_t i = 0; i < n->u.vsel.nm - (n->u.vsel.name ? 1 : 0); i++)
      put(b, cap, "%s%s%s'%s'", i ? "," : "", n->u.vsel.m[i].name, mops[n->u.vsel.m[i].type],
          n->u.vsel.m[i].value);
    put(b, cap, "}");
    if (n->u.vsel.offset_ms) put(b, cap, " offset %lld", (long long)n->u.vsel.offset_ms);
    break;
  case K_PQ_MSEL:
    dump(n->u.msel.vs, b, cap);
    put(b, cap, "[%lld]", (long long)n->u.msel.range_ms);
    break;
  case K_PQ_PAREN:
    put(b, cap, "[");
    dump(n->u.paren.expr, b, cap);
    put(b, cap, "]");
    break;
  case K_PQ_UNARY:
    put(b, cap, "(%c ", n->u.unary.neg ? '-' : '+');
    dump(n->u.unary.expr, b, cap);
    put(b, cap, ")");
    break;
  case K_PQ_CALL: {
    put(b, cap, "%s(", k_promql_func_name(n->u.call.func));
    for (size_t i = 0; i < n->u.call.nargs; i++) {
      if (i) put(b, cap, ", ");
      dump(n->u.call.args[i], b, cap);
    }
    put(b, cap, ")");
    break;
  }
  case K_PQ_AGG:
    put(b, cap, "(%s", aggops[n->u.agg.op]);
    if (n->u.agg.ngrouping || n->u.agg.without) {
      put(b, cap, " %s(", n->u.agg.without ? "without" : "by");
      for (size_t i = 0; i < n->u.agg.ngrouping; i++)
        put(b, cap, "%s%s", i ? "," : "", n->u.agg.grouping[i]);
      put(b, cap, ")");
    }
    if (n->u.agg.param) {
      put(b, cap, " ");
      dump(n->u.agg.param, b, cap);
    }
    put(b, cap, " ");
    dump(n->u.agg.expr, b, cap);
    put(b, cap, ")");
    break;
  case K_PQ_BINARY: {
    static const char *const cards[] = {"", " group_left", " group_right", ""};
    put(b, cap, "(%s%s", binops[n->u.bin.op], n->u.bin.return_bool ? " bool" : "");
    if (n->u.bin.nlabels || n->u.bin.on) {
      put(b, cap, " %s(", n->u.bin.on ? "on" : "ignoring");
      for (size_t i = 0; i < n->u.bin.nlabels; i++)
        put(b, cap, "%s%s", i ? "," : "", n->u.bin.labels[i]);
      put(b, cap, ")");
    }
    put(b, cap, "%s", cards[n->u.bin.card]);
    if (n->u.bin.ninclude) {
      put(b, cap, "(");
      for (size_t i = 0; i < n->u.bin.ninclude; i++)
        put(b, cap, "%s%s", i ? "," : "", n->u.bin.include[i]);
      put(b, cap, ")");
    }
    put(b, cap, " ");
    dump(n->u.bin.lhs, b, cap);
    put(b, cap, " ");
    dump(n->u.bin.rhs, b, cap);
    put(b, cap, ")");
    break;
  }
  }
}

static void good(const char *q, const char *want, k_pq_type_t type) {
  k_promql_expr_t *x = NULL;
  k_promql_err_t e;
  char b[4096] = "";
  int rc = k_promql_parse(q, strlen(q), NULL, &x, &e);
  if (rc) fail_msg("%s: %s", q, e.msg);
  dump(x->root, b, sizeof b);
  if (strcmp(b, want)) fail_msg("%s:\n got  %s\n want %s", q, b, want);
  assert_int_equal(x->root->type, type);
  k_promql_free(x);
}

static void test_good(void **state) {
  (void)state;
  /* precedence and associativity */
  good("1 + 2 * 3", "(+ 1 (* 2 3))", K_PQ_T_SCALAR);
  good("1 - 2 - 3", "(- (- 1 2) 3)", K_PQ_T_SCALAR);
  good("2 ^ 3 ^ 2", "(^ 2 (^ 3 2))", K_PQ_T_SCALAR);
  good("a or b and c unless d", "(or a{} (unless (and b{} c{}) d{}))", K_PQ_T_VECTOR);
  good("a == b + c", "(== a{} (+ b{} c{}))", K_PQ_T_VECTOR);
  good("a % b atan2 c / d", "(/ (atan2 (% a{} b{}) c{}) d{})", K_PQ_T_VECTOR);
  /* unary minus binds like *, below ^; literals fold */
  good("-2 ^ 2", "(- (^ 2 2))", K_PQ_T_SCALAR);
  good("-a ^ 2", "(- (^ a{} 2))", K_PQ_T_VECTOR);
  good("-a * b", "(* (- a{}) b{})", K_PQ_T_VECTOR);
  good("- -1", "1", K_PQ_T_SCALAR);
  good("+a", "(+ a{})", K_PQ_T_VECTOR);
  good("-(1)", "(- [1])", K_PQ_T_SCALAR);
  good("2 ^ -1", "(^ 2 -1)", K_PQ_T_SCALAR);
  good("(1 + 2) * 3", "(* [(+ 1 2)] 3)", K_PQ_T_SCALAR);
  /* numbers: hex, Go's octal quirk, exponents, Inf/NaN any case */
  good("0x1F", "31", K_PQ_T_SCALAR);
  good("017", "15", K_PQ_T_SCALAR);
  good("08", "8", K_PQ_T_SCALAR);
  good("1e3", "1000", K_PQ_T_SCALAR);
  good(".5", "0.5", K_PQ_T_SCALAR);
  good("Inf", "+Inf", K_PQ_T_SCALAR);
  good("-inf", "-Inf", K_PQ_T_SCALAR);
  good("NaN", "NaN", K_PQ_T_SCALAR);
  /* strings */
  good("\"a\\tb\"", "'a\tb'", K_PQ_T_STRING);
  good("'it\\'s'", "'it's'", K_PQ_T_STRING);
  good("`raw\\n`", "'raw\\n'", K_PQ_T_STRING);
  good("\"\\u00e9\\x41\\101\"", "'\xc3\xa9" "AA'", K_PQ_T_STRING);
  /* selectors */
  good("foo", "foo{}", K_PQ_T_VECTOR);
  good("foo:bar{a=\"b\", c!=\"d\", e=~\"f.*\", g!~\"h\",}",
       "foo:bar{a='b',c!='d',e=~'f.*',g!~'h'}", K_PQ_T_VECTOR);
  good("{__name__=~\"foo|bar\"}", "{__name__=~'foo|bar'}", K_PQ_T_VECTOR);
  good("{on=\"x\"}", "{on='x'}", K_PQ_T_VECTOR);
  good("sum", "sum{}", K_PQ_T_VECTOR);
  good("foo[1h30m]", "foo{}[5400000]", K_PQ_T_MATRIX);
  good("foo[ 5m ]", "foo{}[300000]", K_PQ_T_MATRIX);
  good("foo[1y2w3d4h5m6s7ms]", "foo{}[33019506007]", K_PQ_T_MATRIX);
  good("foo offset 5m", "foo{} offset 300000", K_PQ_T_VECTOR);
  good("foo offset -1h", "foo{} offset -3600000", K_PQ_T_VECTOR);
  good("foo[5m] offset 1m", "foo{} offset 60000[300000]", K_PQ_T_MATRIX);
  good("foo # a comment\n + 1", "(+ foo{} 1)", K_PQ_T_VECTOR);
  /* functions and aggregations */
  good("rate(foo[5m])", "rate(foo{}[300000])", K_PQ_T_VECTOR);
  good("rate((foo[5m]))", "rate([foo{}[300000]])", K_PQ_T_VECTOR);
  good("round(foo)", "round(foo{})", K_PQ_T_VECTOR);
  good("label_join(a, \"d\", \",\", \"x\", \"y\")", "label_join(a{}, 'd', ',', 'x', 'y')",
       K_PQ_T_VECTOR);
  good("time()", "time()", K_PQ_T_SCALAR);
  good("sum by (a, b) (foo)", "(sum by(a,b) foo{})", K_PQ_T_VECTOR);
  good("sum(foo) without (a,)", "(sum without(a) foo{})", K_PQ_T_VECTOR);
  good("SUM BY () (foo)", "(sum foo{})", K_PQ_T_VECTOR);
  good("topk(3, foo)", "(topk 3 foo{})", K_PQ_T_VECTOR);
  good("count_values(\"v\", foo)", "(count_values 'v' foo{})", K_PQ_T_VECTOR);
  good("quantile by (on) (0.9, foo)", "(quantile by(on) 0.9 foo{})", K_PQ_T_VECTOR);
  /* binary modifiers */
  good("a > bool b", "(> bool a{} b{})", K_PQ_T_VECTOR);
  good("1 == bool 2", "(== bool 1 2)", K_PQ_T_SCALAR);
  good("a * on(x, y) group_left(z) b", "(* on(x,y) group_left(z) a{} b{})", K_PQ_T_VECTOR);
  good("a / ignoring(x) group_right b", "(/ ignoring(x) group_right a{} b{})", K_PQ_T_VECTOR);
  good("a + on() b", "(+ on() a{} b{})", K_PQ_T_VECTOR);
  good("a and on(x) b", "(and on(x) a{} b{})", K_PQ_T_VECTOR);
}

static const struct {
  const char *q, *msg;
} bad_cases[] = {
    {"rate(http_requests_total)", "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"},
    {"1 +", "1:4: parse error: unexpected end of input"},
    {"foo{", "1:5: parse error: unexpected end of input inside braces"},
    {"sum(", "1:5: parse error: unclosed left parenthesis"},
    {"1 > 2", "1:3: parse error: comparisons between scalars must use BOOL modifier"},
    {"up + on(instance) group_left(instance) info", "1:4: parse error: label \"instance\" must not occur in ON and GROUP clause at once"},
    {"sum(up, up)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, got 2"},
    {"topk(up)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1"},
    {"{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"},
    {"{a=~\".*\"}", "1:1: parse error: vector selector must contain at least one non-empty matcher"},
    {"foo{__name__=\"bar\"}", "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\""},
    {"nonexistent_function(up)", "1:1: parse error: unknown function with name \"nonexistent_function\""},
    {"rate(up[5m], 1)", "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2"},
    {"round()", "1:1: parse error: expected at least 1 argument(s) in call to \"round\", got 0"},
    {"round(up, 1, 2)", "1:1: parse error: expected at most 2 argument(s) in call to \"round\", got 3"},
    {"up[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"},
    {"-up[5m]", "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"range vector\""},
    {"1 and up", "1:1: parse error: set operator \"and\" not allowed in binary scalar expression"},
    {"up and bool up", "1:4: parse error: bool modifier can only be used on comparison operators"},
    {"up or on(instance) group_left up", "1:1: parse error: no grouping allowed for \"or\" operation"},
    {"sum(up) offset 5m", "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"},
    {"up offset 5m offset 5m", "1:1: parse error: offset may not be set multiple times"},
    {"up offset 5m [5m]", "1:14: parse error: no offset modifiers allowed before range"},
    {"(up)[5m]", "1:5: parse error: ranges only allowed for vector selectors"},
    {"up[5]", "1:4: parse error: missing unit character in duration"},
    {"up[5x]", "1:4: parse error: bad duration syntax: \"5\""},
    {"up[0s]", "1:4: parse error: duration must be greater than 0"},
    {"up[5m1h]", "1:4: parse error: not a valid duration string: \"5m1h\""},
    {"up offset 0s", "1:11: parse error: duration must be greater than 0"},
    {"1.2.3", "1:4: parse error: unexpected number \".3\""},
    {"0x", "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"0x\": invalid syntax"},
    {"1e", "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"1e\": invalid syntax"},
    {"1e400", "1:1: parse error: error parsing number: strconv.ParseFloat: parsing \"1e400\": value out of range"},
    {"\"unterminated", "1:1: parse error: unterminated quoted string"},
    {"'\\q'", "1:1: parse error: unknown escape sequence U+0071 'q'"},
    {"up ) ", "1:5: parse error: unexpected right parenthesis ')'"},
    {"(up", "1:4: parse error: unclosed left parenthesis"},
    {"up]", "1:3: parse error: unexpected right bracket ']'"},
    {"up{a!b}", "1:5: parse error: unexpected character after '!' inside braces: 'b'"},
    {"up{a=b}", "1:6: parse error: unexpected identifier \"b\" in label matching, expected string"},
    {"up{a}", "1:5: parse error: unexpected \"}\" in label matching, expected label matching operator"},
    {"sum by (a:b) (up)", "1:9: parse error: unexpected metric identifier \"a:b\" in grouping opts, expected label"},
    {"quantile(\"a\", up)", "1:10: parse error: expected type scalar in aggregation parameter, got string"},
    {"count_values(1, up)", "1:14: parse error: expected type string in aggregation parameter, got scalar"},
    {"label_replace(up, 1, \"a\", \"b\", \"c\")", "1:19: parse error: expected type string in call to function \"label_replace\", got scalar"},
    {"histogram_quantile(up, up)", "1:20: parse error: expected type scalar in call to function \"histogram_quantile\", got instant vector"},
    {"up by", "1:4: parse error: unexpected <by>"},
    {"sum(up,)", "1:7: parse error: trailing commas not allowed in function call args"},
    {"1 + * 2", "1:5: parse error: unexpected <op:*>"},
    {"up{a=\"b\",,}", "1:10: parse error: unexpected \",\" in label matching, expected identifier or \"}\""},
    {"~", "1:1: parse error: unexpected character: '~'"},
    {"", "1:1: parse error: no expression found in input"},
    {"up\n  + ", "2:5: parse error: unexpected end of input"},
    {"up{a=~\"x++\"}", "1:4: parse error: error parsing regexp: invalid nested repetition operator: `++`"},
    {"rate(up[5m:1m])", "1:6: parse error: subqueries are not supported"},
    {"up @ 123", "1:4: parse error: the @ modifier is not supported"},
    {"histogram_count(up)", "1:1: parse error: function \"histogram_count\" is not supported"},
    {"1 + on(a) up", "1:1: parse error: vector matching only allowed between instant vectors"},
};

static void test_bad(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    k_promql_expr_t *x = (k_promql_expr_t *)1;
    k_promql_err_t e;
    int rc = k_promql_parse(bad_cases[i].q, strlen(bad_cases[i].q), NULL, &x, &e);
    if (rc == 0) fail_msg("%s: parsed", bad_cases[i].q);
    assert_null(x);
    assert_int_equal(rc, KEEL_EINVAL);
    assert_int_equal(e.code, KEEL_EINVAL);
    assert_int_equal(e.type, K_PROMQL_ERR_BAD_DATA);
    if (strcmp(e.msg, bad_cases[i].msg))
      fail_msg("%s:\n got  %s\n want %s", bad_cases[i].q, e.msg, bad_cases[i].msg);
  }
}

/* Deep nesting is an error, never a stack overflow; long input too. */
static void test_limits(void **state) {
  size_t n = 100000;
  char *q = malloc(2 * n + 2);
  k_promql_expr_t *x = NULL;
  k_promql_err_t e;
  k_promql_opts_t o = {.max_depth = 10};
  int rc;
  (void)state;
  assert_non_null(q);
  memset(q, '(', n);
  q[n] = '1';
  memset(q + n + 1, ')', n);
  q[2 * n + 1] = '\0';
  o.max_expr_len = 4 * n;
  rc = k_promql_parse(q, strlen(q), &o, &x, &e);
  assert_int_equal(rc, KEEL_EINVAL);
  assert_string_equal(e.msg, "1:11: parse error: expression nesting exceeds the maximum depth of 10");
  /* a long left-deep chain: the tree is deep even though parsing is flat */
  o.max_depth = 0; /* the default, 200 */
  for (size_t i = 0; i < n; i++) q[2 * i] = '1', q[2 * i + 1] = '+';
  q[2 * n - 1] = '\0';
  rc = k_promql_parse(q, strlen(q), &o, &x, &e);
  assert_int_equal(rc, KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "expression nesting exceeds the maximum depth of 200"));
  /* unary chains */
  memset(q, '-', n);
  q[n] = '1';
  q[n + 1] = '\0';
  rc = k_promql_parse(q, strlen(q), &o, &x, &e);
  assert_int_equal(rc, KEEL_EINVAL);
  assert_string_equal(e.msg, "1:201: parse error: expression nesting exceeds the maximum depth of 200");
  /* length */
  o.max_expr_len = 10;
  o.max_depth = 0;
  rc = k_promql_parse(q, strlen(q), &o, &x, &e);
  assert_int_equal(rc, KEEL_ETOOBIG);
  assert_int_equal(e.type, K_PROMQL_ERR_BAD_DATA);
  assert_string_equal(e.msg, "query is too long: 100001 bytes (the maximum is 10)");
  /* within limits: fine, and the height is recorded */
  rc = k_promql_parse("((1))", 5, NULL, &x, &e);
  assert_int_equal(rc, 0);
  assert_int_equal(x->root->height, 3);
  k_promql_free(x);
  free(q);
}

/* The parser reads exactly len bytes: no NUL needed, none assumed. */
static void test_not_terminated(void **state) {
  char buf[8] = {'u', 'p', '+', '1', 'X', 'X', 'X', 'X'};
  k_promql_expr_t *x = NULL;
  k_promql_err_t e;
  (void)state;
  assert_int_equal(k_promql_parse(buf, 4, NULL, &x, &e), 0);
  assert_int_equal(x->root->kind, K_PQ_BINARY);
  k_promql_free(x);
  assert_int_equal(k_promql_parse(buf, 3, NULL, &x, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "1:4: parse error: unexpected end of input");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good),
      cmocka_unit_test(test_bad),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_not_terminated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
