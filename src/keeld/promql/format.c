/* promql/format.c — numbers and label sets as Prometheus' JSON shows them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/internal.h"

/* Shortest digits that read back as v: the first precision whose correctly
 * rounded %e form round-trips through strtod (glibc's printf and strtod
 * are exact).  Go's shortest formatting picks the same digits. */
static int shortest_digits(double v, char *digits, int *exp10) {
  char tmp[64];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
    if (strtod(tmp, NULL) == v || prec == 17) {
      char *e = strchr(tmp, 'e');
      int k = 0;
      for (char *p = tmp; p < e; p++)
        if (*p >= '0' && *p <= '9') digits[k++] = *p;
      while (k > 1 && digits[k - 1] == '0') k--;
      digits[k] = '\0';
      *exp10 = atoi(e + 1);
      return k;
    }
  }
  return 0;
}

char *k_promql_format_float(double v, char *buf) {
  char digits[32];
  int exp10, nd, o = 0;
  if (isnan(v)) return strcpy(buf, "NaN");
  if (isinf(v)) return strcpy(buf, v > 0 ? "+Inf" : "-Inf");
  if (signbit(v)) buf[o++] = '-';
  if (v == 0) {
    buf[o++] = '0';
    buf[o] = '\0';
    return buf;
  }
  nd = shortest_digits(fabs(v), digits, &exp10);
  if (exp10 >= 0) {
    /* integer part: digits[0..exp10], zero-padded */
    for (int i = 0; i <= exp10; i++) buf[o++] = i < nd ? digits[i] : '0';
    if (nd > exp10 + 1) {
      buf[o++] = '.';
      for (int i = exp10 + 1; i < nd; i++) buf[o++] = digits[i];
    }
  } else {
    buf[o++] = '0';
    buf[o++] = '.';
    for (int i = 0; i < -exp10 - 1; i++) buf[o++] = '0';
    for (int i = 0; i < nd; i++) buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

const char *pq_go_float(double v, char *buf) { return k_promql_format_float(v, buf); }

json_t *pq_json_labels(const pq_lset_t *l) {
  json_t *o = json_object();
  for (uint32_t i = 0; o && i < l->n; i++) {
    /* jansson needs UTF-8; label values from a querier are, per labels.h */
    json_t *s = json_string(l->v[i].value);
    if (!s) s = json_stringn_nocheck(l->v[i].value, strlen(l->v[i].value));
    if (json_object_set_new_nocheck(o, l->v[i].name, s)) {
      json_decref(o);
      return NULL;
    }
  }
  return o;
}

/* [seconds, "value"]: seconds is an integer when whole, as Prometheus
 * prints it (jsonutil.MarshalTimestamp). */
json_t *pq_json_point(int64_t t, double v) {
  char fb[K_PROMQL_FLOAT_BUF];
  json_t *a = json_array(), *ts;
  if (!a) return NULL;
  if (t % 1000 == 0) ts = json_integer(t / 1000);
  else ts = json_real((double)t / 1000.0);
  if (json_array_append_new(a, ts) ||
      json_array_append_new(a, json_string(k_promql_format_float(v, fb)))) {
    json_decref(a);
    return NULL;
  }
  return a;
}
