/* api_audit.c — /v1/audit and /v1/audit/verify.
 *
 * Verification reads the whole chain, so it runs on a worker thread with a
 * reader handle of its own; the request is held meanwhile and the loop goes on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/time.h"
#include "server.h"

int k_api_audit_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "audit");
  return 0;
}

int k_api_audit_list(k_server_t *srv, k_req_t *req) {
  k_audit_query_t q = {0};
  const char *since = k_req_query(req, "since"), *cursor = k_req_query(req, "cursor");
  json_t *items;
  uint64_t next;
  keel_err_t e = {0};
  char nbuf[32];
  int rc;

  if (k_req_limit(req, &q.limit)) return -1;
  if (since && keel_time_parse(since, &q.since_ms))
    return k_req_fail(req, 400, "bad_request", "query parameter 'since': expected an RFC 3339 time");
  if (cursor) {
    char *end;
    unsigned long long v = strtoull(cursor, &end, 10);
    if (!*cursor || *end || *cursor == '-')
      return k_req_fail(req, 400, "bad_request", "query parameter 'cursor': expected a sequence number");
    q.after_seq = v;
  }
  q.actor = k_req_query(req, "actor");
  q.action = k_req_query(req, "action");
  if ((rc = k_audit_list(srv->store, &q, &items, &next, &e))) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "audit list: %s", e.msg);
    return k_req_fail_err(req, rc, &e);
  }
  snprintf(nbuf, sizeof nbuf, "%llu", (unsigned long long)next);
  req->out = json_pack("{s:o,s:o}", "items", items, "next_cursor",
                       next ? json_string(nbuf) : json_null());
  return 0;
}

typedef struct verify_job {
  k_server_t *srv;
  k_req_t *req;
  k_store_t *writer; /* only its immutable path is used off the loop */
  uint8_t pk[32];
  uint64_t expect_seq;
  char expect_hash[KEEL_HASH_HEX];
  k_audit_verdict_t v;
  int rc;
  keel_err_t e;
} verify_job_t;

static void verify_run(void *arg) {
  verify_job_t *j = arg;
  k_store_t *reader = NULL;
  j->rc = k_store_reader_open(j->writer, &reader, &j->e);
  if (!j->rc) j->rc = k_audit_verify(reader, j->pk, j->expect_seq, j->expect_hash, &j->v, &j->e);
  k_store_close(reader);
}

static void verify_done(void *arg) {
  verify_job_t *j = arg;
  k_req_t *req = j->req;

  if (j->rc) {
    keel_log(&j->srv->log, KEEL_LOG_ERROR, "audit verify: %s", j->e.msg);
    k_req_fail_err(req, j->rc, &j->e);
  } else if (j->v.intact) {
    req->out = json_pack("{s:b,s:I,s:I,s:I,s:s}", "intact", 1, "records", (json_int_t)j->v.records,
                         "checkpoints", (json_int_t)j->v.checkpoints, "head_seq",
                         (json_int_t)j->v.head_seq, "head_hash", j->v.head_hash);
  } else {
    keel_log(&j->srv->log, KEEL_LOG_WARN, "audit verify: chain broken at record %llu: %s",
             (unsigned long long)j->v.first_bad, j->v.reason);
    req->out = json_pack("{s:b,s:I,s:I,s:s}", "intact", 0, "records", (json_int_t)j->v.records,
                         "first_bad_seq", (json_int_t)j->v.first_bad, "reason", j->v.reason);
  }
  k_http_async_done(j->srv, req);
  free(j);
}

int k_api_audit_verify(k_server_t *srv, k_req_t *req) {
  verify_job_t *j = calloc(1, sizeof *j);
  if (!j) return k_req_fail(req, 500, "internal", "out of memory");
  j->srv = srv;
  j->req = req;
  j->writer = srv->store;
  memcpy(j->pk, srv->key.pk, sizeof j->pk);
  /* The committed head: the worker's snapshot must reach at least this far. */
  k_audit_head(srv->audit, &j->expect_seq, j->expect_hash);
  if (k_work_submit(srv->work, verify_run, verify_done, j)) {
    free(j);
    return k_req_fail(req, 500, "internal", "cannot start verification");
  }
  req->async = 1;
  return 0;
}
