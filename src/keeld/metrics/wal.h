/* metrics/wal.h — the TSDB's write-ahead log: what makes appended samples
 * survive a crash until a block holds them.
 *
 * Files: DIR/wal/NNNNNNNN segments (at most K_WAL_SEGMENT_MAX bytes, more
 * only for one huge batch) and DIR/wal/checkpoint.NNNNNNNN, which holds the
 * series records of segments <= NNNNNNNN once those were deleted.
 *
 * Record: u32 payload length, u32 CRC32C of (type byte + payload), u8 type,
 * payload.  Types:
 *   SERIES  — repeated: uvarint id, uvarint nlabels, nlabels x (uvarint
 *             len, name bytes, uvarint len, value bytes)
 *   SAMPLES — per sample: varint id delta, varint t delta (both from the
 *             previous sample of the record, starting at 0), then the
 *             value: uvarint zigzag(v) << 1 when v is an integer (bit for
 *             bit), else uvarint 1 and the u64 bits (little-endian)
 * A batch (one commit) is one write() of its records: series first.
 *
 * Durability (group commit, as store.h): k_wal_commit write()s the batch
 * on the caller's thread (no fsync there) and returns its generation G; a
 * sync thread fdatasync()s the segments and signals an eventfd; G is
 * durable once k_wal_durable_gen() >= G.  A failed fsync aborts the
 * process (the page cache can no longer be trusted; keeld's store does the
 * same).  A failed write() cuts the segment back to where the batch began,
 * moves to a new segment and fails the commit: the batch is lost, never
 * half-kept.
 *
 * Replay (k_wal_replay): the newest checkpoint, then every later segment in
 * order.  A record that is truncated, fails its CRC or does not parse ends
 * its segment: the file is cut there (logged) and replay goes on with the
 * next segment.  Afterwards every segment is fsync'd, so what replay
 * applied is durable before anything is acknowledged on top of it.
 *
 * Threads: a k_wal_t belongs to one thread, except k_wal_checkpoint, which
 * runs anywhere on segments k_wal_cut_begin has closed.
 */
#ifndef KEELD_METRICS_WAL_H
#define KEELD_METRICS_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "metrics/enc.h"
#include "metrics/labels.h"

#define K_WAL_SEGMENT_MAX (UINT64_C(128) << 20)
#define K_WAL_RECORD_MAX (UINT32_C(64) << 20)

enum { K_WREC_SERIES = 1, K_WREC_SAMPLES = 2 };

typedef struct k_wal k_wal_t;

typedef struct k_wsample {
  uint32_t id;
  int64_t t;
  double v;
} k_wsample_t;

typedef struct k_wal_replay_cb {
  /* labels and strings valid during the call only */
  int (*series)(void *ud, uint32_t id, const k_label_t *l, size_t n);
  int (*samples)(void *ud, const k_wsample_t *s, size_t n);
  void *ud;
} k_wal_replay_cb_t;

typedef struct k_wal_stats {
  uint64_t bytes;       /* segments + checkpoint on disk */
  uint64_t segments;
  uint64_t commits;
  uint64_t write_failures;
  uint64_t corrupt_tails; /* segments cut back at replay */
} k_wal_stats_t;

/* Opens DIR/wal (created when missing).  Nothing is written until
 * k_wal_replay, which MUST be called once before the first commit.  out
 * owned by the caller (k_wal_close); log borrowed. */
int k_wal_open(const char *dir, const keel_log_t *log, k_wal_t **out, keel_err_t *e);
/* Stops the sync thread after it made everything committed durable. */
void k_wal_close(k_wal_t *w);

int k_wal_replay(k_wal_t *w, const k_wal_replay_cb_t *cb, keel_err_t *e);

/* Encoding into the open batch (memory only).  The batch is capped at
 * K_WAL_RECORD_MAX per record, records are split as needed. */
int k_wal_add_series(k_wal_t *w, uint32_t id, const k_label_t *l, size_t n, keel_err_t *e);
int k_wal_add_samples(k_wal_t *w, const k_wsample_t *s, size_t n, keel_err_t *e);
/* Drops the open batch. */
void k_wal_discard(k_wal_t *w);
/* Bytes in the open batch. */
size_t k_wal_pending(const k_wal_t *w);

/* Writes the open batch (nothing when empty) as generation gen, which
 * MUST be above every earlier one (the caller numbers batches, so a failed
 * one keeps its number).  KEEL_EIO: the batch is lost (see top). */
int k_wal_commit(k_wal_t *w, uint64_t gen, keel_err_t *e);

uint64_t k_wal_committed_gen(const k_wal_t *w);
uint64_t k_wal_durable_gen(const k_wal_t *w);
int k_wal_sync_fd(const k_wal_t *w);
void k_wal_sync_poll(k_wal_t *w);
/* Blocks until every committed batch is durable. */
void k_wal_sync_wait(k_wal_t *w);

void k_wal_stats(const k_wal_t *w, k_wal_stats_t *out);

/* ---- truncation after a block cut ---------------------------------------------------- */

/* Closes the segment being written (the next commit starts a new one) and
 * returns in *upto the highest segment number N such that every segment
 * <= N holds only samples older than before (0: none).  Those segments
 * can go once a checkpoint N holds the series records still needed. */
int k_wal_cut_begin(k_wal_t *w, int64_t before, uint32_t *upto, keel_err_t *e);

/* Any thread: writes DIR/wal/checkpoint.N from the series next() yields
 * (labels valid until the following call; 0 = done, 1 = one more,
 * negative = error), fsyncs and renames it into place, then deletes
 * segments <= N and older checkpoints.  waldir is DIR/wal. */
typedef int (*k_wal_series_next)(void *ud, uint32_t *id, const k_label_t **l, size_t *n);
int k_wal_checkpoint(const char *waldir, uint32_t n, k_wal_series_next next, void *ud,
                     const keel_log_t *log, keel_err_t *e);

/* Back on the WAL's thread after k_wal_checkpoint(N) succeeded: forgets
 * segments <= N. */
void k_wal_cut_end(k_wal_t *w, uint32_t upto);

/* Path of the WAL directory (owned by w). */
const char *k_wal_dir(const k_wal_t *w);

#endif
