/* docwalk_short.h — the walker (docwalk.h) under the short names the
 * document validators use.  Include only in a validator's .c file, after
 * defining its state type with a `k_walk_t w;` member: every macro takes
 * that state (V) and walks V->w. */
#ifndef KEELD_DOCWALK_SHORT_H
#define KEELD_DOCWALK_SHORT_H

#include "docwalk.h"

typedef k_walk_mark_t mark_t;
#define verr(V, ...) k_walk_err(&(V)->w, __VA_ARGS__)
#define oom(V) k_walk_oom(&(V)->w)
#define q k_walk_quote
#define qs k_walk_quote_json
#define push_keyn(V, k, n) k_walk_push_keyn(&(V)->w, k, n)
#define push_key(V, k) k_walk_push_key(&(V)->w, k)
#define push_idx(V, i) k_walk_push_idx(&(V)->w, i)
#define pop(V, m) k_walk_pop(&(V)->w, m)
#define check_map(V, o, a) k_walk_check_map(&(V)->w, o, a)
#define member k_walk_member
#define missing(V, k) k_walk_missing(&(V)->w, k)

#endif
