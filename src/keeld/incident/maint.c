/* maint.c — maintenance windows (maint.h). */
#include "incident/maint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docwalk.h"
#include "event/labels.h"
#include "incident/idoc.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "runbook/cron.h"

#define MAX_ONEOFF_MS (366 * 86400000LL)
static const k_walk_range_t duration_range = {60000, 30 * 86400000LL, "1m", "30d"};

static const k_idoc_table_t table = {"maintenance_windows", "name", 1, "maintenance_window"};

typedef struct window {
  char name[K_MAINT_NAME_MAX];
  keel_selector_t *sel;
  json_t *doc; /* normalized */
} window_t;

struct k_maint {
  k_store_t *s;
  const keel_log_t *log;
  window_t *w; /* by name */
  size_t n;
  int dirty;
};

/* ---- the document ----------------------------------------------------------------- */

/* An RFC 3339 member into *ms and its normalized text into *norm (new). */
static int get_time(k_walk_t *W, const json_t *doc, const char *key, int64_t *ms, json_t **norm) {
  json_t *v;
  char t[KEEL_TIME_STRLEN], b[80];
  int rc = k_idoc_text(W, doc, key, 1, 64, &v);
  *norm = NULL;
  if (rc) return rc;
  if (keel_time_parse(json_string_value(v), ms) || *ms < 0) {
    k_walk_mark_t m = k_walk_push_key(W, key);
    rc = k_walk_err(W, "invalid time '%s': expected RFC 3339 (2026-11-24T22:00:00Z)",
                    k_walk_quote_json(b, v));
    k_walk_pop(W, m);
    return rc;
  }
  keel_time_format(t, *ms);
  return (*norm = json_string(t)) ? 0 : k_walk_oom(W);
}

static int when(k_walk_t *W, const json_t *doc, json_t *norm) {
  json_t *start = NULL, *end = NULL, *cron;
  int64_t s_ms, e_ms, dur;
  k_walk_mark_t m;
  int rc;

  if (k_walk_member(doc, "cron")) {
    k_cron_t c;
    char buf[256];
    keel_err_t ce = {0};
    if (k_walk_member(doc, "start") || k_walk_member(doc, "end")) {
      m = k_walk_push_key(W, k_walk_member(doc, "start") ? "start" : "end");
      rc = k_walk_err(W, "a window is one-off (start, end) or recurring (cron, duration), not both");
      k_walk_pop(W, m);
      return rc;
    }
    if ((rc = k_idoc_text(W, doc, "cron", 1, 200, &cron))) return rc;
    if (k_cron_parse(json_string_value(cron), json_string_length(cron), &c, &ce)) {
      m = k_walk_push_key(W, "cron");
      rc = k_walk_err(W, "%s", ce.msg);
      k_walk_pop(W, m);
      return rc;
    }
    if ((rc = k_walk_get_duration(W, doc, "duration", &duration_range, 1, 0, &dur)))
      return rc;
    k_cron_normalize(json_string_value(cron), json_string_length(cron), buf);
    if (json_object_set_new(norm, "cron", json_string(buf)) ||
        json_object_set_new(norm, "duration_ms", json_integer(dur)) ||
        json_object_set_new(norm, "start", json_null()) || json_object_set_new(norm, "end", json_null()))
      return k_walk_oom(W);
    return 0;
  }
  if (!k_walk_member(doc, "start") && !k_walk_member(doc, "end"))
    return k_walk_err(W, "expected start and end (a one-off window) or cron and duration (a "
                         "recurring one)");
  if (k_walk_member(doc, "duration") || k_walk_member(doc, "duration_ms")) {
    m = k_walk_push_key(W, k_walk_member(doc, "duration") ? "duration" : "duration_ms");
    rc = k_walk_err(W, "only a recurring window (cron) has a duration; a one-off one has start and end");
    k_walk_pop(W, m);
    return rc;
  }
  if ((rc = get_time(W, doc, "start", &s_ms, &start)) || (rc = get_time(W, doc, "end", &e_ms, &end)))
    goto out;
  if (e_ms <= s_ms || e_ms - s_ms > MAX_ONEOFF_MS) {
    m = k_walk_push_key(W, "end");
    rc = k_walk_err(W, e_ms <= s_ms ? "must be after start" : "more than 366 days after start");
    k_walk_pop(W, m);
    goto out;
  }
  if (json_object_set(norm, "start", start) || json_object_set(norm, "end", end) ||
      json_object_set_new(norm, "cron", json_null()) ||
      json_object_set_new(norm, "duration_ms", json_null()))
    rc = k_walk_oom(W);
out:
  json_decref(start);
  json_decref(end);
  return rc;
}

int k_maint_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                         json_t **out, keel_err_t *e) {
  static const char *const keys[] = {"kind", "name", "team", "selector", "reason", "start", "end",
                                     "cron", "duration", "duration_ms", NULL};
  k_walk_t W;
  json_t *norm = json_object(), *wname, *team, *sel, *reason;
  int rc;

  memset(&W, 0, sizeof W);
  W.name = name ? name : "<input>";
  W.pos = pos;
  W.e = e;
  *out = NULL;
  if (!norm) return k_walk_oom(&W);
  if ((rc = k_walk_head(&W, doc, keys, "MaintenanceWindow")) ||
      (rc = k_walk_get_name(&W, doc, "name", 1, &wname)) ||
      (rc = k_walk_get_name(&W, doc, "team", 1, &team)) ||
      (rc = k_idoc_selector(&W, doc, "selector", 1, 0, &sel)) ||
      (rc = k_idoc_text(&W, doc, "reason", 0, K_IDOC_TEXT_MAX, &reason)) ||
      (rc = when(&W, doc, norm)))
    goto out;
  if (json_object_set_new(norm, "kind", json_string("MaintenanceWindow")) ||
      json_object_set(norm, "name", wname) || json_object_set(norm, "team", team) ||
      json_object_set(norm, "selector", sel) ||
      json_object_set(norm, "reason", reason ? reason : json_null())) {
    rc = k_walk_oom(&W);
    goto out;
  }
  *out = norm;
  norm = NULL;
out:
  json_decref(norm);
  return rc;
}

int k_maint_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e) {
  return k_walk_load(name, buf, len, k_maint_doc_validate, out, e);
}

void k_maint_path(const json_t *doc, char *out, size_t n) {
  k_walk_owner_path(doc, "maintenance", out, n); /* a window has no application: team/... */
}

/* ---- when a window is active ------------------------------------------------------- */

/* k_maint_doc_active; until_ms and next_ms may be NULL (not wanted). */
static int active(const json_t *doc, int64_t now_ms, int64_t *until_ms, int64_t *next_ms) {
  const char *cron = keel_json_str(doc, "cron");
  int64_t u_, n_;
  if (!until_ms) until_ms = &u_;
  if (!next_ms) next_ms = &n_;
  *until_ms = -1;
  *next_ms = -1;
  if (cron) {
    int64_t dur = json_integer_value(json_object_get(doc, "duration_ms")), t;
    k_cron_t c;
    if (k_cron_parse(cron, strlen(cron), &c, NULL) || dur <= 0) return 0;
    if (next_ms != &n_) *next_ms = k_cron_next(&c, now_ms);
    /* an occurrence that started in (now - dur, now] is running now */
    t = k_cron_next(&c, now_ms - dur);
    if (t < 0 || t > now_ms) return 0;
    if (until_ms == &u_) return 1;
    /* occurrences may overlap (a duration longer than the period): the
     * window lasts until the latest one that started ends (looked for in
     * at most 1000 steps) */
    *until_ms = t + dur;
    for (int i = 0; i < 1000; i++) {
      int64_t nx = k_cron_next(&c, *until_ms - dur);
      if (nx < 0 || nx > now_ms) break;
      *until_ms = nx + dur;
    }
    return 1;
  } else {
    int64_t s, e;
    if (keel_time_parse(keel_json_str(doc, "start") ? keel_json_str(doc, "start") : "", &s) ||
        keel_time_parse(keel_json_str(doc, "end") ? keel_json_str(doc, "end") : "", &e))
      return 0;
    if (now_ms < s) *next_ms = s;
    if (now_ms >= s && now_ms < e) {
      *until_ms = e;
      return 1;
    }
  }
  return 0;
}

int k_maint_doc_active(const json_t *doc, int64_t now_ms, int64_t *until_ms, int64_t *next_ms) {
  return active(doc, now_ms, until_ms, next_ms);
}

int k_maint_suppressed(const k_maint_t *m, const json_t *labels, int64_t now_ms, char *window,
                       size_t window_len) {
  if (window && window_len) window[0] = '\0';
  if (!m) return 0;
  for (size_t i = 0; i < m->n; i++) {
    if (!k_event_labels_match(m->w[i].sel, labels) || !active(m->w[i].doc, now_ms, NULL, NULL))
      continue;
    if (window && window_len) snprintf(window, window_len, "%s", m->w[i].name);
    return 1;
  }
  return 0;
}

/* ---- the engine ---------------------------------------------------------------------- */

static void windows_free(window_t *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    keel_selector_free(w[i].sel);
    json_decref(w[i].doc);
  }
  free(w);
}

int k_maint_reload(k_maint_t *m, keel_err_t *e) {
  json_t *all = NULL, *doc;
  window_t *w = NULL;
  size_t i, n = 0;
  int rc;

  if ((rc = k_idoc_all(m->s, &table, &all, e))) return rc;
  if (json_array_size(all) && !(w = calloc(json_array_size(all), sizeof *w))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  json_array_foreach(all, i, doc) {
    const char *sel = keel_json_str(doc, "selector");
    if (!sel || keel_selector_parse(sel, strlen(sel), &w[n].sel, NULL)) {
      keel_log(m->log, KEEL_LOG_WARN, "maintenance window %s: stored selector does not parse; ignored",
               keel_json_str(doc, "name"));
      continue;
    }
    snprintf(w[n].name, sizeof w[n].name, "%s", keel_json_str(doc, "name"));
    w[n++].doc = json_incref(doc);
  }
  windows_free(m->w, m->n);
  m->w = w;
  m->n = n;
  w = NULL;
  n = 0;
  m->dirty = 0;
out:
  windows_free(w, n);
  json_decref(all);
  return rc;
}

int k_maint_open(k_store_t *s, const keel_log_t *log, k_maint_t **out, keel_err_t *e) {
  k_maint_t *m = calloc(1, sizeof *m);
  int rc;
  *out = NULL;
  if (!m) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  m->s = s;
  m->log = log;
  if ((rc = k_maint_reload(m, e))) {
    free(m);
    return rc;
  }
  *out = m;
  return 0;
}

void k_maint_close(k_maint_t *m) {
  if (!m) return;
  windows_free(m->w, m->n);
  free(m);
}

int k_maint_dirty(const k_maint_t *m) { return m && m->dirty; }

int k_maint_apply(k_maint_t *m, const json_t *doc, int dry_run, int64_t now_ms, json_t **report,
                  keel_buf_t *detail, keel_err_t *e) {
  const char *name = keel_json_str(doc, "name");
  int rc = k_idoc_apply(m->s, &table, name ? name : "", keel_json_str(doc, "team"), name ? name : "",
                        doc, dry_run, now_ms, report, detail, e);
  if (!rc && !dry_run) m->dirty = 1;
  return rc;
}

json_t *k_maint_list(const k_maint_t *m, int64_t now_ms) {
  json_t *out = json_array();
  for (size_t i = 0; out && i < m->n; i++) {
    const json_t *d = m->w[i].doc;
    int64_t until, next;
    int active = k_maint_doc_active(d, now_ms, &until, &next);
    json_t *dur = json_object_get(d, "duration_ms");
    char path[192], dtext[32] = "";
    if (json_is_integer(dur)) {
      int64_t ms = json_integer_value(dur);
      if (ms % 3600000 == 0) snprintf(dtext, sizeof dtext, "%lldh", (long long)(ms / 3600000));
      else snprintf(dtext, sizeof dtext, "%lldm", (long long)(ms / 60000));
    }
    k_maint_path(d, path, sizeof path);
    json_array_append_new(
        out, json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:o,s:b,s:o,s:o,s:s}", "name",
                       json_object_get(d, "name"), "team", json_object_get(d, "team"), "selector",
                       json_object_get(d, "selector"), "reason", json_object_get(d, "reason"),
                       "start", json_object_get(d, "start"), "end", json_object_get(d, "end"),
                       "cron", json_object_get(d, "cron"), "duration",
                       dtext[0] ? json_string(dtext) : json_null(), "active", active,
                       "active_until", active ? keel_json_time(until) : json_null(), "next_start",
                       next >= 0 ? keel_json_time(next) : json_null(), "path", path));
  }
  return out;
}
