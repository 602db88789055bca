/* conn.c — the two keep-alive transfers on one libcurl multi handle:
 * `poll` (the long-poll) and `push` (results, inventory). */
#include <curl/curl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"
#include "keel/time.h"
#include "keel/version.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS 30000

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  ka_xfer_t *x = ud;
  size_t n = size * nmemb;
  return keel_buf_append(&x->resp, p, n) ? 0 : n; /* 0 aborts: over the cap */
}

static int xfer_init(ka_xfer_t *x) {
  memset(x, 0, sizeof *x);
  keel_buf_init(&x->resp, KA_RESPONSE_MAX);
  x->easy = curl_easy_init();
  return x->easy ? 0 : KEEL_ENOMEM;
}

static void xfer_clear(ka_xfer_t *x) {
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  free(x->body);
  x->body = NULL;
}

int ka_conn_init(ka_conn_t *c, const char *base, const ka_identity_t *id, const keel_log_t *log,
                 keel_err_t *e) {
  const char *auth, *slash;
  size_t n;
  int rc = 0;

  memset(c, 0, sizeof *c);
  c->id = id;
  c->log = log;
  if (strncasecmp(base, "http://", 7) && strncasecmp(base, "https://", 8)) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': expected http:// or https://", base);
    goto out;
  }
  if (strpbrk(base, "?# \t\r\n")) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': must not contain '?', '#' or spaces",
                      base);
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
  c->multi = curl_multi_init();
  if (!c->prefix || !c->multi || xfer_init(&c->poll) || xfer_init(&c->push)) goto nomem;
  goto out;
nomem:
  rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  if (rc) ka_conn_free(c);
  return rc;
}

static void xfer_free(ka_conn_t *c, ka_xfer_t *x) {
  if (x->active && c->multi) curl_multi_remove_handle(c->multi, x->easy);
  if (x->easy) curl_easy_cleanup(x->easy);
  xfer_clear(x);
  keel_buf_free(&x->resp);
  memset(x, 0, sizeof *x);
}

void ka_conn_free(ka_conn_t *c) {
  xfer_free(c, &c->poll);
  xfer_free(c, &c->push);
  if (c->multi) curl_multi_cleanup(c->multi);
  free(c->base);
  free(c->prefix);
  memset(c, 0, sizeof *c);
}

int ka_conn_post(ka_conn_t *c, ka_xfer_t *x, const char *route, char *body, long timeout_ms,
                 keel_err_t *e) {
  keel_buf_t url, auth, path;
  struct curl_slist *tmp;
  CURL *h = x->easy;
  CURLcode cc = CURLE_OK;
  size_t blen = strlen(body);
  int rc = 0;

  keel_buf_init(&url, 4096);
  keel_buf_init(&path, 4096);
  keel_buf_init(&auth, 1024);
  xfer_clear(x);
  x->body = body;
  x->done = 0;
  x->status = 0;
  x->cc = CURLE_OK;
  x->errbuf[0] = '\0';
  keel_buf_reset(&x->resp);
  if (keel_buf_puts(&path, c->prefix) || keel_buf_puts(&path, route) ||
      keel_buf_puts(&url, c->base) || keel_buf_puts(&url, route) ||
      keel_buf_puts(&auth, "Authorization: ")) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "request URL too long");
    goto out;
  }
  /* The timestamp is taken now, per request: a retry signs afresh. */
  {
    keel_buf_t v;
    keel_buf_init(&v, 1024);
    rc = keel_agent_sign_request(&v, c->id->agent_id, c->id->sk, "POST", path.data,
                                 keel_now_ms(), body, blen);
    if (rc == 0) rc = keel_buf_puts(&auth, v.data);
    keel_buf_free(&v);
    if (rc) {
      rc = keel_err_set(e, rc, "cannot sign request");
      goto out;
    }
  }
  {
    const char *hs[] = {"Content-Type: application/json", "Accept: application/json", "Expect:",
                        auth.data};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
      if (!(tmp = curl_slist_append(x->hdrs, hs[i]))) {
        rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
        goto out;
      }
      x->hdrs = tmp;
    }
  }
  /* Options persist on the handle between requests; all of them are set
   * each time, so nothing stale survives, and no curl_easy_reset is needed
   * (which would keep the connection anyway). */
#define SETOPT(opt, val) \
  do { \
    if (cc == CURLE_OK) cc = curl_easy_setopt(h, opt, val); \
  } while (0)
  SETOPT(CURLOPT_URL, url.data); /* curl copies strings */
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
  SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_TCP_KEEPIDLE, 30L);
  SETOPT(CURLOPT_TCP_KEEPINTVL, 15L);
  SETOPT(CURLOPT_USERAGENT, "keel-agent/" KEEL_VERSION);
  SETOPT(CURLOPT_HTTPHEADER, x->hdrs);
  SETOPT(CURLOPT_POSTFIELDS, x->body);
  SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, x);
  SETOPT(CURLOPT_PRIVATE, x);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)KA_RESPONSE_MAX);
#undef SETOPT
  if (cc != CURLE_OK) {
    rc = keel_err_set(e, KEEL_EINVAL, "cannot set up request: %s", curl_easy_strerror(cc));
    goto out;
  }
  if (curl_multi_add_handle(c->multi, h) != CURLM_OK) {
    rc = keel_err_set(e, KEEL_ENOMEM, "cannot start request");
    goto out;
  }
  x->active = 1;
out:
  if (rc) xfer_clear(x); /* body was taken either way */
  if (auth.data) sodium_memzero(auth.data, auth.len);
  keel_buf_free(&auth);
  keel_buf_free(&url);
  keel_buf_free(&path);
  return rc;
}

int ka_conn_wait(ka_conn_t *c, struct pollfd *extra, unsigned n, int timeout_ms) {
  struct curl_waitfd wfd[64];
  CURLMsg *m;
  int running = 0, left, numfds = 0;

  if (n > 64) n = 64;
  for (unsigned i = 0; i < n; i++) {
    wfd[i].fd = extra[i].fd;
    wfd[i].events = CURL_WAIT_POLLIN;
    wfd[i].revents = 0;
  }
  if (timeout_ms < 0) timeout_ms = 0;
  curl_multi_poll(c->multi, wfd, n, timeout_ms, &numfds);
  for (unsigned i = 0; i < n; i++) extra[i].revents = (short)(wfd[i].revents ? POLLIN : 0);
  curl_multi_perform(c->multi, &running);
  while ((m = curl_multi_info_read(c->multi, &left))) {
    ka_xfer_t *x = NULL;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (!x) continue;
    x->cc = (int)m->data.result;
    x->status = 0;
    if (m->data.result == CURLE_OK)
      curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &x->status);
    curl_multi_remove_handle(c->multi, m->easy_handle);
    x->active = 0;
    x->done = 1;
    xfer_clear(x);
  }
  return 0;
}

const char *ka_conn_strerror(const ka_xfer_t *x) {
  if (x->cc == CURLE_WRITE_ERROR || x->cc == CURLE_FILESIZE_EXCEEDED)
    return "response larger than the cap";
  return x->errbuf[0] ? x->errbuf : curl_easy_strerror((CURLcode)x->cc);
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
