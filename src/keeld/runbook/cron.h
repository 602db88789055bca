/* cron.h — runbook schedules (docs/runbooks.md `schedule.cron`): parsing
 * the 5-field cron text and finding the next time it fires.
 *
 * Grammar: minute hour day-of-month month day-of-week, separated by spaces
 * or tabs (leading and trailing ones allowed).  Each field is a ','-list of
 * "*", "*\/S", "N", "N-M" or "N-M/S" with numbers of at most 3 digits in
 * the field's range (minute 0-59, hour 0-23, day-of-month 1-31, month
 * 1-12, day-of-week 0-7 where both 0 and 7 are Sunday) and a step S from 1
 * to the size of that range.  No names (MON, JAN) and no @-macros.
 *
 * Days follow Vixie cron: when both day fields are restricted (neither
 * starts with '*'), a day matches if EITHER matches ("0 0 1 * 1": the 1st
 * and every Monday); otherwise it must match both ("*\/2" counts as
 * unrestricted for this rule, as in Vixie cron).
 *
 * Times are UTC only: no time zones, so no daylight-saving gaps or repeats.
 *
 * Pure: no I/O, no clock, no allocation.  Every pointer argument stays the
 * caller's and is used only during the call.
 */
#ifndef KEELD_RUNBOOK_CRON_H
#define KEELD_RUNBOOK_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "keel/err.h"

/* How many calendar years after the year of its first candidate minute
 * k_cron_next looks.  8 is enough for every spec that can match at all:
 * the longest wait is Feb 29 across a non-leap century year (2096-02-29 to
 * 2104-02-29), every other day pattern recurs within a year.  So -1 from
 * k_cron_next means the spec never matches (e.g. "0 0 31 2 *"), except at
 * the end of the supported range (K_CRON_END_MS). */
#define K_CRON_HORIZON_YEARS 8
/* 10000-01-01T00:00:00Z: k_cron_next never returns this or later. */
#define K_CRON_END_MS INT64_C(253402300800000)

/* A parsed spec: bit i of a mask set when value i matches. */
typedef struct k_cron {
  uint64_t minute; /* bits 0-59 */
  uint32_t hour;   /* bits 0-23 */
  uint32_t mday;   /* bits 1-31 */
  uint16_t month;  /* bits 1-12 */
  uint8_t wday;    /* bits 0-6, 0 = Sunday ("7" sets bit 0) */
  uint8_t day_or;  /* 1: both day fields restricted, a day matches if either
                      does; 0: it must match both */
} k_cron_t;

/* Parses text[0..len) (need not be NUL-terminated; any byte may occur and
 * is simply a syntax error) into *out.  0, or KEEL_EINVAL with e's message
 * naming the field, e.g. "field 2 (hour) '24': 24 is out of range 0-23" or
 * "'0 3 * *': expected 5 fields: minute hour day-of-month month
 * day-of-week" (quoted text: docwalk.h k_walk_quote).  On error *out is
 * zeroed.  Every mask of a parsed spec has at least one bit set. */
int k_cron_parse(const char *text, size_t len, k_cron_t *out, keel_err_t *e);

/* The fields of text[0..len), which k_cron_parse MUST have accepted, joined
 * by single spaces: the normalized form kept in a runbook document
 * ("0\t3  * * 1-5 " -> "0 3 * * 1-5").  out MUST hold len + 1 bytes; it is
 * NUL-terminated.  Returns the length written (without the NUL). */
size_t k_cron_normalize(const char *text, size_t len, char *out);

/* The first minute boundary strictly after after_ms (Unix ms, UTC) that c
 * matches, or -1 when there is none within K_CRON_HORIZON_YEARS or before
 * K_CRON_END_MS.  Never returns a time before the Unix epoch: an after_ms
 * below 0 counts as -1 (so 0 is the first candidate).  Runs in time
 * proportional to the days it skips (a few thousand at most), never
 * minute by minute. */
int64_t k_cron_next(const k_cron_t *c, int64_t after_ms);

#endif
