/* idoc.c — member getters and the document row store (idoc.h). */
#include "incident/idoc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"

/* Runs one check with the walker on obj.key; pops after. */
#define AT(W, key, expr)                     \
  do {                                       \
    k_walk_mark_t m_ = k_walk_push_key(W, key); \
    rc = (expr);                             \
    k_walk_pop(W, m_);                       \
  } while (0)

int k_idoc_text(k_walk_t *W, const json_t *obj, const char *key, int required, size_t max,
                json_t **out) {
  int rc = k_walk_get_text(W, obj, key, required, max, K_WALK_LINE, out);
  if (rc || !*out || json_string_length(*out)) return rc;
  AT(W, key, k_walk_err(W, "must not be empty"));
  *out = NULL;
  return rc;
}

int k_idoc_selector(k_walk_t *W, const json_t *obj, const char *key, int required, int empty_ok,
                    json_t **out) {
  json_t *v;
  int rc = k_walk_get_text(W, obj, key, required, KEEL_SELECTOR_MAX_LEN, K_WALK_LINE, &v);
  *out = NULL;
  if (rc || !v) return rc;
  AT(W, key, k_walk_selector(W, v, NULL));
  if (!rc && !empty_ok && strspn(json_string_value(v), " \t\r\n") == json_string_length(v))
    AT(W, key, k_walk_err(W, "must not be empty (it would match everything)"));
  if (!rc) *out = v;
  return rc;
}

int k_idoc_bool(k_walk_t *W, const json_t *obj, const char *key, int def, int *v) {
  json_t *b = k_walk_member(obj, key);
  int rc = 0;
  *v = def;
  if (!b) return 0;
  if (!json_is_boolean(b)) AT(W, key, k_walk_err(W, "expected true or false"));
  else *v = json_is_true(b);
  return rc;
}

int k_idoc_enum(k_walk_t *W, const json_t *obj, const char *key, const char *const *vals,
                const char *def, const char **out) {
  json_t *s = k_walk_member(obj, key);
  int rc;
  *out = def;
  if (!s) return def ? 0 : k_walk_missing(W, key);
  AT(W, key, k_walk_enum(W, s, vals));
  for (const char *const *p = vals; !rc && *p; p++)
    if (k_walk_is(s, *p)) *out = *p;
  return rc;
}

int k_idoc_url(k_walk_t *W, const json_t *obj, const char *key, json_t **out) {
  int rc = k_idoc_text(W, obj, key, 1, 2048, out);
  const char *u, *host;
  if (rc) return rc;
  u = json_string_value(*out);
  host = !strncmp(u, "http://", 7) ? u + 7 : !strncmp(u, "https://", 8) ? u + 8 : NULL;
  if (!host)
    AT(W, key, k_walk_err(W, "expected an http:// or https:// URL"));
  else if (strchr(u, ' ') || !*host || *host == '/' || *host == ':' || *host == '?')
    AT(W, key, k_walk_err(W, "expected a URL with a host and no spaces"));
  if (rc) *out = NULL;
  return rc;
}

/* ---- the row store ---------------------------------------------------------------- */

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

static int spec_row(void *ud, const k_val_t *c, int n) {
  json_t **spec = ud;
  if (n >= 1) *spec = json_loads(txt(&c[0]), 0, NULL);
  return 0;
}

int k_idoc_apply(k_store_t *s, const k_idoc_table_t *t, const char *key, const char *team,
                 const char *label, const json_t *doc, int dry_run, int64_t now_ms,
                 json_t **report, keel_buf_t *detail, keel_err_t *e) {
  json_t *cur = NULL, *changes = json_array();
  char sql[320], summary[160], *text = keel_json_canonical(doc);
  const char *op = NULL;
  int rc = 0;

  *report = NULL;
  if (!changes || !text) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(sql, sizeof sql, "SELECT spec FROM %s WHERE %s = ?", t->table, t->key_col);
  {
    k_val_t a[] = {K_TEXT(key)};
    if ((rc = k_store_exec(s, sql, a, 1, spec_row, &cur, e))) goto out;
  }
  if (!cur) op = "create";
  else if (!json_equal(cur, doc)) op = "update";
  if (op) {
    json_array_append_new(changes, json_pack("{s:s,s:s,s:s,s:o}", "op", op, "kind", t->kind,
                                             "name", label, "fields",
                                             cur ? keel_json_changed_keys(cur, doc) : json_array()));
  }
  if (op && !dry_run) {
    /* team is bound only when the table has the column */
    k_val_t a[] = {K_TEXT(text), K_INT(now_ms), K_TEXT(team ? team : ""), K_TEXT(key)};
    if (cur) {
      snprintf(sql, sizeof sql,
               "UPDATE %s SET spec = ?, updated_ms = ?%s, version = version + 1 WHERE %s = ?",
               t->table, t->has_team ? ", team = ?" : "", t->key_col);
      if (!t->has_team) a[2] = a[3];
      rc = k_store_exec(s, sql, a, t->has_team ? 4 : 3, NULL, NULL, e);
    } else {
      k_val_t i[] = {a[0], a[1], a[1], a[3], a[2]};
      snprintf(sql, sizeof sql,
               "INSERT INTO %s(spec, created_ms, updated_ms, version, %s%s) VALUES (?, ?, ?, 1, ?%s)",
               t->table, t->key_col, t->has_team ? ", team" : "", t->has_team ? ", ?" : "");
      rc = k_store_exec(s, sql, i, t->has_team ? 5 : 4, NULL, NULL, e);
    }
    if (rc) goto out;
  }
  snprintf(summary, sizeof summary, "%s%s", dry_run ? "dry run: " : "",
           !op ? "no changes" : !strcmp(op, "create") ? "1 created, 0 updated, 0 deleted"
                                                      : "0 created, 1 updated, 0 deleted");
  keel_buf_reset(detail);
  keel_buf_printf(detail, "%s%s%s %s/%s", summary, op ? ": " : "", op ? op : "", t->kind, label);
  *report = json_pack("{s:b,s:b,s:b,s:s,s:O,s:[]}", "changed", op != NULL, "dry_run", dry_run,
                      "prune", 0, "summary", summary, "changes", changes, "removed");
  if (!*report) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  json_decref(cur);
  json_decref(changes);
  free(text);
  return rc;
}

static int all_row(void *ud, const k_val_t *c, int n) {
  json_t *spec = n >= 1 ? json_loads(txt(&c[0]), 0, NULL) : NULL;
  if (spec) json_array_append_new(ud, spec);
  return 0;
}

int k_idoc_all(k_store_t *s, const k_idoc_table_t *t, json_t **out, keel_err_t *e) {
  char sql[160];
  int rc;
  if (!(*out = json_array())) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  snprintf(sql, sizeof sql, "SELECT spec FROM %s ORDER BY %s", t->table, t->key_col);
  if ((rc = k_store_exec(s, sql, NULL, 0, all_row, *out, e))) {
    json_decref(*out);
    *out = NULL;
  }
  return rc;
}
