/*
 * One publisher thread and one consumer thread on an embedded broker, through the C
 * ABI only: `ringbroker_publish` per message, `ringbroker_fetch` of up to 256 and
 * `ringbroker_msg_free` per message. A publish refused with RINGBROKER_BACKPRESSURE
 * (the home shard's external queue is full) is retried at once and counted. Prints
 * the publisher's and the consumer's rates; every message must arrive, else exit 1.
 *
 *   pubsub DATA_DIR [MESSAGES] [PAYLOAD_BYTES]     (defaults 3000000, 64)
 *
 * Built and run by benches/c/run.sh (docs/benchmarks.md, "C ABI").
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedded.h"

static ringbroker_consumer_t *sub;
static long total;
static long got;

static void *consume(void *arg) {
  (void)arg;
  ringbroker_msg_t *msgs[256];
  while (got < total) {
    size_t n = 0;
    /* A second without a message ends the run (the check below reports it). */
    if (ringbroker_fetch(sub, msgs, 256, &n, 1000) != RINGBROKER_OK || n == 0) break;
    for (size_t i = 0; i < n; i++) ringbroker_msg_free(msgs[i]);
    got += (long)n;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DATA_DIR [MESSAGES] [PAYLOAD_BYTES]\n", argv[0]);
    return 2;
  }
  total = argc > 2 ? atol(argv[2]) : 3000000;
  size_t size = argc > 3 ? (size_t)atol(argv[3]) : 64;
  if (total <= 0 || size > (1u << 20)) {
    fprintf(stderr, "MESSAGES must be positive and PAYLOAD_BYTES at most 1 MiB\n");
    return 2;
  }
  ringbroker_t *h = open_embedded(argv[1]);
  if (ringbroker_subscribe(h, "bench.c", NULL, &sub) != RINGBROKER_OK) {
    fprintf(stderr, "subscribe: %s\n", ringbroker_last_error_message());
    return 1;
  }
  uint8_t *payload = malloc(size ? size : 1);
  if (!payload) return 1;
  memset(payload, 'x', size ? size : 1);
  pthread_t t;
  if (pthread_create(&t, NULL, consume, NULL) != 0) return 1;
  double t0 = now();
  long sent = 0, refused = 0;
  while (sent < total) {
    ringbroker_status s = ringbroker_publish(h, "bench.c", NULL, payload, size);
    if (s == RINGBROKER_OK) {
      sent++;
    } else if (s == RINGBROKER_BACKPRESSURE) {
      refused++;
    } else {
      fprintf(stderr, "publish: %s\n", ringbroker_last_error_message());
      return 1;
    }
  }
  double published = now() - t0;
  pthread_join(t, NULL);
  double elapsed = now() - t0;
  printf("pubsub %zu B: publisher %.0f msgs/s, received %ld at %.0f msgs/s, %ld publishes refused "
         "(backpressure, retried)\n",
         size, (double)sent / published, got, (double)got / elapsed, refused);
  ringbroker_consumer_free(sub);
  ringbroker_close(h);
  free(payload);
  if (got != total) {
    fprintf(stderr, "lost: %ld of %ld arrived\n", got, total);
    return 1;
  }
  return 0;
}
