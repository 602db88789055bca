/* Unit tests for runbook rate control (runbook/rate.h): plans from rate
 * objects, and a simulated execution that checks the sliding window, the
 * error stop, batch order and pauses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runbook/rate.h"

static k_rate_plan_t plan(const char *rate_json, size_t n) {
  json_t *r = json_loads(rate_json, 0, NULL);
  k_rate_plan_t p;
  keel_err_t e = {0};
  if (!r) fail_msg("bad test json %s", rate_json);
  if (k_rate_plan(r, n, &p, &e)) fail_msg("plan %s: %s", rate_json, e.msg);
  json_decref(r);
  return p;
}

static void test_plans(void **state) {
  k_rate_plan_t p;
  (void)state;
  p = plan("{}", 10);
  assert_int_equal(p.concurrency, 10);
  assert_int_equal(p.max_errors, 0);
  assert_int_equal(p.nbatches, 1);
  assert_int_equal(p.end[0], 10);
  p = plan("{\"concurrency\":\"10%\",\"max_errors\":\"10%\"}", 5);
  assert_int_equal(p.concurrency, 1); /* rounds up */
  assert_int_equal(p.max_errors, 0);  /* rounds down */
  p = plan("{\"concurrency\":\"0%\"}", 5);
  assert_int_equal(p.concurrency, 1); /* still makes progress */
  p = plan("{\"concurrency\":50}", 5);
  assert_int_equal(p.concurrency, 5);
  p = plan("{\"batches\":[1,\"50%\",\"100%\"],\"batch_pause\":\"first\"}", 6);
  assert_int_equal(p.nbatches, 3);
  assert_int_equal(p.end[0], 1);
  assert_int_equal(p.end[1], 3);
  assert_int_equal(p.end[2], 6);
  assert_int_equal(p.pause, K_PAUSE_FIRST);
  /* batches that would be empty merge away ("10%" of 3 is 1 again); "100%"
   * is implied */
  p = plan("{\"batches\":[1,\"10%\",2]}", 3);
  assert_int_equal(p.nbatches, 3);
  assert_int_equal(p.end[0], 1);
  assert_int_equal(p.end[1], 2);
  assert_int_equal(p.end[2], 3);
  p = plan("{\"batch_pause\":\"5m\"}", 3);
  assert_int_equal(p.pause, K_PAUSE_FOR);
  assert_int_equal(p.pause_ms, 300000);
  p = plan("{}", 0);
  assert_int_equal(p.nbatches, 1);
  assert_int_equal(p.end[0], 0);
  p = plan("{\"batches\":[1,\"50%\"]}", 6);
  assert_int_equal(k_rate_batch_of(&p, 0), 0);
  assert_int_equal(k_rate_batch_of(&p, 2), 1);
  assert_int_equal(k_rate_batch_of(&p, 5), 2);
}

/* Simulates an execution: each step either starts a target or finishes
 * the oldest running one (failing those in fail[]).  Records the largest
 * window, the order of batches and where it paused. */
typedef struct sim {
  size_t max_running, pauses, started;
  k_rate_next_t end;
  size_t batch_order[64];
} sim_t;

static sim_t simulate(const k_rate_plan_t *p, const int *fail, int auto_resume) {
  k_rate_state_t s = {0, 0, 0, 0};
  sim_t r;
  memset(&r, 0, sizeof r);
  for (int guard = 0; guard < 10000; guard++) {
    k_rate_next_t n = k_rate_next(p, &s);
    if (n == K_RATE_DONE || n == K_RATE_STOP) {
      r.end = n;
      break;
    }
    if (n == K_RATE_START) {
      r.batch_order[s.started] = k_rate_batch_of(p, s.started);
      s.started++;
      if (s.started - s.finished > r.max_running) r.max_running = s.started - s.finished;
    } else if (n == K_RATE_PAUSE) {
      r.pauses++;
      if (!auto_resume) {
        r.end = n;
        break;
      }
      s.resumed_after = k_rate_batch_of(p, s.started - 1) + 1;
    } else { /* WAIT: the oldest running target finishes */
      if (fail[s.finished]) s.failed++;
      s.finished++;
    }
  }
  r.started = s.started;
  return r;
}

static void test_window_never_exceeds_concurrency(void **state) {
  int fail[64] = {0};
  k_rate_plan_t p = plan("{\"concurrency\":2}", 10);
  sim_t r;
  (void)state;
  /* the simulation starts greedily, so the window fills exactly */
  r = simulate(&p, fail, 1);
  assert_int_equal(r.end, K_RATE_DONE);
  assert_int_equal(r.max_running, 2);
  assert_int_equal(r.started, 10);
}

static void test_max_errors_stops_after_the_next_failure(void **state) {
  int fail[64] = {0};
  k_rate_plan_t p = plan("{\"concurrency\":1,\"max_errors\":1}", 6);
  sim_t r;
  (void)state;
  fail[1] = fail[2] = fail[3] = 1; /* three failing hosts */
  r = simulate(&p, fail, 1);
  assert_int_equal(r.end, K_RATE_STOP);
  assert_int_equal(r.started, 3); /* stopped after the second failure */
}

static void test_batches_in_order_with_a_pause(void **state) {
  int fail[64] = {0};
  k_rate_plan_t p = plan("{\"batches\":[1,\"50%\",\"100%\"],\"batch_pause\":\"first\"}", 6);
  sim_t r;
  (void)state;
  r = simulate(&p, fail, 0);
  assert_int_equal(r.end, K_RATE_PAUSE); /* waits for resume after the canary */
  assert_int_equal(r.started, 1);
  r = simulate(&p, fail, 1);
  assert_int_equal(r.end, K_RATE_DONE);
  assert_int_equal(r.pauses, 1); /* "first": only after batch 0 */
  {
    size_t want[6] = {0, 1, 1, 2, 2, 2};
    for (int i = 0; i < 6; i++) assert_int_equal(r.batch_order[i], want[i]);
  }
  p = plan("{\"batches\":[1,\"50%\",\"100%\"],\"batch_pause\":\"every\"}", 6);
  r = simulate(&p, fail, 1);
  assert_int_equal(r.pauses, 2); /* after each batch but the last */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plans),
      cmocka_unit_test(test_window_never_exceeds_concurrency),
      cmocka_unit_test(test_max_errors_stops_after_the_next_failure),
      cmocka_unit_test(test_batches_in_order_with_a_pause),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
