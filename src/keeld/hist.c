#include "hist.h"

const double k_hist_bounds[K_HIST_NBUCKETS] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                               0.0025,  0.005,  0.01,    0.025,  0.05,
                                               0.1,     0.5,    1,       10};

void k_hist_observe(k_hist_t *h, double seconds) {
  int i = 0;
  while (i < K_HIST_NBUCKETS && seconds > k_hist_bounds[i]) i++;
  h->counts[i]++;
  h->count++;
  h->sum += seconds;
}
