/* regex.c — keeping POSIX regular expressions from untrusted text cheap
 * (see keel/regex.h). */
#include "keel/regex.h"

int keel_regex_cost_ok(const char *p, size_t n, const char **why) {
  long sum[33] = {0}, last[33] = {0};
  int d = 0, reps = 0; /* repetition operators in a row */
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    /* glibc nests one node per stacked operator, and compiling a*** ...
     * grows with a high power of their number (20 take 80 ms, 120 never
     * end); two (RE2's lazy "*?" read the POSIX way) stay cheap. */
    if (c == '*' || c == '+' || c == '?' || (c == '{' && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9')) {
      if (++reps > 2) {
        *why = "more than two repetition operators in a row";
        return 0;
      }
    } else {
      reps = 0;
    }
    if (c == '\\') {
      if (i + 1 < n && p[i + 1] >= '1' && p[i + 1] <= '9') {
        *why = "back-references are not supported";
        return 0;
      }
      i++;
      sum[d] += 1;
      last[d] = 1;
    } else if (c == '[') {
      size_t j = i + 1;
      if (j < n && p[j] == '^') j++;
      if (j < n && p[j] == ']') j++;
      while (j < n && p[j] != ']') {
        if (p[j] == '[' && j + 1 < n && (p[j + 1] == ':' || p[j + 1] == '.' || p[j + 1] == '=')) {
          char end = p[j + 1];
          j += 2;
          while (j + 1 < n && !(p[j] == end && p[j + 1] == ']')) j++;
          j += 2;
          continue;
        }
        j++;
      }
      i = j;
      sum[d] += 1;
      last[d] = 1;
    } else if (c == '(') {
      if (d == 32) {
        *why = "groups nested too deep";
        return 0;
      }
      d++;
      sum[d] = last[d] = 0;
    } else if (c == ')' && d > 0) {
      long w = sum[d] ? sum[d] : 1;
      d--;
      sum[d] += w;
      last[d] = w;
    } else if (c == '{') {
      /* A bound only when well formed: "{m}", "{m,}", "{m,n}".  Anything
       * else is one atom here (regcomp refuses it or takes it literally),
       * and the scan goes on with the next character, so nothing is
       * skipped unweighed. */
      long lo = 0, hi = -1;
      size_t j = i + 1, d0 = j;
      while (j < n && p[j] >= '0' && p[j] <= '9') {
        if (lo <= KEEL_REGEX_COST_MAX) lo = lo * 10 + (p[j] - '0');
        j++;
      }
      if (j == d0) goto atom;
      if (j < n && p[j] == ',') {
        j++;
        if (j < n && p[j] >= '0' && p[j] <= '9') hi = 0;
        while (j < n && p[j] >= '0' && p[j] <= '9') {
          if (hi <= KEEL_REGEX_COST_MAX) hi = hi * 10 + (p[j] - '0');
          j++;
        }
      }
      if (j >= n || p[j] != '}') goto atom;
      if (hi < lo) hi = lo;
      if (hi < 1) hi = 1;
      if (hi > KEEL_REGEX_COST_MAX) {
        *why = "repetition count over 1000";
        return 0;
      }
      sum[d] += last[d] * (hi - 1);
      last[d] *= hi;
      i = j;
    } else if (c == '|') {
      last[d] = 0;
    } else if (c == '+') {
      /* regcomp makes X+ into X X*: a copy, so stacked ones double. */
      sum[d] += last[d];
      last[d] *= 2;
    } else if (c != '*' && c != '?') {
    atom:
      sum[d] += 1;
      last[d] = 1;
    }
    for (int k = 0; k <= d; k++)
      if (sum[k] > KEEL_REGEX_COST_MAX || last[k] > KEEL_REGEX_COST_MAX) {
        *why = "over 1000 atoms once repetitions are expanded";
        return 0;
      }
  }
  return 1;
}
