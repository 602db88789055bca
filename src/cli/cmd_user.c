/* cmd_user.c — keel user create/list/show/update. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

static const char *const user_keys[] = {"id",    "name",       "role",       "display_name",
                                        "email", "disabled",   "created_at", "updated_at",
                                        "version", NULL};

static int show_user(cli_t *c, json_t *u) {
  if (c->json) {
    out_json(u, stdout);
    return CLI_OK;
  }
  return out_kv(u, user_keys, stdout);
}

/* Sets key to a string option's value when it was given. */
static int set_str(json_t *body, const char *key, const char *value) {
  if (!value) return 0;
  return json_object_set_new(body, key, json_string(value)) ? cli_fail("out of memory") : 0;
}

int cmd_user_create(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"role", "ROLE", NULL}, {"display-name", "S", NULL}, {"email", "S", NULL},
                      {NULL, NULL, NULL}};
  const char *pos[1];
  json_t *body = NULL, *u = NULL;
  int rc;

  if ((rc = cli_parse(c, argc, argv, opts, pos, 1, 1)) != CLI_GO) return rc;
  if (!(body = json_object())) return cli_fail("out of memory");
  if ((rc = set_str(body, "name", pos[0])) || (rc = set_str(body, "role", opts[0].value)) ||
      (rc = set_str(body, "display_name", opts[1].value)) ||
      (rc = set_str(body, "email", opts[2].value)))
    goto out;
  if ((rc = api_call(c, "POST", "/v1/users", body, &u))) goto out;
  rc = show_user(c, u);
out:
  json_decref(body);
  json_decref(u);
  return rc;
}

static int user_row(cli_t *c, json_t *u, void *ud) {
  out_table_t *t = ud;
  char v[32];
  const char *row[6];
  (void)c;
  row[0] = keel_json_str(u, "name");
  row[1] = keel_json_str(u, "role");
  row[2] = json_is_true(json_object_get(u, "disabled")) ? "disabled" : "active";
  row[3] = keel_json_str(u, "display_name");
  row[4] = keel_json_str(u, "id");
  row[5] = out_field(u, "version", v, sizeof v);
  return out_table_add(t, row);
}

int cmd_user_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"NAME", "ROLE", "STATUS", "DISPLAY NAME", "ID", "VERSION"};
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/users", NULL, 0, heads, 6, user_row);
}

int cmd_user_show(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *u = NULL;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  if (!(rc = api_call_id(c, "GET", "users", pos[0], NULL, NULL, &u))) rc = show_user(c, u);
  json_decref(u);
  return rc;
}

/* "true"/"false" (and yes/no) into a JSON boolean; NULL when neither. */
static json_t *parse_bool(const char *s) {
  if (!strcmp(s, "true") || !strcmp(s, "yes")) return json_true();
  if (!strcmp(s, "false") || !strcmp(s, "no")) return json_false();
  return NULL;
}

int cmd_user_update(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"version", "N", NULL},      {"role", "ROLE", NULL},
                      {"disabled", "BOOL", NULL},  {"display-name", "S", NULL},
                      {"email", "S", NULL},        {NULL, NULL, NULL}};
  const char *pos[1];
  json_t *body = NULL, *u = NULL, *b;
  long long ver;
  char *end;
  int rc;

  if ((rc = cli_parse(c, argc, argv, opts, pos, 1, 1)) != CLI_GO) return rc;
  if (!opts[0].value) return cli_usage(c, "missing --version (the version you last read)");
  ver = strtoll(opts[0].value, &end, 10);
  if (!opts[0].value[0] || *end || ver < 1)
    return cli_usage(c, "--version: expected a positive integer, got '%s'", opts[0].value);
  if (!opts[1].value && !opts[2].value && !opts[3].value && !opts[4].value)
    return cli_usage(c, "nothing to change (give --role, --disabled, --display-name or --email)");
  if (!(body = json_pack("{s:I}", "version", (json_int_t)ver))) return cli_fail("out of memory");
  if (opts[2].value) {
    if (!(b = parse_bool(opts[2].value))) {
      rc = cli_usage(c, "--disabled: expected true or false, got '%s'", opts[2].value);
      goto out;
    }
    json_object_set_new(body, "disabled", b);
  }
  if ((rc = set_str(body, "role", opts[1].value)) ||
      (rc = set_str(body, "display_name", opts[3].value)) ||
      (rc = set_str(body, "email", opts[4].value)))
    goto out;
  if ((rc = api_call_id(c, "PATCH", "users", pos[0], NULL, body, &u))) goto out;
  rc = show_user(c, u);
out:
  json_decref(body);
  json_decref(u);
  return rc;
}
