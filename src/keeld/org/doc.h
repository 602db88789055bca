/* org/doc.h — the Organization document (docs/org-document.md): checking
 * it and giving it one normalized shape.
 *
 * Validation is purely about the document: nothing here reads the store.
 * The one reference left for apply is team members that are not declared
 * under users (they may already exist in keeld).
 *
 * Normalized form (every key always present, in this shape):
 *   {"kind": "Organization", "name", "operating_model", "base": text|null,
 *    "users":        [{"name", "display_name": text|null, "email": text|null, "role"}],
 *    "teams":        [{"name", "kind", "members": [..]}],
 *    "applications": [{"name", "owner", "environments": [..], "selector"}],
 *    "grants":       [{"team", "applications", "environments", "actions", "expires_at"}],
 *    "policies":     [{"id", "effect", "principals", "actions", "resources", "conditions", "reason": text|null}],
 *    "guardrails":   [same as policies, effect always "deny"]}
 * Defaults: role "viewer"; base null unless ccoe; guardrail principals ["*"];
 * grant environments = every environment of its applications (union, in
 * order); conditions {}; absent lists []; expires_at rewritten as
 * keel_time_format (UTC, milliseconds).  An optional field given as null
 * counts as absent, so the normalized form validates to itself.
 */
#ifndef KEELD_ORG_DOC_H
#define KEELD_ORG_DOC_H

#include <jansson.h>
#include <stddef.h>

#include "keel/err.h"
#include "keel/yaml.h"

/* Validates a parsed Organization document (doc, borrowed) and returns the
 * normalized form in *out (a new reference the caller owns; NULL on error).
 * name (borrowed) and pos (borrowed, may be NULL: then no line:col) are for
 * messages: "name:line:col: teams[1].kind: expected one of application,
 * platform, ccoe, partner".  KEEL_EINVAL (or KEEL_ENOMEM); the first problem
 * in document order (unknown fields of a mapping before its known ones). */
int k_org_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                       json_t **out, keel_err_t *e);

/* keel_yaml_load + k_org_doc_validate: buf[0..len) is YAML or JSON text. */
int k_org_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);

#endif
