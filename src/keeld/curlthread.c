/* curlthread.c — a curl multi thread with an eventfd handback (curlthread.h). */
#define _GNU_SOURCE
#include "curlthread.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void *run(void *arg) {
  k_cthread_t *t = arg;
  for (;;) {
    CURLMsg *m;
    int stop, running = 0, left;
    long wait;

    pthread_mutex_lock(&t->mu);
    stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    if (stop) break;
    wait = t->ops->turn(t->ud);
    curl_multi_perform(t->multi, &running);
    while ((m = curl_multi_info_read(t->multi, &left))) {
      char *priv = NULL;
      if (m->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
      if (priv) t->ops->done(t->ud, priv, m->data.result);
    }
    curl_multi_poll(t->multi, NULL, 0, wait < 0 ? 0 : (int)wait, NULL);
  }
  t->ops->stopped(t->ud);
  return NULL;
}

int k_cthread_start(k_cthread_t *t, const char *what, long max_host_conns, const k_cthread_ops_t *ops,
                    void *ud, keel_err_t *e) {
  int rc = 0;

  memset(t, 0, sizeof *t);
  t->efd = -1;
  t->ops = ops;
  t->ud = ud;
  /* Reference-counted by libcurl, and thread-safe since 7.84; keeld's main
   * may have called it already (keel_http_global_init). */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    return keel_err_set(e, KEEL_EIO, "cannot initialise libcurl");
  pthread_mutex_init(&t->mu, NULL);
  if ((t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
    rc = keel_err_set(e, KEEL_EIO, "eventfd: %s", strerror(errno));
    goto out;
  }
  if (!(t->multi = curl_multi_init())) {
    rc = keel_err_set(e, KEEL_ENOMEM, "cannot create a curl multi handle");
    goto out;
  }
  curl_multi_setopt(t->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host_conns);
  if (pthread_create(&t->thr, NULL, run, t))
    rc = keel_err_set(e, KEEL_EIO, "cannot start the %s thread", what);
out:
  if (rc) {
    if (t->multi) curl_multi_cleanup(t->multi);
    if (t->efd >= 0) close(t->efd);
    pthread_mutex_destroy(&t->mu);
    curl_global_cleanup();
    memset(t, 0, sizeof *t);
  }
  return rc;
}

void k_cthread_stop(k_cthread_t *t, void (*free_item)(k_cthread_item_t *)) {
  k_cthread_item_t *it;
  pthread_mutex_lock(&t->mu);
  t->stop = 1;
  pthread_mutex_unlock(&t->mu);
  curl_multi_wakeup(t->multi);
  pthread_join(t->thr, NULL);
  for (it = t->done; it;) {
    k_cthread_item_t *next = it->next;
    if (free_item) free_item(it);
    it = next;
  }
  curl_multi_cleanup(t->multi);
  close(t->efd);
  pthread_mutex_destroy(&t->mu);
  curl_global_cleanup();
}

void k_cthread_wake(k_cthread_t *t) { curl_multi_wakeup(t->multi); }
void k_cthread_lock(k_cthread_t *t) { pthread_mutex_lock(&t->mu); }
void k_cthread_unlock(k_cthread_t *t) { pthread_mutex_unlock(&t->mu); }
int k_cthread_fd(const k_cthread_t *t) { return t->efd; }

void k_cthread_post(k_cthread_t *t, k_cthread_item_t *it) {
  uint64_t one = 1;
  it->next = NULL;
  pthread_mutex_lock(&t->mu);
  if (t->done_tail) t->done_tail->next = it;
  else t->done = it;
  t->done_tail = it;
  pthread_mutex_unlock(&t->mu);
  if (write(t->efd, &one, sizeof one) < 0) { /* saturated counter: still readable */
  }
}

k_cthread_item_t *k_cthread_take(k_cthread_t *t) {
  k_cthread_item_t *it;
  uint64_t v;
  while (read(t->efd, &v, sizeof v) > 0) {
  }
  pthread_mutex_lock(&t->mu);
  it = t->done;
  t->done = t->done_tail = NULL;
  pthread_mutex_unlock(&t->mu);
  return it;
}
