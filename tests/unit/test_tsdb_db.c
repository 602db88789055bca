/* Unit tests for metrics/tsdb.c: what a querier returns over the head and
 * blocks equals what was appended (before and after block cuts,
 * compaction and reopening); out-of-order and too-old samples are refused
 * and counted; generations; crash safety of block cutting (a simulated
 * death between each step); retention; maintenance on a worker while
 * appends and queries go on; label names and values. */
#include "tsdb_testutil.h"

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "metrics/labels.h"
#include "work.h"

#define MIN_MS 60000 /* the smallest block range the database takes */

typedef struct fx {
  char dir[256];
  k_tsdb_t *db;
  tmodel_t m;
  uint64_t rng;
} fx_t;

static k_tsdb_opts_t small_opts(void) {
  k_tsdb_opts_t o = {.retention_ms = 24LL * 3600 * 1000, .block_ms = MIN_MS};
  return o;
}

static void db_open(fx_t *f, const k_tsdb_opts_t *o) {
  keel_err_t e = {0};
  if (k_tsdb_open(f->dir, o, NULL, &f->db, &e)) fail_msg("open: %s", e.msg);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  k_tsdb_opts_t o = small_opts();
  keel_err_t e = {0};
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  f->rng = 0x2545f4914f6cdd1dULL;
  tm_init(&f->m, 60);
  if (k_tsdb_open(f->dir, &o, NULL, &f->db, &e)) {
    print_error("open: %s\n", e.msg);
    return -1;
  }
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

static void reopen(fx_t *f, const k_tsdb_opts_t *o) {
  k_tsdb_close(f->db);
  f->db = NULL;
  db_open(f, o);
}

static double value_for(uint64_t *rng, size_t i, size_t k) {
  static const uint64_t odd[] = {K_STALE_NAN_BITS, 0x7ff8000000000123ULL, 0xfff0000000000000ULL,
                                 0x8000000000000000ULL};
  uint64_t r = tm_rnd(rng);
  double d;
  if (r % 37 == 0) {
    memcpy(&d, &odd[r % 4], sizeof d);
    return d;
  }
  switch (i % 4) {
  case 0: return (double)(k * 100 + r % 7) / 100.0; /* counter-ish decimal */
  case 1: return 42;
  case 2: return (double)(r % 1000) * 4096;
  default: memcpy(&d, &r, sizeof d); return d; /* any bits */
  }
}

/* Appends [from, to) seconds of every series at 1 s steps with jitter; one
 * commit per step. */
static void feed(fx_t *f, int64_t from_s, int64_t to_s) {
  for (int64_t s = from_s; s < to_s; s++) {
    for (size_t i = 0; i < f->m.ns; i++) {
      int64_t t = s * 1000 + (int64_t)(tm_rnd(&f->rng) % 5);
      assert_int_equal(tm_append(f->db, &f->m, i, t, value_for(&f->rng, i, (size_t)s)), 0);
    }
    tm_commit(f->db);
  }
}

static int count_dirs(const char *dir, const char *suffix) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int n = 0;
  if (!d) return -1;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name), sl = strlen(suffix);
    if (de->d_name[0] == '.') continue;
    if (!sl || (l > sl && !strcmp(de->d_name + l - sl, suffix))) n++;
  }
  closedir(d);
  return n;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_head_roundtrip(void **state) {
  fx_t *f = *state;
  k_tsdb_stats_t st;
  feed(f, 1000, 1100);
  tm_check(f->db, &f->m);
  tm_check_range(f->db, &f->m, 1050 * 1000, 1060 * 1000 + 2);
  tm_check_range(f->db, &f->m, 0, 10);
  k_tsdb_stats(f->db, &st);
  assert_int_equal(st.series, f->m.ns);
  assert_int_equal(st.samples_appended, 100 * f->m.ns);
  assert_true(st.wal_bytes > 0);
  assert_true(st.head_bytes > 0);
}

static void test_out_of_order(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  uint64_t ref;
  feed(f, 5000, 5010);
  /* same and older timestamps of a series are refused one by one */
  assert_int_equal(tm_append(f->db, &f->m, 0, f->m.s[0].t[f->m.s[0].n - 1], 1), KEEL_ECONFLICT);
  assert_int_equal(tm_append(f->db, &f->m, 0, 4000000, 1), KEEL_ECONFLICT);
  /* inside one batch too */
  assert_int_equal(tm_append(f->db, &f->m, 1, 5020000, 1), 0);
  assert_int_equal(tm_append(f->db, &f->m, 1, 5019999, 2), KEEL_ECONFLICT);
  assert_int_equal(tm_append(f->db, &f->m, 2, 5020000, 3), 0); /* other series unaffected */
  tm_commit(f->db);
  /* too old for the head: more than half a block behind its newest sample
   * (a new series, so it is not out of order first) */
  {
    k_label_t fresh[1] = {{"__name__", "fresh"}};
    assert_int_equal(k_tsdb_append(f->db, fresh, 1, 5020000 - MIN_MS, 1, &e), KEEL_ECONFLICT);
    assert_int_equal(k_tsdb_append(f->db, fresh, 1, 5020000 - MIN_MS / 4, 1, &e), 0);
  }
  /* too far ahead of the wall clock (10 minutes by default) */
  {
    k_label_t ahead[1] = {{"__name__", "ahead"}};
    int64_t now = (int64_t)time(NULL) * 1000;
    assert_int_equal(k_tsdb_append(f->db, ahead, 1, now + 3600 * 1000, 1, &e), KEEL_ECONFLICT);
    assert_non_null(strstr(e.msg, "future"));
    assert_int_equal(k_tsdb_append(f->db, ahead, 1, now + 60 * 1000, 1, &e), 0);
    k_tsdb_rollback(f->db);
  }
  k_tsdb_stats(f->db, &st);
  assert_int_equal(st.out_of_order, 3);
  assert_int_equal(st.out_of_bounds, 2);
  tm_check(f->db, &f->m);
  /* bad labels */
  {
    k_label_t unsorted[2] = {{"job", "a"}, {"__name__", "x"}};
    k_label_t noname[1] = {{"job", "a"}};
    k_label_t empty[2] = {{"__name__", "x"}, {"job", ""}};
    k_label_t badname[1] = {{"__name__", "1x"}};
    assert_int_equal(k_tsdb_append(f->db, unsorted, 2, 1, 1, &e), KEEL_EINVAL);
    assert_int_equal(k_tsdb_append(f->db, noname, 1, 1, 1, &e), KEEL_EINVAL);
    assert_int_equal(k_tsdb_append(f->db, empty, 2, 1, 1, &e), KEEL_EINVAL);
    assert_int_equal(k_tsdb_append(f->db, badname, 1, 1, 1, &e), KEEL_EINVAL);
  }
  /* refs */
  assert_int_equal(k_tsdb_ref(f->db, f->m.s[4].lab, 3, &ref, &e), 0);
  assert_int_equal(k_tsdb_append_ref(f->db, ref, 5030000, 7, &e), 0);
  tm_add(&f->m, 4, 5030000, 7);
  assert_int_equal(k_tsdb_append_ref(f->db, 999999, 5030000, 7, &e), KEEL_ENOENT);
  tm_commit(f->db);
  tm_check(f->db, &f->m);
}

static void test_generations(void **state) {
  fx_t *f = *state;
  uint64_t g1, g2;
  assert_int_equal(k_tsdb_visible_gen(f->db), 0);
  tm_append(f->db, &f->m, 0, 1000, 1);
  g1 = k_tsdb_visible_gen(f->db);
  assert_true(g1 > 0);
  assert_int_equal(tm_commit(f->db), g1);
  assert_int_equal(tm_commit(f->db), g1); /* empty batch: same generation */
  tm_append(f->db, &f->m, 0, 2000, 1);
  g2 = tm_commit(f->db);
  assert_true(g2 > g1);
  k_tsdb_sync_wait(f->db);
  assert_true(k_tsdb_durable_gen(f->db) >= g2);
  /* rollback forgets the staged samples and their times */
  tm_append(f->db, &f->m, 0, 3000, 1);
  f->m.s[0].n--;
  k_tsdb_rollback(f->db);
  assert_int_equal(tm_append(f->db, &f->m, 0, 2500, 5), 0);
  tm_commit(f->db);
  tm_check(f->db, &f->m);
}

static void test_reopen(void **state) {
  fx_t *f = *state;
  k_tsdb_opts_t o = small_opts();
  feed(f, 100, 130);
  reopen(f, &o);
  tm_check(f->db, &f->m);
  feed(f, 130, 140); /* appending after a replay */
  reopen(f, &o);
  tm_check(f->db, &f->m);
}

/* Head -> blocks -> compacted blocks -> reopen, same answers throughout. */
static void test_cut_compact(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  k_tsdb_opts_t o = small_opts();
  char blocks[300];
  feed(f, 0, 12 * 60); /* 12 block ranges of 60 s */
  if (k_tsdb_maintain(f->db, 12 * 60 * 1000, NULL, &e)) fail_msg("maintain: %s", e.msg);
  k_tsdb_stats(f->db, &st);
  assert_true(st.cuts >= 10);
  assert_true(st.compactions >= 1);
  assert_int_equal(st.maintain_failures, 0);
  assert_true(st.blocks >= 2 && st.blocks < st.cuts);
  print_message("cuts %llu compactions %llu blocks %llu, %.2f bytes/sample in blocks\n",
                (unsigned long long)st.cuts, (unsigned long long)st.compactions,
                (unsigned long long)st.blocks, (double)st.block_bytes / (double)st.block_samples);
  tm_check(f->db, &f->m);
  tm_check_range(f->db, &f->m, 179000, 301000); /* across block edges */
  tm_check_range(f->db, &f->m, 11 * 60 * 1000, 12 * 60 * 1000);
  snprintf(blocks, sizeof blocks, "%s/blocks", f->dir);
  assert_int_equal(count_dirs(blocks, ".tmp"), 0);
  /* the head let go of the cut chunks */
  assert_true(st.head_mint >= 10 * 60 * 1000);
  reopen(f, &o);
  tm_check(f->db, &f->m);
  feed(f, 12 * 60, 13 * 60);
  tm_check(f->db, &f->m);
  /* label queries span blocks and head */
  {
    k_querier_t *q;
    const char *const *v;
    size_t n;
    k_matcher_t mt = {K_MATCH_RE, "job", "j0|j1"};
    assert_int_equal(k_tsdb_querier(f->db, &q, &e), 0);
    assert_int_equal(q->label_names(q, NULL, 0, INT64_MIN, INT64_MAX, &v, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0], "__name__");
    assert_string_equal(v[1], "i");
    assert_string_equal(v[2], "job");
    assert_int_equal(q->label_values(q, "job", NULL, 0, INT64_MIN, INT64_MAX, &v, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(q->label_values(q, "job", &mt, 1, 0, 1000, &v, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[1], "j1");
    assert_int_equal(q->label_values(q, "i", &mt, 1, INT64_MIN, INT64_MAX, &v, &n, &e), 0);
    assert_int_equal(n, 40);
    q->close(q);
  }
}

static void test_retention(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  k_tsdb_opts_t o = {.retention_ms = 5 * MIN_MS, .block_ms = MIN_MS};
  reopen(f, &o);
  feed(f, 0, 10 * 60);
  assert_int_equal(k_tsdb_maintain(f->db, 10 * 60 * 1000, NULL, &e), 0);
  k_tsdb_stats(f->db, &st);
  assert_true(st.blocks_expired > 0);
  /* blocks ending at or before now - retention are gone; later data stays */
  {
    tmodel_t *m = &f->m;
    for (size_t i = 0; i < m->ns; i++) {
      size_t k = 0;
      while (k < m->s[i].n && m->s[i].t[k] < 5 * 60 * 1000) k++;
      memmove(m->s[i].t, m->s[i].t + k, (m->s[i].n - k) * sizeof *m->s[i].t);
      memmove(m->s[i].v, m->s[i].v + k, (m->s[i].n - k) * sizeof *m->s[i].v);
      m->s[i].n -= k;
    }
  }
  tm_check(f->db, &f->m);
  reopen(f, &o);
  tm_check(f->db, &f->m);
}

/* A process death between each step of a cut, then reopen: nothing lost,
 * nothing doubled, no leftovers. */
static void test_cut_crash(void **state) {
  fx_t *f = *state;
  k_tsdb_opts_t o = small_opts();
  for (int step = 1; step <= 5; step++) {
    keel_err_t e = {0};
    k_tsdb_stats_t st;
    char blocks[300];
    int64_t base = (int64_t)step * 1000;
    feed(f, base, base + 3 * 60);
    k_tsdb_set_crash_point(f->db, step);
    assert_int_equal(k_tsdb_maintain(f->db, (base + 200) * 1000, NULL, &e), 0);
    reopen(f, &o);
    snprintf(blocks, sizeof blocks, "%s/blocks", f->dir);
    assert_int_equal(count_dirs(blocks, ".tmp"), 0);
    tm_check(f->db, &f->m);
    if (k_tsdb_maintain(f->db, (base + 200) * 1000, NULL, &e)) fail_msg("maintain: %s", e.msg);
    k_tsdb_stats(f->db, &st);
    assert_int_equal(st.maintain_failures, 0);
    tm_check(f->db, &f->m);
    reopen(f, &o);
    tm_check(f->db, &f->m);
  }
}

/* A death after a compaction renamed its block into place but before its
 * sources went: the next open keeps the bigger block only. */
static void test_compact_crash(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  k_tsdb_opts_t o = small_opts();
  feed(f, 0, 4 * 60);
  k_tsdb_set_crash_point(f->db, 6);
  assert_int_equal(k_tsdb_maintain(f->db, 240000, NULL, &e), 0);
  k_tsdb_stats(f->db, &st);
  assert_int_equal(st.compactions, 0);
  reopen(f, &o);
  k_tsdb_stats(f->db, &st);
  assert_int_equal(st.blocks, 1); /* [0, 3 min); its three sources removed */
  tm_check(f->db, &f->m);
  assert_int_equal(k_tsdb_maintain(f->db, 240000, NULL, &e), 0);
  tm_check(f->db, &f->m);
}

/* Maintenance on a worker while the loop keeps appending and querying. */
static void test_worker(void **state) {
  fx_t *f = *state;
  k_work_t *w = k_work_new(2);
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  int jobs = 0;
  assert_non_null(w);
  for (int64_t s = 0; s < 8 * 60; s++) {
    feed(f, s, s + 1);
    if (k_tsdb_maintain_busy(f->db)) jobs++;
    if (k_tsdb_maintain(f->db, s * 1000, w, &e)) fail_msg("maintain: %s", e.msg);
    if (s % 40 == 0) tm_check(f->db, &f->m);
    k_work_poll(w);
  }
  /* A loaded machine's worker may still be behind the feed (a maintain
   * call while a job runs starts nothing): catch up, one job at a time,
   * until a call finds nothing more to do.  What is asserted is that every
   * closed range got cut, not how fast. */
  for (int round = 0; round < 64; round++) {
    uint64_t before;
    while (k_tsdb_maintain_busy(f->db)) {
      usleep(1000);
      k_work_poll(w);
    }
    k_tsdb_stats(f->db, &st);
    before = st.cuts + st.compactions;
    if (k_tsdb_maintain(f->db, 8 * 60 * 1000, w, &e)) fail_msg("maintain: %s", e.msg);
    while (k_tsdb_maintain_busy(f->db)) {
      usleep(1000);
      k_work_poll(w);
    }
    k_tsdb_stats(f->db, &st);
    if (st.cuts + st.compactions == before) break;
  }
  k_tsdb_stats(f->db, &st);
  print_message("jobs seen running: %d, cuts %llu, compactions %llu\n", jobs,
                (unsigned long long)st.cuts, (unsigned long long)st.compactions);
  assert_true(st.cuts >= 5);
  tm_check(f->db, &f->m);
  /* close with a job in flight: it finishes or is cancelled cleanly */
  feed(f, 8 * 60, 10 * 60);
  assert_int_equal(k_tsdb_maintain(f->db, 600 * 1000, w, &e), 0);
  {
    k_tsdb_opts_t o = small_opts();
    reopen(f, &o);
  }
  k_work_free(w);
  tm_check(f->db, &f->m);
}

/* Series that go quiet are cut with their range and then leave the head. */
static void test_quiet_series(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_tsdb_stats_t st;
  uint64_t ref;
  for (int64_t s = 0; s < 5 * 60; s++) {
    for (size_t i = 0; i < f->m.ns; i++) {
      if (i % 2 && s >= 30) continue; /* odd series stop after 30 s */
      tm_append(f->db, &f->m, i, s * 1000, (double)s);
    }
    tm_commit(f->db);
  }
  assert_int_equal(k_tsdb_ref(f->db, f->m.s[1].lab, 3, &ref, &e), 0);
  assert_int_equal(k_tsdb_maintain(f->db, 300000, NULL, &e), 0);
  k_tsdb_stats(f->db, &st);
  assert_int_equal(st.series, f->m.ns / 2);
  assert_int_equal(k_tsdb_append_ref(f->db, ref, 299000, 1, &e), KEEL_ENOENT);
  tm_check(f->db, &f->m);
  /* a quiet series coming back gets a new ref and continues */
  assert_int_equal(tm_append(f->db, &f->m, 1, 300500, 9), 0);
  tm_commit(f->db);
  tm_check(f->db, &f->m);
}

/* A series that went quiet is in a WAL checkpoint under its old id, leaves
 * the head, and comes back under a new id: replay joins both. */
static void test_quiet_series_return(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_tsdb_opts_t o = small_opts();
  char ck[512];
  DIR *d;
  struct dirent *de;
  int checkpoints = 0;
  for (int64_t s = 0; s < 300; s++) {
    for (size_t i = 0; i < f->m.ns; i++) {
      if (i % 2 && s >= 100 && s < 200) continue; /* odd series quiet for a while */
      assert_int_equal(tm_append(f->db, &f->m, i, s * 1000, (double)s), 0);
    }
    tm_commit(f->db);
    if (s == 99 || s == 199)
      assert_int_equal(k_tsdb_maintain(f->db, s * 1000, NULL, &e), 0);
  }
  snprintf(ck, sizeof ck, "%s/wal", f->dir);
  d = opendir(ck);
  while ((de = readdir(d))) checkpoints += !strncmp(de->d_name, "checkpoint.", 11);
  closedir(d);
  assert_int_equal(checkpoints, 1);
  reopen(f, &o);
  tm_check(f->db, &f->m);
  assert_int_equal(k_tsdb_maintain(f->db, 300000, NULL, &e), 0);
  reopen(f, &o);
  tm_check(f->db, &f->m);
}

/* k_tsdb_refs agrees with k_tsdb_ref, creates what is new, and names the
 * label set at fault. */
static void test_refs_batch(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_labels_t sets[64];
  uint64_t refs[64], one;
  size_t bad = 99;
  k_label_t fresh[2] = {{"__name__", "new_metric"}, {"x", "1"}};
  k_label_t broken[1] = {{"x", "1"}};
  feed(f, 0, 2); /* every model series exists */
  for (size_t i = 0; i < 60; i++) sets[i] = (k_labels_t){f->m.s[i].lab, 3};
  sets[60] = (k_labels_t){fresh, 2};
  sets[61] = (k_labels_t){f->m.s[3].lab, 3}; /* twice in one batch */
  assert_int_equal(k_tsdb_refs(f->db, sets, 62, refs, &bad, &e), 0);
  for (size_t i = 0; i < 62; i++) {
    assert_int_equal(k_tsdb_ref(f->db, sets[i].v, sets[i].n, &one, &e), 0);
    assert_int_equal(refs[i], one);
  }
  assert_int_equal(refs[61], refs[3]);
  sets[10] = (k_labels_t){broken, 1};
  assert_int_equal(k_tsdb_refs(f->db, sets, 62, refs, &bad, &e), KEEL_EINVAL);
  assert_int_equal(bad, 10);
  assert_int_equal(k_tsdb_append_ref(f->db, refs[5], 999999, 1, &e), 0);
  tm_add(&f->m, 5, 999999, 1);
  tm_commit(f->db);
  tm_check(f->db, &f->m);
}

/* One querier used across a cut and a compaction: each call still sees
 * every sample once, and earlier answers stay readable. */
static void test_querier_across_cut(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_querier_t *q;
  const k_series_t *first;
  size_t nfirst;
  k_matcher_t mt = {K_MATCH_EQ, "i", "00001"};
  feed(f, 0, 5 * 60);
  assert_int_equal(k_tsdb_querier(f->db, &q, &e), 0);
  assert_int_equal(q->select(q, &mt, 1, INT64_MIN, INT64_MAX, &first, &nfirst, &e), 0);
  assert_int_equal(nfirst, 1);
  tm_check_q(q, &f->m, INT64_MIN, INT64_MAX);
  assert_int_equal(k_tsdb_maintain(f->db, 300000, NULL, &e), 0);
  tm_check_q(q, &f->m, INT64_MIN, INT64_MAX);
  feed(f, 5 * 60, 12 * 60);
  assert_int_equal(k_tsdb_maintain(f->db, 720000, NULL, &e), 0);
  tm_check_q(q, &f->m, INT64_MIN, INT64_MAX);
  /* the first answer is intact */
  assert_string_equal(first[0].labels.v[1].value, "00001");
  assert_int_equal(first[0].n, 5 * 60);
  assert_int_equal(first[0].t[0], f->m.s[1].t[0]);
  q->close(q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_head_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_generations, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cut_compact, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cut_crash, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compact_crash, setup, teardown),
      cmocka_unit_test_setup_teardown(test_worker, setup, teardown),
      cmocka_unit_test_setup_teardown(test_quiet_series, setup, teardown),
      cmocka_unit_test_setup_teardown(test_querier_across_cut, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refs_batch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_quiet_series_return, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
