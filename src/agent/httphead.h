/* httphead.h — reading an HTTP/1.1 response's framing: its head (status
 * line and header fields) and a chunked body.  Internal to src/agent, and
 * shared by its two own clients: conn_plain.c (the agent's connection to
 * keeld over http://) and httpcheck.c (the http job kind's http:// client),
 * so that both read a server's answer by the same rules.
 *
 * Everything read here is untrusted: whatever the server sent.  Nothing
 * here does I/O, keeps state outside what the caller passes in, or reads a
 * byte outside the lengths it is given (the input need not be
 * NUL-terminated).  Errors are KEEL_EINVAL (malformed) or KEEL_ETOOBIG
 * (over a cap), with a message naming what is wrong ("bad Content-Length");
 * callers add whose answer it was. */
#ifndef KA_HTTPHEAD_H
#define KA_HTTPHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/err.h"

#define KA_HTTP_HEAD_MAX (16 * 1024)  /* a head block, blank line included; also the trailers */
#define KA_HTTP_CHUNK_LINE_MAX 128    /* a chunk-size line, extensions included */

/* How the body after a head is delimited (RFC 9112 6.3). */
enum ka_http_framing {
  KA_HB_NONE,    /* no body: 1xx, 204, 304 */
  KA_HB_LENGTH,  /* Content-Length bytes */
  KA_HB_CHUNKED, /* chunked: ka_http_chunks_* */
  KA_HB_EOF,     /* up to the end of the connection */
};

typedef struct ka_http_head {
  int status;          /* 100..599, never 101 */
  int minor;           /* the x of HTTP/1.x */
  int has_length;      /* a Content-Length field (all its repeats agree) */
  uint64_t length;     /* its value when has_length: at most 19 decimal digits */
  int te;              /* a Transfer-Encoding field */
  int chunked;         /* the last one's last coding is chunked */
  int keep_alive;      /* the server allows another request on the connection */
  int framing;         /* enum ka_http_framing of the answer to anything but HEAD */
  size_t body_off;     /* bytes of the head block, blank line included */
} ka_http_head_t;

/* Parses the head block at the start of buf[0..len).
 *
 * 0: *h is filled; buf[h->body_off..len) is what follows the head (body,
 * or the next head after an interim answer).  An interim answer (status
 * 1xx) has only status, minor, body_off and framing (KA_HB_NONE) set: its
 * fields are not read, the final answer follows.  101 is an error: neither
 * client asks to switch protocols.
 *
 * KEEL_EAGAIN: no complete head in buf yet, and len < KA_HTTP_HEAD_MAX.
 * KEEL_ETOOBIG: none within the first KA_HTTP_HEAD_MAX bytes.
 * KEEL_EINVAL: malformed status line, header line or name (whitespace in
 * it, or folded), Content-Length (not 1 to 19 digits, or repeats that
 * disagree).
 *
 * On an error *h is zeroed.
 *
 * Transfer-Encoding wins over Content-Length (RFC 9112 6.3); a coding list
 * that does not end in chunked runs to the end of the connection. */
int ka_http_head_parse(const char *buf, size_t len, ka_http_head_t *h, keel_err_t *e);

/* The incremental form, for a client reading an answer as it arrives:
 * takes bytes from (*d, *n), advancing both past what it took, skips
 * interim (1xx) answers, and returns 0 with *h the final answer's head and
 * *d at the start of its body.  KEEL_EAGAIN: all of the bytes were taken,
 * more are needed.  Other errors as ka_http_head_parse, and KEEL_ENOMEM;
 * the answer is then unusable.
 * acc is where a head collects: empty before an answer's first byte, max
 * at least KA_HTTP_HEAD_MAX, untouched by the caller in between; it is
 * left empty after each complete head.  Each byte is looked at a bounded
 * number of times however the answer is split. */
int ka_http_head_feed(keel_buf_t *acc, const char **d, size_t *n, ka_http_head_t *h,
                      keel_err_t *e);

/* ---- chunked bodies ---------------------------------------------------- */

typedef struct ka_http_chunks {
  int st;              /* internal */
  int trailers;        /* read the trailer section to its end (else end at the last chunk) */
  uint64_t max;        /* body bytes allowed in all */
  uint64_t total;      /* body bytes announced so far (<= max) */
  uint64_t left;       /* of the current chunk */
  size_t line_len;
  size_t trailer_len;
  int line_text;       /* the current trailer line has more than CR */
  char line[KA_HTTP_CHUNK_LINE_MAX];
} ka_http_chunks_t;

/* What one ka_http_chunks_feed call did. */
typedef struct ka_http_span {
  size_t used;         /* bytes of the input consumed */
  const char *data;    /* body bytes: the last len bytes of those used (NULL when len is 0) */
  size_t len;
  int end;             /* the body is complete: input past used is not part of it */
} ka_http_span_t;

/* Starts a body of at most max bytes (a chunk size that would pass it is
 * KEEL_ETOOBIG before any of its data).  trailers: 1 reads the trailer
 * section up to its blank line (at most KA_HTTP_HEAD_MAX bytes), so that
 * the connection can carry another answer; 0 ends at the last chunk's size
 * line, for a client that reads nothing more from the connection. */
void ka_http_chunks_init(ka_http_chunks_t *c, uint64_t max, int trailers);

/* Decodes in[0..n) as far as the next body bytes, the end of the body or
 * the end of the input, whichever comes first; *s says which.  Call again
 * with the rest of the input (in + s->used) until s->end or the input is
 * used up.  0, or KEEL_EINVAL / KEEL_ETOOBIG (c is then unusable).  Chunk
 * sizes have at most 15 hex digits; extensions and trailers are ignored. */
int ka_http_chunks_feed(ka_http_chunks_t *c, const char *in, size_t n, ka_http_span_t *s,
                        keel_err_t *e);

#endif
