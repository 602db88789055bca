/* scrape/expfmt.c — Prometheus text 0.0.4 and OpenMetrics 1.0 parsing.
 *
 * One pass over the body, line by line, into a k_expfmt_set_t; delivery
 * happens only after the last line parsed (expfmt.h).  Families (from
 * HELP/TYPE/UNIT lines, or implied by a sample's name) are kept in a hash
 * table keyed by name so that suffixed samples (_bucket, _total, ...) find
 * their family and metadata order can be checked.  Series identity is
 * checked with a second hash table over the samples' label sets.  Both
 * tables hash with SipHash under a key drawn per parse, so a target cannot
 * choose names that collide and turn a scrape quadratic.
 */
#include "scrape/expfmt.h"

#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keel/grow.h"

#define BLK_SIZE ((size_t)64 << 10)
#define INTERN_MAX 128 /* longer strings are copied, not shared */
#define FLOAT_MAX 256  /* longest float literal accepted, bytes */

/* ---- the arena: strings of one set --------------------------------------- */

typedef struct blk {
  struct blk *next;
  size_t used, cap;
  char data[];
} blk_t;

typedef struct islot {
  uint64_t h;
  const char *p; /* NULL: empty */
  size_t n;
} islot_t;

struct k_expfmt_arena {
  blk_t *head;
  islot_t *slots; /* interned strings; power-of-two size */
  size_t nslots, nused;
  unsigned char key[crypto_shorthash_KEYBYTES];
};

static uint64_t hash(const unsigned char *key, const void *p, size_t n) {
  unsigned char out[crypto_shorthash_BYTES];
  uint64_t h;
  crypto_shorthash(out, p, n, key);
  memcpy(&h, out, sizeof h);
  return h;
}

static struct k_expfmt_arena *arena_new(void) {
  struct k_expfmt_arena *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  /* sodium_init makes randombytes thread-safe; repeated calls are cheap. */
  if (sodium_init() < 0) {
    free(a);
    return NULL;
  }
  randombytes_buf(a->key, sizeof a->key);
  return a;
}

static void arena_free(struct k_expfmt_arena *a) {
  if (!a) return;
  for (blk_t *b = a->head, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(a->slots);
  free(a);
}

static char *arena_alloc(struct k_expfmt_arena *a, size_t n) {
  blk_t *b = a->head;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > BLK_SIZE / 4 ? n : BLK_SIZE;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->used = 0;
    b->cap = cap;
    if (cap == n && a->head) {
      /* A big string gets a block of its own behind the current one, so
       * the current block's free space is not wasted. */
      b->next = a->head->next;
      a->head->next = b;
    } else {
      b->next = a->head;
      a->head = b;
    }
  }
  b->used += n;
  return b->data + b->used - n;
}

static int intern_grow(struct k_expfmt_arena *a) {
  size_t n = a->nslots ? a->nslots * 2 : 1024;
  islot_t *s = calloc(n, sizeof *s);
  if (!s) return KEEL_ENOMEM;
  for (size_t i = 0; i < a->nslots; i++) {
    size_t j;
    if (!a->slots[i].p) continue;
    for (j = a->slots[i].h & (n - 1); s[j].p; j = (j + 1) & (n - 1)) {
    }
    s[j] = a->slots[i];
  }
  free(a->slots);
  a->slots = s;
  a->nslots = n;
  return 0;
}

const char *k_expfmt_set_str(k_expfmt_set_t *s, const char *p, size_t n) {
  struct k_expfmt_arena *a = s->arena;
  islot_t *slot = NULL;
  uint64_t h = 0;
  char *copy;

  if (!a && !(a = s->arena = arena_new())) return NULL;
  if (n <= INTERN_MAX) {
    if (a->nused * 2 >= a->nslots && intern_grow(a)) return NULL;
    h = hash(a->key, p, n);
    for (size_t j = h & (a->nslots - 1);; j = (j + 1) & (a->nslots - 1)) {
      slot = &a->slots[j];
      if (!slot->p) break;
      if (slot->h == h && slot->n == n && !memcmp(slot->p, p, n)) return slot->p;
    }
  }
  if (!(copy = arena_alloc(a, n + 1))) return NULL;
  memcpy(copy, p, n);
  copy[n] = '\0';
  if (slot) {
    slot->h = h;
    slot->p = copy;
    slot->n = n;
    a->nused++;
  }
  return copy;
}

/* ---- sets ----------------------------------------------------------------- */

void k_expfmt_set_init(k_expfmt_set_t *s) { memset(s, 0, sizeof *s); }

void k_expfmt_set_free(k_expfmt_set_t *s) {
  free(s->v);
  free(s->lab);
  arena_free(s->arena);
  memset(s, 0, sizeof *s);
}

int k_expfmt_set_add(k_expfmt_set_t *s, const k_label_t *labels, size_t n, int64_t t_ms,
                     double v) {
  if (s->sealed) return KEEL_EINVAL;
  k_expfmt_sample_t *nv = keel_grow(s->v, &s->cap, s->n, sizeof *nv, 256);
  if (!nv) return KEEL_ENOMEM;
  s->v = nv;
  if (s->labcap - s->nlab < n) {
    size_t cap = s->labcap ? s->labcap : 1024;
    k_label_t *nl;
    while (cap - s->nlab < n) cap *= 2;
    if (!(nl = realloc(s->lab, cap * sizeof *nl))) return KEEL_ENOMEM;
    s->lab = nl;
    s->labcap = cap;
  }
  if (n) memcpy(s->lab + s->nlab, labels, n * sizeof *labels);
  s->nlab += n;
  /* labels stays NULL until seal: lab may still move. */
  s->v[s->n++] = (k_expfmt_sample_t){NULL, n, t_ms, v};
  return 0;
}

void k_expfmt_set_seal(k_expfmt_set_t *s) {
  size_t off = 0;
  for (size_t i = 0; i < s->n; i++) {
    s->v[i].labels = s->lab + off;
    off += s->v[i].n;
  }
  s->sealed = 1;
}

void k_expfmt_set_take_arena(k_expfmt_set_t *dst, k_expfmt_set_t *src) {
  arena_free(dst->arena);
  dst->arena = src->arena;
  src->arena = NULL;
}

k_expfmt_kind_t k_expfmt_kind(const char *ct) {
  static const char om[] = "application/openmetrics-text";
  if (!ct) return K_EXPFMT_TEXT;
  while (*ct == ' ' || *ct == '\t') ct++;
  if (strncasecmp(ct, om, sizeof om - 1)) return K_EXPFMT_TEXT;
  ct += sizeof om - 1;
  return (!*ct || *ct == ';' || *ct == ' ' || *ct == '\t') ? K_EXPFMT_OPENMETRICS : K_EXPFMT_TEXT;
}

/* ---- the parser ----------------------------------------------------------- */

enum {
  T_UNTYPED = 0, /* "untyped" in 0.0.4, "unknown" in OpenMetrics */
  T_COUNTER,
  T_GAUGE,
  T_HISTOGRAM,
  T_SUMMARY,
  T_GAUGEHISTOGRAM,
  T_STATESET,
  T_INFO,
};

typedef struct fam {
  const char *name; /* into the body */
  size_t len;
  uint64_t h;
  unsigned char type, help, typed, unit, samples;
} fam_t;

typedef struct sinfo {
  size_t off; /* first label in out->lab */
  size_t line;
  uint64_t h;
} sinfo_t;

typedef struct P {
  const char *end;       /* of the body */
  const char *le;        /* end of the current line: its '\n' or end */
  size_t line;
  int om;
  k_expfmt_limits_t lim;
  k_expfmt_set_t *out;
  keel_err_t *e;
  unsigned char key[crypto_shorthash_KEYBYTES];

  fam_t *fams;
  size_t nfam, famcap;
  size_t *ftab; /* family index + 1; 0 empty */
  size_t nftab;
  size_t cur;   /* OpenMetrics: current family index + 1, 0 none */

  sinfo_t *si;  /* per sample of out */
  size_t sicap;
  size_t *dtab; /* sample index + 1 */
  size_t ndtab;

  k_label_t *lab; /* labels of the line being parsed, max_labels + 1 */
  char *vbuf;     /* an unescaped label value, max_value_len + 1 */
  unsigned char *kbuf; /* a label set serialized for hashing */
  size_t kcap;
} P;

__attribute__((format(printf, 3, 4))) static int perr(P *p, int code, const char *fmt, ...) {
  char what[224];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return keel_err_set(p->e, code, "line %zu: %s", p->line, what);
}

/* Body text fit to quote in a message: at most 40 bytes, control and
 * non-ASCII bytes as '?'. */
static const char *quote(char buf[48], const char *s, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j < 40; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[j++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
  }
  if (n > 40) {
    memcpy(buf + j, "...", 3);
    j += 3;
  }
  buf[j] = '\0';
  return buf;
}

static int is_mstart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
static int is_lstart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Valid UTF-8 (RFC 3629: no overlongs, surrogates or code points beyond
 * U+10FFFF).  *runes gets the number of code points. */
static int utf8_ok(const char *s, size_t n, size_t *runes) {
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  size_t r = 0;
  while (p < end) {
    size_t k;
    unsigned char c = *p;
    if (c < 0x80) k = 1;
    else if (c >= 0xc2 && c <= 0xdf) k = 2;
    else if (c >= 0xe0 && c <= 0xef) k = 3;
    else if (c >= 0xf0 && c <= 0xf4) k = 4;
    else return 0;
    if ((size_t)(end - p) < k) return 0;
    for (size_t i = 1; i < k; i++)
      if ((p[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f))
      return 0;
    p += k;
    r++;
  }
  if (runes) *runes = r;
  return 1;
}

/* A float as Prometheus reads it (strconv.ParseFloat without hex and '_'):
 * 0 or -1. */
static int parse_float(const char *s, size_t n, double *out) {
  char buf[FLOAT_MAX];
  const char *p = s, *end = s + n, *q;
  int neg = 0, digits = 0;
  char *stop;
  double v;

  if (n == 0 || n >= sizeof buf) return -1;
  if (*p == '+' || *p == '-') neg = *p++ == '-';
  q = p;
  if ((end - q == 3 && !strncasecmp(q, "inf", 3)) || (end - q == 8 && !strncasecmp(q, "infinity", 8))) {
    *out = neg ? -INFINITY : INFINITY;
    return 0;
  }
  if (p == s && end - q == 3 && !strncasecmp(q, "nan", 3)) {
    *out = NAN;
    return 0;
  }
  while (p < end && is_digit(*p)) p++, digits++;
  if (p < end && *p == '.') {
    p++;
    while (p < end && is_digit(*p)) p++, digits++;
  }
  if (!digits) return -1;
  if (p < end && (*p == 'e' || *p == 'E')) {
    int ed = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    while (p < end && is_digit(*p)) p++, ed++;
    if (!ed) return -1;
  }
  if (p != end) return -1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  /* keeld never calls setlocale: strtod reads '.' as the decimal point. */
  v = strtod(buf, &stop);
  if (stop != buf + n || isinf(v)) return -1; /* a finite literal beyond double range */
  *out = v;
  return 0;
}

/* Decimal int64 with an optional '-': 0 or -1 (syntax or overflow). */
static int parse_int64(const char *s, size_t n, int64_t *out) {
  const char *p = s, *end = s + n;
  int neg = 0;
  uint64_t v = 0, lim;
  if (p < end && *p == '-') neg = 1, p++;
  if (p == end) return -1;
  lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; p < end; p++) {
    unsigned d;
    if (!is_digit(*p)) return -1;
    d = (unsigned)(*p - '0');
    if (v > (lim - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
  return 0;
}

/* ---- families ----- */

static size_t fam_slot(P *p, const char *name, size_t len, uint64_t h, int *found) {
  size_t mask = p->nftab - 1;
  for (size_t j = h & mask;; j = (j + 1) & mask) {
    size_t i = p->ftab[j];
    if (!i) {
      *found = 0;
      return j;
    }
    if (p->fams[i - 1].h == h && p->fams[i - 1].len == len && !memcmp(p->fams[i - 1].name, name, len)) {
      *found = 1;
      return j;
    }
  }
}

static fam_t *fam_find(P *p, const char *name, size_t len) {
  int found;
  size_t j;
  if (!p->nftab) return NULL;
  j = fam_slot(p, name, len, hash(p->key, name, len), &found);
  return found ? &p->fams[p->ftab[j] - 1] : NULL;
}

static int fam_add(P *p, const char *name, size_t len, fam_t **out) {
  uint64_t h = hash(p->key, name, len);
  int found;
  size_t j;
  fam_t *nf = keel_grow(p->fams, &p->famcap, p->nfam, sizeof *nf, 64);
  if (!nf) return KEEL_ENOMEM;
  p->fams = nf;
  if ((p->nfam + 1) * 2 > p->nftab) {
    size_t n = p->nftab ? p->nftab * 2 : 128;
    size_t *t = calloc(n, sizeof *t);
    if (!t) return KEEL_ENOMEM;
    free(p->ftab);
    p->ftab = t;
    p->nftab = n;
    for (size_t i = 0; i < p->nfam; i++) {
      j = fam_slot(p, p->fams[i].name, p->fams[i].len, p->fams[i].h, &found);
      p->ftab[j] = i + 1;
    }
  }
  j = fam_slot(p, name, len, h, &found);
  p->fams[p->nfam] = (fam_t){.name = name, .len = len, .h = h};
  p->ftab[j] = ++p->nfam;
  *out = &p->fams[p->nfam - 1];
  return 0;
}

static const char *type_name(int om, int t) {
  static const char *const names[] = {"untyped", "counter",        "gauge",    "histogram",
                                      "summary", "gaugehistogram", "stateset", "info"};
  return t == T_UNTYPED && om ? "unknown" : names[t];
}

static int type_parse(int om, const char *s, size_t n) {
  for (int t = 0; t <= T_INFO; t++) {
    const char *name = type_name(om, t);
    if (!om && t > T_SUMMARY) break;
    if (strlen(name) == n && !memcmp(name, s, n)) return t;
  }
  return -1;
}

/* The sample-name suffixes a family of type t owns ("" is the bare name). */
static int suffix_ok(int om, int t, const char *sfx) {
  static const char *const text[][4] = {
      [T_UNTYPED] = {""},
      [T_COUNTER] = {""},
      [T_GAUGE] = {""},
      [T_HISTOGRAM] = {"_bucket", "_count", "_sum"},
      [T_SUMMARY] = {"", "_count", "_sum"},
  };
  static const char *const open[][4] = {
      [T_UNTYPED] = {""},
      [T_COUNTER] = {"_total", "_created"},
      [T_GAUGE] = {""},
      [T_HISTOGRAM] = {"_bucket", "_count", "_sum", "_created"},
      [T_SUMMARY] = {"", "_count", "_sum", "_created"},
      [T_GAUGEHISTOGRAM] = {"_bucket", "_gcount", "_gsum"},
      [T_STATESET] = {""},
      [T_INFO] = {"_info"},
  };
  const char *const *list = om ? open[t] : text[t];
  for (int i = 0; i < 4 && list[i]; i++)
    if (!strcmp(list[i], sfx)) return 1;
  return 0;
}

static const char *const suffixes[] = {"_total", "_created", "_bucket", "_count",
                                       "_sum",   "_gcount",  "_gsum",   "_info"};

/* The family a sample named name[0..len) belongs to, creating an untyped
 * one named after it when none claims it.  *sfx gets the suffix. */
static int fam_of_sample(P *p, const char *name, size_t len, fam_t **out, const char **sfx) {
  fam_t *f = fam_find(p, name, len), *g;
  char b[48], b2[48];
  int rc;

  *sfx = "";
  if (f && suffix_ok(p->om, f->type, "")) goto found;
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    size_t sl = strlen(suffixes[i]);
    if (len <= sl || memcmp(name + len - sl, suffixes[i], sl)) continue;
    g = fam_find(p, name, len - sl);
    if (g && suffix_ok(p->om, g->type, suffixes[i])) {
      f = g;
      *sfx = suffixes[i];
      goto found;
    }
  }
  if (f)
    return perr(p, KEEL_EINVAL, "%s family '%s' has no sample named '%s'",
                type_name(p->om, f->type), quote(b, name, len), quote(b2, name, len));
  if ((rc = fam_add(p, name, len, &f))) return rc;
  if (p->om) p->cur = (size_t)(f - p->fams) + 1;
found:
  if (p->om && p->cur != (size_t)(f - p->fams) + 1)
    return perr(p, KEEL_EINVAL, "metric family '%s' appeared before: its lines must be contiguous",
                quote(b, f->name, f->len));
  *out = f;
  return 0;
}

/* A HELP, TYPE or UNIT line for name[0..len): kind 'H', 'T' or 'U'. */
static int fam_meta(P *p, const char *name, size_t len, int kind, fam_t **out) {
  const char *what = kind == 'H' ? "HELP" : kind == 'T' ? "TYPE" : "UNIT";
  fam_t *f = fam_find(p, name, len);
  char b[48];
  int rc;

  if (!f) {
    if ((rc = fam_add(p, name, len, &f))) return rc;
    if (p->om) p->cur = (size_t)(f - p->fams) + 1;
  } else if (p->om && p->cur != (size_t)(f - p->fams) + 1) {
    return perr(p, KEEL_EINVAL, "metric family '%s' appeared before: its lines must be contiguous",
                quote(b, name, len));
  }
  if ((kind == 'H' && f->help) || (kind == 'T' && f->typed) || (kind == 'U' && f->unit))
    return perr(p, KEEL_EINVAL, "second %s line for '%s'", what, quote(b, name, len));
  if (f->samples && (p->om || kind == 'T'))
    return perr(p, KEEL_EINVAL, "%s line for '%s' after its samples", what, quote(b, name, len));
  if (kind == 'H') f->help = 1;
  if (kind == 'T') f->typed = 1;
  if (kind == 'U') f->unit = 1;
  *out = f;
  return 0;
}

/* ---- lines ----- */

static size_t scan_mname(const char *c, const char *le) {
  const char *q = c;
  if (q >= le || !is_mstart(*q)) return 0;
  while (q < le && (is_mstart(*q) || is_digit(*q))) q++;
  return (size_t)(q - c);
}

static size_t scan_lname(const char *c, const char *le) {
  const char *q = c;
  if (q >= le || !is_lstart(*q)) return 0;
  while (q < le && (is_lstart(*q) || is_digit(*q))) q++;
  return (size_t)(q - c);
}

static const char *skip_blanks(P *p, const char *c) {
  if (!p->om)
    while (c < p->le && is_blank(*c)) c++;
  return c;
}

/* "{name="value",...}" at *cp (on '{'); labels go to p->lab from *n on.
 * With keep == 0 (an exemplar) they are checked and dropped; *runes gets
 * their length in code points, names and values together. */
static int parse_labels(P *p, const char **cp, size_t *n, int keep, size_t *runes) {
  const char *c = *cp + 1, *le = p->le;
  char b[48];
  *runes = 0;
  for (;;) {
    const char *nm, *v;
    size_t nl, vl = 0, r;
    c = skip_blanks(p, c);
    if (c < le && *c == '}') {
      c++;
      break;
    }
    if (!(nl = scan_lname(c, le))) {
      if (c >= le) return perr(p, KEEL_EINVAL, "expected a label name or '}', got the end of the line");
      return perr(p, KEEL_EINVAL, "expected a label name or '}', got '%s'", quote(b, c, 1));
    }
    nm = c;
    c += nl;
    if (nl > p->lim.max_name_len)
      return perr(p, KEEL_ETOOBIG, "label name longer than %zu bytes", p->lim.max_name_len);
    c = skip_blanks(p, c);
    if (c >= le || *c != '=')
      return perr(p, KEEL_EINVAL, "expected '=' after label name '%s'", quote(b, nm, nl));
    c = skip_blanks(p, c + 1);
    if (c >= le || *c != '"')
      return perr(p, KEEL_EINVAL, "expected '\"' to open the value of label '%s'", quote(b, nm, nl));
    for (c++;; c++) {
      char ch;
      if (c >= le)
        return perr(p, KEEL_EINVAL, "value of label '%s' has no closing '\"'", quote(b, nm, nl));
      if (*c == '"') break;
      ch = *c;
      if (ch == '\\' && c + 1 < le) {
        /* Prometheus unescapes these three and keeps any other pair. */
        char x = c[1];
        if (x == '\\' || x == '"' || x == 'n') {
          ch = x == 'n' ? '\n' : x;
          c++;
        }
      }
      if (vl == p->lim.max_value_len)
        return perr(p, KEEL_ETOOBIG, "value of label '%s' longer than %zu bytes", quote(b, nm, nl),
                    p->lim.max_value_len);
      p->vbuf[vl++] = ch;
    }
    c++;
    if (!utf8_ok(p->vbuf, vl, &r))
      return perr(p, KEEL_EINVAL, "value of label '%s' is not valid UTF-8", quote(b, nm, nl));
    if (keep) {
      if (*n >= p->lim.max_labels)
        return perr(p, KEEL_ETOOBIG, "more than %zu labels", p->lim.max_labels);
      p->lab[*n].name = k_expfmt_set_str(p->out, nm, nl);
      p->lab[*n].value = v = k_expfmt_set_str(p->out, p->vbuf, vl);
      if (!p->lab[*n].name || !v) return keel_err_set(p->e, KEEL_ENOMEM, "out of memory");
      (*n)++;
    }
    *runes += nl + r;
    c = skip_blanks(p, c);
    if (c < le && *c == ',') {
      c++;
      continue;
    }
    if (c < le && *c == '}') {
      c++;
      break;
    }
    return perr(p, KEEL_EINVAL, "expected ',' or '}' after the value of label '%s'", quote(b, nm, nl));
  }
  *cp = c;
  return 0;
}

/* Token up to the next separator (blank in 0.0.4, space in OpenMetrics). */
static size_t token(P *p, const char *c) {
  const char *q = c;
  while (q < p->le && *q != ' ' && (p->om || *q != '\t')) q++;
  return (size_t)(q - c);
}

/* An OpenMetrics timestamp (seconds) into ms, rounded. */
static int om_ts(P *p, const char *c, size_t n, int64_t *t) {
  double s;
  char b[48];
  if (parse_float(c, n, &s) || !isfinite(s) || fabs(s) >= 9.2e15)
    return perr(p, KEEL_EINVAL, "invalid timestamp '%s'", quote(b, c, n));
  *t = (int64_t)llround(s * 1000.0);
  return 0;
}

/* "# {labels} value [timestamp]" to the end of the line, at c ('#'). */
static int exemplar(P *p, const char *c, const fam_t *f, const char *sfx, const char *name,
                    size_t nlen) {
  size_t n = 0, runes, tl;
  double v;
  int64_t t;
  char b[48];
  int rc;
  if (!((f->type == T_COUNTER && !strcmp(sfx, "_total")) ||
        ((f->type == T_HISTOGRAM || f->type == T_GAUGEHISTOGRAM) && !strcmp(sfx, "_bucket"))))
    return perr(p, KEEL_EINVAL, "'%s' may not have an exemplar (only counters' _total and buckets)",
                quote(b, name, nlen));
  if (p->le - c < 3 || c[1] != ' ' || c[2] != '{')
    return perr(p, KEEL_EINVAL, "expected '# {' to start an exemplar");
  c += 2;
  if ((rc = parse_labels(p, &c, &n, 0, &runes))) return rc;
  if (runes > 128) return perr(p, KEEL_EINVAL, "exemplar labels longer than 128 characters");
  if (c >= p->le || *c != ' ' || !(tl = token(p, c + 1)))
    return perr(p, KEEL_EINVAL, "expected a value after the exemplar's labels");
  c++;
  if (parse_float(c, tl, &v)) return perr(p, KEEL_EINVAL, "invalid exemplar value '%s'", quote(b, c, tl));
  c += tl;
  if (c < p->le) {
    if (*c != ' ' || !(tl = token(p, c + 1)))
      return perr(p, KEEL_EINVAL, "unexpected '%s' after the exemplar's value", quote(b, c, (size_t)(p->le - c)));
    c++;
    if ((rc = om_ts(p, c, tl, &t))) return rc;
    c += tl;
    if (c < p->le)
      return perr(p, KEEL_EINVAL, "unexpected '%s' after the exemplar's timestamp",
                  quote(b, c, (size_t)(p->le - c)));
  }
  return 0;
}

static int cmp_label(const void *a, const void *b) {
  return strcmp(((const k_label_t *)a)->name, ((const k_label_t *)b)->name);
}

static const char *label_get(const k_label_t *l, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(l[i].name, name)) return l[i].value;
  return NULL;
}

/* "name{a="b",...}" of a sample, cut to fit 120 bytes, for messages. */
static const char *series_text(char buf[128], const k_label_t *l, size_t n) {
  const char *name = label_get(l, n, "__name__");
  size_t j = (size_t)snprintf(buf, 128, "%s", name ? name : "");
  int first = 1;
  for (size_t i = 0; i < n && j < 120; i++) {
    if (!strcmp(l[i].name, "__name__")) continue;
    j += (size_t)snprintf(buf + j, 128 - j, "%s%s=\"%s\"", first ? "{" : ",", l[i].name, l[i].value);
    first = 0;
  }
  if (!first && j < 120) j += (size_t)snprintf(buf + j, 128 - j, "}");
  if (j >= 120) {
    memcpy(buf + 116, "...", 4);
    j = 119;
  }
  for (size_t i = 0; i < j && buf[i]; i++)
    if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) buf[i] = '?';
  return buf;
}

static int same_labels(const k_label_t *a, const k_label_t *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((a[i].name != b[i].name && strcmp(a[i].name, b[i].name)) ||
        (a[i].value != b[i].value && strcmp(a[i].value, b[i].value)))
      return 0;
  return 1;
}

/* Adds the line's sample (labels in p->lab, sorted) to out unless its
 * series is there already. */
static int add_sample(P *p, size_t n, int64_t t, double v) {
  k_expfmt_set_t *o = p->out;
  size_t klen = 0, idx = o->n, mask;
  uint64_t h;
  char b1[128];
  int rc;

  if (o->n >= p->lim.max_samples)
    return perr(p, KEEL_ETOOBIG, "more than %zu samples", p->lim.max_samples);
  for (size_t i = 0; i < n; i++) {
    size_t a = strlen(p->lab[i].name) + 1, c = strlen(p->lab[i].value) + 1;
    if (p->kcap - klen < a + c) {
      size_t cap = p->kcap ? p->kcap : 1024;
      unsigned char *nk;
      while (cap - klen < a + c) cap *= 2;
      if (!(nk = realloc(p->kbuf, cap))) return keel_err_set(p->e, KEEL_ENOMEM, "out of memory");
      p->kbuf = nk;
      p->kcap = cap;
    }
    memcpy(p->kbuf + klen, p->lab[i].name, a);
    klen += a;
    memcpy(p->kbuf + klen, p->lab[i].value, c);
    klen += c;
  }
  h = hash(p->key, p->kbuf, klen);
  if ((o->n + 1) * 2 > p->ndtab) {
    size_t nt = p->ndtab ? p->ndtab * 2 : 1024;
    size_t *t2 = calloc(nt, sizeof *t2);
    if (!t2) return keel_err_set(p->e, KEEL_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->n; i++) {
      size_t j;
      for (j = p->si[i].h & (nt - 1); t2[j]; j = (j + 1) & (nt - 1)) {
      }
      t2[j] = i + 1;
    }
    free(p->dtab);
    p->dtab = t2;
    p->ndtab = nt;
  }
  mask = p->ndtab - 1;
  for (size_t j = h & mask;; j = (j + 1) & mask) {
    size_t i = p->dtab[j];
    if (!i) {
      p->dtab[j] = idx + 1;
      break;
    }
    i--;
    if (p->si[i].h == h && o->v[i].n == n && same_labels(o->lab + p->si[i].off, p->lab, n))
      return perr(p, KEEL_EINVAL, "duplicate series %s (first on line %zu)",
                  series_text(b1, p->lab, n), p->si[i].line);
  }
  sinfo_t *ns = keel_grow(p->si, &p->sicap, o->n, sizeof *ns, 256);
  if (!ns) return keel_err_set(p->e, KEEL_ENOMEM, "out of memory");
  p->si = ns;
  p->si[idx] = (sinfo_t){o->nlab, p->line, h};
  if ((rc = k_expfmt_set_add(o, p->lab, n, t, v))) return keel_err_set(p->e, rc, "out of memory");
  return 0;
}

static int sample_line(P *p, const char *c) {
  const char *name = c, *sfx = "", *vp, *ll;
  size_t nlen = scan_mname(c, p->le), n = 1, tl, runes;
  int64_t t = K_EXPFMT_NO_TS;
  fam_t *f = NULL;
  double v;
  char b[48];
  int rc;

  if (!nlen) return perr(p, KEEL_EINVAL, "expected a metric name, got '%s'", quote(b, c, 1));
  if (nlen > p->lim.max_name_len)
    return perr(p, KEEL_ETOOBIG, "metric name longer than %zu bytes", p->lim.max_name_len);
  c += nlen;
  p->lab[0].name = "__name__";
  if (!(p->lab[0].value = k_expfmt_set_str(p->out, name, nlen)))
    return keel_err_set(p->e, KEEL_ENOMEM, "out of memory");
  ll = c;
  c = skip_blanks(p, c);
  if (c < p->le && *c == '{') {
    if ((rc = parse_labels(p, &c, &n, 1, &runes))) return rc;
    ll = NULL; /* 0.0.4 needs no blank between '}' and the value */
  }

  /* the value: after one space in OpenMetrics, blanks in 0.0.4 */
  if (c >= p->le) return perr(p, KEEL_EINVAL, "expected a value after '%s'", quote(b, name, nlen));
  if (p->om) {
    if (*c != ' ') return perr(p, KEEL_EINVAL, "unexpected '%s' after the metric name", quote(b, c, 1));
    c++;
  } else {
    if (ll && c == ll) return perr(p, KEEL_EINVAL, "unexpected '%s' after the metric name", quote(b, c, 1));
    c = skip_blanks(p, c);
  }
  vp = c;
  if (!(tl = token(p, c))) return perr(p, KEEL_EINVAL, "expected a value after '%s'", quote(b, name, nlen));
  if (parse_float(c, tl, &v)) return perr(p, KEEL_EINVAL, "invalid value '%s'", quote(b, c, tl));
  c += tl;

  /* the timestamp, and in OpenMetrics an exemplar */
  if ((rc = fam_of_sample(p, name, nlen, &f, &sfx))) return rc;
  if (!p->om) {
    c = skip_blanks(p, c);
    if (c < p->le) {
      tl = token(p, c);
      if (parse_int64(c, tl, &t) || t == K_EXPFMT_NO_TS)
        return perr(p, KEEL_EINVAL, "invalid timestamp '%s'", quote(b, c, tl));
      c = skip_blanks(p, c + tl);
      if (c < p->le)
        return perr(p, KEEL_EINVAL, "unexpected '%s' after the timestamp",
                    quote(b, c, (size_t)(p->le - c)));
    }
  } else if (c < p->le) {
    c++; /* the one space the value stopped at */
    if (c < p->le && *c != '#') {
      if (!(tl = token(p, c)))
        return perr(p, KEEL_EINVAL, "unexpected space after the value '%s'", quote(b, vp, (size_t)(c - 1 - vp)));
      if ((rc = om_ts(p, c, tl, &t))) return rc;
      c += tl;
      if (c < p->le) {
        if (*c != ' ' || c + 1 >= p->le || c[1] != '#')
          return perr(p, KEEL_EINVAL, "unexpected '%s' after the timestamp",
                      quote(b, c, (size_t)(p->le - c)));
        c++;
      }
    }
    if (c < p->le && (rc = exemplar(p, c, f, sfx, name, nlen))) return rc;
    if (c >= p->le && c[-1] == ' ')
      return perr(p, KEEL_EINVAL, "unexpected space at the end of the line");
  }

  /* the label set */
  qsort(p->lab, n, sizeof *p->lab, cmp_label);
  for (size_t i = 1; i < n; i++)
    if (!strcmp(p->lab[i].name, p->lab[i - 1].name))
      return perr(p, KEEL_EINVAL, "duplicate label '%s'", p->lab[i].name);
  if ((f->type == T_HISTOGRAM || f->type == T_GAUGEHISTOGRAM) && !strcmp(sfx, "_bucket")) {
    const char *le = label_get(p->lab, n, "le");
    double x;
    if (!le || !*le) return perr(p, KEEL_EINVAL, "'%s' is a bucket without an 'le' label", quote(b, name, nlen));
    if (parse_float(le, strlen(le), &x))
      return perr(p, KEEL_EINVAL, "invalid 'le' value '%s'", quote(b, le, strlen(le)));
  } else if (f->type == T_SUMMARY && !*sfx) {
    const char *qv = label_get(p->lab, n, "quantile");
    double x;
    if (!qv || !*qv)
      return perr(p, KEEL_EINVAL, "'%s' is a summary quantile without a 'quantile' label",
                  quote(b, name, nlen));
    if (parse_float(qv, strlen(qv), &x))
      return perr(p, KEEL_EINVAL, "invalid 'quantile' value '%s'", quote(b, qv, strlen(qv)));
  }
  {
    /* An empty value is no label (Prometheus' model). */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (*p->lab[i].value) p->lab[k++] = p->lab[i];
    n = k;
  }
  f->samples = 1;
  return add_sample(p, n, t, v);
}

static int text_comment(P *p, const char *c) {
  const char *kw, *name;
  size_t kl, nl;
  fam_t *f = NULL;
  char b[48];
  int rc, t;

  c++; /* '#' */
  if (c >= p->le || !is_blank(*c)) return 0;
  c = skip_blanks(p, c);
  kw = c;
  kl = token(p, c);
  if (!((kl == 4 && !memcmp(kw, "HELP", 4)) || (kl == 4 && !memcmp(kw, "TYPE", 4)))) return 0;
  c = skip_blanks(p, c + kl);
  if (c >= p->le) return 0; /* "# HELP" alone: a comment, as in Go's expfmt */
  name = c;
  nl = scan_mname(c, p->le);
  if (!nl || (c + nl < p->le && !is_blank(c[nl])))
    return perr(p, KEEL_EINVAL, "%.4s: invalid metric name '%s'", kw, quote(b, c, token(p, c)));
  if (nl > p->lim.max_name_len)
    return perr(p, KEEL_ETOOBIG, "metric name longer than %zu bytes", p->lim.max_name_len);
  c = skip_blanks(p, c + nl);
  if ((rc = fam_meta(p, name, nl, kw[0], &f))) return rc;
  if (kw[0] == 'H') return 0; /* the help text is not kept */
  kl = token(p, c);
  if ((t = type_parse(0, c, kl)) < 0)
    return perr(p, KEEL_EINVAL, "TYPE: unknown type '%s' (counter, gauge, histogram, summary, untyped)",
                quote(b, c, kl));
  c = skip_blanks(p, c + kl);
  if (c < p->le) return perr(p, KEEL_EINVAL, "TYPE: unexpected '%s' after the type", quote(b, c, (size_t)(p->le - c)));
  f->type = (unsigned char)t;
  return 0;
}

static int om_comment(P *p, const char *c, int *eof) {
  const char *name, *kw = c + 2;
  size_t nl, rest;
  fam_t *f = NULL;
  char b[48];
  int rc, t;

  if (p->le - c == 5 && !memcmp(c, "# EOF", 5)) {
    *eof = 1;
    return 0;
  }
  if (p->le - c < 7 || c[1] != ' ' || c[6] != ' ' ||
      (memcmp(kw, "HELP", 4) && memcmp(kw, "TYPE", 4) && memcmp(kw, "UNIT", 4))) {
    if (p->le - c >= 5 && !memcmp(c, "# EOF", 5))
      return perr(p, KEEL_EINVAL, "unexpected text after '# EOF'");
    return perr(p, KEEL_EINVAL, "expected '# HELP', '# TYPE', '# UNIT' or '# EOF'");
  }
  c += 7;
  name = c;
  nl = scan_mname(c, p->le);
  if (!nl || (c + nl < p->le && c[nl] != ' '))
    return perr(p, KEEL_EINVAL, "%.4s: invalid metric name '%s'", kw, quote(b, c, token(p, c)));
  if (nl > p->lim.max_name_len)
    return perr(p, KEEL_ETOOBIG, "metric name longer than %zu bytes", p->lim.max_name_len);
  c += nl;
  if (c < p->le) c++; /* the space */
  rest = (size_t)(p->le - c);
  if ((rc = fam_meta(p, name, nl, kw[0], &f))) return rc;
  switch (kw[0]) {
  case 'H': return 0;
  case 'T':
    if ((t = type_parse(1, c, rest)) < 0)
      return perr(p, KEEL_EINVAL,
                  "TYPE: unknown type '%s' (counter, gauge, histogram, gaugehistogram, stateset, "
                  "info, summary, unknown)",
                  quote(b, c, rest));
    f->type = (unsigned char)t;
    return 0;
  default: /* UNIT */
    if (rest == 0) return 0;
    if (scan_mname(c, p->le) != rest)
      return perr(p, KEEL_EINVAL, "UNIT: invalid unit '%s'", quote(b, c, rest));
    if (nl < rest + 1 || memcmp(name + nl - rest, c, rest) || name[nl - rest - 1] != '_') {
      char b2[48];
      return perr(p, KEEL_EINVAL, "UNIT: metric name '%s' does not end in '_%s'", quote(b, name, nl),
                  quote(b2, c, rest));
    }
    return 0;
  }
}

static void p_free(P *p) {
  free(p->fams);
  free(p->ftab);
  free(p->si);
  free(p->dtab);
  free(p->lab);
  free(p->vbuf);
  free(p->kbuf);
}

int k_expfmt_parse_set(const char *text, size_t len, k_expfmt_kind_t kind,
                       const k_expfmt_limits_t *lim, k_expfmt_set_t *out, keel_err_t *e) {
  P p;
  const char *nul, *pos = text;
  int rc = 0, eof = 0;

  memset(&p, 0, sizeof p);
  k_expfmt_set_init(out);
  p.end = text + len;
  p.om = kind == K_EXPFMT_OPENMETRICS;
  p.out = out;
  p.e = e;
  if (lim) p.lim = *lim;
  if (!p.lim.max_body) p.lim.max_body = K_EXPFMT_MAX_BODY;
  if (!p.lim.max_samples) p.lim.max_samples = K_EXPFMT_MAX_SAMPLES;
  if (!p.lim.max_labels) p.lim.max_labels = K_EXPFMT_MAX_LABELS;
  if (!p.lim.max_name_len) p.lim.max_name_len = K_EXPFMT_MAX_NAME_LEN;
  if (!p.lim.max_value_len) p.lim.max_value_len = K_EXPFMT_MAX_VALUE_LEN;
  if (len > p.lim.max_body) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "body: %zu bytes, more than the limit of %zu", len,
                      p.lim.max_body);
    goto out;
  }
  if (sodium_init() < 0) {
    rc = keel_err_set(e, KEEL_EIO, "cannot initialise libsodium");
    goto out;
  }
  randombytes_buf(p.key, sizeof p.key);
  p.lab = calloc(p.lim.max_labels + 1, sizeof *p.lab);
  p.vbuf = malloc(p.lim.max_value_len + 1);
  if (!p.lab || !p.vbuf) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  /* A NUL would cut a C string short: refuse it where it is. */
  if ((nul = memchr(text, '\0', len))) {
    p.line = 1;
    for (const char *c = text; c < nul; c++) p.line += *c == '\n';
    rc = perr(&p, KEEL_EINVAL, "NUL byte");
    goto out;
  }
  while (pos < p.end) {
    const char *c;
    p.le = memchr(pos, '\n', (size_t)(p.end - pos));
    if (!p.le) p.le = p.end;
    p.line++;
    c = pos;
    if (p.om) {
      if (c == p.le) rc = perr(&p, KEEL_EINVAL, "empty line");
      else if (*c == '#') rc = om_comment(&p, c, &eof);
      else rc = sample_line(&p, c);
    } else {
      c = skip_blanks(&p, c);
      if (c == p.le) rc = 0;
      else if (*c == '#') rc = text_comment(&p, c);
      else rc = sample_line(&p, c);
    }
    if (rc) goto out;
    pos = p.le + 1;
    if (eof) {
      if (pos < p.end) {
        p.line++;
        rc = perr(&p, KEEL_EINVAL, "unexpected data after '# EOF'");
        goto out;
      }
      break;
    }
  }
  if (p.om && !eof) {
    p.line++;
    rc = perr(&p, KEEL_EINVAL, "missing '# EOF' at the end");
    goto out;
  }
  k_expfmt_set_seal(out);
out:
  if (rc) {
    k_expfmt_set_free(out);
    k_expfmt_set_init(out);
  }
  p_free(&p);
  return rc;
}

int k_expfmt_parse(const char *text, size_t len, k_expfmt_kind_t kind, k_expfmt_fn fn, void *ud,
                   keel_err_t *e) {
  k_expfmt_set_t s;
  int rc;
  if ((rc = k_expfmt_parse_set(text, len, kind, NULL, &s, e))) goto out;
  for (size_t i = 0; i < s.n; i++) {
    const k_expfmt_sample_t *x = &s.v[i];
    if ((rc = fn(ud, x->labels, x->n, x->t_ms, x->v))) goto out;
  }
out:
  k_expfmt_set_free(&s);
  return rc;
}
