#include "runbook/runbook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

static json_t *time_or_null(const k_val_t *c) {
  return keel_json_time(c->type == K_VAL_INT ? c->i : 0);
}

/* owner {"application": A} or {"team": T} */
static void owner_of(const json_t *rb, const char **kind, const char **name) {
  const json_t *o = json_object_get(rb, "owner");
  *kind = "team";
  *name = keel_json_str(o, "team");
  if (keel_json_str(o, "application")) {
    *kind = "application";
    *name = keel_json_str(o, "application");
  }
  if (!*name) *name = "_";
}

void k_runbook_path(const json_t *rb, char *out, size_t n) {
  const char *kind, *owner;
  owner_of(rb, &kind, &owner);
  snprintf(out, n, "%s/%s/runbook/%s", !strcmp(kind, "application") ? "app" : "team", owner,
           keel_json_str(rb, "name") ? keel_json_str(rb, "name") : "_");
}

typedef struct cur {
  int found;
  json_t *spec;
} cur_t;

static int cur_row(void *ud, const k_val_t *c, int n) {
  cur_t *r = ud;
  if (n < 1) return 0;
  r->found = 1;
  r->spec = json_loads(txt(&c[0]), 0, NULL);
  return 0;
}


int k_runbook_apply(k_store_t *s, const json_t *rb, int dry_run, int64_t now_ms,
                    json_t **report, keel_buf_t *detail, keel_err_t *e) {
  const char *name = keel_json_str(rb, "name"), *okind, *owner;
  json_t *changes = json_array();
  char *text = NULL, summary[160];
  cur_t cur = {0, NULL};
  const char *op = NULL;
  int rc;

  *report = NULL;
  owner_of(rb, &okind, &owner);
  if (!name || !changes || !(text = keel_json_canonical(rb))) {
    rc = keel_err_set(e, name ? KEEL_ENOMEM : KEEL_EINVAL, name ? "out of memory" : "runbook has no name");
    goto out;
  }
  {
    k_val_t args[] = {K_TEXT(name)};
    if ((rc = k_store_exec(s, "SELECT spec FROM runbooks WHERE name = ?", args, 1, cur_row, &cur, e)))
      goto out;
  }
  if (!cur.found) op = "create";
  else if (!json_equal(cur.spec, rb)) op = "update";
  if (op) {
    json_array_append_new(changes, json_pack("{s:s,s:s,s:s,s:o}", "op", op, "kind", "runbook",
                                             "name", name, "fields",
                                             cur.spec ? keel_json_changed_keys(cur.spec, rb) : json_array()));
    if (!dry_run) {
      if (cur.found) {
        k_val_t args[] = {K_TEXT(okind), K_TEXT(owner), K_TEXT(text), K_INT(now_ms), K_TEXT(name)};
        rc = k_store_exec(s,
                          "UPDATE runbooks SET owner_kind = ?, owner = ?, spec = ?, updated_ms = ?,"
                          " version = version + 1 WHERE name = ?",
                          args, 5, NULL, NULL, e);
      } else {
        k_val_t args[] = {K_TEXT(name), K_TEXT(okind), K_TEXT(owner), K_TEXT(text), K_INT(now_ms),
                          K_INT(now_ms)};
        rc = k_store_exec(s,
                          "INSERT INTO runbooks(name, owner_kind, owner, spec, created_ms,"
                          " updated_ms, version) VALUES (?, ?, ?, ?, ?, ?, 1)",
                          args, 6, NULL, NULL, e);
      }
      if (rc) goto out;
    }
  }
  snprintf(summary, sizeof summary, "%s%s", dry_run ? "dry run: " : "",
           !op ? "no changes" : !strcmp(op, "create") ? "1 created, 0 updated, 0 deleted"
                                                      : "0 created, 1 updated, 0 deleted");
  keel_buf_reset(detail);
  keel_buf_printf(detail, "%s%s%s runbook/%s", summary, op ? ": " : "", op ? op : "", name);
  *report = json_pack("{s:b,s:b,s:b,s:s,s:O,s:[]}", "changed", op != NULL, "dry_run", dry_run,
                      "prune", 0, "summary", summary, "changes", changes, "removed");
  if (!*report) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  json_decref(cur.spec);
  json_decref(changes);
  free(text);
  return rc;
}

static json_t *row_json(const k_val_t *c, int with_doc) {
  json_t *doc = json_loads(txt(&c[3]), 0, NULL), *o;
  o = json_pack("{s:s,s:s,s:{s:s},s:s?,s:I,s:o,s:o}", "name", txt(&c[0]), "kind", "runbook",
                "owner", txt(&c[1]), txt(&c[2]), "description",
                keel_json_str(doc, "description"), "version", (json_int_t)c[6].i, "created_at",
                time_or_null(&c[4]), "updated_at", time_or_null(&c[5]));
  if (o && with_doc && doc) json_object_set(o, "document", doc);
  json_decref(doc);
  return o;
}

#define RB_COLS "name, owner_kind, owner, spec, created_ms, updated_ms, version"

static int one_row(void *ud, const k_val_t *c, int n) {
  json_t **o = ud;
  if (n < 7) return 0;
  *o = row_json(c, 1);
  return 0;
}

int k_runbook_get(k_store_t *s, const char *name, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(name)};
  int rc;
  *out = NULL;
  if ((rc = k_store_exec(s, "SELECT " RB_COLS " FROM runbooks WHERE name = ?", args, 1, one_row,
                         out, e)))
    return rc;
  return *out ? 0 : keel_err_set(e, KEEL_ENOENT, "no runbook '%.64s'", name);
}

typedef struct list {
  json_t *items;
  int limit, n;
  char last[96];
} list_t;

static int list_row(void *ud, const k_val_t *c, int n) {
  list_t *l = ud;
  if (n < 7) return 0;
  if (l->n == l->limit) return 1;
  json_array_append_new(l->items, row_json(c, 0));
  snprintf(l->last, sizeof l->last, "%s", txt(&c[0]));
  l->n++;
  return 0;
}

int k_runbook_list(k_store_t *s, const char *after, int limit, json_t **items, char **next,
                   keel_err_t *e) {
  list_t l = {json_array(), limit, 0, ""};
  k_val_t args[] = {K_TEXT(after ? after : ""), K_INT(limit + 1)};
  int rc;
  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(s, "SELECT " RB_COLS " FROM runbooks WHERE name > ? ORDER BY name LIMIT ?",
                    args, 2, list_row, &l, e);
  if (rc < 0) {
    json_decref(l.items);
    return rc;
  }
  if (rc == 1) *next = strdup(l.last);
  *items = l.items;
  return 0;
}

int k_runbook_delete(k_store_t *s, const char *name, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(name)};
  int rc = k_store_exec(s, "DELETE FROM runbooks WHERE name = ?", args, 1, NULL, NULL, e);
  if (rc) return rc;
  return k_store_changes(s) ? 0 : keel_err_set(e, KEEL_ENOENT, "no runbook '%.64s'", name);
}
