/* promparams.c — the parameters of Prometheus' HTTP API as Prometheus reads
 * them: from the URL query and, for POST, from an
 * application/x-www-form-urlencoded body (Grafana posts its queries);
 * times as RFC 3339 or Unix seconds with a fraction; steps as seconds or
 * durations ("30s", "1m30s"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

static int hexv(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent- and plus-decodes s[0..n) into a new string; NULL on a bad
 * escape, a NUL byte or no memory. */
static char *form_decode(const char *s, size_t n) {
  char *o = malloc(n + 1);
  size_t j = 0;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '+') c = ' ';
    else if (c == '%') {
      int h, l;
      if (i + 2 >= n || (h = hexv(s[i + 1])) < 0 || (l = hexv(s[i + 2])) < 0) goto bad;
      c = (char)(h * 16 + l);
      i += 2;
    }
    if (!c) goto bad;
    o[j++] = c;
  }
  o[j] = '\0';
  return o;
bad:
  free(o);
  return NULL;
}

/* Adds value under key; keys ending in "[]" collect arrays.  KEEL_EINVAL
 * when key or value is not UTF-8 (jansson refuses it; running out of
 * memory, indistinguishable here, reads the same). */
static int put(json_t *o, const char *key, const char *value) {
  json_t *v = json_string(value), *a;
  size_t kl = strlen(key);
  if (!v) return KEEL_EINVAL;
  if (kl > 2 && !strcmp(key + kl - 2, "[]")) {
    if (!(a = json_object_get(o, key)) && (!(a = json_array()) || json_object_set_new(o, key, a))) {
      json_decref(v);
      return KEEL_EINVAL;
    }
    return json_array_append_new(a, v) ? KEEL_EINVAL : 0;
  }
  return json_object_set_new(o, key, v) ? KEEL_EINVAL : 0;
}

typedef struct qctx {
  json_t *o;
  int rc;
} qctx_t;

static enum MHD_Result visit(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  qctx_t *q = cls;
  (void)kind;
  return (q->rc = put(q->o, key, value ? value : "")) ? MHD_NO : MHD_YES;
}

int k_prom_params(k_req_t *req, json_t **out, keel_err_t *e) {
  qctx_t q = {json_object(), 0};
  const char *ct;
  *out = NULL;
  if (!q.o) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, visit, &q);
  if (q.rc) {
    json_decref(q.o);
    return keel_err_set(e, KEEL_EINVAL, "a query parameter is not valid UTF-8");
  }
  ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  if (req->body.len) {
    const char *p = req->body.data, *end = p + req->body.len;
    if (!ct || strncmp(ct, "application/x-www-form-urlencoded", 33)) {
      json_decref(q.o);
      return keel_err_set(e, KEEL_EINVAL, "a POST body must be application/x-www-form-urlencoded");
    }
    while (p < end) {
      const char *amp = memchr(p, '&', (size_t)(end - p)), *eq;
      const char *stop = amp ? amp : end;
      char *k = NULL, *v = NULL;
      int rc = 0;
      eq = memchr(p, '=', (size_t)(stop - p));
      if (stop > p) {
        k = form_decode(p, (size_t)((eq ? eq : stop) - p));
        v = eq ? form_decode(eq + 1, (size_t)(stop - eq - 1)) : strdup("");
        rc = k && v ? put(q.o, k, v) : KEEL_EINVAL;
      }
      free(k);
      free(v);
      if (rc) {
        json_decref(q.o);
        return keel_err_set(e, KEEL_EINVAL, "the form body is not valid (bad escape or UTF-8)");
      }
      p = stop + 1;
    }
  }
  *out = q.o;
  return 0;
}

int k_prom_time(const char *s, int64_t *ms) {
  char *end;
  double v;
  if (!s || !*s) return KEEL_EINVAL;
  if (!keel_time_parse(s, ms)) return 0;
  v = strtod(s, &end);
  if (*end || !isfinite(v) || v < -9.2e15 || v > 9.2e15) return KEEL_EINVAL;
  *ms = (int64_t)llround(v * 1000.0);
  return 0;
}

int k_prom_step(const char *s, int64_t *ms) {
  char *end;
  double v;
  if (!s || !*s) return KEEL_EINVAL;
  v = strtod(s, &end);
  if (!*end && isfinite(v)) {
    if (v <= 0 || v > 9.2e12) return KEEL_EINVAL;
    *ms = (int64_t)llround(v * 1000.0);
    return *ms > 0 ? 0 : KEEL_EINVAL;
  }
  if (keel_duration_parse(s, ms) || *ms <= 0) return KEEL_EINVAL;
  return 0;
}
