/* Unit tests for the automation engine (docs/automation.md): the
 * AutomationRule validator (normalized form, the exact error of each
 * mistake), conditions (grammar, canonical text, meaning), and the guards
 * run against a real store: kill switch, maintenance, loop guard (cause
 * and agent events during a rule's execution), cooldown per target, the
 * hourly limit, dry run, parameters rendered from events, what is
 * recorded, and the state rebuilt after a restart. */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "automation/automation.h"
#include "automation/cond.h"
#include "automation/doc.h"
#include "keel/json.h"
#include "keel/time.h"

/* ---- documents ------------------------------------------------------------------- */

#define RULE_HEAD "kind: AutomationRule\nname: restart-web\napplication: shop\n"
#define RULE_ON "on:\n  type: service.down\n"
#define RULE_RUN "run:\n  runbook: restart\n  params:\n    host: \"{{ labels.instance }}\"\n"

static json_t *rule_ok(const char *text) {
  json_t *out = NULL;
  keel_err_t e = {0};
  if (k_auto_doc_load("rule.yaml", text, strlen(text), &out, &e))
    fail_msg("%s\n--- for ---\n%s", e.msg, text);
  return out;
}

static void doc_normalized(void **state) {
  json_t *r;
  (void)state;
  r = rule_ok(RULE_HEAD "on:\n  type: service.down\n  match: 'service = web , env in (prod,dev)'\n"
                        "  conditions: ['data.service==web', 'labels.env  not in [prod, \"a b\"]']\n"
              RULE_RUN "require_approval: true\n");
  assert_string_equal(keel_json_str(r, "kind"), "AutomationRule");
  assert_string_equal(keel_json_str(r, "application"), "shop");
  assert_true(json_is_null(json_object_get(r, "team")));
  assert_true(json_is_null(json_object_get(r, "description")));
  assert_string_equal(keel_json_str(json_object_get(r, "on"), "match"), "service=web,env in(dev,prod)");
  assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(r, "on"), "conditions"), 0)),
                      "data.service == web");
  assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(r, "on"), "conditions"), 1)),
                      "labels.env not in [prod, \"a b\"]");
  assert_int_equal(json_integer_value(json_object_get(r, "cooldown_ms")), 300000);
  assert_int_equal(json_integer_value(json_object_get(r, "max_runs_per_hour")), 10);
  assert_string_equal(keel_json_str(r, "mode"), "enforce");
  assert_true(json_is_true(json_object_get(r, "enabled")));
  {
    const json_t *ra = json_object_get(r, "require_approval");
    assert_true(json_is_null(json_object_get(ra, "approvers")));
    assert_int_equal(json_integer_value(json_object_get(ra, "min_approvals")), 1);
    assert_int_equal(json_integer_value(json_object_get(ra, "timeout_ms")), 86400000);
  }
  /* the normalized form validates to itself */
  {
    char *text = keel_json_canonical(r);
    json_t *again = rule_ok(text);
    assert_true(json_equal(r, again));
    json_decref(again);
    free(text);
  }
  json_decref(r);
  r = rule_ok("kind: AutomationRule\nname: x\nteam: ops\non: {type: alert.*}\nrun: {runbook: rb}\n"
              "cooldown: 0s\nmax_runs_per_hour: 10000\nmode: dry-run\nenabled: false\n"
              "require_approval: {approvers: [user:ann, team:ops], min_approvals: 2, timeout_ms: 60000}\n");
  assert_string_equal(keel_json_str(r, "team"), "ops");
  assert_int_equal(json_integer_value(json_object_get(r, "cooldown_ms")), 0);
  assert_string_equal(keel_json_str(json_object_get(r, "on"), "match"), "");
  assert_int_equal(json_object_size(json_object_get(json_object_get(r, "run"), "params")), 0);
  assert_int_equal(json_array_size(json_object_get(json_object_get(r, "require_approval"), "approvers")), 2);
  json_decref(r);
}

/* Each bad document and the exact error it gets. */
static const struct {
  const char *text, *want;
} bad_docs[] = {
    {RULE_HEAD RULE_ON RULE_RUN "foo: 1\n", "rule.yaml:10:6: foo: unknown field"},
    {"kind: Runbook\nname: x\n", "rule.yaml:1:7: kind: expected AutomationRule"},
    {RULE_HEAD "team: ops\n" RULE_ON RULE_RUN, "rule.yaml:4:7: team: give application or team, not both"},
    {"kind: AutomationRule\nname: x\n" RULE_ON RULE_RUN,
     "rule.yaml:1:1: expected application: NAME or team: NAME (the owner)"},
    {RULE_HEAD RULE_RUN, "rule.yaml:1:1: on: required field is missing"},
    {RULE_HEAD RULE_ON, "rule.yaml:1:1: run: required field is missing"},
    {"kind: AutomationRule\nname: Bad\napplication: shop\n" RULE_ON RULE_RUN,
     "rule.yaml:2:7: name: invalid name 'Bad': expected [a-z0-9][a-z0-9._-]{0,62}"},
    {RULE_HEAD "on:\n  type: Service.Down\n" RULE_RUN,
     "rule.yaml:5:9: on.type: invalid event type 'Service.Down': expected e.g. service.down, or a prefix like alert.*"},
    {RULE_HEAD "on:\n  type: '*'\n" RULE_RUN,
     "rule.yaml:5:9: on.type: invalid event type '*': expected e.g. service.down, or a prefix like alert.*"},
    {RULE_HEAD "on:\n  type: x\n  match: 'a=='\n" RULE_RUN,
     "rule.yaml:6:10: on.match: invalid selector: column 3: value '=': invalid character '='"},
    {RULE_HEAD "on:\n  type: x\n  conditions: ['data.x = 1']\n" RULE_RUN,
     "rule.yaml:6:16: on.conditions[0]: column 8: expected an operator: == != < <= > >= in, not in"},
    {RULE_HEAD "on:\n  type: x\n  conditions: 'data.x == 1'\n" RULE_RUN,
     "rule.yaml:6:15: on.conditions: expected a list"},
    {RULE_HEAD "on:\n  type: x\n  unknown: 1\n" RULE_RUN, "rule.yaml:6:12: on.unknown: unknown field"},
    {RULE_HEAD RULE_ON "run:\n  runbook: r\n  params: {x: \"{{ params.y }}\"}\n",
     "rule.yaml:8:15: run.params.x: {{ params.y }}: unknown name: expected event.subject, event.data.X, "
     "labels.X (or event.id, .type, .source, .cause, .time)"},
    {RULE_HEAD RULE_ON "run:\n  runbook: r\n  params: {x: \"{{ labels.a.b }}\"}\n",
     "rule.yaml:8:15: run.params.x: {{ labels.a.b }}: unknown name: expected event.subject, "
     "event.data.X, labels.X (or event.id, .type, .source, .cause, .time)"},
    {RULE_HEAD RULE_ON "run:\n  runbook: r\n  params: {x: \"{{ labels.x\"}\n",
     "rule.yaml:8:15: run.params.x: invalid template: column 1: unterminated '{{'"},
    {RULE_HEAD RULE_ON "run:\n  runbook: r\n  params: {X-y: 1}\n",
     "rule.yaml:8:17: run.params.X-y: invalid parameter name: expected [a-z_][a-z0-9_]{0,62}"},
    {RULE_HEAD RULE_ON "run:\n  runbook: r\n  params: {x: {a: 1}}\n",
     "rule.yaml:8:15: run.params.x: expected a string (may hold {{ event... }}), an integer, a boolean "
     "or a list of strings"},
    {RULE_HEAD RULE_ON RULE_RUN "require_approval: {approvers: [ops]}\n",
     "rule.yaml:10:32: require_approval.approvers[0]: invalid approver 'ops': expected team:NAME or "
     "user:NAME"},
    {RULE_HEAD RULE_ON RULE_RUN "require_approval: {approvers: [user:a], min_approvals: 2}\n",
     "rule.yaml:10:56: require_approval.min_approvals: 2 approvals needed but only 1 users may approve"},
    {RULE_HEAD RULE_ON RULE_RUN "require_approval: yes\n",
     "rule.yaml:10:19: require_approval: expected true, false or a mapping {approvers, min_approvals, timeout}"},
    {RULE_HEAD RULE_ON RULE_RUN "require_approval: {who: x}\n",
     "rule.yaml:10:25: require_approval.who: unknown field"},
    {RULE_HEAD RULE_ON RULE_RUN "cooldown: 2d\n", "rule.yaml:10:11: cooldown: '2d' is out of range: expected 0s to 24h"},
    {RULE_HEAD RULE_ON RULE_RUN "cooldown: 5m\ncooldown_ms: 1\n",
     "rule.yaml:11:14: cooldown_ms: give cooldown or cooldown_ms, not both"},
    {RULE_HEAD RULE_ON RULE_RUN "max_runs_per_hour: 0\n",
     "rule.yaml:10:20: max_runs_per_hour: 0 is out of range: expected 1 to 10000"},
    {RULE_HEAD RULE_ON RULE_RUN "mode: on\n", "rule.yaml:10:7: mode: expected one of enforce, dry-run"},
    {RULE_HEAD RULE_ON RULE_RUN "enabled: 1\n", "rule.yaml:10:10: enabled: expected true or false"},
};

static void doc_errors(void **state) {
  int bad = 0;
  (void)state;
  for (size_t i = 0; i < sizeof bad_docs / sizeof *bad_docs; i++) {
    json_t *out = NULL;
    keel_err_t e = {0};
    int rc = k_auto_doc_load("rule.yaml", bad_docs[i].text, strlen(bad_docs[i].text), &out, &e);
    if (rc != KEEL_EINVAL || out || strcmp(e.msg, bad_docs[i].want)) {
      print_error("case %zu: rc %d\n  got  %s\n  want %s\n", i, rc, e.msg, bad_docs[i].want);
      bad++;
    }
    json_decref(out);
  }
  if (bad) fail_msg("%d case(s) differ", bad);
}

static void doc_runbook_check(void **state) {
  json_t *r = rule_ok(RULE_HEAD RULE_ON RULE_RUN);
  json_t *rb = json_pack("{s:[{s:s,s:b,s:n},{s:s,s:b,s:s}]}", "parameters", "name", "host",
                         "required", 1, "default", "name", "svc", "required", 1, "default", "web");
  keel_err_t e = {0};
  char path[192];
  (void)state;
  assert_int_equal(k_auto_check_runbook(r, rb, &e), 0);
  k_auto_rule_path(r, path, sizeof path);
  assert_string_equal(path, "app/shop/automation/restart-web");
  json_object_set_new(json_object_get(json_object_get(r, "run"), "params"), "nope", json_string("1"));
  assert_int_equal(k_auto_check_runbook(r, rb, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "run.params.nope: the runbook 'restart' has no parameter 'nope'");
  json_object_clear(json_object_get(json_object_get(r, "run"), "params"));
  assert_int_equal(k_auto_check_runbook(r, rb, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "run.params: the runbook 'restart' requires parameter 'host' (give it, "
                             "e.g. host: \"{{ labels.host }}\")");
  json_decref(r);
  json_decref(rb);
}

/* ---- conditions ---------------------------------------------------------------------- */

static void cond_grammar(void **state) {
  static const struct {
    const char *in, *canon; /* canon NULL: an error, whose text is in err */
    const char *err;
  } cases[] = {
      {"data.severity == critical", "data.severity == critical", NULL},
      {"  data.severity==critical  ", "data.severity == critical", NULL},
      {"data.status in [CRITICAL, WARNING]", "data.status in [CRITICAL, WARNING]", NULL},
      {"data.status not   in[CRITICAL]", "data.status not in [CRITICAL]", NULL},
      {"labels.x != \"a \\\"b\\\\\"", "labels.x != \"a \\\"b\\\\\"", NULL},
      {"data.value>=90.5", "data.value >= 90.5", NULL},
      {"data.value < -1", "data.value < -1", NULL},
      {"subject == \"\"", "subject == \"\"", NULL},
      {"data.a-b_c.d == x", "data.a-b_c.d == x", NULL},
      {"", NULL, "column 1: expected a field like data.severity"},
      {"data.x", NULL, "column 7: expected an operator: == != < <= > >= in, not in"},
      {"data.x ==", NULL, "column 10: expected a value"},
      {"data.x == a b", NULL, "column 13: unexpected text after the condition"},
      {"data.x = 1", NULL, "column 8: expected an operator: == != < <= > >= in, not in"},
      {"data..x == 1", NULL, "column 1: invalid field: expected dot-separated names like data.labels.service (at most 8)"},
      {"1x == 1", NULL, "column 1: invalid field: expected dot-separated names like data.labels.service (at most 8)"},
      {"a.b.c.d.e.f.g.h.i == 1", NULL, "column 1: invalid field: expected dot-separated names like data.labels.service (at most 8)"},
      {"data.x in CRITICAL", NULL, "column 11: expected '[' to start the list"},
      {"data.x in [a,]", NULL, "column 14: expected a value: a word of A-Z a-z 0-9 . _ : / @ + - or a \"quoted\" string"},
      {"data.x in [a b]", NULL, "column 14: expected ',' or ']'"},
      {"data.x not [a]", NULL, "column 12: expected 'in' after 'not'"},
      {"data.x == \"abc", NULL, "column 11: unterminated '\"'"},
      {"data.x == \"a\\nb\"", NULL, "column 13: only \\\" and \\\\ may be escaped"},
      {"data.x == \"a\tb\"", NULL, "column 13: control character in a value"},
      {"data.x == a;b", NULL, "column 12: unexpected text after the condition"},
      {"data.x == ;", NULL, "column 11: expected a value: a word of A-Z a-z 0-9 . _ : / @ + - or a \"quoted\" string"},
  };
  int bad = 0;
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    k_cond_t *c = NULL;
    keel_err_t e = {0};
    keel_buf_t b;
    int rc = k_cond_parse(cases[i].in, strlen(cases[i].in), &c, &e);
    keel_buf_init(&b, 4096);
    if (cases[i].canon) {
      if (rc || k_cond_format(c, &b) || strcmp(b.data, cases[i].canon)) {
        print_error("case %zu '%s': rc %d %s, canon '%s'\n", i, cases[i].in, rc, e.msg,
                    b.data ? b.data : "");
        bad++;
      }
    } else if (rc != KEEL_EINVAL || c || strcmp(e.msg, cases[i].err)) {
      print_error("case %zu '%s':\n  got  %s\n  want %s\n", i, cases[i].in, e.msg, cases[i].err);
      bad++;
    }
    keel_buf_free(&b);
    k_cond_free(c);
  }
  if (bad) fail_msg("%d case(s) differ", bad);
}

static int holds(const char *cond, const json_t *view) {
  k_cond_t *c = NULL;
  keel_err_t e = {0};
  int r;
  if (k_cond_parse(cond, strlen(cond), &c, &e)) fail_msg("%s: %s", cond, e.msg);
  r = k_cond_eval(c, view);
  k_cond_free(c);
  return r;
}

static void cond_meaning(void **state) {
  json_t *view = json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:i,s:f,s:s,s:b,s:n,s:{s:s,s:s}}}", "type",
                           "check.result", "subject", "agt_1/disk", "cause", "", "data", "status",
                           "CRITICAL", "check", "disk", "exit_code", 2, "value", 90.5, "num", "17",
                           "ok", 0, "nothing", "labels", "instance", "web-1", "env", "prod");
  (void)state;
  assert_true(holds("data.status == CRITICAL", view));
  assert_false(holds("data.status == critical", view)); /* text is exact */
  assert_true(holds("data.status in [CRITICAL, WARNING]", view));
  assert_false(holds("data.status not in [CRITICAL, WARNING]", view));
  assert_true(holds("data.exit_code == 2", view));
  assert_true(holds("data.exit_code == 2.0", view)); /* numbers compare as numbers */
  assert_true(holds("data.exit_code >= 2", view));
  assert_false(holds("data.exit_code > 2", view));
  assert_true(holds("data.value > 90", view));
  assert_true(holds("data.value == 90.5", view));
  assert_true(holds("data.num < 20", view));          /* a string that is a number */
  assert_false(holds("data.num < x", view));          /* a literal that is not */
  assert_false(holds("data.status < 5", view));       /* nor a field */
  assert_true(holds("data.ok == false", view));
  assert_true(holds("labels.instance == web-1", view));
  assert_true(holds("data.labels.env == prod", view));
  assert_true(holds("subject == agt_1/disk", view));
  assert_true(holds("type == check.result", view));
  /* absent, null, objects: only != and not in hold */
  assert_false(holds("data.missing == x", view));
  assert_true(holds("data.missing != x", view));
  assert_true(holds("data.nothing not in [a]", view));
  assert_false(holds("data.nothing in [a]", view));
  assert_false(holds("data.labels == x", view));
  assert_false(holds("data.missing < 1", view));
  json_decref(view);
}

/* ---- the engine against a store ------------------------------------------------------------ */

typedef struct fx {
  char dir[256];
  k_store_t *s;
  k_events_t *ev;
  k_auto_t *a;
  int64_t now;
  int maint;        /* the stub's answer */
  const char *evid; /* the next judged event's id (NULL: a new one each time) */
  int nev;
} fx_t;

static void open_engine(fx_t *f, int create) {
  keel_err_t e = {0};
  k_auto_deps_t d;
  if (k_store_open(f->dir, create, NULL, &f->s, &e) ||
      k_events_open(f->s, NULL, 3600 * 1000, &f->ev, &e))
    fail_msg("open: %s", e.msg);
  d = (k_auto_deps_t){f->s, f->ev, NULL};
  if (k_auto_open(&d, f->now, &f->a, &e)) fail_msg("automation: %s", e.msg);
}

static void close_engine(fx_t *f) {
  keel_err_t e = {0};
  if (k_store_flush(f->s, &e) || k_store_sync_wait(f->s, &e)) fail_msg("flush: %s", e.msg);
  k_auto_close(f->a);
  k_events_close(f->ev);
  k_store_close(f->s);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  f->now = 1790000000000LL;
  open_engine(f, 1);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  close_engine(f);
  kt_rmrf(f->dir);
  free(f);
  return 0;
}

static void apply(fx_t *f, const char *text, const char *user) {
  json_t *r = rule_ok(text), *report = NULL;
  keel_buf_t detail;
  keel_err_t e = {0};
  keel_buf_init(&detail, 4096);
  if (k_store_unit_begin(f->s, &e) || k_auto_apply(f->a, r, user, 0, f->now, &report, &detail, &e) ||
      k_store_unit_end(f->s, 1, &e) || k_auto_refresh(f->a, &e))
    fail_msg("apply: %s", e.msg);
  json_decref(r);
  json_decref(report);
  keel_buf_free(&detail);
}

static int stub_maint(void *ud, const json_t *labels, int64_t now_ms, char *window, size_t n) {
  fx_t *f = ud;
  (void)labels, (void)now_ms;
  snprintf(window, n, "%s", f->maint ? "patching" : "");
  return f->maint;
}

/* The verdict of the first rule about an event; returns its act (0: no
 * rule matched).  *v kept for the caller when given. */
static int judge(fx_t *f, const char *type, const char *source, const char *cause,
                 const char *instance, const char *agent, k_auto_verdict_t *keep) {
  json_t *data = json_pack("{s:s,s:{s:s,s:s,s:s}}", "service", "web", "labels", "instance",
                           instance, "agent_id", agent, "service", "web");
  char id[24];
  k_event_t ev = {1, id, source, type, "agt/web", f->now, "events", cause, data};
  json_t *view;
  k_auto_verdict_t v;
  int act = 0;
  snprintf(id, sizeof id, "%s", f->evid ? f->evid : "");
  if (!f->evid) snprintf(id, sizeof id, "evt_judged%d", ++f->nev);
  view = k_auto_event_view(&ev);
  for (size_t i = 0; i < k_auto_nrules(f->a) && !act; i++)
    if (k_auto_judge(f->a, i, &ev, view, f->now, stub_maint, f, &v)) act = (int)v.act;
  if (act && keep) *keep = v;
  else if (act) k_auto_verdict_clear(&v);
  json_decref(view);
  json_decref(data);
  return act;
}

/* Records v as triggered (with an execution on agent) and notes it. */
static void ran(fx_t *f, k_auto_verdict_t *v, const char *outcome, const char *exe, const char *agent) {
  json_t *targets = json_pack("[{s:s,s:s}]", "agent_id", agent, "hostname", "h");
  json_t *data = json_object();
  k_event_t ev = {1, "evt_1", "agent/x", "service.down", "agt/web", f->now, "events", "", data};
  keel_err_t e = {0};
  if (k_store_unit_begin(f->s, &e) ||
      k_auto_record(f->a, v, &ev, outcome, exe, targets, "", f->now, &e) ||
      k_store_unit_end(f->s, 1, &e))
    fail_msg("record: %s", e.msg);
  k_auto_note(f->a, v, outcome, exe, targets, f->now);
  k_auto_verdict_clear(v);
  json_decref(targets);
  json_decref(data);
}

static int count_runs(fx_t *f, const char *where) {
  json_t *items = NULL, *it;
  char *next = NULL;
  keel_err_t e = {0};
  int n = 0;
  size_t i;
  if (k_auto_run_list(f->a, NULL, NULL, 1000, &items, &next, &e)) fail_msg("runs: %s", e.msg);
  json_array_foreach(items, i, it) n += !where || !strcmp(keel_json_str(it, "outcome"), where);
  json_decref(items);
  free(next);
  return n;
}

static void guards_in_order(void **state) {
  fx_t *f = *state;
  k_auto_verdict_t v;
  json_t *sw = NULL;
  keel_buf_t detail;
  keel_err_t e = {0};

  apply(f, RULE_HEAD "on:\n  type: service.*\n  match: service=web\n"
                     "  conditions: ['data.service == web']\n" RULE_RUN "cooldown: 5m\nmax_runs_per_hour: 3\n",
        "ann");
  /* no match: other type, other service, failed condition */
  assert_int_equal(judge(f, "file.changed", "agent/a1", "", "web-1", "a1", NULL), 0);
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-1", "a1", &v), K_AUTO_START);
  assert_string_equal(v.rule, "restart-web");
  assert_string_equal(v.user, "ann");
  assert_string_equal(v.runbook, "restart");
  assert_string_equal(v.target, "{\"host\":\"web-1\"}");
  assert_string_equal(keel_json_str(v.params, "host"), "web-1");
  k_auto_verdict_clear(&v);

  /* 1. the kill switch, above everything */
  keel_buf_init(&detail, 1024);
  assert_int_equal(k_store_unit_begin(f->s, &e), 0);
  assert_int_equal(k_auto_switch_set(f->a, 0, "", "root", f->now, &sw, &detail, &e), KEEL_EINVAL);
  assert_int_equal(k_auto_switch_set(f->a, 0, "incident 42", "root", f->now, &sw, &detail, &e), 0);
  assert_int_equal(k_store_unit_end(f->s, 1, &e), 0);
  json_decref(sw);
  f->maint = 1;
  assert_int_equal(judge(f, "service.down", "agent/a1", "automation/restart-web", "web-1", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "kill_switch");
  assert_string_equal(v.reason, "automation is switched off by root: incident 42");
  k_auto_verdict_clear(&v);
  assert_int_equal(k_store_unit_begin(f->s, &e), 0);
  assert_int_equal(k_auto_switch_set(f->a, 1, NULL, "root", f->now, &sw, &detail, &e), 0);
  assert_int_equal(k_store_unit_end(f->s, 1, &e), 0);
  assert_true(json_is_true(json_object_get(sw, "enabled")));
  json_decref(sw);
  keel_buf_free(&detail);

  /* 2. maintenance, before the loop guard */
  assert_int_equal(judge(f, "service.down", "agent/a1", "automation/restart-web", "web-1", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "maintenance");
  assert_string_equal(v.reason, "maintenance window 'patching' is active");
  k_auto_verdict_clear(&v);
  f->maint = 0;

  /* 3. the loop guard: caused by this rule; another rule's cause is not a loop */
  assert_int_equal(judge(f, "service.down", "agent/a1", "automation/restart-web", "web-1", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "loop");
  k_auto_verdict_clear(&v);
  assert_int_equal(judge(f, "service.down", "agent/a1", "automation/other", "web-1", "a1", NULL), K_AUTO_START);

  /* 4. cooldown per target */
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-1", "a1", &v), K_AUTO_START);
  ran(f, &v, "triggered", "exe_1", "a1");
  f->now += 1000;
  assert_int_equal(judge(f, "service.down", "agent/a9", "", "web-1", "a9", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "cooldown");
  k_auto_verdict_clear(&v);
  /* ...an agent event from the host the execution runs on is the rule's own */
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-2", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "loop");
  assert_string_equal(v.reason, "agent a1 reported it while execution exe_1 of this rule was running on it");
  k_auto_verdict_clear(&v);
  /* ...also just after it ended, not later */
  k_auto_execution_ended(f->a, "exe_1", "succeeded", f->now);
  f->now += K_AUTO_LOOP_GRACE_MS;
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-2", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "loop");
  k_auto_verdict_clear(&v);
  f->now += 1;
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-2", "a1", &v), K_AUTO_START);
  ran(f, &v, "triggered", "exe_2", "a1");
  k_auto_execution_ended(f->a, "exe_2", "succeeded", f->now);

  /* 5. max runs per hour (3): a third target still runs, a fourth not */
  f->now += K_AUTO_LOOP_GRACE_MS + 1;
  assert_int_equal(judge(f, "service.down", "agent/a3", "", "web-3", "a3", &v), K_AUTO_START);
  ran(f, &v, "triggered", NULL, "a3");
  assert_int_equal(judge(f, "service.down", "agent/a4", "", "web-4", "a4", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "rate_limit");
  assert_string_equal(v.reason, "ran 3 times in the last hour (max_runs_per_hour 3)");
  ran(f, &v, "skipped", NULL, "a4"); /* a skip counts for nothing */
  assert_int_equal(judge(f, "service.down", "agent/a4", "", "web-4", "a4", &v), K_AUTO_SKIP);
  k_auto_verdict_clear(&v);
  /* web-1's cooldown ends before the hour does */
  f->now += 300000;
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-1", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "rate_limit");
  k_auto_verdict_clear(&v);
  f->now += 3600000;
  assert_int_equal(judge(f, "service.down", "agent/a4", "", "web-4", "a4", NULL), K_AUTO_START);

  /* what was recorded */
  assert_int_equal(count_runs(f, "triggered"), 3);
  assert_int_equal(count_runs(f, "skipped"), 1);
}

static void state_survives_restart(void **state) {
  fx_t *f = *state;
  k_auto_verdict_t v;
  apply(f, RULE_HEAD RULE_ON RULE_RUN "cooldown: 10m\nmax_runs_per_hour: 2\n", "ann");
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-1", "a1", &v), K_AUTO_START);
  ran(f, &v, "triggered", "exe_1", "a1");
  assert_int_equal(judge(f, "service.down", "agent/a2", "", "web-2", "a2", &v), K_AUTO_START);
  ran(f, &v, "dry_run", NULL, "a2");
  close_engine(f);
  f->now += 60000;
  open_engine(f, 0);
  /* cooldown of web-1, the hourly count (a dry run counts), the running execution */
  assert_int_equal(judge(f, "service.down", "agent/a9", "", "web-1", "a9", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "cooldown");
  k_auto_verdict_clear(&v);
  assert_int_equal(judge(f, "service.down", "agent/a3", "", "web-3", "a3", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "rate_limit");
  k_auto_verdict_clear(&v);
  {
    json_t *running = k_auto_running(f->a);
    assert_int_equal(json_array_size(running), 1);
    assert_string_equal(json_string_value(json_array_get(running, 0)), "exe_1");
    json_decref(running);
  }
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-7", "a1", &v), K_AUTO_SKIP);
  assert_string_equal(v.guard, "loop");
  k_auto_verdict_clear(&v);
}

/* An event delivered again after a crash (event.h) is judged once per
 * rule: what the rule did about it is already in automation_runs. */
static void judged_once_per_event(void **state) {
  fx_t *f = *state;
  k_auto_verdict_t v;
  apply(f, RULE_HEAD RULE_ON RULE_RUN "cooldown: 0s\nmax_runs_per_hour: 100\n", "ann");
  f->evid = "evt_1"; /* the id ran() records */
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-1", "a1", &v), K_AUTO_START);
  ran(f, &v, "triggered", "exe_1", "a1");
  /* the crash: the event comes again to an engine opened after it was stored */
  close_engine(f);
  open_engine(f, 0);
  assert_int_equal(judge(f, "service.down", "agent/a1", "", "web-1", "a1", NULL), 0);
  f->evid = NULL; /* a new event (from a host the run does not touch: no loop) is judged */
  assert_int_equal(judge(f, "service.down", "agent/a2", "", "web-1", "a2", NULL), K_AUTO_START);
}

static void dry_run_and_params(void **state) {
  fx_t *f = *state;
  k_auto_verdict_t v;
  apply(f, "kind: AutomationRule\nname: clean\nteam: ops\non: {type: check.result}\n"
           "run:\n  runbook: clean-disk\n  params:\n    host: \"{{ labels.instance }}\"\n"
           "    what: \"{{ event.type }} on {{ event.subject }} ({{ event.data.service }})\"\n"
           "    list: [\"{{ labels.agent_id }}\", fixed]\n    n: 7\n    force: false\nmode: dry-run\n",
        "bob");
  assert_int_equal(judge(f, "check.result", "agent/a1", "", "db-1", "a1", &v), K_AUTO_DRY_RUN);
  assert_string_equal(keel_json_str(v.params, "host"), "db-1");
  assert_string_equal(keel_json_str(v.params, "what"), "check.result on agt/web (web)");
  assert_string_equal(json_string_value(json_array_get(json_object_get(v.params, "list"), 0)), "a1");
  assert_string_equal(json_string_value(json_array_get(json_object_get(v.params, "list"), 1)), "fixed");
  assert_int_equal(json_integer_value(json_object_get(v.params, "n")), 7);
  assert_true(json_is_false(json_object_get(v.params, "force")));
  ran(f, &v, "dry_run", NULL, "a1");
  assert_int_equal(count_runs(f, "dry_run"), 1);
  /* a value the event does not have: failed, naming it */
  apply(f, "kind: AutomationRule\nname: clean\nteam: ops\non: {type: check.result}\n"
           "run:\n  runbook: clean-disk\n  params:\n    host: \"{{ labels.nope }}\"\n", "bob");
  assert_int_equal(judge(f, "check.result", "agent/a1", "", "db-1", "a1", &v), K_AUTO_FAIL);
  assert_string_equal(v.reason, "params.host: the event has no value for {{ labels.nope }}");
  k_auto_verdict_clear(&v);
  /* a rule without parameters: the target is the agent */
  apply(f, "kind: AutomationRule\nname: clean\nteam: ops\non: {type: check.result}\n"
           "run: {runbook: clean-disk}\nenabled: true\n", "bob");
  assert_int_equal(judge(f, "check.result", "agent/a1", "", "db-1", "a1", &v), K_AUTO_START);
  assert_string_equal(v.target, "a1");
  k_auto_verdict_clear(&v);
  /* disabled: no match at all */
  apply(f, "kind: AutomationRule\nname: clean\nteam: ops\non: {type: check.result}\n"
           "run: {runbook: clean-disk}\nenabled: false\n", "bob");
  assert_int_equal(judge(f, "check.result", "agent/a1", "", "db-1", "a1", NULL), 0);
}

static void apply_twice_and_owner(void **state) {
  fx_t *f = *state;
  json_t *r = rule_ok(RULE_HEAD RULE_ON RULE_RUN), *rep = NULL, *got = NULL, *items = NULL;
  keel_buf_t d;
  keel_err_t e = {0};
  char *next = NULL;
  keel_buf_init(&d, 4096);
  assert_int_equal(k_store_unit_begin(f->s, &e), 0);
  assert_int_equal(k_auto_apply(f->a, r, "ann", 1, f->now, &rep, &d, &e), 0); /* dry run */
  assert_true(json_is_true(json_object_get(rep, "changed")));
  json_decref(rep);
  assert_int_equal(k_auto_rule_get(f->a, "restart-web", &got, &e), KEEL_ENOENT);
  assert_int_equal(k_auto_apply(f->a, r, "ann", 0, f->now, &rep, &d, &e), 0);
  assert_string_equal(keel_json_str(rep, "summary"), "1 created, 0 updated, 0 deleted");
  json_decref(rep);
  assert_int_equal(k_auto_apply(f->a, r, "ann", 0, f->now, &rep, &d, &e), 0);
  assert_false(json_is_true(json_object_get(rep, "changed")));
  assert_string_equal(keel_json_str(rep, "summary"), "no changes");
  json_decref(rep);
  /* someone else applying it takes it over: its runs act as them */
  assert_int_equal(k_auto_apply(f->a, r, "bob", 0, f->now, &rep, &d, &e), 0);
  assert_string_equal(keel_json_str(rep, "summary"), "0 created, 1 updated, 0 deleted");
  assert_string_equal(json_string_value(json_array_get(
                          json_object_get(json_array_get(json_object_get(rep, "changes"), 0), "fields"), 0)),
                      "user");
  json_decref(rep);
  assert_int_equal(k_auto_rule_get(f->a, "restart-web", &got, &e), 0);
  assert_string_equal(keel_json_str(got, "owner"), "bob");
  assert_int_equal(json_integer_value(json_object_get(got, "version")), 2);
  assert_true(json_equal(json_object_get(got, "document"), r));
  json_decref(got);
  assert_int_equal(k_auto_rule_list(f->a, NULL, 10, &items, &next, &e), 0);
  assert_int_equal(json_array_size(items), 1);
  assert_null(json_object_get(json_array_get(items, 0), "document"));
  json_decref(items);
  assert_int_equal(k_auto_rule_delete(f->a, "restart-web", &e), 0);
  assert_int_equal(k_auto_rule_delete(f->a, "restart-web", &e), KEEL_ENOENT);
  assert_int_equal(k_store_unit_end(f->s, 1, &e), 0);
  assert_int_equal(k_auto_refresh(f->a, &e), 0);
  assert_int_equal(k_auto_nrules(f->a), 0);
  json_decref(r);
  keel_buf_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(doc_normalized),
      cmocka_unit_test(doc_errors),
      cmocka_unit_test(doc_runbook_check),
      cmocka_unit_test(cond_grammar),
      cmocka_unit_test(cond_meaning),
      cmocka_unit_test_setup_teardown(guards_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(state_survives_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(judged_once_per_event, setup, teardown),
      cmocka_unit_test_setup_teardown(dry_run_and_params, setup, teardown),
      cmocka_unit_test_setup_teardown(apply_twice_and_owner, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
