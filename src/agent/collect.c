/* collect.c — the collector's frame: kept /proc descriptors, the read
 * buffer, the emitter, and one collection (collect.h). */
#define _GNU_SOURCE /* statfs */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "collect.h"

void ka_emit(ka_emit_t *em, const char *name, double v, ...) {
  keel_mb_label_t l[8];
  size_t n = 0;
  va_list ap;
  const char *k;
  int rc;

  l[n++] = (keel_mb_label_t){"__name__", name};
  va_start(ap, v);
  while ((k = va_arg(ap, const char *)) && n < sizeof l / sizeof l[0]) {
    l[n].name = k;
    l[n++].value = va_arg(ap, const char *);
  }
  va_end(ap);
  rc = keel_mb_enc_add1(em->enc, l, n, em->t, v, &em->last);
  if (rc) em->refused++;
  else em->added++;
}

int ka_collect_init(ka_collect_t *c, const char *root, const char *const *names, size_t nnames,
                    const keel_log_t *log, keel_err_t *e) {
  int rc = 0;

  memset(c, 0, sizeof *c);
  for (int i = 0; i < KA_PF_N; i++) c->fd[i] = -1;
  c->log = log;
  if (!root) root = "/proc";
  if (strlen(root) >= sizeof c->root - 32) {
    rc = keel_err_set(e, KEEL_EINVAL, "proc root '%.64s': too long", root);
    goto out;
  }
  strcpy(c->root, root);
  c->clk_tck = sysconf(_SC_CLK_TCK);
  if (c->clk_tck <= 0) c->clk_tck = 100;
  c->page_size = sysconf(_SC_PAGESIZE);
  if (c->page_size <= 0) c->page_size = 4096;
  if (nnames > KA_COLLECT_PROC_NAMES) {
    rc = keel_err_set(e, KEEL_EINVAL, "at most %d process names", KA_COLLECT_PROC_NAMES);
    goto out;
  }
  for (size_t i = 0; i < nnames; i++) {
    if (!names[i][0] || strlen(names[i]) > 255) {
      rc = keel_err_set(e, KEEL_EINVAL, "process name '%.64s': expected 1 to 255 bytes",
                        names[i]);
      goto out;
    }
    if (!keel_mb_utf8_ok(names[i], strlen(names[i]))) {
      rc = keel_err_set(e, KEEL_EINVAL, "process name '%.64s': not UTF-8", names[i]);
      goto out;
    }
    c->pnames[c->npnames++] = names[i];
  }
  if (nnames) {
    /* Sized once: the scan never allocates. */
    c->prev = calloc(KA_COLLECT_PROC_TRACK, sizeof *c->prev);
    c->cur = calloc(KA_COLLECT_PROC_TRACK, sizeof *c->cur);
    c->pticks = calloc(nnames, sizeof *c->pticks);
    if (!c->prev || !c->cur || !c->pticks) {
      rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
      goto out;
    }
  }
out:
  if (rc) ka_collect_free(c);
  return rc;
}

void ka_collect_free(ka_collect_t *c) {
  for (int i = 0; i < KA_PF_N; i++)
    if (c->fd[i] >= 0) close(c->fd[i]);
  if (c->procdir) closedir(c->procdir);
  free(c->rd);
  free(c->prev);
  free(c->cur);
  free(c->pticks);
  memset(c, 0, sizeof *c);
  for (int i = 0; i < KA_PF_N; i++) c->fd[i] = -1;
}

/* pread from 0 to EOF into c->rd, growing it (then reading again from 0:
 * a file's text is only consistent within one pass). */
static int read_all(ka_collect_t *c, int fd, size_t *len) {
  for (;;) {
    size_t n = 0;
    if (c->rdcap < 2) {
      char *p = malloc(16384);
      if (!p) return KEEL_ENOMEM;
      c->rd = p;
      c->rdcap = 16384;
    }
    for (;;) {
      ssize_t r = pread(fd, c->rd + n, c->rdcap - 1 - n, (off_t)n);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return KEEL_EIO;
      if (r == 0) break;
      n += (size_t)r;
      if (n == c->rdcap - 1) break;
    }
    if (n < c->rdcap - 1) {
      c->rd[n] = '\0';
      *len = n;
      return 0;
    }
    if (c->rdcap >= KA_COLLECT_READ_MAX) return KEEL_ETOOBIG;
    {
      size_t cap = c->rdcap * 2 > KA_COLLECT_READ_MAX ? KA_COLLECT_READ_MAX : c->rdcap * 2;
      char *p = realloc(c->rd, cap);
      if (!p) return KEEL_ENOMEM;
      c->rd = p;
      c->rdcap = cap;
    }
  }
}

int ka_collect_read(ka_collect_t *c, int slot, const char *rel, char **text, size_t *len) {
  char path[512];
  int rc = 0, err = 0;

  for (int attempt = 0; attempt < 2; attempt++) {
    if (c->fd[slot] < 0) {
      snprintf(path, sizeof path, "%s/%s", c->root, rel);
      c->fd[slot] = open(path, O_RDONLY | O_CLOEXEC);
      if (c->fd[slot] < 0) {
        err = errno;
        rc = KEEL_EIO;
        goto out;
      }
    }
    rc = read_all(c, c->fd[slot], len);
    if (rc != KEEL_EIO) break;
    err = errno;
    /* A kept descriptor can go stale (a namespace change): reopen once. */
    close(c->fd[slot]);
    c->fd[slot] = -1;
  }
out:
  if (rc) {
    if (!(c->warned & (1 << slot)))
      keel_log(c->log, KEEL_LOG_WARN, "metrics: cannot read %s/%s (%s): left out", c->root, rel,
               rc == KEEL_EIO ? strerror(err) : keel_strerror(rc));
    c->warned |= 1 << slot;
    return rc;
  }
  c->warned &= ~(1 << slot);
  *text = c->rd;
  return 0;
}

static void filesystems(ka_collect_t *c, ka_emit_t *em) {
  char *text;
  size_t len, n;

  if (ka_collect_read(c, KA_PF_MOUNTS, "self/mounts", &text, &len)) return;
  n = ka_parse_mounts(text, len, c->mounts, KA_COLLECT_FS_MAX);
  for (size_t i = 0; i < n; i++) {
    const ka_mount_t *m = &c->mounts[i];
    struct statfs st;
    double bs;
    /* The kernel's f_bsize, as node_exporter multiplies by (Go's
     * Statfs_t.Bsize), not statvfs' f_frsize. */
    if (statfs(m->mountpoint, &st)) continue;
    bs = (double)st.f_bsize;
#define FS(metric, val)                                                                   \
  ka_emit(em, metric, (double)(val), "device", m->device, "fstype", m->fstype, "mountpoint", \
          m->mountpoint, NULL)
    FS("node_filesystem_avail_bytes", (double)st.f_bavail * bs);
    FS("node_filesystem_files", st.f_files);
    FS("node_filesystem_files_free", st.f_ffree);
    FS("node_filesystem_free_bytes", (double)st.f_bfree * bs);
    FS("node_filesystem_size_bytes", (double)st.f_blocks * bs);
#undef FS
  }
}

int ka_collect(ka_collect_t *c, keel_mb_enc_t *enc, int64_t t, const ka_collect_self_t *self) {
  ka_emit_t em = {.enc = enc, .t = t};
  struct timespec now;
  char *text;
  size_t len;

  if (!ka_collect_read(c, KA_PF_STAT, "stat", &text, &len))
    ka_parse_stat(&em, text, len, c->clk_tck);
  if (!ka_collect_read(c, KA_PF_LOADAVG, "loadavg", &text, &len))
    ka_parse_loadavg(&em, text, len);
  if (!ka_collect_read(c, KA_PF_MEMINFO, "meminfo", &text, &len))
    ka_parse_meminfo(&em, text, len);
  if (!ka_collect_read(c, KA_PF_DISKSTATS, "diskstats", &text, &len))
    ka_parse_diskstats(&em, text, len);
  if (!ka_collect_read(c, KA_PF_NETDEV, "net/dev", &text, &len))
    ka_parse_netdev(&em, text, len);
  if (!ka_collect_read(c, KA_PF_FILENR, "sys/fs/file-nr", &text, &len))
    ka_parse_filenr(&em, text, len);
  filesystems(c, &em);
  clock_gettime(CLOCK_REALTIME, &now);
  ka_emit(&em, "node_time_seconds", (double)now.tv_sec + (double)now.tv_nsec / 1e9, NULL);
  if (c->npnames) ka_collect_processes(c, &em);
  if (self) {
    ka_emit(&em, "keel_agent_metrics_dropped_batches_total", (double)self->dropped_batches, NULL);
    ka_emit(&em, "keel_agent_metrics_spooled_batches", (double)self->spooled_batches, NULL);
    ka_emit(&em, "keel_agent_events_dropped_batches_total", (double)self->events_dropped, NULL);
    ka_emit(&em, "keel_agent_events_spooled_batches", (double)self->events_spooled, NULL);
  }
  if (em.refused && !c->warned_refused) {
    keel_log(c->log, KEEL_LOG_WARN, "metrics: %zu series left out (%s)", em.refused, em.last.msg);
    c->warned_refused = 1;
  }
  return (int)em.added;
}
