/* api_iam.c — /v1/whoami, /v1/users, /v1/tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

/* ---- request decoders (also driven by the fuzz harness) ------------------------ */

static const keel_json_field_t user_create_fields[] = {
    {"name", KEEL_JSON_STRING, 1, 63},
    {"role", KEEL_JSON_STRING, 0, 16},
    {"display_name", KEEL_JSON_STRING, 0, 128},
    {"email", KEEL_JSON_STRING, 0, 254},
    {NULL, 0, 0, 0},
};

static const keel_json_field_t user_update_fields[] = {
    {"version", KEEL_JSON_INT, 1, 0},
    {"role", KEEL_JSON_STRING, 0, 16},
    {"display_name", KEEL_JSON_STRING, 0, 128},
    {"email", KEEL_JSON_STRING, 0, 254},
    {"disabled", KEEL_JSON_BOOL, 0, 0},
    {NULL, 0, 0, 0},
};

static const keel_json_field_t token_create_fields[] = {
    {"name", KEEL_JSON_STRING, 0, 128},
    {"user", KEEL_JSON_STRING, 0, 63},
    {"ttl", KEEL_JSON_STRING, 0, 32},
    {"expires_at", KEEL_JSON_STRING, 0, 64},
    {NULL, 0, 0, 0},
};

int k_decode_user_create(const char *body, size_t len, json_t **out, keel_err_t *e) {
  int rc = keel_json_decode(body, len, user_create_fields, out, e);
  const char *role;
  if (rc) return rc;
  role = keel_json_str(*out, "role");
  if (!k_iam_valid_name(keel_json_str(*out, "name")))
    rc = keel_err_set(e, KEEL_EINVAL,
                      "field 'name': expected 1-63 of a-z 0-9 . _ - starting with a letter or digit");
  else if (role && !k_iam_valid_role(role))
    rc = keel_err_set(e, KEEL_EINVAL, "field 'role': expected one of admin, operator, viewer");
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}

int k_decode_user_update(const char *body, size_t len, json_t **out, keel_err_t *e) {
  int rc = keel_json_decode(body, len, user_update_fields, out, e);
  const char *role;
  if (rc) return rc;
  role = keel_json_str(*out, "role");
  if (role && !k_iam_valid_role(role)) {
    json_decref(*out);
    *out = NULL;
    return keel_err_set(e, KEEL_EINVAL, "field 'role': expected one of admin, operator, viewer");
  }
  return 0;
}

int k_decode_token_create(const char *body, size_t len, int64_t now_ms, json_t **out,
                          int64_t *expires_ms, keel_err_t *e) {
  const char *ttl, *at;
  int64_t v;
  int rc;

  *expires_ms = 0;
  /* An empty body means "a token for me, no expiry". */
  if (len == 0) {
    *out = json_object();
    return *out ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  if ((rc = keel_json_decode(body, len, token_create_fields, out, e))) return rc;
  ttl = keel_json_str(*out, "ttl");
  at = keel_json_str(*out, "expires_at");
  if (ttl && at) {
    rc = keel_err_set(e, KEEL_EINVAL, "give either 'ttl' or 'expires_at', not both");
  } else if (ttl) {
    if (keel_duration_parse(ttl, &v) || v > now_ms)
      rc = keel_err_set(e, KEEL_EINVAL, "field 'ttl': expected a duration such as 30m, 12h, 90d");
    else
      *expires_ms = now_ms + v;
  } else if (at) {
    if (keel_time_parse(at, &v))
      rc = keel_err_set(e, KEEL_EINVAL, "field 'expires_at': expected an RFC 3339 time");
    else if (v <= now_ms)
      rc = keel_err_set(e, KEEL_EINVAL, "field 'expires_at': is in the past");
    else
      *expires_ms = v;
  }
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}

static int decode_fail(k_req_t *req, int rc, keel_err_t *e) { return k_req_fail_err(req, rc, e); }

/* What the caller may do, as the allow statements that name it (directly,
 * by team, partner team, role or "*"), and the denies and guardrails that
 * bind it: a summary, not a proof (`policy explain` decides one request). */
static int names_me(k_server_t *srv, k_req_t *req, const json_t *principals) {
  k_pol_principal_t p;
  size_t i;
  json_t *v;
  char buf[96];
  k_org_principal(srv->org, req->who.user, req->who.role, 0, &p);
  json_array_foreach(principals, i, v) {
    const char *s = json_string_value(v);
    if (!s) continue;
    if (!strcmp(s, "*")) return 1;
    snprintf(buf, sizeof buf, "user:%s", req->who.user);
    if (!strcmp(s, buf)) return 1;
    snprintf(buf, sizeof buf, "role:%s", req->who.role);
    if (!strcmp(s, buf)) return 1;
    for (size_t t = 0; t < p.nteams; t++) {
      snprintf(buf, sizeof buf, "team:%s", p.teams[t]);
      if (!strcmp(s, buf)) return 1;
    }
    for (size_t t = 0; t < p.npartner; t++) {
      snprintf(buf, sizeof buf, "partner:%s", p.partner_of[t]);
      if (!strcmp(s, buf)) return 1;
    }
  }
  return 0;
}

static json_t *whoami_may(k_server_t *srv, k_req_t *req) {
  json_t *all = k_org_statements(srv->org), *out = json_array(), *st;
  size_t i;
  json_array_foreach(all, i, st) {
    if (!names_me(srv, req, json_object_get(st, "principals"))) continue;
    json_array_append_new(out, json_pack("{s:O,s:s,s:O,s:O}", "statement", json_object_get(st, "id"),
                                         "effect",
                                         json_is_true(json_object_get(st, "guardrail"))
                                             ? "guardrail"
                                             : json_string_value(json_object_get(st, "effect")),
                                         "actions", json_object_get(st, "actions"), "resources",
                                         json_object_get(st, "resources")));
  }
  json_decref(all);
  return out;
}

/* ---- whoami ------------------------------------------------------------------------ */

int k_api_whoami(k_server_t *srv, k_req_t *req) {
  json_t *u = NULL, *t = NULL;
  keel_err_t e = {0};
  int rc;
  if ((rc = k_iam_user_get(srv->store, req->who.user_id, &u, &e)) ||
      (rc = k_iam_token_get(srv->store, req->who.token_id, keel_now_ms(), &t, &e))) {
    json_decref(u);
    return k_req_fail_err(req, rc, &e);
  }
  req->out = json_pack("{s:o,s:o,s:o,s:o}", "user", u, "token", t, "teams",
                       k_org_user_teams(srv->org, req->who.user), "organization",
                       k_org_summary(srv->org));
  if (req->out) json_object_set_new(req->out, "may", whoami_may(srv, req));
  return 0;
}

/* ---- users -------------------------------------------------------------------------- */

int k_api_user_create_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_decode_user_create(req->body.data, req->body.len, &req->in, &e);
  (void)srv;
  if (rc) return decode_fail(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "user/%s", keel_json_str(req->in, "name"));
  return 0;
}

int k_api_user_create(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_iam_user_create(srv->store, req->in, keel_now_ms(), &req->out, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  req->status = 201;
  return 0;
}

int k_api_users_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "users");
  return 0;
}

int k_api_user_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = k_iam_user_list(srv->store, k_req_query(req, "cursor"), limit, &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

int k_api_user_one_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "user/%s", req->params[0]);
  return 0;
}

int k_api_user_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_iam_user_get(srv->store, req->params[0], &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

int k_api_user_update_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_decode_user_update(req->body.data, req->body.len, &req->in, &e);
  if (rc) return decode_fail(req, rc, &e);
  return k_api_user_one_decode(srv, req);
}

int k_api_user_update(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_iam_user_update(srv->store, req->params[0], req->in, keel_now_ms(), &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

/* ---- tokens ------------------------------------------------------------------------- */

/* The target of a token request is the user it belongs to: the owner rule
 * in authz (own tokens) needs the owner's id, so look it up here. */
static int target_user(k_server_t *srv, k_req_t *req, const char *user) {
  json_t *u = NULL;
  keel_err_t e = {0};
  int rc;
  if (!user || !strcmp(user, req->who.user) || !strcmp(user, req->who.user_id)) {
    snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", req->who.user_id);
    snprintf(req->target.path, sizeof req->target.path, "user/%s/tokens", req->who.user);
    return 0;
  }
  if ((rc = k_iam_user_get(srv->store, user, &u, &e))) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", keel_json_str(u, "id"));
  snprintf(req->target.path, sizeof req->target.path, "user/%s/tokens", keel_json_str(u, "name"));
  json_decref(u);
  return 0;
}

int k_api_token_create_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int64_t exp;
  int rc = k_decode_token_create(req->body.data, req->body.len, keel_now_ms(), &req->in, &exp, &e);
  if (rc) return decode_fail(req, rc, &e);
  json_object_set_new(req->in, "_expires_ms", json_integer(exp));
  return target_user(srv, req, keel_json_str(req->in, "user"));
}

int k_api_token_create(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_iam_token_create(srv->store, req->target.owner_id, keel_json_str(req->in, "name"),
                              json_integer_value(json_object_get(req->in, "_expires_ms")),
                              keel_now_ms(), &req->out, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* The audit target names the new token, never its secret. */
  snprintf(req->target.path, sizeof req->target.path, "token/%s", keel_json_str(req->out, "id"));
  req->status = 201;
  return 0;
}

int k_api_token_list_decode(k_server_t *srv, k_req_t *req) {
  const char *user = k_req_query(req, "user");
  /* Admins list everyone's tokens unless they filter; others their own. */
  if (!user && !strcmp(req->who.role, "admin")) {
    snprintf(req->target.path, sizeof req->target.path, "tokens");
    return 0;
  }
  return target_user(srv, req, user);
}

int k_api_token_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = k_iam_token_list(srv->store, req->target.owner_id[0] ? req->target.owner_id : NULL,
                        k_req_query(req, "cursor"), limit, keel_now_ms(), &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

int k_api_token_revoke_decode(k_server_t *srv, k_req_t *req) {
  json_t *t = NULL;
  keel_err_t e = {0};
  int rc = k_iam_token_get(srv->store, req->params[0], keel_now_ms(), &t, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "token/%s", req->params[0]);
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", keel_json_str(t, "user_id"));
  json_decref(t);
  return 0;
}

int k_api_token_revoke(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_iam_token_revoke(srv->store, req->params[0], keel_now_ms(), &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}
