/* cmd_incident.c — keel incident list|show|ack|resolve|comment and keel
 * maintenance list (docs/incidents.md). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

static const char *s_or(const json_t *o, const char *k, const char *dflt) {
  const char *s = keel_json_str(o, k);
  return s && *s ? s : dflt;
}

static int incident_row(cli_t *c, json_t *it, void *ud) {
  char alerts[48];
  const char *row[7];
  (void)c;
  snprintf(alerts, sizeof alerts, "%lld/%lld",
           (long long)json_integer_value(json_object_get(it, "firing")),
           (long long)json_integer_value(json_object_get(it, "alert_count")));
  row[0] = keel_json_str(it, "id");
  row[1] = keel_json_str(it, "state");
  row[2] = keel_json_str(it, "severity");
  row[3] = s_or(it, "application", s_or(it, "team", "-"));
  row[4] = alerts;
  row[5] = keel_json_str(it, "opened_at");
  row[6] = keel_json_str(it, "title");
  return out_table_add(ud, row);
}

int cmd_incident_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"ID", "STATE", "SEVERITY", "OWNER", "FIRING", "OPENED", "TITLE"};
  cli_opt_t opts[] = {{"state", "open|acked|resolved", NULL}, {"team", "NAME", NULL},
                      {"limit", "N", NULL}, {NULL, NULL, NULL}};
  int rc;
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  return api_list_table(c, "/v1/incidents", opts, 50, heads, 7, incident_row);
}

/* One line of text from the server, made safe for the terminal. */
static void line(const char *fmt, const char *a, const char *b, const char *c3, const char *d) {
  char buf[1200];
  snprintf(buf, sizeof buf, fmt, a ? a : "-", b ? b : "-", c3 ? c3 : "-", d ? d : "");
  printf("%s\n", out_safe(buf));
}

static void show(const json_t *inc) {
  static const char *const keys[] = {"id", "title", "state", "severity", "team", "application",
                                     "opened_at", "acked_by", "resolved_by", NULL};
  const json_t *a;
  size_t i;
  out_kv(inc, keys, stdout);
  printf("alerts:\n");
  json_array_foreach(json_object_get(inc, "alerts"), i, a)
      line("  %-9s %s  %s%s", keel_json_str(a, "state"), keel_json_str(a, "subject"),
           keel_json_str(json_object_get(a, "annotations"), "summary"), "");
  printf("timeline:\n");
  json_array_foreach(json_object_get(inc, "timeline"), i, a)
      line("  %s  %-24s %s  %s", keel_json_str(a, "time"), keel_json_str(a, "kind"),
           s_or(a, "actor", "-"), keel_json_str(a, "text"));
  if (json_array_size(json_object_get(inc, "notifications"))) printf("notifications:\n");
  json_array_foreach(json_object_get(inc, "notifications"), i, a) {
    char what[200];
    snprintf(what, sizeof what, "%s %s", s_or(a, "transition", "-"), s_or(a, "channel", "-"));
    line("  %-40s %-10s %s%s", what, keel_json_str(a, "status"),
         s_or(a, "last_error", s_or(a, "window", "")), "");
  }
}

int cmd_incident_show(cli_t *c, int argc, char **argv) {
  const char *pos[1];
  json_t *inc = NULL;
  int rc;
  if ((rc = cli_parse(c, argc, argv, NULL, pos, 1, 1)) != CLI_GO) return rc;
  if (!(rc = api_call_id(c, "GET", "incidents", pos[0], NULL, NULL, &inc))) {
    if (c->json) out_json(inc, stdout);
    else show(inc);
  }
  json_decref(inc);
  return rc;
}

/* ack / resolve (optional --text) and comment (TEXT required). */
static int act(cli_t *c, int argc, char **argv, const char *what, const char *did, int comment) {
  cli_opt_t opts[] = {{"text", "TEXT", NULL}, {NULL, NULL, NULL}};
  const char *pos[2];
  const char *text;
  json_t *body = NULL, *res = NULL, *s;
  int rc;

  if ((rc = cli_parse(c, argc, argv, comment ? NULL : opts, pos, comment ? 2 : 1, comment ? 2 : 1)) !=
      CLI_GO)
    return rc;
  text = comment ? pos[1] : opts[0].value;
  if (!(body = json_object())) return cli_fail("out of memory");
  if (text && (!(s = json_string(text)) || json_object_set_new(body, "text", s))) {
    json_decref(body);
    return cli_usage(c, "the text is not valid UTF-8");
  }
  if (!(rc = api_call_id(c, "POST", "incidents", pos[0], what, body, &res))) {
    if (c->json) out_json(res, stdout);
    else line("%s %s: %s%s", did, keel_json_str(res, "id"), keel_json_str(res, "state"), "");
  }
  json_decref(body);
  json_decref(res);
  return rc;
}

int cmd_incident_ack(cli_t *c, int argc, char **argv) { return act(c, argc, argv, "ack", "acked", 0); }
int cmd_incident_resolve(cli_t *c, int argc, char **argv) {
  return act(c, argc, argv, "resolve", "resolved", 0);
}
int cmd_incident_comment(cli_t *c, int argc, char **argv) {
  return act(c, argc, argv, "comment", "commented on", 1);
}

int cmd_maintenance_list(cli_t *c, int argc, char **argv) {
  static const char *const heads[] = {"NAME", "TEAM", "ACTIVE", "WHEN", "SELECTOR", "REASON"};
  json_t *res = NULL, *w;
  out_table_t t;
  size_t i;
  int rc;

  if ((rc = cli_parse(c, argc, argv, NULL, NULL, 0, 0)) != CLI_GO) return rc;
  if ((rc = api_call(c, "GET", "/v1/maintenance", NULL, &res))) return rc;
  if (c->json) {
    out_json(res, stdout);
    json_decref(res);
    return 0;
  }
  out_table_init(&t, 6, heads);
  json_array_foreach(json_object_get(res, "items"), i, w) {
    char when[200], active[64];
    const char *row[6];
    if (keel_json_str(w, "cron"))
      snprintf(when, sizeof when, "cron '%s' for %s", keel_json_str(w, "cron"), s_or(w, "duration", "?"));
    else
      snprintf(when, sizeof when, "%s .. %s", s_or(w, "start", "?"), s_or(w, "end", "?"));
    if (json_is_true(json_object_get(w, "active")))
      snprintf(active, sizeof active, "until %s", s_or(w, "active_until", "?"));
    else
      snprintf(active, sizeof active, "no");
    row[0] = keel_json_str(w, "name");
    row[1] = keel_json_str(w, "team");
    row[2] = active;
    row[3] = when;
    row[4] = keel_json_str(w, "selector");
    row[5] = keel_json_str(w, "reason");
    if ((rc = out_table_add(&t, row))) break;
  }
  if (!rc) out_table_print(&t, stdout);
  out_table_free(&t);
  json_decref(res);
  return rc;
}
