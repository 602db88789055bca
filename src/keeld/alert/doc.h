/* alert/doc.h — the AlertRule document (docs/alerts.md): checking it and
 * giving it one normalized shape.
 *
 * Normalized form (every key always present, in this shape):
 *   {"kind": "AlertRule", "name", "description": text|null,
 *    "application": A|null, "team": T|null          (exactly one is set),
 *    "expr": PromQL text|null,
 *    "event": null | {"type", "clear": type|null, "match": selector|null,
 *                     "by": [label names]|null}     (exactly one of expr, event),
 *    "for_ms": int, "keep_firing_for_ms": int, "interval_ms": int,
 *    "severity": text, "labels": {name: template}, "annotations": {name: template}}
 * Defaults: for 0, keep_firing_for 0, interval 10s (at least 1s), labels
 * and annotations {}.  Durations may be written "for: 2m" or
 * "for_ms: 120000" (not both); "0s" is a duration here.  An optional field
 * given as null counts as absent, so the normalized form validates to
 * itself.
 *
 * expr is parsed with the PromQL parser (promql/promql.h): a parse error is
 * Prometheus' own text, naming the construct; the expression MUST be an
 * instant vector or a scalar.  event.type and event.clear are event types
 * (event.h) and not alert.* (a rule watching alert events could feed on its
 * own); event.match is a selector (keel/selector.h) on the event's
 * data.labels; event.by lists label names that identify an instance.
 *
 * Templates (labels' and annotations' values, keel/template.h) may use only
 * {{ $value }} and {{ $labels.NAME }}.  Label names are [a-zA-Z_][a-zA-Z0-9_]*,
 * not starting with "__"; labels may not set alertname or severity (the
 * rule's name and severity are those labels).
 *
 * Owner.  With org NULL, or no organization applied, application/team are
 * only checked for form; otherwise the application (or team) MUST exist in
 * the applied organization.
 */
#ifndef KEELD_ALERT_DOC_H
#define KEELD_ALERT_DOC_H

#include <jansson.h>
#include <stddef.h>

#include "keel/err.h"
#include "keel/yaml.h"
#include "org/org.h"

/* Validates a parsed AlertRule document (doc, borrowed) and returns the
 * normalized form in *out (a new reference the caller owns; NULL on
 * error).  name and pos (may be NULL) are for messages:
 * "name:line:col: event.by[1]: ...".  org (borrowed, may be NULL) checks the
 * owner.  KEEL_EINVAL (or KEEL_ENOMEM); the first problem found. */
int k_alert_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                         const k_org_t *org, json_t **out, keel_err_t *e);

/* keel_yaml_load + k_alert_doc_validate without an organization. */
int k_alert_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);

/* The policy path of a normalized rule: "app/APP/alert/NAME" or
 * "team/TEAM/alert/NAME". */
void k_alert_rule_path(const json_t *rule, char *out, size_t n);

#endif
