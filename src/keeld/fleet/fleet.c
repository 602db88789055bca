#include "fleet/fleet.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"

/* Enrollment tokens: "kenr_<16 base32>_<32 base32>"; the first part is the
 * id (etk_<16>), only BLAKE2b of the second is stored (as for API tokens). */
#define ENR_PREFIX "kenr_"
#define ENR_LEN (5 + 16 + 1 + 32)

struct k_fleet {
  k_store_t *store;
  const keel_log_t *log;
  int64_t heartbeat_ms;
  k_agent_t **v; /* sorted by id */
  size_t n, cap;
  k_fleet_change_fn on_change;
  void *on_change_ud;
};

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

/* ---- memory ---------------------------------------------------------------- */

static size_t lower_bound(const k_fleet_t *f, const char *id) {
  size_t lo = 0, hi = f->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (strcmp(f->v[mid]->id, id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

k_agent_t *k_fleet_find(k_fleet_t *f, const char *id) {
  size_t i = lower_bound(f, id);
  return i < f->n && !strcmp(f->v[i]->id, id) ? f->v[i] : NULL;
}

size_t k_fleet_count(const k_fleet_t *f) { return f->n; }
k_agent_t *k_fleet_at(k_fleet_t *f, size_t i) { return i < f->n ? f->v[i] : NULL; }
int64_t k_fleet_heartbeat_ms(const k_fleet_t *f) { return f->heartbeat_ms; }

static void agent_free(k_agent_t *a) {
  if (!a) return;
  json_decref(a->tags);
  free(a);
}

static int mem_insert(k_fleet_t *f, k_agent_t *a) {
  size_t i = lower_bound(f, a->id);
  if (f->n == f->cap) {
    size_t ncap = f->cap ? f->cap * 2 : 64;
    k_agent_t **p = realloc(f->v, ncap * sizeof *p);
    if (!p) return KEEL_ENOMEM;
    f->v = p;
    f->cap = ncap;
  }
  memmove(f->v + i + 1, f->v + i, (f->n - i) * sizeof *f->v);
  f->v[i] = a;
  f->n++;
  return 0;
}

static void mem_remove(k_fleet_t *f, const char *id) {
  size_t i = lower_bound(f, id);
  if (i >= f->n || strcmp(f->v[i]->id, id)) return;
  agent_free(f->v[i]);
  memmove(f->v + i, f->v + i + 1, (f->n - i - 1) * sizeof *f->v);
  f->n--;
}

static k_agent_t *agent_new(const char *id, const char *hostname, const char *tags_text,
                            const char *pk_hex, int64_t version, int64_t last_seen) {
  k_agent_t *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  snprintf(a->id, sizeof a->id, "%s", id);
  snprintf(a->hostname, sizeof a->hostname, "%s", hostname);
  a->tags = json_loads(tags_text, 0, NULL);
  if (!json_is_object(a->tags) || keel_unhex(a->pk, sizeof a->pk, pk_hex)) {
    agent_free(a);
    return NULL;
  }
  a->version = version;
  a->persisted_seen_ms = last_seen;
  return a;
}

static int load_row(void *ud, const k_val_t *c, int n) {
  k_fleet_t *f = ud;
  k_agent_t *a;
  if (n < 6) return 0;
  a = agent_new(txt(&c[0]), txt(&c[1]), txt(&c[2]), txt(&c[3]), c[4].i,
                c[5].type == K_VAL_INT ? c[5].i : 0);
  if (!a) {
    keel_log(f->log, KEEL_LOG_ERROR, "fleet: agent %s has an unreadable row; skipped", txt(&c[0]));
    return 0;
  }
  if (mem_insert(f, a)) {
    agent_free(a);
    return KEEL_ENOMEM;
  }
  return 0;
}

int k_fleet_open(k_store_t *s, const keel_log_t *log, int64_t heartbeat_ms, k_fleet_t **out,
                 keel_err_t *e) {
  k_fleet_t *f = calloc(1, sizeof *f);
  int rc;
  *out = NULL;
  if (!f) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  f->store = s;
  f->log = log;
  f->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : 5000;
  rc = k_store_exec(s,
                    "SELECT id, hostname, tags, public_key, version, last_seen_ms FROM agents"
                    " WHERE retired_ms IS NULL ORDER BY id",
                    NULL, 0, load_row, f, e);
  if (rc) {
    k_fleet_close(f);
    return rc;
  }
  *out = f;
  return 0;
}

void k_fleet_close(k_fleet_t *f) {
  if (!f) return;
  for (size_t i = 0; i < f->n; i++) agent_free(f->v[i]);
  free(f->v);
  free(f);
}

/* ---- tags ----------------------------------------------------------------- */

static int check_tags(const json_t *tags, const char *field, keel_err_t *e) {
  const char *k;
  json_t *v;
  if (!tags) return 0;
  if (!json_is_object(tags))
    return keel_err_set(e, KEEL_EINVAL, "field '%s': expected an object of key: value", field);
  if (json_object_size(tags) > 64)
    return keel_err_set(e, KEEL_EINVAL, "field '%s': at most 64 tags", field);
  json_object_foreach((json_t *)tags, k, v) {
    keel_err_t te = {0};
    if (!json_is_string(v))
      return keel_err_set(e, KEEL_EINVAL, "field '%s': tag '%.64s': expected a string", field, k);
    if (keel_tag_check(k, json_string_value(v), &te))
      return keel_err_set(e, KEEL_EINVAL, "field '%s': %s", field, te.msg);
  }
  return 0;
}

/* ---- enrollment tokens ---------------------------------------------------- */

static json_t *etoken_json(const k_val_t *c, int64_t now_ms) {
  int64_t exp = c[5].i, uses_max = c[3].i, uses = c[4].i;
  const char *st = c[6].type == K_VAL_INT ? "revoked"
                   : exp <= now_ms        ? "expired"
                   : uses >= uses_max     ? "used_up"
                                          : "active";
  json_t *tags = json_loads(txt(&c[1]), 0, NULL);
  return json_pack("{s:s,s:s,s:o,s:I,s:I,s:s,s:o,s:o,s:o,s:s}", "id", txt(&c[0]), "kind",
                   "enroll_token", "tags", tags ? tags : json_object(), "uses_max",
                   (json_int_t)uses_max, "uses", (json_int_t)uses, "created_by", txt(&c[7]),
                   "created_at", keel_json_time(c[8].i), "expires_at", keel_json_time(exp),
                   "revoked_at", keel_json_time(c[6].type == K_VAL_INT ? c[6].i : 0), "status", st);
}

#define ETOKEN_COLS \
  "id, tags, secret_hash, uses_max, uses, expires_ms, revoked_ms, created_by, created_ms"

int k_fleet_token_create(k_fleet_t *f, const json_t *tags, int64_t expires_ms, int64_t uses,
                         const char *created_by, int64_t now_ms, json_t **out, keel_err_t *e) {
  char pub[17], secret[33], id[24], token[ENR_LEN + 1], hash[KEEL_HASH_HEX];
  char *tags_text = NULL;
  json_t *empty = NULL;
  int rc;

  *out = NULL;
  if ((rc = check_tags(tags, "tags", e))) return rc;
  if (uses < 1 || uses > 1000000)
    return keel_err_set(e, KEEL_EINVAL, "field 'uses': expected 1..1000000");
  if (!tags) tags = empty = json_object();
  tags_text = keel_json_canonical(tags);
  json_decref(empty);
  if (!tags_text) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  keel_random_b32(pub, 16);
  keel_random_b32(secret, 32);
  snprintf(id, sizeof id, "etk_%s", pub);
  snprintf(token, sizeof token, ENR_PREFIX "%s_%s", pub, secret);
  keel_hash_hex(hash, secret, 32);
  {
    k_val_t args[] = {K_TEXT(id),         K_TEXT(hash),   K_TEXT(tags_text), K_INT(uses),
                      K_TEXT(created_by), K_INT(now_ms), K_INT(expires_ms)};
    rc = k_store_exec(f->store,
                      "INSERT INTO enroll_tokens(id, secret_hash, tags, uses_max, created_by,"
                      " created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      args, 7, NULL, NULL, e);
  }
  if (!rc) {
    k_val_t c[9] = {K_TEXT(id),     K_TEXT(tags_text), K_TEXT(hash),
                    K_INT(uses),    K_INT(0),          K_INT(expires_ms),
                    K_NULLV,        K_TEXT(created_by), K_INT(now_ms)};
    *out = etoken_json(c, now_ms);
    if (!*out || json_object_set_new(*out, "token", json_string(token)))
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  sodium_memzero(secret, sizeof secret);
  sodium_memzero(token, sizeof token);
  free(tags_text);
  return rc;
}

typedef struct list_ctx {
  json_t *items;
  int64_t now_ms;
  int limit, n;
  char last[32];
} list_ctx_t;

static int etoken_list_row(void *ud, const k_val_t *c, int n) {
  list_ctx_t *l = ud;
  if (n < 9) return 0;
  if (l->n == l->limit) return 1; /* one more exists: there is a next page */
  json_array_append_new(l->items, etoken_json(c, l->now_ms));
  snprintf(l->last, sizeof l->last, "%s", txt(&c[0]));
  l->n++;
  return 0;
}

int k_fleet_token_list(k_fleet_t *f, const char *after, int limit, int64_t now_ms, json_t **items,
                       char **next, keel_err_t *e) {
  list_ctx_t l = {json_array(), now_ms, limit, 0, ""};
  k_val_t args[] = {K_TEXT(after ? after : ""), K_INT(limit + 1)};
  int rc;
  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(f->store,
                    "SELECT " ETOKEN_COLS " FROM enroll_tokens WHERE id > ? ORDER BY id LIMIT ?",
                    args, 2, etoken_list_row, &l, e);
  if (rc < 0) {
    json_decref(l.items);
    return rc;
  }
  if (rc == 1) *next = strdup(l.last);
  *items = l.items;
  return 0;
}

typedef struct etok_row {
  int found;
  char hash[KEEL_HASH_HEX];
  int64_t uses_max, uses, expires_ms;
  int revoked;
} etok_row_t;

static int etok_auth_row(void *ud, const k_val_t *c, int n) {
  etok_row_t *r = ud;
  if (n < 9) return 0;
  r->found = 1;
  snprintf(r->hash, sizeof r->hash, "%s", txt(&c[2]));
  r->uses_max = c[3].i;
  r->uses = c[4].i;
  r->expires_ms = c[5].i;
  r->revoked = c[6].type == K_VAL_INT;
  return 0;
}

static int b32_chars(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '2' && s[i] <= '7'))) return 0;
  return 1;
}

int k_fleet_token_check(k_fleet_t *f, const char *h, int64_t now_ms, char token_id[32],
                        keel_err_t *e) {
  const char *t;
  char hash[KEEL_HASH_HEX];
  etok_row_t r = {0};
  int rc;

  token_id[0] = '\0';
  if (!h) return keel_err_set(e, KEEL_EAUTH, "no enrollment token (Authorization: Bearer kenr_...)");
  if (strncmp(h, "Bearer ", 7)) return keel_err_set(e, KEEL_EAUTH, "expected 'Authorization: Bearer <enrollment token>'");
  t = h + 7;
  if (strlen(t) != ENR_LEN || strncmp(t, ENR_PREFIX, 5) || t[21] != '_' || !b32_chars(t + 5, 16) ||
      !b32_chars(t + 22, 32))
    return keel_err_set(e, KEEL_EAUTH, "malformed enrollment token");
  snprintf(token_id, 32, "etk_%.16s", t + 5);
  {
    k_val_t args[] = {K_TEXT(token_id)};
    if ((rc = k_store_exec(f->store, "SELECT " ETOKEN_COLS " FROM enroll_tokens WHERE id = ?",
                           args, 1, etok_auth_row, &r, e)))
      return rc;
  }
  keel_hash_hex(hash, t + 22, 32);
  if (!r.found || !keel_ct_equal(hash, r.hash, KEEL_HASH_HEX - 1))
    return keel_err_set(e, KEEL_EAUTH, "unknown enrollment token");
  if (r.revoked) return keel_err_set(e, KEEL_EAUTH, "enrollment token revoked");
  if (r.expires_ms <= now_ms) return keel_err_set(e, KEEL_EAUTH, "enrollment token expired");
  if (r.uses >= r.uses_max)
    return keel_err_set(e, KEEL_EAUTH, "enrollment token used up (%lld of %lld uses)",
                        (long long)r.uses, (long long)r.uses_max);
  return 0;
}

/* ---- enrollment ------------------------------------------------------------ */

static int tags_of_token(void *ud, const k_val_t *c, int n) {
  json_t **out = ud;
  if (n < 1) return 0;
  *out = json_loads(txt(&c[0]), 0, NULL);
  return 0;
}

static int valid_hostname(const char *h) {
  size_t n = strlen(h);
  if (n < 1 || n > 253) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
          (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '.' || h[i] == '_'))
      return 0;
  return 1;
}

int k_fleet_enroll_tags(k_fleet_t *f, const char *token_id, const json_t *own, json_t **out,
                        keel_err_t *e) {
  json_t *tags = NULL;
  k_val_t args[] = {K_TEXT(token_id)};
  int rc;
  *out = NULL;
  if ((rc = k_store_exec(f->store, "SELECT tags FROM enroll_tokens WHERE id = ?", args, 1,
                         tags_of_token, &tags, e)))
    return rc;
  if (!json_is_object(tags)) {
    json_decref(tags);
    tags = json_object();
  }
  /* The token's tags are the operator's word; the agent's own may add, not override. */
  if (json_is_object(own)) json_object_update_missing(tags, (json_t *)own);
  *out = tags;
  return tags ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

int k_fleet_enroll(k_fleet_t *f, const char *token_id, const json_t *req, int64_t now_ms,
                   json_t **out, keel_err_t *e) {
  const char *pk_hex = keel_json_str(req, "public_key"), *host = keel_json_str(req, "hostname");
  const char *ver = keel_json_str(req, "agent_version");
  const json_t *own = json_object_get(req, "tags"), *inv = json_object_get(req, "inventory");
  uint8_t pk[KEEL_AGENT_PK_BYTES];
  json_t *tags = NULL;
  char id[24], *tags_text = NULL, *inv_text = NULL;
  k_agent_t *a = NULL;
  int rc;

  *out = NULL;
  if (!pk_hex || strlen(pk_hex) != 64 || keel_unhex(pk, sizeof pk, pk_hex))
    return keel_err_set(e, KEEL_EINVAL, "field 'public_key': expected 64 hex digits (Ed25519)");
  if (!host || !valid_hostname(host))
    return keel_err_set(e, KEEL_EINVAL, "field 'hostname': expected 1-253 of A-Z a-z 0-9 . - _");
  if ((rc = check_tags(own, "tags", e))) return rc;
  if (inv && !json_is_object(inv))
    return keel_err_set(e, KEEL_EINVAL, "field 'inventory': expected an object");
  if ((rc = k_fleet_enroll_tags(f, token_id, own, &tags, e))) return rc;
  tags_text = keel_json_canonical(tags);
  inv_text = inv ? keel_json_canonical(inv) : strdup("{}");
  if (!tags_text || !inv_text) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  keel_random_id(id, sizeof id, "agt_");
  {
    k_val_t args[] = {K_TEXT(token_id), K_TEXT(pk_hex)};
    if ((rc = k_store_exec(f->store,
                           "UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ? AND uses < uses_max"
                           " AND NOT EXISTS (SELECT 1 FROM agents WHERE public_key = ?)",
                           args, 2, NULL, NULL, e)))
      goto out;
    if (k_store_changes(f->store) != 1) {
      rc = keel_err_set(e, KEEL_ECONFLICT, "this public key is already enrolled");
      goto out;
    }
  }
  {
    k_val_t args[] = {K_TEXT(id),       K_TEXT(host),     K_TEXT(pk_hex),
                      K_TEXT(tags_text), K_TEXT(inv_text), K_TEXT(ver ? ver : ""),
                      K_TEXT(token_id), K_INT(now_ms),    K_INT(now_ms)};
    if ((rc = k_store_exec(f->store,
                           "INSERT INTO agents(id, hostname, public_key, tags, inventory,"
                           " agent_version, enroll_token_id, created_ms, updated_ms, version)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                           args, 9, NULL, NULL, e)))
      goto out;
  }
  if (!(a = agent_new(id, host, tags_text, pk_hex, 1, 0)) || mem_insert(f, a)) {
    agent_free(a);
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  a->last_seen_ms = now_ms;
  a->online = 1;
  *out = json_pack("{s:s,s:I,s:O}", "agent_id", id, "heartbeat_ms", (json_int_t)f->heartbeat_ms,
                   "tags", tags);
  if (!*out) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  keel_log(f->log, KEEL_LOG_INFO, "fleet: agent %s (%s) enrolled", id, host);
out:
  json_decref(tags);
  free(tags_text);
  free(inv_text);
  return rc;
}

/* ---- request authentication ------------------------------------------------ */

int k_fleet_auth(k_fleet_t *f, const char *h, const char *method, const char *path,
                 const void *body, size_t body_len, int64_t now_ms, k_agent_t **out, char *actor,
                 size_t actor_len, keel_err_t *e) {
  keel_agent_auth_t au;
  k_agent_t *a;
  int rc;

  *out = NULL;
  snprintf(actor, actor_len, "anonymous");
  if ((rc = keel_agent_auth_parse(h, &au, e))) return rc;
  snprintf(actor, actor_len, "agent:%s (unverified)", au.agent_id);
  if (!(a = k_fleet_find(f, au.agent_id)))
    return keel_err_set(e, KEEL_EAUTH, "unknown or retired agent '%s'", au.agent_id);
  if ((rc = keel_agent_verify_request(&au, a->pk, method, path, body, body_len, e))) return rc;
  if (au.ts_ms < now_ms - KEEL_AGENT_SKEW_MS || au.ts_ms > now_ms + KEEL_AGENT_SKEW_MS)
    return keel_err_set(e, KEEL_EAUTH,
                        "request time is %lld ms away from the server's clock (limit %d)",
                        (long long)(au.ts_ms - now_ms), KEEL_AGENT_SKEW_MS);
  /* Replays: a nonce seen recently is refused; once the ring is full, a
   * request older than its oldest entry is refused too, since its nonce
   * may have been forgotten. */
  for (int i = 0; i < a->seen_n; i++)
    if (!strcmp(a->seen[i].nonce, au.nonce))
      return keel_err_set(e, KEEL_EAUTH, "replayed request (nonce seen before)");
  if (a->seen_n == K_FLEET_NONCES && au.ts_ms <= a->seen[a->seen_pos].ts_ms)
    return keel_err_set(e, KEEL_EAUTH, "request too old to prove it is not a replay");
  memcpy(a->seen[a->seen_pos].nonce, au.nonce, sizeof au.nonce);
  a->seen[a->seen_pos].ts_ms = au.ts_ms;
  a->seen_pos = (a->seen_pos + 1) % K_FLEET_NONCES;
  if (a->seen_n < K_FLEET_NONCES) a->seen_n++;
  snprintf(actor, actor_len, "agent:%s", a->id);
  *out = a;
  return 0;
}

/* ---- views and changes ------------------------------------------------------ */

const char *k_fleet_status(const k_fleet_t *f, const k_agent_t *a) {
  return a->online ? "online" : "offline";
}

int k_fleet_match(const k_fleet_t *f, const k_agent_t *a, const keel_selector_t *sel,
                  const char *status) {
  if (status && *status && strcmp(status, k_fleet_status(f, a))) return 0;
  return !sel || keel_selector_match_json(sel, a->id, a->hostname, a->tags);
}

typedef struct one_ctx {
  json_t *row;
} one_ctx_t;

static int agent_row(void *ud, const k_val_t *c, int n) {
  one_ctx_t *o = ud;
  json_t *tags, *inv;
  if (n < 11) return 0;
  tags = json_loads(txt(&c[2]), 0, NULL);
  inv = json_loads(txt(&c[3]), 0, NULL);
  o->row = json_pack("{s:s,s:s,s:s,s:o,s:o,s:s,s:s,s:o,s:o,s:o,s:o,s:I}", "id", txt(&c[0]), "kind",
                     "agent", "hostname", txt(&c[1]), "tags", tags ? tags : json_object(),
                     "inventory", inv ? inv : json_object(), "agent_version", txt(&c[4]),
                     "enroll_token_id", txt(&c[5]), "created_at", keel_json_time(c[6].i),
                     "updated_at", keel_json_time(c[7].i), "last_seen",
                     keel_json_time(c[8].type == K_VAL_INT ? c[8].i : 0), "retired_at",
                     keel_json_time(c[9].type == K_VAL_INT ? c[9].i : 0), "version",
                     (json_int_t)c[10].i);
  return 0;
}

static json_t *mem_json(const k_fleet_t *f, const k_agent_t *a) {
  return json_pack("{s:s,s:s,s:s,s:O,s:s,s:o,s:I}", "id", a->id, "kind", "agent", "hostname",
                   a->hostname, "tags", a->tags, "status", k_fleet_status(f, a), "last_seen",
                   keel_json_time(a->last_seen_ms ? a->last_seen_ms : a->persisted_seen_ms),
                   "version", (json_int_t)a->version);
}

int k_fleet_agent_json(k_fleet_t *f, const char *id, int with_inventory, json_t **out,
                       keel_err_t *e) {
  k_agent_t *a = k_fleet_find(f, id);
  one_ctx_t o = {NULL};
  int rc;

  *out = NULL;
  if (!with_inventory) {
    if (!a) return keel_err_set(e, KEEL_ENOENT, "no agent '%.64s'", id);
    *out = mem_json(f, a);
    return *out ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  {
    k_val_t args[] = {K_TEXT(id)};
    rc = k_store_exec(f->store,
                      "SELECT id, hostname, tags, inventory, agent_version, enroll_token_id,"
                      " created_ms, updated_ms, last_seen_ms, retired_ms, version FROM agents"
                      " WHERE id = ?",
                      args, 1, agent_row, &o, e);
  }
  if (rc) return rc;
  if (!o.row) return keel_err_set(e, KEEL_ENOENT, "no agent '%.64s'", id);
  if (a) {
    /* memory is fresher than the store for liveness and tags */
    json_object_set(o.row, "tags", a->tags);
    json_object_set_new(o.row, "status", json_string(k_fleet_status(f, a)));
    if (a->last_seen_ms) json_object_set_new(o.row, "last_seen", keel_json_time(a->last_seen_ms));
  } else {
    json_object_set_new(o.row, "status", json_string("retired"));
  }
  *out = o.row;
  return 0;
}

int k_fleet_set_tags(k_fleet_t *f, const char *id, const json_t *tags, int64_t version,
                     int64_t now_ms, json_t **out, keel_err_t *e) {
  k_agent_t *a = k_fleet_find(f, id);
  char *text;
  int rc;

  *out = NULL;
  if (!a) return keel_err_set(e, KEEL_ENOENT, "no agent '%.64s'", id);
  if ((rc = check_tags(tags, "tags", e))) return rc;
  if (version != a->version)
    return keel_err_set(e, KEEL_ECONFLICT, "agent %s is at version %lld, not %lld: read it again and retry",
                        a->id, (long long)a->version, (long long)version);
  if (!(text = keel_json_canonical(tags))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  {
    k_val_t args[] = {K_TEXT(text), K_INT(now_ms), K_TEXT(id), K_INT(version)};
    rc = k_store_exec(f->store,
                      "UPDATE agents SET tags = ?, updated_ms = ?, version = version + 1"
                      " WHERE id = ? AND version = ?",
                      args, 4, NULL, NULL, e);
  }
  free(text);
  if (rc) return rc;
  json_decref(a->tags);
  a->tags = json_deep_copy(tags);
  a->version++;
  *out = mem_json(f, a);
  return *out && a->tags ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

int k_fleet_retire(k_fleet_t *f, const char *id, int64_t now_ms, void **waiter, json_t **out,
                   keel_err_t *e) {
  k_agent_t *a = k_fleet_find(f, id);
  int rc;

  *out = NULL;
  *waiter = NULL;
  if (!a) return keel_err_set(e, KEEL_ENOENT, "no agent '%.64s' (or already retired)", id);
  {
    k_val_t args[] = {K_INT(now_ms), K_INT(now_ms), K_TEXT(id)};
    if ((rc = k_store_exec(f->store,
                           "UPDATE agents SET retired_ms = ?, updated_ms = ?, version = version + 1"
                           " WHERE id = ? AND retired_ms IS NULL",
                           args, 3, NULL, NULL, e)))
      return rc;
  }
  *out = mem_json(f, a);
  if (*out) json_object_set_new(*out, "status", json_string("retired"));
  *waiter = a->waiter;
  keel_log(f->log, KEEL_LOG_INFO, "fleet: agent %s (%s) retired", a->id, a->hostname);
  mem_remove(f, id);
  return *out ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

int k_fleet_set_inventory(k_fleet_t *f, k_agent_t *a, const char *hostname,
                          const json_t *inventory, int64_t now_ms, keel_err_t *e) {
  char *text;
  int rc;
  if (!hostname || !valid_hostname(hostname))
    return keel_err_set(e, KEEL_EINVAL, "field 'hostname': expected 1-253 of A-Z a-z 0-9 . - _");
  if (!json_is_object(inventory))
    return keel_err_set(e, KEEL_EINVAL, "field 'inventory': expected an object");
  if (!(text = keel_json_canonical(inventory))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  {
    k_val_t args[] = {K_TEXT(text), K_TEXT(hostname), K_INT(now_ms), K_TEXT(a->id)};
    rc = k_store_exec(f->store,
                      "UPDATE agents SET inventory = ?, hostname = ?, updated_ms = ? WHERE id = ?",
                      args, 4, NULL, NULL, e);
  }
  free(text);
  if (!rc) snprintf(a->hostname, sizeof a->hostname, "%s", hostname);
  return rc;
}

/* ---- liveness ----------------------------------------------------------------- */

void k_fleet_on_change(k_fleet_t *f, k_fleet_change_fn fn, void *ud) {
  f->on_change = fn;
  f->on_change_ud = ud;
}

void k_fleet_seen(k_fleet_t *f, k_agent_t *a, int64_t now_ms) {
  a->last_seen_ms = now_ms;
  if (!a->online) {
    a->online = 1;
    keel_log(f->log, KEEL_LOG_INFO, "fleet: agent %s (%s) online", a->id, a->hostname);
    if (f->on_change) f->on_change(f->on_change_ud, a);
  }
}

void k_fleet_cron(k_fleet_t *f, int64_t now_ms, int64_t persist_ms) {
  int64_t limit = 3 * f->heartbeat_ms;
  int unit = 0;
  keel_err_t e = {0};

  /* transitions first: the hook opens units of its own */
  for (size_t i = 0; i < f->n; i++) {
    k_agent_t *a = f->v[i];
    if (a->online && now_ms - a->last_seen_ms > limit) {
      a->online = 0;
      keel_log(f->log, KEEL_LOG_WARN, "fleet: agent %s (%s) offline: silent for %lld ms", a->id,
               a->hostname, (long long)(now_ms - a->last_seen_ms));
      if (f->on_change) f->on_change(f->on_change_ud, a);
    }
  }
  for (size_t i = 0; i < f->n; i++) {
    k_agent_t *a = f->v[i];
    /* last_seen is history, not state: writing it on every heartbeat would
     * cost a write per agent every few seconds, so it is kept fresh in
     * memory and stored at most every persist_ms (and on status changes
     * as seen by the next cron). */
    if (a->last_seen_ms && a->last_seen_ms - a->persisted_seen_ms >= persist_ms) {
      k_val_t args[] = {K_INT(a->last_seen_ms), K_TEXT(a->id)};
      if (!unit) {
        if (k_store_unit_begin(f->store, &e)) break;
        unit = 1;
      }
      if (k_store_exec(f->store, "UPDATE agents SET last_seen_ms = ? WHERE id = ?", args, 2, NULL,
                       NULL, &e))
        break;
      a->persisted_seen_ms = a->last_seen_ms;
    }
  }
  if (unit) k_store_unit_end(f->store, e.code == 0, NULL);
  if (e.code) keel_log(f->log, KEEL_LOG_ERROR, "fleet: storing last_seen: %s", e.msg);
}

/* ---- labels ------------------------------------------------------------------- */

static int label_cmp(const void *a, const void *b) {
  return strcmp(((const k_label_t *)a)->name, ((const k_label_t *)b)->name);
}

void k_fleet_host_labels(const k_agent_t *a, k_host_labels_t *out) {
  const char *k;
  json_t *v;
  out->n = 0;
  json_object_foreach(a->tags, k, v) {
    char *n;
    if (out->n + 2 >= K_HOST_LABELS_MAX || !json_is_string(v) || !json_string_length(v)) continue;
    n = out->names[out->n];
    snprintf(n, sizeof out->names[0], "%s", k);
    for (char *p = n; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
            (p > n && *p >= '0' && *p <= '9')))
        *p = '_';
    /* reserved and keeld's own names are not tags */
    if (!strncmp(n, "__", 2) || !strcmp(n, "instance") || !strcmp(n, "agent_id")) continue;
    out->v[out->n++] = (k_label_t){n, json_string_value(v)};
  }
  out->v[out->n++] = (k_label_t){"agent_id", a->id};
  out->v[out->n++] = (k_label_t){"instance", a->hostname};
  /* stable: of two tags that sanitize to one name, the first stays first */
  for (size_t i = 1; i < out->n; i++)
    for (size_t j = i; j > 0 && label_cmp(&out->v[j - 1], &out->v[j]) > 0; j--) {
      k_label_t t = out->v[j];
      out->v[j] = out->v[j - 1];
      out->v[j - 1] = t;
    }
  for (size_t i = 1; i < out->n;)
    if (!strcmp(out->v[i].name, out->v[i - 1].name)) {
      memmove(&out->v[i], &out->v[i + 1], (out->n - i - 1) * sizeof out->v[0]);
      out->n--;
    } else {
      i++;
    }
}

json_t *k_fleet_labels_json(const k_agent_t *a) {
  k_host_labels_t *hl = malloc(sizeof *hl);
  json_t *o = json_object();
  if (!hl || !o) goto fail;
  k_fleet_host_labels(a, hl);
  for (size_t i = 0; i < hl->n; i++)
    if (json_object_set_new(o, hl->v[i].name, json_string(hl->v[i].value))) goto fail;
  free(hl);
  return o;
fail:
  free(hl);
  json_decref(o);
  return NULL;
}
