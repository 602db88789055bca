/* send.c — the notification sender's thread (send.h).
 *
 * The thread is curlthread.h's.  Requests move loop -> thread through
 * `inbox` (under the thread's lock; k_cthread_wake cuts its wait short)
 * and thread -> loop as the thread's results.  A request (job_t) belongs
 * to whichever list or thread holds it.
 */
#include "incident/send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curlthread.h"
#include "keel/buf.h"
#include "keel/http.h"

#define ANSWER_MAX 4096 /* bytes of a receiver's answer kept (for errors) */

typedef struct job {
  k_cthread_item_t item; /* first: a result of the thread */
  struct job *next;      /* the inbox */
  struct job *rnext, *rprev; /* the thread's list of running requests */
  char id[40];
  char *url, *body;
  struct curl_slist *hdrs;
  long timeout_ms;
  CURL *easy;
  keel_buf_t answer;
  char errbuf[CURL_ERROR_SIZE];
  long status;
  char error[256];
} job_t;

struct k_send {
  k_cthread_t ct;
  job_t *inbox;   /* under ct's lock */
  job_t *running; /* the thread's alone */
};

static void job_free(job_t *j) {
  if (!j) return;
  if (j->easy) curl_easy_cleanup(j->easy);
  curl_slist_free_all(j->hdrs);
  keel_buf_free(&j->answer);
  free(j->url);
  free(j->body);
  free(j);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  job_t *j = ud;
  size_t n = size * nmemb;
  /* keep the head of the answer; the rest is read and dropped */
  if (j->answer.len < ANSWER_MAX)
    keel_buf_append(&j->answer, p, n < ANSWER_MAX - j->answer.len ? n : ANSWER_MAX - j->answer.len);
  return n;
}

/* Thread: starts j on the multi handle, or finishes it at once with why not. */
static int start(k_send_t *s, job_t *j) {
  CURLcode cc;
  if (!(j->easy = curl_easy_init())) return -1;
  cc = (CURLcode)keel_http_easy_common(j->easy, j->url, j->timeout_ms, j->hdrs, on_body, j, j->errbuf);
#define SETOPT(opt, val) \
  do { \
    if (cc == CURLE_OK) cc = curl_easy_setopt(j->easy, opt, val); \
  } while (0)
  SETOPT(CURLOPT_POSTFIELDS, j->body);
  SETOPT(CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
  SETOPT(CURLOPT_PRIVATE, j);
#undef SETOPT
  if (cc != CURLE_OK || curl_multi_add_handle(s->ct.multi, j->easy) != CURLM_OK) return -1;
  j->rprev = NULL;
  j->rnext = s->running;
  if (s->running) s->running->rprev = j;
  s->running = j;
  return 0;
}

static void unrun(k_send_t *s, job_t *j) {
  curl_multi_remove_handle(s->ct.multi, j->easy);
  if (j->rprev) j->rprev->rnext = j->rnext;
  else s->running = j->rnext;
  if (j->rnext) j->rnext->rprev = j->rprev;
}

/* Thread: j's transfer ended with cc. */
static void finish(void *ud, void *priv, CURLcode cc) {
  k_send_t *s = ud;
  job_t *j = priv;
  unrun(s, j);
  if (cc == CURLE_OK) {
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &j->status);
    if (j->status < 200 || j->status >= 300)
      snprintf(j->error, sizeof j->error, "HTTP %ld: %.160s", j->status,
               j->answer.data ? j->answer.data : "");
  } else if (cc == CURLE_OPERATION_TIMEDOUT) {
    snprintf(j->error, sizeof j->error, "timed out after %ld ms", j->timeout_ms);
  } else {
    snprintf(j->error, sizeof j->error, "%s%s", cc == CURLE_COULDNT_CONNECT ? "cannot connect: " : "",
             keel_http_easy_why(j->easy, cc, j->errbuf));
  }
  curl_easy_cleanup(j->easy);
  j->easy = NULL;
  k_cthread_post(&s->ct, &j->item);
}

/* Thread: starts what the loop submitted, oldest first. */
static long turn(void *ud) {
  k_send_t *s = ud;
  job_t *in, *j, *rev = NULL;
  k_cthread_lock(&s->ct);
  in = s->inbox; /* newest first: reversed below */
  s->inbox = NULL;
  k_cthread_unlock(&s->ct);
  while (in) {
    j = in->next;
    in->next = rev;
    rev = in;
    in = j;
  }
  while ((j = rev)) {
    rev = rev->next;
    if (start(s, j)) {
      snprintf(j->error, sizeof j->error, "cannot start the request (out of memory)");
      if (j->easy) curl_easy_cleanup(j->easy);
      j->easy = NULL;
      k_cthread_post(&s->ct, &j->item);
    }
  }
  return 1000;
}

/* Thread, at the end: requests still running are abandoned. */
static void stopped(void *ud) {
  k_send_t *s = ud;
  while (s->running) {
    job_t *j = s->running;
    unrun(s, j);
    job_free(j);
  }
}

static void free_item(k_cthread_item_t *it) { job_free((job_t *)(void *)it); }

static const k_cthread_ops_t ops = {turn, finish, stopped};

int k_send_new(k_send_t **out, keel_err_t *e) {
  k_send_t *s = calloc(1, sizeof *s);
  int rc;

  *out = NULL;
  if (!s) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  /* a receiver gets at most 4 connections from Keel at once */
  if ((rc = k_cthread_start(&s->ct, "notification", 4L, &ops, s, e))) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void k_send_free(k_send_t *s) {
  job_t *j;
  if (!s) return;
  k_cthread_stop(&s->ct, free_item);
  for (j = s->inbox; j;) { /* submitted, never started */
    job_t *next = j->next;
    job_free(j);
    j = next;
  }
  free(s);
}

int k_send_fd(const k_send_t *s) { return k_cthread_fd(&s->ct); }

int k_send_submit(k_send_t *s, const char *id, const char *url, const json_t *headers,
                  const char *body, int64_t timeout_ms, keel_err_t *e) {
  job_t *j = calloc(1, sizeof *j);
  struct curl_slist *h = NULL, *t;
  const char *k;
  json_t *v;
  char line[1200];

  if (!j) goto oom;
  snprintf(j->id, sizeof j->id, "%s", id);
  keel_buf_init(&j->answer, ANSWER_MAX + 1);
  j->timeout_ms = (long)timeout_ms;
  if (!(j->url = strdup(url)) || !(j->body = strdup(body))) goto oom;
  snprintf(line, sizeof line, "X-Keel-Notification-Id: %s", id);
  if (!(t = curl_slist_append(h, "Content-Type: application/json"))) goto oom;
  h = t;
  if (!(t = curl_slist_append(h, line))) goto oom;
  h = t;
  /* no "Expect: 100-continue" round trip for bodies over 1 KiB */
  if (!(t = curl_slist_append(h, "Expect:"))) goto oom;
  h = t;
  json_object_foreach((json_t *)headers, k, v) {
    if (!json_is_string(v)) continue;
    snprintf(line, sizeof line, "%s: %s", k, json_string_value(v));
    if (!(t = curl_slist_append(h, line))) goto oom;
    h = t;
  }
  j->hdrs = h;
  h = NULL;
  k_cthread_lock(&s->ct);
  j->next = s->inbox;
  s->inbox = j;
  k_cthread_unlock(&s->ct);
  k_cthread_wake(&s->ct);
  return 0;
oom:
  curl_slist_free_all(h);
  job_free(j);
  return keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

size_t k_send_poll(k_send_t *s, k_send_fn fn, void *ud) {
  job_t *j = (job_t *)(void *)k_cthread_take(&s->ct);
  size_t count = 0;
  while (j) {
    job_t *next = (job_t *)(void *)j->item.next;
    k_send_result_t r = {j->id, j->status, j->error};
    if (fn) fn(ud, &r);
    job_free(j);
    count++;
    j = next;
  }
  return count;
}
