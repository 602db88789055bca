/* mspool.c — batches waiting for keeld (agent.h, "mspool"): metric batches
 * (DIR/metrics/<seq>.kmb) and event batches (DIR/events/<seq>.json) share
 * this one spool.
 *
 * DIR/<name>/<seq><ext>, seq 16 lower-case hex digits, one batch per file,
 * sent oldest first.  Bounded in files and bytes; when a new batch would
 * pass a bound the oldest go first, and are counted.
 *
 * Unlike results, batches are not fsync'd: they are worth a disk write
 * while keeld is away, not a disk flush every interval.  A file torn by a
 * power cut fails its check when read back (a metric batch's CRC, an event
 * batch's JSON) and is dropped (and counted). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

/* seq from "<16 hex><ext>"; 0 when the name is not one of ours. */
static int name_seq(const ka_mspool_t *s, const char *name, uint64_t *seq) {
  uint64_t v = 0;
  if (strlen(name) != 16 + strlen(s->ext) || strcmp(name + 16, s->ext)) return 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    v = v << 4 | (uint64_t)d;
  }
  *seq = v;
  return 1;
}

static void file_path(const ka_mspool_t *s, uint64_t seq, char out[PATH_MAX]) {
  ka_path(out, "%s/%016" PRIx64 "%s", s->dir, seq, s->ext);
}

/* Recounts from the directory: first, next, count, bytes.  Removes
 * temporary files a crash left. */
static int rescan(ka_mspool_t *s, keel_err_t *e) {
  char path[PATH_MAX];
  struct dirent *de;
  struct stat st;
  uint64_t seq, lo = UINT64_MAX, hi = 0;
  DIR *d = opendir(s->dir);
  int rc = 0;

  if (!d) {
    rc = keel_err_set(e, KEEL_EIO, "opendir %s: %s", s->dir, strerror(errno));
    goto out;
  }
  s->count = 0;
  s->bytes = 0;
  while ((de = readdir(d))) {
    if (!strncmp(de->d_name, ".tmp", 4)) {
      ka_path(path, "%s/%s", s->dir, de->d_name);
      unlink(path);
      continue;
    }
    if (!name_seq(s, de->d_name, &seq)) continue;
    ka_path(path, "%s/%s", s->dir, de->d_name);
    if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
    s->count++;
    s->bytes += (uint64_t)st.st_size;
    if (seq < lo) lo = seq;
    if (seq > hi) hi = seq;
  }
  if (s->count) {
    s->first = lo;
    if (hi + 1 > s->next) s->next = hi + 1;
  } else {
    s->first = s->next;
  }
out:
  if (d) closedir(d);
  return rc;
}

int ka_mspool_open(ka_mspool_t *s, const char *state_dir, const char *name, const char *ext,
                   uint64_t max_bytes, size_t max_batches, const keel_log_t *log, keel_err_t *e) {
  int rc;

  memset(s, 0, sizeof *s);
  s->log = log;
  s->max_bytes = max_bytes;
  s->max_batches = max_batches;
  snprintf(s->name, sizeof s->name, "%s", name);
  snprintf(s->ext, sizeof s->ext, "%s", ext);
  ka_path(s->dir, "%s/%s", state_dir, name);
  if (mkdir(s->dir, 0700) && errno != EEXIST) {
    rc = keel_err_set(e, KEEL_EIO, "mkdir %s: %s", s->dir, strerror(errno));
    goto out;
  }
  if ((rc = rescan(s, e))) goto out;
  /* The bounds may have been lowered since the files were written. */
  while (s->count && (s->count > s->max_batches || s->bytes > s->max_bytes))
    ka_mspool_drop(s, s->first, 1);
  if (s->count)
    keel_log(log, KEEL_LOG_INFO, "%s: %zu batches (%" PRIu64 " bytes) spooled, to send", s->name,
             s->count, s->bytes);
out:
  return rc;
}

void ka_mspool_drop(ka_mspool_t *s, uint64_t seq, int lost) {
  char path[PATH_MAX];
  struct stat st;

  /* Only the oldest ever goes; a seq already gone (dropped to make room
   * while it was being sent) is nothing to do. */
  if (!s->count || seq != s->first) return;
  file_path(s, seq, path);
  if (stat(path, &st) == 0) {
    s->bytes -= (uint64_t)st.st_size > s->bytes ? s->bytes : (uint64_t)st.st_size;
    unlink(path);
  }
  s->count--;
  if (lost) s->dropped++;
  if (!s->count) {
    s->first = s->next;
    s->bytes = 0;
  } else {
    /* The next file up; gaps (files removed by hand) are found by
     * ka_mspool_oldest, which rescans. */
    s->first = seq + 1;
  }
}

int ka_mspool_put(ka_mspool_t *s, const void *data, size_t len, keel_err_t *e) {
  char tmp[PATH_MAX], dst[PATH_MAX];
  const char *p = data;
  size_t off = 0;
  int fd = -1, rc = 0;

  if (len > s->max_bytes || s->max_batches == 0) {
    s->dropped++;
    goto out;
  }
  while (s->count && (s->count + 1 > s->max_batches || s->bytes + len > s->max_bytes))
    ka_mspool_drop(s, s->first, 1);
  ka_path(tmp, "%s/.tmp", s->dir);
  file_path(s, s->next, dst);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "create %s: %s", tmp, strerror(errno));
    goto out;
  }
  while (off < len) {
    ssize_t w = write(fd, p + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = keel_err_set(e, KEEL_EIO, "write %s: %s", tmp, w < 0 ? strerror(errno) : "short write");
      goto out;
    }
    off += (size_t)w;
  }
  if (close(fd)) {
    fd = -1;
    rc = keel_err_set(e, KEEL_EIO, "write %s: %s", tmp, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(tmp, dst)) {
    rc = keel_err_set(e, KEEL_EIO, "rename to %s: %s", dst, strerror(errno));
    goto out;
  }
  if (!s->count) s->first = s->next;
  s->next++;
  s->count++;
  s->bytes += len;
out:
  if (fd >= 0) close(fd);
  if (rc) {
    unlink(tmp);
    s->dropped++; /* it is not anywhere now */
  }
  return rc;
}

int ka_mspool_oldest(ka_mspool_t *s, uint64_t *seq, size_t max, char **body, size_t *len,
                     keel_err_t *e) {
  char path[PATH_MAX];
  int rc;

  for (int rescanned = 0;; rescanned = 1) {
    if (!s->count) return KEEL_ENOENT;
    file_path(s, s->first, path);
    rc = ka_read_file(path, max, body, len, e);
    if (rc != KEEL_ENOENT || rescanned) break;
    /* Removed behind our back, or a gap: count again from the directory. */
    if ((rc = rescan(s, e))) return rc;
  }
  if (rc == KEEL_ENOENT) rc = keel_err_set(e, KEEL_EIO, "open %s: %s", path, strerror(ENOENT));
  if (!rc) *seq = s->first;
  return rc;
}
