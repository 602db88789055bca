/* exec.c — running jobs: verification, dedup, fork/exec, capture, timeouts.
 *
 * Order of a job's life, each step durable before the next:
 *   verify signature + agent id  (else: `refused`, nothing runs)
 *   DIR/running/<id>.json + fsync       (a crash now reports `interrupted`)
 *   append run id to DIR/seen + fsync   (a redelivery is never run twice)
 *   fork + exec
 *   ... capture, timeout ...
 *   DIR/spool/<id>.json (atomic)        (the result survives a crash)
 *   unlink DIR/running/<id>.json
 *
 * Four kinds of job, exactly one per job: argv (exec'd as given), shell
 * (/bin/sh -c), script (the body written to DIR/scripts/<id> and run by its
 * interpreter; the file is removed when the run ends, and leftovers of a
 * crash at the next start) and http (one request made by a forked child,
 * httpcheck.c).  All four run under the same machinery: own process group,
 * sanitized environment, cwd, user, timeout, captured and capped output.
 */
#define _GNU_SOURCE /* close_range, pipe2 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "httpcheck.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "static_link.h"

#define SAFE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DRAIN_GRACE_MS 1000  /* after killing a group, wait this long for EOF */
#define MAX_ARGS 4096
#define MAX_ENV 1024
#define MAX_TIMEOUT_MS (7LL * 24 * 3600 * 1000)
#define DEFAULT_TIMEOUT_MS 30000
#define SCRIPT_MAX (1 << 20)  /* bytes of a script body */
#define SCRIPT_FD 4           /* where a script reaches a child that switched users */
#define KA_STR_(x) #x
#define KA_STR(x) KA_STR_(x)
/* An http check's own deadline is this much later than the job's timeout,
 * so the group kill normally ends a hung check: one way to time out. */
#define HTTP_GRACE_MS 1000
/* A cancelled run's group gets SIGTERM, then SIGKILL this much later: time
 * for a service script to stop cleanly, short enough that "cancel" means
 * stopped within seconds. */
#define CANCEL_GRACE_MS 5000

struct ka_run {
  struct ka_run *next;
  char run_id[KA_RUN_ID_MAX + 1];
  pid_t pid;            /* also the process group id */
  int out_fd, err_fd;   /* read ends, -1 once at EOF or abandoned */
  keel_buf_t out, err;  /* capped at the job's output_cap */
  int out_trunc, err_trunc;
  int64_t started_at;   /* wall ms */
  int64_t deadline;     /* mono ms: the job's timeout */
  int64_t drain_until;  /* mono ms: after a kill, give up on the pipes */
  int64_t kill_at;      /* mono ms: a cancelled run's SIGKILL, if still running */
  int reaped, wstatus, killed, timed_out;
  int cancelled;        /* keeld withdrew it: SIGTERM sent, result "cancelled" */
  char *script;         /* owned: DIR/scripts/<id> to remove once the run ends; NULL if none */
};

/* What the child needs, all prepared in the parent: between fork and exec
 * only async-signal-safe calls are allowed (curl may run resolver threads,
 * so malloc and NSS are off limits in the child).  The one exception is an
 * http check, which never execs: httpcheck.c says why that is acceptable. */
struct spawn {
  char **argv;
  char **envp;
  const char *path;     /* the PATH to search (from envp) */
  const char *cwd;
  int set_user;
  uid_t uid;
  gid_t gid;
  gid_t *groups;
  int ngroups;
  int script_fd;        /* >= 0: the script, read-only, for a child that switches users */
  const ka_httpcheck_t *http; /* the http kind (borrowed): no exec, the child runs the check */
  long http_timeout_ms;
  size_t http_cap;
};

/* The first failure in the child, written to the CLOEXEC error pipe. */
struct child_err {
  int stage; /* enum below */
  int err;   /* errno */
};
enum { ST_SETUP, ST_SETGROUPS, ST_SETGID, ST_SETUID, ST_CHDIR, ST_EXEC };

/* ---- seen ------------------------------------------------------------- */

static uint64_t id_hash(const char *id) {
  uint8_t h[KEEL_HASH_BYTES];
  uint64_t v = 0;
  keel_hash(h, id, strlen(id));
  for (int i = 0; i < 8; i++) v = v << 8 | h[i];
  return v;
}

static void seen_remember(ka_exec_t *x, uint64_t h) {
  x->seen[x->seen_next] = h;
  x->seen_next = (x->seen_next + 1) % KA_SEEN_KEEP;
  if (x->seen_n < KA_SEEN_KEEP) x->seen_n++;
}

static int seen_has(const ka_exec_t *x, uint64_t h) {
  for (size_t i = 0; i < x->seen_n; i++)
    if (x->seen[i] == h) return 1;
  return 0;
}

/* Rewrites DIR/seen with only its last KA_SEEN_KEEP lines, so the file
 * stays bounded; reopens the append descriptor. */
static int seen_compact(ka_exec_t *x, keel_err_t *e) {
  char path[PATH_MAX], *text = NULL;
  const char *start;
  size_t len, lines = 0;
  int rc;

  ka_path(path, "%s/seen", x->dir);
  if ((rc = ka_read_file(path, (size_t)64 << 20, &text, &len, e))) goto out;
  /* Back from the end (ignoring the final newline) to just after the
   * KA_SEEN_KEEP-th newline: what follows is the last KA_SEEN_KEEP lines. */
  {
    size_t i = len;
    if (i > 0 && text[i - 1] == '\n') i--;
    while (i > 0 && !(text[i - 1] == '\n' && ++lines == KA_SEEN_KEEP)) i--;
    start = text + i;
  }
  if ((rc = ka_write_atomic(x->dir, "seen", start, (size_t)(text + len - start), 0600, e)))
    goto out;
  if (x->seen_fd >= 0) close(x->seen_fd);
  x->seen_fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (x->seen_fd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "open %s: %s", path, strerror(errno));
    goto out;
  }
  x->seen_lines = KA_SEEN_KEEP;
out:
  free(text);
  return rc;
}

static int seen_load(ka_exec_t *x, keel_err_t *e) {
  char path[PATH_MAX], *text = NULL, *line, *save = NULL;
  size_t len;
  int rc;

  ka_path(path, "%s/seen", x->dir);
  rc = ka_read_file(path, (size_t)64 << 20, &text, &len, e);
  if (rc && rc != KEEL_ENOENT) goto out;
  rc = 0;
  if (text) {
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      seen_remember(x, id_hash(line));
      x->seen_lines++;
    }
  }
  x->seen_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (x->seen_fd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "open %s: %s", path, strerror(errno));
    goto out;
  }
  if (x->seen_lines > KA_SEEN_KEEP) rc = seen_compact(x, e);
out:
  free(text);
  return rc;
}

static int seen_add(ka_exec_t *x, const char *id, keel_err_t *e) {
  char line[KA_RUN_ID_MAX + 2];
  size_t n = (size_t)snprintf(line, sizeof line, "%s\n", id);
  int rc = 0;

  if (write(x->seen_fd, line, n) != (ssize_t)n || fdatasync(x->seen_fd)) {
    rc = keel_err_set(e, KEEL_EIO, "append to %s/seen: %s", x->dir, strerror(errno));
    goto out;
  }
  seen_remember(x, id_hash(id));
  /* Compact at twice the window so the rewrite is rare. */
  if (++x->seen_lines >= 2 * KA_SEEN_KEEP) rc = seen_compact(x, e);
out:
  return rc;
}

/* ---- init -------------------------------------------------------------- */

/* Removes what an earlier agent left in DIR/scripts (it died while they
 * ran).  Their runs are over: ka_spool_recover, which runs first, reported
 * them `interrupted` and stopped what was left of their process groups. */
static void scripts_clean(ka_exec_t *x) {
  char sdir[PATH_MAX], p[PATH_MAX];
  struct dirent *de;
  DIR *d;
  int n = 0;

  ka_path(sdir, "%s/scripts", x->dir);
  if (!(d = opendir(sdir))) goto out; /* none yet: nothing left over */
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    ka_path(p, "%s/%s", sdir, de->d_name);
    if (unlink(p) == 0) n++;
    else keel_log(x->log, KEEL_LOG_WARN, "removing %s: %s", p, strerror(errno));
  }
  if (n) keel_log(x->log, KEEL_LOG_INFO, "removed %d script file(s) left by a previous run", n);
out:
  if (d) closedir(d);
}

int ka_exec_init(ka_exec_t *x, const char *dir, const ka_identity_t *id, const keel_log_t *log,
                 keel_err_t *e) {
  int rc;

  memset(x, 0, sizeof *x);
  x->dir = dir;
  x->id = id;
  x->log = log;
  x->seen_fd = -1;
  x->seen = calloc(KA_SEEN_KEEP, sizeof *x->seen);
  if (!x->seen) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = seen_load(x, e))) goto out;
  scripts_clean(x);
out:
  if (rc) ka_exec_free(x);
  return rc;
}

static void run_free(ka_run_t *r) {
  free(r->script);
  if (r->out_fd >= 0) close(r->out_fd);
  if (r->err_fd >= 0) close(r->err_fd);
  keel_buf_free(&r->out);
  keel_buf_free(&r->err);
  free(r);
}

void ka_exec_free(ka_exec_t *x) {
  ka_run_t *r, *next;
  for (r = x->runs; r; r = next) {
    next = r->next;
    run_free(r);
  }
  x->runs = NULL;
  x->nruns = 0;
  if (x->seen_fd >= 0) close(x->seen_fd);
  x->seen_fd = -1;
  free(x->seen);
  x->seen = NULL;
}

/* ---- results ----------------------------------------------------------- */

static int spool_simple(ka_exec_t *x, const char *run_id, const char *status, int64_t started,
                        const char *error) {
  keel_err_t e;
  char *body = ka_result_json(run_id, status, -1, -1, "", 0, 0, "", 0, 0, started, keel_now_ms(),
                              error);
  int rc;

  if (!body) return KEEL_ENOMEM;
  rc = ka_spool_put(x->dir, run_id, body, &e);
  free(body);
  if (rc) keel_log(x->log, KEEL_LOG_ERROR, "run %s: cannot spool result: %s", run_id, e.msg);
  return rc;
}

static void unlink_running(ka_exec_t *x, const char *run_id) {
  char p[PATH_MAX];
  ka_path(p, "%s/running/%s.json", x->dir, run_id);
  unlink(p);
}

/* ---- the child --------------------------------------------------------- */

__attribute__((noreturn)) static void child_fail(int efd, int stage, int err) {
  struct child_err ce = {stage, err};
  ssize_t n = write(efd, &ce, sizeof ce);
  (void)n;
  _exit(127);
}

/* Runs in the child: async-signal-safe calls only, up to the exec (or, for
 * an http check, up to closing efd: see httpcheck.c on what follows). */
__attribute__((noreturn)) static void child(const struct spawn *s, int devnull, int out_w,
                                            int err_w, int efd) {
  struct sigaction sa;
  sigset_t none;
  char buf[PATH_MAX];
  int saw_eacces = 0, last = ENOENT, sfd = s->script_fd;

  /* The agent blocks SIGCHLD/SIGTERM/SIGINT for its signalfd and ignores
   * SIGPIPE: both survive exec, so restore the defaults a command expects. */
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &sa, NULL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  /* Own process group, so a timeout kills everything the job started. */
  if (setpgid(0, 0)) child_fail(efd, ST_SETUP, errno);
  /* The agent keeps 0-2 open (main.c), so every fd here is >= 3 and the
   * dup2s cannot clobber one another. */
  if (dup2(devnull, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
    child_fail(efd, ST_SETUP, errno);
  /* The script's descriptor goes to SCRIPT_FD, efd to 3; first out of their
   * way, so neither move clobbers the other. */
  if (sfd >= 0 && sfd <= SCRIPT_FD && (sfd = fcntl(sfd, F_DUPFD_CLOEXEC, SCRIPT_FD + 1)) < 0)
    child_fail(efd, ST_SETUP, errno);
  /* efd moves to 3 and survives the close_range; still CLOEXEC, so a
   * successful exec closes it and the parent reads EOF. */
  if (efd != 3) {
    if (dup3(efd, 3, O_CLOEXEC) < 0) child_fail(efd, ST_SETUP, errno);
    efd = 3;
  }
  /* Not CLOEXEC: the interpreter opens /dev/fd/SCRIPT_FD after the exec. */
  if (sfd >= 0 && dup2(sfd, SCRIPT_FD) < 0) child_fail(efd, ST_SETUP, errno);
  close_range(sfd >= 0 ? SCRIPT_FD + 1 : 4, ~0U, 0);

  if (s->set_user) {
    if (setgroups((size_t)s->ngroups, s->groups)) child_fail(efd, ST_SETGROUPS, errno);
    if (setgid(s->gid)) child_fail(efd, ST_SETGID, errno);
    if (setuid(s->uid)) child_fail(efd, ST_SETUID, errno);
  }
  /* After the user switch: the directory must be reachable as that user. */
  if (chdir(s->cwd)) child_fail(efd, ST_CHDIR, errno);

  if (s->http) {
    /* Set up like a command; closing efd tells the parent it started.
     * The check runs with the job's environment (not the agent's: libcurl
     * and GnuTLS read some variables), and writes to pipes the parent may
     * close: EPIPE, not a signal. */
    environ = s->envp;
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    close(efd);
    _exit(ka_httpcheck_run(s->http, s->http_timeout_ms, s->http_cap, 1, 2));
  }
  if (strchr(s->argv[0], '/')) {
    execve(s->argv[0], s->argv, s->envp);
    child_fail(efd, ST_EXEC, errno);
  }
  /* Search the job's PATH, not the agent's (execvp would use ours). */
  for (const char *p = s->path; *p;) {
    const char *colon = strchr(p, ':');
    size_t dl = colon ? (size_t)(colon - p) : strlen(p), al = strlen(s->argv[0]);
    if (dl == 0) { /* an empty element means the current directory */
      buf[0] = '.';
      dl = 1;
    } else if (dl < sizeof buf) {
      memcpy(buf, p, dl);
    }
    if (dl + 1 + al < sizeof buf) {
      buf[dl] = '/';
      memcpy(buf + dl + 1, s->argv[0], al + 1);
      execve(buf, s->argv, s->envp);
      if (errno == EACCES) saw_eacces = 1;
      else if (errno != ENOENT && errno != ENOTDIR) last = errno;
    }
    if (!colon) break;
    p = colon + 1;
  }
  child_fail(efd, ST_EXEC, saw_eacces ? EACCES : last);
}

/* ---- starting ----------------------------------------------------------- */

struct job {
  const char *run_id, *command_id, *agent_id, *shell, *cwd, *user;
  json_t *argv, *env;
  const char *interpreter, *script; /* the script kind: both set */
  size_t script_len;
  const ka_httpcheck_t *http;       /* the http kind: &http_buf, else NULL */
  ka_httpcheck_t http_buf;
  int64_t timeout_ms, output_cap;
  int refuse; /* with a decode error: report it `refused`, not `failed` */
};

/* A string member without NUL bytes (the job is parsed with NUL allowed,
 * so that a NUL can be reported instead of dropping the whole job), or
 * NULL. */
static const char *str_nonul(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) return NULL;
  return json_string_value(v);
}

static int script_decode(const json_t *v, struct job *j, keel_err_t *e) {
  const json_t *interp, *body;
  int rc = 0;

  if (!json_is_object(v)) {
    rc = keel_err_set(e, KEEL_EINVAL, "job: 'script' must be an object {interpreter, body}");
    goto out;
  }
  interp = json_object_get(v, "interpreter");
  body = json_object_get(v, "body");
  if (!(j->interpreter = str_nonul(v, "interpreter")) || j->interpreter[0] != '/' ||
      json_string_length(interp) >= PATH_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "job: script.interpreter must be an absolute path");
    goto out;
  }
  if (!json_is_string(body)) {
    rc = keel_err_set(e, KEEL_EINVAL, "job: script.body must be a string");
    goto out;
  }
  j->script = json_string_value(body);
  j->script_len = json_string_length(body);
  if (j->script_len > SCRIPT_MAX) {
    rc = keel_err_set(e, KEEL_EINVAL, "job: script.body is %zu bytes, over the %d-byte limit",
                      j->script_len, SCRIPT_MAX);
    goto out;
  }
  /* An interpreter would stop reading at the NUL, or choke: the script
   * that ran would not be the one that was signed. */
  if (memchr(j->script, '\0', j->script_len)) {
    rc = keel_err_set(e, KEEL_EINVAL, "job: script.body contains a NUL byte");
    goto out;
  }
out:
  return rc;
}

/* Reads the fields we use; unknown fields are tolerated (the server signed
 * them; a newer server may add some).  An error sets j->refuse when the job
 * is not one this agent can make sense of (kinds, script, http), as opposed
 * to one it cannot start (argv, env, timeout: reported `failed`). */
static int job_decode(json_t *o, struct job *j, keel_err_t *e) {
  static const char *const kinds[] = {"argv", "shell", "script", "http"};
  json_t *v, *script, *http;
  const char *key;
  char given[64] = "";
  int nkinds = 0;

  memset(j, 0, sizeof *j);
  if (!json_is_object(o)) return keel_err_set(e, KEEL_EINVAL, "job: not a JSON object");
  j->run_id = str_nonul(o, "run_id");
  j->command_id = str_nonul(o, "command_id");
  j->agent_id = str_nonul(o, "agent_id");
  if (!j->run_id || !ka_valid_run_id(j->run_id))
    return keel_err_set(e, KEEL_EINVAL, "job: run_id missing or not [A-Za-z0-9_-]{1,64}");
  /* Exactly one kind; null counts as absent.  Anything else is ambiguous
   * (which one did the server mean?): refused, nothing runs. */
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    v = json_object_get(o, kinds[i]);
    if (!v || json_is_null(v)) continue;
    if (nkinds++) strcat(given, " and ");
    strcat(given, kinds[i]);
  }
  if (nkinds != 1) {
    j->refuse = 1;
    return keel_err_set(e, KEEL_EINVAL, "job: give exactly one of argv, shell, script, http (%s%s)",
                        nkinds ? "this one has " : "none is given", given);
  }
  script = json_object_get(o, "script");
  if (script && !json_is_null(script) && script_decode(script, j, e)) {
    j->refuse = 1;
    return KEEL_EINVAL;
  }
  http = json_object_get(o, "http");
  if (http && !json_is_null(http)) {
    keel_err_t he;
    if (ka_httpcheck_decode(http, &j->http_buf, &he)) {
      j->refuse = 1;
      return keel_err_set(e, KEEL_EINVAL, "job: %s", he.msg);
    }
    j->http = &j->http_buf;
  }
#define OPTSTR(name, field)                                                             \
  do {                                                                                  \
    v = json_object_get(o, name);                                                       \
    if (v && !json_is_null(v)) {                                                        \
      if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) \
        return keel_err_set(e, KEEL_EINVAL, "job: '" name "' must be a string or null"); \
      j->field = json_string_value(v);                                                  \
    }                                                                                   \
  } while (0)
  OPTSTR("shell", shell);
  OPTSTR("cwd", cwd);
  OPTSTR("user", user);
#undef OPTSTR
  j->argv = json_object_get(o, "argv");
  if (j->argv && json_is_null(j->argv)) j->argv = NULL;
  if (j->argv) {
    size_t i;
    if (!json_is_array(j->argv) || json_array_size(j->argv) == 0 ||
        json_array_size(j->argv) > MAX_ARGS)
      return keel_err_set(e, KEEL_EINVAL, "job: argv must be a non-empty array");
    json_array_foreach(j->argv, i, v) {
      if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return keel_err_set(e, KEEL_EINVAL, "job: argv[%zu] must be a string without NUL", i);
    }
    if (!*json_string_value(json_array_get(j->argv, 0)))
      return keel_err_set(e, KEEL_EINVAL, "job: argv[0] is empty");
  }
  j->env = json_object_get(o, "env");
  if (j->env && json_is_null(j->env)) j->env = NULL;
  if (j->env) {
    if (!json_is_object(j->env) || json_object_size(j->env) > MAX_ENV)
      return keel_err_set(e, KEEL_EINVAL, "job: env must be an object of strings");
    json_object_foreach(j->env, key, v) {
      if (!*key || strchr(key, '=') || !json_is_string(v) ||
          strlen(json_string_value(v)) != json_string_length(v))
        return keel_err_set(e, KEEL_EINVAL, "job: env '%.64s': bad name or value", key);
    }
  }
  v = json_object_get(o, "timeout_ms");
  j->timeout_ms = json_is_integer(v) ? json_integer_value(v) : DEFAULT_TIMEOUT_MS;
  if (j->timeout_ms <= 0 || j->timeout_ms > MAX_TIMEOUT_MS)
    return keel_err_set(e, KEEL_EINVAL, "job: timeout_ms out of range");
  v = json_object_get(o, "output_cap");
  j->output_cap = json_is_integer(v) ? json_integer_value(v) : KA_DEFAULT_OUTPUT_CAP;
  if (j->output_cap < 0 || j->output_cap > KA_MAX_OUTPUT_CAP)
    return keel_err_set(e, KEEL_EINVAL, "job: output_cap out of range (0..%d)",
                        KA_MAX_OUTPUT_CAP);
  return 0;
}

static char *env_entry(const char *k, const char *v) {
  size_t kl = strlen(k), vl = strlen(v);
  char *s = malloc(kl + vl + 2);
  if (!s) return NULL;
  memcpy(s, k, kl);
  s[kl] = '=';
  memcpy(s + kl + 1, v, vl + 1);
  return s;
}

static void strv_free(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* Sets or replaces NAME in the NULL-terminated envp of n entries. */
static int env_set(char **envp, size_t *n, const char *k, const char *v) {
  size_t kl = strlen(k);
  char *s = env_entry(k, v);
  if (!s) return KEEL_ENOMEM;
  for (size_t i = 0; i < *n; i++)
    if (!strncmp(envp[i], k, kl) && envp[i][kl] == '=') {
      free(envp[i]);
      envp[i] = s;
      return 0;
    }
  envp[(*n)++] = s;
  envp[*n] = NULL;
  return 0;
}

/* The environment every child gets: PATH, LANG, then (with pw, the user
 * it runs as) HOME, USER, LOGNAME, then env (a job's, may be NULL); and
 * s->path, the PATH to search.  KEEL_ENOMEM or 0. */
static int spawn_env(struct spawn *s, const struct passwd *pw, const json_t *env) {
  size_t n = 0;
  const char *key;
  json_t *v;

  s->envp = calloc(6 + (env ? json_object_size(env) : 0) + 1, sizeof *s->envp);
  if (!s->envp) return KEEL_ENOMEM;
  if (env_set(s->envp, &n, "PATH", SAFE_PATH) || env_set(s->envp, &n, "LANG", "C.UTF-8"))
    return KEEL_ENOMEM;
  if (pw && (env_set(s->envp, &n, "HOME", pw->pw_dir) || env_set(s->envp, &n, "USER", pw->pw_name) ||
             env_set(s->envp, &n, "LOGNAME", pw->pw_name)))
    return KEEL_ENOMEM;
  if (env) {
    json_object_foreach((json_t *)env, key, v) {
      if (env_set(s->envp, &n, key, json_string_value(v))) return KEEL_ENOMEM;
    }
  }
  s->path = SAFE_PATH;
  for (size_t i = 0; i < n; i++)
    if (!strncmp(s->envp[i], "PATH=", 5)) s->path = s->envp[i] + 5;
  return 0;
}

/* Fills s from the job; on failure `error` says why (for a `failed`
 * result).  script_path: where a script job's body will be (start()
 * writes it once the user is known). */
static int spawn_prepare(const struct job *j, const char *script_path, struct spawn *s,
                         char *error, size_t errsz) {
  struct passwd pw, *pwp = NULL;
  char *pwbuf = NULL;
  long pwsz = sysconf(_SC_GETPW_R_SIZE_MAX);
  size_t i;
  json_t *v;
  int rc = 0, err;

  memset(s, 0, sizeof *s);
  s->script_fd = -1;
  if (pwsz < 16384) pwsz = 16384;
  pwbuf = malloc((size_t)pwsz);
  if (!pwbuf) goto nomem;
  if (j->user) {
    err = getpwnam_r(j->user, &pw, pwbuf, (size_t)pwsz, &pwp);
    if (!pwp) {
      snprintf(error, errsz, "user '%.64s': %s", j->user, err ? strerror(err) : "no such user");
      rc = KEEL_EINVAL;
      goto out;
    }
    /* Switching to ourselves needs no privilege, and as non-root would fail
     * at setgroups. */
    if (pw.pw_uid != geteuid()) {
      int ng = 64;
      s->set_user = 1;
      s->uid = pw.pw_uid;
      s->gid = pw.pw_gid;
      for (;;) {
        gid_t *g = realloc(s->groups, (size_t)ng * sizeof *g);
        if (!g) goto nomem;
        s->groups = g;
        if (getgrouplist(pw.pw_name, pw.pw_gid, s->groups, &ng) >= 0) break;
        if (ng > 65536) {
          snprintf(error, errsz, "user '%.64s': too many groups", j->user);
          rc = KEEL_EINVAL;
          goto out;
        }
      }
      s->ngroups = ng;
    }
  } else {
    getpwuid_r(geteuid(), &pw, pwbuf, (size_t)pwsz, &pwp);
  }

  if (j->http && j->http->u.https && KA_STATIC_LINKED) {
    /* libcurl cannot be loaded into a static program (static_link.h): the
     * child execs the dynamically linked agent, which runs the same check
     * with the same environment, user and exit codes. */
    char dyn[PATH_MAX];
    keel_err_t de;
    if (ka_dynamic_agent(dyn, sizeof dyn, "https checks", &de)) {
      snprintf(error, errsz, "%s", de.msg);
      rc = KEEL_ENOENT;
      goto out;
    }
    s->argv = ka_httpcheck_argv(dyn, j->http, (long)j->timeout_ms + HTTP_GRACE_MS,
                                (size_t)j->output_cap);
    if (!s->argv) goto nomem;
  } else if (j->http) {
    /* Nothing to exec: the child runs the check itself. */
    s->http = j->http;
    s->http_timeout_ms = (long)j->timeout_ms + HTTP_GRACE_MS;
    s->http_cap = (size_t)j->output_cap;
  } else if (j->script) {
    /* DIR is 0700: a child that switched users cannot open the path, so it
     * gets the file as an open descriptor, which the interpreter opens
     * again as /dev/fd/N (the file is then owned by that user). */
    s->argv = calloc(3, sizeof *s->argv);
    if (!s->argv || !(s->argv[0] = strdup(j->interpreter)) ||
        !(s->argv[1] = strdup(s->set_user ? "/dev/fd/" KA_STR(SCRIPT_FD) : script_path)))
      goto nomem;
  } else if (j->shell) {
    s->argv = calloc(4, sizeof *s->argv);
    if (!s->argv || !(s->argv[0] = strdup("/bin/sh")) || !(s->argv[1] = strdup("-c")) ||
        !(s->argv[2] = strdup(j->shell)))
      goto nomem;
  } else {
    s->argv = calloc(json_array_size(j->argv) + 1, sizeof *s->argv);
    if (!s->argv) goto nomem;
    json_array_foreach(j->argv, i, v) {
      if (!(s->argv[i] = strdup(json_string_value(v)))) goto nomem;
    }
  }

  if (spawn_env(s, pwp, j->env)) goto nomem;
  s->cwd = j->cwd && *j->cwd ? j->cwd : "/";
  goto out;
nomem:
  snprintf(error, errsz, "out of memory");
  rc = KEEL_ENOMEM;
out:
  free(pwbuf);
  return rc;
}

static void spawn_free(struct spawn *s) {
  strv_free(s->argv);
  strv_free(s->envp);
  free(s->groups);
  if (s->script_fd >= 0) close(s->script_fd);
  memset(s, 0, sizeof *s);
  s->script_fd = -1;
}

/* Writes the script body to path, a new file (O_EXCL: never someone
 * else's), mode 0700, owned by the run-as user when the child switches
 * users; then, in that case, opens it read-only into s->script_fd for the
 * child.  No fsync: a crash loses the run, and the file with it.  On
 * failure the file is gone and `error` says why. */
static int script_write(const struct job *j, const char *path, struct spawn *s, char *error,
                        size_t errsz) {
  const char *p = j->script;
  size_t left = j->script_len;
  int fd, rc = 0;

  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700);
  if (fd < 0) {
    snprintf(error, errsz, "create %.256s: %s", path, strerror(errno));
    rc = KEEL_EIO;
    goto out;
  }
  if (fchmod(fd, 0700) || (s->set_user && fchown(fd, s->uid, s->gid))) {
    snprintf(error, errsz, "chmod/chown %.256s: %s", path, strerror(errno));
    rc = KEEL_EIO;
    goto out;
  }
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      snprintf(error, errsz, "write %.256s: %s", path, strerror(errno));
      rc = KEEL_EIO;
      goto out;
    }
    p += n;
    left -= (size_t)n;
  }
  if (s->set_user && (s->script_fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
    snprintf(error, errsz, "open %.256s: %s", path, strerror(errno));
    rc = KEEL_EIO;
  }
out:
  if (fd >= 0) {
    if (close(fd) && !rc) {
      snprintf(error, errsz, "close %.256s: %s", path, strerror(errno));
      rc = KEEL_EIO;
    }
    if (rc) unlink(path); /* ours: O_EXCL created it */
  }
  return rc;
}

static const char *stage_name(int st) {
  switch (st) {
  case ST_SETGROUPS: return "setgroups";
  case ST_SETGID: return "setgid";
  case ST_SETUID: return "setuid";
  case ST_CHDIR: return "chdir";
  case ST_EXEC: return "exec";
  default: return "setup";
  }
}

/* Forks s with stdin /dev/null and stdout, stderr out_w, err_w (the
 * caller's: it closes them after).  Returns 0 with *pid (also the child's
 * process group) once the child exec'd (or, for an http check, set itself
 * up), else KEEL_EIO with error saying what failed (the child reaped). */
static int spawn_fork(const struct spawn *s, int out_w, int err_w, pid_t *pid, char *error,
                      size_t errsz) {
  int ep[2] = {-1, -1}, devnull = -1, rc = 0;
  struct child_err ce;
  ssize_t n;
  pid_t p;

  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0 || pipe2(ep, O_CLOEXEC)) {
    snprintf(error, errsz, "pipe: %s", strerror(errno));
    rc = KEEL_EIO;
    goto out;
  }
  p = fork();
  if (p < 0) {
    snprintf(error, errsz, "fork: %s", strerror(errno));
    rc = KEEL_EIO;
    goto out;
  }
  if (p == 0) child(s, devnull, out_w, err_w, ep[1]);
  /* Also from the parent, so kill(-pid) works even if we get there before
   * the child ran; EACCES after its exec is fine (it did it itself). */
  setpgid(p, p);
  close(ep[1]);
  ep[1] = -1;
  /* Blocks only until the child execs (CLOEXEC closes the pipe: EOF) or
   * reports where it failed. */
  do n = read(ep[0], &ce, sizeof ce);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)sizeof ce) {
    int status;
    while (waitpid(p, &status, 0) < 0 && errno == EINTR) {
    }
    if (ce.stage == ST_CHDIR)
      snprintf(error, errsz, "chdir %.256s: %s", s->cwd, strerror(ce.err));
    else if (ce.stage == ST_EXEC)
      snprintf(error, errsz, "exec %.256s: %s", s->argv[0], strerror(ce.err));
    else
      snprintf(error, errsz, "%s: %s", stage_name(ce.stage), strerror(ce.err));
    rc = KEEL_EIO;
    goto out;
  }
  *pid = p;
out:
  if (ep[0] >= 0) close(ep[0]);
  if (ep[1] >= 0) close(ep[1]);
  if (devnull >= 0) close(devnull);
  return rc;
}

/* pid 0: before fork.  After fork the file is written again with the
 * process group's identity, so a restarted agent can stop it (procgroup.c). */
static int write_running(ka_exec_t *x, const struct job *j, int64_t started, pid_t pid,
                         keel_err_t *e) {
  char rdir[PATH_MAX], name[KA_RUN_ID_MAX + 8], *text = NULL, boot[KA_BOOT_ID_LEN];
  unsigned long long st = 0;
  json_t *o;
  int rc;

  o = json_pack("{s:s,s:s?,s:I}", "run_id", j->run_id, "command_id", j->command_id, "started_at",
                (json_int_t)started);
  if (o && pid > 0 && ka_boot_id(boot) == 0 && ka_proc_start_time(pid, &st) == 0) {
    char stxt[32];
    snprintf(stxt, sizeof stxt, "%llu", st); /* text: ticks may exceed json_int_t */
    json_object_set_new(o, "pgid", json_integer(pid));
    json_object_set_new(o, "boot_id", json_string(boot));
    json_object_set_new(o, "leader_start", json_string(stxt));
  }
  if (o) text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!text) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  ka_path(rdir, "%s/running", x->dir);
  snprintf(name, sizeof name, "%s.json", j->run_id);
  rc = ka_write_atomic(rdir, name, text, strlen(text), 0600, e);
  free(text);
  return rc;
}

/* Forks the job.  Returns 0 with r filled, or 1 when it could not start
 * (a `failed` result was spooled), negative on storage failure. */
static int start(ka_exec_t *x, const struct job *j, int64_t started) {
  int outp[2] = {-1, -1}, errp[2] = {-1, -1}, rc = 0;
  int script_made = 0;
  char error[512] = "", script[PATH_MAX] = "";
  struct spawn s;
  ka_run_t *r = NULL;
  pid_t pid;

  memset(&s, 0, sizeof s);
  s.script_fd = -1; /* spawn_free may run before spawn_prepare filled s */
  if (j->script) ka_path(script, "%s/scripts/%s", x->dir, j->run_id);
  if (spawn_prepare(j, script, &s, error, sizeof error)) goto failed;
  r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(error, sizeof error, "out of memory");
    goto failed;
  }
  r->out_fd = r->err_fd = -1;
  if (j->script) {
    if (script_write(j, script, &s, error, sizeof error)) goto failed;
    script_made = 1;
    if (!(r->script = strdup(script))) {
      snprintf(error, sizeof error, "out of memory");
      goto failed;
    }
  }
  if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
    snprintf(error, sizeof error, "pipe: %s", strerror(errno));
    goto failed;
  }
  if (spawn_fork(&s, outp[1], errp[1], &pid, error, sizeof error)) goto failed;
  close(outp[1]);
  close(errp[1]);
  outp[1] = errp[1] = -1;
  fcntl(outp[0], F_SETFL, O_NONBLOCK);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);
  strcpy(r->run_id, j->run_id);
  r->pid = pid;
  r->out_fd = outp[0];
  r->err_fd = errp[0];
  outp[0] = errp[0] = -1;
  keel_buf_init(&r->out, (size_t)j->output_cap);
  keel_buf_init(&r->err, (size_t)j->output_cap);
  r->started_at = started;
  r->deadline = keel_mono_ms() + j->timeout_ms;
  r->next = x->runs;
  x->runs = r;
  x->nruns++;
  r = NULL;
  keel_log(x->log, KEEL_LOG_INFO, "run %s: started pid %d", j->run_id, (int)pid);
  {
    /* Best effort: without it a crash leaves the group unsupervised, which
     * is what happened before this record existed; the run still works. */
    keel_err_t we = {0};
    if (write_running(x, j, started, pid, &we))
      keel_log(x->log, KEEL_LOG_WARN, "run %s: recording its process group: %s", j->run_id, we.msg);
  }
  goto out;
failed:
  keel_log(x->log, KEEL_LOG_WARN, "run %s: failed to start: %s", j->run_id, error);
  if (script_made) unlink(script);
  rc = spool_simple(x, j->run_id, "failed", started, error);
  if (rc == 0) {
    unlink_running(x, j->run_id);
    rc = 1;
  }
out:
  for (int i = 0; i < 2; i++) {
    if (outp[i] >= 0) close(outp[i]);
    if (errp[i] >= 0) close(errp[i]);
  }
  if (r) {
    free(r->script);
    free(r);
  }
  spawn_free(&s);
  return rc;
}

/* Spools a `refused` result unless the id already has a result or was
 * accepted: a forged copy must not overwrite or pre-empt the genuine run,
 * so a refused id is not recorded in DIR/seen either. */
static int refuse(ka_exec_t *x, const char *run_id, int64_t now, const char *why) {
  keel_log(x->log, KEEL_LOG_ERROR, "run %s: refused: %s", run_id, why);
  if (seen_has(x, id_hash(run_id)) || ka_spool_has(x->dir, run_id)) return 0;
  return spool_simple(x, run_id, "refused", now, why) == 0 ? 1 : KEEL_EIO;
}

int ka_exec_submit(ka_exec_t *x, const char *job_text, size_t len, const char *sig_hex) {
  keel_err_t e, ve;
  json_error_t je;
  json_t *o = NULL;
  const char *run_id;
  struct job j;
  int64_t now = keel_now_ms();
  int rc = 0, verified;

  /* The signature is checked before anything else; the text is parsed
   * regardless, but only so a refusal can name the run: nothing else in an
   * unverified job is acted upon. */
  verified = keel_agent_verify_job(sig_hex, x->id->server_pk, job_text, len, &ve) == 0;
  /* NUL allowed in strings, so a job holding one is reported (job_decode
   * refuses NUL where it matters) rather than dropped unparsed. */
  o = json_loadb(job_text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
  run_id = json_is_object(o) ? str_nonul(o, "run_id") : NULL;
  if (!ka_valid_run_id(run_id)) {
    /* No run to report on (and no safe file name): log only. */
    keel_log(x->log, KEEL_LOG_ERROR, "dropped a job without a valid run_id (%s)",
             verified ? "signed by the server" : ve.msg);
    goto out;
  }
  if (!verified) {
    rc = refuse(x, run_id, now, ve.msg);
    goto out;
  }
  if (job_decode(o, &j, &e)) {
    /* Signed by the server but not runnable: report once, as `failed`, or
     * `refused` when the job itself is not one we accept (j.refuse). */
    if (seen_has(x, id_hash(run_id)) || ka_spool_has(x->dir, run_id)) goto out;
    keel_log(x->log, KEEL_LOG_WARN, "run %s: %s", run_id, e.msg);
    if ((rc = seen_add(x, run_id, &ve)) == 0)
      rc = spool_simple(x, run_id, j.refuse ? "refused" : "failed", now, e.msg) == 0 ? 1 : KEEL_EIO;
    goto out;
  }
  if (!j.agent_id || strcmp(j.agent_id, x->id->agent_id)) {
    rc = refuse(x, run_id, now, "job is for another agent");
    goto out;
  }
  if (seen_has(x, id_hash(run_id)) || ka_spool_has(x->dir, run_id)) {
    keel_log(x->log, KEEL_LOG_DEBUG, "run %s: delivered again, already accepted", run_id);
    goto out;
  }
  /* running/ first, then seen: a crash between the two leaves a running
   * file, which the next start reports as `interrupted` (and records in
   * seen).  The other order would leave an id in seen with no result, and
   * every redelivery would be skipped forever. */
  if ((rc = write_running(x, &j, now, 0, &e))) {
    keel_log(x->log, KEEL_LOG_ERROR, "run %s: not started: %s", run_id, e.msg);
    goto out;
  }
  if ((rc = seen_add(x, run_id, &e))) {
    keel_log(x->log, KEEL_LOG_ERROR, "run %s: not started: %s", run_id, e.msg);
    unlink_running(x, run_id);
    goto out;
  }
  rc = start(x, &j, now);
out:
  json_decref(o);
  return rc;
}

/* ---- running ----------------------------------------------------------- */

/* Reads what is there; past the cap, keeps reading and discards so the
 * child never blocks on a full pipe. */
static void drain(int *fd, keel_buf_t *b, int *trunc) {
  char chunk[16384];
  for (;;) {
    ssize_t n = read(*fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) { /* EOF, or an error that will not go away */
      close(*fd);
      *fd = -1;
      return;
    }
    size_t room = b->max - b->len, take = (size_t)n < room ? (size_t)n : room;
    if (take && keel_buf_append(b, chunk, take)) take = 0; /* no memory: count as cut */
    if (take < (size_t)n) *trunc = 1;
  }
}

static int finish(ka_exec_t *x, ka_run_t *r) {
  const char *status, *why = "";
  int code = -1, sig = -1, rc;
  keel_err_t e;
  char *body;

  if (r->cancelled) {
    /* How it ended is told by exit_code / signal; the status says why. */
    status = "cancelled";
    why = r->killed ? "cancelled by keeld: SIGTERM to the process group, SIGKILL "
                      KA_STR(CANCEL_GRACE_MS) " ms later"
                    : "cancelled by keeld: SIGTERM to the process group";
    if (WIFEXITED(r->wstatus)) code = WEXITSTATUS(r->wstatus);
    else if (WIFSIGNALED(r->wstatus)) sig = WTERMSIG(r->wstatus);
  } else if (r->timed_out) {
    status = "timeout";
    why = "timed out: process group killed";
  } else if (WIFEXITED(r->wstatus)) {
    status = "exited";
    code = WEXITSTATUS(r->wstatus);
  } else {
    status = "signaled";
    sig = WTERMSIG(r->wstatus);
  }
  body = ka_result_json(r->run_id, status, code, sig, r->out.data, r->out.len, r->out_trunc,
                        r->err.data, r->err.len, r->err_trunc, r->started_at, keel_now_ms(), why);
  if (!body) {
    keel_log(x->log, KEEL_LOG_ERROR, "run %s: out of memory building the result", r->run_id);
    return KEEL_ENOMEM;
  }
  rc = ka_spool_put(x->dir, r->run_id, body, &e);
  free(body);
  if (rc) {
    keel_log(x->log, KEEL_LOG_ERROR, "run %s: cannot spool result: %s", r->run_id, e.msg);
    return rc;
  }
  unlink_running(x, r->run_id);
  /* Only now: a crash before this leaves the file to scripts_clean. */
  if (r->script && unlink(r->script) && errno != ENOENT)
    keel_log(x->log, KEEL_LOG_WARN, "run %s: removing %s: %s", r->run_id, r->script,
             strerror(errno));
  keel_log(x->log, KEEL_LOG_INFO, "run %s: %s%s%d", r->run_id, status,
           code >= 0 ? " code " : sig >= 0 ? " signal " : "", code >= 0 ? code : sig);
  return 0;
}

/* SIGKILL to r's whole group: a shell's children go too.  After the leader
 * exited, this ends whoever still holds its pipes. */
static void kill_group(ka_run_t *r, int64_t now) {
  kill(-r->pid, SIGKILL);
  r->killed = 1;
  r->drain_until = now + DRAIN_GRACE_MS;
  if (!r->reaped) {
    while (waitpid(r->pid, &r->wstatus, 0) < 0 && errno == EINTR) {
    }
    r->reaped = 1;
  }
}

int ka_exec_cancel(ka_exec_t *x, const char *run_id) {
  for (ka_run_t *r = x->runs; r; r = r->next) {
    if (strcmp(r->run_id, run_id)) continue;
    if (r->cancelled) return 0;
    r->cancelled = 1;
    r->kill_at = keel_mono_ms() + CANCEL_GRACE_MS;
    /* Only while the group can still be ours: once the leader is reaped
     * and the pipes are closed, its id may belong to someone else. */
    if (!r->reaped || r->out_fd >= 0 || r->err_fd >= 0) kill(-r->pid, SIGTERM);
    keel_log(x->log, KEEL_LOG_INFO, "run %s: cancelled by keeld: SIGTERM sent", r->run_id);
    return 1;
  }
  return 0;
}

int ka_exec_step(ka_exec_t *x) {
  int64_t now = keel_mono_ms();
  ka_run_t **pp = &x->runs, *r;
  int spooled = 0, big = 0;

  while ((r = *pp)) {
    if (r->out_fd >= 0) drain(&r->out_fd, &r->out, &r->out_trunc);
    if (r->err_fd >= 0) drain(&r->err_fd, &r->err, &r->err_trunc);
    if (!r->reaped) {
      pid_t p = waitpid(r->pid, &r->wstatus, WNOHANG);
      if (p == r->pid || (p < 0 && errno == ECHILD)) r->reaped = 1;
    }
    if (!r->killed && (now >= r->deadline || (r->cancelled && now >= r->kill_at)) &&
        (!r->reaped || r->out_fd >= 0 || r->err_fd >= 0)) {
      r->timed_out = !r->reaped && now >= r->deadline;
      kill_group(r, now);
    }
    if (r->killed && now >= r->drain_until) {
      /* Someone escaped the group (setsid) and holds the pipes: stop
       * waiting for them. */
      if (r->out_fd >= 0) close(r->out_fd);
      if (r->err_fd >= 0) close(r->err_fd);
      r->out_fd = r->err_fd = -1;
    }
    if (r->reaped && r->out_fd < 0 && r->err_fd < 0) {
      /* On a spool failure the run is kept and retried next step. */
      if (finish(x, r) == 0) {
        big |= r->out.len + r->err.len > 65536;
        *pp = r->next;
        x->nruns--;
        run_free(r);
        spooled++;
        continue;
      }
    }
    pp = &r->next;
  }
  /* Large outputs leave freed heap behind; give it back so the idle
   * footprint stays small. */
  if (big) malloc_trim(0);
  return spooled;
}

size_t ka_exec_fds(const ka_exec_t *x, struct pollfd *fds, size_t max) {
  size_t n = 0;
  for (const ka_run_t *r = x->runs; r; r = r->next) {
    if (r->out_fd >= 0 && n < max) fds[n++] = (struct pollfd){.fd = r->out_fd, .events = POLLIN};
    if (r->err_fd >= 0 && n < max) fds[n++] = (struct pollfd){.fd = r->err_fd, .events = POLLIN};
  }
  return n;
}

long ka_exec_next_ms(const ka_exec_t *x) {
  int64_t now = keel_mono_ms(), best = -1;
  for (const ka_run_t *r = x->runs; r; r = r->next) {
    int64_t t = r->killed                               ? r->drain_until
                : r->cancelled && r->kill_at < r->deadline ? r->kill_at
                                                           : r->deadline;
    /* Done but not spooled (disk full?): retry each second, not in a spin. */
    if (r->reaped && r->out_fd < 0 && r->err_fd < 0) t = now + 1000;
    int64_t d = t > now ? t - now : 0;
    if (best < 0 || d < best) best = d;
  }
  return (long)best;
}

void ka_exec_running(const ka_exec_t *x, json_t *arr) {
  /* A run being stopped is left out: keeld answers a poll that lists a
   * withdrawn run at once, so listing it would make the agent spin. */
  for (const ka_run_t *r = x->runs; r; r = r->next)
    if (!r->cancelled) json_array_append_new(arr, json_string(r->run_id));
}

size_t ka_exec_wait(ka_exec_t *x, long max_ms) {
  int64_t end = keel_mono_ms() + max_ms;
  struct pollfd fds[256];

  ka_exec_step(x);
  while (x->runs && keel_mono_ms() < end) {
    size_t n = ka_exec_fds(x, fds, 256);
    long t = ka_exec_next_ms(x);
    /* No SIGCHLD here (tests have no signalfd): wake often to reap. */
    if (t < 0 || t > 20) t = 20;
    poll(fds, n, (int)t);
    ka_exec_step(x);
  }
  return x->nruns;
}

/* ---- commands of the agent's own (ka_cmd) ------------------------------ */

struct ka_cmd {
  struct spawn s;
};

int ka_cmd_prepare(ka_cmd_t **out, const char *const *argv, size_t argc, keel_err_t *e) {
  struct passwd pw, *pwp = NULL;
  long pwsz = sysconf(_SC_GETPW_R_SIZE_MAX);
  char *pwbuf = NULL;
  ka_cmd_t *c = NULL;
  int rc = 0;

  *out = NULL;
  if (argc == 0 || argc > MAX_ARGS || !argv[0][0]) {
    rc = keel_err_set(e, KEEL_EINVAL, "command: expected 1 to %d arguments, the first not empty",
                      MAX_ARGS);
    goto out;
  }
  if (pwsz < 16384) pwsz = 16384;
  if (!(c = calloc(1, sizeof *c)) || !(pwbuf = malloc((size_t)pwsz))) goto nomem;
  c->s.script_fd = -1;
  /* Run as the agent's own user: HOME, USER, LOGNAME are its. */
  getpwuid_r(geteuid(), &pw, pwbuf, (size_t)pwsz, &pwp);
  if (!(c->s.argv = calloc(argc + 1, sizeof *c->s.argv))) goto nomem;
  for (size_t i = 0; i < argc; i++)
    if (!(c->s.argv[i] = strdup(argv[i]))) goto nomem;
  if (spawn_env(&c->s, pwp, NULL)) goto nomem;
  c->s.cwd = "/";
  *out = c;
  c = NULL;
  goto out;
nomem:
  rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
out:
  if (c) ka_cmd_free(c);
  free(pwbuf);
  return rc;
}

void ka_cmd_free(ka_cmd_t *c) {
  if (!c) return;
  spawn_free(&c->s);
  free(c);
}

int ka_cmd_start(const ka_cmd_t *c, pid_t *pid, int *out_fd, keel_err_t *e) {
  int outp[2] = {-1, -1}, null_w = -1, rc = 0;
  char error[512];

  if (pipe2(outp, O_CLOEXEC) || (null_w = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0) {
    rc = keel_err_set(e, KEEL_EIO, "pipe: %s", strerror(errno));
    goto out;
  }
  if (spawn_fork(&c->s, outp[1], null_w, pid, error, sizeof error)) {
    rc = keel_err_set(e, KEEL_EIO, "%s", error);
    goto out;
  }
  fcntl(outp[0], F_SETFL, O_NONBLOCK);
  *out_fd = outp[0];
  outp[0] = -1;
out:
  if (outp[0] >= 0) close(outp[0]);
  if (outp[1] >= 0) close(outp[1]);
  if (null_w >= 0) close(null_w);
  return rc;
}
