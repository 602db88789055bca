/* cmd_org.c — keel apply, keel policy explain. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/json.h"

#define DOC_MAX ((size_t)4 << 20) /* the server's document limit */

/* Reads path ("-" = stdin) into a new buffer. 0 or an exit status. */
static int read_doc(const char *path, char **out, size_t *len) {
  FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  keel_buf_t b;
  char chunk[65536];
  size_t n;
  int rc = 0;

  *out = NULL;
  *len = 0;
  if (!f) return cli_fail("%s: %s", path, strerror(errno));
  keel_buf_init(&b, DOC_MAX);
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (keel_buf_append(&b, chunk, n)) {
      rc = cli_fail("%s: larger than %zu bytes", path, DOC_MAX);
      break;
    }
  if (!rc && ferror(f)) rc = cli_fail("%s: %s", path, strerror(errno));
  if (f != stdin) fclose(f);
  if (rc) {
    keel_buf_free(&b);
    return rc;
  }
  *len = b.len;
  *out = keel_buf_steal(&b);
  return 0;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

int cmd_apply(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"f", "FILE", NULL}, {"file", "FILE", NULL}, {"dry-run", NULL, NULL},
                      {"prune", NULL, NULL}, {NULL, NULL, NULL}};
  const char *file;
  char *doc = NULL;
  size_t len = 0, i;
  json_t *r = NULL, *ch;
  keel_buf_t url;
  int rc;

  /* "-f FILE" as kubectl has it: turn it into the long form cli_parse knows */
  for (int k = 0; k < argc; k++)
    if (!strcmp(argv[k], "-f")) argv[k] = (char *)"--f";
  if ((rc = cli_parse(c, argc, argv, opts, NULL, 0, 0)) != CLI_GO) return rc;
  file = opts[0].value ? opts[0].value : opts[1].value;
  if (!file) return cli_usage(c, "missing -f FILE (or -f - for standard input)");
  if ((rc = read_doc(file, &doc, &len))) return rc;
  keel_buf_init(&url, 65536);
  if ((rc = keel_buf_puts(&url, "/v1/apply") ? cli_fail("out of memory") : 0) ||
      (rc = api_query(c, &url, "file", base_name(file))) ||
      (opts[2].value && (rc = api_query(c, &url, "dry_run", "true"))) ||
      (opts[3].value && (rc = api_query(c, &url, "prune", "true"))))
    goto out;
  if ((rc = api_call_raw(c, "POST", url.data, doc, len, &r))) goto out;
  if (c->json) {
    out_json(r, stdout);
    goto out;
  }
  json_array_foreach(json_object_get(r, "changes"), i, ch) {
    const char *op = keel_json_str(ch, "op");
    char *fields = NULL;
    if (json_array_size(json_object_get(ch, "fields")))
      fields = json_dumps(json_object_get(ch, "fields"), JSON_COMPACT);
    printf("%c %s/%s%s%s\n", op && !strcmp(op, "create") ? '+' : op && !strcmp(op, "delete") ? '-' : '~',
           keel_json_str(ch, "kind"), keel_json_str(ch, "name"), fields ? " " : "",
           fields ? fields : "");
    free(fields);
  }
  if (!json_is_true(json_object_get(r, "prune")))
    json_array_foreach(json_object_get(r, "removed"), i, ch)
        printf("! %s/%s is in keeld but not in %s (kept; --prune deletes it)\n",
               keel_json_str(ch, "kind"), keel_json_str(ch, "name"), file);
  printf("%s\n", keel_json_str(r, "summary") ? keel_json_str(r, "summary") : "");
out:
  keel_buf_free(&url);
  free(doc);
  json_decref(r);
  return rc;
}

int cmd_policy_explain(cli_t *c, int argc, char **argv) {
  cli_opt_t opts[] = {{"as", "USER", NULL}, {"tags", "k=v,...", NULL}, {NULL, NULL, NULL}};
  const char *pos[2];
  keel_buf_t url;
  json_t *r = NULL;
  int rc;

  if ((rc = cli_parse(c, argc, argv, opts, pos, 2, 2)) != CLI_GO) return rc;
  keel_buf_init(&url, 65536);
  if ((rc = keel_buf_puts(&url, "/v1/policy/explain") ? cli_fail("out of memory") : 0) ||
      (rc = api_query(c, &url, "user", opts[0].value)) ||
      (rc = api_query(c, &url, "action", pos[0])) ||
      (rc = api_query(c, &url, "resource", pos[1])) ||
      (rc = api_query(c, &url, "tags", opts[1].value)) ||
      (rc = api_call(c, "GET", url.data, NULL, &r)))
    goto out;
  if (c->json) {
    out_json(r, stdout);
  } else {
    char reason[300];
    snprintf(reason, sizeof reason, "%s", keel_json_str(r, "reason") ? keel_json_str(r, "reason") : "");
    printf("%s: %s %s on %s\n  by %s (%s)\n  %s\n",
           json_is_true(json_object_get(r, "allow")) ? "ALLOW" : "DENY", keel_json_str(r, "user"),
           pos[0], pos[1], keel_json_str(r, "statement"), keel_json_str(r, "kind"), out_safe(reason));
  }
  /* like a request: exit 1 when it would be refused */
  rc = json_is_true(json_object_get(r, "allow")) ? CLI_OK : CLI_FAIL;
out:
  keel_buf_free(&url);
  json_decref(r);
  return rc;
}
