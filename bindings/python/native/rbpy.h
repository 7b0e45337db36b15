/*
 * rbpy.h: the C helpers the Python binding compiles into ringbroker._native next to
 * the library's own functions (bindings/python/ringbroker_build.py reads this file
 * the way it reads include/ringbroker.h, so the declarations cffi sees cannot drift
 * from these).
 *
 * They exist to cross the cffi boundary once per batch instead of once per message
 * or once per struct field: a Python attribute access on a cdata struct costs about
 * as much as a whole C call. They add no behaviour of their own: each is a loop over
 * calls of the public C ABI (docs/c-api.md).
 */
#ifndef RBPY_H
#define RBPY_H

#include <stddef.h>
#include <stdint.h>
#include "ringbroker.h"

/* The largest payload rbpy_fetch copies out (detaches); larger ones stay in the
 * engine's memory and are read in place. */
#define RBPY_DETACH_MAX 4096

/* rbpy_entry.reply_len of a message without a reply subject. */
#define RBPY_NO_REPLY 4294967295

/* What rbpy_fetch did with one fetched message. If `detached` is 0 the message is in
 * msgs[i], owned by the caller, and the lengths are 0. Otherwise the message was a
 * subject message without headers, now freed (msgs[i] is NULL), whose subject,
 * reply (unless reply_len is RBPY_NO_REPLY) and payload were copied, in that order,
 * to the batch's bytes right after the previous detached message's; with
 * `detached` RBPY_SAME_SUBJECT its subject is the previous detached message's and
 * was not copied again (its subject_len is 0). */
#define RBPY_NEW_SUBJECT 1
#define RBPY_SAME_SUBJECT 2
typedef struct rbpy_entry {
  uint32_t subject_len;
  uint32_t reply_len;
  uint32_t payload_len;
  uint32_t detached;
} rbpy_entry;

/* ringbroker_fetch (wait != 0, up to timeout_ms for the first message) or
 * ringbroker_try_fetch (wait == 0), then detaches what it can: every subject message
 * without headers whose payload is at most RBPY_DETACH_MAX bytes and whose subject,
 * reply and payload fit in what is left of bytes[0..bytes_cap]. Fills msgs[0..*count]
 * and entries[0..*count]; *bytes_used is how much of bytes the detached messages
 * took. Returns what the fetch returned (its messages are filled in either way). */
ringbroker_status rbpy_fetch(const ringbroker_consumer_t *consumer, int wait,
                             uint32_t timeout_ms, ringbroker_msg_t **msgs,
                             rbpy_entry *entries, size_t capacity, uint8_t *bytes,
                             size_t bytes_cap, size_t *count, size_t *bytes_used);

/* What rbpy_publish_packed returns, without publishing, when its packed arguments do
 * not add up (a caller's bug: the library's last error message is not set). */
#define RBPY_MISPACKED -1

/* ringbroker_publish_batch of `count` headerless messages given packed: `subjects`
 * holds the count subjects back to back, each followed by a NUL (subjects_len bytes
 * in all, the last NUL included); `payloads` holds the payloads back to back,
 * payload_lens[i] bytes each (payloads_len in all). `msgs` is the caller's array of
 * `count` messages to fill (zeroed), so that nothing is allocated here. Returns
 * RBPY_MISPACKED if the subjects or the lengths do not add up, else what
 * ringbroker_publish_batch returned. */
ringbroker_status rbpy_publish_packed(const ringbroker_t *handle, ringbroker_subject_msg *msgs,
                                      size_t count, const char *subjects,
                                      size_t subjects_len, const uint8_t *payloads,
                                      size_t payloads_len, const uint32_t *payload_lens);

/* A count of the calls in flight on one broker handle, kept in C so that the
 * binding's hottest call, rbpy_publish, takes no Python lock. (ringbroker/_cdata.py's
 * _Guard counts every other call; Broker.close waits for both counts to drain before
 * it closes the handle.) Zeroed memory is an open guard; only the functions below
 * touch it, with atomic operations. */
typedef struct rbpy_guard {
  int64_t users;
  int32_t closed;
} rbpy_guard;

/* What rbpy_publish returns, without publishing, once rbpy_guard_close was called. */
#define RBPY_CLOSED -2

/* ringbroker_publish inside `guard`: returns RBPY_CLOSED if the guard is closed, else
 * what ringbroker_publish returned. */
ringbroker_status rbpy_publish(rbpy_guard *guard, const ringbroker_t *handle,
                               const char *subject, const char *reply,
                               const uint8_t *payload, size_t payload_len);

/* Closes `guard` (later rbpy_publish calls return RBPY_CLOSED) and returns once no
 * call is inside it any more, sleeping 50 us between looks (the calls it waits for
 * do not block). Idempotent. */
void rbpy_guard_close(rbpy_guard *guard);

#endif
