/* httpcheck.h — the `http` job kind: one HTTP/1.1 request made from the
 * host, as a health gate of a runbook (docs/agent-protocol.md).
 *
 * exec.c decodes the job's "http" object (ka_httpcheck_decode) when the
 * job arrives, and runs ka_httpcheck_run in a forked child under the same
 * supervision as a command: the job's timeout kills the child, its stdout
 * and stderr are captured and capped, and its exit code is the result.
 *
 * http:// is spoken by a small blocking client here (no library); https://
 * goes through libcurl's easy interface, loaded with dlopen in the child
 * only, the way conn_curl.c loads it, so the agent itself never maps it for
 * a check.  Neither follows redirects or uses a proxy.  The statically
 * linked agent cannot load libcurl: its child execs keel-agent-dynamic,
 * which runs the same check (ka_httpcheck_argv, ka_httpcheck_main).
 */
#ifndef KA_HTTPCHECK_H
#define KA_HTTPCHECK_H

#include <jansson.h>
#include <stddef.h>

#include "keel/err.h"

#define KA_HTTP_URL_MAX 4096 /* bytes of a URL */
#define KA_HTTP_HOST_MAX 255 /* bytes of its host (brackets not counted) */

/* A URL as the check uses it.  Only scheme://host[:port][/path][?query] is
 * accepted: no user info, no fragment, printable ASCII only. */
typedef struct ka_http_url {
  int https;                            /* 1: https://, 0: http:// */
  unsigned port;                        /* as given, else 80 or 443 */
  char host[KA_HTTP_HOST_MAX + 1];      /* for getaddrinfo: an IPv6 literal without brackets */
  char authority[KA_HTTP_HOST_MAX + 9]; /* Host header: host as written ([v6]), ":port" if given */
  char target[KA_HTTP_URL_MAX + 2];     /* the request target: path and query, "/" when no path */
} ka_http_url_t;

/* Parses text[0..len) (untrusted: it MAY hold NUL bytes, which are refused)
 * into u.  On error u is zeroed and e names what is wrong (KEEL_EINVAL).
 * Never allocates. */
int ka_http_url_parse(const char *text, size_t len, ka_http_url_t *u, keel_err_t *e);

enum ka_http_method {
  KA_HTTP_GET,
  KA_HTTP_HEAD,
  KA_HTTP_POST,
  KA_HTTP_PUT,
  KA_HTTP_PATCH,
  KA_HTTP_DELETE,
};

/* "GET", "HEAD", ...; "?" for anything else. */
const char *ka_http_method_name(int method);

typedef struct ka_httpcheck {
  const char *url;         /* borrowed: the URL as given (messages, libcurl) */
  ka_http_url_t u;         /* url parsed */
  int method;              /* enum ka_http_method */
  int expect_status;       /* 100..599 */
  const char *expect_body; /* borrowed; NULL: any body will do */
} ka_httpcheck_t;

/* The job's "http" member: {"url": text, "method": "GET"|..., (default
 * GET), "expect_status": 100..599 (default 200), "expect_body": text|null}.
 * Strings are borrowed from http, which MUST outlive hc.  KEEL_EINVAL with
 * a message naming the member ("http.url: ...") when it is not that. */
int ka_httpcheck_decode(const json_t *http, ka_httpcheck_t *hc, keel_err_t *e);

/* What ka_httpcheck_run returns (the child's exit code). */
enum {
  KA_HC_PASS = 0,      /* status == expect_status and the body has expect_body */
  KA_HC_MISMATCH = 1,  /* an answer, but not the expected one */
  KA_HC_TRANSPORT = 2, /* no (complete) answer: resolve, connect, TLS, timeout, protocol */
};

/* Makes hc's request (one, on a new connection, `Connection: close`; an
 * empty body for POST/PUT/PATCH) and judges the answer.  Writes the
 * response body, at most body_cap bytes of it (no more is read), to
 * out_fd, and one line to err_fd: "GET <url>: HTTP 503, expected 200", or
 * the transport error.  timeout_ms bounds connecting and the exchange;
 * name resolution (getaddrinfo) cannot be bounded here: the caller's
 * process-group timeout covers it.  Blocking, allocates, may dlopen: meant
 * for a child process (exec.c), not the agent's event loop. */
int ka_httpcheck_run(const ka_httpcheck_t *hc, long timeout_ms, size_t body_cap, int out_fd,
                     int err_fd);

/* ---- the check in another program -----------------------------------------
 * The statically linked agent cannot load libcurl (static_link.h): the
 * child of its https check execs keel-agent-dynamic with this argv, whose
 * main hands it to ka_httpcheck_main:
 *
 *   PROG --http-check URL METHOD EXPECT_STATUS TIMEOUT_MS BODY_CAP [EXPECT_BODY]
 *
 * Plain words, no JSON: EXPECT_BODY (up to 64 KiB) MUST fit one argument
 * (128 KiB on Linux) and escaping could triple it. */
#define KA_HTTPCHECK_FLAG "--http-check"

/* A NULL-terminated argv (every string and the array malloc'd; the caller
 * frees them) running hc through prog; NULL when out of memory. */
char **ka_httpcheck_argv(const char *prog, const ka_httpcheck_t *hc, long timeout_ms,
                         size_t body_cap);

/* The other end: argv[1] is KA_HTTPCHECK_FLAG.  Decodes the check as
 * ka_httpcheck_decode would, runs it on descriptors 1 and 2 with SIGPIPE
 * ignored, and returns ka_httpcheck_run's code, to exit with.  Bad
 * arguments are KA_HC_TRANSPORT, with a line on descriptor 2. */
int ka_httpcheck_main(int argc, char **argv);

#endif
