/* cmd_token.c — keel token create/list/revoke. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

static const char *const token_keys[] = {"id",         "name",       "user",   "user_id",
                                         "created_at", "expires_at", "revoked_at", "status",
                                         NULL};

int cmd_token_create(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"name", "S", NULL},
                      {"user", "NAME", NULL},
                      {"ttl", "DURATION", NULL},
                      {"expires", "RFC3339", NULL},
                      {NULL, NULL, NULL}};
  json_t *body = NULL, *t = NULL;
  const char *secret;
  int rc;

  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  if (opts[2].value && opts[3].value) return cli_usage(c, "give --ttl or --expires, not both");
  if (!(body = json_object())) return cli_fail("out of memory");
  if ((opts[0].value && json_object_set_new(body, "name", json_string(opts[0].value))) ||
      (opts[1].value && json_object_set_new(body, "user", json_string(opts[1].value))) ||
      (opts[2].value && json_object_set_new(body, "ttl", json_string(opts[2].value))) ||
      (opts[3].value && json_object_set_new(body, "expires_at", json_string(opts[3].value)))) {
    rc = cli_fail("out of memory");
    goto out;
  }
  if ((rc = api_call(c, "POST", "/v1/tokens", body, &t))) goto out;
  if (c->json) {
    out_json(t, stdout);
    goto out;
  }
  if ((rc = out_kv(t, token_keys, stdout))) goto out;
  secret = keel_json_str(t, "token");
  /* The secret goes last, alone on its line, so scripts can `tail -1`. */
  printf("\nsecret (shown once, store it now):\n%s\n", secret ? secret : "-");
out:
  json_decref(body);
  json_decref(t);
  return rc;
}

static int token_row(cli_t *c, json_t *t, void *ud) {
  const char *exp = keel_json_str(t, "expires_at");
  const char *row[6] = {keel_json_str(t, "id"),         keel_json_str(t, "name"),
                        keel_json_str(t, "user"),       keel_json_str(t, "status"),
                        keel_json_str(t, "created_at"), exp ? exp : "never"};
  (void)c;
  return out_table_add(ud, row);
}

int cmd_token_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"ID", "NAME", "USER", "STATUS", "CREATED", "EXPIRES"};
  cli_opt_t opts[] = {{"user", "NAME", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/tokens", opts, 0, heads, 6, token_row);
}

int cmd_token_revoke(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *t = NULL;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  if (!(rc = api_call_id(c, "DELETE", "tokens", pos[0], NULL, NULL, &t))) {
    if (c->json) out_json(t, stdout);
    else printf("revoked %s\n", keel_json_str(t, "id") ? keel_json_str(t, "id") : pos[0]);
  }
  json_decref(t);
  return rc;
}
