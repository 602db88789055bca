/* fuzz_check.h — what every libFuzzer harness here shares. */
#ifndef KEEL_FUZZ_CHECK_H
#define KEEL_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test.  Unlike assert(), also active under
 * NDEBUG: a broken invariant MUST abort, so libFuzzer saves the input. */
#define CHECK(x)                                                                  \
  do {                                                                            \
    if (!(x)) {                                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);       \
      abort();                                                                    \
    }                                                                             \
  } while (0)

#endif
