/* watch_check.c — --check NAME=COMMAND: Nagios plugins, check.result events
 * (watch.h).
 *
 * Every check interval the command runs through exec.c's ka_cmd (what a
 * job's argv gets: own process group, sanitized environment, stdin
 * /dev/null; stderr is dropped, as Nagios does).  COMMAND is split on
 * spaces and tabs (no quoting, no shell) unless --check-shell is given,
 * then it is `/bin/sh -c COMMAND`.  Its stdout joins the agent's poll();
 * the agent's one thread never waits for it.  Nagios semantics:
 *
 *   exit 0 OK, 1 WARNING, 2 CRITICAL, anything else (another code, a
 *   signal, no start, the timeout) UNKNOWN; the first line of stdout up
 *   to '|' is the status text, after it the performance data.
 *
 * At the timeout (10 s) the process group is killed.  A leader that exited
 * while something it started still holds stdout is waited for until then
 * too, and its exit code counts.  A check.result is emitted when the
 * status differs from the one last reported (the first result counts
 * when none was reported before, also across restarts: DIR/watch.json).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/json.h"
#include "keel/metricbatch.h"
#include "keel/time.h"
#include "watch.h"

#define CMD_MAX 4096   /* bytes of COMMAND */
#define ARGS_MAX 256   /* words of a COMMAND without shell */

static const char *const k_status[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

struct ka_check {
  char name[KA_CHECK_NAME_MAX + 1];
  ka_cmd_t *cmd;             /* owned, prepared once */
  pid_t pid;                 /* running when > 0; also its process group */
  int fd;                    /* its stdout, -1 at EOF */
  int reaped, wstatus;
  int64_t due;               /* mono ms of the next start */
  int64_t deadline;          /* mono ms: the timeout of the run */
  int status;                /* last reported (index in k_status), -1 none */
  size_t outlen;
  char out[KA_CHECK_OUTPUT_MAX]; /* the first bytes of stdout (NUL-terminated room kept) */
};

static int name_ok(const char *s, size_t n) {
  if (n < 1 || n > KA_CHECK_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", s[i]) ||
        !s[i])
      return 0;
  return 1;
}

/* spec "NAME=COMMAND" into c. */
static int check_setup(struct ka_check *c, const char *spec, int shell, keel_err_t *e) {
  const char *eq = strchr(spec, '='), *cmd;
  const char *argv[ARGS_MAX];
  char words[CMD_MAX + 1], *save = NULL, *t;
  size_t argc = 0;
  int rc = 0;

  if (!eq || !name_ok(spec, (size_t)(eq - spec))) {
    rc = keel_err_set(e, KEEL_EINVAL,
                      "--check '%.100s': expected NAME=COMMAND, NAME 1 to %d of [A-Za-z0-9_.:-]",
                      spec, KA_CHECK_NAME_MAX);
    goto out;
  }
  memcpy(c->name, spec, (size_t)(eq - spec));
  c->name[eq - spec] = '\0';
  cmd = eq + 1;
  if (strlen(cmd) > CMD_MAX || !keel_mb_utf8_ok(cmd, strlen(cmd)) || !cmd[strspn(cmd, " \t")]) {
    rc = keel_err_set(e, KEEL_EINVAL, "--check %s: expected a command of 1 to %d bytes", c->name,
                      CMD_MAX);
    goto out;
  }
  if (shell) {
    argv[argc++] = "/bin/sh";
    argv[argc++] = "-c";
    argv[argc++] = cmd;
  } else {
    strcpy(words, cmd);
    for (t = strtok_r(words, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
      if (argc == ARGS_MAX) {
        rc = keel_err_set(e, KEEL_EINVAL, "--check %s: more than %d words", c->name, ARGS_MAX);
        goto out;
      }
      argv[argc++] = t;
    }
  }
  if ((rc = ka_cmd_prepare(&c->cmd, argv, argc, e))) goto out;
  c->fd = -1;
  c->status = -1;
out:
  return rc;
}

int ka_check_init(ka_watch_t *w, const char *const *specs, size_t n, int shell, keel_err_t *e) {
  const char *names[KA_WATCH_MAX];
  int64_t now = keel_mono_ms();
  int rc = 0;

  if (!n) goto out;
  if (!(w->checks = calloc(n, sizeof *w->checks))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    struct ka_check *c = &w->checks[i];
    c->fd = -1;
    w->nchecks++; /* freed by ka_check_free from here on */
    if ((rc = check_setup(c, specs[i], shell, e))) goto out;
    names[i] = c->name;
    if ((rc = ka_watch_once("--check", names, i, e))) goto out;
    c->due = now; /* the first run: at once */
  }
out:
  return rc;
}

void ka_check_free(ka_watch_t *w) {
  for (size_t i = 0; i < w->nchecks; i++) {
    struct ka_check *c = &w->checks[i];
    if (c->pid > 0) {
      /* Ours, and short-lived: not left behind like a job. */
      kill(-c->pid, SIGKILL);
      if (!c->reaped)
        while (waitpid(c->pid, &c->wstatus, 0) < 0 && errno == EINTR) {
        }
    }
    if (c->fd >= 0) close(c->fd);
    ka_cmd_free(c->cmd);
  }
  free(w->checks);
  w->checks = NULL;
  w->nchecks = 0;
}

void ka_check_parse(char *text, size_t len, const char **output, const char **perfdata) {
  char *nl, *bar, *perf = NULL;

  text[len] = '\0';
  if ((nl = strchr(text, '\n'))) *nl = '\0'; /* also cuts at a NUL: strchr stops there */
  if ((bar = strchr(text, '|'))) {
    *bar = '\0';
    perf = bar + 1;
  }
  for (char **s = &text;; s = &perf) {
    if (*s) {
      size_t n;
      *s += strspn(*s, " \t\r");
      n = strlen(*s);
      while (n && strchr(" \t\r", (*s)[n - 1])) (*s)[--n] = '\0';
      keel_utf8_sanitize(*s);
    }
    if (s == &perf) break;
  }
  *output = text;
  *perfdata = perf ? perf : "";
}

/* The run is over (or never started: error): its result. */
static void finish(ka_watch_t *w, struct ka_check *c, int timed_out, const char *error) {
  const char *output, *perf = "";
  char msg[128];
  int st = 3, code = -1;

  if (error) {
    output = error;
  } else if (timed_out) {
    snprintf(msg, sizeof msg, "check timed out after %lld ms (process group killed)",
             (long long)w->check_timeout_ms);
    output = msg;
  } else {
    ka_check_parse(c->out, c->outlen, &output, &perf);
    if (WIFEXITED(c->wstatus)) {
      code = WEXITSTATUS(c->wstatus);
      st = code <= 2 ? code : 3;
    } else if (!*output) {
      snprintf(msg, sizeof msg, "killed by signal %d", WTERMSIG(c->wstatus));
      output = msg;
    }
  }
  keel_log(w->log, KEEL_LOG_DEBUG, "check %s: %s (%s)", c->name, k_status[st], output);
  if (st != c->status) {
    json_t *d = json_pack("{s:s,s:s,s:o,s:s,s:s}", "check", c->name, "status", k_status[st],
                          "exit_code", code >= 0 ? json_integer(code) : json_null(), "output",
                          output, "perfdata", perf);
    ka_watch_emit(w, "check.result", c->name, "check", c->name, d);
    c->status = st;
    w->state_dirty = 1;
  }
  c->pid = 0;
  c->outlen = 0;
  c->reaped = 0;
}

static void drain(struct ka_check *c) {
  char sink[4096];
  for (;;) {
    size_t room = sizeof c->out - 1 - c->outlen;
    char *dst = room ? c->out + c->outlen : sink;
    ssize_t n = read(c->fd, dst, room ? room : sizeof sink);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      close(c->fd);
      c->fd = -1;
      return;
    }
    if (room) c->outlen += (size_t)n; /* past the room: read and dropped */
  }
}

static void start(ka_watch_t *w, struct ka_check *c, int64_t now) {
  keel_err_t e;

  c->due += w->check_interval_ms;
  if (c->due <= now) c->due = now + w->check_interval_ms; /* late: no burst */
  c->outlen = 0;
  c->reaped = 0;
  if (ka_cmd_start(c->cmd, &c->pid, &c->fd, &e)) {
    c->pid = 0;
    c->fd = -1;
    finish(w, c, 0, e.msg);
    return;
  }
  c->deadline = now + w->check_timeout_ms;
}

void ka_check_step(ka_watch_t *w) {
  int64_t now = keel_mono_ms();

  for (size_t i = 0; i < w->nchecks; i++) {
    struct ka_check *c = &w->checks[i];
    if (c->pid > 0) {
      int timed_out = 0;
      if (c->fd >= 0) drain(c);
      if (!c->reaped) {
        pid_t p = waitpid(c->pid, &c->wstatus, WNOHANG);
        if (p == c->pid || (p < 0 && errno == ECHILD)) c->reaped = 1;
      }
      if (now >= c->deadline && (!c->reaped || c->fd >= 0)) {
        /* The whole group: a shell's children go too. */
        kill(-c->pid, SIGKILL);
        if (!c->reaped) {
          while (waitpid(c->pid, &c->wstatus, 0) < 0 && errno == EINTR) {
          }
          c->reaped = timed_out = 1;
        }
        if (c->fd >= 0) close(c->fd);
        c->fd = -1;
      }
      if (c->reaped && c->fd < 0) finish(w, c, timed_out, NULL);
    }
    if (c->pid == 0 && now >= c->due) start(w, c, now);
  }
}

size_t ka_check_fds(const ka_watch_t *w, struct pollfd *fds, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < w->nchecks && n < max; i++)
    if (w->checks[i].fd >= 0) fds[n++] = (struct pollfd){.fd = w->checks[i].fd, .events = POLLIN};
  return n;
}

long ka_check_next_ms(const ka_watch_t *w) {
  int64_t now = keel_mono_ms(), best = -1;
  for (size_t i = 0; i < w->nchecks; i++) {
    const struct ka_check *c = &w->checks[i];
    int64_t t = c->pid > 0 ? c->deadline : c->due, d = t > now ? t - now : 0;
    /* Exited with its stdout at EOF: the SIGCHLD wakes us; this only
     * bounds the wait should a wake-up be missed. */
    if (c->pid > 0 && c->fd < 0 && d > 100) d = 100;
    if (best < 0 || d < best) best = d;
  }
  return (long)best;
}

json_t *ka_check_state(const ka_watch_t *w) {
  json_t *o = json_object();
  for (size_t i = 0; o && i < w->nchecks; i++)
    if (w->checks[i].status >= 0)
      json_object_set_new(o, w->checks[i].name, json_string(k_status[w->checks[i].status]));
  return o;
}

void ka_check_restore(ka_watch_t *w, const json_t *saved) {
  for (size_t i = 0; i < w->nchecks; i++) {
    const char *s = keel_json_str(saved, w->checks[i].name);
    for (int k = 0; s && k < 4; k++)
      if (!strcmp(s, k_status[k])) w->checks[i].status = k;
  }
}
