/* bench/fanout — command fan-out latency against a real keeld.
 *
 * Starts keeld (the binary next to this one) on a fresh data directory,
 * enrolls N simulated agents for real (Ed25519 keys, enrollment token;
 * tests/tools/simagent.h), and runs them all in one thread on one curl
 * multi handle: each agent
 * keeps a signed long-poll outstanding and answers every job at once with
 * a signed result over its own second keep-alive connection, as
 * keel-agent does (docs/agent-protocol.md).  A round is
 * POST /v1/commands (target bench=fanout, argv ["true"]) until the N-th
 * result of that command is acknowledged (acks mean durably stored).
 *
 * Then runbook executions (docs/runbooks.md) on the same agents: two
 * runbooks of two command steps targeting every agent, one with rate
 * concurrency 100%, one with 10%.  A runbook round is POST /v1/executions
 * until a GET /v1/executions/ID (every ~20 ms, from the same loop, so the
 * agents are never held up) sees a final state; the execution must end
 * succeeded with every target succeeded.
 *
 * Prints p50/p99/max/mean round time per N, jobs/s, keeld's RSS and CPU,
 * and every error seen; never fails on a time.
 *
 *   bench-fanout                          N=100: 30 command rounds, 10 runbook rounds per
 *                                         concurrency; N=1000: 20 and 5
 *   bench-fanout --agents N --rounds R    one configuration (5 runbook rounds unless given)
 *   --runbook-rounds R                    runbook rounds per concurrency (0: none)
 *   --no-commands                         runbook rounds only
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "keel/buf.h"
#include "keel/crypto.h"
#include "keel/http.h"
#include "keel/json.h"
#include "keel/time.h"
#include "simagent.h"

#define ROUND_TIMEOUT_MS 30000
#define WARMUP_ROUNDS 2
#define IDLE_MS 50          /* no completions for this long: polls are re-established */
#define MAX_ROUNDS 1000
#define ENROLL_PARALLEL 64
#define MAX_ERR_SHOWN 12

#define RB_ROUND_TIMEOUT_MS 60000
#define RB_WARMUP_ROUNDS 1
#define RB_POLL_MS 20       /* GET /v1/executions/ID this often while a round runs */
#define RB_STEPS 2          /* command steps in each bench runbook */

enum { X_ENROLL, X_POLL, X_RESULT, X_ADMIN, X_XSTART, X_XGET, X_XCANCEL, X_NKINDS };
static const char *const kind_name[] = {"enroll", "poll", "result", "command",
                                        "execution start", "execution status",
                                        "execution cancel"};

/* One transfer (tests/tools/simagent.h): kind is X_*, ud the sim (NULL
 * for the admin's transfers). */
typedef ksim_xfer_t xfer_t;

typedef struct sim {
  ksim_agent_t *a; /* its queue: a->q[0]'s result is in flight when res.busy */
  xfer_t poll, res;
  int64_t poll_retry_ms, res_retry_ms; /* mono; 0 = none pending */
  int poll_backoff, res_backoff;
} sim_t;

typedef struct bench {
  ksim_loop_t loop;
  int retries;       /* agents with a retry scheduled */
  char url[256], admin[256];
  int n;
  ksim_agent_t *agents; /* sims[i].a == &agents[i] */
  sim_t *sims;
  xfer_t cmd;
  xfer_t xrb, xget; /* POST /v1/executions (and its cancel); GET /v1/executions/ID */
  /* counters */
  unsigned long curl_errs[X_NKINDS], http_errs[X_NKINDS], polls, results, empty_polls;
  ksim_counts_t cnt;
  int shown;
  /* the round in progress */
  int round_on, acks, runs_expected, cmd_status;
  char round_cmd[40];
  char past[MAX_ROUNDS + WARMUP_ROUNDS + 8][40];
  int npast;
  int64_t t0_ns, t_end_ns;
  /* the runbook round in progress: what the last GET said */
  char xid[40], xstate[24], xreason[200];
  long xsucceeded, xtargets;
  int64_t xcreated_ms, xended_ms; /* keeld's own times, wall ms; 0 = unknown */
  int64_t xstarted_ns;            /* when the POST's answer arrived */
  unsigned long xgets, bad_final; /* bad_final: ended other than succeeded on all N */
  double xget_ms;                 /* the GETs' time in all */
} bench_t;

/* ---- small helpers ------------------------------------------------------------------- */

static void note_err(bench_t *b, const char *what, const xfer_t *x, long status, const char *msg) {
  char who[80] = "";
  size_t n = strlen(msg);
  const sim_t *s = x->ud;
  if (b->shown++ >= MAX_ERR_SHOWN) return;
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) n--;
  if (s) snprintf(who, sizeof who, " of sim-%d (%s)", s->a->idx, s->a->id[0] ? s->a->id : "-");
  fprintf(stderr, "  error: %s %s%s: status %ld: %.*s\n", kind_name[x->kind], what, who, status,
          (int)(n > 300 ? 300 : n), msg);
}

/* ---- the agents' side ---------------------------------------------------------------- */

static void start_poll(bench_t *b, sim_t *s) {
  xfer_t *x = &s->poll;
  if (s->poll_retry_ms) {
    s->poll_retry_ms = 0;
    b->retries--;
  }
  /* Runs answered but not yet acked go in "running", or keeld hands the
   * still-pending job back at once (a job stays pending until its result
   * is stored). */
  ksim_poll_body(s->a, &x->body);
  x->kind = X_POLL;
  /* keeld holds a poll up to the heartbeat (30 s): allow well over that */
  if (ksim_agent_post(&b->loop, x, s->a, "/v1/agent/poll", NULL, 90000)) {
    b->curl_errs[X_POLL]++;
    s->poll_retry_ms = keel_mono_ms() + 1000;
    b->retries++;
  }
}

static void start_result(bench_t *b, sim_t *s) {
  xfer_t *x = &s->res;
  if (s->res_retry_ms) {
    s->res_retry_ms = 0;
    b->retries--;
  }
  if (x->busy || s->a->qn == 0) return;
  ksim_result_body(s->a, &x->body, 0);
  x->kind = X_RESULT;
  if (ksim_agent_post(&b->loop, x, s->a, "/v1/agent/results", NULL, 30000)) {
    b->curl_errs[X_RESULT]++;
    s->res_retry_ms = keel_mono_ms() + 1000;
    b->retries++;
  }
}

static int past_has(const bench_t *b, const char *cmd) {
  for (int i = 0; i < b->npast; i++)
    if (!strcmp(b->past[i], cmd)) return 1;
  return 0;
}

static void on_ack(bench_t *b, const char *cmd) {
  b->results++;
  if (!b->round_on || past_has(b, cmd)) return;
  if (!b->round_cmd[0]) snprintf(b->round_cmd, sizeof b->round_cmd, "%s", cmd);
  if (strcmp(b->round_cmd, cmd)) return;
  if (++b->acks == b->n) b->t_end_ns = keel_mono_ns();
}

static int xstate_final(const char *s) {
  return s && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled") ||
               !strcmp(s, "timed_out"));
}

static int64_t time_or_0(const json_t *v, const char *key) {
  const char *s = keel_json_str(v, key);
  int64_t ms = 0;
  return s && !keel_time_parse(s, &ms) ? ms : 0;
}

/* An answer of GET /v1/executions/ID?targets=false.  The round ends at the
 * first answer that says final: that is when a client could know. */
static void on_xstatus(bench_t *b, const json_t *v) {
  const json_t *sum = json_object_get(v, "summary");
  const char *state = keel_json_str(v, "state"), *reason = keel_json_str(v, "reason");
  snprintf(b->xstate, sizeof b->xstate, "%s", state ? state : "?");
  snprintf(b->xreason, sizeof b->xreason, "%s", reason ? reason : "");
  b->xsucceeded = json_is_integer(json_object_get(sum, "succeeded"))
                      ? (long)json_integer_value(json_object_get(sum, "succeeded"))
                      : -1;
  b->xtargets = json_is_integer(json_object_get(sum, "targets"))
                    ? (long)json_integer_value(json_object_get(sum, "targets"))
                    : -1;
  if (!xstate_final(state) || b->t_end_ns) return;
  b->t_end_ns = keel_mono_ns();
  b->xcreated_ms = time_or_0(v, "created_at");
  b->xended_ms = time_or_0(v, "ended_at");
}

static int backoff_ms(int *n) {
  int ms = 500 << (*n < 6 ? *n : 6);
  if (ms > 30000) ms = 30000;
  (*n)++;
  return (int)randombytes_uniform((uint32_t)ms) + 1;
}

/* ---- completions ----------------------------------------------------------------------- */

static void on_done(void *ud, xfer_t *x, CURLcode cc, long st) {
  bench_t *b = ud;
  sim_t *s = x->ud;
  json_t *v = NULL;
  int ok;

  if (cc != CURLE_OK) {
    b->curl_errs[x->kind]++;
    note_err(b, "transport", x, st, curl_easy_strerror(cc));
  }
  ok = cc == CURLE_OK && (st == 200 || st == 201) &&
       keel_json_parse(x->in.data, x->in.len, &v, NULL) == 0;
  if (cc == CURLE_OK && !ok) {
    b->http_errs[x->kind]++;
    note_err(b, "answer", x, st, x->in.data);
  }
  switch (x->kind) {
  case X_ENROLL: /* ksim_enroll enrolls the agents, on a loop of its own */
    break;
  case X_POLL:
    if (ok) {
      const json_t *jobs = json_object_get(v, "jobs");
      s->poll_backoff = 0;
      b->polls++;
      if (json_array_size(jobs) == 0) b->empty_polls++;
      ksim_take_jobs(s->a, jobs, NULL, NULL, &b->cnt);
      start_result(b, s);
      start_poll(b, s);
    } else {
      s->poll_retry_ms = keel_mono_ms() + backoff_ms(&s->poll_backoff);
      b->retries++;
    }
    break;
  case X_RESULT: {
    ksim_run_t r;
    if (ok && !ksim_acked(s->a, v, &r)) {
      s->res_backoff = 0;
      on_ack(b, r.cmd);
      start_result(b, s);
    } else {
      if (ok) {
        b->http_errs[X_RESULT]++;
        note_err(b, "ack", x, st, x->in.data);
      }
      s->res_retry_ms = keel_mono_ms() + backoff_ms(&s->res_backoff);
      b->retries++;
    }
    break;
  }
  case X_ADMIN:
    b->cmd_status = (int)st;
    if (ok) {
      const char *id = keel_json_str(v, "id");
      b->runs_expected = (int)json_array_size(json_object_get(v, "runs"));
      if (id && b->round_on && !b->round_cmd[0])
        snprintf(b->round_cmd, sizeof b->round_cmd, "%s", id);
    }
    break;
  case X_XSTART:
    b->cmd_status = (int)st;
    b->xstarted_ns = keel_mono_ns();
    if (ok && keel_json_str(v, "id") && strlen(keel_json_str(v, "id")) < sizeof b->xid)
      snprintf(b->xid, sizeof b->xid, "%s", keel_json_str(v, "id"));
    break;
  case X_XGET: {
    curl_off_t us = 0;
    curl_easy_getinfo(x->h, CURLINFO_TOTAL_TIME_T, &us);
    b->xget_ms += (double)us / 1e3;
    b->xgets++;
    if (ok) on_xstatus(b, v);
    break;
  }
  case X_XCANCEL: /* a failed cancel was noted above; the round says the rest */
    break;
  }
  json_decref(v);
}

/* One turn of the loop: wait for ready sockets or curl's timer (at most
 * wait_ms), run the transfers, handle completions and due retries. */
static void step(bench_t *b, int wait_ms) {
  int64_t now;

  ksim_loop_step(&b->loop, wait_ms);
  if (b->retries) {
    now = keel_mono_ms();
    for (int i = 0; i < b->n; i++) {
      sim_t *s = &b->sims[i];
      if (s->poll_retry_ms && now >= s->poll_retry_ms && !s->poll.busy) start_poll(b, s);
      if (s->res_retry_ms && now >= s->res_retry_ms && !s->res.busy) start_result(b, s);
    }
  }
}

/* Every agent has a poll in flight, no result is in flight or queued, and
 * nothing completed for IDLE_MS. */
static int settled(bench_t *b) {
  for (int i = 0; i < b->n; i++) {
    const sim_t *s = &b->sims[i];
    if (!s->poll.busy || s->res.busy || s->a->qn) return 0;
  }
  return !b->cmd.busy && !b->xrb.busy && !b->xget.busy &&
         keel_mono_ns() - b->loop.last_done_ns >= (int64_t)IDLE_MS * 1000000;
}

static int wait_settled(bench_t *b, int64_t limit_ms) {
  int64_t end = keel_mono_ms() + limit_ms;
  while (!settled(b)) {
    if (keel_mono_ms() > end) return -1;
    step(b, 10);
  }
  return 0;
}

/* One round; returns its time in ms (ROUND_TIMEOUT_MS when it timed out). */
static double round_once(bench_t *b, int *timed_out) {
  static const char body[] = "{\"target\":\"bench=fanout\",\"argv\":[\"true\"]}";
  xfer_t *x = &b->cmd;
  int64_t limit;
  double ms;

  b->round_on = 1;
  b->acks = 0;
  b->runs_expected = -1;
  b->cmd_status = 0;
  b->round_cmd[0] = '\0';
  b->t_end_ns = 0;
  keel_buf_reset(&x->body);
  keel_buf_puts(&x->body, body);
  ksim_xfer_bearer(x, b->admin);
  b->t0_ns = keel_mono_ns();
  if (ksim_xfer_send(&b->loop, x, "POST", "/v1/commands", NULL, ROUND_TIMEOUT_MS))
    b->curl_errs[X_ADMIN]++;
  limit = b->t0_ns + (int64_t)ROUND_TIMEOUT_MS * 1000000;
  while (!b->t_end_ns && keel_mono_ns() < limit) step(b, 5);
  *timed_out = !b->t_end_ns;
  ms = *timed_out ? ROUND_TIMEOUT_MS : (double)(b->t_end_ns - b->t0_ns) / 1e6;
  if (*timed_out)
    fprintf(stderr, "  round timed out: %d of %d results acked (command %s, status %d, runs %d)\n",
            b->acks, b->n, b->round_cmd[0] ? b->round_cmd : "?", b->cmd_status, b->runs_expected);
  else if (b->runs_expected >= 0 && b->runs_expected != b->n)
    fprintf(stderr, "  command %s had %d runs, expected %d\n", b->round_cmd, b->runs_expected,
            b->n);
  /* let the command's own answer arrive before the next round */
  while (x->busy && keel_mono_ns() < limit + 5000000000LL) step(b, 5);
  if (b->round_cmd[0] && b->npast < (int)(sizeof b->past / sizeof b->past[0]))
    snprintf(b->past[b->npast++], sizeof b->past[0], "%s", b->round_cmd);
  b->round_on = 0;
  return ms;
}

/* ---- one configuration -------------------------------------------------------------- */

/* The agents enroll for real with a token that tags them bench=fanout. */
static int enroll_all(bench_t *b, const ksim_keeld_t *k) {
  char token[256] = "";
  int bad = b->n;
  if (!ksim_enroll_token(k->url, k->admin, "{\"bench\":\"fanout\"}", b->n, token, sizeof token))
    bad = ksim_enroll(k->url, token, b->agents, b->n, "sim-", NULL, ENROLL_PARALLEL);
  sodium_memzero(token, sizeof token);
  if (bad) fprintf(stderr, "bench: %d of %d enrollments failed\n", bad, b->n);
  return bad ? -1 : 0;
}

static void print_errors(const bench_t *b) {
  printf("  errors: transport enroll/poll/result/command %lu/%lu/%lu/%lu, "
         "HTTP %lu/%lu/%lu/%lu, job signature failures %lu, bad jobs %lu, "
         "redelivered %lu, queue overflow %lu\n",
         b->curl_errs[0], b->curl_errs[1], b->curl_errs[2], b->curl_errs[3], b->http_errs[0],
         b->http_errs[1], b->http_errs[2], b->http_errs[3], b->cnt.sig_fail, b->cnt.bad_job,
         b->cnt.redelivered, b->cnt.qfull);
}

/* ---- runbook executions -------------------------------------------------------------- */

/* Applies runbook `name`: two command steps on every simulated agent (the
 * enrollment token tagged them all bench=fanout), `conc` of them at a
 * time.  keeld takes YAML whatever the Content-Type; `keel apply` sends
 * it as the JSON client does.  A blocking request is fine here: the agents
 * are settled (each has a long-poll held by keeld, nothing queued) and an
 * apply gives them no job. */
static int rb_apply(const bench_t *b, const char *name, const char *conc) {
  char doc[1024], what[128];
  snprintf(doc, sizeof doc,
           "kind: Runbook\n"
           "name: %s\n"
           "description: bench/fanout, two command steps on every simulated agent\n"
           "owner: {team: bench}\n"
           "targets: \"bench=fanout\"\n"
           "rate: {concurrency: \"%s\"}\n"
           "steps:\n"
           "  - name: first\n"
           "    command: {argv: [\"true\"]}\n"
           "  - name: second\n"
           "    command: {argv: [echo, \"{{ target.hostname }}\"]}\n",
           name, conc);
  snprintf(what, sizeof what, "runbook %s", name);
  return ksim_apply(b->url, b->admin, what, doc);
}

/* One execution of runbook `name`; returns its time in ms, from the POST to
 * the GET that saw it final (RB_ROUND_TIMEOUT_MS when it timed out: it is
 * then cancelled, so that it cannot overlap the next round), or -1 when
 * the start failed (the round has no time).  *keeld_ms: the execution's
 * own created_at -> ended_at, *start_ms: the POST's answer; -1 when
 * unknown. */
static double rb_round(bench_t *b, const char *name, int *timed_out, double *keeld_ms,
                       double *start_ms) {
  xfer_t *x = &b->xrb, *g = &b->xget;
  char path[128];
  int64_t limit, next_get = 0, end;
  double ms;

  b->xid[0] = b->xstate[0] = b->xreason[0] = '\0';
  b->xsucceeded = b->xtargets = -1;
  b->xcreated_ms = b->xended_ms = 0;
  b->xstarted_ns = 0;
  b->cmd_status = 0;
  b->t_end_ns = 0;
  keel_buf_reset(&x->body);
  keel_buf_printf(&x->body, "{\"runbook\":\"%s\"}", name);
  ksim_xfer_bearer(x, b->admin);
  ksim_xfer_bearer(g, b->admin);
  x->kind = X_XSTART;
  b->t0_ns = keel_mono_ns();
  limit = b->t0_ns + (int64_t)RB_ROUND_TIMEOUT_MS * 1000000;
  if (ksim_xfer_send(&b->loop, x, "POST", "/v1/executions", NULL, RB_ROUND_TIMEOUT_MS))
    b->curl_errs[X_XSTART]++;
  while (!b->t_end_ns && keel_mono_ns() < limit) {
    int64_t now = keel_mono_ms();
    int wait = 5;
    if (!x->busy && !b->xid[0]) break; /* the start failed (on_done said why) */
    if (b->xid[0] && !g->busy && now >= next_get) {
      next_get = now + RB_POLL_MS;
      snprintf(path, sizeof path, "/v1/executions/%s?targets=false", b->xid);
      if (ksim_xfer_send(&b->loop, g, "GET", path, NULL, 10000)) b->curl_errs[X_XGET]++;
    }
    /* wake for the next GET on time, not up to 5 ms late */
    if (b->xid[0] && !g->busy && next_get - now < wait)
      wait = next_get > now ? (int)(next_get - now) : 0;
    step(b, wait);
  }
  *timed_out = !b->t_end_ns && b->xid[0];
  ms = b->t_end_ns ? (double)(b->t_end_ns - b->t0_ns) / 1e6 : b->xid[0] ? RB_ROUND_TIMEOUT_MS : -1;
  *keeld_ms = b->xcreated_ms && b->xended_ms ? (double)(b->xended_ms - b->xcreated_ms) : -1;
  *start_ms = b->xstarted_ns ? (double)(b->xstarted_ns - b->t0_ns) / 1e6 : -1;
  end = keel_mono_ns() + 10000000000LL;
  if (!b->t_end_ns && !b->xid[0]) {
    while (x->busy && keel_mono_ns() < end) step(b, 5);
    fprintf(stderr, "  runbook round: POST /v1/executions (runbook %s) failed (status %d)\n", name,
            b->cmd_status);
  } else if (*timed_out) {
    while (x->busy && keel_mono_ns() < end) step(b, 5);
    fprintf(stderr,
            "  runbook round timed out after %d s: execution %s (start status %d), last seen %s "
            "with %ld of %ld targets succeeded%s%s\n",
            RB_ROUND_TIMEOUT_MS / 1000, b->xid[0] ? b->xid : "?", b->cmd_status,
            b->xstate[0] ? b->xstate : "-", b->xsucceeded, b->xtargets,
            b->xreason[0] ? ": " : "", b->xreason);
    if (b->xid[0] && !x->busy) {
      keel_buf_reset(&x->body);
      keel_buf_puts(&x->body, "{}");
      x->kind = X_XCANCEL;
      snprintf(path, sizeof path, "/v1/executions/%s/cancel", b->xid);
      if (ksim_xfer_send(&b->loop, x, "POST", path, NULL, 10000)) b->curl_errs[X_XCANCEL]++;
    }
  } else if (strcmp(b->xstate, "succeeded") || b->xsucceeded != b->n || b->xtargets != b->n) {
    b->bad_final++;
    fprintf(stderr,
            "  execution %s ended %s%s%s: %ld of %ld targets succeeded, expected %d of %d\n",
            b->xid, b->xstate, b->xreason[0] ? " - " : "", b->xreason, b->xsucceeded,
            b->xtargets, b->n, b->n);
  }
  /* let the answers in flight arrive before the next round */
  while ((x->busy || g->busy) && keel_mono_ns() < end) step(b, 5);
  return ms;
}

/* Errors counted so far, to report those of one set of rounds. */
typedef struct errsnap {
  unsigned long curl[X_NKINDS], http[X_NKINDS], sig, bad, redelivered, qfull, bad_final;
} errsnap_t;

static void errsnap(const bench_t *b, errsnap_t *s) {
  memcpy(s->curl, b->curl_errs, sizeof s->curl);
  memcpy(s->http, b->http_errs, sizeof s->http);
  s->sig = b->cnt.sig_fail;
  s->bad = b->cnt.bad_job;
  s->redelivered = b->cnt.redelivered;
  s->qfull = b->cnt.qfull;
  s->bad_final = b->bad_final;
}

/* R measured rounds (after RB_WARMUP_ROUNDS) of runbook `name`, and their
 * figures. */
static void rb_rounds_run(bench_t *b, const ksim_keeld_t *k, const char *name, const char *conc,
                          int rounds) {
  double *t = calloc((size_t)rounds, sizeof *t), *kt = calloc((size_t)rounds, sizeof *kt),
         *st = calloc((size_t)rounds, sizeof *st);
  double sum = 0, busy = 0, cpu_k0, cpu_s0, cpu_k1, cpu_s1, get_ms0;
  int timeouts = 0, nt = 0, nk = 0, ns = 0;
  unsigned long gets0, errs = 0;
  int64_t t_meas0, t_meas1;
  errsnap_t e0, e1;
  ksim_kmetrics_t m0, m1;
  long rss;

  if (!t || !kt || !st) goto out;
  printf("  runbook %s (concurrency %s): %d rounds (+%d warm-up)\n", name, conc, rounds,
         RB_WARMUP_ROUNDS);
  fflush(stdout);
  for (int w = 0; w < RB_WARMUP_ROUNDS; w++) {
    int to;
    double kms, sms;
    rb_round(b, name, &to, &kms, &sms);
    wait_settled(b, 60000);
  }
  errsnap(b, &e0);
  gets0 = b->xgets;
  get_ms0 = b->xget_ms;
  ksim_keeld_metrics(k->url, &m0);
  cpu_k0 = ksim_keeld_cpu_s(k);
  cpu_s0 = ksim_self_cpu_s();
  t_meas0 = keel_mono_ns();
  for (int r = 0; r < rounds; r++) {
    int to;
    double kms, sms, ms = rb_round(b, name, &to, &kms, &sms);
    if (ms >= 0) {
      t[nt++] = ms;
      busy += ms;
      sum += ms;
    }
    timeouts += to;
    if (kms >= 0) kt[nk++] = kms;
    if (sms >= 0) st[ns++] = sms;
    if (wait_settled(b, 60000))
      fprintf(stderr, "  polls did not settle after runbook round %d\n", r);
  }
  t_meas1 = keel_mono_ns();
  cpu_k1 = ksim_keeld_cpu_s(k);
  cpu_s1 = ksim_self_cpu_s();
  rss = ksim_keeld_rss_kb(k);
  ksim_keeld_metrics(k->url, &m1);
  errsnap(b, &e1);

  /* a failed start is an HTTP error of its own; a timeout is not */
  for (int i = 0; i < X_NKINDS; i++) errs += e1.curl[i] - e0.curl[i] + e1.http[i] - e0.http[i];
  errs += e1.sig - e0.sig + e1.bad - e0.bad + e1.qfull - e0.qfull + e1.bad_final - e0.bad_final +
          (unsigned long)timeouts;
  qsort(t, (size_t)nt, sizeof *t, ksim_cmp_double);
  qsort(kt, (size_t)nk, sizeof *kt, ksim_cmp_double);
  qsort(st, (size_t)ns, sizeof *st, ksim_cmp_double);
  if (nt)
    printf("  runbook N=%d concurrency=%s: rounds %d  p50 %.1f ms  p99 %.1f ms  max %.1f ms  "
           "mean %.1f ms  (%d steps, %d jobs per round)\n",
           b->n, conc, nt, ksim_pct(t, nt, 50), ksim_pct(t, nt, 99), t[nt - 1], sum / nt, RB_STEPS,
           RB_STEPS * b->n);
  else
    printf("  runbook N=%d concurrency=%s: no round started\n", b->n, conc);
  if (nt < rounds) printf("    (%d of %d rounds failed to start)\n", rounds - nt, rounds);
  if (nk)
    printf("    keeld's own time (execution created_at -> ended_at): p50 %.0f ms  p99 %.0f ms  max "
           "%.0f ms\n",
           ksim_pct(kt, nk, 50), ksim_pct(kt, nk, 99), kt[nk - 1]);
  /* what the client-side time is made of: the start's answer, and the GETs
   * that see the end (a GET keeld is slow to answer makes the end late) */
  if (ns && nt)
    printf("    POST /v1/executions answered after p50 %.1f ms  max %.1f ms; status GETs: %.1f per "
           "round, %.1f ms each on average\n",
           ksim_pct(st, ns, 50), st[ns - 1], (double)(b->xgets - gets0) / nt,
           b->xgets > gets0 ? (b->xget_ms - get_ms0) / (double)(b->xgets - gets0) : 0);
  if (nt) {
    printf("    throughput within rounds: %.0f jobs/s (%d x N / mean round time)\n",
           (double)(RB_STEPS * b->n) / (sum / nt / 1e3), RB_STEPS);
    printf("    keeld: VmRSS %ld kB after the rounds; CPU %.2f s over %.2f s of measured rounds "
           "(%.0f%% of one core while in rounds)\n",
           rss, cpu_k1 - cpu_k0, busy / 1e3,
           busy > 0 ? (cpu_k1 - cpu_k0) / (busy / 1e3) * 100 : 0);
    printf("    bench itself: CPU %.2f s over %.2f s wall (settle time included)\n",
           cpu_s1 - cpu_s0, (double)(t_meas1 - t_meas0) / 1e9);
    printf("    all rounds, ms:");
    for (int r = 0; r < nt; r++) printf(" %.0f", t[r]);
    printf("\n");
  }
  {
    double c = m1.commits - m0.commits, y = m1.syncs - m0.syncs;
    printf("    keeld store over the measured rounds: %.0f commits (mean %.2f ms), %.0f fsyncs "
           "(mean %.2f ms, %.2f s in all), %.0f audit records\n",
           c, c > 0 ? (m1.commit_s - m0.commit_s) / c * 1e3 : 0, y,
           y > 0 ? (m1.sync_s - m0.sync_s) / y * 1e3 : 0, m1.sync_s - m0.sync_s,
           m1.audit - m0.audit);
  }
  printf("    errors: wrong end state %lu, timed out %d; execution start/status/cancel: transport "
         "%lu/%lu/%lu, HTTP %lu/%lu/%lu; agents: transport poll/result %lu/%lu, HTTP poll/result "
         "%lu/%lu, job signature failures %lu, bad jobs %lu, redelivered %lu, queue overflow %lu\n",
         e1.bad_final - e0.bad_final, timeouts, e1.curl[X_XSTART] - e0.curl[X_XSTART],
         e1.curl[X_XGET] - e0.curl[X_XGET], e1.curl[X_XCANCEL] - e0.curl[X_XCANCEL],
         e1.http[X_XSTART] - e0.http[X_XSTART], e1.http[X_XGET] - e0.http[X_XGET],
         e1.http[X_XCANCEL] - e0.http[X_XCANCEL], e1.curl[X_POLL] - e0.curl[X_POLL],
         e1.curl[X_RESULT] - e0.curl[X_RESULT], e1.http[X_POLL] - e0.http[X_POLL],
         e1.http[X_RESULT] - e0.http[X_RESULT], e1.sig - e0.sig, e1.bad - e0.bad,
         e1.redelivered - e0.redelivered, e1.qfull - e0.qfull);
  if (nt)
    printf("    summary: runbook N=%d concurrency=%s rounds=%d p50=%.1fms p99=%.1fms max=%.1fms "
           "mean=%.1fms keeld_p50=%.0fms jobs/s=%.0f timeouts=%d errors=%lu\n",
           b->n, conc, nt, ksim_pct(t, nt, 50), ksim_pct(t, nt, 99), t[nt - 1], sum / nt,
           nk ? ksim_pct(kt, nk, 50) : -1.0, (double)(RB_STEPS * b->n) / (sum / nt / 1e3), timeouts,
           errs);
  else
    printf("    summary: runbook N=%d concurrency=%s rounds=0 timeouts=%d errors=%lu\n", b->n,
           conc, timeouts, errs);
  fflush(stdout);
out:
  free(t);
  free(kt);
  free(st);
}

static void run_config(int n, int rounds, int rb_rounds) {
  bench_t *b = calloc(1, sizeof *b);
  ksim_keeld_t k;
  char *keeld_args[] = {"--heartbeat", "30s", "--log-level", "warn", NULL};
  /* the bench runbooks: the same two steps on all N, all at once or a 10% window */
  const char *const rb_name[] = {"bench-fanout-all", "bench-fanout-tenth"};
  const char *const rb_conc[] = {"100%", "10%"};
  double *t = calloc((size_t)(rounds ? rounds : 1), sizeof *t), sum = 0, cpu_k0, cpu_s0, cpu_k1,
         cpu_s1;
  int timeouts = 0, started = 0;
  int64_t t_enroll, t_meas0, t_meas1;
  long rss;

  if (!b || !t) goto out;
  if (rounds)
    printf("N = %d agents, %d rounds (+%d warm-up)\n", n, rounds, WARMUP_ROUNDS);
  else
    printf("N = %d agents (no command rounds)\n", n);
  fflush(stdout);
  if (ksim_keeld_start(&k, "fanout", keeld_args)) goto out;
  started = 1;
  snprintf(b->url, sizeof b->url, "%s", k.url);
  snprintf(b->admin, sizeof b->admin, "%s", k.admin);
  b->n = n;
  /* every agent holds two connections; the cache must not close any */
  if (ksim_loop_init(&b->loop, k.url, 2L * n + 16, on_done, b) ||
      !(b->sims = calloc((size_t)n, sizeof *b->sims)) ||
      !(b->agents = calloc((size_t)n, sizeof *b->agents)))
    goto out;
  if (ksim_xfer_init(&b->cmd, X_ADMIN, NULL) || ksim_xfer_init(&b->xrb, X_XSTART, NULL) ||
      ksim_xfer_init(&b->xget, X_XGET, NULL))
    goto out;
  for (int i = 0; i < n; i++) {
    sim_t *s = &b->sims[i];
    s->a = &b->agents[i];
    if (ksim_xfer_init(&s->poll, X_POLL, s) || ksim_xfer_init(&s->res, X_RESULT, s)) goto out;
  }

  t_enroll = keel_mono_ms();
  if (enroll_all(b, &k)) goto out;
  printf("  enrolled %d agents in %.2f s\n", n, (double)(keel_mono_ms() - t_enroll) / 1e3);
  fflush(stdout);
  for (int i = 0; i < n; i++) start_poll(b, &b->sims[i]);
  if (wait_settled(b, 60000)) {
    fprintf(stderr, "  agents' polls did not settle within 60 s; no figures for N = %d\n", n);
    print_errors(b);
    goto out;
  }
  for (int w = 0; rounds && w < WARMUP_ROUNDS; w++) {
    int to;
    round_once(b, &to);
    wait_settled(b, 60000);
  }
  if (rounds) {
    unsigned long c0 = b->loop.new_conns;
    ksim_kmetrics_t m0, m1;
    ksim_keeld_metrics(k.url, &m0);
    cpu_k0 = ksim_keeld_cpu_s(&k);
    cpu_s0 = ksim_self_cpu_s();
    t_meas0 = keel_mono_ns();
    double busy = 0;
    for (int r = 0; r < rounds; r++) {
      int to;
      t[r] = round_once(b, &to);
      busy += t[r];
      timeouts += to;
      if (wait_settled(b, 60000)) fprintf(stderr, "  polls did not settle after round %d\n", r);
    }
    t_meas1 = keel_mono_ns();
    cpu_k1 = ksim_keeld_cpu_s(&k);
    cpu_s1 = ksim_self_cpu_s();
    rss = ksim_keeld_rss_kb(&k);
    ksim_keeld_metrics(k.url, &m1);

    for (int r = 0; r < rounds; r++) sum += t[r];
    qsort(t, (size_t)rounds, sizeof *t, ksim_cmp_double);
    printf("  round time (POST /v1/commands -> N-th result acked): p50 %.1f ms  p99 %.1f ms  max "
           "%.1f ms  mean %.1f ms  (%d timed out)\n",
           ksim_pct(t, rounds, 50), ksim_pct(t, rounds, 99), t[rounds - 1], sum / rounds, timeouts);
    printf("  throughput within rounds: %.0f jobs/s (N / mean round time)\n",
           (double)n / (sum / rounds / 1e3));
    printf("  keeld: VmRSS %ld kB after the run; CPU %.2f s over %.2f s of measured rounds "
           "(%.0f%% of one core while in rounds)\n",
           rss, cpu_k1 - cpu_k0, busy / 1e3, busy > 0 ? (cpu_k1 - cpu_k0) / (busy / 1e3) * 100 : 0);
    printf("  bench itself: CPU %.2f s over %.2f s wall (measured phase, settle time included)\n",
           cpu_s1 - cpu_s0, (double)(t_meas1 - t_meas0) / 1e9);
    printf("  all rounds, ms:");
    for (int r = 0; r < rounds; r++) printf(" %.0f", t[r]);
    printf("\n");
    {
      double c = m1.commits - m0.commits, y = m1.syncs - m0.syncs;
      printf("  keeld store over the measured rounds: %.0f commits (mean %.2f ms), %.0f fsyncs "
             "(mean %.2f ms, %.2f s in all), %.0f audit records\n",
             c, c > 0 ? (m1.commit_s - m0.commit_s) / c * 1e3 : 0, y,
             y > 0 ? (m1.sync_s - m0.sync_s) / y * 1e3 : 0, m1.sync_s - m0.sync_s,
             m1.audit - m0.audit);
    }
    printf("  new connections during measured rounds: %lu\n", b->loop.new_conns - c0);
    print_errors(b);
    printf("  summary: N=%d rounds=%d p50=%.1fms p99=%.1fms max=%.1fms mean=%.1fms "
           "jobs/s=%.0f keeld_rss=%ldkB timeouts=%d errors=%lu sigfail=%lu\n",
           n, rounds, ksim_pct(t, rounds, 50), ksim_pct(t, rounds, 99), t[rounds - 1], sum / rounds,
           (double)n / (sum / rounds / 1e3), rss, timeouts,
           b->curl_errs[0] + b->curl_errs[1] + b->curl_errs[2] + b->curl_errs[3] +
               b->http_errs[0] + b->http_errs[1] + b->http_errs[2] + b->http_errs[3],
           b->cnt.sig_fail);
    fflush(stdout);
  }
  for (int i = 0; rb_rounds && i < 2; i++) {
    if (rb_apply(b, rb_name[i], rb_conc[i])) goto out;
    rb_rounds_run(b, &k, rb_name[i], rb_conc[i], rb_rounds);
  }
out:
  if (b) {
    if (b->sims)
      for (int i = 0; i < n; i++) {
        ksim_xfer_free(&b->loop, &b->sims[i].poll);
        ksim_xfer_free(&b->loop, &b->sims[i].res);
      }
    if (b->agents)
      for (int i = 0; i < n; i++) sodium_memzero(b->agents[i].sk, sizeof b->agents[i].sk);
    ksim_xfer_free(&b->loop, &b->cmd);
    ksim_xfer_free(&b->loop, &b->xrb);
    ksim_xfer_free(&b->loop, &b->xget);
    free(b->sims);
    free(b->agents);
    ksim_loop_free(&b->loop);
    sodium_memzero(b->admin, sizeof b->admin);
  }
  if (started) ksim_keeld_stop(&k);
  free(b);
  free(t);
}

int main(int argc, char **argv) {
  int agents = 0, rounds = 0, rb = -1, no_cmd = 0; /* rb -1: the configuration's default */
  struct rlimit rl;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--agents") && i + 1 < argc) agents = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--runbook-rounds") && i + 1 < argc) rb = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-commands")) no_cmd = 1;
    else {
      fprintf(stderr, "usage: bench-fanout [--agents N] [--rounds R] [--runbook-rounds R] "
                      "[--no-commands]\n");
      return 2;
    }
  }
  if (agents < 0 || rounds < 0 || rounds > MAX_ROUNDS || rb < -1 || rb > MAX_ROUNDS ||
      (no_cmd && rb == 0)) {
    fprintf(stderr, "bench-fanout: --agents >= 1, 1 <= --rounds <= %d, 0 <= --runbook-rounds <= "
                    "%d (not 0 with --no-commands)\n",
            MAX_ROUNDS, MAX_ROUNDS);
    return 2;
  }
  /* two connections per simulated agent */
  if (ksim_init("bench-fanout")) return 1;
  getrlimit(RLIMIT_NOFILE, &rl);
  printf("bench/fanout (keeld next to this binary; heartbeat 30 s; round = POST /v1/commands "
         "until the N-th result is acked; RLIMIT_NOFILE %llu)\n",
         (unsigned long long)rl.rlim_cur);
  printf("runbook round = POST /v1/executions (2 command steps on every agent) until GET "
         "/v1/executions/ID, every %d ms, says it ended\n",
         RB_POLL_MS);
  fflush(stdout);
  if (agents || rounds) {
    run_config(agents ? agents : 100, no_cmd ? 0 : rounds ? rounds : 20, rb >= 0 ? rb : 5);
  } else {
    run_config(100, no_cmd ? 0 : 30, rb >= 0 ? rb : 10);
    run_config(1000, no_cmd ? 0 : 20, rb >= 0 ? rb : 5);
  }
  ksim_cleanup();
  return 0;
}
