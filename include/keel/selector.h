/* keel/selector.h — tag selectors and tag lists: the one grammar Keel uses
 * wherever objects are picked by tags (agents list `?target=`, command
 * `target`, later runbooks and policies).  docs/selectors.md is the user
 * description; this header is the contract.
 *
 * A selector is a comma-separated list of terms that must all hold:
 *   k=v   k!=v   k in (a,b)   k notin (a,b)   k   !k
 * The keys `id` and `hostname` match the object's id and hostname, never a
 * tag, and always exist.  Keys are [A-Za-z0-9][A-Za-z0-9._/-]{0,62}; values
 * are [A-Za-z0-9._:/@+-]{0,128} (values inside a set must be non-empty).
 * Whitespace (space, tab, CR, LF) may surround every token.  An empty or
 * all-whitespace selector matches everything.
 *
 * Every parse error is KEEL_EINVAL (KEEL_ENOMEM aside) with a one-line
 * message "selector: column N: ..." (tag lists: "tags: column N: ..."),
 * where N is the 1-based byte offset of the problem.
 */
#ifndef KEEL_SELECTOR_H
#define KEEL_SELECTOR_H

#include <jansson.h>
#include <stddef.h>

#include "keel/buf.h"
#include "keel/err.h"

#define KEEL_SELECTOR_MAX_LEN 4096  /* bytes of selector text (also tag lists) */
#define KEEL_SELECTOR_MAX_TERMS 64
#define KEEL_SELECTOR_MAX_VALUES 64 /* per `in` / `notin` set */
#define KEEL_TAG_KEY_MAX 63         /* bytes */
#define KEEL_TAG_VALUE_MAX 128      /* bytes */
#define KEEL_TAGS_MAX 64            /* tags in one keel_tags_parse list */

typedef struct keel_selector keel_selector_t; /* opaque, immutable after parse */

/* Parses text[0..len) (need not be NUL-terminated; a NUL byte inside is an
 * invalid character).  text may be NULL when len is 0.  On success *out owns
 * a new selector (free with keel_selector_free).  On error *out is NULL and
 * e (if not NULL) is set.  A parsed selector is immutable, so it MAY be
 * shared between threads for matching. */
int keel_selector_parse(const char *text, size_t len, keel_selector_t **out, keel_err_t *e);

/* NULL is a no-op. */
void keel_selector_free(keel_selector_t *s);

/* A tag lookup supplied by the caller: returns the value of key (borrowed;
 * MUST stay valid until the call returns), or NULL when absent.  It is
 * never asked for `id` or `hostname`. */
typedef const char *(*keel_tag_get_fn)(void *ud, const char *key);

/* 1 when the object matches every term, 0 otherwise.  id and hostname are
 * borrowed; NULL reads as "" (they always exist).  get may be NULL: the
 * object has no tags. */
int keel_selector_match(const keel_selector_t *s, const char *id, const char *hostname,
                        keel_tag_get_fn get, void *ud);

/* As keel_selector_match, with tags as a jansson object (borrowed, may be
 * NULL) of string values; a member that is not a string counts as absent. */
int keel_selector_match_json(const keel_selector_t *s, const char *id, const char *hostname,
                             const json_t *tags);

/* Appends the canonical text of s (MUST NOT be NULL) to out: terms in the
 * given order, no spaces except the one `in`/`notin` need after the key
 * (`role in(api,web)`), set values sorted bytewise and deduplicated.
 * Parsing it gives an equal selector, and it is never longer than the text
 * the selector was parsed from.  The empty selector appends nothing.  On
 * error (KEEL_ETOOBIG over out's cap, KEEL_ENOMEM) out is unchanged. */
int keel_selector_format(const keel_selector_t *s, keel_buf_t *out);

/* Parses a tag list "k=v,k2=v2" (CLI --tags, agent tags) with the same key
 * and value rules, whitespace, length limit, and at most KEEL_TAGS_MAX tags.
 * Every item needs '=' (the value may be empty).  `id` and `hostname` are
 * reserved (a selector could never reach them).  A duplicate key is an
 * error naming it.  Empty text gives an empty object.  On success *out is
 * a new object the caller owns (json_decref); on error *out is NULL. */
int keel_tags_parse(const char *text, size_t len, json_t **out, keel_err_t *e);

/* Checks one tag (NUL-terminated key and value, both borrowed): the key and
 * value rules above, and that the key is not reserved.  For the server to
 * validate tags that arrive in JSON bodies.  KEEL_EINVAL with a message
 * naming the key ("key 'x!': invalid character '!'"). */
int keel_tag_check(const char *key, const char *value, keel_err_t *e);

#endif
