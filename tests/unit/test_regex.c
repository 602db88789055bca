/* test_regex.c — the cost guard in front of regcomp (keel/regex.h): what
 * it lets through compiles quickly, what it refuses says why. */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keel/regex.h"

static int ok(const char *p) {
  const char *why = NULL;
  return keel_regex_cost_ok(p, strlen(p), &why);
}

static const char *refused(const char *p) {
  const char *why = NULL;
  return keel_regex_cost_ok(p, strlen(p), &why) ? NULL : why;
}

static void test_everyday_patterns(void **st) {
  (void)st;
  const char *const good[] = {"^[a-z0-9@._-]+$", "node_.*", "a|b|c", "(ab){2,3}", ".*?",
                              "x+?", "a{2}?", "[[:alpha:]]*", "\\.", "(a*)*", NULL};
  for (int i = 0; good[i]; i++) {
    regex_t r;
    assert_true(ok(good[i]));
    assert_int_equal(regcomp(&r, good[i], REG_EXTENDED | REG_NOSUB), 0);
    regfree(&r);
  }
}

static void test_refusals_name_why(void **st) {
  (void)st;
  assert_string_equal(refused("(a)\\1"), "back-references are not supported");
  assert_string_equal(refused("a{1001}"), "repetition count over 1000");
  assert_string_equal(refused("((a{255}){255}){255}"),
                      "over 1000 atoms once repetitions are expanded");
  assert_string_equal(refused("a***"), "more than two repetition operators in a row");
  assert_string_equal(refused("a*+?"), "more than two repetition operators in a row");
  assert_string_equal(refused("a{2}{3}*"), "more than two repetition operators in a row");
}

/* The fuzzer's find: a runbook parameter pattern with 120 stacked stars
 * kept regcomp busy for minutes.  Refused now, and what two stacked
 * operators cost stays small. */
static void test_stacked_operators(void **st) {
  char p[256] = "^[a-z0-9@._-]";
  size_t n = strlen(p);
  regex_t r;
  (void)st;
  for (int i = 0; i < 120; i++) p[n++] = '*';
  p[n++] = '+';
  p[n++] = '$';
  p[n] = '\0';
  assert_non_null(refused(p));
  assert_true(ok("^[a-z0-9@._-]**$"));
  assert_int_equal(regcomp(&r, "^[a-z0-9@._-]**$", REG_EXTENDED | REG_NOSUB), 0);
  regfree(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_everyday_patterns),
      cmocka_unit_test(test_refusals_name_why),
      cmocka_unit_test(test_stacked_operators),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
