/* api_ops.c — unauthenticated operational routes. */
#include <stdlib.h>
#include <string.h>

#include "server.h"

int k_api_healthz(k_server_t *srv, k_req_t *req) {
  (void)srv;
  req->ctype = "text/plain; charset=utf-8";
  req->text = strdup("ok\n");
  return req->text ? 0 : k_req_fail(req, 500, "internal", "out of memory");
}

int k_api_readyz(k_server_t *srv, k_req_t *req) {
  req->ctype = "text/plain; charset=utf-8";
  if (!srv->store || srv->stopping) {
    req->status = 503;
    req->text = strdup(srv->stopping ? "stopping\n" : "store not open\n");
  } else {
    req->text = strdup("ready\n");
  }
  return req->text ? 0 : k_req_fail(req, 500, "internal", "out of memory");
}

int k_api_metrics(k_server_t *srv, k_req_t *req) {
  keel_buf_t b;
  keel_buf_init(&b, 16 << 20);
  if (k_metrics_render(srv, &b)) {
    keel_buf_free(&b);
    return k_req_fail(req, 500, "internal", "cannot render metrics");
  }
  req->ctype = "text/plain; version=0.0.4; charset=utf-8";
  req->text = keel_buf_steal(&b);
  return 0;
}
