/* api_alerts.c — alert rules and alerts over HTTP (docs/api.md, "Alerts"),
 * and the alert engine's place in keeld (opened on the store, the events,
 * the organization and the TSDB). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert/alert.h"
#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

static int querier(void *ud, k_querier_t **q, keel_err_t *e) {
  return k_metrics_querier(ud, q, e);
}

int k_api_alerts_open(k_server_t *srv, keel_err_t *e) {
  k_alerts_deps_t d = {srv->store, srv->events, srv->org, querier, srv, &srv->log};
  return k_alerts_open(&d, &srv->alerts, e);
}

/* Lists are judged on the collection, their items one by one. */
int k_api_alerts_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "alerts");
  return 0;
}

/* GET /v1/alerts (rules 0) and /v1/alert-rules (rules 1): a page of what
 * the engine lists, then only what the caller may read. */
static int list(k_server_t *srv, k_req_t *req, int rules) {
  const char *cursor = k_req_query(req, "cursor");
  json_t *items = NULL;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = rules ? k_alerts_rule_list(srv->alerts, cursor, limit, &items, &next, &e)
             : k_alerts_list(srv->alerts, k_req_query(req, "state"), k_req_query(req, "rule"),
                             cursor, limit, &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_authz_filter(srv, &req->who, "alert:read", items, NULL); /* items carry their rule's path */
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

int k_api_alert_list(k_server_t *srv, k_req_t *req) { return list(srv, req, 0); }

int k_api_alert_rule_list(k_server_t *srv, k_req_t *req) { return list(srv, req, 1); }

/* A rule's routes are judged on its own path (an unknown rule on a path no
 * application has, so the answer is 404 only to those who may know). */
int k_api_alert_rule_decode(k_server_t *srv, k_req_t *req) {
  if (k_alerts_rule_path(srv->alerts, req->params[0], req->target.path, sizeof req->target.path))
    snprintf(req->target.path, sizeof req->target.path, "team/_/alert/%s", req->params[0]);
  return 0;
}

int k_api_alert_rule_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_alerts_rule_get(srv->alerts, req->params[0], &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_alert_rule_delete(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_alerts_rule_delete(srv->alerts, req->params[0], keel_now_ms(), &req->out, &e);
  if (!rc) {
    keel_buf_reset(&req->detail);
    keel_buf_printf(&req->detail, "deleted alert_rule/%s", req->params[0]);
  }
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}
