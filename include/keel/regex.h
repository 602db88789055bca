/* keel/regex.h — POSIX extended regular expressions from untrusted text
 * (runbook documents, PromQL matchers) MUST pass this before regcomp.
 *
 * It refuses what would make glibc's regcomp or regexec expensive:
 * back-references (exponential matching), and repetition counts that
 * multiply (glibc copies the repeated subexpression once per count, and X+
 * once, so "((a{255}){255}){255}" is millions of nodes and its epsilon
 * closures grow with the square of that).  The cost is a rough size of the
 * expanded expression; regcomp still judges the syntax.
 */
#ifndef KEEL_REGEX_H
#define KEEL_REGEX_H

#include <stddef.h>

#define KEEL_REGEX_COST_MAX 1000 /* atoms once repetitions are expanded (~8 MB of automaton) */

/* 1 when p[0..n) is cheap enough; 0 with *why (a static string) otherwise. */
int keel_regex_cost_ok(const char *p, size_t n, const char **why);

#endif
