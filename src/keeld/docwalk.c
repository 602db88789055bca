/* docwalk.c — where a document validator is, and errors that say so. */
#include "docwalk.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keel/selector.h"
#include "keel/time.h"
#include "org/org.h"
#include "runbook/doc.h"

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

/* ---- scalar members ---------------------------------------------------------- */

int k_walk_text(k_walk_t *W, const json_t *s, size_t max, int what) {
  const char *t;
  size_t n;
  if (!json_is_string(s)) return k_walk_err(W, "expected a string");
  t = json_string_value(s);
  n = json_string_length(s);
  if (n > max) return k_walk_err(W, "longer than %zu bytes", max);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)t[i];
    if (!c) return k_walk_err(W, "contains a NUL byte");
    if (what == K_WALK_ANY || (c >= 0x20 && c != 0x7f)) continue;
    if (what == K_WALK_LINES && (c == '\t' || c == '\n' || c == '\r')) continue;
    return k_walk_err(W, "contains a control character");
  }
  return 0;
}

int k_walk_is(const json_t *s, const char *want) {
  return json_is_string(s) && json_string_length(s) == strlen(want) &&
         !strcmp(json_string_value(s), want);
}

int k_walk_enum(k_walk_t *W, const json_t *s, const char *const *vals) {
  char list[160] = "";
  size_t n = 0;
  for (const char *const *p = vals; *p; p++)
    if (k_walk_is(s, *p)) return 0;
  for (const char *const *p = vals; *p; p++)
    n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%s",
                          p == vals ? "" : ", ", *p);
  return k_walk_err(W, "expected one of %s", list);
}

int k_walk_get_text(k_walk_t *W, const json_t *obj, const char *key, int required, size_t max,
                    int what, json_t **out) {
  json_t *s = k_walk_member(obj, key);
  k_walk_mark_t m;
  int rc;
  *out = NULL;
  if (!s) return required ? k_walk_missing(W, key) : 0;
  m = k_walk_push_key(W, key);
  rc = k_walk_text(W, s, max, what);
  k_walk_pop(W, m);
  if (!rc) *out = s;
  return rc;
}

int k_walk_get_int(k_walk_t *W, const json_t *obj, const char *key, json_int_t min,
                   json_int_t max, json_int_t def, json_int_t *out) {
  json_t *v = k_walk_member(obj, key);
  k_walk_mark_t m;
  int rc = 0;
  *out = def;
  if (!v) return 0;
  m = k_walk_push_key(W, key);
  if (!json_is_integer(v)) rc = k_walk_err(W, "expected an integer");
  else if (json_integer_value(v) < min || json_integer_value(v) > max)
    rc = k_walk_err(W, "%lld is out of range: expected %lld to %lld",
                    (long long)json_integer_value(v), (long long)min, (long long)max);
  k_walk_pop(W, m);
  if (!rc) *out = json_integer_value(v);
  return rc;
}

/* "0", "0s", "00m", "0ms", ...: keel_duration_parse wants more than
 * nothing, but where a range starts at 0 a zero is a fine value. */
static int zero_duration(const char *t) {
  size_t z = strspn(t, "0");
  return z > 0 && (!t[z] || !strcmp(t + z, "ms") || (strchr("smhd", t[z]) && !t[z + 1]));
}

int k_walk_get_duration(k_walk_t *W, const json_t *obj, const char *key, const k_walk_range_t *r,
                        int required, int64_t def, int64_t *ms) {
  char kms[32], b[80];
  json_t *t = k_walk_member(obj, key), *n;
  k_walk_mark_t m;
  int rc = 0;

  snprintf(kms, sizeof kms, "%s_ms", key);
  n = k_walk_member(obj, kms);
  *ms = def;
  if (t && n) {
    m = k_walk_push_key(W, kms);
    rc = k_walk_err(W, "give %s or %s, not both", key, kms);
    k_walk_pop(W, m);
    return rc;
  }
  if (!t && !n) return required ? k_walk_missing(W, key) : 0;
  if (t) {
    m = k_walk_push_key(W, key);
    if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t))
      rc = k_walk_err(W, "expected a duration like 30s, 5m or 1h");
    else if (r->min == 0 && zero_duration(json_string_value(t)))
      *ms = 0;
    else if (keel_duration_parse(json_string_value(t), ms))
      rc = k_walk_err(W, "invalid duration '%s': expected e.g. 30s, 5m, 1h", k_walk_quote_json(b, t));
    else if (*ms < r->min || *ms > r->max)
      rc = k_walk_err(W, "'%s' is out of range: expected %s to %s", k_walk_quote_json(b, t), r->lo,
                      r->hi);
  } else {
    m = k_walk_push_key(W, kms);
    if (!json_is_integer(n)) rc = k_walk_err(W, "expected an integer (milliseconds)");
    else if ((*ms = json_integer_value(n)) < r->min || *ms > r->max)
      rc = k_walk_err(W, "%lld is out of range: expected %lld to %lld", (long long)*ms,
                      (long long)r->min, (long long)r->max);
  }
  k_walk_pop(W, m);
  return rc;
}

int k_walk_get_name(k_walk_t *W, const json_t *obj, const char *key, int required, json_t **out) {
  k_walk_mark_t m;
  char b[80];
  int rc;
  if ((rc = k_walk_get_text(W, obj, key, required, 256, K_WALK_LINE, out)) || !*out) return rc;
  m = k_walk_push_key(W, key);
  if (!k_runbook_name_ok(json_string_value(*out), json_string_length(*out)))
    rc = k_walk_err(W, "invalid name '%s': expected [a-z0-9][a-z0-9._-]{0,62}",
                    k_walk_quote_json(b, *out));
  k_walk_pop(W, m);
  if (rc) *out = NULL;
  return rc;
}

int k_walk_owner(k_walk_t *W, const json_t *doc, const k_org_t *org, json_t **app, json_t **team) {
  const char *kind;
  k_walk_mark_t m;
  char b[80];
  int rc;
  *app = *team = NULL;
  if ((rc = k_walk_get_name(W, doc, "application", 0, app)) ||
      (rc = k_walk_get_name(W, doc, "team", 0, team)))
    return rc;
  if (!*app && !*team) return k_walk_err(W, "expected application: NAME or team: NAME (the owner)");
  kind = *app ? "application" : "team";
  m = k_walk_push_key(W, "team");
  if (*app && *team) rc = k_walk_err(W, "give application or team, not both");
  k_walk_pop(W, m);
  if (rc || !org || !k_org_model(org)[0]) return rc;
  /* once an organization is applied, the owner is one of its objects */
  if (!k_org_object(org, kind, json_string_value(*app ? *app : *team), NULL)) {
    m = k_walk_push_key(W, kind);
    rc = k_walk_err(W, "no %s '%s' in the organization", kind, k_walk_quote_json(b, *app ? *app : *team));
    k_walk_pop(W, m);
  }
  return rc;
}

int k_walk_add_unique(k_walk_t *W, json_t *list, json_t *item) {
  const json_t *prev;
  size_t i;
  char b[80];
  json_array_foreach(list, i, prev)
    if (json_equal(prev, item)) return k_walk_err(W, "'%s' listed twice", k_walk_quote_json(b, item));
  return json_array_append(list, item) ? k_walk_oom(W) : 0;
}

int k_walk_selector(k_walk_t *W, const json_t *s, keel_buf_t *canon) {
  keel_selector_t *sel = NULL;
  keel_err_t se = {0};
  int rc = 0;
  if (keel_selector_parse(json_string_value(s), json_string_length(s), &sel, &se)) {
    /* the walker says where: "targets: invalid selector: column 5: ..." */
    const char *msg = !strncmp(se.msg, "selector: ", 10) ? se.msg + 10 : se.msg;
    rc = se.code == KEEL_ENOMEM ? k_walk_oom(W) : k_walk_err(W, "invalid selector: %s", msg);
  } else if (canon && keel_selector_format(sel, canon)) {
    rc = k_walk_oom(W);
  }
  keel_selector_free(sel);
  return rc;
}

void k_walk_owner_path(const json_t *doc, const char *what, char *out, size_t n) {
  const char *app = json_string_value(json_object_get(doc, "application"));
  const char *team = json_string_value(json_object_get(doc, "team"));
  const char *name = json_string_value(json_object_get(doc, "name"));
  snprintf(out, n, "%s/%s/%s/%s", app ? "app" : "team", app ? app : team ? team : "_", what,
           name ? name : "_");
}
