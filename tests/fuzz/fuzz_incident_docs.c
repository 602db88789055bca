/* libFuzzer harness: the incident engine's documents, NotificationPolicy
 * (incident/notify.h) and MaintenanceWindow (incident/maint.h), and
 * through them keel/yaml.h, selectors and runbook/cron.h.
 *
 * The whole input is the document text, given to both validators.  Beyond
 * not crashing or leaking:
 *   - an error is KEEL_EINVAL / KEEL_ETOOBIG / KEEL_ENOMEM with a non-empty
 *     one-line message that starts with the document's name;
 *   - on success the normalized form, as canonical JSON loaded again,
 *     validates to an equal document;
 *   - a policy's route for a few label sets is null or has the steps of
 *     one of its routes; a window's activity is consistent with its own
 *     answer for "until" (active just before it, not at it, for one-off
 *     windows). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incident/maint.h"
#include "incident/notify.h"
#include "keel/err.h"
#include "keel/json.h"

#include "fuzz_check.h"

#define NAME "fuzz.yaml"

/* libfyaml 0.7.12 leaks a text buffer building some single-quoted scalars
 * (see fuzz_org_doc.c); any leak of our own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfyaml.so\n"; }

typedef int (*load_fn)(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);

/* Loads text with fn; checks the error form or the round trip.  *doc: the
 * normalized document or NULL. */
static void one(load_fn fn, const char *text, size_t size, json_t **doc) {
  keel_err_t e = {0};
  json_t *again = NULL;
  char *canon;
  int rc = fn(NAME, text, size, doc, &e);
  if (rc) {
    CHECK(*doc == NULL);
    CHECK(rc == KEEL_EINVAL || rc == KEEL_ETOOBIG || rc == KEEL_ENOMEM);
    CHECK(e.code == rc);
    CHECK(!strncmp(e.msg, NAME ":", strlen(NAME ":")));
    CHECK(strlen(e.msg) > strlen(NAME ":"));
    CHECK(!strchr(e.msg, '\n') && !strchr(e.msg, '\r'));
    return;
  }
  CHECK(json_is_object(*doc));
  canon = keel_json_canonical(*doc);
  CHECK(canon);
  rc = fn(NAME, canon, strlen(canon), &again, &e);
  if (rc) fprintf(stderr, "normalized form rejected: %s\n%s\n", e.msg, canon);
  CHECK(rc == 0);
  CHECK(json_equal(*doc, again));
  json_decref(again);
  free(canon);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: ASan reports any read past size. */
  char *text = malloc(size ? size : 1);
  json_t *doc = NULL;

  CHECK(text);
  if (size) memcpy(text, data, size);
  one(k_notify_doc_load, text, size, &doc);
  if (doc) {
    static const char *const sets[] = {"{}", "{\"severity\":\"critical\",\"team\":\"payments\"}",
                                       "{\"id\":\"x\",\"hostname\":\"web-1\",\"env\":\"prod\"}"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
      json_t *labels = json_loads(sets[i], 0, NULL), *r = k_notify_route_of(doc, NULL, labels);
      CHECK(r);
      if (!json_is_null(r)) {
        json_t *route = json_array_get(json_object_get(doc, "routes"),
                                       (size_t)json_integer_value(json_object_get(r, "route")));
        CHECK(route);
        CHECK(json_array_size(json_object_get(r, "steps")) ==
              json_array_size(json_object_get(route, "steps")));
      }
      json_decref(r);
      json_decref(labels);
    }
    json_decref(doc);
    doc = NULL;
  }
  one(k_maint_doc_load, text, size, &doc);
  if (doc) {
    static const int64_t at[] = {0, 1795000000000, 1795000000000 + 86400000 * 3 + 12345};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
      int64_t until, next;
      if (k_maint_doc_active(doc, at[i], &until, &next)) {
        CHECK(until > at[i]);
        if (!json_is_null(json_object_get(doc, "start"))) {
          int64_t u2, n2;
          CHECK(k_maint_doc_active(doc, until - 1, &u2, &n2));
          CHECK(!k_maint_doc_active(doc, until, &u2, &n2));
        }
      } else if (next >= 0) {
        CHECK(next > at[i]);
      }
    }
    json_decref(doc);
  }
  free(text);
  return 0;
}
