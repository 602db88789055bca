/* policy/policy.h — the policy evaluator: compiled statements, decisions.
 *
 * A pure in-memory engine: no storage, no clock (callers pass now_ms), no
 * allocation when deciding (except for resource paths of more than
 * 32 segments).  The org engine compiles the statements it
 * generates from presets, grants, policies and guardrails once per applied
 * document and decides every request against the result.
 *
 * One statement, as JSON (the org engine generates these from presets):
 *   id          required, unique, [a-z0-9][a-z0-9._:/@-]{0,127}
 *               ("preset:decentralized:checkout-operate")
 *   effect      "allow" | "deny"; required unless guardrail
 *   guardrail   bool, default false; guardrails are always deny
 *   principals  ["*" | "team:NAME" | "user:NAME" | "role:ROLE" | "partner:TEAM"];
 *               required unless guardrail (default ["*"]); "*" includes agents
 *   actions     "area:verb" globs ("exec:run", "exec:*", "*:read") or "*" for
 *               every action; '*' matches a run of characters other than ':'
 *   resources   '/'-separated path globs: a segment "*" is exactly one
 *               segment, a segment "**" zero or more whole segments, a '*'
 *               inside a segment ("agt_*") matches within that segment
 *   conditions  all must hold: resource_tags {k: v}, resource_tags_missing [k]
 *               (at least one absent), window / outside_window {days: [mon..sun],
 *               start: "HH:MM", end: "HH:MM"}, token_max_age "12h" (the token
 *               is younger; unknown age never is), expires_at RFC 3339
 *   reason      optional, one line, shown on deny
 *
 * Windows are UTC; start inclusive, end exclusive, "24:00" allowed as end;
 * days defaults to every day.  A window whose end is before its start runs
 * over midnight and belongs to the day it starts on ("fri" 22:00-02:00
 * includes Saturday 01:00).  expires_at: the statement applies only while
 * now < expires_at.
 */
#ifndef KEEL_POLICY_H
#define KEEL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/json.h"

/* Compiled and immutable: deciding never writes to it, so one policy MAY be
 * shared by any number of threads. */
typedef struct k_policy k_policy_t;

/* statements: a JSON array of statement objects (borrowed; not retained —
 * the policy copies what it needs).  On success *out is a new policy the
 * caller owns (k_policy_free).  On error *out is NULL and e names the
 * statement id (or index when it has no usable id) and the field. */
int k_policy_compile(const json_t *statements, k_policy_t **out, keel_err_t *e);
void k_policy_free(k_policy_t *p); /* NULL is fine */

/* Bytes of memory the compiled policy holds (for benchmarks and metrics). */
size_t k_policy_mem(const k_policy_t *p);
size_t k_policy_count(const k_policy_t *p); /* statements */

typedef struct k_pol_principal {
  const char *user; /* user name ("" or NULL for none) */
  const char *role; /* built-in role: admin | operator | viewer | agent | enroll; or ""/NULL */
  const char *const *teams; /* team names the user is in */
  size_t nteams;
  const char *const *partner_of; /* partner team names among teams (for "partner:TEAM") */
  size_t npartner;
  int64_t token_created_ms; /* 0 = unknown: token_max_age conditions then do not hold */
} k_pol_principal_t;

typedef struct k_pol_resource {
  const char *path;   /* "app/checkout/env/prod/host/agt_x", "org", "user/alice", "audit" */
  const json_t *tags; /* the resource's tags (object of strings) or NULL; borrowed */
} k_pol_resource_t;

typedef struct k_pol_decision {
  int allow;             /* 1 allow, 0 deny */
  const char *statement; /* id of the deciding statement, or "default-deny"; borrowed from
                            p (static for "default-deny"): valid while p lives */
  const char *kind;      /* "deny" | "guardrail" | "allow" | "default" (static) */
  char reason[256];      /* one line, truncated to fit:
                            "denied by guardrail prod-change-window: no command on prod ..." /
                            "denied by checkout-no-prod: ..." / "allowed by preset:..." /
                            "no statement allows exec:run on app/x/... for user alice" */
} k_pol_decision_t;

/* Order: explicit deny (non-guardrail) → guardrail deny → allow → default
 * deny.  Within one of these, the statement that comes first in the
 * compiled array decides.  p, who, res and out MUST NOT be NULL; a NULL
 * action or res->path is taken as "".  Everything is borrowed for the call
 * only.  Never fails: when it cannot evaluate (out of memory for a path of
 * more than 32 segments) it denies, as "default-deny". */
void k_policy_decide(const k_policy_t *p, const k_pol_principal_t *who, const char *action,
                     const k_pol_resource_t *res, int64_t now_ms, k_pol_decision_t *out);

/* The same decision by scanning every statement in order with the same
 * matchers and no index.  It exists as the reference the indexed
 * k_policy_decide is cross-checked against (tests) and compared with
 * (bench/policy); the daemon MUST NOT use it. */
void k_policy_decide_linear(const k_policy_t *p, const k_pol_principal_t *who, const char *action,
                            const k_pol_resource_t *res, int64_t now_ms, k_pol_decision_t *out);

#endif
