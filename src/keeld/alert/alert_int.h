/* alert/alert_int.h — the alert engine's memory, shared by alert.c (rules,
 * loading, listing, events in) and eval.c (evaluation, transitions, events
 * out).  Not for other engines. */
#ifndef KEELD_ALERT_INT_H
#define KEELD_ALERT_INT_H

#include "alert/alert.h"
#include "keel/selector.h"
#include "keel/template.h"
#include "promql/promql.h"

enum { ST_PENDING = 0, ST_FIRING, ST_RESOLVED };
/* Their names, as the API and the alert_instances rows say them. */
extern const char *const k_alert_states[];

/* One alert.  Owned by its rule. */
typedef struct inst {
  char fp[17];
  char *ikey;          /* identity for the rule (expr: = fp) */
  json_t *labels;      /* all of the alert's labels (incl. alertname, severity) */
  json_t *annotations; /* rendered */
  json_t *source;      /* event rules: the event's data.labels; NULL for expr */
  char *cause;         /* event rules: the cause of the event that made it ("" none) */
  int state;
  int64_t active_since, fired_at, resolved_at, keep_since, last_eval; /* 0: none */
  double value;
  int has_value;
  int seen; /* scratch of one evaluation: its condition holds */
} inst_t;

/* What an event rule's events said about one instance since the last
 * evaluation (rebuilt from the alerts at load). */
typedef struct cond {
  char *ikey;
  json_t *source; /* data.labels of the latest matching event */
  char *cause;
  int active;     /* rules with clear: started and not cleared */
  int seen;       /* a matching event arrived since the last evaluation */
} cond_t;

typedef struct tmpls {
  const char **names; /* borrowed from the rule's document */
  keel_tmpl_t **t;
  size_t n;
} tmpls_t;

typedef struct rule {
  char *name;
  json_t *doc;       /* normalized document (owned) */
  char path[192];
  const char *app, *team; /* owner, borrowed from doc (one is NULL) */
  const char *expr;       /* borrowed from doc, or NULL */
  /* expr parsed (owned), NULL for event rules and when it does not parse
   * (expr_err, owned, says why: the rule's error at every evaluation). */
  k_promql_expr_t *pexpr;
  char *expr_err;
  const char *type, *clear;
  keel_selector_t *match;
  const json_t *by;       /* array of names or NULL (borrowed) */
  const char *severity;
  int64_t for_ms, keep_ms, interval_ms;
  tmpls_t labels, annotations;

  /* runtime */
  int64_t next_due, last_eval; /* ms; 0: never */
  int64_t last_ns;             /* duration of the last evaluation */
  char err[512];               /* "" = healthy */
  inst_t **inst;               /* sorted by fp */
  size_t ninst, capinst;
  cond_t *cond;
  size_t ncond, capcond;
  int64_t held_seq;            /* oldest event taken since the last evaluation, 0 = none */
} rule_t;

struct k_alerts {
  k_alerts_deps_t d;
  rule_t **rules; /* sorted by name */
  size_t nrules;
  int dirty;      /* rules changed in the store: reload before the next tick */
  int64_t retry_ms; /* a reload failed: not again before this (ms) */
  int64_t min_due;
  /* since open, across reloads (k_alerts_stats) */
  uint64_t evaluations, evaluation_failures;
  k_hist_t evaluation_seconds;
};

/* alert.c */
rule_t *k_alert_find_rule(const k_alerts_t *a, const char *name);
inst_t *k_alert_find_inst(const rule_t *r, const char *fp, size_t *pos);
/* Adds i (owned by r from now) in fingerprint order; KEEL_EEXIST, KEEL_ENOMEM. */
int k_alert_insert_inst(rule_t *r, inst_t *i);
void k_alert_inst_free(inst_t *i);
cond_t *k_alert_cond(rule_t *r, const char *ikey, int create);
/* The owner team of a rule: its team, or its application's owner. */
const char *k_alert_rule_team(const k_alerts_t *a, const rule_t *r);
/* The alert.* data of alert i of rule r (also the list item). */
json_t *k_alert_data(const k_alerts_t *a, const rule_t *r, const inst_t *i);

/* eval.c */
/* Writes inst i of r (upsert) inside the open unit and, when ev_type is
 * not NULL, emits it.  del: delete its row instead. */
int k_alert_write(k_alerts_t *a, const rule_t *r, const inst_t *i, const char *ev_type, int del,
                  int64_t now_ms, keel_err_t *e);

#endif
