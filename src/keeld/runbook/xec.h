/* xec.h — runbook executions (docs/runbooks.md, "Executions"): running a
 * runbook's steps on its targets with rate control, approvals and pauses,
 * keeping every step's result, surviving restarts; and runbook schedules.
 *
 * Model.  Each target runs the steps in order (target-major, like SSM's
 * rate control): the rate planner (rate.h) decides when the next target
 * starts.  command/script/http steps run on the target's agent as runs of
 * the exec engine (owner = the execution's id); sleep and assert are
 * evaluated here; an approval is one gate per execution that every target
 * waits at until it is decided.
 *
 * The store is the truth; memory holds the executions that are not
 * finished, as a cache of it.  Every change happens in a store unit: in the
 * caller's (create, decide, resume, cancel) or in k_xec_tick's own.  After a
 * failed batch the caller MUST call k_xec_reload.  A step in flight when
 * keeld stopped is `interrupted` at the next start (its run withdrawn) unless
 * its result is already stored; a finished step never runs again.
 *
 * The engine owns the tables executions, execution_targets,
 * execution_steps, execution_decisions, schedules and schedule_events; it
 * reads runbooks (its own engine's) and reaches agents' runs only through
 * exec.h.  Loop thread only.  JSON results are new references the caller
 * owns.
 */
#ifndef KEELD_RUNBOOK_XEC_H
#define KEELD_RUNBOOK_XEC_H

#include <jansson.h>
#include <stdint.h>

#include "exec/exec.h"
#include "fleet/fleet.h"
#include "keel/buf.h"
#include "keel/log.h"
#include "serverkey.h"
#include "store/store.h"

#define K_XEC_OUTPUT_CAP 65536 /* bytes of stdout/stderr kept per step */
#define K_XEC_RESULT_GRACE_MS 60000 /* past a step's timeout before keeld gives up on its agent */

typedef struct k_xec k_xec_t;

/* Borrowed; MUST outlive the engine. */
typedef struct k_xec_deps {
  k_store_t *store;
  k_fleet_t *fleet;
  const k_serverkey_t *key;
  const keel_log_t *log;
  struct k_events *events; /* execution.started/finished, approval.requested; NULL: none */
} k_xec_deps_t;

/* Loads unfinished executions (recovering in-flight steps on the next
 * tick) and the schedules. */
int k_xec_open(const k_xec_deps_t *d, k_xec_t **out, keel_err_t *e);
void k_xec_close(k_xec_t *x);
/* Drops memory and loads again from the store (after a failed batch). */
int k_xec_reload(k_xec_t *x, keel_err_t *e);

/* The targets selector of a normalized runbook doc for an execution id
 * with checked params: *text a new string (KEEL_EINVAL naming the problem). */
int k_xec_render_targets(const json_t *doc, const json_t *params, const char *id, json_t **text,
                         keel_err_t *e);

/* Who or what starts an execution (all borrowed). */
typedef struct k_xec_origin {
  const char *requested_by; /* user name (a schedule's or rule's owner for theirs) */
  int by_schedule;
  const char *retry_of;     /* NULL or the execution retried */
  const char *cause;        /* NULL/"" or what caused it: "automation/RULE"; kept as the
                               execution's `cause` and carried by its events (loop guards) */
  /* NULL, or an approval the whole execution waits at before its first step
   * (an automation rule's require_approval): {"approvers": [..],
   * "min_approvals", "timeout_ms", "message": text|null}.  It is the
   * approval step machinery itself: the execution's document gets a first
   * step K_XEC_GATE_STEP of kind approval, so deciding, timeouts, audit and
   * restarts are those of every approval step. */
  const json_t *gate;
} k_xec_origin_t;

#define K_XEC_GATE_STEP "(approval)" /* no runbook step can have this name */

/* Creates execution id ("exe_" + 16, from keel_random_id) inside the caller's unit.  rb: a runbook as
 * k_runbook_get returns it (borrowed); params: checked by k_runbook_params
 * (borrowed); targets: [{"agent_id","hostname","tags","online": bool}] in
 * start order (borrowed); offline ones are recorded `skipped`.  *out: the
 * execution as k_xec_get shows it (without targets).  detail: audit text. */
int k_xec_create(k_xec_t *x, const char *id, const json_t *rb, const json_t *params,
                 const json_t *targets, const k_xec_origin_t *origin, int64_t now_ms,
                 json_t **out, keel_buf_t *detail, keel_err_t *e);

/* The execution with its targets and steps (with_steps) or its summary.
 * KEEL_ENOENT when unknown. */
int k_xec_get(k_xec_t *x, const char *id, int with_targets, json_t **out, keel_err_t *e);
/* The runbook document an execution ran (for the policy path). */
int k_xec_document(k_xec_t *x, const char *id, json_t **doc, keel_err_t *e);
/* Executions, newest first, optionally of one runbook / in one state. */
int k_xec_list(k_xec_t *x, const char *runbook, const char *state, const char *cursor, int limit,
               json_t **items, char **next, keel_err_t *e);

/* An approval decision (caller's unit) on the open approval of id by user
 * (teams: JSON array of {"name"} as k_org_user_teams gives).  KEEL_EPERM
 * when user is not an approver or requested the execution, KEEL_ECONFLICT
 * when no approval is open or user already decided. */
int k_xec_decide(k_xec_t *x, const char *id, const char *user, const json_t *teams, int approve,
                 const char *comment, int64_t now_ms, json_t **out, keel_buf_t *detail,
                 keel_err_t *e);
/* Ends a pause at a batch boundary (KEEL_ECONFLICT when not paused). */
int k_xec_resume(k_xec_t *x, const char *id, int64_t now_ms, json_t **out, keel_buf_t *detail,
                 keel_err_t *e);
/* Cancels: nothing new starts, runs not yet finished are withdrawn
 * (KEEL_ECONFLICT when already finished). */
int k_xec_cancel(k_xec_t *x, const char *id, const char *by, int64_t now_ms, json_t **out,
                 keel_buf_t *detail, keel_err_t *e);
/* For a retry: the agent ids of id's targets (only the failed, cancelled
 * and interrupted ones with failed_only) as a JSON array, and the params. */
int k_xec_retry_targets(k_xec_t *x, const char *id, int failed_only, json_t **agent_ids,
                        json_t **params, char runbook[64], keel_err_t *e);

/* The exec engine stored a result of run_id owned by execution exe_id
 * (inside the caller's unit): the next tick takes it. */
void k_xec_on_result(k_xec_t *x, const char *exe_id, const char *run_id);

/* Moves every execution that has something to do (results, timers, new
 * starts), each in a store unit of its own; *moved says whether any did.
 * Returns how long the loop may sleep before a timer is due (ms, -1: none). */
int64_t k_xec_tick(k_xec_t *x, int64_t now_ms, int *moved);

/* Unfinished executions by state, from memory (xec_stats.c), for
 * keeld's /metrics; pending ones (not ticked yet) are in none. */
typedef struct k_xec_stats {
  size_t running, waiting_approval, paused;
} k_xec_stats_t;
void k_xec_stats(const k_xec_t *x, k_xec_stats_t *out);

/* ---- schedules ---- */
/* Runbooks changed (apply/delete): schedules are re-read on the next
 * k_xec_due. */
void k_xec_schedules_changed(k_xec_t *x);
/* The schedules due at now_ms, at most one slot each however many were
 * missed: [{"runbook", "slot_ms", "owner", "params", "active": exe id or
 * null (an execution of this schedule still running)}]. */
int k_xec_due(k_xec_t *x, int64_t now_ms, json_t **due, keel_err_t *e);
/* Records what a due slot did (caller's unit): outcome started | skipped |
 * denied | failed, the execution (or NULL) and why. */
int k_xec_schedule_record(k_xec_t *x, const char *runbook, int64_t slot_ms, int64_t now_ms,
                          const char *outcome, const char *execution_id, const char *reason,
                          keel_err_t *e);
/* [{"runbook","cron"|"rate","owner","params","next_at","last_slot_at",
 * "last_execution","last_outcome","skipped"}] */
int k_xec_schedule_list(k_xec_t *x, int64_t now_ms, json_t **items, keel_err_t *e);

#endif
