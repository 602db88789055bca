/* conn_curl.c — the https:// backend: the two transfers on one libcurl
 * multi handle.
 *
 * libcurl is loaded with dlopen (curlload.c) when the first https
 * connection is set up, never at program start: a plain-http agent never
 * maps it.  Every function goes through the table K. */
#include <sodium.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "conn_be.h"
#include "curlload.h"
#include "keel/version.h"

/* Process-wide: the library is loaded once and stays loaded (curlload.c);
 * curl's global state is set up while at least one connection uses it.
 * The agent is single-threaded. */
static ka_curl_t K;
static int curl_users;

static int curl_load(keel_err_t *e) {
  CURLcode cc;
  int rc;

  if (!K.lib && (rc = ka_curl_load(&K, e))) return rc;
  if (curl_users == 0 && (cc = K.global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK)
    return keel_err_set(e, KEEL_EIO, "cannot initialise libcurl: %s", K.easy_strerror(cc));
  curl_users++;
  return 0;
}

static void curl_unload(void) {
  if (curl_users > 0 && --curl_users == 0) K.global_cleanup();
}

struct curl_conn {
  CURLM *multi;
  int loaded;           /* counted in curl_users */
};

struct curl_xfer {
  CURL *easy;           /* kept across requests: its connection stays alive */
  struct curl_slist *hdrs;
  int added;            /* in the multi */
  char err[CURL_ERROR_SIZE];
};

static int be_init(ka_conn_t *c, keel_err_t *e) {
  struct curl_conn *cc = calloc(1, sizeof *cc);
  int rc;

  if (!cc) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  c->be = cc;
  if ((rc = curl_load(e))) return rc;
  cc->loaded = 1;
  if (!(cc->multi = K.multi_init())) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  return 0;
}

static void xfer_free(struct curl_conn *cc, ka_xfer_t *x) {
  struct curl_xfer *cx = x->be;
  if (!cx) return;
  if (cx->added) K.multi_remove_handle(cc->multi, cx->easy);
  if (cx->easy) K.easy_cleanup(cx->easy);
  K.slist_free_all(cx->hdrs);
  free(cx);
  x->be = NULL;
  x->active = 0;
}

static void be_free(ka_conn_t *c) {
  struct curl_conn *cc = c->be;
  if (!cc) return;
  if (cc->loaded) {
    xfer_free(cc, &c->poll);
    xfer_free(cc, &c->push);
    if (cc->multi) K.multi_cleanup(cc->multi);
    curl_unload();
  }
  free(cc);
  c->be = NULL;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  ka_xfer_t *x = ud;
  size_t n = size * nmemb;
  return keel_buf_append(&x->resp, p, n) ? 0 : n; /* 0 aborts: over the cap */
}

static int be_start(ka_conn_t *c, ka_xfer_t *x, const char *route, const char *bearer,
                      size_t blen, long timeout_ms, keel_err_t *e) {
  struct curl_conn *cc = c->be;
  struct curl_xfer *cx = x->be;
  keel_buf_t url, auth;
  CURLcode r = CURLE_OK;
  CURL *h;
  int rc = 0;

  if (!cx) {
    if (!(cx = calloc(1, sizeof *cx))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
    x->be = cx;
  }
  if (!cx->easy && !(cx->easy = K.easy_init()))
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  h = cx->easy;
  K.slist_free_all(cx->hdrs);
  cx->hdrs = NULL;
  cx->err[0] = '\0';
  keel_buf_init(&url, 8192);
  keel_buf_init(&auth, 1024);
  if (keel_buf_puts(&url, c->base) || keel_buf_puts(&url, route)) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "request URL too long");
    goto out;
  }
  /* The timestamp is taken now, per request: a retry signs afresh. */
  {
    keel_buf_t v;
    keel_buf_init(&v, 1024);
    rc = ka_conn_authorization(c, route, bearer, x->body, blen, &v);
    if (!rc) rc = keel_buf_puts(&auth, "Authorization: ");
    if (!rc) rc = keel_buf_puts(&auth, v.data);
    if (v.data) sodium_memzero(v.data, v.len);
    keel_buf_free(&v);
    if (rc) {
      rc = keel_err_set(e, rc, "cannot sign request");
      goto out;
    }
  }
  {
    char ct[160];
    const char *hs[] = {ct, "Accept: application/json", "Expect:", auth.data};
    snprintf(ct, sizeof ct, "Content-Type: %s", x->ctype ? x->ctype : "application/json");
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
      struct curl_slist *tmp = K.slist_append(cx->hdrs, hs[i]);
      if (!tmp) {
        rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
        goto out;
      }
      cx->hdrs = tmp;
    }
  }
  /* Options persist on the handle between requests; all of them are set
   * each time, so nothing stale survives, and no curl_easy_reset is needed
   * (which would keep the connection anyway). */
#define SETOPT(opt, val) \
  do { \
    if (r == CURLE_OK) r = K.easy_setopt(h, opt, val); \
  } while (0)
  SETOPT(CURLOPT_URL, url.data); /* curl copies strings */
  /* The library is whatever is installed, not what we compiled against. */
  if (K.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, cx->err);
  SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_TCP_KEEPIDLE, 30L);
  SETOPT(CURLOPT_TCP_KEEPINTVL, 15L);
  SETOPT(CURLOPT_USERAGENT, "keel-agent/" KEEL_VERSION);
  SETOPT(CURLOPT_HTTPHEADER, cx->hdrs);
  SETOPT(CURLOPT_POSTFIELDS, x->body);
  SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, x);
  SETOPT(CURLOPT_PRIVATE, x);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)KA_RESPONSE_MAX);
#undef SETOPT
  if (r != CURLE_OK) {
    rc = keel_err_set(e, KEEL_EINVAL, "cannot set up request: %s", K.easy_strerror(r));
    goto out;
  }
  if (K.multi_add_handle(cc->multi, h) != CURLM_OK) {
    rc = keel_err_set(e, KEEL_ENOMEM, "cannot start request");
    goto out;
  }
  cx->added = 1;
  x->active = 1;
out:
  if (rc) {
    K.slist_free_all(cx->hdrs);
    cx->hdrs = NULL;
  }
  if (auth.data) sodium_memzero(auth.data, auth.len);
  keel_buf_free(&auth);
  keel_buf_free(&url);
  return rc;
}

static int map_code(CURLcode r) {
  switch (r) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT: return KA_XE_CONNECT;
  case CURLE_OPERATION_TIMEDOUT: return KA_XE_TIMEOUT;
  case CURLE_WRITE_ERROR:
  case CURLE_FILESIZE_EXCEEDED: return KA_XE_TOOBIG;
  case CURLE_OUT_OF_MEMORY: return KA_XE_NOMEM;
  case CURLE_WEIRD_SERVER_REPLY: return KA_XE_PROTO;
  default: return KA_XE_IO;
  }
}

static short to_curl_events(short ev) {
  return (short)(((ev & POLLIN) ? CURL_WAIT_POLLIN : 0) | ((ev & POLLPRI) ? CURL_WAIT_POLLPRI : 0) |
                 ((ev & POLLOUT) ? CURL_WAIT_POLLOUT : 0));
}

static int be_wait(ka_conn_t *c, struct pollfd *extra, unsigned n, int timeout_ms) {
  struct curl_conn *cc = c->be;
  struct curl_waitfd wfd[64];
  CURLMsg *m;
  int running = 0, left, numfds = 0;

  for (unsigned i = 0; i < n; i++) {
    wfd[i].fd = extra[i].fd;
    wfd[i].events = to_curl_events(extra[i].events);
    wfd[i].revents = 0;
  }
  K.multi_poll(cc->multi, wfd, n, timeout_ms, &numfds);
  for (unsigned i = 0; i < n; i++) {
    short rv = wfd[i].revents;
    /* curl reports only the three it was asked about; anything else
     * (hang-up, error) shows as readable, as poll() callers expect. */
    extra[i].revents = (short)(((rv & CURL_WAIT_POLLIN) ? POLLIN : 0) |
                               ((rv & CURL_WAIT_POLLPRI) ? POLLPRI : 0) |
                               ((rv & CURL_WAIT_POLLOUT) ? POLLOUT : 0));
  }
  K.multi_perform(cc->multi, &running);
  while ((m = K.multi_info_read(cc->multi, &left))) {
    ka_xfer_t *x = NULL;
    struct curl_xfer *cx;
    long status = 0;
    if (m->msg != CURLMSG_DONE) continue;
    K.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (!x || !(cx = x->be)) continue;
    if (m->data.result == CURLE_OK)
      K.easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
    K.multi_remove_handle(cc->multi, m->easy_handle);
    cx->added = 0;
    K.slist_free_all(cx->hdrs);
    cx->hdrs = NULL;
    if (m->data.result == CURLE_OK) {
      ka_conn_xfer_ok(x, status);
    } else {
      int code = map_code(m->data.result);
      if (code == KA_XE_TOOBIG)
        ka_conn_xfer_fail(x, code, "response larger than the cap (%zu bytes)",
                          (size_t)KA_RESPONSE_MAX);
      else
        ka_conn_xfer_fail(x, code, "%s",
                          cx->err[0] ? cx->err : K.easy_strerror(m->data.result));
      keel_buf_reset(&x->resp);
    }
  }
  return 0;
}

const struct ka_conn_backend ka_conn_curl = {
    .name = "https",
    .init = be_init,
    .free = be_free,
    .start = be_start,
    .wait = be_wait,
};
