/* testsrv.h — scaffolding shared by the unit tests that run a small HTTP
 * server in a thread of the test (127.0.0.1, port 0): the listening socket,
 * a stop pipe that wakes the server thread, and the blocking I/O helpers.
 * Each test keeps its own server struct (with lfd, stop[2], port, th) and
 * its own way of answering. */
#ifndef TESTSRV_H
#define TESTSRV_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Waits for fd to be readable; -1 when stopfd (the stop pipe) is. */
static inline int ts_wait(int stopfd, int fd) {
  struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = stopfd, .events = POLLIN}};
  for (;;) {
    int r = poll(p, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || p[1].revents) return -1;
    return 0;
  }
}

static inline void ts_send(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static inline void ts_sends(int fd, const char *p) { ts_send(fd, p, strlen(p)); }

/* Sends p in pieces of k bytes, pausing between them: the client sees
 * every boundary at some point. */
static inline void ts_dribble(int fd, const char *p, size_t k) {
  size_t n = strlen(p);
  for (size_t i = 0; i < n; i += k) {
    ts_send(fd, p + i, n - i < k ? n - i : k);
    usleep(2000);
  }
}

/* Reads a request head into buf; 0, or -1 (stop, EOF, too long).  With
 * http_only, also -1 as soon as the first byte is not an upper-case letter
 * (a TLS ClientHello, sent by https:// to a plain server, starts with 0x16). */
static inline int ts_read_head(int stopfd, int fd, char *buf, size_t max, int http_only) {
  size_t len = 0;
  for (;;) {
    ssize_t r;
    buf[len] = '\0';
    if (strstr(buf, "\r\n\r\n")) return 0;
    if (http_only && len > 0 && (buf[0] < 'A' || buf[0] > 'Z')) return -1;
    if (len >= max - 1 || ts_wait(stopfd, fd)) return -1;
    r = read(fd, buf + len, max - 1 - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    len += (size_t)r;
  }
}

/* Opens the stop pipe (stop) and a socket listening on 127.0.0.1, port 0
 * (*lfd; the port picked goes to *port); 0 or -1. */
static inline int ts_listen(int stop[2], int *lfd, int *port, int backlog) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (pipe(stop)) return -1;
  *lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (*lfd < 0 || bind(*lfd, (struct sockaddr *)&a, sizeof a) || listen(*lfd, backlog) ||
      getsockname(*lfd, (struct sockaddr *)&a, &al))
    return -1;
  *port = ntohs(a.sin_port);
  return 0;
}

/* Wakes the server thread th through the stop pipe and joins it. */
static inline void ts_join(int stop[2], pthread_t th) {
  if (write(stop[1], "x", 1) != 1) abort();
  pthread_join(th, NULL);
}

/* Closes what ts_listen opened. */
static inline void ts_close(int stop[2], int lfd) {
  close(lfd);
  close(stop[0]);
  close(stop[1]);
}

/* A port nobody listens on (bound, then closed: refused for a while). */
static inline int ts_dead_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
  close(fd);
  return ntohs(a.sin_port);
}

#endif
