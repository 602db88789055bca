/* bench-metrics-sink — a stand-in keeld for keel-agent's metrics push:
 * answers the agent's routes well enough for it to run, decodes every
 * metric batch with keel_mb_decode, and prints what it took when stopped.
 * For benchmarks (bench/agent_metrics.sh) and manual checks; it verifies
 * no signature.
 *
 *   bench-metrics-sink [--port N] [--hold-ms MS] [--metrics-status CODE]
 *
 * Prints "http://127.0.0.1:PORT" on stdout once listening.  Routes:
 *   POST /v1/agent/poll       held MS (default 5000), then {"jobs":[],...}
 *   POST /v1/agent/metrics    decoded; 200 {} (or CODE), 400 when malformed
 *   POST /v1/agent/inventory  200 {}
 *   anything else             404
 * On SIGTERM/SIGINT: one line of totals on stdout, exit 0 (out_of_order:
 * batches taken with a sample not newer than every earlier batch's).
 *
 * One thread, poll(); at most 64 connections; request bodies up to 16 MiB.
 */
#define _GNU_SOURCE /* strcasestr, accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/metricbatch.h"

#define MAXC 64
#define HEAD_MAX 16384

typedef struct conn {
  int fd;
  keel_buf_t in;
  int64_t hold_until; /* a held poll answers then; 0: none */
} conn_t;

typedef struct sink {
  long hold_ms;
  int metrics_status;
  unsigned long long batches, series, samples, bytes, bad, ctype_ok, polls;
  unsigned long long out_of_order; /* batches with a sample older than an earlier batch's */
  int64_t last_max;                /* newest sample of the batches so far */
  int64_t bmin, bmax;              /* of the batch being decoded */
} sink_t;

static volatile sig_atomic_t stop;
static void on_sig(int s) {
  (void)s;
  stop = 1;
}

static int64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void reply(int fd, int status, const char *body) {
  char h[256];
  int n = snprintf(h, sizeof h,
                   "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "Connection: keep-alive\r\n\r\n",
                   status, strlen(body));
  /* Small writes to a local socket: a short write is not worth handling. */
  if (write(fd, h, (size_t)n) < 0 || write(fd, body, strlen(body)) < 0) return;
}

static int count_series(void *ud, const keel_mb_label_t *l, size_t nl, const int64_t *t,
                        const double *v, size_t n) {
  sink_t *s = ud;
  (void)l, (void)nl, (void)v;
  s->series++;
  s->samples += n;
  if (t[0] < s->bmin) s->bmin = t[0];
  if (t[n - 1] > s->bmax) s->bmax = t[n - 1];
  return 0;
}

/* Handles every complete request in c->in; 0, or -1 to close. */
static int serve(sink_t *s, conn_t *c) {
  for (;;) {
    char *end = strstr(c->in.data ? c->in.data : "", "\r\n\r\n"), *cl, *ct, path[256];
    size_t head, blen = 0;
    if (c->hold_until) return 0; /* one request at a time */
    if (!end) return c->in.len > HEAD_MAX ? -1 : 0;
    head = (size_t)(end - c->in.data) + 4;
    if (sscanf(c->in.data, "%*s %255s", path) != 1) return -1;
    if ((cl = strcasestr(c->in.data, "\r\nContent-Length:")) && cl < end)
      blen = strtoul(cl + 17, NULL, 10);
    if (c->in.len < head + blen) return 0;
    if (!strcmp(path, "/v1/agent/poll")) {
      s->polls++;
      c->hold_until = mono_ms() + s->hold_ms;
    } else if (!strcmp(path, "/v1/agent/metrics")) {
      keel_err_t e;
      ct = strcasestr(c->in.data, "\r\nContent-Type: " KEEL_MB_CONTENT_TYPE "\r\n");
      if (ct && ct < end) s->ctype_ok++;
      s->batches++;
      s->bytes += blen;
      s->bmin = INT64_MAX;
      s->bmax = INT64_MIN;
      if (keel_mb_decode(c->in.data + head, blen, count_series, s, &e)) {
        s->bad++;
        fprintf(stderr, "bench-metrics-sink: bad batch: %s\n", e.msg);
        reply(c->fd, 400, "{\"error\":{\"code\":\"invalid\",\"message\":\"bad batch\"}}");
      } else {
        /* Batches must arrive in time order, spooled ones included. */
        if (s->bmin != INT64_MAX && s->bmin <= s->last_max) s->out_of_order++;
        if (s->metrics_status == 200 && s->bmax > s->last_max) s->last_max = s->bmax;
        reply(c->fd, s->metrics_status, s->metrics_status == 200 ? "{}" : "{\"error\":{}}");
      }
    } else if (!strcmp(path, "/v1/agent/inventory")) {
      reply(c->fd, 200, "{}");
    } else {
      reply(c->fd, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}");
    }
    memmove(c->in.data, c->in.data + head + blen, c->in.len - head - blen);
    c->in.len -= head + blen;
    c->in.data[c->in.len] = '\0';
  }
}

int main(int argc, char **argv) {
  sink_t s = {.hold_ms = 5000, .metrics_status = 200};
  conn_t cs[MAXC];
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t al = sizeof a;
  int port = 0, lfd, one = 1;

  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--hold-ms")) s.hold_ms = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--metrics-status")) s.metrics_status = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "usage: %s [--port N] [--hold-ms MS] [--metrics-status CODE]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_sig);
  signal(SIGINT, on_sig);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 16) ||
      getsockname(lfd, (struct sockaddr *)&a, &al)) {
    perror("bench-metrics-sink: listen");
    return 1;
  }
  printf("http://127.0.0.1:%d\n", ntohs(a.sin_port));
  fflush(stdout);
  for (int i = 0; i < MAXC; i++) cs[i].fd = -1;
  while (!stop) {
    struct pollfd p[MAXC + 1];
    int64_t now = mono_ms();
    int wait = 1000;
    p[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (int i = 0; i < MAXC; i++) {
      p[i + 1] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
      if (cs[i].fd >= 0 && cs[i].hold_until) {
        int64_t d = cs[i].hold_until - now;
        if (d < wait) wait = d < 0 ? 0 : (int)d;
      }
    }
    if (poll(p, MAXC + 1, wait) < 0 && errno != EINTR) break;
    if (p[0].revents & POLLIN) {
      int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      for (int i = 0; fd >= 0 && i < MAXC; i++)
        if (cs[i].fd < 0) {
          cs[i].fd = fd;
          cs[i].hold_until = 0;
          keel_buf_init(&cs[i].in, HEAD_MAX + KEEL_MB_MAX_BATCH);
          fd = -1;
        }
      if (fd >= 0) close(fd);
    }
    now = mono_ms();
    for (int i = 0; i < MAXC; i++) {
      conn_t *c = &cs[i];
      int bad = 0;
      if (c->fd < 0) continue;
      if (c->hold_until && now >= c->hold_until) {
        c->hold_until = 0;
        reply(c->fd, 200, "{\"jobs\":[],\"heartbeat_ms\":5000}");
      }
      if (p[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) {
        char b[65536];
        ssize_t r = read(c->fd, b, sizeof b);
        if (r <= 0 || keel_buf_append(&c->in, b, (size_t)r)) bad = 1;
      }
      if (!bad && serve(&s, c)) bad = 1;
      if (bad) {
        close(c->fd);
        c->fd = -1;
        keel_buf_free(&c->in);
      }
    }
  }
  for (int i = 0; i < MAXC; i++)
    if (cs[i].fd >= 0) {
      close(cs[i].fd);
      keel_buf_free(&cs[i].in);
    }
  close(lfd);
  printf("batches=%llu series=%llu samples=%llu bytes=%llu bad=%llu content_type_ok=%llu "
         "out_of_order=%llu polls=%llu\n",
         s.batches, s.series, s.samples, s.bytes, s.bad, s.ctype_ok, s.out_of_order, s.polls);
  fflush(stdout);
  return 0;
}
