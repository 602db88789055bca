/* keel-agent — the per-host agent (docs/agent-protocol.md).
 *
 *   keel-agent --server URL --state DIR [--enroll-token T] [--tags k=v,...]
 *              [--log-level L] [--heartbeat-check]
 *              [--interval D] [--process NAME]... [--no-metrics]
 *              [--metrics-spool-max SIZE] [--metrics-spool-batches N]
 *              [--watch-process NAME]... [--watch-file PATH]...
 *              [--check NAME=COMMAND]... [--check-interval D] [--check-shell]
 *              [--events-spool-max SIZE]
 *   keel-agent --print-metrics [--process NAME]...
 *   keel-agent --http-check ...   (internal: an https check for the
 *                                  statically linked agent, httpcheck.h)
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
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "agent.h"
#include "collect.h"
#include "httpcheck.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/metricbatch.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "keel/version.h"
#include "static_link.h"
#include "watch.h"

#define EXIT_USAGE 2
/* Until the server has told us its heartbeat (first poll answer after a
 * restart), wait this long for a poll answer before calling it lost. */
#define UNKNOWN_HEARTBEAT_MS 50000
#define POLL_SLACK_MS 10000
#define PUSH_TIMEOUT_MS 30000L
#define INVENTORY_EVERY_MS 60000
#define MAX_FDS 64
#define METRICS_INTERVAL_MS 10000
#define METRICS_BATCH_MAX ((size_t)1 << 20)  /* one request's batch */
#define METRICS_FLUSH_BYTES ((size_t)64 << 10) /* held in memory at most, then spooled */
#define METRICS_SPOOL_BYTES ((uint64_t)64 << 20)
#define METRICS_SPOOL_BATCHES 65536
/* A metrics or events request: small; a result waiting behind one waits
 * at most this long. */
#define BATCH_TIMEOUT_MS 10000L
#define FEED_KEEP_CAP ((size_t)64 << 10) /* a batch buffer kept between requests */
#define EVENTS_SPOOL_BYTES ((uint64_t)16 << 20)
#define EVENTS_SPOOL_BATCHES 65536

static void usage(FILE *f) {
  fprintf(f,
          "usage: keel-agent --server URL --state DIR [--enroll-token T] [--tags k=v,...]\n"
          "                  [--log-level error|warn|info|debug] [--heartbeat-check]\n"
          "                  [--interval 10s] [--process NAME]... [--no-metrics]\n"
          "                  [--metrics-spool-max 64M] [--metrics-spool-batches 65536]\n"
          "                  [--watch-process NAME]... [--watch-file PATH]...\n"
          "                  [--check NAME=COMMAND]... [--check-interval 60s] [--check-shell]\n"
          "                  [--events-spool-max 16M]\n"
          "       keel-agent --print-metrics [--process NAME]...\n"
          "Events (docs/agent-protocol.md):\n"
          "  --watch-process NAME  service.down / service.up when no / some process named NAME\n"
          "                        (its comm or argv[0]'s basename) runs; looked at every --interval\n"
          "  --watch-file PATH     file.changed (created, modified, deleted, attrib) of an absolute\n"
          "                        PATH, with the content's BLAKE2b-256 (regular files up to 16 MiB)\n"
          "  --check NAME=COMMAND  a Nagios plugin, run every --check-interval (COMMAND split on\n"
          "                        spaces, no shell unless --check-shell; killed after 10 s);\n"
          "                        check.result when its status (OK, WARNING, CRITICAL, UNKNOWN)\n"
          "                        changes\n");
}

struct opts {
  const char *server, *state, *token, *tags, *level;
  int heartbeat_check;
  int print_metrics;
  int no_metrics;
  int64_t interval_ms;
  uint64_t spool_max;
  size_t spool_batches;
  const char *procs[KA_COLLECT_PROC_NAMES];
  size_t nprocs;
  ka_watch_opts_t watch;
  uint64_t ev_spool_max;
};

enum push_kind { PUSH_NONE, PUSH_RESULT, PUSH_INVENTORY, PUSH_METRICS, PUSH_EVENTS };
enum feed_src { FEED_MEM, FEED_SPOOL };

/* Batches sent after results, spooled while keeld does not take them:
 * metrics and events (feed_* below). */
struct feed {
  const char *what;         /* "metrics", "events": for logs */
  const char *route;
  const char *ctype;        /* the body's Content-Type; NULL: JSON text */
  enum push_kind kind;
  ka_mspool_t *spool;       /* borrowed */
  size_t max;               /* bytes of a batch */
  keel_buf_t body;          /* the batch in flight, when it came from memory */
  ka_backoff_t bo;          /* its own: never delays results */
  enum feed_src src;        /* where the batch in flight came from */
  uint64_t seq;             /* its spool seq (FEED_SPOOL) */
  int failing;              /* the last send failed: new batches queue behind the spool */
  int logged;               /* this failure streak was logged */
  int logged_404;           /* keeld lacked the route: said once */
  uint64_t rejected;        /* batches keeld refused (4xx), dropped */
};

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
  int64_t interval_ms;
  int64_t tick_next;        /* mono ms of the next metrics collection and watch tick */
  /* Host metrics (collect.h, mspool.c): collected every interval_ms into
   * menc, sent over the push transfer after results and inventory; while
   * keeld does not take them, spooled and sent in order later. */
  int metrics_on;
  ka_collect_t col;
  keel_mb_enc_t menc;       /* collected, neither sent nor spooled yet */
  keel_buf_t mscratch;      /* a batch on its way to the spool */
  ka_mspool_t mspool;
  struct feed mfeed;
  /* Events (watch.h): the watches look every interval_ms (checks on their
   * own schedule) and queue events in evq, which go over the push transfer
   * as soon as no result waits (before metrics); while keeld does not take
   * them, spooled in DIR/events and sent in order later. */
  ka_watch_t watch;
  ka_evq_t evq;
  struct feed efeed;
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
  /* Not signed, unlike jobs: whoever could forge it could as well withhold
   * every job, and a cancel makes nothing run. */
  json_array_foreach(json_object_get(ans, "cancel"), i, it) {
    if (json_is_string(it)) ka_exec_cancel(&a->exec, json_string_value(it));
  }
out:
  json_decref(ans);
  keel_buf_reset(&x->resp);
}

/* ---- batches after results: metrics and events -------------------------------- */

/* A stream of batches that goes over the push transfer only when no result
 * waits (a result queues behind at most one batch request in flight).  The
 * batch in flight comes from memory (then f->body keeps it, to spool if
 * keeld does not take it) or is the spool's oldest (removed once keeld has
 * it).  While keeld does not take batches, new ones queue behind the
 * spool, so keeld gets them in order. */
static void feed_init(struct feed *f, const char *what, const char *route, const char *ctype,
                      enum push_kind kind, ka_mspool_t *spool, size_t max) {
  memset(f, 0, sizeof *f);
  f->what = what;
  f->route = route;
  f->ctype = ctype;
  f->kind = kind;
  f->spool = spool;
  f->max = max;
  keel_buf_init(&f->body, max);
}

static void feed_spool(struct agent *a, struct feed *f, const keel_buf_t *b) {
  keel_err_t e;
  if (ka_mspool_put(f->spool, b->data, b->len, &e))
    keel_log(a->log, KEEL_LOG_ERROR, "%s: cannot spool a batch (%s): dropped", f->what, e.msg);
}

/* The batch in flight was not taken; it must be kept (5xx, 404, transport). */
static void feed_retry_later(struct agent *a, struct feed *f, long status) {
  int64_t now = keel_mono_ms();

  if (f->src == FEED_MEM) feed_spool(a, f, &f->body);
  if (status == 401) ka_backoff_cap(&f->bo, now);
  else ka_backoff_fail(&f->bo, now);
  f->failing = 1;
}

/* The spool's oldest batch, checked with valid (what keeld would refuse
 * anyway — torn by a crash, or edited — is dropped): 0 with *body (caller
 * frees), KEEL_ENOENT when the spool is empty, else nothing to send now. */
static int feed_oldest(struct agent *a, struct feed *f,
                       int (*valid)(const char *, size_t, keel_err_t *), char **body,
                       size_t *len) {
  keel_err_t e;
  int rc;

  if (!f->spool->count) return KEEL_ENOENT;
  rc = ka_mspool_oldest(f->spool, &f->seq, f->max, body, len, &e);
  if (rc == 0 && valid(*body, *len, &e)) {
    keel_log(a->log, KEEL_LOG_WARN, "%s: spooled batch %016llx unreadable (%s): dropped", f->what,
             (unsigned long long)f->seq, e.msg);
    ka_mspool_drop(f->spool, f->seq, 1);
    free(*body);
    *body = NULL;
    return KEEL_ECORRUPT;
  }
  if (rc == KEEL_ETOOBIG) {
    /* Not ours (we write none that big): it would never go. */
    keel_log(a->log, KEEL_LOG_WARN, "%s: %s: dropped", f->what, e.msg);
    ka_mspool_drop(f->spool, f->spool->first, 1);
  } else if (rc) {
    keel_log(a->log, KEEL_LOG_ERROR, "%s spool: %s", f->what, e.msg);
    ka_backoff_fail(&f->bo, keel_mono_ms());
  }
  /* The file stays until keeld takes it: the transfer may have the copy. */
  if (rc == 0) f->src = FEED_SPOOL;
  return rc;
}

/* Sends body (taken) of len bytes: the spool's (feed_oldest), or, with
 * body NULL, a copy of f->body (from memory). */
static void feed_post(struct agent *a, struct feed *f, char *body, size_t len) {
  keel_err_t e;
  int rc;

  if (!body) {
    f->src = FEED_MEM;
    /* The transfer takes its body; f->body stays ours, to spool on failure. */
    len = f->body.len;
    if (!(body = malloc(len + 1))) {
      feed_retry_later(a, f, 0);
      return;
    }
    memcpy(body, f->body.data, len + 1); /* with keel_buf's NUL */
  }
  a->push_kind = f->kind;
  rc = f->ctype ? ka_conn_post_bin(&a->conn, &a->conn.push, f->route, body, len, f->ctype,
                                   BATCH_TIMEOUT_MS, &e)
                : ka_conn_post(&a->conn, &a->conn.push, f->route, body, BATCH_TIMEOUT_MS, &e);
  if (rc) {
    keel_log(a->log, KEEL_LOG_ERROR, "cannot send %s: %s", f->what, e.msg);
    a->push_kind = PUSH_NONE;
    feed_retry_later(a, f, 0);
  }
}

/* The answer to the batch in flight. */
static void feed_done(struct agent *a, struct feed *f) {
  ka_xfer_t *x = &a->conn.push;
  long st = x->cc ? 0 : x->status;
  char msg[512];

  if (st == 200) {
    /* 200 means keeld stored it durably. */
    if (f->src == FEED_SPOOL) ka_mspool_drop(f->spool, f->seq, 0);
    ka_backoff_reset(&f->bo);
    if (f->failing && f->logged)
      keel_log(a->log, KEEL_LOG_INFO, "%s: keeld takes batches again (%zu spooled to send)",
               f->what, f->spool->count);
    f->failing = 0;
    f->logged = 0;
  } else if (st >= 400 && st < 500 && st != 401 && st != 404 && st != 408 && st != 429) {
    /* keeld will never take this one (malformed, too big): keeping it
     * would hold up every later batch. */
    server_message(&x->resp, (int)st, msg, sizeof msg);
    keel_log(a->log, f->logged ? KEEL_LOG_DEBUG : KEEL_LOG_WARN,
             "%s: batch rejected, dropped: %s", f->what, msg);
    f->logged = 1;
    if (f->src == FEED_SPOOL) ka_mspool_drop(f->spool, f->seq, 0);
    f->rejected++;
  } else {
    if (st == 404) {
      /* A keeld without the route yet: like an unreachable one, said once. */
      if (!f->logged_404)
        keel_log(a->log, KEEL_LOG_WARN,
                 "%s: keeld has no %s (404); batches are spooled in %s and retried", f->what,
                 f->route, f->spool->dir);
      f->logged_404 = 1;
    } else if (!f->logged) {
      if (x->cc) snprintf(msg, sizeof msg, "%s", ka_conn_strerror(x));
      else server_message(&x->resp, (int)st, msg, sizeof msg);
      keel_log(a->log, KEEL_LOG_WARN, "%s: %s; batches are spooled and retried", f->what, msg);
    }
    f->logged = 1;
    feed_retry_later(a, f, st);
  }
  /* A burst's big batch does not stay in the idle footprint. */
  if (f->body.cap > FEED_KEEP_CAP) {
    keel_buf_free(&f->body);
    keel_buf_init(&f->body, f->max);
  } else {
    keel_buf_reset(&f->body);
  }
}

/* At exit: a batch from memory in flight goes to the spool (one keeld took
 * but whose answer we did not see is sent twice: keeld keeps one of two
 * identical samples; an event may be reported twice). */
static void feed_stop(struct agent *a, struct feed *f) {
  if (a->conn.push.active && a->push_kind == f->kind && f->src == FEED_MEM)
    feed_spool(a, f, &f->body);
}

/* Batches lost: the spool's bounds, unwritable, refused by keeld. */
static uint64_t feed_dropped(const struct feed *f) {
  return f->spool->dropped + f->rejected;
}

/* ---- metrics --------------------------------------------------------------- */

static int metrics_pending(const struct agent *a) {
  return a->metrics_on && (a->mspool.count || keel_mb_enc_count(&a->menc));
}

/* What menc holds becomes one spooled batch. */
static void metrics_spool_pending(struct agent *a) {
  keel_err_t e;

  if (!keel_mb_enc_count(&a->menc)) return;
  keel_buf_reset(&a->mscratch);
  if (keel_mb_enc_finish(&a->menc, &a->mscratch, &e)) {
    keel_log(a->log, KEEL_LOG_ERROR, "metrics: %s: batch dropped", e.msg);
    a->mspool.dropped++;
  } else {
    feed_spool(a, &a->mfeed, &a->mscratch);
  }
  keel_mb_enc_reset(&a->menc);
  keel_buf_reset(&a->mscratch);
}

static void metrics_tick(struct agent *a) {
  ka_collect_self_t self = {feed_dropped(&a->mfeed), a->mspool.count,
                            ka_evq_dropped(&a->evq) + a->efeed.rejected, a->evq.spool.count};

  /* keeld busy elsewhere for a while (a big result): memory stays small. */
  if (keel_mb_enc_size(&a->menc) >= METRICS_FLUSH_BYTES) metrics_spool_pending(a);
  ka_collect(&a->col, &a->menc, keel_now_ms(), &self);
  /* Batches go out in order: while older ones wait on disk, or keeld is
   * failing, the new one queues behind them. */
  if (a->mfeed.failing || a->mspool.count) metrics_spool_pending(a);
}

static int metrics_valid(const char *body, size_t len, keel_err_t *e) {
  return keel_mb_decode(body, len, NULL, NULL, e);
}

static void start_metrics(struct agent *a) {
  struct feed *f = &a->mfeed;
  char *body = NULL;
  size_t len = 0;
  keel_err_t e;
  int rc;

  keel_buf_reset(&f->body);
  rc = feed_oldest(a, f, metrics_valid, &body, &len);
  if (rc == KEEL_ENOENT) {
    if (!keel_mb_enc_count(&a->menc)) return;
    rc = keel_mb_enc_finish(&a->menc, &f->body, &e);
    keel_mb_enc_reset(&a->menc);
    if (rc) {
      keel_log(a->log, KEEL_LOG_ERROR, "metrics: %s: batch dropped", e.msg);
      a->mspool.dropped++;
      return;
    }
  } else if (rc) {
    return;
  }
  feed_post(a, f, body, len);
}

static void metrics_stop(struct agent *a) {
  if (!a->metrics_on) return;
  feed_stop(a, &a->mfeed);
  metrics_spool_pending(a);
}

/* ---- events (watch.h) ---------------------------------------------------------- */

static int events_pending(const struct agent *a) {
  return a->evq.spool.count || a->evq.n;
}

static int events_valid(const char *body, size_t len, keel_err_t *e) {
  json_t *o = NULL;
  int rc = keel_json_parse(body, len, &o, e);
  if (!rc && !json_is_array(json_object_get(o, "events")))
    rc = keel_err_set(e, KEEL_EINVAL, "no events array");
  json_decref(o);
  return rc;
}

static void start_events(struct agent *a) {
  struct feed *f = &a->efeed;
  char *body = NULL;
  size_t len = 0;
  int rc;

  keel_buf_reset(&f->body);
  rc = feed_oldest(a, f, events_valid, &body, &len);
  if (rc == KEEL_ENOENT) {
    if (!ka_evq_take(&a->evq, &f->body)) return;
  } else if (rc) {
    return;
  }
  feed_post(a, f, body, len);
}

/* 1 when every event queued so far is acknowledged or on disk: what the
 * watches reported may be saved (watch.h). */
static int events_settled(const struct agent *a) {
  return !a->evq.n &&
         !(a->conn.push.active && a->push_kind == PUSH_EVENTS && a->efeed.src == FEED_MEM);
}

static void events_stop(struct agent *a) {
  feed_stop(a, &a->efeed);
  ka_evq_spool(&a->evq);
  ka_watch_save(&a->watch);
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
  if (kind == PUSH_METRICS) {
    feed_done(a, &a->mfeed);
    goto out;
  }
  if (kind == PUSH_EVENTS) {
    feed_done(a, &a->efeed);
    goto out;
  }
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
    if (now >= a->tick_next) {
      /* In this order: the metrics' /proc walk counts for --watch-process
       * too (a.col.also), and the watches' tick then needs none of its own. */
      if (a->metrics_on) metrics_tick(a);
      ka_watch_tick(&a->watch);
      a->tick_next += a->interval_ms;
      if (a->tick_next <= now) a->tick_next = now + a->interval_ms; /* we were late: no burst */
    }
    /* While keeld does not take events, they wait on disk, not in memory. */
    if (a->efeed.failing && a->evq.n) ka_evq_spool(&a->evq);
    if (!a->conn.poll.active && now >= a->poll_bo.until) start_poll(a);
    if (!a->conn.push.active && now >= a->push_bo.until && push_pending(a)) start_push(a);
    /* Events, then metrics, only when no result waits (a result never
     * queues behind more than the one batch request in flight). */
    if (!a->conn.push.active && !a->spool_dirty && now >= a->efeed.bo.until && events_pending(a))
      start_events(a);
    if (!a->conn.push.active && !a->spool_dirty && now >= a->mfeed.bo.until &&
        metrics_pending(a))
      start_metrics(a);

    if (!a->conn.poll.active) wait = min_wait(wait, a->poll_bo.until, now);
    if (!a->conn.push.active && push_pending(a)) wait = min_wait(wait, a->push_bo.until, now);
    if (!a->conn.push.active && !a->spool_dirty && events_pending(a))
      wait = min_wait(wait, a->efeed.bo.until, now);
    if (!a->conn.push.active && !a->spool_dirty && metrics_pending(a))
      wait = min_wait(wait, a->mfeed.bo.until, now);
    if (a->metrics_on || ka_watch_any(&a->watch)) wait = min_wait(wait, a->tick_next, now);
    wait = min_wait(wait, a->inv_next, now);
    if ((ex = ka_exec_next_ms(&a->exec)) >= 0 && ex < wait) wait = ex;
    if ((ex = ka_watch_next_ms(&a->watch)) >= 0 && ex < wait) wait = ex;

    fds[0] = (struct pollfd){.fd = sigfd, .events = POLLIN};
    n = 1 + ka_exec_fds(&a->exec, fds + 1, MAX_FDS - 1);
    n += ka_watch_fds(&a->watch, fds + n, MAX_FDS - n);
    ka_conn_wait(&a->conn, fds, (unsigned)n, (int)wait);

    if (fds[0].revents) {
      struct signalfd_siginfo si;
      while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
          keel_log(a->log, KEEL_LOG_INFO, "signal %u: stopping (running commands are left alone)",
                   si.ssi_signo);
          stop = 1;
        }
        /* SIGCHLD only wakes us: ka_exec_step and ka_watch_step reap. */
      }
    }
    if (ka_exec_step(&a->exec) > 0) a->spool_dirty = 1;
    ka_watch_step(&a->watch);
    if (a->conn.poll.done) handle_poll(a);
    if (a->conn.push.done) handle_push(a);
    if (events_settled(a)) ka_watch_save(&a->watch);
  }
  metrics_stop(a);
  events_stop(a);
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

/* "64M", "512K", "1G", "1048576" (binary units; "MiB" and "MB" read as
 * M): 0 or -1. */
static int parse_size(const char *s, uint64_t *out) {
  char *end;
  unsigned long long v;
  uint64_t mul = 1;

  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno) return -1;
  switch (*end) {
  case 'k': case 'K': mul = 1ull << 10; end++; break;
  case 'm': case 'M': mul = 1ull << 20; end++; break;
  case 'g': case 'G': mul = 1ull << 30; end++; break;
  default: break;
  }
  if (mul > 1 && (!strcmp(end, "iB") || !strcmp(end, "B"))) end += strlen(end);
  if (*end || v > UINT64_MAX / mul) return -1;
  *out = v * mul;
  return 0;
}

/* ---- --print-metrics ---------------------------------------------------------- */

/* The shortest %g text that reads back as the same double. */
static void print_value(double v) {
  char b[40];
  if (isnan(v)) {
    fputs("NaN", stdout);
    return;
  }
  if (isinf(v)) {
    fputs(v > 0 ? "+Inf" : "-Inf", stdout);
    return;
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(b, sizeof b, "%.*g", prec, v);
    if (strtod(b, NULL) == v) break;
  }
  fputs(b, stdout);
}

static int print_series(void *ud, const keel_mb_label_t *l, size_t nl, const int64_t *t,
                        const double *v, size_t n) {
  const char *name = "";
  int first = 1;
  (void)ud, (void)t;
  for (size_t i = 0; i < nl; i++)
    if (!strcmp(l[i].name, "__name__")) name = l[i].value;
  fputs(name, stdout);
  for (size_t i = 0; i < nl; i++) {
    if (!strcmp(l[i].name, "__name__")) continue;
    printf("%s%s=\"", first ? "{" : ",", l[i].name);
    for (const char *p = l[i].value; *p; p++) {
      if (*p == '\\' || *p == '"') putchar('\\');
      if (*p == '\n') fputs("\\n", stdout);
      else putchar(*p);
    }
    putchar('"');
    first = 0;
  }
  fputs(first ? " " : "} ", stdout);
  print_value(v[n - 1]);
  putchar('\n');
  return 0;
}

/* One collection, printed in Prometheus' text format (without HELP and
 * TYPE): what the agent would send, to compare with node_exporter. */
static int print_metrics(const struct opts *o, keel_log_t *log) {
  ka_collect_t col;
  keel_mb_enc_t enc;
  keel_buf_t b;
  keel_err_t e;
  int rc = 1;

  keel_mb_enc_init(&enc, METRICS_BATCH_MAX);
  keel_buf_init(&b, METRICS_BATCH_MAX);
  if (ka_collect_init(&col, NULL, o->procs, o->nprocs, log, &e)) {
    fprintf(stderr, "keel-agent: %s\n", e.msg);
    goto out;
  }
  ka_collect(&col, &enc, keel_now_ms(), NULL);
  ka_collect_free(&col);
  if (keel_mb_enc_finish(&enc, &b, &e) || keel_mb_decode(b.data, b.len, print_series, NULL, &e)) {
    fprintf(stderr, "keel-agent: %s\n", e.msg);
    goto out;
  }
  rc = 0;
out:
  keel_mb_enc_free(&enc);
  keel_buf_free(&b);
  fflush(stdout);
  return rc;
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
      {"interval", required_argument, NULL, 'i'}, {"process", required_argument, NULL, 'p'},
      {"no-metrics", no_argument, NULL, 'n'},     {"print-metrics", no_argument, NULL, 'P'},
      {"metrics-spool-max", required_argument, NULL, 'm'},
      {"metrics-spool-batches", required_argument, NULL, 'b'},
      {"watch-process", required_argument, NULL, 'W'},
      {"watch-file", required_argument, NULL, 'F'},
      {"check", required_argument, NULL, 'C'},
      {"check-interval", required_argument, NULL, 'I'},
      {"check-shell", no_argument, NULL, 'S'},
      {"events-spool-max", required_argument, NULL, 'E'},
      {NULL, 0, NULL, 0}};
  struct opts o = {0};
  struct agent a;
  keel_log_t log = {keel_log_stderr, "keel-agent", KEEL_LOG_INFO};
  json_t *tags = NULL;
  keel_err_t e;
  sigset_t mask;
  int c, rc = 1, sigfd = -1, lockfd = -1, exec_up = 0, conn_up = 0, col_up = 0, metrics_up = 0;
  int watch_up = 0, events_up = 0;
  uint64_t u;

  memset(&a, 0, sizeof a);
  /* Big buffers (outputs, result bodies) go to mmap and back to the OS on
   * free.  A fixed threshold also turns off glibc's dynamic one, which
   * would otherwise rise after the first big free and keep later big
   * buffers on the heap, where they fragment the idle footprint. */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024);
  /* Before any lookup: a static glibc program that follows nsswitch.conf
   * to, say, libnss_systemd crashes in it (static_link.h). */
  if (KA_STATIC_LINKED && ka_static_nss(&e)) {
    fprintf(stderr, "keel-agent: %s\n", e.msg);
    return 1;
  }
  /* The child of a statically linked agent's https check (httpcheck.h). */
  if (argc > 1 && !strcmp(argv[1], KA_HTTPCHECK_FLAG)) return ka_httpcheck_main(argc, argv);
  o.interval_ms = METRICS_INTERVAL_MS;
  o.spool_max = METRICS_SPOOL_BYTES;
  o.spool_batches = METRICS_SPOOL_BATCHES;
  o.ev_spool_max = EVENTS_SPOOL_BYTES;
  while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
    switch (c) {
    case 's': o.server = optarg; break;
    case 'd': o.state = optarg; break;
    case 't': o.token = optarg; break;
    case 'g': o.tags = optarg; break;
    case 'l': o.level = optarg; break;
    case 'c': o.heartbeat_check = 1; break;
    case 'n': o.no_metrics = 1; break;
    case 'P': o.print_metrics = 1; break;
    case 'i':
      if (keel_duration_parse(optarg, &o.interval_ms) || o.interval_ms < 1000 ||
          o.interval_ms > 3600000) {
        fprintf(stderr, "keel-agent: --interval '%s': expected a duration from 1s to 1h\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case 'p':
      if (o.nprocs == KA_COLLECT_PROC_NAMES || !optarg[0] || strlen(optarg) > 255) {
        fprintf(stderr, "keel-agent: --process '%s': expected 1 to %d names of 1 to 255 bytes\n",
                optarg, KA_COLLECT_PROC_NAMES);
        return EXIT_USAGE;
      }
      o.procs[o.nprocs++] = optarg;
      break;
    case 'm':
    case 'E': {
      uint64_t *max = c == 'm' ? &o.spool_max : &o.ev_spool_max;
      if (parse_size(optarg, max) || *max < 65536) {
        fprintf(stderr, "keel-agent: --%s-spool-max '%s': expected a size of 64K or more "
                        "(e.g. 16M)\n", c == 'm' ? "metrics" : "events", optarg);
        return EXIT_USAGE;
      }
      break;
    }
    case 'b':
      if (parse_size(optarg, &u) || u < 1 || u > 10000000) {
        fprintf(stderr, "keel-agent: --metrics-spool-batches '%s': expected 1 to 10000000\n",
                optarg);
        return EXIT_USAGE;
      }
      o.spool_batches = (size_t)u;
      break;
    case 'W':
    case 'F':
    case 'C': {
      /* Each value is checked by ka_watch_init (once the state directory
       * is locked, before anything is sent); here only the count. */
      const char **arr = c == 'W' ? o.watch.procs : c == 'F' ? o.watch.files : o.watch.checks;
      size_t *n = c == 'W' ? &o.watch.nprocs : c == 'F' ? &o.watch.nfiles : &o.watch.nchecks;
      if (*n == KA_WATCH_MAX) {
        fprintf(stderr, "keel-agent: at most %d of --watch-process, --watch-file, --check each\n",
                KA_WATCH_MAX);
        return EXIT_USAGE;
      }
      arr[(*n)++] = optarg;
      break;
    }
    case 'I':
      if (keel_duration_parse(optarg, &o.watch.check_interval_ms) ||
          o.watch.check_interval_ms < 1000 || o.watch.check_interval_ms > 3600000) {
        fprintf(stderr, "keel-agent: --check-interval '%s': expected a duration from 1s to 1h\n",
                optarg);
        return EXIT_USAGE;
      }
      break;
    case 'S': o.watch.check_shell = 1; break;
    case 'h': usage(stdout); return 0;
    case 'V': printf("keel-agent %s\n", KEEL_VERSION); return 0;
    default: usage(stderr); return EXIT_USAGE;
    }
  }
  if (o.print_metrics && optind == argc) return print_metrics(&o, &log);
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
  if (KA_STATIC_LINKED && !strncasecmp(o.server, "https://", 8)) {
    /* libcurl cannot be loaded into a static program (static_link.h): the
     * dynamically linked agent takes this process over (same pid, same
     * arguments) before anything is opened; it costs what an https agent
     * always cost, libcurl and GnuTLS mapped. */
    char dyn[PATH_MAX];
    if (ka_dynamic_agent(dyn, sizeof dyn, "https:// servers", &e)) {
      fprintf(stderr, "keel-agent: --server %s: %s\n", o.server, e.msg);
      goto out;
    }
    keel_log(&log, KEEL_LOG_INFO, "statically linked: https:// is served by %s, exec'ing it", dyn);
    argv[0] = dyn;
    execv(dyn, argv);
    fprintf(stderr, "keel-agent: exec %s: %s\n", dyn, strerror(errno));
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
  /* Before enrolling or sending anything: a bad --watch-* or --check is a
   * usage error.  It only reads DIR/watch.json; events wait for run(). */
  if ((rc = ka_watch_init(&a.watch, &o.watch, o.state, &a.evq, &log, &e))) {
    fprintf(stderr, "keel-agent: %s\n", e.msg);
    rc = rc == KEEL_EINVAL ? EXIT_USAGE : 1;
    goto out;
  }
  watch_up = 1;
  rc = 1;
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
  if (!o.no_metrics) {
    if (ka_collect_init(&a.col, NULL, o.procs, o.nprocs, &log, &e)) {
      fprintf(stderr, "keel-agent: metrics: %s\n", e.msg);
      goto out;
    }
    col_up = 1;
    a.col.also = ka_watch_procs(&a.watch); /* one /proc walk a tick, not two */
    if (ka_mspool_open(&a.mspool, o.state, "metrics", ".kmb", o.spool_max, o.spool_batches, &log,
                       &e)) {
      fprintf(stderr, "keel-agent: metrics: %s\n", e.msg);
      goto out;
    }
    keel_mb_enc_init(&a.menc, METRICS_BATCH_MAX);
    feed_init(&a.mfeed, "metrics", "/v1/agent/metrics", KEEL_MB_CONTENT_TYPE, PUSH_METRICS,
              &a.mspool, METRICS_BATCH_MAX);
    keel_buf_init(&a.mscratch, METRICS_BATCH_MAX);
    a.metrics_on = metrics_up = 1;
  }
  a.interval_ms = o.interval_ms;
  /* Always: events spooled by an earlier run are sent even when nothing is
   * watched now. */
  if (ka_evq_open(&a.evq, o.state, o.ev_spool_max, EVENTS_SPOOL_BATCHES, &log, &e)) {
    fprintf(stderr, "keel-agent: events: %s\n", e.msg);
    goto out;
  }
  feed_init(&a.efeed, "events", "/v1/agent/events", NULL, PUSH_EVENTS, &a.evq.spool,
            KA_EV_BATCH_BYTES);
  events_up = 1;
  a.tick_next = keel_mono_ms();
  keel_log(&log, KEEL_LOG_INFO, "agent %s polling %s", a.id.agent_id, o.server);
  rc = run(&a, sigfd);
out:
  if (metrics_up) {
    keel_mb_enc_free(&a.menc);
    keel_buf_free(&a.mfeed.body);
    keel_buf_free(&a.mscratch);
  }
  if (events_up) {
    ka_evq_close(&a.evq);
    keel_buf_free(&a.efeed.body);
  }
  if (watch_up) ka_watch_free(&a.watch);
  if (col_up) ka_collect_free(&a.col);
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
