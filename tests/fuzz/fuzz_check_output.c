/* fuzz_check_output.c — ka_check_parse (src/agent/watch_check.c), the reader
 * of a Nagios plugin's stdout: whatever a local plugin prints becomes the
 * `output` and `perfdata` of a check.result event (JSON, sent to keeld).
 *
 * Invariants, for the first KA_CHECK_OUTPUT_MAX - 1 bytes (what the agent
 * keeps): both results are NUL-terminated inside the buffer (or perfdata is
 * ""), valid UTF-8 that jansson takes, without a newline or other control
 * character but tab, not starting or ending with a space, tab or CR;
 * output holds no '|'; and they are what the first line said: output is
 * the text before its first '|', perfdata the text after it. */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "keel/metricbatch.h"
#include "watch.h"

#include "fuzz_check.h"

static void clean(const char *s) {
  size_t n = strlen(s);
  CHECK(keel_mb_utf8_ok(s, n));
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    CHECK(*p == '\t' || (*p >= 0x20 && *p != 0x7f));
  if (n) {
    CHECK(!strchr(" \t\r", s[0]) && !strchr(" \t\r", s[n - 1]));
  }
  {
    json_t *j = json_string(s);
    CHECK(j);
    json_decref(j);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char buf[KA_CHECK_OUTPUT_MAX], line[KA_CHECK_OUTPUT_MAX];
  const char *out, *perf, *bar;
  size_t n = size < sizeof buf - 1 ? size : sizeof buf - 1, ln;

  memcpy(buf, data, n);
  ka_check_parse(buf, n, &out, &perf);
  CHECK(out >= buf && out < buf + sizeof buf);
  CHECK(!*perf || (perf > out && perf < buf + sizeof buf));
  clean(out);
  clean(perf);
  CHECK(!strchr(out, '|'));
  /* The first line (up to a newline or NUL) of the input, split at '|'. */
  memcpy(line, data, n);
  line[n] = '\0';
  line[strcspn(line, "\n")] = '\0';
  ln = strlen(line);
  bar = strchr(line, '|');
  /* Trimming and replacing bytes never makes either longer. */
  CHECK(strlen(out) <= (bar ? (size_t)(bar - line) : ln));
  CHECK(strlen(perf) <= (bar ? ln - (size_t)(bar - line) - 1 : 0));
  return 0;
}
