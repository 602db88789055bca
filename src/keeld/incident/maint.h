/* maint.h — maintenance windows (docs/incidents.md, "Maintenance windows"):
 * `kind: MaintenanceWindow` documents, and the one question the other
 * engines ask of them: is what these labels describe under maintenance now?
 *
 * A window suppresses notifications (incidents) and automation (the
 * automation engine), never detection: alerts still fire, incidents still
 * open, events are still recorded; what a window suppressed is recorded as
 * such.
 *
 * Document (normalized form, every key present):
 *   {"kind": "MaintenanceWindow", "name", "team" (the owner team),
 *    "selector": text (src/lib/selector.c grammar, matched against labels),
 *    "reason": text|null,
 *    "start": RFC 3339|null, "end": RFC 3339|null        (one-off: both), or
 *    "cron": text|null, "duration_ms": int|null}         (recurring: both;
 *                                                         cron in UTC, runbook/cron.h)
 * A document may spell the duration "duration: 2h" or "duration_ms": N (not
 * both); start/end are normalized to UTC with milliseconds.  The selector
 * may not be empty (a window for everything is a mistake more often than a
 * wish); it matches as k_event_labels_match says (event/labels.h): its
 * keys `id` and `hostname` read the labels "agent_id" and "instance".
 *
 * A one-off window is active for start <= now < end; a recurring one for
 * t <= now < t + duration, t any time its cron fires.
 *
 * The engine owns the table maintenance_windows and keeps the windows in
 * memory (selectors parsed; a cron or start/end is read from the document
 * when a matching window is asked about), rebuilt from the store by
 * k_maint_reload after an apply (before the next loop iteration, like the
 * organization), so a rolled-back apply never takes effect.  Loop thread
 * only.
 */
#ifndef KEELD_INCIDENT_MAINT_H
#define KEELD_INCIDENT_MAINT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/log.h"
#include "keel/yaml.h"
#include "store/store.h"

typedef struct k_maint k_maint_t;

#define K_MAINT_NAME_MAX 64 /* bytes of a window's name, NUL included */

/* 1 when an active window's selector matches labels (an object of string
 * values, borrowed; NULL = none) at now_ms, with that window's name in
 * window[0..window_len) (the first by name when several match); 0
 * otherwise (window, when not NULL, gets "").  m NULL: 0. */
int k_maint_suppressed(const k_maint_t *m, const json_t *labels, int64_t now_ms, char *window,
                       size_t window_len);

/* Opens the engine on s and loads the stored windows.  *out owned by the
 * caller (k_maint_close). */
int k_maint_open(k_store_t *s, const keel_log_t *log, k_maint_t **out, keel_err_t *e);
void k_maint_close(k_maint_t *m);
/* Set by an apply; the loop then calls k_maint_reload. */
int k_maint_dirty(const k_maint_t *m);
/* Rebuilds the windows from the store; on error the previous ones stay. */
int k_maint_reload(k_maint_t *m, keel_err_t *e);

/* Validates a parsed document (borrowed) into its normalized form (*out, a
 * new reference; NULL on error).  Errors as runbook/doc.h:
 * "name:line:col: dotted.path: what" (KEEL_EINVAL), KEEL_ENOMEM. */
int k_maint_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                         json_t **out, keel_err_t *e);
/* keel_yaml_load + k_maint_doc_validate. */
int k_maint_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e);

/* The policy path of a window: "team/TEAM/maintenance/NAME". */
void k_maint_path(const json_t *doc, char *out, size_t n);

/* Stores a normalized document unless dry_run (inside the caller's unit)
 * and marks the engine dirty.  *report and detail as k_runbook_apply's
 * (kind "maintenance_window"). */
int k_maint_apply(k_maint_t *m, const json_t *doc, int dry_run, int64_t now_ms, json_t **report,
                  keel_buf_t *detail, keel_err_t *e);

/* The windows as GET /v1/maintenance shows them, by name: a new array of
 * {"name", "team", "selector", "reason", "start", "end", "cron",
 *  "duration", "active": bool, "active_until": time|null,
 *  "next_start": time|null, "path"} as of now_ms. */
json_t *k_maint_list(const k_maint_t *m, int64_t now_ms);

/* For tests and the list: whether the window doc (normalized) is active at
 * now_ms; *until_ms gets the end of the current occurrence (when active)
 * and *next_ms the start of the next one after now (-1 when none). */
int k_maint_doc_active(const json_t *doc, int64_t now_ms, int64_t *until_ms, int64_t *next_ms);

#endif
