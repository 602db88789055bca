/* Unit tests for scrape/scrape.c: configuration errors, and whole scrapes
 * against a small HTTP server running in a thread of the test (127.0.0.1,
 * port 0, one request per connection, the answer picked by the request's
 * path and changeable between scrapes): up and down, 404, timeouts, body
 * caps, parse errors, honor_labels both ways, staleness, reconfiguration,
 * and, when Debian's prometheus-node-exporter is installed, a real one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/buf.h"
#include "keel/json.h"
#include "keel/time.h"
#include "keel/yaml.h"
#include "scrape/scrape.h"
#include "testsrv.h"

/* ---- the server ------------------------------------------------------------- */

typedef struct route {
  char path[64];
  int status; /* 0: never answer (hold the connection) */
  char ctype[128];
  char *body;
} route_t;

struct srv {
  int lfd, stop[2], port;
  pthread_t th;
  pthread_mutex_t mu;
  route_t routes[16];
  int nroutes;
  int held[64];
  int nheld;
  char req[4096]; /* the last request's head */
};

static void srv_set(struct srv *s, const char *path, int status, const char *ctype, const char *body) {
  route_t *r = NULL;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->nroutes; i++)
    if (!strcmp(s->routes[i].path, path)) r = &s->routes[i];
  if (!r) {
    assert_true(s->nroutes < 16);
    r = &s->routes[s->nroutes++];
    snprintf(r->path, sizeof r->path, "%s", path);
  }
  r->status = status;
  snprintf(r->ctype, sizeof r->ctype, "%s", ctype ? ctype : "text/plain; version=0.0.4");
  free(r->body);
  r->body = strdup(body ? body : "");
  pthread_mutex_unlock(&s->mu);
}

static void *srv_main(void *ud) {
  struct srv *s = ud;
  char head[4096], path[256], hdr[512];
  for (;;) {
    int fd, keep = 0;
    if (ts_wait(s->stop[0], s->lfd)) break;
    if ((fd = accept(s->lfd, NULL, NULL)) < 0) continue;
    if (ts_read_head(s->stop[0], fd, head, sizeof head, 0) == 0) {
      route_t r = {.status = 404};
      char *body = NULL;
      path[0] = '\0';
      sscanf(head, "%*15s %255s", path);
      pthread_mutex_lock(&s->mu);
      snprintf(s->req, sizeof s->req, "%s", head);
      for (int i = 0; i < s->nroutes; i++)
        if (!strcmp(s->routes[i].path, path)) {
          r = s->routes[i];
          body = strdup(r.body);
        }
      pthread_mutex_unlock(&s->mu);
      if (r.status == 0) {
        keep = s->nheld < 64;
        if (keep) s->held[s->nheld++] = fd;
      } else {
        size_t n = body ? strlen(body) : 0;
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                 r.status, r.status == 404 && !body ? "text/plain" : r.ctype, n);
        ts_send(fd, hdr, strlen(hdr));
        if (n) ts_send(fd, body, n);
      }
      free(body);
    }
    if (!keep) close(fd);
  }
  return NULL;
}

static void srv_start(struct srv *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  assert_int_equal(ts_listen(s->stop, &s->lfd, &s->port, 64), 0);
  assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s) {
  ts_join(s->stop, s->th);
  for (int i = 0; i < s->nheld; i++) close(s->held[i]);
  for (int i = 0; i < s->nroutes; i++) free(s->routes[i].body);
  ts_close(s->stop, s->lfd);
  pthread_mutex_destroy(&s->mu);
}

/* ---- collecting batches ------------------------------------------------------- */

typedef struct batch {
  char job[64], instance[64], err[256];
  int up;
  int64_t t;
  double dur;
  size_t n;
  char *lines; /* "\n" + one line per sample, sorted, each ending in "\n" */
} batch_t;

typedef struct got {
  batch_t b[256];
  int n;
} got_t;

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* name{l="v",...} value [@t when t is not the batch's]; STALE for a
 * stale marker. */
static void on_batch(void *ud, const k_scrape_batch_t *b) {
  got_t *g = ud;
  batch_t *x;
  char **lines = calloc(b->n + 1, sizeof *lines);
  keel_buf_t all;
  assert_true(g->n < 256);
  assert_non_null(lines);
  x = &g->b[g->n++];
  snprintf(x->job, sizeof x->job, "%s", b->job);
  snprintf(x->instance, sizeof x->instance, "%s", b->instance);
  snprintf(x->err, sizeof x->err, "%s", b->error);
  x->up = b->up;
  x->t = b->t_ms;
  x->dur = b->duration_s;
  x->n = b->n;
  for (size_t i = 0; i < b->n; i++) {
    const k_expfmt_sample_t *sm = &b->samples[i];
    keel_buf_t l;
    uint64_t bits;
    int first = 1;
    keel_buf_init(&l, 1 << 16);
    for (size_t j = 0; j < sm->n; j++)
      if (!strcmp(sm->labels[j].name, "__name__")) keel_buf_puts(&l, sm->labels[j].value);
    for (size_t j = 0; j < sm->n; j++) {
      if (j) assert_true(strcmp(sm->labels[j - 1].name, sm->labels[j].name) < 0);
      if (!strcmp(sm->labels[j].name, "__name__")) continue;
      keel_buf_printf(&l, "%s%s=\"%s\"", first ? "{" : ",", sm->labels[j].name, sm->labels[j].value);
      first = 0;
    }
    if (!first) keel_buf_puts(&l, "}");
    memcpy(&bits, &sm->v, sizeof bits);
    if (bits == K_STALE_NAN_BITS) keel_buf_puts(&l, " STALE");
    else keel_buf_printf(&l, " %g", sm->v);
    assert_true(sm->t_ms != K_EXPFMT_NO_TS);
    if (sm->t_ms != b->t_ms) keel_buf_printf(&l, " @%lld", (long long)sm->t_ms);
    lines[i] = keel_buf_steal(&l);
  }
  qsort(lines, b->n, sizeof *lines, cmp_str);
  keel_buf_init(&all, 64 << 20);
  keel_buf_puts(&all, "\n");
  for (size_t i = 0; i < b->n; i++) {
    keel_buf_printf(&all, "%s\n", lines[i]);
    free(lines[i]);
  }
  free(lines);
  x->lines = keel_buf_steal(&all);
}

static void got_free(got_t *g) {
  for (int i = 0; i < g->n; i++) free(g->b[i].lines);
  g->n = 0;
}

/* Polls until pred says enough (or timeout_ms passes: fails). */
typedef int (*pred_fn)(const got_t *g, void *arg);

static void wait_until(k_scrape_t *s, got_t *g, pred_fn pred, void *arg, int timeout_ms) {
  int64_t end = keel_mono_ms() + timeout_ms;
  while (!pred(g, arg)) {
    struct pollfd p = {.fd = k_scrape_fd(s), .events = POLLIN};
    if (keel_mono_ms() > end) fail_msg("timed out waiting for batches (have %d)", g->n);
    poll(&p, 1, 50);
    k_scrape_poll(s, on_batch, g);
  }
}

static int have_n(const got_t *g, void *arg) { return g->n >= *(int *)arg; }

/* One batch from each job named in arg (NULL-ended). */
static int have_jobs(const got_t *g, void *arg) {
  for (const char *const *j = arg; *j; j++) {
    int found = 0;
    for (int i = 0; i < g->n && !found; i++) found = !strcmp(g->b[i].job, *j);
    if (!found) return 0;
  }
  return 1;
}

static const batch_t *last_of(const got_t *g, const char *job) {
  for (int i = g->n - 1; i >= 0; i--)
    if (!strcmp(g->b[i].job, job)) return &g->b[i];
  fail_msg("no batch of job %s", job);
  return NULL;
}

static void has_line(const batch_t *b, const char *line) {
  char want[1024];
  snprintf(want, sizeof want, "\n%s\n", line);
  if (!strstr(b->lines, want)) fail_msg("batch of %s lacks '%s'; it has:%s", b->job, line, b->lines);
}

static void lacks(const batch_t *b, const char *part) {
  if (strstr(b->lines, part)) fail_msg("batch of %s has '%s':%s", b->job, part, b->lines);
}

static void wait_n(k_scrape_t *s, got_t *g, int n, int timeout_ms) {
  wait_until(s, g, have_n, &n, timeout_ms);
}

static k_scrape_t *engine(void) {
  k_scrape_t *s = NULL;
  keel_err_t e = {0};
  if (k_scrape_new(NULL, &s, &e)) fail_msg("k_scrape_new: %s", e.msg);
  return s;
}

static void configure(k_scrape_t *s, const char *fmt, ...) {
  char cfg[8192];
  keel_err_t e = {0};
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cfg, sizeof cfg, fmt, ap);
  va_end(ap);
  if (k_scrape_configure(s, cfg, &e)) fail_msg("configure: %s\n%s", e.msg, cfg);
}

/* The status entry of job in k_scrape_targets_json (new reference). */
static json_t *target_of(k_scrape_t *s, const char *job) {
  json_t *arr = k_scrape_targets_json(s), *v, *ret = NULL;
  size_t i;
  assert_non_null(arr);
  json_array_foreach(arr, i, v) {
    if (!strcmp(json_string_value(json_object_get(v, "job")), job)) ret = json_incref(v);
  }
  json_decref(arr);
  if (!ret) fail_msg("no target of job %s", job);
  return ret;
}

/* ---- configuration ---------------------------------------------------------- */

static void cfg_bad(const char *json, const char *want) {
  json_t *doc = NULL;
  keel_err_t e = {0};
  assert_int_equal(keel_json_parse(json, strlen(json), &doc, NULL), 0);
  assert_int_equal(k_scrape_config_check(NULL, doc, NULL, &e), KEEL_EINVAL);
  if (strcmp(e.msg, want)) fail_msg("'%s':\n got '%s'\nwant '%s'", json, e.msg, want);
  json_decref(doc);
}

static void test_config(void **state) {
  k_scrape_t *s;
  keel_err_t e = {0};
  json_t *t, *doc = NULL;
  keel_yaml_pos_t *pos = NULL;
  const char *yaml = "scrape_configs:\n  - job_name: a\n    scheme: ftp\n";
  (void)state;
  cfg_bad("[]", "scrape config: expected an object with \"scrape_configs\"");
  cfg_bad("{\"scrape_config\":[]}", "scrape_config: unknown field");
  cfg_bad("{\"scrape_configs\":{}}", "scrape_configs: expected an array");
  cfg_bad("{\"scrape_configs\":[1]}", "scrape_configs[0]: expected a mapping");
  cfg_bad("{\"scrape_configs\":[{}]}", "scrape_configs[0].job_name: required field is missing");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"\"}]}", "scrape_configs[0].job_name: must not be empty");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":7}]}", "scrape_configs[0].job_name: expected a string");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\"},{\"job_name\":\"a\"}]}",
          "scrape_configs[1].job_name: 'a' is the name of an earlier job");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"foo\":1}]}", "scrape_configs[0].foo: unknown field");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"scheme\":\"ftp\"}]}",
          "scrape_configs[0].scheme: expected \"http\" or \"https\"");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"metrics_path\":\"metrics\"}]}",
          "scrape_configs[0].metrics_path: expected a path starting with '/' (printable ASCII, no "
          "spaces or '#')");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"metrics_path\":\"/a b\"}]}",
          "scrape_configs[0].metrics_path: expected a path starting with '/' (printable ASCII, no "
          "spaces or '#')");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"scrape_interval\":\"soon\"}]}",
          "scrape_configs[0].scrape_interval: expected a duration such as \"15s\" or \"1m\", got 'soon'");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"scrape_interval\":\"10ms\"}]}",
          "scrape_configs[0].scrape_interval: must be between 100ms and 24h");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"scrape_interval\":\"5s\",\"scrape_timeout\":\"6s\"}]}",
          "scrape_configs[0].scrape_timeout: 6s is longer than scrape_interval (5s)");
  cfg_bad("{\"global\":{\"scrape_interval\":\"5s\",\"scrape_timeout\":\"10s\"}}",
          "global.scrape_timeout: 10s is longer than scrape_interval (5s)");
  cfg_bad("{\"global\":{\"x\":1}}", "global.x: unknown field");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"honor_labels\":\"yes\"}]}",
          "scrape_configs[0].honor_labels: expected true or false");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"labels\":{\"__x\":\"1\"}}]}",
          "scrape_configs[0].labels.__x: label names starting with '__' are reserved");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"labels\":{\"a-b\":\"1\"}}]}",
          "scrape_configs[0].labels.a-b: invalid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"labels\":{\"a\":\"\"}}]}",
          "scrape_configs[0].labels.a: expected a non-empty string");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"labels\":[]}]}",
          "scrape_configs[0].labels: expected an object of label names to values");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"sample_limit\":0}]}",
          "scrape_configs[0].sample_limit: expected an integer from 1 to 1000000");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"body_size_limit\":\"1MB\"}]}",
          "scrape_configs[0].body_size_limit: expected an integer from 1 to 268435456");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":{}}]}",
          "scrape_configs[0].static_configs: expected an array");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"labels\":{}}]}]}",
          "scrape_configs[0].static_configs[0].targets: required field is missing");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"localhost\"]}]}]}",
          "scrape_configs[0].static_configs[0].targets[0]: expected \"host:port\", got 'localhost'");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"h:0\"]}]}]}",
          "scrape_configs[0].static_configs[0].targets[0]: expected \"host:port\", got 'h:0'");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"h/x:1\"]}]}]}",
          "scrape_configs[0].static_configs[0].targets[0]: expected \"host:port\", got 'h/x:1'");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[7]}]}]}",
          "scrape_configs[0].static_configs[0].targets[0]: expected a \"host:port\" string");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"h:1\"]},"
          "{\"targets\":[\"[::1]:2\",\"h:1\"]}]}]}",
          "scrape_configs[0].static_configs[1].targets[1]: 'h:1' appears twice in this job");
  cfg_bad("{\"scrape_configs\":[{\"job_name\":\"a\",\"static_configs\":[{\"targets\":[\"h:1\"],"
          "\"labels\":{\"x\":1}}]}]}",
          "scrape_configs[0].static_configs[0].labels.x: expected a non-empty string");

  /* A YAML document: errors carry file, line and column. */
  assert_int_equal(keel_yaml_load("scrape.yaml", yaml, strlen(yaml), &doc, &pos, NULL), 0);
  assert_int_equal(k_scrape_config_check("scrape.yaml", doc, pos, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "scrape.yaml:3:13: scrape_configs[0].scheme: expected \"http\" or \"https\"");
  json_decref(doc);
  keel_yaml_pos_free(pos);

  /* Through the engine: a malformed text changes nothing; defaults. */
  s = engine();
  assert_int_equal(k_scrape_configure(s, "{", &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "malformed JSON at line 1"));
  configure(s,
            "{\"global\":{\"scrape_interval\":\"30s\"},\"scrape_configs\":["
            "{\"job_name\":\"fast\",\"scrape_interval\":\"5s\",\"static_configs\":[{\"targets\":[\"h:1\"]}]},"
            "{\"job_name\":\"slow\",\"scheme\":\"https\",\"metrics_path\":\"/m?x=1\",\"static_configs\":"
            "[{\"targets\":[\"[::1]:9100\"],\"labels\":{\"instance\":\"mine\",\"env\":\"e\"}}]}]}");
  t = target_of(s, "fast");
  assert_string_equal(json_string_value(json_object_get(t, "scrape_interval")), "5s");
  assert_string_equal(json_string_value(json_object_get(t, "scrape_timeout")), "5s"); /* shrunk */
  assert_string_equal(json_string_value(json_object_get(t, "health")), "unknown");
  assert_true(json_is_null(json_object_get(t, "last_error")));
  assert_true(json_is_null(json_object_get(t, "last_scrape")));
  assert_string_equal(json_string_value(json_object_get(t, "scrape_url")), "http://h:1/metrics");
  json_decref(t);
  t = target_of(s, "slow");
  assert_string_equal(json_string_value(json_object_get(t, "scrape_interval")), "30s");
  assert_string_equal(json_string_value(json_object_get(t, "scrape_timeout")), "10s");
  assert_string_equal(json_string_value(json_object_get(t, "scrape_url")), "https://[::1]:9100/m?x=1");
  assert_string_equal(json_string_value(json_object_get(t, "instance")), "mine");
  {
    char *l = json_dumps(json_object_get(t, "labels"), JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(l, "{\"env\":\"e\",\"instance\":\"mine\",\"job\":\"slow\"}");
    free(l);
  }
  json_decref(t);
  k_scrape_free(s);
}

/* ---- scraping ---------------------------------------------------------------- */

static void test_up(void **state) {
  struct srv srv;
  got_t g = {0};
  k_scrape_t *s;
  char line[512], inst[64];
  json_t *t;
  (void)state;
  srv_start(&srv);
  srv_set(&srv, "/metrics", 200, NULL, "# TYPE a counter\na{x=\"1\"} 3\nb 1 1000\n");
  s = engine();
  configure(s,
            "{\"scrape_configs\":[{\"job_name\":\"j\",\"scrape_interval\":\"200ms\",\"labels\":{\"env\":\"t\"},"
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}]}",
            srv.port);
  snprintf(inst, sizeof inst, "127.0.0.1:%d", srv.port);
  wait_n(s, &g, 1, 5000);
  assert_string_equal(g.b[0].job, "j");
  assert_string_equal(g.b[0].instance, inst);
  assert_int_equal(g.b[0].up, 1);
  assert_string_equal(g.b[0].err, "");
  assert_int_equal(g.b[0].n, 7);
  assert_true(g.b[0].dur > 0 && g.b[0].dur < 5);
  assert_true(llabs(g.b[0].t - keel_now_ms()) < 10000);
#define L(fmt) (snprintf(line, sizeof line, fmt, srv.port), line)
  has_line(&g.b[0], L("a{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\",x=\"1\"} 3"));
  has_line(&g.b[0], L("b{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} 1 @1000"));
  has_line(&g.b[0], L("up{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} 1"));
  has_line(&g.b[0], L("scrape_samples_scraped{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} 2"));
  has_line(&g.b[0], L("scrape_samples_post_metric_relabeling{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} 2"));
  /* b has its own timestamp: it is not tracked, so not "added" */
  has_line(&g.b[0], L("scrape_series_added{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} 1"));
  assert_non_null(strstr(g.b[0].lines, L("\nscrape_duration_seconds{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} ")));
  pthread_mutex_lock(&srv.mu);
  assert_non_null(strstr(srv.req, "GET /metrics HTTP/1.1\r\n"));
  assert_non_null(strstr(srv.req, "\r\nAccept: application/openmetrics-text;version=1.0.0,"));
  assert_non_null(strstr(srv.req, "text/plain;version=0.0.4;q=0.5"));
  assert_non_null(strstr(srv.req, "\r\nUser-Agent: keel/"));
  assert_non_null(strstr(srv.req, "\r\nX-Prometheus-Scrape-Timeout-Seconds: 0.200\r\n"));
  pthread_mutex_unlock(&srv.mu);

  t = target_of(s, "j");
  assert_string_equal(json_string_value(json_object_get(t, "health")), "up");
  assert_true(json_is_null(json_object_get(t, "last_error")));
  assert_string_equal(json_string_value(json_object_get(t, "instance")), inst);
  assert_true(json_is_string(json_object_get(t, "last_scrape")));
  assert_true(json_is_real(json_object_get(t, "last_scrape_duration_seconds")));
  assert_string_equal(json_string_value(json_object_get(json_object_get(t, "labels"), "env")), "t");
  json_decref(t);

  /* The next scrapes follow at the interval, with nothing stale. */
  wait_n(s, &g, 3, 5000);
  assert_true(g.b[2].t - g.b[1].t >= 150 && g.b[2].t - g.b[1].t <= 700); /* 200ms apart */
  lacks(&g.b[2], "STALE");
  has_line(&g.b[2], L("scrape_series_added{env=\"t\",instance=\"127.0.0.1:%d\",job=\"j\"} 0"));
#undef L
  k_scrape_free(s);
  got_free(&g);
  srv_stop(&srv);
}

static void test_failures(void **state) {
  static const char *const jobs[] = {"dead", "404", "bad", "slow", "big", "om_as_text", "om", NULL};
  struct srv srv;
  got_t g = {0};
  k_scrape_t *s;
  char big[1001];
  (void)state;
  srv_start(&srv);
  memset(big, 'x', 1000);
  big[1000] = '\0';
  big[0] = '#';
  big[1] = ' ';
  srv_set(&srv, "/bad", 200, NULL, "ok 1\nbad x\n");
  srv_set(&srv, "/slow", 0, NULL, NULL);
  srv_set(&srv, "/big", 200, NULL, big);
  srv_set(&srv, "/om", 200, "application/openmetrics-text; version=1.0.0; charset=utf-8",
          "# TYPE a counter\na_total 1 # {t=\"1\"} 1\n# EOF\n");
  srv_set(&srv, "/om_as_text", 200, "text/plain; version=0.0.4",
          "# TYPE a counter\na_total 1 # {t=\"1\"} 1\n# EOF\n");
  s = engine();
  configure(s,
            "{\"global\":{\"scrape_interval\":\"500ms\"},\"scrape_configs\":["
            "{\"job_name\":\"dead\",\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"404\",\"metrics_path\":\"/missing\",\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"bad\",\"metrics_path\":\"/bad\",\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"slow\",\"metrics_path\":\"/slow\",\"scrape_interval\":\"1s\",\"scrape_timeout\":\"300ms\","
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"big\",\"metrics_path\":\"/big\",\"body_size_limit\":100,"
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"om_as_text\",\"metrics_path\":\"/om_as_text\",\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"om\",\"metrics_path\":\"/om\",\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}"
            "]}",
            ts_dead_port(), srv.port, srv.port, srv.port, srv.port, srv.port, srv.port);
  wait_until(s, &g, have_jobs, (void *)jobs, 5000);
  {
    static const struct {
      const char *job, *err;
    } want[] = {
        {"dead", "cannot connect: Connection refused"},
        {"404", "server returned HTTP status 404"},
        {"bad", "line 2: invalid value 'x'"},
        {"slow", "timed out after 300ms (scrape_timeout)"},
        {"big", "body larger than 100 bytes (body_size_limit)"},
        {"om_as_text", "line 2: invalid timestamp '#'"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
      const batch_t *b = last_of(&g, want[i].job);
      json_t *t = target_of(s, want[i].job);
      char line[256];
      if (strcmp(b->err, want[i].err)) fail_msg("%s: '%s', want '%s'", b->job, b->err, want[i].err);
      assert_int_equal(b->up, 0);
      assert_int_equal(b->n, 5); /* the synthetic series alone */
      snprintf(line, sizeof line, "up{instance=\"%s\",job=\"%s\"} 0", b->instance, b->job);
      has_line(b, line);
      snprintf(line, sizeof line, "scrape_samples_scraped{instance=\"%s\",job=\"%s\"} 0", b->instance, b->job);
      has_line(b, line);
      assert_string_equal(json_string_value(json_object_get(t, "health")), "down");
      assert_string_equal(json_string_value(json_object_get(t, "last_error")), want[i].err);
      json_decref(t);
    }
  }
  {
    const batch_t *b = last_of(&g, "slow");
    assert_true(b->dur >= 0.29 && b->dur < 2);
    b = last_of(&g, "om");
    assert_int_equal(b->up, 1);
    assert_int_equal(b->n, 6);
    lacks(b, "STALE");
    assert_non_null(strstr(b->lines, "\na_total{instance=\"127.0.0.1:"));
  }
  k_scrape_free(s);
  got_free(&g);
  srv_stop(&srv);
}

static void test_honor_labels(void **state) {
  static const char *const jobs[] = {"hf", "ht", "hd", NULL};
  struct srv srv;
  got_t g = {0};
  k_scrape_t *s;
  char line[512];
  (void)state;
  srv_start(&srv);
  srv_set(&srv, "/honor", 200, NULL,
          "m{job=\"other\",instance=\"x\",exported_job=\"y\",a=\"1\"} 1\nn{zone=\"z\"} 2\n");
  srv_set(&srv, "/dup", 200, NULL, "up 5\n");
  s = engine();
  configure(s,
            "{\"global\":{\"scrape_interval\":\"300ms\"},\"scrape_configs\":["
            "{\"job_name\":\"hf\",\"metrics_path\":\"/honor\",\"labels\":{\"zone\":\"cfg\"},"
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"ht\",\"metrics_path\":\"/honor\",\"honor_labels\":true,\"labels\":{\"zone\":\"cfg\"},"
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
            "{\"job_name\":\"hd\",\"metrics_path\":\"/dup\",\"honor_labels\":true,"
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}]}",
            srv.port, srv.port, srv.port);
  wait_until(s, &g, have_jobs, (void *)jobs, 5000);
#define L(fmt) (snprintf(line, sizeof line, fmt, srv.port), line)
  /* false: the target's labels win; displaced ones become exported_*, and
   * exported_exported_* when exported_* is taken; shorter names first. */
  has_line(last_of(&g, "hf"), L("m{a=\"1\",exported_exported_job=\"other\",exported_instance=\"x\","
                                "exported_job=\"y\",instance=\"127.0.0.1:%d\",job=\"hf\",zone=\"cfg\"} 1"));
  has_line(last_of(&g, "hf"), L("n{exported_zone=\"z\",instance=\"127.0.0.1:%d\",job=\"hf\",zone=\"cfg\"} 2"));
  has_line(last_of(&g, "hf"), L("up{instance=\"127.0.0.1:%d\",job=\"hf\",zone=\"cfg\"} 1"));
  /* true: the scraped labels win; the target's fill in */
  has_line(last_of(&g, "ht"), "m{a=\"1\",exported_job=\"y\",instance=\"x\",job=\"other\",zone=\"cfg\"} 1");
  has_line(last_of(&g, "ht"), L("n{instance=\"127.0.0.1:%d\",job=\"ht\",zone=\"z\"} 2"));
  has_line(last_of(&g, "ht"), L("up{instance=\"127.0.0.1:%d\",job=\"ht\",zone=\"cfg\"} 1"));
  /* a scraped series equal to a synthetic one after the merge */
  assert_int_equal(last_of(&g, "hd")->up, 0);
  assert_string_equal(last_of(&g, "hd")->err,
                      L("duplicate series up{instance=\"127.0.0.1:%d\",job=\"hd\"} after applying target labels"));
  has_line(last_of(&g, "hd"), L("up{instance=\"127.0.0.1:%d\",job=\"hd\"} 0"));
#undef L
  k_scrape_free(s);
  got_free(&g);
  srv_stop(&srv);
}

static void test_staleness(void **state) {
  struct srv srv;
  got_t g = {0};
  k_scrape_t *s;
  char line[512], cfg[512];
  json_t *t;
  int n;
  (void)state;
  srv_start(&srv);
  srv_set(&srv, "/st", 200, NULL, "a 1\nb 1\nc 1 1000\n");
  s = engine();
  snprintf(cfg, sizeof cfg,
           "{\"scrape_configs\":[{\"job_name\":\"st\",\"metrics_path\":\"/st\",\"scrape_interval\":\"300ms\","
           "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}]}",
           srv.port);
  configure(s, "%s", cfg);
#define L(fmt) (snprintf(line, sizeof line, fmt, srv.port), line)
  wait_n(s, &g, 1, 5000);
  assert_int_equal(g.b[0].up, 1);
  has_line(&g.b[0], L("scrape_series_added{instance=\"127.0.0.1:%d\",job=\"st\"} 2"));

  /* b and c go away: b is marked stale, c (own timestamp) is not */
  srv_set(&srv, "/st", 200, NULL, "a 2\n");
  wait_n(s, &g, 2, 5000);
  has_line(&g.b[1], L("a{instance=\"127.0.0.1:%d\",job=\"st\"} 2"));
  has_line(&g.b[1], L("b{instance=\"127.0.0.1:%d\",job=\"st\"} STALE"));
  lacks(&g.b[1], "\nc{");
  assert_int_equal(g.b[1].n, 1 + 1 + 5);

  /* the target goes down: all its scraped series are marked stale */
  srv_set(&srv, "/st", 500, NULL, "oops");
  wait_n(s, &g, 3, 5000);
  assert_int_equal(g.b[2].up, 0);
  assert_string_equal(g.b[2].err, "server returned HTTP status 500");
  has_line(&g.b[2], L("a{instance=\"127.0.0.1:%d\",job=\"st\"} STALE"));
  has_line(&g.b[2], L("up{instance=\"127.0.0.1:%d\",job=\"st\"} 0"));
  assert_int_equal(g.b[2].n, 1 + 5);
  wait_n(s, &g, 4, 5000);
  lacks(&g.b[3], "STALE"); /* nothing left to mark */
  assert_int_equal(g.b[3].n, 5);

  /* up again */
  srv_set(&srv, "/st", 200, NULL, "a 3\n");
  n = g.n + 1;
  wait_n(s, &g, n, 5000);
  assert_int_equal(g.b[n - 1].up, 1);
  lacks(&g.b[n - 1], "STALE");
  has_line(&g.b[n - 1], L("scrape_series_added{instance=\"127.0.0.1:%d\",job=\"st\"} 1"));

  /* The same configuration again: the target keeps its state (health at
   * once, and no spurious stale markers at the next scrape). */
  configure(s, "%s", cfg);
  t = target_of(s, "st");
  assert_string_equal(json_string_value(json_object_get(t, "health")), "up");
  json_decref(t);
  n = g.n + 1;
  wait_n(s, &g, n, 5000);
  lacks(&g.b[n - 1], "STALE");
  has_line(&g.b[n - 1], L("scrape_series_added{instance=\"127.0.0.1:%d\",job=\"st\"} 0"));

  /* A label change: the old series are marked stale, the new ones added. */
  snprintf(cfg, sizeof cfg,
           "{\"scrape_configs\":[{\"job_name\":\"st\",\"metrics_path\":\"/st\",\"scrape_interval\":\"300ms\","
           "\"labels\":{\"v\":\"2\"},\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}]}",
           srv.port);
  configure(s, "%s", cfg);
  n = g.n + 1;
  wait_n(s, &g, n, 5000);
  while (!strstr(g.b[n - 1].lines, "v=\"2\"")) /* a scrape that started before the change */
    wait_n(s, &g, ++n, 5000);
  has_line(&g.b[n - 1], L("a{instance=\"127.0.0.1:%d\",job=\"st\"} STALE"));
  has_line(&g.b[n - 1], L("up{instance=\"127.0.0.1:%d\",job=\"st\"} STALE"));
  has_line(&g.b[n - 1], L("a{instance=\"127.0.0.1:%d\",job=\"st\",v=\"2\"} 3"));
  has_line(&g.b[n - 1], L("up{instance=\"127.0.0.1:%d\",job=\"st\",v=\"2\"} 1"));

  /* Removed: one last batch marks everything stale, synthetic series too. */
  configure(s, "{}");
  t = k_scrape_targets_json(s);
  assert_int_equal(json_array_size(t), 0);
  json_decref(t);
  n = g.n;
  for (;;) {
    wait_n(s, &g, n + 1, 5000);
    if (g.b[n].up == -1) break;
    n++;
  }
  assert_int_equal(g.b[n].n, 6);
  has_line(&g.b[n], L("a{instance=\"127.0.0.1:%d\",job=\"st\",v=\"2\"} STALE"));
  has_line(&g.b[n], L("up{instance=\"127.0.0.1:%d\",job=\"st\",v=\"2\"} STALE"));
  has_line(&g.b[n], L("scrape_duration_seconds{instance=\"127.0.0.1:%d\",job=\"st\",v=\"2\"} STALE"));
  has_line(&g.b[n], L("scrape_series_added{instance=\"127.0.0.1:%d\",job=\"st\",v=\"2\"} STALE"));
  /* and nothing after it */
  usleep(700 * 1000);
  k_scrape_poll(s, on_batch, &g);
  assert_int_equal(g.n, n + 1);
#undef L
  k_scrape_free(s);
  got_free(&g);
  srv_stop(&srv);
}

/* ---- a real node exporter ------------------------------------------------------ */

#define NODE_EXPORTER "/usr/bin/prometheus-node-exporter"

static int port_open(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                          .sin_port = htons((uint16_t)port)};
  int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
  assert_true(fd >= 0);
  ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void test_node_exporter(void **state) {
  got_t g = {0};
  k_scrape_t *s;
  char listen[64];
  int port, one = 1, status;
  pid_t pid;
  int64_t end;
  (void)state;
  if (access(NODE_EXPORTER, X_OK)) {
    print_message("skipped: %s is not installed (Debian package prometheus-node-exporter)\n",
                  NODE_EXPORTER);
    skip();
  }
  port = ts_dead_port();
  snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", port);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execl(NODE_EXPORTER, NODE_EXPORTER, listen, (char *)NULL);
    _exit(127);
  }
  end = keel_mono_ms() + 10000;
  while (!port_open(port)) {
    if (keel_mono_ms() > end || waitpid(pid, &status, WNOHANG) == pid) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fail_msg("node exporter did not listen on port %d", port);
    }
    usleep(50 * 1000);
  }
  s = engine();
  configure(s,
            "{\"scrape_configs\":[{\"job_name\":\"node\",\"scrape_interval\":\"1s\","
            "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}]}",
            port);
  wait_n(s, &g, one, 10000);
  if (g.b[0].up != 1) fail_msg("node exporter scrape failed: %s", g.b[0].err);
  assert_true(g.b[0].n > 100);
  assert_non_null(strstr(g.b[0].lines, "\nnode_exporter_build_info{"));
  assert_non_null(strstr(g.b[0].lines, "\ngo_goroutines{instance=\"127.0.0.1:"));
  print_message("node exporter: %zu samples in %.3f s\n", g.b[0].n, g.b[0].dur);
  k_scrape_free(s);
  got_free(&g);
  kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config),   cmocka_unit_test(test_up),
      cmocka_unit_test(test_failures), cmocka_unit_test(test_honor_labels),
      cmocka_unit_test(test_staleness), cmocka_unit_test(test_node_exporter),
  };
  /* The scrape thread's sockets may see a peer close: no SIGPIPE deaths. */
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
