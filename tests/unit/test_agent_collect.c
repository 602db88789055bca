/* Unit tests for the agent's host metrics (src/agent/collect*.c): every
 * parser on fixture copies of /proc files (tests/unit/fixtures/proc), the
 * per-process counters on a /proc made up in a temporary directory, and a
 * smoke collection of the real /proc.  Series are checked after a round
 * trip through the metric batch, as keeld would see them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collect.h"
#include "keel/metricbatch.h"
#include "keel/time.h"

#define FIX KEEL_SOURCE_DIR "/tests/unit/fixtures/proc"

/* ---- decoded series, by their text ---------------------------------------- */

typedef struct seen {
  size_t n;
  char *key[2048]; /* name{a="b",c="d"} */
  double v[2048];
  int64_t t[2048];
} seen_t;

static int on_series(void *ud, const keel_mb_label_t *l, size_t nl, const int64_t *t,
                     const double *v, size_t n) {
  seen_t *s = ud;
  char k[1024];
  size_t o = 0;
  const char *name = "";

  assert_int_equal(n, 1);
  for (size_t i = 0; i < nl; i++)
    if (!strcmp(l[i].name, "__name__")) name = l[i].value;
  o += (size_t)snprintf(k + o, sizeof k - o, "%s{", name);
  for (size_t i = 0, first = 1; i < nl; i++) {
    if (!strcmp(l[i].name, "__name__")) continue;
    o += (size_t)snprintf(k + o, sizeof k - o, "%s%s=\"%s\"", first ? "" : ",", l[i].name,
                          l[i].value);
    first = 0;
  }
  snprintf(k + o, sizeof k - o, "}");
  assert_true(s->n < 2048);
  s->key[s->n] = strdup(k);
  s->v[s->n] = v[0];
  s->t[s->n] = t[0];
  s->n++;
  return 0;
}

static void seen_free(seen_t *s) {
  for (size_t i = 0; i < s->n; i++) free(s->key[i]);
  s->n = 0;
}

/* Decodes what enc holds into s (reset first). */
static void decode_into(keel_mb_enc_t *enc, seen_t *s) {
  keel_buf_t b;
  keel_err_t e;
  keel_buf_init(&b, KEEL_MB_MAX_BATCH);
  seen_free(s);
  assert_int_equal(keel_mb_enc_finish(enc, &b, &e), 0);
  if (keel_mb_decode(b.data, b.len, on_series, s, &e)) fail_msg("decode: %s", e.msg);
  keel_buf_free(&b);
}

static int find(const seen_t *s, const char *key, double *v) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->key[i], key)) {
      if (v) *v = s->v[i];
      return 1;
    }
  return 0;
}

static double get(const seen_t *s, const char *key) {
  double v = 0;
  if (!find(s, key, &v)) {
    fprintf(stderr, "have:\n");
    for (size_t i = 0; i < s->n; i++) fprintf(stderr, "  %s\n", s->key[i]);
    fail_msg("no series %s", key);
  }
  return v;
}

static size_t count_prefix(const seen_t *s, const char *prefix) {
  size_t n = 0;
  for (size_t i = 0; i < s->n; i++) n += !strncmp(s->key[i], prefix, strlen(prefix));
  return n;
}

/* Reads a fixture into a fresh buffer (the parsers cut it in place). */
static char *fixture(const char *rel, size_t *len) {
  char path[512];
  FILE *f;
  char *buf = malloc(65536);
  snprintf(path, sizeof path, "%s/%s", FIX, rel);
  assert_non_null(f = fopen(path, "r"));
  *len = fread(buf, 1, 65535, f);
  buf[*len] = '\0';
  fclose(f);
  return buf;
}

typedef struct fx {
  keel_mb_enc_t enc;
  ka_emit_t em;
  seen_t *s;
} fx_t;

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  keel_mb_enc_init(&f->enc, 0);
  f->em = (ka_emit_t){.enc = &f->enc, .t = 1790000000000};
  f->s = calloc(1, sizeof *f->s);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  keel_mb_enc_free(&f->enc);
  seen_free(f->s);
  free(f->s);
  free(f);
  return 0;
}

/* ---- parsers on fixtures ---------------------------------------------------- */

static void test_stat(void **state) {
  fx_t *f = *state;
  size_t len;
  char *t = fixture("stat", &len);

  assert_int_equal(ka_parse_stat(&f->em, t, len, 100), 0);
  decode_into(&f->enc, f->s);
  /* 2 CPUs x 8 modes; the aggregate "cpu" line is not a cpu. */
  assert_int_equal(count_prefix(f->s, "node_cpu_seconds_total{"), 16);
  assert_true(get(f->s, "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}") == 21131.41);
  assert_true(get(f->s, "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}") == 2307.5);
  assert_true(get(f->s, "node_cpu_seconds_total{cpu=\"1\",mode=\"nice\"}") == 1.0);
  assert_true(get(f->s, "node_cpu_seconds_total{cpu=\"1\",mode=\"steal\"}") == 0.7);
  assert_true(get(f->s, "node_cpu_seconds_total{cpu=\"1\",mode=\"softirq\"}") == 18.51);
  assert_true(get(f->s, "node_cpu_seconds_total{cpu=\"1\",mode=\"iowait\"}") == 69.04);
  assert_false(find(f->s, "node_cpu_seconds_total{cpu=\"1\",mode=\"guest\"}", NULL));
  assert_true(get(f->s, "node_context_switches_total{}") == 12644358);
  assert_true(get(f->s, "node_boot_time_seconds{}") == 1795512062);
  assert_true(get(f->s, "node_procs_running{}") == 5);
  assert_true(get(f->s, "node_procs_blocked{}") == 1);
  assert_int_equal(f->s->n, 16 + 4);
  for (size_t i = 0; i < f->s->n; i++) assert_int_equal(f->s->t[i], 1790000000000);
  free(t);
}

static void test_loadavg_filenr(void **state) {
  fx_t *f = *state;
  size_t len;
  char *t = fixture("loadavg", &len), *t2;

  assert_int_equal(ka_parse_loadavg(&f->em, t, len), 0);
  t2 = fixture("sys/fs/file-nr", &len);
  assert_int_equal(ka_parse_filenr(&f->em, t2, len), 0);
  decode_into(&f->enc, f->s);
  assert_true(get(f->s, "node_load1{}") == 1.63);
  assert_true(get(f->s, "node_load5{}") == 0.97);
  assert_true(get(f->s, "node_load15{}") == 0.82);
  assert_true(get(f->s, "node_filefd_allocated{}") == 656);
  assert_true(get(f->s, "node_filefd_maximum{}") == 2466170);
  free(t);
  free(t2);
  {
    char bad[] = "1.0 x";
    assert_int_equal(ka_parse_loadavg(&f->em, bad, strlen(bad)), KEEL_EINVAL);
  }
}

static void test_meminfo(void **state) {
  fx_t *f = *state;
  size_t len;
  char *t = fixture("meminfo", &len);

  assert_int_equal(ka_parse_meminfo(&f->em, t, len), 0);
  decode_into(&f->enc, f->s);
  assert_int_equal(f->s->n, 37);
  assert_true(get(f->s, "node_memory_MemTotal_bytes{}") == 24684084.0 * 1024);
  assert_true(get(f->s, "node_memory_MemFree_bytes{}") == 1234567.0 * 1024);
  assert_true(get(f->s, "node_memory_MemAvailable_bytes{}") == 20000000.0 * 1024);
  assert_true(get(f->s, "node_memory_Buffers_bytes{}") == 123456.0 * 1024);
  assert_true(get(f->s, "node_memory_Cached_bytes{}") == 15000000.0 * 1024);
  assert_true(get(f->s, "node_memory_SwapTotal_bytes{}") == 2097148.0 * 1024);
  assert_true(get(f->s, "node_memory_SwapFree_bytes{}") == 2097000.0 * 1024);
  assert_true(get(f->s, "node_memory_Active_anon_bytes{}") == 300000.0 * 1024);
  assert_true(get(f->s, "node_memory_Inactive_file_bytes{}") == 11100000.0 * 1024);
  assert_true(get(f->s, "node_memory_Committed_AS_bytes{}") == 3000000.0 * 1024);
  assert_true(get(f->s, "node_memory_VmallocTotal_bytes{}") == 34359738367.0 * 1024);
  /* No unit: no _bytes, no scaling (node_exporter does the same). */
  assert_true(get(f->s, "node_memory_HugePages_Total{}") == 0);
  assert_true(get(f->s, "node_memory_Hugepagesize_bytes{}") == 2048.0 * 1024);
  assert_false(find(f->s, "node_memory_HugePages_Total_bytes{}", NULL));
  free(t);
}

static void test_diskstats(void **state) {
  fx_t *f = *state;
  size_t len;
  char *t = fixture("diskstats", &len);

  assert_int_equal(ka_parse_diskstats(&f->em, t, len), 0);
  decode_into(&f->enc, f->s);
  /* vda, sda, nvme0n1, dm-0, zram0: 5 devices x 5 series. */
  assert_int_equal(f->s->n, 25);
  assert_true(get(f->s, "node_disk_read_bytes_total{device=\"vda\"}") == 28959666.0 * 512);
  assert_true(get(f->s, "node_disk_written_bytes_total{device=\"vda\"}") == 71262720.0 * 512);
  assert_true(get(f->s, "node_disk_reads_completed_total{device=\"vda\"}") == 458244);
  assert_true(get(f->s, "node_disk_writes_completed_total{device=\"vda\"}") == 1193918);
  assert_true(get(f->s, "node_disk_io_time_seconds_total{device=\"vda\"}") == 144.404);
  /* An old 11-field line. */
  assert_true(get(f->s, "node_disk_io_time_seconds_total{device=\"sda\"}") == 1.5);
  assert_true(get(f->s, "node_disk_reads_completed_total{device=\"nvme0n1\"}") == 5);
  assert_true(get(f->s, "node_disk_reads_completed_total{device=\"dm-0\"}") == 77);
  assert_true(get(f->s, "node_disk_reads_completed_total{device=\"zram0\"}") == 0);
  assert_false(find(f->s, "node_disk_reads_completed_total{device=\"vda1\"}", NULL));
  assert_false(find(f->s, "node_disk_reads_completed_total{device=\"sda1\"}", NULL));
  assert_false(find(f->s, "node_disk_reads_completed_total{device=\"nvme0n1p1\"}", NULL));
  assert_false(find(f->s, "node_disk_reads_completed_total{device=\"loop0\"}", NULL));
  assert_false(find(f->s, "node_disk_reads_completed_total{device=\"ram0\"}", NULL));
  free(t);
}

static void test_disk_skipped(void **state) {
  (void)state;
  /* ^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$ */
  assert_true(ka_disk_skipped("ram0"));
  assert_true(ka_disk_skipped("loop12"));
  assert_true(ka_disk_skipped("fd0"));
  assert_true(ka_disk_skipped("sda1"));
  assert_true(ka_disk_skipped("hdb2"));
  assert_true(ka_disk_skipped("xvda15"));
  assert_true(ka_disk_skipped("nvme0n1p1"));
  assert_true(ka_disk_skipped("nvme12n3p45"));
  assert_false(ka_disk_skipped("sda"));
  assert_false(ka_disk_skipped("sdaa1")); /* one letter only in the pattern */
  assert_false(ka_disk_skipped("loop"));
  assert_false(ka_disk_skipped("nvme0n1"));
  assert_false(ka_disk_skipped("nvme0n1p"));
  assert_false(ka_disk_skipped("dm-0"));
  assert_false(ka_disk_skipped("md0"));
  assert_false(ka_disk_skipped("mmcblk0p1")); /* not in the pattern */
  assert_false(ka_disk_skipped("sr0"));
}

static void test_netdev(void **state) {
  fx_t *f = *state;
  size_t len;
  char *t = fixture("net/dev", &len);

  assert_int_equal(ka_parse_netdev(&f->em, t, len), 0);
  decode_into(&f->enc, f->s);
  assert_int_equal(f->s->n, 16); /* eth0, docker0; not lo */
  assert_true(get(f->s, "node_network_receive_bytes_total{device=\"eth0\"}") == 46096403);
  assert_true(get(f->s, "node_network_receive_packets_total{device=\"eth0\"}") == 1230);
  assert_true(get(f->s, "node_network_receive_errs_total{device=\"eth0\"}") == 1);
  assert_true(get(f->s, "node_network_receive_drop_total{device=\"eth0\"}") == 2);
  assert_true(get(f->s, "node_network_transmit_bytes_total{device=\"eth0\"}") == 66229);
  assert_true(get(f->s, "node_network_transmit_packets_total{device=\"eth0\"}") == 829);
  assert_true(get(f->s, "node_network_transmit_errs_total{device=\"eth0\"}") == 3);
  assert_true(get(f->s, "node_network_transmit_drop_total{device=\"eth0\"}") == 4);
  /* No blank after the colon; a counter at 2^64 - 1. */
  assert_true(get(f->s, "node_network_receive_bytes_total{device=\"docker0\"}") ==
              18446744073709551615.0);
  assert_true(get(f->s, "node_network_transmit_bytes_total{device=\"docker0\"}") == 10);
  assert_false(find(f->s, "node_network_receive_bytes_total{device=\"lo\"}", NULL));
  free(t);
}

static void test_mounts(void **state) {
  size_t len, n;
  char *t = fixture("self/mounts", &len);
  ka_mount_t m[16];

  (void)state;
  n = ka_parse_mounts(t, len, m, 16);
  assert_int_equal(n, 5);
  assert_string_equal(m[0].mountpoint, "/");
  assert_string_equal(m[0].device, "/dev/vda");
  assert_string_equal(m[0].fstype, "ext4");
  assert_string_equal(m[1].mountpoint, "/tmp");
  assert_string_equal(m[1].fstype, "tmpfs");
  assert_string_equal(m[2].mountpoint, "/data disk"); /* \040 undone */
  assert_string_equal(m[2].fstype, "xfs");
  assert_string_equal(m[3].mountpoint, "/var/lib/docker");
  assert_string_equal(m[4].mountpoint, "/boot/efi");
  free(t);
  /* The bound holds. */
  t = fixture("self/mounts", &len);
  assert_int_equal(ka_parse_mounts(t, len, m, 2), 2);
  free(t);

  assert_true(ka_mount_skipped("/dev", "ext4"));
  assert_true(ka_mount_skipped("/dev/shm", "tmpfs"));
  assert_true(ka_mount_skipped("/run/user/1000", "tmpfs"));
  assert_true(ka_mount_skipped("/var/lib/docker/volumes", "ext4"));
  assert_true(ka_mount_skipped("/var/lib/containers/storage/x", "xfs"));
  assert_true(ka_mount_skipped("/home", "cgroup2"));
  assert_true(ka_mount_skipped("/home", "fuse.sshfs"));
  assert_true(ka_mount_skipped("/home", "nfs4"));
  assert_false(ka_mount_skipped("/devices", "ext4"));
  assert_false(ka_mount_skipped("/var/lib/docker", "ext4"));
  assert_false(ka_mount_skipped("/home", "btrfs"));
  assert_false(ka_mount_skipped("/", "ext4"));
}

static void test_pstat(void **state) {
  ka_pstat_t ps;
  const char *tricky = "400 (a) (b c) R 1 400 400 0 -1 4194560 10 0 0 0 1 2 0 0 20 -5 1 0 700 "
                       "10000000 100 18446744073709551615 1 1 0";
  (void)state;
  assert_int_equal(ka_parse_pstat(tricky, strlen(tricky), &ps), 0);
  assert_string_equal(ps.comm, "a) (b c");
  assert_int_equal(ps.ticks, 3);
  assert_int_equal(ps.start, 700);
  assert_int_equal(ps.rss, 100);
  assert_int_equal(ka_parse_pstat("1 (x) S 1 2", 11, &ps), KEEL_EINVAL);
  assert_int_equal(ka_parse_pstat("1 x S", 5, &ps), KEEL_EINVAL);
  assert_int_equal(ka_parse_pstat("", 0, &ps), KEEL_EINVAL);
}

/* A whole collection over the fixture root: every file's series are there
 * (file systems depend on the machine: not checked here). */
static void test_collect_fixture_root(void **state) {
  fx_t *f = *state;
  const char *names[] = {"nginx", "sshd", "absent", "a) (b c"};
  ka_collect_t c;
  ka_collect_self_t self = {3, 7, 5, 2};
  keel_err_t e;
  long pg = sysconf(_SC_PAGESIZE);
  int n;

  assert_int_equal(ka_collect_init(&c, FIX, names, 4, NULL, &e), 0);
  c.clk_tck = 100;
  n = ka_collect(&c, &f->enc, 1790000000000, &self);
  decode_into(&f->enc, f->s);
  assert_int_equal((size_t)n, f->s->n);
  assert_int_equal(count_prefix(f->s, "node_cpu_seconds_total{"), 16);
  assert_int_equal(count_prefix(f->s, "node_memory_"), 37);
  assert_int_equal(count_prefix(f->s, "node_disk_"), 25);
  assert_int_equal(count_prefix(f->s, "node_network_"), 16);
  assert_true(get(f->s, "node_load15{}") == 0.82);
  assert_true(get(f->s, "node_filefd_allocated{}") == 656);
  assert_true(fabs(get(f->s, "node_time_seconds{}") - (double)keel_now_ms() / 1000) < 60);
  assert_true(get(f->s, "keel_agent_metrics_dropped_batches_total{}") == 3);
  assert_true(get(f->s, "keel_agent_metrics_spooled_batches{}") == 7);
  assert_true(get(f->s, "keel_agent_events_dropped_batches_total{}") == 5);
  assert_true(get(f->s, "keel_agent_events_spooled_batches{}") == 2);
  /* nginx: 200 and 201; sshd: 300. */
  assert_true(get(f->s, "keel_process_count{name=\"nginx\"}") == 2);
  assert_true(get(f->s, "keel_process_cpu_seconds_total{name=\"nginx\"}") == 4.75);
  assert_true(get(f->s, "keel_process_resident_memory_bytes{name=\"nginx\"}") == 3000.0 * pg);
  assert_true(get(f->s, "keel_process_count{name=\"sshd\"}") == 1);
  assert_true(get(f->s, "keel_process_cpu_seconds_total{name=\"sshd\"}") == 0.1);
  assert_true(get(f->s, "keel_process_count{name=\"absent\"}") == 0);
  assert_true(get(f->s, "keel_process_cpu_seconds_total{name=\"absent\"}") == 0);
  assert_true(get(f->s, "keel_process_count{name=\"a) (b c\"}") == 1);
  ka_collect_free(&c);
}

/* ---- the per-process counters across scans --------------------------------- */

static void write_stat(const char *root, int pid, const char *comm, unsigned ut, unsigned st,
                       unsigned start, unsigned rss) {
  char path[512];
  FILE *f;
  snprintf(path, sizeof path, "%s/%d", root, pid);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/%d/stat", root, pid);
  assert_non_null(f = fopen(path, "w"));
  fprintf(f, "%d (%s) S 1 %d %d 0 -1 0 0 0 0 0 %u %u 0 0 20 0 1 0 %u 1000 %u 0 0\n", pid, comm,
          pid, pid, ut, st, start, rss);
  fclose(f);
}

static void remove_pid(const char *root, int pid) {
  char path[512];
  snprintf(path, sizeof path, "%s/%d/stat", root, pid);
  unlink(path);
  snprintf(path, sizeof path, "%s/%d", root, pid);
  rmdir(path);
}

static double scan(ka_collect_t *c, seen_t *s, const char *key) {
  keel_mb_enc_t enc;
  ka_emit_t em;
  keel_mb_enc_init(&enc, 0);
  em = (ka_emit_t){.enc = &enc, .t = 1};
  assert_int_equal(ka_collect_processes(c, &em), 0);
  decode_into(&enc, s);
  keel_mb_enc_free(&enc);
  return get(s, key);
}

static void test_process_counter(void **state) {
  fx_t *f = *state;
  char root[] = "/tmp/keel-proc-XXXXXX";
  const char *names[] = {"worker"};
  const char *cpu = "keel_process_cpu_seconds_total{name=\"worker\"}";
  ka_collect_t c;
  keel_err_t e;

  assert_non_null(mkdtemp(root));
  write_stat(root, 10, "worker", 100, 50, 1000, 10);
  write_stat(root, 11, "worker", 10, 0, 1100, 20);
  write_stat(root, 12, "other", 999, 999, 1200, 30);
  assert_int_equal(ka_collect_init(&c, root, names, 1, NULL, &e), 0);
  c.clk_tck = 100;
  /* First scan: all they used so far. */
  assert_true(scan(&c, f->s, cpu) == 1.6);
  assert_true(get(f->s, "keel_process_count{name=\"worker\"}") == 2);
  /* 10 used 20 more ticks; 11 exited: the counter does not go down. */
  write_stat(root, 10, "worker", 110, 60, 1000, 10);
  remove_pid(root, 11);
  assert_true(scan(&c, f->s, cpu) == 1.8);
  assert_true(get(f->s, "keel_process_count{name=\"worker\"}") == 1);
  /* A new one counts all it used; pid 10 reused by a new process (another
   * start time) counts from zero, not as a delta. */
  write_stat(root, 13, "worker", 5, 5, 1300, 10);
  write_stat(root, 10, "worker", 3, 0, 1400, 10);
  assert_true(fabs(scan(&c, f->s, cpu) - 1.93) < 1e-9);
  /* Nothing changed: nothing added. */
  assert_true(fabs(scan(&c, f->s, cpu) - 1.93) < 1e-9);
  ka_collect_free(&c);
  remove_pid(root, 10);
  remove_pid(root, 12);
  remove_pid(root, 13);
  rmdir(root);
}

/* ---- the real /proc ---------------------------------------------------------- */

static double sum_prefix(const seen_t *s, const char *prefix) {
  double t = 0;
  for (size_t i = 0; i < s->n; i++)
    if (!strncmp(s->key[i], prefix, strlen(prefix))) t += s->v[i];
  return t;
}

static void test_smoke_real_proc(void **state) {
  fx_t *f = *state;
  ka_collect_t c;
  keel_err_t e;
  seen_t *s2 = calloc(1, sizeof *s2);
  const char *self_name = "test_agent_coll"; /* our comm: 15 bytes */
  double cpu1, cpu2;
  int64_t t0;
  struct timespec ts = {0, 150 * 1000000L};

  assert_int_equal(ka_collect_init(&c, NULL, &self_name, 1, NULL, &e), 0);
  assert_true(ka_collect(&c, &f->enc, keel_now_ms(), NULL) > 20);
  decode_into(&f->enc, f->s);
  cpu1 = sum_prefix(f->s, "node_cpu_seconds_total{");
  assert_true(count_prefix(f->s, "node_cpu_seconds_total{") >= 8);
  assert_true(cpu1 > 0);
  assert_true(get(f->s, "node_memory_MemTotal_bytes{}") > 0);
  assert_true(get(f->s, "node_memory_MemAvailable_bytes{}") > 0);
  assert_true(get(f->s, "node_memory_MemTotal_bytes{}") >=
              get(f->s, "node_memory_MemFree_bytes{}"));
  assert_true(get(f->s, "node_load1{}") >= 0);
  assert_true(get(f->s, "node_boot_time_seconds{}") > 946684800);
  assert_true(get(f->s, "node_boot_time_seconds{}") < get(f->s, "node_time_seconds{}"));
  assert_true(get(f->s, "node_context_switches_total{}") > 0);
  assert_true(get(f->s, "node_procs_running{}") >= 1);
  assert_true(get(f->s, "node_filefd_allocated{}") > 0);
  assert_true(get(f->s, "keel_process_count{name=\"test_agent_coll\"}") >= 1);
  assert_true(get(f->s, "keel_process_resident_memory_bytes{name=\"test_agent_coll\"}") > 0);
  /* File systems: each one has all five, and sane figures. */
  for (size_t i = 0; i < f->s->n; i++) {
    const char *k = f->s->key[i];
    if (strncmp(k, "node_filesystem_size_bytes{", 27)) continue;
    assert_true(f->s->v[i] > 0);
  }
  assert_int_equal(count_prefix(f->s, "node_filesystem_size_bytes{") * 5,
                   count_prefix(f->s, "node_filesystem_"));

  /* Burn a little CPU and wait: the counters move forward. */
  t0 = keel_mono_ms();
  while (keel_mono_ms() - t0 < 100) {
  }
  nanosleep(&ts, NULL);
  keel_mb_enc_reset(&f->enc);
  assert_true(ka_collect(&c, &f->enc, keel_now_ms(), NULL) > 20);
  decode_into(&f->enc, s2);
  cpu2 = sum_prefix(s2, "node_cpu_seconds_total{");
  assert_true(cpu2 > cpu1);
  assert_true(get(s2, "keel_process_cpu_seconds_total{name=\"test_agent_coll\"}") >=
              get(f->s, "keel_process_cpu_seconds_total{name=\"test_agent_coll\"}"));
  /* The files every Linux has stay open between collections. */
  assert_true(c.fd[KA_PF_STAT] >= 0 && c.fd[KA_PF_MEMINFO] >= 0 && c.fd[KA_PF_LOADAVG] >= 0);
  ka_collect_free(&c);
  seen_free(s2);
  free(s2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stat, setup, teardown),
      cmocka_unit_test_setup_teardown(test_loadavg_filenr, setup, teardown),
      cmocka_unit_test_setup_teardown(test_meminfo, setup, teardown),
      cmocka_unit_test_setup_teardown(test_diskstats, setup, teardown),
      cmocka_unit_test(test_disk_skipped),
      cmocka_unit_test_setup_teardown(test_netdev, setup, teardown),
      cmocka_unit_test(test_mounts),
      cmocka_unit_test(test_pstat),
      cmocka_unit_test_setup_teardown(test_collect_fixture_root, setup, teardown),
      cmocka_unit_test_setup_teardown(test_process_counter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_smoke_real_proc, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
