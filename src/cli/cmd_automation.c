/* cmd_automation.c — keel automation rules|show|runs|delete|disable|enable
 * (docs/automation.md).  Rules are applied with keel apply -f. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

/* Says on stderr when automation is switched off: tables stay tables. */
static int switch_note(cli_t *c) {
  json_t *sw = NULL;
  int rc = api_call(c, "GET", "/v1/automation/switch", NULL, &sw);
  if (!rc && !c->json && json_is_false(json_object_get(sw, "enabled"))) {
    char msg[900];
    snprintf(msg, sizeof msg, "automation is switched OFF (by %s at %s: %s); rules only record what they skip",
             keel_json_str(sw, "by") ? keel_json_str(sw, "by") : "-",
             keel_json_str(sw, "at") ? keel_json_str(sw, "at") : "-",
             keel_json_str(sw, "reason") ? keel_json_str(sw, "reason") : "");
    fprintf(stderr, "keel: %s\n", out_safe(msg));
  }
  json_decref(sw);
  return rc;
}

static int rule_row(cli_t *c, json_t *r, void *ud) {
  const json_t *on = json_object_get(r, "on");
  char owner[160], ver[32], on_text[400];
  const char *row[7];
  (void)c;
  snprintf(owner, sizeof owner, "%s %s", keel_json_str(r, "application") ? "app" : "team",
           keel_json_str(r, "application") ? keel_json_str(r, "application") : keel_json_str(r, "team"));
  snprintf(on_text, sizeof on_text, "%s%s%s", keel_json_str(on, "type"),
           keel_json_str(on, "match") && *keel_json_str(on, "match") ? " " : "",
           keel_json_str(on, "match") ? keel_json_str(on, "match") : "");
  row[0] = keel_json_str(r, "name");
  row[1] = owner;
  row[2] = keel_json_str(r, "owner");
  row[3] = on_text;
  row[4] = keel_json_str(r, "mode");
  row[5] = json_is_true(json_object_get(r, "enabled")) ? "yes" : "no";
  row[6] = out_field(r, "version", ver, sizeof ver);
  return out_table_add(ud, row);
}

int cmd_automation_rules(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"NAME", "OWNER", "RUNS AS", "ON", "MODE", "ENABLED", "VERSION"};
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  if ((rc = switch_note(c))) return rc;
  return api_list_table(c, "/v1/automation/rules", NULL, 0, heads, 7, rule_row);
}

/* A rule by name: GET (show) or DELETE. */
static int one_rule(cli_t *c, int argc, char **argv, const char *method) {
  const char *pos[1];
  json_t *r = NULL;
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  rc = api_call_id(c, method, "automation/rules", pos[0], NULL, NULL, &r);
  if (!rc && c->json) out_json(r, stdout);
  else if (!rc && !strcmp(method, "DELETE")) printf("deleted automation rule %s\n", pos[0]);
  else if (!rc) out_json(json_object_get(r, "document"), stdout);
  json_decref(r);
  return rc;
}

int cmd_automation_show(cli_t *c, int argc, char **argv) { return one_rule(c, argc, argv, "GET"); }
int cmd_automation_delete(cli_t *c, int argc, char **argv) { return one_rule(c, argc, argv, "DELETE"); }

static int run_row(cli_t *c, json_t *r, void *ud) {
  const json_t *ev = json_object_get(r, "event");
  char event[300], what[200];
  const char *row[6];
  (void)c;
  snprintf(event, sizeof event, "%s %s", keel_json_str(ev, "type"), keel_json_str(ev, "subject"));
  if (keel_json_str(r, "execution_id"))
    snprintf(what, sizeof what, "%s (%s)", keel_json_str(r, "execution_id"),
             keel_json_str(r, "execution_state") ? keel_json_str(r, "execution_state") : "?");
  else
    snprintf(what, sizeof what, "%s", keel_json_str(r, "guard") ? keel_json_str(r, "guard") : "");
  row[0] = keel_json_str(r, "at");
  row[1] = keel_json_str(r, "rule");
  row[2] = event;
  row[3] = keel_json_str(r, "outcome");
  row[4] = what;
  row[5] = keel_json_str(r, "reason");
  return out_table_add(ud, row);
}

int cmd_automation_runs(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"AT", "RULE", "EVENT", "OUTCOME", "EXECUTION / GUARD", "REASON"};
  cli_opt_t opts[] = {{"rule", "NAME", NULL}, {"limit", "N", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/automation/runs", opts, 50, heads, 6, run_row);
}

/* PUT /v1/automation/switch */
static int set_switch(cli_t *c, int enabled, const char *reason) {
  json_t *body = json_pack("{s:b}", "enabled", enabled), *sw = NULL;
  int rc;
  if (!body) return cli_fail("out of memory");
  if (reason) json_object_set_new(body, "reason", json_string(reason));
  rc = api_call(c, "PUT", "/v1/automation/switch", body, &sw);
  if (!rc && c->json) out_json(sw, stdout);
  else if (!rc)
    printf("automation is %s\n", enabled ? "on: rules run again" : "OFF: rules start nothing until `keel automation enable`");
  json_decref(body);
  json_decref(sw);
  return rc;
}

int cmd_automation_disable(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"reason", "TEXT", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  if (!opts[0].value || !*opts[0].value) return cli_usage(c, "--reason TEXT is required: say why");
  return set_switch(c, 0, opts[0].value);
}

int cmd_automation_enable(cli_t *c, int argc, char **argv) {
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  return set_switch(c, 1, NULL);
}
