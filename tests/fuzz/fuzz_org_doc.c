/* libFuzzer harness: org/doc.h (and through it keel/yaml.h).
 *
 * The whole input is the document text; the checks are fuzz_doc.h's (error
 * shape, the normalized form validating to itself). */
#include <stddef.h>
#include <stdint.h>

#include "org/doc.h"

#include "fuzz_doc.h"

/* libfyaml 0.7.12 leaks a text buffer when fy_token_get_text builds the
 * text of some single-quoted scalars (one of twelve quote characters leaks 512
 * bytes, with or without our code around it).  Not ours to fix here; any
 * leak of our own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfyaml.so\n"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_decref(fuzz_doc(k_org_doc_load, "fuzz.yaml", data, size));
  return 0;
}
