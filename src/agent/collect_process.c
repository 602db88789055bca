/* collect_process.c — finding processes by name (ka_proc_scan: what
 * --process and --watch-process both mean by "a process named NAME"), and
 * the per-process metrics for the names given with --process, in the
 * manner of process-exporter's name groups:
 *
 *   keel_process_count{name}                  processes named name
 *   keel_process_resident_memory_bytes{name}  their RSS, summed
 *   keel_process_cpu_seconds_total{name}      their user + system CPU
 *
 * The CPU counter must not go down when a process exits, so it is kept by
 * the collector: each scan adds, per process still there (same pid and
 * start time), what it used since the previous scan, and for a process
 * not seen before all it used so far.  Matching processes are tracked in
 * two fixed arrays (KA_COLLECT_PROC_TRACK) swapped each scan: no
 * allocation after ka_collect_init. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collect.h"

/* An unsigned decimal in [*p, end), then skips one space. */
static int field_num(const char **p, const char *end, unsigned long long *out) {
  const char *s = *p;
  unsigned long long v = 0;
  if (s >= end || *s < '0' || *s > '9') return 0;
  while (s < end && *s >= '0' && *s <= '9') v = v * 10 + (unsigned long long)(*s++ - '0');
  if (s < end && *s == ' ') s++;
  *p = s;
  *out = v;
  return 1;
}

/* Skips one field (any bytes up to a space). */
static int field_skip(const char **p, const char *end) {
  const char *s = *p;
  if (s >= end || *s == ' ') return 0;
  while (s < end && *s != ' ') s++;
  if (s < end) s++;
  *p = s;
  return 1;
}

int ka_parse_pstat(const char *text, size_t len, ka_pstat_t *ps) {
  const char *end = text + len, *open = memchr(text, '(', len), *close = NULL, *p;
  unsigned long long utime = 0, stime = 0, dummy;
  size_t n;

  /* comm may hold ')' and spaces: it ends at the last ')'. */
  for (const char *q = end; q > text; q--)
    if (q[-1] == ')') {
      close = q - 1;
      break;
    }
  if (!open || !close || close < open) return KEEL_EINVAL;
  n = (size_t)(close - open - 1);
  if (n >= sizeof ps->comm) n = sizeof ps->comm - 1;
  memcpy(ps->comm, open + 1, n);
  ps->comm[n] = '\0';
  p = close + 1;
  if (p >= end || *p++ != ' ') return KEEL_EINVAL;
  /* Fields 3 (state) .. 24 (rss), 1-based as in proc(5). */
  for (int f = 3; f <= 24; f++) {
    int ok;
    switch (f) {
    case 3:
      ps->state = p < end ? *p : '?';
      ok = field_skip(&p, end);
      break;
    case 9: ok = field_num(&p, end, &ps->flags); break;
    case 14: ok = field_num(&p, end, &utime); break;
    case 15: ok = field_num(&p, end, &stime); break;
    case 22: ok = field_num(&p, end, &ps->start); break;
    case 24: ok = field_num(&p, end, &ps->rss); break;
    default:
      /* Signed fields (priority, nice, tty) may start with '-'. */
      if (p < end && *p == '-') p++;
      ok = field_num(&p, end, &dummy);
    }
    if (!ok) return KEEL_EINVAL;
  }
  ps->ticks = utime + stime;
  return 0;
}

/* The first of names[0..n) that comm is, or -1.  The kernel keeps 15
 * bytes of a name: a longer configured name matches on those. */
static int comm_match(const char *const *names, size_t n, const char *comm) {
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(names[i]);
    if (l > 15) l = 15;
    if (!strncmp(comm, names[i], l) && comm[l] == '\0') return (int)i;
  }
  return -1;
}

/* The basename of pid's argv[0], in buf (n bytes), or NULL.  Only the
 * first n - 1 bytes of the command line are read: enough for any argv[0]
 * a name can match (names are at most 255 bytes). */
static const char *argv0_base(const char *root, const char *pid, char *buf, size_t n) {
  char path[300];
  const char *base;
  ssize_t r;
  int fd;

  snprintf(path, sizeof path, "%s/%s/cmdline", root, pid);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) return NULL;
  do r = read(fd, buf, n - 1);
  while (r < 0 && errno == EINTR);
  close(fd);
  if (r <= 0) return NULL;
  buf[r] = '\0'; /* argv[0] ends at its NUL, or here */
  base = strrchr(buf, '/');
  return base ? base + 1 : buf;
}

int ka_proc_scan(const char *root, void **dirp, ka_proc_want_t *want) {
  struct dirent *de;
  DIR *d = *dirp;
  int rc = 0;

  if (!d) {
    if (!(d = opendir(root))) {
      rc = KEEL_EIO;
      goto out;
    }
    *dirp = d;
  } else {
    rewinddir(d);
  }
  while ((de = readdir(d))) {
    char path[300], buf[1024], cmdline[4096];
    const char *base = NULL;
    int looked = 0;
    ka_pstat_t ps;
    ssize_t r;
    int fd;
    if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "%s/%s/stat", root, de->d_name);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) continue; /* gone meanwhile */
    do r = read(fd, buf, sizeof buf);
    while (r < 0 && errno == EINTR);
    close(fd);
    if (r <= 0 || ka_parse_pstat(buf, (size_t)r, &ps)) continue;
    for (ka_proc_want_t *w = want; w; w = w->also) {
      int g = comm_match(w->names, w->n, ps.comm);
      /* Kernel threads have no command line: not worth an open each. */
      if (g < 0 && !(ps.flags & KA_PF_KTHREAD)) {
        if (!looked) base = argv0_base(root, de->d_name, cmdline, sizeof cmdline);
        looked = 1;
        for (size_t i = 0; base && g < 0 && i < w->n; i++)
          if (!strcmp(base, w->names[i])) g = (int)i;
      }
      if (g >= 0) w->fn(w->ud, atoi(de->d_name), (size_t)g, &ps);
    }
  }
  for (ka_proc_want_t *w = want; w; w = w->also) w->walked = 1;
out:
  return rc;
}

static int by_pid(const void *a, const void *b) {
  int x = ((const ka_ptrack_t *)a)->pid, y = ((const ka_ptrack_t *)b)->pid;
  return (x > y) - (x < y);
}

/* One scan's tally, for ka_proc_scan's callback. */
struct tally {
  ka_collect_t *c;
  unsigned long long rss[KA_COLLECT_PROC_NAMES];
  unsigned count[KA_COLLECT_PROC_NAMES];
  size_t ncur;
};

static void tally_one(void *ud, int pid, size_t g, const ka_pstat_t *ps) {
  struct tally *t = ud;
  ka_collect_t *c = t->c;

  t->count[g]++;
  t->rss[g] += ps->rss * (unsigned long long)c->page_size;
  if (t->ncur < KA_COLLECT_PROC_TRACK) {
    c->cur[t->ncur++] = (ka_ptrack_t){pid, (int)g, ps->start, ps->ticks};
  } else if (!c->warned_track) {
    keel_log(c->log, KEEL_LOG_WARN,
             "metrics: more than %d matching processes; the CPU of the rest is not counted",
             KA_COLLECT_PROC_TRACK);
    c->warned_track = 1;
  }
}

int ka_collect_processes(ka_collect_t *c, ka_emit_t *em) {
  struct tally t = {.c = c};
  ka_proc_want_t want = {c->pnames, c->npnames, tally_one, &t, c->also, 0};
  size_t ncur;
  int rc;

  if ((rc = ka_proc_scan(c->root, &c->procdir, &want))) goto out;
  ncur = t.ncur;
  /* /proc lists pids in order, but nothing promises it. */
  qsort(c->cur, ncur, sizeof *c->cur, by_pid);
  for (size_t i = 0; i < ncur; i++) {
    const ka_ptrack_t *p = &c->cur[i];
    const ka_ptrack_t *q = c->nprev ? bsearch(p, c->prev, c->nprev, sizeof *p, by_pid) : NULL;
    if (q && q->start == p->start && q->group == p->group)
      c->pticks[p->group] += p->ticks >= q->ticks ? p->ticks - q->ticks : 0;
    else
      c->pticks[p->group] += p->ticks; /* new (or a reused pid): all it used */
  }
  {
    ka_ptrack_t *swap = c->prev;
    c->prev = c->cur;
    c->cur = swap;
    c->nprev = ncur;
  }
  c->primed = 1;
  for (size_t i = 0; i < c->npnames; i++) {
    const char *n = c->pnames[i];
    ka_emit(em, "keel_process_count", (double)t.count[i], "name", n, NULL);
    ka_emit(em, "keel_process_cpu_seconds_total", (double)c->pticks[i] / (double)c->clk_tck,
            "name", n, NULL);
    ka_emit(em, "keel_process_resident_memory_bytes", (double)t.rss[i], "name", n, NULL);
  }
out:
  return rc;
}
