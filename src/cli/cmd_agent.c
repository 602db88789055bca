/* cmd_agent.c — keel agent token create/list, agent list/show/tag/retire. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"
#include "keel/selector.h"

int cmd_agent_token_create(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"tags", "k=v,...", NULL}, {"ttl", "DURATION", NULL}, {"uses", "N", NULL},
                      {NULL, NULL, NULL}};
  json_t *body = NULL, *t = NULL, *tags = NULL;
  keel_err_t e = {0};
  int rc;

  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  if (!(body = json_object())) return cli_fail("out of memory");
  if (opts[0].value) {
    if (keel_tags_parse(opts[0].value, strlen(opts[0].value), &tags, &e)) {
      rc = cli_usage(c, "--tags: %s", e.msg);
      goto out;
    }
    json_object_set_new(body, "tags", tags);
  }
  if (opts[1].value) json_object_set_new(body, "ttl", json_string(opts[1].value));
  if (opts[2].value) {
    char *end;
    long long n = strtoll(opts[2].value, &end, 10);
    if (!opts[2].value[0] || *end || n < 1) {
      rc = cli_usage(c, "--uses: expected a positive integer, got '%s'", opts[2].value);
      goto out;
    }
    json_object_set_new(body, "uses", json_integer(n));
  }
  if ((rc = api_call(c, "POST", "/v1/agent-tokens", body, &t))) goto out;
  if (c->json) {
    out_json(t, stdout);
  } else {
    static const char *const keys[] = {"id", "uses_max", "expires_at", "status", NULL};
    char *tg = keel_json_canonical(json_object_get(t, "tags"));
    if ((rc = out_kv(t, keys, stdout))) {
      free(tg);
      goto out;
    }
    printf("tags        %s\n", tg ? tg : "{}");
    free(tg);
    printf("\nenrollment token (shown once):\n%s\n",
           keel_json_str(t, "token") ? keel_json_str(t, "token") : "-");
  }
out:
  json_decref(body);
  json_decref(t);
  return rc;
}

static int etoken_row(cli_t *c, json_t *t, void *ud) {
  char uses[48], a[24], b[24];
  const char *row[5];
  (void)c;
  snprintf(uses, sizeof uses, "%s/%s", out_field(t, "uses", a, sizeof a),
           out_field(t, "uses_max", b, sizeof b));
  row[0] = keel_json_str(t, "id");
  row[1] = keel_json_str(t, "status");
  row[2] = uses;
  row[3] = keel_json_str(t, "expires_at");
  row[4] = keel_json_str(t, "created_by");
  return out_table_add(ud, row);
}

int cmd_agent_token_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"ID", "STATUS", "USES", "EXPIRES", "CREATED BY"};
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/agent-tokens", NULL, 0, heads, 5, etoken_row);
}

/* "k=v,k2=v2" of a tags object, for tables. */
static char *tags_text(const json_t *tags) {
  keel_buf_t b;
  const char *k;
  json_t *v;
  keel_buf_init(&b, 1 << 16);
  json_object_foreach((json_t *)tags, k, v) {
    if (keel_buf_printf(&b, "%s%s=%s", b.len ? "," : "", k, json_string_value(v) ? json_string_value(v) : "")) break;
  }
  return keel_buf_steal(&b);
}

static int agent_row(cli_t *c, json_t *a, void *ud) {
  char *tags;
  const char *row[5];
  int rc;
  (void)c;
  tags = tags_text(json_object_get(a, "tags"));
  row[0] = keel_json_str(a, "id");
  row[1] = keel_json_str(a, "hostname");
  row[2] = keel_json_str(a, "status");
  row[3] = keel_json_str(a, "last_seen");
  row[4] = tags;
  rc = out_table_add(ud, row);
  free(tags);
  return rc;
}

int cmd_agent_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"ID", "HOSTNAME", "STATUS", "LAST SEEN", "TAGS"};
  cli_opt_t opts[] = {{"target", "SELECTOR", NULL}, {"status", "online|offline", NULL},
                      {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/agents", opts, 0, heads, 5, agent_row);
}

static int print_agent(cli_t *c, json_t *a) {
  static const char *const keys[] = {"id", "hostname", "status", "last_seen", "agent_version",
                                     "created_at", "version", NULL};
  const json_t *inv = json_object_get(a, "inventory");
  char *tags, *invs;
  int rc;
  if (c->json) {
    out_json(a, stdout);
    return 0;
  }
  if ((rc = out_kv(a, keys, stdout))) return rc;
  tags = tags_text(json_object_get(a, "tags"));
  printf("tags           %s\n", tags && *tags ? tags : "-");
  free(tags);
  if (inv) {
    invs = json_dumps(inv, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (invs) printf("inventory\n%s\n", out_safe(invs));
    free(invs);
  }
  return 0;
}

int cmd_agent_show(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *a = NULL;
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  if (!(rc = api_call_id(c, "GET", "agents", pos[0], NULL, NULL, &a))) rc = print_agent(c, a);
  json_decref(a);
  return rc;
}

int cmd_agent_tag(cli_t *c, int argc, char **argv) {
  const char *pos[33];
  json_t *a = NULL, *tags, *body = NULL, *res = NULL;
  int rc, n = 0;

  if ((rc = cli_parse(c, argc, argv, NULL, pos, 2, 33)) != CLI_GO) return rc;
  if ((rc = api_call_id(c, "GET", "agents", pos[0], NULL, NULL, &a))) goto out;
  tags = json_object_get(a, "tags");
  if (!json_is_object(tags)) {
    rc = cli_fail("bad answer: agent has no tags object");
    goto out;
  }
  for (int i = 1; i < 33 && pos[i]; i++, n++) {
    const char *eq = strchr(pos[i], '=');
    size_t len = strlen(pos[i]);
    keel_err_t e = {0};
    if (!eq && len > 1 && pos[i][len - 1] == '-') {
      char key[128];
      snprintf(key, sizeof key, "%.*s", (int)(len - 1), pos[i]);
      json_object_del(tags, key);
      continue;
    }
    if (!eq) {
      rc = cli_usage(c, "'%s': expected k=v to set or k- to remove", pos[i]);
      goto out;
    }
    {
      char key[128];
      snprintf(key, sizeof key, "%.*s", (int)(eq - pos[i]), pos[i]);
      if (keel_tag_check(key, eq + 1, &e)) {
        rc = cli_usage(c, "%s", e.msg);
        goto out;
      }
      json_object_set_new(tags, key, json_string(eq + 1));
    }
  }
  body = json_pack("{s:O,s:O}", "version", json_object_get(a, "version"), "tags", tags);
  if (!body) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = api_call_id(c, "PATCH", "agents", pos[0], NULL, body, &res))) goto out;
  rc = print_agent(c, res);
out:
  json_decref(a);
  json_decref(body);
  json_decref(res);
  return rc;
}

int cmd_agent_retire(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *a = NULL;
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  if (!(rc = api_call_id(c, "DELETE", "agents", pos[0], NULL, NULL, &a))) {
    if (c->json) out_json(a, stdout);
    else {
      char line[400];
      snprintf(line, sizeof line, "retired %s (%s)", keel_json_str(a, "id") ? keel_json_str(a, "id") : "?",
               keel_json_str(a, "hostname") ? keel_json_str(a, "hostname") : "?");
      printf("%s\n", out_safe(line));
    }
  }
  json_decref(a);
  return rc;
}
