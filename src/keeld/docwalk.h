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
#include <stdint.h>

#include "keel/buf.h"
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

/* ---- scalar members (shared by the validators) ---- */

/* What control characters a text may hold. */
enum { K_WALK_LINE = 0, /* none: one line */
       K_WALK_LINES,    /* tab, LF, CR */
       K_WALK_ANY };    /* all but NUL (bodies, argv, values: data) */

/* s is a string of at most max bytes holding no NUL and only the control
 * characters `what` allows.  Caller has pushed. */
int k_walk_text(k_walk_t *W, const json_t *s, size_t max, int what);
/* 1 when s is the string want (no NUL inside). */
int k_walk_is(const json_t *s, const char *want);
/* s is one of the NULL-ended vals; the message lists them.  Caller has pushed. */
int k_walk_enum(k_walk_t *W, const json_t *s, const char *const *vals);
/* Optional or required string member key of obj, checked by k_walk_text:
 * *out borrowed from obj, NULL when absent and optional. */
int k_walk_get_text(k_walk_t *W, const json_t *obj, const char *key, int required, size_t max,
                    int what, json_t **out);
/* An integer member in [min, max]; def when absent. */
int k_walk_get_int(k_walk_t *W, const json_t *obj, const char *key, json_int_t min,
                   json_int_t max, json_int_t def, json_int_t *out);

typedef struct k_walk_range {
  int64_t min, max;
  const char *lo, *hi; /* as durations, for messages */
} k_walk_range_t;

/* A duration given as key (text: "30s") or key_ms (integer milliseconds),
 * not both, within r; def when neither (and not required).  When r->min
 * is 0, "0", "0s", "0m" ... are 0. */
int k_walk_get_duration(k_walk_t *W, const json_t *obj, const char *key, const k_walk_range_t *r,
                        int required, int64_t def, int64_t *ms);

/* Optional or required member key of obj holding an object name as
 * runbooks, teams, applications and rules have them
 * ([a-z0-9][a-z0-9._-]{0,62}, k_runbook_name_ok): *out borrowed, NULL
 * when absent and optional. */
int k_walk_get_name(k_walk_t *W, const json_t *obj, const char *key, int required, json_t **out);

typedef struct k_org k_org_t;
/* The owner of a document owned by an application or a team (alert and
 * automation rules): exactly one of the members "application" and "team",
 * a name; when org is not NULL and an organization is applied, one of its
 * objects ("no application 'x' in the organization").  *app and *team are
 * borrowed from doc, the one not given NULL. */
int k_walk_owner(k_walk_t *W, const json_t *doc, const k_org_t *org, json_t **app, json_t **team);

/* Appends item to list (the copy a validator builds) unless an equal item
 * is there already: then "'ITEM' listed twice".  Caller has pushed the
 * item's index. */
int k_walk_add_unique(k_walk_t *W, json_t *list, json_t *item);

/* s (a string checked by k_walk_text) is a selector (keel/selector.h),
 * else "invalid selector: column N: ..." (out of memory: k_walk_oom).
 * canon, when not NULL, gets the selector's canonical text appended.
 * Caller has pushed. */
int k_walk_selector(k_walk_t *W, const json_t *s, keel_buf_t *canon);

/* The policy path of a document owned by "application" or "team" (one of
 * the two members set, as alert and automation rules have them):
 * "app/APP/<what>/NAME" or "team/TEAM/<what>/NAME" ("_" for what is
 * missing). */
void k_walk_owner_path(const json_t *doc, const char *what, char *out, size_t n);

/* keel_yaml_load, then validate(name, doc, pos, out, e): the whole load
 * of a document validator. */
typedef int (*k_walk_validate_fn)(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                                  json_t **out, keel_err_t *e);
int k_walk_load(const char *name, const char *buf, size_t len, k_walk_validate_fn validate,
                json_t **out, keel_err_t *e);

#endif
