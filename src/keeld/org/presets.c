/* presets.c — the statements an organization implies.
 *
 * Built-in statements keep the roles of a fresh keeld meaningful before any
 * organization exists (admin does everything, operator operates, viewer
 * reads); the operating model's preset then grants teams what the model
 * says; grants, the document's own policies and the CCoE's guardrails come
 * last.  Guardrails are denies that no allow overrides (policy.h).
 *
 * Resource paths: docs/org-document.md.  Collections ("hosts", "commands",
 * "users", "agent-tokens") are what list routes are authorized against;
 * the items in a list are filtered one by one against their own paths.
 */
#include <stdio.h>
#include <string.h>

#include "org/presets.h"

/* The actions that change or operate infrastructure, as opposed to reads. */
#define OPERATE "exec:*", "agent:update", "agent:retire", "agent-token:*", "runbook:*", "stack:*", \
                "alert:write", "incident:write", "notify:write", "maintenance:write", \
                "automation:write", "metrics:write"

static json_t *stmt(const char *id, const char *effect, json_t *principals, json_t *actions,
                    json_t *resources, const char *reason) {
  json_t *s = json_pack("{s:s,s:s,s:o,s:o,s:o}", "id", id, "effect", effect, "principals",
                        principals, "actions", actions, "resources", resources);
  if (s && reason) json_object_set_new(s, "reason", json_string(reason));
  return s;
}

static json_t *strs(const char *const *v) {
  json_t *a = json_array();
  for (; a && *v; v++) json_array_append_new(a, json_string(*v));
  return a;
}
#define STRS(...) strs((const char *const[]){__VA_ARGS__, NULL})

static void add(json_t *out, json_t *s) {
  if (s) json_array_append_new(out, s);
}

static void roles(json_t *out) {
  add(out, stmt("builtin:operator-read", "allow", STRS("role:operator"),
                STRS("user:read", "agent:read", "exec:read", "audit:read", "audit:verify",
                     "agent-token:read", "org:read", "policy:read", "runbook:read", "metrics:read",
                     "event:read", "alert:read", "incident:read", "maintenance:read",
                     "automation:read"),
                STRS("**"), NULL));
  add(out, stmt("builtin:operator-operate", "allow", STRS("role:operator"), STRS(OPERATE),
                STRS("**"), NULL));
  add(out, stmt("builtin:viewer-read", "allow", STRS("role:viewer"),
                STRS("user:read", "agent:read", "org:read", "metrics:read", "event:read",
                     "alert:read", "incident:read", "maintenance:read"),
                STRS("**"), NULL));
}

/* with_roles: the operator and viewer roles decide only until an
 * organization is applied; from then on teams and the model do, and only
 * admin (the break-glass account) keeps a role of its own. */
static void builtins(json_t *out, int with_roles) {
  add(out, stmt("builtin:admin", "allow", STRS("role:admin"), STRS("*"), STRS("**"), NULL));
  if (with_roles) roles(out);
  /* Agents and enrollment tokens: authentication already proved who they
   * are and the router checks that an agent acts on its own runs; the
   * statements exist so guardrails apply to them too. */
  add(out, stmt("builtin:agent", "allow", STRS("role:agent"), STRS("agent:poll", "agent:report"),
                STRS("**"), NULL));
  add(out, stmt("builtin:enroll", "allow", STRS("role:enroll"), STRS("agent:enroll"), STRS("**"),
                NULL));
}

/* "team:NAME" principals of every team of that kind (NULL = all; "!KIND":
 * every team not of KIND). */
static json_t *teams_of(const json_t *teams, const char *kind) {
  json_t *a = json_array(), *t;
  const char *name;
  char buf[96];
  int neg = kind && kind[0] == '!';
  if (neg) kind++;
  json_object_foreach((json_t *)teams, name, t) {
    const char *k = json_string_value(json_object_get(t, "kind"));
    if (kind && !neg && (!k || strcmp(k, kind))) continue;
    if (neg && k && !strcmp(k, kind)) continue;
    snprintf(buf, sizeof buf, "team:%s", name);
    json_array_append_new(a, json_string(buf));
  }
  return a;
}

static json_t *app_res(const char *app, const char *env) {
  char buf[200];
  if (env) snprintf(buf, sizeof buf, "app/%s/env/%s/**", app, env);
  else snprintf(buf, sizeof buf, "app/%s/**", app);
  return json_string(buf);
}

/* Every team member may list the collections and read users; what they
 * see in a list is filtered per item.  Partners are not members here: they
 * get only what their grants say, until they expire (grants()). */
static void member_reads(json_t *out, const json_t *teams) {
  json_t *all = teams_of(teams, "!partner");
  if (!json_array_size(all)) {
    json_decref(all);
    return;
  }
  add(out, stmt("preset:members-read", "allow", json_deep_copy(all),
                STRS("user:read", "agent:read", "exec:read", "org:read", "policy:read",
                     "runbook:read", "metrics:read", "event:read", "alert:read", "incident:read",
                     "maintenance:read", "automation:read"),
                STRS("hosts", "commands", "users", "user/*", "org", "runbooks", "metrics", "events",
                     "alerts", "incidents", "maintenance", "automation"),
                NULL));
  /* submitting a command: each of its hosts is judged on its own */
  add(out, stmt("preset:members-submit", "allow", all, STRS("exec:run"), STRS("commands"), NULL));
}

/* Incidents are their owners' in every model: a team acks, resolves and
 * comments on its own incidents and its applications', and keeps its own
 * notification policy and maintenance windows (docs/incidents.md). */
static void incident_owners(json_t *out, const json_t *teams, const json_t *apps) {
  const char *name;
  json_t *t, *a;
  char id[160], who[96], r1[160], r2[160], r3[160];
  json_object_foreach((json_t *)teams, name, t) {
    const char *k = json_string_value(json_object_get(t, "kind"));
    if (k && !strcmp(k, "partner")) continue;
    snprintf(id, sizeof id, "preset:incidents:%s-own", name);
    snprintf(who, sizeof who, "team:%s", name);
    snprintf(r1, sizeof r1, "team/%s/incident/**", name);
    snprintf(r2, sizeof r2, "team/%s/maintenance/**", name);
    snprintf(r3, sizeof r3, "team/%s/notify", name);
    add(out, stmt(id, "allow", STRS(who),
                  STRS("incident:read", "incident:write", "maintenance:read", "maintenance:write",
                       "notify:write"),
                  STRS(r1, r2, r3), NULL));
  }
  json_object_foreach((json_t *)apps, name, a) {
    const char *owner = json_string_value(json_object_get(a, "owner"));
    if (!owner) continue;
    snprintf(id, sizeof id, "preset:incidents:%s-on-%s", owner, name);
    snprintf(who, sizeof who, "team:%s", owner);
    snprintf(r1, sizeof r1, "app/%s/incident/**", name);
    add(out, stmt(id, "allow", STRS(who), STRS("incident:read", "incident:write"), STRS(r1), NULL));
  }
}

static void decentralized(json_t *out, const json_t *teams, const json_t *apps) {
  const char *name;
  json_t *a;
  char id[160], who[96];
  /* the platform team reads everything */
  add(out, stmt("preset:decentralized:platform-read", "allow", teams_of(teams, "platform"),
                STRS("*:read", "audit:verify"), STRS("**"), NULL));
  add(out, stmt("preset:decentralized:platform-org", "allow", teams_of(teams, "platform"),
                STRS("org:write"), STRS("org"), NULL));
  /* application teams operate their own applications, every environment */
  json_object_foreach((json_t *)apps, name, a) {
    const char *owner = json_string_value(json_object_get(a, "owner"));
    if (!owner) continue;
    snprintf(id, sizeof id, "preset:decentralized:%s-operates-%s", owner, name);
    snprintf(who, sizeof who, "team:%s", owner);
    add(out, stmt(id, "allow", STRS(who), STRS("*:read", OPERATE),
                  json_pack("[o]", app_res(name, NULL)), NULL));
  }
}

static void centralized(json_t *out, const json_t *teams, const json_t *apps) {
  const char *name;
  json_t *a;
  char id[160], who[96];
  /* only the platform team changes infrastructure and runs commands */
  add(out, stmt("preset:centralized:platform-all", "allow", teams_of(teams, "platform"), STRS("*"),
                STRS("**"), NULL));
  json_object_foreach((json_t *)apps, name, a) {
    const char *owner = json_string_value(json_object_get(a, "owner"));
    if (!owner) continue;
    snprintf(who, sizeof who, "team:%s", owner);
    snprintf(id, sizeof id, "preset:centralized:%s-reads-%s", owner, name);
    add(out, stmt(id, "allow", STRS(who), STRS("*:read", "release:*"),
                  json_pack("[o]", app_res(name, NULL)), NULL));
    snprintf(id, sizeof id, "preset:centralized:%s-no-prod-changes-%s", owner, name);
    add(out, stmt(id, "deny", STRS(who), STRS(OPERATE, "release:*"),
                  json_pack("[o]", app_res(name, "prod")),
                  "in the centralized model only the platform team changes production"));
  }
}

static void grants(json_t *out, const json_t *gr) {
  const char *key;
  json_t *g;
  char id[200], who[96];
  json_object_foreach((json_t *)gr, key, g) {
    const char *team = json_string_value(json_object_get(g, "team"));
    json_t *res = json_array(), *apps = json_object_get(g, "applications"), *envs;
    json_t *s, *cond;
    size_t i, j;
    json_t *app, *env;
    if (!team) {
      json_decref(res);
      continue;
    }
    envs = json_object_get(g, "environments");
    json_array_foreach(apps, i, app) {
      if (json_array_size(envs)) {
        json_array_foreach(envs, j, env)
            json_array_append_new(res, app_res(json_string_value(app), json_string_value(env)));
      } else {
        json_array_append_new(res, app_res(json_string_value(app), NULL));
      }
    }
    snprintf(id, sizeof id, "grant:%s", key);
    snprintf(who, sizeof who, "partner:%s", team);
    s = stmt(id, "allow", STRS(who), json_deep_copy(json_object_get(g, "actions")), res, NULL);
    cond = json_pack("{s:O}", "expires_at", json_object_get(g, "expires_at"));
    if (s && cond) json_object_set_new(s, "conditions", cond);
    else json_decref(cond);
    add(out, s);
    /* the partner may list what its grant lets it see */
    snprintf(id, sizeof id, "grant:%s:lists", key);
    s = stmt(id, "allow", STRS(who), STRS("agent:read", "exec:read", "exec:run"),
             STRS("hosts", "commands"), NULL);
    cond = json_pack("{s:O}", "expires_at", json_object_get(g, "expires_at"));
    if (s && cond) json_object_set_new(s, "conditions", cond);
    else json_decref(cond);
    add(out, s);
  }
}

/* The document's own statements; ids are prefixed so they cannot collide
 * with generated ones. */
static void own(json_t *out, const json_t *objs, const char *prefix, int guardrail) {
  const char *id;
  json_t *p;
  char buf[160];
  json_object_foreach((json_t *)objs, id, p) {
    json_t *s = json_deep_copy(p);
    if (!s) continue;
    snprintf(buf, sizeof buf, "%s:%s", prefix, id);
    json_object_set_new(s, "id", json_string(buf));
    if (guardrail) {
      json_object_set_new(s, "guardrail", json_true());
      json_object_set_new(s, "effect", json_string("deny"));
    }
    add(out, s);
  }
}

json_t *k_org_preset_statements(const json_t *org, const json_t *teams, const json_t *apps,
                                const json_t *gr, const json_t *policies,
                                const json_t *guardrails) {
  json_t *out = json_array();
  const char *model = json_string_value(json_object_get(org, "operating_model"));
  const char *base = json_string_value(json_object_get(org, "base"));
  if (!out) return NULL;
  builtins(out, model == NULL);
  if (model) {
    const char *m = !strcmp(model, "ccoe") ? (base ? base : "decentralized") : model;
    member_reads(out, teams);
    incident_owners(out, teams, apps);
    if (!strcmp(m, "centralized")) centralized(out, teams, apps);
    else decentralized(out, teams, apps);
    if (!strcmp(model, "ccoe")) {
      /* the CCoE reads everything and owns the organization document */
      add(out, stmt("preset:ccoe:ccoe-read", "allow", teams_of(teams, "ccoe"),
                    STRS("*:read", "audit:verify"), STRS("**"), NULL));
      add(out, stmt("preset:ccoe:ccoe-org", "allow", teams_of(teams, "ccoe"), STRS("org:write"),
                    STRS("org"), NULL));
      /* ...and only the CCoE: the document holds the guardrails, so a team
       * that could apply it could lift them (the base preset lets the
       * platform team write it in the other models). */
      add(out, stmt("preset:ccoe:only-ccoe-writes-org", "deny", teams_of(teams, "!ccoe"),
                    STRS("org:write"), STRS("org"),
                    "in the ccoe model only the CCoE team applies the organization document"));
    }
  }
  grants(out, gr);
  own(out, policies, "policy", 0);
  if (model && !strcmp(model, "ccoe")) own(out, guardrails, "guardrail", 1);
  /* drop statements with no principal (a model without such a team) */
  {
    size_t i = json_array_size(out);
    while (i-- > 0) {
      json_t *p = json_object_get(json_array_get(out, i), "principals");
      if (json_is_array(p) && json_array_size(p) == 0) json_array_remove(out, i);
    }
  }
  return out;
}
