/* cond.c — automation rule conditions and event field lookup (cond.h). */
#include "automation/cond.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };
static const char *const op_text[] = {"==", "!=", "<", "<=", ">", ">=", "in", "not in"};

struct k_cond {
  char path[K_COND_PATH_MAX + 1];
  int op;
  size_t n;
  char **vals;  /* n values, NUL-terminated (a value holds no NUL) */
};

void k_cond_free(k_cond_t *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n; i++) free(c->vals[i]);
  free(c->vals);
  free(c);
}

/* ---- parsing ------------------------------------------------------------------ */

typedef struct lex {
  const char *s;
  size_t n, i;
  keel_err_t *e;
} lex_t;

static int fail(lex_t *L, size_t at, const char *what) {
  return keel_err_set(L->e, KEEL_EINVAL, "column %zu: %s", at + 1, what);
}

static void ws(lex_t *L) {
  while (L->i < L->n && (L->s[L->i] == ' ' || L->s[L->i] == '\t')) L->i++;
}

static int ident_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static int ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9') || c == '-'; }
static int word_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         (c && strchr("._:/@+-", c));
}

int k_cond_path_ok(const char *p, size_t n) {
  size_t parts = 1;
  if (!n || n > K_COND_PATH_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '.') {
      if (++parts > K_COND_PATH_PARTS || i == 0 || i + 1 == n || p[i - 1] == '.') return 0;
      continue;
    }
    if (i == 0 || p[i - 1] == '.' ? !ident_start(p[i]) : !ident_char(p[i])) return 0;
  }
  return 1;
}

static int parse_path(lex_t *L, k_cond_t *c) {
  size_t b = L->i;
  while (L->i < L->n && (ident_char(L->s[L->i]) || L->s[L->i] == '.')) L->i++;
  if (L->i == b) return fail(L, b, "expected a field like data.severity");
  if (!k_cond_path_ok(L->s + b, L->i - b))
    return fail(L, b, L->i - b > K_COND_PATH_MAX ? "field longer than 128 bytes"
                                                 : "invalid field: expected dot-separated names "
                                                   "like data.labels.service (at most 8)");
  memcpy(c->path, L->s + b, L->i - b);
  c->path[L->i - b] = '\0';
  return 0;
}

static int parse_op(lex_t *L, k_cond_t *c) {
  const char *s = L->s + L->i;
  size_t left = L->n - L->i;
  static const int two[] = {OP_EQ, OP_NE, OP_LE, OP_GE};
  for (int k = 0; k < 4; k++)
    if (left >= 2 && !memcmp(s, op_text[two[k]], 2)) {
      c->op = two[k];
      L->i += 2;
      return 0;
    }
  if (left >= 1 && (*s == '<' || *s == '>')) {
    c->op = *s == '<' ? OP_LT : OP_GT;
    L->i++;
    return 0;
  }
  if (left >= 2 && !memcmp(s, "in", 2) && (left == 2 || !ident_char(s[2]))) {
    c->op = OP_IN;
    L->i += 2;
    return 0;
  }
  if (left >= 3 && !memcmp(s, "not", 3) && (left == 3 || !ident_char(s[3]))) {
    L->i += 3;
    ws(L);
    if (L->n - L->i >= 2 && !memcmp(L->s + L->i, "in", 2) &&
        (L->n - L->i == 2 || !ident_char(L->s[L->i + 2]))) {
      c->op = OP_NOTIN;
      L->i += 2;
      return 0;
    }
    return fail(L, L->i, "expected 'in' after 'not'");
  }
  return fail(L, L->i, "expected an operator: == != < <= > >= in, not in");
}

/* One value into c->vals[c->n]. */
static int parse_value(lex_t *L, k_cond_t *c) {
  char buf[K_COND_VALUE_MAX + 1];
  size_t k = 0, b = L->i;
  if (L->i < L->n && L->s[L->i] == '"') {
    L->i++;
    for (;;) {
      char ch;
      if (L->i >= L->n) return fail(L, b, "unterminated '\"'");
      ch = L->s[L->i];
      if (ch == '"') break;
      if ((unsigned char)ch < 0x20 || ch == 0x7f) return fail(L, L->i, "control character in a value");
      if (ch == '\\') {
        if (L->i + 1 >= L->n || (L->s[L->i + 1] != '"' && L->s[L->i + 1] != '\\'))
          return fail(L, L->i, "only \\\" and \\\\ may be escaped");
        ch = L->s[++L->i];
      }
      if (k == K_COND_VALUE_MAX) return fail(L, b, "value longer than 256 bytes");
      buf[k++] = ch;
      L->i++;
    }
    L->i++;
  } else {
    while (L->i < L->n && word_char(L->s[L->i])) {
      if (k == K_COND_VALUE_MAX) return fail(L, b, "value longer than 256 bytes");
      buf[k++] = L->s[L->i++];
    }
    if (!k) {
      if (L->i >= L->n) return fail(L, L->i, "expected a value");
      return fail(L, L->i, "expected a value: a word of A-Z a-z 0-9 . _ : / @ + - or a \"quoted\" string");
    }
  }
  buf[k] = '\0';
  if (c->n == K_COND_MAX_VALUES) return fail(L, b, "more than 64 values");
  {
    char **nv = realloc(c->vals, (c->n + 1) * sizeof *nv);
    if (!nv) return keel_err_set(L->e, KEEL_ENOMEM, "out of memory");
    c->vals = nv;
    if (!(c->vals[c->n] = strdup(buf))) return keel_err_set(L->e, KEEL_ENOMEM, "out of memory");
    c->n++;
  }
  return 0;
}

int k_cond_parse(const char *text, size_t len, k_cond_t **out, keel_err_t *e) {
  lex_t L = {text, len, 0, e};
  k_cond_t *c = NULL;
  int rc;

  *out = NULL;
  if (len > K_COND_MAX_LEN) return keel_err_set(e, KEEL_EINVAL, "column %d: longer than %d bytes",
                                                K_COND_MAX_LEN + 1, K_COND_MAX_LEN);
  if (memchr(text, '\0', len))
    return keel_err_set(e, KEEL_EINVAL, "column %zu: NUL byte",
                        (size_t)((const char *)memchr(text, '\0', len) - text) + 1);
  if (!(c = calloc(1, sizeof *c))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  ws(&L);
  if ((rc = parse_path(&L, c))) goto out;
  ws(&L);
  if ((rc = parse_op(&L, c))) goto out;
  ws(&L);
  if (c->op == OP_IN || c->op == OP_NOTIN) {
    if (L.i >= L.n || L.s[L.i] != '[') {
      rc = fail(&L, L.i, "expected '[' to start the list");
      goto out;
    }
    L.i++;
    ws(&L);
    for (;;) {
      if ((rc = parse_value(&L, c))) goto out;
      ws(&L);
      if (L.i < L.n && L.s[L.i] == ',') {
        L.i++;
        ws(&L);
        continue;
      }
      if (L.i < L.n && L.s[L.i] == ']') {
        L.i++;
        break;
      }
      rc = fail(&L, L.i, "expected ',' or ']'");
      goto out;
    }
  } else if ((rc = parse_value(&L, c))) {
    goto out;
  }
  ws(&L);
  if (L.i < L.n) {
    rc = fail(&L, L.i, "unexpected text after the condition");
    goto out;
  }
  *out = c;
  c = NULL;
out:
  k_cond_free(c);
  return rc;
}

/* ---- formatting ---------------------------------------------------------------- */

static int put_value(keel_buf_t *out, const char *v) {
  int bare = *v != '\0';
  int rc;
  for (const char *p = v; *p && bare; p++) bare = word_char(*p);
  if (bare) return keel_buf_puts(out, v);
  if ((rc = keel_buf_puts(out, "\""))) return rc;
  for (const char *p = v; *p; p++) {
    if ((*p == '"' || *p == '\\') && (rc = keel_buf_puts(out, "\\"))) return rc;
    if ((rc = keel_buf_append(out, p, 1))) return rc;
  }
  return keel_buf_puts(out, "\"");
}

int k_cond_format(const k_cond_t *c, keel_buf_t *out) {
  size_t mark = out->len;
  int rc = keel_buf_printf(out, "%s %s ", c->path, op_text[c->op]);
  if (!rc && (c->op == OP_IN || c->op == OP_NOTIN)) rc = keel_buf_puts(out, "[");
  for (size_t i = 0; !rc && i < c->n; i++) {
    if (i) rc = keel_buf_puts(out, ", ");
    if (!rc) rc = put_value(out, c->vals[i]);
  }
  if (!rc && (c->op == OP_IN || c->op == OP_NOTIN)) rc = keel_buf_puts(out, "]");
  if (rc) {
    out->len = mark;
    if (out->data) out->data[mark] = '\0';
  }
  return rc;
}

/* ---- lookup and evaluation --------------------------------------------------------- */

const json_t *k_cond_field(const json_t *view, const char *path) {
  const json_t *cur = view;
  char part[K_COND_PATH_MAX + 1];
  const char *p = path;
  if (!strncmp(path, "labels.", 7)) {
    cur = json_object_get(json_object_get(view, "data"), "labels");
    p = path + 7;
  }
  while (cur && *p) {
    size_t n = strcspn(p, ".");
    if (n > K_COND_PATH_MAX) return NULL;
    memcpy(part, p, n);
    part[n] = '\0';
    cur = json_is_object(cur) ? json_object_get(cur, part) : NULL;
    p += n;
    if (*p == '.') p++;
  }
  return cur;
}

const char *k_cond_text(const json_t *v, char *buf, size_t n) {
  if (json_is_string(v)) return json_string_value(v);
  if (json_is_integer(v)) {
    snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    snprintf(buf, n, "%.15g", d);
    if (strtod(buf, NULL) != d) snprintf(buf, n, "%.17g", d);
    return buf;
  }
  if (json_is_boolean(v)) return json_is_true(v) ? "true" : "false";
  return NULL;
}

/* s as a finite decimal number. */
static int number(const char *s, double *d) {
  char *end;
  if (!*s || (*s != '-' && *s != '+' && *s != '.' && (*s < '0' || *s > '9'))) return 0;
  errno = 0;
  *d = strtod(s, &end);
  return !*end && errno != ERANGE && isfinite(*d);
}

/* One literal against the field (text or number). */
static int equal(const json_t *f, const char *text, const char *lit) {
  double b;
  if (json_is_number(f) && number(lit, &b)) return json_number_value(f) == b;
  return !strcmp(text, lit);
}

int k_cond_eval(const k_cond_t *c, const json_t *view) {
  const json_t *f = k_cond_field(view, c->path);
  char buf[64];
  const char *text = k_cond_text(f, buf, sizeof buf);
  double a, b;
  int any = 0;

  if (!text) return c->op == OP_NE || c->op == OP_NOTIN;
  switch (c->op) {
  case OP_EQ: return equal(f, text, c->vals[0]);
  case OP_NE: return !equal(f, text, c->vals[0]);
  case OP_IN:
  case OP_NOTIN:
    for (size_t i = 0; i < c->n && !any; i++) any = equal(f, text, c->vals[i]);
    return c->op == OP_IN ? any : !any;
  default:
    if (json_is_number(f)) a = json_number_value(f);
    else if (!number(text, &a)) return 0;
    if (!number(c->vals[0], &b)) return 0;
    return c->op == OP_LT ? a < b : c->op == OP_LE ? a <= b : c->op == OP_GT ? a > b : a >= b;
  }
}
