#include <stdlib.h>

#include "store/store.h"

int k_store_time_cursor(const char *cursor, int64_t *ms, const char **id, keel_err_t *e) {
  char *end;
  *ms = INT64_MAX;
  *id = "";
  if (!cursor) return 0;
  *ms = strtoll(cursor, &end, 10);
  if (end == cursor || *end != '.')
    return keel_err_set(e, KEEL_EINVAL, "query parameter 'cursor': not a cursor from this list");
  *id = end + 1;
  return 0;
}
