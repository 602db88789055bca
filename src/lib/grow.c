/* grow.c — see keel/grow.h. */
#include "keel/grow.h"

#include <stdint.h>
#include <stdlib.h>

void *keel_grow(void *p, size_t *cap, size_t n, size_t elem, size_t first) {
  size_t nc;
  void *np;
  if (n < *cap) return p;
  nc = *cap ? *cap * 2 : first;
  if (nc <= *cap || (elem && nc > SIZE_MAX / elem)) return NULL;
  if (!(np = realloc(p, nc * elem))) return NULL;
  *cap = nc;
  return np;
}
