/* agent.h — internal interfaces of keel-agent (docs/agent-protocol.md).
 *
 * Internal names are ka_.  Everything here is single-threaded: one thread
 * runs the connections, the child pipes and the signals (main.c).
 *
 * State directory DIR (0700):
 *   identity.json          the key pair, agent id, server key (0600)
 *   running/<run_id>.json  a job accepted and (about to be) started
 *   spool/<run_id>.json    a finished result not yet acknowledged
 *   seen                   the last 4096 accepted run ids (dedup)
 *   scripts/<run_id>       a script job's body while it runs (exec.c)
 *   metrics/<seq>.kmb      metric batches keeld has not taken yet (mspool.c)
 *   events/<seq>.json      event batches keeld has not taken yet (mspool.c, watch.h)
 *   watch.json             what the watches last reported (watch.h)
 */
#ifndef KA_AGENT_H
#define KA_AGENT_H

#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "keel/agentproto.h"
#include "keel/buf.h"
#include "keel/err.h"
#include "keel/log.h"

#define KA_RUN_ID_MAX 64              /* longest run id we accept (file names) */
#define KA_SEEN_KEEP 4096             /* run ids remembered for dedup */
#define KA_DEFAULT_OUTPUT_CAP (1 << 20)
#define KA_MAX_OUTPUT_CAP (8 << 20)   /* keeld's K_EXEC_OUTPUT_CAP_MAX: the most we hold per stream */
#define KA_RESPONSE_MAX ((size_t)8 << 20)
#define KA_STATE_DIR_MAX 2048          /* bytes: leaves room under PATH_MAX for file names */
#define KA_ERROR_MAX 1000              /* bytes of a result's error (keeld takes 1024) */

/* ---- identity.c ---------------------------------------------------------- */

typedef struct ka_identity {
  char agent_id[40];
  char server_url[1024];
  uint8_t pk[KEEL_AGENT_PK_BYTES];
  uint8_t sk[KEEL_AGENT_SK_BYTES];
  uint8_t server_pk[KEEL_AGENT_PK_BYTES];
} ka_identity_t;

/* Creates DIR (0700), DIR/running, DIR/spool and DIR/scripts when missing;
 * tightens each to 0700 when it exists with looser bits. */
int ka_state_prepare(const char *dir, keel_err_t *e);

/* Reads DIR/identity.json.  KEEL_ENOENT when there is none (first start),
 * KEEL_ECORRUPT when it is unreadable or malformed. */
int ka_identity_load(const char *dir, ka_identity_t *id, keel_err_t *e);
/* Writes DIR/identity.json atomically, mode 0600. */
int ka_identity_save(const char *dir, const ka_identity_t *id, keel_err_t *e);
/* Fills pk/sk with a fresh Ed25519 pair. */
void ka_identity_keygen(ka_identity_t *id);
/* Wipes the secret key. */
void ka_identity_wipe(ka_identity_t *id);

/* Atomic file replace: DIR/name.tmp -> write, fsync, rename, fsync DIR.
 * name MUST NOT contain '/'. */
int ka_write_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
                    keel_err_t *e);
/* Reads a whole (small) file into a new buffer of at most max bytes; caller
 * frees *out.  KEEL_ENOENT when absent. */
int ka_read_file(const char *path, size_t max, char **out, size_t *len, keel_err_t *e);
/* snprintf into a PATH_MAX buffer; KEEL_ETOOBIG when it did not fit.  main.c
 * bounds the state directory's length, so callers MAY ignore the result. */
int ka_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 when s is a run id we accept as a file name: [A-Za-z0-9_-]{1,64}. */
int ka_valid_run_id(const char *s);

/* ---- inventory.c --------------------------------------------------------- */

/* The host inventory object of the protocol; a new reference, NULL on no
 * memory.  Never fails for a missing /proc file: that field is left out
 * or zero. */
json_t *ka_inventory(void);
/* BLAKE2b-256 (hex) of the canonical text of inv. */
void ka_inventory_digest(char out[65], const json_t *inv);

/* ---- spool.c ------------------------------------------------------------- */

/* The result body of POST /v1/agent/results; new text, caller frees.  exit
 * code / signal < 0 mean null.  error may be NULL (""). */
char *ka_result_json(const char *run_id, const char *status, int exit_code, int sig,
                     const char *out, size_t out_len, int out_trunc, const char *err,
                     size_t err_len, int err_trunc, int64_t started_at, int64_t ended_at,
                     const char *error);
/* Writes DIR/spool/<run_id>.json atomically. */
int ka_spool_put(const char *dir, const char *run_id, const char *body, keel_err_t *e);
/* 1 when DIR/spool/<run_id>.json exists. */
int ka_spool_has(const char *dir, const char *run_id);
/* Every running/<id>.json without a spool file becomes an `interrupted`
 * result (its id appended to DIR/seen first); the running file is removed
 * once the spool file is durable.  MUST run before ka_exec_init, which
 * reads DIR/seen.
 * Returns the number of results spooled, or a negative code. */
int ka_spool_recover(const char *dir, const keel_log_t *log, keel_err_t *e);
/* The oldest spooled result (by modification time, then name): its run id
 * and body (caller frees).  KEEL_ENOENT when the spool is empty. */
int ka_spool_oldest(const char *dir, char run_id[KA_RUN_ID_MAX + 1], char **body, size_t *len,
                    keel_err_t *e);
/* Removes DIR/spool/<run_id>.json (and fsyncs the directory). */
int ka_spool_drop(const char *dir, const char *run_id);

/* ---- mspool.c ------------------------------------------------------------ */

/* Batches waiting for keeld: DIR/<name>/<seq><ext> (metrics/<seq>.kmb,
 * events/<seq>.json), oldest first, bounded in files and bytes (the oldest
 * are dropped, and counted, to make room).  Not fsync'd: see mspool.c. */
typedef struct ka_mspool {
  char dir[PATH_MAX];      /* DIR/<name> */
  char name[16];           /* "metrics", "events": the directory, and what logs say */
  char ext[8];             /* ".kmb", ".json" */
  uint64_t first;          /* seq of the oldest file (when count > 0) */
  uint64_t next;           /* seq of the next file written */
  size_t count;            /* files */
  uint64_t bytes;          /* their total size */
  uint64_t max_bytes;
  size_t max_batches;
  uint64_t dropped;        /* batches lost since start: room made, unwritable */
  const keel_log_t *log;   /* borrowed */
} ka_mspool_t;

/* Creates DIR/<name> (0700) when missing, counts what is there, removes
 * a crash's temporary file, and drops the oldest over the bounds.  name is
 * at most 15 bytes, ext (with its dot) at most 7. */
int ka_mspool_open(ka_mspool_t *s, const char *state_dir, const char *name, const char *ext,
                   uint64_t max_bytes, size_t max_batches, const keel_log_t *log, keel_err_t *e);
/* Appends a batch as the newest file, dropping the oldest while a bound
 * would be passed.  A batch over max_bytes by itself is dropped (counted).
 * On failure (KEEL_EIO) the batch is counted as dropped too. */
int ka_mspool_put(ka_mspool_t *s, const void *data, size_t len, keel_err_t *e);
/* The oldest batch (at most max bytes; a new buffer, caller frees) and its
 * seq.  KEEL_ENOENT when there is none. */
int ka_mspool_oldest(ka_mspool_t *s, uint64_t *seq, size_t max, char **body, size_t *len,
                     keel_err_t *e);
/* Removes batch seq when it is still the oldest (a batch made room for
 * while it was being sent is already gone).  lost: count it as dropped. */
void ka_mspool_drop(ka_mspool_t *s, uint64_t seq, int lost);

/* ---- exec.c -------------------------------------------------------------- */

typedef struct ka_run ka_run_t;

typedef struct ka_exec {
  const char *dir;            /* borrowed, outlives this */
  const ka_identity_t *id;    /* borrowed, outlives this */
  const keel_log_t *log;      /* borrowed, may be NULL */
  ka_run_t *runs;             /* owned list of running children */
  size_t nruns;
  uint64_t *seen;             /* owned ring of KA_SEEN_KEEP id hashes */
  size_t seen_n, seen_next;
  size_t seen_lines;          /* lines in DIR/seen, to know when to compact */
  int seen_fd;                /* DIR/seen opened O_APPEND */
} ka_exec_t;

/* Also removes script files left in DIR/scripts by an earlier agent (so it
 * MUST run after ka_spool_recover, which stops their runs). */
int ka_exec_init(ka_exec_t *x, const char *dir, const ka_identity_t *id, const keel_log_t *log,
                 keel_err_t *e);
/* Does not kill running children: they are left to become `interrupted`
 * on the next start (see main.c on SIGTERM).  Frees the bookkeeping only. */
void ka_exec_free(ka_exec_t *x);

/* One job from a poll answer: verifies sig with the stored server key and
 * that the job names our agent id (else a `refused` result is spooled and
 * nothing runs), skips a run id seen before, else records it in DIR/seen and
 * DIR/running and starts it.  A job that cannot start is spooled as
 * `failed`; one that is not exactly one of the kinds argv / shell / script
 * / http, or has a bad script or http member, as `refused`.  Returns 1 when
 * a result was spooled at once (refused/failed), 0 when started or skipped,
 * negative on a local storage failure. */
int ka_exec_submit(ka_exec_t *x, const char *job_text, size_t len, const char *sig_hex);

/* The pipes to watch (POLLIN); returns how many were written (<= max). */
size_t ka_exec_fds(const ka_exec_t *x, struct pollfd *fds, size_t max);
/* Milliseconds until the next timeout or drain deadline (>= 0), or -1 when
 * nothing is running. */
long ka_exec_next_ms(const ka_exec_t *x);
/* Reads pipes, reaps, enforces timeouts; spools every finished run.
 * Returns the number of results spooled. */
int ka_exec_step(ka_exec_t *x);
/* Appends the ids of the runs still running to arr (not those being
 * cancelled). */
void ka_exec_running(const ka_exec_t *x, json_t *arr);
/* keeld withdrew run_id (poll answer "cancel"): SIGTERM to its process
 * group, SIGKILL 5 s later if anything of it still runs; its result is
 * then spooled with status "cancelled" (exit_code / signal as it ended).
 * Returns 1 when it was running, 0 when unknown or already cancelled. */
int ka_exec_cancel(ka_exec_t *x, const char *run_id);
/* Test helper: steps until nothing runs or max_ms passes; returns what is
 * still running. */
size_t ka_exec_wait(ka_exec_t *x, long max_ms);

/* A command of the agent's own (--check), run under the same rules as a
 * job's argv: exec'd directly (PATH searched when argv[0] has no '/'), in
 * its own process group, with the sanitized environment of a job without
 * `env` or `user` (PATH, LANG, HOME, USER, LOGNAME of the agent's user),
 * stdin /dev/null, cwd "/".  Prepared once (argv copied), started as often
 * as needed without allocating. */
typedef struct ka_cmd ka_cmd_t;
int ka_cmd_prepare(ka_cmd_t **out, const char *const *argv, size_t argc, keel_err_t *e);
void ka_cmd_free(ka_cmd_t *c); /* NULL is fine */
/* Starts c: *pid is the child and its process group (kill(-pid, ...)),
 * *out_fd the read end of its stdout (non-blocking, the caller closes it);
 * stderr goes to /dev/null.  KEEL_EIO naming what failed (exec, fork,
 * pipe): nothing runs then. */
int ka_cmd_start(const ka_cmd_t *c, pid_t *pid, int *out_fd, keel_err_t *e);

/* ---- procgroup.c ---------------------------------------------------------- */

#define KA_BOOT_ID_LEN 64
/* This boot's id (/proc/sys/kernel/random/boot_id); 0 or -1. */
int ka_boot_id(char out[KA_BOOT_ID_LEN]);
/* Start time of pid in clock ticks since boot (stat field 22); 0 or -1. */
int ka_proc_start_time(long pid, unsigned long long *start);
/* Kills what is left of a run's process group after an agent crash: only
 * in the same boot, and only processes that are provably the run's (see
 * procgroup.c).  Returns how many were signalled (a group kill counts 1). */
int ka_procgroup_reap(long pgid, const char *boot_id, unsigned long long leader_start);

/* ---- conn.c, conn_plain.c, conn_curl.c ----------------------------------- */

/* Two transfers, `poll` (the long-poll) and `push` (results, inventory,
 * enrollment), each on its own keep-alive connection.  conn.c picks the
 * backend by the URL's scheme: http:// is conn_plain.c (our own small
 * HTTP/1.1 client, no library), https:// is conn_curl.c (libcurl, loaded
 * with dlopen only then, so a plain-http agent never maps it). */

/* ka_xfer_t.cc: 0, or why the transfer failed (the same for both backends;
 * ka_conn_strerror has the details). */
enum {
  KA_XE_OK = 0,
  KA_XE_CONNECT = 1, /* could not resolve or connect */
  KA_XE_TIMEOUT = 2, /* the request's timeout passed */
  KA_XE_TOOBIG = 3,  /* response body over KA_RESPONSE_MAX, or header block over 16 KiB */
  KA_XE_PROTO = 4,   /* malformed response */
  KA_XE_IO = 5,      /* connection lost, or any other transport error */
  KA_XE_NOMEM = 6,
};

typedef struct ka_xfer {
  void *be;                 /* backend state, owned; kept across requests (keep-alive) */
  char *body;               /* owned while active */
  keel_buf_t resp;          /* max KA_RESPONSE_MAX */
  char errbuf[256];         /* set when cc != 0 */
  int active;               /* a request is in flight */
  int done;                 /* finished since last looked at */
  int cc;                   /* KA_XE_* */
  long status;              /* HTTP status, 0 on transport error */
  char tag[KA_RUN_ID_MAX + 1]; /* what the caller sent (run id or "inventory") */
  const char *ctype;        /* the body's Content-Type (a static string); NULL: JSON */
} ka_xfer_t;

struct ka_conn_backend;

typedef struct ka_conn {
  const struct ka_conn_backend *ops; /* by the URL's scheme */
  void *be;                 /* backend state, owned */
  char *base;               /* server URL without trailing '/' (owned) */
  char *prefix;             /* its path part ("" or "/keel"), owned */
  const ka_identity_t *id;  /* borrowed; read at each ka_conn_post (may be filled after init) */
  const keel_log_t *log;    /* borrowed */
  ka_xfer_t poll, push;
} ka_conn_t;

/* For https:// this loads libcurl (KEEL_EIO naming the package when it is
 * not installed). */
int ka_conn_init(ka_conn_t *c, const char *base, const ka_identity_t *id, const keel_log_t *log,
                 keel_err_t *e);
void ka_conn_free(ka_conn_t *c);
/* Starts a signed POST of body (ownership taken, freed when done) on x,
 * which MUST be idle.  timeout_ms bounds the whole request. */
int ka_conn_post(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body, long timeout_ms,
                 keel_err_t *e);
/* The same for a body of len bytes (binary: NUL bytes allowed) of
 * Content-Type ctype (a static string, e.g. KEEL_MB_CONTENT_TYPE). */
int ka_conn_post_bin(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body, size_t len,
                     const char *ctype, long timeout_ms, keel_err_t *e);
/* The same with `Authorization: Bearer <token>` instead of a signature
 * (enrollment).  token is copied. */
int ka_conn_post_bearer(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body,
                        long timeout_ms, const char *token, keel_err_t *e);
/* poll() on the transfers' sockets plus extra (events as given, revents
 * filled; at most 64 of them), at most timeout_ms; then drives the
 * transfers and marks finished ones done.  extra MAY be NULL when n is 0. */
int ka_conn_wait(ka_conn_t *c, struct pollfd *extra, unsigned n, int timeout_ms);
/* One line for a finished transfer's transport error. */
const char *ka_conn_strerror(const ka_xfer_t *x);

typedef struct ka_backoff {
  int64_t step;   /* failures in a row */
  int64_t until;  /* monotonic ms before which not to retry */
} ka_backoff_t;
/* After a failure: wait a random time in [0, min(30 s, 0.5 s * 2^step)]. */
void ka_backoff_fail(ka_backoff_t *b, int64_t now_mono);
/* After a 401: wait exactly the cap. */
void ka_backoff_cap(ka_backoff_t *b, int64_t now_mono);
void ka_backoff_reset(ka_backoff_t *b);

#endif
