/* keel/yaml.h — YAML (or JSON) text into jansson, with source positions.
 *
 * Loading follows the YAML 1.2 core schema so a document means the same
 * thing to every YAML 1.2 tool: plain scalars null|Null|NULL|~|(empty) are
 * null, true/false (True, TRUE, ...) booleans, decimal / 0x / 0o integers
 * integers (int64; outside it an error, never a silent float), core-schema
 * floats reals (.inf and .nan are errors: JSON has no such numbers),
 * everything else a string.  Quoted and block scalars are always strings.
 * The tags !!str !!int !!bool !!null !!float !!map !!seq and the
 * non-specific "!" are honoured; any other tag is an error naming it.
 * Mapping keys must be scalars and become strings (their text as written);
 * a duplicate key is an error naming both lines.  There is no merge key:
 * "<<" is an ordinary key.
 *
 * Anchors and aliases work, but an alias is expanded into a copy, so the
 * expanded document is capped (KEEL_YAML_MAX_NODES nodes, KEEL_YAML_MAX_DEPTH
 * nested collections) against "billion laughs".  An alias must name an
 * anchor whose node is complete (no recursive documents).
 *
 * Every error is one line "NAME:LINE:COL: what was wrong" (1-based line and
 * column, columns in characters); libfyaml's diagnostics are collected,
 * never printed.
 */
#ifndef KEEL_YAML_H
#define KEEL_YAML_H

#include <jansson.h>
#include <stddef.h>

#include "keel/err.h"

#define KEEL_YAML_MAX_INPUT (4u << 20) /* bytes; over it KEEL_ETOOBIG */
#define KEEL_YAML_MAX_NODES 100000     /* after alias expansion */
#define KEEL_YAML_MAX_DEPTH 64         /* nested mappings/sequences */

typedef struct keel_yaml_pos keel_yaml_pos_t; /* JSON pointer -> line/col map; owned by caller */

/* Parses exactly one YAML 1.2 document from buf[0..len) (JSON is YAML, so
 * JSON input works too; buf need not be NUL-terminated and must be valid
 * UTF-8).  name (borrowed; NULL reads as "<input>") is used in messages
 * ("org.yaml:12:5: ...").  On success *out is a new reference the caller
 * owns and, when pos is not NULL, *pos a new map the caller frees with
 * keel_yaml_pos_free.  On error both are NULL and e says
 * "name:line:col: what was wrong": KEEL_EINVAL, KEEL_ETOOBIG (input over
 * KEEL_YAML_MAX_INPUT, or the node/depth caps), KEEL_ENOMEM. */
int keel_yaml_load(const char *name, const char *buf, size_t len, json_t **out,
                   keel_yaml_pos_t **pos, keel_err_t *e);

/* Line/col (1-based) of the node at JSON pointer ptr (RFC 6901: "" is the
 * root, "/teams/1/kind", ~0 and ~1 escapes); the nearest ancestor's when
 * that node does not exist (e.g. a missing required key -> its parent
 * mapping).  A mapping value's position is the value's (an empty value's is
 * its key's); a node reached through an alias has the alias's position.
 * Returns 0, or KEEL_ENOENT when p is NULL or ptr is not a JSON pointer. */
int keel_yaml_pos_lookup(const keel_yaml_pos_t *p, const char *ptr, int *line, int *col);

/* NULL is a no-op. */
void keel_yaml_pos_free(keel_yaml_pos_t *p);

#endif
