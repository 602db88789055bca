/* static_link.h — what differs when keel-agent is statically linked
 * (KEEL_AGENT_STATIC, src/agent/CMakeLists.txt; docs/architecture.md,
 * "keel-agent").
 *
 * The static agent is the same sources compiled once more with KA_STATIC
 * defined.  A static glibc program cannot safely load a shared library:
 * the library brings a second libc.so.6 and ld.so into the process, and
 * its thread-local variables are resolved by that second ld.so, which
 * knows nothing of them (__tls_get_addr returns NULL).  Measured on Debian
 * 12: libcurl-gnutls segfaults in gnutls_rnd on the first TLS handshake,
 * and glibc's NSS, loading libnss_systemd.so.2 for a user not in
 * /etc/passwd, segfaults in _nss_systemd_is_blocked.  So, with KA_STATIC:
 *
 *   - NSS is restricted to the lookups built into glibc (ka_static_nss):
 *     users and groups from /etc/passwd and /etc/group, host names from
 *     /etc/hosts and DNS.  Nothing is ever dlopen'd for a lookup.
 *   - libcurl is never loaded (curlload.c refuses).  https runs in
 *     keel-agent-dynamic, the same agent dynamically linked, installed
 *     next to keel-agent: main.c execs it in place of itself for an
 *     https:// server, and exec.c execs it (`--http-check`, httpcheck.h)
 *     as the child of an https runbook check.
 */
#ifndef KA_STATIC_LINK_H
#define KA_STATIC_LINK_H

#include <stddef.h>

#include "keel/err.h"

#define KA_DYNAMIC_AGENT "keel-agent-dynamic"

/* 1 in the static agent's build, else 0: for plain `if`s, so that both
 * branches are compiled (and checked) in every build. */
#ifdef KA_STATIC
#define KA_STATIC_LINKED 1
#else
#define KA_STATIC_LINKED 0
#endif

/* Makes glibc's NSS use only its built-in `files` and `dns` services for
 * the databases the agent reads (passwd, group, initgroups, hosts,
 * services), whatever /etc/nsswitch.conf says, and for good (glibc then
 * stops re-reading the file).  MUST be called before the first lookup.
 * KEEL_EIO naming the database glibc refused. */
int ka_static_nss(keel_err_t *e);

/* The path of keel-agent-dynamic in the directory of this program's
 * executable (/proc/self/exe), checked to be executable.  KEEL_ENOENT
 * when it is not there (or not executable), with a message naming the
 * path, what needs it (`what`, e.g. "https:// servers") and the other
 * remedy; KEEL_ETOOBIG when the path does not fit outsz. */
int ka_dynamic_agent(char *out, size_t outsz, const char *what, keel_err_t *e);

#endif
