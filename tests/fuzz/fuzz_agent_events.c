/* fuzz_agent_events.c — the body decoder of POST /v1/agent/events
 * (k_decode_agent_events).
 *
 * Invariants: an error has a code and a message and no output; a success
 * holds 1..256 events, each with a type an agent may send (service.*,
 * file.*, check.*; a valid event type), a subject within the limit, data
 * an object (or absent) whose labels are strings, and a time that is
 * positive and at most 10 minutes ahead. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/event.h"
#include "keel/json.h"
#include "server.h"

#include "fuzz_check.h"

#define NOW_MS INT64_C(1764000000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *out = (json_t *)1, *ev;
  keel_err_t e = {0};
  size_t i;
  int rc = k_decode_agent_events((const char *)data, size, NOW_MS, &out, &e);

  if (rc) {
    CHECK(rc < 0);
    CHECK(out == NULL);
    CHECK(e.code == rc);
    CHECK(e.msg[0] != '\0');
    return 0;
  }
  CHECK(json_is_array(json_object_get(out, "events")));
  CHECK(json_array_size(json_object_get(out, "events")) >= 1);
  CHECK(json_array_size(json_object_get(out, "events")) <= 256);
  json_array_foreach(json_object_get(out, "events"), i, ev) {
    const char *type = keel_json_str(ev, "type"), *subject = keel_json_str(ev, "subject");
    const json_t *d = json_object_get(ev, "data"), *labels, *v;
    json_int_t t = json_integer_value(json_object_get(ev, "_time_ms"));
    const char *k;
    CHECK(type && k_event_type_valid(type));
    CHECK(!strncmp(type, "service.", 8) || !strncmp(type, "file.", 5) || !strncmp(type, "check.", 6));
    CHECK(!subject || strlen(subject) <= K_EVENT_AGENT_SUBJECT_MAX);
    CHECK(t > 0 && t <= NOW_MS + 10 * 60 * 1000);
    CHECK(!d || json_is_object(d));
    labels = json_object_get(d, "labels");
    CHECK(!labels || json_is_object(labels));
    json_object_foreach((json_t *)labels, k, v) CHECK(json_is_string(v));
  }
  json_decref(out);
  return 0;
}
