/* procgroup.c — recognizing a command's process group across an agent
 * crash, so that a restarted agent can stop what its predecessor left
 * running before reporting the run `interrupted`.
 *
 * A pid alone is not an identity: after a reboot, or once the process is
 * gone, the number may belong to someone else.  So a run records the boot
 * id and the leader's start time (field 22 of /proc/PID/stat), and the
 * group is killed only when both still match.  If the leader is gone, the
 * members still carrying its process group id are killed: Linux does not
 * hand out a pid that is still in use as a process group id, so within the
 * same boot those processes can only be the run's.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

int ka_boot_id(char out[KA_BOOT_ID_LEN]) {
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
  int ok;
  out[0] = '\0';
  if (!f) return -1;
  ok = fgets(out, KA_BOOT_ID_LEN, f) != NULL;
  fclose(f);
  if (!ok) return -1;
  out[strcspn(out, "\n")] = '\0';
  return 0;
}

/* Fields 5 (pgrp) and 22 (starttime) of /proc/pid/stat; -1 when gone. */
static int proc_stat(long pid, long *pgrp, unsigned long long *start) {
  char path[64], buf[1024], *p;
  FILE *f;
  size_t n;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  if (!(f = fopen(path, "re"))) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* comm may hold spaces and ')': the fields start after the last ')' */
  if (!(p = strrchr(buf, ')'))) return -1;
  if (sscanf(p + 2, "%*c %*d %ld %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
             pgrp, start) != 2)
    return -1;
  return 0;
}

int ka_proc_start_time(long pid, unsigned long long *start) {
  long pgrp;
  return proc_stat(pid, &pgrp, start);
}

int ka_procgroup_reap(long pgid, const char *boot_id, unsigned long long leader_start) {
  char now_boot[KA_BOOT_ID_LEN];
  unsigned long long start;
  long pgrp;
  int killed = 0;
  DIR *d;
  struct dirent *de;

  if (pgid <= 1 || !boot_id || ka_boot_id(now_boot) || strcmp(now_boot, boot_id)) return 0;
  if (proc_stat(pgid, &pgrp, &start) == 0) {
    /* the leader lives: it must be the very process we started */
    if (start != leader_start || pgrp != pgid) return 0;
    return kill(-(pid_t)pgid, SIGKILL) == 0 ? 1 : 0;
  }
  if (!(d = opendir("/proc"))) return 0;
  while ((de = readdir(d))) {
    long pid;
    if (!isdigit((unsigned char)de->d_name[0])) continue;
    pid = strtol(de->d_name, NULL, 10);
    if (proc_stat(pid, &pgrp, &start) == 0 && pgrp == pgid && start >= leader_start &&
        kill((pid_t)pid, SIGKILL) == 0)
      killed++;
  }
  closedir(d);
  return killed;
}
