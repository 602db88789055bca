/* The AutomationRule validator: one walk that checks and builds the
 * normalized copy (automation/doc.h), with the walker's error form
 * (docwalk.h) like every other document. */
#include "automation/doc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "automation/cond.h"
#include "docwalk.h"
#include "event/event.h"
#include "keel/selector.h"
#include "keel/template.h"
#include "runbook/doc.h"

#define TEXT_MAX 4096
#define DESC_MAX 1024
#define MAX_LIST 64 /* items of a list parameter */

static const k_walk_range_t cooldown_range = {0, 86400000, "0s", "24h"};

/* ---- on -------------------------------------------------------------------------- */

/* An event type (k_event_type_valid), or a prefix of them ending in ".*".
 * s is checked by k_walk_text: no NUL inside. */
static int type_ok(const json_t *s) {
  char t[K_EVENT_TYPE_MAX + 1];
  size_t n = json_string_length(s);
  if (n > K_EVENT_TYPE_MAX) return 0;
  memcpy(t, json_string_value(s), n + 1);
  if (n >= 2 && !strcmp(t + n - 2, ".*")) t[n - 2] = '\0';
  return k_event_type_valid(t);
}

static int on_section(k_walk_t *W, const json_t *on, json_t **out) {
  static const char *const keys[] = {"type", "match", "conditions", NULL};
  json_t *type, *match, *conds = k_walk_member(on, "conditions"), *list = NULL, *it;
  keel_buf_t b;
  k_walk_mark_t m, mi;
  char q[80];
  size_t i;
  int rc;

  keel_buf_init(&b, K_COND_MAX_LEN * 2 + KEEL_SELECTOR_MAX_LEN);
  if ((rc = k_walk_check_map(W, on, keys))) goto out;
  if ((rc = k_walk_get_text(W, on, "type", 1, TEXT_MAX, K_WALK_LINE, &type))) goto out;
  if (!type_ok(type)) {
    m = k_walk_push_key(W, "type");
    rc = k_walk_err(W, "invalid event type '%s': expected e.g. service.down, or a prefix like alert.*",
                    k_walk_quote_json(q, type));
    k_walk_pop(W, m);
    goto out;
  }
  if ((rc = k_walk_get_text(W, on, "match", 0, KEEL_SELECTOR_MAX_LEN, K_WALK_LINES, &match)))
    goto out;
  if (match) {
    m = k_walk_push_key(W, "match");
    rc = k_walk_selector(W, match, &b);
    k_walk_pop(W, m);
    if (rc) goto out;
  }
  if (!(list = json_array()) ||
      !(*out = json_pack("{s:O,s:s#,s:O}", "type", type, "match", b.data ? b.data : "", b.len,
                         "conditions", list))) {
    rc = k_walk_oom(W);
    goto out;
  }
  m = k_walk_push_key(W, "conditions");
  if (conds && !json_is_array(conds)) rc = k_walk_err(W, "expected a list");
  else if (json_array_size(conds) > K_AUTO_MAX_CONDITIONS)
    rc = k_walk_err(W, "more than %d conditions", K_AUTO_MAX_CONDITIONS);
  json_array_foreach(conds, i, it) {
    k_cond_t *c = NULL;
    keel_err_t ce = {0};
    if (rc) break;
    mi = k_walk_push_idx(W, i);
    if (!(rc = k_walk_text(W, it, K_COND_MAX_LEN, K_WALK_LINE))) {
      if (k_cond_parse(json_string_value(it), json_string_length(it), &c, &ce))
        rc = ce.code == KEEL_ENOMEM ? k_walk_oom(W) : k_walk_err(W, "%s", ce.msg);
      keel_buf_reset(&b);
      if (!rc && (k_cond_format(c, &b) || json_array_append_new(list, json_stringn(b.data, b.len))))
        rc = k_walk_oom(W);
      k_cond_free(c);
    }
    k_walk_pop(W, mi);
  }
  k_walk_pop(W, m);
out:
  if (rc) {
    json_decref(*out);
    *out = NULL;
  }
  json_decref(list);
  keel_buf_free(&b);
  return rc;
}

/* ---- run ------------------------------------------------------------------------- */

int k_auto_ref_ok(const char *ref) {
  static const char *const fields[] = {"id", "type", "source", "subject", "cause", "time", NULL};
  if (!strncmp(ref, "labels.", 7)) return ref[7] && !strchr(ref + 7, '.');
  if (strncmp(ref, "event.", 6)) return 0;
  if (!strncmp(ref + 6, "data.", 5)) return ref[11] != '\0';
  for (const char *const *f = fields; *f; f++)
    if (!strcmp(ref + 6, *f)) return 1;
  return 0;
}

/* A parameter value that is a template text: parses, names only events. */
static int tmpl_ok(k_walk_t *W, const json_t *s) {
  keel_tmpl_t *t = NULL;
  keel_err_t te = {0};
  char b[80];
  int rc;
  if ((rc = k_walk_text(W, s, TEXT_MAX, K_WALK_ANY))) return rc;
  if (keel_tmpl_parse(json_string_value(s), json_string_length(s), &t, &te))
    return te.code == KEEL_ENOMEM ? k_walk_oom(W) : k_walk_err(W, "invalid template: %s", te.msg);
  for (size_t i = 0; !rc && i < keel_tmpl_nrefs(t); i++)
    if (!k_auto_ref_ok(keel_tmpl_ref(t, i)))
      rc = k_walk_err(W,
                      "{{ %s }}: unknown name: expected event.subject, event.data.X, labels.X "
                      "(or event.id, .type, .source, .cause, .time)",
                      k_walk_quote(b, keel_tmpl_ref(t, i), strlen(keel_tmpl_ref(t, i))));
  keel_tmpl_free(t);
  return rc;
}

static int param_key_ok(const char *k, size_t n) {
  if (!n || n > 63 || (k[0] >= '0' && k[0] <= '9')) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_')) return 0;
  return 1;
}

static int run_section(k_walk_t *W, const json_t *run, json_t **out) {
  static const char *const keys[] = {"runbook", "params", NULL};
  json_t *rb, *params = k_walk_member(run, "params"), *v;
  const char *k;
  k_walk_mark_t m, mk;
  int rc;

  *out = NULL;
  if ((rc = k_walk_check_map(W, run, keys))) return rc;
  if ((rc = k_walk_get_name(W, run, "runbook", 1, &rb))) return rc;
  m = k_walk_push_key(W, "params");
  if (params && !json_is_object(params)) rc = k_walk_err(W, "expected a mapping");
  else if (json_object_size(params) > K_AUTO_MAX_PARAMS)
    rc = k_walk_err(W, "more than %d parameters", K_AUTO_MAX_PARAMS);
  json_object_foreach(params, k, v) {
    size_t klen = json_object_iter_key_len(json_object_key_to_iter(k));
    if (rc) break;
    mk = k_walk_push_keyn(W, k, klen);
    if (!param_key_ok(k, klen)) {
      rc = k_walk_err(W, "invalid parameter name: expected [a-z_][a-z0-9_]{0,62}");
    } else if (json_is_string(v)) {
      rc = tmpl_ok(W, v);
    } else if (json_is_array(v)) {
      size_t i;
      json_t *it;
      if (json_array_size(v) > MAX_LIST) rc = k_walk_err(W, "more than %d items", MAX_LIST);
      json_array_foreach(v, i, it) {
        k_walk_mark_t mi;
        if (rc) break;
        mi = k_walk_push_idx(W, i);
        rc = json_is_string(it) ? tmpl_ok(W, it) : k_walk_err(W, "expected a string");
        k_walk_pop(W, mi);
      }
    } else if (!json_is_integer(v) && !json_is_boolean(v)) {
      rc = k_walk_err(W, "expected a string (may hold {{ event... }}), an integer, a boolean or a list of strings");
    }
    k_walk_pop(W, mk);
  }
  k_walk_pop(W, m);
  if (rc) return rc;
  *out = json_pack("{s:O,s:o}", "runbook", rb, "params", params ? json_deep_copy(params) : json_object());
  return *out ? 0 : k_walk_oom(W);
}

/* ---- the document ----------------------------------------------------------------- */

static int approval(k_walk_t *W, const json_t *doc, json_t **out) {
  static const char *const keys[] = {"approvers", "min_approvals", "timeout", "timeout_ms", NULL};
  json_t *ra = k_walk_member(doc, "require_approval");
  k_walk_mark_t m;
  int rc = 0;
  *out = NULL;
  if (!ra || json_is_false(ra)) return 0;
  m = k_walk_push_key(W, "require_approval");
  if (json_is_true(ra)) {
    json_t *none = json_object();
    rc = none ? k_runbook_approval_check(W, none, 0, out) : k_walk_oom(W);
    json_decref(none);
  } else if (!json_is_object(ra)) {
    rc = k_walk_err(W, "expected true, false or a mapping {approvers, min_approvals, timeout}");
  } else if (!(rc = k_walk_check_map(W, ra, keys))) {
    rc = k_runbook_approval_check(W, ra, 0, out);
  }
  k_walk_pop(W, m);
  return rc;
}

int k_auto_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                        const k_org_t *org, json_t **out, keel_err_t *e) {
  static const char *const keys[] = {"kind", "name", "description", "application", "team", "on",
                                     "run", "require_approval", "cooldown", "cooldown_ms",
                                     "max_runs_per_hour", "mode", "enabled", NULL};
  static const char *const modes[] = {"enforce", "dry-run", NULL};
  k_walk_t W;
  json_t *rname, *desc, *app = NULL, *team = NULL, *on = NULL, *run = NULL, *ra = NULL, *mode, *en;
  json_int_t maxh;
  int64_t cool;
  k_walk_mark_t m;
  int rc;

  memset(&W, 0, sizeof W);
  W.name = name ? name : "<input>";
  W.pos = pos;
  W.e = e;
  *out = NULL;
  if ((rc = k_walk_head(&W, doc, keys, "AutomationRule"))) goto out;
  if ((rc = k_walk_get_name(&W, doc, "name", 1, &rname))) goto out;
  if ((rc = k_walk_get_text(&W, doc, "description", 0, DESC_MAX, K_WALK_LINES, &desc))) goto out;
  if ((rc = k_walk_owner(&W, doc, org, &app, &team))) goto out;
  if (!k_walk_member(doc, "on")) {
    rc = k_walk_missing(&W, "on");
    goto out;
  }
  m = k_walk_push_key(&W, "on");
  rc = on_section(&W, k_walk_member(doc, "on"), &on);
  k_walk_pop(&W, m);
  if (rc) goto out;
  if (!k_walk_member(doc, "run")) {
    rc = k_walk_missing(&W, "run");
    goto out;
  }
  m = k_walk_push_key(&W, "run");
  rc = run_section(&W, k_walk_member(doc, "run"), &run);
  k_walk_pop(&W, m);
  if (rc) goto out;
  if ((rc = approval(&W, doc, &ra))) goto out;
  if ((rc = k_walk_get_duration(&W, doc, "cooldown", &cooldown_range, 0, K_AUTO_COOLDOWN_DEFAULT_MS,
                                &cool)))
    goto out;
  if ((rc = k_walk_get_int(&W, doc, "max_runs_per_hour", 1, 10000, K_AUTO_MAX_RUNS_DEFAULT, &maxh)))
    goto out;
  if ((rc = k_walk_get_text(&W, doc, "mode", 0, TEXT_MAX, K_WALK_LINE, &mode))) goto out;
  if (mode) {
    m = k_walk_push_key(&W, "mode");
    rc = k_walk_enum(&W, mode, modes);
    k_walk_pop(&W, m);
    if (rc) goto out;
  }
  if ((en = k_walk_member(doc, "enabled")) && !json_is_boolean(en)) {
    m = k_walk_push_key(&W, "enabled");
    rc = k_walk_err(&W, "expected true or false");
    k_walk_pop(&W, m);
    goto out;
  }
  *out = json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:I,s:I,s:s,s:b}", "kind", "AutomationRule",
                   "name", rname, "description", desc ? desc : json_null(), "application",
                   app ? app : json_null(), "team", team ? team : json_null(), "on", on, "run", run,
                   "require_approval", ra ? ra : json_null(), "cooldown_ms", (json_int_t)cool,
                   "max_runs_per_hour", maxh, "mode", mode ? json_string_value(mode) : "enforce",
                   "enabled", !en || json_is_true(en));
  if (!*out) rc = k_walk_oom(&W);
out:
  json_decref(on);
  json_decref(run);
  json_decref(ra);
  return rc;
}

static int validate_no_org(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                           json_t **out, keel_err_t *e) {
  return k_auto_doc_validate(name, doc, pos, NULL, out, e);
}

int k_auto_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e) {
  return k_walk_load(name, buf, len, validate_no_org, out, e);
}

void k_auto_rule_path(const json_t *rule, char *out, size_t n) {
  k_walk_owner_path(rule, "automation", out, n);
}

int k_auto_check_runbook(const json_t *rule, const json_t *doc, keel_err_t *e) {
  const json_t *run = json_object_get(rule, "run"), *given = json_object_get(run, "params"), *p;
  const char *rb = json_string_value(json_object_get(run, "runbook")), *k;
  const json_t *v;
  size_t i;

  json_object_foreach((json_t *)given, k, v) {
    int known = 0;
    json_array_foreach(json_object_get(doc, "parameters"), i, p)
        known |= !strcmp(json_string_value(json_object_get(p, "name")), k);
    if (!known)
      return keel_err_set(e, KEEL_EINVAL, "run.params.%.63s: the runbook '%s' has no parameter '%.63s'",
                          k, rb, k);
  }
  json_array_foreach(json_object_get(doc, "parameters"), i, p) {
    const char *pn = json_string_value(json_object_get(p, "name"));
    if (json_is_true(json_object_get(p, "required")) &&
        json_is_null(json_object_get(p, "default")) && !json_object_get(given, pn))
      return keel_err_set(e, KEEL_EINVAL,
                          "run.params: the runbook '%s' requires parameter '%s' (give it, e.g. "
                          "%s: \"{{ labels.%s }}\")",
                          rb, pn, pn, pn);
  }
  return 0;
}
