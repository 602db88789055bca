/* keel/template.h — the one interpolation syntax of Keel documents.
 *
 *   {{ params.service }}   {{ steps.check.stdout }}   {{ target.hostname }}
 *
 * Pure text substitution: a template is literal text with `{{ NAME }}`
 * references; a NAME is dot-separated identifiers ([A-Za-z_][A-Za-z0-9_-]*),
 * the first of which may start with one '$' (`{{ $labels.instance }}`,
 * `{{ $value }}`: alert templates, as Prometheus spells them), looked up by
 * the caller.  Nothing is evaluated: no expressions, no
 * filters, no nesting; `{{` inside a value is never expanded again.  A
 * literal "{{" is written "{{ '{{' }}".  Whitespace inside the braces is
 * optional.
 *
 * Safety is the caller's choice of mode, per place a value goes:
 *   KEEL_TMPL_RAW    the value as is (an argv element: each element is
 *                    rendered on its own, so a value can never split into
 *                    two arguments or reach a shell);
 *   KEEL_TMPL_SHELL  the value single-quoted for /bin/sh ('...' with ' as
 *                    '\'' ), so it is one word and never code.
 */
#ifndef KEEL_TEMPLATE_H
#define KEEL_TEMPLATE_H

#include <stddef.h>

#include "keel/buf.h"
#include "keel/err.h"

typedef struct keel_tmpl keel_tmpl_t; /* parsed, immutable */

typedef enum { KEEL_TMPL_RAW = 0, KEEL_TMPL_SHELL = 1 } keel_tmpl_mode_t;

/* Parses text[0..len).  Errors (KEEL_EINVAL) name the 1-based column and
 * what was wrong: "column 7: unterminated '{{'", "column 3: expected a
 * name like params.x". Max 64 KiB of text, 256 references, names of 128
 * bytes and 8 parts.  *out owned by the caller (keel_tmpl_free). */
int keel_tmpl_parse(const char *text, size_t len, keel_tmpl_t **out, keel_err_t *e);
void keel_tmpl_free(keel_tmpl_t *t);

/* Number of references and the i-th one's name ("params.service"); for
 * validators that check names before anything runs. Borrowed from t. */
size_t keel_tmpl_nrefs(const keel_tmpl_t *t);
const char *keel_tmpl_ref(const keel_tmpl_t *t, size_t i);

/* Looks a name up: 0 with *value (borrowed, NUL-terminated, valid until
 * render returns) and *len set; KEEL_ENOENT when the name is unknown.  A
 * lookup that wants a missing name to read as empty (alert templates: a
 * label the series lacks) returns 0 with *value NULL and *len 0. */
typedef int (*keel_tmpl_lookup_fn)(void *ud, const char *name, const char **value, size_t *len);

/* Appends the rendered text to out.  Unknown names are KEEL_EINVAL naming
 * them; a value with a NUL byte is KEEL_EINVAL (it could not be an argv
 * element or a shell word).  On error out is left as it was. */
int keel_tmpl_render(const keel_tmpl_t *t, keel_tmpl_mode_t mode, keel_tmpl_lookup_fn lookup,
                     void *ud, keel_buf_t *out, keel_err_t *e);

/* Parse + render in one call, for one-off strings. */
int keel_tmpl_expand(const char *text, size_t len, keel_tmpl_mode_t mode,
                     keel_tmpl_lookup_fn lookup, void *ud, keel_buf_t *out, keel_err_t *e);

#endif
