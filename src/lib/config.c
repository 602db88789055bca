#include "keel/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keel/buf.h"

#define CONFIG_LINE_MAX 4094  /* bytes per line, not counting the newline */
#define CONFIG_FILE_MAX (1 << 20)

static char *trim(char *s) {
  char *end;
  while (isspace((unsigned char)*s)) s++;
  end = s + strlen(s);
  while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
  return s;
}

int keel_config_parse_buf(const char *name, const char *buf, size_t len, keel_config_cb cb,
                          void *ud, keel_err_t *e) {
  char line[CONFIG_LINE_MAX + 1];
  const char *p = buf, *end = buf + len;
  int lineno = 0, rc;

  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((nl ? nl : end) - p);
    char *s, *eq, *key, *val;

    lineno++;
    if (n > CONFIG_LINE_MAX)
      return keel_err_set(e, KEEL_EINVAL, "%s:%d: line longer than %d bytes", name, lineno,
                          CONFIG_LINE_MAX);
    if (memchr(p, '\0', n))
      return keel_err_set(e, KEEL_EINVAL, "%s:%d: contains a NUL byte", name, lineno);
    memcpy(line, p, n);
    line[n] = '\0';
    p = nl ? nl + 1 : end;

    s = trim(line);
    if (!*s || *s == '#') continue;
    eq = strchr(s, '=');
    if (!eq) return keel_err_set(e, KEEL_EINVAL, "%s:%d: expected 'key = value'", name, lineno);
    *eq = '\0';
    key = trim(s);
    val = trim(eq + 1);
    if (!*key) return keel_err_set(e, KEEL_EINVAL, "%s:%d: empty key", name, lineno);
    if (e) e->msg[0] = '\0';
    rc = cb(ud, key, val, e);
    if (rc < 0) {
      if (e) {
        char inner[sizeof e->msg];
        snprintf(inner, sizeof inner, "%s", e->msg[0] ? e->msg : keel_strerror(rc));
        keel_err_set(e, rc, "%s:%d: %s", name, lineno, inner);
      }
      return rc;
    }
    /* only negative returns mean anything */
  }
  return 0;
}

int keel_config_load(const char *path, keel_config_cb cb, void *ud, keel_err_t *e) {
  char chunk[8192];
  keel_buf_t b;
  size_t n;
  int rc = 0;
  FILE *f = fopen(path, "r");

  if (!f) return keel_err_set(e, KEEL_EIO, "%s: %s", path, strerror(errno));
  keel_buf_init(&b, CONFIG_FILE_MAX);
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if ((rc = keel_buf_append(&b, chunk, n))) {
      rc = rc == KEEL_ETOOBIG
               ? keel_err_set(e, rc, "%s: larger than %d bytes", path, CONFIG_FILE_MAX)
               : keel_err_set(e, rc, "%s: out of memory", path);
      goto out;
    }
  }
  /* fread also stops on a read error (a directory, EIO): not an end of file. */
  if (ferror(f)) {
    rc = keel_err_set(e, KEEL_EIO, "%s: read error", path);
    goto out;
  }
  rc = keel_config_parse_buf(path, b.data ? b.data : "", b.len, cb, ud, e);
out:
  keel_buf_free(&b);
  fclose(f);
  return rc;
}
