/* automation.h — the automation engine (docs/automation.md): rules that
 * react to events by starting a runbook, and the guards that keep them
 * safe.
 *
 * For each event (k_events_subscribe, keeld's `events` phase) and each
 * enabled rule whose `on` matches it (type, selector over data.labels,
 * conditions), k_auto_judge applies the guards in this order and stops
 * at the first that holds:
 *   1. kill switch   — automation is switched off globally
 *   2. maintenance   — an active maintenance window matches data.labels
 *   3. loop          — the event was caused by this rule: its cause is
 *                      "automation/RULE", or an agent reported it from a
 *                      host while an execution of this rule ran there
 *   (the parameters are rendered from the event here: a failure is an
 *    outcome `failed`)
 *   4. cooldown      — this rule ran for the same target within cooldown
 *   5. rate limit    — this rule ran max_runs_per_hour times in the last hour
 *   6. dry run       — mode dry-run: record what would have run
 *   7. start         — run the runbook as the rule's owner
 * The caller (api_automation.c) does what the verdict says: it starts
 * runbooks through k_runbook_start_as (so every start is judged as the
 * owner and audited), and records each outcome with k_auto_record in the
 * unit that holds it, then k_auto_note once that unit is kept.
 *
 * The target of a run (what cooldown is per): the rendered parameters as
 * canonical JSON; for a rule without parameters, data.labels.agent_id, or
 * else the event's subject.
 *
 * The engine owns the tables automation_rules, automation_runs and
 * automation_switch, and emits automation.triggered / .skipped / .dry_run.
 * The store is the truth: memory (rules, the switch, each rule's recent
 * runs and running executions) is rebuilt from it at open and by
 * k_auto_reload (after a failed batch).  Loop thread only.  JSON results
 * are new references the caller owns.
 */
#ifndef KEELD_AUTOMATION_H
#define KEELD_AUTOMATION_H

#include <jansson.h>
#include <stdint.h>

#include "event/event.h"
#include "keel/buf.h"
#include "keel/log.h"
#include "store/store.h"

#define K_AUTO_LOOP_GRACE_MS 5000 /* agent events this long after an execution ended still count as its own */
#define K_AUTO_RUNS_KEEP_MS (30LL * 86400000) /* automation_runs rows are kept this long */

typedef struct k_auto k_auto_t;

/* Borrowed; MUST outlive the engine. */
typedef struct k_auto_deps {
  k_store_t *store;
  k_events_t *events;
  const keel_log_t *log;
} k_auto_deps_t;

int k_auto_open(const k_auto_deps_t *d, int64_t now_ms, k_auto_t **out, keel_err_t *e);
void k_auto_close(k_auto_t *a);
/* Drops memory and loads again from the store (after a failed batch). */
int k_auto_reload(k_auto_t *a, int64_t now_ms, keel_err_t *e);

/* ---- rules (writes inside the caller's unit) ---- */

/* Reads the rules again when an apply or delete changed them (from the
 * store, so a change whose unit was rolled back never takes effect).
 * Call before k_auto_judge. */
int k_auto_refresh(k_auto_t *a, keel_err_t *e);

/* Stores a normalized rule (automation/doc.h) owned by user unless
 * dry_run; report as k_runbook_apply's (kind "automation_rule").  The
 * same document applied again by the same user changes nothing; applied
 * by another user it changes the owner (field "user"). */
int k_auto_apply(k_auto_t *a, const json_t *rule, const char *user, int dry_run, int64_t now_ms,
                 json_t **report, keel_buf_t *detail, keel_err_t *e);
/* {"name", "kind": "automation_rule", "application", "team", "owner" (user),
 * "enabled", "mode", "on", "version", "created_at", "updated_at",
 * "document"}; KEEL_ENOENT when unknown. */
int k_auto_rule_get(k_auto_t *a, const char *name, json_t **out, keel_err_t *e);
/* Rules by name after `after` (without "document"). */
int k_auto_rule_list(k_auto_t *a, const char *after, int limit, json_t **items, char **next,
                     keel_err_t *e);
int k_auto_rule_delete(k_auto_t *a, const char *name, keel_err_t *e);

/* ---- kill switch ---- */

/* Sets the switch (caller's unit): enabled, with a reason (required to
 * disable), by user.  *out as k_auto_switch_get. */
int k_auto_switch_set(k_auto_t *a, int enabled, const char *reason, const char *by,
                      int64_t now_ms, json_t **out, keel_buf_t *detail, keel_err_t *e);
/* {"enabled", "reason", "by", "at": time|null} */
json_t *k_auto_switch_get(const k_auto_t *a);

/* ---- runs ---- */

/* Newest first, optionally of one rule: [{"id", "rule", "at", "event":
 * {"id", "type", "subject"}, "target", "outcome", "guard", "reason",
 * "params", "execution_id", "execution_state", "ended_at", "path"}]. */
int k_auto_run_list(k_auto_t *a, const char *rule, const char *cursor, int limit, json_t **items,
                    char **next, keel_err_t *e);
/* Deletes rows older than K_AUTO_RUNS_KEEP_MS (in a unit of its own). */
int k_auto_prune(k_auto_t *a, int64_t now_ms, keel_err_t *e);

/* ---- reacting to events ---- */

/* The event as rules see it (automation/cond.h): a new object. */
json_t *k_auto_event_view(const k_event_t *ev);

/* The queue of events waiting to be judged.  keeld judges a bounded
 * number of them per loop turn, so a storm of events does not hold the
 * loop (and every other request) for its whole length.
 * k_auto_queue keeps a copy of ev when some enabled rule's type matches
 * it (returns 1), else ignores it (0); KEEL_ENOMEM is logged and the event
 * dropped.  k_auto_next gives the oldest (ev's strings and *view valid
 * until k_auto_pop); 0 when the queue is empty. */
int k_auto_queue(k_auto_t *a, const k_event_t *ev);
int k_auto_next(k_auto_t *a, k_event_t *ev, const json_t **view);
void k_auto_pop(k_auto_t *a);
size_t k_auto_queued(const k_auto_t *a);

/* What keeld's /metrics says of the engine: outcomes kept since open
 * (k_auto_note) as their automation.* event names them — triggered,
 * dry_run, and skipped (skipped, denied, failed) —, the events queued,
 * and the kill switch (1: automation runs). */
typedef struct k_auto_stats {
  uint64_t runs, dry_runs, skips;
  size_t queued;
  int enabled;
} k_auto_stats_t;
void k_auto_stats(const k_auto_t *a, k_auto_stats_t *out);

/* Maintenance: 1 (and the window's name) when an active window matches
 * labels. */
typedef int (*k_auto_maint_fn)(void *ud, const json_t *labels, int64_t now_ms, char *window,
                               size_t window_len);

typedef enum { K_AUTO_SKIP = 1, K_AUTO_FAIL, K_AUTO_DRY_RUN, K_AUTO_START } k_auto_act_t;

/* What one rule does about one event.  Strings point into the engine's
 * copy of the rule: valid until the rules change (apply, delete, reload). */
typedef struct k_auto_verdict {
  k_auto_act_t act;
  const char *guard;     /* SKIP: kill_switch | maintenance | loop | cooldown | rate_limit */
  char reason[512];      /* SKIP, FAIL: why */
  json_t *params;        /* rendered (owned: k_auto_verdict_clear), NULL before rendering */
  char target[256];      /* the cooldown key (truncated canonical JSON), "" before rendering */
  const char *rule, *user, *runbook, *path;
  const json_t *doc;     /* the normalized rule */
} k_auto_verdict_t;

void k_auto_verdict_clear(k_auto_verdict_t *v);

/* Number of rules (for k_auto_judge's index). */
size_t k_auto_nrules(const k_auto_t *a);
/* Rule i about ev (view: k_auto_event_view(ev)): 0 when it is disabled, its
 * `on` does not match, or it already recorded an outcome for ev (an event
 * stored before k_auto_open, delivered again after a crash); 1 with *v
 * filled (the guards above; maint may be NULL: no windows). */
int k_auto_judge(k_auto_t *a, size_t i, const k_event_t *ev, const json_t *view, int64_t now_ms,
                 k_auto_maint_fn maint, void *maint_ud, k_auto_verdict_t *v);

/* Records what came of v (caller's unit): a row of automation_runs and
 * the event automation.triggered (outcome triggered), .dry_run (dry_run)
 * or .skipped (skipped, denied, failed).  exe_id and targets
 * ([{"agent_id",..}]) may be NULL. */
int k_auto_record(k_auto_t *a, const k_auto_verdict_t *v, const k_event_t *ev, const char *outcome,
                  const char *exe_id, const json_t *targets, const char *why, int64_t now_ms,
                  keel_err_t *e);
/* After the unit that recorded an outcome was kept (every outcome, so
 * k_auto_stats counts what was kept, not what was tried): a triggered or
 * dry_run one counts for cooldown and the hourly limit, and a started
 * execution (with its target agents) for the loop guard. */
void k_auto_note(k_auto_t *a, const k_auto_verdict_t *v, const char *outcome, const char *exe_id,
                 const json_t *targets, int64_t now_ms);

/* An execution.finished event (any other is ignored): when a rule caused
 * it, its row gets the final state (in a unit of its own) and the loop
 * guard its end. */
void k_auto_on_execution(k_auto_t *a, const k_event_t *ev);
/* Executions the engine still thinks are running (for a check after a
 * restart, whose finished event may have been missed): a new array of
 * ids. */
json_t *k_auto_running(const k_auto_t *a);
/* Marks an execution ended (state, end time), as k_auto_on_execution. */
void k_auto_execution_ended(k_auto_t *a, const char *exe_id, const char *state, int64_t ended_ms);

#endif
