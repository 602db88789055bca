/* keeld — Keel's control plane.
 *
 *   keeld init --data DIR [--admin NAME]   create a data directory
 *   keeld [serve] --data DIR [--listen HOST:PORT] [--config FILE] ...
 *   keeld routes                            print the route table
 *   keeld version
 *
 * Every flag is also a key of the config file (keel/config.h format);
 * flags given on the command line win over the file.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/config.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "keel/version.h"
#include "keel/http.h"
#include "alert/alert.h"
#include "automation/automation.h"
#include "metrics/tsdb.h"
#include "scrape/scrape.h"
#include "server.h"

/* ---- options ---------------------------------------------------------------------- */

typedef enum { O_STR, O_INT, O_SIZE, O_DUR, O_LEVEL } opt_type_t;

typedef struct opt {
  const char *name;
  opt_type_t type;
  size_t off;
  size_t len;
  const char *help;
} opt_t;

typedef struct cli_opts {
  k_server_opts_t srv;
  char config[1024];
  char admin[64];
} cli_opts_t;

#define SO(f) offsetof(cli_opts_t, srv) + offsetof(k_server_opts_t, f)
static const opt_t opts_table[] = {
    {"data", O_STR, SO(data), sizeof(((k_server_opts_t *)0)->data), "data directory (required)"},
    {"listen", O_STR, SO(listen), sizeof(((k_server_opts_t *)0)->listen),
     "HOST:PORT to serve HTTP on (default 127.0.0.1:7700; port 0 picks one)"},
    {"config", O_STR, offsetof(cli_opts_t, config), sizeof(((cli_opts_t *)0)->config),
     "config file (key = value per line)"},
    {"body-limit", O_SIZE, SO(body_limit), 0, "largest request body, bytes (default 1M)"},
    {"checkpoint-records", O_INT, SO(checkpoint_records), 0,
     "sign an audit checkpoint every N records (default 1000)"},
    {"checkpoint-interval", O_DUR, SO(checkpoint_interval_ms), 0,
     "... or after this long (default 10s)"},
    {"log-level", O_LEVEL, SO(log_level), 0, "error | warn | info | debug (default info)"},
    {"shutdown-grace", O_DUR, SO(shutdown_grace_ms), 0,
     "on SIGTERM, how long to let requests in flight finish (default 10s)"},
    {"heartbeat", O_DUR, SO(heartbeat_ms), 0,
     "agents' heartbeat interval; offline after 3 silent intervals (default 5s)"},
    {"event-retention", O_DUR, SO(event_retention_ms), 0,
     "how long events are kept (default 7d; pruned hourly)"},
    {"alertmanager-resend", O_DUR, SO(am_resend_ms), 0,
     "re-send firing alerts to alertmanager channels this often; endsAt 4x ahead (default 1m)"},
    {"admin", O_STR, offsetof(cli_opts_t, admin), sizeof(((cli_opts_t *)0)->admin),
     "init: name of the first admin user (default admin)"},
    {NULL, 0, 0, 0, NULL},
};

static int set_opt(void *ud, const char *key, const char *val, keel_err_t *e) {
  cli_opts_t *o = ud;
  const opt_t *t;
  char *p;
  for (t = opts_table; t->name; t++)
    if (!strcmp(t->name, key)) break;
  if (!t->name) return keel_err_set(e, KEEL_EINVAL, "unknown option '%s'", key);
  p = (char *)o + t->off;
  switch (t->type) {
  case O_STR:
    if (strlen(val) >= t->len) return keel_err_set(e, KEEL_EINVAL, "%s: value too long", key);
    memcpy(p, val, strlen(val) + 1);
    return 0;
  case O_INT:
  case O_SIZE: {
    char *end;
    long long v = strtoll(val, &end, 10);
    if (t->type == O_SIZE && (*end == 'k' || *end == 'K')) v *= 1024, end++;
    else if (t->type == O_SIZE && (*end == 'm' || *end == 'M')) v *= 1024 * 1024, end++;
    if (!*val || *end || v <= 0)
      return keel_err_set(e, KEEL_EINVAL, "%s: expected a positive number, got '%s'", key, val);
    *(long long *)p = v;
    return 0;
  }
  case O_DUR:
    if (keel_duration_parse(val, (int64_t *)p))
      return keel_err_set(e, KEEL_EINVAL, "%s: expected a duration (e.g. 10s, 5m), got '%s'", key, val);
    return 0;
  case O_LEVEL: {
    int l = keel_log_level_parse(val);
    if (l < 0) return keel_err_set(e, KEEL_EINVAL, "%s: expected error|warn|info|debug", key);
    *(int *)p = l;
    return 0;
  }
  }
  return 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: keeld init --data DIR [--admin NAME]\n"
          "       keeld [serve] --data DIR [--listen HOST:PORT] [--config FILE] [options]\n"
          "       keeld routes | version\n\noptions (also config-file keys):\n");
  for (const opt_t *t = opts_table; t->name; t++) fprintf(f, "  --%-22s %s\n", t->name, t->help);
}

/* Config file first (wherever --config appears), then flags over it. */
static int parse_args(int argc, char **argv, int first, cli_opts_t *o, keel_err_t *e) {
  int rc;
  for (int i = first; i < argc; i++) {
    if (!strcmp(argv[i], "--config") && i + 1 < argc) {
      if ((rc = keel_config_load(argv[i + 1], set_opt, o, e))) return rc;
    } else if (!strncmp(argv[i], "--config=", 9)) {
      if ((rc = keel_config_load(argv[i] + 9, set_opt, o, e))) return rc;
    }
  }
  for (int i = first; i < argc; i++) {
    char name[64];
    const char *val, *eq;
    if (strncmp(argv[i], "--", 2))
      return keel_err_set(e, KEEL_EINVAL, "unexpected argument '%s'", argv[i]);
    eq = strchr(argv[i], '=');
    if (eq) {
      snprintf(name, sizeof name, "%.*s", (int)(eq - argv[i] - 2), argv[i] + 2);
      val = eq + 1;
    } else {
      snprintf(name, sizeof name, "%s", argv[i] + 2);
      if (i + 1 >= argc) return keel_err_set(e, KEEL_EINVAL, "--%s needs a value", name);
      val = argv[++i];
    }
    if ((rc = set_opt(o, name, val, e))) return rc;
  }
  if (!o->srv.data[0]) return keel_err_set(e, KEEL_EINVAL, "--data DIR is required");
  return 0;
}

/* ---- serve ------------------------------------------------------------------------ */

static void on_sync(k_loop_t *l, int fd, uint32_t ev, void *ud) {
  k_server_t *srv = ud;
  (void)l, (void)fd, (void)ev;
  k_store_sync_poll(srv->store);
  k_http_release(srv);
}

static void on_tsdb_sync(k_loop_t *l, int fd, uint32_t ev, void *ud) {
  k_server_t *srv = ud;
  (void)l, (void)fd, (void)ev;
  k_tsdb_sync_poll(srv->tsdb);
  k_http_release(srv);
}

static void on_scrape(k_loop_t *l, int fd, uint32_t ev, void *ud) {
  (void)l, (void)fd, (void)ev;
  k_metrics_scrape_poll(ud);
}

static void on_incidents(k_loop_t *l, int fd, uint32_t ev, void *ud) {
  (void)l, (void)fd, (void)ev;
  k_incidents_poll(((k_server_t *)ud)->incidents, keel_now_ms());
}

static void on_work(k_loop_t *l, int fd, uint32_t ev, void *ud) {
  (void)l, (void)fd, (void)ev;
  k_work_poll(((k_server_t *)ud)->work);
}

static void begin_stop(k_server_t *srv, const char *why) {
  if (srv->stopping) return;
  keel_log(&srv->log, KEEL_LOG_INFO, "%s: no longer accepting; finishing %d request(s) in flight",
           why, srv->inflight);
  srv->stopping = 1;
  srv->stop_deadline_ms = keel_mono_ms() + srv->opts.shutdown_grace_ms;
  k_http_quiesce(srv);
  k_agent_wake(srv, 1); /* held long-polls end now, or they would hold the drain */
}

static void on_signal(k_loop_t *l, int fd, uint32_t ev, void *ud) {
  struct signalfd_siginfo si;
  (void)l, (void)ev;
  while (read(fd, &si, sizeof si) == sizeof si)
    begin_stop(ud, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int64_t sched_settle_ms(const k_server_t *srv) {
  int64_t v = 2 * srv->opts.heartbeat_ms;
  return v < 2000 ? 2000 : v > 30000 ? 30000 : v;
}

/* Phases before each wait, in order:
 *   1. runbooks    — move executions that have results, due timers or new
 *                    work (each in its own unit); once a second, start
 *                    the runbooks whose schedule is due
 *   2. alerts      — evaluate the alert rules that are due (on their
 *                    interval, or at once after an event they watch); the
 *                    tick's transitions and alert.* events in one unit
 *   3. incidents   — escalation steps that are due (each incident in its
 *                    own unit); pending notifications whose generation is
 *                    durable go to the sender thread
 *   4. wake        — answer long-polls of agents that got jobs (the answers
 *                    wait for the commit below); rebuild the policy after
 *                    an apply (from the store, so a rolled-back apply is
 *                    never in force; the same for maintenance windows)
 *   5. checkpoint  — sign the audit head when due
 *   6. commit      — group-commit the batch (and the TSDB's staged samples
 *                    to its WAL); the sync threads fsync them
 *                    (a failed batch also rolls back executions' and
 *                    alerts' memory)
 *   7. release     — answer held requests (and fail those of a failed batch)
 *   8. events      — deliver the events of durable generations to their
 *                    subscribers (engines, live streams); what subscribers
 *                    write opens a new batch, so the loop comes round at once;
 *                    automation judges the events it queued (20 ms a turn at
 *                    most), and executions its rules started are ticked and
 *                    their agents woken here, in the same turn; then the
 *                    event cursor is saved, held back to what an engine
 *                    took but has not acted on (event.h: after a crash
 *                    those events are delivered again)
 *   9. kick        — let MHD send what was resumed outside its callbacks
 *  10. shutdown    — stop once nothing is in flight (or the grace ran out)
 * The wait is bounded by the next execution timer, the next alert rule
 * due and the incidents' next look (a retry, the outbox scan: <= 1 s). */
static int64_t before_sleep(k_loop_t *l, void *ud) {
  k_server_t *srv = ud;
  keel_err_t e = {0};
  MHD_UNSIGNED_LONG_LONG mt;
  int64_t xec_ms, alert_ms, inc_ms, now = keel_now_ms();
  uint64_t open_gen;
  int rc;

  /* Schedules wait until agents have had time to come back after a
   * restart (two heartbeats, 2-30 s): a missed run then finds its targets
   * online instead of skipping them as offline. */
  if (!srv->stopping && keel_mono_ms() - srv->last_sched_ms >= 1000 &&
      now - srv->start_ms >= sched_settle_ms(srv)) {
    srv->last_sched_ms = keel_mono_ms();
    k_api_schedules_fire(srv, now);
  }
  xec_ms = k_xec_tick(srv->xec, now, &rc);
  if (rc) srv->fleet_wake = 1; /* steps may have been handed to agents */
  if (!srv->stopping) k_alerts_tick(srv->alerts, now);
  inc_ms = k_incidents_tick(srv->incidents, now);
  k_agent_wake(srv, 0);
  if (k_org_dirty(srv->org) && k_org_reload(srv->org, &e))
    keel_log(&srv->log, KEEL_LOG_ERROR, "organization: %s (the previous policy stays)", e.msg);
  if (k_maint_dirty(srv->maint) && k_maint_reload(srv->maint, &e))
    keel_log(&srv->log, KEEL_LOG_ERROR, "maintenance windows: %s (the previous ones stay)", e.msg);
  if (k_audit_maybe_checkpoint(srv->audit, keel_now_ms(), 0, &e))
    keel_log(&srv->log, KEEL_LOG_ERROR, "audit checkpoint: %s", e.msg);
  {
    /* metrics: the samples staged this iteration go to the WAL together */
    uint64_t gen;
    keel_err_t te = {0};
    if (k_tsdb_commit(srv->tsdb, &gen, &te)) {
      keel_log(&srv->log, KEEL_LOG_ERROR, "metrics commit failed, batch dropped: %s", te.msg);
      k_http_release(srv);
    }
  }
  rc = k_store_flush(srv->store, &e);
  k_audit_batch_done(srv->audit, rc == 0);
  if (rc) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "commit failed, batch rolled back: %s", e.msg);
    if (k_xec_reload(srv->xec, &e))
      keel_log(&srv->log, KEEL_LOG_ERROR, "executions: reload: %s", e.msg);
    if (k_alerts_reload(srv->alerts, &e))
      keel_log(&srv->log, KEEL_LOG_ERROR, "alerts: reload: %s", e.msg);
    if (k_auto_reload(srv->automation, keel_now_ms(), &e))
      keel_log(&srv->log, KEEL_LOG_ERROR, "automation: reload: %s", e.msg);
    k_http_release(srv);
  }
  open_gen = k_store_visible_gen(srv->store);
  k_events_dispatch(srv->events, k_store_durable_gen(srv->store));
  /* automation: judge queued events, 20 ms a turn (the rest next turn) */
  if (k_api_automation_pump(srv, 20)) xec_ms = 0;
  {
    /* what engines took but have not acted on yet is delivered again
     * after a crash */
    int64_t ha = k_api_automation_held(srv), hr = k_alerts_held(srv->alerts);
    k_events_save(srv->events, ha && (!hr || ha < hr) ? ha : hr);
  }
  if (k_store_visible_gen(srv->store) != open_gen) xec_ms = 0; /* subscribers wrote: commit soon */
  if (srv->automation_started) {
    /* a rule started an execution: hand its first steps to the agents in
     * this turn (they leave with the next commit) */
    srv->automation_started = 0;
    k_xec_tick(srv->xec, keel_now_ms(), &rc);
    if (rc) srv->fleet_wake = 1;
    k_agent_wake(srv, 0);
  }
  /* after the events: a rule watching one is due at once */
  alert_ms = srv->stopping ? -1 : k_alerts_wait_ms(srv->alerts, keel_now_ms());
  if (alert_ms >= 0 && (xec_ms < 0 || alert_ms < xec_ms)) xec_ms = alert_ms;
  if (xec_ms < 0 || inc_ms < xec_ms) xec_ms = inc_ms;
  while (srv->mhd_kick) {
    srv->mhd_kick = 0;
    MHD_run(srv->mhd);
  }
  if (srv->stopping && ((srv->inflight == 0 && k_work_pending(srv->work) == 0) ||
                        keel_mono_ms() > srv->stop_deadline_ms)) {
    k_loop_stop(l);
    return 0;
  }
  if (MHD_get_timeout(srv->mhd, &mt) == MHD_YES) {
    /* Due now (a body partly read, a resumed connection to finish, a
     * connection timed out): MHD only makes progress in MHD_run, and its
     * epoll fd may not fire again for it.  While stopping too, or the
     * drain would wait out its grace. */
    if (mt == 0) {
      k_http_run(srv);
      return 0;
    }
    if (srv->stopping) return mt < 50 ? (int64_t)mt : 50;
    return xec_ms >= 0 && xec_ms < (int64_t)mt ? xec_ms : (int64_t)mt;
  }
  if (srv->stopping) return 50;
  return xec_ms;
}

#define LAST_SEEN_PERSIST_MS 60000

/* Every 100 ms: long-polls whose time is up; once a second: liveness;
 * every 5 s: TSDB housekeeping (cuts, compaction, retention on a worker);
 * hourly (and once at start): events past their retention, automation
 * runs past theirs. */
static void cron(k_loop_t *l, void *ud) {
  k_server_t *srv = ud;
  int64_t mono = keel_mono_ms();
  (void)l;
  k_agent_expire(srv, mono);
  k_api_events_cron(srv, mono);
  if (!srv->stopping) k_api_automation_cron(srv, mono);
  if (mono - srv->last_fleet_cron_ms >= 1000) {
    srv->last_fleet_cron_ms = mono;
    k_fleet_cron(srv->fleet, keel_now_ms(), LAST_SEEN_PERSIST_MS);
  }
  if (mono - srv->last_tsdb_maintain_ms >= 5000 && !srv->stopping) {
    keel_err_t e = {0};
    srv->last_tsdb_maintain_ms = mono;
    if (k_tsdb_maintain(srv->tsdb, keel_now_ms(), srv->work, &e))
      keel_log(&srv->log, KEEL_LOG_ERROR, "metrics maintenance: %s", e.msg);
  }
  if (!srv->stopping && (!srv->last_event_prune_ms || mono - srv->last_event_prune_ms >= 3600000)) {
    keel_err_t e = {0};
    srv->last_event_prune_ms = mono;
    if (k_events_prune(srv->events, keel_now_ms(), &e))
      keel_log(&srv->log, KEEL_LOG_ERROR, "events: prune: %s", e.msg);
  }
}

/* Every agent holds a connection: lift the soft fd limit to the hard one. */
static void raise_fd_limit(k_server_t *srv) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl))
      keel_log(&srv->log, KEEL_LOG_WARN, "cannot raise the open-file limit: %s", strerror(errno));
  }
}

static int write_file(const char *path, const char *text, int excl, keel_err_t *e) {
  size_t n = strlen(text);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), 0600);
  int rc = 0;
  if (fd < 0) return keel_err_set(e, KEEL_EIO, "%s: %s", path, strerror(errno));
  if (write(fd, text, n) != (ssize_t)n || fsync(fd))
    rc = keel_err_set(e, KEEL_EIO, "%s: %s", path, strerror(errno));
  close(fd);
  return rc;
}

static int serve(cli_opts_t *o) {
  k_server_t srv;
  keel_err_t e = {0};
  k_audit_opts_t ao;
  sigset_t mask;
  char path[1200], url[200];
  int rc = 1;

  memset(&srv, 0, sizeof srv);
  srv.opts = o->srv;
  srv.sigfd = -1;
  srv.log = (keel_log_t){keel_log_stderr, (void *)"keeld", srv.opts.log_level};
  srv.start_ms = keel_now_ms();
  ao.checkpoint_records = (uint64_t)srv.opts.checkpoint_records;
  ao.checkpoint_interval_ms = srv.opts.checkpoint_interval_ms;

  /* Block before any thread exists (the store's sync thread, the worker
   * pool, MHD): threads inherit the mask, so a process-directed SIGTERM
   * MUST reach only the signalfd, never a thread with default disposition
   * that would kill keeld without its final flush. */
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* libcurl's global state before any thread (the scrape engine's) */
  if (keel_http_global_init(&e)) goto fail;
  if (k_serverkey_load(srv.opts.data, &srv.key, &e) ||
      k_store_open(srv.opts.data, 0, &srv.log, &srv.store, &e) ||
      k_audit_open(srv.store, &srv.key, &ao, &srv.log, &srv.audit, &e) ||
      k_events_open(srv.store, &srv.log, srv.opts.event_retention_ms, &srv.events, &e))
    goto fail;
  if (k_fleet_open(srv.store, &srv.log, srv.opts.heartbeat_ms, &srv.fleet, &e) ||
      k_org_open(srv.store, &srv.log, &srv.org, &e))
    goto fail;
  if (k_api_events_start(&srv, &e)) goto fail;
  {
    k_xec_deps_t xd = {srv.store, srv.fleet, &srv.key, &srv.log, srv.events};
    if (k_xec_open(&xd, &srv.xec, &e)) goto fail;
  }
  snprintf(path, sizeof path, "%s/tsdb", srv.opts.data);
  if (k_tsdb_open(path, NULL, &srv.log, &srv.tsdb, &e) || k_scrape_new(&srv.log, &srv.scrape, &e) ||
      k_metrics_config_load(&srv, &e) || k_api_alerts_open(&srv, &e))
    goto fail;
  if (k_maint_open(srv.store, &srv.log, &srv.maint, &e)) goto fail;
  {
    /* srv.url is filled by k_http_start below, before any payload is built */
    k_incidents_deps_t id = {srv.store, srv.events,           srv.maint, &srv.log,
                             srv.url,   srv.opts.am_resend_ms, 1};
    if (k_incidents_open(&id, &srv.incidents, &e)) goto fail;
  }
  if (k_api_automation_start(&srv, &e)) goto fail;
  raise_fd_limit(&srv);
  srv.loop = k_loop_new();
  srv.work = k_work_new(2);
  srv.route_stats = calloc((size_t)k_nroutes + 1, sizeof *srv.route_stats);
  if (!srv.loop || !srv.work || !srv.route_stats) {
    keel_err_set(&e, KEEL_ENOMEM, "out of memory");
    goto fail;
  }
  if (k_http_start(&srv, &e)) goto fail;
  srv.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (srv.sigfd < 0 || k_loop_add_fd(srv.loop, srv.sigfd, EPOLLIN, on_signal, &srv) ||
      k_loop_add_fd(srv.loop, k_store_sync_fd(srv.store), EPOLLIN, on_sync, &srv) ||
      k_loop_add_fd(srv.loop, k_work_fd(srv.work), EPOLLIN, on_work, &srv) ||
      k_loop_add_fd(srv.loop, k_tsdb_sync_fd(srv.tsdb), EPOLLIN, on_tsdb_sync, &srv) ||
      k_loop_add_fd(srv.loop, k_scrape_fd(srv.scrape), EPOLLIN, on_scrape, &srv) ||
      k_loop_add_fd(srv.loop, k_incidents_fd(srv.incidents), EPOLLIN, on_incidents, &srv)) {
    keel_err_set(&e, KEEL_EIO, "cannot set up the event loop: %s", strerror(errno));
    goto fail;
  }
  k_loop_set_before_sleep(srv.loop, before_sleep, &srv);
  k_loop_set_cron(srv.loop, 100, cron, &srv);

  /* Where we listen, for scripts and tests that asked for port 0. */
  snprintf(path, sizeof path, "%s/keeld.url", srv.opts.data);
  snprintf(url, sizeof url, "%s\n", srv.url);
  if (write_file(path, url, 0, &e)) goto fail;
  keel_log(&srv.log, KEEL_LOG_INFO, "keeld %s listening on %s (data %s)", KEEL_VERSION, srv.url,
           srv.opts.data);

  k_loop_run(srv.loop);

  /* Drain: sign the final head, commit, wait for the fsync. */
  {
    uint64_t gen;
    if (k_tsdb_commit(srv.tsdb, &gen, &e) == 0) k_tsdb_sync_wait(srv.tsdb);
  }
  if (k_audit_maybe_checkpoint(srv.audit, keel_now_ms(), 1, &e) ||
      k_store_flush(srv.store, &e) || k_store_sync_wait(srv.store, &e)) {
    keel_log(&srv.log, KEEL_LOG_ERROR, "final flush: %s", e.msg);
    goto out;
  }
  keel_log(&srv.log, KEEL_LOG_INFO, "stopped cleanly");
  rc = 0;
  goto out;
fail:
  keel_log(&srv.log, KEEL_LOG_ERROR, "%s", e.msg);
out:
  k_http_stop(&srv);
  k_api_events_stop(&srv); /* after MHD let go of every stream */
  k_scrape_free(srv.scrape);
  k_work_free(srv.work); /* after its jobs: a TSDB maintenance job finishes first */
  k_tsdb_close(srv.tsdb);
  k_xec_close(srv.xec);
  k_alerts_close(srv.alerts);
  k_incidents_close(srv.incidents); /* stops the sender: requests in flight are abandoned */
  k_api_automation_stop(&srv);
  k_maint_close(srv.maint);
  k_events_close(srv.events);
  k_org_close(srv.org);
  k_fleet_close(srv.fleet);
  k_audit_close(srv.audit);
  k_store_close(srv.store);
  k_loop_free(srv.loop);
  if (srv.sigfd >= 0) close(srv.sigfd);
  free(srv.route_stats);
  k_serverkey_wipe(&srv.key);
  return rc;
}

/* ---- init ------------------------------------------------------------------------- */

static void init_cleanup(const char *dir) {
  static const char *files[] = {"keel.db", "keel.db-wal", "keel.db-shm", "server.key",
                                "admin.token", NULL};
  char path[1200];
  for (int i = 0; files[i]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
}

static int init(cli_opts_t *o) {
  const char *dir = o->srv.data, *admin = o->admin[0] ? o->admin : "admin";
  static const char *mine[] = {"keel.db", "server.key", "admin.token", NULL};
  keel_log_t log = {keel_log_stderr, (void *)"keeld", o->srv.log_level};
  k_serverkey_t key;
  k_store_t *s = NULL;
  k_audit_t *a = NULL;
  json_t *user = NULL, *tok = NULL, *req = NULL;
  keel_err_t e = {0};
  char path[1200], line[128];
  struct stat st;
  int rc = 1, created = 0;

  for (int i = 0; mine[i]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, mine[i]);
    if (stat(path, &st) == 0) {
      fprintf(stderr,
              "keeld init: %s already holds a Keel data directory (%s exists); refusing to touch "
              "it\n",
              dir, mine[i]);
      return 1;
    }
  }
  /* An existing directory is taken only when empty (one made ready by a
   * package or an operator, with its owner and mode); anything in it
   * might be someone's, so init refuses and changes nothing. */
  {
    DIR *d = opendir(dir);
    struct dirent *de;
    if (d) {
      while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) break;
      closedir(d);
      if (de) {
        fprintf(stderr, "keeld init: %s exists and is not empty; refusing to touch it\n", dir);
        return 1;
      }
    }
  }
  if (mkdir(dir, 0700) && errno != EEXIST) {
    fprintf(stderr, "keeld init: mkdir %s: %s\n", dir, strerror(errno));
    return 1;
  }
  if (!k_iam_valid_name(admin)) {
    fprintf(stderr, "keeld init: --admin '%s' is not a valid user name\n", admin);
    return 2;
  }
  created = 1;
  req = json_pack("{s:s,s:s}", "name", admin, "role", "admin");
  if (k_serverkey_create(dir, &key, &e) || k_store_open(dir, 1, &log, &s, &e) ||
      k_audit_open(s, &key, NULL, &log, &a, &e) || k_store_unit_begin(s, &e))
    goto out;
  {
    /* The bootstrap is a mutation like any other: in a unit, on the record. */
    int64_t now = keel_now_ms();
    k_audit_rec_t rec = {"keeld:init", "user:create", "", "ok", 201, "initial admin user", "init",
                         ""};
    char target[96];
    int urc = k_iam_user_create(s, req, now, &user, &e);
    if (!urc) urc = k_iam_token_create(s, admin, "bootstrap", 0, now, &tok, &e);
    if (!urc) {
      snprintf(target, sizeof target, "user/%s", admin);
      rec.target = target;
      urc = k_audit_append(a, &rec, NULL, &e);
    }
    if (!urc) {
      snprintf(target, sizeof target, "token/%s", keel_json_str(tok, "id"));
      rec.action = "token:create";
      rec.detail = "initial admin token";
      urc = k_audit_append(a, &rec, NULL, &e);
    }
    if (k_store_unit_end(s, urc == 0, NULL) || urc) goto out;
  }
  if (k_store_flush(s, &e)) goto out;
  k_audit_batch_done(a, 1);
  if (k_audit_maybe_checkpoint(a, keel_now_ms(), 1, &e) || k_store_flush(s, &e) ||
      k_store_sync_wait(s, &e))
    goto out;
  snprintf(path, sizeof path, "%s/admin.token", dir);
  snprintf(line, sizeof line, "%s\n", keel_json_str(tok, "token"));
  if (write_file(path, line, 1, &e)) goto out;
  fprintf(stderr,
          "keeld: initialized %s (database, Ed25519 server key, admin user '%s').\n"
          "keeld: the admin token is printed below once; it is also in %s (mode 0600).\n",
          dir, admin, path);
  fputs(line, stdout);
  rc = 0;
out:
  if (rc && created) {
    fprintf(stderr, "keeld init: %s\n", e.msg[0] ? e.msg : "failed");
    k_audit_close(a);
    a = NULL;
    k_store_close(s);
    s = NULL;
    init_cleanup(dir);
  }
  k_audit_close(a);
  k_store_close(s);
  json_decref(user);
  json_decref(tok);
  json_decref(req);
  k_serverkey_wipe(&key);
  memset(line, 0, sizeof line);
  return rc;
}

int main(int argc, char **argv) {
  cli_opts_t o;
  keel_err_t e = {0};
  const char *cmd = "serve";
  int first = 1;

  /* The database holds token hashes and the audit trail: ours alone. */
  umask(077);
  memset(&o, 0, sizeof o);
  snprintf(o.srv.listen, sizeof o.srv.listen, "127.0.0.1:7700");
  o.srv.body_limit = 1 << 20;
  o.srv.checkpoint_records = 1000;
  o.srv.checkpoint_interval_ms = 10000;
  o.srv.log_level = KEEL_LOG_INFO;
  o.srv.shutdown_grace_ms = 10000;
  o.srv.heartbeat_ms = 5000;
  o.srv.event_retention_ms = 7LL * 86400 * 1000;
  o.srv.am_resend_ms = 60 * 1000;

  if (argc > 1 && strncmp(argv[1], "--", 2)) {
    cmd = argv[1];
    first = 2;
  }
  if (!strcmp(cmd, "version")) {
    printf("keeld %s\n", KEEL_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "routes")) {
    for (int i = 0; i < k_nroutes; i++)
      printf("%s %s %s%s\n", k_routes[i].method, k_routes[i].pattern,
             k_routes[i].action ? k_routes[i].action : "-",
             k_routes[i].flags & K_ROUTE_PUBLIC ? " public" : "");
    return 0;
  }
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "serve") && strcmp(cmd, "init")) {
    fprintf(stderr, "keeld: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
  }
  if (keel_crypto_init()) {
    fprintf(stderr, "keeld: libsodium failed to initialize\n");
    return 1;
  }
  if (parse_args(argc, argv, first, &o, &e)) {
    fprintf(stderr, "keeld: %s\n", e.msg);
    usage(stderr);
    return 2;
  }
  return !strcmp(cmd, "init") ? init(&o) : serve(&o);
}
