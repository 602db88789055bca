/* Unit tests for the fleet and exec engines: enrollment tokens (unknown,
 * expired, used up), enrollment, agent request signatures (bad signature,
 * replay, clock skew, retired), tags with optimistic concurrency, liveness,
 * and commands: selection, signed jobs, idempotent results. */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "exec/exec.h"
#include "fleet/fleet.h"
#include "keel/agentproto.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "serverkey.h"
#include "store/store.h"

#define NOW 1790000000000LL

typedef struct fx {
  char dir[256];
  k_store_t *s;
  k_fleet_t *f;
  k_serverkey_t key;
} fx_t;

static int setup(void **state) {
  fx_t *x = calloc(1, sizeof *x);
  keel_err_t e = {0};
  if (!x || kt_mkdtemp(x->dir, sizeof x->dir)) return -1;
  if (k_store_open(x->dir, 1, NULL, &x->s, &e) || k_fleet_open(x->s, NULL, 5000, &x->f, &e) ||
      k_serverkey_create(x->dir, &x->key, &e)) {
    print_error("setup: %s\n", e.msg);
    return -1;
  }
  *state = x;
  return 0;
}

static int teardown(void **state) {
  fx_t *x = *state;
  k_fleet_close(x->f);
  k_store_close(x->s);
  kt_rmrf(x->dir);
  free(x);
  return 0;
}

static int group_setup(void **state) {
  (void)state;
  return keel_crypto_init() == 0 ? 0 : -1;
}

static void begin(fx_t *x) {
  keel_err_t e = {0};
  if (k_store_unit_begin(x->s, &e)) fail_msg("unit_begin: %s", e.msg);
}

static void end(fx_t *x) {
  keel_err_t e = {0};
  if (k_store_unit_end(x->s, 1, &e) || k_store_flush(x->s, &e)) fail_msg("commit: %s", e.msg);
}

/* A new enrollment token's Authorization header value. */
static void new_token(fx_t *x, const char *tags_json, int64_t uses, int64_t expires, char *hdr,
                      size_t n) {
  json_t *tags = tags_json ? json_loads(tags_json, 0, NULL) : NULL, *out = NULL;
  keel_err_t e = {0};
  begin(x);
  if (k_fleet_token_create(x->f, tags, expires, uses, "user:test", NOW, &out, &e))
    fail_msg("token: %s", e.msg);
  end(x);
  snprintf(hdr, n, "Bearer %s", keel_json_str(out, "token"));
  json_decref(out);
  json_decref(tags);
}

typedef struct sim {
  char id[32];
  uint8_t pk[32], sk[64];
} sim_t;

static int enroll(fx_t *x, const char *hdr, const char *host, sim_t *a, keel_err_t *e) {
  char tid[32], pk_hex[65];
  json_t *req, *out = NULL;
  int rc;
  crypto_sign_keypair(a->pk, a->sk);
  keel_hex(pk_hex, a->pk, 32);
  if ((rc = k_fleet_token_check(x->f, hdr, NOW, tid, e))) return rc;
  req = json_pack("{s:s,s:s,s:{s:s}}", "public_key", pk_hex, "hostname", host, "tags", "own", "yes");
  begin(x);
  rc = k_fleet_enroll(x->f, tid, req, NOW, &out, e);
  end(x);
  if (!rc) snprintf(a->id, sizeof a->id, "%s", keel_json_str(out, "agent_id"));
  json_decref(req);
  json_decref(out);
  return rc;
}

static int auth(fx_t *x, const sim_t *a, const char *body, int64_t ts, keel_buf_t *hdr,
                keel_err_t *e) {
  k_agent_t *ag;
  char actor[96];
  if (!hdr->len && keel_agent_sign_request(hdr, a->id, a->sk, "POST", "/v1/agent/poll", ts, body,
                                           strlen(body)))
    fail_msg("sign");
  return k_fleet_auth(x->f, hdr->data, "POST", "/v1/agent/poll", body, strlen(body), NOW, &ag,
                      actor, sizeof actor, e);
}

static void test_tokens_and_enroll(void **state) {
  fx_t *x = *state;
  char hdr[128], expired[128];
  sim_t a, b, c;
  keel_err_t e = {0};
  k_agent_t *ag;

  new_token(x, "{\"env\":\"dev\",\"own\":\"token-wins\"}", 2, NOW + 3600000, hdr, sizeof hdr);
  new_token(x, NULL, 1, NOW - 1, expired, sizeof expired);
  assert_int_equal(enroll(x, hdr, "web-1", &a, &e), 0);
  assert_int_equal(enroll(x, hdr, "web-2", &b, &e), 0);
  /* used up after two */
  assert_int_equal(enroll(x, hdr, "web-3", &c, &e), KEEL_EAUTH);
  assert_non_null(strstr(e.msg, "used up"));
  assert_int_equal(enroll(x, expired, "web-3", &c, &e), KEEL_EAUTH);
  assert_non_null(strstr(e.msg, "expired"));
  assert_int_equal(enroll(x, "Bearer kenr_aaaaaaaaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "x", &c, &e),
                   KEEL_EAUTH);
  assert_non_null(strstr(e.msg, "unknown"));
  assert_int_equal(enroll(x, "Bearer nope", "x", &c, &e), KEEL_EAUTH);
  assert_non_null(strstr(e.msg, "malformed"));
  /* token tags win over the agent's own; the agent's extra ones stay */
  ag = k_fleet_find(x->f, a.id);
  assert_non_null(ag);
  assert_string_equal(json_string_value(json_object_get(ag->tags, "own")), "token-wins");
  assert_string_equal(json_string_value(json_object_get(ag->tags, "env")), "dev");
  assert_int_equal(k_fleet_count(x->f), 2);
}

static void test_agent_signatures(void **state) {
  fx_t *x = *state;
  char hdr[128];
  sim_t a;
  keel_err_t e = {0};
  keel_buf_t h;

  keel_buf_init(&h, 4096);
  new_token(x, NULL, 1, NOW + 3600000, hdr, sizeof hdr);
  assert_int_equal(enroll(x, hdr, "db-1", &a, &e), 0);
  assert_int_equal(auth(x, &a, "{}", NOW, &h, &e), 0);
  /* the same request again is a replay */
  assert_int_equal(auth(x, &a, "{}", NOW, &h, &e), KEEL_EAUTH);
  assert_non_null(strstr(e.msg, "replay"));
  /* a changed body does not verify */
  keel_buf_reset(&h);
  keel_agent_sign_request(&h, a.id, a.sk, "POST", "/v1/agent/poll", NOW, "{}", 2);
  {
    k_agent_t *ag;
    char actor[96];
    assert_int_equal(k_fleet_auth(x->f, h.data, "POST", "/v1/agent/poll", "{ }", 3, NOW, &ag, actor,
                                  sizeof actor, &e),
                     KEEL_EAUTH);
    assert_non_null(strstr(e.msg, "bad agent signature"));
    assert_non_null(strstr(actor, "(unverified)"));
  }
  /* clock skew */
  keel_buf_reset(&h);
  assert_int_equal(auth(x, &a, "{}", NOW - 2 * KEEL_AGENT_SKEW_MS, &h, &e), KEEL_EAUTH);
  /* another key claiming a's id */
  {
    sim_t forger = a;
    crypto_sign_keypair(forger.pk, forger.sk);
    keel_buf_reset(&h);
    assert_int_equal(auth(x, &forger, "{}", NOW + 1, &h, &e), KEEL_EAUTH);
  }
  /* retired: credentials stop working */
  {
    json_t *out = NULL;
    void *w;
    begin(x);
    assert_int_equal(k_fleet_retire(x->f, a.id, NOW, &w, &out, &e), 0);
    end(x);
    json_decref(out);
    keel_buf_reset(&h);
    assert_int_equal(auth(x, &a, "{}", NOW + 2, &h, &e), KEEL_EAUTH);
    assert_non_null(strstr(e.msg, "retired"));
    /* still readable as history */
    assert_int_equal(k_fleet_agent_json(x->f, a.id, 1, &out, &e), 0);
    assert_string_equal(keel_json_str(out, "status"), "retired");
    json_decref(out);
  }
  keel_buf_free(&h);
}

static void test_tags_and_liveness(void **state) {
  fx_t *x = *state;
  char hdr[128];
  sim_t a;
  keel_err_t e = {0};
  json_t *tags = json_pack("{s:s}", "env", "prod"), *out = NULL, *bad = json_pack("{s:s}", "bad key", "x");
  k_agent_t *ag;

  new_token(x, NULL, 1, NOW + 3600000, hdr, sizeof hdr);
  assert_int_equal(enroll(x, hdr, "app-1", &a, &e), 0);
  begin(x);
  assert_int_equal(k_fleet_set_tags(x->f, a.id, tags, 1, NOW, &out, &e), 0);
  json_decref(out);
  assert_int_equal(k_fleet_set_tags(x->f, a.id, tags, 1, NOW, &out, &e), KEEL_ECONFLICT);
  assert_int_equal(k_fleet_set_tags(x->f, a.id, bad, 2, NOW, &out, &e), KEEL_EINVAL);
  end(x);
  ag = k_fleet_find(x->f, a.id);
  assert_int_equal(ag->version, 2);
  assert_string_equal(k_fleet_status(x->f, ag), "online");
  k_fleet_cron(x->f, NOW + 3 * 5000, 60000);
  assert_string_equal(k_fleet_status(x->f, ag), "online");
  k_fleet_cron(x->f, NOW + 3 * 5000 + 1, 60000);
  assert_string_equal(k_fleet_status(x->f, ag), "offline");
  k_fleet_seen(x->f, ag, NOW + 20000);
  assert_string_equal(k_fleet_status(x->f, ag), "online");
  /* the fleet reloads from the store with the new tags */
  k_fleet_close(x->f);
  assert_int_equal(k_fleet_open(x->s, NULL, 5000, &x->f, &e), 0);
  ag = k_fleet_find(x->f, a.id);
  assert_non_null(ag);
  assert_string_equal(json_string_value(json_object_get(ag->tags, "env")), "prod");
  json_decref(tags);
  json_decref(bad);
}

static void test_command_decode_errors(void **state) {
  static const struct {
    const char *body, *needle;
  } bad[] = {
      {"{\"target\":\"\"}", "exactly one of 'argv' and 'shell'"},
      {"{\"target\":\"\",\"argv\":[\"a\"],\"shell\":\"b\"}", "exactly one"},
      {"{\"target\":\"\",\"argv\":[]}", "at least the program"},
      {"{\"target\":\"\",\"argv\":[1]}", "item 0"},
      {"{\"target\":\"env in (a\",\"argv\":[\"x\"]}", "field 'target': selector: column"},
      {"{\"target\":\"\",\"argv\":[\"x\"],\"timeout\":\"0s\"}", "timeout"},
      {"{\"target\":\"\",\"argv\":[\"x\"],\"env\":{\"1A\":\"x\"}}", "variable name"},
      {"{\"target\":\"\",\"argv\":[\"x\"],\"cwd\":\"rel\"}", "absolute"},
      {"{\"target\":\"\",\"argv\":[\"x\"],\"bogus\":1}", "bogus"},
  };
  (void)state;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    json_t *spec = NULL;
    keel_selector_t *sel = NULL;
    keel_err_t e = {0};
    int rc = k_exec_decode(bad[i].body, strlen(bad[i].body), &spec, &sel, &e);
    if (rc != KEEL_EINVAL || !strstr(e.msg, bad[i].needle))
      fail_msg("case %zu: rc %d msg '%s' (wanted '%s')", i, rc, e.msg, bad[i].needle);
    assert_null(spec);
    assert_null(sel);
  }
}

static void test_command_jobs_results(void **state) {
  fx_t *x = *state;
  char hdr[128], spk[65];
  sim_t a, b, c;
  keel_err_t e = {0};
  json_t *spec = NULL, *out = NULL, *jobs = NULL, *job, *cmd = NULL, *cancel = NULL;
  keel_selector_t *sel = NULL;
  keel_buf_t detail;
  const char *body = "{\"target\":\"own=yes,hostname!=web-3\",\"argv\":[\"echo\",\"$(id)\"],"
                     "\"env\":{\"SECRET\":\"hunter2\"}}";
  int dup = -1;

  keel_buf_init(&detail, 1 << 20);
  keel_hex(spk, x->key.pk, 32);
  new_token(x, NULL, 3, NOW + 3600000, hdr, sizeof hdr);
  assert_int_equal(enroll(x, hdr, "web-1", &a, &e), 0);
  assert_int_equal(enroll(x, hdr, "web-2", &b, &e), 0);
  assert_int_equal(enroll(x, hdr, "web-3", &c, &e), 0);
  k_fleet_find(x->f, b.id)->online = 0; /* b is offline: skipped */
  assert_int_equal(k_exec_decode(body, strlen(body), &spec, &sel, &e), 0);
  begin(x);
  assert_int_equal(k_exec_create(x->s, x->f, &x->key, spec, sel, "user:test", NOW, &out, &detail, &e), 0);
  end(x);
  assert_int_equal(json_integer_value(json_object_get(out, "hosts")), 1);
  assert_int_equal(json_integer_value(json_object_get(out, "skipped")), 1);
  /* the audit summary names argv and env names, never env values */
  assert_non_null(strstr(detail.data, "$(id)"));
  assert_non_null(strstr(detail.data, "SECRET"));
  assert_null(strstr(detail.data, "hunter2"));
  assert_int_equal(k_fleet_find(x->f, a.id)->wake, 1);

  /* a's job is signed by the server and names a */
  assert_int_equal(k_exec_jobs(x->s, a.id, NULL, 64, &jobs, &cancel, &e), 0);
  assert_int_equal(json_array_size(jobs), 1);
  assert_int_equal(json_array_size(cancel), 0);
  json_decref(cancel);
  job = json_array_get(jobs, 0);
  {
    const char *text = keel_json_str(job, "job");
    uint8_t pk[32];
    json_t *j = json_loads(text, 0, NULL);
    keel_unhex(pk, 32, spk);
    assert_int_equal(keel_agent_verify_job(keel_json_str(job, "sig"), pk, text, strlen(text), &e), 0);
    assert_string_equal(keel_json_str(j, "agent_id"), a.id);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "argv"), 1)), "$(id)");
    /* a tampered job does not verify */
    assert_int_equal(keel_agent_verify_job(keel_json_str(job, "sig"), pk, "{}", 2, &e), KEEL_EAUTH);
    {
      char rbody[512];
      json_t *res = NULL;
      snprintf(rbody, sizeof rbody,
               "{\"run_id\":\"%s\",\"status\":\"exited\",\"exit_code\":0,\"stdout_b64\":\"JChpZCkK\","
               "\"stderr_b64\":\"\",\"started_at\":%lld,\"ended_at\":%lld}",
               keel_json_str(j, "run_id"), NOW, NOW + 5);
      assert_int_equal(k_exec_decode_result(rbody, strlen(rbody), &res, &e), 0);
      begin(x);
      /* only the run's own agent may report it */
      assert_int_equal(k_exec_store_result(x->s, c.id, res, NOW, &dup, &detail, &e), 0);
      assert_int_equal(dup, 1);
      assert_int_equal(k_exec_store_result(x->s, a.id, res, NOW, &dup, &detail, &e), 0);
      assert_int_equal(dup, 0);
      assert_non_null(strstr(detail.data, "exit_code=0"));
      assert_non_null(strstr(detail.data, "stdout_blake2b="));
      /* sent twice, stored once */
      assert_int_equal(k_exec_store_result(x->s, a.id, res, NOW + 1, &dup, &detail, &e), 0);
      assert_int_equal(dup, 1);
      end(x);
      json_decref(res);
    }
    assert_int_equal(k_exec_get(x->s, keel_json_str(j, "command_id"), &cmd, &e), 0);
    assert_true(json_is_true(json_object_get(cmd, "done")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(cmd, "summary"), "succeeded")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(cmd, "summary"), "skipped")), 1);
    {
      size_t i;
      json_t *r;
      json_array_foreach(json_object_get(cmd, "runs"), i, r) if (!strcmp(keel_json_str(r, "agent_id"), a.id))
          assert_string_equal(keel_json_str(r, "stdout"), "$(id)\n");
    }
    json_decref(j);
  }
  json_decref(jobs);
  /* no more jobs for a */
  assert_int_equal(k_exec_jobs(x->s, a.id, NULL, 64, &jobs, &cancel, &e), 0);
  assert_int_equal(json_array_size(jobs), 0);
  json_decref(jobs);
  json_decref(cancel);
  json_decref(cmd);
  json_decref(out);
  json_decref(spec);
  keel_selector_free(sel);
  keel_buf_free(&detail);
}

/* A command cancelled while its agent runs it: the next poll that lists
 * the run answers "cancel"; the agent's later result keeps the host's
 * output under the status "cancelled", once. */
static void test_command_cancel(void **state) {
  fx_t *x = *state;
  char hdr[128], run[32], rbody[512];
  sim_t a, b;
  keel_err_t e = {0};
  json_t *spec = NULL, *out = NULL, *jobs = NULL, *cancel = NULL, *cmd = NULL, *res = NULL;
  json_t *running, *r;
  keel_selector_t *sel = NULL;
  keel_buf_t detail;
  const char *body = "{\"target\":\"\",\"shell\":\"sleep 300\"}", *id;
  size_t n = 0, i;
  int dup = -1;

  keel_buf_init(&detail, 1 << 20);
  new_token(x, NULL, 2, NOW + 3600000, hdr, sizeof hdr);
  assert_int_equal(enroll(x, hdr, "web-1", &a, &e), 0);
  assert_int_equal(enroll(x, hdr, "web-2", &b, &e), 0);
  assert_int_equal(k_exec_decode(body, strlen(body), &spec, &sel, &e), 0);
  begin(x);
  assert_int_equal(k_exec_create(x->s, x->f, &x->key, spec, sel, "user:test", NOW, &out, &detail, &e), 0);
  end(x);
  id = keel_json_str(out, "id");
  assert_int_equal(k_exec_jobs(x->s, a.id, NULL, 64, &jobs, &cancel, &e), 0);
  assert_int_equal(json_array_size(jobs), 1);
  {
    json_t *j = json_loads(keel_json_str(json_array_get(jobs, 0), "job"), 0, NULL);
    snprintf(run, sizeof run, "%s", keel_json_str(j, "run_id"));
    json_decref(j);
  }
  json_decref(jobs);
  json_decref(cancel);
  running = json_pack("[s,s]", run, "run_AAAAAAAAAAAAAAAA");

  /* before the cancel: running, nothing to stop, nothing to deliver again */
  assert_int_equal(k_exec_jobs(x->s, a.id, running, 64, &jobs, &cancel, &e), 0);
  assert_int_equal(json_array_size(jobs), 0);
  assert_int_equal(json_array_size(cancel), 0);
  json_decref(jobs);
  json_decref(cancel);

  k_fleet_find(x->f, a.id)->wake = 0;
  begin(x);
  assert_int_equal(k_exec_cancel(x->s, x->f, id, "cancelled by user:test", NOW + 10, &n, &e), 0);
  end(x);
  assert_int_equal(n, 2);
  assert_int_equal(k_fleet_find(x->f, a.id)->wake, 1);
  /* twice: nothing left */
  begin(x);
  assert_int_equal(k_exec_cancel(x->s, x->f, id, "again", NOW + 11, &n, &e), KEEL_ECONFLICT);
  assert_non_null(strstr(e.msg, "nothing to cancel"));
  end(x);
  assert_int_equal(k_exec_cancel(x->s, x->f, "cmd_nope", "x", NOW, &n, &e), KEEL_ENOENT);

  /* a's poll lists the run: told to stop it (and only it); b's is not */
  assert_int_equal(k_exec_jobs(x->s, a.id, running, 64, &jobs, &cancel, &e), 0);
  assert_int_equal(json_array_size(jobs), 0);
  assert_int_equal(json_array_size(cancel), 1);
  assert_string_equal(json_string_value(json_array_get(cancel, 0)), run);
  json_decref(jobs);
  json_decref(cancel);
  assert_int_equal(k_exec_jobs(x->s, b.id, running, 64, &jobs, &cancel, &e), 0);
  assert_int_equal(json_array_size(cancel), 0);
  json_decref(jobs);
  json_decref(cancel);

  /* the host's outcome, kept once; the status stays cancelled */
  snprintf(rbody, sizeof rbody,
           "{\"run_id\":\"%s\",\"status\":\"cancelled\",\"signal\":15,"
           "\"stdout_b64\":\"aGFsZgo=\",\"stderr_b64\":\"\",\"started_at\":%lld,"
           "\"ended_at\":%lld,\"error\":\"stopped: SIGTERM to the process group\"}",
           run, NOW, NOW + 20);
  assert_int_equal(k_exec_decode_result(rbody, strlen(rbody), &res, &e), 0);
  begin(x);
  assert_int_equal(k_exec_store_result(x->s, a.id, res, NOW + 20, &dup, &detail, &e), 0);
  assert_int_equal(dup, 1);
  assert_non_null(strstr(detail.data, "outcome kept"));
  assert_int_equal(k_exec_store_result(x->s, a.id, res, NOW + 21, &dup, &detail, &e), 0);
  assert_int_equal(dup, 1);
  assert_non_null(strstr(detail.data, "already stored"));
  end(x);
  assert_int_equal(k_exec_get(x->s, id, &cmd, &e), 0);
  assert_true(json_is_true(json_object_get(cmd, "done")));
  assert_int_equal(json_integer_value(json_object_get(json_object_get(cmd, "summary"), "cancelled")), 2);
  json_array_foreach(json_object_get(cmd, "runs"), i, r) {
    assert_string_equal(keel_json_str(r, "status"), "cancelled");
    if (strcmp(keel_json_str(r, "agent_id"), a.id)) continue;
    assert_string_equal(keel_json_str(r, "stdout"), "half\n");
    assert_int_equal(json_integer_value(json_object_get(r, "signal")), 15);
    assert_string_equal(keel_json_str(r, "error"),
                        "cancelled by user:test; on the host: cancelled: stopped: SIGTERM to the"
                        " process group");
  }
  json_decref(cmd);
  json_decref(res);
  json_decref(running);
  json_decref(out);
  json_decref(spec);
  keel_selector_free(sel);
  keel_buf_free(&detail);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_tokens_and_enroll, setup, teardown),
      cmocka_unit_test_setup_teardown(test_agent_signatures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tags_and_liveness, setup, teardown),
      cmocka_unit_test(test_command_decode_errors),
      cmocka_unit_test_setup_teardown(test_command_jobs_results, setup, teardown),
      cmocka_unit_test_setup_teardown(test_command_cancel, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
