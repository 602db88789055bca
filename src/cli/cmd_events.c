/* cmd_events.c — keel events list, keel events watch (docs/events.md).
 *
 * watch reads GET /v1/events/stream (Server-Sent Events) with its own
 * libcurl handle, since the API client buffers whole answers: frames are
 * parsed as bytes arrive, one line printed per event.  When the stream
 * breaks (keeld restarting, a network cut, cut off for being too slow) it
 * reconnects with Last-Event-ID, so nothing delivered in between is
 * missed; refusals (4xx) end it.
 */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

#define WATCH_LINE_MAX (64 * 1024)  /* an SSE line (one event's JSON) */
#define WATCH_IDLE_S 45L            /* no byte (not even a 15 s keepalive) for this long: reconnect */

/* One human line (or a JSON line) for an event. */
static void print_event(cli_t *c, json_t *ev) {
  char line[1024];
  const char *subject = keel_json_str(ev, "subject");
  if (c->json) {
    out_json_line(ev, stdout);
  } else {
    snprintf(line, sizeof line, "%s  %-22s %-40s %s", keel_json_str(ev, "time") ? keel_json_str(ev, "time") : "-",
             keel_json_str(ev, "type") ? keel_json_str(ev, "type") : "-", subject ? subject : "-",
             keel_json_str(ev, "source") ? keel_json_str(ev, "source") : "-");
    printf("%s\n", out_safe(line));
  }
  fflush(stdout);
}

/* ---- list -------------------------------------------------------------------------- */

static int list_row(cli_t *c, json_t *ev, void *ud) {
  char seq[32];
  const char *row[5];
  (void)c;
  row[0] = out_field(ev, "keelseq", seq, sizeof seq);
  row[1] = keel_json_str(ev, "time");
  row[2] = keel_json_str(ev, "type");
  row[3] = keel_json_str(ev, "subject");
  row[4] = keel_json_str(ev, "source");
  return out_table_add(ud, row);
}

int cmd_events_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"SEQ", "TIME", "TYPE", "SUBJECT", "SOURCE"};
  cli_opt_t opts[] = {{"type", "T", NULL},  {"subject", "S", NULL}, {"since", "T", NULL},
                      {"limit", "N", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/events", opts, 0, heads, 5, list_row);
}

/* ---- watch -------------------------------------------------------------------------- */

typedef struct watch {
  cli_t *c;
  CURL *h;
  int status;        /* HTTP status of the current answer, once known */
  keel_buf_t line;   /* the line being read */
  keel_buf_t data;   /* data: lines of the frame being read */
  keel_buf_t err;    /* the body of a refusal */
  char last_id[32];  /* id: of the last event printed */
  char frame_id[32];
  int broken;        /* a frame could not be parsed */
} watch_t;

/* One complete line (without its newline) of the event stream. */
static void watch_line(watch_t *w, const char *s, size_t n) {
  if (n == 0) { /* end of a frame */
    if (w->data.len) {
      json_t *ev = json_loadb(w->data.data, w->data.len, 0, NULL);
      if (ev) {
        print_event(w->c, ev);
        json_decref(ev);
        if (w->frame_id[0]) memcpy(w->last_id, w->frame_id, sizeof w->last_id);
      } else {
        w->broken = 1;
      }
    }
    keel_buf_reset(&w->data);
    w->frame_id[0] = '\0';
    return;
  }
  if (s[0] == ':') return; /* a comment: keepalive */
  if (n > 4 && !strncmp(s, "id: ", 4)) {
    snprintf(w->frame_id, sizeof w->frame_id, "%.*s", (int)(n - 4), s + 4);
  } else if (n >= 6 && !strncmp(s, "data: ", 6)) {
    if (w->data.len) keel_buf_puts(&w->data, "\n");
    keel_buf_append(&w->data, s + 6, n - 6);
  }
}

static size_t watch_write(char *p, size_t size, size_t nmemb, void *ud) {
  watch_t *w = ud;
  size_t n = size * nmemb;
  long code = 0;

  if (!w->status) {
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &code);
    w->status = (int)code;
  }
  if (w->status != 200) {
    keel_buf_append(&w->err, p, n); /* capped: the rest is dropped */
    return n;
  }
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '\n') {
      size_t len = w->line.len;
      if (len && w->line.data[len - 1] == '\r') len--;
      watch_line(w, w->line.data ? w->line.data : "", len);
      keel_buf_reset(&w->line);
    } else if (keel_buf_append(&w->line, &p[i], 1)) {
      return 0; /* a line over the cap: not an event stream we understand */
    }
  }
  return n;
}

/* The error message of a refusal body, or the status. */
static int refused(watch_t *w) {
  json_t *o = w->err.len ? json_loadb(w->err.data, w->err.len, 0, NULL) : NULL;
  const char *msg = keel_json_str(json_object_get(o, "error"), "message");
  int rc = cli_fail("%s (HTTP %d)", msg ? msg : "the server refused the stream", w->status);
  json_decref(o);
  return rc;
}

int cmd_events_watch(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"subject", "S", NULL}, {"since", "T", NULL}, {NULL, NULL, NULL}};
  keel_buf_t url, types_csv;
  struct curl_slist *hdrs = NULL;
  watch_t w;
  long backoff_ms = 500;
  int rc;

  memset(&w, 0, sizeof w);
  w.c = c;
  keel_buf_init(&url, 65536);
  keel_buf_init(&types_csv, 4096);
  keel_buf_init(&w.line, WATCH_LINE_MAX);
  keel_buf_init(&w.data, WATCH_LINE_MAX);
  keel_buf_init(&w.err, 8192);
  /* --type may be given several times (cli_parse keeps the last one):
   * taken out here, they become one ?type=A,B */
  {
    int i = 0;
    while (i < argc) {
      if (!strcmp(argv[i], "--type") && i + 1 < argc) {
        if (types_csv.len) keel_buf_puts(&types_csv, ",");
        keel_buf_puts(&types_csv, argv[i + 1]);
        memmove(&argv[i], &argv[i + 2], (size_t)(argc - i - 2) * sizeof *argv);
        argc -= 2;
      } else if (!strncmp(argv[i], "--type=", 7)) {
        if (types_csv.len) keel_buf_puts(&types_csv, ",");
        keel_buf_puts(&types_csv, argv[i] + 7);
        memmove(&argv[i], &argv[i + 1], (size_t)(argc - i - 1) * sizeof *argv);
        argc--;
      } else if (!strcmp(argv[i], "--")) {
        break;
      } else {
        i++;
      }
    }
  }
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) goto out;
  if ((rc = cli_connect(c))) goto out;
  if (keel_buf_puts(&url, c->http.base) || keel_buf_puts(&url, "/v1/events/stream")) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = api_query(c, &url, "type", types_csv.len ? types_csv.data : NULL)) ||
      (rc = api_query(c, &url, "subject", opts[0].value)) ||
      (rc = api_query(c, &url, "since", opts[1].value)))
    goto out;
  if (!(w.h = curl_easy_init())) {
    rc = cli_fail("cannot start libcurl");
    goto out;
  }
  for (;;) {
    char auth[1200], last[64];
    CURLcode cc;

    curl_slist_free_all(hdrs);
    hdrs = curl_slist_append(NULL, "Accept: text/event-stream");
    if (c->http.token) {
      snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->http.token);
      hdrs = curl_slist_append(hdrs, auth);
      memset(auth, 0, sizeof auth);
    }
    if (w.last_id[0]) {
      snprintf(last, sizeof last, "Last-Event-ID: %s", w.last_id);
      hdrs = curl_slist_append(hdrs, last);
    }
    curl_easy_reset(w.h);
    curl_easy_setopt(w.h, CURLOPT_URL, url.data);
    curl_easy_setopt(w.h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(w.h, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(w.h, CURLOPT_WRITEDATA, &w);
    curl_easy_setopt(w.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w.h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(w.h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(w.h, CURLOPT_LOW_SPEED_TIME, WATCH_IDLE_S);
    w.status = 0;
    w.broken = 0;
    keel_buf_reset(&w.line);
    keel_buf_reset(&w.data);
    keel_buf_reset(&w.err);
    w.frame_id[0] = '\0';
    cc = curl_easy_perform(w.h);
    if (w.status >= 400 && w.status < 500) {
      rc = refused(&w);
      goto out;
    }
    if (w.status == 200) backoff_ms = 500; /* it worked a while: retry soon */
    if (!c->json)
      fprintf(stderr, "keel: event stream from %s ended (%s); reconnecting\n", c->http.shown,
              cc != CURLE_OK ? curl_easy_strerror(cc)
              : w.status && w.status != 200 ? "server error"
                                            : "closed");
    cli_sleep_ms(backoff_ms);
    if (backoff_ms < 10000) backoff_ms *= 2;
  }
out:
  curl_slist_free_all(hdrs);
  if (w.h) curl_easy_cleanup(w.h);
  keel_buf_free(&url);
  keel_buf_free(&types_csv);
  keel_buf_free(&w.line);
  keel_buf_free(&w.data);
  keel_buf_free(&w.err);
  return rc;
}
