/* keel — the command-line client of the Keel API.
 *
 * main.c owns the invocation: global flags, finding the command, option
 * parsing for the commands, and resolving server and token.  Global flags
 * may come anywhere; command options only after the command words, so a
 * value is never mistaken for a command word.
 */
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "keel/config.h"

static const cli_cmd_t commands[] = {
    {"whoami", NULL, cmd_whoami, "", "show the user and token in use"},
    {"user", "create", cmd_user_create,
     "NAME [--role admin|operator|viewer] [--display-name S] [--email S]", "create a user"},
    {"user", "list", cmd_user_list, "", "list all users"},
    {"user", "show", cmd_user_show, "NAME|ID", "show one user"},
    {"user", "update", cmd_user_update,
     "NAME|ID --version N [--role R] [--disabled true|false] [--display-name S] [--email S]",
     "change a user (N is the version you last read)"},
    {"token", "create", cmd_token_create, "[--name S] [--user NAME] [--ttl 1h | --expires RFC3339]",
     "create a token; its secret is printed once"},
    {"token", "list", cmd_token_list, "[--user NAME]", "list tokens"},
    {"token", "revoke", cmd_token_revoke, "ID", "revoke a token"},
    {"audit", "log", cmd_audit_log, "[--since RFC3339] [--actor A] [--action A] [--limit N]",
     "show audit records, oldest first"},
    {"audit", "verify", cmd_audit_verify, "", "check the audit hash chain (exit 1 if broken)"},
    {"agent", "token create", cmd_agent_token_create, "[--tags k=v,...] [--ttl 1h] [--uses N]",
     "create an enrollment token; its secret is printed once"},
    {"agent", "token list", cmd_agent_token_list, "", "list enrollment tokens"},
    {"agent", "list", cmd_agent_list, "[--target SELECTOR] [--status online|offline]",
     "list agents (selectors: docs/selectors.md)"},
    {"agent", "show", cmd_agent_show, "ID", "show one agent with its inventory"},
    {"agent", "tag", cmd_agent_tag, "ID k=v|k- ...", "set (k=v) or remove (k-) tags"},
    {"agent", "retire", cmd_agent_retire, "ID", "retire an agent: its credentials stop working"},
    {"run", NULL, cmd_run,
     "--target SELECTOR [--timeout 30s] [--env K=V]... [--cwd DIR] [--user U] [--shell] -- CMD [ARGS...]",
     "run a command on every matching host; exit 0 only if all succeed; Ctrl-C cancels it"},
    {"command", "show", cmd_command_show, "ID", "show a command and each host's result"},
    {"command", "list", cmd_command_list, "[--limit N]", "list commands, newest first"},
    {"command", "cancel", cmd_command_cancel, "ID",
     "stop a command: hosts still running it stop it (SIGTERM, SIGKILL after 5 s)"},
    {"apply", NULL, cmd_apply, "-f FILE [--dry-run] [--prune]",
     "apply an Organization document (YAML or JSON); prints what changed"},
    {"policy", "explain", cmd_policy_explain, "[--as USER] [--tags k=v,...] ACTION RESOURCE",
     "allow or deny, and the statement that decided"},
    {"runbook", "list", cmd_runbook_list, "", "list runbooks (apply them with keel apply -f)"},
    {"runbook", "show", cmd_runbook_show, "NAME", "show a runbook and its steps"},
    {"runbook", "start", cmd_runbook_start, "NAME [-p k=v]... [--watch]",
     "start an execution (-p, --param may repeat); --watch follows it"},
    {"execution", "list", cmd_execution_list, "[--runbook NAME] [--state S] [--limit N]",
     "list executions, newest first"},
    {"execution", "show", cmd_execution_show, "ID",
     "show an execution: its approval, and each target's step attempts"},
    {"execution", "watch", cmd_execution_watch, "ID",
     "follow an execution until it ends; exit 0 only if it succeeded"},
    {"execution", "approve", cmd_execution_approve, "ID [--comment TEXT]",
     "approve the approval step an execution waits on"},
    {"execution", "reject", cmd_execution_reject, "ID [--comment TEXT]",
     "reject the approval step an execution waits on"},
    {"execution", "resume", cmd_execution_resume, "ID",
     "resume an execution paused between batches"},
    {"execution", "cancel", cmd_execution_cancel, "ID",
     "cancel an execution: nothing new starts, running steps are stopped on their hosts"},
    {"execution", "retry", cmd_execution_retry, "ID [--failed-only] [--watch]",
     "run a finished execution again (--failed-only: the targets that did not succeed)"},
    {"schedule", "list", cmd_schedule_list, "",
     "list runbook schedules with their next and last runs"},
    {"metrics", "query", cmd_metrics_query, "EXPR [--time T] [--range 1h [--step 30s] [--end T]]",
     "evaluate a PromQL expression now, at --time, or over --range (docs/metrics.md)"},
    {"alert", "list", cmd_alert_list, "[--state pending|firing|resolved|all] [--rule NAME]",
     "list alerts: pending and firing ones unless --state says (docs/alerts.md)"},
    {"alert", "rules", cmd_alert_rules, "",
     "list alert rules with their last evaluation (apply them with keel apply -f)"},
    {"top", NULL, cmd_top, "[--interval 1s] [--once] [--target SELECTOR]",
     "live table of hosts: CPU, load, memory, disk, network (Ctrl-C quits)"},
    {"events", "list", cmd_events_list, "[--type T] [--subject S] [--since 1h] [--limit N]",
     "list stored events, oldest first (--type alert.* for a prefix; docs/events.md)"},
    {"events", "watch", cmd_events_watch, "[--type T]... [--subject S] [--since 1h]",
     "print events as they happen, one line each (--json: JSON lines); Ctrl-C quits"},
    {"incident", "list", cmd_incident_list, "[--state open|acked|resolved] [--team NAME] [--limit N]",
     "list incidents, newest first (docs/incidents.md)"},
    {"incident", "show", cmd_incident_show, "ID",
     "show an incident: its alerts, timeline and notifications"},
    {"incident", "ack", cmd_incident_ack, "ID [--text TEXT]",
     "acknowledge an incident: escalation steps waiting for an ack stop"},
    {"incident", "resolve", cmd_incident_resolve, "ID [--text TEXT]",
     "resolve an incident; the channels it reached are told"},
    {"incident", "comment", cmd_incident_comment, "ID TEXT", "add a comment to an incident's timeline"},
    {"maintenance", "list", cmd_maintenance_list, "",
     "list maintenance windows and whether each is active now"},
    {"automation", "rules", cmd_automation_rules, "",
     "list automation rules (apply them with keel apply -f); says when automation is off"},
    {"automation", "show", cmd_automation_show, "NAME", "show an automation rule's document"},
    {"automation", "runs", cmd_automation_runs, "[--rule NAME] [--limit N]",
     "what rules did, newest first: triggered, dry runs, skips and why"},
    {"automation", "delete", cmd_automation_delete, "NAME", "delete an automation rule"},
    {"automation", "disable", cmd_automation_disable, "--reason TEXT",
     "switch all automation off (the kill switch; admin)"},
    {"automation", "enable", cmd_automation_enable, "", "switch automation back on (admin)"},
    {"version", NULL, cmd_version, "", "print the client version"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const char global_usage[] = "usage: keel [--server URL] [--token T] [--json] COMMAND [ARGS]";

static void print_cmd_usage(const cli_cmd_t *cmd, FILE *f) {
  fprintf(f, "usage: keel %s%s%s%s%s\n", cmd->group, cmd->name ? " " : "",
          cmd->name ? cmd->name : "", cmd->args[0] ? " " : "", cmd->args);
}

/* group NULL: every command; otherwise that group's. */
static void print_help(const char *group, FILE *f) {
  fprintf(f, "%s\n\ncommands:\n", global_usage);
  for (size_t i = 0; i < NCOMMANDS; i++) {
    const cli_cmd_t *k = &commands[i];
    if (group && strcmp(group, k->group)) continue;
    fprintf(f, "  %s%s%s%s%s\n      %s\n", k->group, k->name ? " " : "", k->name ? k->name : "",
            k->args[0] ? " " : "", k->args, k->summary);
  }
  fputs("\nglobal flags (before or after the command):\n"
        "  --server URL   server (else $KEEL_SERVER, the config file, " CLI_DEFAULT_SERVER ")\n"
        "  --token T      bearer token (else $KEEL_TOKEN, the config file)\n"
        "  --json         print the server's JSON instead of tables\n"
        "  --help         show this help\n"
        "\nconfig file: $XDG_CONFIG_HOME/keel/config or ~/.config/keel/config, lines\n"
        "'server = URL' and 'token = T'.\n"
        "exit status: 0 ok, 1 failed, 2 usage or configuration error\n",
        f);
}

int cli_fail(const char *fmt, ...) {
  va_list ap;
  fputs("keel: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return CLI_FAIL;
}

int cli_usage(const cli_t *c, const char *fmt, ...) {
  va_list ap;
  fputs("keel: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (c->cmd) {
    print_cmd_usage(c->cmd, stderr);
  } else {
    fprintf(stderr, "%s\nrun 'keel --help' for the commands\n", global_usage);
  }
  return CLI_USAGE;
}

/* Length of the flag name in "--name" or "--name=value" (after the dashes). */
static size_t flag_len(const char *a) { return strcspn(a + 2, "="); }

static int flag_is(const char *a, const char *name) {
  size_t n = strlen(name);
  return a[0] == '-' && a[1] == '-' && flag_len(a) == n && !strncmp(a + 2, name, n);
}

/* Takes the value of the flag at argv[*i] ("--x=v" or "--x v"); NULL when
 * it has none, after a usage message. */
static const char *flag_value(const cli_t *c, int argc, char **argv, int *i) {
  const char *eq = strchr(argv[*i], '=');
  if (eq) return eq + 1;
  if (*i + 1 < argc) return argv[++*i];
  cli_usage(c, "flag '%s' needs a value", argv[*i]);
  return NULL;
}

/* 1 when argv[*i] was a global flag (consumed with its value), 0 when it is
 * not one, CLI_USAGE after a message. */
static int global_flag(cli_t *c, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  const char **slot = NULL;

  if (!strcmp(a, "-h") || flag_is(a, "help")) {
    c->help = 1;
    return 1;
  }
  if (flag_is(a, "json")) {
    if (strchr(a, '=')) return cli_usage(c, "flag '--json' takes no value");
    c->json = 1;
    return 1;
  }
  if (flag_is(a, "server")) slot = &c->server_flag;
  else if (flag_is(a, "token")) slot = &c->token_flag;
  else return 0;
  *slot = flag_value(c, argc, argv, i);
  return *slot ? 1 : CLI_USAGE;
}

/* The first word of the command's args ("NAME|ID"), for "missing ..." messages. */
static void first_placeholder(const cli_t *c, char *out, size_t outsz) {
  const char *a = c->cmd ? c->cmd->args : "";
  snprintf(out, outsz, "%.*s", (int)strcspn(a, " "), a);
}

int cli_parse(cli_t *c, int argc, char **argv, cli_opt_t *opts, const char **pos, int min_pos,
              int max_pos) {
  int npos = 0, only_args = 0;

  for (int k = 0; k < max_pos; k++) pos[k] = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    cli_opt_t *o = NULL;
    int r;

    if (only_args || a[0] != '-' || !a[1]) {
      if (npos >= max_pos) return cli_usage(c, "unexpected argument '%s'", a);
      pos[npos++] = a;
      continue;
    }
    if (!strcmp(a, "--")) {
      only_args = 1;
      continue;
    }
    r = global_flag(c, argc, argv, &i);
    if (r == 1) continue;
    if (r) return r;
    for (cli_opt_t *p = opts; p && p->name; p++)
      if (flag_is(a, p->name)) o = p;
    if (!o) {
      /* Quote the name only: "--tokn=SECRET" must not echo the secret. */
      return cli_usage(c, "unknown flag '%.*s'", (int)(a[1] == '-' ? flag_len(a) + 2 : 2), a);
    }
    if (!o->arg) {
      if (strchr(a, '=')) return cli_usage(c, "flag '--%s' takes no value", o->name);
      o->value = "true";
    } else if (!(o->value = flag_value(c, argc, argv, &i))) {
      return CLI_USAGE;
    }
  }
  if (c->help) {
    print_cmd_usage(c->cmd, stdout);
    printf("%s\n", c->cmd->summary);
    return CLI_OK;
  }
  if (npos < min_pos) {
    char ph[64];
    first_placeholder(c, ph, sizeof ph);
    return cli_usage(c, "missing %s", ph);
  }
  return CLI_GO;
}

int cli_take_pairs(cli_t *c, int *argc, char **argv, const char *const *flags, const char *what,
                   json_t *into) {
  int w = 0, i;

  for (i = 0; i < *argc && strcmp(argv[i], "--"); i++) {
    const char *a = argv[i], *kv = NULL, *flag = NULL, *eq;
    char key[129];
    json_t *v;

    for (const char *const *f = flags; *f && !flag; f++) {
      size_t n = strlen(*f);
      if (!strcmp(a, *f)) {
        flag = *f;
        if (i + 1 >= *argc || !strcmp(argv[i + 1], "--"))
          return cli_usage(c, "flag '%s' needs %s", flag, what);
        kv = argv[++i];
      } else if ((*f)[1] == '-' && !strncmp(a, *f, n) && a[n] == '=') {
        flag = *f; /* "--long=k=v"; a short flag takes its value as the next word */
        kv = a + n + 1;
      }
    }
    if (!flag) {
      argv[w++] = argv[i];
      continue;
    }
    eq = strchr(kv, '=');
    if (!eq || eq == kv || eq - kv > 128)
      return cli_usage(c, "%s: expected %s, got '%s'", flag, what, kv);
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    /* NULL for text that is not UTF-8, which JSON cannot carry */
    if (!(v = json_string(eq + 1)) || json_object_set_new(into, key, v))
      return cli_usage(c, "%s: '%s' is not valid UTF-8", flag, kv);
  }
  for (; i < *argc; i++) argv[w++] = argv[i];
  *argc = w;
  return 0;
}

struct config {
  char *server;
  char *token;
};

static int config_set(void *ud, const char *key, const char *value, keel_err_t *e) {
  struct config *cfg = ud;
  char **slot;

  if (!strcmp(key, "server")) slot = &cfg->server;
  else if (!strcmp(key, "token")) slot = &cfg->token;
  else return keel_err_set(e, KEEL_EINVAL, "unknown key '%.64s' (expected server or token)", key);
  if (!*value) return keel_err_set(e, KEEL_EINVAL, "key '%s': empty value", key);
  if (*slot) {
    sodium_memzero(*slot, strlen(*slot));
    free(*slot);
  }
  *slot = strdup(value);
  return *slot ? 0 : keel_err_set(e, KEEL_ENOMEM, "out of memory");
}

/* $XDG_CONFIG_HOME/keel/config when that is an absolute path (as the XDG
 * spec requires), else ~/.config/keel/config; "" when there is no home. */
static void config_path(char *out, size_t outsz) {
  const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
  int n = 0;

  out[0] = '\0';
  if (xdg && xdg[0] == '/') n = snprintf(out, outsz, "%s/keel/config", xdg);
  else if (home && home[0]) n = snprintf(out, outsz, "%s/.config/keel/config", home);
  if (n < 0 || (size_t)n >= outsz) out[0] = '\0';
}

static const char *first_set(const char *flag, const char *env_name, const char *cfg) {
  const char *env = getenv(env_name);
  if (flag) return flag;
  if (env && env[0]) return env;
  return cfg;
}

int cli_connect(cli_t *c) {
  struct config cfg = {NULL, NULL};
  const char *server, *token;
  char path[4096];
  struct stat st;
  keel_err_t e;
  int rc = 0, have_cfg = 0;

  if (c->connected) return 0;
  /* The file is read even when flags cover everything, so a broken file
   * shows up on every run instead of only on some. */
  config_path(path, sizeof path);
  if (path[0]) {
    if (stat(path, &st) == 0) {
      have_cfg = 1;
      if (keel_config_load(path, config_set, &cfg, &e)) {
        fprintf(stderr, "keel: %s\n", e.msg);
        rc = CLI_USAGE;
        goto out;
      }
    } else if (errno != ENOENT && errno != ENOTDIR) {
      fprintf(stderr, "keel: %s: %s\n", path, strerror(errno));
      rc = CLI_USAGE;
      goto out;
    }
  }
  server = first_set(c->server_flag, "KEEL_SERVER", cfg.server);
  if (!server) server = CLI_DEFAULT_SERVER;
  token = first_set(c->token_flag, "KEEL_TOKEN", cfg.token);
  if (!token || !token[0]) {
    fprintf(stderr, "keel: no token: use --token, set KEEL_TOKEN, or put 'token = ...' in %s\n",
            path[0] ? path : "~/.config/keel/config");
    rc = CLI_USAGE;
    goto out;
  }
  if (have_cfg && token == cfg.token && (st.st_mode & 077))
    fprintf(stderr, "keel: warning: %s holds a token and is readable by others (chmod 600 it)\n",
            path);
  if (keel_http_init(&c->http, server, token, 0, &e)) {
    fprintf(stderr, "keel: %s\n", e.msg);
    rc = CLI_USAGE;
    goto out;
  }
  c->connected = 1;
out:
  if (cfg.token) sodium_memzero(cfg.token, strlen(cfg.token));
  free(cfg.token);
  free(cfg.server);
  return rc;
}

/* name NULL: any command of the group (to test that the group exists).
 * Command names may have several words ("token create"). */
static const cli_cmd_t *find_cmd(const char *group, const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++) {
    const cli_cmd_t *k = &commands[i];
    if (strcmp(k->group, group)) continue;
    if (!name || !k->name || !strcmp(k->name, name)) return k;
  }
  return NULL;
}

/* 1 when some command of group has a name starting with prefix + " ". */
static int is_name_prefix(const char *group, const char *prefix) {
  size_t n = strlen(prefix);
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (!strcmp(commands[i].group, group) && commands[i].name &&
        !strncmp(commands[i].name, prefix, n) && commands[i].name[n] == ' ')
      return 1;
  return 0;
}

static void list_subcommands(const char *group, char *out, size_t outsz) {
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < NCOMMANDS && n < outsz; i++) {
    if (strcmp(commands[i].group, group) || !commands[i].name) continue;
    int w = snprintf(out + n, outsz - n, "%s%s", n ? ", " : "", commands[i].name);
    if (w < 0) break;
    n += (size_t)w;
  }
}

int main(int argc, char **argv) {
  const cli_cmd_t *cmd = NULL;
  const char *group = NULL;
  char words[128] = "";
  cli_t c;
  keel_err_t e;
  int rc = CLI_OK, i;

  memset(&c, 0, sizeof c);
  if (keel_http_global_init(&e)) return cli_fail("%s", e.msg);

  /* Before the command words only global flags can appear. */
  for (i = 1; i < argc && !cmd; i++) {
    const char *a = argv[i];
    if (a[0] == '-' && a[1]) {
      int r = global_flag(&c, argc, argv, &i);
      if (r == 1) continue;
      if (r == 0)
        r = cli_usage(&c, "unknown flag '%.*s' (command flags go after the command)",
                      (int)(a[1] == '-' ? flag_len(a) + 2 : 2), a);
      rc = r;
      goto out;
    }
    if (!group) {
      group = a;
      cmd = find_cmd(group, NULL);
      if (!cmd) {
        rc = cli_usage(&c, "unknown command '%s'", a);
        goto out;
      }
      if (cmd->name) cmd = NULL; /* a group: the next word names the command */
    } else {
      size_t n = strlen(words);
      snprintf(words + n, sizeof words - n, "%s%s", n ? " " : "", a);
      cmd = find_cmd(group, words);
      if (!cmd && is_name_prefix(group, words)) continue; /* "agent token" + next word */
      if (!cmd) {
        char subs[512];
        list_subcommands(group, subs, sizeof subs);
        rc = cli_usage(&c, "unknown command '%s %s' (%s has: %s)", group, words, group, subs);
        goto out;
      }
    }
  }
  if (!cmd) {
    char subs[512];
    if (c.help) {
      print_help(group, stdout);
      goto out;
    }
    if (!group) {
      rc = cli_usage(&c, "missing command");
      goto out;
    }
    list_subcommands(group, subs, sizeof subs);
    rc = cli_usage(&c, "%s%s%s: missing command (one of: %s)", group, words[0] ? " " : "", words,
                   subs);
    goto out;
  }
  c.cmd = cmd;
  rc = cmd->run(&c, argc - i, argv + i);
out:
  if (c.connected) keel_http_free(&c.http);
  keel_http_global_cleanup();
  /* A full disk or closed pipe must not look like success. */
  if (fflush(stdout) || ferror(stdout)) {
    fprintf(stderr, "keel: writing output: %s\n", strerror(errno));
    if (rc == CLI_OK) rc = CLI_FAIL;
  }
  return rc;
}
