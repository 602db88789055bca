/* libFuzzer harness: keel/template.h.
 *
 * The first byte picks the mode (low bit: 0 RAW, 1 SHELL); the rest is the
 * template, passed as exactly that many bytes with no NUL terminator.  The
 * lookup knows a few names, all with hostile values.  Beyond not crashing:
 *   - parse error: KEEL_EINVAL (or KEEL_ENOMEM) with a one-line message
 *     "column N: ...", N within the text (or just past it);
 *   - parse ok: every name is dot-separated identifiers within the limits
 *     (the first may start with '$', as alert templates' names do);
 *     render either succeeds or fails with "unknown name 'X'" where X is the
 *     first reference the lookup does not know, and then out is unchanged;
 *   - the output is exactly as long as the literal text plus the values
 *     (RAW) or their quoted forms (SHELL);
 *   - SHELL, when the literal text has no ' or \: the output run through
 *     the single-quote word splitter below gives back the literal text
 *     unquoted and each value as exactly one quoted unit, in order, so no
 *     value can end its quotes early or merge into the text around it. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/template.h"

#include "fuzz_check.h"

static const char *const known[][2] = {
    {"params.x", "; rm -rf /"},
    {"params.q", "'"},
    {"params.qq", "it's \"q\" `id` $(id) \\ \n*"},
    {"params.empty", ""},
    {"steps.s.stdout", "{{ params.x }}"},
    {"target.tags.k", "--x '' '\\'' \\"},
    {"a", "'\\''"},
    {"$value", "0.5"},
    {"$labels.instance", "web-1:9100 '$(id)'"},
};
#define NKNOWN (sizeof known / sizeof known[0])

static const char *known_value(const char *name) {
  for (size_t i = 0; i < NKNOWN; i++)
    if (!strcmp(known[i][0], name)) return known[i][1];
  return NULL;
}

static int lookup(void *ud, const char *name, const char **value, size_t *len) {
  const char *v = known_value(name);
  (void)ud;
  if (!v) return KEEL_ENOENT;
  *value = v;
  *len = strlen(v);
  return 0;
}

/* Every name is the empty string: renders the literal text alone. */
static int lookup_empty(void *ud, const char *name, const char **value, size_t *len) {
  (void)ud;
  (void)name;
  *value = "";
  *len = 0;
  return 0;
}

/* Dot-separated identifiers; the first may start with one '$'. */
static int valid_name(const char *n) {
  size_t len = strlen(n), parts = 0, start = n[0] == '$' ? 1 : 0;
  if (len == 0 || len > 128) return 0;
  for (size_t j = start; j <= len; j++) {
    unsigned char c = (unsigned char)n[j];
    if (j == len || c == '.') {
      if (j == start) return 0;
      parts++;
      start = j + 1;
    } else if (j == start ? !((c | 0x20) >= 'a' && (c | 0x20) <= 'z') && c != '_'
                          : !(((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9') ||
                              c == '_' || c == '-')) {
      return 0;
    }
  }
  return parts <= 8;
}

/* The splitter: reads s[0..n) as /bin/sh would read text that uses no
 * quoting but single quotes.  Unquoted bytes go to plain; each quoted unit
 * ('...' continued by \'' ... ') is decoded into units[k] (k counted in
 * *nunits); everything decoded, in order, goes to all.  0 on success, -1 when
 * the text is not of that form. */
static int split(const char *s, size_t n, keel_buf_t *plain, keel_buf_t *all, keel_buf_t *units,
                 size_t maxunits, size_t *nunits) {
  size_t i = 0;
  *nunits = 0;
  while (i < n) {
    if (s[i] == '\\') return -1; /* unquoted backslash: not produced by us */
    if (s[i] != '\'') {
      CHECK(keel_buf_append(plain, s + i, 1) == 0);
      CHECK(keel_buf_append(all, s + i, 1) == 0);
      i++;
      continue;
    }
    if (*nunits == maxunits) return -1;
    keel_buf_t *u = &units[(*nunits)++];
    for (;;) {
      const char *close;
      i++; /* the opening ' */
      close = memchr(s + i, '\'', n - i);
      if (!close) return -1;
      CHECK(keel_buf_append(u, s + i, (size_t)(close - (s + i))) == 0);
      CHECK(keel_buf_append(all, s + i, (size_t)(close - (s + i))) == 0);
      i = (size_t)(close - s) + 1;
      if (!(n - i >= 3 && s[i] == '\\' && s[i + 1] == '\'' && s[i + 2] == '\'')) break;
      CHECK(keel_buf_append(u, "'", 1) == 0);
      CHECK(keel_buf_append(all, "'", 1) == 0);
      i += 2; /* \' ; the loop then steps over the reopening ' */
    }
  }
  return 0;
}

static int contains(const char *hay, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; k <= n && i <= n - k; i++)
    if (!memcmp(hay + i, needle, k)) return 1;
  return 0;
}

static size_t quoted_len(const char *v) {
  size_t n = 2;
  for (; *v; v++) n += *v == '\'' ? 4 : 1;
  return n;
}

static void check_shell_words(const keel_tmpl_t *t, const keel_buf_t *shell,
                              const keel_buf_t *raw, const keel_buf_t *lit) {
  keel_buf_t plain, all, units[256];
  size_t nrefs = keel_tmpl_nrefs(t), nunits = 0;

  CHECK(nrefs <= 256);
  keel_buf_init(&plain, 1 << 24);
  keel_buf_init(&all, 1 << 24);
  for (size_t i = 0; i < 256; i++) keel_buf_init(&units[i], 1 << 20);
  CHECK(split(shell->data ? shell->data : "", shell->len, &plain, &all, units, 256, &nunits) == 0);
  CHECK(nunits == nrefs);
  for (size_t i = 0; i < nrefs; i++) {
    const char *v = known_value(keel_tmpl_ref(t, i));
    CHECK(units[i].len == strlen(v));
    CHECK(!units[i].len || !memcmp(units[i].data, v, units[i].len));
  }
  CHECK(plain.len == lit->len);
  CHECK(!plain.len || !memcmp(plain.data, lit->data, plain.len));
  CHECK(all.len == raw->len);
  CHECK(!all.len || !memcmp(all.data, raw->data, all.len));
  keel_buf_free(&plain);
  keel_buf_free(&all);
  for (size_t i = 0; i < 256; i++) keel_buf_free(&units[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  keel_tmpl_mode_t mode;
  keel_tmpl_t *t = (keel_tmpl_t *)1;
  keel_buf_t out, raw, shell, lit;
  keel_err_t e = {0};
  const char *unknown = NULL;
  size_t n, nrefs, want_raw, want_shell;
  char *text;
  int rc;

  if (size == 0) return 0;
  mode = (data[0] & 1) ? KEEL_TMPL_SHELL : KEEL_TMPL_RAW;
  n = size - 1;
  /* An exact-size copy: ASan reports any read past n. */
  text = malloc(n ? n : 1);
  CHECK(text);
  if (n) memcpy(text, data + 1, n);
  keel_buf_init(&out, 1 << 24);
  keel_buf_init(&raw, 1 << 24);
  keel_buf_init(&shell, 1 << 24);
  keel_buf_init(&lit, 1 << 24);

  rc = keel_tmpl_parse(text, n, &t, &e);
  if (rc) {
    size_t col = 0;
    CHECK(rc == KEEL_EINVAL || rc == KEEL_ENOMEM);
    CHECK(t == NULL);
    CHECK(e.code == rc);
    CHECK(e.msg[0] != '\0');
    CHECK(!strchr(e.msg, '\n') && !strchr(e.msg, '\r'));
    if (rc == KEEL_EINVAL) {
      CHECK(sscanf(e.msg, "column %zu: ", &col) == 1);
      CHECK(col >= 1 && col <= n + 1);
    }
    goto out;
  }
  CHECK(t != NULL);

  /* Names, and which one the renderer must complain about. */
  nrefs = keel_tmpl_nrefs(t);
  CHECK(nrefs <= 256);
  CHECK(keel_tmpl_ref(t, nrefs) == NULL);
  want_raw = want_shell = 0;
  for (size_t i = 0; i < nrefs; i++) {
    const char *name = keel_tmpl_ref(t, i), *v;
    CHECK(name && valid_name(name));
    CHECK(contains(text, n, name)); /* names come from the text verbatim */
    v = known_value(name);
    if (!v) {
      if (!unknown) unknown = name;
      continue;
    }
    want_raw += strlen(v);
    want_shell += quoted_len(v);
  }

  /* The literal text alone: never longer than the template. */
  CHECK(keel_tmpl_render(t, KEEL_TMPL_RAW, lookup_empty, NULL, &lit, &e) == 0);
  CHECK(lit.len <= n);
  CHECK(!memchr(lit.data ? lit.data : "", '\0', lit.len));

  CHECK(keel_buf_puts(&out, "pre") == 0);
  rc = keel_tmpl_render(t, mode, lookup, NULL, &out, &e);
  if (unknown) {
    char want[256];
    snprintf(want, sizeof want, "unknown name '%s'", unknown);
    CHECK(rc == KEEL_EINVAL);
    CHECK(!strcmp(e.msg, want));
    CHECK(out.len == 3 && !strcmp(out.data, "pre"));
    goto out;
  }
  CHECK(rc == 0);
  CHECK(!strncmp(out.data, "pre", 3));
  CHECK(keel_tmpl_render(t, KEEL_TMPL_RAW, lookup, NULL, &raw, &e) == 0);
  CHECK(keel_tmpl_render(t, KEEL_TMPL_SHELL, lookup, NULL, &shell, &e) == 0);
  CHECK(raw.len == lit.len + want_raw);
  CHECK(shell.len == lit.len + want_shell);
  if (mode == KEEL_TMPL_RAW)
    CHECK(out.len - 3 == raw.len && !memcmp(out.data + 3, raw.data ? raw.data : "", raw.len));
  else
    CHECK(out.len - 3 == shell.len &&
          !memcmp(out.data + 3, shell.data ? shell.data : "", shell.len));
  if (!memchr(lit.data ? lit.data : "", '\'', lit.len) &&
      !memchr(lit.data ? lit.data : "", '\\', lit.len))
    check_shell_words(t, &shell, &raw, &lit);

out:
  keel_tmpl_free(t == (keel_tmpl_t *)1 ? NULL : t);
  keel_buf_free(&out);
  keel_buf_free(&raw);
  keel_buf_free(&shell);
  keel_buf_free(&lit);
  free(text);
  return 0;
}
