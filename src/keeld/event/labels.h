/* labels.h — the one meaning of a selector over labels (docs/events.md,
 * "Labels of a host").
 *
 * Events describe what they are about in data.labels, and alerts carry
 * labels of the same kind: for a host, `instance` (its hostname),
 * `agent_id` and its tags (k_fleet_host_labels).  Every engine that picks
 * events or alerts by a selector (alert rules' event.match, automation
 * rules' on.match, maintenance windows, notification routes) matches with
 * k_event_labels_match, so a selector means the same everywhere.
 *
 * The selector grammar (src/lib/selector.c, docs/selectors.md) has two
 * host keys that are never tags: `id` and `hostname`.  Over labels they
 * stand for the host's labels: `id` reads `agent_id` and `hostname` reads
 * `instance`.  Every other key reads the label of that name.  A label
 * literally named `id` or `hostname` is out of a selector's reach, as a tag
 * of those names would be.
 */
#ifndef KEELD_EVENT_LABELS_H
#define KEELD_EVENT_LABELS_H

#include <jansson.h>

#include "keel/selector.h"

/* 1 when sel (NOT NULL) matches labels, an object of string values
 * (borrowed; NULL or not an object: no labels; a value that is not a
 * string counts as absent); 0 otherwise. */
int k_event_labels_match(const keel_selector_t *sel, const json_t *labels);

#endif
