/* org.h — the organization engine: applying Organization documents, and
 * turning the applied organization (operating model, teams, applications,
 * grants, policies, guardrails) into the compiled policy every request is
 * judged by.
 *
 * The engine owns the table org_objects.  Users are created and updated
 * through the iam engine's API.  In memory it keeps the compiled policy
 * and, per user, the teams they belong to; both are rebuilt from the store
 * by k_org_reload (after every apply, before the next loop iteration).
 *
 * Functions that write MUST be called inside a store unit.  JSON results
 * are new references the caller owns.
 */
#ifndef KEELD_ORG_H
#define KEELD_ORG_H

#include <jansson.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/log.h"
#include "policy/policy.h"
#include "store/store.h"

typedef struct k_org k_org_t;

int k_org_open(k_store_t *s, const keel_log_t *log, k_org_t **out, keel_err_t *e);
void k_org_close(k_org_t *o);
/* Rebuilds teams and the compiled policy from the store. On error the
 * previous state stays in force. */
int k_org_reload(k_org_t *o, keel_err_t *e);
/* Set by an apply: the loop calls k_org_reload before sleeping. */
int k_org_dirty(const k_org_t *o);

/* Plans, and unless dry_run applies, a normalized document (org/doc.h).
 * *report: {"changed": bool, "dry_run": bool, "prune": bool, "summary": text,
 *           "changes": [{"op": "create"|"update"|"delete", "kind", "name", "fields": [..]}],
 *           "removed": [{"kind","name"}]  (in the store, not in the file; deleted only with prune)}.
 * detail gets the audit summary (includes an operating-model switch). */
int k_org_apply(k_org_t *o, const json_t *doc, int dry_run, int prune, int64_t now_ms,
                json_t **report, keel_buf_t *detail, keel_err_t *e);

const k_policy_t *k_org_policy(const k_org_t *o);
/* "decentralized" | "centralized" | "ccoe" | "" (no organization applied). */
const char *k_org_model(const k_org_t *o);
/* {"name", "operating_model", "base"} or null members when none applied. */
json_t *k_org_summary(const k_org_t *o);

/* Fills out with user's teams and partner teams (borrowed from o, valid
 * until the next reload) plus role and token age. */
void k_org_principal(const k_org_t *o, const char *user, const char *role,
                     int64_t token_created_ms, k_pol_principal_t *out);
/* The policy path of a host: "app/APP/env/ENV/host/ID"; APP is the first
 * application (by name) whose selector matches, ENV the host's env tag;
 * "_" for either when unknown. */
void k_org_host_path(const k_org_t *o, const char *id, const char *hostname, const json_t *tags,
                     char *out, size_t n);
/* 1 when the applied organization holds an object of kind ("team",
 * "application", ...) named name, with *spec (when spec is not NULL) its
 * document, borrowed until the next reload; 0 otherwise (also when no
 * organization is applied). */
int k_org_object(const k_org_t *o, const char *kind, const char *name, const json_t **spec);
/* Teams of user as a new JSON array of {"name","kind"}. */
json_t *k_org_user_teams(const k_org_t *o, const char *user);

/* The statements the organization's presets generate (exported for
 * tests and `keel policy list`): a new array. */
json_t *k_org_statements(const k_org_t *o);

#endif
