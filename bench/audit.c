/* bench/audit — durable audit appends per second and verification speed.
 *
 * Appends run exactly as keeld runs them: each writer keeps one append
 * outstanding; every loop iteration puts the ready writers' appends in one
 * batch, commits it, and the sync thread fsyncs; a writer goes again only
 * once its append is durable.  The peer, in the same process and on the
 * same disk, is plain SQLite with synchronous=FULL and one transaction per
 * record — what an append costs without group commit.
 *
 * Prints figures; never fails on a time.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "keel/crypto.h"
#include "keel/time.h"
#include "serverkey.h"
#include "store/store.h"

static void rmrf(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

static int mkdata(char *dir, size_t n, k_serverkey_t *key, k_store_t **s, k_audit_t **a,
                  uint64_t cp_records) {
  keel_err_t e = {0};
  k_audit_opts_t o = {cp_records, 10000};
  snprintf(dir, n, "%s/keel-bench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
  if (!mkdtemp(dir) || k_serverkey_create(dir, key, &e) || k_store_open(dir, 1, NULL, s, &e) ||
      k_audit_open(*s, key, &o, NULL, a, &e)) {
    fprintf(stderr, "bench: setup: %s\n", e.msg);
    return -1;
  }
  return 0;
}

static int append_one(k_store_t *s, k_audit_t *a, int writer, uint64_t i) {
  char target[64], rid[32];
  keel_err_t e = {0};
  k_audit_rec_t r = {"user:bench", "bench:write", target, "ok", 201, "", rid,
                     "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"};
  int rc;
  snprintf(target, sizeof target, "object/%d/%llu", writer, (unsigned long long)i);
  snprintf(rid, sizeof rid, "w%d-%llu", writer, (unsigned long long)i);
  k_audit_mark(a);
  if ((rc = k_store_unit_begin(s, &e))) return rc;
  rc = k_audit_append(a, &r, NULL, &e);
  k_store_unit_end(s, rc == 0, NULL);
  if (rc) fprintf(stderr, "bench: append: %s\n", e.msg);
  return rc;
}

/* One run with `writers` concurrent writers for about `seconds`. */
static double bench_group_commit(int writers, double seconds) {
  char dir[256];
  k_serverkey_t key;
  k_store_t *s = NULL;
  k_audit_t *a = NULL;
  k_store_stats_t st;
  uint64_t *wait = calloc((size_t)writers, sizeof *wait), done = 0, batches = 0;
  int64_t t0, end;
  keel_err_t e = {0};
  double rate = 0;

  if (!wait || mkdata(dir, sizeof dir, &key, &s, &a, 1000)) goto out;
  t0 = keel_mono_ns();
  end = t0 + (int64_t)(seconds * 1e9);
  while (keel_mono_ns() < end) {
    uint64_t durable = k_store_durable_gen(s);
    int started = 0;
    for (int w = 0; w < writers; w++) {
      if (wait[w] > durable) continue;
      if (wait[w]) done++;
      if (append_one(s, a, w, done)) goto out;
      wait[w] = UINT64_MAX; /* set below, once the batch has a generation */
      started++;
    }
    if (started) {
      uint64_t g = k_store_visible_gen(s);
      k_audit_maybe_checkpoint(a, keel_now_ms(), 0, &e);
      if (k_store_flush(s, &e)) {
        fprintf(stderr, "bench: flush: %s\n", e.msg);
        goto out;
      }
      k_audit_batch_done(a, 1);
      batches++;
      for (int w = 0; w < writers; w++)
        if (wait[w] == UINT64_MAX) wait[w] = g;
    } else {
      struct pollfd p = {k_store_sync_fd(s), POLLIN, 0};
      poll(&p, 1, 100);
      k_store_sync_poll(s);
    }
  }
  k_store_sync_wait(s, &e);
  for (int w = 0; w < writers; w++)
    if (wait[w] && wait[w] <= k_store_durable_gen(s)) done++;
  {
    double secs = (double)(keel_mono_ns() - t0) / 1e9;
    rate = (double)done / secs;
    k_store_stats(s, &st);
    printf("  group commit, %2d writers: %9.0f durable appends/s  (%llu appends, %llu batches, "
           "%llu fsyncs, mean fsync %.0f us)\n",
           writers, (double)done / secs, (unsigned long long)done, (unsigned long long)batches,
           (unsigned long long)st.sync_seconds.count,
           st.sync_seconds.count ? st.sync_seconds.sum / (double)st.sync_seconds.count * 1e6 : 0);
    fflush(stdout);
  }
out:
  free(wait);
  k_audit_close(a);
  k_store_close(s);
  rmrf(dir);
  return rate;
}

/* The peer: one fsync'd transaction per record. */
static double bench_peer(double seconds) {
  char dir[256], path[300];
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  uint64_t n = 0;
  int64_t t0, end;
  double rate = 0;

  snprintf(dir, sizeof dir, "/var/tmp/keel-peer-XXXXXX");
  if (!mkdtemp(dir)) return 0;
  snprintf(path, sizeof path, "%s/peer.db", dir);
  if (sqlite3_open(path, &db) != SQLITE_OK) goto out;
  /* Same table, indexes and row shape as keeld's audit_log. */
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT "
               "NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, "
               "status INTEGER NOT NULL, detail TEXT NOT NULL, request_id TEXT NOT NULL, "
               "body_digest TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
               "CREATE INDEX audit_actor ON audit_log(actor, seq);"
               "CREATE INDEX audit_action ON audit_log(action, seq);"
               "CREATE INDEX audit_time ON audit_log(time);",
               NULL, NULL, NULL);
  sqlite3_prepare_v2(db,
                     "INSERT INTO audit_log VALUES (?, '2026-11-24T12:00:00.000Z', 'user:bench',"
                     " 'bench:write', ?, 'ok', 201, '', 'w0', "
                     "'0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8', ?, ?)",
                     -1, &st, NULL);
  t0 = keel_mono_ns();
  end = t0 + (int64_t)(seconds * 1e9);
  char prev[KEEL_HASH_HEX] = "0";
  while (keel_mono_ns() < end) {
    char target[64], hash[KEEL_HASH_HEX];
    int len = snprintf(target, sizeof target, "object/0/%llu", (unsigned long long)n + 1);
    keel_hash_hex(hash, target, (size_t)len);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)n + 1);
    sqlite3_bind_text(st, 2, target, len, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, prev, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, hash, -1, SQLITE_STATIC);
    memcpy(prev, hash, sizeof hash);
    if (sqlite3_step(st) != SQLITE_DONE) break;
    sqlite3_reset(st);
    n++;
  }
  rate = (double)n / ((double)(keel_mono_ns() - t0) / 1e9);
  printf("  peer: SQLite synchronous=FULL, same schema, 1 txn per record: %9.0f durable appends/s\n",
         rate);
out:
  sqlite3_finalize(st);
  sqlite3_close(db);
  rmrf(dir);
  return rate;
}

static void bench_verify(uint64_t records) {
  char dir[256];
  k_serverkey_t key;
  k_store_t *s = NULL, *r = NULL;
  k_audit_t *a = NULL;
  k_audit_verdict_t v;
  keel_err_t e = {0};
  int64_t t0;
  double best = 0;

  if (mkdata(dir, sizeof dir, &key, &s, &a, 1000)) goto out;
  for (uint64_t i = 0; i < records; i++) {
    if (append_one(s, a, (int)(i % 64), i)) goto out;
    if (i % 10000 == 9999) {
      k_audit_maybe_checkpoint(a, keel_now_ms(), 0, &e);
      k_store_flush(s, &e);
      k_audit_batch_done(a, 1);
    }
  }
  k_audit_maybe_checkpoint(a, keel_now_ms(), 1, &e);
  k_store_flush(s, &e);
  k_audit_batch_done(a, 1);
  k_store_sync_wait(s, &e);
  if (k_store_reader_open(s, &r, &e)) goto out;
  for (int run = 0; run < 3; run++) {
    double secs, rate;
    t0 = keel_mono_ns();
    if (k_audit_verify(r, key.pk, 0, NULL, &v, &e) || !v.intact) {
      fprintf(stderr, "bench: verify failed: %s %s\n", e.msg, v.reason);
      goto out;
    }
    secs = (double)(keel_mono_ns() - t0) / 1e9;
    rate = (double)v.records / secs;
    if (rate > best) best = rate;
  }
  printf("  verify: %llu records, %llu checkpoints: best of 3 %.0f records/s\n",
         (unsigned long long)v.records, (unsigned long long)v.checkpoints, best);
out:
  k_store_close(r);
  k_audit_close(a);
  k_store_close(s);
  rmrf(dir);
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 3.0;
  uint64_t nverify = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
  double peer;
  double rates[4];
  int ri = 0;

  keel_crypto_init();
  printf("bench/audit (%.1f s per run; data in $TMPDIR or /var/tmp)\n", secs);
  peer = bench_peer(secs);
  for (int w = 1; w <= 64; w *= 4) rates[ri++] = bench_group_commit(w, secs);
  if (peer > 0)
    printf("  ratio to peer: 1 writer %.2fx, 4 writers %.2fx, 16 writers %.2fx, 64 writers %.2fx\n",
           rates[0] / peer, rates[1] / peer, rates[2] / peer, rates[3] / peer);
  bench_verify(nverify);
  return 0;
}
