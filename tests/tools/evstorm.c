/* evstorm — many simulated agents, for the automation storm test
 * (tests/integration/storm.sh).
 *
 *   evstorm enroll URL ENROLL_TOKEN N STATE   enrolls N hosts (storm-0 ..
 *                                             storm-N-1, tag storm=1) for
 *                                             real: Ed25519 keys, POST
 *                                             /v1/agent/enroll; STATE gets
 *                                             one "AGENT_ID SECRET_HEX
 *                                             SERVER_KEY_HEX" line each
 *   evstorm post URL STATE TYPE SERVICE       every host of STATE posts one
 *                                             agent event TYPE (service.down,
 *                                             service.up) about SERVICE,
 *                                             signed like keel-agent's, all
 *                                             requests in flight at once
 *   evstorm react URL STATE N SERVICE         N triggers, one host each: with
 *                                             the host's long-poll held, it
 *                                             posts service.down; prints
 *                                             p50/p99 of event acknowledged
 *                                             (durable) -> job at the agent
 *
 * The hosts are simagent.h's simulated agents (jobs are taken only once
 * their signature and agent id check out).  Requests run on one curl multi
 * handle (enroll: 64 at a time; post: all of them together: the storm).
 * stdout: one line of figures; exit 0 when every request got a 2xx answer,
 * else 1 with the first errors on stderr. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/buf.h"
#include "keel/crypto.h"
#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"
#include "simagent.h"

typedef struct host {
  ksim_agent_t a;
  ksim_xfer_t x;
  long status;
} host_t;

typedef struct run {
  int bad, shown;
} run_t;

static void on_done(void *ud, ksim_xfer_t *x, CURLcode cc, long status) {
  run_t *r = ud;
  host_t *h = x->ud;
  h->status = status;
  if (cc != CURLE_OK || status < 200 || status > 299) {
    if (r->shown++ < 5)
      fprintf(stderr, "evstorm: %s: %s %ld %.200s\n", h->a.id[0] ? h->a.id : "-",
              curl_easy_strerror(cc), status, x->in.data ? x->in.data : "");
    r->bad++;
  }
}

/* POSTs each host's x->body (x->auth already signed) to path, at most
 * `parallel` at a time; each host's status is set.  Returns how many got
 * no 2xx (errors shown). */
static int run_all(const char *url, host_t *hosts, int n, int parallel, const char *path) {
  ksim_loop_t l;
  run_t r = {0};
  int next = 0, running = 0;
  if (ksim_loop_init(&l, url, parallel + 8L, on_done, &r)) return n;
  while (next < n || running) {
    while (next < n && running < parallel) {
      if (ksim_xfer_send(&l, &hosts[next].x, "POST", path, NULL, 60000)) {
        hosts[next].status = 0;
        r.bad++;
      }
      next++;
    }
    ksim_loop_step(&l, 100);
    running = 0;
    for (int i = 0; i < next; i++) running += hosts[i].x.busy;
  }
  ksim_loop_free(&l);
  return r.bad;
}

static void unload(host_t *hosts, int n) {
  for (int i = 0; i < n; i++) {
    ksim_xfer_free(NULL, &hosts[i].x);
    sodium_memzero(hosts[i].a.sk, sizeof hosts[i].a.sk);
  }
  free(hosts);
}

/* The hosts of STATE (at most max; 0: all) with their transfers ready. */
static host_t *load(const char *state, int max, int *n) {
  host_t *hosts = NULL;
  char line[512];
  size_t cap = 0;
  FILE *f = fopen(state, "r");
  *n = 0;
  if (!f) return NULL;
  while (fgets(line, sizeof line, f) && (!max || *n < max)) {
    char id[KSIM_ID_LEN], sk[2 * KEEL_AGENT_SK_BYTES + 9], spk[2 * KEEL_AGENT_PK_BYTES + 9];
    host_t *h;
    if (sscanf(line, "%47s %136s %72s", id, sk, spk) != 3) continue;
    if (!(h = keel_grow(hosts, &cap, (size_t)*n, sizeof *hosts, 256))) break;
    hosts = h;
    h = &hosts[(*n)++];
    memset(h, 0, sizeof *h);
    h->a.idx = *n - 1;
    snprintf(h->a.id, sizeof h->a.id, "%s", id);
    if (keel_unhex(h->a.sk, sizeof h->a.sk, sk) || keel_unhex(h->a.spk, sizeof h->a.spk, spk)) {
      (*n)--;
      break;
    }
  }
  fclose(f);
  /* the transfers point at their hosts: only once the array stays put */
  for (int i = 0; i < *n; i++)
    if (ksim_xfer_init(&hosts[i].x, 0, &hosts[i])) {
      unload(hosts, *n);
      return NULL;
    }
  return hosts;
}

static int enroll(const char *url, const char *token, int n, const char *state) {
  ksim_agent_t *a = calloc((size_t)n, sizeof *a);
  FILE *f;
  int bad;
  int64_t t0 = keel_mono_ms();
  if (!a || !(f = fopen(state, "w"))) {
    free(a);
    return 2;
  }
  bad = ksim_enroll(url, token, a, n, "storm-", "{\"storm\":\"1\"}", 64);
  for (int i = 0; i < n; i++) {
    char sk[2 * KEEL_AGENT_SK_BYTES + 1], spk[2 * KEEL_AGENT_PK_BYTES + 1];
    if (!a[i].id[0]) continue;
    keel_hex(sk, a[i].sk, sizeof a[i].sk);
    keel_hex(spk, a[i].spk, sizeof a[i].spk);
    fprintf(f, "%s %s %s\n", a[i].id, sk, spk);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(a[i].sk, sizeof a[i].sk);
  }
  fclose(f);
  printf("enrolled %d of %d hosts in %lld ms\n", n - bad, n, (long long)(keel_mono_ms() - t0));
  free(a);
  return bad ? 1 : 0;
}

/* h's event body: TYPE about SERVICE, now. */
static int event_body(host_t *h, const char *type, const char *service) {
  char ts[KEEL_TIME_STRLEN];
  keel_time_format(ts, keel_now_ms());
  keel_buf_reset(&h->x.body);
  return keel_buf_printf(&h->x.body,
                         "{\"events\":[{\"type\":\"%s\",\"subject\":\"%s/%s\",\"time\":\"%s\","
                         "\"data\":{\"service\":\"%s\",\"labels\":{\"service\":\"%s\"}}}]}",
                         type, h->a.id, service, ts, service, service) ||
                 ksim_xfer_sign(&h->x, &h->a, "/v1/agent/events")
             ? -1
             : 0;
}

static int post(const char *url, const char *state, const char *type, const char *service) {
  int n, bad;
  int64_t t0;
  host_t *hosts = load(state, 0, &n);
  if (!hosts) return 2;
  for (int i = 0; i < n; i++)
    if (event_body(&hosts[i], type, service)) {
      unload(hosts, n);
      return 2;
    }
  t0 = keel_mono_ms();
  bad = run_all(url, hosts, n, n, "/v1/agent/events");
  printf("posted %d %s events (%d refused) in %lld ms\n", n, type, bad,
         (long long)(keel_mono_ms() - t0));
  unload(hosts, n);
  return bad ? 1 : 0;
}

/* ---- react: event acknowledged -> its remediation job at the agent -------------- */

typedef struct react_ctx {
  host_t *h;
  ksim_xfer_t poll;
  ksim_counts_t cnt;
  json_t *jobs; /* the poll's answer's jobs */
  int done, failed;
} react_ctx_t;

static void on_react(void *ud, ksim_xfer_t *x, CURLcode cc, long status) {
  react_ctx_t *c = ud;
  c->done++;
  if (cc != CURLE_OK || status != 200) {
    c->failed++;
    fprintf(stderr, "evstorm: %s: %s %ld %.200s\n", x == &c->poll ? "poll" : "request",
            curl_easy_strerror(cc), status, x->in.data ? x->in.data : "");
    return;
  }
  if (x == &c->poll) {
    json_t *v = NULL;
    if (!keel_json_parse(x->in.data, x->in.len, &v, NULL))
      ksim_take_jobs(&c->h->a, json_object_get(v, "jobs"), NULL, NULL, &c->cnt);
    json_decref(v);
  }
}

/* One host per trigger (a host's own events right after a rule ran there
 * are that rule's: the loop guard): its long-poll is held by keeld, it
 * posts service.down, and the time from the event's acknowledgement (the
 * event is durable) to the job arriving on the poll is measured; the job
 * is answered (exit 0) so the execution ends. */
static int react(const char *url, const char *state, int rounds, const char *service) {
  int n = 0, done = 0, bad = 0;
  host_t *hosts = load(state, rounds, &n);
  int64_t *lat = calloc((size_t)rounds + 1, sizeof *lat),
          *tot = calloc((size_t)rounds + 1, sizeof *tot);
  react_ctx_t c = {0};
  ksim_loop_t l;
  if (!hosts || !lat || !tot || ksim_xfer_init(&c.poll, 1, NULL) ||
      ksim_loop_init(&l, url, 8, on_react, &c)) {
    free(lat);
    free(tot);
    return 2;
  }
  for (int i = 0; i < n; i++) {
    host_t *h = &hosts[i];
    c.h = h;
    c.done = c.failed = 0;
    h->a.qn = 0;
    /* the poll reaches keeld and is held before the event goes */
    if (ksim_poll_body(&h->a, &c.poll.body) ||
        ksim_agent_post(&l, &c.poll, &h->a, "/v1/agent/poll", NULL, 60000))
      return 2;
    for (int k = 0; k < 5; k++) ksim_loop_step(&l, 2);
    if (event_body(h, "service.down", service) ||
        ksim_xfer_send(&l, &h->x, "POST", "/v1/agent/events", NULL, 60000))
      return 2;
    while (c.done < 2) ksim_loop_step(&l, 100);
    if (c.failed || h->a.qn != 1) {
      if (bad++ < 5)
        fprintf(stderr, "evstorm: round %d: no job (%.200s)\n", i,
                c.poll.in.data ? c.poll.in.data : "");
      continue;
    }
    lat[done] = (c.poll.t_done_ns - h->x.t_done_ns) / 1000;
    tot[done++] = (c.poll.t_done_ns - h->x.t_start_ns) / 1000;
    /* answer it: the execution ends */
    c.done = 0;
    if (!ksim_result_body(&h->a, &h->x.body, 0) &&
        !ksim_agent_post(&l, &h->x, &h->a, "/v1/agent/results", NULL, 60000))
      while (c.done < 1) ksim_loop_step(&l, 100);
  }
  if (done) {
    qsort(lat, (size_t)done, sizeof *lat, ksim_cmp_i64);
    qsort(tot, (size_t)done, sizeof *tot, ksim_cmp_i64);
    printf("reaction over %d triggers: event acknowledged (durable) -> job at the agent: "
           "p50 %.2f ms, p99 %.2f ms, max %.2f ms; event sent -> job: p50 %.2f ms, p99 %.2f ms\n",
           done, lat[done / 2] / 1e3, lat[(done * 99) / 100] / 1e3, lat[done - 1] / 1e3,
           tot[done / 2] / 1e3, tot[(done * 99) / 100] / 1e3);
  }
  if (c.cnt.sig_fail || c.cnt.bad_job)
    fprintf(stderr, "evstorm: %lu jobs with a bad signature, %lu malformed or for another agent\n",
            c.cnt.sig_fail, c.cnt.bad_job);
  ksim_xfer_free(&l, &c.poll);
  ksim_loop_free(&l);
  unload(hosts, n);
  free(lat);
  free(tot);
  return bad ? 1 : 0;
}

int main(int argc, char **argv) {
  int rc = 2;
  if (ksim_init("evstorm")) return 2;
  if (argc == 6 && !strcmp(argv[1], "enroll"))
    rc = enroll(argv[2], argv[3], atoi(argv[4]), argv[5]);
  else if (argc == 6 && !strcmp(argv[1], "post"))
    rc = post(argv[2], argv[3], argv[4], argv[5]);
  else if (argc == 6 && !strcmp(argv[1], "react"))
    rc = react(argv[2], argv[3], atoi(argv[4]), argv[5]);
  else
    fprintf(stderr, "usage: evstorm enroll URL ENROLL_TOKEN N STATE\n"
                    "       evstorm post URL STATE TYPE SERVICE\n"
                    "       evstorm react URL STATE N SERVICE\n");
  ksim_cleanup();
  return rc;
}
