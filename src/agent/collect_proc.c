/* collect_proc.c — parsers of the /proc files the collector reads
 * (collect.h).  Each takes the file's text, cuts it in place, and emits
 * node_exporter's series for it.  Nothing here allocates or does I/O. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collect.h"

/* The next line of [*cur, end), NUL-terminated in place; NULL at the end. */
static char *next_line(char **cur, char *end) {
  char *s = *cur, *nl;
  if (s >= end) return NULL;
  nl = memchr(s, '\n', (size_t)(end - s));
  if (nl) {
    *nl = '\0';
    *cur = nl + 1;
  } else {
    *cur = end; /* the buffer is NUL-terminated at end */
  }
  return s;
}

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The next blank-separated field of *s, NUL-terminated in place; NULL when
 * there is none. */
static char *next_field(char **s) {
  char *p = *s, *f;
  while (blank(*p)) p++;
  if (!*p) return NULL;
  f = p;
  while (*p && !blank(*p)) p++;
  if (*p) *p++ = '\0';
  *s = p;
  return f;
}

/* A whole-field unsigned decimal; 0 when it is not one. */
static int num(const char *f, unsigned long long *out) {
  char *end;
  if (!f || *f < '0' || *f > '9') return 0;
  *out = strtoull(f, &end, 10);
  return *end == '\0';
}

int ka_parse_stat(ka_emit_t *em, char *text, size_t len, long clk_tck) {
  static const char *const modes[] = {"user",    "nice",    "system", "idle",
                                      "iowait",  "irq",     "softirq", "steal"};
  char *cur = text, *end = text + len, *line;
  double tck = clk_tck > 0 ? (double)clk_tck : 100.0;
  int cpus = 0;

  while ((line = next_line(&cur, end))) {
    char *p = line, *key = next_field(&p), *f;
    unsigned long long v;
    if (!key) continue;
    if (!strncmp(key, "cpu", 3) && key[3] >= '0' && key[3] <= '9') {
      /* cpuN user nice system idle iowait irq softirq steal guest guest_nice:
       * node_exporter reports the first eight (guest time is also in user). */
      for (size_t m = 0; m < sizeof modes / sizeof modes[0] && (f = next_field(&p)); m++) {
        if (!num(f, &v)) break;
        ka_emit(em, "node_cpu_seconds_total", (double)v / tck, "cpu", key + 3, "mode", modes[m],
                NULL);
      }
      cpus++;
    } else if (!strcmp(key, "ctxt") && num(next_field(&p), &v)) {
      ka_emit(em, "node_context_switches_total", (double)v, NULL);
    } else if (!strcmp(key, "btime") && num(next_field(&p), &v)) {
      ka_emit(em, "node_boot_time_seconds", (double)v, NULL);
    } else if (!strcmp(key, "procs_running") && num(next_field(&p), &v)) {
      ka_emit(em, "node_procs_running", (double)v, NULL);
    } else if (!strcmp(key, "procs_blocked") && num(next_field(&p), &v)) {
      ka_emit(em, "node_procs_blocked", (double)v, NULL);
    }
  }
  return cpus ? 0 : KEEL_EINVAL;
}

int ka_parse_loadavg(ka_emit_t *em, char *text, size_t len) {
  static const char *const names[] = {"node_load1", "node_load5", "node_load15"};
  char *p = text, *f;
  (void)len;
  for (int i = 0; i < 3; i++) {
    char *end;
    double v;
    if (!(f = next_field(&p))) return KEEL_EINVAL;
    v = strtod(f, &end);
    if (end == f || *end) return KEEL_EINVAL;
    ka_emit(em, names[i], v, NULL);
  }
  return 0;
}

int ka_parse_meminfo(ka_emit_t *em, char *text, size_t len) {
  char *cur = text, *end = text + len, *line;
  int n = 0;

  while ((line = next_line(&cur, end))) {
    char name[128], *p = line, *key = next_field(&p), *f, *unit;
    unsigned long long v;
    size_t kl, o = 0;
    if (!key || (kl = strlen(key)) < 2 || key[kl - 1] != ':') continue;
    key[--kl] = '\0';
    if (!num(f = next_field(&p), &v)) continue;
    unit = next_field(&p);
    /* node_exporter: "Active(anon)" -> "Active_anon"; kB -> bytes. */
    o = (size_t)snprintf(name, sizeof name, "node_memory_");
    for (size_t i = 0; i < kl && o < sizeof name - 8; i++) {
      if (key[i] == '(') name[o++] = '_';
      else if (key[i] != ')') name[o++] = key[i];
    }
    name[o] = '\0';
    if (unit && !strcmp(unit, "kB")) {
      memcpy(name + o, "_bytes", 7);
      ka_emit(em, name, (double)v * 1024.0, NULL);
    } else {
      ka_emit(em, name, (double)v, NULL);
    }
    n++;
  }
  return n ? 0 : KEEL_EINVAL;
}

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/* node_exporter's default: ^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$ */
int ka_disk_skipped(const char *d) {
  static const char *const pre[] = {"ram", "loop", "fd", NULL};
  for (int i = 0; pre[i]; i++) {
    size_t n = strlen(pre[i]);
    if (!strncmp(d, pre[i], n) && all_digits(d + n)) return 1;
  }
  {
    const char *p = d;
    if (!strncmp(p, "xvd", 3)) p += 3;
    else if ((p[0] == 'h' || p[0] == 's' || p[0] == 'v') && p[1] == 'd') p += 2;
    else p = NULL;
    if (p && *p >= 'a' && *p <= 'z' && all_digits(p + 1)) return 1;
  }
  if (!strncmp(d, "nvme", 4)) {
    const char *p = d + 4;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != 'n' || *p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != 'p') return 0;
    return all_digits(p);
  }
  return 0;
}

int ka_parse_diskstats(ka_emit_t *em, char *text, size_t len) {
  char *cur = text, *end = text + len, *line;

  while ((line = next_line(&cur, end))) {
    char *p = line, *dev, *f;
    unsigned long long v[11];
    int k = 0;
    if (!next_field(&p) || !next_field(&p) || !(dev = next_field(&p))) continue;
    while (k < 11 && (f = next_field(&p)) && num(f, &v[k])) k++;
    if (k < 10 || ka_disk_skipped(dev)) continue;
    /* Sectors are 512 bytes in this interface, whatever the device's. */
    ka_emit(em, "node_disk_io_time_seconds_total", (double)v[9] / 1000.0, "device", dev, NULL);
    ka_emit(em, "node_disk_read_bytes_total", (double)v[2] * 512.0, "device", dev, NULL);
    ka_emit(em, "node_disk_reads_completed_total", (double)v[0], "device", dev, NULL);
    ka_emit(em, "node_disk_writes_completed_total", (double)v[4], "device", dev, NULL);
    ka_emit(em, "node_disk_written_bytes_total", (double)v[6] * 512.0, "device", dev, NULL);
  }
  return 0;
}

int ka_parse_netdev(ka_emit_t *em, char *text, size_t len) {
  /* Columns of the receive and transmit halves we report, by index. */
  static const struct {
    int col;
    const char *name;
  } cols[] = {
      {0, "node_network_receive_bytes_total"},  {1, "node_network_receive_packets_total"},
      {2, "node_network_receive_errs_total"},   {3, "node_network_receive_drop_total"},
      {8, "node_network_transmit_bytes_total"}, {9, "node_network_transmit_packets_total"},
      {10, "node_network_transmit_errs_total"}, {11, "node_network_transmit_drop_total"},
  };
  char *cur = text, *end = text + len, *line;

  while ((line = next_line(&cur, end))) {
    char *colon = strchr(line, ':'), *name = line, *p, *f;
    unsigned long long v[16];
    int k = 0;
    /* The two header lines have '|' and no "name:" first field. */
    if (!colon || strchr(line, '|')) continue;
    *colon = '\0';
    while (*name == ' ' || *name == '\t') name++;
    if (!*name || !strcmp(name, "lo")) continue;
    p = colon + 1;
    while (k < 16 && (f = next_field(&p)) && num(f, &v[k])) k++;
    if (k < 16) continue;
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
      ka_emit(em, cols[i].name, (double)v[cols[i].col], "device", name, NULL);
  }
  return 0;
}

int ka_parse_filenr(ka_emit_t *em, char *text, size_t len) {
  char *p = text;
  unsigned long long a, u, m;
  (void)len;
  if (!num(next_field(&p), &a) || !num(next_field(&p), &u) || !num(next_field(&p), &m))
    return KEEL_EINVAL;
  ka_emit(em, "node_filefd_allocated", (double)a, NULL);
  ka_emit(em, "node_filefd_maximum", (double)m, NULL);
  return 0;
}

/* ---- mounts --------------------------------------------------------------- */

int ka_mount_skipped(const char *mnt, const char *type) {
  /* Debian's node_exporter 1.5 defaults:
   * mount-points-exclude
   *   ^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)
   * fs-types-exclude ^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|
   *   hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|
   *   squashfs|sysfs|tracefs)$ */
  static const char *const dirs[] = {"/dev", "/proc", "/run", "/sys", "/mnt", "/media", NULL};
  static const char *const deep[] = {"/var/lib/docker/", "/var/lib/containers/storage/", NULL};
  static const char *const types[] = {
      "autofs",  "binfmt_misc", "bpf",        "cgroup",     "cgroup2",   "configfs", "debugfs",
      "devpts",  "devtmpfs",    "fusectl",    "hugetlbfs",  "iso9660",   "mqueue",   "nsfs",
      "overlay", "proc",        "procfs",     "pstore",     "rpc_pipefs", "securityfs",
      "selinuxfs", "squashfs",  "sysfs",      "tracefs",
      /* Ours: network and FUSE file systems, whose statfs can hang (a dead
       * server) and would stall the agent's only thread. */
      "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs", "lustre", "fuse",
      "fuseblk", NULL};
  for (int i = 0; dirs[i]; i++) {
    size_t n = strlen(dirs[i]);
    if (!strncmp(mnt, dirs[i], n) && (mnt[n] == '\0' || mnt[n] == '/')) return 1;
  }
  for (int i = 0; deep[i]; i++) {
    size_t n = strlen(deep[i]);
    if (!strncmp(mnt, deep[i], n) && mnt[n]) return 1;
  }
  if (!strncmp(type, "fuse.", 5)) return 1;
  for (int i = 0; types[i]; i++)
    if (!strcmp(type, types[i])) return 1;
  return 0;
}

/* Undoes the kernel's octal escapes (\040 space, \011 tab, \012 newline,
 * \134 backslash) in place. */
static void unescape(char *s) {
  char *o = s;
  for (; *s; s++) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
        s[3] <= '7') {
      char c = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      if (c) {
        *o++ = c;
        s += 3;
        continue;
      }
    }
    *o++ = *s;
  }
  *o = '\0';
}

size_t ka_parse_mounts(char *text, size_t len, ka_mount_t *out, size_t max) {
  char *cur = text, *end = text + len, *line;
  size_t n = 0;

  while (n < max && (line = next_line(&cur, end))) {
    char *p = line, *dev = next_field(&p), *mnt = next_field(&p), *type = next_field(&p);
    size_t i;
    if (!dev || !mnt || !type) continue;
    unescape(dev);
    unescape(mnt);
    if (mnt[0] != '/' || ka_mount_skipped(mnt, type)) continue;
    for (i = 0; i < n; i++)
      if (!strcmp(out[i].mountpoint, mnt) && !strcmp(out[i].device, dev) &&
          !strcmp(out[i].fstype, type))
        break;
    if (i < n) continue;
    out[n++] = (ka_mount_t){dev, mnt, type};
  }
  return n;
}
