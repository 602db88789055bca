/* spool.c — results waiting for their acknowledgement, and recovery of runs
 * the previous agent process left behind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "keel/json.h"
#include "keel/time.h"

/* A result holds at most two capped outputs as base64 plus a little. */
#define SPOOL_FILE_MAX ((size_t)2 * (KA_MAX_OUTPUT_CAP / 3 + 1) * 4 + 65536)
#define RUNNING_FILE_MAX 65536

static json_t *b64(const char *p, size_t n) {
  size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
  char *s = malloc(cap);
  json_t *j;

  if (!s) return NULL;
  sodium_bin2base64(s, cap, (const unsigned char *)(n ? p : ""), n,
                    sodium_base64_VARIANT_ORIGINAL);
  j = json_stringn_nocheck(s, strlen(s)); /* base64 is ASCII */
  free(s);
  return j;
}

char *ka_result_json(const char *run_id, const char *status, int exit_code, int sig,
                     const char *out, size_t out_len, int out_trunc, const char *err,
                     size_t err_len, int err_trunc, int64_t started_at, int64_t ended_at,
                     const char *error) {
  json_t *o = NULL, *so = b64(out, out_len), *se = b64(err, err_len);
  /* error may hold bytes from the job (a path, a user name): cut to what
   * keeld accepts, then made valid UTF-8 (a cut sequence becomes '?'). */
  char *msg = strndup(error ? error : "", KA_ERROR_MAX), *text = NULL;

  if (!so || !se || !msg) goto out;
  keel_utf8_sanitize(msg);
  /* "o" steals so and se, also on failure. */
  o = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:b,s:b,s:I,s:I,s:s}", "run_id", run_id, "status",
                status, "exit_code", exit_code >= 0 ? json_integer(exit_code) : json_null(),
                "signal", sig >= 0 ? json_integer(sig) : json_null(), "stdout_b64", so,
                "stderr_b64", se, "stdout_truncated", out_trunc, "stderr_truncated", err_trunc,
                "started_at", (json_int_t)started_at, "ended_at", (json_int_t)ended_at, "error",
                msg);
  so = se = NULL;
  if (o) text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
  json_decref(so);
  json_decref(se);
  json_decref(o);
  free(msg);
  return text;
}

int ka_spool_put(const char *dir, const char *run_id, const char *body, keel_err_t *e) {
  char sdir[PATH_MAX], name[KA_RUN_ID_MAX + 8];

  ka_path(sdir, "%s/spool", dir);
  snprintf(name, sizeof name, "%s.json", run_id);
  return ka_write_atomic(sdir, name, body, strlen(body), 0600, e);
}

int ka_spool_has(const char *dir, const char *run_id) {
  char p[PATH_MAX];
  ka_path(p, "%s/spool/%s.json", dir, run_id);
  return access(p, F_OK) == 0;
}

static int fsync_path(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
  if (fd < 0) return -1;
  if (fsync(fd)) rc = -1;
  close(fd);
  return rc;
}

/* "<run_id>.json" -> run_id, or 0 when the name is not one of ours (temp
 * files start with '.', which no run id does). */
static int name_to_id(const char *name, char id[KA_RUN_ID_MAX + 1]) {
  size_t n = strlen(name);
  if (n < 6 || n - 5 > KA_RUN_ID_MAX || strcmp(name + n - 5, ".json")) return 0;
  memcpy(id, name, n - 5);
  id[n - 5] = '\0';
  return ka_valid_run_id(id);
}

static int seen_append(const char *dir, const char *id, keel_err_t *e) {
  char path[PATH_MAX], line[KA_RUN_ID_MAX + 2];
  size_t n = (size_t)snprintf(line, sizeof line, "%s\n", id);
  int fd, rc = 0;

  ka_path(path, "%s/seen", dir);
  fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, line, n) != (ssize_t)n || fdatasync(fd))
    rc = keel_err_set(e, KEEL_EIO, "append to %s: %s", path, strerror(errno));
  if (fd >= 0) close(fd);
  return rc;
}

int ka_spool_recover(const char *dir, const keel_log_t *log, keel_err_t *e) {
  char rdir[PATH_MAX], path[PATH_MAX], id[KA_RUN_ID_MAX + 1];
  struct dirent *de;
  DIR *d = NULL;
  int rc = 0, count = 0;

  ka_path(rdir, "%s/running", dir);
  d = opendir(rdir);
  if (!d) {
    rc = keel_err_set(e, KEEL_EIO, "opendir %s: %s", rdir, strerror(errno));
    goto out;
  }
  while ((de = readdir(d))) {
    char *text = NULL, *body = NULL;
    json_t *o = NULL;
    json_t *sa;
    int64_t started = 0;
    size_t len;

    if (!name_to_id(de->d_name, id)) continue;
    ka_path(path, "%s/%s", rdir, de->d_name);
    if (!ka_spool_has(dir, id)) {
      /* The crash may have come between the running file and DIR/seen:
       * record the id, or a redelivery after the ack would run it. */
      if ((rc = seen_append(dir, id, e))) goto out;
      /* A running file that cannot be read still names the run: report it
       * with started_at 0 rather than lose it. */
      if (ka_read_file(path, RUNNING_FILE_MAX, &text, &len, NULL) == 0 &&
          keel_json_parse(text, len, &o, NULL) == 0 && (sa = json_object_get(o, "started_at")) &&
          json_is_integer(sa))
        started = json_integer_value(sa);
      if (o && json_is_integer(json_object_get(o, "pgid"))) {
        /* What the dead agent started may still run, unsupervised: stop it
         * before saying the run is over. */
        const char *ls = keel_json_str(o, "leader_start");
        int n = ka_procgroup_reap((long)json_integer_value(json_object_get(o, "pgid")),
                                  keel_json_str(o, "boot_id"), ls ? strtoull(ls, NULL, 10) : 0);
        if (n > 0)
          keel_log(log, KEEL_LOG_WARN, "run %s: killed what was left of its process group", id);
      }
      body = ka_result_json(id, "interrupted", -1, -1, "", 0, 0, "", 0, 0, started, keel_now_ms(),
                            "the agent stopped while the command ran");
      rc = body ? ka_spool_put(dir, id, body, e) : keel_err_set(e, KEEL_ENOMEM, "out of memory");
      free(text);
      free(body);
      json_decref(o);
      if (rc) goto out;
      keel_log(log, KEEL_LOG_WARN, "run %s was interrupted (agent restarted): reported", id);
      count++;
    }
    /* Only now that the result is durable may the running record go. */
    if (unlink(path) && errno != ENOENT) {
      rc = keel_err_set(e, KEEL_EIO, "unlink %s: %s", path, strerror(errno));
      goto out;
    }
  }
  fsync_path(rdir);
  rc = count;
out:
  if (d) closedir(d);
  return rc;
}

int ka_spool_oldest(const char *dir, char run_id[KA_RUN_ID_MAX + 1], char **body, size_t *len,
                    keel_err_t *e) {
  char sdir[PATH_MAX], path[PATH_MAX], id[KA_RUN_ID_MAX + 1];
  struct timespec best = {0, 0};
  struct dirent *de;
  struct stat st;
  DIR *d;
  int rc = 0, found = 0;

  *body = NULL;
  *len = 0;
  ka_path(sdir, "%s/spool", dir);
  d = opendir(sdir);
  if (!d) {
    rc = keel_err_set(e, KEEL_EIO, "opendir %s: %s", sdir, strerror(errno));
    goto out;
  }
  while ((de = readdir(d))) {
    if (!name_to_id(de->d_name, id)) continue;
    ka_path(path, "%s/%s", sdir, de->d_name);
    if (stat(path, &st)) continue;
    if (!found || st.st_mtim.tv_sec < best.tv_sec ||
        (st.st_mtim.tv_sec == best.tv_sec &&
         (st.st_mtim.tv_nsec < best.tv_nsec ||
          (st.st_mtim.tv_nsec == best.tv_nsec && strcmp(id, run_id) < 0)))) {
      best = st.st_mtim;
      strcpy(run_id, id);
      found = 1;
    }
  }
  if (!found) {
    rc = KEEL_ENOENT;
    goto out;
  }
  ka_path(path, "%s/%s.json", sdir, run_id);
  rc = ka_read_file(path, SPOOL_FILE_MAX, body, len, e);
out:
  if (d) closedir(d);
  return rc;
}

int ka_spool_drop(const char *dir, const char *run_id) {
  char sdir[PATH_MAX], path[PATH_MAX];
  ka_path(sdir, "%s/spool", dir);
  ka_path(path, "%s/%s.json", sdir, run_id);
  if (unlink(path) && errno != ENOENT) return KEEL_EIO;
  return fsync_path(sdir) ? KEEL_EIO : 0;
}
