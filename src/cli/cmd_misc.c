/* cmd_misc.c — keel whoami, keel version. */
#include "cli.h"
#include "keel/json.h"
#include "keel/version.h"

int cmd_whoami(cli_t *c, int argc, char **argv) {
  json_t *r = NULL, *user, *tok;
  out_table_t t;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  if ((rc = api_call(c, "GET", "/v1/whoami", NULL, &r))) return rc;
  if (c->json) {
    out_json(r, stdout);
    goto out;
  }
  user = json_object_get(r, "user");
  tok = json_object_get(r, "token");
  {
    const char *exp = keel_json_str(tok, "expires_at");
    const char *rows[][2] = {
        {"user", keel_json_str(user, "name")},
        {"user_id", keel_json_str(user, "id")},
        {"role", keel_json_str(user, "role")},
        {"token_id", keel_json_str(tok, "id")},
        {"token_name", keel_json_str(tok, "name")},
        {"expires_at", exp ? exp : (tok ? "never" : NULL)},
    };
    out_table_init(&t, 2, NULL);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
      if ((rc = out_table_add(&t, rows[i]))) break;
    if (!rc) out_table_print(&t, stdout);
    out_table_free(&t);
  }
out:
  json_decref(r);
  return rc;
}

int cmd_version(cli_t *c, int argc, char **argv) {
  json_t *v;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  /* The API has no version route yet, so only the client speaks here. */
  if (!c->json) {
    printf("keel %s\n", KEEL_VERSION);
    return CLI_OK;
  }
  v = json_pack("{s:s}", "client", KEEL_VERSION);
  if (!v) return cli_fail("out of memory");
  out_json(v, stdout);
  json_decref(v);
  return CLI_OK;
}
