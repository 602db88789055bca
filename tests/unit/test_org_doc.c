/* Unit tests for org/doc.h: the Organization document validator (every
 * rule of docs/org-document.md, with the exact message of each error) and
 * the normalized form. */
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
#include "org/doc.h"

#ifndef KEEL_SOURCE_DIR
#define KEEL_SOURCE_DIR "."
#endif

/* ---- helpers ------------------------------------------------------------ */

static json_t *load_ok(const char *text) {
  json_t *v = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = k_org_doc_load("org.yaml", text, strlen(text), &v, &e);
  if (rc) fail_msg("load = %d: %s\n%s", rc, e.msg, text);
  assert_non_null(v);
  return v;
}

static void expect_error(const char *text, const char *want) {
  json_t *v = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = k_org_doc_load("org.yaml", text, strlen(text), &v, &e);
  if (rc != KEEL_EINVAL) fail_msg("load = %d (%s), want KEEL_EINVAL\n%s", rc, e.msg, text);
  assert_null(v);
  if (strcmp(e.msg, want)) fail_msg("\n  got  %s\n  want %s\n%s", e.msg, want, text);
}

/* The head every small case starts from (16 lines). */
#define HEAD                                                                                     \
  "kind: Organization\n"                                                                         \
  "name: acme\n"                                                                                 \
  "operating_model: ccoe\n"                                                                      \
  "base: decentralized\n"                                                                        \
  "users:\n"                                                                                     \
  "  - name: alice\n"                                                                            \
  "teams:\n"                                                                                     \
  "  - name: checkout\n"                                                                         \
  "    kind: application\n"                                                                      \
  "  - name: msp\n"                                                                              \
  "    kind: partner\n"                                                                          \
  "applications:\n"                                                                              \
  "  - name: checkout\n"                                                                         \
  "    owner: checkout\n"                                                                        \
  "    environments: [dev, prod]\n"                                                              \
  "    selector: app=checkout\n"

/* Lines 17-20: a policy the cases complete from line 21 on. */
#define POLICY(body) HEAD "policies:\n  - id: p1\n    effect: deny\n    principals: ['*']\n" body
/* The same without principals, from line 20 on. */
#define PRINC(body) HEAD "policies:\n  - id: p1\n    effect: deny\n" body

/* ---- the full document --------------------------------------------------- */

static const char full[] =
    "# everything the schema has\n"
    "kind: Organization\n"
    "name: acme\n"
    "operating_model: ccoe\n"
    "base: centralized\n"
    "users:\n"
    "  - name: alice\n"
    "    display_name: Alice Doe\n"
    "    email: alice@acme.example\n"
    "    role: operator\n"
    "  - name: bob\n"
    "teams:\n"
    "  - name: platform\n"
    "    kind: platform\n"
    "    members: [alice, carol]   # carol: left for apply to find in keeld\n"
    "  - name: checkout\n"
    "    kind: application\n"
    "  - name: search\n"
    "    kind: application\n"
    "    members: []\n"
    "  - {name: acme-msp, kind: partner, members: [bob]}\n"
    "applications:\n"
    "  - name: checkout\n"
    "    owner: checkout\n"
    "    environments: [dev, prod]\n"
    "    selector: app=checkout\n"
    "  - name: search\n"
    "    owner: search\n"
    "    environments: [staging, prod]\n"
    "    selector: 'app in (search, search-api), env'\n"
    "grants:\n"
    "  - team: acme-msp\n"
    "    applications: [checkout, search]\n"
    "    actions: [exec:run, agent:read]\n"
    "    expires_at: 2027-06-30T02:00:00+02:00\n"
    "  - team: acme-msp\n"
    "    applications: [search]\n"
    "    environments: [staging]\n"
    "    actions: ['*:read']\n"
    "    expires_at: 2027-06-30T00:00:00Z\n"
    "policies:\n"
    "  - id: checkout-no-friday-prod\n"
    "    effect: deny\n"
    "    principals: [team:checkout, user:alice, role:operator]\n"
    "    actions: [exec:run, 'exec:*', '*']\n"
    "    resources: [app/checkout/env/prod/**, 'app/*/env/dev/host/agt_*', org]\n"
    "    conditions:\n"
    "      window: {days: [fri], start: \"00:00\", end: \"24:00\"}\n"
    "      resource_tags: {tier: web}\n"
    "      token_max_age: 12h\n"
    "    reason: no Friday deploys\n"
    "  - id: ops-allow\n"
    "    effect: allow\n"
    "    principals: ['*']\n"
    "    actions: [agent:read]\n"
    "    resources: ['**']\n"
    "guardrails:\n"
    "  - id: prod-change-window\n"
    "    actions: [exec:run]\n"
    "    resources: [app/*/env/prod/**]\n"
    "    conditions:\n"
    "      outside_window: {days: [mon, tue, wed, thu], start: \"10:00\", end: \"16:00\"}\n"
    "      resource_tags_missing: [app, env]\n"
    "    reason: no command on prod outside the change window\n";

static const char full_normalized[] =
    "{\"applications\":["
    "{\"environments\":[\"dev\",\"prod\"],\"name\":\"checkout\",\"owner\":\"checkout\",\"selector\":\"app=checkout\"},"
    "{\"environments\":[\"staging\",\"prod\"],\"name\":\"search\",\"owner\":\"search\",\"selector\":\"app in (search, search-api), env\"}],"
    "\"base\":\"centralized\","
    "\"grants\":["
    "{\"actions\":[\"exec:run\",\"agent:read\"],\"applications\":[\"checkout\",\"search\"],"
    "\"environments\":[\"dev\",\"prod\",\"staging\"],\"expires_at\":\"2027-06-30T00:00:00.000Z\",\"team\":\"acme-msp\"},"
    "{\"actions\":[\"*:read\"],\"applications\":[\"search\"],\"environments\":[\"staging\"],"
    "\"expires_at\":\"2027-06-30T00:00:00.000Z\",\"team\":\"acme-msp\"}],"
    "\"guardrails\":["
    "{\"actions\":[\"exec:run\"],\"conditions\":{\"outside_window\":{\"days\":[\"mon\",\"tue\",\"wed\",\"thu\"],\"end\":\"16:00\",\"start\":\"10:00\"},"
    "\"resource_tags_missing\":[\"app\",\"env\"]},\"effect\":\"deny\",\"id\":\"prod-change-window\",\"principals\":[\"*\"],"
    "\"reason\":\"no command on prod outside the change window\",\"resources\":[\"app/*/env/prod/**\"]}],"
    "\"kind\":\"Organization\",\"name\":\"acme\",\"operating_model\":\"ccoe\","
    "\"policies\":["
    "{\"actions\":[\"exec:run\",\"exec:*\",\"*\"],\"conditions\":{\"resource_tags\":{\"tier\":\"web\"},\"token_max_age\":\"12h\","
    "\"window\":{\"days\":[\"fri\"],\"end\":\"24:00\",\"start\":\"00:00\"}},\"effect\":\"deny\",\"id\":\"checkout-no-friday-prod\","
    "\"principals\":[\"team:checkout\",\"user:alice\",\"role:operator\"],\"reason\":\"no Friday deploys\","
    "\"resources\":[\"app/checkout/env/prod/**\",\"app/*/env/dev/host/agt_*\",\"org\"]},"
    "{\"actions\":[\"agent:read\"],\"conditions\":{},\"effect\":\"allow\",\"id\":\"ops-allow\",\"principals\":[\"*\"],"
    "\"reason\":null,\"resources\":[\"**\"]}],"
    "\"teams\":["
    "{\"kind\":\"platform\",\"members\":[\"alice\",\"carol\"],\"name\":\"platform\"},"
    "{\"kind\":\"application\",\"members\":[],\"name\":\"checkout\"},"
    "{\"kind\":\"application\",\"members\":[],\"name\":\"search\"},"
    "{\"kind\":\"partner\",\"members\":[\"bob\"],\"name\":\"acme-msp\"}],"
    "\"users\":["
    "{\"display_name\":\"Alice Doe\",\"email\":\"alice@acme.example\",\"name\":\"alice\",\"role\":\"operator\"},"
    "{\"display_name\":null,\"email\":null,\"name\":\"bob\",\"role\":\"viewer\"}]}";

static void test_full_normalizes(void **state) {
  json_t *v = load_ok(full), *again = NULL;
  char *got = keel_json_canonical(v);
  keel_err_t e = {0};
  (void)state;
  if (strcmp(got, full_normalized)) fail_msg("\n  got  %s\n  want %s", got, full_normalized);
  /* Normalizing is idempotent, and its JSON text is a valid document. */
  assert_int_equal(k_org_doc_load("n.json", got, strlen(got), &again, &e), 0);
  assert_true(json_equal(v, again));
  json_decref(again);
  /* Validating the parsed value without positions works the same. */
  assert_int_equal(k_org_doc_validate("x", v, NULL, &again, &e), 0);
  assert_true(json_equal(v, again));
  json_decref(again);
  free(got);
  json_decref(v);
}

static void test_minimal_defaults(void **state) {
  json_t *v = load_ok("{kind: Organization, name: solo, operating_model: decentralized}");
  char *got = keel_json_canonical(v);
  (void)state;
  assert_string_equal(got, "{\"applications\":[],\"base\":null,\"grants\":[],\"guardrails\":[],"
                           "\"kind\":\"Organization\",\"name\":\"solo\",\"operating_model\":"
                           "\"decentralized\",\"policies\":[],\"teams\":[],\"users\":[]}");
  free(got);
  json_decref(v);
  /* null for an optional field is absent; an empty guardrails list is fine outside ccoe. */
  v = load_ok("kind: Organization\nname: solo\noperating_model: centralized\nbase: null\n"
              "users: ~\nguardrails: []\n");
  json_decref(v);
}

static void test_example_file(void **state) {
  FILE *fp = fopen(KEEL_SOURCE_DIR "/examples/org.yaml", "rb");
  char *buf;
  long n;
  json_t *v = NULL;
  keel_err_t e = {0};
  (void)state;
  assert_non_null(fp);
  assert_int_equal(fseek(fp, 0, SEEK_END), 0);
  n = ftell(fp);
  rewind(fp);
  buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
  fclose(fp);
  if (k_org_doc_load("examples/org.yaml", buf, (size_t)n, &v, &e)) fail_msg("%s", e.msg);
  assert_string_equal(json_string_value(json_object_get(v, "operating_model")), "ccoe");
  assert_string_equal(json_string_value(json_object_get(v, "base")), "decentralized");
  assert_int_equal(json_array_size(json_object_get(v, "teams")), 5);
  assert_int_equal(json_array_size(json_object_get(v, "applications")), 2);
  assert_int_equal(json_array_size(json_object_get(v, "guardrails")), 3);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(json_object_get(v, "grants"), 0), "expires_at")),
      "2027-12-31T00:00:00.000Z");
  json_decref(v);
  free(buf);
}

static void test_head_is_valid(void **state) {
  (void)state;
  json_decref(load_ok(HEAD));
  json_decref(load_ok(POLICY("    actions: [x:y]\n    resources: [org]\n")));
}

/* ---- errors ----------------------------------------------------------------- */

static void test_root_errors(void **state) {
  (void)state;
  expect_error("- a\n", "org.yaml:1:1: expected a mapping (kind: Organization)");
  expect_error(HEAD "owner: me\n", "org.yaml:17:8: owner: unknown field");
  expect_error("name: acme\noperating_model: ccoe\n", "org.yaml:1:1: kind: required field is missing");
  expect_error("kind: organization\n", "org.yaml:1:7: kind: expected Organization");
  expect_error("kind: Organization\nname: Acme\n",
               "org.yaml:2:7: name: invalid name 'Acme': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: Organization\nname: [acme]\n", "org.yaml:2:7: name: expected a string");
  expect_error("kind: Organization\nname: acme\noperating_model: federated\n",
               "org.yaml:3:18: operating_model: expected one of decentralized, centralized, ccoe");
  expect_error("kind: Organization\nname: acme\noperating_model: ccoe\n",
               "org.yaml:1:1: base: required field is missing");
  expect_error("kind: Organization\nname: acme\noperating_model: ccoe\nbase: ccoe\n",
               "org.yaml:4:7: base: expected one of decentralized, centralized");
  expect_error("kind: Organization\nname: acme\noperating_model: centralized\nbase: decentralized\n",
               "org.yaml:4:7: base: only allowed when operating_model is ccoe");
  expect_error("kind: Organization\nname: acme\noperating_model: centralized\n"
               "guardrails:\n  - id: g\n    actions: ['*']\n    resources: ['**']\n",
               "org.yaml:5:3: guardrails: only allowed when operating_model is ccoe");
  expect_error("kind: Organization\nname: acme\noperating_model: decentralized\nteams: {a: 1}\n",
               "org.yaml:4:8: teams: expected a list");
}

static void test_user_errors(void **state) {
  (void)state;
  expect_error(HEAD "users:\n", "org.yaml:17:1: duplicate key 'users' (lines 5 and 17)");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "users:\n  - name: bob\n    roles: [admin]\n",
               "org.yaml:6:12: users[0].roles: unknown field");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "users:\n  - name: bob\n    role: root\n",
               "org.yaml:6:11: users[0].role: expected one of admin, operator, viewer");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "users:\n  - name: bob\n  - name: bob\n",
               "org.yaml:6:11: users[1].name: duplicate user 'bob' (first at users[0].name)");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "users:\n  - name: _bob\n",
               "org.yaml:5:11: users[0].name: invalid name '_bob': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "users:\n  - display_name: Bob\n",
               "org.yaml:5:5: users[0].name: required field is missing");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "users:\n  - name: bob\n    display_name: 12\n",
               "org.yaml:6:19: users[0].display_name: expected a string");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\nusers: [bob]\n",
               "org.yaml:4:9: users[0]: expected a mapping");
}

static void test_team_errors(void **state) {
  (void)state;
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "teams:\n  - name: t\n    kind: vendor\n",
               "org.yaml:6:11: teams[0].kind: expected one of application, platform, ccoe, partner");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "teams:\n  - name: t\n",
               "org.yaml:5:5: teams[0].kind: required field is missing");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "teams:\n  - {name: t, kind: platform}\n  - {name: t, kind: ccoe}\n",
               "org.yaml:6:12: teams[1].name: duplicate team 't'");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "teams:\n  - {name: t, kind: platform, members: [a, b, a]}\n",
               "org.yaml:5:47: teams[0].members[2]: 'a' listed twice");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "teams:\n  - {name: t, kind: platform, members: [Al]}\n",
               "org.yaml:5:41: teams[0].members[0]: invalid name 'Al': expected [a-z0-9][a-z0-9._-]{0,62}");
  expect_error("kind: Organization\nname: a\noperating_model: decentralized\n"
               "teams:\n  - {name: t, kind: platform, lead: x}\n",
               "org.yaml:5:37: teams[0].lead: unknown field");
}

static void test_application_errors(void **state) {
  (void)state;
  expect_error(HEAD "  - name: search\n    owner: nobody\n    environments: [dev]\n    selector: app=s\n",
               "org.yaml:18:12: applications[1].owner: 'nobody' is not a declared team");
  expect_error(HEAD "  - name: search\n    owner: msp\n    environments: [dev]\n    selector: app=s\n",
               "org.yaml:18:12: applications[1].owner: team 'msp' is of kind partner: expected a "
               "team of kind application");
  expect_error(HEAD "  - name: checkout\n    owner: checkout\n    environments: [dev]\n    selector: app=s\n",
               "org.yaml:17:11: applications[1].name: duplicate application 'checkout'");
  expect_error(HEAD "  - name: search\n    owner: checkout\n    environments: []\n    selector: app=s\n",
               "org.yaml:19:19: applications[1].environments: expected at least one item");
  expect_error(HEAD "  - name: search\n    owner: checkout\n    environments: [dev, Prod_1]\n    selector: app=s\n",
               "org.yaml:19:25: applications[1].environments[1]: invalid name 'Prod_1': expected "
               "[a-z0-9][a-z0-9-]{0,30}");
  expect_error(HEAD "  - name: search\n    owner: checkout\n    environments: [dev]\n    selector: app=s,\n",
               "org.yaml:20:15: applications[1].selector: invalid selector: column 7: expected a "
               "term after ','");
  expect_error(HEAD "  - name: search\n    owner: checkout\n    environments: [dev]\n",
               "org.yaml:17:5: applications[1].selector: required field is missing");
}

static void test_grant_errors(void **state) {
  (void)state;
  expect_error(HEAD "grants:\n  - team: checkout\n    applications: [checkout]\n"
                    "    actions: [exec:run]\n    expires_at: 2027-01-01T00:00:00Z\n",
               "org.yaml:18:11: grants[0].team: team 'checkout' is of kind application: expected a "
               "team of kind partner");
  expect_error(HEAD "grants:\n  - team: nobody\n    applications: [checkout]\n"
                    "    actions: [exec:run]\n    expires_at: 2027-01-01T00:00:00Z\n",
               "org.yaml:18:11: grants[0].team: 'nobody' is not a declared team");
  expect_error(HEAD "grants:\n  - team: msp\n    applications: [checkout, billing]\n"
                    "    actions: [exec:run]\n    expires_at: 2027-01-01T00:00:00Z\n",
               "org.yaml:19:30: grants[0].applications[1]: 'billing' is not a declared application");
  expect_error(HEAD "grants:\n  - team: msp\n    applications: [checkout]\n    environments: [qa]\n"
                    "    actions: [exec:run]\n    expires_at: 2027-01-01T00:00:00Z\n",
               "org.yaml:20:20: grants[0].environments[0]: 'qa' is not an environment of any of "
               "the grant's applications");
  expect_error(HEAD "grants:\n  - team: msp\n    applications: [checkout]\n"
                    "    actions: [exec:run]\n    expires_at: next year\n",
               "org.yaml:21:17: grants[0].expires_at: invalid time 'next year': expected RFC 3339 "
               "(2027-06-30T00:00:00Z)");
  expect_error(HEAD "grants:\n  - team: msp\n    applications: [checkout]\n    actions: [exec:run]\n",
               "org.yaml:18:5: grants[0].expires_at: required field is missing");
}

static void test_statement_errors(void **state) {
  (void)state;
  expect_error(POLICY("    actions: [exec]\n    resources: [org]\n"),
               "org.yaml:21:15: policies[0].actions[0]: invalid action 'exec': expected area:verb "
               "(globs: exec:*, *:read, *)");
  expect_error(POLICY("    actions: ['exec:Run']\n    resources: [org]\n"),
               "org.yaml:21:15: policies[0].actions[0]: invalid action 'exec:Run': expected "
               "area:verb (globs: exec:*, *:read, *)");
  expect_error(POLICY("    actions: ['1x:run']\n    resources: [org]\n"),
               "org.yaml:21:15: policies[0].actions[0]: invalid action '1x:run': expected "
               "area:verb (globs: exec:*, *:read, *)");
  expect_error(POLICY("    actions: ['*']\n    resources: [app//x]\n"),
               "org.yaml:22:17: policies[0].resources[0]: invalid resource 'app//x': expected a "
               "path of [A-Za-z0-9._*-]+ segments");
  expect_error(POLICY("    actions: ['*']\n    resources: [/app]\n"),
               "org.yaml:22:17: policies[0].resources[0]: invalid resource '/app': expected a "
               "path of [A-Za-z0-9._*-]+ segments");
  expect_error(POLICY("    actions: ['*']\n    resources: ['app/x y']\n"),
               "org.yaml:22:17: policies[0].resources[0]: invalid resource 'app/x y': expected a "
               "path of [A-Za-z0-9._*-]+ segments");
  expect_error(HEAD "policies:\n  - id: p1\n    actions: ['*']\n    resources: [org]\n",
               "org.yaml:18:5: policies[0].effect: required field is missing");
  expect_error(HEAD "policies:\n  - id: p1\n    effect: permit\n",
               "org.yaml:19:13: policies[0].effect: expected one of allow, deny");
  expect_error(PRINC("    principals: [team:nobody]\n    actions: ['*']\n    resources: [org]\n"),
               "org.yaml:20:18: policies[0].principals[0]: 'team:nobody': no team 'nobody' in "
               "this document");
  expect_error(PRINC("    principals: [user:carol]\n    actions: ['*']\n    resources: [org]\n"),
               "org.yaml:20:18: policies[0].principals[0]: 'user:carol': no user 'carol' in "
               "this document");
  expect_error(PRINC("    principals: [role:root]\n    actions: ['*']\n    resources: [org]\n"),
               "org.yaml:20:18: policies[0].principals[0]: invalid principal 'role:root': expected "
               "\"*\", team:NAME, user:NAME or role:admin|operator|viewer");
  expect_error(PRINC("    principals: []\n    actions: ['*']\n    resources: [org]\n"),
               "org.yaml:20:17: policies[0].principals: expected at least one item");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n  - id: p1\n    effect: allow\n"),
               "org.yaml:23:9: policies[1].id: duplicate statement id 'p1' (first at policies[0].id)");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\nguardrails:\n  - id: p1\n"),
               "org.yaml:24:9: guardrails[0].id: duplicate statement id 'p1' (first at policies[0].id)");
  expect_error(HEAD "guardrails:\n  - id: g\n    effect: allow\n",
               "org.yaml:19:13: guardrails[0].effect: guardrails are always deny");
  expect_error(HEAD "guardrails:\n  - id: g\n    actions: ['*']\n",
               "org.yaml:18:5: guardrails[0].resources: required field is missing");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n    reason: \"two\\nlines\"\n"),
               "org.yaml:23:13: policies[0].reason: contains a control character");
}

static void test_condition_errors(void **state) {
  (void)state;
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n    conditions: {weekday: mon}\n"),
               "org.yaml:23:27: policies[0].conditions.weekday: unknown field");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      window: {days: [mon, funday], start: '10:00', end: '16:00'}\n"),
               "org.yaml:24:28: policies[0].conditions.window.days[1]: expected one of mon, tue, "
               "wed, thu, fri, sat, sun");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      window: {days: [mon], start: '16:00', end: '10:00'}\n"),
               "org.yaml:24:50: policies[0].conditions.window.end: end 10:00 is not after start 16:00");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      outside_window: {days: [mon], start: '9:00', end: '10:00'}\n"),
               "org.yaml:24:44: policies[0].conditions.outside_window.start: invalid time '9:00': "
               "expected \"HH:MM\" from 00:00 to 24:00");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      window: {days: [mon], start: '10:00', end: '24:30'}\n"),
               "org.yaml:24:50: policies[0].conditions.window.end: invalid time '24:30': expected "
               "\"HH:MM\" from 00:00 to 24:00");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      window: {days: [mon], start: '10:00'}\n"),
               "org.yaml:24:15: policies[0].conditions.window.end: required field is missing");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      token_max_age: soon\n"),
               "org.yaml:24:22: policies[0].conditions.token_max_age: invalid duration 'soon': "
               "expected e.g. 30m, 12h, 7d");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      resource_tags: {id: x}\n"),
               "org.yaml:24:27: policies[0].conditions.resource_tags.id: key 'id' is reserved "
               "(selectors match it against the agent's id)");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      resource_tags_missing: []\n"),
               "org.yaml:24:30: policies[0].conditions.resource_tags_missing: expected at least one item");
  expect_error(POLICY("    actions: ['*']\n    resources: [org]\n"
                      "    conditions:\n      resource_tags: [app]\n"),
               "org.yaml:24:22: policies[0].conditions.resource_tags: expected a mapping of tag: value");
}

static void test_validate_without_positions(void **state) {
  json_t *doc = json_pack("{s:s,s:s,s:s,s:[{s:s,s:s}]}", "kind", "Organization", "name", "a",
                          "operating_model", "decentralized", "teams", "name", "t", "kind", "x");
  json_t *out = (json_t *)0x1;
  keel_err_t e = {0};
  (void)state;
  assert_int_equal(k_org_doc_validate("api", doc, NULL, &out, &e), KEEL_EINVAL);
  assert_null(out);
  assert_string_equal(e.msg, "api: teams[0].kind: expected one of application, platform, ccoe, partner");
  json_decref(doc);
  /* A key with a NUL byte is never taken for a known one. */
  doc = json_pack("{s:s,s:s,s:s}", "kind", "Organization", "name", "a", "operating_model", "ccoe");
  json_object_setn_new(doc, "base\0x", 6, json_string("centralized"));
  assert_int_equal(k_org_doc_validate("api", doc, NULL, &out, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "api: base?x: unknown field");
  json_decref(doc);
}

static void test_yaml_errors_pass_through(void **state) {
  (void)state;
  expect_error("kind: Organization\nname: [\n", "org.yaml:3:1: flow sequence without a closing bracket");
  expect_error("", "org.yaml:1:1: empty document");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_normalizes),
      cmocka_unit_test(test_minimal_defaults),
      cmocka_unit_test(test_example_file),
      cmocka_unit_test(test_head_is_valid),
      cmocka_unit_test(test_root_errors),
      cmocka_unit_test(test_user_errors),
      cmocka_unit_test(test_team_errors),
      cmocka_unit_test(test_application_errors),
      cmocka_unit_test(test_grant_errors),
      cmocka_unit_test(test_statement_errors),
      cmocka_unit_test(test_condition_errors),
      cmocka_unit_test(test_validate_without_positions),
      cmocka_unit_test(test_yaml_errors_pass_through),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
