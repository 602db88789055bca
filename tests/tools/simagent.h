/* simagent.h — simulated keel agents, and the keeld they talk to, for the
 * benchmarks and test tools that need many agents from one process
 * (bench/fanout.c, bench/reaction.c, tests/tools/evstorm.c).
 *
 * A simulated agent is real on the wire: an Ed25519 key pair enrolled with
 * an enrollment token, every request signed as keel-agent signs it
 * (include/keel/agentproto.h), every job's signature and agent id checked
 * before it counts, results answered over the protocol of
 * docs/agent-protocol.md.  It runs no program: the caller decides what a
 * job's result is.
 *
 * Transfers run on one curl multi handle driven through epoll by curl's
 * socket API (ksim_loop_t), so the cost of a turn follows the sockets that
 * are ready, not the number of agents: one thread holds thousands of
 * long-polls.  Single-threaded; nothing here is thread-safe.
 *
 * Contracts: functions that can fail return 0 or -1 (after a line on
 * stderr where the caller could not tell why); buffers in structs are
 * owned by them. */
#ifndef KEEL_SIMAGENT_H
#define KEEL_SIMAGENT_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "keel/agentproto.h"
#include "keel/buf.h"

/* Process setup for a program of many agents: SIGPIPE ignored, the open
 * files limit raised to its hard limit (each agent holds connections),
 * libsodium and libcurl initialized.  0, or -1 after a line on stderr that
 * starts with prog.  ksim_cleanup undoes what needs undoing. */
int ksim_init(const char *prog);
void ksim_cleanup(void);

/* ---- keeld under test ------------------------------------------------------------------ */

/* A keeld started by ksim_keeld_start: the binary next to the running
 * program, a fresh data directory under $TMPDIR (removed by
 * ksim_keeld_stop), listening on 127.0.0.1 at a port of its choice. */
typedef struct ksim_keeld {
  pid_t pid;
  char dir[256], data[300], log[300], url[256], admin[256]; /* admin: the admin token */
} ksim_keeld_t;

/* `keeld init`, then `keeld --data DIR --listen 127.0.0.1:0 EXTRA...`
 * (extra: NULL-terminated, may be NULL), stdout and stderr to a log in the
 * directory; returns once /readyz answers 200 (20 s at most).  name
 * prefixes the directory's name.  On failure the log is shown. */
int ksim_keeld_start(ksim_keeld_t *k, const char *name, char *const extra[]);
/* SIGTERM (SIGKILL after 15 s), says how long it took and whether the log
 * holds anything (benchmarks run keeld at --log-level warn: a line there
 * is worth reading), removes the directory. */
void ksim_keeld_stop(ksim_keeld_t *k);
long ksim_keeld_rss_kb(const ksim_keeld_t *k); /* VmRSS, or -1 */
double ksim_keeld_cpu_s(const ksim_keeld_t *k); /* user + system seconds, or -1 */
double ksim_self_cpu_s(void);

/* Figures keeld publishes on GET /metrics (0 when it could not be read). */
typedef struct ksim_kmetrics {
  double commits, commit_s, syncs, sync_s, audit;
} ksim_kmetrics_t;
void ksim_keeld_metrics(const char *url, ksim_kmetrics_t *m);

/* POST /v1/agent-tokens as admin: a token for `uses` enrollments whose
 * agents get the tags (a JSON object's text, or NULL).  0 or -1. */
int ksim_enroll_token(const char *url, const char *admin, const char *tags_json, int uses,
                      char *token, size_t len);

/* POST /v1/apply as admin: the document doc (YAML or JSON text), for
 * `what` in the line on stderr when keeld does not answer 200.  0 or -1. */
int ksim_apply(const char *url, const char *admin, const char *what, const char *doc);

/* ---- one simulated agent --------------------------------------------------------------- */

#define KSIM_QMAX 64 /* jobs an agent holds unanswered or unacked (a poll brings <= 64) */
#define KSIM_SEEN 16 /* recently acked run ids kept for dedup */
#define KSIM_ID_LEN 48

typedef struct ksim_run {
  char run[40], cmd[40];
} ksim_run_t;

typedef struct ksim_agent {
  int idx;
  char id[KSIM_ID_LEN];
  uint8_t pk[KEEL_AGENT_PK_BYTES], sk[KEEL_AGENT_SK_BYTES];
  uint8_t spk[KEEL_AGENT_PK_BYTES]; /* the server's key, from enrollment */
  /* jobs taken and not yet acknowledged, oldest first: their results go
   * out in this order (q[0] is the one being sent), and polls list them
   * as running so keeld does not hand them back */
  ksim_run_t q[KSIM_QMAX];
  int qn;
  char seen[KSIM_SEEN][40];
  int seen_pos;
} ksim_agent_t;

/* What went wrong with jobs, summed over agents. */
typedef struct ksim_counts {
  unsigned long sig_fail, bad_job, redelivered, qfull;
} ksim_counts_t;

/* Called for each new job an agent takes (after it is queued: a->q[a->qn - 1]);
 * job is the parsed job text, borrowed. */
typedef void (*ksim_job_fn)(void *ud, ksim_agent_t *a, const json_t *job);

/* The jobs of a poll's answer ({"jobs": [{"job", "sig"}]}): each one's
 * signature is checked against a->spk and its agent_id against a->id
 * (else counted, never queued); a run already queued or recently acked is
 * counted as redelivered; the others are queued and given to fn (may be
 * NULL). */
void ksim_take_jobs(ksim_agent_t *a, const json_t *jobs, ksim_job_fn fn, void *ud,
                    ksim_counts_t *c);
/* Body of POST /v1/agent/poll: the queued runs as running. */
int ksim_poll_body(const ksim_agent_t *a, keel_buf_t *body);
/* Body of POST /v1/agent/results for q[0]: exited with exit_code, no
 * output, started and ended now.  -1 when nothing is queued. */
int ksim_result_body(const ksim_agent_t *a, keel_buf_t *body, int exit_code);
/* An answer {"ack": RUN} of POST /v1/agent/results: when RUN is q[0], it
 * is popped (into *out, may be NULL) and remembered as seen; 0.  -1 when
 * the answer acknowledges something else. */
int ksim_acked(ksim_agent_t *a, const json_t *answer, ksim_run_t *out);

/* ---- transfers ------------------------------------------------------------------------- */

/* One easy handle and what it needs while in flight. */
typedef struct ksim_xfer {
  CURL *h;
  keel_buf_t in;   /* the answer's body */
  keel_buf_t body; /* the request's body (POST) */
  keel_buf_t auth; /* the Authorization header's value */
  struct curl_slist *hdrs;
  int busy;  /* added to a loop, not yet done */
  int kind;  /* the caller's */
  void *ud;  /* the caller's */
  int64_t t_start_ns, t_done_ns; /* keel_mono_ns at ksim_xfer_send and completion */
} ksim_xfer_t;

int ksim_xfer_init(ksim_xfer_t *x, int kind, void *ud);
/* Signs x->body as agent a's POST to path, into x->auth. */
int ksim_xfer_sign(ksim_xfer_t *x, const ksim_agent_t *a, const char *path);
/* x->auth = "Bearer TOKEN". */
int ksim_xfer_bearer(ksim_xfer_t *x, const char *token);

typedef struct ksim_loop ksim_loop_t;
/* Called for every finished transfer (x->busy is 0 again); status is the
 * HTTP status, 0 without an answer. */
typedef void (*ksim_done_fn)(void *ud, ksim_xfer_t *x, CURLcode cc, long status);

struct ksim_loop {
  CURLM *m;
  int ep;           /* epoll fd fed by curl's socket callback */
  int64_t timer_ms; /* curl's timeout, keel_mono_ms clock; -1 = none */
  char url[256];    /* keeld's base URL */
  ksim_done_fn done;
  void *ud;
  unsigned long new_conns; /* connections curl opened */
  int64_t last_done_ns;    /* keel_mono_ns of the last completion */
};

/* maxconnects: connections curl may keep open (two or three per agent:
 * none of them may be closed for want of room). */
int ksim_loop_init(ksim_loop_t *l, const char *url, long maxconnects, ksim_done_fn done,
                   void *ud);
/* Also for a zeroed loop that ksim_loop_init never saw. */
void ksim_loop_free(ksim_loop_t *l);
void ksim_xfer_free(ksim_loop_t *l, ksim_xfer_t *x);
/* Starts x on l: method "POST" (x->body, with Content-Type ctype, or
 * application/json when NULL) or "GET", to l->url + path, Authorization
 * x->auth when set, at most timeout_ms.  0 or -1. */
int ksim_xfer_send(ksim_loop_t *l, ksim_xfer_t *x, const char *method, const char *path,
                   const char *ctype, long timeout_ms);
/* One turn: waits for ready sockets or curl's timer (at most wait_ms),
 * runs the transfers and calls done for each finished one. */
void ksim_loop_step(ksim_loop_t *l, int wait_ms);
/* Signs x->body as agent a's POST to path (ksim_xfer_sign) and starts it
 * on l (ksim_xfer_send, Content-Type ctype).  0 or -1. */
int ksim_agent_post(ksim_loop_t *l, ksim_xfer_t *x, const ksim_agent_t *a, const char *path,
                    const char *ctype, long timeout_ms);

/* Enrolls a[0..n) for real: a fresh key pair each, hostname PREFIX<idx>,
 * the agent's own tags (a JSON object's text, or NULL: only the token's),
 * POST /v1/agent/enroll with the enrollment token, `parallel` at a time
 * on a loop of its own.  Sets idx, id and the keys.  Returns how many
 * failed (the first few said on stderr). */
int ksim_enroll(const char *url, const char *token, ksim_agent_t *a, int n, const char *prefix,
                const char *tags_json, int parallel);

/* ---- figures --------------------------------------------------------------------------- */

int ksim_cmp_double(const void *a, const void *b);
int ksim_cmp_i64(const void *a, const void *b); /* qsort of int64_t */
/* Nearest-rank percentile of sorted v[0..n) (n >= 1). */
double ksim_pct(const double *v, int n, double p);

#endif
