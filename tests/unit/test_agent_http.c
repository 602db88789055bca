/* Unit tests for src/agent/conn_plain.c: the http:// backend of ka_conn_*
 * against a small HTTP server running in a thread of the test (127.0.0.1,
 * port 0), which answers each request the way the test asks.  The tests
 * named *_curl run the same exchanges through conn_curl.c (libcurl loaded
 * with dlopen), swapped in by hand since it normally serves https only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "conn_be.h"
#include "keel/crypto.h"
#include "keel/time.h"
#include "testsrv.h"

enum mode {
  M_LEN,         /* 200 with Content-Length, head and body in separate writes */
  M_CHUNKED,     /* 200 chunked, dribbled a few bytes at a time, with a trailer */
  M_CONN_CLOSE,  /* 200 with Connection: close, then close */
  M_CLOSE_AFTER, /* 200 keep-alive, then close at once (an idle timeout) */
  M_DROP_REUSED, /* answer a connection's first request; close on its second */
  M_DROP,        /* close without answering */
  M_SILENT,      /* never answer */
  M_BIG_LEN,     /* announce a body over the cap */
  M_BIG_CHUNKED, /* stream chunks past the cap */
  M_BIG_HEAD,    /* a header block over 16 KiB */
  M_EOF_BODY,    /* HTTP/1.0, no length: the body runs to the close */
  M_CONTINUE,    /* 100 Continue first, then 200 */
};

struct srv {
  int lfd, stop[2], port;
  pthread_t th;
  atomic_int mode, accepts, requests, eofs;
  pthread_mutex_t mu;
  char line[256], host[128], auth[4][512], body[256];
  int nauth;
};

struct fx {
  struct srv s;
  ka_identity_t id;
  ka_conn_t c;
  char base[128];
  int curl; /* the libcurl backend */
};

/* ---- the server ------------------------------------------------------------ */

static void header_value(const char *head, const char *name, char *out, size_t outsz) {
  size_t nl = strlen(name);
  out[0] = '\0';
  for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
    const char *h = l + 2;
    if (!strncasecmp(h, name, nl) && h[nl] == ':') {
      const char *v = h + nl + 1, *e = strstr(v, "\r\n");
      while (*v == ' ') v++;
      snprintf(out, outsz, "%.*s", (int)(e - v), v);
      return;
    }
  }
}

/* Reads one request: 0, 1 at end of stream, -1 when stopping. */
static int srv_read_request(struct srv *s, int fd) {
  char buf[65536], cl[32];
  size_t len = 0, hlen, blen;
  char *end;

  for (;;) {
    ssize_t r;
    buf[len] = '\0';
    if ((end = strstr(buf, "\r\n\r\n"))) break;
    if (ts_wait(s->stop[0], fd)) return -1;
    r = read(fd, buf + len, sizeof buf - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 1;
    len += (size_t)r;
  }
  hlen = (size_t)(end + 4 - buf);
  header_value(buf, "Content-Length", cl, sizeof cl);
  blen = (size_t)strtoul(cl, NULL, 10);
  while (len < hlen + blen) {
    ssize_t r;
    if (ts_wait(s->stop[0], fd)) return -1;
    r = read(fd, buf + len, sizeof buf - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 1;
    len += (size_t)r;
  }
  buf[hlen - 2] = '\0';
  pthread_mutex_lock(&s->mu);
  snprintf(s->line, sizeof s->line, "%.*s", (int)strcspn(buf, "\r"), buf);
  header_value(buf, "Host", s->host, sizeof s->host);
  header_value(buf, "Authorization", s->auth[s->nauth % 4], sizeof s->auth[0]);
  s->nauth++;
  snprintf(s->body, sizeof s->body, "%.*s", (int)blen, buf + hlen);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static void answer_len(int fd, int n) {
  char body[64], head[256];
  snprintf(body, sizeof body, "{\"n\":%d}", n);
  snprintf(head, sizeof head,
           "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
           strlen(body));
  ts_sends(fd, head);
  usleep(5000); /* head and body in separate segments */
  ts_sends(fd, body);
}

static void *srv_main(void *ud) {
  struct srv *s = ud;

  for (;;) {
    int fd, on_conn = 0;
    if (ts_wait(s->stop[0], s->lfd)) break;
    if ((fd = accept(s->lfd, NULL, NULL)) < 0) continue;
    s->accepts++;
    for (;;) {
      int r = srv_read_request(s, fd), n, keep = 1;
      if (r) {
        if (r == 1) s->eofs++;
        break;
      }
      n = ++s->requests;
      on_conn++;
      switch ((enum mode)s->mode) {
      case M_LEN: answer_len(fd, n); break;
      case M_CHUNKED:
        ts_dribble(fd,
                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\nworld-0123\r\n0\r\nX-Trailer: yes\r\n\r\n",
                   3);
        break;
      case M_CONN_CLOSE:
        ts_sends(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
        keep = 0;
        break;
      case M_CLOSE_AFTER:
        answer_len(fd, n);
        keep = 0;
        break;
      case M_DROP_REUSED:
        if (on_conn == 1) answer_len(fd, n);
        else keep = 0;
        break;
      case M_DROP: keep = 0; break;
      case M_SILENT:
        /* Until the client gives up and closes. */
        while (ts_wait(s->stop[0], fd) == 0) {
          char b[256];
          if (read(fd, b, sizeof b) <= 0) break;
        }
        keep = 0;
        break;
      case M_BIG_LEN:
        ts_sends(fd, "HTTP/1.1 200 OK\r\nContent-Length: 8388609\r\n\r\n{");
        keep = 0;
        break;
      case M_BIG_CHUNKED: {
        static char chunk[(1 << 20) + 16];
        memset(chunk, 'x', sizeof chunk);
        ts_sends(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (int i = 0; i < 9; i++) {
          ts_sends(fd, "100000\r\n");
          ts_send(fd, chunk, 1 << 20);
          ts_sends(fd, "\r\n");
        }
        ts_sends(fd, "0\r\n\r\n");
        keep = 0;
        break;
      }
      case M_BIG_HEAD: {
        static char pad[20000];
        memset(pad, 'a', sizeof pad - 1);
        ts_sends(fd, "HTTP/1.1 200 OK\r\nX-Pad: ");
        ts_sends(fd, pad);
        ts_sends(fd, "\r\nContent-Length: 2\r\n\r\n{}");
        keep = 0;
        break;
      }
      case M_EOF_BODY:
        ts_sends(fd, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"eof\":");
        usleep(5000);
        ts_sends(fd, "1}");
        keep = 0;
        break;
      case M_CONTINUE:
        ts_sends(fd, "HTTP/1.1 100 Continue\r\n\r\n");
        usleep(5000);
        answer_len(fd, n);
        break;
      }
      if (!keep) break;
    }
    close(fd);
  }
  return NULL;
}

static int srv_start(struct srv *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  if (ts_listen(s->stop, &s->lfd, &s->port, 16)) return -1;
  return pthread_create(&s->th, NULL, srv_main, s) ? -1 : 0;
}

static void srv_stop(struct srv *s) {
  ts_join(s->stop, s->th);
  ts_close(s->stop, s->lfd);
  pthread_mutex_destroy(&s->mu);
}

/* ---- the client ------------------------------------------------------------ */

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  keel_err_t e;

  if (!f || keel_crypto_init() || srv_start(&f->s)) return -1;
  ka_identity_keygen(&f->id);
  strcpy(f->id.agent_id, "agt_test");
  snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d/keel/", f->s.port);
  if (ka_conn_init(&f->c, f->base, &f->id, NULL, &e)) {
    fprintf(stderr, "ka_conn_init: %s\n", e.msg);
    return -1;
  }
  *state = f;
  return 0;
}

static int setup_curl(void **state) {
  struct fx *f;
  keel_err_t e;

  if (setup(state)) return -1;
  f = *state;
  f->curl = 1;
  f->c.ops->free(&f->c);
  f->c.ops = &ka_conn_curl;
  if (f->c.ops->init(&f->c, &e)) {
    fprintf(stderr, "curl backend: %s\n", e.msg);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  ka_conn_free(&f->c);
  srv_stop(&f->s);
  free(f);
  return 0;
}

/* One POST on the push transfer, waited for (at most 10 s). */
static ka_xfer_t *post(struct fx *f, int mode, long timeout_ms) {
  ka_xfer_t *x = &f->c.push;
  int64_t end = keel_mono_ms() + 10000;
  keel_err_t e;

  f->s.mode = mode;
  if (ka_conn_post(&f->c, x, "/v1/agent/poll", strdup("{\"running\":[]}"), timeout_ms, &e))
    fail_msg("ka_conn_post: %s", e.msg);
  while (x->active && keel_mono_ms() < end) ka_conn_wait(&f->c, NULL, 0, 1000);
  assert_false(x->active);
  assert_true(x->done);
  x->done = 0;
  return x;
}

static void assert_ok(const ka_xfer_t *x, const char *body) {
  if (x->cc) fail_msg("transport error %d: %s", x->cc, ka_conn_strerror(x));
  assert_int_equal(x->status, 200);
  assert_string_equal(x->resp.data ? x->resp.data : "", body);
}

static void test_content_length(void **state) {
  struct fx *f = *state;
  keel_agent_auth_t a;
  keel_err_t e;
  char hp[64];

  assert_ok(post(f, M_LEN, 5000), "{\"n\":1}");
  /* The request as sent: prefix, Host, a signature over prefix + route. */
  assert_string_equal(f->s.line, "POST /keel/v1/agent/poll HTTP/1.1");
  snprintf(hp, sizeof hp, "127.0.0.1:%d", f->s.port);
  assert_string_equal(f->s.host, hp);
  assert_string_equal(f->s.body, "{\"running\":[]}");
  assert_int_equal(keel_agent_auth_parse(f->s.auth[0], &a, &e), 0);
  assert_string_equal(a.agent_id, "agt_test");
  assert_int_equal(keel_agent_verify_request(&a, f->id.pk, "POST", "/keel/v1/agent/poll",
                                             "{\"running\":[]}", 14, &e),
                   0);
}

static void test_chunked(void **state) {
  struct fx *f = *state;
  assert_ok(post(f, M_CHUNKED, 5000), "hello world-0123");
  /* The trailer was consumed: the connection is still usable. */
  assert_ok(post(f, M_LEN, 5000), "{\"n\":2}");
  assert_int_equal(f->s.accepts, 1);
}

static void test_keepalive_reuse(void **state) {
  struct fx *f = *state;
  assert_ok(post(f, M_LEN, 5000), "{\"n\":1}");
  assert_ok(post(f, M_CONTINUE, 5000), "{\"n\":2}");
  assert_ok(post(f, M_LEN, 5000), "{\"n\":3}");
  assert_int_equal(f->s.accepts, 1);
}

static void test_server_closed_idle(void **state) {
  struct fx *f = *state;
  assert_ok(post(f, M_CLOSE_AFTER, 5000), "{\"n\":1}");
  usleep(50000); /* the close has arrived */
  assert_ok(post(f, M_LEN, 5000), "{\"n\":2}");
  assert_int_equal(f->s.accepts, 2);
}

static void test_reused_dropped_resent(void **state) {
  struct fx *f = *state;
  assert_ok(post(f, M_DROP_REUSED, 5000), "{\"n\":1}");
  /* The server reads the second request on the kept connection and closes
   * it unanswered: sent again, once, on a new connection, signed afresh. */
  assert_ok(post(f, M_DROP_REUSED, 5000), "{\"n\":3}");
  assert_int_equal(f->s.accepts, 2);
  assert_int_equal(f->s.requests, 3);
  assert_int_equal(f->s.nauth, 3);
  if (!f->curl) assert_string_not_equal(f->s.auth[1], f->s.auth[2]); /* curl resends as is */
}

static void test_fresh_dropped_fails(void **state) {
  struct fx *f = *state;
  ka_xfer_t *x = post(f, M_DROP, 5000);
  assert_int_equal(x->cc, KA_XE_IO);
  assert_int_equal(x->status, 0);
  assert_int_equal(f->s.accepts, 1); /* a new connection is not retried */
  assert_ok(post(f, M_LEN, 5000), "{\"n\":2}");
}

static void test_response_over_cap(void **state) {
  struct fx *f = *state;
  ka_xfer_t *x = post(f, M_BIG_LEN, 5000);
  assert_int_equal(x->cc, KA_XE_TOOBIG);
  assert_non_null(strstr(ka_conn_strerror(x), "cap"));
  x = post(f, M_BIG_CHUNKED, 10000);
  assert_int_equal(x->cc, KA_XE_TOOBIG);
  assert_int_equal(x->resp.len, 0);
  if (f->curl) return; /* curl's own header cap is larger */
  x = post(f, M_BIG_HEAD, 5000);
  assert_int_equal(x->cc, KA_XE_TOOBIG);
  assert_ok(post(f, M_LEN, 5000), "{\"n\":4}");
}

static void test_timeout(void **state) {
  struct fx *f = *state;
  int64_t t0 = keel_mono_ms(), dt;
  ka_xfer_t *x = post(f, M_SILENT, 300);
  dt = keel_mono_ms() - t0;
  assert_int_equal(x->cc, KA_XE_TIMEOUT);
  assert_true(dt >= 290 && dt < 3000);
  assert_ok(post(f, M_LEN, 5000), "{\"n\":2}");
}

static void test_connection_close(void **state) {
  struct fx *f = *state;
  assert_ok(post(f, M_CONN_CLOSE, 5000), "{}");
  assert_ok(post(f, M_CONN_CLOSE, 5000), "{}");
  assert_int_equal(f->s.accepts, 2);
  /* HTTP/1.0 with the body running to the close */
  assert_ok(post(f, M_EOF_BODY, 5000), "{\"eof\":1}");
  assert_int_equal(f->s.accepts, 3);
}

static void test_idle_connection_closed(void **state) {
  struct fx *f = *state;
  int64_t end;
  assert_ok(post(f, M_LEN, 5000), "{\"n\":1}");
  /* An unused kept connection is let go within a few seconds, so an idle
   * agent holds only its long-poll. */
  end = keel_mono_ms() + 4000;
  while (f->s.eofs == 0 && keel_mono_ms() < end) ka_conn_wait(&f->c, NULL, 0, 500);
  assert_int_equal(f->s.eofs, 1);
  assert_ok(post(f, M_LEN, 5000), "{\"n\":2}");
  assert_int_equal(f->s.accepts, 2);
}

static void test_extra_fds_and_refused(void **state) {
  struct fx *f = *state;
  struct pollfd pf[1];
  int p[2];
  ka_conn_t c2;
  ka_xfer_t *x;
  keel_err_t e;
  char url[64];
  int64_t end;

  /* ka_conn_wait reports the caller's fds. */
  assert_int_equal(pipe(p), 0);
  assert_int_equal(write(p[1], "x", 1), 1);
  pf[0] = (struct pollfd){.fd = p[0], .events = POLLIN};
  ka_conn_wait(&f->c, pf, 1, 1000);
  assert_true(pf[0].revents & POLLIN);
  close(p[0]);
  close(p[1]);

  /* Nobody listens on our own port once the server is gone. */
  srv_stop(&f->s);
  snprintf(url, sizeof url, "http://127.0.0.1:%d", f->s.port);
  assert_int_equal(ka_conn_init(&c2, url, &f->id, NULL, &e), 0);
  x = &c2.poll;
  assert_int_equal(ka_conn_post(&c2, x, "/v1/agent/poll", strdup("{}"), 5000, &e), 0);
  end = keel_mono_ms() + 5000;
  while (x->active && keel_mono_ms() < end) ka_conn_wait(&c2, NULL, 0, 1000);
  assert_true(x->done);
  assert_int_equal(x->cc, KA_XE_CONNECT);
  ka_conn_free(&c2);
  assert_int_equal(srv_start(&f->s), 0); /* for teardown */
}

static void test_bad_urls(void **state) {
  ka_conn_t c;
  ka_identity_t id;
  keel_err_t e;
  static const char *bad[] = {"http://", "http://h:0", "http://h:99999", "http://u@h:1",
                              "http://[::1", "http://a:b:c", "ftp://h", "http://h/ x"};
  (void)state;
  memset(&id, 0, sizeof id);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (ka_conn_init(&c, bad[i], &id, NULL, &e) == 0) fail_msg("accepted %s", bad[i]);
  }
  assert_int_equal(ka_conn_init(&c, "http://[::1]:8080/p", &id, NULL, &e), 0);
  ka_conn_free(&c);
  assert_int_equal(ka_conn_init(&c, "HTTP://example.org", &id, NULL, &e), 0);
  ka_conn_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_content_length, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chunked, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_closed_idle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reused_dropped_resent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fresh_dropped_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(test_response_over_cap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_connection_closed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_extra_fds_and_refused, setup, teardown),
      cmocka_unit_test(test_bad_urls),
      cmocka_unit_test_setup_teardown(test_content_length, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_chunked, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_server_closed_idle, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_reused_dropped_resent, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_response_over_cap, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup_curl, teardown),
      cmocka_unit_test_setup_teardown(test_connection_close, setup_curl, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
