/* server.h — keeld's server state, requests and routes.
 *
 * Everything here is owned by the loop thread.  A request goes through one
 * path (router.c: k_dispatch), whatever the route:
 *
 *   match route -> authenticate -> decode (parse input, name the target)
 *   -> authorize (k_authz_check) -> apply -> audit -> wait until durable
 *
 * Mutations apply and audit inside one store unit, so a change and its
 * audit record commit together or not at all.  Handlers never answer by
 * themselves: they fill req->out / req->status and the dispatcher answers.
 */
#ifndef KEELD_SERVER_H
#define KEELD_SERVER_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>

#include "audit/audit.h"
#include "exec/exec.h"
#include "fleet/fleet.h"
#include "org/org.h"
#include "runbook/xec.h"
#include "metrics/querier.h"
#include "hist.h"
#include "iam/iam.h"
#include "keel/buf.h"
#include "keel/log.h"
#include "loop.h"
#include "serverkey.h"
#include "store/store.h"
#include "work.h"

typedef struct k_server k_server_t;
typedef struct k_req k_req_t;

enum {
  K_ROUTE_PUBLIC = 1,   /* no token (healthz, readyz, metrics) */
  K_ROUTE_MUTATION = 2, /* apply + audit in one store unit */
  K_ROUTE_BODY = 4,     /* takes a JSON body; other routes refuse one */
  K_ROUTE_AGENT = 8,    /* authenticated by an agent's signature, not a token */
  K_ROUTE_ENROLL = 16,  /* authenticated by an enrollment token */
  K_ROUTE_BIGBODY = 32, /* body up to K_EXEC_RESULT_BODY_MAX (agent results) */
  K_ROUTE_NOWRITE = 64, /* a POST that stores nothing (the long-poll): no audit unit */
  K_ROUTE_PROM = 128,   /* Prometheus' API: its error shape, times as shortest decimals */
};

/* What a request acts on, for the policy check and the audit record. */
typedef struct k_target {
  char path[192];     /* policy path: "user/alice", "app/checkout/env/prod/host/agt_x", "audit" */
  char owner_id[32];  /* user (or agent) id owning it, when it has one ("" otherwise) */
  const json_t *tags; /* a host's tags, for tag conditions; borrowed, may be NULL */
} k_target_t;

typedef int (*k_handler_fn)(k_server_t *srv, k_req_t *req);

typedef struct k_route {
  const char *method;
  const char *pattern;  /* "/v1/tokens/{id}": {x} matches one segment */
  const char *action;   /* policy action; NULL only for public routes */
  unsigned flags;
  const char *const *query; /* allowed query parameters, NULL-terminated, or NULL */
  k_handler_fn decode;  /* may be NULL: parse input, set req->target */
  k_handler_fn apply;
} k_route_t;

#define K_MAX_PARAMS 2

struct k_req {
  struct MHD_Connection *conn;
  k_req_t *next_wait; /* in srv's durability queue */
  char method[16];
  char *url;
  char request_id[24];
  int64_t start_ns;
  int route_idx;      /* index in the route table, -1 = unmatched */
  char params[K_MAX_PARAMS][160];
  keel_buf_t body;
  long long body_limit; /* of the matched route (server default if none) */
  int too_big;
  json_t *in;         /* decoded JSON body, if any */

  k_principal_t who;     /* for agent routes: role "agent", user_id = agent id */
  k_agent_t *agent;      /* agent routes: the authenticated agent (borrowed) */
  char actor[96];
  k_target_t target;
  int authorized;     /* decode judged the request's resources itself (k_authz_req) */
  json_t *target_tags; /* owned; what target.tags points at when a decoder built it */

  /* the answer */
  int status;
  json_t *out;        /* JSON answer (dispatcher serializes) */
  char *text;         /* or a text answer (owned) */
  const char *ctype;
  char allow[64];     /* for 405 */
  char err_code[32];
  keel_err_t err;
  keel_buf_t detail;  /* audit detail of a successful mutation (optional) */

  uint64_t wait_gen;  /* answer leaves once this generation is durable */
  uint64_t wait_tsdb_gen; /* ... and this one of the TSDB (metrics ingest) */
  int suspended;
  int ready;          /* answer built, to queue on the next handler call */
  int async;          /* a background job will fill the answer */
  int close;          /* answer with Connection: close (shutting down) */
  void *async_state;
};

typedef struct k_route_stats {
  uint64_t by_code[6][100]; /* [class 1..5][code % 100], index 0 unused */
  k_hist_t seconds;
} k_route_stats_t;

typedef struct k_server_opts {
  char data[1024];
  char listen[128];
  long long body_limit;
  long long checkpoint_records;
  int64_t checkpoint_interval_ms;
  int log_level;
  int64_t shutdown_grace_ms;
  int64_t heartbeat_ms;
} k_server_opts_t;

struct k_server {
  k_server_opts_t opts;
  keel_log_t log;
  k_loop_t *loop;
  struct MHD_Daemon *mhd;
  int mhd_epfd;
  k_store_t *store;
  k_audit_t *audit;
  k_serverkey_t key;
  k_work_t *work;
  k_fleet_t *fleet;
  k_org_t *org;
  k_xec_t *xec;
  struct k_tsdb *tsdb;
  struct k_scrape *scrape;
  uint64_t metrics_accepted, metrics_refused; /* samples, agents' and scraped */
  int64_t last_tsdb_maintain_ms;    /* keel_mono_ms() */
  int64_t last_sched_ms;            /* keel_mono_ms() of the last schedule check */
  int fleet_wake;     /* some agent has new jobs: answer its long-poll */
  int mhd_kick;
  int64_t last_fleet_cron_ms;       /* connections were resumed: run MHD before sleeping */
  int sigfd;

  k_req_t *wait_head, *wait_tail;
  int inflight;
  int stopping;
  int64_t stop_deadline_ms;
  int64_t start_ms;
  char url[160];

  k_route_stats_t *route_stats; /* one per route, plus one for unmatched */
};

/* The route table (router.c). */
extern const k_route_t k_routes[];
extern const int k_nroutes;

/* router.c */
/* 0 and *idx on a match; KEEL_ENOENT when no pattern matches the path;
 * KEEL_EPERM when patterns match but not the method (allow lists those). */
int k_route_match(const char *method, const char *path, int *idx, char params[][160], char *allow,
                  size_t allow_len);
void k_dispatch(k_server_t *srv, k_req_t *req);
/* Answers an error: sets status, code and message (req->err.msg). */
int k_req_fail(k_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Maps a KEEL_E* code and e's message onto an HTTP error answer. */
int k_req_fail_err(k_req_t *req, int rc, const keel_err_t *e);
const char *k_req_query(k_req_t *req, const char *name);
/* The answer of a list route: {"items": items (reference taken),
 * "next_cursor": next or null}. */
void k_req_set_page(k_req_t *req, json_t *items, const char *next);
/* ?limit=: 1..1000, default 100; 400 otherwise. */
int k_req_limit(k_req_t *req, int *limit);

/* authz.c: the one authorization decision.  Returns 1 to allow; on deny
 * returns 0 and writes why into reason. */
int k_authz_check(const k_org_t *org, const k_principal_t *who, const char *action,
                  const k_target_t *t, char *reason, size_t reason_len);
/* For handlers judging more than the route's one target (each host of a
 * command, each item of a list): 1 allowed; 0 denied, and then, when
 * answer is set, the request is answered 403 and the denial audited. */
int k_authz_req(k_server_t *srv, k_req_t *req, const char *action, const char *path,
                const json_t *tags, int answer);

/* http.c */
int k_http_start(k_server_t *srv, keel_err_t *e);
void k_http_stop(k_server_t *srv);
void k_http_quiesce(k_server_t *srv);
void k_http_run(k_server_t *srv);
/* Releases waiting answers whose generation is durable (or failed). */
void k_http_release(k_server_t *srv);
/* Resumes a request whose async job set its answer. */
void k_http_async_done(k_server_t *srv, k_req_t *req);

/* The largest body route r accepts. */
long long k_route_body_limit(const k_server_t *srv, const k_route_t *r);

/* api_agent.c: long-poll waiters */
/* Answers the held polls of agents marked wake (all when force). */
void k_agent_wake(k_server_t *srv, int force);
/* Answers held polls whose time is up. */
void k_agent_expire(k_server_t *srv, int64_t mono_ms);

/* metrics.c */
int k_metrics_render(k_server_t *srv, keel_buf_t *out);
void k_metrics_observe(k_server_t *srv, int route_idx, int status, double seconds);

/* Handlers, by area. */
int k_api_healthz(k_server_t *, k_req_t *);
int k_api_readyz(k_server_t *, k_req_t *);
int k_api_metrics(k_server_t *, k_req_t *);
int k_api_whoami(k_server_t *, k_req_t *);
int k_api_user_create_decode(k_server_t *, k_req_t *);
int k_api_user_create(k_server_t *, k_req_t *);
int k_api_users_decode(k_server_t *, k_req_t *);
int k_api_user_list(k_server_t *, k_req_t *);
int k_api_user_one_decode(k_server_t *, k_req_t *);
int k_api_user_get(k_server_t *, k_req_t *);
int k_api_user_update_decode(k_server_t *, k_req_t *);
int k_api_user_update(k_server_t *, k_req_t *);
int k_api_token_create_decode(k_server_t *, k_req_t *);
int k_api_token_create(k_server_t *, k_req_t *);
int k_api_token_list_decode(k_server_t *, k_req_t *);
int k_api_token_list(k_server_t *, k_req_t *);
int k_api_token_revoke_decode(k_server_t *, k_req_t *);
int k_api_token_revoke(k_server_t *, k_req_t *);
int k_api_audit_decode(k_server_t *, k_req_t *);
int k_api_audit_list(k_server_t *, k_req_t *);
int k_api_audit_verify(k_server_t *, k_req_t *);
int k_api_etoken_create_decode(k_server_t *, k_req_t *);
int k_api_etoken_create(k_server_t *, k_req_t *);
int k_api_etoken_list(k_server_t *, k_req_t *);
int k_api_enroll_decode(k_server_t *, k_req_t *);
int k_api_enroll(k_server_t *, k_req_t *);
int k_api_agent_poll_decode(k_server_t *, k_req_t *);
int k_api_agent_poll(k_server_t *, k_req_t *);
int k_api_agent_result_decode(k_server_t *, k_req_t *);
int k_api_agent_result(k_server_t *, k_req_t *);
int k_api_agent_inventory_decode(k_server_t *, k_req_t *);
int k_api_agent_inventory(k_server_t *, k_req_t *);
int k_api_agent_list_decode(k_server_t *, k_req_t *);
int k_api_agent_list(k_server_t *, k_req_t *);
int k_api_agent_one_decode(k_server_t *, k_req_t *);
int k_api_agent_get(k_server_t *, k_req_t *);
int k_api_agent_update_decode(k_server_t *, k_req_t *);
int k_api_agent_update(k_server_t *, k_req_t *);
int k_api_agent_retire(k_server_t *, k_req_t *);
int k_api_apply_decode(k_server_t *, k_req_t *);
int k_api_apply(k_server_t *, k_req_t *);
int k_api_org_decode(k_server_t *, k_req_t *);
int k_api_org_get(k_server_t *, k_req_t *);
int k_api_explain(k_server_t *, k_req_t *);
int k_api_runbooks_decode(k_server_t *, k_req_t *);
int k_api_runbook_list(k_server_t *, k_req_t *);
int k_api_runbook_one_decode(k_server_t *, k_req_t *);
int k_api_runbook_get(k_server_t *, k_req_t *);
int k_api_runbook_delete(k_server_t *, k_req_t *);
int k_api_execution_start_decode(k_server_t *, k_req_t *);
int k_api_execution_start(k_server_t *, k_req_t *);
int k_api_execution_retry_decode(k_server_t *, k_req_t *);
int k_api_execution_list(k_server_t *, k_req_t *);
int k_api_execution_one_decode(k_server_t *, k_req_t *);
int k_api_execution_get(k_server_t *, k_req_t *);
int k_api_execution_act_decode(k_server_t *, k_req_t *);
int k_api_execution_approve(k_server_t *, k_req_t *);
int k_api_execution_reject(k_server_t *, k_req_t *);
int k_api_execution_resume(k_server_t *, k_req_t *);
int k_api_execution_cancel(k_server_t *, k_req_t *);
int k_api_schedule_list(k_server_t *, k_req_t *);
int k_api_prom_decode(k_server_t *, k_req_t *);
int k_api_prom_query(k_server_t *, k_req_t *);
int k_api_prom_query_range(k_server_t *, k_req_t *);
int k_api_prom_series(k_server_t *, k_req_t *);
int k_api_prom_labels(k_server_t *, k_req_t *);
int k_api_prom_label_values(k_server_t *, k_req_t *);

/* promparams.c: Prometheus API parameters.  *out: a new object of the URL
 * query and (POST) form body parameters, "x[]" keys as arrays of strings. */
int k_prom_params(k_req_t *req, json_t **out, keel_err_t *e);
/* RFC 3339 or Unix seconds (fraction allowed) -> ms; KEEL_EINVAL otherwise. */
int k_prom_time(const char *s, int64_t *ms);
/* Seconds (fraction allowed) or a duration ("30s", "1m30s") -> ms > 0. */
int k_prom_step(const char *s, int64_t *ms);

/* api_metrics.c */
/* A querier over the TSDB for one query (the caller closes it). */
int k_metrics_querier(k_server_t *srv, k_querier_t **q, keel_err_t *e);
/* Scraped batches into the TSDB (when the scrape fd is readable). */
void k_metrics_scrape_poll(k_server_t *srv);
/* The stored scrape configuration into the scrape engine (at start). */
int k_metrics_config_load(k_server_t *srv, keel_err_t *e);
/* Applies a checked ScrapeConfig document (inside the caller's unit). */
int k_metrics_config_apply(k_server_t *srv, const json_t *doc, int dry_run, json_t **report,
                           keel_buf_t *detail, keel_err_t *e);
int k_api_agent_metrics_decode(k_server_t *, k_req_t *);
int k_api_agent_metrics(k_server_t *, k_req_t *);
int k_api_metrics_decode(k_server_t *, k_req_t *);
int k_api_metrics_targets(k_server_t *, k_req_t *);

/* api_exec.c: starts the runbooks whose schedule is due (each in its own
 * unit, audited as the schedule's owner). */
void k_api_schedules_fire(k_server_t *srv, int64_t now_ms);
int k_api_command_create_decode(k_server_t *, k_req_t *);
int k_api_command_create(k_server_t *, k_req_t *);
int k_api_command_list(k_server_t *, k_req_t *);
int k_api_command_one_decode(k_server_t *, k_req_t *);
int k_api_command_get(k_server_t *, k_req_t *);

/* Request decoders shared with the fuzz harness: body -> checked JSON. */
int k_decode_user_create(const char *body, size_t len, json_t **out, keel_err_t *e);
int k_decode_user_update(const char *body, size_t len, json_t **out, keel_err_t *e);
int k_decode_token_create(const char *body, size_t len, int64_t now_ms, json_t **out,
                          int64_t *expires_ms, keel_err_t *e);
/* {tags?, ttl?, uses?} -> checked; *expires_ms from ttl (default 1h). */
int k_decode_etoken_create(const char *body, size_t len, int64_t now_ms, json_t **out,
                           int64_t *expires_ms, keel_err_t *e);
int k_decode_enroll(const char *body, size_t len, json_t **out, keel_err_t *e);
int k_decode_agent_update(const char *body, size_t len, json_t **out, keel_err_t *e);

#endif
