/* api.c — requests to the Keel API: error reporting and pagination. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "keel/json.h"

#define PATH_MAX_BYTES 65536

/* The API's error codes by status, for answers that carry no error JSON. */
static const char *status_code(int status) {
  switch (status) {
  case 400: return "bad_request";
  case 401: return "unauthorized";
  case 403: return "forbidden";
  case 404: return "not_found";
  case 405: return "method_not_allowed";
  case 409: return "conflict";
  case 413: return "payload_too_large";
  case 500: return "internal";
  case 502: return "bad_gateway";
  case 503: return "unavailable";
  case 504: return "gateway_timeout";
  default: return "unexpected";
  }
}

/* One line for a non-2xx answer: the server's message when the body has the
 * documented error shape, else just the status. */
static int report(const cli_t *c, int status, const keel_buf_t *resp) {
  const char *msg = NULL, *code = NULL;
  char m[512], k[64];
  json_t *v = NULL, *err;

  if (resp->len && keel_json_parse(resp->data, resp->len, &v, NULL) == 0) {
    err = json_object_get(v, "error");
    msg = keel_json_str(err, "message");
    code = keel_json_str(err, "code");
  }
  snprintf(k, sizeof k, "%s", code && *code ? code : status_code(status));
  out_safe(k);
  if (msg && *msg) {
    snprintf(m, sizeof m, "%s", msg);
    fprintf(stderr, "keel: %s (HTTP %d %s)\n", out_safe(m), status, k);
  } else {
    fprintf(stderr, "keel: unexpected answer from %s (HTTP %d %s)\n", c->http.shown, status, k);
  }
  json_decref(v);
  return CLI_FAIL;
}

int api_call(cli_t *c, const char *method, const char *path, const json_t *body, json_t **out) {
  char *text = NULL;
  int rc;
  if (body && !(text = json_dumps(body, JSON_COMPACT))) return cli_fail("out of memory");
  rc = api_call_raw(c, method, path, text, text ? strlen(text) : 0, out);
  free(text);
  return rc;
}

int api_call_raw(cli_t *c, const char *method, const char *path, const char *text, size_t len,
                 json_t **out) {
  keel_buf_t resp;
  keel_err_t e;
  json_t *v = NULL;
  int status = 0, rc;

  if (out) *out = NULL;
  if ((rc = cli_connect(c))) return rc;
  keel_buf_init(&resp, KEEL_HTTP_MAX_RESPONSE);
  if (keel_http_request(&c->http, method, path, text, len, &status, &resp, &e)) {
    rc = cli_fail("%s", e.msg);
    goto out;
  }
  if (status < 200 || status > 299) {
    rc = report(c, status, &resp);
    goto out;
  }
  if (out) {
    if (keel_json_parse(resp.data ? resp.data : "", resp.len, &v, &e)) {
      rc = cli_fail("bad answer from %s (HTTP %d): %s", c->http.shown, status, e.msg);
      goto out;
    }
    *out = v;
  }
out:
  keel_buf_free(&resp);
  return rc;
}

int api_escape(cli_t *c, keel_buf_t *b, const char *s) {
  int rc = cli_connect(c); /* escaping needs the curl handle */
  if (rc) return rc;
  if (keel_http_escape(&c->http, b, s)) return cli_fail("request URL: too long");
  return 0;
}

int api_query(cli_t *c, keel_buf_t *url, const char *key, const char *value) {
  int rc = cli_connect(c);
  if (rc) return rc;
  if (keel_http_query(&c->http, url, key, value)) return cli_fail("request URL: too long");
  return 0;
}

int api_path(cli_t *c, keel_buf_t *b, const char *coll, const char *id) {
  keel_buf_init(b, PATH_MAX_BYTES);
  if (keel_buf_printf(b, "/v1/%s/", coll)) return cli_fail("out of memory");
  return api_escape(c, b, id);
}

int api_call_id(cli_t *c, const char *method, const char *coll, const char *id, const char *action,
                const json_t *body, json_t **out) {
  keel_buf_t path;
  int rc = api_path(c, &path, coll, id);
  if (!rc && action && keel_buf_printf(&path, "/%s", action))
    rc = cli_fail("request URL: too long");
  if (!rc) rc = api_call(c, method, path.data, body, out);
  keel_buf_free(&path);
  return rc;
}

/* next_cursor as text: the API documents a string, but audit cursors are
 * sequence numbers, so an integer is accepted too.  NULL: last page. */
static int next_cursor(const cli_t *c, const json_t *page, char **out) {
  const json_t *nc = json_object_get(page, "next_cursor");
  char num[32];

  *out = NULL;
  if (!nc || json_is_null(nc)) return 0;
  if (json_is_string(nc)) {
    *out = strdup(json_string_value(nc));
  } else if (json_is_integer(nc)) {
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(nc));
    *out = strdup(num);
  } else {
    return cli_fail("bad answer from %s: next_cursor is neither a string nor null",
                    c->http.shown);
  }
  return *out ? 0 : cli_fail("out of memory");
}

int api_list(cli_t *c, const char *path, size_t max, api_item_fn fn, void *ud) {
  char *cursor = NULL, *next = NULL, num[32];
  json_t *page = NULL, *items, *it;
  keel_buf_t url;
  size_t seen = 0, idx;
  int rc;

  keel_buf_init(&url, PATH_MAX_BYTES);
  for (;;) {
    size_t want = CLI_PAGE_MAX;
    if (max && max - seen < want) want = max - seen;
    snprintf(num, sizeof num, "%zu", want);
    keel_buf_reset(&url);
    if (keel_buf_puts(&url, path)) {
      rc = cli_fail("request URL: too long");
      goto out;
    }
    if ((rc = api_query(c, &url, "limit", num)) || (rc = api_query(c, &url, "cursor", cursor)))
      goto out;
    if ((rc = api_call(c, "GET", url.data, NULL, &page))) goto out;
    items = json_object_get(page, "items");
    if (!json_is_array(items)) {
      rc = cli_fail("bad answer from %s: no 'items' list", c->http.shown);
      goto out;
    }
    json_array_foreach(items, idx, it) {
      if (max && seen == max) break;
      seen++;
      if ((rc = fn(c, it, ud))) goto out;
    }
    if ((rc = next_cursor(c, page, &next))) goto out;
    if (!next || (max && seen >= max)) break;
    /* A server bug must not turn into an endless loop. */
    if (cursor && !strcmp(cursor, next)) {
      rc = cli_fail("bad answer from %s: next_cursor did not advance", c->http.shown);
      goto out;
    }
    free(cursor);
    cursor = next;
    next = NULL;
    json_decref(page);
    page = NULL;
  }
out:
  free(next);
  free(cursor);
  json_decref(page);
  keel_buf_free(&url);
  return rc;
}

/* The table a list command fills, or JSON lines. */
typedef struct list_ctx {
  api_item_fn row;
  out_table_t *t;
} list_ctx_t;

static int list_item(cli_t *c, json_t *it, void *ud) {
  list_ctx_t *l = ud;
  if (c->json) {
    out_json_line(it, stdout);
    return 0;
  }
  return l->row(c, it, l->t);
}

int api_list_table(cli_t *c, const char *path, const cli_opt_t *opts, size_t max,
                   const char *const *heads, size_t ncols, api_item_fn row) {
  const cli_opt_t *o;
  keel_buf_t url;
  out_table_t t;
  list_ctx_t l = {row, &t};
  int rc = 0;

  for (o = opts; o && o->name; o++) {
    char *end;
    long long n;
    if (strcmp(o->name, "limit") || !o->value) continue;
    n = strtoll(o->value, &end, 10);
    if (!o->value[0] || *end || n < 1)
      return cli_usage(c, "--limit: expected a positive integer, got '%s'", o->value);
    max = (size_t)n;
  }
  keel_buf_init(&url, PATH_MAX_BYTES);
  out_table_init(&t, ncols, heads);
  if (keel_buf_puts(&url, path)) rc = cli_fail("out of memory");
  for (o = opts; !rc && o && o->name; o++)
    if (strcmp(o->name, "limit")) rc = api_query(c, &url, o->name, o->value);
  if (!rc) rc = api_list(c, url.data, max, list_item, &l);
  if (!rc && !c->json) out_table_print(&t, stdout);
  out_table_free(&t);
  keel_buf_free(&url);
  return rc;
}

void cli_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
