/* Unit tests for policy/policy.h: globs, conditions, ordering, reasons,
 * compile errors, and a randomized cross-check of the indexed evaluator
 * against the linear one.  Every time is fixed: no assertion depends on the
 * clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keel/json.h"
#include "keel/time.h"
#include "policy/policy.h"

/* JSON with ' for " so the fixtures stay readable. */
static json_t *J(const char *s) {
  char *d = strdup(s);
  json_t *v = NULL;
  keel_err_t e = {0};
  for (char *p = d; *p; p++)
    if (*p == '\'') *p = '"';
  if (keel_json_parse(d, strlen(d), &v, &e)) fail_msg("fixture JSON: %s: %s", e.msg, s);
  free(d);
  return v;
}

static int64_t T(const char *s) {
  int64_t ms = 0;
  if (keel_time_parse(s, &ms)) fail_msg("bad time %s", s);
  return ms;
}

static const char *const fixture =
    "["
    "{'id':'team-a-all','effect':'allow','principals':['team:a'],'actions':['*'],'resources':['app/"
    "a/**']},"
    "{'id':'team-a-prod-deny','effect':'deny','principals':['team:a'],'actions':['exec:*'],"
    " 'resources':['app/a/env/prod/**'],'reason':'no exec on prod'},"
    "{'id':'team-b-read','effect':'allow','principals':['team:b'],'actions':['*:read'],'resources':"
    "['app/b/**']},"
    "{'id':'team-b-exec-dev','effect':'allow','principals':['team:b'],'actions':['exec:run'],"
    " 'resources':['app/b/env/dev/host/*']},"
    "{'id':'hosts-glob','effect':'allow','principals':['user:carol'],'actions':['agent:read'],"
    " 'resources':['app/*/env/*/host/agt_*']},"
    "{'id':'exact-path','effect':'allow','principals':['user:dave'],'actions':['exec:run'],"
    " 'resources':['app/c/env/prod/host/agt_1']},"
    "{'id':'admin-all','effect':'allow','principals':['role:admin'],'actions':['*'],'resources':['*"
    "*']},"
    "{'id':'viewer-read','effect':'allow','principals':['role:viewer'],'actions':['*:read'],'"
    "resources':['**']},"
    "{'id':'partner-grant','effect':'allow','principals':['partner:msp'],'actions':['exec:run','"
    "agent:read'],"
    " 'resources':['app/a/env/prod/**'],'conditions':{'expires_at':'2026-12-01T00:00:00Z'}},"
    "{'id':'everyone-audit-read','effect':'allow','principals':['*'],'actions':['audit:read'],'"
    "resources':['audit']},"
    "{'id':'prod-change-window','guardrail':true,'actions':['exec:run'],'resources':['app/*/env/"
    "prod/**'],"
    " 'conditions':{'outside_window':{'days':['mon','tue','wed','thu'],'start':'10:00','end':'16:"
    "00'}},"
    " 'reason':'no command on prod outside the change window'},"
    "{'id':'pci-lock','guardrail':true,'effect':'deny','principals':['*'],'actions':['exec:*'],"
    " 'resources':['app/**'],'conditions':{'resource_tags':{'pci':'true'}},'reason':'pci hosts are "
    "locked'},"
    "{'id':'owner-required','guardrail':true,'actions':['agent:delete'],'resources':['app/**'],"
    " 'conditions':{'resource_tags_missing':['owner','cost']}},"
    "{'id':'fresh-operator','effect':'allow','principals':['role:operator'],'actions':['user:write'"
    "],"
    " 'resources':['user/*'],'conditions':{'token_max_age':'1h'}},"
    "{'id':'night-allow','effect':'allow','principals':['team:night'],'actions':['exec:run'],'"
    "resources':['app/n/**'],"
    " 'conditions':{'window':{'days':['fri'],'start':'22:00','end':'02:00'}}},"
    "{'id':'late-allow','effect':'allow','principals':['team:late'],'actions':['exec:run'],'"
    "resources':['app/l/**'],"
    " 'conditions':{'window':{'start':'20:00','end':'24:00'}}},"
    "{'id':'frozen-deny','effect':'deny','principals':['team:a'],'actions':['agent:read'],'"
    "resources':['app/a/**'],"
    " 'conditions':{'resource_tags':{'frozen':'yes'}}},"
    "{'id':'erin-glob','effect':'allow','principals':['user:erin'],'actions':['ex*:r*'],'resources'"
    ":['app/e/**']},"
    "{'id':'frank-mid','effect':'allow','principals':['user:frank'],'actions':['command:read'],"
    " 'resources':['app/**/command/*']},"
    "{'id':'gina-team','effect':'allow','principals':['user:gina'],'actions':['*'],'resources':['"
    "team/**']},"
    "{'id':'user-self','effect':'allow','principals':['user:alice'],'actions':['token:*'],'"
    "resources':['user/alice/**']},"
    "{'id':'tag-allow','effect':'allow','principals':['team:d'],'actions':['exec:run'],'resources':"
    "['app/d/**'],"
    " 'conditions':{'resource_tags':{'tier':'web'}}},"
    "{'id':'multi-deny','effect':'deny','principals':['team:x','user:zed'],'actions':['*'],"
    " 'resources':['app/x/env/prod/**']}"
    "]";

typedef struct dcase {
  const char *name;
  const char *user, *role;
  const char *teams, *partners; /* comma-separated */
  int64_t token_age_ms;         /* 0: unknown */
  const char *action, *path, *tags;
  const char *now; /* NULL: Tuesday 2026-11-24 12:00 UTC */
  int allow;
  const char *stmt;
  const char *reason; /* NULL: not checked */
} dcase_t;

#define TUE "2026-11-24T12:00:00Z"
#define H_A "app/a/env/dev/host/agt_1"
#define P_A "app/a/env/prod/host/agt_1"
#define D_C "app/c/env/prod/host/agt_1"

static const dcase_t dcases[] = {
    /* ordering */
    {"allow on dev for team a", "alice", "viewer", "a", 0, 0, "exec:run", H_A, 0, 0, 1,
     "team-a-all", "allowed by team-a-all"},
    {"explicit deny beats allow on prod", "alice", "viewer", "a", 0, 0, "exec:run", P_A, 0, 0, 0,
     "team-a-prod-deny", "denied by team-a-prod-deny: no exec on prod"},
    {"deny covers exec:* only", "alice", "viewer", "a", 0, 0, "agent:read", P_A, 0, 0, 1,
     "team-a-all", 0},
    {"deny whose condition does not hold does not deny", "alice", 0, "a", 0, 0, "agent:read", H_A,
     0, 0, 1, "team-a-all", 0},
    {"deny whose condition holds denies", "alice", 0, "a", 0, 0, "agent:read", H_A,
     "{'frozen':'yes'}", 0, 0, "frozen-deny", "denied by frozen-deny"},
    {"tag with another value", "alice", 0, "a", 0, 0, "agent:read", H_A, "{'frozen':'no'}", 0, 1,
     "team-a-all", 0},
    {"two teams: union of allows", "ann", 0, "a,b", 0, 0, "exec:run", "app/b/env/dev/host/h1", 0, 0,
     1, "team-b-exec-dev", 0},
    {"two teams: any deny", "ann", 0, "b,a", 0, 0, "exec:run", P_A, 0, 0, 0, "team-a-prod-deny", 0},
    {"explicit deny before guardrail", "alice", 0, "a", 0, 0, "exec:run", P_A, 0,
     "2026-11-28T12:00:00Z", 0, "team-a-prod-deny", 0},
    {"other team's app", "alice", 0, "a", 0, 0, "exec:run", "app/b/env/dev/host/h1", 0, 0, 0,
     "default-deny", "no statement allows exec:run on app/b/env/dev/host/h1 for user alice"},
    /* action globs */
    {"*:read", "bob", 0, "b", 0, 0, "agent:read", "app/b/env/prod/host/h1", 0, 0, 1, "team-b-read",
     0},
    {"*:read does not match write", "bob", 0, "b", 0, 0, "agent:write", "app/b/env/prod/host/h1", 0,
     0, 0, "default-deny", 0},
    {"exact action", "bob", 0, "b", 0, 0, "exec:run", "app/b/env/dev/host/h1", 0, 0, 1,
     "team-b-exec-dev", 0},
    {"exact action, other verb", "bob", 0, "b", 0, 0, "exec:kill", "app/b/env/dev/host/h1", 0, 0, 0,
     "default-deny", 0},
    {"area and verb globs", "erin", 0, 0, 0, 0, "exec:run", "app/e/x", 0, 0, 1, "erin-glob", 0},
    {"area and verb globs, empty star", "erin", 0, 0, 0, 0, "ex:r", "app/e/x", 0, 0, 1, "erin-glob",
     0},
    {"verb glob misses", "erin", 0, 0, 0, 0, "exec:kill", "app/e/x", 0, 0, 0, "default-deny", 0},
    {"star never crosses ':'", "erin", 0, 0, 0, 0, "exec:run:now", "app/e/x", 0, 0, 0,
     "default-deny", 0},
    {"action without ':'", "erin", 0, 0, 0, 0, "exec", "app/e/x", 0, 0, 0, "default-deny", 0},
    {"'*' alone matches every action", "alice", 0, "a", 0, 0, "exec:run:now", H_A, 0, 0, 1,
     "team-a-all", 0},
    /* resource globs */
    {"'*' segment", "bob", 0, "b", 0, 0, "exec:run", "app/b/env/dev/host/anything", 0, 0, 1,
     "team-b-exec-dev", 0},
    {"'*' is exactly one segment (more)", "bob", 0, "b", 0, 0, "exec:run", "app/b/env/dev/host/h/x",
     0, 0, 0, "default-deny", 0},
    {"'*' is exactly one segment (fewer)", "bob", 0, "b", 0, 0, "exec:run", "app/b/env/dev/host", 0,
     0, 0, "default-deny", 0},
    {"'*' inside a segment", "carol", 0, 0, 0, 0, "agent:read", "app/q/env/prod/host/agt_9", 0, 0,
     1, "hosts-glob", 0},
    {"'*' inside a segment matches empty", "carol", 0, 0, 0, 0, "agent:read",
     "app/q/env/prod/host/agt_", 0, 0, 1, "hosts-glob", 0},
    {"'*' inside a segment, other prefix", "carol", 0, 0, 0, 0, "agent:read",
     "app/q/env/prod/host/web_9", 0, 0, 0, "default-deny", 0},
    {"'*' inside a segment stays in it", "carol", 0, 0, 0, 0, "agent:read",
     "app/q/env/prod/host/agt_9/x", 0, 0, 0, "default-deny", 0},
    {"exact path", "dave", 0, 0, 0, 0, "exec:run", D_C, 0, 0, 1, "exact-path", 0},
    {"exact path, other host", "dave", 0, 0, 0, 0, "exec:run", "app/c/env/prod/host/agt_10", 0, 0,
     0, "default-deny", 0},
    {"'**' at the end, zero segments", "alice", 0, 0, 0, 0, "token:create", "user/alice", 0, 0, 1,
     "user-self", 0},
    {"'**' at the end, many segments", "alice", 0, 0, 0, 0, "token:create", "user/alice/token/t1",
     0, 0, 1, "user-self", 0},
    {"'**' does not match a longer name", "alice", 0, 0, 0, 0, "token:create",
     "user/alicex/token/t1", 0, 0, 0, "default-deny", 0},
    {"'**' in the middle", "frank", 0, 0, 0, 0, "command:read", "app/e/env/dev/command/c1", 0, 0, 1,
     "frank-mid", 0},
    {"'**' in the middle, zero segments", "frank", 0, 0, 0, 0, "command:read", "app/command/c1", 0,
     0, 1, "frank-mid", 0},
    {"'**' in the middle, tail too long", "frank", 0, 0, 0, 0, "command:read", "app/e/command/c1/x",
     0, 0, 0, "default-deny", 0},
    {"'team/**' matches team", "gina", 0, 0, 0, 0, "team:read", "team", 0, 0, 1, "gina-team", 0},
    {"'team/**' matches deep", "gina", 0, 0, 0, 0, "team:read", "team/x/y", 0, 0, 1, "gina-team",
     0},
    {"'team/**' not teams", "gina", 0, 0, 0, 0, "team:read", "teams", 0, 0, 0, "default-deny", 0},
    {"'**' alone", "root", "admin", 0, 0, 0, "user:write", "org", 0, 0, 1, "admin-all", 0},
    /* principals */
    {"role statement", "vic", "viewer", 0, 0, 0, "agent:read", "app/z/env/dev/host/h", 0, 0, 1,
     "viewer-read", 0},
    {"'*' includes agents", "", "agent", 0, 0, 0, "audit:read", "audit", 0, 0, 1,
     "everyone-audit-read", 0},
    {"'*' includes anonymous", 0, 0, 0, 0, 0, "audit:read", "audit", 0, 0, 1, "everyone-audit-read",
     0},
    {"default deny names the role", "", "agent", 0, 0, 0, "agent:write", "app/x", 0, 0, 0,
     "default-deny", "no statement allows agent:write on app/x for role agent"},
    {"default deny, anonymous", 0, 0, 0, 0, 0, "agent:write", "app/x", 0, 0, 0, "default-deny",
     "no statement allows agent:write on app/x for an anonymous caller"},
    {"multi-principal deny by user", "zed", 0, 0, 0, 0, "exec:run", "app/x/env/prod/host/h", 0, 0,
     0, "multi-deny", 0},
    {"multi-principal deny by team", "yan", "admin", "x", 0, 0, "agent:read",
     "app/x/env/prod/host/h", 0, 0, 0, "multi-deny", 0},
    {"multi-principal deny, other env", "yan", "admin", "x", 0, 0, "agent:read",
     "app/x/env/dev/host/h", 0, 0, 1, "admin-all", 0},
    {"user:NAME is exact", "dave2", 0, 0, 0, 0, "exec:run", D_C, 0, 0, 0, "default-deny", 0},
    /* partner grants and expires_at */
    {"partner before expires_at", "mike", 0, "msp", "msp", 0, "agent:read", P_A, 0, 0, 1,
     "partner-grant", 0},
    {"partner just before expires_at", "mike", 0, "msp", "msp", 0, "agent:read", P_A, 0,
     "2026-11-30T23:59:59.999Z", 1, "partner-grant", 0},
    {"partner at expires_at", "mike", 0, "msp", "msp", 0, "agent:read", P_A, 0,
     "2026-12-01T00:00:00Z", 0, "default-deny", 0},
    {"partner after expires_at", "mike", 0, "msp", "msp", 0, "agent:read", P_A, 0,
     "2027-01-01T12:00:00Z", 0, "default-deny", 0},
    {"member of the team but not partner_of", "mike", 0, "msp", 0, 0, "agent:read", P_A, 0, 0, 0,
     "default-deny", 0},
    /* guardrails and windows */
    {"in the change window", "dave", 0, 0, 0, 0, "exec:run", D_C, 0, 0, 1, "exact-path", 0},
    {"guardrail beats allow (Saturday)", "dave", 0, 0, 0, 0, "exec:run", D_C, 0,
     "2026-11-28T12:00:00Z", 0, "prod-change-window",
     "denied by guardrail prod-change-window: no command on prod outside the change window"},
    {"window start is inclusive", "dave", 0, 0, 0, 0, "exec:run", D_C, 0, "2026-11-24T10:00:00Z", 1,
     "exact-path", 0},
    {"just before the window", "dave", 0, 0, 0, 0, "exec:run", D_C, 0, "2026-11-24T09:59:59.999Z",
     0, "prod-change-window", 0},
    {"window end is exclusive", "dave", 0, 0, 0, 0, "exec:run", D_C, 0, "2026-11-24T16:00:00Z", 0,
     "prod-change-window", 0},
    {"just before the window end", "dave", 0, 0, 0, 0, "exec:run", D_C, 0,
     "2026-11-24T15:59:59.999Z", 1, "exact-path", 0},
    {"day not in the window", "dave", 0, 0, 0, 0, "exec:run", D_C, 0, "2026-11-27T12:00:00Z", 0,
     "prod-change-window", 0},
    {"guardrail binds admins", "root", "admin", 0, 0, 0, "exec:run", D_C, 0, "2026-11-28T12:00:00Z",
     0, "prod-change-window", 0},
    {"tag guardrail", "alice", 0, "a", 0, 0, "exec:run", H_A, "{'pci':'true'}", 0, 0, "pci-lock",
     "denied by guardrail pci-lock: pci hosts are locked"},
    {"tag guardrail, other value", "alice", 0, "a", 0, 0, "exec:run", H_A, "{'pci':'false'}", 0, 1,
     "team-a-all", 0},
    {"tags missing: all present", "alice", 0, "a", 0, 0, "agent:delete", H_A,
     "{'owner':'x','cost':'y'}", 0, 1, "team-a-all", 0},
    {"tags missing: one missing", "alice", 0, "a", 0, 0, "agent:delete", H_A, "{'owner':'x'}", 0, 0,
     "owner-required", "denied by guardrail owner-required"},
    {"tags missing: no tags", "alice", 0, "a", 0, 0, "agent:delete", H_A, 0, 0, 0, "owner-required",
     0},
    {"resource_tags allow holds", "dan", 0, "d", 0, 0, "exec:run", "app/d/env/dev/host/h",
     "{'tier':'web'}", 0, 1, "tag-allow", 0},
    {"resource_tags allow, other value", "dan", 0, "d", 0, 0, "exec:run", "app/d/env/dev/host/h",
     "{'tier':'db'}", 0, 0, "default-deny", 0},
    {"resource_tags allow, no tags", "dan", 0, "d", 0, 0, "exec:run", "app/d/env/dev/host/h", 0, 0,
     0, "default-deny", 0},
    {"overnight window, evening", "nia", 0, "night", 0, 0, "exec:run", "app/n/env/dev/host/h", 0,
     "2026-11-27T23:00:00Z", 1, "night-allow", 0},
    {"overnight window, after midnight", "nia", 0, "night", 0, 0, "exec:run",
     "app/n/env/dev/host/h", 0, "2026-11-28T01:59:59Z", 1, "night-allow", 0},
    {"overnight window, end", "nia", 0, "night", 0, 0, "exec:run", "app/n/env/dev/host/h", 0,
     "2026-11-28T02:00:00Z", 0, "default-deny", 0},
    {"overnight window, before start", "nia", 0, "night", 0, 0, "exec:run", "app/n/env/dev/host/h",
     0, "2026-11-27T21:59:00Z", 0, "default-deny", 0},
    {"overnight window, other day", "nia", 0, "night", 0, 0, "exec:run", "app/n/env/dev/host/h", 0,
     "2026-11-28T23:00:00Z", 0, "default-deny", 0},
    {"overnight window, previous day's tail", "nia", 0, "night", 0, 0, "exec:run",
     "app/n/env/dev/host/h", 0, "2026-11-27T01:00:00Z", 0, "default-deny", 0},
    {"window to 24:00", "lee", 0, "late", 0, 0, "exec:run", "app/l/x", 0,
     "2026-11-24T23:59:59.999Z", 1, "late-allow", 0},
    {"window to 24:00, midnight", "lee", 0, "late", 0, 0, "exec:run", "app/l/x", 0,
     "2026-11-25T00:00:00Z", 0, "default-deny", 0},
    {"token younger than max age", "oscar", "operator", 0, 0, 30 * 60000, "user:write", "user/bob",
     0, 0, 1, "fresh-operator", 0},
    {"token exactly max age", "oscar", "operator", 0, 0, 60 * 60000, "user:write", "user/bob", 0, 0,
     0, "default-deny", 0},
    {"token age unknown", "oscar", "operator", 0, 0, 0, "user:write", "user/bob", 0, 0, 0,
     "default-deny", 0},
};

static size_t split(const char *csv, char *buf, size_t bufsz, const char **out, size_t max) {
  size_t n = 0;
  if (!csv) return 0;
  snprintf(buf, bufsz, "%s", csv);
  for (char *p = strtok(buf, ","); p && n < max; p = strtok(NULL, ",")) out[n++] = p;
  return n;
}

static void run_dcase(const k_policy_t *p, const dcase_t *c) {
  char tb[128], pb[128];
  const char *teams[8], *partners[8];
  k_pol_principal_t w = {c->user, c->role, teams, 0, partners, 0, 0};
  json_t *tags = c->tags ? J(c->tags) : NULL;
  k_pol_resource_t r = {c->path, tags};
  int64_t now = T(c->now ? c->now : TUE);
  k_pol_decision_t d, l;
  w.nteams = split(c->teams, tb, sizeof tb, teams, 8);
  w.npartner = split(c->partners, pb, sizeof pb, partners, 8);
  if (c->token_age_ms) w.token_created_ms = now - c->token_age_ms;
  k_policy_decide(p, &w, c->action, &r, now, &d);
  k_policy_decide_linear(p, &w, c->action, &r, now, &l);
  if (d.allow != c->allow || strcmp(d.statement, c->stmt))
    fail_msg("%s: got allow=%d by %s (%s), want allow=%d by %s", c->name, d.allow, d.statement,
             d.reason, c->allow, c->stmt);
  if (c->reason && strcmp(d.reason, c->reason))
    fail_msg("%s: reason \"%s\", want \"%s\"", c->name, d.reason, c->reason);
  if (l.allow != d.allow || strcmp(l.statement, d.statement) || strcmp(l.reason, d.reason))
    fail_msg("%s: linear evaluator disagrees: %s", c->name, l.reason);
  if (!strcmp(d.statement, "default-deny")) assert_string_equal(d.kind, "default");
  json_decref(tags);
}

static void test_decisions(void **state) {
  (void)state;
  json_t *st = J(fixture);
  k_policy_t *p = NULL;
  keel_err_t e = {0};
  if (k_policy_compile(st, &p, &e)) fail_msg("compile: %s", e.msg);
  for (size_t i = 0; i < sizeof dcases / sizeof dcases[0]; i++) run_dcase(p, &dcases[i]);
  print_message("%zu decision cases\n", sizeof dcases / sizeof dcases[0]);
  k_policy_free(p);
  json_decref(st);
}

static void test_kinds(void **state) {
  (void)state;
  json_t *st = J(fixture);
  k_policy_t *p = NULL;
  keel_err_t e = {0};
  const char *teams[] = {"a"};
  k_pol_principal_t w = {"alice", "viewer", teams, 1, NULL, 0, 0};
  k_pol_resource_t r = {P_A, NULL};
  k_pol_decision_t d;
  assert_int_equal(k_policy_compile(st, &p, &e), 0);
  k_policy_decide(p, &w, "exec:run", &r, T(TUE), &d);
  assert_string_equal(d.kind, "deny");
  r.path = H_A;
  k_policy_decide(p, &w, "exec:run", &r, T(TUE), &d);
  assert_string_equal(d.kind, "allow");
  w.teams = NULL;
  w.nteams = 0;
  w.user = "dave";
  r.path = D_C;
  k_policy_decide(p, &w, "exec:run", &r, T("2026-11-28T12:00:00Z"), &d);
  assert_string_equal(d.kind, "guardrail");
  /* A long path (more segments than the stack holds) and a long reason. */
  {
    char path[4096], act[400];
    size_t n = 0;
    n += (size_t)snprintf(path + n, sizeof path - n, "team");
    for (int i = 0; i < 200; i++) n += (size_t)snprintf(path + n, sizeof path - n, "/s%d", i);
    w.user = "gina";
    r.path = path;
    k_policy_decide(p, &w, "team:read", &r, T(TUE), &d);
    assert_int_equal(d.allow, 1);
    memset(act, 'x', sizeof act - 1);
    act[sizeof act - 1] = 0;
    act[3] = '\n';
    w.user = "nobody";
    k_policy_decide(p, &w, act, &r, T(TUE), &d);
    assert_int_equal(d.allow, 0);
    assert_int_equal(strlen(d.reason), sizeof d.reason - 1);
    assert_null(strchr(d.reason, '\n'));
  }
  k_policy_free(p);
  json_decref(st);
}

static void test_empty(void **state) {
  (void)state;
  json_t *st = J("[]");
  k_policy_t *p = NULL;
  k_pol_principal_t w = {"alice", "admin", NULL, 0, NULL, 0, 0};
  k_pol_resource_t r = {"org", NULL};
  k_pol_decision_t d;
  assert_int_equal(k_policy_compile(st, &p, NULL), 0);
  k_policy_decide(p, &w, "org:read", &r, 0, &d);
  assert_int_equal(d.allow, 0);
  assert_string_equal(d.statement, "default-deny");
  assert_string_equal(d.reason, "no statement allows org:read on org for user alice");
  k_policy_free(p);
  k_policy_free(NULL);
  json_decref(st);
}

/* ---- compile errors ------------------------------------------------------ */

typedef struct ecase {
  const char
      *json; /* one statement, or a whole array when it starts with '[' or is not an object */
  const char *want; /* substring of the message */
} ecase_t;

#define OK_BODY "'effect':'allow','principals':['*'],'actions':['*'],'resources':['**']"

static const ecase_t ecases[] = {
    {"{}", "statements: expected an array"},
    {"[1]", "statements[0]: expected an object"},
    {"{" OK_BODY "}", "statements[0]: field 'id': expected a string"},
    {"{'id':'Bad Id'," OK_BODY "}", "statements[0]: field 'id'"},
    {"{'id':''," OK_BODY "}", "statements[0]: field 'id'"},
    {"[{'id':'s1'," OK_BODY "},{'id':'s1'," OK_BODY "}]",
     "statement \"s1\": field 'id': used by an earlier"},
    {"{'id':'s1','effects':'allow'," OK_BODY "}", "statement \"s1\": unknown field 'effects'"},
    {"{'id':'s1','principals':['*'],'actions':['*'],'resources':['**']}",
     "statement \"s1\": missing required field 'effect'"},
    {"{'id':'s1','effect':'permit','principals':['*'],'actions':['*'],'resources':['**']}",
     "statement \"s1\": field 'effect': expected one of allow, deny"},
    {"{'id':'s1','effect':7,'principals':['*'],'actions':['*'],'resources':['**']}",
     "statement \"s1\": field 'effect': expected"},
    {"{'id':'s1','guardrail':true," OK_BODY "}",
     "statement \"s1\": field 'effect': guardrails are always deny"},
    {"{'id':'s1','guardrail':'yes'," OK_BODY "}", "statement \"s1\": field 'guardrail': expected"},
    {"{'id':'s1','effect':'allow','actions':['*'],'resources':['**']}",
     "statement \"s1\": missing required field 'principals'"},
    {"{'id':'s1','effect':'allow','principals':[],'actions':['*'],'resources':['**']}",
     "statement \"s1\": principals: must not be empty"},
    {"{'id':'s1','effect':'allow','principals':['group:x'],'actions':['*'],'resources':['**']}",
     "statement \"s1\": principals[0]"},
    {"{'id':'s1','effect':'allow','principals':['*','role:root'],'actions':['*'],'resources':['**']"
     "}",
     "statement \"s1\": principals[1]: unknown role"},
    {"{'id':'s1','effect':'allow','principals':['team:'],'actions':['*'],'resources':['**']}",
     "statement \"s1\": principals[0]"},
    {"{'id':'s1','effect':'allow','principals':[3],'actions':['*'],'resources':['**']}",
     "statement \"s1\": principals[0]: expected a string"},
    {"{'id':'s1','effect':'allow','principals':'*','actions':['*'],'resources':['**']}",
     "statement \"s1\": field 'principals': expected"},
    {"{'id':'s1','effect':'allow','principals':['*'],'resources':['**']}",
     "statement \"s1\": missing required field 'actions'"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':[],'resources':['**']}",
     "statement \"s1\": actions: must not be empty"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['exec'],'resources':['**']}",
     "statement \"s1\": actions[0]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['exec:run','a:b:c'],'resources':['*"
     "*']}",
     "statement \"s1\": actions[1]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['EXEC:run'],'resources':['**']}",
     "statement \"s1\": actions[0]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':[':run'],'resources':['**']}",
     "statement \"s1\": actions[0]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*']}",
     "statement \"s1\": missing required field 'resources'"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*'],'resources':['/app']}",
     "statement \"s1\": resources[0]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*'],'resources':['app//x']}",
     "statement \"s1\": resources[0]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*'],'resources':['**','app/x/']}",
     "statement \"s1\": resources[1]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*'],'resources':['app/a**/x']}",
     "statement \"s1\": resources[0]: \"app/a**/x\": '**' must be a whole segment"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*'],'resources':['app/a b']}",
     "statement \"s1\": resources[0]"},
    {"{'id':'s1','effect':'allow','principals':['*'],'actions':['*'],'resources':['']}",
     "statement \"s1\": resources[0]"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'when':1}}",
     "statement \"s1\": conditions: unknown field 'when'"},
    {"{'id':'s1'," OK_BODY ",'conditions':[]}", "statement \"s1\": field 'conditions': expected"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'resource_tags':{'pci':true}}}",
     "statement \"s1\": conditions.resource_tags.pci"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'resource_tags_missing':[]}}",
     "statement \"s1\": conditions.resource_tags_missing: must not be empty"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'resource_tags_missing':['a',1]}}",
     "statement \"s1\": conditions.resource_tags_missing[1]"},
    {"{'id':'s1'," OK_BODY
     ",'conditions':{'window':{'days':['monday'],'start':'10:00','end':'11:00'}}}",
     "statement \"s1\": conditions.window.days[0]"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'days':[],'start':'10:00','end':'11:00'}}}",
     "statement \"s1\": conditions.window.days"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'start':'25:00','end':'11:00'}}}",
     "statement \"s1\": conditions.window.start"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'start':'24:00','end':'11:00'}}}",
     "statement \"s1\": conditions.window.start"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'start':'10:60','end':'11:00'}}}",
     "statement \"s1\": conditions.window.start"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'start':'10:00','end':'24:01'}}}",
     "statement \"s1\": conditions.window.end"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'end':'11:00'}}}",
     "statement \"s1\": conditions.window: missing required field 'start'"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'window':{'start':'10:00','end':'11:00','tz':'CET'}}}",
     "statement \"s1\": conditions.window: unknown field 'tz'"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'outside_window':{'start':'10:00','end':'10:00'}}}",
     "statement \"s1\": conditions.outside_window"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'token_max_age':'soon'}}",
     "statement \"s1\": conditions.token_max_age"},
    {"{'id':'s1'," OK_BODY ",'conditions':{'expires_at':'tomorrow'}}",
     "statement \"s1\": conditions.expires_at"},
    {"{'id':'s1'," OK_BODY ",'reason':'two\\nlines'}", "statement \"s1\": field 'reason'"},
    {"{'id':'s1'," OK_BODY ",'reason':5}", "statement \"s1\": field 'reason': expected"},
};

static void test_compile_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
    const ecase_t *c = &ecases[i];
    char buf[1024];
    json_t *st;
    k_policy_t *p = (k_policy_t *)&buf; /* must come back NULL */
    keel_err_t e = {0};
    int rc;
    if (c->json[0] == '{' && strcmp(c->json, "{}"))
      snprintf(buf, sizeof buf, "[%s]", c->json);
    else
      snprintf(buf, sizeof buf, "%s", c->json);
    st = J(buf);
    rc = k_policy_compile(st, &p, &e);
    if (rc != KEEL_EINVAL || e.code != KEEL_EINVAL || p)
      fail_msg("%s: rc %d, policy %p, want KEEL_EINVAL (%s)", c->json, rc, (void *)p, e.msg);
    if (!strstr(e.msg, c->want))
      fail_msg("%s: message \"%s\" lacks \"%s\"", c->json, e.msg, c->want);
    if (strchr(e.msg, '\n')) fail_msg("%s: message is not one line", c->json);
    json_decref(st);
  }
  print_message("%zu compile error cases\n", sizeof ecases / sizeof ecases[0]);
}

/* ---- randomized: indexed vs linear -------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)((rng >> 16) % n);
}
#define PICK(a) ((a)[rnd(sizeof(a) / sizeof((a)[0]))])

static const char *const r_prin[] = {
    "*",       "team:t0",    "team:t1",     "team:t2",    "team:t3",    "user:u0",   "user:u1",
    "user:u2", "role:admin", "role:viewer", "role:agent", "partner:t3", "partner:t4"};
static const char *const r_act[] = {"*",     "exec:*", "*:read",  "exec:run",   "agent:read",
                                    "e*:r*", "*:*",    "agent:*", "audit:read", "exec:kill"};
static const char *const r_res[] = {"app/a/**",
                                    "app/b/env/prod/**",
                                    "app/*/env/dev/host/*",
                                    "app/a/env/*/host/agt_*",
                                    "**",
                                    "org",
                                    "app/**/host/agt_1",
                                    "app/c/env/prod/host/agt_1",
                                    "user/*",
                                    "app/b/**/agt_2",
                                    "app/*/**",
                                    "app/c/*",
                                    "audit",
                                    "app/d/env/dev/**"};
static const char *const r_cond[] = {
    "{'resource_tags':{'pci':'true'}}",
    "{'resource_tags_missing':['owner']}",
    "{'window':{'days':['mon','tue','wed'],'start':'09:00','end':'17:00'}}",
    "{'outside_window':{'days':['sat','sun'],'start':'22:00','end':'06:00'}}",
    "{'token_max_age':'1h'}",
    "{'expires_at':'2026-11-27T00:00:00Z'}",
    "{'resource_tags':{'env':'prod'},'window':{'start':'00:00','end':'12:00'}}",
};
static const char *const q_act[] = {"exec:run",   "exec:kill", "agent:read", "agent:write",
                                    "audit:read", "er:rr",     "exec:run:x", "exec",
                                    "x:y",        "team:read"};
static const char *const q_app[] = {"a", "b", "c", "d", "zz"};
static const char *const q_env[] = {"dev", "prod", "staging"};
static const char *const q_host[] = {"agt_1", "agt_2", "web_1", "agt_"};
static const char *const q_other[] = {"org", "audit",   "user/u1", "app/a",
                                      "app", "app/c/x", "",        "team/t0"};
static const char *const q_tags[] = {NULL,
                                     "{}",
                                     "{'pci':'true'}",
                                     "{'owner':'o'}",
                                     "{'env':'prod'}",
                                     "{'pci':'true','owner':'o','env':'prod'}"};
static const char *const q_teams[] = {"t0", "t1", "t2", "t3", "t4", "t9"};
static const char *const q_users[] = {"u0", "u1", "u2", "u3", ""};
static const char *const q_roles[] = {"admin", "viewer", "agent", "operator", ""};

static void test_random_crosscheck(void **state) {
  (void)state;
  json_t *arr = json_array(), *tags[sizeof q_tags / sizeof q_tags[0]];
  k_policy_t *p = NULL;
  keel_err_t e = {0};
  int64_t base = T("2026-11-23T00:00:00Z");
  size_t allows = 0, kinds[4] = {0};

  for (int i = 0; i < 400; i++) {
    json_t *s = json_object(), *pr = json_array(), *ac = json_array(), *rs = json_array();
    char id[32];
    uint32_t eff = rnd(20);
    snprintf(id, sizeof id, "s%03d", i);
    json_object_set_new(s, "id", json_string(id));
    if (eff < 1)
      json_object_set_new(s, "guardrail", json_true());
    else
      json_object_set_new(s, "effect", json_string(eff < 3 ? "deny" : "allow"));
    for (uint32_t k = 1 + rnd(2); k; k--) json_array_append_new(pr, json_string(PICK(r_prin)));
    for (uint32_t k = 1 + rnd(2); k; k--) json_array_append_new(ac, json_string(PICK(r_act)));
    for (uint32_t k = 1 + rnd(2); k; k--) json_array_append_new(rs, json_string(PICK(r_res)));
    json_object_set_new(s, "principals", pr);
    json_object_set_new(s, "actions", ac);
    json_object_set_new(s, "resources", rs);
    if (rnd(3) == 0) json_object_set_new(s, "conditions", J(PICK(r_cond)));
    json_array_append_new(arr, s);
  }
  if (k_policy_compile(arr, &p, &e)) fail_msg("compile: %s", e.msg);
  for (size_t i = 0; i < sizeof q_tags / sizeof q_tags[0]; i++)
    tags[i] = q_tags[i] ? J(q_tags[i]) : NULL;

  for (int i = 0; i < 100000; i++) {
    const char *teams[3], *partners[3];
    char path[128];
    k_pol_principal_t w = {PICK(q_users), PICK(q_roles), teams, rnd(4), partners, 0, 0};
    k_pol_resource_t r = {path, tags[rnd(sizeof tags / sizeof tags[0])]};
    int64_t now = base + (int64_t)rnd(14 * 24 * 60) * 60000 + rnd(60000);
    k_pol_decision_t d, l;
    const char *action = PICK(q_act);
    for (size_t k = 0; k < w.nteams; k++) teams[k] = PICK(q_teams);
    w.npartner = rnd(2) ? rnd((uint32_t)w.nteams + 1) : 0;
    for (size_t k = 0; k < w.npartner; k++) partners[k] = teams[k];
    if (rnd(3)) w.token_created_ms = now - (int64_t)rnd(2 * 3600000);
    if (rnd(5) == 0)
      snprintf(path, sizeof path, "%s", PICK(q_other));
    else
      snprintf(path, sizeof path, "app/%s/env/%s/host/%s", PICK(q_app), PICK(q_env), PICK(q_host));
    k_policy_decide(p, &w, action, &r, now, &d);
    k_policy_decide_linear(p, &w, action, &r, now, &l);
    if (d.allow != l.allow || strcmp(d.statement, l.statement) || strcmp(d.kind, l.kind) ||
        strcmp(d.reason, l.reason))
      fail_msg("request %d (%s on %s): indexed %s (%s), linear %s (%s)", i, action, path,
               d.statement, d.reason, l.statement, l.reason);
    allows += (size_t)d.allow;
    kinds[d.kind[0] == 'd' ? (d.kind[2] == 'n' ? 0 : 3) : d.kind[0] == 'g' ? 1 : 2]++;
  }
  /* The cross-check means little unless every outcome occurs often. */
  print_message("random: %zu allow; deny %zu, guardrail %zu, allow %zu, default %zu\n", allows,
                kinds[0], kinds[1], kinds[2], kinds[3]);
  for (int k = 0; k < 4; k++) assert_true(kinds[k] > 1000);
  for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) json_decref(tags[i]);
  k_policy_free(p);
  json_decref(arr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decisions),
      cmocka_unit_test(test_kinds),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_random_crosscheck),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
