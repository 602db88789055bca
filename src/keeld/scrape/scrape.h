/* scrape/scrape.h — the scrape engine: pulls Prometheus/OpenMetrics
 * endpoints on a schedule and hands the samples to the loop thread.
 *
 * Threads.  The engine owns one thread of its own (started by
 * k_scrape_new) that drives every scrape with libcurl's multi interface,
 * parses the bodies (scrape/expfmt.h), applies target labels, computes
 * staleness and builds one batch per scrape.  Finished batches are queued
 * and an eventfd (k_scrape_fd) becomes readable; the loop thread then calls
 * k_scrape_poll, which runs the callback once per batch and updates the
 * targets' status.  Everything else (k_scrape_configure, k_scrape_poll,
 * k_scrape_targets_json, k_scrape_free) MUST be called from one thread,
 * the loop's; none of them blocks on the network.
 *
 * What a batch holds, for one scrape of one target at time t (the wall
 * clock when the scrape started):
 *   - every scraped sample, labels merged with the target's labels (job,
 *     instance and the configured ones) by honor_labels as Prometheus does:
 *     false: the target's labels win, a scraped label they displace is kept
 *     as exported_<name> (exported_exported_<name> if that is taken, ...);
 *     true: the scraped labels win, the target's fill in the rest.
 *     Samples without a timestamp get t; explicit timestamps are kept.
 *   - the synthetic series up (1 or 0), scrape_duration_seconds,
 *     scrape_samples_scraped, scrape_samples_post_metric_relabeling and
 *     scrape_series_added, with the target's labels only, at t;
 *   - a stale marker (value with the bits K_STALE_NAN_BITS, at t) for every
 *     series of the previous batch that this one lacks: series that went
 *     away, and all scraped series when the scrape failed.  Series with
 *     explicit timestamps are never marked stale (as in Prometheus).
 * A failed scrape (transport error, timeout, HTTP status other than 200,
 * a body over its limit, a parse error, a duplicate series after labels
 * were merged) has up 0 and no scraped samples.  When a target leaves the
 * configuration, one last batch (up = -1 in k_scrape_batch_t) marks all
 * its series stale, the synthetic ones ("up" too) included.
 */
#ifndef KEELD_SCRAPE_SCRAPE_H
#define KEELD_SCRAPE_SCRAPE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"
#include "keel/log.h"
#include "keel/yaml.h"
#include "scrape/expfmt.h"

typedef struct k_scrape k_scrape_t;

/* Limits of a configuration. */
#define K_SCRAPE_MAX_JOBS 1000
#define K_SCRAPE_MAX_TARGETS 10000 /* over all jobs */
#define K_SCRAPE_MIN_INTERVAL_MS 100
#define K_SCRAPE_MAX_INTERVAL_MS (24 * 3600 * 1000)

/* One scrape's result, as k_scrape_poll hands it over.  Everything it
 * points at is valid only during the callback. */
typedef struct k_scrape_batch {
  const char *job;
  const char *instance;      /* the target's instance label */
  const char *url;           /* what was scraped */
  int up;                    /* 1 scraped, 0 failed, -1 target removed */
  int64_t t_ms;              /* when the scrape started (wall clock) */
  double duration_s;
  const char *error;         /* why it failed; "" when up != 0 */
  const k_expfmt_sample_t *samples; /* t_ms never K_EXPFMT_NO_TS here */
  size_t n;
} k_scrape_batch_t;

typedef void (*k_scrape_fn)(void *ud, const k_scrape_batch_t *b);

/* Starts the engine's thread with no targets.  log is borrowed for the
 * engine's life; it is used from the loop thread only (k_scrape_poll logs
 * health changes).  On failure *out is NULL. */
int k_scrape_new(const keel_log_t *log, k_scrape_t **out, keel_err_t *e);

/* Replaces the configuration (docs/metrics.md, "Scraping") with the JSON
 * text config_json (NUL-terminated).  Targets that stay (same job_name and
 * URL) keep their state: health, last scrape, the series seen (so no
 * spurious stale markers) and their place in the schedule when the
 * interval is unchanged; new targets start "unknown"; removed ones get the
 * final batch described above.  On error (KEEL_EINVAL, a message naming
 * the field: "scrape_configs[0].scrape_timeout: ...") nothing changes. */
int k_scrape_configure(k_scrape_t *s, const char *config_json, keel_err_t *e);
/* The same from a parsed document (JSON or YAML through keel_yaml_load);
 * name and pos may be NULL; with them errors read "name:line:col: path: ...". */
int k_scrape_configure_doc(k_scrape_t *s, const char *name, const json_t *doc,
                           const keel_yaml_pos_t *pos, keel_err_t *e);
/* Validation alone (s not needed): 0 or the error configure would give. */
int k_scrape_config_check(const char *name, const json_t *doc, const keel_yaml_pos_t *pos,
                          keel_err_t *e);

/* Readable (EPOLLIN) when batches are waiting. */
int k_scrape_fd(const k_scrape_t *s);
/* Runs fn once per finished batch, oldest first, then frees them; also
 * updates the targets' status.  fn may be NULL (batches are dropped).
 * Returns the number of batches. */
size_t k_scrape_poll(k_scrape_t *s, k_scrape_fn fn, void *ud);

/* The targets as GET /v1/metrics/targets shows them: a new JSON array,
 * sorted by job then instance, of
 *   {"job", "instance", "scrape_url", "health": "up"|"down"|"unknown",
 *    "last_error": string|null, "last_scrape": RFC 3339|null,
 *    "last_scrape_duration_seconds": number|null, "scrape_interval",
 *    "scrape_timeout" (durations as configured, e.g. "15s"),
 *    "labels": {name: value} (the target's labels, job and instance included)}
 * Status is as of the last k_scrape_poll.  NULL on out of memory. */
json_t *k_scrape_targets_json(const k_scrape_t *s);

/* Stops the thread (in-flight scrapes are abandoned), drops batches not
 * yet polled, frees.  NULL is fine. */
void k_scrape_free(k_scrape_t *s);

#endif
