/* alert.c — the alert engine's rules and memory (alert/alert.h): loading
 * rules and alerts from the store, applying and deleting rules, listing,
 * and the events event rules watch.  Evaluation is eval.c. */
#include "alert/alert_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert/doc.h"
#include "event/labels.h"
#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : NULL; }
static int64_t num(const k_val_t *c) { return c->type == K_VAL_INT ? c->i : 0; }
static json_t *time_or_null(int64_t ms) { return ms ? keel_json_time(ms) : json_null(); }

/* ---- memory ------------------------------------------------------------------------ */

void k_alert_inst_free(inst_t *i) {
  if (!i) return;
  free(i->ikey);
  free(i->cause);
  json_decref(i->labels);
  json_decref(i->annotations);
  json_decref(i->source);
  free(i);
}

static void cond_clear(cond_t *c) {
  free(c->ikey);
  free(c->cause);
  json_decref(c->source);
}

static void tmpls_free(tmpls_t *t) {
  for (size_t i = 0; i < t->n; i++) keel_tmpl_free(t->t[i]);
  free(t->t);
  free(t->names);
  memset(t, 0, sizeof *t);
}

static void rule_free(rule_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->ninst; i++) k_alert_inst_free(r->inst[i]);
  free(r->inst);
  for (size_t i = 0; i < r->ncond; i++) cond_clear(&r->cond[i]);
  free(r->cond);
  tmpls_free(&r->labels);
  tmpls_free(&r->annotations);
  keel_selector_free(r->match);
  k_promql_free(r->pexpr);
  free(r->expr_err);
  json_decref(r->doc);
  free(r->name);
  free(r);
}

static int tmpls_build(const json_t *map, tmpls_t *t) {
  const char *k;
  json_t *v;
  size_t n = json_object_size(map);
  if (!n) return 0;
  if (!(t->t = calloc(n, sizeof *t->t)) || !(t->names = calloc(n, sizeof *t->names)))
    return KEEL_ENOMEM;
  json_object_foreach((json_t *)map, k, v) {
    keel_err_t e = {0};
    if (keel_tmpl_parse(json_string_value(v), json_string_length(v), &t->t[t->n], &e))
      return e.code ? e.code : KEEL_EINVAL;
    t->names[t->n++] = k;
  }
  return 0;
}

/* A rule from its stored, normalized document (doc: reference taken). */
static int rule_new(json_t *doc, rule_t **out, keel_err_t *e) {
  rule_t *r = calloc(1, sizeof *r);
  const json_t *ev = json_object_get(doc, "event");
  const char *name = json_string_value(json_object_get(doc, "name"));
  int rc = 0;

  *out = NULL;
  if (!r || !name || !(r->name = strdup(name))) {
    json_decref(doc);
    free(r);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  r->doc = doc;
  k_alert_rule_path(doc, r->path, sizeof r->path);
  r->app = json_string_value(json_object_get(doc, "application"));
  r->team = json_string_value(json_object_get(doc, "team"));
  r->expr = json_string_value(json_object_get(doc, "expr"));
  r->severity = json_string_value(json_object_get(doc, "severity"));
  r->for_ms = json_integer_value(json_object_get(doc, "for_ms"));
  r->keep_ms = json_integer_value(json_object_get(doc, "keep_firing_for_ms"));
  r->interval_ms = json_integer_value(json_object_get(doc, "interval_ms"));
  if (r->interval_ms < 1000) r->interval_ms = 1000;
  if (!r->severity) r->severity = "";
  if (json_is_object(ev)) {
    const char *m = json_string_value(json_object_get(ev, "match"));
    r->type = json_string_value(json_object_get(ev, "type"));
    r->clear = json_string_value(json_object_get(ev, "clear"));
    r->by = json_is_array(json_object_get(ev, "by")) ? json_object_get(ev, "by") : NULL;
    if (m && keel_selector_parse(m, strlen(m), &r->match, e)) rc = e->code;
  }
  if (!rc && (!r->expr == !r->type))
    rc = keel_err_set(e, KEEL_EINVAL, "alert rule %s: neither expr nor event", name);
  if (!rc && (tmpls_build(json_object_get(doc, "labels"), &r->labels) ||
              tmpls_build(json_object_get(doc, "annotations"), &r->annotations)))
    rc = keel_err_set(e, KEEL_EINVAL, "alert rule %s: bad template", name);
  if (rc) {
    rule_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* Parses r's expr once for all its evaluations.  An expression that does
 * not parse (the document check parsed it, so only a parser that changed
 * since) keeps the rule, in error; only running out of memory fails. */
static int rule_parse(rule_t *r, keel_err_t *e) {
  k_promql_err_t pe;
  memset(&pe, 0, sizeof pe);
  if (!r->expr || r->pexpr) return 0;
  if (!k_promql_parse(r->expr, strlen(r->expr), NULL, &r->pexpr, &pe)) return 0;
  if (pe.code == KEEL_ENOMEM || !(r->expr_err = strdup(pe.msg)))
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  return 0;
}

/* old's tree serves r too: the same text parses to the same tree. */
static int same_expr(const rule_t *old, const rule_t *r) {
  return old && old->pexpr && r->expr && !strcmp(old->expr, r->expr);
}

static int cmp_rule(const void *x, const void *y) {
  return strcmp((*(rule_t *const *)x)->name, (*(rule_t *const *)y)->name);
}

rule_t *k_alert_find_rule(const k_alerts_t *a, const char *name) {
  rule_t key, *kp = &key, **hit;
  if (!name || !a->nrules) return NULL;
  key.name = (char *)name;
  hit = bsearch(&kp, a->rules, a->nrules, sizeof *a->rules, cmp_rule);
  return hit ? *hit : NULL;
}

inst_t *k_alert_find_inst(const rule_t *r, const char *fp, size_t *pos) {
  size_t lo = 0, hi = r->ninst;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(r->inst[mid]->fp, fp);
    if (!c) {
      if (pos) *pos = mid;
      return r->inst[mid];
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  if (pos) *pos = lo;
  return NULL;
}

int k_alert_insert_inst(rule_t *r, inst_t *i) {
  size_t pos;
  if (k_alert_find_inst(r, i->fp, &pos)) return KEEL_EEXIST;
  inst_t **p = keel_grow(r->inst, &r->capinst, r->ninst, sizeof *p, 8);
  if (!p) return KEEL_ENOMEM;
  r->inst = p;
  memmove(&r->inst[pos + 1], &r->inst[pos], (r->ninst - pos) * sizeof *r->inst);
  r->inst[pos] = i;
  r->ninst++;
  return 0;
}

cond_t *k_alert_cond(rule_t *r, const char *ikey, int create) {
  cond_t *c;
  for (size_t i = 0; i < r->ncond; i++)
    if (!strcmp(r->cond[i].ikey, ikey)) return &r->cond[i];
  if (!create) return NULL;
  if (!(c = keel_grow(r->cond, &r->capcond, r->ncond, sizeof *c, 8))) return NULL;
  r->cond = c;
  c = &r->cond[r->ncond];
  memset(c, 0, sizeof *c);
  if (!(c->ikey = strdup(ikey))) return NULL;
  r->ncond++;
  return c;
}

const char *k_alert_rule_team(const k_alerts_t *a, const rule_t *r) {
  const json_t *spec = NULL;
  if (r->team) return r->team;
  if (a->d.org && k_org_object(a->d.org, "application", r->app, &spec))
    return json_string_value(json_object_get(spec, "owner"));
  return NULL;
}

const char *const k_alert_states[] = {"pending", "firing", "resolved"};

static json_t *value_json(const inst_t *i) {
  return i->has_value && isfinite(i->value) ? json_real(i->value) : json_null();
}

json_t *k_alert_data(const k_alerts_t *a, const rule_t *r, const inst_t *i) {
  const char *team = k_alert_rule_team(a, r);
  return json_pack("{s:s,s:s,s:s,s:O,s:O,s:o,s:o,s:o,s:o,s:s?,s:s?,s:s}", "rule", r->name,
                   "fingerprint", i->fp, "state", k_alert_states[i->state], "labels", i->labels,
                   "annotations", i->annotations, "value", value_json(i), "active_since",
                   time_or_null(i->active_since), "fired_at", time_or_null(i->fired_at),
                   "resolved_at", time_or_null(i->resolved_at), "application", r->app, "team",
                   team, "severity", r->severity);
}

/* ---- loading ------------------------------------------------------------------------ */

typedef struct load {
  k_alerts_t *a;
  rule_t **rules;
  size_t n, cap;
  keel_err_t *e;
  int rc;
} load_t;

static int rule_row(void *ud, const k_val_t *c, int n) {
  load_t *l = ud;
  json_t *doc;
  rule_t *r = NULL;
  keel_err_t e = {0};
  if (n < 2 || !txt(&c[1])) return 0;
  if (!(doc = json_loads(txt(&c[1]), 0, NULL)) || rule_new(doc, &r, &e)) {
    /* A row this keeld cannot read is left alone, and said. */
    keel_log(l->a->d.log, KEEL_LOG_ERROR, "alert rule %s: cannot load: %s",
             txt(&c[0]) ? txt(&c[0]) : "?", e.msg[0] ? e.msg : "bad JSON");
    return 0;
  }
  rule_t **p = keel_grow(l->rules, &l->cap, l->n, sizeof *p, 16);
  if (!p) {
    rule_free(r);
    l->rc = keel_err_set(l->e, KEEL_ENOMEM, "out of memory");
    return 1;
  }
  l->rules = p;
  l->rules[l->n++] = r;
  return 0;
}

static int inst_row(void *ud, const k_val_t *c, int n) {
  load_t *l = ud;
  rule_t *r, key, *kp = &key, **hit;
  inst_t *i;
  const char *st, *v;
  if (n < 14 || !txt(&c[0]) || !txt(&c[1])) return 0;
  key.name = (char *)txt(&c[0]);
  hit = l->n ? bsearch(&kp, l->rules, l->n, sizeof *l->rules, cmp_rule) : NULL;
  if (!hit) return 0; /* its rule is gone: deleted with it, or unreadable */
  r = *hit;
  if (strlen(txt(&c[1])) != 16 || k_alert_find_inst(r, txt(&c[1]), NULL)) return 0;
  if (!(i = calloc(1, sizeof *i))) goto nomem;
  memcpy(i->fp, txt(&c[1]), 17);
  i->ikey = strdup(txt(&c[2]) ? txt(&c[2]) : i->fp);
  i->labels = json_loads(txt(&c[4]) ? txt(&c[4]) : "{}", 0, NULL);
  i->annotations = json_loads(txt(&c[5]) ? txt(&c[5]) : "{}", 0, NULL);
  i->source = txt(&c[6]) ? json_loads(txt(&c[6]), 0, NULL) : NULL;
  i->cause = strdup("");
  st = txt(&c[7]) ? txt(&c[7]) : "";
  i->state = !strcmp(st, "firing") ? ST_FIRING : !strcmp(st, "pending") ? ST_PENDING : ST_RESOLVED;
  i->active_since = num(&c[8]);
  i->fired_at = num(&c[9]);
  i->resolved_at = num(&c[10]);
  i->keep_since = num(&c[11]);
  if ((v = txt(&c[12]))) {
    i->value = strtod(v, NULL);
    i->has_value = 1;
  }
  i->last_eval = num(&c[13]);
  if (!i->ikey || !i->labels || !i->annotations || !i->cause || k_alert_insert_inst(r, i))
    goto nomem;
  return 0;
nomem:
  k_alert_inst_free(i);
  l->rc = keel_err_set(l->e, KEEL_ENOMEM, "out of memory");
  return 1;
}

/* The conditions of a rule with clear, as its alerts left them: started
 * and not cleared while pending, or firing without keep_firing_for
 * running. */
static int conds_from_alerts(rule_t *r) {
  if (!r->type || !r->clear) return 0;
  for (size_t k = 0; k < r->ninst; k++) {
    inst_t *i = r->inst[k];
    cond_t *c;
    if (i->state == ST_RESOLVED || i->keep_since) continue;
    if (!(c = k_alert_cond(r, i->ikey, 1))) return KEEL_ENOMEM;
    json_decref(c->source);
    c->source = json_incref(i->source ? i->source : i->labels);
    c->active = 1;
  }
  return 0;
}

/* Same event condition: the conditions gathered so far still mean the same. */
static int same_event(const rule_t *x, const rule_t *y) {
  const json_t *a = json_object_get(x->doc, "event"), *b = json_object_get(y->doc, "event");
  return json_is_object(a) && json_equal(a, b);
}

static int load(k_alerts_t *a, keel_err_t *e) {
  load_t l = {a, NULL, 0, 0, e, 0};
  int rc;
  if ((rc = k_store_exec(a->d.store, "SELECT name, spec FROM alert_rules ORDER BY name", NULL, 0,
                         rule_row, &l, e)) ||
      l.rc)
    goto fail;
  if (l.n > 1) qsort(l.rules, l.n, sizeof *l.rules, cmp_rule);
  if ((rc = k_store_exec(a->d.store,
                         "SELECT rule, fingerprint, ikey, path, labels, annotations, source, state,"
                         " active_since, fired_at, resolved_at, keep_since, value, last_eval"
                         " FROM alert_instances",
                         NULL, 0, inst_row, &l, e)) ||
      l.rc)
    goto fail;
  /* Runtime carried over from the rules as they were. */
  for (size_t k = 0; k < l.n; k++) {
    rule_t *r = l.rules[k], *old = k_alert_find_rule(a, r->name);
    /* an apply reloads every rule: only a new or changed expr is parsed */
    if (!same_expr(old, r) && (rc = rule_parse(r, e))) goto fail;
    if (old) {
      r->last_eval = old->last_eval;
      r->last_ns = old->last_ns;
      memcpy(r->err, old->err, sizeof r->err);
      r->next_due = json_equal(old->doc, r->doc) ? old->next_due : 0;
      if (same_event(old, r)) {
        r->cond = old->cond;
        r->ncond = old->ncond;
        r->capcond = old->capcond;
        old->cond = NULL;
        old->ncond = old->capcond = 0;
        continue;
      }
    }
    if (conds_from_alerts(r)) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto fail;
    }
  }
  /* Trees move only now that nothing can fail: a failed load leaves the
   * rules as they were, trees included. */
  for (size_t k = 0; k < l.n; k++) {
    rule_t *r = l.rules[k], *old = k_alert_find_rule(a, r->name);
    if (same_expr(old, r)) {
      r->pexpr = old->pexpr;
      old->pexpr = NULL;
    }
  }
  for (size_t k = 0; k < a->nrules; k++) rule_free(a->rules[k]);
  free(a->rules);
  a->rules = l.rules;
  a->nrules = l.n;
  a->dirty = 0;
  a->retry_ms = 0;
  a->min_due = 0;
  return 0;
fail:
  for (size_t k = 0; k < l.n; k++) rule_free(l.rules[k]);
  free(l.rules);
  return rc ? rc : l.rc;
}

int k_alerts_reload(k_alerts_t *a, keel_err_t *e) { return load(a, e); }

/* ---- events in ------------------------------------------------------------------------ */

/* What identifies the instance an event is about: the values of `by` in
 * its labels (as a JSON array), else its subject. */
static char *ikey_of(const rule_t *r, const k_event_t *ev, const json_t *labels) {
  json_t *vals, *name;
  size_t i;
  char *s;
  if (!r->by) return strdup(ev->subject ? ev->subject : "");
  if (!(vals = json_array())) return NULL;
  json_array_foreach(r->by, i, name) {
    const char *v = json_string_value(json_object_get(labels, json_string_value(name)));
    json_array_append_new(vals, json_string(v ? v : ""));
  }
  s = json_dumps(vals, JSON_COMPACT);
  json_decref(vals);
  return s;
}

static void on_event(void *ud, const k_event_t *ev) {
  k_alerts_t *a = ud;
  const json_t *labels = json_object_get(ev->data, "labels");
  if (!ev->type || !strncmp(ev->type, "alert.", 6)) return;
  if (!json_is_object(labels)) labels = NULL;
  for (size_t k = 0; k < a->nrules; k++) {
    rule_t *r = a->rules[k];
    int start;
    char *key;
    cond_t *c;
    if (!r->type) continue;
    start = !strcmp(ev->type, r->type);
    if (!start && !(r->clear && !strcmp(ev->type, r->clear))) continue;
    if (start && r->match && !k_event_labels_match(r->match, labels)) continue;
    if (!(key = ikey_of(r, ev, labels))) goto nomem;
    c = k_alert_cond(r, key, start);
    free(key);
    if (!c) {
      if (start) goto nomem;
      continue; /* a clear for nothing active */
    }
    if (start) {
      json_t *src = labels ? json_deep_copy(labels) : json_object();
      char *cause = strdup(ev->cause ? ev->cause : "");
      if (!src || !cause) {
        json_decref(src);
        free(cause);
        goto nomem;
      }
      json_decref(c->source);
      free(c->cause);
      c->source = src;
      c->cause = cause;
      c->active = r->clear != NULL;
      c->seen = 1;
    } else {
      c->active = 0;
    }
    r->next_due = 0; /* evaluate at the next tick */
    a->min_due = 0;
    if (!r->held_seq) r->held_seq = ev->seq; /* seqs only grow */
    continue;
  nomem:
    keel_log(a->d.log, KEEL_LOG_ERROR, "alert rule %s: out of memory taking event %s", r->name,
             ev->id ? ev->id : "?");
  }
}

/* ---- open / close ----------------------------------------------------------------------- */

int k_alerts_open(const k_alerts_deps_t *deps, k_alerts_t **out, keel_err_t *e) {
  k_alerts_t *a = calloc(1, sizeof *a);
  int rc;
  *out = NULL;
  if (!a) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  a->d = *deps;
  if ((rc = load(a, e)) ||
      (a->d.events && (rc = k_events_subscribe(a->d.events, on_event, a, e)))) {
    k_alerts_close(a);
    return rc;
  }
  *out = a;
  return 0;
}

void k_alerts_close(k_alerts_t *a) {
  if (!a) return;
  for (size_t k = 0; k < a->nrules; k++) rule_free(a->rules[k]);
  free(a->rules);
  free(a);
}

/* Alerts of r by state. */
static void counts(const rule_t *r, int *pending, int *firing) {
  *pending = *firing = 0;
  for (size_t k = 0; r && k < r->ninst; k++) {
    if (r->inst[k]->state == ST_PENDING) (*pending)++;
    if (r->inst[k]->state == ST_FIRING) (*firing)++;
  }
}

void k_alerts_stats(const k_alerts_t *a, k_alert_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!a) return;
  out->rules = a->nrules;
  for (size_t k = 0; k < a->nrules; k++) {
    int pending, firing;
    counts(a->rules[k], &pending, &firing);
    out->pending += (size_t)pending;
    out->firing += (size_t)firing;
  }
  out->evaluations = a->evaluations;
  out->evaluation_failures = a->evaluation_failures;
  out->evaluation_seconds = a->evaluation_seconds;
}

int64_t k_alerts_held(const k_alerts_t *a) {
  int64_t min = 0;
  for (size_t k = 0; a && k < a->nrules; k++)
    if (a->rules[k]->held_seq && (!min || a->rules[k]->held_seq < min)) min = a->rules[k]->held_seq;
  return min;
}

int64_t k_alerts_wait_ms(const k_alerts_t *a, int64_t now_ms) {
  if (a->dirty) return a->retry_ms > now_ms ? a->retry_ms - now_ms : 0;
  if (!a->nrules) return -1;
  return a->min_due <= now_ms ? 0 : a->min_due - now_ms;
}

/* ---- rules: apply, read, delete ----------------------------------------------------------- */

typedef struct spec_row {
  json_t *spec;
  int64_t version, created, updated;
  int found;
} spec_row_t;

static int spec_row(void *ud, const k_val_t *c, int n) {
  spec_row_t *s = ud;
  if (n < 4) return 0;
  s->found = 1;
  s->spec = txt(&c[0]) ? json_loads(txt(&c[0]), 0, NULL) : NULL;
  s->version = num(&c[1]);
  s->created = num(&c[2]);
  s->updated = num(&c[3]);
  return 0;
}

static int read_rule(k_alerts_t *a, const char *name, spec_row_t *s, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(name)};
  memset(s, 0, sizeof *s);
  return k_store_exec(a->d.store,
                      "SELECT spec, version, created_ms, updated_ms FROM alert_rules"
                      " WHERE name = ?",
                      args, 1, spec_row, s, e);
}

int k_alerts_apply(k_alerts_t *a, const json_t *rule, int dry_run, int64_t now_ms,
                   json_t **report, keel_buf_t *detail, keel_err_t *e) {
  const char *name = keel_json_str(rule, "name"), *app = keel_json_str(rule, "application");
  const char *op = NULL;
  spec_row_t cur;
  char *text = NULL, summary[128];
  json_t *fields = NULL;
  int rc;

  *report = NULL;
  memset(&cur, 0, sizeof cur);
  if (!name) {
    rc = keel_err_set(e, KEEL_EINVAL, "alert rule has no name");
    goto out;
  }
  if (!(text = keel_json_canonical(rule))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = read_rule(a, name, &cur, e))) goto out;
  if (!cur.found) op = "create";
  else if (!json_equal(cur.spec, rule)) op = "update";
  if (op && !dry_run) {
    k_val_t args[] = {K_TEXT(name), K_TEXT(app ? "application" : "team"),
                      K_TEXT(app ? app : keel_json_str(rule, "team")), K_TEXT(text),
                      K_INT(now_ms), K_INT(now_ms)};
    /* one statement for create and update: version counts the changes */
    if ((rc = k_store_exec(a->d.store,
                           "INSERT INTO alert_rules(name, owner_kind, owner, spec, created_ms,"
                           " updated_ms, version) VALUES (?, ?, ?, ?, ?, ?, 1)"
                           " ON CONFLICT(name) DO UPDATE SET owner_kind = excluded.owner_kind,"
                           " owner = excluded.owner, spec = excluded.spec,"
                           " updated_ms = excluded.updated_ms, version = alert_rules.version + 1",
                           args, 6, NULL, NULL, e)))
      goto out;
    a->dirty = 1;
  }
  fields = cur.spec ? keel_json_changed_keys(cur.spec, rule) : json_array();
  snprintf(summary, sizeof summary, "%s%s", dry_run ? "dry run: " : "",
           !op                     ? "no changes"
           : !strcmp(op, "create") ? "1 created, 0 updated, 0 deleted"
                                   : "0 created, 1 updated, 0 deleted");
  keel_buf_reset(detail);
  keel_buf_printf(detail, "%s%s%s alert_rule/%s", summary, op ? ": " : "", op ? op : "", name);
  *report = op ? json_pack("{s:b,s:b,s:b,s:s,s:[{s:s,s:s,s:s,s:O}],s:[]}", "changed", 1, "dry_run",
                           dry_run, "prune", 0, "summary", summary, "changes", "op", op, "kind",
                           "alert_rule", "name", name, "fields", fields, "removed")
               : json_pack("{s:b,s:b,s:b,s:s,s:[],s:[]}", "changed", 0, "dry_run", dry_run,
                           "prune", 0, "summary", summary, "changes", "removed");
  if (!*report) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  json_decref(cur.spec);
  json_decref(fields);
  free(text);
  return rc;
}

/* The API's rule: stored row + what evaluating it said. */
static json_t *rule_json(const k_alerts_t *a, const char *name, const json_t *spec,
                         const spec_row_t *row, int with_doc) {
  const rule_t *r = k_alert_find_rule(a, name);
  char path[192];
  int pending, firing;
  json_t *o;
  counts(r, &pending, &firing);
  k_alert_rule_path(spec, path, sizeof path);
  o = json_pack("{s:s,s:s,s:O,s:O,s:O,s:s,s:I,s:o,s:o,s:s,s:o,s:o,s:o,s:{s:i,s:i}}", "name", name,
                "kind", "alert_rule", "application", json_object_get(spec, "application"), "team",
                json_object_get(spec, "team"), "severity", json_object_get(spec, "severity"),
                "path", path, "version", (json_int_t)row->version, "created_at",
                time_or_null(row->created), "updated_at", time_or_null(row->updated), "health",
                !r || !r->last_eval ? "unknown" : r->err[0] ? "error" : "ok", "last_evaluation",
                time_or_null(r ? r->last_eval : 0), "evaluation_seconds",
                r && r->last_eval ? json_real((double)r->last_ns / 1e9) : json_null(),
                "last_error", r && r->err[0] ? json_string(r->err) : json_null(), "alerts",
                "pending", pending, "firing", firing);
  if (o && with_doc) json_object_set(o, "document", (json_t *)spec);
  return o;
}

int k_alerts_rule_get(k_alerts_t *a, const char *name, json_t **out, keel_err_t *e) {
  spec_row_t row;
  int rc;
  *out = NULL;
  if ((rc = read_rule(a, name, &row, e))) return rc;
  if (!row.found || !row.spec) {
    json_decref(row.spec);
    return keel_err_set(e, KEEL_ENOENT, "no alert rule '%.64s'", name);
  }
  *out = rule_json(a, name, row.spec, &row, 1);
  json_decref(row.spec);
  return *out ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

int k_alerts_rule_path(k_alerts_t *a, const char *name, char *out, size_t n) {
  spec_row_t row;
  keel_err_t e = {0};
  int rc = read_rule(a, name, &row, &e);
  if (!rc && (!row.found || !row.spec)) rc = KEEL_ENOENT;
  if (!rc) k_alert_rule_path(row.spec, out, n);
  json_decref(row.spec);
  return rc;
}

typedef struct list_rules {
  k_alerts_t *a;
  json_t *items;
  int limit, n;
  char last[96];
} list_rules_t;

static int list_rule_row(void *ud, const k_val_t *c, int n) {
  list_rules_t *l = ud;
  spec_row_t row;
  json_t *spec, *o;
  if (n < 5 || !txt(&c[0])) return 0;
  if (l->n == l->limit) return 1;
  memset(&row, 0, sizeof row);
  row.version = num(&c[2]);
  row.created = num(&c[3]);
  row.updated = num(&c[4]);
  if (!(spec = json_loads(txt(&c[1]) ? txt(&c[1]) : "", 0, NULL))) return 0;
  o = rule_json(l->a, txt(&c[0]), spec, &row, 0);
  json_decref(spec);
  if (o) json_array_append_new(l->items, o);
  snprintf(l->last, sizeof l->last, "%s", txt(&c[0]));
  l->n++;
  return 0;
}

int k_alerts_rule_list(k_alerts_t *a, const char *after, int limit, json_t **items, char **next,
                       keel_err_t *e) {
  list_rules_t l = {a, json_array(), limit, 0, ""};
  k_val_t args[] = {K_TEXT(after ? after : ""), K_INT(limit + 1)};
  int rc;
  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(a->d.store,
                    "SELECT name, spec, version, created_ms, updated_ms FROM alert_rules"
                    " WHERE name > ? ORDER BY name LIMIT ?",
                    args, 2, list_rule_row, &l, e);
  if (rc < 0) {
    json_decref(l.items);
    return rc;
  }
  if (rc == 1 && !(*next = strdup(l.last))) {
    json_decref(l.items);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  *items = l.items;
  return 0;
}

int k_alerts_rule_delete(k_alerts_t *a, const char *name, int64_t now_ms, json_t **out,
                         keel_err_t *e) {
  const rule_t *r = k_alert_find_rule(a, name);
  k_val_t args[] = {K_TEXT(name)};
  int rc;
  if ((rc = k_alerts_rule_get(a, name, out, e))) return rc;
  /* Its live alerts end with it, on the record; the rows go. */
  for (size_t k = 0; r && k < r->ninst; k++) {
    inst_t copy = *r->inst[k];
    if (copy.state == ST_RESOLVED) continue;
    copy.state = ST_RESOLVED;
    copy.resolved_at = now_ms;
    if ((rc = k_alert_write(a, r, &copy, "alert.resolved", 1, now_ms, e))) goto out;
  }
  if ((rc = k_store_exec(a->d.store, "DELETE FROM alert_instances WHERE rule = ?", args, 1, NULL,
                         NULL, e)) ||
      (rc = k_store_exec(a->d.store, "DELETE FROM alert_rules WHERE name = ?", args, 1, NULL, NULL,
                         e)))
    goto out;
  a->dirty = 1;
out:
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}

/* ---- alerts ------------------------------------------------------------------------------- */

static int state_wanted(const char *state, int st) {
  if (!state) return st != ST_RESOLVED;
  if (!strcmp(state, "all")) return 1;
  return !strcmp(state, k_alert_states[st]);
}

int k_alerts_list(k_alerts_t *a, const char *state, const char *rule, const char *after,
                  int limit, json_t **items, char **next, keel_err_t *e) {
  char arule[96] = "", afp[17] = "";
  json_t *arr = json_array();
  int n = 0;
  *items = NULL;
  *next = NULL;
  if (!arr) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (state && strcmp(state, "all") && strcmp(state, "pending") && strcmp(state, "firing") &&
      strcmp(state, "resolved")) {
    json_decref(arr);
    return keel_err_set(e, KEEL_EINVAL,
                        "query parameter 'state': expected pending, firing, resolved or all");
  }
  if (after) {
    const char *slash = strrchr(after, '/');
    if (!slash || (size_t)(slash - after) >= sizeof arule || strlen(slash + 1) != 16) {
      json_decref(arr);
      return keel_err_set(e, KEEL_EINVAL, "query parameter 'cursor': not a cursor of this list");
    }
    memcpy(arule, after, (size_t)(slash - after));
    memcpy(afp, slash + 1, 17);
  }
  for (size_t k = 0; k < a->nrules; k++) {
    const rule_t *r = a->rules[k];
    int c = strcmp(r->name, arule);
    if ((rule && strcmp(rule, r->name)) || (after && c < 0)) continue;
    for (size_t j = 0; j < r->ninst; j++) {
      const inst_t *i = r->inst[j];
      json_t *o;
      if (!state_wanted(state, i->state) || (after && c == 0 && strcmp(i->fp, afp) <= 0)) continue;
      if (n == limit) goto page;
      if (!(o = k_alert_data(a, r, i))) goto nomem;
      json_object_set_new(o, "path", json_string(r->path));
      json_object_set_new(o, "keep_firing_since", time_or_null(i->keep_since));
      json_object_set_new(o, "last_evaluation", time_or_null(i->last_eval));
      json_array_append_new(arr, o);
      n++;
    }
  }
  *items = arr;
  return 0;
page : {
  /* the cursor is the last item given */
  json_t *last = json_array_get(arr, json_array_size(arr) - 1);
  char cur[128];
  snprintf(cur, sizeof cur, "%s/%s", keel_json_str(last, "rule"),
           keel_json_str(last, "fingerprint"));
  if (!(*next = strdup(cur))) goto nomem;
  *items = arr;
  return 0;
}
nomem:
  json_decref(arr);
  return keel_err_set(e, KEEL_ENOMEM, "out of memory");
}
