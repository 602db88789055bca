/* fuzz_http_url.c — ka_http_url_parse (src/agent/httpcheck.c), the parser
 * of an http job's URL: text from a runbook, which becomes a request line
 * and a Host header on the host.
 *
 * Invariants: an error has KEEL_EINVAL, a message and a zeroed result; a
 * success has a port in 1..65535, a non-empty host, a request target that
 * starts with '/', nothing in any part that could end a request line or a
 * header (control characters, spaces) or smuggle user info or a fragment,
 * and parsing the URL rebuilt from its parts gives the same parts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpcheck.h"

#include "fuzz_check.h"

static int clean(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '#') return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static ka_http_url_t u, again;
  static const ka_http_url_t zero;
  static char rebuilt[KA_HTTP_URL_MAX + 64];
  keel_err_t e = {0};
  int rc = ka_http_url_parse((const char *)data, size, &u, &e);
  size_t n;

  if (rc) {
    CHECK(rc == KEEL_EINVAL && e.code == rc && e.msg[0]);
    CHECK(!memcmp(&u, &zero, sizeof u));
    return 0;
  }
  CHECK(size <= KA_HTTP_URL_MAX);
  CHECK(u.port >= 1 && u.port <= 65535);
  CHECK(u.host[0] && strlen(u.host) <= KA_HTTP_HOST_MAX);
  CHECK(u.target[0] == '/' && strlen(u.target) <= size);
  CHECK(clean(u.host) && clean(u.authority) && clean(u.target));
  CHECK(!strchr(u.authority, '@') && !strpbrk(u.host, "/?[]@"));
  CHECK(strstr(u.authority, u.host) != NULL);
  n = (size_t)snprintf(rebuilt, sizeof rebuilt, "%s://%s%s", u.https ? "https" : "http",
                       u.authority, u.target);
  CHECK(n < sizeof rebuilt);
  CHECK(ka_http_url_parse(rebuilt, n, &again, &e) == 0);
  CHECK(again.https == u.https && again.port == u.port);
  CHECK(!strcmp(again.host, u.host) && !strcmp(again.authority, u.authority) &&
        !strcmp(again.target, u.target));
  return 0;
}
