#include "serverkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/crypto.h"

static void key_id(k_serverkey_t *k) {
  char hex[KEEL_HASH_HEX];
  keel_hash_hex(hex, k->pk, sizeof k->pk);
  memcpy(k->key_id, hex, 16);
  k->key_id[16] = '\0';
}

int k_serverkey_create(const char *dir, k_serverkey_t *k, keel_err_t *e) {
  char path[4096], hex[crypto_sign_SECRETKEYBYTES * 2 + 2];
  int fd, rc = 0;
  size_t n;

  snprintf(path, sizeof path, "%s/server.key", dir);
  crypto_sign_keypair(k->pk, k->sk);
  key_id(k);
  keel_hex(hex, k->sk, sizeof k->sk);
  n = strlen(hex);
  hex[n++] = '\n';
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return keel_err_set(e, errno == EEXIST ? KEEL_EEXIST : KEEL_EIO, "%s: %s", path,
                        strerror(errno));
  if (write(fd, hex, n) != (ssize_t)n || fsync(fd) != 0)
    rc = keel_err_set(e, KEEL_EIO, "%s: %s", path, strerror(errno));
  close(fd);
  sodium_memzero(hex, sizeof hex);
  return rc;
}

int k_serverkey_load(const char *dir, k_serverkey_t *k, keel_err_t *e) {
  char path[4096], hex[crypto_sign_SECRETKEYBYTES * 2 + 8];
  int fd, rc = 0;
  ssize_t n;
  struct stat st;

  snprintf(path, sizeof path, "%s/server.key", dir);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return keel_err_set(e, KEEL_EIO, "%s: %s", path, strerror(errno));
  if (fstat(fd, &st) == 0 && (st.st_mode & 077)) {
    rc = keel_err_set(e, KEEL_EPERM, "%s: mode %03o is readable by others; chmod 600 it", path,
                      (unsigned)(st.st_mode & 0777));
    goto out;
  }
  n = read(fd, hex, sizeof hex - 1);
  if (n < 0) n = 0;
  hex[n] = '\0';
  while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r')) hex[--n] = '\0';
  if (keel_unhex(k->sk, sizeof k->sk, hex)) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s: not an Ed25519 secret key", path);
    goto out;
  }
  crypto_sign_ed25519_sk_to_pk(k->pk, k->sk);
  key_id(k);
out:
  sodium_memzero(hex, sizeof hex);
  close(fd);
  return rc;
}

void k_serverkey_wipe(k_serverkey_t *k) { sodium_memzero(k->sk, sizeof k->sk); }
