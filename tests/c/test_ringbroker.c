/*
 * The C API tested from C, against the committed include/ringbroker.h and the
 * library: every model embedded and (with RINGBROKER_TEST_URL set to a running
 * ringbrokerd) remote, the error paths, and one handle shared by several threads.
 *
 *   test_ringbroker <data-dir> embedded|remote
 *
 * Exits 0 when every check passed; prints each failed check and exits 1 otherwise.
 * Built and run by scripts/test-c (under ASan+UBSan, and remote under valgrind).
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime under -std=c11 */
#include "ringbroker.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;

#define CHECK(cond, ...)                                                        \
  do {                                                                          \
    if (!(cond)) {                                                              \
      __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);                       \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
      fprintf(stderr, __VA_ARGS__);                                             \
      fprintf(stderr, " (last error: %s)\n", ringbroker_last_error_message());  \
    }                                                                           \
  } while (0)

#define OK(call) CHECK((call) == RINGBROKER_OK, "%s", #call)
#define WAIT_MS 10000

static ringbroker_config *config_of(const char *const *pairs) {
  ringbroker_config *c = NULL;
  OK(ringbroker_config_new(&c));
  for (; pairs && pairs[0]; pairs += 2) OK(ringbroker_config_set(c, pairs[0], pairs[1]));
  return c;
}

static int payload_is(const ringbroker_msg_t *m, const char *text) {
  ringbroker_msg_view_t v;
  if (ringbroker_msg_view(m, &v) != RINGBROKER_OK) return 0;
  return v.payload_len == strlen(text) && memcmp(v.payload, text, v.payload_len) == 0;
}

/* Names carry the mode, so both modes can share one daemon's data. */
static const char *mode;
static char *named(char *buf, size_t len, const char *base) {
  snprintf(buf, len, "%s-%s", base, mode);
  return buf;
}

struct responder {
  ringbroker_t *h;
  ringbroker_consumer_t *c;
};

static void *respond_once(void *arg) {
  struct responder *r = arg;
  ringbroker_msg_t *request = NULL;
  OK(ringbroker_next(r->c, WAIT_MS, &request));
  if (request) {
    OK(ringbroker_respond(r->h, request, (const uint8_t *)"pong", 4));
    ringbroker_msg_free(request);
  }
  return NULL;
}

static void subjects(ringbroker_t *h) {
  char pattern[64], subject[64], service[64];
  snprintf(pattern, sizeof pattern, "c.%s.>", mode);
  snprintf(subject, sizeof subject, "c.%s.hello", mode);
  snprintf(service, sizeof service, "svc.%s.echo", mode);

  ringbroker_consumer_t *sub = NULL;
  OK(ringbroker_subscribe(h, pattern, NULL, &sub));
  ringbroker_msg_t *m = NULL;
  CHECK(ringbroker_try_next(sub, &m) == RINGBROKER_WOULD_BLOCK && m == NULL, "nothing yet");
  OK(ringbroker_publish(h, subject, NULL, (const uint8_t *)"hi", 2));
  int fd = -1;
  OK(ringbroker_consumer_fd(sub, &fd));
  struct pollfd p = {.fd = fd, .events = POLLIN};
  CHECK(poll(&p, 1, WAIT_MS) == 1, "the fd turns readable after a publish");
  ringbroker_msg_t *batch[8];
  size_t n = 0;
  OK(ringbroker_fetch(sub, batch, 8, &n, WAIT_MS));
  CHECK(n == 1 && payload_is(batch[0], "hi"), "fetched %zu", n);
  if (n == 1) {
    ringbroker_msg_view_t v;
    OK(ringbroker_msg_view(batch[0], &v));
    CHECK(v.kind == RINGBROKER_MSG_SUBJECT && v.subject_len == strlen(subject) &&
              memcmp(v.subject, subject, v.subject_len) == 0,
          "the subject");
    CHECK(ringbroker_ack(sub, batch[0]) == RINGBROKER_WRONG_KIND, "subjects take no ack");
  }
  for (size_t i = 0; i < n; i++) ringbroker_msg_free(batch[i]);
  OK(ringbroker_try_fetch(sub, batch, 8, &n));
  CHECK(n == 0, "nothing more: %zu", n);

  struct responder r = {h, NULL};
  OK(ringbroker_subscribe(h, service, "workers", &r.c));
  pthread_t t;
  pthread_create(&t, NULL, respond_once, &r);
  ringbroker_msg_t *reply = NULL;
  OK(ringbroker_request(h, service, (const uint8_t *)"ping", 4, WAIT_MS, &reply));
  CHECK(reply && payload_is(reply, "pong"), "the reply");
  ringbroker_msg_free(reply);
  pthread_join(t, NULL);
  ringbroker_consumer_free(r.c);

  reply = NULL;
  CHECK(ringbroker_request(h, "svc.nobody", NULL, 0, 1000, &reply) == RINGBROKER_NO_RESPONDERS,
        "no responders");
  CHECK(reply == NULL, "no reply object on failure");
  ringbroker_consumer_free(sub);
}

/* Waits on the handle's completion fd for `want` completions. */
static size_t completions(ringbroker_t *h, ringbroker_completion *done, size_t want) {
  int cfd = -1;
  OK(ringbroker_completions_fd(h, &cfd));
  struct pollfd p = {.fd = cfd, .events = POLLIN};
  size_t got = 0;
  while (got < want && poll(&p, 1, WAIT_MS) == 1) {
    size_t n = 0;
    OK(ringbroker_completions_poll(h, done + got, want - got, &n));
    got += n;
  }
  return got;
}

static void subject_batches_and_async_requests(ringbroker_t *h) {
  char pattern[64], subject[64], other[64], service[64];
  snprintf(pattern, sizeof pattern, "cb.%s.>", mode);
  snprintf(subject, sizeof subject, "cb.%s.x", mode);
  snprintf(other, sizeof other, "cb.%s.y", mode);
  snprintf(service, sizeof service, "svc.%s.async", mode);

  ringbroker_consumer_t *sub = NULL;
  OK(ringbroker_subscribe(h, pattern, NULL, &sub));
  ringbroker_header hdr = {.name = "trace", .value = (const uint8_t *)"t1", .value_len = 2};
  ringbroker_subject_msg batch[3] = {
      {.subject = subject, .payload = (const uint8_t *)"a", .payload_len = 1},
      {.subject = other, .headers = &hdr, .headers_len = 1,
       .payload = (const uint8_t *)"b", .payload_len = 1},
      {.subject = subject, .reply = "cb.answers", .payload = (const uint8_t *)"c",
       .payload_len = 1},
  };
  OK(ringbroker_publish_batch(h, batch, 3));
  /* Singles too, switching subjects (the library reuses a thread's last subject). */
  OK(ringbroker_publish(h, subject, NULL, (const uint8_t *)"d", 1));
  OK(ringbroker_publish(h, other, NULL, (const uint8_t *)"e", 1));
  OK(ringbroker_publish(h, subject, NULL, (const uint8_t *)"f", 1));
  CHECK(ringbroker_publish(h, "cb.bad subject", NULL, NULL, 0) == RINGBROKER_INVALID_ARGUMENT,
        "an invalid subject after valid ones");
  const char *want[] = {"a", "b", "c", "d", "e", "f"};
  const char *on[] = {subject, other, subject, subject, other, subject};
  for (int i = 0; i < 6; i++) {
    ringbroker_msg_t *m = NULL;
    OK(ringbroker_next(sub, WAIT_MS, &m));
    CHECK(m && payload_is(m, want[i]), "message %d in order", i);
    if (m) {
      ringbroker_msg_view_t v;
      OK(ringbroker_msg_view(m, &v));
      CHECK(v.subject_len == strlen(on[i]) && memcmp(v.subject, on[i], v.subject_len) == 0,
            "message %d on %s", i, on[i]);
    }
    if (m && i == 1) {
      const uint8_t *name = NULL, *value = NULL;
      size_t name_len = 0, value_len = 0;
      OK(ringbroker_msg_header(m, 0, &name, &name_len, &value, &value_len));
      CHECK(name_len == 5 && memcmp(name, "trace", 5) == 0 && value_len == 2 &&
                memcmp(value, "t1", 2) == 0,
            "the batch header");
    }
    if (m && i == 2) {
      ringbroker_msg_view_t v;
      OK(ringbroker_msg_view(m, &v));
      CHECK(v.reply_len == 10 && memcmp(v.reply, "cb.answers", 10) == 0, "the reply subject");
    }
    ringbroker_msg_free(m);
  }
  /* A batch over the server's frame limit (16 MiB by default) is refused whole
     remotely, and the connection stays usable; embedded there is no frame. */
  {
    size_t big_len = 1u << 20;
    uint8_t *big = calloc(big_len, 1);
    ringbroker_subject_msg huge[17];
    for (int i = 0; i < 17; i++)
      huge[i] = (ringbroker_subject_msg){.subject = "cb.nobody", .payload = big,
                                         .payload_len = big_len};
    ringbroker_status s = ringbroker_publish_batch(h, huge, 17);
    if (strcmp(mode, "remote") == 0)
      CHECK(s == RINGBROKER_FRAME_TOO_LARGE, "a 17 MiB batch remotely (status %s)",
            ringbroker_status_name(s));
    else
      CHECK(s == RINGBROKER_OK, "a 17 MiB batch embedded (status %s)", ringbroker_status_name(s));
    free(big);
    OK(ringbroker_publish(h, subject, NULL, (const uint8_t *)"after", 5));
    ringbroker_msg_t *m = NULL;
    OK(ringbroker_next(sub, WAIT_MS, &m));
    CHECK(m && payload_is(m, "after"), "the handle still works after the refusal");
    ringbroker_msg_free(m);
  }

  /* One bad message refuses the whole batch: nothing is published. */
  batch[1].subject = "bad subject";
  CHECK(ringbroker_publish_batch(h, batch, 3) == RINGBROKER_INVALID_ARGUMENT, "a bad subject");
  CHECK(ringbroker_publish_batch(h, NULL, 1) == RINGBROKER_INVALID_ARGUMENT, "NULL msgs");
  OK(ringbroker_publish_batch(h, NULL, 0));
  ringbroker_msg_t *m = NULL;
  CHECK(ringbroker_next(sub, 200, &m) == RINGBROKER_TIMEOUT && m == NULL,
        "nothing of a refused batch arrives");
  ringbroker_consumer_free(sub);

  /* Asynchronous requests: a reply, no responders, a timeout, each one completion. */
  struct responder r = {h, NULL};
  OK(ringbroker_subscribe(h, service, NULL, &r.c));
  pthread_t t;
  pthread_create(&t, NULL, respond_once, &r);
  OK(ringbroker_request_async(h, service, (const uint8_t *)"ping", 4, WAIT_MS, 7));
  ringbroker_completion done[1];
  CHECK(completions(h, done, 1) == 1, "the request completes");
  CHECK(done[0].token == 7 && done[0].status == RINGBROKER_OK && done[0].reply &&
            payload_is(done[0].reply, "pong"),
        "the reply in the completion (status %d)", done[0].status);
  ringbroker_msg_free(done[0].reply);
  pthread_join(t, NULL);

  OK(ringbroker_request_async(h, "svc.nobody", NULL, 0, WAIT_MS, 8));
  CHECK(completions(h, done, 1) == 1 && done[0].token == 8 &&
            done[0].status == RINGBROKER_NO_RESPONDERS && done[0].reply == NULL &&
            done[0].message != NULL,
        "no responders (status %d)", done[0].status);
  OK(ringbroker_request_async(h, service, NULL, 0, 100, 9));
  CHECK(completions(h, done, 1) == 1 && done[0].token == 9 &&
            done[0].status == RINGBROKER_TIMEOUT && done[0].reply == NULL,
        "a timeout (status %d)", done[0].status);
  CHECK(ringbroker_request_async(h, service, NULL, 0, -1, 10) == RINGBROKER_INVALID_ARGUMENT,
        "a request needs a timeout");
  ringbroker_consumer_free(r.c);
}

static void streams(ringbroker_t *h) {
  char name[64], subjects[64], subject[64];
  named(name, sizeof name, "corders");
  snprintf(subjects, sizeof subjects, "corders.%s.>", mode);
  snprintf(subject, sizeof subject, "corders.%s.eu", mode);
  const char *def[] = {"name", name, "subjects", subjects, "partitions", "2", NULL};
  ringbroker_config *c = config_of(def);
  OK(ringbroker_stream_create(h, c));
  OK(ringbroker_stream_create(h, c)); /* idempotent */
  ringbroker_config_free(c);

  ringbroker_header headers[1] = {{"Msg-Id", (const uint8_t *)"id-1", 4}};
  ringbroker_record records[3];
  for (int i = 0; i < 3; i++) {
    records[i] = (ringbroker_record){.subject = subject,
                                     .key = (const uint8_t *)"k",
                                     .key_len = 1,
                                     .payload = (const uint8_t *)"rec",
                                     .payload_len = 3};
  }
  records[0].headers = headers;
  records[0].headers_len = 1;
  ringbroker_publish_result results[3];
  OK(ringbroker_stream_publish(h, records, 3, results));
  CHECK(results[0].status == RINGBROKER_OK && results[2].offset == results[0].offset + 2,
        "offsets in order under one key: %llu %llu", (unsigned long long)results[0].offset,
        (unsigned long long)results[2].offset);
  ringbroker_publish_result again;
  OK(ringbroker_stream_publish(h, records, 1, &again));
  CHECK(again.duplicate, "a second Msg-Id id-1 is a duplicate");

  /* Asynchronous: completions on the handle's fd. */
  OK(ringbroker_stream_publish_async(h, records + 1, 2, 42));
  int cfd = -1;
  OK(ringbroker_completions_fd(h, &cfd));
  struct pollfd p = {.fd = cfd, .events = POLLIN};
  size_t got = 0;
  ringbroker_completion done[4];
  while (got < 2 && poll(&p, 1, WAIT_MS) == 1) {
    size_t n = 0;
    OK(ringbroker_completions_poll(h, done + got, 4 - got, &n));
    got += n;
  }
  CHECK(got == 2 && done[0].token == 42 && done[1].index == 1 &&
            done[1].status == RINGBROKER_OK,
        "two completions for token 42 (got %zu)", got);
  OK(ringbroker_stream_publish_nowait(h, records + 1, 1));

  ringbroker_stream_info_t info;
  OK(ringbroker_stream_info(h, name, &info));
  CHECK(info.partitions == 2, "partitions %u", info.partitions);

  const char *durable[] = {"durable", "billing", "ack_wait_ms", "60000", NULL};
  c = config_of(durable);
  OK(ringbroker_consumer_create(h, name, c));
  ringbroker_config_free(c);
  ringbroker_consumer_t *billing = NULL;
  OK(ringbroker_stream_consume(h, name, "billing", NULL, &billing));
  ringbroker_msg_t *msgs[16];
  size_t n = 0, total = 0;
  ringbroker_msg_t *held[16];
  while (total < 6) {
    OK(ringbroker_fetch(billing, msgs, 16, &n, WAIT_MS));
    if (n == 0) break;
    for (size_t i = 0; i < n && total < 16; i++) held[total++] = msgs[i];
  }
  CHECK(total == 6, "6 records stored (3 + 2 async + 1 nowait), got %zu", total);
  if (total > 0) {
    ringbroker_msg_view_t v;
    OK(ringbroker_msg_view(held[0], &v));
    CHECK(v.kind == RINGBROKER_MSG_STREAM && v.key_len == 1 && v.delivery_count == 1,
          "a stream record with its key");
    if (v.header_count == 1) {
      const uint8_t *hn, *hv;
      size_t hnl, hvl;
      OK(ringbroker_msg_header(held[0], 0, &hn, &hnl, &hv, &hvl));
      CHECK(hvl == 4 && memcmp(hv, "id-1", 4) == 0, "the header's value");
    }
    CHECK(ringbroker_msg_header(held[0], 5, &(const uint8_t *){0}, &(size_t){0},
                                &(const uint8_t *){0}, &(size_t){0}) ==
              RINGBROKER_INVALID_ARGUMENT,
          "a header index out of range");
    OK(ringbroker_nack(billing, held[0], 0, 0));
    OK(ringbroker_ack_batch(billing, (const ringbroker_msg_t *const *)held + 1, total - 1));
    ringbroker_msg_t *redelivered = NULL;
    OK(ringbroker_next(billing, WAIT_MS, &redelivered));
    if (redelivered) {
      OK(ringbroker_msg_view(redelivered, &v));
      CHECK(v.delivery_count == 2, "the nacked record again: count %u", v.delivery_count);
      OK(ringbroker_commit(billing, redelivered));
      ringbroker_msg_free(redelivered);
    }
  }
  for (size_t i = 0; i < total; i++) ringbroker_msg_free(held[i]);
  ringbroker_consumer_info_t cinfo;
  OK(ringbroker_consumer_info(h, name, "billing", &cinfo));
  ringbroker_consumer_free(billing);

  CHECK(ringbroker_stream_consume(h, "no-such-stream", "billing", NULL, &billing) ==
            RINGBROKER_NOT_FOUND,
        "unknown stream");
  const char *bad[] = {"name", "x", "subjects", "y.>", "colour", "red", NULL};
  c = config_of(bad);
  CHECK(ringbroker_stream_create(h, c) == RINGBROKER_INVALID_ARGUMENT, "unknown key");
  CHECK(strstr(ringbroker_last_error_message(), "colour") != NULL, "the message names it");
  ringbroker_config_free(c);
  OK(ringbroker_stream_delete(h, name));
}

static void queues(ringbroker_t *h) {
  char exchange[64], queue[64];
  named(exchange, sizeof exchange, "cevents");
  named(queue, sizeof queue, "cjobs");
  const char *ex[] = {"name", exchange, "kind", "topic", NULL};
  ringbroker_config *c = config_of(ex);
  OK(ringbroker_exchange_declare(h, c));
  ringbroker_config_free(c);
  const char *q[] = {"name", queue, "max_priority", "5", NULL};
  c = config_of(q);
  ringbroker_queue_info_t info;
  OK(ringbroker_queue_declare(h, c, &info));
  ringbroker_config_free(c);
  OK(ringbroker_queue_bind(h, queue, exchange, "jobs.#", NULL, 0));

  /* Exchange-to-exchange: bound, unbound, and unbinding twice is NOT_FOUND. */
  char upstream[64];
  named(upstream, sizeof upstream, "cupstream");
  const char *up[] = {"name", upstream, "kind", "fanout", NULL};
  c = config_of(up);
  OK(ringbroker_exchange_declare(h, c));
  ringbroker_config_free(c);
  OK(ringbroker_exchange_bind(h, exchange, upstream, "", NULL, 0));
  OK(ringbroker_exchange_unbind(h, exchange, upstream, "", NULL, 0));
  CHECK(ringbroker_exchange_unbind(h, exchange, upstream, "", NULL, 0) == RINGBROKER_NOT_FOUND,
        "an exchange binding removed twice");

  ringbroker_queue_msg m = {.exchange = exchange,
                            .routing_key = "jobs.eu",
                            .payload = (const uint8_t *)"job",
                            .payload_len = 3,
                            .priority = 3,
                            .persistent = true};
  ringbroker_queue_msg msgs[2] = {m, m};
  ringbroker_confirm confirms[2];
  OK(ringbroker_exchange_publish(h, msgs, 2, 1, confirms));
  CHECK(confirms[0].queues == 1 && confirms[1].queues == 1, "each reached one queue");
  ringbroker_queue_msg lost = m;
  lost.routing_key = "nowhere";
  CHECK(ringbroker_exchange_publish(h, &lost, 1, 1, confirms) == RINGBROKER_UNROUTABLE,
        "mandatory and unroutable");

  const char *opts[] = {"prefetch", "1", NULL};
  c = config_of(opts);
  ringbroker_consumer_t *jobs = NULL;
  OK(ringbroker_queue_consume(h, queue, c, &jobs));
  ringbroker_config_free(c);
  ringbroker_msg_t *d = NULL;
  OK(ringbroker_next(jobs, WAIT_MS, &d));
  if (d) {
    ringbroker_msg_view_t v;
    OK(ringbroker_msg_view(d, &v));
    CHECK(v.kind == RINGBROKER_MSG_QUEUE && v.priority == 3 && v.persistent,
          "a queue delivery with its properties");
    CHECK(ringbroker_nack(jobs, d, 5, 1) == RINGBROKER_INVALID_ARGUMENT, "no delay on queues");
    OK(ringbroker_nack(jobs, d, 0, 1));
    ringbroker_msg_free(d);
  }
  d = NULL;
  OK(ringbroker_next(jobs, WAIT_MS, &d));
  if (d) {
    ringbroker_msg_view_t v;
    OK(ringbroker_msg_view(d, &v));
    CHECK(v.redelivered, "requeued, then redelivered");
    OK(ringbroker_queue_ack(jobs, v.delivery_tag, 0));
    ringbroker_msg_free(d);
  }
  d = NULL;
  OK(ringbroker_next(jobs, WAIT_MS, &d));
  if (d) OK(ringbroker_ack(jobs, d));
  ringbroker_msg_free(d);
  CHECK(ringbroker_commit(jobs, NULL) == RINGBROKER_INVALID_ARGUMENT, "NULL msg");
  ringbroker_consumer_free(jobs);
  OK(ringbroker_queue_info(h, queue, &info));
  CHECK(info.messages == 0, "all acknowledged: %llu left", (unsigned long long)info.messages);
  uint64_t ready = 99;
  OK(ringbroker_queue_delete(h, queue, 0, 0, &ready));
  OK(ringbroker_exchange_delete(h, exchange, 0));
}

static void null_arguments(ringbroker_t *h) {
  ringbroker_msg_t *m = NULL;
  CHECK(ringbroker_publish(NULL, "a", NULL, NULL, 0) == RINGBROKER_INVALID_ARGUMENT, "NULL handle");
  CHECK(ringbroker_publish(h, NULL, NULL, NULL, 0) == RINGBROKER_INVALID_ARGUMENT, "NULL subject");
  CHECK(ringbroker_publish(h, "a", NULL, NULL, 5) == RINGBROKER_INVALID_ARGUMENT,
        "NULL payload with a length");
  CHECK(ringbroker_publish(h, "bad subject", NULL, NULL, 0) == RINGBROKER_INVALID_ARGUMENT,
        "an invalid subject");
  CHECK(ringbroker_next(NULL, 0, &m) == RINGBROKER_INVALID_ARGUMENT, "NULL consumer");
  CHECK(ringbroker_msg_view(NULL, NULL) == RINGBROKER_INVALID_ARGUMENT, "NULL msg");
  CHECK(ringbroker_stream_create(h, NULL) == RINGBROKER_INVALID_ARGUMENT, "NULL config");
  CHECK(ringbroker_open(NULL, NULL) == RINGBROKER_INVALID_ARGUMENT, "NULL open");
  CHECK(ringbroker_config_set(NULL, "a", "b") == RINGBROKER_INVALID_ARGUMENT, "NULL config");
  CHECK(strlen(ringbroker_last_error_message()) > 0, "a message for the last failure");
  ringbroker_msg_free(NULL);
  ringbroker_consumer_free(NULL);
  ringbroker_config_free(NULL);
  CHECK(ringbroker_close(NULL) == RINGBROKER_OK, "closing NULL is a no-op");
  ringbroker_consumer_t *sub = NULL;
  OK(ringbroker_subscribe(h, "quiet.>", NULL, &sub));
  CHECK(ringbroker_next(sub, 50, &m) == RINGBROKER_TIMEOUT && m == NULL, "timeout");
  ringbroker_consumer_free(sub);
  CHECK(strcmp(ringbroker_status_name(RINGBROKER_NOT_FOUND), "NOT_FOUND") == 0, "names");
  CHECK(strcmp(ringbroker_status_name(12345), "UNKNOWN") == 0, "unknown names");
}

#define THREADS 4
#define PER_THREAD 500

static void *publisher(void *arg) {
  ringbroker_t *h = arg;
  char subject[64];
  snprintf(subject, sizeof subject, "threads.%s.x", mode);
  for (int i = 0; i < PER_THREAD; i++) {
    ringbroker_status s;
    do {
      s = ringbroker_publish(h, subject, NULL, (const uint8_t *)"t", 1);
    } while (s == RINGBROKER_BACKPRESSURE);
    CHECK(s == RINGBROKER_OK, "publish from a thread");
  }
  return NULL;
}

static void threads(ringbroker_t *h) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "threads.%s.*", mode);
  ringbroker_consumer_t *sub = NULL;
  OK(ringbroker_subscribe(h, pattern, NULL, &sub));
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, publisher, h);
  size_t got = 0;
  ringbroker_msg_t *batch[64];
  while (got < THREADS * PER_THREAD) {
    size_t n = 0;
    if (ringbroker_fetch(sub, batch, 64, &n, WAIT_MS) != RINGBROKER_OK || n == 0) break;
    for (size_t i = 0; i < n; i++) ringbroker_msg_free(batch[i]);
    got += n;
  }
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  CHECK(got == THREADS * PER_THREAD, "every message from %d threads: %zu", THREADS, got);
  ringbroker_consumer_free(sub);
}

/* A fetch whose wait expired arms the fd like a try_fetch that found nothing. */
static void fetch_timeout_arms_the_fd(ringbroker_t *h) {
  char subject[64];
  snprintf(subject, sizeof subject, "arm.%s.x", mode);
  ringbroker_consumer_t *sub = NULL;
  OK(ringbroker_subscribe(h, subject, NULL, &sub));
  ringbroker_msg_t *msgs[8];
  size_t n = 9;
  OK(ringbroker_fetch(sub, msgs, 8, &n, 50));
  CHECK(n == 0, "nothing to fetch yet (%zu)", n);
  OK(ringbroker_publish(h, subject, NULL, (const uint8_t *)"late", 4));
  int fd = -1;
  OK(ringbroker_consumer_fd(sub, &fd));
  struct pollfd p = {.fd = fd, .events = POLLIN};
  CHECK(poll(&p, 1, WAIT_MS) == 1, "the fd turns readable after a fetch timed out");
  OK(ringbroker_try_fetch(sub, msgs, 8, &n));
  CHECK(n == 1 && payload_is(msgs[0], "late"), "the late message (%zu)", n);
  for (size_t i = 0; i < n; i++) ringbroker_msg_free(msgs[i]);
  ringbroker_consumer_free(sub);
}

struct blaster {
  ringbroker_t *h;
  const char *subject;
  volatile int stop;
};

static void *blast(void *arg) {
  struct blaster *b = arg;
  ringbroker_subject_msg m[16];
  memset(m, 0, sizeof m);
  for (int i = 0; i < 16; i++) {
    m[i].subject = b->subject;
    m[i].payload = (const uint8_t *)"x";
    m[i].payload_len = 1;
  }
  for (unsigned long k = 0; !__atomic_load_n(&b->stop, __ATOMIC_SEQ_CST); k++) {
    ringbroker_status s = ringbroker_publish_batch(b->h, m, 1 + k % 16);
    if (s != RINGBROKER_OK && s != RINGBROKER_BACKPRESSURE) break;
    if (k % 64 == 0) {
      struct timespec pause = {0, 50000};
      nanosleep(&pause, NULL);
    }
  }
  return NULL;
}

/* An event loop as docs/c-api.md describes it (drain with try_fetch until short, then
   wait on the fd) while a thread publishes without pause: the fd must never stay
   quiet for a second while messages keep coming (a lost wake-up). */
static void event_loop_never_stalls(ringbroker_t *h) {
  char subject[64];
  snprintf(subject, sizeof subject, "loop.%s.x", mode);
  ringbroker_consumer_t *sub = NULL;
  OK(ringbroker_subscribe(h, subject, NULL, &sub));
  int fd = -1;
  OK(ringbroker_consumer_fd(sub, &fd));
  struct blaster b = {h, subject, 0};
  pthread_t t;
  pthread_create(&t, NULL, blast, &b);
  unsigned long got = 0, stalls = 0;
  time_t end = time(NULL) + 2;
  ringbroker_msg_t *msgs[64];
  while (time(NULL) < end && stalls == 0) {
    size_t n = 0;
    do {
      if (ringbroker_try_fetch(sub, msgs, 64, &n) != RINGBROKER_OK) break;
      for (size_t i = 0; i < n; i++) ringbroker_msg_free(msgs[i]);
      got += n;
    } while (n == 64);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 1000) == 0) stalls++;
  }
  __atomic_store_n(&b.stop, 1, __ATOMIC_SEQ_CST);
  pthread_join(t, NULL);
  CHECK(stalls == 0 && got > 0, "no lost wake-up (%lu messages, %lu stalls)", got, stalls);
  ringbroker_consumer_free(sub);
}

/* Closing an embedded broker ends its queue consumers: a receive fails at once. */
static void close_ends_queue_consumers(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s-closing", dir);
  const char *def[] = {"data_dir", path, "shards", "2", "pin_to_cores", "false", NULL};
  ringbroker_config *c = config_of(def);
  ringbroker_t *h = NULL;
  OK(ringbroker_open(c, &h));
  ringbroker_config_free(c);
  if (!h) return;
  const char *q[] = {"name", "closing", NULL};
  c = config_of(q);
  OK(ringbroker_queue_declare(h, c, NULL));
  ringbroker_config_free(c);
  ringbroker_consumer_t *consumer = NULL;
  OK(ringbroker_queue_consume(h, "closing", NULL, &consumer));
  OK(ringbroker_close(h));
  ringbroker_msg_t *m = NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ringbroker_status s = ringbroker_next(consumer, 5000, &m);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  CHECK(s != RINGBROKER_OK && s != RINGBROKER_TIMEOUT && waited < 1.0,
        "a queue consumer of a closed broker ends (status %s after %.2f s)",
        ringbroker_status_name(s), waited);
  ringbroker_consumer_free(consumer);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <data-dir> embedded|remote\n", argv[0]);
    return 2;
  }
  mode = argv[2];
  CHECK(ringbroker_abi_version() == RINGBROKER_ABI_VERSION, "ABI version");
  ringbroker_t *h = NULL;
  if (strcmp(mode, "embedded") == 0) {
    const char *def[] = {"data_dir", argv[1], "shards", "2", "pin_to_cores", "false", NULL};
    ringbroker_config *c = config_of(def);
    OK(ringbroker_open(c, &h));
    CHECK(ringbroker_open(c, &(ringbroker_t *){NULL}) == RINGBROKER_LOCKED, "one per dir");
    ringbroker_config_free(c);
  } else {
    const char *url = getenv("RINGBROKER_TEST_URL");
    if (!url) {
      fprintf(stderr, "remote mode needs RINGBROKER_TEST_URL\n");
      return 2;
    }
    const char *def[] = {"reconnect", "false", NULL};
    ringbroker_config *c = config_of(def);
    OK(ringbroker_connect(url, c, &h));
    ringbroker_config_free(c);
    CHECK(ringbroker_connect("ringbroker://127.0.0.1:1", NULL, &(ringbroker_t *){NULL}) ==
              RINGBROKER_DISCONNECTED,
          "nothing listens on port 1");
  }
  if (!h) return 1;
  CHECK(ringbroker_is_embedded(h) == (strcmp(mode, "embedded") == 0), "mode");
  subjects(h);
  subject_batches_and_async_requests(h);
  streams(h);
  queues(h);
  null_arguments(h);
  threads(h);
  fetch_timeout_arms_the_fd(h);
  event_loop_never_stalls(h);
  OK(ringbroker_close(h));
  if (strcmp(mode, "embedded") == 0) close_ends_queue_consumers(argv[1]);
  if (failures) {
    fprintf(stderr, "%d check(s) failed (%s)\n", failures, mode);
    return 1;
  }
  printf("C API %s: all checks passed\n", mode);
  return 0;
}
