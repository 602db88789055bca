/* api_events.c — events over the API (docs/events.md): GET /v1/events,
 * GET /v1/events/stream (Server-Sent Events), POST /v1/agent/events (what
 * agents report), and the glue that turns agents' liveness into events.
 *
 * Streams.  An SSE answer is an MHD callback response of unknown size
 * (chunked).  Its reader sends what the stream has buffered; with nothing
 * buffered it suspends the connection and returns 0 (MHD's prescribed way
 * to wait without busy-looping), and the stream is resumed when the
 * `events` phase delivers an event for it or a heartbeat is due.  Streams
 * see only delivered events, i.e. of durable generations: a stream
 * resuming from Last-Event-ID (or starting at since=) first reads the store
 * up to k_events_delivered(), page by page as its buffer drains, then takes
 * the live events.  Both happen on the loop thread, so nothing is missed
 * or sent twice at the seam.  A client that falls more than STREAM_BUF_MAX
 * behind is cut off; it reconnects with Last-Event-ID and catches up from
 * the store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

#define STREAMS_MAX 256
#define STREAM_BUF_MAX (1 << 20)     /* bytes buffered for one client before it is cut off */
#define STREAM_HEARTBEAT_MS 15000
#define STREAM_REAUTH_MS 5000 /* a revoked token's stream ends within this */
#define STREAM_PAGE 200              /* events read from the store per catch-up page */
#define STREAM_TYPES_MAX 16
#define LIST_PAGES_MAX 10            /* store pages one list request may read while filtering */
#define AGENT_EVENTS_MAX 256
#define AGENT_EVENTS_BODY_MAX (256 * 1024)
#define AGENT_EVENT_FUTURE_MS (10 * 60 * 1000) /* clock skew tolerated on an agent's time */

static const char *const agent_types[] = {"service.", "file.", "check.", NULL};

/* ---- events about hosts ----------------------------------------------------------- */

int k_events_emit_host(k_server_t *srv, const k_agent_t *a, const char *type, keel_err_t *e) {
  char path[200];
  json_t *labels = k_fleet_labels_json(a);
  k_org_host_path(srv->org, a->id, a->hostname, a->tags, path, sizeof path);
  return k_event_emit_new(srv->events, type, a->id, path, NULL,
                          labels ? json_pack("{s:s,s:s,s:o}", "agent_id", a->id, "hostname",
                                             a->hostname, "labels", labels)
                                 : NULL,
                          e);
}

/* The fleet's liveness hook: one unit per transition. */
static void on_agent_change(void *ud, k_agent_t *a) {
  k_server_t *srv = ud;
  keel_err_t e = {0};
  int rc = k_store_unit_begin(srv->store, &e);
  if (!rc) {
    rc = k_events_emit_host(srv, a, a->online ? "agent.online" : "agent.offline", &e);
    if (k_store_unit_end(srv->store, rc == 0, NULL) && !rc) rc = KEEL_EIO;
  }
  if (rc)
    keel_log(&srv->log, KEEL_LOG_ERROR, "events: agent %s %s: %s", a->id,
             a->online ? "online" : "offline", e.msg);
}

/* ---- query parameters ------------------------------------------------------------- */

typedef struct equery {
  char types[STREAM_TYPES_MAX][K_EVENT_TYPE_MAX + 2]; /* exact or prefix* */
  int ntypes;
  const char *subject;
  int64_t since_ms;
  int64_t cursor;
  int limit;
} equery_t;

/* ?type=T[,T...] (at most max), ?subject=, ?since= (RFC 3339 or a duration
 * back from now), ?cursor= (a seq); 400 naming the parameter. */
static int parse_query(k_req_t *req, equery_t *q, int max_types) {
  const char *type = k_req_query(req, "type"), *since = k_req_query(req, "since");
  const char *cursor = k_req_query(req, "cursor");

  memset(q, 0, sizeof *q);
  q->subject = k_req_query(req, "subject");
  if (type) {
    const char *p = type;
    for (;;) {
      size_t n = strcspn(p, ",");
      char *t;
      int prefix;
      if (q->ntypes == max_types)
        return k_req_fail(req, 400, "bad_request", "query parameter 'type': at most %d type%s",
                          max_types, max_types > 1 ? "s" : "");
      t = q->types[q->ntypes];
      if (n == 0 || n > K_EVENT_TYPE_MAX + 1) goto bad_type;
      memcpy(t, p, n);
      t[n] = '\0';
      prefix = t[n - 1] == '*';
      if (prefix) t[n - 1] = '\0';
      if (t[0] ? !k_event_type_valid(t) : !prefix) goto bad_type;
      if (prefix) t[n - 1] = '*';
      q->ntypes++;
      if (!p[n]) break;
      p += n + 1;
    }
  }
  if (q->subject && strlen(q->subject) > K_EVENT_SUBJECT_MAX)
    return k_req_fail(req, 400, "bad_request", "query parameter 'subject': longer than %d bytes",
                      K_EVENT_SUBJECT_MAX);
  if (since) {
    int64_t d;
    if (keel_time_parse(since, &q->since_ms) == 0) {
    } else if (keel_duration_parse(since, &d) == 0) {
      q->since_ms = keel_now_ms() - d;
    } else {
      return k_req_fail(req, 400, "bad_request",
                        "query parameter 'since': expected an RFC 3339 time or a duration (1h, 30m)");
    }
  }
  if (cursor) {
    char *end;
    long long v = strtoll(cursor, &end, 10);
    if (!*cursor || *end || v < 0)
      return k_req_fail(req, 400, "bad_request", "query parameter 'cursor': not a cursor from this list");
    q->cursor = v;
  }
  return 0;
bad_type:
  return k_req_fail(req, 400, "bad_request",
                    "query parameter 'type': expected an event type (agent.offline) or a prefix "
                    "ending in '*' (alert.*)%s",
                    max_types > 1 ? ", several separated by ','" : "");
}

static int type_match(const equery_t *q, const char *type) {
  if (!q->ntypes) return 1;
  for (int i = 0; i < q->ntypes; i++) {
    size_t n = strlen(q->types[i]);
    if (q->types[i][n - 1] == '*' ? !strncmp(q->types[i], type, n - 1) : !strcmp(q->types[i], type))
      return 1;
  }
  return 0;
}

/* ---- GET /v1/events ------------------------------------------------------------------ */

int k_api_events_decode(k_server_t *srv, k_req_t *req) {
  equery_t q;
  int limit;
  (void)srv;
  if (parse_query(req, &q, 1) || k_req_limit(req, &limit)) return -1;
  snprintf(req->target.path, sizeof req->target.path, "events");
  return 0;
}

int k_api_event_list(k_server_t *srv, k_req_t *req) {
  k_events_query_t kq = {0};
  json_t *items = json_array(), *page = NULL;
  keel_err_t e = {0};
  char next[24];
  int64_t last = 0;
  int limit, more = 0, rc;
  equery_t q;

  if (!items) return k_req_fail_err(req, KEEL_ENOMEM, NULL);
  if (parse_query(req, &q, 1) || k_req_limit(req, &limit)) goto fail;
  kq.type = q.ntypes ? q.types[0] : NULL;
  kq.subject = q.subject;
  kq.since_ms = q.since_ms;
  kq.after_seq = q.cursor;
  kq.limit = limit;
  /* Items are filtered one by one (event:read on each path), so a page
   * may take several reads of the store; bounded, then the cursor says
   * where to go on. */
  for (int pages = 0; pages < LIST_PAGES_MAX && !more; pages++) {
    size_t i, n;
    json_t *it;
    if ((rc = k_events_list(srv->events, &kq, &page, &e))) {
      if (rc != KEEL_EINVAL) keel_log(&srv->log, KEEL_LOG_ERROR, "events list: %s", e.msg);
      k_req_fail_err(req, rc, &e);
      goto fail;
    }
    n = json_array_size(page);
    json_array_foreach(page, i, it) {
      int64_t seq = json_integer_value(json_object_get(it, "keelseq"));
      if ((int)json_array_size(items) == limit) {
        more = 1;
        break;
      }
      last = seq;
      if (!k_authz_may(srv, &req->who, "event:read", keel_json_str(it, "path"))) continue;
      json_object_del(it, "path");
      json_array_append(items, it);
    }
    json_decref(page);
    page = NULL;
    if (more) break;
    if (n < (size_t)limit) break;      /* the end */
    if (pages + 1 == LIST_PAGES_MAX) more = 1;
    kq.after_seq = last;
  }
  snprintf(next, sizeof next, "%lld", (long long)last);
  k_req_set_page(req, items, more ? next : NULL);
  return 0;
fail:
  json_decref(items);
  return -1;
}

/* ---- GET /v1/events/stream ------------------------------------------------------------- */

typedef struct stream {
  struct stream *next, *prev;
  k_server_t *srv;
  struct MHD_Connection *conn;
  k_principal_t who;
  equery_t q;
  char subject[K_EVENT_SUBJECT_MAX + 1];
  int64_t last_seq;    /* every event up to here was sent or filtered out */
  int catching_up;     /* reading the store up to k_events_delivered() */
  keel_buf_t out;
  size_t off;          /* bytes of out already sent */
  int suspended;
  int end;             /* 1: end after what is buffered; 2: cut off now */
  int64_t last_send_ms; /* keel_mono_ms() */
  int64_t last_auth_ms; /* keel_mono_ms() of the last check of its token */
} stream_t;

struct k_event_streams {
  stream_t *head;
  int n;
  uint64_t ended; /* streams keeld ended itself (k_api_events_stats) */
};

/* keeld ends st: how 1 after what is buffered, 2 at once.  Counted once
 * per stream (keel_event_streams_cut_total): a stream its client closed
 * never comes here. */
static void stream_end(stream_t *st, int how) {
  if (!st->end) st->srv->streams->ended++;
  st->end = how;
}

static void stream_resume(stream_t *st) {
  if (!st->suspended) return;
  st->suspended = 0;
  MHD_resume_connection(st->conn);
  st->srv->mhd_kick = 1; /* before_sleep runs MHD; never from here */
}

/* Drops the bytes already sent, so the buffer's cap bounds what is
 * pending, not what was ever written. */
static void stream_compact(stream_t *st) {
  if (!st->off) return;
  memmove(st->out.data, st->out.data + st->off, st->out.len - st->off + 1); /* NUL too */
  st->out.len -= st->off;
  st->off = 0;
}

/* Adds one event frame; a client this far behind is cut off. */
static void stream_add(stream_t *st, const json_t *ev, int64_t seq) {
  char *text;
  if (st->end) return;
  stream_compact(st);
  text = json_dumps(ev, JSON_COMPACT);
  if (!text) {
    stream_end(st, 2);
    return;
  }
  if (st->out.len - st->off + strlen(text) + 64 > STREAM_BUF_MAX) {
    keel_log(&st->srv->log, KEEL_LOG_WARN,
             "events: stream of %s cut off: more than %d bytes behind (it resumes with Last-Event-ID)",
             st->who.user, STREAM_BUF_MAX);
    stream_end(st, 2);
    keel_buf_free(&st->out); /* never sent now */
    st->off = 0;
  } else if (keel_buf_printf(&st->out, "id: %lld\ndata: %s\n\n", (long long)seq, text)) {
    stream_end(st, 2);
  }
  free(text);
}

static int stream_wants(stream_t *st, const char *type, const char *subject, int64_t time_ms,
                        const char *path) {
  if (!type_match(&st->q, type)) return 0;
  if (st->q.subject && strcmp(st->q.subject, subject)) return 0;
  if (st->q.since_ms && time_ms < st->q.since_ms) return 0;
  return k_authz_may(st->srv, &st->who, "event:read", path);
}

/* One catch-up page from the store (only delivered events). */
static void stream_catch_up(stream_t *st) {
  k_events_query_t kq = {0};
  int64_t upto = k_events_delivered(st->srv->events);
  json_t *page = NULL, *it;
  keel_err_t e = {0};
  size_t i;

  kq.type = st->q.ntypes == 1 ? st->q.types[0] : NULL; /* several: filtered here */
  kq.subject = st->q.subject;
  kq.since_ms = st->q.since_ms;
  kq.after_seq = st->last_seq;
  kq.limit = STREAM_PAGE;
  if (st->last_seq >= upto) {
    st->catching_up = 0;
    return;
  }
  if (k_events_list(st->srv->events, &kq, &page, &e)) {
    keel_log(&st->srv->log, KEEL_LOG_ERROR, "events: stream catch-up: %s", e.msg);
    stream_end(st, 2);
    return;
  }
  if (json_array_size(page) < STREAM_PAGE) st->catching_up = 0;
  json_array_foreach(page, i, it) {
    int64_t seq = json_integer_value(json_object_get(it, "keelseq"));
    if (seq > upto) { /* not delivered yet: live delivery brings it */
      st->catching_up = 0;
      break;
    }
    st->last_seq = seq;
    if (!type_match(&st->q, keel_json_str(it, "type")) ||
        !k_authz_may(st->srv, &st->who, "event:read", keel_json_str(it, "path")))
      continue;
    json_object_del(it, "path");
    stream_add(st, it, seq);
  }
  /* reached the live edge: deliveries from here on are sent as they come */
  if (!st->catching_up && st->last_seq < upto) st->last_seq = upto;
  json_decref(page);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  stream_t *st = cls;
  size_t n;
  (void)pos;
  if (st->end == 2) return MHD_CONTENT_READER_END_WITH_ERROR;
  if (st->off == st->out.len) {
    keel_buf_reset(&st->out);
    st->off = 0;
    /* a few pages at a time: pages the filters empty must not hold the
     * loop; a stream still catching up is resumed by the next cron */
    for (int i = 0; i < 20 && st->catching_up && !st->end && !st->out.len; i++)
      stream_catch_up(st);
    if (st->end == 2) return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  n = st->out.len - st->off;
  if (n) {
    if (n > max) n = max;
    memcpy(buf, st->out.data + st->off, n);
    st->off += n;
    st->last_send_ms = keel_mono_ms();
    return (ssize_t)n;
  }
  if (st->end) return MHD_CONTENT_READER_END_OF_STREAM;
  /* Nothing to send: park the connection until there is (never poll). */
  st->suspended = 1;
  MHD_suspend_connection(st->conn);
  return 0;
}

/* MHD is done with the response: the connection is gone or finished. */
static void stream_free(void *cls) {
  stream_t *st = cls;
  struct k_event_streams *ss = st->srv->streams;
  if (st->prev) st->prev->next = st->next;
  else ss->head = st->next;
  if (st->next) st->next->prev = st->prev;
  ss->n--;
  keel_buf_free(&st->out);
  free(st);
}

/* Builds the stream when its answer is queued (http.c): the request's
 * connection and principal are still there. */
static struct MHD_Response *stream_respond(k_req_t *req) {
  k_server_t *srv = req->async_state;
  struct k_event_streams *ss = srv->streams;
  const char *last_id = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Last-Event-ID");
  struct MHD_Response *resp;
  stream_t *st;

  if (ss->n >= STREAMS_MAX || !(st = calloc(1, sizeof *st))) return NULL;
  st->srv = srv;
  st->conn = req->conn;
  st->who = req->who;
  if (parse_query(req, &st->q, STREAM_TYPES_MAX)) { /* checked at decode already */
    free(st);
    return NULL;
  }
  if (st->q.subject) {
    snprintf(st->subject, sizeof st->subject, "%s", st->q.subject);
    st->q.subject = st->subject;
  }
  keel_buf_init(&st->out, STREAM_BUF_MAX + 4096);
  st->last_seq = k_events_delivered(srv->events);
  if (last_id && *last_id) {
    char *end;
    long long v = strtoll(last_id, &end, 10);
    if (!*end && v >= 0) {
      st->last_seq = v;
      st->catching_up = 1;
    }
  } else if (st->q.since_ms) {
    st->last_seq = 0;
    st->catching_up = 1;
  }
  /* A first comment sends the answer's head at once. */
  keel_buf_puts(&st->out, ": keel events\n\n");
  st->last_send_ms = st->last_auth_ms = keel_mono_ms();
  resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
  if (!resp) {
    keel_buf_free(&st->out);
    free(st);
    return NULL;
  }
  st->next = ss->head;
  if (ss->head) ss->head->prev = st;
  ss->head = st;
  ss->n++;
  return resp;
}

int k_api_event_stream_decode(k_server_t *srv, k_req_t *req) {
  equery_t q;
  const char *last_id = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Last-Event-ID");
  if (parse_query(req, &q, STREAM_TYPES_MAX)) return -1;
  if (last_id && *last_id) {
    char *end;
    long long v = strtoll(last_id, &end, 10);
    if (*end || v < 0)
      return k_req_fail(req, 400, "bad_request", "header 'Last-Event-ID': expected an event's id: line (a number)");
  }
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "events");
  return 0;
}

int k_api_event_stream(k_server_t *srv, k_req_t *req) {
  if (srv->streams->n >= STREAMS_MAX)
    return k_req_fail(req, 503, "unavailable", "too many event streams (%d); retry later", STREAMS_MAX);
  if (srv->stopping) return k_req_fail(req, 503, "unavailable", "keeld is shutting down; retry shortly");
  req->async_state = srv;
  req->respond = stream_respond;
  req->ctype = "text/event-stream";
  return 0;
}

/* Delivered events to the live streams that want them. */
static void on_event(void *ud, const k_event_t *ev) {
  k_server_t *srv = ud;
  json_t *o = NULL;
  for (stream_t *st = srv->streams->head; st; st = st->next) {
    if (st->catching_up || st->end || ev->seq <= st->last_seq) continue;
    st->last_seq = ev->seq;
    if (!stream_wants(st, ev->type, ev->subject, ev->time_ms, ev->path)) continue;
    if (!o && !(o = k_event_json(ev))) {
      stream_end(st, 2);
    } else {
      stream_add(st, o, ev->seq);
    }
    stream_resume(st);
  }
  json_decref(o);
}

/* 1 while the token a stream was opened with still authenticates: not
 * revoked, not expired, its user not disabled.  A stream outlives the
 * request that authenticated it, so it is judged again every
 * STREAM_REAUTH_MS; a read error keeps it (the next check decides). */
static int stream_token_ok(stream_t *st) {
  json_t *tok = NULL, *u = NULL;
  keel_err_t e = {0};
  int ok = 1, rc;
  if (!st->who.token_id[0]) return 1;
  rc = k_iam_token_get(st->srv->store, st->who.token_id, keel_now_ms(), &tok, &e);
  if (rc == KEEL_ENOENT || (!rc && strcmp(keel_json_str(tok, "status"), "active")))
    ok = 0;
  else if (!rc && (rc = k_iam_user_get(st->srv->store, st->who.user_id, &u, &e)) == 0)
    ok = !json_is_true(json_object_get(u, "disabled"));
  else if (rc == KEEL_ENOENT)
    ok = 0;
  json_decref(tok);
  json_decref(u);
  return ok;
}

void k_api_events_cron(k_server_t *srv, int64_t mono_ms) {
  for (stream_t *st = srv->streams->head; st; st = st->next) {
    if (!st->end && mono_ms - st->last_auth_ms >= STREAM_REAUTH_MS) {
      st->last_auth_ms = mono_ms;
      if (!stream_token_ok(st)) {
        stream_compact(st);
        keel_buf_puts(&st->out, ": token no longer valid: stream ended\n\n");
        stream_end(st, 1);
      }
    }
    if (srv->stopping && !st->end) {
      stream_end(st, 1); /* or the drain would wait for it */
    } else if (st->end || st->catching_up) {
      /* resumed to finish, or to read its next pages from the store */
    } else if (st->out.len == st->off && mono_ms - st->last_send_ms >= STREAM_HEARTBEAT_MS) {
      stream_compact(st);
      keel_buf_puts(&st->out, ": keepalive\n\n");
      st->last_send_ms = mono_ms; /* once per interval, even while the client is stalled */
    } else {
      continue;
    }
    stream_resume(st);
  }
}

void k_api_events_stats(const k_server_t *srv, k_stream_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!srv->streams) return;
  out->open = srv->streams->n;
  out->ended = srv->streams->ended;
}

int k_api_events_start(k_server_t *srv, keel_err_t *e) {
  if (!(srv->streams = calloc(1, sizeof *srv->streams)))
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  k_fleet_on_change(srv->fleet, on_agent_change, srv);
  return k_events_subscribe(srv->events, on_event, srv, e);
}

void k_api_events_stop(k_server_t *srv) {
  /* MHD has finished every response by now (k_http_stop): none left */
  free(srv->streams);
  srv->streams = NULL;
}

/* ---- POST /v1/agent/events ---------------------------------------------------------------- */

static const keel_json_field_t batch_fields[] = {
    {"events", KEEL_JSON_ARRAY, 1, AGENT_EVENTS_MAX},
    {NULL, 0, 0, 0},
};

static const keel_json_field_t event_fields[] = {
    {"type", KEEL_JSON_STRING, 1, K_EVENT_TYPE_MAX},
    {"subject", KEEL_JSON_STRING, 0, K_EVENT_AGENT_SUBJECT_MAX},
    {"time", KEEL_JSON_STRING, 0, 64},
    {"data", KEEL_JSON_OBJECT, 0, 0},
    {NULL, 0, 0, 0},
};

int k_decode_agent_events(const char *body, size_t len, int64_t now_ms, json_t **out,
                          keel_err_t *e) {
  json_t *in = NULL, *ev;
  size_t i;
  int rc;

  *out = NULL;
  if (len > AGENT_EVENTS_BODY_MAX)
    return keel_err_set(e, KEEL_ETOOBIG, "events: body larger than %d bytes", AGENT_EVENTS_BODY_MAX);
  if ((rc = keel_json_decode(body, len, batch_fields, &in, e))) return rc;
  if (!json_array_size(json_object_get(in, "events"))) {
    json_decref(in);
    return keel_err_set(e, KEEL_EINVAL, "field 'events': expected 1..%d events", AGENT_EVENTS_MAX);
  }
  json_array_foreach(json_object_get(in, "events"), i, ev) {
    keel_err_t fe = {0};
    const char *type, *time;
    const json_t *data, *labels;
    int64_t ms = now_ms;
    char *text;
    int ok = 0;

    if (!json_is_object(ev)) {
      rc = keel_err_set(e, KEEL_EINVAL, "events[%zu]: expected an object", i);
      goto fail;
    }
    if ((rc = keel_json_check(ev, event_fields, &fe))) {
      rc = keel_err_set(e, rc, "events[%zu]: %s", i, fe.msg);
      goto fail;
    }
    type = keel_json_str(ev, "type");
    for (const char *const *p = agent_types; *p; p++) ok |= !strncmp(type, *p, strlen(*p));
    if (!k_event_type_valid(type) || !ok) {
      rc = keel_err_set(e, KEEL_EINVAL,
                        "events[%zu].type: '%.64s' is not an agent event type (service.*, file.*, "
                        "check.*; lower case a-z 0-9 _ . -)",
                        i, type);
      goto fail;
    }
    if ((time = keel_json_str(ev, "time"))) {
      if (keel_time_parse(time, &ms) || ms <= 0) {
        rc = keel_err_set(e, KEEL_EINVAL, "events[%zu].time: expected an RFC 3339 time", i);
        goto fail;
      }
      if (ms > now_ms + AGENT_EVENT_FUTURE_MS) {
        rc = keel_err_set(e, KEEL_EINVAL, "events[%zu].time: more than 10 minutes in the future", i);
        goto fail;
      }
    }
    data = json_object_get(ev, "data");
    labels = json_object_get(data, "labels");
    if (labels) {
      const char *k;
      json_t *v;
      if (!json_is_object(labels)) {
        rc = keel_err_set(e, KEEL_EINVAL, "events[%zu].data.labels: expected an object of strings", i);
        goto fail;
      }
      json_object_foreach((json_t *)labels, k, v) if (!json_is_string(v)) {
        rc = keel_err_set(e, KEEL_EINVAL, "events[%zu].data.labels.%.64s: expected a string", i, k);
        goto fail;
      }
    }
    if (data && (text = keel_json_canonical(data))) {
      /* room for the host's labels keeld adds */
      size_t n = strlen(text);
      free(text);
      if (n > K_EVENT_DATA_MAX - 2048) {
        rc = keel_err_set(e, KEEL_EINVAL, "events[%zu].data: %zu bytes, more than %d", i, n,
                          K_EVENT_DATA_MAX - 2048);
        goto fail;
      }
    }
    json_object_set_new(ev, "_time_ms", json_integer(ms));
  }
  *out = in;
  return 0;
fail:
  json_decref(in);
  return rc;
}

int k_api_agent_events_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_decode_agent_events(req->body.data, req->body.len, keel_now_ms(), &req->in, &e);
  (void)srv;
  if (rc) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "agent/%s/events", req->agent->id);
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", req->agent->id);
  return 0;
}

int k_api_agent_events(k_server_t *srv, k_req_t *req) {
  const k_agent_t *a = req->agent;
  json_t *host = k_fleet_labels_json(a), *ev;
  keel_err_t e = {0};
  char path[200], source[40], subject[K_EVENT_SUBJECT_MAX + 1];
  size_t i, n = json_array_size(json_object_get(req->in, "events"));
  int rc = 0;

  if (!host) return k_req_fail_err(req, KEEL_ENOMEM, NULL);
  k_org_host_path(srv->org, a->id, a->hostname, a->tags, path, sizeof path);
  snprintf(source, sizeof source, "agent/%s", a->id);
  keel_buf_printf(&req->detail, "%zu event(s):", n);
  json_array_foreach(json_object_get(req->in, "events"), i, ev) {
    json_t *data = json_deep_copy(json_object_get(ev, "data")), *labels;
    k_event_t out = {0};
    if (!data) data = json_object();
    labels = json_object_get(data, "labels");
    if (!json_is_object(labels)) {
      labels = json_object();
      json_object_set_new(data, "labels", labels);
    }
    /* the host's labels win: an agent does not relabel itself (as with metrics) */
    if (!labels || json_object_update(labels, host)) {
      json_decref(data);
      rc = keel_err_set(&e, KEEL_ENOMEM, "out of memory");
      break;
    }
    out.type = keel_json_str(ev, "type");
    /* "<agent id>/<what>": the same service or file on two hosts is two
     * subjects (alert rules on events key their instances by subject) */
    snprintf(subject, sizeof subject, "%s%s%s", a->id, keel_json_str(ev, "subject") ? "/" : "",
             keel_json_str(ev, "subject") ? keel_json_str(ev, "subject") : "");
    out.subject = subject;
    out.source = source;
    out.time_ms = json_integer_value(json_object_get(ev, "_time_ms"));
    out.path = path;
    out.data = data;
    rc = k_event_emit(srv->events, &out, NULL, &e);
    json_decref(data);
    if (rc) {
      keel_err_t pe = e;
      if (rc == KEEL_EINVAL) keel_err_set(&e, rc, "events[%zu]: %s", i, pe.msg);
      break;
    }
    if (req->detail.len < 1024)
      keel_buf_printf(&req->detail, " %s %.80s", out.type, out.subject ? out.subject : "");
  }
  json_decref(host);
  if (rc) return k_req_fail_err(req, rc, &e);
  req->out = json_pack("{s:I}", "accepted", (json_int_t)n);
  return req->out ? 0 : k_req_fail_err(req, KEEL_ENOMEM, NULL);
}
