/* inventory.c — what the host is: the inventory object of the protocol. */
#define _GNU_SOURCE /* struct sockaddr_ll via netpacket, getifaddrs */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <mntent.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/version.h"

/* Reads "KEY=value" from os-release, unquoting; out empty when absent. */
static void os_release_get(FILE *f, const char *key, char *out, size_t outsz) {
  char line[512];
  size_t kl = strlen(key);

  out[0] = '\0';
  rewind(f);
  while (fgets(line, sizeof line, f)) {
    char *v;
    size_t n;
    if (strncmp(line, key, kl) || line[kl] != '=') continue;
    v = line + kl + 1;
    n = strcspn(v, "\n");
    v[n] = '\0';
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
      v[n - 1] = '\0';
      v++;
    }
    snprintf(out, outsz, "%s", v);
    return;
  }
}

static json_t *os_info(void) {
  char id[128], name[256], version[128];
  FILE *f = fopen("/etc/os-release", "re");

  if (!f) f = fopen("/usr/lib/os-release", "re");
  id[0] = name[0] = version[0] = '\0';
  if (f) {
    os_release_get(f, "ID", id, sizeof id);
    os_release_get(f, "NAME", name, sizeof name);
    os_release_get(f, "VERSION_ID", version, sizeof version);
    fclose(f);
  }
  keel_utf8_sanitize(name);
  keel_utf8_sanitize(id);
  keel_utf8_sanitize(version);
  return json_pack("{s:s,s:s,s:s}", "id", id, "name", name, "version", version);
}

/* The first "<key> : value" line of a /proc file, as a number or a string. */
static int proc_field(const char *path, const char *key, char *out, size_t outsz) {
  char line[512];
  size_t kl = strlen(key);
  FILE *f = fopen(path, "re");
  int found = 0;

  out[0] = '\0';
  if (!f) return 0;
  while (fgets(line, sizeof line, f)) {
    char *p;
    if (strncmp(line, key, kl)) continue;
    p = line + kl;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != ':' && key[kl - 1] != ' ') continue;
    if (*p == ':') p++;
    while (*p == ' ' || *p == '\t') p++;
    p[strcspn(p, "\n")] = '\0';
    snprintf(out, outsz, "%s", p);
    found = 1;
    break;
  }
  fclose(f);
  return found;
}

static int pseudo_fs(const char *type) {
  static const char *const skip[] = {
      "proc",      "sysfs",   "tmpfs",      "devtmpfs",   "devpts",    "securityfs", "pstore",
      "debugfs",   "tracefs", "configfs",   "fusectl",    "mqueue",    "hugetlbfs",  "bpf",
      "autofs",    "binfmt_misc", "rpc_pipefs", "nsfs",   "efivarfs",  "ramfs",      "squashfs",
      "fuse.lxcfs", "fuse.portal", "selinuxfs", "overlay", NULL};
  if (!strncmp(type, "cgroup", 6)) return 1;
  /* Network and FUSE file systems are left out: statvfs on a hung server
   * would block the agent's only thread. */
  if (!strncmp(type, "nfs", 3) || !strncmp(type, "fuse.", 5) || !strcmp(type, "fuse") ||
      !strcmp(type, "cifs") || !strncmp(type, "smb", 3) || !strcmp(type, "ceph") ||
      !strcmp(type, "glusterfs") || !strcmp(type, "afs") || !strcmp(type, "9p"))
    return 1;
  for (int i = 0; skip[i]; i++)
    if (!strcmp(type, skip[i])) return 1;
  return 0;
}

static json_t *disks(void) {
  json_t *arr = json_array();
  struct mntent me;
  char buf[4096];
  FILE *f = setmntent("/proc/self/mounts", "re");

  if (!arr || !f) goto out;
  while (getmntent_r(f, &me, buf, sizeof buf)) {
    struct statvfs sv;
    char mnt[1024], dev[1024];
    size_t i;
    json_t *d;
    int dup = 0;

    /* overlay is a container's root: keep it there, skip its other uses. */
    if (pseudo_fs(me.mnt_type) && !(strcmp(me.mnt_type, "overlay") == 0 &&
                                     strcmp(me.mnt_dir, "/") == 0))
      continue;
    /* A bind mount or a second mount of the same path would count twice. */
    json_array_foreach(arr, i, d) {
      if (!strcmp(keel_json_str(d, "mount"), me.mnt_dir)) dup = 1;
    }
    if (dup || statvfs(me.mnt_dir, &sv)) continue;
    snprintf(mnt, sizeof mnt, "%s", me.mnt_dir);
    snprintf(dev, sizeof dev, "%s", me.mnt_fsname);
    keel_utf8_sanitize(mnt);
    keel_utf8_sanitize(dev);
    json_array_append_new(
        arr, json_pack("{s:s,s:s,s:s,s:I,s:I}", "mount", mnt, "device", dev, "fstype",
                       me.mnt_type, "size_bytes", (json_int_t)((uint64_t)sv.f_blocks * sv.f_frsize),
                       "free_bytes", (json_int_t)((uint64_t)sv.f_bavail * sv.f_frsize)));
  }
out:
  if (f) endmntent(f);
  return arr;
}

static json_t *iface_get(json_t *arr, const char *name) {
  size_t i;
  json_t *it;
  json_array_foreach(arr, i, it) {
    if (!strcmp(keel_json_str(it, "name"), name)) return it;
  }
  it = json_pack("{s:s,s:[],s:n}", "name", name, "addresses", "mac");
  if (it && json_array_append_new(arr, it)) return NULL;
  return it;
}

static int prefix_len(const struct sockaddr *mask) {
  const uint8_t *b;
  size_t n;
  int bits = 0;

  if (!mask) return 0;
  if (mask->sa_family == AF_INET) {
    b = (const uint8_t *)&((const struct sockaddr_in *)(const void *)mask)->sin_addr;
    n = 4;
  } else {
    b = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)mask)->sin6_addr;
    n = 16;
  }
  for (size_t i = 0; i < n; i++) bits += __builtin_popcount(b[i]);
  return bits;
}

static json_t *interfaces(void) {
  struct ifaddrs *ifa = NULL, *p;
  json_t *arr = json_array();

  if (!arr || getifaddrs(&ifa)) return arr;
  for (p = ifa; p; p = p->ifa_next) {
    json_t *it;
    char addr[INET6_ADDRSTRLEN + 16], text[INET6_ADDRSTRLEN];
    int fam;

    if (!p->ifa_name || (p->ifa_flags & IFF_LOOPBACK)) continue;
    if (!(it = iface_get(arr, p->ifa_name)) || !p->ifa_addr) continue;
    fam = p->ifa_addr->sa_family;
    if (fam == AF_PACKET) {
      const struct sockaddr_ll *ll = (const struct sockaddr_ll *)(const void *)p->ifa_addr;
      if (ll->sll_halen == 6) {
        char mac[18];
        snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", ll->sll_addr[0],
                 ll->sll_addr[1], ll->sll_addr[2], ll->sll_addr[3], ll->sll_addr[4],
                 ll->sll_addr[5]);
        json_object_set_new(it, "mac", json_string(mac));
      }
    } else if (fam == AF_INET || fam == AF_INET6) {
      const void *a = fam == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)(const void *)p->ifa_addr)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)(const void *)p->ifa_addr)->sin6_addr;
      if (!inet_ntop(fam, a, text, sizeof text)) continue;
      snprintf(addr, sizeof addr, "%s/%d", text, prefix_len(p->ifa_netmask));
      json_array_append_new(json_object_get(it, "addresses"), json_string(addr));
    }
  }
  freeifaddrs(ifa);
  return arr;
}

json_t *ka_inventory(void) {
  struct utsname u;
  char host[HOST_NAME_MAX + 1] = "", model[256], mem[64], btime[64];
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  long long memkb = 0, boot = 0;

  gethostname(host, sizeof host);
  host[sizeof host - 1] = '\0';
  keel_utf8_sanitize(host);
  if (uname(&u)) memset(&u, 0, sizeof u);
  if (!proc_field("/proc/cpuinfo", "model name", model, sizeof model))
    proc_field("/proc/cpuinfo", "Model", model, sizeof model); /* arm */
  keel_utf8_sanitize(model);
  if (proc_field("/proc/meminfo", "MemTotal", mem, sizeof mem)) memkb = atoll(mem);
  if (proc_field("/proc/stat", "btime ", btime, sizeof btime)) boot = atoll(btime);
  return json_pack("{s:s,s:o,s:s,s:s,s:{s:I,s:s},s:I,s:o,s:o,s:I,s:s}", "hostname", host, "os",
                   os_info(), "kernel", u.release, "arch", u.machine, "cpu", "count",
                   (json_int_t)(ncpu > 0 ? ncpu : 1), "model", model, "memory_bytes",
                   (json_int_t)memkb * 1024, "disks", disks(), "interfaces", interfaces(),
                   "boot_time", (json_int_t)boot * 1000, "agent_version", KEEL_VERSION);
}

void ka_inventory_digest(char out[65], const json_t *inv) {
  char *text = keel_json_canonical(inv);
  keel_hash_hex(out, text ? text : "", text ? strlen(text) : 0);
  free(text);
}
