/* selector.c — tag selectors and tag lists (keel/selector.h).
 *
 * A hand-written scanner over text[0..len): the text is never assumed to be
 * NUL-terminated and every byte is looked at through bounds-checked helpers.
 * Errors name the 1-based byte column; any text quoted back in a message is
 * escaped and truncated, so arbitrary bytes cannot break the message. */
#include "keel/selector.h"

#include "msgquote.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OP_EQ, OP_NE, OP_IN, OP_NOTIN, OP_EXISTS, OP_NOTEXISTS };
enum { SP_NONE, SP_ID, SP_HOSTNAME };

typedef struct term {
  int op;
  int special; /* SP_*: id / hostname come from the object, not its tags */
  char key[KEEL_TAG_KEY_MAX + 1];
  size_t nvals; /* EQ, NE: 1; IN, NOTIN: >= 1, sorted, unique; else 0 */
  char **vals;
} term_t;

struct keel_selector {
  size_t nterms;
  term_t *terms;
};

/* ---- characters --------------------------------------------------------- */

static int is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static int is_key_char(unsigned char c) { return is_alnum(c) || (c && strchr("._/-", c)); }
static int is_val_char(unsigned char c) { return is_alnum(c) || (c && strchr("._:/@+-", c)); }
static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int reserved_key(const char *k) {
  return !strcmp(k, "id") ? SP_ID : !strcmp(k, "hostname") ? SP_HOSTNAME : SP_NONE;
}


/* 0 when p[0..n) (n > 0) is a valid key.  Otherwise writes the reason to why
 * and the offset it concerns to *at. */
static int key_problem(const char *p, size_t n, size_t *at, char why[64]) {
  char c[24];
  *at = 0;
  if (!is_alnum((unsigned char)p[0]) && is_key_char((unsigned char)p[0])) {
    snprintf(why, 64, "must start with a letter or digit");
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    if (!is_key_char((unsigned char)p[i])) {
      *at = i;
      k_msg_name_char(c, (unsigned char)p[i]);
      snprintf(why, 64, "invalid %s", c);
      return 1;
    }
  }
  if (n > KEEL_TAG_KEY_MAX) {
    *at = KEEL_TAG_KEY_MAX;
    snprintf(why, 64, "longer than %d characters", KEEL_TAG_KEY_MAX);
    return 1;
  }
  return 0;
}

/* As key_problem, for values (which may be empty). */
static int value_problem(const char *p, size_t n, size_t *at, char why[64]) {
  char c[24];
  *at = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_val_char((unsigned char)p[i])) {
      *at = i;
      k_msg_name_char(c, (unsigned char)p[i]);
      snprintf(why, 64, "invalid %s", c);
      return 1;
    }
  }
  if (n > KEEL_TAG_VALUE_MAX) {
    *at = KEEL_TAG_VALUE_MAX;
    snprintf(why, 64, "longer than %d characters", KEEL_TAG_VALUE_MAX);
    return 1;
  }
  return 0;
}

/* ---- scanner ------------------------------------------------------------ */

typedef struct lex {
  const char *p;
  size_t len, i;
  const char *what; /* message prefix: "selector" or "tags" */
  keel_err_t *e;
} lex_t;

static int fail(lex_t *lx, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(lex_t *lx, size_t at, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return keel_err_set(lx->e, KEEL_EINVAL, "%s: column %zu: %s", lx->what, at + 1, msg);
}

static int nomem(lex_t *lx) {
  return keel_err_set(lx->e, KEEL_ENOMEM, "%s: out of memory", lx->what);
}

static int at_end(const lex_t *lx) { return lx->i >= lx->len; }
static unsigned char cur(const lex_t *lx) { return at_end(lx) ? 0 : (unsigned char)lx->p[lx->i]; }
static int end_or_comma(const lex_t *lx) { return at_end(lx) || cur(lx) == ','; }

static void skip_ws(lex_t *lx) {
  while (!at_end(lx) && is_ws(cur(lx))) lx->i++;
}

/* Length of the run at lx->i of bytes that are neither whitespace nor in
 * stops.  Keys and values are scanned as such runs and validated after, so
 * an error can quote the whole word ("key 'x@y'"). */
static size_t word(const lex_t *lx, const char *stops) {
  size_t n = 0;
  while (lx->i + n < lx->len) {
    unsigned char c = (unsigned char)lx->p[lx->i + n];
    if (is_ws(c) || (c && strchr(stops, c))) break;
    n++;
  }
  return n;
}

#define SEL_KEY_STOPS ",=!()"
#define SEL_VAL_STOPS ",()"

/* Scans and validates a key at lx->i into key; ctx says what it follows
 * (for "expected a key ..."). */
static int lex_key(lex_t *lx, const char *stops, char key[KEEL_TAG_KEY_MAX + 1],
                   const char *ctx) {
  size_t n = word(lx, stops), at;
  char why[64], q[200];
  if (n == 0) return fail(lx, lx->i, "expected a key%s", ctx);
  if (key_problem(lx->p + lx->i, n, &at, why)) {
    k_msg_quote(q, lx->p + lx->i, n);
    return fail(lx, lx->i + at, "key '%s': %s", q, why);
  }
  memcpy(key, lx->p + lx->i, n);
  key[n] = '\0';
  lx->i += n;
  return 0;
}

/* Scans and validates a (possibly empty) value at lx->i; *v = its copy
 * (caller frees) and *n its length. */
static int lex_value(lex_t *lx, const char *stops, char **v, size_t *n) {
  size_t at;
  char why[64], q[200];
  *v = NULL;
  *n = word(lx, stops);
  if (value_problem(lx->p + lx->i, *n, &at, why)) {
    k_msg_quote(q, lx->p + lx->i, *n);
    return fail(lx, lx->i + at, "value '%s': %s", q, why);
  }
  *v = strndup(lx->p + lx->i, *n);
  if (!*v) return nomem(lx);
  lx->i += *n;
  return 0;
}

/* ---- selectors ---------------------------------------------------------- */

static void term_free(term_t *t) {
  for (size_t i = 0; i < t->nvals; i++) free(t->vals[i]);
  free(t->vals);
  t->vals = NULL;
  t->nvals = 0;
}

void keel_selector_free(keel_selector_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nterms; i++) term_free(&s->terms[i]);
  free(s->terms);
  free(s);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* After '=' or '!=': one value, then ',' or end. */
static int parse_single(lex_t *lx, term_t *t, const char *op) {
  char *v, q[200];
  size_t n;
  int rc;

  skip_ws(lx);
  t->vals = malloc(sizeof *t->vals);
  if (!t->vals) return nomem(lx);
  if ((rc = lex_value(lx, SEL_VAL_STOPS, &v, &n))) return rc;
  t->vals[0] = v;
  t->nvals = 1;
  skip_ws(lx);
  if (end_or_comma(lx)) return 0;
  if (n == 0) return fail(lx, lx->i, "expected a value, ',' or end after '%s'", op);
  k_msg_quote(q, v, n);
  return fail(lx, lx->i, "expected ',' or end after value '%s'", q);
}

/* After 'in' or 'notin': "( v, ... )", then ',' or end.  Values are sorted
 * and deduplicated, so equal sets compare and format equal. */
static int parse_set(lex_t *lx, term_t *t, const char *op) {
  size_t open, n, w;
  char *v, q[200];
  int rc;

  skip_ws(lx);
  if (cur(lx) != '(') return fail(lx, lx->i, "expected '(' after '%s'", op);
  open = lx->i++;
  t->vals = calloc(KEEL_SELECTOR_MAX_VALUES, sizeof *t->vals);
  if (!t->vals) return nomem(lx);
  for (;;) {
    skip_ws(lx);
    if (at_end(lx)) return fail(lx, lx->i, "unterminated '(' opened at column %zu", open + 1);
    if (word(lx, SEL_VAL_STOPS) == 0)
      return fail(lx, lx->i, "expected a value in '(' opened at column %zu", open + 1);
    if (t->nvals == KEEL_SELECTOR_MAX_VALUES)
      return fail(lx, lx->i, "more than %d values in '(' opened at column %zu",
                  KEEL_SELECTOR_MAX_VALUES, open + 1);
    if ((rc = lex_value(lx, SEL_VAL_STOPS, &v, &n))) return rc;
    t->vals[t->nvals++] = v;
    skip_ws(lx);
    if (at_end(lx)) return fail(lx, lx->i, "unterminated '(' opened at column %zu", open + 1);
    if (cur(lx) == ',') {
      lx->i++;
      continue;
    }
    if (cur(lx) == ')') {
      lx->i++;
      break;
    }
    k_msg_quote(q, v, n);
    return fail(lx, lx->i, "expected ',' or ')' after value '%s'", q);
  }
  skip_ws(lx);
  if (!end_or_comma(lx)) return fail(lx, lx->i, "expected ',' or end after ')'");
  qsort(t->vals, t->nvals, sizeof *t->vals, cmp_str);
  w = 1;
  for (size_t r = 1; r < t->nvals; r++) {
    if (!strcmp(t->vals[r], t->vals[w - 1])) free(t->vals[r]);
    else t->vals[w++] = t->vals[r];
  }
  t->nvals = w;
  return 0;
}

/* One term at lx->i (not at end, not whitespace); leaves lx->i at the ','
 * that follows or at the end. */
static int parse_term(lex_t *lx, term_t *t) {
  size_t n;
  int rc;

  if (cur(lx) == '!') {
    lx->i++;
    skip_ws(lx);
    t->op = OP_NOTEXISTS;
    if ((rc = lex_key(lx, SEL_KEY_STOPS, t->key, " after '!'"))) return rc;
    t->special = reserved_key(t->key);
    skip_ws(lx);
    if (!end_or_comma(lx)) return fail(lx, lx->i, "expected ',' or end after '!%s'", t->key);
    return 0;
  }
  if ((rc = lex_key(lx, SEL_KEY_STOPS, t->key, ""))) return rc;
  t->special = reserved_key(t->key);
  skip_ws(lx);
  if (end_or_comma(lx)) {
    t->op = OP_EXISTS;
    return 0;
  }
  if (cur(lx) == '=') {
    lx->i++;
    t->op = OP_EQ;
    return parse_single(lx, t, "=");
  }
  if (cur(lx) == '!' && lx->i + 1 < lx->len && lx->p[lx->i + 1] == '=') {
    lx->i += 2;
    t->op = OP_NE;
    return parse_single(lx, t, "!=");
  }
  n = word(lx, SEL_KEY_STOPS);
  if (n == 2 && !memcmp(lx->p + lx->i, "in", 2)) {
    lx->i += n;
    t->op = OP_IN;
    return parse_set(lx, t, "in");
  }
  if (n == 5 && !memcmp(lx->p + lx->i, "notin", 5)) {
    lx->i += n;
    t->op = OP_NOTIN;
    return parse_set(lx, t, "notin");
  }
  return fail(lx, lx->i, "expected '=', '!=', 'in', 'notin', ',' or end after key '%s'", t->key);
}

int keel_selector_parse(const char *text, size_t len, keel_selector_t **out, keel_err_t *e) {
  lex_t lx = {text, len, 0, "selector", e};
  keel_selector_t *s = NULL;
  int rc = 0;

  *out = NULL;
  if (!text && len) return keel_err_set(e, KEEL_EINVAL, "selector: no text");
  if (len > KEEL_SELECTOR_MAX_LEN)
    return fail(&lx, KEEL_SELECTOR_MAX_LEN, "longer than %d bytes", KEEL_SELECTOR_MAX_LEN);
  s = calloc(1, sizeof *s);
  if (!s) {
    rc = nomem(&lx);
    goto out;
  }
  skip_ws(&lx);
  while (!at_end(&lx)) {
    term_t t = {0}, *nt;
    if (s->nterms == KEEL_SELECTOR_MAX_TERMS) {
      rc = fail(&lx, lx.i, "more than %d terms", KEEL_SELECTOR_MAX_TERMS);
      goto out;
    }
    if ((rc = parse_term(&lx, &t))) {
      term_free(&t);
      goto out;
    }
    nt = realloc(s->terms, (s->nterms + 1) * sizeof *nt);
    if (!nt) {
      term_free(&t);
      rc = nomem(&lx);
      goto out;
    }
    s->terms = nt;
    s->terms[s->nterms++] = t;
    if (at_end(&lx)) break;
    lx.i++; /* parse_term stopped at ',': a term MUST follow */
    skip_ws(&lx);
    if (at_end(&lx)) {
      rc = fail(&lx, lx.i, "expected a term after ','");
      goto out;
    }
  }
  *out = s;
  s = NULL;
out:
  keel_selector_free(s);
  return rc;
}

static const char *lookup(const term_t *t, const char *id, const char *hostname,
                          keel_tag_get_fn get, void *ud) {
  if (t->special == SP_ID) return id ? id : "";
  if (t->special == SP_HOSTNAME) return hostname ? hostname : "";
  return get ? get(ud, t->key) : NULL;
}

static int in_set(const term_t *t, const char *v) {
  return bsearch(&v, t->vals, t->nvals, sizeof *t->vals, cmp_str) != NULL;
}

int keel_selector_match(const keel_selector_t *s, const char *id, const char *hostname,
                        keel_tag_get_fn get, void *ud) {
  if (!s) return 0; /* a bug in the caller: match nothing rather than everything */
  for (size_t i = 0; i < s->nterms; i++) {
    const term_t *t = &s->terms[i];
    const char *v = lookup(t, id, hostname, get, ud);
    int ok = 0;
    switch (t->op) {
    case OP_EQ: ok = v && !strcmp(v, t->vals[0]); break;
    case OP_NE: ok = !v || strcmp(v, t->vals[0]); break;
    case OP_IN: ok = v && in_set(t, v); break;
    case OP_NOTIN: ok = !v || !in_set(t, v); break;
    case OP_EXISTS: ok = v != NULL; break;
    case OP_NOTEXISTS: ok = v == NULL; break;
    }
    if (!ok) return 0;
  }
  return 1;
}

static const char *json_get(void *ud, const char *key) {
  return json_string_value(json_object_get((const json_t *)ud, key));
}

int keel_selector_match_json(const keel_selector_t *s, const char *id, const char *hostname,
                             const json_t *tags) {
  return keel_selector_match(s, id, hostname, json_is_object(tags) ? json_get : NULL,
                             (void *)tags);
}

int keel_selector_format(const keel_selector_t *s, keel_buf_t *out) {
  size_t old = out->len;
  int rc = 0;

  for (size_t i = 0; i < s->nterms && !rc; i++) {
    const term_t *t = &s->terms[i];
    if (i) rc = keel_buf_puts(out, ",");
    if (!rc && t->op == OP_NOTEXISTS) rc = keel_buf_puts(out, "!");
    if (!rc) rc = keel_buf_puts(out, t->key);
    if (rc) break;
    switch (t->op) {
    case OP_EQ: rc = keel_buf_printf(out, "=%s", t->vals[0]); break;
    case OP_NE: rc = keel_buf_printf(out, "!=%s", t->vals[0]); break;
    case OP_IN:
    case OP_NOTIN:
      /* The one space is needed: "kin(" would read as key "kin". */
      rc = keel_buf_puts(out, t->op == OP_IN ? " in(" : " notin(");
      for (size_t j = 0; j < t->nvals && !rc; j++)
        rc = keel_buf_printf(out, "%s%s", j ? "," : "", t->vals[j]);
      if (!rc) rc = keel_buf_puts(out, ")");
      break;
    default: break;
    }
  }
  if (rc && out->data) {
    out->len = old;
    out->data[old] = '\0';
  }
  return rc;
}

/* ---- tags --------------------------------------------------------------- */

int keel_tags_parse(const char *text, size_t len, json_t **out, keel_err_t *e) {
  lex_t lx = {text, len, 0, "tags", e};
  json_t *obj = NULL, *v = NULL;
  int rc = 0;

  *out = NULL;
  if (!text && len) return keel_err_set(e, KEEL_EINVAL, "tags: no text");
  if (len > KEEL_SELECTOR_MAX_LEN)
    return fail(&lx, KEEL_SELECTOR_MAX_LEN, "longer than %d bytes", KEEL_SELECTOR_MAX_LEN);
  obj = json_object();
  if (!obj) {
    rc = nomem(&lx);
    goto out;
  }
  skip_ws(&lx);
  while (!at_end(&lx)) {
    char key[KEEL_TAG_KEY_MAX + 1], *val = NULL, q[200];
    size_t k0 = lx.i, n;

    if ((rc = lex_key(&lx, ",=", key, ""))) goto out;
    if (reserved_key(key)) {
      rc = fail(&lx, k0, "key '%s' is reserved (selectors match it against the agent's %s)", key,
                key);
      goto out;
    }
    skip_ws(&lx);
    if (cur(&lx) != '=') {
      rc = fail(&lx, lx.i, "expected '=' after key '%s'", key);
      goto out;
    }
    lx.i++;
    skip_ws(&lx);
    if ((rc = lex_value(&lx, ",", &val, &n))) goto out;
    v = json_stringn(val, n);
    k_msg_quote(q, val, n);
    free(val);
    if (!v) {
      rc = nomem(&lx);
      goto out;
    }
    skip_ws(&lx);
    if (!end_or_comma(&lx)) {
      rc = n ? fail(&lx, lx.i, "expected ',' or end after value '%s'", q)
             : fail(&lx, lx.i, "expected a value, ',' or end after '='");
      goto out;
    }
    if (json_object_get(obj, key)) {
      rc = fail(&lx, k0, "duplicate key '%s'", key);
      goto out;
    }
    if (json_object_size(obj) == KEEL_TAGS_MAX) {
      rc = fail(&lx, k0, "more than %d tags", KEEL_TAGS_MAX);
      goto out;
    }
    rc = json_object_set_new(obj, key, v);
    v = NULL; /* stolen, even on failure */
    if (rc) {
      rc = nomem(&lx);
      goto out;
    }
    if (at_end(&lx)) break;
    lx.i++; /* at ',': a tag MUST follow */
    skip_ws(&lx);
    if (at_end(&lx)) {
      rc = fail(&lx, lx.i, "expected a key after ','");
      goto out;
    }
  }
  *out = obj;
  obj = NULL;
out:
  json_decref(v);
  json_decref(obj);
  return rc;
}

int keel_tag_check(const char *key, const char *value, keel_err_t *e) {
  size_t kn, vn, at;
  char why[64], q[200];

  if (!key || !*key) return keel_err_set(e, KEEL_EINVAL, "empty tag key");
  kn = strlen(key);
  if (key_problem(key, kn, &at, why)) {
    k_msg_quote(q, key, kn);
    return keel_err_set(e, KEEL_EINVAL, "key '%s': %s", q, why);
  }
  if (reserved_key(key))
    return keel_err_set(e, KEEL_EINVAL,
                        "key '%s' is reserved (selectors match it against the agent's %s)", key,
                        key);
  if (!value) return keel_err_set(e, KEEL_EINVAL, "key '%s': no value", key);
  vn = strlen(value);
  if (value_problem(value, vn, &at, why)) {
    k_msg_quote(q, value, vn);
    return keel_err_set(e, KEEL_EINVAL, "key '%s': value '%s': %s", key, q, why);
  }
  return 0;
}
