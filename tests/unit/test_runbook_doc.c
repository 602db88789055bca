/* Unit tests for runbook/doc.h: the Runbook document validator (every rule
 * of docs/runbooks.md, with the exact message of each error), the
 * normalized form, the examples in examples/runbooks/, and the start-time
 * parameter check k_runbook_params. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/err.h"
#include "keel/json.h"
#include "keel/yaml.h"
#include "runbook/doc.h"

#define DT_LOAD k_runbook_doc_load
#define DT_NAME "rb.yaml"
#include "doc_testutil.h"

#ifndef KEEL_SOURCE_DIR
#define KEEL_SOURCE_DIR "."
#endif

/* ---- helpers ------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  char *buf;
  long n;
  if (!fp) fail_msg("cannot open %s", path);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  n = ftell(fp);
  rewind(fp);
  buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
  fclose(fp);
  buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

/* Lines 1-8 every small case starts from. */
#define HEAD                                                                                     \
  "kind: Runbook\n"                                                                              \
  "name: rb\n"                                                                                   \
  "owner: {team: platform}\n"                                                                    \
  "parameters:\n"                                                                                \
  "  - name: svc\n"                                                                              \
  "    type: string\n"                                                                           \
  "  - {name: n, type: int, default: 3}\n"                                                       \
  "targets: app=web\n"
/* Lines 9-11: one valid step. */
#define STEPS "steps:\n  - name: a\n    command: {argv: [\"true\"]}\n"
/* A top-level section from line 9, then the steps. */
#define DOC(x) HEAD x STEPS
/* A second step "b" (line 12) whose other fields start on line 13. */
#define STEP(x) HEAD STEPS "  - name: b\n" x

/* ---- the documented example -------------------------------------------------- */

/* docs/runbooks.md's example, as written there (comments and all). */
static const char full[] =
    "kind: Runbook\n"
    "name: restart-service              # [a-z0-9][a-z0-9._-]{0,62}, unique\n"
    "description: Restart a systemd service and check it came back\n"
    "owner: {application: checkout}     # or {team: platform}\n"
    "\n"
    "parameters:\n"
    "  - name: service\n"
    "    type: string\n"
    "    required: true\n"
    "    pattern: \"^[a-z0-9@._-]+$\"\n"
    "    description: the unit to restart\n"
    "  - name: env\n"
    "    type: string\n"
    "    default: dev\n"
    "    allowed: [dev, staging, prod]\n"
    "  - name: dry_run\n"
    "    type: bool\n"
    "    default: true\n"
    "\n"
    "targets: \"app=checkout,env={{ params.env }}\"\n"
    "\n"
    "rate:\n"
    "  concurrency: 10%\n"
    "  max_errors: 1\n"
    "  batches: [1, \"10%\", \"100%\"]\n"
    "  batch_pause: first\n"
    "\n"
    "schedule:\n"
    "  cron: \"0 3 * * *\"\n"
    "  params: {service: nginx}\n"
    "  owner: platform-bot\n"
    "\n"
    "steps:\n"
    "  - name: check\n"
    "    command: {argv: [systemctl, is-active, \"{{ params.service }}\"]}\n"
    "    timeout: 30s\n"
    "    on_failure: continue\n"
    "  - name: approve\n"
    "    approval:\n"
    "      approvers: [team:platform, user:pat]\n"
    "      min_approvals: 1\n"
    "      message: \"Restart {{ params.service }} on {{ params.env }}?\"\n"
    "      timeout: 24h\n"
    "  - name: restart\n"
    "    script:\n"
    "      interpreter: /bin/sh\n"
    "      body: |\n"
    "        systemctl restart {{ params.service }}\n"
    "    timeout: 2m\n"
    "    on_failure: rollback-to check\n"
    "  - name: wait\n"
    "    sleep: 5s\n"
    "  - name: health\n"
    "    http:\n"
    "      url: \"http://127.0.0.1:8080/health\"\n"
    "      method: GET\n"
    "      expect_status: 200\n"
    "      expect_body: ok\n"
    "    timeout: 10s\n"
    "  - name: verify\n"
    "    assert:\n"
    "      step: check\n"
    "      field: stdout\n"
    "      equals: \"active\"\n";

static const char full_normalized[] =
    "{\"description\":\"Restart a systemd service and check it came back\",\"kind\":\"Runbook\","
    "\"name\":\"restart-service\",\"owner\":{\"application\":\"checkout\"},"
    "\"parameters\":["
    "{\"allowed\":null,\"default\":null,\"description\":\"the unit to restart\",\"name\":\"service\","
    "\"pattern\":\"^[a-z0-9@._-]+$\",\"required\":true,\"type\":\"string\"},"
    "{\"allowed\":[\"dev\",\"staging\",\"prod\"],\"default\":\"dev\",\"description\":null,\"name\":\"env\","
    "\"pattern\":null,\"required\":false,\"type\":\"string\"},"
    "{\"allowed\":null,\"default\":true,\"description\":null,\"name\":\"dry_run\",\"pattern\":null,"
    "\"required\":false,\"type\":\"bool\"}],"
    "\"rate\":{\"batch_pause\":\"first\",\"batches\":[1,\"10%\",\"100%\"],\"concurrency\":\"10%\","
    "\"max_errors\":1},"
    "\"schedule\":{\"cron\":\"0 3 * * *\",\"owner\":\"platform-bot\",\"params\":{\"dry_run\":true,"
    "\"env\":\"dev\",\"service\":\"nginx\"},\"rate_ms\":null},"
    "\"steps\":["
    "{\"command\":{\"argv\":[\"systemctl\",\"is-active\",\"{{ params.service }}\"]},\"name\":\"check\","
    "\"on_failure\":{\"action\":\"continue\"},\"timeout_ms\":30000},"
    "{\"approval\":{\"approvers\":[\"team:platform\",\"user:pat\"],\"message\":\"Restart {{ params.service }} "
    "on {{ params.env }}?\",\"min_approvals\":1,\"timeout_ms\":86400000},\"name\":\"approve\","
    "\"on_failure\":{\"action\":\"abort\"},\"timeout_ms\":null},"
    "{\"name\":\"restart\",\"on_failure\":{\"action\":\"rollback-to\",\"step\":\"check\"},"
    "\"script\":{\"body\":\"systemctl restart {{ params.service }}\\n\",\"interpreter\":\"/bin/sh\"},"
    "\"timeout_ms\":120000},"
    "{\"name\":\"wait\",\"on_failure\":{\"action\":\"abort\"},\"sleep_ms\":5000,\"timeout_ms\":null},"
    "{\"http\":{\"expect_body\":\"ok\",\"expect_status\":200,\"method\":\"GET\","
    "\"url\":\"http://127.0.0.1:8080/health\"},\"name\":\"health\",\"on_failure\":{\"action\":\"abort\"},"
    "\"timeout_ms\":10000},"
    "{\"assert\":{\"equals\":\"active\",\"field\":\"stdout\",\"step\":\"check\"},\"name\":\"verify\","
    "\"on_failure\":{\"action\":\"abort\"},\"timeout_ms\":null}],"
    "\"targets\":\"app=checkout,env={{ params.env }}\",\"timeout_ms\":null}";

static void test_full_normalizes(void **state) {
  json_t *v = load_ok(full), *again = NULL, *st;
  char *got = keel_json_canonical(v);
  keel_err_t e = {0};
  (void)state;
  if (strcmp(got, full_normalized)) fail_msg("\n  got  %s\n  want %s", got, full_normalized);
  /* Key fields, as an engine reads them. */
  st = json_object_get(v, "steps");
  assert_int_equal(json_array_size(st), 6);
  assert_int_equal(json_integer_value(json_object_get(json_array_get(st, 0), "timeout_ms")), 30000);
  assert_string_equal(keel_json_str(json_object_get(json_array_get(st, 2), "on_failure"), "step"),
                      "check");
  assert_int_equal(json_integer_value(json_object_get(json_array_get(st, 3), "sleep_ms")), 5000);
  assert_string_equal(keel_json_str(json_object_get(v, "rate"), "concurrency"), "10%");
  assert_string_equal(keel_json_str(json_object_get(json_object_get(v, "schedule"), "params"), "env"),
                      "dev");
  /* Normalizing is idempotent, and its JSON text is a valid document. */
  assert_int_equal(k_runbook_doc_load("n.json", got, strlen(got), &again, &e), 0);
  assert_true(json_equal(v, again));
  json_decref(again);
  /* Validating the parsed value without positions works the same. */
  assert_int_equal(k_runbook_doc_validate("x", v, NULL, &again, &e), 0);
  assert_true(json_equal(v, again));
  json_decref(again);
  free(got);
  json_decref(v);
}

static void test_minimal_defaults(void **state) {
  json_t *v = load_ok("kind: Runbook\nname: up\nowner: {team: ops}\ntargets: ''\n"
                      "steps:\n  - {name: up, command: {shell: uptime}}\n");
  char *got = keel_json_canonical(v);
  (void)state;
  assert_string_equal(got, "{\"description\":null,\"kind\":\"Runbook\",\"name\":\"up\",\"owner\":"
                           "{\"team\":\"ops\"},\"parameters\":[],\"rate\":{\"batch_pause\":\"none\","
                           "\"batches\":[\"100%\"],\"concurrency\":\"100%\",\"max_errors\":0},"
                           "\"schedule\":null,\"steps\":[{\"command\":{\"shell\":\"uptime\"},\"name\":"
                           "\"up\",\"on_failure\":{\"action\":\"abort\"},\"timeout_ms\":60000}],"
                           "\"targets\":\"\",\"timeout_ms\":null}");
  free(got);
  json_decref(v);
}

static void test_alternative_spellings(void **state) {
  json_t *v;
  json_t *st;
  (void)state;
  /* *_ms spellings, on_failure as an object, "100%" appended to batches,
   * a rate schedule, an integer assert value, a duration batch_pause,
   * schedule params given as CLI strings. */
  v = load_ok(HEAD "rate: {batches: [2, \"50%\"], batch_pause: 5m}\n"
                   "schedule: {rate_ms: 900000, owner: bot, params: {n: \"7\"}}\n" STEPS
                   "  - {name: b, sleep_ms: 1500}\n"
                   "  - {name: c, command: {shell: 'exit 3'}, timeout_ms: 2000,"
                   " on_failure: {action: rollback-to, step: a}}\n"
                   "  - {name: d, assert: {step: c, field: exit_code, not_equals: 0}}\n"
                   "  - {name: e, approval: {approvers: [user:a, user:b], min_approvals: 2, timeout_ms: 60000}}\n");
  st = json_object_get(v, "steps");
  assert_int_equal(json_integer_value(json_object_get(json_array_get(st, 1), "sleep_ms")), 1500);
  assert_int_equal(json_integer_value(json_object_get(json_array_get(st, 2), "timeout_ms")), 2000);
  assert_string_equal(keel_json_str(json_object_get(json_array_get(st, 2), "on_failure"), "step"), "a");
  assert_string_equal(keel_json_str(json_object_get(json_array_get(st, 3), "assert"), "not_equals"), "0");
  assert_int_equal(json_array_size(json_object_get(json_object_get(v, "rate"), "batches")), 3);
  assert_string_equal(keel_json_str(json_object_get(v, "rate"), "batch_pause"), "5m");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "schedule"), "rate_ms")), 900000);
  assert_int_equal(json_integer_value(json_object_get(
                       json_object_get(json_object_get(v, "schedule"), "params"), "n")), 7);
  json_decref(v);
  /* null is absent; cron fields are single-spaced. */
  v = load_ok(HEAD "description: ~\nrate: ~\nschedule: {cron: \" 0\t3  * * 1-5 \", owner: bot}\n" STEPS);
  assert_string_equal(keel_json_str(json_object_get(v, "schedule"), "cron"), "0 3 * * 1-5");
  json_decref(v);
  v = load_ok(DOC("schedule: {cron: '*/15 0-23/2 1,15 * 0-7', owner: bot}\n"));
  json_decref(v);
}

static void test_examples(void **state) {
  static const char *const files[] = {"restart-service", "clean-disk", "diagnostics",
                                      "rolling-restart"};
  (void)state;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[512], *buf, *canon;
    size_t n;
    json_t *v = NULL, *again = NULL;
    keel_err_t e = {0};
    snprintf(path, sizeof path, "%s/examples/runbooks/%s.yaml", KEEL_SOURCE_DIR, files[i]);
    buf = read_file(path, &n);
    if (k_runbook_doc_load(path, buf, n, &v, &e)) fail_msg("%s", e.msg);
    assert_string_equal(keel_json_str(v, "name"), files[i]);
    canon = keel_json_canonical(v);
    assert_int_equal(k_runbook_doc_load("again", canon, strlen(canon), &again, &e), 0);
    assert_true(json_equal(v, again));
    if (!strcmp(files[i], "rolling-restart")) {
      json_t *r = json_object_get(v, "rate");
      assert_int_equal(json_array_size(json_object_get(r, "batches")), 3);
      assert_int_equal(json_integer_value(json_array_get(json_object_get(r, "batches"), 0)), 1);
      assert_string_equal(keel_json_str(r, "batch_pause"), "first");
      assert_int_equal(json_integer_value(json_object_get(r, "max_errors")), 1);
      assert_string_equal(keel_json_str(r, "concurrency"), "25%");
    }
    if (!strcmp(files[i], "clean-disk")) {
      json_t *params = NULL, *given = json_pack("{s:s}", "env", "dev");
      assert_int_equal(k_runbook_params(v, given, &params, &e), 0);
      assert_true(json_is_true(json_object_get(params, "dry_run"))); /* lists, never deletes */
      json_decref(params);
      json_decref(given);
    }
    free(canon);
    free(buf);
    json_decref(v);
    json_decref(again);
  }
}

/* ---- errors ----------------------------------------------------------------- */

static void test_root_errors(void **state) {
  (void)state;
  expect_error("- a\n", "rb.yaml:1:1: expected a mapping (kind: Runbook)");
  expect_error(DOC("color: red\n"), "rb.yaml:9:8: color: unknown field");
  expect_error("name: rb\n", "rb.yaml:1:1: kind: required field is missing");
  expect_error("kind: runbook\n", "rb.yaml:1:7: kind: expected Runbook");
  expect_error("kind: Runbook\nname: Restart\n",
               "rb.yaml:2:7: name: invalid name 'Restart': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: Runbook\nname: rb\n", "rb.yaml:1:1: owner: required field is missing");
  expect_error("kind: Runbook\nname: rb\nowner: platform\n", "rb.yaml:3:8: owner: expected a mapping");
  expect_error("kind: Runbook\nname: rb\nowner: {}\n",
               "rb.yaml:3:8: owner: expected application: NAME or team: NAME");
  expect_error("kind: Runbook\nname: rb\nowner: {team: a, application: b}\n",
               "rb.yaml:3:31: owner.application: give application or team, not both");
  expect_error("kind: Runbook\nname: rb\nowner: {group: a}\n", "rb.yaml:3:16: owner.group: unknown field");
  expect_error("kind: Runbook\nname: rb\nowner: {team: Ops}\n",
               "rb.yaml:3:15: owner.team: invalid name 'Ops': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: Runbook\nname: rb\ndescription: [x]\n", "rb.yaml:3:14: description: expected a string");
  expect_error("kind: Runbook\nname: rb\nowner: {team: t}\n" STEPS,
               "rb.yaml:1:1: targets: required field is missing");
  expect_error(HEAD, "rb.yaml:1:1: steps: required field is missing");
  expect_error(HEAD "steps: []\n", "rb.yaml:9:8: steps: expected at least one item");
  expect_error(HEAD "steps: {a: 1}\n", "rb.yaml:9:8: steps: expected a list");
  done();
}

static void test_parameter_errors(void **state) {
  (void)state;
#define P(x) "kind: Runbook\nname: rb\nowner: {team: t}\nparameters:\n  - " x "\n"
  expect_error(P("{name: Svc, type: string}"),
               "rb.yaml:5:12: parameters[0].name: invalid name 'Svc': expected [a-z_][a-z0-9_]{0,62}");
  expect_error(P("{name: 1x, type: string}"),
               "rb.yaml:5:12: parameters[0].name: invalid name '1x': expected [a-z_][a-z0-9_]{0,62}");
  expect_error(P("{name: svc, type: string}\n  - {name: svc, type: int}"),
               "rb.yaml:6:12: parameters[1].name: duplicate parameter 'svc'");
  expect_error(P("{name: x, type: float}"),
               "rb.yaml:5:21: parameters[0].type: expected one of string, int, bool, list");
  expect_error(P("{name: x}"), "rb.yaml:5:5: parameters[0].type: required field is missing");
  expect_error(P("{name: x, type: int, required: yes}"),
               "rb.yaml:5:36: parameters[0].required: expected true or false");
  expect_error(P("{name: x, type: int, default: '3'}"),
               "rb.yaml:5:35: parameters[0].default: expected an integer");
  expect_error(P("{name: x, type: list, default: a}"),
               "rb.yaml:5:36: parameters[0].default: expected a list of strings");
  expect_error(P("{name: x, type: bool, allowed: [true]}"),
               "rb.yaml:5:36: parameters[0].allowed: not for bool parameters");
  expect_error(P("{name: x, type: int, pattern: '^1$'}"),
               "rb.yaml:5:35: parameters[0].pattern: only for string and list parameters");
  expect_error(P("{name: x, type: string, pattern: 'a('}"),
               "rb.yaml:5:38: parameters[0].pattern: invalid regular expression: Unmatched ( or \\(");
  expect_error(P("{name: x, type: string, pattern: '(a)\\1'}"),
               "rb.yaml:5:38: parameters[0].pattern: invalid regular expression: back-references "
               "are not supported");
  expect_error(P("{name: x, type: string, pattern: '((a{0}){32}){32}'}"),
               "rb.yaml:5:38: parameters[0].pattern: invalid regular expression: over 1000 atoms once "
               "repetitions are expanded");
  /* regcomp copies X{n} n times and X+ once: bombs are refused before it runs. */
  expect_error(P("{name: x, type: string, pattern: 'a{20000}'}"),
               "rb.yaml:5:38: parameters[0].pattern: invalid regular expression: repetition count over 1000");
  expect_error(P("{name: x, type: string, pattern: '((((((((((a+)+)+)+)+)+)+)+)+)+)+'}"),
               "rb.yaml:5:38: parameters[0].pattern: invalid regular expression: over 1000 atoms once "
               "repetitions are expanded");
  expect_error(P("{name: x, type: string, pattern: '(a{999})(b|c)'}"),
               "rb.yaml:5:38: parameters[0].pattern: invalid regular expression: over 1000 atoms once "
               "repetitions are expanded");
  expect_error(P("{name: x, type: string, pattern: '^[a-z]+$', default: X}"),
               "rb.yaml:5:59: parameters[0].default: 'X' does not match ^[a-z]+$");
  expect_error(P("{name: x, type: string, allowed: [dev, prod], default: qa}"),
               "rb.yaml:5:60: parameters[0].default: 'qa' is not one of the allowed values");
  expect_error(P("{name: x, type: list, allowed: [a, b], default: [a, c]}"),
               "rb.yaml:5:57: parameters[0].default[1]: 'c' is not one of the allowed values");
  expect_error(P("{name: x, type: string, required: true, default: a}"),
               "rb.yaml:5:54: parameters[0].default: a required parameter takes no default");
  expect_error(P("{name: x, type: int, min: 1}"), "rb.yaml:5:31: parameters[0].min: unknown field");
  expect_error(P("{name: x, type: int, allowed: [1, 2, 1]}"),
               "rb.yaml:5:42: parameters[0].allowed[2]: listed twice");
  expect_error(P("{name: x, type: int, allowed: [1, a]}"),
               "rb.yaml:5:39: parameters[0].allowed[1]: expected an integer");
#undef P
  done();
}

static void test_regex_accepted(void **state) {
  (void)state;
  /* Ordinary patterns stay well under the limit. */
  json_decref(load_ok("kind: Runbook\nname: rb\nowner: {team: t}\nparameters:\n"
                      "  - {name: ip, type: string, pattern: '^([0-9]{1,3}\\.){3}[0-9]{1,3}$'}\n"
                      "  - {name: h, type: list, pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9-]{1,63})*$'}\n"
                      "  - {name: b, type: string, pattern: '^[]a{}[:alpha:]-]+$|^x{2,}$'}\n"
                      "targets: a\n" STEPS));
}

static void test_targets_errors(void **state) {
  (void)state;
#define T(x) "kind: Runbook\nname: rb\nowner: {team: t}\nparameters: [{name: env, type: string}]\ntargets: " x "\n" STEPS
  expect_error(T("'app=web,'"), "rb.yaml:5:10: targets: invalid selector: column 9: expected a term after ','");
  expect_error(T("'app=w b'"),
               "rb.yaml:5:10: targets: invalid selector: column 7: expected ',' or end after value 'w'");
  expect_error(T("'app={{ params.nope }}'"), "rb.yaml:5:10: targets: {{ params.nope }}: no parameter 'nope'");
  expect_error(T("'app={{ steps.a.stdout }}'"),
               "rb.yaml:5:10: targets: {{ steps.a.stdout }}: targets are chosen before any step runs");
  expect_error(T("'id={{ target.id }}'"),
               "rb.yaml:5:10: targets: {{ target.id }}: targets are chosen before any step runs");
  expect_error(T("'env={{ params.env'"), "rb.yaml:5:10: targets: invalid template: column 5: unterminated '{{'");
  expect_error(T("'env={{ params.env.x }}'"), "rb.yaml:5:10: targets: {{ params.env.x }}: expected params.NAME");
  expect_error(T("[app]"), "rb.yaml:5:10: targets: expected a string");
#undef T
  done();
}

static void test_rate_errors(void **state) {
  (void)state;
  expect_error(DOC("rate: {concurrency: 0}\n"),
               "rb.yaml:9:21: rate.concurrency: 0 is out of range: expected 1 to 1000000 targets");
  expect_error(DOC("rate: {concurrency: 150%}\n"),
               "rb.yaml:9:21: rate.concurrency: expected a number of targets or a percentage from "
               "\"1%\" to \"100%\"");
  expect_error(DOC("rate: {concurrency: 0%}\n"),
               "rb.yaml:9:21: rate.concurrency: expected a number of targets or a percentage from "
               "\"1%\" to \"100%\"");
  expect_error(DOC("rate: {max_errors: 1.5}\n"),
               "rb.yaml:9:20: rate.max_errors: expected a number of targets or a percentage from "
               "\"0%\" to \"100%\"");
  expect_error(DOC("rate: {max_errors: '05%'}\n"),
               "rb.yaml:9:20: rate.max_errors: expected a number of targets or a percentage from "
               "\"0%\" to \"100%\"");
  expect_error(DOC("rate: {batches: [5, 2]}\n"),
               "rb.yaml:9:21: rate.batches[1]: 2 is not more than 5 (batches are cumulative)");
  expect_error(DOC("rate: {batches: [1, '50%', 3, '10%']}\n"),
               "rb.yaml:9:31: rate.batches[3]: 10% is not more than 50% (batches are cumulative)");
  expect_error(DOC("rate: {batches: ['100%', 5]}\n"),
               "rb.yaml:9:26: rate.batches[1]: comes after \"100%\" (every target already had its turn)");
  expect_error(DOC("rate: {batches: []}\n"), "rb.yaml:9:17: rate.batches: expected at least one item");
  expect_error(DOC("rate: {batches: [0]}\n"),
               "rb.yaml:9:18: rate.batches[0]: 0 is out of range: expected 1 to 1000000 targets");
  expect_error(DOC("rate: {batch_pause: sometimes}\n"),
               "rb.yaml:9:21: rate.batch_pause: expected none, first, every or a duration like 5m");
  expect_error(DOC("rate: {batch_pause: 2d}\n"),
               "rb.yaml:9:21: rate.batch_pause: '2d' is out of range: expected 1s to 24h");
  expect_error(DOC("rate: {burst: 2}\n"), "rb.yaml:9:15: rate.burst: unknown field");
  done();
}

static void test_schedule_errors(void **state) {
  (void)state;
#define C(x) DOC("schedule: {cron: '" x "', owner: bot}\n")
  expect_error(DOC("schedule: {owner: bot}\n"), "rb.yaml:9:11: schedule: expected cron or rate");
  expect_error(DOC("schedule: {cron: '0 3 * * *', rate: 1h, owner: bot}\n"),
               "rb.yaml:9:37: schedule.rate: give cron or rate, not both");
  expect_error(C("0 3 * *"),
               "rb.yaml:9:18: schedule.cron: '0 3 * *': expected 5 fields: minute hour day-of-month "
               "month day-of-week");
  expect_error(C("60 * * * *"), "rb.yaml:9:18: schedule.cron: field 1 (minute) '60': 60 is out of range 0-59");
  expect_error(C("0 24 * * *"), "rb.yaml:9:18: schedule.cron: field 2 (hour) '24': 24 is out of range 0-23");
  expect_error(C("0 0 0 * *"),
               "rb.yaml:9:18: schedule.cron: field 3 (day-of-month) '0': 0 is out of range 1-31");
  expect_error(C("0 0 * 1-13 *"),
               "rb.yaml:9:18: schedule.cron: field 4 (month) '1-13': 13 is out of range 1-12");
  expect_error(C("0 0 * * 8"), "rb.yaml:9:18: schedule.cron: field 5 (day-of-week) '8': 8 is out of range 0-7");
  expect_error(C("*/0 * * * *"), "rb.yaml:9:18: schedule.cron: field 1 (minute) '*/0': step out of range 1-60");
  expect_error(C("5/15 * * * *"),
               "rb.yaml:9:18: schedule.cron: field 1 (minute) '5/15': a step needs * or a range before it");
  expect_error(C("0 5-3 * * *"), "rb.yaml:9:18: schedule.cron: field 2 (hour) '5-3': range 5-3 goes backwards");
  expect_error(C("0 1,,2 * * *"),
               "rb.yaml:9:18: schedule.cron: field 2 (hour) '1,,2': expected numbers, ranges (1-5), "
               "steps (*/15), lists (1,2) or *");
  expect_error(C("0 3 * * MON"),
               "rb.yaml:9:18: schedule.cron: field 5 (day-of-week) 'MON': expected numbers, ranges "
               "(1-5), steps (*/15), lists (1,2) or *");
  expect_error(DOC("schedule: {rate: 30s, owner: bot}\n"),
               "rb.yaml:9:18: schedule.rate: '30s' is out of range: expected 1m to 366d");
  expect_error(DOC("schedule: {rate: 1h, params: {bogus: 1}, owner: bot}\n"),
               "rb.yaml:9:38: schedule.params.bogus: unknown parameter");
  expect_error(DOC("schedule: {rate: 1h, params: {n: x}, owner: bot}\n"),
               "rb.yaml:9:34: schedule.params.n: expected an integer");
  expect_error("kind: Runbook\nname: rb\nowner: {team: t}\n"
               "parameters: [{name: svc, type: string, required: true}]\ntargets: a\n"
               "schedule: {rate: 1h, owner: bot}\n" STEPS,
               "rb.yaml:6:11: schedule.params.svc: required parameter is missing");
  expect_error(DOC("schedule: {rate: 1h}\n"), "rb.yaml:9:11: schedule.owner: required field is missing");
  expect_error(DOC("schedule: {rate: 1h, owner: Bot}\n"),
               "rb.yaml:9:29: schedule.owner: invalid name 'Bot': expected [a-z0-9][a-z0-9._-]{0,62}");
#undef C
  done();
}

static void test_step_errors(void **state) {
  (void)state;
  expect_error(STEP("    timeout: 5s\n"),
               "rb.yaml:12:5: steps[1]: expected one of command, script, http, sleep, approval, assert");
  expect_error(STEP("    command: {shell: ls}\n    sleep: 1s\n"),
               "rb.yaml:14:12: steps[1].sleep: a step is one of command, script, http, sleep, "
               "approval, assert: this one is already command");
  expect_error(HEAD STEPS "  - {name: B, sleep: 1s}\n",
               "rb.yaml:12:12: steps[1].name: invalid name 'B': expected [a-z][a-z0-9_-]{0,62}");
  expect_error(HEAD STEPS "  - {name: a, sleep: 1s}\n",
               "rb.yaml:12:12: steps[1].name: duplicate step 'a' (first at steps[0])");
  expect_error(STEP("    sleep: 1s\n    retries: 3\n"), "rb.yaml:14:14: steps[1].retries: unknown field");
  expect_error(STEP("    command: {shell: ls}\n    timeout: 0s\n"),
               "rb.yaml:14:14: steps[1].timeout: invalid duration '0s': expected e.g. 30s, 5m, 1h");
  expect_error(STEP("    command: {shell: ls}\n    timeout: 25h\n"),
               "rb.yaml:14:14: steps[1].timeout: '25h' is out of range: expected 1s to 24h");
  expect_error(STEP("    command: {shell: ls}\n    timeout: 30s\n    timeout_ms: 30000\n"),
               "rb.yaml:15:17: steps[1].timeout_ms: give timeout or timeout_ms, not both");
  expect_error(STEP("    sleep: 1s\n    timeout: 30s\n"), "rb.yaml:14:14: steps[1].timeout: not for a sleep step");
  expect_error(STEP("    sleep: 1s\n    on_failure: retry\n"),
               "rb.yaml:14:17: steps[1].on_failure: expected abort, continue or rollback-to STEP");
  expect_error(STEP("    sleep: 1s\n    on_failure: rollback-to zzz\n"),
               "rb.yaml:14:17: steps[1].on_failure: no step 'zzz'");
  expect_error(STEP("    sleep: 1s\n    on_failure: rollback-to b\n"),
               "rb.yaml:14:17: steps[1].on_failure: rollback-to: step 'b' does not run before this one");
  expect_error(STEP("    sleep: 1s\n    on_failure: rollback-to c\n  - {name: c, sleep: 1s}\n"),
               "rb.yaml:14:17: steps[1].on_failure: rollback-to: step 'c' does not run before this one");
  expect_error(STEP("    sleep: 1s\n    on_failure: {action: continue, step: a}\n"),
               "rb.yaml:14:42: steps[1].on_failure.step: only with action rollback-to");
  expect_error(STEP("    sleep: 0.5s\n"),
               "rb.yaml:13:12: steps[1].sleep: invalid duration '0.5s': expected e.g. 30s, 5m, 1h");
  expect_error(STEP("    sleep: 5\n"), "rb.yaml:13:12: steps[1].sleep: expected a duration like 30s, 5m or 1h");
  expect_error(STEP("    sleep: 2d\n"), "rb.yaml:13:12: steps[1].sleep: '2d' is out of range: expected 1s to 24h");
  done();
}

static void test_kind_errors(void **state) {
  (void)state;
  expect_error(STEP("    command: {argv: []}\n"), "rb.yaml:13:21: steps[1].command.argv: expected at least one item");
  expect_error(STEP("    command: {argv: [ls], shell: ls}\n"),
               "rb.yaml:13:34: steps[1].command.shell: give argv or shell, not both");
  expect_error(STEP("    command: {}\n"), "rb.yaml:13:14: steps[1].command: expected argv: [...] or shell: \"...\"");
  expect_error(STEP("    command: {argv: [echo, '{{ steps.c.stdout }}']}\n  - {name: c, sleep: 1s}\n"),
               "rb.yaml:13:28: steps[1].command.argv[1]: {{ steps.c.stdout }}: step 'c' does not run "
               "before this one");
  expect_error(STEP("    command: {argv: [echo, '{{ steps.b.stdout }}']}\n"),
               "rb.yaml:13:28: steps[1].command.argv[1]: {{ steps.b.stdout }}: step 'b' does not run "
               "before this one");
  expect_error(STEP("    command: {argv: [echo, '{{ steps.zz.stdout }}']}\n"),
               "rb.yaml:13:28: steps[1].command.argv[1]: {{ steps.zz.stdout }}: no step 'zz'");
  expect_error(STEP("    command: {argv: [echo, '{{ steps.a.output }}']}\n"),
               "rb.yaml:13:28: steps[1].command.argv[1]: {{ steps.a.output }}: expected "
               "steps.NAME.stdout, .stderr or .exit_code");
  expect_error(STEP("    command: {shell: 'echo {{ env.HOME }}'}\n"),
               "rb.yaml:13:22: steps[1].command.shell: {{ env.HOME }}: unknown name: expected params, "
               "steps, target or execution");
  expect_error(STEP("    command: {shell: 'echo {{ target.ip }}'}\n"),
               "rb.yaml:13:22: steps[1].command.shell: {{ target.ip }}: expected target.id, "
               "target.hostname or target.tags.KEY");
  expect_error(STEP("    command: {shell: 'echo {{ params.zz }}'}\n"),
               "rb.yaml:13:22: steps[1].command.shell: {{ params.zz }}: no parameter 'zz'");
  expect_error(STEP("    command: {shell: 'echo {{ params.svc }'}\n"),
               "rb.yaml:13:22: steps[1].command.shell: invalid template: column 6: unterminated '{{'");
  expect_error(STEP("    command: {shell: 'echo {{ 1x }}'}\n"),
               "rb.yaml:13:22: steps[1].command.shell: invalid template: column 9: name '1x': a part "
               "must start with a letter or '_'");
  expect_error(STEP("    script: {body: ''}\n"), "rb.yaml:13:20: steps[1].script.body: expected a script");
  expect_error(STEP("    script: {interpreter: python3, body: 'print(1)'}\n"),
               "rb.yaml:13:27: steps[1].script.interpreter: expected an absolute path like /bin/sh");
  expect_error(STEP("    script: {body: x, env: {a: b}}\n"), "rb.yaml:13:28: steps[1].script.env: unknown field");
  expect_error(STEP("    http: {url: 'ftp://h/x'}\n"),
               "rb.yaml:13:17: steps[1].http.url: expected an http:// or https:// URL");
  expect_error(STEP("    http: {url: '{{ params.svc }}/x'}\n"),
               "rb.yaml:13:17: steps[1].http.url: expected an http:// or https:// URL");
  expect_error(STEP("    http: {url: 'http://h/', expect_status: 700}\n"),
               "rb.yaml:13:45: steps[1].http.expect_status: 700 is out of range: expected 100 to 599");
  expect_error(STEP("    http: {url: 'http://h/', method: FETCH}\n"),
               "rb.yaml:13:38: steps[1].http.method: expected one of GET, HEAD, POST, PUT, PATCH, DELETE");
  expect_error(STEP("    approval: {approvers: [bob]}\n"),
               "rb.yaml:13:28: steps[1].approval.approvers[0]: invalid approver 'bob': expected team:NAME "
               "or user:NAME");
  expect_error(STEP("    approval: {approvers: [user:a, user:a]}\n"),
               "rb.yaml:13:36: steps[1].approval.approvers[1]: 'user:a' listed twice");
  expect_error(STEP("    approval: {approvers: [user:a, user:b], min_approvals: 3}\n"),
               "rb.yaml:13:60: steps[1].approval.min_approvals: 3 approvals needed but only 2 users may approve");
  expect_error(STEP("    approval: {approvers: [team:ops], message: 'on {{ target.hostname }}?'}\n"),
               "rb.yaml:13:48: steps[1].approval.message: {{ target.hostname }}: an approval runs once "
               "per execution, not per target");
  expect_error(STEP("    approval: {approvers: [team:ops]}\n    timeout: 1h\n"),
               "rb.yaml:14:14: steps[1].timeout: not for an approval step: use approval.timeout");
  expect_error(STEP("    approval: {approvers: [team:ops], timeout: 30s}\n"),
               "rb.yaml:13:48: steps[1].approval.timeout: '30s' is out of range: expected 1m to 7d");
  expect_error(STEP("    assert: {step: a, field: stdout}\n"),
               "rb.yaml:13:13: steps[1].assert: expected one of equals, not_equals, contains, matches");
  expect_error(STEP("    assert: {step: a, field: stdout, equals: x, contains: y}\n"),
               "rb.yaml:13:59: steps[1].assert.contains: only one of equals, not_equals, contains, "
               "matches (this one has equals)");
  expect_error(STEP("    assert: {step: a, field: stdout, matches: '(x'}\n"),
               "rb.yaml:13:47: steps[1].assert.matches: invalid regular expression: Unmatched ( or \\(");
  expect_error(STEP("    assert: {step: zz, field: stdout, equals: x}\n"),
               "rb.yaml:13:20: steps[1].assert.step: no step 'zz'");
  expect_error(STEP("    assert: {step: b, field: stdout, equals: x}\n"),
               "rb.yaml:13:20: steps[1].assert.step: assert: step 'b' does not run before this one");
  expect_error(STEP("    assert: {step: a, field: output, equals: x}\n"),
               "rb.yaml:13:30: steps[1].assert.field: expected one of stdout, stderr, exit_code");
  expect_error(STEP("    assert: {step: a, field: stdout, contains: 3}\n"),
               "rb.yaml:13:48: steps[1].assert.contains: expected a string");
  done();
}

static void test_validate_without_positions(void **state) {
  json_t *doc = json_pack("{s:s,s:s,s:{s:s},s:s,s:[{s:s,s:s}]}", "kind", "Runbook", "name", "a",
                          "owner", "team", "t", "targets", "", "steps", "name", "x", "sleep", "1");
  json_t *out = (json_t *)0x1;
  keel_err_t e = {0};
  (void)state;
  assert_int_equal(k_runbook_doc_validate("api", doc, NULL, &out, &e), KEEL_EINVAL);
  assert_null(out);
  assert_string_equal(e.msg, "api: steps[0].sleep: invalid duration '1': expected e.g. 30s, 5m, 1h");
  json_decref(doc);
  /* A key with a NUL byte is never taken for a known one. */
  doc = json_pack("{s:s,s:s}", "kind", "Runbook", "name", "a");
  json_object_setn_new(doc, "owner\0x", 7, json_string("t"));
  assert_int_equal(k_runbook_doc_validate("api", doc, NULL, &out, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "api: owner?x: unknown field");
  json_decref(doc);
}

static void test_yaml_errors_pass_through(void **state) {
  (void)state;
  expect_error("kind: Runbook\nname: [\n", "rb.yaml:3:1: flow sequence without a closing bracket");
  expect_error("", "rb.yaml:1:1: empty document");
  done();
}

/* ---- k_runbook_params ------------------------------------------------------------ */

static const char params_doc[] =
    "kind: Runbook\nname: p\nowner: {team: t}\n"
    "parameters:\n"
    "  - {name: service, type: string, required: true, pattern: '^[a-z0-9@._-]+$'}\n"
    "  - {name: env, type: string, default: dev, allowed: [dev, prod]}\n"
    "  - {name: count, type: int, default: 1}\n"
    "  - {name: force, type: bool}\n"
    "  - {name: hosts, type: list, pattern: '^[a-z0-9.-]+$'}\n"
    "  - {name: note, type: string}\n"
    "  - {name: level, type: int, allowed: [1, 2, 3]}\n"
    "targets: 'env={{ params.env }}'\n"
    "steps:\n  - {name: s, command: {argv: [echo, '{{ params.note }}']}}\n";

static json_t *params_rb(void) { return load_ok(params_doc); }

static void expect_params(const json_t *rb, const char *given_json, const char *want) {
  json_t *given = json_loads(given_json, JSON_ALLOW_NUL, NULL), *out = (json_t *)0x1;
  keel_err_t e = {0};
  char *got;
  int rc;
  if (!given) fail_msg("bad test JSON %s", given_json);
  rc = k_runbook_params(rb, given, &out, &e);
  if (want[0] == '{') {
    if (rc) fail_msg("params %s: %s", given_json, e.msg);
    got = keel_json_canonical(out);
    if (strcmp(got, want)) fail_msg("\n  got  %s\n  want %s", got, want);
    free(got);
    json_decref(out);
  } else {
    if (rc != KEEL_EINVAL) fail_msg("params %s = %d, want KEEL_EINVAL", given_json, rc);
    assert_null(out);
    if (strcmp(e.msg, want)) fail_msg("\n  got  %s\n  want %s", e.msg, want);
  }
  json_decref(given);
}

static void test_params(void **state) {
  json_t *rb = params_rb(), *out = (json_t *)1;
  keel_err_t e = {0};
  (void)state;
  /* Defaults filled; optional ones without a default left out. */
  expect_params(rb, "{\"service\":\"nginx\"}", "{\"count\":1,\"env\":\"dev\",\"service\":\"nginx\"}");
  expect_params(rb, "{\"service\":\"nginx\",\"note\":null}", "{\"count\":1,\"env\":\"dev\",\"service\":\"nginx\"}");
  expect_params(rb, "{}", "params.service: required parameter is missing");
  assert_int_equal(k_runbook_params(rb, NULL, &out, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "params.service: required parameter is missing");
  expect_params(rb, "{\"service\":\"x\",\"bogus\":1}", "params.bogus: unknown parameter");
  expect_params(rb, "[1]", "params: expected a mapping of name: value");
  /* Types, as JSON and as command-line strings. */
  expect_params(rb, "{\"service\":\"x\",\"count\":\"3\",\"force\":\"true\",\"hosts\":\"a,b\"}",
                "{\"count\":3,\"env\":\"dev\",\"force\":true,\"hosts\":[\"a\",\"b\"],\"service\":\"x\"}");
  expect_params(rb, "{\"service\":\"x\",\"count\":-2,\"force\":false,\"hosts\":[\"a\"]}",
                "{\"count\":-2,\"env\":\"dev\",\"force\":false,\"hosts\":[\"a\"],\"service\":\"x\"}");
  expect_params(rb, "{\"service\":\"x\",\"force\":\"false\",\"hosts\":\"\"}",
                "{\"count\":1,\"env\":\"dev\",\"force\":false,\"hosts\":[],\"service\":\"x\"}");
  expect_params(rb, "{\"service\":3}", "params.service: expected a string");
  expect_params(rb, "{\"service\":\"x\",\"count\":\"3x\"}", "params.count: expected an integer");
  expect_params(rb, "{\"service\":\"x\",\"count\":\" 3\"}", "params.count: expected an integer");
  expect_params(rb, "{\"service\":\"x\",\"count\":\"99999999999999999999\"}", "params.count: expected an integer");
  expect_params(rb, "{\"service\":\"x\",\"count\":1.5}", "params.count: expected an integer");
  expect_params(rb, "{\"service\":\"x\",\"force\":\"yes\"}", "params.force: expected true or false");
  expect_params(rb, "{\"service\":\"x\",\"force\":1}", "params.force: expected true or false");
  expect_params(rb, "{\"service\":\"x\",\"hosts\":{\"a\":1}}", "params.hosts: expected a list of strings");
  expect_params(rb, "{\"service\":\"x\",\"hosts\":[\"a\",2]}", "params.hosts[1]: expected a string");
  /* allowed and pattern */
  expect_params(rb, "{\"service\":\"x\",\"env\":\"qa\"}", "params.env: 'qa' is not one of the allowed values");
  expect_params(rb, "{\"service\":\"x\",\"level\":\"4\"}", "params.level: 4 is not one of the allowed values");
  expect_params(rb, "{\"service\":\"x\",\"level\":\"2\"}",
                "{\"count\":1,\"env\":\"dev\",\"level\":2,\"service\":\"x\"}");
  expect_params(rb, "{\"service\":\"nginx; rm -rf /\"}",
                "params.service: 'nginx; rm -rf /' does not match ^[a-z0-9@._-]+$");
  expect_params(rb, "{\"service\":\"x\",\"hosts\":\"a,b c\"}",
                "params.hosts[1]: 'b c' does not match ^[a-z0-9.-]+$");
  expect_params(rb, "{\"service\":\"a\\u0000b\"}", "params.service: contains a NUL byte");
  /* Hostile values are data when no pattern forbids them. */
  expect_params(rb, "{\"service\":\"x\",\"note\":\"; rm -rf /\"}",
                "{\"count\":1,\"env\":\"dev\",\"note\":\"; rm -rf /\",\"service\":\"x\"}");
  expect_params(rb, "{\"service\":\"x\",\"note\":\"$(id)`id`\"}",
                "{\"count\":1,\"env\":\"dev\",\"note\":\"$(id)`id`\",\"service\":\"x\"}");
  expect_params(rb, "{\"service\":\"x\",\"note\":\"two\\nlines {{ params.env }}\"}",
                "{\"count\":1,\"env\":\"dev\",\"note\":\"two\\nlines {{ params.env }}\",\"service\":\"x\"}");
  json_decref(rb);
}

static void test_params_hostile_pattern(void **state) {
  /* A pattern that allows anything lets every hostile value through as
   * data; one that does not names the value without its control bytes. */
  json_t *rb = load_ok("kind: Runbook\nname: p\nowner: {team: t}\n"
                       "parameters: [{name: v, type: string, pattern: '^.*$'},"
                       " {name: w, type: string, pattern: '^[^;$`]*$'}]\n"
                       "targets: a\nsteps: [{name: s, command: {shell: 'echo {{ params.v }}'}}]\n");
  (void)state;
  expect_params(rb, "{\"v\":\"; rm -rf /\"}", "{\"v\":\"; rm -rf /\"}");
  expect_params(rb, "{\"v\":\"$(id)\"}", "{\"v\":\"$(id)\"}");
  expect_params(rb, "{\"v\":\"a\\nb\"}", "{\"v\":\"a\\nb\"}");
  expect_params(rb, "{\"w\":\"a;\\nb\"}", "params.w: 'a;?b' does not match ^[^;$`]*$");
  json_decref(rb);
}


/* References in shell and script bodies: only where sh reads a word. */
static void test_shell_reference_positions(void **state) {
  static const struct {
    const char *body;
    const char *want; /* NULL: valid; else a substring of the error */
  } cases[] = {
      {"systemctl restart {{ params.svc }}", NULL},
      {"x={{ params.svc }}; echo \"$x\"", NULL},
      {"echo --name={{ params.svc }}", NULL},
      {"echo '{{ '{{' }}'", NULL},
      {"echo \"{{ params.svc }}\"", "inside double quotes"},
      {"echo 'a {{ params.svc }} b'", "inside single quotes"},
      {"echo ok # {{ params.svc }}", "inside a comment"},
      {"cat <<EOF\n{{ params.svc }}\nEOF\n", "inside an unquoted here-document"},
      {"cat <<'EOF'\n{{ params.svc }}\nEOF\n", NULL},
      {"cat <<EOF\nx\nEOF\necho {{ params.svc }}", NULL},
      {"echo \"a\\\"b\" {{ params.svc }}", NULL},
      {"echo a#b {{ params.svc }}", NULL},
  };
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char doc[1024];
    json_t *out = NULL;
    keel_err_t e = {0};
    int n = snprintf(doc, sizeof doc,
                     "{\"kind\":\"Runbook\",\"name\":\"r\",\"owner\":{\"team\":\"t\"},"
                     "\"targets\":\"\",\"parameters\":[{\"name\":\"svc\",\"type\":\"string\"}],"
                     "\"steps\":[{\"name\":\"a\",\"command\":{\"shell\":");
    json_t *js = json_string(cases[i].body);
    char *enc = json_dumps(js, JSON_ENCODE_ANY);
    snprintf(doc + n, sizeof doc - (size_t)n, "%s}}]}", enc);
    free(enc);
    json_decref(js);
    int rc = k_runbook_doc_load("t.json", doc, strlen(doc), &out, &e);
    if (!cases[i].want) {
      if (rc) fail_msg("case %zu (%s): unexpected error: %s", i, cases[i].body, e.msg);
    } else if (!rc || !strstr(e.msg, cases[i].want)) {
      fail_msg("case %zu (%s): want error with '%s', got rc %d '%s'", i, cases[i].body,
               cases[i].want, rc, e.msg);
    }
    json_decref(out);
  }
  /* another interpreter: no references in the text at all */
  {
    const char *d = "{\"kind\":\"Runbook\",\"name\":\"r\",\"owner\":{\"team\":\"t\"},"
                    "\"targets\":\"\",\"parameters\":[{\"name\":\"svc\",\"type\":\"string\"}],"
                    "\"steps\":[{\"name\":\"a\",\"script\":{\"interpreter\":\"/usr/bin/python3\","
                    "\"body\":\"print({{ params.svc }})\"}}]}";
    json_t *out = NULL;
    keel_err_t e = {0};
    assert_int_equal(k_runbook_doc_load("t.json", d, strlen(d), &out, &e), KEEL_EINVAL);
    assert_non_null(strstr(e.msg, "another interpreter"));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shell_reference_positions),
      cmocka_unit_test(test_full_normalizes),
      cmocka_unit_test(test_minimal_defaults),
      cmocka_unit_test(test_alternative_spellings),
      cmocka_unit_test(test_examples),
      cmocka_unit_test(test_root_errors),
      cmocka_unit_test(test_parameter_errors),
      cmocka_unit_test(test_regex_accepted),
      cmocka_unit_test(test_targets_errors),
      cmocka_unit_test(test_rate_errors),
      cmocka_unit_test(test_schedule_errors),
      cmocka_unit_test(test_step_errors),
      cmocka_unit_test(test_kind_errors),
      cmocka_unit_test(test_validate_without_positions),
      cmocka_unit_test(test_yaml_errors_pass_through),
      cmocka_unit_test(test_params),
      cmocka_unit_test(test_params_hostile_pattern),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
