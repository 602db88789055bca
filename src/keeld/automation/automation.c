/* automation.c — the automation engine (automation.h): rules in memory,
 * the guards, and the rows that record what every rule did. */
#include "automation/automation.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "automation/cond.h"
#include "automation/doc.h"
#include "event/labels.h"
#include "keel/crypto.h"
#include "keel/grow.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/template.h"
#include "keel/time.h"

#define HOUR_MS 3600000LL
#define STATE_KEEP_MS 86400000LL /* the longest cooldown: older runs matter to no guard */
#define ENDED_KEEP_MS 600000LL   /* an ended execution stays known to the loop guard this long */

/* An execution started by a rule: its target agents, while it runs (and
 * for a while after, for late agent events). */
typedef struct exe {
  struct exe *next;
  char id[24];
  json_t *agents; /* array of agent ids */
  int64_t start_ms, end_ms; /* end 0: running */
} exe_t;

/* What a rule did lately, by rule name (kept across reloads of the rules:
 * a re-applied rule keeps its cooldowns). */
typedef struct rstate {
  struct rstate *next;
  char rule[64];
  json_t *last;     /* target -> ms of its last run (an integer) */
  int64_t *runs;    /* start times within the last hour, ascending */
  size_t nruns, cap;
  exe_t *exes;
} rstate_t;

typedef struct rule {
  json_t *doc;      /* normalized (automation/doc.h) */
  char name[64], user[64], path[192];
  char type[72];
  int prefix;       /* type is "x.*": match "x." + anything */
  keel_selector_t *sel;
  k_cond_t **conds;
  size_t nconds;
  rstate_t *st;
} rule_t;

struct k_auto {
  k_auto_deps_t d;
  rule_t *rules;    /* by name */
  size_t nrules;
  int on;           /* the kill switch: 1 = automation runs */
  char sw_reason[512], sw_by[64];
  int64_t sw_at_ms;
  rstate_t *states;
  int dirty;        /* rules changed in the store: k_auto_refresh reads them again */
  json_t *queue;    /* events to judge: [{"view", "seq", "time_ms", "path"}], oldest first */
  size_t qhead;     /* queue[0..qhead) are done */
  int64_t open_seq; /* the last event stored at open: only those up to it can be delivered again */
  uint64_t runs, dry_runs, skips; /* outcomes kept since open (k_auto_note) */
};

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

/* ---- memory ----------------------------------------------------------------------- */

static void rule_clear(rule_t *r) {
  json_decref(r->doc);
  keel_selector_free(r->sel);
  for (size_t i = 0; i < r->nconds; i++) k_cond_free(r->conds[i]);
  free(r->conds);
}

static void rules_drop(k_auto_t *a) {
  for (size_t i = 0; i < a->nrules; i++) rule_clear(&a->rules[i]);
  free(a->rules);
  a->rules = NULL;
  a->nrules = 0;
}

static void exes_free(exe_t *x) {
  while (x) {
    exe_t *n = x->next;
    json_decref(x->agents);
    free(x);
    x = n;
  }
}

static void states_drop(k_auto_t *a) {
  while (a->states) {
    rstate_t *n = a->states->next;
    json_decref(a->states->last);
    free(a->states->runs);
    exes_free(a->states->exes);
    free(a->states);
    a->states = n;
  }
}

static rstate_t *state_of(k_auto_t *a, const char *rule) {
  rstate_t *s;
  for (s = a->states; s; s = s->next)
    if (!strcmp(s->rule, rule)) return s;
  if (!(s = calloc(1, sizeof *s)) || !(s->last = json_object())) {
    free(s);
    return NULL;
  }
  snprintf(s->rule, sizeof s->rule, "%s", rule);
  s->next = a->states;
  a->states = s;
  return s;
}

/* Drops run times older than an hour. */
static void runs_trim(rstate_t *s, int64_t now_ms) {
  size_t k = 0;
  while (k < s->nruns && s->runs[k] <= now_ms - HOUR_MS) k++;
  if (!k) return;
  memmove(s->runs, s->runs + k, (s->nruns - k) * sizeof *s->runs);
  s->nruns -= k;
}

static int runs_add(rstate_t *s, int64_t t) {
  size_t i;
  int64_t *nr = keel_grow(s->runs, &s->cap, s->nruns, sizeof *nr, 16);
  if (!nr) return KEEL_ENOMEM;
  s->runs = nr;
  for (i = s->nruns; i > 0 && s->runs[i - 1] > t; i--) s->runs[i] = s->runs[i - 1];
  s->runs[i] = t;
  s->nruns++;
  return 0;
}

/* Remembers a run of target at t (the latest wins). */
static void last_set(rstate_t *s, const char *target, int64_t t) {
  json_t *cur = json_object_get(s->last, target);
  if (!cur || json_integer_value(cur) < t) json_object_set_new(s->last, target, json_integer(t));
}

/* Forgets targets whose cooldown is over (only when the map grew). */
static void last_trim(rstate_t *s, int64_t now_ms, int64_t cooldown_ms) {
  const char *k;
  json_t *v;
  void *tmp;
  if (json_object_size(s->last) < 1024) return;
  json_object_foreach_safe(s->last, tmp, k, v)
      if (json_integer_value(v) <= now_ms - cooldown_ms) json_object_del(s->last, k);
}

static exe_t *exe_add(rstate_t *s, const char *id, const json_t *agents, int64_t start_ms,
                      int64_t end_ms) {
  exe_t *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  snprintf(x->id, sizeof x->id, "%s", id);
  x->agents = agents ? json_deep_copy(agents) : json_array();
  x->start_ms = start_ms;
  x->end_ms = end_ms;
  x->next = s->exes;
  s->exes = x;
  return x;
}

/* ---- loading ---------------------------------------------------------------------- */

/* One stored rule into memory (parsing its selector and conditions once). */
static int rule_load(k_auto_t *a, rule_t *r, const char *user, const char *spec, keel_err_t *e) {
  const json_t *on, *c;
  const char *match;
  size_t i, n;
  memset(r, 0, sizeof *r);
  if (!(r->doc = json_loads(spec, 0, NULL)))
    return keel_err_set(e, KEEL_EIO, "automation: a stored rule does not parse");
  snprintf(r->name, sizeof r->name, "%s", keel_json_str(r->doc, "name"));
  snprintf(r->user, sizeof r->user, "%s", user);
  k_auto_rule_path(r->doc, r->path, sizeof r->path);
  on = json_object_get(r->doc, "on");
  snprintf(r->type, sizeof r->type, "%s",
           keel_json_str(on, "type") ? keel_json_str(on, "type") : "");
  n = strlen(r->type);
  if (n >= 2 && !strcmp(r->type + n - 2, ".*")) {
    r->prefix = 1;
    r->type[n - 1] = '\0'; /* keep the dot */
  }
  match = keel_json_str(on, "match") ? keel_json_str(on, "match") : "";
  if (keel_selector_parse(match, strlen(match), &r->sel, e)) return KEEL_EIO;
  r->conds = calloc(json_array_size(json_object_get(on, "conditions")) + 1, sizeof *r->conds);
  if (!r->conds) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  json_array_foreach(json_object_get(on, "conditions"), i, c) {
    if (k_cond_parse(json_string_value(c), json_string_length(c), &r->conds[r->nconds], e))
      return KEEL_EIO;
    r->nconds++;
  }
  r->st = state_of(a, r->name);
  return r->st ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

typedef struct rload {
  k_auto_t *a;
  size_t cap;
  keel_err_t *e;
} rload_t;

static int rule_row(void *ud, const k_val_t *c, int n) {
  rload_t *l = ud;
  k_auto_t *a = l->a;
  rule_t *nr;
  if (n < 2) return 0;
  if (!(nr = keel_grow(a->rules, &l->cap, a->nrules, sizeof *nr, 16)))
    return keel_err_set(l->e, KEEL_ENOMEM, "out of memory");
  a->rules = nr;
  a->nrules++;
  return rule_load(a, &a->rules[a->nrules - 1], txt(&c[0]), txt(&c[1]), l->e);
}

static int switch_row(void *ud, const k_val_t *c, int n) {
  k_auto_t *a = ud;
  if (n < 4) return 0;
  a->on = c[0].i != 0;
  snprintf(a->sw_reason, sizeof a->sw_reason, "%s", txt(&c[1]));
  snprintf(a->sw_by, sizeof a->sw_by, "%s", txt(&c[2]));
  a->sw_at_ms = c[3].i;
  return 0;
}

typedef struct sload {
  k_auto_t *a;
  int64_t now_ms;
} sload_t;

/* A recent run: cooldown, the hourly count and (started ones) the loop guard. */
static int run_row(void *ud, const k_val_t *c, int n) {
  sload_t *l = ud;
  rstate_t *s;
  int64_t at;
  if (n < 6) return 0;
  if (!(s = state_of(l->a, txt(&c[0])))) return KEEL_ENOMEM;
  at = c[1].i;
  last_set(s, txt(&c[2]), at);
  if (at > l->now_ms - HOUR_MS && runs_add(s, at)) return KEEL_ENOMEM;
  if (c[3].type == K_VAL_TEXT) {
    int64_t end = c[5].type == K_VAL_INT ? c[5].i : 0;
    json_t *agents = json_loads(txt(&c[4]), 0, NULL);
    exe_t *x = NULL;
    if (!end || end > l->now_ms - ENDED_KEEP_MS) x = exe_add(s, c[3].s, agents, at, end);
    json_decref(agents);
    if ((!end || end > l->now_ms - ENDED_KEEP_MS) && !x) return KEEL_ENOMEM;
  }
  return 0;
}

/* The stored rules into a->rules (dropped before). */
static int rules_load(k_auto_t *a, keel_err_t *e) {
  rload_t rl = {a, 0, e};
  return k_store_exec(a->d.store, "SELECT user, spec FROM automation_rules ORDER BY name", NULL, 0,
                      rule_row, &rl, e);
}

static int load(k_auto_t *a, int64_t now_ms, keel_err_t *e) {
  sload_t sl = {a, now_ms};
  int rc;
  a->on = 1;
  a->sw_reason[0] = a->sw_by[0] = '\0';
  a->sw_at_ms = 0;
  if ((rc = rules_load(a, e))) return rc;
  if ((rc = k_store_exec(a->d.store,
                         "SELECT enabled, reason, by_user, at_ms FROM automation_switch WHERE id = 1",
                         NULL, 0, switch_row, a, e)))
    return rc;
  {
    k_val_t args[] = {K_INT(now_ms - STATE_KEEP_MS)};
    rc = k_store_exec(a->d.store,
                      "SELECT rule, at_ms, target, execution_id, agents, ended_ms FROM automation_runs"
                      " WHERE at_ms > ? AND outcome IN ('triggered', 'dry_run') ORDER BY at_ms",
                      args, 1, run_row, &sl, e);
  }
  return rc == KEEL_ENOMEM ? keel_err_set(e, rc, "out of memory") : rc;
}

int k_auto_open(const k_auto_deps_t *d, int64_t now_ms, k_auto_t **out, keel_err_t *e) {
  k_auto_t *a = calloc(1, sizeof *a);
  int rc;
  *out = NULL;
  if (!a) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  a->d = *d;
  {
    k_events_stats_t st;
    k_events_stats(d->events, &st);
    a->open_seq = st.last_seq;
  }
  if ((rc = load(a, now_ms, e))) {
    k_auto_close(a);
    return rc;
  }
  *out = a;
  return 0;
}

void k_auto_close(k_auto_t *a) {
  if (!a) return;
  rules_drop(a);
  states_drop(a);
  json_decref(a->queue);
  free(a);
}

int k_auto_reload(k_auto_t *a, int64_t now_ms, keel_err_t *e) {
  rules_drop(a);
  states_drop(a);
  return load(a, now_ms, e);
}

int k_auto_refresh(k_auto_t *a, keel_err_t *e) {
  if (!a->dirty) return 0;
  a->dirty = 0;
  rules_drop(a);
  return rules_load(a, e);
}

/* ---- rules -------------------------------------------------------------------------- */

typedef struct cur {
  int found;
  char user[64];
  json_t *spec;
} cur_t;

static int cur_row(void *ud, const k_val_t *c, int n) {
  cur_t *r = ud;
  if (n < 2) return 0;
  r->found = 1;
  snprintf(r->user, sizeof r->user, "%s", txt(&c[0]));
  r->spec = json_loads(txt(&c[1]), 0, NULL);
  return 0;
}

int k_auto_apply(k_auto_t *a, const json_t *rule, const char *user, int dry_run, int64_t now_ms,
                 json_t **report, keel_buf_t *detail, keel_err_t *e) {
  const char *name = keel_json_str(rule, "name"), *app = keel_json_str(rule, "application");
  const char *op = NULL;
  cur_t cur = {0, "", NULL};
  json_t *fields = NULL;
  char *text = keel_json_canonical(rule), summary[64];
  int rc;

  *report = NULL;
  if (!text) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  {
    k_val_t args[] = {K_TEXT(name)};
    if ((rc = k_store_exec(a->d.store, "SELECT user, spec FROM automation_rules WHERE name = ?",
                           args, 1, cur_row, &cur, e)))
      goto out;
  }
  if (!cur.found) {
    op = "create";
    fields = json_array();
  } else if (!json_equal(cur.spec, rule) || strcmp(cur.user, user)) {
    op = "update";
    fields = keel_json_changed_keys(cur.spec, rule);
    if (fields && strcmp(cur.user, user)) json_array_append_new(fields, json_string("user"));
  }
  if (op && !fields) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if (op && !dry_run) {
    k_val_t args[] = {K_TEXT(app ? "application" : "team"),
                      K_TEXT(app ? app : keel_json_str(rule, "team")),
                      K_TEXT(user),
                      K_TEXT(text),
                      K_INT(now_ms),
                      K_TEXT(name)};
    a->dirty = 1;
    rc = k_store_exec(a->d.store,
                      cur.found ? "UPDATE automation_rules SET owner_kind = ?1, owner = ?2, user = ?3,"
                                  " spec = ?4, updated_ms = ?5, version = version + 1 WHERE name = ?6"
                                : "INSERT INTO automation_rules(owner_kind, owner, user, spec,"
                                  " created_ms, updated_ms, version, name)"
                                  " VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, ?6)",
                      args, 6, NULL, NULL, e);
    if (rc) goto out;
  }
  keel_buf_reset(detail);
  keel_buf_printf(detail, "%s%s automation_rule/%s (runs as %s)", dry_run ? "dry run: " : "",
                  op ? op : "no changes:", name, user);
  snprintf(summary, sizeof summary, "%s%s", dry_run ? "dry run: " : "",
           !op ? "no changes" : !strcmp(op, "create") ? "1 created, 0 updated, 0 deleted"
                                                      : "0 created, 1 updated, 0 deleted");
  *report = json_pack("{s:b,s:b,s:b,s:s,s:[],s:[]}", "changed", op != NULL, "dry_run", dry_run,
                      "prune", 0, "summary", summary, "changes", "removed");
  if (!*report) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  else if (op)
    json_array_append_new(json_object_get(*report, "changes"),
                          json_pack("{s:s,s:s,s:s,s:O}", "op", op, "kind", "automation_rule",
                                    "name", name, "fields", fields));
out:
  json_decref(cur.spec);
  json_decref(fields);
  free(text);
  return rc;
}

#define RULE_COLS "name, user, spec, created_ms, updated_ms, version"

static json_t *rule_json(const k_val_t *c, int with_doc) {
  json_t *doc = json_loads(txt(&c[2]), 0, NULL), *o;
  o = json_pack("{s:s,s:s,s:O?,s:O?,s:s,s:O?,s:O?,s:O?,s:I,s:o,s:o}", "name", txt(&c[0]), "kind",
                "automation_rule", "application", json_object_get(doc, "application"), "team",
                json_object_get(doc, "team"), "owner", txt(&c[1]), "enabled",
                json_object_get(doc, "enabled"), "mode", json_object_get(doc, "mode"), "on",
                json_object_get(doc, "on"), "version", (json_int_t)c[5].i, "created_at",
                keel_json_time(c[3].i), "updated_at", keel_json_time(c[4].i));
  if (o && with_doc && doc) json_object_set(o, "document", doc);
  json_decref(doc);
  return o;
}

static int one_row(void *ud, const k_val_t *c, int n) {
  json_t **o = ud;
  if (n < 6) return 0;
  return (*o = rule_json(c, 1)) ? 0 : KEEL_ENOMEM;
}

int k_auto_rule_get(k_auto_t *a, const char *name, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(name)};
  int rc;
  *out = NULL;
  rc = k_store_exec(a->d.store, "SELECT " RULE_COLS " FROM automation_rules WHERE name = ?", args,
                    1, one_row, out, e);
  if (rc == KEEL_ENOMEM) return keel_err_set(e, rc, "out of memory");
  if (rc) return rc;
  return *out ? 0 : keel_err_set(e, KEEL_ENOENT, "no automation rule '%.64s'", name);
}

typedef struct page {
  json_t *items;
  int limit, n;
  char last[96];
} page_t;

static int list_row(void *ud, const k_val_t *c, int n) {
  page_t *l = ud;
  if (n < 6) return 0;
  if (l->n == l->limit) return 1;
  if (json_array_append_new(l->items, rule_json(c, 0))) return KEEL_ENOMEM;
  snprintf(l->last, sizeof l->last, "%s", txt(&c[0]));
  l->n++;
  return 0;
}

int k_auto_rule_list(k_auto_t *a, const char *after, int limit, json_t **items, char **next,
                     keel_err_t *e) {
  page_t l = {json_array(), limit, 0, ""};
  k_val_t args[] = {K_TEXT(after ? after : ""), K_INT(limit + 1)};
  int rc;
  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(a->d.store,
                    "SELECT " RULE_COLS " FROM automation_rules WHERE name > ? ORDER BY name LIMIT ?",
                    args, 2, list_row, &l, e);
  if (rc < 0 || rc == KEEL_ENOMEM) {
    json_decref(l.items);
    return rc == KEEL_ENOMEM ? keel_err_set(e, rc, "out of memory") : rc;
  }
  if (rc == 1) *next = strdup(l.last);
  *items = l.items;
  return 0;
}

int k_auto_rule_delete(k_auto_t *a, const char *name, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(name)};
  int rc = k_store_exec(a->d.store, "DELETE FROM automation_rules WHERE name = ?", args, 1, NULL,
                        NULL, e);
  if (rc) return rc;
  if (!k_store_changes(a->d.store)) return keel_err_set(e, KEEL_ENOENT, "no automation rule '%.64s'", name);
  a->dirty = 1;
  return 0;
}

/* ---- kill switch ---------------------------------------------------------------------- */

json_t *k_auto_switch_get(const k_auto_t *a) {
  return json_pack("{s:b,s:s,s:s,s:o}", "enabled", a->on, "reason", a->sw_reason, "by", a->sw_by,
                   "at", a->sw_at_ms ? keel_json_time(a->sw_at_ms) : json_null());
}

int k_auto_switch_set(k_auto_t *a, int enabled, const char *reason, const char *by,
                      int64_t now_ms, json_t **out, keel_buf_t *detail, keel_err_t *e) {
  k_val_t args[] = {K_INT(enabled), K_TEXT(reason ? reason : ""), K_TEXT(by), K_INT(now_ms)};
  int rc;
  *out = NULL;
  if (!enabled && (!reason || !*reason))
    return keel_err_set(e, KEEL_EINVAL, "reason: say why automation is switched off");
  rc = k_store_exec(a->d.store,
                    "INSERT INTO automation_switch(id, enabled, reason, by_user, at_ms)"
                    " VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET enabled = ?1,"
                    " reason = ?2, by_user = ?3, at_ms = ?4",
                    args, 4, NULL, NULL, e);
  if (rc) return rc;
  a->on = enabled;
  snprintf(a->sw_reason, sizeof a->sw_reason, "%s", reason ? reason : "");
  snprintf(a->sw_by, sizeof a->sw_by, "%s", by);
  a->sw_at_ms = now_ms;
  keel_buf_reset(detail);
  keel_buf_printf(detail, "automation switched %s%s%.400s", enabled ? "on" : "off",
                  reason && *reason ? ": " : "", reason ? reason : "");
  *out = k_auto_switch_get(a);
  return *out ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

/* ---- runs ------------------------------------------------------------------------------ */

#define RUN_COLS                                                                           \
  "id, rule, path, at_ms, event_id, event_type, event_subject, target, outcome, guard, reason," \
  " params, execution_id, execution_state, ended_ms"

static int runs_row(void *ud, const k_val_t *c, int n) {
  page_t *l = ud;
  json_t *o, *params;
  if (n < 15) return 0;
  if (l->n == l->limit) return 1;
  params = c[11].type == K_VAL_TEXT ? json_loads(c[11].s, 0, NULL) : NULL;
  o = json_pack("{s:s,s:s,s:s,s:o,s:{s:s,s:s,s:s},s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o}", "id",
                txt(&c[0]), "rule", txt(&c[1]), "path", txt(&c[2]), "at", keel_json_time(c[3].i),
                "event", "id", txt(&c[4]), "type", txt(&c[5]), "subject", txt(&c[6]), "target",
                txt(&c[7]), "outcome", txt(&c[8]), "guard", txt(&c[9]), "reason", txt(&c[10]),
                "params", params ? params : json_null(), "execution_id",
                c[12].type == K_VAL_TEXT ? json_string(c[12].s) : json_null(), "execution_state",
                c[13].type == K_VAL_TEXT ? json_string(c[13].s) : json_null(), "ended_at",
                c[14].type == K_VAL_INT ? keel_json_time(c[14].i) : json_null());
  if (!o || json_array_append_new(l->items, o)) return KEEL_ENOMEM;
  snprintf(l->last, sizeof l->last, "%" PRId64 ".%s", c[3].i, txt(&c[0]));
  l->n++;
  return 0;
}

int k_auto_run_list(k_auto_t *a, const char *rule, const char *cursor, int limit, json_t **items,
                    char **next, keel_err_t *e) {
  page_t l = {json_array(), limit, 0, ""};
  const char *cid;
  int64_t ms;
  int rc;
  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_store_time_cursor(cursor, &ms, &cid, e))) goto out;
  {
    k_val_t args[] = {K_INT(ms), K_TEXT(cid), K_TEXT(rule ? rule : ""), K_INT(limit + 1)};
    rc = k_store_exec(a->d.store,
                      "SELECT " RUN_COLS " FROM automation_runs"
                      " WHERE (at_ms < ?1 OR (at_ms = ?1 AND id < ?2)) AND (?3 = '' OR rule = ?3)"
                      " ORDER BY at_ms DESC, id DESC LIMIT ?4",
                      args, 4, runs_row, &l, e);
  }
  if (rc == KEEL_ENOMEM) rc = keel_err_set(e, rc, "out of memory");
  if (rc == 1) {
    *next = strdup(l.last);
    rc = 0;
  }
out:
  if (rc) json_decref(l.items);
  else *items = l.items;
  return rc;
}

int k_auto_prune(k_auto_t *a, int64_t now_ms, keel_err_t *e) {
  k_val_t args[] = {K_INT(now_ms - K_AUTO_RUNS_KEEP_MS)};
  int rc;
  if ((rc = k_store_unit_begin(a->d.store, e))) return rc;
  rc = k_store_exec(a->d.store, "DELETE FROM automation_runs WHERE at_ms < ?", args, 1, NULL, NULL, e);
  if (k_store_unit_end(a->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  return rc;
}

/* ---- judging ---------------------------------------------------------------------------- */

json_t *k_auto_event_view(const k_event_t *ev) {
  char t[KEEL_TIME_STRLEN];
  keel_time_format(t, ev->time_ms);
  return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "id", ev->id ? ev->id : "", "type",
                   ev->type ? ev->type : "", "source", ev->source ? ev->source : "keeld", "subject",
                   ev->subject ? ev->subject : "", "cause", ev->cause ? ev->cause : "", "time", t,
                   "data", ev->data ? json_incref((json_t *)ev->data) : json_object());
}

/* ---- the queue ----------------------------------------------------------------------------- */

static int type_matches(const rule_t *r, const char *type) {
  if (!type) return 0;
  return r->prefix ? !strncmp(type, r->type, strlen(r->type)) : !strcmp(type, r->type);
}

int k_auto_queue(k_auto_t *a, const k_event_t *ev) {
  json_t *item;
  int wanted = 0;
  for (size_t i = 0; i < a->nrules && !wanted; i++)
    wanted = json_is_true(json_object_get(a->rules[i].doc, "enabled")) &&
             type_matches(&a->rules[i], ev->type);
  if (!wanted) return 0;
  if (!a->queue && !(a->queue = json_array())) goto oom;
  item = json_pack("{s:o,s:I,s:I,s:s}", "view", k_auto_event_view(ev), "seq", (json_int_t)ev->seq,
                   "time_ms", (json_int_t)ev->time_ms, "path", ev->path ? ev->path : "events");
  if (!item || json_array_append_new(a->queue, item)) goto oom;
  return 1;
oom:
  keel_log(a->d.log, KEEL_LOG_ERROR, "automation: out of memory: event %s not judged",
           ev->id ? ev->id : "?");
  return KEEL_ENOMEM;
}

int k_auto_next(k_auto_t *a, k_event_t *ev, const json_t **view) {
  const json_t *it = json_array_get(a->queue, a->qhead), *v = json_object_get(it, "view");
  if (!it) return 0;
  memset(ev, 0, sizeof *ev);
  ev->seq = json_integer_value(json_object_get(it, "seq"));
  ev->id = keel_json_str(v, "id");
  ev->source = keel_json_str(v, "source");
  ev->type = keel_json_str(v, "type");
  ev->subject = keel_json_str(v, "subject");
  ev->time_ms = json_integer_value(json_object_get(it, "time_ms"));
  ev->path = keel_json_str(it, "path");
  ev->cause = keel_json_str(v, "cause");
  ev->data = json_object_get(v, "data");
  *view = v;
  return 1;
}

void k_auto_pop(k_auto_t *a) {
  if (a->qhead < json_array_size(a->queue)) a->qhead++;
  if (a->qhead == json_array_size(a->queue)) {
    json_array_clear(a->queue);
    a->qhead = 0;
  }
}

size_t k_auto_queued(const k_auto_t *a) { return json_array_size(a->queue) - a->qhead; }

void k_auto_stats(const k_auto_t *a, k_auto_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!a) return;
  out->runs = a->runs;
  out->dry_runs = a->dry_runs;
  out->skips = a->skips;
  out->queued = k_auto_queued(a);
  out->enabled = a->on;
}

void k_auto_verdict_clear(k_auto_verdict_t *v) {
  json_decref(v->params);
  memset(v, 0, sizeof *v);
}

size_t k_auto_nrules(const k_auto_t *a) { return a->nrules; }

static void skip(k_auto_verdict_t *v, const char *guard, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void skip(k_auto_verdict_t *v, const char *guard, const char *fmt, ...) {
  va_list ap;
  v->act = K_AUTO_SKIP;
  v->guard = guard;
  va_start(ap, fmt);
  vsnprintf(v->reason, sizeof v->reason, fmt, ap);
  va_end(ap);
}

/* 3. The loop guard: caused by this rule?  Says why in v. */
static int caused_by(const rule_t *r, const k_event_t *ev, k_auto_verdict_t *v, int64_t now_ms) {
  char mine[96];
  snprintf(mine, sizeof mine, "automation/%s", r->name);
  if (ev->cause && !strcmp(ev->cause, mine)) {
    skip(v, "loop", "the event was caused by this rule (cause %s)", mine);
    return 1;
  }
  if (ev->source && !strncmp(ev->source, "agent/", 6)) {
    const char *agent = ev->source + 6;
    int64_t t = ev->time_ms ? ev->time_ms : now_ms;
    for (const exe_t *x = r->st->exes; x; x = x->next) {
      size_t i;
      json_t *id;
      if (t < x->start_ms || (x->end_ms && t > x->end_ms + K_AUTO_LOOP_GRACE_MS)) continue;
      json_array_foreach(x->agents, i, id) if (!strcmp(json_string_value(id), agent)) {
        skip(v, "loop", "agent %s reported it while execution %s of this rule %s on it", agent,
             x->id, x->end_ms ? "had just run" : "was running");
        return 1;
      }
    }
  }
  return 0;
}

typedef struct look {
  const json_t *view;
  json_t *keep;
  char missing[160];
} look_t;

static int lookup(void *ud, const char *name, const char **val, size_t *len) {
  look_t *l = ud;
  const json_t *f = k_cond_field(l->view, !strncmp(name, "event.", 6) ? name + 6 : name);
  char buf[64];
  const char *t = k_cond_text(f, buf, sizeof buf);
  json_t *s;
  if (!t) {
    snprintf(l->missing, sizeof l->missing, "%s", name);
    return KEEL_ENOENT;
  }
  if (!(s = json_string(t)) || json_array_append_new(l->keep, s)) return KEEL_ENOMEM;
  *val = json_string_value(s);
  *len = json_string_length(s);
  return 0;
}

/* One template value of a parameter. */
static json_t *render1(const json_t *tmpl, look_t *l, const char *param, k_auto_verdict_t *v) {
  keel_buf_t b;
  keel_err_t e = {0};
  json_t *out = NULL;
  keel_buf_init(&b, 64 * 1024);
  l->missing[0] = '\0';
  if (keel_tmpl_expand(json_string_value(tmpl), json_string_length(tmpl), KEEL_TMPL_RAW, lookup, l,
                       &b, &e)) {
    v->act = K_AUTO_FAIL;
    if (l->missing[0])
      snprintf(v->reason, sizeof v->reason, "params.%s: the event has no value for {{ %s }}", param,
               l->missing);
    else
      snprintf(v->reason, sizeof v->reason, "params.%s: %s", param, e.msg);
  } else if (!(out = json_stringn(b.data ? b.data : "", b.len))) {
    v->act = K_AUTO_FAIL;
    snprintf(v->reason, sizeof v->reason, "out of memory");
  }
  keel_buf_free(&b);
  return out;
}

/* The rule's run.params with the event's values; *v FAIL on a problem. */
static json_t *render(const rule_t *r, const json_t *view, k_auto_verdict_t *v) {
  const json_t *given = json_object_get(json_object_get(r->doc, "run"), "params"), *val;
  look_t l = {view, json_array(), ""};
  json_t *out = json_object();
  const char *k;
  if (!l.keep || !out) goto fail;
  json_object_foreach((json_t *)given, k, val) {
    json_t *nv = NULL;
    if (json_is_string(val)) {
      nv = render1(val, &l, k, v);
    } else if (json_is_array(val)) {
      size_t i;
      json_t *it, *x;
      nv = json_array();
      json_array_foreach(val, i, it) {
        if (!nv || !(x = render1(it, &l, k, v)) || json_array_append_new(nv, x)) {
          json_decref(nv);
          nv = NULL;
          break;
        }
      }
    } else {
      nv = json_incref((json_t *)val);
    }
    if (!nv || json_object_set_new(out, k, nv)) goto fail;
  }
  json_decref(l.keep);
  return out;
fail:
  if (v->act != K_AUTO_FAIL) {
    v->act = K_AUTO_FAIL;
    snprintf(v->reason, sizeof v->reason, "out of memory");
  }
  json_decref(l.keep);
  json_decref(out);
  return NULL;
}

/* The cooldown key of a run (automation.h). */
static void target_of(const json_t *params, const json_t *view, char *out, size_t n) {
  const char *agent = json_string_value(k_cond_field(view, "data.labels.agent_id"));
  if (json_object_size(params)) {
    char *t = keel_json_canonical(params);
    snprintf(out, n, "%s", t ? t : "");
    free(t);
  } else {
    snprintf(out, n, "%s", agent ? agent : json_string_value(json_object_get(view, "subject")));
  }
}

static int found_row(void *ud, const k_val_t *c, int n) {
  (void)c, (void)n;
  *(int *)ud = 1;
  return 0;
}

/* 1 when the rule already recorded what it did about this event: an event
 * delivered again after a crash (event.h) is judged once.  Only an event
 * stored before open can be one (delivery within a run is once), so the
 * others cost no read.  On a read error the event is judged (a duplicate
 * skip record beats a lost run). */
static int judged_before(k_auto_t *a, const char *rule, const k_event_t *ev) {
  k_val_t args[] = {K_TEXT(ev->id), K_TEXT(rule)};
  keel_err_t e = {0};
  int found = 0;
  if (!ev->id || ev->seq > a->open_seq) return 0;
  if (k_store_exec(a->d.store, "SELECT 1 FROM automation_runs WHERE event_id = ? AND rule = ? LIMIT 1",
                   args, 2, found_row, &found, &e))
    keel_log(a->d.log, KEEL_LOG_ERROR, "automation: %s", e.msg);
  return found;
}

int k_auto_judge(k_auto_t *a, size_t i, const k_event_t *ev, const json_t *view, int64_t now_ms,
                 k_auto_maint_fn maint, void *maint_ud, k_auto_verdict_t *v) {
  rule_t *r = &a->rules[i];
  const json_t *doc = r->doc;
  int64_t cool = json_integer_value(json_object_get(doc, "cooldown_ms"));
  json_int_t maxh = json_integer_value(json_object_get(doc, "max_runs_per_hour"));
  char window[128] = "";
  json_t *last;

  memset(v, 0, sizeof *v);
  if (!json_is_true(json_object_get(doc, "enabled")) || !type_matches(r, ev->type) ||
      !k_event_labels_match(r->sel, k_cond_field(view, "data.labels")))
    return 0;
  for (size_t c = 0; c < r->nconds; c++)
    if (!k_cond_eval(r->conds[c], view)) return 0;
  if (judged_before(a, r->name, ev)) return 0;
  v->rule = r->name;
  v->user = r->user;
  v->path = r->path;
  v->doc = doc;
  v->runbook = keel_json_str(json_object_get(doc, "run"), "runbook");
  /* 1-3: switch, maintenance, loop */
  if (!a->on) {
    skip(v, "kill_switch", "automation is switched off by %s: %s", a->sw_by, a->sw_reason);
    return 1;
  }
  if (maint && maint(maint_ud, k_cond_field(view, "data.labels"), now_ms, window, sizeof window)) {
    skip(v, "maintenance", "maintenance window '%s' is active", window);
    return 1;
  }
  if (caused_by(r, ev, v, now_ms)) return 1;
  if (!(v->params = render(r, view, v))) return 1;
  target_of(v->params, view, v->target, sizeof v->target);
  /* 4-5: cooldown, hourly limit */
  last = json_object_get(r->st->last, v->target);
  if (last && cool && now_ms - json_integer_value(last) < cool) {
    char ts[KEEL_TIME_STRLEN];
    keel_time_format(ts, json_integer_value(last));
    skip(v, "cooldown", "ran for this target at %s; cooldown %" PRId64 " s", ts, cool / 1000);
    return 1;
  }
  runs_trim(r->st, now_ms);
  if ((json_int_t)r->st->nruns >= maxh) {
    skip(v, "rate_limit", "ran %zu times in the last hour (max_runs_per_hour %" JSON_INTEGER_FORMAT ")",
         r->st->nruns, maxh);
    return 1;
  }
  /* 6-7 */
  v->act = !strcmp(keel_json_str(doc, "mode"), "dry-run") ? K_AUTO_DRY_RUN : K_AUTO_START;
  return 1;
}

/* ---- recording ----------------------------------------------------------------------------- */

static json_t *agent_ids(const json_t *targets) {
  json_t *ids = json_array(), *t;
  size_t i;
  json_array_foreach(targets, i, t) {
    const char *id = keel_json_str(t, "agent_id");
    if (ids && id) json_array_append_new(ids, json_string(id));
  }
  return ids;
}

int k_auto_record(k_auto_t *a, const k_auto_verdict_t *v, const k_event_t *ev, const char *outcome,
                  const char *exe_id, const json_t *targets, const char *why, int64_t now_ms,
                  keel_err_t *e) {
  char id[24], cause[96];
  char *params = v->params ? keel_json_canonical(v->params) : NULL, *agents = NULL;
  json_t *ids = targets ? agent_ids(targets) : NULL, *data = NULL;
  const json_t *labels;
  const char *guard = !strcmp(outcome, "skipped") && v->guard ? v->guard : "";
  int rc;

  keel_random_id(id, sizeof id, "aur_");
  snprintf(cause, sizeof cause, "automation/%s", v->rule);
  if ((v->params && !params) || (targets && (!ids || !(agents = keel_json_canonical(ids))))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  {
    k_val_t args[] = {K_TEXT(id),          K_TEXT(v->rule),     K_TEXT(v->path),
                      K_INT(now_ms),       K_TEXT(ev->id ? ev->id : ""),
                      K_TEXT(ev->type),    K_TEXT(ev->subject ? ev->subject : ""),
                      K_TEXT(v->target),   K_TEXT(outcome),     K_TEXT(guard),
                      K_TEXT(why ? why : ""), params ? K_TEXT(params) : K_NULLV,
                      exe_id && *exe_id ? K_TEXT(exe_id) : K_NULLV, agents ? K_TEXT(agents) : K_NULLV,
                      exe_id && *exe_id ? K_TEXT("pending") : K_NULLV};
    if ((rc = k_store_exec(a->d.store,
                           "INSERT INTO automation_runs(id, rule, path, at_ms, event_id, event_type,"
                           " event_subject, target, outcome, guard, reason, params, execution_id,"
                           " agents, execution_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           args, 15, NULL, NULL, e)))
      goto out;
  }
  /* the triggering event's labels, so windows and selectors see the host
   * (shared, not copied: data lives only through the emit) */
  labels = json_object_get(ev->data, "labels");
  data = json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s,s:s,s:s},s:s,s:O?,s:o,s:O?,s:o}", "rule", v->rule,
                   "outcome", outcome, "guard", guard, "reason", why ? why : "", "event", "id",
                   ev->id ? ev->id : "", "type", ev->type, "subject", ev->subject ? ev->subject : "",
                   "source", ev->source ? ev->source : "keeld", "target", v->target, "params",
                   v->params, "execution", exe_id && *exe_id ? json_string(exe_id) : json_null(),
                   "agents", ids, "labels",
                   json_is_object(labels) ? json_incref((json_t *)labels) : json_object());
  if (!data) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  {
    k_event_t out_ev = {0, NULL, NULL,
                        !strcmp(outcome, "triggered") ? "automation.triggered"
                        : !strcmp(outcome, "dry_run") ? "automation.dry_run"
                                                      : "automation.skipped",
                        v->rule, now_ms, v->path, cause, data};
    rc = k_event_emit(a->d.events, &out_ev, NULL, e);
  }
out:
  free(params);
  free(agents);
  json_decref(ids);
  json_decref(data);
  return rc;
}

void k_auto_note(k_auto_t *a, const k_auto_verdict_t *v, const char *outcome, const char *exe_id,
                 const json_t *targets, int64_t now_ms) {
  rstate_t *s;
  int64_t cool;
  if (!strcmp(outcome, "triggered")) a->runs++;
  else if (!strcmp(outcome, "dry_run")) a->dry_runs++;
  else a->skips++;
  s = state_of(a, v->rule);
  cool = json_integer_value(json_object_get(v->doc, "cooldown_ms"));
  if (!s || (strcmp(outcome, "triggered") && strcmp(outcome, "dry_run"))) return;
  last_set(s, v->target, now_ms);
  last_trim(s, now_ms, cool);
  runs_trim(s, now_ms);
  if (runs_add(s, now_ms))
    keel_log(a->d.log, KEEL_LOG_ERROR, "automation: out of memory counting runs of %s", v->rule);
  if (exe_id && *exe_id) {
    json_t *ids = agent_ids(targets);
    if (!ids || !exe_add(s, exe_id, ids, now_ms, 0))
      keel_log(a->d.log, KEEL_LOG_ERROR, "automation: out of memory tracking %s", exe_id);
    json_decref(ids);
  }
}

/* ---- executions -------------------------------------------------------------------------------- */

void k_auto_execution_ended(k_auto_t *a, const char *exe_id, const char *state, int64_t ended_ms) {
  k_val_t args[] = {K_TEXT(state), K_INT(ended_ms), K_TEXT(exe_id)};
  keel_err_t e = {0};
  int rc;
  for (rstate_t *s = a->states; s; s = s->next) {
    exe_t **pp = &s->exes;
    while (*pp) {
      exe_t *x = *pp;
      if (!strcmp(x->id, exe_id) && !x->end_ms) x->end_ms = ended_ms;
      if (x->end_ms && x->end_ms < ended_ms - ENDED_KEEP_MS) {
        *pp = x->next;
        x->next = NULL;
        exes_free(x);
        continue;
      }
      pp = &x->next;
    }
  }
  if ((rc = k_store_unit_begin(a->d.store, &e)) == 0) {
    rc = k_store_exec(a->d.store,
                      "UPDATE automation_runs SET execution_state = ?, ended_ms = ?"
                      " WHERE execution_id = ?",
                      args, 3, NULL, NULL, &e);
    if (k_store_unit_end(a->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  }
  if (rc) keel_log(a->d.log, KEEL_LOG_ERROR, "automation: execution %s ended: %s", exe_id, e.msg);
}

void k_auto_on_execution(k_auto_t *a, const k_event_t *ev) {
  const char *id = keel_json_str(ev->data, "id");
  if (!ev->type || strcmp(ev->type, "execution.finished") || !ev->cause ||
      strncmp(ev->cause, "automation/", 11))
    return;
  if (!id) id = ev->subject;
  if (!id || !*id) return;
  k_auto_execution_ended(a, id,
                         keel_json_str(ev->data, "status") ? keel_json_str(ev->data, "status")
                         : keel_json_str(ev->data, "state") ? keel_json_str(ev->data, "state")
                                                            : "finished",
                         ev->time_ms ? ev->time_ms : keel_now_ms());
}

json_t *k_auto_running(const k_auto_t *a) {
  json_t *ids = json_array();
  for (const rstate_t *s = a->states; ids && s; s = s->next)
    for (const exe_t *x = s->exes; x; x = x->next)
      if (!x->end_ms) json_array_append_new(ids, json_string(x->id));
  return ids;
}
