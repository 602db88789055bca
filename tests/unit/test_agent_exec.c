/* Unit tests for src/agent/exec.c and spool.c: running jobs for real
 * (fork/exec of /bin tools) in a temporary state directory.  The http job
 * kind is in test_agent_httpcheck.c (it needs a server). */
#include <setjmp.h>
/* Paths here are built from a short mkdtemp directory; gcc cannot know
 * that and warns on every snprintf into a fixed buffer. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"

struct fx {
  char dir[PATH_MAX];
  ka_identity_t id;
  uint8_t srv_pk[KEEL_AGENT_PK_BYTES], srv_sk[KEEL_AGENT_SK_BYTES];
  ka_exec_t x;
  int n; /* run id counter */
};

static void rm_rf(const char *path) {
  DIR *d = opendir(path);
  struct dirent *de;
  char p[PATH_MAX];
  if (d) {
    while ((de = readdir(d))) {
      if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
      snprintf(p, sizeof p, "%s/%s", path, de->d_name);
      rm_rf(p);
    }
    closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  keel_err_t e;

  if (!f || keel_crypto_init()) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/keel-agent-test-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  strcat(f->dir, "/state"); /* let ka_state_prepare create it */
  if (ka_state_prepare(f->dir, &e)) return -1;
  ka_identity_keygen(&f->id);
  strcpy(f->id.agent_id, "agt_test");
  crypto_sign_keypair(f->srv_pk, f->srv_sk);
  memcpy(f->id.server_pk, f->srv_pk, sizeof f->srv_pk);
  if (ka_exec_init(&f->x, f->dir, &f->id, NULL, &e)) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  char *slash;
  ka_exec_free(&f->x);
  slash = strrchr(f->dir, '/');
  *slash = '\0';
  rm_rf(f->dir);
  free(f);
  return 0;
}

/* Completes job (a JSON object literal without run_id/agent_id) and submits
 * it signed with sk; returns the run id used. */
static const char *submit_with(struct fx *f, const char *fields, const uint8_t *sk,
                               const char *agent_id, const char *run_id) {
  static char id[64];
  char sig[KEEL_AGENT_SIG_HEX], *text;
  json_error_t je;
  json_t *o = json_loads(fields, 0, &je);

  if (!o) fail_msg("test job JSON: %s", je.text);
  if (run_id) snprintf(id, sizeof id, "%s", run_id);
  else snprintf(id, sizeof id, "run_t%d", ++f->n);
  json_object_set_new(o, "run_id", json_string(id));
  json_object_set_new(o, "command_id", json_string("cmd_t"));
  json_object_set_new(o, "agent_id", json_string(agent_id));
  json_object_set_new(o, "issued_at", json_integer(keel_now_ms()));
  text = json_dumps(o, JSON_COMPACT);
  keel_agent_sign_job(sig, sk, text, strlen(text));
  ka_exec_submit(&f->x, text, strlen(text), sig);
  free(text);
  json_decref(o);
  return id;
}

static const char *submit(struct fx *f, const char *fields) {
  return submit_with(f, fields, f->srv_sk, "agt_test", NULL);
}

static json_t *result(struct fx *f, const char *run_id) {
  char p[PATH_MAX], *text;
  size_t len;
  json_t *o;
  snprintf(p, sizeof p, "%s/spool/%s.json", f->dir, run_id);
  if (ka_read_file(p, (size_t)64 << 20, &text, &len, NULL)) return NULL;
  assert_int_equal(keel_json_parse(text, len, &o, NULL), 0);
  free(text);
  return o;
}

static json_t *run(struct fx *f, const char *fields, long max_ms) {
  const char *id = submit(f, fields);
  assert_int_equal(ka_exec_wait(&f->x, max_ms), 0);
  json_t *r = result(f, id);
  assert_non_null(r);
  return r;
}

/* Decoded stdout/stderr; caller frees. */
static char *b64field(json_t *r, const char *k, size_t *n) {
  const char *s = keel_json_str(r, k);
  size_t cap = strlen(s) + 1;
  char *out = malloc(cap);
  assert_non_null(s);
  assert_int_equal(sodium_base642bin((unsigned char *)out, cap, s, strlen(s), NULL, n, NULL,
                                     sodium_base64_VARIANT_ORIGINAL),
                   0);
  out[*n] = '\0';
  return out;
}

static void assert_status(json_t *r, const char *status) {
  const char *s = keel_json_str(r, "status");
  if (!s || strcmp(s, status))
    fail_msg("status %s, expected %s (error: %s)", s ? s : "(none)", status,
             keel_json_str(r, "error"));
}

static void assert_stdout(json_t *r, const char *want) {
  size_t n;
  char *out = b64field(r, "stdout_b64", &n);
  assert_string_equal(out, want);
  free(out);
}

static void test_echo(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"/bin/echo\",\"hi\"],\"shell\":null,\"timeout_ms\":5000}", 5000);
  assert_status(r, "exited");
  assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), 0);
  assert_true(json_is_null(json_object_get(r, "signal")));
  assert_stdout(r, "hi\n");
  assert_true(json_is_false(json_object_get(r, "stdout_truncated")));
  assert_true(json_integer_value(json_object_get(r, "ended_at")) >=
              json_integer_value(json_object_get(r, "started_at")));
  json_decref(r);
}

static void test_path_search(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"echo\",\"found\"]}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "found\n");
  json_decref(r);
}

static void test_shell_exit(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":null,\"shell\":\"echo err >&2; exit 3\"}", 5000);
  size_t n;
  char *err;
  assert_status(r, "exited");
  assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), 3);
  err = b64field(r, "stderr_b64", &n);
  assert_string_equal(err, "err\n");
  free(err);
  json_decref(r);
}

static void test_signaled(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"shell\":\"kill -TERM $$\"}", 5000);
  assert_status(r, "signaled");
  assert_int_equal(json_integer_value(json_object_get(r, "signal")), SIGTERM);
  assert_true(json_is_null(json_object_get(r, "exit_code")));
  json_decref(r);
}

static void test_exec_failure(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"keel-no-such-binary\",\"x\"]}", 5000);
  assert_status(r, "failed");
  assert_non_null(strstr(keel_json_str(r, "error"), "exec keel-no-such-binary: No such file"));
  json_decref(r);
  r = run(f, "{\"argv\":[\"/nonexistent/bin\"]}", 5000);
  assert_status(r, "failed");
  assert_non_null(strstr(keel_json_str(r, "error"), "No such file or directory"));
  json_decref(r);
}

static void test_bad_cwd_and_user(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"true\"],\"cwd\":\"/no/such/dir\"}", 5000);
  assert_status(r, "failed");
  assert_non_null(strstr(keel_json_str(r, "error"), "chdir /no/such/dir"));
  json_decref(r);
  r = run(f, "{\"argv\":[\"true\"],\"user\":\"keel-no-such-user\"}", 5000);
  assert_status(r, "failed");
  assert_non_null(strstr(keel_json_str(r, "error"), "keel-no-such-user"));
  json_decref(r);
}

static void test_run_as_user(void **state) {
  struct fx *f = *state;
  json_t *r;
  if (geteuid() != 0) skip();
  r = run(f, "{\"shell\":\"id -u; echo $HOME $USER $LOGNAME\",\"user\":\"nobody\"}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "65534\n/nonexistent nobody nobody\n");
  json_decref(r);
}

static int gone(pid_t pid) {
  char p[64], buf[512];
  FILE *fp;
  snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
  if (!(fp = fopen(p, "r"))) return 1;
  if (!fgets(buf, sizeof buf, fp)) buf[0] = '\0';
  fclose(fp);
  char *rp = strrchr(buf, ')');
  return rp && rp[1] == ' ' && rp[2] == 'Z'; /* a zombie is dead */
}

/* The job printed a grandchild's pid: it must be dead within a second. */
static void assert_stdout_pid_gone(json_t *r) {
  size_t n;
  char *out = b64field(r, "stdout_b64", &n);
  pid_t gc = (pid_t)atoi(out);
  int dead = 0;
  free(out);
  assert_true(gc > 1);
  for (int i = 0; i < 100 && !dead; i++) {
    dead = gone(gc);
    if (!dead) usleep(10000);
  }
  assert_true(dead);
}

static void test_timeout(void **state) {
  struct fx *f = *state;
  int64_t t0 = keel_mono_ms();
  json_t *r = run(f, "{\"argv\":[\"sleep\",\"10\"],\"timeout_ms\":200}", 3000);
  assert_status(r, "timeout");
  assert_true(keel_mono_ms() - t0 < 1500);
  assert_true(json_is_null(json_object_get(r, "exit_code")));
  json_decref(r);
}

static void test_timeout_kills_group(void **state) {
  struct fx *f = *state;
  int64_t t0 = keel_mono_ms();
  /* The grandchild prints its pid so we can check that it died too. */
  json_t *r = run(f, "{\"shell\":\"sleep 10 & echo $!; sleep 10\",\"timeout_ms\":200}", 3000);

  assert_status(r, "timeout");
  assert_true(keel_mono_ms() - t0 < 1500);
  assert_stdout_pid_gone(r);
  json_decref(r);
}

/* Steps the runs until the job wrote file (its marker that it is set up:
 * a signal before that would test the shell's start, not the cancel). */
static void wait_marker(struct fx *f, const char *file) {
  for (int i = 0; i < 200 && access(file, F_OK); i++) ka_exec_wait(&f->x, 50);
  assert_int_equal(access(file, F_OK), 0);
}

/* keeld withdrew a running run: SIGTERM to the group ends it (grandchild
 * included) and the result says "cancelled" with how it ended. */
static void test_cancel_term(void **state) {
  struct fx *f = *state;
  char job[PATH_MAX + 128], mark[PATH_MAX];
  const char *id;
  json_t *arr = json_array(), *r;

  snprintf(mark, sizeof mark, "%s/up", f->dir);
  snprintf(job, sizeof job,
           "{\"shell\":\"sleep 30 & echo $!; touch %s; wait\",\"timeout_ms\":60000}", mark);
  id = submit(f, job);
  wait_marker(f, mark);
  ka_exec_running(&f->x, arr);
  assert_int_equal(json_array_size(arr), 1);
  assert_int_equal(ka_exec_cancel(&f->x, "run_unknown"), 0);
  assert_int_equal(ka_exec_cancel(&f->x, id), 1);
  assert_int_equal(ka_exec_cancel(&f->x, id), 0); /* once */
  json_array_clear(arr);
  ka_exec_running(&f->x, arr); /* left out while it stops: no poll loop */
  assert_int_equal(json_array_size(arr), 0);
  json_decref(arr);
  assert_int_equal(ka_exec_wait(&f->x, 3000), 0);
  r = result(f, id);
  assert_non_null(r);
  assert_status(r, "cancelled");
  assert_int_equal(json_integer_value(json_object_get(r, "signal")), SIGTERM);
  assert_non_null(strstr(keel_json_str(r, "error"), "SIGTERM"));
  assert_null(strstr(keel_json_str(r, "error"), "SIGKILL"));
  assert_stdout_pid_gone(r);
  json_decref(r);
}

/* A group that ignores SIGTERM gets SIGKILL after the grace. */
static void test_cancel_kill(void **state) {
  struct fx *f = *state;
  char job[PATH_MAX + 128], mark[PATH_MAX];
  const char *id;
  int64_t t0;
  json_t *r;

  snprintf(mark, sizeof mark, "%s/up", f->dir);
  snprintf(job, sizeof job,
           "{\"shell\":\"trap '' TERM; echo up; touch %s; sleep 30\",\"timeout_ms\":60000}",
           mark);
  id = submit(f, job);
  wait_marker(f, mark);
  t0 = keel_mono_ms();
  assert_int_equal(ka_exec_cancel(&f->x, id), 1);
  assert_int_equal(ka_exec_wait(&f->x, 10000), 0);
  assert_true(keel_mono_ms() - t0 >= 4900);
  r = result(f, id);
  assert_non_null(r);
  assert_status(r, "cancelled");
  assert_int_equal(json_integer_value(json_object_get(r, "signal")), SIGKILL);
  assert_non_null(strstr(keel_json_str(r, "error"), "SIGKILL"));
  assert_stdout(r, "up\n");
  json_decref(r);
}

static void test_background_holds_pipe(void **state) {
  struct fx *f = *state;
  int64_t t0 = keel_mono_ms();
  /* The leader exits at once; a background child keeps stdout open.  The
   * run ends at the timeout with the leader's own exit status. */
  json_t *r = run(f, "{\"shell\":\"sleep 10 & exit 4\",\"timeout_ms\":300}", 3000);
  assert_status(r, "exited");
  assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), 4);
  assert_true(keel_mono_ms() - t0 < 1500);
  json_decref(r);
}

static void test_output_cap(void **state) {
  struct fx *f = *state;
  json_t *r = run(f,
                  "{\"shell\":\"yes | head -c 3000000; yes | head -c 10 >&2\","
                  "\"output_cap\":1048576,\"timeout_ms\":10000}",
                  10000);
  size_t n;
  char *out;
  assert_status(r, "exited");
  out = b64field(r, "stdout_b64", &n);
  assert_int_equal(n, 1048576);
  assert_true(out[0] == 'y' && out[1] == '\n');
  free(out);
  assert_true(json_is_true(json_object_get(r, "stdout_truncated")));
  assert_true(json_is_false(json_object_get(r, "stderr_truncated")));
  json_decref(r);
}

static void test_env_sanitized(void **state) {
  struct fx *f = *state;
  json_t *r;
  size_t n;
  char *out;

  setenv("KEEL_AGENT_PARENT_SECRET", "leak", 1);
  r = run(f, "{\"argv\":[\"env\"],\"env\":{\"FOO\":\"bar baz\",\"LANG\":\"C\"}}", 5000);
  unsetenv("KEEL_AGENT_PARENT_SECRET");
  assert_status(r, "exited");
  out = b64field(r, "stdout_b64", &n);
  assert_null(strstr(out, "KEEL_AGENT_PARENT_SECRET"));
  assert_non_null(strstr(out, "FOO=bar baz\n"));
  assert_non_null(strstr(out, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"));
  assert_non_null(strstr(out, "LANG=C\n")); /* the job's value wins */
  assert_non_null(strstr(out, "HOME="));
  assert_non_null(strstr(out, "USER="));
  free(out);
  json_decref(r);
}

static void test_cwd(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"pwd\"],\"cwd\":\"/tmp\"}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "/tmp\n");
  json_decref(r);
  r = run(f, "{\"argv\":[\"pwd\"],\"cwd\":null}", 5000);
  assert_stdout(r, "/\n");
  json_decref(r);
}

static void test_hostile_argv(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"echo\",\"$(id)\",\";\",\"|\",\"`id`\",\"a b\"]}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "$(id) ; | `id` a b\n");
  json_decref(r);
}

static void test_stdin_is_devnull(void **state) {
  struct fx *f = *state;
  json_t *r = run(f, "{\"argv\":[\"cat\"],\"timeout_ms\":2000}", 3000);
  assert_status(r, "exited");
  assert_stdout(r, "");
  json_decref(r);
}

static void test_no_fd_leak(void **state) {
  struct fx *f = *state;
  /* Only 0-2 may be open in the command; ls itself holds 3 (the dir). */
  json_t *r = run(f, "{\"argv\":[\"ls\",\"/proc/self/fd\"]}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "0\n1\n2\n3\n");
  json_decref(r);
}

static void test_concurrent(void **state) {
  struct fx *f = *state;
  int64_t t0 = keel_mono_ms();
  const char *ids[3];
  char keep[3][64];
  for (int i = 0; i < 3; i++) {
    ids[i] = submit(f, "{\"shell\":\"sleep 0.3; echo done\"}");
    snprintf(keep[i], sizeof keep[i], "%s", ids[i]);
  }
  assert_int_equal(f->x.nruns, 3);
  assert_int_equal(ka_exec_wait(&f->x, 5000), 0);
  assert_true(keel_mono_ms() - t0 < 900); /* in parallel, not 3 x 0.3 s */
  for (int i = 0; i < 3; i++) {
    json_t *r = result(f, keep[i]);
    assert_non_null(r);
    assert_stdout(r, "done\n");
    json_decref(r);
  }
}

static void test_running_file_lifecycle(void **state) {
  struct fx *f = *state;
  char p[PATH_MAX], id[64];
  json_t *arr = json_array();

  snprintf(id, sizeof id, "%s", submit(f, "{\"argv\":[\"sleep\",\"0.2\"]}"));
  snprintf(p, sizeof p, "%s/running/%s.json", f->dir, id);
  assert_int_equal(access(p, F_OK), 0); /* durable before/while it runs */
  ka_exec_running(&f->x, arr);
  assert_int_equal(json_array_size(arr), 1);
  assert_string_equal(json_string_value(json_array_get(arr, 0)), id);
  json_decref(arr);
  assert_int_equal(ka_exec_wait(&f->x, 5000), 0);
  assert_int_equal(access(p, F_OK), -1); /* gone once spooled */
  assert_true(ka_spool_has(f->dir, id));
}

static void test_interrupted_recovery(void **state) {
  struct fx *f = *state;
  char rdir[PATH_MAX], p[PATH_MAX];
  const char *text = "{\"run_id\":\"run_crash\",\"command_id\":\"cmd_x\",\"started_at\":1234}";
  json_t *r;

  snprintf(rdir, sizeof rdir, "%s/running", f->dir);
  assert_int_equal(ka_write_atomic(rdir, "run_crash.json", text, strlen(text), 0600, NULL), 0);
  /* One that already has its result: only the running file goes. */
  assert_int_equal(ka_write_atomic(rdir, "run_done.json", text, strlen(text), 0600, NULL), 0);
  assert_int_equal(ka_spool_put(f->dir, "run_done", "{\"run_id\":\"run_done\",\"status\":\"exited\"}", NULL), 0);
  /* Garbage names are left alone. */
  assert_int_equal(ka_write_atomic(rdir, "..x.json", "x", 1, 0600, NULL), 0);

  assert_int_equal(ka_spool_recover(f->dir, NULL, NULL), 1);
  r = result(f, "run_crash");
  assert_non_null(r);
  assert_status(r, "interrupted");
  assert_int_equal(json_integer_value(json_object_get(r, "started_at")), 1234);
  assert_true(json_integer_value(json_object_get(r, "ended_at")) > 1234);
  json_decref(r);
  r = result(f, "run_done");
  assert_status(r, "exited");
  json_decref(r);
  snprintf(p, sizeof p, "%s/run_crash.json", rdir);
  assert_int_equal(access(p, F_OK), -1);
  snprintf(p, sizeof p, "%s/run_done.json", rdir);
  assert_int_equal(access(p, F_OK), -1);
  /* Recorded in seen: once its result is acknowledged (spool file gone), a
   * late redelivery still does not run it. */
  assert_int_equal(ka_spool_drop(f->dir, "run_crash"), 0);
  ka_exec_free(&f->x);
  assert_int_equal(ka_exec_init(&f->x, f->dir, &f->id, NULL, NULL), 0);
  submit_with(f, "{\"argv\":[\"true\"]}", f->srv_sk, "agt_test", "run_crash");
  assert_int_equal(f->x.nruns, 0);
  assert_false(ka_spool_has(f->dir, "run_crash"));
}

static int count_lines(const char *path) {
  FILE *fp = fopen(path, "r");
  int n = 0, c;
  if (!fp) return 0;
  while ((c = fgetc(fp)) != EOF) n += c == '\n';
  fclose(fp);
  return n;
}

static void test_dedup(void **state) {
  struct fx *f = *state;
  char job[512], counter[PATH_MAX], id[64];
  keel_err_t e;

  snprintf(counter, sizeof counter, "%s/../count", f->dir);
  snprintf(job, sizeof job, "{\"shell\":\"echo x >> %s\"}", counter);
  snprintf(id, sizeof id, "%s", submit_with(f, job, f->srv_sk, "agt_test", "run_dup"));
  assert_int_equal(ka_exec_wait(&f->x, 5000), 0);
  assert_int_equal(count_lines(counter), 1);
  /* Delivered again, result still spooled or already acknowledged: not run. */
  submit_with(f, job, f->srv_sk, "agt_test", "run_dup");
  assert_int_equal(f->x.nruns, 0);
  assert_int_equal(ka_spool_drop(f->dir, id), 0);
  submit_with(f, job, f->srv_sk, "agt_test", "run_dup");
  assert_int_equal(f->x.nruns, 0);
  assert_false(ka_spool_has(f->dir, id));
  /* ...also after a restart (DIR/seen is durable). */
  ka_exec_free(&f->x);
  assert_int_equal(ka_exec_init(&f->x, f->dir, &f->id, NULL, &e), 0);
  submit_with(f, job, f->srv_sk, "agt_test", "run_dup");
  assert_int_equal(f->x.nruns, 0);
  assert_int_equal(ka_exec_wait(&f->x, 1000), 0);
  assert_int_equal(count_lines(counter), 1);
}

static void test_seen_window(void **state) {
  struct fx *f = *state;
  char p[PATH_MAX], id[64];
  keel_err_t e;
  FILE *fp;

  /* A seen file far over the window is cut to the last 4096 on load. */
  snprintf(p, sizeof p, "%s/seen", f->dir);
  ka_exec_free(&f->x);
  fp = fopen(p, "w");
  for (int i = 0; i < 5000; i++) fprintf(fp, "run_s%d\n", i);
  fclose(fp);
  assert_int_equal(ka_exec_init(&f->x, f->dir, &f->id, NULL, &e), 0);
  assert_int_equal(count_lines(p), KA_SEEN_KEEP);
  /* The newest is remembered, the oldest forgotten. */
  submit_with(f, "{\"argv\":[\"true\"]}", f->srv_sk, "agt_test", "run_s4999");
  assert_int_equal(f->x.nruns, 0);
  snprintf(id, sizeof id, "%s", submit_with(f, "{\"argv\":[\"true\"]}", f->srv_sk, "agt_test", "run_s0"));
  assert_int_equal(f->x.nruns, 1);
  assert_int_equal(ka_exec_wait(&f->x, 5000), 0);
  assert_true(ka_spool_has(f->dir, id));
}

static void test_forged_refused(void **state) {
  struct fx *f = *state;
  uint8_t pk[KEEL_AGENT_PK_BYTES], sk[KEEL_AGENT_SK_BYTES];
  char marker[PATH_MAX], job[512];
  json_t *r;

  snprintf(marker, sizeof marker, "%s/../forged", f->dir);
  snprintf(job, sizeof job, "{\"shell\":\"touch %s\"}", marker);
  crypto_sign_keypair(pk, sk);
  submit_with(f, job, sk, "agt_test", "run_forged");
  assert_int_equal(f->x.nruns, 0);
  assert_int_equal(ka_exec_wait(&f->x, 500), 0);
  assert_int_equal(access(marker, F_OK), -1);
  r = result(f, "run_forged");
  assert_non_null(r);
  assert_status(r, "refused");
  assert_non_null(strstr(keel_json_str(r, "error"), "signature"));
  json_decref(r);

  /* Right key, another agent's job. */
  submit_with(f, job, f->srv_sk, "agt_other", "run_other");
  assert_int_equal(f->x.nruns, 0);
  assert_int_equal(access(marker, F_OK), -1);
  r = result(f, "run_other");
  assert_non_null(r);
  assert_status(r, "refused");
  json_decref(r);

  /* The job text altered after signing. */
  {
    const char *good = "{\"run_id\":\"run_alt\",\"agent_id\":\"agt_test\",\"argv\":[\"true\"]}";
    char sig[KEEL_AGENT_SIG_HEX];
    char bad[256];
    keel_agent_sign_job(sig, f->srv_sk, good, strlen(good));
    snprintf(bad, sizeof bad, "{\"run_id\":\"run_alt\",\"agent_id\":\"agt_test\",\"shell\":\"touch %s\"}", marker);
    assert_int_equal(ka_exec_submit(&f->x, bad, strlen(bad), sig), 1);
    assert_int_equal(f->x.nruns, 0);
    assert_int_equal(access(marker, F_OK), -1);
    assert_int_equal(ka_exec_submit(&f->x, bad, strlen(bad), "zz"), 0); /* already refused once */
  }
  /* Forged and malformed: still refused, not failed. */
  {
    const char *junk = "{\"run_id\":\"run_junk\",\"argv\":42}";
    assert_int_equal(ka_exec_submit(&f->x, junk, strlen(junk), NULL), 1);
    r = result(f, "run_junk");
    assert_status(r, "refused");
    json_decref(r);
    /* No usable run id: nothing to report, nothing written. */
    assert_int_equal(ka_exec_submit(&f->x, "{\"run_id\":\"../x\"}", 16, NULL), 0);
    assert_int_equal(ka_exec_submit(&f->x, "nonsense", 8, NULL), 0);
  }
  /* A refused id is not marked seen: the genuine job still runs. */
  r = run(f, "{\"argv\":[\"true\"]}", 5000);
  json_decref(r);
  submit_with(f, "{\"argv\":[\"echo\",\"genuine\"]}", f->srv_sk, "agt_test", "run_fresh");
  assert_int_equal(ka_exec_wait(&f->x, 5000), 0);
  r = result(f, "run_fresh");
  assert_stdout(r, "genuine\n");
  json_decref(r);
}

static void test_signed_but_malformed(void **state) {
  struct fx *f = *state;
  json_t *r;
  submit_with(f, "{\"argv\":[],\"shell\":null}", f->srv_sk, "agt_test", "run_noargv");
  r = result(f, "run_noargv");
  assert_non_null(r);
  assert_status(r, "failed");
  assert_non_null(strstr(keel_json_str(r, "error"), "argv"));
  json_decref(r);
  submit_with(f, "{\"argv\":[\"true\"],\"env\":{\"A=B\":\"x\"}}", f->srv_sk, "agt_test", "run_badenv");
  r = result(f, "run_badenv");
  assert_status(r, "failed");
  json_decref(r);
  submit_with(f, "{\"argv\":[\"true\"],\"timeout_ms\":0}", f->srv_sk, "agt_test", "run_badto");
  r = result(f, "run_badto");
  assert_status(r, "failed");
  json_decref(r);
  assert_int_equal(f->x.nruns, 0);
}

/* ---- script jobs, and the one-kind rule ---------------------------------- */

/* Signs and submits o (run_id and the rest added; o is consumed); the run
 * id used is copied to id. */
static void submit_obj(struct fx *f, json_t *o, char id[64]) {
  char sig[KEEL_AGENT_SIG_HEX], *text;
  snprintf(id, 64, "run_o%d", ++f->n);
  json_object_set_new(o, "run_id", json_string(id));
  json_object_set_new(o, "command_id", json_string("cmd_t"));
  json_object_set_new(o, "agent_id", json_string("agt_test"));
  json_object_set_new(o, "issued_at", json_integer(keel_now_ms()));
  text = json_dumps(o, JSON_COMPACT);
  assert_non_null(text);
  keel_agent_sign_job(sig, f->srv_sk, text, strlen(text));
  ka_exec_submit(&f->x, text, strlen(text), sig);
  free(text);
  json_decref(o);
}

/* A script job of interpreter and body[0..len), plus the members of
 * extra (a JSON object literal or NULL); waits for its result. */
static json_t *run_script(struct fx *f, const char *interp, const char *body, size_t len,
                          const char *extra, long max_ms) {
  json_t *o = extra ? json_loads(extra, 0, NULL) : json_object();
  char id[64];
  json_t *r;
  assert_non_null(o);
  json_object_set_new(o, "script",
                      json_pack("{s:s,s:s%}", "interpreter", interp, "body", body, len));
  submit_obj(f, o, id);
  assert_int_equal(ka_exec_wait(&f->x, max_ms), 0);
  r = result(f, id);
  assert_non_null(r);
  return r;
}

static int scripts_left(struct fx *f) {
  char p[PATH_MAX];
  struct dirent *de;
  DIR *d;
  int n = 0;
  snprintf(p, sizeof p, "%s/scripts", f->dir);
  d = opendir(p);
  assert_non_null(d);
  while ((de = readdir(d)))
    n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
  closedir(d);
  return n;
}

static void assert_error_has(json_t *r, const char *want) {
  const char *err = keel_json_str(r, "error");
  if (!err || !strstr(err, want)) fail_msg("error '%s' lacks '%s'", err ? err : "(none)", want);
}

static void test_script_runs(void **state) {
  struct fx *f = *state;
  const char *body = "echo \"$0\"; stat -c %a \"$0\"; echo \"$FOO\"; pwd; echo oops >&2; exit 3\n";
  char want[PATH_MAX + 64], *err;
  size_t n;
  json_t *r = run_script(f, "/bin/sh", body, strlen(body),
                         "{\"env\":{\"FOO\":\"bar\"},\"cwd\":\"/tmp\"}", 5000);
  assert_status(r, "exited");
  assert_int_equal(json_integer_value(json_object_get(r, "exit_code")), 3);
  snprintf(want, sizeof want, "%s/scripts/run_o%d\n700\nbar\n/tmp\n", f->dir, f->n);
  assert_stdout(r, want);
  err = b64field(r, "stderr_b64", &n);
  assert_string_equal(err, "oops\n");
  free(err);
  json_decref(r);
  assert_int_equal(scripts_left(f), 0); /* removed once the run ended */
}

static void test_script_body_verbatim(void **state) {
  struct fx *f = *state;
  /* cat as the interpreter prints the file: the body arrives byte for
   * byte, and no shell looked at it. */
  const char *body = "#!/bin/false\n$(id) `id` ; | & 'q' \"dq\" \\ \n\tno trailing newline";
  json_t *r = run_script(f, "/bin/cat", body, strlen(body), NULL, 5000);
  assert_status(r, "exited");
  assert_stdout(r, body);
  json_decref(r);
  assert_int_equal(scripts_left(f), 0);
}

static void test_script_refused(void **state) {
  struct fx *f = *state;
  static char big[(1 << 20) + 2];
  json_t *r;

  r = run_script(f, "/bin/sh", "echo a\0touch /tmp/x", 19, NULL, 1000);
  assert_status(r, "refused");
  assert_error_has(r, "NUL");
  json_decref(r);
  r = run_script(f, "sh", "echo a", 6, NULL, 1000);
  assert_status(r, "refused");
  assert_error_has(r, "script.interpreter must be an absolute path");
  json_decref(r);
  memset(big, '#', sizeof big - 1);
  r = run_script(f, "/bin/sh", big, sizeof big - 1, NULL, 1000);
  assert_status(r, "refused");
  assert_error_has(r, "over the 1048576-byte limit");
  json_decref(r);
  {
    char id[64];
    submit_obj(f, json_pack("{s:{s:s}}", "script", "interpreter", "/bin/sh"), id);
    r = result(f, id);
    assert_status(r, "refused");
    assert_error_has(r, "script.body must be a string");
    json_decref(r);
    submit_obj(f, json_pack("{s:s}", "script", "echo hi"), id);
    r = result(f, id);
    assert_status(r, "refused");
    assert_error_has(r, "'script' must be an object");
    json_decref(r);
  }
  assert_int_equal(f->x.nruns, 0);
  assert_int_equal(scripts_left(f), 0);
  /* Exactly 1 MiB is fine. */
  big[(1 << 20) - 1] = '\n';
  r = run_script(f, "/bin/sh", big, 1 << 20, NULL, 5000);
  assert_status(r, "exited");
  json_decref(r);
}

static void test_script_failures(void **state) {
  struct fx *f = *state;
  int64_t t0;
  json_t *r = run_script(f, "/nonexistent/interp", "x", 1, NULL, 5000);
  assert_status(r, "failed");
  assert_error_has(r, "exec /nonexistent/interp: No such file");
  json_decref(r);
  assert_int_equal(scripts_left(f), 0);
  r = run_script(f, "/bin/sh", "true", 4, "{\"cwd\":\"/no/such/dir\"}", 5000);
  assert_status(r, "failed");
  json_decref(r);
  assert_int_equal(scripts_left(f), 0);
  t0 = keel_mono_ms();
  r = run_script(f, "/bin/sh", "sleep 10 & sleep 10", 19, "{\"timeout_ms\":200}", 3000);
  assert_status(r, "timeout");
  assert_true(keel_mono_ms() - t0 < 1500);
  json_decref(r);
  assert_int_equal(scripts_left(f), 0);
}

static void test_script_leftovers_removed(void **state) {
  struct fx *f = *state;
  char p[PATH_MAX];
  FILE *fp;
  /* What a crashed agent left behind goes at the next start. */
  ka_exec_free(&f->x);
  snprintf(p, sizeof p, "%s/scripts/run_crashed", f->dir);
  fp = fopen(p, "w");
  assert_non_null(fp);
  fputs("echo left\n", fp);
  fclose(fp);
  assert_int_equal(scripts_left(f), 1);
  assert_int_equal(ka_exec_init(&f->x, f->dir, &f->id, NULL, NULL), 0);
  assert_int_equal(scripts_left(f), 0);
}

static void test_script_as_user(void **state) {
  struct fx *f = *state;
  const char *body = "id -u; echo \"$0\"; ls -ln \"$0\" | cut -d' ' -f3\n";
  struct stat st;
  json_t *r;
  if (geteuid() != 0) skip();
  /* DIR stays 0700: the script reaches nobody as an open descriptor, the
   * file owned by nobody so that reopening it is allowed. */
  r = run_script(f, "/bin/sh", body, strlen(body), "{\"user\":\"nobody\"}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "65534\n/dev/fd/4\n65534\n");
  json_decref(r);
  assert_int_equal(stat(f->dir, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(scripts_left(f), 0);
}

static void test_one_kind(void **state) {
  struct fx *f = *state;
  static const struct {
    const char *job, *err;
  } bad[] = {
      {"{\"argv\":[\"true\"],\"shell\":\"true\"}", "this one has argv and shell"},
      {"{\"argv\":[],\"shell\":\"true\"}", "this one has argv and shell"},
      {"{\"shell\":\"true\",\"script\":{\"interpreter\":\"/bin/sh\",\"body\":\"true\"}}",
       "this one has shell and script"},
      {"{\"argv\":[\"true\"],\"http\":{\"url\":\"http://127.0.0.1:1/\"}}", "argv and http"},
      {"{\"argv\":[\"true\"],\"shell\":\"x\",\"script\":{},\"http\":{}}",
       "argv and shell and script and http"},
      {"{\"timeout_ms\":1000}", "none is given"},
      {"{\"argv\":null,\"shell\":null,\"script\":null,\"http\":null}", "none is given"},
      {"{\"http\":{\"url\":\"http://u:p@127.0.0.1/\"}}", "job: http.url: user info"},
      {"{\"http\":{\"url\":\"ftp://127.0.0.1/\"}}", "http.url 'ftp://127.0.0.1/': expected http"},
      {"{\"http\":{\"url\":\"http://h/\",\"method\":\"OPTIONS\"}}", "http.method 'OPTIONS'"},
      {"{\"http\":{\"url\":\"http://h/\",\"expect_status\":99}}", "http.expect_status"},
      {"{\"http\":\"http://h/\"}", "http: expected an object"},
  };
  json_t *r;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *id = submit(f, bad[i].job);
    r = result(f, id);
    if (!r) fail_msg("%s: no result", bad[i].job);
    assert_status(r, "refused");
    assert_error_has(r, bad[i].err);
    json_decref(r);
  }
  assert_int_equal(f->x.nruns, 0);
  /* Null is absent: one kind plus nulls is fine. */
  r = run(f, "{\"argv\":[\"echo\",\"one\"],\"shell\":null,\"script\":null,\"http\":null}", 5000);
  assert_status(r, "exited");
  assert_stdout(r, "one\n");
  json_decref(r);
}

static void test_nul_in_job_reported(void **state) {
  struct fx *f = *state;
  char id[64];
  json_t *r;
  /* Once parsed whole, NULs elsewhere are reported too (they used to make
   * the job unparseable, and it was dropped without a result). */
  submit_obj(f, json_pack("{s:[s,s%]}", "argv", "echo", "a\0b", (size_t)3), id);
  r = result(f, id);
  assert_non_null(r);
  assert_status(r, "failed");
  assert_error_has(r, "argv[1] must be a string without NUL");
  json_decref(r);
  assert_int_equal(f->x.nruns, 0);
}

static void test_result_spool_order(void **state) {
  struct fx *f = *state;
  char id[KA_RUN_ID_MAX + 1], *body;
  size_t len;

  assert_int_equal(ka_spool_oldest(f->dir, id, &body, &len, NULL), KEEL_ENOENT);
  assert_int_equal(ka_spool_put(f->dir, "run_b", "{\"n\":1}", NULL), 0);
  usleep(20000);
  assert_int_equal(ka_spool_put(f->dir, "run_a", "{\"n\":2}", NULL), 0);
  assert_int_equal(ka_spool_oldest(f->dir, id, &body, &len, NULL), 0);
  assert_string_equal(id, "run_b");
  assert_string_equal(body, "{\"n\":1}");
  free(body);
  assert_int_equal(ka_spool_drop(f->dir, "run_b"), 0);
  assert_int_equal(ka_spool_oldest(f->dir, id, &body, &len, NULL), 0);
  assert_string_equal(id, "run_a");
  free(body);
}

static void test_identity_roundtrip(void **state) {
  struct fx *f = *state;
  ka_identity_t back;
  char p[PATH_MAX];
  struct stat st;
  keel_err_t e;

  assert_int_equal(ka_identity_load(f->dir, &back, &e), KEEL_ENOENT);
  strcpy(f->id.server_url, "http://127.0.0.1:7700");
  assert_int_equal(ka_identity_save(f->dir, &f->id, &e), 0);
  snprintf(p, sizeof p, "%s/identity.json", f->dir);
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(f->dir, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  assert_int_equal(ka_identity_load(f->dir, &back, &e), 0);
  assert_string_equal(back.agent_id, "agt_test");
  assert_string_equal(back.server_url, "http://127.0.0.1:7700");
  assert_memory_equal(back.sk, f->id.sk, sizeof back.sk);
  assert_memory_equal(back.server_pk, f->id.server_pk, sizeof back.server_pk);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
      cmocka_unit_test_setup_teardown(test_path_search, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shell_exit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signaled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_cwd_and_user, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_as_user, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout_kills_group, setup, teardown),
      cmocka_unit_test_setup_teardown(test_background_holds_pipe, setup, teardown),
      cmocka_unit_test_setup_teardown(test_output_cap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_env_sanitized, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cwd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hostile_argv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_is_devnull, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_fd_leak, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_running_file_lifecycle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_interrupted_recovery, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
      cmocka_unit_test_setup_teardown(test_seen_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forged_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signed_but_malformed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_script_runs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_script_body_verbatim, setup, teardown),
      cmocka_unit_test_setup_teardown(test_script_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_script_failures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_script_leftovers_removed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_script_as_user, setup, teardown),
      cmocka_unit_test_setup_teardown(test_one_kind, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nul_in_job_reported, setup, teardown),
      cmocka_unit_test_setup_teardown(test_result_spool_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_term, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_kill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_identity_roundtrip, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
