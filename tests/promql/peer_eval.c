/* peer_eval — the C half of the PromQL peer check (tests/promql/peer.sh).
 *
 *   peer_eval gen FILE.om
 *       writes the test data set as OpenMetrics (what promtool imports)
 *   peer_eval eval FILE.om i T QUERY | r START END STEP QUERY
 *       prints keel's answer ({"status":...,"data":...}) for one query
 *   peer_eval compare FILE.om QUERIES.tsv DIR
 *       evaluates every query of QUERIES.tsv over FILE.om with keel's
 *       engine and compares with Prometheus' answers DIR/<line>.json;
 *       prints each difference and "N passed, M failed"; exit 1 on any
 *       failure.
 *
 * QUERIES.tsv lines (tab-separated; # comments): "i T QUERY" instant,
 * "io T QUERY" instant whose result order matters, "r START END STEP
 * QUERY" range; times in (fractional) seconds.  Values compare equal up
 * to 1e-9 relative; NaN equals NaN.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "promql/promql.h"

#include "memq.h"

#define T0 INT64_C(1700000000)

/* ---- the data set ----------------------------------------------------- */

static unsigned lcg(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return (*s >> 16) & 0x7fff;
}

static void ts_print(FILE *f, int64_t ms) {
  if (ms % 1000) fprintf(f, " %lld.%03lld\n", (long long)(ms / 1000), (long long)(ms % 1000));
  else fprintf(f, " %lld\n", (long long)(ms / 1000));
}

static void val_print(FILE *f, double v) {
  char b[K_PROMQL_FLOAT_BUF];
  if (isnan(v)) fputs("NaN", f);
  else fputs(k_promql_format_float(v, b), f);
}

static int gen(const char *path) {
  FILE *f = fopen(path, "w");
  unsigned seed = 42;
  if (!f) {
    perror(path);
    return 1;
  }
  /* Counters with resets, a late start and irregular scrapes. */
  fprintf(f, "# TYPE http_requests counter\n");
  {
    const char *inst[] = {"a", "b", "c"}, *meth[] = {"get", "post"};
    for (int i = 0; i < 3; i++)
      for (int m = 0; m < 2; m++) {
        double v = 10.0 * (i + 1) + m;
        for (int k = 0; k <= 240; k++) {
          int64_t t = (T0 + 15 * k) * 1000;
          if (i == 2 && m == 1 && k < 20) continue;      /* starts late */
          if (i == 2 && m == 1 && k % 7 == 3) continue;  /* missed scrapes */
          if (i == 0 && m == 0) t += (int64_t)(lcg(&seed) % 900); /* jitter */
          v += (i + 1) * 0.75 + m * 2 + (double)(lcg(&seed) % 10) / 4;
          if (i == 1 && (k == 100 || k == 180)) v = (double)(lcg(&seed) % 5); /* reset */
          fprintf(f, "http_requests_total{instance=\"%s\",job=\"api\",method=\"%s\"} ", inst[i],
                  meth[m]);
          val_print(f, v);
          ts_print(f, t);
        }
      }
  }
  /* Gauges, one with a NaN sample, one negative. */
  fprintf(f, "# TYPE node_temp_celsius gauge\n");
  for (int h = 1; h <= 4; h++) {
    for (int k = 0; k <= 240; k++) {
      double v = round((20 + 10 * sin(k / 10.0 + h)) * 1000) / 1000;
      if (h == 4) v -= 35;
      if (h == 3 && k == 120) v = NAN;
      fprintf(f, "node_temp_celsius{dc=\"%s\",host=\"h%d\"} ", h % 2 ? "east" : "west", h);
      val_print(f, v);
      ts_print(f, (T0 + 15 * k) * 1000);
    }
  }
  /* A classic histogram per instance. */
  fprintf(f, "# TYPE req_dur_seconds histogram\n");
  {
    const char *les[] = {"0.05", "0.1", "0.5", "1", "+Inf"};
    double cnt[2][5] = {{0}}, sum[2] = {0};
    for (int k = 0; k <= 240; k++) {
      for (int i = 0; i < 2; i++) {
        double add = 0;
        for (int b = 0; b < 5; b++) {
          add += (double)(lcg(&seed) % (3 + b + i));
          cnt[i][b] += add;
        }
        sum[i] += add * 0.21;
        for (int b = 0; b < 5; b++) {
          fprintf(f, "req_dur_seconds_bucket{instance=\"%c\",le=\"%s\"} ", 'a' + i, les[b]);
          val_print(f, cnt[i][b]);
          ts_print(f, (T0 + 15 * k) * 1000);
        }
        fprintf(f, "req_dur_seconds_sum{instance=\"%c\"} ", 'a' + i);
        val_print(f, sum[i]);
        ts_print(f, (T0 + 15 * k) * 1000);
        fprintf(f, "req_dur_seconds_count{instance=\"%c\"} ", 'a' + i);
        val_print(f, cnt[i][4]);
        ts_print(f, (T0 + 15 * k) * 1000);
      }
    }
  }
  /* Broken histograms: no +Inf bucket; non-monotonic; a bucket <= 0. */
  fprintf(f, "# TYPE bad_hist_bucket gauge\n");
  for (int b = 0; b < 2; b++)
    for (int k = 0; k <= 240; k++) {
      fprintf(f, "bad_hist_bucket{le=\"%s\"} ", b ? "5" : "1");
      val_print(f, 10.0 * (b + 1) + k);
      ts_print(f, (T0 + 15 * k) * 1000);
    }
  fprintf(f, "# TYPE odd_hist_bucket gauge\n");
  {
    const char *les[] = {"-1", "0.5", "2", "+Inf"};
    const double vals[] = {3, 10, 8, 20};
    for (int b = 0; b < 4; b++)
      for (int k = 0; k <= 240; k++) {
        fprintf(f, "odd_hist_bucket{le=\"%s\"} ", les[b]);
        val_print(f, vals[b] + (b == 3 ? k : 0));
        ts_print(f, (T0 + 15 * k) * 1000);
      }
  }
  /* A series with a gap longer than the lookback, and one that ends. */
  fprintf(f, "# TYPE gap_metric gauge\n");
  for (int id = 1; id <= 2; id++)
    for (int k = 0; k <= 240; k++) {
      int64_t t = T0 + 15 * k;
      if (id == 1 && t > T0 + 1500 && t < T0 + 2400) continue;
      if (id == 2 && t > T0 + 1200) continue;
      fprintf(f, "gap_metric{id=\"%d\"} ", id);
      val_print(f, id * 100 + k % 17);
      ts_print(f, t * 1000);
    }
  fprintf(f, "# TYPE up gauge\n");
  for (int i = 0; i < 3; i++)
    for (int k = 0; k <= 240; k++) {
      fprintf(f, "up{instance=\"%c\",job=\"api\"} ", 'a' + i);
      val_print(f, (i == 2 && k > 200) ? 0 : 1);
      ts_print(f, (T0 + 15 * k) * 1000);
    }
  fprintf(f, "# TYPE info_metric gauge\n");
  for (int i = 0; i < 3; i++)
    for (int k = 0; k <= 240; k++) {
      fprintf(f, "info_metric{instance=\"%c\",job=\"api\",version=\"1.%d\"} 1", 'a' + i, i);
      ts_print(f, (T0 + 15 * k) * 1000);
    }
  /* Same labels, different names: collisions once the name is dropped. */
  fprintf(f, "# TYPE dup_a gauge\n");
  for (int k = 0; k <= 240; k++) {
    fprintf(f, "dup_a{x=\"1\"} %d", k);
    ts_print(f, (T0 + 15 * k) * 1000);
  }
  fprintf(f, "# TYPE dup_b gauge\n");
  for (int k = 0; k <= 240; k++) {
    fprintf(f, "dup_b{x=\"1\"} %d", 2 * k);
    ts_print(f, (T0 + 15 * k) * 1000);
  }
  fprintf(f, "# EOF\n");
  if (fclose(f)) {
    perror(path);
    return 1;
  }
  return 0;
}

/* ---- loading OpenMetrics ------------------------------------------ */

static int load(memq_t *m, const char *path) {
  FILE *f = fopen(path, "r");
  char line[4096];
  int lineno = 0;
  if (!f) {
    perror(path);
    return -1;
  }
  while (fgets(line, sizeof line, f)) {
    char *sp, *vs, *tsx, *end;
    double v, ts;
    lineno++;
    line[strcspn(line, "\n")] = '\0';
    if (!line[0] || line[0] == '#') continue;
    sp = strchr(line, '}');
    sp = sp ? sp + 1 : strchr(line, ' ');
    if (!sp || *sp != ' ') goto bad;
    *sp = '\0';
    vs = sp + 1;
    tsx = strchr(vs, ' ');
    if (!tsx) goto bad;
    *tsx++ = '\0';
    if (!strcmp(vs, "NaN")) v = NAN;
    else if (!strcmp(vs, "+Inf")) v = INFINITY;
    else if (!strcmp(vs, "-Inf")) v = -INFINITY;
    else v = strtod(vs, &end);
    ts = strtod(tsx, &end);
    if (memq_add(m, line, (int64_t)llround(ts * 1000), v)) goto bad;
    continue;
  bad:
    fprintf(stderr, "%s:%d: cannot load line\n", path, lineno);
    fclose(f);
    return -1;
  }
  fclose(f);
  return 0;
}

/* ---- one query through keel --------------------------------------- */

static int64_t ms_of(const char *s) { return (int64_t)llround(strtod(s, NULL) * 1000); }

/* {"status":"success","data":...} or the error shape. New reference. */
static json_t *keel_answer(memq_t *m, const char *kind, char **f) {
  k_promql_err_t e;
  json_t *data = NULL;
  int rc;
  if (kind[0] == 'r') rc = k_promql_range(&m->q, f[3], ms_of(f[0]), ms_of(f[1]), ms_of(f[2]), &data, &e);
  else rc = k_promql_instant(&m->q, f[1], ms_of(f[0]), &data, &e);
  if (rc) {
    return json_pack("{s:s,s:s,s:s}", "status", "error", "errorType",
                     k_promql_errtype_name(e.type), "error", e.msg);
  }
  return json_pack("{s:s,s:o}", "status", "success", "data", data);
}

/* ---- comparison -------------------------------------------------------- */

static int close_enough(const char *a, const char *b) {
  double x, y;
  if (!strcmp(a, b)) return 1;
  x = strcmp(a, "NaN") ? strtod(a, NULL) : NAN;
  y = strcmp(b, "NaN") ? strtod(b, NULL) : NAN;
  if (isnan(x) || isnan(y)) return isnan(x) && isnan(y);
  if (isinf(x) || isinf(y)) return x == y;
  return fabs(x - y) <= 1e-9 * fmax(fabs(x), fabs(y)) || fabs(x - y) < 1e-300;
}

static int point_eq(const json_t *a, const json_t *b) {
  return json_is_array(a) && json_is_array(b) && json_array_size(a) == 2 &&
         json_array_size(b) == 2 &&
         fabs(json_number_value(json_array_get(a, 0)) - json_number_value(json_array_get(b, 0))) <
             1e-6 &&
         json_is_string(json_array_get(a, 1)) && json_is_string(json_array_get(b, 1)) &&
         close_enough(json_string_value(json_array_get(a, 1)),
                      json_string_value(json_array_get(b, 1)));
}

static int series_eq(const json_t *a, const json_t *b) {
  const json_t *va = json_object_get(a, "values"), *vb = json_object_get(b, "values");
  if (!json_equal(json_object_get(a, "metric"), json_object_get(b, "metric"))) return 0;
  if (va || vb) {
    if (!json_is_array(va) || !json_is_array(vb) || json_array_size(va) != json_array_size(vb))
      return 0;
    for (size_t i = 0; i < json_array_size(va); i++)
      if (!point_eq(json_array_get(va, i), json_array_get(vb, i))) return 0;
    return 1;
  }
  return point_eq(json_object_get(a, "value"), json_object_get(b, "value"));
}

/* Same series (as a multiset, or in order), same points. */
static int result_eq(const json_t *a, const json_t *b, int ordered, char *why, size_t cap) {
  size_t n = json_array_size(a);
  char *used;
  if (n != json_array_size(b)) {
    snprintf(why, cap, "%zu series vs %zu", json_array_size(b), n);
    return 0;
  }
  used = calloc(n ? n : 1, 1);
  for (size_t i = 0; i < n; i++) {
    size_t j;
    int found = 0;
    for (j = 0; j < n && !found; j++) {
      if (ordered && j != i) continue;
      if (!used[j] && series_eq(json_array_get(a, i), json_array_get(b, j))) found = 1;
    }
    if (!found) {
      char *s = json_dumps(json_array_get(a, i), JSON_COMPACT);
      snprintf(why, cap, "no match%s for prometheus series %.300s", ordered ? " (in order)" : "",
               s ? s : "?");
      free(s);
      free(used);
      return 0;
    }
    used[j - 1] = 1;
  }
  free(used);
  return 1;
}

static int compare_one(const json_t *prom, const json_t *mine, int ordered, char *why,
                       size_t cap) {
  const char *ps = json_string_value(json_object_get(prom, "status"));
  const char *ms = json_string_value(json_object_get(mine, "status"));
  const json_t *pd, *md;
  const char *pt, *mt;
  if (!ps || !ms) {
    snprintf(why, cap, "no status");
    return 0;
  }
  if (strcmp(ps, ms)) {
    snprintf(why, cap, "status %s vs keel %s (%s)", ps, ms,
             json_string_value(json_object_get(!strcmp(ps, "error") ? prom : mine, "error")));
    return 0;
  }
  if (!strcmp(ps, "error")) {
    const char *pe = json_string_value(json_object_get(prom, "errorType"));
    const char *me = json_string_value(json_object_get(mine, "errorType"));
    const char *pm = json_string_value(json_object_get(prom, "error"));
    const char *mm = json_string_value(json_object_get(mine, "error"));
    if (!pe || !me || strcmp(pe, me)) {
      snprintf(why, cap, "errorType %s vs keel %s", pe ? pe : "?", me ? me : "?");
      return 0;
    }
    if (!pm || !mm || strcmp(pm, mm)) {
      snprintf(why, cap, "error text differs");
      return 0;
    }
    return 1;
  }
  pd = json_object_get(prom, "data");
  md = json_object_get(mine, "data");
  pt = json_string_value(json_object_get(pd, "resultType"));
  mt = json_string_value(json_object_get(md, "resultType"));
  if (!pt || !mt || strcmp(pt, mt)) {
    snprintf(why, cap, "resultType %s vs keel %s", pt ? pt : "?", mt ? mt : "?");
    return 0;
  }
  if (!strcmp(pt, "scalar")) {
    if (!point_eq(json_object_get(pd, "result"), json_object_get(md, "result"))) {
      snprintf(why, cap, "scalar differs");
      return 0;
    }
    return 1;
  }
  if (!strcmp(pt, "string")) {
    if (!json_equal(json_object_get(pd, "result"), json_object_get(md, "result"))) {
      snprintf(why, cap, "string differs");
      return 0;
    }
    return 1;
  }
  return result_eq(json_object_get(pd, "result"), json_object_get(md, "result"), ordered, why, cap);
}

static int split_tabs(char *line, char **f, int max) {
  int n = 0;
  char *p = line;
  while (n < max) {
    char *t = strchr(p, '\t');
    f[n++] = p;
    if (!t) break;
    *t = '\0';
    p = t + 1;
  }
  return n;
}

static int compare(memq_t *m, const char *queries, const char *dir) {
  FILE *f = fopen(queries, "r");
  char line[4096];
  int lineno = 0, pass = 0, fail = 0;
  if (!f) {
    perror(queries);
    return 2;
  }
  while (fgets(line, sizeof line, f)) {
    char *fld[6], path[4096], why[1024] = "";
    json_t *prom, *mine;
    json_error_t je;
    int n, ordered;
    lineno++;
    line[strcspn(line, "\n")] = '\0';
    if (!line[0] || line[0] == '#') continue;
    n = split_tabs(line, fld, 6);
    if ((fld[0][0] == 'r' && n != 5) || (fld[0][0] == 'i' && n != 3)) {
      fprintf(stderr, "%s:%d: malformed line\n", queries, lineno);
      fail++;
      continue;
    }
    ordered = !strcmp(fld[0], "io") || (getenv("PEER_ORDERED") && fld[0][0] == 'i');
    snprintf(path, sizeof path, "%s/%d.json", dir, lineno);
    prom = json_load_file(path, 0, &je);
    if (!prom) {
      printf("FAIL %s:%d %s: no Prometheus answer (%s)\n", queries, lineno,
             fld[0][0] == 'r' ? fld[4] : fld[2], je.text);
      fail++;
      continue;
    }
    mine = keel_answer(m, fld[0], fld + 1);
    if (mine && compare_one(prom, mine, ordered, why, sizeof why)) {
      pass++;
    } else {
      char *pj = json_dumps(prom, JSON_COMPACT), *mj = mine ? json_dumps(mine, JSON_COMPACT) : NULL;
      printf("FAIL %s:%d %s\n  why: %s\n  prometheus: %.1500s\n  keel:       %.1500s\n", queries,
             lineno, fld[0][0] == 'r' ? fld[4] : fld[2], why, pj ? pj : "?", mj ? mj : "?");
      free(pj);
      free(mj);
      fail++;
    }
    json_decref(prom);
    json_decref(mine);
  }
  fclose(f);
  printf("peer check: %d of %d queries equal\n", pass, pass + fail);
  printf("%d passed, %d failed\n", pass, fail);
  return fail ? 1 : 0;
}

int main(int argc, char **argv) {
  memq_t m;
  int rc = 2;
  if (argc == 3 && !strcmp(argv[1], "gen")) return gen(argv[2]);
  memq_init(&m);
  if (argc >= 4 && load(&m, argv[2])) goto out;
  if (argc == 5 && !strcmp(argv[1], "compare")) {
    rc = compare(&m, argv[3], argv[4]);
  } else if (argc >= 6 && !strcmp(argv[1], "eval")) {
    json_t *a = keel_answer(&m, argv[3], argv + 4);
    char *s = a ? json_dumps(a, JSON_INDENT(1) | JSON_REAL_PRECISION(15)) : NULL;
    puts(s ? s : "null");
    free(s);
    json_decref(a);
    rc = 0;
  } else {
    fprintf(stderr,
            "usage: peer_eval gen FILE.om | eval FILE.om i T QUERY | eval FILE.om r S E STEP Q |"
            " compare FILE.om QUERIES.tsv DIR\n");
  }
out:
  m.q.close(&m.q);
  return rc;
}
