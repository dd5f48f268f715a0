// The C++ tests' one assertion: CHECK(cond) reports file:line and the condition, counts
// the failure and goes on; each test's main returns non-zero when `failures` > 0.
#pragma once

#include <cstdio>

static int failures = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                            \
    }                                                                        \
  } while (0)
