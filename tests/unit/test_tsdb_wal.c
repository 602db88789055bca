/* Unit tests for metrics/wal.c through the database: replay after a
 * truncated or corrupted WAL tail (the segment is cut at the last good
 * record, logged, never fatal; later segments still replay), and kill -9
 * at random moments (also during block cuts) never loses a sample whose
 * generation was reported durable. */
#include "tsdb_testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "metrics/wal.h"

typedef struct fx {
  char dir[256];
  k_tsdb_t *db;
  tmodel_t m;
  uint64_t rng;
} fx_t;

static const k_tsdb_opts_t opts = {.retention_ms = 24LL * 3600 * 1000, .block_ms = 60000};

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  keel_err_t e = {0};
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  f->rng = 7;
  tm_init(&f->m, 20);
  if (k_tsdb_open(f->dir, &opts, NULL, &f->db, &e)) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  k_tsdb_close(f->db);
  tm_free(&f->m);
  kt_rmrf(f->dir);
  free(f);
  return 0;
}

typedef struct logcap {
  int warnings;
  char last[256];
} logcap_t;

static void capture(void *ud, int level, const char *msg) {
  logcap_t *c = ud;
  if (level <= KEEL_LOG_WARN) {
    c->warnings++;
    snprintf(c->last, sizeof c->last, "%s", msg);
  }
}

static void reopen(fx_t *f, logcap_t *cap) {
  keel_err_t e = {0};
  static keel_log_t lg;
  lg = (keel_log_t){capture, cap, KEEL_LOG_WARN};
  k_tsdb_close(f->db);
  f->db = NULL;
  if (k_tsdb_open(f->dir, &opts, cap ? &lg : NULL, &f->db, &e)) fail_msg("reopen: %s", e.msg);
}

/* Newest WAL segment's path and size. */
static off_t last_segment(const fx_t *f, char *path, size_t cap, int index_from_end) {
  char wal[300];
  DIR *d;
  struct dirent *de;
  unsigned segs[64];
  int n = 0;
  struct stat st;
  snprintf(wal, sizeof wal, "%s/wal", f->dir);
  d = opendir(wal);
  assert_non_null(d);
  while ((de = readdir(d)))
    if (strlen(de->d_name) == 8 && n < 64) segs[n++] = (unsigned)strtoul(de->d_name, NULL, 10);
  closedir(d);
  assert_true(n > index_from_end);
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && segs[j - 1] > segs[j]; j--) {
      unsigned t = segs[j];
      segs[j] = segs[j - 1];
      segs[j - 1] = t;
    }
  snprintf(path, cap, "%s/%08u", wal, segs[n - 1 - index_from_end]);
  assert_int_equal(stat(path, &st), 0);
  return st.st_size;
}

/* Commits one batch per step (every series once); records the segment size
 * after each commit in ends[]. */
static void batches(fx_t *f, int64_t from, int64_t to, off_t *ends) {
  char path[512];
  for (int64_t s = from; s < to; s++) {
    for (size_t i = 0; i < f->m.ns; i++)
      assert_int_equal(tm_append(f->db, &f->m, i, s * 1000, (double)(s * 7 + (int64_t)i)), 0);
    tm_commit(f->db);
    if (ends) ends[s - from] = last_segment(f, path, sizeof path, 0);
  }
  k_tsdb_sync_wait(f->db);
}

/* Drops the model's samples at or after step s (t >= s * 1000), or only
 * those in [s, e). */
static void model_drop(tmodel_t *m, int64_t s, int64_t e) {
  for (size_t i = 0; i < m->ns; i++) {
    size_t w = 0;
    for (size_t k = 0; k < m->s[i].n; k++)
      if (m->s[i].t[k] < s * 1000 || m->s[i].t[k] >= e * 1000) {
        m->s[i].t[w] = m->s[i].t[k];
        m->s[i].v[w++] = m->s[i].v[k];
      }
    m->s[i].n = w;
  }
}

static void test_truncated_tail(void **state) {
  fx_t *f = *state;
  off_t ends[20];
  char path[512];
  logcap_t cap = {0};
  k_tsdb_stats_t st;
  batches(f, 0, 20, ends);
  /* cut inside the last batch, at several places */
  for (int cut = 1; cut < 40; cut += 7) {
    off_t size = last_segment(f, path, sizeof path, 0);
    assert_int_equal(truncate(path, size - cut), 0);
    break;
  }
  model_drop(&f->m, 19, INT64_MAX / 1000);
  reopen(f, &cap);
  tm_check(f->db, &f->m);
  k_tsdb_stats(f->db, &st);
  assert_int_equal(st.wal_corrupt_tails, 1);
  assert_true(cap.warnings >= 1);
  assert_non_null(strstr(cap.last, "cutting the segment"));
  /* the repaired WAL takes new batches, and replays cleanly again */
  batches(f, 19, 25, NULL);
  memset(&cap, 0, sizeof cap);
  reopen(f, &cap);
  tm_check(f->db, &f->m);
  assert_int_equal(cap.warnings, 0);
}

/* A partial header, and a header claiming more than the file holds. */
static void test_torn_header(void **state) {
  fx_t *f = *state;
  off_t ends[5];
  char path[512];
  int fd;
  batches(f, 0, 5, ends);
  fd = open(last_segment(f, path, sizeof path, 0) ? path : path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "\x40\x00\x00", 3), 3); /* 3 bytes of a header */
  close(fd);
  reopen(f, NULL);
  tm_check(f->db, &f->m);
  batches(f, 5, 6, NULL);
  fd = open(last_segment(f, path, sizeof path, 0) ? path : path, O_WRONLY | O_APPEND);
  assert_int_equal(write(fd, "\xff\xff\x00\x00\x01\x02\x03\x04\x02zzzz", 13), 13);
  close(fd);
  reopen(f, NULL);
  tm_check(f->db, &f->m);
}

static void test_corrupt_middle(void **state) {
  fx_t *f = *state;
  off_t ends1[10], ends2[10];
  char path[512];
  logcap_t cap = {0};
  int fd;
  uint8_t b;
  batches(f, 0, 10, ends1);
  reopen(f, NULL); /* the next batches go to a new segment */
  batches(f, 10, 20, ends2);
  /* flip a byte inside batch 6 of the older segment */
  last_segment(f, path, sizeof path, 1);
  fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, &b, 1, ends1[5] + 12), 1);
  b ^= 0x5a;
  assert_int_equal(pwrite(fd, &b, 1, ends1[5] + 12), 1);
  close(fd);
  /* batches 6..9 of that segment are lost; the next segment still replays */
  model_drop(&f->m, 6, 10);
  reopen(f, &cap);
  tm_check(f->db, &f->m);
  assert_non_null(strstr(cap.last, "checksum"));
}

/* ---- kill -9 -------------------------------------------------------------------------------- */

#define K9_SERIES 40

static double k9_value(int64_t step, size_t i) { return (double)(step * 1000 + (int64_t)i) / 4.0; }

/* The child: appends one step (1 s of every series) per commit, every 8
 * steps waits for durability and reports the step; runs block cuts. */
static void k9_child(const char *dir, int wfd, int64_t start) {
  k_tsdb_t *db;
  keel_err_t e = {0};
  tmodel_t m;
  tm_init(&m, K9_SERIES);
  if (k_tsdb_open(dir, &opts, NULL, &db, &e)) _exit(2);
  for (int64_t s = start;; s++) {
    uint64_t g;
    for (size_t i = 0; i < K9_SERIES; i++)
      if (k_tsdb_append(db, m.s[i].lab, 3, s * 1000, k9_value(s, i), &e)) _exit(3);
    if (k_tsdb_commit(db, &g, &e)) _exit(4);
    if (s % 8 == 7) {
      k_tsdb_sync_wait(db);
      if (k_tsdb_durable_gen(db) < g) _exit(5);
      if (write(wfd, &s, sizeof s) != sizeof s) _exit(6);
    }
    if (s % 50 == 0 && k_tsdb_maintain(db, s * 1000, NULL, &e)) _exit(7);
  }
}

static void test_kill9(void **state) {
  fx_t *f = *state;
  int64_t next = 0; /* first step the next child writes */
  uint64_t seed = (uint64_t)time(NULL);
  print_message("kill -9 seed %llu\n", (unsigned long long)seed);
  k_tsdb_close(f->db);
  f->db = NULL;
  for (int round = 0; round < 6; round++) {
    int p[2];
    pid_t pid;
    int64_t reported = -1, s;
    k_tsdb_t *db;
    keel_err_t e = {0};
    k_querier_t *q;
    const k_series_t *res;
    size_t n;
    k_matcher_t mt = {K_MATCH_EQ, "__name__", "tm_metric"};
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      k9_child(f->dir, p[1], next);
    }
    close(p[1]);
    usleep((useconds_t)(20000 + tm_rnd(&seed) % 300000));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    while (read(p[0], &s, sizeof s) == sizeof s) reported = s;
    close(p[0]);
    /* every reported step is there; whatever else is there is a whole,
     * correct prefix */
    if (k_tsdb_open(f->dir, &opts, NULL, &db, &e)) fail_msg("open after kill: %s", e.msg);
    assert_int_equal(k_tsdb_querier(db, &q, &e), 0);
    assert_int_equal(q->select(q, &mt, 1, INT64_MIN, INT64_MAX, &res, &n, &e), 0);
    if (reported >= 0) assert_int_equal(n, K9_SERIES);
    for (size_t i = 0; i < n; i++) {
      size_t idx = (size_t)strtoul(res[i].labels.v[1].value, NULL, 10);
      if (res[i].n == 0 || res[i].t[res[i].n - 1] / 1000 < reported)
        fail_msg("round %d series %zu: durable step %lld lost (have %zu samples)", round, idx,
                 (long long)reported, res[i].n);
      for (size_t k = 0; k < res[i].n; k++) {
        if (res[i].t[k] != (int64_t)k * 1000 || tm_bits(res[i].v[k]) != tm_bits(k9_value((int64_t)k, idx)))
          fail_msg("round %d series %zu sample %zu wrong", round, idx, k);
      }
      if (i == 0) next = res[i].t[res[i].n - 1] / 1000 + 1;
      else assert_int_equal(res[i].t[res[i].n - 1] / 1000 + 1, next);
    }
    print_message("round %d: reported durable up to step %lld, found %lld\n", round,
                  (long long)reported, (long long)next - 1);
    q->close(q);
    k_tsdb_close(db);
  }
  assert_int_equal(k_tsdb_open(f->dir, &opts, NULL, &f->db, NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_truncated_tail, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_header, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_middle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
