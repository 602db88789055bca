/* metrics/tsdb_int.h — the k_tsdb_t structure, shared by tsdb.c (writing,
 * maintenance) and query.c (the querier).  Not for other modules. */
#ifndef KEELD_METRICS_TSDB_INT_H
#define KEELD_METRICS_TSDB_INT_H

#include "metrics/block.h"
#include "metrics/head.h"
#include "metrics/tsdb.h"
#include "metrics/wal.h"

struct tsdb_job;

struct k_tsdb {
  const keel_log_t *log;
  char *dir, *blocks_dir;
  k_tsdb_opts_t opts;
  k_head_t *head;
  k_wal_t *wal;
  k_block_t **blocks; /* sorted by mint; one reference each */
  size_t nblocks, capblocks;
  int64_t min_valid; /* end of the newest cut range: nothing older is accepted */

  /* the open batch */
  k_wsample_t *staged;       /* what the WAL gets */
  k_hseries_t **staged_s;    /* and the series of each, for the head */
  size_t nstaged, capstaged;
  uint32_t *unlogged; /* series created but not yet in the WAL */
  size_t nunlogged, capunlogged;
  uint64_t next_gen, batch_gen, committed_gen, failed_gen;
  k_hseries_t *last_s; /* the series k_tsdb_ref returned last (NULL after a head GC) */
  int64_t future_limit; /* newest timestamp accepted: wall clock + max_future_ms, refreshed
                           at each commit and before refusing */

  uint64_t samples_appended, ooo, oob, commits, commit_failures, cuts, compactions, expired,
      maint_failures, apply_failures;

  struct tsdb_job *job; /* the running maintenance job, if any */
  int crash_point, crashed;
};

/* The querier (query.c). */
int k_tsdb_querier_new(k_tsdb_t *db, k_querier_t **q, keel_err_t *e);

#endif
