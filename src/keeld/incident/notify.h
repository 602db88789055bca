/* notify.h — notification policies and what is sent (docs/incidents.md,
 * "Notification policy" and "Formats"): the `kind: NotificationPolicy`
 * document, choosing a route for an incident, the payloads of each format,
 * and the retry schedule.  Pure functions plus the policies' table; the
 * outbox and the sending live in incident.c and send.c.
 *
 * Document (normalized form, every key present):
 *   {"kind": "NotificationPolicy", "team": T | null (null: the global policy),
 *    "channels": [{"name", "type": "webhook"|"alertmanager",
 *                  "url", "format": "keel"|"alertmanager-webhook"|null (webhook only),
 *                  "headers": {name: value}, "timeout_ms"}],
 *    "routes": [{"match": selector text ("" matches every alert),
 *                "steps": [{"after_ms", "notify": [channel names], "if_not_acked": bool}]}]}
 * Defaults: type webhook, format keel, headers {}, timeout 10s (1s..60s),
 * match "", if_not_acked = (after > 0).  after ("0s", "10m" or after_ms)
 * is 0..7d and never decreases along the steps; every name in notify is a
 * channel of the same document.  Header names are tokens
 * ([A-Za-z0-9-]{1,64}); Content-Type, Content-Length, Host,
 * Transfer-Encoding, Connection and X-Keel-Notification-Id are Keel's.
 *
 * The policies are stored in notification_policies (key: team, '' for the
 * global one) and read when an incident opens, so nothing is cached.
 */
#ifndef KEELD_INCIDENT_NOTIFY_H
#define KEELD_INCIDENT_NOTIFY_H

#include <jansson.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/yaml.h"
#include "store/store.h"

#define K_NOTIFY_MAX_AGE_MS (3600 * 1000)    /* a notification is retried for this long */
#define K_NOTIFY_BACKOFF_MIN_MS 1000
#define K_NOTIFY_BACKOFF_MAX_MS (5 * 60 * 1000)

int k_notify_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                          json_t **out, keel_err_t *e);
int k_notify_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);
/* "team/TEAM/notify", or "notify" for the global policy. */
void k_notify_path(const json_t *doc, char *out, size_t n);
/* Stores a normalized policy unless dry_run, inside the caller's unit;
 * *report and detail as k_runbook_apply's (kind "notification_policy",
 * name the team or "global"). */
int k_notify_apply(k_store_t *s, const json_t *doc, int dry_run, int64_t now_ms, json_t **report,
                   keel_buf_t *detail, keel_err_t *e);

/* The route for an incident whose first alert has labels (borrowed; an
 * object of strings, team and application merged in): the first route of
 * team's policy whose match selects labels, else the first of the global
 * policy's.  *out: null (no route) or a new {"policy": team|"", "route": i,
 * "steps": [{"after_ms", "if_not_acked", "channels": [channel objects of
 * the policy, as normalized]}]} — a snapshot: later changes to the policy
 * do not move an incident already open. */
int k_notify_route(k_store_t *s, const char *team, const json_t *labels, json_t **out,
                   keel_err_t *e);
/* The same from policy documents already at hand (tests, fuzzing): the
 * team's (may be NULL) then the global one (may be NULL). */
json_t *k_notify_route_of(const json_t *team_policy, const json_t *global_policy,
                          const json_t *labels);

/* What one notification says.  incident: the incident as the API shows it
 * (id, title, team, application, severity, state, group, opened_at,
 * acked_at, acked_by, resolved_at, resolved_by); alerts: its alerts
 * ({"subject", "rule", "fingerprint", "state", "labels", "annotations",
 * "value", "starts_at", "ends_at"}), or the first of them (the engine
 * sends at most K_INCIDENT_NOTIFY_ALERTS) with truncated saying how many
 * were left out, as Alertmanager's max_alerts does; status "firing" or
 * "resolved". */
typedef struct k_notice {
  const json_t *incident;
  const json_t *alerts;
  const char *status;
  const char *id;           /* the notification id (ntf_...) */
  const char *channel;      /* its name */
  int step;
  const char *external_url; /* keeld's URL ("" when unknown) */
  int64_t now_ms;
  int64_t truncated;        /* alerts left out of alerts (0: none) */
  int64_t am_valid_ms;      /* type alertmanager: a firing alert's endsAt is this far
                               ahead (<= 0: K_NOTIFY_AM_RESEND_MS * 4) */
} k_notice_t;

/* Alertmanager ends an alert at its endsAt unless told again: the engine
 * re-sends the firing alerts of every unresolved incident to the
 * alertmanager channels that took its firing notification, each resend
 * delay (default, as Prometheus' --rules.alert.resend-delay), with endsAt
 * four delays ahead (as Prometheus). */
#define K_NOTIFY_AM_RESEND_MS (60 * 1000)

/* Format keel: {"version": "1", "notification_id", "status", "channel",
 * "step", "incident": {...}, "alerts": [...], "alerts_truncated", "url"}. */
json_t *k_notify_body_keel(const k_notice_t *n);
/* Format alertmanager-webhook: Alertmanager's webhook payload, version 4
 * (see docs/incidents.md), truncatedAlerts = truncated; commonLabels and
 * commonAnnotations are of the alerts sent, as Alertmanager's are. */
json_t *k_notify_body_amwebhook(const k_notice_t *n);
/* Type alertmanager: the body of POST /api/v2/alerts, one object per
 * alert; firing ones end am_valid_ms ahead (told again before: see
 * K_NOTIFY_AM_RESEND_MS), resolved ones at their resolved time. */
json_t *k_notify_body_amapi(const k_notice_t *n);
/* The body for channel ch (normalized channel object): one of the above. */
json_t *k_notify_body(const json_t *ch, const k_notice_t *n);
/* Where to POST for ch: its url, or url + "/api/v2/alerts" for type
 * alertmanager.  Writes at most n bytes. */
void k_notify_target_url(const json_t *ch, char *out, size_t n);

/* The wait before attempt attempts + 1 (attempts >= 1 made so far):
 * exponential from K_NOTIFY_BACKOFF_MIN_MS doubling to at most
 * K_NOTIFY_BACKOFF_MAX_MS, with "equal jitter": half fixed, half rnd. */
int64_t k_notify_backoff_ms(int attempts, uint32_t rnd);
/* How an HTTP answer (status, or 0 for a transport failure) moves a
 * notification: 1 sent (2xx), -1 failed for good (4xx other than 408 and
 * 429: the request itself is wrong), 0 retry. */
int k_notify_verdict(long http_status);

#endif
