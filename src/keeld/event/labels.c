/* labels.c — a selector over labels (labels.h). */
#include "event/labels.h"

#include "keel/json.h"

int k_event_labels_match(const keel_selector_t *sel, const json_t *labels) {
  if (!json_is_object(labels)) labels = NULL;
  return keel_selector_match_json(sel, keel_json_str(labels, "agent_id"),
                                  keel_json_str(labels, "instance"), labels);
}
