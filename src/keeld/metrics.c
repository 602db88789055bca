/* metrics.c — keeld's own /metrics, Prometheus text format 0.0.4. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "alert/alert.h"
#include "automation/automation.h"
#include "keel/version.h"
#include "metrics/tsdb.h"
#include "server.h"

void k_metrics_observe(k_server_t *srv, int route_idx, int status, double seconds) {
  k_route_stats_t *rs;
  int cls = status / 100;
  if (!srv->route_stats) return;
  rs = &srv->route_stats[route_idx >= 0 ? route_idx : k_nroutes];
  if (cls < 1 || cls > 5) cls = 5;
  rs->by_code[cls][status % 100]++;
  k_hist_observe(&rs->seconds, seconds);
}

static void route_labels(int i, const char **method, const char **route) {
  if (i < k_nroutes) {
    *method = k_routes[i].method;
    *route = k_routes[i].pattern;
  } else {
    *method = "any";
    *route = "unmatched";
  }
}

static int hist(keel_buf_t *b, const char *name, const char *labels, const k_hist_t *h) {
  uint64_t cum = 0;
  int rc = 0;
  const char *sep = labels[0] ? "," : "";
  for (int i = 0; i < K_HIST_NBUCKETS && !rc; i++) {
    cum += h->counts[i];
    rc = keel_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, k_hist_bounds[i],
                         (unsigned long long)cum);
  }
  if (!rc)
    rc = keel_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n%s_sum%s%s%s %.9f\n%s_count%s%s%s %llu\n",
                         name, labels, sep, (unsigned long long)h->count, name,
                         labels[0] ? "{" : "", labels, labels[0] ? "}" : "", h->sum, name,
                         labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
                         (unsigned long long)h->count);
  return rc;
}

static int header(keel_buf_t *b, const char *name, const char *type, const char *help) {
  return keel_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int sample(keel_buf_t *b, const char *name, const char *type, const char *help,
                  unsigned long long v) {
  int rc = header(b, name, type, help);
  if (!rc) rc = keel_buf_printf(b, "%s %llu\n", name, v);
  return rc;
}

/* A family with one label of fixed values: name{label="keys[i]"} v[i]
 * for each of keys (ended by NULL). */
static int labelled(keel_buf_t *b, const char *name, const char *type, const char *help,
                    const char *label, const char *const *keys, const unsigned long long *v) {
  int rc = header(b, name, type, help);
  for (size_t i = 0; keys[i] && !rc; i++)
    rc = keel_buf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, keys[i], v[i]);
  return rc;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define VALS(...) ((const unsigned long long[]){__VA_ARGS__})

/* Each engine says what it holds through its own stats accessor; nothing
 * here reads another engine's tables.  Labels are fixed sets (states,
 * results): no rule, subject or host ever becomes one. */
static int engine_metrics(k_server_t *srv, keel_buf_t *b) {
  int rc = 0;

  if (srv->events) {
    k_events_stats_t es;
    k_stream_stats_t ss;
    k_events_stats(srv->events, &es);
    k_api_events_stats(srv, &ss);
    if (!rc) rc = sample(b, "keel_events_emitted_total", "counter",
                         "Events given a sequence number (one rolled back with its change is "
                         "counted and leaves a gap).",
                         es.emitted);
    if (!rc) rc = sample(b, "keel_events_last_seq", "gauge",
                         "Sequence number of the last event given one.",
                         (unsigned long long)(es.last_seq > 0 ? es.last_seq : 0));
    if (!rc) rc = sample(b, "keel_event_streams", "gauge",
                         "Event streams (GET /v1/events/stream) open.", (unsigned long long)ss.open);
    if (!rc) rc = sample(b, "keel_event_streams_cut_total", "counter",
                         "Event streams keeld ended itself: a client too far behind, its token no "
                         "longer valid, an error, shutdown.",
                         ss.ended);
  }
  if (srv->alerts) {
    k_alert_stats_t as;
    k_alerts_stats(srv->alerts, &as);
    if (!rc) rc = sample(b, "keel_alert_rules", "gauge", "Alert rules loaded.", as.rules);
    if (!rc) rc = labelled(b, "keel_alerts", "gauge", "Alerts pending or firing, by state.",
                           "state", KEYS("pending", "firing"), VALS(as.pending, as.firing));
    if (!rc) rc = sample(b, "keel_alert_evaluations_total", "counter", "Alert rule evaluations.",
                         as.evaluations);
    if (!rc) rc = sample(b, "keel_alert_evaluation_failures_total", "counter",
                         "Alert rule evaluations that left their rule in error.",
                         as.evaluation_failures);
    if (!rc) rc = header(b, "keel_alert_evaluation_duration_seconds", "histogram",
                         "Time to evaluate one alert rule (query and state machine; the write of "
                         "the tick's transitions excluded).");
    if (!rc) rc = hist(b, "keel_alert_evaluation_duration_seconds", "", &as.evaluation_seconds);
  }
  if (srv->incidents) {
    k_incident_stats_t is;
    keel_err_t e = {0};
    /* a failed read leaves out the gauges it feeds, not the whole answer */
    int got = k_incidents_stats(srv->incidents, &is, &e) == 0;
    if (!got) keel_log(&srv->log, KEEL_LOG_ERROR, "metrics: incidents: %s", e.msg);
    if (!rc && got)
      rc = labelled(b, "keel_incidents", "gauge", "Unresolved incidents, by state.", "state",
                    KEYS("open", "acked"), VALS(is.open, is.acked));
    if (!rc) rc = labelled(b, "keel_notifications_total", "counter",
                           "Notifications by outcome, once kept: sent, failed for good, or "
                           "suppressed by a maintenance window.",
                           "result", KEYS("sent", "failed", "suppressed"),
                           VALS(is.sent, is.failed, is.suppressed));
    if (!rc) rc = sample(b, "keel_notification_attempts_total", "counter",
                         "HTTP requests made for notifications, answered or not, retries included.",
                         is.attempts);
    if (!rc) rc = sample(b, "keel_alertmanager_resends_total", "counter",
                         "Re-sends of firing alerts to alertmanager channels that ended (not "
                         "notifications: an Alertmanager merges them).",
                         is.resends);
    if (!rc) rc = sample(b, "keel_alertmanager_resend_failures_total", "counter",
                         "Re-sends to alertmanager channels not answered 2xx, or not made.",
                         is.resend_failures);
    if (!rc && got) rc = sample(b, "keel_notification_outbox", "gauge",
                                "Notifications not sent or failed yet (retries waiting included).",
                                (unsigned long long)is.outbox);
  }
  if (srv->automation) {
    k_auto_stats_t au;
    k_auto_stats(srv->automation, &au);
    if (!rc) rc = labelled(b, "keel_automation_triggered_total", "counter",
                           "Automation rule outcomes, once kept: run (a runbook started), dry_run, "
                           "skipped (a guard held, or the start was refused or failed).",
                           "result", KEYS("run", "dry_run", "skipped"),
                           VALS(au.runs, au.dry_runs, au.skips));
    if (!rc) rc = sample(b, "keel_automation_queue", "gauge",
                         "Events waiting for automation rules to judge them.", au.queued);
    if (!rc) rc = sample(b, "keel_automation_enabled", "gauge",
                         "1 while automation runs, 0 while its kill switch is off.",
                         (unsigned long long)(au.enabled != 0));
  }
  if (srv->fleet) {
    size_t n = k_fleet_count(srv->fleet), online = 0;
    for (size_t i = 0; i < n; i++)
      online += !strcmp(k_fleet_status(srv->fleet, k_fleet_at(srv->fleet, i)), "online");
    if (!rc) rc = labelled(b, "keel_agents", "gauge", "Enrolled agents, by liveness.", "state",
                           KEYS("online", "offline"), VALS(online, n - online));
  }
  if (srv->xec) {
    k_xec_stats_t xs;
    k_xec_stats(srv->xec, &xs);
    if (!rc) rc = labelled(b, "keel_executions", "gauge",
                           "Unfinished runbook executions, by state.", "state",
                           KEYS("running", "waiting_approval", "paused"),
                           VALS(xs.running, xs.waiting_approval, xs.paused));
  }
  return rc;
}

static int process_metrics(k_server_t *srv, keel_buf_t *b) {
  char buf[2048], *p;
  unsigned long utime = 0, stime = 0, vsize = 0;
  long rss = 0, ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  int fds = 0, rc = 0;
  struct rlimit rl;
  FILE *f = fopen("/proc/self/stat", "r");
  DIR *d;

  if (f) {
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    /* Fields after the command name, which may itself hold spaces. */
    p = strrchr(buf, ')');
    if (p)
      sscanf(p + 2,
             "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %lu %ld",
             &utime, &stime, &vsize, &rss);
  }
  if ((d = opendir("/proc/self/fd"))) {
    struct dirent *de;
    while ((de = readdir(d)))
      if (de->d_name[0] != '.') fds++;
    closedir(d);
    fds--; /* the directory stream itself */
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  rc = header(b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
  if (!rc) rc = keel_buf_printf(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)ticks);
  if (!rc) rc = header(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  if (!rc) rc = keel_buf_printf(b, "process_resident_memory_bytes %ld\n", rss * page);
  if (!rc) rc = header(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  if (!rc) rc = keel_buf_printf(b, "process_virtual_memory_bytes %lu\n", vsize);
  if (!rc) rc = header(b, "process_open_fds", "gauge", "Number of open file descriptors.");
  if (!rc) rc = keel_buf_printf(b, "process_open_fds %d\n", fds);
  if (!rc) rc = header(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
  if (!rc) rc = keel_buf_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
  if (!rc) rc = header(b, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  if (!rc) rc = keel_buf_printf(b, "process_start_time_seconds %.3f\n", (double)srv->start_ms / 1000.0);
  return rc;
}

int k_metrics_render(k_server_t *srv, keel_buf_t *b) {
  k_store_stats_t st;
  uint64_t head;
  char head_hash[KEEL_HASH_HEX], labels[256];
  int rc;

  rc = header(b, "keel_build_info", "gauge", "Keel build information; always 1.");
  if (!rc) rc = keel_buf_printf(b, "keel_build_info{version=\"%s\"} 1\n", KEEL_VERSION);

  if (!rc) rc = header(b, "keel_http_requests_total", "counter",
                       "HTTP requests answered by keeld, by route pattern, method and status code.");
  for (int i = 0; i <= k_nroutes && !rc && srv->route_stats; i++) {
    const char *m, *r;
    route_labels(i, &m, &r);
    for (int c = 1; c <= 5 && !rc; c++)
      for (int x = 0; x < 100 && !rc; x++)
        if (srv->route_stats[i].by_code[c][x])
          rc = keel_buf_printf(b, "keel_http_requests_total{method=\"%s\",route=\"%s\",code=\"%d\"} %llu\n",
                               m, r, c * 100 + x, (unsigned long long)srv->route_stats[i].by_code[c][x]);
  }
  if (!rc) rc = header(b, "keel_http_request_duration_seconds", "histogram",
                       "Time from the start of a request to the end of its answer, by route pattern.");
  for (int i = 0; i <= k_nroutes && !rc && srv->route_stats; i++) {
    const char *m, *r;
    if (!srv->route_stats[i].seconds.count) continue;
    route_labels(i, &m, &r);
    snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\"", m, r);
    rc = hist(b, "keel_http_request_duration_seconds", labels, &srv->route_stats[i].seconds);
  }
  if (!rc) rc = header(b, "keel_http_requests_in_flight", "gauge", "Requests received and not yet answered.");
  if (!rc) rc = keel_buf_printf(b, "keel_http_requests_in_flight %d\n", srv->inflight);

  if (srv->audit) {
    k_audit_head(srv->audit, &head, head_hash);
    if (!rc) rc = sample(b, "keel_audit_records_appended_total", "counter",
                         "Audit records appended since keeld started (denials included).",
                         k_audit_appended(srv->audit));
    if (!rc) rc = sample(b, "keel_audit_head_sequence", "gauge",
                         "Sequence number of the last committed audit record.", head);
  }
  if (srv->store) {
    k_store_stats(srv->store, &st);
    if (!rc) rc = sample(b, "keel_store_commits_total", "counter",
                         "Write batches committed (group commits).", st.commits);
    if (!rc) rc = sample(b, "keel_store_commit_failures_total", "counter",
                         "Write batches that failed to commit.", st.commit_failures);
    if (!rc) rc = header(b, "keel_store_commit_duration_seconds", "histogram",
                         "Time to commit one write batch to the write-ahead log (before fsync).");
    if (!rc) rc = hist(b, "keel_store_commit_duration_seconds", "", &st.commit_seconds);
    if (!rc) rc = header(b, "keel_store_sync_duration_seconds", "histogram",
                         "Time of one fsync of the write-ahead log (one per group of batches).");
    if (!rc) rc = hist(b, "keel_store_sync_duration_seconds", "", &st.sync_seconds);
  }
  if (srv->tsdb) {
    k_tsdb_stats_t ts;
    k_tsdb_stats(srv->tsdb, &ts);
    {
      const struct {
        const char *name, *type, *help;
        uint64_t v;
      } tm[] = {
          {"keel_tsdb_head_series", "gauge", "Series in the TSDB's head.", ts.series},
          {"keel_tsdb_head_bytes", "gauge", "Heap held by the TSDB's head.", ts.head_bytes},
          {"keel_tsdb_samples_appended_total", "counter", "Samples committed into the TSDB.", ts.samples_appended},
          {"keel_tsdb_out_of_order_samples_total", "counter", "Samples refused: not after their series' last one.", ts.out_of_order},
          {"keel_tsdb_out_of_bounds_samples_total", "counter", "Samples refused: older than the head accepts.", ts.out_of_bounds},
          {"keel_tsdb_wal_bytes", "gauge", "Bytes of the TSDB's write-ahead log.", ts.wal_bytes},
          {"keel_tsdb_blocks", "gauge", "Blocks on disk.", ts.blocks},
          {"keel_tsdb_block_bytes", "gauge", "Bytes of the blocks on disk.", ts.block_bytes},
          {"keel_tsdb_commit_failures_total", "counter", "TSDB batches that failed to reach the WAL.", ts.commit_failures},
          {"keel_tsdb_maintain_failures_total", "counter", "Failed cuts, compactions or retention runs.", ts.maintain_failures},
      };
      for (size_t i = 0; i < sizeof tm / sizeof tm[0] && !rc; i++)
        rc = sample(b, tm[i].name, tm[i].type, tm[i].help, tm[i].v);
    }
    if (!rc) rc = labelled(b, "keel_metrics_samples_received_total", "counter",
                           "Samples received from agents and scrapes, by outcome.", "outcome",
                           KEYS("accepted", "refused"),
                           VALS(srv->metrics_accepted, srv->metrics_refused));
  }
  if (!rc) rc = engine_metrics(srv, b);
  if (!rc) rc = process_metrics(srv, b);
  return rc;
}
