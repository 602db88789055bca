/* Unit tests for metrics/postings.c on the head's and a block's label
 * index: list intersection, subtraction and union against brute force;
 * every matcher type (=, !=, =~, !~), including matchers that match the
 * empty string and so select series lacking the label; regexes fully
 * anchored; costly or malformed regexes refused. */
#include "keeld_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "metrics/block.h"
#include "metrics/head.h"
#include "metrics/postings.h"

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void rand_list(k_plist_t *l, uint32_t range, size_t n) {
  l->n = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t x = (uint32_t)(rnd() % range);
    size_t k = 0;
    while (k < l->n && l->v[k] < x) k++;
    if (k < l->n && l->v[k] == x) continue;
    assert_int_equal(k_plist_reserve(l, l->n + 1), 0);
    memmove(l->v + k + 1, l->v + k, (l->n - k) * sizeof *l->v);
    l->v[k] = x;
    l->n++;
  }
}

static int has(const k_plist_t *l, uint32_t x) {
  for (size_t i = 0; i < l->n; i++)
    if (l->v[i] == x) return 1;
  return 0;
}

static void test_list_ops(void **state) {
  (void)state;
  for (int round = 0; round < 300; round++) {
    k_plist_t a = {0}, b = {0}, c = {0}, out = {0};
    uint32_t range = round % 3 == 0 ? 100000 : 300;
    rand_list(&a, range, rnd() % 200);
    rand_list(&b, range, rnd() % (round % 2 ? 5 : 300));
    rand_list(&c, range, rnd() % 50);
    assert_int_equal(k_plist_intersect(a.v, a.n, b.v, b.n, &out), 0);
    for (uint32_t x = 0; x < 300; x++) assert_int_equal(has(&out, x), has(&a, x) && has(&b, x));
    for (size_t i = 1; i < out.n; i++) assert_true(out.v[i - 1] < out.v[i]);
    assert_int_equal(k_plist_subtract(a.v, a.n, b.v, b.n, &out), 0);
    for (size_t i = 0; i < a.n; i++) assert_int_equal(has(&out, a.v[i]), !has(&b, a.v[i]));
    {
      size_t common = 0;
      for (size_t i = 0; i < a.n; i++) common += (size_t)has(&b, a.v[i]);
      assert_int_equal(out.n, a.n - common);
    }
    {
      const uint32_t *lists[3] = {a.v, b.v, c.v};
      size_t ns[3] = {a.n, b.n, c.n};
      assert_int_equal(k_plist_union(lists, ns, 3, &out), 0);
      for (size_t i = 1; i < out.n; i++) assert_true(out.v[i - 1] < out.v[i]);
      for (size_t i = 0; i < out.n; i++)
        assert_true(has(&a, out.v[i]) || has(&b, out.v[i]) || has(&c, out.v[i]));
      for (size_t i = 0; i < a.n; i++) assert_true(has(&out, a.v[i]));
      for (size_t i = 0; i < b.n; i++) assert_true(has(&out, b.v[i]));
      for (size_t i = 0; i < c.n; i++) assert_true(has(&out, c.v[i]));
    }
    k_plist_free(&a);
    k_plist_free(&b);
    k_plist_free(&c);
    k_plist_free(&out);
  }
}

/* ---- the fixture: one label universe in a head and in a block ----------------------------- */

#define NSER 400

typedef struct fx {
  char dir[256];
  k_head_t *h;
  k_block_t *b;
  k_label_t lab[NSER][6];
  size_t nlab[NSER];
  char *strs[NSER][6][2];
  uint32_t head_id[NSER];
} fx_t;

static const char *names_pool[] = {"__name__", "cpu", "instance", "job", "mode", "zone"};
static const char *values_pool[] = {"up", "a", "b", "h1", "h2", "idle", "user", "x y", "é", "a|b", "0"};

static int lab_cmp(const void *x, const void *y) {
  return strcmp(((const k_label_t *)x)->name, ((const k_label_t *)y)->name);
}

static int fx_setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  keel_err_t e = {0};
  if (!f || kt_mkdtemp(f->dir, sizeof f->dir)) return -1;
  if (k_head_new(f->dir, 7200000, NULL, &f->h, &e)) return -1;
  /* distinct random label sets; __name__ always present */
  for (size_t i = 0; i < NSER; i++) {
    k_hseries_t *s;
    int created, tries = 0;
  again:
    f->nlab[i] = 1;
    f->lab[i][0].name = "__name__";
    f->lab[i][0].value = values_pool[rnd() % 3 == 0 ? 0 : rnd() % 3];
    for (size_t k = 1; k < 6; k++)
      if (rnd() % 3) {
        f->lab[i][f->nlab[i]].name = names_pool[k];
        f->lab[i][f->nlab[i]].value = values_pool[rnd() % (sizeof values_pool / sizeof *values_pool)];
        f->nlab[i]++;
      }
    if (!strcmp(f->lab[i][0].value, "up") && rnd() % 2) f->lab[i][0].value = "cpu_seconds_total";
    qsort(f->lab[i], f->nlab[i], sizeof f->lab[i][0], lab_cmp);
    if (k_head_get_or_create(f->h, f->lab[i], f->nlab[i], 0, &s, &created, &e)) return -1;
    if (!created) {
      if (++tries > 1000) return -1;
      goto again;
    }
    f->head_id[i] = s->id;
  }
  *state = f;
  return 0;
}

static int fx_teardown(void **state) {
  fx_t *f = *state;
  if (f->b) k_block_unref(f->b);
  k_head_free(f->h);
  kt_rmrf(f->dir);
  free(f);
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *value_of(const k_label_t *l, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(l[i].name, name)) return l[i].value;
  return "";
}

/* Index i of the fixture series with these labels. */
static size_t find_series(fx_t *f, const k_label_t *l, size_t n) {
  for (size_t i = 0; i < NSER; i++) {
    if (f->nlab[i] != n) continue;
    size_t k = 0;
    while (k < n && !strcmp(f->lab[i][k].name, l[k].name) && !strcmp(f->lab[i][k].value, l[k].value))
      k++;
    if (k == n) return i;
  }
  fail_msg("series not in the fixture");
  return 0;
}

/* Writes the fixture as a block (samples: one each). */
static void make_block(fx_t *f) {
  const char *syms[64];
  size_t nsym = 0;
  size_t order[NSER];
  k_bwriter_t *w;
  keel_err_t e = {0};
  char blocks[300], path[4096];
  for (size_t i = 0; i < NSER; i++)
    for (size_t k = 0; k < f->nlab[i]; k++) {
      const char *c[2] = {f->lab[i][k].name, f->lab[i][k].value};
      for (int z = 0; z < 2; z++) {
        size_t j = 0;
        while (j < nsym && strcmp(syms[j], c[z])) j++;
        if (j == nsym) syms[nsym++] = c[z];
      }
    }
  qsort(syms, nsym, sizeof *syms, cmp_str);
  for (size_t i = 0; i < NSER; i++) order[i] = i;
  /* label order: insertion sort by label sequence */
  for (size_t i = 1; i < NSER; i++) {
    size_t x = order[i], j = i;
    while (j > 0) {
      size_t y = order[j - 1], n = f->nlab[x] < f->nlab[y] ? f->nlab[x] : f->nlab[y];
      int c = 0;
      for (size_t k = 0; k < n && !c; k++) {
        c = strcmp(f->lab[x][k].name, f->lab[y][k].name);
        if (!c) c = strcmp(f->lab[x][k].value, f->lab[y][k].value);
      }
      if (!c) c = f->nlab[x] < f->nlab[y] ? -1 : 1;
      if (c > 0) break;
      order[j] = y;
      j--;
    }
    order[j] = x;
  }
  snprintf(blocks, sizeof blocks, "%s/blocks", f->dir);
  mkdir(blocks, 0700);
  assert_int_equal(k_bw_open(blocks, 0, 1000, 1, syms, nsym, NULL, &w, &e), 0);
  for (size_t o = 0; o < NSER; o++) {
    size_t i = order[o];
    uint32_t ids[12];
    int64_t t = 5;
    double v = (double)i;
    for (size_t k = 0; k < f->nlab[i]; k++) {
      const char **p = bsearch(&f->lab[i][k].name, syms, nsym, sizeof *syms, cmp_str);
      const char **q = bsearch(&f->lab[i][k].value, syms, nsym, sizeof *syms, cmp_str);
      ids[2 * k] = (uint32_t)(p - syms);
      ids[2 * k + 1] = (uint32_t)(q - syms);
    }
    if (k_bw_add(w, ids, f->nlab[i], &t, &v, 1, &e)) fail_msg("bw_add: %s", e.msg);
  }
  if (k_bw_finish(w, path, sizeof path, &e)) fail_msg("finish: %s", e.msg);
  if (k_block_open(path, NULL, &f->b, &e)) fail_msg("open: %s", e.msg);
}

/* Brute force vs index, on the head and on the block. */
static void check_matchers(fx_t *f, const k_matcher_t *m, size_t nm) {
  k_cmatchers_t cm = {0};
  k_plist_t ids = {0};
  keel_err_t e = {0};
  int want[NSER], got_h[NSER] = {0}, got_b[NSER] = {0};
  if (k_matchers_compile(m, nm, &cm, &e)) fail_msg("compile: %s", e.msg);
  for (size_t i = 0; i < NSER; i++) {
    want[i] = 1;
    for (size_t k = 0; k < nm; k++)
      if (!k_cmatcher_match(&cm.m[k], value_of(f->lab[i], f->nlab[i], m[k].name))) want[i] = 0;
  }
  assert_int_equal(k_select_ids(k_head_lindex(), f->h, &cm, &ids), 0);
  for (size_t j = 0; j < ids.n; j++) {
    if (j) assert_true(ids.v[j - 1] < ids.v[j]);
    for (size_t i = 0; i < NSER; i++)
      if (f->head_id[i] == ids.v[j]) got_h[i] = 1;
  }
  assert_int_equal(k_select_ids(k_block_lindex(), f->b, &cm, &ids), 0);
  for (size_t j = 0; j < ids.n; j++) {
    k_label_t l[8];
    size_t n;
    assert_int_equal(k_block_labels(f->b, ids.v[j], l, 8, &n), 0);
    got_b[find_series(f, l, n)] = 1;
  }
  for (size_t i = 0; i < NSER; i++) {
    if (got_h[i] != want[i] || got_b[i] != want[i]) {
      char desc[512] = "";
      for (size_t k = 0; k < nm; k++) {
        static const char *op[] = {"=", "!=", "=~", "!~"};
        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s%s\"%s\" ", m[k].name,
                 op[m[k].type], m[k].value);
      }
      fail_msg("%s: series %zu want %d head %d block %d", desc, i, want[i], got_h[i], got_b[i]);
    }
  }
  k_plist_free(&ids);
  k_matchers_free(&cm);
}

static void test_matchers_fixed(void **state) {
  fx_t *f = *state;
  make_block(f);
  /* each type, including empty-matching forms */
  k_matcher_t cases[][2] = {
      {{K_MATCH_EQ, "__name__", "up"}, {K_MATCH_EQ, "job", "a"}},
      {{K_MATCH_EQ, "__name__", "up"}, {K_MATCH_EQ, "job", ""}},   /* lacking job */
      {{K_MATCH_EQ, "__name__", "up"}, {K_MATCH_NE, "job", "a"}},  /* includes lacking */
      {{K_MATCH_EQ, "__name__", "up"}, {K_MATCH_NE, "job", ""}},   /* has a job */
      {{K_MATCH_RE, "job", "a|b"}, {K_MATCH_NE, "mode", "idle"}},
      {{K_MATCH_RE, "job", "a|"}, {K_MATCH_EQ, "__name__", "a"}},  /* "" in the set */
      {{K_MATCH_NRE, "job", "a|b"}, {K_MATCH_EQ, "__name__", "b"}},
      {{K_MATCH_NRE, "job", "a|"}, {K_MATCH_EQ, "__name__", "b"}},
      {{K_MATCH_RE, "instance", "h.*"}, {K_MATCH_RE, "mode", "i.+"}},
      {{K_MATCH_RE, "instance", ".*"}, {K_MATCH_EQ, "__name__", "up"}},
      {{K_MATCH_RE, "instance", ".+"}, {K_MATCH_EQ, "__name__", "up"}},
      {{K_MATCH_NRE, "instance", ".*"}, {K_MATCH_EQ, "__name__", "up"}},
      {{K_MATCH_NRE, "instance", ".+"}, {K_MATCH_EQ, "__name__", "up"}},
      {{K_MATCH_RE, "zone", "[0-9]*"}, {K_MATCH_RE, "__name__", "(up|a)"}}, /* matches "" */
      {{K_MATCH_RE, "job", "a"}, {K_MATCH_RE, "instance", "h"}}, /* anchored: not "h1" */
      {{K_MATCH_RE, "job", "x y|é"}, {K_MATCH_NRE, "cpu", "[ab]"}},
      {{K_MATCH_RE, "job", "a\\|b"}, {K_MATCH_RE, "__name__", ".*"}}, /* escaped bar */
      {{K_MATCH_EQ, "nope", ""}, {K_MATCH_EQ, "__name__", "up"}},
      {{K_MATCH_EQ, "nope", "x"}, {K_MATCH_EQ, "__name__", "up"}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    check_matchers(f, cases[i], 2);
    check_matchers(f, cases[i], 1);
    check_matchers(f, cases[i] + 1, 1);
  }
  check_matchers(f, NULL, 0);
}

static void test_matchers_random(void **state) {
  fx_t *f = *state;
  static const char *vals[] = {"",     "a",   "b",    "h1",  "idle", "a|b", ".*",  ".+",
                               "h.*",  "x y", "é",    "[ab]", "up",  "(a|h1)", "i.*e", "0|"};
  static const char *names[] = {"__name__", "cpu", "instance", "job", "mode", "zone", "absent"};
  if (!f->b) make_block(f);
  for (int round = 0; round < 3000; round++) {
    k_matcher_t m[3];
    size_t nm = 1 + rnd() % 3;
    for (size_t k = 0; k < nm; k++) {
      m[k].type = (k_match_type_t)(rnd() % 4);
      m[k].name = names[rnd() % (sizeof names / sizeof *names)];
      m[k].value = vals[rnd() % (sizeof vals / sizeof *vals)];
    }
    check_matchers(f, m, nm);
  }
}

static void test_matcher_refusals(void **state) {
  (void)state;
  k_cmatchers_t cm = {0};
  keel_err_t e = {0};
  k_matcher_t bad[] = {
      {K_MATCH_RE, "a", "(x"},              /* does not compile */
      {K_MATCH_RE, "a", "(a)\\1"},          /* back-reference */
      {K_MATCH_RE, "a", "((a{100}){100})"}, /* expands past 1000 atoms */
      {K_MATCH_EQ, "1a", "x"},              /* bad label name */
      {K_MATCH_EQ, "", "x"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    e.msg[0] = 0;
    assert_int_equal(k_matchers_compile(&bad[i], 1, &cm, &e), KEEL_EINVAL);
    assert_true(e.msg[0] != 0);
  }
  /* a literal with regex-looking but harmless characters compiles */
  k_matcher_t ok = {K_MATCH_RE, "a", "x-y_z:1/2"};
  assert_int_equal(k_matchers_compile(&ok, 1, &cm, &e), 0);
  assert_true(k_cmatcher_match(&cm.m[0], "x-y_z:1/2"));
  assert_false(k_cmatcher_match(&cm.m[0], "x-y_z:1/23"));
  k_matchers_free(&cm);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_list_ops),
      cmocka_unit_test_setup_teardown(test_matchers_fixed, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_matchers_random, fx_setup, fx_teardown),
      cmocka_unit_test(test_matcher_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
