/* bench/alerts — what evaluating alert rules costs keeld's loop.
 *
 * Over a real TSDB (in a temporary directory) holding 1,000 hosts' worth of
 * node_load1 and a real store and event engine, k_alerts_tick as keeld's
 * `alerts` phase calls it, with an injected clock one second apart:
 *   - one rule over 1,000 series that matches none of them,
 *   - one rule over 1,000 series that makes 1,000 firing alerts (steady
 *     state: nothing changes, nothing is written),
 *   - 1,000 simple rules (one series each, half of them firing), all due
 *     every second,
 *   - the first tick of those 1,000 rules, which writes 500 alerts and
 *     their alert.firing events in one unit.
 * Prints figures; never fails on a time.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert/alert.h"
#include "alert/doc.h"
#include "event/event.h"
#include "keel/json.h"
#include "keel/time.h"
#include "metrics/tsdb.h"
#include "store/store.h"

#define NHOSTS 1000
#define NTICKS 60

static k_store_t *s;
static k_events_t *ev;
static k_tsdb_t *db;
static int64_t t0;

static void die(const char *what, const keel_err_t *e) {
  fprintf(stderr, "bench-alerts: %s: %s\n", what, e ? e->msg : "");
  exit(1);
}

static int querier(void *ud, k_querier_t **q, keel_err_t *e) { return k_tsdb_querier(ud, q, e); }

static int rm_one(const char *p, const struct stat *st, int f, struct FTW *w) {
  (void)st, (void)f, (void)w;
  return remove(p);
}

static k_alerts_t *engine(void) {
  k_alerts_deps_t d = {s, ev, NULL, querier, db, NULL};
  k_alerts_t *a = NULL;
  keel_err_t e = {0};
  if (k_alerts_open(&d, &a, &e)) die("alerts open", &e);
  return a;
}

static void commit(void) {
  keel_err_t e = {0};
  if (k_store_flush(s, &e) || k_store_sync_wait(s, &e)) die("flush", &e);
  k_events_dispatch(ev, k_store_durable_gen(s));
}

static void clean(void) {
  keel_err_t e = {0};
  if (k_store_unit_begin(s, &e) ||
      k_store_exec(s, "DELETE FROM alert_rules", NULL, 0, NULL, NULL, &e) ||
      k_store_exec(s, "DELETE FROM alert_instances", NULL, 0, NULL, NULL, &e) ||
      k_store_unit_end(s, 1, &e))
    die("clean", &e);
  commit();
}


static void apply(k_alerts_t *a, const char *yaml) {
  json_t *rule = NULL, *report = NULL;
  keel_buf_t detail;
  keel_err_t e = {0};
  keel_buf_init(&detail, 4096);
  if (k_alert_doc_load("bench.yaml", yaml, strlen(yaml), &rule, &e)) die("rule", &e);
  if (k_store_unit_begin(s, &e) || k_alerts_apply(a, rule, 0, t0, &report, &detail, &e) ||
      k_store_unit_end(s, 1, &e))
    die("apply", &e);
  json_decref(rule);
  json_decref(report);
  keel_buf_free(&detail);
}

/* Mean µs of the ticks at t0 + from .. t0 + from + n - 1 seconds. */
static double ticks_us(k_alerts_t *a, int from, int n) {
  int64_t start = keel_mono_ns();
  for (int i = 0; i < n; i++) k_alerts_tick(a, t0 + (int64_t)(from + i) * 1000);
  commit();
  return (double)(keel_mono_ns() - start) / 1e3 / n;
}

int main(void) {
  char dir[] = "/tmp/bench-alerts-XXXXXX", path[256], yaml[512];
  keel_err_t e = {0};
  k_alerts_t *a;
  uint64_t gen;
  double us;

  if (!mkdtemp(dir)) die("mkdtemp", NULL);
  snprintf(path, sizeof path, "%s/tsdb", dir);
  if (k_store_open(dir, 1, NULL, &s, &e) || k_events_open(s, NULL, 86400000, &ev, &e) ||
      k_tsdb_open(path, NULL, NULL, &db, &e))
    die("open", &e);
  t0 = keel_now_ms() / 1000 * 1000;
  /* node_load1{host=hNNNN} = 0 or 1, one sample: within the 5m lookback of
   * every tick below */
  for (int i = 0; i < NHOSTS; i++) {
    char host[16];
    snprintf(host, sizeof host, "h%04d", i);
    k_label_t l[] = {{"__name__", "node_load1"}, {"host", host}, {"job", "node"}};
    if (k_tsdb_append(db, l, 3, t0, i % 2, &e)) die("append", &e);
  }
  if (k_tsdb_commit(db, &gen, &e)) die("commit", &e);

  printf("alert evaluation over %d series (%d ticks each, 1 s apart)\n", NHOSTS, NTICKS);
  a = engine();
  apply(a, "kind: AlertRule\nname: none\nteam: ops\nseverity: info\nexpr: node_load1 > 100\n"
           "interval: 1s\n");
  ticks_us(a, 0, 1);
  us = ticks_us(a, 1, NTICKS);
  printf("  1 rule, no alert (node_load1 > 100):          %8.1f us per tick\n", us);
  k_alerts_close(a);
  clean();

  a = engine();
  apply(a, "kind: AlertRule\nname: all\nteam: ops\nseverity: info\nexpr: node_load1 >= 0\n"
           "interval: 1s\nannotations: {summary: '{{ $labels.host }} is {{ $value }}'}\n");
  us = ticks_us(a, 100, 1);
  printf("  1 rule, first tick writing %d alerts:        %8.1f us\n", NHOSTS, us);
  us = ticks_us(a, 101, NTICKS);
  printf("  1 rule, %d firing alerts, steady:           %8.1f us per tick\n", NHOSTS, us);
  k_alerts_close(a);
  clean();

  a = engine();
  for (int i = 0; i < NHOSTS; i++) {
    snprintf(yaml, sizeof yaml,
             "kind: AlertRule\nname: r%04d\nteam: ops\nseverity: warning\n"
             "expr: node_load1{host=\"h%04d\"} > 0.5\ninterval: 1s\n",
             i, i);
    apply(a, yaml);
  }
  commit();
  us = ticks_us(a, 200, 1);
  printf("  %d rules, first tick (%d alerts written):  %8.1f ms\n", NHOSTS, NHOSTS / 2, us / 1e3);
  us = ticks_us(a, 201, NTICKS);
  printf("  %d rules, steady:                            %8.1f ms per tick, %.1f us per rule\n",
         NHOSTS, us / 1e3, us / NHOSTS);
  k_alerts_close(a);

  k_events_close(ev);
  k_tsdb_close(db);
  k_store_close(s);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}
