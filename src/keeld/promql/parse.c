/* promql/parse.c — recursive descent over pq_lex's tokens into the AST,
 * then Prometheus' checkAST (types, matching rules, selectors).
 *
 * The grammar is Prometheus 2.42's generated_parser.y: precedence
 * or < and/unless < comparisons < +- < * / % atan2 < ^ (right-assoc); unary
 * +/- binds like * (so -a^b is -(a^b)); offset and [range] bind tighter
 * than anything.  The first error wins and stops parsing; texts are
 * Prometheus' ("L:C: parse error: ...").  Recursion is bounded by
 * opts->max_depth, checked on parser depth and on every node's height.
 */
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/metricbatch.h"
#include "promql/internal.h"

typedef struct parser {
  k_pq_arena_t *a;
  const char *s;
  size_t len;
  pq_tok_t *t;
  size_t nt, i;
  k_promql_err_t *e;
  int failed, code; /* code: the KEEL_E* of the first error */
  unsigned depth, max_depth;
} parser_t;

enum { PREC_OR = 1, PREC_AND, PREC_CMP, PREC_ADD, PREC_MUL, PREC_POW };

static void perr_at(parser_t *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr_at(parser_t *p, size_t pos, const char *fmt, ...) {
  char msg[900];
  size_t line = 1, lastnl = 0;
  int have_nl = 0;
  va_list ap;
  if (p->failed) return;
  p->failed = 1;
  p->code = KEEL_EINVAL;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (pos > p->len) pos = p->len;
  for (size_t i = 0; i < pos; i++)
    if (p->s[i] == '\n') line++, lastnl = i, have_nl = 1;
  pq_err(p->e, KEEL_EINVAL, K_PROMQL_ERR_BAD_DATA, "%zu:%zu: parse error: %s", line,
         have_nl ? pos - lastnl : pos + 1, msg);
}

static void oom(parser_t *p) {
  if (p->failed) return;
  p->failed = 1;
  p->code = KEEL_ENOMEM;
  pq_err(p->e, KEEL_ENOMEM, K_PROMQL_ERR_INTERNAL, "out of memory");
}

static pq_tok_t *peek(parser_t *p) { return &p->t[p->i]; }
static pq_tok_t *peek2(parser_t *p) { return &p->t[p->i + 1 < p->nt ? p->i + 1 : p->i]; }
static pq_tok_t *next(parser_t *p) {
  pq_tok_t *t = &p->t[p->i];
  if (p->i + 1 < p->nt) p->i++;
  return t;
}

/* Prometheus' parser.unexpected(context, expected); a lexer error token
 * reports its own message instead. */
static void unexpected(parser_t *p, const char *context, const char *expected) {
  pq_tok_t *t = peek(p);
  char d[128];
  if (t->type == T_ERROR) {
    perr_at(p, t->pos, "%s", t->err ? t->err : "lexer error");
    return;
  }
  pq_tok_desc(p->s, t, d, sizeof d);
  perr_at(p, t->type == T_EOF ? p->len : t->pos, "unexpected %s%s%s%s%s", d,
          context && *context ? " in " : "", context ? context : "",
          expected && *expected ? ", expected " : "", expected ? expected : "");
}

static k_pq_node_t *mk(parser_t *p, k_pq_kind_t kind, size_t pos, size_t end) {
  k_pq_node_t *n = pq_alloc(p->a, sizeof *n);
  if (!n) {
    oom(p);
    return NULL;
  }
  n->kind = kind;
  n->pos = pos;
  n->end = end;
  n->height = 1;
  return n;
}

/* Height = 1 + tallest child; over the limit is an error (the evaluator
 * recurses once per level). */
static int set_height(parser_t *p, k_pq_node_t *n, const k_pq_node_t *c) {
  if (c && c->height + 1 > n->height) n->height = c->height + 1;
  if (n->height > p->max_depth) {
    perr_at(p, n->pos, "expression nesting exceeds the maximum depth of %u", p->max_depth);
    return -1;
  }
  return 0;
}

static size_t tok_end(const pq_tok_t *t) { return t->pos + t->len; }

/* ---- numbers and durations ------------------------------------------- */

/* Prometheus' parseNumber: strconv.ParseInt(s, 0, 64) first (so "0x1f" is
 * hex and "017" octal), then strconv.ParseFloat. */
static int parse_number(parser_t *p, const pq_tok_t *t, double *out) {
  char buf[128], q[160];
  const char *s = p->s + t->pos;
  size_t n = t->len;
  if (n >= sizeof buf) n = sizeof buf - 1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  pq_quote(q, sizeof q, buf, n);
  /* ParseInt with base prefix rules */
  {
    const char *d = buf;
    int base = 10, ok = 1;
    unsigned long long v = 0;
    if (d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) base = 16, d += 2;
    else if (d[0] == '0' && d[1]) base = 8, d += 1;
    if (!*d) ok = 0;
    for (const char *c = d; ok && *c; c++) {
      int dv = (*c >= '0' && *c <= '9') ? *c - '0'
               : (*c >= 'a' && *c <= 'f') ? *c - 'a' + 10
               : (*c >= 'A' && *c <= 'F') ? *c - 'A' + 10
                                          : 99;
      if (dv >= base) {
        ok = 0;
        break;
      }
      if (v > (UINT64_C(0x7fffffffffffffff) - (unsigned)dv) / (unsigned)base) {
        ok = 0; /* out of int64 range: ParseInt fails */
        break;
      }
      v = v * (unsigned)base + (unsigned)dv;
    }
    if (ok) {
      *out = (double)(long long)v;
      return 0;
    }
  }
  /* ParseFloat: decimal forms, inf/nan; Go rejects hex without a 'p'
   * exponent, which the lexer never produces. */
  if ((buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X'))) {
    perr_at(p, t->pos, "error parsing number: strconv.ParseFloat: parsing %s: invalid syntax", q);
    return -1;
  }
  {
    char *end;
    double v;
    if (!strcasecmp(buf, "inf")) {
      *out = INFINITY;
      return 0;
    }
    if (!strcasecmp(buf, "nan")) {
      *out = NAN;
      return 0;
    }
    errno = 0;
    v = strtod(buf, &end);
    if (end == buf || *end) {
      perr_at(p, t->pos, "error parsing number: strconv.ParseFloat: parsing %s: invalid syntax", q);
      return -1;
    }
    /* The exponent must have digits: strtod accepts "1e" as 1, Go does not. */
    {
      const char *ep = strpbrk(buf, "eE");
      if (ep) {
        ep++;
        if (*ep == '+' || *ep == '-') ep++;
        if (!(*ep >= '0' && *ep <= '9')) {
          perr_at(p, t->pos, "error parsing number: strconv.ParseFloat: parsing %s: invalid syntax",
                  q);
          return -1;
        }
      }
    }
    if (errno == ERANGE && isinf(v)) {
      perr_at(p, t->pos, "error parsing number: strconv.ParseFloat: parsing %s: value out of range",
              q);
      return -1;
    }
    *out = v;
  }
  return 0;
}

/* Prometheus' model.ParseDuration + "must be greater than 0"; ms. */
static int parse_duration(parser_t *p, const pq_tok_t *t, int64_t *out) {
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"y", 365LL * 86400000}, {"w", 7LL * 86400000}, {"d", 86400000}, {"h", 3600000},
               {"m", 60000},            {"s", 1000},           {"ms", 1}};
  const char *s = p->s + t->pos, *end = s + t->len;
  size_t ui = 0;
  int64_t total = 0;
  int overflow = 0, any = 0;
  char q[160];
  /* ns must fit in int64 (Go's time.Duration) */
  const int64_t max_ms = INT64_MAX / 1000000;
  pq_quote(q, sizeof q, s, t->len);
  while (s < end) {
    int64_t n = 0;
    int digits = 0, big = 0;
    size_t k;
    while (s < end && *s >= '0' && *s <= '9') {
      if (n > (INT64_MAX - 9) / 10) big = 1;
      else n = n * 10 + (*s - '0');
      s++, digits++;
    }
    if (!digits) goto bad;
    for (k = ui; k < sizeof units / sizeof units[0]; k++) {
      size_t ul = strlen(units[k].unit);
      if ((size_t)(end - s) >= ul && !strncmp(s, units[k].unit, ul) &&
          !(ul == 1 && units[k].unit[0] == 'm' && end - s >= 2 && s[1] == 's'))
        break;
    }
    if (k == sizeof units / sizeof units[0]) goto bad;
    s += strlen(units[k].unit);
    ui = k + 1;
    any = 1;
    if (big || n > max_ms / units[k].ms) overflow = 1;
    else {
      total += n * units[k].ms;
      if (total > max_ms) overflow = 1;
    }
  }
  if (!any) goto bad;
  if (overflow) {
    perr_at(p, t->pos, "duration out of range");
    return -1;
  }
  if (total == 0) {
    perr_at(p, t->pos, "duration must be greater than 0");
    return -1;
  }
  *out = total;
  return 0;
bad:
  perr_at(p, t->pos, "not a valid duration string: %s", q);
  return -1;
}

/* ---- grammar --------------------------------------------------------- */

static k_pq_node_t *parse_expr(parser_t *p, int min_prec);

static int binop_prec(pq_tok_type_t t, k_pq_binop_t *op) {
  switch (t) {
  case T_LOR: *op = K_PQ_OP_OR; return PREC_OR;
  case T_LAND: *op = K_PQ_OP_AND; return PREC_AND;
  case T_LUNLESS: *op = K_PQ_OP_UNLESS; return PREC_AND;
  case T_EQLC: *op = K_PQ_OP_EQL; return PREC_CMP;
  case T_NEQ: *op = K_PQ_OP_NEQ; return PREC_CMP;
  case T_GTR: *op = K_PQ_OP_GTR; return PREC_CMP;
  case T_LSS: *op = K_PQ_OP_LSS; return PREC_CMP;
  case T_GTE: *op = K_PQ_OP_GTE; return PREC_CMP;
  case T_LTE: *op = K_PQ_OP_LTE; return PREC_CMP;
  case T_ADD: *op = K_PQ_OP_ADD; return PREC_ADD;
  case T_SUB: *op = K_PQ_OP_SUB; return PREC_ADD;
  case T_MUL: *op = K_PQ_OP_MUL; return PREC_MUL;
  case T_DIV: *op = K_PQ_OP_DIV; return PREC_MUL;
  case T_MOD: *op = K_PQ_OP_MOD; return PREC_MUL;
  case T_ATAN2: *op = K_PQ_OP_ATAN2; return PREC_MUL;
  case T_POW: *op = K_PQ_OP_POW; return PREC_POW;
  default: return -1;
  }
}

/* Grows a string list in the arena. */
static int list_push(parser_t *p, const char ***v, size_t *n, size_t *cap, const char *s) {
  const char **nv = pq_arena_grow(p->a, *v, cap, *n, sizeof *nv, 4);
  if (!nv) {
    oom(p);
    return -1;
  }
  *v = nv;
  (*v)[(*n)++] = s;
  return 0;
}

/* grouping_labels: "(" [label {"," label} [","]] ")" — labels may be
 * keywords (by, on, ...) but not metric identifiers. */
static int parse_grouping(parser_t *p, const char ***out, size_t *nout) {
  size_t cap = 0;
  *out = NULL;
  *nout = 0;
  if (peek(p)->type != T_LPAREN) {
    unexpected(p, "grouping opts", "\"(\"");
    return -1;
  }
  next(p);
  if (peek(p)->type == T_RPAREN) {
    next(p);
    return 0;
  }
  for (;;) {
    pq_tok_t *t = peek(p);
    const char *s;
    if (!(t->type == T_IDENT || t->type == T_METRIC_IDENT || pq_tok_is_keyword(t->type) ||
          pq_tok_is_aggregator(t->type) || t->type == T_LAND || t->type == T_LOR ||
          t->type == T_LUNLESS || t->type == T_ATAN2) ||
        !keel_mb_label_name_ok(p->s + t->pos, t->len)) {
      unexpected(p, "grouping opts", "label");
      return -1;
    }
    next(p);
    s = pq_strndup(p->a, p->s + t->pos, t->len);
    if (!s) {
      oom(p);
      return -1;
    }
    if (list_push(p, out, nout, &cap, s)) return -1;
    if (peek(p)->type == T_COMMA) {
      next(p);
      if (peek(p)->type == T_RPAREN) {
        next(p);
        return 0;
      }
      continue;
    }
    if (peek(p)->type == T_RPAREN) {
      next(p);
      return 0;
    }
    unexpected(p, "grouping opts", "\",\" or \")\"");
    return -1;
  }
}

/* Checks a regex the way the querier will use it (fully anchored ERE),
 * after pq_regex_guard's RE2 rules. */
static int regex_ok(const char *re, char *why, size_t cap) {
  regex_t r;
  size_t n = strlen(re);
  char *anch;
  int rc;
  if (pq_regex_guard(re, why, cap)) return 0;
  anch = malloc(n + 5);
  if (!anch) {
    snprintf(why, cap, "out of memory");
    return 0;
  }
  snprintf(anch, n + 5, "^(%s)$", re);
  rc = regcomp(&r, anch, REG_EXTENDED | REG_NOSUB);
  if (rc) regerror(rc, &r, why, cap);
  else regfree(&r);
  free(anch);
  return rc == 0;
}

/* Whether matcher m matches the empty string. */
static int matches_empty(const k_matcher_t *m) {
  regex_t r;
  int hit;
  size_t n;
  char *anch;
  switch (m->type) {
  case K_MATCH_EQ: return m->value[0] == '\0';
  case K_MATCH_NE: return m->value[0] != '\0';
  default: break;
  }
  n = strlen(m->value);
  anch = malloc(n + 5);
  if (!anch) return 0;
  snprintf(anch, n + 5, "^(%s)$", m->value);
  if (regcomp(&r, anch, REG_EXTENDED | REG_NOSUB)) {
    free(anch);
    return 0;
  }
  hit = regexec(&r, "", 0, NULL, 0) == 0;
  regfree(&r);
  free(anch);
  return m->type == K_MATCH_RE ? hit : !hit;
}

/* "{" matchers "}" after an optional metric name. */
static k_pq_node_t *parse_vector_selector(parser_t *p, const pq_tok_t *name) {
  k_pq_node_t *n;
  k_matcher_t *m = NULL;
  size_t nm = 0, cap = 0;
  size_t pos = name ? name->pos : peek(p)->pos, end = name ? tok_end(name) : pos;
  if (peek(p)->type == T_LBRACE) {
    next(p);
    for (;;) {
      pq_tok_t *lt = peek(p), *op, *vt;
      k_matcher_t mm;
      if (lt->type == T_RBRACE) {
        end = tok_end(lt);
        next(p);
        break;
      }
      if (lt->type != T_IDENT) {
        unexpected(p, "label matching", "identifier or \"}\"");
        return NULL;
      }
      next(p);
      op = peek(p);
      switch (op->type) {
      case T_EQL: mm.type = K_MATCH_EQ; break;
      case T_NEQ: mm.type = K_MATCH_NE; break;
      case T_EQL_REGEX: mm.type = K_MATCH_RE; break;
      case T_NEQ_REGEX: mm.type = K_MATCH_NRE; break;
      default: unexpected(p, "label matching", "label matching operator"); return NULL;
      }
      next(p);
      vt = peek(p);
      if (vt->type != T_STRING) {
        unexpected(p, "label matching", "string");
        return NULL;
      }
      next(p);
      mm.name = pq_strndup(p->a, p->s + lt->pos, lt->len);
      mm.value = pq_unquote(p->a, p->s + vt->pos, vt->len);
      if (!mm.name || !mm.value) {
        oom(p);
        return NULL;
      }
      if (mm.type == K_MATCH_RE || mm.type == K_MATCH_NRE) {
        char why[256];
        /* RE2's non-capturing groups are plain groups in ERE */
        mm.value = pq_regex_to_ere(p->a, mm.value);
        if (!mm.value) {
          oom(p);
          return NULL;
        }
        if (!regex_ok(mm.value, why, sizeof why)) {
          perr_at(p, lt->pos, "error parsing regexp: %s", why);
          return NULL;
        }
      }
      k_matcher_t *nmv = pq_arena_grow(p->a, m, &cap, nm, sizeof *nmv, 4);
      if (!nmv) {
        oom(p);
        return NULL;
      }
      m = nmv;
      m[nm++] = mm;
      if (peek(p)->type == T_COMMA) {
        next(p);
        continue;
      }
      if (peek(p)->type == T_RBRACE) continue;
      unexpected(p, "label matching", "\",\" or \"}\"");
      return NULL;
    }
  }
  if (name) {
    /* the name's matcher goes last, as in Prometheus */
    k_matcher_t *nmv = pq_alloc(p->a, (nm + 1) * sizeof *nmv);
    if (!nmv) {
      oom(p);
      return NULL;
    }
    if (nm) memcpy(nmv, m, nm * sizeof *m);
    m = nmv;
    m[nm].type = K_MATCH_EQ;
    m[nm].name = "__name__";
    m[nm].value = pq_strndup(p->a, p->s + name->pos, name->len);
    if (!m[nm].value) {
      oom(p);
      return NULL;
    }
    nm++;
  }
  n = mk(p, K_PQ_VSEL, pos, end);
  if (!n) return NULL;
  n->u.vsel.name = name ? m[nm - 1].value : NULL;
  n->u.vsel.m = m;
  n->u.vsel.nm = nm;
  return n;
}

/* "(" [expr {"," expr}] ")" */
static int parse_call_body(parser_t *p, k_pq_node_t ***args, size_t *nargs, size_t *end) {
  size_t cap = 0;
  *args = NULL;
  *nargs = 0;
  if (peek(p)->type != T_LPAREN) {
    unexpected(p, "", "");
    return -1;
  }
  next(p);
  if (peek(p)->type == T_RPAREN) {
    *end = tok_end(peek(p));
    next(p);
    return 0;
  }
  for (;;) {
    k_pq_node_t *a = parse_expr(p, 0);
    if (!a) return -1;
    k_pq_node_t **nv = pq_arena_grow(p->a, *args, &cap, *nargs, sizeof *nv, 4);
    if (!nv) {
      oom(p);
      return -1;
    }
    *args = nv;
    (*args)[(*nargs)++] = a;
    if (peek(p)->type == T_COMMA) {
      pq_tok_t *comma = next(p);
      if (peek(p)->type == T_RPAREN) {
        perr_at(p, comma->pos, "trailing commas not allowed in function call args");
        return -1;
      }
      continue;
    }
    if (peek(p)->type == T_RPAREN) {
      *end = tok_end(peek(p));
      next(p);
      return 0;
    }
    unexpected(p, "", "");
    return -1;
  }
}

static k_pq_node_t *parse_call(parser_t *p) {
  pq_tok_t *name = next(p);
  k_pq_node_t **args, *n;
  size_t nargs, end = tok_end(name);
  const k_pq_func_t *f;
  int supported = 1;
  char q[160];
  if (parse_call_body(p, &args, &nargs, &end)) return NULL;
  f = pq_func_lookup(p->s + name->pos, name->len, &supported);
  pq_quote(q, sizeof q, p->s + name->pos, name->len);
  if (!f) {
    perr_at(p, name->pos, "unknown function with name %s", q);
    return NULL;
  }
  if (!supported) {
    perr_at(p, name->pos, "function %s is not supported", q);
    return NULL;
  }
  n = mk(p, K_PQ_CALL, name->pos, end);
  if (!n) return NULL;
  n->u.call.func = f;
  n->u.call.args = args;
  n->u.call.nargs = nargs;
  for (size_t i = 0; i < nargs; i++)
    if (set_height(p, n, args[i])) return NULL;
  return n;
}

static k_pq_aggop_t agg_op(pq_tok_type_t t) {
  switch (t) {
  case T_SUM: return K_PQ_AGG_SUM;
  case T_AVG: return K_PQ_AGG_AVG;
  case T_COUNT: return K_PQ_AGG_COUNT;
  case T_MIN: return K_PQ_AGG_MIN;
  case T_MAX: return K_PQ_AGG_MAX;
  case T_GROUP: return K_PQ_AGG_GROUP;
  case T_STDDEV: return K_PQ_AGG_STDDEV;
  case T_STDVAR: return K_PQ_AGG_STDVAR;
  case T_TOPK: return K_PQ_AGG_TOPK;
  case T_BOTTOMK: return K_PQ_AGG_BOTTOMK;
  case T_COUNT_VALUES: return K_PQ_AGG_COUNT_VALUES;
  default: return K_PQ_AGG_QUANTILE;
  }
}

static k_pq_node_t *parse_aggregation(parser_t *p) {
  pq_tok_t *opt = next(p);
  k_pq_node_t **args = NULL, *n;
  size_t nargs = 0, end = tok_end(opt);
  const char **grouping = NULL;
  size_t ngrouping = 0;
  int without = 0, have_mod = 0, want;
  k_pq_aggop_t op = agg_op(opt->type);
  if (peek(p)->type == T_BY || peek(p)->type == T_WITHOUT) {
    without = next(p)->type == T_WITHOUT;
    if (parse_grouping(p, &grouping, &ngrouping)) return NULL;
    have_mod = 1;
  }
  if (peek(p)->type != T_LPAREN) {
    unexpected(p, "aggregation", "");
    return NULL;
  }
  if (parse_call_body(p, &args, &nargs, &end)) return NULL;
  if (!have_mod && (peek(p)->type == T_BY || peek(p)->type == T_WITHOUT)) {
    without = next(p)->type == T_WITHOUT;
    if (parse_grouping(p, &grouping, &ngrouping)) return NULL;
    end = tok_end(&p->t[p->i - 1]);
  }
  if (nargs == 0) {
    perr_at(p, opt->pos, "no arguments for aggregate expression provided");
    return NULL;
  }
  want = (op == K_PQ_AGG_TOPK || op == K_PQ_AGG_BOTTOMK || op == K_PQ_AGG_COUNT_VALUES ||
          op == K_PQ_AGG_QUANTILE)
             ? 2
             : 1;
  if ((int)nargs != want) {
    perr_at(p, opt->pos,
            "wrong number of arguments for aggregate expression provided, expected %d, got %zu",
            want, nargs);
    return NULL;
  }
  n = mk(p, K_PQ_AGG, opt->pos, end);
  if (!n) return NULL;
  n->u.agg.op = op;
  n->u.agg.param = want == 2 ? args[0] : NULL;
  n->u.agg.expr = args[want - 1];
  n->u.agg.grouping = grouping;
  n->u.agg.ngrouping = ngrouping;
  n->u.agg.without = without;
  for (size_t i = 0; i < nargs; i++)
    if (set_height(p, n, args[i])) return NULL;
  return n;
}

static k_pq_node_t *parse_primary(parser_t *p) {
  pq_tok_t *t = peek(p);
  k_pq_node_t *n;
  switch (t->type) {
  case T_NUMBER: {
    double v;
    next(p);
    if (parse_number(p, t, &v)) return NULL;
    n = mk(p, K_PQ_NUMBER, t->pos, tok_end(t));
    if (n) n->u.number = v;
    return n;
  }
  case T_STRING:
    next(p);
    n = mk(p, K_PQ_STRING, t->pos, tok_end(t));
    if (!n) return NULL;
    n->u.string = pq_unquote(p->a, p->s + t->pos, t->len);
    if (!n->u.string) {
      oom(p);
      return NULL;
    }
    return n;
  case T_LPAREN: {
    k_pq_node_t *in;
    next(p);
    in = parse_expr(p, 0);
    if (!in) return NULL;
    if (peek(p)->type != T_RPAREN) {
      unexpected(p, "", "");
      return NULL;
    }
    n = mk(p, K_PQ_PAREN, t->pos, tok_end(peek(p)));
    next(p);
    if (!n) return NULL;
    n->u.paren.expr = in;
    if (set_height(p, n, in)) return NULL;
    return n;
  }
  case T_LBRACE:
    return parse_vector_selector(p, NULL);
  case T_IDENT:
    if (peek2(p)->type == T_LPAREN) return parse_call(p);
    next(p);
    return parse_vector_selector(p, t);
  case T_METRIC_IDENT:
  case T_BY:
  case T_WITHOUT:
  case T_OFFSET:
  case T_LAND:
  case T_LOR:
  case T_LUNLESS:
  case T_START:
  case T_END:
    /* Prometheus' metric_identifier admits these keywords as names. */
    next(p);
    return parse_vector_selector(p, t);
  default:
    break;
  }
  if (pq_tok_is_aggregator(t->type)) {
    pq_tok_type_t n2 = peek2(p)->type;
    if (n2 == T_LPAREN || n2 == T_BY || n2 == T_WITHOUT) return parse_aggregation(p);
    next(p);
    return parse_vector_selector(p, t);
  }
  unexpected(p, "", "");
  return NULL;
}

/* [range], offset, @ after a primary expression. */
static k_pq_node_t *parse_postfix(parser_t *p, k_pq_node_t *n) {
  for (;;) {
    pq_tok_t *t = peek(p);
    if (t->type == T_LBRACKET) {
      pq_tok_t *d;
      int64_t range;
      k_pq_node_t *m;
      next(p);
      d = peek(p);
      if (d->type != T_DURATION) {
        unexpected(p, "subquery selector", "duration");
        return NULL;
      }
      next(p);
      if (peek(p)->type == T_COLON) {
        perr_at(p, n->pos, "subqueries are not supported");
        return NULL;
      }
      if (peek(p)->type != T_RBRACKET) {
        unexpected(p, "subquery or range", "\":\" or \"]\"");
        return NULL;
      }
      if (parse_duration(p, d, &range)) return NULL;
      if (n->kind != K_PQ_VSEL) {
        perr_at(p, t->pos, "ranges only allowed for vector selectors");
        return NULL;
      }
      if (n->u.vsel.offset_ms != 0) {
        perr_at(p, t->pos, "no offset modifiers allowed before range");
        return NULL;
      }
      m = mk(p, K_PQ_MSEL, n->pos, tok_end(peek(p)));
      next(p);
      if (!m) return NULL;
      m->u.msel.vs = n;
      m->u.msel.range_ms = range;
      if (set_height(p, m, n)) return NULL;
      n = m;
      continue;
    }
    if (t->type == T_OFFSET) {
      int neg = 0;
      int64_t off;
      pq_tok_t *d;
      k_pq_node_t *vs;
      next(p);
      if (peek(p)->type == T_SUB) {
        next(p);
        neg = 1;
      }
      d = peek(p);
      if (d->type != T_DURATION) {
        unexpected(p, "offset", "duration");
        return NULL;
      }
      next(p);
      if (parse_duration(p, d, &off)) return NULL;
      if (n->kind == K_PQ_VSEL) vs = n;
      else if (n->kind == K_PQ_MSEL) vs = n->u.msel.vs;
      else {
        perr_at(p, n->pos,
                "offset modifier must be preceded by an instant vector selector or range vector "
                "selector or a subquery");
        return NULL;
      }
      if (vs->u.vsel.offset_ms != 0) {
        perr_at(p, n->pos, "offset may not be set multiple times");
        return NULL;
      }
      vs->u.vsel.offset_ms = neg ? -off : off;
      n->end = tok_end(d);
      continue;
    }
    if (t->type == T_AT) {
      perr_at(p, t->pos, "the @ modifier is not supported");
      return NULL;
    }
    return n;
  }
}

static k_pq_node_t *parse_unary(parser_t *p) {
  pq_tok_t *t = peek(p);
  k_pq_node_t *in, *n;
  if (t->type == T_ADD || t->type == T_SUB) {
    next(p);
    in = parse_expr(p, PREC_POW);
    if (!in) return NULL;
    if (in->kind == K_PQ_NUMBER) {
      if (t->type == T_SUB) in->u.number = -in->u.number;
      in->pos = t->pos;
      return in;
    }
    n = mk(p, K_PQ_UNARY, t->pos, in->end);
    if (!n) return NULL;
    n->u.unary.expr = in;
    n->u.unary.neg = t->type == T_SUB;
    if (set_height(p, n, in)) return NULL;
    return n;
  }
  n = parse_primary(p);
  if (!n) return NULL;
  return parse_postfix(p, n);
}

static k_pq_node_t *parse_expr(parser_t *p, int min_prec) {
  k_pq_node_t *lhs = NULL;
  if (++p->depth > p->max_depth) {
    perr_at(p, peek(p)->pos, "expression nesting exceeds the maximum depth of %u", p->max_depth);
    goto out;
  }
  lhs = parse_unary(p);
  while (lhs) {
    k_pq_binop_t op;
    pq_tok_t *t = peek(p);
    int prec = binop_prec(t->type, &op);
    k_pq_node_t *rhs, *n;
    int ret_bool = 0, on = 0;
    k_pq_card_t card = K_PQ_CARD_ONE_TO_ONE;
    const char **labels = NULL, **include = NULL;
    size_t nlabels = 0, ninclude = 0;
    if (prec < 0 || prec < min_prec) break;
    next(p);
    if (peek(p)->type == T_BOOL) {
      next(p);
      ret_bool = 1;
    }
    if (peek(p)->type == T_ON || peek(p)->type == T_IGNORING) {
      on = next(p)->type == T_ON;
      if (parse_grouping(p, &labels, &nlabels)) {
        lhs = NULL;
        break;
      }
      if (peek(p)->type == T_GROUP_LEFT || peek(p)->type == T_GROUP_RIGHT) {
        card = next(p)->type == T_GROUP_LEFT ? K_PQ_CARD_MANY_TO_ONE : K_PQ_CARD_ONE_TO_MANY;
        if (peek(p)->type == T_LPAREN && parse_grouping(p, &include, &ninclude)) {
          lhs = NULL;
          break;
        }
      }
    }
    rhs = parse_expr(p, prec == PREC_POW ? PREC_POW : prec + 1);
    if (!rhs) {
      lhs = NULL;
      break;
    }
    n = mk(p, K_PQ_BINARY, lhs->pos, rhs->end);
    if (!n) {
      lhs = NULL;
      break;
    }
    n->u.bin.op = op;
    n->u.bin.lhs = lhs;
    n->u.bin.rhs = rhs;
    n->u.bin.return_bool = ret_bool;
    n->u.bin.card = card;
    n->u.bin.on = on;
    n->u.bin.labels = labels;
    n->u.bin.nlabels = nlabels;
    n->u.bin.include = include;
    n->u.bin.ninclude = ninclude;
    if (set_height(p, n, lhs) || set_height(p, n, rhs)) {
      lhs = NULL;
      break;
    }
    lhs = n;
  }
out:
  p->depth--;
  return lhs;
}

/* ---- checkAST -------------------------------------------------------- */

const char *k_promql_type_name(k_pq_type_t t) {
  switch (t) {
  case K_PQ_T_SCALAR: return "scalar";
  case K_PQ_T_VECTOR: return "instant vector";
  case K_PQ_T_MATRIX: return "range vector";
  case K_PQ_T_STRING: return "string";
  default: return "none";
  }
}

static int is_comparison(k_pq_binop_t op) { return op >= K_PQ_OP_EQL && op <= K_PQ_OP_LTE; }
static int is_set_op(k_pq_binop_t op) { return op >= K_PQ_OP_AND; }

static const char *binop_name(k_pq_binop_t op) {
  static const char *const names[] = {"+", "-", "*", "/", "%", "^", "atan2", "==", "!=",
                                      ">", "<", ">=", "<=", "and", "or", "unless"};
  return names[op];
}

/* First non-space byte after the LHS: where Prometheus' opRange starts. */
static size_t op_pos(const parser_t *p, const k_pq_node_t *n) {
  size_t i = n->u.bin.lhs->end;
  while (i < p->len && (p->s[i] == ' ' || p->s[i] == '\t' || p->s[i] == '\n' || p->s[i] == '\r'))
    i++;
  return i;
}

static k_pq_type_t check(parser_t *p, k_pq_node_t *n);

static void expect_type(parser_t *p, k_pq_node_t *n, k_pq_type_t want, const char *context) {
  k_pq_type_t t = check(p, n);
  if (!p->failed && t != want)
    perr_at(p, n->pos, "expected type %s in %s, got %s", k_promql_type_name(want), context,
            k_promql_type_name(t));
}

/* Sets n->type bottom-up and reports Prometheus' type errors in its order
 * (children first for binary expressions). */
static k_pq_type_t check(parser_t *p, k_pq_node_t *n) {
  if (p->failed) return K_PQ_T_NONE;
  switch (n->kind) {
  case K_PQ_NUMBER: n->type = K_PQ_T_SCALAR; break;
  case K_PQ_STRING: n->type = K_PQ_T_STRING; break;
  case K_PQ_VSEL: {
    n->type = K_PQ_T_VECTOR;
    if (n->u.vsel.name) {
      for (size_t i = 0; i + 1 < n->u.vsel.nm; i++)
        if (!strcmp(n->u.vsel.m[i].name, "__name__")) {
          char q1[300], q2[300];
          pq_quote(q1, sizeof q1, n->u.vsel.name, strlen(n->u.vsel.name));
          pq_quote(q2, sizeof q2, n->u.vsel.m[i].value, strlen(n->u.vsel.m[i].value));
          perr_at(p, n->pos, "metric name must not be set twice: %s or %s", q1, q2);
          return K_PQ_T_NONE;
        }
      break;
    }
    {
      int nonempty = 0;
      for (size_t i = 0; i < n->u.vsel.nm && !nonempty; i++)
        if (!matches_empty(&n->u.vsel.m[i])) nonempty = 1;
      if (!nonempty) {
        perr_at(p, n->pos, "vector selector must contain at least one non-empty matcher");
        return K_PQ_T_NONE;
      }
    }
    break;
  }
  case K_PQ_MSEL:
    check(p, n->u.msel.vs);
    n->type = K_PQ_T_MATRIX;
    break;
  case K_PQ_PAREN:
    n->type = check(p, n->u.paren.expr);
    break;
  case K_PQ_UNARY: {
    k_pq_type_t t = check(p, n->u.unary.expr);
    n->type = t;
    if (!p->failed && t != K_PQ_T_SCALAR && t != K_PQ_T_VECTOR)
      perr_at(p, n->pos,
              "unary expression only allowed on expressions of type scalar or instant vector, got "
              "\"%s\"",
              k_promql_type_name(t));
    break;
  }
  case K_PQ_AGG: {
    n->type = K_PQ_T_VECTOR;
    expect_type(p, n->u.agg.expr, K_PQ_T_VECTOR, "aggregation expression");
    if (n->u.agg.op == K_PQ_AGG_TOPK || n->u.agg.op == K_PQ_AGG_BOTTOMK ||
        n->u.agg.op == K_PQ_AGG_QUANTILE)
      expect_type(p, n->u.agg.param, K_PQ_T_SCALAR, "aggregation parameter");
    if (n->u.agg.op == K_PQ_AGG_COUNT_VALUES)
      expect_type(p, n->u.agg.param, K_PQ_T_STRING, "aggregation parameter");
    break;
  }
  case K_PQ_CALL: {
    const k_pq_func_t *f = n->u.call.func;
    size_t na = f->nargs, got = n->u.call.nargs;
    char ctx[96];
    n->type = f->ret;
    if (f->variadic == 0) {
      if (na != got) {
        perr_at(p, n->pos, "expected %zu argument(s) in call to \"%s\", got %zu", na, f->name, got);
        return K_PQ_T_NONE;
      }
    } else {
      size_t min = na - 1;
      if (min > got) {
        perr_at(p, n->pos, "expected at least %zu argument(s) in call to \"%s\", got %zu", min,
                f->name, got);
        return K_PQ_T_NONE;
      }
      if (f->variadic > 0 && min + (size_t)f->variadic < got) {
        perr_at(p, n->pos, "expected at most %zu argument(s) in call to \"%s\", got %zu",
                min + (size_t)f->variadic, f->name, got);
        return K_PQ_T_NONE;
      }
    }
    snprintf(ctx, sizeof ctx, "call to function \"%s\"", f->name);
    for (size_t i = 0; i < got; i++) {
      size_t ti = i;
      if (i >= na) {
        if (f->variadic != -1) break;
        ti = na - 1;
      }
      expect_type(p, n->u.call.args[i], f->args[ti], ctx);
      if (p->failed) break;
    }
    break;
  }
  case K_PQ_BINARY: {
    k_pq_type_t lt = check(p, n->u.bin.lhs);
    k_pq_type_t rt = check(p, n->u.bin.rhs);
    k_pq_binop_t op = n->u.bin.op;
    if (p->failed) return K_PQ_T_NONE;
    n->type = (lt == K_PQ_T_SCALAR && rt == K_PQ_T_SCALAR) ? K_PQ_T_SCALAR : K_PQ_T_VECTOR;
    if (n->u.bin.return_bool && !is_comparison(op)) {
      perr_at(p, op_pos(p, n), "bool modifier can only be used on comparison operators");
      break;
    }
    if (is_comparison(op) && !n->u.bin.return_bool && lt == K_PQ_T_SCALAR && rt == K_PQ_T_SCALAR) {
      perr_at(p, op_pos(p, n), "comparisons between scalars must use BOOL modifier");
      break;
    }
    if (is_set_op(op) && n->u.bin.card == K_PQ_CARD_ONE_TO_ONE)
      n->u.bin.card = K_PQ_CARD_MANY_TO_MANY;
    if (n->u.bin.on)
      for (size_t i = 0; i < n->u.bin.nlabels; i++)
        for (size_t j = 0; j < n->u.bin.ninclude; j++)
          if (!strcmp(n->u.bin.labels[i], n->u.bin.include[j])) {
            char q[300];
            pq_quote(q, sizeof q, n->u.bin.labels[i], strlen(n->u.bin.labels[i]));
            perr_at(p, op_pos(p, n), "label %s must not occur in ON and GROUP clause at once", q);
            return K_PQ_T_NONE;
          }
    if (lt != K_PQ_T_SCALAR && lt != K_PQ_T_VECTOR) {
      perr_at(p, n->u.bin.lhs->pos, "binary expression must contain only scalar and instant vector types");
      break;
    }
    if (rt != K_PQ_T_SCALAR && rt != K_PQ_T_VECTOR) {
      perr_at(p, n->u.bin.rhs->pos, "binary expression must contain only scalar and instant vector types");
      break;
    }
    if (lt != K_PQ_T_VECTOR || rt != K_PQ_T_VECTOR) {
      if (n->u.bin.nlabels > 0) {
        perr_at(p, n->pos, "vector matching only allowed between instant vectors");
        break;
      }
      /* no matching between a scalar and anything */
      n->u.bin.card = K_PQ_CARD_ONE_TO_ONE;
      n->u.bin.ninclude = 0;
      n->u.bin.on = 0;
    } else if (is_set_op(op)) {
      if (n->u.bin.card == K_PQ_CARD_ONE_TO_MANY || n->u.bin.card == K_PQ_CARD_MANY_TO_ONE) {
        perr_at(p, n->pos, "no grouping allowed for \"%s\" operation", binop_name(op));
        break;
      }
    }
    if ((lt == K_PQ_T_SCALAR || rt == K_PQ_T_SCALAR) && is_set_op(op)) {
      perr_at(p, n->pos, "set operator \"%s\" not allowed in binary scalar expression",
              binop_name(op));
      break;
    }
    break;
  }
  }
  return p->failed ? K_PQ_T_NONE : n->type;
}

/* ---- API --------------------------------------------------------------- */

int k_promql_parse(const char *text, size_t len, const k_promql_opts_t *opts,
                   k_promql_expr_t **out, k_promql_err_t *e) {
  parser_t p;
  k_promql_expr_t *x = NULL;
  size_t max_len = opts && opts->max_expr_len ? opts->max_expr_len : K_PROMQL_DEFAULT_MAX_EXPR_LEN;
  int rc = 0;
  k_pq_node_t *root;

  memset(&p, 0, sizeof p);
  *out = NULL;
  if (e) e->type = K_PROMQL_ERR_NONE, e->code = 0, e->msg[0] = '\0';
  if (len > max_len) {
    rc = pq_err(e, KEEL_ETOOBIG, K_PROMQL_ERR_BAD_DATA,
                "query is too long: %zu bytes (the maximum is %zu)", len, max_len);
    goto out;
  }
  x = calloc(1, sizeof *x);
  if (!x || !(x->arena = pq_arena_new())) {
    rc = pq_err(e, KEEL_ENOMEM, K_PROMQL_ERR_INTERNAL, "out of memory");
    goto out;
  }
  p.a = x->arena;
  p.s = text;
  p.len = len;
  p.e = e;
  p.max_depth = opts && opts->max_depth ? opts->max_depth : K_PROMQL_DEFAULT_MAX_DEPTH;
  p.t = pq_lex(p.a, text, len, &p.nt);
  if (!p.t) {
    rc = pq_err(e, KEEL_ENOMEM, K_PROMQL_ERR_INTERNAL, "out of memory");
    goto out;
  }
  if (p.t[0].type == T_EOF) {
    perr_at(&p, 0, "no expression found in input");
    rc = p.code;
    goto out;
  }
  root = parse_expr(&p, 0);
  if (root && !p.failed && peek(&p)->type != T_EOF) unexpected(&p, "", "");
  if (!p.failed && root) check(&p, root);
  if (p.failed || !root) {
    if (!p.failed) perr_at(&p, 0, "invalid expression");
    rc = p.code;
    goto out;
  }
  x->root = root;
  *out = x;
  x = NULL;
out:
  k_promql_free(x);
  return rc;
}

void k_promql_free(k_promql_expr_t *x) {
  if (!x) return;
  pq_arena_free(x->arena);
  free(x);
}
