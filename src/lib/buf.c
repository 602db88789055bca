#include "keel/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/err.h"

void keel_buf_init(keel_buf_t *b, size_t max) {
  b->data = NULL;
  b->len = b->cap = 0;
  b->max = max;
}

void keel_buf_free(keel_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void keel_buf_reset(keel_buf_t *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

/* Ensures room for n more bytes plus the NUL. */
static int reserve(keel_buf_t *b, size_t n) {
  size_t need, ncap;
  char *p;

  if (n > b->max || b->len > b->max - n) return KEEL_ETOOBIG;
  need = b->len + n + 1;
  if (need <= b->cap) return 0;
  ncap = b->cap ? b->cap : 64;
  while (ncap < need) ncap *= 2;
  if (b->max < SIZE_MAX && ncap > b->max + 1) ncap = b->max + 1;
  p = realloc(b->data, ncap);
  if (!p) return KEEL_ENOMEM;
  b->data = p;
  b->cap = ncap;
  return 0;
}

int keel_buf_append(keel_buf_t *b, const void *p, size_t n) {
  int rc = reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int keel_buf_puts(keel_buf_t *b, const char *s) { return keel_buf_append(b, s, strlen(s)); }

int keel_buf_vprintf(keel_buf_t *b, const char *fmt, va_list ap) {
  va_list ap2;
  int n, rc;

  va_copy(ap2, ap);
  n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return KEEL_EINVAL;
  rc = reserve(b, (size_t)n);
  if (rc) return rc;
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return 0;
}

int keel_buf_printf(keel_buf_t *b, const char *fmt, ...) {
  va_list ap;
  int rc;
  va_start(ap, fmt);
  rc = keel_buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

static int json_str(keel_buf_t *b, const char *s);

/* All or nothing, like every append: on failure the partial output goes. */
int keel_buf_json_str(keel_buf_t *b, const char *s) {
  size_t len = b->len;
  int rc = json_str(b, s);
  if (rc) {
    b->len = len;
    if (b->data) b->data[len] = '\0';
  }
  return rc;
}

static int json_str(keel_buf_t *b, const char *s) {
  /* Upper-case, as jansson writes it: canonical text must match byte for byte. */
  static const char hex[] = "0123456789ABCDEF";
  const unsigned char *p = (const unsigned char *)s;
  const unsigned char *run = p;
  int rc = 0;

  if ((rc = keel_buf_append(b, "\"", 1))) return rc;
  for (; *p; p++) {
    char esc[7];
    size_t n = 2;
    if (*p >= 0x20 && *p != '"' && *p != '\\') continue;
    if ((rc = keel_buf_append(b, run, (size_t)(p - run)))) return rc;
    esc[0] = '\\';
    switch (*p) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
      esc[4] = hex[*p >> 4]; esc[5] = hex[*p & 15];
      n = 6;
    }
    if ((rc = keel_buf_append(b, esc, n))) return rc;
    run = p + 1;
  }
  if ((rc = keel_buf_append(b, run, (size_t)(p - run)))) return rc;
  return keel_buf_append(b, "\"", 1);
}

char *keel_buf_steal(keel_buf_t *b) {
  char *p;
  if (!b->data && keel_buf_append(b, "", 0)) return NULL;
  p = b->data;
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}
