/* cmd_alert.c — keel alert list / rules (rules are applied with keel apply). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

/* "instance=web-1,job=node" from an alert's labels, without the ones every
 * row of the table shows already. */
static void label_text(const json_t *labels, char *out, size_t n) {
  const char *k;
  json_t *v;
  size_t len = 0;
  out[0] = '\0';
  json_object_foreach((json_t *)labels, k, v) {
    if (!strcmp(k, "alertname") || !strcmp(k, "severity") || !json_is_string(v)) continue;
    len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s=%s", len ? "," : "", k,
                            json_string_value(v));
    if (len >= n) break;
  }
}

static int alert_row(cli_t *c, json_t *a, void *ud) {
  char labels[512];
  const char *row[6];
  (void)c;
  label_text(json_object_get(a, "labels"), labels, sizeof labels);
  row[0] = keel_json_str(a, "rule");
  row[1] = keel_json_str(a, "state");
  row[2] = keel_json_str(a, "severity");
  row[3] = keel_json_str(a, "active_since");
  row[4] = keel_json_str(a, "fingerprint");
  row[5] = labels;
  return out_table_add(ud, row);
}

int cmd_alert_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"RULE", "STATE", "SEVERITY", "ACTIVE SINCE", "FINGERPRINT",
                                      "LABELS"};
  cli_opt_t opts[] = {{"state", "STATE", NULL}, {"rule", "NAME", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/alerts", opts, 0, heads, 6, alert_row);
}

static int rule_row(cli_t *c, json_t *r, void *ud) {
  char owner[160], alerts[64], took[32] = "";
  const json_t *n = json_object_get(r, "alerts");
  const char *row[7];
  (void)c;
  if (keel_json_str(r, "application"))
    snprintf(owner, sizeof owner, "app %s", keel_json_str(r, "application"));
  else
    snprintf(owner, sizeof owner, "team %s",
             keel_json_str(r, "team") ? keel_json_str(r, "team") : "-");
  snprintf(alerts, sizeof alerts, "%lld firing, %lld pending",
           (long long)json_integer_value(json_object_get(n, "firing")),
           (long long)json_integer_value(json_object_get(n, "pending")));
  if (json_is_number(json_object_get(r, "evaluation_seconds")))
    snprintf(took, sizeof took, "%.0f us",
             json_number_value(json_object_get(r, "evaluation_seconds")) * 1e6);
  row[0] = keel_json_str(r, "name");
  row[1] = owner;
  row[2] = keel_json_str(r, "severity");
  row[3] = alerts;
  row[4] = keel_json_str(r, "last_evaluation");
  row[5] = took;
  row[6] = keel_json_str(r, "last_error") ? keel_json_str(r, "last_error")
                                          : keel_json_str(r, "health");
  return out_table_add(ud, row);
}

int cmd_alert_rules(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"NAME",           "OWNER", "SEVERITY", "ALERTS",
                                      "LAST EVALUATION", "TOOK",  "HEALTH"};
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/alert-rules", NULL, 0, heads, 7, rule_row);
}
