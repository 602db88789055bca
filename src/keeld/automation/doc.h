/* automation/doc.h — the AutomationRule document (docs/automation.md):
 * checking it and giving it one normalized shape.  Pure: nothing here
 * reads the store (whether the runbook exists and takes these parameters
 * is apply's to check, k_auto_check_runbook).
 *
 * Normalized form (every key always present):
 *   {"kind": "AutomationRule", "name", "description": text|null,
 *    "application": A|null, "team": T|null          (exactly one set),
 *    "on":  {"type": "service.down" | "alert.*" (a prefix ending in ".*"),
 *            "match": selector text in canonical form ("" = every event),
 *            "conditions": [canonical condition texts (automation/cond.h)]},
 *    "run": {"runbook": NAME, "params": {NAME: template text | int | bool |
 *                                        [template texts]}},
 *    "require_approval": null | {"approvers": [..]|null (null: the owner
 *                        team), "min_approvals", "timeout_ms"},
 *    "cooldown_ms": 0..24h (default 5m), "max_runs_per_hour": 1..10000
 *    (default 10), "mode": "enforce"|"dry-run", "enabled": bool}
 * The document may say `require_approval: true` (the owner team, one
 * approval, 24h) or `false`, and `cooldown: 5m` or `cooldown_ms: 300000`.
 * An optional field given as null counts as absent, so the normalized
 * form validates to itself.
 *
 * Templates (keel/template.h) in run.params name the event: event.id,
 * event.type, event.source, event.subject, event.cause, event.time,
 * event.data.X[.Y...], and labels.KEY (= event.data.labels.KEY).
 */
#ifndef KEELD_AUTOMATION_DOC_H
#define KEELD_AUTOMATION_DOC_H

#include <jansson.h>
#include <stddef.h>

#include "keel/err.h"
#include "keel/yaml.h"

#define K_AUTO_MAX_CONDITIONS 16
#define K_AUTO_MAX_PARAMS 64
#define K_AUTO_COOLDOWN_DEFAULT_MS 300000
#define K_AUTO_MAX_RUNS_DEFAULT 10

typedef struct k_org k_org_t;

/* Validates a parsed document (borrowed) into *out (a new reference; NULL
 * on error).  name and pos (may be NULL) are for messages,
 * "name:line:col: on.conditions[1]: column 12: ...".  org (borrowed, may
 * be NULL) checks the owner (k_walk_owner).  KEEL_EINVAL (or KEEL_ENOMEM),
 * the first problem found. */
int k_auto_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                        const k_org_t *org, json_t **out, keel_err_t *e);

/* keel_yaml_load + k_auto_doc_validate without an organization. */
int k_auto_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);

/* 1 when ref (a template name) is one run.params may use (above). */
int k_auto_ref_ok(const char *ref);

/* The policy path of a normalized rule (or a stored one with the same
 * "application"/"team" keys): "app/A/automation/NAME" or
 * "team/T/automation/NAME". */
void k_auto_rule_path(const json_t *rule, char *out, size_t n);

/* Checks the rule's run section against its runbook (a normalized
 * runbook document, borrowed): every parameter the rule gives is
 * declared, and every required one without a default is given.
 * KEEL_EINVAL naming the first problem ("run.params.x: the runbook
 * 'restart' has no parameter 'x'"). */
int k_auto_check_runbook(const json_t *rule, const json_t *runbook_doc, keel_err_t *e);

#endif
