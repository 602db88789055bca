/* idoc.h — what the incident engine's two documents (NotificationPolicy,
 * MaintenanceWindow) share: typed member getters over the document walker
 * (docwalk.h: errors name file:line:col and the dotted path) and storing a
 * normalized document as one row.  Internal to src/keeld/incident/.
 *
 * Getters: obj is the mapping being checked (the walker positioned on it);
 * *out is borrowed from obj (NULL when absent and optional); members given
 * as null count as absent.
 */
#ifndef KEELD_INCIDENT_IDOC_H
#define KEELD_INCIDENT_IDOC_H

#include <jansson.h>
#include <stdint.h>

#include "docwalk.h"
#include "keel/buf.h"
#include "store/store.h"

#define K_IDOC_TEXT_MAX 1024

/* A one-line string of 1..max bytes without control characters. */
int k_idoc_text(k_walk_t *W, const json_t *obj, const char *key, int required, size_t max,
                json_t **out);
/* A selector (keel/selector.h); "" refused when !empty_ok. */
int k_idoc_selector(k_walk_t *W, const json_t *obj, const char *key, int required, int empty_ok,
                    json_t **out);
/* A boolean; *v = def when absent. */
int k_idoc_bool(k_walk_t *W, const json_t *obj, const char *key, int def, int *v);
/* One of vals (NULL-ended); *out = def (a static string) when absent. */
int k_idoc_enum(k_walk_t *W, const json_t *obj, const char *key, const char *const *vals,
                const char *def, const char **out);
/* An http:// or https:// URL of at most 2048 bytes without spaces or
 * control characters and with a host. */
int k_idoc_url(k_walk_t *W, const json_t *obj, const char *key, json_t **out);

/* Where one kind of document is stored: table(key_col TEXT PRIMARY KEY,
 * [team TEXT,] spec, created_ms, updated_ms, version). */
typedef struct k_idoc_table {
  const char *table;
  const char *key_col;
  int has_team; /* the table has a team column */
  const char *kind; /* in apply reports: "maintenance_window" */
} k_idoc_table_t;

/* Stores doc (normalized) under key unless dry_run, inside the caller's
 * unit; *report and detail as k_runbook_apply's ("name" is label). */
int k_idoc_apply(k_store_t *s, const k_idoc_table_t *t, const char *key, const char *team,
                 const char *label, const json_t *doc, int dry_run, int64_t now_ms,
                 json_t **report, keel_buf_t *detail, keel_err_t *e);
/* Every stored spec of t, parsed, in key order: *out a new array. */
int k_idoc_all(k_store_t *s, const k_idoc_table_t *t, json_t **out, keel_err_t *e);

#endif
