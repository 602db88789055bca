/* agentproto.c — request and job signatures of the agent protocol. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/agentproto.h"
#include "keel/crypto.h"

/* The bytes both sides sign; a NUL-free text, so it fits a keel_buf_t. */
static int signing_string(keel_buf_t *b, const char *method, const char *path, int64_t ts_ms,
                          const char *nonce, const void *body, size_t body_len) {
  char digest[KEEL_HASH_HEX];
  keel_hash_hex(digest, body_len ? body : "", body_len);
  return keel_buf_printf(b, "keel-agent-req:v1\n%s\n%s\n%" PRId64 "\n%s\n%s", method, path, ts_ms,
                         nonce, digest);
}

int keel_agent_sign_request(keel_buf_t *out, const char *agent_id,
                            const uint8_t sk[KEEL_AGENT_SK_BYTES], const char *method,
                            const char *path, int64_t ts_ms, const void *body, size_t body_len) {
  uint8_t sig[crypto_sign_BYTES];
  char nonce[KEEL_AGENT_NONCE_LEN + 1], sig_hex[KEEL_AGENT_SIG_HEX];
  keel_buf_t msg;
  int rc;

  keel_random_b32(nonce, KEEL_AGENT_NONCE_LEN);
  keel_buf_init(&msg, 1 << 16);
  if ((rc = signing_string(&msg, method, path, ts_ms, nonce, body, body_len))) goto out;
  crypto_sign_detached(sig, NULL, (const uint8_t *)msg.data, msg.len, sk);
  keel_hex(sig_hex, sig, sizeof sig);
  keel_buf_reset(out);
  rc = keel_buf_printf(out, KEEL_AGENT_AUTH_SCHEME " %s:%" PRId64 ":%s:%s", agent_id, ts_ms, nonce,
                       sig_hex);
out:
  keel_buf_free(&msg);
  return rc;
}

static int id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

int keel_agent_auth_parse(const char *h, keel_agent_auth_t *out, keel_err_t *e) {
  const char *p, *colon;
  size_t n;
  char *end;

  memset(out, 0, sizeof *out);
  if (!h) return keel_err_set(e, KEEL_EAUTH, "no agent signature (Authorization header)");
  n = strlen(KEEL_AGENT_AUTH_SCHEME);
  if (strncmp(h, KEEL_AGENT_AUTH_SCHEME " ", n + 1))
    return keel_err_set(e, KEEL_EAUTH, "expected 'Authorization: " KEEL_AGENT_AUTH_SCHEME " ...'");
  p = h + n + 1;
  colon = strchr(p, ':');
  if (!colon || colon == p || (size_t)(colon - p) >= sizeof out->agent_id)
    return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: agent id");
  for (const char *q = p; q < colon; q++)
    if (!id_char(*q)) return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: agent id");
  memcpy(out->agent_id, p, (size_t)(colon - p));
  p = colon + 1;
  if (*p < '0' || *p > '9') return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: time");
  out->ts_ms = strtoll(p, &end, 10);
  if (*end != ':' || out->ts_ms <= 0)
    return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: time");
  p = end + 1;
  for (n = 0; n < KEEL_AGENT_NONCE_LEN; n++)
    if (!id_char(p[n])) return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: nonce");
  if (p[n] != ':') return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: nonce");
  memcpy(out->nonce, p, n);
  p += n + 1;
  if (strlen(p) != KEEL_AGENT_SIG_HEX - 1 ||
      strspn(p, "0123456789abcdef") != KEEL_AGENT_SIG_HEX - 1)
    return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: signature");
  memcpy(out->sig_hex, p, KEEL_AGENT_SIG_HEX);
  return 0;
}

int keel_agent_verify_request(const keel_agent_auth_t *a, const uint8_t pk[KEEL_AGENT_PK_BYTES],
                              const char *method, const char *path, const void *body,
                              size_t body_len, keel_err_t *e) {
  uint8_t sig[crypto_sign_BYTES];
  keel_buf_t msg;
  int rc;

  if (keel_unhex(sig, sizeof sig, a->sig_hex))
    return keel_err_set(e, KEEL_EAUTH, "malformed agent signature: signature");
  keel_buf_init(&msg, 1 << 16);
  if (signing_string(&msg, method, path, a->ts_ms, a->nonce, body, body_len)) {
    rc = keel_err_set(e, KEEL_EAUTH, "request target too long to verify");
    goto out;
  }
  rc = crypto_sign_verify_detached(sig, (const uint8_t *)msg.data, msg.len, pk)
           ? keel_err_set(e, KEEL_EAUTH, "bad agent signature")
           : 0;
out:
  keel_buf_free(&msg);
  return rc;
}

static int job_message(keel_buf_t *b, const char *job_text, size_t len) {
  if (keel_buf_puts(b, "keel-job:v1\n")) return KEEL_ENOMEM;
  return keel_buf_append(b, job_text, len);
}

void keel_agent_sign_job(char sig_hex[KEEL_AGENT_SIG_HEX], const uint8_t sk[KEEL_AGENT_SK_BYTES],
                         const char *job_text, size_t len) {
  uint8_t sig[crypto_sign_BYTES];
  keel_buf_t msg;

  sig_hex[0] = '\0'; /* on no memory: an empty signature, which no agent accepts */
  keel_buf_init(&msg, len + 64);
  if (job_message(&msg, job_text, len) == 0) {
    crypto_sign_detached(sig, NULL, (const uint8_t *)msg.data, msg.len, sk);
    keel_hex(sig_hex, sig, sizeof sig);
  }
  keel_buf_free(&msg);
}

int keel_agent_verify_job(const char *sig_hex, const uint8_t server_pk[KEEL_AGENT_PK_BYTES],
                          const char *job_text, size_t len, keel_err_t *e) {
  uint8_t sig[crypto_sign_BYTES];
  keel_buf_t msg;
  int rc;

  if (!sig_hex || strlen(sig_hex) != KEEL_AGENT_SIG_HEX - 1 ||
      keel_unhex(sig, sizeof sig, sig_hex))
    return keel_err_set(e, KEEL_EAUTH, "job signature malformed");
  keel_buf_init(&msg, len + 64);
  if (job_message(&msg, job_text, len)) {
    keel_buf_free(&msg);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  rc = crypto_sign_verify_detached(sig, (const uint8_t *)msg.data, msg.len, server_pk)
           ? keel_err_set(e, KEEL_EAUTH, "job signature does not verify with the server's key")
           : 0;
  keel_buf_free(&msg);
  return rc;
}
