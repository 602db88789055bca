/* watch.c — the event queue, the process watches, and what ties the
 * watches together: options, DIR/watch.json (watch.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collect.h"
#include "keel/json.h"
#include "keel/metricbatch.h"
#include "keel/time.h"
#include "watch.h"

#define EV_HEAD "{\"events\":["
#define EV_TAIL "]}"
/* A buffer that grew past this for a burst is given back once emptied:
 * the idle agent keeps a small footprint. */
#define EV_KEEP_CAP 16384
#define STATE_FILE "watch.json"
#define STATE_MAX ((size_t)4 << 20)

/* ---- the event queue ---------------------------------------------------------- */

int ka_evq_open(ka_evq_t *q, const char *state_dir, uint64_t spool_max, size_t spool_batches,
                const keel_log_t *log, keel_err_t *e) {
  memset(q, 0, sizeof *q);
  q->log = log;
  keel_buf_init(&q->open, KA_EV_BATCH_BYTES);
  return ka_mspool_open(&q->spool, state_dir, "events", ".json", spool_max, spool_batches, log, e);
}

void ka_evq_close(ka_evq_t *q) {
  keel_buf_free(&q->open);
  q->n = 0;
}

static void evq_emptied(ka_evq_t *q) {
  q->n = 0;
  if (q->open.cap > EV_KEEP_CAP) {
    keel_buf_free(&q->open);
    keel_buf_init(&q->open, KA_EV_BATCH_BYTES);
  } else {
    keel_buf_reset(&q->open);
  }
}

void ka_evq_spool(ka_evq_t *q) {
  keel_err_t e;

  if (!q->n) return;
  /* The buffer's cap leaves room for the tail (ka_evq_add). */
  if (keel_buf_puts(&q->open, EV_TAIL) == 0 &&
      ka_mspool_put(&q->spool, q->open.data, q->open.len, &e))
    keel_log(q->log, KEEL_LOG_ERROR, "events: cannot spool a batch of %zu (%s): dropped", q->n,
             e.msg);
  evq_emptied(q);
}

void ka_evq_add(ka_evq_t *q, const char *type, const char *subject, int64_t t_ms, json_t *data) {
  char ts[KEEL_TIME_STRLEN], *text = NULL;
  json_t *o;
  size_t len;

  keel_time_format(ts, t_ms);
  /* "o" takes data's reference, also when the pack fails. */
  o = json_pack("{s:s,s:s,s:s,s:o}", "type", type, "subject", subject, "time", ts, "data", data);
  text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text || (len = strlen(text)) + sizeof EV_HEAD + sizeof EV_TAIL > KA_EV_BATCH_BYTES) {
    keel_log(q->log, KEEL_LOG_ERROR, "events: %s %s: %s: dropped", type, subject,
             text ? "larger than a batch" : "out of memory");
    q->refused++;
    goto out;
  }
  if (q->n == KA_EV_BATCH_EVENTS || q->open.len + 1 + len + strlen(EV_TAIL) > KA_EV_BATCH_BYTES)
    ka_evq_spool(q);
  if ((q->n ? keel_buf_puts(&q->open, ",") : keel_buf_puts(&q->open, EV_HEAD)) ||
      keel_buf_append(&q->open, text, len)) {
    /* Only memory can fail here: the sizes were checked. */
    keel_log(q->log, KEEL_LOG_ERROR, "events: %s %s: out of memory: dropped", type, subject);
    q->refused++;
    if (!q->n) keel_buf_reset(&q->open);
    goto out;
  }
  q->n++;
  keel_log(q->log, KEEL_LOG_INFO, "event %s %s", type, subject);
out:
  free(text);
}

size_t ka_evq_take(ka_evq_t *q, keel_buf_t *out) {
  keel_buf_t t;
  size_t n = q->n;

  keel_buf_reset(out);
  if (!n || keel_buf_puts(&q->open, EV_TAIL)) return 0;
  /* Swapped, not copied: out's old allocation becomes the next batch's. */
  t = *out;
  *out = q->open;
  q->open = t;
  evq_emptied(q);
  return n;
}

uint64_t ka_evq_dropped(const ka_evq_t *q) {
  return q->spool.dropped + q->refused;
}

/* ---- emitting ---------------------------------------------------------------- */

void ka_watch_emit(ka_watch_t *w, const char *type, const char *subject, const char *label,
                   const char *value, json_t *data) {
  if (data && json_object_set_new(data, "labels", json_pack("{s:s}", label, value))) {
    json_decref(data);
    data = NULL;
  }
  if (!data) {
    keel_log(w->log, KEEL_LOG_ERROR, "events: %s %s: out of memory: dropped", type, subject);
    w->q->refused++;
    return;
  }
  ka_evq_add(w->q, type, subject, keel_now_ms(), data);
}

/* ---- processes ----------------------------------------------------------------- */

static void count_one(void *ud, int pid, size_t g, const ka_pstat_t *ps) {
  ka_watch_t *w = ud;
  (void)pid;
  /* Exited, waiting for its parent to reap it: not running. */
  if (ps->state == 'Z' || ps->state == 'X') return;
  w->pcount[g]++;
}

static void procs_tick(ka_watch_t *w) {
  /* Walked already when a walk served us too (ka_watch_procs). */
  if (!w->pwant.walked && ka_proc_scan(w->proot, &w->procdir, &w->pwant)) {
    /* No /proc: nothing can be said, so nothing is reported. */
    if (!w->proc_warned)
      keel_log(w->log, KEEL_LOG_WARN, "watch: cannot read %s: %s", w->proot, strerror(errno));
    w->proc_warned = 1;
    return;
  }
  w->pwant.walked = 0;
  w->proc_warned = 0;
  for (size_t i = 0; i < w->npnames; i++) {
    const char *name = w->pnames[i];
    int up = w->pcount[i] > 0;
    if (w->pstate[i] == up) continue;
    /* Running when first seen is the normal state: nothing to say. */
    if (w->pstate[i] >= 0 || !up)
      ka_watch_emit(w, up ? "service.up" : "service.down", name, "service", name,
                    json_pack("{s:s,s:I}", "service", name, "pid_count", (json_int_t)w->pcount[i]));
    w->pstate[i] = (signed char)up;
    w->state_dirty = 1;
  }
  memset(w->pcount, 0, sizeof w->pcount); /* the next walk counts afresh */
}

/* ---- DIR/watch.json ------------------------------------------------------------ */

static void state_load(ka_watch_t *w) {
  char path[PATH_MAX], *text = NULL;
  json_t *o = NULL, *svc;
  size_t len;
  keel_err_t e;
  int rc;

  ka_path(path, "%s/%s", w->dir, STATE_FILE);
  rc = ka_read_file(path, STATE_MAX, &text, &len, &e);
  if (rc == KEEL_ENOENT) goto out;
  if (rc || keel_json_parse(text, len, &o, &e) || !json_is_object(o)) {
    /* Lost state means reporting states again, not missing changes. */
    keel_log(w->log, KEEL_LOG_WARN, "watch: %s unreadable (%s): starting without it", path,
             rc ? e.msg : o ? "not an object" : e.msg);
    goto out;
  }
  svc = json_object_get(o, "services");
  for (size_t i = 0; i < w->npnames; i++) {
    const char *s = keel_json_str(svc, w->pnames[i]);
    if (s && !strcmp(s, "up")) w->pstate[i] = 1;
    else if (s && !strcmp(s, "down")) w->pstate[i] = 0;
  }
  ka_check_restore(w, json_object_get(o, "checks"));
  ka_wfile_restore(w, json_object_get(o, "files"));
out:
  json_decref(o);
  free(text);
}

void ka_watch_save(ka_watch_t *w) {
  json_t *o = NULL, *svc = NULL;
  char *text = NULL;
  keel_err_t e;

  /* Called every loop turn: nothing at all unless something changed. */
  if (!w->state_dirty) return;
  w->state_dirty = 0;
  svc = json_object();
  for (size_t i = 0; svc && i < w->npnames; i++)
    if (w->pstate[i] >= 0) json_object_set_new(svc, w->pnames[i], json_string(w->pstate[i] ? "up" : "down"));
  o = json_pack("{s:i,s:O,s:o,s:o}", "version", 1, "services", svc, "checks", ka_check_state(w),
                "files", ka_wfile_state(w));
  text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  if (!text) {
    keel_log(w->log, KEEL_LOG_ERROR, "watch: cannot save %s: out of memory", STATE_FILE);
    goto out;
  }
  /* On failure the next start reports the current states again: said
   * once, not retried in a loop. */
  if (ka_write_atomic(w->dir, STATE_FILE, text, strlen(text), 0600, &e))
    keel_log(w->log, KEEL_LOG_ERROR, "watch: cannot save %s: %s", STATE_FILE, e.msg);
out:
  free(text);
  json_decref(o);
  json_decref(svc);
}

/* ---- the whole -------------------------------------------------------------------- */

int ka_watch_once(const char *flag, const char *const *vals, size_t i, keel_err_t *e) {
  for (size_t j = 0; j < i; j++)
    if (!strcmp(vals[i], vals[j]))
      return keel_err_set(e, KEEL_EINVAL, "%s '%.200s' given twice", flag, vals[i]);
  return 0;
}

int ka_watch_init(ka_watch_t *w, const ka_watch_opts_t *o, const char *state_dir, ka_evq_t *q,
                  const keel_log_t *log, keel_err_t *e) {
  int rc = 0;

  memset(w, 0, sizeof *w);
  w->ifd = -1;
  w->log = log;
  w->q = q;
  snprintf(w->dir, sizeof w->dir, "%s", state_dir);
  snprintf(w->proot, sizeof w->proot, "%s", o->proc_root ? o->proc_root : "/proc");
  if (o->nprocs > KA_WATCH_MAX || o->nfiles > KA_WATCH_MAX || o->nchecks > KA_WATCH_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "at most %d --watch-process, --watch-file and --check each",
                      KA_WATCH_MAX);
    goto out;
  }
  for (size_t i = 0; i < o->nprocs; i++) {
    const char *n = o->procs[i];
    /* The name is the events' subject: keeld's bound. */
    if (!n[0] || strlen(n) > KA_EV_SUBJECT_MAX || !keel_mb_utf8_ok(n, strlen(n)) ||
        strchr(n, '/')) {
      rc = keel_err_set(e, KEEL_EINVAL,
                        "--watch-process '%.64s': expected a process name (1 to %d bytes of "
                        "UTF-8, no '/')",
                        n, KA_EV_SUBJECT_MAX);
      goto out;
    }
    if ((rc = ka_watch_once("--watch-process", o->procs, i, e))) goto out;
    w->pnames[w->npnames] = n;
    w->pstate[w->npnames++] = -1;
  }
  w->pwant = (ka_proc_want_t){w->pnames, w->npnames, count_one, w, NULL, 0};
  w->check_interval_ms = o->check_interval_ms > 0 ? o->check_interval_ms : 60000;
  w->check_timeout_ms = o->check_timeout_ms > 0 ? o->check_timeout_ms : KA_CHECK_TIMEOUT_MS;
  if ((rc = ka_wfile_init(w, o->files, o->nfiles, e))) goto out;
  if ((rc = ka_check_init(w, o->checks, o->nchecks, o->check_shell, e))) goto out;
  state_load(w);
out:
  if (rc) ka_watch_free(w);
  return rc;
}

void ka_watch_free(ka_watch_t *w) {
  ka_check_free(w);
  ka_wfile_free(w);
  if (w->procdir) closedir(w->procdir);
  w->procdir = NULL;
  w->npnames = 0;
}

int ka_watch_any(const ka_watch_t *w) {
  return w->npnames || w->nfiles || w->nchecks;
}

void ka_watch_tick(ka_watch_t *w) {
  if (w->npnames) procs_tick(w);
  if (w->nfiles) ka_wfile_tick(w);
}

ka_proc_want_t *ka_watch_procs(ka_watch_t *w) {
  return w->npnames ? &w->pwant : NULL;
}

size_t ka_watch_fds(const ka_watch_t *w, struct pollfd *fds, size_t max) {
  size_t n = 0;
  if (w->ifd >= 0 && max > 0) fds[n++] = (struct pollfd){.fd = w->ifd, .events = POLLIN};
  return n + ka_check_fds(w, fds + n, max - n);
}

void ka_watch_step(ka_watch_t *w) {
  if (w->ifd >= 0) ka_wfile_read(w);
  if (w->nchecks) ka_check_step(w);
}

long ka_watch_next_ms(const ka_watch_t *w) {
  return ka_check_next_ms(w);
}
