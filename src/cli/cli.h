/* cli.h — what the command files of `keel` share: the invocation context,
 * option parsing, API calls with pagination, and output.
 *
 * Every command is `int run(cli_t *, int argc, char **argv)`, where argv is
 * what follows the command words, and returns the process exit status:
 * CLI_OK, CLI_FAIL (the operation failed; one line on stderr says why) or
 * CLI_USAGE (the invocation or configuration is wrong; nothing was sent).
 */
#ifndef KEEL_CLI_H
#define KEEL_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "keel/buf.h"
#include "keel/http.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };
#define CLI_GO (-1) /* from cli_parse: carry on with the command */

#define CLI_DEFAULT_SERVER "http://127.0.0.1:7700"
#define CLI_PAGE_MAX 1000 /* the API's largest ?limit */

struct cli_cmd;

typedef struct cli {
  const char *server_flag; /* borrowed from argv; NULL when not given */
  const char *token_flag;
  int json;
  int help;
  const struct cli_cmd *cmd; /* the command being run, for its usage line */
  keel_http_t http;
  int connected;
} cli_t;

typedef struct cli_cmd {
  const char *group;
  const char *name; /* NULL for a one-word command */
  int (*run)(cli_t *c, int argc, char **argv);
  const char *args; /* usage text after the command words */
  const char *summary;
} cli_cmd_t;

/* A command option: --name VALUE (or --name=VALUE), or a switch when arg is
 * NULL.  value receives the last one given ("true" for a switch). */
typedef struct cli_opt {
  const char *name; /* without the dashes; {NULL} ends a table */
  const char *arg;  /* placeholder shown in messages, NULL for a switch */
  const char *value;
} cli_opt_t;

/* main.c */
/* Parses the words after the command: options from opts (may be NULL),
 * the global flags anywhere, and between min_pos and max_pos positional
 * arguments into pos[] (unset ones are NULL).  Returns CLI_GO, or an exit
 * status after printing --help (CLI_OK) or a usage error (CLI_USAGE). */
int cli_parse(cli_t *c, int argc, char **argv, cli_opt_t *opts, const char **pos, int min_pos,
              int max_pos);
/* Pulls every "FLAG K=V" (and "--long=K=V") for the flags listed in flags
 * (NULL-ended, e.g. {"-p", "--param", NULL}) out of argv, up to the first
 * "--", and compacts argv and *argc: for options cli_parse cannot repeat.
 * Each pair goes into the object into as a string (a repeated key: the last
 * wins).  what names the value in messages ("K=V").  0, or CLI_USAGE after
 * a message for a missing value or one that is not K=V. */
int cli_take_pairs(cli_t *c, int *argc, char **argv, const char *const *flags, const char *what,
                   json_t *into);
/* Prints "keel: <msg>" and the command's usage line on stderr; returns CLI_USAGE. */
int cli_usage(const cli_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "keel: <msg>" on stderr; returns CLI_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Resolves server and token (flag, environment, config file) and readies
 * c->http.  Returns 0 or an exit status after printing why. */
int cli_connect(cli_t *c);

/* api.c */
/* One request.  body (may be NULL) is sent as JSON.  On a 2xx answer *out
 * (if out is not NULL) gets the parsed body, a new reference.  Otherwise
 * prints one line on stderr (the server's error message and status, or the
 * transport failure) and returns CLI_FAIL. */
int api_call(cli_t *c, const char *method, const char *path, const json_t *body, json_t **out);
/* The same with a raw body (text[0..len), may be NULL): YAML documents. */
int api_call_raw(cli_t *c, const char *method, const char *path, const char *text, size_t len,
                 json_t **out);
/* Called for each list item, oldest page first; returns 0 to go on or an
 * exit status to stop. */
typedef int (*api_item_fn)(cli_t *c, json_t *item, void *ud);
/* GETs path (which may hold a query already) page by page, following
 * next_cursor until the end or until max items (0 = no limit) were seen. */
int api_list(cli_t *c, const char *path, size_t max, api_item_fn fn, void *ud);
/* The whole of a list command: GETs path with ?NAME=VALUE for each option
 * of opts that was given (opts may be NULL), page by page, and prints the
 * items: JSON lines with --json, else a table of ncols columns under heads,
 * a row per item added by row (its ud is the out_table_t *; row is not
 * called with --json).  An option named "limit" is not sent: its value
 * (a positive integer, else a usage error before anything is sent) caps
 * the items, else max does (0 = all).  Returns an exit status. */
int api_list_table(cli_t *c, const char *path, const cli_opt_t *opts, size_t max,
                   const char *const *heads, size_t ncols, api_item_fn row);
/* Waits ms milliseconds between polls (keel run, keel execution watch). */
void cli_sleep_ms(long ms);
/* Appends s percent-encoded to b / "?key=value" ("&...") to a URL. */
int api_escape(cli_t *c, keel_buf_t *b, const char *s);
int api_query(cli_t *c, keel_buf_t *url, const char *key, const char *value);
/* "/v1/<coll>/<escaped id>" into b (initialised here); 0 or CLI_FAIL. */
int api_path(cli_t *c, keel_buf_t *b, const char *coll, const char *id);
/* api_call on "/v1/<coll>/<escaped id>", with "/<action>" after it unless
 * action is NULL (POST /v1/commands/ID/cancel). */
int api_call_id(cli_t *c, const char *method, const char *coll, const char *id, const char *action,
                const json_t *body, json_t **out);

/* output.c */
typedef struct out_table {
  size_t ncols;
  const char *const *heads; /* NULL: no header row */
  char **cells;             /* nrows * ncols, owned, already made safe */
  size_t nrows, cap;
} out_table_t;

void out_table_init(out_table_t *t, size_t ncols, const char *const *heads);
/* Copies the ncols cells; NULL or "" shows as "-". 0 or CLI_FAIL (no memory). */
int out_table_add(out_table_t *t, const char *const *cells);
/* Columns two spaces apart, widths from the widest cell; the last column
 * is not padded. */
void out_table_print(const out_table_t *t, FILE *f);
void out_table_free(out_table_t *t);

/* An object as aligned "key  value" lines, for the keys listed (ended by
 * NULL); absent and null members show as "-". 0 or CLI_FAIL. */
int out_kv(const json_t *obj, const char *const *keys, FILE *f);
/* Pretty JSON (2-space indent, member order kept) and a newline. */
void out_json(const json_t *v, FILE *f);
/* Compact JSON on one line: for JSON lines output. */
void out_json_line(const json_t *v, FILE *f);
/* Member key of obj as text: strings as they are, numbers in decimal,
 * booleans as true/false; NULL when absent or null.  tmp backs numbers. */
const char *out_field(const json_t *obj, const char *key, char *tmp, size_t tmpsz);
/* Replaces control characters (C0, DEL, C1) in s with '?', in place, so
 * text from the server cannot drive the terminal. Returns s. */
char *out_safe(char *s);

/* Commands. */
int cmd_whoami(cli_t *c, int argc, char **argv);
int cmd_version(cli_t *c, int argc, char **argv);
int cmd_user_create(cli_t *c, int argc, char **argv);
int cmd_user_list(cli_t *c, int argc, char **argv);
int cmd_user_show(cli_t *c, int argc, char **argv);
int cmd_user_update(cli_t *c, int argc, char **argv);
int cmd_token_create(cli_t *c, int argc, char **argv);
int cmd_token_list(cli_t *c, int argc, char **argv);
int cmd_token_revoke(cli_t *c, int argc, char **argv);
int cmd_audit_log(cli_t *c, int argc, char **argv);
int cmd_audit_verify(cli_t *c, int argc, char **argv);
int cmd_agent_token_create(cli_t *c, int argc, char **argv);
int cmd_agent_token_list(cli_t *c, int argc, char **argv);
int cmd_agent_list(cli_t *c, int argc, char **argv);
int cmd_agent_show(cli_t *c, int argc, char **argv);
int cmd_agent_tag(cli_t *c, int argc, char **argv);
int cmd_agent_retire(cli_t *c, int argc, char **argv);
int cmd_run(cli_t *c, int argc, char **argv);
int cmd_command_show(cli_t *c, int argc, char **argv);
int cmd_command_cancel(cli_t *c, int argc, char **argv);
int cmd_command_list(cli_t *c, int argc, char **argv);
int cmd_apply(cli_t *c, int argc, char **argv);
int cmd_policy_explain(cli_t *c, int argc, char **argv);
int cmd_runbook_list(cli_t *c, int argc, char **argv);
int cmd_runbook_show(cli_t *c, int argc, char **argv);
int cmd_runbook_start(cli_t *c, int argc, char **argv);
int cmd_execution_list(cli_t *c, int argc, char **argv);
int cmd_execution_show(cli_t *c, int argc, char **argv);
int cmd_execution_watch(cli_t *c, int argc, char **argv);
int cmd_execution_approve(cli_t *c, int argc, char **argv);
int cmd_execution_reject(cli_t *c, int argc, char **argv);
int cmd_execution_resume(cli_t *c, int argc, char **argv);
int cmd_execution_cancel(cli_t *c, int argc, char **argv);
int cmd_execution_retry(cli_t *c, int argc, char **argv);
int cmd_schedule_list(cli_t *c, int argc, char **argv);
int cmd_metrics_query(cli_t *c, int argc, char **argv);
int cmd_alert_list(cli_t *c, int argc, char **argv);
int cmd_alert_rules(cli_t *c, int argc, char **argv);
int cmd_top(cli_t *c, int argc, char **argv);
int cmd_incident_list(cli_t *c, int argc, char **argv);
int cmd_incident_show(cli_t *c, int argc, char **argv);
int cmd_incident_ack(cli_t *c, int argc, char **argv);
int cmd_incident_resolve(cli_t *c, int argc, char **argv);
int cmd_incident_comment(cli_t *c, int argc, char **argv);
int cmd_maintenance_list(cli_t *c, int argc, char **argv);
int cmd_events_list(cli_t *c, int argc, char **argv);
int cmd_events_watch(cli_t *c, int argc, char **argv);
int cmd_automation_rules(cli_t *c, int argc, char **argv);
int cmd_automation_show(cli_t *c, int argc, char **argv);
int cmd_automation_runs(cli_t *c, int argc, char **argv);
int cmd_automation_delete(cli_t *c, int argc, char **argv);
int cmd_automation_disable(cli_t *c, int argc, char **argv);
int cmd_automation_enable(cli_t *c, int argc, char **argv);

#endif
