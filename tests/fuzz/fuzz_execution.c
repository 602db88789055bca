/* libFuzzer harness: an execution's parameters, from the request body to
 * the jobs agents get (k_runbook_params, k_xec_render_targets,
 * k_xec_step_spec).
 *
 * The input is the "params" object of POST /v1/executions for a fixed
 * runbook with every parameter type and every templated place.  Beyond not
 * crashing:
 *   - refused params: KEEL_EINVAL naming "params.NAME" (or KEEL_ENOMEM);
 *   - accepted params: each argv element rendered from "{{ params.s }}" is
 *     exactly the value (one element, unchanged); the argv has as many
 *     elements as the template; the shell body "echo {{ params.s }}" is
 *     "echo " plus the value single-quoted ('\'' for each '), so the value
 *     is one word; the targets selector still parses or is refused with a
 *     message, never crashes. */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "keel/buf.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "runbook/doc.h"
#include "runbook/xec_int.h"

#include "fuzz_check.h"

static const char runbook_yaml[] =
    "kind: Runbook\n"
    "name: fz\n"
    "owner: {team: ops}\n"
    "parameters:\n"
    "  - {name: s, type: string, required: true}\n"
    "  - {name: n, type: int, default: 3}\n"
    "  - {name: b, type: bool, default: false}\n"
    "  - {name: l, type: list, default: [a, b]}\n"
    "  - {name: env, type: string, default: dev, allowed: [dev, prod]}\n"
    "  - {name: svc, type: string, default: web, pattern: \"^[a-z]+$\"}\n"
    "targets: \"env={{ params.env }},svc={{ params.svc }}\"\n"
    "steps:\n"
    "  - name: a\n"
    "    command: {argv: [printf, \"{{ params.s }}\", \"n={{ params.n }} b={{ params.b }}\", \"{{ params.l }}\", \"{{ execution.id }}\"]}\n"
    "  - name: sh\n"
    "    command: {shell: \"echo {{ params.s }}\"}\n"
    "  - name: sc\n"
    "    script: {body: \"x={{ params.s }}\\necho {{ steps.a.stdout }}\\n\"}\n"
    "  - name: h\n"
    "    http: {url: \"http://127.0.0.1/{{ params.svc }}\", expect_body: \"{{ params.s }}\"}\n";

static json_t *g_doc;

static void shell_quote(keel_buf_t *b, const char *v) {
  keel_buf_puts(b, "'");
  for (; *v; v++) {
    if (*v == '\'') keel_buf_puts(b, "'\\''");
    else keel_buf_append(b, v, 1);
  }
  keel_buf_puts(b, "'");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *given = NULL, *params = NULL, *text = NULL, *steps, *st;
  k_xexe_t ex;
  k_xtarget_t t;
  keel_err_t e = {0};
  size_t i;

  if (!g_doc) {
    keel_err_t le = {0};
    CHECK(k_runbook_doc_load("fz.yaml", runbook_yaml, sizeof runbook_yaml - 1, &g_doc, &le) == 0);
  }
  given = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
  if (!json_is_object(given)) goto out;
  if (k_runbook_params(g_doc, given, &params, &e)) {
    CHECK(e.code == KEEL_EINVAL || e.code == KEEL_ENOMEM);
    CHECK(e.code == KEEL_ENOMEM || !strncmp(e.msg, "params.", 7));
    goto out;
  }
  memset(&ex, 0, sizeof ex);
  memset(&t, 0, sizeof t);
  snprintf(ex.id, sizeof ex.id, "exe_fuzzfuzzfuzzfuzz");
  ex.doc = g_doc;
  ex.params = params;
  snprintf(t.agent_id, sizeof t.agent_id, "agt_x");
  snprintf(t.hostname, sizeof t.hostname, "h");
  t.tags = json_object();
  t.outputs = json_pack("{s:{s:s,s:s,s:i}}", "a", "stdout", json_string_value(json_object_get(params, "s")),
                        "stderr", "", "exit_code", 0);
  if (k_xec_render_targets(g_doc, params, ex.id, &text, &e) == 0) {
    keel_selector_t *sel = NULL;
    keel_err_t se = {0};
    if (keel_selector_parse(json_string_value(text), json_string_length(text), &sel, &se) == 0)
      keel_selector_free(sel);
    else
      CHECK(se.msg[0]);
  }
  steps = json_object_get(g_doc, "steps");
  json_array_foreach(steps, i, st) {
    json_t *spec = NULL;
    keel_err_t re = {0};
    const char *sv = json_string_value(json_object_get(params, "s"));
    if (k_xec_step_spec(&ex, &t, st, &spec, &re)) {
      CHECK(re.code == KEEL_EINVAL || re.code == KEEL_ENOMEM);
      continue;
    }
    if (i == 0) {
      const json_t *argv = json_object_get(spec, "argv");
      CHECK(json_array_size(argv) == 5);
      CHECK(!strcmp(json_string_value(json_array_get(argv, 1)), sv));
      CHECK(!strcmp(json_string_value(json_array_get(argv, 4)), ex.id));
    } else if (i == 1) {
      keel_buf_t want;
      keel_buf_init(&want, 1 << 20);
      keel_buf_puts(&want, "echo ");
      shell_quote(&want, sv);
      CHECK(want.data && !strcmp(json_string_value(json_object_get(spec, "shell")), want.data));
      keel_buf_free(&want);
    }
    json_decref(spec);
  }
  json_decref(t.tags);
  json_decref(t.outputs);
out:
  json_decref(text);
  json_decref(params);
  json_decref(given);
  return 0;
}
