#include "runbook/cron.h"

#include <stdio.h>
#include <string.h>

#include "docwalk.h"

static const struct {
  const char *name;
  int lo, hi;
} fields[5] = {{"minute", 0, 59}, {"hour", 0, 23}, {"day-of-month", 1, 31},
               {"month", 1, 12}, {"day-of-week", 0, 7}};

/* The spans of the blank-separated fields of t[0..n).  Returns how many
 * there are, counting no further than 6 (6 means "too many"). */
static size_t split(const char *t, size_t n, size_t start[6], size_t len[6]) {
  size_t i = 0, nf = 0;
  while (i < n && nf < 6) {
    while (i < n && (t[i] == ' ' || t[i] == '\t')) i++;
    if (i == n) break;
    start[nf] = i;
    while (i < n && t[i] != ' ' && t[i] != '\t') i++;
    len[nf] = i - start[nf];
    nf++;
  }
  return nf;
}

/* A decimal of at most 3 digits at t[*i]; -1 when none (or longer, which
 * also keeps the value far from overflow). */
static int num(const char *t, size_t n, size_t *i) {
  int v = 0, d = 0;
  while (*i < n && t[*i] >= '0' && t[*i] <= '9') {
    if (++d > 3) return -1;
    v = v * 10 + (t[(*i)++] - '0');
  }
  return d ? v : -1;
}

/* Field f, t[0..n): ','-separated items, each "*", "*\/S", "N", "N-M" or
 * "N-M/S", whose values are ORed into *mask.  On error why gets the
 * problem (the part of the message after the quoted field). */
static int field(const char *t, size_t n, int f, uint64_t *mask, char *why, size_t wl) {
  int lo = fields[f].lo, hi = fields[f].hi;
  size_t i = 0;
  for (;;) {
    int a = lo, z = hi, s = 1, ranged = 0;
    if (i < n && t[i] == '*') {
      i++;
      ranged = 1;
    } else {
      if ((a = num(t, n, &i)) < 0) goto syntax;
      if (a < lo || a > hi) {
        snprintf(why, wl, "%d is out of range %d-%d", a, lo, hi);
        return -1;
      }
      z = a;
      if (i < n && t[i] == '-') {
        i++;
        if ((z = num(t, n, &i)) < 0) goto syntax;
        if (z < lo || z > hi) {
          snprintf(why, wl, "%d is out of range %d-%d", z, lo, hi);
          return -1;
        }
        if (z < a) {
          snprintf(why, wl, "range %d-%d goes backwards", a, z);
          return -1;
        }
        ranged = 1;
      }
    }
    if (i < n && t[i] == '/') {
      i++;
      if (!ranged) {
        snprintf(why, wl, "a step needs * or a range before it");
        return -1;
      }
      if ((s = num(t, n, &i)) < 1 || s > hi - lo + 1) {
        snprintf(why, wl, "step out of range 1-%d", hi - lo + 1);
        return -1;
      }
    }
    for (int v = a; v <= z; v += s) *mask |= UINT64_C(1) << v;
    if (i == n) return 0;
    if (t[i] != ',') goto syntax;
    i++;
  }
syntax:
  snprintf(why, wl, "expected numbers, ranges (1-5), steps (*/15), lists (1,2) or *");
  return -1;
}

int k_cron_parse(const char *text, size_t len, k_cron_t *out, keel_err_t *e) {
  size_t start[6], flen[6];
  uint64_t m[5] = {0};
  char why[96], b[80];

  memset(out, 0, sizeof *out);
  if (split(text, len, start, flen) != 5)
    return keel_err_set(e, KEEL_EINVAL,
                        "'%s': expected 5 fields: minute hour day-of-month month day-of-week",
                        k_walk_quote(b, text, len));
  for (size_t f = 0; f < 5; f++)
    if (field(text + start[f], flen[f], (int)f, &m[f], why, sizeof why))
      return keel_err_set(e, KEEL_EINVAL, "field %zu (%s) '%s': %s", f + 1, fields[f].name,
                          k_walk_quote(b, text + start[f], flen[f]), why);
  out->minute = m[0];
  out->hour = (uint32_t)m[1];
  out->mday = (uint32_t)m[2];
  out->month = (uint16_t)m[3];
  out->wday = (uint8_t)((m[4] | m[4] >> 7) & 0x7f); /* 7 is Sunday too */
  /* Vixie cron's DOM_STAR/DOW_STAR: decided by the text, not the mask, so
   * "1-31" is restricted and "*\/2" is not. */
  out->day_or = text[start[2]] != '*' && text[start[4]] != '*';
  return 0;
}

size_t k_cron_normalize(const char *text, size_t len, char *out) {
  size_t start[6], flen[6], nf = split(text, len, start, flen), o = 0;
  for (size_t f = 0; f < nf && f < 5; f++) {
    if (f) out[o++] = ' ';
    memcpy(out + o, text + start[f], flen[f]);
    o += flen[f];
  }
  out[o] = '\0';
  return o;
}

/* ---- civil calendar (proleptic Gregorian, UTC) --------------------------------
 * H. Hinnant's days_from_civil / civil_from_days, for days >= 0 only
 * (k_cron_next never goes before the epoch), so no negative division. */

static int64_t days_from_civil(int64_t y, int m, int d) {
  int64_t era, yoe, doy, doe;
  y -= m <= 2;
  era = y / 400;
  yoe = y - era * 400;
  doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
  int64_t era, doe, yoe, doy, mp;
  z += 719468;
  era = z / 146097;
  doe = z - era * 146097;
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int64_t y, int m) {
  static const int dim[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) return 29;
  return dim[m];
}

/* The lowest set bit of mask at or above from; -1 when none. */
static int next_bit(uint64_t mask, int from) {
  if (from > 63) return -1;
  mask &= ~UINT64_C(0) << from;
  return mask ? __builtin_ctzll(mask) : -1;
}

static int day_matches(const k_cron_t *c, int64_t y, int m, int d) {
  int wd = (int)((days_from_civil(y, m, d) + 4) % 7); /* 1970-01-01 was a Thursday */
  int dom = c->mday >> d & 1, dow = c->wday >> wd & 1;
  return c->day_or ? dom || dow : dom && dow;
}

int64_t k_cron_next(const k_cron_t *c, int64_t after_ms) {
  int64_t t, y, ylast;
  int m, d, h, mi;

  if (after_ms >= K_CRON_END_MS) return -1; /* also keeps t from overflowing */
  t = after_ms < 0 ? 0 : (after_ms / 60000 + 1) * 60000;
  if (t >= K_CRON_END_MS) return -1;
  civil_from_days(t / 86400000, &y, &m, &d);
  h = (int)(t % 86400000 / 3600000);
  mi = (int)(t % 3600000 / 60000);
  ylast = y + K_CRON_HORIZON_YEARS;
  if (ylast > 9999) ylast = 9999;
  /* Each pass either returns or moves (y, m, d, h, mi) forward to the
   * start of the next unit that could still match, so the work is bounded
   * by months + days in the window, plus at most one pass per hour of a
   * matching day. */
  for (;;) {
    int nh, nm;
    if (y > ylast) return -1;
    if (!(c->month >> m & 1) || d > days_in_month(y, m)) {
      if (++m > 12) {
        m = 1;
        y++;
      }
      d = 1;
      h = mi = 0;
      continue;
    }
    if (!day_matches(c, y, m, d) || (nh = next_bit(c->hour, h)) < 0) {
      d++;
      h = mi = 0;
      continue;
    }
    if (nh != h) {
      h = nh;
      mi = 0;
    }
    if ((nm = next_bit(c->minute, mi)) < 0) {
      mi = 0;
      if (++h == 24) {
        h = 0;
        d++;
      }
      continue;
    }
    return days_from_civil(y, m, d) * 86400000 + (int64_t)h * 3600000 + (int64_t)nm * 60000;
  }
}
