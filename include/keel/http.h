/* keel/http.h — a small blocking HTTP client for the Keel API (libcurl easy).
 *
 * One keel_http_t talks to one server as one principal.  It keeps a single
 * CURL easy handle, so consecutive requests reuse the connection.  A handle
 * is not thread-safe: use one per thread.
 *
 * keel_http_request returns 0 whenever an HTTP answer arrived, whatever its
 * status; callers decide what a 4xx/5xx means.  It fails only when no answer
 * could be had (cannot connect, timeout, TLS, a response over the cap), with
 * a one-line message naming the server ("cannot reach http://127.0.0.1:7700:
 * Connection refused").  The bearer token never appears in any message.
 */
#ifndef KEEL_HTTP_H
#define KEEL_HTTP_H

#include <stddef.h>

#include "keel/buf.h"
#include "keel/err.h"

#define KEEL_HTTP_MAX_RESPONSE ((size_t)64 << 20) /* a sane cap for resp's max */
#define KEEL_HTTP_TIMEOUT_MS 30000L               /* whole request, connect included */

typedef struct keel_http {
  char *base;      /* scheme://authority[/prefix], owned, no trailing '/' */
  char *shown;     /* base with any userinfo masked: safe for messages */
  char *token;     /* owned, NULL = send no Authorization; wiped on free */
  long timeout_ms; /* > 0 */
  void *curl;      /* CURL *, reused so connections are kept alive */
} keel_http_t;

/* Wraps curl_global_init: call once at program start, before any thread
 * exists and before keel_http_init.  libcurl's global state is libcurl's;
 * libkeel keeps none. */
int keel_http_global_init(keel_err_t *e);
void keel_http_global_cleanup(void);

/* base must be an http:// or https:// URL; token may be NULL and must not
 * contain control characters (it goes into a header); timeout_ms <= 0 means
 * KEEL_HTTP_TIMEOUT_MS.  On failure h needs no keel_http_free. */
int keel_http_init(keel_http_t *h, const char *base, const char *token, long timeout_ms,
                   keel_err_t *e);
void keel_http_free(keel_http_t *h);

/* Sends method base+path (path starts with '/', already percent-encoded;
 * see keel_http_escape/keel_http_query).  body may be NULL; when not, it is
 * sent as application/json.  resp is emptied first and receives the body;
 * its max caps the response (KEEL_ETOOBIG beyond it).  *status gets the HTTP
 * status of the answer. */
int keel_http_request(keel_http_t *h, const char *method, const char *path, const char *body,
                      size_t body_len, int *status, keel_buf_t *resp, keel_err_t *e);

/* Appends s percent-encoded (every byte but [A-Za-z0-9._~-]), fit for a path
 * segment or a query value. */
int keel_http_escape(keel_http_t *h, keel_buf_t *out, const char *s);

/* Appends "?key=value", or "&key=value" when url already holds a '?', with
 * value percent-encoded.  A NULL value appends nothing. key is not encoded. */
int keel_http_query(keel_http_t *h, keel_buf_t *url, const char *key, const char *value);

/* ---- for every libcurl client in Keel (this one, keeld's scrape engine and
 * notification sender) ---- */

struct curl_slist;

/* Sets the options every Keel request has on easy (a CURL *): url, the
 * http and https protocols only, no signals (threads), the whole
 * request's timeout, "keel/VERSION" as User-Agent, headers (may be NULL),
 * the body sink (write(ptr, 1, n, write_ud) as CURLOPT_WRITEFUNCTION) and
 * errbuf (CURL_ERROR_SIZE bytes) as the error buffer.  Everything pointed
 * to MUST outlive the transfer.  Returns CURLE_OK (0) or the CURLcode of
 * the first option refused. */
int keel_http_easy_common(void *easy, const char *url, long timeout_ms,
                          struct curl_slist *headers,
                          size_t (*write)(char *ptr, size_t size, size_t n, void *ud),
                          void *write_ud, char *errbuf);

/* Why a transfer on easy failed with CURLcode cc, for messages: for
 * CURLE_COULDNT_CONNECT the OS's reason when curl knows it ("Connection
 * refused": curl's own text hides it), else errbuf when curl filled it,
 * else curl's text for cc.  The text is static or errbuf itself. */
const char *keel_http_easy_why(void *easy, int cc, const char *errbuf);

#endif
