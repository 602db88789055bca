/* keel/config.h — the config-file format shared by every program.
 *
 * One `key = value` per line; `#` starts a comment line; blank lines are
 * ignored; keys are the long flag names without dashes (`listen`,
 * `body-limit`), so every key is also a flag and vice versa.
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include "keel/err.h"

/* Called for each key/value; a negative return stops the load and is
 * returned (the callback should fill e).  Strings are valid only during
 * the call. */
typedef int (*keel_config_cb)(void *ud, const char *key, const char *value, keel_err_t *e);

/* Errors name the file and line. */
int keel_config_load(const char *path, keel_config_cb cb, void *ud, keel_err_t *e);

#endif
