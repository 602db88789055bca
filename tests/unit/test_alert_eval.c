/* Unit tests for the alert engine's evaluation (alert/alert.h) with an
 * injected clock, over a real store, the real event engine and a real TSDB
 * in a temporary directory: `for`, `keep_firing_for`, flapping, resolved
 * alerts and their removal, a restart keeping active_since and not firing
 * again, expr rules over appended samples, event rules (type, clear,
 * match, by, without clear), templates, fingerprints and $value; an
 * expr parsed once for all its evaluations, its tree replaced only when
 * the expr changes (ASan's leak check sees every replaced tree freed). */
#include "keeld_testutil.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alert/alert.h"
#include "alert/alert_int.h" /* the parsed trees, to see that they are kept and replaced */
#include "alert/doc.h"
#include "event/event.h"
#include "keel/json.h"
#include "keel/time.h"
#include "metrics/tsdb.h"
#include "store/store.h"

/* ---- fixture ------------------------------------------------------------------------------ */

typedef struct fx {
  char dir[256];
  k_store_t *s;
  k_events_t *ev;
  k_tsdb_t *db;
  k_alerts_t *a;
  int64_t t0; /* near the wall clock: the TSDB refuses samples far ahead of it */
} fx_t;

static int querier(void *ud, k_querier_t **q, keel_err_t *e) {
  return k_tsdb_querier(ud, q, e);
}

static void open_engine(fx_t *x) {
  keel_err_t e = {0};
  k_alerts_deps_t d = {x->s, x->ev, NULL, querier, x->db, NULL};
  if (k_alerts_open(&d, &x->a, &e)) fail_msg("alerts open: %s", e.msg);
}

static void fx_open(fx_t *x) {
  keel_err_t e = {0};
  char path[300];
  memset(x, 0, sizeof *x);
  if (kt_mkdtemp(x->dir, sizeof x->dir)) fail_msg("mkdtemp");
  if (k_store_open(x->dir, 1, NULL, &x->s, &e)) fail_msg("store open: %s", e.msg);
  if (k_events_open(x->s, NULL, 86400000, &x->ev, &e)) fail_msg("events open: %s", e.msg);
  snprintf(path, sizeof path, "%s/tsdb", x->dir);
  if (k_tsdb_open(path, NULL, NULL, &x->db, &e)) fail_msg("tsdb open: %s", e.msg);
  x->t0 = keel_now_ms() / 1000 * 1000;
  open_engine(x);
}

/* keeld stopping and starting again on the same store: the engines go,
 * memory with them. */
static void fx_restart(fx_t *x) {
  keel_err_t e = {0};
  k_alerts_close(x->a);
  k_events_close(x->ev);
  if (k_events_open(x->s, NULL, 86400000, &x->ev, &e)) fail_msg("events open: %s", e.msg);
  open_engine(x);
}

static void fx_close(fx_t *x) {
  k_alerts_close(x->a);
  k_events_close(x->ev);
  k_tsdb_close(x->db);
  k_store_close(x->s);
  kt_rmrf(x->dir);
}

/* The loop's commit and events phases: flush, fsync, deliver. */
static void commit(fx_t *x) {
  keel_err_t e = {0};
  if (k_store_flush(x->s, &e) || k_store_sync_wait(x->s, &e)) fail_msg("flush: %s", e.msg);
  k_events_dispatch(x->ev, k_store_durable_gen(x->s));
}

static int64_t tick(fx_t *x, int64_t at) {
  int64_t w = k_alerts_tick(x->a, x->t0 + at);
  commit(x);
  return w;
}

static void apply(fx_t *x, const char *yaml) {
  json_t *rule = NULL, *report = NULL;
  keel_err_t e = {0};
  keel_buf_t detail;
  keel_buf_init(&detail, 4096);
  if (k_alert_doc_load("rule.yaml", yaml, strlen(yaml), &rule, &e)) fail_msg("%s", e.msg);
  if (k_store_unit_begin(x->s, &e) ||
      k_alerts_apply(x->a, rule, 0, x->t0, &report, &detail, &e) ||
      k_store_unit_end(x->s, 1, &e))
    fail_msg("apply: %s", e.msg);
  commit(x);
  json_decref(rule);
  json_decref(report);
  keel_buf_free(&detail);
}

/* m{host=H} = v at t0 + at, committed. */
static void sample(fx_t *x, const char *metric, const char *host, int64_t at, double v) {
  k_label_t l[] = {{"__name__", metric}, {"host", host}};
  keel_err_t e = {0};
  uint64_t gen;
  if (k_tsdb_append(x->db, l, 2, x->t0 + at, v, &e)) fail_msg("append: %s", e.msg);
  if (k_tsdb_commit(x->db, &gen, &e)) fail_msg("commit: %s", e.msg);
}

/* An event as the other engines emit it, committed and delivered. */
static void event(fx_t *x, const char *type, const char *subject, const char *labels_json) {
  json_t *data = json_pack("{s:o}", "labels", json_loads(labels_json, 0, NULL));
  k_event_t ev = {0, NULL, NULL, type, subject, 0, NULL, NULL, data};
  keel_err_t e = {0};
  if (k_store_unit_begin(x->s, &e) || k_event_emit(x->ev, &ev, NULL, &e) ||
      k_store_unit_end(x->s, 1, &e))
    fail_msg("emit: %s", e.msg);
  json_decref(data);
  commit(x);
}

/* The alerts (state NULL: pending and firing), as the API lists them. */
static json_t *alerts(fx_t *x, const char *state) {
  json_t *items = NULL;
  char *next = NULL;
  keel_err_t e = {0};
  if (k_alerts_list(x->a, state, NULL, NULL, 1000, &items, &next, &e)) fail_msg("list: %s", e.msg);
  free(next);
  return items;
}

/* "type@ms-since-t0 ..." of the alert.* events so far, oldest first. */
static char *history(fx_t *x) {
  k_events_query_t q = {"alert.*", NULL, 0, 0, 1000};
  json_t *items = NULL, *it;
  keel_err_t e = {0};
  keel_buf_t b;
  size_t i;
  if (k_events_list(x->ev, &q, &items, &e)) fail_msg("events: %s", e.msg);
  keel_buf_init(&b, 1 << 20);
  json_array_foreach(items, i, it) {
    int64_t ms = 0;
    keel_time_parse(keel_json_str(it, "time"), &ms);
    keel_buf_printf(&b, "%s%s@%lld", i ? " " : "", keel_json_str(it, "type") + 6,
                    (long long)(ms - x->t0));
  }
  json_decref(items);
  return b.data ? keel_buf_steal(&b) : strdup("");
}

static void expect_history(fx_t *x, const char *want) {
  char *h = history(x);
  if (strcmp(h, want)) fail_msg("alert events:\n  got  %s\n  want %s", h, want);
  free(h);
}

static int64_t ms_of(const json_t *o, const char *key) {
  int64_t ms = 0;
  const char *s = keel_json_str(o, key);
  if (!s) return -1;
  keel_time_parse(s, &ms);
  return ms;
}

/* The one alert of the list: its state, and times relative to t0. */
static void expect_one(fx_t *x, const char *state, const char *want_state, int64_t active,
                       int64_t fired) {
  json_t *items = alerts(x, state), *it;
  assert_int_equal(json_array_size(items), 1);
  it = json_array_get(items, 0);
  assert_string_equal(keel_json_str(it, "state"), want_state);
  assert_int_equal(ms_of(it, "active_since") - x->t0, active);
  if (fired >= 0) assert_int_equal(ms_of(it, "fired_at") - x->t0, fired);
  else assert_int_equal(ms_of(it, "fired_at"), -1);
  json_decref(items);
}

static void expect_none(fx_t *x) {
  json_t *items = alerts(x, NULL);
  assert_int_equal(json_array_size(items), 0);
  json_decref(items);
}

#define RULE(extra)                                                                              \
  "kind: AlertRule\nname: load\nteam: ops\nseverity: warning\nexpr: m > 0\ninterval: 1s\n" extra

/* ---- expr rules: the state machine ------------------------------------------------------- */

static void test_for(void **state) {
  fx_t x;
  (void)state;
  fx_open(&x);
  apply(&x, RULE("for: 2s\n"));
  sample(&x, "m", "a", 0, 1);
  assert_int_equal(tick(&x, 0), 1000); /* next due in the rule's interval */
  expect_one(&x, NULL, "pending", 0, -1);
  tick(&x, 1000);
  expect_one(&x, NULL, "pending", 0, -1);
  tick(&x, 1999); /* not due yet: nothing happens */
  tick(&x, 2000);
  expect_one(&x, NULL, "firing", 0, 2000);
  tick(&x, 3000);
  expect_history(&x, "pending@0 firing@2000");
  sample(&x, "m", "a", 3500, 0);
  tick(&x, 4000);
  expect_none(&x);
  expect_one(&x, "resolved", "resolved", 0, 2000);
  expect_history(&x, "pending@0 firing@2000 resolved@4000");
  fx_close(&x);
}

static void test_for_zero_fires_at_once(void **state) {
  fx_t x;
  (void)state;
  fx_open(&x);
  apply(&x, RULE(""));
  sample(&x, "m", "a", 0, 1);
  tick(&x, 0);
  expect_one(&x, NULL, "firing", 0, 0);
  expect_history(&x, "firing@0"); /* no pending on the way */
  fx_close(&x);
}

static void test_keep_firing_for(void **state) {
  fx_t x;
  json_t *items;
  (void)state;
  fx_open(&x);
  apply(&x, RULE("keep_firing_for: 3s\n"));
  sample(&x, "m", "a", 0, 1);
  tick(&x, 0);
  sample(&x, "m", "a", 500, 0);
  tick(&x, 1000); /* condition gone: keeps firing from here */
  items = alerts(&x, NULL);
  assert_int_equal(ms_of(json_array_get(items, 0), "keep_firing_since") - x.t0, 1000);
  json_decref(items);
  tick(&x, 2000);
  sample(&x, "m", "a", 2500, 1);
  tick(&x, 3000); /* back: keep_firing_for starts over next time */
  items = alerts(&x, NULL);
  assert_int_equal(ms_of(json_array_get(items, 0), "keep_firing_since"), -1);
  json_decref(items);
  sample(&x, "m", "a", 3500, 0);
  tick(&x, 4000);
  tick(&x, 5000);
  tick(&x, 6000);
  expect_one(&x, NULL, "firing", 0, 0);
  tick(&x, 7000); /* 4000 + 3s */
  expect_none(&x);
  expect_history(&x, "firing@0 resolved@7000");
  fx_close(&x);
}

static void test_flapping(void **state) {
  fx_t x;
  json_t *items, *it;
  (void)state;
  fx_open(&x);
  apply(&x, RULE("for: 2s\n"));
  sample(&x, "m", "a", 0, 1);
  tick(&x, 0);
  sample(&x, "m", "a", 500, 0);
  tick(&x, 1000); /* pending, then gone: resolved, never fired */
  expect_none(&x);
  items = alerts(&x, "resolved");
  it = json_array_get(items, 0);
  assert_string_equal(keel_json_str(it, "state"), "resolved");
  assert_true(json_is_null(json_object_get(it, "fired_at")));
  json_decref(items);
  sample(&x, "m", "a", 1500, 1);
  tick(&x, 2000); /* back: a new pending alert, `for` from now */
  expect_one(&x, NULL, "pending", 2000, -1);
  tick(&x, 3000);
  sample(&x, "m", "a", 3500, 0);
  tick(&x, 4000);
  sample(&x, "m", "a", 4500, 1);
  tick(&x, 5000);
  tick(&x, 6000);
  tick(&x, 7000);
  expect_one(&x, NULL, "firing", 5000, 7000);
  expect_history(&x, "pending@0 resolved@1000 pending@2000 resolved@4000 pending@5000 firing@7000");
  fx_close(&x);
}

static void test_resolved_kept_then_deleted(void **state) {
  fx_t x;
  json_t *items;
  (void)state;
  fx_open(&x);
  apply(&x, RULE(""));
  sample(&x, "m", "a", 0, 1);
  tick(&x, 0);
  sample(&x, "m", "a", 500, 0);
  tick(&x, 1000);
  assert_int_equal(kt_int(x.s, "SELECT COUNT(*) FROM alert_instances WHERE state = 'resolved'"), 1);
  tick(&x, 1000 + K_ALERT_RESOLVED_KEEP_MS); /* not yet: kept 15 min */
  items = alerts(&x, "all");
  assert_int_equal(json_array_size(items), 1);
  json_decref(items);
  tick(&x, 2000 + K_ALERT_RESOLVED_KEEP_MS);
  items = alerts(&x, "all");
  assert_int_equal(json_array_size(items), 0);
  json_decref(items);
  assert_int_equal(kt_int(x.s, "SELECT COUNT(*) FROM alert_instances"), 0);
  expect_history(&x, "firing@0 resolved@1000"); /* forgetting is not an event */
  fx_close(&x);
}

static void test_restart_keeps_state(void **state) {
  fx_t x;
  (void)state;
  fx_open(&x);
  apply(&x, RULE("for: 3s\n"));
  sample(&x, "m", "a", 0, 1);
  tick(&x, 0);
  tick(&x, 1000);
  fx_restart(&x); /* pending: `for` is not reset */
  expect_one(&x, NULL, "pending", 0, -1);
  tick(&x, 2000);
  expect_one(&x, NULL, "pending", 0, -1);
  tick(&x, 3000);
  expect_one(&x, NULL, "firing", 0, 3000);
  fx_restart(&x); /* firing: no second alert.firing */
  tick(&x, 4000);
  tick(&x, 5000);
  expect_one(&x, NULL, "firing", 0, 3000);
  expect_history(&x, "pending@0 firing@3000");
  fx_close(&x);
}

static void test_expr_labels_and_templates(void **state) {
  fx_t x;
  json_t *items, *it;
  (void)state;
  fx_open(&x);
  apply(&x, "kind: AlertRule\nname: load\napplication: shop\nseverity: critical\n"
            "expr: m > 1000\ninterval: 1s\n"
            "labels: {by_host: 'h-{{ $labels.host }}', team: ops}\n"
            "annotations: {summary: '{{ $labels.host }} is {{ $value }}{{ $labels.none }}',"
            " name: '{{ $labels.__name__ }}'}\n");
  sample(&x, "m", "a", 0, 2000000);
  sample(&x, "m", "b", 0, 1500.25);
  sample(&x, "m", "c", 0, 5); /* below the threshold: no alert */
  tick(&x, 0);
  items = alerts(&x, NULL);
  assert_int_equal(json_array_size(items), 2);
  {
    /* the two alerts are ordered by fingerprint: find host a's */
    size_t i;
    json_t *cand;
    it = NULL;
    json_array_foreach(items, i, cand) {
      if (!strcmp(keel_json_str(json_object_get(cand, "labels"), "host"), "a")) it = cand;
    }
    assert_non_null(it);
  }
  {
    json_t *want = json_pack("{s:s,s:s,s:s,s:s,s:s}", "alertname", "load", "severity", "critical",
                             "host", "a", "by_host", "h-a", "team", "ops");
    char fp[17];
    assert_true(json_equal(json_object_get(it, "labels"), want));
    k_alert_fingerprint(want, fp);
    assert_string_equal(keel_json_str(it, "fingerprint"), fp);
    json_decref(want);
  }
  assert_string_equal(keel_json_str(json_object_get(it, "annotations"), "summary"), "a is 2e+06");
  assert_string_equal(keel_json_str(json_object_get(it, "annotations"), "name"), "m");
  assert_true(json_real_value(json_object_get(it, "value")) == 2000000.0);
  assert_string_equal(keel_json_str(it, "application"), "shop");
  assert_string_equal(keel_json_str(it, "path"), "app/shop/alert/load");
  json_decref(items);
  fx_close(&x);
}

static void test_expr_errors_change_nothing(void **state) {
  fx_t x;
  json_t *r = NULL;
  keel_err_t e = {0};
  (void)state;
  fx_open(&x);
  /* two series that are one label set once the metric name is gone */
  apply(&x, "kind: AlertRule\nname: dup\nteam: ops\nseverity: info\n"
            "expr: '{__name__=~\"m|n\"}'\ninterval: 1s\n");
  sample(&x, "m", "a", 0, 1);
  sample(&x, "n", "a", 0, 1);
  tick(&x, 0);
  expect_none(&x);
  assert_int_equal(k_alerts_rule_get(x.a, "dup", &r, &e), 0);
  assert_string_equal(keel_json_str(r, "health"), "error");
  assert_string_equal(keel_json_str(r, "last_error"),
                      "vector contains metrics with the same labelset after applying alert labels");
  assert_int_equal(ms_of(r, "last_evaluation"), x.t0);
  json_decref(r);
  /* a scalar is one alert without labels but the rule's */
  apply(&x, "kind: AlertRule\nname: scalar\nteam: ops\nseverity: info\nexpr: '1 + 1'\n");
  tick(&x, 1000);
  {
    json_t *items = NULL;
    char *next = NULL;
    assert_int_equal(k_alerts_list(x.a, NULL, "scalar", NULL, 10, &items, &next, &e), 0);
    assert_int_equal(json_array_size(items), 1);
    assert_int_equal(json_object_size(json_object_get(json_array_get(items, 0), "labels")), 2);
    json_decref(items);
  }
  fx_close(&x);
}

static const k_promql_expr_t *tree_of(fx_t *x, const char *rule) {
  const rule_t *r = k_alert_find_rule(x->a, rule);
  assert_non_null(r);
  return r->pexpr;
}

/* The one alert's labels, value and state: what must not change from one
 * evaluation of the same tree to the next. */
static char *alert_text(fx_t *x) {
  json_t *items = alerts(x, NULL), *it = json_array_get(items, 0);
  json_t *o = json_pack("{s:O,s:O,s:O}", "labels", json_object_get(it, "labels"), "value",
                        json_object_get(it, "value"), "state", json_object_get(it, "state"));
  char *t = keel_json_canonical(o);
  assert_int_equal(json_array_size(items), 1);
  json_decref(o);
  json_decref(items);
  return t;
}

static void test_expr_parsed_once(void **state) {
  fx_t x;
  const k_promql_expr_t *tree;
  k_alert_stats_t st;
  char *first, *now;
  json_t *r = NULL;
  keel_err_t e = {0};
  (void)state;
  fx_open(&x);
  apply(&x, RULE(""));
  sample(&x, "m", "a", 0, 3);
  tick(&x, 0);
  tree = tree_of(&x, "load");
  assert_non_null(tree);
  first = alert_text(&x);
  for (int i = 1; i < 60; i++) {
    tick(&x, i * 1000);
    assert_ptr_equal(tree_of(&x, "load"), tree); /* never parsed again */
    now = alert_text(&x);
    assert_string_equal(now, first);
    free(now);
  }
  free(first);
  expect_history(&x, "firing@0");
  k_alerts_stats(x.a, &st);
  assert_int_equal(st.rules, 1);
  assert_int_equal(st.firing, 1);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.evaluations, 60);
  assert_int_equal(st.evaluation_failures, 0);
  assert_int_equal(st.evaluation_seconds.count, 60);

  /* re-applied with the same expr: every rule is reloaded, the tree kept */
  apply(&x, RULE("for: 1s\n"));
  tick(&x, 60000);
  assert_ptr_equal(tree_of(&x, "load"), tree);
  /* a new expr: a new tree, the old one freed with its rule */
  apply(&x, "kind: AlertRule\nname: load\nteam: ops\nseverity: warning\nexpr: m > 2\ninterval: 1s\n");
  tick(&x, 61000);
  assert_ptr_not_equal(tree_of(&x, "load"), tree);
  tree = tree_of(&x, "load");
  assert_non_null(tree);
  expect_one(&x, NULL, "firing", 0, 0); /* 3 > 2: the same alert */
  /* a stored expr that no longer parses: the rule stays, in error */
  if (k_store_unit_begin(x.s, &e) ||
      k_store_exec(x.s, "UPDATE alert_rules SET spec = json_set(spec, '$.expr', 'm >')", NULL, 0,
                   NULL, NULL, &e) ||
      k_store_unit_end(x.s, 1, &e))
    fail_msg("update: %s", e.msg);
  commit(&x);
  assert_int_equal(k_alerts_reload(x.a, &e), 0);
  assert_null(tree_of(&x, "load"));
  tick(&x, 62000);
  assert_int_equal(k_alerts_rule_get(x.a, "load", &r, &e), 0);
  assert_string_equal(keel_json_str(r, "health"), "error");
  assert_non_null(strstr(keel_json_str(r, "last_error"), "parse error"));
  json_decref(r);
  k_alerts_stats(x.a, &st);
  assert_int_equal(st.evaluation_failures, 1);
  expect_one(&x, NULL, "firing", 0, 0); /* a failed evaluation changes no alert */
  /* removed: the rule and its tree go (fx_close frees nothing of it) */
  if (k_store_unit_begin(x.s, &e) || k_alerts_rule_delete(x.a, "load", x.t0 + 62500, &r, &e) ||
      k_store_unit_end(x.s, 1, &e))
    fail_msg("delete: %s", e.msg);
  json_decref(r);
  commit(&x);
  assert_int_equal(tick(&x, 63000), -1);
  assert_null(k_alert_find_rule(x.a, "load"));
  k_alerts_stats(x.a, &st);
  assert_int_equal(st.rules, 0);
  assert_int_equal(st.firing, 0);
  fx_close(&x);
}

/* ---- event rules --------------------------------------------------------------------------- */

#define H1 "{\"instance\": \"web-1\", \"agent_id\": \"agt_1\", \"env\": \"prod\"}"
#define H2 "{\"instance\": \"web-2\", \"agent_id\": \"agt_2\", \"env\": \"prod\"}"
#define H3 "{\"instance\": \"dev-1\", \"agent_id\": \"agt_3\", \"env\": \"dev\"}"

static void test_event_type_and_clear(void **state) {
  fx_t x;
  json_t *items, *it;
  (void)state;
  fx_open(&x);
  apply(&x, "kind: AlertRule\nname: down\nteam: ops\nseverity: critical\n"
            "event: {type: agent.offline, clear: agent.online, match: env=prod}\n"
            "for: 1s\ninterval: 10s\n"
            "annotations: {summary: '{{ $labels.instance }} is offline{{ $value }}'}\n");
  tick(&x, 0);
  event(&x, "agent.offline", "agt_1", H1);
  event(&x, "agent.offline", "agt_3", H3); /* env=dev: not matched */
  assert_int_equal(k_alerts_wait_ms(x.a, x.t0 + 100), 0); /* due at once after the event */
  tick(&x, 100);
  expect_one(&x, NULL, "pending", 100, -1);
  items = alerts(&x, NULL);
  it = json_array_get(items, 0);
  assert_string_equal(keel_json_str(json_object_get(it, "labels"), "instance"), "web-1");
  assert_string_equal(keel_json_str(json_object_get(it, "annotations"), "summary"),
                      "web-1 is offline");
  assert_true(json_is_null(json_object_get(it, "value")));
  json_decref(items);
  event(&x, "agent.offline", "agt_1", H1); /* again: the same alert */
  tick(&x, 200);
  expect_one(&x, NULL, "pending", 100, -1);
  tick(&x, 1100); /* no evaluation is due before 10.2 s */
  expect_one(&x, NULL, "pending", 100, -1);
  fx_restart(&x); /* the condition comes back from the alerts */
  tick(&x, 10100);
  expect_one(&x, NULL, "firing", 100, 10100);
  event(&x, "agent.online", "agt_2", H2); /* clears nothing */
  tick(&x, 10200);
  expect_one(&x, NULL, "firing", 100, 10100);
  event(&x, "agent.online", "agt_1", H1);
  tick(&x, 10300);
  expect_none(&x);
  expect_history(&x, "pending@100 firing@10100 resolved@10300");
  fx_close(&x);
}

static void test_event_by(void **state) {
  fx_t x;
  json_t *items;
  (void)state;
  fx_open(&x);
  apply(&x, "kind: AlertRule\nname: env-down\nteam: ops\nseverity: critical\n"
            "event: {type: agent.offline, clear: agent.online, by: [env]}\ninterval: 1s\n");
  tick(&x, 0); /* the loop takes an applied rule before it delivers events */
  event(&x, "agent.offline", "agt_1", H1);
  event(&x, "agent.offline", "agt_2", H2); /* same env: the same alert */
  tick(&x, 0);
  items = alerts(&x, NULL);
  assert_int_equal(json_array_size(items), 1);
  json_decref(items);
  event(&x, "agent.online", "agt_2", H2); /* env prod cleared */
  tick(&x, 1000);
  expect_none(&x);
  fx_close(&x);
}

static void test_event_without_clear(void **state) {
  fx_t x;
  (void)state;
  fx_open(&x);
  /* without clear: the condition holds at an evaluation when an event came
   * since the one before */
  apply(&x, "kind: AlertRule\nname: changed\nteam: ops\nseverity: info\n"
            "event: {type: file.changed}\nkeep_firing_for: 2s\ninterval: 1s\n");
  tick(&x, 0);
  event(&x, "file.changed", "agt_1//etc/passwd", H1);
  tick(&x, 0);
  expect_one(&x, NULL, "firing", 0, 0);
  tick(&x, 1000); /* no new event: kept firing 2 s */
  tick(&x, 2000);
  expect_one(&x, NULL, "firing", 0, 0);
  tick(&x, 3000);
  expect_none(&x);
  expect_history(&x, "firing@0 resolved@3000");
  fx_close(&x);
}

static void test_delete_rule_resolves(void **state) {
  fx_t x;
  json_t *out = NULL;
  keel_err_t e = {0};
  (void)state;
  fx_open(&x);
  apply(&x, RULE(""));
  sample(&x, "m", "a", 0, 1);
  tick(&x, 0);
  if (k_store_unit_begin(x.s, &e) || k_alerts_rule_delete(x.a, "load", x.t0 + 500, &out, &e) ||
      k_store_unit_end(x.s, 1, &e))
    fail_msg("delete: %s", e.msg);
  commit(&x);
  assert_string_equal(keel_json_str(out, "name"), "load");
  json_decref(out);
  assert_int_equal(tick(&x, 1000), -1); /* no rule left */
  expect_none(&x);
  assert_int_equal(kt_int(x.s, "SELECT COUNT(*) FROM alert_instances"), 0);
  expect_history(&x, "firing@0 resolved@500");
  fx_close(&x);
}

/* ---- pure helpers --------------------------------------------------------------------------- */

static void test_fingerprint(void **state) {
  json_t *l = json_object();
  char fp[17];
  (void)state;
  /* prometheus/common/model: emptyLabelSignature is FNV-1a's offset basis */
  k_alert_fingerprint(l, fp);
  assert_string_equal(fp, "cbf29ce484222325");
  json_object_set_new(l, "b", json_string("2"));
  json_object_set_new(l, "a", json_string("1"));
  k_alert_fingerprint(l, fp);
  assert_string_equal(fp, "1cc37fac8a64ae01"); /* a 0xff 1 0xff b 0xff 2 0xff */
  json_decref(l);
}

static void test_value_text(void **state) {
  static const struct {
    double v;
    const char *want;
  } cases[] = {
      {0, "0"},          {1, "1"},           {0.25, "0.25"},     {123456, "123456"},
      {1e6, "1e+06"},    {1234567, "1.234567e+06"}, {0.0001, "0.0001"}, {0.00001, "1e-05"},
      {-2.5, "-2.5"},    {1e21, "1e+21"},    {0.1 + 0.2, "0.30000000000000004"},
      {1.5e300, "1.5e+300"}, {5e-324, "5e-324"}, {100, "100"},
  };
  char buf[K_ALERT_VALUE_BUF];
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    assert_string_equal(k_alert_value_text(cases[i].v, buf), cases[i].want);
  assert_string_equal(k_alert_value_text(NAN, buf), "NaN");
  assert_string_equal(k_alert_value_text(INFINITY, buf), "+Inf");
  assert_string_equal(k_alert_value_text(-INFINITY, buf), "-Inf");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_for),
      cmocka_unit_test(test_for_zero_fires_at_once),
      cmocka_unit_test(test_keep_firing_for),
      cmocka_unit_test(test_flapping),
      cmocka_unit_test(test_resolved_kept_then_deleted),
      cmocka_unit_test(test_restart_keeps_state),
      cmocka_unit_test(test_expr_labels_and_templates),
      cmocka_unit_test(test_expr_errors_change_nothing),
      cmocka_unit_test(test_expr_parsed_once),
      cmocka_unit_test(test_event_type_and_clear),
      cmocka_unit_test(test_event_by),
      cmocka_unit_test(test_event_without_clear),
      cmocka_unit_test(test_delete_rule_resolves),
      cmocka_unit_test(test_fingerprint),
      cmocka_unit_test(test_value_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
