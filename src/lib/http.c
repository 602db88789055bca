#include "keel/http.h"

#include <curl/curl.h>
#include <limits.h>
#include <stdint.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keel/version.h"

#define URL_MAX 65536 /* base + path + query; far above anything the API needs */

int keel_http_global_init(keel_err_t *e) {
  CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (cc != CURLE_OK)
    return keel_err_set(e, KEEL_EIO, "cannot initialise libcurl: %s", curl_easy_strerror(cc));
  return 0;
}

void keel_http_global_cleanup(void) { curl_global_cleanup(); }

static int has_ctl(const char *s, int allow_space) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p < 0x20 || *p == 0x7f || (*p == ' ' && !allow_space)) return 1;
  return 0;
}

/* Returns a copy of base with any "user:password@" masked, so that the URL
 * can be quoted in error messages without leaking credentials. */
static char *mask_userinfo(const char *base) {
  const char *auth = strstr(base, "://") + 3; /* callers checked the scheme */
  size_t alen = strcspn(auth, "/?#");
  const char *at = NULL;
  keel_buf_t b;

  for (const char *p = auth; p < auth + alen; p++)
    if (*p == '@') at = p;
  keel_buf_init(&b, URL_MAX);
  if (!at) {
    if (keel_buf_puts(&b, base)) goto fail;
  } else if (keel_buf_append(&b, base, (size_t)(auth - base)) || keel_buf_puts(&b, "***") ||
             keel_buf_puts(&b, at)) {
    goto fail;
  }
  return keel_buf_steal(&b);
fail:
  keel_buf_free(&b);
  return NULL;
}

int keel_http_init(keel_http_t *h, const char *base, const char *token, long timeout_ms,
                   keel_err_t *e) {
  const char *host;
  size_t n;
  int rc = 0;

  memset(h, 0, sizeof *h);
  h->timeout_ms = timeout_ms > 0 ? timeout_ms : KEEL_HTTP_TIMEOUT_MS;
  if (strncasecmp(base, "http://", 7) && strncasecmp(base, "https://", 8)) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': expected http://HOST[:PORT] or https://...",
                      base);
    goto out;
  }
  if (has_ctl(base, 0) || strpbrk(base, "?#")) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': must not contain spaces, '?' or '#'",
                      base);
    goto out;
  }
  host = strstr(base, "://") + 3;
  if (!*host || *host == '/') {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': no host", base);
    goto out;
  }
  if (strlen(base) > URL_MAX / 2) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL: longer than %d bytes", URL_MAX / 2);
    goto out;
  }
  if (token && has_ctl(token, 0)) {
    /* Never quote the token, not even in part. */
    rc = keel_err_set(e, KEEL_EINVAL, "token: contains spaces or control characters");
    goto out;
  }
  h->base = strdup(base);
  h->token = token ? strdup(token) : NULL;
  h->curl = curl_easy_init();
  if (!h->base || (token && !h->token) || !h->curl) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  n = strlen(h->base);
  while (n > 0 && h->base[n - 1] == '/') h->base[--n] = '\0';
  h->shown = mask_userinfo(h->base);
  if (!h->shown) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
out:
  if (rc) keel_http_free(h);
  return rc;
}

void keel_http_free(keel_http_t *h) {
  if (h->token) {
    sodium_memzero(h->token, strlen(h->token));
    free(h->token);
  }
  free(h->base);
  free(h->shown);
  if (h->curl) curl_easy_cleanup(h->curl);
  memset(h, 0, sizeof *h);
}

struct sink {
  keel_buf_t *b;
  int rc;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  struct sink *s = ud;
  size_t n = size * nmemb; /* curl documents size as always 1 */
  int rc = keel_buf_append(s->b, p, n);
  if (rc) {
    s->rc = rc;
    return 0; /* anything but n makes curl abort the transfer */
  }
  return n;
}

static int valid_method(const char *m) {
  size_t n = strlen(m);
  if (n == 0 || n > 16) return 0;
  for (; *m; m++)
    if (*m < 'A' || *m > 'Z') return 0;
  return 1;
}

int keel_http_easy_common(void *easy, const char *url, long timeout_ms,
                          struct curl_slist *headers,
                          size_t (*write)(char *ptr, size_t size, size_t n, void *ud),
                          void *write_ud, char *errbuf) {
  CURLcode cc = CURLE_OK;
#define SETOPT(opt, val) \
  do { \
    if (cc == CURLE_OK) cc = curl_easy_setopt(easy, opt, val); \
  } while (0)
  SETOPT(CURLOPT_ERRORBUFFER, errbuf);
  SETOPT(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
  SETOPT(CURLOPT_USERAGENT, "keel/" KEEL_VERSION);
  SETOPT(CURLOPT_HTTPHEADER, headers);
  SETOPT(CURLOPT_WRITEFUNCTION, write);
  SETOPT(CURLOPT_WRITEDATA, write_ud);
#undef SETOPT
  return (int)cc;
}

const char *keel_http_easy_why(void *easy, int cc, const char *errbuf) {
  long oserr = 0;
  if (cc == CURLE_COULDNT_CONNECT && curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &oserr) == CURLE_OK &&
      oserr > 0)
    return strerror((int)oserr);
  return errbuf && errbuf[0] ? errbuf : curl_easy_strerror((CURLcode)cc);
}

/* Turns a failed transfer into one line that names the server. */
static int transfer_error(keel_http_t *h, CURLcode cc, const char *errbuf, const struct sink *s,
                          size_t max, keel_err_t *e) {
  const char *why = keel_http_easy_why(h->curl, cc, errbuf);

  if ((cc == CURLE_WRITE_ERROR && s->rc == KEEL_ETOOBIG) || cc == CURLE_FILESIZE_EXCEEDED)
    return keel_err_set(e, KEEL_ETOOBIG, "response from %s: larger than %zu bytes", h->shown, max);
  if (cc == CURLE_WRITE_ERROR && s->rc == KEEL_ENOMEM)
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (cc == CURLE_OPERATION_TIMEDOUT)
    return keel_err_set(e, KEEL_EAGAIN, "no answer from %s within %ld ms", h->shown,
                        h->timeout_ms);
  if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
      cc == CURLE_COULDNT_RESOLVE_PROXY)
    return keel_err_set(e, KEEL_EIO, "cannot reach %s: %s", h->shown, why);
  return keel_err_set(e, KEEL_EIO, "request to %s failed: %s", h->shown, why);
}

int keel_http_request(keel_http_t *h, const char *method, const char *path, const char *body,
                      size_t body_len, int *status, keel_buf_t *resp, keel_err_t *e) {
  char errbuf[CURL_ERROR_SIZE];
  struct curl_slist *hdrs = NULL, *tmp;
  const char *fixed[4];
  struct sink sink = {resp, 0};
  keel_buf_t url, auth;
  CURL *c = h->curl;
  CURLcode cc = CURLE_OK;
  long code = 0;
  int rc = 0;

  keel_buf_init(&url, URL_MAX);
  keel_buf_init(&auth, 8192);
  keel_buf_reset(resp);
  *status = 0;
  errbuf[0] = '\0';
  if (!valid_method(method)) {
    rc = keel_err_set(e, KEEL_EINVAL, "HTTP method '%.20s': expected upper-case letters", method);
    goto out;
  }
  if (path[0] != '/' || has_ctl(path, 0)) {
    rc = keel_err_set(e, KEEL_EINVAL, "request path '%.200s': must start with '/' and be encoded",
                      path);
    goto out;
  }
  if (keel_buf_puts(&url, h->base) || keel_buf_puts(&url, path)) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "request URL: longer than %d bytes", URL_MAX);
    goto out;
  }
  if (h->token && (keel_buf_puts(&auth, "Authorization: Bearer ") ||
                   keel_buf_puts(&auth, h->token))) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "token: longer than %zu bytes", auth.max - 22);
    goto out;
  }

  /* "Expect:" stops curl from waiting for a 100-continue on larger bodies. */
  fixed[0] = "Accept: application/json";
  fixed[1] = "Expect:";
  fixed[2] = body ? "Content-Type: application/json" : NULL;
  fixed[3] = h->token ? auth.data : NULL;
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    if (!fixed[i]) continue;
    tmp = curl_slist_append(hdrs, fixed[i]);
    if (!tmp) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto out;
    }
    hdrs = tmp;
  }

  /* Reset drops the previous request's options but keeps the connection
   * cache, so keep-alive survives while no option leaks between requests. */
  curl_easy_reset(c);
  cc = (CURLcode)keel_http_easy_common(c, url.data, h->timeout_ms, hdrs, on_body, &sink, errbuf);
#define SETOPT(opt, val) \
  do { \
    if (cc == CURLE_OK) cc = curl_easy_setopt(c, opt, val); \
  } while (0)
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(resp->max > INT64_MAX ? INT64_MAX : resp->max));
  if (!strcmp(method, "HEAD")) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else if (body) {
    /* POSTFIELDS makes it a POST with this body; CUSTOMREQUEST renames it. */
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    SETOPT(CURLOPT_POSTFIELDS, body);
    if (strcmp(method, "POST")) SETOPT(CURLOPT_CUSTOMREQUEST, method);
  } else if (!strcmp(method, "POST")) {
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    SETOPT(CURLOPT_POSTFIELDS, "");
  } else if (strcmp(method, "GET")) {
    SETOPT(CURLOPT_CUSTOMREQUEST, method);
  }
#undef SETOPT
  if (cc != CURLE_OK) {
    rc = keel_err_set(e, KEEL_EINVAL, "cannot set up request to %s: %s", h->shown,
                      curl_easy_strerror(cc));
    goto out;
  }

  cc = curl_easy_perform(c);
  if (cc != CURLE_OK) {
    rc = transfer_error(h, cc, errbuf, &sink, resp->max, e);
    keel_buf_reset(resp);
    goto out;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  *status = (int)code;
out:
  /* The options point at url, errbuf and hdrs, which die here: unhook them
   * so the handle holds no dangling pointers between requests. */
  curl_easy_reset(c);
  curl_slist_free_all(hdrs);
  if (auth.data) sodium_memzero(auth.data, auth.len);
  keel_buf_free(&auth);
  keel_buf_free(&url);
  return rc;
}

int keel_http_escape(keel_http_t *h, keel_buf_t *out, const char *s) {
  size_t n = strlen(s);
  char *enc;
  int rc;

  if (n > INT_MAX / 3) return KEEL_ETOOBIG;
  if (n == 0) return 0; /* curl_easy_escape treats length 0 as "use strlen" anyway */
  enc = curl_easy_escape(h->curl, s, (int)n);
  if (!enc) return KEEL_ENOMEM;
  rc = keel_buf_puts(out, enc);
  curl_free(enc);
  return rc;
}

int keel_http_query(keel_http_t *h, keel_buf_t *url, const char *key, const char *value) {
  int rc;
  if (!value) return 0;
  if ((rc = keel_buf_puts(url, url->data && strchr(url->data, '?') ? "&" : "?"))) return rc;
  if ((rc = keel_buf_puts(url, key))) return rc;
  if ((rc = keel_buf_puts(url, "="))) return rc;
  return keel_http_escape(h, url, value);
}
