/* curlload.c — libcurl, loaded with dlopen (curlload.h). */
#include "curlload.h"

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

static const struct {
  const char *name;
  size_t off;
} curl_syms[] = {
#define SYM(field, name) {name, offsetof(ka_curl_t, field)}
    SYM(global_init, "curl_global_init"),
    SYM(global_cleanup, "curl_global_cleanup"),
    SYM(easy_init, "curl_easy_init"),
    SYM(easy_cleanup, "curl_easy_cleanup"),
    SYM(easy_setopt, "curl_easy_setopt"),
    SYM(easy_perform, "curl_easy_perform"),
    SYM(easy_getinfo, "curl_easy_getinfo"),
    SYM(easy_strerror, "curl_easy_strerror"),
    SYM(slist_append, "curl_slist_append"),
    SYM(slist_free_all, "curl_slist_free_all"),
    SYM(multi_init, "curl_multi_init"),
    SYM(multi_cleanup, "curl_multi_cleanup"),
    SYM(multi_add_handle, "curl_multi_add_handle"),
    SYM(multi_remove_handle, "curl_multi_remove_handle"),
    SYM(multi_poll, "curl_multi_poll"),
    SYM(multi_perform, "curl_multi_perform"),
    SYM(multi_info_read, "curl_multi_info_read"),
#undef SYM
};

#ifdef KA_STATIC
/* A static program that dlopens libcurl gets a second libc whose
 * thread-local variables are unreachable: GnuTLS crashes in the first
 * handshake (static_link.h).  Callers route https to keel-agent-dynamic;
 * this is the backstop, and keeps dlopen out of the static binary. */
int ka_curl_load(ka_curl_t *k, keel_err_t *e) {
  (void)curl_syms;
  memset(k, 0, sizeof *k);
  return keel_err_set(e, KEEL_EIO,
                      "this keel-agent is statically linked and cannot load libcurl: https runs "
                      "in keel-agent-dynamic");
}
#else
/* The library is never unloaded once loaded whole: unloading GnuTLS is
 * asking for trouble with its atexit handlers, and the agent keeps using
 * it (a check's child exits right after).  One that lacks a function is
 * let go at once: nothing of it was used. */
int ka_curl_load(ka_curl_t *k, keel_err_t *e) {
  static const char *const names[] = {"libcurl-gnutls.so.4", "libcurl.so.4"};
  const char *why = NULL;
  void *lib = NULL;
  int rc = 0;

  memset(k, 0, sizeof *k);
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) {
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) why = dlerror();
  }
  if (!lib) {
    rc = keel_err_set(e, KEEL_EIO,
                      "https needs libcurl: install libcurl3-gnutls (tried %s and %s: %s)",
                      names[0], names[1], why ? why : "not found");
    goto out;
  }
  for (size_t i = 0; i < sizeof curl_syms / sizeof curl_syms[0]; i++) {
    void *s = dlsym(lib, curl_syms[i].name);
    if (!s) {
      rc = keel_err_set(e, KEEL_EIO, "https needs libcurl 7.66 or later: the loaded one has no %s",
                        curl_syms[i].name);
      dlclose(lib);
      goto out;
    }
    /* POSIX: a data pointer from dlsym converts to a function pointer. */
    memcpy((char *)k + curl_syms[i].off, &s, sizeof s);
  }
  k->lib = lib;
out:
  if (rc) memset(k, 0, sizeof *k);
  return rc;
}
#endif
