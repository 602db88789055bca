/* output.c — human tables and JSON. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "keel/grow.h"

char *out_safe(char *s) {
  unsigned char *p = (unsigned char *)s;
  for (; *p; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      *p = '?';
    } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
      /* U+0080..U+009F: C1 controls (0x9b is CSI on some terminals). */
      p[0] = p[1] = '?';
      p++;
    }
  }
  return s;
}

/* Terminal columns, counting a UTF-8 sequence as one (wide CJK is rare in
 * these fields and not worth a locale dependency). */
static size_t width(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xc0) != 0x80) n++;
  return n;
}

void out_table_init(out_table_t *t, size_t ncols, const char *const *heads) {
  t->ncols = ncols;
  t->heads = heads;
  t->cells = NULL;
  t->nrows = t->cap = 0;
}

int out_table_add(out_table_t *t, const char *const *cells) {
  size_t base = t->nrows * t->ncols;

  char **p = keel_grow(t->cells, &t->cap, t->nrows, t->ncols * sizeof *p, 32);
  if (!p) return cli_fail("out of memory");
  t->cells = p;
  for (size_t i = 0; i < t->ncols; i++) {
    const char *s = cells[i] && cells[i][0] ? cells[i] : "-";
    t->cells[base + i] = strdup(s);
    if (!t->cells[base + i]) {
      while (i-- > 0) free(t->cells[base + i]);
      return cli_fail("out of memory");
    }
    out_safe(t->cells[base + i]);
  }
  t->nrows++;
  return 0;
}

static void print_row(const out_table_t *t, const char *const *row, const size_t *w, FILE *f) {
  for (size_t i = 0; i < t->ncols; i++) {
    fputs(row[i], f);
    if (i + 1 < t->ncols) fprintf(f, "%*s", (int)(w[i] - width(row[i]) + 2), "");
  }
  fputc('\n', f);
}

void out_table_print(const out_table_t *t, FILE *f) {
  size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof *w);

  if (!w) {
    cli_fail("out of memory");
    return;
  }
  for (size_t i = 0; i < t->ncols; i++) {
    if (t->heads) w[i] = width(t->heads[i]);
    for (size_t r = 0; r < t->nrows; r++) {
      size_t n = width(t->cells[r * t->ncols + i]);
      if (n > w[i]) w[i] = n;
    }
  }
  if (t->heads) print_row(t, t->heads, w, f);
  for (size_t r = 0; r < t->nrows; r++)
    print_row(t, (const char *const *)&t->cells[r * t->ncols], w, f);
  free(w);
}

void out_table_free(out_table_t *t) {
  for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
  free(t->cells);
  t->cells = NULL;
  t->nrows = t->cap = 0;
}

const char *out_field(const json_t *obj, const char *key, char *tmp, size_t tmpsz) {
  const json_t *v = json_object_get(obj, key);

  if (json_is_string(v)) return json_string_value(v);
  if (json_is_integer(v)) {
    snprintf(tmp, tmpsz, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return tmp;
  }
  if (json_is_real(v)) {
    snprintf(tmp, tmpsz, "%g", json_real_value(v));
    return tmp;
  }
  if (json_is_boolean(v)) return json_is_true(v) ? "true" : "false";
  return NULL;
}

int out_kv(const json_t *obj, const char *const *keys, FILE *f) {
  out_table_t t;
  int rc = 0;

  out_table_init(&t, 2, NULL);
  for (; *keys; keys++) {
    char tmp[32];
    const char *row[2] = {*keys, out_field(obj, *keys, tmp, sizeof tmp)};
    if ((rc = out_table_add(&t, row))) goto out;
  }
  out_table_print(&t, f);
out:
  out_table_free(&t);
  return rc;
}

void out_json(const json_t *v, FILE *f) {
  json_dumpf(v, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
  fputc('\n', f);
}

void out_json_line(const json_t *v, FILE *f) {
  json_dumpf(v, f, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
  fputc('\n', f);
}
