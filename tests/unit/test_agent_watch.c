/* Unit tests for src/agent/watch*.c: the events keel-agent reports by itself,
 * against real processes (a copy of /bin/sleep under a unique name, a child
 * renamed with prctl, argv[0] set by exec), real files in a temporary
 * directory (written, replaced by rename, chmod'ed, deleted, their directory
 * removed) and real /bin/sh plugins (exit codes 0..3, a hanging one killed at
 * the timeout), plus the event queue's batches and bounded spool. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "watch.h"

typedef struct fx {
  char tmp[PATH_MAX];   /* the test's directory */
  char dir[PATH_MAX];   /* the state directory in it */
  ka_evq_t q;
  ka_watch_t w;
  int w_up;
  keel_buf_t body;
} fx_t;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}
static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  keel_err_t e;

  if (!f || keel_crypto_init()) return -1;
  snprintf(f->tmp, sizeof f->tmp, "/tmp/keel-watch-test-XXXXXX");
  if (!mkdtemp(f->tmp)) return -1;
  snprintf(f->dir, sizeof f->dir, "%s/state", f->tmp);
  if (ka_state_prepare(f->dir, &e)) return -1;
  if (ka_evq_open(&f->q, f->dir, 64 << 20, 65536, NULL, &e)) return -1;
  keel_buf_init(&f->body, KA_EV_BATCH_BYTES);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  if (f->w_up) ka_watch_free(&f->w);
  ka_evq_close(&f->q);
  keel_buf_free(&f->body);
  nftw(f->tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static void watch_up(fx_t *f, const ka_watch_opts_t *o) {
  keel_err_t e;
  if (f->w_up) ka_watch_free(&f->w);
  f->w_up = 0;
  assert_int_equal(ka_watch_init(&f->w, o, f->dir, &f->q, NULL, &e), 0);
  f->w_up = 1;
}

/* Saves what was reported (the queue counts as delivered) and starts the
 * watches again from DIR/watch.json: an agent restart. */
static void restart(fx_t *f, const ka_watch_opts_t *o) {
  ka_watch_save(&f->w);
  watch_up(f, o);
}

/* The events queued since the last call (a new array). */
static json_t *take(fx_t *f) {
  json_t *o = NULL, *arr;
  keel_err_t e;

  if (!ka_evq_take(&f->q, &f->body)) return json_array();
  assert_int_equal(keel_json_parse(f->body.data, f->body.len, &o, &e), 0);
  arr = json_incref(json_object_get(o, "events"));
  assert_non_null(arr);
  json_decref(o);
  return arr;
}

static const char *ev_str(json_t *ev, const char *key) {
  const char *s = keel_json_str(ev, key);
  return s ? s : "";
}
static const char *data_str(json_t *ev, const char *key) {
  const char *s = keel_json_str(json_object_get(ev, "data"), key);
  return s ? s : "";
}
static const char *label(json_t *ev, const char *key) {
  const char *s = keel_json_str(json_object_get(json_object_get(ev, "data"), "labels"), key);
  return s ? s : "";
}

/* Exactly one event of type about subject: it (borrowed from arr). */
static json_t *only(json_t *arr, const char *type, const char *subject) {
  json_t *ev = json_array_get(arr, 0);
  if (json_array_size(arr) != 1) {
    char *t = json_dumps(arr, JSON_COMPACT);
    fprintf(stderr, "want one %s %s, got %s\n", type, subject, t);
    free(t);
  }
  assert_int_equal(json_array_size(arr), 1);
  assert_string_equal(ev_str(ev, "type"), type);
  assert_string_equal(ev_str(ev, "subject"), subject);
  return ev;
}

static void assert_none(fx_t *f) {
  json_t *arr = take(f);
  if (json_array_size(arr)) {
    char *t = json_dumps(arr, JSON_COMPACT);
    fprintf(stderr, "want no event, got %s\n", t);
    free(t);
  }
  assert_int_equal(json_array_size(arr), 0);
  json_decref(arr);
}

static void write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  assert_int_equal(close(fd), 0);
}

/* ---- processes ------------------------------------------------------------------ */

/* A copy of /bin/sleep named kw<pid><tag> (unique, under the kernel's 15
 * bytes), so no other process on the machine has its name. */
static void sleep_copy(fx_t *f, const char *tag, char name[32], char path[PATH_MAX]) {
  char cmd[PATH_MAX * 2];
  snprintf(name, 32, "kw%d%s", (int)getpid() % 100000, tag);
  snprintf(path, PATH_MAX, "%s/%s", f->tmp, name);
  snprintf(cmd, sizeof cmd, "cp /bin/sleep '%s'", path);
  assert_int_equal(system(cmd), 0);
}

static pid_t spawn_argv(const char *path, const char *argv0) {
  pid_t p = fork();
  assert_true(p >= 0);
  if (p == 0) {
    execl(path, argv0, "60", (char *)NULL);
    _exit(127);
  }
  return p;
}

static void kill_reap(pid_t p) {
  kill(p, SIGKILL);
  while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* /proc shows the new process once exec is done: wait for its comm. */
static void wait_comm(pid_t p, const char *want) {
  char path[64], buf[64] = "";
  for (int i = 0; i < 200; i++) {
    FILE *fp;
    snprintf(path, sizeof path, "/proc/%d/comm", (int)p);
    if ((fp = fopen(path, "r"))) {
      if (fgets(buf, sizeof buf, fp)) buf[strcspn(buf, "\n")] = '\0';
      fclose(fp);
      if (!strcmp(buf, want)) return;
    }
    usleep(5000);
  }
  fail_msg("process %d never showed comm %s (last %s)", (int)p, want, buf);
}

/* A sleep copy named after tag, running, watched by o (name and path
 * filled): its first ticks report nothing (running when first seen). */
static pid_t watched_running(fx_t *f, const char *tag, ka_watch_opts_t *o, char name[32],
                             char path[PATH_MAX]) {
  pid_t p;

  sleep_copy(f, tag, name, path);
  p = spawn_argv(path, path);
  wait_comm(p, name);
  o->procs[o->nprocs++] = name;
  watch_up(f, o);
  ka_watch_tick(&f->w);
  assert_none(f);
  ka_watch_tick(&f->w);
  assert_none(f);
  return p;
}

static void test_process_up_down(void **state) {
  fx_t *f = *state;
  char name[32], path[PATH_MAX];
  ka_watch_opts_t o = {0};
  json_t *arr, *ev;
  pid_t p = watched_running(f, "a", &o, name, path);

  kill_reap(p);
  ka_watch_tick(&f->w);
  arr = take(f);
  ev = only(arr, "service.down", name);
  assert_string_equal(data_str(ev, "service"), name);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "pid_count")), 0);
  assert_string_equal(label(ev, "service"), name);
  {
    int64_t t;
    assert_int_equal(keel_time_parse(ev_str(ev, "time"), &t), 0);
    assert_true(llabs(t - keel_now_ms()) < 5000);
  }
  json_decref(arr);
  ka_watch_tick(&f->w);
  assert_none(f);

  /* Two of them: one service.up, counting both. */
  p = spawn_argv(path, path);
  {
    pid_t p2 = spawn_argv(path, path);
    wait_comm(p, name);
    wait_comm(p2, name);
    ka_watch_tick(&f->w);
    arr = take(f);
    ev = only(arr, "service.up", name);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "pid_count")), 2);
    json_decref(arr);
    kill_reap(p2);
  }
  ka_watch_tick(&f->w);
  assert_none(f);

  /* An agent restart with the state unchanged: nothing again. */
  restart(f, &o);
  ka_watch_tick(&f->w);
  assert_none(f);

  /* Changed while the agent was down: reported after the restart. */
  ka_watch_save(&f->w);
  kill_reap(p);
  watch_up(f, &o);
  ka_watch_tick(&f->w);
  arr = take(f);
  only(arr, "service.down", name);
  json_decref(arr);
}

static void test_process_down_at_start(void **state) {
  fx_t *f = *state;
  ka_watch_opts_t o = {0};
  char name[32];
  json_t *arr;

  snprintf(name, sizeof name, "kw%dnone", (int)getpid() % 100000);
  o.procs[o.nprocs++] = name;
  watch_up(f, &o);
  ka_watch_tick(&f->w);
  arr = take(f);
  only(arr, "service.down", name);
  json_decref(arr);
  ka_watch_tick(&f->w);
  assert_none(f);
  restart(f, &o);
  ka_watch_tick(&f->w);
  assert_none(f);
}

/* A zombie (exited, not reaped by its parent) is not running. */
static void test_process_zombie_is_down(void **state) {
  fx_t *f = *state;
  char name[32], path[PATH_MAX];
  ka_watch_opts_t o = {0};
  json_t *arr;
  pid_t p = watched_running(f, "z", &o, name, path);

  kill(p, SIGKILL);
  {
    /* Dead but not reaped: wait until /proc says Z. */
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)p, &si, WEXITED | WNOWAIT), 0);
  }
  ka_watch_tick(&f->w);
  arr = take(f);
  only(arr, "service.down", name);
  json_decref(arr);
  kill_reap(p);
}

/* A collector's --process walk that serves the watch too (main.c): the
 * tick walks nothing of its own, and counts what it counted alone. */
static void test_process_shared_walk(void **state) {
  fx_t *f = *state;
  char name[32], path[PATH_MAX];
  const char *names[1] = {name};
  ka_watch_opts_t o = {0};
  ka_collect_t col;
  keel_mb_enc_t enc;
  keel_err_t e;
  json_t *arr, *ev;
  pid_t p = watched_running(f, "w", &o, name, path);

  restart(f, &o); /* a watch that has not walked yet */
  assert_int_equal(ka_collect_init(&col, NULL, names, 1, NULL, &e), 0);
  col.also = ka_watch_procs(&f->w);
  keel_mb_enc_init(&enc, 1 << 20);
  ka_collect(&col, &enc, keel_now_ms(), NULL);
  ka_watch_tick(&f->w);
  assert_none(f);
  kill_reap(p);
  keel_mb_enc_reset(&enc);
  ka_collect(&col, &enc, keel_now_ms(), NULL);
  ka_watch_tick(&f->w);
  arr = take(f);
  ev = only(arr, "service.down", name);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "pid_count")), 0);
  json_decref(arr);
  p = spawn_argv(path, path);
  wait_comm(p, name);
  keel_mb_enc_reset(&enc);
  ka_collect(&col, &enc, keel_now_ms(), NULL);
  ka_watch_tick(&f->w);
  arr = take(f);
  ev = only(arr, "service.up", name);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "pid_count")), 1);
  json_decref(arr);
  assert_null(f->w.procdir); /* never walked on its own */
  /* No walk served it since: the tick walks itself. */
  ka_watch_tick(&f->w);
  assert_none(f);
  assert_non_null(f->w.procdir);
  kill_reap(p);
  keel_mb_enc_free(&enc);
  ka_collect_free(&col);
}

/* Found by comm (prctl renames the process, argv[0] stays) and by the
 * basename of argv[0] (exec with a made-up argv[0], comm stays "sleep"). */
static void test_process_comm_or_argv0(void **state) {
  fx_t *f = *state;
  char byname[32], byargv[32], argv0[PATH_MAX];
  ka_watch_opts_t o = {0};
  int ready[2];
  json_t *arr;
  pid_t p1, p2;
  char c;

  snprintf(byname, sizeof byname, "kw%dren", (int)getpid() % 100000);
  snprintf(byargv, sizeof byargv, "kw%dargv0", (int)getpid() % 100000);
  o.procs[o.nprocs++] = byname;
  o.procs[o.nprocs++] = byargv;
  watch_up(f, &o);
  ka_watch_tick(&f->w);
  arr = take(f);
  assert_int_equal(json_array_size(arr), 2);
  json_decref(arr);

  assert_int_equal(pipe(ready), 0);
  p1 = fork();
  assert_true(p1 >= 0);
  if (p1 == 0) {
    prctl(PR_SET_NAME, byname, 0, 0, 0);
    if (write(ready[1], "x", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  assert_int_equal(read(ready[0], &c, 1), 1);
  close(ready[0]);
  close(ready[1]);
  snprintf(argv0, sizeof argv0, "/no/such/dir/%s", byargv);
  p2 = spawn_argv("/bin/sleep", argv0);
  wait_comm(p2, "sleep");

  ka_watch_tick(&f->w);
  arr = take(f);
  assert_int_equal(json_array_size(arr), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *ev = json_array_get(arr, i);
    assert_string_equal(ev_str(ev, "type"), "service.up");
    assert_string_equal(ev_str(ev, "subject"), i == 0 ? byname : byargv);
  }
  json_decref(arr);
  kill_reap(p1);
  kill_reap(p2);
  ka_watch_tick(&f->w);
  arr = take(f);
  assert_int_equal(json_array_size(arr), 2);
  assert_string_equal(ev_str(json_array_get(arr, 0), "type"), "service.down");
  json_decref(arr);
}

/* ---- files ---------------------------------------------------------------------- */

/* Waits (up to 2 s) for inotify to say something, then reads it. */
static void settle_inotify(fx_t *f) {
  struct pollfd fds[8];
  size_t n = ka_watch_fds(&f->w, fds, 8);
  assert_true(n >= 1);
  poll(fds, n, 2000);
  ka_watch_step(&f->w);
}

static void assert_change(fx_t *f, const char *path, const char *change, const char *content) {
  json_t *arr = take(f), *ev = only(arr, "file.changed", path), *d = json_object_get(ev, "data");
  assert_string_equal(data_str(ev, "path"), path);
  assert_string_equal(data_str(ev, "change"), change);
  assert_string_equal(label(ev, "path"), path);
  if (content) {
    char hex[KEEL_HASH_HEX];
    keel_hash_hex(hex, content, strlen(content));
    assert_string_equal(data_str(ev, "blake2b"), hex);
    assert_int_equal(json_integer_value(json_object_get(d, "size")), strlen(content));
  } else {
    assert_null(json_object_get(d, "blake2b"));
    assert_null(json_object_get(d, "size"));
  }
  json_decref(arr);
}

static void test_file_changes(void **state) {
  fx_t *f = *state;
  char fdir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
  ka_watch_opts_t o = {0};

  snprintf(fdir, sizeof fdir, "%s/etc", f->tmp);
  snprintf(path, sizeof path, "%s/app.conf", fdir);
  snprintf(tmp, sizeof tmp, "%s/.app.conf.new", fdir);
  assert_int_equal(mkdir(fdir, 0700), 0);
  write_file(path, "one\n", 0644);
  o.files[o.nfiles++] = path;
  watch_up(f, &o);
  ka_watch_tick(&f->w); /* first sight: the state, not a change */
  assert_none(f);

  /* Modified in place, several writes in one tick: one event. */
  write_file(path, "two", 0644);
  write_file(path, "two\n", 0644);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "modified", "two\n");
  ka_watch_tick(&f->w);
  assert_none(f);

  /* Something else in the directory: not this file. */
  write_file(tmp, "noise", 0644);
  unlink(tmp);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_none(f);

  /* Replaced by rename (a new inode): followed. */
  write_file(tmp, "three\n", 0644);
  assert_int_equal(rename(tmp, path), 0);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "modified", "three\n");

  /* Same content, other metadata. */
  assert_int_equal(chmod(path, 0600), 0);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "attrib", "three\n");

  /* And still followed after the rename: written in place again. */
  write_file(path, "four\n", 0600);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "modified", "four\n");

  assert_int_equal(unlink(path), 0);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "deleted", NULL);

  write_file(path, "five\n", 0600);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "created", "five\n");

  /* The directory goes away and comes back: watched again by path. */
  unlink(path);
  assert_int_equal(rmdir(fdir), 0);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "deleted", NULL);
  assert_int_equal(mkdir(fdir, 0700), 0);
  write_file(path, "six\n", 0600);
  ka_watch_tick(&f->w); /* re-adds the watch, and looks */
  assert_change(f, path, "created", "six\n");
  write_file(path, "seven\n", 0600);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  assert_change(f, path, "modified", "seven\n");

  /* A restart with the file unchanged: nothing; changed while down: once. */
  restart(f, &o);
  ka_watch_tick(&f->w);
  assert_none(f);
  ka_watch_save(&f->w);
  write_file(path, "eight\n", 0600);
  watch_up(f, &o);
  ka_watch_tick(&f->w);
  assert_change(f, path, "modified", "eight\n");
}

/* A file whose directory does not exist yet, and one over 16 MiB (no hash). */
static void test_file_late_dir_and_big(void **state) {
  fx_t *f = *state;
  char fdir[PATH_MAX], path[PATH_MAX], big[PATH_MAX];
  ka_watch_opts_t o = {0};
  json_t *arr, *ev;
  int fd;

  snprintf(fdir, sizeof fdir, "%s/later", f->tmp);
  snprintf(path, sizeof path, "%s/x", fdir);
  snprintf(big, sizeof big, "%s/big", f->tmp);
  fd = open(big, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)KA_FILE_HASH_MAX + 1), 0);
  close(fd);
  o.files[o.nfiles++] = path;
  o.files[o.nfiles++] = big;
  watch_up(f, &o);
  ka_watch_tick(&f->w);
  assert_none(f);
  assert_int_equal(mkdir(fdir, 0700), 0);
  write_file(path, "x", 0600);
  ka_watch_tick(&f->w);
  assert_change(f, path, "created", "x");

  fd = open(big, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "y", 1), 1);
  close(fd);
  settle_inotify(f);
  ka_watch_tick(&f->w);
  arr = take(f);
  ev = only(arr, "file.changed", big);
  assert_string_equal(data_str(ev, "change"), "modified");
  assert_null(json_object_get(json_object_get(ev, "data"), "blake2b"));
  assert_int_equal(json_integer_value(json_object_get(json_object_get(ev, "data"), "size")),
                   KA_FILE_HASH_MAX + 2);
  json_decref(arr);
}

/* ---- checks ---------------------------------------------------------------------- */

static void script(fx_t *f, const char *name, const char *body, char out[PATH_MAX]) {
  char text[4096];
  snprintf(out, PATH_MAX, "%s/%s", f->tmp, name);
  snprintf(text, sizeof text, "#!/bin/sh\n%s\n", body);
  write_file(out, text, 0755);
}

/* Steps the watches for ms milliseconds, as the agent's loop would. */
static void run_for(fx_t *f, long ms) {
  int64_t end = keel_mono_ms() + ms;
  struct pollfd fds[KA_WATCH_MAX + 1];
  for (;;) {
    int64_t now = keel_mono_ms();
    long t = ka_watch_next_ms(&f->w);
    size_t n;
    ka_watch_step(&f->w);
    if (now >= end) break;
    if (t < 0 || t > 20) t = 20; /* no SIGCHLD here: wake often to reap */
    n = ka_watch_fds(&f->w, fds, KA_WATCH_MAX + 1);
    poll(fds, n, (int)t);
  }
}

static json_t *by_subject(json_t *arr, const char *subject) {
  size_t i;
  json_t *ev;
  json_array_foreach(arr, i, ev) {
    if (!strcmp(ev_str(ev, "subject"), subject)) return ev;
  }
  fail_msg("no event for %s", subject);
  return NULL;
}

static void assert_check(json_t *arr, const char *name, const char *status, int code,
                         const char *output, const char *perf) {
  json_t *ev = by_subject(arr, name), *d = json_object_get(ev, "data"),
         *ec = json_object_get(d, "exit_code");
  assert_string_equal(ev_str(ev, "type"), "check.result");
  assert_string_equal(data_str(ev, "check"), name);
  assert_string_equal(label(ev, "check"), name);
  assert_string_equal(data_str(ev, "status"), status);
  if (code < 0) assert_true(json_is_null(ec));
  else assert_int_equal(json_integer_value(ec), code);
  if (output && strncmp(data_str(ev, "output"), output, strlen(output))) {
    fail_msg("check %s: output '%s', want '%s...'", name, data_str(ev, "output"), output);
  }
  if (perf) assert_string_equal(data_str(ev, "perfdata"), perf);
}

static void test_checks_statuses(void **state) {
  fx_t *f = *state;
  char s[6][PATH_MAX], spec[8][PATH_MAX + 64], pidfile[PATH_MAX], hang[PATH_MAX + 128];
  ka_watch_opts_t o = {0};
  json_t *arr;
  int64_t t0;

  /* What the hanging check starts in the background is orphaned by the
   * group kill: it comes to us, to be waited for below. */
  assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  script(f, "ok.sh", "echo 'OK - all fine | load=0.5;1;2 users=3'\necho 'long text'", s[0]);
  script(f, "warn.sh", "echo 'WARNING - hm'; exit 1", s[1]);
  script(f, "crit.sh", "echo 'CRITICAL - down|x=1'; exit 2", s[2]);
  script(f, "unk.sh", "echo 'UNKNOWN - ?'; exit 3", s[3]);
  snprintf(pidfile, sizeof pidfile, "%s/hang.pid", f->tmp);
  snprintf(hang, sizeof hang, "sleep 30 & echo $! > %s; echo started; wait", pidfile);
  script(f, "hang.sh", hang, s[4]);
  script(f, "seven.sh", "echo seven; exit 7", s[5]);
  snprintf(spec[0], sizeof spec[0], "ok=%s", s[0]);
  snprintf(spec[1], sizeof spec[1], "warn=%s", s[1]);
  snprintf(spec[2], sizeof spec[2], "crit=%s", s[2]);
  snprintf(spec[3], sizeof spec[3], "unk=%s", s[3]);
  snprintf(spec[4], sizeof spec[4], "hang=%s", s[4]);
  snprintf(spec[5], sizeof spec[5], "seven=%s", s[5]);
  snprintf(spec[6], sizeof spec[6], "missing=/no/such/plugin -w 1");
  /* No shell: split on runs of spaces; '|' is just a byte of an argument. */
  snprintf(spec[7], sizeof spec[7], "words=/bin/echo  a   b|c");
  for (int i = 0; i < 8; i++) o.checks[o.nchecks++] = spec[i];
  o.check_timeout_ms = 400;
  o.check_interval_ms = 3600000;
  watch_up(f, &o);

  t0 = keel_mono_ms();
  run_for(f, 1200);
  arr = take(f);
  assert_int_equal(json_array_size(arr), 8);
  assert_check(arr, "ok", "OK", 0, "OK - all fine", "load=0.5;1;2 users=3");
  assert_check(arr, "warn", "WARNING", 1, "WARNING - hm", "");
  assert_check(arr, "crit", "CRITICAL", 2, "CRITICAL - down", "x=1");
  assert_check(arr, "unk", "UNKNOWN", 3, "UNKNOWN - ?", "");
  assert_check(arr, "hang", "UNKNOWN", -1, "check timed out after 400 ms", "");
  assert_check(arr, "seven", "UNKNOWN", 7, "seven", "");
  assert_check(arr, "missing", "UNKNOWN", -1, "exec /no/such/plugin: No such file", "");
  assert_check(arr, "words", "OK", 0, "a b", "c");
  json_decref(arr);
  assert_true(keel_mono_ms() - t0 < 1300); /* the hang did not hold the others up */

  /* The timeout killed the whole group: the background sleep too. */
  {
    char buf[32] = "";
    FILE *fp = fopen(pidfile, "r");
    long pid;
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof buf, fp));
    fclose(fp);
    pid = atol(buf);
    assert_true(pid > 0);
    /* Orphaned when its shell was killed, it came to us (the subreaper):
     * it must have died of the same SIGKILL. */
    for (int i = 0; i < 100; i++) {
      int st;
      pid_t r = waitpid((pid_t)pid, &st, WNOHANG);
      assert_true(r >= 0);
      if (r == (pid_t)pid) {
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        pid = 0;
        break;
      }
      usleep(10000);
    }
    assert_int_equal(pid, 0);
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

/* Results are reported when the status changes, and only then; a restart
 * does not report an unchanged status again. */
static void test_check_flips(void **state) {
  fx_t *f = *state;
  char s[PATH_MAX], spec[PATH_MAX + 16], flag[PATH_MAX], body[PATH_MAX + 128];
  ka_watch_opts_t o = {0};
  json_t *arr;

  snprintf(flag, sizeof flag, "%s/flag", f->tmp);
  snprintf(body, sizeof body,
           "if [ -e %s ]; then echo \"CRITICAL - flag $(cat %s)\"; exit 2; fi; echo \"OK - $$\"",
           flag, flag);
  script(f, "flip.sh", body, s);
  snprintf(spec, sizeof spec, "flip=%s", s);
  o.checks[o.nchecks++] = spec;
  o.check_interval_ms = 1000;
  watch_up(f, &o);
  run_for(f, 300);
  arr = take(f);
  assert_check(arr, "flip", "OK", 0, "OK - ", "");
  json_decref(arr);
  /* Runs again after 1 s, still OK (other text): nothing. */
  run_for(f, 1100);
  assert_none(f);
  write_file(flag, "1", 0600);
  run_for(f, 1100);
  arr = take(f);
  assert_check(arr, "flip", "CRITICAL", 2, "CRITICAL - flag 1", "");
  json_decref(arr);
  write_file(flag, "2", 0600);
  run_for(f, 1100);
  assert_none(f);

  restart(f, &o);
  run_for(f, 300);
  assert_none(f);
  ka_watch_save(&f->w);
  unlink(flag);
  watch_up(f, &o);
  run_for(f, 300);
  arr = take(f);
  assert_check(arr, "flip", "OK", 0, "OK - ", "");
  json_decref(arr);
}

static void test_check_shell(void **state) {
  fx_t *f = *state;
  ka_watch_opts_t o = {0};
  json_t *arr;

  o.checks[o.nchecks++] = "sh=echo \"WARNING - $((20 + 22)) left\" '|' 'free=42'; exit 1";
  o.check_shell = 1;
  watch_up(f, &o);
  run_for(f, 500);
  arr = take(f);
  assert_check(arr, "sh", "WARNING", 1, "WARNING - 42 left", "free=42");
  json_decref(arr);
}

static void test_check_parse(void **state) {
  char buf[KA_CHECK_OUTPUT_MAX];
  const char *out, *perf;
  (void)state;

#define PARSE(text)                                        \
  do {                                                     \
    memcpy(buf, text, sizeof text - 1);                    \
    ka_check_parse(buf, sizeof text - 1, &out, &perf);     \
  } while (0)
  PARSE("OK - fine | a=1;2;3 b=4\nlong | c=5\n");
  assert_string_equal(out, "OK - fine");
  assert_string_equal(perf, "a=1;2;3 b=4");
  PARSE("  CRITICAL  \r\n");
  assert_string_equal(out, "CRITICAL");
  assert_string_equal(perf, "");
  PARSE("");
  assert_string_equal(out, "");
  assert_string_equal(perf, "");
  PARSE("|only perf");
  assert_string_equal(out, "");
  assert_string_equal(perf, "only perf");
  PARSE("no newline at all");
  assert_string_equal(out, "no newline at all");
  PARSE("bad \xff utf8 \x01");
  assert_string_equal(out, "bad ? utf8 ?");
  PARSE("cut\0hidden|x");
  assert_string_equal(out, "cut");
  assert_string_equal(perf, "");
#undef PARSE
}

/* ---- options ---------------------------------------------------------------------- */

static void test_bad_options(void **state) {
  fx_t *f = *state;
  /* {kind (p, f, c), value, a second value or NULL} */
  static const char *const bad[][3] = {
      {"p", "", NULL},     {"p", "a/b", NULL},          {"p", "dup", "dup"},
      {"f", "rel/path", NULL}, {"f", "/trailing/", NULL}, {"f", "/a/..", NULL},
      {"f", "/x", "/x"},   {"c", "noequals", NULL},    {"c", "=cmd", NULL},
      {"c", "bad name=cmd", NULL}, {"c", "n=", NULL},   {"c", "n=   ", NULL},
      {"c", "n=a", "n=b"}, {"p", NULL, NULL},          {"f", NULL, NULL}};
  char longname[KA_EV_SUBJECT_MAX + 2];
  keel_err_t e;

  /* One byte over keeld's bound on subjects (the last two rows). */
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ka_watch_opts_t o = {0};
    const char *const *v = bad[i];
    const char **arr = *v[0] == 'p' ? o.procs : *v[0] == 'f' ? o.files : o.checks;
    size_t *n = *v[0] == 'p' ? &o.nprocs : *v[0] == 'f' ? &o.nfiles : &o.nchecks;
    char path[sizeof longname + 1];
    snprintf(path, sizeof path, "/%s", longname);
    arr[(*n)++] = v[1] ? v[1] : *v[0] == 'f' ? path : longname;
    if (v[2]) arr[(*n)++] = v[2];
    assert_int_equal(ka_watch_init(&f->w, &o, f->dir, &f->q, NULL, &e), KEEL_EINVAL);
    assert_non_null(strstr(e.msg, *v[0] == 'p' ? "--watch-process" : *v[0] == 'f' ? "--watch-file"
                                                                           : "--check"));
  }
  {
    /* At the bound: fine. */
    ka_watch_opts_t o = {0};
    longname[KA_EV_SUBJECT_MAX] = '\0';
    o.procs[o.nprocs++] = longname;
    assert_int_equal(ka_watch_init(&f->w, &o, f->dir, &f->q, NULL, &e), 0);
    ka_watch_free(&f->w);
  }
}

/* A damaged DIR/watch.json: a first start again (states reported). */
static void test_state_unreadable(void **state) {
  fx_t *f = *state;
  ka_watch_opts_t o = {0};
  char name[32], path[PATH_MAX];
  json_t *arr;

  snprintf(name, sizeof name, "kw%dgone", (int)getpid() % 100000);
  o.procs[o.nprocs++] = name;
  snprintf(path, sizeof path, "%s/watch.json", f->dir);
  write_file(path, "{\"services\":", 0600);
  watch_up(f, &o);
  ka_watch_tick(&f->w);
  arr = take(f);
  only(arr, "service.down", name);
  json_decref(arr);
  ka_watch_save(&f->w);
  /* Saved now: readable, and the state is there. */
  restart(f, &o);
  ka_watch_tick(&f->w);
  assert_none(f);
}

/* ---- the queue ---------------------------------------------------------------------- */

static void add_n(fx_t *f, int from, int n, size_t pad) {
  char *blob = malloc(pad + 1);
  assert_non_null(blob);
  memset(blob, 'p', pad);
  blob[pad] = '\0';
  for (int i = from; i < from + n; i++) {
    char subj[32];
    snprintf(subj, sizeof subj, "s%d", i);
    ka_evq_add(&f->q, "check.result", subj, keel_now_ms(), json_pack("{s:s}", "pad", blob));
  }
  free(blob);
}

/* The spooled batch seq as events: array (new). */
static json_t *spooled(fx_t *f, uint64_t *seq) {
  char *body = NULL;
  size_t len;
  json_t *o = NULL, *arr;
  keel_err_t e;
  assert_int_equal(ka_mspool_oldest(&f->q.spool, seq, KA_EV_BATCH_BYTES, &body, &len, &e), 0);
  assert_true(len <= KA_EV_BATCH_BYTES);
  assert_int_equal(keel_json_parse(body, len, &o, &e), 0);
  free(body);
  arr = json_incref(json_object_get(o, "events"));
  json_decref(o);
  return arr;
}

static void test_evq_batches(void **state) {
  fx_t *f = *state;
  uint64_t seq;
  json_t *arr;

  /* 300 small events: one full batch of 256 spooled, 44 in memory. */
  add_n(f, 0, 300, 10);
  assert_int_equal(f->q.spool.count, 1);
  assert_int_equal(f->q.n, 44);
  arr = spooled(f, &seq);
  assert_int_equal(json_array_size(arr), KA_EV_BATCH_EVENTS);
  assert_string_equal(ev_str(json_array_get(arr, 0), "subject"), "s0");
  assert_string_equal(ev_str(json_array_get(arr, 255), "subject"), "s255");
  json_decref(arr);
  ka_mspool_drop(&f->q.spool, seq, 0);
  arr = take(f);
  assert_int_equal(json_array_size(arr), 44);
  assert_string_equal(ev_str(json_array_get(arr, 0), "subject"), "s256");
  json_decref(arr);
  assert_int_equal(f->q.n, 0);

  /* Big events: batches cut at 256 KiB. */
  add_n(f, 0, 40, 15000);
  assert_true(f->q.spool.count >= 2);
  {
    size_t total = 0;
    while (f->q.spool.count) {
      arr = spooled(f, &seq);
      total += json_array_size(arr);
      json_decref(arr);
      ka_mspool_drop(&f->q.spool, seq, 0);
    }
    arr = take(f);
    total += json_array_size(arr);
    json_decref(arr);
    assert_int_equal(total, 40);
  }

  /* One event larger than a batch: refused, counted, nothing else lost. */
  add_n(f, 0, 1, KA_EV_BATCH_BYTES);
  assert_int_equal(f->q.refused, 1);
  assert_int_equal(f->q.n, 0);
  assert_int_equal(ka_evq_dropped(&f->q), 1);
}

/* The spool keeps the newest batches within its bounds, oldest dropped and
 * counted, order kept. */
static void test_evq_spool_bounded(void **state) {
  fx_t *f = *state;
  keel_err_t e;
  uint64_t seq;
  json_t *arr;

  ka_evq_close(&f->q);
  assert_int_equal(ka_evq_open(&f->q, f->dir, 1 << 20, 3, NULL, &e), 0);
  for (int b = 0; b < 5; b++) {
    add_n(f, b * 10, 10, 10);
    ka_evq_spool(&f->q);
  }
  assert_int_equal(f->q.spool.count, 3);
  assert_int_equal(f->q.spool.dropped, 2);
  assert_int_equal(ka_evq_dropped(&f->q), 2);
  for (int b = 2; b < 5; b++) {
    char want[16];
    arr = spooled(f, &seq);
    snprintf(want, sizeof want, "s%d", b * 10);
    assert_string_equal(ev_str(json_array_get(arr, 0), "subject"), want);
    json_decref(arr);
    ka_mspool_drop(&f->q.spool, seq, 0);
  }
  /* Bytes bound too: 64 KiB holds three ~20 KiB batches at most. */
  ka_evq_close(&f->q);
  assert_int_equal(ka_evq_open(&f->q, f->dir, 64 << 10, 65536, NULL, &e), 0);
  for (int b = 0; b < 6; b++) {
    add_n(f, b, 1, 20000);
    ka_evq_spool(&f->q);
  }
  assert_true(f->q.spool.count <= 3);
  assert_true(f->q.spool.bytes <= 64 << 10);
  assert_int_equal(f->q.spool.dropped, 6 - f->q.spool.count);
  arr = spooled(f, &seq);
  {
    char want[16];
    snprintf(want, sizeof want, "s%zu", 6 - f->q.spool.count);
    assert_string_equal(ev_str(json_array_get(arr, 0), "subject"), want);
  }
  json_decref(arr);
  /* Still there after a restart, in order. */
  ka_evq_close(&f->q);
  assert_int_equal(ka_evq_open(&f->q, f->dir, 64 << 10, 65536, NULL, &e), 0);
  assert_true(f->q.spool.count >= 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_process_up_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_process_down_at_start, setup, teardown),
      cmocka_unit_test_setup_teardown(test_process_zombie_is_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_process_comm_or_argv0, setup, teardown),
      cmocka_unit_test_setup_teardown(test_process_shared_walk, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_changes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_late_dir_and_big, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checks_statuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_check_flips, setup, teardown),
      cmocka_unit_test_setup_teardown(test_check_shell, setup, teardown),
      cmocka_unit_test(test_check_parse),
      cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_unreadable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_evq_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(test_evq_spool_bounded, setup, teardown),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
