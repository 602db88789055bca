/* bench/tsdb — the embedded TSDB (src/keeld/metrics/tsdb.h) on
 * node_exporter-like data.
 *
 * Data: HOSTS hosts (default 1,000) x 800 series each, scraped every 10 s,
 * shaped like node_exporter's output on a 4-CPU VM: cpu seconds per cpu and
 * mode (counters with two decimals), disk, filesystem, network, memory,
 * vmstat, netstat, sockstat, schedstat (nine decimals), interrupts, load,
 * timex, scrape durations (noisy floats), go_* and process_* metrics.
 * About half the series are constant or rarely move, as on a real host.
 * Timestamps: every series of a host shares its scrape time, hosts are
 * spread over the interval; "aligned" scrape times are exact multiples of
 * the interval after the host's offset (what Prometheus writes with its
 * default 2 ms timestamp tolerance), "jittered" ones are off by 0-4 ms.
 *
 * Figures:
 *  1. ingest, one core: append (by label set, then by cached ref) + commit
 *     (WAL encoding and write(); the fsync runs on the sync thread), one
 *     commit per host scrape of 800 samples; only time inside TSDB calls;
 *  2. head memory per active series (the head's own accounting, and RSS);
 *  3. select latency: node_cpu_seconds_total of every host over the last
 *     hour;
 *  4. bytes per sample on disk after compaction: CHOSTS hosts (default 50)
 *     for 8 h, cut into 2 h blocks and compacted into a 6 h one; aligned and
 *     jittered timestamps.
 * Targets: >= 3,000,000 samples/s; <= 1 KiB per active series; <= 1.3
 * bytes/sample.  Prints figures and says by how much a target is missed;
 * never fails on a figure.
 *
 * Environment: KEEL_BENCH_HOSTS, KEEL_BENCH_MINUTES (ingest span of figure
 * 1-3, default 60), KEEL_BENCH_CHOSTS, TMPDIR.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/grow.h"
#include "keel/time.h"
#include "metrics/tsdb.h"
#include "promql/promql.h"

#define PER_HOST 800
#define INTERVAL_MS 10000
#define T0 INT64_C(1699984800000) /* 2023-11-14T18:00Z: a multiple of 6 h, as block ranges are */

/* ---- the host profile ------------------------------------------------------------------------ */

enum kind {
  CONST,     /* never changes */
  CTR_DEC2,  /* counter in hundredths (cpu seconds) */
  CTR_INT,   /* integer counter */
  CTR_SLOW,  /* integer counter that moves now and then */
  CTR_NS,    /* counter of nanoseconds shown in seconds (nine decimals) */
  GAUGE_INT, /* integer gauge, random walk in units */
  GAUGE_DEC, /* two-decimal gauge (load) */
  GAUGE_RND, /* noisy float: a duration in seconds, nine significant decimals */
};

typedef struct fam {
  const char *name;
  const char *l1, *l1v[8]; /* first extra label and its values (NULL: none) */
  int n1;
  const char *l2, *l2v[40];
  int n2;
  enum kind kind;
  double a, b; /* kind parameters: increment mean / jitter, or base / step */
  double unit;
} fam_t;

#define CPUS {"0", "1", "2", "3"}, 4
#define DISKS {"dm-0", "nvme0n1", "sda", "sdb"}, 4
#define IFACES {"docker0", "eth0", "lo", "veth1"}, 4
#define MOUNTS {"/", "/boot", "/home", "/run", "/var", "/var/lib/docker", "/tmp", "/srv"}, 8

static const fam_t fams[] = {
    {"node_cpu_seconds_total", "cpu", CPUS, "mode", {"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"}, 8, CTR_DEC2, 40, 30, 1},
    {"node_cpu_guest_seconds_total", "cpu", CPUS, "mode", {"nice", "user"}, 2, CONST, 0, 0, 1},
    {"node_disk_reads_completed_total", "device", DISKS, NULL, {0}, 0, CTR_SLOW, 3, 0.3, 1},
    {"node_disk_writes_completed_total", "device", DISKS, NULL, {0}, 0, CTR_INT, 40, 20, 1},
    {"node_disk_read_bytes_total", "device", DISKS, NULL, {0}, 0, CTR_SLOW, 24, 0.3, 4096},
    {"node_disk_written_bytes_total", "device", DISKS, NULL, {0}, 0, CTR_INT, 200, 150, 4096},
    {"node_disk_io_time_seconds_total", "device", DISKS, NULL, {0}, 0, CTR_INT, 80, 60, 0.001},
    {"node_disk_io_time_weighted_seconds_total", "device", DISKS, NULL, {0}, 0, CTR_INT, 150, 120, 0.001},
    {"node_disk_read_time_seconds_total", "device", DISKS, NULL, {0}, 0, CTR_SLOW, 10, 0.3, 0.001},
    {"node_disk_write_time_seconds_total", "device", DISKS, NULL, {0}, 0, CTR_INT, 120, 100, 0.001},
    {"node_disk_reads_merged_total", "device", DISKS, NULL, {0}, 0, CTR_SLOW, 2, 0.1, 1},
    {"node_disk_writes_merged_total", "device", DISKS, NULL, {0}, 0, CTR_INT, 20, 15, 1},
    {"node_disk_io_now", "device", DISKS, NULL, {0}, 0, GAUGE_INT, 0, 1, 1},
    {"node_disk_discards_completed_total", "device", DISKS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_disk_discards_merged_total", "device", DISKS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_disk_discarded_sectors_total", "device", DISKS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_disk_discard_time_seconds_total", "device", DISKS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_disk_flush_requests_total", "device", DISKS, NULL, {0}, 0, CTR_SLOW, 2, 0.5, 1},
    {"node_disk_flush_requests_time_seconds_total", "device", DISKS, NULL, {0}, 0, CTR_SLOW, 5, 0.5, 0.001},
    {"node_disk_info", "device", DISKS, NULL, {0}, 0, CONST, 1, 0, 1},
    {"node_filesystem_size_bytes", "mountpoint", MOUNTS, NULL, {0}, 0, CONST, 5e10, 0, 1},
    {"node_filesystem_free_bytes", "mountpoint", MOUNTS, NULL, {0}, 0, GAUGE_INT, 2e10, 30, 4096},
    {"node_filesystem_avail_bytes", "mountpoint", MOUNTS, NULL, {0}, 0, GAUGE_INT, 1.8e10, 30, 4096},
    {"node_filesystem_files", "mountpoint", MOUNTS, NULL, {0}, 0, CONST, 3.2e6, 0, 1},
    {"node_filesystem_files_free", "mountpoint", MOUNTS, NULL, {0}, 0, GAUGE_INT, 2.9e6, 2, 1},
    {"node_filesystem_readonly", "mountpoint", MOUNTS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_filesystem_device_error", "mountpoint", MOUNTS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_receive_bytes_total", "device", IFACES, NULL, {0}, 0, CTR_INT, 60000, 50000, 1},
    {"node_network_transmit_bytes_total", "device", IFACES, NULL, {0}, 0, CTR_INT, 40000, 35000, 1},
    {"node_network_receive_packets_total", "device", IFACES, NULL, {0}, 0, CTR_INT, 300, 250, 1},
    {"node_network_transmit_packets_total", "device", IFACES, NULL, {0}, 0, CTR_INT, 250, 200, 1},
    {"node_network_receive_errs_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_transmit_errs_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_receive_drop_total", "device", IFACES, NULL, {0}, 0, CTR_SLOW, 1, 0.05, 1},
    {"node_network_transmit_drop_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_receive_fifo_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_transmit_fifo_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_receive_frame_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_receive_compressed_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_transmit_compressed_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_receive_multicast_total", "device", IFACES, NULL, {0}, 0, CTR_SLOW, 1, 0.1, 1},
    {"node_network_transmit_colls_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_transmit_carrier_total", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_carrier", "device", IFACES, NULL, {0}, 0, CONST, 1, 0, 1},
    {"node_network_carrier_changes_total", "device", IFACES, NULL, {0}, 0, CONST, 2, 0, 1},
    {"node_network_up", "device", IFACES, NULL, {0}, 0, CONST, 1, 0, 1},
    {"node_network_mtu_bytes", "device", IFACES, NULL, {0}, 0, CONST, 1500, 0, 1},
    {"node_network_speed_bytes", "device", IFACES, NULL, {0}, 0, CONST, 1.25e9, 0, 1},
    {"node_network_transmit_queue_length", "device", IFACES, NULL, {0}, 0, CONST, 1000, 0, 1},
    {"node_network_info", "device", IFACES, NULL, {0}, 0, CONST, 1, 0, 1},
    {"node_network_iface_id", "device", IFACES, NULL, {0}, 0, CONST, 2, 0, 1},
    {"node_network_dormant", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_protocol_type", "device", IFACES, NULL, {0}, 0, CONST, 1, 0, 1},
    {"node_network_net_dev_group", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_address_assign_type", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_flags", "device", IFACES, NULL, {0}, 0, CONST, 4099, 0, 1},
    {"node_network_device_id", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_iface_link", "device", IFACES, NULL, {0}, 0, CONST, 2, 0, 1},
    {"node_network_iface_link_mode", "device", IFACES, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_network_name_assign_type", "device", IFACES, NULL, {0}, 0, CONST, 4, 0, 1},
    {"node_interrupts_total", "cpu", CPUS, "devices", {"0", "1", "8", "9", "12", "14", "15", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34", "35", "36", "37", "38", "39", "40", "LOC", "SPU", "PMI", "IWI", "RTR", "RES", "CAL", "TLB", "TRM", "THR", "DFR", "MCE", "MCP", "ERR", "MIS", "PIN"}, 40, CTR_SLOW, 5, 0.35, 1},
    {"node_schedstat_running_seconds_total", "cpu", CPUS, NULL, {0}, 0, CTR_NS, 1.2e9, 1e9, 1},
    {"node_schedstat_waiting_seconds_total", "cpu", CPUS, NULL, {0}, 0, CTR_NS, 2e8, 1.5e8, 1},
    {"node_schedstat_timeslices_total", "cpu", CPUS, NULL, {0}, 0, CTR_INT, 2000, 1500, 1},
    {"node_softnet_processed_total", "cpu", CPUS, NULL, {0}, 0, CTR_INT, 500, 400, 1},
    {"node_softnet_dropped_total", "cpu", CPUS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_softnet_times_squeezed_total", "cpu", CPUS, NULL, {0}, 0, CTR_SLOW, 1, 0.02, 1},
    {"node_cpu_scaling_frequency_hertz", "cpu", CPUS, NULL, {0}, 0, GAUGE_INT, 2.4e6, 200, 1000},
    {"node_cpu_frequency_max_hertz", "cpu", CPUS, NULL, {0}, 0, CONST, 3.5e9, 0, 1},
    {"node_cpu_core_throttles_total", "cpu", CPUS, NULL, {0}, 0, CONST, 0, 0, 1},
    {"node_thermal_zone_temp", "cpu", CPUS, NULL, {0}, 0, GAUGE_INT, 45000, 500, 1},
};

/* Single-series families by kind. */
typedef struct single {
  const char *name;
  enum kind kind;
  double a, b, unit;
} single_t;

static const single_t singles[] = {
    {"node_load1", GAUGE_DEC, 120, 15, 0.01},
    {"node_load5", GAUGE_DEC, 110, 5, 0.01},
    {"node_load15", GAUGE_DEC, 100, 2, 0.01},
    {"node_procs_running", GAUGE_INT, 3, 2, 1},
    {"node_procs_blocked", GAUGE_INT, 0, 1, 1},
    {"node_context_switches_total", CTR_INT, 40000, 30000, 1},
    {"node_intr_total", CTR_INT, 30000, 20000, 1},
    {"node_forks_total", CTR_INT, 30, 25, 1},
    {"node_boot_time_seconds", CONST, 1.6999e9, 0, 1},
    {"node_time_seconds", CTR_NS, 1e10, 2e6, 1},
    {"node_entropy_available_bits", GAUGE_INT, 256, 0, 1},
    {"node_filefd_allocated", GAUGE_INT, 2400, 20, 1},
    {"node_filefd_maximum", CONST, 9.2e18, 0, 1},
    {"node_nf_conntrack_entries", GAUGE_INT, 300, 20, 1},
    {"node_nf_conntrack_entries_limit", CONST, 262144, 0, 1},
    {"node_uname_info", CONST, 1, 0, 1},
    {"node_os_info", CONST, 1, 0, 1},
    {"node_textfile_scrape_error", CONST, 0, 0, 1},
    {"node_exporter_build_info", CONST, 1, 0, 1},
    {"process_cpu_seconds_total", CTR_DEC2, 2, 2, 1},
    {"process_resident_memory_bytes", GAUGE_INT, 2.2e7, 100, 4096},
    {"process_virtual_memory_bytes", GAUGE_INT, 7.3e8, 20, 4096},
    {"process_open_fds", GAUGE_INT, 10, 1, 1},
    {"process_max_fds", CONST, 1048576, 0, 1},
    {"process_start_time_seconds", CONST, 1.69990001e9, 0, 1},
    {"go_goroutines", GAUGE_INT, 8, 1, 1},
    {"go_threads", CONST, 7, 0, 1},
    {"go_memstats_alloc_bytes", GAUGE_INT, 4e6, 5e4, 8},
    {"go_memstats_alloc_bytes_total", CTR_INT, 3e5, 1e5, 8},
    {"go_memstats_heap_alloc_bytes", GAUGE_INT, 4e6, 5e4, 8},
    {"go_memstats_heap_inuse_bytes", GAUGE_INT, 6e6, 3, 8192},
    {"go_memstats_heap_objects", GAUGE_INT, 3e4, 300, 1},
    {"go_memstats_mallocs_total", CTR_INT, 3000, 1000, 1},
    {"go_memstats_frees_total", CTR_INT, 3000, 1000, 1},
    {"go_memstats_sys_bytes", CONST, 2.2e7, 0, 1},
    {"go_memstats_next_gc_bytes", GAUGE_INT, 8e6, 1, 4096},
    {"go_memstats_last_gc_time_seconds", CTR_NS, 1.2e11, 1e10, 1},
    {"go_gc_duration_seconds_count", CTR_SLOW, 1, 0.1, 1},
    {"go_gc_duration_seconds_sum", CTR_NS, 3e5, 2e5, 1},
    {"promhttp_metric_handler_requests_in_flight", CONST, 1, 0, 1},
};

/* Per-label families that fill the rest: netstat, vmstat, memory,
 * sockstat, timex, scrape durations and successes. */
typedef struct bulk {
  const char *prefix;
  int n;
  int pct_const, pct_slow; /* shares of constant and slow counters; the rest move */
  enum kind moving;
  double a, b, unit;
} bulk_t;

static const bulk_t bulks[] = {
    {"node_netstat_", 80, 45, 35, CTR_INT, 200, 150, 1},
    {"node_vmstat_", 10, 20, 40, CTR_INT, 3000, 2500, 1},
    {"node_memory_", 52, 55, 0, GAUGE_INT, 2e8, 300, 1024},
    {"node_sockstat_", 20, 40, 0, GAUGE_INT, 50, 3, 1},
    {"node_timex_", 20, 75, 0, GAUGE_INT, 10000, 50, 1},
    {"node_scrape_collector_duration_seconds_", 40, 0, 0, GAUGE_RND, 2e5, 0, 1e-9},
    {"node_scrape_collector_success_", 40, 100, 0, CONST, 1, 0, 1},
    {"go_gc_duration_seconds_q", 5, 0, 0, GAUGE_RND, 5e4, 0, 1e-9},
    {"promhttp_metric_handler_requests_total_", 3, 66, 0, CTR_SLOW, 1, 1, 1},
};

/* ---- series state --------------------------------------------------------------------------- */

typedef struct ser {
  k_label_t lab[5];
  int nlab;
  enum kind kind;
  double a, b, unit;
  int64_t cur; /* in units */
  uint64_t ref;
} ser_t;

typedef struct bench {
  uint64_t rng;
  int hosts;
  ser_t *s;  /* hosts * PER_HOST */
  char **strs;
  size_t nstrs, capstrs;
  double *vals; /* one scrape */
} bench_t;

static uint64_t rnd(bench_t *b) {
  uint64_t x = b->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return b->rng = x;
}
static double urand(bench_t *b) { return (double)(rnd(b) >> 11) / 9007199254740992.0; }

static const char *keep(bench_t *b, const char *s) {
  char *c = strdup(s);
  b->strs = keel_grow(b->strs, &b->capstrs, b->nstrs, sizeof *b->strs, 4096);
  b->strs[b->nstrs++] = c;
  return c;
}

static int lab_cmp(const void *x, const void *y) {
  return strcmp(((const k_label_t *)x)->name, ((const k_label_t *)y)->name);
}

static void add_series(bench_t *b, ser_t *s, const char *name, const char *inst, const char *l1,
                       const char *v1, const char *l2, const char *v2, enum kind kind, double a,
                       double bb, double unit) {
  s->nlab = 0;
  s->lab[s->nlab++] = (k_label_t){"__name__", name};
  s->lab[s->nlab++] = (k_label_t){"instance", inst};
  s->lab[s->nlab++] = (k_label_t){"job", "node"};
  if (l1) s->lab[s->nlab++] = (k_label_t){l1, v1};
  if (l2) s->lab[s->nlab++] = (k_label_t){l2, v2};
  qsort(s->lab, (size_t)s->nlab, sizeof s->lab[0], lab_cmp);
  s->kind = kind;
  s->a = a;
  s->b = bb;
  s->unit = unit;
  switch (kind) {
  case CONST: s->cur = (int64_t)a; break;
  case GAUGE_INT:
  case GAUGE_DEC:
  case GAUGE_RND: s->cur = (int64_t)(a / (kind == GAUGE_RND ? 1 : unit)) + (int64_t)(rnd(b) % 100); break;
  default: s->cur = (int64_t)(rnd(b) % 100000000); break;
  }
  if (kind == CTR_DEC2 && !strcmp(v2 ? v2 : "", "idle")) s->a = 960; /* idle gets ~9.6 s per 10 s */
  if (kind == CTR_DEC2 && v2 && (!strcmp(v2, "steal") || !strcmp(v2, "nice"))) s->kind = CONST;
}

static void build(bench_t *b) {
  char inst[64], name[128];
  b->s = calloc((size_t)b->hosts * PER_HOST, sizeof *b->s);
  b->vals = malloc(PER_HOST * sizeof *b->vals);
  for (int h = 0; h < b->hosts; h++) {
    ser_t *s = b->s + (size_t)h * PER_HOST;
    int n = 0;
    const char *ip;
    snprintf(inst, sizeof inst, "host-%04d.example.net:9100", h);
    ip = keep(b, inst);
    for (size_t f = 0; f < sizeof fams / sizeof *fams; f++) {
      const fam_t *F = &fams[f];
      for (int i = 0; i < (F->n1 ? F->n1 : 1); i++)
        for (int j = 0; j < (F->n2 ? F->n2 : 1) && n < PER_HOST; j++)
          add_series(b, &s[n++], F->name, ip, F->l1, F->n1 ? F->l1v[i] : NULL, F->l2,
                     F->n2 ? F->l2v[j] : NULL, F->kind, F->a, F->b, F->unit);
    }
    for (size_t i = 0; i < sizeof singles / sizeof *singles && n < PER_HOST; i++)
      add_series(b, &s[n++], singles[i].name, ip, NULL, NULL, NULL, NULL, singles[i].kind,
                 singles[i].a, singles[i].b, singles[i].unit);
    for (size_t k = 0; k < sizeof bulks / sizeof *bulks && n < PER_HOST; k++) {
      const bulk_t *B = &bulks[k];
      for (int i = 0; i < B->n && n < PER_HOST; i++) {
        int pct = (i * 100) / B->n;
        enum kind kind = pct < B->pct_const ? CONST : pct < B->pct_const + B->pct_slow ? CTR_SLOW : B->moving;
        snprintf(name, sizeof name, "%sm%02d", B->prefix, i);
        /* host 0 owns the name strings; the others share them */
        add_series(b, &s[n], h == 0 ? keep(b, name) : b->s[n].lab[0].value, ip, NULL,
                   NULL, NULL, NULL, kind, kind == CTR_SLOW ? 2 : B->a, kind == CTR_SLOW ? 0.3 : B->b,
                   B->unit);
        n++;
      }
    }
    if (n != PER_HOST) {
      fprintf(stderr, "bench: profile has %d series per host, not %d\n", n, PER_HOST);
      exit(1);
    }
  }
}

/* Next value of a series (one scrape later). */
static double step(bench_t *b, ser_t *s) {
  double r;
  switch (s->kind) {
  case CONST: break;
  case CTR_DEC2:
  case CTR_INT:
  case CTR_NS:
    r = s->a + s->b * (2 * urand(b) - 1);
    if (r > 0) s->cur += (int64_t)r;
    break;
  case CTR_SLOW:
    if (urand(b) < s->b) s->cur += 1 + (int64_t)(rnd(b) % (uint64_t)(s->a > 1 ? s->a : 1));
    break;
  case GAUGE_INT:
  case GAUGE_DEC:
    s->cur += (int64_t)(rnd(b) % (uint64_t)(2 * s->b + 1)) - (int64_t)s->b;
    if (s->cur < 0) s->cur = 0;
    break;
  case GAUGE_RND: s->cur = (int64_t)(s->a * (0.5 + urand(b))); break;
  }
  /* values as an exporter prints them: decimals divide exactly */
  switch (s->kind) {
  case CTR_DEC2:
  case GAUGE_DEC: return (double)s->cur / 100.0;
  case CTR_NS:
  case GAUGE_RND: return (double)s->cur / 1e9;
  default:
    if (s->unit == 0.001) return (double)s->cur / 1000.0;
    return (double)s->cur * s->unit;
  }
}

static int64_t host_time(bench_t *b, int h, int64_t k, int jitter) {
  int64_t off = ((int64_t)h * 7919) % INTERVAL_MS;
  return T0 + k * INTERVAL_MS + off + (jitter ? (int64_t)(rnd(b) % 5) : 0);
}

static double now_s(void) { return (double)keel_mono_ns() / 1e9; }

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (!f) return 0;
  if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
  fclose(f);
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void die(const char *what, const keel_err_t *e) {
  fprintf(stderr, "bench: %s: %s\n", what, e->msg);
  exit(1);
}

enum { BY_LABELS = 0, BY_REF, BY_BATCH };

/* Ingests steps [k0, k1) for every host; returns seconds spent in TSDB
 * calls.  how: BY_LABELS k_tsdb_append per sample; BY_REF refs cached by
 * the caller; BY_BATCH k_tsdb_refs for each scrape, then append_ref. */
static double ingest(bench_t *b, k_tsdb_t *db, int64_t k0, int64_t k1, int how, int jitter,
                     uint64_t *samples, int64_t *last_t) {
  double spent = 0;
  keel_err_t e = {0};
  k_labels_t sets[PER_HOST];
  uint64_t refs[PER_HOST];
  const int by_ref = how == BY_REF;
  for (int64_t k = k0; k < k1; k++)
    for (int h = 0; h < b->hosts; h++) {
      ser_t *s = b->s + (size_t)h * PER_HOST;
      int64_t t = host_time(b, h, k, jitter);
      uint64_t g;
      double t0;
      for (int i = 0; i < PER_HOST; i++) {
        b->vals[i] = step(b, &s[i]);
        sets[i] = (k_labels_t){s[i].lab, (size_t)s[i].nlab};
      }
      t0 = now_s();
      if (how == BY_BATCH) {
        size_t bad;
        if (k_tsdb_refs(db, sets, PER_HOST, refs, &bad, &e)) die("refs", &e);
        for (int i = 0; i < PER_HOST; i++)
          if (k_tsdb_append_ref(db, refs[i], t, b->vals[i], &e)) die("append", &e);
        goto commit;
      }
      for (int i = 0; i < PER_HOST; i++) {
        int rc = by_ref && s[i].ref ? k_tsdb_append_ref(db, s[i].ref, t, b->vals[i], &e)
                                    : k_tsdb_append(db, s[i].lab, (size_t)s[i].nlab, t, b->vals[i], &e);
        if (rc) die("append", &e);
        if (by_ref && !s[i].ref && k_tsdb_ref(db, s[i].lab, (size_t)s[i].nlab, &s[i].ref, &e))
          die("ref", &e);
      }
    commit:
      if (k_tsdb_commit(db, &g, &e)) die("commit", &e);
      spent += now_s() - t0;
      *samples += PER_HOST;
      if (t > *last_t) *last_t = t;
    }
  return spent;
}

static void rmrf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

static void mkdata(char *dir, size_t n) {
  snprintf(dir, n, "%s/keel-bench-tsdb-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    exit(1);
  }
}

static int envint(const char *name, int def) {
  const char *v = getenv(name);
  return v && atoi(v) > 0 ? atoi(v) : def;
}

static int dbl_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Figure 4: bytes per sample after compaction. */
static void compaction_figure(int chosts, int jitter) {
  bench_t b = {.rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)jitter, .hosts = chosts};
  char dir[512];
  k_tsdb_t *db;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  uint64_t samples = 0;
  int64_t last = 0;
  double t0, tm, peak = 0;
  const int64_t steps = 8 * 3600 * 1000 / INTERVAL_MS;
  build(&b);
  mkdata(dir, sizeof dir);
  if (k_tsdb_open(dir, NULL, NULL, &db, &e)) die("open", &e);
  t0 = now_s();
  tm = 0;
  for (int64_t k = 0; k < steps; k += 360) { /* maintain every hour of data */
    double m0;
    ingest(&b, db, k, k + 360, BY_REF, jitter, &samples, &last);
    k_tsdb_stats(db, &st);
    if ((double)st.head_bytes / (double)st.series > peak) peak = (double)st.head_bytes / (double)st.series;
    m0 = now_s();
    if (k_tsdb_maintain(db, last, NULL, &e)) die("maintain", &e);
    tm += now_s() - m0;
  }
  k_tsdb_stats(db, &st);
  printf("  %-9s %d hosts x 8 h: %llu blocks (%llu cuts, %llu compactions, %.1f s of "
         "maintenance of %.1f s): %.3f bytes/sample over %llu samples in blocks",
         jitter ? "jittered:" : "aligned:", chosts, (unsigned long long)st.blocks,
         (unsigned long long)st.cuts, (unsigned long long)st.compactions, tm, now_s() - t0,
         (double)st.block_bytes / (double)st.block_samples, (unsigned long long)st.block_samples);
  if ((double)st.block_bytes / (double)st.block_samples > 1.3)
    printf("  [target 1.3 missed by %.0f%%]",
           100.0 * ((double)st.block_bytes / (double)st.block_samples / 1.3 - 1));
  printf("\n");
  printf("            head at its largest (up to 3 h of samples, before a cut): %.0f bytes per "
         "series; after: WAL %.0f MiB, chunks_head %.0f MiB\n",
         peak, (double)st.wal_bytes / 1048576.0, (double)st.head_file_bytes / 1048576.0);
  k_tsdb_close(db);
  rmrf(dir);
  for (size_t i = 0; i < b.nstrs; i++) free(b.strs[i]);
  free(b.strs);
  free(b.s);
  free(b.vals);
}

int main(void) {
  bench_t b = {.rng = 0x2545f4914f6cdd1dULL};
  char dir[512];
  k_tsdb_t *db;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  uint64_t samples = 0;
  int64_t last = 0, steps, warm;
  long rss0, rss1;
  double spent_labels, spent_refs, lat[5];
  int minutes = envint("KEEL_BENCH_MINUTES", 60), chosts = envint("KEEL_BENCH_CHOSTS", 50);

  b.hosts = envint("KEEL_BENCH_HOSTS", 1000);
  steps = (int64_t)minutes * 60000 / INTERVAL_MS;
  warm = steps / 6; /* the first sixth of the span by label set (step 0 creates the series) */
  printf("bench-tsdb: %d hosts x %d series, 10 s interval, %d min of data\n", b.hosts, PER_HOST,
         minutes);
  build(&b);
  mkdata(dir, sizeof dir);
  rss0 = rss_kib();
  if (k_tsdb_open(dir, NULL, NULL, &db, &e)) die("open", &e);

  {
    uint64_t n0, n1, n2;
    double spent_create = ingest(&b, db, 0, 1, BY_LABELS, 0, &samples, &last), spent_batch;
    n0 = samples;
    spent_labels = ingest(&b, db, 1, warm, BY_LABELS, 0, &samples, &last);
    n1 = samples;
    spent_batch = ingest(&b, db, warm, 2 * warm, BY_BATCH, 0, &samples, &last);
    n2 = samples;
    spent_refs = ingest(&b, db, 2 * warm, steps, BY_REF, 0, &samples, &last);
    printf("ingest, one core (append + commit, WAL encoding and write):\n");
    printf("  first scrape, creating %llu series: %.2f s (%.2f M series/s)\n",
           (unsigned long long)n0, spent_create, (double)n0 / spent_create / 1e6);
    printf("  by label set (k_tsdb_append: hash + exact compare per sample): %.2f M samples/s "
           "(%llu samples)",
           (double)(n1 - n0) / spent_labels / 1e6, (unsigned long long)(n1 - n0));
    if ((double)(n1 - n0) / spent_labels < 3e6)
      printf("  [target 3 M/s missed by %.0f%%]", 100.0 * (1 - (double)(n1 - n0) / spent_labels / 3e6));
    printf("\n  by label set, one k_tsdb_refs per scrape, then append_ref: %.2f M samples/s (%llu "
           "samples)",
           (double)(n2 - n1) / spent_batch / 1e6, (unsigned long long)(n2 - n1));
    if ((double)(n2 - n1) / spent_batch < 3e6)
      printf("  [target 3 M/s missed by %.0f%%]", 100.0 * (1 - (double)(n2 - n1) / spent_batch / 3e6));
    printf("\n  by ref cached by the caller (k_tsdb_append_ref): %.2f M samples/s (%llu samples)",
           (double)(samples - n2) / spent_refs / 1e6, (unsigned long long)(samples - n2));
    if ((double)(samples - n2) / spent_refs < 3e6)
      printf("  [target 3 M/s missed by %.0f%%]", 100.0 * (1 - (double)(samples - n2) / spent_refs / 3e6));
    printf("\n");
  }
  k_tsdb_sync_wait(db);
  rss1 = rss_kib();
  k_tsdb_stats(db, &st);
  printf("head: %llu series, %llu chunks; %.0f bytes per active series (heap held by the head), "
         "RSS %.0f bytes per series; closed chunks in chunks_head/ %.0f MiB (page cache); WAL %.0f MiB",
         (unsigned long long)st.series, (unsigned long long)st.head_chunks,
         (double)st.head_bytes / (double)st.series,
         (double)(rss1 - rss0) * 1024 / (double)st.series, (double)st.head_file_bytes / 1048576.0,
         (double)st.wal_bytes / 1048576.0);
  if ((double)st.head_bytes / (double)st.series > 1024)
    printf("  [target 1 KiB missed by %.0f%%]", 100.0 * ((double)st.head_bytes / (double)st.series / 1024 - 1));
  printf("\n");

  {
    k_matcher_t m = {K_MATCH_EQ, "__name__", "node_cpu_seconds_total"};
    size_t nser = 0, nsmp = 0;
    for (int r = 0; r < 5; r++) {
      k_querier_t *q;
      const k_series_t *res;
      double t0 = now_s();
      if (k_tsdb_querier(db, &q, &e)) die("querier", &e);
      if (q->select(q, &m, 1, last - 3600 * 1000, last, &res, &nser, &e)) die("select", &e);
      nsmp = 0;
      for (size_t i = 0; i < nser; i++) nsmp += res[i].n;
      q->close(q);
      lat[r] = now_s() - t0;
    }
    qsort(lat, 5, sizeof *lat, dbl_cmp);
    printf("select node_cpu_seconds_total over 1 h: %zu series, %zu samples: median %.1f ms (min "
           "%.1f, max %.1f)\n",
           nser, nsmp, lat[2] * 1e3, lat[0] * 1e3, lat[4] * 1e3);
  }
  {
    /* The query, through the PromQL engine as /api/v1/query runs
     * it: instant at the newest sample, over every host. */
    static const char expr[] = "sum by (instance) (rate(node_cpu_seconds_total[5m]))";
    size_t nres = 0;
    for (int r = 0; r < 5; r++) {
      k_querier_t *q;
      json_t *out = NULL;
      k_promql_err_t pe;
      double t0 = now_s();
      memset(&pe, 0, sizeof pe);
      if (k_tsdb_querier(db, &q, &e)) die("querier", &e);
      if (k_promql_instant(q, expr, last, &out, &pe)) {
        fprintf(stderr, "bench-tsdb: promql: %s\n", pe.msg);
        exit(1);
      }
      q->close(q);
      lat[r] = now_s() - t0;
      nres = json_array_size(json_object_get(out, "result"));
      json_decref(out);
    }
    qsort(lat, 5, sizeof *lat, dbl_cmp);
    printf("query %s (instant, %zu hosts answered): median %.1f ms (min %.1f, max %.1f)", expr, nres,
           lat[2] * 1e3, lat[0] * 1e3, lat[4] * 1e3);
    if (lat[2] > 0.1) printf("  [target 100 ms missed by %.0f%%]", 100.0 * (lat[2] / 0.1 - 1));
    printf("\n");
  }
  k_tsdb_close(db);
  {
    double t0 = now_s();
    if (k_tsdb_open(dir, NULL, NULL, &db, &e)) die("reopen", &e);
    printf("reopen (WAL replay of %llu samples, %.0f MiB): %.1f s\n", (unsigned long long)samples,
           (double)st.wal_bytes / 1048576.0, now_s() - t0);
    k_tsdb_close(db);
  }
  rmrf(dir);

  printf("bytes per sample on disk after compaction (2 h blocks compacted to 6 h):\n");
  compaction_figure(chosts, 0);
  compaction_figure(chosts, 1);
  for (size_t i = 0; i < b.nstrs; i++) free(b.strs[i]);
  free(b.strs);
  free(b.s);
  free(b.vals);
  return 0;
}
