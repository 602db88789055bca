/* template.c — `{{ NAME }}` interpolation (keel/template.h).
 *
 * A template is parsed once into segments: literal runs (escapes already
 * resolved, stored in one owned string) and references (indexes into the
 * names).  Rendering walks the segments; a value is appended once and never
 * looked at again, which is what makes "{{ inside a value is never expanded"
 * true by construction rather than by care.
 *
 * The scanner works on text[0..len) without assuming a NUL terminator.
 * Columns in messages are 1-based byte offsets into the text; any text
 * quoted back is escaped and truncated, so arbitrary bytes cannot break the
 * one-line message. */
#include "keel/template.h"
#include "keel/grow.h"

#include "msgquote.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TMPL_TEXT_MAX 65536
#define TMPL_REFS_MAX 256
#define TMPL_NAME_MAX 128
#define TMPL_PARTS_MAX 8

#define SEG_LITERAL SIZE_MAX

typedef struct seg {
  size_t ref; /* SEG_LITERAL, or an index into refs */
  size_t off, len; /* literal: lit[off .. off + len) */
} seg_t;

struct keel_tmpl {
  char *lit; /* every literal byte, in order; never NULL after parse */
  size_t litlen;
  seg_t *segs;
  size_t nsegs, segcap;
  char **refs; /* NUL-terminated names, one per occurrence */
  size_t nrefs, refcap;
};

/* ---- characters and messages ------------------------------------------- */

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
static int is_ident_start(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_ident_char(unsigned char c) {
  return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-';
}


static int fail(keel_err_t *e, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(keel_err_t *e, size_t at, const char *fmt, ...) {
  char msg[224];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return keel_err_set(e, KEEL_EINVAL, "column %zu: %s", at + 1, msg);
}

/* 0 when p[0..n) (n > 0) is a valid name.  Otherwise writes the reason to
 * why and the offset it concerns to *at.  Characters are checked before the
 * length so that a long run of garbage is named by its first bad byte.
 * The first part may carry one leading '$' ($labels.x, $value: the names
 * alert templates use, as in Prometheus); the identifier after it follows
 * the usual rule. */
static int name_problem(const char *p, size_t n, size_t *at, char why[64]) {
  size_t parts = 0, start = p[0] == '$' ? 1 : 0;
  char c[24];
  for (size_t j = start; j <= n; j++) {
    unsigned char ch = j < n ? (unsigned char)p[j] : 0;
    if (j == n || ch == '.') {
      if (j == start) {
        *at = j;
        snprintf(why, 64, j == 1 && p[0] == '$' ? "expected a name after '$'" : "empty part");
        return 1;
      }
      if (++parts > TMPL_PARTS_MAX) {
        *at = start;
        snprintf(why, 64, "more than %d parts", TMPL_PARTS_MAX);
        return 1;
      }
      start = j + 1;
    } else if (j == start && !is_ident_start(ch)) {
      *at = j;
      if (is_ident_char(ch)) snprintf(why, 64, "a part must start with a letter or '_'");
      else k_msg_name_char(c, ch), snprintf(why, 64, "invalid %s", c);
      return 1;
    } else if (!is_ident_char(ch)) {
      *at = j;
      k_msg_name_char(c, ch);
      snprintf(why, 64, "invalid %s", c);
      return 1;
    }
  }
  if (n > TMPL_NAME_MAX) {
    *at = TMPL_NAME_MAX;
    snprintf(why, 64, "longer than %d bytes", TMPL_NAME_MAX);
    return 1;
  }
  return 0;
}

/* ---- building ----------------------------------------------------------- */

void keel_tmpl_free(keel_tmpl_t *t) {
  if (!t) return;
  for (size_t i = 0; i < t->nrefs; i++) free(t->refs[i]);
  free(t->refs);
  free(t->segs);
  free(t->lit);
  free(t);
}

static seg_t *new_seg(keel_tmpl_t *t) {
  seg_t *p = keel_grow(t->segs, &t->segcap, t->nsegs, sizeof *p, 8);
  if (!p) return NULL;
  t->segs = p;
  return &t->segs[t->nsegs++];
}

/* Appends p[0..n) to the literal text, extending the last segment when it
 * is literal too (so an escape between two runs stays one segment). */
static int add_lit(keel_tmpl_t *t, const char *p, size_t n) {
  seg_t *s = t->nsegs ? &t->segs[t->nsegs - 1] : NULL;
  if (!n) return 0;
  memcpy(t->lit + t->litlen, p, n);
  if (!s || s->ref != SEG_LITERAL) {
    if (!(s = new_seg(t))) return KEEL_ENOMEM;
    s->ref = SEG_LITERAL;
    s->off = t->litlen;
    s->len = 0;
  }
  s->len += n;
  t->litlen += n;
  t->lit[t->litlen] = '\0';
  return 0;
}

static int add_ref(keel_tmpl_t *t, const char *name, size_t n) {
  seg_t *s;
  char **p = keel_grow(t->refs, &t->refcap, t->nrefs, sizeof *p, 4);
  if (!p) return KEEL_ENOMEM;
  t->refs = p;
  if (!(s = new_seg(t))) return KEEL_ENOMEM;
  s->ref = t->nrefs;
  s->off = s->len = 0;
  if (!(t->refs[t->nrefs] = strndup(name, n))) {
    t->nsegs--;
    return KEEL_ENOMEM;
  }
  t->nrefs++;
  return 0;
}

/* ---- parsing ------------------------------------------------------------ */

static int has_close(const char *p, size_t len, size_t i) {
  for (; i + 1 < len; i++)
    if (p[i] == '}' && p[i + 1] == '}') return 1;
  return 0;
}

/* Parses the reference whose "{{" is at p[o]; *next = the offset after its
 * "}}". */
static int parse_ref(keel_tmpl_t *t, const char *p, size_t len, size_t o, size_t *next,
                     keel_err_t *e) {
  size_t i = o + 2, n = 0, at, name_at;
  char why[64], q[200];
  int escape = 0, rc = 0;

  /* Checked first so that a forgotten "}}" points at the "{{" it belongs
   * to, not at wherever the scan happened to stop. */
  if (!has_close(p, len, i)) {
    rc = fail(e, o, "unterminated '{{'");
    goto out;
  }
  while (i < len && is_ws((unsigned char)p[i])) i++;
  name_at = i;
  if (p[i] == '\'') {
    if (len - i >= 4 && !memcmp(p + i, "'{{'", 4)) {
      escape = 1;
      n = 4;
    } else {
      rc = fail(e, i, "only '{{' may be quoted inside '{{ }}'");
      goto out;
    }
  } else {
    /* A name is scanned as a run up to whitespace or "}}" and validated
     * after, so the message can quote all of it. */
    while (i + n < len && !is_ws((unsigned char)p[i + n]) &&
           !(p[i + n] == '}' && i + n + 1 < len && p[i + n + 1] == '}'))
      n++;
    if (n == 0) {
      rc = fail(e, i, "expected a name like params.x");
      goto out;
    }
    if (name_problem(p + i, n, &at, why)) {
      k_msg_quote(q, p + i, n);
      rc = fail(e, i + at, "name '%s': %s", q, why);
      goto out;
    }
  }
  i += n;
  while (i < len && is_ws((unsigned char)p[i])) i++;
  if (i + 1 >= len || p[i] != '}' || p[i + 1] != '}') {
    k_msg_quote(q, p + name_at, n);
    if (escape) rc = fail(e, i, "expected '}}' after the quoted '{{'");
    else rc = fail(e, i, "expected '}}' after '%s'", q);
    goto out;
  }
  if (escape) {
    rc = add_lit(t, "{{", 2);
  } else if (t->nrefs == TMPL_REFS_MAX) {
    rc = fail(e, o, "more than %d references", TMPL_REFS_MAX);
    goto out;
  } else {
    rc = add_ref(t, p + name_at, n);
  }
  if (rc) {
    rc = keel_err_set(e, rc, "out of memory");
    goto out;
  }
  *next = i + 2;
out:
  return rc;
}

int keel_tmpl_parse(const char *text, size_t len, keel_tmpl_t **out, keel_err_t *e) {
  keel_tmpl_t *t = NULL;
  size_t i = 0;
  int rc = 0;

  *out = NULL;
  if (len > TMPL_TEXT_MAX) {
    rc = fail(e, TMPL_TEXT_MAX, "text longer than %d bytes", TMPL_TEXT_MAX);
    goto out;
  }
  if (!text && len) {
    rc = keel_err_set(e, KEEL_EINVAL, "column 1: no text");
    goto out;
  }
  if (!(t = calloc(1, sizeof *t)) || !(t->lit = malloc(len + 1))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  t->lit[0] = '\0';
  while (i < len) {
    size_t run = 0;
    /* A NUL could not survive into an argv element or a C string, so it is
     * refused here rather than truncating output later. */
    while (i + run < len && text[i + run] != '\0' &&
           !(text[i + run] == '{' && i + run + 1 < len && text[i + run + 1] == '{'))
      run++;
    if ((rc = add_lit(t, text + i, run))) {
      rc = keel_err_set(e, rc, "out of memory");
      goto out;
    }
    i += run;
    if (i == len) break;
    if (text[i] == '\0') {
      rc = fail(e, i, "NUL byte");
      goto out;
    }
    if ((rc = parse_ref(t, text, len, i, &i, e))) goto out;
  }
  *out = t;
  t = NULL;
out:
  keel_tmpl_free(t);
  return rc;
}

size_t keel_tmpl_nrefs(const keel_tmpl_t *t) { return t ? t->nrefs : 0; }

const char *keel_tmpl_ref(const keel_tmpl_t *t, size_t i) {
  return t && i < t->nrefs ? t->refs[i] : NULL;
}

/* ---- rendering ---------------------------------------------------------- */

/* 'v' with each ' written '\'' : inside single quotes /bin/sh gives every
 * byte its literal meaning, and the only byte that can end them is ' itself,
 * which is closed, backslash-escaped and reopened.  The result is exactly
 * one word even when v is empty (''). */
static int shell_quote(keel_buf_t *b, const char *v, size_t n) {
  int rc = keel_buf_append(b, "'", 1);
  while (!rc && n) {
    const char *q = memchr(v, '\'', n);
    size_t run = q ? (size_t)(q - v) : n;
    rc = keel_buf_append(b, v, run);
    if (!rc && q) rc = keel_buf_append(b, "'\\''", 4), run++;
    v += run;
    n -= run;
  }
  if (!rc) rc = keel_buf_append(b, "'", 1);
  return rc;
}

int keel_tmpl_render(const keel_tmpl_t *t, keel_tmpl_mode_t mode, keel_tmpl_lookup_fn lookup,
                     void *ud, keel_buf_t *out, keel_err_t *e) {
  keel_buf_t tmp;
  int rc = 0;

  /* Rendered into a buffer of its own, with what is left of out's cap, and
   * appended in one go: "on error out is left as it was" then holds without
   * undoing anything. */
  keel_buf_init(&tmp, out && out->len < out->max ? out->max - out->len : 0);
  if (!t || !out) {
    rc = keel_err_set(e, KEEL_EINVAL, "no template or no output buffer");
    goto out;
  }
  if (mode != KEEL_TMPL_RAW && mode != KEEL_TMPL_SHELL) {
    rc = keel_err_set(e, KEEL_EINVAL, "unknown template mode %d", (int)mode);
    goto out;
  }
  for (size_t i = 0; i < t->nsegs; i++) {
    const seg_t *s = &t->segs[i];
    const char *name, *v = NULL;
    size_t vlen = 0;

    if (s->ref == SEG_LITERAL) {
      rc = keel_buf_append(&tmp, t->lit + s->off, s->len);
      if (rc) goto append_failed;
      continue;
    }
    name = t->refs[s->ref];
    rc = lookup ? lookup(ud, name, &v, &vlen) : KEEL_ENOENT;
    if (rc == KEEL_ENOENT) {
      rc = keel_err_set(e, KEEL_EINVAL, "unknown name '%s'", name);
      goto out;
    }
    if (rc) {
      rc = keel_err_set(e, rc, "looking up '%s': %s", name, keel_strerror(rc));
      goto out;
    }
    if (!v) {
      if (vlen) {
        rc = keel_err_set(e, KEEL_EINVAL, "no value for '%s'", name);
        goto out;
      }
      v = "";
    }
    if (memchr(v, '\0', vlen)) {
      rc = keel_err_set(e, KEEL_EINVAL, "the value of '%s' contains a NUL byte", name);
      goto out;
    }
    rc = mode == KEEL_TMPL_SHELL ? shell_quote(&tmp, v, vlen) : keel_buf_append(&tmp, v, vlen);
    if (rc) goto append_failed;
  }
  rc = keel_buf_append(out, tmp.data ? tmp.data : "", tmp.len);
  if (rc) goto append_failed;
  goto out;
append_failed:
  if (rc == KEEL_ETOOBIG)
    keel_err_set(e, rc, "rendered text longer than %zu bytes", out->max);
  else
    keel_err_set(e, rc, "out of memory");
out:
  keel_buf_free(&tmp);
  return rc;
}

int keel_tmpl_expand(const char *text, size_t len, keel_tmpl_mode_t mode,
                     keel_tmpl_lookup_fn lookup, void *ud, keel_buf_t *out, keel_err_t *e) {
  keel_tmpl_t *t = NULL;
  int rc = keel_tmpl_parse(text, len, &t, e);
  if (rc) goto out;
  rc = keel_tmpl_render(t, mode, lookup, ud, out, e);
out:
  keel_tmpl_free(t);
  return rc;
}
