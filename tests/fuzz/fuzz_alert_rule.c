/* libFuzzer harness: alert/doc.h (and through it keel/yaml.h, the PromQL
 * parser, keel/selector.h and keel/template.h with '$' names).
 *
 * The whole input is the document text.  Beyond fuzz_doc.h's checks (error
 * shape, the normalized form validating to itself):
 *   - exactly one of expr and event is set, durations are in range, and
 *     every label and annotation template parses and renders with a lookup
 *     that knows $value and every $labels.NAME (missing ones empty), which
 *     is what the engine does. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert/doc.h"
#include "keel/buf.h"
#include "keel/err.h"
#include "keel/json.h"
#include "keel/template.h"

#include "fuzz_doc.h"

/* libfyaml 0.7.12 leaks a text buffer building some single-quoted scalars
 * (see fuzz_org_doc.c); any leak of our own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfyaml.so\n"; }

static int lookup(void *ud, const char *name, const char **value, size_t *len) {
  (void)ud;
  if (!strcmp(name, "$value")) *value = "1e+06";
  else if (!strcmp(name, "$labels.instance")) *value = "web-1";
  else if (!strncmp(name, "$labels.", 8)) *value = NULL;
  else return KEEL_ENOENT;
  *len = *value ? strlen(*value) : 0;
  return 0;
}

static void templates_render(const json_t *map) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)map, k, v) {
    keel_buf_t b;
    keel_err_t e = {0};
    keel_buf_init(&b, 1 << 20);
    CHECK(json_is_string(v));
    CHECK(keel_tmpl_expand(json_string_value(v), json_string_length(v), KEEL_TMPL_RAW, lookup,
                           NULL, &b, &e) == 0);
    keel_buf_free(&b);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *doc = fuzz_doc(k_alert_doc_load, "fuzz.yaml", data, size);
  if (!doc) return 0;
  CHECK(json_is_string(json_object_get(doc, "expr")) !=
        json_is_object(json_object_get(doc, "event")));
  CHECK(json_is_string(json_object_get(doc, "application")) !=
        json_is_string(json_object_get(doc, "team")));
  CHECK(json_integer_value(json_object_get(doc, "interval_ms")) >= 1000);
  CHECK(json_integer_value(json_object_get(doc, "for_ms")) >= 0);
  CHECK(json_integer_value(json_object_get(doc, "keep_firing_for_ms")) >= 0);
  CHECK(!json_object_get(json_object_get(doc, "labels"), "alertname"));
  templates_render(json_object_get(doc, "labels"));
  templates_render(json_object_get(doc, "annotations"));
  json_decref(doc);
  return 0;
}
