/* Unit tests for procgroup.c: a crashed agent's leftover process group is
 * killed only when it is provably the run's (same boot, same leader start). */
#include <dirent.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent.h"

/* A process group of a leader and one member, both sleeping. */
static pid_t spawn_group(void) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    if (fork() == 0) execlp("sleep", "sleep", "30", (char *)NULL);
    execlp("sleep", "sleep", "30", (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid);
  {
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL); /* let the member start */
  }
  return pid;
}

static int alive(pid_t pid) { return kill(pid, 0) == 0; }

/* Processes of group pgid that still run (zombies do not count: killed
 * members wait for their new parent to reap them, which some init
 * processes never do). */
static int group_running(pid_t pgid) {
  DIR *d = opendir("/proc");
  struct dirent *de;
  int n = 0;
  while (d && (de = readdir(d))) {
    char path[300], buf[512], *p, state;
    long pgrp;
    FILE *f;
    size_t len;
    snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
    if (!(f = fopen(path, "r"))) continue;
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    if ((p = strrchr(buf, ')')) && sscanf(p + 2, "%c %*d %ld", &state, &pgrp) == 2 &&
        pgrp == pgid && state != 'Z')
      n++;
  }
  if (d) closedir(d);
  return n;
}

static int group_gone(pid_t pgid) {
  for (int i = 0; i < 50; i++) {
    struct timespec ts = {0, 20 * 1000000L};
    if (!group_running(pgid)) return 1;
    nanosleep(&ts, NULL);
  }
  return 0;
}

static void test_reap_matching_group(void **state) {
  char boot[KA_BOOT_ID_LEN];
  unsigned long long st;
  pid_t pid = spawn_group();
  int status;
  (void)state;
  assert_int_equal(ka_boot_id(boot), 0);
  assert_int_equal(ka_proc_start_time(pid, &st), 0);
  /* another boot: untouched */
  assert_int_equal(ka_procgroup_reap(pid, "not-this-boot", st), 0);
  /* same boot, other start time (a reused pid): untouched */
  assert_int_equal(ka_procgroup_reap(pid, boot, st + 1), 0);
  assert_true(alive(pid));
  /* the real thing: the whole group goes */
  assert_int_equal(ka_procgroup_reap(pid, boot, st), 1);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  assert_true(group_gone(pid)); /* no member left */
}

static void test_reap_members_when_leader_gone(void **state) {
  char boot[KA_BOOT_ID_LEN];
  unsigned long long st;
  pid_t pid = spawn_group();
  (void)state;
  assert_int_equal(ka_boot_id(boot), 0);
  assert_int_equal(ka_proc_start_time(pid, &st), 0);
  kill(pid, SIGKILL); /* the leader dies; its member lives on in the group */
  waitpid(pid, NULL, 0);
  assert_true(group_running(pid) >= 1);
  assert_true(ka_procgroup_reap(pid, boot, st) >= 1);
  assert_true(group_gone(pid));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reap_matching_group),
      cmocka_unit_test(test_reap_members_when_leader_gone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
