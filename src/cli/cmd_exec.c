/* cmd_exec.c — runbook executions and schedules (docs/runbooks.md):
 * keel runbook start, keel execution list/show/watch/approve/reject/
 * resume/cancel/retry, keel schedule list. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "keel/json.h"

#define WATCH_POLL_MS 500
#define BAR_WIDTH 10
#define LINE_MAX_BYTES 512

/* Target counts of an execution ("summary"), and its batch progress. */
typedef struct counts {
  json_int_t targets, pending, running, succeeded, failed, skipped, cancelled;
  json_int_t batch, batches;
} counts_t;

static json_int_t num(const json_t *o, const char *key) {
  return json_integer_value(json_object_get(o, key));
}

/* Member key of o when a string, else dflt. */
static const char *str(const json_t *o, const char *key, const char *dflt) {
  const char *s = keel_json_str(o, key);
  return s ? s : dflt;
}

static void counts_of(const json_t *exe, counts_t *k) {
  const json_t *s = json_object_get(exe, "summary");
  k->targets = num(s, "targets");
  k->pending = num(s, "pending");
  k->running = num(s, "running");
  k->succeeded = num(s, "succeeded");
  k->failed = num(s, "failed");
  k->skipped = num(s, "skipped");
  k->cancelled = num(s, "cancelled");
  k->batch = num(exe, "current_batch");
  k->batches = num(exe, "batches");
}

static json_int_t done_of(const counts_t *k) {
  return k->succeeded + k->failed + k->cancelled + k->skipped;
}

static int is_final(const char *state) {
  static const char *const finals[] = {"succeeded", "failed", "cancelled", "timed_out", NULL};
  for (const char *const *f = finals; *f; f++)
    if (!strcmp(*f, state)) return 1;
  return 0;
}

/* Server text for a terminal: s (NULL: "") up to its first line break when
 * first_line (leading blank lines skipped), cut to fit out but never inside a
 * UTF-8 sequence, control characters replaced.  Returns out. */
static char *clip(char *out, size_t outsz, const char *s, int first_line) {
  size_t n;
  if (!s) s = "";
  if (first_line) {
    s += strspn(s, "\r\n");
    n = strcspn(s, "\r\n");
  } else {
    n = strlen(s);
  }
  if (n >= outsz) {
    n = outsz - 1;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
  }
  memcpy(out, s, n);
  out[n] = '\0';
  return out_safe(out);
}

/* Appends to the text in out (never past outsz). */
static void cat(char *out, size_t outsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cat(char *out, size_t outsz, const char *fmt, ...) {
  size_t n = strlen(out);
  va_list ap;
  if (n + 1 >= outsz) return;
  va_start(ap, fmt);
  vsnprintf(out + n, outsz - n, fmt, ap);
  va_end(ap);
}

/* 850ms, 3.4s, 2m05s, 1h02m. */
static void fmt_ms(char *out, size_t outsz, json_int_t ms) {
  long long v = ms < 0 ? 0 : (long long)ms;
  if (v < 1000) snprintf(out, outsz, "%lldms", v);
  else if (v < 60000) snprintf(out, outsz, "%.1fs", (double)v / 1000.0);
  else if (v < 3600000) snprintf(out, outsz, "%lldm%02llds", v / 60000, v / 1000 % 60);
  else snprintf(out, outsz, "%lldh%02lldm", v / 3600000, v / 60000 % 60);
}

/* A schedule's rate as the document would write it: "every 1h30m". */
static void fmt_every(char *out, size_t outsz, json_int_t ms) {
  static const struct {
    const char *unit;
    long long ms;
  } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
  long long v = (long long)ms;
  snprintf(out, outsz, "every ");
  if (v <= 0) {
    cat(out, outsz, "?");
    return;
  }
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (v >= units[i].ms) {
      cat(out, outsz, "%lld%s", v / units[i].ms, units[i].unit);
      v %= units[i].ms;
    }
}

/* ---- watch ------------------------------------------------------------------------------ */

/* Columns of the terminal on stderr, 80 when unknown. */
static size_t term_cols(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

/* "[#####.....] 12/40 done  3 failed  2 running  25 pending  batch 2/3  running";
 * without the bar when bar_on is 0. */
static void progress_text(const char *state, const counts_t *k, int bar_on, char *out,
                          size_t outsz) {
  json_int_t done = done_of(k);
  char bar[BAR_WIDTH + 1];
  size_t fill = k->targets > 0 && done > 0 ? (size_t)(done * BAR_WIDTH / k->targets) : 0;

  if (fill > BAR_WIDTH) fill = BAR_WIDTH;
  memset(bar, '#', fill);
  memset(bar + fill, '.', BAR_WIDTH - fill);
  bar[BAR_WIDTH] = '\0';
  out[0] = '\0';
  if (bar_on) cat(out, outsz, "[%s] ", bar);
  cat(out, outsz, "%lld/%lld done  %lld failed  %lld running  %lld pending", (long long)done,
      (long long)k->targets, (long long)k->failed, (long long)k->running, (long long)k->pending);
  if (k->skipped) cat(out, outsz, "  %lld skipped", (long long)k->skipped);
  if (k->cancelled) cat(out, outsz, "  %lld cancelled", (long long)k->cancelled);
  if (k->batches > 1)
    cat(out, outsz, "  batch %lld/%lld", (long long)k->batch, (long long)k->batches);
  cat(out, outsz, "  %s", state);
}

/* Says once, on entering the state, what an execution waits for. */
static void note_state(const json_t *exe, const char *id, const char *state) {
  char a[LINE_MAX_BYTES], b[128];
  if (!strcmp(state, "waiting_approval")) {
    const json_t *ap = json_object_get(exe, "approval");
    const char *msg = keel_json_str(ap, "message");
    clip(b, sizeof b, keel_json_str(ap, "step"), 1);
    clip(a, sizeof a, msg, 0);
    fprintf(stderr, "keel: waiting for approval of step '%s'%s%s (keel execution approve %s)\n",
            b[0] ? b : "?", a[0] ? ": " : "", a, id);
  } else if (!strcmp(state, "paused")) {
    clip(a, sizeof a, keel_json_str(exe, "reason"), 0);
    fprintf(stderr, "keel: paused%s%s\n", a[0] ? ": " : "", a);
  }
}

/* Polls execution id until it ends, drawing its progress on stderr (one
 * line redrawn in place on a terminal, else a line per change) and ending
 * with a summary line on stdout; with --json, prints the execution as a JSON
 * line per change instead.  CLI_OK only if it succeeded. */
static int watch(cli_t *c, const char *id) {
  json_t *exe = NULL;
  keel_buf_t path;
  char last[LINE_MAX_BYTES] = "", prev_state[64] = "", sid[64];
  int tty = !c->json && isatty(STDERR_FILENO), rc;
  size_t shown = 0; /* columns of the progress line on the terminal */

  clip(sid, sizeof sid, id, 1);
  if ((rc = api_path(c, &path, "executions", id)) || (rc = api_query(c, &path, "targets", "false")))
    goto out;
  for (;;) {
    char line[LINE_MAX_BYTES], state[64];
    int final;
    counts_t k;

    json_decref(exe);
    exe = NULL;
    if ((rc = api_call(c, "GET", path.data, NULL, &exe))) goto out;
    if (!keel_json_str(exe, "state")) {
      rc = cli_fail("bad answer from %s: the execution has no state", c->http.shown);
      goto out;
    }
    clip(state, sizeof state, keel_json_str(exe, "state"), 1);
    final = is_final(state);
    counts_of(exe, &k);
    progress_text(state, &k, 1, line, sizeof line);
    if (c->json) {
      if (strcmp(line, last)) out_json_line(exe, stdout);
      fflush(stdout);
    } else {
      if (strcmp(state, prev_state)) {
        if (shown) fprintf(stderr, "\r%*s\r", (int)shown, "");
        shown = 0;
        note_state(exe, sid, state);
      }
      if (tty && (strcmp(line, last) || !shown)) {
        /* A wrapped line cannot be redrawn with \r: on a narrow terminal
         * the bar goes first, then the end of the line. */
        size_t cols = term_cols(), n;
        char fit[LINE_MAX_BYTES];
        snprintf(fit, sizeof fit, "%s", line);
        if (strlen(fit) >= cols) progress_text(state, &k, 0, fit, sizeof fit);
        n = strlen(fit);
        if (n >= cols) n = cols - 1;
        fprintf(stderr, "\r%.*s%*s", (int)n, fit, shown > n ? (int)(shown - n) : 0, "");
        if (shown > n) fprintf(stderr, "\r%.*s", (int)n, fit);
        shown = n;
      } else if (!tty && strcmp(line, last)) {
        fprintf(stderr, "%s\n", line);
      }
      if (final && shown) fputc('\n', stderr);
      fflush(stderr);
    }
    snprintf(last, sizeof last, "%s", line);
    snprintf(prev_state, sizeof prev_state, "%s", state);
    if (final) {
      if (!c->json) {
        char reason[LINE_MAX_BYTES];
        clip(reason, sizeof reason, keel_json_str(exe, "reason"), 0);
        printf("execution %s %s%s%s (%lld/%lld targets succeeded)\n", sid, state,
               reason[0] ? ": " : "", reason, (long long)k.succeeded, (long long)k.targets);
      }
      rc = strcmp(state, "succeeded") ? CLI_FAIL : CLI_OK;
      goto out;
    }
    cli_sleep_ms(WATCH_POLL_MS);
  }
out:
  keel_buf_free(&path);
  json_decref(exe);
  return rc;
}

int cmd_execution_watch(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  int rc = cli_parse(c, argc, argv, NULL, pos, 1, 1);
  return rc != CLI_GO ? rc : watch(c, pos[0]);
}

/* ---- start, retry ------------------------------------------------------------------------- */

/* The answer to a start or a retry; with watch, follows it. */
static int started(cli_t *c, const json_t *exe, int watch_it) {
  const char *id = keel_json_str(exe, "id");
  char tn[32];
  out_table_t t;
  int rc = 0;

  if (!id) return cli_fail("bad answer from %s: no execution id", c->http.shown);
  if (c->json) {
    /* with watch, its JSON lines say it all (one value a line throughout) */
    if (!watch_it) out_json(exe, stdout);
  } else {
    const char *rows[][2] = {
        {"id", id},
        {"runbook", keel_json_str(exe, "runbook")},
        {"state", keel_json_str(exe, "state")},
        {"targets", out_field(json_object_get(exe, "summary"), "targets", tn, sizeof tn)},
        {"retry_of", keel_json_str(exe, "retry_of")},
        {"reason", keel_json_str(exe, "reason")},
    };
    out_table_init(&t, 2, NULL);
    for (size_t i = 0; !rc && i < sizeof rows / sizeof rows[0]; i++)
      if (i < 4 || (rows[i][1] && rows[i][1][0])) rc = out_table_add(&t, rows[i]);
    if (!rc) out_table_print(&t, stdout);
    out_table_free(&t);
  }
  fflush(stdout);
  if (rc || !watch_it) return rc;
  return watch(c, id);
}

int cmd_runbook_start(cli_t *c, int argc, char **argv) {
  static const char *const param_flags[] = {"-p", "--param", NULL}; /* may repeat */
  cli_opt_t opts[] = {{"watch", NULL, NULL}, {NULL, NULL, NULL}};
  json_t *params = json_object(), *name = NULL, *body = NULL, *res = NULL;
  const char *pos[1];
  int rc;

  if (!params) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = cli_take_pairs(c, &argc, argv, param_flags, "k=v", params))) goto out;
  if ((rc = cli_parse(c, argc, argv, opts, pos, 1, 1)) != CLI_GO) goto out;
  if (!(name = json_string(pos[0]))) {
    rc = cli_usage(c, "NAME: not valid UTF-8");
    goto out;
  }
  if (!(body = json_pack("{s:O,s:O}", "runbook", name, "params", params))) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = api_call(c, "POST", "/v1/executions", body, &res))) goto out;
  rc = started(c, res, opts[0].value != NULL);
out:
  json_decref(params);
  json_decref(name);
  json_decref(body);
  json_decref(res);
  return rc;
}

int cmd_execution_retry(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"failed-only", NULL, NULL}, {"watch", NULL, NULL}, {NULL, NULL, NULL}};
  json_t *body = NULL, *res = NULL;
  const char *pos[1];
  int rc;

  if ((rc = cli_parse(c, argc, argv, opts, pos, 1, 1)) != CLI_GO) goto out;
  if (!(body = json_pack("{s:b}", "failed_only", opts[0].value != NULL))) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = api_call_id(c, "POST", "executions", pos[0], "retry", body, &res))) goto out;
  rc = started(c, res, opts[1].value != NULL);
out:
  json_decref(body);
  json_decref(res);
  return rc;
}

/* ---- approve, reject, resume, cancel ------------------------------------------------------- */

/* POST /v1/executions/ID/<what>; a {"comment"} body when comment is set
 * (approve, reject), none otherwise.  Prints "<did> ID: STATE (REASON)". */
static int act(cli_t *c, int argc, char **argv, const char *what, const char *did, int comment) {
  cli_opt_t opts[] = {{"comment", "TEXT", NULL}, {NULL, NULL, NULL}};
  json_t *body = NULL, *res = NULL, *text;
  const char *pos[1];
  char id[64], state[64], reason[LINE_MAX_BYTES];
  int rc;

  if ((rc = cli_parse(c, argc, argv, comment ? opts : NULL, pos, 1, 1)) != CLI_GO) goto out;
  if (comment) {
    if (!(body = json_object())) {
      rc = cli_fail("out of memory");
      goto out;
    }
    if (opts[0].value &&
        (!(text = json_string(opts[0].value)) || json_object_set_new(body, "comment", text))) {
      rc = cli_usage(c, "--comment: not valid UTF-8");
      goto out;
    }
  }
  if ((rc = api_call_id(c, "POST", "executions", pos[0], what, body, &res))) goto out;
  if (c->json) {
    out_json(res, stdout);
    goto out;
  }
  clip(id, sizeof id, str(res, "id", pos[0]), 1);
  clip(state, sizeof state, keel_json_str(res, "state"), 1);
  clip(reason, sizeof reason, keel_json_str(res, "reason"), 0);
  printf("%s %s: %s%s%s%s\n", did, id, state[0] ? state : "?", reason[0] ? " (" : "", reason,
         reason[0] ? ")" : "");
out:
  json_decref(body);
  json_decref(res);
  return rc;
}

int cmd_execution_approve(cli_t *c, int argc, char **argv) {
  return act(c, argc, argv, "approve", "approved", 1);
}
int cmd_execution_reject(cli_t *c, int argc, char **argv) {
  return act(c, argc, argv, "reject", "rejected", 1);
}
int cmd_execution_resume(cli_t *c, int argc, char **argv) {
  return act(c, argc, argv, "resume", "resumed", 0);
}
int cmd_execution_cancel(cli_t *c, int argc, char **argv) {
  return act(c, argc, argv, "cancel", "cancelled", 0);
}

/* ---- list, show ---------------------------------------------------------------------------- */

/* "user" or "user (schedule)". */
static void requester(const json_t *exe, char *out, size_t outsz) {
  snprintf(out, outsz, "%s%s", str(exe, "requested_by", ""),
           json_is_true(json_object_get(exe, "by_schedule")) ? " (schedule)" : "");
}

static int execution_row(cli_t *c, json_t *x, void *ud) {
  json_t *full = NULL;
  const json_t *has = x;
  keel_buf_t path;
  char targets[64], by[200];
  const char *row[6];
  counts_t k;
  int rc = 0;

  keel_buf_init(&path, 1);
  /* Items of the list carry no target counts: read them from the execution. */
  if (!json_is_object(json_object_get(x, "summary")) && keel_json_str(x, "id")) {
    if ((rc = api_path(c, &path, "executions", keel_json_str(x, "id"))) ||
        (rc = api_query(c, &path, "targets", "false")) ||
        (rc = api_call(c, "GET", path.data, NULL, &full)))
      goto out;
    has = full;
  }
  counts_of(has, &k);
  if (json_is_object(json_object_get(has, "summary")))
    snprintf(targets, sizeof targets, "%lld/%lld", (long long)done_of(&k), (long long)k.targets);
  else
    targets[0] = '\0';
  requester(x, by, sizeof by);
  row[0] = keel_json_str(x, "id");
  row[1] = keel_json_str(x, "runbook");
  row[2] = keel_json_str(x, "state");
  row[3] = targets;
  row[4] = by;
  row[5] = keel_json_str(x, "created_at");
  rc = out_table_add(ud, row);
out:
  keel_buf_free(&path);
  json_decref(full);
  return rc;
}

int cmd_execution_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"ID",      "RUNBOOK",      "STATE",
                                      "TARGETS", "REQUESTED BY", "CREATED"};
  cli_opt_t opts[] = {{"runbook", "NAME", NULL}, {"state", "STATE", NULL}, {"limit", "N", NULL},
                      {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/executions", opts, 50, heads, 6, execution_row);
}

/* One row of the header of execution show; an empty value shows as "-". */
static int kv_add(out_table_t *t, const char *key, const char *value) {
  const char *row[2] = {key, value};
  return out_table_add(t, row);
}

static int print_header(const json_t *x) {
  const json_t *ap = json_object_get(x, "approval"), *d;
  char a[LINE_MAX_BYTES], b[LINE_MAX_BYTES], by[200], tmp[32];
  char *params = json_dumps(json_object_get(x, "params"), JSON_COMPACT | JSON_PRESERVE_ORDER);
  out_table_t t;
  counts_t k;
  size_t i;
  int rc;

  out_table_init(&t, 2, NULL);
  counts_of(x, &k);
  requester(x, by, sizeof by);
  snprintf(a, sizeof a, "%s (version %s)", str(x, "runbook", "?"),
           out_field(x, "runbook_version", tmp, sizeof tmp) ? tmp : "?");
  if ((rc = kv_add(&t, "id", keel_json_str(x, "id"))) || (rc = kv_add(&t, "runbook", a)) ||
      (rc = kv_add(&t, "state", keel_json_str(x, "state"))) ||
      (rc = kv_add(&t, "reason", keel_json_str(x, "reason"))) ||
      (rc = kv_add(&t, "requested_by", by)) ||
      (keel_json_str(x, "retry_of") && (rc = kv_add(&t, "retry_of", str(x, "retry_of", "")))) ||
      (rc = kv_add(&t, "params", params)) ||
      (rc = kv_add(&t, "created_at", keel_json_str(x, "created_at"))) ||
      (rc = kv_add(&t, "started_at", keel_json_str(x, "started_at"))) ||
      (rc = kv_add(&t, "ended_at", keel_json_str(x, "ended_at"))) ||
      (rc = kv_add(&t, "deadline_at", keel_json_str(x, "deadline_at"))))
    goto out;
  snprintf(a, sizeof a,
           "%lld: %lld succeeded, %lld failed, %lld running, %lld pending, %lld skipped, "
           "%lld cancelled",
           (long long)k.targets, (long long)k.succeeded, (long long)k.failed, (long long)k.running,
           (long long)k.pending, (long long)k.skipped, (long long)k.cancelled);
  snprintf(b, sizeof b, "%lld/%lld", (long long)k.batch, (long long)k.batches);
  if ((rc = kv_add(&t, "targets", a)) || (rc = kv_add(&t, "batch", b))) goto out;
  if (json_is_object(ap)) {
    const json_t *who = json_object_get(ap, "approvers"), *v;
    size_t n = 0;
    snprintf(a, sizeof a, "step '%s'%s%s", str(ap, "step", "?"),
             keel_json_str(ap, "message") ? ": " : "", str(ap, "message", ""));
    b[0] = '\0';
    json_array_foreach(who, i, v) {
      if (json_is_string(v)) cat(b, sizeof b, "%s%s", n++ ? ", " : "", json_string_value(v));
    }
    cat(b, sizeof b, " (%s needed)", out_field(ap, "min_approvals", tmp, sizeof tmp) ? tmp : "1");
    if ((rc = kv_add(&t, "approval", a)) || (rc = kv_add(&t, "approvers", b)) ||
        (rc = kv_add(&t, "approval_deadline", keel_json_str(ap, "deadline_at"))))
      goto out;
  }
  json_array_foreach(json_object_get(x, "decisions"), i, d) {
    const char *cm = str(d, "comment", "");
    snprintf(a, sizeof a, "%s of step '%s' by %s at %s%s%s", str(d, "decision", "?"),
             str(d, "step", "?"), str(d, "user", "?"), str(d, "at", "?"), *cm ? ": " : "", cm);
    if ((rc = kv_add(&t, "decision", a))) goto out;
  }
  out_table_print(&t, stdout);
out:
  out_table_free(&t);
  free(params);
  return rc;
}

/* A target's line, then one indented line per step attempt. */
static int print_target(const json_t *tg) {
  char host[200], agent[64], status[32], step[80], err[LINE_MAX_BYTES];
  const json_t *s;
  out_table_t t;
  size_t i;
  int rc = 0;

  clip(host, sizeof host, keel_json_str(tg, "hostname"), 1);
  clip(agent, sizeof agent, keel_json_str(tg, "agent_id"), 1);
  clip(status, sizeof status, keel_json_str(tg, "status"), 1);
  clip(step, sizeof step, keel_json_str(tg, "step"), 1);
  clip(err, sizeof err, keel_json_str(tg, "error"), 1);
  printf("%s (%s)  batch %lld  %s%s%s%s%s%s\n", host[0] ? host : "?", agent[0] ? agent : "?",
         (long long)num(tg, "batch"), status[0] ? status : "?", step[0] ? " at step " : "", step,
         json_is_true(json_object_get(tg, "rolled_back")) ? "  rolled back" : "",
         err[0] ? "  " : "", err);
  out_table_init(&t, 4, NULL);
  json_array_foreach(json_object_get(tg, "steps"), i, s) {
    char name[120], code[32], dur[32], last[LINE_MAX_BYTES + 48], msg[LINE_MAX_BYTES];
    const char *row[4];
    const json_t *ec = json_object_get(s, "exit_code"), *d = json_object_get(s, "duration_ms");
    const char *e = keel_json_str(s, "error");
    snprintf(name, sizeof name, "    #%lld %s", (long long)num(s, "attempt"), str(s, "name", "?"));
    if (json_is_integer(ec))
      snprintf(code, sizeof code, "exit %lld", (long long)json_integer_value(ec));
    else
      code[0] = '\0';
    if (json_is_integer(d)) fmt_ms(dur, sizeof dur, json_integer_value(d));
    else snprintf(dur, sizeof dur, "-");
    /* what it said on stderr, else its error ("approved", "timed out") */
    clip(msg, sizeof msg, keel_json_str(s, "stderr"), 1);
    if (!msg[0]) clip(msg, sizeof msg, e, 1);
    if (msg[0]) snprintf(last, sizeof last, "%-6s  %s", dur, msg);
    else snprintf(last, sizeof last, "%s", dur);
    row[0] = name;
    row[1] = keel_json_str(s, "status");
    row[2] = code;
    row[3] = last;
    if ((rc = out_table_add(&t, row))) goto out;
  }
  out_table_print(&t, stdout);
out:
  out_table_free(&t);
  return rc;
}

int cmd_execution_show(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *x = NULL;
  const json_t *tg;
  size_t i;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO ||
      (rc = api_call_id(c, "GET", "executions", pos[0], NULL, NULL, &x)))
    goto out;
  if (c->json) {
    out_json(x, stdout);
    goto out;
  }
  if ((rc = print_header(x))) goto out;
  json_array_foreach(json_object_get(x, "targets"), i, tg) {
    if (i == 0) printf("\ntargets:\n");
    if ((rc = print_target(tg))) goto out;
  }
out:
  json_decref(x);
  return rc;
}

/* ---- schedules --------------------------------------------------------------------------- */

int cmd_schedule_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"RUNBOOK", "SCHEDULE", "OWNER", "NEXT", "LAST",
                                      "LAST OUTCOME", "SKIPPED", "ACTIVE"};
  json_t *page = NULL, *items, *s;
  out_table_t t;
  size_t i;
  int rc;

  out_table_init(&t, 8, heads);
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) goto out;
  /* one answer, not pages: the route takes no ?limit or ?cursor */
  if ((rc = api_call(c, "GET", "/v1/schedules", NULL, &page))) goto out;
  if (!json_is_array(items = json_object_get(page, "items"))) {
    rc = cli_fail("bad answer from %s: no 'items' list", c->http.shown);
    goto out;
  }
  json_array_foreach(items, i, s) {
    char when[96], skipped[32];
    const char *row[8];
    if (c->json) {
      out_json_line(s, stdout);
      continue;
    }
    if (keel_json_str(s, "cron"))
      snprintf(when, sizeof when, "%s", keel_json_str(s, "cron"));
    else if (json_is_integer(json_object_get(s, "rate_ms")))
      fmt_every(when, sizeof when, num(s, "rate_ms"));
    else
      when[0] = '\0';
    row[0] = keel_json_str(s, "runbook");
    row[1] = when;
    row[2] = keel_json_str(s, "owner");
    row[3] = keel_json_str(s, "next_at");
    row[4] = keel_json_str(s, "last_slot_at");
    row[5] = keel_json_str(s, "last_outcome");
    row[6] = out_field(s, "skipped", skipped, sizeof skipped);
    row[7] = keel_json_str(s, "active");
    if ((rc = out_table_add(&t, row))) goto out;
  }
  if (!c->json) out_table_print(&t, stdout);
out:
  out_table_free(&t);
  json_decref(page);
  return rc;
}
