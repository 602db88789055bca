#include "audit/audit.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/json.h"
#include "keel/time.h"

#define FIELD_MAX 512
/* detail carries server-built summaries (a command's argv and hosts), so
 * it gets more room; still bounded so one record stays small. */
#define DETAIL_MAX K_AUDIT_DETAIL_MAX
#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

struct k_audit {
  k_store_t *store;
  const k_serverkey_t *key;
  const keel_log_t *log;
  k_audit_opts_t opts;
  keel_buf_t canon; /* reused for every append */

  uint64_t head_seq; /* includes uncommitted appends */
  char head_hash[KEEL_HASH_HEX];
  uint64_t mark_seq; /* head at k_audit_mark */
  char mark_hash[KEEL_HASH_HEX];
  uint64_t committed_seq; /* head of the last committed batch */
  char committed_hash[KEEL_HASH_HEX];

  uint64_t cp_seq;
  int64_t cp_time_ms; /* wall clock of the last checkpoint (or open) */
  uint64_t appended;
};

/* ---- canonical form -------------------------------------------------------- */

static int put_int(keel_buf_t *b, int64_t v) {
  char tmp[24], *p = tmp + sizeof tmp;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  return keel_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

/* Keys in byte order, compact: identical to jansson's
 * JSON_SORT_KEYS|JSON_COMPACT dump of the same object (tests check it), but
 * without building a json_t per record — verification speed depends on it. */
int k_audit_canonical(keel_buf_t *b, const k_audit_row_t *r) {
  int rc = 0;
  keel_buf_reset(b);
#define STR(k, v) \
  if (!rc) rc = keel_buf_puts(b, k); \
  if (!rc) rc = keel_buf_json_str(b, (v))
  STR("{\"action\":", r->action);
  STR(",\"actor\":", r->actor);
  STR(",\"body_digest\":", r->body_digest);
  STR(",\"detail\":", r->detail);
  STR(",\"outcome\":", r->outcome);
  STR(",\"prev_hash\":", r->prev_hash);
  STR(",\"request_id\":", r->request_id);
  if (!rc) rc = keel_buf_puts(b, ",\"seq\":");
  if (!rc) rc = put_int(b, (int64_t)r->seq);
  if (!rc) rc = keel_buf_puts(b, ",\"status\":");
  if (!rc) rc = put_int(b, r->status);
  STR(",\"target\":", r->target);
  STR(",\"time\":", r->time);
  if (!rc) rc = keel_buf_puts(b, "}");
#undef STR
  return rc;
}

/* ---- open / head ----------------------------------------------------------- */

static int head_row(void *ud, const k_val_t *c, int n) {
  k_audit_t *a = ud;
  if (n < 2 || c[0].type != K_VAL_INT || c[1].type != K_VAL_TEXT) return 0;
  a->head_seq = (uint64_t)c[0].i;
  snprintf(a->head_hash, sizeof a->head_hash, "%s", c[1].s);
  return 0;
}

static int cp_row(void *ud, const k_val_t *c, int n) {
  k_audit_t *a = ud;
  if (n >= 1 && c[0].type == K_VAL_INT) a->cp_seq = (uint64_t)c[0].i;
  return 0;
}

int k_audit_open(k_store_t *s, const k_serverkey_t *key, const k_audit_opts_t *opts,
                 const keel_log_t *log, k_audit_t **out, keel_err_t *e) {
  k_audit_t *a = calloc(1, sizeof *a);
  int rc;

  *out = NULL;
  if (!a) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  a->store = s;
  a->key = key;
  a->log = log;
  a->opts.checkpoint_records = opts && opts->checkpoint_records ? opts->checkpoint_records : 1000;
  a->opts.checkpoint_interval_ms =
      opts && opts->checkpoint_interval_ms ? opts->checkpoint_interval_ms : 10000;
  keel_buf_init(&a->canon, 1 << 16);
  snprintf(a->head_hash, sizeof a->head_hash, "%s", GENESIS);
  if ((rc = k_store_exec(s, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", NULL, 0,
                         head_row, a, e)) ||
      (rc = k_store_exec(s, "SELECT MAX(seq) FROM audit_checkpoints", NULL, 0, cp_row, a, e))) {
    k_audit_close(a);
    return rc;
  }
  a->committed_seq = a->mark_seq = a->head_seq;
  memcpy(a->committed_hash, a->head_hash, sizeof a->head_hash);
  memcpy(a->mark_hash, a->head_hash, sizeof a->head_hash);
  a->cp_time_ms = keel_now_ms();
  *out = a;
  return 0;
}

void k_audit_close(k_audit_t *a) {
  if (!a) return;
  keel_buf_free(&a->canon);
  free(a);
}

void k_audit_mark(k_audit_t *a) {
  a->mark_seq = a->head_seq;
  memcpy(a->mark_hash, a->head_hash, sizeof a->head_hash);
}

void k_audit_restore(k_audit_t *a) {
  a->head_seq = a->mark_seq;
  memcpy(a->head_hash, a->mark_hash, sizeof a->head_hash);
}

void k_audit_batch_done(k_audit_t *a, int committed) {
  if (committed) {
    a->committed_seq = a->head_seq;
    memcpy(a->committed_hash, a->head_hash, sizeof a->head_hash);
  } else {
    a->head_seq = a->committed_seq;
    memcpy(a->head_hash, a->committed_hash, sizeof a->head_hash);
  }
  k_audit_mark(a);
}

void k_audit_head(const k_audit_t *a, uint64_t *seq, char hash[KEEL_HASH_HEX]) {
  *seq = a->committed_seq;
  memcpy(hash, a->committed_hash, KEEL_HASH_HEX);
}

uint64_t k_audit_appended(const k_audit_t *a) { return a->appended; }

/* ---- append ---------------------------------------------------------------- */

static char *field_n(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap + 1, "%s", src ? src : "");
  return keel_utf8_sanitize(dst);
}

static char *field(char *dst, const char *src) { return field_n(dst, FIELD_MAX, src); }

int k_audit_append(k_audit_t *a, const k_audit_rec_t *in, uint64_t *seq_out, keel_err_t *e) {
  char f[7][FIELD_MAX + 1], now[KEEL_TIME_STRLEN], hash[KEEL_HASH_HEX];
  char *detail = malloc(DETAIL_MAX + 1);
  k_audit_row_t r;
  int rc;

  keel_time_format(now, keel_now_ms());
  r.seq = a->head_seq + 1;
  r.time = now;
  r.actor = field(f[0], in->actor);
  r.action = field(f[1], in->action);
  r.target = field(f[2], in->target);
  r.outcome = field(f[3], in->outcome);
  if (!detail) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  r.detail = field_n(detail, DETAIL_MAX, in->detail);
  r.request_id = field(f[5], in->request_id);
  r.body_digest = field(f[6], in->body_digest);
  r.prev_hash = a->head_hash;
  r.status = in->status;
  if ((rc = k_audit_canonical(&a->canon, &r))) {
    rc = keel_err_set(e, rc, "audit: record too large");
    goto out;
  }
  keel_hash_hex(hash, a->canon.data, a->canon.len);
  {
    k_val_t args[] = {K_INT(r.seq),         K_TEXT(r.time),   K_TEXT(r.actor),
                      K_TEXT(r.action),     K_TEXT(r.target), K_TEXT(r.outcome),
                      K_INT(r.status),      K_TEXT(r.detail), K_TEXT(r.request_id),
                      K_TEXT(r.body_digest), K_TEXT(r.prev_hash), K_TEXT(hash)};
    rc = k_store_exec(a->store,
                      "INSERT INTO audit_log(seq, time, actor, action, target, outcome, status,"
                      " detail, request_id, body_digest, prev_hash, hash)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      args, 12, NULL, NULL, e);
  }
  if (rc) goto out;
  a->head_seq = r.seq;
  memcpy(a->head_hash, hash, sizeof hash);
  a->appended++;
  if (seq_out) *seq_out = r.seq;
out:
  free(detail);
  return rc;
}

/* ---- checkpoints ----------------------------------------------------------- */

/* The signed message binds the sequence number, the hash and the time. */
static int cp_message(char *out, size_t n, uint64_t seq, const char *hash, const char *time) {
  return snprintf(out, n, "keel-audit-checkpoint:v1:%llu:%s:%s", (unsigned long long)seq, hash,
                  time);
}

int k_audit_maybe_checkpoint(k_audit_t *a, int64_t now_ms, int force, keel_err_t *e) {
  char msg[256], now[KEEL_TIME_STRLEN], sighex[crypto_sign_BYTES * 2 + 1];
  uint8_t sig[crypto_sign_BYTES];
  int rc, n;

  if (a->head_seq <= a->cp_seq) {
    a->cp_time_ms = now_ms; /* idle: the interval counts from the next record */
    return 0;
  }
  if (!force && a->head_seq - a->cp_seq < a->opts.checkpoint_records &&
      now_ms - a->cp_time_ms < a->opts.checkpoint_interval_ms)
    return 0;
  keel_time_format(now, now_ms);
  n = cp_message(msg, sizeof msg, a->head_seq, a->head_hash, now);
  crypto_sign_detached(sig, NULL, (const uint8_t *)msg, (unsigned long long)n, a->key->sk);
  keel_hex(sighex, sig, sizeof sig);
  {
    k_val_t args[] = {K_INT(a->head_seq), K_TEXT(a->head_hash), K_TEXT(now),
                      K_TEXT(a->key->key_id), K_TEXT(sighex)};
    if ((rc = k_store_unit_begin(a->store, e))) return rc;
    rc = k_store_exec(a->store,
                      "INSERT INTO audit_checkpoints(seq, hash, time, key_id, signature)"
                      " VALUES (?, ?, ?, ?, ?)",
                      args, 5, NULL, NULL, e);
    if (k_store_unit_end(a->store, rc == 0, rc ? NULL : e) && !rc) rc = KEEL_EIO;
  }
  if (rc) return rc;
  a->cp_seq = a->head_seq;
  a->cp_time_ms = now_ms;
  return 0;
}

/* ---- verification ---------------------------------------------------------- */

typedef struct cp {
  uint64_t seq;
  char hash[KEEL_HASH_HEX];
} cp_t;

typedef struct cps {
  cp_t *v;
  size_t n, cap;
  const uint8_t *pk;
  uint64_t bad_seq; /* first checkpoint that failed its signature */
  int err;
} cps_t;

/* One contiguous range of the chain, verified on its own. */
typedef struct range {
  k_store_t *reader;
  const cps_t *cps;
  uint64_t lo, hi;       /* seq bounds, inclusive */
  size_t next_cp;
  uint64_t expect;
  char first_prev[KEEL_HASH_HEX]; /* prev_hash of the range's first row */
  char prev[KEEL_HASH_HEX];       /* hash of the last good row */
  int seen;
  keel_buf_t canon;
  uint64_t records, checkpoints;
  uint64_t bad_seq;
  char reason[200];
  int rc, err;
  keel_err_t e;
} range_t;

static int range_bad(range_t *r, uint64_t seq, const char *reason) {
  r->bad_seq = seq;
  snprintf(r->reason, sizeof r->reason, "%s", reason);
  return 1; /* stops the walk */
}

static int cp_load_row(void *ud, const k_val_t *c, int n) {
  cps_t *st = ud;
  char msg[256];
  uint8_t sig[crypto_sign_BYTES];
  int len;

  if (n < 4 || c[0].type != K_VAL_INT || c[1].type != K_VAL_TEXT || c[2].type != K_VAL_TEXT ||
      c[3].type != K_VAL_TEXT) {
    st->bad_seq = c[0].type == K_VAL_INT ? (uint64_t)c[0].i : 1;
    return 1;
  }
  len = cp_message(msg, sizeof msg, (uint64_t)c[0].i, c[1].s, c[2].s);
  if (keel_unhex(sig, sizeof sig, c[3].s) ||
      crypto_sign_verify_detached(sig, (const uint8_t *)msg, (unsigned long long)len, st->pk) != 0) {
    st->bad_seq = (uint64_t)c[0].i;
    return 1;
  }
  if (st->n == st->cap) {
    size_t ncap = st->cap ? st->cap * 2 : 64;
    cp_t *p = realloc(st->v, ncap * sizeof *p);
    if (!p) {
      st->err = KEEL_ENOMEM;
      return 1;
    }
    st->v = p;
    st->cap = ncap;
  }
  st->v[st->n].seq = (uint64_t)c[0].i;
  snprintf(st->v[st->n].hash, KEEL_HASH_HEX, "%s", c[1].s);
  st->n++;
  return 0;
}

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

static int verify_row(void *ud, const k_val_t *c, int n) {
  range_t *st = ud;
  k_audit_row_t r;
  char hash[KEEL_HASH_HEX];
  uint64_t seq;

  if (n < 12 || c[0].type != K_VAL_INT) return range_bad(st, st->expect, "record row is malformed");
  seq = (uint64_t)c[0].i;
  if (seq != st->expect) return range_bad(st, st->expect, "record is missing (deleted)");
  r.seq = seq;
  r.time = txt(&c[1]);
  r.actor = txt(&c[2]);
  r.action = txt(&c[3]);
  r.target = txt(&c[4]);
  r.outcome = txt(&c[5]);
  r.status = c[6].type == K_VAL_INT ? c[6].i : -1;
  r.detail = txt(&c[7]);
  r.request_id = txt(&c[8]);
  r.body_digest = txt(&c[9]);
  r.prev_hash = txt(&c[10]);
  if (!st->seen) {
    /* The range before checks this seam once both are done. */
    snprintf(st->first_prev, sizeof st->first_prev, "%s", r.prev_hash);
    st->seen = 1;
  } else if (strcmp(r.prev_hash, st->prev) != 0) {
    return range_bad(st, seq,
                     "prev_hash does not match the record before it (record inserted, removed or "
                     "reordered)");
  }
  if (k_audit_canonical(&st->canon, &r)) {
    st->err = KEEL_ENOMEM;
    return 1;
  }
  keel_hash_hex(hash, st->canon.data, st->canon.len);
  if (strcmp(hash, txt(&c[11])) != 0)
    return range_bad(st, seq, "hash does not match the record's contents (record edited)");
  while (st->next_cp < st->cps->n && st->cps->v[st->next_cp].seq < seq) st->next_cp++;
  if (st->next_cp < st->cps->n && st->cps->v[st->next_cp].seq == seq) {
    if (strcmp(st->cps->v[st->next_cp].hash, hash) != 0)
      return range_bad(st, seq,
                       "record differs from the signed checkpoint (the chain was rewritten up to "
                       "here)");
    st->next_cp++;
    st->checkpoints++;
  }
  memcpy(st->prev, hash, sizeof hash);
  st->records++;
  st->expect++;
  return 0;
}

static void *range_run(void *arg) {
  range_t *r = arg;
  k_val_t args[] = {K_INT(r->lo), K_INT(r->hi)};
  r->rc = k_store_exec(r->reader,
                       "SELECT seq, time, actor, action, target, outcome, status, detail,"
                       " request_id, body_digest, prev_hash, hash FROM audit_log"
                       " WHERE seq >= ? AND seq <= ? ORDER BY seq",
                       args, 2, verify_row, r, &r->e);
  if (r->rc > 0) r->rc = 0; /* a stop, not an error */
  if (!r->rc && !r->err && !r->bad_seq && r->expect <= r->hi)
    range_bad(r, r->expect, "record is missing (deleted)");
  return NULL;
}

static int max_row(void *ud, const k_val_t *c, int n) {
  if (n > 0 && c[0].type == K_VAL_INT) *(uint64_t *)ud = (uint64_t)c[0].i;
  return 0;
}

static int hash_row(void *ud, const k_val_t *c, int n) {
  if (n > 0 && c[0].type == K_VAL_TEXT) snprintf(ud, KEEL_HASH_HEX, "%s", c[0].s);
  return 0;
}

#define VERIFY_MAX_THREADS 4
#define VERIFY_MIN_PER_THREAD 50000

int k_audit_verify(k_store_t *reader, const uint8_t pk[32], uint64_t expect_seq,
                   const char *expect_hash, k_audit_verdict_t *v, keel_err_t *e) {
  cps_t cps = {0};
  range_t rg[VERIFY_MAX_THREADS];
  pthread_t thr[VERIFY_MAX_THREADS];
  uint64_t max_seq = 0, per;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int nr = 1, rc;

  memset(v, 0, sizeof *v);
  memset(rg, 0, sizeof rg);
  v->intact = 1;
  cps.pk = pk;
  rc = k_store_exec(reader, "SELECT seq, hash, time, signature FROM audit_checkpoints ORDER BY seq",
                    NULL, 0, cp_load_row, &cps, e);
  if (rc < 0) goto out;
  if (cps.err) {
    rc = keel_err_set(e, cps.err, "audit verify: out of memory");
    goto out;
  }
  if ((rc = k_store_exec(reader, "SELECT MAX(seq) FROM audit_log", NULL, 0, max_row, &max_seq, e)))
    goto out;

  /* Each record needs only its stored predecessor hash, so ranges verify
   * in parallel; the seams are checked afterwards. */
  if (ncpu > 1 && max_seq >= 2 * VERIFY_MIN_PER_THREAD) {
    nr = (int)(max_seq / VERIFY_MIN_PER_THREAD);
    if (nr > ncpu) nr = (int)ncpu;
    if (nr > VERIFY_MAX_THREADS) nr = VERIFY_MAX_THREADS;
  }
  per = max_seq / (uint64_t)nr + 1;
  for (int i = 0; i < nr; i++) {
    range_t *r = &rg[i];
    r->cps = &cps;
    r->lo = (uint64_t)i * per + 1;
    r->hi = i == nr - 1 ? max_seq : (uint64_t)(i + 1) * per;
    r->expect = r->lo;
    keel_buf_init(&r->canon, 1 << 16);
    if (i == 0) {
      r->reader = reader;
    } else if ((rc = k_store_reader_open(reader, &r->reader, e))) {
      nr = i;
      goto joined;
    }
    /* checkpoints before this range are not its business */
    while (r->next_cp < cps.n && cps.v[r->next_cp].seq < r->lo) r->next_cp++;
  }
  for (int i = 1; i < nr; i++)
    if (pthread_create(&thr[i], NULL, range_run, &rg[i])) {
      /* fall back: run it here */
      range_run(&rg[i]);
      thr[i] = 0;
    }
  range_run(&rg[0]);
  for (int i = 1; i < nr; i++)
    if (thr[i]) pthread_join(thr[i], NULL);
joined:
  if (rc) goto out;
  for (int i = 0; i < nr; i++) {
    if (rg[i].rc < 0 || rg[i].err) {
      rc = rg[i].err ? keel_err_set(e, rg[i].err, "audit verify: out of memory")
                     : keel_err_set(e, rg[i].rc, "%s", rg[i].e.msg);
      goto out;
    }
  }
  /* The earliest failure wins: walk ranges in order, seams included. */
  for (int i = 0; i < nr; i++) {
    const char *want_prev = i == 0 ? GENESIS : rg[i - 1].prev;
    v->records += rg[i].records;
    v->checkpoints += rg[i].checkpoints;
    if (rg[i].seen && strcmp(rg[i].first_prev, want_prev) != 0) {
      v->intact = 0;
      v->first_bad = rg[i].lo;
      snprintf(v->reason, sizeof v->reason, "%s",
               "prev_hash does not match the record before it (record inserted, removed or "
               "reordered)");
      break;
    }
    if (rg[i].bad_seq) {
      v->intact = 0;
      v->first_bad = rg[i].bad_seq;
      snprintf(v->reason, sizeof v->reason, "%s", rg[i].reason);
      break;
    }
  }
  /* A forged checkpoint earlier than the first bad record is the first fault. */
  if (cps.bad_seq && (v->intact || cps.bad_seq < v->first_bad)) {
    v->intact = 0;
    v->first_bad = cps.bad_seq;
    snprintf(v->reason, sizeof v->reason, "%s",
             "checkpoint signature does not verify (checkpoint forged or altered)");
  }
  if (!v->intact) goto out;
  v->head_seq = max_seq;
  memcpy(v->head_hash, nr ? rg[nr - 1].prev : GENESIS, KEEL_HASH_HEX);
  if (max_seq == 0) memcpy(v->head_hash, GENESIS, KEEL_HASH_HEX);
  if (cps.n && cps.v[cps.n - 1].seq > max_seq) {
    v->intact = 0;
    v->first_bad = max_seq + 1;
    snprintf(v->reason, sizeof v->reason, "%s",
             "records after this point are missing: a signed checkpoint covers them (log "
             "truncated)");
  } else if (expect_seq > max_seq) {
    v->intact = 0;
    v->first_bad = max_seq + 1;
    snprintf(v->reason, sizeof v->reason, "%s",
             "records after this point are missing (log truncated)");
  } else if (expect_seq && expect_hash && expect_seq == max_seq &&
             strcmp(expect_hash, v->head_hash) != 0) {
    v->intact = 0;
    v->first_bad = max_seq;
    snprintf(v->reason, sizeof v->reason, "%s",
             "last record differs from the server's head (record edited)");
  } else if (expect_seq && expect_hash && expect_seq < max_seq) {
    /* Records were added since the head was taken (normal while the server
     * runs), but the record at that head must still be the server's: else
     * the chain was rewritten up to it and more appended to hide that. The
     * walk above proved every stored hash matches its record. */
    char at[KEEL_HASH_HEX] = "";
    k_val_t args[] = {K_INT(expect_seq)};
    if ((rc = k_store_exec(reader, "SELECT hash FROM audit_log WHERE seq = ?", args, 1, hash_row,
                           at, e)))
      goto out;
    if (strcmp(expect_hash, at) != 0) {
      v->intact = 0;
      v->first_bad = expect_seq;
      snprintf(v->reason, sizeof v->reason, "%s",
               "record differs from the server's head (the chain was rewritten up to it)");
    }
  }
out:
  for (int i = 0; i < VERIFY_MAX_THREADS; i++) {
    if (i > 0) k_store_close(rg[i].reader);
    keel_buf_free(&rg[i].canon);
  }
  free(cps.v);
  return rc;
}

/* ---- listing ----------------------------------------------------------------- */

typedef struct lstate {
  json_t *items;
  int limit, n;
  uint64_t last, next;
} lstate_t;

static int list_row(void *ud, const k_val_t *c, int n) {
  lstate_t *st = ud;
  json_t *o;
  if (n < 12) return 0;
  if (st->n == st->limit) {
    st->next = st->last;
    return 1;
  }
  o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "seq", (json_int_t)c[0].i,
                "time", txt(&c[1]), "actor", txt(&c[2]), "action", txt(&c[3]), "target",
                txt(&c[4]), "outcome", txt(&c[5]), "status", (json_int_t)c[6].i, "detail",
                txt(&c[7]), "request_id", txt(&c[8]), "body_digest", txt(&c[9]), "prev_hash",
                txt(&c[10]), "hash", txt(&c[11]));
  /* A record edited into invalid UTF-8 cannot be packed; show it, flagged. */
  if (!o)
    o = json_pack("{s:I,s:s}", "seq", (json_int_t)c[0].i, "error", "record is not valid UTF-8");
  json_array_append_new(st->items, o);
  st->last = (uint64_t)c[0].i;
  st->n++;
  return 0;
}

int k_audit_list(k_store_t *s, const k_audit_query_t *q, json_t **items, uint64_t *next,
                 keel_err_t *e) {
  char sql[512], since[KEEL_TIME_STRLEN];
  k_val_t args[5];
  int nargs = 0, rc;
  lstate_t st = {0};

  *items = NULL;
  *next = 0;
  snprintf(sql, sizeof sql,
           "SELECT seq, time, actor, action, target, outcome, status, detail, request_id,"
           " body_digest, prev_hash, hash FROM audit_log WHERE seq > ?");
  args[nargs++] = K_INT(q->after_seq);
  if (q->since_ms) {
    keel_time_format(since, q->since_ms);
    strcat(sql, " AND time >= ?");
    args[nargs++] = K_TEXT(since);
  }
  if (q->actor) {
    strcat(sql, " AND actor = ?");
    args[nargs++] = K_TEXT(q->actor);
  }
  if (q->action) {
    strcat(sql, " AND action = ?");
    args[nargs++] = K_TEXT(q->action);
  }
  strcat(sql, " ORDER BY seq LIMIT ?");
  args[nargs++] = K_INT(q->limit + 1);
  st.items = json_array();
  st.limit = q->limit;
  if (!st.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(s, sql, args, nargs, list_row, &st, e);
  if (rc < 0) {
    json_decref(st.items);
    return rc;
  }
  *items = st.items;
  *next = st.next;
  return 0;
}
