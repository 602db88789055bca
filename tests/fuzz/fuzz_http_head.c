/* fuzz_http_head.c — the HTTP/1.1 response framing of src/agent/httphead.c,
 * which reads whatever keeld (conn_plain.c) or a checked service
 * (httpcheck.c) sends: the head, any interim heads before it, and a chunked
 * body after it.
 *
 * The input is copied to a buffer of exactly its size, so that reading one
 * byte past it is an AddressSanitizer report.  Invariants:
 *   - a head: 0 with the body offset inside the input and the head cap, just
 *     past an LF; a status 100..599 but 101, the one in the status line;
 *     each Content-Length field holds the decimal that was parsed (read
 *     here with strtoull), and there is none when none was parsed; the
 *     framing follows from the fields; keep-alive never with a body that
 *     runs to the close.  Or an error with its code and a message, *h
 *     zeroed, EAGAIN only under the cap and ETOOBIG only at it.
 *   - the same bytes fed in pieces to ka_http_head_feed, which skips interim
 *     heads, give the same final head (or error) and stop at the same byte
 *     as ka_http_head_parse head after head.
 *   - a chunked body decodes to input bytes, no more than the cap, each
 *     span the last bytes consumed; in one piece or in many, the same
 *     bytes, the same end (or error) at the same offset. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httphead.h"

#include "fuzz_check.h"

/* Piece sizes for the incremental paths: 1 to 16 bytes, from the input. */
static size_t next_piece(uint32_t *seed, size_t left) {
  size_t k;
  *seed = *seed * 1103515245u + 12345u;
  k = 1 + (*seed >> 16) % 16;
  return k < left ? k : left;
}

static int all_zero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i]) return 0;
  return 1;
}

/* How many Content-Length fields head[0..n) has; each MUST hold v, written
 * as 1 to 19 digits between optional blanks (and a CR before the LF). */
static int count_lengths(const char *head, size_t n, uint64_t v) {
  const char *end = head + n, *l = head;
  int found = 0;

  while (l < end) {
    const char *nl = memchr(l, '\n', (size_t)(end - l)), *a, *b;
    char num[24], *stop;
    unsigned long long got;
    if (!nl) break;
    a = l + 15;
    if (nl - l >= 15 && !strncasecmp(l, "content-length:", 15)) {
      b = nl;
      if (b > a && b[-1] == '\r') b--;
      while (a < b && (*a == ' ' || *a == '\t')) a++;
      while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
      CHECK(b - a >= 1 && b - a <= 19 && *a >= '0' && *a <= '9');
      memcpy(num, a, (size_t)(b - a));
      num[b - a] = '\0';
      errno = 0;
      got = strtoull(num, &stop, 10);
      CHECK(errno == 0 && *stop == '\0' && got == v);
      found++;
    }
    l = nl + 1;
  }
  return found;
}

/* One head at buf[0..len); returns ka_http_head_parse's code. */
static int check_head(const char *buf, size_t len, ka_http_head_t *h) {
  keel_err_t e = {0};
  int rc = ka_http_head_parse(buf, len, h, &e);

  if (rc) {
    CHECK(rc == KEEL_EAGAIN || rc == KEEL_EINVAL || rc == KEEL_ETOOBIG);
    CHECK(e.code == rc && e.msg[0]);
    CHECK(all_zero(h, sizeof *h));
    if (rc == KEEL_EAGAIN) CHECK(len < KA_HTTP_HEAD_MAX);
    if (rc == KEEL_ETOOBIG) CHECK(len >= KA_HTTP_HEAD_MAX);
    return rc;
  }
  CHECK(h->body_off >= 14 && h->body_off <= len && h->body_off <= KA_HTTP_HEAD_MAX);
  CHECK(buf[h->body_off - 1] == '\n');
  CHECK(!memcmp(buf, "HTTP/1.", 7) && h->minor == buf[7] - '0');
  CHECK(h->status == (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0'));
  CHECK(h->status >= 100 && h->status <= 599 && h->status != 101);
  if (h->status < 200) {
    CHECK(h->framing == KA_HB_NONE && !h->has_length && !h->te && !h->keep_alive);
  } else {
    int n = count_lengths(buf, h->body_off, h->length);
    CHECK(h->has_length ? n > 0 : n == 0 && h->length == 0);
    if (h->status == 204 || h->status == 304) CHECK(h->framing == KA_HB_NONE);
    else if (h->te) CHECK(h->framing == (h->chunked ? KA_HB_CHUNKED : KA_HB_EOF));
    else CHECK(h->framing == (h->has_length ? KA_HB_LENGTH : KA_HB_EOF));
    if (h->keep_alive) CHECK(h->framing != KA_HB_EOF);
  }
  return 0;
}

/* The whole of buf[0..len) fed in pieces: the same code (rc) as parsing
 * head after head, and on 0 the same final head *h, its body at off. */
static void check_feed(const char *buf, size_t len, int rc, size_t off, const ka_http_head_t *h,
                       uint32_t *seed) {
  keel_err_t e = {0};
  ka_http_head_t h2;
  keel_buf_t acc;
  size_t fed = 0;
  int rc2 = KEEL_EAGAIN;

  keel_buf_init(&acc, KA_HTTP_HEAD_MAX);
  while (rc2 == KEEL_EAGAIN && fed < len) {
    size_t piece = next_piece(seed, len - fed), n = piece;
    const char *d = buf + fed;
    rc2 = ka_http_head_feed(&acc, &d, &n, &h2, &e);
    CHECK(n <= piece && d == buf + fed + (piece - n));
    if (rc2 == KEEL_EAGAIN) CHECK(n == 0);
    fed += piece - n;
  }
  CHECK(rc2 == rc);
  if (!rc) {
    CHECK(fed == off && acc.len == 0);
    CHECK(h2.status == h->status && h2.minor == h->minor && h2.has_length == h->has_length &&
          h2.length == h->length && h2.te == h->te && h2.chunked == h->chunked &&
          h2.keep_alive == h->keep_alive && h2.framing == h->framing &&
          h2.body_off == h->body_off);
  }
  keel_buf_free(&acc);
}

struct run {
  int rc, ended;
  size_t at;      /* where it ended or failed */
  size_t out_len;
};

/* Decodes in[0..n) as one piece (seed NULL) or many; the body to out. */
static struct run decode(const char *in, size_t n, uint64_t max, int trailers, uint32_t *seed,
                         char *out) {
  ka_http_chunks_t c;
  struct run r = {0};
  size_t off = 0;

  ka_http_chunks_init(&c, max, trailers);
  while (off < n) {
    size_t piece = seed ? next_piece(seed, n - off) : n - off, m = piece;
    const char *p = in + off;
    while (m > 0) {
      ka_http_span_t s;
      keel_err_t e = {0};
      int rc = ka_http_chunks_feed(&c, p, m, &s, &e);
      CHECK(s.used <= m);
      if (rc) {
        CHECK((rc == KEEL_EINVAL || rc == KEEL_ETOOBIG) && e.code == rc && e.msg[0]);
        CHECK(s.len == 0 && !s.end);
        r.rc = rc;
        r.at = (size_t)(p - in) + s.used;
        return r;
      }
      CHECK(s.used > 0);
      if (s.len) {
        CHECK(s.data == p + s.used - s.len);
        memcpy(out + r.out_len, s.data, s.len);
        r.out_len += s.len;
      } else {
        CHECK(s.data == NULL);
      }
      CHECK(r.out_len <= max && r.out_len <= c.total && c.total <= max);
      p += s.used;
      m -= s.used;
      if (s.end) {
        CHECK(r.out_len == c.total);
        r.ended = 1;
        r.at = (size_t)(p - in);
        return r;
      }
    }
    off += piece;
  }
  r.at = n;
  return r;
}

static void check_chunks(const char *in, size_t n, uint32_t *seed) {
  uint64_t max = (*seed & 2) ? UINT64_MAX : (*seed >> 8) % 64;
  int trailers = (int)(*seed & 1);
  char *o1 = malloc(n ? n : 1), *o2 = malloc(n ? n : 1);
  struct run a, b;

  CHECK(o1 && o2);
  a = decode(in, n, max, trailers, NULL, o1);
  b = decode(in, n, max, trailers, seed, o2);
  CHECK(a.rc == b.rc && a.ended == b.ended && a.at == b.at && a.out_len == b.out_len);
  CHECK(a.at <= n && a.out_len <= n);
  CHECK(!memcmp(o1, o2, a.out_len));
  free(o1);
  free(o2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1);
  uint32_t seed = 2166136261u;
  ka_http_head_t h;
  size_t off = 0;
  int rc;

  CHECK(buf);
  if (size) memcpy(buf, data, size);
  for (size_t i = 0; i < size; i++) seed = (seed ^ data[i]) * 16777619u;
  /* Interim answers, then the final one (each takes 14 bytes or more). */
  while (!(rc = check_head(buf + off, size - off, &h))) {
    off += h.body_off;
    if (h.status >= 200) break;
  }
  check_feed(buf, size, rc, off, &h, &seed);
  if (!rc && h.framing == KA_HB_CHUNKED) check_chunks(buf + off, size - off, &seed);
  free(buf);
  return 0;
}
