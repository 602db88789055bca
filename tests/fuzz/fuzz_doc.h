/* fuzz_doc.h — what the document validators' harnesses share: the input
 * is the whole document text, loaded as NAME; beyond not crashing or
 * leaking,
 *   - an error is KEEL_EINVAL / KEEL_ETOOBIG / KEEL_ENOMEM with a non-empty
 *     one-line message that starts with the document's name;
 *   - on success the normalized form, written as canonical JSON and loaded
 *     again as YAML, validates to an equal document (normalizing is
 *     idempotent and the JSON text is valid YAML to our loader). */
#ifndef KEEL_FUZZ_DOC_H
#define KEEL_FUZZ_DOC_H

#include <string.h>

#include <jansson.h>

#include "keel/err.h"
#include "keel/json.h"

#include "fuzz_check.h"

typedef int (*fuzz_doc_load_fn)(const char *name, const char *buf, size_t len, json_t **out,
                                keel_err_t *e);

/* Runs the checks above on data[0..size); returns the normalized document
 * (a new reference) or NULL when the validator refused it. */
static inline json_t *fuzz_doc(fuzz_doc_load_fn load, const char *name, const uint8_t *data,
                               size_t size) {
  /* An exact-size copy: ASan reports any read past size. */
  char *text = malloc(size ? size : 1), *canon = NULL;
  json_t *doc = (json_t *)1, *again = NULL;
  size_t nlen = strlen(name);
  keel_err_t e = {0};
  int rc;

  CHECK(text);
  if (size) memcpy(text, data, size);
  rc = load(name, text, size, &doc, &e);
  free(text);
  if (rc) {
    CHECK(doc == NULL);
    CHECK(rc == KEEL_EINVAL || rc == KEEL_ETOOBIG || rc == KEEL_ENOMEM);
    CHECK(e.code == rc);
    CHECK(!strncmp(e.msg, name, nlen) && e.msg[nlen] == ':');
    CHECK(strlen(e.msg) > nlen + 1);
    CHECK(!strchr(e.msg, '\n') && !strchr(e.msg, '\r'));
    return NULL;
  }
  CHECK(json_is_object(doc));
  canon = keel_json_canonical(doc);
  CHECK(canon);
  rc = load(name, canon, strlen(canon), &again, &e);
  if (rc) fprintf(stderr, "normalized form rejected: %s\n%s\n", e.msg, canon);
  CHECK(rc == 0);
  CHECK(json_equal(doc, again));
  json_decref(again);
  free(canon);
  return doc;
}

#endif
