/* api_incidents.c — /v1/incidents, /v1/maintenance, and the apply of
 * NotificationPolicy and MaintenanceWindow documents (docs/incidents.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incident/incident.h"
#include "incident/maint.h"
#include "incident/notify.h"
#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

/* ---- documents ---------------------------------------------------------------------- */

int k_api_incident_doc_decode(k_server_t *srv, k_req_t *req, const char *kind, const char *name,
                              const json_t *raw, const keel_yaml_pos_t *pos) {
  keel_err_t e = {0};
  char path[192];
  int maint = !strcmp(kind, "MaintenanceWindow");
  int rc = maint ? k_maint_doc_validate(name, raw, pos, &req->in, &e)
                 : k_notify_doc_validate(name, raw, pos, &req->in, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* the owner team's, not the organization's: judged on its own path */
  if (maint) k_maint_path(req->in, path, sizeof path);
  else k_notify_path(req->in, path, sizeof path);
  if (!k_authz_req(srv, req, maint ? "maintenance:write" : "notify:write", path, NULL, 1)) return -1;
  req->authorized = 1;
  snprintf(req->target.path, sizeof req->target.path, "%s", path);
  return 0;
}

int k_api_incident_doc_apply(k_server_t *srv, k_req_t *req, int dry_run, keel_err_t *e) {
  if (!strcmp(keel_json_str(req->in, "kind"), "MaintenanceWindow"))
    return k_maint_apply(srv->maint, req->in, dry_run, keel_now_ms(), &req->out, &req->detail, e);
  return k_notify_apply(srv->store, req->in, dry_run, keel_now_ms(), &req->out, &req->detail, e);
}

/* ---- incidents ---------------------------------------------------------------------- */

int k_api_incidents_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "incidents");
  return 0;
}

int k_api_incident_list(k_server_t *srv, k_req_t *req) {
  const char *state = k_req_query(req, "state"), *team = k_req_query(req, "team");
  json_t *items = NULL;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;

  if (k_req_limit(req, &limit)) return -1;
  if (state && strcmp(state, "open") && strcmp(state, "acked") && strcmp(state, "resolved"))
    return k_req_fail(req, 400, "bad_request",
                      "query parameter 'state': expected open, acked or resolved");
  if ((rc = k_incident_list(srv->incidents, state, team, k_req_query(req, "cursor"), limit, &items,
                            &next, &e)))
    return k_req_fail_err(req, rc, &e);
  k_authz_filter(srv, &req->who, "incident:read", items, k_incident_path);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

/* An incident's routes are judged on its own path (an unknown one on a
 * path no team owns, so only those who may read everything learn it is
 * unknown). */
int k_api_incident_one_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  if (k_incident_path_of(srv->incidents, req->params[0], req->target.path,
                         sizeof req->target.path, &e))
    snprintf(req->target.path, sizeof req->target.path, "team/_/incident/%.64s", req->params[0]);
  return 0;
}

int k_api_incident_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_incident_get(srv->incidents, req->params[0], &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

/* ack / resolve: {"text"?}; comment: {"text"} (required, checked by the
 * apply: a caller who may not comment learns nothing about the body). */
int k_api_incident_act_decode(k_server_t *srv, k_req_t *req) {
  static const keel_json_field_t fields[] = {{"text", KEEL_JSON_STRING, 0, 4096}, {NULL, 0, 0, 0}};
  keel_err_t e = {0};
  int rc;
  k_api_incident_one_decode(srv, req);
  if (req->body.len && (rc = keel_json_decode(req->body.data, req->body.len, fields, &req->in, &e)))
    return k_req_fail_err(req, rc, &e);
  return 0;
}

static int act(k_server_t *srv, k_req_t *req, k_incident_act_t a, const char *what) {
  keel_err_t e = {0};
  char text[4200] = "";
  int rc;
  if (a == K_INCIDENT_COMMENT && !(keel_json_str(req->in, "text") && *keel_json_str(req->in, "text")))
    return k_req_fail(req, 400, "bad_request", "field 'text': a comment needs text");
  if (keel_json_str(req->in, "text")) {
    snprintf(text, sizeof text, "%s", keel_json_str(req->in, "text"));
    keel_utf8_sanitize(text);
  }
  rc = k_incident_act(srv->incidents, req->params[0], a, req->actor, text, keel_now_ms(), &req->out,
                      &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  keel_buf_printf(&req->detail, "%s incident %s", what, req->params[0]);
  return 0;
}

int k_api_incident_ack(k_server_t *srv, k_req_t *req) { return act(srv, req, K_INCIDENT_ACK, "acked"); }
int k_api_incident_resolve(k_server_t *srv, k_req_t *req) {
  return act(srv, req, K_INCIDENT_RESOLVE, "resolved");
}
int k_api_incident_comment(k_server_t *srv, k_req_t *req) {
  return act(srv, req, K_INCIDENT_COMMENT, "commented on");
}

/* ---- maintenance windows --------------------------------------------------------------- */

int k_api_maintenance_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "maintenance");
  return 0;
}

int k_api_maintenance_list(k_server_t *srv, k_req_t *req) {
  json_t *items = k_maint_list(srv->maint, keel_now_ms());
  if (!items) return k_req_fail_err(req, KEEL_ENOMEM, NULL);
  k_authz_filter(srv, &req->who, "maintenance:read", items, NULL);
  k_req_set_page(req, items, NULL);
  return 0;
}
