/* keel-agent — the per-host agent (docs/agent-protocol.md).
 *
 *   keel-agent --server URL --state DIR [--enroll-token T] [--tags k=v,...]
 *              [--log-level L] [--heartbeat-check]
 *
 * One thread does everything: the two connections (long-poll + push), the
 * child pipes and a signalfd all wait in one poll (ka_conn_wait).
 *
 * Exit codes: 0 stopped by SIGTERM/SIGINT (or a good --heartbeat-check),
 * 1 runtime failure (enrollment refused, state unusable), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "agent.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "keel/version.h"

#define EXIT_USAGE 2
/* Until the server has told us its heartbeat (first poll answer after a
 * restart), wait this long for a poll answer before calling it lost. */
#define UNKNOWN_HEARTBEAT_MS 50000
#define POLL_SLACK_MS 10000
#define PUSH_TIMEOUT_MS 30000L
#define INVENTORY_EVERY_MS 60000
#define MAX_FDS 64

static void usage(FILE *f) {
  fprintf(f,
          "usage: keel-agent --server URL --state DIR [--enroll-token T] [--tags k=v,...]\n"
          "                  [--log-level error|warn|info|debug] [--heartbeat-check]\n");
}

struct opts {
  const char *server, *state, *token, *tags, *level;
  int heartbeat_check;
};

enum push_kind { PUSH_NONE, PUSH_RESULT, PUSH_INVENTORY };

struct agent {
  const char *dir;
  keel_log_t *log;
  ka_identity_t id;
  ka_conn_t conn;
  ka_exec_t exec;
  long heartbeat_ms;        /* as last told by the server; 0 = unknown */
  ka_backoff_t poll_bo, push_bo;
  int spool_dirty;          /* the spool may hold something to send */
  enum push_kind push_kind;
  json_t *inv;              /* the latest inventory */
  char inv_digest[65];      /* of inv */
  char inv_sent[65];        /* of what the server has; "" = unknown */
  char inv_sending[65];     /* of the one in flight */
  int64_t inv_next;         /* mono ms of the next recomputation */
};

/* ---- enrollment ---------------------------------------------------------- */

/* The server's {"error":{"message"}} or, failing that, the status. */
static void server_message(const keel_buf_t *resp, int status, char *out, size_t outsz) {
  json_t *o = NULL, *err;
  const char *m = NULL;

  if (resp->len && keel_json_parse(resp->data, resp->len, &o, NULL) == 0 &&
      (err = json_object_get(o, "error")))
    m = keel_json_str(err, "message");
  snprintf(out, outsz, "%s (HTTP %d)", m ? m : "no error message", status);
  keel_utf8_sanitize(out);
  json_decref(o);
}

/* Over a->conn's push transfer (already set up: it reads a->id only when
 * signing, which enrollment does not). */
static int enroll(struct agent *a, const struct opts *o, json_t *tags, keel_err_t *e) {
  char pk[2 * KEEL_AGENT_PK_BYTES + 1], msg[512], *body = NULL;
  ka_xfer_t *x = &a->conn.push;
  json_t *req = NULL, *inv = ka_inventory(), *ans = NULL, *hb;
  const char *aid, *spk;
  int status, rc;

  ka_identity_keygen(&a->id);
  keel_hex(pk, a->id.pk, sizeof a->id.pk);
  if (!inv) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  req = json_pack("{s:s,s:s?,s:O,s:O,s:s}", "public_key", pk, "hostname",
                  keel_json_str(inv, "hostname"), "tags", tags, "inventory", inv,
                  "agent_version", KEEL_VERSION);
  body = req ? json_dumps(req, JSON_COMPACT) : NULL;
  if (!body) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  rc = ka_conn_post_bearer(&a->conn, x, "/v1/agent/enroll", body, PUSH_TIMEOUT_MS, o->token, e);
  body = NULL; /* taken */
  if (rc) goto out;
  /* The request's own timeout ends this loop. */
  while (x->active) ka_conn_wait(&a->conn, NULL, 0, 1000);
  x->done = 0;
  if (x->cc) {
    rc = keel_err_set(e, KEEL_EIO, "enrollment: %s", ka_conn_strerror(x));
    goto out;
  }
  status = (int)x->status;
  if (status != 201 && status != 200) {
    server_message(&x->resp, status, msg, sizeof msg);
    rc = keel_err_set(e, status == 401 || status == 403 ? KEEL_EAUTH : KEEL_EIO,
                      "enrollment refused: %s", msg);
    goto out;
  }
  if (keel_json_parse(x->resp.data, x->resp.len, &ans, NULL) || !(aid = keel_json_str(ans, "agent_id")) ||
      !*aid || strlen(aid) >= sizeof a->id.agent_id || !(spk = keel_json_str(ans, "server_public_key")) ||
      keel_unhex(a->id.server_pk, sizeof a->id.server_pk, spk)) {
    rc = keel_err_set(e, KEEL_EIO,
                      "enrollment answer: expected agent_id and server_public_key (64 hex)");
    goto out;
  }
  /* It goes into every Authorization header: only the id alphabet. */
  if (strspn(aid, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(aid)) {
    rc = keel_err_set(e, KEEL_EIO, "enrollment answer: agent_id has unexpected characters");
    goto out;
  }
  snprintf(a->id.agent_id, sizeof a->id.agent_id, "%s", aid);
  snprintf(a->id.server_url, sizeof a->id.server_url, "%s", o->server);
  if ((hb = json_object_get(ans, "heartbeat_ms")) && json_is_integer(hb) &&
      json_integer_value(hb) > 0 && json_integer_value(hb) < 3600000)
    a->heartbeat_ms = (long)json_integer_value(hb);
  /* The server now knows this inventory: no need to send it again until it
   * changes. */
  ka_inventory_digest(a->inv_sent, inv);
  if ((rc = ka_identity_save(a->dir, &a->id, e))) {
    /* The token is spent; say so, since a retry needs a new one. */
    keel_err_set(e, rc, "enrolled as %s but cannot store the identity (%s): a new token is needed",
                 aid, e ? e->msg : "");
    goto out;
  }
  keel_log(a->log, KEEL_LOG_INFO, "enrolled as %s", a->id.agent_id);
out:
  keel_buf_reset(&x->resp);
  free(body);
  json_decref(req);
  json_decref(inv);
  json_decref(ans);
  return rc;
}

/* ---- the loop ------------------------------------------------------------ */

static long poll_timeout(const struct agent *a) {
  return (a->heartbeat_ms > 0 ? a->heartbeat_ms : UNKNOWN_HEARTBEAT_MS) + POLL_SLACK_MS;
}

static void start_poll(struct agent *a) {
  json_t *arr = json_array(), *o = json_object();
  char *body = NULL;
  keel_err_t e;

  if (arr && o) {
    ka_exec_running(&a->exec, arr);
    if (json_object_set(o, "running", arr) == 0) body = json_dumps(o, JSON_COMPACT);
  }
  json_decref(arr);
  json_decref(o);
  if (!body || ka_conn_post(&a->conn, &a->conn.poll, "/v1/agent/poll", body, poll_timeout(a), &e)) {
    /* ka_conn_post took body, even on failure. */
    keel_log(a->log, KEEL_LOG_ERROR, "cannot start poll: %s", body ? e.msg : "out of memory");
    ka_backoff_fail(&a->poll_bo, keel_mono_ms());
  }
}

static void handle_poll(struct agent *a) {
  ka_xfer_t *x = &a->conn.poll;
  json_t *ans = NULL, *jobs, *it, *hb;
  int64_t now = keel_mono_ms();
  keel_err_t e;
  size_t i;

  x->done = 0;
  if (x->cc) {
    keel_log(a->log, KEEL_LOG_WARN, "poll: %s", ka_conn_strerror(x));
    ka_backoff_fail(&a->poll_bo, now);
    goto out;
  }
  if (x->status == 401) {
    char msg[512];
    server_message(&x->resp, 401, msg, sizeof msg);
    /* Retired, or the server lost us: a person must act; never re-enroll. */
    keel_log(a->log, KEEL_LOG_ERROR, "poll refused: %s; retrying in 30 s", msg);
    ka_backoff_cap(&a->poll_bo, now);
    goto out;
  }
  if (x->status != 200) {
    char msg[512];
    server_message(&x->resp, (int)x->status, msg, sizeof msg);
    keel_log(a->log, KEEL_LOG_WARN, "poll: %s", msg);
    ka_backoff_fail(&a->poll_bo, now);
    goto out;
  }
  if (keel_json_parse(x->resp.data, x->resp.len, &ans, &e) || !json_is_object(ans)) {
    keel_log(a->log, KEEL_LOG_WARN, "poll answer: %s", ans ? "not an object" : e.msg);
    ka_backoff_fail(&a->poll_bo, now);
    goto out;
  }
  ka_backoff_reset(&a->poll_bo);
  if ((hb = json_object_get(ans, "heartbeat_ms")) && json_is_integer(hb) &&
      json_integer_value(hb) > 0 && json_integer_value(hb) < 3600000)
    a->heartbeat_ms = (long)json_integer_value(hb);
  jobs = json_object_get(ans, "jobs");
  json_array_foreach(jobs, i, it) {
    json_t *jt = json_object_get(it, "job");
    const char *sig = keel_json_str(it, "sig");
    if (!json_is_string(jt)) {
      keel_log(a->log, KEEL_LOG_WARN, "poll answer: jobs[%zu] has no job text", i);
      continue;
    }
    if (ka_exec_submit(&a->exec, json_string_value(jt), json_string_length(jt), sig) != 0)
      a->spool_dirty = 1;
  }
out:
  json_decref(ans);
  keel_buf_reset(&x->resp);
}

static void start_push(struct agent *a) {
  char id[KA_RUN_ID_MAX + 1], *body = NULL;
  size_t len;
  keel_err_t e;
  int rc;

  if (a->spool_dirty) {
    rc = ka_spool_oldest(a->dir, id, &body, &len, &e);
    if (rc == KEEL_ENOENT) {
      a->spool_dirty = 0;
    } else if (rc) {
      keel_log(a->log, KEEL_LOG_ERROR, "spool: %s", e.msg);
      ka_backoff_fail(&a->push_bo, keel_mono_ms());
      return;
    } else {
      snprintf(a->conn.push.tag, sizeof a->conn.push.tag, "%s", id);
      a->push_kind = PUSH_RESULT;
      if (ka_conn_post(&a->conn, &a->conn.push, "/v1/agent/results", body, PUSH_TIMEOUT_MS, &e)) {
        keel_log(a->log, KEEL_LOG_ERROR, "cannot send result %s: %s", id, e.msg);
        a->push_kind = PUSH_NONE;
        ka_backoff_fail(&a->push_bo, keel_mono_ms());
      }
      return;
    }
  }
  if (a->inv && strcmp(a->inv_digest, a->inv_sent)) {
    json_t *o = json_pack("{s:s?,s:O}", "hostname", keel_json_str(a->inv, "hostname"),
                          "inventory", a->inv);
    body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) return;
    strcpy(a->inv_sending, a->inv_digest);
    a->push_kind = PUSH_INVENTORY;
    if (ka_conn_post(&a->conn, &a->conn.push, "/v1/agent/inventory", body, PUSH_TIMEOUT_MS, &e)) {
      keel_log(a->log, KEEL_LOG_ERROR, "cannot send inventory: %s", e.msg);
      a->push_kind = PUSH_NONE;
      ka_backoff_fail(&a->push_bo, keel_mono_ms());
    }
  }
}

static int push_pending(const struct agent *a) {
  return a->spool_dirty || (a->inv && strcmp(a->inv_digest, a->inv_sent));
}

static void handle_push(struct agent *a) {
  ka_xfer_t *x = &a->conn.push;
  int64_t now = keel_mono_ms();
  enum push_kind kind = a->push_kind;
  char msg[512];

  x->done = 0;
  a->push_kind = PUSH_NONE;
  if (x->cc) {
    keel_log(a->log, KEEL_LOG_WARN, "%s: %s", kind == PUSH_RESULT ? "result" : "inventory",
             ka_conn_strerror(x));
    ka_backoff_fail(&a->push_bo, now);
    goto out;
  }
  if (kind == PUSH_RESULT) {
    if (x->status == 200) {
      json_t *ans = NULL;
      const char *ack = NULL;
      if (keel_json_parse(x->resp.data, x->resp.len, &ans, NULL) == 0)
        ack = keel_json_str(ans, "ack");
      if (ack && !strcmp(ack, x->tag)) {
        /* Acknowledged means stored durably: now, and only now, forget it. */
        ka_spool_drop(a->dir, x->tag);
        keel_log(a->log, KEEL_LOG_DEBUG, "run %s: result acknowledged", x->tag);
        ka_backoff_reset(&a->push_bo);
      } else {
        keel_log(a->log, KEEL_LOG_WARN, "run %s: answer without its ack; will resend", x->tag);
        ka_backoff_fail(&a->push_bo, now);
      }
      json_decref(ans);
    } else if (x->status >= 400 && x->status < 500 && x->status != 401 && x->status != 408 &&
               x->status != 429) {
      /* The server will never take this one (unknown run, malformed): keeping
       * it would block the spool forever. */
      server_message(&x->resp, (int)x->status, msg, sizeof msg);
      keel_log(a->log, KEEL_LOG_ERROR, "run %s: result rejected, dropped: %s", x->tag, msg);
      ka_spool_drop(a->dir, x->tag);
    } else {
      server_message(&x->resp, (int)x->status, msg, sizeof msg);
      keel_log(a->log, KEEL_LOG_WARN, "run %s: result not stored: %s; will retry", x->tag, msg);
      ka_backoff_fail(&a->push_bo, now);
    }
  } else if (kind == PUSH_INVENTORY) {
    if (x->status == 200) {
      strcpy(a->inv_sent, a->inv_sending);
      ka_backoff_reset(&a->push_bo);
    } else if (x->status >= 400 && x->status < 500 && x->status != 401 && x->status != 408 &&
               x->status != 429) {
      server_message(&x->resp, (int)x->status, msg, sizeof msg);
      keel_log(a->log, KEEL_LOG_ERROR, "inventory rejected: %s; next try when it changes", msg);
      strcpy(a->inv_sent, a->inv_sending);
    } else {
      server_message(&x->resp, (int)x->status, msg, sizeof msg);
      keel_log(a->log, KEEL_LOG_WARN, "inventory: %s; will retry", msg);
      ka_backoff_fail(&a->push_bo, now);
    }
  }
out:
  keel_buf_reset(&x->resp);
  if (kind == PUSH_RESULT) malloc_trim(0); /* a result body may have been megabytes */
}

static void refresh_inventory(struct agent *a) {
  json_t *inv = ka_inventory();
  if (!inv) return;
  json_decref(a->inv);
  a->inv = inv;
  ka_inventory_digest(a->inv_digest, inv);
}

static long min_wait(long cur, int64_t until, int64_t now) {
  long d = until > now ? (long)(until - now) : 0;
  return d < cur ? d : cur;
}

/* Returns the exit code. */
static int run(struct agent *a, int sigfd) {
  struct pollfd fds[MAX_FDS];
  int stop = 0;

  a->spool_dirty = 1;
  while (!stop) {
    int64_t now = keel_mono_ms();
    long wait = INVENTORY_EVERY_MS, ex;
    size_t n;

    if (now >= a->inv_next) {
      refresh_inventory(a);
      a->inv_next = now + INVENTORY_EVERY_MS;
    }
    if (!a->conn.poll.active && now >= a->poll_bo.until) start_poll(a);
    if (!a->conn.push.active && now >= a->push_bo.until && push_pending(a)) start_push(a);

    if (!a->conn.poll.active) wait = min_wait(wait, a->poll_bo.until, now);
    if (!a->conn.push.active && push_pending(a)) wait = min_wait(wait, a->push_bo.until, now);
    wait = min_wait(wait, a->inv_next, now);
    if ((ex = ka_exec_next_ms(&a->exec)) >= 0 && ex < wait) wait = ex;

    fds[0] = (struct pollfd){.fd = sigfd, .events = POLLIN};
    n = 1 + ka_exec_fds(&a->exec, fds + 1, MAX_FDS - 1);
    ka_conn_wait(&a->conn, fds, (unsigned)n, (int)wait);

    if (fds[0].revents) {
      struct signalfd_siginfo si;
      while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
          keel_log(a->log, KEEL_LOG_INFO, "signal %u: stopping (running commands are left alone)",
                   si.ssi_signo);
          stop = 1;
        }
        /* SIGCHLD only wakes us: ka_exec_step reaps. */
      }
    }
    if (ka_exec_step(&a->exec) > 0) a->spool_dirty = 1;
    if (a->conn.poll.done) handle_poll(a);
    if (a->conn.push.done) handle_push(a);
  }
  return 0;
}

/* One poll, to check that identity and server agree: 0 when it is answered
 * 200.  Jobs in the answer are not run (they are delivered again). */
static int heartbeat_check(struct agent *a) {
  struct pollfd none[1];
  int64_t end;

  a->heartbeat_ms = 0;
  start_poll(a);
  end = keel_mono_ms() + poll_timeout(a) + 1000;
  while (a->conn.poll.active && keel_mono_ms() < end) ka_conn_wait(&a->conn, none, 0, 1000);
  if (!a->conn.poll.done) {
    fprintf(stderr, "keel-agent: heartbeat check: no answer\n");
    return 1;
  }
  if (a->conn.poll.cc) {
    fprintf(stderr, "keel-agent: heartbeat check: %s\n", ka_conn_strerror(&a->conn.poll));
    return 1;
  }
  if (a->conn.poll.status != 200) {
    char msg[512];
    server_message(&a->conn.poll.resp, (int)a->conn.poll.status, msg, sizeof msg);
    fprintf(stderr, "keel-agent: heartbeat check: %s\n", msg);
    return 1;
  }
  printf("ok %s\n", a->id.agent_id);
  return 0;
}

/* Children get 0-2 as their stdio via dup2 of higher fds; with 0-2
 * closed, our own pipes could land there and be clobbered. */
static void ensure_std_fds(void) {
  for (int i = 0; i < 3; i++)
    if (fcntl(i, F_GETFD) < 0 && errno == EBADF) {
      int fd = open("/dev/null", O_RDWR);
      if (fd > 2) close(fd);
    }
}

int main(int argc, char **argv) {
  static const struct option lopts[] = {
      {"server", required_argument, NULL, 's'},  {"state", required_argument, NULL, 'd'},
      {"enroll-token", required_argument, NULL, 't'}, {"tags", required_argument, NULL, 'g'},
      {"log-level", required_argument, NULL, 'l'}, {"heartbeat-check", no_argument, NULL, 'c'},
      {"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  struct opts o = {0};
  struct agent a;
  keel_log_t log = {keel_log_stderr, "keel-agent", KEEL_LOG_INFO};
  json_t *tags = NULL;
  keel_err_t e;
  sigset_t mask;
  int c, rc = 1, sigfd = -1, lockfd = -1, exec_up = 0, conn_up = 0;

  memset(&a, 0, sizeof a);
  /* Big buffers (outputs, result bodies) go to mmap and back to the OS on
   * free.  A fixed threshold also turns off glibc's dynamic one, which
   * would otherwise rise after the first big free and keep later big
   * buffers on the heap, where they fragment the idle footprint. */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024);
  while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
    switch (c) {
    case 's': o.server = optarg; break;
    case 'd': o.state = optarg; break;
    case 't': o.token = optarg; break;
    case 'g': o.tags = optarg; break;
    case 'l': o.level = optarg; break;
    case 'c': o.heartbeat_check = 1; break;
    case 'h': usage(stdout); return 0;
    case 'V': printf("keel-agent %s\n", KEEL_VERSION); return 0;
    default: usage(stderr); return EXIT_USAGE;
    }
  }
  if (optind != argc || !o.server || !o.state) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (o.level) {
    int l = keel_log_level_parse(o.level);
    if (l < 0) {
      fprintf(stderr, "keel-agent: --log-level '%s': expected error, warn, info or debug\n",
              o.level);
      return EXIT_USAGE;
    }
    log.level = l;
  }
  if (o.tags && keel_tags_parse(o.tags, strlen(o.tags), &tags, &e)) {
    fprintf(stderr, "keel-agent: --tags: %s\n", e.msg);
    return EXIT_USAGE;
  }
  if (strncasecmp(o.server, "http://", 7) && strncasecmp(o.server, "https://", 8)) {
    fprintf(stderr, "keel-agent: --server '%s': expected http://HOST[:PORT] or https://...\n",
            o.server);
    rc = EXIT_USAGE;
    goto out;
  }
  if (strlen(o.server) >= sizeof a.id.server_url) {
    fprintf(stderr, "keel-agent: --server: longer than %zu bytes\n", sizeof a.id.server_url - 1);
    rc = EXIT_USAGE;
    goto out;
  }
  if (strlen(o.state) > KA_STATE_DIR_MAX) {
    fprintf(stderr, "keel-agent: --state: longer than %d bytes\n", KA_STATE_DIR_MAX);
    rc = EXIT_USAGE;
    goto out;
  }
  ensure_std_fds();
  a.dir = o.state;
  a.log = &log;
  if (keel_crypto_init()) {
    fprintf(stderr, "keel-agent: cannot initialise libsodium\n");
    goto out;
  }
  if (ka_state_prepare(o.state, &e)) {
    fprintf(stderr, "keel-agent: state directory: %s\n", e.msg);
    goto out;
  }
  /* Two agents on one state directory would each run every job (their
   * seen sets differ in memory) and race on the spool. The lock dies with
   * the process, so a crash never leaves it behind. */
  lockfd = open(o.state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB)) {
    fprintf(stderr, "keel-agent: %s: %s\n", o.state,
            errno == EWOULDBLOCK ? "another keel-agent is using this state directory"
                                 : strerror(errno));
    goto out;
  }
  /* Before enrollment, which uses it.  For https:// this loads libcurl;
   * a plain-http agent never does (its footprint). */
  if (ka_conn_init(&a.conn, o.server, &a.id, &log, &e)) {
    fprintf(stderr, "keel-agent: %s\n", e.msg);
    goto out;
  }
  conn_up = 1;
  rc = ka_identity_load(o.state, &a.id, &e);
  if (rc == KEEL_ENOENT) {
    if (!o.token) {
      fprintf(stderr,
              "keel-agent: %s/identity.json does not exist: the first start needs "
              "--enroll-token (create one with POST /v1/agent-tokens)\n",
              o.state);
      rc = EXIT_USAGE;
      goto out;
    }
    if (!tags && !(tags = json_object())) {
      rc = 1;
      goto out;
    }
    if (enroll(&a, &o, tags, &e)) {
      fprintf(stderr, "keel-agent: %s\n", e.msg);
      rc = 1;
      goto out;
    }
  } else if (rc) {
    fprintf(stderr, "keel-agent: identity: %s\n", e.msg);
    rc = 1;
    goto out;
  } else {
    if (o.token)
      keel_log(&log, KEEL_LOG_INFO, "already enrolled as %s: --enroll-token ignored",
               a.id.agent_id);
    if (o.tags)
      keel_log(&log, KEEL_LOG_INFO,
               "already enrolled: --tags ignored (tags are changed on the server)");
    if (strcmp(a.id.server_url, o.server))
      keel_log(&log, KEEL_LOG_WARN, "enrolled with %s, now talking to %s", a.id.server_url,
               o.server);
  }
  rc = 1;
  if (o.heartbeat_check) {
    rc = heartbeat_check(&a);
    goto out;
  }

  /* Signals arrive through the poll: no handlers, no races. */
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) ||
      (sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
    fprintf(stderr, "keel-agent: signalfd: %s\n", strerror(errno));
    goto out;
  }
  if (ka_spool_recover(o.state, &log, &e) < 0) {
    fprintf(stderr, "keel-agent: recovering interrupted runs: %s\n", e.msg);
    goto out;
  }
  if (ka_exec_init(&a.exec, o.state, &a.id, &log, &e)) {
    fprintf(stderr, "keel-agent: %s\n", e.msg);
    goto out;
  }
  exec_up = 1;
  keel_log(&log, KEEL_LOG_INFO, "agent %s polling %s", a.id.agent_id, o.server);
  rc = run(&a, sigfd);
out:
  if (exec_up) ka_exec_free(&a.exec);
  if (conn_up) ka_conn_free(&a.conn);
  if (sigfd >= 0) close(sigfd);
  if (lockfd >= 0) close(lockfd);
  json_decref(a.inv);
  json_decref(tags);
  ka_identity_wipe(&a.id);
  fflush(stdout);
  fflush(stderr);
  return rc;
}
