/* rate.h — rate control of an execution over its targets (docs/runbooks.md
 * `rate`): a sliding window of `concurrency` targets, a stop once more than
 * `max_errors` have failed, and `batches` with pauses between them.
 *
 * Pure arithmetic over counts, no I/O, so the executor asks it what to do
 * next and tests can check every combination.  Targets are started in
 * order; batch b covers targets [end[b-1], end[b]).
 */
#ifndef KEELD_RUNBOOK_RATE_H
#define KEELD_RUNBOOK_RATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"

#define K_RATE_MAX_BATCHES 100 /* as many as a document may give (runbook/doc.c) */

typedef enum {
  K_PAUSE_NONE = 0,  /* go straight on */
  K_PAUSE_FIRST,     /* wait for resume after the first batch only */
  K_PAUSE_EVERY,     /* wait for resume after every batch but the last */
  K_PAUSE_FOR,       /* wait pause_ms after every batch but the last */
} k_pause_t;

typedef struct k_rate_plan {
  size_t ntargets;
  size_t concurrency;             /* >= 1 (when ntargets > 0) */
  size_t max_errors;              /* failures allowed; one more stops the execution */
  size_t nbatches;                /* >= 1 */
  size_t end[K_RATE_MAX_BATCHES]; /* cumulative: end[nbatches-1] == ntargets */
  k_pause_t pause;
  int64_t pause_ms;               /* K_PAUSE_FOR */
} k_rate_plan_t;

/* From a normalized `rate` object (runbook/doc.h) and the number of
 * targets matched at start.  Percentages round up (10% of 5 targets is 1),
 * except max_errors, which rounds down (10% of 5 allows 0).  Batches that
 * would be empty are merged away. */
int k_rate_plan(const json_t *rate, size_t ntargets, k_rate_plan_t *out, keel_err_t *e);

typedef enum {
  K_RATE_START,   /* start target number `started` now */
  K_RATE_WAIT,    /* wait for a running target to finish */
  K_RATE_PAUSE,   /* batch boundary: wait (resume or pause_ms), then set resumed_after */
  K_RATE_STOP,    /* too many errors: start nothing more; finish with what runs */
  K_RATE_DONE,    /* every target finished */
} k_rate_next_t;

typedef struct k_rate_state {
  size_t started, finished, failed; /* targets so far (failed counts in finished) */
  size_t resumed_after;             /* 1 + index of the last batch whose pause
                                       ended (resume or pause_ms); 0: none */
} k_rate_state_t;

/* What to do next. */
k_rate_next_t k_rate_next(const k_rate_plan_t *p, const k_rate_state_t *s);
/* The batch of target i (0-based). */
size_t k_rate_batch_of(const k_rate_plan_t *p, size_t i);

#endif
