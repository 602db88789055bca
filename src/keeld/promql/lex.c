/* promql/lex.c — the arena, error helpers, and the lexer: Prometheus 2.42's
 * promql/parser/lex.go state machine, run to completion up front.  Its
 * error texts are Prometheus' own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "promql/internal.h"

/* ---- arena --------------------------------------------------------------- */

typedef struct pq_chunk {
  struct pq_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} pq_chunk_t;

struct k_pq_arena {
  pq_chunk_t *head;
};

k_pq_arena_t *pq_arena_new(void) { return calloc(1, sizeof(k_pq_arena_t)); }

void pq_arena_free(k_pq_arena_t *a) {
  if (!a) return;
  for (pq_chunk_t *c = a->head, *n; c; c = n) {
    n = c->next;
    free(c);
  }
  free(a);
}

void *pq_alloc(k_pq_arena_t *a, size_t n) {
  pq_chunk_t *c = a->head;
  void *p;
  n = (n + 15) & ~(size_t)15;
  if (n == 0) n = 16;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > 32768 ? n : 32768;
    pq_chunk_t *nc = malloc(sizeof(pq_chunk_t) + cap);
    if (!nc) return NULL;
    nc->used = 0;
    nc->cap = cap;
    /* A big one-off allocation goes behind the current chunk so the
     * current chunk's free space stays usable. */
    if (c && n > 32768) {
      nc->next = c->next;
      c->next = nc;
    } else {
      nc->next = c;
      a->head = nc;
    }
    c = nc;
  }
  p = c->data + c->used;
  c->used += n;
  memset(p, 0, n);
  return p;
}

void *pq_arena_grow(k_pq_arena_t *a, void *p, size_t *cap, size_t n, size_t elem, size_t first) {
  size_t nc;
  void *np;
  if (n < *cap) return p;
  nc = *cap ? *cap * 2 : first;
  if (nc <= *cap || (elem && nc > SIZE_MAX / elem)) return NULL;
  if (!(np = pq_alloc(a, nc * elem))) return NULL;
  if (n) memcpy(np, p, n * elem);
  *cap = nc;
  return np;
}

char *pq_strndup(k_pq_arena_t *a, const char *s, size_t n) {
  char *p = pq_alloc(a, n + 1);
  if (p) {
    if (n) memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* ---- errors ---------------------------------------------------------- */

const char *k_promql_errtype_name(k_promql_errtype_t t) {
  switch (t) {
  case K_PROMQL_ERR_BAD_DATA: return "bad_data";
  case K_PROMQL_ERR_EXECUTION: return "execution";
  case K_PROMQL_ERR_INTERNAL: return "internal";
  default: return "";
  }
}

int pq_err(k_promql_err_t *e, int code, k_promql_errtype_t type, const char *fmt, ...) {
  if (e) {
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    e->type = type;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    /* One line, always: embedded label values may carry newlines. */
    for (char *p = e->msg; *p; p++)
      if (*p == '\n' || *p == '\r') *p = ' ';
  }
  return code;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n, unsigned *cp) {
  unsigned c = s[0], r;
  size_t len;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xc2 && c <= 0xdf) len = 2, r = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) len = 3, r = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) len = 4, r = c & 0x07;
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    r = (r << 6) | (s[i] & 0x3f);
  }
  if ((len == 3 && r < 0x800) || (len == 4 && (r < 0x10000 || r > 0x10ffff)) ||
      (r >= 0xd800 && r <= 0xdfff))
    return 0;
  *cp = r;
  return len;
}

/* Go's strconv.Quote, for ASCII exactly; valid multi-byte UTF-8 is kept. */
void pq_quote(char *buf, size_t cap, const char *s, size_t n) {
  size_t o = 0;
#define PUT(ch)                         \
  do {                                  \
    if (o + 1 < cap) buf[o++] = (ch);   \
  } while (0)
  if (!cap) return;
  PUT('"');
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    unsigned cp;
    size_t l;
    if (c >= 0x80) {
      l = utf8_len((const unsigned char *)s + i, n - i, &cp);
      if (l) {
        for (size_t k = 0; k < l; k++) PUT(s[i + k]);
        i += l;
      } else {
        char h[5];
        snprintf(h, sizeof h, "\\x%02x", c);
        for (int k = 0; h[k]; k++) PUT(h[k]);
        i++;
      }
      continue;
    }
    i++;
    switch (c) {
    case '"': PUT('\\'); PUT('"'); break;
    case '\\': PUT('\\'); PUT('\\'); break;
    case '\a': PUT('\\'); PUT('a'); break;
    case '\b': PUT('\\'); PUT('b'); break;
    case '\f': PUT('\\'); PUT('f'); break;
    case '\n': PUT('\\'); PUT('n'); break;
    case '\r': PUT('\\'); PUT('r'); break;
    case '\t': PUT('\\'); PUT('t'); break;
    case '\v': PUT('\\'); PUT('v'); break;
    default:
      if (c < 0x20 || c == 0x7f) {
        char h[5];
        snprintf(h, sizeof h, "\\x%02x", c);
        for (int k = 0; h[k]; k++) PUT(h[k]);
      } else {
        PUT((char)c);
      }
    }
  }
  PUT('"');
  buf[o] = '\0';
#undef PUT
}

/* ---- lexer ----------------------------------------------------------- */

typedef struct lexer {
  k_pq_arena_t *a;
  const char *s;
  size_t len, start, pos;
  int paren_depth;
  int brace_open, bracket_open, got_colon;
  char string_open;
  pq_tok_t *toks;
  size_t n, cap;
  int done, oom;
} lexer_t;

static const struct {
  const char *word;
  pq_tok_type_t type;
} keywords[] = {
    {"and", T_LAND},
    {"or", T_LOR},
    {"unless", T_LUNLESS},
    {"atan2", T_ATAN2},
    {"sum", T_SUM},
    {"avg", T_AVG},
    {"count", T_COUNT},
    {"min", T_MIN},
    {"max", T_MAX},
    {"group", T_GROUP},
    {"stddev", T_STDDEV},
    {"stdvar", T_STDVAR},
    {"topk", T_TOPK},
    {"bottomk", T_BOTTOMK},
    {"count_values", T_COUNT_VALUES},
    {"quantile", T_QUANTILE},
    {"offset", T_OFFSET},
    {"by", T_BY},
    {"without", T_WITHOUT},
    {"on", T_ON},
    {"ignoring", T_IGNORING},
    {"group_left", T_GROUP_LEFT},
    {"group_right", T_GROUP_RIGHT},
    {"bool", T_BOOL},
    {"start", T_START},
    {"end", T_END},
    {"inf", T_NUMBER},
    {"nan", T_NUMBER},
};

int pq_tok_is_operator(pq_tok_type_t t) { return t >= T_ADD && t <= T_LUNLESS; }
int pq_tok_is_aggregator(pq_tok_type_t t) { return t >= T_SUM && t <= T_QUANTILE; }
int pq_tok_is_keyword(pq_tok_type_t t) { return t >= T_OFFSET && t <= T_END; }

static int is_alpha(int c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alnum(int c) { return is_alpha(c) || is_digit(c); }
static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

#define L_EOF (-1)

static int lx_peek(const lexer_t *l) {
  return l->pos < l->len ? (unsigned char)l->s[l->pos] : L_EOF;
}
static int lx_next(lexer_t *l) {
  int c = lx_peek(l);
  if (c != L_EOF) l->pos++;
  return c;
}
/* Only after a successful lx_next of one byte. */
static void lx_backup(lexer_t *l) {
  if (l->pos > l->start) l->pos--;
}
static int lx_accept(lexer_t *l, const char *set) {
  int c = lx_peek(l);
  if (c != L_EOF && c != 0 && strchr(set, c)) {
    l->pos++;
    return 1;
  }
  return 0;
}
static void lx_accept_run(lexer_t *l, const char *set) {
  while (lx_accept(l, set)) {
  }
}

static void lx_emit(lexer_t *l, pq_tok_type_t t) {
  pq_tok_t *nt = pq_arena_grow(l->a, l->toks, &l->cap, l->n, sizeof *nt, 32);
  if (!nt) {
    l->oom = 1;
    l->done = 1;
    return;
  }
  l->toks = nt;
  l->toks[l->n].type = t;
  l->toks[l->n].pos = l->start;
  l->toks[l->n].len = l->pos - l->start;
  l->toks[l->n].err = NULL;
  l->n++;
  l->start = l->pos;
  if (t == T_EOF || t == T_ERROR) l->done = 1;
}

static void lx_errorf(lexer_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lx_errorf(lexer_t *l, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  if (l->done) return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  /* The error token starts where the failing token started (Prometheus
   * reports lexer errors at l.start). */
  size_t save = l->pos;
  l->pos = l->start;
  lx_emit(l, T_ERROR);
  l->pos = save;
  if (l->n && !l->oom) {
    l->toks[l->n - 1].err = pq_strndup(l->a, buf, strlen(buf));
    if (!l->toks[l->n - 1].err) l->oom = 1;
  }
}

/* Go's %q of a rune (the byte c, or the UTF-8 sequence starting there). */
static void rune_q(const lexer_t *l, size_t at, int c, char *buf, size_t cap) {
  unsigned cp;
  size_t n;
  if (c == L_EOF) {
    snprintf(buf, cap, "%s", "'\xef\xbf\xbd'");
    return;
  }
  if (c < 0x80) {
    switch (c) {
    case '\'': snprintf(buf, cap, "'\\''"); return;
    case '\\': snprintf(buf, cap, "'\\\\'"); return;
    case '\n': snprintf(buf, cap, "'\\n'"); return;
    case '\t': snprintf(buf, cap, "'\\t'"); return;
    case '\r': snprintf(buf, cap, "'\\r'"); return;
    case '\a': snprintf(buf, cap, "'\\a'"); return;
    case '\b': snprintf(buf, cap, "'\\b'"); return;
    case '\f': snprintf(buf, cap, "'\\f'"); return;
    case '\v': snprintf(buf, cap, "'\\v'"); return;
    default:
      if (c < 0x20 || c == 0x7f) snprintf(buf, cap, "'\\x%02x'", c);
      else snprintf(buf, cap, "'%c'", c);
      return;
    }
  }
  n = utf8_len((const unsigned char *)l->s + at, l->len - at, &cp);
  if (!n) snprintf(buf, cap, "'\xef\xbf\xbd'"); /* Go decodes a bad byte as U+FFFD */
  else snprintf(buf, cap, "'%.*s'", (int)n, l->s + at);
}

/* Go's %#U: U+0071 'q' */
static void rune_U(const lexer_t *l, size_t at, int c, char *buf, size_t cap) {
  unsigned cp = 0xfffd;
  size_t n = 1;
  if (c == L_EOF) {
    snprintf(buf, cap, "U+FFFFFFFFFFFFFFFF");
    return;
  }
  if (c >= 0x80) {
    n = utf8_len((const unsigned char *)l->s + at, l->len - at, &cp);
    if (!n) cp = 0xfffd, n = 0;
  } else {
    cp = (unsigned)c;
  }
  if (cp < 0x20 || cp == 0x7f) snprintf(buf, cap, "U+%04X", cp);
  else if (c < 0x80) snprintf(buf, cap, "U+%04X '%c'", cp, c);
  else if (n) snprintf(buf, cap, "U+%04X '%.*s'", cp, (int)n, l->s + at);
  else snprintf(buf, cap, "U+%04X '\xef\xbf\xbd'", cp);
}

static int scan_number(lexer_t *l) {
  const char *digits = "0123456789";
  int c;
  if (lx_accept(l, "0") && lx_accept(l, "xX")) digits = "0123456789abcdefABCDEF";
  lx_accept_run(l, digits);
  if (lx_accept(l, ".")) lx_accept_run(l, digits);
  if (lx_accept(l, "eE")) {
    lx_accept(l, "+-");
    lx_accept_run(l, "0123456789");
  }
  c = lx_peek(l);
  return !(c != L_EOF && is_alnum(c));
}

static int accept_remaining_duration(lexer_t *l) {
  int c;
  if (!lx_accept(l, "smhdwy")) return 0;
  lx_accept(l, "s");
  while (lx_accept(l, "0123456789")) {
    lx_accept_run(l, "0123456789");
    if (!lx_accept(l, "smhdw")) return 0;
    lx_accept(l, "s");
  }
  c = lx_next(l);
  if (c != L_EOF && is_alnum(c)) return 0;
  if (c != L_EOF) lx_backup(l);
  return 1;
}

static void lex_number_or_duration(lexer_t *l) {
  if (scan_number(l)) {
    lx_emit(l, T_NUMBER);
    return;
  }
  if (accept_remaining_duration(l)) {
    lx_emit(l, T_DURATION);
    return;
  }
  {
    char q[128];
    pq_quote(q, sizeof q, l->s + l->start, l->pos - l->start);
    lx_errorf(l, "bad number or duration syntax: %s", q);
  }
}

static void lex_duration(lexer_t *l) {
  if (scan_number(l)) {
    lx_errorf(l, "missing unit character in duration");
    return;
  }
  if (!accept_remaining_duration(l)) {
    char q[128];
    pq_quote(q, sizeof q, l->s + l->start, l->pos - l->start);
    lx_errorf(l, "bad duration syntax: %s", q);
    return;
  }
  lx_emit(l, T_DURATION);
}

static int digit_val(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 16;
}

/* After a backslash inside a quoted string.  Errors are reported but, as
 * in Prometheus, lexing goes on (the first error ends the parse). */
static void lex_escape(lexer_t *l) {
  int n = 0;
  unsigned base = 0, max = 0, x = 0;
  size_t at = l->pos;
  int c = lx_next(l);
  char u[64];
  switch (c) {
  case 'a': case 'b': case 'f': case 'n': case 'r': case 't': case 'v': case '\\':
    return;
  case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
    n = 3, base = 8, max = 255;
    break;
  case 'x':
    at = l->pos, c = lx_next(l), n = 2, base = 16, max = 255;
    break;
  case 'u':
    at = l->pos, c = lx_next(l), n = 4, base = 16, max = 0x10ffff;
    break;
  case 'U':
    at = l->pos, c = lx_next(l), n = 8, base = 16, max = 0x10ffff;
    break;
  case L_EOF:
    lx_errorf(l, "escape sequence not terminated");
    return;
  default:
    if (c == l->string_open) return;
    rune_U(l, at, c, u, sizeof u);
    lx_errorf(l, "unknown escape sequence %s", u);
    if (c >= 0x80) { /* skip the rest of the rune */
      unsigned cp;
      size_t k = utf8_len((const unsigned char *)l->s + at, l->len - at, &cp);
      if (k > 1) l->pos = at + k;
    }
    return;
  }
  while (n > 0) {
    unsigned d = c == L_EOF ? 16 : (unsigned)digit_val(c);
    if (d >= base) {
      if (c == L_EOF) {
        lx_errorf(l, "escape sequence not terminated");
        return;
      }
      rune_U(l, at, c, u, sizeof u);
      lx_errorf(l, "illegal character %s in escape sequence", u);
      return;
    }
    x = x * base + d;
    n--;
    if (n > 0) at = l->pos, c = lx_next(l);
  }
  if (x > max || (x >= 0xd800 && x < 0xe000))
    lx_errorf(l, "escape sequence is an invalid Unicode code point");
}

/* Inside a string, past the multi-byte rune starting at at; -1 (and the
 * error) when it is not valid UTF-8 or is U+FFFD, as Go's lexer sees it. */
static int lx_rune(lexer_t *l, size_t at) {
  unsigned cp;
  size_t k = utf8_len((const unsigned char *)l->s + at, l->len - at, &cp);
  if (!k || cp == 0xfffd) {
    lx_errorf(l, "invalid UTF-8 rune");
    return -1;
  }
  l->pos = at + k;
  return 0;
}

static void lex_string(lexer_t *l) {
  for (;;) {
    size_t at = l->pos;
    int c = lx_next(l);
    if (l->done) return;
    if (c == '\\') {
      lex_escape(l);
      continue;
    }
    if (c == L_EOF || c == '\n') {
      lx_errorf(l, "unterminated quoted string");
      return;
    }
    if (c >= 0x80) {
      if (lx_rune(l, at)) return;
      continue;
    }
    if (c == l->string_open) break;
  }
  lx_emit(l, T_STRING);
}

static void lex_raw_string(lexer_t *l) {
  for (;;) {
    size_t at = l->pos;
    int c = lx_next(l);
    if (c == L_EOF) {
      lx_errorf(l, "unterminated raw string");
      return;
    }
    if (c >= 0x80) {
      if (lx_rune(l, at)) return;
      continue;
    }
    if (c == l->string_open) break;
  }
  lx_emit(l, T_STRING);
}

static void lex_comment(lexer_t *l) {
  while (l->pos < l->len && l->s[l->pos] != '\n') l->pos++;
  l->start = l->pos; /* comments are dropped */
}

static void lex_keyword_or_identifier(lexer_t *l) {
  size_t n;
  int colon = 0;
  for (;;) {
    int c = lx_peek(l);
    if (c != L_EOF && (is_alnum(c) || c == ':')) {
      if (c == ':') colon = 1;
      l->pos++;
      continue;
    }
    break;
  }
  n = l->pos - l->start;
  for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++) {
    if (strlen(keywords[i].word) == n && !strncasecmp(keywords[i].word, l->s + l->start, n)) {
      lx_emit(l, keywords[i].type);
      return;
    }
  }
  lx_emit(l, colon ? T_METRIC_IDENT : T_IDENT);
}

static void lex_inside_braces(lexer_t *l) {
  size_t at = l->pos;
  int c;
  char q[16];
  if (l->pos < l->len && l->s[l->pos] == '#') {
    lex_comment(l);
    return;
  }
  c = lx_next(l);
  if (c == L_EOF) {
    lx_errorf(l, "unexpected end of input inside braces");
    return;
  }
  if (is_space(c)) {
    l->start = l->pos;
    return;
  }
  if (is_alpha(c)) {
    while (lx_peek(l) != L_EOF && is_alnum(lx_peek(l))) l->pos++;
    lx_emit(l, T_IDENT);
    return;
  }
  switch (c) {
  case ',': lx_emit(l, T_COMMA); return;
  case '"':
  case '\'':
    l->string_open = (char)c;
    lex_string(l);
    return;
  case '`':
    l->string_open = (char)c;
    lex_raw_string(l);
    return;
  case '=':
    if (lx_peek(l) == '~') {
      l->pos++;
      lx_emit(l, T_EQL_REGEX);
    } else {
      lx_emit(l, T_EQL);
    }
    return;
  case '!': {
    size_t at2 = l->pos;
    int nc = lx_next(l);
    if (nc == '~') lx_emit(l, T_NEQ_REGEX);
    else if (nc == '=') lx_emit(l, T_NEQ);
    else {
      rune_q(l, at2, nc, q, sizeof q);
      lx_errorf(l, "unexpected character after '!' inside braces: %s", q);
    }
    return;
  }
  case '{':
    lx_errorf(l, "unexpected left brace '{'");
    return;
  case '}':
    lx_emit(l, T_RBRACE);
    l->brace_open = 0;
    return;
  default:
    rune_q(l, at, c, q, sizeof q);
    lx_errorf(l, "unexpected character inside braces: %s", q);
    return;
  }
}

static void lex_statements(lexer_t *l) {
  size_t at = l->pos;
  int c;
  char q[16];
  if (l->brace_open) {
    lex_inside_braces(l);
    return;
  }
  if (l->pos < l->len && l->s[l->pos] == '#') {
    lex_comment(l);
    return;
  }
  c = lx_next(l);
  if (c == L_EOF) {
    if (l->paren_depth != 0) lx_errorf(l, "unclosed left parenthesis");
    else if (l->bracket_open) lx_errorf(l, "unclosed left bracket");
    else lx_emit(l, T_EOF);
    return;
  }
  if (is_space(c)) {
    l->start = l->pos;
    return;
  }
  switch (c) {
  case ',': lx_emit(l, T_COMMA); return;
  case '*': lx_emit(l, T_MUL); return;
  case '/': lx_emit(l, T_DIV); return;
  case '%': lx_emit(l, T_MOD); return;
  case '+': lx_emit(l, T_ADD); return;
  case '-': lx_emit(l, T_SUB); return;
  case '^': lx_emit(l, T_POW); return;
  case '=':
    if (lx_peek(l) == '=') {
      l->pos++;
      lx_emit(l, T_EQLC);
    } else if (lx_peek(l) == '~') {
      lx_errorf(l, "unexpected character after '=': '~'");
    } else {
      lx_emit(l, T_EQL);
    }
    return;
  case '!': {
    size_t at2 = l->pos;
    int nc = lx_next(l);
    if (nc == '=') {
      lx_emit(l, T_NEQ);
    } else {
      rune_q(l, at2, nc, q, sizeof q);
      lx_errorf(l, "unexpected character after '!': %s", q);
    }
    return;
  }
  case '<':
    if (lx_peek(l) == '=') {
      l->pos++;
      lx_emit(l, T_LTE);
    } else {
      lx_emit(l, T_LSS);
    }
    return;
  case '>':
    if (lx_peek(l) == '=') {
      l->pos++;
      lx_emit(l, T_GTE);
    } else {
      lx_emit(l, T_GTR);
    }
    return;
  case '"':
  case '\'':
    l->string_open = (char)c;
    lex_string(l);
    return;
  case '`':
    l->string_open = (char)c;
    lex_raw_string(l);
    return;
  case '(':
    lx_emit(l, T_LPAREN);
    l->paren_depth++;
    return;
  case ')':
    lx_emit(l, T_RPAREN);
    l->paren_depth--;
    if (l->paren_depth < 0) {
      /* Prometheus emits the ')' and then fails just after it; its
       * parser reports the lexer's error, at that position */
      (void)at;
      l->n--;
      l->done = 0;
      lx_errorf(l, "unexpected right parenthesis ')'");
    }
    return;
  case '{':
    lx_emit(l, T_LBRACE);
    l->brace_open = 1;
    return;
  case '[':
    if (l->bracket_open) {
      lx_errorf(l, "unexpected left bracket '['");
      return;
    }
    l->got_colon = 0;
    lx_emit(l, T_LBRACKET);
    while (lx_peek(l) != L_EOF && is_space(lx_peek(l))) l->pos++;
    l->start = l->pos;
    l->bracket_open = 1;
    lex_duration(l);
    return;
  case ']':
    if (!l->bracket_open) {
      lx_errorf(l, "unexpected right bracket ']'");
      return;
    }
    lx_emit(l, T_RBRACKET);
    l->bracket_open = 0;
    return;
  case '@': lx_emit(l, T_AT); return;
  case ':':
    if (l->bracket_open) {
      if (l->got_colon) {
        lx_errorf(l, "unexpected colon ':'");
        return;
      }
      lx_emit(l, T_COLON);
      l->got_colon = 1;
      return;
    }
    lx_backup(l);
    lex_keyword_or_identifier(l);
    return;
  default:
    break;
  }
  if (is_digit(c) || (c == '.' && lx_peek(l) != L_EOF && is_digit(lx_peek(l)))) {
    lx_backup(l);
    lex_number_or_duration(l);
    return;
  }
  if (is_alpha(c)) {
    lx_backup(l);
    lex_keyword_or_identifier(l);
    return;
  }
  rune_q(l, at, c, q, sizeof q);
  lx_errorf(l, "unexpected character: %s", q);
}

pq_tok_t *pq_lex(k_pq_arena_t *a, const char *s, size_t len, size_t *n) {
  lexer_t l;
  memset(&l, 0, sizeof l);
  l.a = a;
  l.s = s;
  l.len = len;
  while (!l.done) {
    size_t before = l.pos, nb = l.n;
    lex_statements(&l);
    /* Every state consumes input or emits a token; a defensive stop. */
    if (!l.done && l.pos == before && l.n == nb) lx_errorf(&l, "internal lexer error");
  }
  if (l.oom) return NULL;
  *n = l.n;
  return l.toks;
}

/* ---- token descriptions ---------------------------------------------- */

static const char *punct_str(pq_tok_type_t t) {
  switch (t) {
  case T_LPAREN: return "(";
  case T_RPAREN: return ")";
  case T_LBRACE: return "{";
  case T_RBRACE: return "}";
  case T_LBRACKET: return "[";
  case T_RBRACKET: return "]";
  case T_COMMA: return ",";
  case T_EQL: return "=";
  case T_COLON: return ":";
  case T_EQL_REGEX: return "=~";
  case T_NEQ_REGEX: return "!~";
  default: return NULL;
  }
}

void pq_tok_desc(const char *src, const pq_tok_t *t, char *buf, size_t cap) {
  char q[64];
  const char *kind = NULL;
  if (t->type == T_EOF) {
    snprintf(buf, cap, "end of input");
    return;
  }
  if (t->type == T_ERROR) {
    snprintf(buf, cap, "%s", t->err ? t->err : "error");
    return;
  }
  if (t->type == T_AT) {
    /* AT has no entry in 2.42's ItemTypeStr: its yacc number shows */
    snprintf(buf, cap, "\"<Item 57385>\" <op:@>");
    return;
  }
  if (pq_tok_is_operator(t->type) || t->type == T_NEQ) {
    snprintf(buf, cap, "<op:%.*s>", (int)t->len, src + t->pos);
    return;
  }
  if (pq_tok_is_aggregator(t->type)) {
    snprintf(buf, cap, "<aggr:%.*s>", (int)t->len, src + t->pos);
    return;
  }
  if (pq_tok_is_keyword(t->type)) {
    snprintf(buf, cap, "<%.*s>", (int)t->len, src + t->pos);
    return;
  }
  if (punct_str(t->type)) {
    pq_quote(q, sizeof q, src + t->pos, t->len);
    snprintf(buf, cap, "%s", q);
    return;
  }
  switch (t->type) {
  case T_IDENT: kind = "identifier"; break;
  case T_METRIC_IDENT: kind = "metric identifier"; break;
  case T_STRING: kind = "string"; break;
  case T_NUMBER: kind = "number"; break;
  case T_DURATION: kind = "duration"; break;
  default: kind = "token"; break;
  }
  if ((t->type == T_STRING || t->type == T_NUMBER || t->type == T_DURATION) && t->len > 10) {
    /* Go's %.10q...: the first 10 runes, quoted, then "..." */
    size_t n = 0, runes = 0;
    while (n < t->len && runes < 10) {
      unsigned cp;
      size_t k = utf8_len((const unsigned char *)src + t->pos + n, t->len - n, &cp);
      n += k ? k : 1;
      runes++;
    }
    pq_quote(q, sizeof q, src + t->pos, n);
    snprintf(buf, cap, "%s %s...", kind, q);
    return;
  }
  pq_quote(q, sizeof q, src + t->pos, t->len);
  snprintf(buf, cap, "%s %s", kind, q);
}

/* ---- unquoting ------------------------------------------------------- */

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* The lexer already validated the escapes, so this only decodes. */
char *pq_unquote(k_pq_arena_t *a, const char *s, size_t len) {
  char *o, *p;
  if (len < 2) return pq_strndup(a, "", 0);
  if (s[0] == '`') return pq_strndup(a, s + 1, len - 2);
  o = pq_alloc(a, len * 2 + 1);
  if (!o) return NULL;
  p = o;
  for (size_t i = 1; i + 1 < len;) {
    char c = s[i++];
    if (c != '\\') {
      *p++ = c;
      continue;
    }
    c = s[i++];
    switch (c) {
    case 'a': *p++ = '\a'; break;
    case 'b': *p++ = '\b'; break;
    case 'f': *p++ = '\f'; break;
    case 'n': *p++ = '\n'; break;
    case 'r': *p++ = '\r'; break;
    case 't': *p++ = '\t'; break;
    case 'v': *p++ = '\v'; break;
    case 'x':
    case 'u':
    case 'U': {
      int n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
      unsigned x = 0;
      for (int k = 0; k < n && i + 1 < len; k++) x = x * 16 + (unsigned)digit_val(s[i++]);
      if (c == 'x') *p++ = (char)x;
      else p += put_utf8(p, x);
      break;
    }
    default:
      if (c >= '0' && c <= '7') {
        unsigned x = (unsigned)(c - '0');
        for (int k = 0; k < 2 && i + 1 < len; k++) x = x * 8 + (unsigned)(s[i++] - '0');
        *p++ = (char)x;
      } else {
        *p++ = c; /* \\ \' \" */
      }
    }
  }
  *p = '\0';
  return o;
}

/* ---- regular expressions ------------------------------------------- */

int pq_regex_guard(const char *re, char *why, size_t cap) {
  unsigned long stack[101];
  unsigned long cur = 1;   /* largest repetition product inside the open group */
  unsigned long atom = 1;  /* product of the atom a quantifier would apply to */
  int depth = 0, after_quant = 0, lazy_ok = 0;
  for (size_t i = 0; re[i];) {
    char ch = re[i];
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{') {
      size_t st = i;
      unsigned long n = 0, m = 0, k;
      int counted = 0;
      if (ch == '{') {
        size_t j = i + 1;
        int digits = 0, comma = 0, mdigits = 0;
        while (re[j] >= '0' && re[j] <= '9') {
          if (n <= 100000) n = n * 10 + (unsigned long)(re[j] - '0');
          j++, digits++;
        }
        if (re[j] == ',') {
          comma = 1;
          j++;
          while (re[j] >= '0' && re[j] <= '9') {
            if (m <= 100000) m = m * 10 + (unsigned long)(re[j] - '0');
            j++, mdigits++;
          }
        }
        if (!digits || re[j] != '}') {
          /* not a repetition: a literal '{' in RE2 */
          after_quant = 0;
          atom = 1;
          i++;
          continue;
        }
        counted = 1;
        if (!comma) m = n;
        else if (!mdigits) m = n;
        i = j + 1;
      } else {
        i++;
      }
      if (after_quant && !(ch == '?' && lazy_ok)) {
        snprintf(why, cap, "invalid nested repetition operator: `%.*s`", (int)(i - st + 1),
                 re + st - 1);
        return -1;
      }
      if (after_quant) { /* the lazy '?' */
        lazy_ok = 0;
        continue;
      }
      if (counted) {
        if (n > 1000 || m > 1000) {
          snprintf(why, cap, "invalid repeat count: `%.*s`", (int)(i - st), re + st);
          return -1;
        }
        k = (n > m ? n : m) ? (n > m ? n : m) : 1;
        if (atom * k > 1000) {
          snprintf(why, cap, "invalid repeat count: `%.*s`", (int)(i - st), re + st);
          return -1;
        }
        if (atom * k > cur) cur = atom * k;
      }
      after_quant = 1;
      lazy_ok = 1;
      continue;
    }
    after_quant = 0;
    lazy_ok = 0;
    if (ch == '\\') {
      atom = 1;
      i += re[i + 1] ? 2 : 1;
      continue;
    }
    if (ch == '[') {
      size_t j = i + 1;
      if (re[j] == '^') j++;
      if (re[j] == ']') j++;
      while (re[j] && re[j] != ']') {
        if (re[j] == '[' && (re[j + 1] == ':' || re[j + 1] == '.' || re[j + 1] == '=')) {
          char close = re[j + 1];
          j += 2;
          while (re[j] && !(re[j] == close && re[j + 1] == ']')) j++;
          if (re[j]) j += 2;
          continue;
        }
        j++;
      }
      atom = 1;
      i = re[j] ? j + 1 : j;
      continue;
    }
    if (ch == '(') {
      if (depth == 100) {
        snprintf(why, cap, "expression nests too deeply");
        return -1;
      }
      stack[depth++] = cur;
      cur = 1;
      atom = 1;
      i++;
      continue;
    }
    if (ch == ')' && depth > 0) {
      atom = cur;
      cur = stack[--depth] > cur ? stack[depth] : cur;
      i++;
      continue;
    }
    atom = 1;
    i++;
  }
  return 0;
}

char *pq_regex_to_ere(k_pq_arena_t *a, const char *re) {
  size_t n = strlen(re), o = 0;
  char *out = pq_alloc(a, n + 1);
  int in_class = 0;
  if (!out) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (re[i] == '\\' && i + 1 < n) {
      out[o++] = re[i++];
      out[o++] = re[i];
      continue;
    }
    if (!in_class && re[i] == '[') in_class = 1;
    else if (in_class && re[i] == ']') in_class = 0;
    if (!in_class && re[i] == '(' && re[i + 1] == '?' && re[i + 2] == ':') {
      out[o++] = '(';
      i += 2;
      continue;
    }
    out[o++] = re[i];
  }
  out[o] = '\0';
  return out;
}
