/* send.h — the notification sender: HTTP POSTs made off the loop thread.
 *
 * One thread of its own drives every request with libcurl's multi
 * interface (curlthread.h, as the scrape engine's: a slow receiver never
 * holds up another, and the worker pool stays free).  The loop submits requests
 * (k_send_submit copies everything); finished ones are queued back and an
 * eventfd (k_send_fd) becomes readable; the loop then calls k_send_poll,
 * which runs the callback once per result.  Every function here MUST be
 * called from the loop thread; none blocks on the network.
 *
 * Each request carries `Content-Type: application/json`,
 * `X-Keel-Notification-Id: ID` and the channel's headers; redirects are not
 * followed (a POST that moved is a configuration to fix, not to guess).
 */
#ifndef KEELD_INCIDENT_SEND_H
#define KEELD_INCIDENT_SEND_H

#include <jansson.h>
#include <stdint.h>

#include "keel/err.h"

typedef struct k_send k_send_t;

typedef struct k_send_result {
  const char *id;     /* the notification id given to submit */
  long status;        /* HTTP status, 0 when no answer came */
  const char *error;  /* "" when an answer came; else why not */
} k_send_result_t;

typedef void (*k_send_fn)(void *ud, const k_send_result_t *r);

int k_send_new(k_send_t **out, keel_err_t *e);
/* Stops the thread (requests in flight are abandoned), frees.  NULL ok. */
void k_send_free(k_send_t *s);
int k_send_fd(const k_send_t *s);
/* Queues one POST.  headers: an object of string values (borrowed). */
int k_send_submit(k_send_t *s, const char *id, const char *url, const json_t *headers,
                  const char *body, int64_t timeout_ms, keel_err_t *e);
/* Runs fn for each finished request, oldest first.  Returns how many. */
size_t k_send_poll(k_send_t *s, k_send_fn fn, void *ud);

#endif
