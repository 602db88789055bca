/* identity.c — the agent's key pair, identity.json and the DIR layout. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "keel/crypto.h"
#include "keel/json.h"

#define IDENTITY_MAX 8192

static int mkdir_0700(const char *path, keel_err_t *e) {
  struct stat st;

  if (mkdir(path, 0700) == 0) return 0;
  if (errno != EEXIST) return keel_err_set(e, KEEL_EIO, "mkdir %s: %s", path, strerror(errno));
  if (stat(path, &st)) return keel_err_set(e, KEEL_EIO, "stat %s: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return keel_err_set(e, KEEL_EIO, "%s: not a directory", path);
  /* The directory holds the secret key: nobody else may list or enter it. */
  if ((st.st_mode & 077) && chmod(path, 0700))
    return keel_err_set(e, KEEL_EIO, "chmod 0700 %s: %s", path, strerror(errno));
  return 0;
}

int ka_state_prepare(const char *dir, keel_err_t *e) {
  char p[PATH_MAX];
  int rc;

  if ((rc = mkdir_0700(dir, e))) goto out;
  ka_path(p, "%s/running", dir);
  if ((rc = mkdir_0700(p, e))) goto out;
  ka_path(p, "%s/spool", dir);
  if ((rc = mkdir_0700(p, e))) goto out;
  ka_path(p, "%s/scripts", dir);
  rc = mkdir_0700(p, e);
out:
  return rc;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
  if (fd < 0) return -1;
  if (fsync(fd)) rc = -1;
  close(fd);
  return rc;
}

int ka_write_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
                    keel_err_t *e) {
  char tmp[PATH_MAX], dst[PATH_MAX];
  const char *p = data;
  int fd = -1, rc = 0, created = 0;

  if ((size_t)snprintf(dst, sizeof dst, "%s/%s", dir, name) >= sizeof dst ||
      (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp) {
    rc = keel_err_set(e, KEEL_EINVAL, "path too long: %s/%s", dir, name);
    goto out;
  }
  /* O_TRUNC: a temp file left by a crash is simply overwritten; one
   * thread writes the state, so no two writers share a temp name. */
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    rc = keel_err_set(e, KEEL_EIO, "create %s: %s", tmp, strerror(errno));
    goto out;
  }
  created = 1;
  if (fchmod(fd, mode)) { /* the umask may have narrowed or the file existed */
    rc = keel_err_set(e, KEEL_EIO, "chmod %s: %s", tmp, strerror(errno));
    goto out;
  }
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = keel_err_set(e, KEEL_EIO, "write %s: %s", tmp, strerror(errno));
      goto out;
    }
    p += n;
    len -= (size_t)n;
  }
  if (fsync(fd)) {
    rc = keel_err_set(e, KEEL_EIO, "fsync %s: %s", tmp, strerror(errno));
    goto out;
  }
  if (close(fd)) {
    fd = -1;
    rc = keel_err_set(e, KEEL_EIO, "close %s: %s", tmp, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(tmp, dst)) {
    rc = keel_err_set(e, KEEL_EIO, "rename %s: %s", dst, strerror(errno));
    goto out;
  }
  /* The rename is durable only once the directory is. */
  if (fsync_dir(dir)) rc = keel_err_set(e, KEEL_EIO, "fsync %s: %s", dir, strerror(errno));
out:
  if (fd >= 0) close(fd);
  if (rc && created) unlink(tmp); /* ENOENT after a successful rename: harmless */
  return rc;
}

int ka_read_file(const char *path, size_t max, char **out, size_t *len, keel_err_t *e) {
  keel_buf_t b;
  char chunk[4096];
  int fd, rc = 0;

  *out = NULL;
  *len = 0;
  keel_buf_init(&b, max);
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    rc = errno == ENOENT ? keel_err_set(e, KEEL_ENOENT, "%s: no such file", path)
                         : keel_err_set(e, KEEL_EIO, "open %s: %s", path, strerror(errno));
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = keel_err_set(e, KEEL_EIO, "read %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0) break;
    if ((rc = keel_buf_append(&b, chunk, (size_t)n))) {
      rc = keel_err_set(e, rc, "%s: larger than %zu bytes", path, max);
      goto out;
    }
  }
  if (keel_buf_append(&b, "", 0)) { /* an empty file still yields "" */
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  *len = b.len;
  *out = keel_buf_steal(&b);
out:
  if (fd >= 0) close(fd);
  keel_buf_free(&b);
  return rc;
}

int ka_path(char *out, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(out, PATH_MAX, fmt, ap);
  va_end(ap);
  return n < 0 || n >= PATH_MAX ? KEEL_ETOOBIG : 0;
}

int ka_valid_run_id(const char *s) {
  size_t n = 0;
  if (!s) return 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-'))
      return 0;
  }
  return n >= 1 && n <= KA_RUN_ID_MAX;
}

void ka_identity_keygen(ka_identity_t *id) { crypto_sign_keypair(id->pk, id->sk); }

void ka_identity_wipe(ka_identity_t *id) { sodium_memzero(id->sk, sizeof id->sk); }

static int hexfield(const json_t *o, const char *k, uint8_t *bin, size_t n) {
  const char *s = keel_json_str(o, k);
  return s ? keel_unhex(bin, n, s) : KEEL_EINVAL;
}

int ka_identity_load(const char *dir, ka_identity_t *id, keel_err_t *e) {
  char path[PATH_MAX], *text = NULL;
  const char *aid, *url;
  uint8_t derived[KEEL_AGENT_PK_BYTES];
  json_t *o = NULL;
  size_t len;
  keel_err_t pe;
  int rc;

  memset(id, 0, sizeof *id);
  ka_path(path, "%s/identity.json", dir);
  if ((rc = ka_read_file(path, IDENTITY_MAX, &text, &len, e))) {
    if (rc != KEEL_ENOENT) rc = KEEL_ECORRUPT;
    goto out;
  }
  if (keel_json_parse(text, len, &o, &pe) || !json_is_object(o)) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s: not a JSON object", path);
    goto out;
  }
  aid = keel_json_str(o, "agent_id");
  url = keel_json_str(o, "server_url");
  if (!aid || !*aid || strlen(aid) >= sizeof id->agent_id || !url ||
      strlen(url) >= sizeof id->server_url || hexfield(o, "public_key", id->pk, sizeof id->pk) ||
      hexfield(o, "secret_key", id->sk, sizeof id->sk) ||
      hexfield(o, "server_public_key", id->server_pk, sizeof id->server_pk)) {
    rc = keel_err_set(e, KEEL_ECORRUPT,
                      "%s: expected agent_id, server_url and the three keys in hex", path);
    goto out;
  }
  /* A libsodium secret key embeds its public key: a mismatch means the file
   * was edited by hand, and every request would fail verification. */
  crypto_sign_ed25519_sk_to_pk(derived, id->sk);
  if (memcmp(derived, id->pk, sizeof derived)) {
    rc = keel_err_set(e, KEEL_ECORRUPT, "%s: public_key does not match secret_key", path);
    goto out;
  }
  strcpy(id->agent_id, aid);
  strcpy(id->server_url, url);
out:
  if (rc) ka_identity_wipe(id);
  if (text) {
    sodium_memzero(text, len);
    free(text);
  }
  json_decref(o);
  return rc;
}

int ka_identity_save(const char *dir, const ka_identity_t *id, keel_err_t *e) {
  char pk[2 * KEEL_AGENT_PK_BYTES + 1], sk[2 * KEEL_AGENT_SK_BYTES + 1],
      spk[2 * KEEL_AGENT_PK_BYTES + 1];
  char *text = NULL;
  json_t *o;
  int rc = 0;

  keel_hex(pk, id->pk, sizeof id->pk);
  keel_hex(sk, id->sk, sizeof id->sk);
  keel_hex(spk, id->server_pk, sizeof id->server_pk);
  o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "agent_id", id->agent_id, "server_url", id->server_url,
                "public_key", pk, "secret_key", sk, "server_public_key", spk);
  if (o) text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (!text) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  rc = ka_write_atomic(dir, "identity.json", text, strlen(text), 0600, e);
out:
  sodium_memzero(sk, sizeof sk);
  if (text) {
    sodium_memzero(text, strlen(text));
    free(text);
  }
  /* jansson keeps its own copy of the hex secret; it is freed unwiped. */
  json_decref(o);
  return rc;
}
