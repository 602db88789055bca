/* docwalk.h — walking a parsed document (YAML or JSON, keel/yaml.h) while
 * validating it, so that every error names where it is:
 * "org.yaml:12:5: teams[1].kind: expected one of ...".
 *
 * A k_walk_t tracks the current JSON pointer (for the line:column lookup)
 * and the dotted path shown to people; validators push a key or index
 * before checking a member and pop it after.  Shared by the document
 * validators (org/doc.c, runbook/doc.c): one place for the error form.
 */
#ifndef KEELD_DOCWALK_H
#define KEELD_DOCWALK_H

#include <jansson.h>
#include <stddef.h>

#include "keel/err.h"
#include "keel/yaml.h"

typedef struct k_walk {
  const char *name;           /* document name; NULL: messages have no "name:line:col" */
  const keel_yaml_pos_t *pos; /* may be NULL: no line:col */
  keel_err_t *e;
  char ptr[2048];             /* JSON pointer of the current node */
  size_t plen;
  char dot[1024];             /* the same as "teams[1].kind" */
  size_t dlen;
} k_walk_t;

typedef struct k_walk_mark {
  size_t plen, dlen;
} k_walk_mark_t;

/* KEEL_EINVAL with "name:line:col: dotted.path: what". */
int k_walk_err(k_walk_t *W, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* KEEL_ENOMEM with "name: out of memory". */
int k_walk_oom(k_walk_t *W);
/* Text from the document fit to quote in a one-line message: at most 64
 * bytes, control characters as '?'.  Returns buf. */
const char *k_walk_quote(char buf[80], const char *s, size_t n);
const char *k_walk_quote_json(char buf[80], const json_t *s);

/* key[0..klen) may hold any byte (an unknown key from the document). */
k_walk_mark_t k_walk_push_keyn(k_walk_t *W, const char *key, size_t klen);
k_walk_mark_t k_walk_push_key(k_walk_t *W, const char *key);
k_walk_mark_t k_walk_push_idx(k_walk_t *W, size_t i);
void k_walk_pop(k_walk_t *W, k_walk_mark_t m);

/* obj MUST be a mapping whose keys are all in allowed (NULL-ended):
 * "unknown field" names the first other one. */
int k_walk_check_map(k_walk_t *W, const json_t *obj, const char *const *allowed);
/* Member key of obj: NULL when absent or null. */
json_t *k_walk_member(const json_t *obj, const char *key);
/* "required field is missing", at key. */
int k_walk_missing(k_walk_t *W, const char *key);

/* The head every document shares: doc is a mapping (else "expected a
 * mapping (kind: KIND)"), all its keys are in allowed, and `kind` is
 * present and equal to kind. */
int k_walk_head(k_walk_t *W, const json_t *doc, const char *const *allowed, const char *kind);

/* keel_yaml_load, then validate(name, doc, pos, out, e): the whole load
 * of a document validator. */
typedef int (*k_walk_validate_fn)(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                                  json_t **out, keel_err_t *e);
int k_walk_load(const char *name, const char *buf, size_t len, k_walk_validate_fn validate,
                json_t **out, keel_err_t *e);

#endif
