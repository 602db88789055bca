/* YAML -> jansson on libfyaml's event stream.
 *
 * Events rather than fy_document: we decide every scalar's type ourselves
 * (core schema), see each alias before it is expanded (so the caps hold
 * before any memory is spent), and report duplicate keys with both lines,
 * none of which the document API lets us do. */
#include "keel/yaml.h"
#include "keel/grow.h"

#include <errno.h>
#include <inttypes.h>
#include <libfyaml.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The position map mirrors the document: every node is a jansson array
 * [line, col] or, for a collection, [line, col, children] where children is
 * an object (mapping) or array (sequence) of such nodes.  jansson's hash
 * gives the lookups; memory is bounded by the source (aliases get no
 * children). */
struct keel_yaml_pos {
  json_t *root;
};

#define TAG_PREFIX "tag:yaml.org,2002:"

typedef struct frame {
  json_t *val;      /* borrowed from the parent (or the root) */
  json_t *pkids;    /* position children, borrowed likewise */
  json_t *klines;   /* mappings: key -> line of that key (owned) */
  int is_map;
  char *key;        /* mappings: the key awaiting its value (owned) */
  size_t key_len;
  int key_line, key_col;
  size_t nodes_at_start; /* for the anchor's expanded size */
  int height;            /* collections below this one, deepest branch */
  char *anchor;          /* owned; registered when the node ends */
} frame_t;

typedef struct anchor {
  json_t *val; /* owned */
  size_t nodes;
  int height;  /* 0 for a scalar */
} anchor_t;

typedef struct loader {
  const char *name;
  keel_err_t *e;
  frame_t stack[KEEL_YAML_MAX_DEPTH + 1];
  int depth;
  json_t *root;
  json_t *proot;
  size_t nodes;
  int line, col; /* last mark seen (1-based): for events without one */
  json_t *anchors; /* name -> index into avec */
  anchor_t *avec;
  size_t an, acap;
} loader_t;

static int fail(loader_t *L, int code, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(loader_t *L, int code, int line, int col, const char *fmt, ...) {
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return keel_err_set(L->e, code, "%s:%d:%d: %s", L->name, line, col, what);
}

/* Bytes of a scalar or tag quoted in a message: enough to recognise it,
 * and never a control character that would break the one-line rule. */
static void quote(char *dst, size_t cap, const char *s, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 4 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    dst[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  if (n && j + 4 >= cap) {
    /* Do not cut a UTF-8 sequence in half. */
    while (j > 0 && ((unsigned char)dst[j - 1] & 0xc0) == 0x80) j--;
    if (j > 0 && ((unsigned char)dst[j - 1] & 0xc0) == 0xc0) j--;
    memcpy(dst + j, "...", 3);
    j += 3;
  }
  dst[j] = '\0';
}

/* First invalid UTF-8 byte (RFC 3629: no overlongs, surrogates or > U+10FFFF),
 * with its 1-based line and column (in characters). 0 when valid. */
static int utf8_check(const char *buf, size_t len, int *line, int *col) {
  const unsigned char *s = (const unsigned char *)buf;
  size_t i = 0;
  *line = 1;
  *col = 1;
  while (i < len) {
    unsigned char c = s[i];
    size_t n;
    unsigned cp;
    if (c < 0x80) {
      if (c == '\n') {
        (*line)++;
        *col = 1;
      } else {
        (*col)++;
      }
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07;
    else return -1;
    if (len - i <= n) return -1;
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return -1;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return -1;
    i += n + 1;
    (*col)++;
  }
  return 0;
}

/* ---- scalars ----------------------------------------------------------- */

static int is_null(const char *s, size_t n) {
  return n == 0 || (n == 1 && s[0] == '~') ||
         (n == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

/* 1 true, 0 false, -1 neither. */
static int bool_of(const char *s, size_t n) {
  if (n == 4 && (!memcmp(s, "true", 4) || !memcmp(s, "True", 4) || !memcmp(s, "TRUE", 4)))
    return 1;
  if (n == 5 && (!memcmp(s, "false", 5) || !memcmp(s, "False", 5) || !memcmp(s, "FALSE", 5)))
    return 0;
  return -1;
}

static int all_in(const char *s, size_t n, const char *set) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!s[i] || !strchr(set, s[i])) return 0;
  return 1;
}

/* Core-schema integer: 1 and *v when it is one and fits int64; 0 when it is
 * not an integer; -1 when it is one but out of range. */
static int int_of(const char *s, size_t n, int64_t *v) {
  char tmp[80];
  int base = 10;
  size_t off = 0;
  if (n > 2 && s[0] == '0' && s[1] == 'x' && all_in(s + 2, n - 2, "0123456789abcdefABCDEF"))
    base = 16, off = 2;
  else if (n > 2 && s[0] == '0' && s[1] == 'o' && all_in(s + 2, n - 2, "01234567"))
    base = 8, off = 2;
  else if (!(all_in(s, n, "0123456789") ||
             (n > 1 && (s[0] == '-' || s[0] == '+') && all_in(s + 1, n - 1, "0123456789"))))
    return 0;
  if (n - off >= sizeof tmp) return -1; /* digits enough to overflow anything */
  memcpy(tmp, s + off, n - off);
  tmp[n - off] = '\0';
  errno = 0;
  if (base == 10) {
    char *end;
    long long x = strtoll(tmp, &end, 10);
    if (errno == ERANGE) return -1;
    *v = x;
  } else {
    char *end;
    unsigned long long x = strtoull(tmp, &end, base);
    if (errno == ERANGE || x > INT64_MAX) return -1;
    *v = (int64_t)x;
  }
  return 1;
}

static size_t digits(const char *s, size_t n) {
  size_t i = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  return i;
}

/* Core-schema float: 1 (*v set), 2 for .inf/.nan forms, 0 when not one.
 * [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int float_of(const char *s, size_t n, double *v) {
  size_t i = 0, d;
  char tmp[400];
  const char *r = s;
  size_t rn = n;
  if (rn && (r[0] == '-' || r[0] == '+')) r++, rn--;
  if (rn == 4 && (!memcmp(r, ".inf", 4) || !memcmp(r, ".Inf", 4) || !memcmp(r, ".INF", 4)))
    return 2;
  if (n == 4 && (!memcmp(s, ".nan", 4) || !memcmp(s, ".NaN", 4) || !memcmp(s, ".NAN", 4)))
    return 2;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  if (i < n && s[i] == '.') {
    i++;
    d = digits(s + i, n - i);
    if (!d) return 0;
    i += d;
  } else {
    d = digits(s + i, n - i);
    if (!d) return 0;
    i += d;
    if (i < n && s[i] == '.') {
      i++;
      i += digits(s + i, n - i);
    }
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    d = digits(s + i, n - i);
    if (!d) return 0;
    i += d;
  }
  if (i != n) return 0;
  if (n >= sizeof tmp) return 2; /* absurdly long: treat like an unrepresentable number */
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  *v = strtod(tmp, NULL);
  if (!isfinite(*v)) return 2;
  return 1;
}

/* The value of one scalar event.  tag is the resolved tag text (NULL when
 * none), plain whether the style is plain. */
static int scalar_value(loader_t *L, const char *s, size_t n, const char *tag, size_t tagn,
                        int plain, int line, int col, int tline, int tcol, json_t **out) {
  char q[72];
  const char *t = NULL; /* core tag suffix, NULL for "!" or none */
  int64_t iv;
  double dv;
  int r;

  *out = NULL;
  if (tag && !(tagn == 1 && tag[0] == '!')) {
    size_t pl = sizeof TAG_PREFIX - 1;
    if (tagn > pl && !memcmp(tag, TAG_PREFIX, pl)) t = tag + pl;
    if (!t || !((tagn - pl == 3 && !memcmp(t, "str", 3)) || (tagn - pl == 3 && !memcmp(t, "int", 3)) ||
                (tagn - pl == 4 && !memcmp(t, "bool", 4)) || (tagn - pl == 4 && !memcmp(t, "null", 4)) ||
                (tagn - pl == 5 && !memcmp(t, "float", 5)))) {
      quote(q, sizeof q, tag, tagn);
      return fail(L, KEEL_EINVAL, tline ? tline : line, tline ? tcol : col,
                  "unsupported tag '%s' on a scalar", q);
    }
  } else if (tag || !plain) {
    t = "str";
  }

  if (t && !strncmp(t, "str", 3)) goto string;
  if (!t || !strncmp(t, "null", 4)) {
    if (is_null(s, n)) {
      *out = json_null();
      return 0;
    }
    if (t) goto bad;
  }
  if (!t || !strncmp(t, "bool", 4)) {
    r = bool_of(s, n);
    if (r >= 0) {
      *out = json_boolean(r);
      return 0;
    }
    if (t) goto bad;
  }
  if (!t || !strncmp(t, "int", 3)) {
    r = int_of(s, n, &iv);
    if (r == 1) {
      *out = json_integer(iv);
      return *out ? 0 : fail(L, KEEL_ENOMEM, line, col, "out of memory");
    }
    if (r < 0) {
      quote(q, sizeof q, s, n);
      return fail(L, KEEL_EINVAL, line, col, "integer '%s' out of range (64-bit)", q);
    }
    if (t) goto bad;
  }
  if (!t || !strncmp(t, "float", 5)) {
    r = float_of(s, n, &dv);
    if (r == 0 && t && int_of(s, n, &iv) == 1) r = 1, dv = (double)iv; /* !!float 0x10 */
    if (r == 1) {
      *out = json_real(dv);
      return *out ? 0 : fail(L, KEEL_ENOMEM, line, col, "out of memory");
    }
    if (r == 2) {
      quote(q, sizeof q, s, n);
      return fail(L, KEEL_EINVAL, line, col, "number '%s' cannot be represented in JSON", q);
    }
    if (t) goto bad;
  }
string:
  *out = json_stringn(s, n);
  if (!*out) return fail(L, KEEL_ENOMEM, line, col, "out of memory");
  return 0;
bad:
  quote(q, sizeof q, s, n);
  return fail(L, KEEL_EINVAL, line, col, "'%s' is not a valid !!%s", q, t);
}

/* ---- tree building ----------------------------------------------------- */

static json_t *pos_node(int line, int col, json_t *kids) {
  json_t *p = json_array();
  if (!p) goto fail;
  if (json_array_append_new(p, json_integer(line)) || json_array_append_new(p, json_integer(col)))
    goto fail;
  if (kids && json_array_append(p, kids)) goto fail;
  return p;
fail:
  json_decref(p);
  return NULL;
}

/* Counts one node and checks the cap (more for an expanded alias). */
static int count(loader_t *L, size_t n, int line, int col) {
  if (n > KEEL_YAML_MAX_NODES - L->nodes)
    return fail(L, KEEL_ETOOBIG, line, col,
                "document too large: more than %d nodes after alias expansion",
                KEEL_YAML_MAX_NODES);
  L->nodes += n;
  return 0;
}

/* Attaches v (stolen) with position node p (stolen) under the current
 * frame, or as the root. */
static int attach(loader_t *L, json_t *v, json_t *p, int line, int col) {
  frame_t *f = L->depth ? &L->stack[L->depth - 1] : NULL;
  int rc = 0;

  if (!v || !p) {
    rc = fail(L, KEEL_ENOMEM, line, col, "out of memory");
    goto out;
  }
  if (!f) {
    L->root = v;
    L->proot = p;
    return 0;
  }
  if (f->is_map) {
    if (json_object_setn_new(f->val, f->key, f->key_len, v) ||
        json_object_setn_new(f->pkids, f->key, f->key_len, p)) {
      v = p = NULL;
      rc = fail(L, KEEL_ENOMEM, line, col, "out of memory");
      goto out;
    }
    free(f->key);
    f->key = NULL;
  } else {
    if (json_array_append_new(f->val, v) || json_array_append_new(f->pkids, p)) {
      v = p = NULL;
      rc = fail(L, KEEL_ENOMEM, line, col, "out of memory");
      goto out;
    }
  }
  return 0;
out:
  json_decref(v);
  json_decref(p);
  return rc;
}

/* Is the current frame a mapping waiting for a key? */
static int want_key(const loader_t *L) {
  return L->depth && L->stack[L->depth - 1].is_map && !L->stack[L->depth - 1].key;
}

static int set_anchor(loader_t *L, const char *name, json_t *v, size_t nodes, int height,
                      int line, int col) {
  json_t *idx;
  anchor_t *nv = keel_grow(L->avec, &L->acap, L->an, sizeof *nv, 16);
  if (!nv) return fail(L, KEEL_ENOMEM, line, col, "out of memory");
  L->avec = nv;
  /* A later anchor of the same name shadows the earlier (YAML 1.2 6.9.2). */
  idx = json_integer((json_int_t)L->an);
  if (!idx || json_object_set_new(L->anchors, name, idx))
    return fail(L, KEEL_ENOMEM, line, col, "out of memory");
  L->avec[L->an].val = json_incref(v);
  L->avec[L->an].nodes = nodes;
  L->avec[L->an].height = height;
  L->an++;
  return 0;
}

static void note_height(loader_t *L, int h) {
  if (L->depth && L->stack[L->depth - 1].height < h) L->stack[L->depth - 1].height = h;
}

static char *anchor_name(struct fy_event *ev) {
  struct fy_token *a = fy_event_get_anchor_token(ev);
  size_t n;
  const char *s;
  char *r;
  if (!a) return NULL;
  s = fy_token_get_text(a, &n);
  if (!s) return NULL;
  r = malloc(n + 1);
  if (r) {
    memcpy(r, s, n);
    r[n] = '\0';
  }
  return r;
}

static int on_key(loader_t *L, const char *s, size_t n, int line, int col) {
  frame_t *f = &L->stack[L->depth - 1];
  json_t *prev;
  char q[72];

  if (memchr(s, '\0', n)) return fail(L, KEEL_EINVAL, line, col, "mapping key contains a NUL character");
  prev = json_object_getn(f->klines, s, n);
  if (prev) {
    quote(q, sizeof q, s, n);
    return fail(L, KEEL_EINVAL, line, col, "duplicate key '%s' (lines %d and %d)", q,
                (int)json_integer_value(prev), line);
  }
  if (json_object_setn_new(f->klines, s, n, json_integer(line)))
    return fail(L, KEEL_ENOMEM, line, col, "out of memory");
  f->key = malloc(n + 1);
  if (!f->key) return fail(L, KEEL_ENOMEM, line, col, "out of memory");
  memcpy(f->key, s, n);
  f->key[n] = '\0';
  f->key_len = n;
  f->key_line = line;
  f->key_col = col;
  return 0;
}

static int on_event(loader_t *L, struct fy_event *ev, int *docs) {
  const struct fy_mark *m = fy_event_start_mark(ev);
  struct fy_token *tok = fy_event_get_token(ev);
  struct fy_token *tagt = fy_event_get_tag_token(ev);
  const char *tag = NULL;
  size_t tagn = 0;
  int line, col, tline = 0, tcol = 0, rc = 0;
  char *anchor = NULL;
  char q[72];

  if (m && m->line >= 0) {
    L->line = m->line + 1;
    L->col = m->column + 1;
    /* libfyaml marks an alias at its name and a quoted scalar at its first
     * character; people count from the '*' or the quote, which always
     * stand just before on the same line. */
    if (L->col > 1 && (ev->type == FYET_ALIAS ||
                       (ev->type == FYET_SCALAR && tok &&
                        (fy_token_scalar_style(tok) == FYSS_SINGLE_QUOTED ||
                         fy_token_scalar_style(tok) == FYSS_DOUBLE_QUOTED))))
      L->col--;
  } else if (ev->type == FYET_SCALAR && want_key(L) == 0 && L->depth &&
             L->stack[L->depth - 1].is_map) {
    /* An empty value has no mark: its key's position is the useful one. */
    L->line = L->stack[L->depth - 1].key_line;
    L->col = L->stack[L->depth - 1].key_col;
  }
  line = L->line;
  col = L->col;
  if (tagt) {
    const struct fy_mark *tm = fy_token_start_mark(tagt);
    tag = fy_token_get_text(tagt, &tagn);
    /* Tag errors point at the tag: that is what to fix. */
    if (tm && tm->line >= 0) {
      tline = tm->line + 1;
      tcol = tm->column + 1;
    }
  }

  switch (ev->type) {
  case FYET_DOCUMENT_START:
    if (++*docs > 1) rc = fail(L, KEEL_EINVAL, line, col, "more than one document");
    break;
  case FYET_MAPPING_START:
  case FYET_SEQUENCE_START: {
    int is_map = ev->type == FYET_MAPPING_START;
    frame_t *f;
    json_t *v, *kids;
    if (want_key(L)) {
      rc = fail(L, KEEL_EINVAL, line, col, "mapping keys must be scalars");
      break;
    }
    if (tag && !(tagn == 1 && tag[0] == '!') &&
        strcmp(fy_token_get_text0(tagt), is_map ? TAG_PREFIX "map" : TAG_PREFIX "seq")) {
      quote(q, sizeof q, tag, tagn);
      rc = fail(L, KEEL_EINVAL, tline ? tline : line, tline ? tcol : col,
                "unsupported tag '%s' on a %s", q,
                is_map ? "mapping" : "sequence");
      break;
    }
    if (L->depth >= KEEL_YAML_MAX_DEPTH) {
      rc = fail(L, KEEL_ETOOBIG, line, col, "nested deeper than %d levels", KEEL_YAML_MAX_DEPTH);
      break;
    }
    if ((rc = count(L, 1, line, col))) break;
    v = is_map ? json_object() : json_array();
    kids = is_map ? json_object() : json_array();
    if (!kids) {
      json_decref(v);
      rc = fail(L, KEEL_ENOMEM, line, col, "out of memory");
      break;
    }
    if ((rc = attach(L, json_incref(v), pos_node(line, col, kids), line, col))) {
      json_decref(v);
      json_decref(kids);
      break;
    }
    f = &L->stack[L->depth++];
    memset(f, 0, sizeof *f);
    f->val = v; /* the parent holds the other reference */
    json_decref(v);
    f->pkids = kids;
    json_decref(kids);
    f->is_map = is_map;
    f->nodes_at_start = L->nodes - 1;
    f->anchor = anchor_name(ev);
    if (is_map && !(f->klines = json_object())) rc = fail(L, KEEL_ENOMEM, line, col, "out of memory");
    break;
  }
  case FYET_MAPPING_END:
  case FYET_SEQUENCE_END: {
    frame_t *f = &L->stack[L->depth - 1];
    int h = f->height + 1;
    if (f->anchor)
      rc = set_anchor(L, f->anchor, f->val, L->nodes - f->nodes_at_start, h, line, col);
    free(f->anchor);
    free(f->key);
    json_decref(f->klines);
    L->depth--;
    note_height(L, h);
    break;
  }
  case FYET_SCALAR: {
    size_t n = 0;
    const char *s = tok ? fy_token_get_text(tok, &n) : "";
    int plain = !tok || fy_token_scalar_style(tok) == FYSS_PLAIN;
    json_t *v;
    if (!s) s = "", n = 0;
    if (want_key(L)) {
      if (tag) { /* still refuse tags we do not know, keys or not */
        if ((rc = scalar_value(L, s, n, tag, tagn, plain, line, col, tline, tcol, &v))) break;
        json_decref(v);
      }
      rc = on_key(L, s, n, line, col);
      break;
    }
    if ((rc = count(L, 1, line, col))) break;
    if ((rc = scalar_value(L, s, n, tag, tagn, plain, line, col, tline, tcol, &v))) break;
    anchor = anchor_name(ev);
    if (anchor && (rc = set_anchor(L, anchor, v, 1, 0, line, col))) {
      json_decref(v);
      break;
    }
    rc = attach(L, v, pos_node(line, col, NULL), line, col);
    break;
  }
  case FYET_ALIAS: {
    struct fy_token *at = ev->alias.anchor;
    const char *an = at ? fy_token_get_text0(at) : NULL;
    json_t *idx = an ? json_object_get(L->anchors, an) : NULL;
    anchor_t *a;
    json_t *v;
    if (want_key(L)) {
      rc = fail(L, KEEL_EINVAL, line, col, "an alias cannot be a mapping key");
      break;
    }
    if (!idx) {
      quote(q, sizeof q, an ? an : "", an ? strlen(an) : 0);
      rc = fail(L, KEEL_EINVAL, line, col, "alias '*%s' names no complete anchor before it", q);
      break;
    }
    a = &L->avec[json_integer_value(idx)];
    if (L->depth + a->height > KEEL_YAML_MAX_DEPTH) {
      rc = fail(L, KEEL_ETOOBIG, line, col, "nested deeper than %d levels (through an alias)",
                KEEL_YAML_MAX_DEPTH);
      break;
    }
    if ((rc = count(L, a->nodes, line, col))) break;
    /* A copy, not a shared reference: callers may change the tree. */
    v = json_deep_copy(a->val);
    note_height(L, a->height);
    rc = attach(L, v, pos_node(line, col, NULL), line, col);
    break;
  }
  default:
    break;
  }
  free(anchor);
  return rc;
}

/* The first error libfyaml collected, as "name:line:col: message". */
static int parser_error(loader_t *L, struct fy_diag *diag) {
  void *it = NULL;
  struct fy_diag_error *de;
  char msg[200];
  while ((de = fy_diag_errors_iterate(diag, &it))) {
    if (de->type < FYET_ERROR || !de->msg) continue;
    quote(msg, sizeof msg, de->msg, strlen(de->msg));
    /* Trailing newline/space of libfyaml's message became '?' or stays. */
    for (size_t n = strlen(msg); n && (msg[n - 1] == '?' || msg[n - 1] == ' '); n--)
      msg[n - 1] = '\0';
    return fail(L, KEEL_EINVAL, de->line > 0 ? de->line : L->line,
                de->column > 0 ? de->column : L->col, "%s", msg);
  }
  return fail(L, KEEL_EINVAL, L->line, L->col, "invalid YAML");
}

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len) {
  (void)diag, (void)user, (void)buf, (void)len;
}

int keel_yaml_load(const char *name, const char *buf, size_t len, json_t **out,
                   keel_yaml_pos_t **pos, keel_err_t *e) {
  loader_t L;
  struct fy_diag_cfg dcfg;
  struct fy_diag *diag = NULL;
  struct fy_parse_cfg pcfg;
  struct fy_parser *fyp = NULL;
  struct fy_event *ev;
  int rc = 0, docs = 0, line, col;

  memset(&L, 0, sizeof L);
  L.name = name ? name : "<input>";
  L.e = e;
  L.line = L.col = 1;
  *out = NULL;
  if (pos) *pos = NULL;
  if (len > KEEL_YAML_MAX_INPUT) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "%s: larger than %u MiB", L.name, KEEL_YAML_MAX_INPUT >> 20);
    goto out;
  }
  if (utf8_check(buf, len, &line, &col)) {
    rc = fail(&L, KEEL_EINVAL, line, col, "invalid UTF-8");
    goto out;
  }
  if (!(L.anchors = json_object())) {
    rc = fail(&L, KEEL_ENOMEM, 1, 1, "out of memory");
    goto out;
  }
  /* Errors are collected on our diag object and reworded below; libfyaml
   * MUST NOT write to stderr (keeld's stderr is its log). */
  fy_diag_cfg_default(&dcfg);
  dcfg.fp = NULL;
  dcfg.output_fn = diag_discard;
  dcfg.colorize = false;
  diag = fy_diag_create(&dcfg);
  if (!diag) {
    rc = fail(&L, KEEL_ENOMEM, 1, 1, "out of memory");
    goto out;
  }
  fy_diag_set_collect_errors(diag, true);
  memset(&pcfg, 0, sizeof pcfg);
  pcfg.flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2 | FYPCF_JSON_NONE | FYPCF_DISABLE_MMAP_OPT;
  pcfg.diag = diag;
  fyp = fy_parser_create(&pcfg);
  if (!fyp || fy_parser_set_string(fyp, len ? buf : "", len)) {
    rc = fail(&L, KEEL_ENOMEM, 1, 1, "out of memory");
    goto out;
  }
  while ((ev = fy_parser_parse(fyp))) {
    rc = on_event(&L, ev, &docs);
    fy_parser_event_free(fyp, ev);
    if (rc) goto out;
  }
  if (fy_parser_get_stream_error(fyp)) {
    rc = parser_error(&L, diag);
    goto out;
  }
  if (!docs || !L.root) {
    rc = fail(&L, KEEL_EINVAL, L.line, L.col, "empty document");
    goto out;
  }
  if (pos) {
    if (!(*pos = malloc(sizeof **pos))) {
      rc = fail(&L, KEEL_ENOMEM, 1, 1, "out of memory");
      goto out;
    }
    (*pos)->root = L.proot;
    L.proot = NULL;
  }
  *out = L.root;
  L.root = NULL;
out:
  /* Frames left open by an error. */
  while (L.depth > 0) {
    frame_t *f = &L.stack[--L.depth];
    free(f->anchor);
    free(f->key);
    json_decref(f->klines);
  }
  for (size_t i = 0; i < L.an; i++) json_decref(L.avec[i].val);
  free(L.avec);
  json_decref(L.anchors);
  json_decref(L.root);
  json_decref(L.proot);
  if (fyp) fy_parser_destroy(fyp);
  if (diag) fy_diag_destroy(diag);
  return rc;
}

/* ---- positions --------------------------------------------------------- */

int keel_yaml_pos_lookup(const keel_yaml_pos_t *p, const char *ptr, int *line, int *col) {
  const json_t *node;
  const char *s = ptr;
  char seg[1024];

  if (!p || !p->root || !ptr || (*ptr && *ptr != '/')) return KEEL_ENOENT;
  node = p->root;
  while (*s == '/') {
    const json_t *kids = json_array_get(node, 2), *next = NULL;
    size_t n = 0;
    int ok = 1;
    s++;
    while (*s && *s != '/') {
      char c = *s++;
      if (c == '~') {
        if (*s == '0') c = '~';
        else if (*s == '1') c = '/';
        else ok = 0;
        if (*s) s++;
      }
      if (n + 1 < sizeof seg) seg[n++] = c;
      else ok = 0;
    }
    seg[n] = '\0';
    if (ok && json_is_object(kids)) {
      next = json_object_getn(kids, seg, n);
    } else if (ok && json_is_array(kids) && n && n < 10 && (n == 1 || seg[0] != '0') &&
               strspn(seg, "0123456789") == n) {
      next = json_array_get(kids, (size_t)strtoul(seg, NULL, 10));
    }
    if (!next) break; /* nearest ancestor */
    node = next;
  }
  if (line) *line = (int)json_integer_value(json_array_get(node, 0));
  if (col) *col = (int)json_integer_value(json_array_get(node, 1));
  return 0;
}

void keel_yaml_pos_free(keel_yaml_pos_t *p) {
  if (!p) return;
  json_decref(p->root);
  free(p);
}
