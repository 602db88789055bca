/* keel/grow.h — room for one more element in a doubling array.
 *
 *   item_t *ni = keel_grow(v->items, &v->cap, v->n, sizeof *ni, 16);
 *   if (!ni) goto nomem;
 *   v->items = ni;
 *   v->items[v->n++] = x;
 *
 * Returns p itself while n < *cap; otherwise p reallocated to twice *cap
 * elements (`first` the first time), with *cap updated.  NULL when memory
 * (or size_t) runs out: then p is still valid, still the caller's, and
 * *cap unchanged — exactly realloc's contract.
 */
#ifndef KEEL_GROW_H
#define KEEL_GROW_H

#include <stddef.h>

void *keel_grow(void *p, size_t *cap, size_t n, size_t elem, size_t first);

#endif
