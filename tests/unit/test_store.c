/* Unit tests for keeld's store (store/store.h, SQLite backend): open and
 * migrations, units as savepoints inside a batch, flush and the
 * visible/durable generations, parameter binding, reopen, early stop. */
#include "keeld_testutil.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store/migrations.h"
#include "store/store.h"

typedef struct fx {
  char dir[256];
  k_store_t *s;
} fx_t;

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  keel_err_t e = {0};
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  if (k_store_open(f->dir, 1, NULL, &f->s, &e)) {
    print_error("open: %s\n", e.msg);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  k_store_close(f->s);
  kt_rmrf(f->dir);
  free(f);
  return 0;
}

/* Runs sql, which must succeed. */
static void exec_ok(k_store_t *s, const char *sql, const k_val_t *args, int nargs) {
  keel_err_t e = {0};
  int rc = k_store_exec(s, sql, args, nargs, NULL, NULL, &e);
  if (rc) fail_msg("%s: %d %s", sql, rc, e.msg);
}

static void unit_begin(k_store_t *s) {
  keel_err_t e = {0};
  int rc = k_store_unit_begin(s, &e);
  if (rc) fail_msg("unit_begin: %s", e.msg);
}

static void unit_end(k_store_t *s, int ok) {
  keel_err_t e = {0};
  int rc = k_store_unit_end(s, ok, &e);
  if (rc) fail_msg("unit_end: %s", e.msg);
}

static void flush(k_store_t *s) {
  keel_err_t e = {0};
  int rc = k_store_flush(s, &e);
  if (rc) fail_msg("flush: %s", e.msg);
}

static int int_cb(void *ud, const k_val_t *c, int n) {
  assert_true(n >= 1);
  assert_int_equal(c[0].type, K_VAL_INT);
  *(int64_t *)ud = c[0].i;
  return 0;
}

static int64_t query_int(k_store_t *s, const char *sql, const k_val_t *args, int nargs) {
  keel_err_t e = {0};
  int64_t v = -12345;
  int rc = k_store_exec(s, sql, args, nargs, int_cb, &v, &e);
  if (rc) fail_msg("%s: %s", sql, e.msg);
  return v;
}

/* Creates the scratch table t(k, i, s) and commits it. */
static void make_t(k_store_t *s) {
  unit_begin(s);
  exec_ok(s, "CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, s TEXT)", NULL, 0);
  unit_end(s, 1);
  flush(s);
}

static void put(k_store_t *s, int64_t k, const char *str) {
  k_val_t a[] = {K_INT(k), K_INT(k * 10), K_TEXT(str)};
  exec_ok(s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3);
}

static int64_t count_t(k_store_t *s) { return query_int(s, "SELECT COUNT(*) FROM t", NULL, 0); }

static int64_t has_k(k_store_t *s, int64_t k) {
  k_val_t a[] = {K_INT(k)};
  return query_int(s, "SELECT COUNT(*) FROM t WHERE k = ?", a, 1);
}

/* ---- open and migrations ------------------------------------------------ */

static void test_open_missing_without_create(void **state) {
  char dir[256];
  k_store_t *s = (k_store_t *)1;
  keel_err_t e = {0};
  (void)state;
  assert_int_equal(kt_mkdtemp(dir, sizeof dir), 0);
  assert_int_equal(k_store_open(dir, 0, NULL, &s, &e), KEEL_ENOENT);
  assert_null(s);
  assert_non_null(strstr(e.msg, "keeld init"));
  kt_rmrf(dir);
}

typedef struct mig {
  int rows;
  int64_t version;
  char name[64];
  int64_t applied;
} mig_t;

static int mig_cb(void *ud, const k_val_t *c, int n) {
  mig_t *m = ud;
  assert_int_equal(n, 3);
  assert_int_equal(c[0].type, K_VAL_INT);
  assert_int_equal(c[1].type, K_VAL_TEXT);
  assert_int_equal(c[2].type, K_VAL_INT);
  m->rows++;
  m->version = c[0].i;
  snprintf(m->name, sizeof m->name, "%s", c[1].s);
  m->applied = c[2].i;
  return 0;
}

static void check_migrations(k_store_t *s) {
  mig_t m = {0};
  keel_err_t e = {0};
  assert_int_equal(k_store_exec(s,
                                "SELECT version, name, applied_ms FROM schema_migrations"
                                " ORDER BY version",
                                NULL, 0, mig_cb, &m, &e),
                   0);
  /* every embedded migration, in order; the last one is the newest
   * (numbered from 1 without gaps) */
  assert_int_equal(m.rows, k_sqlite_migrations_count);
  assert_int_equal(m.version, k_sqlite_migrations_count);
  assert_string_equal(m.name, k_sqlite_migrations[k_sqlite_migrations_count - 1].name);
  assert_true(m.applied > 1600000000000LL); /* a wall-clock ms time */
}

static void test_migrations_applied(void **state) {
  fx_t *f = *state;
  static const char *tables[] = {"users", "tokens", "audit_log", "audit_checkpoints", "meta"};
  check_migrations(f->s);
  for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
    k_val_t a[] = {K_TEXT(tables[i])};
    assert_int_equal(query_int(f->s,
                               "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
                               " AND name = ?",
                               a, 1),
                     1);
  }
  /* SQLite: the database is dir/keel.db. */
  {
    char path[400];
    snprintf(path, sizeof path, "%s/keel.db", f->dir);
    assert_int_equal(access(path, F_OK), 0);
  }
}

/* ---- units ---------------------------------------------------------------- */

static void test_write_outside_unit_rejected(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_val_t a[] = {K_INT(1), K_INT(2), K_TEXT("x")};
  make_t(f->s);
  assert_int_equal(
      k_store_exec(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3, NULL, NULL, &e),
      KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "outside a unit"));
  assert_int_equal(count_t(f->s), 0);
  /* Reads outside a unit are fine. */
  assert_int_equal(query_int(f->s, "SELECT 41 + 1", NULL, 0), 42);
  /* Also after a unit has ended inside a still-open batch. */
  unit_begin(f->s);
  put(f->s, 1, "a");
  unit_end(f->s, 1);
  memset(&e, 0, sizeof e);
  a[0] = K_INT(2);
  assert_int_equal(
      k_store_exec(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3, NULL, NULL, &e),
      KEEL_EINVAL);
  flush(f->s);
  assert_int_equal(count_t(f->s), 1);
}

static void test_unit_misuse(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  assert_int_equal(k_store_unit_end(f->s, 1, &e), KEEL_EINVAL);
  unit_begin(f->s);
  assert_int_equal(k_store_unit_begin(f->s, &e), KEEL_EINVAL); /* units do not nest */
  assert_int_equal(k_store_flush(f->s, &e), KEEL_EINVAL);      /* not inside a unit */
  unit_end(f->s, 1);
  flush(f->s);
  /* flush with no batch is a no-op */
  assert_int_equal(k_store_flush(f->s, &e), 0);
}

static void test_failed_unit_rolls_back_only_itself(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_val_t dup[] = {K_INT(1), K_INT(0), K_TEXT("dup")};
  make_t(f->s);

  unit_begin(f->s); /* kept */
  put(f->s, 1, "one");
  unit_end(f->s, 1);

  unit_begin(f->s); /* undone by the caller */
  put(f->s, 2, "two");
  put(f->s, 3, "three");
  unit_end(f->s, 0);

  unit_begin(f->s); /* a statement fails: the unit is undone, whole */
  put(f->s, 4, "four");
  assert_int_equal(
      k_store_exec(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", dup, 3, NULL, NULL, &e),
      KEEL_EEXIST);
  unit_end(f->s, 0);

  unit_begin(f->s); /* kept, after the failures */
  put(f->s, 5, "five");
  unit_end(f->s, 1);

  /* inside the batch, before the commit, the batch sees its own units */
  assert_int_equal(count_t(f->s), 2);
  flush(f->s);
  assert_int_equal(count_t(f->s), 2);
  assert_int_equal(has_k(f->s, 1), 1);
  assert_int_equal(has_k(f->s, 2), 0);
  assert_int_equal(has_k(f->s, 3), 0);
  assert_int_equal(has_k(f->s, 4), 0);
  assert_int_equal(has_k(f->s, 5), 1);
  assert_int_equal(k_store_failed_gen(f->s), 0);
}

static void test_changes(void **state) {
  fx_t *f = *state;
  k_val_t a[] = {K_INT(2)};
  make_t(f->s);
  unit_begin(f->s);
  for (int i = 1; i <= 5; i++) put(f->s, i, "x");
  exec_ok(f->s, "UPDATE t SET s = 'y' WHERE k > ?", a, 1);
  assert_int_equal(k_store_changes(f->s), 3);
  exec_ok(f->s, "DELETE FROM t WHERE k = 99", NULL, 0);
  assert_int_equal(k_store_changes(f->s), 0);
  unit_end(f->s, 1);
  flush(f->s);
}

/* ---- generations ------------------------------------------------------------ */

static void wait_durable(k_store_t *s, uint64_t gen) {
  for (int i = 0; i < 500 && k_store_durable_gen(s) < gen; i++) {
    struct pollfd p = {k_store_sync_fd(s), POLLIN, 0};
    poll(&p, 1, 10);
    k_store_sync_poll(s);
  }
}

static void test_generations(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_store_stats_t st;
  uint64_t g1, g2;

  assert_int_equal(k_store_visible_gen(f->s), 0);
  assert_int_equal(k_store_durable_gen(f->s), 0);
  assert_true(k_store_sync_fd(f->s) >= 0);

  unit_begin(f->s);
  exec_ok(f->s, "CREATE TABLE t (k INTEGER PRIMARY KEY, i INTEGER, s TEXT)", NULL, 0);
  unit_end(f->s, 1);
  g1 = k_store_visible_gen(f->s);
  assert_true(g1 >= 1);
  /* a second unit in the same batch shares its generation */
  unit_begin(f->s);
  put(f->s, 1, "a");
  unit_end(f->s, 1);
  assert_int_equal(k_store_visible_gen(f->s), g1);
  assert_true(k_store_durable_gen(f->s) < g1);
  flush(f->s);
  assert_int_equal(k_store_visible_gen(f->s), g1); /* committed, not necessarily durable */

  wait_durable(f->s, g1);
  assert_true(k_store_durable_gen(f->s) >= g1);

  /* next batch: a new, larger generation */
  unit_begin(f->s);
  put(f->s, 2, "b");
  unit_end(f->s, 1);
  g2 = k_store_visible_gen(f->s);
  assert_true(g2 > g1);
  assert_true(k_store_durable_gen(f->s) < g2);
  flush(f->s);
  assert_int_equal(k_store_sync_wait(f->s, &e), 0);
  assert_true(k_store_durable_gen(f->s) >= g2);

  /* a batch whose only unit was rolled back still commits (as nothing) */
  unit_begin(f->s);
  put(f->s, 3, "c");
  unit_end(f->s, 0);
  flush(f->s);
  assert_int_equal(k_store_sync_wait(f->s, &e), 0);
  assert_true(k_store_durable_gen(f->s) > g2);
  assert_int_equal(count_t(f->s), 2);

  /* reads outside a batch do not move the visible generation */
  {
    uint64_t g = k_store_visible_gen(f->s);
    (void)count_t(f->s);
    assert_int_equal(k_store_visible_gen(f->s), g);
    assert_int_equal(k_store_flush(f->s, &e), 0);
    assert_int_equal(k_store_visible_gen(f->s), g);
  }

  k_store_stats(f->s, &st);
  assert_int_equal(st.commits, 3);
  assert_int_equal(st.commit_failures, 0);
  assert_int_equal(st.commit_seconds.count, 3);
  assert_true(st.sync_seconds.count >= 1);
  assert_int_equal(k_store_failed_gen(f->s), 0);
}

/* ---- binding ------------------------------------------------------------------ */

typedef struct rowv {
  int n;
  k_val_type_t t[4];
  int64_t i[4];
  char s[4][128];
} rowv_t;

static int rowv_cb(void *ud, const k_val_t *c, int n) {
  rowv_t *r = ud;
  r->n = n;
  for (int j = 0; j < n && j < 4; j++) {
    r->t[j] = c[j].type;
    r->i[j] = c[j].i;
    if (c[j].type == K_VAL_TEXT) snprintf(r->s[j], sizeof r->s[j], "%s", c[j].s);
  }
  return 0;
}

static rowv_t get_row(k_store_t *s, int64_t k) {
  rowv_t r = {0};
  keel_err_t e = {0};
  k_val_t a[] = {K_INT(k)};
  assert_int_equal(
      k_store_exec(s, "SELECT k, i, s, typeof(s) FROM t WHERE k = ?", a, 1, rowv_cb, &r, &e), 0);
  return r;
}

static void test_binding(void **state) {
  fx_t *f = *state;
  const char *hostile = "it's \"quoted\" -- ; DROP TABLE t; \xc3\xa9\xe2\x82\xac";
  make_t(f->s);
  unit_begin(f->s);
  {
    k_val_t a[] = {K_INT(1), K_INT(INT64_MAX), K_TEXT(hostile)};
    exec_ok(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3);
  }
  {
    k_val_t a[] = {K_INT(2), K_INT(INT64_MIN), K_NULLV};
    exec_ok(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3);
  }
  {
    k_val_t a[] = {K_INT(3), K_NULLV, K_TEXT(NULL)}; /* NULL text binds as SQL NULL */
    exec_ok(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3);
  }
  {
    k_val_t a[] = {K_INT(4), K_INT(-1), K_TEXT("")};
    exec_ok(f->s, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3);
  }
  unit_end(f->s, 1);
  flush(f->s);
  assert_true(K_TEXT(NULL).type == K_VAL_NULL);

  rowv_t r = get_row(f->s, 1);
  assert_int_equal(r.n, 4);
  assert_int_equal(r.t[0], K_VAL_INT);
  assert_int_equal(r.i[0], 1);
  assert_int_equal(r.t[1], K_VAL_INT);
  assert_true(r.i[1] == INT64_MAX);
  assert_int_equal(r.t[2], K_VAL_TEXT);
  assert_string_equal(r.s[2], hostile);
  assert_string_equal(r.s[3], "text");

  r = get_row(f->s, 2);
  assert_true(r.i[1] == INT64_MIN);
  assert_int_equal(r.t[2], K_VAL_NULL);
  assert_string_equal(r.s[3], "null");

  r = get_row(f->s, 3);
  assert_int_equal(r.t[1], K_VAL_NULL);
  assert_int_equal(r.t[2], K_VAL_NULL);

  r = get_row(f->s, 4);
  assert_int_equal(r.i[1], -1);
  assert_int_equal(r.t[2], K_VAL_TEXT);
  assert_string_equal(r.s[2], "");
  assert_string_equal(r.s[3], "text");

  /* the hostile text is data: the table is still there, bound in a WHERE too */
  {
    k_val_t a[] = {K_TEXT(hostile)};
    assert_int_equal(query_int(f->s, "SELECT COUNT(*) FROM t WHERE s = ?", a, 1), 1);
  }
  /* bindings do not leak into the next run of the same (cached) statement */
  {
    k_val_t a[] = {K_INT(5), K_INT(7)};
    unit_begin(f->s);
    exec_ok(f->s, "INSERT INTO t(k, i) VALUES (?, ?)", a, 2);
    unit_end(f->s, 1);
    flush(f->s);
    r = get_row(f->s, 5);
    assert_int_equal(r.i[1], 7);
    assert_int_equal(r.t[2], K_VAL_NULL);
  }
}

static void test_bad_sql(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  assert_int_equal(k_store_exec(f->s, "SELEKT nonsense", NULL, 0, NULL, NULL, &e), KEEL_EIO);
  assert_true(e.msg[0] != '\0');
  memset(&e, 0, sizeof e);
  assert_int_equal(k_store_exec(f->s, "SELECT * FROM no_such_table", NULL, 0, NULL, NULL, &e),
                   KEEL_EIO);
  assert_non_null(strstr(e.msg, "no_such_table"));
}

/* ---- early stop ------------------------------------------------------------------ */

typedef struct stopper {
  int seen, stop_after;
  int64_t last;
} stopper_t;

static int stop_cb(void *ud, const k_val_t *c, int n) {
  stopper_t *st = ud;
  assert_int_equal(n, 1);
  st->last = c[0].i;
  if (++st->seen == st->stop_after) return 7;
  return 0;
}

static void test_row_callback_early_stop(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  stopper_t st = {0, 3, 0};
  make_t(f->s);
  unit_begin(f->s);
  for (int i = 1; i <= 10; i++) put(f->s, i, "v");
  unit_end(f->s, 1);
  flush(f->s);

  assert_int_equal(k_store_exec(f->s, "SELECT k FROM t ORDER BY k", NULL, 0, stop_cb, &st, &e), 7);
  assert_int_equal(st.seen, 3);
  assert_int_equal(st.last, 3);
  /* the statement was reset: the same query runs from the start again */
  st = (stopper_t){0, 100, 0};
  assert_int_equal(k_store_exec(f->s, "SELECT k FROM t ORDER BY k", NULL, 0, stop_cb, &st, &e), 0);
  assert_int_equal(st.seen, 10);
  assert_int_equal(st.last, 10);
  /* a stopped read does not hold a lock that blocks the next batch */
  st = (stopper_t){0, 1, 0};
  assert_int_equal(k_store_exec(f->s, "SELECT k FROM t ORDER BY k", NULL, 0, stop_cb, &st, &e), 7);
  unit_begin(f->s);
  put(f->s, 11, "w");
  unit_end(f->s, 1);
  flush(f->s);
  assert_int_equal(count_t(f->s), 11);
}

/* ---- readers and reopen ------------------------------------------------------------ */

static void test_reader(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  k_store_t *r = NULL;
  make_t(f->s);
  unit_begin(f->s);
  put(f->s, 1, "a");
  unit_end(f->s, 1);
  flush(f->s);
  assert_int_equal(k_store_reader_open(f->s, &r, &e), 0);
  assert_int_equal(count_t(r), 1);
  /* the writer's open batch is invisible to the reader */
  unit_begin(f->s);
  put(f->s, 2, "b");
  unit_end(f->s, 1);
  assert_int_equal(count_t(f->s), 2);
  assert_int_equal(count_t(r), 1);
  flush(f->s);
  assert_int_equal(count_t(r), 2);
  /* a reader cannot write */
  {
    k_val_t a[] = {K_INT(3), K_INT(0), K_TEXT("c")};
    assert_true(k_store_exec(r, "INSERT INTO t(k, i, s) VALUES (?, ?, ?)", a, 3, NULL, NULL, &e) <
                0);
  }
  assert_int_equal(k_store_sync_wait(r, &e), 0);
  k_store_close(r);
  assert_int_equal(count_t(f->s), 2);
}

static void test_reopen_keeps_committed(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  make_t(f->s);
  unit_begin(f->s);
  put(f->s, 1, "kept");
  put(f->s, 2, "kept too");
  unit_end(f->s, 1);
  flush(f->s);
  assert_int_equal(k_store_sync_wait(f->s, &e), 0);
  /* a batch that was never flushed is not committed */
  unit_begin(f->s);
  put(f->s, 3, "never flushed");
  unit_end(f->s, 1);
  k_store_close(f->s);
  f->s = NULL;

  assert_int_equal(k_store_open(f->dir, 0, NULL, &f->s, &e), 0);
  check_migrations(f->s); /* not applied twice */
  assert_int_equal(count_t(f->s), 2);
  assert_int_equal(has_k(f->s, 3), 0);
  {
    rowv_t r = get_row(f->s, 2);
    assert_string_equal(r.s[2], "kept too");
  }
  /* generations restart; the store works as before */
  unit_begin(f->s);
  put(f->s, 4, "after reopen");
  unit_end(f->s, 1);
  flush(f->s);
  assert_int_equal(k_store_sync_wait(f->s, &e), 0);
  assert_true(k_store_durable_gen(f->s) >= k_store_visible_gen(f->s));
  assert_int_equal(count_t(f->s), 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_missing_without_create),
      cmocka_unit_test_setup_teardown(test_migrations_applied, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_outside_unit_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unit_misuse, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_unit_rolls_back_only_itself, setup, teardown),
      cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_generations, setup, teardown),
      cmocka_unit_test_setup_teardown(test_binding, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_sql, setup, teardown),
      cmocka_unit_test_setup_teardown(test_row_callback_early_stop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reader, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reopen_keeps_committed, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
