/* enc.c — the out-of-line parts of enc.h: the capped byte buffer, CRC32C and
 * the file helpers. */
#include "metrics/enc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

int k_bytes_reserve(k_bytes_t *b, size_t extra) {
  size_t need = b->len + extra, cap;
  uint8_t *p;
  if (need < b->len || (b->max && need > b->max)) return KEEL_ETOOBIG;
  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : 64;
  while (cap < need) cap = cap + cap / 2 + 64;
  if (b->max && cap > b->max) cap = b->max;
  p = realloc(b->p, cap);
  if (!p) return KEEL_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int k_bytes_append(k_bytes_t *b, const void *p, size_t n) {
  int rc = k_bytes_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

void k_bytes_free(k_bytes_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ---- CRC32C ------------------------------------------------------------------ */

/* Software fallback for CPUs without SSE4.2: slicing-by-8.  Its tables are
 * the only static state here: a constant, built once (pthread_once). */
#define POLY 0x82f63b78u

typedef struct crc_tab {
  uint32_t t[8][256];
} crc_tab_t;

static crc_tab_t T;
static pthread_once_t T_once = PTHREAD_ONCE_INIT;

static void make_tab(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
    T.t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int k = 1; k < 8; k++) T.t[k][i] = (T.t[k - 1][i] >> 8) ^ T.t[0][T.t[k - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n) {
  pthread_once(&T_once, make_tab);
  crc = ~crc;
  while (n >= 8) {
    uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24);
    crc = T.t[7][lo & 0xff] ^ T.t[6][(lo >> 8) & 0xff] ^ T.t[5][(lo >> 16) & 0xff] ^
          T.t[4][lo >> 24] ^ T.t[3][p[4]] ^ T.t[2][p[5]] ^ T.t[1][p[6]] ^ T.t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ T.t[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p,
                                                         size_t n) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  while (n--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
  return ~(uint32_t)c;
}
#endif

uint32_t k_crc32c(uint32_t crc, const void *p, size_t n) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("sse4.2")) return crc_hw(crc, p, n);
#endif
  return crc_sw(crc, p, n);
}

int k_write_all(int fd, const void *p, size_t n) {
  const uint8_t *q = p;
  while (n) {
    ssize_t w = write(fd, q, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    q += w;
    n -= (size_t)w;
  }
  return 0;
}

int k_dir_fsync(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;
  if (fd < 0) return -1;
  rc = fsync(fd);
  close(fd);
  return rc;
}
