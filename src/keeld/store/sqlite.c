/* sqlite.c — the SQLite backend of store.h.
 *
 * Durability without blocking the loop: the database runs in WAL mode with
 * synchronous=NORMAL, so COMMIT on the loop only write()s frames to the WAL.
 * A dedicated sync thread then fdatasync()s the WAL file and reports the
 * generation it covered through an eventfd.  One fsync covers every batch
 * committed before it started (group commit).  Once the WAL is fsync'd, its
 * commit frames survive power loss just as with synchronous=FULL.
 * Checkpoints (WAL -> database) also run on the sync thread, on a connection
 * of its own; SQLite fsyncs around them itself in NORMAL mode.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/time.h"
#include "store/migrations.h"
#include "store/store.h"

#define STMT_SLOTS 256     /* power of two */
#define MAX_COLS 32
#define CHECKPOINT_WAL_BYTES (4 << 20)

typedef struct stmt_slot {
  char *sql;
  sqlite3_stmt *st;
} stmt_slot_t;

struct k_store {
  sqlite3 *db;
  const keel_log_t *log;
  char *dir;
  int reader;
  stmt_slot_t stmts[STMT_SLOTS];
  int nstmts;

  int in_batch, in_unit;
  uint64_t next_gen, batch_gen, committed_gen, durable_gen, failed_gen;
  k_store_stats_t stats; /* loop-side fields; sync fields under mu */

  /* sync thread */
  pthread_t thr;
  int thr_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t want_gen, done_gen;
  int stop;
  int efd;
  int wal_fd;
  char *wal_path;
  sqlite3 *ckdb;
};

static int fail(keel_err_t *e, sqlite3 *db, int code, const char *what) {
  return keel_err_set(e, code, "%s: %s", what, db ? sqlite3_errmsg(db) : "cannot open");
}

static uint64_t fnv(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static void stmts_clear(k_store_t *s) {
  for (int i = 0; i < STMT_SLOTS; i++) {
    sqlite3_finalize(s->stmts[i].st);
    free(s->stmts[i].sql);
    s->stmts[i].st = NULL;
    s->stmts[i].sql = NULL;
  }
  s->nstmts = 0;
}

/* Prepared statements are cached by SQL text: engines pass literals, and the
 * few dynamic queries (list filters) have a handful of shapes. */
static int stmt_get(k_store_t *s, const char *sql, sqlite3_stmt **out, keel_err_t *e) {
  uint64_t h = fnv(sql);
  unsigned i = (unsigned)h & (STMT_SLOTS - 1);
  sqlite3_stmt *st;

  for (;; i = (i + 1) & (STMT_SLOTS - 1)) {
    if (!s->stmts[i].sql) break;
    if (!strcmp(s->stmts[i].sql, sql)) {
      *out = s->stmts[i].st;
      return 0;
    }
  }
  if (s->nstmts >= STMT_SLOTS / 2) { /* keep probing short; rare */
    stmts_clear(s);
    i = (unsigned)h & (STMT_SLOTS - 1);
  }
  if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
    return fail(e, s->db, KEEL_EIO, "prepare");
  s->stmts[i].sql = strdup(sql);
  if (!s->stmts[i].sql) {
    sqlite3_finalize(st);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  s->stmts[i].st = st;
  s->nstmts++;
  *out = st;
  return 0;
}

static int simple(k_store_t *s, const char *sql, keel_err_t *e) {
  char *msg = NULL;
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK) {
    keel_err_set(e, KEEL_EIO, "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return KEEL_EIO;
  }
  return 0;
}

int k_store_exec(k_store_t *s, const char *sql, const k_val_t *args, int nargs, k_row_fn fn,
                 void *ud, keel_err_t *e) {
  sqlite3_stmt *st = NULL;
  k_val_t cols[MAX_COLS];
  int rc, ret = 0;

  if ((rc = stmt_get(s, sql, &st, e))) return rc;
  if (!s->reader && !s->in_unit && !sqlite3_stmt_readonly(st))
    return keel_err_set(e, KEEL_EINVAL, "store: write outside a unit: %.60s", sql);
  for (int i = 0; i < nargs; i++) {
    switch (args[i].type) {
    case K_VAL_NULL: rc = sqlite3_bind_null(st, i + 1); break;
    case K_VAL_INT: rc = sqlite3_bind_int64(st, i + 1, args[i].i); break;
    case K_VAL_TEXT: rc = sqlite3_bind_text(st, i + 1, args[i].s, -1, SQLITE_STATIC); break;
    }
    if (rc != SQLITE_OK) {
      ret = fail(e, s->db, KEEL_EIO, "bind");
      goto out;
    }
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int n = sqlite3_column_count(st);
    if (!fn) continue;
    if (n > MAX_COLS) n = MAX_COLS;
    for (int i = 0; i < n; i++) {
      switch (sqlite3_column_type(st, i)) {
      case SQLITE_NULL: cols[i] = K_NULLV; break;
      case SQLITE_INTEGER: cols[i] = K_INT(sqlite3_column_int64(st, i)); break;
      default:
        cols[i].type = K_VAL_TEXT;
        cols[i].i = 0;
        cols[i].s = (const char *)sqlite3_column_text(st, i);
        if (!cols[i].s) cols[i] = K_NULLV;
      }
    }
    if ((ret = fn(ud, cols, n))) goto out;
  }
  if (rc != SQLITE_DONE) {
    int ext = sqlite3_extended_errcode(s->db);
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
      ret = fail(e, s->db, KEEL_EEXIST, "store");
    else
      ret = fail(e, s->db, KEEL_EIO, "store");
  }
out:
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return ret;
}

int64_t k_store_changes(k_store_t *s) { return sqlite3_changes64(s->db); }

/* ---- migrations ---------------------------------------------------------- */

static int max_version_row(void *ud, const k_val_t *c, int n) {
  if (n > 0 && c[0].type == K_VAL_INT) *(int64_t *)ud = c[0].i;
  return 0;
}

static int migrate(k_store_t *s, keel_err_t *e) {
  int64_t have = 0;
  int rc;

  if ((rc = simple(s, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
                   e)))
    return rc;
  s->reader = 1; /* reads outside a unit are fine here */
  rc = k_store_exec(s, "SELECT MAX(version) FROM schema_migrations", NULL, 0, max_version_row,
                    &have, e);
  s->reader = 0;
  if (rc) return rc;
  for (int i = 0; i < k_sqlite_migrations_count; i++) {
    const k_migration_t *m = &k_sqlite_migrations[i];
    char ins[256];
    if (m->version <= have) continue;
    keel_log(s->log, KEEL_LOG_INFO, "store: applying migration %s", m->name);
    snprintf(ins, sizeof ins,
             "INSERT INTO schema_migrations(version, name, applied_ms) VALUES (%d, '%s', %lld)",
             m->version, m->name, (long long)keel_now_ms());
    if ((rc = simple(s, "BEGIN IMMEDIATE", e))) return rc;
    if ((rc = simple(s, m->sql, e)) || (rc = simple(s, ins, e))) {
      simple(s, "ROLLBACK", NULL);
      return rc;
    }
    if ((rc = simple(s, "COMMIT", e))) return rc;
  }
  return 0;
}

/* ---- sync thread --------------------------------------------------------- */

static int wal_open(k_store_t *s) {
  int dfd;
  if (s->wal_fd >= 0) return 0;
  s->wal_fd = open(s->wal_path, O_RDWR | O_CLOEXEC);
  if (s->wal_fd < 0) return -1;
  /* The WAL's directory entry must be durable too, once. */
  dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return 0;
}

static void *sync_main(void *arg) {
  k_store_t *s = arg;
  uint64_t one = 1;

  pthread_mutex_lock(&s->mu);
  for (;;) {
    uint64_t g;
    int64_t t0;
    struct stat st;

    while (!s->stop && s->want_gen <= s->done_gen) pthread_cond_wait(&s->cv, &s->mu);
    if (s->want_gen <= s->done_gen) break; /* stopping, nothing owed */
    g = s->want_gen;
    pthread_mutex_unlock(&s->mu);

    t0 = keel_mono_ns();
    if (wal_open(s) || fdatasync(s->wal_fd)) {
      /* Durability can no longer be promised for anything: like PostgreSQL
       * on a failed fsync, stop rather than acknowledge lost writes. */
      keel_log(s->log, KEEL_LOG_ERROR, "store: fsync of %s failed: %s; aborting", s->wal_path,
               strerror(errno));
      abort();
    }
    if (fstat(s->wal_fd, &st) == 0 && st.st_size > CHECKPOINT_WAL_BYTES)
      sqlite3_wal_checkpoint_v2(s->ckdb, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

    pthread_mutex_lock(&s->mu);
    k_hist_observe(&s->stats.sync_seconds, (double)(keel_mono_ns() - t0) / 1e9);
    s->done_gen = g;
    pthread_cond_broadcast(&s->cv);
    if (write(s->efd, &one, sizeof one) < 0) { /* counter saturation only; poll reads done_gen */
    }
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* ---- open / close -------------------------------------------------------- */

static int open_db(const char *path, int flags, sqlite3 **out, keel_err_t *e) {
  int rc = sqlite3_open_v2(path, out, flags | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    keel_err_set(e, KEEL_EIO, "open %s: %s", path, *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));
    sqlite3_close(*out);
    *out = NULL;
    return KEEL_EIO;
  }
  sqlite3_busy_timeout(*out, 5000);
  sqlite3_extended_result_codes(*out, 1);
  return 0;
}

static k_store_t *store_new(const char *dir, const keel_log_t *log) {
  k_store_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->log = log;
  s->efd = -1;
  s->wal_fd = -1;
  s->dir = strdup(dir);
  if (!s->dir) {
    free(s);
    return NULL;
  }
  return s;
}

int k_store_open(const char *dir, int create, const keel_log_t *log, k_store_t **out,
                 keel_err_t *e) {
  char path[4096];
  k_store_t *s = NULL;
  int rc, one = 1;
  struct stat st;

  *out = NULL;
  if ((size_t)snprintf(path, sizeof path, "%s/keel.db", dir) >= sizeof path)
    return keel_err_set(e, KEEL_EINVAL, "data directory path too long");
  if (!create && stat(path, &st) != 0)
    return keel_err_set(e, KEEL_ENOENT, "%s: no database (run 'keeld init --data %s' first)",
                        path, dir);
  s = store_new(dir, log);
  if (!s) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  if (asprintf(&s->wal_path, "%s-wal", path) < 0) {
    s->wal_path = NULL;
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = open_db(path, SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0), &s->db, e)))
    goto out;
  /* Migrations run fully synchronous; afterwards NORMAL (see top of file). */
  if ((rc = simple(s, "PRAGMA journal_mode=WAL", e)) ||
      (rc = simple(s, "PRAGMA synchronous=FULL", e)) ||
      (rc = simple(s, "PRAGMA foreign_keys=ON", e)) || (rc = migrate(s, e)) ||
      (rc = simple(s, "PRAGMA synchronous=NORMAL", e)) ||
      (rc = simple(s, "PRAGMA wal_autocheckpoint=0", e)))
    goto out;
  sqlite3_file_control(s->db, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
  if ((rc = open_db(path, SQLITE_OPEN_READWRITE, &s->ckdb, e))) goto out;
  s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->efd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "eventfd: %s", strerror(errno));
    goto out;
  }
  if (pthread_create(&s->thr, NULL, sync_main, s) != 0) {
    rc = keel_err_set(e, KEEL_EIO, "cannot start the sync thread");
    goto out;
  }
  s->thr_started = 1;
  *out = s;
  s = NULL;
out:
  if (s) k_store_close(s);
  return rc;
}

int k_store_reader_open(k_store_t *w, k_store_t **out, keel_err_t *e) {
  char path[4096];
  k_store_t *s;
  int rc;

  *out = NULL;
  snprintf(path, sizeof path, "%s/keel.db", w->dir);
  s = store_new(w->dir, w->log);
  if (!s) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  s->reader = 1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  if ((rc = open_db(path, SQLITE_OPEN_READONLY, &s->db, e))) {
    k_store_close(s);
    return rc;
  }
  *out = s;
  return 0;
}

void k_store_close(k_store_t *s) {
  if (!s) return;
  if (s->thr_started) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thr, NULL);
  }
  stmts_clear(s);
  if (s->ckdb) sqlite3_close(s->ckdb);
  if (s->db) sqlite3_close(s->db);
  if (s->efd >= 0) close(s->efd);
  if (s->wal_fd >= 0) close(s->wal_fd);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s->wal_path);
  free(s->dir);
  free(s);
}

/* ---- units, batches, generations ----------------------------------------- */

int k_store_unit_begin(k_store_t *s, keel_err_t *e) {
  int rc;
  if (s->in_unit) return keel_err_set(e, KEEL_EINVAL, "store: units do not nest");
  if (!s->in_batch) {
    if ((rc = simple(s, "BEGIN IMMEDIATE", e))) return rc;
    s->in_batch = 1;
    s->batch_gen = ++s->next_gen;
  }
  if ((rc = simple(s, "SAVEPOINT unit", e))) return rc;
  s->in_unit = 1;
  return 0;
}

int k_store_unit_end(k_store_t *s, int ok, keel_err_t *e) {
  int rc = 0;
  if (!s->in_unit) return keel_err_set(e, KEEL_EINVAL, "store: no unit open");
  if (!ok) rc = simple(s, "ROLLBACK TO unit", e);
  if (!rc) rc = simple(s, "RELEASE unit", e);
  s->in_unit = 0;
  return rc;
}

int k_store_flush(k_store_t *s, keel_err_t *e) {
  int64_t t0;
  int rc;

  if (!s->in_batch) return 0;
  if (s->in_unit) return keel_err_set(e, KEEL_EINVAL, "store: flush inside a unit");
  t0 = keel_mono_ns();
  rc = simple(s, "COMMIT", e);
  s->in_batch = 0;
  if (rc) {
    simple(s, "ROLLBACK", NULL);
    s->failed_gen = s->batch_gen;
    pthread_mutex_lock(&s->mu);
    s->stats.commit_failures++;
    pthread_mutex_unlock(&s->mu);
    return rc;
  }
  s->committed_gen = s->batch_gen;
  pthread_mutex_lock(&s->mu);
  s->stats.commits++;
  k_hist_observe(&s->stats.commit_seconds, (double)(keel_mono_ns() - t0) / 1e9);
  s->want_gen = s->committed_gen;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

uint64_t k_store_visible_gen(k_store_t *s) { return s->in_batch ? s->batch_gen : s->committed_gen; }
uint64_t k_store_durable_gen(k_store_t *s) { return s->durable_gen; }
uint64_t k_store_failed_gen(k_store_t *s) { return s->failed_gen; }
int k_store_sync_fd(k_store_t *s) { return s->efd; }

void k_store_sync_poll(k_store_t *s) {
  uint64_t v;
  while (read(s->efd, &v, sizeof v) > 0) {
  }
  pthread_mutex_lock(&s->mu);
  s->durable_gen = s->done_gen;
  pthread_mutex_unlock(&s->mu);
}

int k_store_sync_wait(k_store_t *s, keel_err_t *e) {
  (void)e;
  if (s->reader) return 0;
  pthread_mutex_lock(&s->mu);
  while (s->done_gen < s->committed_gen) pthread_cond_wait(&s->cv, &s->mu);
  s->durable_gen = s->done_gen;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

void k_store_stats(k_store_t *s, k_store_stats_t *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->stats;
  pthread_mutex_unlock(&s->mu);
}
