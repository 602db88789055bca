/* The AlertRule document validator (alert/doc.h).  Same approach as
 * runbook/doc.c: one walk that checks and builds the normalized copy, with
 * docwalk.h naming file:line:column and the dotted path of every error. */
#include "alert/doc.h"

#include "docwalk.h"
#include "docwalk_short.h"

#include <stdio.h>
#include <string.h>

#include "event/event.h"
#include "keel/selector.h"
#include "keel/template.h"
#include "promql/promql.h"
#include "runbook/doc.h"

#define NAME_MAX_LEN 63
#define DESC_MAX 1024
#define EXPR_MAX 16384
#define LABEL_VALUE_MAX 1024
#define ANNOTATION_MAX 8192
#define SEVERITY_MAX 32
#define MAX_LABELS 32
#define MAX_ANNOTATIONS 32
#define MAX_BY 16

typedef struct v {
  k_walk_t w;
} v_t;

static const k_walk_range_t interval_range = {1000, 86400000, "1s", "24h"};
static const k_walk_range_t hold_range = {0, 30 * 86400000LL, "0s", "30d"};

/* Prometheus' label names: [a-zA-Z_][a-zA-Z0-9_]*; extra: the characters
 * event labels may also hold (host tag keys: '.', '/', '-'). */
static int label_name_ok(const char *t, size_t n, const char *extra) {
  if (n < 1 || n > NAME_MAX_LEN) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!(alpha || (i && ((c >= '0' && c <= '9') || (extra && c && strchr(extra, c))))))
      return 0;
  }
  return 1;
}

/* ---- templates ------------------------------------------------------------------ */

/* {{ $value }} and {{ $labels.NAME }} only.  Caller has pushed. */
static int check_tmpl(v_t *V, const json_t *s) {
  keel_tmpl_t *t = NULL;
  keel_err_t te = {0};
  char b[80];
  int rc = 0;
  if (keel_tmpl_parse(json_string_value(s), json_string_length(s), &t, &te))
    return te.code == KEEL_ENOMEM ? oom(V) : verr(V, "invalid template: %s", te.msg);
  for (size_t i = 0; !rc && i < keel_tmpl_nrefs(t); i++) {
    const char *ref = keel_tmpl_ref(t, i);
    if (!strcmp(ref, "$value")) continue;
    if (!strncmp(ref, "$labels.", 8) && !strchr(ref + 8, '.')) continue;
    rc = verr(V, "{{ %s }}: expected $value or $labels.NAME", q(b, ref, strlen(ref)));
  }
  keel_tmpl_free(t);
  return rc;
}

/* labels / annotations: a mapping name -> template, into a new object. */
static int templates(v_t *V, const json_t *doc, const char *key, size_t max_items,
                     size_t max_len, int what, int is_labels, json_t **out) {
  json_t *map = member(doc, key), *copy = json_object(), *val;
  const char *k;
  mark_t m;
  int rc = 0;

  *out = NULL;
  if (!copy) return oom(V);
  m = push_key(V, key);
  if (map && !json_is_object(map)) rc = verr(V, "expected a mapping of name: text");
  else if (json_object_size(map) > max_items) rc = verr(V, "more than %zu items", max_items);
  json_object_foreach(map, k, val) {
    size_t klen = json_object_iter_key_len(json_object_key_to_iter(k));
    mark_t mk;
    if (rc) break;
    mk = push_keyn(V, k, klen);
    if (klen != strlen(k) || !label_name_ok(k, klen, NULL))
      rc = verr(V, "invalid name: expected [a-zA-Z_][a-zA-Z0-9_]*");
    else if (is_labels && !strncmp(k, "__", 2))
      rc = verr(V, "names starting with __ are reserved");
    else if (is_labels && (!strcmp(k, "alertname") || !strcmp(k, "severity")))
      rc = verr(V, "set by the rule itself (%s)",
                !strcmp(k, "alertname") ? "its name" : "severity");
    else if (!(rc = k_walk_text(&V->w, val, max_len, what)))
      rc = check_tmpl(V, val);
    pop(V, mk);
    if (!rc && json_object_set(copy, k, val)) rc = oom(V);
  }
  pop(V, m);
  if (rc) json_decref(copy);
  else *out = copy;
  return rc;
}

/* ---- condition ------------------------------------------------------------------ */

static int check_expr(v_t *V, const json_t *x) {
  k_promql_expr_t *pe = NULL;
  k_promql_err_t err;
  k_pq_type_t type;
  mark_t m = push_key(V, "expr");
  int rc;

  memset(&err, 0, sizeof err);
  if ((rc = k_walk_text(&V->w, x, EXPR_MAX, K_WALK_LINES))) goto out;
  if (k_promql_parse(json_string_value(x), json_string_length(x), NULL, &pe, &err)) {
    rc = err.code == KEEL_ENOMEM ? oom(V) : verr(V, "%.190s", err.msg);
    goto out;
  }
  type = pe->root->type;
  if (type != K_PQ_T_VECTOR && type != K_PQ_T_SCALAR)
    rc = verr(V, "expected an instant vector or scalar expression, got %s",
              k_promql_type_name(type));
out:
  k_promql_free(pe);
  pop(V, m);
  return rc;
}

/* An event type: [a-z0-9_.-]{1,64}, not alert.*.  Caller has pushed. */
static int check_type(v_t *V, const json_t *s) {
  const char *t = json_string_value(s);
  char b[80];
  int rc;
  if ((rc = k_walk_text(&V->w, s, 64, K_WALK_LINE))) return rc;
  if (!json_string_length(s)) return verr(V, "expected an event type like agent.offline");
  /* k_walk_text let no NUL through: t is the whole of s */
  if (!k_event_type_valid(t))
    return verr(V, "invalid event type '%s': expected [a-z0-9_.-] like agent.offline", qs(b, s));
  if (!strncmp(t, "alert.", 6))
    return verr(V, "alert rules do not watch alert events (a rule could feed on its own)");
  return 0;
}

static int event_section(v_t *V, const json_t *ev, json_t **out) {
  static const char *const keys[] = {"type", "clear", "match", "by", NULL};
  json_t *type, *clear, *match, *by = NULL, *it;
  mark_t m;
  size_t i;
  int rc;

  *out = NULL;
  if ((rc = check_map(V, ev, keys))) return rc;
  if ((rc = k_walk_get_text(&V->w, ev, "type", 1, 64, K_WALK_LINE, &type))) return rc;
  m = push_key(V, "type");
  rc = check_type(V, type);
  pop(V, m);
  if (rc) return rc;
  if ((rc = k_walk_get_text(&V->w, ev, "clear", 0, 64, K_WALK_LINE, &clear))) return rc;
  if (clear) {
    m = push_key(V, "clear");
    if (!(rc = check_type(V, clear)) && json_equal(clear, type))
      rc = verr(V, "the same type as event.type: an event cannot start and end an alert");
    pop(V, m);
    if (rc) return rc;
  }
  if ((rc = k_walk_get_text(&V->w, ev, "match", 0, KEEL_SELECTOR_MAX_LEN, K_WALK_LINES, &match)))
    return rc;
  if (match) {
    m = push_key(V, "match");
    rc = k_walk_selector(&V->w, match, NULL);
    pop(V, m);
    if (rc) return rc;
  }
  if ((it = member(ev, "by"))) {
    json_t *name;
    m = push_key(V, "by");
    if (!json_is_array(it)) rc = verr(V, "expected a list of label names");
    else if (!json_array_size(it)) rc = verr(V, "expected at least one label name");
    else if (json_array_size(it) > MAX_BY) rc = verr(V, "more than %d label names", MAX_BY);
    else if (!(by = json_array())) rc = oom(V);
    json_array_foreach(it, i, name) {
      mark_t mi;
      char b[80];
      if (rc) break;
      mi = push_idx(V, i);
      if (!(rc = k_walk_text(&V->w, name, NAME_MAX_LEN, K_WALK_LINE)) &&
          !label_name_ok(json_string_value(name), json_string_length(name), "./-"))
        rc = verr(V, "invalid label name '%s': expected [a-zA-Z_][a-zA-Z0-9_./-]*", qs(b, name));
      if (!rc) rc = k_walk_add_unique(&V->w, by, name);
      pop(V, mi);
    }
    pop(V, m);
    if (rc) {
      json_decref(by);
      return rc;
    }
  }
  *out = json_pack("{s:O,s:O,s:O,s:o}", "type", type, "clear", clear ? clear : json_null(),
                   "match", match ? match : json_null(), "by", by ? by : json_null());
  return *out ? 0 : oom(V);
}

/* ---- the document --------------------------------------------------------------- */

int k_alert_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                         const k_org_t *org, json_t **out, keel_err_t *e) {
  static const char *const keys[] = {
      "kind",     "name",     "description",        "application",    "team",
      "expr",     "event",    "for",                "for_ms",         "keep_firing_for",
      "keep_firing_for_ms",   "interval",           "interval_ms",    "severity",
      "labels",   "annotations", NULL};
  v_t V;
  json_t *rname, *desc, *app, *team, *expr, *ev, *event = NULL, *sev, *labels = NULL;
  json_t *ann = NULL;
  int64_t for_ms, keep_ms, interval_ms;
  mark_t m;
  int rc;

  memset(&V, 0, sizeof V);
  V.w.name = name ? name : "<input>";
  V.w.pos = pos;
  V.w.e = e;
  *out = NULL;
  if ((rc = k_walk_head(&V.w, doc, keys, "AlertRule"))) goto out;
  /* the name is part of policy paths and of alert events' subjects ("<rule>/<fingerprint>") */
  if ((rc = k_walk_get_name(&V.w, doc, "name", 1, &rname))) goto out;
  if ((rc = k_walk_get_text(&V.w, doc, "description", 0, DESC_MAX, K_WALK_LINES, &desc))) goto out;
  if ((rc = k_walk_owner(&V.w, doc, org, &app, &team))) goto out;
  expr = member(doc, "expr");
  ev = member(doc, "event");
  if (expr && ev) {
    m = push_key(&V, "event");
    rc = verr(&V, "give expr or event, not both");
    pop(&V, m);
    goto out;
  }
  if (!expr && !ev) {
    rc = verr(&V, "expected expr: PROMQL or event: {type: ...} (the condition)");
    goto out;
  }
  if (expr && (rc = check_expr(&V, expr))) goto out;
  if (ev) {
    m = push_key(&V, "event");
    rc = event_section(&V, ev, &event);
    pop(&V, m);
    if (rc) goto out;
  }
  /* "0s" and the like are 0 where a range starts at 0 (k_walk_get_duration) */
  if ((rc = k_walk_get_duration(&V.w, doc, "for", &hold_range, 0, 0, &for_ms)) ||
      (rc = k_walk_get_duration(&V.w, doc, "keep_firing_for", &hold_range, 0, 0, &keep_ms)) ||
      (rc = k_walk_get_duration(&V.w, doc, "interval", &interval_range, 0, 10000, &interval_ms)))
    goto out;
  if ((rc = k_walk_get_text(&V.w, doc, "severity", 1, SEVERITY_MAX, K_WALK_LINE, &sev))) goto out;
  m = push_key(&V, "severity");
  if (!k_runbook_name_ok(json_string_value(sev), json_string_length(sev))) {
    char b[80];
    rc = verr(&V,
              "invalid severity '%s': expected critical, warning, info or another "
              "[a-z0-9][a-z0-9._-]*",
              qs(b, sev));
  }
  pop(&V, m);
  if (rc) goto out;
  if ((rc = templates(&V, doc, "labels", MAX_LABELS, LABEL_VALUE_MAX, K_WALK_LINE, 1, &labels)) ||
      (rc = templates(&V, doc, "annotations", MAX_ANNOTATIONS, ANNOTATION_MAX, K_WALK_LINES, 0,
                      &ann)))
    goto out;
  *out = json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:I,s:I,s:I,s:O,s:O,s:O}", "kind", "AlertRule",
                   "name", rname, "description", desc ? desc : json_null(), "application",
                   app ? app : json_null(), "team", team ? team : json_null(), "expr",
                   expr ? expr : json_null(), "event", event ? event : json_null(), "for_ms",
                   (json_int_t)for_ms, "keep_firing_for_ms", (json_int_t)keep_ms, "interval_ms",
                   (json_int_t)interval_ms, "severity", sev, "labels", labels, "annotations", ann);
  if (!*out) rc = oom(&V);
out:
  json_decref(event);
  json_decref(labels);
  json_decref(ann);
  return rc;
}

static int validate_no_org(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                           json_t **out, keel_err_t *e) {
  return k_alert_doc_validate(name, doc, pos, NULL, out, e);
}

int k_alert_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e) {
  return k_walk_load(name, buf, len, validate_no_org, out, e);
}

void k_alert_rule_path(const json_t *rule, char *out, size_t n) {
  k_walk_owner_path(rule, "alert", out, n);
}
