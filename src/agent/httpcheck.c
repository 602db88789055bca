/* httpcheck.c — the `http` job kind (httpcheck.h): URL parsing, the job
 * member's decoding, and the request itself, made by a forked child.
 *
 * The child is a plain fork of the agent (no exec).  It allocates, resolves
 * names and may dlopen libcurl, which POSIX only allows after fork in a
 * single-threaded process.  The agent is single-threaded except for the
 * resolver threads libcurl may run while it talks https to keeld; glibc
 * makes malloc safe across fork, and the residual risk (a lock held by such
 * a thread inside the resolver) can only hang the child, which the job's
 * timeout then kills.  The statically linked agent's child of an https
 * check execs keel-agent-dynamic instead (exec.c; static_link.h).
 *
 * Output goes straight to the descriptors with write(2): stdio buffers
 * inherited from the agent MUST NOT be flushed twice. */
#define _GNU_SOURCE /* memmem */
#include "curlload.h" /* first: it sets how <curl/curl.h> is read */

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpcheck.h"
#include "httphead.h"
#include "keel/buf.h"
#include "keel/json.h"
#include "keel/time.h"
#include "keel/version.h"

#define EXPECT_BODY_MAX 65536
#define ERR_MAX 256

/* ---- the URL ------------------------------------------------------------- */

static int is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int ka_http_url_parse(const char *text, size_t len, ka_http_url_t *u, keel_err_t *e) {
  const char *end = text + len, *auth, *aend, *hs, *he, *ps = NULL;
  size_t hl;
  int rc = 0;

  memset(u, 0, sizeof *u);
  if (len == 0) {
    rc = keel_err_set(e, KEEL_EINVAL, "url: empty");
    goto out;
  }
  if (len > KA_HTTP_URL_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "url: longer than %d bytes", KA_HTTP_URL_MAX);
    goto out;
  }
  /* One pass over the bytes first, so the messages below can quote the
   * text without further care. */
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == 0) {
      rc = keel_err_set(e, KEEL_EINVAL, "url: contains a NUL byte");
      goto out;
    }
    if (c <= 0x20 || c == 0x7f) {
      rc = keel_err_set(e, KEEL_EINVAL,
                        "url: contains a space or control character at byte %zu "
                        "(percent-encode it)", i);
      goto out;
    }
    if (c >= 0x80) {
      rc = keel_err_set(e, KEEL_EINVAL,
                        "url: contains a non-ASCII byte at byte %zu (percent-encode it)", i);
      goto out;
    }
    if (c == '#') {
      rc = keel_err_set(e, KEEL_EINVAL, "url: has a fragment ('#...'), which is never sent");
      goto out;
    }
  }
  if (len >= 7 && !strncasecmp(text, "http://", 7)) {
    u->port = 80;
    auth = text + 7;
  } else if (len >= 8 && !strncasecmp(text, "https://", 8)) {
    u->https = 1;
    u->port = 443;
    auth = text + 8;
  } else {
    /* text is not NUL-terminated: quote len bytes at most. */
    rc = keel_err_set(e, KEEL_EINVAL, "url '%.*s': expected http:// or https://",
                      (int)(len < 200 ? len : 200), text);
    goto out;
  }
  for (aend = auth; aend < end && *aend != '/' && *aend != '?'; aend++) {
  }
  if (memchr(auth, '@', (size_t)(aend - auth))) {
    rc = keel_err_set(e, KEEL_EINVAL, "url: user info (user@host) is not supported");
    goto out;
  }
  if (auth < aend && *auth == '[') {
    hs = auth + 1;
    he = memchr(hs, ']', (size_t)(aend - hs));
    if (!he) {
      rc = keel_err_set(e, KEEL_EINVAL, "url: '[' of an IPv6 address without its ']'");
      goto out;
    }
    if (he == hs || !memchr(hs, ':', (size_t)(he - hs))) {
      rc = keel_err_set(e, KEEL_EINVAL, "url: expected an IPv6 address between '[' and ']'");
      goto out;
    }
    for (const char *q = hs; q < he; q++)
      if (!is_hex(*q) && *q != ':' && *q != '.') {
        rc = keel_err_set(e, KEEL_EINVAL,
                          "url: IPv6 address: unexpected '%c' (zone ids are not supported)", *q);
        goto out;
      }
    if (he + 1 < aend) {
      if (he[1] != ':') {
        rc = keel_err_set(e, KEEL_EINVAL, "url: expected ':port' or '/' after ']'");
        goto out;
      }
      ps = he + 2;
    }
  } else {
    const char *colon = memchr(auth, ':', (size_t)(aend - auth));
    hs = auth;
    he = colon ? colon : aend;
    if (colon) ps = colon + 1;
    for (const char *q = hs; q < he; q++)
      if (!is_alnum(*q) && *q != '-' && *q != '.' && *q != '_') {
        rc = keel_err_set(e, KEEL_EINVAL,
                          "url: host: unexpected '%c' (expected a name, an IPv4 address or [IPv6])",
                          *q);
        goto out;
      }
  }
  hl = (size_t)(he - hs);
  if (hl == 0) {
    rc = keel_err_set(e, KEEL_EINVAL, "url: no host");
    goto out;
  }
  if (hl > KA_HTTP_HOST_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "url: host longer than %d bytes", KA_HTTP_HOST_MAX);
    goto out;
  }
  if (ps) {
    size_t pl = (size_t)(aend - ps);
    unsigned long port = 0;
    if (pl == 0 || pl > 5) {
      rc = keel_err_set(e, KEEL_EINVAL, "url: port: expected 1 to 65535");
      goto out;
    }
    for (size_t i = 0; i < pl; i++) {
      if (ps[i] < '0' || ps[i] > '9') {
        rc = keel_err_set(e, KEEL_EINVAL, "url: port: expected 1 to 65535");
        goto out;
      }
      port = port * 10 + (unsigned long)(ps[i] - '0');
    }
    if (port == 0 || port > 65535) {
      rc = keel_err_set(e, KEEL_EINVAL, "url: port: expected 1 to 65535");
      goto out;
    }
    u->port = (unsigned)port;
  }
  memcpy(u->host, hs, hl);
  memcpy(u->authority, auth, (size_t)(aend - auth)); /* host + brackets + ":" + 5 digits fits */
  /* A URL without a path asks for "/" (RFC 9110 4.2.1), also before a query. */
  {
    size_t tl = (size_t)(end - aend), o = 0;
    if (tl == 0 || *aend == '?') u->target[o++] = '/';
    memcpy(u->target + o, aend, tl);
  }
out:
  if (rc) memset(u, 0, sizeof *u);
  return rc;
}

/* ---- the job member ------------------------------------------------------ */

static const char *const method_names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};

const char *ka_http_method_name(int method) {
  if (method < 0 || (size_t)method >= sizeof method_names / sizeof method_names[0]) return "?";
  return method_names[method];
}

/* A string member without NUL bytes, or NULL when absent or null; -1 when
 * it is something else. */
static int opt_text(const json_t *o, const char *key, const char **out) {
  const json_t *v = json_object_get(o, key);
  *out = NULL;
  if (!v || json_is_null(v)) return 0;
  if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) return -1;
  *out = json_string_value(v);
  return 0;
}

int ka_httpcheck_decode(const json_t *http, ka_httpcheck_t *hc, keel_err_t *e) {
  const char *method;
  const json_t *v;
  keel_err_t ue;
  int rc = 0;

  memset(hc, 0, sizeof *hc);
  if (!json_is_object(http)) {
    rc = keel_err_set(e, KEEL_EINVAL,
                      "http: expected an object {url, method, expect_status, expect_body}");
    goto out;
  }
  v = json_object_get(http, "url");
  if (!json_is_string(v)) {
    rc = keel_err_set(e, KEEL_EINVAL, "http.url: expected a string");
    goto out;
  }
  if (ka_http_url_parse(json_string_value(v), json_string_length(v), &hc->u, &ue)) {
    rc = keel_err_set(e, KEEL_EINVAL, "http.%s", ue.msg);
    goto out;
  }
  hc->url = json_string_value(v);
  if (opt_text(http, "method", &method)) {
    rc = keel_err_set(e, KEEL_EINVAL, "http.method: expected a string");
    goto out;
  }
  hc->method = -1;
  if (!method) hc->method = KA_HTTP_GET;
  for (size_t i = 0; method && i < sizeof method_names / sizeof method_names[0]; i++)
    if (!strcmp(method, method_names[i])) hc->method = (int)i;
  if (hc->method < 0) {
    rc = keel_err_set(e, KEEL_EINVAL,
                      "http.method '%.32s': expected GET, HEAD, POST, PUT, PATCH or DELETE",
                      method);
    goto out;
  }
  v = json_object_get(http, "expect_status");
  if (!v || json_is_null(v)) {
    hc->expect_status = 200;
  } else if (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 599) {
    rc = keel_err_set(e, KEEL_EINVAL, "http.expect_status: expected an integer from 100 to 599");
    goto out;
  } else {
    hc->expect_status = (int)json_integer_value(v);
  }
  if (opt_text(http, "expect_body", &hc->expect_body)) {
    rc = keel_err_set(e, KEEL_EINVAL, "http.expect_body: expected a string without NUL, or null");
    goto out;
  }
  if (hc->expect_body && strlen(hc->expect_body) > EXPECT_BODY_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "http.expect_body: longer than %d bytes", EXPECT_BODY_MAX);
    goto out;
  }
  if (hc->expect_body && hc->method == KA_HTTP_HEAD) {
    /* A HEAD answer has no body: such a check could never pass. */
    rc = keel_err_set(e, KEEL_EINVAL, "http.expect_body: a HEAD answer has no body");
    goto out;
  }
out:
  if (rc) memset(hc, 0, sizeof *hc);
  return rc;
}

/* ---- the answer ---------------------------------------------------------- */

/* What came back, whichever client fetched it. */
struct answer {
  long status;      /* 0 until a final status line arrived */
  keel_buf_t body;  /* the first body_cap bytes */
  size_t cap;
  int cut;          /* the body went on past cap (not read further) */
  char err[ERR_MAX];/* the transport error, when the fetch failed */
};

static void set_err(struct answer *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct answer *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(a->err, sizeof a->err, fmt, ap);
  va_end(ap);
}

/* Keeps what fits under the cap.  Returns 1 when the cap was hit (the rest
 * is not wanted), 0 otherwise, -1 out of memory. */
static int body_take(struct answer *a, const char *d, size_t n) {
  size_t room = a->cap - a->body.len, take = n < room ? n : room;
  if (take && keel_buf_append(&a->body, d, take)) return -1;
  if (take < n) {
    a->cut = 1;
    return 1;
  }
  return 0;
}

/* ---- http:// : the blocking client ---------------------------------------- */

enum { RX_HEAD, RX_BODY };

/* The response reader: fed the bytes as they come (framing: httphead.c). */
struct rx {
  int head_only;  /* a HEAD request: no body, whatever the headers say */
  int st;         /* RX_* */
  int bm;         /* enum ka_http_framing */
  keel_buf_t head;
  uint64_t left;  /* KA_HB_LENGTH: body bytes to come */
  ka_http_chunks_t ck;
};

/* a->err from what httphead.c said (rc, e); returns -1. */
static int rx_fail(struct answer *a, int rc, const keel_err_t *e) {
  if (rc == KEEL_ENOMEM) set_err(a, "out of memory");
  else if (rc == KEEL_ETOOBIG) set_err(a, "answer's %s", e->msg);
  else set_err(a, "%s in the answer", e->msg);
  return -1;
}

/* Feeds n received bytes: 0 when more is wanted, 1 when the answer is
 * complete (or its body reached the cap), -1 on error (a->err set). */
static int rx_feed(struct rx *rx, struct answer *a, const char *d, size_t n) {
  keel_err_t e;

  /* A body that is already complete ends the answer without more bytes. */
  while (n > 0 ||
         (rx->st == RX_BODY && (rx->bm == KA_HB_NONE || (rx->bm == KA_HB_LENGTH && !rx->left)))) {
    if (rx->st == RX_HEAD) {
      ka_http_head_t h;
      int r = ka_http_head_feed(&rx->head, &d, &n, &h, &e); /* 1xx skipped */
      if (r) return r == KEEL_EAGAIN ? 0 : rx_fail(a, r, &e);
      a->status = h.status;
      rx->bm = rx->head_only ? KA_HB_NONE : h.framing;
      rx->left = h.length;
      /* No cap here: body_take stops reading at the body cap.  Trailers
       * are not read: the connection is ours alone (Connection: close). */
      if (rx->bm == KA_HB_CHUNKED) ka_http_chunks_init(&rx->ck, UINT64_MAX, 0);
      rx->st = RX_BODY;
      continue;
    }
    switch (rx->bm) {
    case KA_HB_NONE: return 1;
    case KA_HB_EOF: {
      int r = body_take(a, d, n);
      if (r < 0) goto nomem;
      return r; /* 0: until the connection closes */
    }
    case KA_HB_LENGTH: {
      size_t take = n < rx->left ? n : (size_t)rx->left;
      int r;
      if (rx->left == 0) return 1;
      if ((r = body_take(a, d, take)) < 0) goto nomem;
      rx->left -= take;
      if (r || rx->left == 0) return 1;
      return 0; /* take == n */
    }
    case KA_HB_CHUNKED: {
      ka_http_span_t sp;
      int r = ka_http_chunks_feed(&rx->ck, d, n, &sp, &e);
      if (r) return rx_fail(a, r, &e);
      if (sp.len && (r = body_take(a, sp.data, sp.len))) {
        if (r < 0) goto nomem;
        return 1;
      }
      d += sp.used;
      n -= sp.used;
      if (sp.end) return 1;
      continue;
    }
    }
  }
  return 0;
nomem:
  set_err(a, "out of memory");
  return -1;
}

static long ms_left(int64_t deadline) {
  int64_t d = deadline - keel_mono_ms();
  return d < 0 ? 0 : d > 0x7fffffff ? 0x7fffffff : (long)d;
}

/* Waits for events on fd until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int r = poll(&p, 1, (int)ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    return r < 0 ? -1 : r > 0;
  }
}

/* A connected socket to one of ai's addresses, or -1 (a->err set). */
static int connect_any(const struct addrinfo *ai, const ka_http_url_t *u, int64_t deadline,
                       long timeout_ms, struct answer *a) {
  int last = 0;

  for (; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    int err = 0, one = 1, r;
    socklen_t el = sizeof err;
    if (fd < 0) {
      last = errno;
      continue;
    }
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS && errno != EINTR) {
      last = errno;
      close(fd);
      continue;
    }
    r = wait_fd(fd, POLLOUT, deadline);
    if (r == 0) {
      close(fd);
      set_err(a, "timed out after %ld ms connecting to %s port %u", timeout_ms, u->host, u->port);
      return -1;
    }
    if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el)) err = errno;
    if (err) {
      last = err;
      close(fd);
      continue;
    }
    return fd;
  }
  set_err(a, "cannot connect to %s port %u: %s", u->host, u->port,
          last ? strerror(last) : "no address");
  return -1;
}

static int fetch_plain(const ka_httpcheck_t *hc, long timeout_ms, struct answer *a) {
  const ka_http_url_t *u = &hc->u;
  int64_t deadline = keel_mono_ms() + timeout_ms;
  struct addrinfo hints, *ai = NULL;
  char port[8];
  keel_buf_t req;
  struct rx rx;
  size_t sent = 0;
  int fd = -1, rc = -1, g;

  memset(&rx, 0, sizeof rx);
  keel_buf_init(&rx.head, KA_HTTP_HEAD_MAX);
  keel_buf_init(&req, KA_HTTP_URL_MAX + 1024);
  rx.head_only = hc->method == KA_HTTP_HEAD;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV;
  snprintf(port, sizeof port, "%u", u->port);
  if ((g = getaddrinfo(u->host, port, &hints, &ai))) {
    ai = NULL;
    set_err(a, "cannot resolve '%s': %s", u->host,
            g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    goto out;
  }
  if ((fd = connect_any(ai, u, deadline, timeout_ms, a)) < 0) goto out;
  /* POST, PUT and PATCH say their (empty) body's length: some servers
   * answer 411 without it. */
  if (keel_buf_printf(&req,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: keel-agent/" KEEL_VERSION
                      "\r\nAccept: */*\r\nConnection: close\r\n%s\r\n",
                      ka_http_method_name(hc->method), u->target, u->authority,
                      hc->method == KA_HTTP_POST || hc->method == KA_HTTP_PUT ||
                              hc->method == KA_HTTP_PATCH
                          ? "Content-Length: 0\r\n"
                          : "")) {
    set_err(a, "out of memory");
    goto out;
  }
  while (sent < req.len) {
    ssize_t w = send(fd, req.data + sent, req.len - sent, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int r = wait_fd(fd, POLLOUT, deadline);
      if (r == 0) goto timed_out;
      if (r > 0) continue;
    }
    if (w < 0) {
      set_err(a, "sending the request: %s", strerror(errno));
      goto out;
    }
    sent += (size_t)w;
  }
  for (;;) {
    char buf[16384];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    int r;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      r = wait_fd(fd, POLLIN, deadline);
      if (r == 0) goto timed_out;
      if (r > 0) continue;
    }
    if (n < 0) {
      set_err(a, "reading the answer: %s", strerror(errno));
      goto out;
    }
    if (n == 0) {
      if (rx.st == RX_BODY && rx.bm == KA_HB_EOF) break;
      if (rx.st == RX_HEAD && rx.head.len == 0 && a->status == 0)
        set_err(a, "connection closed by the server before any answer");
      else
        set_err(a, "connection closed by the server in the middle of the answer");
      goto out;
    }
    if ((r = rx_feed(&rx, a, buf, (size_t)n)) < 0) goto out;
    if (r == 1) break;
  }
  rc = 0;
  goto out;
timed_out:
  set_err(a, "timed out after %ld ms", timeout_ms);
out:
  if (rc) a->status = 0; /* an answer only counts when complete */
  if (fd >= 0) close(fd);
  if (ai) freeaddrinfo(ai);
  keel_buf_free(&rx.head);
  keel_buf_free(&req);
  return rc;
}

/* ---- https:// : libcurl, loaded here -------------------------------------- */

/* Past the cap the transfer is ended (0 makes curl stop with
 * CURLE_WRITE_ERROR); cut tells that apart from a real write error. */
static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  struct answer *a = ud;
  size_t n = size * nmemb;
  return body_take(a, p, n) == 0 ? n : 0;
}

static int fetch_curl(const ka_httpcheck_t *hc, long timeout_ms, struct answer *a) {
  ka_curl_t K;
  keel_err_t le;
  struct curl_slist *hdrs = NULL;
  char cerr[CURL_ERROR_SIZE] = "";
  CURL *h = NULL;
  CURLcode r = CURLE_OK, pr;
  int rc = -1, inited = 0, m = hc->method;
  long status = 0;

  /* The library is never unloaded: the child exits right after. */
  if (ka_curl_load(&K, &le)) {
    set_err(a, "%s", le.msg);
    goto out;
  }
  if ((r = K.global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK) {
    set_err(a, "cannot initialise libcurl: %s", K.easy_strerror(r));
    goto out;
  }
  inited = 1;
  if (!(h = K.easy_init())) {
    set_err(a, "out of memory");
    goto out;
  }
  {
    const char *hs[] = {"Connection: close", "Accept: */*", "Expect:"};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
      struct curl_slist *t = K.slist_append(hdrs, hs[i]);
      if (!t) {
        set_err(a, "out of memory");
        goto out;
      }
      hdrs = t;
    }
  }
#define SETOPT(opt, val) \
  do { \
    if (r == CURLE_OK) r = K.easy_setopt(h, opt, val); \
  } while (0)
  SETOPT(CURLOPT_URL, hc->url);
  /* The library is whatever is installed, not what we compiled against. */
  if (K.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK)
    SETOPT(CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
  SETOPT(CURLOPT_PROXY, ""); /* direct, like the http:// client, whatever the environment says */
  SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, cerr);
  SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  SETOPT(CURLOPT_USERAGENT, "keel-agent/" KEEL_VERSION);
  SETOPT(CURLOPT_HTTPHEADER, hdrs);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, a);
  if (m == KA_HTTP_HEAD) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else if (m == KA_HTTP_POST || m == KA_HTTP_PUT || m == KA_HTTP_PATCH) {
    SETOPT(CURLOPT_POSTFIELDS, "");
    SETOPT(CURLOPT_POSTFIELDSIZE, 0L);
    SETOPT(CURLOPT_CUSTOMREQUEST, ka_http_method_name(m));
  } else if (m == KA_HTTP_DELETE) {
    SETOPT(CURLOPT_CUSTOMREQUEST, "DELETE");
  } else {
    SETOPT(CURLOPT_HTTPGET, 1L);
  }
#undef SETOPT
  if (r != CURLE_OK) {
    set_err(a, "cannot set up the request: %s", K.easy_strerror(r));
    goto out;
  }
  pr = K.easy_perform(h);
  if (pr == CURLE_OK || (pr == CURLE_WRITE_ERROR && a->cut)) {
    K.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status <= 599) {
      a->status = status;
      rc = 0;
      goto out;
    }
    set_err(a, "no valid status in the answer");
    goto out;
  }
  if (pr == CURLE_OPERATION_TIMEDOUT)
    set_err(a, "timed out after %ld ms", timeout_ms);
  else
    set_err(a, "%s", cerr[0] ? cerr : K.easy_strerror(pr));
out:
  if (h) K.easy_cleanup(h);
  if (hdrs) K.slist_free_all(hdrs);
  if (inited) K.global_cleanup();
  return rc;
}

/* ---- the check ------------------------------------------------------------- */

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* nobody reads any more: nothing to do about it */
    p += w;
    n -= (size_t)w;
  }
}

int ka_httpcheck_run(const ka_httpcheck_t *hc, long timeout_ms, size_t body_cap, int out_fd,
                     int err_fd) {
  struct answer a;
  keel_buf_t line;
  const char *m = ka_http_method_name(hc->method);
  int code;

  memset(&a, 0, sizeof a);
  keel_buf_init(&a.body, body_cap);
  a.cap = body_cap;
  keel_buf_init(&line, 1024);
  if (timeout_ms <= 0) timeout_ms = 1;
  if ((hc->u.https ? fetch_curl(hc, timeout_ms, &a) : fetch_plain(hc, timeout_ms, &a)) < 0) {
    code = KA_HC_TRANSPORT;
    keel_buf_printf(&line, "%s %.300s: %s\n", m, hc->url, a.err);
  } else if (a.status != hc->expect_status) {
    code = KA_HC_MISMATCH;
    keel_buf_printf(&line, "%s %.300s: HTTP %ld, expected %d\n", m, hc->url, a.status,
                    hc->expect_status);
  } else if (hc->expect_body &&
             !memmem(a.body.data ? a.body.data : "", a.body.len, hc->expect_body,
                     strlen(hc->expect_body))) {
    code = KA_HC_MISMATCH;
    keel_buf_printf(&line, "%s %.300s: HTTP %ld, but the body%s does not contain \"%.100s\"\n", m,
                    hc->url, a.status, a.cut ? " (as far as read)" : "", hc->expect_body);
  } else {
    code = KA_HC_PASS;
    keel_buf_printf(&line, "%s %.300s: HTTP %ld, as expected\n", m, hc->url, a.status);
  }
  if (a.body.len) write_all(out_fd, a.body.data, a.body.len);
  if (line.len) write_all(err_fd, line.data, line.len);
  keel_buf_free(&line);
  keel_buf_free(&a.body);
  return code;
}

/* ---- the check in another program (httpcheck.h) ------------------------- */

char **ka_httpcheck_argv(const char *prog, const ka_httpcheck_t *hc, long timeout_ms,
                         size_t body_cap) {
  char status[16], tmo[32], cap[32];
  const char *words[9];
  char **argv;
  size_t n = 0;

  snprintf(status, sizeof status, "%d", hc->expect_status);
  snprintf(tmo, sizeof tmo, "%ld", timeout_ms);
  snprintf(cap, sizeof cap, "%zu", body_cap);
  words[n++] = prog;
  words[n++] = KA_HTTPCHECK_FLAG;
  words[n++] = hc->url;
  words[n++] = ka_http_method_name(hc->method);
  words[n++] = status;
  words[n++] = tmo;
  words[n++] = cap;
  if (hc->expect_body) words[n++] = hc->expect_body;
  if (!(argv = calloc(n + 1, sizeof *argv))) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (!(argv[i] = strdup(words[i]))) {
      for (size_t j = 0; j < i; j++) free(argv[j]);
      free(argv);
      return NULL;
    }
  }
  return argv;
}

/* A decimal from lo to hi, all of s; -1 otherwise. */
static long long arg_num(const char *s, long long lo, long long hi) {
  char *end;
  long long v;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  return v;
}

int ka_httpcheck_main(int argc, char **argv) {
  ka_httpcheck_t hc;
  keel_err_t e;
  json_t *o = NULL;
  long long status, tmo, cap;
  int code = KA_HC_TRANSPORT;

  if (argc < 7 || argc > 8 || strcmp(argv[1], KA_HTTPCHECK_FLAG) ||
      (status = arg_num(argv[4], 100, 599)) < 0 || (tmo = arg_num(argv[5], 1, LONG_MAX)) < 0 ||
      (cap = arg_num(argv[6], 0, SIZE_MAX >> 1)) < 0) {
    dprintf(2, "keel-agent " KA_HTTPCHECK_FLAG
               ": expected URL METHOD EXPECT_STATUS TIMEOUT_MS BODY_CAP [EXPECT_BODY]\n");
    goto out;
  }
  /* Through the decoder: the same checks as a job's "http" member. */
  if (!(o = json_pack("{s:s,s:s,s:I}", "url", argv[2], "method", argv[3], "expect_status",
                      (json_int_t)status)) ||
      (argc == 8 && json_object_set_new(o, "expect_body", json_string(argv[7])))) {
    dprintf(2, "keel-agent " KA_HTTPCHECK_FLAG ": out of memory (or not UTF-8)\n");
    goto out;
  }
  if (ka_httpcheck_decode(o, &hc, &e)) {
    dprintf(2, "keel-agent " KA_HTTPCHECK_FLAG ": %s\n", e.msg);
    goto out;
  }
  /* The agent may close the pipes (output cap, timeout): EPIPE, not a
   * signal, as in the agent's own check child. */
  signal(SIGPIPE, SIG_IGN);
  code = ka_httpcheck_run(&hc, (long)tmo, (size_t)cap, 1, 2);
out:
  json_decref(o);
  return code;
}
