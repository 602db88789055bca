/* libFuzzer harness: scrape/expfmt.h, both formats.
 *
 * Input: one flags byte, then the body.  Flags bit 0: OpenMetrics (else
 * text 0.0.4); bit 1: tight limits taken from the next 3 bytes (so the
 * limit paths are reached).  Seeds start with '0' (text), '1'
 * (OpenMetrics), '2'/'3' (the same with tight limits).  Beyond not
 * crashing:
 *   - a failure is KEEL_EINVAL or KEEL_ETOOBIG with a one-line message that
 *     starts "line N: " (N >= 1), except the body size limit ("body: ");
 *     nothing was delivered;
 *   - delivered labels: names valid ([a-zA-Z_][a-zA-Z0-9_]*), sorted,
 *     unique, exactly one __name__ whose value is a valid metric name,
 *     values non-empty and valid UTF-8, within the limits;
 *   - values and timestamps parse back: "m <value> <t>" in the text format
 *     (with the value printed %.17g, or NaN/+Inf/-Inf) gives the same bits
 *     (any NaN for a NaN) and the same timestamp;
 *   - the callback and the set forms agree, and an OpenMetrics body that
 *     parses contains "# EOF". */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/err.h"
#include "scrape/expfmt.h"

#include "fuzz_check.h"

static int lname_ok(const char *s, int metric) {
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || (metric && *s == ':')))
    return 0;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
          (*s >= '0' && *s <= '9') || (metric && *s == ':')))
      return 0;
  return 1;
}

static int utf8_ok(const unsigned char *p) {
  while (*p) {
    size_t k = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
    if (!k || (k == 2 && *p < 0xc2) || (k == 4 && *p > 0xf4)) return 0;
    for (size_t i = 1; i < k; i++)
      if ((p[i] & 0xc0) != 0x80) return 0;
    if (k == 3 && ((*p == 0xe0 && p[1] < 0xa0) || (*p == 0xed && p[1] > 0x9f))) return 0;
    if (k == 4 && ((*p == 0xf0 && p[1] < 0x90) || (*p == 0xf4 && p[1] > 0x8f))) return 0;
    p += k;
  }
  return 1;
}

typedef struct st {
  const k_expfmt_limits_t *lim;
  size_t n;
} st_t;

static int back(void *ud, const k_label_t *l, size_t n, int64_t t, double v) {
  double *out = ud;
  (void)l;
  (void)n;
  CHECK(n == 1);
  out[0] = v;
  memcpy(&out[1], &t, sizeof t);
  return 0;
}

static void check_roundtrip(int64_t t, double v) {
  char line[128];
  double got[2] = {0, 0};
  int64_t gt;
  keel_err_t e = {0};
  int k;
  if (isnan(v)) k = snprintf(line, sizeof line, "m NaN");
  else if (isinf(v)) k = snprintf(line, sizeof line, "m %s", v > 0 ? "+Inf" : "-Inf");
  else k = snprintf(line, sizeof line, "m %.17g", v);
  if (t != K_EXPFMT_NO_TS) k += snprintf(line + k, sizeof line - (size_t)k, " %lld", (long long)t);
  if (k_expfmt_parse(line, (size_t)k, K_EXPFMT_TEXT, back, got, &e)) {
    fprintf(stderr, "'%s' does not parse back: %s\n", line, e.msg);
    CHECK(0);
  }
  memcpy(&gt, &got[1], sizeof gt);
  CHECK(gt == t);
  if (isnan(v)) CHECK(isnan(got[0]));
  else CHECK(!memcmp(&got[0], &v, sizeof v));
}

static int visit(void *ud, const k_label_t *l, size_t n, int64_t t, double v) {
  st_t *s = ud;
  size_t names = 0;
  CHECK(n >= 1 && n <= s->lim->max_labels);
  for (size_t i = 0; i < n; i++) {
    CHECK(l[i].name && l[i].value);
    CHECK(lname_ok(l[i].name, 0));
    if (strcmp(l[i].name, "__name__")) CHECK(strlen(l[i].name) <= s->lim->max_name_len);
    CHECK(l[i].value[0] != '\0');
    CHECK(utf8_ok((const unsigned char *)l[i].value));
    if (i) CHECK(strcmp(l[i - 1].name, l[i].name) < 0);
    if (!strcmp(l[i].name, "__name__")) {
      names++;
      CHECK(lname_ok(l[i].value, 1));
      CHECK(strlen(l[i].value) <= s->lim->max_name_len);
    } else {
      CHECK(strlen(l[i].value) <= s->lim->max_value_len);
    }
  }
  CHECK(names == 1);
  check_roundtrip(t, v);
  s->n++;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  k_expfmt_limits_t lim = {K_EXPFMT_MAX_BODY, K_EXPFMT_MAX_SAMPLES, K_EXPFMT_MAX_LABELS,
                           K_EXPFMT_MAX_NAME_LEN, K_EXPFMT_MAX_VALUE_LEN};
  k_expfmt_kind_t kind;
  k_expfmt_set_t set;
  keel_err_t e = {0}, e2 = {0};
  st_t st = {&lim, 0};
  char *text;
  size_t len;
  int rc, rc2, flags;

  if (size < 1) return 0;
  flags = data[0];
  kind = (flags & 1) ? K_EXPFMT_OPENMETRICS : K_EXPFMT_TEXT;
  data++, size--;
  if (flags & 2) {
    if (size < 3) return 0;
    lim.max_samples = 1 + data[0] % 16;
    lim.max_labels = 1 + data[1] % 8;
    lim.max_name_len = 1 + data[2] % 32;
    lim.max_value_len = 1 + data[2] / 8;
    lim.max_body = 64 + (size_t)data[0] * 4;
    data += 3, size -= 3;
  }
  len = size;
  text = malloc(len ? len : 1); /* exact size: ASan sees any overread */
  CHECK(text);
  if (len) memcpy(text, data, len);

  rc = k_expfmt_parse_set(text, len, kind, &lim, &set, &e);
  if (rc) {
    unsigned long line = 0;
    int used = 0;
    CHECK(rc == KEEL_EINVAL || rc == KEEL_ETOOBIG);
    CHECK(e.code == rc && e.msg[0] && !strchr(e.msg, '\n') && !strchr(e.msg, '\r'));
    CHECK(set.n == 0);
    if (sscanf(e.msg, "line %lu: %n", &line, &used) == 1 && used > 0) {
      CHECK(line >= 1);
    } else {
      CHECK(rc == KEEL_ETOOBIG && !strncmp(e.msg, "body: ", 6));
    }
  } else {
    CHECK(set.n <= lim.max_samples);
    for (size_t i = 0; i < set.n; i++)
      CHECK(visit(&st, set.v[i].labels, set.v[i].n, set.v[i].t_ms, set.v[i].v) == 0);
    if (kind == K_EXPFMT_OPENMETRICS) CHECK(len >= 5 && memmem(text, len, "# EOF", 5));
  }

  /* The callback form with default limits: same verdict when the limits
   * were the defaults. */
  if (!(flags & 2)) {
    st_t st2 = {&lim, 0};
    rc2 = k_expfmt_parse(text, len, kind, visit, &st2, &e2);
    CHECK(rc2 == rc);
    CHECK(!strcmp(e.msg, e2.msg));
    CHECK(st2.n == (rc ? 0 : set.n));
  }
  k_expfmt_set_free(&set);
  free(text);
  return 0;
}
