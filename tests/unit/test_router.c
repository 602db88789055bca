/* Unit tests for keeld's route table (router.c, server.h) and the
 * authorization decision (authz.c): table invariants, agreement with
 * docs/api.md, matching, and the role matrix documented in docs/api.md. */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "server.h"

#ifndef KEEL_SOURCE_DIR
#define KEEL_SOURCE_DIR "."
#endif

/* The decision needs an organization: a fresh one (built-in roles only),
 * from an empty store, as on a just-initialized keeld. */
static char g_dir[256];
static k_store_t *g_store;
static k_org_t *g_org;

static int org_setup(void **state) {
  keel_err_t e = {0};
  (void)state;
  if (kt_mkdtemp(g_dir, sizeof g_dir) || k_store_open(g_dir, 1, NULL, &g_store, &e) ||
      k_org_open(g_store, NULL, &g_org, &e)) {
    print_error("setup: %s\n", e.msg);
    return -1;
  }
  return 0;
}

static int org_teardown(void **state) {
  (void)state;
  k_org_close(g_org);
  k_store_close(g_store);
  kt_rmrf(g_dir);
  return 0;
}

/* ---- table invariants ------------------------------------------------------------- */

static void test_routes_v1_need_auth_and_action(void **state) {
  (void)state;
  assert_true(k_nroutes > 0);
  for (int i = 0; i < k_nroutes; i++) {
    const k_route_t *r = &k_routes[i];
    assert_non_null(r->method);
    assert_non_null(r->pattern);
    assert_non_null(r->apply);
    assert_int_equal(r->pattern[0], '/');
    /* Keel's API and Prometheus' query API (/api/v1) alike */
    if (!strncmp(r->pattern, "/v1/", 4) || !strncmp(r->pattern, "/api/v1/", 8)) {
      if (r->flags & K_ROUTE_PUBLIC)
        fail_msg("%s %s is under /v1 but public", r->method, r->pattern);
      if (!r->action || !r->action[0])
        fail_msg("%s %s is under /v1 but names no action", r->method, r->pattern);
      /* actions are "area:verb" */
      if (!strchr(r->action, ':') || r->action[0] == ':' || r->action[strlen(r->action) - 1] == ':')
        fail_msg("%s %s: action '%s' is not area:verb", r->method, r->pattern, r->action);
    }
    /* every route that is not public is policy-checked, so names an action */
    if (!(r->flags & K_ROUTE_PUBLIC) && (!r->action || !r->action[0]))
      fail_msg("%s %s needs a token but names no action", r->method, r->pattern);
  }
}

static void test_routes_mutations(void **state) {
  int mutations = 0;
  (void)state;
  for (int i = 0; i < k_nroutes; i++) {
    const k_route_t *r = &k_routes[i];
    if (r->flags & K_ROUTE_MUTATION) {
      mutations++;
      if (!r->action || !r->action[0])
        fail_msg("mutation %s %s has no action", r->method, r->pattern);
      if (!strcmp(r->method, "GET") || !strcmp(r->method, "HEAD"))
        fail_msg("mutation %s %s is a safe method", r->method, r->pattern);
      if (r->flags & K_ROUTE_PUBLIC) fail_msg("mutation %s %s is public", r->method, r->pattern);
    } else if (strcmp(r->method, "GET") && !(r->flags & K_ROUTE_NOWRITE)) {
      fail_msg("%s %s changes state but is not marked a mutation (no audit unit)", r->method,
               r->pattern);
    }
    /* bodies only where something is sent */
    if ((r->flags & K_ROUTE_BODY) && !strcmp(r->method, "GET"))
      fail_msg("GET %s takes a body", r->pattern);
  }
  assert_true(mutations >= 4);
}

static void test_routes_unique(void **state) {
  (void)state;
  for (int i = 0; i < k_nroutes; i++)
    for (int j = i + 1; j < k_nroutes; j++)
      if (!strcmp(k_routes[i].method, k_routes[j].method) &&
          !strcmp(k_routes[i].pattern, k_routes[j].pattern))
        fail_msg("%s %s is in the table twice (%d, %d)", k_routes[i].method, k_routes[i].pattern, i,
                 j);
}

static void test_routes_public_exactly(void **state) {
  static const char *want[] = {"/healthz", "/readyz", "/metrics"};
  int found[3] = {0}, npublic = 0;
  (void)state;
  for (int i = 0; i < k_nroutes; i++) {
    const k_route_t *r = &k_routes[i];
    int known = 0;
    if (!(r->flags & K_ROUTE_PUBLIC)) continue;
    npublic++;
    for (int k = 0; k < 3; k++)
      if (!strcmp(r->pattern, want[k])) {
        found[k]++;
        known = 1;
      }
    if (!known) fail_msg("%s %s is public", r->method, r->pattern);
    assert_string_equal(r->method, "GET");
    assert_true(r->action == NULL);
    assert_int_equal(r->flags & (K_ROUTE_MUTATION | K_ROUTE_BODY), 0);
  }
  assert_int_equal(npublic, 3);
  for (int k = 0; k < 3; k++) assert_int_equal(found[k], 1);
}

/* ---- the table against docs/api.md ----------------------------------------------------- */

typedef struct docroute {
  char method[16], path[128], action[64];
} docroute_t;

/* "/v1/users/{id or name}" -> "/v1/users/{}" */
static void norm(char *out, size_t n, const char *in) {
  size_t o = 0;
  while (*in && o + 1 < n) {
    if (*in == '{') {
      const char *c = strchr(in, '}');
      if (!c) break;
      if (o + 3 >= n) break;
      out[o++] = '{';
      out[o++] = '}';
      in = c + 1;
      continue;
    }
    out[o++] = *in++;
  }
  out[o] = '\0';
}

static int read_doc_routes(docroute_t *v, int max) {
  char line[2048];
  int n = 0;
  FILE *fp = fopen(KEEL_SOURCE_DIR "/docs/api.md", "r");
  if (!fp) return -1;
  while (fgets(line, sizeof line, fp) && n < max) {
    char m[16], p[128], rest[512];
    /* | `METHOD /path` | `action` | ... */
    if (sscanf(line, "| `%15[A-Z] %127[^`]` |%511[^\n]", m, p, rest) != 3) continue;
    if (p[0] != '/') continue;
    snprintf(v[n].method, sizeof v[n].method, "%s", m);
    norm(v[n].path, sizeof v[n].path, p);
    v[n].action[0] = '\0';
    {
      char a[64];
      if (sscanf(rest, " `%63[a-z:_-]`", a) == 1 && strchr(a, ':'))
        snprintf(v[n].action, sizeof v[n].action, "%s", a);
    }
    n++;
  }
  fclose(fp);
  return n;
}

static void test_routes_match_docs(void **state) {
  docroute_t docs[128];
  int nd = read_doc_routes(docs, 128);
  (void)state;
  if (nd < 0) {
    print_message("docs/api.md not found under " KEEL_SOURCE_DIR "; skipped\n");
    skip();
  }
  assert_true(nd >= 10);
  for (int i = 0; i < k_nroutes; i++) {
    char p[128];
    int hit = 0;
    norm(p, sizeof p, k_routes[i].pattern);
    for (int j = 0; j < nd; j++) {
      if (strcmp(docs[j].method, k_routes[i].method) || strcmp(docs[j].path, p)) continue;
      hit = 1;
      if (k_routes[i].action && strcmp(docs[j].action, k_routes[i].action))
        fail_msg("%s %s: action '%s' in the table, '%s' in docs/api.md", k_routes[i].method,
                 k_routes[i].pattern, k_routes[i].action, docs[j].action);
    }
    if (!hit)
      fail_msg("%s %s is not documented in docs/api.md", k_routes[i].method, k_routes[i].pattern);
  }
  for (int j = 0; j < nd; j++) {
    int hit = 0;
    for (int i = 0; i < k_nroutes && !hit; i++) {
      char p[128];
      norm(p, sizeof p, k_routes[i].pattern);
      hit = !strcmp(docs[j].method, k_routes[i].method) && !strcmp(docs[j].path, p);
    }
    if (!hit)
      fail_msg("docs/api.md documents %s %s, which has no route", docs[j].method, docs[j].path);
  }
}

/* ---- matching --------------------------------------------------------------------------- */

static int idx_of(const char *method, const char *pattern) {
  for (int i = 0; i < k_nroutes; i++)
    if (!strcmp(k_routes[i].method, method) && !strcmp(k_routes[i].pattern, pattern)) return i;
  fail_msg("no route %s %s", method, pattern);
  return -1;
}

static void test_route_match(void **state) {
  char params[K_MAX_PARAMS][160], allow[64];
  int idx;
  (void)state;
  /* every pattern matches itself (with a value for each {x}) */
  for (int i = 0; i < k_nroutes; i++) {
    char path[256];
    const char *p = k_routes[i].pattern;
    size_t o = 0;
    while (*p && o < sizeof path - 8) {
      if (*p == '{') {
        memcpy(path + o, "xyz", 3);
        o += 3;
        p = strchr(p, '}') + 1;
      } else {
        path[o++] = *p++;
      }
    }
    path[o] = '\0';
    assert_int_equal(k_route_match(k_routes[i].method, path, &idx, params, allow, sizeof allow), 0);
    assert_int_equal(idx, i);
  }
  assert_int_equal(k_route_match("GET", "/v1/users/alice", &idx, params, allow, sizeof allow), 0);
  assert_int_equal(idx, idx_of("GET", "/v1/users/{id}"));
  assert_string_equal(params[0], "alice");
  assert_int_equal(k_route_match("PATCH", "/v1/users/usr_1", &idx, params, allow, sizeof allow), 0);
  assert_int_equal(idx, idx_of("PATCH", "/v1/users/{id}"));
  assert_string_equal(params[0], "usr_1");
  assert_int_equal(k_route_match("GET", "/v1/audit/verify", &idx, params, allow, sizeof allow), 0);
  assert_int_equal(idx, idx_of("GET", "/v1/audit/verify"));
  /* wrong method: 405 with the allowed ones */
  assert_int_equal(k_route_match("PUT", "/v1/users", &idx, params, allow, sizeof allow),
                   KEEL_EPERM);
  assert_int_equal(idx, -1);
  assert_non_null(strstr(allow, "GET"));
  assert_non_null(strstr(allow, "POST"));
  assert_int_equal(k_route_match("POST", "/healthz", &idx, params, allow, sizeof allow),
                   KEEL_EPERM);
  assert_string_equal(allow, "GET");
  /* no route */
  static const char *none[] = {"/",
                               "",
                               "/v1",
                               "/v1/",
                               "/v1/users/",
                               "/v1/users/a/b",
                               "/v1/users//",
                               "/v1/userss",
                               "/V1/users",
                               "/healthz/",
                               "/v1/tokens/",
                               "//v1/users",
                               "/v1/audit/verify/x"};
  for (size_t i = 0; i < sizeof none / sizeof *none; i++) {
    int rc = k_route_match("GET", none[i], &idx, params, allow, sizeof allow);
    if (rc != KEEL_ENOENT) fail_msg("'%s' matched (rc %d, idx %d)", none[i], rc, idx);
  }
  /* an over-long segment does not match (and does not overflow) */
  {
    char path[400] = "/v1/users/";
    memset(path + 10, 'a', 300);
    path[310] = '\0';
    assert_int_equal(k_route_match("GET", path, &idx, params, allow, sizeof allow), KEEL_ENOENT);
  }
}

/* ---- authorization ----------------------------------------------------------------------- */

static k_principal_t who(const char *role, const char *name, const char *id) {
  k_principal_t p;
  memset(&p, 0, sizeof p);
  snprintf(p.role, sizeof p.role, "%s", role);
  snprintf(p.user, sizeof p.user, "%s", name);
  snprintf(p.user_id, sizeof p.user_id, "%s", id);
  snprintf(p.token_id, sizeof p.token_id, "tok_x");
  return p;
}

static k_target_t target(const char *path, const char *owner) {
  k_target_t t;
  memset(&t, 0, sizeof t);
  snprintf(t.path, sizeof t.path, "%s", path);
  snprintf(t.owner_id, sizeof t.owner_id, "%s", owner);
  return t;
}

enum { OWN = 1, OTHER = 2, NONE = 3 };

typedef struct rule {
  const char *action;
  int whose; /* for token actions: whose tokens */
  int admin, operator_, viewer;
} rule_t;

/* docs/api.md, "Routes": roles per action. */
static const rule_t matrix[] = {
    {"whoami:read", NONE, 1, 1, 1},   {"user:create", NONE, 1, 0, 0},
    {"user:read", NONE, 1, 1, 1},     {"user:update", NONE, 1, 0, 0},
    {"token:create", OWN, 1, 1, 1},   /* any for itself */
    {"token:create", OTHER, 1, 0, 0}, /* admin for another user */
    {"token:read", OWN, 1, 1, 1},     /* own tokens */
    {"token:read", OTHER, 1, 0, 0},   /* admin all */
    {"token:read", NONE, 1, 0, 0},    /* "all tokens" target (admin listing) */
    {"token:revoke", OWN, 1, 1, 1},   {"token:revoke", OTHER, 1, 0, 0},
    {"audit:read", NONE, 1, 1, 0},    {"audit:verify", NONE, 1, 1, 0},
    {"agent-token:create", NONE, 1, 1, 0}, {"agent-token:read", NONE, 1, 1, 0},
    {"agent:read", NONE, 1, 1, 1},    {"agent:update", NONE, 1, 1, 0},
    {"agent:retire", NONE, 1, 1, 0},  {"exec:run", NONE, 1, 1, 0},
    {"exec:read", NONE, 1, 1, 0},
    /* the agents' own actions: users never hold them (agents and
     * enrollment tokens authenticate otherwise; see test_fleet_exec) */
    {"agent:enroll", NONE, 1, 0, 0},  {"agent:poll", NONE, 1, 0, 0},
    {"agent:report", NONE, 1, 0, 0},
    {"org:write", NONE, 1, 0, 0},     {"org:read", NONE, 1, 1, 1},
    {"policy:read", NONE, 1, 1, 0},
    {"runbook:read", NONE, 1, 1, 0},  {"runbook:write", NONE, 1, 1, 0},
    {"runbook:start", NONE, 1, 1, 0}, {"runbook:approve", NONE, 1, 1, 0},
    {"metrics:read", NONE, 1, 1, 1},  {"metrics:write", NONE, 1, 1, 0},
    {"alert:read", NONE, 1, 1, 1},    {"alert:write", NONE, 1, 1, 0},
    {"event:read", NONE, 1, 1, 1},
    {"incident:read", NONE, 1, 1, 1}, {"incident:write", NONE, 1, 1, 0},
    {"maintenance:read", NONE, 1, 1, 1}, {"notify:write", NONE, 1, 1, 0},
    {"maintenance:write", NONE, 1, 1, 0},
    {"automation:read", NONE, 1, 1, 0}, {"automation:write", NONE, 1, 1, 0},
    {"automation:admin", NONE, 1, 0, 0},
};

static void test_authz_matrix(void **state) {
  static const char *roles[] = {"admin", "operator", "viewer"};
  (void)state;
  for (size_t i = 0; i < sizeof matrix / sizeof *matrix; i++) {
    const rule_t *m = &matrix[i];
    for (int r = 0; r < 3; r++) {
      k_principal_t p = who(roles[r], "me", "usr_me");
      k_target_t t = m->whose == OWN ? target("user/me/tokens", "usr_me")
                     : m->whose == OTHER
                         ? target("user/them/tokens", "usr_them")
                         : target(!strncmp(m->action, "token", 5) ? "tokens" : "user/them", "");
      char reason[256] = "";
      int want = r == 0 ? m->admin : r == 1 ? m->operator_ : m->viewer;
      int got = k_authz_check(g_org, &p, m->action, &t, reason, sizeof reason);
      if (got != want)
        fail_msg("%s %s on %s (owner '%s'): got %s, docs say %s", roles[r], m->action, t.path,
                 t.owner_id, got ? "allow" : "deny", want ? "allow" : "deny");
      if (!got) {
        /* a refusal says why: role and action */
        if (!strstr(reason, roles[r]) || !strstr(reason, m->action))
          fail_msg("reason '%s' names neither role %s nor action %s", reason, roles[r], m->action);
      }
    }
  }
}

static void test_authz_edges(void **state) {
  char reason[256];
  k_target_t mine = target("user/me/tokens", "usr_me");
  (void)state;
  /* a principal without a role (never authenticated) gets nothing but its own */
  {
    k_principal_t p = who("", "", "");
    k_target_t t = target("user/alice", "");
    assert_false(k_authz_check(g_org, &p, "user:read", &t, reason, sizeof reason));
    assert_false(k_authz_check(g_org, &p, "audit:read", &t, reason, sizeof reason));
    assert_false(k_authz_check(g_org, &p, "user:create", &t, reason, sizeof reason));
    /* an empty user id does not "own" a target with an empty owner */
    assert_false(k_authz_check(g_org, &p, "token:read", &t, reason, sizeof reason));
    assert_false(k_authz_check(g_org, &p, "token:revoke", &t, reason, sizeof reason));
  }
  /* an unknown role is not a viewer, operator or admin */
  {
    k_principal_t p = who("root", "me", "usr_me");
    k_target_t t = target("audit", "");
    assert_false(k_authz_check(g_org, &p, "audit:read", &t, reason, sizeof reason));
    assert_false(k_authz_check(g_org, &p, "user:create", &t, reason, sizeof reason));
  }
  /* roles are exact: "Admin" is nobody */
  {
    k_principal_t p = who("Admin", "me", "usr_me");
    k_target_t t = target("user/x", "");
    assert_false(k_authz_check(g_org, &p, "user:create", &t, reason, sizeof reason));
  }
  /* ownership is only about tokens: owning a user target grants no user:update */
  {
    k_principal_t p = who("viewer", "me", "usr_me");
    assert_false(k_authz_check(g_org, &p, "user:update", &mine, reason, sizeof reason));
    assert_false(k_authz_check(g_org, &p, "user:create", &mine, reason, sizeof reason));
    assert_false(k_authz_check(g_org, &p, "audit:read", &mine, reason, sizeof reason));
  }
  /* the token refusal names the owner rule */
  {
    k_principal_t p = who("viewer", "me", "usr_me");
    k_target_t t = target("user/them/tokens", "usr_them");
    assert_false(k_authz_check(g_org, &p, "token:revoke", &t, reason, sizeof reason));
    assert_non_null(strstr(reason, "own"));
  }
  /* a tiny reason buffer is not overrun */
  {
    k_principal_t p = who("viewer", "me", "usr_me");
    k_target_t t = target("audit", "");
    char small[8];
    memset(small, 'x', sizeof small);
    assert_false(k_authz_check(g_org, &p, "audit:read", &t, small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
  }
}

/* every route's action is judged as documented for some role: an action
 * no role could ever use is a typo in the table */
static void test_authz_every_route_action_usable(void **state) {
  (void)state;
  for (int i = 0; i < k_nroutes; i++) {
    const k_route_t *r = &k_routes[i];
    k_principal_t p = who("admin", "root", "usr_root");
    k_target_t t = target("x", "");
    char reason[256];
    int known = 0;
    if (!r->action) continue;
    assert_true(k_authz_check(g_org, &p, r->action, &t, reason, sizeof reason));
    for (size_t m = 0; m < sizeof matrix / sizeof *matrix; m++)
      if (!strcmp(matrix[m].action, r->action)) known = 1;
    if (!known)
      fail_msg("action '%s' (%s %s) is missing from the role matrix", r->action, r->method,
               r->pattern);
  }
}

/* The per-item filter of lists (k_authz_filter): keeps the items the
 * caller may read, in order, judged on each one's path. */
static void name_path(const json_t *it, char *out, size_t n) {
  const char *name = json_string_value(json_object_get(it, "name"));
  if (name) snprintf(out, n, "team/t/alert/%s", name);
  else out[0] = '\0';
}

static void test_authz_filter(void **state) {
  k_server_t srv;
  k_principal_t viewer = who("viewer", "me", "usr_me"), nobody = who("", "", "");
  json_t *items;
  (void)state;
  memset(&srv, 0, sizeof srv);
  srv.org = g_org;
  /* the items' own "path"; one without a path is never shown */
  items = json_pack("[{s:s,s:s},{s:s},{s:s,s:s}]", "id", "a", "path", "team/t/alert/a", "id", "b",
                    "id", "c", "path", "team/t/alert/c");
  k_authz_filter(&srv, &viewer, "alert:read", items, NULL);
  assert_int_equal(json_array_size(items), 2);
  assert_string_equal(json_string_value(json_object_get(json_array_get(items, 0), "id")), "a");
  assert_string_equal(json_string_value(json_object_get(json_array_get(items, 1), "id")), "c");
  /* a path function; a principal allowed nothing sees nothing */
  json_array_append_new(items, json_pack("{s:s}", "name", "d"));
  k_authz_filter(&srv, &viewer, "alert:read", items, name_path);
  assert_int_equal(json_array_size(items), 1);
  k_authz_filter(&srv, &nobody, "alert:read", items, NULL);
  assert_int_equal(json_array_size(items), 0);
  json_decref(items);
  assert_true(k_authz_may(&srv, &viewer, "alert:read", "team/t/alert/a"));
  assert_false(k_authz_may(&srv, &viewer, "alert:read", NULL));
  assert_false(k_authz_may(&srv, &viewer, "alert:write", "team/t/alert/a"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_routes_v1_need_auth_and_action),
      cmocka_unit_test(test_routes_mutations),
      cmocka_unit_test(test_routes_unique),
      cmocka_unit_test(test_routes_public_exactly),
      cmocka_unit_test(test_routes_match_docs),
      cmocka_unit_test(test_route_match),
      cmocka_unit_test(test_authz_matrix),
      cmocka_unit_test(test_authz_edges),
      cmocka_unit_test(test_authz_every_route_action_usable),
      cmocka_unit_test(test_authz_filter),
  };
  return cmocka_run_group_tests(tests, org_setup, org_teardown);
}
