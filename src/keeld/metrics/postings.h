/* metrics/postings.h — sorted series-id lists and label matchers.
 *
 * A posting list is the sorted, duplicate-free list of the ids of the
 * series that carry one label pair.  Selecting series for matchers is set
 * algebra on those lists (Prometheus' PostingsForMatchers): each matcher
 * becomes either a positive set (series that must be in it: name="x",
 * name=~"a|b") or a negative one (series that must not: name!="x", and
 * every matcher that also matches the empty string, since a series lacking
 * the label compares as ""); the answer is the intersection of the
 * positive sets minus the union of the negative ones (all series when no
 * matcher is positive).
 *
 * The same code runs on the head's in-memory index and on a block's index
 * through k_lindex_ops_t.
 */
#ifndef KEELD_METRICS_POSTINGS_H
#define KEELD_METRICS_POSTINGS_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "metrics/querier.h"

/* A growable id list.  Owns v; zero-initialized is empty. */
typedef struct k_plist {
  uint32_t *v;
  size_t n, cap;
} k_plist_t;

int k_plist_push(k_plist_t *l, uint32_t id);
int k_plist_reserve(k_plist_t *l, size_t n);
void k_plist_free(k_plist_t *l);

/* Set operations on sorted lists; out is overwritten and MUST NOT be one
 * of the inputs.  0 or KEEL_ENOMEM. */
int k_plist_intersect(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, k_plist_t *out);
int k_plist_subtract(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, k_plist_t *out);
/* Union of k lists (lists[i] has ns[i] ids). */
int k_plist_union(const uint32_t *const *lists, const size_t *ns, size_t k, k_plist_t *out);

/* ---- matchers ------------------------------------------------------------------ */

#define K_MATCHER_RE_MAX 1024 /* bytes of one regular expression */

/* One compiled matcher.  name and value are borrowed from the k_matcher_t
 * given to k_matchers_compile and MUST outlive the compiled form. */
typedef struct k_cmatcher {
  k_match_type_t type;
  const char *name, *value;
  int kind;          /* internal: literal, literal set, any, non-empty, regex */
  int empty_matches; /* the matcher accepts a series lacking the label */
  char **lits;       /* literal set (owned) */
  size_t nlits;
  regex_t re;
  int has_re;
} k_cmatcher_t;

typedef struct k_cmatchers {
  k_cmatcher_t *m;
  size_t n;
} k_cmatchers_t;

/* Compiles matchers (borrowed; they MUST outlive out).  RE/NRE values are
 * POSIX EREs matched against the whole value; back-references and
 * expressions over K_MATCHER_RE_MAX bytes or 1000 atoms once repetitions
 * are expanded are refused (KEEL_EINVAL naming the matcher), as are label
 * names that are not [a-zA-Z_][a-zA-Z0-9_]*.  out is owned by the caller
 * (k_matchers_free). */
int k_matchers_compile(const k_matcher_t *m, size_t nm, k_cmatchers_t *out, keel_err_t *e);
void k_matchers_free(k_cmatchers_t *c);
/* Does the value (NULL or "" for a missing label) satisfy the matcher? */
int k_cmatcher_match(const k_cmatcher_t *m, const char *value);

/* ---- selection over an index ----------------------------------------------------------- */

/* Called per value of a label name with that pair's postings; non-zero stops. */
typedef int (*k_value_fn)(void *ud, const char *value, const uint32_t *ids, size_t n);

typedef struct k_lindex_ops {
  /* Postings of name=value (borrowed until the index changes); *n 0 when absent. */
  void (*postings)(void *ix, const char *name, const char *value, const uint32_t **ids,
                   size_t *n);
  /* Calls fn for every value of name, in any order; returns fn's non-zero. */
  int (*each_value)(void *ix, const char *name, k_value_fn fn, void *ud);
  /* Every series id (borrowed). */
  void (*all)(void *ix, const uint32_t **ids, size_t *n);
} k_lindex_ops_t;

/* The ids of the series matching every compiled matcher, sorted, into out
 * (overwritten).  0 or KEEL_ENOMEM. */
int k_select_ids(const k_lindex_ops_t *ops, void *ix, const k_cmatchers_t *cm, k_plist_t *out);

/* 1 when name is a valid label name. */
int k_label_name_ok(const char *name);

#endif
