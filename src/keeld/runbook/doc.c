/* The Runbook document validator.  Same approach as org/doc.c: one walk
 * over the document that checks and builds the normalized copy at the same
 * time; the current path is kept both as a JSON pointer (to find line:col)
 * and in dotted form (for the message). */
#include "runbook/doc.h"

#include "docwalk.h"
#include "docwalk_short.h"
#include "keel/regex.h"

#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/selector.h"
#include "keel/template.h"
#include "keel/time.h"
#include "runbook/cron.h"

#define TEXT_MAX 4096   /* single-line texts, assert values, expect_body */
#define DESC_MAX 1024
#define URL_MAX 2048
#define BODY_MAX 65536  /* shell and script bodies (the template cap) */
#define PATTERN_MAX 512
#define MAX_PARAMS 64
#define MAX_STEPS 256
#define MAX_ARGV 256
#define MAX_BATCHES 100
#define MAX_APPROVERS 64
#define MAX_LIST_ITEMS 256 /* a list parameter's value */
#define BATCH_MAX_N 1000000

typedef struct v {
  k_walk_t w; /* where we are (docwalk.h) */
  json_t *params; /* declared parameter name -> its normalized form */
  json_t *steps;  /* every step name in the document -> index of its first step */
  size_t step;    /* the step being checked: steps before it are "earlier" */
} v_t;


/* The shared scalar checks (docwalk.h) under this file's short names. */
enum { T_LINE = K_WALK_LINE, T_LINES = K_WALK_LINES, T_ANY = K_WALK_ANY };
typedef k_walk_range_t range_t;
#define text_ok(V, s, max, what) k_walk_text(&(V)->w, s, max, what)
#define is_str k_walk_is
#define check_enum(V, s, vals) k_walk_enum(&(V)->w, s, vals)
#define get_text(V, obj, key, req, max, what, out) k_walk_get_text(&(V)->w, obj, key, req, max, what, out)
#define get_int(V, obj, key, min, max, def, out) k_walk_get_int(&(V)->w, obj, key, min, max, def, out)
#define get_duration(V, obj, key, r, req, def, ms) k_walk_get_duration(&(V)->w, obj, key, r, req, def, ms)

enum { N_OBJ, N_PARAM, N_STEP };
static const char *const name_re[] = {"[a-z0-9][a-z0-9._-]{0,62}", "[a-z_][a-z0-9_]{0,62}",
                                      "[a-z][a-z0-9_-]{0,62}"};

static int name_ok(const char *t, size_t n, int kind) {
  if (!t || n < 1 || n > 63) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    int lower = c >= 'a' && c <= 'z', digit = c >= '0' && c <= '9', ok;
    if (kind == N_OBJ) ok = lower || digit || (i && (c == '.' || c == '_' || c == '-'));
    else if (kind == N_PARAM) ok = lower || c == '_' || (i && digit);
    else ok = lower || (i && (digit || c == '_' || c == '-'));
    if (!ok) return 0;
  }
  return 1;
}

int k_runbook_name_ok(const char *s, size_t n) { return name_ok(s, n, N_OBJ); }

/* A name field: checks type and pattern. Caller has pushed. */
static int check_name(v_t *V, const json_t *s, int kind) {
  char b[80];
  int rc;
  if ((rc = text_ok(V, s, TEXT_MAX, T_LINE))) return rc;
  if (!name_ok(json_string_value(s), json_string_length(s), kind))
    return verr(V, "invalid name '%s': expected %s", qs(b, s), name_re[kind]);
  return 0;
}

static const range_t step_timeout = {1000, 86400000, "1s", "24h"};
static const range_t approval_timeout = {60000, 7 * 86400000LL, "1m", "7d"};
static const range_t schedule_rate = {60000, 366 * 86400000LL, "1m", "366d"};
static const range_t execution_timeout = {60000, 30 * 86400000LL, "1m", "30d"};

/* "P%" with P a decimal without leading zeros; -1 when s is not one. */
static int pct(const json_t *s) {
  const char *t = json_string_value(s);
  size_t n = json_string_length(s);
  int p = 0;
  if (!t || n < 2 || n > 5 || t[n - 1] != '%' || (t[0] == '0' && n > 2)) return -1;
  for (size_t i = 0; i + 1 < n; i++) {
    if (t[i] < '0' || t[i] > '9') return -1;
    p = p * 10 + (t[i] - '0');
  }
  return p;
}

/* ---- regular expressions ----------------------------------------------------- */


/* Compiles a checked pattern; 0 or an errno-like failure with why set. */
static int re_compile(const char *pat, size_t n, regex_t *re, char *why, size_t whylen) {
  const char *w = NULL;
  int rc;
  if (!keel_regex_cost_ok(pat, n, &w)) {
    snprintf(why, whylen, "%s", w);
    return -1;
  }
  if ((rc = regcomp(re, pat, REG_EXTENDED | REG_NOSUB))) {
    regerror(rc, re, why, whylen);
    regfree(re);
    return rc == REG_ESPACE ? -2 : -1;
  }
  return 0;
}

/* A regex field (text checked, compiles). Caller has pushed. */
static int check_regex(v_t *V, const json_t *s) {
  regex_t re;
  char why[128];
  int rc;
  if ((rc = text_ok(V, s, PATTERN_MAX, T_LINE))) return rc;
  rc = re_compile(json_string_value(s), json_string_length(s), &re, why, sizeof why);
  if (rc == -2) return oom(V);
  if (rc) return verr(V, "invalid regular expression: %s", why);
  regfree(&re);
  return 0;
}

/* ---- templates ------------------------------------------------------------------ */

enum { CTX_TARGETS, CTX_STEP, CTX_APPROVAL };

/* Index of step name in V->steps, or -1. */
static long step_index(v_t *V, const char *name, size_t n) {
  json_t *i = json_object_getn(V->steps, name, n);
  return i ? (long)json_integer_value(i) : -1;
}

static int ref_ok(v_t *V, const char *ref, int ctx) {
  char buf[160], b[80], c[80], *part[9];
  size_t np = 0;
  const char *per_target = ctx == CTX_TARGETS
                               ? "targets are chosen before any step runs"
                               : "an approval runs once per execution, not per target";
  snprintf(buf, sizeof buf, "%s", ref);
  part[np++] = buf;
  for (char *p = buf; *p && np < 9; p++)
    if (*p == '.') {
      *p = '\0';
      part[np++] = p + 1;
    }
  q(b, ref, strlen(ref));
  if (!strcmp(part[0], "params")) {
    if (np != 2) return verr(V, "{{ %s }}: expected params.NAME", b);
    if (!json_object_get(V->params, part[1]))
      return verr(V, "{{ %s }}: no parameter '%s'", b, q(c, part[1], strlen(part[1])));
    return 0;
  }
  if (!strcmp(part[0], "steps")) {
    long i;
    if (ctx != CTX_STEP) return verr(V, "{{ %s }}: %s", b, per_target);
    if (np != 3 || (strcmp(part[2], "stdout") && strcmp(part[2], "stderr") &&
                    strcmp(part[2], "exit_code")))
      return verr(V, "{{ %s }}: expected steps.NAME.stdout, .stderr or .exit_code", b);
    if ((i = step_index(V, part[1], strlen(part[1]))) < 0)
      return verr(V, "{{ %s }}: no step '%s'", b, q(c, part[1], strlen(part[1])));
    if ((size_t)i >= V->step)
      return verr(V, "{{ %s }}: step '%s' does not run before this one", b,
                  q(c, part[1], strlen(part[1])));
    return 0;
  }
  if (!strcmp(part[0], "target")) {
    if (ctx != CTX_STEP) return verr(V, "{{ %s }}: %s", b, per_target);
    if ((np == 2 && (!strcmp(part[1], "id") || !strcmp(part[1], "hostname"))) ||
        (np == 3 && !strcmp(part[1], "tags")))
      return 0;
    return verr(V, "{{ %s }}: expected target.id, target.hostname or target.tags.KEY", b);
  }
  if (!strcmp(part[0], "execution")) {
    if (np == 2 && !strcmp(part[1], "id")) return 0;
    return verr(V, "{{ %s }}: expected execution.id", b);
  }
  return verr(V, "{{ %s }}: unknown name: expected params, steps, target or execution", b);
}

/* A templated text (already checked by text_ok): parses it and resolves
 * its references for ctx; *nrefs (may be NULL) gets their count.  Caller
 * has pushed. */
static int check_tmpl(v_t *V, const json_t *s, int ctx, size_t *nrefs) {
  keel_tmpl_t *t = NULL;
  keel_err_t te = {0};
  int rc;
  if (keel_tmpl_parse(json_string_value(s), json_string_length(s), &t, &te))
    return te.code == KEEL_ENOMEM ? oom(V) : verr(V, "invalid template: %s", te.msg);
  rc = 0;
  for (size_t i = 0; !rc && i < keel_tmpl_nrefs(t); i++) rc = ref_ok(V, keel_tmpl_ref(t, i), ctx);
  if (nrefs) *nrefs = keel_tmpl_nrefs(t);
  keel_tmpl_free(t);
  return rc;
}

/* get_text + check_tmpl. */
static int get_tmpl(v_t *V, const json_t *obj, const char *key, int required, size_t max,
                    int what, int ctx, json_t **out) {
  mark_t m;
  int rc;
  if ((rc = get_text(V, obj, key, required, max, what, out)) || !*out) return rc;
  m = push_key(V, key);
  rc = check_tmpl(V, *out, ctx, NULL);
  pop(V, m);
  if (rc) *out = NULL;
  return rc;
}

/* ---- template references in shell text --------------------------------------- */

/* Values are spliced into shell and script bodies single-quoted
 * (KEEL_TMPL_SHELL), which makes them one literal word only where the
 * shell reads a plain word.  Inside double quotes, the author's own single
 * quotes, an unquoted here-document or a comment, the quotes are just
 * characters and a value like $(id) or a newline would run.  So a
 * reference is refused there.  Returns 0, or the byte offset + 1 of the
 * first unsafe `{{` with *why set. */
static size_t unsafe_ref(const char *s, size_t n, const char **why) {
  enum { NORMAL, SQ, DQ, COMMENT, HEREDOC } st = NORMAL;
  char word[64] = "";
  int pending = 0, strip_tabs = 0, quoted_doc = 0, doc_quoted = 0, doc_tabs = 0;
  size_t i = 0;

  while (i < n) {
    char c = s[i];
    if (c == '{' && i + 1 < n && s[i + 1] == '{') {
      /* the escape {{ '{{' }} is literal text, not a value */
      size_t j = i + 2;
      while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
      if (j < n && s[j] == '\'') {
        const char *end = memchr(s + i, '}', n - i);
        i = end ? (size_t)(end - s) + 2 : n;
        continue;
      }
      if (st != NORMAL && !(st == HEREDOC && doc_quoted)) {
        *why = st == SQ        ? "inside single quotes"
               : st == DQ      ? "inside double quotes"
               : st == COMMENT ? "inside a comment"
                               : "inside an unquoted here-document";
        return i + 1;
      }
      i += 2;
      continue;
    }
    switch (st) {
    case NORMAL:
      if (c == '\\') i++;
      else if (c == '\'') st = SQ;
      else if (c == '"') st = DQ;
      else if (c == '#' && (i == 0 || strchr(" \t\n;&|(", s[i - 1]))) st = COMMENT;
      else if (c == '<' && i + 1 < n && s[i + 1] == '<' && (i + 2 >= n || s[i + 2] != '<')) {
        size_t j = i + 2, k = 0;
        strip_tabs = j < n && s[j] == '-';
        if (strip_tabs) j++;
        while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
        quoted_doc = j < n && (s[j] == '\'' || s[j] == '"' || s[j] == '\\');
        while (j < n && !strchr(" \t\n;&|<>", s[j]) && k + 1 < sizeof word) {
          if (s[j] != '\'' && s[j] != '"' && s[j] != '\\') word[k++] = s[j];
          j++;
        }
        word[k] = '\0';
        pending = k > 0;
        i = j - 1;
      } else if (c == '\n' && pending) {
        st = HEREDOC;
        doc_quoted = quoted_doc;
        doc_tabs = strip_tabs;
        pending = 0;
      }
      break;
    case SQ:
      if (c == '\'') st = NORMAL;
      break;
    case DQ:
      if (c == '\\') i++;
      else if (c == '"') st = NORMAL;
      break;
    case COMMENT:
      if (c == '\n') {
        st = NORMAL;
        continue; /* the newline may start a pending here-document */
      }
      break;
    case HEREDOC:
      if (c == '\n' || i == 0) {
        /* a line equal to the word ends the document */
        size_t b = c == '\n' ? i + 1 : i, e2, wl = strlen(word);
        if (doc_tabs)
          while (b < n && s[b] == '\t') b++;
        e2 = b;
        while (e2 < n && s[e2] != '\n') e2++;
        if (e2 - b == wl && !memcmp(s + b, word, wl)) {
          st = NORMAL;
          i = e2;
          continue;
        }
      }
      break;
    }
    i++;
  }
  return 0;
}

/* A shell or script body: its references must sit where sh reads words. */
static int check_shell_refs(v_t *V, const char *key, const json_t *body, int shell) {
  const char *why = NULL;
  size_t at;
  mark_t m;
  int rc = 0;
  if (!body) return 0;
  m = push_key(V, key);
  if (!shell) {
    /* values are quoted for /bin/sh: for another interpreter that quoting
     * means nothing, so no value may go into its text */
    keel_tmpl_t *t = NULL;
    keel_err_t te = {0};
    if (keel_tmpl_parse(json_string_value(body), json_string_length(body), &t, &te) == 0 &&
        keel_tmpl_nrefs(t))
      rc = verr(V, "templates are quoted for /bin/sh: with another interpreter pass values as "
                   "arguments or environment, not in the script text");
    keel_tmpl_free(t);
  } else if ((at = unsafe_ref(json_string_value(body), json_string_length(body), &why))) {
    rc = verr(V, "column %zu: a template reference %s is not safe (the value could run); "
                 "assign it to a variable as a word first, e.g. x={{ params.x }}, then use \"$x\"",
              at, why);
  }
  pop(V, m);
  return rc;
}

static int is_posix_shell(const char *path) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  return !strcmp(b, "sh") || !strcmp(b, "bash") || !strcmp(b, "dash") || !strcmp(b, "ksh") ||
         !strcmp(b, "zsh");
}

/* ---- parameter values ---------------------------------------------------------- */

/* A string value (or list item) of parameter p: size, NUL, allowed,
 * pattern. Caller has pushed. */
static int check_str_value(v_t *V, const json_t *p, const json_t *s) {
  json_t *allowed = member(p, "allowed"), *pat = member(p, "pattern"), *a;
  size_t i;
  char b[80], c[80];
  int rc, found = 0;
  if ((rc = text_ok(V, s, K_RUNBOOK_PARAM_MAX, T_ANY))) return rc;
  if (json_is_array(allowed)) {
    json_array_foreach(allowed, i, a) found |= json_equal(a, s);
    if (!found) return verr(V, "'%s' is not one of the allowed values", qs(b, s));
  }
  if (json_is_string(pat)) {
    regex_t re;
    char why[128];
    int r = re_compile(json_string_value(pat), json_string_length(pat), &re, why, sizeof why);
    if (r == -2) return oom(V);
    if (r) return verr(V, "invalid pattern: %s", why);
    r = regexec(&re, json_string_value(s), 0, NULL, 0);
    regfree(&re);
    if (r == REG_ESPACE) return oom(V);
    if (r) return verr(V, "'%s' does not match %s", qs(b, s), qs(c, pat));
  }
  return 0;
}

/* "-12" -> -12: a decimal int64, nothing else. */
static int parse_int(const char *t, size_t n, json_int_t *out) {
  char buf[24], *end;
  long long v;
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, t, n);
  buf[n] = '\0';
  if (!((buf[0] >= '0' && buf[0] <= '9') || (buf[0] == '-' && n > 1))) return -1;
  errno = 0;
  v = strtoll(buf, &end, 10);
  if (errno || *end) return -1;
  *out = (json_int_t)v;
  return 0;
}

/* The value of parameter p (normalized) into *out (a new reference).
 * coerce: strings are accepted for int, bool and list. Caller has pushed. */
static int param_value(v_t *V, const json_t *p, const json_t *val, int coerce, json_t **out) {
  const char *type = json_string_value(json_object_get(p, "type"));
  json_t *allowed = member(p, "allowed");
  int rc = 0;

  *out = NULL;
  if (!type) return verr(V, "parameter has no type");
  if (!strcmp(type, "string")) {
    if ((rc = check_str_value(V, p, val))) return rc;
    *out = json_incref((json_t *)val);
    return 0;
  }
  if (!strcmp(type, "int")) {
    json_int_t n;
    size_t i;
    json_t *a;
    int found = 0;
    if (json_is_integer(val)) n = json_integer_value(val);
    else if (!coerce || !json_is_string(val) ||
             parse_int(json_string_value(val), json_string_length(val), &n))
      return verr(V, "expected an integer");
    if (json_is_array(allowed)) {
      json_array_foreach(allowed, i, a) found |= json_integer_value(a) == n;
      if (!found) return verr(V, "%lld is not one of the allowed values", (long long)n);
    }
    return (*out = json_integer(n)) ? 0 : oom(V);
  }
  if (!strcmp(type, "bool")) {
    if (json_is_boolean(val)) *out = json_incref((json_t *)val);
    else if (coerce && is_str(val, "true")) *out = json_true();
    else if (coerce && is_str(val, "false")) *out = json_false();
    else return verr(V, "expected true or false");
    return 0;
  }
  if (!strcmp(type, "list")) {
    json_t *list = NULL, *it;
    size_t i;
    if (json_is_array(val)) {
      list = json_incref((json_t *)val);
    } else if (coerce && json_is_string(val)) {
      /* "a,b" -> ["a", "b"]; "" -> []. */
      const char *t = json_string_value(val), *end = t + json_string_length(val), *s = t;
      if (!(list = json_array())) return oom(V);
      while (json_string_length(val) && s <= end) {
        const char *c = memchr(s, ',', (size_t)(end - s));
        if (!c) c = end;
        if (json_array_size(list) >= MAX_LIST_ITEMS) break;
        if (json_array_append_new(list, json_stringn(s, (size_t)(c - s)))) {
          json_decref(list);
          return oom(V);
        }
        s = c + 1;
      }
      if (s <= end && json_string_length(val)) {
        json_decref(list);
        return verr(V, "more than %d items", MAX_LIST_ITEMS);
      }
    } else {
      return verr(V, "expected a list of strings");
    }
    if (json_array_size(list) > MAX_LIST_ITEMS) rc = verr(V, "more than %d items", MAX_LIST_ITEMS);
    json_array_foreach(list, i, it) {
      mark_t m;
      if (rc) break;
      m = push_idx(V, i);
      rc = check_str_value(V, p, it);
      pop(V, m);
    }
    if (rc) {
      json_decref(list);
      return rc;
    }
    *out = list;
    return 0;
  }
  return verr(V, "parameter has an unknown type");
}

/* given (an object, or NULL) against the parameters array params: the
 * full parameter object in *out. Caller has pushed (params). */
static int params_check(v_t *V, const json_t *params, const json_t *given, int coerce,
                        json_t **out) {
  const char *k;
  json_t *v, *p, *res = json_object();
  size_t i;
  int rc = 0;

  *out = NULL;
  if (!res) return oom(V);
  if (given && !json_is_object(given)) {
    rc = verr(V, "expected a mapping of name: value");
    goto out;
  }
  json_object_foreach((json_t *)given, k, v) {
    size_t klen = json_object_iter_key_len(json_object_key_to_iter(k));
    int known = 0;
    json_array_foreach(params, i, p) known |= is_str(json_object_get(p, "name"), k);
    if (!known || klen != strlen(k)) {
      mark_t m = push_keyn(V, k, klen);
      rc = verr(V, "unknown parameter");
      pop(V, m);
      goto out;
    }
  }
  json_array_foreach(params, i, p) {
    const char *name = json_string_value(json_object_get(p, "name"));
    json_t *nv = NULL, *def;
    mark_t m;
    if (!name) continue;
    m = push_key(V, name);
    if ((v = member(given, name))) {
      rc = param_value(V, p, v, coerce, &nv);
    } else if ((def = member(p, "default"))) {
      nv = json_incref(def);
    } else if (json_is_true(json_object_get(p, "required"))) {
      rc = verr(V, "required parameter is missing");
    }
    pop(V, m);
    if (rc) goto out;
    if (nv && json_object_set_new(res, name, nv)) {
      rc = oom(V);
      goto out;
    }
  }
  *out = res;
  res = NULL;
out:
  json_decref(res);
  return rc;
}

int k_runbook_params(const json_t *runbook, const json_t *given, json_t **out, keel_err_t *e) {
  v_t V;
  mark_t m;
  int rc;
  memset(&V, 0, sizeof V);
  V.w.e = e;
  m = push_key(&V, "params");
  rc = params_check(&V, json_object_get(runbook, "parameters"), given, 1, out);
  pop(&V, m);
  return rc;
}

/* ---- sections ------------------------------------------------------------------- */

static const char *const ptypes[] = {"string", "int", "bool", "list", NULL};

static int parameter(v_t *V, const json_t *p, json_t **out) {
  static const char *const keys[] = {"name", "type", "required", "default", "allowed",
                                     "pattern", "description", NULL};
  json_t *name, *type, *req, *def, *allowed, *pat, *desc, *norm = NULL, *al = NULL, *nd = NULL;
  const char *t;
  mark_t m;
  char b[80];
  int rc;

  *out = NULL;
  if ((rc = check_map(V, p, keys))) return rc;
  if (!(name = member(p, "name"))) return missing(V, "name");
  m = push_key(V, "name");
  if (!(rc = check_name(V, name, N_PARAM)) &&
      json_object_getn(V->params, json_string_value(name), json_string_length(name)))
    rc = verr(V, "duplicate parameter '%s'", qs(b, name));
  pop(V, m);
  if (rc) return rc;
  if (!(type = member(p, "type"))) return missing(V, "type");
  m = push_key(V, "type");
  rc = check_enum(V, type, ptypes);
  pop(V, m);
  if (rc) return rc;
  t = json_string_value(type);
  if ((req = member(p, "required"))) {
    m = push_key(V, "required");
    if (!json_is_boolean(req)) rc = verr(V, "expected true or false");
    pop(V, m);
    if (rc) return rc;
  }
  if ((pat = member(p, "pattern"))) {
    m = push_key(V, "pattern");
    if (strcmp(t, "string") && strcmp(t, "list"))
      rc = verr(V, "only for string and list parameters");
    else
      rc = check_regex(V, pat);
    pop(V, m);
    if (rc) return rc;
  }
  if ((allowed = member(p, "allowed"))) {
    json_t *it;
    size_t i;
    m = push_key(V, "allowed");
    if (!strcmp(t, "bool")) rc = verr(V, "not for bool parameters");
    else if (!json_is_array(allowed)) rc = verr(V, "expected a list");
    else if (!json_array_size(allowed)) rc = verr(V, "expected at least one item");
    else if (json_array_size(allowed) > 256) rc = verr(V, "more than 256 items");
    else if (!(al = json_array())) rc = oom(V);
    json_array_foreach(allowed, i, it) {
      mark_t mi;
      size_t j;
      json_t *prev;
      if (rc) break;
      mi = push_idx(V, i);
      if (!strcmp(t, "int")) {
        if (!json_is_integer(it)) rc = verr(V, "expected an integer");
      } else {
        rc = text_ok(V, it, K_RUNBOOK_PARAM_MAX, T_ANY);
      }
      json_array_foreach(al, j, prev) if (!rc && json_equal(prev, it)) rc = verr(V, "listed twice");
      if (!rc && json_array_append(al, it)) rc = oom(V);
      pop(V, mi);
    }
    pop(V, m);
    if (rc) goto out;
  }
  if ((rc = get_text(V, p, "description", 0, DESC_MAX, T_LINES, &desc))) goto out;
  norm = json_pack("{s:O,s:O,s:b,s:n,s:O,s:O,s:O}", "name", name, "type", type, "required",
                   json_is_true(req), "default", "allowed", al ? al : json_null(), "pattern",
                   pat ? pat : json_null(), "description", desc ? desc : json_null());
  if (!norm) {
    rc = oom(V);
    goto out;
  }
  if ((def = member(p, "default"))) {
    m = push_key(V, "default");
    if (json_is_true(req)) rc = verr(V, "a required parameter takes no default");
    else rc = param_value(V, norm, def, 0, &nd);
    pop(V, m);
    if (rc) goto out;
    if (json_object_set_new(norm, "default", nd)) {
      rc = oom(V);
      goto out;
    }
  }
  if (json_object_setn(V->params, json_string_value(name), json_string_length(name), norm)) {
    rc = oom(V);
    goto out;
  }
  *out = norm;
  norm = NULL;
out:
  json_decref(norm);
  json_decref(al);
  return rc;
}

static int owner(v_t *V, const json_t *o, json_t **out) {
  static const char *const keys[] = {"application", "team", NULL};
  json_t *a, *t;
  mark_t m;
  int rc;
  if ((rc = check_map(V, o, keys))) return rc;
  a = member(o, "application");
  t = member(o, "team");
  if (!a && !t) return verr(V, "expected application: NAME or team: NAME");
  m = push_key(V, a ? "application" : "team");
  if (a && t) rc = verr(V, "give application or team, not both");
  else rc = check_name(V, a ? a : t, N_OBJ);
  pop(V, m);
  if (rc) return rc;
  *out = json_pack("{s:O}", a ? "application" : "team", a ? a : t);
  return *out ? 0 : oom(V);
}

/* concurrency / max_errors: N or "P%". */
static int share(v_t *V, const json_t *rate, const char *key, json_int_t nmin, int pmin,
                 json_t *def, json_t **out) {
  json_t *v = member(rate, key);
  mark_t m;
  int rc = 0;
  *out = NULL;
  if (!v) return (*out = json_incref(def)) ? 0 : oom(V);
  m = push_key(V, key);
  if (json_is_integer(v)) {
    if (json_integer_value(v) < nmin || json_integer_value(v) > BATCH_MAX_N)
      rc = verr(V, "%lld is out of range: expected %lld to %d targets",
                (long long)json_integer_value(v), (long long)nmin, BATCH_MAX_N);
  } else {
    int p = pct(v);
    if (p < pmin || p > 100)
      rc = verr(V, "expected a number of targets or a percentage from \"%d%%\" to \"100%%\"", pmin);
  }
  pop(V, m);
  if (!rc) *out = json_incref(v);
  return rc;
}

static int rate_section(v_t *V, const json_t *doc, json_t **out) {
  static const char *const keys[] = {"concurrency", "max_errors", "batches", "batch_pause", NULL};
  json_t *r = member(doc, "rate"), *conc = NULL, *maxe = NULL, *batches = NULL, *pause, *it;
  json_t *hundred = json_string("100%"), *zero = json_integer(0);
  mark_t m, mk;
  size_t i;
  int rc = 0;

  *out = NULL;
  m = push_key(V, "rate");
  if (!hundred || !zero || !(batches = json_array())) {
    rc = oom(V);
    goto out;
  }
  if (r && (rc = check_map(V, r, keys))) goto out;
  if ((rc = share(V, r, "concurrency", 1, 1, hundred, &conc))) goto out;
  if ((rc = share(V, r, "max_errors", 0, 0, zero, &maxe))) goto out;
  if ((it = member(r, "batches"))) {
    json_int_t last_n = 0;
    int last_p = 0, full = 0;
    json_t *b;
    mk = push_key(V, "batches");
    if (!json_is_array(it)) rc = verr(V, "expected a list");
    else if (!json_array_size(it)) rc = verr(V, "expected at least one item");
    else if (json_array_size(it) > MAX_BATCHES) rc = verr(V, "more than %d batches", MAX_BATCHES);
    json_array_foreach(it, i, b) {
      mark_t mi;
      if (rc) break;
      mi = push_idx(V, i);
      if (full) {
        rc = verr(V, "comes after \"100%%\" (every target already had its turn)");
      } else if (json_is_integer(b)) {
        json_int_t n = json_integer_value(b);
        if (n < 1 || n > BATCH_MAX_N)
          rc = verr(V, "%lld is out of range: expected 1 to %d targets", (long long)n, BATCH_MAX_N);
        else if (n <= last_n)
          rc = verr(V, "%lld is not more than %lld (batches are cumulative)", (long long)n,
                    (long long)last_n);
        last_n = n;
      } else {
        int p = pct(b);
        if (p < 1 || p > 100)
          rc = verr(V, "expected a number of targets or a percentage from \"1%%\" to \"100%%\"");
        else if (p <= last_p)
          rc = verr(V, "%d%% is not more than %d%% (batches are cumulative)", p, last_p);
        last_p = p;
        full = p == 100;
      }
      if (!rc && json_array_append(batches, b)) rc = oom(V);
      pop(V, mi);
    }
    pop(V, mk);
    if (rc) goto out;
  }
  if (!json_equal(json_array_get(batches, json_array_size(batches) - 1), hundred) &&
      json_array_append(batches, hundred)) {
    rc = oom(V);
    goto out;
  }
  if ((pause = member(r, "batch_pause"))) {
    static const char *const modes[] = {"none", "first", "every", NULL};
    int64_t ms;
    char b[80];
    int is_mode = 0;
    mk = push_key(V, "batch_pause");
    for (const char *const *md = modes; *md; md++) is_mode |= is_str(pause, *md);
    if (!is_mode) {
      if (!json_is_string(pause) || strlen(json_string_value(pause)) != json_string_length(pause) ||
          keel_duration_parse(json_string_value(pause), &ms))
        rc = verr(V, "expected none, first, every or a duration like 5m");
      else if (ms < step_timeout.min || ms > step_timeout.max)
        rc = verr(V, "'%s' is out of range: expected 1s to 24h", qs(b, pause));
    }
    pop(V, mk);
    if (rc) goto out;
  }
  *out = json_pack("{s:O,s:O,s:O,s:s}", "concurrency", conc, "max_errors", maxe, "batches",
                   batches, "batch_pause", pause ? json_string_value(pause) : "none");
  if (!*out) rc = oom(V);
out:
  pop(V, m);
  json_decref(conc);
  json_decref(maxe);
  json_decref(batches);
  json_decref(hundred);
  json_decref(zero);
  return rc;
}

/* ---- schedule ---------------------------------------------------------------- */

/* The text must be a string (text_ok); the grammar and its messages are
 * runbook/cron.c's, so what validates here is exactly what the scheduler
 * parses.  *norm gets the fields single-spaced. */
static int check_cron(v_t *V, const json_t *s, json_t **norm) {
  char out[257]; /* text_ok: at most 256 bytes */
  keel_err_t ce = {0};
  k_cron_t c;
  int rc;

  if ((rc = text_ok(V, s, 256, T_LINES))) return rc;
  if (k_cron_parse(json_string_value(s), json_string_length(s), &c, &ce))
    return verr(V, "%s", ce.msg);
  k_cron_normalize(json_string_value(s), json_string_length(s), out);
  return (*norm = json_string(out)) ? 0 : oom(V);
}

static int schedule_section(v_t *V, const json_t *doc, const json_t *params, json_t **out) {
  static const char *const keys[] = {"cron", "rate", "rate_ms", "params", "owner", NULL};
  json_t *s = member(doc, "schedule"), *cron, *cnorm = NULL, *pnorm = NULL, *own;
  int64_t ms = 0;
  int has_rate;
  mark_t m, mk;
  int rc;

  *out = NULL;
  if (!s) return (*out = json_null()), 0;
  m = push_key(V, "schedule");
  if ((rc = check_map(V, s, keys))) goto out;
  cron = member(s, "cron");
  has_rate = member(s, "rate") || member(s, "rate_ms");
  if (!cron && !has_rate) {
    rc = verr(V, "expected cron or rate");
    goto out;
  }
  if (cron && has_rate) {
    mk = push_key(V, member(s, "rate") ? "rate" : "rate_ms");
    rc = verr(V, "give cron or rate, not both");
    pop(V, mk);
    goto out;
  }
  if (cron) {
    mk = push_key(V, "cron");
    rc = check_cron(V, cron, &cnorm);
    pop(V, mk);
    if (rc) goto out;
  } else if ((rc = get_duration(V, s, "rate", &schedule_rate, 1, 0, &ms))) {
    goto out;
  }
  mk = push_key(V, "params");
  rc = params_check(V, params, member(s, "params"), 1, &pnorm);
  pop(V, mk);
  if (rc) goto out;
  if (!(own = member(s, "owner"))) {
    rc = missing(V, "owner");
    goto out;
  }
  mk = push_key(V, "owner");
  rc = check_name(V, own, N_OBJ);
  pop(V, mk);
  if (rc) goto out;
  *out = json_pack("{s:O,s:o,s:O,s:O}", "cron", cnorm ? cnorm : json_null(), "rate_ms",
                   cron ? json_null() : json_integer(ms), "params", pnorm, "owner", own);
  if (!*out) rc = oom(V);
out:
  pop(V, m);
  json_decref(cnorm);
  json_decref(pnorm);
  return rc;
}

/* ---- steps --------------------------------------------------------------------- */

static const char *const kinds[] = {"command",  "script", "http", "sleep",
                                     "approval", "assert", NULL};
#define KINDS_TEXT "command, script, http, sleep, approval, assert"

/* X in "rollback-to X" / assert.step: an earlier step. Caller has pushed. */
static int earlier_step(v_t *V, const char *name, size_t n, const char *what) {
  char b[80];
  long i = step_index(V, name, n);
  if (i < 0) return verr(V, "no step '%s'", q(b, name, n));
  if ((size_t)i >= V->step)
    return verr(V, "%s: step '%s' does not run before this one", what, q(b, name, n));
  return 0;
}

static int on_failure(v_t *V, const json_t *st, json_t **out) {
  static const char *const keys[] = {"action", "step", NULL};
  static const char *const actions[] = {"abort", "continue", "rollback-to", NULL};
  json_t *v = member(st, "on_failure"), *act, *target = NULL;
  const char *a = "abort";
  mark_t m, mk;
  int rc = 0;

  *out = NULL;
  if (!v) return (*out = json_pack("{s:s}", "action", "abort")) ? 0 : oom(V);
  m = push_key(V, "on_failure");
  if (json_is_string(v)) {
    const char *t = json_string_value(v);
    size_t n = json_string_length(v), i = 11;
    if (is_str(v, "abort") || is_str(v, "continue")) {
      a = t;
    } else if (n > 12 && !strncmp(t, "rollback-to ", 12)) {
      while (i < n && t[i] == ' ') i++;
      a = "rollback-to";
      if (!(rc = earlier_step(V, t + i, n - i, "rollback-to")) &&
          !(target = json_stringn(t + i, n - i)))
        rc = oom(V);
    } else {
      rc = verr(V, "expected abort, continue or rollback-to STEP");
    }
  } else if (!(rc = check_map(V, v, keys))) {
    if (!(act = member(v, "action"))) {
      rc = missing(V, "action");
    } else {
      mk = push_key(V, "action");
      rc = check_enum(V, act, actions);
      pop(V, mk);
      if (!rc) {
        json_t *s = member(v, "step");
        a = json_string_value(act);
        if (!strcmp(a, "rollback-to") && !s) {
          rc = missing(V, "step");
        } else if (s) {
          mk = push_key(V, "step");
          if (strcmp(a, "rollback-to")) rc = verr(V, "only with action rollback-to");
          else if (!(rc = text_ok(V, s, TEXT_MAX, T_LINE)))
            rc = earlier_step(V, json_string_value(s), json_string_length(s), "rollback-to");
          pop(V, mk);
          if (!rc) target = json_incref(s);
        }
      }
    }
  }
  pop(V, m);
  if (rc) return rc;
  *out = target ? json_pack("{s:s,s:o}", "action", a, "step", target)
                : json_pack("{s:s}", "action", a);
  return *out ? 0 : oom(V);
}

static int command_kind(v_t *V, const json_t *c, json_t **out) {
  static const char *const keys[] = {"argv", "shell", NULL};
  json_t *argv = member(c, "argv"), *sh, *copy = NULL, *it;
  mark_t m, mi;
  size_t i;
  int rc;

  if ((rc = check_map(V, c, keys))) return rc;
  if (!argv && !member(c, "shell")) return verr(V, "expected argv: [...] or shell: \"...\"");
  if (argv && member(c, "shell")) {
    m = push_key(V, "shell");
    rc = verr(V, "give argv or shell, not both");
    pop(V, m);
    return rc;
  }
  if (!argv) {
    if ((rc = get_tmpl(V, c, "shell", 1, BODY_MAX, T_ANY, CTX_STEP, &sh))) return rc;
    if ((rc = check_shell_refs(V, "shell", sh, 1))) return rc;
    if (!json_string_length(sh)) {
      m = push_key(V, "shell");
      rc = verr(V, "expected a command");
      pop(V, m);
      return rc;
    }
    *out = json_pack("{s:O}", "shell", sh);
    return *out ? 0 : oom(V);
  }
  m = push_key(V, "argv");
  if (!json_is_array(argv)) rc = verr(V, "expected a list");
  else if (!json_array_size(argv)) rc = verr(V, "expected at least one item");
  else if (json_array_size(argv) > MAX_ARGV) rc = verr(V, "more than %d items", MAX_ARGV);
  else if (!(copy = json_array())) rc = oom(V);
  json_array_foreach(argv, i, it) {
    if (rc) break;
    mi = push_idx(V, i);
    if (!(rc = text_ok(V, it, K_RUNBOOK_PARAM_MAX, T_ANY))) {
      if (i == 0 && !json_string_length(it)) rc = verr(V, "expected a program");
      else rc = check_tmpl(V, it, CTX_STEP, NULL);
    }
    if (!rc && json_array_append(copy, it)) rc = oom(V);
    pop(V, mi);
  }
  pop(V, m);
  if (!rc && !(*out = json_pack("{s:O}", "argv", copy))) rc = oom(V);
  json_decref(copy);
  return rc;
}

static int script_kind(v_t *V, const json_t *c, json_t **out) {
  static const char *const keys[] = {"interpreter", "body", NULL};
  json_t *interp, *body;
  mark_t m;
  int rc;
  if ((rc = check_map(V, c, keys))) return rc;
  if ((rc = get_text(V, c, "interpreter", 0, 255, T_LINE, &interp))) return rc;
  if (interp) {
    const char *t = json_string_value(interp);
    m = push_key(V, "interpreter");
    if (t[0] != '/' || strpbrk(t, " \t")) rc = verr(V, "expected an absolute path like /bin/sh");
    pop(V, m);
    if (rc) return rc;
  }
  if ((rc = get_tmpl(V, c, "body", 1, BODY_MAX, T_ANY, CTX_STEP, &body))) return rc;
  if ((rc = check_shell_refs(V, "body", body,
                             is_posix_shell(interp ? json_string_value(interp) : "/bin/sh"))))
    return rc;
  if (!json_string_length(body)) {
    m = push_key(V, "body");
    rc = verr(V, "expected a script");
    pop(V, m);
    return rc;
  }
  *out = json_pack("{s:s,s:O}", "interpreter", interp ? json_string_value(interp) : "/bin/sh",
                   "body", body);
  return *out ? 0 : oom(V);
}

static int http_kind(v_t *V, const json_t *c, json_t **out) {
  static const char *const keys[] = {"url", "method", "expect_status", "expect_body", NULL};
  static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL};
  json_t *url, *method, *body;
  json_int_t status;
  mark_t m;
  int rc;
  if ((rc = check_map(V, c, keys))) return rc;
  if ((rc = get_text(V, c, "url", 1, URL_MAX, T_LINE, &url))) return rc;
  m = push_key(V, "url");
  {
    const char *t = json_string_value(url);
    size_t n = json_string_length(url);
    /* The scheme is literal text: a parameter never chooses it. */
    if (!((n > 7 && !strncmp(t, "http://", 7)) || (n > 8 && !strncmp(t, "https://", 8))))
      rc = verr(V, "expected an http:// or https:// URL");
    else
      rc = check_tmpl(V, url, CTX_STEP, NULL);
  }
  pop(V, m);
  if (rc) return rc;
  if ((method = member(c, "method"))) {
    m = push_key(V, "method");
    rc = check_enum(V, method, methods);
    pop(V, m);
    if (rc) return rc;
  }
  if ((rc = get_int(V, c, "expect_status", 100, 599, 200, &status))) return rc;
  if ((rc = get_tmpl(V, c, "expect_body", 0, TEXT_MAX, T_ANY, CTX_STEP, &body))) return rc;
  *out = json_pack("{s:O,s:s,s:I,s:O}", "url", url, "method",
                   method ? json_string_value(method) : "GET", "expect_status", status,
                   "expect_body", body ? body : json_null());
  return *out ? 0 : oom(V);
}

int k_runbook_approval_check(k_walk_t *W, const json_t *c, int need_approvers, json_t **out) {
  json_t *ap = member(c, "approvers"), *copy = NULL, *it;
  json_int_t min;
  int64_t ms;
  size_t i, users = 0, teams = 0;
  mark_t m, mi;
  char b[80];
  int rc = 0;

  *out = NULL;
  if (!ap && need_approvers) return k_walk_missing(W, "approvers");
  m = k_walk_push_key(W, "approvers");
  if (ap && !json_is_array(ap)) rc = k_walk_err(W, "expected a list");
  else if (ap && !json_array_size(ap)) rc = k_walk_err(W, "expected at least one item");
  else if (json_array_size(ap) > MAX_APPROVERS) rc = k_walk_err(W, "more than %d items", MAX_APPROVERS);
  else if (ap && !(copy = json_array())) rc = k_walk_oom(W);
  json_array_foreach(ap, i, it) {
    const char *t;
    size_t n;
    if (rc) break;
    mi = k_walk_push_idx(W, i);
    if (!(rc = k_walk_text(W, it, TEXT_MAX, T_LINE))) {
      t = json_string_value(it);
      n = json_string_length(it);
      if (n > 5 && (!strncmp(t, "team:", 5) || !strncmp(t, "user:", 5)) &&
          name_ok(t + 5, n - 5, N_OBJ))
      {
        if (t[0] == 't') teams++;
        else users++;
      } else
        rc = k_walk_err(W, "invalid approver '%s': expected team:NAME or user:NAME", qs(b, it));
    }
    if (!rc) rc = k_walk_add_unique(W, copy, it);
    k_walk_pop(W, mi);
  }
  k_walk_pop(W, m);
  if (rc) goto out;
  if ((rc = k_walk_get_int(W, c, "min_approvals", 1, 100, 1, &min))) goto out;
  if (copy && !teams && (size_t)min > users) {
    m = k_walk_push_key(W, "min_approvals");
    rc = k_walk_err(W, "%lld approvals needed but only %zu users may approve", (long long)min, users);
    k_walk_pop(W, m);
    goto out;
  }
  if ((rc = k_walk_get_duration(W, c, "timeout", &approval_timeout, 0, 86400000, &ms))) goto out;
  *out = json_pack("{s:O,s:I,s:I}", "approvers", copy ? copy : json_null(), "min_approvals", min,
                   "timeout_ms", (json_int_t)ms);
  if (!*out) rc = k_walk_oom(W);
out:
  json_decref(copy);
  return rc;
}

static int approval_kind(v_t *V, const json_t *c, json_t **out) {
  static const char *const keys[] = {"approvers", "min_approvals", "message", "timeout",
                                     "timeout_ms", NULL};
  json_t *msg;
  int rc;

  if ((rc = check_map(V, c, keys))) return rc;
  if ((rc = k_runbook_approval_check(&V->w, c, 1, out))) return rc;
  if ((rc = get_tmpl(V, c, "message", 0, TEXT_MAX, T_LINES, CTX_APPROVAL, &msg)) ||
      json_object_set(*out, "message", msg ? msg : json_null())) {
    json_decref(*out);
    *out = NULL;
    return rc ? rc : oom(V);
  }
  return 0;
}

static int assert_kind(v_t *V, const json_t *c, json_t **out) {
  static const char *const keys[] = {"step", "field", "equals", "not_equals", "contains",
                                     "matches", NULL};
  static const char *const fields[] = {"stdout", "stderr", "exit_code", NULL};
  static const char *const ops[] = {"equals", "not_equals", "contains", "matches", NULL};
  json_t *st, *field, *val = NULL, *nv = NULL;
  const char *op = NULL;
  mark_t m;
  int rc;

  if ((rc = check_map(V, c, keys))) return rc;
  if ((rc = get_text(V, c, "step", 1, TEXT_MAX, T_LINE, &st))) return rc;
  m = push_key(V, "step");
  rc = earlier_step(V, json_string_value(st), json_string_length(st), "assert");
  pop(V, m);
  if (rc) return rc;
  if (!(field = member(c, "field"))) return missing(V, "field");
  m = push_key(V, "field");
  rc = check_enum(V, field, fields);
  pop(V, m);
  if (rc) return rc;
  for (const char *const *o = ops; *o; o++) {
    json_t *v = member(c, *o);
    if (!v) continue;
    if (op) {
      m = push_key(V, *o);
      rc = verr(V, "only one of equals, not_equals, contains, matches (this one has %s)", op);
      pop(V, m);
      return rc;
    }
    op = *o;
    val = v;
  }
  if (!op) return verr(V, "expected one of equals, not_equals, contains, matches");
  m = push_key(V, op);
  if (json_is_integer(val) && (!strcmp(op, "equals") || !strcmp(op, "not_equals"))) {
    /* exit_code: 0 is as natural as "0"; compared as text. */
    char num[24];
    snprintf(num, sizeof num, "%lld", (long long)json_integer_value(val));
    if (!(nv = json_string(num))) rc = oom(V);
  } else if (!strcmp(op, "matches")) {
    if (!(rc = check_regex(V, val))) nv = json_incref(val);
  } else if (!(rc = text_ok(V, val, TEXT_MAX, T_ANY))) {
    if (!(rc = check_tmpl(V, val, CTX_STEP, NULL))) nv = json_incref(val);
  }
  pop(V, m);
  if (rc) return rc;
  *out = json_pack("{s:O,s:O,s:o}", "step", st, "field", field, op, nv);
  return *out ? 0 : oom(V);
}

static int step(v_t *V, const json_t *s, json_t **out) {
  static const char *const keys[] = {"name", "command", "script", "http", "sleep", "sleep_ms",
                                     "approval", "assert", "timeout", "timeout_ms", "on_failure",
                                     NULL};
  json_t *name, *body = NULL, *onf = NULL, *timeout = NULL;
  const char *kind = NULL, *kkey = NULL;
  int64_t ms;
  mark_t m;
  char b[80];
  long first;
  int rc;

  *out = NULL;
  if ((rc = check_map(V, s, keys))) return rc;
  if (!(name = member(s, "name"))) return missing(V, "name");
  m = push_key(V, "name");
  if (!(rc = check_name(V, name, N_STEP)) &&
      (first = step_index(V, json_string_value(name), json_string_length(name))) >= 0 &&
      (size_t)first != V->step)
    rc = verr(V, "duplicate step '%s' (first at steps[%ld])", qs(b, name), first);
  pop(V, m);
  if (rc) return rc;
  for (const char *const *k = kinds; *k; k++) {
    const char *key = *k;
    if (!strcmp(key, "sleep") && !member(s, "sleep") && member(s, "sleep_ms")) key = "sleep_ms";
    if (!member(s, key)) continue;
    if (kind) {
      m = push_key(V, key);
      rc = verr(V, "a step is one of " KINDS_TEXT ": this one is already %s", kind);
      pop(V, m);
      return rc;
    }
    kind = *k;
    kkey = key;
  }
  if (!kind) return verr(V, "expected one of " KINDS_TEXT);
  if (!strcmp(kind, "sleep")) {
    if ((rc = get_duration(V, s, "sleep", &step_timeout, 1, 0, &ms))) return rc;
    if (!(body = json_integer(ms))) return oom(V);
    kkey = "sleep_ms";
  } else {
    m = push_key(V, kind);
    if (!strcmp(kind, "command")) rc = command_kind(V, member(s, kind), &body);
    else if (!strcmp(kind, "script")) rc = script_kind(V, member(s, kind), &body);
    else if (!strcmp(kind, "http")) rc = http_kind(V, member(s, kind), &body);
    else if (!strcmp(kind, "approval")) rc = approval_kind(V, member(s, kind), &body);
    else rc = assert_kind(V, member(s, kind), &body);
    pop(V, m);
    if (rc) return rc;
  }
  if (!strcmp(kind, "command") || !strcmp(kind, "script") || !strcmp(kind, "http")) {
    if ((rc = get_duration(V, s, "timeout", &step_timeout, 0, 60000, &ms))) goto out;
    if (!(timeout = json_integer(ms))) goto nomem;
  } else if (member(s, "timeout") || member(s, "timeout_ms")) {
    m = push_key(V, member(s, "timeout") ? "timeout" : "timeout_ms");
    if (!strcmp(kind, "approval")) rc = verr(V, "not for an approval step: use approval.timeout");
    else rc = verr(V, "not for %s step", !strcmp(kind, "assert") ? "an assert" : "a sleep");
    pop(V, m);
    goto out;
  }
  if ((rc = on_failure(V, s, &onf))) goto out;
  *out = json_pack("{s:O,s:O,s:O,s:O}", "name", name, kkey, body, "timeout_ms",
                   timeout ? timeout : json_null(), "on_failure", onf);
  if (!*out) goto nomem;
  goto out;
nomem:
  rc = oom(V);
out:
  json_decref(body);
  json_decref(timeout);
  json_decref(onf);
  return rc;
}

/* A top-level list of mappings: each through fn (V->step set to its index)
 * into a new array set on norm under key. */
typedef int (*item_fn)(v_t *V, const json_t *item, json_t **out);

static int section(v_t *V, const json_t *doc, json_t *norm, const char *key, int required,
                   size_t max, item_fn fn) {
  json_t *a = member(doc, key), *copy = json_array(), *it;
  mark_t m, mi;
  size_t i;
  int rc = 0;

  if (!copy) return oom(V);
  if (!a && required) {
    rc = missing(V, key);
    goto out;
  }
  m = push_key(V, key);
  if (a && !json_is_array(a)) rc = verr(V, "expected a list");
  else if (a && required && !json_array_size(a)) rc = verr(V, "expected at least one item");
  else if (json_array_size(a) > max) rc = verr(V, "more than %zu items", max);
  json_array_foreach(a, i, it) {
    json_t *o = NULL;
    if (rc) break;
    mi = push_idx(V, i);
    V->step = i;
    rc = fn(V, it, &o);
    pop(V, mi);
    if (!rc && json_array_append_new(copy, o)) rc = oom(V);
  }
  pop(V, m);
  if (!rc && json_object_set(norm, key, copy)) rc = oom(V);
out:
  json_decref(copy);
  return rc;
}

/* Every step's name -> the index of the first step with it, before the
 * steps are checked, so a reference to a later step can say so. */
static int collect_steps(v_t *V, const json_t *doc) {
  json_t *a = member(doc, "steps"), *it;
  size_t i;
  json_array_foreach(a, i, it) {
    json_t *n = json_object_get(it, "name");
    if (!json_is_string(n) ||
        json_object_getn(V->steps, json_string_value(n), json_string_length(n)))
      continue;
    if (json_object_setn_new(V->steps, json_string_value(n), json_string_length(n),
                             json_integer((json_int_t)i)))
      return oom(V);
  }
  return 0;
}

int k_runbook_doc_validate(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                           json_t **out, keel_err_t *e) {
  static const char *const keys[] = {"kind",     "name",    "description", "owner",
                                     "parameters", "targets", "rate",     "schedule",
                                     "timeout",  "timeout_ms", "steps",   NULL};
  v_t V;
  json_t *norm = NULL, *rname, *desc, *o, *own = NULL, *tg, *rate = NULL, *sched = NULL;
  mark_t m;
  size_t nrefs = 0;
  int64_t tmo = 0;
  int rc;

  memset(&V, 0, sizeof V);
  V.w.name = name ? name : "<input>";
  V.w.pos = pos;
  V.w.e = e;
  *out = NULL;
  if (!(V.params = json_object()) || !(V.steps = json_object()) || !(norm = json_object())) {
    rc = oom(&V);
    goto out;
  }
  if ((rc = k_walk_head(&V.w, doc, keys, "Runbook"))) goto out;
  if (!(rname = member(doc, "name"))) {
    rc = missing(&V, "name");
    goto out;
  }
  m = push_key(&V, "name");
  rc = check_name(&V, rname, N_OBJ);
  pop(&V, m);
  if (rc) goto out;
  if ((rc = get_text(&V, doc, "description", 0, DESC_MAX, T_LINES, &desc))) goto out;
  if (!(o = member(doc, "owner"))) {
    rc = missing(&V, "owner");
    goto out;
  }
  m = push_key(&V, "owner");
  rc = owner(&V, o, &own);
  pop(&V, m);
  if (rc) goto out;
  if ((rc = section(&V, doc, norm, "parameters", 0, MAX_PARAMS, parameter))) goto out;
  if ((rc = collect_steps(&V, doc))) goto out;
  if ((rc = get_text(&V, doc, "targets", 1, KEEL_SELECTOR_MAX_LEN, T_LINES, &tg))) goto out;
  m = push_key(&V, "targets");
  rc = check_tmpl(&V, tg, CTX_TARGETS, &nrefs);
  if (!rc && !nrefs) {
    /* Without references the text is the selector (a "{{ '{{' }}" escape
     * could only make it invalid, as '{' is in no key or value). */
    rc = k_walk_selector(&V.w, tg, NULL);
  }
  pop(&V, m);
  if (rc) goto out;
  if ((rc = rate_section(&V, doc, &rate))) goto out;
  if ((rc = schedule_section(&V, doc, json_object_get(norm, "parameters"), &sched))) goto out;
  if ((rc = get_duration(&V, doc, "timeout", &execution_timeout, 0, 0, &tmo))) goto out;
  if ((rc = section(&V, doc, norm, "steps", 1, MAX_STEPS, step))) goto out;
  if (json_object_set_new(norm, "kind", json_string("Runbook")) ||
      json_object_set(norm, "name", rname) ||
      json_object_set(norm, "description", desc ? desc : json_null()) ||
      json_object_set(norm, "owner", own) || json_object_set(norm, "targets", tg) ||
      json_object_set(norm, "rate", rate) || json_object_set(norm, "schedule", sched) ||
      json_object_set_new(norm, "timeout_ms", tmo ? json_integer(tmo) : json_null())) {
    rc = oom(&V);
    goto out;
  }
  *out = norm;
  norm = NULL;
out:
  json_decref(norm);
  json_decref(own);
  json_decref(rate);
  json_decref(sched);
  json_decref(V.params);
  json_decref(V.steps);
  return rc;
}

int k_runbook_doc_load(const char *name, const char *buf, size_t len, json_t **out, keel_err_t *e) {
  return k_walk_load(name, buf, len, k_runbook_doc_validate, out, e);
}
