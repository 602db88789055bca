/* metrics/block.h — immutable on-disk blocks: every series' samples of one
 * time range [mint, maxt).
 *
 * DIR/blocks/<mint>_<maxt>/ holds three files, written in <name>.tmp/,
 * fsync'd, and renamed into place (the rename is the commit point; a
 * leftover .tmp is deleted at open):
 *
 *  chunks     "KTSC" u32 version, then per chunk: uvarint length, the chunk
 *             (K_CHUNK_PACKED, at most K_BLOCK_CHUNK_SAMPLES samples),
 *             u32 CRC32C of the chunk.
 *  index      "KTSI" u32 version; symbols (every label string once, sorted:
 *             uvarint length, bytes, NUL); u32 symbol offset table; series
 *             in label order (uvarint nlabels, nlabels x (uvarint name
 *             symbol, uvarint value symbol), uvarint nchunks, per chunk:
 *             mint, maxt - mint, offset in chunks, delta-coded as varints);
 *             u64 series offset table; postings (u32 count, u32 series
 *             refs, 4-aligned, used in place); label names (u32 name
 *             symbol, u32 nvalues, u64 offset of the values: u32 value
 *             symbol + u64 postings offset each); all-series postings; a
 *             64-byte trailer with the section offsets and the CRC32C of
 *             everything before it.  Symbol ids follow string order, so
 *             comparing ids compares strings.
 *  meta.json  {"version":1,"mint":..,"maxt":..,"level":..,"series":..,
 *             "chunks":..,"samples":..}
 *
 * Reading: both files are mmap'd read-only (the heap holds only the
 * k_block_t); their pages are page cache the kernel may drop.  The index
 * CRC is checked at open, each chunk's CRC when it is decoded.
 *
 * A k_block_t is reference-counted so queriers can hold it while
 * compaction or retention removes it: k_block_doom() deletes the directory
 * at once (the maps stay valid) and the last unref unmaps.
 *
 * Threads: an opened block is immutable; refcounting is atomic, so any
 * thread may read it (compaction reads blocks on a worker while queries
 * read them on the loop).
 */
#ifndef KEELD_METRICS_BLOCK_H
#define KEELD_METRICS_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "metrics/labels.h"
#include "metrics/postings.h"

typedef struct k_block k_block_t;

typedef struct k_block_meta {
  int64_t mint, maxt; /* [mint, maxt) */
  uint32_t level;     /* 1: cut from the head; n: compacted */
  uint64_t nseries, nchunks, nsamples;
  uint64_t bytes;     /* on disk: index + chunks + meta */
} k_block_meta_t;

/* A growable pair of sample arrays.  Owns t and v. */
typedef struct k_samples {
  int64_t *t;
  double *v;
  size_t n, cap;
} k_samples_t;

int k_samples_reserve(k_samples_t *s, size_t n);
void k_samples_free(k_samples_t *s);

/* Opens a block directory.  *out has one reference (k_block_unref). */
int k_block_open(const char *path, const keel_log_t *log, k_block_t **out, keel_err_t *e);
void k_block_ref(k_block_t *b);
void k_block_unref(k_block_t *b);
/* Deletes the block's directory now; readers keep their maps. */
void k_block_doom(k_block_t *b);
const k_block_meta_t *k_block_meta(const k_block_t *b);
const char *k_block_path(const k_block_t *b);

/* Calls fn for each label name of the block (sorted); non-zero stops. */
int k_block_label_names(const k_block_t *b, int (*fn)(void *ud, const char *name), void *ud);

/* Label index over series refs 0..nseries-1 (for k_select_ids). */
const k_lindex_ops_t *k_block_lindex(void);

/* Labels of series ref (strings point into the map: valid while b is
 * referenced); lab has room for cap labels. */
int k_block_labels(const k_block_t *b, uint32_t ref, k_label_t *lab, size_t cap, size_t *n);
/* Appends the series' samples with mint <= t <= maxt to out (time order). */
int k_block_samples(const k_block_t *b, uint32_t ref, int64_t mint, int64_t maxt, k_samples_t *out,
                    keel_err_t *e);
/* Label symbols of the block, sorted (for compaction): count and i-th text. */
size_t k_block_nsyms(const k_block_t *b);
const char *k_block_sym(const k_block_t *b, uint32_t i);
/* Label symbol ids of series ref (pairs name, value), into lab (cap pairs). */
int k_block_label_ids(const k_block_t *b, uint32_t ref, uint32_t *lab, size_t cap, size_t *n);

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct k_bwriter k_bwriter_t;

/* Starts DIR/blocks/<mint>_<maxt>.tmp/.  syms: the block's symbols, sorted
 * and unique, borrowed until finish/abort.  log borrowed. */
int k_bw_open(const char *blocks_dir, int64_t mint, int64_t maxt, uint32_t level,
              const char *const *syms, size_t nsym, const keel_log_t *log, k_bwriter_t **out,
              keel_err_t *e);
/* One series: lab = nlab (name, value) ids into syms; series MUST come in
 * label order, each once; samples sorted, inside [mint, maxt).  A series
 * without samples is skipped. */
int k_bw_add(k_bwriter_t *w, const uint32_t *lab, size_t nlab, const int64_t *t, const double *v,
             size_t n, keel_err_t *e);
/* Writes index and meta, fsyncs, renames into place, fsyncs blocks_dir;
 * path (cap bytes) receives the block's directory.  Frees w either way
 * (on failure the .tmp directory is removed). */
int k_bw_finish(k_bwriter_t *w, char *path, size_t cap, keel_err_t *e);
/* Drops an unfinished block (removes its .tmp directory) and frees w. */
void k_bw_abort(k_bwriter_t *w);

/* Merges blocks src[0..n) (sorted by mint, not overlapping) into one of
 * level `level` over [src[0].mint, src[n-1].maxt).  The sources are left
 * in place (the caller dooms them once the new block is open). */
int k_block_compact(const char *blocks_dir, k_block_t *const *src, size_t n, uint32_t level,
                    const keel_log_t *log, char *path, size_t cap, keel_err_t *e);

/* Removes a directory and its files (block directories are flat). */
int k_block_rmdir(const char *path);

/* Test hook: when set, k_bw_finish stops after step (1 chunks+index
 * written, 2 meta written and fsync'd, 3 renamed) and returns KEEL_EIO as
 * if the process had died there, leaving the files as they are. */
void k_bw_set_crash_point(k_bwriter_t *w, int step);

#endif
