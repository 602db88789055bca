/* notify.c — notification policies, routes, payloads, retries (notify.h). */
#include "incident/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "docwalk.h"
#include "event/labels.h"
#include "incident/idoc.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"

#define MAX_CHANNELS 64
#define MAX_ROUTES 64
#define MAX_STEPS 16
#define MAX_NOTIFY 16
#define MAX_HEADERS 32
#define HEADER_VALUE_MAX 1024
static const k_walk_range_t after_range = {0, 7 * 86400000LL, "0s", "7d"};
static const k_walk_range_t timeout_range = {1000, 60000, "1s", "60s"};

static const k_idoc_table_t table = {"notification_policies", "team", 0, "notification_policy"};

/* ---- the document ------------------------------------------------------------------ */

typedef struct v {
  k_walk_t w;
  json_t *channels; /* name -> true, as declared */
} v_t;

static int header_name_ok(const char *k, size_t n) {
  static const char *const ours[] = {"content-type", "content-length", "host",
                                     "transfer-encoding", "connection",
                                     "x-keel-notification-id", NULL};
  if (n < 1 || n > 64) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = k[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      return 0;
  }
  for (const char *const *o = ours; *o; o++)
    if (strlen(*o) == n && !strncasecmp(*o, k, n)) return -1;
  return 1;
}

static int headers(v_t *V, const json_t *ch, json_t **out) {
  json_t *h = k_walk_member(ch, "headers"), *val;
  const char *key;
  k_walk_mark_t m;
  int rc = 0;

  *out = json_object();
  if (!*out) return k_walk_oom(&V->w);
  if (!h) return 0;
  m = k_walk_push_key(&V->w, "headers");
  if (!json_is_object(h)) rc = k_walk_err(&V->w, "expected a mapping of header names to values");
  else if (json_object_size(h) > MAX_HEADERS) rc = k_walk_err(&V->w, "more than %d headers", MAX_HEADERS);
  json_object_foreach(h, key, val) {
    size_t klen = json_object_iter_key_len(json_object_key_to_iter(key));
    k_walk_mark_t mk;
    json_t *dummy;
    int ok;
    if (rc) break;
    ok = header_name_ok(key, klen);
    mk = k_walk_push_keyn(&V->w, key, klen);
    if (ok == 0) rc = k_walk_err(&V->w, "invalid header name: expected [A-Za-z0-9-]{1,64}");
    else if (ok < 0) rc = k_walk_err(&V->w, "Keel sets this header itself");
    k_walk_pop(&V->w, mk);
    if (!rc) {
      /* k_idoc_text pushes the key itself */
      rc = k_idoc_text(&V->w, h, key, 1, HEADER_VALUE_MAX, &dummy);
      if (!rc && json_object_set(*out, key, dummy)) rc = k_walk_oom(&V->w);
    }
  }
  k_walk_pop(&V->w, m);
  return rc;
}

static int channel(v_t *V, const json_t *ch, json_t **out) {
  static const char *const keys[] = {"name", "type", "url", "format", "headers", "timeout",
                                     "timeout_ms", NULL};
  static const char *const types[] = {"webhook", "alertmanager", NULL};
  static const char *const formats[] = {"keel", "alertmanager-webhook", NULL};
  json_t *name, *url, *hdrs = NULL;
  const char *type, *format = NULL;
  int64_t tmo;
  char b[80];
  int rc;

  *out = NULL;
  if ((rc = k_walk_check_map(&V->w, ch, keys)) || (rc = k_walk_get_name(&V->w, ch, "name", 1, &name)))
    return rc;
  if (json_object_get(V->channels, json_string_value(name))) {
    k_walk_mark_t m = k_walk_push_key(&V->w, "name");
    rc = k_walk_err(&V->w, "channel '%s' is defined twice", k_walk_quote_json(b, name));
    k_walk_pop(&V->w, m);
    return rc;
  }
  if ((rc = k_idoc_enum(&V->w, ch, "type", types, "webhook", &type)) ||
      (rc = k_idoc_url(&V->w, ch, "url", &url)))
    return rc;
  if (!strcmp(type, "webhook")) {
    if ((rc = k_idoc_enum(&V->w, ch, "format", formats, "keel", &format))) return rc;
  } else if (k_walk_member(ch, "format")) {
    k_walk_mark_t m = k_walk_push_key(&V->w, "format");
    rc = k_walk_err(&V->w, "only a webhook has a format (an alertmanager channel posts "
                           "Alertmanager's API format)");
    k_walk_pop(&V->w, m);
    return rc;
  }
  if ((rc = headers(V, ch, &hdrs)) ||
      (rc = k_walk_get_duration(&V->w, ch, "timeout", &timeout_range, 0, 10000, &tmo)))
    goto out;
  if (json_object_set_new(V->channels, json_string_value(name), json_true()) ||
      !(*out = json_pack("{s:O,s:s,s:O,s:o,s:O,s:I}", "name", name, "type", type, "url", url,
                         "format", format ? json_string(format) : json_null(), "headers", hdrs,
                         "timeout_ms", (json_int_t)tmo)))
    rc = k_walk_oom(&V->w);
out:
  json_decref(hdrs);
  return rc;
}

static int step(v_t *V, const json_t *st, int64_t prev_after, json_t **out) {
  static const char *const keys[] = {"after", "after_ms", "notify", "if_not_acked", NULL};
  json_t *names = k_walk_member(st, "notify"), *it, *copy = NULL;
  int64_t after;
  k_walk_mark_t m;
  size_t i;
  int rc, ina;
  char b[80];

  *out = NULL;
  if ((rc = k_walk_check_map(&V->w, st, keys)) ||
      (rc = k_walk_get_duration(&V->w, st, "after", &after_range, 0, 0, &after)))
    return rc;
  if (after < prev_after) {
    m = k_walk_push_key(&V->w, k_walk_member(st, "after") ? "after" : "after_ms");
    rc = k_walk_err(&V->w, "steps run in order: this one is earlier than the step before it");
    k_walk_pop(&V->w, m);
    return rc;
  }
  if (!names) return k_walk_missing(&V->w, "notify");
  m = k_walk_push_key(&V->w, "notify");
  if (!json_is_array(names) || !json_array_size(names))
    rc = k_walk_err(&V->w, "expected a list of channel names");
  else if (json_array_size(names) > MAX_NOTIFY)
    rc = k_walk_err(&V->w, "more than %d channels", MAX_NOTIFY);
  else if (!(copy = json_array()))
    rc = k_walk_oom(&V->w);
  json_array_foreach(names, i, it) {
    k_walk_mark_t mi;
    if (rc) break;
    mi = k_walk_push_idx(&V->w, i);
    if (!json_is_string(it)) rc = k_walk_err(&V->w, "expected a channel name");
    else if (!json_object_get(V->channels, json_string_value(it)))
      rc = k_walk_err(&V->w, "no channel '%s' in this policy", k_walk_quote_json(b, it));
    if (!rc) rc = k_walk_add_unique(&V->w, copy, it); /* copy: names[0..i) */
    k_walk_pop(&V->w, mi);
  }
  k_walk_pop(&V->w, m);
  if (!rc && !(rc = k_idoc_bool(&V->w, st, "if_not_acked", after > 0, &ina)) &&
      !(*out = json_pack("{s:I,s:O,s:b}", "after_ms", (json_int_t)after, "notify", copy,
                         "if_not_acked", ina)))
    rc = k_walk_oom(&V->w);
  json_decref(copy);
  return rc;
}

static int route(v_t *V, const json_t *r, json_t **out) {
  static const char *const keys[] = {"match", "steps", NULL};
  json_t *match, *steps = k_walk_member(r, "steps"), *it, *copy = json_array();
  int64_t prev = 0;
  k_walk_mark_t m;
  size_t i;
  int rc;

  *out = NULL;
  if (!copy) return k_walk_oom(&V->w);
  if ((rc = k_walk_check_map(&V->w, r, keys)) ||
      (rc = k_idoc_selector(&V->w, r, "match", 0, 1, &match)))
    goto out;
  if (!steps) {
    rc = k_walk_missing(&V->w, "steps");
    goto out;
  }
  m = k_walk_push_key(&V->w, "steps");
  if (!json_is_array(steps) || !json_array_size(steps)) rc = k_walk_err(&V->w, "expected a list of steps");
  else if (json_array_size(steps) > MAX_STEPS) rc = k_walk_err(&V->w, "more than %d steps", MAX_STEPS);
  json_array_foreach(steps, i, it) {
    k_walk_mark_t mi;
    json_t *s = NULL;
    if (rc) break;
    mi = k_walk_push_idx(&V->w, i);
    rc = step(V, it, prev, &s);
    k_walk_pop(&V->w, mi);
    if (!rc) {
      prev = json_integer_value(json_object_get(s, "after_ms"));
      if (json_array_append_new(copy, s)) rc = k_walk_oom(&V->w);
    }
  }
  k_walk_pop(&V->w, m);
  if (!rc && !(*out = json_pack("{s:s,s:O}", "match", match ? json_string_value(match) : "",
                                "steps", copy)))
    rc = k_walk_oom(&V->w);
out:
  json_decref(copy);
  return rc;
}

typedef int (*item_fn)(v_t *V, const json_t *item, json_t **out);

/* A required non-empty list of at most max mappings, each through fn. */
static int list(v_t *V, const json_t *doc, const char *key, size_t max, item_fn fn, json_t **out) {
  json_t *a = k_walk_member(doc, key), *it;
  k_walk_mark_t m;
  size_t i;
  int rc = 0;

  if (!(*out = json_array())) return k_walk_oom(&V->w);
  if (!a) return k_walk_missing(&V->w, key);
  m = k_walk_push_key(&V->w, key);
  if (!json_is_array(a) || !json_array_size(a)) rc = k_walk_err(&V->w, "expected a non-empty list");
  else if (json_array_size(a) > max) rc = k_walk_err(&V->w, "more than %zu items", max);
  json_array_foreach(a, i, it) {
    k_walk_mark_t mi;
    json_t *o = NULL;
    if (rc) break;
    mi = k_walk_push_idx(&V->w, i);
    rc = fn(V, it, &o);
    k_walk_pop(&V->w, mi);
    if (!rc && json_array_append_new(*out, o)) rc = k_walk_oom(&V->w);
  }
  k_walk_pop(&V->w, m);
  return rc;
}

int k_notify_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                          json_t **out, keel_err_t *e) {
  static const char *const keys[] = {"kind", "team", "channels", "routes", NULL};
  v_t V;
  json_t *team = NULL, *chs = NULL, *routes = NULL;
  int rc;

  memset(&V, 0, sizeof V);
  V.w.name = name ? name : "<input>";
  V.w.pos = pos;
  V.w.e = e;
  *out = NULL;
  if (!(V.channels = json_object())) return k_walk_oom(&V.w);
  if ((rc = k_walk_head(&V.w, doc, keys, "NotificationPolicy")) ||
      (rc = k_walk_get_name(&V.w, doc, "team", 0, &team)) ||
      (rc = list(&V, doc, "channels", MAX_CHANNELS, channel, &chs)) ||
      (rc = list(&V, doc, "routes", MAX_ROUTES, route, &routes)))
    goto out;
  if (!(*out = json_pack("{s:s,s:O,s:O,s:O}", "kind", "NotificationPolicy", "team",
                         team ? team : json_null(), "channels", chs, "routes", routes)))
    rc = k_walk_oom(&V.w);
out:
  json_decref(chs);
  json_decref(routes);
  json_decref(V.channels);
  return rc;
}

int k_notify_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e) {
  return k_walk_load(name, buf, len, k_notify_doc_validate, out, e);
}

void k_notify_path(const json_t *doc, char *out, size_t n) {
  const char *t = keel_json_str(doc, "team");
  if (t) snprintf(out, n, "team/%s/notify", t);
  else snprintf(out, n, "notify");
}

int k_notify_apply(k_store_t *s, const json_t *doc, int dry_run, int64_t now_ms, json_t **report,
                   keel_buf_t *detail, keel_err_t *e) {
  const char *t = keel_json_str(doc, "team");
  return k_idoc_apply(s, &table, t ? t : "", NULL, t ? t : "global", doc, dry_run, now_ms, report,
                      detail, e);
}

/* ---- routes -------------------------------------------------------------------------- */

static const json_t *channel_named(const json_t *policy, const char *name) {
  const json_t *ch;
  size_t i;
  json_array_foreach(json_object_get(policy, "channels"), i, ch)
      if (!strcmp(keel_json_str(ch, "name"), name)) return ch;
  return NULL;
}

/* The snapshot of route i of policy (see k_notify_route). */
static json_t *snapshot(const json_t *policy, size_t ri, const json_t *r) {
  json_t *steps = json_array(), *st, *nm;
  const char *team = keel_json_str(policy, "team");
  size_t i, j;
  json_array_foreach(json_object_get(r, "steps"), i, st) {
    json_t *chs = json_array();
    json_array_foreach(json_object_get(st, "notify"), j, nm) {
      const json_t *ch = channel_named(policy, json_string_value(nm));
      if (ch) json_array_append(chs, (json_t *)ch);
    }
    json_array_append_new(steps, json_pack("{s:O,s:O,s:o}", "after_ms", json_object_get(st, "after_ms"),
                                           "if_not_acked", json_object_get(st, "if_not_acked"),
                                           "channels", chs));
  }
  return json_pack("{s:s,s:I,s:o}", "policy", team ? team : "", "route", (json_int_t)ri, "steps", steps);
}

static json_t *first_route(const json_t *policy, const json_t *labels) {
  const json_t *r;
  size_t i;
  json_array_foreach(json_object_get(policy, "routes"), i, r) {
    const char *match = keel_json_str(r, "match");
    keel_selector_t *sel = NULL;
    int hit;
    if (!match || keel_selector_parse(match, strlen(match), &sel, NULL)) continue;
    hit = k_event_labels_match(sel, labels);
    keel_selector_free(sel);
    if (hit) return snapshot(policy, i, r);
  }
  return NULL;
}

json_t *k_notify_route_of(const json_t *team_policy, const json_t *global_policy,
                          const json_t *labels) {
  json_t *r = team_policy ? first_route(team_policy, labels) : NULL;
  if (!r && global_policy) r = first_route(global_policy, labels);
  return r ? r : json_null();
}

static int one_spec(void *ud, const k_val_t *c, int n) {
  json_t **spec = ud;
  if (n >= 1 && c[0].type == K_VAL_TEXT) *spec = json_loads(c[0].s, 0, NULL);
  return 0;
}

int k_notify_route(k_store_t *s, const char *team, const json_t *labels, json_t **out,
                   keel_err_t *e) {
  json_t *tp = NULL, *gp = NULL;
  int rc = 0;
  *out = NULL;
  if (team && *team) {
    k_val_t a[] = {K_TEXT(team)};
    rc = k_store_exec(s, "SELECT spec FROM notification_policies WHERE team = ?", a, 1, one_spec,
                      &tp, e);
  }
  if (!rc)
    rc = k_store_exec(s, "SELECT spec FROM notification_policies WHERE team = ''", NULL, 0, one_spec,
                      &gp, e);
  if (!rc && !(*out = k_notify_route_of(tp, gp, labels))) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  json_decref(tp);
  json_decref(gp);
  return rc;
}

/* ---- payloads -------------------------------------------------------------------------- */

static void incident_url(const k_notice_t *n, char *out, size_t len) {
  const char *id = keel_json_str(n->incident, "id");
  if (n->external_url && *n->external_url)
    snprintf(out, len, "%s/v1/incidents/%s", n->external_url, id ? id : "");
  else
    out[0] = '\0';
}

json_t *k_notify_body_keel(const k_notice_t *n) {
  char url[512];
  incident_url(n, url, sizeof url);
  return json_pack("{s:s,s:s,s:s,s:s,s:i,s:O,s:O,s:I,s:s}", "version", "1", "notification_id",
                   n->id, "status", n->status, "channel", n->channel, "step", n->step, "incident",
                   n->incident, "alerts", n->alerts, "alerts_truncated", (json_int_t)n->truncated,
                   "url", url);
}

/* Members (string values) of every object of objs under key that all of
 * them share: Alertmanager's commonLabels / commonAnnotations. */
static json_t *common(const json_t *objs, const char *key) {
  json_t *first = json_object_get(json_array_get(objs, 0), key), *out = json_object(), *v;
  const char *k;
  size_t i;
  const json_t *o;
  if (!out) return NULL;
  json_object_foreach(first, k, v) {
    int all = json_is_string(v);
    json_array_foreach(objs, i, o) if (all && !json_equal(json_object_get(json_object_get(o, key), k), v)) all = 0;
    if (all) json_object_set(out, k, v);
  }
  return out;
}

/* `{k="v",...}` of obj's string members, sorted by key, escaped as
 * Alertmanager prints label sets. */
static void label_set(keel_buf_t *b, const json_t *obj) {
  const char *keys[64];
  size_t n = 0;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) if (json_is_string(v) && n < 64) keys[n++] = k;
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
      const char *t = keys[j];
      keys[j] = keys[j - 1];
      keys[j - 1] = t;
    }
  keel_buf_puts(b, "{");
  for (size_t i = 0; i < n; i++) {
    keel_buf_printf(b, "%s%s=", i ? "," : "", keys[i]);
    keel_buf_json_str(b, json_string_value(json_object_get(obj, keys[i])));
  }
  keel_buf_puts(b, "}");
}

json_t *k_notify_body_amwebhook(const k_notice_t *n) {
  json_t *alerts = json_array(), *a, *out = NULL, *scope = json_object();
  keel_buf_t gk;
  char url[512];
  const char *team = keel_json_str(n->incident, "team"), *app = keel_json_str(n->incident, "application");
  size_t i;

  keel_buf_init(&gk, 64 << 10);
  incident_url(n, url, sizeof url);
  if (!alerts || !scope) goto out;
  json_array_foreach(n->alerts, i, a) {
    const char *st = keel_json_str(a, "state"), *ends = keel_json_str(a, "ends_at");
    int firing = st && !strcmp(st, "firing");
    json_array_append_new(
        alerts, json_pack("{s:s,s:O,s:O,s:s,s:s,s:s,s:s}", "status", firing ? "firing" : "resolved",
                          "labels", json_object_get(a, "labels"), "annotations",
                          json_object_get(a, "annotations"), "startsAt",
                          keel_json_str(a, "starts_at") ? keel_json_str(a, "starts_at") : "",
                          /* Alertmanager's zero time for an alert still firing */
                          "endsAt", firing || !ends ? "0001-01-01T00:00:00Z" : ends,
                          "generatorURL", url, "fingerprint",
                          keel_json_str(a, "fingerprint") ? keel_json_str(a, "fingerprint") : ""));
  }
  /* groupKey as Alertmanager forms it: route key, ':', group labels */
  if (team && *team) json_object_set_new(scope, "team", json_string(team));
  if (app && *app) json_object_set_new(scope, "application", json_string(app));
  keel_buf_puts(&gk, "{}/");
  label_set(&gk, scope);
  keel_buf_puts(&gk, ":");
  label_set(&gk, json_object_get(n->incident, "group"));
  out = json_pack("{s:s,s:s,s:I,s:s,s:s,s:O,s:o,s:o,s:s,s:O}", "version", "4", "groupKey",
                  gk.data ? gk.data : "", "truncatedAlerts", (json_int_t)n->truncated, "status",
                  n->status, "receiver",
                  n->channel, "groupLabels", json_object_get(n->incident, "group"), "commonLabels",
                  common(n->alerts, "labels"), "commonAnnotations", common(n->alerts, "annotations"),
                  "externalURL", n->external_url ? n->external_url : "", "alerts", alerts);
out:
  keel_buf_free(&gk);
  json_decref(alerts);
  json_decref(scope);
  return out;
}

json_t *k_notify_body_amapi(const k_notice_t *n) {
  json_t *out = json_array(), *a;
  char url[512], ends[KEEL_TIME_STRLEN], now[KEEL_TIME_STRLEN];
  size_t i;
  incident_url(n, url, sizeof url);
  keel_time_format(ends, n->now_ms + (n->am_valid_ms > 0 ? n->am_valid_ms
                                                        : 4LL * K_NOTIFY_AM_RESEND_MS));
  keel_time_format(now, n->now_ms);
  json_array_foreach(n->alerts, i, a) {
    const char *st = keel_json_str(a, "state"), *resolved = keel_json_str(a, "ends_at");
    json_t *ann = json_deep_copy(json_object_get(a, "annotations"));
    if (!json_is_object(ann)) {
      json_decref(ann);
      ann = json_object();
    }
    /* where to look in Keel; annotations do not make an alert's identity */
    json_object_set_new(ann, "keel_incident", json_string(keel_json_str(n->incident, "id")));
    json_array_append_new(
        out, json_pack("{s:O,s:o,s:s,s:s,s:s}", "labels", json_object_get(a, "labels"),
                       "annotations", ann, "startsAt",
                       keel_json_str(a, "starts_at") ? keel_json_str(a, "starts_at") : "", "endsAt",
                       /* a resolved incident ends its alerts in Alertmanager, even
                          one resolved by hand while its alert still fired */
                       !strcmp(n->status, "resolved") ? resolved ? resolved : now
                       : st && !strcmp(st, "firing") ? ends
                       : resolved                    ? resolved
                                                     : ends,
                       "generatorURL", url));
  }
  return out;
}

json_t *k_notify_body(const json_t *ch, const k_notice_t *n) {
  const char *type = keel_json_str(ch, "type"), *format = keel_json_str(ch, "format");
  if (type && !strcmp(type, "alertmanager")) return k_notify_body_amapi(n);
  if (format && !strcmp(format, "alertmanager-webhook")) return k_notify_body_amwebhook(n);
  return k_notify_body_keel(n);
}

void k_notify_target_url(const json_t *ch, char *out, size_t n) {
  const char *url = keel_json_str(ch, "url"), *type = keel_json_str(ch, "type");
  size_t len = url ? strlen(url) : 0;
  if (type && !strcmp(type, "alertmanager")) {
    while (len && url[len - 1] == '/') len--;
    snprintf(out, n, "%.*s/api/v2/alerts", (int)len, url);
  } else {
    snprintf(out, n, "%s", url ? url : "");
  }
}

/* ---- retries ---------------------------------------------------------------------------- */

int64_t k_notify_backoff_ms(int attempts, uint32_t rnd) {
  int64_t base = K_NOTIFY_BACKOFF_MIN_MS;
  for (int i = 1; i < attempts && base < K_NOTIFY_BACKOFF_MAX_MS; i++) base *= 2;
  if (base > K_NOTIFY_BACKOFF_MAX_MS) base = K_NOTIFY_BACKOFF_MAX_MS;
  return base / 2 + (int64_t)(rnd % (uint32_t)(base / 2 + 1));
}

int k_notify_verdict(long http_status) {
  if (http_status >= 200 && http_status < 300) return 1;
  if (http_status == 408 || http_status == 429) return 0;
  if (http_status >= 300 && http_status < 500) return -1;
  return 0;
}
