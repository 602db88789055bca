/* hist.h — a fixed-bucket latency histogram in seconds, Prometheus-shaped
 * (cumulative buckets are produced at exposition time).  Not thread-safe:
 * the owner serializes access. */
#ifndef KEELD_HIST_H
#define KEELD_HIST_H

#include <stdint.h>

#define K_HIST_NBUCKETS 14

typedef struct k_hist {
  uint64_t counts[K_HIST_NBUCKETS + 1]; /* last one is +Inf */
  uint64_t count;
  double sum;
} k_hist_t;

/* Upper bounds in seconds: 50us .. 10s. */
extern const double k_hist_bounds[K_HIST_NBUCKETS];

void k_hist_observe(k_hist_t *h, double seconds);

#endif
