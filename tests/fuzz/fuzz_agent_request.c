/* fuzz_agent_request.c — the request decoders of the agents and commands
 * area: POST /v1/commands, agent results, enrollment, enrollment tokens,
 * agent updates, and the KeelAgent Authorization header.
 *
 * The first byte picks the decoder; the rest is the body.  Invariants: an
 * error has a code and a message and no output; a success has the
 * documented normalized shape. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "keel/agentproto.h"
#include "keel/json.h"
#include "server.h"

#include "fuzz_check.h"

#define NOW_MS INT64_C(1764000000000)


static void check_failed(int rc, const json_t *out, const keel_err_t *e) {
  CHECK(rc < 0);
  CHECK(out == NULL);
  CHECK(e->code == rc);
  CHECK(e->msg[0] != '\0');
}

static void fuzz_command(const char *body, size_t len) {
  json_t *spec = (json_t *)1;
  keel_selector_t *sel = (keel_selector_t *)1;
  keel_err_t e = {0};
  int rc = k_exec_decode(body, len, &spec, &sel, &e);
  const json_t *argv, *shell;
  if (rc) {
    check_failed(rc, spec, &e);
    CHECK(sel == NULL);
    return;
  }
  CHECK(spec && sel);
  argv = json_object_get(spec, "argv");
  shell = json_object_get(spec, "shell");
  CHECK(json_is_array(argv) != json_is_string(shell)); /* exactly one */
  if (json_is_array(argv)) CHECK(json_array_size(argv) >= 1 && json_is_null(shell));
  CHECK(json_integer_value(json_object_get(spec, "timeout_ms")) >= 1000);
  CHECK(json_is_object(json_object_get(spec, "env")));
  CHECK(json_integer_value(json_object_get(spec, "output_cap")) >= 1024);
  CHECK(json_integer_value(json_object_get(spec, "output_cap")) <= K_EXEC_OUTPUT_CAP_MAX);
  keel_selector_free(sel);
  json_decref(spec);
}

static void fuzz_result(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  keel_err_t e = {0};
  int rc = k_exec_decode_result(body, len, &out, &e);
  const char *st;
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  st = keel_json_str(out, "status");
  CHECK(st && keel_json_str(out, "run_id"));
  CHECK(strlen(keel_json_str(out, "run_id")) == 20);
  if (!strcmp(st, "exited")) CHECK(json_is_integer(json_object_get(out, "exit_code")));
  json_decref(out);
}

static void fuzz_enroll(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  keel_err_t e = {0};
  int rc = k_decode_enroll(body, len, &out, &e);
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  CHECK(json_is_string(json_object_get(out, "public_key")));
  CHECK(json_is_string(json_object_get(out, "hostname")));
  json_decref(out);
}

static void fuzz_etoken(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  int64_t exp = -1;
  keel_err_t e = {0};
  int rc = k_decode_etoken_create(body, len, NOW_MS, &out, &exp, &e);
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  CHECK(exp > NOW_MS);
  json_decref(out);
}

static void fuzz_agent_update(const char *body, size_t len) {
  json_t *out = (json_t *)1;
  keel_err_t e = {0};
  int rc = k_decode_agent_update(body, len, &out, &e);
  if (rc) {
    check_failed(rc, out, &e);
    return;
  }
  CHECK(json_is_integer(json_object_get(out, "version")));
  CHECK(json_is_object(json_object_get(out, "tags")));
  json_decref(out);
}

static void fuzz_auth_header(const char *body, size_t len) {
  char *h = malloc(len + 1);
  keel_agent_auth_t a;
  keel_err_t e = {0};
  int rc;
  CHECK(h);
  memcpy(h, body, len);
  h[len] = '\0';
  rc = keel_agent_auth_parse(h, &a, &e);
  if (rc) {
    CHECK(rc == KEEL_EAUTH && e.msg[0]);
  } else {
    uint8_t pk[KEEL_AGENT_PK_BYTES] = {0};
    CHECK(a.agent_id[0] && a.ts_ms > 0 && strlen(a.nonce) == KEEL_AGENT_NONCE_LEN);
    CHECK(strlen(a.sig_hex) == KEEL_AGENT_SIG_HEX - 1);
    /* a parsed header never verifies against a key that signed nothing */
    CHECK(keel_agent_verify_request(&a, pk, "POST", "/v1/agent/poll", "", 0, &e) == KEEL_EAUTH);
  }
  free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *copy;
  size_t len;
  if (size < 1) return 0;
  len = size - 1;
  copy = malloc(len ? len : 1);
  CHECK(copy);
  if (len) memcpy(copy, data + 1, len);
  switch (data[0] % 6) {
  case 0: fuzz_command(copy, len); break;
  case 1: fuzz_result(copy, len); break;
  case 2: fuzz_enroll(copy, len); break;
  case 3: fuzz_etoken(copy, len); break;
  case 4: fuzz_agent_update(copy, len); break;
  case 5: fuzz_auth_header(copy, len); break;
  }
  free(copy);
  return 0;
}
