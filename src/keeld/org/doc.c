/* The Organization document validator.  One walk over the document that
 * checks and builds the normalized copy at the same time; the current path
 * is kept both as a JSON pointer (to find line:col) and in dotted form (for
 * the message). */
#include "org/doc.h"

#include "docwalk.h"
#include "docwalk_short.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/selector.h"
#include "keel/time.h"

#define NAME_MAX_LEN 63
#define ENV_MAX_LEN 31
#define TEXT_MAX 4096
#define DISPLAY_MAX 128 /* as POST /v1/users */
#define EMAIL_MAX 254
#define REASON_MAX 512
#define GLOB_MAX 512

typedef struct v {
  k_walk_t w; /* where we are (docwalk.h) */
  /* Declared names -> details, filled as sections are checked. */
  json_t *users;  /* name -> true */
  json_t *teams;  /* name -> kind */
  json_t *apps;   /* name -> environments array */
  json_t *ids;    /* policy/guardrail id -> dotted path of the first */
} v_t;


/* A string of at most max bytes without NUL or control characters (the
 * value ends up in messages and logs as one line). Caller has pushed. */
static int str_ok(v_t *V, const json_t *s, size_t max) {
  const char *t;
  size_t n;
  if (!json_is_string(s)) return verr(V, "expected a string");
  t = json_string_value(s);
  n = json_string_length(s);
  if (n > max) return verr(V, "longer than %zu bytes", max);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
      return verr(V, "contains a control character");
  return 0;
}

/* [a-z0-9][a-z0-9._-]{0,max-1} (dots/underscores unless env). */
static int name_ok(const json_t *s, size_t max, int env) {
  const char *t = json_string_value(s);
  size_t n = json_string_length(s);
  if (!t || n < 1 || n > max) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (i && !ok) ok = c == '-' || (!env && (c == '.' || c == '_'));
    if (!ok) return 0;
  }
  return 1;
}

#define NAME_RE "[a-z0-9][a-z0-9._-]{0,62}"
#define ENV_RE "[a-z0-9][a-z0-9-]{0,30}"

/* A name field: checks type and pattern. Caller has pushed. */
static int check_name(v_t *V, const json_t *s, int env) {
  char b[80];
  int rc;
  if ((rc = str_ok(V, s, TEXT_MAX))) return rc;
  if (!name_ok(s, env ? ENV_MAX_LEN : NAME_MAX_LEN, env))
    return verr(V, "invalid name '%s': expected %s", qs(b, s), env ? ENV_RE : NAME_RE);
  return 0;
}

/* One of a NULL-ended list; the message lists them. Caller has pushed. */
static int check_enum(v_t *V, const json_t *s, const char *const *vals) {
  char list[160] = "";
  size_t n = 0;
  if (json_is_string(s) && strlen(json_string_value(s)) == json_string_length(s))
    for (const char *const *p = vals; *p; p++)
      if (!strcmp(*p, json_string_value(s))) return 0;
  for (const char *const *p = vals; *p; p++)
    n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%s",
                          p == vals ? "" : ", ", *p);
  return verr(V, "expected one of %s", list);
}

/* Required or optional string member into *out (borrowed; NULL when absent
 * and optional). */
static int get_str(v_t *V, const json_t *obj, const char *key, int required, size_t max,
                   json_t **out) {
  json_t *s = member(obj, key);
  mark_t m;
  int rc;
  *out = NULL;
  if (!s) return required ? missing(V, key) : 0;
  m = push_key(V, key);
  rc = str_ok(V, s, max);
  pop(V, m);
  if (!rc) *out = s;
  return rc;
}

/* A list member (borrowed in *out, NULL when absent and optional);
 * nonempty: at least one item. */
static int get_list(v_t *V, const json_t *obj, const char *key, int required, int nonempty,
                    json_t **out) {
  json_t *a = member(obj, key);
  mark_t m;
  int rc = 0;
  *out = NULL;
  if (!a) return required ? missing(V, key) : 0;
  m = push_key(V, key);
  if (!json_is_array(a)) rc = verr(V, "expected a list");
  else if (nonempty && !json_array_size(a)) rc = verr(V, "expected at least one item");
  pop(V, m);
  if (!rc) *out = a;
  return rc;
}

typedef int (*item_fn)(v_t *V, const json_t *item, void *ud);

/* A list of strings, each checked by fn (may be NULL), no duplicates;
 * *copy gets a new array of them (absent list -> []). */
static int str_list(v_t *V, const json_t *obj, const char *key, int required, int nonempty,
                    item_fn fn, void *ud, json_t **copy) {
  json_t *a, *seen = NULL, *it;
  mark_t m, mi;
  size_t i;
  char b[80];
  int rc;

  *copy = NULL;
  if ((rc = get_list(V, obj, key, required, nonempty, &a))) return rc;
  if (!(*copy = json_array()) || !(seen = json_object())) {
    rc = oom(V);
    goto out;
  }
  if (!a) goto out;
  m = push_key(V, key);
  json_array_foreach(a, i, it) {
    mi = push_idx(V, i);
    rc = str_ok(V, it, TEXT_MAX);
    if (!rc && fn) rc = fn(V, it, ud);
    if (!rc && json_object_getn(seen, json_string_value(it), json_string_length(it)))
      rc = verr(V, "'%s' listed twice", qs(b, it));
    if (!rc && (json_object_setn_new(seen, json_string_value(it), json_string_length(it),
                                     json_true()) ||
                json_array_append(*copy, it)))
      rc = oom(V);
    pop(V, mi);
    if (rc) break;
  }
  pop(V, m);
out:
  json_decref(seen);
  if (rc) {
    json_decref(*copy);
    *copy = NULL;
  }
  return rc;
}

/* Registers name (a string) in set under the current path; a second one is
 * an error naming the first. */
static int unique(v_t *V, json_t *set, const json_t *name, const char *what, json_t *val) {
  char b[80];
  json_t *prev = json_object_getn(set, json_string_value(name), json_string_length(name));
  if (prev) {
    json_decref(val);
    if (json_is_string(prev))
      return verr(V, "duplicate %s '%s' (first at %s)", what, qs(b, name), json_string_value(prev));
    return verr(V, "duplicate %s '%s'", what, qs(b, name));
  }
  if (json_object_setn_new(set, json_string_value(name), json_string_length(name), val))
    return oom(V);
  return 0;
}

/* ---- item checks ------------------------------------------------------------ */

static int item_user_name(v_t *V, const json_t *s, void *ud) {
  (void)ud;
  return check_name(V, s, 0);
}

static int item_env(v_t *V, const json_t *s, void *ud) {
  (void)ud;
  return check_name(V, s, 1);
}

static int item_app(v_t *V, const json_t *s, void *ud) {
  char b[80];
  int rc = check_name(V, s, 0);
  (void)ud;
  if (!rc && !json_object_getn(V->apps, json_string_value(s), json_string_length(s)))
    rc = verr(V, "'%s' is not a declared application", qs(b, s));
  return rc;
}

/* Grant environments: each one an environment of at least one of the
 * grant's applications (ud: the applications array). */
static int item_grant_env(v_t *V, const json_t *s, void *ud) {
  const json_t *apps = ud, *app, *env;
  size_t i, j;
  char b[80];
  int rc = check_name(V, s, 1);
  if (rc) return rc;
  json_array_foreach(apps, i, app) {
    json_t *envs = json_object_get(V->apps, json_string_value(app));
    json_array_foreach(envs, j, env) if (json_equal(env, s)) return 0;
  }
  return verr(V, "'%s' is not an environment of any of the grant's applications", qs(b, s));
}

/* ^(\*|[a-z*][a-z0-9*-]*:[a-z*][a-z0-9*-]*)$ */
static int item_action(v_t *V, const json_t *s, void *ud) {
  const char *t = json_string_value(s);
  size_t n = json_string_length(s), i = 0;
  char b[80];
  (void)ud;
  if (n == 1 && t[0] == '*') return 0;
  for (int part = 0; part < 2; part++) {
    size_t start = i;
    for (; i < n && t[i] != ':'; i++) {
      char c = t[i];
      int ok = (c >= 'a' && c <= 'z') || c == '*' || (i > start && ((c >= '0' && c <= '9') || c == '-'));
      if (!ok) goto bad;
    }
    if (i == start) goto bad;
    if (part == 0) {
      if (i == n) goto bad;
      i++; /* ':' */
    }
  }
  if (i == n && n <= 128) return 0;
bad:
  return verr(V, "invalid action '%s': expected area:verb (globs: exec:*, *:read, *)", qs(b, s));
}

/* '/'-separated segments of [A-Za-z0-9._*-]+ ('**' is one of them). */
static int item_resource(v_t *V, const json_t *s, void *ud) {
  const char *t = json_string_value(s);
  size_t n = json_string_length(s), seg = 0;
  char b[80];
  (void)ud;
  if (n == 0 || n > GLOB_MAX) goto bad;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || t[i] == '/') {
      if (!seg) goto bad;
      seg = 0;
      continue;
    }
    char c = t[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '*' || c == '-'))
      goto bad;
    seg++;
  }
  return 0;
bad:
  return verr(V, "invalid resource '%s': expected a path of [A-Za-z0-9._*-]+ segments", qs(b, s));
}

static int item_principal(v_t *V, const json_t *s, void *ud) {
  const char *t = json_string_value(s);
  size_t n = json_string_length(s);
  char b[80];
  (void)ud;
  if (n == 1 && t[0] == '*') return 0;
  if (n > 5 && !strncmp(t, "team:", 5)) {
    if (!json_object_getn(V->teams, t + 5, n - 5))
      return verr(V, "'%s': no team '%s' in this document", qs(b, s), t + 5);
    return 0;
  }
  if (n > 5 && !strncmp(t, "user:", 5)) {
    if (!json_object_getn(V->users, t + 5, n - 5))
      return verr(V, "'%s': no user '%s' in this document", qs(b, s), t + 5);
    return 0;
  }
  if (!strcmp(t, "role:admin") || !strcmp(t, "role:operator") || !strcmp(t, "role:viewer"))
    return 0;
  return verr(V, "invalid principal '%s': expected \"*\", team:NAME, user:NAME or "
                 "role:admin|operator|viewer", qs(b, s));
}

static int item_tag_key(v_t *V, const json_t *s, void *ud) {
  keel_err_t te = {0};
  (void)ud;
  if (keel_tag_check(json_string_value(s), "", &te)) return verr(V, "%s", te.msg);
  return 0;
}

static const char *const days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun", NULL};

static int item_day(v_t *V, const json_t *s, void *ud) {
  (void)ud;
  return check_enum(V, s, days);
}

/* "HH:MM", 00:00..24:00, into minutes. Caller has pushed. */
static int hhmm(v_t *V, const json_t *s, int *min) {
  const char *t = json_string_value(s);
  char b[80];
  if (json_is_string(s) && json_string_length(s) == 5 && t[2] == ':' && t[0] >= '0' &&
      t[0] <= '9' && t[1] >= '0' && t[1] <= '9' && t[3] >= '0' && t[3] <= '5' && t[4] >= '0' &&
      t[4] <= '9') {
    int h = (t[0] - '0') * 10 + (t[1] - '0'), m = (t[3] - '0') * 10 + (t[4] - '0');
    if (h < 24 || (h == 24 && m == 0)) {
      *min = h * 60 + m;
      return 0;
    }
  }
  if (json_is_string(s)) return verr(V, "invalid time '%s': expected \"HH:MM\" from 00:00 to 24:00", qs(b, s));
  return verr(V, "expected a time \"HH:MM\" (quoted)");
}

static int window(v_t *V, const json_t *w, json_t **out) {
  static const char *const keys[] = {"days", "start", "end", NULL};
  json_t *d = NULL, *st, *en;
  int rc, a = 0, z = 0;
  mark_t m;

  *out = NULL;
  if ((rc = check_map(V, w, keys))) return rc;
  if ((rc = str_list(V, w, "days", 1, 1, item_day, NULL, &d))) return rc;
  if (!(st = member(w, "start"))) {
    rc = missing(V, "start");
    goto out;
  }
  m = push_key(V, "start");
  rc = hhmm(V, st, &a);
  pop(V, m);
  if (rc) goto out;
  if (!(en = member(w, "end"))) {
    rc = missing(V, "end");
    goto out;
  }
  m = push_key(V, "end");
  rc = hhmm(V, en, &z);
  if (!rc && a >= z)
    rc = verr(V, "end %s is not after start %s", json_string_value(en), json_string_value(st));
  pop(V, m);
  if (rc) goto out;
  if (!(*out = json_pack("{s:O,s:O,s:O}", "days", d, "start", st, "end", en))) rc = oom(V);
out:
  json_decref(d);
  return rc;
}

static int conditions(v_t *V, const json_t *stmt, json_t **out) {
  static const char *const keys[] = {"resource_tags", "resource_tags_missing", "window",
                                     "outside_window", "token_max_age", NULL};
  json_t *c = member(stmt, "conditions"), *v, *nv = NULL;
  mark_t m, mk;
  int rc = 0;

  *out = json_object();
  if (!*out) return oom(V);
  if (!c) return 0;
  m = push_key(V, "conditions");
  if ((rc = check_map(V, c, keys))) goto out;
  if ((v = member(c, "resource_tags"))) {
    const char *k;
    json_t *tv;
    keel_err_t te = {0};
    mk = push_key(V, "resource_tags");
    if (!json_is_object(v)) rc = verr(V, "expected a mapping of tag: value");
    json_object_foreach(v, k, tv) {
      if (rc) break;
      mark_t mt = push_key(V, k);
      if (!json_is_string(tv)) rc = verr(V, "expected a string");
      else if (json_object_iter_key_len(json_object_key_to_iter(k)) != strlen(k))
        rc = verr(V, "tag key contains a NUL character");
      else if (keel_tag_check(k, json_string_value(tv), &te))
        rc = verr(V, "%s", te.msg);
      else if (strlen(json_string_value(tv)) != json_string_length(tv))
        rc = verr(V, "contains a NUL character");
      pop(V, mt);
    }
    pop(V, mk);
    if (rc) goto out;
    if (json_object_set(*out, "resource_tags", v)) goto nomem;
  }
  if (member(c, "resource_tags_missing")) {
    if ((rc = str_list(V, c, "resource_tags_missing", 1, 1, item_tag_key, NULL, &nv))) goto out;
    if (json_object_set_new(*out, "resource_tags_missing", nv)) goto nomem;
  }
  for (int i = 0; i < 2; i++) {
    const char *k = i ? "outside_window" : "window";
    if (!(v = member(c, k))) continue;
    mk = push_key(V, k);
    rc = window(V, v, &nv);
    pop(V, mk);
    if (rc) goto out;
    if (json_object_set_new(*out, k, nv)) goto nomem;
  }
  if ((v = member(c, "token_max_age"))) {
    int64_t ms;
    char b[80];
    mk = push_key(V, "token_max_age");
    rc = str_ok(V, v, 64);
    if (!rc && keel_duration_parse(json_string_value(v), &ms))
      rc = verr(V, "invalid duration '%s': expected e.g. 30m, 12h, 7d", qs(b, v));
    pop(V, mk);
    if (rc) goto out;
    if (json_object_set(*out, "token_max_age", v)) goto nomem;
  }
  goto out;
nomem:
  rc = oom(V);
out:
  pop(V, m);
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}

/* ---- sections ------------------------------------------------------------------ */

static const char *const roles[] = {"admin", "operator", "viewer", NULL};
static const char *const team_kinds[] = {"application", "platform", "ccoe", "partner", NULL};
static const char *const effects[] = {"allow", "deny", NULL};

static int user(v_t *V, const json_t *u, json_t **out) {
  static const char *const keys[] = {"name", "display_name", "email", "role", NULL};
  json_t *name, *dn, *em, *role;
  mark_t m;
  int rc;

  if ((rc = check_map(V, u, keys))) return rc;
  if (!(name = member(u, "name"))) return missing(V, "name");
  m = push_key(V, "name");
  if (!(rc = check_name(V, name, 0)))
    rc = unique(V, V->users, name, "user", json_string(V->w.dot));
  pop(V, m);
  if (rc) return rc;
  if ((rc = get_str(V, u, "display_name", 0, DISPLAY_MAX, &dn))) return rc;
  if ((rc = get_str(V, u, "email", 0, EMAIL_MAX, &em))) return rc;
  if ((role = member(u, "role"))) {
    m = push_key(V, "role");
    rc = check_enum(V, role, roles);
    pop(V, m);
    if (rc) return rc;
  }
  *out = json_pack("{s:O,s:O,s:O,s:s}", "name", name, "display_name", dn ? dn : json_null(),
                   "email", em ? em : json_null(), "role", role ? json_string_value(role) : "viewer");
  return *out ? 0 : oom(V);
}

static int team(v_t *V, const json_t *t, json_t **out) {
  static const char *const keys[] = {"name", "kind", "members", NULL};
  json_t *name, *kind, *members = NULL;
  mark_t m;
  int rc;

  if ((rc = check_map(V, t, keys))) return rc;
  if (!(name = member(t, "name"))) return missing(V, "name");
  m = push_key(V, "name");
  if (!(rc = check_name(V, name, 0)))
    rc = json_object_getn(V->teams, json_string_value(name), json_string_length(name))
             ? verr(V, "duplicate team '%s'", json_string_value(name))
             : 0;
  pop(V, m);
  if (rc) return rc;
  if (!(kind = member(t, "kind"))) return missing(V, "kind");
  m = push_key(V, "kind");
  rc = check_enum(V, kind, team_kinds);
  pop(V, m);
  if (rc) return rc;
  if (json_object_set(V->teams, json_string_value(name), kind)) return oom(V);
  if ((rc = str_list(V, t, "members", 0, 0, item_user_name, NULL, &members))) return rc;
  *out = json_pack("{s:O,s:O,s:o}", "name", name, "kind", kind, "members", members);
  return *out ? 0 : oom(V);
}

static int application(v_t *V, const json_t *a, json_t **out) {
  static const char *const keys[] = {"name", "owner", "environments", "selector", NULL};
  json_t *name, *owner, *envs = NULL, *sel, *kind;
  mark_t m;
  char b[80];
  int rc;

  if ((rc = check_map(V, a, keys))) return rc;
  if (!(name = member(a, "name"))) return missing(V, "name");
  m = push_key(V, "name");
  if (!(rc = check_name(V, name, 0)) &&
      json_object_getn(V->apps, json_string_value(name), json_string_length(name)))
    rc = verr(V, "duplicate application '%s'", json_string_value(name));
  pop(V, m);
  if (rc) return rc;
  if (!(owner = member(a, "owner"))) return missing(V, "owner");
  m = push_key(V, "owner");
  if (!(rc = check_name(V, owner, 0))) {
    kind = json_object_getn(V->teams, json_string_value(owner), json_string_length(owner));
    if (!kind)
      rc = verr(V, "'%s' is not a declared team", qs(b, owner));
    else if (strcmp(json_string_value(kind), "application"))
      rc = verr(V, "team '%s' is of kind %s: expected a team of kind application", qs(b, owner),
                json_string_value(kind));
  }
  pop(V, m);
  if (rc) return rc;
  if ((rc = str_list(V, a, "environments", 1, 1, item_env, NULL, &envs))) return rc;
  if ((rc = get_str(V, a, "selector", 1, KEEL_SELECTOR_MAX_LEN, &sel))) goto out;
  m = push_key(V, "selector");
  rc = k_walk_selector(&V->w, sel, NULL);
  pop(V, m);
  if (rc) goto out;
  if (json_object_set(V->apps, json_string_value(name), envs)) {
    rc = oom(V);
    goto out;
  }
  *out = json_pack("{s:O,s:O,s:O,s:O}", "name", name, "owner", owner, "environments", envs,
                   "selector", sel);
  if (!*out) rc = oom(V);
out:
  json_decref(envs);
  return rc;
}

static int grant(v_t *V, const json_t *g, json_t **out) {
  static const char *const keys[] = {"team", "applications", "environments", "actions",
                                     "expires_at", NULL};
  json_t *team_, *apps = NULL, *envs = NULL, *acts = NULL, *exp, *kind;
  mark_t m;
  char b[80], ts[KEEL_TIME_STRLEN];
  int64_t ms;
  int rc;

  if ((rc = check_map(V, g, keys))) return rc;
  if (!(team_ = member(g, "team"))) return missing(V, "team");
  m = push_key(V, "team");
  if (!(rc = check_name(V, team_, 0))) {
    kind = json_object_getn(V->teams, json_string_value(team_), json_string_length(team_));
    if (!kind)
      rc = verr(V, "'%s' is not a declared team", qs(b, team_));
    else if (strcmp(json_string_value(kind), "partner"))
      rc = verr(V, "team '%s' is of kind %s: expected a team of kind partner", qs(b, team_),
                json_string_value(kind));
  }
  pop(V, m);
  if (rc) return rc;
  if ((rc = str_list(V, g, "applications", 1, 1, item_app, NULL, &apps))) goto out;
  if (member(g, "environments")) {
    if ((rc = str_list(V, g, "environments", 1, 1, item_grant_env, apps, &envs))) goto out;
  } else {
    /* Default: every environment of each application, once, in order. */
    size_t i, j;
    json_t *app, *env;
    if (!(envs = json_array())) goto nomem;
    json_array_foreach(apps, i, app) {
      json_array_foreach(json_object_get(V->apps, json_string_value(app)), j, env) {
        size_t k;
        json_t *have;
        int dup = 0;
        json_array_foreach(envs, k, have) dup |= json_equal(have, env);
        if (!dup && json_array_append(envs, env)) goto nomem;
      }
    }
  }
  if ((rc = str_list(V, g, "actions", 1, 1, item_action, NULL, &acts))) goto out;
  if ((rc = get_str(V, g, "expires_at", 1, 64, &exp))) goto out;
  m = push_key(V, "expires_at");
  if (keel_time_parse(json_string_value(exp), &ms))
    rc = verr(V, "invalid time '%s': expected RFC 3339 (2027-06-30T00:00:00Z)", qs(b, exp));
  pop(V, m);
  if (rc) goto out;
  keel_time_format(ts, ms);
  *out = json_pack("{s:O,s:O,s:O,s:O,s:s}", "team", team_, "applications", apps, "environments",
                   envs, "actions", acts, "expires_at", ts);
  if (!*out) goto nomem;
  goto out;
nomem:
  rc = oom(V);
out:
  json_decref(apps);
  json_decref(envs);
  json_decref(acts);
  return rc;
}

static int statement(v_t *V, const json_t *s, int guardrail, json_t **out) {
  static const char *const keys[] = {"id", "effect", "principals", "actions", "resources",
                                     "conditions", "reason", NULL};
  json_t *id, *effect, *princ = NULL, *acts = NULL, *res = NULL, *cond = NULL, *reason;
  mark_t m;
  int rc;

  if ((rc = check_map(V, s, keys))) return rc;
  if (!(id = member(s, "id"))) return missing(V, "id");
  m = push_key(V, "id");
  if (!(rc = check_name(V, id, 0)))
    rc = unique(V, V->ids, id, "statement id", json_string(V->w.dot));
  pop(V, m);
  if (rc) return rc;
  effect = member(s, "effect");
  if (!effect && !guardrail) return missing(V, "effect");
  if (effect) {
    m = push_key(V, "effect");
    rc = check_enum(V, effect, effects);
    if (!rc && guardrail && strcmp(json_string_value(effect), "deny"))
      rc = verr(V, "guardrails are always deny");
    pop(V, m);
    if (rc) return rc;
  }
  if ((rc = str_list(V, s, "principals", !guardrail, 1, item_principal, NULL, &princ))) goto out;
  if (!json_array_size(princ) && json_array_append_new(princ, json_string("*"))) goto nomem;
  if ((rc = str_list(V, s, "actions", 1, 1, item_action, NULL, &acts))) goto out;
  if ((rc = str_list(V, s, "resources", 1, 1, item_resource, NULL, &res))) goto out;
  if ((rc = conditions(V, s, &cond))) goto out;
  if ((rc = get_str(V, s, "reason", 0, REASON_MAX, &reason))) goto out;
  *out = json_pack("{s:O,s:s,s:O,s:O,s:O,s:O,s:O}", "id", id, "effect",
                   effect ? json_string_value(effect) : "deny", "principals", princ, "actions",
                   acts, "resources", res, "conditions", cond, "reason",
                   reason ? reason : json_null());
  if (!*out) goto nomem;
  goto out;
nomem:
  rc = oom(V);
out:
  json_decref(princ);
  json_decref(acts);
  json_decref(res);
  json_decref(cond);
  return rc;
}

typedef int (*section_fn)(v_t *V, const json_t *item, json_t **out);

static int stmt_policy(v_t *V, const json_t *s, json_t **out) { return statement(V, s, 0, out); }
static int stmt_guardrail(v_t *V, const json_t *s, json_t **out) { return statement(V, s, 1, out); }

/* A top-level list: each item through fn into a new array set on norm. */
static int section(v_t *V, const json_t *doc, json_t *norm, const char *key, section_fn fn) {
  json_t *a, *copy = json_array(), *it;
  mark_t m, mi;
  size_t i;
  int rc;

  if (!copy) return oom(V);
  if ((rc = get_list(V, doc, key, 0, 0, &a))) goto out;
  m = push_key(V, key);
  json_array_foreach(a, i, it) {
    json_t *o = NULL;
    mi = push_idx(V, i);
    rc = fn(V, it, &o);
    pop(V, mi);
    if (!rc && json_array_append_new(copy, o)) rc = oom(V);
    if (rc) break;
  }
  pop(V, m);
  if (rc) goto out;
  if (json_object_set(norm, key, copy)) rc = oom(V);
out:
  json_decref(copy);
  return rc;
}

int k_org_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                       json_t **out, keel_err_t *e) {
  static const char *const keys[] = {"kind", "name", "operating_model", "base", "users", "teams",
                                     "applications", "grants", "policies", "guardrails", NULL};
  static const char *const models[] = {"decentralized", "centralized", "ccoe", NULL};
  static const char *const bases[] = {"decentralized", "centralized", NULL};
  v_t V;
  json_t *norm = NULL, *oname, *model, *base, *gr;
  mark_t m;
  int rc, ccoe;

  memset(&V, 0, sizeof V);
  V.w.name = name ? name : "<input>";
  V.w.pos = pos;
  V.w.e = e;
  *out = NULL;
  if (!(V.users = json_object()) || !(V.teams = json_object()) || !(V.apps = json_object()) ||
      !(V.ids = json_object()) || !(norm = json_object())) {
    rc = oom(&V);
    goto out;
  }
  if ((rc = k_walk_head(&V.w, doc, keys, "Organization"))) goto out;
  if (!(oname = member(doc, "name"))) {
    rc = missing(&V, "name");
    goto out;
  }
  m = push_key(&V, "name");
  rc = check_name(&V, oname, 0);
  pop(&V, m);
  if (rc) goto out;
  if (!(model = member(doc, "operating_model"))) {
    rc = missing(&V, "operating_model");
    goto out;
  }
  m = push_key(&V, "operating_model");
  rc = check_enum(&V, model, models);
  pop(&V, m);
  if (rc) goto out;
  ccoe = !strcmp(json_string_value(model), "ccoe");
  base = member(doc, "base");
  if (ccoe && !base) {
    rc = missing(&V, "base");
    goto out;
  }
  if (base) {
    m = push_key(&V, "base");
    rc = ccoe ? check_enum(&V, base, bases)
              : verr(&V, "only allowed when operating_model is ccoe");
    pop(&V, m);
    if (rc) goto out;
  }
  if (json_object_set_new(norm, "kind", json_string("Organization")) ||
      json_object_set(norm, "name", oname) || json_object_set(norm, "operating_model", model) ||
      json_object_set(norm, "base", base ? base : json_null())) {
    rc = oom(&V);
    goto out;
  }
  if ((rc = section(&V, doc, norm, "users", user))) goto out;
  if ((rc = section(&V, doc, norm, "teams", team))) goto out;
  if ((rc = section(&V, doc, norm, "applications", application))) goto out;
  if ((rc = section(&V, doc, norm, "grants", grant))) goto out;
  if ((rc = section(&V, doc, norm, "policies", stmt_policy))) goto out;
  gr = member(doc, "guardrails");
  if (!ccoe && json_array_size(gr)) {
    m = push_key(&V, "guardrails");
    rc = verr(&V, "only allowed when operating_model is ccoe");
    pop(&V, m);
    goto out;
  }
  if ((rc = section(&V, doc, norm, "guardrails", stmt_guardrail))) goto out;
  *out = norm;
  norm = NULL;
out:
  json_decref(norm);
  json_decref(V.users);
  json_decref(V.teams);
  json_decref(V.apps);
  json_decref(V.ids);
  return rc;
}

int k_org_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e) {
  return k_walk_load(name, buf, len, k_org_doc_validate, out, e);
}
