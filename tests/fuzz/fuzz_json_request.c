/* libFuzzer harness: keeld's JSON request decoders.
 *
 * The first byte picks the target, the rest is the request body (passed
 * with its exact length, not NUL-terminated, as MHD hands it over):
 *   0  k_decode_user_create      2  k_decode_token_create
 *   1  k_decode_user_update      3  keel_json_parse + keel_json_check + canonical form
 * On failure a decoder must return a negative code, set *out to NULL and
 * leave a non-empty message whose code matches; on success what it accepted
 * must satisfy everything the handlers downstream rely on. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/err.h"
#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

#include "fuzz_check.h"


/* A fixed "now" (2025-11-24T16:00:00Z) keeps runs reproducible. */
#define NOW_MS INT64_C(1764000000000)

static const keel_json_field_t generic_fields[] = {
    {"s", KEEL_JSON_STRING, 1, 8},     {"i", KEEL_JSON_INT, 0, 0},
    {"b", KEEL_JSON_BOOL, 0, 0},       {"o", KEEL_JSON_OBJECT, 0, 0},
    {"a", KEEL_JSON_ARRAY, 0, 3},      {"t", KEEL_JSON_STRING, 0, 0},
    {NULL, 0, 0, 0},
};

static void check_failed(int rc, const json_t *out, const keel_err_t *e) {
  CHECK(rc < 0);
  CHECK(out == NULL);
  CHECK(e->code == rc);
  CHECK(e->msg[0] != '\0');
  CHECK(memchr(e->msg, '\0', sizeof e->msg) != NULL);
}

/* String members are NUL-free and within their caps; types match. */
static void check_fields(const json_t *v, const keel_json_field_t *fields) {
  keel_err_t e = {0};
  CHECK(json_is_object(v));
  CHECK(keel_json_check(v, fields, &e) == 0); /* idempotent */
  for (const keel_json_field_t *f = fields; f->name; f++) {
    json_t *m = json_object_get(v, f->name);
    if (!m) {
      CHECK(!f->required);
      continue;
    }
    if (f->type == KEEL_JSON_STRING) {
      size_t max = f->max_len ? f->max_len : 4096;
      CHECK(json_is_string(m));
      CHECK(json_string_length(m) <= max);
      CHECK(strlen(json_string_value(m)) == json_string_length(m));
    }
  }
}

/* The canonical text re-parses to an equal value. */
static void check_canonical(const json_t *v) {
  char *text = keel_json_canonical(v);
  json_t *back = NULL;
  keel_err_t e = {0};
  CHECK(text);
  CHECK(keel_json_parse(text, strlen(text), &back, &e) == 0);
  CHECK(json_equal((json_t *)v, back));
  json_decref(back);
  free(text);
}

static void fuzz_user_create(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  keel_err_t e = {0};
  int rc = k_decode_user_create(body, len, &out, &e);
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  CHECK(out);
  CHECK(json_is_string(json_object_get(out, "name")));
  CHECK(k_iam_valid_name(keel_json_str(out, "name")));
  if (json_object_get(out, "role")) CHECK(k_iam_valid_role(keel_json_str(out, "role")));
  check_canonical(out);
  json_decref(out);
}

static void fuzz_user_update(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  keel_err_t e = {0};
  int rc = k_decode_user_update(body, len, &out, &e);
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  CHECK(out);
  CHECK(json_is_integer(json_object_get(out, "version")));
  if (json_object_get(out, "role")) CHECK(k_iam_valid_role(keel_json_str(out, "role")));
  check_canonical(out);
  json_decref(out);
}

static void fuzz_token_create(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  int64_t exp = -1, v;
  keel_err_t e = {0};
  const char *ttl, *at;
  int rc = k_decode_token_create(body, len, NOW_MS, &out, &exp, &e);
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  CHECK(out && json_is_object(out));
  ttl = keel_json_str(out, "ttl");
  at = keel_json_str(out, "expires_at");
  CHECK(!(ttl && at));
  if (ttl) {
    CHECK(keel_duration_parse(ttl, &v) == 0);
    CHECK(v > 0 && exp == NOW_MS + v);
  } else if (at) {
    CHECK(keel_time_parse(at, &v) == 0);
    CHECK(exp == v && exp > NOW_MS);
  } else {
    CHECK(exp == 0);
  }
  if (json_object_get(out, "user")) CHECK(json_is_string(json_object_get(out, "user")));
  if (json_object_get(out, "name")) CHECK(json_is_string(json_object_get(out, "name")));
  check_canonical(out);
  json_decref(out);
}

static void fuzz_generic(const char *body, size_t len) {
  json_t *v = (json_t *)1;
  keel_err_t e = {0};
  int rc = keel_json_parse(body, len, &v, &e);
  if (rc) {
    check_failed(rc, v, &e);
    return;
  }
  CHECK(v);
  check_canonical(v);
  memset(&e, 0, sizeof e);
  rc = keel_json_check(v, generic_fields, &e);
  if (rc) {
    CHECK(rc == KEEL_EINVAL && e.code == rc && e.msg[0]);
  } else {
    check_fields(v, generic_fields);
  }
  /* Anything a client sent may be sanitized for echoing. */
  if (json_is_object(v)) {
    const char *key;
    json_t *m;
    json_object_foreach(v, key, m) {
      if (json_is_string(m)) {
        char *s = strdup(json_string_value(m));
        size_t n = strlen(s);
        CHECK(s);
        keel_utf8_sanitize(s);
        CHECK(strlen(s) == n);
        free(s);
      }
    }
  }
  json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *body;
  size_t len;
  char *copy;

  if (size < 1) return 0;
  len = size - 1;
  /* An exact-size heap copy, so ASan flags any read past the body. */
  copy = malloc(len ? len : 1);
  CHECK(copy);
  if (len) memcpy(copy, data + 1, len);
  body = copy;
  switch (data[0] & 3) {
  case 0: fuzz_user_create(body, len); break;
  case 1: fuzz_user_update(body, len); break;
  case 2: fuzz_token_create(body, len); break;
  case 3: fuzz_generic(body, len); break;
  }
  free(copy);
  return 0;
}
