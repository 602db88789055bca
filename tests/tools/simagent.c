/* simagent.c — simulated keel agents and the keeld they talk to
 * (simagent.h states the contracts). */
#define _GNU_SOURCE
#include "simagent.h"

#include <errno.h>
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

#include "keel/crypto.h"
#include "keel/http.h"
#include "keel/json.h"
#include "keel/time.h"

int ksim_init(const char *prog) {
  struct rlimit rl;
  keel_err_t e = {0};
  signal(SIGPIPE, SIG_IGN);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (keel_crypto_init() || keel_http_global_init(&e)) {
    fprintf(stderr, "%s: init: %s\n", prog, e.msg[0] ? e.msg : "libsodium");
    return -1;
  }
  return 0;
}

void ksim_cleanup(void) { keel_http_global_cleanup(); }

/* ---- keeld under test ------------------------------------------------------------------ */

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

static void show_log(const ksim_keeld_t *k, int max_lines) {
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

static void rmrf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

/* GET /readyz until 200, or -1 at end_ms (keel_mono_ms). */
static int wait_ready(const ksim_keeld_t *k, int64_t end_ms) {
  keel_http_t h;
  keel_buf_t resp;
  keel_err_t e = {0};
  int rc = -1;
  if (keel_http_init(&h, k->url, NULL, 2000, &e)) return -1;
  keel_buf_init(&resp, 1 << 16);
  for (;;) {
    int st = 0;
    if (!keel_http_request(&h, "GET", "/readyz", NULL, 0, &st, &resp, &e) && st == 200) {
      rc = 0;
      break;
    }
    if (keel_mono_ms() > end_ms) {
      fprintf(stderr, "bench: keeld not ready\n");
      break;
    }
    usleep(20000);
  }
  keel_buf_free(&resp);
  keel_http_free(&h);
  return rc;
}

int ksim_keeld_start(ksim_keeld_t *k, const char *name, char *const extra[]) {
  char exe[PATH_MAX], bin[PATH_MAX + 16], path[400];
  char *argv[32] = {bin, "--data", NULL, "--listen", "127.0.0.1:0"};
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  int status, argc = 5;
  int64_t end;

  memset(k, 0, sizeof *k);
  if (n <= 0) return -1;
  exe[n] = '\0';
  snprintf(bin, sizeof bin, "%s/keeld", dirname(exe));
  snprintf(k->dir, sizeof k->dir, "%s/keel-%s-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           name);
  if (!mkdtemp(k->dir)) {
    k->dir[0] = '\0';
    return -1;
  }
  snprintf(k->data, sizeof k->data, "%s/d", k->dir);
  snprintf(k->log, sizeof k->log, "%s/keeld.log", k->dir);
  {
    char *init[] = {bin, "init", "--data", k->data, NULL};
    pid_t p = spawn(k->log, init);
    if (p < 0 || waitpid(p, &status, 0) != p || !WIFEXITED(status) || WEXITSTATUS(status)) {
      fprintf(stderr, "bench: %s init failed\n", bin);
      show_log(k, 20);
      goto fail;
    }
  }
  if (truncate(k->log, 0)) { /* init's output holds the admin token: not worth keeping */
  }
  argv[2] = k->data;
  for (int i = 0; extra && extra[i] && argc < 31; i++) argv[argc++] = extra[i];
  argv[argc] = NULL;
  end = keel_mono_ms() + 20000;
  if ((k->pid = spawn(k->log, argv)) < 0) goto fail;
  snprintf(path, sizeof path, "%s/keeld.url", k->data);
  while (read_line(path, k->url, sizeof k->url)) {
    if (keel_mono_ms() > end || waitpid(k->pid, &status, WNOHANG) == k->pid) {
      fprintf(stderr, "bench: keeld did not start\n");
      show_log(k, 20);
      goto fail;
    }
    usleep(20000);
  }
  snprintf(path, sizeof path, "%s/admin.token", k->data);
  if (read_line(path, k->admin, sizeof k->admin) || wait_ready(k, end)) goto fail;
  return 0;
fail:
  /* nothing is left behind: the process (if any) and the directory go */
  if (k->pid > 0 && waitpid(k->pid, &status, WNOHANG) == 0) {
    kill(k->pid, SIGKILL);
    waitpid(k->pid, &status, 0);
  }
  k->pid = 0;
  rmrf(k->dir);
  return -1;
}

long ksim_keeld_rss_kb(const ksim_keeld_t *k) {
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

double ksim_keeld_cpu_s(const ksim_keeld_t *k) {
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

double ksim_self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void ksim_keeld_stop(ksim_keeld_t *k) {
  int status = 0;
  struct stat sb;
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
  if (!stat(k->log, &sb) && sb.st_size > 0) {
    fprintf(stderr, "  keeld's log (--log-level warn) is not empty:\n");
    show_log(k, 20);
  }
  if (k->dir[0]) rmrf(k->dir);
  sodium_memzero(k->admin, sizeof k->admin);
}

static double metric(const char *text, const char *name) {
  size_t n = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (!strncmp(p, name, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
  return 0;
}

void ksim_keeld_metrics(const char *url, ksim_kmetrics_t *m) {
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

int ksim_enroll_token(const char *url, const char *admin, const char *tags_json, int uses,
                      char *token, size_t len) {
  keel_http_t h;
  keel_buf_t resp, body;
  keel_err_t e = {0};
  json_t *v = NULL;
  int st = 0, rc = -1;

  keel_buf_init(&resp, 1 << 16);
  keel_buf_init(&body, 4096);
  if (keel_buf_printf(&body, "{\"tags\":%s,\"ttl\":\"1h\",\"uses\":%d}",
                      tags_json ? tags_json : "{}", uses) ||
      keel_http_init(&h, url, admin, 10000, &e))
    goto out;
  if (keel_http_request(&h, "POST", "/v1/agent-tokens", body.data, body.len, &st, &resp, &e) ||
      st != 201 || keel_json_parse(resp.data, resp.len, &v, NULL) || !keel_json_str(v, "token") ||
      strlen(keel_json_str(v, "token")) >= len)
    fprintf(stderr, "bench: POST /v1/agent-tokens: %d %s %s\n", st, e.msg,
            resp.data ? resp.data : "");
  else
    rc = snprintf(token, len, "%s", keel_json_str(v, "token")) < 0 ? -1 : 0;
  keel_http_free(&h);
out:
  json_decref(v);
  keel_buf_free(&resp);
  keel_buf_free(&body);
  return rc;
}

int ksim_apply(const char *url, const char *admin, const char *what, const char *doc) {
  keel_http_t h;
  keel_buf_t resp;
  keel_err_t e = {0};
  int st = 0, rc = -1;
  keel_buf_init(&resp, 1 << 16);
  if (!keel_http_init(&h, url, admin, 10000, &e)) {
    if (!keel_http_request(&h, "POST", "/v1/apply", doc, strlen(doc), &st, &resp, &e) && st == 200)
      rc = 0;
    keel_http_free(&h);
  }
  if (rc)
    fprintf(stderr, "bench: POST /v1/apply (%s): %d %s %s\n", what, st, e.msg,
            resp.data ? resp.data : "");
  keel_buf_free(&resp);
  return rc;
}

/* ---- one simulated agent --------------------------------------------------------------- */

static int queued_or_seen(const ksim_agent_t *a, const char *run) {
  for (int i = 0; i < KSIM_SEEN; i++)
    if (!strcmp(a->seen[i], run)) return 1;
  for (int i = 0; i < a->qn; i++)
    if (!strcmp(a->q[i].run, run)) return 1;
  return 0;
}

void ksim_take_jobs(ksim_agent_t *a, const json_t *jobs, ksim_job_fn fn, void *ud,
                    ksim_counts_t *c) {
  size_t i;
  const json_t *j;
  json_array_foreach(jobs, i, j) {
    const char *text = keel_json_str(j, "job"), *sig = keel_json_str(j, "sig");
    json_t *job = NULL;
    const char *run, *cmd, *agent;
    if (!text || !sig || keel_agent_verify_job(sig, a->spk, text, strlen(text), NULL)) {
      c->sig_fail++;
      continue;
    }
    if (keel_json_parse(text, strlen(text), &job, NULL) ||
        !(run = keel_json_str(job, "run_id")) || !(cmd = keel_json_str(job, "command_id")) ||
        !(agent = keel_json_str(job, "agent_id")) || strcmp(agent, a->id) ||
        strlen(run) >= sizeof a->q[0].run || strlen(cmd) >= sizeof a->q[0].cmd) {
      c->bad_job++;
      json_decref(job);
      continue;
    }
    if (queued_or_seen(a, run)) {
      c->redelivered++;
    } else if (a->qn == KSIM_QMAX) {
      c->qfull++;
    } else {
      snprintf(a->q[a->qn].run, sizeof a->q[0].run, "%s", run);
      snprintf(a->q[a->qn].cmd, sizeof a->q[0].cmd, "%s", cmd);
      a->qn++;
      if (fn) fn(ud, a, job);
    }
    json_decref(job);
  }
}

int ksim_poll_body(const ksim_agent_t *a, keel_buf_t *body) {
  int rc = 0;
  keel_buf_reset(body);
  if (a->qn == 0) return keel_buf_puts(body, "{}");
  rc |= keel_buf_puts(body, "{\"running\":[");
  for (int i = 0; i < a->qn; i++)
    rc |= keel_buf_printf(body, "%s\"%s\"", i ? "," : "", a->q[i].run);
  rc |= keel_buf_puts(body, "]}");
  return rc ? -1 : 0;
}

int ksim_result_body(const ksim_agent_t *a, keel_buf_t *body, int exit_code) {
  int64_t now = keel_now_ms();
  if (a->qn == 0) return -1;
  keel_buf_reset(body);
  return keel_buf_printf(body,
                         "{\"run_id\":\"%s\",\"status\":\"exited\",\"exit_code\":%d,"
                         "\"stdout_b64\":\"\",\"stderr_b64\":\"\",\"started_at\":%lld,"
                         "\"ended_at\":%lld}",
                         a->q[0].run, exit_code, (long long)now, (long long)now)
             ? -1
             : 0;
}

int ksim_acked(ksim_agent_t *a, const json_t *answer, ksim_run_t *out) {
  const char *ack = keel_json_str(answer, "ack");
  if (!ack || a->qn == 0 || strcmp(ack, a->q[0].run)) return -1;
  if (out) *out = a->q[0];
  snprintf(a->seen[a->seen_pos], sizeof a->seen[0], "%s", a->q[0].run);
  a->seen_pos = (a->seen_pos + 1) % KSIM_SEEN;
  memmove(&a->q[0], &a->q[1], (size_t)(a->qn - 1) * sizeof a->q[0]);
  a->qn--;
  return 0;
}

/* ---- transfers ------------------------------------------------------------------------- */

static size_t on_write(char *p, size_t sz, size_t n, void *ud) {
  keel_buf_t *b = ud;
  return keel_buf_append(b, p, sz * n) ? 0 : sz * n;
}

int ksim_xfer_init(ksim_xfer_t *x, int kind, void *ud) {
  memset(x, 0, sizeof *x);
  x->kind = kind;
  x->ud = ud;
  keel_buf_init(&x->in, 1 << 20);
  keel_buf_init(&x->body, 1 << 16);
  keel_buf_init(&x->auth, 1024);
  if (!(x->h = curl_easy_init())) return -1;
  curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
  curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(x->h, CURLOPT_WRITEDATA, &x->in);
  curl_easy_setopt(x->h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(x->h, CURLOPT_TCP_NODELAY, 1L);
  return 0;
}

void ksim_xfer_free(ksim_loop_t *l, ksim_xfer_t *x) {
  if (x->h) {
    if (x->busy && l && l->m) curl_multi_remove_handle(l->m, x->h);
    curl_easy_cleanup(x->h);
  }
  curl_slist_free_all(x->hdrs);
  keel_buf_free(&x->in);
  keel_buf_free(&x->body);
  keel_buf_free(&x->auth);
  memset(x, 0, sizeof *x);
}

int ksim_xfer_sign(ksim_xfer_t *x, const ksim_agent_t *a, const char *path) {
  return keel_agent_sign_request(&x->auth, a->id, a->sk, "POST", path, keel_now_ms(), x->body.data,
                                 x->body.len)
             ? -1
             : 0;
}

int ksim_agent_post(ksim_loop_t *l, ksim_xfer_t *x, const ksim_agent_t *a, const char *path,
                    const char *ctype, long timeout_ms) {
  if (ksim_xfer_sign(x, a, path)) return -1;
  return ksim_xfer_send(l, x, "POST", path, ctype, timeout_ms);
}

int ksim_xfer_bearer(ksim_xfer_t *x, const char *token) {
  keel_buf_reset(&x->auth);
  return keel_buf_printf(&x->auth, "Bearer %s", token) ? -1 : 0;
}

int ksim_xfer_send(ksim_loop_t *l, ksim_xfer_t *x, const char *method, const char *path,
                   const char *ctype, long timeout_ms) {
  char url[512], hdr[2048];
  int post = !strcmp(method, "POST");
  snprintf(url, sizeof url, "%s%s", l->url, path);
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  if (x->auth.len) {
    snprintf(hdr, sizeof hdr, "Authorization: %s", x->auth.data);
    x->hdrs = curl_slist_append(x->hdrs, hdr);
  }
  if (post) {
    snprintf(hdr, sizeof hdr, "Content-Type: %s", ctype ? ctype : "application/json");
    x->hdrs = curl_slist_append(x->hdrs, hdr);
    x->hdrs = curl_slist_append(x->hdrs, "Expect:");
  }
  keel_buf_reset(&x->in);
  curl_easy_setopt(x->h, CURLOPT_URL, url);
  curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->hdrs);
  if (post) {
    curl_easy_setopt(x->h, CURLOPT_POSTFIELDS, x->body.data ? x->body.data : "");
    curl_easy_setopt(x->h, CURLOPT_POSTFIELDSIZE, (long)x->body.len);
  } else {
    curl_easy_setopt(x->h, CURLOPT_HTTPGET, 1L);
  }
  curl_easy_setopt(x->h, CURLOPT_TIMEOUT_MS, timeout_ms);
  x->t_start_ns = keel_mono_ns();
  x->t_done_ns = 0;
  if (curl_multi_add_handle(l->m, x->h) != CURLM_OK) return -1;
  x->busy = 1;
  return 0;
}

/* curl says which sockets to watch (socket_action API). */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp) {
  ksim_loop_t *l = ud;
  struct epoll_event ev = {0};
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
    curl_multi_assign(l->m, fd, NULL);
    return 0;
  }
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  ev.data.fd = fd;
  if (epoll_ctl(l->ep, sockp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) &&
      epoll_ctl(l->ep, errno == EEXIST ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev))
    fprintf(stderr, "  epoll_ctl(%d): %s\n", (int)fd, strerror(errno));
  curl_multi_assign(l->m, fd, (void *)1);
  return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *ud) {
  ksim_loop_t *l = ud;
  (void)m;
  l->timer_ms = timeout_ms < 0 ? -1 : keel_mono_ms() + timeout_ms;
  return 0;
}

int ksim_loop_init(ksim_loop_t *l, const char *url, long maxconnects, ksim_done_fn done,
                   void *ud) {
  memset(l, 0, sizeof *l);
  l->ep = -1;
  l->timer_ms = -1;
  l->done = done;
  l->ud = ud;
  snprintf(l->url, sizeof l->url, "%s", url);
  if (!(l->m = curl_multi_init()) || (l->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) return -1;
  curl_multi_setopt(l->m, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(l->m, CURLMOPT_SOCKETDATA, l);
  curl_multi_setopt(l->m, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(l->m, CURLMOPT_TIMERDATA, l);
  curl_multi_setopt(l->m, CURLMOPT_MAXCONNECTS, maxconnects);
  return 0;
}

void ksim_loop_free(ksim_loop_t *l) {
  if (l->m) curl_multi_cleanup(l->m);
  if (l->ep > 0) close(l->ep); /* 0: a zeroed loop, never initialized */
  l->m = NULL;
  l->ep = -1;
}

static void drain(ksim_loop_t *l) {
  int left;
  CURLMsg *msg;
  while ((msg = curl_multi_info_read(l->m, &left))) {
    ksim_xfer_t *x = NULL;
    long st = 0, nc = 0;
    CURLcode cc;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_getinfo(x->h, CURLINFO_NUM_CONNECTS, &nc);
    l->new_conns += (unsigned long)nc;
    cc = msg->data.result;
    curl_multi_remove_handle(l->m, x->h);
    x->busy = 0;
    x->t_done_ns = l->last_done_ns = keel_mono_ns();
    l->done(l->ud, x, cc, st);
  }
}

void ksim_loop_step(ksim_loop_t *l, int wait_ms) {
  struct epoll_event ev[512];
  int running, n, to = wait_ms;
  int64_t now = keel_mono_ms();

  if (l->timer_ms >= 0 && l->timer_ms - now < to)
    to = l->timer_ms <= now ? 0 : (int)(l->timer_ms - now);
  n = epoll_wait(l->ep, ev, (int)(sizeof ev / sizeof ev[0]), to);
  for (int i = 0; i < n; i++) {
    int f = (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
            (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
            (ev[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(l->m, ev[i].data.fd, f, &running);
  }
  if (l->timer_ms >= 0 && keel_mono_ms() >= l->timer_ms) {
    l->timer_ms = -1;
    curl_multi_socket_action(l->m, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  drain(l);
}

/* ---- enrollment ------------------------------------------------------------------------ */

typedef struct enroll_ctx {
  int done, failed, shown;
} enroll_ctx_t;

static void on_enrolled(void *ud, ksim_xfer_t *x, CURLcode cc, long st) {
  enroll_ctx_t *c = ud;
  ksim_agent_t *a = x->ud;
  json_t *v = NULL;
  const char *id = NULL, *spk = NULL;
  if (cc == CURLE_OK && st == 201 && !keel_json_parse(x->in.data, x->in.len, &v, NULL)) {
    id = keel_json_str(v, "agent_id");
    spk = keel_json_str(v, "server_public_key");
  }
  c->done++;
  if (id && spk && strlen(id) < sizeof a->id && !keel_unhex(a->spk, sizeof a->spk, spk)) {
    snprintf(a->id, sizeof a->id, "%s", id);
  } else {
    c->failed++;
    if (c->shown++ < 5)
      fprintf(stderr, "  enrollment of agent %d: %s, status %ld: %.200s\n", a->idx,
              curl_easy_strerror(cc), st, x->in.data ? x->in.data : "");
  }
  json_decref(v);
}

int ksim_enroll(const char *url, const char *token, ksim_agent_t *a, int n, const char *prefix,
                const char *tags_json, int parallel) {
  ksim_loop_t l;
  ksim_xfer_t *x = calloc((size_t)(parallel > 0 ? parallel : 1), sizeof *x);
  enroll_ctx_t c = {0};
  int next = 0, inflight = 0, nx = parallel > 0 ? parallel : 1;

  if (!x || ksim_loop_init(&l, url, nx + 8L, on_enrolled, &c)) {
    free(x);
    return n;
  }
  for (int i = 0; i < nx; i++)
    if (ksim_xfer_init(&x[i], 0, NULL) || ksim_xfer_bearer(&x[i], token)) c.done = c.failed = n;
  while (c.done < n) {
    inflight = 0;
    for (int i = 0; i < nx; i++) {
      char pk[2 * KEEL_AGENT_PK_BYTES + 1];
      ksim_agent_t *s;
      if (x[i].busy) {
        inflight++;
        continue;
      }
      if (next == n) continue;
      s = &a[next];
      s->idx = next++;
      crypto_sign_keypair(s->pk, s->sk);
      keel_hex(pk, s->pk, sizeof s->pk);
      keel_buf_reset(&x[i].body);
      x[i].ud = s;
      if (keel_buf_printf(&x[i].body, "{\"public_key\":\"%s\",\"hostname\":\"%s%d\"%s%s}", pk,
                          prefix, s->idx, tags_json ? ",\"tags\":" : "",
                          tags_json ? tags_json : "") ||
          ksim_xfer_send(&l, &x[i], "POST", "/v1/agent/enroll", NULL, 30000)) {
        c.done++;
        c.failed++;
        continue;
      }
      inflight++;
    }
    if (inflight) ksim_loop_step(&l, 100);
  }
  for (int i = 0; i < nx; i++) ksim_xfer_free(&l, &x[i]);
  ksim_loop_free(&l);
  free(x);
  return c.failed;
}

/* ---- figures --------------------------------------------------------------------------- */

int ksim_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int ksim_cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

double ksim_pct(const double *v, int n, double p) {
  int r = (int)((p / 100.0) * n + 0.999999);
  if (r < 1) r = 1;
  if (r > n) r = n;
  return v[r - 1];
}
