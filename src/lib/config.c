#include "keel/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static char *trim(char *s) {
  char *end;
  while (isspace((unsigned char)*s)) s++;
  end = s + strlen(s);
  while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
  return s;
}

int keel_config_load(const char *path, keel_config_cb cb, void *ud, keel_err_t *e) {
  char line[4096];
  int lineno = 0, rc = 0;
  FILE *f = fopen(path, "r");

  if (!f) return keel_err_set(e, KEEL_EIO, "%s: %s", path, strerror(errno));
  while (fgets(line, sizeof line, f)) {
    char *s, *eq, *key, *val;
    lineno++;
    if (!strchr(line, '\n') && !feof(f)) {
      rc = keel_err_set(e, KEEL_EINVAL, "%s:%d: line longer than %zu bytes", path, lineno,
                        sizeof line - 2);
      goto out;
    }
    s = trim(line);
    if (!*s || *s == '#') continue;
    eq = strchr(s, '=');
    if (!eq) {
      rc = keel_err_set(e, KEEL_EINVAL, "%s:%d: expected 'key = value'", path, lineno);
      goto out;
    }
    *eq = '\0';
    key = trim(s);
    val = trim(eq + 1);
    if (!*key) {
      rc = keel_err_set(e, KEEL_EINVAL, "%s:%d: empty key", path, lineno);
      goto out;
    }
    if (e) e->msg[0] = '\0';
    rc = cb(ud, key, val, e);
    if (rc < 0) {
      char inner[sizeof e->msg];
      if (e) {
        snprintf(inner, sizeof inner, "%s", e->msg[0] ? e->msg : keel_strerror(rc));
        keel_err_set(e, rc, "%s:%d: %s", path, lineno, inner);
      }
      goto out;
    }
    rc = 0; /* only negative returns mean anything */
  }
  /* fgets also stops on a read error (a directory, EIO): not an end of file. */
  if (ferror(f)) rc = keel_err_set(e, KEEL_EIO, "%s: read error", path);
out:
  fclose(f);
  return rc;
}
