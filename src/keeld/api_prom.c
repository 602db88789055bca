/* api_prom.c — Prometheus' HTTP query API over Keel's TSDB
 * (https://prometheus.io/docs/prometheus/latest/querying/api/):
 * /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels,
 * /api/v1/label/{name}/values, with Prometheus' answer and error shapes,
 * behind Keel's authentication and a metrics:read policy check like every
 * other route.  Grafana and promtool talk to it unchanged (with a bearer
 * token). */
#include <math.h>
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

static void prom_ok(k_req_t *req, json_t *data) {
  req->out = json_pack("{s:s,s:o}", "status", "success", "data", data ? data : json_null());
}

int k_api_prom_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  (void)srv;
  if (k_prom_params(req, &req->in, &e))
    return k_req_fail(req, 400, "bad_data", "%s", e.msg);
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
    return k_req_fail(req, 400, "bad_data", "invalid parameter \"%s\": cannot parse \"%.100s\" to a valid timestamp",
                     name, s);
  return 0;
}

static int promql_fail(k_req_t *req, const k_promql_err_t *pe) {
  int status = pe->type == K_PROMQL_ERR_BAD_DATA ? 400 : pe->type == K_PROMQL_ERR_EXECUTION ? 422 : 500;
  return k_req_fail(req, status, k_promql_errtype_name(pe->type), "%s", pe->msg);
}

static int with_querier(k_server_t *srv, k_req_t *req, k_querier_t **q) {
  keel_err_t e = {0};
  if (k_metrics_querier(srv, q, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "query: %s", e.msg);
    return k_req_fail(req, 500, "internal", "%s", e.msg);
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
  if (!expr) return k_req_fail(req, 400, "bad_data", "invalid parameter \"query\": query is empty");
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
  if (!expr) return k_req_fail(req, 400, "bad_data", "invalid parameter \"query\": query is empty");
  if (!param(req, "start")) return k_req_fail(req, 400, "bad_data", "invalid parameter \"start\": cannot parse \"\" to a valid timestamp");
  if (!param(req, "end")) return k_req_fail(req, 400, "bad_data", "invalid parameter \"end\": cannot parse \"\" to a valid timestamp");
  if (time_param(req, "start", 0, &start) || time_param(req, "end", 0, &end)) return -1;
  if (!step_s || k_prom_step(step_s, &step))
    return k_req_fail(req, 400, "bad_data", "invalid parameter \"step\": cannot parse \"%.100s\" to a valid duration",
                     step_s ? step_s : "");
  /* end before start and the 11,000-point bound: k_promql_range, in
   * Prometheus' words */
  if (with_querier(srv, req, &q)) return -1;
  if (k_promql_range(q, expr, start, end, step, &data, &pe)) {
    q->close(q);
    return promql_fail(req, &pe);
  }
  q->close(q);
  prom_ok(req, data);
  return 0;
}

/* What /api/v1/series, /labels and /label/X/values gather: a set of
 * strings (label sets as canonical JSON, or names, or values). */
typedef struct gather {
  k_querier_t *q;
  const char *name; /* label values of this name; NULL: label names */
  int64_t mint, maxt;
  json_t *set;      /* key -> the item to answer */
} gather_t;

typedef int (*sel_fn)(k_req_t *req, gather_t *g, const k_matcher_t *m, size_t nm);

/* fn once per match[] selector (or once with no matchers when none is
 * given and none is required). */
static int each_match(k_req_t *req, gather_t *g, int required, sel_fn fn) {
  const json_t *ms = json_object_get(req->in, "match[]");
  size_t i;
  json_t *m;
  if (!json_array_size(ms)) {
    if (required) return k_req_fail(req, 400, "bad_data", "no match[] parameter provided");
    return fn(req, g, NULL, 0);
  }
  json_array_foreach(ms, i, m) {
    k_promql_expr_t *x = NULL;
    k_promql_err_t pe;
    const char *text = json_string_value(m);
    int rc;
    memset(&pe, 0, sizeof pe);
    if (k_promql_parse(text, strlen(text), NULL, &x, &pe))
      return k_req_fail(req, 400, "bad_data", "invalid parameter \"match[]\": %s", pe.msg);
    if (x->root->kind != K_PQ_VSEL) {
      k_promql_free(x);
      return k_req_fail(req, 400, "bad_data", "invalid parameter \"match[]\": expected a series selector, got \"%.200s\"", text);
    }
    rc = fn(req, g, x->root->u.vsel.m, x->root->u.vsel.nm);
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

static int series_one(k_req_t *req, gather_t *g, const k_matcher_t *m, size_t nm) {
  const k_series_t *s = NULL;
  size_t n = 0;
  keel_err_t e = {0};
  if (g->q->select(g->q, m, nm, g->mint, g->maxt, &s, &n, &e))
    return k_req_fail(req, 400, "bad_data", "%s", e.msg);
  for (size_t i = 0; i < n; i++) {
    json_t *o = labels_json(&s[i].labels);
    char *key = o ? json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    if (!key || json_object_set_new(g->set, key, o)) {
      free(key);
      return k_req_fail_err(req, KEEL_ENOMEM, NULL);
    }
    free(key);
  }
  return 0;
}

static int names_one(k_req_t *req, gather_t *g, const k_matcher_t *m, size_t nm) {
  const char *const *v = NULL;
  size_t n = 0;
  keel_err_t e = {0};
  int rc = g->name ? g->q->label_values(g->q, g->name, m, nm, g->mint, g->maxt, &v, &n, &e)
                   : g->q->label_names(g->q, m, nm, g->mint, g->maxt, &v, &n, &e);
  if (rc) return k_req_fail(req, 400, "bad_data", "%s", e.msg);
  for (size_t i = 0; i < n; i++)
    if (json_object_set_new(g->set, v[i], json_string(v[i]))) return k_req_fail_err(req, KEEL_ENOMEM, NULL);
  return 0;
}

static int strptr_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Runs fn over the match[] selectors and answers the set's items sorted by
 * key, as Prometheus does. */
static int gather(k_server_t *srv, k_req_t *req, const char *name, int required, sel_fn fn) {
  gather_t g = {NULL, name, 0, 0, json_object()};
  json_t *out = json_array(), *v;
  const char **keys = NULL;
  const char *k;
  size_t n = 0;
  int rc = -1;

  if (!g.set || !out) {
    k_req_fail_err(req, KEEL_ENOMEM, NULL);
    goto out;
  }
  if (time_param(req, "start", MIN_TIME_MS, &g.mint) || time_param(req, "end", MAX_TIME_MS, &g.maxt) ||
      with_querier(srv, req, &g.q) || each_match(req, &g, required, fn))
    goto out;
  if (!(keys = calloc(json_object_size(g.set) + 1, sizeof *keys))) {
    k_req_fail_err(req, KEEL_ENOMEM, NULL);
    goto out;
  }
  json_object_foreach(g.set, k, v) keys[n++] = k;
  qsort(keys, n, sizeof *keys, strptr_cmp);
  for (size_t i = 0; i < n; i++) json_array_append(out, json_object_get(g.set, keys[i]));
  prom_ok(req, out);
  out = NULL;
  rc = 0;
out:
  if (g.q) g.q->close(g.q);
  free(keys);
  json_decref(g.set);
  json_decref(out);
  return rc;
}

int k_api_prom_series(k_server_t *srv, k_req_t *req) { return gather(srv, req, NULL, 1, series_one); }

int k_api_prom_labels(k_server_t *srv, k_req_t *req) { return gather(srv, req, NULL, 0, names_one); }

int k_api_prom_label_values(k_server_t *srv, k_req_t *req) {
  return gather(srv, req, req->params[0], 0, names_one);
}
