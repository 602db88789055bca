/* scrape/scrape.c — the scrape engine (scrape.h).
 *
 * Three kinds of state, each with one owner:
 *   - target descriptors (tdesc_t): what a configuration says about one
 *     target.  Immutable once built and shared by reference count, so the
 *     loop (status) and the scrape thread (scraping) can both hold one.
 *   - the loop's status table (status_t, sorted by target id): health,
 *     last error, last scrape.  Touched by the loop thread only.
 *   - the thread's targets (tgt_t, sorted by id): curl handle, schedule,
 *     the series of the last batch (for staleness).  Touched by the scrape
 *     thread only.
 * They meet under the scrape thread's lock (curlthread.h) in two places:
 * the pending configuration (loop -> thread, picked up at the thread's
 * next turn; k_cthread_wake cuts its wait short) and the queue of finished
 * batches (the thread's results, thread -> loop).  Target ids are assigned
 * by the loop and survive a reconfiguration when job_name and URL stay the
 * same: that is how both sides carry a target's state over.
 *
 * The thread is curlthread.h's (a thread of its own with curl multi, not
 * the work pool).  Parsing runs on this thread too, so a huge body delays
 * other scrapes' processing by its parse time (~ms per 10k samples), never
 * the loop.
 */
#include "scrape/scrape.h"

#include <curl/curl.h>
#include <math.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curlthread.h"
#include "docwalk.h"
#include "keel/buf.h"
#include "keel/grow.h"
#include "keel/http.h"
#include "keel/json.h"
#include "keel/time.h"

#define ACCEPT                                                                         \
  "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;" \
  "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
#define MAX_WAIT_MS 1000 /* the thread looks at its inbox at least this often */

/* ---- target descriptors -------------------------------------------------- */

typedef struct tdesc {
  atomic_int refs;
  uint64_t id;        /* 0 until the loop assigns one */
  char *job, *url;
  const char *instance; /* the value of the "instance" label in labels */
  k_label_t *labels;    /* sorted; strings owned (job and instance among them) */
  size_t nlabels;
  char *interval_text, *timeout_text;
  int64_t interval_ms, timeout_ms, offset_ms;
  int honor;
  k_expfmt_limits_t lim;
} tdesc_t;

static void tdesc_unref(tdesc_t *d) {
  if (!d || atomic_fetch_sub(&d->refs, 1) != 1) return;
  for (size_t i = 0; i < d->nlabels; i++) {
    free((char *)d->labels[i].name);
    free((char *)d->labels[i].value);
  }
  free(d->labels);
  free(d->job);
  free(d->url);
  free(d->interval_text);
  free(d->timeout_text);
  free(d);
}

static tdesc_t *tdesc_ref(tdesc_t *d) {
  atomic_fetch_add(&d->refs, 1);
  return d;
}

static void tdescs_free(tdesc_t **v, size_t n) {
  for (size_t i = 0; i < n; i++) tdesc_unref(v[i]);
  free(v);
}

/* ---- series key sets (staleness, identity after labels merge) ------------ */

/* A set of label sets serialized as "name\0value\0...".  Records live back
 * to back in buf: [u64 hash][u32 length][u8 flags][key]. */
typedef struct keyset {
  unsigned char *buf;
  size_t len, cap;
  size_t *slots; /* record offset + 1; 0 empty */
  size_t nslots, n;
} keyset_t;

#define KS_HDR (8 + 4 + 1)
#define KS_EXPLICIT_TS 1 /* the series had its own timestamp: never staled */

static void ks_free(keyset_t *k) {
  free(k->buf);
  free(k->slots);
  memset(k, 0, sizeof *k);
}

static void ks_clear(keyset_t *k) {
  k->len = 0;
  k->n = 0;
  if (k->slots) memset(k->slots, 0, k->nslots * sizeof *k->slots);
}

static uint64_t ks_rec_hash(const keyset_t *k, size_t off) {
  uint64_t h;
  memcpy(&h, k->buf + off, 8);
  return h;
}

static uint32_t ks_rec_len(const keyset_t *k, size_t off) {
  uint32_t n;
  memcpy(&n, k->buf + off + 8, 4);
  return n;
}

/* Slot of key (found or where it would go). */
static size_t ks_slot(const keyset_t *k, const void *key, size_t n, uint64_t h, int *found) {
  size_t mask = k->nslots - 1;
  for (size_t j = h & mask;; j = (j + 1) & mask) {
    size_t o = k->slots[j];
    if (!o) {
      *found = 0;
      return j;
    }
    o--;
    if (ks_rec_hash(k, o) == h && ks_rec_len(k, o) == n && !memcmp(k->buf + o + KS_HDR, key, n)) {
      *found = 1;
      return j;
    }
  }
}

static int ks_has(const keyset_t *k, const void *key, size_t n, uint64_t h) {
  int found = 0;
  if (k->nslots) ks_slot(k, key, n, h, &found);
  return found;
}

/* 1 added, 0 already there, KEEL_ENOMEM. */
static int ks_add(keyset_t *k, const void *key, size_t n, uint64_t h, unsigned flags) {
  uint32_t n32 = (uint32_t)n;
  unsigned char f = (unsigned char)flags;
  int found;
  size_t j;
  if ((k->n + 1) * 2 > k->nslots) {
    size_t ns = k->nslots ? k->nslots * 2 : 64;
    size_t *t = calloc(ns, sizeof *t);
    if (!t) return KEEL_ENOMEM;
    for (size_t i = 0; i < k->nslots; i++) {
      size_t o = k->slots[i];
      if (!o) continue;
      for (j = ks_rec_hash(k, o - 1) & (ns - 1); t[j]; j = (j + 1) & (ns - 1)) {
      }
      t[j] = o;
    }
    free(k->slots);
    k->slots = t;
    k->nslots = ns;
  }
  j = ks_slot(k, key, n, h, &found);
  if (found) return 0;
  if (k->cap - k->len < KS_HDR + n) {
    size_t cap = k->cap ? k->cap : 4096;
    unsigned char *nb;
    while (cap - k->len < KS_HDR + n) cap *= 2;
    if (!(nb = realloc(k->buf, cap))) return KEEL_ENOMEM;
    k->buf = nb;
    k->cap = cap;
  }
  memcpy(k->buf + k->len, &h, 8);
  memcpy(k->buf + k->len + 8, &n32, 4);
  k->buf[k->len + 12] = f;
  memcpy(k->buf + k->len + KS_HDR, key, n);
  k->slots[j] = k->len + 1;
  k->len += KS_HDR + n;
  k->n++;
  return 1;
}

/* ---- the engine ---------------------------------------------------------- */

typedef struct result {
  k_cthread_item_t item; /* first: a result of the thread */
  tdesc_t *d;
  int up;
  int64_t t_ms;
  double dur;
  char err[256];
  k_expfmt_set_t set;
} result_t;

typedef struct status {
  tdesc_t *d;
  int health; /* 0 unknown, 1 up, 2 down */
  char err[256];
  int64_t last_ms;
  double last_dur;
} status_t;

typedef struct tgt {
  tdesc_t *d;     /* current configuration */
  tdesc_t *run;   /* configuration of the scrape in flight, NULL when idle */
  CURL *easy;
  struct curl_slist *hdrs;
  int64_t due_ms; /* monotonic */
  int64_t t_wall;
  int64_t t0_ns;
  keel_buf_t body;
  char ctype[128];
  char errbuf[CURL_ERROR_SIZE];
  keyset_t prev; /* series of the last batch */
} tgt_t;

struct k_scrape {
  const keel_log_t *log;
  k_cthread_t ct;
  unsigned char key[crypto_shorthash_KEYBYTES];

  /* under ct's lock */
  int has_pending;
  tdesc_t **pending;
  size_t npending;

  /* loop thread */
  status_t *st; /* sorted by d->id */
  size_t nst;
  uint64_t next_id;

  /* scrape thread */
  tgt_t **tg;   /* sorted by d->id */
  size_t ntg;
  keel_buf_t kbuf; /* a serialized label set */
  keel_buf_t nbuf; /* an exported_ label name being made (merge) */
  k_label_t *scratch;
  size_t scratch_cap;
};

static uint64_t keyhash(const k_scrape_t *s, const void *p, size_t n) {
  unsigned char out[crypto_shorthash_BYTES];
  uint64_t h;
  crypto_shorthash(out, p, n, s->key);
  memcpy(&h, out, sizeof h);
  return h;
}

static void result_free(result_t *r) {
  if (!r) return;
  tdesc_unref(r->d);
  k_expfmt_set_free(&r->set);
  free(r);
}

/* ---- building a batch (scrape thread) ---- */

static int cmp_label(const void *a, const void *b) {
  return strcmp(((const k_label_t *)a)->name, ((const k_label_t *)b)->name);
}

static int scratch_need(k_scrape_t *s, size_t n) {
  k_label_t *p;
  if (n <= s->scratch_cap) return 0;
  if (!(p = realloc(s->scratch, n * sizeof *p))) return KEEL_ENOMEM;
  s->scratch = p;
  s->scratch_cap = n;
  return 0;
}

/* Serializes l[0..n) into s->kbuf. */
static int serialize(k_scrape_t *s, const k_label_t *l, size_t n) {
  int rc = 0;
  keel_buf_reset(&s->kbuf);
  for (size_t i = 0; i < n && !rc; i++)
    if (!(rc = keel_buf_append(&s->kbuf, l[i].name, strlen(l[i].name) + 1)))
      rc = keel_buf_append(&s->kbuf, l[i].value, strlen(l[i].value) + 1);
  return rc;
}

static const char *lget(const k_label_t *l, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(l[i].name, name)) return l[i].value;
  return NULL;
}

/* The labels of scraped sample x merged with the target's tl[0..nt) into
 * s->scratch (sorted); *out_n gets their count.  Prometheus'
 * mutateSampleLabels. */
static int merge(k_scrape_t *s, k_expfmt_set_t *o, const k_expfmt_sample_t *x, const k_label_t *tl,
                 size_t nt, int honor, size_t *out_n) {
  k_label_t conf[64], *cv = conf;
  size_t n = 0, nc = 0;
  keel_buf_t *nb = &s->nbuf;
  int rc = 0;

  if ((rc = scratch_need(s, x->n + 2 * nt))) goto out;
  if (honor) {
    for (size_t i = 0; i < x->n; i++) s->scratch[n++] = x->labels[i];
    for (size_t i = 0; i < nt; i++)
      if (!lget(x->labels, x->n, tl[i].name)) s->scratch[n++] = tl[i];
  } else {
    if (nt > sizeof conf / sizeof conf[0] && !(cv = malloc(nt * sizeof *cv))) {
      rc = KEEL_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < x->n; i++) {
      if (lget(tl, nt, x->labels[i].name)) cv[nc++] = x->labels[i];
      else s->scratch[n++] = x->labels[i];
    }
    for (size_t i = 0; i < nt; i++) s->scratch[n++] = tl[i];
    /* Shorter names first (stable: cv is in name order), as Prometheus'
     * resolveConflictingExposedLabels. */
    for (size_t i = 1; i < nc; i++) {
      k_label_t t = cv[i];
      size_t j = i;
      for (; j > 0 && strlen(cv[j - 1].name) > strlen(t.name); j--) cv[j] = cv[j - 1];
      cv[j] = t;
    }
    for (size_t i = 0; i < nc; i++) {
      const char *nm;
      keel_buf_reset(nb);
      if ((rc = keel_buf_puts(nb, cv[i].name))) goto out;
      do {
        /* "exported_" in front: append 9 bytes, shift, write the prefix. */
        size_t ol = nb->len;
        if ((rc = keel_buf_append(nb, "exported_", 9))) goto out;
        memmove(nb->data + 9, nb->data, ol);
        memcpy(nb->data, "exported_", 9);
      } while (lget(s->scratch, n, nb->data));
      if (!(nm = k_expfmt_set_str(o, nb->data, nb->len))) {
        rc = KEEL_ENOMEM;
        goto out;
      }
      s->scratch[n++] = (k_label_t){nm, cv[i].value};
    }
  }
  qsort(s->scratch, n, sizeof *s->scratch, cmp_label);
  *out_n = n;
out:
  if (cv != conf) free(cv);
  return rc;
}

/* "name{a="b",...}" cut to fit a message (cap >= 8). */
static void series_text(char *buf, size_t cap, const k_label_t *l, size_t n) {
  const char *name = lget(l, n, "__name__");
  size_t j = (size_t)snprintf(buf, cap, "%s", name ? name : "");
  int first = 1;
  for (size_t i = 0; i < n && j < cap; i++) {
    if (!strcmp(l[i].name, "__name__")) continue;
    j += (size_t)snprintf(buf + j, cap - j, "%s%s=\"%s\"", first ? "{" : ",", l[i].name, l[i].value);
    first = 0;
  }
  if (!first && j < cap) j += (size_t)snprintf(buf + j, cap - j, "}");
  if (j >= cap) memcpy(buf + cap - 4, "...", 4);
}

static const char *const report_names[] = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                                           "scrape_samples_post_metric_relabeling",
                                           "scrape_series_added"};
#define NREPORT (sizeof report_names / sizeof report_names[0])

/* The synthetic series' labels (target labels + __name__) into
 * s->scratch[i * (nt + 1) ...], sorted. */
static int report_labels(k_scrape_t *s, const k_label_t *tl, size_t nt) {
  int rc;
  if ((rc = scratch_need(s, NREPORT * (nt + 1)))) return rc;
  for (size_t r = 0; r < NREPORT; r++) {
    k_label_t *l = s->scratch + r * (nt + 1);
    memcpy(l, tl, nt * sizeof *tl);
    l[nt] = (k_label_t){"__name__", report_names[r]};
    qsort(l, nt + 1, sizeof *l, cmp_label);
  }
  return 0;
}

static int report_keys(k_scrape_t *s, keyset_t *cur, const k_label_t *tl, size_t nt) {
  int rc;
  if ((rc = report_labels(s, tl, nt))) return rc;
  for (size_t r = 0; r < NREPORT; r++) {
    if ((rc = serialize(s, s->scratch + r * (nt + 1), nt + 1))) return rc;
    if ((rc = ks_add(cur, s->kbuf.data, s->kbuf.len, keyhash(s, s->kbuf.data, s->kbuf.len), 0)) < 0)
      return rc;
  }
  return 0;
}

/* Stale markers for every series of prev (but those with their own
 * timestamps) that cur lacks; strings go to o's arena. */
static int stale(k_scrape_t *s, k_expfmt_set_t *o, const keyset_t *prev, const keyset_t *cur,
                 int64_t t) {
  uint64_t bits = K_STALE_NAN_BITS;
  double nan;
  int rc = 0;
  memcpy(&nan, &bits, sizeof nan);
  for (size_t off = 0; off < prev->len;) {
    uint64_t h = ks_rec_hash(prev, off);
    uint32_t n = ks_rec_len(prev, off);
    const char *key = (const char *)prev->buf + off + KS_HDR, *p = key;
    size_t nl = 0;
    int flags = prev->buf[off + 12];
    off += KS_HDR + n;
    if ((flags & KS_EXPLICIT_TS) || ks_has(cur, key, n, h)) continue;
    for (const char *q = key; q < key + n; q += strlen(q) + 1) nl++;
    if ((rc = scratch_need(s, nl / 2))) return rc;
    for (size_t i = 0; i < nl / 2; i++) {
      const char *nm = p, *v = p + strlen(p) + 1;
      p = v + strlen(v) + 1;
      s->scratch[i].name = k_expfmt_set_str(o, nm, strlen(nm));
      s->scratch[i].value = k_expfmt_set_str(o, v, strlen(v));
      if (!s->scratch[i].name || !s->scratch[i].value) return KEEL_ENOMEM;
    }
    if ((rc = k_expfmt_set_add(o, s->scratch, nl / 2, t, nan))) return rc;
  }
  return 0;
}

/* Builds r->set from parsed (NULL when the scrape failed, or for the final
 * batch of a removed target: r->up < 0) and moves the target's series
 * memory forward.  On a duplicate series after the merge the scrape turns
 * into a failed one (r->up = 0, r->err says why). */
static int build(k_scrape_t *s, tgt_t *g, tdesc_t *d, k_expfmt_set_t *parsed, result_t *r) {
  k_expfmt_set_t *o = &r->set;
  k_label_t *tl = NULL;
  keyset_t cur = {0};
  size_t nt = d->nlabels, scraped = 0, added = 0;
  int rc = 0;

  if (parsed) {
    k_expfmt_set_take_arena(o, parsed);
    scraped = parsed->n;
  }
  if (!(tl = calloc(nt ? nt : 1, sizeof *tl))) {
    rc = KEEL_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < nt; i++) {
    tl[i].name = k_expfmt_set_str(o, d->labels[i].name, strlen(d->labels[i].name));
    tl[i].value = k_expfmt_set_str(o, d->labels[i].value, strlen(d->labels[i].value));
    if (!tl[i].name || !tl[i].value) {
      rc = KEEL_ENOMEM;
      goto out;
    }
  }
  if (r->up >= 0 && (rc = report_keys(s, &cur, tl, nt))) goto out;
  for (size_t i = 0; parsed && i < parsed->n; i++) {
    const k_expfmt_sample_t *x = &parsed->v[i];
    size_t n;
    uint64_t h;
    int explicit_ts = x->t_ms != K_EXPFMT_NO_TS;
    if ((rc = merge(s, o, x, tl, nt, d->honor, &n))) goto out;
    if ((rc = serialize(s, s->scratch, n))) goto out;
    h = keyhash(s, s->kbuf.data, s->kbuf.len);
    if ((rc = ks_add(&cur, s->kbuf.data, s->kbuf.len, h, explicit_ts ? KS_EXPLICIT_TS : 0)) < 0)
      goto out;
    if (rc == 0) {
      char txt[160];
      series_text(txt, sizeof txt, s->scratch, n);
      snprintf(r->err, sizeof r->err, "duplicate series %s after applying target labels", txt);
      r->up = 0;
      o->n = o->nlab = 0;
      ks_clear(&cur);
      added = 0;
      if ((rc = report_keys(s, &cur, tl, nt))) goto out;
      break;
    }
    if (!explicit_ts && !ks_has(&g->prev, s->kbuf.data, s->kbuf.len, h)) added++;
    if ((rc = k_expfmt_set_add(o, s->scratch, n, explicit_ts ? x->t_ms : r->t_ms, x->v))) goto out;
  }
  if (!r->up) scraped = 0;
  if ((rc = stale(s, o, &g->prev, &cur, r->t_ms))) goto out;
  if (r->up >= 0) {
    double vals[NREPORT] = {r->up, r->dur, (double)scraped, (double)scraped, (double)added};
    if ((rc = report_labels(s, tl, nt))) goto out;
    for (size_t i = 0; i < NREPORT; i++)
      if ((rc = k_expfmt_set_add(o, s->scratch + i * (nt + 1), nt + 1, r->t_ms, vals[i]))) goto out;
  }
  ks_free(&g->prev);
  g->prev = cur;
  memset(&cur, 0, sizeof cur);
  k_expfmt_set_seal(o);
out:
  ks_free(&cur);
  free(tl);
  return rc;
}

/* A batch for g with the given outcome; parsed may be NULL.  When even
 * building fails (out of memory), a bare failed result still goes out so
 * the target's status moves. */
static void emit(k_scrape_t *s, tgt_t *g, tdesc_t *d, int up, int64_t t, double dur,
                 const char *err, k_expfmt_set_t *parsed) {
  result_t *r = calloc(1, sizeof *r);
  if (!r) return;
  r->d = tdesc_ref(d);
  r->up = up;
  r->t_ms = t;
  r->dur = dur;
  snprintf(r->err, sizeof r->err, "%s", err ? err : "");
  k_expfmt_set_init(&r->set);
  if (build(s, g, d, parsed, r)) {
    k_expfmt_set_free(&r->set);
    k_expfmt_set_init(&r->set);
    k_expfmt_set_seal(&r->set);
    if (r->up > 0) r->up = 0;
    snprintf(r->err, sizeof r->err, "out of memory building the batch");
  }
  k_cthread_post(&s->ct, &r->item);
}

/* ---- scraping (scrape thread) ---- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  tgt_t *g = ud;
  size_t n = size * nmemb;
  return keel_buf_append(&g->body, p, n) ? 0 : n; /* 0 aborts: CURLE_WRITE_ERROR */
}

static void tgt_free(k_scrape_t *s, tgt_t *g) {
  if (!g) return;
  if (g->run) curl_multi_remove_handle(s->ct.multi, g->easy);
  if (g->easy) curl_easy_cleanup(g->easy);
  curl_slist_free_all(g->hdrs);
  keel_buf_free(&g->body);
  ks_free(&g->prev);
  tdesc_unref(g->run);
  tdesc_unref(g->d);
  free(g);
}

/* The first slot at or after now for d: now rounded to the interval plus
 * d's offset, so targets spread over the interval (as Prometheus does). */
static int64_t first_due(const tdesc_t *d, int64_t now) {
  int64_t due = now - now % d->interval_ms + d->offset_ms;
  return due < now ? due + d->interval_ms : due;
}

static int start(k_scrape_t *s, tgt_t *g) {
  tdesc_t *d = g->d;
  char tmo[80];
  struct curl_slist *h = NULL, *t;
  CURLcode cc = CURLE_OK;

  curl_slist_free_all(g->hdrs);
  g->hdrs = NULL;
  snprintf(tmo, sizeof tmo, "X-Prometheus-Scrape-Timeout-Seconds: %.3f", (double)d->timeout_ms / 1000);
  if (!(t = curl_slist_append(h, ACCEPT))) goto oom;
  h = t;
  if (!(t = curl_slist_append(h, tmo))) goto oom;
  h = t;
  g->hdrs = h;
  keel_buf_free(&g->body);
  keel_buf_init(&g->body, d->lim.max_body);
  g->errbuf[0] = '\0';
  curl_easy_reset(g->easy);
  cc = (CURLcode)keel_http_easy_common(g->easy, d->url, (long)d->timeout_ms, g->hdrs, on_body, g,
                                       g->errbuf);
#define SETOPT(opt, val) \
  do { \
    if (cc == CURLE_OK) cc = curl_easy_setopt(g->easy, opt, val); \
  } while (0)
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_ACCEPT_ENCODING, ""); /* every encoding curl can decode; the cap counts decoded bytes */
  SETOPT(CURLOPT_FOLLOWLOCATION, 1L);  /* Prometheus' follow_redirects defaults to true */
  SETOPT(CURLOPT_MAXREDIRS, 10L);
  SETOPT(CURLOPT_PRIVATE, g);
#undef SETOPT
  if (cc != CURLE_OK || curl_multi_add_handle(s->ct.multi, g->easy) != CURLM_OK) goto oom;
  g->run = tdesc_ref(d);
  g->t_wall = keel_now_ms();
  g->t0_ns = keel_mono_ns();
  return 0;
oom:
  if (!g->hdrs) curl_slist_free_all(h);
  return KEEL_ENOMEM;
}

/* Thread: g's scrape ended with cc (a transfer no longer running is
 * ignored: its target was reconfigured or removed). */
static void finish(void *ud, void *priv, CURLcode cc) {
  k_scrape_t *s = ud;
  tgt_t *g = priv;
  tdesc_t *d = g->run;
  k_expfmt_set_t parsed;
  keel_err_t e = {0};
  char err[256] = "";
  long code = 0;
  const char *ct = NULL;
  double dur;
  int up = 0;

  if (!d) return;
  k_expfmt_set_init(&parsed);
  curl_multi_remove_handle(s->ct.multi, g->easy);
  g->run = NULL;
  if (cc == CURLE_OK) {
    curl_easy_getinfo(g->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(g->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (code != 200) {
      snprintf(err, sizeof err, "server returned HTTP status %ld", code);
    } else if (k_expfmt_parse_set(g->body.data ? g->body.data : "", g->body.len, k_expfmt_kind(ct),
                                  &d->lim, &parsed, &e)) {
      snprintf(err, sizeof err, "%s", e.msg);
    } else {
      up = 1;
    }
  } else if (cc == CURLE_WRITE_ERROR || cc == CURLE_FILESIZE_EXCEEDED) {
    snprintf(err, sizeof err, "body larger than %zu bytes (body_size_limit)", d->lim.max_body);
  } else if (cc == CURLE_OPERATION_TIMEDOUT) {
    snprintf(err, sizeof err, "timed out after %s (scrape_timeout)", d->timeout_text);
  } else {
    snprintf(err, sizeof err, "%s%s", cc == CURLE_COULDNT_CONNECT ? "cannot connect: " : "",
             keel_http_easy_why(g->easy, cc, g->errbuf));
  }
  keel_buf_free(&g->body); /* idle targets hold no body memory */
  dur = (double)(keel_mono_ns() - g->t0_ns) / 1e9;
  emit(s, g, d, up, g->t_wall, dur, err, up ? &parsed : NULL);
  k_expfmt_set_free(&parsed);
  tdesc_unref(d);
}

static int cmp_tgt(const void *a, const void *b) {
  uint64_t x = (*(tgt_t *const *)a)->d->id, y = (*(tgt_t *const *)b)->d->id;
  return x < y ? -1 : x > y;
}

/* Takes the new configuration nd[0..n) (sorted by id; references moved in). */
static void apply(k_scrape_t *s, tdesc_t **nd, size_t n) {
  tgt_t **ng = calloc(n ? n : 1, sizeof *ng);
  size_t i = 0, j = 0, k = 0;
  int64_t now = keel_mono_ms();

  if (!ng) {
    /* Keep the old set; the loop's view differs until the next configure. */
    tdescs_free(nd, n);
    return;
  }
  while (i < s->ntg || j < n) {
    tgt_t *g = i < s->ntg ? s->tg[i] : NULL;
    tdesc_t *d = j < n ? nd[j] : NULL;
    if (g && (!d || g->d->id < d->id)) {
      /* Removed: its series go stale now. */
      if (g->run) {
        curl_multi_remove_handle(s->ct.multi, g->easy);
        tdesc_unref(g->run);
        g->run = NULL;
      }
      emit(s, g, g->d, -1, keel_now_ms(), 0, "", NULL);
      tgt_free(s, g);
      i++;
    } else if (g && g->d->id == d->id) {
      if (g->d->interval_ms != d->interval_ms) g->due_ms = first_due(d, now);
      tdesc_unref(g->d);
      g->d = d;
      ng[k++] = g;
      i++, j++;
    } else {
      tgt_t *t = calloc(1, sizeof *t);
      if (t && !(t->easy = curl_easy_init())) {
        free(t);
        t = NULL;
      }
      if (!t) {
        tdesc_unref(d); /* out of memory: this target is not scraped */
      } else {
        t->d = d;
        t->due_ms = first_due(d, now);
        keel_buf_init(&t->body, d->lim.max_body);
        ng[k++] = t;
      }
      j++;
    }
  }
  free(nd);
  free(s->tg);
  s->tg = ng;
  s->ntg = k;
  qsort(s->tg, s->ntg, sizeof *s->tg, cmp_tgt);
}

/* Thread: takes a new configuration, starts the scrapes that are due;
 * returns the wait until the next one (MAX_WAIT_MS at most). */
static long turn(void *ud) {
  k_scrape_t *s = ud;
  tdesc_t **nd = NULL;
  size_t n = 0;
  int have;
  int64_t now, wait = MAX_WAIT_MS;

  k_cthread_lock(&s->ct);
  have = s->has_pending;
  if (have) {
    nd = s->pending;
    n = s->npending;
    s->pending = NULL;
    s->npending = 0;
    s->has_pending = 0;
  }
  k_cthread_unlock(&s->ct);
  if (have) apply(s, nd, n);

  now = keel_mono_ms();
  for (size_t i = 0; i < s->ntg; i++) {
    tgt_t *g = s->tg[i];
    if (g->due_ms <= now) {
      /* A scrape still running at its next slot (curl's timeout came
       * late) skips that slot. */
      if (!g->run && start(s, g)) {
        emit(s, g, g->d, 0, keel_now_ms(), 0, "out of memory starting the scrape", NULL);
      }
      g->due_ms += g->d->interval_ms * ((now - g->due_ms) / g->d->interval_ms + 1);
    }
    if (g->due_ms - now < wait) wait = g->due_ms - now;
  }
  return (long)wait;
}

/* Thread, at the end. */
static void stopped(void *ud) {
  k_scrape_t *s = ud;
  for (size_t i = 0; i < s->ntg; i++) tgt_free(s, s->tg[i]);
  free(s->tg);
  s->tg = NULL;
  s->ntg = 0;
}

static void free_item(k_cthread_item_t *it) { result_free((result_t *)(void *)it); }

static const k_cthread_ops_t ops = {turn, finish, stopped};

/* ---- public, loop thread ---- */

int k_scrape_new(const keel_log_t *log, k_scrape_t **out, keel_err_t *e) {
  k_scrape_t *s = NULL;
  int rc = 0;

  *out = NULL;
  if (sodium_init() < 0) return keel_err_set(e, KEEL_EIO, "cannot initialise libsodium");
  if (!(s = calloc(1, sizeof *s))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  s->log = log;
  randombytes_buf(s->key, sizeof s->key);
  keel_buf_init(&s->kbuf, (size_t)64 << 20);
  keel_buf_init(&s->nbuf, 64 << 10);
  /* At most 4 connections per host at once: a host with many targets is
   * not hammered. */
  if ((rc = k_cthread_start(&s->ct, "scrape", 4L, &ops, s, e))) {
    keel_buf_free(&s->kbuf);
    keel_buf_free(&s->nbuf);
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void k_scrape_free(k_scrape_t *s) {
  if (!s) return;
  k_cthread_stop(&s->ct, free_item);
  tdescs_free(s->pending, s->npending);
  for (size_t i = 0; i < s->nst; i++) tdesc_unref(s->st[i].d);
  free(s->st);
  free(s->scratch);
  keel_buf_free(&s->kbuf);
  keel_buf_free(&s->nbuf);
  free(s);
}

int k_scrape_fd(const k_scrape_t *s) { return k_cthread_fd(&s->ct); }

static status_t *status_find(k_scrape_t *s, uint64_t id) {
  size_t lo = 0, hi = s->nst;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->st[mid].d->id == id) return &s->st[mid];
    if (s->st[mid].d->id < id) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

size_t k_scrape_poll(k_scrape_t *s, k_scrape_fn fn, void *ud) {
  result_t *r = (result_t *)(void *)k_cthread_take(&s->ct);
  size_t count = 0;

  while (r) {
    result_t *next = (result_t *)(void *)r->item.next;
    status_t *st = r->up >= 0 ? status_find(s, r->d->id) : NULL;
    if (st) {
      int health = r->up ? 1 : 2;
      if (health == 2 && (st->health != 2 || strcmp(st->err, r->err)))
        keel_log(s->log, KEEL_LOG_WARN, "scrape %s %s: %s", r->d->job, r->d->url, r->err);
      else if (health == 1 && st->health == 2)
        keel_log(s->log, KEEL_LOG_INFO, "scrape %s %s: up again", r->d->job, r->d->url);
      st->health = health;
      snprintf(st->err, sizeof st->err, "%s", r->err);
      st->last_ms = r->t_ms;
      st->last_dur = r->dur;
    }
    if (fn) {
      k_scrape_batch_t b = {r->d->job, r->d->instance, r->d->url, r->up, r->t_ms, r->dur,
                            r->err, r->set.v, r->set.n};
      fn(ud, &b);
    }
    result_free(r);
    count++;
    r = next;
  }
  return count;
}

static int cmp_status_show(const void *a, const void *b) {
  const tdesc_t *x = (*(const status_t *const *)a)->d, *y = (*(const status_t *const *)b)->d;
  int c = strcmp(x->job, y->job);
  if (!c) c = strcmp(x->instance, y->instance);
  return c ? c : strcmp(x->url, y->url);
}

json_t *k_scrape_targets_json(const k_scrape_t *s) {
  static const char *const health[] = {"unknown", "up", "down"};
  const status_t **v = calloc(s->nst ? s->nst : 1, sizeof *v);
  json_t *arr = json_array(), *ret = NULL;

  if (!v || !arr) goto out;
  for (size_t i = 0; i < s->nst; i++) v[i] = &s->st[i];
  qsort(v, s->nst, sizeof *v, cmp_status_show);
  for (size_t i = 0; i < s->nst; i++) {
    const status_t *st = v[i];
    const tdesc_t *d = st->d;
    json_t *o = json_object(), *labels = json_object();
    int bad = !o || !labels;
    for (size_t j = 0; !bad && j < d->nlabels; j++)
      bad = json_object_set_new(labels, d->labels[j].name, json_string(d->labels[j].value)) != 0;
    bad = bad || json_object_set_new(o, "job", json_string(d->job)) ||
          json_object_set_new(o, "instance", json_string(d->instance)) ||
          json_object_set_new(o, "scrape_url", json_string(d->url)) ||
          json_object_set_new(o, "health", json_string(health[st->health])) ||
          json_object_set_new(o, "last_error",
                              st->health == 2 ? json_string(st->err) : json_null()) ||
          json_object_set_new(o, "last_scrape", keel_json_time(st->health ? st->last_ms : 0)) ||
          json_object_set_new(o, "last_scrape_duration_seconds",
                              st->health ? json_real(st->last_dur) : json_null()) ||
          json_object_set_new(o, "scrape_interval", json_string(d->interval_text)) ||
          json_object_set_new(o, "scrape_timeout", json_string(d->timeout_text)) ||
          json_object_set(o, "labels", labels) || json_array_append(arr, o);
    json_decref(labels);
    json_decref(o);
    if (bad) goto out;
  }
  ret = arr;
  arr = NULL;
out:
  json_decref(arr);
  free(v);
  return ret;
}

/* ---- configuration ----------------------------------------------------- */

typedef struct cfgv {
  k_walk_t w;
  tdesc_t **v;
  size_t n, cap;
  json_t *jobs; /* job names seen, as a set */
} cfgv_t;

#include "docwalk_short.h"

static int valid_lname(const char *s) {
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return 0;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
          (*s >= '0' && *s <= '9')))
      return 0;
  return 1;
}

/* A string member: NULL when absent; else *out, or an error. */
static int get_str(cfgv_t *V, const json_t *obj, const char *key, size_t max, const char **out) {
  json_t *v = member(obj, key);
  mark_t m;
  int rc = 0;
  *out = NULL;
  if (!v) return 0;
  m = push_key(V, key);
  if (!json_is_string(v)) rc = verr(V, "expected a string");
  else if (json_string_length(v) > max) rc = verr(V, "longer than %zu bytes", max);
  else if (strlen(json_string_value(v)) != json_string_length(v)) rc = verr(V, "contains a NUL character");
  else *out = json_string_value(v);
  pop(V, m);
  return rc;
}

static int get_duration(cfgv_t *V, const json_t *obj, const char *key, const char **text,
                        int64_t *ms) {
  const char *t;
  mark_t m;
  int rc;
  if ((rc = get_str(V, obj, key, 64, &t)) || !t) return rc;
  m = push_key(V, key);
  if (keel_duration_parse(t, ms))
    rc = verr(V, "expected a duration such as \"15s\" or \"1m\", got '%s'", q((char[80]){0}, t, strlen(t)));
  else if (*ms < K_SCRAPE_MIN_INTERVAL_MS || *ms > K_SCRAPE_MAX_INTERVAL_MS)
    rc = verr(V, "must be between 100ms and 24h");
  else *text = t;
  pop(V, m);
  return rc;
}

static int get_limit(cfgv_t *V, const json_t *obj, const char *key, size_t max, size_t *out) {
  json_t *v = member(obj, key);
  mark_t m;
  int rc = 0;
  if (!v) return 0;
  m = push_key(V, key);
  if (!json_is_integer(v) || json_integer_value(v) < 1 || (uint64_t)json_integer_value(v) > max)
    rc = verr(V, "expected an integer from 1 to %zu", max);
  else *out = (size_t)json_integer_value(v);
  pop(V, m);
  return rc;
}

/* Checks a labels object and copies it into acc (later sets win). */
static int get_labels(cfgv_t *V, const json_t *obj, json_t *acc) {
  json_t *l = member(obj, "labels"), *v;
  const char *k;
  mark_t m;
  int rc = 0;
  if (!l) return 0;
  m = push_key(V, "labels");
  if (!json_is_object(l)) {
    rc = verr(V, "expected an object of label names to values");
    goto out;
  }
  json_object_foreach(l, k, v) {
    mark_t mk = push_key(V, k);
    if (!valid_lname(k) || strlen(k) > K_EXPFMT_MAX_NAME_LEN)
      rc = verr(V, "invalid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)");
    else if (!strncmp(k, "__", 2)) rc = verr(V, "label names starting with '__' are reserved");
    else if (!json_is_string(v) || json_string_length(v) == 0) rc = verr(V, "expected a non-empty string");
    else if (json_string_length(v) > K_EXPFMT_MAX_VALUE_LEN)
      rc = verr(V, "longer than %zu bytes", K_EXPFMT_MAX_VALUE_LEN);
    else if (strlen(json_string_value(v)) != json_string_length(v)) rc = verr(V, "contains a NUL character");
    else if (json_object_set(acc, k, v)) rc = oom(V);
    pop(V, mk);
    if (rc) goto out;
  }
out:
  pop(V, m);
  return rc;
}

/* "host:port": a DNS name or IPv4 address, or [IPv6], and a port. */
static int valid_target(const char *t) {
  const char *p = t, *colon;
  size_t hl;
  long port = 0;
  if (*p == '[') {
    const char *close = strchr(p, ']');
    if (!close || close == p + 1 || close[1] != ':') return 0;
    for (const char *c = p + 1; c < close; c++)
      if (!(strchr("0123456789abcdefABCDEF:.", *c))) return 0;
    colon = close + 1;
  } else {
    colon = strrchr(p, ':');
    if (!colon || colon == p) return 0;
    hl = (size_t)(colon - p);
    if (hl > 253) return 0;
    for (const char *c = p; c < colon; c++)
      if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '.' || *c == '-' || *c == '_'))
        return 0;
  }
  if (!colon[1] || strlen(colon + 1) > 5) return 0;
  for (const char *c = colon + 1; *c; c++) {
    if (*c < '0' || *c > '9') return 0;
    port = port * 10 + (*c - '0');
  }
  return port >= 1 && port <= 65535;
}

static int valid_path(const char *p) {
  if (*p != '/') return 0;
  for (; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#') return 0;
  return 1;
}

typedef struct jobcfg {
  const char *job, *scheme, *path, *itext, *ttext;
  int64_t interval, timeout;
  int honor;
  k_expfmt_limits_t lim;
  json_t *labels; /* job-level labels */
  json_t *seen;   /* this job's URLs, as a set */
} jobcfg_t;

static int add_target(cfgv_t *V, const jobcfg_t *j, const char *addr, const json_t *static_labels) {
  tdesc_t *d = NULL;
  json_t *acc = json_object(), *v;
  const char *k;
  keel_buf_t url;
  size_t i = 0;
  uint64_t h = 1469598103934665603u;
  int rc = 0;

  keel_buf_init(&url, 8192);
  if (!acc || !(d = calloc(1, sizeof *d))) {
    rc = oom(V);
    goto out;
  }
  atomic_init(&d->refs, 1);
  if (json_object_set_new(acc, "job", json_string(j->job)) ||
      json_object_set_new(acc, "instance", json_string(addr)) || json_object_update(acc, j->labels) ||
      (static_labels && json_object_update(acc, (json_t *)static_labels)) ||
      keel_buf_printf(&url, "%s://%s%s", j->scheme, addr, j->path)) {
    rc = oom(V);
    goto out;
  }
  d->job = strdup(j->job);
  d->url = keel_buf_steal(&url);
  d->interval_text = strdup(j->itext);
  d->timeout_text = strdup(j->ttext);
  if ((d->labels = calloc(json_object_size(acc) + 1, sizeof *d->labels)))
    d->nlabels = json_object_size(acc);
  if (!d->job || !d->url || !d->interval_text || !d->timeout_text || !d->labels) {
    rc = oom(V);
    goto out;
  }
  json_object_foreach(acc, k, v) {
    d->labels[i].name = strdup(k);
    d->labels[i].value = strdup(json_string_value(v));
    if (!d->labels[i].name || !d->labels[i].value) {
      rc = oom(V);
      goto out;
    }
    i++;
  }
  qsort(d->labels, d->nlabels, sizeof *d->labels, cmp_label);
  d->instance = lget(d->labels, d->nlabels, "instance");
  d->interval_ms = j->interval;
  d->timeout_ms = j->timeout;
  d->honor = j->honor;
  d->lim = j->lim;
  for (const char *c = d->job; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211u;
  for (const char *c = d->url; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211u;
  d->offset_ms = (int64_t)(h % (uint64_t)d->interval_ms);
  tdesc_t **nv = keel_grow(V->v, &V->cap, V->n, sizeof *nv, 16);
  if (!nv) {
    rc = oom(V);
    goto out;
  }
  V->v = nv;
  V->v[V->n++] = d;
  d = NULL;
out:
  tdesc_unref(d);
  keel_buf_free(&url);
  json_decref(acc);
  return rc;
}

static int check_job(cfgv_t *V, const json_t *jo, const char *gi, int64_t gim, const char *gt,
                     int64_t gtm) {
  static const char *const allowed[] = {"job_name",
                                        "scheme",
                                        "metrics_path",
                                        "scrape_interval",
                                        "scrape_timeout",
                                        "honor_labels",
                                        "labels",
                                        "static_configs",
                                        "sample_limit",
                                        "body_size_limit",
                                        "label_limit",
                                        "label_name_length_limit",
                                        "label_value_length_limit",
                                        NULL};
  static const char *const sallowed[] = {"targets", "labels", NULL};
  jobcfg_t j = {.scheme = "http", .path = "/metrics", .itext = gi, .interval = gim};
  json_t *sc, *hl;
  const char *ttext = NULL;
  int64_t tms = 0;
  char b[80];
  mark_t m;
  int rc;

  j.lim = (k_expfmt_limits_t){K_EXPFMT_MAX_BODY, K_EXPFMT_MAX_SAMPLES, K_EXPFMT_MAX_LABELS,
                              K_EXPFMT_MAX_NAME_LEN, K_EXPFMT_MAX_VALUE_LEN};
  j.labels = json_object();
  j.seen = json_object();
  if (!j.labels || !j.seen) {
    rc = oom(V);
    goto out;
  }
  if ((rc = check_map(V, jo, allowed))) goto out;
  if ((rc = get_str(V, jo, "job_name", 256, &j.job))) goto out;
  if (!j.job) {
    rc = missing(V, "job_name");
    goto out;
  }
  if (!*j.job) {
    m = push_key(V, "job_name");
    rc = verr(V, "must not be empty");
    pop(V, m);
    goto out;
  }
  if (json_object_get(V->jobs, j.job)) {
    m = push_key(V, "job_name");
    rc = verr(V, "'%s' is the name of an earlier job", q(b, j.job, strlen(j.job)));
    pop(V, m);
    goto out;
  }
  if (json_object_set_new(V->jobs, j.job, json_true())) {
    rc = oom(V);
    goto out;
  }
  if ((rc = get_str(V, jo, "scheme", 16, &j.scheme))) goto out;
  if (!j.scheme) j.scheme = "http";
  if (strcmp(j.scheme, "http") && strcmp(j.scheme, "https")) {
    m = push_key(V, "scheme");
    rc = verr(V, "expected \"http\" or \"https\"");
    pop(V, m);
    goto out;
  }
  if ((rc = get_str(V, jo, "metrics_path", 1024, &j.path))) goto out;
  if (!j.path) j.path = "/metrics";
  if (!valid_path(j.path)) {
    m = push_key(V, "metrics_path");
    rc = verr(V, "expected a path starting with '/' (printable ASCII, no spaces or '#')");
    pop(V, m);
    goto out;
  }
  if ((rc = get_duration(V, jo, "scrape_interval", &j.itext, &j.interval))) goto out;
  if ((rc = get_duration(V, jo, "scrape_timeout", &ttext, &tms))) goto out;
  if (ttext) {
    j.ttext = ttext;
    j.timeout = tms;
    if (tms > j.interval) {
      m = push_key(V, "scrape_timeout");
      rc = verr(V, "%s is longer than scrape_interval (%s)", ttext, j.itext);
      pop(V, m);
      goto out;
    }
  } else if (gtm > j.interval) {
    /* An unset timeout longer than the interval shrinks to it, as in
     * Prometheus. */
    j.ttext = j.itext;
    j.timeout = j.interval;
  } else {
    j.ttext = gt;
    j.timeout = gtm;
  }
  if ((hl = member(jo, "honor_labels"))) {
    if (!json_is_boolean(hl)) {
      m = push_key(V, "honor_labels");
      rc = verr(V, "expected true or false");
      pop(V, m);
      goto out;
    }
    j.honor = json_is_true(hl);
  }
  if ((rc = get_limit(V, jo, "sample_limit", 1000000, &j.lim.max_samples)) ||
      (rc = get_limit(V, jo, "body_size_limit", (size_t)256 << 20, &j.lim.max_body)) ||
      (rc = get_limit(V, jo, "label_limit", 1000, &j.lim.max_labels)) ||
      (rc = get_limit(V, jo, "label_name_length_limit", 4096, &j.lim.max_name_len)) ||
      (rc = get_limit(V, jo, "label_value_length_limit", 65536, &j.lim.max_value_len)) ||
      (rc = get_labels(V, jo, j.labels)))
    goto out;
  if ((sc = member(jo, "static_configs"))) {
    m = push_key(V, "static_configs");
    if (!json_is_array(sc)) {
      rc = verr(V, "expected an array");
      pop(V, m);
      goto out;
    }
    for (size_t i = 0; i < json_array_size(sc) && !rc; i++) {
      json_t *so = json_array_get(sc, i), *tg, *sl = NULL;
      mark_t mi = push_idx(V, i), mt;
      if ((rc = check_map(V, so, sallowed))) goto next;
      if (!(sl = json_object())) {
        rc = oom(V);
        goto next;
      }
      if ((rc = get_labels(V, so, sl))) goto next;
      if (!(tg = member(so, "targets"))) {
        rc = missing(V, "targets");
        goto next;
      }
      mt = push_key(V, "targets");
      if (!json_is_array(tg)) rc = verr(V, "expected an array of \"host:port\"");
      for (size_t t = 0; !rc && t < json_array_size(tg); t++) {
        json_t *tv = json_array_get(tg, t);
        const char *addr = json_string_value(tv);
        mark_t mx = push_idx(V, t);
        if (!addr || json_string_length(tv) != strlen(addr) || strlen(addr) > 260 || !valid_target(addr)) {
          rc = addr ? verr(V, "expected \"host:port\", got '%s'", q(b, addr, json_string_length(tv)))
                    : verr(V, "expected a \"host:port\" string");
        } else if (V->n >= K_SCRAPE_MAX_TARGETS) {
          rc = verr(V, "more than %d targets in all", K_SCRAPE_MAX_TARGETS);
        } else if (json_object_get(j.seen, addr)) {
          rc = verr(V, "'%s' appears twice in this job", q(b, addr, strlen(addr)));
        } else if (json_object_set_new(j.seen, addr, json_true())) {
          rc = oom(V);
        } else {
          rc = add_target(V, &j, addr, sl);
        }
        pop(V, mx);
      }
      pop(V, mt);
    next:
      json_decref(sl);
      pop(V, mi);
    }
    pop(V, m);
  }
out:
  json_decref(j.labels);
  json_decref(j.seen);
  return rc;
}

static int check_doc(cfgv_t *V, const json_t *doc) {
  static const char *const top[] = {"global", "scrape_configs", NULL};
  static const char *const gallowed[] = {"scrape_interval", "scrape_timeout", NULL};
  const char *gi = "1m", *gt = "10s";
  int64_t gim = 60000, gtm = 10000;
  int rc;
  json_t *g, *sc;
  mark_t m;

  if (!json_is_object(doc)) return keel_err_set(V->w.e, KEEL_EINVAL, "scrape config: expected an object with \"scrape_configs\"");
  if ((rc = check_map(V, doc, top))) return rc;
  if ((g = member(doc, "global"))) {
    m = push_key(V, "global");
    if (!(rc = check_map(V, g, gallowed)) && !(rc = get_duration(V, g, "scrape_interval", &gi, &gim)))
      rc = get_duration(V, g, "scrape_timeout", &gt, &gtm);
    if (!rc && gtm > gim) {
      if (member(g, "scrape_timeout")) {
        mark_t mt = push_key(V, "scrape_timeout");
        rc = verr(V, "%s is longer than scrape_interval (%s)", gt, gi);
        pop(V, mt);
      } else {
        /* The default timeout (10s) shrinks to a shorter interval. */
        gt = gi;
        gtm = gim;
      }
    }
    pop(V, m);
    if (rc) return rc;
  }
  if (!(sc = member(doc, "scrape_configs"))) return 0;
  m = push_key(V, "scrape_configs");
  if (!json_is_array(sc)) rc = verr(V, "expected an array");
  else if (json_array_size(sc) > K_SCRAPE_MAX_JOBS) rc = verr(V, "more than %d jobs", K_SCRAPE_MAX_JOBS);
  for (size_t i = 0; !rc && i < json_array_size(sc); i++) {
    mark_t mi = push_idx(V, i);
    rc = check_job(V, json_array_get(sc, i), gi, gim, gt, gtm);
    pop(V, mi);
  }
  pop(V, m);
  return rc;
}

/* On return V->v holds the targets (caller frees them, also on error). */
static int validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos, cfgv_t *V,
                    keel_err_t *e) {
  int rc;
  memset(V, 0, sizeof *V);
  V->w.name = name;
  V->w.pos = pos;
  V->w.e = e;
  if (!(V->jobs = json_object())) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = check_doc(V, doc);
  json_decref(V->jobs);
  V->jobs = NULL;
  return rc;
}

int k_scrape_config_check(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                          keel_err_t *e) {
  cfgv_t V;
  int rc = validate(name, doc, pos, &V, e);
  tdescs_free(V.v, V.n);
  return rc;
}

static int cmp_key(const void *a, const void *b) {
  const tdesc_t *x = *(tdesc_t *const *)a, *y = *(tdesc_t *const *)b;
  int c = strcmp(x->job, y->job);
  return c ? c : strcmp(x->url, y->url);
}

static int cmp_status_key(const void *a, const void *b) {
  return cmp_key(&(*(const status_t *const *)a)->d, &(*(const status_t *const *)b)->d);
}

static int cmp_status_id(const void *a, const void *b) {
  uint64_t x = ((const status_t *)a)->d->id, y = ((const status_t *)b)->d->id;
  return x < y ? -1 : x > y;
}

static int cmp_desc_id(const void *a, const void *b) {
  uint64_t x = (*(tdesc_t *const *)a)->id, y = (*(tdesc_t *const *)b)->id;
  return x < y ? -1 : x > y;
}

int k_scrape_configure_doc(k_scrape_t *s, const char *name, const json_t *doc,
                           const keel_yaml_pos_t *pos, keel_err_t *e) {
  cfgv_t V;
  status_t *nst = NULL, **old = NULL;
  tdesc_t **thr = NULL, **stale_pending = NULL;
  size_t nstale = 0;
  int rc;

  if ((rc = validate(name, doc, pos, &V, e))) goto out;
  nst = calloc(V.n ? V.n : 1, sizeof *nst);
  old = calloc(s->nst ? s->nst : 1, sizeof *old);
  thr = calloc(V.n ? V.n : 1, sizeof *thr);
  if (!nst || !old || !thr) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  /* Old statuses by (job, url), to carry ids and status over. */
  for (size_t i = 0; i < s->nst; i++) old[i] = &s->st[i];
  qsort(old, s->nst, sizeof *old, cmp_status_key);
  for (size_t i = 0; i < V.n; i++) {
    tdesc_t *d = V.v[i];
    status_t *hit = NULL;
    for (size_t lo = 0, hi = s->nst; lo < hi;) {
      size_t mid = lo + (hi - lo) / 2;
      int c = cmp_key(&d, &old[mid]->d);
      if (!c) {
        hit = old[mid];
        break;
      }
      if (c < 0) hi = mid;
      else lo = mid + 1;
    }
    if (hit) {
      nst[i] = *hit;
      d->id = hit->d->id;
    } else {
      d->id = ++s->next_id;
    }
    nst[i].d = d; /* takes V's reference */
    thr[i] = tdesc_ref(d);
  }
  qsort(nst, V.n, sizeof *nst, cmp_status_id);
  qsort(thr, V.n, sizeof *thr, cmp_desc_id);

  k_cthread_lock(&s->ct);
  stale_pending = s->pending; /* a configuration the thread has not taken yet */
  nstale = s->npending;
  s->pending = thr;
  s->npending = V.n;
  s->has_pending = 1;
  k_cthread_unlock(&s->ct);
  k_cthread_wake(&s->ct);
  thr = NULL;

  for (size_t i = 0; i < s->nst; i++) tdesc_unref(s->st[i].d);
  free(s->st);
  s->st = nst;
  s->nst = V.n;
  nst = NULL;
  free(V.v);
  V.v = NULL;
  V.n = 0;
out:
  tdescs_free(stale_pending, nstale);
  free(thr);
  free(nst);
  free(old);
  tdescs_free(V.v, V.n);
  return rc;
}

int k_scrape_configure(k_scrape_t *s, const char *config_json, keel_err_t *e) {
  json_t *doc = NULL;
  int rc;
  if ((rc = keel_json_parse(config_json, strlen(config_json), &doc, e))) goto out;
  rc = k_scrape_configure_doc(s, NULL, doc, NULL, e);
out:
  json_decref(doc);
  return rc;
}
