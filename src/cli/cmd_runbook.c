/* cmd_runbook.c — keel runbook list/show (runbooks are applied with keel apply). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

static int runbook_row(cli_t *c, json_t *r, void *ud) {
  char owner[160] = "-";
  const json_t *o = json_object_get(r, "owner");
  const char *row[5];
  char ver[32];
  (void)c;
  if (keel_json_str(o, "application"))
    snprintf(owner, sizeof owner, "app %s", keel_json_str(o, "application"));
  else if (keel_json_str(o, "team"))
    snprintf(owner, sizeof owner, "team %s", keel_json_str(o, "team"));
  row[0] = keel_json_str(r, "name");
  row[1] = owner;
  row[2] = out_field(r, "version", ver, sizeof ver);
  row[3] = keel_json_str(r, "updated_at");
  row[4] = keel_json_str(r, "description");
  return out_table_add(ud, row);
}

int cmd_runbook_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"NAME", "OWNER", "VERSION", "UPDATED", "DESCRIPTION"};
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/runbooks", NULL, 0, heads, 5, runbook_row);
}

int cmd_runbook_show(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *r = NULL;
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  if (!(rc = api_call_id(c, "GET", "runbooks", pos[0], NULL, NULL, &r))) {
    if (c->json) {
      out_json(r, stdout);
    } else {
      const json_t *doc = json_object_get(r, "document"), *st;
      size_t i;
      static const char *const keys[] = {"name", "version", "updated_at", NULL};
      out_kv(r, keys, stdout);
      printf("targets     %s\n", keel_json_str(doc, "targets") ? keel_json_str(doc, "targets") : "-");
      printf("steps:\n");
      json_array_foreach(json_object_get(doc, "steps"), i, st) {
        const char *kinds[] = {"command", "script", "http", "sleep_ms", "approval", "assert", NULL};
        const char *kind = "?";
        for (int k = 0; kinds[k]; k++)
          if (json_object_get(st, kinds[k])) kind = kinds[k];
        printf("  %zu. %s (%s)\n", i + 1, keel_json_str(st, "name") ? keel_json_str(st, "name") : "?", kind);
      }
    }
  }
  json_decref(r);
  return rc;
}
