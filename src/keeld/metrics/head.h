/* metrics/head.h — the TSDB's in-memory part: every active series, its
 * label index, and its samples since the last block cut.
 *
 * Memory is bounded by the active series, not by history: a series holds
 * its labels (symbol ids), its open XOR chunk (at most
 * K_HEAD_CHUNK_SAMPLES samples) and one 16-byte reference per closed
 * chunk.  Closed chunks are spilled to DIR/chunks_head/ (append-only files,
 * mmap'd for reading, never fsync'd: the WAL is the durable copy, and the
 * directory is emptied at open), so their bytes live in the page cache,
 * where the kernel may drop them, not on the heap.  A block cut moves
 * whole closed chunks out of the head (k_head_truncate).
 *
 * A chunk never crosses a multiple of block_ms (it is closed at 120 samples
 * or when a sample reaches the next boundary), so a block cut takes whole
 * chunks.
 *
 * Threads: the head belongs to one thread (keeld's loop), except what
 * k_head_snapshot hands out, which another thread may read until
 * k_head_truncate or k_hsnap_free (see there).
 */
#ifndef KEELD_METRICS_HEAD_H
#define KEELD_METRICS_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "metrics/chunk.h"
#include "metrics/labels.h"
#include "metrics/postings.h"

typedef struct k_head k_head_t;

/* A closed chunk: its first timestamp and where its bytes are
 * (head chunk file sequence << 40 | offset). */
typedef struct k_hcref {
  int64_t mint;
  uint64_t ref;
} k_hcref_t;

/* A series.  Fields other than id, nlab and lab belong to the head's
 * thread. */
typedef struct k_hseries {
  uint64_t hash;     /* of the label set */
  uint32_t id;       /* series ref: WAL records and postings use it */
  uint16_t nlab;
  uint8_t logged;    /* its series record is in the WAL */
  uint8_t _pad;
  int64_t last_t;    /* newest accepted timestamp (staged or appended); INT64_MIN: none */
  int64_t open_end;  /* the open chunk closes at a sample this new (its block boundary) */
  k_xorapp_t open;   /* open chunk */
  k_hcref_t *closed; /* closed chunks, oldest first */
  uint32_t nclosed, capclosed;
  uint32_t lab[];    /* nlab (name, value) symbol id pairs, sorted by name; immutable */
} k_hseries_t;

typedef struct k_head_stats {
  uint64_t series;
  uint64_t chunks;      /* closed + open */
  uint64_t mem_bytes;   /* heap held by the head (series, index, symbols, open chunks) */
  uint64_t file_bytes;  /* closed chunks in chunks_head/ */
  uint64_t symbols;
} k_head_stats_t;

/* dir: the TSDB directory (chunks_head/ is emptied and used).  log borrowed. */
int k_head_new(const char *dir, int64_t block_ms, const keel_log_t *log, k_head_t **out,
               keel_err_t *e);
void k_head_free(k_head_t *h);

/* Hash of a label set (the same for equal sets). */
uint64_t k_labels_hash(const k_label_t *l, size_t n);

/* The series of labels l[0..n) (sorted by name, names unique, no empty
 * values), created when missing (*created = 1; not yet logged).  With id 0
 * a new series gets the next id; with id != 0 (WAL replay) it gets that one
 * (KEEL_ECONFLICT if the id is taken by other labels).  KEEL_EINVAL names a
 * bad label.  The series stays owned by the head. */
int k_head_get_or_create(k_head_t *h, const k_label_t *l, size_t n, uint32_t id,
                         k_hseries_t **out, int *created, keel_err_t *e);
/* Looks up n label sets at once (hashes[i] = k_labels_hash of sets[i]):
 * out[i] is the series, or NULL when there is none yet.  Faster than n
 * single lookups: the table and series accesses of several lookups are
 * fetched from memory in parallel (software pipelining). */
void k_head_find_many(const k_head_t *h, const k_labels_t *sets, const uint64_t *hashes, size_t n,
                      k_hseries_t **out);
/* NULL when no live series has that id. */
k_hseries_t *k_head_by_id(const k_head_t *h, uint32_t id);
/* A symbol id's text (valid while a series uses it). */
const char *k_head_sym(const k_head_t *h, uint32_t id);

/* Appends to the series' open chunk, closing it first when full or when t
 * reaches its block boundary.  The caller checked ordering. */
int k_head_append(k_head_t *h, k_hseries_t *s, int64_t t, double v);

/* Bytes of a closed chunk (borrowed until the next head change). */
int k_head_chunk(const k_head_t *h, uint64_t ref, const uint8_t **p, size_t *len);

/* Calls fn for each label name in the head (any order); fn's non-zero
 * stops and is returned. */
int k_head_label_names(const k_head_t *h, int (*fn)(void *ud, const char *name), void *ud);

/* The label index for k_select_ids. */
const k_lindex_ops_t *k_head_lindex(void);

/* Times of the samples in the head: INT64_MAX / INT64_MIN when empty. */
int64_t k_head_mint(const k_head_t *h);
int64_t k_head_maxt(const k_head_t *h);
/* Next id a new series would get (WAL replay sets it past every id seen). */
void k_head_bump_next_id(k_head_t *h, uint32_t id);
/* Number of live series and iteration over them (order unspecified; the
 * head MUST NOT change while iterating). */
size_t k_head_nseries(const k_head_t *h);
k_hseries_t *k_head_series_at(const k_head_t *h, size_t i);

void k_head_stats(const k_head_t *h, k_head_stats_t *out);

/* ---- block cut ------------------------------------------------------------------ */

/* What a block cut reads on another thread: the series with closed chunks
 * starting before upto, their chunk refs, and the symbol texts and chunk
 * file maps they need.  Made on the head's thread by k_head_snapshot, which
 * first closes every open chunk lying entirely before upto (a series that
 * went quiet) and flushes the chunk files.
 *
 * Contract: until k_head_truncate(h, snap) or k_hsnap_free, the head keeps
 * every series, symbol text and chunk file the snapshot names; the head's
 * thread may go on appending and creating series meanwhile.  The snapshot's
 * own arrays are immutable, so another thread reads them without locks. */
typedef struct k_hsnap {
  int64_t upto;
  size_t nseries;
  k_hseries_t **series;   /* borrowed: only nlab/lab/id are read off-thread */
  uint32_t *first;        /* series i's refs are refs[first[i] .. first[i+1]) */
  uint64_t *refs;
  size_t nrefs;
  const char **sym;       /* symbol id -> text (copy of the table) */
  size_t nsym;
  k_hseries_t **live;     /* every series in the head when it was made (WAL checkpoint) */
  size_t nlive;
  /* chunk file maps: seq -> base (copy) */
  uint32_t *seg_seq;
  const uint8_t **seg_base;
  size_t nseg;
} k_hsnap_t;

int k_head_snapshot(k_head_t *h, int64_t upto, k_hsnap_t **out, keel_err_t *e);
/* Chunk bytes through a snapshot (any thread). */
int k_hsnap_chunk(const k_hsnap_t *s, uint64_t ref, const uint8_t **p, size_t *len);
/* After the cut is durable: drops the snapshot's chunks from the head,
 * deletes chunk files holding nothing newer than upto, frees series left
 * without samples (none staged: last_t < upto), and frees snap.  From now
 * on the head refuses nothing by itself: the caller keeps samples >= upto. */
void k_head_truncate(k_head_t *h, k_hsnap_t *snap);
/* Frees a snapshot without truncating (a failed cut). */
void k_hsnap_free(k_head_t *h, k_hsnap_t *snap);
/* Frees series without samples and none staged (last_t < before). */
void k_head_gc(k_head_t *h, int64_t before);

#endif
