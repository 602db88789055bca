/* curlthread.h — a thread of its own that drives libcurl multi transfers
 * and hands results back to keeld's loop through an eventfd.  Shared by
 * the scrape engine (scrape/scrape.c) and the notification sender
 * (incident/send.c).
 *
 * Why a thread with curl multi rather than the work pool: one thread drives
 * any number of concurrent transfers (a slow peer never holds up another),
 * and the pool's two threads stay free for the long reads they exist for.
 *
 * The owner embeds a k_cthread_t and gives three callbacks, all run on the
 * thread: `turn` once per round (take new work the loop left under
 * k_cthread_lock, start transfers on t->multi; returns how long the thread
 * may then wait, in ms), `done` for each finished transfer (priv: its
 * CURLOPT_PRIVATE), and `stopped` once when the thread ends (release what
 * it holds; transfers still on t->multi are abandoned).  Results go to the
 * loop with k_cthread_post (thread) and come out with k_cthread_take
 * (loop), oldest first, when k_cthread_fd is readable.  A result is any
 * struct whose FIRST member is a k_cthread_item_t.
 */
#ifndef KEELD_CURLTHREAD_H
#define KEELD_CURLTHREAD_H

#include <curl/curl.h>
#include <pthread.h>

#include "keel/err.h"

typedef struct k_cthread_item {
  struct k_cthread_item *next;
} k_cthread_item_t;

typedef struct k_cthread_ops {
  long (*turn)(void *ud);
  void (*done)(void *ud, void *priv, CURLcode cc);
  void (*stopped)(void *ud);
} k_cthread_ops_t;

typedef struct k_cthread {
  CURLM *multi;          /* the thread's; the loop only wakes it */
  /* private */
  pthread_mutex_t mu;    /* stop, the results, and the owner's hand-over state */
  pthread_t thr;
  int stop;
  int efd;
  k_cthread_item_t *done, *done_tail;
  const k_cthread_ops_t *ops;
  void *ud;
} k_cthread_t;

/* Initialises libcurl (reference-counted), t, its eventfd and multi handle
 * (at most max_host_conns connections to one host at once) and starts the
 * thread; what names the thread in the error.  On error t needs no stop. */
int k_cthread_start(k_cthread_t *t, const char *what, long max_host_conns, const k_cthread_ops_t *ops,
                    void *ud, keel_err_t *e);
/* Loop: stops and joins the thread, then frees every result not taken
 * (with free_item; may be NULL when none can be left), the multi handle
 * and the eventfd. */
void k_cthread_stop(k_cthread_t *t, void (*free_item)(k_cthread_item_t *));
/* Loop: cuts the thread's wait short (new work under the lock). */
void k_cthread_wake(k_cthread_t *t);
void k_cthread_lock(k_cthread_t *t);
void k_cthread_unlock(k_cthread_t *t);
/* Readable when results wait. */
int k_cthread_fd(const k_cthread_t *t);
/* Thread: queues a result for the loop. */
void k_cthread_post(k_cthread_t *t, k_cthread_item_t *it);
/* Loop: every queued result, oldest first (a list by ->next), NULL when
 * none; the caller owns them. */
k_cthread_item_t *k_cthread_take(k_cthread_t *t);

#endif
