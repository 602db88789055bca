/* cmd_misc.c — keel whoami, keel version. */
#include <stdio.h>
#include <stdlib.h>

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
    const json_t *org = json_object_get(r, "organization"), *teams = json_object_get(r, "teams");
    keel_buf_t tb;
    size_t i;
    json_t *v;
    char model[96];
    keel_buf_init(&tb, 65536);
    json_array_foreach(teams, i, v)
        keel_buf_printf(&tb, "%s%s (%s)", i ? ", " : "", keel_json_str(v, "name"),
                        keel_json_str(v, "kind") ? keel_json_str(v, "kind") : "?");
    snprintf(model, sizeof model, "%s%s%s%s", keel_json_str(org, "operating_model") ? keel_json_str(org, "operating_model") : "",
             keel_json_str(org, "base") ? " (base " : "",
             keel_json_str(org, "base") ? keel_json_str(org, "base") : "",
             keel_json_str(org, "base") ? ")" : "");
    {
      const char *more[][2] = {{"organization", keel_json_str(org, "name")},
                               {"operating_model", model},
                               {"teams", tb.data}};
      out_table_init(&t, 2, NULL);
      for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++)
        if ((rc = out_table_add(&t, rows[k]))) break;
      for (size_t k = 0; !rc && k < sizeof more / sizeof more[0]; k++)
        rc = out_table_add(&t, more[k]);
      if (!rc) out_table_print(&t, stdout);
      out_table_free(&t);
    }
    keel_buf_free(&tb);
    /* what the statements that name the caller say, one line each */
    if (!rc && json_array_size(json_object_get(r, "may"))) {
      printf("\nstatements that apply to you:\n");
      json_array_foreach(json_object_get(r, "may"), i, v) {
        char *acts = json_dumps(json_object_get(v, "actions"), JSON_COMPACT);
        char *res = json_dumps(json_object_get(v, "resources"), JSON_COMPACT);
        printf("  %-9s %s on %s  (%s)\n", keel_json_str(v, "effect"), acts ? acts : "?",
               res ? res : "?", keel_json_str(v, "statement"));
        free(acts);
        free(res);
      }
    }
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
