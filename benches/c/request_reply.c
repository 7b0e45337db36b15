/*
 * Sequential request-reply on an embedded broker through the C ABI: a responder
 * thread answers with `ringbroker_next` + `ringbroker_respond`, the main thread makes
 * REQUESTS `ringbroker_request` calls one after another and prints the latency
 * percentiles (nearest rank). Exit 1 if a request fails.
 *
 *   request_reply DATA_DIR [REQUESTS]     (default 10000)
 *
 * Built and run by benches/c/run.sh (docs/benchmarks.md, "C ABI").
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "embedded.h"

static ringbroker_t *h;
static ringbroker_consumer_t *svc;
static atomic_int stop;

static void *serve(void *arg) {
  (void)arg;
  while (!atomic_load(&stop)) {
    ringbroker_msg_t *m;
    if (ringbroker_next(svc, 100, &m) != RINGBROKER_OK) continue;
    ringbroker_respond(h, m, (const uint8_t *)"pong", 4);
    ringbroker_msg_free(m);
  }
  return NULL;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The nearest-rank percentile q (0 < q <= 1) of the n sorted values. */
static double rank(const double *sorted, long n, double q) {
  long i = (long)(q * (double)n + 0.999999) - 1;
  return sorted[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DATA_DIR [REQUESTS]\n", argv[0]);
    return 2;
  }
  long n = argc > 2 ? atol(argv[2]) : 10000;
  if (n <= 0 || n > 10000000) {
    fprintf(stderr, "REQUESTS must be 1 to 10000000\n");
    return 2;
  }
  h = open_embedded(argv[1]);
  if (ringbroker_subscribe(h, "bench.svc", NULL, &svc) != RINGBROKER_OK) {
    fprintf(stderr, "subscribe: %s\n", ringbroker_last_error_message());
    return 1;
  }
  double *latency = malloc((size_t)n * sizeof *latency);
  if (!latency) return 1;
  pthread_t t;
  if (pthread_create(&t, NULL, serve, NULL) != 0) return 1;
  int failed = 0;
  for (long i = 0; i < n; i++) {
    ringbroker_msg_t *reply;
    double s = now();
    if (ringbroker_request(h, "bench.svc", (const uint8_t *)"ping", 4, 1000, &reply) != RINGBROKER_OK) {
      fprintf(stderr, "request %ld: %s\n", i, ringbroker_last_error_message());
      failed = 1;
      break;
    }
    latency[i] = (now() - s) * 1e6;
    ringbroker_msg_free(reply);
  }
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  if (!failed) {
    qsort(latency, (size_t)n, sizeof *latency, by_value);
    printf("request-reply: %ld requests, p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f us\n", n,
           rank(latency, n, 0.50), rank(latency, n, 0.90), rank(latency, n, 0.99),
           rank(latency, n, 0.999));
  }
  ringbroker_consumer_free(svc);
  ringbroker_close(h);
  free(latency);
  return failed;
}
