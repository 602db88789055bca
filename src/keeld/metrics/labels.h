/* metrics/labels.h — label sets, the identity of a time series.
 *
 * A label set is an array of (name, value) pairs sorted by name, names
 * unique, "__name__" holding the metric name (Prometheus' data model).
 * Strings are borrowed from whoever built the array unless a function says
 * it copies.  Names match [a-zA-Z_][a-zA-Z0-9_]*; values are UTF-8.
 */
#ifndef KEELD_METRICS_LABELS_H
#define KEELD_METRICS_LABELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct k_label {
  const char *name;
  const char *value;
} k_label_t;

typedef struct k_labels {
  const k_label_t *v;
  size_t n;
} k_labels_t;

/* Stale marker: the NaN bit pattern Prometheus writes when a series
 * disappears (value.StaleNaN).  Stored and returned bit-exactly. */
#define K_STALE_NAN_BITS UINT64_C(0x7ff0000000000002)

#endif
