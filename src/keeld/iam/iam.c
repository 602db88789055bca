#include "iam/iam.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"

#define USER_COLS "id, name, role, display_name, email, disabled, created_ms, updated_ms, version"
#define TOKEN_COLS \
  "t.id, t.name, t.user_id, u.name, t.created_ms, t.expires_ms, t.revoked_ms"

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

static json_t *time_or_null(const k_val_t *c) {
  return keel_json_time(c->type == K_VAL_INT ? c->i : 0);
}

int k_iam_valid_name(const char *n) {
  size_t len = strlen(n);
  if (len < 1 || len > 63) return 0;
  if (!((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9'))) return 0;
  for (size_t i = 1; i < len; i++)
    if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '.' ||
          n[i] == '_' || n[i] == '-'))
      return 0;
  return 1;
}

int k_iam_valid_role(const char *r) {
  return !strcmp(r, "admin") || !strcmp(r, "operator") || !strcmp(r, "viewer");
}

/* ---- users ------------------------------------------------------------------ */

static json_t *user_json(const k_val_t *c) {
  return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:b,s:o,s:o,s:I}", "id", txt(&c[0]), "kind", "user",
                   "name", txt(&c[1]), "role", txt(&c[2]), "display_name", txt(&c[3]), "email",
                   txt(&c[4]), "disabled", (int)c[5].i, "created_at", time_or_null(&c[6]),
                   "updated_at", time_or_null(&c[7]), "version", (json_int_t)c[8].i);
}

static int one_user_row(void *ud, const k_val_t *c, int n) {
  json_t **out = ud;
  if (n < 9) return 0;
  json_decref(*out);
  *out = user_json(c);
  return 0;
}

int k_iam_user_get(k_store_t *s, const char *key, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(key), K_TEXT(key)};
  int rc;
  *out = NULL;
  rc = k_store_exec(s, "SELECT " USER_COLS " FROM users WHERE id = ? OR name = ?", args, 2,
                    one_user_row, out, e);
  if (rc) return rc;
  if (!*out) return keel_err_set(e, KEEL_ENOENT, "no user '%.64s'", key);
  return 0;
}

static int check_user_fields(const json_t *req, keel_err_t *e) {
  const char *role = keel_json_str(req, "role"), *email = keel_json_str(req, "email");
  if (role && !k_iam_valid_role(role))
    return keel_err_set(e, KEEL_EINVAL,
                        "field 'role': expected one of admin, operator, viewer");
  if (email && *email && (!strchr(email, '@') || strchr(email, ' ')))
    return keel_err_set(e, KEEL_EINVAL, "field 'email': not an email address");
  return 0;
}

int k_iam_user_create(k_store_t *s, const json_t *req, int64_t now_ms, json_t **out,
                      keel_err_t *e) {
  const char *name = keel_json_str(req, "name"), *role = keel_json_str(req, "role");
  const char *dn = keel_json_str(req, "display_name"), *email = keel_json_str(req, "email");
  char id[32];
  int rc;

  *out = NULL;
  if (!name || !k_iam_valid_name(name))
    return keel_err_set(e, KEEL_EINVAL,
                        "field 'name': expected 1-63 of a-z 0-9 . _ - starting with a letter or "
                        "digit");
  if ((rc = check_user_fields(req, e))) return rc;
  keel_random_id(id, sizeof id, "usr_");
  {
    k_val_t args[] = {K_TEXT(id), K_TEXT(name), K_TEXT(role ? role : "viewer"),
                      K_TEXT(dn ? dn : ""), K_TEXT(email ? email : ""), K_INT(now_ms),
                      K_INT(now_ms)};
    rc = k_store_exec(s,
                      "INSERT INTO users(id, name, role, display_name, email, disabled,"
                      " created_ms, updated_ms, version) VALUES (?, ?, ?, ?, ?, 0, ?, ?, 1)",
                      args, 7, NULL, NULL, e);
  }
  if (rc == KEEL_EEXIST) return keel_err_set(e, KEEL_EEXIST, "user '%s' already exists", name);
  if (rc) return rc;
  return k_iam_user_get(s, id, out, e);
}

int k_iam_user_update(k_store_t *s, const char *key, const json_t *req, int64_t now_ms,
                      json_t **out, keel_err_t *e) {
  json_t *cur = NULL, *v;
  const char *role, *dn, *email;
  json_int_t version = json_integer_value(json_object_get(req, "version"));
  int disabled, rc;

  *out = NULL;
  if ((rc = check_user_fields(req, e))) return rc;
  if ((rc = k_iam_user_get(s, key, &cur, e))) return rc;
  if (json_integer_value(json_object_get(cur, "version")) != version) {
    rc = keel_err_set(e, KEEL_ECONFLICT,
                      "user '%s' is at version %lld, not %lld: read it again and retry",
                      keel_json_str(cur, "name"),
                      (long long)json_integer_value(json_object_get(cur, "version")),
                      (long long)version);
    goto out;
  }
  role = keel_json_str(req, "role") ? keel_json_str(req, "role") : keel_json_str(cur, "role");
  dn = keel_json_str(req, "display_name") ? keel_json_str(req, "display_name")
                                          : keel_json_str(cur, "display_name");
  email = keel_json_str(req, "email") ? keel_json_str(req, "email") : keel_json_str(cur, "email");
  v = json_object_get(req, "disabled");
  disabled = v ? json_is_true(v) : json_is_true(json_object_get(cur, "disabled"));
  {
    k_val_t args[] = {K_TEXT(role), K_TEXT(dn), K_TEXT(email), K_INT(disabled), K_INT(now_ms),
                      K_TEXT(keel_json_str(cur, "id")), K_INT(version)};
    /* The version in WHERE makes the check and the write one step. */
    rc = k_store_exec(s,
                      "UPDATE users SET role = ?, display_name = ?, email = ?, disabled = ?,"
                      " updated_ms = ?, version = version + 1 WHERE id = ? AND version = ?",
                      args, 7, NULL, NULL, e);
  }
  if (rc) goto out;
  if (k_store_changes(s) != 1) {
    rc = keel_err_set(e, KEEL_ECONFLICT, "user changed concurrently: read it again and retry");
    goto out;
  }
  rc = k_iam_user_get(s, keel_json_str(cur, "id"), out, e);
out:
  json_decref(cur);
  return rc;
}

typedef struct page page_t;
struct page {
  json_t *items;
  int limit, n;
  char last[80];
  char **next;
  json_t *(*row)(const k_val_t *c, const page_t *p);
  int key_col;
  int64_t now_ms;
};

static int page_row(void *ud, const k_val_t *c, int n) {
  page_t *p = ud;
  json_t *o;
  (void)n;
  if (p->n == p->limit) {
    *p->next = strdup(p->last);
    return 1;
  }
  o = p->row(c, p);
  if (o) json_array_append_new(p->items, o);
  snprintf(p->last, sizeof p->last, "%s", txt(&c[p->key_col]));
  p->n++;
  return 0;
}

static int page_run(k_store_t *s, const char *sql, const k_val_t *args, int nargs, page_t *p,
                    json_t **items, keel_err_t *e) {
  int rc;
  *items = NULL;
  p->items = json_array();
  if (!p->items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(s, sql, args, nargs, page_row, p, e);
  if (rc < 0) {
    json_decref(p->items);
    free(*p->next);
    *p->next = NULL;
    return rc;
  }
  *items = p->items;
  return 0;
}

static json_t *user_page_row(const k_val_t *c, const page_t *p) {
  (void)p;
  return user_json(c);
}

int k_iam_user_list(k_store_t *s, const char *after, int limit, json_t **items, char **next,
                    keel_err_t *e) {
  page_t p = {.limit = limit, .next = next, .row = user_page_row, .key_col = 1};
  k_val_t args[] = {K_TEXT(after ? after : ""), K_INT(limit + 1)};
  *next = NULL;
  return page_run(s, "SELECT " USER_COLS " FROM users WHERE name > ? ORDER BY name LIMIT ?", args,
                  2, &p, items, e);
}

/* ---- tokens ----------------------------------------------------------------- */

static json_t *token_json_at(const k_val_t *c, int64_t now) {
  const char *status = c[6].type == K_VAL_INT                     ? "revoked"
                       : (c[5].type == K_VAL_INT && c[5].i <= now) ? "expired"
                                                                    : "active";
  return json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:s}", "id", txt(&c[0]), "kind", "token",
                   "name", txt(&c[1]), "user_id", txt(&c[2]), "user", txt(&c[3]), "created_at",
                   time_or_null(&c[4]), "expires_at", time_or_null(&c[5]), "revoked_at",
                   time_or_null(&c[6]), "status", status);
}

typedef struct one_tok {
  json_t *o;
  int64_t now;
} one_tok_t;

static int one_token_row(void *ud, const k_val_t *c, int n) {
  one_tok_t *t = ud;
  if (n < 7) return 0;
  t->o = token_json_at(c, t->now);
  return 0;
}

int k_iam_token_get(k_store_t *s, const char *id, int64_t now_ms, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(id)};
  one_tok_t t = {NULL, now_ms};
  int rc;
  *out = NULL;
  rc = k_store_exec(s,
                    "SELECT " TOKEN_COLS " FROM tokens t JOIN users u ON u.id = t.user_id"
                    " WHERE t.id = ?",
                    args, 1, one_token_row, &t, e);
  if (rc) return rc;
  if (!t.o) return keel_err_set(e, KEEL_ENOENT, "no token '%.64s'", id);
  *out = t.o;
  return 0;
}

int k_iam_token_create(k_store_t *s, const char *user, const char *name, int64_t expires_ms,
                       int64_t now_ms, json_t **out, keel_err_t *e) {
  char suffix[17], secret[33], id[24], tok[K_TOKEN_LEN + 1], hash[KEEL_HASH_HEX];
  json_t *u = NULL;
  int rc;

  *out = NULL;
  if ((rc = k_iam_user_get(s, user, &u, e))) return rc;
  keel_random_b32(suffix, 16);
  keel_random_b32(secret, 32);
  snprintf(id, sizeof id, "tok_%s", suffix);
  snprintf(tok, sizeof tok, "keel_%s_%s", suffix, secret);
  keel_hash_hex(hash, secret, 32);
  {
    k_val_t args[] = {K_TEXT(id), K_TEXT(keel_json_str(u, "id")), K_TEXT(name ? name : ""),
                      K_TEXT(hash), K_INT(now_ms), expires_ms ? K_INT(expires_ms) : K_NULLV};
    rc = k_store_exec(s,
                      "INSERT INTO tokens(id, user_id, name, secret_hash, created_ms, expires_ms,"
                      " revoked_ms) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                      args, 6, NULL, NULL, e);
  }
  if (!rc) rc = k_iam_token_get(s, id, now_ms, out, e);
  if (!rc) json_object_set_new(*out, "token", json_string(tok));
  json_decref(u);
  memset(secret, 0, sizeof secret);
  memset(tok, 0, sizeof tok);
  return rc;
}

int k_iam_token_revoke(k_store_t *s, const char *id, int64_t now_ms, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_INT(now_ms), K_TEXT(id)};
  int rc;
  *out = NULL;
  rc = k_store_exec(s, "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                    args, 2, NULL, NULL, e);
  if (rc) return rc;
  return k_iam_token_get(s, id, now_ms, out, e);
}

static json_t *token_page_row(const k_val_t *c, const page_t *p) {
  return token_json_at(c, p->now_ms);
}

int k_iam_token_list(k_store_t *s, const char *user_id, const char *after, int limit,
                     int64_t now_ms, json_t **items, char **next, keel_err_t *e) {
  page_t p = {.limit = limit, .next = next, .row = token_page_row, .key_col = 0, .now_ms = now_ms};
  k_val_t args[] = {K_TEXT(after ? after : ""), K_TEXT(user_id), K_INT(limit + 1)};
  *next = NULL;
  if (user_id)
    return page_run(s,
                    "SELECT " TOKEN_COLS " FROM tokens t JOIN users u ON u.id = t.user_id"
                    " WHERE t.id > ? AND t.user_id = ? ORDER BY t.id LIMIT ?",
                    args, 3, &p, items, e);
  args[1] = args[2];
  return page_run(s,
                  "SELECT " TOKEN_COLS " FROM tokens t JOIN users u ON u.id = t.user_id"
                  " WHERE t.id > ? ORDER BY t.id LIMIT ?",
                  args, 2, &p, items, e);
}

/* ---- authentication --------------------------------------------------------- */

static int b32ok(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '2' && p[i] <= '7'))) return 0;
  return 1;
}

typedef struct authrow {
  int found;
  char hash[KEEL_HASH_HEX];
  int64_t expires, created;
  int revoked, disabled;
  k_principal_t *p;
} authrow_t;

static int auth_row(void *ud, const k_val_t *c, int n) {
  authrow_t *a = ud;
  if (n < 8) return 0;
  a->found = 1;
  snprintf(a->hash, sizeof a->hash, "%s", txt(&c[0]));
  a->expires = c[1].type == K_VAL_INT ? c[1].i : 0;
  a->revoked = c[2].type == K_VAL_INT;
  a->created = c[3].i;
  snprintf(a->p->user_id, sizeof a->p->user_id, "%s", txt(&c[4]));
  snprintf(a->p->user, sizeof a->p->user, "%s", txt(&c[5]));
  snprintf(a->p->role, sizeof a->p->role, "%s", txt(&c[6]));
  a->disabled = (int)c[7].i;
  return 0;
}

int k_iam_authenticate(k_store_t *s, const char *h, int64_t now_ms, k_principal_t *p, char *actor,
                       size_t actor_len, keel_err_t *e) {
  char id[24], hash[KEEL_HASH_HEX];
  const char *tok;
  authrow_t a = {0};
  int rc;

  memset(p, 0, sizeof *p);
  snprintf(actor, actor_len, "anonymous");
  if (!h || !*h) return keel_err_set(e, KEEL_EAUTH, "missing 'Authorization: Bearer <token>'");
  if (strncasecmp(h, "Bearer ", 7) != 0)
    return keel_err_set(e, KEEL_EAUTH, "Authorization header is not a Bearer token");
  tok = h + 7;
  while (*tok == ' ') tok++;
  if (strlen(tok) != K_TOKEN_LEN || strncmp(tok, "keel_", 5) || tok[21] != '_' ||
      !b32ok(tok + 5, 16) || !b32ok(tok + 22, 32))
    return keel_err_set(e, KEEL_EAUTH, "malformed token");
  snprintf(id, sizeof id, "tok_%.16s", tok + 5);
  snprintf(actor, actor_len, "token:%s (unverified)", id);
  a.p = p;
  {
    k_val_t args[] = {K_TEXT(id)};
    rc = k_store_exec(s,
                      "SELECT t.secret_hash, t.expires_ms, t.revoked_ms, t.created_ms, u.id,"
                      " u.name, u.role, u.disabled FROM tokens t JOIN users u ON u.id = t.user_id"
                      " WHERE t.id = ?",
                      args, 1, auth_row, &a, e);
  }
  if (rc) return rc;
  keel_hash_hex(hash, tok + 22, 32);
  if (!a.found || !keel_ct_equal(hash, a.hash, KEEL_HASH_HEX - 1)) {
    memset(p, 0, sizeof *p);
    return keel_err_set(e, KEEL_EAUTH, "unknown token");
  }
  /* A refused token yields no principal, whatever its row said. */
  if (a.revoked || (a.expires && a.expires <= now_ms) || a.disabled) {
    memset(p, 0, sizeof *p);
    if (a.revoked) return keel_err_set(e, KEEL_EAUTH, "token revoked");
    if (a.expires && a.expires <= now_ms) return keel_err_set(e, KEEL_EAUTH, "token expired");
    return keel_err_set(e, KEEL_EAUTH, "user disabled");
  }
  snprintf(p->token_id, sizeof p->token_id, "%s", id);
  p->token_created_ms = a.created;
  snprintf(actor, actor_len, "user:%s", p->user);
  return 0;
}
