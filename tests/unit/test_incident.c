/* Unit tests for the incident engine (incident/incident.h): grouping and
 * dedup by fingerprint, auto-resolve, a new incident after a resolved one,
 * alerts firing again, ack / resolve / comment, the timeline, related
 * execution events, and the events every change emits. */
#include "incident_testutil.h"

static const char *kinds_of(const json_t *inc, char *buf, size_t n) {
  const json_t *t;
  size_t i, o = 0;
  buf[0] = '\0';
  json_array_foreach(json_object_get(inc, "timeline"), i, t)
      o += (size_t)snprintf(buf + o, o < n ? n - o : 0, "%s%s", i ? "," : "",
                            keel_json_str(t, "kind"));
  return buf;
}

static void test_grouping_and_dedup(void **state) {
  ifx_t *f = *state;
  json_t *inc;
  /* two hosts, one rule, one team: one incident with two alerts */
  ifx_alert(f, "alert.firing", "disk-full", "aaaaaaaaaaaaaaa1", "payments", "", "warning",
            "{\"instance\":\"web-1\"}", "disk on web-1 is full", T0);
  ifx_alert(f, "alert.firing", "disk-full", "aaaaaaaaaaaaaaa2", "payments", "", "critical",
            "{\"instance\":\"web-2\"}", NULL, T0 + 1000);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents", NULL), 1);
  inc = ifx_newest(f);
  assert_int_equal(json_array_size(json_object_get(inc, "alerts")), 2);
  /* title from the first alert's summary; severity the highest */
  assert_string_equal(keel_json_str(inc, "title"), "disk on web-1 is full");
  assert_string_equal(keel_json_str(inc, "severity"), "critical");
  assert_string_equal(keel_json_str(json_object_get(inc, "group"), "alertname"), "disk-full");
  assert_string_equal(keel_json_str(inc, "team"), "payments");
  assert_true(json_is_null(json_object_get(inc, "application")));
  json_decref(inc);
  /* the same event again (a re-delivery): nothing changes */
  ifx_alert(f, "alert.firing", "disk-full", "aaaaaaaaaaaaaaa1", "payments", "", "warning",
            "{\"instance\":\"web-1\"}", NULL, T0 + 2000);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incident_alerts", NULL), 2);
  assert_int_equal(ifx_events(f, "incident.updated"), 1);
  /* another team, another application, another rule: their own incidents */
  ifx_alert(f, "alert.firing", "disk-full", "bbbbbbbbbbbbbbb1", "search", "", "warning", "{}", NULL,
            T0 + 3000);
  ifx_alert(f, "alert.firing", "disk-full", "bbbbbbbbbbbbbbb2", "payments", "checkout", "warning",
            "{}", NULL, T0 + 4000);
  ifx_alert(f, "alert.firing", "load-high", "ccccccccccccccc1", "payments", "", "warning", "{}",
            NULL, T0 + 5000);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents", NULL), 4);
  /* incident_group folds two rules into one incident */
  ifx_alert(f, "alert.firing", "db-down", "ddddddddddddddd1", "payments", "", "critical",
            "{\"incident_group\":\"database\"}", "primary down", T0 + 6000);
  ifx_alert(f, "alert.firing", "db-lag", "ddddddddddddddd2", "payments", "", "warning",
            "{\"incident_group\":\"database\"}", NULL, T0 + 7000);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents", NULL), 5);
  inc = ifx_newest(f);
  assert_string_equal(keel_json_str(json_object_get(inc, "group"), "incident_group"), "database");
  assert_int_equal(json_array_size(json_object_get(inc, "alerts")), 2);
  json_decref(inc);
  assert_int_equal(ifx_events(f, "incident.opened"), 5);
  /* without a title annotation: the alertname */
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents WHERE title = 'load-high'", NULL), 1);
}

static void test_auto_resolve_and_reopen(void **state) {
  ifx_t *f = *state;
  json_t *inc;
  char buf[512], first[40];
  ifx_alert(f, "alert.firing", "svc-down", "eeeeeeeeeeeeeee1", "ops", "", "critical", "{}", NULL, T0);
  ifx_alert(f, "alert.firing", "svc-down", "eeeeeeeeeeeeeee2", "ops", "", "critical", "{}", NULL, T0 + 10);
  ifx_alert(f, "alert.resolved", "svc-down", "eeeeeeeeeeeeeee1", "ops", "", "critical", "{}", NULL,
            T0 + 20);
  inc = ifx_newest(f);
  snprintf(first, sizeof first, "%s", keel_json_str(inc, "id"));
  assert_string_equal(keel_json_str(inc, "state"), "open"); /* one alert still fires */
  json_decref(inc);
  /* resolved, then firing again while the incident lives: back in it */
  ifx_alert(f, "alert.firing", "svc-down", "eeeeeeeeeeeeeee1", "ops", "", "critical", "{}", NULL, T0 + 30);
  ifx_alert(f, "alert.resolved", "svc-down", "eeeeeeeeeeeeeee1", "ops", "", "critical", "{}", NULL,
            T0 + 40);
  ifx_alert(f, "alert.resolved", "svc-down", "eeeeeeeeeeeeeee2", "ops", "", "critical", "{}", NULL,
            T0 + 50);
  inc = ifx_newest(f);
  assert_string_equal(keel_json_str(inc, "state"), "resolved");
  assert_string_equal(keel_json_str(inc, "resolved_by"), "keeld");
  assert_string_equal(kinds_of(inc, buf, sizeof buf),
                      "opened,alert.firing,notification.none,alert.firing,alert.resolved,"
                      "alert.refiring,alert.resolved,alert.resolved,resolved");
  json_decref(inc);
  assert_int_equal(ifx_events(f, "incident.resolved"), 1);
  /* a late resolved event for an alert of a resolved incident changes nothing */
  ifx_alert(f, "alert.resolved", "svc-down", "eeeeeeeeeeeeeee2", "ops", "", "critical", "{}", NULL,
            T0 + 60);
  assert_int_equal(ifx_events(f, "incident.resolved"), 1);
  /* firing again after the incident resolved: a new incident */
  ifx_alert(f, "alert.firing", "svc-down", "eeeeeeeeeeeeeee1", "ops", "", "critical", "{}", NULL, T0 + 70);
  inc = ifx_newest(f);
  assert_string_not_equal(keel_json_str(inc, "id"), first);
  assert_string_equal(keel_json_str(inc, "state"), "open");
  json_decref(inc);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents WHERE state = 'resolved'", NULL), 1);
}

static void test_ack_resolve_comment(void **state) {
  ifx_t *f = *state;
  keel_err_t e = {0};
  json_t *inc;
  char id[40], buf[512];
  const json_t *t;
  ifx_alert(f, "alert.firing", "api-5xx", "fffffffffffffff1", "web", "shop", "critical", "{}",
            "5xx over 5%", T0);
  inc = ifx_newest(f);
  snprintf(id, sizeof id, "%s", keel_json_str(inc, "id"));
  json_decref(inc);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_COMMENT, "user:alice", "looking", T0 + 1, &e), 0);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_ACK, "user:alice", "", T0 + 2, &e), 0);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_ACK, "user:bob", "", T0 + 3, &e), KEEL_ECONFLICT);
  assert_non_null(strstr(e.msg, "user:alice"));
  assert_int_equal(ifx_act(f, id, K_INCIDENT_RESOLVE, "user:bob", "fixed", T0 + 4, &e), 0);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_RESOLVE, "user:bob", "", T0 + 5, &e), KEEL_ECONFLICT);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_ACK, "user:bob", "", T0 + 5, &e), KEEL_ECONFLICT);
  assert_int_equal(ifx_act(f, id, K_INCIDENT_COMMENT, "user:carol", "postmortem tomorrow", T0 + 6, &e), 0);
  assert_int_equal(ifx_act(f, "inc_nope", K_INCIDENT_ACK, "user:bob", "", T0 + 7, &e), KEEL_ENOENT);
  assert_int_equal(k_incident_get(f->x, id, &inc, &e), 0);
  assert_string_equal(keel_json_str(inc, "state"), "resolved");
  assert_string_equal(keel_json_str(inc, "acked_by"), "user:alice");
  assert_string_equal(keel_json_str(inc, "resolved_by"), "user:bob");
  assert_string_equal(kinds_of(inc, buf, sizeof buf),
                      "opened,alert.firing,notification.none,comment,acked,resolved,comment");
  t = json_array_get(json_object_get(inc, "timeline"), 3);
  assert_string_equal(keel_json_str(t, "actor"), "user:alice");
  assert_string_equal(keel_json_str(t, "text"), "looking");
  assert_int_equal(json_integer_value(json_object_get(t, "seq")), 4);
  json_decref(inc);
  assert_int_equal(ifx_events(f, "incident.acked"), 1);
  assert_int_equal(ifx_events(f, "incident.commented"), 2);
  assert_int_equal(ifx_events(f, "incident.resolved"), 1);
  /* the data shape of docs/events.md, on the application's path */
  {
    k_events_query_t q = {"incident.acked", NULL, 0, 0, 10};
    json_t *items = NULL, *d;
    assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
    d = json_object_get(json_array_get(items, 0), "data");
    assert_string_equal(keel_json_str(d, "by"), "user:alice");
    assert_string_equal(keel_json_str(d, "state"), "acked");
    assert_string_equal(keel_json_str(d, "application"), "shop");
    assert_string_equal(json_string_value(json_array_get(json_object_get(d, "alerts"), 0)),
                        "api-5xx/fffffffffffffff1");
    assert_non_null(strstr(keel_json_str(json_array_get(items, 0), "path"), "app/shop/incident/inc_"));
    json_decref(items);
  }
  /* a list filtered by state and team */
  {
    json_t *items = NULL;
    char *next = NULL;
    assert_int_equal(k_incident_list(f->x, "resolved", "web", NULL, 10, &items, &next, &e), 0);
    assert_int_equal(json_array_size(items), 1);
    json_decref(items);
    assert_int_equal(k_incident_list(f->x, "open", "web", NULL, 10, &items, &next, &e), 0);
    assert_int_equal(json_array_size(items), 0);
    json_decref(items);
  }
}

static void test_related_executions(void **state) {
  ifx_t *f = *state;
  json_t *data, *inc;
  k_event_t ev;
  char buf[512];
  ifx_alert(f, "alert.firing", "nginx-down", "0000000000000001", "web", "", "critical",
            "{\"agent_id\":\"agt_web1\",\"instance\":\"web-1\"}", NULL, T0);
  data = json_pack("{s:s,s:s,s:s,s:s,s:s,s:[{s:s,s:s,s:s}]}", "id", "exe_1", "runbook",
                   "restart-nginx", "status", "succeeded", "owner", "alice", "cause",
                   "automation/heal", "targets", "agent_id", "agt_web1", "hostname", "web-1",
                   "status", "succeeded");
  memset(&ev, 0, sizeof ev);
  ev.type = "execution.finished";
  ev.subject = "exe_1";
  ev.cause = "automation/heal";
  ev.data = data;
  k_incidents_event(f->x, &ev, T0 + 100);
  json_decref(data);
  /* an execution on another host is not this incident's */
  data = json_pack("{s:s,s:s,s:[{s:s,s:s}]}", "id", "exe_2", "runbook", "x", "targets", "agent_id",
                   "agt_other", "hostname", "db-1");
  ev.subject = "exe_2";
  ev.cause = NULL;
  ev.data = data;
  k_incidents_event(f->x, &ev, T0 + 200);
  json_decref(data);
  inc = ifx_newest(f);
  assert_string_equal(kinds_of(inc, buf, sizeof buf),
                      "opened,alert.firing,notification.none,execution.finished");
  data = json_object_get(json_array_get(json_object_get(inc, "timeline"), 3), "data");
  assert_string_equal(keel_json_str(data, "execution"), "exe_1");
  assert_string_equal(keel_json_str(data, "cause"), "automation/heal");
  json_decref(inc);
  /* the incident.updated it emitted carries the execution's cause (loop guards) */
  {
    k_events_query_t q = {"incident.updated", NULL, 0, 0, 10};
    json_t *items = NULL;
    keel_err_t e = {0};
    assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(keel_json_str(json_array_get(items, 0), "keelcause"), "automation/heal");
    json_decref(items);
  }
}

/* A storm: 1,000 hosts fire one rule, so 1,000 alerts join one incident.
 * Every alert joins (no unit rolled back by an oversized event), the
 * incident.* data and the notifications stay bounded, and what an event
 * reads from the store does not grow with the incident. */
static uint64_t rows_of_alert(ifx_t *f, const char *type, const char *rule, int i, int64_t now) {
  char fp[17], labels[128];
  uint64_t before = k_incidents_rows_read(f->x);
  snprintf(fp, sizeof fp, "%016x", (unsigned)i);
  snprintf(labels, sizeof labels, "{\"agent_id\":\"agt_%d\",\"instance\":\"host-%d\"}", i, i);
  ifx_alert(f, type, rule, fp, "ops", "", i % 7 ? "warning" : "critical", labels, NULL, now);
  return k_incidents_rows_read(f->x) - before;
}

static int body_row(void *ud, const k_val_t *c, int n) {
  if (n >= 1 && c[0].type == K_VAL_TEXT) *(json_t **)ud = json_loads(c[0].s, 0, NULL);
  return 0;
}

static void test_storm_is_bounded(void **state) {
  enum { N = 1000 };
  ifx_t *f = *state;
  char rule[201], sql[256];
  uint64_t join_early = 0, join_mid = 0, join_late = 0, res_early = 0, res_late = 0, exe;
  k_events_query_t q = {"incident.*", NULL, 0, 0, 1000};
  json_t *items = NULL, *it, *d, *inc, *data;
  keel_err_t e = {0};
  k_event_t ev;
  size_t i, n = 0;
  int64_t after = 0;

  /* long rule names: 50 subjects would pass the subjects' byte budget */
  memset(rule, 'r', 200);
  rule[200] = '\0';
  ifx_apply(f,
            "kind: NotificationPolicy\n"
            "team: ops\n"
            "channels:\n"
            "  - name: am\n"
            "    url: http://127.0.0.1:9/am\n"
            "    format: alertmanager-webhook\n"
            "routes:\n"
            "  - steps:\n"
            "      - notify: [am]\n",
            T0);
  for (int k = 0; k < N; k++) {
    uint64_t r = rows_of_alert(f, "alert.firing", rule, k, T0 + k);
    if (k == 200) join_early = r;
    if (k == N / 2) join_mid = r;
    if (k == N - 1) join_late = r;
  }
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents", NULL), 1);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incident_alerts", NULL), N);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incidents WHERE alerts_total = 1000"
                                " AND alerts_firing = 1000 AND severity = 'critical'", NULL), 1);
  /* a join reads the same rows with 200, 500 or 999 alerts in the incident
   * (the first 100 alerts for the notification, a few rows more) */
  assert_int_equal(join_mid, join_early);
  assert_int_equal(join_late, join_early);
  assert_true(join_late <= K_INCIDENT_NOTIFY_ALERTS + K_INCIDENT_EVENT_ALERTS + 20);
  /* every notification carries at most 100 alerts and says how many it left out */
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM notification_outbox WHERE transition = 'firing#%d'", N);
  assert_int_equal(ifx_count(f, sql, NULL), 1);
  {
    json_t *b = NULL;
    k_val_t v[] = {K_TEXT("firing#1000")};
    assert_int_equal(k_store_exec(f->s, "SELECT body FROM notification_outbox WHERE transition = ?", v,
                                  1, body_row, &b, &e), 0);
    assert_non_null(b);
    assert_int_equal(json_array_size(json_object_get(b, "alerts")), K_INCIDENT_NOTIFY_ALERTS);
    assert_int_equal(json_integer_value(json_object_get(b, "truncatedAlerts")), N - K_INCIDENT_NOTIFY_ALERTS);
    json_decref(b);
  }
  /* an execution on one host: found by key, not by reading every alert */
  data = json_pack("{s:s,s:s,s:s,s:[{s:s,s:s}]}", "id", "exe_1", "runbook", "heal", "status",
                   "succeeded", "targets", "agent_id", "agt_7", "hostname", "host-7");
  memset(&ev, 0, sizeof ev);
  ev.type = "execution.finished";
  ev.subject = "exe_1";
  ev.data = data;
  exe = k_incidents_rows_read(f->x);
  k_incidents_event(f->x, &ev, T0 + N + 1);
  exe = k_incidents_rows_read(f->x) - exe;
  json_decref(data);
  assert_true(exe <= K_INCIDENT_EVENT_ALERTS + 10);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incident_timeline WHERE kind = 'execution.finished'", NULL), 1);
  /* resolving: the first and the 999th alike; the last resolves the incident */
  for (int k = 0; k < N; k++) {
    uint64_t r = rows_of_alert(f, "alert.resolved", rule, k, T0 + 2 * N + k);
    if (k == 200) res_early = r;
    if (k == N - 2) res_late = r;
  }
  assert_int_equal(res_late, res_early);
  inc = ifx_newest(f);
  assert_string_equal(keel_json_str(inc, "state"), "resolved");
  assert_int_equal(json_array_size(json_object_get(inc, "alerts")), N); /* the API lists them all */
  json_decref(inc);
  assert_int_equal(ifx_count(f, "SELECT COUNT(*) FROM incident_hosts", NULL), 0);
  /* every incident.* event's data is bounded: 50 subjects at most, within
   * the byte budget, with the total and how many were left out */
  for (;;) {
    q.after_seq = after;
    assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
    if (!json_array_size(items)) break;
    json_array_foreach(items, i, it) {
      char *text;
      size_t listed;
      d = json_object_get(it, "data");
      text = keel_json_canonical(d);
      assert_true(strlen(text) < K_EVENT_DATA_MAX);
      free(text);
      listed = json_array_size(json_object_get(d, "alerts"));
      assert_true(listed <= K_INCIDENT_EVENT_ALERTS);
      assert_true(listed * (strlen(rule) + 20) <= K_INCIDENT_EVENT_ALERT_BYTES);
      assert_int_equal(json_integer_value(json_object_get(d, "alerts_total")),
                       (json_int_t)listed + json_integer_value(json_object_get(d, "alerts_truncated")));
      after = json_integer_value(json_object_get(it, "keelseq"));
      n++;
    }
    json_decref(items);
    items = NULL;
  }
  json_decref(items);
  /* opened, 999 joins, 1 execution, 999 resolutions, resolved */
  assert_int_equal(n, 1 + (N - 1) + 1 + (N - 1) + 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_grouping_and_dedup, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_auto_resolve_and_reopen, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_ack_resolve_comment, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_related_executions, ifx_setup, ifx_teardown),
      cmocka_unit_test_setup_teardown(test_storm_is_bounded, ifx_setup, ifx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
