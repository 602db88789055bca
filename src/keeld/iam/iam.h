/* iam.h — users and API tokens.
 *
 * A token is "keel_<16 base32>_<32 base32>": the first part is the public
 * token id (tok_<16 base32>), the second 160 random bits.  Only the BLAKE2b
 * hash of the secret part is stored; a fast hash is right for high-entropy
 * random secrets (Argon2 is for passwords people choose).
 *
 * The engine owns the tables users and tokens.  Functions that write MUST be
 * called inside a store unit.  JSON results are new references the caller owns.
 */
#ifndef KEELD_IAM_H
#define KEELD_IAM_H

#include <jansson.h>
#include <stdint.h>

#include "store/store.h"

#define K_TOKEN_LEN 54 /* "keel_" + 16 + "_" + 32 */

typedef struct k_principal {
  char user_id[32];
  char user[64];
  char role[16];
  char token_id[32];
  int64_t token_created_ms;
} k_principal_t;

/* Checks an Authorization header value.  On failure returns KEEL_EAUTH with
 * the reason in e, and fills actor with who it claimed to be for the audit
 * record ("anonymous", or "token:tok_... (unverified)") — never the secret. */
int k_iam_authenticate(k_store_t *s, const char *authorization, int64_t now_ms, k_principal_t *p,
                       char *actor, size_t actor_len, keel_err_t *e);

int k_iam_valid_name(const char *name);
int k_iam_valid_role(const char *role);

/* req: a JSON object already checked for shape.  *out: the new user. */
int k_iam_user_create(k_store_t *s, const json_t *req, int64_t now_ms, json_t **out, keel_err_t *e);
int k_iam_user_get(k_store_t *s, const char *id_or_name, json_t **out, keel_err_t *e);
int k_iam_user_update(k_store_t *s, const char *id_or_name, const json_t *req, int64_t now_ms,
                      json_t **out, keel_err_t *e);
/* Page of users ordered by name after `after` ("" = first page); *next is
 * set to a new string (caller frees) or NULL on the last page. */
int k_iam_user_list(k_store_t *s, const char *after, int limit, json_t **items, char **next,
                    keel_err_t *e);

/* Creates a token for user (id or name).  expires_ms 0 = never.  *out holds
 * the token object plus "token": the secret, the only time it is shown. */
int k_iam_token_create(k_store_t *s, const char *user, const char *name, int64_t expires_ms,
                       int64_t now_ms, json_t **out, keel_err_t *e);
int k_iam_token_get(k_store_t *s, const char *id, int64_t now_ms, json_t **out, keel_err_t *e);
int k_iam_token_revoke(k_store_t *s, const char *id, int64_t now_ms, json_t **out, keel_err_t *e);
/* user_id NULL = all users. */
int k_iam_token_list(k_store_t *s, const char *user_id, const char *after, int limit,
                     int64_t now_ms, json_t **items, char **next, keel_err_t *e);

#endif
