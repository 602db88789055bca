/* eval.c — evaluating alert rules (alert/alert.h): conditions into
 * samples, samples through Prometheus' state machine, transitions into the
 * store with their alert.* events. */
#include "alert/alert_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"
#include "promql/promql.h"

#define RENDER_MAX 16384 /* bytes of one rendered label or annotation */

/* ---- pure helpers ------------------------------------------------------------------------- */

static int cmp_str(const void *x, const void *y) {
  return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* FNV-1a 64 (prometheus/common/model: hashAdd / hashAddByte). */
#define FNV_OFFSET UINT64_C(14695981039346656037)
#define FNV_PRIME UINT64_C(1099511628211)

static uint64_t fnv_add(uint64_t h, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= FNV_PRIME;
  }
  return h;
}

void k_alert_fingerprint(const json_t *labels, char out[17]) {
  const char *k, *stack[64], **names = stack;
  json_t *v;
  size_t n = 0, cap = json_object_size(labels);
  uint64_t h = FNV_OFFSET;
  static const char sep = (char)0xff;
  if (cap > 64 && !(names = malloc(cap * sizeof *names))) cap = 64, names = stack;
  json_object_foreach((json_t *)labels, k, v) {
    if (n < cap) names[n++] = k;
  }
  qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    const json_t *val = json_object_get(labels, names[i]);
    h = fnv_add(h, names[i], strlen(names[i]));
    h = fnv_add(h, &sep, 1);
    h = fnv_add(h, json_string_value(val) ? json_string_value(val) : "",
                json_string_value(val) ? json_string_length(val) : 0);
    h = fnv_add(h, &sep, 1);
  }
  if (names != stack) free(names);
  snprintf(out, 17, "%016" PRIx64, h);
}

char *k_alert_value_text(double v, char buf[K_ALERT_VALUE_BUF]) {
  char e[40];
  int p, exp;
  if (isnan(v)) return strcpy(buf, "NaN");
  if (isinf(v)) return strcpy(buf, v > 0 ? "+Inf" : "-Inf");
  if (v == 0) return strcpy(buf, signbit(v) ? "-0" : "0");
  /* the shortest digits that read back as v (as Go's strconv finds) */
  for (p = 1; p < 17; p++) {
    snprintf(e, sizeof e, "%.*e", p - 1, v);
    if (strtod(e, NULL) == v) break;
  }
  snprintf(e, sizeof e, "%.*e", p - 1, v);
  exp = atoi(strchr(e, 'e') + 1);
  /* %g with shortest precision: exponent form below 1e-4 and from 1e6 */
  if (exp < -4 || exp >= 6) return strcpy(buf, e); /* C writes e+06 like Go */
  snprintf(buf, K_ALERT_VALUE_BUF, "%.*f", p - 1 - exp > 0 ? p - 1 - exp : 0, v);
  return buf;
}

/* ---- templates ----------------------------------------------------------------------------- */

typedef struct tctx {
  const json_t *labels; /* $labels */
  const char *value;    /* $value, "" when none */
} tctx_t;

/* $labels.NAME (missing: empty, as in Prometheus) and $value; the document
 * check allowed nothing else. */
static int lookup(void *ud, const char *name, const char **value, size_t *len) {
  const tctx_t *c = ud;
  if (!strcmp(name, "$value")) {
    *value = c->value;
  } else if (!strncmp(name, "$labels.", 8)) {
    const json_t *v = json_object_get(c->labels, name + 8);
    *value = json_string_value(v);
  } else {
    return KEEL_ENOENT;
  }
  *len = *value ? strlen(*value) : 0;
  return 0;
}

/* Renders every template of ts into obj. */
static int render(const tmpls_t *ts, const tctx_t *c, json_t *obj, keel_buf_t *b,
                  keel_err_t *e) {
  for (size_t i = 0; i < ts->n; i++) {
    int rc;
    keel_buf_reset(b);
    if ((rc = keel_tmpl_render(ts->t[i], KEEL_TMPL_RAW, lookup, (void *)c, b, e))) {
      char m[sizeof e->msg];
      snprintf(m, sizeof m, "%s", e->msg);
      return keel_err_set(e, rc, "%s: %s", ts->names[i], m);
    }
    if (json_object_set_new(obj, ts->names[i], json_stringn(b->data ? b->data : "", b->len)))
      return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  return 0;
}

/* ---- samples: what the condition says now ---------------------------------------------------- */

typedef struct sample {
  char fp[17];
  char *ikey;
  json_t *labels, *annotations, *source; /* source only for event rules */
  const char *cause;
  double value;
  int has_value;
} sample_t;

typedef struct samples {
  sample_t *v;
  size_t n, cap;
} samples_t;

static void samples_free(samples_t *s) {
  for (size_t i = 0; i < s->n; i++) {
    free(s->v[i].ikey);
    json_decref(s->v[i].labels);
    json_decref(s->v[i].annotations);
    json_decref(s->v[i].source);
  }
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* One sample of r: src are its labels as the condition gave them ($labels;
 * series labels, or the event's data.labels), value or none. */
static int add_sample(rule_t *r, samples_t *s, const json_t *src, int has_value, double value,
                      const char *ikey, const json_t *source, const char *cause, keel_buf_t *b,
                      keel_err_t *e) {
  char vt[K_ALERT_VALUE_BUF];
  tctx_t c = {src, has_value ? k_alert_value_text(value, vt) : ""};
  sample_t *x;
  const char *k;
  json_t *v;
  if (s->n == K_ALERT_MAX_PER_RULE)
    return keel_err_set(e, KEEL_ETOOBIG, "more than %d alerts", K_ALERT_MAX_PER_RULE);
  if (!(x = keel_grow(s->v, &s->cap, s->n, sizeof *x, 8)))
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  s->v = x;
  x = &s->v[s->n++]; /* samples_free owns it from here */
  memset(x, 0, sizeof *x);
  x->labels = json_object();
  x->annotations = json_object();
  if (!x->labels || !x->annotations) goto nomem;
  /* labels: the source's (strings; without the metric name) + the rule's
   * (rendered) + alertname and severity */
  json_object_foreach((json_t *)src, k, v) {
    if (json_is_string(v) && strcmp(k, "__name__") && json_object_set(x->labels, k, v)) goto nomem;
  }
  if (render(&r->labels, &c, x->labels, b, e) || render(&r->annotations, &c, x->annotations, b, e))
    return e->code;
  if (json_object_set_new(x->labels, "alertname", json_string(r->name)) ||
      json_object_set_new(x->labels, "severity", json_string(r->severity)))
    goto nomem;
  k_alert_fingerprint(x->labels, x->fp);
  if (!(x->ikey = strdup(ikey ? ikey : x->fp))) goto nomem;
  x->source = source ? json_incref((json_t *)source) : NULL;
  x->cause = cause;
  x->value = value;
  x->has_value = has_value;
  return 0;
nomem:
  return keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

/* An instant query at now of the tree parsed when the rule was loaded:
 * each result series is a sample. */
static int expr_samples(k_alerts_t *a, rule_t *r, int64_t now, k_querier_t **q, samples_t *s,
                        keel_buf_t *b, keel_err_t *e) {
  k_promql_err_t pe;
  json_t *res = NULL, *item, *empty = NULL;
  const char *type;
  size_t i;
  int rc = 0;

  memset(&pe, 0, sizeof pe);
  if (!r->pexpr) return keel_err_set(e, KEEL_EINVAL, "%.*s", 200, r->expr_err ? r->expr_err : "");
  if (!*q) {
    if (!a->d.querier) return keel_err_set(e, KEEL_EIO, "no metrics store");
    if ((rc = a->d.querier(a->d.querier_ud, q, e))) return rc;
  }
  if (k_promql_instant_expr(*q, r->pexpr, now, NULL, &res, &pe))
    return keel_err_set(e, pe.code ? pe.code : KEEL_EIO, "%.*s", 200, pe.msg);
  type = keel_json_str(res, "resultType");
  item = json_object_get(res, "result");
  if (type && !strcmp(type, "scalar")) {
    /* a scalar is one sample without labels, as Prometheus' rules take it */
    const char *v = json_string_value(json_array_get(item, 1));
    if (!(empty = json_object())) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    else rc = add_sample(r, s, empty, 1, v ? strtod(v, NULL) : NAN, NULL, NULL, NULL, b, e);
  } else if (type && !strcmp(type, "vector")) {
    json_t *it;
    json_array_foreach(item, i, it) {
      const char *v = json_string_value(json_array_get(json_object_get(it, "value"), 1));
      if ((rc = add_sample(r, s, json_object_get(it, "metric"), 1, v ? strtod(v, NULL) : NAN, NULL,
                           NULL, NULL, b, e)))
        break;
    }
  } else {
    rc = keel_err_set(e, KEEL_EINVAL, "the expression gave a %s, not a vector", type ? type : "?");
  }
  json_decref(empty);
  json_decref(res);
  return rc;
}

/* What the events said since the last evaluation: with clear, every
 * instance started and not cleared; without, every instance an event came
 * for.  The conditions are then reset for the next evaluation. */
static int event_samples(rule_t *r, samples_t *s, keel_buf_t *b, keel_err_t *e) {
  int rc = 0;
  for (size_t i = 0; !rc && i < r->ncond; i++) {
    cond_t *c = &r->cond[i];
    if (r->clear ? c->active : c->seen)
      rc = add_sample(r, s, c->source, 0, 0, c->ikey, c->source, c->cause, b, e);
  }
  return rc;
}

/* After an evaluation (and after its samples, which point into the
 * conditions): what the next one starts from. */
static void cond_gc(rule_t *r) {
  size_t keep = 0;
  for (size_t i = 0; i < r->ncond; i++) {
    cond_t *c = &r->cond[i];
    c->seen = 0;
    if (c->active) {
      r->cond[keep++] = *c;
      continue;
    }
    free(c->ikey);
    free(c->cause);
    json_decref(c->source);
  }
  r->ncond = keep;
}

/* ---- the state machine --------------------------------------------------------------------- */

typedef struct change {
  rule_t *r;
  inst_t *i;
  const char *ev; /* alert.* type, or NULL: the row only */
  int del;
} change_t;

typedef struct changes {
  change_t *v;
  size_t n, cap;
  inst_t **dead; /* removed from their rule: freed after the write */
  size_t ndead, capdead;
} changes_t;

static int push_change(changes_t *c, rule_t *r, inst_t *i, const char *ev, int del) {
  change_t *v = keel_grow(c->v, &c->cap, c->n, sizeof *v, 16);
  if (!v) return KEEL_ENOMEM;
  c->v = v;
  c->v[c->n++] = (change_t){r, i, ev, del};
  if (del) {
    inst_t **d = keel_grow(c->dead, &c->capdead, c->ndead, sizeof *d, 16);
    if (!d) return KEEL_ENOMEM;
    c->dead = d;
    c->dead[c->ndead++] = i;
  }
  return 0;
}

/* The live (not resolved) alert of an event rule's instance. */
static inst_t *live_by_ikey(const rule_t *r, const char *ikey) {
  for (size_t k = 0; k < r->ninst; k++)
    if (r->inst[k]->state != ST_RESOLVED && !strcmp(r->inst[k]->ikey, ikey)) return r->inst[k];
  return NULL;
}

/* Takes sample x into alert i (new, or resolved and starting again). */
static int start_inst(inst_t *i, sample_t *x, int64_t now) {
  char *cause = strdup(x->cause ? x->cause : "");
  if (!cause) return KEEL_ENOMEM;
  json_decref(i->labels);
  json_decref(i->annotations);
  json_decref(i->source);
  free(i->ikey);
  free(i->cause);
  memcpy(i->fp, x->fp, sizeof i->fp);
  i->ikey = x->ikey;
  i->labels = x->labels;
  i->annotations = x->annotations;
  i->source = x->source;
  i->cause = cause;
  x->ikey = NULL;
  x->labels = x->annotations = x->source = NULL;
  i->state = ST_PENDING;
  i->active_since = now;
  i->fired_at = i->resolved_at = i->keep_since = 0;
  return 0;
}

/* Prometheus' AlertingRule.Eval from the samples on: which alerts start,
 * fire, keep firing, resolve or are forgotten at now.  Changes go to ch. */
static int cmp_fp(const void *x, const void *y) {
  return strcmp(((const sample_t *)x)->fp, ((const sample_t *)y)->fp);
}

static int transitions(rule_t *r, samples_t *s, int64_t now, changes_t *ch, keel_err_t *e) {
  int rc = 0;
  /* Two samples with one label set are an error of the whole evaluation,
   * found before anything changes (Prometheus' words). */
  if (s->n > 1) qsort(s->v, s->n, sizeof *s->v, cmp_fp);
  for (size_t j = 1; j < s->n; j++)
    if (!strcmp(s->v[j - 1].fp, s->v[j].fp))
      return keel_err_set(e, KEEL_EINVAL,
                          "vector contains metrics with the same labelset after applying alert "
                          "labels");
  for (size_t k = 0; k < r->ninst; k++) r->inst[k]->seen = 0;
  for (size_t j = 0; j < s->n; j++) {
    sample_t *x = &s->v[j];
    inst_t *i = r->type ? live_by_ikey(r, x->ikey) : k_alert_find_inst(r, x->fp, NULL);
    int fresh = 0;
    if (!i || i->state == ST_RESOLVED) {
      inst_t *other = k_alert_find_inst(r, x->fp, NULL);
      if (other && other->state != ST_RESOLVED) {
        /* an event rule's instance whose labels another live one has */
        snprintf(r->err, sizeof r->err,
                 "instances %.200s and %.200s have the same labels: the second is left out",
                 other->ikey, x->ikey);
        continue;
      }
      i = other;
      if (!i) {
        if (!(i = calloc(1, sizeof *i))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
        memcpy(i->fp, x->fp, sizeof i->fp);
        if ((rc = k_alert_insert_inst(r, i))) {
          free(i);
          return keel_err_set(e, rc, "out of memory");
        }
      }
      if (start_inst(i, x, now)) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
      fresh = 1;
    } else {
      json_decref(i->annotations);
      i->annotations = x->annotations;
      x->annotations = NULL;
      if (i->keep_since) {
        i->keep_since = 0; /* the condition is back: keep_firing_for starts over */
        if (push_change(ch, r, i, NULL, 0)) goto nomem;
      }
    }
    i->seen = 1;
    i->value = x->value;
    i->has_value = x->has_value;
    i->last_eval = now;
    if (fresh && !(i->state == ST_PENDING && now - i->active_since >= r->for_ms) &&
        push_change(ch, r, i, "alert.pending", 0))
      goto nomem;
  }
  for (size_t k = 0; k < r->ninst; k++) {
    inst_t *i = r->inst[k];
    if (!i->seen) {
      int keep = 0;
      if (i->state == ST_RESOLVED) {
        if (now - i->resolved_at > K_ALERT_RESOLVED_KEEP_MS) {
          if (push_change(ch, r, i, NULL, 1)) goto nomem;
          memmove(&r->inst[k], &r->inst[k + 1], (r->ninst - k - 1) * sizeof *r->inst);
          r->ninst--;
          k--;
        }
        continue;
      }
      if (i->state == ST_FIRING && r->keep_ms > 0) {
        if (!i->keep_since) i->keep_since = now;
        keep = now - i->keep_since < r->keep_ms;
      }
      if (keep) {
        if (i->keep_since == now && push_change(ch, r, i, NULL, 0)) goto nomem;
      } else {
        i->state = ST_RESOLVED;
        i->resolved_at = now;
        if (push_change(ch, r, i, "alert.resolved", 0)) goto nomem;
      }
      continue;
    }
    if (i->state == ST_PENDING && now - i->active_since >= r->for_ms) {
      i->state = ST_FIRING;
      i->fired_at = now;
      if (push_change(ch, r, i, "alert.firing", 0)) goto nomem;
    }
  }
  return 0;
nomem:
  return keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

/* ---- writing ----------------------------------------------------------------------------- */

static k_val_t opt_int(int64_t v) { return v ? K_INT(v) : K_NULLV; }

int k_alert_write(k_alerts_t *a, const rule_t *r, const inst_t *i, const char *ev_type, int del,
                  int64_t now_ms, keel_err_t *e) {
  char *labels = NULL, *ann = NULL, *src = NULL, vbuf[40], subject[128];
  json_t *data = NULL;
  int rc;

  if (del) {
    k_val_t args[] = {K_TEXT(r->name), K_TEXT(i->fp)};
    rc = k_store_exec(a->d.store, "DELETE FROM alert_instances WHERE rule = ? AND fingerprint = ?",
                      args, 2, NULL, NULL, e);
  } else {
    labels = keel_json_canonical(i->labels);
    ann = keel_json_canonical(i->annotations);
    src = i->source ? keel_json_canonical(i->source) : NULL;
    if (!labels || !ann || (i->source && !src)) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto out;
    }
    snprintf(vbuf, sizeof vbuf, "%.17g", i->value);
    {
      k_val_t args[] = {K_TEXT(r->name),         K_TEXT(i->fp),           K_TEXT(i->ikey),
                        K_TEXT(r->path),         K_TEXT(labels),          K_TEXT(ann),
                        K_TEXT(src),             K_TEXT(k_alert_states[i->state]),
                        K_INT(i->active_since),  opt_int(i->fired_at),    opt_int(i->resolved_at),
                        opt_int(i->keep_since),  K_TEXT(i->has_value ? vbuf : NULL),
                        K_INT(i->last_eval ? i->last_eval : now_ms)};
      rc = k_store_exec(
          a->d.store,
          "INSERT INTO alert_instances(rule, fingerprint, ikey, path, labels, annotations, source,"
          " state, active_since, fired_at, resolved_at, keep_since, value, last_eval)"
          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
          " ON CONFLICT(rule, fingerprint) DO UPDATE SET ikey = excluded.ikey,"
          " path = excluded.path, labels = excluded.labels, annotations = excluded.annotations,"
          " source = excluded.source, state = excluded.state,"
          " active_since = excluded.active_since, fired_at = excluded.fired_at,"
          " resolved_at = excluded.resolved_at, keep_since = excluded.keep_since,"
          " value = excluded.value, last_eval = excluded.last_eval",
          args, 14, NULL, NULL, e);
    }
  }
  if (rc || !ev_type || !a->d.events) goto out;
  if (!(data = k_alert_data(a, r, i))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(subject, sizeof subject, "%s/%s", r->name, i->fp);
  {
    k_event_t ev = {0, NULL, NULL, ev_type, subject, now_ms, r->path, i->cause, data};
    char *text = json_dumps(data, JSON_COMPACT);
    /* Events carry at most K_EVENT_DATA_MAX bytes: the annotations give way
     * first (the alert's row keeps them all). */
    if (text && strlen(text) > K_EVENT_DATA_MAX - 64) {
      json_object_set_new(data, "annotations", json_object());
      json_object_set_new(data, "annotations_truncated", json_true());
    }
    free(text);
    rc = k_event_emit(a->d.events, &ev, NULL, e);
  }
out:
  json_decref(data);
  free(labels);
  free(ann);
  free(src);
  return rc;
}

/* ---- the tick ----------------------------------------------------------------------------- */

static void eval_rule(k_alerts_t *a, rule_t *r, int64_t now, k_querier_t **q, changes_t *ch) {
  samples_t s = {0};
  keel_buf_t b;
  keel_err_t e = {0};
  int64_t t0 = keel_mono_ns();
  int rc;

  keel_buf_init(&b, RENDER_MAX);
  r->err[0] = '\0';
  rc = r->expr ? expr_samples(a, r, now, q, &s, &b, &e) : event_samples(r, &s, &b, &e);
  /* A failed query changes no alert (as in Prometheus): the rule says why. */
  if (!rc) rc = transitions(r, &s, now, ch, &e);
  if (r->type) cond_gc(r);
  r->held_seq = 0; /* its events are in this tick's unit now */
  if (rc) snprintf(r->err, sizeof r->err, "%s", e.msg);
  samples_free(&s);
  keel_buf_free(&b);
  r->last_eval = now;
  r->last_ns = keel_mono_ns() - t0;
  r->next_due = now + r->interval_ms;
  a->evaluations++;
  if (r->err[0]) a->evaluation_failures++;
  k_hist_observe(&a->evaluation_seconds, (double)r->last_ns / 1e9);
}

int64_t k_alerts_tick(k_alerts_t *a, int64_t now_ms) {
  changes_t ch = {0};
  k_querier_t *q = NULL;
  keel_err_t e = {0};
  int rc = 0, bad = 0;
  int64_t min = INT64_MAX;

  if (a->dirty && now_ms >= a->retry_ms && (rc = k_alerts_reload(a, &e))) {
    /* the rules as they were stay in force; try again in a second */
    keel_log(a->d.log, KEEL_LOG_ERROR, "alerts: reload: %s", e.msg);
    a->retry_ms = now_ms + 1000;
  }
  for (size_t k = 0; k < a->nrules; k++) {
    rule_t *r = a->rules[k];
    if (r->next_due <= now_ms) eval_rule(a, r, now_ms, &q, &ch);
    if (r->next_due < min) min = r->next_due;
  }
  if (q) q->close(q);
  if (ch.n) {
    if ((rc = k_store_unit_begin(a->d.store, &e)) == 0) {
      for (size_t k = 0; !rc && k < ch.n; k++)
        rc = k_alert_write(a, ch.v[k].r, ch.v[k].i, ch.v[k].ev, ch.v[k].del, now_ms, &e);
      if (k_store_unit_end(a->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
    }
    bad = rc != 0;
  }
  for (size_t k = 0; k < ch.ndead; k++) k_alert_inst_free(ch.dead[k]);
  free(ch.dead);
  free(ch.v);
  if (bad) {
    /* memory ran ahead of the store: take the store's word again */
    keel_log(a->d.log, KEEL_LOG_ERROR, "alerts: writing transitions: %s", e.msg);
    if (k_alerts_reload(a, &e)) keel_log(a->d.log, KEEL_LOG_ERROR, "alerts: reload: %s", e.msg);
    return a->nrules ? 1000 : -1;
  }
  a->min_due = min == INT64_MAX ? 0 : min;
  return k_alerts_wait_ms(a, now_ms);
}
