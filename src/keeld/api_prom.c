/* api_prom.c — Prometheus' HTTP query API over Keel's TSDB
 * (https://prometheus.io/docs/prometheus/latest/querying/api/):
 * /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels,
 * /api/v1/label/{name}/values, with Prometheus' answer and error shapes,
 * behind Keel's authentication and a metrics:read policy check like every
 * other route.  Grafana and promtool talk to it unchanged (with a bearer
 * token). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "promql/promql.h"
#include "server.h"

/* Prometheus' own bounds for times it accepts. */
#define MIN_TIME_MS (-9223372036854LL)
#define MAX_TIME_MS (9223372036854LL)

static int prom_fail(k_req_t *req, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int prom_fail(k_req_t *req, int status, const char *type, const char *fmt, ...) {
  va_list ap;
  char msg[1200];
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  k_req_fail(req, status, type, "%s", msg);
  return -1;
}

static void prom_ok(k_req_t *req, json_t *data) {
  req->out = json_pack("{s:s,s:o}", "status", "success", "data", data ? data : json_null());
}

int k_api_prom_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  (void)srv;
  if (k_prom_params(req, &req->in, &e))
    return prom_fail(req, 400, "bad_data", "%s", e.msg);
  snprintf(req->target.path, sizeof req->target.path, "metrics");
  return 0;
}

static const char *param(k_req_t *req, const char *name) { return keel_json_str(req->in, name); }

/* A time parameter, or def when absent. */
static int time_param(k_req_t *req, const char *name, int64_t def, int64_t *ms) {
  const char *s = param(req, name);
  *ms = def;
  if (!s) return 0;
  if (k_prom_time(s, ms) || *ms < MIN_TIME_MS || *ms > MAX_TIME_MS)
    return prom_fail(req, 400, "bad_data", "invalid parameter \"%s\": cannot parse \"%.100s\" to a valid timestamp",
                     name, s);
  return 0;
}

static int promql_fail(k_req_t *req, const k_promql_err_t *pe) {
  int status = pe->type == K_PROMQL_ERR_BAD_DATA ? 400 : pe->type == K_PROMQL_ERR_EXECUTION ? 422 : 500;
  return prom_fail(req, status, k_promql_errtype_name(pe->type), "%s", pe->msg);
}

static int with_querier(k_server_t *srv, k_req_t *req, k_querier_t **q) {
  keel_err_t e = {0};
  if (k_metrics_querier(srv, q, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "query: %s", e.msg);
    return prom_fail(req, 500, "internal", "%s", e.msg);
  }
  return 0;
}

int k_api_prom_query(k_server_t *srv, k_req_t *req) {
  const char *expr = param(req, "query");
  k_promql_err_t pe;
  k_querier_t *q = NULL;
  json_t *data = NULL;
  int64_t t;

  memset(&pe, 0, sizeof pe);
  if (!expr) return prom_fail(req, 400, "bad_data", "invalid parameter \"query\": query is empty");
  if (time_param(req, "time", keel_now_ms(), &t)) return -1;
  if (with_querier(srv, req, &q)) return -1;
  if (k_promql_instant(q, expr, t, &data, &pe)) {
    q->close(q);
    return promql_fail(req, &pe);
  }
  q->close(q);
  prom_ok(req, data);
  return 0;
}

int k_api_prom_query_range(k_server_t *srv, k_req_t *req) {
  const char *expr = param(req, "query"), *step_s = param(req, "step");
  k_promql_err_t pe;
  k_querier_t *q = NULL;
  json_t *data = NULL;
  int64_t start, end, step;

  memset(&pe, 0, sizeof pe);
  if (!expr) return prom_fail(req, 400, "bad_data", "invalid parameter \"query\": query is empty");
  if (!param(req, "start")) return prom_fail(req, 400, "bad_data", "invalid parameter \"start\": cannot parse \"\" to a valid timestamp");
  if (!param(req, "end")) return prom_fail(req, 400, "bad_data", "invalid parameter \"end\": cannot parse \"\" to a valid timestamp");
  if (time_param(req, "start", 0, &start) || time_param(req, "end", 0, &end)) return -1;
  if (end < start)
    return prom_fail(req, 400, "bad_data", "invalid parameter \"end\": end timestamp must not be before start time");
  if (!step_s || k_prom_step(step_s, &step))
    return prom_fail(req, 400, "bad_data", "invalid parameter \"step\": cannot parse \"%.100s\" to a valid duration",
                     step_s ? step_s : "");
  if ((end - start) / step > 11000)
    return prom_fail(req, 400, "bad_data",
                     "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
  if (with_querier(srv, req, &q)) return -1;
  if (k_promql_range(q, expr, start, end, step, &data, &pe)) {
    q->close(q);
    return promql_fail(req, &pe);
  }
  q->close(q);
  prom_ok(req, data);
  return 0;
}

/* match[] selectors of series/labels: each parsed as a vector selector and
 * its matchers handed to fn; the union is built by the caller. */
typedef int (*sel_fn)(k_server_t *srv, k_req_t *req, k_querier_t *q, const k_matcher_t *m,
                      size_t nm, int64_t mint, int64_t maxt, json_t *acc);

static int each_match(k_server_t *srv, k_req_t *req, k_querier_t *q, int required, int64_t mint,
                      int64_t maxt, sel_fn fn, json_t *acc) {
  const json_t *ms = json_object_get(req->in, "match[]");
  size_t i;
  json_t *m;
  if (!json_array_size(ms)) {
    if (required) return prom_fail(req, 400, "bad_data", "no match[] parameter provided");
    return fn(srv, req, q, NULL, 0, mint, maxt, acc);
  }
  json_array_foreach(ms, i, m) {
    k_promql_expr_t *x = NULL;
    k_promql_err_t pe;
    const char *text = json_string_value(m);
    int rc;
    memset(&pe, 0, sizeof pe);
    if (k_promql_parse(text, strlen(text), NULL, &x, &pe))
      return prom_fail(req, 400, "bad_data", "invalid parameter \"match[]\": %s", pe.msg);
    if (x->root->kind != K_PQ_VSEL) {
      k_promql_free(x);
      return prom_fail(req, 400, "bad_data", "invalid parameter \"match[]\": expected a series selector, got \"%.200s\"", text);
    }
    rc = fn(srv, req, q, x->root->u.vsel.m, x->root->u.vsel.nm, mint, maxt, acc);
    k_promql_free(x);
    if (rc) return rc;
  }
  return 0;
}

static json_t *labels_json(const k_labels_t *l) {
  json_t *o = json_object();
  for (size_t i = 0; o && i < l->n; i++) json_object_set_new(o, l->v[i].name, json_string(l->v[i].value));
  return o;
}

static int series_one(k_server_t *srv, k_req_t *req, k_querier_t *q, const k_matcher_t *m,
                      size_t nm, int64_t mint, int64_t maxt, json_t *acc) {
  const k_series_t *s = NULL;
  size_t n = 0;
  keel_err_t e = {0};
  (void)srv;
  if (q->select(q, m, nm, mint, maxt, &s, &n, &e)) return prom_fail(req, 400, "bad_data", "%s", e.msg);
  for (size_t i = 0; i < n; i++) {
    json_t *o = labels_json(&s[i].labels);
    char *key = o ? json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    if (!key || json_object_set_new(acc, key, o)) {
      free(key);
      return prom_fail(req, 500, "internal", "out of memory");
    }
    free(key);
  }
  return 0;
}

static int range_params(k_req_t *req, int64_t *mint, int64_t *maxt) {
  return time_param(req, "start", MIN_TIME_MS, mint) || time_param(req, "end", MAX_TIME_MS, maxt);
}

int k_api_prom_series(k_server_t *srv, k_req_t *req) {
  k_querier_t *q = NULL;
  json_t *acc = json_object(), *out = json_array(), *v;
  const char *k;
  int64_t mint, maxt;
  int rc = -1;

  if (!acc || !out) goto out;
  if (range_params(req, &mint, &maxt) || with_querier(srv, req, &q)) goto out;
  if (each_match(srv, req, q, 1, mint, maxt, series_one, acc)) goto out;
  json_object_foreach(acc, k, v) json_array_append(out, v); /* keys are sorted label sets */
  prom_ok(req, out);
  out = NULL;
  rc = 0;
out:
  if (q) q->close(q);
  json_decref(acc);
  json_decref(out);
  return rc;
}

static int strptr_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int names_one(k_server_t *srv, k_req_t *req, k_querier_t *q, const k_matcher_t *m, size_t nm,
                     int64_t mint, int64_t maxt, json_t *acc) {
  const char *const *v = NULL;
  const char *name = keel_json_str(acc, "\001name");
  size_t n = 0;
  keel_err_t e = {0};
  int rc;
  (void)srv;
  rc = name ? q->label_values(q, name, m, nm, mint, maxt, &v, &n, &e)
            : q->label_names(q, m, nm, mint, maxt, &v, &n, &e);
  if (rc) return prom_fail(req, 400, "bad_data", "%s", e.msg);
  for (size_t i = 0; i < n; i++) json_object_set_new(acc, v[i], json_true());
  return 0;
}

static int names_or_values(k_server_t *srv, k_req_t *req, const char *name) {
  k_querier_t *q = NULL;
  json_t *acc = json_object(), *out = json_array(), *v;
  const char *k;
  int64_t mint, maxt;
  int rc = -1;

  if (!acc || !out) goto out;
  if (name) json_object_set_new(acc, "\001name", json_string(name));
  if (range_params(req, &mint, &maxt) || with_querier(srv, req, &q)) goto out;
  if (each_match(srv, req, q, 0, mint, maxt, names_one, acc)) goto out;
  json_object_del(acc, "\001name");
  json_object_foreach(acc, k, v) json_array_append_new(out, json_string(k));
  /* sorted, as Prometheus answers */
  {
    size_t n = json_array_size(out);
    const char **tmp = calloc(n + 1, sizeof *tmp);
    json_t *sorted = json_array();
    if (!tmp || !sorted) {
      free(tmp);
      json_decref(sorted);
      goto out;
    }
    for (size_t i = 0; i < n; i++) tmp[i] = json_string_value(json_array_get(out, i));
    qsort(tmp, n, sizeof *tmp, strptr_cmp);
    for (size_t i = 0; i < n; i++) json_array_append_new(sorted, json_string(tmp[i]));
    free(tmp);
    json_decref(out);
    out = sorted;
  }
  prom_ok(req, out);
  out = NULL;
  rc = 0;
out:
  if (q) q->close(q);
  json_decref(acc);
  json_decref(out);
  return rc;
}

int k_api_prom_labels(k_server_t *srv, k_req_t *req) { return names_or_values(srv, req, NULL); }

int k_api_prom_label_values(k_server_t *srv, k_req_t *req) {
  return names_or_values(srv, req, req->params[0]);
}
