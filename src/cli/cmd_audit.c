/* cmd_audit.c — keel audit log, keel audit verify. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

static int audit_row(cli_t *c, json_t *r, void *ud) {
  char seq[32], st[32];
  const char *row[7];
  (void)c;
  row[0] = out_field(r, "seq", seq, sizeof seq);
  row[1] = keel_json_str(r, "time");
  row[2] = keel_json_str(r, "actor");
  row[3] = keel_json_str(r, "action");
  row[4] = keel_json_str(r, "target");
  row[5] = keel_json_str(r, "outcome");
  row[6] = out_field(r, "status", st, sizeof st);
  return out_table_add(ud, row);
}

int cmd_audit_log(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"SEQ",    "TIME",    "ACTOR", "ACTION",
                                      "TARGET", "OUTCOME", "STATUS"};
  cli_opt_t opts[] = {{"since", "RFC3339", NULL},
                      {"actor", "A", NULL},
                      {"action", "A", NULL},
                      {"limit", "N", NULL},
                      {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/audit", opts, 0, heads, 7, audit_row);
}

int cmd_audit_verify(cli_t *c, int argc, char **argv) {
  json_t *r = NULL;
  char n[32], bad[32], tmp[512];
  const char *reason;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  if ((rc = api_call(c, "GET", "/v1/audit/verify", NULL, &r))) return rc;
  if (!json_is_boolean(json_object_get(r, "intact"))) {
    rc = cli_fail("bad answer from %s: no 'intact' in the verify result", c->http.shown);
    goto out;
  }
  rc = json_is_true(json_object_get(r, "intact")) ? CLI_OK : CLI_FAIL;
  if (c->json) {
    out_json(r, stdout);
    goto out;
  }
  if (rc == CLI_OK) {
    const char *cnt = out_field(r, "records", n, sizeof n);
    printf("intact: %s records\n", cnt ? cnt : "0");
  } else {
    reason = keel_json_str(r, "reason");
    snprintf(tmp, sizeof tmp, "%s", reason ? reason : "unknown reason");
    const char *seq = out_field(r, "first_bad_seq", bad, sizeof bad);
    printf("broken: record %s: %s\n", seq ? seq : "?", out_safe(tmp));
  }
out:
  json_decref(r);
  return rc;
}
