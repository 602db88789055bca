#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "keel/time.h"

typedef struct slot {
  k_fd_fn fn;
  void *ud;
} slot_t;

struct k_loop {
  int epfd;
  slot_t *slots;
  int nslots;
  int stop;
  k_sleep_fn before_sleep;
  void *bs_ud;
  k_cron_fn cron;
  void *cron_ud;
  int cron_ms;
  int64_t next_cron;
};

k_loop_t *k_loop_new(void) {
  k_loop_t *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  l->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (l->epfd < 0) {
    free(l);
    return NULL;
  }
  return l;
}

void k_loop_free(k_loop_t *l) {
  if (!l) return;
  close(l->epfd);
  free(l->slots);
  free(l);
}

int k_loop_add_fd(k_loop_t *l, int fd, uint32_t events, k_fd_fn fn, void *ud) {
  struct epoll_event ev = {.events = events, .data.fd = fd};
  if (fd >= l->nslots) {
    int n = l->nslots ? l->nslots : 64;
    slot_t *p;
    while (n <= fd) n *= 2;
    p = realloc(l->slots, (size_t)n * sizeof *p);
    if (!p) return -1;
    memset(p + l->nslots, 0, (size_t)(n - l->nslots) * sizeof *p);
    l->slots = p;
    l->nslots = n;
  }
  if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -1;
  l->slots[fd].fn = fn;
  l->slots[fd].ud = ud;
  return 0;
}

void k_loop_del_fd(k_loop_t *l, int fd) {
  if (fd < 0 || fd >= l->nslots || !l->slots[fd].fn) return;
  epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
  l->slots[fd].fn = NULL;
}

void k_loop_set_before_sleep(k_loop_t *l, k_sleep_fn fn, void *ud) {
  l->before_sleep = fn;
  l->bs_ud = ud;
}

void k_loop_set_cron(k_loop_t *l, int period_ms, k_cron_fn fn, void *ud) {
  l->cron = fn;
  l->cron_ud = ud;
  l->cron_ms = period_ms;
  l->next_cron = keel_mono_ms() + period_ms;
}

void k_loop_stop(k_loop_t *l) { l->stop = 1; }

void k_loop_run(k_loop_t *l) {
  struct epoll_event evs[64];

  l->stop = 0;
  while (!l->stop) {
    int64_t wait = -1, now;
    int n;

    if (l->before_sleep) wait = l->before_sleep(l, l->bs_ud);
    if (l->stop) break;
    if (l->cron) {
      int64_t until = l->next_cron - keel_mono_ms();
      if (until < 0) until = 0;
      if (wait < 0 || until < wait) wait = until;
    }
    n = epoll_wait(l->epfd, evs, 64, wait > 1000000 ? 1000000 : (int)wait);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd < l->nslots && l->slots[fd].fn) l->slots[fd].fn(l, fd, evs[i].events, l->slots[fd].ud);
    }
    now = keel_mono_ms();
    if (l->cron && now >= l->next_cron) {
      l->cron(l, l->cron_ud);
      l->next_cron = now + l->cron_ms;
    }
  }
}
