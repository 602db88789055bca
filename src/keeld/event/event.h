/* event.h — Keel's events (docs/events.md): every state change in Keel, as a
 * CloudEvents 1.0 JSON object, stored in the table `events`, listed by
 * GET /v1/events, streamed by GET /v1/events/stream (Server-Sent Events) and
 * handed to the engines that react to them (alert rules on events,
 * incidents, automation).
 *
 * Emitting.  k_event_emit() inserts the event inside the caller's OPEN store
 * unit: the event commits with the change it describes, or is rolled back
 * with it.  It MUST NOT be called outside a unit.
 *
 * Delivery.  k_events_dispatch() (keeld's `events` phase, after `release`)
 * reads the events of durable generations from the store in `seq` order and
 * calls every subscriber once per event, in order, so a subscriber never
 * sees an event a crash could take back, nor one that was rolled back.
 * Subscribers run on the loop thread and MUST NOT block; they may emit
 * events of their own (in units they open), which a later dispatch
 * delivers.  How far delivery got is saved (k_events_save) in the same
 * batch as what subscribers wrote while handling the events, so after a
 * crash the first
 * dispatch delivers again exactly the events whose effects were lost:
 * subscribers MUST treat an event they already acted on as a no-op, and
 * MUST be registered before the loop's first dispatch.
 *
 * Conventions every emitter follows (docs/events.md lists the types):
 *   type     dotted lower case, "<noun>.<verb>": agent.offline,
 *            alert.firing, incident.opened, service.down, check.result ...
 *   source   "keeld", or "agent/<agent id>" for what an agent reported
 *   subject  the id of what the event is about (agent id, execution id,
 *            alert "<rule>/<fingerprint>", incident id), "" when none
 *   data     an object; data.labels, when present, is an object of string
 *            values describing what the event is about (for a host:
 *            instance, agent_id and its tags).  Selectors (maintenance
 *            windows, automation rules) match against data.labels.
 *   cause    "" or what caused the event, for loop guards: the automation
 *            rule behind the execution that led to it ("automation/NAME").
 *            Carried as the CloudEvents extension attribute `keelcause`.
 *   path     the policy path of the subject (as k_org_host_path gives for
 *            hosts; "events" when there is none more precise): a listing
 *            shows an event only to principals allowed event:read on it.
 *
 * Owned by keeld's loop thread.  Strings handed in are copied; events and
 * JSON handed out are borrowed for the call (subscribers) or new
 * references owned by the caller (lists), as each function says.
 */
#ifndef KEELD_EVENT_H
#define KEELD_EVENT_H

#include <jansson.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "store/store.h"

#define K_EVENT_TYPE_MAX 64
#define K_EVENT_SUBJECT_MAX 256
/* what an agent may send: keeld prefixes "<agent id>/" (docs/events.md) */
#define K_EVENT_AGENT_SUBJECT_MAX 224
#define K_EVENT_DATA_MAX (16 * 1024) /* serialized data, bytes */

typedef struct k_events k_events_t;

typedef struct k_event {
  int64_t seq;         /* store order; set by emit, 0 before */
  const char *id;      /* "evt_..."; NULL at emit: generated */
  const char *source;  /* NULL at emit: "keeld" */
  const char *type;
  const char *subject; /* NULL = "" */
  int64_t time_ms;     /* 0 at emit: now */
  const char *path;    /* NULL = "events" */
  const char *cause;   /* NULL = "" */
  const json_t *data;  /* object or NULL (= {}) */
} k_event_t;

/* Called once per delivered event, on the loop thread.  ev and everything
 * it points to are borrowed for the call. */
typedef void (*k_event_fn)(void *ud, const k_event_t *ev);

/* Opens the engine on store s.  retention_ms: events older than this are
 * deleted by k_events_prune.  *out owned by the caller (k_events_close). */
int k_events_open(k_store_t *s, const keel_log_t *log, int64_t retention_ms, k_events_t **out,
                  keel_err_t *e);
void k_events_close(k_events_t *ev);

/* Inserts one event inside the caller's open unit (see above).  Checks
 * type (K_EVENT_TYPE_MAX, [a-z0-9_.-]), subject length and the data size
 * (KEEL_EINVAL naming what is wrong).  *seq_out, when not NULL, gets the
 * event's seq.  ev NULL: does nothing (an engine opened without events,
 * as unit tests of other engines do). */
int k_event_emit(k_events_t *ev, const k_event_t *in, int64_t *seq_out, keel_err_t *e);

/* k_event_emit for emitters that build data only to emit it: source
 * "keeld", time now, data a NEW reference this takes (released whatever
 * happens; NULL, as a failed json_pack gives, is KEEL_ENOMEM). */
int k_event_emit_new(k_events_t *ev, const char *type, const char *subject, const char *path,
                     const char *cause, json_t *data, keel_err_t *e);

/* 1 when t is a valid event type (1..K_EVENT_TYPE_MAX of [a-z0-9_.-]). */
int k_event_type_valid(const char *t);

/* Registers fn for every event delivered from now on.  At most 16
 * subscribers. */
int k_events_subscribe(k_events_t *ev, k_event_fn fn, void *ud, keel_err_t *e);

/* Delivers the events committed in generations <= durable_gen that were
 * not delivered yet.  Cheap when nothing was emitted. */
void k_events_dispatch(k_events_t *ev, uint64_t durable_gen);

/* The seq of the last event delivered: every event with a seq up to it is
 * durable.  A stream that starts from the store (GET /v1/events/stream
 * with Last-Event-ID) reads up to here and takes the rest from delivery. */
int64_t k_events_delivered(const k_events_t *ev);

/* What keeld's /metrics says of the engine.  emitted: events given a seq
 * since open — stored in their change's unit, so one rolled back with it
 * is counted and leaves a gap; last_seq: the last seq given (at open, the
 * highest stored).  ev NULL: zeros. */
typedef struct k_events_stats {
  uint64_t emitted;
  int64_t last_seq;
} k_events_stats_t;
void k_events_stats(const k_events_t *ev, k_events_stats_t *out);

/* Saves how far delivery got, for the next start (in a unit of its own,
 * so it MUST be called outside any unit, after k_events_dispatch and after
 * subscribers handled what they queued).  held: the oldest seq a
 * subscriber took but has not acted on yet (automation's queue), 0 = none:
 * delivery after a restart starts again there. */
void k_events_save(k_events_t *ev, int64_t held);

/* The CloudEvents JSON object of ev (specversion "1.0", id, source, type,
 * subject, time as RFC 3339 with ms, datacontenttype, data, keelseq,
 * keelcause when not ""): a new reference. */
json_t *k_event_json(const k_event_t *ev);

typedef struct k_events_query {
  const char *type;    /* exact, or a prefix ending in '*' ("alert.*"); NULL = any */
  const char *subject; /* exact; NULL = any */
  int64_t since_ms;    /* events at or after; 0 = any */
  int64_t after_seq;   /* events with seq > after_seq (streams, cursors); 0 = any */
  int limit;           /* 1..1000 */
} k_events_query_t;

/* Events matching q, oldest first, as k_event_json objects plus their
 * "path" (for per-item authorization; the API strips it): *items a new
 * array owned by the caller. */
int k_events_list(k_events_t *ev, const k_events_query_t *q, json_t **items, keel_err_t *e);

/* Deletes events older than now_ms - retention (in a unit of its own). */
int k_events_prune(k_events_t *ev, int64_t now_ms, keel_err_t *e);

#endif
