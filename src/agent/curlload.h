/* curlload.h — libcurl, loaded with dlopen.  Internal to src/agent, for
 * conn_curl.c (the agent's https:// connection to keeld, multi interface)
 * and httpcheck.c (an https:// check, easy interface, in a child).
 *
 * libcurl is never linked: that would map it, GnuTLS and a dozen other
 * libraries into every agent (about 8 MiB of RSS), which a plain-http agent
 * has no use for.  Only the header is used at build time (types and
 * constants); every call goes through a ka_curl_t.  Include this instead of
 * <curl/curl.h>: the two macros below MUST come before it. */
#ifndef KA_CURLLOAD_H
#define KA_CURLLOAD_H

#define CURL_DISABLE_TYPECHECK   /* its macros wrap the real names, which are never called */
#define CURL_DISABLE_DEPRECATION /* CURLOPT_PROTOCOLS, the fallback for libcurl < 7.85 */
#include <curl/curl.h>

#include "keel/err.h"

/* The functions either user calls (the union of both; libcurl 7.66 has all
 * of them).  Filled by ka_curl_load, then read-only. */
typedef struct ka_curl {
  void *lib; /* the dlopen handle; never closed (curlload.c says why) */
  CURLcode (*global_init)(long);
  void (*global_cleanup)(void);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *);
  CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*easy_perform)(CURL *);
  CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
  const char *(*easy_strerror)(CURLcode);
  struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
  void (*slist_free_all)(struct curl_slist *);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_cleanup)(CURLM *);
  CURLMcode (*multi_add_handle)(CURLM *, CURL *);
  CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
  CURLMcode (*multi_poll)(CURLM *, struct curl_waitfd[], unsigned, int, int *);
  CURLMcode (*multi_perform)(CURLM *, int *);
  CURLMsg *(*multi_info_read)(CURLM *, int *);
} ka_curl_t;

/* Loads libcurl-gnutls.so.4, else libcurl.so.4 (Debian's two builds of
 * libcurl 4), and fills *k.  Keeps no state of its own: each caller owns
 * its table, and loading again is cheap (the dynamic loader maps the
 * library once and counts references).  Does not call curl_global_init:
 * when and how long curl is set up is the caller's business.  KEEL_EIO,
 * with a message naming the libraries tried and the package to install, or
 * the function the loaded one lacks; *k is then zeroed. */
int ka_curl_load(ka_curl_t *k, keel_err_t *e);

#endif
