/* conn_be.h — what conn.c asks of a connection backend (conn_plain.c for
 * http://, conn_curl.c for https://).  Internal to src/agent. */
#ifndef KA_CONN_BE_H
#define KA_CONN_BE_H

#include "agent.h"

struct ka_conn_backend {
  const char *name;
  /* Sets up c->be; c->base, c->prefix, c->id, c->log are set. */
  int (*init)(ka_conn_t *c, keel_err_t *e);
  /* Aborts active transfers, closes every connection, frees c->be and the
   * xfers' be.  MUST accept a half-initialised c (c->be NULL). */
  void (*free)(ka_conn_t *c);
  /* Starts x's request.  conn.c has reset x (resp empty, cc/status 0,
   * errbuf "") and set x->body (blen bytes, owned by x; binary bodies may
   * hold NUL bytes) and x->ctype: the backend MUST send
   * `Content-Type: x->ctype`, or application/json when it is NULL.  It calls
   * ka_conn_authorization (route, bearer) for each time it sends the
   * request; bearer (NULL: sign) is to be copied.  On failure the backend
   * leaves x inactive; conn.c frees the body. */
  int (*start)(ka_conn_t *c, ka_xfer_t *x, const char *route, const char *bearer, size_t blen,
               long timeout_ms, keel_err_t *e);
  int (*wait)(ka_conn_t *c, struct pollfd *extra, unsigned n, int timeout_ms);
};

extern const struct ka_conn_backend ka_conn_plain;
extern const struct ka_conn_backend ka_conn_curl;

/* The Authorization header's value for a POST of body to c->prefix + route:
 * "Bearer <bearer>" when bearer is not NULL, else the KeelAgent signature
 * (timestamp and nonce taken now: every (re)send signs afresh).  out is
 * reset first; the caller SHOULD wipe it after use. */
int ka_conn_authorization(const ka_conn_t *c, const char *route, const char *bearer,
                          const char *body, size_t blen, keel_buf_t *out);
/* Ends x: sets cc, errbuf (printf), status 0, done; frees the body. */
void ka_conn_xfer_fail(ka_xfer_t *x, int cc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends x with an HTTP answer (resp already filled). */
void ka_conn_xfer_ok(ka_xfer_t *x, long status);

#endif
