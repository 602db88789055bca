/* watch.h — the events keel-agent reports by itself (docs/agent-protocol.md,
 * "Events"):
 *
 *   service.down / service.up  --watch-process NAME: whether at least one
 *                              process named NAME runs (collect.h's
 *                              ka_proc_scan), looked at every tick
 *   file.changed               --watch-file PATH: inotify on PATH's
 *                              directory, evaluated (stat + BLAKE2b) once per
 *                              tick when something happened to PATH
 *   check.result               --check NAME=COMMAND: a Nagios plugin run every
 *                              check interval (exec.c's ka_cmd), reported
 *                              when its status changes
 *
 * Events go into a ka_evq_t: the batch being filled in memory, and the
 * spool DIR/events/<seq>.json (mspool.c) for batches keeld has not taken.
 * main.c posts them (POST /v1/agent/events) as soon as there are any.
 *
 * What was last reported (services' up/down, checks' status, files' content
 * and metadata) is kept in DIR/watch.json, written only when every event
 * describing it is acknowledged or on disk (ka_watch_save): a restart does
 * not report an unchanged state again, and never misses a change (at worst
 * reports it twice).
 *
 * Single-threaded like the rest of the agent.  Nothing here blocks: checks
 * run as children whose stdout joins the agent's poll().  In a steady state
 * (nothing changing) a tick allocates nothing.
 */
#ifndef KA_WATCH_H
#define KA_WATCH_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.h"
#include "collect.h"

#define KA_WATCH_MAX 64                     /* names, paths and checks, each */
#define KA_EV_BATCH_EVENTS 256              /* events per request (keeld's limit) */
#define KA_EV_BATCH_BYTES ((size_t)256 << 10) /* bytes per request (keeld's limit) */
#define KA_EV_SUBJECT_MAX 192 /* under keeld's K_EVENT_AGENT_SUBJECT_MAX: names and paths */
#define KA_CHECK_NAME_MAX 64
#define KA_CHECK_OUTPUT_MAX 4096            /* bytes of a check's stdout kept */
#define KA_CHECK_TIMEOUT_MS 10000
#define KA_FILE_HASH_MAX ((uint64_t)16 << 20) /* larger files are not hashed */

/* ---- the event queue (watch.c) -------------------------------------------- */

typedef struct ka_evq {
  keel_buf_t open;         /* the batch being filled: "{\"events\":[" ev "," ev ... */
  size_t n;                /* events in it */
  ka_mspool_t spool;       /* DIR/events: whole request bodies, oldest first */
  uint64_t refused;        /* events never queued: too big, not serializable */
  const keel_log_t *log;   /* borrowed */
} ka_evq_t;

/* Opens DIR/events (ka_mspool_open's bounds). */
int ka_evq_open(ka_evq_t *q, const char *state_dir, uint64_t spool_max, size_t spool_batches,
                const keel_log_t *log, keel_err_t *e);
/* Frees memory only: spool the open batch first (ka_evq_spool) to keep it. */
void ka_evq_close(ka_evq_t *q);
/* Queues {"type","subject","time" (RFC 3339, ms),"data"}; takes the reference
 * to data (an object).  A full batch (KA_EV_BATCH_EVENTS, KA_EV_BATCH_BYTES)
 * goes to the spool first.  An event that cannot be serialized or is
 * larger than a batch is dropped and counted in refused. */
void ka_evq_add(ka_evq_t *q, const char *type, const char *subject, int64_t t_ms, json_t *data);
/* The open batch becomes the newest spooled batch (kept in order behind
 * the others).  Nothing to do when it is empty. */
void ka_evq_spool(ka_evq_t *q);
/* The open batch as a request body into out (reset first), the queue
 * emptied.  Returns how many events it holds (0: none, out empty). */
size_t ka_evq_take(ka_evq_t *q, keel_buf_t *out);
/* Lost here: batches the spool dropped (its bounds, unwritable, unreadable:
 * ka_mspool_drop(.., 1)) plus single events refused; the caller adds the
 * batches keeld refused. */
uint64_t ka_evq_dropped(const ka_evq_t *q);

/* ---- the watches ------------------------------------------------------------ */

typedef struct ka_watch_opts {
  const char *procs[KA_WATCH_MAX];   /* --watch-process NAME, 1..192 bytes of UTF-8 */
  size_t nprocs;
  const char *files[KA_WATCH_MAX];   /* --watch-file PATH, absolute, at most 192 bytes */
  size_t nfiles;
  const char *checks[KA_WATCH_MAX];  /* --check NAME=COMMAND */
  size_t nchecks;
  int check_shell;                   /* --check-shell: /bin/sh -c COMMAND */
  int64_t check_interval_ms;         /* --check-interval; 0 = 60 s */
  int64_t check_timeout_ms;          /* 0 = KA_CHECK_TIMEOUT_MS (tests shorten it) */
  const char *proc_root;             /* NULL = "/proc" (tests) */
} ka_watch_opts_t;

typedef struct ka_wfile ka_wfile_t;
typedef struct ka_check ka_check_t;

typedef struct ka_watch {
  char dir[PATH_MAX];               /* the state directory */
  const keel_log_t *log;            /* borrowed */
  ka_evq_t *q;                      /* borrowed: where events go */
  /* processes */
  const char *pnames[KA_WATCH_MAX]; /* borrowed from the options */
  size_t npnames;
  char proot[256];
  void *procdir;                    /* DIR *, kept open (ka_proc_scan) */
  ka_proc_want_t pwant;             /* the names' part of a walk (ka_watch_procs) */
  unsigned pcount[KA_WATCH_MAX];    /* running processes per name, counted by the next walk */
  signed char pstate[KA_WATCH_MAX]; /* reported: -1 nothing yet, 0 down, 1 up */
  int proc_warned;                  /* /proc unreadable: said once */
  /* files (watch_file.c) */
  ka_wfile_t *files;                /* owned, nfiles */
  size_t nfiles;
  int ifd;                          /* inotify, -1 without files */
  /* checks (watch_check.c) */
  ka_check_t *checks;               /* owned, nchecks */
  size_t nchecks;
  int64_t check_interval_ms, check_timeout_ms;
  int state_dirty;                  /* DIR/watch.json is behind */
} ka_watch_t;

/* Validates the options (KEEL_EINVAL naming the bad one), reads
 * DIR/watch.json (what was reported before), sets up inotify and the
 * checks (each first runs at the first ka_watch_step).  Nothing is
 * reported before the first ka_watch_tick / ka_watch_step. */
int ka_watch_init(ka_watch_t *w, const ka_watch_opts_t *o, const char *state_dir, ka_evq_t *q,
                  const keel_log_t *log, keel_err_t *e);
/* Kills running checks' process groups; frees everything. */
void ka_watch_free(ka_watch_t *w);
/* 1 when anything is watched. */
int ka_watch_any(const ka_watch_t *w);
/* Every --interval: the processes, and the files something happened to. */
void ka_watch_tick(ka_watch_t *w);
/* The --watch-process names' part of a /proc walk, or NULL when no process
 * is watched: a walk that served it (ka_collect_t.also, run just before
 * ka_watch_tick) spares the tick a walk of its own. */
ka_proc_want_t *ka_watch_procs(ka_watch_t *w);
/* The descriptors to poll (POLLIN): inotify, running checks' stdout.
 * Returns how many were written (<= max). */
size_t ka_watch_fds(const ka_watch_t *w, struct pollfd *fds, size_t max);
/* After every poll: reads inotify (marks files for the next tick), reads
 * and reaps checks, kills those past their timeout, starts due ones. */
void ka_watch_step(ka_watch_t *w);
/* Milliseconds until a check is due or times out (>= 0), -1 when none. */
long ka_watch_next_ms(const ka_watch_t *w);
/* Writes DIR/watch.json when what was reported changed.  Call it only when
 * every event queued so far is acknowledged or spooled (see above). */
void ka_watch_save(ka_watch_t *w);

/* ---- internals shared by watch*.c ------------------------------------------ */

/* KEEL_EINVAL ("FLAG 'X' given twice") when vals[i] is one of vals[0..i). */
int ka_watch_once(const char *flag, const char *const *vals, size_t i, keel_err_t *e);
/* Queues an event with data {..., "labels": {label: value}} (data's
 * reference taken). */
void ka_watch_emit(ka_watch_t *w, const char *type, const char *subject, const char *label,
                   const char *value, json_t *data);

int ka_wfile_init(ka_watch_t *w, const char *const *paths, size_t n, keel_err_t *e);
void ka_wfile_free(ka_watch_t *w);
void ka_wfile_tick(ka_watch_t *w);
void ka_wfile_read(ka_watch_t *w);   /* drains the inotify descriptor */
json_t *ka_wfile_state(const ka_watch_t *w);              /* for DIR/watch.json */
void ka_wfile_restore(ka_watch_t *w, const json_t *saved); /* from it */

int ka_check_init(ka_watch_t *w, const char *const *specs, size_t n, int shell, keel_err_t *e);
void ka_check_free(ka_watch_t *w);
void ka_check_step(ka_watch_t *w);
size_t ka_check_fds(const ka_watch_t *w, struct pollfd *fds, size_t max);
long ka_check_next_ms(const ka_watch_t *w);
json_t *ka_check_state(const ka_watch_t *w);
void ka_check_restore(ka_watch_t *w, const json_t *saved);

/* A Nagios plugin's output: status text = the first line up to '|', the
 * performance data after it, both trimmed, NUL-terminated, invalid UTF-8
 * made '?'.  text is modified in place; the results point into it. */
void ka_check_parse(char *text, size_t len, const char **output, const char **perfdata);

#endif
