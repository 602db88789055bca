/* Unit tests for event/labels.h: the one meaning of a selector over the
 * labels of events and alerts (alert rules, automation rules, maintenance
 * windows and notification routes all match with it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "event/labels.h"

static int match(const char *selector, const json_t *labels) {
  keel_selector_t *s = NULL;
  int hit;
  assert_int_equal(keel_selector_parse(selector, strlen(selector), &s, NULL), 0);
  hit = k_event_labels_match(s, labels);
  keel_selector_free(s);
  return hit;
}

/* A host's labels (k_fleet_host_labels) with an event's own. */
static void host_keys_read_host_labels(void **state) {
  json_t *l = json_pack("{s:s,s:s,s:s,s:s}", "instance", "web-1", "agent_id", "agt_1", "env",
                        "prod", "service", "nginx");
  (void)state;
  assert_true(match("hostname=web-1", l));
  assert_true(match("id=agt_1", l));
  assert_true(match("hostname in (db-1,web-1),id!=agt_2", l));
  assert_false(match("hostname=agt_1", l));
  assert_false(match("id=web-1", l));
  /* every other key is the label of that name */
  assert_true(match("instance=web-1,agent_id=agt_1,env=prod,service=nginx", l));
  assert_false(match("env=dev", l));
  assert_true(match("!team", l));
  assert_true(match("", l));
  json_decref(l);
}

/* A label literally named id or hostname is out of a selector's reach. */
static void literal_id_and_hostname_are_not_read(void **state) {
  json_t *l = json_pack("{s:s,s:s,s:s}", "instance", "db-2", "hostname", "other", "id", "x");
  (void)state;
  assert_true(match("hostname=db-2", l));
  assert_false(match("hostname=other", l));
  assert_false(match("id=x", l));
  assert_true(match("id=", l)); /* no agent_id: the host keys read "" */
  json_decref(l);
}

/* No labels (NULL, or data.labels that is not an object): only selectors
 * that hold for an object without tags match. */
static void no_labels(void **state) {
  json_t *notobj = json_string("web-1");
  json_t *nonstr = json_pack("{s:i,s:s}", "env", 1, "role", "web");
  (void)state;
  assert_true(match("", NULL));
  assert_true(match("!env", NULL));
  assert_true(match("hostname=", NULL));
  assert_false(match("env=prod", NULL));
  assert_false(match("hostname=web-1", notobj));
  assert_true(match("!env,role=web", nonstr)); /* a value that is not a string is absent */
  json_decref(notobj);
  json_decref(nonstr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(host_keys_read_host_labels),
      cmocka_unit_test(literal_id_and_hostname_are_not_read),
      cmocka_unit_test(no_labels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
