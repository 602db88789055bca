/* Unit tests for PromQL evaluation (promql/promql.h) over an array-backed
 * querier (tests/promql/memq.h): selectors, lookback and stale markers,
 * rate/increase/delta extrapolation, counter resets, every function,
 * aggregations, operators and vector matching, histogram_quantile, range
 * queries, limits, the JSON shape and float formatting.  Expected values
 * are computed by hand in the comments (Prometheus 2.42's formulas). */
#include <jansson.h>
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

#include "../promql/memq.h"

#define S(x) ((int64_t)(x) * 1000)

static void add(memq_t *m, const char *s, int64_t t_s, double v) {
  if (memq_add(m, s, S(t_s), v)) fail_msg("bad sample %s", s);
}

static int setup(void **state) {
  memq_t *m = malloc(sizeof *m);
  if (!m) return -1;
  memq_init(m);
  /* c: a counter rising 1/s, samples every 10s from 1000 to 1100 */
  for (int t = 1000; t <= 1100; t += 10) add(m, "c{a=\"1\"}", t, t - 1000);
  /* z: a counter from 1 by 1 every 10s: extrapolation stops at zero */
  for (int k = 0; k < 4; k++) add(m, "z", 1000 + 10 * k, 1 + k);
  /* r: a counter that resets (10 -> 2) */
  add(m, "r", 1000, 5);
  add(m, "r", 1010, 10);
  add(m, "r", 1020, 2);
  add(m, "r", 1030, 6);
  /* s: a stale marker at 1020 ends the series until 1030 */
  add(m, "s", 1000, 1);
  add(m, "s", 1010, 2);
  add(m, "s", 1020, memq_stale());
  add(m, "s", 1030, 4);
  /* g: a single sample, for the 5m lookback */
  add(m, "g", 1000, 7);
  /* for aggregations and matching */
  add(m, "m{g=\"a\",i=\"1\"}", 1000, 1);
  add(m, "m{g=\"a\",i=\"2\"}", 1000, 3);
  add(m, "m{g=\"b\",i=\"3\"}", 1000, 10);
  add(m, "n{g=\"a\",i=\"1\"}", 1000, 5);
  add(m, "info{g=\"a\",owner=\"x\"}", 1000, 1);
  /* classic histograms */
  add(m, "h{le=\"1\"}", 1000, 10);
  add(m, "h{le=\"2\"}", 1000, 20);
  add(m, "h{le=\"+Inf\"}", 1000, 20);
  add(m, "h2{le=\"1\"}", 1000, 10);
  add(m, "h2{le=\"2\"}", 1000, 20);
  add(m, "hz{le=\"-1\"}", 1000, 5);
  add(m, "hz{le=\"+Inf\"}", 1000, 10);
  add(m, "nanm", 1000, NAN);
  *state = m;
  return 0;
}

static int teardown(void **state) {
  memq_t *m = *state;
  m->q.close(&m->q);
  free(m);
  return 0;
}

/* A result as short text: vector "{k=v,...} value | ...", matrix
 * "{...} t:v t:v | ...", scalar/string "scalar t:v".  Times in seconds. */
static void render_point(const json_t *p, char *b, size_t cap) {
  size_t n = strlen(b);
  snprintf(b + n, cap - n, "%g:%s", json_number_value(json_array_get(p, 0)),
           json_string_value(json_array_get(p, 1)));
}

static void render(const json_t *d, char *b, size_t cap) {
  const char *type = json_string_value(json_object_get(d, "resultType"));
  const json_t *res = json_object_get(d, "result");
  b[0] = '\0';
  if (!strcmp(type, "scalar") || !strcmp(type, "string")) {
    snprintf(b, cap, "%s ", type);
    render_point(res, b, cap);
    return;
  }
  for (size_t i = 0; i < json_array_size(res); i++) {
    const json_t *s = json_array_get(res, i), *v;
    const char *k;
    size_t n = strlen(b), first = 1;
    snprintf(b + n, cap - n, "%s{", i ? " | " : "");
    json_object_foreach((json_t *)json_object_get(s, "metric"), k, v) {
      n = strlen(b);
      snprintf(b + n, cap - n, "%s%s=%s", first ? "" : ",", k, json_string_value(v));
      first = 0;
    }
    n = strlen(b);
    snprintf(b + n, cap - n, "}");
    if (!strcmp(type, "vector")) {
      const json_t *p = json_object_get(s, "value");
      n = strlen(b);
      snprintf(b + n, cap - n, " %s", json_string_value(json_array_get(p, 1)));
    } else {
      const json_t *vals = json_object_get(s, "values");
      for (size_t j = 0; j < json_array_size(vals); j++) {
        n = strlen(b);
        snprintf(b + n, cap - n, " ");
        render_point(json_array_get(vals, j), b, cap);
      }
    }
  }
}

static void check_eval(memq_t *m, const char *q, double t, const char *want) {
  k_promql_err_t e;
  k_promql_expr_t *x = NULL;
  json_t *d = NULL;
  char b[4096];
  int rc = k_promql_instant(&m->q, q, (int64_t)llround(t * 1000), &d, &e);
  if (rc) fail_msg("%s @%g: %s", q, t, e.msg);
  render(d, b, sizeof b);
  if (strcmp(b, want)) fail_msg("%s @%g:\n got  %s\n want %s", q, t, b, want);
  /* parsed once and evaluated twice (as alert rules do): the same answer */
  if (k_promql_parse(q, strlen(q), NULL, &x, &e)) fail_msg("%s: %s", q, e.msg);
  for (int i = 0; i < 2; i++) {
    json_t *again = NULL;
    if (k_promql_instant_expr(&m->q, x, (int64_t)llround(t * 1000), NULL, &again, &e))
      fail_msg("%s @%g, parsed: %s", q, t, e.msg);
    if (!json_equal(again, d)) fail_msg("%s @%g: the parsed tree answers otherwise", q, t);
    json_decref(again);
  }
  k_promql_free(x);
  json_decref(d);
}
#define EQ(q, t, want) check_eval(m, q, t, want)

static void check_range(memq_t *m, const char *q, int64_t s, int64_t e_, int64_t step,
                        const char *want) {
  k_promql_err_t e;
  json_t *d = NULL;
  char b[4096];
  int rc = k_promql_range(&m->q, q, S(s), S(e_), S(step), &d, &e);
  if (rc) fail_msg("%s: %s", q, e.msg);
  assert_string_equal(json_string_value(json_object_get(d, "resultType")), "matrix");
  render(d, b, sizeof b);
  if (strcmp(b, want)) fail_msg("%s:\n got  %s\n want %s", q, b, want);
  json_decref(d);
}

static void check_err(memq_t *m, const char *q, double t, k_promql_errtype_t type,
                      const char *msg) {
  k_promql_err_t e;
  json_t *d = (json_t *)1;
  k_promql_expr_t *x = NULL;
  int rc = k_promql_instant(&m->q, q, (int64_t)llround(t * 1000), &d, &e);
  if (!rc) fail_msg("%s: no error", q);
  assert_null(d);
  assert_int_equal(e.code, rc);
  assert_int_equal(e.type, type);
  if (strcmp(e.msg, msg)) fail_msg("%s:\n got  %s\n want %s", q, e.msg, msg);
  /* an evaluation error is the same from a tree parsed beforehand */
  if (k_promql_parse(q, strlen(q), NULL, &x, &e) == 0) {
    d = (json_t *)1;
    assert_int_equal(k_promql_instant_expr(&m->q, x, (int64_t)llround(t * 1000), NULL, &d, &e), rc);
    assert_null(d);
    assert_int_equal(e.type, type);
    if (strcmp(e.msg, msg)) fail_msg("%s, parsed:\n got  %s\n want %s", q, e.msg, msg);
    k_promql_free(x);
  }
}

/* The single value of a vector or scalar result. */
static double value(memq_t *m, const char *q, double t) {
  k_promql_err_t e;
  json_t *d = NULL, *res;
  double v;
  const char *s;
  if (k_promql_instant(&m->q, q, (int64_t)llround(t * 1000), &d, &e)) fail_msg("%s: %s", q, e.msg);
  res = json_object_get(d, "result");
  if (json_is_array(res) && json_array_size(res) == 1 && json_is_object(json_array_get(res, 0)))
    res = json_object_get(json_array_get(res, 0), "value");
  s = json_string_value(json_array_get(res, 1));
  if (!s) fail_msg("%s: not one value", q);
  v = strcmp(s, "NaN") ? strtod(s, NULL) : NAN;
  json_decref(d);
  return v;
}
#define NEAR(q, t, want) assert_float_equal(value(m, q, t), want, 1e-9)

static void test_selectors(void **state) {
  memq_t *m = *state;
  EQ("c", 1055, "{__name__=c,a=1} 50");
  EQ("c offset 20s", 1055, "{__name__=c,a=1} 30");
  EQ("c offset -20s", 1055, "{__name__=c,a=1} 70");
  EQ("{__name__=~\"m|n\",i=\"1\"}", 1000,
     "{__name__=m,g=a,i=1} 1 | {__name__=n,g=a,i=1} 5");
  EQ("m{g!=\"a\"}", 1000, "{__name__=m,g=b,i=3} 10");
  EQ("m{i!~\"1|2\"}", 1000, "{__name__=m,g=b,i=3} 10");
  /* lookback: 5m, inclusive of the sample exactly 5m old */
  EQ("g", 1300, "{__name__=g} 7");
  EQ("g", 1300.001, "");
  EQ("g", 999.999, "");
  /* a stale marker ends the series; the next sample starts it again */
  EQ("s", 1015, "{__name__=s} 2");
  EQ("s", 1020, "");
  EQ("s", 1029, "");
  EQ("s", 1030, "{__name__=s} 4");
  /* a range selector: raw samples in [t-range, t], stale markers dropped */
  EQ("s[30s]", 1030, "{__name__=s} 1000:1 1010:2 1030:4");
  EQ("c[20s]", 1050, "{__name__=c,a=1} 1030:30 1040:40 1050:50");
  EQ("c[20s] offset 10s", 1050, "{__name__=c,a=1} 1020:20 1030:30 1040:40");
  EQ("count_over_time(s[1m])", 1030, "{} 3");
  EQ("nonexistent", 1000, "");
}

static void test_rate(void **state) {
  memq_t *m = *state;
  /* window [1040,1100] holds 7 samples 40..100 touching both edges:
   * increase 60 over 60s, no extrapolation */
  NEAR("rate(c[1m])", 1100, 1);
  EQ("increase(c[1m])", 1100, "{a=1} 60");
  /* window [1045,1105]: samples 1050..1100, 5s from each edge (< 1.1*10s):
   * extrapolated to the full 60s: 50 * 60/50 = 60 */
  NEAR("increase(c[1m])", 1105, 60);
  NEAR("rate(c[1m])", 1105, 1);
  /* window [1025,1125]: samples 1030..1100 (8), 5s from the start but 25s
   * (> 11s) from the end: only half an interval (5s) there:
   * 70 * (70+5+5)/70 = 80 */
  NEAR("increase(c[100s])", 1125, 80);
  /* z: 1,2,3,4 at 1000..1030, window [970,1030]: 30s before the first
   * sample; a counter cannot go below zero, which it would reach 10s
   * before 1000 (30 * 1/3): 3 * (30+10)/30 = 4 */
  NEAR("increase(z[1m])", 1030, 4);
  /* delta has no zero limit: 30s > 11s, so half an interval: 3*35/30 */
  NEAR("delta(z[1m])", 1030, 3.5);
  /* r: 5,10,2,6: one reset adds the value before it: 6-5+10 = 11 */
  EQ("increase(r[30s])", 1030, "{} 11");
  EQ("resets(r[1m])", 1030, "{} 1");
  EQ("changes(r[1m])", 1030, "{} 3");
  /* irate/idelta: the last two samples */
  EQ("irate(r[1m])", 1030, "{} 0.4");
  EQ("irate(r[1m])", 1020, "{} 0.2"); /* reset: 2/10s */
  EQ("idelta(r[1m])", 1020, "{} -8");
  EQ("irate(g[1m])", 1000, "");      /* one sample: nothing */
  EQ("rate(g[10m])", 1000, "");
  /* stale markers are not samples */
  NEAR("rate(s[30s])", 1030, 0.1);
  EQ("deriv(c[1m])", 1100, "{a=1} 1");
  EQ("predict_linear(c[1m], 60)", 1100, "{a=1} 160");
}

static void test_over_time(void **state) {
  memq_t *m = *state;
  NEAR("avg_over_time(r[1m])", 1030, 5.75);
  EQ("min_over_time(r[1m])", 1030, "{} 2");
  EQ("max_over_time(r[1m])", 1030, "{} 10");
  EQ("sum_over_time(r[1m])", 1030, "{} 23");
  EQ("count_over_time(r[1m])", 1030, "{} 4");
  EQ("last_over_time(r[1m])", 1030, "{__name__=r} 6"); /* keeps the name */
  EQ("present_over_time(r[1m])", 1030, "{} 1");
  /* sorted 2,5,6,10: rank 0.5*3 = 1.5 -> 5 + 0.5*(6-5) */
  EQ("quantile_over_time(0.5, r[1m])", 1030, "{} 5.5");
  EQ("quantile_over_time(2, r[1m])", 1030, "{} +Inf");
  EQ("quantile_over_time(-1, r[1m])", 1030, "{} -Inf");
  /* population variance of 5,10,2,6: mean 5.75, sum of squares 32.75 */
  NEAR("stdvar_over_time(r[1m])", 1030, 32.75 / 4);
  NEAR("stddev_over_time(r[1m])", 1030, sqrt(32.75 / 4));
  EQ("absent_over_time(r[1m])", 1030, "");
  EQ("absent_over_time(nope{a=\"b\",c=~\"d\"}[1m])", 1030, "{a=b} 1");
}

static void test_functions(void **state) {
  memq_t *m = *state;
  EQ("abs(m - 5)", 1000, "{g=a,i=1} 4 | {g=a,i=2} 2 | {g=b,i=3} 5");
  EQ("ceil(m / 4)", 1000, "{g=a,i=1} 1 | {g=a,i=2} 1 | {g=b,i=3} 3");
  EQ("floor(m / 4)", 1000, "{g=a,i=1} 0 | {g=a,i=2} 0 | {g=b,i=3} 2");
  EQ("round(m / 4)", 1000, "{g=a,i=1} 0 | {g=a,i=2} 1 | {g=b,i=3} 3"); /* 2.5 rounds up */
  EQ("round(m, 4)", 1000, "{g=a,i=1} 0 | {g=a,i=2} 4 | {g=b,i=3} 12");
  EQ("round(m / 3, 0.1)", 1000, "{g=a,i=1} 0.3 | {g=a,i=2} 1 | {g=b,i=3} 3.3");
  EQ("clamp_min(m, 3)", 1000, "{g=a,i=1} 3 | {g=a,i=2} 3 | {g=b,i=3} 10");
  EQ("clamp_max(m, 3)", 1000, "{g=a,i=1} 1 | {g=a,i=2} 3 | {g=b,i=3} 3");
  EQ("clamp(m, 2, 5)", 1000, "{g=a,i=1} 2 | {g=a,i=2} 3 | {g=b,i=3} 5");
  EQ("clamp(m, 5, 2)", 1000, "");
  EQ("clamp_max(nanm, 1)", 1000, "{} NaN");
  EQ("sgn(m - 3)", 1000, "{g=a,i=1} -1 | {g=a,i=2} 0 | {g=b,i=3} 1");
  EQ("sqrt(m{i=\"3\"} * 10)", 1000, "{g=b,i=3} 10");
  EQ("exp(m{i=\"1\"} - 1) + ln(m{i=\"1\"}) + log2(m{i=\"1\"} * 8) + log10(m{i=\"3\"})", 1000,
     "");
  EQ("exp(m{i=\"1\"} - 1)", 1000, "{g=a,i=1} 1");
  EQ("ln(m{i=\"1\"})", 1000, "{g=a,i=1} 0");
  EQ("log2(m{i=\"1\"} * 8)", 1000, "{g=a,i=1} 3");
  EQ("log10(m{i=\"3\"})", 1000, "{g=b,i=3} 1");
  EQ("time()", 1234.5, "scalar 1234.5:1234.5");
  EQ("vector(time())", 1000, "{} 1000");
  EQ("scalar(m{i=\"1\"})", 1000, "scalar 1000:1");
  EQ("scalar(m)", 1000, "scalar 1000:NaN");
  EQ("\"text\"", 1000, "string 1000:text");
  EQ("absent(nope{a=\"b\",c!=\"d\",e=\"f\"})", 1000, "{a=b,e=f} 1");
  EQ("absent(m)", 1000, "");
  EQ("absent(sum(nope))", 1000, "{} 1");
  EQ("timestamp(s)", 1015, "{} 1010");
  EQ("timestamp(s + 1)", 1015, "{} 1015");
  EQ("label_replace(m{i=\"1\"}, \"x\", \"<$1-${2}>\", \"g\", \"(a)(.*)\")", 1000,
     "{__name__=m,g=a,i=1,x=<a->} 1");
  EQ("label_replace(m{i=\"1\"}, \"x\", \"y\", \"g\", \"b\")", 1000, "{__name__=m,g=a,i=1} 1");
  EQ("label_join(m{i=\"1\"}, \"x\", \"/\", \"g\", \"i\")", 1000, "{__name__=m,g=a,i=1,x=a/1} 1");
  EQ("label_join(m{i=\"1\"}, \"x\", \"\", \"g\", \"g\", \"g\", \"g\", \"g\", \"g\", \"g\")",
     1000, "{__name__=m,g=a,i=1,x=aaaaaaa} 1");
  EQ("sort(m)", 1000, "{__name__=m,g=a,i=1} 1 | {__name__=m,g=a,i=2} 3 | {__name__=m,g=b,i=3} 10");
  EQ("sort_desc(m)", 1000,
     "{__name__=m,g=b,i=3} 10 | {__name__=m,g=a,i=2} 3 | {__name__=m,g=a,i=1} 1");
  /* 1700000000 = 2023-11-14T22:13:20Z, a Tuesday */
  EQ("year(vector(1700000000))", 1000, "{} 2023");
  EQ("month(vector(1700000000))", 1000, "{} 11");
  EQ("day_of_month(vector(1700000000))", 1000, "{} 14");
  EQ("day_of_week(vector(1700000000))", 1000, "{} 2");
  EQ("day_of_year(vector(1700000000))", 1000, "{} 318");
  EQ("hour(vector(1700000000))", 1000, "{} 22");
  EQ("minute(vector(1700000000))", 1000, "{} 13");
  EQ("days_in_month(vector(1709251199))", 1000, "{} 29"); /* Feb 2024 */
  EQ("minute()", 1000, "{} 16");
  NEAR("deg(vector(pi()))", 1000, 180);
}

static void test_aggregations(void **state) {
  memq_t *m = *state;
  EQ("sum(m)", 1000, "{} 14");
  EQ("sum by (g) (m)", 1000, "{g=a} 4 | {g=b} 10");
  EQ("sum(m) by (g)", 1000, "{g=a} 4 | {g=b} 10");
  EQ("sum without (i) (m)", 1000, "{g=a} 4 | {g=b} 10");
  EQ("count by (nolabel) (m)", 1000, "{} 3");
  NEAR("avg(m)", 1000, 14.0 / 3);
  EQ("min(m)", 1000, "{} 1");
  EQ("max by (g) (m)", 1000, "{g=a} 3 | {g=b} 10");
  EQ("count without (i) (m)", 1000, "{g=a} 2 | {g=b} 1");
  EQ("group by (g) (m)", 1000, "{g=a} 1 | {g=b} 1");
  /* population stddev of 1,3,10: mean 14/3 */
  NEAR("stdvar(m)", 1000, ((1 - 14.0 / 3) * (1 - 14.0 / 3) + (3 - 14.0 / 3) * (3 - 14.0 / 3) +
                           (10 - 14.0 / 3) * (10 - 14.0 / 3)) / 3);
  /* topk/bottomk keep the series' labels, largest/smallest first */
  EQ("topk(2, m)", 1000, "{__name__=m,g=b,i=3} 10 | {__name__=m,g=a,i=2} 3");
  EQ("bottomk(2, m)", 1000, "{__name__=m,g=a,i=1} 1 | {__name__=m,g=a,i=2} 3");
  EQ("topk by (g) (1, m)", 1000, "{__name__=m,g=a,i=2} 3 | {__name__=m,g=b,i=3} 10");
  EQ("topk(0, m)", 1000, "");
  EQ("topk(5, m)", 1000, "{__name__=m,g=b,i=3} 10 | {__name__=m,g=a,i=2} 3 | {__name__=m,g=a,i=1} 1");
  /* quantile: rank phi*(n-1) over 1,3,10; out of [0,1]: +-Inf */
  EQ("quantile(0.5, m)", 1000, "{} 3");
  EQ("quantile(0.75, m)", 1000, "{} 6.5");
  EQ("quantile(2, m)", 1000, "{} +Inf");
  EQ("quantile(-1, m)", 1000, "{} -Inf");
  EQ("quantile(NaN, m)", 1000, "{} NaN");
  EQ("count_values(\"v\", m)", 1000, "{v=1} 1 | {v=3} 1 | {v=10} 1");
  EQ("sum(nanm)", 1000, "{} NaN");
  EQ("max(m or nanm)", 1000, "{} 10"); /* NaN is replaced by anything */
}

static void test_operators(void **state) {
  memq_t *m = *state;
  EQ("1 + 2 * 3 ^ 2", 1000, "scalar 1000:19");
  EQ("2 ^ 3 ^ 2", 1000, "scalar 1000:512");
  EQ("-2 ^ 2", 1000, "scalar 1000:-4");
  EQ("7 % 4 - 10 / 4", 1000, "scalar 1000:0.5");
  EQ("1 == bool 1", 1000, "scalar 1000:1");
  EQ("2 < bool 1", 1000, "scalar 1000:0");
  EQ("0 * -1", 1000, "scalar 1000:-0");
  EQ("1 / 0", 1000, "scalar 1000:+Inf");
  /* arithmetic drops the name, comparisons filter and keep it */
  EQ("m * 2", 1000, "{g=a,i=1} 2 | {g=a,i=2} 6 | {g=b,i=3} 20");
  EQ("20 / m", 1000, "{g=a,i=1} 20 | {g=a,i=2} 6.666666666666667 | {g=b,i=3} 2");
  EQ("m > 2", 1000, "{__name__=m,g=a,i=2} 3 | {__name__=m,g=b,i=3} 10");
  EQ("2 < m", 1000, "{__name__=m,g=a,i=2} 3 | {__name__=m,g=b,i=3} 10");
  EQ("m > bool 2", 1000, "{g=a,i=1} 0 | {g=a,i=2} 1 | {g=b,i=3} 1");
  EQ("-m", 1000, "{g=a,i=1} -1 | {g=a,i=2} -3 | {g=b,i=3} -10");
  EQ("+m{i=\"1\"}", 1000, "{__name__=m,g=a,i=1} 1");
  /* one-to-one on identical label sets (names ignored) */
  EQ("n + m", 1000, "{g=a,i=1} 6");
  EQ("n > m", 1000, "{__name__=n,g=a,i=1} 5");
  EQ("n > on(i) m", 1000, "{i=1} 5");
  EQ("m == bool ignoring(i) group_left n", 1000, "{g=a,i=1} 0 | {g=a,i=2} 0");
  /* group_left copies the extra label from the "one" side */
  EQ("m * on(g) group_left(owner) info", 1000, "{g=a,i=1,owner=x} 1 | {g=a,i=2,owner=x} 3");
  EQ("info * on(g) group_right(owner) m", 1000, "{g=a,i=1,owner=x} 1 | {g=a,i=2,owner=x} 3");
  /* set operators keep the left side's series */
  EQ("m and on(g) info", 1000, "{__name__=m,g=a,i=1} 1 | {__name__=m,g=a,i=2} 3");
  EQ("m unless on(g) info", 1000, "{__name__=m,g=b,i=3} 10");
  EQ("n or m", 1000,
     "{__name__=n,g=a,i=1} 5 | {__name__=m,g=a,i=2} 3 | {__name__=m,g=b,i=3} 10");
  EQ("m and nope", 1000, "");
  /* errors */
  check_err(m, "info * on(g) m", 1000, K_PROMQL_ERR_EXECUTION,
            "found duplicate series for the match group {g=\"a\"} on the right hand-side of the "
            "operation: [{__name__=\"m\", g=\"a\", i=\"2\"}, {__name__=\"m\", g=\"a\", i=\"1\"}];"
            "many-to-many matching not allowed: matching labels must be unique on one side");
  check_err(m, "m * on(g) info", 1000, K_PROMQL_ERR_EXECUTION,
            "multiple matches for labels: many-to-one matching must be explicit "
            "(group_left/group_right)");
  check_err(m, "m * on(g) group_left m", 1000, K_PROMQL_ERR_EXECUTION,
            "found duplicate series for the match group {g=\"a\"} on the right hand-side of the "
            "operation: [{__name__=\"m\", g=\"a\", i=\"2\"}, {__name__=\"m\", g=\"a\", i=\"1\"}];"
            "many-to-many matching not allowed: matching labels must be unique on one side");
  check_err(m, "abs({__name__=~\"m|n\"})", 1000, K_PROMQL_ERR_EXECUTION,
            "vector cannot contain metrics with the same labelset");
  check_err(m, "-{__name__=~\"m|n\"}", 1000, K_PROMQL_ERR_EXECUTION,
            "vector cannot contain metrics with the same labelset");
  check_err(m, "count_over_time({__name__=~\"m|n\"}[5m])", 1000, K_PROMQL_ERR_EXECUTION,
            "vector cannot contain metrics with the same labelset");
  check_err(m, "topk(NaN, m)", 1000, K_PROMQL_ERR_EXECUTION, "Scalar value NaN overflows int64");
  check_err(m, "topk(1e19, m)", 1000, K_PROMQL_ERR_EXECUTION, "Scalar value 1e+19 overflows int64");
  check_err(m, "count_values(\"1x\", m)", 1000, K_PROMQL_ERR_EXECUTION, "invalid label name \"1x\"");
  check_err(m, "label_replace(m, \"1x\", \"\", \"g\", \".*\")", 1000, K_PROMQL_ERR_EXECUTION,
            "invalid destination label name in label_replace(): 1x");
  check_err(m, "holt_winters(c[1m], 1, 0.5)", 1100, K_PROMQL_ERR_EXECUTION,
            "invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000");
  check_err(m, "1 +", 1000, K_PROMQL_ERR_BAD_DATA,
            "invalid parameter \"query\": 1:4: parse error: unexpected end of input");
}

static void test_histogram_quantile(void **state) {
  memq_t *m = *state;
  /* buckets le=1:10, le=2:20, +Inf:20 */
  EQ("histogram_quantile(0.5, h)", 1000, "{} 1");      /* rank 10 in the first bucket */
  EQ("histogram_quantile(0.75, h)", 1000, "{} 1.5");   /* 1 + (15-10)/10 */
  NEAR("histogram_quantile(0.99, h)", 1000, 1.98);
  EQ("histogram_quantile(1, h)", 1000, "{} 2");
  EQ("histogram_quantile(0, h)", 1000, "{} 0");
  EQ("histogram_quantile(1.01, h)", 1000, "{} +Inf");
  EQ("histogram_quantile(-0.1, h)", 1000, "{} -Inf");
  EQ("histogram_quantile(NaN, h)", 1000, "{} NaN");
  EQ("histogram_quantile(0.5, h2)", 1000, "{} NaN");   /* no +Inf bucket */
  EQ("histogram_quantile(0.4, hz)", 1000, "{} -1");    /* first bucket bound <= 0 */
  EQ("histogram_quantile(0.9, hz)", 1000, "{} -1");    /* past the last finite bucket */
  EQ("histogram_quantile(0.5, m)", 1000, "");          /* no le label: skipped */
  EQ("histogram_quantile(0.5, h * 0)", 1000, "{} NaN"); /* no observations */
}

static void test_range(void **state) {
  memq_t *m = *state;
  k_promql_err_t e;
  json_t *d = NULL;
  check_range(m, "s", 1000, 1030, 10, "{__name__=s} 1000:1 1010:2 1030:4");
  check_range(m, "increase(c[20s])", 1080, 1100, 10, "{a=1} 1080:20 1090:20 1100:20");
  check_range(m, "1", 1000, 1020, 10, "{} 1000:1 1010:1 1020:1");
  check_range(m, "time() - 1000", 1000, 1010, 5, "{} 1000:0 1005:5 1010:10");
  check_range(m, "sum(s) by (nolabel)", 1000, 1030, 10, "{} 1000:1 1010:2 1030:4");
  /* series sorted by labels */
  check_range(m, "m", 1000, 1000, 10,
              "{__name__=m,g=a,i=1} 1000:1 | {__name__=m,g=a,i=2} 1000:3 | {__name__=m,g=b,i=3} 1000:10");
  check_range(m, "absent_over_time(s[5s])", 1000, 1030, 10, "{} 1020:1");
  /* API parameter errors, Prometheus' texts */
  assert_int_equal(k_promql_range(&m->q, "s", S(10), S(9), S(1), &d, &e), KEEL_EINVAL);
  assert_int_equal(e.type, K_PROMQL_ERR_BAD_DATA);
  assert_string_equal(e.msg, "invalid parameter \"end\": end timestamp must not be before start time");
  assert_int_equal(k_promql_range(&m->q, "s", S(10), S(20), 0, &d, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "invalid parameter \"step\": zero or negative query resolution step "
                             "widths are not accepted. Try a positive integer");
  assert_int_equal(k_promql_range(&m->q, "s", 0, 11001, 1, &d, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "exceeded maximum resolution of 11,000 points per timeseries. Try "
                             "decreasing the query resolution (?step=XX)");
  assert_int_equal(k_promql_range(&m->q, "s", 0, 11000, 1, &d, &e), 0);
  json_decref(d);
  assert_int_equal(k_promql_range(&m->q, "s[1m]", S(10), S(20), S(1), &d, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "invalid expression type \"range vector\" for range query, must be "
                             "Scalar or instant Vector");
  assert_null(d);
}

static void test_limits(void **state) {
  memq_t *m = *state;
  k_promql_opts_t o = {.max_samples = 5};
  k_promql_err_t e;
  json_t *d = NULL;
  /* 3 samples fit, c over 11 steps does not */
  assert_int_equal(k_promql_instant_opts(&m->q, "m", S(1000), &o, &d, &e), 0);
  json_decref(d);
  d = NULL;
  assert_int_equal(k_promql_range_opts(&m->q, "c", S(1000), S(1100), S(10), &o, &d, &e),
                   KEEL_ETOOBIG);
  assert_int_equal(e.type, K_PROMQL_ERR_EXECUTION);
  assert_string_equal(e.msg, "query processing would load too many samples into memory in query "
                             "execution");
  assert_int_equal(k_promql_instant_opts(&m->q, "count_over_time(c[1m])", S(1100), &o, &d, &e),
                   KEEL_ETOOBIG);
  o.max_samples = 0;
  o.lookback_ms = 1000;
  assert_int_equal(k_promql_instant_opts(&m->q, "g", S(1001), &o, &d, &e), 0);
  assert_int_equal(json_array_size(json_object_get(d, "result")), 1);
  json_decref(d);
  assert_int_equal(k_promql_instant_opts(&m->q, "g", S(1002), &o, &d, &e), 0);
  assert_int_equal(json_array_size(json_object_get(d, "result")), 0);
  json_decref(d);
}

/* The JSON is exactly Prometheus' "data": key order, integer seconds when
 * whole, string values. */
static void test_json_shape(void **state) {
  memq_t *m = *state;
  k_promql_err_t e;
  json_t *d = NULL;
  char *s;
  assert_int_equal(k_promql_instant(&m->q, "m{i=\"1\"}", S(1000), &d, &e), 0);
  s = json_dumps(d, JSON_COMPACT);
  assert_string_equal(s, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"__name__\":\"m\","
                         "\"g\":\"a\",\"i\":\"1\"},\"value\":[1000,\"1\"]}]}");
  free(s);
  json_decref(d);
  assert_int_equal(k_promql_instant(&m->q, "1.5", 1000500, &d, &e), 0);
  s = json_dumps(d, JSON_COMPACT | JSON_REAL_PRECISION(15));
  assert_string_equal(s, "{\"resultType\":\"scalar\",\"result\":[1000.5,\"1.5\"]}");
  free(s);
  json_decref(d);
  assert_int_equal(k_promql_range(&m->q, "g", S(1000), S(1010), S(10), &d, &e), 0);
  s = json_dumps(d, JSON_COMPACT);
  assert_string_equal(s, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"__name__\":\"g\"},"
                         "\"values\":[[1000,\"7\"],[1010,\"7\"]]}]}");
  free(s);
  json_decref(d);
  assert_int_equal(k_promql_range(&m->q, "nope", S(1000), S(1010), S(10), &d, &e), 0);
  s = json_dumps(d, JSON_COMPACT);
  assert_string_equal(s, "{\"resultType\":\"matrix\",\"result\":[]}");
  free(s);
  json_decref(d);
}

static void test_format_float(void **state) {
  char b[K_PROMQL_FLOAT_BUF];
  (void)state;
  assert_string_equal(k_promql_format_float(0, b), "0");
  assert_string_equal(k_promql_format_float(-0.0, b), "-0");
  assert_string_equal(k_promql_format_float(1, b), "1");
  assert_string_equal(k_promql_format_float(0.1, b), "0.1");
  assert_string_equal(k_promql_format_float(0.1 + 0.2, b), "0.30000000000000004");
  assert_string_equal(k_promql_format_float(-2.5, b), "-2.5");
  assert_string_equal(k_promql_format_float(1e21, b), "1000000000000000000000");
  assert_string_equal(k_promql_format_float(1e-7, b), "0.0000001");
  assert_string_equal(k_promql_format_float(123456789.123456789, b), "123456789.12345679");
  assert_string_equal(k_promql_format_float(1.0 / 3, b), "0.3333333333333333");
  assert_string_equal(k_promql_format_float(NAN, b), "NaN");
  assert_string_equal(k_promql_format_float(INFINITY, b), "+Inf");
  assert_string_equal(k_promql_format_float(-INFINITY, b), "-Inf");
  k_promql_format_float(5e-324, b);
  assert_int_equal(strlen(b), 2 + 323 + 1);
  assert_string_equal(b + 2 + 323, "5");
  k_promql_format_float(1.7976931348623157e308, b);
  assert_int_equal(strlen(b), 309);
  assert_memory_equal(b, "17976931348623157", 17);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_selectors),
      cmocka_unit_test(test_rate),
      cmocka_unit_test(test_over_time),
      cmocka_unit_test(test_functions),
      cmocka_unit_test(test_aggregations),
      cmocka_unit_test(test_operators),
      cmocka_unit_test(test_histogram_quantile),
      cmocka_unit_test(test_range),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_json_shape),
      cmocka_unit_test(test_format_float),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
