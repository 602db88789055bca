/* router.c — the route table and the one request path (see server.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

static const char *const q_page[] = {"limit", "cursor", NULL};
static const char *const q_tokens[] = {"limit", "cursor", "user", NULL};
static const char *const q_audit[] = {"limit", "cursor", "since", "actor", "action", NULL};
static const char *const q_agents[] = {"limit", "cursor", "target", "status", NULL};
static const char *const q_apply[] = {"dry_run", "prune", "file", NULL};
static const char *const q_execs[] = {"limit", "cursor", "runbook", "state", NULL};
static const char *const q_alerts[] = {"limit", "cursor", "state", "rule", NULL};
static const char *const q_exec[] = {"targets", NULL};
static const char *const q_prom[] = {"query", "time", "start", "end", "step", "timeout",
                                     "match[]", "limit", "lookback_delta", "stats", NULL};
static const char *const q_explain[] = {"user", "action", "resource", "tags", NULL};
static const char *const q_events[] = {"type", "subject", "since", "limit", "cursor", NULL};
static const char *const q_event_stream[] = {"type", "subject", "since", NULL};
static const char *const q_incidents[] = {"limit", "cursor", "state", "team", NULL};
static const char *const q_auto_runs[] = {"limit", "cursor", "rule", NULL};

/* Every route.  Tests enumerate this table (keeld routes): a route added
 * here is covered by the 401 sweep automatically. */
const k_route_t k_routes[] = {
    {"GET", "/healthz", NULL, K_ROUTE_PUBLIC, NULL, NULL, k_api_healthz},
    {"GET", "/readyz", NULL, K_ROUTE_PUBLIC, NULL, NULL, k_api_readyz},
    {"GET", "/metrics", NULL, K_ROUTE_PUBLIC, NULL, NULL, k_api_metrics},
    {"GET", "/v1/whoami", "whoami:read", 0, NULL, NULL, k_api_whoami},
    {"POST", "/v1/users", "user:create", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_user_create_decode, k_api_user_create},
    {"GET", "/v1/users", "user:read", 0, q_page, k_api_users_decode, k_api_user_list},
    {"GET", "/v1/users/{id}", "user:read", 0, NULL, k_api_user_one_decode, k_api_user_get},
    {"PATCH", "/v1/users/{id}", "user:update", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_user_update_decode, k_api_user_update},
    {"POST", "/v1/tokens", "token:create", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_token_create_decode, k_api_token_create},
    {"GET", "/v1/tokens", "token:read", 0, q_tokens, k_api_token_list_decode, k_api_token_list},
    {"DELETE", "/v1/tokens/{id}", "token:revoke", K_ROUTE_MUTATION, NULL,
     k_api_token_revoke_decode, k_api_token_revoke},
    {"GET", "/v1/audit", "audit:read", 0, q_audit, k_api_audit_decode, k_api_audit_list},
    {"GET", "/v1/audit/verify", "audit:verify", 0, NULL, k_api_audit_decode,
     k_api_audit_verify},
    {"POST", "/v1/apply", "org:write", K_ROUTE_MUTATION | K_ROUTE_BODY, q_apply,
     k_api_apply_decode, k_api_apply},
    {"GET", "/v1/org", "org:read", 0, NULL, k_api_org_decode, k_api_org_get},
    {"GET", "/v1/runbooks", "runbook:read", 0, q_page, k_api_runbooks_decode, k_api_runbook_list},
    {"GET", "/v1/runbooks/{id}", "runbook:read", 0, NULL, k_api_runbook_one_decode,
     k_api_runbook_get},
    {"DELETE", "/v1/runbooks/{id}", "runbook:write", K_ROUTE_MUTATION, NULL,
     k_api_runbook_one_decode, k_api_runbook_delete},
    {"POST", "/v1/executions", "runbook:start", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_execution_start_decode, k_api_execution_start},
    {"GET", "/v1/executions", "runbook:read", 0, q_execs, k_api_runbooks_decode,
     k_api_execution_list},
    {"GET", "/v1/executions/{id}", "runbook:read", 0, q_exec, k_api_execution_one_decode,
     k_api_execution_get},
    {"POST", "/v1/executions/{id}/approve", "runbook:approve", K_ROUTE_MUTATION | K_ROUTE_BODY,
     NULL, k_api_execution_act_decode, k_api_execution_approve},
    {"POST", "/v1/executions/{id}/reject", "runbook:approve", K_ROUTE_MUTATION | K_ROUTE_BODY,
     NULL, k_api_execution_act_decode, k_api_execution_reject},
    {"POST", "/v1/executions/{id}/resume", "runbook:start", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_execution_act_decode, k_api_execution_resume},
    {"POST", "/v1/executions/{id}/cancel", "runbook:start", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_execution_act_decode, k_api_execution_cancel},
    {"POST", "/v1/executions/{id}/retry", "runbook:start", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_execution_retry_decode, k_api_execution_start},
    {"GET", "/v1/schedules", "runbook:read", 0, NULL, k_api_runbooks_decode, k_api_schedule_list},
    {"GET", "/v1/alerts", "alert:read", 0, q_alerts, k_api_alerts_decode, k_api_alert_list},
    {"GET", "/v1/alert-rules", "alert:read", 0, q_page, k_api_alerts_decode, k_api_alert_rule_list},
    {"GET", "/v1/alert-rules/{id}", "alert:read", 0, NULL, k_api_alert_rule_decode,
     k_api_alert_rule_get},
    {"DELETE", "/v1/alert-rules/{id}", "alert:write", K_ROUTE_MUTATION, NULL,
     k_api_alert_rule_decode, k_api_alert_rule_delete},
    {"GET", "/v1/metrics/targets", "metrics:read", 0, NULL, k_api_metrics_decode,
     k_api_metrics_targets},
    /* Prometheus' query API (docs/metrics.md), GET or form POST */
    {"GET", "/api/v1/query", "metrics:read", K_ROUTE_PROM, q_prom, k_api_prom_decode, k_api_prom_query},
    {"POST", "/api/v1/query", "metrics:read", K_ROUTE_PROM | K_ROUTE_BODY | K_ROUTE_NOWRITE, q_prom,
     k_api_prom_decode, k_api_prom_query},
    {"GET", "/api/v1/query_range", "metrics:read", K_ROUTE_PROM, q_prom, k_api_prom_decode,
     k_api_prom_query_range},
    {"POST", "/api/v1/query_range", "metrics:read", K_ROUTE_PROM | K_ROUTE_BODY | K_ROUTE_NOWRITE,
     q_prom, k_api_prom_decode, k_api_prom_query_range},
    {"GET", "/api/v1/series", "metrics:read", K_ROUTE_PROM, q_prom, k_api_prom_decode, k_api_prom_series},
    {"POST", "/api/v1/series", "metrics:read", K_ROUTE_PROM | K_ROUTE_BODY | K_ROUTE_NOWRITE, q_prom,
     k_api_prom_decode, k_api_prom_series},
    {"GET", "/api/v1/labels", "metrics:read", K_ROUTE_PROM, q_prom, k_api_prom_decode, k_api_prom_labels},
    {"POST", "/api/v1/labels", "metrics:read", K_ROUTE_PROM | K_ROUTE_BODY | K_ROUTE_NOWRITE, q_prom,
     k_api_prom_decode, k_api_prom_labels},
    {"GET", "/api/v1/label/{name}/values", "metrics:read", K_ROUTE_PROM, q_prom, k_api_prom_decode,
     k_api_prom_label_values},
    {"GET", "/v1/policy/explain", "policy:read", 0, q_explain, k_api_org_decode, k_api_explain},
    {"GET", "/v1/incidents", "incident:read", 0, q_incidents, k_api_incidents_decode,
     k_api_incident_list},
    {"GET", "/v1/incidents/{id}", "incident:read", 0, NULL, k_api_incident_one_decode,
     k_api_incident_get},
    {"POST", "/v1/incidents/{id}/ack", "incident:write", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_incident_act_decode, k_api_incident_ack},
    {"POST", "/v1/incidents/{id}/resolve", "incident:write", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_incident_act_decode, k_api_incident_resolve},
    {"POST", "/v1/incidents/{id}/comment", "incident:write", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_incident_act_decode, k_api_incident_comment},
    {"GET", "/v1/maintenance", "maintenance:read", 0, NULL, k_api_maintenance_decode,
     k_api_maintenance_list},
    {"GET", "/v1/automation/rules", "automation:read", 0, q_page, k_api_automation_decode,
     k_api_automation_rule_list},
    {"GET", "/v1/automation/rules/{id}", "automation:read", 0, NULL,
     k_api_automation_rule_decode, k_api_automation_rule_get},
    {"DELETE", "/v1/automation/rules/{id}", "automation:write", K_ROUTE_MUTATION, NULL,
     k_api_automation_rule_decode, k_api_automation_rule_delete},
    {"GET", "/v1/automation/runs", "automation:read", 0, q_auto_runs, k_api_automation_decode,
     k_api_automation_run_list},
    {"GET", "/v1/automation/switch", "automation:read", 0, NULL, k_api_automation_decode,
     k_api_automation_switch_get},
    {"PUT", "/v1/automation/switch", "automation:admin", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_automation_switch_decode, k_api_automation_switch_set},
    {"GET", "/v1/events", "event:read", 0, q_events, k_api_events_decode, k_api_event_list},
    {"GET", "/v1/events/stream", "event:read", 0, q_event_stream, k_api_event_stream_decode,
     k_api_event_stream},
    {"POST", "/v1/agent-tokens", "agent-token:create", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_etoken_create_decode, k_api_etoken_create},
    {"GET", "/v1/agent-tokens", "agent-token:read", 0, q_page, NULL, k_api_etoken_list},
    {"GET", "/v1/agents", "agent:read", 0, q_agents, k_api_agent_list_decode, k_api_agent_list},
    {"GET", "/v1/agents/{id}", "agent:read", 0, NULL, k_api_agent_one_decode, k_api_agent_get},
    {"PATCH", "/v1/agents/{id}", "agent:update", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_agent_update_decode, k_api_agent_update},
    {"DELETE", "/v1/agents/{id}", "agent:retire", K_ROUTE_MUTATION, NULL, k_api_agent_one_decode,
     k_api_agent_retire},
    {"POST", "/v1/commands", "exec:run", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_command_create_decode, k_api_command_create},
    {"GET", "/v1/commands", "exec:read", 0, q_page, NULL, k_api_command_list},
    {"GET", "/v1/commands/{id}", "exec:read", 0, NULL, k_api_command_one_decode,
     k_api_command_get},
    {"POST", "/v1/commands/{id}/cancel", "exec:run", K_ROUTE_MUTATION | K_ROUTE_BODY, NULL,
     k_api_command_cancel_decode, k_api_command_cancel},
    /* The agents' side (docs/agent-protocol.md). */
    {"POST", "/v1/agent/enroll", "agent:enroll", K_ROUTE_ENROLL | K_ROUTE_MUTATION | K_ROUTE_BODY,
     NULL, k_api_enroll_decode, k_api_enroll},
    {"POST", "/v1/agent/poll", "agent:poll", K_ROUTE_AGENT | K_ROUTE_BODY | K_ROUTE_NOWRITE, NULL,
     k_api_agent_poll_decode, k_api_agent_poll},
    {"POST", "/v1/agent/results", "agent:report",
     K_ROUTE_AGENT | K_ROUTE_MUTATION | K_ROUTE_BODY | K_ROUTE_BIGBODY, NULL,
     k_api_agent_result_decode, k_api_agent_result},
    {"POST", "/v1/agent/metrics", "agent:report",
     K_ROUTE_AGENT | K_ROUTE_BODY | K_ROUTE_BIGBODY | K_ROUTE_NOWRITE, NULL,
     k_api_agent_metrics_decode, k_api_agent_metrics},
    {"POST", "/v1/agent/inventory", "agent:report",
     K_ROUTE_AGENT | K_ROUTE_MUTATION | K_ROUTE_BODY, NULL, k_api_agent_inventory_decode,
     k_api_agent_inventory},
    {"POST", "/v1/agent/events", "agent:report", K_ROUTE_AGENT | K_ROUTE_MUTATION | K_ROUTE_BODY,
     NULL, k_api_agent_events_decode, k_api_agent_events},
};
const int k_nroutes = (int)(sizeof k_routes / sizeof k_routes[0]);

/* ---- matching ----------------------------------------------------------------- */

static int match_one(const char *pattern, const char *path, char params[][160]) {
  int np = 0;
  while (*pattern && *path) {
    if (*pattern != '/' || *path != '/') return 0;
    pattern++;
    path++;
    if (*pattern == '{') {
      size_t n = strcspn(path, "/");
      if (n == 0 || n >= 160 || np >= K_MAX_PARAMS) return 0;
      memcpy(params[np], path, n);
      params[np++][n] = '\0';
      path += n;
      pattern = strchr(pattern, '}');
      if (!pattern) return 0;
      pattern++;
    } else {
      size_t n = strcspn(pattern, "/");
      if (strncmp(pattern, path, n) || (path[n] != '/' && path[n] != '\0')) return 0;
      pattern += n;
      path += n;
    }
  }
  return !*pattern && !*path;
}

int k_route_match(const char *method, const char *path, int *idx, char params[][160], char *allow,
                  size_t allow_len) {
  char scratch[K_MAX_PARAMS][160];
  int path_seen = 0;

  allow[0] = '\0';
  *idx = -1;
  for (int i = 0; i < k_nroutes; i++) {
    if (!match_one(k_routes[i].pattern, path, scratch)) continue;
    if (!strcmp(k_routes[i].method, method)) {
      *idx = i;
      memcpy(params, scratch, sizeof scratch);
      return 0;
    }
    if (strlen(allow) + strlen(k_routes[i].method) + 3 < allow_len) {
      if (path_seen) strcat(allow, ", ");
      strcat(allow, k_routes[i].method);
    }
    path_seen = 1;
  }
  return path_seen ? KEEL_EPERM : KEEL_ENOENT;
}

long long k_route_body_limit(const k_server_t *srv, const k_route_t *r) {
  if (r && (r->flags & K_ROUTE_BIGBODY) && (long long)K_EXEC_RESULT_BODY_MAX > srv->opts.body_limit)
    return (long long)K_EXEC_RESULT_BODY_MAX;
  return srv->opts.body_limit;
}

/* ---- answers -------------------------------------------------------------------- */

int k_req_fail(k_req_t *req, int status, const char *code, const char *fmt, ...) {
  va_list ap;
  req->status = status;
  snprintf(req->err_code, sizeof req->err_code, "%s", code);
  va_start(ap, fmt);
  vsnprintf(req->err.msg, sizeof req->err.msg, fmt, ap);
  va_end(ap);
  keel_utf8_sanitize(req->err.msg);
  json_decref(req->out);
  req->out = NULL;
  return -1;
}

int k_req_fail_err(k_req_t *req, int rc, const keel_err_t *e) {
  const char *msg = e && e->msg[0] ? e->msg : keel_strerror(rc);
  switch (rc) {
  case KEEL_EINVAL: return k_req_fail(req, 400, "bad_request", "%s", msg);
  case KEEL_ENOENT: return k_req_fail(req, 404, "not_found", "%s", msg);
  case KEEL_EEXIST:
  case KEEL_ECONFLICT: return k_req_fail(req, 409, "conflict", "%s", msg);
  case KEEL_ETOOBIG: return k_req_fail(req, 413, "payload_too_large", "%s", msg);
  case KEEL_EAUTH: return k_req_fail(req, 401, "unauthorized", "%s", msg);
  case KEEL_EPERM: return k_req_fail(req, 403, "forbidden", "%s", msg);
  default:
    /* Storage details stay in the log (callers log e); the client gets the
     * request id to find them. */
    return k_req_fail(req, 500, "internal", "internal error (request %s)", req->request_id);
  }
}

const char *k_req_query(k_req_t *req, const char *name) {
  return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

static void deny(k_server_t *srv, k_req_t *req);

int k_authz_req(k_server_t *srv, k_req_t *req, const char *action, const char *path,
                const json_t *tags, int answer) {
  k_target_t t;
  char reason[256];
  memset(&t, 0, sizeof t);
  snprintf(t.path, sizeof t.path, "%s", path);
  t.tags = tags;
  if (k_authz_check(srv->org, &req->who, action, &t, reason, sizeof reason)) return 1;
  if (answer) {
    memcpy(req->target.path, t.path, sizeof t.path);
    k_req_fail(req, 403, "forbidden", "%s", reason);
    deny(srv, req);
  }
  return 0;
}

int k_authz_may(k_server_t *srv, const k_principal_t *who, const char *action, const char *path) {
  k_target_t t;
  char reason[256];
  if (!path) return 0;
  memset(&t, 0, sizeof t);
  snprintf(t.path, sizeof t.path, "%s", path);
  return k_authz_check(srv->org, who, action, &t, reason, sizeof reason);
}

void k_authz_filter(k_server_t *srv, const k_principal_t *who, const char *action, json_t *items,
                    k_item_path_fn path_of) {
  for (size_t i = json_array_size(items); i-- > 0;) {
    const json_t *it = json_array_get(items, i);
    const char *path = keel_json_str(it, "path");
    char buf[sizeof ((k_target_t *)0)->path] = "";
    if (path_of) {
      path_of(it, buf, sizeof buf);
      path = buf[0] ? buf : NULL;
    }
    if (!k_authz_may(srv, who, action, path)) json_array_remove(items, i);
  }
}

void k_req_set_page(k_req_t *req, json_t *items, const char *next) {
  req->out = json_pack("{s:o,s:o}", "items", items, "next_cursor",
                       next ? json_string(next) : json_null());
}

int k_req_limit(k_req_t *req, int *limit) {
  const char *s = k_req_query(req, "limit");
  char *end;
  long v;
  *limit = 100;
  if (!s) return 0;
  v = strtol(s, &end, 10);
  if (!*s || *end || v < 1 || v > 1000)
    return k_req_fail(req, 400, "bad_request", "query parameter 'limit': expected 1..1000");
  *limit = (int)v;
  return 0;
}

/* ---- the request path ---------------------------------------------------------- */

typedef struct qcheck {
  const char *const *allowed;
  char bad[64];
} qcheck_t;

static enum MHD_Result query_visit(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
  qcheck_t *q = cls;
  (void)kind;
  (void)value;
  for (const char *const *a = q->allowed; a && *a; a++)
    if (!strcmp(*a, key)) return MHD_YES;
  snprintf(q->bad, sizeof q->bad, "%s", key);
  return MHD_NO;
}

/* Appends one audit record in a unit of its own; the head is restored when
 * it cannot be written. */
static int audit_alone(k_server_t *srv, const k_audit_rec_t *rec, keel_err_t *e) {
  int rc;
  k_audit_mark(srv->audit);
  if ((rc = k_store_unit_begin(srv->store, e))) return rc;
  rc = k_audit_append(srv->audit, rec, NULL, e);
  if (k_store_unit_end(srv->store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  if (rc) k_audit_restore(srv->audit);
  return rc;
}

static void fill_rec(k_req_t *req, k_audit_rec_t *rec, char digest[KEEL_HASH_HEX],
                     const char *outcome) {
  const k_route_t *r = req->route_idx >= 0 ? &k_routes[req->route_idx] : NULL;
  if (req->body.len)
    keel_hash_hex(digest, req->body.data, req->body.len);
  else
    digest[0] = '\0';
  rec->actor = req->actor;
  rec->action = r && r->action ? r->action : "unknown";
  rec->target = req->target.path[0] ? req->target.path : req->url;
  rec->outcome = outcome;
  rec->status = req->status;
  rec->detail = req->status >= 400 ? req->err.msg : req->detail.len ? req->detail.data : "";
  rec->request_id = req->request_id;
  rec->body_digest = digest;
}

/* A refusal (401/403) is recorded; if it cannot be, the client gets 500:
 * nothing may be refused off the record. */
static void deny(k_server_t *srv, k_req_t *req) {
  k_audit_rec_t rec;
  char digest[KEEL_HASH_HEX];
  keel_err_t e = {0};
  fill_rec(req, &rec, digest, "denied");
  if (audit_alone(srv, &rec, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "audit append failed: %s", e.msg);
    k_req_fail_err(req, KEEL_EIO, &e);
  }
}

static void mutate(k_server_t *srv, k_req_t *req, const k_route_t *r) {
  k_audit_rec_t rec;
  char digest[KEEL_HASH_HEX];
  keel_err_t e = {0};
  int rc;

  k_audit_mark(srv->audit);
  if ((rc = k_store_unit_begin(srv->store, &e))) goto storage;
  if (r->apply(srv, req) == 0) {
    fill_rec(req, &rec, digest, "ok");
    rc = k_audit_append(srv->audit, &rec, NULL, &e);
    if (k_store_unit_end(srv->store, rc == 0, rc ? NULL : &e) && !rc) rc = KEEL_EIO;
    if (rc) goto storage;
    return;
  }
  /* The change failed: undo it, then record the attempt by itself. */
  k_store_unit_end(srv->store, 0, NULL);
  k_audit_restore(srv->audit);
  fill_rec(req, &rec, digest, "failed");
  if ((rc = audit_alone(srv, &rec, &e))) goto storage;
  return;
storage:
  k_audit_restore(srv->audit);
  keel_log(&srv->log, KEEL_LOG_ERROR, "request %s: %s", req->request_id, e.msg);
  k_req_fail_err(req, KEEL_EIO, &e);
}

void k_dispatch(k_server_t *srv, k_req_t *req) {
  const k_route_t *r;
  qcheck_t q = {0};
  keel_err_t e = {0};
  int rc;

  req->status = 200;
  rc = k_route_match(req->method, req->url, &req->route_idx, req->params, req->allow,
                     sizeof req->allow);
  if (rc == KEEL_ENOENT) {
    k_req_fail(req, 404, "not_found", "no route for %.100s", req->url);
    goto out;
  }
  if (rc == KEEL_EPERM) {
    k_req_fail(req, 405, "method_not_allowed", "%s is not allowed on %.100s (allowed: %s)",
               req->method, req->url, req->allow);
    goto out;
  }
  r = &k_routes[req->route_idx];
  snprintf(req->actor, sizeof req->actor, "anonymous");

  if (!(r->flags & K_ROUTE_PUBLIC)) {
    const char *authz = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
    int64_t now = keel_now_ms();
    if (r->flags & K_ROUTE_AGENT) {
      /* The signature covers the body, so the body must be whole (and
       * within its limit) before it can be checked. */
      rc = req->too_big ? keel_err_set(&e, KEEL_EAUTH, "request body over the limit: not verified")
                        : k_fleet_auth(srv->fleet, authz, req->method, req->url,
                                       req->body.data, req->body.len, now, &req->agent,
                                       req->actor, sizeof req->actor, &e);
      if (!rc) {
        snprintf(req->who.user_id, sizeof req->who.user_id, "%s", req->agent->id);
        snprintf(req->who.user, sizeof req->who.user, "%s", req->agent->id);
        snprintf(req->who.role, sizeof req->who.role, "agent");
      }
    } else if (r->flags & K_ROUTE_ENROLL) {
      char tid[32];
      rc = k_fleet_token_check(srv->fleet, authz, now, tid, &e);
      snprintf(req->actor, sizeof req->actor, tid[0] ? "enroll_token:%s%s" : "anonymous", tid,
               rc ? " (unverified)" : "");
      if (!rc) {
        snprintf(req->who.token_id, sizeof req->who.token_id, "%s", tid);
        snprintf(req->who.role, sizeof req->who.role, "enroll");
      }
    } else {
      rc = k_iam_authenticate(srv->store, authz, now, &req->who, req->actor, sizeof req->actor,
                              &e);
    }
    if (rc == 0 && req->who.user[0]) {
      /* Partners act as such on the record (docs/operating-models.md). */
      k_pol_principal_t pp;
      k_org_principal(srv->org, req->who.user, req->who.role, 0, &pp);
      if (pp.npartner)
        snprintf(req->actor, sizeof req->actor, "user:%s (partner %s)", req->who.user,
                 pp.partner_of[0]);
    }
    if (rc == KEEL_EAUTH) {
      k_req_fail(req, 401, "unauthorized", "%s", e.msg);
      deny(srv, req);
      goto out;
    }
    if (rc) {
      k_req_fail_err(req, rc, &e);
      goto out;
    }
  }
  if (req->too_big) {
    k_req_fail(req, 413, "payload_too_large", "request body is larger than %lld bytes",
               k_route_body_limit(srv, r));
    goto out;
  }
  q.allowed = r->query;
  MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_visit, &q);
  if (q.bad[0]) {
    k_req_fail(req, 400, "bad_request", "unknown query parameter '%.60s'", q.bad);
    goto out;
  }
  if (!(r->flags & K_ROUTE_BODY) && req->body.len) {
    k_req_fail(req, 400, "bad_request", "%s %s takes no request body", r->method, r->pattern);
    goto out;
  }
  if (r->decode && r->decode(srv, req)) {
    /* a decoder that judged sub-resources (k_authz_req) audited its 403 */
    goto out;
  }
  if (!req->target.path[0]) snprintf(req->target.path, sizeof req->target.path, "%s", req->url);

  if (!(r->flags & K_ROUTE_PUBLIC) && !req->authorized) {
    char reason[256];
    if (!k_authz_check(srv->org, &req->who, r->action, &req->target, reason, sizeof reason)) {
      k_req_fail(req, 403, "forbidden", "%s", reason);
      deny(srv, req);
      goto out;
    }
  }
  if (r->flags & K_ROUTE_MUTATION)
    mutate(srv, req, r);
  else
    r->apply(srv, req);
out:
  req->wait_gen = k_store_visible_gen(srv->store);
}
