/*
 * ringbroker from C: the three models through one handle.
 *
 *   quickstart DATA_DIR                 an embedded broker in this process
 *   quickstart ringbroker://HOST:PORT   a running ringbrokerd
 *
 * 1. subjects: subscribe to a wildcard, publish, receive (at most once);
 * 2. request-reply: a responder thread answers requests on "time.now";
 * 3. a stream: publish keyed records (stored before the call returns), replay them
 *    with an ephemeral consumer, acknowledge;
 * 4. a work queue: publish through the default exchange, consume with a prefetch, ack.
 *
 * Build (see examples/c/README.md):
 *   scripts/build-c-library
 *   export PKG_CONFIG_PATH=$PWD/target/release/pkgconfig
 *   cc examples/c/quickstart.c $(pkg-config --cflags --libs ringbroker-static) -o quickstart
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringbroker.h"

/* Prints what failed and why, and leaves. A real program would recover instead. */
static void check(ringbroker_status s, const char *what) {
  if (s != RINGBROKER_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, ringbroker_status_name(s),
            ringbroker_last_error_message());
    exit(1);
  }
}

static ringbroker_msg_view_t view_of(const ringbroker_msg_t *m) {
  ringbroker_msg_view_t v;
  check(ringbroker_msg_view(m, &v), "msg_view");
  return v;
}

static ringbroker_t *open_broker(const char *where) {
  ringbroker_t *h = NULL;
  if (strncmp(where, "ringbroker://", 13) == 0) {
    check(ringbroker_connect(where, NULL, &h), "connect");
    return h;
  }
  ringbroker_config *c = NULL;
  check(ringbroker_config_new(&c), "config_new");
  check(ringbroker_config_set(c, "data_dir", where), "config_set");
  check(ringbroker_config_set(c, "shards", "2"), "config_set");
  ringbroker_status s = ringbroker_open(c, &h);
  ringbroker_config_free(c);
  check(s, "open");
  return h;
}

static void subjects(ringbroker_t *h) {
  ringbroker_consumer_t *sub = NULL;
  check(ringbroker_subscribe(h, "greet.*", NULL, &sub), "subscribe");
  const char *text = "hello";
  check(ringbroker_publish(h, "greet.world", NULL, (const uint8_t *)text, strlen(text)),
        "publish");
  ringbroker_msg_t *m = NULL;
  check(ringbroker_next(sub, 1000, &m), "next");
  ringbroker_msg_view_t v = view_of(m);
  printf("subjects: %.*s on %.*s\n", (int)v.payload_len, (const char *)v.payload,
         (int)v.subject_len, v.subject);
  ringbroker_msg_free(m);
  ringbroker_consumer_free(sub);
}

struct responder {
  ringbroker_t *h;
  ringbroker_consumer_t *sub;
};

/* Answers requests until its subscription has been quiet for half a second. */
static void *respond_loop(void *arg) {
  struct responder *r = arg;
  for (;;) {
    ringbroker_msg_t *m = NULL;
    ringbroker_status s = ringbroker_next(r->sub, 500, &m);
    if (s == RINGBROKER_TIMEOUT) return NULL;
    check(s, "responder next");
    const char *answer = "12:00";
    check(ringbroker_respond(r->h, m, (const uint8_t *)answer, strlen(answer)), "respond");
    ringbroker_msg_free(m);
  }
}

static void request_reply(ringbroker_t *h) {
  struct responder r = {h, NULL};
  check(ringbroker_subscribe(h, "time.now", "clocks", &r.sub), "subscribe");
  pthread_t t;
  if (pthread_create(&t, NULL, respond_loop, &r) != 0) exit(1);
  ringbroker_msg_t *reply = NULL;
  check(ringbroker_request(h, "time.now", NULL, 0, 1000, &reply), "request");
  ringbroker_msg_view_t v = view_of(reply);
  printf("request-reply: the time is %.*s\n", (int)v.payload_len, (const char *)v.payload);
  ringbroker_msg_free(reply);
  pthread_join(t, NULL);
  ringbroker_consumer_free(r.sub);

  /* Nobody listens on "time.later": the request fails at once, not after a timeout. */
  ringbroker_status s = ringbroker_request(h, "time.later", NULL, 0, 1000, &reply);
  printf("request-reply: with no responder: %s\n", ringbroker_status_name(s));
}

static void streams(ringbroker_t *h) {
  ringbroker_config *c = NULL;
  check(ringbroker_config_new(&c), "config_new");
  check(ringbroker_config_set(c, "name", "orders"), "config_set");
  check(ringbroker_config_set(c, "subjects", "orders.>"), "config_set");
  check(ringbroker_config_set(c, "partitions", "2"), "config_set");
  check(ringbroker_config_set(c, "durability", "always"), "config_set");
  check(ringbroker_stream_create(h, c), "stream_create"); /* idempotent */
  ringbroker_config_free(c);

  const char *customers[] = {"alice", "bob", "alice"};
  ringbroker_record records[3];
  char bodies[3][32];
  for (int i = 0; i < 3; i++) {
    snprintf(bodies[i], sizeof bodies[i], "order %d of %s", i, customers[i]);
    records[i] = (ringbroker_record){
        .subject = "orders.created",
        .key = (const uint8_t *)customers[i],
        .key_len = strlen(customers[i]),
        .payload = (const uint8_t *)bodies[i],
        .payload_len = strlen(bodies[i]),
    };
  }
  ringbroker_publish_result results[3];
  check(ringbroker_stream_publish(h, records, 3, results), "stream_publish");
  for (int i = 0; i < 3; i++)
    printf("stream: stored %s at partition %u offset %llu\n", customers[i],
           results[i].partition, (unsigned long long)results[i].offset);

  check(ringbroker_config_new(&c), "config_new");
  check(ringbroker_config_set(c, "deliver", "all"), "config_set");
  ringbroker_consumer_t *consumer = NULL;
  check(ringbroker_stream_consume(h, "orders", NULL, c, &consumer), "stream_consume");
  ringbroker_config_free(c);
  /* A replay from the start sees every record ever stored (more on a second run).
     A fetch waits for the first message, then takes what is buffered; stop after
     200 ms with nothing new. Messages point into engine memory until freed. */
  ringbroker_msg_t *batch[64];
  size_t n = 0;
  do {
    check(ringbroker_fetch(consumer, batch, 64, &n, 200), "fetch");
    for (size_t i = 0; i < n; i++) {
      ringbroker_msg_view_t v = view_of(batch[i]);
      printf("stream: replayed p%u@%llu %.*s\n", v.partition, (unsigned long long)v.offset,
             (int)v.payload_len, (const char *)v.payload);
    }
    check(ringbroker_ack_batch(consumer, (const ringbroker_msg_t *const *)batch, n), "ack");
    for (size_t i = 0; i < n; i++) ringbroker_msg_free(batch[i]);
  } while (n > 0);
  ringbroker_consumer_free(consumer);
}

static void work_queue(ringbroker_t *h) {
  ringbroker_config *c = NULL;
  check(ringbroker_config_new(&c), "config_new");
  check(ringbroker_config_set(c, "name", "tasks"), "config_set");
  check(ringbroker_config_set(c, "durable", "true"), "config_set");
  check(ringbroker_queue_declare(h, c, NULL), "queue_declare");
  ringbroker_config_free(c);

  const char *task = "resize image 42";
  ringbroker_queue_msg msg = {
      .exchange = "", /* the default exchange routes by queue name */
      .routing_key = "tasks",
      .payload = (const uint8_t *)task,
      .payload_len = strlen(task),
      .persistent = true,
  };
  ringbroker_confirm confirm;
  check(ringbroker_exchange_publish(h, &msg, 1, 1, &confirm), "exchange_publish");
  printf("queue: published to %u queue(s)\n", confirm.queues);

  check(ringbroker_config_new(&c), "config_new");
  check(ringbroker_config_set(c, "prefetch", "1"), "config_set");
  ringbroker_consumer_t *worker = NULL;
  check(ringbroker_queue_consume(h, "tasks", c, &worker), "queue_consume");
  ringbroker_config_free(c);
  ringbroker_msg_t *m = NULL;
  check(ringbroker_next(worker, 1000, &m), "next");
  ringbroker_msg_view_t v = view_of(m);
  printf("queue: working on \"%.*s\" (tag %llu)\n", (int)v.payload_len,
         (const char *)v.payload, (unsigned long long)v.delivery_tag);
  check(ringbroker_ack(worker, m), "ack");
  ringbroker_msg_free(m);
  ringbroker_consumer_free(worker);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DATA_DIR | ringbroker://HOST:PORT\n", argv[0]);
    return 2;
  }
  printf("ringbroker %s (ABI %u)\n", ringbroker_version(), ringbroker_abi_version());
  ringbroker_t *h = open_broker(argv[1]);
  subjects(h);
  request_reply(h);
  streams(h);
  work_queue(h);
  check(ringbroker_close(h), "close");
  return 0;
}
