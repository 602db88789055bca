/* incident.h — the incident engine (docs/incidents.md): firing alerts open
 * or join incidents, incidents notify through the outbox, escalate, and are
 * acked, commented and resolved.
 *
 * Input.  The engine reads no other engine's tables: it subscribes to
 * events (event.h).  alert.firing opens or joins the live incident of its
 * fingerprint; alert.resolved marks the alert resolved and resolves the
 * incident when none of its alerts fires any more; execution.started and
 * execution.finished whose targets are hosts of a live incident's alerts
 * (labels agent_id or instance) go on that incident's timeline.
 *
 * Grouping.  An incident's fingerprint is BLAKE2b (16 hex) of its owner
 * team, application and group labels.  The group labels are
 * {"alertname": ...} of the alert, or {"incident_group": V} when the alert
 * carries the label incident_group=V (so several rules can fold into one
 * incident).  At most one incident per fingerprint is live (open or acked);
 * once it is resolved, the next firing opens a new one.
 *
 * Notifications.  Every notifying transition (opened, an alert joined or
 * fired again: "firing#N"; resolved: "resolved") writes outbox rows in the
 * unit of the transition, one per (incident, transition, step, channel),
 * UNIQUE in the table.  The route is chosen when the incident opens
 * (notify.h); its step 0 (and every step with after 0) runs at once, later
 * steps when due (k_incidents_tick) unless the incident was acked (steps
 * with if_not_acked) or resolved.  A transition after the first notifies
 * every channel the escalation reached so far.  A row whose alerts are all
 * under an active maintenance window (maint.h) is written `suppressed`
 * instead of `pending`.  Pending rows are sent once their generation is
 * durable, by the sender thread (send.h); results are written in a unit
 * with a notification.sent / notification.failed event and a timeline
 * entry; other failures are retried with backoff (notify.h) for an hour.
 *
 * Every change to an incident emits incident.opened, .updated, .acked,
 * .resolved or .commented in the same unit (carrying the cause of the
 * event that led to it).
 *
 * Threads: the loop thread only (the sender thread is send.c's).  Functions
 * that change incidents run inside the caller's open store unit unless they
 * say they open their own.  JSON handed out is new references.
 */
#ifndef KEELD_INCIDENT_H
#define KEELD_INCIDENT_H

#include <jansson.h>
#include <stdint.h>

#include "event/event.h"
#include "incident/maint.h"
#include "keel/err.h"
#include "keel/log.h"
#include "store/store.h"

typedef struct k_incidents k_incidents_t;

/* Bounds that keep what one event costs and carries independent of how
 * many alerts an incident has: incident.* event data lists at most
 * K_INCIDENT_EVENT_ALERTS alert subjects (and at most
 * K_INCIDENT_EVENT_ALERT_BYTES of them), with "alerts_total" and
 * "alerts_truncated"; a notification carries at most
 * K_INCIDENT_NOTIFY_ALERTS alerts and says how many it left out.  Firing
 * alerts come first, each kind in joining order. */
#define K_INCIDENT_EVENT_ALERTS 50
#define K_INCIDENT_EVENT_ALERT_BYTES 8192
#define K_INCIDENT_NOTIFY_ALERTS 100
/* Alertmanager re-sends per round (one per unresolved incident and
 * channel): past this many, the rest wait for the next round. */
#define K_INCIDENT_AM_RESEND_MAX 1000

typedef struct k_incidents_deps {
  k_store_t *store;
  k_events_t *events;       /* emits into it; the engine subscribes itself */
  const k_maint_t *maint;   /* may be NULL: nothing is ever suppressed */
  const keel_log_t *log;
  const char *external_url; /* keeld's URL, for links in payloads ("" none); borrowed for
                               the engine's life and read when a payload is built */
  int64_t am_resend_ms;     /* re-send to Alertmanager this often (<= 0: K_NOTIFY_AM_RESEND_MS) */
  int sender;               /* 1: start the sender thread; 0: nothing is sent
                               (tests drive k_incidents_due / _result) */
} k_incidents_deps_t;

int k_incidents_open(const k_incidents_deps_t *d, k_incidents_t **out, keel_err_t *e);
void k_incidents_close(k_incidents_t *x);

/* One event, as the subscription delivers it, at now_ms (opens its own
 * units).  Exposed so tests can drive the engine with their own clock.
 * Its cost does not grow with the incident it touches: it reads the
 * incident's row, the alert concerned and the first few alerts (the
 * bounds above), never all of them. */
void k_incidents_event(k_incidents_t *x, const k_event_t *ev, int64_t now_ms);
/* Rows the engine's queries have read so far (tests: what an event costs). */
uint64_t k_incidents_rows_read(const k_incidents_t *x);

/* What keeld's /metrics says of the engine.  Counters since the engine
 * opened: outcomes once they are kept (their notification.* event
 * delivered; suppressed rows were never to be sent), and attempts, every
 * HTTP request that ended (answered or not), retries included.  Gauges
 * read from the store through partial indexes, so their cost grows with
 * live incidents and pending rows only. */
typedef struct k_incident_stats {
  int64_t open, acked; /* unresolved incidents by state */
  int64_t outbox;      /* notifications pending: neither sent nor failed yet */
  uint64_t sent, failed, suppressed, attempts;
  /* re-sends of firing alerts to Alertmanager (not notifications): made,
   * and of those not answered 2xx (or not made) */
  uint64_t resends, resend_failures;
} k_incident_stats_t;
int k_incidents_stats(k_incidents_t *x, k_incident_stats_t *out, keel_err_t *e);

/* Escalation steps that are due (each incident in a unit of its own), then
 * hands durable pending notifications that are due to the sender.  Returns
 * how many ms until it has work again (0..1000). */
int64_t k_incidents_tick(k_incidents_t *x, int64_t now_ms);
/* The sender's eventfd (-1 without a sender) and, when it is readable,
 * taking its results (each in a unit of its own). */
int k_incidents_fd(const k_incidents_t *x);
void k_incidents_poll(k_incidents_t *x, int64_t now_ms);

/* What the sender does, for tests without one: the pending rows due at
 * now_ms whose generation is durable and that are not in flight, marked in
 * flight: a new array of {"id", "url", "headers", "timeout_ms", "body"}. */
json_t *k_incidents_due(k_incidents_t *x, int64_t now_ms);
/* The answer for a row in flight (status 0: none came, error says why). */
void k_incidents_result(k_incidents_t *x, const char *id, long status, const char *error,
                        int64_t now_ms);

/* ---- the API's side ---------------------------------------------------------------- */

/* "app/APP/incident/ID" when an application owns it, else
 * "team/TEAM/incident/ID" ("_" for no team). */
void k_incident_path(const json_t *incident, char *out, size_t n);

/* k_incident_path of incident id, read from its row alone (what a request
 * about it is judged on).  KEEL_ENOENT. */
int k_incident_path_of(k_incidents_t *x, const char *id, char *out, size_t n, keel_err_t *e);

/* One incident {"id", "kind": "incident", "title", "team", "application",
 * "severity", "state", "group", "fingerprint", "opened_at", "acked_at",
 * "acked_by", "resolved_at", "resolved_by", "updated_at", "alerts": [...],
 * "timeline": [...], "notifications": [...]}.  KEEL_ENOENT. */
int k_incident_get(k_incidents_t *x, const char *id, json_t **out, keel_err_t *e);

/* Newest first (by opening); state and team NULL = any; cursor as
 * k_store_time_cursor; items as k_incident_get without "timeline" and
 * "notifications", with "alerts" replaced by "alert_count" and "firing". */
int k_incident_list(k_incidents_t *x, const char *state, const char *team, const char *cursor,
                    int limit, json_t **items, char **next, keel_err_t *e);

typedef enum { K_INCIDENT_ACK, K_INCIDENT_RESOLVE, K_INCIDENT_COMMENT } k_incident_act_t;

/* Ack, resolve or comment on an incident, by `by` (the actor as the audit
 * names it), inside the caller's unit.  text: the comment (required for
 * COMMENT, optional note otherwise).  KEEL_ENOENT; KEEL_ECONFLICT when it
 * is resolved already (or acked already, for ACK).  *out: the incident
 * after the change (as k_incident_get without "timeline" and
 * "notifications"). */
int k_incident_act(k_incidents_t *x, const char *id, k_incident_act_t act, const char *by,
                   const char *text, int64_t now_ms, json_t **out, keel_err_t *e);

#endif
