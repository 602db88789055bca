#include "runbook/rate.h"

#include <stdlib.h>
#include <string.h>

#include "keel/time.h"

/* N or "P%" of n: P% rounds up when up, else down. 0 or -1 when malformed. */
static int amount(const json_t *v, size_t n, int up, size_t *out) {
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = (size_t)json_integer_value(v);
    return 0;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end;
    long p = strtol(s, &end, 10);
    if (end == s || strcmp(end, "%") || p < 0 || p > 100) return -1;
    *out = up ? (n * (size_t)p + 99) / 100 : n * (size_t)p / 100;
    return 0;
  }
  return -1;
}

int k_rate_plan(const json_t *rate, size_t n, k_rate_plan_t *out, keel_err_t *e) {
  const json_t *b = json_object_get(rate, "batches"), *c = json_object_get(rate, "concurrency");
  const json_t *m = json_object_get(rate, "max_errors"), *bp = json_object_get(rate, "batch_pause");
  size_t i, v;
  json_t *it;

  memset(out, 0, sizeof *out);
  out->ntargets = n;
  if (!c) out->concurrency = n;
  else if (amount(c, n, 1, &out->concurrency))
    return keel_err_set(e, KEEL_EINVAL, "rate.concurrency: expected N or \"P%%\"");
  if (out->concurrency > n) out->concurrency = n;
  if (out->concurrency == 0 && n) out->concurrency = 1; /* "0%" still makes progress */
  if (m && amount(m, n, 0, &out->max_errors))
    return keel_err_set(e, KEEL_EINVAL, "rate.max_errors: expected N or \"P%%\"");
  /* batches: cumulative ends, strictly increasing, empty ones merged */
  if (json_array_size(b) > K_RATE_MAX_BATCHES)
    return keel_err_set(e, KEEL_EINVAL, "rate.batches: at most %d", K_RATE_MAX_BATCHES);
  json_array_foreach(b, i, it) {
    if (amount(it, n, 1, &v)) return keel_err_set(e, KEEL_EINVAL, "rate.batches[%zu]: expected N or \"P%%\"", i);
    if (v > n) v = n;
    if (v == 0 || (out->nbatches && v <= out->end[out->nbatches - 1])) continue;
    out->end[out->nbatches++] = v;
  }
  if (!out->nbatches || out->end[out->nbatches - 1] != n) {
    if (out->nbatches == K_RATE_MAX_BATCHES) out->nbatches--;
    out->end[out->nbatches++] = n;
  }
  out->pause = K_PAUSE_NONE;
  if (json_is_string(bp)) {
    const char *s = json_string_value(bp);
    if (!strcmp(s, "first")) out->pause = K_PAUSE_FIRST;
    else if (!strcmp(s, "every")) out->pause = K_PAUSE_EVERY;
    else if (strcmp(s, "none")) {
      if (keel_duration_parse(s, &out->pause_ms))
        return keel_err_set(e, KEEL_EINVAL, "rate.batch_pause: expected none, first, every or a duration");
      out->pause = K_PAUSE_FOR;
    }
  }
  return 0;
}

size_t k_rate_batch_of(const k_rate_plan_t *p, size_t i) {
  size_t b = 0;
  while (b + 1 < p->nbatches && i >= p->end[b]) b++;
  return b;
}

k_rate_next_t k_rate_next(const k_rate_plan_t *p, const k_rate_state_t *s) {
  size_t running = s->started - s->finished;
  size_t cur = s->started ? k_rate_batch_of(p, s->started - 1) : 0;
  if (s->failed > p->max_errors) return running ? K_RATE_WAIT : K_RATE_STOP;
  if (s->finished == p->ntargets) return K_RATE_DONE;
  if (s->started == p->ntargets) return K_RATE_WAIT;
  /* A batch boundary: the next batch opens once the current one has wholly
   * finished (batches never overlap), after its pause if there is one. */
  if (s->started && s->started == p->end[cur] && cur + 1 < p->nbatches) {
    int want_pause = p->pause == K_PAUSE_EVERY || p->pause == K_PAUSE_FOR ||
                     (p->pause == K_PAUSE_FIRST && cur == 0);
    if (running) return K_RATE_WAIT;
    if (want_pause && s->resumed_after != cur + 1) return K_RATE_PAUSE;
  }
  return running < p->concurrency ? K_RATE_START : K_RATE_WAIT;
}
