/* bench/reaction — from a metric batch that crosses an alert threshold to
 * the remediation runbook's job at the agent, against a real keeld.
 *
 * Starts keeld (the binary next to this one) on a fresh data directory,
 * enrolls simulated agents for real (tests/tools/simagent.h) and applies,
 * through POST /v1/apply:
 *   - an AlertRule `bench_reaction_gauge > 0.5`, interval 1s, for 0s;
 *   - a Runbook with one command step on the host given as a parameter
 *     (targets "id={{ params.host }}"), whose argv carries the trigger and
 *     the alert's fired_at;
 *   - an AutomationRule on alert.firing of that rule, params from the
 *     event ({{ labels.agent_id }}, {{ labels.trigger }},
 *     {{ event.data.fired_at }}), cooldown 0s, max_runs_per_hour 10000:
 *     the guards never hold a trigger back.
 * Every agent keeps a signed long-poll outstanding and answers each job
 * with a result, as keel-agent does.  A trigger: one agent pushes a metric
 * batch (include/keel/metricbatch.h, POST /v1/agent/metrics, signed) with
 * bench_reaction_gauge{trigger="I"} = 1, a new series, so a new alert.
 *   t_ack      the push's 200 arrives (keeld answers once it is durable)
 *   t_eval     the evaluation that saw it: the alert's fired_at (= its
 *              active_since and its alert.firing event's time with for 0s;
 *              docs/alerts.md), keeld's clock, in ms
 *   t_dispatch the runbook's job arrives in that agent's long-poll answer
 * When the job arrives the agent answers it and pushes the gauge back to
 * 0 (the remediation worked), so the alert resolves as it would.
 *
 * Triggers: R a second (default 20), each at a random offset within its
 * second, each on a random agent with no trigger of its own in flight;
 * the first W (default 10) are a warm-up, not counted.  Prints p50/p99/max
 * of total (t_dispatch - t_ack), evaluation wait (t_eval - t_ack) and
 * reaction without the evaluation (t_dispatch - t_eval: the figure of the
 * target, p99 <= 100 ms), where that time goes (automation runs' `at`,
 * jobs' `issued_at`), keeld's RSS and CPU.  Never fails on a time: exits 1
 * only when it could not measure (keeld, enrollment or apply failed, or a
 * trigger was not acknowledged or not dispatched within 10 s), saying why.
 *
 *   bench-reaction [--triggers N] [--agents A] [--rate R] [--warmup W]
 *                  [--incident-per-trigger] [--csv FILE]
 *
 * By default every alert of the rule joins one incident (incidents group
 * by alertname; docs/incidents.md), as a threshold crossed on many hosts
 * would.  --incident-per-trigger gives each alert an incident of its own
 * (label incident_group = the trigger), to tell the incidents engine's
 * share of the time.  --csv writes one line per measured trigger (times in
 * ms from the first trigger's acknowledgement; keeld's clock for
 * eval/judged/issued).
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/crypto.h"
#include "keel/http.h"
#include "keel/json.h"
#include "keel/metricbatch.h"
#include "keel/time.h"
#include "simagent.h"

#define RULE "bench-reaction"
#define METRIC "bench_reaction_gauge"
#define DISPATCH_LIMIT_MS 10000 /* acked, not dispatched by then: cannot measure */
#define PUSH_LIMIT_MS 10000
#define TARGET_P99_MS 100.0
#define MAX_SHOWN 8

enum { X_POLL, X_RES, X_MET };
enum { T_PLANNED, T_PUSHED, T_ACKED, T_DISPATCHED, T_FAILED };

typedef struct trig {
  int agent;                  /* -1 until started */
  int state;                  /* T_* */
  int64_t t_plan_ns, t_send_ns, t_ack_ns, t_disp_ns; /* keel_mono_ns */
  int64_t ack_wall_us, disp_wall_us;                 /* CLOCK_REALTIME */
  int64_t eval_ms, issued_ms, judged_ms;             /* keeld's clock; 0 = unknown */
  int64_t sample_ms;          /* the pushed sample's timestamp */
  int in_flight;              /* others pushed and not dispatched when it started */
  int early;                  /* its job came before the push's answer */
} trig_t;

typedef struct sim {
  ksim_agent_t *a;
  ksim_xfer_t poll, res, met;
  int trig;         /* the trigger it pushed and awaits, -1 none */
  int met_trig;     /* what met carries: the trigger's index */
  int met_resolve;  /* met carries the gauge back to 0 */
  int resolve_next; /* a trigger whose gauge must go back to 0 once met is free, -1 none */
  int64_t poll_retry_ms, res_retry_ms; /* keel_mono_ms; 0 = none */
} sim_t;

typedef struct bench {
  ksim_loop_t loop;
  ksim_counts_t cnt;
  keel_mb_enc_t enc;
  ksim_agent_t *agents; /* sims[i].a == &agents[i] */
  sim_t *sims;
  int nsims;
  trig_t *t;
  int nt, warm, done, failed, inflight;
  unsigned long poll_errs, res_errs, resolve_errs, wrong_host, unknown_job, polls, early;
  char why[MAX_SHOWN][300];
  int nwhy;
} bench_t;

static int64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void note(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(bench_t *b, const char *fmt, ...) {
  va_list ap;
  if (b->nwhy >= MAX_SHOWN) return;
  va_start(ap, fmt);
  vsnprintf(b->why[b->nwhy++], sizeof b->why[0], fmt, ap);
  va_end(ap);
}

static void trig_fail(bench_t *b, int i, const char *what, const char *detail) {
  trig_t *t = &b->t[i];
  if (t->state == T_FAILED || t->state == T_DISPATCHED) return;
  if (t->state == T_PUSHED || t->state == T_ACKED) b->inflight--;
  if (t->agent >= 0 && b->sims[t->agent].trig == i) b->sims[t->agent].trig = -1;
  t->state = T_FAILED;
  b->failed++;
  b->done++;
  note(b, "trigger %d (sim-%d): %s%s", i, t->agent, what, detail ? detail : "");
}

/* ---- the agents' side ------------------------------------------------------------------ */

static void start_poll(bench_t *b, sim_t *s) {
  s->poll_retry_ms = 0;
  if (ksim_poll_body(s->a, &s->poll.body) ||
      ksim_agent_post(&b->loop, &s->poll, s->a, "/v1/agent/poll", NULL, 90000)) {
    b->poll_errs++;
    s->poll_retry_ms = keel_mono_ms() + 100;
  }
}

static void start_result(bench_t *b, sim_t *s) {
  s->res_retry_ms = 0;
  if (s->res.busy || s->a->qn == 0) return;
  if (ksim_result_body(s->a, &s->res.body, 0) ||
      ksim_agent_post(&b->loop, &s->res, s->a, "/v1/agent/results", NULL, 30000)) {
    b->res_errs++;
    s->res_retry_ms = keel_mono_ms() + 100;
  }
}

/* Pushes bench_reaction_gauge{trigger="I"} = value over s->met. */
static int push(bench_t *b, sim_t *s, int i, double value, int64_t ts_ms) {
  char label[16];
  keel_mb_label_t labels[] = {{"__name__", METRIC}, {"trigger", label}};
  keel_err_t e = {0};
  snprintf(label, sizeof label, "%d", i);
  keel_mb_enc_reset(&b->enc);
  keel_buf_reset(&s->met.body);
  if (keel_mb_enc_add1(&b->enc, labels, 2, ts_ms, value, &e) ||
      keel_mb_enc_finish(&b->enc, &s->met.body, &e) ||
      ksim_agent_post(&b->loop, &s->met, s->a, "/v1/agent/metrics", KEEL_MB_CONTENT_TYPE,
                      PUSH_LIMIT_MS))
    return -1;
  s->met_trig = i;
  s->met_resolve = value < 0.5;
  return 0;
}

/* The remediation "worked": the gauge goes back below the threshold. */
static void resolve(bench_t *b, sim_t *s, int i) {
  int64_t now = keel_now_ms(), ts = b->t[i].sample_ms;
  if (s->met.busy) {
    s->resolve_next = i;
    return;
  }
  s->resolve_next = -1;
  if (push(b, s, i, 0, now > ts ? now : ts + 1)) b->resolve_errs++;
}

static void start_trigger(bench_t *b, sim_t *s, int i) {
  trig_t *t = &b->t[i];
  t->agent = s->a->idx;
  t->in_flight = b->inflight;
  t->sample_ms = keel_now_ms();
  t->t_send_ns = keel_mono_ns();
  s->trig = i;
  t->state = T_PUSHED;
  b->inflight++;
  if (push(b, s, i, 1, t->sample_ms)) trig_fail(b, i, "the push could not be sent", NULL);
}

/* A job in s's poll answer: argv [bench-reaction-fix, TRIGGER, FIRED_AT]. */
static void on_job(void *ud, ksim_agent_t *a, const json_t *job) {
  bench_t *b = ud;
  sim_t *s = &b->sims[a->idx];
  const json_t *argv = json_object_get(job, "argv");
  const char *ts = json_string_value(json_array_get(argv, 1)),
             *fired = json_string_value(json_array_get(argv, 2));
  const json_t *issued = json_object_get(job, "issued_at");
  char *end = NULL;
  long i = ts ? strtol(ts, &end, 10) : -1;
  trig_t *t;
  if (!ts || *end || i < 0 || i >= b->nt) {
    b->unknown_job++;
    return;
  }
  t = &b->t[i];
  if (t->state != T_ACKED && t->state != T_PUSHED) {
    b->unknown_job++; /* failed already (too late), or twice */
    return;
  }
  if (t->agent != a->idx) {
    b->wrong_host++;
    trig_fail(b, (int)i, "its job went to another agent", NULL);
    return;
  }
  t->t_disp_ns = s->poll.t_done_ns;
  t->disp_wall_us = wall_us() - (keel_mono_ns() - s->poll.t_done_ns) / 1000;
  if (!fired || keel_time_parse(fired, &t->eval_ms)) t->eval_ms = 0;
  t->issued_ms = json_is_integer(issued) ? (int64_t)json_integer_value(issued) : 0;
  if (t->state == T_PUSHED) {
    /* before the push's answer came back (the evaluation saw the sample
     * before its WAL fsync ended): done when the answer comes */
    t->early = 1;
    b->early++;
  } else {
    t->state = T_DISPATCHED;
    b->inflight--;
    b->done++;
    s->trig = -1;
  }
  resolve(b, s, (int)i);
}

static void on_done(void *ud, ksim_xfer_t *x, CURLcode cc, long st) {
  bench_t *b = ud;
  sim_t *s = x->ud;
  json_t *v = NULL;
  int ok = cc == CURLE_OK && st == 200 && !keel_json_parse(x->in.data, x->in.len, &v, NULL);

  switch (x->kind) {
  case X_POLL:
    if (ok) {
      b->polls++;
      ksim_take_jobs(s->a, json_object_get(v, "jobs"), on_job, b, &b->cnt);
      start_result(b, s);
      start_poll(b, s);
    } else {
      b->poll_errs++;
      s->poll_retry_ms = keel_mono_ms() + 100;
    }
    break;
  case X_RES:
    if (ok && !ksim_acked(s->a, v, NULL)) {
      start_result(b, s);
    } else {
      b->res_errs++;
      s->res_retry_ms = keel_mono_ms() + 100;
    }
    break;
  case X_MET: {
    int i = s->met_trig;
    if (s->met_resolve) {
      if (!ok) b->resolve_errs++;
    } else if (!ok) {
      char d[200];
      snprintf(d, sizeof d, "%s, status %ld: %.120s", curl_easy_strerror(cc), st,
               x->in.data ? x->in.data : "");
      trig_fail(b, i, "the push was not acknowledged: ", d);
    } else if (b->t[i].state == T_PUSHED) {
      b->t[i].state = T_ACKED;
      b->t[i].t_ack_ns = x->t_done_ns;
      b->t[i].ack_wall_us = wall_us() - (keel_mono_ns() - x->t_done_ns) / 1000;
      if (b->t[i].early) {
        b->t[i].state = T_DISPATCHED;
        b->inflight--;
        b->done++;
        s->trig = -1;
      }
    }
    if (s->resolve_next >= 0) resolve(b, s, s->resolve_next);
    break;
  }
  }
  json_decref(v);
}

/* A random agent with no trigger in flight and its push connection free. */
static sim_t *idle_sim(bench_t *b) {
  int start = (int)randombytes_uniform((uint32_t)b->nsims);
  for (int k = 0; k < b->nsims; k++) {
    sim_t *s = &b->sims[(start + k) % b->nsims];
    if (s->trig < 0 && !s->met.busy && s->resolve_next < 0) return s;
  }
  return NULL;
}

static void retries(bench_t *b) {
  int64_t now = keel_mono_ms();
  for (int k = 0; k < b->nsims; k++) {
    sim_t *s = &b->sims[k];
    if (s->poll_retry_ms && now >= s->poll_retry_ms && !s->poll.busy) start_poll(b, s);
    if (s->res_retry_ms && now >= s->res_retry_ms && !s->res.busy) start_result(b, s);
  }
}

/* Triggers acked and not dispatched within DISPATCH_LIMIT_MS fail. */
static void expire(bench_t *b) {
  int64_t now = keel_mono_ns();
  for (int i = 0; i < b->nt; i++)
    if (b->t[i].state == T_ACKED && now - b->t[i].t_ack_ns > (int64_t)DISPATCH_LIMIT_MS * 1000000)
      trig_fail(b, i, "acknowledged, but no job arrived within 10 s", NULL);
}

static int quiet(const bench_t *b) {
  for (int k = 0; k < b->nsims; k++) {
    const sim_t *s = &b->sims[k];
    if (!s->poll.busy || s->res.busy || s->a->qn || s->met.busy || s->resolve_next >= 0) return 0;
  }
  return 1;
}

static void run_triggers(bench_t *b) {
  int next = 0;
  int64_t last_expire = 0;
  while (b->done < b->nt) {
    int64_t now = keel_mono_ns();
    int wait = 5;
    while (next < b->nt && b->t[next].t_plan_ns <= now) {
      sim_t *s = idle_sim(b);
      if (!s) break; /* every agent busy: the trigger waits (its lateness is reported) */
      start_trigger(b, s, next++);
    }
    if (next < b->nt && b->t[next].t_plan_ns > now) {
      int64_t ms = (b->t[next].t_plan_ns - now) / 1000000;
      if (ms < wait) wait = (int)ms;
    }
    ksim_loop_step(&b->loop, wait);
    retries(b);
    if (keel_mono_ms() - last_expire >= 100) {
      last_expire = keel_mono_ms();
      expire(b);
    }
  }
}

/* ---- setting keeld up ------------------------------------------------------------------ */

static int apply_all(const ksim_keeld_t *k, int incident_per_trigger) {
  static const char alert[] = "kind: AlertRule\n"
                              "name: " RULE "\n"
                              "team: bench\n"
                              "description: bench/reaction's threshold\n"
                              "expr: " METRIC " > 0.5\n"
                              "interval: 1s\n"
                              "for: 0s\n"
                              "severity: warning\n";
  static const char alert_own[] = "labels: {incident_group: \"{{ $labels.trigger }}\"}\n";
  char doc[sizeof alert + sizeof alert_own];
  static const char runbook[] =
      "kind: Runbook\n"
      "name: bench-reaction-fix\n"
      "description: bench/reaction's remediation, on the host the alert is about\n"
      "owner: {team: bench}\n"
      "parameters:\n"
      "  - {name: host, type: string, required: true, pattern: \"^agt_[a-z0-9]+$\"}\n"
      "  - {name: trigger, type: string, required: true, pattern: \"^[0-9]+$\"}\n"
      "  - {name: fired_at, type: string, required: true}\n"
      "targets: \"id={{ params.host }}\"\n"
      "steps:\n"
      "  - name: fix\n"
      "    command: {argv: [bench-reaction-fix, \"{{ params.trigger }}\", \"{{ params.fired_at "
      "}}\"]}\n"
      "    timeout: 30s\n";
  static const char automation[] = "kind: AutomationRule\n"
                                   "name: " RULE "\n"
                                   "team: bench\n"
                                   "on: {type: alert.firing, match: \"alertname=" RULE "\"}\n"
                                   "run:\n"
                                   "  runbook: bench-reaction-fix\n"
                                   "  params:\n"
                                   "    host: \"{{ labels.agent_id }}\"\n"
                                   "    trigger: \"{{ labels.trigger }}\"\n"
                                   "    fired_at: \"{{ event.data.fired_at }}\"\n"
                                   "cooldown: 0s\n"
                                   "max_runs_per_hour: 10000\n";
  snprintf(doc, sizeof doc, "%s%s", alert, incident_per_trigger ? alert_own : "");
  return ksim_apply(k->url, k->admin, "alert rule", doc) ||
                 ksim_apply(k->url, k->admin, "runbook", runbook) ||
                 ksim_apply(k->url, k->admin, "automation rule", automation)
             ? -1
             : 0;
}

/* The automation runs of the rule: when each trigger's event was judged
 * (`at`), and what the runs that did not start said.  Best effort: the
 * breakdown is left out when it cannot be read. */
static void read_runs(bench_t *b, const ksim_keeld_t *k, int show_refusals) {
  keel_http_t h;
  keel_buf_t resp, path;
  keel_err_t e = {0};
  char cursor[128] = "";
  int shown = 0;
  if (keel_http_init(&h, k->url, k->admin, 10000, &e)) return;
  keel_buf_init(&resp, 8 << 20);
  keel_buf_init(&path, 1024);
  for (int page = 0; page < 100; page++) {
    json_t *v = NULL, *it;
    const char *nc;
    size_t j;
    int st = 0;
    keel_buf_reset(&path);
    keel_buf_printf(&path, "/v1/automation/runs?rule=" RULE "&limit=1000%s%s",
                    cursor[0] ? "&cursor=" : "", cursor);
    if (keel_http_request(&h, "GET", path.data, NULL, 0, &st, &resp, &e) || st != 200 ||
        keel_json_parse(resp.data, resp.len, &v, NULL))
      break;
    json_array_foreach(json_object_get(v, "items"), j, it) {
      const char *tr = keel_json_str(json_object_get(it, "params"), "trigger");
      const char *out = keel_json_str(it, "outcome"), *at = keel_json_str(it, "at");
      long i = tr ? strtol(tr, NULL, 10) : -1;
      int64_t ms = 0;
      if (out && strcmp(out, "triggered") && show_refusals && shown++ < MAX_SHOWN)
        fprintf(stderr, "  automation run for %s %s: %s %s: %s\n", tr ? "trigger" : "alert",
                tr ? tr : keel_json_str(json_object_get(it, "event"), "subject"), out,
                keel_json_str(it, "guard") ? keel_json_str(it, "guard") : "",
                keel_json_str(it, "reason") ? keel_json_str(it, "reason") : "");
      if (i >= 0 && i < b->nt && at && !keel_time_parse(at, &ms)) b->t[i].judged_ms = ms;
    }
    nc = keel_json_str(v, "next_cursor");
    snprintf(cursor, sizeof cursor, "%s", nc ? nc : "");
    json_decref(v);
    if (!nc) break;
  }
  keel_buf_free(&resp);
  keel_buf_free(&path);
  keel_http_free(&h);
}

/* ---- figures --------------------------------------------------------------------------- */

typedef struct series {
  double *v;
  int n;
} series_t;

static void add(series_t *s, double x) { s->v[s->n++] = x; }

static void show(const char *what, series_t *s) {
  double sum = 0;
  if (!s->n) {
    printf("  %-46s no figures\n", what);
    return;
  }
  qsort(s->v, (size_t)s->n, sizeof *s->v, ksim_cmp_double);
  for (int i = 0; i < s->n; i++) sum += s->v[i];
  printf("  %-46s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  min %7.1f ms  mean %7.1f ms\n", what,
         ksim_pct(s->v, s->n, 50), ksim_pct(s->v, s->n, 99), s->v[s->n - 1], s->v[0],
         sum / s->n);
}

/* One line per measured trigger, for looking at how the times move. */
static void write_csv(const bench_t *b, const char *path) {
  FILE *f = fopen(path, "w");
  int64_t base = 0;
  if (!f) {
    fprintf(stderr, "bench-reaction: %s: cannot write\n", path);
    return;
  }
  fprintf(f, "trigger,agent,in_flight,ack_ms,eval_ms,judged_ms,issued_ms,dispatch_ms\n");
  for (int i = b->warm; i < b->nt; i++) {
    const trig_t *t = &b->t[i];
    if (t->state != T_DISPATCHED) continue;
    if (!base) base = t->ack_wall_us / 1000;
    fprintf(f, "%d,%d,%d,%.3f,%lld,%lld,%lld,%.3f\n", i, t->agent, t->in_flight,
            (double)t->ack_wall_us / 1e3 - (double)base, (long long)(t->eval_ms - base),
            (long long)(t->judged_ms ? t->judged_ms - base : -1),
            (long long)(t->issued_ms ? t->issued_ms - base : -1),
            (double)t->disp_wall_us / 1e3 - (double)base);
  }
  fclose(f);
}

static int report(bench_t *b, const ksim_keeld_t *k, double span_s, double cpu_s, double self_s,
                  const ksim_kmetrics_t *m0, const ksim_kmetrics_t *m1) {
  int n = b->nt - b->warm, rc = 0, maxf = 0, nevals = 0, maxin = 0;
  double sumin = 0, late_max = 0, rate = 0;
  int64_t t_first = 0, t_last = 0;
  series_t tot = {0}, wait = {0}, react = {0}, pushs = {0}, j1 = {0}, j2 = {0}, j3 = {0};
  series_t *all[] = {&tot, &wait, &react, &pushs, &j1, &j2, &j3};
  double p99 = -1;
  long rss = ksim_keeld_rss_kb(k);

  for (size_t q = 0; q < sizeof all / sizeof all[0]; q++)
    if (!(all[q]->v = calloc((size_t)n + 1, sizeof(double)))) {
      fprintf(stderr, "bench-reaction: cannot measure: out of memory\n");
      rc = -1;
      goto out;
    }
  for (int i = b->warm; i < b->nt; i++) {
    const trig_t *t = &b->t[i];
    double late;
    if (t->state != T_DISPATCHED) continue;
    late = (double)(t->t_send_ns - t->t_plan_ns) / 1e6;
    if (!t_first || t->t_send_ns < t_first) t_first = t->t_send_ns;
    if (t->t_send_ns > t_last) t_last = t->t_send_ns;
    if (late > late_max) late_max = late;
    sumin += t->in_flight;
    if (t->in_flight > maxin) maxin = t->in_flight;
    add(&pushs, (double)(t->t_ack_ns - t->t_send_ns) / 1e6);
    add(&tot, (double)(t->t_disp_ns - t->t_ack_ns) / 1e6);
    if (!t->eval_ms) continue;
    add(&wait, (double)t->eval_ms - (double)t->ack_wall_us / 1e3);
    add(&react, (double)t->disp_wall_us / 1e3 - (double)t->eval_ms);
    if (t->judged_ms) add(&j1, (double)(t->judged_ms - t->eval_ms));
    if (t->judged_ms && t->issued_ms) add(&j2, (double)(t->issued_ms - t->judged_ms));
    if (t->issued_ms) add(&j3, (double)t->disp_wall_us / 1e3 - (double)t->issued_ms);
  }
  /* triggers one evaluation fired together (measured ones sharing a fired_at) */
  for (int i = b->warm; i < b->nt; i++) {
    int same = 0, first = 1;
    if (b->t[i].state != T_DISPATCHED || !b->t[i].eval_ms) continue;
    for (int j = b->warm; j < b->nt; j++) {
      if (b->t[j].state != T_DISPATCHED || b->t[j].eval_ms != b->t[i].eval_ms) continue;
      if (j < i) first = 0;
      same++;
    }
    nevals += first;
    if (same > maxf) maxf = same;
  }

  if (t_last > t_first) rate = (tot.n - 1) / ((double)(t_last - t_first) / 1e9);
  printf("  measured %d of %d triggers, started over %.1f s; concurrency: %.1f triggers/s at "
         "random offsets within each second over %d agents (one trigger per agent at a time), in "
         "flight (pushed, not yet dispatched) when one started: mean %.1f, max %d; %d "
         "evaluations fired them, up to %d in one; a trigger started at most %.1f ms after its "
         "planned time\n",
         tot.n, n, (double)(t_last - t_first) / 1e9, rate, b->nsims,
         tot.n ? sumin / tot.n : 0, maxin, nevals, maxf, late_max);
  show("push sent -> acknowledged (durable)", &pushs);
  show("total: acknowledged -> job at the agent", &tot);
  show("evaluation wait: acknowledged -> evaluation", &wait);
  show("reaction: evaluation -> job at the agent", &react);
  printf("  where the reaction goes (keeld's clock, ms resolution):\n");
  show("  evaluation -> automation judged the event", &j1);
  show("  judged -> job issued (execution's first run)", &j2);
  show("  issued -> job at the agent (commit, fsync, poll)", &j3);
  if (react.n) p99 = ksim_pct(react.v, react.n, 99);
  printf("  target: reaction p99 <= %.0f ms (evaluation interval excluded): %s (%.1f ms)\n",
         TARGET_P99_MS, p99 < 0 ? "no figure" : p99 <= TARGET_P99_MS ? "met" : "NOT met", p99);
  printf("  keeld: VmRSS %ld kB at the end; CPU %.2f s over the %.1f s the triggers ran, warm-up "
         "included (%.0f%% of one core); bench itself CPU %.2f s\n",
         rss, cpu_s, span_s, span_s > 0 ? cpu_s / span_s * 100 : 0, self_s);
  {
    double c = m1->commits - m0->commits, y = m1->syncs - m0->syncs;
    printf("  keeld store over the triggers: %.0f commits (mean %.2f ms), %.0f fsyncs (mean %.2f "
           "ms), %.0f audit records\n",
           c, c > 0 ? (m1->commit_s - m0->commit_s) / c * 1e3 : 0, y,
           y > 0 ? (m1->sync_s - m0->sync_s) / y * 1e3 : 0, m1->audit - m0->audit);
  }
  printf("  errors: failed triggers %d, poll %lu, result %lu, gauge reset %lu, job signature %lu, "
         "bad jobs %lu, redelivered %lu, queue overflow %lu, jobs of no trigger %lu, on the wrong "
         "agent %lu; %lu polls answered, %lu new connections, %lu jobs came before their push's "
         "answer\n",
         b->failed, b->poll_errs, b->res_errs, b->resolve_errs, b->cnt.sig_fail, b->cnt.bad_job,
         b->cnt.redelivered, b->cnt.qfull, b->unknown_job, b->wrong_host, b->polls,
         b->loop.new_conns, b->early);
  if (react.n)
    printf("  summary: triggers=%d agents=%d rate=%.0f/s total_p50=%.1fms total_p99=%.1fms "
           "eval_wait_p50=%.1fms eval_wait_p99=%.1fms reaction_p50=%.1fms reaction_p99=%.1fms "
           "reaction_max=%.1fms keeld_rss=%ldkB keeld_cpu=%.0f%% failed=%d\n",
           tot.n, b->nsims, rate, ksim_pct(tot.v, tot.n, 50),
           ksim_pct(tot.v, tot.n, 99), ksim_pct(wait.v, wait.n, 50), ksim_pct(wait.v, wait.n, 99),
           ksim_pct(react.v, react.n, 50), p99, react.v[react.n - 1], rss,
           span_s > 0 ? cpu_s / span_s * 100 : 0, b->failed);
  if (react.n < n) rc = -1;
  if (tot.n > react.n)
    fprintf(stderr, "bench-reaction: cannot measure: %d jobs carried no evaluation time\n",
            tot.n - react.n);
out:
  for (size_t q = 0; q < sizeof all / sizeof all[0]; q++) free(all[q]->v);
  return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  int ntrig = 1000, nagents = 100, warm = 10, rc = 1, started = 0, own = 0;
  const char *csv = NULL;
  double rate = 20;
  bench_t b = {0};
  ksim_keeld_t k;
  ksim_kmetrics_t m0, m1;
  char token[256] = "";
  char *extra[] = {"--heartbeat", "30s", "--log-level", "warn", NULL};
  double cpu0, self0, span;
  int64_t t0, t1;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--triggers") && i + 1 < argc) ntrig = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--agents") && i + 1 < argc) nagents = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atof(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warm = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
    else if (!strcmp(argv[i], "--incident-per-trigger")) own = 1;
    else {
      fprintf(stderr, "usage: bench-reaction [--triggers N] [--agents A] [--rate R] [--warmup W] "
                      "[--incident-per-trigger] [--csv FILE]\n");
      return 2;
    }
  }
  if (ntrig < 1 || ntrig > 9000 || nagents < 1 || nagents > 5000 || rate <= 0 || rate > 1000 ||
      warm < 0 || warm > 1000) {
    fprintf(stderr, "bench-reaction: 1 <= --triggers <= 9000 (with the warm-up under the rule's "
                    "10000 runs an hour), 1 <= --agents <= 5000, 0 < --rate <= 1000, 0 <= --warmup "
                    "<= 1000\n");
    return 2;
  }
  if (ksim_init("bench-reaction")) return 1;
  printf("bench/reaction (keeld next to this binary, heartbeat 30 s): alert rule `" METRIC
         " > 0.5` (interval 1s, for 0s) -> automation rule on alert.firing -> runbook, one "
         "command step on the alert's host\n");
  printf("  %d triggers (+%d warm-up) at %.0f/s, %d agents; %s\n", ntrig, warm, rate, nagents,
         own ? "each alert an incident of its own (--incident-per-trigger)"
             : "every alert joins one incident (grouped by alertname, the default)");
  fflush(stdout);

  b.nt = ntrig + warm;
  b.warm = warm;
  b.nsims = nagents;
  keel_mb_enc_init(&b.enc, 0);
  if (!(b.sims = calloc((size_t)nagents, sizeof *b.sims)) ||
      !(b.agents = calloc((size_t)nagents, sizeof *b.agents)) ||
      !(b.t = calloc((size_t)b.nt, sizeof *b.t))) {
    fprintf(stderr, "bench-reaction: cannot measure: out of memory\n");
    goto out;
  }
  if (ksim_keeld_start(&k, "reaction", extra)) {
    fprintf(stderr, "bench-reaction: cannot measure: keeld did not start\n");
    goto out;
  }
  started = 1;
  /* three connections per agent (poll, results, metrics): none may be closed */
  if (ksim_loop_init(&b.loop, k.url, 3L * nagents + 16, on_done, &b)) {
    fprintf(stderr, "bench-reaction: cannot measure: no curl multi handle or epoll\n");
    goto out;
  }
  for (int i = 0; i < nagents; i++) {
    sim_t *s = &b.sims[i];
    s->a = &b.agents[i];
    s->trig = s->resolve_next = -1;
    if (ksim_xfer_init(&s->poll, X_POLL, s) || ksim_xfer_init(&s->res, X_RES, s) ||
        ksim_xfer_init(&s->met, X_MET, s)) {
      fprintf(stderr, "bench-reaction: cannot measure: no curl handle\n");
      goto out;
    }
  }
  if (ksim_enroll_token(k.url, k.admin, "{\"bench\":\"reaction\"}", nagents, token,
                        sizeof token)) {
    fprintf(stderr, "bench-reaction: cannot measure: no enrollment token\n");
    goto out;
  }
  {
    int bad = ksim_enroll(k.url, token, b.agents, nagents, "sim-", NULL, 64);
    sodium_memzero(token, sizeof token);
    if (bad) {
      fprintf(stderr, "bench-reaction: cannot measure: %d of %d enrollments failed\n", bad,
              nagents);
      goto out;
    }
  }
  if (apply_all(&k, own)) {
    fprintf(stderr, "bench-reaction: cannot measure: the documents were refused\n");
    goto out;
  }
  for (int i = 0; i < nagents; i++) start_poll(&b, &b.sims[i]);
  {
    int64_t end = keel_mono_ms() + 30000;
    /* every poll reached keeld and is held */
    while (!quiet(&b) || keel_mono_ns() - b.loop.last_done_ns < 200000000) {
      if (keel_mono_ms() > end) {
        fprintf(stderr, "bench-reaction: cannot measure: the agents' polls did not settle in 30 s "
                        "(%lu poll errors)\n",
                b.poll_errs);
        goto out;
      }
      ksim_loop_step(&b.loop, 10);
      retries(&b);
    }
  }
  /* the plan: rate triggers in each second, each at a random offset in it */
  t0 = keel_mono_ns() + 200000000; /* the plan starts then */
  {
    int64_t *plan = calloc((size_t)b.nt, sizeof *plan);
    if (!plan) {
      fprintf(stderr, "bench-reaction: cannot measure: out of memory\n");
      goto out;
    }
    for (int i = 0; i < b.nt; i++)
      plan[i] = t0 + (int64_t)((double)(int64_t)(i / rate) * 1e9) +
                (int64_t)randombytes_uniform(1000000) * 1000;
    qsort(plan, (size_t)b.nt, sizeof *plan, ksim_cmp_i64); /* in time order */
    for (int i = 0; i < b.nt; i++) {
      b.t[i].agent = -1;
      b.t[i].t_plan_ns = plan[i];
    }
    free(plan);
  }
  ksim_keeld_metrics(k.url, &m0);
  cpu0 = ksim_keeld_cpu_s(&k);
  self0 = ksim_self_cpu_s();
  t0 = keel_mono_ns();
  run_triggers(&b);
  t1 = keel_mono_ns();
  span = (double)(t1 - t0) / 1e9;
  {
    double cpu = ksim_keeld_cpu_s(&k) - cpu0, self = ksim_self_cpu_s() - self0;
    int64_t end = keel_mono_ms() + 10000;
    ksim_keeld_metrics(k.url, &m1);
    while (keel_mono_ms() < end && !quiet(&b)) {
      ksim_loop_step(&b.loop, 10);
      retries(&b);
    }
    read_runs(&b, &k, b.failed > 0);
    rc = report(&b, &k, span, cpu, self, &m0, &m1) ? 1 : 0;
    if (csv) write_csv(&b, csv);
  }
  if (b.failed) {
    fprintf(stderr, "bench-reaction: cannot measure %d trigger(s):\n", b.failed);
    for (int i = 0; i < b.nwhy; i++) fprintf(stderr, "  %s\n", b.why[i]);
    rc = 1;
  }
out:
  if (b.sims) {
    for (int i = 0; i < nagents; i++) {
      ksim_xfer_free(&b.loop, &b.sims[i].poll);
      ksim_xfer_free(&b.loop, &b.sims[i].res);
      ksim_xfer_free(&b.loop, &b.sims[i].met);
      if (b.agents) sodium_memzero(b.agents[i].sk, sizeof b.agents[i].sk);
    }
  }
  ksim_loop_free(&b.loop);
  if (started) ksim_keeld_stop(&k);
  keel_mb_enc_free(&b.enc);
  free(b.sims);
  free(b.agents);
  free(b.t);
  ksim_cleanup();
  return rc;
}
