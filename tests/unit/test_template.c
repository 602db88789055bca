/* Unit tests for keel/template.h: the syntax, names, limits, error messages
 * with their columns, both render modes, and hostile values run through a
 * real /bin/sh (SHELL) and a real exec without a shell (RAW). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/buf.h"
#include "keel/err.h"
#include "keel/template.h"

/* ---- helpers ------------------------------------------------------------ */

/* A lookup over a NULL-terminated list of {name, value} pairs. */
typedef struct kv {
  const char *name, *value;
  size_t len; /* 0: strlen(value) */
} kv_t;

static int kv_lookup(void *ud, const char *name, const char **value, size_t *len) {
  for (const kv_t *p = ud; p && p->name; p++) {
    if (strcmp(p->name, name)) continue;
    *value = p->value;
    *len = p->len ? p->len : strlen(p->value);
    return 0;
  }
  return KEEL_ENOENT;
}

static const kv_t fixed[] = {
    {"params.service", "nginx", 0},
    {"params.env", "prod", 0},
    {"steps.check.stdout", "active\n", 0},
    {"steps.check.exit_code", "0", 0},
    {"target.hostname", "web-01.example.com", 0},
    {"target.tags.rack-12", "r12", 0},
    {"params.empty", "", 0},
    {"params.braces", "{{ params.service }}", 0},
    {"params.quote", "it's", 0},
    {"_x", "u", 0},
    {NULL, NULL, 0},
};

/* Renders text with the fixed names; MUST succeed (caller frees). */
static char *render(const char *text, keel_tmpl_mode_t mode) {
  keel_buf_t b;
  keel_err_t e = {0};
  keel_buf_init(&b, 1 << 20);
  int rc = keel_tmpl_expand(text, strlen(text), mode, kv_lookup, (void *)fixed, &b, &e);
  if (rc) fail_msg("expand(\"%s\") = %d: %s", text, rc, e.msg);
  return b.data ? keel_buf_steal(&b) : strdup("");
}

static void expect_render(const char *text, keel_tmpl_mode_t mode, const char *want) {
  char *got = render(text, mode);
  if (strcmp(got, want)) fail_msg("render(\"%s\") = \"%s\", want \"%s\"", text, got, want);
  free(got);
}

static void expect_error_n(const char *text, size_t len, const char *want) {
  keel_tmpl_t *t = (keel_tmpl_t *)0x1;
  keel_err_t e = {0};
  int rc = keel_tmpl_parse(text, len, &t, &e);
  if (rc != KEEL_EINVAL) fail_msg("parse(\"%.*s\") = %d, want KEEL_EINVAL", (int)len, text, rc);
  assert_null(t);
  assert_int_equal(e.code, KEEL_EINVAL);
  assert_null(strchr(e.msg, '\n'));
  if (want && strcmp(e.msg, want))
    fail_msg("parse(\"%.*s\"):\n  got  %s\n  want %s", (int)len, text, e.msg, want);
}

static void expect_error(const char *text, const char *want) {
  expect_error_n(text, strlen(text), want);
}

static keel_tmpl_t *parse_ok(const char *text, size_t len) {
  keel_tmpl_t *t = NULL;
  keel_err_t e = {0};
  int rc = keel_tmpl_parse(text, len, &t, &e);
  if (rc) fail_msg("parse(\"%.*s\") = %d: %s", (int)(len > 80 ? 80 : len), text, rc, e.msg);
  assert_non_null(t);
  return t;
}

/* Runs argv (no shell involved unless argv[0] is one) with a minimal
 * environment; returns its stdout (caller frees) and exit status. */
static char *run(char *const argv[], int *status) {
  static char *const envp[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", NULL};
  posix_spawn_file_actions_t fa;
  keel_buf_t b;
  int pfd[2];
  pid_t pid;
  char chunk[4096];
  ssize_t n;

  keel_buf_init(&b, 1 << 20);
  assert_int_equal(pipe(pfd), 0);
  assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
  assert_int_equal(posix_spawn_file_actions_adddup2(&fa, pfd[1], 1), 0);
  assert_int_equal(posix_spawn_file_actions_addclose(&fa, pfd[0]), 0);
  assert_int_equal(posix_spawn_file_actions_addclose(&fa, pfd[1]), 0);
  assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, envp), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(pfd[1]);
  while ((n = read(pfd[0], chunk, sizeof chunk)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    assert_true(n > 0);
    assert_int_equal(keel_buf_append(&b, chunk, (size_t)n), 0);
  }
  close(pfd[0]);
  assert_int_equal(waitpid(pid, status, 0), pid);
  return b.data ? keel_buf_steal(&b) : strdup("");
}

/* ---- syntax ------------------------------------------------------------- */

static void test_literal_only(void **state) {
  expect_render("", KEEL_TMPL_RAW, "");
  expect_render("plain text", KEEL_TMPL_RAW, "plain text");
  expect_render("plain text", KEEL_TMPL_SHELL, "plain text");
  expect_render("a } b }} c { d", KEEL_TMPL_RAW, "a } b }} c { d"); /* }} alone is text */
  expect_render("}}}}", KEEL_TMPL_SHELL, "}}}}");
  expect_render("{", KEEL_TMPL_RAW, "{");
  expect_render("${x} {a} }{", KEEL_TMPL_RAW, "${x} {a} }{");

  /* NULL text with len 0 is the empty template. */
  keel_tmpl_t *t = NULL;
  assert_int_equal(keel_tmpl_parse(NULL, 0, &t, NULL), 0);
  assert_int_equal(keel_tmpl_nrefs(t), 0);
  assert_null(keel_tmpl_ref(t, 0));
  keel_tmpl_free(t);
  keel_tmpl_free(NULL);
  assert_int_equal(keel_tmpl_nrefs(NULL), 0);
}

static void test_references(void **state) {
  expect_render("{{ params.service }}", KEEL_TMPL_RAW, "nginx");
  expect_render("{{params.service}}", KEEL_TMPL_RAW, "nginx");
  expect_render("{{ \t params.service\t  }}", KEEL_TMPL_RAW, "nginx");
  expect_render("{{\nparams.service\n}}", KEEL_TMPL_RAW, "nginx");
  expect_render("restart {{ params.service }} in {{ params.env }}!", KEEL_TMPL_RAW,
                "restart nginx in prod!");
  expect_render("{{ params.service }}{{ params.env }}", KEEL_TMPL_RAW, "nginxprod");
  expect_render("[{{ params.empty }}]", KEEL_TMPL_RAW, "[]");
  expect_render("{{ target.tags.rack-12 }} {{ _x }}", KEEL_TMPL_RAW, "r12 u");
  expect_render("{{ steps.check.stdout }}", KEEL_TMPL_RAW, "active\n");
  expect_render("{{ params.service }}}", KEEL_TMPL_RAW, "nginx}");
  /* A value is inserted once and never parsed again. */
  expect_render("{{ params.braces }}", KEEL_TMPL_RAW, "{{ params.service }}");
  expect_render("{{ params.braces }}", KEEL_TMPL_SHELL, "'{{ params.service }}'");
}

static void test_escape(void **state) {
  expect_render("{{ '{{' }}", KEEL_TMPL_RAW, "{{");
  expect_render("{{'{{'}}", KEEL_TMPL_SHELL, "{{"); /* literal text is never quoted */
  expect_render("a {{ '{{' }} b }}", KEEL_TMPL_RAW, "a {{ b }}");
  expect_render("{{ '{{' }} params.service }}", KEEL_TMPL_RAW, "{{ params.service }}");
  expect_render("{{ '{{' }}{{ params.env }}", KEEL_TMPL_RAW, "{{prod");

  /* Escapes are text, not references. */
  const char *text = "x{{ '{{' }}y{{ a }}{{ '{{' }}";
  keel_tmpl_t *t = parse_ok(text, strlen(text));
  assert_int_equal(keel_tmpl_nrefs(t), 1);
  assert_string_equal(keel_tmpl_ref(t, 0), "a");
  keel_tmpl_free(t);
}

static void test_refs_listing(void **state) {
  const char *text = "{{ params.a }} {{ steps.s-1.exit_code }} {{ params.a }}";
  keel_tmpl_t *t = parse_ok(text, strlen(text));
  assert_int_equal(keel_tmpl_nrefs(t), 3);
  assert_string_equal(keel_tmpl_ref(t, 0), "params.a");
  assert_string_equal(keel_tmpl_ref(t, 1), "steps.s-1.exit_code");
  assert_string_equal(keel_tmpl_ref(t, 2), "params.a"); /* every occurrence, in order */
  assert_null(keel_tmpl_ref(t, 3));
  keel_tmpl_free(t);
}

static void test_not_nul_terminated(void **state) {
  /* Only text[0..len) is read: the bytes after are never part of it. */
  const char text[] = "{{ params.env }}{{ params.service";
  keel_buf_t b;
  keel_err_t e = {0};
  keel_buf_init(&b, 1024);
  assert_int_equal(keel_tmpl_expand(text, 16, KEEL_TMPL_RAW, kv_lookup, (void *)fixed, &b, &e), 0);
  assert_string_equal(b.data, "prod");
  keel_buf_free(&b);
  expect_error_n("{{ a }}", 6, "column 1: unterminated '{{'");
  expect_error_n("{{ a }}", 3, "column 1: unterminated '{{'");
  keel_tmpl_t *t = parse_ok("ab{{", 3); /* "ab{" */
  keel_tmpl_free(t);
}

/* Alert templates' names: one leading '$' on the first part only; a
 * lookup decides what a missing name renders as. */
static int dollar_lookup(void *ud, const char *name, const char **value, size_t *len) {
  (void)ud;
  if (!strcmp(name, "$value")) *value = "0.5";
  else if (!strcmp(name, "$labels.instance")) *value = "web-1";
  else if (!strncmp(name, "$labels.", 8)) *value = NULL; /* missing label: empty */
  else return KEEL_ENOENT;
  *len = *value ? strlen(*value) : 0;
  return 0;
}

static void test_dollar_names(void **state) {
  keel_tmpl_t *t = parse_ok("{{ $labels.instance }} at {{$value}}{{ $labels.nope }}!", 55);
  keel_buf_t b;
  keel_err_t e = {0};
  (void)state;
  assert_int_equal(keel_tmpl_nrefs(t), 3);
  assert_string_equal(keel_tmpl_ref(t, 0), "$labels.instance");
  assert_string_equal(keel_tmpl_ref(t, 1), "$value");
  keel_buf_init(&b, 1 << 10);
  assert_int_equal(keel_tmpl_render(t, KEEL_TMPL_RAW, dollar_lookup, NULL, &b, &e), 0);
  assert_string_equal(b.data, "web-1 at 0.5!");
  keel_buf_free(&b);
  keel_tmpl_free(t);
  /* the fixed lookup knows no '$' name: an error, as for any unknown name */
  {
    keel_buf_t o;
    keel_buf_init(&o, 1 << 10);
    assert_int_equal(keel_tmpl_expand("{{ $x }}", 8, KEEL_TMPL_RAW, kv_lookup, (void *)fixed, &o,
                                      &e),
                     KEEL_EINVAL);
    assert_string_equal(e.msg, "unknown name '$x'");
    keel_buf_free(&o);
  }
  expect_error("{{ $ }}", "column 5: name '$': expected a name after '$'");
  expect_error("{{ $.a }}", "column 5: name '$.a': expected a name after '$'");
  expect_error("{{ $$a }}", "column 5: name '$$a': invalid character '$'");
  expect_error("{{ $1 }}", "column 5: name '$1': a part must start with a letter or '_'");
  expect_error("{{ a.$b }}", "column 6: name 'a.$b': invalid character '$'");
  expect_error("{{ $a.$b }}", "column 7: name '$a.$b': invalid character '$'");
  expect_error("{{ $a.b.c.d.e.f.g.h.i }}",
               "column 21: name '$a.b.c.d.e.f.g.h.i': more than 8 parts");
}

/* ---- errors ------------------------------------------------------------- */

static void test_errors_columns(void **state) {
  expect_error("{{", "column 1: unterminated '{{'");
  expect_error("echo {{ params.x", "column 6: unterminated '{{'");
  expect_error("ok {{ a }} then {{ b }", "column 17: unterminated '{{'");
  expect_error("{{}}", "column 3: expected a name like params.x");
  expect_error("ab {{   }}", "column 9: expected a name like params.x");
  expect_error("{{ params.a$b }}", "column 12: name 'params.a$b': invalid character '$'");
  expect_error("{{ 1abc }}", "column 4: name '1abc': a part must start with a letter or '_'");
  expect_error("{{ params.-x }}",
               "column 11: name 'params.-x': a part must start with a letter or '_'");
  expect_error("{{ a..b }}", "column 6: name 'a..b': empty part");
  expect_error("{{ .a }}", "column 4: name '.a': empty part");
  expect_error("{{ a. }}", "column 6: name 'a.': empty part");
  expect_error("{{ a}b }}", "column 5: name 'a}b': invalid character '}'");
  expect_error("{{ a b }}", "column 6: expected '}}' after 'a'");
  expect_error("{{ a } }}", "column 6: expected '}}' after 'a'");
  expect_error("{{{ a }}", "column 3: name '{': invalid character '{'");
  expect_error("{{ a {{ b }}", "column 6: expected '}}' after 'a'");
  expect_error("{{ a|upper }}", "column 5: name 'a|upper': invalid character '|'");
  expect_error("{{ a + b }}", "column 6: expected '}}' after 'a'");
  expect_error("{{ \"a\" }}", "column 4: name '\"a\"': invalid character '\"'");
  expect_error("{{ 'x' }}", "column 4: only '{{' may be quoted inside '{{ }}'");
  expect_error("{{ '{{ }}", "column 4: only '{{' may be quoted inside '{{ }}'");
  expect_error("{{ '{{' x }}", "column 9: expected '}}' after the quoted '{{'");
  expect_error("{{ '}}' }}", "column 4: only '{{' may be quoted inside '{{ }}'");
}

static void test_errors_bytes(void **state) {
  expect_error_n("ab\0cd", 5, "column 3: NUL byte");
  expect_error_n("{{ a\0b }}", 9, "column 5: name 'a\\x00b': invalid byte 0x00");
  expect_error("{{ p\xc3\xa9 }}", "column 5: name 'p\\xc3\\xa9': invalid byte 0xc3");
  expect_error("{{ a\x01 }}", "column 5: name 'a\\x01': invalid byte 0x01");
  /* Quoted text in messages is bounded. */
  char text[400];
  memset(text, 0, sizeof text);
  memcpy(text, "{{ ", 3);
  memset(text + 3, '!', 300);
  memcpy(text + 303, " }}", 3);
  expect_error(
      text, "column 4: name '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!...': invalid character '!'");
}

static void test_limits(void **state) {
  keel_buf_t b;
  keel_tmpl_t *t;
  char name[200];

  /* Text: 64 KiB. */
  keel_buf_init(&b, 1 << 20);
  for (size_t i = 0; i < 65536; i++) assert_int_equal(keel_buf_append(&b, "x", 1), 0);
  t = parse_ok(b.data, b.len);
  keel_tmpl_free(t);
  assert_int_equal(keel_buf_append(&b, "x", 1), 0);
  expect_error_n(b.data, b.len, "column 65537: text longer than 65536 bytes");
  keel_buf_reset(&b);

  /* References: 256 (escapes do not count). */
  for (int i = 0; i < 256; i++) assert_int_equal(keel_buf_puts(&b, "{{a}}{{'{{'}}"), 0);
  t = parse_ok(b.data, b.len);
  assert_int_equal(keel_tmpl_nrefs(t), 256);
  keel_tmpl_free(t);
  assert_int_equal(keel_buf_puts(&b, "{{ b }}"), 0);
  expect_error_n(b.data, b.len, "column 3329: more than 256 references");
  keel_buf_free(&b);

  /* Names: 128 bytes. */
  memset(name, 0, sizeof name);
  memcpy(name, "{{ ", 3);
  memset(name + 3, 'n', 128);
  memcpy(name + 131, " }}", 3);
  t = parse_ok(name, strlen(name));
  assert_int_equal(strlen(keel_tmpl_ref(t, 0)), 128);
  keel_tmpl_free(t);
  memset(name, 0, sizeof name);
  memcpy(name, "{{ ", 3);
  memset(name + 3, 'n', 129);
  memcpy(name + 132, " }}", 3);
  expect_error(name, NULL);
  keel_err_t e = {0};
  assert_int_equal(keel_tmpl_parse(name, strlen(name), &t, &e), KEEL_EINVAL);
  assert_non_null(strstr(e.msg, "column 132: name 'nnnn"));
  assert_non_null(strstr(e.msg, "...': longer than 128 bytes"));

  /* Parts: 8. */
  t = parse_ok("{{ a.b.c.d.e.f.g.h }}", 21);
  keel_tmpl_free(t);
  expect_error("{{ a.b.c.d.e.f.g.h.i }}", "column 20: name 'a.b.c.d.e.f.g.h.i': more than 8 parts");
}

/* ---- rendering ---------------------------------------------------------- */

static void test_render_errors(void **state) {
  keel_buf_t b;
  keel_err_t e = {0};
  keel_tmpl_t *t = parse_ok("x {{ params.env }} {{ params.servce }}", 38);
  const kv_t nul[] = {{"v", "a\0b", 3}, {NULL, NULL, 0}};

  /* Unknown name: named; out keeps what it had, byte for byte. */
  keel_buf_init(&b, 1024);
  assert_int_equal(keel_buf_puts(&b, "keep"), 0);
  assert_int_equal(keel_tmpl_render(t, KEEL_TMPL_RAW, kv_lookup, (void *)fixed, &b, &e),
                   KEEL_EINVAL);
  assert_string_equal(e.msg, "unknown name 'params.servce'");
  assert_int_equal(b.len, 4);
  assert_string_equal(b.data, "keep");
  /* No lookup at all: every name is unknown. */
  assert_int_equal(keel_tmpl_render(t, KEEL_TMPL_SHELL, NULL, NULL, &b, &e), KEEL_EINVAL);
  assert_string_equal(e.msg, "unknown name 'params.env'");
  assert_string_equal(b.data, "keep");
  keel_tmpl_free(t);

  /* A NUL in a value. */
  assert_int_equal(keel_tmpl_expand("{{v}}", 5, KEEL_TMPL_RAW, kv_lookup, (void *)nul, &b, &e),
                   KEEL_EINVAL);
  assert_string_equal(e.msg, "the value of 'v' contains a NUL byte");
  assert_int_equal(keel_tmpl_expand("{{v}}", 5, KEEL_TMPL_SHELL, kv_lookup, (void *)nul, &b, &e),
                   KEEL_EINVAL);
  assert_string_equal(b.data, "keep");

  /* Over the cap: KEEL_ETOOBIG, out unchanged. */
  b.max = 10;
  assert_int_equal(keel_tmpl_expand("{{ target.hostname }}", 21, KEEL_TMPL_RAW, kv_lookup,
                                    (void *)fixed, &b, &e),
                   KEEL_ETOOBIG);
  assert_string_equal(e.msg, "rendered text longer than 10 bytes");
  assert_string_equal(b.data, "keep");
  assert_int_equal(keel_tmpl_expand("{{ params.env }}", 16, KEEL_TMPL_SHELL, kv_lookup,
                                    (void *)fixed, &b, &e),
                   0);
  assert_string_equal(b.data, "keep'prod'"); /* appends, exactly at the cap */

  /* Parse errors come through expand. */
  assert_int_equal(keel_tmpl_expand("{{", 2, KEEL_TMPL_RAW, kv_lookup, (void *)fixed, &b, &e),
                   KEEL_EINVAL);
  assert_string_equal(e.msg, "column 1: unterminated '{{'");
  assert_string_equal(b.data, "keep'prod'");
  keel_buf_free(&b);
}

static int failing_lookup(void *ud, const char *name, const char **value, size_t *len) {
  return KEEL_ENOMEM;
}

static void test_lookup_errors_pass_through(void **state) {
  keel_buf_t b;
  keel_err_t e = {0};
  keel_buf_init(&b, 1024);
  assert_int_equal(keel_tmpl_expand("{{ a }}", 7, KEEL_TMPL_RAW, failing_lookup, NULL, &b, &e),
                   KEEL_ENOMEM);
  assert_string_equal(e.msg, "looking up 'a': out of memory");
  assert_null(b.data);
  keel_buf_free(&b);
}

static void test_shell_quoting_exact(void **state) {
  static const struct {
    const char *value, *want;
  } cases[] = {
      {"", "''"},
      {"plain", "'plain'"},
      {"it's", "'it'\\''s'"},
      {"'", "''\\'''"},
      {"''", "''\\'''\\'''"},
      {"a b", "'a b'"},
      {"$(id)", "'$(id)'"},
      {"\\", "'\\'"},
      {"\n", "'\n'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const kv_t kv[] = {{"v", cases[i].value, 0}, {NULL, NULL, 0}};
    keel_buf_t b;
    keel_err_t e = {0};
    keel_buf_init(&b, 1024);
    assert_int_equal(keel_tmpl_expand("{{ v }}", 7, KEEL_TMPL_SHELL, kv_lookup, (void *)kv, &b, &e),
                     0);
    if (strcmp(b.data, cases[i].want))
      fail_msg("shell(\"%s\") = %s, want %s", cases[i].value, b.data, cases[i].want);
    keel_buf_reset(&b);
    assert_int_equal(keel_tmpl_expand("{{ v }}", 7, KEEL_TMPL_RAW, kv_lookup, (void *)kv, &b, &e),
                     0);
    assert_string_equal(b.data, cases[i].value);
    keel_buf_free(&b);
  }
}

/* Hostile values: each names the canary file that it would create if any
 * part of it ran as code. */
static const char *const hostile_fmt[] = {
    "; touch %s",
    "$(touch %s)",
    "`touch %s`",
    "x\ntouch %s",
    "x\ntouch %s\n",
    "'; touch %s; '",
    "'",
    "''",
    "\"; touch %s; \"",
    "\\'; touch %s; echo \\",
    "\\",
    "*",
    "* ?",
    "-n",
    "-e \\n",
    "--help",
    "a b\tc",
    "$HOME ${PATH} $0 $1",
    "|| touch %s",
    "&& touch %s &",
    "> %s",
    "<(touch %s)",
    "#",
    "~",
    "{a,b}",
    "!",
    "it's \"%s\" $'\\x41'",
    "\xff\xfe not utf-8",
    "",
};

static void test_shell_hostile_values_run(void **state) {
  char dir[] = "/tmp/keel-tmpl-XXXXXX";
  char canary[64], value[256], decoy[96];
  assert_non_null(mkdtemp(dir));
  snprintf(canary, sizeof canary, "%s/pwned", dir);
  /* A file for '*' to match, if it were ever expanded. */
  snprintf(decoy, sizeof decoy, "%s/decoy", dir);
  int fd = open(decoy, O_CREAT | O_WRONLY, 0600);
  assert_true(fd >= 0);
  close(fd);

  for (size_t i = 0; i < sizeof hostile_fmt / sizeof hostile_fmt[0]; i++) {
    const char *tmpl = "cd {{ dir }} && printf %s\\\\n {{ v }}";
    const char *tmpl2 = "cd {{ dir }} && printf '[%s]\\n' {{ v }} {{v}}{{ v }} {{ empty }}";
    kv_t kv[] = {{"dir", dir, 0}, {"v", value, 0}, {"empty", "", 0}, {NULL, NULL, 0}};
    keel_buf_t script, want;
    keel_err_t e = {0};
    int status;
    char *got;

    snprintf(value, sizeof value, hostile_fmt[i], canary, canary);

    /* One word, printed back exactly. */
    keel_buf_init(&script, 1 << 16);
    assert_int_equal(
        keel_tmpl_expand(tmpl, strlen(tmpl), KEEL_TMPL_SHELL, kv_lookup, kv, &script, &e), 0);
    {
      char *argv[] = {"/bin/sh", "-c", script.data, NULL};
      got = run(argv, &status);
    }
    keel_buf_init(&want, 1 << 16);
    assert_int_equal(keel_buf_printf(&want, "%s\n", value), 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strcmp(got, want.data))
      fail_msg("value #%zu \"%s\": script %s printed \"%s\" (status %d)", i, value, script.data,
               got, status);
    free(got);

    /* Next to other words, and adjacent to itself: still exactly the words
     * the template shows, the empty value included. */
    keel_buf_reset(&script);
    keel_buf_reset(&want);
    assert_int_equal(
        keel_tmpl_expand(tmpl2, strlen(tmpl2), KEEL_TMPL_SHELL, kv_lookup, kv, &script, &e), 0);
    {
      char *argv[] = {"/bin/sh", "-c", script.data, NULL};
      got = run(argv, &status);
    }
    assert_int_equal(keel_buf_printf(&want, "[%s]\n[%s%s]\n[]\n", value, value, value), 0);
    if (strcmp(got, want.data))
      fail_msg("value #%zu \"%s\": script %s printed \"%s\"", i, value, script.data, got);
    free(got);
    keel_buf_free(&script);
    keel_buf_free(&want);

    if (access(canary, F_OK) == 0) fail_msg("value #%zu \"%s\" ran code", i, value);
  }
  unlink(decoy);
  assert_int_equal(rmdir(dir), 0); /* nothing else was created */
}

/* RAW: an argv built by rendering each element on its own keeps a hostile
 * value as exactly one element, and exec'ing it involves no shell. */
static void test_raw_argv_elements(void **state) {
  char dir[] = "/tmp/keel-tmpl-XXXXXX";
  char canary[64], value[256];
  assert_non_null(mkdtemp(dir));
  snprintf(canary, sizeof canary, "%s/pwned", dir);

  for (size_t i = 0; i < sizeof hostile_fmt / sizeof hostile_fmt[0]; i++) {
    static const char *const elems[] = {"/usr/bin/printf", "[%s]\\n", "{{ v }}", "--opt={{ v }}",
                                        "{{ empty }}", "{{ v }}{{ v }}"};
    enum { N = sizeof elems / sizeof elems[0] };
    kv_t kv[] = {{"v", value, 0}, {"empty", "", 0}, {NULL, NULL, 0}};
    char *argv[N + 1];
    keel_buf_t want;
    keel_err_t e = {0};
    int status;
    char *got;

    snprintf(value, sizeof value, hostile_fmt[i], canary, canary);

    for (size_t k = 0; k < N; k++) {
      keel_buf_t b;
      keel_buf_init(&b, 4096);
      assert_int_equal(
          keel_tmpl_expand(elems[k], strlen(elems[k]), KEEL_TMPL_RAW, kv_lookup, kv, &b, &e), 0);
      argv[k] = b.data ? keel_buf_steal(&b) : strdup("");
    }
    argv[N] = NULL;
    /* Exactly one element per template, each exactly its text. */
    assert_string_equal(argv[2], value);
    assert_int_equal(strncmp(argv[3], "--opt=", 6), 0);
    assert_string_equal(argv[3] + 6, value);
    assert_string_equal(argv[4], "");
    assert_int_equal(strlen(argv[5]), 2 * strlen(value));

    if (access(argv[0], X_OK) == 0) {
      got = run(argv, &status);
      keel_buf_init(&want, 1 << 16);
      assert_int_equal(
          keel_buf_printf(&want, "[%s]\n[--opt=%s]\n[]\n[%s%s]\n", value, value, value, value), 0);
      if (strcmp(got, want.data)) fail_msg("value #%zu \"%s\": printed \"%s\"", i, value, got);
      keel_buf_free(&want);
      free(got);
    }
    for (size_t k = 0; k < N; k++) free(argv[k]);
    if (access(canary, F_OK) == 0) fail_msg("value #%zu \"%s\" ran code", i, value);
  }
  assert_int_equal(rmdir(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_literal_only),
      cmocka_unit_test(test_references),
      cmocka_unit_test(test_escape),
      cmocka_unit_test(test_refs_listing),
      cmocka_unit_test(test_not_nul_terminated),
      cmocka_unit_test(test_dollar_names),
      cmocka_unit_test(test_errors_columns),
      cmocka_unit_test(test_errors_bytes),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_render_errors),
      cmocka_unit_test(test_lookup_errors_pass_through),
      cmocka_unit_test(test_shell_quoting_exact),
      cmocka_unit_test(test_shell_hostile_values_run),
      cmocka_unit_test(test_raw_argv_elements),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
