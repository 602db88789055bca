/* Unit tests for src/agent/inventory.c on the machine running them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "keel/crypto.h"
#include "keel/json.h"
#include "keel/time.h"
#include "keel/version.h"

static const char *str(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  if (!json_is_string(v)) fail_msg("'%s' is not a string", k);
  return json_string_value(v);
}

static json_int_t num(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  if (!json_is_integer(v)) fail_msg("'%s' is not an integer", k);
  return json_integer_value(v);
}

static void test_fields(void **state) {
  json_t *inv = ka_inventory(), *os, *cpu, *disks, *ifs, *d;
  char host[256];
  size_t i;
  int has_root = 0;

  assert_non_null(inv);
  gethostname(host, sizeof host);
  assert_string_equal(str(inv, "hostname"), host);
  os = json_object_get(inv, "os");
  assert_true(json_is_object(os));
  assert_true(strlen(str(os, "id")) > 0);
  assert_true(strlen(str(os, "name")) > 0);
  str(os, "version"); /* may be empty (e.g. Debian sid) */
  assert_true(strlen(str(inv, "kernel")) > 0);
  assert_true(strlen(str(inv, "arch")) > 0);
  cpu = json_object_get(inv, "cpu");
  assert_true(num(cpu, "count") >= 1);
  str(cpu, "model");
  assert_true(num(inv, "memory_bytes") > 64LL << 20);
  /* Booted after 2000, before now. */
  assert_true(num(inv, "boot_time") > 946684800000LL);
  assert_true(num(inv, "boot_time") < keel_now_ms());
  assert_string_equal(str(inv, "agent_version"), KEEL_VERSION);

  disks = json_object_get(inv, "disks");
  assert_true(json_is_array(disks));
  json_array_foreach(disks, i, d) {
    const char *fstype = str(d, "fstype");
    assert_true(str(d, "mount")[0] == '/');
    str(d, "device");
    assert_true(strcmp(fstype, "proc") && strcmp(fstype, "sysfs") && strcmp(fstype, "tmpfs") &&
                strncmp(fstype, "cgroup", 6));
    assert_true(num(d, "size_bytes") >= num(d, "free_bytes"));
    assert_true(num(d, "free_bytes") >= 0);
    if (!strcmp(str(d, "mount"), "/")) has_root = 1;
  }
  assert_true(has_root);

  ifs = json_object_get(inv, "interfaces");
  assert_true(json_is_array(ifs));
  json_array_foreach(ifs, i, d) {
    json_t *addrs = json_object_get(d, "addresses"), *a, *mac = json_object_get(d, "mac");
    size_t j;
    assert_true(strlen(str(d, "name")) > 0);
    assert_string_not_equal(str(d, "name"), "lo");
    assert_true(json_is_array(addrs));
    json_array_foreach(addrs, j, a) {
      assert_non_null(strchr(json_string_value(a), '/')); /* with prefix length */
    }
    assert_true(json_is_null(mac) || (json_is_string(mac) && strlen(json_string_value(mac)) == 17));
  }
  json_decref(inv);
}

static void test_digest_stable(void **state) {
  json_t *a = ka_inventory(), *b = ka_inventory();
  char da[65], db[65];
  /* free_bytes may move between two calls on a busy disk: compare without. */
  json_object_del(a, "disks");
  json_object_del(b, "disks");
  ka_inventory_digest(da, a);
  ka_inventory_digest(db, b);
  assert_string_equal(da, db);
  json_object_set_new(b, "hostname", json_string("other"));
  ka_inventory_digest(db, b);
  assert_string_not_equal(da, db);
  json_decref(a);
  json_decref(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fields),
      cmocka_unit_test(test_digest_stable),
  };
  if (keel_crypto_init()) return 1;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
