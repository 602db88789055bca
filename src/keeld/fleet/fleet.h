/* fleet.h — agents: enrollment tokens, enrollment, request authentication,
 * tags, inventory, liveness, and the long-poll waiter of each agent.
 *
 * The engine owns the tables enroll_tokens and agents.  It keeps every
 * live (not retired) agent in memory, sorted by id, because every agent
 * request authenticates against it and selectors match against it; the
 * database is the durable copy.  Owned by keeld's loop thread.
 *
 * Functions that write MUST be called inside a store unit.  JSON results
 * are new references the caller owns.
 */
#ifndef KEELD_FLEET_H
#define KEELD_FLEET_H

#include <jansson.h>
#include <stdint.h>

#include "keel/agentproto.h"
#include "keel/log.h"
#include "keel/selector.h"
#include "metrics/labels.h"
#include "store/store.h"

#define K_FLEET_NONCES 256

typedef struct k_agent {
  char id[24];                      /* agt_<16 base32> */
  char hostname[256];
  json_t *tags;                     /* object of strings, owned */
  uint8_t pk[KEEL_AGENT_PK_BYTES];
  int64_t version;
  int64_t last_seen_ms;             /* 0 = not since keeld started */
  int64_t persisted_seen_ms;        /* last_seen_ms as last written to the store */
  int online;
  /* replay defence: the nonces of recent requests (see k_fleet_auth) */
  struct {
    char nonce[KEEL_AGENT_NONCE_LEN + 1];
    int64_t ts_ms;
  } seen[K_FLEET_NONCES];
  int seen_pos, seen_n;
  /* the held long-poll, if any (a k_req_t * of the server; opaque here) */
  void *waiter;
  int64_t waiter_deadline_ms;      /* keel_mono_ms() clock */
  int wake;                         /* jobs were added: answer the waiter */
} k_agent_t;

typedef struct k_fleet k_fleet_t;

/* Loads every live agent.  log borrowed; MUST outlive the fleet. */
int k_fleet_open(k_store_t *s, const keel_log_t *log, int64_t heartbeat_ms, k_fleet_t **out,
                 keel_err_t *e);
void k_fleet_close(k_fleet_t *f);
int64_t k_fleet_heartbeat_ms(const k_fleet_t *f);

/* ---- enrollment tokens ---- */
/* tags: object of strings (borrowed, validated here); uses >= 1.  *out holds
 * the token's public fields plus "token": the secret, shown this once. */
int k_fleet_token_create(k_fleet_t *f, const json_t *tags, int64_t expires_ms, int64_t uses,
                         const char *created_by, int64_t now_ms, json_t **out, keel_err_t *e);
int k_fleet_token_list(k_fleet_t *f, const char *after, int limit, int64_t now_ms, json_t **items,
                       char **next, keel_err_t *e);
/* Checks "Bearer kenr_..." without using it up.  KEEL_EAUTH with the reason
 * (unknown, malformed, expired, revoked, used up).  token_id is filled when
 * the token's id could be read, for the audit actor. */
int k_fleet_token_check(k_fleet_t *f, const char *authorization, int64_t now_ms,
                        char token_id[32], keel_err_t *e);

/* ---- agents ---- */
/* Enrolls with a checked token: uses it up once, stores the agent, adds it
 * to memory.  req: {public_key, hostname, tags?, inventory?, agent_version?}
 * already shape-checked.  *out: {agent_id, server_public_key?, heartbeat_ms, tags}
 * (the caller adds the server key). */
int k_fleet_enroll(k_fleet_t *f, const char *token_id, const json_t *req, int64_t now_ms,
                   json_t **out, keel_err_t *e);

/* The tags an agent enrolling with token_id and its own tags (may be NULL)
 * would get: the token's, plus the agent's where the token says nothing.
 * *out is a new object. */
int k_fleet_enroll_tags(k_fleet_t *f, const char *token_id, const json_t *own, json_t **out,
                        keel_err_t *e);

/* Authenticates an agent request (KeelAgent header): known live agent,
 * signature, time within KEEL_AGENT_SKEW_MS, nonce not seen.  On success
 * *out is the agent (borrowed).  actor receives "agent:<id>" (or
 * "agent:<id> (unverified)" / "anonymous" on failure). */
int k_fleet_auth(k_fleet_t *f, const char *authorization, const char *method, const char *path,
                 const void *body, size_t body_len, int64_t now_ms, k_agent_t **out, char *actor,
                 size_t actor_len, keel_err_t *e);

k_agent_t *k_fleet_find(k_fleet_t *f, const char *id);
size_t k_fleet_count(const k_fleet_t *f);
k_agent_t *k_fleet_at(k_fleet_t *f, size_t i); /* by id order */

/* "online" / "offline" by the heartbeat rule. */
const char *k_fleet_status(const k_fleet_t *f, const k_agent_t *a);
/* 1 when a matches sel (NULL sel matches all) and status filter ("" / NULL = any). */
int k_fleet_match(const k_fleet_t *f, const k_agent_t *a, const keel_selector_t *sel,
                  const char *status);

/* The API view of one agent; with_inventory adds inventory, enrolled
 * token and times from the store.  Also finds retired agents (status
 * "retired") when with_inventory is set. */
int k_fleet_agent_json(k_fleet_t *f, const char *id, int with_inventory, json_t **out,
                       keel_err_t *e);
/* Replaces the tags of a live agent; version must match (else ECONFLICT). */
int k_fleet_set_tags(k_fleet_t *f, const char *id, const json_t *tags, int64_t version,
                     int64_t now_ms, json_t **out, keel_err_t *e);
/* Retires: credentials stop working at once; the row stays for history.
 * *waiter receives the agent's held poll (or NULL) for the caller to answer. */
int k_fleet_retire(k_fleet_t *f, const char *id, int64_t now_ms, void **waiter, json_t **out,
                   keel_err_t *e);
/* Stores a new inventory (and hostname) for a. */
int k_fleet_set_inventory(k_fleet_t *f, k_agent_t *a, const char *hostname,
                          const json_t *inventory, int64_t now_ms, keel_err_t *e);

/* A request from a arrived (its poll is its heartbeat).  MUST be called
 * outside a store unit: an offline agent coming back calls the change
 * hook. */
void k_fleet_seen(k_fleet_t *f, k_agent_t *a, int64_t now_ms);
/* Liveness transitions (logged, and the change hook called); persists
 * last_seen of agents whose stored value is older than persist_ms.  Runs
 * its own store unit. */
void k_fleet_cron(k_fleet_t *f, int64_t now_ms, int64_t persist_ms);

/* Called on the loop thread, outside any store unit, when a's liveness
 * changed (a->online says which way); may open units of its own.  keeld
 * emits agent.online / agent.offline from it.  One hook (NULL: none). */
typedef void (*k_fleet_change_fn)(void *ud, k_agent_t *a);
void k_fleet_on_change(k_fleet_t *f, k_fleet_change_fn fn, void *ud);

/* keeld's labels of a host, the same for its metrics and its events:
 * instance (the hostname), agent_id, and every tag whose key becomes a
 * label name by replacing each character outside [a-zA-Z0-9_] (a leading
 * digit too) with '_' ("team.name" -> "team_name"); reserved names (__*,
 * instance, agent_id) are not taken from tags, and of two tags that become
 * one name the first (in key order) is kept.  v sorted by name; strings
 * borrowed from a (its tags and hostname) and from names. */
#define K_HOST_LABELS_MAX 40
typedef struct k_host_labels {
  k_label_t v[K_HOST_LABELS_MAX];
  size_t n;
  char names[K_HOST_LABELS_MAX][96];
} k_host_labels_t;
void k_fleet_host_labels(const k_agent_t *a, k_host_labels_t *out);
/* The same as a new JSON object of strings (NULL on OOM). */
json_t *k_fleet_labels_json(const k_agent_t *a);

#endif
