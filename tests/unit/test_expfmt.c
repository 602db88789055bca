/* Unit tests for scrape/expfmt.c: the Prometheus text 0.0.4 and
 * OpenMetrics 1.0 parsers, on good bodies (every sample as delivered) and
 * bad ones (the exact message, and nothing delivered). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/buf.h"
#include "scrape/expfmt.h"

/* Renders a sample as one line: name{a="b",...} value [t]; values in the
 * shortest form that reads back, labels escaped as in the text format. */
static void render_value(keel_buf_t *b, double v) {
  char tmp[40];
  if (isnan(v)) {
    keel_buf_puts(b, "NaN");
  } else if (isinf(v)) {
    keel_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
  } else {
    snprintf(tmp, sizeof tmp, "%.15g", v);
    if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
    keel_buf_puts(b, tmp);
  }
}

static int collect(void *ud, const k_label_t *l, size_t n, int64_t t, double v) {
  keel_buf_t *b = ud;
  const char *name = NULL;
  int first = 1;
  for (size_t i = 0; i < n; i++)
    if (!strcmp(l[i].name, "__name__")) name = l[i].value;
  assert_non_null(name);
  keel_buf_puts(b, name);
  for (size_t i = 0; i < n; i++) {
    if (!strcmp(l[i].name, "__name__")) continue;
    keel_buf_printf(b, "%s%s=\"", first ? "{" : ",", l[i].name);
    for (const char *c = l[i].value; *c; c++) {
      if (*c == '\n') keel_buf_puts(b, "\\n");
      else if (*c == '"' || *c == '\\') keel_buf_printf(b, "\\%c", *c);
      else keel_buf_append(b, c, 1);
    }
    keel_buf_puts(b, "\"");
    first = 0;
  }
  if (!first) keel_buf_puts(b, "}");
  keel_buf_puts(b, " ");
  render_value(b, v);
  if (t != K_EXPFMT_NO_TS) keel_buf_printf(b, " %lld", (long long)t);
  keel_buf_puts(b, "\n");
  return 0;
}

static void ok(k_expfmt_kind_t kind, const char *text, const char *want) {
  keel_buf_t b;
  keel_err_t e = {0};
  keel_buf_init(&b, 1 << 20);
  keel_buf_puts(&b, "");
  if (k_expfmt_parse(text, strlen(text), kind, collect, &b, &e))
    fail_msg("%s: %s\n--- body\n%s", kind ? "openmetrics" : "text", e.msg, text);
  if (strcmp(b.data, want)) fail_msg("--- got\n%s--- want\n%s", b.data, want);
  keel_buf_free(&b);
}

static void bad_n(k_expfmt_kind_t kind, const char *text, size_t len, const k_expfmt_limits_t *lim,
                  int code, const char *want) {
  k_expfmt_set_t s;
  keel_err_t e = {0};
  int rc = k_expfmt_parse_set(text, len, kind, lim, &s, &e);
  if (rc != code || strcmp(e.msg, want))
    fail_msg("%s body '%.*s': rc %d '%s', want %d '%s'", kind ? "openmetrics" : "text", (int)len,
             text, rc, e.msg, code, want);
  assert_int_equal(s.n, 0); /* nothing kept */
  k_expfmt_set_free(&s);
  if (!lim) {
    /* The callback form delivers nothing either. */
    keel_buf_t b;
    keel_buf_init(&b, 1 << 20);
    assert_int_equal(k_expfmt_parse(text, len, kind, collect, &b, NULL), code);
    assert_int_equal(b.len, 0);
    keel_buf_free(&b);
  }
}

static void bad(k_expfmt_kind_t kind, const char *text, const char *want) {
  bad_n(kind, text, strlen(text), NULL, KEEL_EINVAL, want);
}

#define BADL(text, ...) bad_n(K_EXPFMT_TEXT, text, strlen(text), __VA_ARGS__)
#define TXT K_EXPFMT_TEXT
#define OM K_EXPFMT_OPENMETRICS

static void test_kind(void **state) {
  (void)state;
  assert_int_equal(k_expfmt_kind(NULL), TXT);
  assert_int_equal(k_expfmt_kind(""), TXT);
  assert_int_equal(k_expfmt_kind("text/plain; version=0.0.4; charset=utf-8"), TXT);
  assert_int_equal(k_expfmt_kind("application/openmetrics-text; version=1.0.0; charset=utf-8"), OM);
  assert_int_equal(k_expfmt_kind("Application/OpenMetrics-Text"), OM);
  assert_int_equal(k_expfmt_kind("application/openmetrics-textx"), TXT);
  assert_int_equal(k_expfmt_kind("application/json"), TXT);
}

static void test_text_good(void **state) {
  (void)state;
  ok(TXT, "", "");
  ok(TXT, "\n\n  \n# just a comment\n#no space: also a comment\n", "");
  ok(TXT,
     "# HELP http_requests_total The total number of HTTP requests.\n"
     "# TYPE http_requests_total counter\n"
     "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n"
     "http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n"
     "\n"
     "# Escaping in label values:\n"
     "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n"
     "\n"
     "# Minimalistic line:\n"
     "metric_without_timestamp_and_labels 12.47\n"
     "\n"
     "# A weird metric from before the epoch:\n"
     "something_weird{problem=\"division by zero\"} +Inf -3982045\n",
     "http_requests_total{code=\"200\",method=\"post\"} 1027 1395066363000\n"
     "http_requests_total{code=\"400\",method=\"post\"} 3 1395066363000\n"
     "msdos_file_access_time_seconds{error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\",path=\"C:\\\\DIR\\\\FILE.TXT\"} 1458255915\n"
     "metric_without_timestamp_and_labels 12.47\n"
     "something_weird{problem=\"division by zero\"} +Inf -3982045\n");
  /* blanks and tabs anywhere between tokens, a trailing comma, no final
   * newline, '}' right before the value, {} */
  ok(TXT, "  a { x = \"1\" ,\ty=\"2\", } \t 1.5 \t 10 \t\nb{}2\nc{z=\"\"}\t-0.25e-1",
     "a{x=\"1\",y=\"2\"} 1.5 10\nb 2\nc -0.025\n");
  /* special values, any case; the other escapes kept as they are */
  ok(TXT, "v{a=\"x\\ty\\\\\"} NaN\nw -inf\nx +Infinity\ny .5\nz 5.\nq 1E3\n",
     "v{a=\"x\\\\ty\\\\\"} NaN\nw -Inf\nx +Inf\ny 0.5\nz 5\nq 1000\n");
  /* UTF-8 values; colons in metric names; "# HELP" alone is a comment */
  ok(TXT, "# HELP\n# HELP   \nns:sub:m{l=\"h\xc3\xa9llo \xe2\x82\xac\"} 1\n",
     "ns:sub:m{l=\"h\xc3\xa9llo \xe2\x82\xac\"} 1\n");
  /* a label with an empty value is no label */
  ok(TXT, "a{x=\"\",y=\"1\"} 1\n", "a{y=\"1\"} 1\n");
  /* underflow is fine; negative timestamps too */
  ok(TXT, "a 1e-400 -5\n", "a 0 -5\n");
  /* a histogram and a summary */
  ok(TXT,
     "# HELP rpc_duration_seconds A summary of the RPC duration in seconds.\n"
     "# TYPE rpc_duration_seconds summary\n"
     "rpc_duration_seconds{quantile=\"0.01\"} 3102\n"
     "rpc_duration_seconds{quantile=\"0.5\"} 4773\n"
     "rpc_duration_seconds_sum 1.7560473e+07\n"
     "rpc_duration_seconds_count 2693\n"
     "# TYPE http_request_duration_seconds histogram\n"
     "http_request_duration_seconds_bucket{le=\"0.05\"} 24054\n"
     "http_request_duration_seconds_bucket{le=\"+Inf\"} 144320\n"
     "http_request_duration_seconds_sum 53423\n"
     "http_request_duration_seconds_count 144320\n"
     "# HELP rpc_duration_seconds_count not the summary's: a second family is fine in 0.0.4\n",
     "rpc_duration_seconds{quantile=\"0.01\"} 3102\n"
     "rpc_duration_seconds{quantile=\"0.5\"} 4773\n"
     "rpc_duration_seconds_sum 17560473\n"
     "rpc_duration_seconds_count 2693\n"
     "http_request_duration_seconds_bucket{le=\"0.05\"} 24054\n"
     "http_request_duration_seconds_bucket{le=\"+Inf\"} 144320\n"
     "http_request_duration_seconds_sum 53423\n"
     "http_request_duration_seconds_count 144320\n");
  /* families need not be contiguous in 0.0.4, HELP may follow samples */
  ok(TXT, "a{x=\"1\"} 1\nb 2\na{x=\"2\"} 3\n# HELP a late help\n",
     "a{x=\"1\"} 1\nb 2\na{x=\"2\"} 3\n");
}

static void test_text_bad(void **state) {
  (void)state;
  bad(TXT, "foo bar\n", "line 1: invalid value 'bar'");
  bad(TXT, "ok 1\nfoo{a=\"b\" 1\n", "line 2: expected ',' or '}' after the value of label 'a'");
  bad(TXT, "foo{a=b} 1", "line 1: expected '\"' to open the value of label 'a'");
  bad(TXT, "foo{a} 1", "line 1: expected '=' after label name 'a'");
  bad(TXT, "foo{1a=\"x\"} 1", "line 1: expected a label name or '}', got '1'");
  bad(TXT, "foo{a=\"x} 1", "line 1: value of label 'a' has no closing '\"'");
  bad(TXT, "foo{a=\"x\",", "line 1: expected a label name or '}', got the end of the line");
  bad(TXT, "foo\n", "line 1: expected a value after 'foo'");
  bad(TXT, "foo{} \n", "line 1: expected a value after 'foo'");
  bad(TXT, "foo 1 abc", "line 1: invalid timestamp 'abc'");
  bad(TXT, "foo 1 1.5", "line 1: invalid timestamp '1.5'");
  bad(TXT, "foo 1 99999999999999999999", "line 1: invalid timestamp '99999999999999999999'");
  bad(TXT, "foo 1 -9223372036854775808", "line 1: invalid timestamp '-9223372036854775808'");
  bad(TXT, "foo 1 2 3", "line 1: unexpected '3' after the timestamp");
  bad(TXT, "foo} 1", "line 1: unexpected '}' after the metric name");
  bad(TXT, "1foo 1", "line 1: expected a metric name, got '1'");
  bad(TXT, "foo 1e999", "line 1: invalid value '1e999'");
  bad(TXT, "foo 0x10", "line 1: invalid value '0x10'");
  bad(TXT, "foo 1_000", "line 1: invalid value '1_000'");
  bad(TXT, "foo -NaN", "line 1: invalid value '-NaN'");
  bad(TXT, "foo 1e", "line 1: invalid value '1e'");
  bad(TXT, "foo .", "line 1: invalid value '.'");
  bad(TXT, "foo 1\r\n", "line 1: invalid value '1?'");
  bad(TXT, "# TYPE foo bar",
      "line 1: TYPE: unknown type 'bar' (counter, gauge, histogram, summary, untyped)");
  bad(TXT, "# TYPE foo", "line 1: TYPE: unknown type '' (counter, gauge, histogram, summary, untyped)");
  bad(TXT, "# TYPE foo counter x", "line 1: TYPE: unexpected 'x' after the type");
  bad(TXT, "# TYPE foo unknown",
      "line 1: TYPE: unknown type 'unknown' (counter, gauge, histogram, summary, untyped)");
  bad(TXT, "# TYPE foo counter\n# TYPE foo gauge", "line 2: second TYPE line for 'foo'");
  bad(TXT, "# HELP foo a\n# HELP foo b", "line 2: second HELP line for 'foo'");
  bad(TXT, "# HELP 1x y", "line 1: HELP: invalid metric name '1x'");
  bad(TXT, "# TYPE a-b gauge", "line 1: TYPE: invalid metric name 'a-b'");
  bad(TXT, "foo 1\n# TYPE foo counter", "line 2: TYPE line for 'foo' after its samples");
  bad(TXT, "foo 1\n\nfoo 2", "line 3: duplicate series foo (first on line 1)");
  bad(TXT, "foo{b=\"2\",a=\"1\"} 1\nfoo{a=\"1\",b=\"2\"} 2",
      "line 2: duplicate series foo{a=\"1\",b=\"2\"} (first on line 1)");
  bad(TXT, "a{x=\"\"} 1\na 2", "line 2: duplicate series a (first on line 1)");
  bad(TXT, "foo{a=\"1\",a=\"2\"} 1", "line 1: duplicate label 'a'");
  bad(TXT, "foo{__name__=\"x\"} 1", "line 1: duplicate label '__name__'");
  bad(TXT, "# TYPE h histogram\nh_bucket 1", "line 2: 'h_bucket' is a bucket without an 'le' label");
  bad(TXT, "# TYPE h histogram\nh_bucket{le=\"x\"} 1", "line 2: invalid 'le' value 'x'");
  bad(TXT, "# TYPE h histogram\nh 1", "line 2: histogram family 'h' has no sample named 'h'");
  bad(TXT, "# TYPE s summary\ns 1", "line 2: 's' is a summary quantile without a 'quantile' label");
  bad(TXT, "# TYPE s summary\ns{quantile=\"p99\"} 1", "line 2: invalid 'quantile' value 'p99'");
  bad(TXT, "a{l=\"\xff\"} 1", "line 1: value of label 'l' is not valid UTF-8");
  bad(TXT, "a{l=\"\xed\xa0\x80\"} 1", "line 1: value of label 'l' is not valid UTF-8"); /* surrogate */
  bad_n(TXT, "foo 1\nbar\0 2", 12, NULL, KEEL_EINVAL, "line 2: NUL byte");
  /* quoting: long and unprintable text is cut and masked */
  bad(TXT, "foo 12345678901234567890123456789012345678901234567890x",
      "line 1: invalid value '1234567890123456789012345678901234567890...'");
}

static void test_limits(void **state) {
  k_expfmt_limits_t lim = {0};
  char big[600];
  (void)state;
  lim.max_samples = 2;
  BADL("a 1\nb 1\nc 1\n", &lim, KEEL_ETOOBIG, "line 3: more than 2 samples");
  lim = (k_expfmt_limits_t){.max_labels = 2};
  BADL("a{x=\"1\"} 1\na{x=\"1\",y=\"2\"} 1", &lim, KEEL_ETOOBIG, "line 2: more than 2 labels");
  lim = (k_expfmt_limits_t){.max_name_len = 3};
  BADL("abcd 1", &lim, KEEL_ETOOBIG, "line 1: metric name longer than 3 bytes");
  BADL("a{abcd=\"1\"} 1", &lim, KEEL_ETOOBIG, "line 1: label name longer than 3 bytes");
  BADL("# TYPE abcd gauge", &lim, KEEL_ETOOBIG, "line 1: metric name longer than 3 bytes");
  lim = (k_expfmt_limits_t){.max_value_len = 3};
  BADL("a{x=\"a\\\\c\"} 1\na{x=\"abcd\"} 1", &lim, KEEL_ETOOBIG,
        "line 2: value of label 'x' longer than 3 bytes");
  lim = (k_expfmt_limits_t){.max_body = 10};
  BADL("a 1\nb 2\nc 3\nd 4\n", &lim, KEEL_ETOOBIG, "body: 16 bytes, more than the limit of 10");
  /* defaults: 512-byte names pass, 513 do not */
  memset(big, 'n', sizeof big);
  memcpy(big + 512, " 1", 3);
  {
    k_expfmt_set_t s;
    assert_int_equal(k_expfmt_parse_set(big, strlen(big), TXT, NULL, &s, NULL), 0);
    assert_int_equal(s.n, 1);
    k_expfmt_set_free(&s);
  }
  big[512] = 'n';
  memcpy(big + 513, " 1", 3);
  bad_n(TXT, big, strlen(big), NULL, KEEL_ETOOBIG, "line 1: metric name longer than 512 bytes");
}

static void test_om_good(void **state) {
  (void)state;
  ok(OM, "# EOF", "");
  ok(OM, "# EOF\n", "");
  /* the examples of the OpenMetrics 1.0 specification */
  ok(OM,
     "# TYPE acme_http_router_request_seconds summary\n"
     "# UNIT acme_http_router_request_seconds seconds\n"
     "# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.\n"
     "acme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32\n"
     "acme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\n"
     "acme_http_router_request_seconds_created{path=\"/api/v1\",method=\"GET\"} 1605281325.0\n"
     "acme_http_router_request_seconds_sum{path=\"/api/v2\",method=\"POST\"} 479.3\n"
     "acme_http_router_request_seconds_count{path=\"/api/v2\",method=\"POST\"} 34.0\n"
     "acme_http_router_request_seconds_created{path=\"/api/v2\",method=\"POST\"} 1605281325.0\n"
     "# TYPE go_goroutines gauge\n"
     "# HELP go_goroutines Number of goroutines that currently exist.\n"
     "go_goroutines 69\n"
     "# TYPE process_cpu_seconds counter\n"
     "# UNIT process_cpu_seconds seconds\n"
     "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n"
     "process_cpu_seconds_total 4.20072246e+06\n"
     "# TYPE foo counter\n"
     "foo_total 17.0 1520879607.789 # {id=\"counter-test\"} 5\n"
     "foo_created 1520872607.123\n"
     "# TYPE hist histogram\n"
     "hist_bucket{le=\"0.01\"} 0\n"
     "hist_bucket{le=\"0.1\"} 8 # {trace_id=\"KOO5S4vxi0o\"} 0.067 1520879607.1\n"
     "hist_bucket{le=\"+Inf\"} 17 # {} 0.2\n"
     "hist_count 17\n"
     "hist_sum 324789.3\n"
     "hist_created 1520430000.123\n"
     "# TYPE gh gaugehistogram\n"
     "gh_bucket{le=\"1\"} 2\n"
     "gh_bucket{le=\"+Inf\"} 3\n"
     "gh_gcount 3\n"
     "gh_gsum 4\n"
     "# TYPE foo_build info\n"
     "foo_build_info{name=\"pretty name\",version=\"8.2.7\"} 1\n"
     "# TYPE feature stateset\n"
     "feature{feature=\"a\"} 1\n"
     "feature{feature=\"b\"} 0\n"
     "# TYPE other unknown\n"
     "other 1 -1.5\n"
     "untyped_thing{l=\"with \\\"quotes\\\"\"} 2\n"
     "# EOF\n",
     "acme_http_router_request_seconds_sum{method=\"GET\",path=\"/api/v1\"} 9036.32\n"
     "acme_http_router_request_seconds_count{method=\"GET\",path=\"/api/v1\"} 807283\n"
     "acme_http_router_request_seconds_created{method=\"GET\",path=\"/api/v1\"} 1605281325\n"
     "acme_http_router_request_seconds_sum{method=\"POST\",path=\"/api/v2\"} 479.3\n"
     "acme_http_router_request_seconds_count{method=\"POST\",path=\"/api/v2\"} 34\n"
     "acme_http_router_request_seconds_created{method=\"POST\",path=\"/api/v2\"} 1605281325\n"
     "go_goroutines 69\n"
     "process_cpu_seconds_total 4200722.46\n"
     "foo_total 17 1520879607789\n"
     "foo_created 1520872607.123\n"
     "hist_bucket{le=\"0.01\"} 0\n"
     "hist_bucket{le=\"0.1\"} 8\n"
     "hist_bucket{le=\"+Inf\"} 17\n"
     "hist_count 17\n"
     "hist_sum 324789.3\n"
     "hist_created 1520430000.123\n"
     "gh_bucket{le=\"1\"} 2\n"
     "gh_bucket{le=\"+Inf\"} 3\n"
     "gh_gcount 3\n"
     "gh_gsum 4\n"
     "foo_build_info{name=\"pretty name\",version=\"8.2.7\"} 1\n"
     "feature{feature=\"a\"} 1\n"
     "feature{feature=\"b\"} 0\n"
     "other 1 -1500\n"
     "untyped_thing{l=\"with \\\"quotes\\\"\"} 2\n");
}

static void test_om_bad(void **state) {
  (void)state;
  bad(OM, "", "line 1: missing '# EOF' at the end");
  bad(OM, "foo 1\n", "line 2: missing '# EOF' at the end");
  bad(OM, "foo 1", "line 2: missing '# EOF' at the end");
  bad(OM, "# EOF\nfoo 1\n", "line 2: unexpected data after '# EOF'");
  bad(OM, "# EOF\n\n", "line 2: unexpected data after '# EOF'");
  bad(OM, "# EOF \n", "line 1: unexpected text after '# EOF'");
  bad(OM, "foo 1\n\n# EOF\n", "line 2: empty line");
  bad(OM, "# hello\n# EOF", "line 1: expected '# HELP', '# TYPE', '# UNIT' or '# EOF'");
  bad(OM, "#TYPE a gauge\n# EOF", "line 1: expected '# HELP', '# TYPE', '# UNIT' or '# EOF'");
  bad(OM, "foo  1\n# EOF", "line 1: expected a value after 'foo'");
  bad(OM, " foo 1\n# EOF", "line 1: expected a metric name, got ' '");
  bad(OM, "foo\t1\n# EOF", "line 1: unexpected '?' after the metric name");
  bad(OM, "foo{a = \"1\"} 1\n# EOF", "line 1: expected '=' after label name 'a'");
  bad(OM, "foo{a=\"1\"}1\n# EOF", "line 1: unexpected '1' after the metric name");
  bad(OM, "a 1 \n# EOF", "line 1: unexpected space at the end of the line");
  bad(OM, "a 1  2\n# EOF", "line 1: unexpected space after the value '1'");
  bad(OM, "a 1 abc\n# EOF", "line 1: invalid timestamp 'abc'");
  bad(OM, "a 1 NaN\n# EOF", "line 1: invalid timestamp 'NaN'");
  bad(OM, "a 1 1 1\n# EOF", "line 1: unexpected ' 1' after the timestamp");
  bad(OM, "# TYPE a untyped\n# EOF",
      "line 1: TYPE: unknown type 'untyped' (counter, gauge, histogram, gaugehistogram, "
      "stateset, info, summary, unknown)");
  bad(OM, "# TYPE foo counter\nfoo 1\n# EOF",
      "line 2: counter family 'foo' has no sample named 'foo'");
  bad(OM, "# TYPE i info\ni 1\n# EOF", "line 2: info family 'i' has no sample named 'i'");
  bad(OM, "a 1\nb 1\na{x=\"1\"} 1\n# EOF",
      "line 3: metric family 'a' appeared before: its lines must be contiguous");
  bad(OM, "# TYPE a counter\na_total 1\nb 1\na_created 1\n# EOF",
      "line 4: metric family 'a' appeared before: its lines must be contiguous");
  bad(OM, "a 1\n# TYPE b gauge\n# HELP a x\n# EOF",
      "line 3: metric family 'a' appeared before: its lines must be contiguous");
  bad(OM, "# TYPE a gauge\na 1\n# HELP a x\n# EOF", "line 3: HELP line for 'a' after its samples");
  bad(OM, "# TYPE a gauge\n# TYPE a gauge\n# EOF", "line 2: second TYPE line for 'a'");
  bad(OM, "# TYPE a_seconds gauge\n# UNIT a_seconds bytes\n# EOF",
      "line 2: UNIT: metric name 'a_seconds' does not end in '_bytes'");
  bad(OM, "# UNIT seconds seconds\n# EOF",
      "line 1: UNIT: metric name 'seconds' does not end in '_seconds'");
  bad(OM, "# TYPE g gauge\ng 1 # {a=\"b\"} 1\n# EOF",
      "line 2: 'g' may not have an exemplar (only counters' _total and buckets)");
  bad(OM, "# TYPE c counter\nc_total 1 #{a=\"b\"} 1\n# EOF", "line 2: expected '# {' to start an exemplar");
  bad(OM, "# TYPE c counter\nc_total 1 # {a=\"b\"}\n# EOF",
      "line 2: expected a value after the exemplar's labels");
  bad(OM, "# TYPE c counter\nc_total 1 # {a=\"b\"} x\n# EOF", "line 2: invalid exemplar value 'x'");
  bad(OM, "# TYPE c counter\nc_total 1 # {a=\"b\"} 1 2 3\n# EOF",
      "line 2: unexpected ' 3' after the exemplar's timestamp");
  bad(OM,
      "# TYPE c counter\nc_total 1 # {trace_id=\"0123456789012345678901234567890123456789012345678"
      "901234567890123456789012345678901234567890123456789012345678901234567890\"} 1\n# EOF",
      "line 2: exemplar labels longer than 128 characters");
}

static void test_set(void **state) {
  k_expfmt_set_t s;
  k_label_t l[2];
  const char *a, *b;
  (void)state;
  k_expfmt_set_init(&s);
  a = k_expfmt_set_str(&s, "__name__", 8);
  b = k_expfmt_set_str(&s, "__name__x", 8);
  assert_ptr_equal(a, b); /* interned */
  l[0] = (k_label_t){a, k_expfmt_set_str(&s, "m", 1)};
  l[1] = (k_label_t){k_expfmt_set_str(&s, "x", 1), k_expfmt_set_str(&s, "1", 1)};
  for (int i = 0; i < 5000; i++) assert_int_equal(k_expfmt_set_add(&s, l, 1 + i % 2, i, i), 0);
  k_expfmt_set_seal(&s);
  assert_int_equal(s.n, 5000);
  assert_int_equal(s.v[4999].n, 2);
  assert_string_equal(s.v[4999].labels[1].value, "1");
  assert_int_equal(s.v[4998].n, 1);
  assert_int_equal(s.v[4998].t_ms, 4998);
  assert_int_equal(k_expfmt_set_add(&s, l, 1, 0, 0), KEEL_EINVAL); /* sealed */
  k_expfmt_set_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kind),    cmocka_unit_test(test_text_good), cmocka_unit_test(test_text_bad),
      cmocka_unit_test(test_limits),  cmocka_unit_test(test_om_good),   cmocka_unit_test(test_om_bad),
      cmocka_unit_test(test_set),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
