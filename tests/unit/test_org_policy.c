/* Table-driven policy tests: every case of tests/policy/cases.tsv judged by
 * the organization engine exactly as keeld judges a request (k_authz_check
 * on an org applied from tests/policy/org-MODEL.yaml), with the deciding
 * statement checked through k_org_principal + k_policy_decide (and the
 * linear reference evaluator).  Plus apply's promises: re-applying the same
 * document changes nothing, a dry run changes nothing, and an object
 * missing from the file is reported under "removed" and deleted only with
 * prune.  The same table runs against a live keeld in
 * tests/integration/policy_live.sh. */
/* Paths here are short labels in fixed buffers; gcc cannot know that. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "iam/iam.h"
#include "keel/json.h"
#include "keel/selector.h"
#include "keel/time.h"
#include "org/doc.h"
#include "org/org.h"
#include "policy/policy.h"
#include "server.h"
#include "store/store.h"

#ifndef KEEL_SOURCE_DIR
#define KEEL_SOURCE_DIR "."
#endif
#define POLICY_DIR KEEL_SOURCE_DIR "/tests/policy"
#define NOW 1790000000000LL

/* ---- fixture: a store and an org engine -------------------------------------------------- */

typedef struct fx {
  char dir[256];
  k_store_t *s;
  k_org_t *o;
} fx_t;

static void fx_open(fx_t *x) {
  keel_err_t e = {0};
  memset(x, 0, sizeof *x);
  if (kt_mkdtemp(x->dir, sizeof x->dir)) fail_msg("mkdtemp");
  if (k_store_open(x->dir, 1, NULL, &x->s, &e)) fail_msg("store open: %s", e.msg);
  if (k_org_open(x->s, NULL, &x->o, &e)) fail_msg("org open: %s", e.msg);
}

static void fx_close(fx_t *x) {
  k_org_close(x->o);
  k_store_close(x->s);
  kt_rmrf(x->dir);
}

/* A file the test needs: its text (the caller frees it). */
static char *slurp(const char *path, size_t *len) {
  char *buf = kt_slurp(path, len);
  if (!buf) fail_msg("cannot read %s", path);
  return buf;
}

/* The normalized document of tests/policy/org-MODEL.yaml. */
static json_t *load_doc(const char *model) {
  char path[512];
  size_t len;
  char *text;
  json_t *doc = NULL;
  keel_err_t e = {0};
  snprintf(path, sizeof path, POLICY_DIR "/org-%s.yaml", model);
  text = slurp(path, &len);
  if (k_org_doc_load(path, text, len, &doc, &e)) fail_msg("%s", e.msg);
  free(text);
  return doc;
}

/* Applies doc in one store unit, flushes and reloads; returns the report. */
static json_t *apply(fx_t *x, const json_t *doc, int dry_run, int prune) {
  keel_err_t e = {0};
  keel_buf_t detail = {0};
  json_t *report = NULL;
  keel_buf_init(&detail, 16384);
  if (k_store_unit_begin(x->s, &e)) fail_msg("unit_begin: %s", e.msg);
  if (k_org_apply(x->o, doc, dry_run, prune, NOW, &report, &detail, &e)) {
    keel_err_t e2 = {0};
    k_store_unit_end(x->s, 0, &e2);
    fail_msg("apply: %s", e.msg);
  }
  if (k_store_unit_end(x->s, 1, &e) || k_store_flush(x->s, &e)) fail_msg("commit: %s", e.msg);
  if (k_org_reload(x->o, &e)) fail_msg("reload: %s", e.msg);
  keel_buf_free(&detail);
  return report;
}

static int64_t count(fx_t *x, const char *sql) { return kt_int(x->s, sql); }

/* ---- the table ---------------------------------------------------------------------------- */

typedef struct label {
  char name[64];
  json_t *tags;
} label_t;

typedef struct tcase {
  int line;
  char f[7][200]; /* model user action resource tags expect statement */
} tcase_t;

typedef struct table {
  label_t labels[16];
  size_t nlabels;
  tcase_t *cases;
  size_t ncases;
} table_t;

static void table_load(table_t *t) {
  size_t len;
  char *text = slurp(POLICY_DIR "/cases.tsv", &len), *line, *save = NULL;
  int lineno = 0;
  memset(t, 0, sizeof *t);
  for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    lineno++; /* blank lines are skipped by strtok_r: numbers hold for this file */
    if (!strncmp(line, "# label ", 8)) {
      label_t *l = &t->labels[t->nlabels];
      char tags[200];
      keel_err_t e = {0};
      if (t->nlabels == 16 || sscanf(line + 8, "%63s %199s", l->name, tags) != 2)
        fail_msg("cases.tsv:%d: bad label line", lineno);
      if (keel_tags_parse(tags, strlen(tags), &l->tags, &e))
        fail_msg("cases.tsv:%d: %s", lineno, e.msg);
      t->nlabels++;
      continue;
    }
    if (line[0] == '#' || !line[0]) continue;
    {
      tcase_t *c;
      char *p = line;
      t->cases = realloc(t->cases, (t->ncases + 1) * sizeof *t->cases);
      assert_non_null(t->cases);
      c = &t->cases[t->ncases++];
      memset(c, 0, sizeof *c);
      c->line = lineno;
      for (int i = 0; i < 7; i++) {
        char *tab = strchr(p, '\t');
        size_t n = tab ? (size_t)(tab - p) : strlen(p);
        if ((i < 6 && !tab) || (i == 6 && tab) || n == 0 || n >= sizeof c->f[i])
          fail_msg("cases.tsv:%d: expected 7 tab-separated fields", lineno);
        memcpy(c->f[i], p, n);
        p = tab ? tab + 1 : p + n;
      }
      if (strcmp(c->f[5], "allow") && strcmp(c->f[5], "deny"))
        fail_msg("cases.tsv:%d: expect must be allow or deny", lineno);
    }
  }
  free(text);
  if (t->nlabels == 0) fail_msg("cases.tsv: no '# label' lines");
}

static void table_free(table_t *t) {
  for (size_t i = 0; i < t->nlabels; i++) json_decref(t->labels[i].tags);
  free(t->cases);
}

static const label_t *find_label(const table_t *t, const char *name) {
  for (size_t i = 0; i < t->nlabels; i++)
    if (!strcmp(t->labels[i].name, name)) return &t->labels[i];
  return NULL;
}

/* The role the document gives user (default viewer), "" when not in it. */
static const char *doc_role(const json_t *doc, const char *user) {
  size_t i;
  json_t *u;
  json_array_foreach(json_object_get(doc, "users"), i, u) if (!strcmp(keel_json_str(u, "name"),
                                                                       user)) {
    const char *r = keel_json_str(u, "role");
    return r ? r : "viewer";
  }
  return "";
}

static int statement_matches(const char *want, const char *got) {
  size_t n = strlen(want);
  if (n && want[n - 1] == '*') return !strncmp(want, got, n - 1);
  return !strcmp(want, got);
}

/* Runs every case of model; returns how many ran, *failed how many failed. */
static size_t run_model(const table_t *t, const char *model, size_t *failed) {
  fx_t x;
  json_t *doc = load_doc(model), *report;
  size_t ran = 0;
  int64_t now = keel_now_ms();

  *failed = 0;
  fx_open(&x);
  report = apply(&x, doc, 0, 0);
  assert_true(json_is_true(json_object_get(report, "changed")));
  json_decref(report);
  assert_string_equal(k_org_model(x.o), model);

  for (size_t i = 0; i < t->ncases; i++) {
    const tcase_t *c = &t->cases[i];
    const char *user = c->f[1], *action = c->f[2], *resource = c->f[3];
    const char *tags_s = c->f[4], *role;
    int want_allow = !strcmp(c->f[5], "allow");
    k_principal_t who;
    k_target_t target;
    k_pol_principal_t pp;
    k_pol_resource_t res;
    k_pol_decision_t d, dl;
    json_t *tags = NULL, *u = NULL;
    keel_err_t e = {0};
    char reason[256] = "";
    int allow;

    if (strcmp(c->f[0], model)) continue;
    ran++;
    memset(&who, 0, sizeof who);
    memset(&target, 0, sizeof target);
    role = doc_role(doc, user);
    if (!role[0]) fail_msg("cases.tsv:%d: user %s is not in org-%s.yaml", c->line, user, model);
    if (k_iam_user_get(x.s, user, &u, &e)) fail_msg("cases.tsv:%d: user %s: %s", c->line, user, e.msg);
    snprintf(who.user, sizeof who.user, "%s", user);
    snprintf(who.role, sizeof who.role, "%s", role);
    snprintf(who.user_id, sizeof who.user_id, "%s", keel_json_str(u, "id"));
    json_decref(u);
    if (strcmp(tags_s, "-") && keel_tags_parse(tags_s, strlen(tags_s), &tags, &e))
      fail_msg("cases.tsv:%d: tags: %s", c->line, e.msg);
    if (!strncmp(resource, "host:", 5)) {
      const label_t *l = find_label(t, resource + 5);
      const json_t *ht;
      if (!l) fail_msg("cases.tsv:%d: unknown host label %s", c->line, resource + 5);
      ht = tags ? tags : l->tags;
      /* app/A/env/E/host/LABEL, A and E from the tags, as keeld places a host */
      k_org_host_path(x.o, l->name, l->name, ht, target.path, sizeof target.path);
      if (!tags) {
        char want[192];
        snprintf(want, sizeof want, "app/%s/env/%s/host/%s", keel_json_str(l->tags, "app"),
                 keel_json_str(l->tags, "env"), l->name);
        if (strcmp(want, target.path))
          fail_msg("cases.tsv:%d: host path %s, want %s", c->line, target.path, want);
      }
      target.tags = ht;
    } else {
      snprintf(target.path, sizeof target.path, "%s", resource);
      target.tags = tags;
    }

    allow = k_authz_check(x.o, &who, action, &target, reason, sizeof reason);
    k_org_principal(x.o, who.user, who.role, 0, &pp);
    res.path = target.path;
    res.tags = target.tags;
    k_policy_decide(k_org_policy(x.o), &pp, action, &res, now, &d);
    k_policy_decide_linear(k_org_policy(x.o), &pp, action, &res, now, &dl);
    if (allow != want_allow || d.allow != want_allow || !statement_matches(c->f[6], d.statement) ||
        dl.allow != d.allow || strcmp(dl.statement, d.statement)) {
      (*failed)++;
      fprintf(stderr,
              "FAIL cases.tsv:%d: %s %s %s %s (%s): got %s by %s (authz %s; linear %s), want %s by "
              "%s%s%s\n",
              c->line, model, user, action, target.path, tags_s, d.allow ? "allow" : "deny",
              d.statement, allow ? "allow" : "deny", dl.statement, c->f[5], c->f[6],
              reason[0] ? "; " : "", reason);
    } else if (!allow && strcmp(d.statement, "default-deny") && !strstr(reason, d.statement)) {
      (*failed)++;
      fprintf(stderr, "FAIL cases.tsv:%d: the refusal does not name %s: %s\n", c->line,
              d.statement, reason);
    }
    json_decref(tags);
  }
  json_decref(doc);
  fx_close(&x);
  return ran;
}

static table_t T;

static int group_setup(void **state) {
  (void)state;
  table_load(&T);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  table_free(&T);
  return 0;
}

static void cases_of(const char *model) {
  size_t failed, ran = run_model(&T, model, &failed);
  fprintf(stderr, "%s: %zu cases, %zu failed\n", model, ran, failed);
  assert_true(ran >= 20);
  assert_int_equal(failed, 0);
}

static void test_cases_decentralized(void **state) {
  (void)state;
  cases_of("decentralized");
}
static void test_cases_centralized(void **state) {
  (void)state;
  cases_of("centralized");
}
static void test_cases_ccoe(void **state) {
  (void)state;
  cases_of("ccoe");
}

/* The table covers what the issue asks for. */
static void test_table_coverage(void **state) {
  static const char *const actions[] = {"org:write",          "audit:read", "agent:read",
                                        "agent:update",       "agent-token:create",
                                        "exec:run",           "user:create", "policy:read",
                                        NULL};
  static const char *const models[] = {"decentralized", "centralized", "ccoe", NULL};
  size_t total = 0;
  (void)state;
  for (int m = 0; models[m]; m++) {
    size_t n = 0;
    for (size_t i = 0; i < T.ncases; i++) n += !strcmp(T.cases[i].f[0], models[m]);
    if (n < 20) fail_msg("only %zu cases for %s", n, models[m]);
    total += n;
  }
  assert_int_equal(total, T.ncases);
  assert_true(total >= 60);
  for (int a = 0; actions[a]; a++) {
    size_t n = 0;
    for (size_t i = 0; i < T.ncases; i++) n += !strcmp(T.cases[i].f[2], actions[a]);
    if (!n) fail_msg("no case for %s", actions[a]);
  }
}

/* ---- apply's promises --------------------------------------------------------------------- */

static void test_reapply_no_changes(void **state) {
  static const char *const models[] = {"decentralized", "centralized", "ccoe", NULL};
  (void)state;
  for (int m = 0; models[m]; m++) {
    fx_t x;
    json_t *doc = load_doc(models[m]), *r;
    fx_open(&x);
    r = apply(&x, doc, 0, 0);
    assert_true(json_is_true(json_object_get(r, "changed")));
    json_decref(r);
    r = apply(&x, doc, 0, 0);
    if (!json_is_false(json_object_get(r, "changed")) || json_array_size(json_object_get(r, "changes")) ||
        json_array_size(json_object_get(r, "removed"))) {
      char *s = json_dumps(r, 0);
      fail_msg("%s: re-apply changed something: %s", models[m], s);
    }
    json_decref(r);
    json_decref(doc);
    fx_close(&x);
  }
}

static void test_dry_run_changes_nothing(void **state) {
  fx_t x;
  json_t *dec = load_doc("decentralized"), *cen = load_doc("centralized"), *r, *u = NULL;
  keel_err_t e = {0};
  int64_t objs, users;
  (void)state;
  fx_open(&x);
  /* on an empty keeld: reports what it would create, creates nothing */
  r = apply(&x, dec, 1, 0);
  assert_true(json_is_true(json_object_get(r, "changed")));
  assert_true(json_is_true(json_object_get(r, "dry_run")));
  assert_true(json_array_size(json_object_get(r, "changes")) > 10);
  json_decref(r);
  assert_int_equal(count(&x, "SELECT count(*) FROM org_objects"), 0);
  assert_int_equal(k_iam_user_get(x.s, "chen", &u, &e), KEEL_ENOENT);
  assert_string_equal(k_org_model(x.o), "");
  /* on an applied one: a model switch as a dry run switches nothing */
  json_decref(apply(&x, dec, 0, 0));
  objs = count(&x, "SELECT count(*) FROM org_objects");
  users = count(&x, "SELECT count(*) FROM users");
  r = apply(&x, cen, 1, 1);
  assert_true(json_is_true(json_object_get(r, "changed")));
  json_decref(r);
  assert_string_equal(k_org_model(x.o), "decentralized");
  assert_int_equal(count(&x, "SELECT count(*) FROM org_objects"), objs);
  assert_int_equal(count(&x, "SELECT count(*) FROM users"), users);
  r = apply(&x, dec, 0, 0);
  assert_true(json_is_false(json_object_get(r, "changed")));
  json_decref(r);
  json_decref(dec);
  json_decref(cen);
  fx_close(&x);
}

static int has_removed(const json_t *r, const char *kind, const char *name) {
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(r, "removed"), i, v) if (
      !strcmp(keel_json_str(v, "kind"), kind) && !strcmp(keel_json_str(v, "name"), name)) return 1;
  return 0;
}

/* Removes from the array doc[key] the items whose field equals value. */
static void drop(json_t *doc, const char *key, const char *field, const char *value) {
  json_t *a = json_object_get(doc, key);
  size_t i = json_array_size(a);
  while (i-- > 0)
    if (!strcmp(keel_json_str(json_array_get(a, i), field), value)) json_array_remove(a, i);
}

static size_t nteams(const fx_t *x, const char *user) {
  json_t *t = k_org_user_teams(x->o, user);
  size_t n = json_array_size(t);
  json_decref(t);
  return n;
}

static void test_removed_only_pruned(void **state) {
  fx_t x;
  json_t *doc = load_doc("decentralized"), *less = json_deep_copy(doc), *r, *u = NULL;
  keel_err_t e = {0};
  k_pol_principal_t pp;
  k_pol_resource_t res = {"app/search/env/dev/host/h", NULL};
  k_pol_decision_t d;
  (void)state;
  /* without the old-msp partner team (and its grant) and without otto */
  drop(less, "teams", "name", "old-msp");
  drop(less, "grants", "team", "old-msp");
  drop(less, "users", "name", "otto");
  fx_open(&x);
  json_decref(apply(&x, doc, 0, 0));
  assert_int_equal(nteams(&x, "olga"), 1);

  r = apply(&x, less, 0, 0);
  assert_true(json_is_false(json_object_get(r, "changed")));
  assert_true(has_removed(r, "team", "old-msp"));
  assert_true(has_removed(r, "grant", "old-msp:search"));
  assert_true(has_removed(r, "user", "otto"));
  assert_int_equal(json_array_size(json_object_get(r, "removed")), 3);
  json_decref(r);
  assert_int_equal(nteams(&x, "olga"), 1); /* kept */

  r = apply(&x, less, 1, 1); /* a dry run with prune deletes nothing either */
  assert_int_equal(json_array_size(json_object_get(r, "changes")), 3);
  json_decref(r);
  assert_int_equal(nteams(&x, "olga"), 1);

  r = apply(&x, less, 0, 1);
  assert_true(json_is_true(json_object_get(r, "changed")));
  assert_true(has_removed(r, "team", "old-msp"));
  assert_int_equal(json_array_size(json_object_get(r, "changes")), 3);
  json_decref(r);
  assert_int_equal(nteams(&x, "olga"), 0); /* deleted */
  /* otto is disabled, not deleted */
  if (k_iam_user_get(x.s, "otto", &u, &e)) fail_msg("otto: %s", e.msg);
  assert_true(json_is_true(json_object_get(u, "disabled")));
  json_decref(u);
  /* and the grant's statement is gone with it */
  k_org_principal(x.o, "olga", "viewer", 0, &pp);
  k_policy_decide(k_org_policy(x.o), &pp, "exec:run", &res, NOW, &d);
  assert_string_equal(d.statement, "default-deny");
  r = apply(&x, less, 0, 1);
  assert_true(json_is_false(json_object_get(r, "changed")));
  assert_int_equal(json_array_size(json_object_get(r, "removed")), 0);
  json_decref(r);
  json_decref(doc);
  json_decref(less);
  fx_close(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table_coverage),
      cmocka_unit_test(test_cases_decentralized),
      cmocka_unit_test(test_cases_centralized),
      cmocka_unit_test(test_cases_ccoe),
      cmocka_unit_test(test_reapply_no_changes),
      cmocka_unit_test(test_dry_run_changes_nothing),
      cmocka_unit_test(test_removed_only_pruned),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
