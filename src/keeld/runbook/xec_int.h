/* xec_int.h — what the files of the execution engine share (xec.c: the
 * state machine; xec_store.c: its rows; xec_sched.c: schedules).  Not for
 * other engines. */
#ifndef KEELD_RUNBOOK_XEC_INT_H
#define KEELD_RUNBOOK_XEC_INT_H

#include "runbook/rate.h"
#include "runbook/xec.h"

typedef enum {
  X_PENDING = 0,
  X_WAITING,   /* waiting_approval */
  X_RUNNING,
  X_PAUSED,
  X_SUCCEEDED, /* from here on: finished */
  X_FAILED,
  X_CANCELLED,
  X_TIMED_OUT,
} k_xstate_t;

typedef enum { T_PENDING = 0, T_RUNNING, T_SUCCEEDED, T_FAILED, T_SKIPPED, T_CANCELLED } k_tstate_t;

/* the open attempt of a target's current step */
typedef enum { O_NONE = 0, O_RUNNING, O_WAITING } k_open_t;

typedef struct k_xtarget {
  char agent_id[24];
  char hostname[256];
  json_t *tags;            /* owned */
  size_t batch;
  k_tstate_t st;
  int step;                /* index of the step running or next to run */
  int seq;                 /* attempts recorded so far (the open one included) */
  k_open_t open;
  char run_id[24];         /* agent steps */
  int64_t deadline_ms;     /* agent steps: give up; sleep: wake */
  int result_ready;        /* the exec engine has the run's result */
  int interrupted;         /* found in flight at load: report interrupted */
  int rolled_back;
  int64_t started_ms, ended_ms;
  char error[512];
  json_t *outputs;         /* owned: step name -> {"stdout","stderr","exit_code"} */
} k_xtarget_t;

typedef struct k_xexe {
  struct k_xexe *next;
  char id[24];
  char runbook[64];
  int64_t version;
  json_t *doc;             /* owned: normalized runbook */
  json_t *params;          /* owned */
  char requested_by[64];
  int by_schedule;
  char cause[96];          /* "" or "automation/RULE" (k_xec_origin_t) */
  k_xstate_t st;
  char reason[512];
  k_rate_plan_t plan;
  size_t resumed_after;
  int64_t pause_until_ms;  /* 0: none */
  int approval_step;       /* -1: none open */
  int64_t approval_deadline_ms;
  char *approval_message;  /* owned, may be NULL */
  unsigned char *approved; /* per step: 1 once its approval passed */
  size_t nsteps;
  int64_t created_ms, started_ms, ended_ms, deadline_ms;
  k_xtarget_t *t;          /* the targets that run (online at start), in start order */
  size_t nt;
  int dirty;               /* something to do on the next tick */
} k_xexe_t;

struct k_xec {
  k_xec_deps_t d;
  k_xexe_t *head;
  int sched_dirty;
  json_t *scheds;          /* cache: [{"runbook","schedule","spec","base_ms","last_slot_ms"}] */
};

extern const char *const k_xstate_names[];
extern const char *const k_tstate_names[];

static inline int k_xstate_final(k_xstate_t s) { return s >= X_SUCCEEDED; }

/* xec.c */
void k_xexe_free(k_xexe_t *x);
k_xexe_t *k_xec_find(k_xec_t *x, const char *id);
/* What templates and asserts see of a finished step on a target:
 * {"stdout","stderr" (trailing newlines removed), "exit_code"|null}. */
json_t *k_xec_step_outputs(const char *out, const char *err, const json_t *exit_code);
/* The job of an agent step st (command, script or http) rendered for
 * target t: {argv|shell|script|http, timeout_ms, env, cwd, user,
 * output_cap}.  KEEL_EINVAL when a value cannot be used (a NUL byte). */
int k_xec_step_spec(const k_xexe_t *ex, const k_xtarget_t *t, const json_t *st, json_t **spec,
                    keel_err_t *e);

/* xec_store.c: rows.  All inside the caller's unit. */
int k_xs_insert_execution(k_xec_t *x, const k_xexe_t *ex, const char *retry_of, keel_err_t *e);
int k_xs_update_execution(k_xec_t *x, const k_xexe_t *ex, keel_err_t *e);
int k_xs_insert_target(k_xec_t *x, const char *exe_id, size_t idx, const char *agent_id,
                       const char *hostname, const json_t *tags, size_t batch, const char *status,
                       const char *error, keel_err_t *e);
int k_xs_update_target(k_xec_t *x, const k_xexe_t *ex, size_t idx, keel_err_t *e);
/* A new attempt row of step on target idx, numbered t->seq (already
 * incremented). */
int k_xs_step_open(k_xec_t *x, const k_xexe_t *ex, size_t idx, const char *status,
                   int64_t now_ms, keel_err_t *e);
/* Closes the attempt t->seq with its outcome. */
int k_xs_step_close(k_xec_t *x, const k_xexe_t *ex, size_t idx, const char *status,
                    const json_t *exit_code, const char *out, const char *err, int truncated,
                    int64_t ended_ms, const char *error, keel_err_t *e);
int k_xs_decision(k_xec_t *x, const char *exe_id, int step, const char *user, int approve,
                  const char *comment, int64_t now_ms, keel_err_t *e);
/* Approvals given so far on step (count), and whether user already decided. */
int k_xs_decisions(k_xec_t *x, const char *exe_id, int step, const char *user, int *napprove,
                   int *mine, keel_err_t *e);
/* Loads every unfinished execution onto x->head. */
int k_xs_load(k_xec_t *x, keel_err_t *e);
/* Appends {"agent_id","hostname","status": "skipped"} for each target of
 * exe_id skipped at start (offline) to the array into. */
int k_xs_skipped_targets(k_xec_t *x, const char *exe_id, json_t *into, keel_err_t *e);

#endif
