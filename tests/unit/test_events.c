/* Unit tests for the event engine (event/event.h): emit inside units,
 * delivery only of committed events of durable generations and in order,
 * subscribers (also emitting from inside a delivery), restart, the
 * CloudEvents JSON shape, list filters and pruning. */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "event/event.h"
#include "fleet/fleet.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"

typedef struct fx {
  char dir[256];
  k_store_t *s;
  k_events_t *ev;
  json_t *got; /* delivered events, as k_event_json objects */
} fx_t;

static void got_fn(void *ud, const k_event_t *ev) {
  fx_t *f = ud;
  json_t *o = k_event_json(ev);
  assert_non_null(o);
  json_object_set_new(o, "path", json_string(ev->path));
  json_array_append_new(f->got, o);
}

static int open_all(fx_t *f, int create) {
  keel_err_t e = {0};
  if (k_store_open(f->dir, create, NULL, &f->s, &e) ||
      k_events_open(f->s, NULL, 3600 * 1000, &f->ev, &e) ||
      k_events_subscribe(f->ev, got_fn, f, &e)) {
    print_error("open: %s\n", e.msg);
    return -1;
  }
  return 0;
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  f->got = json_array();
  if (open_all(f, 1)) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  k_events_close(f->ev);
  k_store_close(f->s);
  kt_rmrf(f->dir);
  json_decref(f->got);
  free(f);
  return 0;
}

static void unit(fx_t *f, int begin, int ok) {
  keel_err_t e = {0};
  int rc = begin ? k_store_unit_begin(f->s, &e) : k_store_unit_end(f->s, ok, &e);
  if (rc) fail_msg("unit: %s", e.msg);
}

static int64_t emit(fx_t *f, const char *type, const char *subject, json_t *data) {
  k_event_t in = {0};
  keel_err_t e = {0};
  int64_t seq = 0;
  int rc;
  in.type = type;
  in.subject = subject;
  in.data = data;
  rc = k_event_emit(f->ev, &in, &seq, &e);
  json_decref(data);
  if (rc) fail_msg("emit %s: %s", type, e.msg);
  return seq;
}

/* One event in a unit of its own. */
static int64_t emit_unit(fx_t *f, const char *type, const char *subject) {
  int64_t seq;
  unit(f, 1, 0);
  seq = emit(f, type, subject, NULL);
  unit(f, 0, 1);
  return seq;
}

/* Commits the batch and waits until it is durable. */
static void commit_durable(fx_t *f) {
  keel_err_t e = {0};
  if (k_store_flush(f->s, &e) || k_store_sync_wait(f->s, &e)) fail_msg("commit: %s", e.msg);
}

/* Commits, waits for durability and delivers. */
static void deliver(fx_t *f) {
  commit_durable(f);
  k_events_dispatch(f->ev, k_store_durable_gen(f->s));
}

static const char *got_type(fx_t *f, size_t i) {
  return keel_json_str(json_array_get(f->got, i), "type");
}

static void rolled_back_never_delivered(void **state) {
  fx_t *f = *state;
  json_t *items = NULL;
  keel_err_t e = {0};
  k_events_query_t q = {NULL, NULL, 0, 0, 100};

  emit_unit(f, "test.kept", "a");
  unit(f, 1, 0);
  emit(f, "test.undone", "b", NULL);
  unit(f, 0, 0); /* rolled back */
  emit_unit(f, "test.kept", "c");
  deliver(f);
  assert_int_equal(json_array_size(f->got), 2);
  assert_string_equal(keel_json_str(json_array_get(f->got, 0), "subject"), "a");
  assert_string_equal(keel_json_str(json_array_get(f->got, 1), "subject"), "c");
  assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
  assert_int_equal(json_array_size(items), 2);
  for (size_t i = 0; i < 2; i++) assert_string_equal(keel_json_str(json_array_get(items, i), "type"), "test.kept");
  json_decref(items);
}

static void failed_batch_never_delivered(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  int64_t s1, s2;

  /* a whole batch lost (as after a failed COMMIT): its seq is never reused
   * by a later event that dispatch could then deliver early */
  s1 = emit_unit(f, "test.lost", "");
  assert_int_equal(k_store_exec(f->s, "ROLLBACK", NULL, 0, NULL, NULL, &e), 0);
  /* the store still thinks a batch is open; flushing it fails like a
   * failed commit and rolls the batch back */
  assert_int_not_equal(k_store_flush(f->s, &e), 0);
  s2 = emit_unit(f, "test.after", "");
  assert_true(s2 > s1);
  deliver(f);
  assert_int_equal(json_array_size(f->got), 1);
  assert_string_equal(got_type(f, 0), "test.after");
}

static void delivered_only_when_durable_in_order(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  uint64_t g1, g2;

  unit(f, 1, 0);
  emit(f, "test.one", "1", NULL);
  emit(f, "test.two", "2", NULL);
  unit(f, 0, 1);
  g1 = k_store_visible_gen(f->s);
  assert_int_equal(k_store_flush(f->s, &e), 0);
  emit_unit(f, "test.three", "3");
  g2 = k_store_visible_gen(f->s);
  assert_true(g2 > g1);
  /* committed (g1) and open (g2), nothing durable yet: nothing delivered */
  k_events_dispatch(f->ev, g1 - 1);
  assert_int_equal(json_array_size(f->got), 0);
  /* g1 durable: its two events, in order; g2's not yet */
  k_events_dispatch(f->ev, g1);
  assert_int_equal(json_array_size(f->got), 2);
  assert_string_equal(got_type(f, 0), "test.one");
  assert_string_equal(got_type(f, 1), "test.two");
  assert_true(json_integer_value(json_object_get(json_array_get(f->got, 0), "keelseq")) <
              json_integer_value(json_object_get(json_array_get(f->got, 1), "keelseq")));
  assert_int_equal(k_events_delivered(f->ev),
                   json_integer_value(json_object_get(json_array_get(f->got, 1), "keelseq")));
  deliver(f);
  assert_int_equal(json_array_size(f->got), 3);
  assert_string_equal(got_type(f, 2), "test.three");
  /* once only */
  k_events_dispatch(f->ev, k_store_durable_gen(f->s));
  assert_int_equal(json_array_size(f->got), 3);
}

static void many_events_in_pages(void **state) {
  fx_t *f = *state;
  unit(f, 1, 0);
  for (int i = 0; i < 1000; i++) {
    char sub[16];
    snprintf(sub, sizeof sub, "%d", i);
    emit(f, "test.many", sub, json_pack("{s:i}", "i", i));
  }
  unit(f, 0, 1);
  deliver(f);
  assert_int_equal(json_array_size(f->got), 1000);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_array_get(f->got, (size_t)i), "data"), "i")),
                     i);
}

typedef struct chain {
  fx_t *f;
  int n;
} chain_t;

/* A subscriber that reacts to test.cause by emitting test.effect in a unit
 * of its own, while the engine is delivering. */
static void chain_fn(void *ud, const k_event_t *ev) {
  chain_t *c = ud;
  c->n++;
  if (!strcmp(ev->type, "test.cause")) {
    unit(c->f, 1, 0);
    emit(c->f, "test.effect", ev->subject, NULL);
    unit(c->f, 0, 1);
  }
}

static void subscribers_and_emit_while_delivering(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  chain_t c = {f, 0};

  assert_int_equal(k_events_subscribe(f->ev, chain_fn, &c, &e), 0);
  unit(f, 1, 0);
  emit(f, "test.cause", "x", NULL);
  emit(f, "test.other", "y", NULL);
  unit(f, 0, 1);
  deliver(f);
  /* both subscribers saw both; the effect waits for its own commit */
  assert_int_equal(json_array_size(f->got), 2);
  assert_int_equal(c.n, 2);
  deliver(f);
  assert_int_equal(json_array_size(f->got), 3);
  assert_string_equal(got_type(f, 2), "test.effect");
  assert_int_equal(c.n, 3);
  /* at most 16 subscribers */
  for (int i = 2; i < 16; i++) assert_int_equal(k_events_subscribe(f->ev, got_fn, f, &e), 0);
  assert_int_not_equal(k_events_subscribe(f->ev, got_fn, f, &e), 0);
}

static void restart_resumes_after_newest(void **state) {
  fx_t *f = *state;
  json_t *items = NULL;
  keel_err_t e = {0};
  k_events_query_t q = {NULL, NULL, 0, 0, 100};
  int64_t s1, s2;

  s1 = emit_unit(f, "test.before", "");
  commit_durable(f);
  k_events_close(f->ev);
  k_store_close(f->s);
  json_array_clear(f->got);
  assert_int_equal(open_all(f, 0), 0);
  s2 = emit_unit(f, "test.after", "");
  assert_true(s2 > s1);
  deliver(f);
  /* no cursor was ever saved: history is not replayed, only the new one */
  assert_int_equal(json_array_size(f->got), 1);
  assert_string_equal(got_type(f, 0), "test.after");
  assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
  assert_int_equal(json_array_size(items), 2);
  json_decref(items);
}

/* Reopens the store and the engine (what a restart does). */
static void reopen(fx_t *f) {
  k_events_close(f->ev);
  k_store_close(f->s);
  json_array_clear(f->got);
  assert_int_equal(open_all(f, 0), 0);
}

/* The saved cursor: what a subscriber still held (taken, not acted on)
 * when keeld stopped is delivered again at start, in order; what was
 * acted on is not. */
static void restart_redelivers_what_was_held(void **state) {
  fx_t *f = *state;
  int64_t s2;

  emit_unit(f, "test.one", "");
  s2 = emit_unit(f, "test.two", "");
  emit_unit(f, "test.three", "");
  deliver(f);
  assert_int_equal(json_array_size(f->got), 3);
  k_events_save(f->ev, s2); /* a subscriber still holds two and three */
  commit_durable(f);
  reopen(f);
  k_events_dispatch(f->ev, k_store_durable_gen(f->s));
  assert_int_equal(json_array_size(f->got), 2);
  assert_string_equal(got_type(f, 0), "test.two");
  assert_string_equal(got_type(f, 1), "test.three");
  k_events_save(f->ev, 0); /* all acted on */
  commit_durable(f);
  reopen(f);
  k_events_dispatch(f->ev, k_store_durable_gen(f->s));
  assert_int_equal(json_array_size(f->got), 0);
  emit_unit(f, "test.four", "");
  deliver(f);
  assert_int_equal(json_array_size(f->got), 1);
  assert_string_equal(got_type(f, 0), "test.four");
}

static void json_shape(void **state) {
  fx_t *f = *state;
  k_event_t in = {0};
  keel_err_t e = {0};
  json_t *o, *items = NULL;
  k_events_query_t q = {NULL, NULL, 0, 0, 10};
  int64_t seq;
  const char *k;
  json_t *v;
  static const char *const keys[] = {"specversion", "id", "source", "type", "subject", "time",
                                     "datacontenttype", "data", "keelseq", "keelcause", "path",
                                     NULL};

  unit(f, 1, 0);
  in.type = "agent.offline";
  in.subject = "agt_x";
  in.source = "keeld";
  in.time_ms = 1700000000123;
  in.path = "app/a/env/prod/host/agt_x";
  in.cause = "automation/restart";
  in.data = json_pack("{s:s,s:{s:s}}", "agent_id", "agt_x", "labels", "instance", "h1");
  assert_int_equal(k_event_emit(f->ev, &in, &seq, &e), 0);
  json_decref((json_t *)in.data);
  in = (k_event_t){0};
  in.type = "test.bare";
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), 0);
  unit(f, 0, 1);
  assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
  assert_int_equal(json_array_size(items), 2);
  o = json_array_get(items, 0);
  assert_string_equal(keel_json_str(o, "specversion"), "1.0");
  assert_true(!strncmp(keel_json_str(o, "id"), "evt_", 4));
  assert_int_equal(strlen(keel_json_str(o, "id")), 20);
  assert_string_equal(keel_json_str(o, "source"), "keeld");
  assert_string_equal(keel_json_str(o, "type"), "agent.offline");
  assert_string_equal(keel_json_str(o, "subject"), "agt_x");
  assert_string_equal(keel_json_str(o, "time"), "2023-11-14T22:13:20.123Z");
  assert_string_equal(keel_json_str(o, "datacontenttype"), "application/json");
  assert_string_equal(keel_json_str(json_object_get(json_object_get(o, "data"), "labels"), "instance"), "h1");
  assert_int_equal(json_integer_value(json_object_get(o, "keelseq")), seq);
  assert_string_equal(keel_json_str(o, "keelcause"), "automation/restart");
  assert_string_equal(keel_json_str(o, "path"), "app/a/env/prod/host/agt_x");
  json_object_foreach(o, k, v) {
    int known = 0;
    for (int i = 0; keys[i]; i++) known |= !strcmp(keys[i], k);
    if (!known) fail_msg("unexpected member %s", k);
  }
  /* defaults: no subject or cause members (CloudEvents: non-empty when
   * present), data {}, path "events", time now */
  o = json_array_get(items, 1);
  assert_null(json_object_get(o, "subject"));
  assert_null(json_object_get(o, "keelcause"));
  assert_true(json_is_object(json_object_get(o, "data")) && !json_object_size(json_object_get(o, "data")));
  assert_string_equal(keel_json_str(o, "path"), "events");
  {
    int64_t t = 0;
    assert_int_equal(keel_time_parse(keel_json_str(o, "time"), &t), 0);
    assert_true(llabs(t - keel_now_ms()) < 60000);
  }
  json_decref(items);
}

static void emit_checks_input(void **state) {
  fx_t *f = *state;
  k_event_t in = {0};
  keel_err_t e = {0};
  char big[K_EVENT_SUBJECT_MAX + 2];
  json_t *d;
  char *blob;

  unit(f, 1, 0);
  in.type = "Bad.Type";
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "event type"));
  in.type = "";
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), KEEL_EINVAL);
  in.type = "a.b";
  memset(big, 's', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  in.subject = big;
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "subject"));
  in.subject = NULL;
  blob = calloc(1, K_EVENT_DATA_MAX + 1);
  memset(blob, 'x', K_EVENT_DATA_MAX);
  d = json_pack("{s:s}", "x", blob);
  in.data = d;
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "data"));
  json_decref(d);
  free(blob);
  d = json_array();
  in.data = d;
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), KEEL_EINVAL);
  json_decref(d);
  unit(f, 0, 1);
  /* no engine: nothing happens */
  in.data = NULL;
  assert_int_equal(k_event_emit(NULL, &in, NULL, &e), 0);
}

static size_t count(fx_t *f, const char *type, const char *subject, int64_t since, int64_t after,
                    int limit) {
  k_events_query_t q = {type, subject, since, after, limit};
  json_t *items = NULL;
  keel_err_t e = {0};
  size_t n;
  if (k_events_list(f->ev, &q, &items, &e)) fail_msg("list: %s", e.msg);
  n = json_array_size(items);
  json_decref(items);
  return n;
}

static void query_filters(void **state) {
  fx_t *f = *state;
  k_event_t in = {0};
  keel_err_t e = {0};
  json_t *items = NULL;
  int64_t now = keel_now_ms(), first = 0;
  static const char *const types[] = {"alert.firing", "alert.resolved", "alerts.x", "agent.offline",
                                      "alert.firing"};

  unit(f, 1, 0);
  for (int i = 0; i < 5; i++) {
    int64_t seq;
    in.type = types[i];
    in.subject = i % 2 ? "odd" : "even";
    in.time_ms = now - (5 - i) * 60000; /* 5, 4, 3, 2, 1 minutes ago */
    assert_int_equal(k_event_emit(f->ev, &in, &seq, &e), 0);
    if (!first) first = seq;
  }
  unit(f, 0, 1);
  assert_int_equal(count(f, NULL, NULL, 0, 0, 100), 5);
  assert_int_equal(count(f, "*", NULL, 0, 0, 100), 5);
  assert_int_equal(count(f, "alert.firing", NULL, 0, 0, 100), 2);
  assert_int_equal(count(f, "alert.*", NULL, 0, 0, 100), 3);
  assert_int_equal(count(f, "alert*", NULL, 0, 0, 100), 4);
  assert_int_equal(count(f, "a*", NULL, 0, 0, 100), 5);
  assert_int_equal(count(f, "nothing.*", NULL, 0, 0, 100), 0);
  assert_int_equal(count(f, NULL, "odd", 0, 0, 100), 2);
  assert_int_equal(count(f, "alert.*", "even", 0, 0, 100), 2);
  assert_int_equal(count(f, NULL, NULL, now - 150000, 0, 100), 2);
  assert_int_equal(count(f, NULL, NULL, 0, first + 2, 100), 2);
  assert_int_equal(count(f, NULL, NULL, 0, 0, 3), 3);
  /* oldest first */
  {
    k_events_query_t q = {"alert.*", NULL, 0, 0, 100};
    assert_int_equal(k_events_list(f->ev, &q, &items, &e), 0);
    assert_string_equal(keel_json_str(json_array_get(items, 0), "type"), "alert.firing");
    assert_string_equal(keel_json_str(json_array_get(items, 1), "type"), "alert.resolved");
    json_decref(items);
  }
  {
    k_events_query_t bad[] = {{"Alert", NULL, 0, 0, 10}, {"a*b", NULL, 0, 0, 10},
                              {"**", NULL, 0, 0, 10},    {NULL, NULL, 0, 0, 0},
                              {NULL, NULL, 0, 0, 1001}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      items = NULL;
      assert_int_equal(k_events_list(f->ev, &bad[i], &items, &e), KEEL_EINVAL);
      assert_null(items);
    }
  }
}

static void prune_old(void **state) {
  fx_t *f = *state;
  k_event_t in = {0};
  keel_err_t e = {0};
  int64_t now = keel_now_ms();

  unit(f, 1, 0);
  in.type = "test.old";
  for (int i = 0; i < 25000; i++) { /* more than one prune chunk */
    in.time_ms = now - 2 * 3600 * 1000 - i;
    assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), 0);
  }
  in.type = "test.new";
  in.time_ms = now - 60000;
  assert_int_equal(k_event_emit(f->ev, &in, NULL, &e), 0);
  unit(f, 0, 1);
  assert_int_equal(k_events_prune(f->ev, now, &e), 0); /* retention 1 h */
  assert_int_equal(count(f, NULL, NULL, 0, 0, 1000), 1);
  assert_int_equal(count(f, "test.new", NULL, 0, 0, 10), 1);
}

static void emit_new_takes_data(void **state) {
  fx_t *f = *state;
  keel_err_t e = {0};
  unit(f, 1, 0);
  assert_int_equal(k_event_emit_new(f->ev, "test.new", "s", "app/x/runbook/y", "automation/r",
                                    json_pack("{s:i}", "n", 1), &e),
                   0);
  assert_int_equal(k_event_emit_new(f->ev, "test.new", "s", NULL, NULL, NULL, &e), KEEL_ENOMEM);
  /* refused: the data is released all the same (ASan would see a leak) */
  assert_int_equal(k_event_emit_new(f->ev, "Bad", "s", NULL, NULL, json_object(), &e), KEEL_EINVAL);
  unit(f, 0, 1);
  deliver(f);
  assert_int_equal(json_array_size(f->got), 1);
  assert_string_equal(keel_json_str(json_array_get(f->got, 0), "keelcause"), "automation/r");
  assert_string_equal(keel_json_str(json_array_get(f->got, 0), "path"), "app/x/runbook/y");
  assert_string_equal(keel_json_str(json_array_get(f->got, 0), "source"), "keeld");
}

/* A host's labels, as events and metrics carry them. */
static void host_labels(void **state) {
  k_agent_t a;
  json_t *o;
  (void)state;
  memset(&a, 0, sizeof a);
  snprintf(a.id, sizeof a.id, "agt_x");
  snprintf(a.hostname, sizeof a.hostname, "web-1");
  a.tags = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "team.name", "core", "env", "prod",
                     "instance", "spoof", "__x", "y", "9lives", "cat", "team_name", "second",
                     "empty", "");
  o = k_fleet_labels_json(&a);
  assert_non_null(o);
  assert_string_equal(keel_json_str(o, "instance"), "web-1");
  assert_string_equal(keel_json_str(o, "agent_id"), "agt_x");
  assert_string_equal(keel_json_str(o, "team_name"), "core"); /* the first of a clash */
  assert_string_equal(keel_json_str(o, "env"), "prod");
  assert_string_equal(keel_json_str(o, "_lives"), "cat"); /* a leading digit */
  assert_null(json_object_get(o, "__x"));
  assert_null(json_object_get(o, "empty"));
  assert_int_equal(json_object_size(o), 5);
  json_decref(o);
  json_decref(a.tags);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(rolled_back_never_delivered, setup, teardown),
      cmocka_unit_test_setup_teardown(failed_batch_never_delivered, setup, teardown),
      cmocka_unit_test_setup_teardown(delivered_only_when_durable_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(many_events_in_pages, setup, teardown),
      cmocka_unit_test_setup_teardown(subscribers_and_emit_while_delivering, setup, teardown),
      cmocka_unit_test_setup_teardown(restart_resumes_after_newest, setup, teardown),
      cmocka_unit_test_setup_teardown(restart_redelivers_what_was_held, setup, teardown),
      cmocka_unit_test_setup_teardown(json_shape, setup, teardown),
      cmocka_unit_test_setup_teardown(emit_checks_input, setup, teardown),
      cmocka_unit_test_setup_teardown(query_filters, setup, teardown),
      cmocka_unit_test_setup_teardown(prune_old, setup, teardown),
      cmocka_unit_test_setup_teardown(emit_new_takes_data, setup, teardown),
      cmocka_unit_test(host_labels),
  };
  keel_crypto_init();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
