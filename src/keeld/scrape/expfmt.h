/* scrape/expfmt.h — the Prometheus exposition formats: text 0.0.4 and
 * OpenMetrics 1.0 text.
 *
 * A parse is all or nothing, as a Prometheus scrape is: the whole body is
 * parsed into a k_expfmt_set_t first, and samples are delivered only when
 * every line parsed.  A malformed body is KEEL_EINVAL with the message
 * "line N: what is wrong" (N counts from 1); a limit exceeded is
 * KEEL_ETOOBIG, with the line too, except the body size ("body: ...").
 *
 * What is accepted (docs/metrics.md, "Exposition formats", says it for
 * people):
 *   - text 0.0.4: blank lines, leading blanks, '#' comments; "# HELP name
 *     text" (escapes \\ and \n) and "# TYPE name counter|gauge|histogram|
 *     summary|untyped", at most one of each per name, TYPE before the
 *     name's first sample; samples "name{l="v",...} value [timestamp_ms]"
 *     with blanks or tabs between tokens; the last line may lack its '\n'.
 *   - OpenMetrics 1.0: the ABNF of the spec: single spaces, no blank
 *     lines, every line ends in '\n', only HELP/TYPE/UNIT/EOF comments,
 *     metadata before a family's samples, a family's lines contiguous,
 *     timestamps in seconds (float, rounded to ms), exemplars
 *     ("# {l="v"} value [ts]", parsed and dropped), and "# EOF" last.
 *   - label values: escapes \\, \" and \n; any other backslash pair is
 *     kept as it is (as Prometheus does); values MUST be UTF-8.  A label
 *     with an empty value is the same as no label (Prometheus' model): it
 *     is dropped before the series' identity is taken.
 *   - values: decimal floats, NaN, [+-]Inf, [+-]Infinity (any case);
 *     hexadecimal floats and '_' are refused (as Prometheus does); a finite
 *     literal out of double range is an error.
 *   - histograms: a family's _bucket samples need an "le" label that is a
 *     float; summaries' quantile samples need a "quantile" label.
 *     OpenMetrics counters' samples are name_total and name_created,
 *     info's name_info; _created samples are delivered like any other.
 *   - a series (its full label set) may appear once per body.
 */
#ifndef KEELD_SCRAPE_EXPFMT_H
#define KEELD_SCRAPE_EXPFMT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "metrics/labels.h"

/* A sample's timestamp when the exposition gave none. */
#define K_EXPFMT_NO_TS INT64_MIN

typedef enum {
  K_EXPFMT_TEXT = 0,        /* text/plain; version=0.0.4 */
  K_EXPFMT_OPENMETRICS = 1, /* application/openmetrics-text; version=1.0.0 */
} k_expfmt_kind_t;

/* Defaults of k_expfmt_limits_t (a 0 field means its default). */
#define K_EXPFMT_MAX_BODY ((size_t)10 << 20)
#define K_EXPFMT_MAX_SAMPLES ((size_t)50000)
#define K_EXPFMT_MAX_LABELS ((size_t)64)       /* per sample, __name__ included */
#define K_EXPFMT_MAX_NAME_LEN ((size_t)512)    /* metric and label names, bytes */
#define K_EXPFMT_MAX_VALUE_LEN ((size_t)4096)  /* label values, bytes */

typedef struct k_expfmt_limits {
  size_t max_body;
  size_t max_samples;
  size_t max_labels;
  size_t max_name_len;
  size_t max_value_len;
} k_expfmt_limits_t;

/* The format a Content-Type header names: OpenMetrics for
 * application/openmetrics-text (any version), text 0.0.4 for anything
 * else, a missing header (NULL) included — as Prometheus falls back. */
k_expfmt_kind_t k_expfmt_kind(const char *content_type);

/* One sample.  labels are sorted by name (strcmp), names unique, one of
 * them "__name__"; no value is empty. */
typedef struct k_expfmt_sample {
  const k_label_t *labels;
  size_t n;
  int64_t t_ms; /* K_EXPFMT_NO_TS when the exposition had none */
  double v;
} k_expfmt_sample_t;

/* A list of samples that owns its strings (in an arena of its own).
 * Built by k_expfmt_parse_set and by the scrape engine; not thread-safe,
 * but may be handed from one thread to another whole. */
typedef struct k_expfmt_set {
  k_expfmt_sample_t *v; /* n samples; labels pointers valid once sealed */
  size_t n, cap;
  k_label_t *lab;       /* every sample's labels, back to back */
  size_t nlab, labcap;
  struct k_expfmt_arena *arena; /* strings; NULL until the first one */
  int sealed;
} k_expfmt_set_t;

/* Callback of k_expfmt_parse: labels and strings are valid only during the
 * call.  A non-zero return stops delivery and k_expfmt_parse returns it. */
typedef int (*k_expfmt_fn)(void *ud, const k_label_t *labels, size_t n, int64_t t_ms, double v);

/* Parses text[0..len) (need not be NUL-terminated) as kind with the default
 * limits and, only if all of it is good, calls fn once per sample in the
 * order of the body.  Errors: KEEL_EINVAL / KEEL_ETOOBIG as above,
 * KEEL_ENOMEM; then fn was never called. */
int k_expfmt_parse(const char *text, size_t len, k_expfmt_kind_t kind, k_expfmt_fn fn, void *ud,
                   keel_err_t *e);

/* The same into out (initialised here; on error it is left empty but
 * still needs k_expfmt_set_free).  lim may be NULL (defaults).  out is
 * sealed on success. */
int k_expfmt_parse_set(const char *text, size_t len, k_expfmt_kind_t kind,
                       const k_expfmt_limits_t *lim, k_expfmt_set_t *out, keel_err_t *e);

/* ---- k_expfmt_set_t, for whoever builds sample lists (the scrape engine) */

void k_expfmt_set_init(k_expfmt_set_t *s);
void k_expfmt_set_free(k_expfmt_set_t *s);
/* A copy of p[0..n) in s's arena, NUL-terminated; equal short strings are
 * shared.  NULL on out of memory. */
const char *k_expfmt_set_str(k_expfmt_set_t *s, const char *p, size_t n);
/* Appends a sample.  labels (n of them) MUST already be sorted and their
 * strings MUST live in s's arena (k_expfmt_set_str) or outlive s; the
 * array itself is copied.  MUST NOT be called once s is sealed. */
int k_expfmt_set_add(k_expfmt_set_t *s, const k_label_t *labels, size_t n, int64_t t_ms,
                     double v);
/* Points every sample's labels into lab; after it the set is read-only. */
void k_expfmt_set_seal(k_expfmt_set_t *s);
/* Moves src's arena (its strings) into dst, which must not have one yet,
 * so that dst may keep pointing at src's strings once src is freed. */
void k_expfmt_set_take_arena(k_expfmt_set_t *dst, k_expfmt_set_t *src);

#endif
