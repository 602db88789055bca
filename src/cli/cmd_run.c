/* cmd_run.c — keel run, keel command show/list/cancel. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "keel/json.h"
#include "keel/time.h"

#define POLL_MS 150
/* After a Ctrl-C cancel, how long keel run waits for the hosts to say how
 * their runs ended: the agents' SIGKILL grace (5 s) and a poll round. */
#define CANCEL_WAIT_MS 7000

static volatile sig_atomic_t run_interrupts;
static void on_interrupt(int sig) {
  (void)sig;
  run_interrupts++;
}

static int run_ok(const json_t *r) {
  return !strcmp(keel_json_str(r, "status") ? keel_json_str(r, "status") : "", "exited") &&
         json_integer_value(json_object_get(r, "exit_code")) == 0;
}

/* One host's result, human form: a header line, then its output. */
static void print_run(const json_t *r) {
  const char *st = keel_json_str(r, "status"), *err = keel_json_str(r, "error");
  const char *out = keel_json_str(r, "stdout"), *serr = keel_json_str(r, "stderr");
  char host[300], what[160], dur[48] = "";
  const json_t *d = json_object_get(r, "duration_ms");

  snprintf(host, sizeof host, "%s (%s)", keel_json_str(r, "hostname") ? keel_json_str(r, "hostname") : "?",
           keel_json_str(r, "agent_id") ? keel_json_str(r, "agent_id") : "?");
  out_safe(host);
  if (st && !strcmp(st, "exited"))
    snprintf(what, sizeof what, "exit %" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(r, "exit_code")));
  else if (st && !strcmp(st, "signaled"))
    snprintf(what, sizeof what, "killed by signal %" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(r, "signal")));
  else
    snprintf(what, sizeof what, "%s%s%.100s", st ? st : "?", err && *err ? ": " : "", err ? err : "");
  out_safe(what);
  if (json_is_integer(d)) snprintf(dur, sizeof dur, ", %" JSON_INTEGER_FORMAT " ms", json_integer_value(d));
  printf("=== %s: %s%s%s%s\n", host, what, dur,
         json_is_true(json_object_get(r, "stdout_truncated")) ? ", stdout truncated" : "",
         json_is_true(json_object_get(r, "stderr_truncated")) ? ", stderr truncated" : "");
  /* Output is the host's, shown as it came: the user asked for it. */
  if (out && *out) {
    fputs(out, stdout);
    if (out[strlen(out) - 1] != '\n') fputc('\n', stdout);
  }
  if (serr && *serr) {
    fflush(stdout);
    fputs(serr, stderr);
    if (serr[strlen(serr) - 1] != '\n') fputc('\n', stderr);
  }
  fflush(stdout);
}

/* Prints runs of cmd not printed yet (seen: object of run ids); counts.
 * hold: leave out cancelled runs whose host has not said how they ended. */
static void print_new(cli_t *c, const json_t *cmd, json_t *seen, size_t *failed, int hold) {
  const json_t *runs = json_object_get(cmd, "runs");
  size_t i;
  json_t *r;
  json_array_foreach(runs, i, r) {
    const char *id = keel_json_str(r, "run_id"), *st = keel_json_str(r, "status");
    if (!id || !st || !strcmp(st, "pending") || json_object_get(seen, id)) continue;
    if (hold && !strcmp(st, "cancelled") && json_is_null(json_object_get(r, "ended_at"))) continue;
    json_object_set_new(seen, id, json_true());
    if (!run_ok(r)) (*failed)++;
    if (c->json) out_json_line(r, stdout);
    else print_run(r);
  }
}

int cmd_run(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"target", "SELECTOR", NULL}, {"timeout", "DURATION", NULL},
                      {"cwd", "DIR", NULL},         {"user", "USER", NULL},
                      {"shell", NULL, NULL},        {NULL, NULL, NULL}};
  static const char *const env_flags[] = {"--env", NULL}; /* may repeat: cli_parse keeps one */
  json_t *body = NULL, *res = NULL, *cmd = NULL, *seen = json_object(), *env = json_object();
  json_t *argvj = NULL;
  keel_buf_t path;
  struct sigaction sa, old_int;
  int dd = -1, rc, sig_set = 0;
  size_t failed = 0, total, skipped;
  int64_t tmo = 60000, deadline, hold_until = 0;
  const char *id;

  keel_buf_init(&path, 1);
  if (!seen || !env) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = cli_take_pairs(c, &argc, argv, env_flags, "K=V", env))) goto out;
  for (int i = 0; i < argc; i++)
    if (!strcmp(argv[i], "--")) {
      dd = i;
      break;
    }
  if ((rc = cli_parse(c, dd < 0 ? argc : dd, argv, opts, NULL, 0, 0)) != CLI_GO) goto out;
  if (dd < 0 || dd + 1 >= argc) {
    rc = cli_usage(c, "missing the command: put it after '--'");
    goto out;
  }
  if (!opts[0].value) {
    rc = cli_usage(c, "missing --target SELECTOR (\"\" matches every agent)");
    goto out;
  }
  if (opts[1].value && keel_duration_parse(opts[1].value, &tmo)) {
    rc = cli_usage(c, "--timeout: expected a duration such as 30s or 5m, got '%s'", opts[1].value);
    goto out;
  }
  body = json_pack("{s:s,s:O}", "target", opts[0].value, "env", env);
  if (!body) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if (opts[4].value) {
    /* --shell: the words after -- form one script for /bin/sh -c */
    keel_buf_t script;
    keel_buf_init(&script, 65536);
    for (int i = dd + 1; i < argc; i++)
      if (keel_buf_printf(&script, "%s%s", i > dd + 1 ? " " : "", argv[i])) {
        keel_buf_free(&script);
        rc = cli_usage(c, "script over 64 KiB");
        goto out;
      }
    json_object_set_new(body, "shell", json_string(script.data));
    keel_buf_free(&script);
  } else {
    argvj = json_array();
    for (int i = dd + 1; i < argc; i++) json_array_append_new(argvj, json_string(argv[i]));
    json_object_set(body, "argv", argvj);
  }
  if (opts[1].value) json_object_set_new(body, "timeout", json_string(opts[1].value));
  if (opts[2].value) json_object_set_new(body, "cwd", json_string(opts[2].value));
  if (opts[3].value) json_object_set_new(body, "user", json_string(opts[3].value));

  if ((rc = api_call(c, "POST", "/v1/commands", body, &res))) goto out;
  id = keel_json_str(res, "id");
  total = json_array_size(json_object_get(res, "runs"));
  skipped = (size_t)json_integer_value(json_object_get(res, "skipped"));
  if (!id) {
    rc = cli_fail("bad answer: no command id");
    goto out;
  }
  if (!c->json) {
    fprintf(stderr, "keel: command %s on %zu host(s)", id, total - skipped);
    if (skipped) fprintf(stderr, ", %zu skipped (offline)", skipped);
    fputc('\n', stderr);
  }
  if (total == 0) {
    rc = cli_fail("no agent matches target '%s'", opts[0].value);
    goto out;
  }
  if ((rc = api_path(c, &path, "commands", id))) goto out;
  /* Ctrl-C cancels the command on every host (as ssh ends the remote
   * command); a second one leaves at once, the command left as it is. */
  run_interrupts = 0;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt; /* no SA_RESTART: a sleep ends at once */
  sigemptyset(&sa.sa_mask);
  /* ...unless started with SIGINT ignored (nohup, a script's "&"): then
   * it stays ignored, as the one who started us meant. */
  if (sigaction(SIGINT, NULL, &old_int) == 0 && old_int.sa_handler != SIG_IGN)
    sig_set = sigaction(SIGINT, &sa, NULL) == 0;
  /* The server stops every run at its timeout; allow for delivery on top. */
  deadline = keel_mono_ms() + tmo + 30000;
  for (;;) {
    json_decref(cmd);
    cmd = NULL;
    if (run_interrupts > 1) {
      rc = cli_fail("interrupted again: left command %s as it is (keel command show %s)", id, id);
      goto out;
    }
    if (run_interrupts == 1 && !hold_until) {
      json_t *ans = NULL;
      if (!c->json)
        fprintf(stderr, "keel: cancelling command %s on its hosts (Ctrl-C again to leave)\n", id);
      hold_until = keel_mono_ms() + CANCEL_WAIT_MS;
      /* a 409 (it had just finished) is no failure: nothing was left to stop */
      api_call_id(c, "POST", "commands", id, "cancel", NULL, &ans);
      json_decref(ans);
    }
    if ((rc = api_call(c, "GET", path.data, NULL, &cmd))) goto out;
    print_new(c, cmd, seen, &failed, hold_until && keel_mono_ms() < hold_until);
    if (json_is_true(json_object_get(cmd, "done")) &&
        (!hold_until || json_object_size(seen) == total))
      break;
    if (keel_mono_ms() > deadline) {
      rc = cli_fail("gave up waiting; %zu host(s) have not answered (keel command show %s)",
                    total - json_object_size(seen), id);
      goto out;
    }
    cli_sleep_ms(POLL_MS);
  }
  if (!c->json)
    fprintf(stderr, "keel: %zu of %zu host(s) succeeded%s\n", total - failed, total,
            hold_until ? " (cancelled)" : "");
  rc = failed || hold_until ? CLI_FAIL : CLI_OK;
out:
  if (sig_set) sigaction(SIGINT, &old_int, NULL);
  keel_buf_free(&path);
  json_decref(body);
  json_decref(res);
  json_decref(cmd);
  json_decref(seen);
  json_decref(env);
  json_decref(argvj);
  return rc;
}

int cmd_command_show(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *cmd = NULL, *seen = json_object();
  size_t failed = 0;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO ||
      (rc = api_call_id(c, "GET", "commands", pos[0], NULL, NULL, &cmd)))
    goto out;
  if (c->json) {
    out_json(cmd, stdout);
    goto out;
  }
  {
    static const char *const keys[] = {"id", "target", "created_by", "created_at", NULL};
    const json_t *sum = json_object_get(cmd, "summary");
    char *spec = json_dumps(json_object_get(cmd, "spec"), JSON_COMPACT);
    out_kv(cmd, keys, stdout);
    printf("spec        %s\n", spec ? out_safe(spec) : "-");
    free(spec);
    printf("summary     %" JSON_INTEGER_FORMAT " total, %" JSON_INTEGER_FORMAT " succeeded, %" JSON_INTEGER_FORMAT
           " failed, %" JSON_INTEGER_FORMAT " pending, %" JSON_INTEGER_FORMAT " skipped, %" JSON_INTEGER_FORMAT
           " cancelled\n\n",
           json_integer_value(json_object_get(sum, "total")), json_integer_value(json_object_get(sum, "succeeded")),
           json_integer_value(json_object_get(sum, "failed")), json_integer_value(json_object_get(sum, "pending")),
           json_integer_value(json_object_get(sum, "skipped")),
           json_integer_value(json_object_get(sum, "cancelled")));
    print_new(c, cmd, seen, &failed, 0);
  }
out:
  json_decref(cmd);
  json_decref(seen);
  return rc;
}

/* Withdraws the runs without a result; hosts running one stop it (SIGTERM,
 * SIGKILL 5 s later) and report what it printed until then. */
int cmd_command_cancel(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *cmd = NULL;
  char id[64];
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) goto out;
  if ((rc = api_call_id(c, "POST", "commands", pos[0], "cancel", NULL, &cmd))) goto out;
  snprintf(id, sizeof id, "%s", keel_json_str(cmd, "id") ? keel_json_str(cmd, "id") : pos[0]);
  if (c->json) out_json(cmd, stdout);
  else
    printf("cancelled %s: %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
           " run(s) cancelled; hosts running one stop it (SIGTERM, SIGKILL after 5 s)\n",
           out_safe(id),
           json_integer_value(json_object_get(json_object_get(cmd, "summary"), "cancelled")),
           json_integer_value(json_object_get(json_object_get(cmd, "summary"), "total")));
out:
  json_decref(cmd);
  return rc;
}

static int command_row(cli_t *c, json_t *k, void *ud) {
  char *spec;
  const char *row[5];
  int rc;
  (void)c;
  spec = json_dumps(json_object_get(json_object_get(k, "spec"), "argv"), JSON_COMPACT);
  if (!spec || !strcmp(spec, "null")) {
    free(spec);
    spec = json_dumps(json_object_get(json_object_get(k, "spec"), "shell"), JSON_ENCODE_ANY);
  }
  row[0] = keel_json_str(k, "id");
  row[1] = keel_json_str(k, "created_at");
  row[2] = keel_json_str(k, "created_by");
  row[3] = keel_json_str(k, "target");
  row[4] = spec;
  rc = out_table_add(ud, row);
  free(spec);
  return rc;
}

int cmd_command_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"ID", "CREATED", "BY", "TARGET", "COMMAND"};
  cli_opt_t opts[] = {{"limit", "N", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/commands", opts, 50, heads, 5, command_row);
}
