/* Unit tests for notifications (incident/notify.h, the outbox of
 * incident.c) and maintenance windows (incident/maint.h): the documents,
 * outbox uniqueness, sending only what is durable, the retry schedule and
 * verdicts, escalation timing on an injected clock, maintenance matching
 * (one-off and recurring) and suppression, and the payload formats
 * (Alertmanager's webhook shape exactly). */
#include "incident_testutil.h"

#define MIN (60 * 1000LL)

static const char policy[] =
    "kind: NotificationPolicy\n"
    "team: payments\n"
    "channels:\n"
    "  - name: team\n"
    "    url: http://127.0.0.1:9/team\n"
    "    headers: {Authorization: Bearer x}\n"
    "  - name: am\n"
    "    url: http://127.0.0.1:9/am\n"
    "    format: alertmanager-webhook\n"
    "  - name: platform\n"
    "    type: alertmanager\n"
    "    url: http://127.0.0.1:9093/\n"
    "    timeout: 5s\n"
    "routes:\n"
    "  - match: severity=critical\n"
    "    steps:\n"
    "      - after: 0s\n"
    "        notify: [team, am]\n"
    "      - after: 10m\n"
    "        notify: [platform]\n"
    "      - after: 20m\n"
    "        notify: [team]\n"
    "        if_not_acked: false\n"
    "  - steps:\n"
    "      - notify: [team]\n";

/* ---- documents ---------------------------------------------------------------------- */

static void expect_error(const char *yaml, int maint, const char *want) {
  json_t *doc = NULL;
  keel_err_t e = {0};
  int rc = maint ? k_maint_doc_load("w.yaml", yaml, strlen(yaml), &doc, &e)
                 : k_notify_doc_load("p.yaml", yaml, strlen(yaml), &doc, &e);
  if (rc != KEEL_EINVAL || !strstr(e.msg, want))
    fail_msg("%s: got rc %d '%s', want '%s'", yaml, rc, e.msg, want);
  assert_null(doc);
}

static void test_policy_doc(void **state) {
  json_t *doc = NULL, *again = NULL, *st;
  keel_err_t e = {0};
  (void)state;
  assert_int_equal(k_notify_doc_load("p.yaml", policy, strlen(policy), &doc, &e), 0);
  /* normalized: defaults filled, durations in ms */
  assert_string_equal(keel_json_str(json_array_get(json_object_get(doc, "channels"), 0), "format"), "keel");
  assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(doc, "channels"), 2),
                                                      "timeout_ms")), 5000);
  assert_true(json_is_null(json_object_get(json_array_get(json_object_get(doc, "channels"), 2), "format")));
  st = json_object_get(json_array_get(json_object_get(doc, "routes"), 0), "steps");
  assert_false(json_is_true(json_object_get(json_array_get(st, 0), "if_not_acked")));
  assert_true(json_is_true(json_object_get(json_array_get(st, 1), "if_not_acked")));
  assert_false(json_is_true(json_object_get(json_array_get(st, 2), "if_not_acked")));
  assert_int_equal(json_integer_value(json_object_get(json_array_get(st, 1), "after_ms")), 10 * MIN);
  /* the normalized form validates to itself */
  assert_int_equal(k_notify_doc_validate("n", doc, NULL, &again, &e), 0);
  assert_true(json_equal(doc, again));
  json_decref(doc);
  json_decref(again);

  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'http://x/'}]\nroutes: "
               "[{steps: [{notify: [a]}]}]\nextra: 1\n",
               0, "p.yaml:4:8: extra: unknown field");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'http://x/'}]\nroutes: "
               "[{steps: [{notify: [b]}]}]\n",
               0, "routes[0].steps[0].notify[0]: no channel 'b' in this policy");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'ftp://x/'}]\nroutes: "
               "[{steps: [{notify: [a]}]}]\n",
               0, "channels[0].url: expected an http:// or https:// URL");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, type: alertmanager, url: 'http://x/', "
               "format: keel}]\nroutes: [{steps: [{notify: [a]}]}]\n",
               0, "channels[0].format: only a webhook has a format");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'http://x/', headers: "
               "{X-Keel-Notification-Id: x}}]\nroutes: [{steps: [{notify: [a]}]}]\n",
               0, "Keel sets this header itself");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'http://x/'}, {name: a, url: "
               "'http://y/'}]\nroutes: [{steps: [{notify: [a]}]}]\n",
               0, "channels[1].name: channel 'a' is defined twice");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'http://x/'}]\nroutes: "
               "[{steps: [{after: 10m, notify: [a]}, {after: 5m, notify: [a]}]}]\n",
               0, "routes[0].steps[1].after: steps run in order");
  expect_error("kind: NotificationPolicy\nchannels: [{name: a, url: 'http://x/'}]\nroutes: "
               "[{match: 'team=', steps: [{notify: [a]}]}, {match: 'a b', steps: [{notify: [a]}]}]\n",
               0, "routes[1].match: invalid selector");
  expect_error("kind: NotificationPolicy\nchannels: []\nroutes: []\n", 0,
               "channels: expected a non-empty list");
}

/* k_maint_doc_load of text (len 0: strlen). */
static int maint_load(const char *name, const char *text, size_t len, json_t **doc, keel_err_t *e) {
  return k_maint_doc_load(name, text, len ? len : strlen(text), doc, e);
}

static void test_maint_doc_and_matching(void **state) {
  json_t *doc = NULL;
  keel_err_t e = {0};
  int64_t until, next, sat;
  (void)state;
  assert_int_equal(maint_load("w.yaml",
                                    "kind: MaintenanceWindow\nname: upgrade\nteam: payments\n"
                                    "selector: instance=db-1\nstart: 2026-11-24T22:00:00+01:00\n"
                                    "end: 2026-11-24T23:00:00+01:00\nreason: db upgrade\n",
                                    0, &doc, &e),
                   0);
  /* times normalized to UTC */
  assert_string_equal(keel_json_str(doc, "start"), "2026-11-24T21:00:00.000Z");
  {
    int64_t s;
    assert_int_equal(keel_time_parse("2026-11-24T21:00:00Z", &s), 0);
    assert_false(k_maint_doc_active(doc, s - 1, &until, &next));
    assert_int_equal(next, s);
    assert_true(k_maint_doc_active(doc, s, &until, &next));
    assert_int_equal(until, s + 60 * MIN);
    assert_true(k_maint_doc_active(doc, s + 60 * MIN - 1, &until, &next));
    assert_false(k_maint_doc_active(doc, s + 60 * MIN, &until, &next)); /* end is exclusive */
  }
  json_decref(doc);
  /* recurring: Saturdays 22:00 UTC for 2h */
  assert_int_equal(maint_load("w.yaml",
                                    "kind: MaintenanceWindow\nname: weekly\nteam: payments\n"
                                    "selector: team=payments\ncron: '0 22 * * 6'\nduration: 2h\n",
                                    0, &doc, &e),
                   0);
  assert_int_equal(keel_time_parse("2026-11-28T22:00:00Z", &sat), 0); /* a Saturday */
  assert_false(k_maint_doc_active(doc, sat - 1, &until, &next));
  assert_int_equal(next, sat);
  assert_true(k_maint_doc_active(doc, sat, &until, &next));
  assert_int_equal(until, sat + 120 * MIN);
  assert_true(k_maint_doc_active(doc, sat + 119 * MIN, &until, &next)); /* Sunday 23:59 */
  assert_false(k_maint_doc_active(doc, sat + 120 * MIN, &until, &next));
  assert_true(k_maint_doc_active(doc, sat + 7 * 1440 * MIN + 30 * MIN, &until, &next));
  assert_false(k_maint_doc_active(doc, sat + 3 * 1440 * MIN, &until, &next));
  json_decref(doc);

  expect_error("kind: MaintenanceWindow\nname: w\nteam: t\nselector: a=b\ncron: '0 1 * * *'\n"
               "duration: 1h\nstart: 2026-01-01T00:00:00Z\n",
               1, "one-off (start, end) or recurring (cron, duration), not both");
  expect_error("kind: MaintenanceWindow\nname: w\nteam: t\nselector: a=b\nstart: "
               "2026-01-02T00:00:00Z\nend: 2026-01-01T00:00:00Z\n",
               1, "w.yaml:6:6: end: must be after start");
  expect_error("kind: MaintenanceWindow\nname: w\nteam: t\nselector: ' '\ncron: '0 1 * * *'\n"
               "duration: 1h\n",
               1, "selector: must not be empty");
  expect_error("kind: MaintenanceWindow\nname: w\nteam: t\nselector: a=b\ncron: '0 25 * * *'\n"
               "duration: 1h\n",
               1, "cron: field 2 (hour)");
  expect_error("kind: MaintenanceWindow\nname: w\nteam: t\nselector: a=b\ncron: '0 1 * * *'\n", 1,
               "duration: required field is missing");
  expect_error("kind: MaintenanceWindow\nname: w\nteam: t\nselector: a=b\n", 1,
               "expected start and end");
}

static void test_maint_suppressed(void **state) {
  ifx_t *f = *state;
  char w[K_MAINT_NAME_MAX];
  json_t *l1 = json_pack("{s:s,s:s}", "instance", "db-1", "team", "payments");
  json_t *l2 = json_pack("{s:s,s:s}", "instance", "db-2", "hostname", "db-2");
  int64_t s;
  assert_int_equal(keel_time_parse("2026-11-24T21:00:00Z", &s), 0);
  ifx_apply(f,
            "kind: MaintenanceWindow\nname: upgrade\nteam: payments\nselector: instance=db-1\n"
            "start: 2026-11-24T21:00:00Z\nend: 2026-11-24T22:00:00Z\n",
            s);
  ifx_apply(f,
            "kind: MaintenanceWindow\nname: by-host\nteam: payments\nselector: hostname=db-2\n"
            "cron: '*/10 * * * *'\nduration: 1m\n",
            s);
  assert_true(k_maint_suppressed(f->m, l1, s + 1, w, sizeof w));
  assert_string_equal(w, "upgrade");
  assert_false(k_maint_suppressed(f->m, l1, s - 1, w, sizeof w));
  assert_string_equal(w, "");
  assert_false(k_maint_suppressed(f->m, l2, s + 5 * MIN, w, sizeof w));
  assert_true(k_maint_suppressed(f->m, l2, s + 10 * MIN + 30000, w, sizeof w));
  assert_string_equal(w, "by-host");
  assert_false(k_maint_suppressed(NULL, l1, s + 1, w, sizeof w));
  /* the list, as GET /v1/maintenance shows it */
  {
    json_t *ls = k_maint_list(f->m, s + 1);
    assert_int_equal(json_array_size(ls), 2);
    assert_string_equal(keel_json_str(json_array_get(ls, 1), "name"), "upgrade");
    assert_true(json_is_true(json_object_get(json_array_get(ls, 1), "active")));
    assert_string_equal(keel_json_str(json_array_get(ls, 1), "path"), "team/payments/maintenance/upgrade");
    assert_string_equal(keel_json_str(json_array_get(ls, 0), "duration"), "1m");
    json_decref(ls);
  }
  json_decref(l1);
  json_decref(l2);
}

/* ---- the outbox --------------------------------------------------------------------------- */

static int64_t status_count(ifx_t *f, const char *status) {
  return ifx_count(f, "SELECT COUNT(*) FROM notification_outbox WHERE status = ?", status);
}

static void test_outbox_unique_and_durable(void **state) {
  ifx_t *f = *state;
  json_t *due, *again;
  keel_err_t e = {0};
  ifx_apply(f, policy, T0);
  ifx_durable(f);
  ifx_alert(f, "alert.firing", "p99", "1111111111111111", "payments", "", "critical", "{}", "slow", T0);
  /* step 0: team and am */
  assert_int_equal(status_count(f, "pending"), 2);
  /* not durable yet: nothing may leave */
  due = k_incidents_due(f->x, T0);
  assert_int_equal(json_array_size(due), 0);
  json_decref(due);
  ifx_durable(f);
  due = k_incidents_due(f->x, T0);
  assert_int_equal(json_array_size(due), 2);
  /* the id travels in the header; the body names it too */
  assert_non_null(strstr(keel_json_str(json_array_get(due, 0), "body"),
                         keel_json_str(json_array_get(due, 0), "id")));
  /* in flight: never handed out twice */
  again = k_incidents_due(f->x, T0 + 10);
  assert_int_equal(json_array_size(again), 0);
  json_decref(again);
  /* the same transition cannot be queued twice: the UNIQUE key */
  {
    k_val_t a[] = {K_TEXT(keel_json_str(json_array_get(due, 0), "id"))};
    int rc = k_store_exec(f->s,
                          "INSERT INTO notification_outbox(id, incident_id, transition, step, channel,"
                          " policy, type, url, headers, timeout_ms, body, status, next_ms, created_ms)"
                          " SELECT id || 'x', incident_id, transition, step, channel, policy, type,"
                          " url, headers, timeout_ms, body, 'pending', next_ms, created_ms"
                          " FROM notification_outbox WHERE id = ?",
                          a, 1, NULL, NULL, &e);
    assert_int_not_equal(rc, 0);
  }
  /* the alert event delivered again (as after a restart): nothing new */
  ifx_alert(f, "alert.firing", "p99", "1111111111111111", "payments", "", "critical", "{}", "slow",
            T0 + 20);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM notification_outbox", NULL), 2);
  /* answers: 500 -> retry later, 200 -> sent, 400 -> failed */
  {
    const char *a = keel_json_str(json_array_get(due, 0), "id");
    const char *b = keel_json_str(json_array_get(due, 1), "id");
    json_t *inc;
    char tl[64];
    k_incidents_result(f->x, a, 500, "HTTP 500", T0 + 100);
    assert_int_equal(ifx_count(f, "SELECT attempts FROM notification_outbox WHERE id = ?", a), 1);
    assert_true(ifx_count(f, "SELECT next_ms FROM notification_outbox WHERE id = ?", a) >= T0 + 600);
    assert_true(ifx_count(f, "SELECT next_ms FROM notification_outbox WHERE id = ?", a) <= T0 + 1100);
    k_incidents_result(f->x, b, 400, "HTTP 400: bad", T0 + 100);
    assert_int_equal(status_count(f, "failed"), 1);
    ifx_durable(f);
    /* due again only once its time came */
    again = k_incidents_due(f->x, T0 + 500);
    assert_int_equal(json_array_size(again), 0);
    json_decref(again);
    again = k_incidents_due(f->x, T0 + 1200);
    assert_int_equal(json_array_size(again), 1);
    json_decref(again);
    k_incidents_result(f->x, a, 202, "", T0 + 1300);
    assert_int_equal(status_count(f, "sent"), 1);
    assert_int_equal(ifx_events(f, "notification.sent"), 1);
    assert_int_equal(ifx_events(f, "notification.failed"), 1);
    inc = ifx_newest(f);
    snprintf(tl, sizeof tl, "%s",
             keel_json_str(json_array_get(json_object_get(inc, "timeline"), 3), "kind"));
    assert_string_equal(tl, "notification.sent");
    json_decref(inc);
    /* a late duplicate answer changes nothing */
    k_incidents_result(f->x, a, 500, "late", T0 + 1400);
    assert_int_equal(status_count(f, "sent"), 1);
  }
  json_decref(due);
}

static void test_retry_gives_up(void **state) {
  ifx_t *f = *state;
  json_t *due;
  const char *id;
  int64_t now = T0;
  ifx_apply(f, policy, T0);
  ifx_alert(f, "alert.firing", "p99", "2222222222222222", "payments", "", "warning", "{}", NULL, T0);
  ifx_durable(f);
  due = k_incidents_due(f->x, now); /* the catch-all route: team only */
  assert_int_equal(json_array_size(due), 1);
  id = keel_json_str(json_array_get(due, 0), "id");
  for (int i = 0; i < 100 && status_count(f, "pending"); i++) {
    k_incidents_result(f->x, id, 0, "cannot connect", now);
    now = ifx_count(f, "SELECT next_ms FROM notification_outbox WHERE id = ?", id);
    json_decref(k_incidents_due(f->x, now)); /* in flight again */
  }
  assert_int_equal(status_count(f, "failed"), 1);
  assert_true(now - T0 <= K_NOTIFY_MAX_AGE_MS);
  assert_true(ifx_count(f, "SELECT attempts FROM notification_outbox WHERE id = ?", id) >= 12);
  json_decref(due);
}

static void test_backoff_and_verdict(void **state) {
  (void)state;
  assert_int_equal(k_notify_backoff_ms(1, 0), 500);
  assert_int_equal(k_notify_backoff_ms(1, 500), 1000);
  assert_int_equal(k_notify_backoff_ms(1, 501), 500);
  assert_int_equal(k_notify_backoff_ms(2, 0), 1000);
  assert_int_equal(k_notify_backoff_ms(3, 0), 2000);
  for (int a = 1; a < 40; a++) {
    int64_t lo = k_notify_backoff_ms(a, 0), hi = k_notify_backoff_ms(a, 0xffffffffu);
    assert_true(lo >= 500 && hi <= K_NOTIFY_BACKOFF_MAX_MS && lo <= hi);
    if (a > 1) assert_true(lo >= k_notify_backoff_ms(a - 1, 0));
  }
  assert_int_equal(k_notify_backoff_ms(30, 0), K_NOTIFY_BACKOFF_MAX_MS / 2);
  assert_int_equal(k_notify_verdict(200), 1);
  assert_int_equal(k_notify_verdict(204), 1);
  assert_int_equal(k_notify_verdict(0), 0);
  assert_int_equal(k_notify_verdict(500), 0);
  assert_int_equal(k_notify_verdict(503), 0);
  assert_int_equal(k_notify_verdict(408), 0);
  assert_int_equal(k_notify_verdict(429), 0);
  assert_int_equal(k_notify_verdict(400), -1);
  assert_int_equal(k_notify_verdict(404), -1);
  assert_int_equal(k_notify_verdict(301), -1);
}

/* ---- escalation ------------------------------------------------------------------------------ */

static int64_t rows_of(ifx_t *f, const char *channel) {
  return ifx_count(f, "SELECT COUNT(*) FROM notification_outbox WHERE channel = ?", channel);
}

static void test_escalation_timing(void **state) {
  ifx_t *f = *state;
  keel_err_t e = {0};
  json_t *inc;
  char id[40];
  ifx_apply(f, policy, T0);
  ifx_alert(f, "alert.firing", "p99", "3333333333333333", "payments", "", "critical", "{}", NULL, T0);
  assert_int_equal(rows_of(f, "team"), 1);
  assert_int_equal(rows_of(f, "platform"), 0);
  k_incidents_tick(f->x, T0 + 10 * MIN - 1);
  assert_int_equal(rows_of(f, "platform"), 0);
  k_incidents_tick(f->x, T0 + 10 * MIN);
  assert_int_equal(rows_of(f, "platform"), 1);
  /* type alertmanager posts to /api/v2/alerts */
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM notification_outbox WHERE url = ?",
                             "http://127.0.0.1:9093/api/v2/alerts"),
                   1);
  inc = ifx_newest(f);
  snprintf(id, sizeof id, "%s", keel_json_str(inc, "id"));
  json_decref(inc);
  /* a new alert joins: every channel reached so far hears of it, once */
  ifx_alert(f, "alert.firing", "p99", "3333333333333334", "payments", "", "critical", "{}", NULL,
            T0 + 11 * MIN);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM notification_outbox WHERE transition = ?",
                             "firing#2"),
                   3);
  /* acked: the if_not_acked step would stop, this one (if_not_acked: false) runs */
  assert_int_equal(ifx_act(f, id, K_INCIDENT_ACK, "user:a", "", T0 + 12 * MIN, &e), 0);
  k_incidents_tick(f->x, T0 + 20 * MIN);
  assert_int_equal(ifx_count(f,
                             "SELECT COUNT(*) FROM notification_outbox WHERE channel = 'team' AND step = 2"
                             " AND transition = ?",
                             "firing#2"),
                   1);
  assert_true(ifx_count(f, "SELECT COUNT(*) FROM incidents WHERE esc_due_ms IS NULL AND id = ?", id) == 1);
  /* resolved: every channel reached is told once */
  ifx_alert(f, "alert.resolved", "p99", "3333333333333333", "payments", "", "critical", "{}", NULL,
            T0 + 30 * MIN);
  ifx_alert(f, "alert.resolved", "p99", "3333333333333334", "payments", "", "critical", "{}", NULL,
            T0 + 31 * MIN);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM notification_outbox WHERE transition = ?",
                             "resolved"),
                   3);

  /* acked before the step is due: the if_not_acked step never runs */
  ifx_alert(f, "alert.firing", "p50", "4444444444444444", "payments", "", "critical", "{}", NULL,
            T0 + 40 * MIN);
  inc = ifx_newest(f);
  snprintf(id, sizeof id, "%s", keel_json_str(inc, "id"));
  json_decref(inc);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_ACK, "user:a", "", T0 + 41 * MIN, &e), 0);
  k_incidents_tick(f->x, T0 + 55 * MIN);
  assert_int_equal(ifx_count(f,
                             "SELECT COUNT(*) FROM notification_outbox WHERE channel = 'platform' AND"
                             " incident_id = ?",
                             id),
                   0);
  /* without a route nothing is queued, and the timeline says so */
  ifx_alert(f, "alert.firing", "x", "5555555555555555", "search", "", "critical", "{}", NULL, T0);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incident_timeline WHERE kind = ?",
                             "notification.none"),
                   1);
}

static void test_maintenance_suppresses(void **state) {
  ifx_t *f = *state;
  json_t *inc;
  ifx_apply(f, policy, T0);
  ifx_apply(f,
            "kind: MaintenanceWindow\nname: upgrade\nteam: payments\nselector: instance=db-1\n"
            "cron: '* * * * *'\nduration: 30d\n",
            T0);
  /* detection goes on: the incident opens; its notifications are suppressed */
  ifx_alert(f, "alert.firing", "db", "6666666666666666", "payments", "", "critical",
            "{\"instance\":\"db-1\"}", NULL, T0);
  assert_int_equal(status_count(f, "suppressed"), 2);
  assert_int_equal(status_count(f, "pending"), 0);
  assert_int_equal(ifx_events(f, "notification.suppressed"), 2);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM notification_outbox WHERE maint_window = ?",
                             "upgrade"),
                   2);
  /* an alert outside the window joins: now not every alert is muted */
  ifx_alert(f, "alert.firing", "db", "6666666666666667", "payments", "", "critical",
            "{\"instance\":\"db-2\"}", NULL, T0 + 1000);
  assert_int_equal(status_count(f, "pending"), 2);
  ifx_alert(f, "alert.resolved", "db", "6666666666666667", "payments", "", "critical",
            "{\"instance\":\"db-2\"}", NULL, T0 + 2000);
  ifx_alert(f, "alert.resolved", "db", "6666666666666666", "payments", "", "critical",
            "{\"instance\":\"db-1\"}", NULL, T0 + 3000);
  inc = ifx_newest(f);
  assert_string_equal(keel_json_str(inc, "state"), "resolved");
  json_decref(inc);
  /* resolved: db-1 is still under the window, db-2 is not: the channels
   * that heard of the firing hear of the resolve */
  assert_int_equal(ifx_count(f,
                             "SELECT COUNT(*) FROM notification_outbox WHERE transition = 'resolved'"
                             " AND status = ?",
                             "pending"),
                   2);
  /* wholly inside a window: firing and resolved are both suppressed */
  ifx_alert(f, "alert.firing", "db2", "7777777777777777", "payments", "", "critical",
            "{\"instance\":\"db-1\"}", NULL, T0 + 4000);
  ifx_alert(f, "alert.resolved", "db2", "7777777777777777", "payments", "", "critical",
            "{\"instance\":\"db-1\"}", NULL, T0 + 5000);
  assert_int_equal(status_count(f, "suppressed"), 6);
}

/* ---- formats ------------------------------------------------------------------------------------ */

static void keys_are(const json_t *o, const char *const *want) {
  size_t n = 0;
  for (; want[n]; n++)
    if (!json_object_get(o, want[n])) fail_msg("missing key '%s'", want[n]);
  assert_int_equal(json_object_size(o), n);
}

static void test_formats(void **state) {
  static const char *const top[] = {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                                    "groupLabels", "commonLabels", "commonAnnotations",
                                    "externalURL", "alerts", NULL};
  static const char *const alert[] = {"status", "labels", "annotations", "startsAt", "endsAt",
                                      "generatorURL", "fingerprint", NULL};
  static const char *const api[] = {"labels", "annotations", "startsAt", "endsAt", "generatorURL",
                                    NULL};
  json_t *inc = json_pack("{s:s,s:s,s:s,s:s,s:{s:s}}", "id", "inc_1", "team", "payments",
                          "application", "checkout", "state", "open", "group", "alertname", "p99");
  json_t *alerts = json_pack(
      "[{s:s,s:s,s:{s:s,s:s,s:s},s:{s:s,s:s},s:s,s:n},{s:s,s:s,s:{s:s,s:s,s:s},s:{s:s},s:s,s:s}]",
      "state", "firing", "fingerprint", "aaaaaaaaaaaaaaaa", "labels", "alertname", "p99", "instance",
      "web-1", "severity", "critical", "annotations", "summary", "slow", "runbook", "r1",
      "starts_at", "2026-11-24T10:00:00.000Z", "ends_at", "state", "resolved", "fingerprint",
      "bbbbbbbbbbbbbbbb", "labels", "alertname", "p99", "instance", "web-2", "severity",
      "critical", "annotations", "summary", "slow", "starts_at", "2026-11-24T10:01:00.000Z",
      "ends_at", "2026-11-24T10:05:00.000Z");
  k_notice_t n = {inc, alerts, "firing", "ntf_1", "am", 0, "http://keel:7700", T0, 0, 0};
  json_t *b = k_notify_body_amwebhook(&n), *a;
  size_t i;
  (void)state;
  assert_non_null(b);
  keys_are(b, top);
  assert_string_equal(keel_json_str(b, "version"), "4");
  assert_string_equal(keel_json_str(b, "status"), "firing");
  assert_string_equal(keel_json_str(b, "receiver"), "am");
  assert_string_equal(keel_json_str(b, "externalURL"), "http://keel:7700");
  assert_string_equal(keel_json_str(b, "groupKey"),
                      "{}/{application=\"checkout\",team=\"payments\"}:{alertname=\"p99\"}");
  /* common: what every alert shares */
  assert_int_equal(json_object_size(json_object_get(b, "commonLabels")), 2);
  assert_null(json_object_get(json_object_get(b, "commonLabels"), "instance"));
  assert_int_equal(json_object_size(json_object_get(b, "commonAnnotations")), 1);
  json_array_foreach(json_object_get(b, "alerts"), i, a) keys_are(a, alert);
  a = json_array_get(json_object_get(b, "alerts"), 0);
  assert_string_equal(keel_json_str(a, "endsAt"), "0001-01-01T00:00:00Z");
  assert_string_equal(keel_json_str(a, "generatorURL"), "http://keel:7700/v1/incidents/inc_1");
  a = json_array_get(json_object_get(b, "alerts"), 1);
  assert_string_equal(keel_json_str(a, "status"), "resolved");
  assert_string_equal(keel_json_str(a, "endsAt"), "2026-11-24T10:05:00.000Z");
  json_decref(b);

  /* Alertmanager's API: firing ends four re-send delays ahead; a resolved
   * incident ends them all */
  b = k_notify_body_amapi(&n);
  assert_int_equal(json_array_size(b), 2);
  json_array_foreach(b, i, a) keys_are(a, api);
  {
    char ahead[KEEL_TIME_STRLEN];
    keel_time_format(ahead, T0 + 4 * K_NOTIFY_AM_RESEND_MS);
    assert_string_equal(keel_json_str(json_array_get(b, 0), "endsAt"), ahead);
  }
  assert_string_equal(keel_json_str(json_object_get(json_array_get(b, 0), "annotations"), "keel_incident"),
                      "inc_1");
  json_decref(b);
  n.status = "resolved";
  b = k_notify_body_amapi(&n);
  {
    char now[KEEL_TIME_STRLEN];
    keel_time_format(now, T0);
    assert_string_equal(keel_json_str(json_array_get(b, 0), "endsAt"), now);
    assert_string_equal(keel_json_str(json_array_get(b, 1), "endsAt"), "2026-11-24T10:05:00.000Z");
  }
  json_decref(b);
  /* keel: the incident and its alerts */
  b = k_notify_body_keel(&n);
  assert_string_equal(keel_json_str(b, "notification_id"), "ntf_1");
  assert_string_equal(keel_json_str(json_object_get(b, "incident"), "id"), "inc_1");
  assert_int_equal(json_array_size(json_object_get(b, "alerts")), 2);
  json_decref(b);
  json_decref(inc);
  json_decref(alerts);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy_doc),
      cmocka_unit_test(test_maint_doc_and_matching),
      cmocka_unit_test_setup_teardown(test_maint_suppressed, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_outbox_unique_and_durable, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_retry_gives_up, ifx_setup, ifx_teardown),
      cmocka_unit_test(test_backoff_and_verdict),
      cmocka_unit_test_setup_teardown(test_escalation_timing, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_maintenance_suppresses, ifx_setup, ifx_teardown),
      cmocka_unit_test(test_formats),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
