/* metrics/tsdb.h — Keel's embedded time-series database.
 *
 * Layout of DIR (keeld passes DATA/tsdb):
 *   wal/          write-ahead log segments and checkpoint (metrics/wal.h)
 *   chunks_head/  closed head chunks, a cache rebuilt from the WAL at open
 *   blocks/       immutable blocks <mint>_<maxt>/ (metrics/block.h)
 *
 * Data flow.  Samples are staged into the open batch (k_tsdb_append*,
 * checked at once: out-of-order and too-old samples are refused one by one
 * and counted), k_tsdb_commit writes the batch to the WAL (write(), no
 * fsync on the caller's thread) and only then adds it to the head, where
 * queries see it.  A sync thread fsyncs the WAL and advances
 * k_tsdb_durable_gen, signalling k_tsdb_sync_fd, exactly like the store
 * (store/store.h): keeld answers an agent's batch only once the batch's
 * generation is durable.  A kill -9 at any moment loses nothing whose
 * generation was reported durable: replay at open restores the head from
 * the WAL.
 *
 * The head keeps the series' recent samples (metrics/head.h); every
 * block_ms, k_tsdb_maintain cuts what the head holds of the oldest block
 * range into a block, merges adjacent blocks into longer ones (x3 per
 * level: 2h, 6h, 18h, ... up to a tenth of the retention, at most 31 days),
 * deletes blocks past the retention, and truncates the WAL.
 *
 * Acceptance window.  A sample is refused (KEEL_ECONFLICT, counted) when
 * its timestamp is not after its series' last one (out of order), or when
 * it is older than the head accepts: max(end of the newest cut block range,
 * newest head sample - block_ms / 2) — as Prometheus, so a block range is
 * closed before it is cut — or more than max_future_ms ahead of the wall
 * clock (one agent with a wrong clock would otherwise move the window past
 * everyone else's samples).  Samples of one series inside one batch must
 * be increasing too.
 *
 * Threads.  A k_tsdb_t belongs to one thread (keeld's loop): every call
 * here MUST come from it.  Inside, a WAL sync thread fsyncs; and the
 * slow parts of k_tsdb_maintain (writing a block from the head, writing
 * the WAL checkpoint, compacting blocks, deleting expired blocks) run on a
 * worker of keeld's pool (work.h) when one is given.  While a cut runs on
 * a worker, the head keeps accepting samples and answering queries: the
 * worker reads only a snapshot (the immutable closed chunks before the cut
 * boundary, already spilled to chunks_head/, the series' immutable label
 * ids, a copy of the symbol table); the loop thread drops those chunks from
 * the head in the same callback (k_work done) that adds the new block to
 * the block list, so a query sees every sample exactly once, before and
 * after.  Compaction reads immutable blocks; its done callback swaps the
 * new block in for its sources, which stay mapped while queriers hold them.
 *
 * Ownership: labels and strings passed in are borrowed for the call; the
 * database copies what it keeps.
 */
#ifndef KEELD_METRICS_TSDB_H
#define KEELD_METRICS_TSDB_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "metrics/labels.h"
#include "metrics/querier.h"
#include "work.h"

#define K_TSDB_RETENTION_DEFAULT (INT64_C(15) * 24 * 3600 * 1000)
#define K_TSDB_BLOCK_DEFAULT (INT64_C(2) * 3600 * 1000)

typedef struct k_tsdb k_tsdb_t;

typedef struct k_tsdb_opts {
  int64_t retention_ms;     /* 0: K_TSDB_RETENTION_DEFAULT (15 days) */
  int64_t block_ms;         /* 0: K_TSDB_BLOCK_DEFAULT (2 hours); >= 60000 */
  size_t max_batch_samples; /* staged samples before k_tsdb_commit is required; 0: 4 Mi */
  int64_t max_future_ms;    /* refuse samples this far past the wall clock; 0: 10 min; < 0: no limit */
} k_tsdb_opts_t;

typedef struct k_tsdb_stats {
  uint64_t series;            /* in the head */
  uint64_t head_chunks;       /* closed + open */
  uint64_t head_bytes;        /* heap held by the head */
  uint64_t head_file_bytes;   /* closed head chunks in chunks_head/ (page cache, not heap) */
  uint64_t samples_appended;  /* committed into the head */
  uint64_t out_of_order;      /* refused: not after the series' last sample */
  uint64_t out_of_bounds;     /* refused: outside the acceptance window (too old, too far ahead) */
  uint64_t wal_bytes;
  uint64_t wal_corrupt_tails; /* WAL segments cut back at the last replay */
  uint64_t blocks;
  uint64_t block_bytes;       /* bytes on disk of all blocks */
  uint64_t block_samples;
  uint64_t commits, commit_failures;
  uint64_t cuts, compactions, blocks_expired, maintain_failures;
  int64_t head_mint, head_maxt; /* INT64_MAX / INT64_MIN when empty */
} k_tsdb_stats_t;

/* Opens (creating) DIR, loads the blocks and replays the WAL into the head.
 * A damaged WAL tail is cut and logged, never fatal.  opts may be NULL.
 * log borrowed for the life of db; *out owned by the caller. */
int k_tsdb_open(const char *dir, const k_tsdb_opts_t *opts, const keel_log_t *log,
                k_tsdb_t **out, keel_err_t *e);
/* Asks a running maintenance job to stop and waits for it (whatever it
 * wrote is consistent on disk), commits nothing (call k_tsdb_commit
 * first), waits until the WAL is durable, frees.  Queriers MUST be closed
 * before.  A job's done callback may still come from the pool afterwards:
 * it only frees the job. */
void k_tsdb_close(k_tsdb_t *db);

/* ---- appending ------------------------------------------------------------------------ */

/* Stages one sample of the series labels[0..n) (sorted by name, names
 * unique, __name__ among them, no empty values) into the open batch.
 * KEEL_ECONFLICT: refused, out of order or outside the acceptance window
 * (counted; not an error of the batch); KEEL_EINVAL: bad labels;
 * KEEL_ETOOBIG: the batch is full, commit first. */
int k_tsdb_append(k_tsdb_t *db, const k_label_t *labels, size_t n, int64_t t, double v,
                  keel_err_t *e);
/* The series ref of a label set (created when new) for k_tsdb_append_ref.
 * A ref stays valid while the series is in the head; after a block cut
 * drops a series that had no recent samples, append_ref says KEEL_ENOENT
 * and the caller looks the labels up again. */
int k_tsdb_ref(k_tsdb_t *db, const k_label_t *labels, size_t n, uint64_t *ref, keel_err_t *e);
int k_tsdb_append_ref(k_tsdb_t *db, uint64_t ref, int64_t t, double v, keel_err_t *e);
/* k_tsdb_ref for n label sets at once (sets[i] borrowed; refs[i] out),
 * about twice as fast as one by one on a large head (bench/tsdb.c): the
 * lookups' memory accesses overlap.  Meant for a whole agent batch or
 * scrape.  On
 * an error, *failed is the index of the label set at fault (refs before it
 * are valid). */
int k_tsdb_refs(k_tsdb_t *db, const k_labels_t *sets, size_t n, uint64_t *refs, size_t *failed,
                keel_err_t *e);

/* Writes the open batch to the WAL and adds it to the head; *gen is its
 * generation (the last committed one when the batch was empty).  On
 * failure (KEEL_EIO) the whole batch is dropped and its generation becomes
 * k_tsdb_failed_gen(). */
int k_tsdb_commit(k_tsdb_t *db, uint64_t *gen, keel_err_t *e);
/* Drops the staged samples of the open batch (new series stay, to be
 * logged by the next commit).  When nothing is left to commit, the batch's
 * generation is abandoned: whoever took it from k_tsdb_visible_gen has
 * nothing to wait for. */
void k_tsdb_rollback(k_tsdb_t *db);

/* Generation an answer built now depends on: the open batch's when it has
 * staged samples, else the last committed. */
uint64_t k_tsdb_visible_gen(const k_tsdb_t *db);
uint64_t k_tsdb_durable_gen(const k_tsdb_t *db);
uint64_t k_tsdb_failed_gen(const k_tsdb_t *db);
/* Readable when the durable generation advanced; then call k_tsdb_sync_poll. */
int k_tsdb_sync_fd(const k_tsdb_t *db);
void k_tsdb_sync_poll(k_tsdb_t *db);
/* Blocks until everything committed is durable (shutdown, tools, tests). */
void k_tsdb_sync_wait(k_tsdb_t *db);

/* ---- reading ------------------------------------------------------------------------ */

/* A querier over the head and the blocks (querier.h).  Each call reads
 * the database as it is at that call: every committed sample exactly once,
 * even when a cut or compaction finished between two calls; answers stay
 * valid until close (the querier holds the blocks it read).  *q is owned
 * by the caller ((*q)->close(*q)), used on db's thread, and MUST be closed
 * before k_tsdb_close.  Label queries (label_names, label_values) consider
 * whole sources (head, blocks) overlapping [mint, maxt], not each sample. */
int k_tsdb_querier(k_tsdb_t *db, k_querier_t **q, keel_err_t *e);

void k_tsdb_stats(k_tsdb_t *db, k_tsdb_stats_t *out);

/* ---- maintenance ---------------------------------------------------------------------- */

/* One step of housekeeping, to call periodically (keeld: from its cron,
 * every few seconds; it returns at once when there is nothing to do or a
 * job is still running).  In order of priority, it starts at most one of:
 * deleting blocks whose whole range ended before now_ms - retention;
 * cutting the head's oldest block range into a block once the head spans
 * 1.5 block ranges (then truncating the WAL behind a checkpoint);
 * compacting a completed group of adjacent blocks.
 * work: the job runs on that pool and finishes on the loop thread from
 * k_work_poll (db MUST be the loop's); NULL: it runs to completion here,
 * together with every further step due (tests, tools, benchmarks).
 * Errors of a job are logged and counted (maintain_failures), and retried
 * at the next call; the return value reports errors of starting one. */
int k_tsdb_maintain(k_tsdb_t *db, int64_t now_ms, k_work_t *work, keel_err_t *e);
/* 1 while a maintenance job runs on a worker. */
int k_tsdb_maintain_busy(const k_tsdb_t *db);

/* Test hook: the next cut stops as if the process had died after step
 * 1 (block chunks and index written), 2 (meta written and fsync'd), 3 (block
 * renamed into place), 4 (block opened, WAL checkpoint not written) or 5
 * (checkpoint written, head and WAL lists not updated); 6: the next
 * compaction, once its block is in place and before its sources go.  The
 * database MUST then only be closed. */
void k_tsdb_set_crash_point(k_tsdb_t *db, int step);

#endif
