/* conn_plain.c — the http:// backend: a small non-blocking HTTP/1.1 client
 * over TCP, so that a plain-http agent loads no HTTP or TLS library (the
 * agent's idle footprint is mostly what libraries map at load time).
 *
 * Each transfer owns at most one connection and sends one request at a time
 * on it (no pipelining).  The connection is kept alive between requests and
 * closed when:
 *   - the server says `Connection: close` (or HTTP/1.0 without keep-alive),
 *     or the body runs to the end of the connection;
 *   - anything goes wrong (the state of the stream is then unknown);
 *   - it sits unused for IDLE_KEEP_MS (the poll transfer never does, so an
 *     idle agent holds exactly one connection: its long-poll);
 *   - the server closes it while idle (noticed by the poll()).
 * A request sent on a kept connection that the server had closed (the race
 * with its idle timeout) is sent once more on a new connection, provided no
 * byte of the answer arrived: poll, results and inventory are idempotent.
 * The resend is signed afresh (new timestamp and nonce).
 *
 * Name resolution is getaddrinfo, once per new connection; it blocks the
 * loop while it runs (immediate for a numeric address).  Every address is
 * tried in turn. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "agent.h"
#include "conn_be.h"
#include "httphead.h"
#include "keel/time.h"
#include "keel/version.h"

#define REQ_HEAD_MAX 8192        /* our request line + headers */
#define CONNECT_TIMEOUT_MS 10000 /* per address, within the request's own timeout */
#define IDLE_KEEP_MS 2000        /* an unused kept connection is closed after this */
#define KEEPIDLE_S 30
#define KEEPINTVL_S 15
#define READ_CHUNK 16384

struct plain_conn {
  char *host;     /* for getaddrinfo: an IPv6 literal without its brackets */
  char *port;     /* "80" when the URL has none */
  char *hosthdr;  /* the Host header: the authority as written in the URL */
};

enum pstate {
  P_IDLE,         /* no request */
  P_START,        /* request accepted; reuse the kept connection or make one */
  P_RESOLVE,      /* need addresses */
  P_CONNECT_NEXT, /* try the next address */
  P_CONNECTING,   /* non-blocking connect in progress */
  P_SENDING,      /* writing head + body */
  P_HEAD,         /* reading the status line and headers */
  P_BODY,         /* reading the body */
};

struct plain_xfer {
  int fd;                  /* -1: no connection */
  enum pstate st;
  int reused;              /* this request went out on a kept connection */
  int retried;             /* already reconnected once for this request */
  int64_t idle_since;      /* mono ms: when the kept connection was last used */
  int64_t deadline;        /* mono ms: the request's timeout */
  int64_t connect_deadline;
  long timeout_ms;
  struct addrinfo *ai;     /* owned while connecting */
  struct addrinfo *ai_next;
  int connect_errno;       /* of the last address tried */
  char *route;             /* owned: for (re)signing */
  char *bearer;            /* owned, wiped; NULL: sign */
  size_t blen;             /* of x->body */
  keel_buf_t req;          /* request line + headers */
  size_t sent;             /* bytes of req + body written */
  keel_buf_t head;         /* the response's header block */
  size_t got;              /* response bytes received */
  long status;
  int keep;                /* the server allows reusing the connection */
  int bm;                  /* enum ka_http_framing */
  uint64_t left;           /* KA_HB_LENGTH: bytes to come */
  ka_http_chunks_t ck;     /* KA_HB_CHUNKED */
};

/* ---- small helpers -------------------------------------------------------- */

static void close_fd(struct plain_xfer *p) {
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
}

static void drop_addrs(struct plain_xfer *p) {
  if (p->ai) freeaddrinfo(p->ai);
  p->ai = p->ai_next = NULL;
}

/* Forgets everything of the request but the fd, route and bearer. */
static void reset_exchange(struct plain_xfer *p) {
  if (p->req.data) sodium_memzero(p->req.data, p->req.len); /* may hold a bearer token */
  keel_buf_free(&p->req);
  keel_buf_init(&p->req, REQ_HEAD_MAX);
  keel_buf_free(&p->head); /* at most 16 KiB, but idle memory is what we are about */
  keel_buf_init(&p->head, KA_HTTP_HEAD_MAX);
  p->sent = p->got = 0;
  p->status = 0;
  p->keep = 0;
  p->bm = KA_HB_NONE;
  p->left = 0;
  ka_http_chunks_init(&p->ck, KA_RESPONSE_MAX, 1);
}

static void forget_request(struct plain_xfer *p) {
  reset_exchange(p);
  drop_addrs(p);
  free(p->route);
  p->route = NULL;
  if (p->bearer) {
    sodium_memzero(p->bearer, strlen(p->bearer));
    free(p->bearer);
  }
  p->bearer = NULL;
  p->st = P_IDLE;
}

static void fail(ka_xfer_t *x, int cc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(ka_xfer_t *x, int cc, const char *fmt, ...) {
  struct plain_xfer *p = x->be;
  char msg[sizeof x->errbuf];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  close_fd(p); /* the stream's state is unknown: never reuse it */
  forget_request(p);
  keel_buf_reset(&x->resp);
  ka_conn_xfer_fail(x, cc, "%s", msg);
}

static void complete(ka_xfer_t *x, int leftover) {
  struct plain_xfer *p = x->be;
  long status = p->status;

  /* Bytes past the answer were never asked for: the stream is not ours
   * to interpret, so it is not reused. */
  if (!p->keep || leftover) close_fd(p);
  p->idle_since = keel_mono_ms();
  forget_request(p);
  ka_conn_xfer_ok(x, status);
}

static int set_sockopts(int fd) {
  int one = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S;
  /* A long-poll crosses NATs and firewalls that forget quiet flows;
   * keepalive probes keep it known and detect a dead peer. */
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one)) return -1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle)) return -1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl)) return -1;
  /* Requests are written whole; no reason to hold back a short tail. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return 0;
}

/* 1 when a kept connection still looks usable: nothing to read, no EOF. */
static int still_open(int fd) {
  char b;
  ssize_t r;
  do r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* ---- the request ---------------------------------------------------------- */

static int build_request(ka_conn_t *c, ka_xfer_t *x) {
  struct plain_conn *pc = c->be;
  struct plain_xfer *p = x->be;
  keel_buf_t auth;
  int rc;

  keel_buf_init(&auth, 1024);
  keel_buf_reset(&p->req);
  rc = ka_conn_authorization(c, p->route, p->bearer, x->body, p->blen, &auth);
  if (!rc)
    rc = keel_buf_printf(&p->req,
                         "POST %s%s HTTP/1.1\r\n"
                         "Host: %s\r\n"
                         "User-Agent: keel-agent/" KEEL_VERSION "\r\n"
                         "Content-Type: %s\r\n"
                         "Accept: application/json\r\n"
                         "Content-Length: %zu\r\n"
                         "Authorization: %s\r\n"
                         "Connection: keep-alive\r\n"
                         "\r\n",
                         c->prefix, p->route, pc->hosthdr,
                         x->ctype ? x->ctype : "application/json", p->blen, auth.data);
  if (auth.data) sodium_memzero(auth.data, auth.len);
  keel_buf_free(&auth);
  p->sent = 0;
  return rc;
}

/* The connection failed under the request.  Once per request, and only on
 * a kept connection before any byte of the answer: reconnect and resend.
 * Returns 1 when the request goes on (state P_RESOLVE). */
static int lost(ka_conn_t *c, ka_xfer_t *x, int err) {
  struct plain_conn *pc = c->be;
  struct plain_xfer *p = x->be;

  if (p->reused && !p->retried && p->got == 0) {
    keel_log(c->log, KEEL_LOG_DEBUG, "%s:%s closed a kept connection (%s); reconnecting",
             pc->host, pc->port, err ? strerror(err) : "end of stream");
    close_fd(p);
    reset_exchange(p);
    p->reused = 0;
    p->retried = 1;
    p->st = P_RESOLVE;
    return 1;
  }
  if (p->got == 0)
    fail(x, KA_XE_IO, "%s:%s: connection %s before any answer", pc->host, pc->port,
         err ? strerror(err) : "closed by the server");
  else
    fail(x, KA_XE_IO, "%s:%s: connection %s in the middle of the answer", pc->host, pc->port,
         err ? strerror(err) : "closed by the server");
  return 0;
}

/* ---- the response --------------------------------------------------------- */

/* Fails x with what httphead.c said (rc, e). */
static void fail_answer(ka_xfer_t *x, int rc, const keel_err_t *e) {
  if (rc == KEEL_ENOMEM) fail(x, KA_XE_NOMEM, "out of memory");
  else if (rc == KEEL_ETOOBIG) fail(x, KA_XE_TOOBIG, "response %s", e->msg);
  else fail(x, KA_XE_PROTO, "%s in the server's answer", e->msg);
}

/* Sets up reading the body that h announces.  0, or -1 (x failed). */
static int start_body(ka_xfer_t *x, const ka_http_head_t *h) {
  struct plain_xfer *p = x->be;

  p->status = h->status;
  p->keep = h->keep_alive;
  p->bm = h->framing;
  if (p->bm == KA_HB_LENGTH) {
    /* Refused before any of it is read. */
    if (h->length > KA_RESPONSE_MAX) {
      fail(x, KA_XE_TOOBIG, "response larger than the cap (%llu bytes announced, %zu allowed)",
           (unsigned long long)h->length, (size_t)KA_RESPONSE_MAX);
      return -1;
    }
    p->left = h->length;
  } else if (p->bm == KA_HB_CHUNKED) {
    /* Trailers are read, so the connection can carry the next answer. */
    ka_http_chunks_init(&p->ck, KA_RESPONSE_MAX, 1);
  }
  p->st = P_BODY;
  return 0;
}

static int body_append(ka_xfer_t *x, const char *d, size_t n) {
  if (keel_buf_append(&x->resp, d, n)) {
    fail(x, KA_XE_TOOBIG, "response larger than the cap (%zu bytes)", (size_t)KA_RESPONSE_MAX);
    return -1;
  }
  return 0;
}

/* Feeds n received bytes.  Returns 0 when more is wanted, 1 when x is
 * finished (answered or failed). */
static int feed(ka_xfer_t *x, const char *d, size_t n) {
  struct plain_xfer *p = x->be;
  keel_err_t e;

  while (n > 0 || (p->st == P_BODY && p->bm == KA_HB_NONE) ||
         (p->st == P_BODY && p->bm == KA_HB_LENGTH && p->left == 0)) {
    if (p->st == P_HEAD) {
      ka_http_head_t h;
      int rc = ka_http_head_feed(&p->head, &d, &n, &h, &e); /* 1xx skipped */
      if (rc == KEEL_EAGAIN) return 0; /* all of d was taken */
      if (rc) {
        fail_answer(x, rc, &e);
        return 1;
      }
      if (start_body(x, &h)) return 1;
      continue;
    }
    /* P_BODY */
    switch (p->bm) {
    case KA_HB_NONE:
      complete(x, n > 0);
      return 1;
    case KA_HB_LENGTH: {
      size_t take = n < p->left ? n : (size_t)p->left;
      if (take && body_append(x, d, take)) return 1;
      d += take;
      n -= take;
      p->left -= take;
      if (p->left == 0) {
        complete(x, n > 0);
        return 1;
      }
      break;
    }
    case KA_HB_EOF:
      if (body_append(x, d, n)) return 1;
      n = 0;
      break;
    case KA_HB_CHUNKED: {
      ka_http_span_t sp;
      int rc = ka_http_chunks_feed(&p->ck, d, n, &sp, &e);
      if (rc) {
        fail_answer(x, rc, &e);
        return 1;
      }
      if (sp.len && body_append(x, sp.data, sp.len)) return 1;
      d += sp.used;
      n -= sp.used;
      if (sp.end) {
        complete(x, n > 0);
        return 1;
      }
      break;
    }
    }
  }
  return 0;
}

/* ---- the state machine ---------------------------------------------------- */

/* Does whatever can be done now without blocking. */
static void drive(ka_conn_t *c, ka_xfer_t *x) {
  struct plain_conn *pc = c->be;
  struct plain_xfer *p = x->be;

  for (;;) {
    switch (p->st) {
    case P_IDLE:
      return;

    case P_START:
      if (p->fd >= 0 && still_open(p->fd)) {
        p->reused = 1;
        if (build_request(c, x)) {
          fail(x, KA_XE_NOMEM, "cannot build the request (too long or out of memory)");
          return;
        }
        p->st = P_SENDING;
      } else {
        close_fd(p);
        p->reused = 0;
        p->st = P_RESOLVE;
      }
      continue;

    case P_RESOLVE: {
      struct addrinfo hints;
      int g;
      memset(&hints, 0, sizeof hints);
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_protocol = IPPROTO_TCP;
      hints.ai_flags = AI_NUMERICSERV;
      drop_addrs(p);
      g = getaddrinfo(pc->host, pc->port, &hints, &p->ai);
      if (g) {
        p->ai = NULL;
        fail(x, KA_XE_CONNECT, "cannot resolve '%s': %s", pc->host,
             g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
        return;
      }
      p->ai_next = p->ai;
      p->connect_errno = 0;
      p->st = P_CONNECT_NEXT;
      continue;
    }

    case P_CONNECT_NEXT: {
      struct addrinfo *ai = p->ai_next;
      int fd;
      if (!ai) {
        int err = p->connect_errno;
        fail(x, KA_XE_CONNECT, "cannot connect to %s port %s: %s", pc->host, pc->port,
             err ? strerror(err) : "no address");
        return;
      }
      p->ai_next = ai->ai_next;
      fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        p->connect_errno = errno;
        continue;
      }
      if (set_sockopts(fd)) {
        p->connect_errno = errno;
        close(fd);
        continue;
      }
      p->fd = fd;
      if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        p->st = P_CONNECTING; /* checked at once below */
        p->connect_deadline = keel_mono_ms() + CONNECT_TIMEOUT_MS;
        continue;
      }
      /* EINTR: the connect goes on asynchronously, like EINPROGRESS. */
      if (errno == EINPROGRESS || errno == EINTR) {
        p->st = P_CONNECTING;
        p->connect_deadline = keel_mono_ms() + CONNECT_TIMEOUT_MS;
        return;
      }
      p->connect_errno = errno;
      close_fd(p);
      continue;
    }

    case P_CONNECTING: {
      struct pollfd pf = {.fd = p->fd, .events = POLLOUT};
      int err = 0, r;
      socklen_t el = sizeof err;
      do r = poll(&pf, 1, 0);
      while (r < 0 && errno == EINTR);
      if (r == 0) {
        if (keel_mono_ms() >= p->connect_deadline) {
          p->connect_errno = ETIMEDOUT;
          close_fd(p);
          p->st = P_CONNECT_NEXT;
          continue;
        }
        return;
      }
      if (r < 0 || getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el)) err = errno;
      if (err) {
        p->connect_errno = err;
        close_fd(p);
        p->st = P_CONNECT_NEXT;
        continue;
      }
      drop_addrs(p);
      if (build_request(c, x)) {
        fail(x, KA_XE_NOMEM, "cannot build the request (too long or out of memory)");
        return;
      }
      p->st = P_SENDING;
      continue;
    }

    case P_SENDING: {
      size_t hl = p->req.len, total = hl + p->blen;
      while (p->sent < total) {
        struct iovec iov[2];
        struct msghdr mh;
        int k = 0;
        ssize_t w;
        if (p->sent < hl) {
          iov[k].iov_base = p->req.data + p->sent;
          iov[k++].iov_len = hl - p->sent;
          if (p->blen) {
            iov[k].iov_base = x->body;
            iov[k++].iov_len = p->blen;
          }
        } else {
          iov[k].iov_base = x->body + (p->sent - hl);
          iov[k++].iov_len = total - p->sent;
        }
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)k;
        w = sendmsg(p->fd, &mh, MSG_NOSIGNAL); /* no SIGPIPE, whatever the process does */
        if (w < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) return;
          if (lost(c, x, errno)) break;
          return;
        }
        p->sent += (size_t)w;
      }
      if (p->st != P_SENDING) continue; /* lost: reconnecting */
      sodium_memzero(p->req.data, p->req.len);
      p->st = P_HEAD;
      continue;
    }

    case P_HEAD:
    case P_BODY: {
      char buf[READ_CHUNK];
      ssize_t r = read(p->fd, buf, sizeof buf);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (lost(c, x, errno)) continue;
        return;
      }
      if (r == 0) {
        if (p->st == P_BODY && p->bm == KA_HB_EOF) {
          complete(x, 0);
          return;
        }
        if (lost(c, x, 0)) continue;
        return;
      }
      p->got += (size_t)r;
      if (feed(x, buf, (size_t)r)) return;
      continue;
    }
    }
  }
}

/* ---- the backend ---------------------------------------------------------- */

static int plain_init(ka_conn_t *c, keel_err_t *e) {
  struct plain_conn *pc = calloc(1, sizeof *pc);
  const char *auth = strstr(c->base, "://") + 3, *hs, *he, *ps = NULL;
  size_t alen = strcspn(auth, "/");
  int rc = 0;

  if (!pc) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  c->be = pc;
  if (memchr(auth, '@', alen)) {
    rc = keel_err_set(e, KEEL_EINVAL, "server URL: user info (user@host) is not supported");
    goto out;
  }
  if (alen && auth[0] == '[') {
    he = memchr(auth, ']', alen);
    if (!he || he == auth + 1) goto bad;
    hs = auth + 1;
    if (he + 1 < auth + alen) {
      if (he[1] != ':') goto bad;
      ps = he + 2;
    }
  } else {
    const char *colon = memchr(auth, ':', alen);
    hs = auth;
    he = colon ? colon : auth + alen;
    if (colon) {
      if (memchr(colon + 1, ':', (size_t)(auth + alen - colon - 1))) goto bad;
      ps = colon + 1;
    }
  }
  if (he == hs) goto bad;
  if (ps) {
    size_t pl = (size_t)(auth + alen - ps);
    unsigned long port = 0;
    if (pl == 0 || pl > 5) goto bad;
    for (size_t i = 0; i < pl; i++) {
      if (ps[i] < '0' || ps[i] > '9') goto bad;
      port = port * 10 + (unsigned long)(ps[i] - '0');
    }
    if (port == 0 || port > 65535) goto bad;
    pc->port = strndup(ps, pl);
  } else {
    pc->port = strdup("80");
  }
  pc->host = strndup(hs, (size_t)(he - hs));
  pc->hosthdr = strndup(auth, alen);
  if (!pc->port || !pc->host || !pc->hosthdr) rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
  goto out;
bad:
  rc = keel_err_set(e, KEEL_EINVAL, "server URL '%.200s': expected http://HOST[:PORT][/PATH]",
                    c->base);
out:
  return rc;
}

static void xfer_free(ka_xfer_t *x) {
  struct plain_xfer *p = x->be;
  if (!p) return;
  close_fd(p);
  forget_request(p);
  keel_buf_free(&p->req);
  keel_buf_free(&p->head);
  free(p);
  x->be = NULL;
  x->active = 0;
}

static void plain_free(ka_conn_t *c) {
  struct plain_conn *pc = c->be;
  xfer_free(&c->poll);
  xfer_free(&c->push);
  if (pc) {
    free(pc->host);
    free(pc->port);
    free(pc->hosthdr);
    free(pc);
  }
  c->be = NULL;
}

static int plain_start(ka_conn_t *c, ka_xfer_t *x, const char *route, const char *bearer,
                       size_t blen, long timeout_ms, keel_err_t *e) {
  struct plain_xfer *p = x->be;

  if (!p) {
    if (!(p = calloc(1, sizeof *p))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
    p->fd = -1;
    keel_buf_init(&p->req, REQ_HEAD_MAX);
    keel_buf_init(&p->head, KA_HTTP_HEAD_MAX);
    x->be = p;
  }
  forget_request(p);
  p->route = strdup(route);
  p->bearer = bearer ? strdup(bearer) : NULL;
  if (!p->route || (bearer && !p->bearer)) {
    forget_request(p);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  p->blen = blen;
  p->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
  p->deadline = keel_mono_ms() + p->timeout_ms;
  p->reused = p->retried = 0;
  /* Nothing is done here: the next ka_conn_wait starts it (without
   * sleeping), so every outcome, failures included, is reported the same
   * way: through x->done. */
  p->st = P_START;
  x->active = 1;
  return 0;
}

static long until(int64_t t, int64_t now) {
  int64_t d = t - now;
  if (d < 0) return 0;
  return d > 0x7fffffff ? 0x7fffffff : (long)d;
}

static int plain_wait(ka_conn_t *c, struct pollfd *extra, unsigned n, int timeout_ms) {
  struct pollfd fds[64 + 2];
  ka_xfer_t *xs[2] = {&c->poll, &c->push};
  int slot[2] = {-1, -1};
  int64_t now = keel_mono_ms();
  long t = timeout_ms;
  unsigned nf = 0;
  int r;

  for (unsigned i = 0; i < n; i++) fds[nf++] = (struct pollfd){.fd = extra[i].fd, .events = extra[i].events};
  for (int k = 0; k < 2; k++) {
    ka_xfer_t *x = xs[k];
    struct plain_xfer *p = x->be;
    short ev = 0;
    long d;
    if (!p) continue;
    if (x->active) {
      switch (p->st) {
      case P_CONNECTING:
      case P_SENDING: ev = POLLOUT; break;
      case P_HEAD:
      case P_BODY: ev = POLLIN; break;
      default: t = 0; break; /* work to do without waiting */
      }
      if ((d = until(p->deadline, now)) < t) t = d;
      if (p->st == P_CONNECTING && (d = until(p->connect_deadline, now)) < t) t = d;
    } else if (p->fd >= 0) {
      ev = POLLIN; /* an idle connection: readable means closed (or garbage) */
      if ((d = until(p->idle_since + IDLE_KEEP_MS, now)) < t) t = d;
    }
    if (ev && p->fd >= 0) {
      slot[k] = (int)nf;
      fds[nf++] = (struct pollfd){.fd = p->fd, .events = ev};
    }
  }
  r = poll(fds, nf, (int)t);
  if (r < 0)
    for (unsigned i = 0; i < nf; i++) fds[i].revents = 0; /* EINTR: the caller loops */
  for (unsigned i = 0; i < n; i++) extra[i].revents = fds[i].revents;
  now = keel_mono_ms();
  for (int k = 0; k < 2; k++) {
    ka_xfer_t *x = xs[k];
    struct plain_xfer *p = x->be;
    if (!p) continue;
    if (x->active) {
      drive(c, x);
      if (x->active && keel_mono_ms() >= p->deadline)
        fail(x, KA_XE_TIMEOUT, "request timed out after %ld ms", p->timeout_ms);
    } else if (p->fd >= 0) {
      if ((slot[k] >= 0 && fds[slot[k]].revents) || now - p->idle_since >= IDLE_KEEP_MS)
        close_fd(p);
    }
  }
  return 0;
}

const struct ka_conn_backend ka_conn_plain = {
    .name = "http",
    .init = plain_init,
    .free = plain_free,
    .start = plain_start,
    .wait = plain_wait,
};
