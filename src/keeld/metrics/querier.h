/* metrics/querier.h — what the PromQL engine reads: series chosen by label
 * matchers over a time range, and their samples.  The TSDB implements it;
 * PromQL tests implement it over arrays.  Not thread-safe: one querier is
 * used by one thread for one query.
 *
 * Ownership: everything a querier returns (label sets, strings, sample
 * arrays) stays valid until the querier is closed.
 */
#ifndef KEELD_METRICS_QUERIER_H
#define KEELD_METRICS_QUERIER_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "metrics/labels.h"

typedef enum { K_MATCH_EQ = 0, K_MATCH_NE, K_MATCH_RE, K_MATCH_NRE } k_match_type_t;

/* A label matcher.  RE/NRE values are POSIX extended regular expressions
 * fully anchored (Prometheus: "^(?:re)$"); the implementation compiles
 * them.  A matcher on a label a series lacks compares against "". */
typedef struct k_matcher {
  k_match_type_t type;
  const char *name;
  const char *value;
} k_matcher_t;

/* One series in a selection: its labels and its samples with
 * mint <= t <= maxt, in time order (t in ms since the epoch). */
typedef struct k_series {
  k_labels_t labels;
  const int64_t *t;
  const double *v;
  size_t n;
} k_series_t;

typedef struct k_querier k_querier_t;

struct k_querier {
  /* Series matching every matcher (at least one matcher has a non-empty
   * match, as in Prometheus) with their samples in [mint, maxt], sorted by
   * labels.  *out and *n owned by the querier.  KEEL_EINVAL for a bad
   * regex (message names it). */
  int (*select)(k_querier_t *q, const k_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                const k_series_t **out, size_t *n, keel_err_t *e);
  /* Label names, or values of one name, of series matching the matchers
   * (nm may be 0: all) with samples in [mint, maxt]; sorted, unique. */
  int (*label_names)(k_querier_t *q, const k_matcher_t *m, size_t nm, int64_t mint, int64_t maxt,
                     const char *const **out, size_t *n, keel_err_t *e);
  int (*label_values)(k_querier_t *q, const char *name, const k_matcher_t *m, size_t nm,
                      int64_t mint, int64_t maxt, const char *const **out, size_t *n,
                      keel_err_t *e);
  void (*close)(k_querier_t *q);
};

#endif
