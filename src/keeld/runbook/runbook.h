/* runbook.h — the runbook engine: storing applied Runbook documents
 * (docs/runbooks.md).  Executions, rate control and approvals build on it.
 *
 * The engine owns the table runbooks.  Functions that write MUST be called
 * inside a store unit.  JSON results are new references the caller owns.
 */
#ifndef KEELD_RUNBOOK_H
#define KEELD_RUNBOOK_H

#include <jansson.h>
#include <stdint.h>

#include "keel/buf.h"
#include "store/store.h"

/* The policy path of a runbook: "app/APP/runbook/NAME" when an application
 * owns it, "team/TEAM/runbook/NAME" when a team does. */
void k_runbook_path(const json_t *runbook, char *out, size_t n);

/* Stores a normalized runbook (runbook/doc.h) unless dry_run.  *report has
 * the shape of an organization apply: {"changed", "dry_run", "prune":
 * false, "summary", "changes": [{"op","kind":"runbook","name","fields"}],
 * "removed": []}.  detail gets the audit summary. */
int k_runbook_apply(k_store_t *s, const json_t *runbook, int dry_run, int64_t now_ms,
                    json_t **report, keel_buf_t *detail, keel_err_t *e);

/* One runbook {"name", "kind": "runbook", "owner", "version", "created_at",
 * "updated_at", "document": normalized}. KEEL_ENOENT when unknown. */
int k_runbook_get(k_store_t *s, const char *name, json_t **out, keel_err_t *e);
/* Runbooks by name after `after`, without their documents' steps; *next
 * as in the other lists. */
int k_runbook_list(k_store_t *s, const char *after, int limit, json_t **items, char **next,
                   keel_err_t *e);
int k_runbook_delete(k_store_t *s, const char *name, keel_err_t *e);

#endif
