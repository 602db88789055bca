/* watch_file.c — --watch-file PATH: file.changed events (watch.h).
 *
 * inotify watches PATH's directory, not PATH: a file replaced by rename
 * (how editors and configuration tools write) is a new inode, which a
 * watch on the old one would never see.  On the directory, IN_MODIFY,
 * IN_CLOSE_WRITE and IN_ATTRIB report changes to the file's content and
 * metadata, IN_CREATE / IN_DELETE / IN_MOVED_FROM / IN_MOVED_TO its
 * replacement or removal (filtered by name), IN_DELETE_SELF / IN_MOVE_SELF
 * the directory itself going away (then it is watched again, by path, once
 * it is back).  An event only marks the file; the next tick looks at it
 * (stat, and BLAKE2b-256 of the content of a regular file up to 16 MiB)
 * and compares with what was last reported, so a burst of writes within a
 * tick is one event, and a write that changed nothing is none:
 *
 *   created   it did not exist, now does
 *   deleted   it existed, now does not
 *   modified  the content differs (the hash; without one, size, mtime or inode)
 *   attrib    the same content, other metadata (mode, owner, mtime, inode)
 *
 * PATH is taken as given: through a symlink the content is the target's,
 * but only changes in PATH's own directory are noticed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/metricbatch.h"
#include "watch.h"

#define DIR_MASK                                                                                \
  (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
   IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* What a path was when last looked at. */
typedef struct fsnap {
  int exists;               /* -1 not known (nothing reported yet), 0, 1 */
  int hashed;               /* hash is the content's */
  uint8_t hash[KEEL_HASH_BYTES];
  uint64_t size, ino, dev;
  uint32_t mode, uid, gid;
  int64_t mtime_ns;
} fsnap_t;

struct ka_wfile {
  const char *path;         /* borrowed from the options */
  char dirpath[KA_EV_SUBJECT_MAX + 1]; /* its directory */
  const char *base;         /* its last component, in path */
  int wd;                   /* the directory's inotify watch, -1 when not watched */
  int dirty;                /* something happened to it since the last tick */
  int warned;               /* the directory could not be watched: said once */
  fsnap_t known;            /* what was last reported (or first seen) */
};

/* BLAKE2b-256 of fd's content, read to EOF; 0, or -1 when it could not be
 * read whole or holds more than KA_FILE_HASH_MAX bytes (it grew). */
static int hash_fd(int fd, uint8_t out[KEEL_HASH_BYTES]) {
  crypto_generichash_state st;
  char buf[16384];
  uint64_t total = 0;
  ssize_t n;

  crypto_generichash_init(&st, NULL, 0, KEEL_HASH_BYTES);
  for (;;) {
    n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    if ((total += (uint64_t)n) > KA_FILE_HASH_MAX) return -1;
    crypto_generichash_update(&st, (const unsigned char *)buf, (unsigned long long)n);
  }
  crypto_generichash_final(&st, out, KEEL_HASH_BYTES);
  return 0;
}

static void snap(const char *path, fsnap_t *s) {
  struct stat st;
  int fd;

  memset(s, 0, sizeof *s);
  if (stat(path, &st)) return; /* gone (or unreachable): does not exist for us */
  s->exists = 1;
  s->size = (uint64_t)st.st_size;
  s->ino = (uint64_t)st.st_ino;
  s->dev = (uint64_t)st.st_dev;
  s->mode = (uint32_t)st.st_mode;
  s->uid = (uint32_t)st.st_uid;
  s->gid = (uint32_t)st.st_gid;
  s->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  if (!S_ISREG(st.st_mode) || s->size > KA_FILE_HASH_MAX) return;
  /* O_NONBLOCK: replaced by a FIFO since the stat, it must not hang us. */
  fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && hash_fd(fd, s->hash) == 0) s->hashed = 1;
  close(fd);
}

/* The change from a to b, or NULL for none. */
static const char *classify(const fsnap_t *a, const fsnap_t *b) {
  int content;

  if (a->exists < 0) return NULL; /* first sight: the state, not a change */
  if (!a->exists) return b->exists ? "created" : NULL;
  if (!b->exists) return "deleted";
  if (a->hashed && b->hashed)
    content = memcmp(a->hash, b->hash, sizeof a->hash) != 0;
  else
    content = a->hashed != b->hashed || a->size != b->size || a->mtime_ns != b->mtime_ns ||
              a->ino != b->ino || a->dev != b->dev;
  if (content) return "modified";
  if (a->mode != b->mode || a->uid != b->uid || a->gid != b->gid || a->mtime_ns != b->mtime_ns ||
      a->ino != b->ino || a->dev != b->dev)
    return "attrib";
  return NULL;
}

static int snap_equal(const fsnap_t *a, const fsnap_t *b) {
  if (a->exists != b->exists) return 0;
  if (a->exists <= 0) return 1;
  return a->hashed == b->hashed && (!a->hashed || !memcmp(a->hash, b->hash, sizeof a->hash)) &&
         a->size == b->size && a->ino == b->ino && a->dev == b->dev && a->mode == b->mode &&
         a->uid == b->uid && a->gid == b->gid && a->mtime_ns == b->mtime_ns;
}

int ka_wfile_init(ka_watch_t *w, const char *const *paths, size_t n, keel_err_t *e) {
  int rc = 0;

  if (!n) goto out;
  if (!(w->files = calloc(n, sizeof *w->files))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    ka_wfile_t *f = &w->files[i];
    const char *p = paths[i], *slash = strrchr(p, '/');
    size_t plen = strlen(p);
    /* The path is the events' subject: keeld's bound. */
    if (p[0] != '/' || plen > KA_EV_SUBJECT_MAX || p[plen - 1] == '/' ||
        !keel_mb_utf8_ok(p, plen) || !strcmp(slash + 1, ".") || !strcmp(slash + 1, "..")) {
      rc = keel_err_set(e, KEEL_EINVAL,
                        "--watch-file '%.200s': expected an absolute path of UTF-8 naming a file, "
                        "at most %d bytes",
                        p, KA_EV_SUBJECT_MAX);
      goto out;
    }
    if ((rc = ka_watch_once("--watch-file", paths, i, e))) goto out;
    f->path = p;
    f->base = slash + 1;
    if (slash == p) strcpy(f->dirpath, "/");
    else snprintf(f->dirpath, sizeof f->dirpath, "%.*s", (int)(slash - p), p);
    f->wd = -1;
    f->dirty = 1; /* the first tick looks at it */
    f->known.exists = -1;
    w->nfiles++;
  }
  w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->ifd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "--watch-file: inotify_init1: %s", strerror(errno));
    goto out;
  }
out:
  return rc;
}

void ka_wfile_free(ka_watch_t *w) {
  if (w->ifd >= 0) close(w->ifd);
  w->ifd = -1;
  free(w->files);
  w->files = NULL;
  w->nfiles = 0;
}

void ka_wfile_read(ka_watch_t *w) {
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));

  for (;;) {
    ssize_t n = read(w->ifd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EAGAIN: all read */
    for (char *p = buf; p < buf + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      int gone = (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) != 0;
      p += sizeof *ev + ev->len;
      for (size_t i = 0; i < w->nfiles; i++) {
        ka_wfile_t *f = &w->files[i];
        if (ev->mask & IN_Q_OVERFLOW) {
          f->dirty = 1; /* events were lost: look at everything */
        } else if (f->wd == ev->wd && gone) {
          f->wd = -1; /* watched again by path at the next tick */
          f->dirty = 1;
        } else if (f->wd == ev->wd && ev->len && !strcmp(ev->name, f->base)) {
          f->dirty = 1;
        }
      }
      /* A moved directory keeps its watch: drop it, PATH is elsewhere now. */
      if (ev->mask & IN_MOVE_SELF) inotify_rm_watch(w->ifd, ev->wd);
    }
  }
}

static void emit_change(ka_watch_t *w, const ka_wfile_t *f, const char *change, const fsnap_t *s) {
  char hex[KEEL_HASH_HEX];
  json_t *d = json_pack("{s:s,s:s}", "path", f->path, "change", change);

  if (d && s->exists) {
    json_object_set_new(d, "size", json_integer((json_int_t)s->size));
    if (s->hashed) {
      keel_hex(hex, s->hash, sizeof s->hash);
      json_object_set_new(d, "blake2b", json_string(hex));
    }
  }
  ka_watch_emit(w, "file.changed", f->path, "path", f->path, d);
}

void ka_wfile_tick(ka_watch_t *w) {
  fsnap_t now;

  for (size_t i = 0; i < w->nfiles; i++) {
    ka_wfile_t *f = &w->files[i];
    const char *change;
    if (f->wd < 0) {
      /* Watched once its directory exists; the file may have come with it. */
      int wd = inotify_add_watch(w->ifd, f->dirpath, DIR_MASK);
      if (wd >= 0) {
        f->wd = wd;
        f->dirty = 1;
        f->warned = 0;
      } else if (errno != ENOENT && errno != ENOTDIR && !f->warned) {
        keel_log(w->log, KEEL_LOG_WARN, "watch: cannot watch %s (%s): retrying each tick",
                 f->dirpath, strerror(errno));
        f->warned = 1;
      }
    }
    if (!f->dirty) continue;
    f->dirty = 0;
    snap(f->path, &now);
    if ((change = classify(&f->known, &now))) emit_change(w, f, change, &now);
    if (!snap_equal(&f->known, &now)) {
      f->known = now;
      w->state_dirty = 1;
    }
  }
}

json_t *ka_wfile_state(const ka_watch_t *w) {
  json_t *o = json_object();
  char hex[KEEL_HASH_HEX];

  for (size_t i = 0; o && i < w->nfiles; i++) {
    const fsnap_t *s = &w->files[i].known;
    json_t *f;
    if (s->exists < 0) continue;
    f = json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "exists", s->exists, "size",
                  (json_int_t)s->size, "ino", (json_int_t)s->ino, "dev", (json_int_t)s->dev,
                  "mode", (json_int_t)s->mode, "uid", (json_int_t)s->uid, "gid",
                  (json_int_t)s->gid, "mtime_ns", (json_int_t)s->mtime_ns);
    if (f && s->hashed) {
      keel_hex(hex, s->hash, sizeof s->hash);
      json_object_set_new(f, "blake2b", json_string(hex));
    }
    json_object_set_new(o, w->files[i].path, f);
  }
  return o;
}

static uint64_t num(const json_t *o, const char *k) {
  return (uint64_t)json_integer_value(json_object_get(o, k));
}

void ka_wfile_restore(ka_watch_t *w, const json_t *saved) {
  for (size_t i = 0; i < w->nfiles; i++) {
    const json_t *f = json_object_get(saved, w->files[i].path);
    fsnap_t *s = &w->files[i].known;
    const char *h;
    if (!json_is_object(f) || !json_is_boolean(json_object_get(f, "exists"))) continue;
    memset(s, 0, sizeof *s);
    s->exists = json_is_true(json_object_get(f, "exists"));
    s->size = num(f, "size");
    s->ino = num(f, "ino");
    s->dev = num(f, "dev");
    s->mode = (uint32_t)num(f, "mode");
    s->uid = (uint32_t)num(f, "uid");
    s->gid = (uint32_t)num(f, "gid");
    s->mtime_ns = (int64_t)num(f, "mtime_ns");
    h = keel_json_str(f, "blake2b");
    s->hashed = h && keel_unhex(s->hash, sizeof s->hash, h) == 0;
  }
}
