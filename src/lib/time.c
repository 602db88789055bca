#define _GNU_SOURCE
#include "keel/time.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/err.h"

int64_t keel_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t keel_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t keel_mono_ms(void) { return keel_mono_ns() / 1000000; }

void keel_time_format(char out[KEEL_TIME_STRLEN], int64_t ms) {
  time_t s = (time_t)(ms / 1000);
  int frac = (int)(ms % 1000);
  struct tm tm;

  if (frac < 0) {
    frac += 1000;
    s -= 1;
  }
  char tmp[64];

  gmtime_r(&s, &tm);
  /* Years outside 0..9999 cannot be written in 24 characters: clamp. */
  if (tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
    memcpy(out, tm.tm_year < 0 ? "0000-01-01T00:00:00.000Z" : "9999-12-31T23:59:59.999Z",
           KEEL_TIME_STRLEN);
    return;
  }
  snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  memcpy(out, tmp, KEEL_TIME_STRLEN - 1);
  out[KEEL_TIME_STRLEN - 1] = '\0';
}

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

static int days_in_month(int y, int m) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : days[m - 1];
}

int keel_time_parse(const char *s, int64_t *ms) {
  struct tm tm = {0};
  int y, mo, d, h, mi, sec, frac = 0, off = 0;
  const char *p;

  if (strlen(s) < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
      s[7] != '-' || digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
      digits(s + 17, 2, &sec))
    return KEEL_EINVAL;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
    return KEEL_EINVAL;
  p = s + 19;
  if (*p == '.') {
    int scale = 100, n = 0;
    for (p++; isdigit((unsigned char)*p); p++, n++) {
      frac += (*p - '0') * scale;
      scale /= 10;
    }
    if (n == 0) return KEEL_EINVAL;
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om;
    if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
      return KEEL_EINVAL;
    off = (oh * 60 + om) * (*p == '-' ? -1 : 1);
    p += 6;
  } else {
    return KEEL_EINVAL;
  }
  if (*p) return KEEL_EINVAL;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *ms = ((int64_t)timegm(&tm) - (int64_t)off * 60) * 1000 + frac;
  return 0;
}

int keel_duration_parse(const char *s, int64_t *ms) {
  int64_t total = 0;
  const char *p = s;

  if (!*p) return KEEL_EINVAL;
  while (*p) {
    int64_t n = 0, unit;
    if (!isdigit((unsigned char)*p)) return KEEL_EINVAL;
    while (isdigit((unsigned char)*p)) {
      if (n > (INT64_MAX / 10) - 10) return KEEL_EINVAL;
      n = n * 10 + (*p++ - '0');
    }
    if (!strncmp(p, "ms", 2)) { unit = 1; p += 2; }
    else if (*p == 's') { unit = 1000; p++; }
    else if (*p == 'm') { unit = 60000; p++; }
    else if (*p == 'h') { unit = 3600000; p++; }
    else if (*p == 'd') { unit = 86400000; p++; }
    else return KEEL_EINVAL;
    if (n > (INT64_MAX - total) / unit) return KEEL_EINVAL;
    total += n * unit;
  }
  if (total <= 0) return KEEL_EINVAL;
  *ms = total;
  return 0;
}
