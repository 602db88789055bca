/* api_agent.c — enrollment tokens, agents, commands, and the agents' own
 * routes (docs/agent-protocol.md), including the long-poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/json.h"
#include "keel/time.h"
#include "server.h"

#define POLL_MAX_JOBS 64

/* ---- enrollment tokens ----------------------------------------------------------- */

static const keel_json_field_t etoken_fields[] = {
    {"tags", KEEL_JSON_OBJECT, 0, 0},
    {"ttl", KEEL_JSON_STRING, 0, 32},
    {"uses", KEEL_JSON_INT, 0, 0},
    {NULL, 0, 0, 0},
};

int k_decode_etoken_create(const char *body, size_t len, int64_t now_ms, json_t **out,
                           int64_t *expires_ms, keel_err_t *e) {
  const char *ttl;
  int64_t v = 3600 * 1000;
  int rc;

  *expires_ms = 0;
  if (len == 0) {
    *out = json_object();
    if (!*out) return keel_err_set(e, KEEL_ENOMEM, "out of memory");
  } else if ((rc = keel_json_decode(body, len, etoken_fields, out, e))) {
    return rc;
  }
  ttl = keel_json_str(*out, "ttl");
  if (ttl && (keel_duration_parse(ttl, &v) || v > 366LL * 86400 * 1000)) {
    json_decref(*out);
    *out = NULL;
    return keel_err_set(e, KEEL_EINVAL, "field 'ttl': expected a duration up to 366d (e.g. 1h, 7d)");
  }
  *expires_ms = now_ms + v;
  return 0;
}

int k_api_etoken_create_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int64_t exp;
  int rc = k_decode_etoken_create(req->body.data, req->body.len, keel_now_ms(), &req->in, &exp, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  json_object_set_new(req->in, "_expires_ms", json_integer(exp));
  /* The token lets hosts join where its tags put them. */
  {
    const json_t *tags = json_object_get(req->in, "tags");
    char host[200];
    k_org_host_path(srv->org, "new", "", tags, host, sizeof host);
    /* app/A/env/E/host/new -> app/A/env/E/agent-token */
    *strrchr(host, '/') = '\0';
    *strrchr(host, '/') = '\0';
    snprintf(req->target.path, sizeof req->target.path, "%.170s/agent-token", host);
    req->target.tags = tags;
  }
  return 0;
}

int k_api_etoken_create(k_server_t *srv, k_req_t *req) {
  const json_t *uses = json_object_get(req->in, "uses");
  keel_err_t e = {0};
  int rc = k_fleet_token_create(srv->fleet, json_object_get(req->in, "tags"),
                                json_integer_value(json_object_get(req->in, "_expires_ms")),
                                uses ? json_integer_value(uses) : 1, req->actor, keel_now_ms(),
                                &req->out, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "agent-token/%s", keel_json_str(req->out, "id"));
  req->status = 201;
  return 0;
}

int k_api_etoken_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = k_fleet_token_list(srv->fleet, k_req_query(req, "cursor"), limit, keel_now_ms(), &items,
                          &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

/* ---- enrollment ------------------------------------------------------------------- */

static const keel_json_field_t enroll_fields[] = {
    {"public_key", KEEL_JSON_STRING, 1, 64},
    {"hostname", KEEL_JSON_STRING, 1, 253},
    {"tags", KEEL_JSON_OBJECT, 0, 0},
    {"inventory", KEEL_JSON_OBJECT, 0, 0},
    {"agent_version", KEEL_JSON_STRING, 0, 64},
    {NULL, 0, 0, 0},
};

int k_decode_enroll(const char *body, size_t len, json_t **out, keel_err_t *e) {
  return keel_json_decode(body, len, enroll_fields, out, e);
}

int k_api_enroll_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_decode_enroll(req->body.data, req->body.len, &req->in, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* Judged as the host it would become: guardrails on tags apply here. */
  if ((rc = k_fleet_enroll_tags(srv->fleet, req->who.token_id, json_object_get(req->in, "tags"),
                                &req->target_tags, &e)))
    return k_req_fail_err(req, rc, &e);
  k_org_host_path(srv->org, "new", keel_json_str(req->in, "hostname"), req->target_tags,
                  req->target.path, sizeof req->target.path);
  req->target.tags = req->target_tags;
  return 0;
}

int k_api_enroll(k_server_t *srv, k_req_t *req) {
  char pk[2 * KEEL_AGENT_PK_BYTES + 1];
  keel_err_t e = {0};
  int rc = k_fleet_enroll(srv->fleet, req->who.token_id, req->in, keel_now_ms(), &req->out, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  keel_hex(pk, srv->key.pk, sizeof srv->key.pk);
  json_object_set_new(req->out, "server_public_key", json_string(pk));
  snprintf(req->target.path, sizeof req->target.path, "agent/%s",
           keel_json_str(req->out, "agent_id"));
  keel_buf_printf(&req->detail, "hostname=%s", keel_json_str(req->in, "hostname"));
  {
    /* enrolled agents are online from here (fleet.c): both are events */
    const k_agent_t *a = k_fleet_find(srv->fleet, keel_json_str(req->out, "agent_id"));
    if (a && ((rc = k_events_emit_host(srv, a, "agent.enrolled", &e)) ||
              (rc = k_events_emit_host(srv, a, "agent.online", &e))))
      return k_req_fail_err(req, rc, &e);
  }
  req->status = 201;
  return 0;
}

/* command.finished once no run of command id is pending (inside the
 * caller's unit): {"id", "status": succeeded | failed | cancelled,
 * "summary": counts} — failed when any run failed, cancelled when none
 * failed and some were cancelled. */
static int command_finished(k_server_t *srv, const char *id, keel_err_t *e) {
  json_t *sum = NULL;
  int done = 0, rc = k_exec_summary(srv->store, id, &sum, &done, e);
  if (rc || !done) {
    json_decref(sum);
    return rc;
  }
  return k_event_emit_new(
      srv->events, "command.finished", id, NULL, NULL,
      json_pack("{s:s,s:s,s:o}", "id", id, "status",
                json_integer_value(json_object_get(sum, "failed"))      ? "failed"
                : json_integer_value(json_object_get(sum, "cancelled")) ? "cancelled"
                                                                        : "succeeded",
                "summary", sum),
      e);
}

/* ---- the long-poll -------------------------------------------------------------- */

/* Answers a's held poll (if any) with its pending jobs. */
/* The poll's answer: {"jobs", "heartbeat_ms", "cancel"? (runs the agent
 * listed as running that keeld withdrew; only when there are some, so an
 * agent that predates it sees the answer it knows)}.  Takes jobs and
 * cancel. */
static json_t *poll_answer(k_server_t *srv, json_t *jobs, json_t *cancel) {
  json_t *o = json_pack("{s:o,s:I}", "jobs", jobs, "heartbeat_ms",
                        (json_int_t)k_fleet_heartbeat_ms(srv->fleet));
  if (o && json_array_size(cancel)) json_object_set(o, "cancel", cancel);
  json_decref(cancel);
  return o;
}

static void answer_waiter(k_server_t *srv, k_agent_t *a) {
  k_req_t *req = a->waiter;
  json_t *jobs = NULL, *cancel = NULL;
  keel_err_t e = {0};

  a->waiter = NULL;
  a->wake = 0;
  if (!req) return;
  if (k_exec_jobs(srv->store, a->id, json_object_get(req->in, "running"), POLL_MAX_JOBS, &jobs,
                  &cancel, &e)) {
    keel_log(&srv->log, KEEL_LOG_ERROR, "poll of %s: %s", a->id, e.msg);
    k_req_fail_err(req, KEEL_EIO, &e);
  } else {
    req->status = 200;
    req->out = poll_answer(srv, jobs, cancel);
  }
  if (srv->stopping) req->close = 1; /* the agent reconnects to the next keeld */
  /* The jobs may sit in the open batch: the answer leaves once durable, so
   * an agent never runs a job keeld could still lose. */
  k_http_async_done(srv, req);
}

void k_agent_wake(k_server_t *srv, int force) {
  if (!srv->fleet_wake && !force) return;
  srv->fleet_wake = 0;
  for (size_t i = 0; i < k_fleet_count(srv->fleet); i++) {
    k_agent_t *a = k_fleet_at(srv->fleet, i);
    if (a->waiter && (a->wake || force)) answer_waiter(srv, a);
    else a->wake = 0;
  }
}

void k_agent_expire(k_server_t *srv, int64_t mono_ms) {
  for (size_t i = 0; i < k_fleet_count(srv->fleet); i++) {
    k_agent_t *a = k_fleet_at(srv->fleet, i);
    if (a->waiter && mono_ms >= a->waiter_deadline_ms) answer_waiter(srv, a);
  }
}

static const keel_json_field_t poll_fields[] = {
    {"running", KEEL_JSON_ARRAY, 0, 4096},
    {NULL, 0, 0, 0},
};

int k_api_agent_poll_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc;
  (void)srv;
  if (req->body.len && (rc = keel_json_decode(req->body.data, req->body.len, poll_fields, &req->in, &e)))
    return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "agent/%s/jobs", req->agent->id);
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", req->agent->id);
  return 0;
}

int k_api_agent_poll(k_server_t *srv, k_req_t *req) {
  k_agent_t *a = req->agent;
  json_t *jobs = NULL, *cancel = NULL;
  keel_err_t e = {0};
  int rc;

  k_fleet_seen(srv->fleet, a, keel_now_ms());
  if (a->waiter) answer_waiter(srv, a); /* a newer poll replaces a stale one */
  if ((rc = k_exec_jobs(srv->store, a->id, json_object_get(req->in, "running"), POLL_MAX_JOBS,
                        &jobs, &cancel, &e)))
    return k_req_fail_err(req, KEEL_EIO, &e);
  /* An agent leaves a run it is stopping out of "running", so a cancel
   * answered at once cannot make it poll in a loop. */
  if (json_array_size(jobs) || json_array_size(cancel) || srv->stopping) {
    req->out = poll_answer(srv, jobs, cancel);
    return 0;
  }
  json_decref(jobs);
  json_decref(cancel);
  /* Hold it: answered by k_agent_wake when jobs arrive, or empty at the
   * heartbeat, which keeps the agent's liveness fresh. */
  a->waiter = req;
  a->waiter_deadline_ms = keel_mono_ms() + k_fleet_heartbeat_ms(srv->fleet);
  req->async = 1;
  return 0;
}

/* ---- results and inventory -------------------------------------------------------- */

int k_api_agent_result_decode(k_server_t *srv, k_req_t *req) {
  char agent[32], cmd[32];
  keel_err_t e = {0};
  int rc = k_exec_decode_result(req->body.data, req->body.len, &req->in, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  if ((rc = k_exec_run_owner(srv->store, keel_json_str(req->in, "run_id"), agent, cmd, &e)))
    return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "command/%s/run/%s", cmd,
           keel_json_str(req->in, "run_id"));
  json_object_set_new(req->in, "_owner", json_string(cmd));
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", agent);
  return 0;
}

int k_api_agent_result(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int dup = 0;
  int rc = k_exec_store_result(srv->store, req->agent->id, req->in, keel_now_ms(), &dup,
                               &req->detail, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* a step of a runbook execution: its engine takes the result next tick */
  if (!dup && !strncmp(keel_json_str(req->in, "_owner"), "exe_", 4))
    k_xec_on_result(srv->xec, keel_json_str(req->in, "_owner"), keel_json_str(req->in, "run_id"));
  else if (!dup && (rc = command_finished(srv, keel_json_str(req->in, "_owner"), &e)))
    return k_req_fail_err(req, rc, &e);
  req->out = json_pack("{s:s,s:b}", "ack", keel_json_str(req->in, "run_id"), "duplicate", dup);
  return 0;
}

static const keel_json_field_t inventory_fields[] = {
    {"hostname", KEEL_JSON_STRING, 1, 253},
    {"inventory", KEEL_JSON_OBJECT, 1, 0},
    {NULL, 0, 0, 0},
};

int k_api_agent_inventory_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = keel_json_decode(req->body.data, req->body.len, inventory_fields, &req->in, &e);
  (void)srv;
  if (rc) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "agent/%s/inventory", req->agent->id);
  snprintf(req->target.owner_id, sizeof req->target.owner_id, "%s", req->agent->id);
  return 0;
}

int k_api_agent_inventory(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_fleet_set_inventory(srv->fleet, req->agent, keel_json_str(req->in, "hostname"),
                                 json_object_get(req->in, "inventory"), keel_now_ms(), &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  req->out = json_object();
  return 0;
}

/* ---- agents (users' side) ----------------------------------------------------------- */

int k_api_agent_list_decode(k_server_t *srv, k_req_t *req) {
  const char *st = k_req_query(req, "status");
  (void)srv;
  if (st && strcmp(st, "online") && strcmp(st, "offline"))
    return k_req_fail(req, 400, "bad_request", "query parameter 'status': expected online or offline");
  snprintf(req->target.path, sizeof req->target.path, "hosts");
  return 0;
}

int k_api_agent_list(k_server_t *srv, k_req_t *req) {
  const char *target = k_req_query(req, "target"), *cursor = k_req_query(req, "cursor");
  const char *status = k_req_query(req, "status");
  keel_selector_t *sel = NULL;
  json_t *items = json_array();
  keel_err_t e = {0};
  const char *last = NULL;
  int limit, n = 0, more = 0;

  if (k_req_limit(req, &limit)) goto fail;
  if (!items) {
    k_req_fail_err(req, KEEL_ENOMEM, NULL);
    goto fail;
  }
  if (target && keel_selector_parse(target, strlen(target), &sel, &e)) {
    k_req_fail(req, 400, "bad_request", "query parameter 'target': %s", e.msg);
    goto fail;
  }
  for (size_t i = 0; i < k_fleet_count(srv->fleet); i++) {
    k_agent_t *a = k_fleet_at(srv->fleet, i);
    json_t *one;
    if (cursor && strcmp(a->id, cursor) <= 0) continue;
    if (!k_fleet_match(srv->fleet, a, sel, status)) continue;
    {
      /* a list shows only the hosts the caller may read */
      char path[200];
      k_org_host_path(srv->org, a->id, a->hostname, a->tags, path, sizeof path);
      if (!k_authz_req(srv, req, "agent:read", path, a->tags, 0)) continue;
    }
    if (n == limit) {
      more = 1;
      break;
    }
    if (k_fleet_agent_json(srv->fleet, a->id, 0, &one, &e) || json_array_append_new(items, one)) {
      k_req_fail_err(req, KEEL_ENOMEM, NULL);
      goto fail;
    }
    last = a->id;
    n++;
  }
  k_req_set_page(req, items, more ? last : NULL);
  keel_selector_free(sel);
  return 0;
fail:
  keel_selector_free(sel);
  json_decref(items);
  return -1;
}

/* An agent is judged as its host: app/APP/env/ENV/host/ID with its tags
 * (tags: the ones to judge, e.g. the new ones of a PATCH; NULL = current). */
static void host_target(k_server_t *srv, k_req_t *req, const json_t *tags) {
  k_agent_t *a = k_fleet_find(srv->fleet, req->params[0]);
  if (!tags && a) tags = a->tags;
  k_org_host_path(srv->org, req->params[0], a ? a->hostname : "", tags, req->target.path,
                  sizeof req->target.path);
  req->target.tags = tags;
}

int k_api_agent_one_decode(k_server_t *srv, k_req_t *req) {
  host_target(srv, req, NULL);
  return 0;
}

int k_api_agent_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_fleet_agent_json(srv->fleet, req->params[0], 1, &req->out, &e);
  return rc ? k_req_fail_err(req, rc, &e) : 0;
}

static const keel_json_field_t agent_update_fields[] = {
    {"version", KEEL_JSON_INT, 1, 0},
    {"tags", KEEL_JSON_OBJECT, 1, 0},
    {NULL, 0, 0, 0},
};

int k_decode_agent_update(const char *body, size_t len, json_t **out, keel_err_t *e) {
  return keel_json_decode(body, len, agent_update_fields, out, e);
}

int k_api_agent_update_decode(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_decode_agent_update(req->body.data, req->body.len, &req->in, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* judged with the tags it would have: a guardrail on tags sees them */
  host_target(srv, req, json_object_get(req->in, "tags"));
  return 0;
}

int k_api_agent_update(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  int rc = k_fleet_set_tags(srv->fleet, req->params[0], json_object_get(req->in, "tags"),
                            json_integer_value(json_object_get(req->in, "version")), keel_now_ms(),
                            &req->out, &e);
  char *tags;
  if (rc) return k_req_fail_err(req, rc, &e);
  if ((tags = keel_json_canonical(json_object_get(req->in, "tags")))) {
    keel_buf_printf(&req->detail, "tags=%s", tags);
    free(tags);
  }
  return 0;
}

int k_api_agent_retire(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  void *waiter = NULL;
  int rc = k_fleet_retire(srv->fleet, req->params[0], keel_now_ms(), &waiter, &req->out, &e);
  k_req_t *w = waiter;
  if (rc) return k_req_fail_err(req, rc, &e);
  if (w) {
    /* Its held poll ends now; the next one is refused. */
    w->status = 200;
    w->out = json_pack("{s:[],s:I}", "jobs", "heartbeat_ms",
                       (json_int_t)k_fleet_heartbeat_ms(srv->fleet));
    k_http_async_done(srv, w);
  }
  return 0;
}

/* ---- commands ---------------------------------------------------------------------- */

int k_api_command_create_decode(k_server_t *srv, k_req_t *req) {
  keel_selector_t *sel = NULL;
  keel_err_t e = {0};
  int rc = k_exec_decode(req->body.data, req->body.len, &req->in, &sel, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "commands");
  /* A command is judged host by host: one host refused refuses it all,
   * before anything is created (and the 403 names the host). */
  for (size_t i = 0; i < k_fleet_count(srv->fleet); i++) {
    k_agent_t *a = k_fleet_at(srv->fleet, i);
    char path[200];
    if (!k_fleet_match(srv->fleet, a, sel, NULL)) continue;
    k_org_host_path(srv->org, a->id, a->hostname, a->tags, path, sizeof path);
    if (!k_authz_req(srv, req, "exec:run", path, a->tags, 1)) {
      keel_selector_free(sel);
      return -1;
    }
  }
  keel_selector_free(sel); /* parsed again in apply: decode only proves it valid */
  /* The router still judges exec:run on the "commands" collection, so a
   * command matching no host is not a way around the policy. */
  return 0;
}

int k_api_command_create(k_server_t *srv, k_req_t *req) {
  const char *target = keel_json_str(req->in, "target");
  keel_selector_t *sel = NULL;
  keel_err_t e = {0};
  int rc;

  if ((rc = keel_selector_parse(target, strlen(target), &sel, &e)))
    return k_req_fail(req, 400, "bad_request", "field 'target': %s", e.msg);
  rc = k_exec_create(srv->store, srv->fleet, &srv->key, req->in, sel, req->actor, keel_now_ms(),
                     &req->out, &req->detail, &e);
  keel_selector_free(sel);
  /* no host online: finished as it starts */
  if (!rc) rc = command_finished(srv, keel_json_str(req->out, "id"), &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  snprintf(req->target.path, sizeof req->target.path, "command/%s", keel_json_str(req->out, "id"));
  srv->fleet_wake = 1;
  req->status = 201;
  return 0;
}

static const keel_json_field_t no_fields[] = {{NULL, 0, 0, 0}};

/* Stopping a command is judged as starting it, host by host: whoever may
 * not run commands on a host may not stop one there either. */
int k_api_command_cancel_decode(k_server_t *srv, k_req_t *req) {
  json_t *runs = NULL, *r;
  keel_err_t e = {0};
  size_t i;
  int rc;
  if (req->body.len &&
      (rc = keel_json_decode(req->body.data, req->body.len, no_fields, &req->in, &e)))
    return k_req_fail_err(req, rc, &e);
  /* judged on the collection as a new command is; an unknown id is the
   * apply step's 404, after that judgement */
  snprintf(req->target.path, sizeof req->target.path, "commands");
  rc = k_exec_open_runs(srv->store, req->params[0], &runs, &e);
  if (rc == KEEL_ENOENT) return 0;
  if (rc) return k_req_fail_err(req, rc, &e);
  json_array_foreach(runs, i, r) {
    k_agent_t *a = k_fleet_find(srv->fleet, keel_json_str(r, "agent_id"));
    char path[200];
    if (!a) continue; /* retired: nobody to judge its host by, nobody to stop */
    k_org_host_path(srv->org, a->id, a->hostname, a->tags, path, sizeof path);
    if (!k_authz_req(srv, req, "exec:run", path, a->tags, 1)) {
      json_decref(runs);
      return -1;
    }
  }
  json_decref(runs);
  return 0;
}

int k_api_command_cancel(k_server_t *srv, k_req_t *req) {
  const char *id = req->params[0];
  char why[200];
  size_t n = 0;
  keel_err_t e = {0};
  int rc;

  snprintf(why, sizeof why, "cancelled by %s", req->actor);
  if ((rc = k_exec_cancel(srv->store, srv->fleet, id, why, keel_now_ms(), &n, &e)) ||
      (rc = command_finished(srv, id, &e)) || (rc = k_exec_get(srv->store, id, &req->out, &e)))
    return k_req_fail_err(req, rc, &e);
  keel_buf_printf(&req->detail, "command %s: %zu runs withdrawn", id, n);
  srv->fleet_wake = 1;
  return 0;
}

int k_api_command_list(k_server_t *srv, k_req_t *req) {
  json_t *items;
  char *next = NULL;
  keel_err_t e = {0};
  int limit, rc;
  if (k_req_limit(req, &limit)) return -1;
  rc = k_exec_list(srv->store, k_req_query(req, "cursor"), limit, &items, &next, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  k_req_set_page(req, items, next);
  free(next);
  return 0;
}

int k_api_command_one_decode(k_server_t *srv, k_req_t *req) {
  (void)srv;
  snprintf(req->target.path, sizeof req->target.path, "commands");
  return 0;
}

int k_api_command_get(k_server_t *srv, k_req_t *req) {
  keel_err_t e = {0};
  json_t *runs;
  size_t i;
  int rc = k_exec_get(srv->store, req->params[0], &req->out, &e);
  if (rc) return k_req_fail_err(req, rc, &e);
  /* Only the runs (and output) of hosts the caller may read. */
  runs = json_object_get(req->out, "runs");
  for (i = json_array_size(runs); i-- > 0;) {
    json_t *r = json_array_get(runs, i);
    k_agent_t *a = k_fleet_find(srv->fleet, keel_json_str(r, "agent_id"));
    char path[200];
    k_org_host_path(srv->org, keel_json_str(r, "agent_id"), a ? a->hostname : "",
                    a ? a->tags : NULL, path, sizeof path);
    if (!k_authz_req(srv, req, "exec:read", path, a ? a->tags : NULL, 0)) json_array_remove(runs, i);
  }
  return 0;
}
