/* doc_testutil.h — helpers of the document validators' unit tests: load a
 * document that must validate, and check the exact message of one that
 * must not (mismatches are counted, so one run shows them all; a test ends
 * with dt_done()).  Include after cmocka.h; define DT_LOAD (a
 * k_walk_validate-style loader: name, buf, len, out, e) and DT_NAME (the
 * document's name in messages) first. */
#ifndef DOC_TESTUTIL_H
#define DOC_TESTUTIL_H

#include <string.h>

#include <jansson.h>

#include "keel/err.h"

static int dt_failures;

static inline json_t *load_ok(const char *text) {
  json_t *v = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = DT_LOAD(DT_NAME, text, strlen(text), &v, &e);
  if (rc) fail_msg("load = %d: %s\n%s", rc, e.msg, text);
  assert_non_null(v);
  return v;
}

/* want NULL: only that it is refused. */
static inline void expect_error(const char *text, const char *want) {
  json_t *v = (json_t *)0x1;
  keel_err_t e = {0};
  int rc = DT_LOAD(DT_NAME, text, strlen(text), &v, &e);
  if (rc != KEEL_EINVAL) {
    print_error("load = %d (%s), want KEEL_EINVAL\n%s\n", rc, e.msg, text);
    dt_failures++;
    if (!rc) json_decref(v);
    return;
  }
  assert_null(v);
  if (want && strcmp(e.msg, want)) {
    print_error("\n  got  %s\n  want %s\n%s\n", e.msg, want, text);
    dt_failures++;
  }
}

static inline void done(void) {
  int n = dt_failures;
  dt_failures = 0;
  if (n) fail_msg("%d message(s) differ", n);
}

#endif
