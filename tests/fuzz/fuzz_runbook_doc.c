/* libFuzzer harness: runbook/doc.h (and through it keel/yaml.h and
 * keel/template.h).
 *
 * The whole input is the document text.  Beyond fuzz_doc.h's checks (error
 * shape, the normalized form validating to itself): the schedule's
 * parameters, normalized, pass k_runbook_params unchanged. */
#include <stddef.h>
#include <stdint.h>

#include "runbook/doc.h"

#include "fuzz_doc.h"

/* libfyaml 0.7.12 leaks a text buffer building some single-quoted scalars
 * (see fuzz_org_doc.c); any leak of our own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfyaml.so\n"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *doc = fuzz_doc(k_runbook_doc_load, "fuzz.yaml", data, size), *params = NULL, *sched;
  keel_err_t e = {0};
  int rc;

  if ((sched = json_object_get(doc, "schedule")) && !json_is_null(sched)) {
    rc = k_runbook_params(doc, json_object_get(sched, "params"), &params, &e);
    if (rc) fprintf(stderr, "schedule params rejected: %s\n", e.msg);
    CHECK(rc == 0);
    CHECK(json_equal(params, json_object_get(sched, "params")));
  }
  json_decref(params);
  json_decref(doc);
  return 0;
}
