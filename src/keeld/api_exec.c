/* api_exec.c — runbook executions and schedules (docs/runbooks.md):
 * /v1/executions, /v1/schedules, and the scheduler, which starts runs as
 * the schedule's owner through the same checks a request goes through:
 * authorize (runbook:start on the runbook and on every target host) ->
 * validate (parameters, targets) -> apply -> audit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "runbook/doc.h"
#include "runbook/runbook.h"
#include "server.h"

/* Judges one target host; returns 1 to allow. */
typedef int (*judge_fn)(void *ud, const char *path, const json_t *tags);

/* The targets of an execution of rb with checked params: the agents its
 * selector matches, [{"agent_id","hostname","tags","online"}], each judged
 * (only: the agents in `only` when not NULL, for a retry).  KEEL_EINVAL for
 * a bad selector or no match; KEEL_EPERM when judge refused one (it has
 * said why). */
static int resolve(k_server_t *srv, const json_t *doc, const json_t *params, const char *id,
                   const json_t *only, judge_fn judge, void *ud, json_t **targets, keel_err_t *e) {
  json_t *text = NULL, *out = json_array();
  keel_selector_t *sel = NULL;
  int rc;

  *targets = NULL;
  if (!out) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_xec_render_targets(doc, params, id, &text, e))) goto out;
  {
    keel_err_t se = {0};
    if (keel_selector_parse(json_string_value(text), json_string_length(text), &sel, &se)) {
      rc = keel_err_set(e, KEEL_EINVAL, "targets '%.200s': %s", json_string_value(text), se.msg);
      goto out;
    }
  }
  for (size_t i = 0; i < k_fleet_count(srv->fleet); i++) {
    k_agent_t *a = k_fleet_at(srv->fleet, i);
    char path[200];
    if (!k_fleet_match(srv->fleet, a, sel, NULL)) continue;
    if (only) {
      size_t j;
      json_t *v;
      int listed = 0;
      json_array_foreach(only, j, v) listed |= !strcmp(json_string_value(v), a->id);
      if (!listed) continue;
    }
    k_org_host_path(srv->org, a->id, a->hostname, a->tags, path, sizeof path);
    if (!judge(ud, path, a->tags)) {
      rc = KEEL_EPERM;
      goto out;
    }
    if (json_array_append_new(out, json_pack("{s:s,s:s,s:O,s:b}", "agent_id", a->id, "hostname",
                                             a->hostname, "tags", a->tags, "online", a->online))) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto out;
    }
  }
  if (!json_array_size(out)) {
    rc = keel_err_set(e, KEEL_EINVAL, "targets '%.200s' match no agent", json_string_value(text));
    goto out;
  }
  *targets = out;
  out = NULL;
  rc = 0;
out:
  json_decref(out);
  json_decref(text);
  keel_selector_free(sel);
  return rc;
}

static int judge_req(void *ud, const char *path, const json_t *tags) {
  void **p = ud;
  return k_authz_req(p[0], p[1], "runbook:start", path, tags, 1);
}

/* An execution's routes are judged on its runbook's path. */
static void exe_path(k_server_t *srv, k_req_t *req) {
  json_t *doc = NULL;
  keel_err_t e = {0};
  if (k_xec_document(srv->xec, req->params[0], &doc, &e) == 0)
    k_runbook_path(doc, req->target.path, sizeof req->target.path);
  else
    snprintf(req->target.path, sizeof req->target.path, "team/_/runbook/_");
  json_decref(doc);
}

/* ---- starting ----------------------------------------------------------------------- */

static const keel_json_field_t start_fields[] = {
    {"runbook", KEEL_JSON_STRING, 1, 64},
    {"params", KEEL_JSON_OBJECT, 0, 0},
    {NULL, 0, 0, 0},
};

/* Checks everything a start needs and judges it; req->in gets
 * {"_id", "_runbook", "_params", "_targets"} for apply. */
static int prepare(k_server_t *srv, k_req_t *req, const char *name, const json_t *given,
                   const json_t *only, const char *retry_of) {
  json_t *rb = NULL, *params = NULL, *targets = NULL;
  void *ud[2] = {srv, req};
  char id[24], path[192];
  keel_err_t e = {0};
  int rc = -1;

  if ((rc = k_runbook_get(srv->store, name, &rb, &e))) {
    /* judged on a path that names it, so a 404 is not a way to probe */
    snprintf(path, sizeof path, "team/_/runbook/%.64s", name);
    if (!k_authz_req(srv, req, "runbook:start", path, NULL, 1)) return -1;
    req->authorized = 1;
    return k_req_fail_err(req, rc, &e);
  }
  k_runbook_path(rb, path, sizeof path);
  snprintf(req->target.path, sizeof req->target.path, "%s", path);
  if (!k_authz_req(srv, req, "runbook:start", path, NULL, 1)) goto out;
  req->authorized = 1;
  if ((rc = k_runbook_params(json_object_get(rb, "document"), given, &params, &e))) {
    rc = k_req_fail_err(req, rc, &e);
    goto out;
  }
  keel_random_id(id, sizeof id, "exe_");
  rc = resolve(srv, json_object_get(rb, "document"), params, id, only, judge_req, ud, &targets, &e);
  if (rc == KEEL_EPERM) goto out; /* answered and audited by k_authz_req */
  if (rc) {
    rc = k_req_fail_err(req, rc, &e);
    goto out;
  }
  json_object_set_new(req->in, "_id", json_string(id));
  json_object_set(req->in, "_runbook", rb);
  json_object_set(req->in, "_params", params);
  json_object_set(req->in, "_targets", targets);
  if (retry_of) json_object_set_new(req->in, "_retry_of", json_string(retry_of));
  rc = 0;
out:
  json_decref(rb);
  json_decref(params);
  json_decref(targets);
  return rc ? -1 : 0;
}

int k_api_execution_start_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = keel_json_decode(req->body.data, req->body.len, start_fields, &req->in, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  return prepare(srv, req, keel_json_str(req->in, "runbook"), json_object_get(req->in, "params"),
                 NULL, NULL);
}

int k_api_execution_start(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_xec_create(srv->xec, keel_json_str(req->in, "_id"), json_object_get(req->in, "_runbook"),
                        json_object_get(req->in, "_params"), json_object_get(req->in, "_targets"),
                        req->who.user, 0, keel_json_str(req->in, "_retry_of"), keel_now_ms(),
                        &req->out, &req->detail, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  {
    char rb[sizeof req->target.path];
    memcpy(rb, req->target.path, sizeof rb);
    snprintf(req->target.path, sizeof req->target.path, "%.150s/execution/%s", rb,
             keel_json_str(req->out, "id"));
  }
  req->status = 201;
  return 0;
}

static const keel_json_field_t retry_fields[] = {
    {"failed_only", KEEL_JSON_BOOL, 0, 0},
    {NULL, 0, 0, 0},
};

int k_api_execution_retry_decode(k_server_t *srv, k_req_t *req) {
  json_t *ids = NULL, *params = NULL;
  char runbook[64];
  keel_err_t e = {0};
  int rc;

  if (req->body.len) {
    if ((rc = keel_json_decode(req->body.data, req->body.len, retry_fields, &req->in, &e)))
      return k_req_fail_err(req, rc, &e);
  } else if (!(req->in = json_object())) {
    return k_req_fail_err(req, KEEL_ENOMEM, NULL);
  }
  rc = k_xec_retry_targets(srv->xec, req->params[0],
                           json_is_true(json_object_get(req->in, "failed_only")), &ids, &params,
                           runbook, &e);
  if (!rc && !json_array_size(ids))
    rc = keel_err_set(&e, KEEL_ECONFLICT, "execution %s has no failed targets to retry", req->params[0]);
  if (rc) {
    /* judged on the execution's runbook first: an error is no way to probe */
    json_decref(ids);
    json_decref(params);
    exe_path(srv, req);
    if (!k_authz_req(srv, req, "runbook:start", req->target.path, NULL, 1)) return -1;
    req->authorized = 1;
    return k_req_fail_err(req, rc, &e);
  }
  rc = prepare(srv, req, runbook, params, ids, req->params[0]);
  json_decref(ids);
  json_decref(params);
  return rc;
}

/* ---- reading ------------------------------------------------------------------------ */

/* Drops the items (each naming a "runbook" and its owner under owner_key)
 * the caller may not read. */
static void keep_readable(k_server_t *srv, k_req_t *req, json_t *items, const char *owner_key) {
  for (size_t i = json_array_size(items); i-- > 0;) {
    json_t *it = json_array_get(items, i), *ref;
    char path[192];
    ref = json_pack("{s:s,s:O}", "name", keel_json_str(it, "runbook"), "owner",
                    json_object_get(it, owner_key));
    k_runbook_path(ref, path, sizeof path);
    json_decref(ref);
    if (!k_authz_req(srv, req, "runbook:read", path, NULL, 0)) json_array_remove(items, i);
  }
}

static const char *const exe_states[] = {"pending", "waiting_approval", "running", "paused",
                                         "succeeded", "failed", "cancelled", "timed_out", NULL};

int k_api_execution_list(k_server_t *srv, k_req_t *req) {
  const char *state = k_req_query(req, "state");
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc, ok = !state;

  if (k_req_limit(req, &limit)) return -1;
  for (const char *const *s = exe_states; state && *s; s++) ok |= !strcmp(*s, state);
  if (!ok) return k_req_fail(req, 400, "bad_request", "query parameter 'state': unknown state '%.40s'", state);
  rc = k_xec_list(srv->xec, k_req_query(req, "runbook"), state, k_req_query(req, "cursor"), limit,
                  &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  keep_readable(srv, req, items, "owner");
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

int k_api_execution_one_decode(k_server_t *srv, k_req_t *req) {
  exe_path(srv, req);
  return 0;
}

int k_api_execution_get(k_server_t *srv, k_req_t *req) {
  const char *t = k_req_query(req, "targets");
  keel_err_t e = {0};
  int rc = k_xec_get(srv->xec, req->params[0], !t || strcmp(t, "false"), &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

/* ---- acting on one ------------------------------------------------------------------- */

static const keel_json_field_t comment_fields[] = {
    {"comment", KEEL_JSON_STRING, 0, 1024},
    {NULL, 0, 0, 0},
};

int k_api_execution_act_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc;
  if (req->body.len && (rc = keel_json_decode(req->body.data, req->body.len, comment_fields, &req->in, &e)))
    return k_req_fail_err(req, rc, &e);
  exe_path(srv, req);
  return 0;
}

static int decide(k_server_t *srv, k_req_t *req, int approve) {
  json_t *teams = k_org_user_teams(srv->org, req->who.user);
  keel_err_t e = {0};
  int rc = k_xec_decide(srv->xec, req->params[0], req->who.user, teams, approve,
                        keel_json_str(req->in, "comment"), keel_now_ms(), &req->out, &req->detail, &e);
  json_decref(teams);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_execution_approve(k_server_t *srv, k_req_t *req) { return decide(srv, req, 1); }
int k_api_execution_reject(k_server_t *srv, k_req_t *req) { return decide(srv, req, 0); }

int k_api_execution_resume(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_xec_resume(srv->xec, req->params[0], keel_now_ms(), &req->out, &req->detail, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_execution_cancel(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_xec_cancel(srv->xec, req->params[0], req->who.user, keel_now_ms(), &req->out,
                        &req->detail, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

/* ---- schedules ------------------------------------------------------------------------ */

int k_api_schedule_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  keel_err_t e = {0};
  int rc = k_xec_schedule_list(srv->xec, keel_now_ms(), &items, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  keep_readable(srv, req, items, "runbook_owner");
  k_req_set_page(req, items, NULL);
  return 0;
}

typedef struct sjudge {
  k_server_t *srv;
  const k_principal_t *who;
  char reason[256];
  char path[200];
} sjudge_t;

static int judge_owner(void *ud, const char *path, const json_t *tags) {
  sjudge_t *j = ud;
  k_target_t t;
  memset(&t, 0, sizeof t);
  snprintf(t.path, sizeof t.path, "%s", path);
  t.tags = tags;
  snprintf(j->path, sizeof j->path, "%s", path);
  return k_authz_check(j->srv->org, j->who, "runbook:start", &t, j->reason, sizeof j->reason);
}

/* One record of what a schedule did, with its audit record, in one unit. */
static void sched_record(k_server_t *srv, const char *runbook, int64_t slot, const char *actor,
                         const char *path, const char *outcome, int status, const char *exe,
                         const char *why, k_xec_t *x, const json_t *start) {
  k_audit_rec_t rec;
  keel_buf_t detail;
  keel_err_t e = {0};
  char rid[24];
  json_t *out = NULL;
  int rc;

  keel_buf_init(&detail, K_AUDIT_DETAIL_MAX);
  keel_random_id(rid, sizeof rid, "sch_");
  k_audit_mark(srv->audit);
  if ((rc = k_store_unit_begin(srv->store, &e))) goto fail;
  if (start) {
    rc = k_xec_create(x, exe, json_object_get(start, "rb"), json_object_get(start, "params"),
                      json_object_get(start, "targets"), keel_json_str(start, "owner"), 1, NULL,
                      keel_now_ms(), &out, &detail, &e);
    json_decref(out);
  }
  if (!rc)
    rc = k_xec_schedule_record(x, runbook, slot, keel_now_ms(), outcome, exe, why, &e);
  if (!rc) {
    char slot_s[KEEL_TIME_STRLEN];
    keel_time_format(slot_s, slot);
    if (!start) keel_buf_reset(&detail);
    keel_buf_printf(&detail, "%sschedule slot %s: %s%s%.2000s", detail.len ? "; " : "", slot_s,
                    outcome, why && *why ? ": " : "", why ? why : "");
    rec = (k_audit_rec_t){actor, "runbook:start", path, !strcmp(outcome, "started") ? "ok"
                                                         : !strcmp(outcome, "denied") ? "denied"
                                                                                      : "failed",
                          status, detail.data ? detail.data : "", rid, ""};
    rc = k_audit_append(srv->audit, &rec, NULL, &e);
  }
  if (k_store_unit_end(srv->store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  if (!rc) goto out;
fail:
  k_audit_restore(srv->audit);
  keel_log(&srv->log, KEEL_LOG_ERROR, "schedule of %s: %s", runbook, e.msg);
  if (start) k_xec_reload(x, &e);
out:
  keel_buf_free(&detail);
}

/* One due slot: start the runbook as the schedule's owner, or record why
 * not. */
static void fire(k_server_t *srv, const json_t *due) {
  const char *name = keel_json_str(due, "runbook"), *owner = keel_json_str(due, "owner");
  int64_t slot = json_integer_value(json_object_get(due, "slot_ms"));
  json_t *rb = NULL, *u = NULL, *params = NULL, *targets = NULL, *start = NULL;
  k_principal_t who;
  sjudge_t j;
  char actor[160], path[192] = "", id[24], why[512] = "";
  keel_err_t e = {0};
  int rc;

  memset(&who, 0, sizeof who);
  memset(&j, 0, sizeof j);
  snprintf(actor, sizeof actor, "user:%s (schedule %s)", owner ? owner : "?", name);
  if ((rc = k_runbook_get(srv->store, name, &rb, &e))) {
    snprintf(why, sizeof why, "%s", e.msg);
    goto failed;
  }
  k_runbook_path(rb, path, sizeof path);
  if (json_is_string(json_object_get(due, "active"))) {
    snprintf(why, sizeof why, "execution %s of this schedule is still running",
             keel_json_str(due, "active"));
    sched_record(srv, name, slot, actor, path, "skipped", 409, NULL, why, srv->xec, NULL);
    goto out;
  }
  if (!owner || k_iam_user_get(srv->store, owner, &u, &e) ||
      json_is_true(json_object_get(u, "disabled"))) {
    snprintf(why, sizeof why, "the schedule's owner '%s' is unknown or disabled", owner ? owner : "");
    sched_record(srv, name, slot, actor, path, "denied", 403, NULL, why, srv->xec, NULL);
    goto out;
  }
  snprintf(who.user_id, sizeof who.user_id, "%s", keel_json_str(u, "id"));
  snprintf(who.user, sizeof who.user, "%s", keel_json_str(u, "name"));
  snprintf(who.role, sizeof who.role, "%s", keel_json_str(u, "role"));
  j.srv = srv;
  j.who = &who;
  if (!judge_owner(&j, path, NULL)) {
    snprintf(why, sizeof why, "%s", j.reason);
    sched_record(srv, name, slot, actor, path, "denied", 403, NULL, why, srv->xec, NULL);
    goto out;
  }
  if ((rc = k_runbook_params(json_object_get(rb, "document"), json_object_get(due, "params"),
                             &params, &e))) {
    snprintf(why, sizeof why, "%s", e.msg);
    goto failed;
  }
  keel_random_id(id, sizeof id, "exe_");
  rc = resolve(srv, json_object_get(rb, "document"), params, id, NULL, judge_owner, &j, &targets, &e);
  if (rc == KEEL_EPERM) {
    snprintf(why, sizeof why, "%s: %s", j.path, j.reason);
    sched_record(srv, name, slot, actor, path, "denied", 403, NULL, why, srv->xec, NULL);
    goto out;
  }
  if (rc) {
    snprintf(why, sizeof why, "%s", e.msg);
    goto failed;
  }
  start = json_pack("{s:O,s:O,s:O,s:s}", "rb", rb, "params", params, "targets", targets, "owner",
                    who.user);
  if (start) sched_record(srv, name, slot, actor, path, "started", 201, id, "", srv->xec, start);
  goto out;
failed:
  sched_record(srv, name, slot, actor, path[0] ? path : name, "failed", 400, NULL, why, srv->xec, NULL);
out:
  json_decref(rb);
  json_decref(u);
  json_decref(params);
  json_decref(targets);
  json_decref(start);
}

void k_api_schedules_fire(k_server_t *srv, int64_t now_ms) {
  json_t *due = NULL, *it;
  keel_err_t e = {0};
  size_t i;
  if (k_xec_due(srv->xec, now_ms, &due, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "schedules: %s", e.msg);
    return;
  }
  json_array_foreach(due, i, it) fire(srv, it);
  json_decref(due);
}
