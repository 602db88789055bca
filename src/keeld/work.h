/* work.h — a few background threads for slow work (audit verification,
 * later compaction), handing results back to the loop.
 *
 * fn runs on a worker thread and MUST NOT touch loop-owned state; done runs
 * later on the loop thread (from k_work_poll, when k_work_fd is readable)
 * and may.  arg is owned by the submitter throughout.
 */
#ifndef KEELD_WORK_H
#define KEELD_WORK_H

typedef struct k_work k_work_t;

typedef void (*k_work_fn)(void *arg);

k_work_t *k_work_new(int nthreads);
/* Waits for queued jobs to finish, runs their done callbacks, frees. */
void k_work_free(k_work_t *w);
int k_work_submit(k_work_t *w, k_work_fn fn, k_work_fn done, void *arg);
int k_work_fd(k_work_t *w);
void k_work_poll(k_work_t *w);
int k_work_pending(k_work_t *w); /* submitted, done not yet run */

#endif
