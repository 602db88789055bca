/* serverkey.h — keeld's Ed25519 identity: signs audit checkpoints (and,
 * later, jobs sent to agents).  Stored as DIR/server.key, mode 0600. */
#ifndef KEELD_SERVERKEY_H
#define KEELD_SERVERKEY_H

#include <sodium.h>
#include <stdint.h>

#include "keel/err.h"

typedef struct k_serverkey {
  uint8_t pk[crypto_sign_PUBLICKEYBYTES];
  uint8_t sk[crypto_sign_SECRETKEYBYTES];
  char key_id[17]; /* first 16 hex chars of BLAKE2b(pk) */
} k_serverkey_t;

/* Creates a new key file; fails with KEEL_EEXIST if one is there. */
int k_serverkey_create(const char *dir, k_serverkey_t *out, keel_err_t *e);
int k_serverkey_load(const char *dir, k_serverkey_t *out, keel_err_t *e);
/* Wipes the secret from memory. */
void k_serverkey_wipe(k_serverkey_t *k);

#endif
