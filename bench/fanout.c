/* bench/fanout — command fan-out latency against a real keeld.
 *
 * Starts keeld (the binary next to this one) on a fresh data directory,
 * enrolls N simulated agents for real (Ed25519 keys, enrollment token),
 * and runs them all in one thread on one curl multi handle: each agent
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
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/agentproto.h"
#include "keel/buf.h"
#include "keel/crypto.h"
#include "keel/http.h"
#include "keel/json.h"
#include "keel/time.h"

#define ROUND_TIMEOUT_MS 30000
#define WARMUP_ROUNDS 2
#define IDLE_MS 50          /* no completions for this long: polls are re-established */
#define QMAX 64             /* results an agent may have queued (a poll brings <= 64 jobs) */
#define SEEN 16             /* recently answered run ids per agent, for dedup */
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

struct sim;

/* One easy handle and what it needs while in flight.  All bufs owned. */
typedef struct xfer {
  int kind;
  struct sim *s; /* NULL for the admin transfer */
  CURL *h;
  keel_buf_t in, body, auth;
  struct curl_slist *hdrs;
  int busy;
} xfer_t;

typedef struct job_ref {
  char run[40], cmd[40];
} job_ref_t;

typedef struct sim {
  int idx;
  char id[40];
  uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  uint8_t spk[KEEL_AGENT_PK_BYTES];
  int enrolled;
  xfer_t poll, res;
  job_ref_t q[QMAX]; /* q[0] is in flight when res.busy */
  int qn;
  char seen[SEEN][40];
  int seen_pos;
  int64_t poll_retry_ms, res_retry_ms; /* mono; 0 = none pending */
  int poll_backoff, res_backoff;
} sim_t;

typedef struct bench {
  CURLM *m;
  int ep;            /* epoll fd fed by curl's socket callback */
  int64_t timer_ms;  /* curl's timeout, keel_mono_ms clock; -1 = none */
  int retries;       /* agents with a retry scheduled */
  char url[256], admin[256];
  int n;
  sim_t *sims;
  xfer_t cmd;
  xfer_t xrb, xget; /* POST /v1/executions (and its cancel); GET /v1/executions/ID */
  /* counters */
  unsigned long curl_errs[X_NKINDS], http_errs[X_NKINDS], sig_fail, bad_job, redelivered, qfull,
      new_conns, polls, results, empty_polls;
  int shown;
  int64_t last_done_ns;
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

static void rmrf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

static size_t on_write(char *p, size_t sz, size_t n, void *ud) {
  keel_buf_t *b = ud;
  return keel_buf_append(b, p, sz * n) ? 0 : sz * n;
}

static void note_err(bench_t *b, const char *what, const xfer_t *x, long status, const char *msg) {
  char who[64] = "";
  size_t n = strlen(msg);
  if (b->shown++ >= MAX_ERR_SHOWN) return;
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) n--;
  if (x->s) snprintf(who, sizeof who, " of sim-%d (%s)", x->s->idx, x->s->id[0] ? x->s->id : "-");
  fprintf(stderr, "  error: %s %s%s: status %ld: %.*s\n", kind_name[x->kind], what, who, status,
          (int)(n > 300 ? 300 : n), msg);
}

static int xfer_init(bench_t *b, xfer_t *x, int kind, sim_t *s) {
  memset(x, 0, sizeof *x);
  x->kind = kind;
  x->s = s;
  keel_buf_init(&x->in, 1 << 20);
  keel_buf_init(&x->body, 1 << 16);
  keel_buf_init(&x->auth, 1024);
  if (!(x->h = curl_easy_init())) return -1;
  curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
  curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(x->h, CURLOPT_WRITEDATA, &x->in);
  curl_easy_setopt(x->h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(x->h, CURLOPT_TCP_NODELAY, 1L);
  (void)b;
  return 0;
}

static void xfer_free(bench_t *b, xfer_t *x) {
  if (x->h) {
    if (x->busy) curl_multi_remove_handle(b->m, x->h);
    curl_easy_cleanup(x->h);
  }
  curl_slist_free_all(x->hdrs);
  keel_buf_free(&x->in);
  keel_buf_free(&x->body);
  keel_buf_free(&x->auth);
  memset(x, 0, sizeof *x);
}

/* Starts x: POST path with x->body (post) or GET path, Authorization from
 * x->auth. */
static int xfer_send(bench_t *b, xfer_t *x, int post, const char *path, long timeout_ms) {
  char url[512];
  keel_buf_t h;
  snprintf(url, sizeof url, "%s%s", b->url, path);
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  keel_buf_init(&h, 2048);
  keel_buf_printf(&h, "Authorization: %s", x->auth.data);
  x->hdrs = curl_slist_append(x->hdrs, h.data);
  keel_buf_free(&h);
  if (post) {
    x->hdrs = curl_slist_append(x->hdrs, "Content-Type: application/json");
    x->hdrs = curl_slist_append(x->hdrs, "Expect:");
  }
  keel_buf_reset(&x->in);
  curl_easy_setopt(x->h, CURLOPT_URL, url);
  curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->hdrs);
  if (post) {
    curl_easy_setopt(x->h, CURLOPT_POSTFIELDS, x->body.data);
    curl_easy_setopt(x->h, CURLOPT_POSTFIELDSIZE, (long)x->body.len);
  } else {
    curl_easy_setopt(x->h, CURLOPT_HTTPGET, 1L);
  }
  curl_easy_setopt(x->h, CURLOPT_TIMEOUT_MS, timeout_ms);
  if (curl_multi_add_handle(b->m, x->h) != CURLM_OK) return -1;
  x->busy = 1;
  return 0;
}

static int xfer_start(bench_t *b, xfer_t *x, const char *path, long timeout_ms) {
  return xfer_send(b, x, 1, path, timeout_ms);
}

static int sign(sim_t *s, xfer_t *x, const char *path) {
  return keel_agent_sign_request(&x->auth, s->id, s->sk, "POST", path, keel_now_ms(), x->body.data,
                                 x->body.len);
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
  keel_buf_reset(&x->body);
  if (s->qn == 0) {
    keel_buf_puts(&x->body, "{}");
  } else {
    keel_buf_puts(&x->body, "{\"running\":[");
    for (int i = 0; i < s->qn; i++)
      keel_buf_printf(&x->body, "%s\"%s\"", i ? "," : "", s->q[i].run);
    keel_buf_puts(&x->body, "]}");
  }
  x->kind = X_POLL;
  /* keeld holds a poll up to the heartbeat (30 s): allow well over that */
  if (sign(s, x, "/v1/agent/poll") || xfer_start(b, x, "/v1/agent/poll", 90000)) {
    b->curl_errs[X_POLL]++;
    s->poll_retry_ms = keel_mono_ms() + 1000;
    b->retries++;
  }
}

static void start_result(bench_t *b, sim_t *s) {
  xfer_t *x = &s->res;
  int64_t now = keel_now_ms();
  if (s->res_retry_ms) {
    s->res_retry_ms = 0;
    b->retries--;
  }
  if (x->busy || s->qn == 0) return;
  keel_buf_reset(&x->body);
  keel_buf_printf(&x->body,
                  "{\"run_id\":\"%s\",\"status\":\"exited\",\"exit_code\":0,\"stdout_b64\":\"\","
                  "\"stderr_b64\":\"\",\"started_at\":%lld,\"ended_at\":%lld}",
                  s->q[0].run, (long long)now, (long long)now);
  x->kind = X_RESULT;
  if (sign(s, x, "/v1/agent/results") || xfer_start(b, x, "/v1/agent/results", 30000)) {
    b->curl_errs[X_RESULT]++;
    s->res_retry_ms = keel_mono_ms() + 1000;
    b->retries++;
  }
}

static int seen_has(const sim_t *s, const char *run) {
  for (int i = 0; i < SEEN; i++)
    if (!strcmp(s->seen[i], run)) return 1;
  for (int i = 0; i < s->qn; i++)
    if (!strcmp(s->q[i].run, run)) return 1;
  return 0;
}

static void on_jobs(bench_t *b, sim_t *s, const json_t *jobs) {
  size_t i;
  const json_t *j;
  json_array_foreach(jobs, i, j) {
    const char *text = keel_json_str(j, "job"), *sig = keel_json_str(j, "sig");
    json_t *job = NULL;
    const char *run, *cmd, *agent;
    if (!text || !sig ||
        keel_agent_verify_job(sig, s->spk, text, strlen(text), NULL)) {
      b->sig_fail++;
      continue;
    }
    if (keel_json_parse(text, strlen(text), &job, NULL) ||
        !(run = keel_json_str(job, "run_id")) || !(cmd = keel_json_str(job, "command_id")) ||
        !(agent = keel_json_str(job, "agent_id")) || strcmp(agent, s->id)) {
      b->bad_job++;
      json_decref(job);
      continue;
    }
    if (seen_has(s, run)) {
      b->redelivered++;
    } else if (s->qn == QMAX) {
      b->qfull++;
    } else {
      snprintf(s->q[s->qn].run, sizeof s->q[0].run, "%s", run);
      snprintf(s->q[s->qn].cmd, sizeof s->q[0].cmd, "%s", cmd);
      s->qn++;
    }
    json_decref(job);
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

static void on_done(bench_t *b, xfer_t *x, CURLcode cc, long st) {
  sim_t *s = x->s;
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
  case X_ENROLL: {
    const char *id = ok ? keel_json_str(v, "agent_id") : NULL;
    const char *spk = ok ? keel_json_str(v, "server_public_key") : NULL;
    if (id && spk && strlen(id) < sizeof s->id && !keel_unhex(s->spk, sizeof s->spk, spk)) {
      snprintf(s->id, sizeof s->id, "%s", id);
      s->enrolled = 1;
    } else {
      s->enrolled = -1;
    }
    break;
  }
  case X_POLL:
    if (ok) {
      const json_t *jobs = json_object_get(v, "jobs");
      s->poll_backoff = 0;
      b->polls++;
      if (json_array_size(jobs) == 0) b->empty_polls++;
      on_jobs(b, s, jobs);
      start_result(b, s);
      start_poll(b, s);
    } else {
      s->poll_retry_ms = keel_mono_ms() + backoff_ms(&s->poll_backoff);
      b->retries++;
    }
    break;
  case X_RESULT:
    if (ok && keel_json_str(v, "ack") && !strcmp(keel_json_str(v, "ack"), s->q[0].run)) {
      s->res_backoff = 0;
      snprintf(s->seen[s->seen_pos], sizeof s->seen[0], "%s", s->q[0].run);
      s->seen_pos = (s->seen_pos + 1) % SEEN;
      on_ack(b, s->q[0].cmd);
      memmove(&s->q[0], &s->q[1], (size_t)(s->qn - 1) * sizeof s->q[0]);
      s->qn--;
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

/* curl tells us which sockets to watch (socket_action API: the cost of a
 * turn follows the sockets that are ready, not the 2N transfers). */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp) {
  bench_t *b = ud;
  struct epoll_event ev = {0};
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(b->ep, EPOLL_CTL_DEL, fd, NULL);
    curl_multi_assign(b->m, fd, NULL);
    return 0;
  }
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  ev.data.fd = fd;
  if (epoll_ctl(b->ep, sockp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) &&
      epoll_ctl(b->ep, errno == EEXIST ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev))
    fprintf(stderr, "  epoll_ctl(%d): %s\n", (int)fd, strerror(errno));
  curl_multi_assign(b->m, fd, (void *)1);
  return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *ud) {
  bench_t *b = ud;
  (void)m;
  b->timer_ms = timeout_ms < 0 ? -1 : keel_mono_ms() + timeout_ms;
  return 0;
}

static void drain(bench_t *b) {
  int left;
  CURLMsg *msg;
  while ((msg = curl_multi_info_read(b->m, &left))) {
    xfer_t *x = NULL;
    long st = 0, nc = 0;
    CURLcode cc;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_getinfo(x->h, CURLINFO_NUM_CONNECTS, &nc);
    b->new_conns += (unsigned long)nc;
    cc = msg->data.result;
    curl_multi_remove_handle(b->m, x->h);
    x->busy = 0;
    b->last_done_ns = keel_mono_ns();
    on_done(b, x, cc, st);
  }
}

/* One turn of the loop: wait for ready sockets or curl's timer (at most
 * wait_ms), run the transfers, handle completions and due retries. */
static void step(bench_t *b, int wait_ms) {
  struct epoll_event ev[512];
  int running, n, to = wait_ms;
  int64_t now = keel_mono_ms();

  if (b->timer_ms >= 0 && b->timer_ms - now < to) to = b->timer_ms <= now ? 0 : (int)(b->timer_ms - now);
  n = epoll_wait(b->ep, ev, (int)(sizeof ev / sizeof ev[0]), to);
  for (int i = 0; i < n; i++) {
    int f = (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
            (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
            (ev[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(b->m, ev[i].data.fd, f, &running);
  }
  if (b->timer_ms >= 0 && keel_mono_ms() >= b->timer_ms) {
    b->timer_ms = -1;
    curl_multi_socket_action(b->m, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  drain(b);
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
    if (!s->poll.busy || s->res.busy || s->qn) return 0;
  }
  return !b->cmd.busy && !b->xrb.busy && !b->xget.busy &&
         keel_mono_ns() - b->last_done_ns >= (int64_t)IDLE_MS * 1000000;
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
  keel_buf_reset(&x->auth);
  keel_buf_printf(&x->auth, "Bearer %s", b->admin);
  b->t0_ns = keel_mono_ns();
  if (xfer_start(b, x, "/v1/commands", ROUND_TIMEOUT_MS)) b->curl_errs[X_ADMIN]++;
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

/* ---- keeld ---------------------------------------------------------------------------------- */

typedef struct keeld {
  pid_t pid;
  char dir[256], data[300], log[300], url[256], admin[256];
} keeld_t;

static pid_t spawn(const char *log, char *const argv[]) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE *f = freopen(log, "a", stderr);
    if (!f || !freopen(log, "a", stdout)) _exit(126);
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static int read_line(const char *path, char *out, size_t n) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  if (!fgets(out, (int)n, f)) out[0] = '\0';
  fclose(f);
  out[strcspn(out, "\r\n")] = '\0';
  return out[0] ? 0 : -1;
}

static void show_log(const keeld_t *k, int max_lines) {
  FILE *f = fopen(k->log, "r");
  char line[1024];
  int n = 0, total = 0;
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    total++;
    if (n < max_lines) {
      fprintf(stderr, "    keeld: %s", line);
      n++;
    }
  }
  if (total > n) fprintf(stderr, "    keeld: ... %d more lines in the log\n", total - n);
  fclose(f);
}

static int keeld_start(keeld_t *k) {
  char exe[PATH_MAX], bin[PATH_MAX + 16];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  int status;
  keel_http_t h;
  keel_buf_t resp;
  keel_err_t e = {0};

  memset(k, 0, sizeof *k);
  if (n <= 0) return -1;
  exe[n] = '\0';
  snprintf(bin, sizeof bin, "%s/keeld", dirname(exe));
  snprintf(k->dir, sizeof k->dir, "%s/keel-fanout-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(k->dir)) return -1;
  snprintf(k->data, sizeof k->data, "%s/d", k->dir);
  snprintf(k->log, sizeof k->log, "%s/keeld.log", k->dir);
  {
    char *argv[] = {bin, "init", "--data", k->data, NULL};
    pid_t p = spawn(k->log, argv);
    if (p < 0 || waitpid(p, &status, 0) != p || !WIFEXITED(status) || WEXITSTATUS(status)) {
      fprintf(stderr, "bench: %s init failed\n", bin);
      show_log(k, 20);
      return -1;
    }
  }
  if (truncate(k->log, 0)) { /* init's output holds the admin token: not worth keeping */
  }
  {
    char *argv[] = {bin,       "--data",      k->data, "--listen", "127.0.0.1:0", "--heartbeat",
                    "30s",     "--log-level", "warn",  NULL};
    char path[400];
    int64_t end = keel_mono_ms() + 20000;
    if ((k->pid = spawn(k->log, argv)) < 0) return -1;
    snprintf(path, sizeof path, "%s/keeld.url", k->data);
    while (read_line(path, k->url, sizeof k->url)) {
      if (keel_mono_ms() > end || waitpid(k->pid, &status, WNOHANG) == k->pid) {
        fprintf(stderr, "bench: keeld did not start\n");
        show_log(k, 20);
        return -1;
      }
      usleep(20000);
    }
    snprintf(path, sizeof path, "%s/admin.token", k->data);
    if (read_line(path, k->admin, sizeof k->admin)) return -1;
    if (keel_http_init(&h, k->url, NULL, 2000, &e)) return -1;
    keel_buf_init(&resp, 1 << 16);
    for (;;) {
      int st = 0;
      if (!keel_http_request(&h, "GET", "/readyz", NULL, 0, &st, &resp, &e) && st == 200) break;
      if (keel_mono_ms() > end) {
        fprintf(stderr, "bench: keeld not ready\n");
        keel_buf_free(&resp);
        keel_http_free(&h);
        return -1;
      }
      usleep(20000);
    }
    keel_buf_free(&resp);
    keel_http_free(&h);
  }
  return 0;
}

/* VmRSS in kB, or -1. */
static long keeld_rss_kb(const keeld_t *k) {
  char path[64], line[256];
  long kb = -1;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%d/status", (int)k->pid);
  if (!(f = fopen(path, "r"))) return -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

/* utime + stime of keeld in seconds, or -1. */
static double keeld_cpu_s(const keeld_t *k) {
  char path[64], buf[2048], *p;
  unsigned long ut, st;
  FILE *f;
  size_t n;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)k->pid);
  if (!(f = fopen(path, "r"))) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  if (!(p = strrchr(buf, ')'))) return -1;
  /* after ")": state(3) ... utime is field 14, stime 15 */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void keeld_stop(keeld_t *k) {
  int status = 0;
  if (k->pid > 0) {
    int64_t t0 = keel_mono_ms(), end = t0 + 15000;
    kill(k->pid, SIGTERM);
    while (waitpid(k->pid, &status, WNOHANG) == 0) {
      if (keel_mono_ms() > end) {
        fprintf(stderr, "  keeld did not stop within 15 s of SIGTERM; killing it\n");
        kill(k->pid, SIGKILL);
        waitpid(k->pid, &status, 0);
        break;
      }
      usleep(20000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status))
      fprintf(stderr, "  keeld exited abnormally (status 0x%x)\n", status);
    printf("  keeld exited %.2f s after SIGTERM\n", (double)(keel_mono_ms() - t0) / 1e3);
    fflush(stdout);
  }
  {
    struct stat sb;
    if (!stat(k->log, &sb) && sb.st_size > 0) {
      fprintf(stderr, "  keeld's log (--log-level warn) is not empty:\n");
      show_log(k, 20);
    }
  }
  if (k->dir[0]) rmrf(k->dir);
}

/* ---- keeld's own figures (GET /metrics) -------------------------------------------- */

typedef struct kmetrics {
  double commits, commit_s, syncs, sync_s, audit;
} kmetrics_t;

static double metric(const char *text, const char *name) {
  size_t n = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (!strncmp(p, name, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
  return 0;
}

static void keeld_metrics(const char *url, kmetrics_t *m) {
  keel_http_t h;
  keel_buf_t resp;
  int st = 0;
  memset(m, 0, sizeof *m);
  if (keel_http_init(&h, url, NULL, 5000, NULL)) return;
  keel_buf_init(&resp, 1 << 22);
  if (!keel_http_request(&h, "GET", "/metrics", NULL, 0, &st, &resp, NULL) && st == 200) {
    m->commits = metric(resp.data, "keel_store_commits_total");
    m->commit_s = metric(resp.data, "keel_store_commit_duration_seconds_sum");
    m->syncs = metric(resp.data, "keel_store_sync_duration_seconds_count");
    m->sync_s = metric(resp.data, "keel_store_sync_duration_seconds_sum");
    m->audit = metric(resp.data, "keel_audit_records_appended_total");
  }
  keel_buf_free(&resp);
  keel_http_free(&h);
}

/* ---- one configuration -------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, int n, double p) {
  int r = (int)((p / 100.0) * n + 0.999999);
  if (r < 1) r = 1;
  if (r > n) r = n;
  return v[r - 1];
}

static int enroll_all(bench_t *b, const keeld_t *k) {
  keel_http_t h;
  keel_buf_t resp, body;
  keel_err_t e = {0};
  json_t *v = NULL;
  char token[256] = "";
  int st = 0, rc = -1, next = 0, active = 0, done = 0, failed = 0;

  keel_buf_init(&resp, 1 << 16);
  keel_buf_init(&body, 256);
  keel_buf_printf(&body, "{\"tags\":{\"bench\":\"fanout\"},\"ttl\":\"1h\",\"uses\":%d}", b->n);
  if (keel_http_init(&h, k->url, k->admin, 10000, &e)) goto out;
  if (keel_http_request(&h, "POST", "/v1/agent-tokens", body.data, body.len, &st, &resp, &e) ||
      st != 201 || keel_json_parse(resp.data, resp.len, &v, NULL) || !keel_json_str(v, "token")) {
    fprintf(stderr, "bench: POST /v1/agent-tokens: %d %s %s\n", st, e.msg, resp.data);
    keel_http_free(&h);
    goto out;
  }
  snprintf(token, sizeof token, "%s", keel_json_str(v, "token"));
  keel_http_free(&h);

  while (done < b->n) {
    while (active < ENROLL_PARALLEL && next < b->n) {
      sim_t *s = &b->sims[next++];
      char pk[2 * crypto_sign_PUBLICKEYBYTES + 1];
      xfer_t *x = &s->poll;
      crypto_sign_keypair(s->pk, s->sk);
      keel_hex(pk, s->pk, sizeof s->pk);
      keel_buf_reset(&x->body);
      keel_buf_printf(&x->body,
                      "{\"public_key\":\"%s\",\"hostname\":\"sim-%d\",\"tags\":{\"sim\":\"%d\"}}",
                      pk, s->idx, s->idx);
      keel_buf_reset(&x->auth);
      keel_buf_printf(&x->auth, "Bearer %s", token);
      x->kind = X_ENROLL;
      if (xfer_start(b, x, "/v1/agent/enroll", 30000)) {
        s->enrolled = -1;
        done++;
        failed++;
        continue;
      }
      active++;
    }
    step(b, 10);
    active = 0;
    done = 0;
    failed = 0;
    for (int i = 0; i < next; i++) {
      if (b->sims[i].poll.busy) active++;
      else done++;
      if (b->sims[i].enrolled < 0) failed++;
    }
  }
  if (failed) {
    fprintf(stderr, "bench: %d of %d enrollments failed\n", failed, b->n);
    goto out;
  }
  rc = 0;
out:
  sodium_memzero(token, sizeof token);
  json_decref(v);
  keel_buf_free(&resp);
  keel_buf_free(&body);
  return rc;
}

static void print_errors(const bench_t *b) {
  printf("  errors: transport enroll/poll/result/command %lu/%lu/%lu/%lu, "
         "HTTP %lu/%lu/%lu/%lu, job signature failures %lu, bad jobs %lu, "
         "redelivered %lu, queue overflow %lu\n",
         b->curl_errs[0], b->curl_errs[1], b->curl_errs[2], b->curl_errs[3], b->http_errs[0],
         b->http_errs[1], b->http_errs[2], b->http_errs[3], b->sig_fail, b->bad_job,
         b->redelivered, b->qfull);
}

/* ---- runbook executions -------------------------------------------------------------- */

/* Applies runbook `name`: two command steps on every simulated agent (the
 * enrollment token tagged them all bench=fanout), `conc` of them at a
 * time.  keeld takes YAML whatever the Content-Type; `keel apply` sends
 * it as the JSON client does.  A blocking request is fine here: the agents
 * are settled (each has a long-poll held by keeld, nothing queued) and an
 * apply gives them no job. */
static int rb_apply(const bench_t *b, const char *name, const char *conc) {
  keel_http_t h;
  keel_buf_t doc, resp;
  keel_err_t e = {0};
  int st = 0, rc = -1, h_on = 0;

  keel_buf_init(&doc, 4096);
  keel_buf_init(&resp, 1 << 16);
  if (keel_buf_printf(&doc,
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
                      name, conc))
    goto out;
  if (keel_http_init(&h, b->url, b->admin, 10000, &e)) goto fail;
  h_on = 1;
  if (keel_http_request(&h, "POST", "/v1/apply", doc.data, doc.len, &st, &resp, &e) || st != 200)
    goto fail;
  rc = 0;
  goto out;
fail:
  fprintf(stderr, "bench: POST /v1/apply (runbook %s): %d %s %s\n", name, st, e.msg,
          resp.data ? resp.data : "");
out:
  if (h_on) keel_http_free(&h);
  keel_buf_free(&doc);
  keel_buf_free(&resp);
  return rc;
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
  keel_buf_reset(&x->auth);
  keel_buf_printf(&x->auth, "Bearer %s", b->admin);
  keel_buf_reset(&g->auth);
  keel_buf_printf(&g->auth, "Bearer %s", b->admin);
  x->kind = X_XSTART;
  b->t0_ns = keel_mono_ns();
  limit = b->t0_ns + (int64_t)RB_ROUND_TIMEOUT_MS * 1000000;
  if (xfer_start(b, x, "/v1/executions", RB_ROUND_TIMEOUT_MS)) b->curl_errs[X_XSTART]++;
  while (!b->t_end_ns && keel_mono_ns() < limit) {
    int64_t now = keel_mono_ms();
    int wait = 5;
    if (!x->busy && !b->xid[0]) break; /* the start failed (on_done said why) */
    if (b->xid[0] && !g->busy && now >= next_get) {
      next_get = now + RB_POLL_MS;
      snprintf(path, sizeof path, "/v1/executions/%s?targets=false", b->xid);
      if (xfer_send(b, g, 0, path, 10000)) b->curl_errs[X_XGET]++;
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
      if (xfer_start(b, x, path, 10000)) b->curl_errs[X_XCANCEL]++;
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
  s->sig = b->sig_fail;
  s->bad = b->bad_job;
  s->redelivered = b->redelivered;
  s->qfull = b->qfull;
  s->bad_final = b->bad_final;
}

/* R measured rounds (after RB_WARMUP_ROUNDS) of runbook `name`, and their
 * figures. */
static void rb_rounds_run(bench_t *b, const keeld_t *k, const char *name, const char *conc,
                          int rounds) {
  double *t = calloc((size_t)rounds, sizeof *t), *kt = calloc((size_t)rounds, sizeof *kt),
         *st = calloc((size_t)rounds, sizeof *st);
  double sum = 0, busy = 0, cpu_k0, cpu_s0, cpu_k1, cpu_s1, get_ms0;
  int timeouts = 0, nt = 0, nk = 0, ns = 0;
  unsigned long gets0, errs = 0;
  int64_t t_meas0, t_meas1;
  errsnap_t e0, e1;
  kmetrics_t m0, m1;
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
  keeld_metrics(k->url, &m0);
  cpu_k0 = keeld_cpu_s(k);
  cpu_s0 = self_cpu_s();
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
  cpu_k1 = keeld_cpu_s(k);
  cpu_s1 = self_cpu_s();
  rss = keeld_rss_kb(k);
  keeld_metrics(k->url, &m1);
  errsnap(b, &e1);

  /* a failed start is an HTTP error of its own; a timeout is not */
  for (int i = 0; i < X_NKINDS; i++) errs += e1.curl[i] - e0.curl[i] + e1.http[i] - e0.http[i];
  errs += e1.sig - e0.sig + e1.bad - e0.bad + e1.qfull - e0.qfull + e1.bad_final - e0.bad_final +
          (unsigned long)timeouts;
  qsort(t, (size_t)nt, sizeof *t, cmp_double);
  qsort(kt, (size_t)nk, sizeof *kt, cmp_double);
  qsort(st, (size_t)ns, sizeof *st, cmp_double);
  if (nt)
    printf("  runbook N=%d concurrency=%s: rounds %d  p50 %.1f ms  p99 %.1f ms  max %.1f ms  "
           "mean %.1f ms  (%d steps, %d jobs per round)\n",
           b->n, conc, nt, pct(t, nt, 50), pct(t, nt, 99), t[nt - 1], sum / nt, RB_STEPS,
           RB_STEPS * b->n);
  else
    printf("  runbook N=%d concurrency=%s: no round started\n", b->n, conc);
  if (nt < rounds) printf("    (%d of %d rounds failed to start)\n", rounds - nt, rounds);
  if (nk)
    printf("    keeld's own time (execution created_at -> ended_at): p50 %.0f ms  p99 %.0f ms  max "
           "%.0f ms\n",
           pct(kt, nk, 50), pct(kt, nk, 99), kt[nk - 1]);
  /* what the client-side time is made of: the start's answer, and the GETs
   * that see the end (a GET keeld is slow to answer makes the end late) */
  if (ns && nt)
    printf("    POST /v1/executions answered after p50 %.1f ms  max %.1f ms; status GETs: %.1f per "
           "round, %.1f ms each on average\n",
           pct(st, ns, 50), st[ns - 1], (double)(b->xgets - gets0) / nt,
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
           b->n, conc, nt, pct(t, nt, 50), pct(t, nt, 99), t[nt - 1], sum / nt,
           nk ? pct(kt, nk, 50) : -1.0, (double)(RB_STEPS * b->n) / (sum / nt / 1e3), timeouts,
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
  keeld_t k;
  /* the bench runbooks: the same two steps on all N, all at once or a 10% window */
  const char *const rb_name[] = {"bench-fanout-all", "bench-fanout-tenth"};
  const char *const rb_conc[] = {"100%", "10%"};
  double *t = calloc((size_t)(rounds ? rounds : 1), sizeof *t), sum = 0, cpu_k0, cpu_s0, cpu_k1,
         cpu_s1;
  int timeouts = 0, started = 0;
  int64_t t_enroll, t_meas0, t_meas1;
  long rss;

  if (b) b->ep = -1;
  if (!b || !t) goto out;
  b->timer_ms = -1;
  if (rounds)
    printf("N = %d agents, %d rounds (+%d warm-up)\n", n, rounds, WARMUP_ROUNDS);
  else
    printf("N = %d agents (no command rounds)\n", n);
  fflush(stdout);
  if (keeld_start(&k)) goto out;
  started = 1;
  snprintf(b->url, sizeof b->url, "%s", k.url);
  snprintf(b->admin, sizeof b->admin, "%s", k.admin);
  b->n = n;
  if (!(b->m = curl_multi_init()) || !(b->sims = calloc((size_t)n, sizeof *b->sims)) ||
      (b->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
    goto out;
  curl_multi_setopt(b->m, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(b->m, CURLMOPT_SOCKETDATA, b);
  curl_multi_setopt(b->m, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(b->m, CURLMOPT_TIMERDATA, b);
  /* every agent holds two connections; the cache must not close any */
  curl_multi_setopt(b->m, CURLMOPT_MAXCONNECTS, (long)(2 * n + 16));
  if (xfer_init(b, &b->cmd, X_ADMIN, NULL) || xfer_init(b, &b->xrb, X_XSTART, NULL) ||
      xfer_init(b, &b->xget, X_XGET, NULL))
    goto out;
  for (int i = 0; i < n; i++) {
    sim_t *s = &b->sims[i];
    s->idx = i;
    if (xfer_init(b, &s->poll, X_POLL, s) || xfer_init(b, &s->res, X_RESULT, s)) goto out;
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
    unsigned long c0 = b->new_conns;
    kmetrics_t m0, m1;
    keeld_metrics(k.url, &m0);
    cpu_k0 = keeld_cpu_s(&k);
    cpu_s0 = self_cpu_s();
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
    cpu_k1 = keeld_cpu_s(&k);
    cpu_s1 = self_cpu_s();
    rss = keeld_rss_kb(&k);
    keeld_metrics(k.url, &m1);

    for (int r = 0; r < rounds; r++) sum += t[r];
    qsort(t, (size_t)rounds, sizeof *t, cmp_double);
    printf("  round time (POST /v1/commands -> N-th result acked): p50 %.1f ms  p99 %.1f ms  max "
           "%.1f ms  mean %.1f ms  (%d timed out)\n",
           pct(t, rounds, 50), pct(t, rounds, 99), t[rounds - 1], sum / rounds, timeouts);
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
    printf("  new connections during measured rounds: %lu\n", b->new_conns - c0);
    print_errors(b);
    printf("  summary: N=%d rounds=%d p50=%.1fms p99=%.1fms max=%.1fms mean=%.1fms "
           "jobs/s=%.0f keeld_rss=%ldkB timeouts=%d errors=%lu sigfail=%lu\n",
           n, rounds, pct(t, rounds, 50), pct(t, rounds, 99), t[rounds - 1], sum / rounds,
           (double)n / (sum / rounds / 1e3), rss, timeouts,
           b->curl_errs[0] + b->curl_errs[1] + b->curl_errs[2] + b->curl_errs[3] +
               b->http_errs[0] + b->http_errs[1] + b->http_errs[2] + b->http_errs[3],
           b->sig_fail);
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
        xfer_free(b, &b->sims[i].poll);
        xfer_free(b, &b->sims[i].res);
        sodium_memzero(b->sims[i].sk, sizeof b->sims[i].sk);
      }
    if (b->m) {
      xfer_free(b, &b->cmd);
      xfer_free(b, &b->xrb);
      xfer_free(b, &b->xget);
    }
    free(b->sims);
    if (b->m) curl_multi_cleanup(b->m);
    if (b->ep >= 0) close(b->ep);
    sodium_memzero(b->admin, sizeof b->admin);
  }
  if (started) keeld_stop(&k);
  free(b);
  free(t);
}

int main(int argc, char **argv) {
  int agents = 0, rounds = 0, rb = -1, no_cmd = 0; /* rb -1: the configuration's default */
  struct rlimit rl;
  keel_err_t e = {0};

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
  signal(SIGPIPE, SIG_IGN);
  /* two connections per simulated agent */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (keel_crypto_init() || keel_http_global_init(&e)) {
    fprintf(stderr, "bench-fanout: init: %s\n", e.msg);
    return 1;
  }
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
  keel_http_global_cleanup();
  return 0;
}
