/* incident_testutil.h — a store, events, maintenance windows and an
 * incident engine without a sender, in a temporary directory, for
 * test_incident.c and test_notify.c; and helpers that feed alert events
 * with the tests' own clock. */
#ifndef INCIDENT_TESTUTIL_H
#define INCIDENT_TESTUTIL_H

#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "event/event.h"
#include "incident/incident.h"
#include "incident/maint.h"
#include "incident/notify.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"

#define T0 INT64_C(1795000000000) /* 2026-11-18T..., the tests' clock starts here */

typedef struct ifx {
  char dir[256];
  k_store_t *s;
  k_events_t *ev;
  k_maint_t *m;
  k_incidents_t *x;
} ifx_t;

static inline int ifx_setup(void **state) {
  ifx_t *f = calloc(1, sizeof *f);
  keel_err_t e = {0};
  k_incidents_deps_t d;
  if (!f || keel_crypto_init() || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  if (k_store_open(f->dir, 1, NULL, &f->s, &e) || k_events_open(f->s, NULL, 3600000, &f->ev, &e) ||
      k_maint_open(f->s, NULL, &f->m, &e)) {
    print_error("setup: %s\n", e.msg);
    return -1;
  }
  d = (k_incidents_deps_t){f->s, f->ev, f->m, NULL, "http://keel.test", 0, 0};
  if (k_incidents_open(&d, &f->x, &e)) {
    print_error("setup: %s\n", e.msg);
    return -1;
  }
  *state = f;
  return 0;
}

static inline int ifx_teardown(void **state) {
  ifx_t *f = *state;
  k_incidents_close(f->x);
  k_maint_close(f->m);
  k_events_close(f->ev);
  k_store_close(f->s);
  kt_rmrf(f->dir);
  free(f);
  return 0;
}

/* Commits everything and waits until it is durable. */
static inline void ifx_durable(ifx_t *f) {
  keel_err_t e = {0};
  assert_int_equal(k_store_flush(f->s, &e), 0);
  assert_int_equal(k_store_sync_wait(f->s, &e), 0);
}

/* An alert event as the alert engine emits it. labels: JSON text. */
static inline void ifx_alert(ifx_t *f, const char *type, const char *rule, const char *fp,
                      const char *team, const char *app, const char *severity,
                      const char *labels_json, const char *summary, int64_t now) {
  char subject[512];
  json_t *labels = json_loads(labels_json, 0, NULL), *data;
  k_event_t ev;
  assert_non_null(labels);
  if (!json_object_get(labels, "alertname")) json_object_set_new(labels, "alertname", json_string(rule));
  json_object_set_new(labels, "severity", json_string(severity));
  snprintf(subject, sizeof subject, "%s/%s", rule, fp);
  data = json_pack("{s:s,s:s,s:s,s:o,s:{s:s?},s:f,s:o,s:o,s:o,s:s?,s:s?,s:s}", "rule", rule,
                   "fingerprint", fp, "state", type + 6, "labels", labels, "annotations",
                   "summary", summary, "value", 1.0, "active_since", keel_json_time(now),
                   "fired_at", keel_json_time(now), "resolved_at",
                   !strcmp(type, "alert.resolved") ? keel_json_time(now) : json_null(),
                   "application", app, "team", team, "severity", severity);
  assert_non_null(data);
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.subject = subject;
  ev.time_ms = now;
  ev.data = data;
  k_incidents_event(f->x, &ev, now);
  json_decref(data);
}

/* Applies a document of either kind (YAML text) in a unit. */
static inline void ifx_apply(ifx_t *f, const char *yaml, int64_t now) {
  json_t *doc = NULL, *rep = NULL;
  keel_buf_t detail;
  keel_err_t e = {0};
  int maint = strstr(yaml, "MaintenanceWindow") != NULL, rc;
  keel_buf_init(&detail, 4096);
  rc = maint ? k_maint_doc_load("t.yaml", yaml, strlen(yaml), &doc, &e)
             : k_notify_doc_load("t.yaml", yaml, strlen(yaml), &doc, &e);
  if (rc) fail_msg("document: %s", e.msg);
  assert_int_equal(k_store_unit_begin(f->s, &e), 0);
  rc = maint ? k_maint_apply(f->m, doc, 0, now, &rep, &detail, &e)
             : k_notify_apply(f->s, doc, 0, now, &rep, &detail, &e);
  if (rc) fail_msg("apply: %s", e.msg);
  assert_int_equal(k_store_unit_end(f->s, 1, &e), 0);
  if (maint) assert_int_equal(k_maint_reload(f->m, &e), 0);
  json_decref(doc);
  json_decref(rep);
  keel_buf_free(&detail);
}

static int64_t ifx_count_cb_n;
static inline int ifx_count_cb(void *ud, const k_val_t *c, int n) {
  (void)ud;
  if (n >= 1 && c[0].type == K_VAL_INT) ifx_count_cb_n = c[0].i;
  return 0;
}

/* SELECT COUNT(*) ... (one text argument or none). */
static inline int64_t ifx_count(ifx_t *f, const char *sql, const char *arg) {
  k_val_t a[] = {K_TEXT(arg)};
  keel_err_t e = {0};
  ifx_count_cb_n = -1;
  if (k_store_exec(f->s, sql, a, arg ? 1 : 0, ifx_count_cb, NULL, &e)) fail_msg("%s: %s", sql, e.msg);
  return ifx_count_cb_n;
}

/* The newest incident (by opening) as k_incident_get gives it. */
static inline json_t *ifx_newest(ifx_t *f) {
  json_t *items = NULL, *out = NULL;
  char *next = NULL;
  keel_err_t e = {0};
  assert_int_equal(k_incident_list(f->x, NULL, NULL, NULL, 1, &items, &next, &e), 0);
  if (json_array_size(items))
    assert_int_equal(k_incident_get(f->x, keel_json_str(json_array_get(items, 0), "id"), &out, &e), 0);
  json_decref(items);
  free(next);
  return out;
}

/* k_incident_act in a unit of its own. */
static inline int ifx_act(ifx_t *f, const char *id, k_incident_act_t a, const char *by,
                          const char *text, int64_t now, keel_err_t *e) {
  json_t *out = NULL;
  int rc;
  assert_int_equal(k_store_unit_begin(f->s, e), 0);
  rc = k_incident_act(f->x, id, a, by, text, now, &out, e);
  assert_int_equal(k_store_unit_end(f->s, rc == 0, NULL), 0);
  json_decref(out);
  return rc;
}

/* Events of type stored so far. */
static inline size_t ifx_events(ifx_t *f, const char *type) {
  k_events_query_t q = {type, NULL, 0, 0, 1000};
  json_t *items = NULL;
  keel_err_t e = {0};
  size_t n;
  assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
  n = json_array_size(items);
  json_decref(items);
  return n;
}

#endif
