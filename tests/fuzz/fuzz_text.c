/* libFuzzer harness: libkeel's text parsers.
 *
 * The first byte picks the target, the rest is the input:
 *   0  keel_duration_parse     3  keel_config_parse_buf
 *   1  keel_time_parse         4  keel_utf8_sanitize
 *   2  keel_time_format (8 bytes of milliseconds, little-endian)
 * Beyond not crashing, each checks its round-trip or output invariants. */
#include <ctype.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/config.h"
#include "keel/err.h"
#include "keel/json.h"
#include "keel/time.h"


#include "fuzz_check.h"

/* The instants keel_time_format can write without clamping:
 * 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. */
#define TIME_MIN_MS INT64_C(-62167219200000)
#define TIME_MAX_MS INT64_C(253402300799999)

/* NUL-terminated copy of data[0..n). */
static char *cstr(const uint8_t *data, size_t n) {
  char *s = malloc(n + 1);
  CHECK(s);
  memcpy(s, data, n);
  s[n] = '\0';
  return s;
}

/* ---- durations ----------------------------------------------------------------- */

static void fuzz_duration(const uint8_t *data, size_t n) {
  char *s = cstr(data, n), again[32];
  int64_t ms = -1, back = -1;
  if (keel_duration_parse(s, &ms) == 0) {
    CHECK(ms > 0);
    snprintf(again, sizeof again, "%" PRId64 "ms", ms);
    CHECK(keel_duration_parse(again, &back) == 0);
    CHECK(back == ms);
  }
  free(s);
}

/* ---- RFC 3339 --------------------------------------------------------------------- */

/* Formatting ms gives 24 characters that parse back to ms (within the
 * writable range; outside it, one of the two clamp values). */
static void check_format(int64_t ms) {
  char out[KEEL_TIME_STRLEN];
  int64_t back = 0;
  memset(out, 'x', sizeof out);
  keel_time_format(out, ms);
  CHECK(out[KEEL_TIME_STRLEN - 1] == '\0');
  CHECK(strlen(out) == KEEL_TIME_STRLEN - 1);
  CHECK(out[23] == 'Z');
  CHECK(keel_time_parse(out, &back) == 0);
  if (ms >= TIME_MIN_MS && ms <= TIME_MAX_MS)
    CHECK(back == ms);
  else
    CHECK(back == (ms < 0 ? TIME_MIN_MS : TIME_MAX_MS));
}

static void fuzz_time_parse(const uint8_t *data, size_t n) {
  char *s = cstr(data, n), out[KEEL_TIME_STRLEN];
  int64_t ms = 0;
  if (keel_time_parse(s, &ms) == 0) {
    check_format(ms);
    /* The canonical form (T, three fraction digits, Z, no leap second) is
     * a fixed point. */
    if (strlen(s) == 24 && s[10] == 'T' && s[19] == '.' && s[23] == 'Z' &&
        memcmp(s + 17, "60", 2) != 0) {
      keel_time_format(out, ms);
      CHECK(!strcmp(out, s));
    }
  }
  free(s);
}

static void fuzz_time_format(const uint8_t *data, size_t n) {
  uint64_t u = 0;
  for (size_t i = 0; i < n && i < 8; i++) u |= (uint64_t)data[i] << (8 * i);
  check_format((int64_t)u);
}

/* ---- config ----------------------------------------------------------------------- */

typedef struct {
  int calls;
} cfg_state_t;

static int cfg_cb(void *ud, const char *key, const char *value, keel_err_t *e) {
  cfg_state_t *st = ud;
  size_t kl = strlen(key), vl = strlen(value);
  st->calls++;
  CHECK(kl > 0 && kl + vl <= 4094);
  CHECK(!isspace((unsigned char)key[0]) && !isspace((unsigned char)key[kl - 1]));
  CHECK(key[0] != '#');
  CHECK(!strchr(key, '=') && !strchr(key, '\n') && !strchr(value, '\n'));
  CHECK(vl == 0 || (!isspace((unsigned char)value[0]) && !isspace((unsigned char)value[vl - 1])));
  if (e) CHECK(e->msg[0] == '\0'); /* cleared before each call */
  if (!strcmp(key, "fail")) return keel_err_set(e, KEEL_EINVAL, "bad value '%s'", value);
  if (!strcmp(key, "fail-quiet")) return KEEL_ETOOBIG; /* no message: strerror is used */
  if (!strcmp(key, "positive")) return 1;              /* ignored */
  return 0;
}

static void fuzz_config(const uint8_t *data, size_t n) {
  cfg_state_t a = {0}, b = {0};
  keel_err_t e = {0};
  /* Exact size, no NUL terminator: the parser must honour len. */
  int rc = keel_config_parse_buf("fuzz.conf", (const char *)data, n, cfg_cb, &a, &e);
  int rc2 = keel_config_parse_buf("fuzz.conf", (const char *)data, n, cfg_cb, &b, NULL);
  CHECK(rc <= 0);
  CHECK(rc == rc2 && a.calls == b.calls);
  if (rc) {
    CHECK(e.code == rc);
    CHECK(!strncmp(e.msg, "fuzz.conf:", 10));
    CHECK(strlen(e.msg) > 10);
  }
}

/* ---- UTF-8 ---------------------------------------------------------------------- */

/* An independent validator: RFC 3629 (no overlongs, surrogates or > U+10FFFF). */
static int valid_utf8(const unsigned char *s) {
  while (*s) {
    uint32_t cp;
    int n;
    if (*s < 0x80) { s++; continue; }
    if ((*s & 0xe0) == 0xc0) { cp = *s & 0x1f; n = 1; }
    else if ((*s & 0xf0) == 0xe0) { cp = *s & 0x0f; n = 2; }
    else if ((*s & 0xf8) == 0xf0) { cp = *s & 0x07; n = 3; }
    else return 0;
    for (int i = 1; i <= n; i++) {
      if ((s[i] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return 0;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    s += n + 1;
  }
  return 1;
}

static int bad_control(unsigned char c) { return (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f; }

/* A C1 control (U+0080..U+009F) starts at s[i]; s is valid UTF-8. */
static int c1_at(const unsigned char *s, size_t i) {
  return s[i] == 0xc2 && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f;
}

static void fuzz_utf8(const uint8_t *data, size_t n) {
  char *s = cstr(data, n), *orig = cstr(data, n), *again;
  size_t len = strlen(s);
  int clean = valid_utf8((const unsigned char *)orig);

  for (size_t i = 0; i < len; i++)
    clean = clean && !bad_control((unsigned char)orig[i]) && !c1_at((unsigned char *)orig, i);
  CHECK(keel_utf8_sanitize(s) == s);
  CHECK(strlen(s) == len);
  CHECK(valid_utf8((const unsigned char *)s));
  for (size_t i = 0; i < len; i++) {
    CHECK(!bad_control((unsigned char)s[i]));
    CHECK(!c1_at((unsigned char *)s, i));
    CHECK(s[i] == orig[i] || s[i] == '?'); /* only ever replaces, byte for byte */
  }
  if (clean) CHECK(!strcmp(s, orig));
  again = cstr((const uint8_t *)s, len);
  keel_utf8_sanitize(again);
  CHECK(!strcmp(again, s)); /* idempotent */
  free(again);
  free(orig);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  switch (data[0] % 5) {
  case 0: fuzz_duration(data + 1, size - 1); break;
  case 1: fuzz_time_parse(data + 1, size - 1); break;
  case 2: fuzz_time_format(data + 1, size - 1); break;
  case 3: fuzz_config(data + 1, size - 1); break;
  case 4: fuzz_utf8(data + 1, size - 1); break;
  }
  return 0;
}
