/* keel/config.h — the config-file format shared by every program.
 *
 * One `key = value` per line; `#` starts a comment line; blank lines are
 * ignored; keys are the long flag names without dashes (`listen`,
 * `body-limit`), so every key is also a flag and vice versa.
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include <stddef.h>

#include "keel/err.h"

/* Called for each key/value; a negative return stops the load and is
 * returned (the callback should fill e).  Strings are valid only during
 * the call. */
typedef int (*keel_config_cb)(void *ud, const char *key, const char *value, keel_err_t *e);

/* Errors name the file and line.  Reads the whole file (at most 1 MiB) and
 * hands it to keel_config_parse_buf. */
int keel_config_load(const char *path, keel_config_cb cb, void *ud, keel_err_t *e);

/* Parses buf[0..len) (need not be NUL-terminated); errors are "name:line: ...".
 * Lines are at most 4094 bytes (not counting the newline); a NUL byte is an
 * error. */
int keel_config_parse_buf(const char *name, const char *buf, size_t len, keel_config_cb cb,
                          void *ud, keel_err_t *e);

#endif
