/* Unit tests for keeld's users and tokens (iam/iam.h): names and roles,
 * create / duplicate / optimistic update, token format, hash-only storage,
 * and authentication outcomes with their distinct reasons. */
#include "keeld_testutil.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "iam/iam.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "store/store.h"

#define NOW 1790000000000LL /* a fixed clock */

typedef struct fx {
  char dir[256];
  k_store_t *s;
} fx_t;

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  keel_err_t e = {0};
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  if (k_store_open(f->dir, 1, NULL, &f->s, &e)) {
    print_error("open: %s\n", e.msg);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  k_store_close(f->s);
  kt_rmrf(f->dir);
  free(f);
  return 0;
}

static int group_setup(void **state) { return keel_crypto_init() == 0 ? 0 : -1; }

static void unit_begin(k_store_t *s) {
  keel_err_t e = {0};
  if (k_store_unit_begin(s, &e)) fail_msg("unit_begin: %s", e.msg);
}

static void unit_end_flush(k_store_t *s, int ok) {
  keel_err_t e = {0};
  if (k_store_unit_end(s, ok, &e)) fail_msg("unit_end: %s", e.msg);
  if (k_store_flush(s, &e)) fail_msg("flush: %s", e.msg);
}

static json_t *jparse(const char *text) {
  json_error_t je;
  json_t *v = json_loads(text, 0, &je);
  if (!v) fail_msg("bad test JSON %s: %s", text, je.text);
  return v;
}

/* Creates a user in a unit of its own; returns rc, *out the user or NULL. */
static int user_create(fx_t *f, const char *req_json, json_t **out, keel_err_t *e) {
  json_t *req = jparse(req_json), *u = NULL;
  int rc;
  unit_begin(f->s);
  rc = k_iam_user_create(f->s, req, NOW, &u, e);
  unit_end_flush(f->s, rc == 0);
  json_decref(req);
  if (out)
    *out = u;
  else
    json_decref(u);
  return rc;
}

static json_t *user_ok(fx_t *f, const char *req_json) {
  json_t *u = NULL;
  keel_err_t e = {0};
  if (user_create(f, req_json, &u, &e)) fail_msg("create %s: %s", req_json, e.msg);
  return u;
}

/* Creates a token; returns the secret string (caller frees) and the id. */
static char *token_ok(fx_t *f, const char *user, int64_t expires_ms, char id[32]) {
  json_t *t = NULL;
  keel_err_t e = {0};
  char *secret;
  unit_begin(f->s);
  if (k_iam_token_create(f->s, user, "ci", expires_ms, NOW, &t, &e))
    fail_msg("token create: %s", e.msg);
  unit_end_flush(f->s, 1);
  secret = strdup(keel_json_str(t, "token"));
  snprintf(id, 32, "%s", keel_json_str(t, "id"));
  json_decref(t);
  return secret;
}

static int b32(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '2' && p[i] <= '7'))) return 0;
  return 1;
}

/* ---- names and roles ------------------------------------------------------------ */

static void test_valid_name(void **state) {
  char n63[64], n64[65];
  (void)state;
  memset(n63, 'a', 63);
  n63[63] = '\0';
  memset(n64, 'a', 64);
  n64[64] = '\0';
  /* [a-z0-9][a-z0-9._-]{0,62} */
  static const char *ok[] = {"a", "0", "alice", "a.b_c-d", "9lives", "a-", "a.", "a_", "x..y"};
  static const char *bad[] = {"",    "A", "Alice",      "-a",  ".a",  "_a", "a b",   "a/b",
                              "a@b", "é", "al\xc3\xa9", "a\n", "a:b", " a", "a\x7f", "tab\tx"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    if (!k_iam_valid_name(ok[i])) fail_msg("'%s' should be a valid name", ok[i]);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (k_iam_valid_name(bad[i])) fail_msg("'%s' should not be a valid name", bad[i]);
  assert_true(k_iam_valid_name(n63));
  assert_false(k_iam_valid_name(n64));
}

static void test_valid_role(void **state) {
  (void)state;
  assert_true(k_iam_valid_role("admin"));
  assert_true(k_iam_valid_role("operator"));
  assert_true(k_iam_valid_role("viewer"));
  assert_false(k_iam_valid_role(""));
  assert_false(k_iam_valid_role("Admin"));
  assert_false(k_iam_valid_role("root"));
  assert_false(k_iam_valid_role("admin "));
}

/* ---- users ------------------------------------------------------------------------ */

static void test_user_create(void **state) {
  fx_t *f = *state;
  json_t *u = user_ok(f,
                      "{\"name\": \"alice\", \"role\": \"operator\", \"display_name\": "
                      "\"Alice\", \"email\": \"alice@example.com\"}");
  json_t *g = NULL;
  keel_err_t e = {0};
  assert_string_equal(keel_json_str(u, "kind"), "user");
  assert_string_equal(keel_json_str(u, "name"), "alice");
  assert_string_equal(keel_json_str(u, "role"), "operator");
  assert_string_equal(keel_json_str(u, "display_name"), "Alice");
  assert_string_equal(keel_json_str(u, "email"), "alice@example.com");
  assert_true(json_is_false(json_object_get(u, "disabled")));
  assert_int_equal(json_integer_value(json_object_get(u, "version")), 1);
  assert_non_null(keel_json_str(u, "created_at"));
  assert_int_equal(strncmp(keel_json_str(u, "id"), "usr_", 4), 0);

  /* get by id and by name */
  assert_int_equal(k_iam_user_get(f->s, keel_json_str(u, "id"), &g, &e), 0);
  assert_true(json_equal(g, u));
  json_decref(g);
  assert_int_equal(k_iam_user_get(f->s, "alice", &g, &e), 0);
  assert_true(json_equal(g, u));
  json_decref(g);
  assert_int_equal(k_iam_user_get(f->s, "nobody", &g, &e), KEEL_ENOENT);
  assert_null(g);
  json_decref(u);

  /* role defaults to viewer */
  u = user_ok(f, "{\"name\": \"bob\"}");
  assert_string_equal(keel_json_str(u, "role"), "viewer");
  assert_string_equal(keel_json_str(u, "display_name"), "");
  json_decref(u);
}

static void test_user_create_invalid(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  json_t *u = (json_t *)1;
  assert_int_equal(user_create(f, "{\"name\": \"Alice\"}", &u, &e), KEEL_EINVAL);
  assert_null(u);
  assert_non_null(strstr(e.msg, "name"));
  assert_int_equal(user_create(f, "{\"name\": \"-x\"}", NULL, &e), KEEL_EINVAL);
  assert_int_equal(user_create(f, "{}", NULL, &e), KEEL_EINVAL);
  assert_int_equal(user_create(f, "{\"name\": \"carol\", \"role\": \"root\"}", NULL, &e),
                   KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "role"));
  assert_int_equal(user_create(f, "{\"name\": \"carol\", \"email\": \"no-at-sign\"}", NULL, &e),
                   KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "email"));
  /* nothing of the refused ones was stored */
  assert_int_equal(k_iam_user_get(f->s, "carol", &u, &e), KEEL_ENOENT);
}

static void test_user_duplicate(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  json_t *items = NULL;
  char *next = NULL;
  json_decref(user_ok(f, "{\"name\": \"alice\"}"));
  assert_int_equal(user_create(f, "{\"name\": \"alice\", \"role\": \"admin\"}", NULL, &e),
                   KEEL_EEXIST);
  assert_non_null(strstr(e.msg, "alice"));
  assert_non_null(strstr(e.msg, "already exists"));
  /* still one alice, unchanged */
  assert_int_equal(k_iam_user_list(f->s, "", 10, &items, &next, &e), 0);
  assert_int_equal(json_array_size(items), 1);
  assert_string_equal(keel_json_str(json_array_get(items, 0), "role"), "viewer");
  assert_null(next);
  json_decref(items);
}

static int update(fx_t *f, const char *who, const char *req_json, int64_t now, json_t **out,
                  keel_err_t *e) {
  json_t *req = jparse(req_json), *u = NULL;
  int rc;
  unit_begin(f->s);
  rc = k_iam_user_update(f->s, who, req, now, &u, e);
  unit_end_flush(f->s, rc == 0);
  json_decref(req);
  if (out)
    *out = u;
  else
    json_decref(u);
  return rc;
}

static void test_user_update_versions(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  json_t *u = NULL;
  json_decref(user_ok(f, "{\"name\": \"alice\"}"));
  assert_int_equal(
      update(f, "alice", "{\"version\": 1, \"role\": \"operator\"}", NOW + 1000, &u, &e), 0);
  assert_int_equal(json_integer_value(json_object_get(u, "version")), 2);
  assert_string_equal(keel_json_str(u, "role"), "operator");
  json_decref(u);

  /* stale version */
  memset(&e, 0, sizeof e);
  assert_int_equal(update(f, "alice", "{\"version\": 1, \"role\": \"admin\"}", NOW + 2000, &u, &e),
                   KEEL_ECONFLICT);
  assert_null(u);
  assert_non_null(strstr(e.msg, "version"));
  /* a version from the future, and none at all */
  assert_int_equal(update(f, "alice", "{\"version\": 9, \"role\": \"admin\"}", NOW, NULL, &e),
                   KEEL_ECONFLICT);
  assert_int_equal(update(f, "alice", "{\"role\": \"admin\"}", NOW, NULL, &e), KEEL_ECONFLICT);
  /* no change was written by the refused updates */
  assert_int_equal(k_iam_user_get(f->s, "alice", &u, &e), 0);
  assert_string_equal(keel_json_str(u, "role"), "operator");
  assert_int_equal(json_integer_value(json_object_get(u, "version")), 2);
  json_decref(u);
  /* the fresh version works; fields not sent are kept */
  assert_int_equal(update(f, "alice", "{\"version\": 2, \"display_name\": \"A\"}", NOW, &u, &e), 0);
  assert_string_equal(keel_json_str(u, "role"), "operator");
  assert_string_equal(keel_json_str(u, "display_name"), "A");
  assert_int_equal(json_integer_value(json_object_get(u, "version")), 3);
  json_decref(u);
  /* unknown user, invalid role */
  assert_int_equal(update(f, "nobody", "{\"version\": 1}", NOW, NULL, &e), KEEL_ENOENT);
  assert_int_equal(update(f, "alice", "{\"version\": 3, \"role\": \"god\"}", NOW, NULL, &e),
                   KEEL_EINVAL);
}

static void test_user_list_pages(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  json_t *items = NULL;
  char *next = NULL;
  const char *names[] = {"dave", "alice", "carol", "bob", "erin"};
  for (int i = 0; i < 5; i++) {
    char req[64];
    snprintf(req, sizeof req, "{\"name\": \"%s\"}", names[i]);
    json_decref(user_ok(f, req));
  }
  assert_int_equal(k_iam_user_list(f->s, "", 2, &items, &next, &e), 0);
  assert_int_equal(json_array_size(items), 2);
  assert_string_equal(keel_json_str(json_array_get(items, 0), "name"), "alice");
  assert_string_equal(keel_json_str(json_array_get(items, 1), "name"), "bob");
  assert_non_null(next);
  json_decref(items);
  {
    char *cursor = next;
    assert_int_equal(k_iam_user_list(f->s, cursor, 10, &items, &next, &e), 0);
    free(cursor);
  }
  assert_int_equal(json_array_size(items), 3);
  assert_string_equal(keel_json_str(json_array_get(items, 0), "name"), "carol");
  assert_null(next);
  json_decref(items);
}

/* ---- tokens -------------------------------------------------------------------------- */

typedef struct blob {
  char *p;
  size_t n;
} blob_t;

static int dump_cb(void *ud, const k_val_t *c, int n) {
  blob_t *b = ud;
  for (int i = 0; i < n; i++) {
    char tmp[64];
    const char *s = tmp;
    if (c[i].type == K_VAL_TEXT)
      s = c[i].s;
    else
      snprintf(tmp, sizeof tmp, "%lld", (long long)c[i].i);
    size_t l = strlen(s);
    b->p = realloc(b->p, b->n + l + 2);
    memcpy(b->p + b->n, s, l);
    b->n += l;
    b->p[b->n++] = '|';
    b->p[b->n] = '\0';
  }
  return 0;
}

/* Every bit of the files under dir/keel.db*, concatenated. */
static blob_t read_db_files(const char *dir) {
  static const char *suffix[] = {"", "-wal", "-journal", "-shm"};
  blob_t b = {calloc(1, 1), 0};
  for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
    char path[400], buf[65536];
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "%s/keel.db%s", dir, suffix[i]);
    fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
      b.p = realloc(b.p, b.n + (size_t)n + 1);
      memcpy(b.p + b.n, buf, (size_t)n);
      b.n += (size_t)n;
    }
    close(fd);
  }
  return b;
}

static void test_token_create_format_and_hash_only(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  json_t *u = user_ok(f, "{\"name\": \"alice\"}"), *t = NULL;
  const char *tok, *id;
  char hash[KEEL_HASH_HEX];
  blob_t rows = {calloc(1, 1), 0}, files;

  unit_begin(f->s);
  assert_int_equal(k_iam_token_create(f->s, "alice", "ci", 0, NOW, &t, &e), 0);
  unit_end_flush(f->s, 1);
  assert_int_equal(k_store_sync_wait(f->s, &e), 0);
  tok = keel_json_str(t, "token");
  id = keel_json_str(t, "id");
  assert_non_null(tok);
  assert_non_null(id);
  /* keel_<16 base32>_<32 base32>, id tok_<the same 16> */
  assert_int_equal(strlen(tok), K_TOKEN_LEN);
  assert_int_equal(strncmp(tok, "keel_", 5), 0);
  assert_true(b32(tok + 5, 16));
  assert_int_equal(tok[21], '_');
  assert_true(b32(tok + 22, 32));
  assert_int_equal(strlen(id), 20);
  assert_int_equal(strncmp(id, "tok_", 4), 0);
  assert_memory_equal(id + 4, tok + 5, 16);
  assert_string_equal(keel_json_str(t, "status"), "active");
  assert_string_equal(keel_json_str(t, "user"), "alice");
  assert_string_equal(keel_json_str(t, "user_id"), keel_json_str(u, "id"));
  assert_true(json_is_null(json_object_get(t, "expires_at")));
  assert_true(json_is_null(json_object_get(t, "revoked_at")));

  /* the secret is nowhere in the rows, only its hash */
  assert_int_equal(k_store_exec(f->s, "SELECT * FROM tokens", NULL, 0, dump_cb, &rows, &e), 0);
  assert_int_equal(k_store_exec(f->s, "SELECT * FROM users", NULL, 0, dump_cb, &rows, &e), 0);
  assert_int_equal(k_store_exec(f->s, "SELECT * FROM meta", NULL, 0, dump_cb, &rows, &e), 0);
  assert_null(strstr(rows.p, tok + 22));
  assert_null(strstr(rows.p, tok));
  keel_hash_hex(hash, tok + 22, 32);
  assert_non_null(strstr(rows.p, hash));
  assert_non_null(strstr(rows.p, id));
  /* ... nor in the bytes of the database files */
  files = read_db_files(f->dir);
  assert_true(files.n > 0);
  assert_null(memmem(files.p, files.n, tok + 22, 32));
  assert_non_null(memmem(files.p, files.n, hash, 64));
  /* get shows no secret */
  {
    json_t *g = NULL;
    assert_int_equal(k_iam_token_get(f->s, id, NOW, &g, &e), 0);
    assert_null(json_object_get(g, "token"));
    char *d = json_dumps(g, 0);
    assert_null(strstr(d, tok + 22));
    free(d);
    json_decref(g);
  }
  /* two tokens differ */
  {
    char id2[32];
    char *tok2 = token_ok(f, "alice", 0, id2);
    assert_string_not_equal(tok2, tok);
    assert_string_not_equal(id2, id);
    free(tok2);
  }
  /* unknown user */
  {
    json_t *x = NULL;
    unit_begin(f->s);
    assert_int_equal(k_iam_token_create(f->s, "nobody", "x", 0, NOW, &x, &e), KEEL_ENOENT);
    unit_end_flush(f->s, 0);
    assert_null(x);
  }
  free(rows.p);
  free(files.p);
  json_decref(t);
  json_decref(u);
}

/* ---- authentication -------------------------------------------------------------------- */

typedef struct authres {
  int rc;
  keel_err_t e;
  k_principal_t p;
  char actor[96];
} authres_t;

static authres_t auth(fx_t *f, const char *header, int64_t now) {
  authres_t r;
  memset(&r, 0, sizeof r);
  memset(&r.p, 0x5a, sizeof r.p); /* must be overwritten */
  r.rc = k_iam_authenticate(f->s, header, now, &r.p, r.actor, sizeof r.actor, &r.e);
  return r;
}

static void expect_auth_fail(fx_t *f, const char *header, int64_t now, const char *reason,
                             const char *actor) {
  authres_t r = auth(f, header, now);
  if (r.rc != KEEL_EAUTH)
    fail_msg("'%s': rc %d, expected KEEL_EAUTH (%s)", header ? header : "(null)", r.rc, r.e.msg);
  if (strcmp(r.e.msg, reason))
    fail_msg("'%s': reason '%s', expected '%s'", header ? header : "(null)", r.e.msg, reason);
  assert_string_equal(r.actor, actor);
  /* no principal leaks out of a failure */
  assert_string_equal(r.p.user, "");
  assert_string_equal(r.p.token_id, "");
}

static void bearer(char *out, size_t n, const char *tok) { snprintf(out, n, "Bearer %s", tok); }

static void test_authenticate(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  char id[32], id_exp[32], id_rev[32], id_bob[32], h[128], actor[96];
  json_t *u = user_ok(f, "{\"name\": \"alice\", \"role\": \"operator\"}"), *bob, *t = NULL;
  char *tok = token_ok(f, "alice", 0, id);
  char *tok_exp = token_ok(f, "alice", NOW + 60000, id_exp);
  char *tok_rev = token_ok(f, "alice", 0, id_rev);
  char *tok_bob;
  bob = user_ok(f, "{\"name\": \"bob\"}");
  tok_bob = token_ok(f, "bob", 0, id_bob);

  /* ok */
  bearer(h, sizeof h, tok);
  {
    authres_t r = auth(f, h, NOW);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.p.user, "alice");
    assert_string_equal(r.p.role, "operator");
    assert_string_equal(r.p.user_id, keel_json_str(u, "id"));
    assert_string_equal(r.p.token_id, id);
    assert_int_equal(r.p.token_created_ms, NOW);
    assert_string_equal(r.actor, "user:alice");
  }
  /* scheme is case-insensitive, extra spaces before the token are fine */
  snprintf(h, sizeof h, "bearer   %s", tok);
  assert_int_equal(auth(f, h, NOW).rc, 0);

  /* missing / not bearer / malformed */
  expect_auth_fail(f, NULL, NOW, "missing 'Authorization: Bearer <token>'", "anonymous");
  expect_auth_fail(f, "", NOW, "missing 'Authorization: Bearer <token>'", "anonymous");
  snprintf(h, sizeof h, "Basic %s", tok);
  expect_auth_fail(f, h, NOW, "Authorization header is not a Bearer token", "anonymous");
  expect_auth_fail(f, "Bearer ", NOW, "malformed token", "anonymous");
  expect_auth_fail(f, "Bearer keel_short", NOW, "malformed token", "anonymous");
  {
    char bad[128];
    snprintf(bad, sizeof bad, "Bearer %s", tok);
    bad[7 + 10] = 'A'; /* upper case is not base32 here */
    expect_auth_fail(f, bad, NOW, "malformed token", "anonymous");
    snprintf(bad, sizeof bad, "Bearer %sx", tok); /* too long */
    expect_auth_fail(f, bad, NOW, "malformed token", "anonymous");
    snprintf(bad, sizeof bad, "Bearer %s", tok);
    bad[7 + 21] = '-';
    expect_auth_fail(f, bad, NOW, "malformed token", "anonymous");
    snprintf(bad, sizeof bad, "Bearer %s", tok);
    memcpy(bad + 7, "kell_", 5);
    expect_auth_fail(f, bad, NOW, "malformed token", "anonymous");
    snprintf(bad, sizeof bad, "Bearer %s", tok);
    bad[7 + 30] = '1'; /* 0, 1, 8, 9 are not base32 */
    expect_auth_fail(f, bad, NOW, "malformed token", "anonymous");
  }

  /* unknown: a well-formed id nobody has, or the right id with a wrong secret */
  {
    char bad[128], want_actor[96];
    snprintf(bad, sizeof bad, "Bearer keel_aaaaaaaaaaaaaaaa_%.32s", tok + 22);
    expect_auth_fail(f, bad, NOW, "unknown token", "token:tok_aaaaaaaaaaaaaaaa (unverified)");
    snprintf(bad, sizeof bad, "Bearer %s", tok);
    bad[7 + 22] = bad[7 + 22] == 'a' ? 'b' : 'a';
    snprintf(want_actor, sizeof want_actor, "token:%s (unverified)", id);
    expect_auth_fail(f, bad, NOW, "unknown token", want_actor);
    /* another user's id with this secret */
    snprintf(bad, sizeof bad, "Bearer keel_%s_%.32s", id_bob + 4, tok + 22);
    snprintf(want_actor, sizeof want_actor, "token:%s (unverified)", id_bob);
    expect_auth_fail(f, bad, NOW, "unknown token", want_actor);
  }

  /* expired: valid until, not at, its expiry */
  bearer(h, sizeof h, tok_exp);
  assert_int_equal(auth(f, h, NOW + 59999).rc, 0);
  snprintf(actor, sizeof actor, "token:%s (unverified)", id_exp);
  expect_auth_fail(f, h, NOW + 60000, "token expired", actor);
  {
    json_t *g = NULL;
    assert_int_equal(k_iam_token_get(f->s, id_exp, NOW + 60000, &g, &e), 0);
    assert_string_equal(keel_json_str(g, "status"), "expired");
    json_decref(g);
  }

  /* revoked */
  bearer(h, sizeof h, tok_rev);
  assert_int_equal(auth(f, h, NOW).rc, 0);
  unit_begin(f->s);
  assert_int_equal(k_iam_token_revoke(f->s, id_rev, NOW + 5, &t, &e), 0);
  unit_end_flush(f->s, 1);
  assert_string_equal(keel_json_str(t, "status"), "revoked");
  json_decref(t);
  snprintf(actor, sizeof actor, "token:%s (unverified)", id_rev);
  expect_auth_fail(f, h, NOW + 10, "token revoked", actor);
  /* revoking again keeps the first revocation time */
  unit_begin(f->s);
  assert_int_equal(k_iam_token_revoke(f->s, id_rev, NOW + 99999, &t, &e), 0);
  unit_end_flush(f->s, 1);
  {
    json_t *t1 = NULL;
    assert_int_equal(k_iam_token_get(f->s, id_rev, NOW, &t1, &e), 0);
    assert_string_equal(keel_json_str(t1, "revoked_at"), keel_json_str(t, "revoked_at"));
    json_decref(t1);
  }
  json_decref(t);
  unit_begin(f->s);
  assert_int_equal(k_iam_token_revoke(f->s, "tok_nonexistent", NOW, &t, &e), KEEL_ENOENT);
  unit_end_flush(f->s, 0);

  /* disabled user: its tokens stop working; enabled again, they work */
  bearer(h, sizeof h, tok_bob);
  assert_int_equal(auth(f, h, NOW).rc, 0);
  assert_int_equal(update(f, "bob", "{\"version\": 1, \"disabled\": true}", NOW, NULL, &e), 0);
  snprintf(actor, sizeof actor, "token:%s (unverified)", id_bob);
  expect_auth_fail(f, h, NOW, "user disabled", actor);
  assert_int_equal(update(f, "bob", "{\"version\": 2, \"disabled\": false}", NOW, NULL, &e), 0);
  assert_int_equal(auth(f, h, NOW).rc, 0);

  /* role changes apply to existing tokens at once */
  assert_int_equal(update(f, "alice", "{\"version\": 1, \"role\": \"viewer\"}", NOW, NULL, &e), 0);
  bearer(h, sizeof h, tok);
  assert_string_equal(auth(f, h, NOW).p.role, "viewer");

  /* no failure reason or actor ever carries a secret */
  {
    const char *hdrs[] = {tok, tok_exp, tok_rev};
    for (int i = 0; i < 3; i++) {
      char hh[128];
      authres_t r;
      bearer(hh, sizeof hh, hdrs[i]);
      r = auth(f, hh, NOW + 10000000);
      assert_null(strstr(r.actor, hdrs[i] + 22));
      assert_null(strstr(r.e.msg, hdrs[i] + 22));
    }
  }

  /* token list: per user, all, paged */
  {
    json_t *items = NULL;
    char *next = NULL;
    assert_int_equal(k_iam_token_list(f->s, keel_json_str(u, "id"), "", 10, NOW, &items, &next, &e),
                     0);
    assert_int_equal(json_array_size(items), 3);
    assert_null(next);
    for (size_t i = 0; i < json_array_size(items); i++)
      assert_null(json_object_get(json_array_get(items, i), "token"));
    json_decref(items);
    assert_int_equal(k_iam_token_list(f->s, NULL, "", 3, NOW, &items, &next, &e), 0);
    assert_int_equal(json_array_size(items), 3);
    assert_non_null(next);
    json_decref(items);
    {
      char *c = next;
      assert_int_equal(k_iam_token_list(f->s, NULL, c, 3, NOW, &items, &next, &e), 0);
      free(c);
    }
    assert_int_equal(json_array_size(items), 1);
    assert_null(next);
    json_decref(items);
  }

  free(tok);
  free(tok_exp);
  free(tok_rev);
  free(tok_bob);
  json_decref(u);
  json_decref(bob);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_name),
      cmocka_unit_test(test_valid_role),
      cmocka_unit_test_setup_teardown(test_user_create, setup, teardown),
      cmocka_unit_test_setup_teardown(test_user_create_invalid, setup, teardown),
      cmocka_unit_test_setup_teardown(test_user_duplicate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_user_update_versions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_user_list_pages, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_create_format_and_hash_only, setup, teardown),
      cmocka_unit_test_setup_teardown(test_authenticate, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
