/* incident.c — the incident engine (incident.h).
 *
 * The store is the truth; nothing about incidents is cached in memory, so a
 * rolled-back unit or batch leaves nothing to undo here.  Memory holds only
 * what the sending needs: the notifications queued in generations that are
 * not durable yet (`fresh`: never sent before the transition that queued
 * them is on disk) and the ones handed to the sender (`inflight`: never
 * handed over twice).
 *
 * An incident is handled as a JSON object: its API members plus internal
 * ones whose names start with '_' (milliseconds, the route, the escalation
 * cursor, counters), written back by save().
 */
#include "incident/incident.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incident/notify.h"
#include "incident/send.h"
#include "keel/crypto.h"
#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"

#define ID_LEN 32
#define TITLE_MAX 200
#define MAX_INFLIGHT 256
#define SCAN_EVERY_MS 1000
#define TICK_BATCH 64

typedef struct fresh {
  char id[ID_LEN];
  uint64_t gen;
} fresh_t;

struct k_incidents {
  k_incidents_deps_t d;
  k_send_t *send;
  fresh_t *fresh;
  size_t nfresh, capfresh;
  char (*inflight)[ID_LEN];
  size_t ninflight;
  int64_t next_scan_ms;
  int64_t last_esc_ms, next_esc_ms; /* the last look for due steps; the earliest due then */
  int esc_dirty;                     /* an incident changed since */
  uint64_t rows_read;                /* rows the engine's queries returned (tests) */
  /* k_incidents_stats' counters (its gauges are read when asked):
   * outcomes as their notification.* events are delivered, of events
   * after seq0 (the last one stored at open: a restart delivers again
   * events an earlier keeld counted) */
  int64_t seq0;
  k_incident_stats_t n;
  int64_t next_resend_ms; /* the next Alertmanager re-send (0: not set yet) */
};

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }
static json_t *time_or_null(const k_val_t *c) { return keel_json_time(c->type == K_VAL_INT ? c->i : 0); }
/* '' is none: null */
static json_t *str_or_null(const k_val_t *c) {
  return c->type == K_VAL_TEXT && c->s[0] ? json_string(c->s) : json_null();
}
static json_t *int_or_null(const k_val_t *c) { return c->type == K_VAL_INT ? json_integer(c->i) : json_null(); }
static json_t *parse_or(const k_val_t *c, json_t *dflt) {
  json_t *v = c->type == K_VAL_TEXT ? json_loads(c->s, JSON_DECODE_ANY, NULL) : NULL;
  if (v) {
    json_decref(dflt);
    return v;
  }
  return dflt;
}
static const char *jstr(const json_t *o, const char *k) {
  const char *s = keel_json_str(o, k);
  return s ? s : "";
}
static int64_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static int oom(keel_err_t *e) { return keel_err_set(e, KEEL_ENOMEM, "out of memory"); }

/* Every query of the engine goes through here, counting the rows it reads:
 * what an event costs, for tests (k_incidents_rows_read). */
typedef struct counted {
  k_incidents_t *x;
  k_row_fn fn;
  void *ud;
} counted_t;

static int counted_row(void *ud, const k_val_t *c, int n) {
  counted_t *k = ud;
  k->x->rows_read++;
  return k->fn(k->ud, c, n);
}

static int sql(k_incidents_t *x, const char *q, const k_val_t *a, int n, k_row_fn fn, void *ud,
               keel_err_t *e) {
  counted_t k = {x, fn, ud};
  return k_store_exec(x->d.store, q, a, n, fn ? counted_row : NULL, fn ? &k : NULL, e);
}

uint64_t k_incidents_rows_read(const k_incidents_t *x) { return x->rows_read; }

/* ---- reading incidents ------------------------------------------------------------- */

#define INC_COLS                                                                              \
  "id, fingerprint, title, team, application, severity, state, group_labels, opened_ms,"     \
  " acked_ms, acked_by, resolved_ms, resolved_by, updated_ms, route, esc_step, esc_due_ms," \
  " transitions, tl_seq, alerts_total, alerts_firing"
#define INC_NCOLS 21

static json_t *inc_row(const k_val_t *c) {
  return json_pack(
      "{s:s,s:s,s:s,s:o,s:o,s:s,s:s,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:o,s:o,s:o,s:I,s:I,"
      "s:I,s:I,s:I}",
      "id", txt(&c[0]), "kind", "incident", "title", txt(&c[2]), "team", str_or_null(&c[3]),
      "application", str_or_null(&c[4]), "severity", txt(&c[5]), "state", txt(&c[6]), "group",
      parse_or(&c[7], json_object()), "fingerprint", txt(&c[1]), "opened_at",
      time_or_null(&c[8]), "acked_at", time_or_null(&c[9]), "acked_by",
      c[10].type == K_VAL_TEXT ? json_string(c[10].s) : json_null(), "resolved_at",
      time_or_null(&c[11]), "resolved_by",
      c[12].type == K_VAL_TEXT ? json_string(c[12].s) : json_null(), "updated_at",
      time_or_null(&c[13]), "_route", parse_or(&c[14], json_null()), "_opened_ms",
      (json_int_t)c[8].i, "_acked_ms", int_or_null(&c[9]), "_resolved_ms", int_or_null(&c[11]),
      "_esc_due_ms", int_or_null(&c[16]), "_esc_step", (json_int_t)c[15].i, "_transitions",
      (json_int_t)c[17].i, "_tl_seq", (json_int_t)c[18].i, "_alerts_total", (json_int_t)c[19].i,
      "_alerts_firing", (json_int_t)c[20].i);
}

static int one_inc(void *ud, const k_val_t *c, int n) {
  if (n >= INC_NCOLS) *(json_t **)ud = inc_row(c);
  return 0;
}

static int load(k_incidents_t *x, const char *id, json_t **inc, keel_err_t *e) {
  k_val_t a[] = {K_TEXT(id)};
  int rc;
  *inc = NULL;
  if ((rc = sql(x, "SELECT " INC_COLS " FROM incidents WHERE id = ?", a, 1,
                one_inc, inc, e)))
    return rc;
  return *inc ? 0 : keel_err_set(e, KEEL_ENOENT, "no incident '%.64s'", id);
}

/* The API's view: without the internal members. */
static json_t *public_of(const json_t *inc) {
  json_t *o = json_object(), *v;
  const char *k;
  json_object_foreach((json_t *)inc, k, v) if (k[0] != '_') json_object_set(o, k, v);
  return o;
}

#define ALERT_COLS "subject, rule, state, severity, labels, annotations, value, starts_ms, ends_ms, joined_ms"

static int alert_row(void *ud, const k_val_t *c, int n) {
  const char *subj = txt(&c[0]), *slash = strrchr(subj, '/');
  if (n < 10) return 0;
  json_array_append_new(
      ud, json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "subject", subj, "rule",
                    txt(&c[1]), "fingerprint", slash ? slash + 1 : "", "state", txt(&c[2]),
                    "severity", txt(&c[3]), "labels", parse_or(&c[4], json_object()),
                    "annotations", parse_or(&c[5], json_object()), "value",
                    parse_or(&c[6], json_null()), "starts_at", time_or_null(&c[7]), "ends_at",
                    time_or_null(&c[8]), "joined_at", time_or_null(&c[9])));
  return 0;
}

static int load_alerts(k_incidents_t *x, const char *id, json_t **out, keel_err_t *e) {
  k_val_t a[] = {K_TEXT(id)};
  int rc;
  if (!(*out = json_array())) return oom(e);
  rc = sql(x,
           "SELECT " ALERT_COLS " FROM incident_alerts WHERE incident_id = ?"
           " ORDER BY joined_ms, subject",
           a, 1, alert_row, *out, e);
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}

typedef struct subjects {
  json_t *out;
  size_t bytes; /* of the subjects so far, as JSON strings with a comma */
} subjects_t;

static int subject_row(void *ud, const k_val_t *c, int n) {
  subjects_t *s = ud;
  size_t len = n >= 1 ? strlen(txt(&c[0])) + 3 : 0;
  if (n < 1) return 0;
  if (s->bytes + len > K_INCIDENT_EVENT_ALERT_BYTES) return 1; /* full: stop */
  s->bytes += len;
  json_array_append_new(s->out, json_string(txt(&c[0])));
  return 0;
}

/* The first alerts of incident id: firing ones first, then resolved ones,
 * each in joining order; at most limit of them.  full: as load_alerts
 * gives them; else their subjects only, also at most
 * K_INCIDENT_EVENT_ALERT_BYTES of them.  Reads no more rows than it
 * returns (index incident_alerts_order), however many the incident has. */
static int first_alerts(k_incidents_t *x, const char *id, int full, size_t limit, json_t **out,
                        keel_err_t *e) {
  static const char *const states[] = {"firing", "resolved"};
  subjects_t s = {json_array(), 0};
  int rc = 0;

  if (!(*out = s.out)) return oom(e);
  for (size_t i = 0; i < 2 && !rc && json_array_size(*out) < limit; i++) {
    k_val_t a[] = {K_TEXT(id), K_TEXT(states[i]), K_INT((int64_t)(limit - json_array_size(*out)))};
    rc = full ? sql(x,
                    "SELECT " ALERT_COLS " FROM incident_alerts WHERE incident_id = ? AND state = ?"
                    " ORDER BY joined_ms, subject LIMIT ?",
                    a, 3, alert_row, *out, e)
              : sql(x,
                    "SELECT subject FROM incident_alerts WHERE incident_id = ? AND state = ?"
                    " ORDER BY joined_ms, subject LIMIT ?",
                    a, 3, subject_row, &s, e);
  }
  if (rc == 1) rc = 0; /* the subjects' budget is spent */
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}

/* How many of the incident's alerts a list of n of them leaves out. */
static int64_t left_out(const json_t *inc, size_t n) {
  int64_t t = jint(inc, "_alerts_total") - (int64_t)n;
  return t > 0 ? t : 0;
}

void k_incident_path(const json_t *inc, char *out, size_t n) {
  const char *app = jstr(inc, "application"), *team = jstr(inc, "team"), *id = jstr(inc, "id");
  if (*app) snprintf(out, n, "app/%s/incident/%s", app, id);
  else snprintf(out, n, "team/%s/incident/%s", *team ? team : "_", id);
}

/* ---- writing ---------------------------------------------------------------------------- */

static int save(k_incidents_t *x, json_t *inc, int64_t now, keel_err_t *e) {
  json_t *due = json_object_get(inc, "_esc_due_ms");
  json_t *ack = json_object_get(inc, "_acked_ms"), *res = json_object_get(inc, "_resolved_ms");
  k_val_t a[] = {K_TEXT(jstr(inc, "title")),
                 K_TEXT(jstr(inc, "severity")),
                 K_TEXT(jstr(inc, "state")),
                 json_is_integer(ack) ? K_INT(json_integer_value(ack)) : K_NULLV,
                 K_TEXT(keel_json_str(inc, "acked_by")),
                 json_is_integer(res) ? K_INT(json_integer_value(res)) : K_NULLV,
                 K_TEXT(keel_json_str(inc, "resolved_by")),
                 K_INT(now),
                 K_INT(jint(inc, "_esc_step")),
                 json_is_integer(due) ? K_INT(json_integer_value(due)) : K_NULLV,
                 K_INT(jint(inc, "_transitions")),
                 K_INT(jint(inc, "_tl_seq")),
                 K_INT(jint(inc, "_alerts_total")),
                 K_INT(jint(inc, "_alerts_firing")),
                 K_TEXT(jstr(inc, "id"))};
  json_object_set_new(inc, "updated_at", keel_json_time(now));
  x->esc_dirty = 1;
  return sql(x,
             "UPDATE incidents SET title = ?, severity = ?, state = ?, acked_ms = ?,"
             " acked_by = ?, resolved_ms = ?, resolved_by = ?, updated_ms = ?,"
             " esc_step = ?, esc_due_ms = ?, transitions = ?, tl_seq = ?,"
             " alerts_total = ?, alerts_firing = ? WHERE id = ?",
             a, 15, NULL, NULL, e);
}

/* One timeline entry (data borrowed, may be NULL). */
static int timeline(k_incidents_t *x, json_t *inc, int64_t now, const char *kind,
                    const char *actor, const char *text, const json_t *data, keel_err_t *e) {
  int64_t seq = jint(inc, "_tl_seq") + 1;
  char *dtext = data ? keel_json_canonical(data) : NULL;
  k_val_t a[] = {K_TEXT(jstr(inc, "id")), K_INT(seq), K_INT(now), K_TEXT(kind),
                 K_TEXT(actor ? actor : ""), K_TEXT(text ? text : ""), K_TEXT(dtext)};
  int rc = sql(x,
               "INSERT INTO incident_timeline(incident_id, seq, time_ms, kind, actor,"
               " text, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
               a, 7, NULL, NULL, e);
  free(dtext);
  if (!rc) json_object_set_new(inc, "_tl_seq", json_integer(seq));
  return rc;
}

/* Labels with team and application filled in when they lack them: what
 * routes and maintenance windows match, and what notifications carry. */
static json_t *merged_labels(const json_t *labels, const char *team, const char *app) {
  json_t *o = json_is_object(labels) ? json_deep_copy(labels) : json_object();
  if (!o) return NULL;
  if (team && *team && !json_object_get(o, "team")) json_object_set_new(o, "team", json_string(team));
  if (app && *app && !json_object_get(o, "application"))
    json_object_set_new(o, "application", json_string(app));
  return o;
}

static int emit(k_incidents_t *x, const json_t *inc, const char *type, const json_t *data,
                const char *cause, int64_t now, keel_err_t *e) {
  char path[192];
  k_event_t ev;
  memset(&ev, 0, sizeof ev);
  k_incident_path(inc, path, sizeof path);
  ev.type = type;
  ev.subject = jstr(inc, "id");
  ev.time_ms = now;
  ev.path = path;
  ev.cause = cause;
  ev.data = data;
  return k_event_emit(x->d.events, &ev, NULL, e);
}

/* incident.* with the data shape of docs/events.md.  Its size does not
 * grow with the incident: at most K_INCIDENT_EVENT_ALERTS subjects (and
 * K_INCIDENT_EVENT_ALERT_BYTES of them), with the total and how many were
 * left out. */
static int emit_inc(k_incidents_t *x, const json_t *inc, const char *type, const char *by,
                    const char *cause, int64_t now, keel_err_t *e) {
  json_t *subjects = NULL, *data;
  int rc;
  if ((rc = first_alerts(x, jstr(inc, "id"), 0, K_INCIDENT_EVENT_ALERTS, &subjects, e))) return rc;
  data = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:O,s:O,s:I,s:I,s:o,s:o}", "id", jstr(inc, "id"),
                   "title", jstr(inc, "title"), "team", jstr(inc, "team"), "application",
                   jstr(inc, "application"), "severity", jstr(inc, "severity"), "state",
                   jstr(inc, "state"), "group", json_object_get(inc, "group"), "alerts", subjects,
                   "alerts_total", (json_int_t)jint(inc, "_alerts_total"), "alerts_truncated",
                   (json_int_t)left_out(inc, json_array_size(subjects)), "by",
                   by ? json_string(by) : json_null(), "labels",
                   merged_labels(json_object_get(inc, "group"), jstr(inc, "team"),
                                 jstr(inc, "application")));
  json_decref(subjects);
  if (!data) return oom(e);
  rc = emit(x, inc, type, data, cause, now, e);
  json_decref(data);
  return rc;
}

/* ---- notifications ---------------------------------------------------------------------- */

static void fresh_add(k_incidents_t *x, const char *id) {
  fresh_t *f = keel_grow(x->fresh, &x->capfresh, x->nfresh, sizeof *f, 64);
  if (!f) return; /* the periodic scan finds the row anyway, maybe a commit early */
  x->fresh = f;
  snprintf(x->fresh[x->nfresh].id, ID_LEN, "%s", id);
  x->fresh[x->nfresh++].gen = k_store_visible_gen(x->d.store);
}

typedef struct mute {
  k_incidents_t *x;
  const json_t *inc;
  int64_t now;
  int any, all;
  char window[K_MAINT_NAME_MAX];
} mute_t;

static int mute_row(void *ud, const k_val_t *c, int n) {
  mute_t *m = ud;
  json_t *raw = n >= 1 ? parse_or(&c[0], json_object()) : NULL, *labels;
  char w[K_MAINT_NAME_MAX];
  int sup;
  if (n < 1) return 0;
  labels = merged_labels(raw, jstr(m->inc, "team"), jstr(m->inc, "application"));
  sup = labels && k_maint_suppressed(m->x->d.maint, labels, m->now, w, sizeof w);
  json_decref(raw);
  json_decref(labels);
  if (!sup) {
    m->all = 0;
    return 1; /* one alert that is not muted settles it */
  }
  if (!m->any) snprintf(m->window, sizeof m->window, "%s", w);
  m->any = 1;
  return 0;
}

/* *muted = 1 when every alert of inc (every firing one, unless resolved)
 * is under an active maintenance window; window gets the first one's name.
 * Stops at the first alert that is not: reading every alert happens only
 * when they are all muted, and only when a notification is queued. */
static int all_muted(k_incidents_t *x, const json_t *inc, int resolved, int64_t now, int *muted,
                     char *window, size_t wlen, keel_err_t *e) {
  mute_t m = {x, inc, now, 0, 1, ""};
  k_val_t a[] = {K_TEXT(jstr(inc, "id"))};
  int rc = x->d.maint ? sql(x,
                            resolved ? "SELECT labels FROM incident_alerts WHERE incident_id = ?"
                                     : "SELECT labels FROM incident_alerts WHERE incident_id = ?"
                                       " AND state = 'firing'",
                            a, 1, mute_row, &m, e)
                      : 0;
  if (rc == 1) rc = 0;
  *muted = !rc && m.any && m.all;
  snprintf(window, wlen, "%s", *muted ? m.window : "");
  return rc;
}

typedef struct nrow {
  int found;
  char window[K_MAINT_NAME_MAX];
} nrow_t;

static int window_row(void *ud, const k_val_t *c, int n) {
  nrow_t *r = ud;
  if (n < 2) return 0;
  if (c[0].type == K_VAL_INT && c[0].i > 0) r->found = 1;
  snprintf(r->window, sizeof r->window, "%s", txt(&c[1]));
  return 0;
}

/* A notification event (notification.sent / .failed / .suppressed) with
 * its timeline entry. */
static int note(k_incidents_t *x, json_t *inc, const char *type, const char *ntf,
                const char *transition, int step, const char *channel, const char *detail,
                const char *cause, int64_t now, keel_err_t *e) {
  json_t *data = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s}", "id", ntf, "incident", jstr(inc, "id"),
                           "transition", transition, "step", step, "channel", channel, "detail",
                           detail ? detail : "");
  char text[400];
  int rc;
  if (!data) return oom(e);
  snprintf(text, sizeof text, "%s to %s (step %d)%s%s", transition, channel, step,
           detail && *detail ? ": " : "", detail ? detail : "");
  rc = timeline(x, inc, now, type, "keeld", text, data, e);
  if (!rc) rc = emit(x, inc, type, data, cause, now, e);
  json_decref(data);
  return rc;
}

static int64_t am_resend_ms(const k_incidents_t *x) {
  return x->d.am_resend_ms > 0 ? x->d.am_resend_ms : K_NOTIFY_AM_RESEND_MS;
}

/* What a notification about inc says, but for its id, channel and step:
 * n->incident (*pub) the incident as the API shows it, n->alerts (*alerts)
 * its first K_INCIDENT_NOTIFY_ALERTS alerts (firing first) with team and
 * application merged into their labels, n->truncated how many were left
 * out.  *pub and *alerts are new; the caller releases them, also on error. */
static int notice_of(k_incidents_t *x, const json_t *inc, const char *status, int64_t now,
                     k_notice_t *n, json_t **pub, json_t **alerts, keel_err_t *e) {
  json_t *a;
  size_t i;
  int rc;
  *pub = NULL;
  if ((rc = first_alerts(x, jstr(inc, "id"), 1, K_INCIDENT_NOTIFY_ALERTS, alerts, e))) return rc;
  json_array_foreach(*alerts, i, a)
      json_object_set_new(a, "labels", merged_labels(json_object_get(a, "labels"), jstr(inc, "team"),
                                                     jstr(inc, "application")));
  if (!(*pub = public_of(inc))) return oom(e);
  *n = (k_notice_t){*pub, *alerts, status, NULL, NULL, 0, x->d.external_url ? x->d.external_url : "",
                    now, left_out(inc, json_array_size(*alerts)), 4 * am_resend_ms(x)};
  return 0;
}

/* Queues the notification of one transition to each target ({"channel":
 * channel object, "step": k}).  The incident's alerts are read only when
 * there is a target. */
static int queue(k_incidents_t *x, json_t *inc, const char *transition, const json_t *targets,
                 const char *cause, int64_t now, keel_err_t *e) {
  int resolved = !strcmp(transition, "resolved");
  json_t *nalerts = NULL, *pub = NULL, *t;
  k_notice_t n;
  char window[K_MAINT_NAME_MAX];
  size_t i;
  int rc = 0, muted;

  if (!json_array_size(targets)) return 0;
  if ((rc = notice_of(x, inc, resolved ? "resolved" : "firing", now, &n, &pub, &nalerts, e)) ||
      (rc = all_muted(x, inc, resolved, now, &muted, window, sizeof window, e)))
    goto out;
  json_array_foreach(targets, i, t) {
    const json_t *ch = json_object_get(t, "channel");
    int step = (int)jint(t, "step"), sup = muted;
    char id[ID_LEN], url[2200], why[K_MAINT_NAME_MAX + 64] = "";
    char *body = NULL, *hdrs = NULL;
    json_t *b;

    n.id = id;
    n.channel = jstr(ch, "name");
    n.step = step;
    if (sup) snprintf(why, sizeof why, "maintenance window %s", window);
    if (resolved && !sup) {
      /* a channel that was told nothing of this incident (every firing
       * notification to it suppressed) is not told it resolved either */
      nrow_t r = {0, ""};
      k_val_t q[] = {K_TEXT(jstr(inc, "id")), K_TEXT(jstr(ch, "name"))};
      if ((rc = sql(x,
                    "SELECT SUM(CASE WHEN status <> 'suppressed' THEN 1 ELSE 0 END),"
                    " MAX(maint_window) FROM notification_outbox"
                    " WHERE incident_id = ? AND channel = ?",
                    q, 2, window_row, &r, e)))
        goto out;
      if (!r.found && r.window[0]) {
        sup = 1;
        snprintf(window, sizeof window, "%s", r.window);
        snprintf(why, sizeof why, "its firing notifications were suppressed (maintenance window %s)",
                 r.window);
      }
    }
    keel_random_id(id, sizeof id, "ntf_");
    k_notify_target_url(ch, url, sizeof url);
    b = k_notify_body(ch, &n);
    body = b ? keel_json_canonical(b) : NULL;
    json_decref(b);
    hdrs = json_object_get(ch, "headers") ? keel_json_canonical(json_object_get(ch, "headers"))
                                          : strdup("{}");
    if (!body || !hdrs) {
      free(body);
      free(hdrs);
      rc = oom(e);
      goto out;
    }
    {
      json_t *route = json_object_get(inc, "_route");
      k_val_t v[] = {K_TEXT(id),
                     K_TEXT(jstr(inc, "id")),
                     K_TEXT(transition),
                     K_INT(step),
                     K_TEXT(jstr(ch, "name")),
                     K_TEXT(jstr(route, "policy")),
                     K_TEXT(jstr(ch, "type")),
                     K_TEXT(url),
                     K_TEXT(hdrs),
                     K_INT(jint(ch, "timeout_ms") > 0 ? jint(ch, "timeout_ms") : 10000),
                     K_TEXT(body),
                     K_TEXT(sup ? "suppressed" : "pending"),
                     K_INT(now),
                     K_TEXT(sup ? window : ""),
                     K_INT(now),
                     sup ? K_INT(now) : K_NULLV};
      rc = sql(x,
               "INSERT INTO notification_outbox(id, incident_id, transition, step, channel,"
               " policy, type, url, headers, timeout_ms, body, status, next_ms,"
               " maint_window, created_ms, done_ms)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
               " ON CONFLICT (incident_id, transition, step, channel) DO NOTHING",
               v, 16, NULL, NULL, e);
    }
    free(body);
    free(hdrs);
    if (rc) goto out;
    if (k_store_changes(x->d.store) == 0) continue; /* queued before: never twice */
    if (sup)
      rc = note(x, inc, "notification.suppressed", id, transition, step, jstr(ch, "name"), why,
                cause, now, e);
    else
      fresh_add(x, id);
    if (rc) goto out;
  }
out:
  json_decref(nalerts);
  json_decref(pub);
  return rc;
}

/* The channels the escalation reached so far (steps [0, _esc_step)), each
 * once, with the first step that reached it. */
static json_t *reached(const json_t *inc) {
  json_t *out = json_array(), *st, *ch, *t;
  const json_t *steps = json_object_get(json_object_get(inc, "_route"), "steps");
  int64_t upto = jint(inc, "_esc_step");
  size_t i, j, k;
  json_array_foreach(steps, i, st) {
    if ((int64_t)i >= upto) break;
    json_array_foreach(json_object_get(st, "channels"), j, ch) {
      int seen = 0;
      json_array_foreach(out, k, t) if (!strcmp(jstr(json_object_get(t, "channel"), "name"), jstr(ch, "name"))) seen = 1;
      if (!seen) json_array_append_new(out, json_pack("{s:O,s:i}", "channel", ch, "step", (int)i));
    }
  }
  return out;
}

static void transition_name(const json_t *inc, char *out, size_t n) {
  snprintf(out, n, "firing#%lld", (long long)jint(inc, "_transitions"));
}

/* A notifying transition after the first: tell every channel reached. */
static int notify_reached(k_incidents_t *x, json_t *inc, const char *transition, const char *cause,
                          int64_t now, keel_err_t *e) {
  json_t *targets = reached(inc);
  int rc = targets ? queue(x, inc, transition, targets, cause, now, e) : oom(e);
  json_decref(targets);
  return rc;
}

/* Runs the escalation steps due at now; sets _esc_step and _esc_due_ms.
 * *stepped: how many steps ran (their notifications queued). */
static int escalate(k_incidents_t *x, json_t *inc, const char *cause, int64_t now, int *stepped,
                    keel_err_t *e) {
  const json_t *steps = json_object_get(json_object_get(inc, "_route"), "steps");
  int64_t k = jint(inc, "_esc_step"), opened = jint(inc, "_opened_ms");
  size_t n = json_array_size(steps);
  const char *state = jstr(inc, "state");
  char tr[32];
  int rc = 0;

  *stepped = 0;
  transition_name(inc, tr, sizeof tr);
  while (!rc && (size_t)k < n && strcmp(state, "resolved")) {
    const json_t *st = json_array_get(steps, (size_t)k);
    if (opened + jint(st, "after_ms") > now) break;
    /* acked: the steps that wait for an ack are skipped for good */
    if (strcmp(state, "acked") || !json_is_true(json_object_get(st, "if_not_acked"))) {
      json_t *targets = json_array(), *ch;
      size_t i;
      char text[64];
      if (!targets) return oom(e);
      json_array_foreach(json_object_get(st, "channels"), i, ch)
          json_array_append_new(targets, json_pack("{s:O,s:i}", "channel", ch, "step", (int)k));
      rc = queue(x, inc, tr, targets, cause, now, e);
      json_decref(targets);
      if (!rc && k > 0) {
        snprintf(text, sizeof text, "escalation step %lld", (long long)k);
        rc = timeline(x, inc, now, "escalated", "keeld", text, NULL, e);
      }
      (*stepped)++;
    }
    k++;
  }
  json_object_set_new(inc, "_esc_step", json_integer(k));
  if ((size_t)k < n && strcmp(state, "resolved"))
    json_object_set_new(inc, "_esc_due_ms",
                        json_integer(opened + jint(json_array_get(steps, (size_t)k), "after_ms")));
  else
    json_object_set_new(inc, "_esc_due_ms", json_null());
  return rc;
}

/* ---- alerts ---------------------------------------------------------------------------- */

static int sev_rank(const char *s) {
  static const char *const order[] = {"info", "warning", "error", "critical", NULL};
  for (int i = 0; order[i]; i++)
    if (!strcmp(s, order[i])) return i + 1;
  return 0;
}

typedef struct alert_in {
  const char *subject, *rule, *team, *app, *severity;
  const json_t *labels, *annotations, *value;
  int64_t starts_ms, ends_ms;
} alert_in_t;

static int64_t time_member(const json_t *data, const char *key, int64_t dflt) {
  const char *s = keel_json_str(data, key);
  int64_t ms;
  return s && !keel_time_parse(s, &ms) ? ms : dflt;
}

static void alert_of(const k_event_t *ev, alert_in_t *a) {
  const json_t *d = ev->data;
  memset(a, 0, sizeof *a);
  a->subject = ev->subject ? ev->subject : "";
  a->rule = jstr(d, "rule");
  a->team = jstr(d, "team");
  a->app = jstr(d, "application");
  a->severity = keel_json_str(d, "severity") ? jstr(d, "severity")
                                             : jstr(json_object_get(d, "labels"), "severity");
  a->labels = json_object_get(d, "labels");
  a->annotations = json_object_get(d, "annotations");
  a->value = json_object_get(d, "value");
  a->starts_ms = time_member(d, "active_since", time_member(d, "fired_at", ev->time_ms));
  a->ends_ms = time_member(d, "resolved_at", ev->time_ms);
}

/* The group labels and the incident fingerprint of an alert. */
static json_t *group_of(const alert_in_t *a, char fp[17]) {
  const char *g = keel_json_str(a->labels, "incident_group");
  json_t *group = g ? json_pack("{s:s}", "incident_group", g)
                    : json_pack("{s:s}", "alertname",
                                keel_json_str(a->labels, "alertname") ? jstr(a->labels, "alertname")
                                                                     : a->rule);
  json_t *key = json_pack("{s:s,s:s,s:O}", "team", a->team, "application", a->app, "group", group);
  char *text = key ? keel_json_canonical(key) : NULL;
  char hex[KEEL_HASH_HEX];
  keel_hash_hex(hex, text ? text : "", text ? strlen(text) : 0);
  memcpy(fp, hex, 16);
  fp[16] = '\0';
  free(text);
  json_decref(key);
  return group;
}

static int add_alert(k_incidents_t *x, const char *inc_id, const alert_in_t *a, int64_t now,
                     keel_err_t *e) {
  char *labels = keel_json_canonical(json_is_object(a->labels) ? a->labels : json_object());
  char *ann = keel_json_canonical(json_is_object(a->annotations) ? a->annotations : json_object());
  char *val = a->value && json_is_number(a->value) ? json_dumps(a->value, JSON_ENCODE_ANY) : NULL;
  k_val_t v[] = {K_TEXT(inc_id),
                 K_TEXT(a->subject),
                 K_TEXT(a->rule),
                 K_TEXT(a->severity),
                 K_TEXT(labels ? labels : "{}"),
                 K_TEXT(ann ? ann : "{}"),
                 K_TEXT(val),
                 K_TEXT(jstr(a->labels, "agent_id")),
                 K_TEXT(jstr(a->labels, "instance")),
                 K_INT(a->starts_ms),
                 K_INT(now)};
  int rc = sql(x,
               "INSERT INTO incident_alerts(incident_id, subject, rule, state, severity,"
               " labels, annotations, value, agent_id, instance, starts_ms, joined_ms)"
               " VALUES (?, ?, ?, 'firing', ?, ?, ?, ?, ?, ?, ?, ?)",
               v, 11, NULL, NULL, e);
  free(labels);
  free(ann);
  free(val);
  /* the incident's hosts, by which executions find it (on_execution) */
  for (int i = 0; i < 2 && !rc; i++) {
    const char *key = i ? "instance" : "agent_id", *host = jstr(a->labels, key);
    char k[600];
    if (!*host) continue;
    snprintf(k, sizeof k, "%s=%s", key, host);
    {
      k_val_t h[] = {K_TEXT(k), K_TEXT(inc_id)};
      rc = sql(x, "INSERT OR IGNORE INTO incident_hosts(host, incident_id) VALUES (?, ?)", h, 2,
               NULL, NULL, e);
    }
  }
  return rc;
}

/* Adds n to one of the incident's counters (_alerts_total, _alerts_firing);
 * save() writes them. */
static void count(json_t *inc, const char *counter, int n) {
  int64_t v = jint(inc, counter) + n;
  json_object_set_new(inc, counter, json_integer(v > 0 ? v : 0));
}

typedef struct live {
  char id[ID_LEN];
  char state[16];
} live_t;

static int live_row(void *ud, const k_val_t *c, int n) {
  live_t *l = ud;
  if (n >= 2) {
    snprintf(l->id, sizeof l->id, "%s", txt(&c[0]));
    snprintf(l->state, sizeof l->state, "%s", txt(&c[1]));
  }
  return 0;
}

static int open_incident(k_incidents_t *x, const alert_in_t *a, json_t *group, const char *fp,
                         const char *cause, int64_t now, keel_err_t *e) {
  json_t *route = NULL, *labels = merged_labels(a->labels, a->team, a->app), *inc = NULL;
  char id[ID_LEN], title[TITLE_MAX + 1], *gtext = keel_json_canonical(group), *rtext = NULL;
  const char *summary = keel_json_str(a->annotations, "summary");
  int rc, stepped;

  if (!labels || !gtext) {
    rc = oom(e);
    goto out;
  }
  snprintf(title, sizeof title, "%s",
           summary && *summary ? summary
                               : keel_json_str(a->labels, "alertname") ? jstr(a->labels, "alertname")
                                                                       : a->rule);
  keel_utf8_sanitize(title);
  if ((rc = k_notify_route(x->d.store, a->team, labels, &route, e))) goto out;
  rtext = json_is_null(route) ? NULL : keel_json_canonical(route);
  keel_random_id(id, sizeof id, "inc_");
  {
    k_val_t v[] = {K_TEXT(id), K_TEXT(fp), K_TEXT(title), K_TEXT(a->team), K_TEXT(a->app),
                   K_TEXT(a->severity), K_TEXT(gtext), K_INT(now), K_INT(now), K_TEXT(rtext)};
    if ((rc = sql(x,
                  "INSERT INTO incidents(id, fingerprint, title, team, application,"
                  " severity, state, group_labels, opened_ms, updated_ms, route,"
                  " transitions, alerts_total, alerts_firing)"
                  " VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, 1, 1, 1)",
                  v, 10, NULL, NULL, e)) ||
        (rc = add_alert(x, id, a, now, e)) || (rc = load(x, id, &inc, e)))
      goto out;
  }
  if ((rc = timeline(x, inc, now, "opened", "keeld", title, NULL, e)) ||
      (rc = timeline(x, inc, now, "alert.firing", "keeld", a->subject, NULL, e)))
    goto out;
  if (!rtext && (rc = timeline(x, inc, now, "notification.none", "keeld",
                               "no notification route matches this incident", NULL, e)))
    goto out;
  if ((rc = escalate(x, inc, cause, now, &stepped, e)) || (rc = save(x, inc, now, e)) ||
      (rc = emit_inc(x, inc, "incident.opened", NULL, cause, now, e)))
    goto out;
out:
  json_decref(route);
  json_decref(labels);
  json_decref(inc);
  free(gtext);
  free(rtext);
  return rc;
}

/* The alert (again) firing in live incident id: joined (was_state "") or
 * back from resolved (was_state "resolved"). */
static int alert_fires_in(k_incidents_t *x, const char *id, const alert_in_t *a, int again,
                          const char *cause, int64_t now, keel_err_t *e) {
  json_t *inc = NULL;
  char tr[32];
  int rc;

  if ((rc = load(x, id, &inc, e))) return rc;
  if (again) {
    k_val_t v[] = {K_TEXT(a->severity), K_INT(a->starts_ms), K_TEXT(id), K_TEXT(a->subject)};
    rc = sql(x,
             "UPDATE incident_alerts SET state = 'firing', severity = ?, starts_ms = ?,"
             " ends_ms = NULL WHERE incident_id = ? AND subject = ?",
             v, 4, NULL, NULL, e);
  } else {
    rc = add_alert(x, id, a, now, e);
    count(inc, "_alerts_total", 1);
  }
  if (rc) goto out;
  count(inc, "_alerts_firing", 1);
  if (sev_rank(a->severity) > sev_rank(jstr(inc, "severity")))
    json_object_set_new(inc, "severity", json_string(a->severity));
  json_object_set_new(inc, "_transitions", json_integer(jint(inc, "_transitions") + 1));
  transition_name(inc, tr, sizeof tr);
  if ((rc = timeline(x, inc, now, again ? "alert.refiring" : "alert.firing", "keeld", a->subject,
                     NULL, e)) ||
      (rc = notify_reached(x, inc, tr, cause, now, e)) || (rc = save(x, inc, now, e)) ||
      (rc = emit_inc(x, inc, "incident.updated", NULL, cause, now, e)))
    goto out;
out:
  json_decref(inc);
  return rc;
}

/* Resolves inc (by whom) and notifies; inside the caller's unit.  Its
 * hosts leave incident_hosts: executions look for live incidents only. */
static int resolve(k_incidents_t *x, json_t *inc, const char *by, const char *text,
                   const char *cause, int64_t now, keel_err_t *e) {
  k_val_t a[] = {K_TEXT(jstr(inc, "id"))};
  int rc;
  json_object_set_new(inc, "state", json_string("resolved"));
  json_object_set_new(inc, "_resolved_ms", json_integer(now));
  json_object_set_new(inc, "resolved_at", keel_json_time(now));
  json_object_set_new(inc, "resolved_by", json_string(by));
  json_object_set_new(inc, "_esc_due_ms", json_null());
  if ((rc = timeline(x, inc, now, "resolved", by, text, NULL, e)) ||
      (rc = notify_reached(x, inc, "resolved", cause, now, e)) || (rc = save(x, inc, now, e)) ||
      (rc = sql(x, "DELETE FROM incident_hosts WHERE incident_id = ?", a, 1, NULL, NULL, e)) ||
      (rc = emit_inc(x, inc, "incident.resolved", by, cause, now, e)))
    return rc;
  return 0;
}

static int alert_resolved_in(k_incidents_t *x, const char *id, const alert_in_t *a,
                             const char *cause, int64_t now, keel_err_t *e) {
  json_t *inc = NULL;
  int rc;
  k_val_t v[] = {K_INT(a->ends_ms), K_TEXT(id), K_TEXT(a->subject)};

  if ((rc = sql(x,
                "UPDATE incident_alerts SET state = 'resolved', ends_ms = ?"
                " WHERE incident_id = ? AND subject = ?",
                v, 3, NULL, NULL, e)) ||
      (rc = load(x, id, &inc, e)) ||
      (rc = timeline(x, inc, now, "alert.resolved", "keeld", a->subject, NULL, e)))
    goto out;
  count(inc, "_alerts_firing", -1);
  if (!jint(inc, "_alerts_firing"))
    rc = resolve(x, inc, "keeld", "all its alerts resolved", cause, now, e);
  else if (!(rc = save(x, inc, now, e)))
    rc = emit_inc(x, inc, "incident.updated", NULL, cause, now, e);
out:
  json_decref(inc);
  return rc;
}

static int on_alert(k_incidents_t *x, const k_event_t *ev, int64_t now, keel_err_t *e) {
  int firing = !strcmp(ev->type, "alert.firing");
  alert_in_t a;
  live_t l = {"", ""};
  int rc;

  alert_of(ev, &a);
  if (!*a.subject) return keel_err_set(e, KEEL_EINVAL, "%s without a subject", ev->type);
  {
    k_val_t v[] = {K_TEXT(a.subject)};
    if ((rc = sql(x,
                  "SELECT a.incident_id, a.state FROM incident_alerts a"
                  " JOIN incidents i ON i.id = a.incident_id"
                  " WHERE a.subject = ? AND i.state <> 'resolved'",
                  v, 1, live_row, &l, e)))
      return rc;
  }
  if (!firing) return l.id[0] && !strcmp(l.state, "firing") ? alert_resolved_in(x, l.id, &a, ev->cause, now, e) : 0;
  if (l.id[0]) return !strcmp(l.state, "firing") ? 0 : alert_fires_in(x, l.id, &a, 1, ev->cause, now, e);
  {
    char fp[17];
    json_t *group = group_of(&a, fp);
    if (!group) return oom(e);
    {
      k_val_t v[] = {K_TEXT(fp)};
      rc = sql(x,
               "SELECT id, state FROM incidents WHERE fingerprint = ? AND state <> 'resolved'",
               v, 1, live_row, &l, e);
    }
    if (!rc) rc = l.id[0] ? alert_fires_in(x, l.id, &a, 0, ev->cause, now, e)
                          : open_incident(x, &a, group, fp, ev->cause, now, e);
    json_decref(group);
  }
  return rc;
}

/* ---- related events ----------------------------------------------------------------- */

typedef struct hosts {
  const char *host; /* the target as the timeline names it */
  json_t *hits;     /* incident id -> [hosts] */
} hosts_t;

static int host_row(void *ud, const k_val_t *c, int n) {
  hosts_t *h = ud;
  json_t *l, *v;
  size_t i;
  if (n < 1) return 0;
  if (!(l = json_object_get(h->hits, txt(&c[0])))) json_object_set_new(h->hits, txt(&c[0]), l = json_array());
  json_array_foreach(l, i, v) if (!strcmp(json_string_value(v), h->host)) return 0;
  json_array_append_new(l, json_string(h->host));
  return 0;
}

/* An execution whose targets are hosts of live incidents' alerts goes on
 * their timelines.  Each target is looked up by key in incident_hosts:
 * the cost grows with the targets and the incidents they touch, not with
 * the alerts those incidents hold. */
static int on_execution(k_incidents_t *x, const k_event_t *ev, int64_t now, keel_err_t *e) {
  const json_t *targets = json_object_get(ev->data, "targets"), *t;
  hosts_t h = {NULL, json_object()};
  const char *id;
  json_t *hl;
  size_t i;
  int rc = 0;

  if (!h.hits) return oom(e);
  json_array_foreach(targets, i, t) {
    const char *aid = jstr(t, "agent_id"), *hn = jstr(t, "hostname");
    char ka[600], ki[600];
    k_val_t a[] = {K_TEXT(ka), K_TEXT(ki)};
    if (rc) break;
    /* an empty name matches nothing: add_alert stores no "agent_id=" */
    snprintf(ka, sizeof ka, "agent_id=%s", aid);
    snprintf(ki, sizeof ki, "instance=%s", hn);
    h.host = *hn ? hn : aid;
    rc = sql(x, "SELECT DISTINCT incident_id FROM incident_hosts WHERE host IN (?, ?)", a, 2,
             host_row, &h, e);
  }
  json_object_foreach(h.hits, id, hl) {
    json_t *inc = NULL, *data;
    char text[400];
    if (rc) break;
    snprintf(text, sizeof text, "execution %s of runbook %s %s%s%s", jstr(ev->data, "id"),
             jstr(ev->data, "runbook"), !strcmp(ev->type, "execution.started") ? "started" : "finished",
             keel_json_str(ev->data, "status") ? ": " : "", jstr(ev->data, "status"));
    data = json_pack("{s:s,s:s,s:s,s:s,s:O}", "execution", jstr(ev->data, "id"), "runbook",
                     jstr(ev->data, "runbook"), "status", jstr(ev->data, "status"), "cause",
                     ev->cause ? ev->cause : "", "hosts", hl);
    if (!data) rc = oom(e);
    if (!rc && !(rc = load(x, id, &inc, e)) &&
        !(rc = timeline(x, inc, now, ev->type, jstr(ev->data, "owner"), text, data, e)) &&
        !(rc = save(x, inc, now, e)))
      rc = emit_inc(x, inc, "incident.updated", NULL, ev->cause, now, e);
    json_decref(data);
    json_decref(inc);
  }
  json_decref(h.hits);
  return rc;
}

/* An outcome is written in one unit with its notification.* event — the
 * engine's own, or an API request's (a resolve that notifies) — so its
 * delivery is the one place that sees exactly the outcomes that were kept. */
static void count_outcome(k_incidents_t *x, const k_event_t *ev) {
  if (ev->seq <= x->seq0 || strncmp(ev->type, "notification.", 13)) return;
  if (!strcmp(ev->type + 13, "sent")) x->n.sent++;
  else if (!strcmp(ev->type + 13, "failed")) x->n.failed++;
  else if (!strcmp(ev->type + 13, "suppressed")) x->n.suppressed++;
}

void k_incidents_event(k_incidents_t *x, const k_event_t *ev, int64_t now_ms) {
  keel_err_t e = {0};
  int rc, alert = !strcmp(ev->type, "alert.firing") || !strcmp(ev->type, "alert.resolved");
  int exe = !strcmp(ev->type, "execution.started") || !strcmp(ev->type, "execution.finished");
  count_outcome(x, ev);
  if (!alert && !exe) return;
  if ((rc = k_store_unit_begin(x->d.store, &e))) goto fail;
  rc = alert ? on_alert(x, ev, now_ms, &e) : on_execution(x, ev, now_ms, &e);
  if (k_store_unit_end(x->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  if (!rc) return;
fail:
  keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: %s %s: %s", ev->type, ev->subject ? ev->subject : "",
           e.msg);
}

static void on_event(void *ud, const k_event_t *ev) { k_incidents_event(ud, ev, keel_now_ms()); }

/* ---- escalation and sending ------------------------------------------------------------ */

static int ids_row(void *ud, const k_val_t *c, int n) {
  if (n >= 1) json_array_append_new(ud, json_string(txt(&c[0])));
  return 0;
}

static int min_row(void *ud, const k_val_t *c, int n) {
  if (n >= 1 && c[0].type == K_VAL_INT) *(int64_t *)ud = c[0].i;
  return 0;
}

static void escalations(k_incidents_t *x, int64_t now) {
  json_t *ids = json_array(), *id;
  keel_err_t e = {0};
  k_val_t a[] = {K_INT(now), K_INT(TICK_BATCH)};
  size_t i;
  if (!ids || sql(x,
                  "SELECT id FROM incidents WHERE esc_due_ms IS NOT NULL AND esc_due_ms <= ?"
                  " ORDER BY esc_due_ms LIMIT ?",
                  a, 2, ids_row, ids, &e)) {
    if (e.msg[0]) keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: escalations: %s", e.msg);
    json_decref(ids);
    return;
  }
  json_array_foreach(ids, i, id) {
    json_t *inc = NULL;
    int rc, stepped = 0;
    if ((rc = k_store_unit_begin(x->d.store, &e))) break;
    if (!(rc = load(x, json_string_value(id), &inc, &e)) &&
        !(rc = escalate(x, inc, "", now, &stepped, &e)) && !(rc = save(x, inc, now, &e)) && stepped)
      rc = emit_inc(x, inc, "incident.updated", NULL, "", now, &e);
    if (k_store_unit_end(x->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
    if (rc) keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: escalating %s: %s", json_string_value(id), e.msg);
    json_decref(inc);
  }
  json_decref(ids);
  x->esc_dirty = 0;
  x->next_esc_ms = INT64_MAX;
  if (sql(x, "SELECT MIN(esc_due_ms) FROM incidents WHERE esc_due_ms IS NOT NULL",
          NULL, 0, min_row, &x->next_esc_ms, &e))
    keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: escalations: %s", e.msg);
}

static int inflight_has(const k_incidents_t *x, const char *id) {
  for (size_t i = 0; i < x->ninflight; i++)
    if (!strcmp(x->inflight[i], id)) return 1;
  return 0;
}

static void inflight_del(k_incidents_t *x, const char *id) {
  for (size_t i = 0; i < x->ninflight; i++)
    if (!strcmp(x->inflight[i], id)) {
      memcpy(x->inflight[i], x->inflight[--x->ninflight], ID_LEN);
      return;
    }
}

/* 1 when id was queued in a generation that is not durable yet. */
static int fresh_has(const k_incidents_t *x, const char *id) {
  for (size_t i = 0; i < x->nfresh; i++)
    if (!strcmp(x->fresh[i].id, id)) return 1;
  return 0;
}

/* Drops the fresh entries whose generation is durable; 1 when some were. */
static int fresh_settle(k_incidents_t *x) {
  uint64_t durable = k_store_durable_gen(x->d.store);
  size_t w = 0, n = x->nfresh;
  for (size_t i = 0; i < n; i++)
    if (x->fresh[i].gen > durable) x->fresh[w++] = x->fresh[i];
  x->nfresh = w;
  return w != n;
}

typedef struct due {
  k_incidents_t *x;
  json_t *rows;
} due_t;

static int due_row(void *ud, const k_val_t *c, int n) {
  due_t *d = ud;
  if (n < 5 || inflight_has(d->x, txt(&c[0])) || fresh_has(d->x, txt(&c[0]))) return 0;
  if (d->x->ninflight >= MAX_INFLIGHT) return 1;
  json_array_append_new(d->rows, json_pack("{s:s,s:s,s:o,s:I,s:s}", "id", txt(&c[0]), "url",
                                           txt(&c[1]), "headers", parse_or(&c[2], json_object()),
                                           "timeout_ms", (json_int_t)c[3].i, "body", txt(&c[4])));
  snprintf(d->x->inflight[d->x->ninflight++], ID_LEN, "%s", txt(&c[0]));
  return 0;
}

json_t *k_incidents_due(k_incidents_t *x, int64_t now_ms) {
  due_t d = {x, json_array()};
  keel_err_t e = {0};
  k_val_t a[] = {K_INT(now_ms), K_INT(MAX_INFLIGHT * 2)};
  fresh_settle(x);
  if (!d.rows) return NULL;
  if (sql(x,
          "SELECT id, url, headers, timeout_ms, body FROM notification_outbox"
          " WHERE status = 'pending' AND next_ms <= ? ORDER BY next_ms LIMIT ?",
          a, 2, due_row, &d, &e) < 0)
    keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: reading the outbox: %s", e.msg);
  return d.rows;
}

typedef struct orow {
  int found;
  char inc[ID_LEN], transition[32], channel[80];
  int step, attempts;
  int64_t created;
} orow_t;

static int out_row(void *ud, const k_val_t *c, int n) {
  orow_t *r = ud;
  if (n < 6) return 0;
  r->found = 1;
  snprintf(r->inc, sizeof r->inc, "%s", txt(&c[0]));
  snprintf(r->transition, sizeof r->transition, "%s", txt(&c[1]));
  r->step = (int)c[2].i;
  snprintf(r->channel, sizeof r->channel, "%s", txt(&c[3]));
  r->attempts = (int)c[4].i;
  r->created = c[5].i;
  return 0;
}

/* The result of one attempt, inside the caller's unit. */
static int record(k_incidents_t *x, const char *id, long status, const char *error, int64_t now,
                  keel_err_t *e) {
  orow_t r;
  json_t *inc = NULL;
  int verdict = k_notify_verdict(status), rc;
  char why[320];
  k_val_t q[] = {K_TEXT(id)};

  memset(&r, 0, sizeof r);
  if ((rc = sql(x,
                "SELECT incident_id, transition, step, channel, attempts, created_ms"
                " FROM notification_outbox WHERE id = ? AND status = 'pending'",
                q, 1, out_row, &r, e)) ||
      !r.found)
    return rc;
  r.attempts++;
  snprintf(why, sizeof why, "%s", error ? error : "");
  if (verdict == 0) {
    int64_t next = now + k_notify_backoff_ms(r.attempts, randombytes_random());
    if (next - r.created <= K_NOTIFY_MAX_AGE_MS) {
      k_val_t v[] = {K_INT(r.attempts), K_INT(next), K_TEXT(why), K_TEXT(id)};
      if (next < x->next_scan_ms) x->next_scan_ms = next;
      return sql(x,
                 "UPDATE notification_outbox SET attempts = ?, next_ms = ?, last_error = ?"
                 " WHERE id = ?",
                 v, 4, NULL, NULL, e);
    }
    snprintf(why, sizeof why, "gave up after %d attempts in %d min: %.200s", r.attempts,
             K_NOTIFY_MAX_AGE_MS / 60000, error ? error : "");
    verdict = -1;
  }
  {
    k_val_t v[] = {K_TEXT(verdict > 0 ? "sent" : "failed"), K_INT(r.attempts), K_TEXT(why),
                   K_INT(now), K_TEXT(id)};
    if ((rc = sql(x,
                  "UPDATE notification_outbox SET status = ?, attempts = ?, last_error = ?,"
                  " done_ms = ? WHERE id = ?",
                  v, 5, NULL, NULL, e)) ||
        (rc = load(x, r.inc, &inc, e)))
      return rc;
  }
  if (verdict > 0) snprintf(why, sizeof why, "HTTP %ld after %d attempt%s", status, r.attempts, r.attempts > 1 ? "s" : "");
  rc = note(x, inc, verdict > 0 ? "notification.sent" : "notification.failed", id, r.transition,
            r.step, r.channel, why, "", now, e);
  if (!rc) rc = save(x, inc, now, e);
  json_decref(inc);
  return rc;
}

void k_incidents_result(k_incidents_t *x, const char *id, long status, const char *error,
                        int64_t now_ms) {
  keel_err_t e = {0};
  int rc;
  x->n.attempts++; /* an answer or a transport failure: an attempt whatever is kept of it */
  inflight_del(x, id);
  if ((rc = k_store_unit_begin(x->d.store, &e))) goto fail;
  rc = record(x, id, status, error, now_ms, &e);
  if (k_store_unit_end(x->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  if (!rc) return;
fail:
  keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: notification %s: %s", id, e.msg);
}

static void dispatch(k_incidents_t *x, int64_t now) {
  json_t *rows = k_incidents_due(x, now), *r;
  size_t i;
  json_array_foreach(rows, i, r) {
    keel_err_t e = {0};
    if (k_send_submit(x->send, jstr(r, "id"), jstr(r, "url"), json_object_get(r, "headers"),
                      jstr(r, "body"), jint(r, "timeout_ms"), &e)) {
      inflight_del(x, jstr(r, "id"));
      keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: sending %s: %s", jstr(r, "id"), e.msg);
    }
  }
  json_decref(rows);
}

/* ---- Alertmanager re-sends -------------------------------------------------------------
 * Not notifications: no outbox row, no event, nothing to dedupe (an
 * Alertmanager merges the same alert told again).  A lost one is the next
 * one's job, so nothing here is durable or retried. */

typedef struct amctx {
  json_t *rows;
  char last[ID_LEN + 80];
} amctx_t;

/* One row per (incident, channel): the newest firing notification the
 * channel took (rows come newest first per pair). */
static int am_row(void *ud, const k_val_t *c, int n) {
  amctx_t *a = ud;
  char key[sizeof a->last];
  if (n < 5) return 0;
  snprintf(key, sizeof key, "%s/%s", txt(&c[0]), txt(&c[1]));
  if (!strcmp(key, a->last)) return 0;
  snprintf(a->last, sizeof a->last, "%s", key);
  if (json_array_size(a->rows) >= K_INCIDENT_AM_RESEND_MAX) return 1;
  return json_array_append_new(a->rows,
                               json_pack("{s:s,s:s,s:s,s:o,s:I}", "incident", txt(&c[0]), "channel",
                                         txt(&c[1]), "url", txt(&c[2]), "headers",
                                         parse_or(&c[3], json_object()), "timeout_ms",
                                         (json_int_t)c[4].i))
             ? KEEL_ENOMEM
             : 0;
}

/* The body of a re-send of incident id's firing alerts: one for all its
 * channels (the API's body names neither the channel nor a notification). */
static int am_body(k_incidents_t *x, const char *id, int64_t now, char **body, keel_err_t *e) {
  json_t *inc = NULL, *nalerts = NULL, *pub = NULL, *b = NULL;
  k_notice_t n;
  int rc;

  *body = NULL;
  if ((rc = load(x, id, &inc, e)) ||
      (rc = notice_of(x, inc, "firing", now, &n, &pub, &nalerts, e)))
    goto out;
  if (!(b = k_notify_body_amapi(&n)) || !(*body = keel_json_canonical(b))) rc = oom(e);
out:
  json_decref(b);
  json_decref(pub);
  json_decref(nalerts);
  json_decref(inc);
  return rc;
}

static void am_resend(k_incidents_t *x, int64_t now) {
  amctx_t a = {json_array(), ""};
  keel_err_t e = {0};
  json_t *r;
  const char *inc = NULL;
  char *body = NULL, id[ID_LEN];
  size_t i;
  int brc = 0;
  if (!a.rows) return;
  if (sql(x,
          "SELECT o.incident_id, o.channel, o.url, o.headers, o.timeout_ms"
          " FROM incidents i JOIN notification_outbox o ON o.incident_id = i.id"
          " WHERE i.state <> 'resolved' AND o.type = 'alertmanager' AND o.status = 'sent'"
          " AND o.transition <> 'resolved'"
          " ORDER BY o.incident_id, o.channel, o.created_ms DESC",
          NULL, 0, am_row, &a, &e) < 0)
    keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: reading what to re-send: %s", e.msg);
  json_array_foreach(a.rows, i, r) {
    /* rows come by incident: its body is built once (e keeps why not) */
    if (!inc || strcmp(inc, jstr(r, "incident"))) {
      inc = jstr(r, "incident");
      free(body);
      brc = am_body(x, inc, now, &body, &e);
    }
    keel_random_id(id, sizeof id, "rsd_");
    if (brc || k_send_submit(x->send, id, jstr(r, "url"), json_object_get(r, "headers"), body,
                             jint(r, "timeout_ms"), &e)) {
      x->n.resend_failures++;
      keel_log(x->d.log, KEEL_LOG_ERROR, "incidents: re-sending %s to %s: %s", inc,
               jstr(r, "channel"), e.msg);
    }
  }
  free(body);
  json_decref(a.rows);
}

int64_t k_incidents_tick(k_incidents_t *x, int64_t now_ms) {
  int64_t wait;
  /* a look when a step is due, an incident changed, or a second passed
   * (the earliest due step we know of may have been rolled back) */
  if (x->esc_dirty || now_ms >= x->next_esc_ms || now_ms - x->last_esc_ms >= 1000 ||
      now_ms < x->last_esc_ms) {
    x->last_esc_ms = now_ms;
    escalations(x, now_ms);
  }
  if (x->send && (fresh_settle(x) || now_ms >= x->next_scan_ms)) {
    x->next_scan_ms = now_ms + SCAN_EVERY_MS;
    dispatch(x, now_ms);
  }
  /* the first round one delay after start: what an earlier keeld told
   * the Alertmanager is still valid for three more */
  if (x->send && now_ms >= x->next_resend_ms) {
    if (x->next_resend_ms) am_resend(x, now_ms);
    x->next_resend_ms = now_ms + am_resend_ms(x);
  }
  /* fresh rows go out as soon as their batch is durable (the sync wakes
   * the loop); otherwise the next retry or the periodic scan */
  wait = x->next_scan_ms - now_ms;
  if (x->send && x->next_resend_ms - now_ms < wait) wait = x->next_resend_ms - now_ms;
  return wait < 0 ? 0 : wait > SCAN_EVERY_MS ? SCAN_EVERY_MS : wait;
}

int k_incidents_fd(const k_incidents_t *x) { return x->send ? k_send_fd(x->send) : -1; }

typedef struct pollctx {
  k_incidents_t *x;
  int64_t now;
} pollctx_t;

static void on_result(void *ud, const k_send_result_t *r) {
  pollctx_t *p = ud;
  if (!strncmp(r->id, "rsd_", 4)) {
    /* a re-send: counted, never retried (the next round tells it again) */
    p->x->n.resends++;
    if (r->status < 200 || r->status >= 300) {
      p->x->n.resend_failures++;
      if (r->status)
        keel_log(p->x->d.log, KEEL_LOG_WARN, "Alertmanager re-send %s: HTTP %ld", r->id, r->status);
      else
        keel_log(p->x->d.log, KEEL_LOG_WARN, "Alertmanager re-send %s: %s", r->id, r->error);
    }
    return;
  }
  if (r->status < 200 || r->status >= 300)
    keel_log(p->x->d.log, KEEL_LOG_WARN, "notification %s: %s", r->id, r->error);
  k_incidents_result(p->x, r->id, r->status, r->error, p->now);
}

void k_incidents_poll(k_incidents_t *x, int64_t now_ms) {
  pollctx_t p = {x, now_ms};
  if (x->send) k_send_poll(x->send, on_result, &p);
}

/* ---- open / close ---------------------------------------------------------------------- */

int k_incidents_open(const k_incidents_deps_t *d, k_incidents_t **out, keel_err_t *e) {
  k_incidents_t *x = calloc(1, sizeof *x);
  int rc = 0;
  *out = NULL;
  if (!x || !(x->inflight = calloc(MAX_INFLIGHT, ID_LEN))) {
    free(x);
    return oom(e);
  }
  x->d = *d;
  {
    k_events_stats_t es;
    k_events_stats(d->events, &es);
    x->seq0 = es.last_seq;
  }
  if ((d->sender && (rc = k_send_new(&x->send, e))) ||
      (rc = k_events_subscribe(d->events, on_event, x, e))) {
    k_incidents_close(x);
    return rc;
  }
  *out = x;
  return 0;
}

void k_incidents_close(k_incidents_t *x) {
  if (!x) return;
  k_send_free(x->send);
  free(x->fresh);
  free(x->inflight);
  free(x);
}

/* ---- the API's side -------------------------------------------------------------------- */

static int state_count_row(void *ud, const k_val_t *c, int n) {
  k_incident_stats_t *o = ud;
  if (n < 2 || c[1].type != K_VAL_INT) return 0;
  if (!strcmp(txt(&c[0]), "open")) o->open = c[1].i;
  else if (!strcmp(txt(&c[0]), "acked")) o->acked = c[1].i;
  return 0;
}

int k_incidents_stats(k_incidents_t *x, k_incident_stats_t *out, keel_err_t *e) {
  int rc;
  *out = x->n; /* open, acked and outbox stay 0 there */
  /* both walk a partial index: live incidents, pending rows */
  if ((rc = sql(x, "SELECT state, COUNT(*) FROM incidents WHERE state <> 'resolved' GROUP BY state",
                NULL, 0, state_count_row, out, e)))
    goto out;
  rc = sql(x, "SELECT COUNT(*) FROM notification_outbox WHERE status = 'pending'", NULL, 0, min_row,
           &out->outbox, e);
out:
  return rc;
}

typedef struct rows {
  json_t *items;
  int limit, n;
  char last[96];
} rows_t;

static int timeline_row(void *ud, const k_val_t *c, int n) {
  if (n < 6) return 0;
  json_array_append_new(ud, json_pack("{s:I,s:o,s:s,s:s,s:s,s:o}", "seq", (json_int_t)c[0].i,
                                      "time", time_or_null(&c[1]), "kind", txt(&c[2]), "actor",
                                      txt(&c[3]), "text", txt(&c[4]), "data",
                                      parse_or(&c[5], json_null())));
  return 0;
}

static int ntf_row(void *ud, const k_val_t *c, int n) {
  if (n < 12) return 0;
  json_array_append_new(
      ud, json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:I,s:s,s:o,s:o,s:o}", "id", txt(&c[0]),
                    "transition", txt(&c[1]), "step", (json_int_t)c[2].i, "channel", txt(&c[3]),
                    "type", txt(&c[4]), "status", txt(&c[5]), "last_error", txt(&c[6]), "attempts",
                    (json_int_t)c[7].i, "window", txt(&c[8]), "created_at", time_or_null(&c[9]),
                    "done_at", time_or_null(&c[10]), "next_attempt_at",
                    !strcmp(txt(&c[5]), "pending") ? time_or_null(&c[11]) : json_null()));
  return 0;
}

int k_incident_path_of(k_incidents_t *x, const char *id, char *out, size_t n, keel_err_t *e) {
  json_t *inc = NULL;
  int rc = load(x, id, &inc, e);
  if (!rc) k_incident_path(inc, out, n);
  json_decref(inc);
  return rc;
}

int k_incident_get(k_incidents_t *x, const char *id, json_t **out, keel_err_t *e) {
  json_t *inc = NULL, *alerts = NULL, *tl = json_array(), *ntf = json_array();
  k_val_t a[] = {K_TEXT(id)};
  int rc;

  *out = NULL;
  if (!tl || !ntf) {
    rc = oom(e);
    goto out;
  }
  if ((rc = load(x, id, &inc, e)) || (rc = load_alerts(x, id, &alerts, e)) ||
      (rc = sql(x,
                "SELECT seq, time_ms, kind, actor, text, data FROM incident_timeline"
                " WHERE incident_id = ? ORDER BY seq",
                a, 1, timeline_row, tl, e)) ||
      (rc = sql(x,
                "SELECT id, transition, step, channel, type, status, last_error,"
                " attempts, maint_window, created_ms, done_ms, next_ms"
                " FROM notification_outbox WHERE incident_id = ? ORDER BY created_ms, id",
                a, 1, ntf_row, ntf, e)))
    goto out;
  *out = public_of(inc);
  json_object_set(*out, "alerts", alerts);
  json_object_set(*out, "timeline", tl);
  json_object_set(*out, "notifications", ntf);
out:
  json_decref(inc);
  json_decref(alerts);
  json_decref(tl);
  json_decref(ntf);
  return rc;
}

static int list_row(void *ud, const k_val_t *c, int n) {
  rows_t *l = ud;
  json_t *inc, *pub;
  if (n < INC_NCOLS) return 0;
  if (l->n == l->limit) return 1;
  inc = inc_row(c);
  pub = inc ? public_of(inc) : NULL;
  json_decref(inc);
  if (!pub) return KEEL_ENOMEM;
  json_object_set_new(pub, "alert_count", json_integer(c[19].i));
  json_object_set_new(pub, "firing", json_integer(c[20].i));
  json_array_append_new(l->items, pub);
  snprintf(l->last, sizeof l->last, "%lld.%s", (long long)c[8].i, txt(&c[0]));
  l->n++;
  return 0;
}

int k_incident_list(k_incidents_t *x, const char *state, const char *team, const char *cursor,
                    int limit, json_t **items, char **next, keel_err_t *e) {
  rows_t l = {json_array(), limit, 0, ""};
  int64_t ms;
  const char *cid;
  int rc;

  *items = NULL;
  *next = NULL;
  if (!l.items) return oom(e);
  if ((rc = k_store_time_cursor(cursor, &ms, &cid, e))) goto fail;
  {
    k_val_t a[] = {K_INT(ms), K_INT(ms), K_TEXT(cid), K_TEXT(state ? state : ""),
                   K_TEXT(state ? state : ""), K_TEXT(team ? team : ""), K_TEXT(team ? team : ""),
                   K_INT(limit + 1)};
    rc = sql(x,
             "SELECT " INC_COLS " FROM incidents i"
             " WHERE (opened_ms < ? OR (opened_ms = ? AND id < ?))"
             " AND (? = '' OR state = ?) AND (? = '' OR team = ?)"
             " ORDER BY opened_ms DESC, id DESC LIMIT ?",
             a, 8, list_row, &l, e);
  }
  if (rc == KEEL_ENOMEM) rc = oom(e);
  if (rc < 0) goto fail;
  if (rc == 1 && !(*next = strdup(l.last))) {
    rc = oom(e);
    goto fail;
  }
  *items = l.items;
  return 0;
fail:
  json_decref(l.items);
  return rc;
}

int k_incident_act(k_incidents_t *x, const char *id, k_incident_act_t act, const char *by,
                   const char *text, int64_t now_ms, json_t **out, keel_err_t *e) {
  json_t *inc = NULL, *alerts = NULL;
  const char *state;
  int rc;

  *out = NULL;
  if ((rc = load(x, id, &inc, e)) || (rc = load_alerts(x, id, &alerts, e))) goto out;
  state = jstr(inc, "state");
  if (act != K_INCIDENT_COMMENT && !strcmp(state, "resolved")) {
    rc = keel_err_set(e, KEEL_ECONFLICT, "incident %s is resolved already", id);
    goto out;
  }
  if (act == K_INCIDENT_ACK && !strcmp(state, "acked")) {
    rc = keel_err_set(e, KEEL_ECONFLICT, "incident %s is acked already (by %s)", id,
                      jstr(inc, "acked_by"));
    goto out;
  }
  switch (act) {
  case K_INCIDENT_ACK:
    json_object_set_new(inc, "state", json_string("acked"));
    json_object_set_new(inc, "_acked_ms", json_integer(now_ms));
    json_object_set_new(inc, "acked_at", keel_json_time(now_ms));
    json_object_set_new(inc, "acked_by", json_string(by));
    if (!(rc = timeline(x, inc, now_ms, "acked", by, text, NULL, e)) &&
        !(rc = save(x, inc, now_ms, e)))
      rc = emit_inc(x, inc, "incident.acked", by, "", now_ms, e);
    break;
  case K_INCIDENT_RESOLVE:
    rc = resolve(x, inc, by, text, "", now_ms, e);
    break;
  case K_INCIDENT_COMMENT:
    if (!(rc = timeline(x, inc, now_ms, "comment", by, text, NULL, e)) &&
        !(rc = save(x, inc, now_ms, e)))
      rc = emit_inc(x, inc, "incident.commented", by, "", now_ms, e);
    break;
  }
  if (!rc) {
    *out = public_of(inc);
    json_object_set(*out, "alerts", alerts);
  }
out:
  json_decref(inc);
  json_decref(alerts);
  return rc;
}
