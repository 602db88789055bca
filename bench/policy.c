/* bench/policy — policy decisions per second on one core.
 *
 * An organization of 100 application teams owning 1,000 applications (10
 * each), 10 partner teams and 3,000 users, compiled from 5,000 statements
 * of the shapes the org engine generates: per-team allows on every path of
 * their applications and per-env globs, env denies on prod, per-user host grants, partner
 * grants with expiry, role statements, and 20 guardrails with windows and
 * tag conditions.  Requests are what keeld sees: a random user (1–3
 * teams) acting mostly on its own applications' hosts, with tags, at times
 * spread over one week.
 *
 * The peer, in the same process with the same matchers and statements, is
 * the naive evaluator: a linear scan over all statements per request.
 *
 * Prints figures; never fails on a time.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "policy/policy.h"

#define NTEAMS 100
#define NAPPS 1000
#define NPARTNERS 10
#define NUSERS 3000
#define NSTMTS 5000
#define NREQ 65536

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)((rng >> 16) % n);
}

static json_t *strs(int n, ...) {
  va_list ap;
  json_t *a = json_array();
  va_start(ap, n);
  for (int i = 0; i < n; i++) json_array_append_new(a, json_string(va_arg(ap, const char *)));
  va_end(ap);
  return a;
}

static void add(json_t *arr, const char *id, const char *effect, json_t *prin, json_t *act,
                json_t *res, json_t *cond, const char *reason) {
  json_t *s = json_object();
  json_object_set_new(s, "id", json_string(id));
  if (!strcmp(effect, "guardrail"))
    json_object_set_new(s, "guardrail", json_true());
  else
    json_object_set_new(s, "effect", json_string(effect));
  if (prin) json_object_set_new(s, "principals", prin);
  json_object_set_new(s, "actions", act);
  json_object_set_new(s, "resources", res);
  if (cond) json_object_set_new(s, "conditions", cond);
  if (reason) json_object_set_new(s, "reason", json_string(reason));
  json_array_append_new(arr, s);
}

static json_t *jparse(const char *s) {
  json_t *v = NULL;
  keel_err_t e = {0};
  if (keel_json_parse(s, strlen(s), &v, &e)) fprintf(stderr, "bench: %s\n", e.msg);
  return v;
}

static json_t *build_org(void) {
  json_t *a = json_array();
  char id[96], t[64], r1[96], r2[96], c[256];
  int i;
  /* 20 guardrails first: they are what the org engine emits first too. */
  add(a, "prod-change-window", "guardrail", NULL, strs(1, "exec:run"), strs(1, "app/*/env/prod/**"),
      jparse("{\"outside_window\":{\"days\":[\"mon\",\"tue\",\"wed\",\"thu\"],\"start\":\"08:00\","
             "\"end\":\"18:00\"}}"),
      "no command on prod outside the change window");
  add(a, "pci-lock", "guardrail", NULL, strs(2, "exec:*", "command:*"), strs(1, "app/**"),
      jparse("{\"resource_tags\":{\"pci\":\"true\"}}"), "pci hosts are locked");
  add(a, "owner-required", "guardrail", NULL, strs(1, "agent:delete"), strs(1, "app/**"),
      jparse("{\"resource_tags_missing\":[\"owner\"]}"),
      "hosts without an owner tag cannot be deleted");
  for (i = 0; i < 17; i++) {
    snprintf(id, sizeof id, "freeze-a%04d", i * 53);
    snprintf(r1, sizeof r1, "app/a%04d/env/prod/**", i * 53);
    add(a, id, "guardrail", strs(1, "*"), strs(2, "exec:*", "agent:update"), strs(1, r1),
        jparse("{\"window\":{\"days\":[\"fri\",\"sat\",\"sun\"],\"start\":\"18:00\",\"end\":\"06:"
               "00\"}}"),
        "release freeze");
  }
  /* Roles. */
  add(a, "role-admin", "allow", strs(1, "role:admin"), strs(1, "*"), strs(1, "**"), NULL, NULL);
  add(a, "role-viewer", "allow", strs(1, "role:viewer"), strs(1, "*:read"), strs(1, "**"), NULL,
      NULL);
  add(a, "role-operator-audit", "allow", strs(1, "role:operator"), strs(1, "audit:read"),
      strs(1, "audit"), NULL, NULL);
  add(a, "role-agent", "allow", strs(1, "role:agent"), strs(2, "agent:*", "command:read"),
      strs(1, "app/*/env/*/host/*"), NULL, NULL);
  add(a, "role-enroll", "allow", strs(1, "role:enroll"), strs(1, "agent:enroll"), strs(1, "app/**"),
      NULL, NULL);
  add(a, "everyone-org-read", "allow", strs(1, "*"), strs(1, "org:read"), strs(1, "org"), NULL,
      NULL);
  add(a, "everyone-self", "allow", strs(1, "*"), strs(1, "user:read"), strs(1, "user/*"), NULL,
      NULL);
  add(a, "no-token-admin", "deny", strs(1, "role:viewer"), strs(1, "token:*"),
      strs(1, "user/*/token/**"), NULL, "viewers cannot manage tokens");
  add(a, "operator-fresh-tokens", "allow", strs(1, "role:operator"), strs(1, "token:*"),
      strs(1, "user/*/token/**"), jparse("{\"token_max_age\":\"12h\"}"), NULL);
  add(a, "no-policy-write", "deny", strs(1, "*"), strs(1, "policy:write"), strs(1, "**"), NULL,
      "policies change through the org document");
  /* Per application. */
  for (i = 0; i < NAPPS; i++) {
    int team = i / 10;
    snprintf(t, sizeof t, "team:team%03d", team);
    snprintf(id, sizeof id, "preset:decentralized:a%04d-read", i);
    snprintf(r1, sizeof r1, "app/a%04d/**", i);
    add(a, id, "allow", strs(1, t), strs(2, "*:read", "agent:*"), strs(1, r1), NULL, NULL);
    snprintf(id, sizeof id, "preset:decentralized:a%04d-operate", i);
    snprintf(r1, sizeof r1, "app/a%04d/env/dev/**", i);
    snprintf(r2, sizeof r2, "app/a%04d/env/staging/**", i);
    add(a, id, "allow", strs(1, t), strs(2, "exec:*", "command:*"), strs(2, r1, r2), NULL, NULL);
    snprintf(id, sizeof id, "preset:decentralized:a%04d-prod", i);
    snprintf(r1, sizeof r1, "app/a%04d/env/prod/host/*", i);
    add(a, id, "allow", strs(1, t), strs(2, "exec:run", "command:read"), strs(1, r1), NULL, NULL);
    if (i % 2 == 0) {
      snprintf(id, sizeof id, "a%04d-prod-deny", i);
      snprintf(r1, sizeof r1, "app/a%04d/env/prod/**", i);
      add(a, id, "deny", strs(1, t), strs(2, "exec:kill", "agent:delete"), strs(1, r1), NULL,
          "no kill or delete on prod");
    }
  }
  for (i = 0; i < NTEAMS; i++) {
    snprintf(t, sizeof t, "team:team%03d", i);
    snprintf(id, sizeof id, "team%03d-self", i);
    snprintf(r1, sizeof r1, "team/team%03d/**", i);
    add(a, id, "allow", strs(1, t), strs(1, "team:*"), strs(1, r1), NULL, NULL);
  }
  /* Partner grants: 90 applications each, half already expired. */
  for (i = 0; i < NPARTNERS * 90; i++) {
    int app = rnd(NAPPS);
    snprintf(t, sizeof t, "partner:msp%02d", i / 90);
    snprintf(id, sizeof id, "grant:msp%02d:a%04d:%d", i / 90, app, i);
    snprintf(r1, sizeof r1, "app/a%04d/env/prod/**", app);
    snprintf(r2, sizeof r2, "app/a%04d/env/staging/**", app);
    snprintf(c, sizeof c, "{\"expires_at\":\"%s\"}",
             i % 2 ? "2026-06-30T00:00:00Z" : "2027-06-30T00:00:00Z");
    add(a, id, "allow", strs(1, t), strs(2, "exec:run", "agent:read"), strs(2, r1, r2), jparse(c),
        NULL);
  }
  /* Per-user host grants fill up to NSTMTS. */
  for (i = 0; json_array_size(a) < NSTMTS; i++) {
    int app = rnd(NAPPS);
    snprintf(t, sizeof t, "user:u%04d", rnd(NUSERS));
    snprintf(id, sizeof id, "user-grant-%d", i);
    snprintf(r1, sizeof r1, "app/a%04d/env/prod/host/agt_*", app);
    add(a, id, "allow", strs(1, t), strs(2, "exec:run", "exec:cancel"), strs(1, r1), NULL, NULL);
  }
  return a;
}

typedef struct user {
  char name[16];
  const char *role;
  const char *teams[3];
  size_t nteams;
  const char *partner[1];
  size_t npartner;
} user_t;

typedef struct request {
  k_pol_principal_t who;
  const char *action;
  k_pol_resource_t res;
  int64_t now;
} request_t;

static char team_names[NTEAMS + NPARTNERS][16];
static user_t users[NUSERS];
static request_t reqs[NREQ];
static char paths[NREQ][64];

static const char *const actions[] = {
    "exec:run",     "exec:run",     "exec:run",       "exec:kill",  "exec:cancel",
    "command:read", "command:read", "command:create", "agent:read", "agent:read",
    "agent:read",   "agent:delete", "agent:update",   "audit:read", "team:read",
    "team:update",  "user:read",    "token:create",   "org:read",   "policy:write"};
static const char *const envs[] = {"dev", "staging", "prod"};

static void build_requests(json_t **tagpool, size_t ntags, int64_t monday) {
  for (int i = 0; i < NTEAMS; i++) snprintf(team_names[i], 16, "team%03d", i);
  for (int i = 0; i < NPARTNERS; i++) snprintf(team_names[NTEAMS + i], 16, "msp%02d", i);
  for (int i = 0; i < NUSERS; i++) {
    user_t *u = &users[i];
    uint32_t r = rnd(100);
    snprintf(u->name, sizeof u->name, "u%04d", i);
    u->role = r < 2 ? "admin" : r < 60 ? "operator" : r < 95 ? "viewer" : "agent";
    if (rnd(100) < 5) {
      u->teams[0] = u->partner[0] = team_names[NTEAMS + rnd(NPARTNERS)];
      u->nteams = u->npartner = 1;
    } else {
      u->nteams = 1 + rnd(3);
      for (size_t k = 0; k < u->nteams; k++) u->teams[k] = team_names[rnd(NTEAMS)];
    }
  }
  for (int i = 0; i < NREQ; i++) {
    request_t *q = &reqs[i];
    user_t *u = &users[rnd(NUSERS)];
    uint32_t kind = rnd(100);
    q->who = (k_pol_principal_t){u->name, u->role, u->teams, u->nteams, u->partner, u->npartner, 0};
    if (rnd(4)) q->who.token_created_ms = monday - (int64_t)rnd(24) * 3600000;
    q->action = actions[rnd(sizeof actions / sizeof actions[0])];
    q->now = monday + (int64_t)rnd(7 * 24 * 60) * 60000;
    if (kind < 85) {
      /* Mostly the user's own applications. */
      int app = rnd(NAPPS);
      if (rnd(10) < 7 && !u->npartner)
        app = atoi(u->teams[rnd((uint32_t)u->nteams)] + 4) * 10 + rnd(10);
      snprintf(paths[i], sizeof paths[i], "app/a%04d/env/%s/host/agt_%u", app, envs[rnd(3)],
               rnd(50));
      q->res.tags = tagpool[rnd((uint32_t)ntags)];
    } else if (kind < 90) {
      snprintf(paths[i], sizeof paths[i], "team/%s", u->teams[0]);
    } else if (kind < 95) {
      snprintf(paths[i], sizeof paths[i], "user/%s/token/t%u", u->name, rnd(9));
    } else {
      snprintf(paths[i], sizeof paths[i], "%s", rnd(2) ? "org" : "audit");
    }
    q->res.path = paths[i];
  }
}

typedef void (*decide_fn)(const k_policy_t *, const k_pol_principal_t *, const char *,
                          const k_pol_resource_t *, int64_t, k_pol_decision_t *);

/* Decides requests round-robin for about `seconds`; returns decisions/s. */
static double run(const k_policy_t *p, decide_fn fn, double seconds, size_t counts[4]) {
  k_pol_decision_t d;
  uint64_t n = 0;
  int64_t t0 = keel_mono_ns(), end = t0 + (int64_t)(seconds * 1e9), t;
  do {
    for (int i = 0; i < 4096; i++, n++) {
      const request_t *q = &reqs[n % NREQ];
      fn(p, &q->who, q->action, &q->res, q->now, &d);
      if (counts) counts[d.kind[0] == 'a' ? 0 : d.kind[0] == 'g' ? 2 : d.kind[2] == 'n' ? 1 : 3]++;
    }
  } while ((t = keel_mono_ns()) < end);
  return (double)n / ((double)(t - t0) / 1e9);
}

int main(void) {
  json_t *org = build_org(), *tagpool[16];
  k_policy_t *p = NULL;
  keel_err_t e = {0};
  int64_t t0, monday = 0;
  size_t counts[4] = {0}, total, mismatch = 0;
  double rate, lrate;
  static const char *const tagjson[] = {"{\"env\":\"prod\",\"owner\":\"x\"}",
                                        "{\"env\":\"dev\",\"owner\":\"y\",\"os\":\"linux\"}",
                                        "{\"env\":\"staging\"}",
                                        "{\"env\":\"prod\",\"owner\":\"z\",\"pci\":\"true\"}",
                                        "{\"owner\":\"x\",\"pci\":\"false\"}",
                                        "{}"};

  keel_time_parse("2026-11-23T00:00:00Z", &monday);
  for (size_t i = 0; i < 16; i++) tagpool[i] = jparse(tagjson[i % 6]);
  build_requests(tagpool, 16, monday);

  t0 = keel_mono_ns();
  if (k_policy_compile(org, &p, &e)) {
    fprintf(stderr, "bench: compile: %s\n", e.msg);
    return 1;
  }
  printf("policy: %zu statements, %d teams + %d partners, %d applications, %d users\n",
         k_policy_count(p), NTEAMS, NPARTNERS, NAPPS, NUSERS);
  printf("  compile: %.1f ms, compiled policy %.2f MiB\n", (double)(keel_mono_ns() - t0) / 1e6,
         (double)k_policy_mem(p) / (1024.0 * 1024.0));

  for (int i = 0; i < NREQ; i++) {
    k_pol_decision_t d, l;
    const request_t *q = &reqs[i];
    k_policy_decide(p, &q->who, q->action, &q->res, q->now, &d);
    k_policy_decide_linear(p, &q->who, q->action, &q->res, q->now, &l);
    mismatch += d.allow != l.allow || strcmp(d.statement, l.statement);
  }
  run(p, k_policy_decide, 0.2, NULL); /* warm-up */
  rate = run(p, k_policy_decide, 2.0, counts);
  total = counts[0] + counts[1] + counts[2] + counts[3];
  printf("  indexed, one core: %10.0f decisions/s  %6.0f ns/decision\n", rate, 1e9 / rate);
  printf("  mix: allow %.1f%%, explicit deny %.1f%%, guardrail %.1f%%, default deny %.1f%%\n",
         100.0 * (double)counts[0] / (double)total, 100.0 * (double)counts[1] / (double)total,
         100.0 * (double)counts[2] / (double)total, 100.0 * (double)counts[3] / (double)total);
  lrate = run(p, k_policy_decide_linear, 2.0, NULL);
  printf("  peer (linear scan, same matchers): %10.0f decisions/s  %6.0f ns/decision\n", lrate,
         1e9 / lrate);
  printf("  indexed / linear: %.0fx; %zu of %d requests decided differently\n", rate / lrate,
         mismatch, NREQ);
  k_policy_free(p);
  json_decref(org);
  for (size_t i = 0; i < 16; i++) json_decref(tagpool[i]);
  return 0;
}
