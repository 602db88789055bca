/* store.h — keeld's storage interface.  Engines talk SQL through this and
 * nothing else: no backend's own API or dialect leaks out of its file.
 *
 * SQL passed here MUST be portable (the common subset of SQLite and
 * PostgreSQL): `?` placeholders, INTEGER/BIGINT/TEXT, ON CONFLICT rather
 * than INSERT OR REPLACE, LIMIT without OFFSET tricks.  Each backend owns
 * its numbered migrations (store/migrations/<backend>/NNNN_name.sql).
 *
 * Writes and durability (group commit).  The store has one write batch at a
 * time.  A mutation runs as a *unit* (k_store_unit_begin/_end) inside the
 * open batch; the loop calls k_store_flush() once per iteration, which
 * commits the batch (generation G) and hands G to the sync thread.  G is
 * durable once k_store_durable_gen() >= G.  An answer that depends on
 * written data MUST NOT leave before its generation is durable: use
 * k_store_visible_gen() when the answer is built and wait for it.
 *
 * Threads: a k_store_t is used by one thread (keeld's loop).  A background
 * thread that needs to read opens its own handle with k_store_reader_open().
 */
#ifndef KEELD_STORE_H
#define KEELD_STORE_H

#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"

typedef enum { K_VAL_NULL = 0, K_VAL_INT, K_VAL_TEXT } k_val_type_t;

/* A parameter or column value. s is borrowed (see each function). */
typedef struct k_val {
  k_val_type_t type;
  int64_t i;
  const char *s;
} k_val_t;

#define K_INT(x) ((k_val_t){.type = K_VAL_INT, .i = (int64_t)(x)})
/* NULL text binds as SQL NULL. */
static inline k_val_t k_text_val(const char *s) {
  k_val_t v = {s ? K_VAL_TEXT : K_VAL_NULL, 0, s};
  return v;
}
#define K_TEXT(x) k_text_val(x)
#define K_NULLV ((k_val_t){.type = K_VAL_NULL})

/* Called once per result row. cols and their strings are valid only during
 * the call.  A non-zero return stops the query and is returned by exec. */
typedef int (*k_row_fn)(void *ud, const k_val_t *cols, int ncols);

typedef struct k_store k_store_t;

#include "hist.h"

typedef struct k_store_stats {
  uint64_t commits;        /* batches committed */
  uint64_t commit_failures;
  k_hist_t commit_seconds; /* COMMIT on the loop (WAL write, no fsync) */
  k_hist_t sync_seconds;   /* one fsync of the WAL, on the sync thread */
} k_store_stats_t;

/* Opens the store under dir (SQLite: dir/keel.db).  create: make the database
 * when missing (keeld init); otherwise a missing database is KEEL_ENOENT.
 * Applies pending migrations.  *out is owned by the caller (k_store_close). */
int k_store_open(const char *dir, int create, const keel_log_t *log, k_store_t **out,
                 keel_err_t *e);
void k_store_close(k_store_t *s);

/* A read-only handle on the same database for another thread. */
int k_store_reader_open(k_store_t *s, k_store_t **out, keel_err_t *e);

/* Runs one statement.  args are borrowed for the call.  fn may be NULL. */
int k_store_exec(k_store_t *s, const char *sql, const k_val_t *args, int nargs, k_row_fn fn,
                 void *ud, keel_err_t *e);
/* Rows changed by the last write statement on this handle. */
int64_t k_store_changes(k_store_t *s);

/* A unit of change inside the batch: all of it or none of it. Units do not nest. */
int k_store_unit_begin(k_store_t *s, keel_err_t *e);
/* ok: keep the unit's writes; !ok: undo them. */
int k_store_unit_end(k_store_t *s, int ok, keel_err_t *e);

/* Commits the open batch (no-op when none).  On failure the whole batch is
 * rolled back: every unit in it is lost and callers waiting on its
 * generation must be told (k_store_failed_gen). */
int k_store_flush(k_store_t *s, keel_err_t *e);

/* Generation an answer built now depends on (the open batch's, if any). */
uint64_t k_store_visible_gen(k_store_t *s);
uint64_t k_store_durable_gen(k_store_t *s);
/* Last generation that was rolled back by a failed flush (0 = none). */
uint64_t k_store_failed_gen(k_store_t *s);
/* Readable when the durable generation advanced; call k_store_sync_poll()
 * then (drains it). */
int k_store_sync_fd(k_store_t *s);
void k_store_sync_poll(k_store_t *s);
/* Blocks until everything committed so far is durable (shutdown, tools). */
int k_store_sync_wait(k_store_t *s, keel_err_t *e);

void k_store_stats(k_store_t *s, k_store_stats_t *out);

/* The cursor of a newest-first list ordered by (time ms, id), as the
 * engines hand it out: "MS.ID".  NULL cursor: from the start (*ms
 * INT64_MAX, *id "").  *id points into cursor.  KEEL_EINVAL when it is not
 * one. */
int k_store_time_cursor(const char *cursor, int64_t *ms, const char **id, keel_err_t *e);

#endif
