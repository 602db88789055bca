/* runbook/doc.h — the Runbook document (docs/runbooks.md): checking it,
 * giving it one normalized shape, and checking the parameters an execution
 * starts with.
 *
 * Validation is purely about the document: nothing here reads the store
 * (owners, approvers and the schedule's user are left for apply to find).
 *
 * Normalized form (every key always present, in this shape):
 *   {"kind": "Runbook", "name", "description": text|null,
 *    "owner":      {"application": A} | {"team": T},
 *    "parameters": [{"name", "type", "required", "default": value|null,
 *                    "allowed": [..]|null, "pattern": text|null, "description": text|null}],
 *    "targets":    selector text (may hold templates),
 *    "rate":       {"concurrency": N|"P%", "max_errors": N|"P%", "batches": [N|"P%", ..., "100%"],
 *                   "batch_pause": "none"|"first"|"every"|duration text},
 *    "schedule":   null | {"cron": text|null, "rate_ms": int|null, "params": {..}, "owner"},
 *    "timeout_ms": int|null (an execution's longest run, 1m..30d; null: none),
 *    "steps":      [{"name", "timeout_ms": int|null, "on_failure": {"action": "abort"|"continue"}
 *                                                     | {"action": "rollback-to", "step": X},
 *                    and exactly one of
 *                    "command":  {"argv": [..]} | {"shell": text},
 *                    "script":   {"interpreter", "body"},
 *                    "http":     {"url", "method", "expect_status", "expect_body": text|null},
 *                    "sleep_ms": int,
 *                    "approval": {"approvers", "min_approvals", "message": text|null, "timeout_ms"},
 *                    "assert":   {"step", "field", and one of "equals", "not_equals",
 *                                 "contains", "matches": text}}]}
 * Defaults: concurrency "100%", max_errors 0, batches ["100%"] (and "100%"
 * appended when the last batch is not), batch_pause "none", timeout 60s,
 * on_failure abort, interpreter /bin/sh, method GET, expect_status 200,
 * min_approvals 1, approval timeout 24h, required false.
 *
 * Durations are integer milliseconds under a "_ms" key in the normalized
 * form; a document may spell each of them either way ("timeout: 30s" or
 * "timeout_ms: 30000", "sleep: 5s" or "sleep_ms: 5000", "rate: 15m" or
 * "rate_ms": 900000) but not both.  on_failure may also be given in its
 * object form.  An optional field given as null counts as absent.  So the
 * normalized form validates to itself.
 *
 * timeout_ms is null for sleep, approval and assert steps (a step-level
 * timeout is an error there: an approval has its own approval.timeout).
 * An approval runs once per execution, so its message may not use target.*
 * or steps.* (both are per target); targets may use neither either.
 *
 * Templated fields (keel/template.h; each checked with keel_tmpl_parse and
 * its references resolved): targets, command.argv[*], command.shell,
 * script.body, http.url, http.expect_body, approval.message, assert.equals,
 * assert.not_equals, assert.contains.  Names: params.NAME (declared),
 * steps.NAME.stdout|stderr|exit_code (an earlier step), target.id,
 * target.hostname, target.tags.KEY, execution.id.
 *
 * Regular expressions (parameter patterns, assert.matches) are POSIX
 * extended, at most 512 bytes; back-references are refused, and so is an
 * expression of more than 1000 atoms once its repetitions are expanded
 * (regcomp's automaton, and its memory, grow with that).
 */
#ifndef KEELD_RUNBOOK_DOC_H
#define KEELD_RUNBOOK_DOC_H

#include <jansson.h>
#include <stddef.h>

#include "docwalk.h"
#include "keel/err.h"
#include "keel/yaml.h"

#define K_RUNBOOK_PARAM_MAX 16384 /* bytes of one string parameter value (or list item) */

/* Validates a parsed Runbook document (doc, borrowed) and returns the
 * normalized form in *out (a new reference the caller owns; NULL on error).
 * name (borrowed) and pos (borrowed, may be NULL: then no line:col) are for
 * messages: "name:line:col: steps[2].on_failure: ...".  KEEL_EINVAL (or
 * KEEL_ENOMEM); the first problem found (unknown fields of a mapping before
 * its known ones). */
int k_runbook_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                           json_t **out, keel_err_t *e);

/* 1 when s[0..n) is an object name as runbooks, teams, applications and
 * users have them: [a-z0-9][a-z0-9._-]{0,62}. */
int k_runbook_name_ok(const char *s, size_t n);

/* The approval members of mapping c (borrowed) as a runbook's approval
 * step has them, for every document that asks for an approval (an
 * automation rule's require_approval too): approvers (team:NAME /
 * user:NAME, at most 64, no repeats; required when need_approvers, else
 * absent = null), min_approvals (1..100, default 1; not more than the
 * users listed when no team is), timeout (1m..7d, default 24h).  Unknown
 * members are the caller's to refuse.  *out: a new {"approvers": [..] |
 * null, "min_approvals", "timeout_ms"}.  Errors name where (W). */
int k_runbook_approval_check(k_walk_t *W, const json_t *c, int need_approvers, json_t **out);

/* keel_yaml_load + k_runbook_doc_validate: buf[0..len) is YAML or JSON text. */
int k_runbook_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);

/* Checks the parameters an execution starts with.  runbook (borrowed) is a
 * normalized runbook; given (borrowed, may be NULL: none) an object name ->
 * value, where a member whose value is null counts as absent.  Strings are
 * accepted for int, bool and list parameters (values given on a command
 * line as k=v): "3" -> 3, "true"/"false", "a,b" -> ["a","b"] ("" -> []).
 * Checks: no unknown names, required ones present, types, allowed values,
 * patterns; string values (and list items) are at most
 * K_RUNBOOK_PARAM_MAX bytes and hold no NUL byte, anything else is data.
 * Fills defaults; an optional parameter without a default that is not
 * given is left out.  *out: a new object the caller owns (NULL on error).
 * KEEL_EINVAL with "params.NAME: what was wrong", or KEEL_ENOMEM. */
int k_runbook_params(const json_t *runbook, const json_t *given, json_t **out, keel_err_t *e);

#endif
