#include "org/org.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iam/iam.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "org/presets.h"

/* Kinds in the order they are applied (references point backwards). */
static const char *const kinds[] = {"organization", "user",   "team",      "application",
                                    "grant",        "policy", "guardrail", NULL};

typedef struct member {
  char *user;
  const char **teams, **partners; /* point into the team names of o->objs */
  size_t nteams, npartners;
} member_t;

typedef struct app {
  const char *name; /* borrowed from o->objs */
  keel_selector_t *sel;
} app_t;

struct k_org {
  k_store_t *store;
  const keel_log_t *log;
  json_t *objs;       /* kind -> {name -> spec} as applied */
  k_policy_t *policy;
  member_t *members;  /* sorted by user */
  size_t nmembers;
  app_t *apps;        /* sorted by name */
  size_t napps;
  char model[16];
  int dirty;
};

/* ---- loading ------------------------------------------------------------------ */

static int obj_row(void *ud, const k_val_t *c, int n) {
  json_t *objs = ud, *by, *spec;
  if (n < 3 || c[0].type != K_VAL_TEXT || c[1].type != K_VAL_TEXT || c[2].type != K_VAL_TEXT)
    return 0;
  by = json_object_get(objs, c[0].s);
  if (!by) {
    by = json_object();
    json_object_set_new(objs, c[0].s, by);
  }
  spec = json_loads(c[2].s, 0, NULL);
  if (spec) json_object_set_new(by, c[1].s, spec);
  return 0;
}

static int load_objs(k_store_t *s, json_t **out, keel_err_t *e) {
  json_t *objs = json_object();
  int rc;
  *out = NULL;
  if (!objs) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  for (int i = 0; kinds[i]; i++) json_object_set_new(objs, kinds[i], json_object());
  rc = k_store_exec(s, "SELECT kind, name, spec FROM org_objects ORDER BY kind, name", NULL, 0,
                    obj_row, objs, e);
  if (rc) {
    json_decref(objs);
    return rc;
  }
  *out = objs;
  return 0;
}

static void free_index(k_org_t *o) {
  for (size_t i = 0; i < o->nmembers; i++) {
    free(o->members[i].user);
    free(o->members[i].teams);
    free(o->members[i].partners);
  }
  free(o->members);
  o->members = NULL;
  o->nmembers = 0;
  for (size_t i = 0; i < o->napps; i++) keel_selector_free(o->apps[i].sel);
  free(o->apps);
  o->apps = NULL;
  o->napps = 0;
}

static int cmp_member(const void *a, const void *b) {
  return strcmp(((const member_t *)a)->user, ((const member_t *)b)->user);
}

static member_t *find_member(const k_org_t *o, const char *user) {
  member_t key = {(char *)user, NULL, NULL, 0, 0};
  if (!o->nmembers || !user) return NULL;
  return bsearch(&key, o->members, o->nmembers, sizeof *o->members, cmp_member);
}

/* Builds the user -> teams index and the application selectors. */
static int build_index(k_org_t *o, const json_t *objs) {
  const json_t *teams = json_object_get(objs, "team"), *apps = json_object_get(objs, "application");
  const char *tname, *aname;
  json_t *t, *a;

  json_object_foreach((json_t *)teams, tname, t) {
    const char *kind = json_string_value(json_object_get(t, "kind"));
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(t, "members"), i, m) {
      const char *u = json_string_value(m);
      member_t *mb;
      const char ***list;
      size_t *n;
      if (!u) continue;
      if (!(mb = find_member(o, u))) {
        member_t *p = realloc(o->members, (o->nmembers + 1) * sizeof *p);
        if (!p) return KEEL_ENOMEM;
        o->members = p;
        mb = &o->members[o->nmembers++];
        memset(mb, 0, sizeof *mb);
        if (!(mb->user = strdup(u))) return KEEL_ENOMEM;
        qsort(o->members, o->nmembers, sizeof *o->members, cmp_member);
        mb = find_member(o, u);
      }
      for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && (!kind || strcmp(kind, "partner"))) break;
        list = pass ? &mb->partners : &mb->teams;
        n = pass ? &mb->npartners : &mb->nteams;
        {
          const char **p = realloc((void *)*list, (*n + 1) * sizeof *p);
          if (!p) return KEEL_ENOMEM;
          p[(*n)++] = tname; /* borrowed: objs outlives the index */
          *list = p;
        }
      }
    }
  }
  json_object_foreach((json_t *)apps, aname, a) {
    const char *sel = json_string_value(json_object_get(a, "selector"));
    app_t *p = realloc(o->apps, (o->napps + 1) * sizeof *p);
    keel_err_t se = {0};
    if (!p) return KEEL_ENOMEM;
    o->apps = p;
    p[o->napps].name = aname;
    p[o->napps].sel = NULL;
    if (sel && keel_selector_parse(sel, strlen(sel), &p[o->napps].sel, &se))
      keel_log(o->log, KEEL_LOG_WARN, "org: application %s: %s", aname, se.msg);
    o->napps++;
  }
  return 0; /* json objects iterate in key order only by luck: apps is sorted below */
}

static int cmp_app(const void *a, const void *b) {
  return strcmp(((const app_t *)a)->name, ((const app_t *)b)->name);
}

int k_org_reload(k_org_t *o, keel_err_t *e) {
  json_t *objs = NULL, *stmts = NULL, *org;
  k_policy_t *pol = NULL;
  k_org_t next;
  int rc;

  if ((rc = load_objs(o->store, &objs, e))) return rc;
  org = json_object_get(json_object_get(objs, "organization"), "org");
  stmts = k_org_preset_statements(org, json_object_get(objs, "team"),
                                  json_object_get(objs, "application"),
                                  json_object_get(objs, "grant"), json_object_get(objs, "policy"),
                                  json_object_get(objs, "guardrail"));
  if (!stmts) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = k_policy_compile(stmts, &pol, e))) goto out;
  memset(&next, 0, sizeof next);
  next.log = o->log;
  if (build_index(&next, objs)) {
    free_index(&next);
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if (next.napps) qsort(next.apps, next.napps, sizeof *next.apps, cmp_app);
  /* swap in */
  free_index(o);
  k_policy_free(o->policy);
  json_decref(o->objs);
  o->objs = objs;
  objs = NULL;
  o->policy = pol;
  pol = NULL;
  o->members = next.members;
  o->nmembers = next.nmembers;
  o->apps = next.apps;
  o->napps = next.napps;
  snprintf(o->model, sizeof o->model, "%s",
           org && json_string_value(json_object_get(org, "operating_model"))
               ? json_string_value(json_object_get(org, "operating_model"))
               : "");
  o->dirty = 0;
out:
  json_decref(objs);
  json_decref(stmts);
  k_policy_free(pol);
  return rc;
}

int k_org_open(k_store_t *s, const keel_log_t *log, k_org_t **out, keel_err_t *e) {
  k_org_t *o = calloc(1, sizeof *o);
  int rc;
  *out = NULL;
  if (!o) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  o->store = s;
  o->log = log;
  if ((rc = k_org_reload(o, e))) {
    k_org_close(o);
    return rc;
  }
  *out = o;
  return 0;
}

void k_org_close(k_org_t *o) {
  if (!o) return;
  free_index(o);
  k_policy_free(o->policy);
  json_decref(o->objs);
  free(o);
}

int k_org_dirty(const k_org_t *o) { return o->dirty; }
const k_policy_t *k_org_policy(const k_org_t *o) { return o->policy; }
const char *k_org_model(const k_org_t *o) { return o->model; }

json_t *k_org_summary(const k_org_t *o) {
  json_t *org = json_object_get(json_object_get(o->objs, "organization"), "org");
  return json_pack("{s:O?,s:O?,s:O?}", "name", json_object_get(org, "name"), "operating_model",
                   json_object_get(org, "operating_model"), "base", json_object_get(org, "base"));
}

json_t *k_org_statements(const k_org_t *o) {
  json_t *org = json_object_get(json_object_get(o->objs, "organization"), "org");
  return k_org_preset_statements(org, json_object_get(o->objs, "team"),
                                 json_object_get(o->objs, "application"),
                                 json_object_get(o->objs, "grant"),
                                 json_object_get(o->objs, "policy"),
                                 json_object_get(o->objs, "guardrail"));
}

void k_org_principal(const k_org_t *o, const char *user, const char *role,
                     int64_t token_created_ms, k_pol_principal_t *out) {
  member_t *m = find_member(o, user);
  memset(out, 0, sizeof *out);
  out->user = user ? user : "";
  out->role = role ? role : "";
  out->token_created_ms = token_created_ms;
  if (m) {
    out->teams = m->teams;
    out->nteams = m->nteams;
    out->partner_of = m->partners;
    out->npartner = m->npartners;
  }
}

int k_org_object(const k_org_t *o, const char *kind, const char *name, const json_t **spec) {
  const json_t *v = name ? json_object_get(json_object_get(o->objs, kind), name) : NULL;
  if (spec) *spec = v;
  return v != NULL;
}

json_t *k_org_user_teams(const k_org_t *o, const char *user) {
  member_t *m = find_member(o, user);
  json_t *a = json_array();
  const json_t *teams = json_object_get(o->objs, "team");
  for (size_t i = 0; m && a && i < m->nteams; i++)
    json_array_append_new(a, json_pack("{s:s,s:O?}", "name", m->teams[i], "kind",
                                       json_object_get(json_object_get(teams, m->teams[i]), "kind")));
  return a;
}

void k_org_host_path(const k_org_t *o, const char *id, const char *hostname, const json_t *tags,
                     char *out, size_t n) {
  const char *app = "_", *env = json_string_value(json_object_get(tags, "env"));
  for (size_t i = 0; i < o->napps; i++)
    if (o->apps[i].sel && keel_selector_match_json(o->apps[i].sel, id, hostname, tags)) {
      app = o->apps[i].name;
      break;
    }
  /* a tag value may hold '/', which would forge extra path segments */
  if (!env || !*env || strchr(env, '/')) env = "_";
  snprintf(out, n, "app/%s/env/%s/host/%s", app, env, id);
}

/* ---- apply ---------------------------------------------------------------------- */

/* Adds each item of list to d[kind] under its key member, without it. */
static void add_named(json_t *d, const char *kind, const json_t *list, const char *key) {
  size_t i;
  json_t *v;
  json_array_foreach(list, i, v) {
    json_t *spec = json_deep_copy(v);
    json_object_del(spec, key);
    json_object_set_new(json_object_get(d, kind), json_string_value(json_object_get(v, key)), spec);
  }
}

/* The document as kind -> {name -> spec}. */
static json_t *desired_of(const json_t *doc) {
  json_t *d = json_object(), *v;
  size_t i;
  if (!d) return NULL;
  for (int k = 0; kinds[k]; k++) json_object_set_new(d, kinds[k], json_object());
  json_object_set_new(json_object_get(d, "organization"), "org",
                      json_pack("{s:O,s:O,s:O?}", "name", json_object_get(doc, "name"),
                                "operating_model", json_object_get(doc, "operating_model"), "base",
                                json_object_get(doc, "base")));
  add_named(d, "user", json_object_get(doc, "users"), "name");
  add_named(d, "team", json_object_get(doc, "teams"), "name");
  add_named(d, "application", json_object_get(doc, "applications"), "name");
  add_named(d, "policy", json_object_get(doc, "policies"), "id");
  add_named(d, "guardrail", json_object_get(doc, "guardrails"), "id");
  json_array_foreach(json_object_get(doc, "grants"), i, v) {
    /* a grant is named by its team and applications */
    char key[512];
    size_t j;
    json_t *a;
    int n = snprintf(key, sizeof key, "%s:", json_string_value(json_object_get(v, "team")));
    json_array_foreach(json_object_get(v, "applications"), j, a)
      if (n > 0 && (size_t)n < sizeof key)
        n += snprintf(key + n, sizeof key - (size_t)n, "%s%s", j ? "," : "", json_string_value(a));
    json_object_set_new(json_object_get(d, "grant"), key, json_deep_copy(v));
  }
  return d;
}


static int put_obj(k_store_t *s, const char *kind, const char *name, const json_t *spec,
                   int exists, int64_t now, keel_err_t *e) {
  char *text = keel_json_canonical(spec);
  int rc;
  if (!text) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (exists) {
    k_val_t args[] = {K_TEXT(text), K_INT(now), K_TEXT(kind), K_TEXT(name)};
    rc = k_store_exec(s,
                      "UPDATE org_objects SET spec = ?, updated_ms = ?, version = version + 1"
                      " WHERE kind = ? AND name = ?",
                      args, 4, NULL, NULL, e);
  } else {
    k_val_t args[] = {K_TEXT(kind), K_TEXT(name), K_TEXT(text), K_INT(now), K_INT(now)};
    rc = k_store_exec(s,
                      "INSERT INTO org_objects(kind, name, spec, created_ms, updated_ms, version)"
                      " VALUES (?, ?, ?, ?, ?, 1)",
                      args, 5, NULL, NULL, e);
  }
  free(text);
  return rc;
}

static int del_obj(k_store_t *s, const char *kind, const char *name, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(kind), K_TEXT(name)};
  return k_store_exec(s, "DELETE FROM org_objects WHERE kind = ? AND name = ?", args, 2, NULL,
                      NULL, e);
}

/* Creates or updates user name in iam from its spec. */
static int apply_user(k_store_t *s, const char *name, const json_t *spec, int64_t now,
                      keel_err_t *e) {
  json_t *cur = NULL, *req = NULL, *out = NULL;
  keel_err_t ge = {0};
  int rc;
  if (k_iam_user_get(s, name, &cur, &ge) == KEEL_ENOENT) {
    req = json_pack("{s:s,s:O?,s:O?,s:O?}", "name", name, "role", json_object_get(spec, "role"),
                    "display_name", json_object_get(spec, "display_name"), "email",
                    json_object_get(spec, "email"));
    rc = req ? k_iam_user_create(s, req, now, &out, e) : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  } else if (cur) {
    req = json_pack("{s:O,s:O?,s:O?,s:O?}", "version", json_object_get(cur, "version"), "role",
                    json_object_get(spec, "role"), "display_name",
                    json_object_get(spec, "display_name"), "email", json_object_get(spec, "email"));
    rc = req ? k_iam_user_update(s, name, req, now, &out, e)
             : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  } else {
    rc = keel_err_set(e, ge.code ? ge.code : KEEL_EIO, "%s", ge.msg);
  }
  json_decref(cur);
  json_decref(req);
  json_decref(out);
  return rc;
}

/* A user spec differs from the iam user (only the fields the document sets). */
static int user_differs(k_store_t *s, const char *name, const json_t *spec, int *exists) {
  json_t *cur = NULL;
  keel_err_t ge = {0};
  const char *k;
  json_t *v;
  int diff = 0;
  *exists = k_iam_user_get(s, name, &cur, &ge) == 0;
  if (!*exists) return 1;
  json_object_foreach((json_t *)spec, k, v) if (!json_is_null(v) &&
                                                 !json_equal(v, json_object_get(cur, k))) diff = 1;
  json_decref(cur);
  return diff;
}

/* Every member of every team must be a user: in the document or in keeld. */
static int check_members(k_store_t *s, const json_t *want, keel_err_t *e) {
  const char *tname;
  json_t *t;
  json_object_foreach(json_object_get(want, "team"), tname, t) {
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(t, "members"), i, m) {
      const char *u = json_string_value(m);
      json_t *cur = NULL;
      keel_err_t ge = {0};
      if (!u || json_object_get(json_object_get(want, "user"), u)) continue;
      if (k_iam_user_get(s, u, &cur, &ge))
        return keel_err_set(e, KEEL_EINVAL,
                            "team %s: member '%s' is neither in the document's users nor a user of keeld",
                            tname, u);
      json_decref(cur);
    }
  }
  return 0;
}

int k_org_apply(k_org_t *o, const json_t *doc, int dry_run, int prune, int64_t now_ms,
                json_t **report, keel_buf_t *detail, keel_err_t *e) {
  json_t *want = desired_of(doc), *have = NULL, *changes = json_array(), *removed = json_array();
  const char *old_model = o->model;
  char summary[512];
  size_t ncreate = 0, nupdate = 0, ndelete = 0;
  int rc;

  *report = NULL;
  if (!want || !changes || !removed) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = load_objs(o->store, &have, e)) || (rc = check_members(o->store, want, e))) goto out;
  for (int k = 0; kinds[k]; k++) {
    const char *kind = kinds[k], *name;
    json_t *w = json_object_get(want, kind), *h = json_object_get(have, kind), *spec;
    json_object_foreach(w, name, spec) {
      json_t *cur = json_object_get(h, name);
      int is_user = !strcmp(kind, "user"), exists = cur != NULL, differs;
      if (is_user) differs = user_differs(o->store, name, spec, &exists) || !cur;
      else differs = !cur || !json_equal(cur, spec);
      if (!differs) continue;
      if (is_user ? exists : cur != NULL) {
        json_array_append_new(changes, json_pack("{s:s,s:s,s:s,s:o}", "op", "update", "kind", kind,
                                                 "name", name, "fields",
                                                 cur ? keel_json_changed_keys(cur, spec) : json_array()));
        nupdate++;
      } else {
        json_array_append_new(changes, json_pack("{s:s,s:s,s:s}", "op", "create", "kind", kind,
                                                 "name", name));
        ncreate++;
      }
      if (dry_run) continue;
      if (is_user && (rc = apply_user(o->store, name, spec, now_ms, e))) goto out;
      if ((rc = put_obj(o->store, kind, name, spec, cur != NULL, now_ms, e))) goto out;
    }
    json_object_foreach(h, name, spec) {
      if (json_object_get(w, name)) continue;
      json_array_append_new(removed, json_pack("{s:s,s:s}", "kind", kind, "name", name));
      if (!prune) continue;
      json_array_append_new(changes,
                            json_pack("{s:s,s:s,s:s}", "op", "delete", "kind", kind, "name", name));
      ndelete++;
      if (dry_run) continue;
      if (!strcmp(kind, "user")) {
        /* users are never deleted (the audit trail names them): disabled */
        json_t *cur = NULL, *req = NULL, *out = NULL;
        keel_err_t ge = {0};
        if (k_iam_user_get(o->store, name, &cur, &ge) == 0) {
          req = json_pack("{s:O,s:b}", "version", json_object_get(cur, "version"), "disabled", 1);
          rc = k_iam_user_update(o->store, name, req, now_ms, &out, e);
        }
        json_decref(cur);
        json_decref(req);
        json_decref(out);
        if (rc) goto out;
      }
      if ((rc = del_obj(o->store, kind, name, e))) goto out;
    }
  }
  {
    const char *new_model =
        json_string_value(json_object_get(json_object_get(json_object_get(want, "organization"), "org"),
                                          "operating_model"));
    int n = snprintf(summary, sizeof summary, "%s%zu created, %zu updated, %zu deleted",
                     dry_run ? "dry run: " : "", ncreate, nupdate, ndelete);
    if (json_array_size(removed) && !prune && n > 0 && (size_t)n < sizeof summary)
      n += snprintf(summary + n, sizeof summary - (size_t)n,
                    "; %zu in keeld but not in the file (kept; --prune deletes them)",
                    json_array_size(removed));
    if (!ncreate && !nupdate && !ndelete && n > 0 && (size_t)n < sizeof summary)
      snprintf(summary, sizeof summary, "%sno changes%s", dry_run ? "dry run: " : "",
               json_array_size(removed) && !prune ? " (some objects are not in the file; --prune deletes them)" : "");
    keel_buf_reset(detail);
    keel_buf_printf(detail, "%s", summary);
    if (new_model && strcmp(old_model, new_model))
      keel_buf_printf(detail, "; operating_model %s -> %s", old_model[0] ? old_model : "(none)",
                      new_model);
    for (size_t i = 0; i < json_array_size(changes) && detail->len < 8192; i++) {
      json_t *c = json_array_get(changes, i);
      keel_buf_printf(detail, "%s %s %s/%s", i ? "," : ":", keel_json_str(c, "op"),
                      keel_json_str(c, "kind"), keel_json_str(c, "name"));
    }
  }
  *report = json_pack("{s:b,s:b,s:b,s:s,s:O,s:O}", "changed", (ncreate + nupdate + ndelete) > 0,
                      "dry_run", dry_run, "prune", prune, "summary", summary, "changes", changes,
                      "removed", removed);
  if (!*report) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (!dry_run && (ncreate + nupdate + ndelete)) o->dirty = 1;
out:
  json_decref(want);
  json_decref(have);
  json_decref(changes);
  json_decref(removed);
  return rc;
}
