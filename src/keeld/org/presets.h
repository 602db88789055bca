/* presets.h — statements implied by an organization (presets.c). */
#ifndef KEELD_ORG_PRESETS_H
#define KEELD_ORG_PRESETS_H

#include <jansson.h>

/* Inputs are the applied objects by kind: org is the organization's spec
 * (or NULL before any apply), the others objects name -> spec.  Returns a
 * new array of statements (policy.h form): built-ins, the operating
 * model's preset, grants, the document's policies and, for ccoe, its
 * guardrails. */
json_t *k_org_preset_statements(const json_t *org, const json_t *teams, const json_t *apps,
                                const json_t *grants, const json_t *policies,
                                const json_t *guardrails);

#endif
