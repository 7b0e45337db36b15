/*
 * What the C benchmarks share: opening their embedded broker and the clock.
 * Header-only (each program is one translation unit).
 */
#ifndef BENCHES_C_EMBEDDED_H
#define BENCHES_C_EMBEDDED_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ringbroker.h"

/* Seconds on the monotonic clock. */
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* An embedded broker on `dir`: 2 unpinned shards (the benchmark's threads share the
 * cores with them), and the shards' idle spin from $IDLE_SPIN_US if set (the
 * `idle_spin_us` key). Prints why and exits 1 if it cannot open. */
static ringbroker_t *open_embedded(const char *dir) {
  ringbroker_config *c;
  ringbroker_t *h;
  const char *spin = getenv("IDLE_SPIN_US");
  if (ringbroker_config_new(&c) != RINGBROKER_OK ||
      ringbroker_config_set(c, "data_dir", dir) != RINGBROKER_OK ||
      ringbroker_config_set(c, "shards", "2") != RINGBROKER_OK ||
      ringbroker_config_set(c, "pin_to_cores", "false") != RINGBROKER_OK ||
      (spin && *spin && ringbroker_config_set(c, "idle_spin_us", spin) != RINGBROKER_OK) ||
      ringbroker_open(c, &h) != RINGBROKER_OK) {
    fprintf(stderr, "open: %s\n", ringbroker_last_error_message());
    exit(1);
  }
  ringbroker_config_free(c);
  return h;
}

#endif
