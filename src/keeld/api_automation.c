/* api_automation.c — automation rules (docs/automation.md): the glue
 * between events and the automation engine (automation/automation.h),
 * and the routes /v1/automation/...
 *
 * Every event delivered (keeld's `events` phase) goes to on_event, which
 * queues it when some rule may want it; k_api_automation_pump, right
 * after, judges queued events for a bounded time per loop turn (a storm
 * of events then shares the loop with requests instead of holding it).
 * For each event, each rule whose `on` matches is judged (the guards), and
 * what the verdict says is done here, each outcome in a store unit of its
 * own:
 *   skipped (a guard)  -> a row and automation.skipped
 *   failed (params)    -> the same, and an audit record as the rule's owner
 *   dry run            -> k_runbook_start_as(dry_run): judged and resolved
 *                         as the owner, nothing started; a row and
 *                         automation.dry_run
 *   start              -> k_runbook_start_as: the execution (cause
 *                         "automation/RULE", with the rule's approval gate),
 *                         its audit record ("user:OWNER (automation RULE)",
 *                         the event's id and type in the detail), a row and
 *                         automation.triggered — or, refused, denied/failed.
 * When a rule started an execution (srv->automation_started), keeld
 * ticks the executions and wakes the agents' long-polls before it sleeps,
 * so a trigger and its first step leave with the same commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "automation/automation.h"
#include "automation/doc.h"
#include "incident/maint.h"
#include "keel/json.h"
#include "keel/time.h"
#include "runbook/doc.h"
#include "runbook/runbook.h"
#include "server.h"

#define PRUNE_EVERY_MS 3600000

/* ---- reacting to events ---------------------------------------------------------- */

static int maint_check(void *ud, const json_t *labels, int64_t now_ms, char *window, size_t n) {
  k_server_t *srv = ud;
  return k_maint_suppressed(srv->maint, json_is_object(labels) ? labels : NULL, now_ms, window, n);
}

/* One outcome being recorded (the record callback of k_runbook_start_as). */
typedef struct act {
  k_server_t *srv;
  const k_auto_verdict_t *v;
  const k_event_t *ev;
  int64_t now_ms;
  json_t *targets; /* kept for k_auto_note */
} act_t;

static const char *outcome_of(const char *start_outcome) {
  return !strcmp(start_outcome, "started") ? "triggered" : start_outcome;
}

static int act_record(void *ud, const k_start_out_t *o, keel_err_t *e) {
  act_t *c = ud;
  char why[512];
  snprintf(why, sizeof why, "%s", o->why);
  if (!strcmp(o->outcome, "dry_run")) {
    /* what it would have done: the runbook and its hosts */
    size_t i, n = 0;
    json_t *t;
    n = (size_t)snprintf(why, sizeof why, "would start runbook %s on %zu target(s):", c->v->runbook,
                         json_array_size(o->targets));
    json_array_foreach(o->targets, i, t) if (n < sizeof why)
        n += (size_t)snprintf(why + n, sizeof why - n, " %s", keel_json_str(t, "hostname"));
  }
  json_decref(c->targets);
  c->targets = json_incref(o->targets);
  return k_auto_record(c->srv->automation, c->v, c->ev, outcome_of(o->outcome), o->exe_id,
                       o->targets, why, c->now_ms, e);
}

/* The approval gate of a rule with require_approval: approvers default to
 * the team that owns the rule (an application's owner team).  NULL and
 * why set when there is nobody to ask. */
static json_t *gate_of(k_server_t *srv, const k_auto_verdict_t *v, const k_event_t *ev, char *why,
                       size_t wl) {
  const json_t *ra = json_object_get(v->doc, "require_approval"), *spec = NULL;
  const char *app = keel_json_str(v->doc, "application"), *team = keel_json_str(v->doc, "team");
  json_t *gate, *approvers = json_incref(json_object_get(ra, "approvers"));
  keel_buf_t msg;
  char tn[96], raw[600];

  if (json_is_null(approvers)) {
    json_decref(approvers);
    approvers = NULL;
    if (app && k_org_object(srv->org, "application", app, &spec)) team = keel_json_str(spec, "owner");
    if (!team) {
      snprintf(why, wl, "require_approval: application '%s' has no owner team to approve; list approvers",
               app ? app : "");
      return NULL;
    }
    snprintf(tn, sizeof tn, "team:%s", team);
    approvers = json_pack("[s]", tn);
  }
  /* the message is rendered again by the approval step: a '{{' that came
   * with the event must stay text */
  snprintf(raw, sizeof raw, "automation rule %s: %s on %s; approve to run runbook %s", v->rule,
           ev->type, ev->subject && *ev->subject ? ev->subject : "-", v->runbook);
  keel_buf_init(&msg, 4 * sizeof raw);
  for (const char *p = raw; *p; p++) {
    if (p[0] == '{' && p[1] == '{') {
      keel_buf_puts(&msg, "{{ '{{' }}");
      p++;
    } else {
      keel_buf_append(&msg, p, 1);
    }
  }
  gate = json_pack("{s:o,s:O,s:O,s:s#}", "approvers", approvers, "min_approvals",
                   json_object_get(ra, "min_approvals"), "timeout_ms",
                   json_object_get(ra, "timeout_ms"), "message", msg.data ? msg.data : "", msg.len);
  keel_buf_free(&msg);
  if (!gate) snprintf(why, wl, "out of memory");
  return gate;
}

static void act(k_server_t *srv, const k_event_t *ev, const k_auto_verdict_t *v, int64_t now_ms) {
  act_t c = {srv, v, ev, now_ms, NULL};
  char actor[160], note[512];
  k_start_as_t s;
  k_start_out_t o;
  keel_err_t e = {0};
  json_t *gate = NULL;
  int rc;

  memset(&s, 0, sizeof s);
  memset(&o, 0, sizeof o);
  if (v->act == K_AUTO_SKIP) {
    if ((rc = k_store_unit_begin(srv->store, &e)) == 0) {
      rc = k_auto_record(srv->automation, v, ev, "skipped", NULL, NULL, v->reason, now_ms, &e);
      if (k_store_unit_end(srv->store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
    }
    if (rc) keel_log(&srv->log, KEEL_LOG_ERROR, "automation rule %s: %s", v->rule, e.msg);
    else k_auto_note(srv->automation, v, "skipped", NULL, NULL, now_ms);
    return;
  }
  snprintf(actor, sizeof actor, "user:%s (automation %s)", v->user, v->rule);
  snprintf(note, sizeof note, "automation rule %s, event %s (%s, subject %.200s)", v->rule,
           ev->id ? ev->id : "", ev->type, ev->subject ? ev->subject : "");
  s.owner = v->user;
  s.runbook = v->runbook;
  s.params = v->params;
  s.actor = actor;
  s.note = note;
  s.dry_run = v->act == K_AUTO_DRY_RUN;
  s.record = act_record;
  s.ud = &c;
  {
    char cause[96];
    snprintf(cause, sizeof cause, "automation/%s", v->rule);
    s.cause = cause;
    if (v->act == K_AUTO_FAIL) {
      snprintf(o.why, sizeof o.why, "%s", v->reason);
      o.outcome = "failed";
      o.status = 400;
      rc = k_runbook_start_record(srv, &s, &o);
      goto out;
    }
    if (v->act == K_AUTO_START && !json_is_null(json_object_get(v->doc, "require_approval")) &&
        !(s.gate = gate = gate_of(srv, v, ev, o.why, sizeof o.why))) {
      o.outcome = "failed";
      o.status = 400;
      rc = k_runbook_start_record(srv, &s, &o);
      goto out;
    }
    rc = k_runbook_start_as(srv, &s, &o);
  }
  if (rc == 0 && o.exe_id[0]) srv->automation_started = 1;
out:
  /* a refusal is kept as surely as a start: only KEEL_EIO/ENOMEM kept nothing */
  if (rc == 0 || rc == KEEL_EPERM || rc == KEEL_EINVAL)
    k_auto_note(srv->automation, v, outcome_of(o.outcome), o.exe_id, c.targets, now_ms);
  json_decref(gate);
  json_decref(c.targets);
}

/* The subscriber: executions that ended are noted at once; events some
 * rule may want wait in the engine's queue for k_api_automation_pump. */
static void on_event(void *ud, const k_event_t *ev) {
  k_server_t *srv = ud;
  keel_err_t e = {0};

  if (ev->type && !strcmp(ev->type, "execution.finished")) k_auto_on_execution(srv->automation, ev);
  if (k_auto_refresh(srv->automation, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "automation: rules: %s", e.msg);
    return;
  }
  k_auto_queue(srv->automation, ev);
}

int k_api_automation_pump(k_server_t *srv, int64_t budget_ms) {
  k_auto_t *a = srv->automation;
  int64_t start = keel_mono_ms();
  const json_t *view;
  k_event_t ev;
  keel_err_t e = {0};

  if (k_auto_refresh(a, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "automation: rules: %s", e.msg);
    return 0;
  }
  while (!srv->stopping && k_auto_next(a, &ev, &view)) {
    int64_t now = keel_now_ms();
    for (size_t i = 0; i < k_auto_nrules(a); i++) {
      k_auto_verdict_t v;
      if (!k_auto_judge(a, i, &ev, view, now, maint_check, srv, &v)) continue;
      act(srv, &ev, &v, now);
      k_auto_verdict_clear(&v);
    }
    k_auto_pop(a);
    if (keel_mono_ms() - start >= budget_ms) break;
  }
  return k_auto_queued(a) > 0 && !srv->stopping;
}

int k_api_automation_start(k_server_t *srv, keel_err_t *e) {
  k_auto_deps_t d = {srv->store, srv->events, &srv->log};
  json_t *running;
  size_t i;
  json_t *id;
  int rc;

  if ((rc = k_auto_open(&d, keel_now_ms(), &srv->automation, e))) return rc;
  if ((rc = k_events_subscribe(srv->events, on_event, srv, e))) return rc;
  /* An execution that ended while keeld stopped may have taken its
   * execution.finished event with it: ask the runbook engine. */
  running = k_auto_running(srv->automation);
  json_array_foreach(running, i, id) {
    json_t *x = NULL;
    keel_err_t xe = {0};
    const char *st;
    if (k_xec_get(srv->xec, json_string_value(id), 0, &x, &xe) == 0 &&
        (st = keel_json_str(x, "state")) && strcmp(st, "pending") && strcmp(st, "running") &&
        strcmp(st, "waiting_approval") && strcmp(st, "paused"))
      k_auto_execution_ended(srv->automation, json_string_value(id), st, keel_now_ms());
    json_decref(x);
  }
  json_decref(running);
  return 0;
}

void k_api_automation_stop(k_server_t *srv) {
  k_auto_close(srv->automation);
  srv->automation = NULL;
}

void k_api_automation_cron(k_server_t *srv, int64_t mono_ms) {
  keel_err_t e = {0};
  if (srv->last_automation_prune_ms && mono_ms - srv->last_automation_prune_ms < PRUNE_EVERY_MS)
    return;
  srv->last_automation_prune_ms = mono_ms;
  if (k_auto_prune(srv->automation, keel_now_ms(), &e))
    keel_log(&srv->log, KEEL_LOG_ERROR, "automation: pruning runs: %s", e.msg);
}

/* ---- apply (POST /v1/apply with kind: AutomationRule) ---------------------------------- */

int k_api_automation_apply_decode(k_server_t *srv, k_req_t *req, const char *name,
                                  const json_t *raw, const keel_yaml_pos_t *pos) {
  json_t *rb = NULL;
  char path[192];
  keel_err_t e = {0};
  int rc;

  /* once an organization is applied, the owner is one of its objects */
  if ((rc = k_auto_doc_validate(name, raw, pos, srv->org, &req->in, &e)))
    return k_req_fail_err(req, rc, &e);
  /* a rule is its owner's: automation:write on its path; it will start
   * its runbook as the applying user, so that user must be allowed to */
  k_auto_rule_path(req->in, path, sizeof path);
  if (!k_authz_req(srv, req, "automation:write", path, NULL, 1)) return -1;
  req->authorized = 1;
  snprintf(req->target.path, sizeof req->target.path, "%s", path);
  {
    const char *rbname = keel_json_str(json_object_get(req->in, "run"), "runbook");
    char rbpath[192];
    if (k_runbook_get(srv->store, rbname, &rb, &e))
      return k_req_fail(req, 400, "bad_request", "%s: run.runbook: no runbook '%s' (apply it first)",
                        name, rbname);
    k_runbook_path(rb, rbpath, sizeof rbpath);
    rc = k_auto_check_runbook(req->in, json_object_get(rb, "document"), &e);
    json_decref(rb);
    if (rc) return k_req_fail(req, 400, "bad_request", "%s: %s", name, e.msg);
    if (!k_authz_req(srv, req, "runbook:start", rbpath, NULL, 1)) return -1;
  }
  return 0;
}

int k_api_automation_apply(k_server_t *srv, k_req_t *req, int dry_run, keel_err_t *e) {
  return k_auto_apply(srv->automation, req->in, req->who.user, dry_run, keel_now_ms(), &req->out,
                      &req->detail, e);
}

/* ---- routes ---------------------------------------------------------------------------- */

int k_api_automation_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "automation");
  return 0;
}

/* GET /v1/automation/rules and /v1/automation/runs: a page, only the
 * items the caller may read. */
static int list(k_server_t *srv, k_req_t *req, int runs) {
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = runs ? k_auto_run_list(srv->automation, k_req_query(req, "rule"), k_req_query(req, "cursor"),
                              limit, &items, &next, &e)
            : k_auto_rule_list(srv->automation, k_req_query(req, "cursor"), limit, &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* runs carry their rule's path */
  k_authz_filter(srv, &req->who, "automation:read", items, runs ? NULL : k_auto_rule_path);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

int k_api_automation_rule_list(k_server_t *srv, k_req_t *req) { return list(srv, req, 0); }
int k_api_automation_run_list(k_server_t *srv, k_req_t *req) { return list(srv, req, 1); }

/* A rule's routes are judged on its own path. */
int k_api_automation_rule_decode(k_server_t *srv, k_req_t *req) {
  json_t *r = NULL;
  keel_err_t e = {0};
  if (k_auto_rule_get(srv->automation, req->params[0], &r, &e) == 0)
    k_auto_rule_path(r, req->target.path, sizeof req->target.path);
  else
    snprintf(req->target.path, sizeof req->target.path, "team/_/automation/%.64s", req->params[0]);
  json_decref(r);
  return 0;
}

int k_api_automation_rule_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_auto_rule_get(srv->automation, req->params[0], &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_automation_rule_delete(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_auto_rule_get(srv->automation, req->params[0], &req->out, &e);
  if (!rc) rc = k_auto_rule_delete(srv->automation, req->params[0], &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_automation_switch_get(k_server_t *srv, k_req_t *req) {
  req->out = k_auto_switch_get(srv->automation);
  return req->out ? 0 : k_req_fail_err(req, KEEL_ENOMEM, NULL);
}

static const keel_json_field_t switch_fields[] = {
    {"enabled", KEEL_JSON_BOOL, 1, 0},
    {"reason", KEEL_JSON_STRING, 0, 512},
    {NULL, 0, 0, 0},
};

/* Judged first (automation:admin on "automation"), then the body is read
 * in apply: a caller who may not switch learns nothing from a 400. */
int k_api_automation_switch_decode(k_server_t *srv, k_req_t *req) {
  return k_api_automation_decode(srv, req);
}

int k_api_automation_switch_set(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = keel_json_decode(req->body.data, req->body.len, switch_fields, &req->in, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  if (!json_is_true(json_object_get(req->in, "enabled")) &&
      (!keel_json_str(req->in, "reason") || !*keel_json_str(req->in, "reason")))
    return k_req_fail(req, 400, "bad_request", "field 'reason': say why automation is switched off");
  rc = k_auto_switch_set(srv->automation, json_is_true(json_object_get(req->in, "enabled")),
                             keel_json_str(req->in, "reason"), req->who.user, keel_now_ms(),
                             &req->out, &req->detail, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int64_t k_api_automation_held(k_server_t *srv) {
  k_event_t ev;
  const json_t *view;
  if (!srv->automation || !k_auto_next(srv->automation, &ev, &view)) return 0;
  return ev.seq;
}
