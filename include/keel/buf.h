/* keel/buf.h — a growable byte buffer with a hard size cap (cf. curl's dynbuf).
 *
 * A buffer never grows past `max` bytes: appends that would exceed it fail
 * with KEEL_ETOOBIG and leave the contents unchanged.  data is always
 * NUL-terminated (the NUL is not counted in len), so text can be used in place.
 * The buffer owns data; keel_buf_free releases it, keel_buf_steal hands it
 * to the caller (who then frees it with free()).
 */
#ifndef KEEL_BUF_H
#define KEEL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct keel_buf {
  char *data;
  size_t len;
  size_t cap;
  size_t max;
} keel_buf_t;

void keel_buf_init(keel_buf_t *b, size_t max);
void keel_buf_free(keel_buf_t *b);
void keel_buf_reset(keel_buf_t *b); /* len = 0, keeps the allocation */
int keel_buf_append(keel_buf_t *b, const void *p, size_t n);
int keel_buf_puts(keel_buf_t *b, const char *s);
int keel_buf_printf(keel_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int keel_buf_vprintf(keel_buf_t *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal (quotes included, escaped). */
int keel_buf_json_str(keel_buf_t *b, const char *s);
/* Returns data (caller frees) and resets b to empty. Never NULL on success. */
char *keel_buf_steal(keel_buf_t *b);

#endif
