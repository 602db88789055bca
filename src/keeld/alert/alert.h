/* alert/alert.h — the alert engine (docs/alerts.md): AlertRule documents
 * as applied, their evaluation inside keeld's loop, and the alerts they
 * raise.
 *
 * Rules.  A rule's condition is a PromQL expression (an instant query at
 * the evaluation time; every result series is an alert) or an event
 * condition (alerts made by events of one type, ended by events of
 * another).  Each rule is evaluated on its own interval by k_alerts_tick
 * (keeld's `alerts` phase), and at once after an event it watches.
 *
 * States, exactly Prometheus' for `for` and `keep_firing_for`: an alert is
 * pending from the evaluation its condition first holds (active_since)
 * until it has held for `for`, then firing; when the condition stops, a
 * firing alert keeps firing for `keep_firing_for` (from the first
 * evaluation without it; the condition coming back cancels that), then is
 * resolved.  A pending alert whose condition stops is resolved at once
 * (Prometheus drops it silently; Keel says so with alert.resolved, so every
 * alert.pending is followed by alert.firing or alert.resolved).  Resolved
 * alerts are kept K_ALERT_RESOLVED_KEEP_MS, then deleted; the condition
 * holding again makes a new pending alert.
 *
 * Persistence.  The engine owns the tables alert_rules and
 * alert_instances.  Every transition is written in a store unit together
 * with its alert.* event (k_event_emit): one unit per tick with changes,
 * or the caller's unit (apply, delete).  Memory is a cache of the rows:
 * k_alerts_open loads it, k_alerts_reload rebuilds it (after a failed
 * batch), so a restart keeps active_since and never emits alert.firing
 * again for an alert that was already firing.
 *
 * Threads: everything here runs on keeld's loop thread.  JSON results are
 * new references the caller owns; arguments are borrowed for the call.
 */
#ifndef KEELD_ALERT_H
#define KEELD_ALERT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "event/event.h"
#include "hist.h"
#include "keel/buf.h"
#include "keel/err.h"
#include "keel/log.h"
#include "metrics/querier.h"
#include "org/org.h"
#include "store/store.h"

#define K_ALERT_RESOLVED_KEEP_MS (15 * 60 * 1000)
#define K_ALERT_MAX_PER_RULE 10000 /* alerts one evaluation may hold; more is the rule's error */

typedef struct k_alerts k_alerts_t;

/* A querier over the TSDB for one tick's expr rules (closed by the engine). */
typedef int (*k_alert_querier_fn)(void *ud, k_querier_t **q, keel_err_t *e);

typedef struct k_alerts_deps {
  k_store_t *store;
  k_events_t *events;         /* alert.* are emitted here; the rest is watched */
  const k_org_t *org;         /* owner team of an application; may be NULL */
  k_alert_querier_fn querier; /* NULL: expr rules fail with an error */
  void *querier_ud;
  const keel_log_t *log;
} k_alerts_deps_t;

/* Loads the rules and alerts from the store and subscribes to events.
 * deps and what it points to MUST outlive the engine.  Every rule is due
 * at the first tick. */
int k_alerts_open(const k_alerts_deps_t *deps, k_alerts_t **out, keel_err_t *e);
void k_alerts_close(k_alerts_t *a);
/* Rebuilds memory from the store (after a failed batch rolled back what a
 * tick wrote); rules keep their evaluation times and errors. */
int k_alerts_reload(k_alerts_t *a, keel_err_t *e);

/* Evaluates every rule that is due at now_ms (and takes applied changes
 * first); transitions are written in one unit of its own.  Returns the ms
 * until the next rule is due (0: now), -1 when there is no rule. */
int64_t k_alerts_tick(k_alerts_t *a, int64_t now_ms);
/* The same bound without evaluating (after events made rules due). */
int64_t k_alerts_wait_ms(const k_alerts_t *a, int64_t now_ms);
/* The seq of the oldest event an event rule took but has not evaluated
 * yet (0 = none): delivery after a restart starts again there
 * (k_events_save). */
int64_t k_alerts_held(const k_alerts_t *a);

/* What keeld's /metrics says of the engine: the rules and alerts in
 * memory now, and the evaluations since the engine opened (a failure is
 * an evaluation that left its rule with an error: the query failed, or
 * its result could not become alerts). */
typedef struct k_alert_stats {
  size_t rules;
  size_t pending, firing;
  uint64_t evaluations, evaluation_failures;
  k_hist_t evaluation_seconds; /* one observation per rule evaluated */
} k_alert_stats_t;
void k_alerts_stats(const k_alerts_t *a, k_alert_stats_t *out);

/* Stores a normalized rule (alert/doc.h) unless dry_run, inside the
 * caller's unit; it takes effect at the next tick.  *report has the shape
 * of an organization apply; detail gets the audit summary. */
int k_alerts_apply(k_alerts_t *a, const json_t *rule, int dry_run, int64_t now_ms,
                   json_t **report, keel_buf_t *detail, keel_err_t *e);
/* Deletes a rule inside the caller's unit: its alerts that are pending or
 * firing are resolved (alert.resolved at now_ms) and its alerts deleted.
 * *out: the rule as k_alerts_rule_get gave it.  KEEL_ENOENT when unknown. */
int k_alerts_rule_delete(k_alerts_t *a, const char *name, int64_t now_ms, json_t **out,
                         keel_err_t *e);

/* One rule {"name", "kind": "alert_rule", "application", "team", "severity",
 * "version", "created_at", "updated_at", "document", "path", "health":
 * "ok"|"error"|"unknown", "last_evaluation", "evaluation_seconds",
 * "last_error", "alerts": {"pending", "firing"}}.  KEEL_ENOENT when
 * unknown.  The policy path alone: k_alerts_rule_path. */
int k_alerts_rule_get(k_alerts_t *a, const char *name, json_t **out, keel_err_t *e);
int k_alerts_rule_path(k_alerts_t *a, const char *name, char *out, size_t n);
/* Rules by name after `after` (NULL: first), at most limit; *next the
 * cursor of the next page or NULL.  Same items as k_alerts_rule_get
 * without "document". */
int k_alerts_rule_list(k_alerts_t *a, const char *after, int limit, json_t **items, char **next,
                       keel_err_t *e);

/* Alerts ordered by rule then fingerprint, after the cursor "RULE/FP"
 * (NULL: first); state NULL = pending and firing, else "pending",
 * "firing", "resolved" or "all"; rule NULL = every rule.  Each item is the
 * alert.* event data plus "path" and "last_evaluation". */
int k_alerts_list(k_alerts_t *a, const char *state, const char *rule, const char *after,
                  int limit, json_t **items, char **next, keel_err_t *e);

/* ---- pure helpers (exported for tests) ---------------------------------------- */

/* The fingerprint of a label set (an object of strings): FNV-1a 64 over
 * the names sorted bytewise, each as name, 0xff, value, 0xff — the
 * fingerprint of Prometheus' and Alertmanager's model.LabelSet — as 16
 * lower-case hex digits. */
void k_alert_fingerprint(const json_t *labels, char out[17]);
/* v as Go's fmt %v prints a float64 (what Prometheus' {{ $value }} shows):
 * the shortest digits that read back as v, in exponent form when the
 * decimal exponent is below -4 or at least 6 ("1e+06", "1.5e-05",
 * "123456", "0.25", "NaN", "+Inf", "-Inf").  Returns buf. */
#define K_ALERT_VALUE_BUF 40
char *k_alert_value_text(double v, char buf[K_ALERT_VALUE_BUF]);

#endif
