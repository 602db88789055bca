/* xec_store.c — the rows of executions: writing them as the state machine
 * moves, loading the unfinished ones at start, and reading them back for
 * the API. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"
#include "runbook/xec_int.h"

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }
static json_t *time_or_null(const k_val_t *c) {
  return keel_json_time(c->type == K_VAL_INT ? c->i : 0);
}
static json_t *int_or_null(const k_val_t *c) {
  return c->type == K_VAL_INT ? json_integer(c->i) : json_null();
}
static k_val_t ms_or_null(int64_t ms) { return ms ? K_INT(ms) : K_NULLV; }

/* ---- writing --------------------------------------------------------------------- */

static char *approved_text(const k_xexe_t *ex) {
  json_t *a = json_array();
  char *s;
  for (size_t i = 0; a && i < ex->nsteps; i++)
    if (ex->approved[i]) json_array_append_new(a, json_integer((json_int_t)i));
  s = a ? keel_json_canonical(a) : NULL;
  json_decref(a);
  return s;
}

int k_xs_insert_execution(k_xec_t *x, const k_xexe_t *ex, const char *retry_of, keel_err_t *e) {
  char *doc = keel_json_canonical(ex->doc), *params = keel_json_canonical(ex->params);
  int rc;
  if (!doc || !params) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  {
    k_val_t a[] = {K_TEXT(ex->id),       K_TEXT(ex->runbook),      K_INT(ex->version),
                   K_TEXT(doc),          K_TEXT(params),           K_TEXT(ex->requested_by),
                   K_INT(ex->by_schedule), K_TEXT(retry_of),       K_TEXT(k_xstate_names[ex->st]),
                   K_INT(ex->created_ms), ms_or_null(ex->deadline_ms), K_TEXT(ex->cause)};
    rc = k_store_exec(x->d.store,
                      "INSERT INTO executions(id, runbook, runbook_version, document, params,"
                      " requested_by, by_schedule, retry_of, state, created_ms, deadline_ms, cause)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      a, 12, NULL, NULL, e);
  }
out:
  free(doc);
  free(params);
  return rc;
}

int k_xs_update_execution(k_xec_t *x, const k_xexe_t *ex, keel_err_t *e) {
  char *approved = approved_text(ex);
  int rc;
  if (!approved) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  {
    k_val_t a[] = {K_TEXT(k_xstate_names[ex->st]),
                   K_TEXT(ex->reason),
                   K_INT((int64_t)ex->resumed_after),
                   ms_or_null(ex->pause_until_ms),
                   ex->approval_step >= 0 ? K_INT(ex->approval_step) : K_NULLV,
                   ex->approval_step >= 0 ? K_INT(ex->approval_deadline_ms) : K_NULLV,
                   K_TEXT(ex->approval_step >= 0 ? ex->approval_message : NULL),
                   K_TEXT(approved),
                   ms_or_null(ex->started_ms),
                   ms_or_null(ex->ended_ms),
                   K_TEXT(ex->id)};
    rc = k_store_exec(x->d.store,
                      "UPDATE executions SET state = ?, reason = ?, resumed_after = ?,"
                      " pause_until_ms = ?, approval_step = ?, approval_deadline_ms = ?,"
                      " approval_message = ?, approved = ?, started_ms = ?, ended_ms = ?"
                      " WHERE id = ?",
                      a, 11, NULL, NULL, e);
  }
  free(approved);
  return rc;
}

int k_xs_insert_target(k_xec_t *x, const char *exe_id, size_t idx, const char *agent_id,
                       const char *hostname, const json_t *tags, size_t batch, const char *status,
                       const char *error, keel_err_t *e) {
  char *t = keel_json_canonical(tags ? tags : json_object());
  int rc;
  if (!t) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  {
    k_val_t a[] = {K_TEXT(exe_id), K_INT((int64_t)idx), K_TEXT(agent_id), K_TEXT(hostname),
                   K_TEXT(t),      K_INT((int64_t)batch), K_TEXT(status), K_TEXT(error)};
    rc = k_store_exec(x->d.store,
                      "INSERT INTO execution_targets(execution_id, idx, agent_id, hostname, tags,"
                      " batch, status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      a, 8, NULL, NULL, e);
  }
  free(t);
  return rc;
}

int k_xs_update_target(k_xec_t *x, const k_xexe_t *ex, size_t idx, keel_err_t *e) {
  const k_xtarget_t *t = &ex->t[idx];
  k_val_t a[] = {K_TEXT(k_tstate_names[t->st]), K_INT(t->step),     K_INT(t->rolled_back),
                 ms_or_null(t->started_ms),      ms_or_null(t->ended_ms), K_TEXT(t->error),
                 K_TEXT(ex->id),                 K_INT((int64_t)idx)};
  return k_store_exec(x->d.store,
                      "UPDATE execution_targets SET status = ?, step = ?, rolled_back = ?,"
                      " started_ms = ?, ended_ms = ?, error = ? WHERE execution_id = ? AND idx = ?",
                      a, 8, NULL, NULL, e);
}

int k_xs_step_open(k_xec_t *x, const k_xexe_t *ex, size_t idx, const char *status,
                   int64_t now_ms, keel_err_t *e) {
  const k_xtarget_t *t = &ex->t[idx];
  k_val_t a[] = {K_TEXT(ex->id), K_INT((int64_t)idx), K_INT(t->seq), K_INT(t->step),
                 K_TEXT(status), K_TEXT(t->run_id[0] ? t->run_id : NULL), K_INT(now_ms),
                 t->open == O_RUNNING ? K_INT(t->deadline_ms) : K_NULLV};
  return k_store_exec(x->d.store,
                      "INSERT INTO execution_steps(execution_id, target_idx, seq, step, status,"
                      " run_id, started_ms, deadline_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      a, 8, NULL, NULL, e);
}

int k_xs_step_close(k_xec_t *x, const k_xexe_t *ex, size_t idx, const char *status,
                    const json_t *exit_code, const char *out, const char *err, int truncated,
                    int64_t ended_ms, const char *error, keel_err_t *e) {
  const k_xtarget_t *t = &ex->t[idx];
  k_val_t a[] = {K_TEXT(status),
                 json_is_integer(exit_code) ? K_INT(json_integer_value(exit_code)) : K_NULLV,
                 K_TEXT(out),
                 K_TEXT(err),
                 K_INT(truncated),
                 ms_or_null(ended_ms),
                 K_TEXT(error ? error : ""),
                 K_TEXT(ex->id),
                 K_INT((int64_t)idx),
                 K_INT(t->seq)};
  return k_store_exec(x->d.store,
                      "UPDATE execution_steps SET status = ?, exit_code = ?, stdout = ?, stderr = ?,"
                      " truncated = ?, ended_ms = ?, error = ?"
                      " WHERE execution_id = ? AND target_idx = ? AND seq = ?",
                      a, 10, NULL, NULL, e);
}

int k_xs_decision(k_xec_t *x, const char *exe_id, int step, const char *user, int approve,
                  const char *comment, int64_t now_ms, keel_err_t *e) {
  k_val_t a[] = {K_TEXT(exe_id), K_INT(step), K_TEXT(user), K_TEXT(approve ? "approve" : "reject"),
                 K_TEXT(comment ? comment : ""), K_INT(now_ms)};
  return k_store_exec(x->d.store,
                      "INSERT INTO execution_decisions(execution_id, step, user, decision, comment,"
                      " at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                      a, 6, NULL, NULL, e);
}

typedef struct dec {
  const char *user;
  int n, mine;
} dec_t;

static int dec_row(void *ud, const k_val_t *c, int n) {
  dec_t *d = ud;
  if (n < 2) return 0;
  if (!strcmp(txt(&c[1]), "approve")) d->n++;
  if (!strcmp(txt(&c[0]), d->user)) d->mine = 1;
  return 0;
}

int k_xs_decisions(k_xec_t *x, const char *exe_id, int step, const char *user, int *napprove,
                   int *mine, keel_err_t *e) {
  dec_t d = {user, 0, 0};
  k_val_t a[] = {K_TEXT(exe_id), K_INT(step)};
  int rc = k_store_exec(x->d.store,
                        "SELECT user, decision FROM execution_decisions WHERE execution_id = ? AND step = ?",
                        a, 2, dec_row, &d, e);
  *napprove = d.n;
  *mine = d.mine;
  return rc;
}

/* ---- loading ---------------------------------------------------------------------- */

#define EXE_COLS                                                                          \
  "id, runbook, runbook_version, document, params, requested_by, by_schedule, retry_of,"  \
  " state, reason, resumed_after, pause_until_ms, approval_step, approval_deadline_ms,"   \
  " approval_message, approved, created_ms, started_ms, ended_ms, deadline_ms, cause"
#define EXE_NCOLS 21

static k_xstate_t state_of(const char *s) {
  for (int i = 0; i <= X_TIMED_OUT; i++)
    if (!strcmp(k_xstate_names[i], s)) return (k_xstate_t)i;
  return X_FAILED;
}
static k_tstate_t tstate_of(const char *s) {
  for (int i = 0; i <= T_CANCELLED; i++)
    if (!strcmp(k_tstate_names[i], s)) return (k_tstate_t)i;
  return T_FAILED;
}

static int exe_row(void *ud, const k_val_t *c, int n) {
  k_xec_t *x = ud;
  k_xexe_t *ex;
  json_t *approved;
  size_t i;
  json_t *v;
  if (n < EXE_NCOLS) return 0;
  if (!(ex = calloc(1, sizeof *ex))) return KEEL_ENOMEM;
  snprintf(ex->id, sizeof ex->id, "%s", txt(&c[0]));
  snprintf(ex->runbook, sizeof ex->runbook, "%s", txt(&c[1]));
  ex->version = c[2].i;
  ex->doc = json_loads(txt(&c[3]), 0, NULL);
  ex->params = json_loads(txt(&c[4]), 0, NULL);
  snprintf(ex->requested_by, sizeof ex->requested_by, "%s", txt(&c[5]));
  ex->by_schedule = (int)c[6].i;
  ex->st = state_of(txt(&c[8]));
  snprintf(ex->reason, sizeof ex->reason, "%s", txt(&c[9]));
  ex->resumed_after = (size_t)c[10].i;
  ex->pause_until_ms = c[11].type == K_VAL_INT ? c[11].i : 0;
  ex->approval_step = c[12].type == K_VAL_INT ? (int)c[12].i : -1;
  ex->approval_deadline_ms = c[13].type == K_VAL_INT ? c[13].i : 0;
  ex->approval_message = c[14].type == K_VAL_TEXT ? strdup(c[14].s) : NULL;
  ex->created_ms = c[16].i;
  ex->started_ms = c[17].type == K_VAL_INT ? c[17].i : 0;
  ex->ended_ms = c[18].type == K_VAL_INT ? c[18].i : 0;
  ex->deadline_ms = c[19].type == K_VAL_INT ? c[19].i : 0;
  snprintf(ex->cause, sizeof ex->cause, "%s", txt(&c[20]));
  ex->nsteps = json_array_size(json_object_get(ex->doc, "steps"));
  ex->approved = calloc(ex->nsteps + 1, 1);
  ex->dirty = 1;
  ex->next = x->head;
  x->head = ex;
  if (!ex->doc || !ex->params || !ex->approved) return KEEL_ENOMEM;
  approved = json_loads(txt(&c[15]), 0, NULL);
  json_array_foreach(approved, i, v) {
    json_int_t k = json_integer_value(v);
    if (k >= 0 && (size_t)k < ex->nsteps) ex->approved[k] = 1;
  }
  json_decref(approved);
  return 0;
}

typedef struct tload {
  k_xexe_t *ex;
  size_t cap;
} tload_t;

static int target_row(void *ud, const k_val_t *c, int n) {
  tload_t *l = ud;
  k_xexe_t *ex = l->ex;
  k_xtarget_t *t;
  if (n < 11) return 0;
  if (!(t = keel_grow(ex->t, &l->cap, ex->nt, sizeof *t, 16))) return KEEL_ENOMEM;
  ex->t = t;
  t = &ex->t[ex->nt++];
  memset(t, 0, sizeof *t);
  snprintf(t->agent_id, sizeof t->agent_id, "%s", txt(&c[0]));
  snprintf(t->hostname, sizeof t->hostname, "%s", txt(&c[1]));
  t->tags = json_loads(txt(&c[2]), 0, NULL);
  t->outputs = json_object();
  t->batch = (size_t)c[3].i;
  t->st = tstate_of(txt(&c[4]));
  t->step = (int)c[5].i;
  t->rolled_back = (int)c[6].i;
  t->started_ms = c[7].type == K_VAL_INT ? c[7].i : 0;
  t->ended_ms = c[8].type == K_VAL_INT ? c[8].i : 0;
  snprintf(t->error, sizeof t->error, "%s", txt(&c[9]));
  return !t->tags || !t->outputs ? KEEL_ENOMEM : 0;
}

/* Each attempt, in order: outputs of finished steps, and the open one. */
static int step_row(void *ud, const k_val_t *c, int n) {
  k_xexe_t *ex = ud;
  k_xtarget_t *t;
  const json_t *st;
  const char *status;
  json_t *o, *xc;
  if (n < 9 || c[0].i < 0 || (size_t)c[0].i >= ex->nt) return 0;
  t = &ex->t[c[0].i];
  t->seq = (int)c[1].i;
  status = txt(&c[3]);
  st = json_array_get(json_object_get(ex->doc, "steps"), (size_t)c[2].i);
  if (!strcmp(status, "running") || !strcmp(status, "waiting")) {
    t->open = !strcmp(status, "waiting") ? O_WAITING : O_RUNNING;
    snprintf(t->run_id, sizeof t->run_id, "%s", txt(&c[4]));
    t->deadline_ms = c[8].type == K_VAL_INT ? c[8].i : 0;
    t->interrupted = t->run_id[0] != '\0'; /* unless its result is stored (collect) */
    return 0;
  }
  xc = int_or_null(&c[5]);
  o = k_xec_step_outputs(txt(&c[6]), txt(&c[7]), xc);
  json_decref(xc);
  if (!o) return KEEL_ENOMEM;
  json_object_set_new(t->outputs, keel_json_str(st, "name") ? keel_json_str(st, "name") : "_", o);
  return 0;
}

int k_xs_load(k_xec_t *x, keel_err_t *e) {
  int rc = k_store_exec(x->d.store,
                        "SELECT " EXE_COLS " FROM executions WHERE state IN"
                        " ('pending', 'waiting_approval', 'running', 'paused') ORDER BY created_ms DESC",
                        NULL, 0, exe_row, x, e);
  if (rc == KEEL_ENOMEM) return keel_err_set(e, rc, "out of memory");
  if (rc) return rc;
  for (k_xexe_t *ex = x->head; ex; ex = ex->next) {
    tload_t l = {ex, 0};
    k_val_t a[] = {K_TEXT(ex->id)};
    rc = k_store_exec(x->d.store,
                      "SELECT agent_id, hostname, tags, batch, status, step, rolled_back,"
                      " started_ms, ended_ms, error, idx FROM execution_targets"
                      " WHERE execution_id = ? AND status <> 'skipped' ORDER BY idx",
                      a, 1, target_row, &l, e);
    if (!rc)
      rc = k_store_exec(x->d.store,
                        "SELECT target_idx, seq, step, status, run_id, exit_code, stdout, stderr,"
                        " deadline_ms FROM execution_steps WHERE execution_id = ?"
                        " ORDER BY target_idx, seq",
                        a, 1, step_row, ex, e);
    if (rc == KEEL_ENOMEM) return keel_err_set(e, rc, "out of memory");
    if (rc) return rc;
    if ((rc = k_rate_plan(json_object_get(ex->doc, "rate"), ex->nt, &ex->plan, e))) return rc;
  }
  return 0;
}

/* ---- reading for the API ------------------------------------------------------------- */

typedef struct one {
  json_t *out;
  json_t *doc;
} one_t;

static json_t *exe_json(const k_val_t *c, json_t **doc_out) {
  json_t *doc = json_loads(txt(&c[3]), 0, NULL), *params = json_loads(txt(&c[4]), 0, NULL);
  json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:o,s:s,s:b,s:o,s:o,s:o,s:o,s:o}", "id",
                        txt(&c[0]), "kind", "execution", "runbook", txt(&c[1]), "runbook_version",
                        (json_int_t)c[2].i, "state", txt(&c[8]), "reason", txt(&c[9]), "params",
                        params ? params : json_object(), "requested_by", txt(&c[5]),
                        "by_schedule", (int)c[6].i, "retry_of",
                        c[7].type == K_VAL_TEXT ? json_string(c[7].s) : json_null(),
                        "created_at", time_or_null(&c[16]), "started_at", time_or_null(&c[17]),
                        "ended_at", time_or_null(&c[18]), "deadline_at", time_or_null(&c[19]));
  if (o) json_object_set_new(o, "cause", json_string(txt(&c[20])));
  if (o && c[11].type == K_VAL_INT)
    json_object_set_new(o, "paused_until", time_or_null(&c[11]));
  if (o && c[12].type == K_VAL_INT) {
    const json_t *st = json_array_get(json_object_get(doc, "steps"), (size_t)c[12].i);
    const json_t *ap = json_object_get(st, "approval");
    json_object_set_new(o, "approval",
                        json_pack("{s:s,s:o,s:O,s:O,s:o}", "step", keel_json_str(st, "name"),
                                  "message", c[14].type == K_VAL_TEXT ? json_string(c[14].s) : json_null(),
                                  "approvers", json_object_get(ap, "approvers"), "min_approvals",
                                  json_object_get(ap, "min_approvals"), "deadline_at",
                                  time_or_null(&c[13])));
  } else if (o) {
    json_object_set_new(o, "approval", json_null());
  }
  if (o && doc) {
    json_object_set(o, "rate", json_object_get(doc, "rate"));
    json_object_set(o, "owner", json_object_get(doc, "owner"));
  }
  if (doc_out) *doc_out = doc;
  else json_decref(doc);
  return o;
}

static int one_row(void *ud, const k_val_t *c, int n) {
  one_t *o = ud;
  if (n < EXE_NCOLS) return 0;
  o->out = exe_json(c, &o->doc);
  return o->out ? 0 : KEEL_ENOMEM;
}

typedef struct tgt {
  json_t *arr;
  json_t *doc;
  int64_t counts[6];
  int64_t batch_max;
} tgt_t;

static int tgt_row(void *ud, const k_val_t *c, int n) {
  tgt_t *g = ud;
  const json_t *st = json_array_get(json_object_get(g->doc, "steps"), (size_t)c[5].i);
  json_t *o;
  k_tstate_t s;
  if (n < 11) return 0;
  s = tstate_of(txt(&c[4]));
  g->counts[s]++;
  if (c[7].type == K_VAL_INT && s != T_SKIPPED && c[3].i + 1 > g->batch_max) g->batch_max = c[3].i + 1;
  if (!g->arr) return 0;
  o = json_pack("{s:s,s:s,s:I,s:s,s:o,s:b,s:o,s:o,s:s,s:[]}", "agent_id", txt(&c[0]), "hostname",
                txt(&c[1]), "batch", (json_int_t)(c[3].i + 1), "status", txt(&c[4]), "step",
                s == T_RUNNING && st ? json_string(keel_json_str(st, "name")) : json_null(),
                "rolled_back", (int)c[6].i, "started_at", time_or_null(&c[7]), "ended_at",
                time_or_null(&c[8]), "error", txt(&c[9]), "steps");
  if (!o) return KEEL_ENOMEM;
  if (c[7].type == K_VAL_INT && c[8].type == K_VAL_INT)
    json_object_set_new(o, "duration_ms", json_integer(c[8].i - c[7].i));
  return json_array_append_new(g->arr, o) ? KEEL_ENOMEM : 0;
}

static int stp_row(void *ud, const k_val_t *c, int n) {
  tgt_t *g = ud;
  const json_t *st;
  json_t *t, *o;
  if (n < 13) return 0;
  t = json_array_get(g->arr, (size_t)c[0].i);
  if (!t) return 0;
  st = json_array_get(json_object_get(g->doc, "steps"), (size_t)c[2].i);
  o = json_pack("{s:s,s:I,s:s,s:o,s:s,s:s,s:b,s:o,s:o,s:s,s:o}", "name",
                st ? keel_json_str(st, "name") : "?", "attempt", (json_int_t)c[1].i, "status",
                txt(&c[3]), "exit_code", int_or_null(&c[4]), "stdout", txt(&c[5]), "stderr",
                txt(&c[6]), "truncated", (int)c[7].i, "started_at", time_or_null(&c[8]),
                "ended_at", time_or_null(&c[9]), "error", txt(&c[10]), "run_id",
                c[11].type == K_VAL_TEXT ? json_string(c[11].s) : json_null());
  if (!o) return KEEL_ENOMEM;
  if (c[8].type == K_VAL_INT && c[9].type == K_VAL_INT)
    json_object_set_new(o, "duration_ms", json_integer(c[9].i - c[8].i));
  return json_array_append_new(json_object_get(t, "steps"), o) ? KEEL_ENOMEM : 0;
}

static int decision_row(void *ud, const k_val_t *c, int n) {
  tgt_t *g = ud;
  const json_t *st;
  if (n < 5) return 0;
  st = json_array_get(json_object_get(g->doc, "steps"), (size_t)c[0].i);
  return json_array_append_new(g->arr, json_pack("{s:s,s:s,s:s,s:s,s:o}", "step",
                                                 st ? keel_json_str(st, "name") : "?", "user",
                                                 txt(&c[1]), "decision", txt(&c[2]), "comment",
                                                 txt(&c[3]), "at", time_or_null(&c[4])))
             ? KEEL_ENOMEM
             : 0;
}

int k_xec_get(k_xec_t *x, const char *id, int with_targets, json_t **out, keel_err_t *e) {
  k_val_t a[] = {K_TEXT(id)};
  one_t o = {NULL, NULL};
  tgt_t g = {NULL, NULL, {0}, 0};
  json_t *decisions = json_array();
  int rc;

  *out = NULL;
  rc = k_store_exec(x->d.store, "SELECT " EXE_COLS " FROM executions WHERE id = ?", a, 1, one_row,
                    &o, e);
  if (!rc && !o.out) rc = keel_err_set(e, KEEL_ENOENT, "no execution '%.32s'", id);
  if (rc) goto out;
  g.doc = o.doc;
  g.arr = with_targets ? json_array() : NULL;
  if ((rc = k_store_exec(x->d.store,
                         "SELECT agent_id, hostname, tags, batch, status, step, rolled_back,"
                         " started_ms, ended_ms, error, idx FROM execution_targets"
                         " WHERE execution_id = ? ORDER BY idx",
                         a, 1, tgt_row, &g, e)))
    goto out;
  if (with_targets &&
      (rc = k_store_exec(x->d.store,
                         "SELECT target_idx, seq, step, status, exit_code, stdout, stderr, truncated,"
                         " started_ms, ended_ms, error, run_id, deadline_ms FROM execution_steps"
                         " WHERE execution_id = ? ORDER BY target_idx, seq",
                         a, 1, stp_row, &g, e)))
    goto out;
  {
    tgt_t d = {decisions, o.doc, {0}, 0};
    if ((rc = k_store_exec(x->d.store,
                           "SELECT step, user, decision, comment, at_ms FROM execution_decisions"
                           " WHERE execution_id = ? ORDER BY at_ms, user",
                           a, 1, decision_row, &d, e)))
      goto out;
  }
  {
    k_xexe_t *ex = k_xec_find(x, id);
    size_t nb = ex ? ex->plan.nbatches : 0;
    json_object_set_new(o.out, "summary",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "targets",
                                  (json_int_t)(g.counts[0] + g.counts[1] + g.counts[2] + g.counts[3] +
                                               g.counts[4] + g.counts[5]),
                                  "pending", (json_int_t)g.counts[T_PENDING], "running",
                                  (json_int_t)g.counts[T_RUNNING], "succeeded",
                                  (json_int_t)g.counts[T_SUCCEEDED], "failed",
                                  (json_int_t)g.counts[T_FAILED], "skipped",
                                  (json_int_t)g.counts[T_SKIPPED], "cancelled",
                                  (json_int_t)g.counts[T_CANCELLED]));
    json_object_set_new(o.out, "current_batch", json_integer(g.batch_max));
    if (!nb) {
      k_rate_plan_t p;
      keel_err_t pe = {0};
      if (!k_rate_plan(json_object_get(o.doc, "rate"),
                       (size_t)(g.counts[0] + g.counts[1] + g.counts[2] + g.counts[3] + g.counts[5]),
                       &p, &pe))
        nb = p.nbatches;
    }
    json_object_set_new(o.out, "batches", json_integer((json_int_t)nb));
  }
  json_object_set_new(o.out, "decisions", decisions);
  decisions = NULL;
  if (with_targets) {
    json_object_set_new(o.out, "targets", g.arr);
    g.arr = NULL;
  }
  *out = o.out;
  o.out = NULL;
  rc = 0;
out:
  if (rc == KEEL_ENOMEM) keel_err_set(e, rc, "out of memory");
  json_decref(o.out);
  json_decref(o.doc);
  json_decref(g.arr);
  json_decref(decisions);
  return rc;
}

static int doc_row(void *ud, const k_val_t *c, int n) {
  json_t **d = ud;
  if (n < 1) return 0;
  *d = json_loads(txt(&c[0]), 0, NULL);
  return *d ? 0 : KEEL_ENOMEM;
}

int k_xec_document(k_xec_t *x, const char *id, json_t **doc, keel_err_t *e) {
  k_val_t a[] = {K_TEXT(id)};
  int rc;
  *doc = NULL;
  rc = k_store_exec(x->d.store, "SELECT document FROM executions WHERE id = ?", a, 1, doc_row, doc, e);
  if (rc == KEEL_ENOMEM) return keel_err_set(e, rc, "out of memory");
  if (rc) return rc;
  return *doc ? 0 : keel_err_set(e, KEEL_ENOENT, "no execution '%.32s'", id);
}

typedef struct lst {
  json_t *items;
  int limit, n;
  char last[64];
} lst_t;

static int lst_row(void *ud, const k_val_t *c, int n) {
  lst_t *l = ud;
  json_t *o;
  if (n < EXE_NCOLS) return 0;
  if (l->n == l->limit) return 1;
  if (!(o = exe_json(c, NULL)) || json_array_append_new(l->items, o)) return KEEL_ENOMEM;
  snprintf(l->last, sizeof l->last, "%" PRId64 ".%s", c[16].i, txt(&c[0]));
  l->n++;
  return 0;
}

static int count_row(void *ud, const k_val_t *c, int n) {
  json_t *sum = ud;
  if (n < 2) return 0;
  json_object_set_new(sum, txt(&c[0]), json_integer(c[1].i));
  json_object_set_new(sum, "targets",
                      json_integer(json_integer_value(json_object_get(sum, "targets")) + c[1].i));
  return 0;
}

int k_xec_list(k_xec_t *x, const char *runbook, const char *state, const char *cursor, int limit,
               json_t **items, char **next, keel_err_t *e) {
  lst_t l = {json_array(), limit, 0, ""};
  int64_t ms;
  const char *cid;
  int rc;

  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_store_time_cursor(cursor, &ms, &cid, e))) {
    json_decref(l.items);
    return rc;
  }
  {
    k_val_t a[] = {K_INT(ms), K_INT(ms), K_TEXT(cid), K_TEXT(runbook ? runbook : ""),
                   K_TEXT(runbook ? runbook : ""), K_TEXT(state ? state : ""),
                   K_TEXT(state ? state : ""), K_INT(limit + 1)};
    rc = k_store_exec(x->d.store,
                      "SELECT " EXE_COLS " FROM executions"
                      " WHERE (created_ms < ? OR (created_ms = ? AND id < ?))"
                      " AND (? = '' OR runbook = ?) AND (? = '' OR state = ?)"
                      " ORDER BY created_ms DESC, id DESC LIMIT ?",
                      a, 8, lst_row, &l, e);
  }
  if (rc < 0 || rc == KEEL_ENOMEM) {
    json_decref(l.items);
    return rc == KEEL_ENOMEM ? keel_err_set(e, rc, "out of memory") : rc;
  }
  if (rc == 1) *next = strdup(l.last);
  /* each item's target counts, as k_xec_get shows them */
  {
    size_t i;
    json_t *it;
    json_array_foreach(l.items, i, it) {
      k_val_t a[] = {K_TEXT(keel_json_str(it, "id"))};
      json_t *sum = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "targets", 0, "pending", 0,
                              "running", 0, "succeeded", 0, "failed", 0, "skipped", 0,
                              "cancelled", 0);
      if (!sum || (rc = k_store_exec(x->d.store,
                                     "SELECT status, COUNT(*) FROM execution_targets"
                                     " WHERE execution_id = ? GROUP BY status",
                                     a, 1, count_row, sum, e))) {
        json_decref(sum);
        json_decref(l.items);
        free(*next);
        *next = NULL;
        return sum ? rc : keel_err_set(e, KEEL_ENOMEM, "out of memory");
      }
      json_object_set_new(it, "summary", sum);
    }
  }
  *items = l.items;
  return 0;
}

typedef struct rt {
  json_t *ids;
  int failed_only;
} rt_t;

static int rt_row(void *ud, const k_val_t *c, int n) {
  rt_t *r = ud;
  const char *s;
  if (n < 2) return 0;
  s = txt(&c[1]);
  if (r->failed_only && strcmp(s, "failed") && strcmp(s, "cancelled")) return 0;
  return json_array_append_new(r->ids, json_string(txt(&c[0]))) ? KEEL_ENOMEM : 0;
}

static int params_row(void *ud, const k_val_t *c, int n) {
  json_t **p = ud;
  if (n < 2) return 0;
  *p = json_pack("{s:s,s:o}", "runbook", txt(&c[0]), "params", json_loads(txt(&c[1]), 0, NULL));
  return *p ? 0 : KEEL_ENOMEM;
}

int k_xec_retry_targets(k_xec_t *x, const char *id, int failed_only, json_t **agent_ids,
                        json_t **params, char runbook[64], keel_err_t *e) {
  k_val_t a[] = {K_TEXT(id)};
  rt_t r = {json_array(), failed_only};
  json_t *info = NULL;
  int rc;

  *agent_ids = *params = NULL;
  if (!r.ids) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(x->d.store, "SELECT runbook, params FROM executions WHERE id = ?", a, 1,
                    params_row, &info, e);
  if (!rc && !info) rc = keel_err_set(e, KEEL_ENOENT, "no execution '%.32s'", id);
  if (!rc && k_xec_find(x, id))
    rc = keel_err_set(e, KEEL_ECONFLICT, "execution %s has not finished: cancel it first", id);
  if (!rc)
    rc = k_store_exec(x->d.store,
                      "SELECT agent_id, status FROM execution_targets WHERE execution_id = ?"
                      " AND status <> 'skipped' ORDER BY idx",
                      a, 1, rt_row, &r, e);
  if (rc) {
    if (rc == KEEL_ENOMEM) keel_err_set(e, rc, "out of memory");
    json_decref(r.ids);
    json_decref(info);
    return rc;
  }
  snprintf(runbook, 64, "%s", keel_json_str(info, "runbook"));
  *params = json_incref(json_object_get(info, "params"));
  json_decref(info);
  *agent_ids = r.ids;
  return 0;
}

static int skipped_row(void *ud, const k_val_t *c, int n) {
  if (n < 2) return 0;
  return json_array_append_new(ud, json_pack("{s:s,s:s,s:s}", "agent_id", txt(&c[0]), "hostname",
                                             txt(&c[1]), "status", "skipped"))
             ? KEEL_ENOMEM
             : 0;
}

int k_xs_skipped_targets(k_xec_t *x, const char *exe_id, json_t *into, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(exe_id)};
  int rc = k_store_exec(x->d.store,
                        "SELECT agent_id, hostname FROM execution_targets"
                        " WHERE execution_id = ? AND status = 'skipped' ORDER BY idx",
                        args, 1, skipped_row, into, e);
  return rc > 0 ? keel_err_set(e, KEEL_ENOMEM, "out of memory") : rc;
}
