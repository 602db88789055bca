/* conn.c — the two keep-alive transfers, `poll` (the long-poll) and `push`
 * (results, inventory, enrollment), on the backend the URL's scheme picks:
 * conn_plain.c for http://, conn_curl.c (libcurl, loaded at run time) for
 * https://.  What is common lives here: the URL, the Authorization header,
 * the transfer bookkeeping and the backoff. */
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"
#include "conn_be.h"
#include "keel/time.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS 30000

static int has_ctl(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= 0x20 || *p == 0x7f) return 1;
  return 0;
}

int ka_conn_init(ka_conn_t *c, const char *base, const ka_identity_t *id, const keel_log_t *log,
                 keel_err_t *e) {
  const char *auth, *slash;
  size_t n;
  int rc = 0;

  memset(c, 0, sizeof *c);
  c->id = id;
  c->log = log;
  keel_buf_init(&c->poll.resp, KA_RESPONSE_MAX);
  keel_buf_init(&c->push.resp, KA_RESPONSE_MAX);
  if (!strncasecmp(base, "http://", 7)) {
    c->ops = &ka_conn_plain;
  } else if (!strncasecmp(base, "https://", 8)) {
    c->ops = &ka_conn_curl;
  } else {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': expected http:// or https://", base);
    goto out;
  }
  if (strpbrk(base, "?#") || has_ctl(base)) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': must not contain '?', '#' or spaces",
                      base);
    goto out;
  }
  auth = strstr(base, "://") + 3;
  if (!*auth || *auth == '/') {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': no host", base);
    goto out;
  }
  c->base = strdup(base);
  if (!c->base) goto nomem;
  n = strlen(c->base);
  while (n > 0 && c->base[n - 1] == '/') c->base[--n] = '\0';
  /* The signature covers the request target as sent: a server mounted
   * under a path prefix sees that prefix, so it is part of what we sign. */
  auth = strstr(c->base, "://") + 3;
  slash = strchr(auth, '/');
  c->prefix = strdup(slash ? slash : "");
  if (!c->prefix) goto nomem;
  rc = c->ops->init(c, e);
  goto out;
nomem:
  rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  if (rc) ka_conn_free(c);
  return rc;
}

void ka_conn_free(ka_conn_t *c) {
  if (c->ops) c->ops->free(c);
  free(c->poll.body);
  free(c->push.body);
  keel_buf_free(&c->poll.resp);
  keel_buf_free(&c->push.resp);
  free(c->base);
  free(c->prefix);
  memset(c, 0, sizeof *c);
}

int ka_conn_authorization(const ka_conn_t *c, const char *route, const char *bearer,
                          const char *body, size_t blen, keel_buf_t *out) {
  keel_buf_t path;
  int rc;

  keel_buf_reset(out);
  if (bearer) {
    if (keel_buf_puts(out, "Bearer ") || keel_buf_puts(out, bearer)) return KEEL_ETOOBIG;
    return 0;
  }
  keel_buf_init(&path, 4096);
  rc = keel_buf_puts(&path, c->prefix);
  if (!rc) rc = keel_buf_puts(&path, route);
  if (!rc)
    rc = keel_agent_sign_request(out, c->id->agent_id, c->id->sk, "POST", path.data,
                                 keel_now_ms(), body, blen);
  keel_buf_free(&path);
  return rc;
}

/* body: blen bytes (owned from here on); ctype: static, NULL for JSON. */
static int post(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body, size_t blen,
                const char *ctype, long timeout_ms, const char *bearer, keel_err_t *e) {
  int rc;

  if (x->active) {
    free(body);
    return keel_err_set(e, KEEL_EINVAL, "a request is already in flight on this transfer");
  }
  free(x->body);
  x->body = body;
  x->ctype = ctype;
  x->done = 0;
  x->status = 0;
  x->cc = KA_XE_OK;
  x->errbuf[0] = '\0';
  keel_buf_reset(&x->resp);
  if (bearer && has_ctl(bearer)) {
    rc = keel_err_set(e, KEEL_EINVAL, "token: must not contain spaces or control characters");
    goto out;
  }
  if (strlen(c->prefix) + strlen(route) > 4000) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "request URL too long");
    goto out;
  }
  rc = c->ops->start(c, x, route, bearer, blen, timeout_ms, e);
out:
  if (rc) { /* body was taken either way */
    free(x->body);
    x->body = NULL;
    x->active = 0;
  }
  return rc;
}

int ka_conn_post(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body, long timeout_ms,
                 keel_err_t *e) {
  return post(c, x, route, body, body ? strlen(body) : 0, NULL, timeout_ms, NULL, e);
}

int ka_conn_post_bin(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body, size_t len,
                     const char *ctype, long timeout_ms, keel_err_t *e) {
  return post(c, x, route, body, len, ctype, timeout_ms, NULL, e);
}

int ka_conn_post_bearer(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body,
                        long timeout_ms, const char *token, keel_err_t *e) {
  return post(c, x, route, body, body ? strlen(body) : 0, NULL, timeout_ms, token ? token : "",
              e);
}

int ka_conn_wait(ka_conn_t *c, struct pollfd *extra, unsigned n, int timeout_ms) {
  if (n > 64) n = 64;
  if (timeout_ms < 0) timeout_ms = 0;
  return c->ops->wait(c, extra, n, timeout_ms);
}

void ka_conn_xfer_fail(ka_xfer_t *x, int cc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(x->errbuf, sizeof x->errbuf, fmt, ap);
  va_end(ap);
  x->cc = cc ? cc : KA_XE_IO;
  x->status = 0;
  x->active = 0;
  x->done = 1;
  free(x->body);
  x->body = NULL;
}

void ka_conn_xfer_ok(ka_xfer_t *x, long status) {
  x->cc = KA_XE_OK;
  x->errbuf[0] = '\0';
  x->status = status;
  x->active = 0;
  x->done = 1;
  free(x->body);
  x->body = NULL;
}

const char *ka_conn_strerror(const ka_xfer_t *x) {
  if (x->errbuf[0]) return x->errbuf;
  switch (x->cc) {
  case KA_XE_OK: return "no error";
  case KA_XE_CONNECT: return "cannot connect";
  case KA_XE_TIMEOUT: return "timed out";
  case KA_XE_TOOBIG: return "response larger than the cap";
  case KA_XE_PROTO: return "malformed response";
  case KA_XE_NOMEM: return "out of memory";
  default: return "transport error";
  }
}

void ka_backoff_fail(ka_backoff_t *b, int64_t now) {
  int64_t ceil = BACKOFF_BASE_MS;
  for (int64_t i = 0; i < b->step && ceil < BACKOFF_CAP_MS; i++) ceil *= 2;
  if (ceil > BACKOFF_CAP_MS) ceil = BACKOFF_CAP_MS;
  /* Full jitter: a fleet that lost the server together does not come
   * back in lockstep. */
  b->until = now + (int64_t)randombytes_uniform((uint32_t)ceil + 1);
  b->step++;
}

void ka_backoff_cap(ka_backoff_t *b, int64_t now) {
  b->until = now + BACKOFF_CAP_MS;
  b->step++;
}

void ka_backoff_reset(ka_backoff_t *b) {
  b->step = 0;
  b->until = 0;
}
