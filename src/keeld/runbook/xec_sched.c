/* xec_sched.c — runbook schedules: which slots are due.
 *
 * A slot is a time the schedule names (a cron minute, or base + k * rate).
 * However many slots passed since the last one taken (keeld was down), only
 * the latest is due: a missed run happens once, not once per slot.  Slots
 * start after base_ms, the time keeld first saw the schedule as it is now,
 * so changing a schedule never fires the slots it would have had before.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "runbook/cron.h"
#include "runbook/xec_int.h"

/* At most this many cron slots are stepped over to find the latest due one
 * (a year of minutes); beyond that the latest found is taken. */
#define SLOT_WALK_MAX 600000

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

/* A schedule ready to compute slots: the cron text parsed once. */
typedef struct when {
  int64_t rate_ms; /* > 0: a rate schedule */
  int ok;
  k_cron_t cron;
} when_t;

static void when_of(const json_t *sched, when_t *w) {
  const json_t *rate = json_object_get(sched, "rate_ms");
  const char *text = keel_json_str(sched, "cron");
  keel_err_t e = {0};
  memset(w, 0, sizeof *w);
  if (json_is_integer(rate) && json_integer_value(rate) > 0) {
    w->rate_ms = json_integer_value(rate);
    w->ok = 1;
  } else if (text) {
    w->ok = k_cron_parse(text, strlen(text), &w->cron, &e) == 0;
  }
}

/* The first slot strictly after after_ms; -1 when none. */
static int64_t slot_after(const when_t *w, int64_t base_ms, int64_t after_ms) {
  if (!w->ok) return -1;
  if (w->rate_ms) {
    if (after_ms < base_ms) return base_ms + w->rate_ms;
    return base_ms + ((after_ms - base_ms) / w->rate_ms + 1) * w->rate_ms;
  }
  return k_cron_next(&w->cron, after_ms);
}

/* The latest slot <= now_ms after after_ms, or -1 when none is due. */
static int64_t due_slot(const when_t *w, int64_t base_ms, int64_t after_ms, int64_t now_ms) {
  int64_t s = slot_after(w, base_ms, after_ms), n;
  if (s < 0 || s > now_ms) return -1;
  if (w->rate_ms) return base_ms + ((now_ms - base_ms) / w->rate_ms) * w->rate_ms;
  for (int i = 0; i < SLOT_WALK_MAX && (n = k_cron_next(&w->cron, s)) > 0 && n <= now_ms; i++)
    s = n;
  return s;
}

typedef struct cur {
  json_t *rows; /* runbook -> {"spec","base_ms","last_slot_ms"} */
} cur_t;

static int sched_row(void *ud, const k_val_t *c, int n) {
  json_t *rows = ud;
  if (n < 4) return 0;
  return json_object_set_new(rows, txt(&c[0]),
                             json_pack("{s:s,s:I,s:o}", "spec", txt(&c[1]), "base_ms",
                                       (json_int_t)c[2].i, "last_slot_ms",
                                       c[3].type == K_VAL_INT ? json_integer(c[3].i) : json_null()))
             ? KEEL_ENOMEM
             : 0;
}

static int rb_row(void *ud, const k_val_t *c, int n) {
  json_t *list = ud, *doc, *sched;
  if (n < 2) return 0;
  doc = json_loads(txt(&c[1]), 0, NULL);
  sched = json_object_get(doc, "schedule");
  if (json_is_object(sched)) {
    char *spec = keel_json_canonical(sched);
    json_array_append_new(list, json_pack("{s:s,s:O,s:O,s:s,s:I,s:n}", "runbook", txt(&c[0]),
                                          "schedule", sched, "runbook_owner",
                                          json_object_get(doc, "owner"), "spec", spec ? spec : "",
                                          "base_ms", (json_int_t)0, "last_slot_ms"));
    free(spec);
  }
  json_decref(doc);
  return 0;
}

/* Rebuilds the cache from the runbooks and brings the schedules table in
 * line (new or changed schedules start now; dropped ones go). */
static int sync(k_xec_t *x, int64_t now_ms, keel_err_t *e) {
  json_t *list = json_array(), *rows = json_object(), *it;
  const char *name;
  void *tmp;
  size_t i;
  int rc;

  if (!list || !rows) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = k_store_exec(x->d.store, "SELECT name, spec FROM runbooks ORDER BY name", NULL, 0,
                         rb_row, list, e)) ||
      (rc = k_store_exec(x->d.store,
                         "SELECT runbook, spec, base_ms, last_slot_ms FROM schedules", NULL, 0,
                         sched_row, rows, e)))
    goto out;
  json_array_foreach(list, i, it) {
    const char *rb = keel_json_str(it, "runbook");
    json_t *row = json_object_get(rows, rb);
    if (row && !strcmp(keel_json_str(row, "spec"), keel_json_str(it, "spec"))) {
      json_object_set(it, "base_ms", json_object_get(row, "base_ms"));
      json_object_set(it, "last_slot_ms", json_object_get(row, "last_slot_ms"));
    } else {
      k_val_t a[] = {K_TEXT(rb), K_TEXT(keel_json_str(it, "spec")), K_INT(now_ms)};
      json_object_set_new(it, "base_ms", json_integer(now_ms));
      if ((rc = k_store_exec(x->d.store,
                             "INSERT INTO schedules(runbook, spec, base_ms) VALUES (?, ?, ?)"
                             " ON CONFLICT(runbook) DO UPDATE SET spec = excluded.spec,"
                             " base_ms = excluded.base_ms, last_slot_ms = NULL",
                             a, 3, NULL, NULL, e)))
        goto out;
    }
    json_object_del(rows, rb);
  }
  json_object_foreach_safe(rows, tmp, name, it) {
    k_val_t a[] = {K_TEXT(name)};
    if ((rc = k_store_exec(x->d.store, "DELETE FROM schedules WHERE runbook = ?", a, 1, NULL, NULL, e)))
      goto out;
  }
  json_decref(x->scheds);
  x->scheds = list;
  list = NULL;
  x->sched_dirty = 0;
out:
  json_decref(list);
  json_decref(rows);
  return rc;
}

void k_xec_schedules_changed(k_xec_t *x) { x->sched_dirty = 1; }

static int64_t ival(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? json_integer_value(v) : 0;
}

static const char *active_of(k_xec_t *x, const char *runbook) {
  for (k_xexe_t *ex = x->head; ex; ex = ex->next)
    if (ex->by_schedule && !strcmp(ex->runbook, runbook) && !k_xstate_final(ex->st)) return ex->id;
  return NULL;
}

int k_xec_due(k_xec_t *x, int64_t now_ms, json_t **due, keel_err_t *e) {
  size_t i;
  json_t *it;
  int rc;

  *due = NULL;
  if (x->sched_dirty) {
    if ((rc = k_store_unit_begin(x->d.store, e))) return rc;
    rc = sync(x, now_ms, e);
    if (k_store_unit_end(x->d.store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
    if (rc) return rc;
  }
  if (!(*due = json_array())) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  json_array_foreach(x->scheds, i, it) {
    when_t w;
    int64_t base = ival(it, "base_ms"), last = ival(it, "last_slot_ms"), slot;
    const json_t *sched = json_object_get(it, "schedule");
    when_of(sched, &w);
    slot = due_slot(&w, base, last ? last : base, now_ms);
    const char *active;
    if (slot < 0) continue;
    active = active_of(x, keel_json_str(it, "runbook"));
    json_array_append_new(*due, json_pack("{s:s,s:I,s:O,s:O,s:o}", "runbook",
                                          keel_json_str(it, "runbook"), "slot_ms", (json_int_t)slot,
                                          "owner", json_object_get(sched, "owner"), "params",
                                          json_object_get(sched, "params"), "active",
                                          active ? json_string(active) : json_null()));
  }
  return 0;
}

int k_xec_schedule_record(k_xec_t *x, const char *runbook, int64_t slot_ms, int64_t now_ms,
                          const char *outcome, const char *execution_id, const char *reason,
                          keel_err_t *e) {
  size_t i;
  json_t *it;
  int rc;
  {
    k_val_t a[] = {K_INT(slot_ms), K_TEXT(execution_id), K_TEXT(outcome),
                   K_INT(!strcmp(outcome, "skipped")), K_TEXT(runbook)};
    if ((rc = k_store_exec(x->d.store,
                           "UPDATE schedules SET last_slot_ms = ?,"
                           " last_execution = COALESCE(?, last_execution), last_outcome = ?,"
                           " skipped = skipped + ? WHERE runbook = ?",
                           a, 5, NULL, NULL, e)))
      return rc;
  }
  {
    k_val_t a[] = {K_TEXT(runbook), K_INT(slot_ms), K_INT(now_ms), K_TEXT(outcome),
                   K_TEXT(execution_id), K_TEXT(reason ? reason : "")};
    if ((rc = k_store_exec(x->d.store,
                           "INSERT INTO schedule_events(runbook, slot_ms, at_ms, outcome,"
                           " execution_id, reason) VALUES (?, ?, ?, ?, ?, ?)",
                           a, 6, NULL, NULL, e)))
      return rc;
  }
  json_array_foreach(x->scheds, i, it) if (!strcmp(keel_json_str(it, "runbook"), runbook))
      json_object_set_new(it, "last_slot_ms", json_integer(slot_ms));
  return 0;
}

static int row_info(void *ud, const k_val_t *c, int n) {
  json_t *rows = ud;
  if (n < 4) return 0;
  return json_object_set_new(rows, txt(&c[0]),
                             json_pack("{s:o,s:o,s:I}", "last_execution",
                                       c[1].type == K_VAL_TEXT ? json_string(c[1].s) : json_null(),
                                       "last_outcome",
                                       c[2].type == K_VAL_TEXT ? json_string(c[2].s) : json_null(),
                                       "skipped", (json_int_t)c[3].i))
             ? KEEL_ENOMEM
             : 0;
}

int k_xec_schedule_list(k_xec_t *x, int64_t now_ms, json_t **items, keel_err_t *e) {
  json_t *rows = json_object(), *it;
  size_t i;
  int rc;

  *items = NULL;
  if (x->sched_dirty) {
    json_t *due = NULL;
    if ((rc = k_xec_due(x, now_ms, &due, e))) goto out;
    json_decref(due);
  }
  if (!rows || !(*items = json_array())) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = k_store_exec(x->d.store,
                         "SELECT runbook, last_execution, last_outcome, skipped FROM schedules",
                         NULL, 0, row_info, rows, e)))
    goto out;
  json_array_foreach(x->scheds, i, it) {
    const json_t *sched = json_object_get(it, "schedule");
    int64_t base = ival(it, "base_ms"), last = ival(it, "last_slot_ms"), next;
    const char *active = active_of(x, keel_json_str(it, "runbook"));
    when_t w;
    when_of(sched, &w);
    next = slot_after(&w, base, last > now_ms ? last : now_ms > base ? now_ms : base);
    const json_t *row = json_object_get(rows, keel_json_str(it, "runbook"));
    json_t *o = json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:o,s:o,s:o,s:o,s:I,s:o}", "runbook",
                          keel_json_str(it, "runbook"), "runbook_owner",
                          json_object_get(it, "runbook_owner"), "cron", json_object_get(sched, "cron"),
                          "rate_ms", json_object_get(sched, "rate_ms"), "owner",
                          json_object_get(sched, "owner"), "params",
                          json_object_get(sched, "params"), "next_at",
                          next > 0 ? keel_json_time(next) : json_null(), "last_slot_at",
                          last ? keel_json_time(last) : json_null(), "last_execution",
                          json_incref(json_object_get(row, "last_execution")) ?: json_null(),
                          "last_outcome",
                          json_incref(json_object_get(row, "last_outcome")) ?: json_null(),
                          "skipped", (json_int_t)ival(row, "skipped"), "active",
                          active ? json_string(active) : json_null());
    if (!o || json_array_append_new(*items, o)) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto out;
    }
  }
  rc = 0;
out:
  if (rc) {
    json_decref(*items);
    *items = NULL;
  }
  json_decref(rows);
  return rc;
}
