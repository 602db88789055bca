/* audit.h — the tamper-evident audit trail.
 *
 * Records form a hash chain: record N stores the hash of record N-1
 * (prev_hash) and its own hash, BLAKE2b-256 over its canonical JSON (sorted
 * keys, compact, prev_hash included).  Every checkpoint_records records or
 * checkpoint_interval, a checkpoint signs (seq, hash) with the server's
 * Ed25519 key.  Editing, deleting, inserting or reordering a record breaks
 * the chain at that record; re-hashing the chain after an edit breaks the
 * next signed checkpoint; truncating the tail is caught against the running
 * server's head.
 *
 * The engine owns the tables audit_log and audit_checkpoints; nothing else
 * touches them.  Appends ride in the caller's store unit, so a change and
 * its record commit (or vanish) together.
 */
#ifndef KEELD_AUDIT_H
#define KEELD_AUDIT_H

#include <jansson.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/crypto.h"
#include "keel/log.h"
#include "serverkey.h"
#include "store/store.h"

typedef struct k_audit k_audit_t;

#define K_AUDIT_DETAIL_MAX 16384

/* What the caller says happened. All strings borrowed for the call; they are
 * sanitized to printable UTF-8 and capped (512 bytes; detail
 * K_AUDIT_DETAIL_MAX) before hashing.
 * MUST NOT contain secrets (tokens, passwords): the trail is readable. */
typedef struct k_audit_rec {
  const char *actor;       /* "user:alice", "anonymous", "token:tok_x (unverified)" */
  const char *action;      /* "user:create" */
  const char *target;      /* "user/alice" */
  const char *outcome;     /* "ok" | "denied" | "failed" */
  int status;              /* HTTP status of the answer */
  const char *detail;      /* reason of a denial or failure, or "" */
  const char *request_id;
  const char *body_digest; /* hex BLAKE2b-256 of the request body, or "" */
} k_audit_rec_t;

typedef struct k_audit_opts {
  uint64_t checkpoint_records;     /* default 1000 */
  int64_t checkpoint_interval_ms;  /* default 10000 */
} k_audit_opts_t;

/* Loads the head (last seq and hash) and the last checkpoint.  key is
 * borrowed and MUST outlive the engine. */
int k_audit_open(k_store_t *s, const k_serverkey_t *key, const k_audit_opts_t *opts,
                 const keel_log_t *log, k_audit_t **out, keel_err_t *e);
void k_audit_close(k_audit_t *a);

/* Appends one record inside the caller's open store unit. */
int k_audit_append(k_audit_t *a, const k_audit_rec_t *r, uint64_t *seq, keel_err_t *e);

/* Head bookkeeping around units and batches: mark before a unit that may
 * append, restore if the unit is rolled back; after k_store_flush, tell the
 * engine whether the batch committed. */
void k_audit_mark(k_audit_t *a);
void k_audit_restore(k_audit_t *a);
void k_audit_batch_done(k_audit_t *a, int committed);

/* Writes a checkpoint (in its own unit) when one is due at now_ms, or, with
 * force, whenever records were appended since the last one (shutdown). */
int k_audit_maybe_checkpoint(k_audit_t *a, int64_t now_ms, int force, keel_err_t *e);

/* Committed head: what a verifier reading the database should find. */
void k_audit_head(const k_audit_t *a, uint64_t *seq, char hash[KEEL_HASH_HEX]);
uint64_t k_audit_appended(const k_audit_t *a); /* records appended since start */

/* Canonical JSON of a stored record (hash input).  Used by the engine and
 * by tests that cross-check it against jansson's JSON_SORT_KEYS output. */
typedef struct k_audit_row {
  uint64_t seq;
  const char *time, *actor, *action, *target, *outcome, *detail, *request_id, *body_digest,
      *prev_hash;
  int64_t status;
} k_audit_row_t;
int k_audit_canonical(keel_buf_t *out, const k_audit_row_t *r);

/* ---- verification (pure: runs on any thread with its own reader) ----------- */

typedef struct k_audit_verdict {
  int intact;
  uint64_t records;      /* records read */
  uint64_t checkpoints;  /* checkpoints whose signature and hash held */
  uint64_t first_bad;    /* seq of the first bad record (0 when intact) */
  char reason[256];
  uint64_t head_seq;
  char head_hash[KEEL_HASH_HEX];
} k_audit_verdict_t;

/* Walks the chain and checkpoints in reader.  expect_seq / expect_hash:
 * the head the writer had committed when verification was asked for (0 /
 * NULL when unknown, e.g. offline).  Returns 0 when the walk ran (look at
 * v->intact), < 0 when the store could not be read. */
int k_audit_verify(k_store_t *reader, const uint8_t pk[32], uint64_t expect_seq,
                   const char *expect_hash, k_audit_verdict_t *v, keel_err_t *e);

/* ---- queries ------------------------------------------------------------- */

typedef struct k_audit_query {
  int64_t since_ms;   /* 0 = no bound */
  const char *actor;  /* NULL = any */
  const char *action;
  uint64_t after_seq; /* cursor */
  int limit;
} k_audit_query_t;

/* *items: new JSON array of records (caller owns); *next: the cursor for
 * the next page, or 0 on the last page. */
int k_audit_list(k_store_t *s, const k_audit_query_t *q, json_t **items, uint64_t *next,
                 keel_err_t *e);

#endif
