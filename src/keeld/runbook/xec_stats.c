/* xec_stats.c — what keeld's /metrics says of the executions (xec.h),
 * counted from the engine's memory: it holds every unfinished execution,
 * so no query is needed.  Apart from xec.c: it only reads the memory the
 * state machine keeps, and takes no part in it. */
#include <string.h>

#include "runbook/xec_int.h"

void k_xec_stats(const k_xec_t *x, k_xec_stats_t *out) {
  memset(out, 0, sizeof *out);
  for (const k_xexe_t *ex = x ? x->head : NULL; ex; ex = ex->next) {
    switch (ex->st) {
    case X_RUNNING: out->running++; break;
    case X_WAITING: out->waiting_approval++; break;
    case X_PAUSED: out->paused++; break;
    default: break; /* pending until its first tick; finished ones are on their way out */
    }
  }
}
