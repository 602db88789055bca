/* libFuzzer harness: runbook/doc.h (and through it keel/yaml.h and
 * keel/template.h).
 *
 * The whole input is the document text.  Beyond not crashing or leaking:
 *   - an error is KEEL_EINVAL / KEEL_ETOOBIG / KEEL_ENOMEM with a non-empty
 *     one-line message that starts with the document's name;
 *   - on success the normalized form, written as canonical JSON and loaded
 *     again as YAML, validates to an equal document (normalizing is
 *     idempotent and the JSON text is valid YAML to our loader);
 *   - the schedule's parameters, normalized, pass k_runbook_params
 *     unchanged. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/err.h"
#include "keel/json.h"
#include "runbook/doc.h"

#include "fuzz_check.h"

#define NAME "fuzz.yaml"

/* libfyaml 0.7.12 leaks a text buffer building some single-quoted scalars
 * (see fuzz_org_doc.c); any leak of our own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfyaml.so\n"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: ASan reports any read past size. */
  char *text = malloc(size ? size : 1), *canon = NULL;
  json_t *doc = (json_t *)1, *again = NULL, *params = NULL, *sched;
  keel_err_t e = {0};
  int rc;

  CHECK(text);
  if (size) memcpy(text, data, size);
  rc = k_runbook_doc_load(NAME, text, size, &doc, &e);
  if (rc) {
    CHECK(doc == NULL);
    CHECK(rc == KEEL_EINVAL || rc == KEEL_ETOOBIG || rc == KEEL_ENOMEM);
    CHECK(e.code == rc);
    CHECK(!strncmp(e.msg, NAME ":", strlen(NAME ":")));
    CHECK(strlen(e.msg) > strlen(NAME ":"));
    CHECK(!strchr(e.msg, '\n') && !strchr(e.msg, '\r'));
    goto out;
  }
  CHECK(json_is_object(doc));
  canon = keel_json_canonical(doc);
  CHECK(canon);
  rc = k_runbook_doc_load(NAME, canon, strlen(canon), &again, &e);
  if (rc) fprintf(stderr, "normalized form rejected: %s\n%s\n", e.msg, canon);
  CHECK(rc == 0);
  CHECK(json_equal(doc, again));
  if ((sched = json_object_get(doc, "schedule")) && !json_is_null(sched)) {
    rc = k_runbook_params(doc, json_object_get(sched, "params"), &params, &e);
    if (rc) fprintf(stderr, "schedule params rejected: %s\n%s\n", e.msg, canon);
    CHECK(rc == 0);
    CHECK(json_equal(params, json_object_get(sched, "params")));
  }
out:
  if (doc != (json_t *)1) json_decref(doc);
  json_decref(again);
  json_decref(params);
  free(canon);
  free(text);
  return 0;
}
