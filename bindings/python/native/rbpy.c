/*
 * rbpy.c: the batch helpers of rbpy.h. Compiled into ringbroker._native; only the
 * public C ABI of include/ringbroker.h is used.
 */
#include <string.h>
#include <time.h>

#include "rbpy.h"

ringbroker_status rbpy_fetch(const ringbroker_consumer_t *consumer, int wait,
                             uint32_t timeout_ms, ringbroker_msg_t **msgs,
                             rbpy_entry *entries, size_t capacity, uint8_t *bytes,
                             size_t bytes_cap, size_t *count, size_t *bytes_used) {
  *count = 0;
  *bytes_used = 0;
  ringbroker_status status =
      wait ? ringbroker_fetch(consumer, msgs, capacity, count, timeout_ms)
           : ringbroker_try_fetch(consumer, msgs, capacity, count);
  if (bytes_cap >= UINT32_MAX) {
    bytes_cap = UINT32_MAX - 1;
  }
  size_t used = 0;
  const uint8_t *last_subject = NULL; /* the previous detached message's, in bytes */
  size_t last_subject_len = 0;
  for (size_t i = 0; i < *count; i++) {
    rbpy_entry *e = &entries[i];
    memset(e, 0, sizeof *e);
    ringbroker_msg_view_t v;
    if (ringbroker_msg_view(msgs[i], &v) != RINGBROKER_OK ||
        v.kind != RINGBROKER_MSG_SUBJECT || v.header_count != 0 ||
        v.payload_len > RBPY_DETACH_MAX) {
      continue;
    }
    int same = last_subject != NULL && v.subject_len == last_subject_len &&
               memcmp(last_subject, v.subject, v.subject_len) == 0;
    size_t subject_len = same ? 0 : v.subject_len; /* what is copied */
    /* Each length is checked against the room left before any is added, so no sum
     * can overflow; bytes_cap is below UINT32_MAX (clamped above), so each length
     * fits an entry's uint32_t and none equals RBPY_NO_REPLY. */
    size_t reply_len = v.reply ? v.reply_len : 0;
    size_t room = bytes_cap - used;
    if (subject_len > room || reply_len > room - subject_len ||
        v.payload_len > room - subject_len - reply_len) {
      continue;
    }
    uint8_t *at = bytes + used;
    if (!same) {
      memcpy(at, v.subject, subject_len);
      last_subject = at;
      last_subject_len = subject_len;
      at += subject_len;
    }
    if (reply_len) {
      memcpy(at, v.reply, reply_len);
      at += reply_len;
    }
    if (v.payload_len) {
      memcpy(at, v.payload, v.payload_len);
    }
    used += subject_len + reply_len + v.payload_len;
    e->subject_len = (uint32_t)subject_len;
    e->reply_len = v.reply ? (uint32_t)reply_len : (uint32_t)RBPY_NO_REPLY;
    e->payload_len = (uint32_t)v.payload_len;
    e->detached = same ? RBPY_SAME_SUBJECT : RBPY_NEW_SUBJECT;
    ringbroker_msg_free(msgs[i]);
    msgs[i] = NULL;
  }
  *bytes_used = used;
  return status;
}

ringbroker_status rbpy_publish_packed(const ringbroker_t *handle, ringbroker_subject_msg *msgs,
                                      size_t count, const char *subjects,
                                      size_t subjects_len, const uint8_t *payloads,
                                      size_t payloads_len, const uint32_t *payload_lens) {
  size_t s = 0, p = 0;
  for (size_t i = 0; i < count; i++) {
    const char *nul = s < subjects_len ? memchr(subjects + s, '\0', subjects_len - s) : NULL;
    if (nul == NULL || payload_lens[i] > payloads_len - p) {
      return RBPY_MISPACKED;
    }
    msgs[i].subject = subjects + s;
    s = (size_t)(nul - subjects) + 1;
    if (payload_lens[i]) {
      msgs[i].payload = payloads + p;
      msgs[i].payload_len = payload_lens[i];
      p += payload_lens[i];
    }
  }
  if (s != subjects_len || p != payloads_len) {
    return RBPY_MISPACKED;
  }
  return ringbroker_publish_batch(handle, msgs, count);
}

/* The guard is a Dekker-style handshake with sequentially consistent atomics: a
 * caller increments `users` and then reads `closed`; the closer sets `closed` and
 * then reads `users`. Either the caller sees the guard closed (and backs out) or the
 * closer sees the caller's call and waits for it: never both miss. */

ringbroker_status rbpy_publish(rbpy_guard *guard, const ringbroker_t *handle,
                               const char *subject, const char *reply,
                               const uint8_t *payload, size_t payload_len) {
  __atomic_add_fetch(&guard->users, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&guard->closed, __ATOMIC_SEQ_CST)) {
    __atomic_sub_fetch(&guard->users, 1, __ATOMIC_SEQ_CST);
    return RBPY_CLOSED;
  }
  ringbroker_status status = ringbroker_publish(handle, subject, reply, payload, payload_len);
  __atomic_sub_fetch(&guard->users, 1, __ATOMIC_SEQ_CST);
  return status;
}

void rbpy_guard_close(rbpy_guard *guard) {
  __atomic_store_n(&guard->closed, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&guard->users, __ATOMIC_SEQ_CST) > 0) {
    struct timespec pause = {0, 50 * 1000};
    nanosleep(&pause, NULL);
  }
}
