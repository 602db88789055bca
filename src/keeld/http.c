/* http.c — libmicrohttpd driven by keeld's loop.
 *
 * MHD runs in external mode with its own epoll fd, which sits in our loop;
 * every handler call happens on the loop thread.  Answers are queued on a
 * handler call after the first (queuing on the first closes keep-alive
 * connections), and an answer that depends on data not yet durable is held:
 * the connection is suspended until the store's durable generation reaches
 * the request's, then resumed and answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "metrics/tsdb.h"
#include "server.h"

static void req_free(k_req_t *req) {
  keel_buf_free(&req->body);
  keel_buf_free(&req->detail);
  json_decref(req->in);
  json_decref(req->out);
  json_decref(req->target_tags);
  free(req->text);
  free(req->url);
  free(req);
}

static int valid_request_id(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 23) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
      return 0;
  return 1;
}

static k_req_t *req_new(k_server_t *srv, struct MHD_Connection *conn, const char *url,
                        const char *method) {
  k_req_t *req = calloc(1, sizeof *req);
  const char *rid;
  if (!req) return NULL;
  req->conn = conn;
  req->url = strdup(url);
  if (!req->url) {
    free(req);
    return NULL;
  }
  keel_utf8_sanitize(req->url);
  snprintf(req->method, sizeof req->method, "%s", method);
  req->start_ns = keel_mono_ns();
  req->route_idx = -1;
  {
    char params[K_MAX_PARAMS][160], allow[64];
    int idx = -1;
    k_route_match(method, url, &idx, params, allow, sizeof allow);
    req->body_limit = k_route_body_limit(srv, idx >= 0 ? &k_routes[idx] : NULL);
  }
  keel_buf_init(&req->body, (size_t)req->body_limit);
  keel_buf_init(&req->detail, K_AUDIT_DETAIL_MAX + 128);
  rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
  if (rid && valid_request_id(rid))
    snprintf(req->request_id, sizeof req->request_id, "%s", rid);
  else
    keel_random_b32(req->request_id, 16);
  return req;
}

static enum MHD_Result queue_answer(k_req_t *req) {
  struct MHD_Response *resp;
  char *body = NULL;
  size_t len;
  const char *ctype = req->ctype ? req->ctype : "application/json";
  enum MHD_Result ret;

  if (req->respond && req->status == 200) {
    /* a stream: its own reader sends the body */
    resp = req->respond(req);
    req->respond = NULL;
    if (!resp) return MHD_NO;
    goto head;
  }
  if (req->respond) ctype = "application/json"; /* a stream refused: the error is JSON */
  if (req->text) {
    body = req->text;
    req->text = NULL;
  } else {
    json_t *o = req->out;
    int prom = req->route_idx >= 0 && (k_routes[req->route_idx].flags & K_ROUTE_PROM);
    if (!o && req->status >= 400 && prom)
      o = json_pack("{s:s,s:s,s:s}", "status", "error", "errorType",
                    req->err_code[0] ? req->err_code : "internal", "error", req->err.msg);
    else if (!o && req->status >= 400)
      o = json_pack("{s:{s:s,s:s}}", "error", "code", req->err_code[0] ? req->err_code : "error",
                    "message", req->err.msg);
    else if (o)
      json_incref(o);
    /* Prometheus writes sample times as the shortest decimal of seconds
     * with milliseconds: 13 significant digits hold them exactly. */
    body = o ? json_dumps(o, JSON_COMPACT | (prom ? JSON_REAL_PRECISION(13) : 0)) : NULL;
    json_decref(o);
    if (!body) {
      body = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"cannot encode answer\"}}");
      req->status = 500;
    }
    if (body) {
      /* one line per answer, for curl and humans */
      size_t n = strlen(body);
      char *p = realloc(body, n + 2);
      if (p) {
        p[n] = '\n';
        p[n + 1] = '\0';
        body = p;
      }
    }
  }
  len = body ? strlen(body) : 0;
  resp = MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE
                                                                             : MHD_RESPMEM_PERSISTENT);
  if (!resp) {
    free(body);
    return MHD_NO;
  }
head:
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  MHD_add_response_header(resp, "X-Request-Id", req->request_id);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (req->status == 405 && req->allow[0]) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, req->allow);
  if (req->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  ret = MHD_queue_response(req->conn, (unsigned)req->status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* 1 when everything req's answer depends on is durable. */
static int durable(k_server_t *srv, const k_req_t *req) {
  return req->wait_gen <= k_store_durable_gen(srv->store) &&
         (!srv->tsdb || req->wait_tsdb_gen <= k_tsdb_durable_gen(srv->tsdb));
}

static void wait_push(k_server_t *srv, k_req_t *req) {
  req->next_wait = NULL;
  if (srv->wait_tail)
    srv->wait_tail->next_wait = req;
  else
    srv->wait_head = req;
  srv->wait_tail = req;
}

/* Per connection: how many requests it has begun (MHD's socket context,
 * allocated when the connection is accepted, freed when it closes). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  (void)cls, (void)conn;
  if (code == MHD_CONNECTION_NOTIFY_STARTED)
    *socket_context = calloc(1, sizeof(unsigned));
  else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    free(*socket_context);
    *socket_context = NULL;
  }
}

/* After SIGTERM every answer closes its connection.  A connection accepted
 * before the stop gets its first request served (its client did nothing
 * wrong); a further request on a kept-alive connection, and any long-poll,
 * is refused with 503, or agents re-polling at once would hold the drain
 * open.  begun: the connection's request count (NULL when unknown).
 * Returns 1 to refuse. */
static int stop_refuses(const unsigned *begun, k_req_t *req) {
  char params[K_MAX_PARAMS][160], allow[64];
  int idx = -1;
  req->close = 1;
  if (!begun || *begun > 1) return 1;
  return k_route_match(req->method, req->url, &idx, params, allow, sizeof allow) == 0 &&
         k_routes[idx].action && !strcmp(k_routes[idx].action, "agent:poll");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  k_server_t *srv = cls;
  k_req_t *req = *con_cls;
  unsigned *begun;
  (void)version;

  if (!req) {
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    req = req_new(srv, conn, url, method);
    if (!req) return MHD_NO;
    *con_cls = req;
    srv->inflight++;
    {
      const union MHD_ConnectionInfo *ci =
          MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
      begun = ci ? ci->socket_context : NULL;
      if (begun) ++*begun;
    }
    if (srv->stopping && stop_refuses(begun, req)) {
      k_req_fail(req, 503, "unavailable", "keeld is shutting down; retry shortly");
      return queue_answer(req);
    }
    /* A declared length over the cap is refused before reading the body;
     * MHD then closes the connection, which is what we want here. */
    if (cl && strtoll(cl, NULL, 10) > req->body_limit) {
      req->too_big = 1;
      k_dispatch(srv, req);
      return queue_answer(req);
    }
    return MHD_YES;
  }
  if (*upload_data_size) {
    if (!req->too_big && keel_buf_append(&req->body, upload_data, *upload_data_size))
      req->too_big = 1;
    if (req->too_big && req->body.len) keel_buf_free(&req->body);
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (req->ready) return queue_answer(req);
  if (req->suspended) return MHD_YES; /* spurious call while held */

  k_dispatch(srv, req);
  if (req->async) {
    req->suspended = 1;
    MHD_suspend_connection(conn);
    return MHD_YES;
  }
  if (!durable(srv, req)) {
    req->ready = 1;
    req->suspended = 1;
    MHD_suspend_connection(conn);
    wait_push(srv, req);
    return MHD_YES;
  }
  return queue_answer(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  k_server_t *srv = cls;
  k_req_t *req = *con_cls;
  (void)conn;
  (void)toe;
  if (!req) return;
  k_metrics_observe(srv, req->route_idx, req->status ? req->status : 500,
                    (double)(keel_mono_ns() - req->start_ns) / 1e9);
  srv->inflight--;
  *con_cls = NULL;
  req_free(req);
}

void k_http_release(k_server_t *srv) {
  uint64_t failed = k_store_failed_gen(srv->store);
  uint64_t tfailed = srv->tsdb ? k_tsdb_failed_gen(srv->tsdb) : 0;
  int resumed = 0;
  k_req_t *req = srv->wait_head, **pp = &srv->wait_head, *last = NULL;

  /* Generations only grow along the queue, but a failed batch can sit
   * anywhere in it, so walk all and keep the rest in order. */
  while (req) {
    k_req_t *next = req->next_wait;
    if ((req->wait_gen == failed && failed) || (req->wait_tsdb_gen == tfailed && tfailed)) {
      k_req_fail(req, 500, "internal", "the change could not be committed (request %s)",
                 req->request_id);
    } else if (!durable(srv, req)) {
      last = req;
      pp = &req->next_wait;
      req = next;
      continue;
    }
    *pp = next;
    req->next_wait = NULL;
    req->suspended = 0;
    MHD_resume_connection(req->conn);
    resumed = 1;
    req = next;
  }
  srv->wait_tail = last;
  if (resumed) MHD_run(srv->mhd);
}

void k_http_async_done(k_server_t *srv, k_req_t *req) {
  req->async = 0;
  req->wait_gen = k_store_visible_gen(srv->store);
  req->ready = 1;
  if (!durable(srv, req)) {
    wait_push(srv, req);
    return;
  }
  req->suspended = 0;
  MHD_resume_connection(req->conn);
  /* MUST NOT run MHD here: this may be called from inside an MHD handler
   * (a poll replacing another), and MHD is not reentrant.  before_sleep
   * runs it. */
  srv->mhd_kick = 1;
}

static void on_mhd_ready(k_loop_t *l, int fd, uint32_t events, void *ud) {
  (void)l;
  (void)fd;
  (void)events;
  MHD_run(((k_server_t *)ud)->mhd);
}

void k_http_run(k_server_t *srv) { MHD_run(srv->mhd); }

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len, int *v6,
                        keel_err_t *e) {
  char host[128];
  const char *colon = strrchr(s, ':');
  char *end;
  long port;

  memset(ss, 0, sizeof *ss);
  if (!colon) return keel_err_set(e, KEEL_EINVAL, "listen '%s': expected HOST:PORT", s);
  port = strtol(colon + 1, &end, 10);
  if (!colon[1] || *end || port < 0 || port > 65535)
    return keel_err_set(e, KEEL_EINVAL, "listen '%s': bad port", s);
  snprintf(host, sizeof host, "%.*s", (int)(colon - s), s);
  if (host[0] == '[') {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    size_t n = strlen(host);
    if (n < 2 || host[n - 1] != ']') return keel_err_set(e, KEEL_EINVAL, "listen '%s': bad IPv6", s);
    host[n - 1] = '\0';
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
      return keel_err_set(e, KEEL_EINVAL, "listen '%s': bad IPv6 address", s);
    *len = sizeof *a;
    *v6 = 1;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (!host[0]) {
      a->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
      return keel_err_set(e, KEEL_EINVAL, "listen '%s': '%s' is not an IPv4 address", s, host);
    }
    *len = sizeof *a;
    *v6 = 0;
  }
  return 0;
}

int k_http_start(k_server_t *srv, keel_err_t *e) {
  struct sockaddr_storage ss, bound;
  socklen_t len, blen = sizeof bound;
  const union MHD_DaemonInfo *info;
  char host[INET6_ADDRSTRLEN];
  int v6 = 0, rc, port;

  if ((rc = parse_listen(srv->opts.listen, &ss, &len, &v6, e))) return rc;
  srv->mhd = MHD_start_daemon(
      MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | (v6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
      on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
      MHD_OPTION_END);
  if (!srv->mhd)
    return keel_err_set(e, KEEL_EIO, "cannot listen on %s: %s", srv->opts.listen,
                        errno ? strerror(errno) : "libmicrohttpd refused");
  info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  srv->mhd_epfd = info ? info->epoll_fd : -1;
  if (srv->mhd_epfd < 0 || k_loop_add_fd(srv->loop, srv->mhd_epfd, EPOLLIN, on_mhd_ready, srv))
    return keel_err_set(e, KEEL_EIO, "cannot attach the HTTP server to the loop");
  info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_LISTEN_FD);
  if (!info || getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen))
    return keel_err_set(e, KEEL_EIO, "getsockname: %s", strerror(errno));
  if (bound.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&bound;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    snprintf(srv->url, sizeof srv->url, "http://[%s]:%d", host, port);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&bound;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    snprintf(srv->url, sizeof srv->url, "http://%s:%d",
             a->sin_addr.s_addr == htonl(INADDR_ANY) ? "127.0.0.1" : host, port);
  }
  return 0;
}

void k_http_quiesce(k_server_t *srv) {
  MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
  if (fd != MHD_INVALID_SOCKET) close(fd);
}

void k_http_stop(k_server_t *srv) {
  if (!srv->mhd) return;
  if (srv->mhd_epfd >= 0) k_loop_del_fd(srv->loop, srv->mhd_epfd);
  MHD_stop_daemon(srv->mhd);
  srv->mhd = NULL;
}
