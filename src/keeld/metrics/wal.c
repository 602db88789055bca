/* wal.c — segments, records, group commit with a sync thread, replay with
 * tail repair, checkpoints; see wal.h. */
#define _GNU_SOURCE
#include "metrics/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/grow.h"

#define HDR 9 /* u32 len, u32 crc, u8 type */
#define NO_REC SIZE_MAX

/* ---- record encoding (shared by the writer and checkpoints) -------------------------- */

typedef struct recbuf {
  k_bytes_t b;
  size_t start; /* header offset of the open record, NO_REC when none */
  int type;
  uint32_t prev_id;
  int64_t prev_t;
} recbuf_t;

static void rec_close(recbuf_t *r) {
  uint8_t *h;
  size_t len;
  if (r->start == NO_REC) return;
  h = r->b.p + r->start;
  len = r->b.len - r->start - HDR;
  if (len == 0) { /* nothing was put in it */
    r->b.len = r->start;
  } else {
    k_put_u32(h, (uint32_t)len);
    k_put_u32(h + 4, k_crc32c(0, h + 8, len + 1));
  }
  r->start = NO_REC;
}

/* Makes sure a record of type is open with room for need more payload bytes. */
static int rec_room(recbuf_t *r, int type, size_t need) {
  int rc;
  if (need + HDR > K_WAL_RECORD_MAX) return KEEL_ETOOBIG;
  if (r->start != NO_REC &&
      (r->type != type || r->b.len - r->start - HDR + need > K_WAL_RECORD_MAX))
    rec_close(r);
  if ((rc = k_bytes_reserve(&r->b, need + HDR))) return rc;
  if (r->start == NO_REC) {
    r->start = r->b.len;
    r->type = type;
    r->b.p[r->start + 8] = (uint8_t)type;
    r->b.len += HDR;
    r->prev_id = 0;
    r->prev_t = 0;
  }
  return 0;
}

static int rec_series(recbuf_t *r, uint32_t id, const k_label_t *l, size_t n) {
  size_t need = 20;
  int rc;
  for (size_t i = 0; i < n; i++) need += 20 + strlen(l[i].name) + strlen(l[i].value);
  if ((rc = rec_room(r, K_WREC_SERIES, need))) return rc;
  k_bytes_uvarint(&r->b, id);
  k_bytes_uvarint(&r->b, n);
  for (size_t i = 0; i < n; i++) {
    size_t a = strlen(l[i].name), b = strlen(l[i].value);
    k_bytes_uvarint(&r->b, a);
    memcpy(r->b.p + r->b.len, l[i].name, a);
    r->b.len += a;
    k_bytes_uvarint(&r->b, b);
    memcpy(r->b.p + r->b.len, l[i].value, b);
    r->b.len += b;
  }
  return 0;
}

static void recbuf_reset(recbuf_t *r) {
  r->b.len = 0;
  r->start = NO_REC;
}

/* ---- the WAL ------------------------------------------------------------------------- */

typedef struct wseg {
  uint32_t n;
  uint64_t size;
  int64_t maxt; /* newest sample; INT64_MIN when none */
} wseg_t;

struct k_wal {
  const keel_log_t *log;
  char *dir;
  wseg_t *segs; /* on disk, ascending; the last is being written when fd >= 0 */
  size_t nsegs, capsegs;
  int fd;
  uint32_t next_seg;
  uint32_t checkpoint;
  uint64_t ckpt_bytes;
  int replayed;

  recbuf_t rb;
  int64_t batch_maxt;

  uint64_t committed_gen, durable_gen;
  k_wal_stats_t stats;

  /* sync thread; fields below under mu */
  pthread_t thr;
  int thr_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t want_gen, done_gen;
  int stop;
  int cur_fd;          /* the segment being written (the sync thread never closes it) */
  int *retired;        /* segments to fsync once more, then close (the sync thread owns them) */
  size_t nretired, capretired;
  int dir_dirty;       /* a segment was created: fsync the directory */
  int efd;
};

static void *sync_main(void *arg) {
  k_wal_t *w = arg;
  uint64_t one = 1;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    uint64_t g;
    int fd, dirty, *ret;
    size_t nret;
    while (!w->stop && w->want_gen <= w->done_gen && !w->nretired) pthread_cond_wait(&w->cv, &w->mu);
    if (w->want_gen <= w->done_gen && !w->nretired) break; /* stopping, nothing owed */
    g = w->want_gen;
    fd = w->cur_fd;
    dirty = w->dir_dirty;
    w->dir_dirty = 0;
    ret = w->retired;
    nret = w->nretired;
    w->retired = NULL;
    w->nretired = w->capretired = 0;
    pthread_mutex_unlock(&w->mu);

    for (size_t i = 0; i < nret; i++) {
      if (fdatasync(ret[i])) goto fatal;
      close(ret[i]);
    }
    free(ret);
    if (dirty && k_dir_fsync(w->dir)) goto fatal;
    if (fd >= 0 && fdatasync(fd)) goto fatal;

    pthread_mutex_lock(&w->mu);
    if (g > w->done_gen) w->done_gen = g;
    pthread_cond_broadcast(&w->cv);
    if (write(w->efd, &one, sizeof one) < 0) { /* saturated counter: still readable */
    }
    continue;
  fatal:
    /* Durability can no longer be promised for anything (cf. store/sqlite.c). */
    keel_log(w->log, KEEL_LOG_ERROR, "tsdb: fsync of the WAL in %s failed: %s; aborting", w->dir,
             strerror(errno));
    abort();
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int k_wal_open(const char *dir, const keel_log_t *log, k_wal_t **out, keel_err_t *e) {
  k_wal_t *w = calloc(1, sizeof *w);
  int rc = 0;
  *out = NULL;
  if (!w) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  w->log = log;
  w->fd = w->cur_fd = w->efd = -1;
  w->rb.start = NO_REC;
  w->batch_maxt = INT64_MIN;
  w->next_seg = 1;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (asprintf(&w->dir, "%s/wal", dir) < 0) {
    w->dir = NULL;
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  if (mkdir(w->dir, 0700) && errno != EEXIST) {
    rc = keel_err_set(e, KEEL_EIO, "mkdir %s: %s", w->dir, strerror(errno));
    goto out;
  }
  w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->efd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "eventfd: %s", strerror(errno));
    goto out;
  }
  if (pthread_create(&w->thr, NULL, sync_main, w)) {
    rc = keel_err_set(e, KEEL_EIO, "tsdb: cannot start the WAL sync thread");
    goto out;
  }
  w->thr_started = 1;
  *out = w;
  w = NULL;
out:
  if (w) k_wal_close(w);
  return rc;
}

void k_wal_close(k_wal_t *w) {
  if (!w) return;
  if (w->thr_started) {
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thr, NULL);
  }
  for (size_t i = 0; i < w->nretired; i++) close(w->retired[i]);
  free(w->retired);
  if (w->fd >= 0) close(w->fd);
  if (w->efd >= 0) close(w->efd);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  k_bytes_free(&w->rb.b);
  free(w->segs);
  free(w->dir);
  free(w);
}

const char *k_wal_dir(const k_wal_t *w) { return w->dir; }

static int segs_push(k_wal_t *w, uint32_t n, uint64_t size, int64_t maxt) {
  wseg_t *v = keel_grow(w->segs, &w->capsegs, w->nsegs, sizeof *v, 16);
  if (!v) return KEEL_ENOMEM;
  w->segs = v;
  w->segs[w->nsegs++] = (wseg_t){n, size, maxt};
  return 0;
}

/* ---- replay ----------------------------------------------------------------------------- */

typedef struct names {
  uint32_t *v;
  size_t n, cap;
} names_t;

static int u32_cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int names_push(names_t *s, uint32_t v) {
  uint32_t *p = keel_grow(s->v, &s->cap, s->n, sizeof *p, 16);
  if (!p) return -1;
  s->v = p;
  s->v[s->n++] = v;
  return 0;
}

static int parse_u32(const char *s, uint32_t *out) {
  char *end;
  unsigned long v;
  size_t n = strlen(s);
  if (n < 8 || n > 10) return -1; /* "%08u" */
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return -1;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || *end || v == 0 || v > UINT32_MAX) return -1;
  *out = (uint32_t)v;
  return 0;
}

/* Lists segments and checkpoints; removes leftover .tmp files. */
static int wal_list(const char *dir, names_t *segs, names_t *ckpts) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char path[4096];
  if (!d) return -1;
  while ((de = readdir(d))) {
    uint32_t n;
    size_t len = strlen(de->d_name);
    if (de->d_name[0] == '.') continue;
    if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp")) {
      snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
      unlink(path);
    } else if (!strncmp(de->d_name, "checkpoint.", 11) && !parse_u32(de->d_name + 11, &n)) {
      if (names_push(ckpts, n)) goto oom;
    } else if (!parse_u32(de->d_name, &n)) {
      if (names_push(segs, n)) goto oom;
    }
  }
  closedir(d);
  if (segs->n) qsort(segs->v, segs->n, sizeof *segs->v, u32_cmp);
  if (ckpts->n) qsort(ckpts->v, ckpts->n, sizeof *ckpts->v, u32_cmp);
  return 0;
oom:
  closedir(d);
  errno = ENOMEM;
  return -1;
}

typedef struct scratch {
  k_label_t *lab;
  size_t caplab;
  char *str;
  size_t capstr;
  k_wsample_t *smp;
  size_t capsmp;
} scratch_t;

/* One record's payload: 0 ok, 1 does not parse, negative: callback error. */
static int apply_record(int type, const uint8_t *p, size_t len, const k_wal_replay_cb_t *cb,
                        scratch_t *sc, int64_t *maxt) {
  const uint8_t *q = p, *end = p + len;
  int rc;
  if (type == K_WREC_SERIES) {
    while (q < end) {
      uint64_t id, n, a;
      size_t need = 0;
      const uint8_t *q0;
      char *sp;
      if (k_get_uvarint(&q, end, &id) || id == 0 || id > UINT32_MAX ||
          k_get_uvarint(&q, end, &n) || n == 0 || n > 256)
        return 1;
      q0 = q;
      for (uint64_t i = 0; i < 2 * n; i++) {
        if (k_get_uvarint(&q, end, &a) || a > (uint64_t)(end - q)) return 1;
        q += a;
        need += (size_t)a + 1;
      }
      if (n > sc->caplab) {
        k_label_t *l = realloc(sc->lab, n * sizeof *l);
        if (!l) return KEEL_ENOMEM;
        sc->lab = l;
        sc->caplab = n;
      }
      if (need > sc->capstr) {
        char *s = realloc(sc->str, need);
        if (!s) return KEEL_ENOMEM;
        sc->str = s;
        sc->capstr = need;
      }
      q = q0;
      sp = sc->str;
      for (uint64_t i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
          (void)k_get_uvarint(&q, end, &a);
          memcpy(sp, q, a);
          sp[a] = 0;
          if (k == 0) sc->lab[i].name = sp;
          else sc->lab[i].value = sp;
          sp += a + 1;
          q += a;
        }
      }
      if (cb->series && (rc = cb->series(cb->ud, (uint32_t)id, sc->lab, (size_t)n)) < 0) return rc;
    }
    return 0;
  }
  if (type == K_WREC_SAMPLES) {
    size_t k = 0;
    int64_t id = 0, t = 0;
    /* at least 3 bytes per sample: bounds the scratch */
    size_t most = len / 3 + 1;
    if (most > sc->capsmp) {
      k_wsample_t *s = realloc(sc->smp, most * sizeof *s);
      if (!s) return KEEL_ENOMEM;
      sc->smp = s;
      sc->capsmp = most;
    }
    while (q < end) {
      int64_t did, dt;
      uint64_t val;
      if (k_get_varint(&q, end, &did) || k_get_varint(&q, end, &dt) ||
          k_get_uvarint(&q, end, &val) || k >= most)
        return 1;
      id = (int64_t)((uint64_t)id + (uint64_t)did);
      t = (int64_t)((uint64_t)t + (uint64_t)dt);
      if (id <= 0 || id > UINT32_MAX) return 1;
      sc->smp[k].id = (uint32_t)id;
      sc->smp[k].t = t;
      if (val & 1) { /* raw bits follow */
        if (val != 1 || end - q < 8) return 1;
        sc->smp[k].v = k_u2f(k_get_u64(q));
        q += 8;
      } else {
        sc->smp[k].v = (double)k_unzz(val >> 1);
      }
      if (t > *maxt) *maxt = t;
      k++;
    }
    if (cb->samples && k && (rc = cb->samples(cb->ud, sc->smp, k)) < 0) return rc;
    return 0;
  }
  return 1;
}

/* Replays one file; *good is the length of its valid prefix. */
static int replay_file(const char *path, const k_wal_replay_cb_t *cb, scratch_t *sc,
                       uint64_t *good, uint64_t *size, int64_t *maxt, const char **why,
                       keel_err_t *e) {
  int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
  struct stat st;
  const uint8_t *m = NULL;
  uint64_t off = 0;
  *why = NULL;
  *maxt = INT64_MIN;
  if (fd < 0) return keel_err_set(e, KEEL_EIO, "open %s: %s", path, strerror(errno));
  if (fstat(fd, &st)) {
    rc = keel_err_set(e, KEEL_EIO, "stat %s: %s", path, strerror(errno));
    goto out;
  }
  *size = (uint64_t)st.st_size;
  if (st.st_size > 0) {
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      rc = keel_err_set(e, KEEL_EIO, "mmap %s: %s", path, strerror(errno));
      goto out;
    }
    m = p;
  }
  while (off < *size) {
    uint32_t len, crc;
    int type, r;
    if (*size - off < HDR) {
      *why = "truncated record header";
      break;
    }
    len = k_get_u32(m + off);
    crc = k_get_u32(m + off + 4);
    type = m[off + 8];
    if (len == 0 || len > K_WAL_RECORD_MAX || len > *size - off - HDR) {
      *why = len > *size - off - HDR ? "truncated record" : "bad record length";
      break;
    }
    if (k_crc32c(0, m + off + 8, (size_t)len + 1) != crc) {
      *why = "checksum mismatch";
      break;
    }
    r = apply_record(type, m + off + HDR, len, cb, sc, maxt);
    if (r < 0) {
      rc = keel_err_set(e, r, "replay %s: %s", path, keel_strerror(r));
      goto out;
    }
    if (r > 0) {
      *why = "record does not parse";
      break;
    }
    off += HDR + len;
  }
  *good = off;
out:
  if (m) munmap((void *)m, (size_t)st.st_size);
  close(fd);
  return rc;
}

int k_wal_replay(k_wal_t *w, const k_wal_replay_cb_t *cb, keel_err_t *e) {
  names_t segs = {0}, ckpts = {0};
  scratch_t sc = {0};
  char path[4096];
  int rc = 0;
  uint32_t ck = 0;

  if (w->replayed) return keel_err_set(e, KEEL_EINVAL, "tsdb: WAL replayed twice");
  if (wal_list(w->dir, &segs, &ckpts)) {
    rc = keel_err_set(e, KEEL_EIO, "list %s: %s", w->dir, strerror(errno));
    goto out;
  }
  if (ckpts.n) {
    uint64_t good, size;
    int64_t maxt;
    const char *why;
    ck = ckpts.v[ckpts.n - 1];
    snprintf(path, sizeof path, "%s/checkpoint.%08u", w->dir, ck);
    if ((rc = replay_file(path, cb, &sc, &good, &size, &maxt, &why, e))) goto out;
    if (why)
      keel_log(w->log, KEEL_LOG_ERROR, "tsdb: %s: %s at byte %llu; series after it are lost",
               path, why, (unsigned long long)good);
    w->ckpt_bytes = size;
    /* older checkpoints and the segments the newest one replaced: a crash
     * came between its rename and their deletion */
    for (size_t i = 0; i + 1 < ckpts.n; i++) {
      snprintf(path, sizeof path, "%s/checkpoint.%08u", w->dir, ckpts.v[i]);
      unlink(path);
    }
  }
  w->checkpoint = ck;
  for (size_t i = 0; i < segs.n; i++) {
    uint64_t good = 0, size = 0;
    int64_t maxt;
    const char *why;
    snprintf(path, sizeof path, "%s/%08u", w->dir, segs.v[i]);
    if (segs.v[i] <= ck) {
      unlink(path);
      continue;
    }
    if ((rc = replay_file(path, cb, &sc, &good, &size, &maxt, &why, e))) goto out;
    if (why) {
      keel_log(w->log, KEEL_LOG_WARN,
               "tsdb: WAL segment %s: %s at byte %llu of %llu; cutting the segment there", path,
               why, (unsigned long long)good, (unsigned long long)size);
      if (truncate(path, (off_t)good)) {
        rc = keel_err_set(e, KEEL_EIO, "truncate %s: %s", path, strerror(errno));
        goto out;
      }
      size = good;
      w->stats.corrupt_tails++;
    }
    if ((rc = segs_push(w, segs.v[i], size, maxt))) {
      keel_err_set(e, rc, "out of memory");
      goto out;
    }
    if (segs.v[i] >= w->next_seg) w->next_seg = segs.v[i] + 1;
  }
  if (ck >= w->next_seg) w->next_seg = ck + 1;
  /* What replay applied becomes durable now, before anything is
   * acknowledged on top of it (a kill -9 leaves unsynced pages behind). */
  for (size_t i = 0; i < w->nsegs; i++) {
    int fd;
    snprintf(path, sizeof path, "%s/%08u", w->dir, w->segs[i].n);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fdatasync(fd)) {
      rc = keel_err_set(e, KEEL_EIO, "fsync %s: %s", path, strerror(errno));
      if (fd >= 0) close(fd);
      goto out;
    }
    close(fd);
  }
  if (k_dir_fsync(w->dir)) {
    rc = keel_err_set(e, KEEL_EIO, "fsync %s: %s", w->dir, strerror(errno));
    goto out;
  }
  w->replayed = 1;
out:
  free(segs.v);
  free(ckpts.v);
  free(sc.lab);
  free(sc.str);
  free(sc.smp);
  return rc;
}

/* ---- writing ------------------------------------------------------------------------------ */

int k_wal_add_series(k_wal_t *w, uint32_t id, const k_label_t *l, size_t n, keel_err_t *e) {
  int rc = rec_series(&w->rb, id, l, n);
  if (rc) return keel_err_set(e, rc, "tsdb: WAL batch: %s", keel_strerror(rc));
  return 0;
}

int k_wal_add_samples(k_wal_t *w, const k_wsample_t *s, size_t n, keel_err_t *e) {
  recbuf_t *r = &w->rb;
  size_t i = 0;
  int rc;
  while (i < n) {
    /* up to 4096 samples per reservation (28 bytes each at most) */
    size_t k = n - i < 4096 ? n - i : 4096;
    uint8_t *o;
    if ((rc = rec_room(r, K_WREC_SAMPLES, k * 28)))
      return keel_err_set(e, rc, "tsdb: WAL batch: %s", keel_strerror(rc));
    o = r->b.p + r->b.len;
    for (size_t j = 0; j < k; j++, i++) {
      double v = s[i].v;
      o += k_put_uvarint(o, k_zz((int64_t)s[i].id - (int64_t)r->prev_id));
      o += k_put_uvarint(o, k_zz((int64_t)((uint64_t)s[i].t - (uint64_t)r->prev_t)));
      /* an integer (bit for bit: not -0.0) as zigzag << 1; else 1 + raw bits */
      if (v >= -4.6e18 && v <= 4.6e18 && k_f2u((double)(int64_t)v) == k_f2u(v)) {
        o += k_put_uvarint(o, k_zz((int64_t)v) << 1);
      } else {
        *o++ = 1;
        k_put_u64(o, k_f2u(v));
        o += 8;
      }
      r->prev_id = s[i].id;
      r->prev_t = s[i].t;
      if (s[i].t > w->batch_maxt) w->batch_maxt = s[i].t;
    }
    r->b.len = (size_t)(o - r->b.p);
  }
  return 0;
}

void k_wal_discard(k_wal_t *w) {
  recbuf_reset(&w->rb);
  w->batch_maxt = INT64_MIN;
}

size_t k_wal_pending(const k_wal_t *w) { return w->rb.b.len; }

/* Hands the segment being written to the sync thread (one last fsync, then close). */
static int retire_fd(k_wal_t *w) {
  int rc = 0;
  if (w->fd < 0) return 0;
  pthread_mutex_lock(&w->mu);
  int *v = keel_grow(w->retired, &w->capretired, w->nretired, sizeof *v, 4);
  if (!v) {
    rc = KEEL_ENOMEM;
    goto out;
  }
  w->retired = v;
  w->retired[w->nretired++] = w->fd;
  w->cur_fd = -1;
  w->fd = -1;
  pthread_cond_signal(&w->cv);
out:
  pthread_mutex_unlock(&w->mu);
  return rc;
}

static int new_segment(k_wal_t *w, keel_err_t *e) {
  char path[4096];
  int fd;
  snprintf(path, sizeof path, "%s/%08u", w->dir, w->next_seg);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return keel_err_set(e, KEEL_EIO, "create %s: %s", path, strerror(errno));
  if (segs_push(w, w->next_seg, 0, INT64_MIN)) {
    close(fd);
    unlink(path);
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  w->next_seg++;
  w->fd = fd;
  pthread_mutex_lock(&w->mu);
  w->cur_fd = fd;
  w->dir_dirty = 1;
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int k_wal_commit(k_wal_t *w, uint64_t gen, keel_err_t *e) {
  wseg_t *s;
  size_t done = 0, len;
  int rc;

  rec_close(&w->rb);
  if (!w->rb.b.len) return 0;
  if (gen <= w->committed_gen) {
    rc = keel_err_set(e, KEEL_EINVAL, "tsdb: WAL generations must increase");
    goto fail;
  }
  if (!w->replayed) {
    rc = keel_err_set(e, KEEL_EINVAL, "tsdb: WAL commit before replay");
    goto fail;
  }
  if (w->fd >= 0 && w->segs[w->nsegs - 1].size >= K_WAL_SEGMENT_MAX && (rc = retire_fd(w))) {
    keel_err_set(e, rc, "out of memory");
    goto fail;
  }
  if (w->fd < 0 && (rc = new_segment(w, e))) goto fail;
  s = &w->segs[w->nsegs - 1];
  len = w->rb.b.len;
  while (done < len) {
    ssize_t n = write(w->fd, w->rb.b.p + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      /* never leave half a batch: cut back, and write on in a new segment */
      if (done && ftruncate(w->fd, (off_t)s->size))
        keel_log(w->log, KEEL_LOG_ERROR, "tsdb: WAL: cannot cut back a failed write: %s",
                 strerror(errno));
      (void)lseek(w->fd, (off_t)s->size, SEEK_SET);
      (void)retire_fd(w);
      w->stats.write_failures++;
      rc = keel_err_set(e, KEEL_EIO, "tsdb: WAL write: %s", strerror(err));
      goto fail;
    }
    done += (size_t)n;
  }
  s->size += len;
  if (w->batch_maxt > s->maxt) s->maxt = w->batch_maxt;
  recbuf_reset(&w->rb);
  w->batch_maxt = INT64_MIN;
  w->stats.commits++;
  w->committed_gen = gen;
  pthread_mutex_lock(&w->mu);
  w->want_gen = w->committed_gen;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return 0;
fail:
  k_wal_discard(w);
  return rc;
}

uint64_t k_wal_committed_gen(const k_wal_t *w) { return w->committed_gen; }
uint64_t k_wal_durable_gen(const k_wal_t *w) { return w->durable_gen; }
int k_wal_sync_fd(const k_wal_t *w) { return w->efd; }

void k_wal_sync_poll(k_wal_t *w) {
  uint64_t v;
  while (read(w->efd, &v, sizeof v) > 0) {
  }
  pthread_mutex_lock(&w->mu);
  w->durable_gen = w->done_gen;
  pthread_mutex_unlock(&w->mu);
}

void k_wal_sync_wait(k_wal_t *w) {
  pthread_mutex_lock(&w->mu);
  while (w->done_gen < w->committed_gen || w->nretired) pthread_cond_wait(&w->cv, &w->mu);
  w->durable_gen = w->done_gen;
  pthread_mutex_unlock(&w->mu);
}

void k_wal_stats(const k_wal_t *w, k_wal_stats_t *o) {
  *o = w->stats;
  o->bytes = w->ckpt_bytes;
  for (size_t i = 0; i < w->nsegs; i++) o->bytes += w->segs[i].size;
  o->segments = w->nsegs;
}

/* ---- truncation ---------------------------------------------------------------------------- */

int k_wal_cut_begin(k_wal_t *w, int64_t before, uint32_t *upto, keel_err_t *e) {
  int rc;
  *upto = 0;
  if ((rc = retire_fd(w))) return keel_err_set(e, rc, "out of memory");
  for (size_t i = 0; i < w->nsegs && w->segs[i].maxt < before; i++) *upto = w->segs[i].n;
  return 0;
}

void k_wal_cut_end(k_wal_t *w, uint32_t upto) {
  size_t k = 0;
  char path[4096];
  struct stat st;
  while (k < w->nsegs && w->segs[k].n <= upto) k++;
  if (k) memmove(w->segs, w->segs + k, (w->nsegs - k) * sizeof *w->segs);
  w->nsegs -= k;
  w->checkpoint = upto;
  snprintf(path, sizeof path, "%s/checkpoint.%08u", w->dir, upto);
  w->ckpt_bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int k_wal_checkpoint(const char *waldir, uint32_t n, k_wal_series_next next, void *ud,
                     const keel_log_t *log, keel_err_t *e) {
  char path[4096], tmp[sizeof path + 8];
  recbuf_t r = {.start = NO_REC};
  names_t segs = {0}, ckpts = {0};
  int fd = -1, rc = 0;
  uint32_t id;
  const k_label_t *l;
  size_t nl;

  if ((size_t)snprintf(path, sizeof path, "%s/checkpoint.%08u", waldir, n) >= sizeof path)
    return keel_err_set(e, KEEL_EINVAL, "tsdb: WAL directory path too long");
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "create %s: %s", tmp, strerror(errno));
    goto out;
  }
  for (;;) {
    int more = next(ud, &id, &l, &nl);
    if (more < 0) {
      rc = keel_err_set(e, more, "tsdb: checkpoint: %s", keel_strerror(more));
      goto out;
    }
    if (!more) break;
    if ((rc = rec_series(&r, id, l, nl))) {
      keel_err_set(e, rc, "tsdb: checkpoint: %s", keel_strerror(rc));
      goto out;
    }
    if (r.b.len >= (4u << 20)) {
      rec_close(&r);
      if (k_write_all(fd, r.b.p, r.b.len)) goto io;
      recbuf_reset(&r);
    }
  }
  rec_close(&r);
  if (k_write_all(fd, r.b.p, r.b.len) || fdatasync(fd)) goto io;
  close(fd);
  fd = -1;
  if (rename(tmp, path) || k_dir_fsync(waldir)) goto io;
  /* the checkpoint is in place: what it replaces can go */
  if (wal_list(waldir, &segs, &ckpts) == 0) {
    for (size_t i = 0; i < segs.n && segs.v[i] <= n; i++) {
      snprintf(tmp, sizeof tmp, "%s/%08u", waldir, segs.v[i]);
      unlink(tmp);
    }
    for (size_t i = 0; i < ckpts.n; i++)
      if (ckpts.v[i] < n) {
        snprintf(tmp, sizeof tmp, "%s/checkpoint.%08u", waldir, ckpts.v[i]);
        unlink(tmp);
      }
  }
  keel_log(log, KEEL_LOG_DEBUG, "tsdb: WAL checkpoint %08u written", n);
  goto out;
io:
  rc = keel_err_set(e, KEEL_EIO, "tsdb: checkpoint %s: %s", path, strerror(errno));
out:
  if (fd >= 0) {
    close(fd);
    unlink(tmp);
  }
  k_bytes_free(&r.b);
  free(segs.v);
  free(ckpts.v);
  return rc;
}
