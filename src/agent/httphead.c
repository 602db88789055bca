/* httphead.c — an HTTP/1.1 response's framing (httphead.h).
 *
 * The rules are strict where leniency would let the agent and something
 * between it and the server read one stream as two different answers
 * (whitespace in a field name, folded lines, disagreeing Content-Lengths),
 * and otherwise take what servers send (bare LF line ends, unknown fields,
 * chunk extensions and trailers, which are skipped). */
#include "httphead.h"

#include <string.h>
#include <strings.h>

/* ---- the head -------------------------------------------------------------- */

/* Where the head block in buf[0..len) ends (just past the blank line:
 * "\n\n" or "\n\r\n"), or 0 when it has not arrived yet.  Only a blank
 * line that ends at or after from + 2 is looked for: one ending earlier
 * was there before, when the caller had from bytes. */
static size_t head_end(const char *buf, size_t len, size_t from) {
  for (size_t i = from > 2 ? from - 2 : 0; i < len; i++) {
    if (buf[i] != '\n' || i == 0) continue;
    if (i + 1 < len && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return 0;
}

/* 1 when the comma-separated list v[0..n) has tok (any case). */
static int list_has(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    s = i;
    while (i < n && v[i] != ',') i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - s == tl && !strncasecmp(v + s, tok, tl)) return 1;
  }
  return 0;
}

/* 1 when the last coding of the Transfer-Encoding list v[0..n) is chunked. */
static int last_is_chunked(const char *v, size_t n) {
  size_t e = n, s;
  while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
  s = e;
  while (s > 0 && v[s - 1] != ',') s--;
  while (s < e && (v[s] == ' ' || v[s] == '\t')) s++;
  return e - s == 7 && !strncasecmp(v + s, "chunked", 7);
}

/* The status line s[0..n) (its LF excluded): "HTTP/1.x SSS[ reason]". */
static int status_line(const char *s, size_t n, ka_http_head_t *h) {
  if (n < 12 || memcmp(s, "HTTP/1.", 7) || s[7] < '0' || s[7] > '9' || s[8] != ' ' ||
      s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
      (n > 12 && s[12] != ' ' && s[12] != '\r'))
    return -1;
  h->minor = s[7] - '0';
  h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
  return 0;
}

int ka_http_head_parse(const char *buf, size_t len, ka_http_head_t *h, keel_err_t *e) {
  const char *s, *nl, *end;
  int conn_close = 0, conn_keep = 0, rc = 0;

  memset(h, 0, sizeof *h);
  h->body_off = head_end(buf, len < KA_HTTP_HEAD_MAX ? len : KA_HTTP_HEAD_MAX, 0);
  if (!h->body_off) {
    rc = len >= KA_HTTP_HEAD_MAX
             ? keel_err_set(e, KEEL_ETOOBIG, "header block larger than %d bytes", KA_HTTP_HEAD_MAX)
             : keel_err_set(e, KEEL_EAGAIN, "incomplete header block");
    goto out;
  }
  end = buf + h->body_off;
  nl = memchr(buf, '\n', h->body_off); /* found: the block ends in one */
  if (status_line(buf, (size_t)(nl - buf), h)) {
    rc = keel_err_set(e, KEEL_EINVAL, "malformed status line");
    goto out;
  }
  if (h->status == 101) {
    rc = keel_err_set(e, KEEL_EINVAL, "unrequested protocol switch (HTTP 101)");
    goto out;
  }
  if (h->status < 200) goto out; /* interim: its fields are of no use */
  for (s = nl + 1; s < end; s = nl + 1) {
    const char *colon, *v, *ve;
    nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) break;
    ve = nl;
    if (ve > s && ve[-1] == '\r') ve--;
    if (ve == s) break; /* the blank line */
    if (*s == ' ' || *s == '\t') {
      rc = keel_err_set(e, KEEL_EINVAL, "folded header line");
      goto out;
    }
    colon = memchr(s, ':', (size_t)(ve - s));
    if (!colon || colon == s) {
      rc = keel_err_set(e, KEEL_EINVAL, "malformed header line");
      goto out;
    }
    /* "Name :" is refused, not taken for another field (RFC 9112 5.1). */
    for (const char *q = s; q < colon; q++)
      if (*q == ' ' || *q == '\t') {
        rc = keel_err_set(e, KEEL_EINVAL, "malformed header name");
        goto out;
      }
    v = colon + 1;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
#define NAME_IS(lit) ((size_t)(colon - s) == sizeof lit - 1 && !strncasecmp(s, lit, sizeof lit - 1))
    if (NAME_IS("Content-Length")) {
      uint64_t n = 0;
      /* 19 digits cannot overflow 64 bits; no real body is longer. */
      if (v == ve || ve - v > 19) goto bad_len;
      for (const char *q = v; q < ve; q++) {
        if (*q < '0' || *q > '9') goto bad_len;
        n = n * 10 + (uint64_t)(*q - '0');
      }
      if (h->has_length && n != h->length) goto bad_len;
      h->length = n;
      h->has_length = 1;
    } else if (NAME_IS("Transfer-Encoding")) {
      h->te = 1;
      h->chunked = last_is_chunked(v, (size_t)(ve - v));
    } else if (NAME_IS("Connection")) {
      if (list_has(v, (size_t)(ve - v), "close")) conn_close = 1;
      if (list_has(v, (size_t)(ve - v), "keep-alive")) conn_keep = 1;
    }
#undef NAME_IS
  }
  if (h->status == 204 || h->status == 304)
    h->framing = KA_HB_NONE;
  else if (h->te)
    h->framing = h->chunked ? KA_HB_CHUNKED : KA_HB_EOF;
  else if (h->has_length)
    h->framing = KA_HB_LENGTH;
  else
    h->framing = KA_HB_EOF;
  /* A body delimited by the close leaves nothing to reuse. */
  h->keep_alive = !conn_close && (h->minor >= 1 || conn_keep) && h->framing != KA_HB_EOF;
  goto out;
bad_len:
  rc = keel_err_set(e, KEEL_EINVAL, "bad Content-Length");
out:
  if (rc) memset(h, 0, sizeof *h);
  return rc;
}

int ka_http_head_feed(keel_buf_t *acc, const char **d, size_t *n, ka_http_head_t *h,
                      keel_err_t *e) {
  int rc;

  do {
    size_t old = acc->len, room = old < KA_HTTP_HEAD_MAX ? KA_HTTP_HEAD_MAX - old : 0;
    size_t take = *n < room ? *n : room, end;
    if ((rc = keel_buf_append(acc, *d, take))) {
      rc = rc == KEEL_ENOMEM
               ? keel_err_set(e, rc, "out of memory")
               : keel_err_set(e, rc, "header block larger than %d bytes", KA_HTTP_HEAD_MAX);
      goto out;
    }
    /* Only where the new bytes could complete a blank line: a head that
     * dribbles in byte by byte costs linear time, not quadratic. */
    end = head_end(acc->data, acc->len, old);
    if (!end) {
      *d += take;
      *n -= take;
      rc = acc->len >= KA_HTTP_HEAD_MAX
               ? keel_err_set(e, KEEL_ETOOBIG, "header block larger than %d bytes",
                              KA_HTTP_HEAD_MAX)
               : keel_err_set(e, KEEL_EAGAIN, "incomplete header block");
      goto out;
    }
    *d += end - old;
    *n -= end - old;
    rc = ka_http_head_parse(acc->data, end, h, e);
    keel_buf_reset(acc);
    if (rc) goto out;
  } while (h->status < 200); /* interim: the final answer follows */
out:
  return rc;
}

/* ---- chunked bodies ------------------------------------------------------ */

enum { CK_SIZE, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE, CK_FAILED };

void ka_http_chunks_init(ka_http_chunks_t *c, uint64_t max, int trailers) {
  memset(c, 0, sizeof *c);
  c->st = CK_SIZE;
  c->max = max;
  c->trailers = trailers;
}

static int hex_value(char h) {
  if (h >= '0' && h <= '9') return h - '0';
  if (h >= 'a' && h <= 'f') return h - 'a' + 10;
  if (h >= 'A' && h <= 'F') return h - 'A' + 10;
  return -1;
}

/* A complete line in c->line (LF and a CR before it removed): the CRLF
 * after a chunk's data, or a chunk-size line. */
static int chunk_line(ka_http_chunks_t *c, keel_err_t *e) {
  uint64_t sz = 0;
  size_t i = 0;
  int rc = 0, dv;

  if (c->st == CK_DATA_END) {
    if (c->line_len) rc = keel_err_set(e, KEEL_EINVAL, "chunk not followed by CRLF");
    else c->st = CK_SIZE;
    goto out;
  }
  /* 1 to 15 hex digits (under 2^60: no overflow below), then the end or
   * an extension. */
  for (; i < c->line_len && i < 16 && (dv = hex_value(c->line[i])) >= 0; i++)
    sz = sz * 16 + (uint64_t)dv;
  if (i == 0 || i >= 16 ||
      (i < c->line_len && c->line[i] != ';' && c->line[i] != ' ' && c->line[i] != '\t')) {
    rc = keel_err_set(e, KEEL_EINVAL, "bad chunk size");
    goto out;
  }
  /* Refused before its data arrives; total <= max, so no overflow. */
  if (sz > c->max - c->total) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "body larger than the cap (%llu bytes)",
                      (unsigned long long)c->max);
    goto out;
  }
  c->total += sz;
  if (sz) {
    c->st = CK_DATA;
    c->left = sz;
  } else {
    c->st = c->trailers ? CK_TRAILER : CK_DONE;
    c->line_text = 0;
    c->trailer_len = 0;
  }
out:
  c->line_len = 0;
  return rc;
}

int ka_http_chunks_feed(ka_http_chunks_t *c, const char *in, size_t n, ka_http_span_t *s,
                        keel_err_t *e) {
  size_t i = 0;
  int rc = 0;

  memset(s, 0, sizeof *s);
  if (c->st == CK_FAILED) {
    rc = keel_err_set(e, KEEL_EINVAL, "chunked body fed after an error");
    goto out;
  }
  while (i < n && c->st != CK_DONE) {
    char ch;
    if (c->st == CK_DATA) {
      /* left > 0 here, and i < n: a span of at least one byte. */
      size_t take = n - i < c->left ? n - i : (size_t)c->left;
      s->data = in + i;
      s->len = take;
      i += take;
      c->left -= take;
      if (c->left == 0) c->st = CK_DATA_END;
      break;
    }
    ch = in[i++];
    if (c->st == CK_TRAILER) {
      /* Trailer fields are skipped, up to the blank line that ends them. */
      if (++c->trailer_len > KA_HTTP_HEAD_MAX) {
        rc = keel_err_set(e, KEEL_ETOOBIG, "trailers larger than %d bytes", KA_HTTP_HEAD_MAX);
        goto out;
      }
      if (ch == '\n') {
        if (!c->line_text) c->st = CK_DONE;
        c->line_text = 0;
      } else if (ch != '\r') {
        c->line_text = 1;
      }
      continue;
    }
    /* CK_SIZE or CK_DATA_END: a line */
    if (ch != '\n') {
      if (c->line_len >= sizeof c->line - 1) {
        rc = keel_err_set(e, KEEL_EINVAL, "chunk size line too long");
        goto out;
      }
      c->line[c->line_len++] = ch;
      continue;
    }
    if (c->line_len && c->line[c->line_len - 1] == '\r') c->line_len--;
    if ((rc = chunk_line(c, e))) goto out;
  }
  s->end = c->st == CK_DONE;
out:
  s->used = i;
  if (rc) {
    c->st = CK_FAILED;
    s->data = NULL;
    s->len = 0;
  }
  return rc;
}
