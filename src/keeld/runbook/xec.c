/* xec.c — the execution state machine (see xec.h).
 *
 * One tick of an execution, in one store unit:
 *   1. timers     — the runbook's timeout, the approval's timeout, a timed pause
 *   2. collect    — finished steps: agent results, sleeps, decided approvals,
 *                   steps found in flight at start (interrupted), lost agents
 *   3. advance    — each running target starts its next step (sleep, assert
 *                   and passed approvals are done at once, so it loops)
 *   4. start      — the rate planner starts new targets, pauses at a batch
 *                   boundary, stops on too many errors, or ends the execution
 */
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/event.h"
#include "keel/json.h"
#include "keel/template.h"
#include "keel/time.h"
#include "runbook/runbook.h"
#include "runbook/xec_int.h"

const char *const k_xstate_names[] = {"pending", "waiting_approval", "running", "paused",
                                      "succeeded", "failed", "cancelled", "timed_out"};
const char *const k_tstate_names[] = {"pending", "running", "succeeded",
                                      "failed",  "skipped", "cancelled"};

void k_xexe_free(k_xexe_t *ex) {
  if (!ex) return;
  for (size_t i = 0; i < ex->nt; i++) {
    json_decref(ex->t[i].tags);
    json_decref(ex->t[i].outputs);
  }
  free(ex->t);
  json_decref(ex->doc);
  json_decref(ex->params);
  free(ex->approval_message);
  free(ex->approved);
  free(ex);
}

k_xexe_t *k_xec_find(k_xec_t *x, const char *id) {
  for (k_xexe_t *ex = x->head; ex; ex = ex->next)
    if (!strcmp(ex->id, id)) return ex;
  return NULL;
}

static void drop_all(k_xec_t *x) {
  while (x->head) {
    k_xexe_t *n = x->head->next;
    k_xexe_free(x->head);
    x->head = n;
  }
}

int k_xec_open(const k_xec_deps_t *d, k_xec_t **out, keel_err_t *e) {
  k_xec_t *x = calloc(1, sizeof *x);
  int rc;
  *out = NULL;
  if (!x) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  x->d = *d;
  x->sched_dirty = 1;
  if ((rc = k_xs_load(x, e))) {
    k_xec_close(x);
    return rc;
  }
  *out = x;
  return 0;
}

void k_xec_close(k_xec_t *x) {
  if (!x) return;
  drop_all(x);
  json_decref(x->scheds);
  free(x);
}

int k_xec_reload(k_xec_t *x, keel_err_t *e) {
  drop_all(x);
  x->sched_dirty = 1;
  return k_xs_load(x, e);
}

void k_xec_on_result(k_xec_t *x, const char *exe_id, const char *run_id) {
  k_xexe_t *ex = k_xec_find(x, exe_id);
  if (!ex) return;
  for (size_t i = 0; i < ex->nt; i++)
    if (ex->t[i].open == O_RUNNING && !strcmp(ex->t[i].run_id, run_id)) {
      ex->t[i].result_ready = 1;
      ex->dirty = 1;
      return;
    }
}

/* ---- steps ------------------------------------------------------------------ */

static const json_t *step_at(const k_xexe_t *ex, int i) {
  return json_array_get(json_object_get(ex->doc, "steps"), (size_t)i);
}

static const char *step_kind(const json_t *st) {
  static const char *const kinds[] = {"command", "script", "http", "sleep_ms", "approval",
                                      "assert", NULL};
  for (const char *const *k = kinds; *k; k++)
    if (json_object_get(st, *k) && !json_is_null(json_object_get(st, *k))) return *k;
  return "";
}

static int step_index(const k_xexe_t *ex, const char *name) {
  size_t i;
  json_t *st;
  json_array_foreach(json_object_get(ex->doc, "steps"), i, st)
    if (!strcmp(keel_json_str(st, "name"), name)) return (int)i;
  return -1;
}

/* Text as templates see a step's output: trailing newlines removed. */
static json_t *trimmed(const char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
  return json_stringn(s, n);
}

json_t *k_xec_step_outputs(const char *out, const char *err, const json_t *exit_code) {
  return json_pack("{s:o,s:o,s:O}", "stdout", trimmed(out ? out : ""), "stderr",
                   trimmed(err ? err : ""), "exit_code",
                   json_is_integer(exit_code) ? exit_code : json_null());
}

/* ---- interpolation ------------------------------------------------------------ */

typedef struct look {
  const k_xexe_t *ex;
  const k_xtarget_t *t; /* NULL for execution-wide texts */
  json_t *keep;         /* strings made for this render */
} look_t;

static int keep_str(look_t *l, json_t *s, const char **v, size_t *len) {
  if (!s || json_array_append_new(l->keep, s)) return KEEL_ENOMEM;
  *v = json_string_value(s);
  *len = json_string_length(s);
  return 0;
}

/* A parameter's value as text: ints in decimal, bools true/false, lists
 * joined with ",", an optional one not given as "". */
static json_t *param_text(const json_t *v) {
  if (!v || json_is_null(v)) return json_string("");
  if (json_is_string(v)) return json_copy((json_t *)v);
  if (json_is_integer(v)) return json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
  if (json_is_boolean(v)) return json_string(json_is_true(v) ? "true" : "false");
  if (json_is_array(v)) {
    keel_buf_t b;
    size_t i;
    json_t *it, *s;
    keel_buf_init(&b, 1 << 20);
    json_array_foreach(v, i, it) {
      if (i) keel_buf_puts(&b, ",");
      keel_buf_puts(&b, json_string_value(it) ? json_string_value(it) : "");
    }
    s = json_stringn(b.data ? b.data : "", b.len);
    keel_buf_free(&b);
    return s;
  }
  return json_string("");
}

static int lookup(void *ud, const char *name, const char **v, size_t *len) {
  look_t *l = ud;
  const char *dot;
  if (!strncmp(name, "params.", 7)) {
    const json_t *params = json_object_get(l->ex->doc, "parameters");
    size_t i;
    json_t *p;
    json_array_foreach(params, i, p) if (!strcmp(keel_json_str(p, "name"), name + 7))
        return keep_str(l, param_text(json_object_get(l->ex->params, name + 7)), v, len);
    return KEEL_ENOENT;
  }
  if (!strcmp(name, "execution.id")) return keep_str(l, json_string(l->ex->id), v, len);
  if (!l->t) return KEEL_ENOENT;
  if (!strcmp(name, "target.id")) return keep_str(l, json_string(l->t->agent_id), v, len);
  if (!strcmp(name, "target.hostname")) return keep_str(l, json_string(l->t->hostname), v, len);
  if (!strncmp(name, "target.tags.", 12)) {
    const char *tv = keel_json_str(l->t->tags, name + 12);
    return keep_str(l, json_string(tv ? tv : ""), v, len);
  }
  if (!strncmp(name, "steps.", 6) && (dot = strchr(name + 6, '.'))) {
    char step[72];
    const json_t *o, *f;
    snprintf(step, sizeof step, "%.*s", (int)(dot - name - 6), name + 6);
    o = json_object_get(l->t->outputs, step);
    f = json_object_get(o, dot + 1);
    if (!o) return keep_str(l, json_string(""), v, len); /* a step skipped by a failure */
    if (json_is_integer(f)) return keep_str(l, json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(f)), v, len);
    if (json_is_string(f)) return keep_str(l, json_copy((json_t *)f), v, len);
    return keep_str(l, json_string(""), v, len);
  }
  return KEEL_ENOENT;
}

/* Renders text with the execution's (and target's) values into *out. */
static int render(const k_xexe_t *ex, const k_xtarget_t *t, const char *text,
                  keel_tmpl_mode_t mode, json_t **out, keel_err_t *e) {
  look_t l = {ex, t, json_array()};
  keel_buf_t b;
  int rc;
  *out = NULL;
  keel_buf_init(&b, 4 << 20);
  if (!l.keep) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = keel_tmpl_expand(text, strlen(text), mode, lookup, &l, &b, e);
  if (!rc && !(*out = json_stringn(b.data ? b.data : "", b.len)))
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  keel_buf_free(&b);
  json_decref(l.keep);
  return rc;
}

int k_xec_step_spec(const k_xexe_t *ex, const k_xtarget_t *t, const json_t *st, json_t **spec,
                    keel_err_t *e) {
  const json_t *c;
  json_t *s = json_pack("{s:I,s:{},s:n,s:n,s:I}", "timeout_ms",
                        json_integer_value(json_object_get(st, "timeout_ms")), "env", "cwd",
                        "user", "output_cap", (json_int_t)K_XEC_OUTPUT_CAP);
  json_t *v = NULL;
  int rc = 0;

  *spec = NULL;
  if (!s) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((c = json_object_get(st, "command"))) {
    const json_t *argv = json_object_get(c, "argv");
    if (argv && !json_is_null(argv)) {
      json_t *a = json_array(), *it;
      size_t i;
      json_object_set_new(s, "argv", a);
      json_array_foreach(argv, i, it) {
        if ((rc = render(ex, t, json_string_value(it), KEEL_TMPL_RAW, &v, e))) goto out;
        json_array_append_new(a, v);
      }
    } else {
      if ((rc = render(ex, t, keel_json_str(c, "shell"), KEEL_TMPL_SHELL, &v, e))) goto out;
      json_object_set_new(s, "shell", v);
    }
  } else if ((c = json_object_get(st, "script"))) {
    if ((rc = render(ex, t, keel_json_str(c, "body"), KEEL_TMPL_SHELL, &v, e))) goto out;
    json_object_set_new(s, "script", json_pack("{s:s,s:o}", "interpreter",
                                               keel_json_str(c, "interpreter"), "body", v));
  } else if ((c = json_object_get(st, "http"))) {
    json_t *url, *body = json_null();
    if ((rc = render(ex, t, keel_json_str(c, "url"), KEEL_TMPL_RAW, &url, e))) goto out;
    if (keel_json_str(c, "expect_body") &&
        (rc = render(ex, t, keel_json_str(c, "expect_body"), KEEL_TMPL_RAW, &body, e))) {
      json_decref(url);
      goto out;
    }
    json_object_set_new(s, "http", json_pack("{s:o,s:s,s:O,s:o}", "url", url, "method",
                                             keel_json_str(c, "method"), "expect_status",
                                             json_object_get(c, "expect_status"), "expect_body",
                                             body));
  }
out:
  if (rc) json_decref(s);
  else *spec = s;
  return rc;
}

/* An assert step on t: the earlier step's field against the expectation. */
static int eval_assert(const k_xexe_t *ex, const k_xtarget_t *t, const json_t *a, char *why,
                       size_t wl) {
  const char *sname = keel_json_str(a, "step"), *field = keel_json_str(a, "field");
  const json_t *o = json_object_get(t->outputs, sname), *f = json_object_get(o, field);
  static const char *const ops[] = {"equals", "not_equals", "contains", "matches", NULL};
  char num[32];
  const char *have = "";
  json_t *want = NULL;
  keel_err_t e = {0};
  int ok = 0;

  if (!o) {
    snprintf(why, wl, "step '%s' did not run on this target", sname);
    return 0;
  }
  if (json_is_integer(f)) {
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(f));
    have = num;
  } else if (json_is_string(f)) {
    have = json_string_value(f);
  }
  for (const char *const *op = ops; *op; op++) {
    const char *w = keel_json_str(a, *op);
    if (!w) continue;
    if (!strcmp(*op, "matches")) {
      regex_t re;
      if (regcomp(&re, w, REG_EXTENDED | REG_NOSUB)) {
        snprintf(why, wl, "matches: the expression does not compile");
        return 0;
      }
      ok = regexec(&re, have, 0, NULL, 0) == 0;
      regfree(&re);
      snprintf(why, wl, "steps.%s.%s %s /%.200s/", sname, field, ok ? "matches" : "does not match", w);
      return ok;
    }
    if (render(ex, t, w, KEEL_TMPL_RAW, &want, &e)) {
      snprintf(why, wl, "%s: %s", *op, e.msg);
      return 0;
    }
    if (!strcmp(*op, "equals")) ok = !strcmp(have, json_string_value(want));
    else if (!strcmp(*op, "not_equals")) ok = strcmp(have, json_string_value(want)) != 0;
    else ok = strstr(have, json_string_value(want)) != NULL;
    snprintf(why, wl, "steps.%s.%s is '%.120s'; expected it %s '%.120s'", sname, field, have,
             !strcmp(*op, "equals") ? "to equal" : !strcmp(*op, "not_equals") ? "not to equal" : "to contain",
             json_string_value(want));
    json_decref(want);
    return ok;
  }
  snprintf(why, wl, "no condition");
  return 0;
}

/* ---- one execution ------------------------------------------------------------- */

static void set_reason(k_xexe_t *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(k_xexe_t *ex, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ex->reason, sizeof ex->reason, fmt, ap);
  va_end(ap);
}

/* Closes t's open attempt with an outcome, remembers its outputs, and
 * moves t on by the step's on_failure. */
static int close_step(k_xec_t *x, k_xexe_t *ex, size_t i, const char *status, const json_t *res,
                      const char *error, int64_t now_ms, keel_err_t *e) {
  k_xtarget_t *t = &ex->t[i];
  const json_t *st = step_at(ex, t->step);
  const char *name = keel_json_str(st, "name");
  const json_t *xc = res ? json_object_get(res, "exit_code") : NULL;
  const char *out = res ? keel_json_str(res, "stdout") : "", *err = res ? keel_json_str(res, "stderr") : "";
  int rc;

  if ((rc = k_xs_step_close(x, ex, i, status, xc, out ? out : "", err ? err : "",
                            res && json_is_true(json_object_get(res, "truncated")), now_ms, error,
                            e)))
    return rc;
  t->open = O_NONE;
  t->run_id[0] = '\0';
  t->result_ready = 0;
  t->interrupted = 0;
  json_object_set_new(t->outputs, name, k_xec_step_outputs(out, err, xc));
  if (!strcmp(status, "succeeded")) {
    t->step++;
    return 0;
  }
  {
    const json_t *of = json_object_get(st, "on_failure");
    const char *action = keel_json_str(of, "action");
    if (action && !strcmp(action, "continue")) {
      t->step++;
    } else if (action && !strcmp(action, "rollback-to") && !t->rolled_back) {
      t->rolled_back = 1;
      t->step = step_index(ex, keel_json_str(of, "step"));
      snprintf(t->error, sizeof t->error, "step '%s' %s; rolled back to '%s'", name, status,
               keel_json_str(of, "step"));
    } else {
      t->st = T_FAILED;
      t->ended_ms = now_ms;
      snprintf(t->error, sizeof t->error, "step '%s' %s%s%.400s", name, status,
               error && *error ? ": " : "", error ? error : "");
    }
  }
  return 0;
}

/* Withdraws t's open attempt (cancel, timeout of the execution). */
static int abandon(k_xec_t *x, k_xexe_t *ex, size_t i, const char *status, const char *why,
                   int64_t now_ms, keel_err_t *e) {
  k_xtarget_t *t = &ex->t[i];
  int rc;
  if (t->open == O_RUNNING && t->run_id[0] &&
      (rc = k_exec_run_withdraw(x->d.store, x->d.fleet, t->run_id, why, now_ms, NULL, e)))
    return rc;
  if (t->open != O_NONE &&
      (rc = k_xs_step_close(x, ex, i, status, NULL, "", "", 0, now_ms, why, e)))
    return rc;
  t->open = O_NONE;
  t->run_id[0] = '\0';
  if (t->st == T_PENDING || t->st == T_RUNNING) {
    t->st = T_CANCELLED;
    t->ended_ms = now_ms;
    snprintf(t->error, sizeof t->error, "%.500s", why);
  }
  return k_xs_update_target(x, ex, i, e);
}

/* The one place an execution's events are built, inside the unit of the
 * transition (docs/events.md): subject the execution's id, path its
 * runbook's, cause the execution's own (what started it: loop guards),
 * data {id, runbook, status, owner, cause, targets: [{agent_id, hostname,
 * status}] (the first XEC_EVENT_TARGETS), targets_total, target_counts
 * {status: n}, targets_truncated} plus extra's members
 * (approval.requested: the step). */
#define XEC_EVENT_TARGETS 50

static int xec_event(k_xec_t *x, const k_xexe_t *ex, const char *type, json_t *extra,
                     keel_err_t *e) {
  json_t *targets = json_array(), *data = NULL, *counts = NULL;
  char path[192];
  size_t total;
  int rc = 0;

  if (!x->d.events) goto out;
  if (!targets) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < ex->nt; i++)
    if (json_array_append_new(targets, json_pack("{s:s,s:s,s:s}", "agent_id", ex->t[i].agent_id,
                                                 "hostname", ex->t[i].hostname, "status",
                                                 k_tstate_names[ex->t[i].st]))) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto out;
    }
  if ((rc = k_xs_skipped_targets(x, ex->id, targets, e))) goto out;
  /* Every target is counted, the first XEC_EVENT_TARGETS are listed: an
   * event's data is bounded (K_EVENT_DATA_MAX) whatever the fleet's size. */
  if (!(counts = json_object())) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  total = json_array_size(targets);
  for (size_t i = 0; i < total; i++) {
    const char *st = keel_json_str(json_array_get(targets, i), "status");
    json_object_set_new(counts, st ? st : "?",
                        json_integer(json_integer_value(json_object_get(counts, st ? st : "?")) + 1));
  }
  while (json_array_size(targets) > XEC_EVENT_TARGETS)
    json_array_remove(targets, json_array_size(targets) - 1);
  data = json_pack("{s:s,s:s,s:s,s:s,s:s,s:O,s:I,s:O,s:b}", "id", ex->id, "runbook", ex->runbook,
                   "status", k_xstate_names[ex->st], "owner", ex->requested_by, "cause", ex->cause,
                   "targets", targets, "targets_total", (json_int_t)total, "target_counts",
                   counts, "targets_truncated", total > XEC_EVENT_TARGETS);
  if (!data || (extra && json_object_update(data, extra))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  k_runbook_path(ex->doc, path, sizeof path);
  rc = k_event_emit_new(x->d.events, type, ex->id, path, ex->cause, data, e);
  data = NULL; /* taken */
out:
  json_decref(targets);
  json_decref(counts);
  json_decref(data);
  json_decref(extra);
  return rc;
}

/* Ends the execution in a final state: open steps are abandoned. */
static int finish(k_xec_t *x, k_xexe_t *ex, k_xstate_t st, const char *step_status,
                  int64_t now_ms, keel_err_t *e) {
  int rc;
  for (size_t i = 0; i < ex->nt; i++)
    if ((ex->t[i].open != O_NONE || ex->t[i].st == T_PENDING || ex->t[i].st == T_RUNNING) &&
        (rc = abandon(x, ex, i, step_status, ex->reason, now_ms, e)))
      return rc;
  ex->st = st;
  ex->ended_ms = now_ms;
  ex->approval_step = -1;
  ex->pause_until_ms = 0;
  return xec_event(x, ex, "execution.finished", json_pack("{s:s}", "reason", ex->reason), e);
}

/* Starts t's next step; server-side steps finish at once, so this loops
 * until t waits on something or is done. */
static int advance(k_xec_t *x, k_xexe_t *ex, size_t i, int64_t now_ms, keel_err_t *e) {
  k_xtarget_t *t = &ex->t[i];
  int rc;

  while (t->st == T_RUNNING && t->open == O_NONE) {
    const json_t *st;
    const char *kind;
    if ((size_t)t->step >= ex->nsteps) {
      t->st = T_SUCCEEDED;
      t->ended_ms = now_ms;
      break;
    }
    st = step_at(ex, t->step);
    kind = step_kind(st);
    t->seq++;
    if (!strcmp(kind, "approval")) {
      if (ex->approved[t->step]) {
        if ((rc = k_xs_step_open(x, ex, i, "running", now_ms, e)) ||
            (rc = close_step(x, ex, i, "succeeded", NULL, "approved", now_ms, e)))
          return rc;
        continue;
      }
      if (ex->approval_step < 0) { /* the first target here opens the gate */
        const json_t *ap = json_object_get(st, "approval");
        json_t *msg = NULL;
        keel_err_t re = {0};
        ex->approval_step = t->step;
        ex->approval_deadline_ms = now_ms + json_integer_value(json_object_get(ap, "timeout_ms"));
        free(ex->approval_message);
        ex->approval_message = NULL;
        if (keel_json_str(ap, "message")) {
          if (render(ex, NULL, keel_json_str(ap, "message"), KEEL_TMPL_RAW, &msg, &re))
            ex->approval_message = strdup(keel_json_str(ap, "message"));
          else ex->approval_message = strdup(json_string_value(msg));
          json_decref(msg);
        }
        if ((rc = xec_event(x, ex, "approval.requested",
                            json_pack("{s:s,s:s?,s:O}", "step", keel_json_str(st, "name"),
                                      "message", ex->approval_message, "approvers",
                                      json_object_get(ap, "approvers")),
                            e)))
          return rc;
      }
      t->open = O_WAITING;
      if ((rc = k_xs_step_open(x, ex, i, "waiting", now_ms, e))) return rc;
      break;
    }
    if (!strcmp(kind, "sleep_ms")) {
      t->open = O_RUNNING;
      t->deadline_ms = now_ms + json_integer_value(json_object_get(st, "sleep_ms"));
      if ((rc = k_xs_step_open(x, ex, i, "running", now_ms, e))) return rc;
      break;
    }
    if (!strcmp(kind, "assert")) {
      char why[600];
      int ok = eval_assert(ex, t, json_object_get(st, "assert"), why, sizeof why);
      if ((rc = k_xs_step_open(x, ex, i, "running", now_ms, e)) ||
          (rc = close_step(x, ex, i, ok ? "succeeded" : "failed", NULL, why, now_ms, e)))
        return rc;
      continue;
    }
    /* command, script, http: a run on the target's agent */
    {
      k_agent_t *a = k_fleet_find(x->d.fleet, t->agent_id);
      json_t *spec = NULL;
      keel_err_t re = {0};
      /* An offline agent gets the run when it is back (after a keeld
       * restart every agent is offline until it polls again); the
       * deadline below bounds the wait. */
      const char *why = !a ? "the agent is retired" : NULL;
      if (!why && (rc = k_xec_step_spec(ex, t, st, &spec, &re))) {
        if (rc == KEEL_ENOMEM) return keel_err_set(e, rc, "%s", re.msg);
        why = re.msg;
      }
      if (why) {
        if ((rc = k_xs_step_open(x, ex, i, "running", now_ms, e)) ||
            (rc = close_step(x, ex, i, "failed", NULL, why, now_ms, e)))
          return rc;
        continue;
      }
      rc = k_exec_run_add(x->d.store, x->d.key, ex->id, a, spec, now_ms, t->run_id, e);
      json_decref(spec);
      if (rc) return rc;
      t->open = O_RUNNING;
      t->deadline_ms = now_ms + json_integer_value(json_object_get(st, "timeout_ms")) +
                       K_XEC_RESULT_GRACE_MS;
      if ((rc = k_xs_step_open(x, ex, i, "running", now_ms, e))) return rc;
      break;
    }
  }
  return k_xs_update_target(x, ex, i, e);
}

/* Phase 2 for one target. */
static int collect(k_xec_t *x, k_xexe_t *ex, size_t i, int64_t now_ms, keel_err_t *e) {
  k_xtarget_t *t = &ex->t[i];
  const json_t *st = step_at(ex, t->step);
  const char *kind = step_kind(st);
  json_t *res = NULL;
  int rc = 0;

  if (t->open == O_WAITING) {
    if (!ex->approved[t->step]) return 0;
    return close_step(x, ex, i, "succeeded", NULL, "approved", now_ms, e);
  }
  if (t->open != O_RUNNING) return 0;
  if (!strcmp(kind, "sleep_ms")) {
    if (now_ms < t->deadline_ms) return 0;
    return close_step(x, ex, i, "succeeded", NULL, "", now_ms, e);
  }
  if (t->result_ready || t->interrupted) {
    if ((rc = k_exec_run_result(x->d.store, t->run_id, K_XEC_OUTPUT_CAP, &res, e))) return rc;
  }
  if (res) {
    const char *s = keel_json_str(res, "status");
    const json_t *xc = json_object_get(res, "exit_code");
    const char *status = "failed";
    char why[600] = "";
    if (!strcmp(s, "exited") && json_integer_value(xc) == 0) status = "succeeded";
    else if (!strcmp(s, "timeout")) status = "timed_out";
    else if (!strcmp(s, "interrupted")) status = "interrupted";
    if (strcmp(status, "succeeded")) {
      if (!strcmp(s, "exited"))
        snprintf(why, sizeof why, "exit code %" JSON_INTEGER_FORMAT, json_integer_value(xc));
      else
        snprintf(why, sizeof why, "%s%s%.500s", s, *keel_json_str(res, "error") ? ": " : "",
                 keel_json_str(res, "error"));
    }
    rc = close_step(x, ex, i, status, res, why, now_ms, e);
    json_decref(res);
    return rc;
  }
  if (t->interrupted) {
    if ((rc = k_exec_run_withdraw(x->d.store, x->d.fleet, t->run_id,
                                  "keeld restarted while the step ran", now_ms, NULL, e)))
      return rc;
    return close_step(x, ex, i, "interrupted", NULL, "keeld restarted while the step ran", now_ms, e);
  }
  t->result_ready = 0;
  if (now_ms >= t->deadline_ms) {
    if ((rc = k_exec_run_withdraw(x->d.store, x->d.fleet, t->run_id, "no result in time", now_ms,
                                  NULL, e)))
      return rc;
    return close_step(x, ex, i, "timed_out", NULL,
                      "no result from the agent within the step's timeout (agent lost?)", now_ms, e);
  }
  return 0;
}

static int64_t earliest(int64_t a, int64_t b) { return !a ? b : !b ? a : a < b ? a : b; }

/* The next time something in ex is due (0: none). */
static int64_t due_at(const k_xexe_t *ex) {
  int64_t d = ex->deadline_ms;
  if (k_xstate_final(ex->st)) return 0;
  if (ex->approval_step >= 0) d = earliest(d, ex->approval_deadline_ms);
  if (ex->st == X_PAUSED) d = earliest(d, ex->pause_until_ms);
  for (size_t i = 0; i < ex->nt; i++)
    if (ex->t[i].open == O_RUNNING) d = earliest(d, ex->t[i].deadline_ms);
  return d;
}

/* The batch of the last target started (0 when none). */
static size_t last_batch(const k_xexe_t *ex) {
  size_t b = 0;
  for (size_t i = 0; i < ex->nt; i++)
    if (ex->t[i].st != T_PENDING) b = ex->t[i].batch;
  return b;
}

static int tick_one(k_xec_t *x, k_xexe_t *ex, int64_t now_ms, keel_err_t *e) {
  k_rate_state_t rs = {0, 0, 0, ex->resumed_after};
  int rc;

  if (ex->st == X_PENDING) {
    ex->st = X_RUNNING;
    ex->started_ms = now_ms;
    if ((rc = xec_event(x, ex, "execution.started", NULL, e))) return rc;
  }
  /* 1. timers */
  if (ex->deadline_ms && now_ms >= ex->deadline_ms) {
    set_reason(ex, "the execution ran past its timeout");
    return finish(x, ex, X_TIMED_OUT, "cancelled", now_ms, e);
  }
  if (ex->approval_step >= 0 && now_ms >= ex->approval_deadline_ms) {
    set_reason(ex, "approval '%s' timed out", keel_json_str(step_at(ex, ex->approval_step), "name"));
    return finish(x, ex, X_CANCELLED, "cancelled", now_ms, e);
  }
  if (ex->st == X_PAUSED && ex->pause_until_ms && now_ms >= ex->pause_until_ms) {
    ex->st = X_RUNNING;
    ex->pause_until_ms = 0;
    rs.resumed_after = ex->resumed_after = last_batch(ex) + 1;
    ex->reason[0] = '\0';
  }
  /* 2-3. collect and advance */
  for (size_t i = 0; i < ex->nt; i++) {
    if (ex->t[i].st != T_RUNNING) continue;
    if ((rc = collect(x, ex, i, now_ms, e)) || (rc = advance(x, ex, i, now_ms, e))) return rc;
  }
  /* 4. start */
  for (;;) {
    k_rate_next_t next;
    rs.started = rs.finished = rs.failed = 0;
    for (size_t i = 0; i < ex->nt; i++) {
      k_tstate_t s = ex->t[i].st;
      rs.started += s != T_PENDING;
      rs.finished += s == T_SUCCEEDED || s == T_FAILED || s == T_CANCELLED;
      rs.failed += s == T_FAILED;
    }
    next = k_rate_next(&ex->plan, &rs);
    if (next == K_RATE_START && ex->st != X_PAUSED) {
      k_xtarget_t *t = &ex->t[rs.started];
      t->st = T_RUNNING;
      t->started_ms = now_ms;
      if ((rc = advance(x, ex, rs.started, now_ms, e))) return rc;
      continue;
    }
    if (next == K_RATE_PAUSE && ex->st != X_PAUSED) {
      size_t b = k_rate_batch_of(&ex->plan, rs.started - 1);
      ex->st = X_PAUSED;
      if (ex->plan.pause == K_PAUSE_FOR) {
        char ts[KEEL_TIME_STRLEN];
        ex->pause_until_ms = now_ms + ex->plan.pause_ms;
        keel_time_format(ts, ex->pause_until_ms);
        set_reason(ex, "batch %zu of %zu done; the next starts at %s", b + 1, ex->plan.nbatches, ts);
      } else {
        set_reason(ex, "batch %zu of %zu done; waiting for `keel execution resume %s`", b + 1,
                   ex->plan.nbatches, ex->id);
      }
    } else if (next == K_RATE_STOP) {
      size_t nfail = rs.failed;
      set_reason(ex, "%zu of %zu targets failed, more than max_errors (%zu): stopped", nfail,
                 ex->nt, ex->plan.max_errors);
      return finish(x, ex, X_FAILED, "cancelled", now_ms, e);
    } else if (next == K_RATE_DONE) {
      if (!ex->nt) {
        set_reason(ex, "no target was online at start");
        return finish(x, ex, X_FAILED, "cancelled", now_ms, e);
      }
      if (rs.failed) {
        set_reason(ex, "%zu of %zu targets failed", rs.failed, ex->nt);
        return finish(x, ex, X_FAILED, "cancelled", now_ms, e);
      }
      ex->reason[0] = '\0';
      return finish(x, ex, X_SUCCEEDED, "cancelled", now_ms, e);
    }
    break;
  }
  if (ex->st != X_PAUSED) ex->st = ex->approval_step >= 0 ? X_WAITING : X_RUNNING;
  return 0;
}

int64_t k_xec_tick(k_xec_t *x, int64_t now_ms, int *moved) {
  int64_t next = 0;
  k_xexe_t **pp = &x->head;
  *moved = 0;
  while (*pp) {
    k_xexe_t *ex = *pp;
    int64_t due = due_at(ex);
    if (ex->dirty || (due && now_ms >= due)) {
      keel_err_t e = {0};
      int rc;
      ex->dirty = 0;
      *moved = 1;
      if ((rc = k_store_unit_begin(x->d.store, &e)) == 0) {
        rc = tick_one(x, ex, now_ms, &e);
        if (!rc) rc = k_xs_update_execution(x, ex, &e);
        if (k_store_unit_end(x->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
      }
      if (rc) {
        /* memory may be ahead of the store now: take the store's word */
        keel_log(x->d.log, KEEL_LOG_ERROR, "execution %s: %s (reloading)", ex->id, e.msg);
        if (k_xec_reload(x, &e)) keel_log(x->d.log, KEEL_LOG_ERROR, "executions: reload: %s", e.msg);
        return 1000;
      }
      due = due_at(ex);
    }
    if (k_xstate_final(ex->st)) {
      *pp = ex->next;
      k_xexe_free(ex);
      continue;
    }
    next = earliest(next, due);
    pp = &ex->next;
  }
  if (!next) return -1;
  return next > now_ms ? next - now_ms : 0;
}

/* ---- requests ------------------------------------------------------------------ */

int k_xec_decide(k_xec_t *x, const char *id, const char *user, const json_t *teams, int approve,
                 const char *comment, int64_t now_ms, json_t **out, keel_buf_t *detail,
                 keel_err_t *e) {
  k_xexe_t *ex = k_xec_find(x, id);
  const json_t *ap, *st;
  size_t i;
  json_t *who;
  int listed = 0, n = 0, mine = 0, rc;
  char me[96];

  *out = NULL;
  if (!ex || ex->approval_step < 0)
    return keel_err_set(e, KEEL_ECONFLICT, "execution %s is not waiting for an approval%s", id,
                        ex ? "" : " (it has finished)");
  st = step_at(ex, ex->approval_step);
  ap = json_object_get(st, "approval");
  if (!strcmp(ex->requested_by, user))
    return keel_err_set(e, KEEL_EPERM, "%s requested this execution and cannot approve or reject it", user);
  snprintf(me, sizeof me, "user:%s", user);
  json_array_foreach(json_object_get(ap, "approvers"), i, who) {
    const char *w = json_string_value(who);
    size_t j;
    json_t *tm;
    if (!w) continue;
    if (!strcmp(w, me)) listed = 1;
    json_array_foreach((json_t *)teams, j, tm) {
      char tn[96];
      snprintf(tn, sizeof tn, "team:%s", keel_json_str(tm, "name"));
      if (!strcmp(w, tn)) listed = 1;
    }
  }
  if (!listed)
    return keel_err_set(e, KEEL_EPERM, "%s is not an approver of step '%s'", user, keel_json_str(st, "name"));
  if ((rc = k_xs_decisions(x, id, ex->approval_step, user, &n, &mine, e))) return rc;
  if (mine) return keel_err_set(e, KEEL_ECONFLICT, "%s already decided on step '%s'", user, keel_json_str(st, "name"));
  if ((rc = k_xs_decision(x, id, ex->approval_step, user, approve, comment, now_ms, e))) return rc;
  keel_buf_reset(detail);
  keel_buf_printf(detail, "execution %s step %s: %s by %s%s%.300s", id, keel_json_str(st, "name"),
                  approve ? "approved" : "rejected", user, comment && *comment ? ": " : "",
                  comment ? comment : "");
  if (!approve) {
    set_reason(ex, "approval '%s' rejected by %s%s%.300s", keel_json_str(st, "name"), user,
               comment && *comment ? ": " : "", comment ? comment : "");
    if ((rc = finish(x, ex, X_CANCELLED, "cancelled", now_ms, e))) return rc;
  } else if (n + 1 >= json_integer_value(json_object_get(ap, "min_approvals"))) {
    ex->approved[ex->approval_step] = 1;
    ex->approval_step = -1;
    ex->dirty = 1;
    if (ex->st == X_WAITING) ex->st = X_RUNNING;
  }
  if ((rc = k_xs_update_execution(x, ex, e))) return rc;
  return k_xec_get(x, id, 0, out, e);
}

int k_xec_resume(k_xec_t *x, const char *id, int64_t now_ms, json_t **out, keel_buf_t *detail,
                 keel_err_t *e) {
  k_xexe_t *ex = k_xec_find(x, id);
  size_t last;
  int rc;
  (void)now_ms;
  *out = NULL;
  if (!ex || ex->st != X_PAUSED)
    return keel_err_set(e, KEEL_ECONFLICT, "execution %s is not paused%s", id,
                        ex ? "" : " (it has finished)");
  last = last_batch(ex);
  ex->resumed_after = last + 1;
  ex->pause_until_ms = 0;
  ex->st = ex->approval_step >= 0 ? X_WAITING : X_RUNNING;
  ex->reason[0] = '\0';
  ex->dirty = 1;
  keel_buf_reset(detail);
  keel_buf_printf(detail, "execution %s resumed after batch %zu", id, last + 1);
  if ((rc = k_xs_update_execution(x, ex, e))) return rc;
  return k_xec_get(x, id, 0, out, e);
}

int k_xec_cancel(k_xec_t *x, const char *id, const char *by, int64_t now_ms, json_t **out,
                 keel_buf_t *detail, keel_err_t *e) {
  k_xexe_t *ex = k_xec_find(x, id);
  int rc;
  *out = NULL;
  if (!ex) {
    json_t *cur = NULL;
    if ((rc = k_xec_get(x, id, 0, &cur, e))) return rc;
    json_decref(cur);
    return keel_err_set(e, KEEL_ECONFLICT, "execution %s has already finished", id);
  }
  set_reason(ex, "cancelled by %s", by);
  if ((rc = finish(x, ex, X_CANCELLED, "cancelled", now_ms, e)) ||
      (rc = k_xs_update_execution(x, ex, e)))
    return rc;
  keel_buf_reset(detail);
  keel_buf_printf(detail, "execution %s cancelled", id);
  return k_xec_get(x, id, 0, out, e);
}

/* ---- creating ------------------------------------------------------------------- */

int k_xec_render_targets(const json_t *doc, const json_t *params, const char *id, json_t **text,
                         keel_err_t *e) {
  k_xexe_t ex;
  memset(&ex, 0, sizeof ex);
  snprintf(ex.id, sizeof ex.id, "%s", id);
  ex.doc = (json_t *)doc;
  ex.params = (json_t *)params;
  return render(&ex, NULL, keel_json_str(doc, "targets") ? keel_json_str(doc, "targets") : "", KEEL_TMPL_RAW, text, e);
}

/* The execution's own document: the runbook's, with the origin's gate (if
 * any) as a first approval step. */
static json_t *exe_doc(const json_t *doc, const json_t *gate) {
  json_t *d = json_deep_copy(doc), *st;
  if (!d || !gate) return d;
  st = json_pack("{s:s,s:n,s:{s:s},s:O}", "name", K_XEC_GATE_STEP, "timeout_ms", "on_failure",
                 "action", "abort", "approval", gate);
  if (!st || json_array_insert_new(json_object_get(d, "steps"), 0, st)) {
    json_decref(d);
    return NULL;
  }
  return d;
}

int k_xec_create(k_xec_t *x, const char *id, const json_t *rb, const json_t *params,
                 const json_t *targets, const k_xec_origin_t *origin, int64_t now_ms,
                 json_t **out, keel_buf_t *detail, keel_err_t *e) {
  const json_t *doc = json_object_get(rb, "document");
  const char *retry_of = origin->retry_of;
  k_xexe_t *ex = calloc(1, sizeof *ex);
  size_t i, n = 0, nskip = 0;
  json_t *tg;
  int rc;

  *out = NULL;
  if (!ex) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  snprintf(ex->id, sizeof ex->id, "%s", id);
  snprintf(ex->runbook, sizeof ex->runbook, "%s", keel_json_str(rb, "name"));
  ex->version = json_integer_value(json_object_get(rb, "version"));
  ex->doc = exe_doc(doc, origin->gate);
  doc = ex->doc;
  ex->params = json_deep_copy(params);
  snprintf(ex->requested_by, sizeof ex->requested_by, "%s", origin->requested_by);
  ex->by_schedule = origin->by_schedule;
  snprintf(ex->cause, sizeof ex->cause, "%s", origin->cause ? origin->cause : "");
  ex->st = X_PENDING;
  ex->approval_step = -1;
  ex->created_ms = now_ms;
  ex->nsteps = json_array_size(json_object_get(doc, "steps"));
  ex->approved = calloc(ex->nsteps + 1, 1);
  json_array_foreach(targets, i, tg) n += json_is_true(json_object_get(tg, "online"));
  ex->t = calloc(n + 1, sizeof *ex->t);
  if (!ex->doc || !ex->params || !ex->approved || !ex->t) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if (json_is_integer(json_object_get(doc, "timeout_ms")))
    ex->deadline_ms = now_ms + json_integer_value(json_object_get(doc, "timeout_ms"));
  if ((rc = k_rate_plan(json_object_get(doc, "rate"), n, &ex->plan, e))) goto out;
  if ((rc = k_xs_insert_execution(x, ex, retry_of, e))) goto out;
  json_array_foreach(targets, i, tg) {
    int online = json_is_true(json_object_get(tg, "online"));
    if (online) {
      k_xtarget_t *t = &ex->t[ex->nt];
      snprintf(t->agent_id, sizeof t->agent_id, "%s", keel_json_str(tg, "agent_id"));
      snprintf(t->hostname, sizeof t->hostname, "%s", keel_json_str(tg, "hostname"));
      t->tags = json_deep_copy(json_object_get(tg, "tags"));
      t->outputs = json_object();
      t->batch = k_rate_batch_of(&ex->plan, ex->nt);
      if (!t->tags || !t->outputs) {
        rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
        goto out;
      }
      rc = k_xs_insert_target(x, ex->id, ex->nt, t->agent_id, t->hostname, t->tags, t->batch,
                              "pending", "", e);
      ex->nt++;
    } else {
      rc = k_xs_insert_target(x, ex->id, n + nskip, keel_json_str(tg, "agent_id"),
                              keel_json_str(tg, "hostname"), json_object_get(tg, "tags"), 0,
                              "skipped", "offline at start", e);
      nskip++;
    }
    if (rc) goto out;
  }
  keel_buf_reset(detail);
  keel_buf_printf(detail, "execution %s of runbook %s (version %lld): %zu targets, %zu skipped (offline)%s%s",
                  ex->id, ex->runbook, (long long)ex->version, n, nskip,
                  retry_of ? "; retry of " : "", retry_of ? retry_of : "");
  if (ex->cause[0]) keel_buf_printf(detail, "; cause %s", ex->cause);
  if (origin->gate) keel_buf_printf(detail, "; waits for approval before its first step");
  {
    char *ptext = keel_json_canonical(params);
    if (ptext) keel_buf_printf(detail, "; params %.4000s", ptext);
    free(ptext);
  }
  ex->dirty = 1;
  ex->next = x->head;
  x->head = ex;
  ex = NULL;
  /* the caller's unit is still open: the row reads back as written */
  rc = k_xec_get(x, id, 0, out, e);
out:
  k_xexe_free(ex);
  return rc;
}
