#include "exec/exec.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "keel/agentproto.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"

#define TIMEOUT_DEFAULT_MS 60000
#define TIMEOUT_MAX_MS (24LL * 3600 * 1000)

static const char *txt(const k_val_t *c) { return c->type == K_VAL_TEXT ? c->s : ""; }

static json_t *time_or_null(const k_val_t *c) {
  return keel_json_time(c->type == K_VAL_INT ? c->i : 0);
}

static json_t *int_or_null(const k_val_t *c) {
  return c->type == K_VAL_INT ? json_integer(c->i) : json_null();
}

/* ---- decoding a command --------------------------------------------------- */

static const keel_json_field_t command_fields[] = {
    {"target", KEEL_JSON_STRING, 1, 4096},
    {"argv", KEEL_JSON_ARRAY, 0, 256},
    {"shell", KEEL_JSON_STRING, 0, 65536},
    {"timeout", KEEL_JSON_STRING, 0, 32},
    {"env", KEEL_JSON_OBJECT, 0, 0},
    {"cwd", KEEL_JSON_STRING, 0, 4096},
    {"user", KEEL_JSON_STRING, 0, 64},
    {"output_cap", KEEL_JSON_INT, 0, 0},
    {NULL, 0, 0, 0},
};

static int env_name_ok(const char *k) {
  if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || *k == '_')) return 0;
  for (k++; *k; k++)
    if (!((*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') ||
          *k == '_'))
      return 0;
  return 1;
}

static int check_spec(json_t *in, keel_err_t *e) {
  const json_t *argv = json_object_get(in, "argv"), *shell = json_object_get(in, "shell");
  const json_t *env = json_object_get(in, "env"), *cap = json_object_get(in, "output_cap");
  const char *timeout = keel_json_str(in, "timeout"), *user = keel_json_str(in, "user");
  const char *cwd = keel_json_str(in, "cwd"), *k;
  json_t *v;
  size_t i;
  int64_t tmo = TIMEOUT_DEFAULT_MS;

  if (!!argv == !!shell) return keel_err_set(e, KEEL_EINVAL, "give exactly one of 'argv' and 'shell'");
  if (argv) {
    if (json_array_size(argv) == 0)
      return keel_err_set(e, KEEL_EINVAL, "field 'argv': expected at least the program");
    json_array_foreach(argv, i, v) {
      if (!json_is_string(v))
        return keel_err_set(e, KEEL_EINVAL, "field 'argv': item %zu: expected a string", i);
      if (json_string_length(v) > 65536 || strlen(json_string_value(v)) != json_string_length(v))
        return keel_err_set(e, KEEL_EINVAL, "field 'argv': item %zu: NUL byte or over 64 KiB", i);
    }
    if (!json_string_length(json_array_get(argv, 0)))
      return keel_err_set(e, KEEL_EINVAL, "field 'argv': item 0: the program is empty");
  } else if (!json_string_length(shell)) {
    return keel_err_set(e, KEEL_EINVAL, "field 'shell': empty script");
  }
  if (timeout && (keel_duration_parse(timeout, &tmo) || tmo < 1000 || tmo > TIMEOUT_MAX_MS))
    return keel_err_set(e, KEEL_EINVAL, "field 'timeout': expected a duration from 1s to 24h");
  if (env) {
    if (json_object_size(env) > 128)
      return keel_err_set(e, KEEL_EINVAL, "field 'env': at most 128 variables");
    json_object_foreach((json_t *)env, k, v) {
      if (!env_name_ok(k) || strlen(k) > 128)
        return keel_err_set(e, KEEL_EINVAL, "field 'env': '%.64s' is not a variable name", k);
      if (!json_is_string(v) || json_string_length(v) > 32768 ||
          strlen(json_string_value(v)) != json_string_length(v))
        return keel_err_set(e, KEEL_EINVAL, "field 'env': '%.64s': expected a string (no NUL, <= 32 KiB)", k);
    }
  }
  if (cwd && cwd[0] != '/') return keel_err_set(e, KEEL_EINVAL, "field 'cwd': expected an absolute path");
  if (user && !user[0]) return keel_err_set(e, KEEL_EINVAL, "field 'user': empty");
  if (cap && (json_integer_value(cap) < 1024 || json_integer_value(cap) > K_EXEC_OUTPUT_CAP_MAX))
    return keel_err_set(e, KEEL_EINVAL, "field 'output_cap': expected 1024..%d bytes", K_EXEC_OUTPUT_CAP_MAX);
  /* normalized form */
  json_object_del(in, "timeout");
  if (json_object_set_new(in, "timeout_ms", json_integer(tmo)) ||
      (!argv && json_object_set_new(in, "argv", json_null())) ||
      (!shell && json_object_set_new(in, "shell", json_null())) ||
      (!env && json_object_set_new(in, "env", json_object())) ||
      (!cwd && json_object_set_new(in, "cwd", json_null())) ||
      (!user && json_object_set_new(in, "user", json_null())) ||
      (!cap && json_object_set_new(in, "output_cap", json_integer(K_EXEC_OUTPUT_CAP_DEFAULT))))
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  return 0;
}

int k_exec_decode(const char *body, size_t len, json_t **spec, keel_selector_t **sel,
                  keel_err_t *e) {
  json_t *in = NULL;
  const char *target;
  int rc;

  *spec = NULL;
  *sel = NULL;
  if ((rc = keel_json_decode(body, len, command_fields, &in, e))) return rc;
  if ((rc = check_spec(in, e))) goto fail;
  target = keel_json_str(in, "target");
  {
    keel_err_t se = {0};
    if ((rc = keel_selector_parse(target, strlen(target), sel, &se))) {
      rc = keel_err_set(e, KEEL_EINVAL, "field 'target': %s", se.msg);
      goto fail;
    }
  }
  *spec = in;
  return 0;
fail:
  json_decref(in);
  return rc;
}

/* ---- creating a command ------------------------------------------------------ */

/* The job text of run run_id of owner for agent agent_id: the members of
 * spec an agent reads (those present), plus the ids and the issue time. */
static char *job_text(const char *run_id, const char *owner, const char *agent_id,
                      const json_t *spec, int64_t now_ms) {
  static const char *const members[] = {"argv", "shell", "script", "http", "timeout_ms",
                                         "env",  "cwd",   "user",   "output_cap", NULL};
  json_t *jo = json_pack("{s:s,s:s,s:s,s:I}", "run_id", run_id, "command_id", owner, "agent_id",
                         agent_id, "issued_at", (json_int_t)now_ms);
  char *text = NULL;
  if (!jo) return NULL;
  for (const char *const *m = members; *m; m++) {
    json_t *v = json_object_get(spec, *m);
    if (v && json_object_set(jo, *m, v)) goto out;
  }
  text = keel_json_canonical(jo);
out:
  json_decref(jo);
  return text;
}

/* Inserts run run_id of owner for agent a: "pending" with a signed job, or
 * "skipped" (error "offline") when offline. */
static int insert_run(k_store_t *s, const k_serverkey_t *key, const char *run_id,
                      const char *owner, const k_agent_t *a, const json_t *spec, int offline,
                      int64_t now_ms, keel_err_t *e) {
  char sig[KEEL_AGENT_SIG_HEX];
  char *job = NULL;
  int rc;

  if (!offline) {
    if (!(job = job_text(run_id, owner, a->id, spec, now_ms)))
      return keel_err_set(e, KEEL_ENOMEM, "out of memory");
    keel_agent_sign_job(sig, key->sk, job, strlen(job));
  }
  {
    k_val_t args[] = {K_TEXT(run_id),
                      K_TEXT(owner),
                      K_TEXT(a->id),
                      K_TEXT(a->hostname),
                      K_TEXT(offline ? "skipped" : "pending"),
                      K_TEXT(job),
                      K_TEXT(offline ? NULL : sig),
                      K_TEXT(offline ? "offline" : "")};
    rc = k_store_exec(s,
                      "INSERT INTO command_runs(id, command_id, agent_id, hostname, status,"
                      " job, sig, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      args, 8, NULL, NULL, e);
  }
  free(job);
  return rc;
}

static int add_run(k_store_t *s, const k_serverkey_t *key, const char *cmd_id, const k_agent_t *a,
                   const json_t *spec, int offline, int64_t now_ms, json_t *runs, keel_err_t *e) {
  char run_id[24];
  int rc;

  keel_random_id(run_id, sizeof run_id, "run_");
  if ((rc = insert_run(s, key, run_id, cmd_id, a, spec, offline, now_ms, e))) return rc;
  if (json_array_append_new(runs, json_pack("{s:s,s:s,s:s,s:s}", "run_id", run_id, "agent_id",
                                            a->id, "hostname", a->hostname, "status",
                                            offline ? "skipped" : "pending")))
    return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  return 0;
}

int k_exec_run_add(k_store_t *s, const k_serverkey_t *key, const char *owner_id, k_agent_t *a,
                   const json_t *spec, int64_t now_ms, char run_id[24], keel_err_t *e) {
  int rc;
  keel_random_id(run_id, 24, "run_");
  if ((rc = insert_run(s, key, run_id, owner_id, a, spec, 0, now_ms, e))) return rc;
  a->wake = 1;
  return 0;
}

/* Withdrawing pending runs (args: why, now_ms, then the WHERE's); each
 * withdrawn run's agent comes back as a row. */
#define WITHDRAW_SQL                                                                               \
  "UPDATE command_runs SET status = 'cancelled', error = ?, result_ms = ?"                        \
  " WHERE status = 'pending' AND "

typedef struct withdrawn {
  k_fleet_t *f; /* may be NULL */
  size_t n;
} withdrawn_t;

/* Its agent may be running the run: the held poll answers with a cancel. */
static int withdrawn_row(void *ud, const k_val_t *c, int n) {
  withdrawn_t *w = ud;
  k_agent_t *a;
  if (n < 1) return 0;
  w->n++;
  if (w->f && (a = k_fleet_find(w->f, txt(&c[0])))) a->wake = 1;
  return 0;
}

int k_exec_run_withdraw(k_store_t *s, k_fleet_t *f, const char *run_id, const char *why,
                        int64_t now_ms, int *withdrawn, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(why), K_INT(now_ms), K_TEXT(run_id)};
  withdrawn_t w = {f, 0};
  int rc = k_store_exec(s, WITHDRAW_SQL "id = ? RETURNING agent_id", args, 3, withdrawn_row, &w, e);
  if (withdrawn) *withdrawn = !rc && w.n;
  return rc;
}

int k_exec_create(k_store_t *s, k_fleet_t *f, const k_serverkey_t *key, const json_t *spec,
                  const keel_selector_t *sel, const char *created_by, int64_t now_ms,
                  json_t **out, keel_buf_t *detail, keel_err_t *e) {
  char id[24], ts[KEEL_TIME_STRLEN];
  json_t *runs = json_array(), *hosts = json_array(), *skipped = json_array(), *sum = NULL;
  json_t *stored = NULL, *envkeys = json_array();
  char *spec_text = NULL, *sum_text = NULL;
  size_t nhosts = 0, nskipped = 0;
  const char *k;
  json_t *v;
  int rc;

  *out = NULL;
  if (!runs || !hosts || !skipped || !envkeys) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  keel_random_id(id, sizeof id, "cmd_");
  stored = json_deep_copy(spec);
  if (!stored) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  json_object_del(stored, "target");
  if (!(spec_text = keel_json_canonical(stored))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  {
    k_val_t args[] = {K_TEXT(id), K_TEXT(created_by), K_INT(now_ms),
                      K_TEXT(keel_json_str(spec, "target")), K_TEXT(spec_text)};
    if ((rc = k_store_exec(s,
                           "INSERT INTO commands(id, created_by, created_ms, target, spec)"
                           " VALUES (?, ?, ?, ?, ?)",
                           args, 5, NULL, NULL, e)))
      goto out;
  }
  for (size_t i = 0; i < k_fleet_count(f); i++) {
    k_agent_t *a = k_fleet_at(f, i);
    int offline;
    if (!k_fleet_match(f, a, sel, NULL)) continue;
    offline = !a->online;
    if ((rc = add_run(s, key, id, a, spec, offline, now_ms, runs, e))) goto out;
    if (offline) {
      nskipped++;
      json_array_append_new(skipped, json_sprintf("%s/%s", a->id, a->hostname));
    } else {
      nhosts++;
      a->wake = 1;
      json_array_append_new(hosts, json_sprintf("%s/%s", a->id, a->hostname));
    }
  }
  keel_time_format(ts, now_ms);
  *out = json_pack("{s:s,s:s,s:s,s:s,s:s,s:O,s:I,s:I}", "id", id, "kind", "command", "target",
                   keel_json_str(spec, "target"), "created_by", created_by, "created_at", ts,
                   "runs", runs, "hosts", (json_int_t)nhosts, "skipped", (json_int_t)nskipped);
  if (!*out) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  /* The audit says what ran where; env values may be secrets, so only names. */
  json_object_foreach((json_t *)json_object_get(spec, "env"), k, v) json_array_append_new(envkeys, json_string(k));
  sum = json_pack("{s:s,s:O,s:O,s:O,s:O,s:O}", "command", id, "argv", json_object_get(spec, "argv"),
                  "shell", json_object_get(spec, "shell"), "env_names", envkeys, "hosts", hosts,
                  "skipped", skipped);
  sum_text = sum ? keel_json_canonical(sum) : NULL;
  keel_buf_reset(detail);
  if (sum_text && strlen(sum_text) > K_AUDIT_DETAIL_MAX) {
    /* Too many hosts to list: keep the head and say how many there were. */
    keel_buf_printf(detail, "%.*s... (%zu hosts, %zu skipped in all)", (int)(K_AUDIT_DETAIL_MAX - 64),
                    sum_text, nhosts, nskipped);
  } else if (sum_text) {
    keel_buf_puts(detail, sum_text);
  }
  rc = 0;
out:
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  json_decref(runs);
  json_decref(hosts);
  json_decref(skipped);
  json_decref(envkeys);
  json_decref(sum);
  json_decref(stored);
  free(spec_text);
  free(sum_text);
  return rc;
}

/* ---- jobs for an agent ------------------------------------------------------- */

typedef struct jobs_ctx {
  json_t *jobs;
  const json_t *running;
  int max;
} jobs_ctx_t;

static int listed(const json_t *arr, const char *id) {
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) if (json_is_string(v) && !strcmp(json_string_value(v), id)) return 1;
  return 0;
}

static int job_row(void *ud, const k_val_t *c, int n) {
  jobs_ctx_t *j = ud;
  if (n < 3) return 0;
  if (j->running && listed(j->running, txt(&c[0]))) return 0;
  if ((int)json_array_size(j->jobs) >= j->max) return 1;
  return json_array_append_new(j->jobs, json_pack("{s:s,s:s}", "job", txt(&c[1]), "sig", txt(&c[2])))
             ? KEEL_ENOMEM
             : 0;
}

static int one_row(void *ud, const k_val_t *c, int n) {
  (void)c;
  if (n >= 1) *(int *)ud = 1;
  return 0;
}

/* The runs of running (an agent's own list) that keeld withdrew. */
static int withdrawn_of(k_store_t *s, const char *agent_id, const json_t *running, json_t *cancel,
                        keel_err_t *e) {
  size_t i;
  json_t *v;
  json_array_foreach(running, i, v) {
    int hit = 0, rc;
    k_val_t args[] = {K_TEXT(json_string_value(v)), K_TEXT(agent_id)};
    if (!json_is_string(v)) continue;
    if ((rc = k_store_exec(s,
                           "SELECT 1 FROM command_runs WHERE id = ? AND agent_id = ?"
                           " AND status = 'cancelled'",
                           args, 2, one_row, &hit, e)))
      return rc;
    if (hit && json_array_append(cancel, v)) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  return 0;
}

int k_exec_jobs(k_store_t *s, const char *agent_id, const json_t *running, int max,
                json_t **jobs, json_t **cancel, keel_err_t *e) {
  jobs_ctx_t j = {json_array(), json_is_array(running) ? running : NULL, max};
  json_t *c = json_array();
  k_val_t args[] = {K_TEXT(agent_id)};
  int rc;
  *jobs = *cancel = NULL;
  if (!j.jobs || !c) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  rc = k_store_exec(s,
                    "SELECT id, job, sig FROM command_runs WHERE agent_id = ? AND status = 'pending'",
                    args, 1, job_row, &j, e);
  if (rc < 0) goto out;
  if (j.running && (rc = withdrawn_of(s, agent_id, j.running, c, e))) goto out;
  *jobs = j.jobs;
  *cancel = c;
  j.jobs = c = NULL;
  rc = 0;
out:
  json_decref(j.jobs);
  json_decref(c);
  return rc;
}

/* ---- results ------------------------------------------------------------------- */

static const keel_json_field_t result_fields[] = {
    {"run_id", KEEL_JSON_STRING, 1, 32},
    {"status", KEEL_JSON_STRING, 1, 16},
    {"exit_code", KEEL_JSON_INT, 0, 0},
    {"signal", KEEL_JSON_INT, 0, 0},
    {"stdout_b64", KEEL_JSON_STRING, 0, K_EXEC_OUTPUT_CAP_MAX / 3 * 4 + 4},
    {"stderr_b64", KEEL_JSON_STRING, 0, K_EXEC_OUTPUT_CAP_MAX / 3 * 4 + 4},
    {"stdout_truncated", KEEL_JSON_BOOL, 0, 0},
    {"stderr_truncated", KEEL_JSON_BOOL, 0, 0},
    {"started_at", KEEL_JSON_INT, 0, 0},
    {"ended_at", KEEL_JSON_INT, 0, 0},
    {"error", KEEL_JSON_STRING, 0, 1024},
    {NULL, 0, 0, 0},
};

static const char *const result_statuses[] = {"exited", "signaled", "timeout",  "interrupted",
                                              "failed", "refused",  "cancelled", NULL};

/* Decodes base64 into a new buffer (*out, *n); KEEL_EINVAL when malformed. */
static int unb64(const char *s, uint8_t **out, size_t *n) {
  size_t len = strlen(s), cap = len / 4 * 3 + 3;
  *out = malloc(cap ? cap : 1);
  *n = 0;
  if (!*out) return KEEL_ENOMEM;
  if (len && sodium_base642bin(*out, cap, s, len, NULL, n, NULL, sodium_base64_VARIANT_ORIGINAL)) {
    free(*out);
    *out = NULL;
    return KEEL_EINVAL;
  }
  return 0;
}

int k_exec_decode_result(const char *body, size_t len, json_t **out, keel_err_t *e) {
  json_t *in = NULL;
  const char *st, *rid;
  int rc, known = 0;

  *out = NULL;
  if ((rc = keel_json_parse(body, len, &in, e))) return rc;
  /* null is as good as absent for the optional members */
  {
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(in, tmp, k, v) if (json_is_null(v)) json_object_del(in, k);
  }
  if ((rc = keel_json_check(in, result_fields, e))) goto fail;
  st = keel_json_str(in, "status");
  rid = keel_json_str(in, "run_id");
  for (const char *const *p = result_statuses; *p; p++) known |= !strcmp(*p, st);
  if (!known) {
    rc = keel_err_set(e, KEEL_EINVAL,
                      "field 'status': expected exited, signaled, timeout, interrupted, failed,"
                      " refused or cancelled");
    goto fail;
  }
  if (strncmp(rid, "run_", 4) || strlen(rid) != 20) {
    rc = keel_err_set(e, KEEL_EINVAL, "field 'run_id': expected run_ and 16 characters");
    goto fail;
  }
  if (!strcmp(st, "exited") && !json_is_integer(json_object_get(in, "exit_code"))) {
    rc = keel_err_set(e, KEEL_EINVAL, "field 'exit_code': required when status is exited");
    goto fail;
  }
  for (int i = 0; i < 2; i++) {
    const char *f = i ? "stderr_b64" : "stdout_b64", *b = keel_json_str(in, f);
    uint8_t *bin;
    size_t n;
    if (!b) continue;
    if ((rc = unb64(b, &bin, &n))) {
      rc = rc == KEEL_ENOMEM ? keel_err_set(e, rc, "out of memory")
                             : keel_err_set(e, KEEL_EINVAL, "field '%s': not base64", f);
      goto fail;
    }
    free(bin);
  }
  *out = in;
  return 0;
fail:
  json_decref(in);
  return rc;
}

static int owner_row(void *ud, const k_val_t *c, int n) {
  char(*o)[32] = ud;
  if (n < 3) return 0;
  snprintf(o[0], 32, "%s", txt(&c[0]));
  snprintf(o[1], 32, "%s", txt(&c[1]));
  snprintf(o[2], 32, "%s", txt(&c[2]));
  return 0;
}

int k_exec_run_owner(k_store_t *s, const char *run_id, char agent_id[32], char command_id[32],
                     keel_err_t *e) {
  char o[3][32] = {"", "", ""};
  k_val_t args[] = {K_TEXT(run_id)};
  int rc = k_store_exec(s, "SELECT agent_id, command_id, status FROM command_runs WHERE id = ?",
                        args, 1, owner_row, o, e);
  if (rc) return rc;
  if (!o[0][0]) return keel_err_set(e, KEEL_ENOENT, "no run '%.32s'", run_id);
  memcpy(agent_id, o[0], 32);
  memcpy(command_id, o[1], 32);
  return 0;
}

/* What the host said of a run, in the column order of
 * OUTCOME_COLUMNS. */
#define OUTCOME_COLUMNS                                                                    \
  "exit_code = ?, signal = ?, stdout_b64 = ?, stderr_b64 = ?, stdout_truncated = ?,"      \
  " stderr_truncated = ?, stdout_digest = ?, stderr_digest = ?, started_ms = ?, ended_ms = ?"
#define OUTCOME_NVALS 10
static void outcome_vals(k_val_t v[OUTCOME_NVALS], const json_t *res,
                         char dig[2][KEEL_HASH_HEX]) {
  const json_t *xc = json_object_get(res, "exit_code"), *sg = json_object_get(res, "signal");
  const json_t *t0 = json_object_get(res, "started_at"), *t1 = json_object_get(res, "ended_at");
  const char *out_b64 = keel_json_str(res, "stdout_b64"), *err_b64 = keel_json_str(res, "stderr_b64");
  v[0] = xc ? K_INT(json_integer_value(xc)) : K_NULLV;
  v[1] = sg ? K_INT(json_integer_value(sg)) : K_NULLV;
  v[2] = K_TEXT(out_b64 ? out_b64 : "");
  v[3] = K_TEXT(err_b64 ? err_b64 : "");
  v[4] = K_INT(json_is_true(json_object_get(res, "stdout_truncated")));
  v[5] = K_INT(json_is_true(json_object_get(res, "stderr_truncated")));
  v[6] = K_TEXT(dig[0]);
  v[7] = K_TEXT(dig[1]);
  v[8] = t0 ? K_INT(json_integer_value(t0)) : K_NULLV;
  v[9] = t1 ? K_INT(json_integer_value(t1)) : K_NULLV;
}

int k_exec_store_result(k_store_t *s, const char *agent_id, const json_t *res, int64_t now_ms,
                        int *dup, keel_buf_t *detail, keel_err_t *e) {
  const char *rid = keel_json_str(res, "run_id"), *st = keel_json_str(res, "status");
  const char *err = keel_json_str(res, "error") ? keel_json_str(res, "error") : "";
  const json_t *xc = json_object_get(res, "exit_code"), *sg = json_object_get(res, "signal");
  char dig[2][KEEL_HASH_HEX];
  k_val_t args[OUTCOME_NVALS + 5];
  int rc;

  *dup = 0;
  for (int i = 0; i < 2; i++) {
    const char *b = keel_json_str(res, i ? "stderr_b64" : "stdout_b64");
    uint8_t *bin = NULL;
    size_t n = 0;
    if (b && (rc = unb64(b, &bin, &n))) return keel_err_set(e, KEEL_EINVAL, "output is not base64");
    keel_hash_hex(dig[i], bin ? (const void *)bin : "", n);
    free(bin);
  }
  outcome_vals(args, res, dig);
  args[OUTCOME_NVALS] = K_TEXT(err);
  args[OUTCOME_NVALS + 1] = K_TEXT(st);
  args[OUTCOME_NVALS + 2] = K_INT(now_ms);
  args[OUTCOME_NVALS + 3] = K_TEXT(rid);
  args[OUTCOME_NVALS + 4] = K_TEXT(agent_id);
  if ((rc = k_store_exec(s,
                         "UPDATE command_runs SET " OUTCOME_COLUMNS
                         ", error = ?, status = ?, result_ms = ?"
                         " WHERE id = ? AND agent_id = ? AND status = 'pending'",
                         args, OUTCOME_NVALS + 5, NULL, NULL, e)))
    return rc;
  *dup = k_store_changes(s) == 0;
  keel_buf_reset(detail);
  if (*dup) {
    /* Withdrawn before its result came: its outcome stays "cancelled", but
     * what the host did (the output up to the kill, how it ended) is kept
     * — once, the first result the agent sends (ended_ms set marks it). */
    if (!json_object_get(res, "ended_at")) args[9] = K_INT(now_ms);
    args[OUTCOME_NVALS + 2] = K_TEXT(err); /* the CASE takes err, st, err; the WHERE as above */
    if ((rc = k_store_exec(s,
                           "UPDATE command_runs SET " OUTCOME_COLUMNS
                           ", error = CASE WHEN ? = '' THEN error"
                           " ELSE error || '; on the host: ' || ? || ': ' || ? END"
                           " WHERE id = ? AND agent_id = ? AND status = 'cancelled'"
                           " AND ended_ms IS NULL",
                           args, OUTCOME_NVALS + 5, NULL, NULL, e)))
      return rc;
    if (k_store_changes(s) == 0)
      rc = keel_buf_printf(detail, "run %s: result already stored; ignored", rid);
    else
      rc = keel_buf_printf(detail,
                           "run %s: withdrawn earlier; the host's outcome kept: status=%s"
                           " stdout_blake2b=%s stderr_blake2b=%s",
                           rid, st, dig[0], dig[1]);
    return rc ? KEEL_ENOMEM : 0;
  }
  rc = keel_buf_printf(detail, "run %s: status=%s exit_code=%s%" JSON_INTEGER_FORMAT " signal=%s%" JSON_INTEGER_FORMAT
                       " stdout_blake2b=%s stderr_blake2b=%s",
                       rid, st, xc ? "" : "null/", xc ? json_integer_value(xc) : 0,
                       sg ? "" : "null/", sg ? json_integer_value(sg) : 0, dig[0], dig[1]);
  return rc ? KEEL_ENOMEM : 0;
}

/* Output bytes as text of at most cap bytes: NUL and invalid UTF-8
 * replaced, so it can be shown and interpolated.  *cut when shortened. */
static json_t *capped_text(const char *b64, size_t cap, int *cut) {
  uint8_t *bin = NULL;
  size_t n = 0;
  json_t *t;
  if (!b64 || unb64(b64, &bin, &n)) return json_string("");
  if (n > cap) {
    n = cap;
    *cut = 1;
  }
  for (size_t i = 0; i < n; i++)
    if (!bin[i]) bin[i] = '?';
  bin[n] = '\0'; /* unb64 leaves room: cap >= len/4*3+3 > n */
  keel_utf8_sanitize((char *)bin);
  t = json_string((const char *)bin);
  free(bin);
  return t;
}

typedef struct rres {
  size_t cap;
  json_t *out;
} rres_t;

static int result_row(void *ud, const k_val_t *c, int n) {
  rres_t *r = ud;
  int cut = 0;
  json_t *o, *so, *se;
  if (n < 10 || !strcmp(txt(&c[0]), "pending")) return 0;
  so = capped_text(c[3].type == K_VAL_TEXT ? c[3].s : NULL, r->cap, &cut);
  se = capped_text(c[4].type == K_VAL_TEXT ? c[4].s : NULL, r->cap, &cut);
  o = json_pack("{s:s,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:s}", "status", txt(&c[0]), "exit_code",
                int_or_null(&c[1]), "signal", int_or_null(&c[2]), "stdout", so, "stderr", se,
                "truncated", cut || c[5].i || c[6].i, "started_ms", int_or_null(&c[7]),
                "ended_ms", int_or_null(&c[8]), "error", txt(&c[9]));
  if (!o) return KEEL_ENOMEM;
  r->out = o;
  return 0;
}

int k_exec_run_result(k_store_t *s, const char *run_id, size_t cap, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(run_id)};
  rres_t r = {cap, NULL};
  int rc = k_store_exec(s,
                        "SELECT status, exit_code, signal, stdout_b64, stderr_b64, stdout_truncated,"
                        " stderr_truncated, started_ms, ended_ms, error FROM command_runs WHERE id = ?",
                        args, 1, result_row, &r, e);
  *out = NULL;
  if (rc == KEEL_ENOMEM) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if (rc) return rc;
  *out = r.out;
  return 0;
}

/* ---- reading ---------------------------------------------------------------------- */

/* Output as the API shows it: text when it is valid UTF-8, else text with
 * the bad bytes replaced plus the exact bytes in <name>_b64. */
static void set_output(json_t *o, const char *name, const char *b64) {
  uint8_t *bin = NULL;
  size_t n = 0;
  json_t *t;
  char key[32];

  if (!b64 || unb64(b64, &bin, &n)) {
    json_object_set_new(o, name, json_null());
    return;
  }
  t = json_stringn((const char *)bin, n);
  if (!t) {
    char *copy = malloc(n + 1);
    if (copy) {
      for (size_t i = 0; i < n; i++) copy[i] = bin[i] ? (char)bin[i] : '?';
      copy[n] = '\0';
      keel_utf8_sanitize(copy);
      t = json_string(copy);
      free(copy);
    }
    snprintf(key, sizeof key, "%s_b64", name);
    json_object_set_new(o, key, json_string(b64));
  }
  json_object_set_new(o, name, t ? t : json_null());
  free(bin);
}

static json_t *run_json(const k_val_t *c) {
  json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:b,s:b,s:o,s:o,s:s,s:o,s:o}", "run_id",
                        txt(&c[0]), "agent_id", txt(&c[1]), "hostname", txt(&c[2]), "status",
                        txt(&c[3]), "exit_code", int_or_null(&c[4]), "signal", int_or_null(&c[5]),
                        "stdout_truncated", (int)c[8].i, "stderr_truncated", (int)c[9].i,
                        "started_at", time_or_null(&c[10]), "ended_at", time_or_null(&c[11]),
                        "error", txt(&c[12]), "stdout_blake2b",
                        c[13].type == K_VAL_TEXT ? json_string(c[13].s) : json_null(),
                        "stderr_blake2b", c[14].type == K_VAL_TEXT ? json_string(c[14].s) : json_null());
  if (!o) return NULL;
  if (c[10].type == K_VAL_INT && c[11].type == K_VAL_INT)
    json_object_set_new(o, "duration_ms", json_integer(c[11].i - c[10].i));
  set_output(o, "stdout", c[6].type == K_VAL_TEXT ? c[6].s : NULL);
  set_output(o, "stderr", c[7].type == K_VAL_TEXT ? c[7].s : NULL);
  return o;
}

static int runs_row(void *ud, const k_val_t *c, int n) {
  if (n < 15) return 0;
  return json_array_append_new(ud, run_json(c)) ? KEEL_ENOMEM : 0;
}

static json_t *command_json(const k_val_t *c) {
  json_t *spec = json_loads(txt(&c[4]), 0, NULL);
  return json_pack("{s:s,s:s,s:s,s:o,s:s,s:o}", "id", txt(&c[0]), "kind", "command", "created_by",
                   txt(&c[1]), "created_at", time_or_null(&c[2]), "target", txt(&c[3]), "spec",
                   spec ? spec : json_object());
}

static int command_row(void *ud, const k_val_t *c, int n) {
  json_t **o = ud;
  if (n < 5) return 0;
  *o = command_json(c);
  return 0;
}

/* A command's summary counts runs by what became of them. */
typedef struct counts {
  size_t total, pending, ok, failed, skipped, cancelled;
} counts_t;

static void count_run(counts_t *n, const char *st, int exit_zero) {
  n->total++;
  if (!strcmp(st, "pending")) n->pending++;
  else if (!strcmp(st, "skipped")) n->skipped++;
  else if (!strcmp(st, "cancelled")) n->cancelled++;
  else if (!strcmp(st, "exited") && exit_zero) n->ok++;
  else n->failed++;
}

static json_t *counts_json(const counts_t *n) {
  return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "total", (json_int_t)n->total, "pending",
                   (json_int_t)n->pending, "succeeded", (json_int_t)n->ok, "failed",
                   (json_int_t)n->failed, "skipped", (json_int_t)n->skipped, "cancelled",
                   (json_int_t)n->cancelled);
}

static int count_row(void *ud, const k_val_t *c, int n) {
  if (n >= 2) count_run(ud, txt(&c[0]), c[1].type == K_VAL_INT && c[1].i == 0);
  return 0;
}

int k_exec_summary(k_store_t *s, const char *id, json_t **summary, int *done, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(id)};
  counts_t n = {0};
  int rc = k_store_exec(s, "SELECT status, exit_code FROM command_runs WHERE command_id = ?", args,
                        1, count_row, &n, e);
  *summary = NULL;
  if (rc) return rc;
  if (!(*summary = counts_json(&n))) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  *done = n.pending == 0;
  return 0;
}

int k_exec_get(k_store_t *s, const char *id, json_t **out, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(id)};
  json_t *cmd = NULL, *runs = json_array();
  counts_t cnt = {0};
  size_t i;
  json_t *r;
  int rc;

  *out = NULL;
  if (!runs) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(s, "SELECT id, created_by, created_ms, target, spec FROM commands WHERE id = ?",
                    args, 1, command_row, &cmd, e);
  if (!rc && !cmd) rc = keel_err_set(e, KEEL_ENOENT, "no command '%.32s'", id);
  if (!rc)
    rc = k_store_exec(s,
                      "SELECT id, agent_id, hostname, status, exit_code, signal, stdout_b64,"
                      " stderr_b64, stdout_truncated, stderr_truncated, started_ms, ended_ms,"
                      " error, stdout_digest, stderr_digest FROM command_runs WHERE command_id = ?"
                      " ORDER BY hostname, agent_id",
                      args, 1, runs_row, runs, e);
  if (rc) {
    json_decref(cmd);
    json_decref(runs);
    return rc < 0 ? rc : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  json_array_foreach(runs, i, r) {
    const json_t *xc = json_object_get(r, "exit_code");
    count_run(&cnt, keel_json_str(r, "status"), json_is_integer(xc) && json_integer_value(xc) == 0);
  }
  json_object_set_new(cmd, "runs", runs);
  json_object_set_new(cmd, "summary", counts_json(&cnt));
  json_object_set_new(cmd, "done", json_boolean(cnt.pending == 0));
  *out = cmd;
  return 0;
}

/* ---- cancelling a command ---------------------------------------------------------- */

static int open_row(void *ud, const k_val_t *c, int n) {
  if (n < 2) return 0;
  return json_array_append_new(ud, json_pack("{s:s,s:s}", "run_id", txt(&c[0]), "agent_id",
                                             txt(&c[1])))
             ? KEEL_ENOMEM
             : 0;
}

int k_exec_open_runs(k_store_t *s, const char *id, json_t **runs, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(id)};
  int found = 0, rc;
  *runs = json_array();
  if (!*runs) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  rc = k_store_exec(s, "SELECT 1 FROM commands WHERE id = ?", args, 1, one_row, &found, e);
  if (!rc && !found) rc = keel_err_set(e, KEEL_ENOENT, "no command '%.32s'", id);
  if (!rc)
    rc = k_store_exec(s,
                      "SELECT id, agent_id FROM command_runs WHERE command_id = ?"
                      " AND status = 'pending' ORDER BY id",
                      args, 1, open_row, *runs, e);
  if (rc) {
    json_decref(*runs);
    *runs = NULL;
    return rc < 0 ? rc : keel_err_set(e, KEEL_ENOMEM, "out of memory");
  }
  return 0;
}

int k_exec_cancel(k_store_t *s, k_fleet_t *f, const char *id, const char *why, int64_t now_ms,
                  size_t *n, keel_err_t *e) {
  k_val_t args[] = {K_TEXT(why), K_INT(now_ms), K_TEXT(id)};
  withdrawn_t w = {f, 0};
  int found = 0;
  int rc = k_store_exec(s, "SELECT 1 FROM commands WHERE id = ?", &args[2], 1, one_row, &found, e);
  if (!rc && !found) rc = keel_err_set(e, KEEL_ENOENT, "no command '%.32s'", id);
  /* every run in one statement, as k_exec_run_withdraw does one */
  if (!rc)
    rc = k_store_exec(s, WITHDRAW_SQL "command_id = ? RETURNING agent_id", args, 3, withdrawn_row,
                      &w, e);
  if (!rc && !w.n)
    rc = keel_err_set(e, KEEL_ECONFLICT, "command %.32s has finished: nothing to cancel", id);
  *n = w.n;
  return rc;
}

typedef struct clist {
  json_t *items;
  int limit, n;
  char last[64];
} clist_t;

static int clist_row(void *ud, const k_val_t *c, int n) {
  clist_t *l = ud;
  if (n < 5) return 0;
  if (l->n == l->limit) return 1;
  json_array_append_new(l->items, command_json(c));
  snprintf(l->last, sizeof l->last, "%" PRId64 ".%s", c[2].i, txt(&c[0]));
  l->n++;
  return 0;
}

int k_exec_list(k_store_t *s, const char *cursor, int limit, json_t **items, char **next,
                keel_err_t *e) {
  clist_t l = {json_array(), limit, 0, ""};
  int64_t ms;
  const char *cid;
  int rc;

  *items = NULL;
  *next = NULL;
  if (!l.items) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  if ((rc = k_store_time_cursor(cursor, &ms, &cid, e))) {
    json_decref(l.items);
    return rc;
  }
  {
    k_val_t args[] = {K_INT(ms), K_INT(ms), K_TEXT(cid), K_INT(limit + 1)};
    rc = k_store_exec(s,
                      "SELECT id, created_by, created_ms, target, spec FROM commands"
                      " WHERE created_ms < ? OR (created_ms = ? AND id < ?)"
                      " ORDER BY created_ms DESC, id DESC LIMIT ?",
                      args, 4, clist_row, &l, e);
  }
  if (rc < 0) {
    json_decref(l.items);
    return rc;
  }
  if (rc == 1) *next = strdup(l.last);
  *items = l.items;
  return 0;
}
