/* Unit tests for keeld's audit trail (audit/audit.h): the hash chain, the
 * canonical form against jansson, sanitizing and capping of fields, signed
 * checkpoints, and k_audit_verify against tampering done with raw SQL
 * through the store — on a small chain and on one long enough (>= 120,000
 * records) for the parallel ranged verification, tampered in its second
 * range and at the seam. */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "audit/audit.h"
#include "keel/buf.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "serverkey.h"
#include "store/store.h"

#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

typedef struct fx {
  char dir[256];
  k_serverkey_t key;
  k_store_t *s;
  k_audit_t *a;
  int64_t now; /* the clock handed to k_audit_maybe_checkpoint */
} fx_t;

static fx_t *fx_new(uint64_t cp_records, int64_t cp_interval_ms) {
  fx_t *f = calloc(1, sizeof *f);
  keel_err_t e = {0};
  k_audit_opts_t o = {cp_records, cp_interval_ms};
  assert_non_null(f);
  assert_int_equal(kt_mkdtemp(f->dir, sizeof f->dir), 0);
  if (k_serverkey_create(f->dir, &f->key, &e) || k_store_open(f->dir, 1, NULL, &f->s, &e) ||
      k_audit_open(f->s, &f->key, &o, NULL, &f->a, &e))
    fail_msg("setup: %s", e.msg);
  f->now = keel_now_ms();
  return f;
}

static void fx_free(fx_t *f) {
  if (!f) return;
  k_audit_close(f->a);
  k_store_close(f->s);
  kt_rmrf(f->dir);
  free(f);
}

static int group_setup(void **state) { return keel_crypto_init() == 0 ? 0 : -1; }

/* ---- helpers --------------------------------------------------------------------- */

static void unit_begin(k_store_t *s) {
  keel_err_t e = {0};
  if (k_store_unit_begin(s, &e)) fail_msg("unit_begin: %s", e.msg);
}

static void unit_end(k_store_t *s, int ok) {
  keel_err_t e = {0};
  if (k_store_unit_end(s, ok, &e)) fail_msg("unit_end: %s", e.msg);
}

/* Commits the batch and tells the engine, as keeld's loop does. */
static void commit(fx_t *f) {
  keel_err_t e = {0};
  if (k_store_flush(f->s, &e)) fail_msg("flush: %s", e.msg);
  k_audit_batch_done(f->a, 1);
}

static void append_rec(fx_t *f, uint64_t i) {
  char target[64], rid[32], detail[64];
  keel_err_t e = {0};
  k_audit_rec_t r = {
      "user:alice", i % 3 ? "user:create" : "token:revoke",
      target,       "ok",
      201,          detail,
      rid,          "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"};
  uint64_t seq = 0;
  snprintf(target, sizeof target, "user/u%llu", (unsigned long long)i);
  snprintf(rid, sizeof rid, "req-%llu", (unsigned long long)i);
  detail[0] = '\0';
  if (i % 7 == 0) snprintf(detail, sizeof detail, "note %llu", (unsigned long long)i);
  if (k_audit_append(f->a, &r, &seq, &e)) fail_msg("append %llu: %s", (unsigned long long)i, e.msg);
}

/* Appends n records, per_unit to a unit, units_per_batch units to a batch;
 * a checkpoint is considered after every unit (outside it). */
static void append_many(fx_t *f, uint64_t n, uint64_t per_unit, int units_per_batch) {
  keel_err_t e = {0};
  uint64_t done = 0;
  int units = 0;
  while (done < n) {
    uint64_t k = n - done < per_unit ? n - done : per_unit;
    k_audit_mark(f->a);
    unit_begin(f->s);
    for (uint64_t j = 0; j < k; j++) append_rec(f, done + j + 1);
    unit_end(f->s, 1);
    done += k;
    if (k_audit_maybe_checkpoint(f->a, f->now, 0, &e)) fail_msg("checkpoint: %s", e.msg);
    if (++units == units_per_batch || done == n) {
      commit(f);
      units = 0;
    }
  }
}

/* Runs one write statement in a unit of its own and commits it. */
static void raw(fx_t *f, const char *sql, const k_val_t *args, int nargs) {
  keel_err_t e = {0};
  unit_begin(f->s);
  if (k_store_exec(f->s, sql, args, nargs, NULL, NULL, &e)) fail_msg("%s: %s", sql, e.msg);
  unit_end(f->s, 1);
  if (k_store_flush(f->s, &e)) fail_msg("flush: %s", e.msg);
}

static k_audit_verdict_t verify_pk(fx_t *f, const uint8_t *pk, uint64_t expect_seq,
                                   const char *expect_hash) {
  k_audit_verdict_t v;
  keel_err_t e = {0};
  k_store_t *r = NULL;
  if (k_store_reader_open(f->s, &r, &e)) fail_msg("reader: %s", e.msg);
  if (k_audit_verify(r, pk, expect_seq, expect_hash, &v, &e)) fail_msg("verify: %s", e.msg);
  k_store_close(r);
  return v;
}

/* Verifies against the engine's committed head, as GET /v1/audit/verify does. */
static k_audit_verdict_t verify(fx_t *f) {
  uint64_t seq;
  char hash[KEEL_HASH_HEX];
  k_audit_head(f->a, &seq, hash);
  return verify_pk(f, f->key.pk, seq, hash);
}

static void expect_intact(const k_audit_verdict_t *v, uint64_t records) {
  if (!v->intact)
    fail_msg("chain reported broken at %llu: %s", (unsigned long long)v->first_bad, v->reason);
  assert_int_equal(v->first_bad, 0);
  assert_int_equal(v->records, records);
  assert_int_equal(v->head_seq, records);
}

static void expect_bad(const k_audit_verdict_t *v, uint64_t seq, const char *reason_part) {
  if (v->intact)
    fail_msg("tampering not detected (expected first bad %llu)", (unsigned long long)seq);
  if (v->first_bad != seq)
    fail_msg("first bad seq %llu, expected %llu (%s)", (unsigned long long)v->first_bad,
             (unsigned long long)seq, v->reason);
  if (reason_part && !strstr(v->reason, reason_part))
    fail_msg("reason '%s' does not mention '%s'", v->reason, reason_part);
}

static void verify_bad(fx_t *f, uint64_t seq, const char *reason_part) {
  k_audit_verdict_t v = verify(f);
  expect_bad(&v, seq, reason_part);
}

static void verify_intact(fx_t *f, uint64_t records) {
  k_audit_verdict_t v = verify(f);
  expect_intact(&v, records);
}

/* One stored record, copied out. */
typedef struct row {
  int64_t seq, status;
  char f[11][600]; /* time actor action target outcome detail request_id body_digest prev hash */
} row_t;

enum { F_TIME, F_ACTOR, F_ACTION, F_TARGET, F_OUTCOME, F_DETAIL, F_RID, F_DIGEST, F_PREV, F_HASH };

typedef struct rows {
  row_t *v;
  size_t n, cap;
} rows_t;

static int rows_cb(void *ud, const k_val_t *c, int n) {
  rows_t *rs = ud;
  row_t *r;
  static const int col[] = {1, 2, 3, 4, 5, 7, 8, 9, 10, 11};
  assert_int_equal(n, 12);
  if (rs->n == rs->cap) {
    rs->cap = rs->cap ? rs->cap * 2 : 16;
    rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
    assert_non_null(rs->v);
  }
  r = &rs->v[rs->n++];
  memset(r, 0, sizeof *r);
  r->seq = c[0].i;
  r->status = c[6].i;
  for (int j = 0; j < 10; j++) {
    assert_int_equal(c[col[j]].type, K_VAL_TEXT);
    snprintf(r->f[j], sizeof r->f[j], "%s", c[col[j]].s);
  }
  return 0;
}

#define ROW_COLS                                                                        \
  "seq, time, actor, action, target, outcome, status, detail, request_id, body_digest," \
  " prev_hash, hash"

static rows_t read_rows(fx_t *f, int64_t lo, int64_t hi) {
  rows_t rs = {0};
  keel_err_t e = {0};
  k_val_t a[] = {K_INT(lo), K_INT(hi)};
  if (k_store_exec(f->s,
                   "SELECT " ROW_COLS " FROM audit_log WHERE seq >= ? AND seq <= ? ORDER BY seq", a,
                   2, rows_cb, &rs, &e))
    fail_msg("read rows: %s", e.msg);
  return rs;
}

static row_t read_row(fx_t *f, int64_t seq) {
  rows_t rs = read_rows(f, seq, seq);
  row_t r;
  assert_int_equal(rs.n, 1);
  r = rs.v[0];
  free(rs.v);
  return r;
}

static k_audit_row_t as_audit_row(const row_t *r) {
  k_audit_row_t a = {(uint64_t)r->seq, r->f[F_TIME],    r->f[F_ACTOR],  r->f[F_ACTION],
                     r->f[F_TARGET],   r->f[F_OUTCOME], r->f[F_DETAIL], r->f[F_RID],
                     r->f[F_DIGEST],   r->f[F_PREV],    r->status};
  return a;
}

static void hash_of(const k_audit_row_t *r, char out[KEEL_HASH_HEX]) {
  keel_buf_t b;
  keel_buf_init(&b, 1 << 16);
  assert_int_equal(k_audit_canonical(&b, r), 0);
  keel_hash_hex(out, b.data, b.len);
  keel_buf_free(&b);
}

/* Rewrites prev_hash and hash of every record in [lo, hi] so the stored
 * chain is self-consistent again from lo on (what a careful forger does). */
static void rehash(fx_t *f, int64_t lo, int64_t hi) {
  char prev[KEEL_HASH_HEX];
  /* Hashes are exactly KEEL_HASH_HEX - 1 characters. */
  snprintf(prev, sizeof prev, "%.64s", lo > 1 ? read_row(f, lo - 1).f[F_HASH] : GENESIS);
  for (int64_t at = lo; at <= hi; at += 500) {
    rows_t rs = read_rows(f, at, at + 499 < hi ? at + 499 : hi);
    unit_begin(f->s);
    for (size_t i = 0; i < rs.n; i++) {
      k_audit_row_t ar;
      char h[KEEL_HASH_HEX];
      keel_err_t e = {0};
      snprintf(rs.v[i].f[F_PREV], sizeof rs.v[i].f[F_PREV], "%s", prev);
      ar = as_audit_row(&rs.v[i]);
      hash_of(&ar, h);
      {
        k_val_t a[] = {K_TEXT(prev), K_TEXT(h), K_INT(rs.v[i].seq)};
        if (k_store_exec(f->s, "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", a, 3,
                         NULL, NULL, &e))
          fail_msg("rehash: %s", e.msg);
      }
      memcpy(prev, h, sizeof prev);
    }
    unit_end(f->s, 1);
    commit(f);
    free(rs.v);
  }
}

/* Inserts a record at seq, linked to the record before it, with a hash that
 * matches its contents (junk_hash: a wrong one). */
static void forge(fx_t *f, int64_t seq, int junk_hash) {
  row_t r = {0};
  k_audit_row_t ar;
  char h[KEEL_HASH_HEX];
  r.seq = seq;
  r.status = 200;
  snprintf(r.f[F_TIME], 600, "2026-01-01T00:00:00.000Z");
  snprintf(r.f[F_ACTOR], 600, "user:mallory");
  snprintf(r.f[F_ACTION], 600, "user:update");
  snprintf(r.f[F_TARGET], 600, "user/mallory");
  snprintf(r.f[F_OUTCOME], 600, "ok");
  snprintf(r.f[F_PREV], 600, "%s", seq > 1 ? read_row(f, seq - 1).f[F_HASH] : GENESIS);
  ar = as_audit_row(&r);
  hash_of(&ar, h);
  if (junk_hash) h[0] = h[0] == 'a' ? 'b' : 'a';
  {
    k_val_t a[] = {K_INT(seq),
                   K_TEXT(r.f[F_TIME]),
                   K_TEXT(r.f[F_ACTOR]),
                   K_TEXT(r.f[F_ACTION]),
                   K_TEXT(r.f[F_TARGET]),
                   K_TEXT(r.f[F_OUTCOME]),
                   K_INT(r.status),
                   K_TEXT(""),
                   K_TEXT(""),
                   K_TEXT(""),
                   K_TEXT(r.f[F_PREV]),
                   K_TEXT(h)};
    raw(f, "INSERT INTO audit_log(" ROW_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", a,
        12);
  }
}

/* Moves records seq >= from up by one, leaving a hole at from. */
static void shift_up(fx_t *f, int64_t from) {
  k_val_t a[] = {K_INT(from)};
  raw(f, "UPDATE audit_log SET seq = -(seq + 1) WHERE seq >= ?", a, 1);
  raw(f, "UPDATE audit_log SET seq = -seq WHERE seq < 0", NULL, 0);
}

static void swap_seqs(fx_t *f, int64_t x, int64_t y) {
  k_val_t a[] = {K_INT(x)}, b[] = {K_INT(x), K_INT(y)}, c[] = {K_INT(y)};
  raw(f, "UPDATE audit_log SET seq = -1 WHERE seq = ?", a, 1);
  raw(f, "UPDATE audit_log SET seq = ? WHERE seq = ?", b, 2);
  raw(f, "UPDATE audit_log SET seq = ? WHERE seq = -1", c, 1);
}

/* Tampering is undone from a stash of the rows it may touch. */
static void stash_init(fx_t *f) {
  raw(f, "CREATE TABLE stash AS SELECT * FROM audit_log WHERE 0", NULL, 0);
  raw(f, "CREATE TABLE cp_stash AS SELECT * FROM audit_checkpoints WHERE 0", NULL, 0);
}

/* Saves rows [lo, hi] (adding to what is saved) and the checkpoints. */
static void stash(fx_t *f, int64_t lo, int64_t hi) {
  k_val_t a[] = {K_INT(lo), K_INT(hi)};
  raw(f, "INSERT INTO stash SELECT * FROM audit_log WHERE seq >= ? AND seq <= ?", a, 2);
  raw(f, "DELETE FROM cp_stash", NULL, 0);
  raw(f, "INSERT INTO cp_stash SELECT * FROM audit_checkpoints", NULL, 0);
}

/* Puts back what stash saved.  Rows in [lo, hi] that were not saved go
 * (forged or shifted ones), and so do negative seqs. */
static void unstash(fx_t *f, int64_t lo, int64_t hi) {
  k_val_t a[] = {K_INT(lo), K_INT(hi)};
  raw(f,
      "DELETE FROM audit_log WHERE (seq >= ? AND seq <= ?) OR seq <= 0"
      " OR seq IN (SELECT seq FROM stash)",
      a, 2);
  raw(f, "INSERT INTO audit_log SELECT * FROM stash", NULL, 0);
  raw(f, "DELETE FROM stash", NULL, 0);
  raw(f, "DELETE FROM audit_checkpoints", NULL, 0);
  raw(f, "INSERT INTO audit_checkpoints SELECT * FROM cp_stash", NULL, 0);
}

/* ---- canonical form vs jansson ------------------------------------------------------ */

static json_t *row_json(const k_audit_row_t *r) {
  json_t *o =
      json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s}", "seq", (json_int_t)r->seq, "time",
                r->time, "actor", r->actor, "action", r->action, "target", r->target, "outcome",
                r->outcome, "status", (json_int_t)r->status, "detail", r->detail, "request_id",
                r->request_id, "body_digest", r->body_digest, "prev_hash", r->prev_hash);
  assert_non_null(o); /* jansson takes only valid UTF-8 */
  return o;
}

static void expect_canonical_matches_jansson(const k_audit_row_t *r) {
  keel_buf_t b;
  json_t *o = row_json(r);
  char *want = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
  keel_buf_init(&b, 1 << 20);
  assert_int_equal(k_audit_canonical(&b, r), 0);
  assert_non_null(want);
  if (b.len != strlen(want) || memcmp(b.data, want, b.len))
    fail_msg("canonical differs from jansson:\n  keel:    %.*s\n  jansson: %s", (int)b.len, b.data,
             want);
  free(want);
  json_decref(o);
  keel_buf_free(&b);
}

static void test_canonical_matches_jansson(void **state) {
  char ctl[64], all[300], longs[3000];
  size_t n = 0;
  (void)state;
  for (int c = 1; c < 0x20; c++) ctl[n++] = (char)c;
  ctl[n++] = 0x7f;
  ctl[n] = '\0';
  /* every printable ASCII byte, plus multi-byte UTF-8 of each length */
  n = 0;
  for (int c = 0x20; c < 0x7f; c++) all[n++] = (char)c;
  memcpy(all + n, "\xc3\xa9\xe2\x80\xa8\xe2\x80\xa9\xef\xbf\xbd\xf0\x9f\x98\x80", 15);
  all[n + 15] = '\0';
  memset(longs, 'x', sizeof longs - 1);
  longs[sizeof longs - 1] = '\0';

  {
    k_audit_row_t r = {1,
                       "2026-11-24T12:00:00.000Z",
                       "user:alice",
                       "user:create",
                       "user/bob",
                       "ok",
                       "",
                       "req-1",
                       "",
                       GENESIS,
                       201};
    expect_canonical_matches_jansson(&r);
  }
  {
    k_audit_row_t r = {42,
                       "t",
                       "\"quoted\" and \\backslashed\\ \\\"",
                       "a/b</script>",
                       ctl,
                       all,
                       "line1\nline2\ttab\r\b\f",
                       "\\u0000 not an escape",
                       "",
                       "",
                       -1};
    expect_canonical_matches_jansson(&r);
  }
  {
    k_audit_row_t r = {
        UINT64_C(9007199254740993), "", "", "", "", "", "", "", "", longs, INT64_MIN};
    expect_canonical_matches_jansson(&r);
  }
  {
    k_audit_row_t r = {0,      "\xf4\x8f\xbf\xbf", "\x7f", "\x1f", "\x01", " ", "{}", "[]", ":,",
                       "null", INT64_MAX};
    expect_canonical_matches_jansson(&r);
  }
}

/* Hostile input through k_audit_append: stored sanitized and capped, and
 * the stored hash is BLAKE2b of jansson's sorted compact dump of the row. */
static void test_append_sanitizes_and_hashes(void **state) {
  fx_t *f = fx_new(1000, 1000000);
  char big[2000], straddle[600];
  const char *bad_utf8 =
      "a\xff"
      "b\xc3"
      "c\xe2\x82"
      "d\xed\xa0\x80"
      "e\xc0\xaf"
      "f\xf5\x80\x80\x80";
  const char *ctl = "x\x01y\x1b[31mz\r\n\tq\x7fw";
  (void)state;
  memset(big, 'B', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  /* 511 ASCII bytes then a 2-byte character across the 512-byte cap */
  memset(straddle, 'S', 511);
  memcpy(straddle + 511, "\xc3\xa9tail", 7);

  k_audit_rec_t recs[] = {
      {"user:\"evil\\\"", "user:create", "user/\"x\"\\y", "ok", 201, "", "r1", ""},
      {bad_utf8, bad_utf8, bad_utf8, "failed", 400, bad_utf8, bad_utf8, bad_utf8},
      {ctl, "a", ctl, "denied", 403, ctl, "r3", ""},
      /* detail has its own, larger cap (K_AUDIT_DETAIL_MAX); the row
       * buffers here hold 600 bytes, so it is left out of this record */
      {big, big, big, big, 500, "", big, big},
      {"token:tok_x (unverified)", "t", straddle, "ok", 200, straddle, "r5", ""},
      {NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL}, /* NULL fields are "" */
  };
  size_t nrec = sizeof recs / sizeof *recs;

  k_audit_mark(f->a);
  unit_begin(f->s);
  for (size_t i = 0; i < nrec; i++) {
    keel_err_t e = {0};
    uint64_t seq = 0;
    if (k_audit_append(f->a, &recs[i], &seq, &e)) fail_msg("append %zu: %s", i, e.msg);
    assert_int_equal(seq, i + 1);
  }
  unit_end(f->s, 1);
  commit(f);

  rows_t rs = read_rows(f, 1, 100);
  assert_int_equal(rs.n, nrec);
  for (size_t i = 0; i < rs.n; i++) {
    row_t *r = &rs.v[i];
    k_audit_row_t ar = as_audit_row(r);
    json_t *o;
    char *dump, h[KEEL_HASH_HEX];
    for (int j = F_ACTOR; j <= F_DIGEST; j++) {
      const unsigned char *p = (const unsigned char *)r->f[j];
      assert_true(strlen(r->f[j]) <= (j == F_DETAIL ? K_AUDIT_DETAIL_MAX : 512));
      for (; *p; p++)
        if ((*p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7f)
          fail_msg("record %zu field %d keeps control byte 0x%02x", i + 1, j, *p);
    }
    /* time is RFC 3339 UTC with milliseconds */
    assert_int_equal(strlen(r->f[F_TIME]), KEEL_TIME_STRLEN - 1);
    assert_int_equal(r->f[F_TIME][10], 'T');
    assert_int_equal(r->f[F_TIME][KEEL_TIME_STRLEN - 2], 'Z');
    o = row_json(&ar); /* fails unless every field is valid UTF-8 */
    dump = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    keel_hash_hex(h, dump, strlen(dump));
    assert_string_equal(h, r->f[F_HASH]);
    expect_canonical_matches_jansson(&ar);
    free(dump);
    json_decref(o);
  }
  /* quotes and backslashes are kept as data */
  assert_string_equal(rs.v[0].f[F_ACTOR], "user:\"evil\\\"");
  /* each invalid byte became '?' (sanitize's documented rule) */
  assert_string_equal(rs.v[1].f[F_ACTOR], "a?b?c??d???e??f????");
  assert_string_equal(rs.v[2].f[F_ACTOR], "x?y?[31mz?\n\tq?w");
  /* capped at 512 bytes */
  assert_int_equal(strlen(rs.v[3].f[F_ACTOR]), 512);
  assert_int_equal(strlen(rs.v[3].f[F_OUTCOME]), 512);
  assert_int_equal(rs.v[3].status, 500);
  /* the cap cut a character in half: the half is replaced, nothing more */
  assert_int_equal(strlen(rs.v[4].f[F_TARGET]), 512);
  assert_int_equal((unsigned char)rs.v[4].f[F_TARGET][511], '?');
  assert_int_equal(rs.v[4].f[F_TARGET][510], 'S');
  assert_string_equal(rs.v[5].f[F_ACTOR], "");
  assert_string_equal(rs.v[5].f[F_DIGEST], "");
  free(rs.v);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, nrec);
  }
  fx_free(f);
}

/* ---- chain ------------------------------------------------------------------------------ */

static void test_chain_links(void **state) {
  fx_t *f = fx_new(1000, 1000000);
  uint64_t seq;
  char head[KEEL_HASH_HEX];
  (void)state;

  /* an empty trail verifies, head is genesis */
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 0);
    assert_string_equal(v.head_hash, GENESIS);
  }
  k_audit_head(f->a, &seq, head);
  assert_int_equal(seq, 0);
  assert_string_equal(head, GENESIS);

  append_many(f, 50, 7, 2);
  assert_int_equal(k_audit_appended(f->a), 50);
  rows_t rs = read_rows(f, 1, 1000);
  assert_int_equal(rs.n, 50);
  assert_string_equal(rs.v[0].f[F_PREV], GENESIS);
  for (size_t i = 0; i < rs.n; i++) {
    k_audit_row_t ar = as_audit_row(&rs.v[i]);
    char h[KEEL_HASH_HEX];
    assert_int_equal(rs.v[i].seq, (int64_t)i + 1);
    if (i) assert_string_equal(rs.v[i].f[F_PREV], rs.v[i - 1].f[F_HASH]);
    hash_of(&ar, h);
    assert_string_equal(h, rs.v[i].f[F_HASH]);
    assert_int_equal(strlen(rs.v[i].f[F_HASH]), 64);
  }
  k_audit_head(f->a, &seq, head);
  assert_int_equal(seq, 50);
  assert_string_equal(head, rs.v[49].f[F_HASH]);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 50);
    assert_string_equal(v.head_hash, head);
  }
  free(rs.v);
  fx_free(f);
}

static void test_rolled_back_unit_restores_head(void **state) {
  fx_t *f = fx_new(1000, 1000000);
  uint64_t seq;
  char head[KEEL_HASH_HEX], head2[KEEL_HASH_HEX];
  (void)state;
  append_many(f, 3, 3, 1);
  k_audit_head(f->a, &seq, head);

  /* a unit that appends and is then undone leaves no trace in the chain */
  k_audit_mark(f->a);
  unit_begin(f->s);
  append_rec(f, 100);
  append_rec(f, 101);
  unit_end(f->s, 0);
  k_audit_restore(f->a);
  /* an uncommitted append does not move the committed head */
  k_audit_mark(f->a);
  unit_begin(f->s);
  append_rec(f, 4);
  unit_end(f->s, 1);
  k_audit_head(f->a, &seq, head2);
  assert_int_equal(seq, 3);
  assert_string_equal(head2, head);
  commit(f);
  k_audit_head(f->a, &seq, head2);
  assert_int_equal(seq, 4);
  assert_string_equal(read_row(f, 4).f[F_PREV], head);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 4);
  }
  fx_free(f);
}

static void test_reopen_continues_chain(void **state) {
  fx_t *f = fx_new(1000, 1000000);
  keel_err_t e = {0};
  k_audit_opts_t o = {1000, 1000000};
  uint64_t seq;
  char head[KEEL_HASH_HEX];
  (void)state;
  append_many(f, 10, 4, 1);
  k_audit_head(f->a, &seq, head);
  k_audit_close(f->a);
  f->a = NULL;
  assert_int_equal(k_audit_open(f->s, &f->key, &o, NULL, &f->a, &e), 0);
  {
    uint64_t s2;
    char h2[KEEL_HASH_HEX];
    k_audit_head(f->a, &s2, h2);
    assert_int_equal(s2, 10);
    assert_string_equal(h2, head);
  }
  append_many(f, 5, 5, 1);
  assert_int_equal(read_row(f, 11).seq, 11);
  assert_string_equal(read_row(f, 11).f[F_PREV], head);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 15);
  }
  fx_free(f);
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

typedef struct cprow {
  int64_t seq;
  char hash[KEEL_HASH_HEX], time[64], key_id[32], sig[200];
} cprow_t;

typedef struct cprows {
  cprow_t v[64];
  int n;
} cprows_t;

static int cp_cb(void *ud, const k_val_t *c, int n) {
  cprows_t *cs = ud;
  cprow_t *r;
  assert_int_equal(n, 5);
  assert_true(cs->n < 64);
  r = &cs->v[cs->n++];
  r->seq = c[0].i;
  snprintf(r->hash, sizeof r->hash, "%s", c[1].s);
  snprintf(r->time, sizeof r->time, "%s", c[2].s);
  snprintf(r->key_id, sizeof r->key_id, "%s", c[3].s);
  snprintf(r->sig, sizeof r->sig, "%s", c[4].s);
  return 0;
}

static cprows_t read_cps(fx_t *f) {
  cprows_t cs = {0};
  keel_err_t e = {0};
  if (k_store_exec(f->s,
                   "SELECT seq, hash, time, key_id, signature FROM audit_checkpoints"
                   " ORDER BY seq",
                   NULL, 0, cp_cb, &cs, &e))
    fail_msg("read checkpoints: %s", e.msg);
  return cs;
}

static void check_cp_signature(fx_t *f, const cprow_t *c) {
  char msg[256];
  uint8_t sig[crypto_sign_BYTES];
  int n = snprintf(msg, sizeof msg, "keel-audit-checkpoint:v1:%lld:%s:%s", (long long)c->seq,
                   c->hash, c->time);
  assert_int_equal(strlen(c->sig), 2 * crypto_sign_BYTES);
  assert_int_equal(keel_unhex(sig, sizeof sig, c->sig), 0);
  assert_int_equal(
      crypto_sign_verify_detached(sig, (const uint8_t *)msg, (unsigned long long)n, f->key.pk), 0);
  assert_string_equal(c->key_id, f->key.key_id);
  assert_string_equal(c->hash, read_row(f, c->seq).f[F_HASH]);
}

static void test_checkpoints_every_n(void **state) {
  fx_t *f = fx_new(10, 1000000);
  keel_err_t e = {0};
  (void)state;
  append_many(f, 35, 1, 3); /* a checkpoint is considered after each record */
  cprows_t cs = read_cps(f);
  assert_int_equal(cs.n, 3);
  assert_int_equal(cs.v[0].seq, 10);
  assert_int_equal(cs.v[1].seq, 20);
  assert_int_equal(cs.v[2].seq, 30);
  for (int i = 0; i < cs.n; i++) check_cp_signature(f, &cs.v[i]);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 35);
    assert_int_equal(v.checkpoints, 3);
  }
  /* nothing due: no checkpoint */
  assert_int_equal(k_audit_maybe_checkpoint(f->a, f->now, 0, &e), 0);
  commit(f);
  assert_int_equal(read_cps(f).n, 3);
  /* forced (shutdown): one covering the tail; forcing again adds nothing */
  assert_int_equal(k_audit_maybe_checkpoint(f->a, f->now, 1, &e), 0);
  commit(f);
  assert_int_equal(k_audit_maybe_checkpoint(f->a, f->now, 1, &e), 0);
  commit(f);
  cs = read_cps(f);
  assert_int_equal(cs.n, 4);
  assert_int_equal(cs.v[3].seq, 35);
  check_cp_signature(f, &cs.v[3]);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 35);
    assert_int_equal(v.checkpoints, 4);
  }
  /* by time: one record, then the interval passes */
  fx_free(f);
  f = fx_new(1000, 5000);
  append_many(f, 1, 1, 1);
  assert_int_equal(read_cps(f).n, 0);
  assert_int_equal(k_audit_maybe_checkpoint(f->a, f->now + 4000, 0, &e), 0);
  assert_int_equal(read_cps(f).n, 0);
  assert_int_equal(k_audit_maybe_checkpoint(f->a, f->now + 6000, 0, &e), 0);
  commit(f);
  cs = read_cps(f);
  assert_int_equal(cs.n, 1);
  assert_int_equal(cs.v[0].seq, 1);
  check_cp_signature(f, &cs.v[0]);
  fx_free(f);
}

static void test_checkpoint_forgery(void **state) {
  fx_t *f = fx_new(50, 1000000);
  uint8_t other_pk[crypto_sign_PUBLICKEYBYTES], other_sk[crypto_sign_SECRETKEYBYTES];
  (void)state;
  append_many(f, 120, 1, 10);
  stash_init(f);
  stash(f, 1, 120);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, 120);
    assert_int_equal(v.checkpoints, 2);
  }
  /* another server's key: the first checkpoint does not verify */
  crypto_sign_keypair(other_pk, other_sk);
  {
    k_audit_verdict_t v = verify_pk(f, other_pk, 0, NULL);
    expect_bad(&v, 50, "signature");
  }
  /* a flipped signature byte */
  raw(f,
      "UPDATE audit_checkpoints SET signature = CASE WHEN substr(signature, 1, 1) = 'a'"
      " THEN 'b' ELSE 'a' END || substr(signature, 2) WHERE seq = 100",
      NULL, 0);
  verify_bad(f, 100, "signature");
  unstash(f, 1, 120);
  stash(f, 1, 120);
  verify_intact(f, 120);
  /* the checkpoint's hash changed (signature no longer matches it) */
  raw(f, "UPDATE audit_checkpoints SET hash = '" GENESIS "' WHERE seq = 50", NULL, 0);
  verify_bad(f, 50, "signature");
  unstash(f, 1, 120);
  stash(f, 1, 120);
  /* a checkpoint forged past the end, signed with the wrong key */
  {
    k_val_t a[] = {K_INT(500), K_TEXT(GENESIS), K_TEXT("2026-01-01T00:00:00.000Z"),
                   K_TEXT("feedfeedfeedfeed"),
                   K_TEXT("00000000000000000000000000000000000000000000000000000000000000000000000"
                          "000000000000000000000000000000000000000000000000000000000")};
    raw(f,
        "INSERT INTO audit_checkpoints(seq, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?)",
        a, 5);
    verify_bad(f, 500, "signature");
  }
  unstash(f, 1, 120);
  verify_intact(f, 120);
  fx_free(f);
}

/* ---- tampering, small chain
 * ---------------------------------------------------------------------- */

#define SMALL 320 /* checkpoints at 50..300: the last 20 records are covered by none */

static void test_tamper_small(void **state) {
  fx_t *f = fx_new(50, 1000000);
  uint64_t head_seq;
  char head[KEEL_HASH_HEX];
  (void)state;
  append_many(f, SMALL, 10, 4);
  k_audit_head(f->a, &head_seq, head);
  assert_int_equal(head_seq, SMALL);
  assert_int_equal(read_cps(f).n, 6);
  stash_init(f);
  stash(f, 1, SMALL + 5);
  verify_intact(f, SMALL);

#define CASE(lo_bad, reason)             \
  do {                                   \
    k_audit_verdict_t v_ = verify(f);    \
    expect_bad(&v_, (lo_bad), (reason)); \
    unstash(f, 1, SMALL + 5);            \
    stash(f, 1, SMALL + 5);              \
    verify_intact(f, SMALL);             \
  } while (0)

  /* edit a text field */
  raw(f, "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 123", NULL, 0);
  CASE(123, "edited");
  /* edit the integer field */
  raw(f, "UPDATE audit_log SET status = 200 WHERE seq = 7", NULL, 0);
  CASE(7, "edited");
  /* edit the first record */
  raw(f, "UPDATE audit_log SET outcome = 'denied' WHERE seq = 1", NULL, 0);
  CASE(1, "edited");
  /* edit the last record */
  raw(f, "UPDATE audit_log SET detail = 'x' WHERE seq = 320", NULL, 0);
  CASE(320, "edited");
  /* edit and re-hash that record: the next one no longer links */
  raw(f, "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 123", NULL, 0);
  rehash(f, 123, 123);
  CASE(124, "prev_hash");
  /* edit and re-hash the rest of the chain: the next signed checkpoint catches it */
  raw(f, "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 123", NULL, 0);
  rehash(f, 123, SMALL);
  CASE(150, "checkpoint");
  /* the same after the last checkpoint: the server's head catches it */
  raw(f, "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 310", NULL, 0);
  rehash(f, 310, SMALL);
  CASE(SMALL, "head");
  /* delete a record, the first one, the last one */
  raw(f, "DELETE FROM audit_log WHERE seq = 200", NULL, 0);
  CASE(200, "missing");
  raw(f, "DELETE FROM audit_log WHERE seq = 1", NULL, 0);
  CASE(1, "missing");
  raw(f, "DELETE FROM audit_log WHERE seq = 320", NULL, 0);
  CASE(320, "missing");
  /* insert a forged, correctly linked record (later records move up) */
  shift_up(f, 105);
  forge(f, 105, 0);
  CASE(106, "prev_hash");
  /* ... at a checkpointed seq: the checkpoint catches the forgery itself */
  shift_up(f, 100);
  forge(f, 100, 0);
  CASE(100, "checkpoint");
  /* insert a forged record with a bad hash */
  shift_up(f, 105);
  forge(f, 105, 1);
  CASE(105, "edited");
  /* fill a deleted record's place with a forgery */
  raw(f, "DELETE FROM audit_log WHERE seq = 77", NULL, 0);
  forge(f, 77, 0);
  CASE(78, "prev_hash");
  /* swap two records, adjacent and apart */
  swap_seqs(f, 60, 61);
  CASE(60, NULL);
  swap_seqs(f, 10, 250);
  CASE(10, NULL);
  /* truncate the tail past the last checkpoint: only the head knows */
  raw(f, "DELETE FROM audit_log WHERE seq > 310", NULL, 0);
  {
    k_audit_verdict_t v = verify_pk(f, f->key.pk, 0, NULL); /* offline: cannot tell */
    expect_intact(&v, 310);
  }
  CASE(311, "truncated");
  /* truncate the tail under a checkpoint: caught even offline */
  raw(f, "DELETE FROM audit_log WHERE seq > 260", NULL, 0);
  {
    k_audit_verdict_t v = verify_pk(f, f->key.pk, 0, NULL);
    expect_bad(&v, 261, "truncated");
  }
  CASE(261, "truncated");
  /* truncate everything */
  raw(f, "DELETE FROM audit_log", NULL, 0);
  CASE(1, "truncated");
  /* two faults: the earlier one is reported */
  raw(f, "UPDATE audit_log SET actor = 'x' WHERE seq = 290", NULL, 0);
  raw(f, "DELETE FROM audit_log WHERE seq = 40", NULL, 0);
  CASE(40, "missing");
  /* rewrite the tail after the last checkpoint and append a forged record:
   * the record at the server's head no longer has the head's hash */
  raw(f, "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 310", NULL, 0);
  rehash(f, 310, SMALL);
  forge(f, SMALL + 1, 0);
  CASE(SMALL, "head");
#undef CASE
  fx_free(f);
}

/* ---- tampering, long chain: parallel ranges
 * ------------------------------------------------------- */

#define BIG 120000

static void test_tamper_big_parallel(void **state) {
  fx_t *f = fx_new(10000, INT64_MAX / 4);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  /* k_audit_verify: ranges of >= 50,000 records, up to 4 threads, one per
   * CPU.  With 120,000 records and >= 2 CPUs that is two ranges:
   * [1, 60001] and [60002, 120000]. */
  const int64_t seam = BIG / 2 + 1;
  (void)state;
  if (ncpu < 2) print_message("note: 1 CPU, the ranged verification runs as one range\n");
  append_many(f, BIG, 5000, 4);
  assert_int_equal(read_cps(f).n, BIG / 10000);
  stash_init(f);
  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, BIG);
    assert_int_equal(v.checkpoints, BIG / 10000);
  }

#define CASE(lo, hi, bad, reason)     \
  do {                                \
    k_audit_verdict_t v_ = verify(f); \
    expect_bad(&v_, (bad), (reason)); \
    unstash(f, (lo), (hi));           \
  } while (0)

  /* an edit deep in the second range */
  stash(f, 90000, 90000);
  raw(f, "UPDATE audit_log SET target = 'user/root' WHERE seq = 90000", NULL, 0);
  CASE(90000, 90000, 90000, "edited");
  /* the first record of the second range deleted */
  stash(f, seam, seam);
  {
    k_val_t a[] = {K_INT(seam)};
    raw(f, "DELETE FROM audit_log WHERE seq = ?", a, 1);
  }
  CASE(seam, seam, seam, "missing");
  /* the last record of the first range deleted */
  stash(f, seam - 1, seam - 1);
  {
    k_val_t a[] = {K_INT(seam - 1)};
    raw(f, "DELETE FROM audit_log WHERE seq = ?", a, 1);
  }
  CASE(seam - 1, seam - 1, seam - 1, "missing");
  /* the second range's first record re-linked to something else and
   * re-hashed, as is the rest of that range: only the seam check sees it */
  stash(f, seam, seam + 100);
  {
    k_val_t a[] = {K_INT(seam)};
    raw(f, "UPDATE audit_log SET prev_hash = '" GENESIS "' WHERE seq = ?", a, 1);
  }
  {
    /* seam keeps its forged prev_hash with a matching hash, and the
     * records after it are re-linked to it: within its range the chain
     * holds, only the seam check sees the break */
    row_t r = read_row(f, seam);
    k_audit_row_t ar = as_audit_row(&r);
    char h[KEEL_HASH_HEX];
    hash_of(&ar, h);
    k_val_t a[] = {K_TEXT(h), K_INT(seam)};
    raw(f, "UPDATE audit_log SET hash = ? WHERE seq = ?", a, 2);
    rehash(f, seam + 1, seam + 100);
  }
  CASE(seam, seam + 100, seam, "prev_hash");
  /* records swapped across the seam */
  stash(f, seam - 1, seam);
  swap_seqs(f, seam - 1, seam);
  CASE(seam - 1, seam, seam - 1, NULL);
  /* a rewrite of the second range up to a checkpoint */
  stash(f, 95000, 100000);
  raw(f, "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 95000", NULL, 0);
  rehash(f, 95000, 100000);
  CASE(95000, 100000, 100000, "checkpoint");
  /* a fault in each range: the first range's wins */
  stash(f, 30000, 30000);
  stash(f, 90000, 90000);
  raw(f, "UPDATE audit_log SET detail = 'x' WHERE seq = 90000", NULL, 0);
  raw(f, "UPDATE audit_log SET detail = 'x' WHERE seq = 30000", NULL, 0);
  CASE(30000, 30000, 30000, "edited");
#undef CASE

  {
    k_audit_verdict_t v = verify(f);
    expect_intact(&v, BIG);
    assert_int_equal(v.checkpoints, BIG / 10000);
  }
  fx_free(f);
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_canonical_matches_jansson),
      cmocka_unit_test(test_append_sanitizes_and_hashes),
      cmocka_unit_test(test_chain_links),
      cmocka_unit_test(test_rolled_back_unit_restores_head),
      cmocka_unit_test(test_reopen_continues_chain),
      cmocka_unit_test(test_checkpoints_every_n),
      cmocka_unit_test(test_checkpoint_forgery),
      cmocka_unit_test(test_tamper_small),
      cmocka_unit_test(test_tamper_big_parallel),
  };
  if (argc > 1) cmocka_set_test_filter(argv[1]); /* e.g. test_audit '*small*' */
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
