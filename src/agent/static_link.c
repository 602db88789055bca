/* static_link.c — the statically linked agent's NSS set-up and the path
 * of its dynamically linked sibling (static_link.h says why). */
#include "static_link.h"

#include <errno.h>
#include <limits.h>
#include <nss.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int ka_static_nss(keel_err_t *e) {
  /* Everything the agent looks up: run-as users and their groups
   * (exec.c), server and check host names (getaddrinfo; services in case
   * a port is ever given by name).  `files` and `dns` are compiled into
   * libc since glibc 2.34; any other service would be dlopen'd. */
  static const struct {
    const char *db, *services;
  } dbs[] = {
      {"passwd", "files"},     {"group", "files"},        {"initgroups", "files"},
      {"hosts", "files dns"}, {"services", "files"},
  };
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++)
    if (__nss_configure_lookup(dbs[i].db, dbs[i].services))
      return keel_err_set(e, KEEL_EIO, "cannot restrict NSS lookups of %s to '%s'", dbs[i].db,
                          dbs[i].services);
  return 0;
}

int ka_dynamic_agent(char *out, size_t outsz, const char *what, keel_err_t *e) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  char *slash;
  int len;

  if (n <= 0) return keel_err_set(e, KEEL_ENOENT, "/proc/self/exe: %s", strerror(errno));
  self[n] = '\0';
  /* A replaced binary reads "/usr/bin/keel-agent (deleted)": the suffix is
   * in the name we cut off, and the sibling is the new one. */
  if (!(slash = strrchr(self, '/')))
    return keel_err_set(e, KEEL_ENOENT, "/proc/self/exe: '%s' is not a path", self);
  *slash = '\0';
  len = snprintf(out, outsz, "%s/" KA_DYNAMIC_AGENT, self);
  if (len < 0 || (size_t)len >= outsz)
    return keel_err_set(e, KEEL_ETOOBIG, "%s/" KA_DYNAMIC_AGENT ": path too long", self);
  if (access(out, X_OK))
    return keel_err_set(e, KEEL_ENOENT,
                        "%s: %s; this statically linked keel-agent needs it for %s "
                        "(or build with -DKEEL_AGENT_STATIC=OFF)",
                        out, strerror(errno), what);
  return 0;
}
