/* docwalk.c — where a document validator is, and errors that say so. */
#include "docwalk.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int k_walk_err(k_walk_t *V, const char *fmt, ...) {
  char what[224], where[64] = "";
  int line, col;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (!V->name) return keel_err_set(V->e, KEEL_EINVAL, "%s: %s", V->dot, what);
  if (!keel_yaml_pos_lookup(V->pos, V->ptr, &line, &col))
    snprintf(where, sizeof where, ":%d:%d", line, col);
  if (V->dlen)
    return keel_err_set(V->e, KEEL_EINVAL, "%s%s: %s: %s", V->name, where, V->dot, what);
  return keel_err_set(V->e, KEEL_EINVAL, "%s%s: %s", V->name, where, what);
}

int k_walk_oom(k_walk_t *V) {
  return keel_err_set(V->e, KEEL_ENOMEM, "%s: out of memory", V->name ? V->name : "document");
}

const char *k_walk_quote(char buf[80], const char *s, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j < 64; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  if (j == 64 && n > 64) {
    while (j > 0 && ((unsigned char)buf[j - 1] & 0xc0) == 0x80) j--;
    if (j > 0 && ((unsigned char)buf[j - 1] & 0xc0) == 0xc0) j--;
    memcpy(buf + j, "...", 3);
    j += 3;
  }
  buf[j] = '\0';
  return buf;
}

const char *k_walk_quote_json(char buf[80], const json_t *s) {
  return k_walk_quote(buf, json_string_value(s), json_string_length(s));
}

k_walk_mark_t k_walk_push_keyn(k_walk_t *V, const char *key, size_t klen) {
  k_walk_mark_t m = {V->plen, V->dlen};
  char b[80];
  if (V->plen + 1 < sizeof V->ptr) V->ptr[V->plen++] = '/';
  for (size_t i = 0; i < klen && V->plen + 3 < sizeof V->ptr; i++) {
    if (key[i] == '~' || key[i] == '/') {
      V->ptr[V->plen++] = '~';
      V->ptr[V->plen++] = key[i] == '~' ? '0' : '1';
    } else {
      V->ptr[V->plen++] = key[i];
    }
  }
  V->ptr[V->plen] = '\0';
  V->dlen += (size_t)snprintf(V->dot + V->dlen, sizeof V->dot - V->dlen, "%s%s",
                              V->dlen ? "." : "", k_walk_quote(b, key, klen));
  if (V->dlen >= sizeof V->dot) V->dlen = sizeof V->dot - 1;
  return m;
}

k_walk_mark_t k_walk_push_key(k_walk_t *V, const char *key) {
  return k_walk_push_keyn(V, key, strlen(key));
}

k_walk_mark_t k_walk_push_idx(k_walk_t *V, size_t i) {
  k_walk_mark_t m = {V->plen, V->dlen};
  V->plen += (size_t)snprintf(V->ptr + V->plen, sizeof V->ptr - V->plen, "/%zu", i);
  if (V->plen >= sizeof V->ptr) V->plen = sizeof V->ptr - 1;
  V->dlen += (size_t)snprintf(V->dot + V->dlen, sizeof V->dot - V->dlen, "[%zu]", i);
  if (V->dlen >= sizeof V->dot) V->dlen = sizeof V->dot - 1;
  return m;
}

void k_walk_pop(k_walk_t *V, k_walk_mark_t m) {
  V->plen = m.plen;
  V->ptr[m.plen] = '\0';
  V->dlen = m.dlen;
  V->dot[m.dlen] = '\0';
}

int k_walk_check_map(k_walk_t *V, const json_t *obj, const char *const *allowed) {
  const char *key;
  json_t *val;
  if (!json_is_object(obj)) return k_walk_err(V, "expected a mapping");
  json_object_foreach((json_t *)obj, key, val) {
    const char *const *a;
    size_t klen;
    for (a = allowed; *a; a++)
      if (!strcmp(*a, key)) break;
    klen = json_object_iter_key_len(json_object_key_to_iter(key));
    if (!*a || klen != strlen(key)) {
      /* push_keyn quotes at most 64 bytes of it without control characters. */
      k_walk_mark_t m = k_walk_push_keyn(V, key, klen);
      int rc = k_walk_err(V, "unknown field");
      k_walk_pop(V, m);
      return rc;
    }
  }
  return 0;
}

json_t *k_walk_member(const json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  return json_is_null(v) ? NULL : v;
}

int k_walk_missing(k_walk_t *V, const char *key) {
  k_walk_mark_t m = k_walk_push_key(V, key);
  int rc = k_walk_err(V, "required field is missing");
  k_walk_pop(V, m);
  return rc;
}


int k_walk_load(const char *name, const char *buf, size_t len, k_walk_validate_fn validate,
                json_t **out, keel_err_t *e) {
  json_t *doc = NULL;
  keel_yaml_pos_t *pos = NULL;
  int rc;

  *out = NULL;
  if ((rc = keel_yaml_load(name, buf, len, &doc, &pos, e))) goto out;
  rc = validate(name, doc, pos, out, e);
out:
  json_decref(doc);
  keel_yaml_pos_free(pos);
  return rc;
}

int k_walk_head(k_walk_t *W, const json_t *doc, const char *const *allowed, const char *kind) {
  const json_t *k;
  k_walk_mark_t m;
  int rc = 0;
  if (!json_is_object(doc)) return k_walk_err(W, "expected a mapping (kind: %s)", kind);
  if ((rc = k_walk_check_map(W, doc, allowed))) return rc;
  if (!(k = k_walk_member(doc, "kind"))) return k_walk_missing(W, "kind");
  m = k_walk_push_key(W, "kind");
  if (!json_is_string(k) || json_string_length(k) != strlen(kind) ||
      strcmp(json_string_value(k), kind))
    rc = k_walk_err(W, "expected %s", kind);
  k_walk_pop(W, m);
  return rc;
}
