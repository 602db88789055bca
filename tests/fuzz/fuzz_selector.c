/* libFuzzer harness: keel/selector.h.
 *
 * The whole input is the text (no mode byte, so seeds are plain selectors)
 * and goes to both keel_selector_parse and keel_tags_parse, as exactly size
 * bytes with no NUL terminator.  Beyond not crashing:
 *   - selector parse ok -> format -> parse ok -> format equal; the canonical
 *     text is no longer than the input; both selectors match a fixed object
 *     alike, by callback and by JSON;
 *   - errors are KEEL_EINVAL (or KEEL_ENOMEM) with a one-line message;
 *   - every tag keel_tags_parse returns passes keel_tag_check, and the tag
 *     list written back as "k=v,..." parses to an equal object. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/selector.h"


#include "fuzz_check.h"

static const char *const tags_kv[][2] = {
    {"env", "prod"}, {"role", "web"}, {"empty", ""}, {"a.b/c-d", "x:y@z+1"},
    {"ID", "upper"}, {"in", "notin"}, {"k", "v"},
};

static const char *get(void *ud, const char *key) {
  (void)ud;
  CHECK(strcmp(key, "id") && strcmp(key, "hostname")); /* never asked for these */
  for (size_t i = 0; i < sizeof tags_kv / sizeof tags_kv[0]; i++)
    if (!strcmp(tags_kv[i][0], key)) return tags_kv[i][1];
  return NULL;
}

static void check_error(int rc, const keel_err_t *e, const char *prefix) {
  CHECK(rc == KEEL_EINVAL || rc == KEEL_ENOMEM);
  CHECK(e->code == rc);
  CHECK(e->msg[0] != '\0');
  CHECK(!strncmp(e->msg, prefix, strlen(prefix)));
  CHECK(strlen(e->msg) > strlen(prefix));
  CHECK(!strchr(e->msg, '\n') && !strchr(e->msg, '\r'));
}

static void fuzz_selector(const char *text, size_t size, const json_t *tags) {
  keel_selector_t *s1 = (keel_selector_t *)1, *s2 = NULL;
  keel_buf_t f1, f2;
  keel_err_t e = {0};
  int rc;

  keel_buf_init(&f1, 1 << 20);
  keel_buf_init(&f2, 1 << 20);
  rc = keel_selector_parse(text, size, &s1, &e);
  if (rc) {
    CHECK(s1 == NULL);
    check_error(rc, &e, "selector: ");
    goto out;
  }
  CHECK(s1 != NULL);
  CHECK(keel_selector_format(s1, &f1) == 0);
  CHECK(f1.len <= size);
  rc = keel_selector_parse(f1.data ? f1.data : "", f1.len, &s2, &e);
  if (rc) fprintf(stderr, "canonical \"%s\" does not parse: %s\n", f1.data, e.msg);
  CHECK(rc == 0);
  CHECK(keel_selector_format(s2, &f2) == 0);
  CHECK(f1.len == f2.len);
  CHECK(f1.len == 0 || !memcmp(f1.data, f2.data, f1.len));
  {
    static const char *const ids[] = {"agent-7", NULL, "", "k"};
    static const char *const hosts[] = {"web-01.example.com", "", NULL, "v"};
    for (size_t i = 0; i < 4; i++) {
      int m1 = keel_selector_match(s1, ids[i], hosts[i], get, NULL);
      int m2 = keel_selector_match(s2, ids[i], hosts[i], get, NULL);
      int mj = keel_selector_match_json(s1, ids[i], hosts[i], tags);
      CHECK(m1 == 0 || m1 == 1);
      CHECK(m1 == m2 && m1 == mj);
    }
    /* No tags at all: also never crashes; both forms agree. */
    CHECK(keel_selector_match(s1, "a", "h", NULL, NULL) ==
          keel_selector_match_json(s2, "a", "h", NULL));
  }
out:
  keel_selector_free(s1 == (keel_selector_t *)1 ? NULL : s1);
  keel_selector_free(s2);
  keel_buf_free(&f1);
  keel_buf_free(&f2);
}

static void fuzz_tags(const char *text, size_t size) {
  json_t *o = (json_t *)1, *back = NULL;
  keel_err_t e = {0};
  keel_buf_t b;
  const char *k;
  json_t *v;
  int rc = keel_tags_parse(text, size, &o, &e);

  if (rc) {
    CHECK(o == NULL);
    check_error(rc, &e, "tags: ");
    return;
  }
  CHECK(json_is_object(o));
  CHECK(json_object_size(o) <= KEEL_TAGS_MAX);
  keel_buf_init(&b, 1 << 20);
  json_object_foreach(o, k, v) {
    keel_err_t te = {0};
    CHECK(json_is_string(v));
    if (keel_tag_check(k, json_string_value(v), &te)) {
      fprintf(stderr, "tag '%s'='%s' rejected: %s\n", k, json_string_value(v), te.msg);
      CHECK(0);
    }
    CHECK(keel_buf_printf(&b, "%s%s=%s", b.len ? "," : "", k, json_string_value(v)) == 0);
  }
  CHECK(b.len <= size);
  CHECK(keel_tags_parse(b.data ? b.data : "", b.len, &back, &e) == 0);
  CHECK(json_equal(o, back));
  json_decref(back);
  json_decref(o);
  keel_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: ASan reports any read past size. */
  char *text = malloc(size ? size : 1);
  json_t *tags = json_object();
  CHECK(text && tags);
  if (size) memcpy(text, data, size);
  for (size_t i = 0; i < sizeof tags_kv / sizeof tags_kv[0]; i++)
    json_object_set_new(tags, tags_kv[i][0], json_string(tags_kv[i][1]));
  fuzz_selector(text, size, tags);
  fuzz_tags(text, size);
  json_decref(tags);
  free(text);
  return 0;
}
