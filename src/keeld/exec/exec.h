/* exec.h — commands run on many hosts, and their per-host runs.
 *
 * A command is created for every agent its selector matches at that moment:
 * online agents get a run in status "pending" carrying a job signed with
 * the server key; offline ones a run "skipped" (error "offline").  Agents
 * fetch pending runs by long-poll (fleet) and report one result per run;
 * results are idempotent by run id.
 *
 * The engine owns the tables commands and command_runs; agents are read
 * through the fleet engine's API only.  Functions that write MUST be called
 * inside a store unit.  JSON results are new references the caller owns.
 */
#ifndef KEELD_EXEC_H
#define KEELD_EXEC_H

#include <jansson.h>
#include <stdint.h>

#include "fleet/fleet.h"
#include "keel/buf.h"
#include "keel/selector.h"
#include "serverkey.h"
#include "store/store.h"

#define K_EXEC_OUTPUT_CAP_DEFAULT (1 << 20)
#define K_EXEC_OUTPUT_CAP_MAX (8 << 20)
/* Largest result body an agent may send: both outputs at the largest cap,
 * base64, plus room for the rest. */
#define K_EXEC_RESULT_BODY_MAX ((size_t)K_EXEC_OUTPUT_CAP_MAX / 3 * 4 * 2 + 65536)

/* Decodes POST /v1/commands: {target, argv | shell, timeout, env, cwd, user,
 * output_cap}.  *spec (owned) is the normalized command
 * {argv|null, shell|null, timeout_ms, env, cwd|null, user|null, output_cap},
 * *sel (owned) the parsed target, *target the target text (borrowed from
 * *spec's "target" member).  Errors name the field (and selector column). */
int k_exec_decode(const char *body, size_t len, json_t **spec, keel_selector_t **sel,
                  keel_err_t *e);

/* Creates the command and its runs; marks matched online agents to wake.
 * detail receives the audit summary (argv, hosts, skipped; never env values). */
int k_exec_create(k_store_t *s, k_fleet_t *f, const k_serverkey_t *key, const json_t *spec,
                  const keel_selector_t *sel, const char *created_by, int64_t now_ms,
                  json_t **out, keel_buf_t *detail, keel_err_t *e);

/* Pending jobs of an agent, at most max, skipping run ids listed in running
 * (the agent's own list: array of strings, may be NULL): *jobs
 * [{"job": text, "sig": hex}, ...]; *cancel the run ids of running that
 * were withdrawn (k_exec_run_withdraw), which the agent must stop.  Both
 * new arrays, possibly empty. */
int k_exec_jobs(k_store_t *s, const char *agent_id, const json_t *running, int max,
                json_t **jobs, json_t **cancel, keel_err_t *e);

/* Decodes POST /v1/agent/results (one result); also used by the fuzzer. */
int k_exec_decode_result(const char *body, size_t len, json_t **out, keel_err_t *e);
/* Owner of a run: its agent and command.  KEEL_ENOENT when unknown. */
int k_exec_run_owner(k_store_t *s, const char *run_id, char agent_id[32], char command_id[32],
                     keel_err_t *e);
/* Stores a decoded result of agent_id's run.  *dup is set when the run
 * already had a result: nothing changes, except that a withdrawn run keeps
 * the first result's output, times, exit code and signal (its status
 * stays "cancelled").  detail: audit summary with the
 * exit code and the BLAKE2b of each output. */
int k_exec_store_result(k_store_t *s, const char *agent_id, const json_t *res, int64_t now_ms,
                        int *dup, keel_buf_t *detail, keel_err_t *e);

/* ---- runs owned by another engine (runbook executions) ----
 * Such a run's command_id is its owner's id (an execution's "exe_...").
 * spec: {exactly one non-null of argv | shell | script | http, timeout_ms,
 * env, cwd, user, output_cap} (docs/agent-protocol.md); the engine signs
 * it and marks a to wake.  run_id receives the new run's id. */
int k_exec_run_add(k_store_t *s, const k_serverkey_t *key, const char *owner_id, k_agent_t *a,
                   const json_t *spec, int64_t now_ms, char run_id[24], keel_err_t *e);
/* Withdraws a run without a result: status "cancelled" with error why; it
 * is never delivered again, an agent that runs it is told to stop it at
 * its next poll (f, may be NULL: its agent is marked to wake), and the
 * first result the agent sends later only adds the host's outcome
 * (k_exec_store_result).  *withdrawn (may be NULL) says whether it still
 * had none. */
int k_exec_run_withdraw(k_store_t *s, k_fleet_t *f, const char *run_id, const char *why,
                        int64_t now_ms, int *withdrawn, keel_err_t *e);
/* A run's stored result, or *out NULL while it has none: {"status",
 * "exit_code"|null, "signal"|null, "stdout", "stderr" (text of at most cap
 * bytes each, NUL and invalid UTF-8 replaced), "truncated", "started_ms",
 * "ended_ms", "error"}. */
int k_exec_run_result(k_store_t *s, const char *run_id, size_t cap, json_t **out, keel_err_t *e);

/* The runs of command id without a result: *runs [{"run_id", "agent_id"}]
 * (new).  KEEL_ENOENT for an unknown command. */
int k_exec_open_runs(k_store_t *s, const char *id, json_t **runs, keel_err_t *e);
/* Withdraws every run of command id without a result (k_exec_run_withdraw,
 * error why); *n how many.  KEEL_ENOENT unknown, KEEL_ECONFLICT when none
 * was left. */
int k_exec_cancel(k_store_t *s, k_fleet_t *f, const char *id, const char *why, int64_t now_ms,
                  size_t *n, keel_err_t *e);

/* A command's run counts {"total","pending","succeeded","failed","skipped",
 * "cancelled"}
 * (as "summary" in k_exec_get) and whether no run is pending. */
int k_exec_summary(k_store_t *s, const char *id, json_t **summary, int *done, keel_err_t *e);

/* One command with every run (outputs included). */
int k_exec_get(k_store_t *s, const char *id, json_t **out, keel_err_t *e);
/* Commands, newest first; cursor is the last id of the previous page. */
int k_exec_list(k_store_t *s, const char *cursor, int limit, json_t **items, char **next,
                keel_err_t *e);

#endif
