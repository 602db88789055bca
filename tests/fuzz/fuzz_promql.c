/* libFuzzer harness: promql/promql.h.
 *
 * The whole input is query text (size bytes, no NUL terminator) for
 * k_promql_parse.  When it parses (and holds no NUL byte), it is also
 * evaluated over a small fixed querier, as an instant query and as a short
 * range query, with small limits.  Beyond not crashing (ASan/UBSan):
 *   - a parse error is KEEL_EINVAL/KEEL_ETOOBIG/KEEL_ENOMEM, bad_data, one
 *     line, "L:C: parse error: ..." (or the length limit's text);
 *   - an evaluation either fails with a typed one-line message or returns
 *     {"resultType": ..., "result": ...} of the documented shape, which
 *     dumps to JSON that parses back to an equal value;
 *   - a range query always answers a matrix.
 */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/promql.h"

#include "../promql/memq.h"
#include "fuzz_check.h"

#define T0 INT64_C(1700000000000)

static void build(memq_t *m) {
  static const char *const series[] = {
      "http_requests_total{instance=\"a\",job=\"api\",method=\"get\"}",
      "http_requests_total{instance=\"b\",job=\"api\",method=\"get\"}",
      "http_requests_total{instance=\"a\",job=\"api\",method=\"post\"}",
      "up{instance=\"a\",job=\"api\"}",
      "up{instance=\"b\",job=\"api\"}",
      "temp{host=\"h1\"}",
      "req_bucket{le=\"0.1\"}",
      "req_bucket{le=\"1\"}",
      "req_bucket{le=\"+Inf\"}",
      "dup_a{x=\"1\"}",
      "dup_b{x=\"1\"}",
  };
  memq_init(m);
  for (size_t s = 0; s < sizeof series / sizeof series[0]; s++) {
    double v = (double)s;
    for (int k = 0; k < 60; k++) {
      double x = v;
      if (s == 5 && k == 30) x = NAN;
      if (s == 5 && k == 40) x = memq_stale();
      if (s == 1 && k == 20) v = 0; /* counter reset */
      CHECK(memq_add(m, series[s], T0 - 600000 + k * 15000, x) == 0);
      v += (double)(s + 1) * 0.5;
    }
  }
}

static int is_point(const json_t *p) {
  return json_is_array(p) && json_array_size(p) == 2 && json_is_number(json_array_get(p, 0)) &&
         json_is_string(json_array_get(p, 1));
}

static int is_metric(const json_t *m) {
  const char *k;
  json_t *v;
  if (!json_is_object(m)) return 0;
  json_object_foreach((json_t *)m, k, v) {
    if (!json_is_string(v) || !*k) return 0;
  }
  return 1;
}

static void check_shape(const json_t *d, int range) {
  const char *type = json_string_value(json_object_get(d, "resultType"));
  const json_t *res = json_object_get(d, "result");
  CHECK(json_is_object(d) && json_object_size(d) == 2);
  CHECK(type && res);
  if (range) CHECK(!strcmp(type, "matrix"));
  if (!strcmp(type, "scalar") || !strcmp(type, "string")) {
    CHECK(is_point(res));
    return;
  }
  CHECK(json_is_array(res));
  for (size_t i = 0; i < json_array_size(res); i++) {
    const json_t *s = json_array_get(res, i);
    CHECK(json_is_object(s) && json_object_size(s) == 2);
    CHECK(is_metric(json_object_get(s, "metric")));
    if (!strcmp(type, "vector")) {
      CHECK(is_point(json_object_get(s, "value")));
    } else {
      const json_t *vals = json_object_get(s, "values");
      CHECK(!strcmp(type, "matrix"));
      CHECK(json_is_array(vals) && json_array_size(vals) > 0);
      for (size_t j = 0; j < json_array_size(vals); j++) CHECK(is_point(json_array_get(vals, j)));
    }
  }
  {
    char *text = json_dumps(d, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_t *back;
    CHECK(text);
    back = json_loads(text, 0, NULL);
    CHECK(back && json_equal(back, d));
    json_decref(back);
    free(text);
  }
}

static void check_error(int rc, const k_promql_err_t *e) {
  CHECK(rc < 0);
  CHECK(e->code == rc);
  CHECK(e->type != K_PROMQL_ERR_NONE);
  CHECK(e->msg[0] != '\0');
  CHECK(!strchr(e->msg, '\n') && !strchr(e->msg, '\r'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  k_promql_opts_t o = {.max_samples = 20000, .max_expr_len = 4096, .max_depth = 64};
  k_promql_expr_t *x = (k_promql_expr_t *)1;
  k_promql_err_t e;
  memq_t m;
  json_t *out;
  int rc;

  CHECK(text);
  if (size) memcpy(text, data, size);
  text[size] = '\0';
  rc = k_promql_parse(text, size, &o, &x, &e);
  if (rc) {
    int l, c;
    CHECK(x == NULL);
    check_error(rc, &e);
    CHECK(e.type == K_PROMQL_ERR_BAD_DATA || rc == KEEL_ENOMEM);
    if (rc == KEEL_EINVAL) CHECK(sscanf(e.msg, "%d:%d: parse error: ", &l, &c) == 2 && l >= 1 && c >= 1);
    goto out;
  }
  CHECK(x && x->root);
  CHECK(x->root->height <= o.max_depth);
  k_promql_free(x);
  if (memchr(data, 0, size)) goto out;

  build(&m);
  out = NULL;
  rc = k_promql_instant_opts(&m.q, text, T0, &o, &out, &e);
  if (rc) {
    CHECK(out == NULL);
    check_error(rc, &e);
    CHECK(e.type == K_PROMQL_ERR_EXECUTION || e.type == K_PROMQL_ERR_INTERNAL);
  } else {
    check_shape(out, 0);
    json_decref(out);
  }
  out = NULL;
  rc = k_promql_range_opts(&m.q, text, T0 - 120000, T0, 30000, &o, &out, &e);
  if (rc) {
    CHECK(out == NULL);
    check_error(rc, &e);
  } else {
    check_shape(out, 1);
    json_decref(out);
  }
  m.q.close(&m.q);
out:
  free(text);
  return 0;
}
