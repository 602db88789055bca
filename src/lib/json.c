#include "keel/json.h"
#include "keel/time.h"

#include <string.h>

int keel_json_parse(const char *buf, size_t len, json_t **out, keel_err_t *e) {
  json_error_t je;
  json_t *v;

  *out = NULL;
  if (len == 0)
    return keel_err_set(e, KEEL_EINVAL, "malformed JSON: empty body");
  /* DECODE_ANY so scalars parse (callers check the type and can say what
   * they expected); REJECT_DUPLICATES so {"a":1,"a":2} is not silently one
   * of the two. */
  v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
  if (!v)
    return keel_err_set(e, KEEL_EINVAL, "malformed JSON at line %d, column %d (byte %d): %s",
                        je.line, je.column, je.position, je.text);
  *out = v;
  return 0;
}

char *keel_json_canonical(const json_t *v) {
  return json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
}

static const char *type_name(keel_json_type_t t) {
  switch (t) {
  case KEEL_JSON_STRING: return "a string";
  case KEEL_JSON_INT: return "an integer";
  case KEEL_JSON_BOOL: return "a boolean";
  case KEEL_JSON_OBJECT: return "an object";
  case KEEL_JSON_ARRAY: return "an array";
  }
  return "?";
}

static int type_ok(const json_t *v, keel_json_type_t t) {
  switch (t) {
  case KEEL_JSON_STRING: return json_is_string(v);
  case KEEL_JSON_INT: return json_is_integer(v);
  case KEEL_JSON_BOOL: return json_is_boolean(v);
  case KEEL_JSON_OBJECT: return json_is_object(v);
  case KEEL_JSON_ARRAY: return json_is_array(v);
  }
  return 0;
}

int keel_json_check(const json_t *obj, const keel_json_field_t *fields, keel_err_t *e) {
  const keel_json_field_t *f;
  const char *key;
  json_t *v;

  if (!json_is_object(obj)) return keel_err_set(e, KEEL_EINVAL, "expected a JSON object");
  json_object_foreach((json_t *)obj, key, v) {
    for (f = fields; f->name; f++)
      if (!strcmp(f->name, key)) break;
    if (!f->name) {
      /* The key may hold anything a client sent: quote at most 64 bytes. */
      return keel_err_set(e, KEEL_EINVAL, "unknown field '%.64s'", key);
    }
    if (!type_ok(v, f->type))
      return keel_err_set(e, KEEL_EINVAL, "field '%s': expected %s", f->name, type_name(f->type));
    if (f->type == KEEL_JSON_STRING) {
      size_t max = f->max_len ? f->max_len : 4096;
      size_t n = json_string_length(v);
      if (n > max)
        return keel_err_set(e, KEEL_EINVAL, "field '%s': longer than %zu bytes", f->name, max);
      if (strlen(json_string_value(v)) != n)
        return keel_err_set(e, KEEL_EINVAL, "field '%s': contains a NUL character", f->name);
    } else if (f->type == KEEL_JSON_ARRAY && f->max_len && json_array_size(v) > f->max_len) {
      return keel_err_set(e, KEEL_EINVAL, "field '%s': more than %zu items", f->name, f->max_len);
    }
  }
  for (f = fields; f->name; f++)
    if (f->required && !json_object_get(obj, f->name))
      return keel_err_set(e, KEEL_EINVAL, "missing required field '%s'", f->name);
  return 0;
}

const char *keel_json_str(const json_t *obj, const char *key) {
  return json_string_value(json_object_get(obj, key));
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, <= U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p) {
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (p[0] >= 0xe0 && p[0] <= 0xef) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xe0 && p[1] < 0xa0) return 0;
    if (p[0] == 0xed && p[1] > 0x9f) return 0;
    return 3;
  }
  if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
    if (p[0] == 0xf0 && p[1] < 0x90) return 0;
    if (p[0] == 0xf4 && p[1] > 0x8f) return 0;
    return 4;
  }
  return 0;
}

char *keel_utf8_sanitize(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p) {
    size_t n = utf8_seq(p);
    if (n == 0 || (n == 1 && *p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7f) {
      *p++ = '?';
      continue;
    }
    /* U+0080..U+009F are C1 controls (0xc2 0x9b is CSI on some terminals):
     * text that reaches audit records and logs MUST NOT drive a terminal. */
    if (n == 2 && p[0] == 0xc2 && p[1] <= 0x9f) {
      p[0] = p[1] = '?';
      p += 2;
      continue;
    }
    p += n;
  }
  return s;
}

int keel_json_decode(const char *buf, size_t len, const keel_json_field_t *fields, json_t **out,
                     keel_err_t *e) {
  json_t *v = NULL;
  int rc;
  *out = NULL;
  if ((rc = keel_json_parse(buf, len, &v, e))) return rc;
  if ((rc = keel_json_check(v, fields, e))) {
    json_decref(v);
    return rc;
  }
  *out = v;
  return 0;
}

json_t *keel_json_changed_keys(const json_t *a, const json_t *b) {
  json_t *f = json_array(), *v;
  const char *k;
  json_object_foreach((json_t *)b, k, v) if (!json_equal(v, json_object_get(a, k)))
      json_array_append_new(f, json_string(k));
  json_object_foreach((json_t *)a, k, v) if (!json_object_get(b, k))
      json_array_append_new(f, json_string(k));
  return f;
}

json_t *keel_json_time(int64_t ms) {
  char ts[KEEL_TIME_STRLEN];
  if (ms <= 0) return json_null();
  keel_time_format(ts, ms);
  return json_string(ts);
}
