/* promql/internal.h — what the PromQL engine's files share.  Not an API. */
#ifndef KEELD_PROMQL_INTERNAL_H
#define KEELD_PROMQL_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "promql/promql.h"

/* ---- arena: everything of one parse or one evaluation's labels ---------- */

/* Allocations live until pq_arena_free; none is freed alone.  Used for the
 * AST and for interned label sets, whose count is bounded by the series a
 * query touches. */
typedef struct k_pq_arena k_pq_arena_t;
k_pq_arena_t *pq_arena_new(void);
void pq_arena_free(k_pq_arena_t *a);
void *pq_alloc(k_pq_arena_t *a, size_t n); /* zeroed, 16-aligned; NULL on OOM */
char *pq_strndup(k_pq_arena_t *a, const char *s, size_t n);
/* keel_grow (keel/grow.h) in the arena: p itself while n < *cap, else a
 * copy of p's n elements in room for twice *cap (`first` the first time),
 * *cap updated; NULL on OOM with p and *cap unchanged. */
void *pq_arena_grow(k_pq_arena_t *a, void *p, size_t *cap, size_t n, size_t elem, size_t first);

/* ---- errors ---------------------------------------------------------- */

int pq_err(k_promql_err_t *e, int code, k_promql_errtype_t type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Go's %q of a byte string into buf (cap bytes), for error texts. */
void pq_quote(char *buf, size_t cap, const char *s, size_t n);

/* ---- regular expressions ------------------------------------------- */

/* Refuses what RE2 (Prometheus' engine) refuses and what would make
 * glibc's regcomp explode: nested repetition operators ("a++"), repeat
 * counts over 1000, nested counted repetitions whose product exceeds 1000,
 * nesting over 100 groups.  0 when acceptable, else -1 with Go's wording
 * in why. */
int pq_regex_guard(const char *re, char *why, size_t cap);
/* The regex with RE2's "(?:" written as ERE's "(" (arena copy); NULL on
 * OOM. */
char *pq_regex_to_ere(k_pq_arena_t *a, const char *re);

/* ---- lexer ----------------------------------------------------------- */

typedef enum {
  T_EOF,
  T_ERROR,
  T_NUMBER,
  T_DURATION,
  T_STRING,
  T_IDENT,
  T_METRIC_IDENT,
  T_LPAREN,
  T_RPAREN,
  T_LBRACE,
  T_RBRACE,
  T_LBRACKET,
  T_RBRACKET,
  T_COMMA,
  T_COLON,
  T_AT,
  T_EQL,       /* = */
  T_EQL_REGEX, /* =~ */
  T_NEQ_REGEX, /* !~ */
  /* operators */
  T_ADD,
  T_SUB,
  T_MUL,
  T_DIV,
  T_MOD,
  T_POW,
  T_ATAN2,
  T_EQLC, /* == */
  T_NEQ,  /* != (also a matcher inside braces) */
  T_GTR,
  T_LSS,
  T_GTE,
  T_LTE,
  T_LAND,
  T_LOR,
  T_LUNLESS,
  /* aggregators */
  T_SUM,
  T_AVG,
  T_COUNT,
  T_MIN,
  T_MAX,
  T_GROUP,
  T_STDDEV,
  T_STDVAR,
  T_TOPK,
  T_BOTTOMK,
  T_COUNT_VALUES,
  T_QUANTILE,
  /* keywords */
  T_OFFSET,
  T_BY,
  T_WITHOUT,
  T_ON,
  T_IGNORING,
  T_GROUP_LEFT,
  T_GROUP_RIGHT,
  T_BOOL,
  T_START,
  T_END,
} pq_tok_type_t;

typedef struct pq_tok {
  pq_tok_type_t type;
  size_t pos, len;   /* the token's bytes in the input */
  const char *err;   /* T_ERROR: the message (arena) */
} pq_tok_t;

/* Tokenizes the whole input (comments dropped).  The last token is T_EOF or
 * T_ERROR (lexer errors end the stream where Prometheus' lexer would).
 * NULL on OOM. */
pq_tok_t *pq_lex(k_pq_arena_t *a, const char *s, size_t len, size_t *n);

int pq_tok_is_operator(pq_tok_type_t t);
int pq_tok_is_aggregator(pq_tok_type_t t);
int pq_tok_is_keyword(pq_tok_type_t t);
/* Prometheus' Item.desc(): how syntax errors name a token. */
void pq_tok_desc(const char *src, const pq_tok_t *t, char *buf, size_t cap);

/* Unquotes a STRING token (Go strconv.Unquote rules, ' and " alike, ` raw). */
char *pq_unquote(k_pq_arena_t *a, const char *s, size_t len);

/* ---- label sets ------------------------------------------------------ */

/* An interned label set: equal sets are the same pointer, so pointer
 * comparison is set equality and id keys hash maps. */
typedef struct pq_lset {
  struct pq_lset *next; /* intern chain */
  uint64_t hash;
  uint32_t id;
  uint32_t n;
  k_label_t v[]; /* sorted by name */
} pq_lset_t;

/* uint64 -> uint64 open-addressing map (keys are ids or id pairs). */
typedef struct pq_map {
  uint64_t *keys;
  uint64_t *vals;
  size_t cap, n;
} pq_map_t;
void pq_map_free(pq_map_t *m);
void pq_map_clear(pq_map_t *m);
/* 1 found (*v set), 0 not found. */
int pq_map_get(const pq_map_t *m, uint64_t k, uint64_t *v);
int pq_map_put(pq_map_t *m, uint64_t k, uint64_t v); /* 0 or KEEL_ENOMEM */

/* ---- evaluation ------------------------------------------------------ */

typedef struct pq_point {
  int64_t t;
  double v;
} pq_point_t;

typedef struct pq_series {
  const pq_lset_t *m;
  pq_point_t *p;
  size_t n, cap;
} pq_series_t;

typedef struct pq_matrix {
  pq_series_t *s;
  size_t n, cap;
} pq_matrix_t;

typedef struct pq_sample {
  const pq_lset_t *m;
  int64_t t;
  double v;
} pq_sample_t;

typedef struct pq_vector {
  pq_sample_t *s;
  size_t n, cap;
} pq_vector_t;

typedef struct pq_ctx {
  k_querier_t *q;
  k_promql_err_t *e;
  const k_promql_opts_t *o;
  int64_t start, end, interval; /* ms; instant: start == end, interval 1 */
  size_t nsteps;
  size_t cur_samples; /* samples held now: Prometheus' currentSamples */
  k_pq_arena_t *arena;
  /* interning */
  pq_lset_t **tab;
  size_t tabcap, ntab;
  uint32_t next_id;
  const pq_lset_t *empty;
  /* scratch for building label sets */
  k_label_t *scratch;
  size_t scratchcap;
} pq_ctx_t;

int pq_vec_push(pq_ctx_t *c, pq_vector_t *v, const pq_lset_t *m, int64_t t, double val);
void pq_vec_free(pq_vector_t *v);
int pq_series_push(pq_series_t *s, int64_t t, double v);
void pq_matrix_free(pq_ctx_t *c, pq_matrix_t *m);
/* KEEL_ETOOBIG with Prometheus' text when over the sample limit. */
int pq_account(pq_ctx_t *c, size_t n);

/* Label sets; all results are interned (NULL + KEEL_ENOMEM in c->e on OOM). */
const pq_lset_t *pq_intern(pq_ctx_t *c, const k_label_t *v, size_t n); /* v sorted */
const pq_lset_t *pq_lset_drop_name(pq_ctx_t *c, const pq_lset_t *l);
/* keep=1: only names[]; keep=0: all but names[] (and __name__ if drop_name) */
const pq_lset_t *pq_lset_filter(pq_ctx_t *c, const pq_lset_t *l, const char *const *names,
                                size_t nn, int keep, int drop_name);
/* l with name=value (value "" or NULL: without name). value is copied. */
const pq_lset_t *pq_lset_set(pq_ctx_t *c, const pq_lset_t *l, const char *name,
                             const char *value);
const char *pq_lset_get(const pq_lset_t *l, const char *name); /* NULL when absent */
int pq_lset_cmp(const pq_lset_t *a, const pq_lset_t *b);     /* Prometheus' labels.Compare */
/* Prometheus' labels.String(): {a="b", c="d"} into buf (truncated). */
void pq_lset_str(const pq_lset_t *l, char *buf, size_t cap);

int pq_errf(pq_ctx_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- functions ------------------------------------------------------- */

/* Per step, over instant vectors (scalars arrive as one-sample vectors;
 * string arguments are read from the call's AST). */
typedef int (*pq_vfunc_t)(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *args, int64_t ts,
                          pq_vector_t *out);
/* Per series and step, over the window's points (n >= 1); sargs[i] is the
 * value of scalar argument i at this step.  Sets *has when there is a
 * result. */
typedef int (*pq_mfunc_t)(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                          const double *sargs, int64_t ts, double *out, int *has);

struct k_pq_func {
  const char *name;
  k_pq_type_t args[5];
  size_t nargs;
  int variadic; /* 0: exactly nargs; >0: up to that many more; -1: any more */
  k_pq_type_t ret;
  pq_vfunc_t vf;
  pq_mfunc_t mf;
  int keep_name; /* range functions: last_over_time keeps __name__ */
};

/* NULL when unknown.  *supported is 0 for Prometheus functions this engine
 * refuses (native histograms, subquery-only helpers). */
const k_pq_func_t *pq_func_lookup(const char *name, size_t len, int *supported);

/* Evaluation entry points shared by eval.c and funcs.c. */
double pq_quantile(double q, double *v, size_t n); /* sorts v */
int pq_is_stale(double v);
const char *pq_go_float(double v, char *buf); /* FormatFloat 'f' -1 */
const k_pq_node_t *pq_unwrap_parens(const k_pq_node_t *n);
/* Labels for absent()/absent_over_time() from the argument's matchers. */
const pq_lset_t *pq_absent_labels(pq_ctx_t *c, const k_pq_node_t *arg);

/* format.c: JSON */
json_t *pq_json_labels(const pq_lset_t *l);
json_t *pq_json_point(int64_t t, double v);

#endif
