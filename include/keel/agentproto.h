/* keel/agentproto.h — the signatures of the agent protocol (docs/agent-protocol.md).
 *
 * Shared by keeld and keel-agent so both sides build byte-identical signing
 * strings.  Keys are libsodium Ed25519 (32-byte public, 64-byte secret).
 */
#ifndef KEEL_AGENTPROTO_H
#define KEEL_AGENTPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/err.h"

#define KEEL_AGENT_PK_BYTES 32
#define KEEL_AGENT_SK_BYTES 64
#define KEEL_AGENT_SIG_HEX 129 /* 64 bytes as hex + NUL */
#define KEEL_AGENT_NONCE_LEN 16
#define KEEL_AGENT_AUTH_SCHEME "KeelAgent"
/* A request's timestamp may differ from the server's clock by this much. */
#define KEEL_AGENT_SKEW_MS 60000

/* The parsed Authorization header of an agent request:
 *   KeelAgent <agent_id>:<ts_ms>:<nonce>:<sig_hex> */
typedef struct keel_agent_auth {
  char agent_id[40];
  int64_t ts_ms;
  char nonce[KEEL_AGENT_NONCE_LEN + 1];
  char sig_hex[KEEL_AGENT_SIG_HEX];
} keel_agent_auth_t;

/* Writes the Authorization header value for one request into out (cleared
 * first): signs "keel-agent-req:v1\n" METHOD "\n" PATH "\n" TS "\n" NONCE "\n"
 * hex(BLAKE2b-256(body)).  path is the request path without the query string.
 * A fresh random nonce is drawn per call. */
int keel_agent_sign_request(keel_buf_t *out, const char *agent_id,
                            const uint8_t sk[KEEL_AGENT_SK_BYTES], const char *method,
                            const char *path, int64_t ts_ms, const void *body, size_t body_len);

/* Parses a header value; KEEL_EAUTH with a reason when malformed. */
int keel_agent_auth_parse(const char *header, keel_agent_auth_t *out, keel_err_t *e);

/* Checks a parsed header's signature against pk for this request; does NOT
 * check time or replay (the server does, it owns the clock and nonce
 * memory).  0 or KEEL_EAUTH. */
int keel_agent_verify_request(const keel_agent_auth_t *a, const uint8_t pk[KEEL_AGENT_PK_BYTES],
                              const char *method, const char *path, const void *body,
                              size_t body_len, keel_err_t *e);

/* Job signatures: Ed25519 over "keel-job:v1\n" followed by the job's JSON
 * text exactly as sent.  sig_hex receives 128 hex chars + NUL. */
void keel_agent_sign_job(char sig_hex[KEEL_AGENT_SIG_HEX], const uint8_t sk[KEEL_AGENT_SK_BYTES],
                         const char *job_text, size_t len);
/* 0 when sig_hex is server_pk's signature of job_text, else KEEL_EAUTH. */
int keel_agent_verify_job(const char *sig_hex, const uint8_t server_pk[KEEL_AGENT_PK_BYTES],
                          const char *job_text, size_t len, keel_err_t *e);

#endif
