/* automation/cond.h — what an automation rule looks at in an event
 * (docs/automation.md, "Conditions" and "Parameters"): a field lookup over
 * the event, and the small comparison grammar of `on.conditions`.
 *
 * The event view.  Rules see an event as one JSON object
 *   {"id", "type", "source", "subject", "cause", "time" (RFC 3339), "data"}
 * and name its fields with dotted paths: `subject`, `data.severity`,
 * `data.labels.service`; `labels.X` is short for `data.labels.X`.  Parts
 * are [A-Za-z_][A-Za-z0-9_-]* (the template name rule), at most 8.
 *
 * A condition is one comparison:
 *   PATH OP VALUE            OP: == != < <= > >=
 *   PATH in [V, V, ...]      PATH not in [V, V, ...]
 * VALUE is a bare word of [A-Za-z0-9._:/@+-] or a double-quoted string
 * ("..." with \" and \\ as the only escapes; no control characters).
 * Whitespace (space, tab) may surround every token.  At most 1024 bytes,
 * 64 values in a list, 256 bytes a value.
 *
 * Meaning.  == != in / not in compare text: the field's string, its
 * number in shortest decimal (so `data.value == 90` holds for 90 and
 * 90.0 when the literal is a number, compared numerically), or true /
 * false.  < <= > >= compare numbers: the field (a number, or a string
 * that is one) and the literal both parse as finite decimals, else the
 * condition is false.  A field that is missing, null, an object or a list
 * makes every comparison false except != and not in, which hold.
 *
 * Pure: nothing here touches keeld's state.  Errors (KEEL_EINVAL) read
 * "column N: what", N the 1-based byte offset.
 */
#ifndef KEELD_AUTOMATION_COND_H
#define KEELD_AUTOMATION_COND_H

#include <jansson.h>
#include <stddef.h>

#include "keel/buf.h"
#include "keel/err.h"

#define K_COND_MAX_LEN 1024
#define K_COND_MAX_VALUES 64
#define K_COND_VALUE_MAX 256
#define K_COND_PATH_MAX 128
#define K_COND_PATH_PARTS 8

typedef struct k_cond k_cond_t; /* parsed, immutable */

/* Parses text[0..len).  *out owned by the caller (k_cond_free). */
int k_cond_parse(const char *text, size_t len, k_cond_t **out, keel_err_t *e);
void k_cond_free(k_cond_t *c);

/* The canonical text: "PATH OP VALUE", "PATH in [A, B]"; values quoted
 * only when they are not bare words.  Parsing it gives the same
 * condition.  KEEL_ETOOBIG / KEEL_ENOMEM from out. */
int k_cond_format(const k_cond_t *c, keel_buf_t *out);

/* 1 when the condition holds for the event view (borrowed), 0 otherwise. */
int k_cond_eval(const k_cond_t *c, const json_t *view);

/* 1 when path[0..len) is a field path as above (for validators). */
int k_cond_path_ok(const char *path, size_t len);

/* The field at path (NUL-terminated, "labels.X" as data.labels.X) in the
 * event view: borrowed from view, NULL when absent.  The path is not
 * checked. */
const json_t *k_cond_field(const json_t *view, const char *path);

/* A field as the text comparisons and templates use: strings as they are,
 * integers in decimal, reals in shortest round-trip decimal, true / false.
 * NULL (nothing written) for null, objects, lists and NULL. */
const char *k_cond_text(const json_t *v, char *buf, size_t n);

#endif
