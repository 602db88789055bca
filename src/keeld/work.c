#define _GNU_SOURCE
#include "work.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct job {
  k_work_fn fn, done;
  void *arg;
  struct job *next;
} job_t;

struct k_work {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job_t *todo, *todo_tail, *finished;
  int stop, nthreads, pending, efd;
  pthread_t thr[8];
};

static void *worker(void *p) {
  k_work_t *w = p;
  uint64_t one = 1;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    job_t *j;
    while (!w->stop && !w->todo) pthread_cond_wait(&w->cv, &w->mu);
    if (!w->todo) break;
    j = w->todo;
    w->todo = j->next;
    if (!w->todo) w->todo_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    j->fn(j->arg);
    pthread_mutex_lock(&w->mu);
    j->next = w->finished;
    w->finished = j;
    if (write(w->efd, &one, sizeof one) < 0) { /* saturated counter: still readable */
    }
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

k_work_t *k_work_new(int n) {
  k_work_t *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  if (n < 1) n = 1;
  if (n > 8) n = 8;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (int i = 0; i < n; i++)
    if (pthread_create(&w->thr[w->nthreads], NULL, worker, w) == 0) w->nthreads++;
  if (w->efd < 0 || w->nthreads == 0) {
    k_work_free(w);
    return NULL;
  }
  return w;
}

void k_work_free(k_work_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  for (int i = 0; i < w->nthreads; i++) pthread_join(w->thr[i], NULL);
  k_work_poll(w);
  if (w->efd >= 0) close(w->efd);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}

int k_work_submit(k_work_t *w, k_work_fn fn, k_work_fn done, void *arg) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) return -1;
  j->fn = fn;
  j->done = done;
  j->arg = arg;
  pthread_mutex_lock(&w->mu);
  if (w->todo_tail)
    w->todo_tail->next = j;
  else
    w->todo = j;
  w->todo_tail = j;
  w->pending++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int k_work_fd(k_work_t *w) { return w->efd; }
int k_work_pending(k_work_t *w) { return w->pending; }

void k_work_poll(k_work_t *w) {
  uint64_t v;
  job_t *j;
  while (read(w->efd, &v, sizeof v) > 0) {
  }
  pthread_mutex_lock(&w->mu);
  j = w->finished;
  w->finished = NULL;
  pthread_mutex_unlock(&w->mu);
  while (j) {
    job_t *next = j->next;
    w->pending--;
    if (j->done) j->done(j->arg);
    free(j);
    j = next;
  }
}
