/* Unit tests for src/agent/httpcheck.c (the `http` job kind): the URL
 * parser, the blocking client against a small HTTP server running in a
 * thread of the test (127.0.0.1, port 0, one request per connection, the
 * answer picked by the request's path), and whole http jobs through
 * ka_exec_submit, which run the check in a forked child; and the check
 * handed to another program as words (the static agent's https path). */
#include <setjmp.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "httpcheck.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "testsrv.h"

/* ---- the URL parser ---------------------------------------------------------- */

static void url_ok(const char *text, int https, const char *host, unsigned port,
                   const char *authority, const char *target) {
  ka_http_url_t u;
  keel_err_t e = {0};
  if (ka_http_url_parse(text, strlen(text), &u, &e)) fail_msg("'%s': %s", text, e.msg);
  assert_int_equal(u.https, https);
  assert_string_equal(u.host, host);
  assert_int_equal(u.port, port);
  assert_string_equal(u.authority, authority);
  assert_string_equal(u.target, target);
}

static void url_bad(const char *text, size_t len, const char *want) {
  ka_http_url_t u;
  keel_err_t e = {0};
  memset(&u, 0x55, sizeof u);
  assert_int_equal(ka_http_url_parse(text, len, &u, &e), KEEL_EINVAL);
  if (!strstr(e.msg, want)) fail_msg("'%.*s': '%s' lacks '%s'", (int)len, text, e.msg, want);
  assert_int_equal(u.port, 0); /* zeroed on error */
  assert_string_equal(u.host, "");
}

static void test_url_good(void **state) {
  (void)state;
  url_ok("http://127.0.0.1:8080/health", 0, "127.0.0.1", 8080, "127.0.0.1:8080", "/health");
  url_ok("http://example.com", 0, "example.com", 80, "example.com", "/");
  url_ok("http://example.com/", 0, "example.com", 80, "example.com", "/");
  url_ok("HTTPS://Svc-1.internal_x.example/a/b?c=d&e=%20f", 1, "Svc-1.internal_x.example", 443,
         "Svc-1.internal_x.example", "/a/b?c=d&e=%20f");
  url_ok("http://h?x=1", 0, "h", 80, "h", "/?x=1");
  url_ok("https://[::1]:8443/ready", 1, "::1", 8443, "[::1]:8443", "/ready");
  url_ok("http://[2001:db8::1]/", 0, "2001:db8::1", 80, "[2001:db8::1]", "/");
  url_ok("http://[::ffff:10.0.0.1]", 0, "::ffff:10.0.0.1", 80, "[::ffff:10.0.0.1]", "/");
  url_ok("http://h:1/", 0, "h", 1, "h:1", "/");
  url_ok("http://h:65535/", 0, "h", 65535, "h:65535", "/");
  url_ok("http://h:00080/", 0, "h", 80, "h:00080", "/");
}

static void test_url_bad(void **state) {
  char longurl[KA_HTTP_URL_MAX + 2], longhost[400];
  (void)state;
  url_bad("", 0, "url: empty");
  url_bad("ftp://h/", 8, "expected http:// or https://");
  url_bad("h/x", 3, "expected http:// or https://");
  url_bad("http:/h", 7, "expected http:// or https://");
  url_bad("http://user:pw@h/", 17, "user info");
  url_bad("http://@h/", 10, "user info");
  url_bad("http://h/a#frag", 15, "fragment");
  url_bad("http://h/a b", 12, "space or control character at byte 10");
  url_bad("http://h/a\r\nX-Injected: 1", 25, "control character");
  url_bad("http://h/\n", 10, "control character");
  url_bad("http://h/\t", 10, "control character");
  url_bad("http://h/\x7f", 10, "control character");
  url_bad("http://h/\xc3\xa9", 11, "non-ASCII");
  url_bad("http://h/a\0b", 12, "NUL");
  url_bad("http://", 7, "no host");
  url_bad("http:///x", 9, "no host");
  url_bad("http://:80/", 11, "no host");
  url_bad("http://h:/", 10, "port");
  url_bad("http://h:0/", 11, "port");
  url_bad("http://h:65536/", 15, "port");
  url_bad("http://h:123456/", 16, "port");
  url_bad("http://h:8a/", 12, "port");
  url_bad("http://h:80:81/", 15, "port");
  url_bad("http://::1/", 11, "no host"); /* an IPv6 address needs brackets */
  url_bad("http://[::1/", 12, "without its ']'");
  url_bad("http://[]/", 10, "IPv6 address between");
  url_bad("http://[127.0.0.1]/", 19, "IPv6 address between");
  url_bad("http://[fe80::1%25eth0]/", 24, "zone ids");
  url_bad("http://[::1]x/", 14, "after ']'");
  url_bad("http://h%41/", 12, "host: unexpected '%'");
  url_bad("http://h\\x/", 11, "host: unexpected '\\'");
  memset(longhost, 'a', sizeof longhost);
  memcpy(longhost, "http://", 7);
  url_bad(longhost, sizeof longhost, "host longer than 255");
  memset(longurl, 'a', sizeof longurl);
  memcpy(longurl, "http://h/", 9);
  url_bad(longurl, sizeof longurl, "longer than 4096");
  url_ok("http://h/aaa", 0, "h", 80, "h", "/aaa");
  {
    /* Exactly at the limit is fine. */
    ka_http_url_t u;
    assert_int_equal(ka_http_url_parse(longurl, KA_HTTP_URL_MAX, &u, NULL), 0);
    assert_int_equal(strlen(u.target), KA_HTTP_URL_MAX - 8);
  }
}

/* ---- the server ------------------------------------------------------------- */

struct srv {
  int lfd, stop[2], port;
  pthread_t th;
  atomic_int accepts;
  pthread_mutex_t mu;
  char req[4096]; /* the last request's head */
};

static void answer(struct srv *s, int fd, const char *head) {
  char path[256] = "", method[16] = "", buf[512];
  int is_head;
  sscanf(head, "%15s %255s", method, path);
  is_head = !strcmp(method, "HEAD");
  if (!strcmp(path, "/ok")) {
    ts_sends(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Content-Length: 15\r\n\r\n");
    if (is_head) return;
    usleep(5000); /* head and body in separate segments */
    ts_sends(fd, "{\"status\":\"ok\"}");
  } else if (!strcmp(path, "/down")) {
    ts_sends(fd, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\ndown\n");
  } else if (!strcmp(path, "/chunked")) {
    ts_dribble(fd,
               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\nworld-0123\r\n0\r\nX-Trailer: yes\r\n\r\n",
               3);
  } else if (!strcmp(path, "/close")) {
    /* No length, not chunked: the body runs to the close. */
    ts_sends(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-");
    usleep(5000);
    ts_sends(fd, "delimited body");
  } else if (!strcmp(path, "/continue")) {
    ts_sends(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    usleep(5000);
    ts_sends(fd, "HTTP/1.1 204 No Content\r\n\r\n");
  } else if (!strcmp(path, "/redirect")) {
    ts_sends(fd, "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n");
  } else if (!strcmp(path, "/big")) {
    static char body[100000];
    memset(body, 'a', sizeof body);
    memcpy(body + sizeof body - 4, "tail", 4);
    snprintf(buf, sizeof buf, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", sizeof body);
    ts_sends(fd, buf);
    ts_send(fd, body, sizeof body);
  } else if (!strcmp(path, "/short")) {
    ts_sends(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
  } else if (!strcmp(path, "/garbage")) {
    ts_sends(fd, "SPDY/9 nonsense\r\n\r\n");
  } else if (!strncmp(path, "/echo", 5)) {
    /* The request's head back as the body. */
    snprintf(buf, sizeof buf, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", strlen(head));
    ts_sends(fd, buf);
    if (!is_head) ts_sends(fd, head);
  } else if (!strcmp(path, "/slow")) {
    /* Never answers: until the client gives up and closes. */
    while (ts_wait(s->stop[0], fd) == 0) {
      if (read(fd, buf, sizeof buf) <= 0) break;
    }
  } else {
    ts_sends(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  }
}

static void *srv_main(void *ud) {
  struct srv *s = ud;
  char head[4096];
  for (;;) {
    int fd;
    if (ts_wait(s->stop[0], s->lfd)) break;
    if ((fd = accept(s->lfd, NULL, NULL)) < 0) continue;
    s->accepts++;
    if (ts_read_head(s->stop[0], fd, head, sizeof head, 1) == 0) {
      pthread_mutex_lock(&s->mu);
      snprintf(s->req, sizeof s->req, "%s", head);
      pthread_mutex_unlock(&s->mu);
      answer(s, fd, head);
    } else if (head[0] == 0x16) {
      ts_sends(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
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

/* ---- the client, called directly ----------------------------------------------- */

struct fx {
  struct srv s;
  /* for the job tests */
  char dir[PATH_MAX];
  ka_identity_t id;
  uint8_t srv_pk[KEEL_AGENT_PK_BYTES], srv_sk[KEEL_AGENT_SK_BYTES];
  ka_exec_t x;
  int n;
};

struct out {
  int code;
  char *body, *line; /* owned */
  size_t body_len;
  long ms;
};

static char *slurp(FILE *fp, size_t *len) {
  long n;
  char *p;
  fflush(fp);
  n = ftell(fp);
  assert_true(n >= 0);
  p = calloc(1, (size_t)n + 1);
  assert_non_null(p);
  rewind(fp);
  assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
  if (len) *len = (size_t)n;
  return p;
}

/* Fills o's body and line from what was written to fo and fe; closes both. */
static void out_read(struct out *o, FILE *fo, FILE *fe) {
  fseek(fo, 0, SEEK_END);
  fseek(fe, 0, SEEK_END);
  o->body = slurp(fo, &o->body_len);
  o->line = slurp(fe, NULL);
  fclose(fo);
  fclose(fe);
}

/* Runs a check of url (method, expected status and body) with the given
 * timeout and body cap; stdout and stderr go to temporary files. */
static struct out check(const char *url, int method, int status, const char *body, long timeout_ms,
                        size_t cap) {
  ka_httpcheck_t hc;
  struct out o;
  keel_err_t e;
  FILE *fo = tmpfile(), *fe = tmpfile();
  int64_t t0;

  assert_non_null(fo);
  assert_non_null(fe);
  memset(&hc, 0, sizeof hc);
  if (ka_http_url_parse(url, strlen(url), &hc.u, &e)) fail_msg("%s: %s", url, e.msg);
  hc.url = url;
  hc.method = method;
  hc.expect_status = status;
  hc.expect_body = body;
  t0 = keel_mono_ms();
  o.code = ka_httpcheck_run(&hc, timeout_ms, cap, fileno(fo), fileno(fe));
  o.ms = (long)(keel_mono_ms() - t0);
  out_read(&o, fo, fe);
  return o;
}

static void out_free(struct out *o) {
  free(o->body);
  free(o->line);
}

static int setup_srv(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f || srv_start(&f->s)) return -1;
  *state = f;
  return 0;
}

static int teardown_srv(void **state) {
  struct fx *f = *state;
  srv_stop(&f->s);
  free(f);
  return 0;
}

static const char *url(struct fx *f, const char *path) {
  static char u[8][256];
  static int k;
  char *p = u[k++ % 8];
  snprintf(p, 256, "http://127.0.0.1:%d%s", f->s.port, path);
  return p;
}

static void test_check_200(void **state) {
  struct fx *f = *state;
  char want[512];
  struct out o = check(url(f, "/ok"), KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_string_equal(o.body, "{\"status\":\"ok\"}");
  snprintf(want, sizeof want, "GET http://127.0.0.1:%d/ok: HTTP 200, as expected\n", f->s.port);
  assert_string_equal(o.line, want);
  out_free(&o);
  o = check(url(f, "/ok"), KA_HTTP_GET, 200, "\"ok\"", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  out_free(&o);
  o = check(url(f, "/ok"), KA_HTTP_GET, 200, "degraded", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_MISMATCH);
  assert_non_null(strstr(o.line, "HTTP 200, but the body does not contain \"degraded\""));
  out_free(&o);
  /* The request: Host, Connection: close, no body for GET. */
  pthread_mutex_lock(&f->s.mu);
  assert_non_null(strstr(f->s.req, "GET /ok HTTP/1.1\r\n"));
  snprintf(want, sizeof want, "\r\nHost: 127.0.0.1:%d\r\n", f->s.port);
  assert_non_null(strstr(f->s.req, want));
  assert_non_null(strstr(f->s.req, "\r\nConnection: close\r\n"));
  assert_null(strstr(f->s.req, "Content-Length"));
  pthread_mutex_unlock(&f->s.mu);
}

/* The check handed to another program (the static agent's https path):
 * ka_httpcheck_argv's words, and ka_httpcheck_main running them in a
 * child with stdout and stderr on temporary files. */
static struct out check_main(char **argv) {
  FILE *fo = tmpfile(), *fe = tmpfile();
  struct out o;
  int argc = 0, ws;
  pid_t pid;

  assert_non_null(fo);
  assert_non_null(fe);
  while (argv[argc]) argc++;
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (dup2(fileno(fo), 1) < 0 || dup2(fileno(fe), 2) < 0) _exit(99);
    _exit(ka_httpcheck_main(argc, argv));
  }
  assert_int_equal(waitpid(pid, &ws, 0), pid);
  assert_true(WIFEXITED(ws));
  o.code = WEXITSTATUS(ws);
  o.ms = 0;
  out_read(&o, fo, fe);
  return o;
}

static void strv_free(char **v) {
  for (char **p = v; p && *p; p++) free(*p);
  free(v);
}

static void test_check_argv(void **state) {
  struct fx *f = *state;
  ka_httpcheck_t hc;
  keel_err_t e;
  json_t *o = json_pack("{s:s,s:s,s:i,s:s}", "url", url(f, "/ok"), "method", "GET",
                        "expect_status", 200, "expect_body", "\"ok\"");
  char **argv, want[512], *bad[] = {"prog", KA_HTTPCHECK_FLAG, "http://h/", "GET", "99", "1", "1",
                                    NULL};
  struct out r;

  assert_int_equal(ka_httpcheck_decode(o, &hc, &e), 0);
  argv = ka_httpcheck_argv("/x/keel-agent-dynamic", &hc, 5000, 1 << 20);
  assert_non_null(argv);
  assert_string_equal(argv[0], "/x/keel-agent-dynamic");
  assert_string_equal(argv[1], "--http-check");
  assert_string_equal(argv[2], hc.url);
  assert_string_equal(argv[3], "GET");
  assert_string_equal(argv[4], "200");
  assert_string_equal(argv[5], "5000");
  assert_string_equal(argv[6], "1048576");
  assert_string_equal(argv[7], "\"ok\"");
  assert_null(argv[8]);
  r = check_main(argv);
  assert_int_equal(r.code, KA_HC_PASS);
  assert_string_equal(r.body, "{\"status\":\"ok\"}");
  snprintf(want, sizeof want, "GET http://127.0.0.1:%d/ok: HTTP 200, as expected\n", f->s.port);
  assert_string_equal(r.line, want);
  out_free(&r);
  strv_free(argv);
  json_decref(o);

  /* No expected body: one word fewer; a mismatch is still a mismatch. */
  o = json_pack("{s:s,s:s,s:i}", "url", url(f, "/down"), "method", "HEAD", "expect_status", 200);
  assert_int_equal(ka_httpcheck_decode(o, &hc, &e), 0);
  argv = ka_httpcheck_argv("prog", &hc, 5000, 0);
  assert_null(argv[7]);
  r = check_main(argv);
  assert_int_equal(r.code, KA_HC_MISMATCH);
  assert_non_null(strstr(r.line, "HEAD http://"));
  out_free(&r);
  strv_free(argv);
  json_decref(o);

  /* Words it cannot take: a transport failure, with a line saying why. */
  r = check_main(bad);
  assert_int_equal(r.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(r.line, "expected URL METHOD EXPECT_STATUS"));
  out_free(&r);
  bad[4] = "200";
  bad[3] = "BREW";
  r = check_main(bad);
  assert_int_equal(r.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(r.line, "http.method 'BREW'"));
  out_free(&r);
}

static void test_check_503(void **state) {
  struct fx *f = *state;
  char want[512];
  struct out o = check(url(f, "/down"), KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_MISMATCH);
  assert_string_equal(o.body, "down\n");
  snprintf(want, sizeof want, "GET http://127.0.0.1:%d/down: HTTP 503, expected 200\n", f->s.port);
  assert_string_equal(o.line, want);
  out_free(&o);
  /* Expecting the 503 passes. */
  o = check(url(f, "/down"), KA_HTTP_GET, 503, "down", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  out_free(&o);
}

static void test_check_chunked_and_close(void **state) {
  struct fx *f = *state;
  struct out o = check(url(f, "/chunked"), KA_HTTP_GET, 200, "o world-", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_string_equal(o.body, "hello world-0123");
  out_free(&o);
  o = check(url(f, "/close"), KA_HTTP_GET, 200, "delimited", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_string_equal(o.body, "close-delimited body");
  out_free(&o);
  o = check(url(f, "/continue"), KA_HTTP_GET, 204, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS); /* the 100 was skipped */
  assert_string_equal(o.body, "");
  out_free(&o);
}

static void test_check_methods(void **state) {
  struct fx *f = *state;
  struct out o = check(url(f, "/echo?x=1"), KA_HTTP_POST, 200, "POST /echo?x=1 HTTP/1.1\r\n", 5000,
                       1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_non_null(strstr(o.body, "\r\nContent-Length: 0\r\n"));
  out_free(&o);
  o = check(url(f, "/echo"), KA_HTTP_PUT, 200, "\r\nContent-Length: 0\r\n", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_non_null(strstr(o.body, "PUT /echo HTTP/1.1\r\n"));
  out_free(&o);
  o = check(url(f, "/echo"), KA_HTTP_PATCH, 200, "PATCH /echo HTTP/1.1\r\n", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  out_free(&o);
  o = check(url(f, "/echo"), KA_HTTP_DELETE, 200, "DELETE /echo HTTP/1.1\r\n", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_null(strstr(o.body, "Content-Length"));
  out_free(&o);
  /* HEAD: a Content-Length but no body, and nothing waited for. */
  o = check(url(f, "/ok"), KA_HTTP_HEAD, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_string_equal(o.body, "");
  assert_true(o.ms < 1000);
  assert_non_null(strstr(o.line, "HEAD http://"));
  out_free(&o);
  /* A redirect is an answer like any other: not followed. */
  o = check(url(f, "/redirect"), KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_MISMATCH);
  assert_non_null(strstr(o.line, "HTTP 302, expected 200"));
  out_free(&o);
  assert_int_equal(f->s.accepts, 6);
}

static void test_check_cap(void **state) {
  struct fx *f = *state;
  struct out o = check(url(f, "/big"), KA_HTTP_GET, 200, "tail", 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_PASS);
  assert_int_equal(o.body_len, 100000);
  out_free(&o);
  /* Only the first 1000 bytes are read: "tail" is past them. */
  o = check(url(f, "/big"), KA_HTTP_GET, 200, "tail", 5000, 1000);
  assert_int_equal(o.code, KA_HC_MISMATCH);
  assert_int_equal(o.body_len, 1000);
  assert_non_null(strstr(o.line, "the body (as far as read) does not contain \"tail\""));
  out_free(&o);
  o = check(url(f, "/big"), KA_HTTP_GET, 200, "aaa", 5000, 0);
  assert_int_equal(o.code, KA_HC_MISMATCH);
  assert_int_equal(o.body_len, 0);
  out_free(&o);
  o = check(url(f, "/big"), KA_HTTP_GET, 200, NULL, 5000, 0);
  assert_int_equal(o.code, KA_HC_PASS);
  out_free(&o);
}

static void test_check_transport_errors(void **state) {
  struct fx *f = *state;
  char u[128];
  struct out o;

  snprintf(u, sizeof u, "http://127.0.0.1:%d/health", ts_dead_port());
  o = check(u, KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(o.line, "/health: cannot connect to 127.0.0.1 port"));
  assert_non_null(strstr(o.line, "Connection refused\n"));
  out_free(&o);
  o = check(url(f, "/slow"), KA_HTTP_GET, 200, NULL, 300, 1 << 20);
  assert_int_equal(o.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(o.line, ": timed out after 300 ms\n"));
  assert_true(o.ms >= 250 && o.ms < 2000);
  out_free(&o);
  o = check(url(f, "/short"), KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(o.line, "in the middle of the answer"));
  out_free(&o);
  o = check(url(f, "/garbage"), KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(o.line, "malformed status line"));
  out_free(&o);
  o = check("http://keel-no-such-host.invalid/", KA_HTTP_GET, 200, NULL, 5000, 1 << 20);
  assert_int_equal(o.code, KA_HC_TRANSPORT);
  assert_non_null(strstr(o.line, "cannot resolve 'keel-no-such-host.invalid'"));
  out_free(&o);
}

static void test_decode(void **state) {
  ka_httpcheck_t hc;
  keel_err_t e;
  json_t *o;
  (void)state;
  o = json_pack("{s:s}", "url", "http://h:8080/x");
  assert_int_equal(ka_httpcheck_decode(o, &hc, &e), 0);
  assert_int_equal(hc.method, KA_HTTP_GET);
  assert_int_equal(hc.expect_status, 200);
  assert_null(hc.expect_body);
  assert_string_equal(hc.url, "http://h:8080/x");
  assert_string_equal(hc.u.target, "/x");
  json_decref(o);
  o = json_pack("{s:s,s:s,s:i,s:s}", "url", "https://h/", "method", "DELETE", "expect_status", 204,
                "expect_body", "");
  assert_int_equal(ka_httpcheck_decode(o, &hc, &e), 0);
  assert_int_equal(hc.method, KA_HTTP_DELETE);
  assert_int_equal(hc.expect_status, 204);
  assert_string_equal(hc.expect_body, "");
  json_decref(o);
  o = json_pack("{s:s,s:n,s:n,s:n}", "url", "http://h/", "method", "expect_status", "expect_body");
  assert_int_equal(ka_httpcheck_decode(o, &hc, &e), 0);
  json_decref(o);
#define BAD(fmt, want, ...)                                        \
  do {                                                             \
    o = json_pack(fmt, __VA_ARGS__);                               \
    assert_non_null(o);                                            \
    assert_int_equal(ka_httpcheck_decode(o, &hc, &e), KEEL_EINVAL); \
    if (!strstr(e.msg, want)) fail_msg("'%s' lacks '%s'", e.msg, want); \
    json_decref(o);                                                \
  } while (0)
  BAD("{s:i}", "http.url: expected a string", "url", 1);
  BAD("{s:s}", "http.url: has a fragment", "url", "http://h/#x");
  BAD("{s:s,s:s}", "http.method 'get'", "url", "http://h/", "method", "get");
  BAD("{s:s,s:i}", "http.method: expected a string", "url", "http://h/", "method", 1);
  BAD("{s:s,s:i}", "http.expect_status", "url", "http://h/", "expect_status", 600);
  BAD("{s:s,s:s}", "http.expect_status", "url", "http://h/", "expect_status", "200");
  BAD("{s:s,s:i}", "http.expect_body", "url", "http://h/", "expect_body", 1);
  BAD("{s:s,s:s,s:s}", "a HEAD answer has no body", "url", "http://h/", "method", "HEAD",
      "expect_body", "x");
  BAD("{s:s%}", "NUL", "url", "http://h/\0", (size_t)10);
#undef BAD
}

/* ---- http jobs through the agent ------------------------------------------------- */

static void rm_rf(const char *path) {
  DIR *d = opendir(path);
  struct dirent *de;
  char p[PATH_MAX];
  if (d) {
    while ((de = readdir(d))) {
      if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
      snprintf(p, sizeof p, "%s/%s", path, de->d_name);
      rm_rf(p);
    }
    closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int setup_exec(void **state) {
  struct fx *f;
  keel_err_t e;
  if (setup_srv(state) || keel_crypto_init()) return -1;
  f = *state;
  snprintf(f->dir, sizeof f->dir, "/tmp/keel-agent-test-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  strcat(f->dir, "/state");
  if (ka_state_prepare(f->dir, &e)) return -1;
  ka_identity_keygen(&f->id);
  strcpy(f->id.agent_id, "agt_test");
  crypto_sign_keypair(f->srv_pk, f->srv_sk);
  memcpy(f->id.server_pk, f->srv_pk, sizeof f->srv_pk);
  return ka_exec_init(&f->x, f->dir, &f->id, NULL, &e) ? -1 : 0;
}

static int teardown_exec(void **state) {
  struct fx *f = *state;
  ka_exec_free(&f->x);
  *strrchr(f->dir, '/') = '\0';
  rm_rf(f->dir);
  return teardown_srv(state);
}

/* Submits {"http": http, plus extra's members} signed; waits; the result. */
static json_t *run_http(struct fx *f, json_t *http, const char *extra, long max_ms) {
  char id[64], sig[KEEL_AGENT_SIG_HEX], p[PATH_MAX], *text;
  json_t *o = extra ? json_loads(extra, 0, NULL) : json_object(), *r;
  size_t len;
  assert_non_null(o);
  snprintf(id, sizeof id, "run_h%d", ++f->n);
  json_object_set_new(o, "http", http);
  json_object_set_new(o, "run_id", json_string(id));
  json_object_set_new(o, "command_id", json_string("exe_t"));
  json_object_set_new(o, "agent_id", json_string("agt_test"));
  json_object_set_new(o, "issued_at", json_integer(keel_now_ms()));
  text = json_dumps(o, JSON_COMPACT);
  keel_agent_sign_job(sig, f->srv_sk, text, strlen(text));
  ka_exec_submit(&f->x, text, strlen(text), sig);
  free(text);
  json_decref(o);
  assert_int_equal(ka_exec_wait(&f->x, max_ms), 0);
  snprintf(p, sizeof p, "%s/spool/%s.json", f->dir, id);
  assert_int_equal(ka_read_file(p, (size_t)64 << 20, &text, &len, NULL), 0);
  assert_int_equal(keel_json_parse(text, len, &r, NULL), 0);
  free(text);
  return r;
}

static char *b64field(json_t *r, const char *k) {
  const char *s = keel_json_str(r, k);
  size_t n, cap;
  char *out;
  assert_non_null(s);
  cap = strlen(s) + 1;
  out = malloc(cap);
  assert_int_equal(sodium_base642bin((unsigned char *)out, cap, s, strlen(s), NULL, &n, NULL,
                                     sodium_base64_VARIANT_ORIGINAL),
                   0);
  out[n] = '\0';
  return out;
}

static void assert_result(json_t *r, const char *status, int code, const char *out,
                          const char *err) {
  char *o, *e;
  const char *st = keel_json_str(r, "status");
  if (!st || strcmp(st, status))
    fail_msg("status %s, expected %s (error: %s)", st ? st : "(none)", status,
             keel_json_str(r, "error"));
  if (code >= 0) assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), code);
  o = b64field(r, "stdout_b64");
  e = b64field(r, "stderr_b64");
  if (out) assert_string_equal(o, out);
  if (err) assert_string_equal(e, err);
  free(o);
  free(e);
}

static void test_job_http(void **state) {
  struct fx *f = *state;
  char want[512];
  json_t *r;

  r = run_http(f, json_pack("{s:s,s:s,s:i,s:s}", "url", url(f, "/ok"), "method", "GET",
                            "expect_status", 200, "expect_body", "ok"),
               NULL, 5000);
  snprintf(want, sizeof want, "GET http://127.0.0.1:%d/ok: HTTP 200, as expected\n", f->s.port);
  assert_result(r, "exited", 0, "{\"status\":\"ok\"}", want);
  json_decref(r);
  r = run_http(f, json_pack("{s:s,s:s,s:i,s:n}", "url", url(f, "/down"), "method", "GET",
                            "expect_status", 200, "expect_body"),
               NULL, 5000);
  snprintf(want, sizeof want, "GET http://127.0.0.1:%d/down: HTTP 503, expected 200\n", f->s.port);
  assert_result(r, "exited", 1, "down\n", want);
  json_decref(r);
  r = run_http(f, json_pack("{s:s}", "url", url(f, "/chunked")), NULL, 5000);
  assert_result(r, "exited", 0, "hello world-0123", NULL);
  json_decref(r);
  /* The output cap is also what the check reads. */
  r = run_http(f, json_pack("{s:s,s:s}", "url", url(f, "/big"), "expect_body", "tail"),
               "{\"output_cap\":1024}", 5000);
  assert_result(r, "exited", 1, NULL, NULL);
  {
    char *o = b64field(r, "stdout_b64");
    assert_int_equal(strlen(o), 1024);
    free(o);
  }
  json_decref(r);
}

static void test_job_http_errors(void **state) {
  struct fx *f = *state;
  char u[128];
  int64_t t0 = keel_mono_ms();
  json_t *r;

  /* The job's timeout kills the check like any command. */
  r = run_http(f, json_pack("{s:s}", "url", url(f, "/slow")), "{\"timeout_ms\":300}", 5000);
  assert_result(r, "timeout", -1, "", "");
  assert_true(keel_mono_ms() - t0 < 2000);
  json_decref(r);
  snprintf(u, sizeof u, "http://127.0.0.1:%d/", ts_dead_port());
  r = run_http(f, json_pack("{s:s,s:s}", "url", u, "method", "POST"), NULL, 5000);
  assert_result(r, "exited", 2, "", NULL);
  {
    char *e = b64field(r, "stderr_b64");
    assert_true(!strncmp(e, "POST http://127.0.0.1:", 22));
    assert_non_null(strstr(e, "Connection refused\n"));
    free(e);
  }
  json_decref(r);
  /* The machinery's own checks apply: an unknown user never gets to run it. */
  r = run_http(f, json_pack("{s:s}", "url", url(f, "/ok")), "{\"user\":\"keel-no-such-user\"}",
               5000);
  assert_result(r, "failed", -1, "", "");
  json_decref(r);
  /* A bad URL is refused before anything runs. */
  r = run_http(f, json_pack("{s:s}", "url", "http://127.0.0.1/a b"), NULL, 5000);
  assert_result(r, "refused", -1, "", "");
  assert_non_null(strstr(keel_json_str(r, "error"), "job: http.url: contains a space"));
  json_decref(r);
}

static void test_job_https(void **state) {
  struct fx *f = *state;
  char u[128], *e;
  json_t *r;
  /* libcurl, loaded in the check's child: a TLS hello to this plain
   * server fails as a transport error (or, without libcurl, the line says
   * what to install). */
  snprintf(u, sizeof u, "https://127.0.0.1:%d/ok", f->s.port);
  r = run_http(f, json_pack("{s:s}", "url", u), NULL, 5000);
  assert_result(r, "exited", 2, "", NULL);
  e = b64field(r, "stderr_b64");
  assert_true(!strncmp(e, "GET https://127.0.0.1:", 22));
  assert_non_null(strchr(e, '\n'));
  free(e);
  json_decref(r);
  snprintf(u, sizeof u, "https://127.0.0.1:%d/ok", ts_dead_port());
  r = run_http(f, json_pack("{s:s}", "url", u), NULL, 5000);
  assert_result(r, "exited", 2, "", NULL);
  json_decref(r);
}

static void test_job_http_as_user(void **state) {
  struct fx *f = *state;
  json_t *r;
  if (geteuid() != 0) skip();
  r = run_http(f, json_pack("{s:s}", "url", url(f, "/ok")), "{\"user\":\"nobody\"}", 5000);
  assert_result(r, "exited", 0, "{\"status\":\"ok\"}", NULL);
  json_decref(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_good),
      cmocka_unit_test(test_url_bad),
      cmocka_unit_test(test_decode),
      cmocka_unit_test_setup_teardown(test_check_200, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_check_503, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_check_chunked_and_close, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_check_methods, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_check_cap, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_check_transport_errors, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_check_argv, setup_srv, teardown_srv),
      cmocka_unit_test_setup_teardown(test_job_http, setup_exec, teardown_exec),
      cmocka_unit_test_setup_teardown(test_job_http_errors, setup_exec, teardown_exec),
      cmocka_unit_test_setup_teardown(test_job_https, setup_exec, teardown_exec),
      cmocka_unit_test_setup_teardown(test_job_http_as_user, setup_exec, teardown_exec),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
