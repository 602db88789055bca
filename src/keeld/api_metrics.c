/* api_metrics.c — metrics into the TSDB: agents' batches (POST
 * /v1/agent/metrics), scraped targets (scrape engine results), scrape
 * configuration (kind: ScrapeConfig through /v1/apply) and its status
 * (GET /v1/metrics/targets).
 *
 * Agents' series get keeld's labels: instance (the hostname), agent_id and
 * the agent's tags (a tag key that is not a valid label name has its other
 * characters replaced by '_'); keeld's labels win over what the agent sent.
 * An agent's batch is answered only once its samples are durable in the
 * TSDB's WAL (the request waits for the TSDB generation, as mutations wait
 * for the store's).  Ingest is data, not a change of state: it is not
 * audited per batch (metrics keep their own counters).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/metricbatch.h"
#include "keel/time.h"
#include "metrics/tsdb.h"
#include "scrape/scrape.h"
#include "server.h"

int k_metrics_querier(k_server_t *srv, k_querier_t **q, keel_err_t *e) {
  return k_tsdb_querier(srv->tsdb, q, e);
}

/* ---- agents' batches ---------------------------------------------------------------- */

/* Series are gathered (labels merged and copied, samples copied) and
 * resolved FLUSH_SERIES at a time with one k_tsdb_refs call, which is about
 * twice as fast as k_tsdb_ref one by one on a large head; the caps bound
 * what one request holds besides the body. */
#define FLUSH_SERIES 4096
#define FLUSH_SAMPLES 65536
#define FLUSH_BYTES ((size_t)1 << 20)

typedef struct pend {
  size_t lab, nlab; /* offsets into loff (two per label) */
  size_t smp, n;    /* offset into t/v */
} pend_t;

typedef struct ingest {
  k_server_t *srv;
  const k_agent_t *a;
  k_host_labels_t hl;                /* keeld's labels of the agent (fleet.h) */
  k_label_t *merged;
  size_t cap;
  /* pending series: the decoder's strings and samples are borrowed for
   * one callback only, so they are copied here until the next flush */
  pend_t *pend;
  size_t npend, cappend;
  char *sb; /* label strings, NUL-terminated; loff holds offsets into it */
  size_t nsb, capsb;
  size_t *loff;
  size_t nloff, caploff;
  int64_t *t;
  double *v;
  size_t nsmp, capsmp, capv;
  k_label_t *labs; /* built at flush from sb and loff */
  k_labels_t *sets;
  uint64_t *refs;
  size_t capflush, caplabs, caprefs;
  uint64_t accepted, refused;
  keel_err_t err;
} ingest_t;

static void ingest_free(ingest_t *in) {
  free(in->merged);
  free(in->pend);
  free(in->sb);
  free(in->loff);
  free(in->t);
  free(in->v);
  free(in->labs);
  free(in->sets);
  free(in->refs);
}

/* Grows *p (elements of size sz, capacity *cap) to hold need. */
static int grow(void *p, size_t *cap, size_t need, size_t sz) {
  void *np;
  size_t nc;
  if (need <= *cap) return 0;
  nc = *cap ? *cap : 64;
  while (nc < need) nc *= 2;
  if (!(np = realloc(*(void **)p, nc * sz))) return KEEL_ENOMEM;
  *(void **)p = np;
  *cap = nc;
  return 0;
}

/* The agent's labels merged with keeld's (keeld's win), sorted. */
static int merge(ingest_t *in, const keel_mb_label_t *l, size_t n, size_t *out_n) {
  size_t i = 0, j = 0, k = 0, need = n + in->hl.n;
  if (need > in->cap) {
    k_label_t *m = realloc(in->merged, need * sizeof *m);
    if (!m) return KEEL_ENOMEM;
    in->merged = m;
    in->cap = need;
  }
  while (i < n || j < in->hl.n) {
    int c = i == n ? 1 : j == in->hl.n ? -1 : strcmp(l[i].name, in->hl.v[j].name);
    if (c < 0) {
      in->merged[k++] = (k_label_t){l[i].name, l[i].value};
      i++;
    } else if (c > 0) in->merged[k++] = in->hl.v[j++];
    else {
      in->merged[k++] = in->hl.v[j++];
      i++;
    }
  }
  *out_n = k;
  return 0;
}

/* One sample into the open batch: by *ref, or by labels when ref is NULL
 * or a block cut dropped it; a full batch is committed and the sample
 * tried again once.  0, KEEL_ECONFLICT (refused; the caller counts it) or
 * an error.  The one append path of agents' and scraped samples. */
static int put_sample(k_server_t *srv, const uint64_t *ref, const k_labels_t *l, int64_t t,
                      double v, keel_err_t *e) {
  int rc, retried = 0;
  for (;;) {
    rc = ref ? k_tsdb_append_ref(srv->tsdb, *ref, t, v, e)
             : k_tsdb_append(srv->tsdb, l->v, l->n, t, v, e);
    if (rc == KEEL_ENOENT && ref) {
      ref = NULL;
      continue;
    }
    if (rc != KEEL_ETOOBIG || retried++) return rc;
    {
      uint64_t gen;
      if ((rc = k_tsdb_commit(srv->tsdb, &gen, e))) return rc;
    }
  }
}

/* Appends samples t/v[0..n) of the series (ref, labels) to the open batch. */
static int append_series(ingest_t *in, uint64_t ref, const k_labels_t *l, const int64_t *t,
                         const double *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    keel_err_t e = {0};
    int rc = put_sample(in->srv, &ref, l, t[i], v[i], &e);
    if (rc == KEEL_ECONFLICT) {
      in->refused++;
      continue;
    }
    if (rc) {
      in->err = e;
      return rc;
    }
    in->accepted++;
  }
  return 0;
}

/* Resolves the pending series with one k_tsdb_refs, then appends their
 * samples in batch order. */
static int flush(ingest_t *in) {
  size_t nl = in->nloff / 2, failed;
  int rc;
  if (!in->npend) return 0;
  if (grow(&in->labs, &in->caplabs, nl, sizeof *in->labs) ||
      grow(&in->sets, &in->capflush, in->npend, sizeof *in->sets) ||
      grow(&in->refs, &in->caprefs, in->npend, sizeof *in->refs))
    return keel_err_set(&in->err, KEEL_ENOMEM, "out of memory");
  for (size_t i = 0; i < nl; i++)
    in->labs[i] = (k_label_t){in->sb + in->loff[2 * i], in->sb + in->loff[2 * i + 1]};
  for (size_t i = 0; i < in->npend; i++)
    in->sets[i] = (k_labels_t){in->labs + in->pend[i].lab, in->pend[i].nlab};
  if ((rc = k_tsdb_refs(in->srv->tsdb, in->sets, in->npend, in->refs, &failed, &in->err)))
    return rc;
  for (size_t i = 0; i < in->npend; i++)
    if ((rc = append_series(in, in->refs[i], &in->sets[i], in->t + in->pend[i].smp,
                            in->v + in->pend[i].smp, in->pend[i].n)))
      return rc;
  in->npend = in->nsb = in->nloff = in->nsmp = 0;
  return 0;
}

static int push_str(ingest_t *in, const char *s, size_t *off) {
  size_t n = strlen(s) + 1;
  if (grow(&in->sb, &in->capsb, in->nsb + n, 1)) return KEEL_ENOMEM;
  memcpy(in->sb + in->nsb, s, n);
  *off = in->nsb;
  in->nsb += n;
  return 0;
}

static int on_series(void *ud, const keel_mb_label_t *labels, size_t nlabels, const int64_t *t,
                     const double *v, size_t n) {
  ingest_t *in = ud;
  pend_t *p;
  size_t nl;
  int rc;
  if ((rc = merge(in, labels, nlabels, &nl))) return keel_err_set(&in->err, rc, "out of memory");
  if (grow(&in->pend, &in->cappend, in->npend + 1, sizeof *in->pend) ||
      grow(&in->loff, &in->caploff, in->nloff + 2 * nl, sizeof *in->loff) ||
      grow(&in->t, &in->capsmp, in->nsmp + n, sizeof *in->t) ||
      grow(&in->v, &in->capv, in->nsmp + n, sizeof *in->v))
    return keel_err_set(&in->err, KEEL_ENOMEM, "out of memory");
  p = &in->pend[in->npend];
  *p = (pend_t){in->nloff / 2, nl, in->nsmp, n};
  for (size_t i = 0; i < nl; i++)
    if (push_str(in, in->merged[i].name, &in->loff[in->nloff++]) ||
        push_str(in, in->merged[i].value, &in->loff[in->nloff++]))
      return keel_err_set(&in->err, KEEL_ENOMEM, "out of memory");
  memcpy(in->t + in->nsmp, t, n * sizeof *t);
  memcpy(in->v + in->nsmp, v, n * sizeof *v);
  in->nsmp += n;
  in->npend++;
  if (in->npend >= FLUSH_SERIES || in->nsmp >= FLUSH_SAMPLES || in->nsb >= FLUSH_BYTES)
    return flush(in);
  return 0;
}

/* The body is a batch whatever its Content-Type says: the batch's own
 * magic and checks decide (keel_mb_decode). */
int k_api_agent_metrics_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "agent/%s/metrics", req->agent->id);
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", req->agent->id);
  return 0;
}

int k_api_agent_metrics(k_server_t *srv, k_req_t *req) {
  ingest_t in;
  int rc;

  memset(&in, 0, sizeof in);
  in.srv = srv;
  in.a = req->agent;
  k_fleet_seen(srv->fleet, req->agent, keel_now_ms());
  /* What others staged this iteration goes to the WAL first, so that a
   * rollback below can only drop this batch's samples. */
  {
    uint64_t gen;
    if ((rc = k_tsdb_commit(srv->tsdb, &gen, &in.err))) {
      keel_log(&srv->log, KEEL_LOG_ERROR, "metrics commit: %s", in.err.msg);
      return k_req_fail_err(req, KEEL_EIO, &in.err);
    }
  }
  k_fleet_host_labels(in.a, &in.hl);
  rc = keel_mb_decode(req->body.data, req->body.len, on_series, &in, &in.err);
  if (!rc) rc = flush(&in);
  ingest_free(&in);
  if (rc) {
    /* samples staged before the error are dropped: a batch is all or nothing */
    k_tsdb_rollback(srv->tsdb);
    if (rc == KEEL_ENOMEM || rc == KEEL_EIO) {
      keel_log(&srv->log, KEEL_LOG_ERROR, "metrics from %s: %s", req->agent->id, in.err.msg);
      return k_req_fail_err(req, KEEL_EIO, &in.err);
    }
    return k_req_fail(req, 400, "bad_request", "metrics batch: %s", in.err.msg);
  }
  srv->metrics_accepted += in.accepted;
  srv->metrics_refused += in.refused;
  req->wait_tsdb_gen = k_tsdb_visible_gen(srv->tsdb);
  req->out = json_pack("{s:I,s:I}", "accepted", (json_int_t)in.accepted, "refused", (json_int_t)in.refused);
  return req->out ? 0 : k_req_fail_err(req, KEEL_ENOMEM, NULL);
}

/* ---- scraped targets ---------------------------------------------------------------- */

/* One scrape's samples into the TSDB (committed with the loop's batch);
 * the series are looked up together (k_tsdb_refs: their memory accesses
 * overlap), then appended by ref. */
static void on_scrape(void *ud, const k_scrape_batch_t *b) {
  k_server_t *srv = ud;
  k_labels_t *sets = b->n ? malloc(b->n * sizeof *sets) : NULL;
  uint64_t *refs = b->n ? malloc(b->n * sizeof *refs) : NULL;
  size_t failed = 0, nref = 0;
  keel_err_t e = {0};

  if (sets && refs) {
    for (size_t i = 0; i < b->n; i++) sets[i] = (k_labels_t){b->samples[i].labels, b->samples[i].n};
    /* on an error, the refs before the set at fault are good */
    nref = k_tsdb_refs(srv->tsdb, sets, b->n, refs, &failed, &e) ? failed : b->n;
  }
  for (size_t i = 0; i < b->n; i++) {
    const k_expfmt_sample_t *s = &b->samples[i];
    int rc;
    memset(&e, 0, sizeof e);
    rc = put_sample(srv, i < nref ? &refs[i] : NULL, &(k_labels_t){s->labels, s->n}, s->t_ms, s->v, &e);
    if (rc == KEEL_ECONFLICT) srv->metrics_refused++;
    else if (rc) {
      keel_log(&srv->log, KEEL_LOG_WARN, "scrape %s/%s: sample dropped: %s", b->job, b->instance, e.msg);
      srv->metrics_refused++;
    } else {
      srv->metrics_accepted++;
    }
  }
  free(sets);
  free(refs);
}

void k_metrics_scrape_poll(k_server_t *srv) { k_scrape_poll(srv->scrape, on_scrape, srv); }

int k_api_metrics_targets(k_server_t *srv, k_req_t *req) {
  json_t *t = k_scrape_targets_json(srv->scrape);
  if (!t) return k_req_fail_err(req, KEEL_ENOMEM, NULL);
  req->out = json_pack("{s:o}", "targets", t);
  return req->out ? 0 : k_req_fail_err(req, KEEL_ENOMEM, NULL);
}

int k_api_metrics_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "metrics");
  return 0;
}

/* ---- scrape configuration -------------------------------------------------------------- */

static int cfg_row(void *ud, const k_val_t *c, int n) {
  json_t **o = ud;
  if (n < 1 || c[0].type != K_VAL_TEXT) return 0;
  *o = json_loads(c[0].s, 0, NULL);
  return 0;
}

int k_metrics_config_load(k_server_t *srv, keel_err_t *e) {
  json_t *doc = NULL;
  int rc = k_store_exec(srv->store, "SELECT spec FROM metrics_config WHERE name = 'scrape'", NULL, 0,
                        cfg_row, &doc, e);
  if (rc) return rc;
  if (!doc) return 0;
  rc = k_scrape_configure_doc(srv->scrape, "stored scrape configuration", doc, NULL, e);
  json_decref(doc);
  return rc;
}

int k_metrics_config_apply(k_server_t *srv, const json_t *doc, int dry_run, json_t **report,
                           keel_buf_t *detail, keel_err_t *e) {
  json_t *cur = NULL;
  char *text = keel_json_canonical(doc), *old = NULL;
  int rc, changed;

  *report = NULL;
  if (!text) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_store_exec(srv->store, "SELECT spec FROM metrics_config WHERE name = 'scrape'", NULL, 0,
                         cfg_row, &cur, e)))
    goto out;
  old = cur ? keel_json_canonical(cur) : NULL;
  changed = !old || strcmp(old, text);
  if (changed && !dry_run) {
    k_val_t a[] = {K_TEXT(text), K_INT(keel_now_ms())};
    if ((rc = k_store_exec(srv->store,
                           "INSERT INTO metrics_config(name, spec, updated_ms) VALUES ('scrape', ?, ?)"
                           " ON CONFLICT(name) DO UPDATE SET spec = excluded.spec,"
                           " updated_ms = excluded.updated_ms",
                           a, 2, NULL, NULL, e)))
      goto out;
    if ((rc = k_scrape_configure_doc(srv->scrape, "ScrapeConfig", doc, NULL, e))) goto out;
  }
  *report = json_pack("{s:b,s:b,s:b,s:s,s:[],s:[]}", "changed", changed, "dry_run", dry_run,
                      "prune", 0, "summary",
                      !changed ? "no changes" : dry_run ? "dry run: scrape configuration would change"
                                                        : "scrape configuration replaced",
                      "changes", "removed");
  if (*report && changed)
    json_array_append_new(json_object_get(*report, "changes"),
                          json_pack("{s:s,s:s,s:s,s:[]}", "op", cur ? "update" : "create", "kind",
                                    "scrape_config", "name", "scrape", "fields"));
  keel_buf_reset(detail);
  keel_buf_printf(detail, "%s scrape configuration%s", cur ? "update" : "create",
                  dry_run ? " (dry run)" : "");
  rc = *report ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  json_decref(cur);
  free(text);
  free(old);
  return rc;
}
