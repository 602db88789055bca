/* keel/json.h — a thin layer over jansson.
 *
 * Parsing reports the line, column and byte position of the first error.
 * Decoding a request object is table-driven (keel_json_field_t): unknown
 * fields, wrong types and missing required fields are errors that name the
 * field.  The canonical form (sorted keys, compact) is what gets hashed.
 */
#ifndef KEEL_JSON_H
#define KEEL_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"

/* Parses exactly one JSON value from buf[0..len).  On success *out is a new
 * reference the caller owns.  Max nesting depth is jansson's (2048). */
int keel_json_parse(const char *buf, size_t len, json_t **out, keel_err_t *e);

/* Canonical text (JSON_SORT_KEYS | JSON_COMPACT); caller frees. NULL on OOM. */
char *keel_json_canonical(const json_t *v);

typedef enum {
  KEEL_JSON_STRING,
  KEEL_JSON_INT,
  KEEL_JSON_BOOL,
  KEEL_JSON_OBJECT,
  KEEL_JSON_ARRAY,
} keel_json_type_t;

typedef struct keel_json_field {
  const char *name;
  keel_json_type_t type;
  int required;
  size_t max_len; /* strings: max bytes (0 = 4096); arrays: max items */
} keel_json_field_t;

/* Checks that obj is an object whose members all appear in fields (a table
 * ended by {NULL}), with the right types, lengths, and every required one
 * present.  Strings must be valid UTF-8 without NUL (jansson guarantees
 * UTF-8; NUL is rejected here).  Changes nothing. */
int keel_json_check(const json_t *obj, const keel_json_field_t *fields, keel_err_t *e);

/* keel_json_parse then keel_json_check: a request body into a checked
 * object.  On success *out is a new reference the caller owns; on error
 * *out is NULL. */
int keel_json_decode(const char *buf, size_t len, const keel_json_field_t *fields, json_t **out,
                     keel_err_t *e);

/* An instant as the API shows it: an RFC 3339 string, or null for ms <= 0
 * (never set).  New reference. */
json_t *keel_json_time(int64_t ms);

/* The members of objects a and b whose values differ or that only one of
 * them has, as a new array of key strings (a's order, then b's extras);
 * for "what changed" reports. */
json_t *keel_json_changed_keys(const json_t *a, const json_t *b);

/* Rewrites s in place so it is valid UTF-8 (each invalid byte becomes '?')
 * and holds no control characters other than tab/newline (C0, DEL and the
 * C1 range U+0080..U+009F become '?' per byte); returns s.  For
 * text that came from a client and is echoed into JSON or the audit trail. */
char *keel_utf8_sanitize(char *s);

/* Borrowed string member or NULL when absent / not a string. */
const char *keel_json_str(const json_t *obj, const char *key);

#endif
