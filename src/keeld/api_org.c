/* api_org.c — /v1/apply (organization documents), /v1/org, /v1/policy/explain. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "keel/yaml.h"
#include "alert/alert.h"
#include "alert/doc.h"
#include "org/doc.h"
#include "runbook/doc.h"
#include "runbook/runbook.h"
#include "scrape/scrape.h"
#include "server.h"

/* ?flag=true|false|1|0; absent = 0.  -1 after a 400. */
static int query_bool(k_req_t *req, const char *name) {
  const char *v = k_req_query(req, name);
  if (!v) return 0;
  if (!strcmp(v, "true") || !strcmp(v, "1")) return 1;
  if (!strcmp(v, "false") || !strcmp(v, "0")) return 0;
  k_req_fail(req, 400, "bad_request", "query parameter '%s': expected true or false", name);
  return -1;
}

/* A validated document its owner holds (rc its validation's outcome):
 * judged as action on its own path, which becomes the request's target. */
static int owned_doc(k_server_t *srv, k_req_t *req, int rc, keel_err_t *e, const char *action,
                     k_item_path_fn path_of) {
  if (rc) return k_req_fail_err(req, rc, e);
  path_of(req->in, req->target.path, sizeof req->target.path);
  if (!k_authz_req(srv, req, action, req->target.path, NULL, 1)) return -1;
  req->authorized = 1;
  return 0;
}

int k_api_apply_decode(k_server_t *srv, k_req_t *req) {
  const char *name = k_req_query(req, "file");
  keel_err_t e = {0};
  int rc;
  if (query_bool(req, "dry_run") < 0 || query_bool(req, "prune") < 0) return -1;
  if (!req->body.len) return k_req_fail(req, 400, "bad_request", "empty document");
  if (!name || !*name) name = "document";
  /* YAML or JSON: JSON is YAML, so one loader names line and column for
   * both.  Parsed once; the document's kind picks its validator. */
  {
    json_t *raw = NULL;
    keel_yaml_pos_t *pos = NULL;
    const char *kind;
    if ((rc = keel_yaml_load(name, req->body.data, req->body.len, &raw, &pos, &e)))
      return k_req_fail_err(req, rc, &e);
    kind = keel_json_str(raw, "kind");
    if (kind && !strcmp(kind, "Runbook")) {
      /* A runbook is its owner's: judged as runbook:write on its path,
       * not as a change of the organization. */
      rc = k_runbook_doc_validate(name, raw, pos, &req->in, &e);
      json_decref(raw);
      keel_yaml_pos_free(pos);
      return owned_doc(srv, req, rc, &e, "runbook:write", k_runbook_path);
    }
    if (kind && !strcmp(kind, "AlertRule")) {
      /* an alert rule is its owner's, like a runbook: alert:write */
      rc = k_alert_doc_validate(name, raw, pos, srv->org, &req->in, &e);
      json_decref(raw);
      keel_yaml_pos_free(pos);
      return owned_doc(srv, req, rc, &e, "alert:write", k_alert_rule_path);
    }
    if (kind && !strcmp(kind, "AutomationRule")) {
      /* the automation engine's (api_automation.c): automation:write */
      rc = k_api_automation_apply_decode(srv, req, name, raw, pos);
      json_decref(raw);
      keel_yaml_pos_free(pos);
      return rc;
    }
    if (kind && (!strcmp(kind, "NotificationPolicy") || !strcmp(kind, "MaintenanceWindow"))) {
      /* the incident engine's (api_incidents.c): notify:write, maintenance:write */
      rc = k_api_incident_doc_decode(srv, req, kind, name, raw, pos);
      json_decref(raw);
      keel_yaml_pos_free(pos);
      return rc;
    }
    if (kind && !strcmp(kind, "ScrapeConfig")) {
      /* the scrape configuration is the metrics engine's: metrics:write */
      json_object_del(raw, "kind"); /* the engine's document is the rest */
      rc = k_scrape_config_check(name, raw, pos, &e);
      keel_yaml_pos_free(pos);
      if (rc) {
        json_decref(raw);
        return k_req_fail_err(req, rc, &e);
      }
      req->in = json_pack("{s:s,s:o}", "kind", "ScrapeConfig", "doc", raw);
      if (!req->in) return k_req_fail_err(req, KEEL_ENOMEM, NULL);
      if (!k_authz_req(srv, req, "metrics:write", "metrics", NULL, 1)) return -1;
      req->authorized = 1;
      snprintf(req->target.path, sizeof req->target.path, "metrics");
      return 0;
    }
    rc = k_org_doc_validate(name, raw, pos, &req->in, &e);
    json_decref(raw);
    keel_yaml_pos_free(pos);
    if (rc) return k_req_fail_err(req, rc, &e);
  }
  snprintf(req->target.path, sizeof req->target.path, "org");
  return 0;
}

/* apply.done for a document that changed something (inside the request's
 * unit), whatever its kind: every engine's apply answers with the same
 * report ({"changed", "summary", "changes": [{"op","kind","name"}]}). */
static int apply_done(k_server_t *srv, k_req_t *req, keel_err_t *e) {
  const char *kind = keel_json_str(req->in, "kind"), *name = keel_json_str(req->in, "name");
  const json_t *changes = json_object_get(req->out, "changes"), *c;
  json_t *list = json_array(), *data;
  char subject[K_EVENT_SUBJECT_MAX + 1];
  size_t i;

  if (!json_is_true(json_object_get(req->out, "changed"))) {
    json_decref(list);
    return 0;
  }
  if (!kind) kind = "Organization";
  if (!name) name = keel_json_str(json_object_get(req->in, "doc"), "name");
  if (!name) name = keel_json_str(json_array_get(changes, 0), "name");
  if (!name) name = "";
  json_array_foreach(changes, i, c) {
    if (i == 100) break; /* the rest are in the audit record */
    json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "op", keel_json_str(c, "op") ? keel_json_str(c, "op") : "",
                                          "kind", keel_json_str(c, "kind") ? keel_json_str(c, "kind") : "",
                                          "name", keel_json_str(c, "name") ? keel_json_str(c, "name") : ""));
  }
  data = json_pack("{s:s,s:s,s:O,s:I,s:s}", "kind", kind, "name", name, "changes", list, "count",
                   (json_int_t)json_array_size(changes), "summary",
                   keel_json_str(req->out, "summary") ? keel_json_str(req->out, "summary") : "");
  json_decref(list);
  snprintf(subject, sizeof subject, "%s/%s", kind, name);
  return k_event_emit_new(srv->events, "apply.done", subject, req->target.path, NULL, data, e);
}

int k_api_apply(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  const char *kind = keel_json_str(req->in, "kind");
  int rc;
  if (kind && strcmp(kind, "Organization") && query_bool(req, "prune"))
    return k_req_fail(req, 400, "bad_request", "--prune applies to Organization documents only");
  if (kind && !strcmp(kind, "Runbook")) {
    rc = k_runbook_apply(srv->store, req->in, query_bool(req, "dry_run"), keel_now_ms(), &req->out,
                         &req->detail, &e);
    if (!rc) k_xec_schedules_changed(srv->xec);
  } else if (kind && !strcmp(kind, "AlertRule")) {
    rc = k_alerts_apply(srv->alerts, req->in, query_bool(req, "dry_run"), keel_now_ms(), &req->out,
                        &req->detail, &e);
  } else if (kind && !strcmp(kind, "AutomationRule")) {
    rc = k_api_automation_apply(srv, req, query_bool(req, "dry_run"), &e);
  } else if (kind && (!strcmp(kind, "NotificationPolicy") || !strcmp(kind, "MaintenanceWindow"))) {
    rc = k_api_incident_doc_apply(srv, req, query_bool(req, "dry_run"), &e);
  } else if (kind && !strcmp(kind, "ScrapeConfig")) {
    rc = k_metrics_config_apply(srv, json_object_get(req->in, "doc"), query_bool(req, "dry_run"),
                                &req->out, &req->detail, &e);
  } else {
    rc = k_org_apply(srv->org, req->in, query_bool(req, "dry_run"), query_bool(req, "prune"),
                     keel_now_ms(), &req->out, &req->detail, &e);
  }
  if (!rc && !query_bool(req, "dry_run")) rc = apply_done(srv, req, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

/* ---- runbooks ---------------------------------------------------------------------- */

int k_api_runbooks_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "runbooks");
  return 0;
}

int k_api_runbook_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = k_runbook_list(srv->store, k_req_query(req, "cursor"), limit, &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_authz_filter(srv, &req->who, "runbook:read", items, k_runbook_path);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

/* A runbook's routes are judged on its own path. */
int k_api_runbook_one_decode(k_server_t *srv, k_req_t *req) {
  json_t *rb = NULL;
  keel_err_t e = {0};
  if (k_runbook_get(srv->store, req->params[0], &rb, &e) == 0) {
    k_runbook_path(rb, req->target.path, sizeof req->target.path);
    json_decref(rb);
  } else {
    snprintf(req->target.path, sizeof req->target.path, "team/_/runbook/%s", req->params[0]);
  }
  return 0;
}

int k_api_runbook_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_runbook_get(srv->store, req->params[0], &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_runbook_delete(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_runbook_get(srv->store, req->params[0], &req->out, &e);
  if (!rc) rc = k_runbook_delete(srv->store, req->params[0], &e);
  if (!rc) k_xec_schedules_changed(srv->xec);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_org_get(k_server_t *srv, k_req_t *req) {
  req->out = json_pack("{s:o,s:o}", "organization", k_org_summary(srv->org), "statements",
                       k_org_statements(srv->org));
  return req->out ? 0 : k_req_fail_err(req, KEEL_ENOMEM, NULL);
}

int k_api_org_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "org");
  return 0;
}

/* GET /v1/policy/explain?user=U&action=A&resource=R[&tags=k=v,...] */
int k_api_explain(k_server_t *srv, k_req_t *req) {
  const char *user = k_req_query(req, "user"), *action = k_req_query(req, "action");
  const char *resource = k_req_query(req, "resource"), *tags_q = k_req_query(req, "tags");
  json_t *u = NULL, *tags = NULL;
  keel_err_t e = {0};
  k_pol_principal_t p;
  k_pol_resource_t res;
  k_pol_decision_t d;
  int rc = -1;

  if (!action || !*action || !resource || !*resource)
    return k_req_fail(req, 400, "bad_request", "query parameters 'action' and 'resource' are required");
  if (!user || !*user) user = req->who.user;
  if (k_iam_user_get(srv->store, user, &u, &e)) {
    k_req_fail_err(req, KEEL_ENOENT, &e);
    goto out;
  }
  if (tags_q && keel_tags_parse(tags_q, strlen(tags_q), &tags, &e)) {
    k_req_fail(req, 400, "bad_request", "query parameter 'tags': %s", e.msg);
    goto out;
  }
  k_org_principal(srv->org, keel_json_str(u, "name"), keel_json_str(u, "role"), 0, &p);
  res.path = resource;
  res.tags = tags;
  k_policy_decide(k_org_policy(srv->org), &p, action, &res, keel_now_ms(), &d);
  req->out = json_pack("{s:s,s:s,s:s,s:o,s:s,s:s,s:s,s:s}", "user", keel_json_str(u, "name"),
                       "action", action, "resource", resource, "allow", json_boolean(d.allow),
                       "decision", d.allow ? "allow" : "deny", "statement", d.statement, "kind",
                       d.kind, "reason", d.reason);
  if (req->out) json_object_set_new(req->out, "teams", k_org_user_teams(srv->org, keel_json_str(u, "name")));
  rc = req->out ? 0 : k_req_fail_err(req, KEEL_ENOMEM, NULL);
out:
  json_decref(u);
  json_decref(tags);
  return rc;
}
