/* event.c — the event engine (see event.h; docs/events.md).
 *
 * Sequence numbers.  keeld assigns seq itself (MAX(seq) + 1 at open, then
 * a counter), never the database: SQLite would hand a rolled-back event's
 * rowid to the next insert, possibly in a later generation, and dispatch
 * could then deliver that later event before it is durable.  With the
 * counter a rolled-back event (or a whole failed batch) leaves a gap.
 * After a crash the counter restarts at the durable MAX(seq) + 1: numbers
 * taken by events the crash lost are taken again, which is harmless since
 * nothing was ever delivered (or streamed) from a generation that was not
 * durable.
 *
 * Durability.  Each emit records (generation of the open batch -> highest
 * seq in it) in `pend`; generations only grow, so `pend` is ordered by both.
 * k_events_dispatch pops the generations that are durable and delivers
 * every stored event up to the highest seq they cover, reading rows from
 * the store (so what was rolled back is simply not there).
 *
 * Restarts.  k_events_save writes how far delivery got (table
 * event_cursor) in a unit of its own after each dispatch, so it commits in
 * the same batch as the units subscribers wrote while handling those
 * events (less what a subscriber still holds queued): after a crash,
 * the events whose effects were lost with that batch are delivered again
 * at start, and no others.  Subscribers MUST therefore treat an event they
 * already acted on (its effects are in their tables) as a no-op.
 */
#include "event/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/crypto.h"
#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"

#define MAX_SUBS 16
#define DISPATCH_PAGE 256  /* rows read per store query while delivering */
#define PRUNE_CHUNK 10000  /* rows deleted per unit while pruning */

typedef struct pend {
  uint64_t gen;
  int64_t max_seq;
} pend_t;

struct k_events {
  k_store_t *s;
  const keel_log_t *log;
  int64_t retention_ms;
  int64_t next_seq;  /* the seq the next emit takes */
  int64_t delivered; /* every event with seq <= this was delivered (or never will be) */
  int64_t saved;     /* delivered, as event_cursor holds it */
  int64_t ready;     /* every event with seq <= this is in a durable generation */
  uint64_t emitted;  /* seqs given since open (k_events_stats) */
  pend_t *pend;      /* generations not durable yet, oldest first */
  size_t npend, cappend;
  struct {
    k_event_fn fn;
    void *ud;
  } subs[MAX_SUBS];
  int nsubs;
  int dispatching;
};

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

static int max_row(void *ud, const k_val_t *c, int n) {
  if (n > 0 && c[0].type == K_VAL_INT) *(int64_t *)ud = c[0].i;
  return 0;
}

int k_events_open(k_store_t *s, const keel_log_t *log, int64_t retention_ms, k_events_t **out,
                  keel_err_t *e) {
  k_events_t *ev = calloc(1, sizeof *ev);
  int64_t max = 0;
  int rc;

  *out = NULL;
  if (!ev) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_store_exec(s, "SELECT MAX(seq) FROM events", NULL, 0, max_row, &max, e))) {
    free(ev);
    return rc;
  }
  ev->s = s;
  ev->log = log;
  ev->retention_ms = retention_ms;
  ev->next_seq = max + 1;
  /* Everything stored is durable now.  Without a saved cursor (a data
   * directory from before it existed) history is not replayed. */
  ev->ready = ev->delivered = ev->saved = max;
  if ((rc = k_store_exec(s, "SELECT seq FROM event_cursor WHERE id = 1", NULL, 0, max_row,
                         &ev->delivered, e))) {
    free(ev);
    return rc;
  }
  if (ev->delivered > max) ev->delivered = max;
  ev->saved = ev->delivered;
  *out = ev;
  return 0;
}

void k_events_save(k_events_t *ev, int64_t held) {
  int64_t upto;
  k_val_t args[1];
  keel_err_t e = {0};
  int rc;
  if (!ev) return;
  upto = held > 0 && held - 1 < ev->delivered ? held - 1 : ev->delivered;
  if (upto == ev->saved) return;
  args[0] = K_INT(upto);
  if ((rc = k_store_unit_begin(ev->s, &e)) == 0) {
    rc = k_store_exec(ev->s,
                      "INSERT INTO event_cursor(id, seq) VALUES (1, ?)"
                      " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq",
                      args, 1, NULL, NULL, &e);
    if (k_store_unit_end(ev->s, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  }
  if (rc)
    keel_log(ev->log, KEEL_LOG_ERROR, "events: saving the delivery cursor: %s (retried)", e.msg);
  else
    ev->saved = upto;
}

void k_events_close(k_events_t *ev) {
  if (!ev) return;
  free(ev->pend);
  free(ev);
}

int64_t k_events_delivered(const k_events_t *ev) { return ev ? ev->delivered : 0; }

void k_events_stats(const k_events_t *ev, k_events_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!ev) return;
  out->emitted = ev->emitted;
  out->last_seq = ev->next_seq - 1;
}

/* ---- emitting ------------------------------------------------------------------- */

int k_event_type_valid(const char *t) {
  size_t n = t ? strlen(t) : 0;
  if (n == 0 || n > K_EVENT_TYPE_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '_' ||
          t[i] == '.' || t[i] == '-'))
      return 0;
  return 1;
}

static int track(k_events_t *ev, uint64_t gen, int64_t seq) {
  if (ev->npend && ev->pend[ev->npend - 1].gen == gen) {
    ev->pend[ev->npend - 1].max_seq = seq;
    return 0;
  }
  pend_t *p = keel_grow(ev->pend, &ev->cappend, ev->npend, sizeof *p, 16);
  if (!p) return KEEL_ENOMEM;
  ev->pend = p;
  ev->pend[ev->npend++] = (pend_t){gen, seq};
  return 0;
}

int k_event_emit(k_events_t *ev, const k_event_t *in, int64_t *seq_out, keel_err_t *e) {
  const char *subject = in->subject ? in->subject : "";
  char id[24];
  char *data = NULL;
  int64_t seq;
  int rc;

  if (seq_out) *seq_out = 0;
  if (!ev) return 0; /* an engine opened without events (unit tests) */
  if (!k_event_type_valid(in->type))
    return keel_err_set(e, KEEL_EINVAL,
                        "event type '%.80s': expected 1..%d characters of a-z 0-9 _ . -",
                        in->type ? in->type : "", K_EVENT_TYPE_MAX);
  if (strlen(subject) > K_EVENT_SUBJECT_MAX)
    return keel_err_set(e, KEEL_EINVAL, "event subject: longer than %d bytes", K_EVENT_SUBJECT_MAX);
  if (in->data && !json_is_object(in->data))
    return keel_err_set(e, KEEL_EINVAL, "event data: expected an object");
  data = in->data ? keel_json_canonical(in->data) : strdup("{}");
  if (!data) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (strlen(data) > K_EVENT_DATA_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "event data: %zu bytes, more than %d", strlen(data),
                      K_EVENT_DATA_MAX);
    goto out;
  }
  if (in->id)
    snprintf(id, sizeof id, "%s", in->id);
  else
    keel_random_id(id, sizeof id, "evt_");
  seq = ev->next_seq;
  {
    k_val_t args[] = {K_INT(seq),
                      K_TEXT(id),
                      K_TEXT(in->source ? in->source : "keeld"),
                      K_TEXT(in->type),
                      K_TEXT(subject),
                      K_INT(in->time_ms ? in->time_ms : keel_now_ms()),
                      K_TEXT(in->path && *in->path ? in->path : "events"),
                      K_TEXT(in->cause ? in->cause : ""),
                      K_TEXT(data)};
    if ((rc = k_store_exec(ev->s,
                           "INSERT INTO events(seq, id, source, type, subject, time_ms, path, cause,"
                           " data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           args, 9, NULL, NULL, e)))
      goto out;
  }
  /* Taken only once stored: a failed insert leaves no gap to explain. */
  ev->next_seq++;
  ev->emitted++;
  if ((rc = track(ev, k_store_visible_gen(ev->s), seq))) {
    keel_err_set(e, rc, "out of memory");
    goto out;
  }
  if (seq_out) *seq_out = seq;
out:
  free(data);
  return rc;
}

int k_event_emit_new(k_events_t *ev, const char *type, const char *subject, const char *path,
                     const char *cause, json_t *data, keel_err_t *e) {
  k_event_t in = {0};
  int rc;
  if (!data) return keel_err_set(e, KEEL_ENOMEM, "event %s: out of memory", type);
  in.type = type;
  in.subject = subject;
  in.path = path;
  in.cause = cause;
  in.data = data;
  rc = k_event_emit(ev, &in, NULL, e);
  json_decref(data);
  return rc;
}

int k_events_subscribe(k_events_t *ev, k_event_fn fn, void *ud, keel_err_t *e) {
  if (ev->nsubs == MAX_SUBS)
    return keel_err_set(e, KEEL_ETOOBIG, "events: more than %d subscribers", MAX_SUBS);
  ev->subs[ev->nsubs].fn = fn;
  ev->subs[ev->nsubs].ud = ud;
  ev->nsubs++;
  return 0;
}

/* ---- reading rows ----------------------------------------------------------------- */

#define EVENT_COLS "seq, id, source, type, subject, time_ms, path, cause, data"

/* One row as an event; strings point into the row (valid during the
 * callback only) and *data is a new reference. */
static void row_event(const k_val_t *c, k_event_t *ev, json_t **data) {
  json_t *d = json_loads(txt(&c[8]), 0, NULL);
  if (!json_is_object(d)) {
    json_decref(d);
    d = json_object();
  }
  ev->seq = c[0].i;
  ev->id = txt(&c[1]);
  ev->source = txt(&c[2]);
  ev->type = txt(&c[3]);
  ev->subject = txt(&c[4]);
  ev->time_ms = c[5].i;
  ev->path = txt(&c[6]);
  ev->cause = txt(&c[7]);
  ev->data = d;
  *data = d;
}

/* ---- delivery --------------------------------------------------------------------- */

/* Rows are copied out before any subscriber runs: a subscriber may emit
 * (or read) through the same store handle, which MUST NOT happen while a
 * statement of ours is still stepping. */
typedef struct held {
  k_event_t ev;
  char *strs;
  json_t *data;
} held_t;

typedef struct page {
  held_t *v;
  size_t n;
  int oom;
} page_t;

static char *dup_join(const char *const *s, int n, const char **out) {
  size_t len = 0, off = 0;
  char *b;
  for (int i = 0; i < n; i++) len += strlen(s[i]) + 1;
  if (!(b = malloc(len))) return NULL;
  for (int i = 0; i < n; i++) {
    size_t l = strlen(s[i]) + 1;
    memcpy(b + off, s[i], l);
    out[i] = b + off;
    off += l;
  }
  return b;
}

static int page_row(void *ud, const k_val_t *c, int n) {
  page_t *p = ud;
  held_t *h;
  json_t *data;
  const char *src[6], *dst[6];
  if (n < 9) return 0;
  h = &p->v[p->n];
  row_event(c, &h->ev, &data);
  src[0] = h->ev.id, src[1] = h->ev.source, src[2] = h->ev.type;
  src[3] = h->ev.subject, src[4] = h->ev.path, src[5] = h->ev.cause;
  if (!(h->strs = dup_join(src, 6, dst))) {
    json_decref(data);
    p->oom = 1;
    return 1;
  }
  h->ev.id = dst[0], h->ev.source = dst[1], h->ev.type = dst[2];
  h->ev.subject = dst[3], h->ev.path = dst[4], h->ev.cause = dst[5];
  h->data = data;
  p->n++;
  return 0;
}

void k_events_dispatch(k_events_t *ev, uint64_t durable_gen) {
  held_t v[DISPATCH_PAGE];
  size_t k = 0;

  if (!ev || ev->dispatching) return;
  while (k < ev->npend && ev->pend[k].gen <= durable_gen) {
    if (ev->pend[k].max_seq > ev->ready) ev->ready = ev->pend[k].max_seq;
    k++;
  }
  if (k) {
    memmove(ev->pend, ev->pend + k, (ev->npend - k) * sizeof *ev->pend);
    ev->npend -= k;
  }
  if (ev->ready <= ev->delivered) return;

  ev->dispatching = 1;
  while (ev->delivered < ev->ready) {
    page_t p = {v, 0, 0};
    keel_err_t e = {0};
    k_val_t args[] = {K_INT(ev->delivered), K_INT(ev->ready), K_INT(DISPATCH_PAGE)};
    int rc = k_store_exec(ev->s,
                          "SELECT " EVENT_COLS " FROM events WHERE seq > ? AND seq <= ?"
                          " ORDER BY seq LIMIT ?",
                          args, 3, page_row, &p, &e);
    if (rc && !p.oom) {
      /* nothing of this page is delivered: the next dispatch retries it */
      keel_log(ev->log, KEEL_LOG_ERROR, "events: reading for delivery: %s", e.msg);
      for (size_t i = 0; i < p.n; i++) {
        free(v[i].strs);
        json_decref(v[i].data);
      }
      break;
    }
    for (size_t i = 0; i < p.n; i++) {
      ev->delivered = v[i].ev.seq;
      for (int j = 0; j < ev->nsubs; j++) ev->subs[j].fn(ev->subs[j].ud, &v[i].ev);
      free(v[i].strs);
      json_decref(v[i].data);
    }
    if (p.oom) {
      keel_log(ev->log, KEEL_LOG_ERROR, "events: out of memory while delivering (retried)");
      break;
    }
    if (p.n < DISPATCH_PAGE) ev->delivered = ev->ready; /* the rest are gaps */
  }
  ev->dispatching = 0;
}

/* ---- JSON ---------------------------------------------------------------------------- */

json_t *k_event_json(const k_event_t *ev) {
  char ts[KEEL_TIME_STRLEN];
  json_t *o, *data = ev->data ? json_deep_copy(ev->data) : json_object();
  keel_time_format(ts, ev->time_ms);
  o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:I}", "specversion", "1.0", "id",
                ev->id ? ev->id : "", "source", ev->source ? ev->source : "keeld", "type",
                ev->type ? ev->type : "", "time", ts, "datacontenttype", "application/json",
                "data", data ? data : json_object(), "keelseq", (json_int_t)ev->seq);
  if (!o) return NULL;
  /* CloudEvents: subject and extensions, when present, are non-empty */
  if (ev->subject && *ev->subject) json_object_set_new(o, "subject", json_string(ev->subject));
  if (ev->cause && *ev->cause) json_object_set_new(o, "keelcause", json_string(ev->cause));
  return o;
}

/* ---- listing ----------------------------------------------------------------------------- */

typedef struct list_ctx {
  json_t *items;
  int oom;
} list_ctx_t;

static int list_row(void *ud, const k_val_t *c, int n) {
  list_ctx_t *l = ud;
  k_event_t ev;
  json_t *data, *o;
  if (n < 9) return 0;
  row_event(c, &ev, &data);
  o = k_event_json(&ev);
  json_decref(data);
  if (!o || json_object_set_new(o, "path", json_string(ev.path)) ||
      json_array_append_new(l->items, o)) {
    l->oom = 1;
    return 1;
  }
  return 0;
}

int k_events_list(k_events_t *ev, const k_events_query_t *q, json_t **items, keel_err_t *e) {
  char sql[512], lo[K_EVENT_TYPE_MAX + 2], hi[K_EVENT_TYPE_MAX + 2];
  k_val_t args[8];
  list_ctx_t l = {json_array(), 0};
  int na = 0, rc;
  size_t n;

  *items = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (q->limit < 1 || q->limit > 1000) {
    json_decref(l.items);
    return keel_err_set(e, KEEL_EINVAL, "limit: expected 1..1000");
  }
  n = (size_t)snprintf(sql, sizeof sql, "SELECT " EVENT_COLS " FROM events WHERE seq > ?");
  args[na++] = K_INT(q->after_seq);
  if (q->type && *q->type && strcmp(q->type, "*")) {
    size_t tl = strlen(q->type);
    int prefix = q->type[tl - 1] == '*';
    snprintf(lo, sizeof lo, "%.*s", (int)(tl - (size_t)prefix), q->type);
    if (tl - (size_t)prefix > K_EVENT_TYPE_MAX || !k_event_type_valid(lo)) {
      json_decref(l.items);
      return keel_err_set(e, KEEL_EINVAL,
                          "type: expected an event type or a prefix ending in '*' (alert.*)");
    }
    if (prefix) {
      /* a prefix: the range [prefix, prefix with its last byte + 1) */
      snprintf(hi, sizeof hi, "%s", lo);
      hi[tl - 2]++;
      n += (size_t)snprintf(sql + n, sizeof sql - n, " AND type >= ? AND type < ?");
      args[na++] = K_TEXT(lo);
      args[na++] = K_TEXT(hi);
    } else {
      n += (size_t)snprintf(sql + n, sizeof sql - n, " AND type = ?");
      args[na++] = K_TEXT(q->type);
    }
  }
  if (q->subject) {
    n += (size_t)snprintf(sql + n, sizeof sql - n, " AND subject = ?");
    args[na++] = K_TEXT(q->subject);
  }
  if (q->since_ms > 0) {
    n += (size_t)snprintf(sql + n, sizeof sql - n, " AND time_ms >= ?");
    args[na++] = K_INT(q->since_ms);
  }
  snprintf(sql + n, sizeof sql - n, " ORDER BY seq LIMIT ?");
  args[na++] = K_INT(q->limit);
  rc = k_store_exec(ev->s, sql, args, na, list_row, &l, e);
  if (l.oom) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (rc) {
    json_decref(l.items);
    return rc;
  }
  *items = l.items;
  return 0;
}

/* ---- retention ---------------------------------------------------------------------------- */

int k_events_prune(k_events_t *ev, int64_t now_ms, keel_err_t *e) {
  int64_t cutoff = now_ms - ev->retention_ms, total = 0, n;
  int rc = 0;

  /* In chunks, each a unit: one huge DELETE would hold the loop. */
  do {
    k_val_t args[] = {K_INT(cutoff), K_INT(PRUNE_CHUNK)};
    if ((rc = k_store_unit_begin(ev->s, e))) return rc;
    rc = k_store_exec(ev->s,
                      "DELETE FROM events WHERE seq IN"
                      " (SELECT seq FROM events WHERE time_ms < ? ORDER BY time_ms LIMIT ?)",
                      args, 2, NULL, NULL, e);
    n = rc ? 0 : k_store_changes(ev->s);
    if (k_store_unit_end(ev->s, rc == 0, rc ? NULL : e) && !rc) rc = KEEL_EIO;
    total += n;
  } while (!rc && n == PRUNE_CHUNK);
  if (total)
    keel_log(ev->log, KEEL_LOG_INFO, "events: pruned %lld event(s) older than the retention",
             (long long)total);
  return rc;
}
