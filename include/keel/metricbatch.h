/* keel/metricbatch.h — the binary metric batch: many series, each with
 * samples, in one compact body (POST /v1/agent/metrics, Content-Type
 * application/x-keel-metrics; docs/agent-protocol.md has the layout).
 *
 * A series is a label set sorted by name with "__name__" among the labels
 * (Prometheus' data model; same layout as keeld's k_label_t) and samples of
 * (timestamp in Unix ms, float64), timestamps strictly increasing.  Values
 * round-trip bit-exactly: NaN payloads, the stale marker
 * KEEL_MB_STALE_NAN_BITS, -0.0 and the infinities come back as they went.
 *
 * Rules a label set MUST follow (the encoder refuses, the decoder rejects
 * the whole batch otherwise): 1..KEEL_MB_MAX_LABELS labels; names match
 * [a-zA-Z_][a-zA-Z0-9_]*, strictly ascending by bytes (so no duplicates);
 * values are non-empty UTF-8 without NUL (an empty value means "no such
 * label" in Prometheus: leave the label out); "__name__" is present and
 * its value matches [a-zA-Z_:][a-zA-Z0-9_:]*; names and values are at most
 * KEEL_MB_MAX_STRING bytes.
 */
#ifndef KEEL_METRICBATCH_H
#define KEEL_METRICBATCH_H

#include <stddef.h>
#include <stdint.h>

#include "keel/buf.h"
#include "keel/err.h"

#define KEEL_MB_CONTENT_TYPE "application/x-keel-metrics"
#define KEEL_MB_VERSION 1
#define KEEL_MB_MAX_BATCH ((size_t)16 << 20) /* bytes of one encoded batch */
#define KEEL_MB_MAX_LABELS 64                /* per series */
#define KEEL_MB_MAX_STRING 4096              /* bytes of one label name or value */
#define KEEL_MB_MAX_STRINGS (1u << 20)       /* distinct strings in one batch */
#define KEEL_MB_MAX_SAMPLES 65536            /* per series entry */
/* Prometheus' stale marker (value.StaleNaN). */
#define KEEL_MB_STALE_NAN_BITS UINT64_C(0x7ff0000000000002)

/* Same layout as keeld's k_label_t (src/keeld/metrics/labels.h). */
typedef struct keel_mb_label {
  const char *name;
  const char *value;
} keel_mb_label_t;

/* Called once per series entry of a batch, in batch order.  Everything it
 * is given is borrowed for the call only.  labels are validated and sorted
 * as above; t[0..n) strictly increasing; n >= 1.  Returns 0 to go on; any
 * other value stops decoding and is what keel_mb_decode returns. */
typedef int (*keel_mb_series_fn)(void *ud, const keel_mb_label_t *labels, size_t nlabels,
                                 const int64_t *t, const double *v, size_t n);

/* ---- encoding ------------------------------------------------------------ */

/* An encoder collects series entries and writes them as one batch.  It
 * owns its buffers; keel_mb_enc_reset empties it and keeps them, so a
 * reused encoder fed the same label sets allocates nothing in steady
 * state.  Fields are private. */
typedef struct keel_mb_enc {
  size_t max;          /* cap of the finished batch, bytes */
  keel_buf_t str;      /* the string table as on the wire */
  keel_buf_t ser;      /* the series as on the wire */
  uint32_t *soff;      /* per string: offset of its bytes in str.data */
  uint32_t *slen;      /* per string: its length */
  size_t nstr, capstr;
  uint32_t *hash;      /* open addressing: string index + 1, 0 = empty */
  size_t hcap;         /* power of two (or 0) */
  size_t nseries;
  int64_t base;        /* the first series' first timestamp */
} keel_mb_enc_t;

/* max: the largest batch keel_mb_enc_finish may write, at most (and 0
 * meaning) KEEL_MB_MAX_BATCH. */
void keel_mb_enc_init(keel_mb_enc_t *enc, size_t max);
void keel_mb_enc_free(keel_mb_enc_t *enc);
/* Empty again; keeps the allocations. */
void keel_mb_enc_reset(keel_mb_enc_t *enc);

/* Appends one series entry: labels[0..nlabels) (copied), samples
 * (t[i], v[i]) for i < n.  KEEL_EINVAL when the labels or samples break
 * the rules above (n == 0, n > KEEL_MB_MAX_SAMPLES, t not strictly
 * increasing); KEEL_ETOOBIG when the finished batch would pass the cap
 * (or the string table KEEL_MB_MAX_STRINGS); KEEL_ENOMEM.  On any error
 * the encoder is unchanged. */
int keel_mb_enc_add(keel_mb_enc_t *enc, const keel_mb_label_t *labels, size_t nlabels,
                    const int64_t *t, const double *v, size_t n, keel_err_t *e);
/* One sample: keel_mb_enc_add with n = 1. */
int keel_mb_enc_add1(keel_mb_enc_t *enc, const keel_mb_label_t *labels, size_t nlabels,
                     int64_t t, double v, keel_err_t *e);
/* Series entries added since the last reset. */
size_t keel_mb_enc_count(const keel_mb_enc_t *enc);
/* The exact size keel_mb_enc_finish would write now (<= the cap). */
size_t keel_mb_enc_size(const keel_mb_enc_t *enc);
/* Appends the batch to out (KEEL_ETOOBIG over out's cap, out unchanged
 * then).  The encoder is left as it was: reset it to start the next. */
int keel_mb_enc_finish(const keel_mb_enc_t *enc, keel_buf_t *out, keel_err_t *e);

/* ---- decoding ------------------------------------------------------------ */

/* Checks data[0..len) (untrusted; need not be NUL-terminated) whole —
 * magic, version, CRC, every varint, index and label rule, the limits
 * above — before calling fn once per series entry: fn never sees part of
 * a batch that is bad anywhere.  Reads no byte outside data[0..len).
 * 0, fn's non-zero value, KEEL_EINVAL (malformed: the message names what
 * and the byte offset), KEEL_ECORRUPT (CRC mismatch), KEEL_ETOOBIG (over
 * a limit) or KEEL_ENOMEM.  fn MAY be NULL (validate only). */
int keel_mb_decode(const void *data, size_t len, keel_mb_series_fn fn, void *ud, keel_err_t *e);

/* Helpers shared with producers that build label sets. */
/* 1 when s[0..n) is a label name: [a-zA-Z_][a-zA-Z0-9_]*, n >= 1. */
int keel_mb_label_name_ok(const char *s, size_t n);
/* 1 when s[0..n) is a metric name: [a-zA-Z_:][a-zA-Z0-9_:]*, n >= 1. */
int keel_mb_metric_name_ok(const char *s, size_t n);
/* 1 when s[0..n) is valid UTF-8 (no overlongs, no surrogates) without NUL. */
int keel_mb_utf8_ok(const char *s, size_t n);
/* CRC-32C (Castagnoli) of p[0..n), as the batch trailer uses it. */
uint32_t keel_mb_crc32c(const void *p, size_t n);

#endif
