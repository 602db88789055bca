/* Unit tests for alert/doc.h (the AlertRule document: every rule of
 * docs/alerts.md with the exact message of each error, naming
 * file:line:column and the dotted path; the normalized form), the owner
 * check against an applied organization, and applying rules
 * (k_alerts_apply: create, no change the second time, update, dry run). */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alert/alert.h"
#include "alert/doc.h"
#include "keel/err.h"
#include "keel/json.h"
#include "keel/yaml.h"
#include "org/doc.h"
#include "org/org.h"
#include "store/store.h"

#define DT_LOAD k_alert_doc_load
#define DT_NAME "rule.yaml"
#include "doc_testutil.h"

#ifndef KEEL_SOURCE_DIR
#define KEEL_SOURCE_DIR "."
#endif

#define NOW 1790000000000LL

#define HEAD "kind: AlertRule\nname: high-load\nteam: ops\nseverity: warning\n"

/* ---- the normalized form ------------------------------------------------------------------ */

static void test_expr_rule(void **state) {
  json_t *v = load_ok(HEAD "expr: node_load1 > 4\nfor: 2m\n"
                           "labels: {page: 'yes'}\n"
                           "annotations:\n"
                           "  summary: \"{{ $labels.instance }} at {{ $value }}\"\n");
  char *s = keel_json_canonical(v);
  (void)state;
  assert_string_equal(
      s, "{\"annotations\":{\"summary\":\"{{ $labels.instance }} at {{ $value }}\"},"
         "\"application\":null,\"description\":null,\"event\":null,\"expr\":\"node_load1 > 4\","
         "\"for_ms\":120000,\"interval_ms\":10000,\"keep_firing_for_ms\":0,\"kind\":\"AlertRule\","
         "\"labels\":{\"page\":\"yes\"},\"name\":\"high-load\",\"severity\":\"warning\","
         "\"team\":\"ops\"}");
  /* the normalized form validates to itself */
  {
    json_t *again = load_ok(s);
    assert_true(json_equal(v, again));
    json_decref(again);
  }
  free(s);
  json_decref(v);
}

static void test_event_rule(void **state) {
  json_t *v = load_ok("kind: AlertRule\nname: host-down\napplication: checkout\n"
                      "severity: critical\n"
                      "event: {type: agent.offline, clear: agent.online, match: 'env=prod',"
                      " by: [agent_id]}\n"
                      "for: 0s\nkeep_firing_for: 1m\ninterval: 1s\n");
  char *s = keel_json_canonical(v);
  char path[192];
  (void)state;
  assert_string_equal(
      s, "{\"annotations\":{},\"application\":\"checkout\",\"description\":null,"
         "\"event\":{\"by\":[\"agent_id\"],\"clear\":\"agent.online\",\"match\":\"env=prod\","
         "\"type\":\"agent.offline\"},\"expr\":null,\"for_ms\":0,\"interval_ms\":1000,"
         "\"keep_firing_for_ms\":60000,\"kind\":\"AlertRule\",\"labels\":{},\"name\":\"host-down\","
         "\"severity\":\"critical\",\"team\":null}");
  k_alert_rule_path(v, path, sizeof path);
  assert_string_equal(path, "app/checkout/alert/host-down");
  {
    json_t *again = load_ok(s);
    assert_true(json_equal(v, again));
    json_decref(again);
  }
  free(s);
  json_decref(v);
  /* JSON is YAML too; durations in ms; minimal event */
  v = load_ok("{\"kind\": \"AlertRule\", \"name\": \"x\", \"team\": \"t\", \"severity\": \"info\","
              " \"event\": {\"type\": \"service.down\"}, \"for_ms\": 1500}");
  assert_int_equal(json_integer_value(json_object_get(v, "for_ms")), 1500);
  assert_true(json_is_null(json_object_get(json_object_get(v, "event"), "by")));
  json_decref(v);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_errors_head(void **state) {
  (void)state;
  expect_error("- a\n", "rule.yaml:1:1: expected a mapping (kind: AlertRule)");
  expect_error("kind: Runbook\nname: x\n", "rule.yaml:1:7: kind: expected AlertRule");
  expect_error("kind: AlertRule\nname: x\nbogus: 1\n", "rule.yaml:3:8: bogus: unknown field");
  expect_error("kind: AlertRule\nteam: t\n", "rule.yaml:1:1: name: required field is missing");
  expect_error("kind: AlertRule\nname: Bad_Name\n",
               "rule.yaml:2:7: name: invalid name 'Bad_Name': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: AlertRule\nname: x\nseverity: info\nexpr: up\n",
               "rule.yaml:1:1: expected application: NAME or team: NAME (the owner)");
  expect_error("kind: AlertRule\nname: x\napplication: a\nteam: t\n",
               "rule.yaml:4:7: team: give application or team, not both");
  expect_error("kind: AlertRule\nname: x\nteam: T\n",
               "rule.yaml:3:7: team: invalid name 'T': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: AlertRule\nname: x\nteam: t\nseverity: warning\n",
               "rule.yaml:1:1: expected expr: PROMQL or event: {type: ...} (the condition)");
  expect_error(HEAD "expr: up\nevent: {type: agent.offline}\n",
               "rule.yaml:6:8: event: give expr or event, not both");
  expect_error("kind: AlertRule\nname: x\nteam: t\nexpr: up\n",
               "rule.yaml:1:1: severity: required field is missing");
  expect_error("kind: AlertRule\nname: x\nteam: t\nexpr: up\nseverity: Page Me\n",
               "rule.yaml:5:11: severity: invalid severity 'Page Me': expected critical, warning, "
               "info or another [a-z0-9][a-z0-9._-]*");
  expect_error("kind: AlertRule\nname: x\nteam: t\nexpr: up\nseverity: 3\n",
               "rule.yaml:5:11: severity: expected a string");
  done();
}

static void test_errors_expr(void **state) {
  (void)state;
  /* Prometheus' parser names the construct */
  expect_error(HEAD "expr: 'rate(up[5m]'\n",
               "rule.yaml:5:7: expr: 1:12: parse error: unclosed left parenthesis");
  expect_error(HEAD "expr: up[5m]\n",
               "rule.yaml:5:7: expr: expected an instant vector or scalar expression, got range "
               "vector");
  expect_error(HEAD "expr: '\"text\"'\n",
               "rule.yaml:5:7: expr: expected an instant vector or scalar expression, got string");
  expect_error(HEAD "expr: 'up @ 100'\n", NULL);
  expect_error(HEAD "expr: 3\n", "rule.yaml:5:7: expr: expected a string");
  done();
}

static void test_errors_event(void **state) {
  (void)state;
  expect_error(HEAD "event: agent.offline\n", "rule.yaml:5:8: event: expected a mapping");
  expect_error(HEAD "event: {clear: agent.online}\n",
               "rule.yaml:5:8: event.type: required field is missing");
  expect_error(HEAD "event: {type: Agent.Offline}\n",
               "rule.yaml:5:15: event.type: invalid event type 'Agent.Offline': expected "
               "[a-z0-9_.-] like agent.offline");
  expect_error(HEAD "event: {type: alert.firing}\n",
               "rule.yaml:5:15: event.type: alert rules do not watch alert events (a rule could "
               "feed on its own)");
  expect_error(HEAD "event: {type: service.down, clear: service.down}\n",
               "rule.yaml:5:36: event.clear: the same type as event.type: an event cannot start "
               "and end an alert");
  expect_error(HEAD "event: {type: service.down, match: 'env=='}\n",
               "rule.yaml:5:36: event.match: invalid selector: column 5: value '=': invalid "
               "character '='");
  expect_error(HEAD "event: {type: service.down, by: []}\n",
               "rule.yaml:5:33: event.by: expected at least one label name");
  expect_error(HEAD "event: {type: service.down, by: [agent_id, '1x']}\n",
               "rule.yaml:5:44: event.by[1]: invalid label name '1x': expected "
               "[a-zA-Z_][a-zA-Z0-9_./-]*");
  expect_error(HEAD "event: {type: service.down, by: [a, a]}\n",
               "rule.yaml:5:37: event.by[1]: 'a' listed twice");
  expect_error(HEAD "event: {type: service.down, then: x}\n",
               "rule.yaml:5:35: event.then: unknown field");
  done();
}

static void test_errors_durations(void **state) {
  (void)state;
  expect_error(HEAD "expr: up\ninterval: 500ms\n",
               "rule.yaml:6:11: interval: '500ms' is out of range: expected 1s to 24h");
  expect_error(HEAD "expr: up\ninterval: 0s\n",
               "rule.yaml:6:11: interval: invalid duration '0s': expected e.g. 30s, 5m, 1h");
  expect_error(HEAD "expr: up\nfor: soon\n",
               "rule.yaml:6:6: for: invalid duration 'soon': expected e.g. 30s, 5m, 1h");
  expect_error(HEAD "expr: up\nfor: 1m\nfor_ms: 60000\n",
               "rule.yaml:7:9: for_ms: give for or for_ms, not both");
  expect_error(HEAD "expr: up\nkeep_firing_for: 31d\n",
               "rule.yaml:6:18: keep_firing_for: '31d' is out of range: expected 0s to 30d");
  expect_error(HEAD "expr: up\nfor_ms: -1\n",
               "rule.yaml:6:9: for_ms: -1 is out of range: expected 0 to 2592000000");
  done();
}

static void test_errors_templates(void **state) {
  (void)state;
  expect_error(HEAD "expr: up\nlabels: {alertname: x}\n",
               "rule.yaml:6:21: labels.alertname: set by the rule itself (its name)");
  expect_error(HEAD "expr: up\nlabels: {severity: x}\n",
               "rule.yaml:6:20: labels.severity: set by the rule itself (severity)");
  expect_error(HEAD "expr: up\nlabels: {__x: y}\n",
               "rule.yaml:6:15: labels.__x: names starting with __ are reserved");
  expect_error(HEAD "expr: up\nlabels: {a-b: y}\n",
               "rule.yaml:6:15: labels.a-b: invalid name: expected [a-zA-Z_][a-zA-Z0-9_]*");
  expect_error(HEAD "expr: up\nlabels: {a: \"x\\ny\"}\n",
               "rule.yaml:6:13: labels.a: contains a control character");
  expect_error(HEAD "expr: up\nannotations: {s: '{{ $labels.a.b }}'}\n",
               "rule.yaml:6:18: annotations.s: {{ $labels.a.b }}: expected $value or $labels.NAME");
  expect_error(HEAD "expr: up\nannotations: {s: '{{ params.x }}'}\n",
               "rule.yaml:6:18: annotations.s: {{ params.x }}: expected $value or $labels.NAME");
  expect_error(HEAD "expr: up\nannotations: {s: '{{ $labels }}'}\n",
               "rule.yaml:6:18: annotations.s: {{ $labels }}: expected $value or $labels.NAME");
  expect_error(HEAD "expr: up\nannotations: {s: '{{ $value'}\n",
               "rule.yaml:6:18: annotations.s: invalid template: column 1: unterminated '{{'");
  expect_error(HEAD "expr: up\nannotations: [a]\n",
               "rule.yaml:6:14: annotations: expected a mapping of name: text");
  done();
}

/* ---- the owner, against an applied organization ------------------------------------------- */

typedef struct fx {
  char dir[256];
  k_store_t *s;
  k_org_t *o;
} fx_t;

static void fx_open(fx_t *x, int with_org) {
  keel_err_t e = {0};
  memset(x, 0, sizeof *x);
  if (kt_mkdtemp(x->dir, sizeof x->dir)) fail_msg("mkdtemp");
  if (k_store_open(x->dir, 1, NULL, &x->s, &e)) fail_msg("store open: %s", e.msg);
  if (k_org_open(x->s, NULL, &x->o, &e)) fail_msg("org open: %s", e.msg);
  if (with_org) {
    size_t len;
    char *text = kt_slurp(KEEL_SOURCE_DIR "/examples/org.yaml", &len);
    json_t *doc = NULL, *report = NULL;
    keel_buf_t detail;
    keel_buf_init(&detail, 16384);
    if (!text) fail_msg("cannot read examples/org.yaml");
    if (k_org_doc_load("org.yaml", text, len, &doc, &e)) fail_msg("%s", e.msg);
    if (k_store_unit_begin(x->s, &e) ||
        k_org_apply(x->o, doc, 0, 0, NOW, &report, &detail, &e) ||
        k_store_unit_end(x->s, 1, &e) || k_store_flush(x->s, &e) || k_org_reload(x->o, &e))
      fail_msg("org apply: %s", e.msg);
    json_decref(doc);
    json_decref(report);
    keel_buf_free(&detail);
    free(text);
  }
}

static void fx_close(fx_t *x) {
  k_org_close(x->o);
  k_store_close(x->s);
  kt_rmrf(x->dir);
}

static int validate(const k_org_t *o, const char *text, json_t **out, keel_err_t *e) {
  json_t *doc = NULL;
  keel_yaml_pos_t *pos = NULL;
  int rc = keel_yaml_load("rule.yaml", text, strlen(text), &doc, &pos, e);
  if (!rc) rc = k_alert_doc_validate("rule.yaml", doc, pos, o, out, e);
  json_decref(doc);
  keel_yaml_pos_free(pos);
  return rc;
}

static void test_owner_in_org(void **state) {
  fx_t x;
  json_t *v = NULL;
  keel_err_t e = {0};
  (void)state;
  /* no organization applied: any well-formed owner */
  fx_open(&x, 0);
  assert_int_equal(validate(x.o, "kind: AlertRule\nname: r\napplication: nope\nseverity: info\n"
                                 "expr: up\n", &v, &e), 0);
  json_decref(v);
  fx_close(&x);
  fx_open(&x, 1);
  assert_int_equal(validate(x.o, "kind: AlertRule\nname: r\napplication: checkout\n"
                                 "severity: info\nexpr: up\n", &v, &e), 0);
  json_decref(v);
  assert_int_equal(validate(x.o, "kind: AlertRule\nname: r\nteam: platform\nseverity: info\n"
                                 "expr: up\n", &v, &e), 0);
  json_decref(v);
  assert_int_equal(validate(x.o, "kind: AlertRule\nname: r\napplication: nope\nseverity: info\n"
                                 "expr: up\n", &v, &e), KEEL_EINVAL);
  assert_null(v);
  assert_string_equal(e.msg,
                      "rule.yaml:3:14: application: no application 'nope' in the organization");
  assert_int_equal(validate(x.o, "kind: AlertRule\nname: r\nteam: nobody\nseverity: info\n"
                                 "expr: up\n", &v, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "rule.yaml:3:7: team: no team 'nobody' in the organization");
  fx_close(&x);
}

/* ---- applying ------------------------------------------------------------------------------ */

static json_t *apply(k_alerts_t *a, k_store_t *s, const json_t *rule, int dry_run) {
  keel_err_t e = {0};
  keel_buf_t detail;
  json_t *report = NULL;
  keel_buf_init(&detail, 4096);
  if (k_store_unit_begin(s, &e) || k_alerts_apply(a, rule, dry_run, NOW, &report, &detail, &e) ||
      k_store_unit_end(s, 1, &e) || k_store_flush(s, &e))
    fail_msg("apply: %s", e.msg);
  keel_buf_free(&detail);
  return report;
}

static void test_apply_twice(void **state) {
  fx_t x;
  k_alerts_t *a = NULL;
  keel_err_t e = {0};
  k_alerts_deps_t d;
  json_t *rule = load_ok(HEAD "expr: up == 0\nfor: 1m\n"), *r2, *rep, *got = NULL;
  (void)state;
  fx_open(&x, 0);
  memset(&d, 0, sizeof d);
  d.store = x.s;
  if (k_alerts_open(&d, &a, &e)) fail_msg("open: %s", e.msg);

  rep = apply(a, x.s, rule, 1); /* dry run: nothing stored */
  assert_true(json_is_true(json_object_get(rep, "changed")));
  assert_string_equal(keel_json_str(rep, "summary"), "dry run: 1 created, 0 updated, 0 deleted");
  json_decref(rep);
  assert_int_equal(kt_int(x.s, "SELECT COUNT(*) FROM alert_rules"), 0);

  rep = apply(a, x.s, rule, 0);
  assert_string_equal(keel_json_str(rep, "summary"), "1 created, 0 updated, 0 deleted");
  assert_string_equal(keel_json_str(json_array_get(json_object_get(rep, "changes"), 0), "kind"),
                      "alert_rule");
  json_decref(rep);
  rep = apply(a, x.s, rule, 0); /* the same document again: no change */
  assert_false(json_is_true(json_object_get(rep, "changed")));
  assert_string_equal(keel_json_str(rep, "summary"), "no changes");
  json_decref(rep);
  assert_int_equal(kt_int(x.s, "SELECT version FROM alert_rules WHERE name = 'high-load'"), 1);

  r2 = load_ok(HEAD "expr: up == 0\nfor: 2m\n");
  rep = apply(a, x.s, r2, 0);
  assert_string_equal(keel_json_str(rep, "summary"), "0 created, 1 updated, 0 deleted");
  assert_string_equal(
      json_string_value(json_array_get(
          json_object_get(json_array_get(json_object_get(rep, "changes"), 0), "fields"), 0)),
      "for_ms");
  json_decref(rep);
  assert_int_equal(kt_int(x.s, "SELECT version FROM alert_rules WHERE name = 'high-load'"), 2);

  /* the engine takes it at its next tick; get shows the document */
  assert_int_equal(k_alerts_tick(a, NOW), 10000); /* evaluated now, next in 10 s */
  assert_int_equal(k_alerts_rule_get(a, "high-load", &got, &e), 0);
  assert_true(json_equal(json_object_get(got, "document"), r2));
  assert_string_equal(keel_json_str(got, "path"), "team/ops/alert/high-load");
  json_decref(got);
  assert_int_equal(k_alerts_rule_get(a, "nope", &got, &e), KEEL_ENOENT);
  assert_string_equal(e.msg, "no alert rule 'nope'");

  json_decref(rule);
  json_decref(r2);
  k_alerts_close(a);
  fx_close(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_expr_rule),        cmocka_unit_test(test_event_rule),
      cmocka_unit_test(test_errors_head),      cmocka_unit_test(test_errors_expr),
      cmocka_unit_test(test_errors_event),     cmocka_unit_test(test_errors_durations),
      cmocka_unit_test(test_errors_templates), cmocka_unit_test(test_owner_in_org),
      cmocka_unit_test(test_apply_twice),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
