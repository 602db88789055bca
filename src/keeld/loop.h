/* loop.h — keeld's event loop (cf. Redis ae.c): one thread, epoll, a
 * periodic cron, and a before_sleep hook run before every wait.
 *
 * Each iteration:  before_sleep -> epoll_wait -> fd callbacks -> cron (if due).
 * All domain state belongs to the thread running k_loop_run; callbacks
 * MUST NOT block (slow work goes to work.h).
 */
#ifndef KEELD_LOOP_H
#define KEELD_LOOP_H

#include <stdint.h>

typedef struct k_loop k_loop_t;

typedef void (*k_fd_fn)(k_loop_t *l, int fd, uint32_t events, void *ud);
/* Returns the longest the loop may sleep, in ms (-1 = no limit of its own). */
typedef int64_t (*k_sleep_fn)(k_loop_t *l, void *ud);
typedef void (*k_cron_fn)(k_loop_t *l, void *ud);

k_loop_t *k_loop_new(void);
void k_loop_free(k_loop_t *l);
/* events: EPOLLIN etc.  One registration per fd. */
int k_loop_add_fd(k_loop_t *l, int fd, uint32_t events, k_fd_fn fn, void *ud);
void k_loop_del_fd(k_loop_t *l, int fd);
void k_loop_set_before_sleep(k_loop_t *l, k_sleep_fn fn, void *ud);
void k_loop_set_cron(k_loop_t *l, int period_ms, k_cron_fn fn, void *ud);
/* Runs until k_loop_stop. */
void k_loop_run(k_loop_t *l);
void k_loop_stop(k_loop_t *l);

#endif
