/* policy/policy.c — compiles statements into an index and decides requests.
 *
 * The compiled form is built for the decide path (bench/policy: ≥ 1M
 * decisions/s on one core with 5,000 statements):
 *
 * - Every principal key ("team:x", "user:y", ...) and every application
 *   name that a resource glob names literally ("app/NAME/...") is interned
 *   to a small integer.  Statements sit in buckets keyed by (principal,
 *   application), or (principal, GENERIC) when the glob does not start with
 *   a literal "app/NAME".  A request looks up its few principal keys and its
 *   application once and then reads only the buckets that can match: a
 *   user in 3 teams scans tens of statements, not thousands.
 * - Each bucket keeps three lists (deny, guardrail, allow) of statement
 *   indices in ascending order, so "the first statement in order decides"
 *   is the smallest matching index across buckets, and each scan stops at
 *   the best index found so far.  k_policy_decide_linear, which scans all
 *   statements, must give the same answer; the unit test checks that.
 * - Resource globs are pre-split into segments (literal, '*', '**', glob
 *   within a segment); action globs into area and verb with exact / any
 *   fast paths.  The request path is split once, in place (pointers and
 *   lengths, no copy).  Conditions run only after action and resource match.
 * - Nothing on the decide path allocates (except paths of more than
 *   K_POL_MAX_SEGS segments) or formats with printf.
 */
#define _GNU_SOURCE /* memmem */
#include "policy/policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/time.h"

#define K_POL_MAX_SEGS 32
#define K_POL_MAX_BUCKETS 64
#define MAX_ITEMS 1024 /* principals, actions, resources per statement */

enum { C_DENY, C_GUARD, C_ALLOW, C_N };
enum { PR_ALL, PR_TEAM, PR_USER, PR_ROLE, PR_PARTNER, PR_APP, PR_ID }; /* intern namespaces */
enum { M_ANY, M_EXACT, M_GLOB, M_DSTAR };                              /* part / segment kinds */

#define GENERIC 0xffffffffu
#define NO_ID 0xffffffffu

/* ---- arena: everything immutable after compile lives here ------------- */

typedef struct chunk {
  struct chunk *next;
  size_t cap, used;
  unsigned char data[];
} chunk_t;

typedef struct arena {
  chunk_t *head;
  size_t bytes;
} arena_t;

static void *arena_alloc(arena_t *a, size_t n) {
  void *p;
  n = (n + 7) & ~(size_t)7;
  if (!a->head || a->head->cap - a->head->used < n) {
    size_t cap = n > 65536 ? n : 65536;
    chunk_t *c = malloc(sizeof *c + cap);
    if (!c) return NULL;
    c->next = a->head;
    c->cap = cap;
    c->used = 0;
    a->head = c;
    a->bytes += sizeof *c + cap;
  }
  p = a->head->data + a->head->used;
  a->head->used += n;
  return p;
}

static char *arena_strndup(arena_t *a, const char *s, size_t n) {
  char *d = arena_alloc(a, n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

static void arena_free(arena_t *a) {
  chunk_t *c = a->head, *n;
  for (; c; c = n) {
    n = c->next;
    free(c);
  }
  a->head = NULL;
}

/* ---- string interning: (namespace, name) -> small integer ------------- */

typedef struct sent {
  uint64_t h;
  const char *s; /* arena */
  uint32_t len, id;
  uint32_t kind; /* 0 = empty slot; PR_* + 1 otherwise */
} sent_t;

typedef struct stab {
  sent_t *e;
  size_t cap, n; /* cap a power of two, n <= cap / 2 */
} stab_t;

/* FNV-1a over the namespace byte then the name; returns the length too, so
 * the decide path never calls strlen separately. */
static inline uint64_t shash(uint32_t kind, const char *s, uint32_t *len) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char *p = (const unsigned char *)s;
  h = (h ^ kind) * 1099511628211ull;
  while (*p) h = (h ^ *p++) * 1099511628211ull;
  *len = (uint32_t)(p - (const unsigned char *)s);
  return h ^ (h >> 29);
}

static inline uint64_t shash_n(uint32_t kind, const char *s, uint32_t len) {
  uint64_t h = 1469598103934665603ull;
  h = (h ^ kind) * 1099511628211ull;
  for (uint32_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static uint32_t stab_find_h(const stab_t *t, uint32_t kind, uint64_t h, const char *s,
                            uint32_t len) {
  size_t m, i;
  if (!t->cap) return NO_ID;
  m = t->cap - 1;
  for (i = h & m;; i = (i + 1) & m) {
    const sent_t *x = &t->e[i];
    if (!x->kind) return NO_ID;
    if (x->h == h && x->kind == kind + 1 && x->len == len && !memcmp(x->s, s, len)) return x->id;
  }
}

static uint32_t stab_find(const stab_t *t, uint32_t kind, const char *s) {
  uint32_t len;
  uint64_t h = shash(kind, s, &len);
  return stab_find_h(t, kind, h, s, len);
}

static int stab_grow(stab_t *t) {
  size_t ncap = t->cap ? t->cap * 2 : 256, i;
  sent_t *ne = calloc(ncap, sizeof *ne);
  if (!ne) return KEEL_ENOMEM;
  for (i = 0; i < t->cap; i++) {
    size_t j;
    if (!t->e[i].kind) continue;
    for (j = t->e[i].h & (ncap - 1); ne[j].kind; j = (j + 1) & (ncap - 1)) {
    }
    ne[j] = t->e[i];
  }
  free(t->e);
  t->e = ne;
  t->cap = ncap;
  return 0;
}

/* Finds or adds; *id is the existing id, or `next` when added (*added = 1). */
static int stab_intern(stab_t *t, arena_t *a, uint32_t kind, const char *s, uint32_t len,
                       uint32_t next, uint32_t *id, int *added) {
  uint64_t h = shash_n(kind, s, len);
  size_t i;
  uint32_t got = stab_find_h(t, kind, h, s, len);
  *added = 0;
  if (got != NO_ID) {
    *id = got;
    return 0;
  }
  if ((t->n + 1) * 2 > t->cap && stab_grow(t)) return KEEL_ENOMEM;
  for (i = h & (t->cap - 1); t->e[i].kind; i = (i + 1) & (t->cap - 1)) {
  }
  if (!(t->e[i].s = arena_strndup(a, s, len))) return KEEL_ENOMEM;
  t->e[i].h = h;
  t->e[i].len = len;
  t->e[i].id = next;
  t->e[i].kind = kind + 1;
  t->n++;
  *id = next;
  *added = 1;
  return 0;
}

/* ---- compiled statements ------------------------------------------------ */

typedef struct part {
  const char *s; /* arena */
  uint32_t len;
  uint32_t kind; /* M_* */
} part_t;

typedef struct act {
  int any; /* "*" */
  part_t area, verb;
} act_t;

typedef struct rglob {
  part_t *segs;
  uint32_t nsegs;
} rglob_t;

typedef struct prin {
  uint32_t kind; /* PR_* */
  const char *name;
} prin_t;

typedef struct win {
  uint32_t days;      /* bit 0 = mon ... bit 6 = sun */
  int32_t start, end; /* minutes of the UTC day; end may be 1440 */
} win_t;

typedef struct cond {
  const char **tag_k, **tag_v;
  uint32_t ntags;
  const char **miss;
  uint32_t nmiss;
  int has_win, has_owin;
  win_t win, owin;
  int64_t max_age; /* 0 = none */
} cond_t;

typedef struct stmt {
  const char *id, *reason; /* reason NULL when none */
  uint32_t cls;
  uint32_t nact, nres, nprin;
  act_t *acts;
  rglob_t *res;
  prin_t *prins;
  const cond_t *cond; /* NULL: no condition besides expiry */
  int64_t expires;    /* INT64_MAX: never */
} stmt_t;

typedef struct bucket {
  uint32_t *list[C_N]; /* statement indices, ascending; malloc'd */
  uint32_t n[C_N], cap[C_N];
} bucket_t;

typedef struct bslot {
  uint64_t key; /* (pid << 32) | appid; UINT64_MAX = empty */
  uint32_t b;
} bslot_t;

struct k_policy {
  arena_t arena;
  stmt_t *stmts;
  size_t n;
  stab_t names; /* principals and applications */
  uint32_t npid, napp;
  bucket_t *buckets;
  size_t nbuckets, capbuckets;
  bslot_t *slots;
  size_t capslots;
};

/* ---- matchers (shared by the indexed and the linear evaluator) ---------- */

/* '*' matches any run of characters (the caller has already cut at ':' or '/'). */
static int glob_chars(const char *p, size_t pl, const char *s, size_t sl) {
  size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
  while (si < sl) {
    if (pi < pl && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (pi < pl && p[pi] == s[si]) {
      pi++;
      si++;
    } else if (star != (size_t)-1) {
      pi = star + 1;
      si = ++mark;
    } else {
      return 0;
    }
  }
  while (pi < pl && p[pi] == '*') pi++;
  return pi == pl;
}

static inline int part_match(const part_t *g, const char *s, uint32_t len) {
  switch (g->kind) {
  case M_ANY: return 1;
  case M_EXACT: return g->len == len && !memcmp(g->s, s, len);
  default: return glob_chars(g->s, g->len, s, len);
  }
}

typedef struct req {
  const k_pol_principal_t *who;
  const k_pol_resource_t *res;
  int64_t now;
  const char *action;
  uint32_t action_len;
  int one_colon; /* exactly one ':' — only then can an area:verb glob match */
  const char *area, *verb;
  uint32_t area_len, verb_len;
  const char *path;
  const char **seg;
  uint32_t *seglen;
  uint32_t nsegs;
  const char *seg_s[K_POL_MAX_SEGS];
  uint32_t seglen_s[K_POL_MAX_SEGS];
  void *heap; /* segment arrays for long paths */
} req_t;

static int act_match(const act_t *a, const req_t *r) {
  if (a->any) return 1;
  if (!r->one_colon) return 0;
  return part_match(&a->area, r->area, r->area_len) && part_match(&a->verb, r->verb, r->verb_len);
}

/* '**' is to segments what '*' is to characters, and every other segment
 * kind consumes exactly one segment, so the classic greedy match with one
 * backtrack point (the last '**') is exact. */
static int res_match(const rglob_t *g, const req_t *r) {
  uint32_t pi = 0, si = 0, star = UINT32_MAX, mark = 0, n = g->nsegs;
  while (si < r->nsegs) {
    if (pi < n && g->segs[pi].kind == M_DSTAR) {
      star = pi++;
      mark = si;
    } else if (pi < n && part_match(&g->segs[pi], r->seg[si], r->seglen[si])) {
      pi++;
      si++;
    } else if (star != UINT32_MAX) {
      pi = star + 1;
      si = ++mark;
    } else {
      return 0;
    }
  }
  while (pi < n && g->segs[pi].kind == M_DSTAR) pi++;
  return pi == n;
}

static int win_in(const win_t *w, int64_t now) {
  int64_t day = now / 86400000, ms;
  int wd, min;
  if (now % 86400000 < 0) day--; /* floor for times before 1970 */
  ms = now - day * 86400000;
  min = (int)(ms / 60000);
  wd = (int)(((day + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday; 0 = mon */
  if (w->start < w->end) return (w->days >> wd & 1) && min >= w->start && min < w->end;
  /* Over midnight: the part after midnight belongs to the previous day. */
  return ((w->days >> wd & 1) && min >= w->start) ||
         ((w->days >> ((wd + 6) % 7) & 1) && min < w->end);
}

static const char *tag_of(const json_t *tags, const char *k) {
  const json_t *v;
  if (!tags) return NULL;
  v = json_object_get(tags, k);
  return v ? json_string_value(v) : NULL;
}

static int cond_holds(const cond_t *c, const req_t *r) {
  const json_t *tags = r->res->tags && json_is_object(r->res->tags) ? r->res->tags : NULL;
  uint32_t i;
  for (i = 0; i < c->ntags; i++) {
    const char *v = tag_of(tags, c->tag_k[i]);
    if (!v || strcmp(v, c->tag_v[i])) return 0;
  }
  if (c->nmiss) {
    for (i = 0; i < c->nmiss; i++)
      if (!tag_of(tags, c->miss[i])) break;
    if (i == c->nmiss) return 0;
  }
  if (c->has_win && !win_in(&c->win, r->now)) return 0;
  if (c->has_owin && win_in(&c->owin, r->now)) return 0;
  if (c->max_age) {
    if (!r->who->token_created_ms) return 0;
    if (r->now - r->who->token_created_ms >= c->max_age) return 0;
  }
  return 1;
}

/* Everything but the principal, which the index (or the linear scan) checks. */
static int stmt_applies(const stmt_t *s, const req_t *r) {
  uint32_t i;
  if (r->now >= s->expires) return 0;
  for (i = 0; i < s->nact; i++)
    if (act_match(&s->acts[i], r)) break;
  if (i == s->nact) return 0;
  for (i = 0; i < s->nres; i++)
    if (res_match(&s->res[i], r)) break;
  if (i == s->nres) return 0;
  return !s->cond || cond_holds(s->cond, r);
}

static int in_list(const char *name, const char *const *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] && !strcmp(v[i], name)) return 1;
  return 0;
}

static int prin_match(const prin_t *p, const k_pol_principal_t *w) {
  switch (p->kind) {
  case PR_ALL: return 1;
  case PR_USER: return w->user && !strcmp(w->user, p->name);
  case PR_ROLE: return w->role && !strcmp(w->role, p->name);
  case PR_TEAM: return in_list(p->name, w->teams, w->nteams);
  case PR_PARTNER: return in_list(p->name, w->partner_of, w->npartner);
  }
  return 0;
}

/* ---- decisions ---------------------------------------------------------- */

/* Appends s to the reason, replacing control characters so the reason stays
 * one line whatever the request held. */
static size_t put(char *b, size_t n, const char *s) {
  for (; s && *s && n < sizeof((k_pol_decision_t *)0)->reason - 1; s++, n++)
    b[n] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
  b[n] = 0;
  return n;
}

static const char *const kind_name[C_N] = {"deny", "guardrail", "allow"};

static void decided(const stmt_t *s, k_pol_decision_t *o) {
  size_t n = 0;
  o->allow = s->cls == C_ALLOW;
  o->statement = s->id;
  o->kind = kind_name[s->cls];
  if (s->cls == C_ALLOW) {
    n = put(o->reason, n, "allowed by ");
    put(o->reason, n, s->id);
    return;
  }
  n = put(o->reason, n, s->cls == C_GUARD ? "denied by guardrail " : "denied by ");
  n = put(o->reason, n, s->id);
  if (s->reason) {
    n = put(o->reason, n, ": ");
    put(o->reason, n, s->reason);
  }
}

static void default_deny(const req_t *r, const char *why, k_pol_decision_t *o) {
  size_t n = 0;
  const k_pol_principal_t *w = r->who;
  o->allow = 0;
  o->statement = "default-deny";
  o->kind = "default";
  if (why) {
    put(o->reason, 0, why);
    return;
  }
  n = put(o->reason, n, "no statement allows ");
  n = put(o->reason, n, r->action);
  n = put(o->reason, n, " on ");
  n = put(o->reason, n, r->path);
  if (w->user && *w->user) {
    n = put(o->reason, n, " for user ");
    put(o->reason, n, w->user);
  } else if (w->role && *w->role) {
    n = put(o->reason, n, " for role ");
    put(o->reason, n, w->role);
  } else {
    put(o->reason, n, " for an anonymous caller");
  }
}

/* Splits action and path once.  KEEL_ENOMEM only for very long paths. */
static int req_init(req_t *r, const k_pol_principal_t *who, const char *action,
                    const k_pol_resource_t *res, int64_t now) {
  const char *p, *colon = NULL;
  uint32_t ncolon = 0, n, cap = K_POL_MAX_SEGS;
  r->who = who;
  r->res = res;
  r->now = now;
  r->heap = NULL;
  r->action = action ? action : "";
  r->path = res && res->path ? res->path : "";
  for (p = r->action; *p; p++)
    if (*p == ':') {
      ncolon++;
      colon = p;
    }
  r->action_len = (uint32_t)(p - r->action);
  r->one_colon = ncolon == 1;
  if (colon) {
    r->area = r->action;
    r->area_len = (uint32_t)(colon - r->action);
    r->verb = colon + 1;
    r->verb_len = r->action_len - r->area_len - 1;
  }
  r->seg = r->seg_s;
  r->seglen = r->seglen_s;
  n = 0;
  r->seg[0] = r->path;
  for (p = r->path;; p++) {
    if (*p != '/' && *p) continue;
    r->seglen[n] = (uint32_t)(p - r->seg[n]);
    n++;
    if (!*p) break;
    if (n == cap) {
      /* Rare: more segments than the stack arrays hold. */
      size_t total = 1;
      for (const char *q = p; *q; q++) total += *q == '/';
      total += n;
      void *h = malloc(total * (sizeof(char *) + sizeof(uint32_t)));
      if (!h) return KEEL_ENOMEM;
      memcpy(h, r->seg, n * sizeof(char *));
      memcpy((char *)h + total * sizeof(char *), r->seglen, n * sizeof(uint32_t));
      free(r->heap);
      r->heap = h;
      r->seg = h;
      r->seglen = (uint32_t *)((char *)h + total * sizeof(char *));
      cap = (uint32_t)total;
    }
    r->seg[n] = p + 1;
  }
  r->nsegs = n;
  return 0;
}

void k_policy_decide_linear(const k_policy_t *p, const k_pol_principal_t *who, const char *action,
                            const k_pol_resource_t *res, int64_t now_ms, k_pol_decision_t *out) {
  req_t r;
  int c;
  if (req_init(&r, who, action, res, now_ms)) {
    default_deny(&r, "denied: out of memory while evaluating the policy", out);
    goto out;
  }
  for (c = 0; c < C_N; c++) {
    for (size_t i = 0; i < p->n; i++) {
      const stmt_t *s = &p->stmts[i];
      uint32_t j;
      if (s->cls != (uint32_t)c) continue;
      for (j = 0; j < s->nprin; j++)
        if (prin_match(&s->prins[j], who)) break;
      if (j == s->nprin || !stmt_applies(s, &r)) continue;
      decided(s, out);
      goto out;
    }
  }
  default_deny(&r, NULL, out);
out:
  free(r.heap);
}

static const bucket_t *bucket_get(const k_policy_t *p, uint32_t pid, uint32_t app) {
  uint64_t key = (uint64_t)pid << 32 | app, m = p->capslots - 1;
  for (uint64_t i = (key * 0x9e3779b97f4a7c15ull) >> 20 & m;; i = (i + 1) & m) {
    if (p->slots[i].key == key) return &p->buckets[p->slots[i].b];
    if (p->slots[i].key == UINT64_MAX) return NULL;
  }
}

typedef struct blist {
  const bucket_t **b;
  size_t n;
} blist_t;

static void add_pid(const k_policy_t *p, blist_t *bl, uint32_t pid, uint32_t app) {
  const bucket_t *b;
  if (pid == NO_ID) return;
  if ((b = bucket_get(p, pid, GENERIC))) bl->b[bl->n++] = b;
  if (app != NO_ID && (b = bucket_get(p, pid, app))) bl->b[bl->n++] = b;
}

void k_policy_decide(const k_policy_t *p, const k_pol_principal_t *who, const char *action,
                     const k_pol_resource_t *res, int64_t now_ms, k_pol_decision_t *out) {
  req_t r;
  const bucket_t *bs[K_POL_MAX_BUCKETS];
  blist_t bl = {bs, 0};
  uint32_t app = NO_ID;
  size_t need, i;
  int c;

  if (req_init(&r, who, action, res, now_ms)) goto oom;
  need = 2 * (3 + who->nteams + who->npartner);
  if (need > K_POL_MAX_BUCKETS && !(bl.b = malloc(need * sizeof *bl.b))) goto oom;
  if (!p->capslots) goto deny;
  if (r.nsegs >= 2 && r.seglen[0] == 3 && !memcmp(r.seg[0], "app", 3))
    app = stab_find_h(&p->names, PR_APP, shash_n(PR_APP, r.seg[1], r.seglen[1]), r.seg[1],
                      r.seglen[1]);
  add_pid(p, &bl, 0, app); /* "*" */
  if (who->user && *who->user) add_pid(p, &bl, stab_find(&p->names, PR_USER, who->user), app);
  if (who->role && *who->role) add_pid(p, &bl, stab_find(&p->names, PR_ROLE, who->role), app);
  for (i = 0; i < who->nteams; i++)
    if (who->teams[i]) add_pid(p, &bl, stab_find(&p->names, PR_TEAM, who->teams[i]), app);
  for (i = 0; i < who->npartner; i++)
    if (who->partner_of[i])
      add_pid(p, &bl, stab_find(&p->names, PR_PARTNER, who->partner_of[i]), app);

  for (c = 0; c < C_N; c++) {
    uint32_t best = UINT32_MAX;
    for (i = 0; i < bl.n; i++) {
      const uint32_t *l = bl.b[i]->list[c];
      for (uint32_t j = 0, n = bl.b[i]->n[c]; j < n && l[j] < best; j++)
        if (stmt_applies(&p->stmts[l[j]], &r)) {
          best = l[j];
          break;
        }
    }
    if (best != UINT32_MAX) {
      decided(&p->stmts[best], out);
      goto out;
    }
  }
deny:
  default_deny(&r, NULL, out);
  goto out;
oom:
  default_deny(&r, "denied: out of memory while evaluating the policy", out);
out:
  if (bl.b != bs) free(bl.b);
  free(r.heap);
}

/* ---- compile ------------------------------------------------------------ */

static int bad(keel_err_t *e, const char *id, size_t idx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(keel_err_t *e, const char *id, size_t idx, const char *fmt, ...) {
  char m[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  if (id) return keel_err_set(e, KEEL_EINVAL, "statement \"%.64s\": %s", id, m);
  return keel_err_set(e, KEEL_EINVAL, "statements[%zu]: %s", idx, m);
}

static int id_char(char c, int first) {
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return 1;
  return !first && c && strchr("._:/@-", c);
}

static int name_ok(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == ':' || *s == '/' || *s == '*') return 0;
  return 1;
}

static int compile_part(arena_t *a, const char *s, size_t len, part_t *out) {
  out->len = (uint32_t)len;
  if (len == 1 && s[0] == '*')
    out->kind = M_ANY;
  else if (len == 2 && s[0] == '*' && s[1] == '*')
    out->kind = M_DSTAR;
  else if (memchr(s, '*', len))
    out->kind = M_GLOB;
  else
    out->kind = M_EXACT;
  return (out->s = arena_strndup(a, s, len)) ? 0 : KEEL_ENOMEM;
}

static int act_chars(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || strchr("_.*-", s[i])))
      return 0;
  return n > 0;
}

static int compile_action(arena_t *a, const char *id, size_t i, const char *s, act_t *out,
                          keel_err_t *e) {
  const char *colon = strchr(s, ':');
  size_t n = strlen(s);
  int rc = 0;
  memset(out, 0, sizeof *out);
  if (!strcmp(s, "*")) {
    out->any = 1;
    goto out;
  }
  if (!colon || strchr(colon + 1, ':') || !act_chars(s, (size_t)(colon - s)) ||
      !act_chars(colon + 1, n - (size_t)(colon - s) - 1)) {
    rc = bad(e, id, 0, "actions[%zu]: \"%.64s\" is not \"*\" or an area:verb glob of [a-z0-9_.-*]",
             i, s);
    goto out;
  }
  if ((rc = compile_part(a, s, (size_t)(colon - s), &out->area)) ||
      (rc = compile_part(a, colon + 1, n - (size_t)(colon - s) - 1, &out->verb)))
    goto out;
  /* "**" in an action is just '*' twice: match it as a glob. */
  if (out->area.kind == M_DSTAR) out->area.kind = M_GLOB;
  if (out->verb.kind == M_DSTAR) out->verb.kind = M_GLOB;
out:
  return rc;
}

static int compile_resource(arena_t *a, const char *id, size_t i, const char *s, rglob_t *out,
                            keel_err_t *e) {
  uint32_t n = 1, k = 0;
  const char *p, *q;
  int rc = 0;
  for (p = s; *p; p++) {
    if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
      rc = bad(e, id, 0, "resources[%zu]: \"%.64s\" contains a space or control character", i, s);
      goto out;
    }
    n += *p == '/';
  }
  if (!*s || *s == '/' || p[-1] == '/' || strstr(s, "//")) {
    rc = bad(e, id, 0, "resources[%zu]: \"%.64s\" has an empty segment", i, s);
    goto out;
  }
  if (!(out->segs = arena_alloc(a, n * sizeof *out->segs))) {
    rc = KEEL_ENOMEM;
    goto out;
  }
  out->nsegs = n;
  for (p = s;; p = q + 1) {
    size_t len;
    q = strchr(p, '/');
    len = q ? (size_t)(q - p) : strlen(p);
    if ((rc = compile_part(a, p, len, &out->segs[k]))) goto out;
    if (out->segs[k].kind == M_GLOB && memmem(p, len, "**", 2)) {
      rc = bad(e, id, 0, "resources[%zu]: \"%.64s\": '**' must be a whole segment", i, s);
      goto out;
    }
    k++;
    if (!q) break;
  }
out:
  return rc;
}

static int compile_principal(arena_t *a, const char *id, size_t i, const char *s, prin_t *out,
                             keel_err_t *e) {
  static const struct {
    const char *pfx;
    uint32_t kind;
  } kinds[] = {
      {"team:", PR_TEAM}, {"user:", PR_USER}, {"role:", PR_ROLE}, {"partner:", PR_PARTNER}};
  static const char *const roles[] = {"admin", "operator", "viewer", "agent", "enroll"};
  size_t k;
  if (!strcmp(s, "*")) {
    out->kind = PR_ALL;
    out->name = "*";
    return 0;
  }
  for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    size_t pl = strlen(kinds[k].pfx);
    if (strncmp(s, kinds[k].pfx, pl)) continue;
    if (!name_ok(s + pl)) break;
    if (kinds[k].kind == PR_ROLE) {
      size_t r;
      for (r = 0; r < sizeof roles / sizeof roles[0]; r++)
        if (!strcmp(s + pl, roles[r])) break;
      if (r == sizeof roles / sizeof roles[0])
        return bad(e, id, 0,
                   "principals[%zu]: unknown role \"%.64s\" (admin, operator, viewer, agent, "
                   "enroll)",
                   i, s + pl);
    }
    out->kind = kinds[k].kind;
    return (out->name = arena_strndup(a, s + pl, strlen(s + pl))) ? 0 : KEEL_ENOMEM;
  }
  return bad(e, id, 0,
             "principals[%zu]: \"%.64s\" is not \"*\", team:NAME, user:NAME, role:ROLE or "
             "partner:TEAM",
             i, s);
}

static int parse_hhmm(const char *s, int allow_24, int32_t *min) {
  int h, m;
  if (strlen(s) != 5 || s[2] != ':' || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' ||
      s[3] < '0' || s[3] > '5' || s[4] < '0' || s[4] > '9')
    return KEEL_EINVAL;
  h = (s[0] - '0') * 10 + (s[1] - '0');
  m = (s[3] - '0') * 10 + (s[4] - '0');
  if (h > 24 || (h == 24 && (m || !allow_24))) return KEEL_EINVAL;
  *min = h * 60 + m;
  return 0;
}

static int compile_window(const char *id, const char *field, const json_t *o, win_t *w,
                          keel_err_t *e) {
  static const keel_json_field_t fields[] = {{"days", KEEL_JSON_ARRAY, 0, 7 * 4},
                                             {"start", KEEL_JSON_STRING, 1, 5},
                                             {"end", KEEL_JSON_STRING, 1, 5},
                                             {NULL, 0, 0, 0}};
  static const char *const dn[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
  keel_err_t sub = {0};
  const json_t *days = json_object_get(o, "days"), *d;
  size_t i, k;
  if (!json_is_object(o)) return bad(e, id, 0, "conditions.%s: expected an object", field);
  if (keel_json_check(o, fields, &sub)) return bad(e, id, 0, "conditions.%s: %s", field, sub.msg);
  w->days = days ? 0 : 0x7f;
  if (days && !json_array_size(days))
    return bad(e, id, 0, "conditions.%s.days: must not be empty (omit it for every day)", field);
  json_array_foreach(days, i, d) {
    const char *s = json_string_value(d);
    for (k = 0; s && k < 7; k++)
      if (!strcmp(s, dn[k])) break;
    if (!s || k == 7)
      return bad(e, id, 0,
                 "conditions.%s.days[%zu]: expected one of mon, tue, wed, thu, fri, sat, sun",
                 field, i);
    w->days |= 1u << k;
  }
  if (parse_hhmm(json_string_value(json_object_get(o, "start")), 0, &w->start))
    return bad(e, id, 0, "conditions.%s.start: expected \"HH:MM\" from 00:00 to 23:59", field);
  if (parse_hhmm(json_string_value(json_object_get(o, "end")), 1, &w->end))
    return bad(e, id, 0, "conditions.%s.end: expected \"HH:MM\" from 00:00 to 24:00", field);
  if (w->start == w->end)
    return bad(e, id, 0, "conditions.%s: start and end are equal (an empty window)", field);
  return 0;
}

static int compile_conditions(arena_t *a, const char *id, const json_t *o, stmt_t *s,
                              keel_err_t *e) {
  static const keel_json_field_t fields[] = {{"resource_tags", KEEL_JSON_OBJECT, 0, 0},
                                             {"resource_tags_missing", KEEL_JSON_ARRAY, 0, 256},
                                             {"window", KEEL_JSON_OBJECT, 0, 0},
                                             {"outside_window", KEEL_JSON_OBJECT, 0, 0},
                                             {"token_max_age", KEEL_JSON_STRING, 0, 32},
                                             {"expires_at", KEEL_JSON_STRING, 0, 64},
                                             {NULL, 0, 0, 0}};
  keel_err_t sub = {0};
  cond_t *c;
  const json_t *v, *x;
  const char *k;
  size_t i;
  int rc = 0, any = 0;

  if (keel_json_check(o, fields, &sub)) return bad(e, id, 0, "conditions: %s", sub.msg);
  if (!(c = arena_alloc(a, sizeof *c))) return KEEL_ENOMEM;
  memset(c, 0, sizeof *c);
  if ((v = json_object_get(o, "resource_tags"))) {
    c->ntags = (uint32_t)json_object_size(v);
    c->tag_k = arena_alloc(a, (c->ntags + 1) * sizeof(char *));
    c->tag_v = arena_alloc(a, (c->ntags + 1) * sizeof(char *));
    if (!c->tag_k || !c->tag_v) return KEEL_ENOMEM;
    i = 0;
    json_object_foreach((json_t *)v, k, x) {
      if (!*k || !json_is_string(x))
        return bad(e, id, 0,
                   "conditions.resource_tags.%.64s: expected a non-empty key and a string value",
                   k);
      if (!(c->tag_k[i] = arena_strndup(a, k, strlen(k))) ||
          !(c->tag_v[i] = arena_strndup(a, json_string_value(x), json_string_length(x))))
        return KEEL_ENOMEM;
      i++;
    }
    any = 1;
  }
  if ((v = json_object_get(o, "resource_tags_missing"))) {
    c->nmiss = (uint32_t)json_array_size(v);
    if (!c->nmiss) return bad(e, id, 0, "conditions.resource_tags_missing: must not be empty");
    if (!(c->miss = arena_alloc(a, c->nmiss * sizeof(char *)))) return KEEL_ENOMEM;
    json_array_foreach(v, i, x) {
      if (!json_string_value(x) || !*json_string_value(x))
        return bad(e, id, 0, "conditions.resource_tags_missing[%zu]: expected a non-empty string",
                   i);
      if (!(c->miss[i] = arena_strndup(a, json_string_value(x), json_string_length(x))))
        return KEEL_ENOMEM;
    }
    any = 1;
  }
  if ((v = json_object_get(o, "window"))) {
    if ((rc = compile_window(id, "window", v, &c->win, e))) return rc;
    c->has_win = any = 1;
  }
  if ((v = json_object_get(o, "outside_window"))) {
    if ((rc = compile_window(id, "outside_window", v, &c->owin, e))) return rc;
    c->has_owin = any = 1;
  }
  if ((v = json_object_get(o, "token_max_age"))) {
    if (keel_duration_parse(json_string_value(v), &c->max_age))
      return bad(e, id, 0, "conditions.token_max_age: expected a duration such as \"12h\"");
    any = 1;
  }
  if ((v = json_object_get(o, "expires_at")) && keel_time_parse(json_string_value(v), &s->expires))
    return bad(e, id, 0, "conditions.expires_at: expected an RFC 3339 time");
  s->cond = any ? c : NULL;
  return 0;
}

/* Reads one string array field into n items of `size` bytes via fn. */
typedef int (*item_fn)(arena_t *, const char *, size_t, const char *, void *, keel_err_t *);

static int compile_list(arena_t *a, const char *id, const json_t *arr, const char *field,
                        size_t size, item_fn fn, void **items, uint32_t *n, keel_err_t *e) {
  size_t i;
  const json_t *v;
  int rc;
  if (!json_array_size(arr)) return bad(e, id, 0, "%s: must not be empty", field);
  if (!(*items = arena_alloc(a, json_array_size(arr) * size))) return KEEL_ENOMEM;
  json_array_foreach(arr, i, v) {
    const char *s = json_string_value(v);
    if (!s || strlen(s) != json_string_length(v) || json_string_length(v) > 1024)
      return bad(e, id, 0, "%s[%zu]: expected a string of at most 1024 bytes", field, i);
    if ((rc = fn(a, id, i, s, (char *)*items + i * size, e))) return rc;
  }
  *n = (uint32_t)json_array_size(arr);
  return 0;
}

static int act_fn(arena_t *a, const char *id, size_t i, const char *s, void *o, keel_err_t *e) {
  return compile_action(a, id, i, s, o, e);
}
static int res_fn(arena_t *a, const char *id, size_t i, const char *s, void *o, keel_err_t *e) {
  return compile_resource(a, id, i, s, o, e);
}
static int prin_fn(arena_t *a, const char *id, size_t i, const char *s, void *o, keel_err_t *e) {
  return compile_principal(a, id, i, s, o, e);
}

static int compile_stmt(k_policy_t *p, stab_t *ids, arena_t *tmp, size_t idx, const json_t *o,
                        stmt_t *s, keel_err_t *e) {
  static const keel_json_field_t fields[] = {{"id", KEEL_JSON_STRING, 1, 128},
                                             {"effect", KEEL_JSON_STRING, 0, 16},
                                             {"guardrail", KEEL_JSON_BOOL, 0, 0},
                                             {"principals", KEEL_JSON_ARRAY, 0, MAX_ITEMS},
                                             {"actions", KEEL_JSON_ARRAY, 1, MAX_ITEMS},
                                             {"resources", KEEL_JSON_ARRAY, 1, MAX_ITEMS},
                                             {"conditions", KEEL_JSON_OBJECT, 0, 0},
                                             {"reason", KEEL_JSON_STRING, 0, 200},
                                             {NULL, 0, 0, 0}};
  arena_t *a = &p->arena;
  keel_err_t sub = {0};
  const json_t *v;
  const char *id, *effect, *q;
  uint32_t dummy;
  int rc, added, guard;

  memset(s, 0, sizeof *s);
  s->expires = INT64_MAX;
  if (!json_is_object(o)) return bad(e, NULL, idx, "expected an object");
  id = json_string_value(json_object_get(o, "id"));
  if (!id) return bad(e, NULL, idx, "field 'id': expected a string");
  for (q = id; *q && id_char(*q, q == id); q++) {
  }
  if (*q || q == id || q - id > 128)
    return bad(e, NULL, idx, "field 'id': \"%.64s\" is not [a-z0-9][a-z0-9._:/@-]{0,127}", id);
  if (keel_json_check(o, fields, &sub)) return bad(e, id, 0, "%s", sub.msg);
  if ((rc = stab_intern(ids, tmp, PR_ID, id, (uint32_t)strlen(id), 0, &dummy, &added))) return rc;
  if (!added) return bad(e, id, 0, "field 'id': used by an earlier statement");
  if (!(s->id = arena_strndup(a, id, strlen(id)))) return KEEL_ENOMEM;

  guard = json_is_true(json_object_get(o, "guardrail"));
  effect = json_string_value(json_object_get(o, "effect"));
  if (!effect && !guard) return bad(e, id, 0, "missing required field 'effect'");
  if (effect && strcmp(effect, "allow") && strcmp(effect, "deny"))
    return bad(e, id, 0, "field 'effect': expected one of allow, deny");
  if (guard && effect && strcmp(effect, "deny"))
    return bad(e, id, 0, "field 'effect': guardrails are always deny");
  s->cls = guard ? C_GUARD : !strcmp(effect, "deny") ? C_DENY : C_ALLOW;

  if ((v = json_object_get(o, "principals"))) {
    if ((rc = compile_list(a, id, v, "principals", sizeof(prin_t), prin_fn, (void **)&s->prins,
                           &s->nprin, e)))
      return rc;
  } else if (guard) {
    /* Guardrails bind everyone unless they say otherwise. */
    if (!(s->prins = arena_alloc(a, sizeof *s->prins))) return KEEL_ENOMEM;
    s->prins[0] = (prin_t){PR_ALL, "*"};
    s->nprin = 1;
  } else {
    return bad(e, id, 0, "missing required field 'principals'");
  }
  if ((rc = compile_list(a, id, json_object_get(o, "actions"), "actions", sizeof(act_t), act_fn,
                         (void **)&s->acts, &s->nact, e)) ||
      (rc = compile_list(a, id, json_object_get(o, "resources"), "resources", sizeof(rglob_t),
                         res_fn, (void **)&s->res, &s->nres, e)))
    return rc;
  if ((v = json_object_get(o, "conditions")) && (rc = compile_conditions(a, id, v, s, e)))
    return rc;
  if ((v = json_object_get(o, "reason"))) {
    for (q = json_string_value(v); *q; q++)
      if ((unsigned char)*q < 0x20 || *q == 0x7f)
        return bad(e, id, 0, "field 'reason': must be one line without control characters");
    if (!(s->reason = arena_strndup(a, json_string_value(v), json_string_length(v))))
      return KEEL_ENOMEM;
  }
  return 0;
}

static int slots_grow(k_policy_t *p) {
  size_t ncap = p->capslots ? p->capslots * 2 : 1024, i;
  bslot_t *ns = malloc(ncap * sizeof *ns);
  if (!ns) return KEEL_ENOMEM;
  for (i = 0; i < ncap; i++) ns[i].key = UINT64_MAX;
  for (i = 0; i < p->capslots; i++) {
    uint64_t k = p->slots[i].key, j;
    if (k == UINT64_MAX) continue;
    for (j = (k * 0x9e3779b97f4a7c15ull) >> 20 & (ncap - 1); ns[j].key != UINT64_MAX;
         j = (j + 1) & (ncap - 1)) {
    }
    ns[j] = p->slots[i];
  }
  free(p->slots);
  p->slots = ns;
  p->capslots = ncap;
  return 0;
}

/* Adds statement si to the (pid, app) bucket's list for its class. */
static int index_add(k_policy_t *p, uint32_t pid, uint32_t app, uint32_t si) {
  uint64_t key = (uint64_t)pid << 32 | app, j;
  bucket_t *b;
  uint32_t c = p->stmts[si].cls;
  if ((p->nbuckets + 1) * 2 > p->capslots && slots_grow(p)) return KEEL_ENOMEM;
  for (j = (key * 0x9e3779b97f4a7c15ull) >> 20 & (p->capslots - 1);
       p->slots[j].key != UINT64_MAX && p->slots[j].key != key; j = (j + 1) & (p->capslots - 1)) {
  }
  if (p->slots[j].key == UINT64_MAX) {
    if (p->nbuckets == p->capbuckets) {
      size_t nc = p->capbuckets ? p->capbuckets * 2 : 256;
      bucket_t *nb = realloc(p->buckets, nc * sizeof *nb);
      if (!nb) return KEEL_ENOMEM;
      p->buckets = nb;
      p->capbuckets = nc;
    }
    memset(&p->buckets[p->nbuckets], 0, sizeof *p->buckets);
    p->slots[j].key = key;
    p->slots[j].b = (uint32_t)p->nbuckets++;
  }
  b = &p->buckets[p->slots[j].b];
  /* Statements are added in order, so a repeat (two globs on one app) is the last entry. */
  if (b->n[c] && b->list[c][b->n[c] - 1] == si) return 0;
  if (b->n[c] == b->cap[c]) {
    uint32_t nc = b->cap[c] ? b->cap[c] * 2 : 4;
    uint32_t *nl = realloc(b->list[c], nc * sizeof *nl);
    if (!nl) return KEEL_ENOMEM;
    b->list[c] = nl;
    b->cap[c] = nc;
  }
  b->list[c][b->n[c]++] = si;
  return 0;
}

static int index_stmt(k_policy_t *p, uint32_t si) {
  const stmt_t *s = &p->stmts[si];
  int rc = 0, added;
  for (uint32_t i = 0; i < s->nprin; i++) {
    uint32_t pid = 0;
    if (s->prins[i].kind != PR_ALL) {
      if ((rc = stab_intern(&p->names, &p->arena, s->prins[i].kind, s->prins[i].name,
                            (uint32_t)strlen(s->prins[i].name), p->npid + 1, &pid, &added)))
        goto out;
      p->npid += added;
    }
    for (uint32_t r = 0; r < s->nres; r++) {
      const rglob_t *g = &s->res[r];
      uint32_t app = GENERIC;
      if (g->nsegs >= 2 && g->segs[0].kind == M_EXACT && g->segs[0].len == 3 &&
          !memcmp(g->segs[0].s, "app", 3) && g->segs[1].kind == M_EXACT) {
        if ((rc = stab_intern(&p->names, &p->arena, PR_APP, g->segs[1].s, g->segs[1].len, p->napp,
                              &app, &added)))
          goto out;
        p->napp += added;
      }
      if ((rc = index_add(p, pid, app, si))) goto out;
    }
  }
out:
  return rc;
}

int k_policy_compile(const json_t *statements, k_policy_t **out, keel_err_t *e) {
  k_policy_t *p = NULL;
  stab_t ids = {0}; /* uniqueness of ids, during compile only */
  arena_t tmp = {0};
  size_t i;
  int rc = 0;

  *out = NULL;
  if (!json_is_array(statements)) {
    rc = keel_err_set(e, KEEL_EINVAL, "statements: expected an array");
    goto out;
  }
  if (json_array_size(statements) >= UINT32_MAX / 2) {
    rc = keel_err_set(e, KEEL_ETOOBIG, "statements: too many");
    goto out;
  }
  if (!(p = calloc(1, sizeof *p))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  p->n = json_array_size(statements);
  if (p->n && !(p->stmts = arena_alloc(&p->arena, p->n * sizeof *p->stmts))) {
    rc = keel_err_set(e, KEEL_ENOMEM, "out of memory");
    goto out;
  }
  for (i = 0; i < p->n; i++) {
    if ((rc = compile_stmt(p, &ids, &tmp, i, json_array_get(statements, i), &p->stmts[i], e))) {
      if (rc == KEEL_ENOMEM) keel_err_set(e, rc, "out of memory");
      goto out;
    }
  }
  for (i = 0; i < p->n; i++)
    if ((rc = index_stmt(p, (uint32_t)i))) {
      keel_err_set(e, rc, "out of memory");
      goto out;
    }
  /* Shrink the lists to size: they are read-only from here on. */
  for (i = 0; i < p->nbuckets; i++)
    for (int c = 0; c < C_N; c++) {
      bucket_t *b = &p->buckets[i];
      uint32_t *nl;
      if (b->n[c] < b->cap[c] && (nl = realloc(b->list[c], b->n[c] * sizeof *nl))) {
        b->list[c] = nl;
        b->cap[c] = b->n[c];
      }
    }
  *out = p;
  p = NULL;
out:
  free(ids.e);
  arena_free(&tmp);
  k_policy_free(p);
  return rc;
}

void k_policy_free(k_policy_t *p) {
  if (!p) return;
  for (size_t i = 0; i < p->nbuckets; i++)
    for (int c = 0; c < C_N; c++) free(p->buckets[i].list[c]);
  free(p->buckets);
  free(p->slots);
  free(p->names.e);
  arena_free(&p->arena);
  free(p);
}

size_t k_policy_mem(const k_policy_t *p) {
  size_t m = sizeof *p + p->arena.bytes + p->names.cap * sizeof(sent_t) +
             p->capbuckets * sizeof(bucket_t) + p->capslots * sizeof(bslot_t);
  for (size_t i = 0; i < p->nbuckets; i++)
    for (int c = 0; c < C_N; c++) m += p->buckets[i].cap[c] * sizeof(uint32_t);
  return m;
}

size_t k_policy_count(const k_policy_t *p) { return p->n; }
