/* libFuzzer harness: the AutomationRule document (automation/doc.h) and
 * its conditions (automation/cond.h).
 *
 * The first byte picks what the rest is:
 *   even  an AutomationRule document (YAML or JSON), with fuzz_doc.h's
 *         checks: an error is KEEL_EINVAL / KEEL_ETOOBIG / KEEL_ENOMEM with
 *         a one-line message naming the document; on success the
 *         normalized form, as canonical JSON, validates to an equal
 *         document.
 *   odd   one condition.  An error is KEEL_EINVAL / KEEL_ENOMEM with one
 *         line "column N: ..." (N within the text + 1); on success the
 *         canonical text parses to a condition with the same canonical
 *         text and the same verdict on a fixed event, and evaluating
 *         never reads past the event. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "automation/cond.h"
#include "automation/doc.h"
#include "keel/err.h"
#include "keel/json.h"

#include "fuzz_doc.h"

#define NAME "rule.yaml"

/* libfyaml 0.7.12 leaks a text buffer building some single-quoted scalars
 * (see fuzz_org_doc.c); any leak of our own still fails the run. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfyaml.so\n"; }

static void one_line(const keel_err_t *e, int rc) {
  CHECK(e->code == rc && e->msg[0]);
  CHECK(!strchr(e->msg, '\n') && !strchr(e->msg, '\r'));
}

static void condition(const char *text, size_t n, const json_t *view) {
  k_cond_t *c = NULL, *c2 = NULL;
  keel_buf_t a, b;
  keel_err_t e = {0};
  int rc = k_cond_parse(text, n, &c, &e);
  if (rc) {
    unsigned long col = 0;
    CHECK(!c && (rc == KEEL_EINVAL || rc == KEEL_ENOMEM));
    one_line(&e, rc);
    CHECK(rc == KEEL_ENOMEM || sscanf(e.msg, "column %lu:", &col) == 1);
    CHECK(rc == KEEL_ENOMEM || (col >= 1 && col <= n + 1));
    return;
  }
  keel_buf_init(&a, 1 << 16);
  keel_buf_init(&b, 1 << 16);
  CHECK(k_cond_format(c, &a) == 0);
  rc = k_cond_parse(a.data, a.len, &c2, &e);
  if (rc) fprintf(stderr, "canonical text refused: %s\n%s\n", e.msg, a.data);
  CHECK(rc == 0);
  CHECK(k_cond_format(c2, &b) == 0 && a.len == b.len && !memcmp(a.data, b.data, a.len));
  CHECK(k_cond_eval(c, view) == k_cond_eval(c2, view));
  keel_buf_free(&a);
  keel_buf_free(&b);
  k_cond_free(c);
  k_cond_free(c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static json_t *view;
  char *text;
  if (!size) return 0;
  if (!(data[0] & 1)) {
    json_decref(fuzz_doc(k_auto_doc_load, NAME, data + 1, size - 1));
    return 0;
  }
  if (!view)
    view = json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:i,s:f,s:b,s:n,s:[s],s:{s:s,s:s}}}", "id", "evt_1",
                     "type", "check.result", "source", "agent/agt_1", "subject", "agt_1/disk",
                     "data", "status", "CRITICAL", "exit_code", 2, "value", 91.5, "ok", 0,
                     "none", "list", "a", "labels", "instance", "web-1", "service", "web");
  /* an exact-size copy: ASan reports any read past the end */
  text = malloc(size - 1 ? size - 1 : 1);
  CHECK(text && view);
  memcpy(text, data + 1, size - 1);
  condition(text, size - 1, view);
  free(text);
  return 0;
}
