/* api_exec.c — runbook executions and schedules (docs/runbooks.md):
 * /v1/executions, /v1/schedules, and the one way keeld starts a runbook
 * by itself as a user (k_runbook_start_as: the scheduler and automation
 * rules), through the same checks a request goes through: authorize
 * (runbook:start on the runbook and on every target host) -> validate
 * (parameters, targets) -> apply -> audit. */
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
  k_xec_origin_t origin = {req->who.user, 0, keel_json_str(req->in, "_retry_of"), NULL, NULL};
  int rc = k_xec_create(srv->xec, keel_json_str(req->in, "_id"), json_object_get(req->in, "_runbook"),
                        json_object_get(req->in, "_params"), json_object_get(req->in, "_targets"),
                        &origin, keel_now_ms(), &req->out, &req->detail, &e);
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

/* The runbook's path of an item naming a "runbook" and its owner under
 * owner_key (executions: "owner", schedules: "runbook_owner"), as lists
 * are judged (runbook:read). */
static void runbook_path_by(const json_t *it, const char *owner_key, char *out, size_t n) {
  json_t *ref = json_pack("{s:s,s:O}", "name", keel_json_str(it, "runbook"), "owner",
                          json_object_get(it, owner_key));
  out[0] = '\0';
  if (ref) k_runbook_path(ref, out, n);
  json_decref(ref);
}
static void execution_path(const json_t *it, char *out, size_t n) {
  runbook_path_by(it, "owner", out, n);
}
static void schedule_path(const json_t *it, char *out, size_t n) {
  runbook_path_by(it, "runbook_owner", out, n);
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
  k_authz_filter(srv, &req->who, "runbook:read", items, execution_path);
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
  if (rc) return k_req_fail_err(req, rc, &e);
  srv->fleet_wake = 1; /* agents running its steps hear of it now */
  return 0;
}

/* ---- schedules ------------------------------------------------------------------------ */

int k_api_schedule_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  keel_err_t e = {0};
  int rc = k_xec_schedule_list(srv->xec, keel_now_ms(), &items, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_authz_filter(srv, &req->who, "runbook:read", items, schedule_path);
  k_req_set_page(req, items, NULL);
  return 0;
}

/* ---- starting as a user: schedules and automation ------------------------------------- */

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

/* The outcome o, with the execution described by start (or none), the
 * caller's record and (unless a dry run) the audit record, in one unit. */
static int start_unit(k_server_t *srv, const k_start_as_t *s, k_start_out_t *o,
                      const json_t *start) {
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
    k_xec_origin_t origin = {s->owner, s->by_schedule, NULL, s->cause, s->gate};
    rc = k_xec_create(srv->xec, o->exe_id, json_object_get(start, "rb"),
                      json_object_get(start, "params"), o->targets, &origin, keel_now_ms(), &out,
                      &detail, &e);
    json_decref(out);
  }
  if (!rc && s->record) rc = s->record(s->ud, o, &e);
  if (!rc && !s->dry_run) {
    if (!start) keel_buf_reset(&detail);
    keel_buf_printf(&detail, "%s%s: %s%s%.2000s", detail.len ? "; " : "", s->note, o->outcome,
                    o->why[0] ? ": " : "", o->why);
    rec = (k_audit_rec_t){s->actor, "runbook:start", o->path[0] ? o->path : s->runbook,
                          !strcmp(o->outcome, "started") ? "ok"
                          : !strcmp(o->outcome, "denied") ? "denied"
                                                           : "failed",
                          o->status, detail.data ? detail.data : "", rid, ""};
    rc = k_audit_append(srv->audit, &rec, NULL, &e);
  }
  if (k_store_unit_end(srv->store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  if (!rc) goto out;
fail:
  k_audit_restore(srv->audit);
  keel_log(&srv->log, KEEL_LOG_ERROR, "%s (%s): %s", s->note, s->runbook, e.msg);
  if (start && k_xec_reload(srv->xec, &e))
    keel_log(&srv->log, KEEL_LOG_ERROR, "executions: reload: %s", e.msg);
  rc = KEEL_EIO;
out:
  keel_buf_free(&detail);
  return rc;
}

static int start_refused(k_server_t *srv, const k_start_as_t *s, k_start_out_t *o,
                         const char *outcome, int status, int rc) {
  o->outcome = outcome;
  o->status = status;
  return start_unit(srv, s, o, NULL) ? KEEL_EIO : rc;
}

int k_runbook_start_record(k_server_t *srv, const k_start_as_t *s, k_start_out_t *o) {
  return start_unit(srv, s, o, NULL);
}

int k_runbook_start_as(k_server_t *srv, const k_start_as_t *s, k_start_out_t *o) {
  json_t *rb = NULL, *u = NULL, *params = NULL, *start = NULL;
  k_principal_t who;
  sjudge_t j;
  keel_err_t e = {0};
  int rc;

  memset(&who, 0, sizeof who);
  memset(&j, 0, sizeof j);
  o->exe_id[0] = o->path[0] = o->why[0] = '\0';
  o->targets = NULL;
  if ((rc = k_runbook_get(srv->store, s->runbook, &rb, &e))) {
    snprintf(o->why, sizeof o->why, "%s", e.msg);
    rc = start_refused(srv, s, o, "failed", 400, KEEL_EINVAL);
    goto out;
  }
  k_runbook_path(rb, o->path, sizeof o->path);
  if (!s->owner || k_iam_user_get(srv->store, s->owner, &u, &e) ||
      json_is_true(json_object_get(u, "disabled"))) {
    snprintf(o->why, sizeof o->why, "the owner '%s' is unknown or disabled", s->owner ? s->owner : "");
    rc = start_refused(srv, s, o, "denied", 403, KEEL_EPERM);
    goto out;
  }
  snprintf(who.user_id, sizeof who.user_id, "%s", keel_json_str(u, "id"));
  snprintf(who.user, sizeof who.user, "%s", keel_json_str(u, "name"));
  snprintf(who.role, sizeof who.role, "%s", keel_json_str(u, "role"));
  j.srv = srv;
  j.who = &who;
  if (!judge_owner(&j, o->path, NULL)) {
    snprintf(o->why, sizeof o->why, "%s", j.reason);
    rc = start_refused(srv, s, o, "denied", 403, KEEL_EPERM);
    goto out;
  }
  if ((rc = k_runbook_params(json_object_get(rb, "document"), s->params, &params, &e))) {
    snprintf(o->why, sizeof o->why, "%s", e.msg);
    rc = start_refused(srv, s, o, "failed", 400, KEEL_EINVAL);
    goto out;
  }
  keel_random_id(o->exe_id, sizeof o->exe_id, "exe_");
  rc = resolve(srv, json_object_get(rb, "document"), params, o->exe_id, NULL, judge_owner, &j,
               &o->targets, &e);
  if (rc == KEEL_EPERM) snprintf(o->why, sizeof o->why, "%s: %s", j.path, j.reason);
  else if (rc) snprintf(o->why, sizeof o->why, "%s", e.msg);
  if (rc) {
    o->exe_id[0] = '\0';
    rc = start_refused(srv, s, o, rc == KEEL_EPERM ? "denied" : "failed", rc == KEEL_EPERM ? 403 : 400,
                       rc == KEEL_EPERM ? KEEL_EPERM : KEEL_EINVAL);
    goto out;
  }
  o->outcome = s->dry_run ? "dry_run" : "started";
  o->status = 201;
  if (s->dry_run) {
    o->exe_id[0] = '\0';
    rc = start_unit(srv, s, o, NULL);
    goto out;
  }
  if (!(start = json_pack("{s:O,s:O}", "rb", rb, "params", params))) {
    rc = KEEL_ENOMEM;
    goto out;
  }
  rc = start_unit(srv, s, o, start);
out:
  json_decref(rb);
  json_decref(u);
  json_decref(params);
  json_decref(start);
  json_decref(o->targets);
  o->targets = NULL;
  return rc;
}

/* ---- schedules: each due slot ----------------------------------------------------------- */

typedef struct slot {
  k_server_t *srv;
  const char *runbook;
  int64_t slot_ms;
} slot_t;

static int slot_record(void *ud, const k_start_out_t *o, keel_err_t *e) {
  slot_t *sl = ud;
  return k_xec_schedule_record(sl->srv->xec, sl->runbook, sl->slot_ms, keel_now_ms(), o->outcome,
                               o->exe_id[0] ? o->exe_id : NULL, o->why, e);
}

/* One due slot: start the runbook as the schedule's owner, or record why
 * not. */
static void fire(k_server_t *srv, const json_t *due) {
  const char *name = keel_json_str(due, "runbook"), *owner = keel_json_str(due, "owner");
  slot_t sl = {srv, name, json_integer_value(json_object_get(due, "slot_ms"))};
  char actor[160], note[80], slot_s[KEEL_TIME_STRLEN];
  k_start_as_t s;
  k_start_out_t o;

  memset(&s, 0, sizeof s);
  memset(&o, 0, sizeof o);
  snprintf(actor, sizeof actor, "user:%s (schedule %s)", owner ? owner : "?", name);
  keel_time_format(slot_s, sl.slot_ms);
  snprintf(note, sizeof note, "schedule slot %s", slot_s);
  s.owner = owner;
  s.runbook = name;
  s.params = json_object_get(due, "params");
  s.actor = actor;
  s.note = note;
  s.by_schedule = 1;
  s.record = slot_record;
  s.ud = &sl;
  if (json_is_string(json_object_get(due, "active"))) {
    json_t *rb = NULL;
    keel_err_t e = {0};
    if (!k_runbook_get(srv->store, name, &rb, &e)) k_runbook_path(rb, o.path, sizeof o.path);
    json_decref(rb);
    snprintf(o.why, sizeof o.why, "execution %s of this schedule is still running",
             keel_json_str(due, "active"));
    o.outcome = "skipped";
    o.status = 409;
    k_runbook_start_record(srv, &s, &o);
    return;
  }
  k_runbook_start_as(srv, &s, &o);
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
