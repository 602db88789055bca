/* promql/promql.h — a PromQL engine that answers like Prometheus 2.42.
 *
 * Text -> tokens (lex.c) -> AST (parse.c, checked like Prometheus' checkAST)
 * -> evaluation over a k_querier_t (eval.c, funcs.c) -> jansson values
 * shaped exactly like the "data" member of Prometheus' /api/v1/query and
 * /api/v1/query_range answers (format.c).
 *
 * Semantics follow Prometheus 2.42 (the version Debian ships, which the peer
 * check in tests/promql/ runs): 5m lookback, stale markers end a series,
 * closed [t-range, t] windows, rate/increase/delta extrapolation, label
 * handling of operators and functions, and its error texts.  Not supported,
 * and refused at parse time with an error naming the construct: the `@`
 * modifier, subqueries, native histograms, and a few rarely used functions
 * (k_promql_parse's error says which).  Regular expressions are POSIX ERE
 * (what the querier implements), not RE2.
 *
 * Thread-safety: none needed; no globals.  One call uses one querier.
 */
#ifndef KEELD_PROMQL_PROMQL_H
#define KEELD_PROMQL_PROMQL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "metrics/querier.h"

/* ---- errors ---------------------------------------------------------- */

/* Prometheus' errorType of a failed query. */
typedef enum {
  K_PROMQL_ERR_NONE = 0,
  K_PROMQL_ERR_BAD_DATA,  /* "bad_data": parse errors, bad parameters */
  K_PROMQL_ERR_EXECUTION, /* "execution": evaluation errors, limits */
  K_PROMQL_ERR_INTERNAL,  /* "internal": storage failure, out of memory */
} k_promql_errtype_t;

/* Why not keel_err_t: Prometheus' messages embed whole label sets ("found
 * duplicate series for the match group {...} ... [{...}, {...}]"), which
 * do not fit its 256 bytes.  code is the KEEL_E* value the call returned;
 * msg is the one-line text.  From k_promql_instant/k_promql_range it is
 * exactly what Prometheus' API puts in "error" (parse errors carry its
 * `invalid parameter "query": ` prefix), so the HTTP layer answers
 *   {"status":"error","errorType":k_promql_errtype_name(type),"error":msg}
 * (HTTP 400 for bad_data, 422 for execution, 500 for internal). */
typedef struct k_promql_err {
  int code;
  k_promql_errtype_t type;
  char msg[1024];
} k_promql_err_t;

/* "bad_data", "execution", "internal"; "" for NONE.  Static. */
const char *k_promql_errtype_name(k_promql_errtype_t t);

/* ---- AST ----------------------------------------------------------------- */

typedef enum {
  K_PQ_T_NONE = 0,
  K_PQ_T_SCALAR,
  K_PQ_T_VECTOR, /* instant vector */
  K_PQ_T_MATRIX, /* range vector */
  K_PQ_T_STRING,
} k_pq_type_t;

typedef enum {
  K_PQ_NUMBER,
  K_PQ_STRING,
  K_PQ_VSEL,   /* instant vector selector */
  K_PQ_MSEL,   /* range vector selector: u.msel.vs is a K_PQ_VSEL */
  K_PQ_CALL,
  K_PQ_AGG,
  K_PQ_BINARY,
  K_PQ_UNARY,  /* +x or -x of a non-literal (literals are folded) */
  K_PQ_PAREN,
} k_pq_kind_t;

/* Binary operators and aggregations, in Prometheus' terms. */
typedef enum {
  K_PQ_OP_ADD, K_PQ_OP_SUB, K_PQ_OP_MUL, K_PQ_OP_DIV, K_PQ_OP_MOD, K_PQ_OP_POW, K_PQ_OP_ATAN2,
  K_PQ_OP_EQL, K_PQ_OP_NEQ, K_PQ_OP_GTR, K_PQ_OP_LSS, K_PQ_OP_GTE, K_PQ_OP_LTE,
  K_PQ_OP_AND, K_PQ_OP_OR, K_PQ_OP_UNLESS,
} k_pq_binop_t;

typedef enum {
  K_PQ_AGG_SUM, K_PQ_AGG_AVG, K_PQ_AGG_COUNT, K_PQ_AGG_MIN, K_PQ_AGG_MAX, K_PQ_AGG_GROUP,
  K_PQ_AGG_STDDEV, K_PQ_AGG_STDVAR, K_PQ_AGG_TOPK, K_PQ_AGG_BOTTOMK, K_PQ_AGG_COUNT_VALUES,
  K_PQ_AGG_QUANTILE,
} k_pq_aggop_t;

typedef enum {
  K_PQ_CARD_ONE_TO_ONE, K_PQ_CARD_MANY_TO_ONE, K_PQ_CARD_ONE_TO_MANY, K_PQ_CARD_MANY_TO_MANY,
} k_pq_card_t;

typedef struct k_pq_func k_pq_func_t; /* a row of the function table (funcs.c) */
typedef struct k_pq_node k_pq_node_t;

struct k_pq_node {
  k_pq_kind_t kind;
  k_pq_type_t type;
  size_t pos, end;  /* byte range [pos, end) in the query text */
  unsigned height;  /* 1 + the tallest child: bounds every recursion */
  union {
    double number;
    const char *string; /* unquoted */
    struct {
      const char *name;        /* metric name written before the braces, or NULL */
      const k_matcher_t *m;    /* all matchers, incl. __name__="name" last if name */
      size_t nm;
      int64_t offset_ms;
    } vsel;
    struct {
      k_pq_node_t *vs;
      int64_t range_ms;
    } msel;
    struct {
      const k_pq_func_t *func;
      k_pq_node_t **args;
      size_t nargs;
    } call;
    struct {
      k_pq_aggop_t op;
      k_pq_node_t *expr;
      k_pq_node_t *param; /* topk/bottomk/quantile/count_values, else NULL */
      const char **grouping;
      size_t ngrouping;
      int without;
    } agg;
    struct {
      k_pq_binop_t op;
      k_pq_node_t *lhs, *rhs;
      int return_bool;
      /* vector matching; meaningful only when both sides are vectors */
      k_pq_card_t card;
      int on;                /* on(...) rather than ignoring(...) */
      const char **labels;   /* the on/ignoring list */
      size_t nlabels;
      const char **include;  /* group_left/group_right extra labels */
      size_t ninclude;
    } bin;
    struct {
      k_pq_node_t *expr;
      int neg; /* 1: minus, 0: plus */
    } unary;
    struct {
      k_pq_node_t *expr;
    } paren;
  } u;
};

/* A parsed expression.  Owns its nodes and strings (one arena). */
typedef struct k_promql_expr {
  k_pq_node_t *root;
  struct k_pq_arena *arena;
} k_promql_expr_t;

/* Limits.  Zero fields take the defaults below. */
typedef struct k_promql_opts {
  size_t max_samples;      /* samples held at once by one query (Prometheus' --query.max-samples) */
  int64_t lookback_ms;     /* instant-vector lookback */
  size_t max_expr_len;     /* bytes of query text */
  unsigned max_depth;      /* AST height: parser and evaluator recursion */
  size_t max_points;       /* points per series of a range query */
} k_promql_opts_t;

#define K_PROMQL_DEFAULT_MAX_SAMPLES 50000000u
#define K_PROMQL_DEFAULT_LOOKBACK_MS 300000
#define K_PROMQL_DEFAULT_MAX_EXPR_LEN 65536u
#define K_PROMQL_DEFAULT_MAX_DEPTH 200u
#define K_PROMQL_DEFAULT_MAX_POINTS 11000u

/* Parses text[0..len) (no NUL needed).  On success *out is a new expression
 * the caller frees with k_promql_free; on error *out is NULL, e->type is
 * K_PROMQL_ERR_BAD_DATA and e->msg is Prometheus' parser text, e.g.
 * "1:4: parse error: unexpected end of input".  opts may be NULL. */
int k_promql_parse(const char *text, size_t len, const k_promql_opts_t *opts,
                   k_promql_expr_t **out, k_promql_err_t *e);
void k_promql_free(k_promql_expr_t *x); /* NULL ok */

/* A call node's function name ("rate").  Static. */
const char *k_promql_func_name(const k_pq_func_t *f);

/* Prometheus' DocumentedType: "scalar", "instant vector", "range vector",
 * "string".  Static. */
const char *k_promql_type_name(k_pq_type_t t);

/* ---- queries ------------------------------------------------------------ */

/* Instant query at t_ms.  On success *out is a new reference to
 *   {"resultType": "vector"|"scalar"|"matrix"|"string", "result": ...}
 * exactly as in Prometheus' /api/v1/query "data".  Timestamps are JSON
 * numbers in seconds (integers when whole; dump with
 * JSON_REAL_PRECISION(17) or finer to keep milliseconds exact); sample
 * values are strings formatted like Go's FormatFloat(v,'f',-1,64).
 * The querier stays the caller's: it is neither closed nor referenced
 * after return.  opts may be NULL. */
int k_promql_instant(k_querier_t *q, const char *expr, int64_t t_ms, json_t **out,
                     k_promql_err_t *e);
int k_promql_instant_opts(k_querier_t *q, const char *expr, int64_t t_ms,
                          const k_promql_opts_t *opts, json_t **out, k_promql_err_t *e);
/* The same over an expression k_promql_parse gave, for callers that run
 * one query many times (alert rules): x is borrowed and only read, so it
 * may be evaluated any number of times, and stays the caller's to free
 * with k_promql_free — never before the call returns.  The parse-time
 * limits (max_expr_len, max_depth) are those x was parsed with; opts
 * bounds the evaluation.  Errors are evaluation errors only: no
 * `invalid parameter "query"` prefix, since there is no text to blame;
 * x NULL is "no query given". */
int k_promql_instant_expr(k_querier_t *q, const k_promql_expr_t *x, int64_t t_ms,
                          const k_promql_opts_t *opts, json_t **out, k_promql_err_t *e);

/* Range query over [start_ms, end_ms] every step_ms.  *out is
 * {"resultType": "matrix", "result": [{"metric": {...}, "values": [[t, "v"], ...]}, ...]}
 * with series sorted by labels.  Parameter errors are "bad_data" with
 * Prometheus' texts (end before start, step <= 0, more than 11000 points
 * per series, expression not scalar/instant vector). */
int k_promql_range(k_querier_t *q, const char *expr, int64_t start_ms, int64_t end_ms,
                   int64_t step_ms, json_t **out, k_promql_err_t *e);
int k_promql_range_opts(k_querier_t *q, const char *expr, int64_t start_ms, int64_t end_ms,
                        int64_t step_ms, const k_promql_opts_t *opts, json_t **out,
                        k_promql_err_t *e);

/* Go's strconv.FormatFloat(v, 'f', -1, 64): shortest decimal that reads
 * back as v, never in exponent form; "NaN", "+Inf", "-Inf".  buf must hold
 * K_PROMQL_FLOAT_BUF bytes; returns buf. */
#define K_PROMQL_FLOAT_BUF 352
char *k_promql_format_float(double v, char *buf);

#endif
