/* collect.h — host metrics for keel-agent (docs/metrics.md, "Host metrics").
 *
 * Every interval the agent reads /proc (and statfs()s the mounted file
 * systems) and adds one sample per series to a metric batch
 * (keel/metricbatch.h).  Names and labels are node_exporter's, exactly;
 * the per-process metrics follow process-exporter (namedprocess).
 *
 * Cost: the /proc files read every time are opened once and re-read with
 * pread at offset 0 (a seq_file regenerates its text then); one read
 * buffer is reused and grows only to the largest file seen; labels are
 * built on the stack and copied by the encoder, whose own buffers are
 * reused.  A steady-state collection allocates nothing.
 *
 * Parsers take the file's text (mutable: they cut it into NUL-terminated
 * fields in place) so that tests feed them fixture copies of /proc files.
 * Internal to src/agent; single-threaded like the rest of the agent.
 */
#ifndef KA_COLLECT_H
#define KA_COLLECT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "keel/metricbatch.h"

#define KA_COLLECT_READ_MAX ((size_t)4 << 20) /* the largest /proc file we read */
#define KA_COLLECT_FS_MAX 256                  /* file systems per collection */
#define KA_COLLECT_PROC_NAMES 64               /* --process names */
#define KA_COLLECT_PROC_TRACK 4096             /* matching processes tracked for CPU deltas */

/* Where samples go: the encoder, one timestamp, and what went wrong. */
typedef struct ka_emit {
  keel_mb_enc_t *enc;  /* borrowed */
  int64_t t;           /* the samples' timestamp, Unix ms */
  size_t added;        /* series added */
  size_t refused;      /* series the encoder refused (bad label text, batch full) */
  keel_err_t last;     /* why the last refusal */
} ka_emit_t;

/* Adds one series: name, value, then (label name, label value) pairs as
 * const char * ending with NULL.  Label names MUST be given sorted (and all
 * of ours sort after "__name__": lower case).  A refusal is counted in em,
 * never fatal: one odd device name must not cost the whole batch. */
void ka_emit(ka_emit_t *em, const char *name, double v, ...);

/* ---- parsers (collect_proc.c) --------------------------------------------- */

/* /proc/stat: node_cpu_seconds_total{cpu,mode} (ticks / clk_tck),
 * node_context_switches_total, node_boot_time_seconds, node_procs_running,
 * node_procs_blocked.  0, or KEEL_EINVAL when no cpuN line was found. */
int ka_parse_stat(ka_emit_t *em, char *text, size_t len, long clk_tck);
/* /proc/loadavg: node_load1, node_load5, node_load15. */
int ka_parse_loadavg(ka_emit_t *em, char *text, size_t len);
/* /proc/meminfo: node_memory_<Key>_bytes for kB fields (times 1024),
 * node_memory_<Key> for the others; "Active(anon)" is "Active_anon". */
int ka_parse_meminfo(ka_emit_t *em, char *text, size_t len);
/* /proc/diskstats: node_disk_{read_bytes,written_bytes,reads_completed,
 * writes_completed,io_time_seconds}_total{device}, skipping what
 * node_exporter's default device-exclude skips (ram, loop, fd, partitions
 * of hd/sd/vd/xvd and nvme). */
int ka_parse_diskstats(ka_emit_t *em, char *text, size_t len);
/* /proc/net/dev: node_network_{receive,transmit}_{bytes,packets,errs,
 * drop}_total{device}, without lo (node_exporter's default). */
int ka_parse_netdev(ka_emit_t *em, char *text, size_t len);
/* /proc/sys/fs/file-nr: node_filefd_allocated, node_filefd_maximum. */
int ka_parse_filenr(ka_emit_t *em, char *text, size_t len);

/* One mounted file system worth reporting. */
typedef struct ka_mount {
  const char *device, *mountpoint, *fstype; /* point into the parsed text */
} ka_mount_t;
/* /proc/self/mounts: the file systems node_exporter's defaults report
 * (Debian's mount-points-exclude and fs-types-exclude), without repeats
 * of the same (device, mountpoint, fstype), and without network and FUSE
 * file systems: statfs on a hung server would block the agent's only
 * thread.  Octal escapes (\040) are undone.  Returns how many were
 * written to out (at most max). */
size_t ka_parse_mounts(char *text, size_t len, ka_mount_t *out, size_t max);
/* 1 when node_exporter's defaults (plus the blocking rule above) leave
 * out a file system of this type, or mounted there. */
int ka_mount_skipped(const char *mountpoint, const char *fstype);
/* 1 when diskstats leaves this device out. */
int ka_disk_skipped(const char *dev);

/* ---- per-process (collect_process.c) ----------------------------------- */

/* A /proc/<pid>/stat line's fields we use. */
typedef struct ka_pstat {
  char comm[16];
  char state;               /* R, S, D, Z (zombie), ... */
  unsigned long long flags; /* the kernel's PF_* bits */
  unsigned long long ticks; /* utime + stime */
  unsigned long long start; /* start time, ticks since boot */
  unsigned long long rss;   /* pages */
} ka_pstat_t;
/* Parses one /proc/<pid>/stat text; 0 or KEEL_EINVAL. */
int ka_parse_pstat(const char *text, size_t len, ka_pstat_t *ps);
#define KA_PF_KTHREAD 0x00200000ULL /* ka_pstat_t.flags: a kernel thread */

/* What --process and --watch-process mean by "a process named NAME": its
 * comm is NAME (the kernel keeps 15 bytes of a name: a longer NAME matches
 * on those), or the basename of its argv[0] is NAME (kernel threads, which
 * have no command line, by comm only).  fn gets each matching process with
 * the index of the first name it matches. */
typedef void (*ka_proc_fn)(void *ud, int pid, size_t name, const ka_pstat_t *ps);
/* One user's names in a walk over the processes. */
typedef struct ka_proc_want {
  const char *const *names;  /* borrowed */
  size_t n;
  ka_proc_fn fn;
  void *ud;
  struct ka_proc_want *also; /* another user the same walk serves (borrowed), or NULL */
  int walked;                /* set by each complete walk that served it; its owner clears it */
} ka_proc_want_t;
/* One walk over the processes under root ("/proc", or a test's copy) for
 * want and every want->also: each process's stat (and command line, when
 * a name needs it) is read once for all of them.  *dirp is the directory
 * stream kept open between walks (NULL before the first; the caller
 * closedir()s it at the end).  Allocates nothing after the first walk.
 * 0, or KEEL_EIO when root cannot be opened (then nothing is walked). */
int ka_proc_scan(const char *root, void **dirp, ka_proc_want_t *want);

typedef struct ka_ptrack {
  int pid;
  int group;
  unsigned long long start, ticks;
} ka_ptrack_t;

/* ---- the collector --------------------------------------------------------- */

enum { KA_PF_STAT, KA_PF_LOADAVG, KA_PF_MEMINFO, KA_PF_DISKSTATS, KA_PF_NETDEV, KA_PF_FILENR,
       KA_PF_MOUNTS, KA_PF_N };

/* The agent's own figures, sent along with the host's. */
typedef struct ka_collect_self {
  uint64_t dropped_batches;   /* keel_agent_metrics_dropped_batches_total */
  uint64_t spooled_batches;   /* keel_agent_metrics_spooled_batches */
  uint64_t events_dropped;    /* keel_agent_events_dropped_batches_total */
  uint64_t events_spooled;    /* keel_agent_events_spooled_batches */
} ka_collect_self_t;

typedef struct ka_collect {
  char root[256];             /* "/proc", or a test's fixture directory */
  int fd[KA_PF_N];            /* kept open, -1 until first used */
  char *rd;                   /* the read buffer (owned) */
  size_t rdcap;
  long clk_tck, page_size;
  const keel_log_t *log;      /* borrowed, may be NULL */
  ka_mount_t mounts[KA_COLLECT_FS_MAX];
  int warned;                 /* bit per KA_PF_* already logged as unreadable */
  int warned_refused;         /* a refused series was logged */
  /* --process */
  const char *pnames[KA_COLLECT_PROC_NAMES]; /* borrowed */
  size_t npnames;
  void *procdir;              /* DIR * of root, kept open (rewinddir) */
  ka_proc_want_t *also;       /* borrowed: served by the --process walk too (main.c: the
                               * watches' --watch-process), or NULL */
  ka_ptrack_t *prev, *cur;    /* owned, KA_COLLECT_PROC_TRACK each */
  size_t nprev;
  int primed;                 /* one scan done */
  int warned_track;
  uint64_t *pticks;           /* per name: the counter, in ticks */
} ka_collect_t;

/* root: "/proc" (NULL means that).  names[0..nnames): --process names,
 * borrowed, at most KA_COLLECT_PROC_NAMES, each 1..15 bytes (the kernel's
 * comm) — longer ones are compared on their first 15 bytes. */
int ka_collect_init(ka_collect_t *c, const char *root, const char *const *names, size_t nnames,
                    const keel_log_t *log, keel_err_t *e);
void ka_collect_free(ka_collect_t *c);

/* One collection at wall time t (ms): every host series into enc, plus
 * the agent's own from self (may be NULL).  A file that cannot be read is
 * left out (logged once), so is a series the encoder refuses (counted,
 * the first logged): returns the number of series added. */
int ka_collect(ka_collect_t *c, keel_mb_enc_t *enc, int64_t t, const ka_collect_self_t *self);

/* Reads root/rel through the kept descriptor slot (opened on first use);
 * *text is the collector's buffer, NUL-terminated.  0, KEEL_EIO,
 * KEEL_ETOOBIG (over KA_COLLECT_READ_MAX), KEEL_ENOMEM. */
int ka_collect_read(ka_collect_t *c, int slot, const char *rel, char **text, size_t *len);

/* Per-process series for c->pnames (collect_process.c). */
int ka_collect_processes(ka_collect_t *c, ka_emit_t *em);

#endif
