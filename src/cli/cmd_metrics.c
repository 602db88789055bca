/* cmd_metrics.c — host metrics through keeld's Prometheus-compatible query
 * API (docs/metrics.md): keel metrics query and keel top.
 *
 * Both speak only /api/v1/query and /api/v1/query_range and read only what
 * Prometheus answers, so they work against a real Prometheus too (its
 * instance labels are "host:port" and it has no agent_id; keel top shows
 * "-" for what is missing).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "keel/grow.h"
#include "keel/json.h"
#include "keel/time.h"

#define URL_MAX_BYTES 65536
#define MSG_MAX 512
#define SELECTOR_MAX 4096 /* docs/selectors.md */
#define TOP_MIN_INTERVAL_MS 1000
#define TOP_MIN_WINDOW_S 30

static const char *skip_ws(const char *p) { return p + strspn(p, " \t\r\n"); }

/* A buffer's text; "" while nothing was appended. */
static const char *bstr(const keel_buf_t *b) { return b->data ? b->data : ""; }

/* ---- the query API ------------------------------------------------------------------------ */

/* GETs path (already encoded) from the query API.  On a "success" answer *out
 * gets it (a new reference) and resp its text, for printing as is.
 * Otherwise msg gets one line — the server's error and errorType (or Keel's
 * error shape, for a refused token), or the transport failure — made safe
 * for a terminal, and the result is CLI_FAIL; a configuration error is
 * CLI_USAGE after cli_connect printed why (msg empty). */
static int prom_get(cli_t *c, const char *path, keel_buf_t *resp, json_t **out, char *msg,
                    size_t msgsz) {
  const char *st, *text, *kind;
  json_t *v = NULL, *err;
  keel_err_t e;
  int status = 0, rc;

  *out = NULL;
  msg[0] = '\0';
  if ((rc = cli_connect(c))) return rc;
  rc = CLI_FAIL;
  if (keel_http_request(&c->http, "GET", path, NULL, 0, &status, resp, &e)) {
    snprintf(msg, msgsz, "%s", e.msg);
    goto out;
  }
  if (!resp->len || keel_json_parse(resp->data, resp->len, &v, NULL) || !json_is_object(v)) {
    snprintf(msg, msgsz, "%s answer from %s (HTTP %d): not a JSON object",
             status >= 200 && status <= 299 ? "bad" : "unexpected", c->http.shown, status);
    goto out;
  }
  st = keel_json_str(v, "status");
  err = json_object_get(v, "error");
  if (status >= 200 && status <= 299 && st && !strcmp(st, "success") &&
      json_is_object(json_object_get(v, "data"))) {
    *out = v;
    v = NULL;
    rc = 0;
  } else if (st && !strcmp(st, "error")) {
    text = keel_json_str(v, "error");
    kind = keel_json_str(v, "errorType");
    snprintf(msg, msgsz, "%s (HTTP %d %s)", text && *text ? text : "query failed", status,
             kind && *kind ? kind : "error");
  } else if (json_is_object(err) && keel_json_str(err, "message")) {
    /* Keel's own error shape: the token was refused before the query ran. */
    kind = keel_json_str(err, "code");
    snprintf(msg, msgsz, "%s (HTTP %d %s)", keel_json_str(err, "message"), status,
             kind ? kind : "error");
  } else {
    snprintf(msg, msgsz, "%s answer from %s (HTTP %d)",
             status >= 200 && status <= 299 ? "bad" : "unexpected", c->http.shown, status);
  }
out:
  out_safe(msg);
  json_decref(v);
  return rc;
}

/* Prints the answer's warnings (Prometheus' "warnings": a query that ran but
 * may be incomplete) on stderr. */
static void print_warnings(const json_t *ans) {
  const json_t *w;
  size_t i;
  char line[MSG_MAX];

  json_array_foreach(json_object_get(ans, "warnings"), i, w) {
    if (!json_is_string(w)) continue;
    snprintf(line, sizeof line, "%s", json_string_value(w));
    fprintf(stderr, "keel: warning: %s\n", out_safe(line));
  }
}

/* "5", "5.25": ms as the seconds the API takes. */
static void fmt_secs(char *out, size_t outsz, int64_t ms) {
  if (ms % 1000)
    snprintf(out, outsz, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
  else snprintf(out, outsz, "%lld", (long long)(ms / 1000));
}

/* RFC 3339, or unix seconds with an optional fraction (cut to ms). */
static int parse_time(const char *s, int64_t *ms) {
  const char *p = s;
  int64_t sec = 0, frac = 0;
  int nd = 0, nf = 0;

  if (!keel_time_parse(s, ms)) return 0;
  for (; isdigit((unsigned char)*p); p++) {
    if (++nd > 12) return KEEL_EINVAL; /* past the year 33658: a typo */
    sec = sec * 10 + (*p - '0');
  }
  if (!nd) return KEEL_EINVAL;
  if (*p == '.') {
    for (p++; isdigit((unsigned char)*p); p++, nf++)
      if (nf < 3) frac = frac * 10 + (*p - '0');
    if (!nf) return KEEL_EINVAL;
    for (; nf < 3; nf++) frac *= 10;
  }
  if (*p) return KEEL_EINVAL;
  *ms = sec * 1000 + frac;
  return 0;
}

static int label_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* name{k="v",...} as Prometheus writes a series: the metric name, then the
 * other labels sorted by name, values escaped as in PromQL.  Into b (reset
 * first); not yet made safe for a terminal.  0 or CLI_FAIL. */
static int series_text(const json_t *metric, keel_buf_t *b) {
  const char **keys = NULL, *k, *name = keel_json_str(metric, "__name__");
  size_t n = 0, i;
  json_t *v;
  int rc = CLI_FAIL, first = 1;

  keel_buf_reset(b);
  if (json_object_size(metric) && !(keys = malloc(json_object_size(metric) * sizeof *keys)))
    goto out;
  json_object_foreach((json_t *)metric, k, v) {
    if (strcmp(k, "__name__") && json_is_string(v)) keys[n++] = k;
  }
  if (n) qsort(keys, n, sizeof *keys, label_cmp);
  if (name && keel_buf_puts(b, name)) goto out;
  if ((n || !name) && keel_buf_puts(b, "{")) goto out;
  for (i = 0; i < n; i++) {
    const char *s = json_string_value(json_object_get(metric, keys[i]));
    if (keel_buf_printf(b, "%s%s=\"", first ? "" : ",", keys[i])) goto out;
    first = 0;
    for (; *s; s++) {
      const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
      if (esc ? keel_buf_puts(b, esc) : keel_buf_append(b, s, 1)) goto out;
    }
    if (keel_buf_puts(b, "\"")) goto out;
  }
  if ((n || !name) && keel_buf_puts(b, "}")) goto out;
  rc = 0;
out:
  free(keys);
  if (rc) cli_fail("out of memory");
  return rc;
}

/* The value of a [t, "v"] pair as the server wrote it; a native histogram's
 * count and sum; NULL when the pair is malformed. */
static const char *sample_value(const json_t *pair, int histogram, char *tmp, size_t tmpsz) {
  const json_t *v = json_array_get(pair, 1);
  char a[32], b[32];

  if (histogram) {
    if (!json_is_object(v)) return NULL;
    snprintf(tmp, tmpsz, "histogram count=%s sum=%s",
             out_field(v, "count", a, sizeof a) ? out_field(v, "count", a, sizeof a) : "?",
             out_field(v, "sum", b, sizeof b) ? out_field(v, "sum", b, sizeof b) : "?");
    return tmp;
  }
  if (json_is_string(v)) return json_string_value(v);
  if (json_is_number(v)) { /* not Prometheus, but say what it is */
    snprintf(tmp, tmpsz, "%.17g", json_number_value(v));
    return tmp;
  }
  return NULL;
}

/* The time of a [t, v] pair as RFC 3339 (UTC, ms). */
static void sample_time(const json_t *pair, char out[KEEL_TIME_STRLEN]) {
  const json_t *t = json_array_get(pair, 0);
  double s = json_number_value(t);
  if (!json_is_number(t) || !isfinite(s) || s < 0 || s > 1e12) {
    snprintf(out, KEEL_TIME_STRLEN, "?");
    return;
  }
  keel_time_format(out, (int64_t)(s * 1000.0 + 0.5));
}

static int print_vector(cli_t *c, const json_t *result) {
  static const char *const heads[] = {"SERIES", "VALUE"};
  const json_t *s;
  keel_buf_t name;
  out_table_t t;
  size_t i;
  int rc = 0;

  keel_buf_init(&name, URL_MAX_BYTES);
  out_table_init(&t, 2, heads);
  json_array_foreach(result, i, s) {
    int hist = !json_object_get(s, "value") && json_object_get(s, "histogram");
    char tmp[128];
    const char *row[2];
    if ((rc = series_text(json_object_get(s, "metric"), &name))) goto out;
    row[0] = bstr(&name);
    row[1] = sample_value(json_object_get(s, hist ? "histogram" : "value"), hist, tmp, sizeof tmp);
    if (!row[1]) {
      rc = cli_fail("bad answer from %s: a sample is not [time, \"value\"]", c->http.shown);
      goto out;
    }
    if ((rc = out_table_add(&t, row))) goto out;
  }
  out_table_print(&t, stdout);
out:
  out_table_free(&t);
  keel_buf_free(&name);
  return rc;
}

/* Per series its name on a line, then "  TIME  VALUE" lines, a blank line
 * between series. */
static int print_matrix(cli_t *c, const json_t *result) {
  const json_t *s, *p;
  keel_buf_t name;
  size_t i, j;
  int rc = 0;

  keel_buf_init(&name, URL_MAX_BYTES);
  json_array_foreach(result, i, s) {
    const json_t *vals = json_object_get(s, "values"), *hists = json_object_get(s, "histograms");
    if ((rc = series_text(json_object_get(s, "metric"), &name))) goto out;
    printf("%s%s\n", i ? "\n" : "", out_safe(name.data));
    for (int h = 0; h < 2; h++) {
      json_array_foreach(h ? hists : vals, j, p) {
        char ts[KEEL_TIME_STRLEN], tmp[128], v[MSG_MAX];
        const char *val = sample_value(p, h, tmp, sizeof tmp);
        if (!val) {
          rc = cli_fail("bad answer from %s: a sample is not [time, \"value\"]", c->http.shown);
          goto out;
        }
        sample_time(p, ts);
        snprintf(v, sizeof v, "%s", val);
        printf("  %s  %s\n", ts, out_safe(v));
      }
    }
  }
out:
  keel_buf_free(&name);
  return rc;
}

int cmd_metrics_query(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"time", "T", NULL},
                      {"range", "DURATION", NULL},
                      {"step", "DURATION", NULL},
                      {"end", "T", NULL},
                      {NULL, NULL, NULL}};
  const char *pos[1], *type;
  const json_t *data, *result;
  json_t *ans = NULL;
  keel_buf_t url, resp;
  char msg[MSG_MAX], num[32];
  int64_t at = 0, range = 0, step = 0, end = 0;
  int rc;

  keel_buf_init(&url, URL_MAX_BYTES);
  keel_buf_init(&resp, KEEL_HTTP_MAX_RESPONSE);
  if ((rc = cli_parse(c, argc, argv, opts, pos, 1, 1)) != CLI_GO) goto out;
  if (!*skip_ws(pos[0])) {
    rc = cli_usage(c, "EXPR is empty");
    goto out;
  }
  if (opts[0].value && parse_time(opts[0].value, &at)) {
    rc = cli_usage(c, "--time: expected RFC 3339 or unix seconds, got '%s'", opts[0].value);
    goto out;
  }
  if (opts[1].value && keel_duration_parse(opts[1].value, &range)) {
    rc = cli_usage(c, "--range: expected a duration like 30s, 5m, 1h, got '%s'", opts[1].value);
    goto out;
  }
  if (opts[2].value && keel_duration_parse(opts[2].value, &step)) {
    rc = cli_usage(c, "--step: expected a duration like 15s, 1m, got '%s'", opts[2].value);
    goto out;
  }
  if (opts[3].value && parse_time(opts[3].value, &end)) {
    rc = cli_usage(c, "--end: expected RFC 3339 or unix seconds, got '%s'", opts[3].value);
    goto out;
  }
  if (!range && (step || opts[3].value)) {
    rc = cli_usage(c, "--%s needs --range", step ? "step" : "end");
    goto out;
  }
  if (range && opts[0].value) {
    rc = cli_usage(c, "--time is for instant queries; a range query ends at --end");
    goto out;
  }
  if (range) {
    if (!opts[3].value) end = keel_now_ms() / 1000 * 1000; /* points on whole seconds */
    if (!step) step = (range + 30000) / 60000 * 1000; /* range/60 to the nearest second */
    if (step < 1000 && !opts[2].value) step = 1000;
    if (end - range < 0) {
      rc = cli_usage(c, "--range reaches before 1970");
      goto out;
    }
  }
  if (keel_buf_puts(&url, range ? "/api/v1/query_range" : "/api/v1/query")) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = api_query(c, &url, "query", pos[0]))) goto out;
  if (range) {
    fmt_secs(num, sizeof num, end - range);
    if ((rc = api_query(c, &url, "start", num))) goto out;
    fmt_secs(num, sizeof num, end);
    if ((rc = api_query(c, &url, "end", num))) goto out;
    fmt_secs(num, sizeof num, step);
    if ((rc = api_query(c, &url, "step", num))) goto out;
  } else if (opts[0].value) {
    fmt_secs(num, sizeof num, at);
    if ((rc = api_query(c, &url, "time", num))) goto out;
  }
  if ((rc = prom_get(c, url.data, &resp, &ans, msg, sizeof msg))) {
    if (msg[0]) fprintf(stderr, "keel: %s\n", msg);
    goto out;
  }
  print_warnings(ans);
  if (c->json) {
    /* The server's text unchanged: re-encoding would rewrite its float
     * timestamps (1700000000.123 as 1700000000.1229999). */
    fwrite(resp.data, 1, resp.len, stdout);
    if (resp.data[resp.len - 1] != '\n') fputc('\n', stdout);
    goto out;
  }
  data = json_object_get(ans, "data");
  result = json_object_get(data, "result");
  type = keel_json_str(data, "resultType");
  if (!type) type = "";
  if (!strcmp(type, "vector") && json_is_array(result)) {
    rc = print_vector(c, result);
  } else if (!strcmp(type, "matrix") && json_is_array(result)) {
    rc = print_matrix(c, result);
  } else if ((!strcmp(type, "scalar") || !strcmp(type, "string")) && json_is_array(result)) {
    char tmp[64], *v;
    const char *val = sample_value(result, 0, tmp, sizeof tmp);
    if (!val) {
      rc = cli_fail("bad answer from %s: the %s is not [time, \"value\"]", c->http.shown, type);
      goto out;
    }
    if (!(v = strdup(val))) { /* a string result may be long: not cut */
      rc = cli_fail("out of memory");
      goto out;
    }
    printf("%s\n", out_safe(v));
    free(v);
  } else {
    char t[32];
    snprintf(t, sizeof t, "%s", type);
    rc = cli_fail("bad answer from %s: unknown resultType '%s'", c->http.shown, out_safe(t));
  }
out:
  keel_buf_free(&url);
  keel_buf_free(&resp);
  json_decref(ans);
  return rc;
}

/* ---- keel top ------------------------------------------------------------------------------ */

/* Labels the queries of keel top match or group on: a tag by one of these
 * names could not be told from the series' own label. */
static const char *const own_labels[] = {"instance", "agent_id",   "job",    "mode", "cpu",
                                         "device",   "mountpoint", "fstype", NULL};

static int is_label_name(const char *s, size_t n) {
  if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return 0;
  return 1;
}

static int is_value_char(int ch) { return isalnum(ch) || (ch && strchr("._:/@+-", ch)); }

/* Appends value to out as a regular expression matching it literally: the
 * selector's value characters that are special in a regex ('.' and '+') in
 * brackets, which means the same in RE2 and in POSIX ERE and needs no
 * backslash inside a PromQL string. */
static int regex_literal(keel_buf_t *out, const char *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int r = v[i] == '.'   ? keel_buf_puts(out, "[.]")
            : v[i] == '+' ? keel_buf_puts(out, "[+]")
                          : keel_buf_append(out, v + i, 1);
    if (r) return r;
  }
  return 0;
}

/* Translates a tag selector (docs/selectors.md) into PromQL label matchers,
 * comma-separated, into out (empty for the empty selector):
 *   k=v → k="v"   k!=v → k!="v"   k in (a,b) → k=~"a|b"   k notin (a,b) → k!~"a|b"
 * and the special keys hostname and id become instance and agent_id.  These
 * mean exactly what the selector means, since keeld adds the agent's tags as
 * labels.  What has no exact translation is refused: k and !k (a metric
 * label cannot be present and empty), empty values, and keys that are not
 * label names.  0, or CLI_USAGE after a message naming the term. */
static int translate_selector(cli_t *c, const char *sel, keel_buf_t *out) {
  const char *p = skip_ws(sel);

  if (strlen(sel) > SELECTOR_MAX)
    return cli_usage(c, "--target: longer than %d bytes", SELECTOR_MAX);
  while (*p) {
    const char *key = p, *label;
    size_t klen, vn = 0;
    int neg = 0, set = 0, had_ws;
    char kq[80];

    if (*p == '!' && p[1] != '=')
      return cli_usage(c, "--target: '!KEY' (tag absent) has no exact metric-label form; "
                          "use KEY!=VALUE or KEY notin (...)");
    klen = strcspn(p, " \t\r\n,=!()");
    snprintf(kq, sizeof kq, "%.*s", (int)(klen < 64 ? klen : 64), key);
    out_safe(kq);
    if (!klen) return cli_usage(c, "--target: expected a tag key at '%.20s'", p);
    p += klen;
    had_ws = skip_ws(p) != p;
    p = skip_ws(p);
    if (p[0] == '!' && p[1] == '=') {
      neg = 1;
      p += 2;
    } else if (p[0] == '=') {
      p++;
    } else if (had_ws && !strncmp(p, "notin", 5) && (p[5] == '(' || isspace((unsigned char)p[5]))) {
      neg = set = 1;
      p += 5;
    } else if (had_ws && !strncmp(p, "in", 2) && (p[2] == '(' || isspace((unsigned char)p[2]))) {
      set = 1;
      p += 2;
    } else if (!*p || *p == ',') {
      return cli_usage(c,
                       "--target: '%s' (tag present) has no exact metric-label form; "
                       "use %s=VALUE or %s in (...)",
                       kq, kq, kq);
    } else {
      return cli_usage(c, "--target: after '%s': expected =, !=, in or notin", kq);
    }
    if (klen == 8 && !strncmp(key, "hostname", 8)) label = "instance";
    else if (klen == 2 && !strncmp(key, "id", 2)) label = "agent_id";
    else label = NULL;
    if (!label) {
      if (!is_label_name(key, klen) || (klen >= 2 && key[0] == '_' && key[1] == '_'))
        return cli_usage(c,
                         "--target: tag '%s' is not a metric label name "
                         "([a-zA-Z_][a-zA-Z0-9_]*, no leading __)",
                         kq);
      for (const char *const *o = own_labels; *o; o++)
        if (strlen(*o) == klen && !strncmp(*o, key, klen))
          return cli_usage(c,
                           "--target: tag '%s' cannot be told from the metrics' own '%s' "
                           "label%s",
                           kq, *o,
                           !strcmp(*o, "instance") || !strcmp(*o, "agent_id")
                               ? " (select hosts with hostname= or id=)"
                               : "");
    }
    if ((out->len && keel_buf_puts(out, ",")) ||
        keel_buf_printf(out, "%.*s%s\"", (int)(label ? strlen(label) : klen), label ? label : key,
                        set ? (neg ? "!~" : "=~") : (neg ? "!=" : "=")))
      return cli_usage(c, "--target: too long");
    p = skip_ws(p);
    if (set) {
      if (*p != '(')
        return cli_usage(c, "--target: expected '(' after '%s %s'", kq, neg ? "notin" : "in");
      p = skip_ws(p + 1);
      for (;;) {
        size_t n = 0;
        while (is_value_char((unsigned char)p[n])) n++;
        if (!n) return cli_usage(c, "--target: '%s': expected a value at '%.20s'", kq, p);
        if ((vn++ && keel_buf_puts(out, "|")) || regex_literal(out, p, n))
          return cli_usage(c, "--target: too long");
        p = skip_ws(p + n);
        if (*p == ',') {
          p = skip_ws(p + 1);
          continue;
        }
        if (*p == ')') {
          p++;
          break;
        }
        return cli_usage(c, "--target: '%s': expected ',' or ')' at '%.20s'", kq, p);
      }
    } else {
      size_t n = 0;
      while (is_value_char((unsigned char)p[n])) n++;
      if (!n)
        return cli_usage(c, "--target: '%s%s' with an empty value has no exact metric-label form",
                         kq, neg ? "!=" : "=");
      if (keel_buf_append(out, p, n)) return cli_usage(c, "--target: too long");
      p += n;
    }
    if (keel_buf_puts(out, "\"")) return cli_usage(c, "--target: too long");
    p = skip_ws(p);
    if (*p == ',') {
      p = skip_ws(p + 1);
      if (!*p) return cli_usage(c, "--target: a ',' ends the selector");
    } else if (*p) {
      return cli_usage(c, "--target: after '%s': unexpected '%.20s'", kq, p);
    }
  }
  return 0;
}

enum { COL_CPU, COL_LOAD, COL_MEM, COL_DISK, COL_RX, COL_TX, COL_DR, COL_DW, NCOLS };

/* The query of each column.  In the templates @W is the rate window in
 * seconds, @C the --target matchers as ",m1,m2" and @B as "{m1,m2}" (both ""
 * without --target, so no empty braces are sent), @F the filesystem types
 * that are not disks.  Grouping by agent_id as well as instance keeps two
 * agents with one hostname apart; against a plain Prometheus agent_id is
 * absent and instance alone decides. */
static const char *const col_queries[NCOLS] = {
    [COL_CPU] = "100 * (1 - avg by (instance, agent_id) "
                "(irate(node_cpu_seconds_total{mode=\"idle\"@C}[@Ws])))",
    [COL_LOAD] = "max by (instance, agent_id) (node_load1@B)",
    [COL_MEM] = "100 * max by (instance, agent_id) "
                "(1 - node_memory_MemAvailable_bytes@B / node_memory_MemTotal_bytes@B)",
    [COL_DISK] = "100 * max by (instance, agent_id) (1 - "
                 "node_filesystem_avail_bytes{fstype!~\"@F\"@C} / "
                 "(node_filesystem_size_bytes{fstype!~\"@F\"@C} > 0))",
    [COL_RX] = "sum by (instance, agent_id) "
               "(irate(node_network_receive_bytes_total{device!=\"lo\"@C}[@Ws]))",
    [COL_TX] = "sum by (instance, agent_id) "
               "(irate(node_network_transmit_bytes_total{device!=\"lo\"@C}[@Ws]))",
    [COL_DR] = "sum by (instance, agent_id) (irate(node_disk_read_bytes_total@B[@Ws]))",
    [COL_DW] = "sum by (instance, agent_id) (irate(node_disk_written_bytes_total@B[@Ws]))",
};
/* Filesystems that are no disk, or are always full (images, snaps). */
#define PSEUDO_FS "tmpfs|devtmpfs|ramfs|overlay|squashfs|iso9660|nsfs"

/* Names of the figures in --json output, and in messages. */
static const char *const col_names[NCOLS] = {
    [COL_CPU] = "cpu_percent",
    [COL_LOAD] = "load1",
    [COL_MEM] = "mem_percent",
    [COL_DISK] = "disk_percent",
    [COL_RX] = "net_rx_bytes_per_second",
    [COL_TX] = "net_tx_bytes_per_second",
    [COL_DR] = "disk_read_bytes_per_second",
    [COL_DW] = "disk_written_bytes_per_second",
};

/* Expands a col_queries template into out (reset first).  0 or KEEL_ETOOBIG. */
static int expand(keel_buf_t *out, const char *tmpl, int window, const char *comma,
                  const char *braced) {
  int rc = 0;
  keel_buf_reset(out);
  for (const char *p = tmpl; *p && !rc; p++) {
    if (p[0] != '@' || !strchr("WCBF", p[1])) {
      rc = keel_buf_append(out, p, 1);
      continue;
    }
    p++;
    if (*p == 'W') rc = keel_buf_printf(out, "%d", window);
    else rc = keel_buf_puts(out, *p == 'C' ? comma : *p == 'B' ? braced : PSEUDO_FS);
  }
  return rc ? rc : keel_buf_puts(out, ""); /* data set even when empty */
}

typedef struct host {
  char *instance, *agent; /* owned; "" when the label is absent */
  double v[NCOLS];
  unsigned char has[NCOLS];
} host_t;

typedef struct hosts {
  host_t *v;
  size_t n, cap;
} hosts_t;

static void hosts_clear(hosts_t *hs) {
  for (size_t i = 0; i < hs->n; i++) {
    free(hs->v[i].instance);
    free(hs->v[i].agent);
  }
  hs->n = 0;
}

static void hosts_free(hosts_t *hs) {
  hosts_clear(hs);
  free(hs->v);
  hs->v = NULL;
  hs->cap = 0;
}

/* The host with these labels, added when new; NULL when out of memory.
 * Linear: a refresh sees each host once per column, and fleets shown in a
 * terminal are small enough. */
static host_t *host_get(hosts_t *hs, const char *instance, const char *agent) {
  host_t *h;
  for (size_t i = 0; i < hs->n; i++)
    if (!strcmp(hs->v[i].instance, instance) && !strcmp(hs->v[i].agent, agent)) return &hs->v[i];
  if (!(h = keel_grow(hs->v, &hs->cap, hs->n, sizeof *h, 16))) return NULL;
  hs->v = h;
  h = &hs->v[hs->n];
  memset(h, 0, sizeof *h);
  h->instance = strdup(instance);
  h->agent = strdup(agent);
  if (!h->instance || !h->agent) {
    free(h->instance);
    free(h->agent);
    return NULL;
  }
  hs->n++;
  return h;
}

/* CPU descending (hosts without a CPU figure last), then by name. */
static int host_cmp(const void *a, const void *b) {
  const host_t *x = a, *y = b;
  int r;
  if (x->has[COL_CPU] != y->has[COL_CPU]) return x->has[COL_CPU] ? -1 : 1;
  if (x->has[COL_CPU] && x->v[COL_CPU] != y->v[COL_CPU])
    return x->v[COL_CPU] > y->v[COL_CPU] ? -1 : 1;
  if ((r = strcmp(x->instance, y->instance))) return r;
  return strcmp(x->agent, y->agent);
}

/* Runs the column queries (paths in query[]) once and joins their vectors
 * into hs (emptied first) by (instance, agent_id), sorted.  0, or CLI_FAIL
 * with msg set (CLI_USAGE: a configuration error, already printed). */
static int top_refresh(cli_t *c, char *const *query, hosts_t *hs, keel_buf_t *resp, char *msg,
                       size_t msgsz) {
  json_t *ans = NULL;
  int rc = 0;

  hosts_clear(hs);
  for (int col = 0; col < NCOLS; col++) {
    const json_t *data, *result, *s;
    const char *type;
    size_t i;

    json_decref(ans);
    ans = NULL;
    if ((rc = prom_get(c, query[col], resp, &ans, msg, msgsz))) goto out;
    data = json_object_get(ans, "data");
    result = json_object_get(data, "result");
    type = keel_json_str(data, "resultType");
    if (!type || strcmp(type, "vector") || !json_is_array(result)) {
      snprintf(msg, msgsz, "bad answer from %s: the %s query gave no vector", c->http.shown,
               col_names[col]);
      rc = CLI_FAIL;
      goto out;
    }
    json_array_foreach(result, i, s) {
      const json_t *m = json_object_get(s, "metric");
      const char *inst = keel_json_str(m, "instance"), *agent = keel_json_str(m, "agent_id");
      const char *val = json_string_value(json_array_get(json_object_get(s, "value"), 1));
      host_t *h;
      char *end;
      double d;
      if (!(h = host_get(hs, inst ? inst : "", agent ? agent : ""))) {
        snprintf(msg, msgsz, "out of memory");
        rc = CLI_FAIL;
        goto out;
      }
      if (!val) continue;
      d = strtod(val, &end);
      if (end == val || *end || !isfinite(d)) continue; /* NaN, ±Inf: no figure */
      h->v[col] = d;
      h->has[col] = 1;
    }
  }
  if (hs->n) qsort(hs->v, hs->n, sizeof *hs->v, host_cmp);
out:
  json_decref(ans);
  return rc;
}

/* 512B, 1.5K, 23.4M, 1.2G: bytes (per second) in 1024s. */
static void fmt_bytes(char *out, size_t outsz, double v) {
  static const char units[] = "KMGTPE";
  int u = -1;
  if (v < 0) v = 0;
  if (v < 1024) {
    snprintf(out, outsz, "%.0fB", v);
    return;
  }
  while (v >= 1024 && u < (int)sizeof units - 2) {
    v /= 1024;
    u++;
  }
  snprintf(out, outsz, v < 99.95 ? "%.1f%c" : "%.0f%c", v, units[u]);
}

/* "RX/TX" of two byte rates; "-" for a missing one, "" when both are. */
static void fmt_pair(char *out, size_t outsz, const host_t *h, int a, int b) {
  char x[16] = "-", y[16] = "-";
  out[0] = '\0';
  if (!h->has[a] && !h->has[b]) return;
  if (h->has[a]) fmt_bytes(x, sizeof x, h->v[a]);
  if (h->has[b]) fmt_bytes(y, sizeof y, h->v[b]);
  snprintf(out, outsz, "%s/%s", x, y);
}

/* One figure with fmt, clamped to [lo, hi]; "" when missing. */
static void fmt_num(char *out, size_t outsz, const host_t *h, int col, const char *fmt, double lo,
                    double hi) {
  double v = h->v[col];
  out[0] = '\0';
  if (!h->has[col]) return;
  if (v < lo) v = lo; /* irate jitter: idle may come out a hair above 100% */
  if (v > hi) v = hi;
  snprintf(out, outsz, fmt, v);
}

/* The hosts as a table into f: at most max_rows lines of hosts (0: all),
 * the last of them then saying how many more there are. */
static int top_table(const hosts_t *hs, FILE *f, size_t max_rows) {
  static const char *const heads[] = {"HOST", "AGENT", "CPU%",      "LOAD1",
                                      "MEM%", "DISK%", "NET RX/TX", "DISK R/W"};
  out_table_t tab;
  size_t i, shown = hs->n;
  int rc = 0;

  if (max_rows && shown > max_rows) shown = max_rows > 1 ? max_rows - 1 : 1;
  out_table_init(&tab, 8, heads);
  for (i = 0; i < shown; i++) {
    const host_t *h = &hs->v[i];
    char cpu[16], load[32], mem[16], disk[16], net[40], io[40];
    const char *row[8] = {h->instance, h->agent, cpu, load, mem, disk, net, io};
    fmt_num(cpu, sizeof cpu, h, COL_CPU, "%.1f", 0, 100);
    fmt_num(load, sizeof load, h, COL_LOAD, "%.2f", 0, 1e9);
    fmt_num(mem, sizeof mem, h, COL_MEM, "%.1f", 0, 100);
    fmt_num(disk, sizeof disk, h, COL_DISK, "%.1f", 0, 100);
    fmt_pair(net, sizeof net, h, COL_RX, COL_TX);
    fmt_pair(io, sizeof io, h, COL_DR, COL_DW);
    if ((rc = out_table_add(&tab, row))) goto out;
  }
  out_table_print(&tab, f);
  if (shown < hs->n) fprintf(f, "... %zu more hosts\n", hs->n - shown);
out:
  out_table_free(&tab);
  return rc;
}

/* One JSON line: {"time", "hosts":[{"instance", "agent_id", figures...}]},
 * a missing label or figure as null, hosts in the table's order. */
static int top_json(const hosts_t *hs) {
  char ts[KEEL_TIME_STRLEN];
  json_t *o = NULL, *list = json_array(), *h;
  int rc = CLI_FAIL;

  keel_time_format(ts, keel_now_ms());
  if (!list || !(o = json_pack("{s:s,s:O}", "time", ts, "hosts", list))) goto out;
  for (size_t i = 0; i < hs->n; i++) {
    const host_t *x = &hs->v[i];
    /* labels are UTF-8 (they came as JSON), so json_string cannot fail on them */
    if (!(h = json_object()) || json_array_append_new(list, h) ||
        json_object_set_new(h, "instance",
                            x->instance[0] ? json_string(x->instance) : json_null()) ||
        json_object_set_new(h, "agent_id", x->agent[0] ? json_string(x->agent) : json_null()))
      goto out;
    for (int col = 0; col < NCOLS; col++)
      if (json_object_set_new(h, col_names[col], x->has[col] ? json_real(x->v[col]) : json_null()))
        goto out;
  }
  out_json_line(o, stdout);
  rc = 0;
out:
  json_decref(list);
  json_decref(o);
  return rc ? cli_fail("out of memory") : 0;
}

static volatile sig_atomic_t top_stop;
static void on_stop(int sig) {
  (void)sig;
  top_stop = 1;
}

/* Writes the frame in buf[0..len) over the previous one: from the top left,
 * each line cut short of the terminal's width (a line filling it would wrap
 * or be half-erased by the clear-to-end-of-line that follows) and the rest
 * of the screen cleared, in one write so it does not flicker. */
static void draw(const char *buf, size_t len, size_t cols) {
  const char *p = buf, *end = buf + len;
  keel_buf_t f;

  keel_buf_init(&f, len * 2 + 64);
  keel_buf_puts(&f, "\033[H");
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p), w = 0, k;
    for (k = 0; k < n; k++) /* UTF-8 continuation bytes take no column */
      if (((unsigned char)p[k] & 0xc0) != 0x80 && ++w >= cols) break;
    keel_buf_append(&f, p, k);
    keel_buf_puts(&f, "\033[K\n");
    p += n + 1;
  }
  keel_buf_puts(&f, "\033[J");
  if (f.data) fwrite(f.data, 1, f.len, stdout);
  fflush(stdout);
  keel_buf_free(&f);
}

/* The live frame: a title line, the error of the last refresh if it failed,
 * and the table cut to the terminal's height. */
static int top_frame(cli_t *c, const hosts_t *hs, const char *every, const char *err) {
  struct winsize ws;
  size_t rows = 24, cols = 80, flen = 0, head = err ? 4 : 3;
  char *frame = NULL, now[16];
  time_t wall = time(NULL);
  struct tm tm;
  FILE *f;
  int rc;

  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
    rows = ws.ws_row;
    cols = ws.ws_col;
  }
  if (!(f = open_memstream(&frame, &flen))) return cli_fail("out of memory");
  localtime_r(&wall, &tm);
  strftime(now, sizeof now, "%H:%M:%S", &tm);
  fprintf(f, "keel top  %s  %s  every %s  %zu host%s  (Ctrl-C to quit)\n", c->http.shown, now,
          every, hs->n, hs->n == 1 ? "" : "s");
  if (err) fprintf(f, "keel: %s (retrying; figures from the last good refresh)\n", err);
  fputc('\n', f);
  /* head lines and the table's header row above the hosts, and the last
   * line left free so the final newline does not scroll the title away */
  rc = top_table(hs, f, rows > head + 2 ? rows - head - 2 : 1);
  if (fclose(f) && !rc) rc = cli_fail("out of memory");
  if (!rc) draw(frame, flen, cols);
  free(frame);
  return rc;
}

int cmd_top(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"interval", "DURATION", NULL},
                      {"once", NULL, NULL},
                      {"target", "SELECTOR", NULL},
                      {NULL, NULL, NULL}};
  struct sigaction sa, old_int, old_term;
  char *query[NCOLS] = {NULL}, msg[MSG_MAX];
  hosts_t shown = {NULL, 0, 0}, next = {NULL, 0, 0}, tmp;
  keel_buf_t sel, comma, braced, q, url, resp;
  int64_t interval = 1000;
  int rc, window, live, sig_set = 0, good = 0;

  keel_buf_init(&sel, URL_MAX_BYTES);
  keel_buf_init(&comma, URL_MAX_BYTES);
  keel_buf_init(&braced, URL_MAX_BYTES);
  keel_buf_init(&q, URL_MAX_BYTES);
  keel_buf_init(&url, URL_MAX_BYTES);
  keel_buf_init(&resp, KEEL_HTTP_MAX_RESPONSE);
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) goto out;
  if (opts[0].value && (keel_duration_parse(opts[0].value, &interval) ||
                        interval < TOP_MIN_INTERVAL_MS || interval > 86400000)) {
    rc = cli_usage(c, "--interval: expected a duration from 1s to 24h, got '%s'", opts[0].value);
    goto out;
  }
  if (opts[2].value && (rc = translate_selector(c, opts[2].value, &sel))) goto out;
  if (sel.len &&
      (keel_buf_printf(&comma, ",%s", sel.data) || keel_buf_printf(&braced, "{%s}", sel.data))) {
    rc = cli_usage(c, "--target: too long");
    goto out;
  }
  /* irate: the rate between the last two samples, so a figure follows 1 s
   * collection closely.  The window only bounds how old those samples may
   * be: 5 refreshes and at least 30 s, so slower collection still shows. */
  window = (int)((5 * interval + 999) / 1000);
  if (window < TOP_MIN_WINDOW_S) window = TOP_MIN_WINDOW_S;
  for (int col = 0; col < NCOLS; col++) {
    keel_buf_reset(&url);
    if (expand(&q, col_queries[col], window, bstr(&comma), bstr(&braced)) ||
        keel_buf_puts(&url, "/api/v1/query")) {
      rc = cli_usage(c, "--target: too long");
      goto out;
    }
    if ((rc = api_query(c, &url, "query", q.data))) goto out;
    if (!(query[col] = strdup(url.data))) {
      rc = cli_fail("out of memory");
      goto out;
    }
  }
  live = !opts[1].value && isatty(STDOUT_FILENO);
  if (live) {
    /* Ctrl-C ends the loop between refreshes, so it exits like --once. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: a sleep ends at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sig_set = 1;
  }
  while (!top_stop) {
    int64_t started = keel_mono_ms(), left;
    int r = top_refresh(c, query, &next, &resp, msg, sizeof msg);

    /* Failing before anything was shown means the setup is wrong: say so and
     * stop.  Later a failure (keeld restarting) is shown and retried. */
    if (r == CLI_USAGE || (r && (!live || !good))) {
      if (msg[0]) fprintf(stderr, "keel: %s\n", msg);
      rc = r;
      goto out;
    }
    if (top_stop) break;
    if (!r) {
      tmp = shown;
      shown = next;
      next = tmp;
      good = 1;
    }
    if (c->json) {
      if (r) fprintf(stderr, "keel: %s (retrying)\n", msg);
      else if ((rc = top_json(&shown))) goto out;
      fflush(stdout);
    } else if (!live) {
      if ((rc = top_table(&shown, stdout, 0))) goto out;
    } else if ((rc = top_frame(c, &shown, opts[0].value ? opts[0].value : "1s", r ? msg : NULL))) {
      goto out;
    }
    if (!live) break;
    left = interval - (keel_mono_ms() - started);
    if (left > 0 && !top_stop) cli_sleep_ms((long)left);
  }
  rc = CLI_OK;
out:
  if (sig_set) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  hosts_free(&shown);
  hosts_free(&next);
  for (int col = 0; col < NCOLS; col++) free(query[col]);
  keel_buf_free(&sel);
  keel_buf_free(&comma);
  keel_buf_free(&braced);
  keel_buf_free(&q);
  keel_buf_free(&url);
  keel_buf_free(&resp);
  return rc;
}
