/* promql/funcs.c — PromQL functions, as Prometheus 2.42's functions.go
 * computes them (same formulas, same order of floating-point operations
 * where it matters, same label handling: value-changing functions drop
 * __name__, label_* and sort keep it, last_over_time keeps it). */
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "keel/grow.h"
#include "keel/metricbatch.h"
#include "promql/internal.h"

/* ---- range-vector functions ------------------------------------------ */

static const k_pq_node_t *matrix_arg(const k_pq_node_t *call) {
  for (size_t i = 0; i < call->u.call.nargs; i++) {
    const k_pq_node_t *a = pq_unwrap_parens(call->u.call.args[i]);
    if (a->kind == K_PQ_MSEL) return a;
  }
  return NULL;
}

/* extrapolatedRate: the increase over the window, extrapolated to its
 * edges unless the first/last sample is farther than 1.1 average
 * intervals from them (then by half an interval), and for counters not
 * past the point where the counter would have been zero. */
static int extrapolated_rate(const k_pq_node_t *call, const pq_point_t *p, size_t n, int64_t ts,
                             int is_counter, int is_rate, double *out, int *has) {
  const k_pq_node_t *ms = matrix_arg(call);
  int64_t range = ms->u.msel.range_ms, off = ms->u.msel.vs->u.vsel.offset_ms;
  int64_t range_start = ts - (range + off), range_end = ts - off;
  double result, dur_start, dur_end, sampled, avg, thr, ext, factor;
  if (n < 2) return 0;
  result = p[n - 1].v - p[0].v;
  if (is_counter) {
    double prev = p[0].v;
    for (size_t i = 1; i < n; i++) {
      if (p[i].v < prev) result += prev;
      prev = p[i].v;
    }
  }
  dur_start = (double)(p[0].t - range_start) / 1000;
  dur_end = (double)(range_end - p[n - 1].t) / 1000;
  sampled = (double)(p[n - 1].t - p[0].t) / 1000;
  avg = sampled / (double)(n - 1);
  if (is_counter && result > 0 && p[0].v >= 0) {
    double dur_zero = sampled * (p[0].v / result);
    if (dur_zero < dur_start) dur_start = dur_zero;
  }
  thr = avg * 1.1;
  ext = sampled;
  ext += dur_start < thr ? dur_start : avg / 2;
  ext += dur_end < thr ? dur_end : avg / 2;
  factor = ext / sampled;
  if (is_rate) factor /= (double)range / 1000;
  *out = result * factor;
  *has = 1;
  return 0;
}

static int f_rate(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                  const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)s;
  return extrapolated_rate(call, p, n, ts, 1, 1, out, has);
}
static int f_increase(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                      const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)s;
  return extrapolated_rate(call, p, n, ts, 1, 0, out, has);
}
static int f_delta(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                   const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)s;
  return extrapolated_rate(call, p, n, ts, 0, 0, out, has);
}

/* instantValue: the last two samples. */
static int instant_value(const pq_point_t *p, size_t n, int is_rate, double *out, int *has) {
  pq_point_t last, prev;
  double r;
  int64_t dt;
  if (n < 2) return 0;
  last = p[n - 1];
  prev = p[n - 2];
  if (is_rate && last.v < prev.v) r = last.v; /* counter reset */
  else r = last.v - prev.v;
  dt = last.t - prev.t;
  if (dt == 0) return 0;
  if (is_rate) r /= (double)dt / 1000;
  *out = r;
  *has = 1;
  return 0;
}
static int f_irate(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                   const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts;
  return instant_value(p, n, 1, out, has);
}
static int f_idelta(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                    const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts;
  return instant_value(p, n, 0, out, has);
}

static void linear_regression(const pq_point_t *p, size_t n, int64_t intercept_t, double *slope,
                              double *intercept) {
  double cnt = 0, sx = 0, sy = 0, sxy = 0, sx2 = 0, init = p[0].v, cov, var;
  int const_y = 1;
  for (size_t i = 0; i < n; i++) {
    double x;
    if (const_y && i > 0 && p[i].v != init) const_y = 0;
    cnt += 1.0;
    x = (double)(p[i].t - intercept_t) / 1e3;
    sx += x;
    sy += p[i].v;
    sxy += x * p[i].v;
    sx2 += x * x;
  }
  if (const_y) {
    if (isinf(init)) {
      *slope = *intercept = NAN;
      return;
    }
    *slope = 0;
    *intercept = init;
    return;
  }
  cov = sxy - sx * sy / cnt;
  var = sx2 - sx * sx / cnt;
  *slope = cov / var;
  *intercept = sy / cnt - *slope * sx / cnt;
}

static int f_deriv(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                   const double *s, int64_t ts, double *out, int *has) {
  double slope, icpt;
  (void)c, (void)call, (void)s, (void)ts;
  if (n < 2) return 0;
  linear_regression(p, n, p[0].t, &slope, &icpt);
  *out = slope;
  *has = 1;
  return 0;
}

static int f_predict_linear(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                            const double *s, int64_t ts, double *out, int *has) {
  double slope, icpt;
  (void)c, (void)call;
  if (n < 2) return 0;
  linear_regression(p, n, ts, &slope, &icpt);
  *out = icpt + slope * s[1];
  *has = 1;
  return 0;
}

static int f_avg_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                           const double *s, int64_t ts, double *out, int *has) {
  double mean = 0, count = 0;
  (void)c, (void)call, (void)s, (void)ts;
  for (size_t i = 0; i < n; i++) {
    double v = p[i].v;
    count++;
    if (isinf(mean)) {
      if (isinf(v) && (mean > 0) == (v > 0)) continue;
      if (!isinf(v) && !isnan(v)) continue;
    }
    mean += v / count - mean / count;
  }
  *out = mean;
  *has = 1;
  return 0;
}

static int f_sum_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                           const double *s, int64_t ts, double *out, int *has) {
  double sum = 0;
  (void)c, (void)call, (void)s, (void)ts;
  for (size_t i = 0; i < n; i++) sum += p[i].v;
  *out = sum;
  *has = 1;
  return 0;
}

static int f_count_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                             const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts, (void)p;
  *out = (double)n;
  *has = 1;
  return 0;
}

static int f_max_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                           const double *s, int64_t ts, double *out, int *has) {
  double m = p[0].v;
  (void)c, (void)call, (void)s, (void)ts;
  for (size_t i = 0; i < n; i++)
    if (p[i].v > m || isnan(m)) m = p[i].v;
  *out = m;
  *has = 1;
  return 0;
}

static int f_min_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                           const double *s, int64_t ts, double *out, int *has) {
  double m = p[0].v;
  (void)c, (void)call, (void)s, (void)ts;
  for (size_t i = 0; i < n; i++)
    if (p[i].v < m || isnan(m)) m = p[i].v;
  *out = m;
  *has = 1;
  return 0;
}

static int f_last_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                            const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts;
  *out = p[n - 1].v;
  *has = 1;
  return 0;
}

static int f_one(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                 const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts, (void)p, (void)n;
  *out = 1;
  *has = 1;
  return 0;
}

static double stdvar_of(const pq_point_t *p, size_t n) {
  double aux = 0, count = 0, mean = 0;
  for (size_t i = 0; i < n; i++) {
    double delta;
    count++;
    delta = p[i].v - mean;
    mean += delta / count;
    aux += delta * (p[i].v - mean);
  }
  return aux / count;
}

static int f_stddev_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                              const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts;
  *out = sqrt(stdvar_of(p, n));
  *has = 1;
  return 0;
}

static int f_stdvar_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                              const double *s, int64_t ts, double *out, int *has) {
  (void)c, (void)call, (void)s, (void)ts;
  *out = stdvar_of(p, n);
  *has = 1;
  return 0;
}

static int f_quantile_over_time(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p,
                                size_t n, const double *s, int64_t ts, double *out, int *has) {
  double *v = malloc(n * sizeof *v);
  (void)call, (void)ts;
  if (!v) return pq_errf(c, KEEL_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) v[i] = p[i].v;
  *out = pq_quantile(s[0], v, n);
  *has = 1;
  free(v);
  return 0;
}

static int f_changes(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                     const double *s, int64_t ts, double *out, int *has) {
  double changes = 0, prev = p[0].v;
  (void)c, (void)call, (void)s, (void)ts;
  for (size_t i = 1; i < n; i++) {
    double cur = p[i].v;
    if (cur != prev && !(isnan(cur) && isnan(prev))) changes++;
    prev = cur;
  }
  *out = changes;
  *has = 1;
  return 0;
}

static int f_resets(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                    const double *s, int64_t ts, double *out, int *has) {
  double resets = 0, prev = p[0].v;
  (void)c, (void)call, (void)s, (void)ts;
  for (size_t i = 1; i < n; i++) {
    if (p[i].v < prev) resets++;
    prev = p[i].v;
  }
  *out = resets;
  *has = 1;
  return 0;
}

static int f_holt_winters(pq_ctx_t *c, const k_pq_node_t *call, const pq_point_t *p, size_t n,
                          const double *s, int64_t ts, double *out, int *has) {
  double sf = s[1], tf = s[2], s0 = 0, s1, b;
  (void)call, (void)ts;
  if (sf <= 0 || sf >= 1 || isnan(sf))
    return pq_errf(c, KEEL_EINVAL, "invalid smoothing factor. Expected: 0 < sf < 1, got: %f", sf);
  if (tf <= 0 || tf >= 1 || isnan(tf))
    return pq_errf(c, KEEL_EINVAL, "invalid trend factor. Expected: 0 < tf < 1, got: %f", tf);
  if (n < 2) return 0;
  s1 = p[0].v;
  b = p[1].v - p[0].v;
  for (size_t i = 1; i < n; i++) {
    double x = sf * p[i].v, y;
    if (i - 1 != 0) b = tf * (s1 - s0) + (1 - tf) * b;
    y = (1 - sf) * (s1 + b);
    s0 = s1;
    s1 = x + y;
  }
  *out = s1;
  *has = 1;
  return 0;
}

/* ---- instant-vector functions ---------------------------------------- */

/* Go's math.Max/Min: NaN wins, and +0 > -0. */
static double go_max(double a, double b) {
  if (isinf(a) && a > 0) return a;
  if (isinf(b) && b > 0) return b;
  if (isnan(a) || isnan(b)) return NAN;
  if (a == 0 && b == 0) return signbit(a) ? b : a;
  return a > b ? a : b;
}
static double go_min(double a, double b) {
  if (isinf(a) && a < 0) return a;
  if (isinf(b) && b < 0) return b;
  if (isnan(a) || isnan(b)) return NAN;
  if (a == 0 && b == 0) return signbit(a) ? a : b;
  return a < b ? a : b;
}

static int map_values(pq_ctx_t *c, pq_vector_t *v, int64_t ts, pq_vector_t *out,
                      double (*f)(double, const double *), const double *arg) {
  for (size_t i = 0; i < v->n; i++) {
    const pq_lset_t *m = pq_lset_drop_name(c, v->s[i].m);
    int rc;
    if (!m) return KEEL_ENOMEM;
    if ((rc = pq_vec_push(c, out, m, ts, f(v->s[i].v, arg)))) return rc;
  }
  return 0;
}

#define SIMPLE(name, expr)                                                                  \
  static double m_##name(double x, const double *a) {                                       \
    (void)a;                                                                                \
    return (expr);                                                                          \
  }                                                                                         \
  static int f_##name(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,     \
                      pq_vector_t *out) {                                                   \
    (void)call;                                                                             \
    return map_values(c, &a[0], ts, out, m_##name, NULL);                                   \
  }

SIMPLE(abs, fabs(x))
SIMPLE(ceil, ceil(x))
SIMPLE(floor, floor(x))
SIMPLE(exp, exp(x))
SIMPLE(sqrt, sqrt(x))
SIMPLE(ln, log(x))
SIMPLE(log2, log2(x))
SIMPLE(log10, log10(x))
SIMPLE(sgn, x < 0 ? -1.0 : x > 0 ? 1.0 : x)
SIMPLE(acos, acos(x))
SIMPLE(acosh, acosh(x))
SIMPLE(asin, asin(x))
SIMPLE(asinh, asinh(x))
SIMPLE(atan, atan(x))
SIMPLE(atanh, atanh(x))
SIMPLE(cos, cos(x))
SIMPLE(cosh, cosh(x))
SIMPLE(sin, sin(x))
SIMPLE(sinh, sinh(x))
SIMPLE(tan, tan(x))
SIMPLE(tanh, tanh(x))
SIMPLE(deg, x * 180 / M_PI)
SIMPLE(rad, x * M_PI / 180)

static double m_round(double x, const double *a) {
  double inv = 1.0 / a[0];
  return floor(x * inv + 0.5) / inv;
}
static int f_round(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                   pq_vector_t *out) {
  double to = call->u.call.nargs >= 2 && a[1].n ? a[1].s[0].v : 1;
  return map_values(c, &a[0], ts, out, m_round, &to);
}

static double m_clamp_max(double x, const double *a) { return go_min(a[0], x); }
static double m_clamp_min(double x, const double *a) { return go_max(a[0], x); }
static double m_clamp(double x, const double *a) { return go_max(a[0], go_min(a[1], x)); }

static int f_clamp_max(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                       pq_vector_t *out) {
  double m = a[1].n ? a[1].s[0].v : NAN;
  (void)call;
  return map_values(c, &a[0], ts, out, m_clamp_max, &m);
}
static int f_clamp_min(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                       pq_vector_t *out) {
  double m = a[1].n ? a[1].s[0].v : NAN;
  (void)call;
  return map_values(c, &a[0], ts, out, m_clamp_min, &m);
}
static int f_clamp(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                   pq_vector_t *out) {
  double mm[2] = {a[1].n ? a[1].s[0].v : NAN, a[2].n ? a[2].s[0].v : NAN};
  (void)call;
  if (mm[1] < mm[0]) return 0;
  return map_values(c, &a[0], ts, out, m_clamp, mm);
}

static int f_time(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                  pq_vector_t *out) {
  (void)call, (void)a;
  return pq_vec_push(c, out, c->empty, ts, (double)ts / 1000);
}

static int f_pi(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                pq_vector_t *out) {
  (void)call, (void)a;
  return pq_vec_push(c, out, c->empty, ts, M_PI);
}

static int f_vector(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                    pq_vector_t *out) {
  (void)call;
  return pq_vec_push(c, out, c->empty, ts, a[0].n ? a[0].s[0].v : NAN);
}

static int f_scalar(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                    pq_vector_t *out) {
  (void)call;
  return pq_vec_push(c, out, c->empty, ts, a[0].n == 1 ? a[0].s[0].v : NAN);
}

static int f_absent(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                    pq_vector_t *out) {
  const pq_lset_t *m;
  if (a[0].n) return 0;
  m = pq_absent_labels(c, call->u.call.args[0]);
  if (!m) return KEEL_ENOMEM;
  return pq_vec_push(c, out, m, ts, 1);
}

static int f_timestamp(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                       pq_vector_t *out) {
  (void)call;
  for (size_t i = 0; i < a[0].n; i++) {
    const pq_lset_t *m = pq_lset_drop_name(c, a[0].s[i].m);
    int rc;
    if (!m) return KEEL_ENOMEM;
    if ((rc = pq_vec_push(c, out, m, ts, (double)a[0].s[i].t / 1000))) return rc;
  }
  return 0;
}

/* sort/sort_desc: Prometheus sorts with sort.Sort(sort.Reverse(heap)), so
 * NaN ends up last either way; for up to 12 elements Go's sort.Sort is an
 * insertion sort, which the small case copies (ties keep Go's order). */
static int less_asc(const pq_sample_t *a, const pq_sample_t *b) {
  return isnan(b->v) || b->v > a->v;
}
static int less_desc(const pq_sample_t *a, const pq_sample_t *b) {
  return isnan(b->v) || b->v < a->v;
}
static int cmp_asc(const void *x, const void *y) {
  const pq_sample_t *a = x, *b = y;
  return less_asc(a, b) ? (less_asc(b, a) ? 0 : -1) : (less_asc(b, a) ? 1 : 0);
}
static int cmp_desc(const void *x, const void *y) {
  const pq_sample_t *a = x, *b = y;
  return less_desc(a, b) ? (less_desc(b, a) ? 0 : -1) : (less_desc(b, a) ? 1 : 0);
}
static int sort_vec(pq_ctx_t *c, pq_vector_t *a, int64_t ts, pq_vector_t *out, int desc) {
  int (*less)(const pq_sample_t *, const pq_sample_t *) = desc ? less_desc : less_asc;
  for (size_t i = 0; i < a->n; i++) {
    int rc = pq_vec_push(c, out, a->s[i].m, ts, a->s[i].v);
    if (rc) return rc;
  }
  if (out->n <= 12) {
    for (size_t i = 1; i < out->n; i++)
      for (size_t j = i; j > 0 && less(&out->s[j], &out->s[j - 1]); j--) {
        pq_sample_t t = out->s[j];
        out->s[j] = out->s[j - 1];
        out->s[j - 1] = t;
      }
  } else {
    qsort(out->s, out->n, sizeof *out->s, desc ? cmp_desc : cmp_asc);
  }
  return 0;
}
static int f_sort(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                  pq_vector_t *out) {
  (void)call;
  return sort_vec(c, &a[0], ts, out, 0);
}
static int f_sort_desc(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                       pq_vector_t *out) {
  (void)call;
  return sort_vec(c, &a[0], ts, out, 1);
}

/* Calendar functions: UTC fields of the value (seconds), or of the
 * evaluation time without an argument. */
typedef double (*cal_fn)(const struct tm *tm);
static double c_year(const struct tm *t) { return t->tm_year + 1900; }
static double c_month(const struct tm *t) { return t->tm_mon + 1; }
static double c_dom(const struct tm *t) { return t->tm_mday; }
static double c_dow(const struct tm *t) { return t->tm_wday; }
static double c_doy(const struct tm *t) { return t->tm_yday + 1; }
static double c_hour(const struct tm *t) { return t->tm_hour; }
static double c_minute(const struct tm *t) { return t->tm_min; }
static double c_dim(const struct tm *t) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  long y = (long)t->tm_year + 1900;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return t->tm_mon == 1 ? 28 + leap : days[t->tm_mon];
}

static double cal_value(double secs, cal_fn f) {
  struct tm tm;
  time_t tt;
  /* Go's int64(float) truncates; out-of-range values have no calendar */
  if (!(secs > -6.7e16 && secs < 6.7e16)) return NAN;
  tt = (time_t)(long long)secs;
  if (!gmtime_r(&tt, &tm)) return NAN;
  return f(&tm);
}

static int cal(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts, pq_vector_t *out,
               cal_fn f) {
  if (call->u.call.nargs == 0) {
    /* time.Unix(ts/1000, 0): integer division truncates toward zero */
    return pq_vec_push(c, out, c->empty, ts, cal_value((double)(ts / 1000), f));
  }
  for (size_t i = 0; i < a[0].n; i++) {
    const pq_lset_t *m = pq_lset_drop_name(c, a[0].s[i].m);
    int rc;
    if (!m) return KEEL_ENOMEM;
    if ((rc = pq_vec_push(c, out, m, ts, cal_value(a[0].s[i].v, f)))) return rc;
  }
  return 0;
}

#define CAL(name, fn)                                                                    \
  static int f_##name(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,  \
                      pq_vector_t *out) {                                                \
    return cal(c, call, a, ts, out, fn);                                                 \
  }
CAL(year, c_year)
CAL(month, c_month)
CAL(day_of_month, c_dom)
CAL(day_of_week, c_dow)
CAL(day_of_year, c_doy)
CAL(days_in_month, c_dim)
CAL(hour, c_hour)
CAL(minute, c_minute)

/* ---- histogram_quantile ------------------------------------------------ */

typedef struct bucket {
  double upper, count;
} bucket_t;

static int cmp_bucket(const void *a, const void *b) {
  double x = ((const bucket_t *)a)->upper, y = ((const bucket_t *)b)->upper;
  return x < y ? -1 : x > y ? 1 : 0;
}

/* Prometheus' bucketQuantile over classic le buckets. */
static double bucket_quantile(double q, bucket_t *b, size_t n) {
  size_t i, k, lo;
  double obs, rank, start = 0, end, count, max = -INFINITY;
  if (isnan(q)) return NAN;
  if (q < 0) return -INFINITY;
  if (q > 1) return INFINITY;
  qsort(b, n, sizeof *b, cmp_bucket);
  if (!(isinf(b[n - 1].upper) && b[n - 1].upper > 0)) return NAN;
  /* coalesce equal bounds */
  for (i = 1, k = 0; i < n; i++) {
    if (b[i].upper == b[k].upper) b[k].count += b[i].count;
    else b[++k] = b[i];
  }
  n = k + 1;
  /* ensureMonotonic */
  for (i = 0; i < n; i++) {
    if (b[i].count > max) max = b[i].count;
    else if (b[i].count < max) b[i].count = max;
  }
  if (n < 2) return NAN;
  obs = b[n - 1].count;
  if (obs == 0) return NAN;
  rank = q * obs;
  /* sort.Search(n-1, count >= rank) */
  for (lo = 0; lo < n - 1 && !(b[lo].count >= rank); lo++) {
  }
  if (lo == n - 1) return b[n - 2].upper;
  if (lo == 0 && b[0].upper <= 0) return b[0].upper;
  end = b[lo].upper;
  count = b[lo].count;
  if (lo > 0) {
    start = b[lo - 1].upper;
    count -= b[lo - 1].count;
    rank -= b[lo - 1].count;
  }
  return start + (end - start) * (rank / count);
}

/* Go's strconv.ParseFloat for an le value (no leading space, no junk). */
static int parse_le(const char *s, double *out) {
  char *end;
  if (!*s || *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' || *s == '\f')
    return -1;
  if (!strcasecmp(s, "+inf") || !strcasecmp(s, "inf") || !strcasecmp(s, "+infinity") ||
      !strcasecmp(s, "infinity")) {
    *out = INFINITY;
    return 0;
  }
  if (!strcasecmp(s, "-inf") || !strcasecmp(s, "-infinity")) {
    *out = -INFINITY;
    return 0;
  }
  *out = strtod(s, &end);
  if (end == s || *end) return -1;
  return 0;
}

static int f_histogram_quantile(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                                pq_vector_t *out) {
  static const char *const le[] = {"le"};
  double q = a[0].n ? a[0].s[0].v : NAN;
  pq_vector_t *in = &a[1];
  pq_map_t groups = {0};
  struct hgroup {
    const pq_lset_t *metric;
    bucket_t *b;
    size_t n, cap;
  } *g = NULL;
  size_t ng = 0, capg = 0;
  int rc = 0;
  (void)call;
  for (size_t i = 0; i < in->n; i++) {
    const char *les = pq_lset_get(in->s[i].m, "le");
    const pq_lset_t *sig;
    double upper;
    uint64_t gi;
    if (!les || parse_le(les, &upper)) continue;
    sig = pq_lset_filter(c, in->s[i].m, le, 1, 0, 0);
    if (!sig) {
      rc = KEEL_ENOMEM;
      goto out;
    }
    if (!pq_map_get(&groups, sig->id, &gi)) {
      struct hgroup *ngp = keel_grow(g, &capg, ng, sizeof *ngp, 8);
      if (!ngp) {
        rc = pq_errf(c, KEEL_ENOMEM, "out of memory");
        goto out;
      }
      g = ngp;
      memset(&g[ng], 0, sizeof g[ng]);
      g[ng].metric = pq_lset_drop_name(c, sig);
      if (!g[ng].metric) {
        rc = KEEL_ENOMEM;
        goto out;
      }
      gi = ng++;
      if (pq_map_put(&groups, sig->id, gi)) {
        rc = pq_errf(c, KEEL_ENOMEM, "out of memory");
        goto out;
      }
    }
    bucket_t *nb = keel_grow(g[gi].b, &g[gi].cap, g[gi].n, sizeof *nb, 8);
    if (!nb) {
      rc = pq_errf(c, KEEL_ENOMEM, "out of memory");
      goto out;
    }
    g[gi].b = nb;
    g[gi].b[g[gi].n].upper = upper;
    g[gi].b[g[gi].n].count = in->s[i].v;
    g[gi].n++;
  }
  for (size_t i = 0; i < ng; i++)
    if ((rc = pq_vec_push(c, out, g[i].metric, ts, bucket_quantile(q, g[i].b, g[i].n)))) goto out;
out:
  for (size_t i = 0; i < ng; i++) free(g[i].b);
  free(g);
  pq_map_free(&groups);
  return rc;
}

/* ---- label_replace / label_join -------------------------------------- */

static int valid_label_name(const char *s) { return keel_mb_label_name_ok(s, strlen(s)); }

static const char *str_arg(const k_pq_node_t *call, size_t i) {
  return pq_unwrap_parens(call->u.call.args[i])->u.string;
}

/* Go's Regexp.ExpandString.  grp[k] is the ERE group of RE2 capture k
 * (the pattern is wrapped in a group for anchoring, and "(?:" groups
 * became capturing ones); ngrp counts RE2's captures plus the whole match. */
static int expand(const char *tmpl, const char *src, const regmatch_t *m, const size_t *grp,
                  size_t ngrp, char **out) {
  size_t cap = strlen(tmpl) + strlen(src) * 4 + 16, o = 0;
  char *buf = malloc(cap);
#define PUTS(p, n)                                          \
  do {                                                      \
    size_t n_ = (n);                                        \
    if (o + n_ + 1 > cap) {                                 \
      char *nb_;                                            \
      cap = (o + n_ + 1) * 2;                               \
      nb_ = realloc(buf, cap);                              \
      if (!nb_) {                                           \
        free(buf);                                          \
        return KEEL_ENOMEM;                                 \
      }                                                     \
      buf = nb_;                                            \
    }                                                       \
    memcpy(buf + o, (p), n_);                               \
    o += n_;                                                \
  } while (0)
  if (!buf) return KEEL_ENOMEM;
  while (*tmpl) {
    const char *d = strchr(tmpl, '$'), *name, *rest;
    size_t nl = 0;
    int brace = 0;
    long num;
    if (!d) break;
    PUTS(tmpl, (size_t)(d - tmpl));
    tmpl = d + 1;
    if (*tmpl == '$') {
      PUTS("$", 1);
      tmpl++;
      continue;
    }
    name = tmpl;
    if (*name == '{') brace = 1, name++;
    while (name[nl] && (name[nl] == '_' || (name[nl] >= 'a' && name[nl] <= 'z') ||
                        (name[nl] >= 'A' && name[nl] <= 'Z') || (name[nl] >= '0' && name[nl] <= '9') ||
                        (unsigned char)name[nl] >= 0x80))
      nl++;
    if (nl == 0 || (brace && name[nl] != '}')) {
      PUTS("$", 1);
      continue;
    }
    rest = name + nl + (brace ? 1 : 0);
    num = 0;
    for (size_t i = 0; i < nl; i++) {
      if (name[i] < '0' || name[i] > '9' || num >= 100000000) {
        num = -1;
        break;
      }
      num = num * 10 + (name[i] - '0');
    }
    if (name[0] == '0' && nl > 1) num = -1;
    tmpl = rest;
    if (num >= 0 && (size_t)num < ngrp) {
      size_t g = grp[num];
      if (m[g].rm_so >= 0) PUTS(src + m[g].rm_so, (size_t)(m[g].rm_eo - m[g].rm_so));
    }
    /* named groups do not exist in POSIX regexes: expand to nothing */
  }
  PUTS(tmpl, strlen(tmpl));
  buf[o] = '\0';
  *out = buf;
  return 0;
#undef PUTS
}

static int f_label_replace(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                           pq_vector_t *out) {
  const char *dst = str_arg(call, 1), *repl = str_arg(call, 2), *src = str_arg(call, 3),
             *re = str_arg(call, 4);
  regex_t r;
  regmatch_t *m = NULL;
  size_t n = strlen(re), *grp = NULL, ngrp = 1, nparen = 0;
  char *anch = malloc(n + 5), why[128];
  int rc = 0, compiled = 0, in_class = 0;
  if (!anch) return pq_errf(c, KEEL_ENOMEM, "out of memory");
  /* "^(re)$" with RE2's "(?:" as "(": map RE2 capture numbers to groups */
  grp = malloc((n + 2) * sizeof *grp);
  m = malloc((n + 2) * sizeof *m);
  if (!grp || !m) {
    rc = pq_errf(c, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  grp[0] = 0;
  {
    size_t o = 0;
    anch[o++] = '^';
    anch[o++] = '(';
    for (size_t i = 0; i < n; i++) {
      if (re[i] == '\\' && i + 1 < n) {
        anch[o++] = re[i++];
        anch[o++] = re[i];
        continue;
      }
      if (!in_class && re[i] == '[') in_class = 1;
      else if (in_class && re[i] == ']') in_class = 0;
      if (!in_class && re[i] == '(') {
        nparen++;
        if (re[i + 1] == '?' && re[i + 2] == ':') {
          anch[o++] = '(';
          i += 2;
          continue;
        }
        grp[ngrp++] = nparen + 1;
      }
      anch[o++] = re[i];
    }
    anch[o++] = ')';
    anch[o++] = '$';
    anch[o] = '\0';
  }
  if (pq_regex_guard(re, why, sizeof why) || regcomp(&r, anch, REG_EXTENDED)) {
    rc = pq_errf(c, KEEL_EINVAL, "invalid regular expression in label_replace(): %s", re);
    goto out;
  }
  compiled = 1;
  if (!valid_label_name(dst)) {
    rc = pq_errf(c, KEEL_EINVAL, "invalid destination label name in label_replace(): %s", dst);
    goto out;
  }
  for (size_t i = 0; i < a[0].n; i++) {
    const pq_lset_t *ml = a[0].s[i].m;
    const char *sv = pq_lset_get(ml, src);
    if (!sv) sv = "";
    if (regexec(&r, sv, nparen + 2, m, 0) == 0) {
      char *res = NULL;
      if (expand(repl, sv, m, grp, ngrp, &res)) {
        rc = pq_errf(c, KEEL_ENOMEM, "out of memory");
        goto out;
      }
      ml = pq_lset_set(c, ml, dst, res);
      free(res);
      if (!ml) {
        rc = KEEL_ENOMEM;
        goto out;
      }
    }
    if ((rc = pq_vec_push(c, out, ml, ts, a[0].s[i].v))) goto out;
  }
out:
  if (compiled) regfree(&r);
  free(anch);
  free(grp);
  free(m);
  return rc;
}

static int f_label_join(pq_ctx_t *c, const k_pq_node_t *call, pq_vector_t *a, int64_t ts,
                        pq_vector_t *out) {
  const char *dst = str_arg(call, 1), *sep = str_arg(call, 2);
  size_t nsrc = call->u.call.nargs - 3;
  int rc = 0;
  for (size_t i = 0; i < nsrc; i++)
    if (!valid_label_name(str_arg(call, 3 + i)))
      return pq_errf(c, KEEL_EINVAL, "invalid source label name in label_join(): %s",
                     str_arg(call, 3 + i));
  if (!valid_label_name(dst))
    return pq_errf(c, KEEL_EINVAL, "invalid destination label name in label_join(): %s", dst);
  for (size_t i = 0; i < a[0].n; i++) {
    size_t len = 1;
    char *joined;
    const pq_lset_t *ml;
    for (size_t k = 0; k < nsrc; k++) {
      const char *v = pq_lset_get(a[0].s[i].m, str_arg(call, 3 + k));
      len += (v ? strlen(v) : 0) + strlen(sep);
    }
    joined = malloc(len);
    if (!joined) return pq_errf(c, KEEL_ENOMEM, "out of memory");
    joined[0] = '\0';
    for (size_t k = 0; k < nsrc; k++) {
      const char *v = pq_lset_get(a[0].s[i].m, str_arg(call, 3 + k));
      if (k) strcat(joined, sep);
      if (v) strcat(joined, v);
    }
    ml = pq_lset_set(c, a[0].s[i].m, dst, joined);
    free(joined);
    if (!ml) return KEEL_ENOMEM;
    if ((rc = pq_vec_push(c, out, ml, ts, a[0].s[i].v))) return rc;
  }
  return 0;
}

/* ---- the table ------------------------------------------------------ */

#define S K_PQ_T_SCALAR
#define V K_PQ_T_VECTOR
#define M K_PQ_T_MATRIX
#define STR K_PQ_T_STRING

static const k_pq_func_t funcs[] = {
    {"abs", {V}, 1, 0, V, f_abs, NULL, 0},
    {"absent", {V}, 1, 0, V, f_absent, NULL, 0},
    {"absent_over_time", {M}, 1, 0, V, NULL, f_one, 0},
    {"acos", {V}, 1, 0, V, f_acos, NULL, 0},
    {"acosh", {V}, 1, 0, V, f_acosh, NULL, 0},
    {"asin", {V}, 1, 0, V, f_asin, NULL, 0},
    {"asinh", {V}, 1, 0, V, f_asinh, NULL, 0},
    {"atan", {V}, 1, 0, V, f_atan, NULL, 0},
    {"atanh", {V}, 1, 0, V, f_atanh, NULL, 0},
    {"avg_over_time", {M}, 1, 0, V, NULL, f_avg_over_time, 0},
    {"ceil", {V}, 1, 0, V, f_ceil, NULL, 0},
    {"changes", {M}, 1, 0, V, NULL, f_changes, 0},
    {"clamp", {V, S, S}, 3, 0, V, f_clamp, NULL, 0},
    {"clamp_max", {V, S}, 2, 0, V, f_clamp_max, NULL, 0},
    {"clamp_min", {V, S}, 2, 0, V, f_clamp_min, NULL, 0},
    {"cos", {V}, 1, 0, V, f_cos, NULL, 0},
    {"cosh", {V}, 1, 0, V, f_cosh, NULL, 0},
    {"count_over_time", {M}, 1, 0, V, NULL, f_count_over_time, 0},
    {"days_in_month", {V}, 1, 1, V, f_days_in_month, NULL, 0},
    {"day_of_month", {V}, 1, 1, V, f_day_of_month, NULL, 0},
    {"day_of_week", {V}, 1, 1, V, f_day_of_week, NULL, 0},
    {"day_of_year", {V}, 1, 1, V, f_day_of_year, NULL, 0},
    {"deg", {V}, 1, 0, V, f_deg, NULL, 0},
    {"delta", {M}, 1, 0, V, NULL, f_delta, 0},
    {"deriv", {M}, 1, 0, V, NULL, f_deriv, 0},
    {"exp", {V}, 1, 0, V, f_exp, NULL, 0},
    {"floor", {V}, 1, 0, V, f_floor, NULL, 0},
    {"histogram_count", {V}, 1, 0, V, NULL, NULL, 0},
    {"histogram_fraction", {S, S, V}, 3, 0, V, NULL, NULL, 0},
    {"histogram_quantile", {S, V}, 2, 0, V, f_histogram_quantile, NULL, 0},
    {"histogram_sum", {V}, 1, 0, V, NULL, NULL, 0},
    {"holt_winters", {M, S, S}, 3, 0, V, NULL, f_holt_winters, 0},
    {"hour", {V}, 1, 1, V, f_hour, NULL, 0},
    {"idelta", {M}, 1, 0, V, NULL, f_idelta, 0},
    {"increase", {M}, 1, 0, V, NULL, f_increase, 0},
    {"irate", {M}, 1, 0, V, NULL, f_irate, 0},
    {"label_join", {V, STR, STR, STR}, 4, -1, V, f_label_join, NULL, 0},
    {"label_replace", {V, STR, STR, STR, STR}, 5, 0, V, f_label_replace, NULL, 0},
    {"last_over_time", {M}, 1, 0, V, NULL, f_last_over_time, 1},
    {"ln", {V}, 1, 0, V, f_ln, NULL, 0},
    {"log10", {V}, 1, 0, V, f_log10, NULL, 0},
    {"log2", {V}, 1, 0, V, f_log2, NULL, 0},
    {"max_over_time", {M}, 1, 0, V, NULL, f_max_over_time, 0},
    {"min_over_time", {M}, 1, 0, V, NULL, f_min_over_time, 0},
    {"minute", {V}, 1, 1, V, f_minute, NULL, 0},
    {"month", {V}, 1, 1, V, f_month, NULL, 0},
    {"pi", {0}, 0, 0, S, f_pi, NULL, 0},
    {"predict_linear", {M, S}, 2, 0, V, NULL, f_predict_linear, 0},
    {"present_over_time", {M}, 1, 0, V, NULL, f_one, 0},
    {"quantile_over_time", {S, M}, 2, 0, V, NULL, f_quantile_over_time, 0},
    {"rad", {V}, 1, 0, V, f_rad, NULL, 0},
    {"rate", {M}, 1, 0, V, NULL, f_rate, 0},
    {"resets", {M}, 1, 0, V, NULL, f_resets, 0},
    {"round", {V, S}, 2, 1, V, f_round, NULL, 0},
    {"scalar", {V}, 1, 0, S, f_scalar, NULL, 0},
    {"sgn", {V}, 1, 0, V, f_sgn, NULL, 0},
    {"sin", {V}, 1, 0, V, f_sin, NULL, 0},
    {"sinh", {V}, 1, 0, V, f_sinh, NULL, 0},
    {"sort", {V}, 1, 0, V, f_sort, NULL, 0},
    {"sort_desc", {V}, 1, 0, V, f_sort_desc, NULL, 0},
    {"sqrt", {V}, 1, 0, V, f_sqrt, NULL, 0},
    {"stddev_over_time", {M}, 1, 0, V, NULL, f_stddev_over_time, 0},
    {"stdvar_over_time", {M}, 1, 0, V, NULL, f_stdvar_over_time, 0},
    {"sum_over_time", {M}, 1, 0, V, NULL, f_sum_over_time, 0},
    {"tan", {V}, 1, 0, V, f_tan, NULL, 0},
    {"tanh", {V}, 1, 0, V, f_tanh, NULL, 0},
    {"time", {0}, 0, 0, S, f_time, NULL, 0},
    {"timestamp", {V}, 1, 0, V, f_timestamp, NULL, 0},
    {"vector", {S}, 1, 0, V, f_vector, NULL, 0},
    {"year", {V}, 1, 1, V, f_year, NULL, 0},
};

const k_pq_func_t *pq_func_lookup(const char *name, size_t len, int *supported) {
  for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++) {
    if (strlen(funcs[i].name) == len && !memcmp(funcs[i].name, name, len)) {
      /* native-histogram functions: a row for the name, no implementation */
      *supported = funcs[i].vf || funcs[i].mf;
      return &funcs[i];
    }
  }
  *supported = 0;
  return NULL;
}

const char *k_promql_func_name(const k_pq_func_t *f) { return f->name; }
