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
#include "event/event.h"
#include "exec/exec.h"
#include "fleet/fleet.h"
#include "incident/incident.h"
#include "incident/maint.h"
#include "org/org.h"
#include "runbook/xec.h"
#include "metrics/querier.h"
#include "hist.h"
#include "iam/iam.h"
#include "keel/buf.h"
#include "keel/log.h"
#include "keel/yaml.h"
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
  /* A streamed answer (GET /v1/events/stream): when set and the status is
   * 200, the answer is the MHD response this returns (NULL: close the
   * connection) instead of out/text.  Called once, when it is queued. */
  struct MHD_Response *(*respond)(k_req_t *req);
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
  int64_t event_retention_ms;
  int64_t am_resend_ms; /* incidents: Alertmanager re-send delay */
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
  k_events_t *events;
  struct k_alerts *alerts; /* alert/alert.h */
  struct k_auto *automation;        /* automation/automation.h */
  k_incidents_t *incidents;         /* incident/incident.h */
  k_maint_t *maint;                 /* incident/maint.h: maintenance windows */
  int automation_started;           /* a rule started an execution: run the runbooks phase again */
  int64_t last_automation_prune_ms; /* keel_mono_ms() of the last automation_runs prune */
  struct k_tsdb *tsdb;
  struct k_scrape *scrape;
  uint64_t metrics_accepted, metrics_refused; /* samples, agents' and scraped */
  int64_t last_tsdb_maintain_ms;    /* keel_mono_ms() */
  int64_t last_sched_ms;            /* keel_mono_ms() of the last schedule check */
  int fleet_wake;     /* some agent has new jobs: answer its long-poll */
  int mhd_kick;
  int64_t last_fleet_cron_ms;       /* connections were resumed: run MHD before sleeping */
  int64_t last_event_prune_ms;      /* keel_mono_ms() of the last events prune (0: none yet) */
  int sigfd;

  k_req_t *wait_head, *wait_tail;
  int inflight;
  int stopping;
  int64_t stop_deadline_ms;
  int64_t start_ms;
  char url[160];

  k_route_stats_t *route_stats; /* one per route, plus one for unmatched */
  struct k_event_streams *streams; /* api_events.c: live SSE streams */
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
/* 1 when who may do action on path (no tags), 0 otherwise (path NULL:
 * 0); nothing is answered or audited.  For what is judged item by item:
 * lists, streams. */
int k_authz_may(k_server_t *srv, const k_principal_t *who, const char *action, const char *path);
/* Writes the policy path of one list item into out[0..n) ("" for none). */
typedef void (*k_item_path_fn)(const json_t *item, char *out, size_t n);
/* The one per-item filter of lists: a list shows only what its caller may
 * see.  Removes from items (an array) every item who may not do action on,
 * judged (k_authz_may) on the path path_of writes, or with path_of NULL
 * on the item's own "path" member; an item without a path is removed.
 * Order is kept; nothing is answered or audited. */
void k_authz_filter(k_server_t *srv, const k_principal_t *who, const char *action, json_t *items,
                    k_item_path_fn path_of);

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

/* What starting a runbook as a user came to (k_runbook_start_as). */
typedef struct k_start_out {
  const char *outcome; /* started | denied | failed | dry_run (| skipped: k_runbook_start_record) */
  int status;          /* as an API answer would have it: 201, 403, 400, 409 */
  char exe_id[24];     /* started: the execution */
  char path[192];      /* the runbook's policy path ("" when it is unknown) */
  char why[512];       /* denied / failed / skipped: why */
  json_t *targets;     /* during record: the resolved targets, [{"agent_id","hostname",..}] or NULL */
} k_start_out_t;

/* How keeld starts a runbook by itself, as a user: the scheduler and
 * automation rules.  All pointers borrowed. */
typedef struct k_start_as {
  const char *owner;    /* user name the run acts as: judged as (runbook:start on the runbook
                           and every target host), requested_by of the execution */
  const char *runbook;
  const json_t *params; /* as given (checked against the runbook here) */
  const char *actor;    /* audit actor: "user:OWNER (schedule NAME)", "user:OWNER (automation RULE)" */
  const char *note;     /* audit detail, before the outcome: "schedule slot T", "automation rule R, event ..." */
  const char *cause;    /* the execution's cause (k_xec_origin_t), may be NULL */
  const json_t *gate;   /* an approval before the first step (k_xec_origin_t), may be NULL */
  int by_schedule;
  int dry_run;          /* judge and resolve, start nothing, audit nothing: outcome dry_run */
  /* Called inside the unit that holds the outcome (and the execution and
   * the audit record), for every outcome: what the caller keeps of it.  A
   * non-zero return rolls all of it back. */
  int (*record)(void *ud, const k_start_out_t *o, keel_err_t *e);
  void *ud;
} k_start_as_t;

/* Starts s->runbook as s->owner: the owner must exist and be enabled,
 * runbook:start is judged on the runbook and on every target host,
 * parameters checked, targets resolved; then, in one unit, the execution,
 * s->record and the audit record (outcome ok; a refusal is recorded and
 * audited as denied or failed the same way).  Returns 0 when started (or,
 * dry run, it would have), KEEL_EPERM when refused, KEEL_EINVAL when it
 * could not start, KEEL_EIO/KEEL_ENOMEM when nothing could be stored
 * (logged).  *o says what happened. */
int k_runbook_start_as(k_server_t *srv, const k_start_as_t *s, k_start_out_t *o);
/* Records an outcome the caller decided without trying (o->outcome,
 * status, why, path): s->record and the audit record in one unit. */
int k_runbook_start_record(k_server_t *srv, const k_start_as_t *s, k_start_out_t *o);
int k_api_command_create_decode(k_server_t *, k_req_t *);
int k_api_command_create(k_server_t *, k_req_t *);
int k_api_command_list(k_server_t *, k_req_t *);
int k_api_command_one_decode(k_server_t *, k_req_t *);
int k_api_command_get(k_server_t *, k_req_t *);
int k_api_command_cancel_decode(k_server_t *, k_req_t *);
int k_api_command_cancel(k_server_t *, k_req_t *);

/* api_events.c */
/* Emits TYPE about host a inside the caller's unit: subject its id, path
 * its host path, data {agent_id, hostname, labels (k_fleet_labels_json)}. */
int k_events_emit_host(k_server_t *srv, const k_agent_t *a, const char *type, keel_err_t *e);
/* Subscribes the live streams and hooks agents' liveness (after the
 * fleet and the events are open); _stop after k_http_stop. */
int k_api_events_start(k_server_t *srv, keel_err_t *e);
void k_api_events_stop(k_server_t *srv);
/* Heartbeats of idle streams; ends them all once stopping. */
void k_api_events_cron(k_server_t *srv, int64_t mono_ms);
/* For /metrics: streams open now, and those keeld ended itself since it
 * started (a client too far behind, its token no longer valid, an error,
 * shutdown) — not those their clients closed. */
typedef struct k_stream_stats {
  int open;
  uint64_t ended;
} k_stream_stats_t;
void k_api_events_stats(const k_server_t *srv, k_stream_stats_t *out);
int k_api_events_decode(k_server_t *, k_req_t *);
int k_api_event_list(k_server_t *, k_req_t *);
int k_api_event_stream_decode(k_server_t *, k_req_t *);
int k_api_event_stream(k_server_t *, k_req_t *);
int k_api_agent_events_decode(k_server_t *, k_req_t *);
int k_api_agent_events(k_server_t *, k_req_t *);
/* {"events": [{type service.*|file.*|check.*, subject?, time? (RFC 3339),
 * data?}]} (at most 256 events, 256 KiB) -> checked, each event with
 * "_time_ms"; errors name the event ("events[3].type: ..."). */
int k_decode_agent_events(const char *body, size_t len, int64_t now_ms, json_t **out,
                          keel_err_t *e);

/* api_automation.c (docs/automation.md) */
/* Opens the automation engine and subscribes it to events (after the
 * events, the runbook engine and the maintenance windows are open);
 * _stop before closing them. */
int k_api_automation_start(k_server_t *srv, keel_err_t *e);
void k_api_automation_stop(k_server_t *srv);
/* Judges queued events (docs/automation.md) for about budget_ms at most;
 * 1 when some are left for the next loop turn. */
int k_api_automation_pump(k_server_t *srv, int64_t budget_ms);
/* The seq of the oldest event automation queued but has not judged yet
 * (0 = none): delivery after a restart starts again there (k_events_save). */
int64_t k_api_automation_held(k_server_t *srv);
/* Hourly: drops automation_runs rows past their keep time. */
void k_api_automation_cron(k_server_t *srv, int64_t mono_ms);
/* POST /v1/apply of a kind: AutomationRule document (raw and pos
 * borrowed): validated into req->in, judged automation:write on the
 * rule's path and runbook:start on its runbook (its runs act as the
 * applying user); apply stores it (the report in req->out; an error
 * is returned, not answered). */
int k_api_automation_apply_decode(k_server_t *srv, k_req_t *req, const char *name,
                                  const json_t *raw, const keel_yaml_pos_t *pos);
int k_api_automation_apply(k_server_t *srv, k_req_t *req, int dry_run, keel_err_t *e);
int k_api_automation_decode(k_server_t *, k_req_t *);
int k_api_automation_rule_list(k_server_t *, k_req_t *);
int k_api_automation_rule_decode(k_server_t *, k_req_t *);
int k_api_automation_rule_get(k_server_t *, k_req_t *);
int k_api_automation_rule_delete(k_server_t *, k_req_t *);
int k_api_automation_run_list(k_server_t *, k_req_t *);
int k_api_automation_switch_get(k_server_t *, k_req_t *);
int k_api_automation_switch_decode(k_server_t *, k_req_t *);
int k_api_automation_switch_set(k_server_t *, k_req_t *);

/* api_alerts.c: opens srv->alerts (after the store, events, organization
 * and TSDB); closed with k_alerts_close. */
int k_api_alerts_open(k_server_t *srv, keel_err_t *e);
int k_api_alerts_decode(k_server_t *, k_req_t *);
int k_api_alert_list(k_server_t *, k_req_t *);
int k_api_alert_rule_list(k_server_t *, k_req_t *);
int k_api_alert_rule_decode(k_server_t *, k_req_t *);
int k_api_alert_rule_get(k_server_t *, k_req_t *);
int k_api_alert_rule_delete(k_server_t *, k_req_t *);

/* api_incidents.c (docs/incidents.md) */
/* POST /v1/apply of a NotificationPolicy or MaintenanceWindow (kind;
 * raw and pos borrowed): validated into req->in, judged notify:write or
 * maintenance:write on its path; apply stores it. */
int k_api_incident_doc_decode(k_server_t *srv, k_req_t *req, const char *kind, const char *name,
                              const json_t *raw, const keel_yaml_pos_t *pos);
int k_api_incident_doc_apply(k_server_t *srv, k_req_t *req, int dry_run, keel_err_t *e);
int k_api_incidents_decode(k_server_t *, k_req_t *);
int k_api_incident_list(k_server_t *, k_req_t *);
int k_api_incident_one_decode(k_server_t *, k_req_t *);
int k_api_incident_get(k_server_t *, k_req_t *);
int k_api_incident_act_decode(k_server_t *, k_req_t *);
int k_api_incident_ack(k_server_t *, k_req_t *);
int k_api_incident_resolve(k_server_t *, k_req_t *);
int k_api_incident_comment(k_server_t *, k_req_t *);
int k_api_maintenance_decode(k_server_t *, k_req_t *);
int k_api_maintenance_list(k_server_t *, k_req_t *);

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
