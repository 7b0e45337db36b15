/*
 * ringbroker's Node-API addon: a thin layer over include/ringbroker.h.
 *
 * Owns: the native side of each Broker (the ringbroker_t, a uv_poll on its completion
 * eventfd) and of each Consumer (the ringbroker_consumer_t, a uv_poll on its eventfd),
 * and every received ringbroker_msg_t until its Message is collected (JavaScript only
 * ever gets copies of engine memory, and arguments a pool thread reads later are
 * copied too). Never: blocks the event loop. Calls that may wait (open, connect,
 * close, definitions, consumer creation) run on libuv's thread pool as
 * napi_async_work and settle a Promise; the data path (publishes, try_fetch, acks,
 * completions) only uses the C API's non-blocking calls on the JavaScript thread.
 *
 * Policy lives in lib/index.js (iterators, high-water marks, tokens to Promises);
 * this file converts values and keeps native lifetimes straight.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>
#include <uv.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ringbroker.h"

/* The most completions taken per ringbroker_completions_poll call. */
#define COMPLETIONS_BATCH_MAX 256
/* The most messages one fetch() takes (the JavaScript side asks for less). */
#define FETCH_BATCH_MAX 1024
/* fetch()'s packing (see js_fetch): the largest payload packed, the reply length
 * that means "no reply", and how a packed message's subject is given. Keep equal to
 * lib/index.js's PACK_* constants. */
#define PACK_PAYLOAD_MAX (16u << 10)
#define PACK_NO_REPLY 0xFFFFFFFFu
#define PACK_NEW_SUBJECT 1u
#define PACK_SAME_SUBJECT 2u
/* The longest subject publish() reads into its stack frame (the library's limit). */
#define SUBJECT_STACK 1024
/* The longest string argument copied for a call (longer is a caller's bug). */
#define STRING_BYTES_MAX (1u << 20)

/* ------------------------------------------------------------------------------ */
/* Per-environment state                                                          */

typedef struct addon {
  napi_ref make_error;  /* (status, message) => Error subclass, from lib/errors.js */
  napi_ref message_ctor; /* class Message, from lib/index.js */
  int64_t messages_held; /* ringbroker_msg_t handed to JavaScript and not yet freed */
} addon_t;

static addon_t *addon_of(napi_env env) {
  void *data = NULL;
  napi_get_instance_data(env, &data);
  return data;
}

/* Returns the error object for `status` and `message` (a plain Error before setup). */
static napi_value make_error(napi_env env, ringbroker_status status, const char *message) {
  addon_t *a = addon_of(env);
  napi_value argv[2], fn, undefined, result = NULL;
  napi_create_int32(env, status, &argv[0]);
  napi_create_string_utf8(env, message ? message : "", NAPI_AUTO_LENGTH, &argv[1]);
  napi_get_undefined(env, &undefined);
  if (a && a->make_error && napi_get_reference_value(env, a->make_error, &fn) == napi_ok &&
      napi_call_function(env, undefined, fn, 2, argv, &result) == napi_ok)
    return result;
  napi_create_error(env, NULL, argv[1], &result);
  return result;
}

/* Throws the error of the call that just failed on this thread. */
static napi_value throw_status(napi_env env, ringbroker_status status) {
  napi_throw(env, make_error(env, status, ringbroker_last_error_message()));
  return NULL;
}

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return NULL;
}

#define NAPI_OK(env, call)                                        \
  do {                                                            \
    if ((call) != napi_ok) {                                      \
      bool pending_ = false;                                      \
      napi_is_exception_pending((env), &pending_);                \
      if (!pending_) napi_throw_error((env), NULL, #call " failed"); \
      return NULL;                                                \
    }                                                             \
  } while (0)

/* ------------------------------------------------------------------------------ */
/* Argument conversion; strings are copied into an arena freed after the call.    */

typedef struct arena {
  void **blocks;
  size_t len, cap;
} arena_t;

static void *arena_alloc(arena_t *ar, size_t bytes) {
  if (ar->len == ar->cap) {
    size_t cap = ar->cap ? ar->cap * 2 : 16;
    void **blocks = realloc(ar->blocks, cap * sizeof *blocks);
    if (!blocks) return NULL;
    ar->blocks = blocks;
    ar->cap = cap;
  }
  void *p = calloc(1, bytes ? bytes : 1);
  if (p) ar->blocks[ar->len++] = p;
  return p;
}

static void arena_free(arena_t *ar) {
  for (size_t i = 0; i < ar->len; i++) free(ar->blocks[i]);
  free(ar->blocks);
  ar->blocks = NULL;
  ar->len = ar->cap = 0;
}

static bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) != napi_ok || t == napi_undefined || t == napi_null;
}

/* A NUL-terminated copy of string `v` in `ar`; NULL (with a TypeError thrown) if `v`
 * is not a string, or NULL without an exception if it is null/undefined and
 * `optional`. */
static bool refuse_nul(napi_env env, const char *s, size_t len, const char *what);

static char *get_string(napi_env env, napi_value v, arena_t *ar, bool optional, const char *what) {
  if (optional && is_nullish(env, v)) return NULL;
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char text[160];
    snprintf(text, sizeof text, "%s must be a string", what);
    throw_type(env, text);
    return NULL;
  }
  if (len > STRING_BYTES_MAX) {
    napi_throw(env, make_error(env, RINGBROKER_INVALID_ARGUMENT, "a string argument is too long"));
    return NULL;
  }
  char *s = arena_alloc(ar, len + 1);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return refuse_nul(env, s, len, what) ? NULL : s;
}

/* Throws INVALID_ARGUMENT if the `len` bytes of string argument `s` hold a NUL: C
 * would read it cut short (a subject "a\0b" published to "a"). */
static bool refuse_nul(napi_env env, const char *s, size_t len, const char *what) {
  if (!memchr(s, 0, len)) return false;
  char text[160];
  snprintf(text, sizeof text, "%s holds a NUL character", what);
  napi_throw(env, make_error(env, RINGBROKER_INVALID_ARGUMENT, text));
  return true;
}

/* The bytes of Buffer/Uint8Array `v` (borrowed for the call); null/undefined give
 * (NULL, 0). Returns false with a TypeError thrown for anything else. */
static bool get_bytes(napi_env env, napi_value v, const uint8_t **data, size_t *len) {
  *data = NULL;
  *len = 0;
  if (is_nullish(env, v)) return true;
  bool is_typed = false;
  napi_is_typedarray(env, v, &is_typed);
  if (!is_typed) {
    throw_type(env, "data must be a Buffer, a Uint8Array or a string");
    return false;
  }
  napi_typedarray_type type;
  void *p = NULL;
  size_t length = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    throw_type(env, "data must be a Buffer or a Uint8Array");
    return false;
  }
  *data = length ? p : NULL;
  *len = length;
  return true;
}

static bool get_element(napi_env env, napi_value array, uint32_t i, napi_value *out) {
  return napi_get_element(env, array, i, out) == napi_ok;
}

static bool get_array_length(napi_env env, napi_value v, uint32_t *len) {
  bool is_array = false;
  napi_is_array(env, v, &is_array);
  if (!is_array) {
    throw_type(env, "expected an array");
    return false;
  }
  return napi_get_array_length(env, v, len) == napi_ok;
}

/* The bytes of Buffer/Uint8Array `v` copied into `ar` (for values read after the call
 * returns: a pool thread would race with JavaScript writing to `v`, or read it after
 * it was collected). Same arguments and errors as get_bytes. */
static bool get_bytes_copy(napi_env env, napi_value v, arena_t *ar, const uint8_t **data,
                           size_t *len) {
  const uint8_t *borrowed;
  if (!get_bytes(env, v, &borrowed, len)) return false;
  *data = NULL;
  if (*len == 0) return true;
  uint8_t *copy = arena_alloc(ar, *len);
  if (!copy) {
    napi_throw_error(env, NULL, "out of memory");
    return false;
  }
  memcpy(copy, borrowed, *len);
  *data = copy;
  return true;
}

/* Headers given as [[name, Buffer], ...] (null: none), names and values copied into
 * `ar`: they stay valid as long as `ar`, whatever JavaScript does with the Buffers
 * (bind jobs read them on a pool thread after the call returned). */
static bool get_headers(napi_env env, napi_value v, arena_t *ar, ringbroker_header **out,
                        size_t *count) {
  *out = NULL;
  *count = 0;
  if (is_nullish(env, v)) return true;
  uint32_t n = 0;
  if (!get_array_length(env, v, &n)) return false;
  if (n == 0) return true;
  ringbroker_header *h = arena_alloc(ar, n * sizeof *h);
  if (!h) {
    napi_throw_error(env, NULL, "out of memory");
    return false;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value pair, name, value;
    if (!get_element(env, v, i, &pair) || !get_element(env, pair, 0, &name) ||
        !get_element(env, pair, 1, &value))
      return false;
    h[i].name = get_string(env, name, ar, false, "a header name");
    if (!h[i].name) return false;
    if (!get_bytes_copy(env, value, ar, &h[i].value, &h[i].value_len)) return false;
  }
  *out = h;
  *count = n;
  return true;
}

/* A ringbroker_config from [[key, value], ...] (null: NULL config, no error). Throws
 * and returns false if a key or value is refused. */
static bool get_config(napi_env env, napi_value v, ringbroker_config **out) {
  *out = NULL;
  if (is_nullish(env, v)) return true;
  uint32_t n = 0;
  if (!get_array_length(env, v, &n)) return false;
  ringbroker_config *c = NULL;
  ringbroker_status s = ringbroker_config_new(&c);
  if (s != RINGBROKER_OK) {
    throw_status(env, s);
    return false;
  }
  arena_t ar = {0};
  for (uint32_t i = 0; i < n; i++) {
    napi_value pair, key, value;
    if (!get_element(env, v, i, &pair) || !get_element(env, pair, 0, &key) ||
        !get_element(env, pair, 1, &value))
      goto fail;
    char *k = get_string(env, key, &ar, false, "a config key");
    char *val = k ? get_string(env, value, &ar, false, "a config value") : NULL;
    if (!val) goto fail;
    s = ringbroker_config_set(c, k, val);
    if (s != RINGBROKER_OK) {
      throw_status(env, s);
      goto fail;
    }
  }
  arena_free(&ar);
  *out = c;
  return true;
fail:
  arena_free(&ar);
  ringbroker_config_free(c);
  return false;
}

static bool get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    throw_type(env, "expected a number");
    return false;
  }
  return true;
}

static bool get_bool(napi_env env, napi_value v) {
  bool b = false;
  napi_value coerced;
  if (napi_coerce_to_bool(env, v, &coerced) == napi_ok) napi_get_value_bool(env, coerced, &b);
  return b;
}

/* Reads `argc` arguments into `argv`. */
#define ARGS(n)                                                              \
  size_t argc = (n);                                                         \
  napi_value argv[(n) > 0 ? (n) : 1];                                        \
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));        \
  if (argc < (n)) return throw_type(env, "missing arguments")

/* ------------------------------------------------------------------------------ */
/* Messages: a ringbroker_msg_t behind a type-tagged external.                    */

/* What a held message is reported to V8 as, beyond its payload (the message's own
 * allocations: subject, headers, the box), so the collector sees engine memory. */
#define MSG_OVERHEAD_BYTES 256

typedef struct msg_ref {
  ringbroker_msg_t *msg;
  addon_t *addon;
  int64_t reported_bytes; /* told to V8 through napi_adjust_external_memory */
} msg_ref_t;

/* Frees the engine's message. Its only owner is the external in Message._ref: the
 * payload handed to JavaScript is a copy (see payload_buffer). */
static void msg_ref_free(napi_env env, msg_ref_t *m) {
  ringbroker_msg_free(m->msg);
  m->addon->messages_held--;
  int64_t total;
  if (env && m->reported_bytes) napi_adjust_external_memory(env, -m->reported_bytes, &total);
  free(m);
}

static void finalize_msg_ref(napi_env env, void *data, void *hint) {
  (void)hint;
  msg_ref_free(env, data);
}

/* Type tags of the externals this addon hands out, so that one kind is never read as
 * another (a consumer passed where a message is expected, ...). */
static const napi_type_tag MSG_TAG = {0x72696e6762726f6bULL, 0x6d73672d72656631ULL};
static const napi_type_tag BROKER_TAG = {0x72696e6762726f6bULL, 0x62726f6b65723031ULL};
static const napi_type_tag CONSUMER_TAG = {0x72696e6762726f6bULL, 0x636f6e73756d3031ULL};

/* An external over `data`, tagged `tag`; NULL (exception pending or thrown) on
 * failure, in which case the finalizer has not been attached and `data` is the
 * caller's to free. */
static napi_value tagged_external(napi_env env, void *data, napi_finalize finalize,
                                  const napi_type_tag *tag) {
  napi_value ext;
  if (napi_create_external(env, data, NULL, NULL, &ext) != napi_ok) return NULL;
  if (napi_type_tag_object(env, ext, tag) != napi_ok ||
      napi_add_finalizer(env, ext, data, finalize, NULL, NULL) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, NULL, "cannot tag an external");
    return NULL;
  }
  return ext;
}

/* The native struct behind `v` if it is an external tagged `tag`; NULL with a
 * TypeError "not a <what>" thrown otherwise. */
static void *untag(napi_env env, napi_value v, const napi_type_tag *tag, const char *what) {
  void *p = NULL;
  napi_valuetype t;
  bool tagged = false;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, tag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &p) != napi_ok || !p) {
    char text[80];
    snprintf(text, sizeof text, "not a %s", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", text);
    return NULL;
  }
  return p;
}

static msg_ref_t *msg_of(napi_env env, napi_value v) {
  return untag(env, v, &MSG_TAG, "received message");
}

static napi_value str_n(napi_env env, const char *p, size_t len) {
  napi_value v;
  if (!p) {
    napi_get_undefined(env, &v);
    return v;
  }
  napi_create_string_utf8(env, p, len, &v);
  return v;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static napi_value boolean(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

/* A copy of a message's payload as a Buffer. Never a Buffer over the engine's memory:
 * JavaScript has no read-only Buffer, and that memory may be read-only (a stream
 * record read back from a sealed segment is a read-only mmap: a write would crash the
 * process) or shared (one subject message's payload is every subscriber's). */
static napi_value payload_buffer(napi_env env, const uint8_t *p, size_t len) {
  napi_value buf;
  void *copy = NULL;
  if (napi_create_buffer_copy(env, len, len ? (const void *)p : "", &copy, &buf) != napi_ok)
    return NULL;
  return buf;
}

#define PROP(name_, value_, attrs_) \
  props[n++] = (napi_property_descriptor){name_, NULL, NULL, NULL, NULL, value_, attrs_, NULL}

/* A subject message without headers, as a Message that keeps nothing of the engine's:
 * its payload is copied and its subject and reply made strings, then `msg` is freed at
 * once (no external, no finalizer, no allocation to track: the cheap path of the
 * common case). It is answered by publishing to `reply` and is never acknowledged. */
static napi_value make_detached_message(napi_env env, ringbroker_msg_t *msg,
                                        const ringbroker_msg_view_t *v, napi_value broker,
                                        napi_value owner) {
  napi_value ctor, obj, args[2] = {broker, owner};
  napi_value data = payload_buffer(env, v->payload, v->payload_len);
  napi_value subject = str_n(env, v->subject, v->subject_len);
  napi_value reply = str_n(env, v->reply, v->reply_len);
  ringbroker_msg_free(msg);
  if (!data) return NULL;
  addon_t *a = addon_of(env);
  NAPI_OK(env, napi_get_reference_value(env, a->message_ctor, &ctor));
  NAPI_OK(env, napi_new_instance(env, ctor, 2, args, &obj));
  napi_property_descriptor props[5];
  size_t n = 0;
  const napi_property_attributes pub = napi_enumerable;
  PROP("data", data, pub);
  PROP("subject", subject, pub);
  PROP("headerCount", num(env, 0), napi_default);
  PROP("kind", str_n(env, "subject", 7), pub);
  PROP("reply", reply, pub);
  NAPI_OK(env, napi_define_properties(env, obj, n, props));
  return obj;
}

/* Wraps `msg` (now owned here) as a Message: new Message(broker, owner) with its
 * fields. On failure the message is freed and an exception is pending. */
static napi_value make_message(napi_env env, ringbroker_msg_t *msg, napi_value broker,
                               napi_value owner) {
  addon_t *a = addon_of(env);
  ringbroker_msg_view_t v;
  if (ringbroker_msg_view(msg, &v) != RINGBROKER_OK) {
    ringbroker_msg_free(msg);
    return throw_status(env, RINGBROKER_INTERNAL);
  }
  if (v.kind == RINGBROKER_MSG_SUBJECT && v.header_count == 0)
    return make_detached_message(env, msg, &v, broker, owner);
  msg_ref_t *m = malloc(sizeof *m);
  if (!m) {
    ringbroker_msg_free(msg);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  *m = (msg_ref_t){msg, a, (int64_t)(v.payload_len + MSG_OVERHEAD_BYTES)};
  a->messages_held++;
  int64_t total;
  napi_adjust_external_memory(env, m->reported_bytes, &total);
  napi_value ctor, obj, data, args[2] = {broker, owner};
  napi_value ext = tagged_external(env, m, finalize_msg_ref, &MSG_TAG);
  if (!ext) {
    msg_ref_free(env, m);
    return NULL;
  }
  /* The view's pointers stay valid while `m` is alive: the external owns it now, and
   * it is reachable from this frame until the Message holds it. */
  data = payload_buffer(env, v.payload, v.payload_len);
  if (!data) return NULL;
  NAPI_OK(env, napi_get_reference_value(env, a->message_ctor, &ctor));
  NAPI_OK(env, napi_new_instance(env, ctor, 2, args, &obj));
  napi_property_descriptor props[20];
  size_t n = 0;
  const napi_property_attributes pub = napi_enumerable;
  PROP("_ref", ext, napi_default);
  PROP("data", data, pub);
  PROP("subject", str_n(env, v.subject, v.subject_len), pub);
  PROP("headerCount", num(env, (double)v.header_count), napi_default);
  if (v.kind == RINGBROKER_MSG_SUBJECT) {
    PROP("kind", str_n(env, "subject", 7), pub);
    PROP("reply", str_n(env, v.reply, v.reply_len), pub);
  } else if (v.kind == RINGBROKER_MSG_STREAM) {
    napi_value key, undefined;
    void *copy;
    napi_get_undefined(env, &undefined);
    key = undefined;
    if (v.key) napi_create_buffer_copy(env, v.key_len, v.key, &copy, &key);
    PROP("kind", str_n(env, "stream", 6), pub);
    PROP("key", key, pub);
    PROP("partition", num(env, v.partition), pub);
    PROP("offset", num(env, (double)v.offset), pub);
    PROP("timestamp", num(env, (double)v.timestamp_ms), pub);
    PROP("deliveryCount", num(env, v.delivery_count), pub);
  } else {
    PROP("kind", str_n(env, "queue", 5), pub);
    PROP("routingKey", str_n(env, v.subject, v.subject_len), pub);
    PROP("exchange", str_n(env, v.exchange ? v.exchange : "", v.exchange_len), pub);
    PROP("queue", str_n(env, v.queue ? v.queue : "", v.queue_len), pub);
    PROP("deliveryTag", num(env, (double)v.delivery_tag), pub);
    PROP("redelivered", boolean(env, v.redelivered), pub);
    PROP("priority", num(env, v.priority), pub);
    PROP("persistent", boolean(env, v.persistent), pub);
  }
  NAPI_OK(env, napi_define_properties(env, obj, n, props));
  return obj;
}

/* msgHeaders(ref) => [[name, Buffer], ...] (copies). */
static napi_value js_msg_headers(napi_env env, napi_callback_info info) {
  ARGS(1);
  msg_ref_t *m = msg_of(env, argv[0]);
  if (!m) return NULL;
  ringbroker_msg_view_t v;
  ringbroker_status s = ringbroker_msg_view(m->msg, &v);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  napi_value out;
  NAPI_OK(env, napi_create_array_with_length(env, v.header_count, &out));
  for (size_t i = 0; i < v.header_count; i++) {
    const uint8_t *name, *value;
    size_t name_len, value_len;
    s = ringbroker_msg_header(m->msg, i, &name, &name_len, &value, &value_len);
    if (s != RINGBROKER_OK) return throw_status(env, s);
    napi_value pair, js_name, js_value;
    void *copy;
    NAPI_OK(env, napi_create_array_with_length(env, 2, &pair));
    NAPI_OK(env, napi_create_string_utf8(env, (const char *)name, name_len, &js_name));
    NAPI_OK(env, napi_create_buffer_copy(env, value_len, value_len ? (const void *)value : "",
                                         &copy, &js_value));
    napi_set_element(env, pair, 0, js_name);
    napi_set_element(env, pair, 1, js_value);
    napi_set_element(env, out, (uint32_t)i, pair);
  }
  return out;
}

/* messagesHeld() => how many received messages JavaScript objects still hold. */
static napi_value js_messages_held(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, (double)addon_of(env)->messages_held);
}

/* ------------------------------------------------------------------------------ */
/* Calling JavaScript from libuv callbacks                                        */

/* Calls `fn_ref` with `argv` as a top-level callback (microtasks run afterwards); an
 * exception becomes an uncaught exception, as for any Node callback. */
static void call_js(napi_env env, napi_async_context ctx, napi_ref fn_ref, size_t argc,
                    napi_value *argv) {
  napi_value fn, recv, result;
  if (napi_get_reference_value(env, fn_ref, &fn) != napi_ok || !fn) return;
  napi_get_global(env, &recv); /* napi_make_callback needs an object receiver */
  if (napi_make_callback(env, ctx, recv, fn, argc, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
      napi_fatal_exception(env, e);
    }
  }
}

static bool async_context(napi_env env, const char *name, napi_async_context *out) {
  napi_value resource, resource_name;
  return napi_create_object(env, &resource) == napi_ok &&
         napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) == napi_ok &&
         napi_async_init(env, resource, resource_name, out) == napi_ok;
}

/* ------------------------------------------------------------------------------ */
/* Brokers                                                                        */

typedef struct broker {
  ringbroker_t *h;      /* NULL once closed */
  napi_env env;
  uv_poll_t poll;       /* on the completion fd, between setup and close */
  bool polling;
  napi_ref on_completions;
  napi_async_context actx;
  int refs;             /* the JavaScript external, and the poll handle while open */
  int jobs;             /* blocking calls running on the thread pool */
  bool closing;
  ringbroker_completion done[COMPLETIONS_BATCH_MAX];
} broker_t;

static void broker_unref(broker_t *b) {
  if (--b->refs == 0) free(b);
}

static void finalize_broker(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  broker_unref(data);
}

static void broker_poll_closed(uv_handle_t *handle) {
  broker_unref(handle->data);
}

static broker_t *broker_of(napi_env env, napi_value v, bool open) {
  broker_t *b = untag(env, v, &BROKER_TAG, "broker");
  if (!b) return NULL;
  if (open && (!b->h || b->closing)) {
    napi_throw(env, make_error(env, RINGBROKER_SHUTTING_DOWN, "the broker is closed"));
    return NULL;
  }
  return b;
}

/* Hands every waiting completion to JavaScript as
 * [[token, index, status, partition, offset, duplicate, queues, message, reply], ...]. */
static void on_completions_readable(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  broker_t *b = poll->data;
  napi_env env = b->env;
  if (!b->h) return;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value list, undefined;
  napi_create_array(env, &list);
  napi_get_undefined(env, &undefined);
  uint32_t total = 0;
  size_t n = 0;
  do {
    if (ringbroker_completions_poll(b->h, b->done, COMPLETIONS_BATCH_MAX, &n) != RINGBROKER_OK)
      break;
    for (size_t i = 0; i < n; i++) {
      ringbroker_completion *c = &b->done[i];
      napi_value item, fields[9];
      fields[0] = num(env, (double)c->token);
      fields[1] = num(env, c->index);
      fields[2] = num(env, c->status);
      fields[3] = num(env, c->partition);
      fields[4] = num(env, (double)c->offset);
      fields[5] = boolean(env, c->duplicate);
      fields[6] = num(env, c->queues);
      fields[7] = c->message ? str_n(env, c->message, strlen(c->message)) : undefined;
      fields[8] = undefined;
      if (c->reply) {
        napi_value null_v;
        napi_get_null(env, &null_v);
        fields[8] = make_message(env, c->reply, null_v, null_v);
        if (!fields[8]) {
          napi_value e;
          napi_get_and_clear_last_exception(env, &e);
          fields[8] = undefined;
        }
      }
      napi_create_array_with_length(env, 9, &item);
      for (uint32_t f = 0; f < 9; f++) napi_set_element(env, item, f, fields[f]);
      napi_set_element(env, list, total++, item);
    }
  } while (n == COMPLETIONS_BATCH_MAX);
  if (total > 0) call_js(env, b->actx, b->on_completions, 1, &list);
  napi_close_handle_scope(env, scope);
}

/* brokerSetup(broker, onCompletions): starts watching the completion fd (unref'd). */
static napi_value js_broker_setup(napi_env env, napi_callback_info info) {
  ARGS(2);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  if (b->polling) return throw_type(env, "broker already set up");
  int fd = -1;
  ringbroker_status s = ringbroker_completions_fd(b->h, &fd);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  uv_loop_t *loop;
  NAPI_OK(env, napi_get_uv_event_loop(env, &loop));
  NAPI_OK(env, napi_create_reference(env, argv[1], 1, &b->on_completions));
  if (!async_context(env, "ringbroker:completions", &b->actx))
    return throw_type(env, "async context");
  if (uv_poll_init(loop, &b->poll, fd) != 0) return throw_type(env, "uv_poll_init failed");
  b->poll.data = b;
  b->refs++;
  b->polling = true;
  uv_poll_start(&b->poll, UV_READABLE, on_completions_readable);
  uv_unref((uv_handle_t *)&b->poll);
  return NULL;
}

/* brokerRef(broker, keepAlive): whether the completion watch keeps the loop alive
 * (while Promises wait on completions). */
static napi_value js_broker_ref(napi_env env, napi_callback_info info) {
  ARGS(2);
  broker_t *b = broker_of(env, argv[0], false);
  if (!b) return NULL;
  if (!b->polling) return NULL;
  if (get_bool(env, argv[1]))
    uv_ref((uv_handle_t *)&b->poll);
  else
    uv_unref((uv_handle_t *)&b->poll);
  return NULL;
}

static napi_value js_is_embedded(napi_env env, napi_callback_info info) {
  ARGS(1);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  return boolean(env, ringbroker_is_embedded(b->h) == 1);
}

/* ------------------------------------------------------------------------------ */
/* Blocking calls on the thread pool                                              */

enum op {
  OP_OPEN, OP_CONNECT, OP_CLOSE,
  OP_STREAM_CREATE, OP_STREAM_UPDATE, OP_STREAM_DELETE, OP_STREAM_INFO,
  OP_CONSUMER_CREATE, OP_CONSUMER_DELETE, OP_CONSUMER_INFO,
  OP_EXCHANGE_DECLARE, OP_EXCHANGE_DELETE, OP_EXCHANGE_BIND,
  OP_QUEUE_DECLARE, OP_QUEUE_DELETE, OP_QUEUE_PURGE, OP_QUEUE_INFO, OP_QUEUE_BIND,
  OP_QUEUE_UNBIND,
  OP_SUBSCRIBE, OP_STREAM_CONSUME, OP_QUEUE_CONSUME,
};

typedef struct job {
  enum op op;
  napi_async_work work;
  napi_deferred deferred;
  broker_t *b;           /* NULL for open/connect */
  arena_t ar;            /* strings and headers, freed with the job */
  char *s1, *s2, *s3;
  ringbroker_config *config;
  ringbroker_header *args;
  size_t args_len;
  int flag1, flag2;
  /* results */
  ringbroker_status status;
  char *error;
  ringbroker_t *handle;
  ringbroker_consumer_t *consumer;
  union {
    ringbroker_stream_info_t stream;
    ringbroker_queue_info_t queue;
    ringbroker_consumer_info_t consumer;
    uint64_t count;
  } out;
} job_t;

static void job_execute(napi_env env, void *data) {
  (void)env;
  job_t *j = data;
  const ringbroker_t *h = j->b ? j->b->h : NULL;
  ringbroker_status s = RINGBROKER_INTERNAL;
  switch (j->op) {
    case OP_OPEN: s = ringbroker_open(j->config, &j->handle); break;
    case OP_CONNECT: s = ringbroker_connect(j->s1, j->config, &j->handle); break;
    case OP_CLOSE: s = ringbroker_close(j->b->h); break;
    case OP_STREAM_CREATE: s = ringbroker_stream_create(h, j->config); break;
    case OP_STREAM_UPDATE: s = ringbroker_stream_update(h, j->config); break;
    case OP_STREAM_DELETE: s = ringbroker_stream_delete(h, j->s1); break;
    case OP_STREAM_INFO: s = ringbroker_stream_info(h, j->s1, &j->out.stream); break;
    case OP_CONSUMER_CREATE: s = ringbroker_consumer_create(h, j->s1, j->config); break;
    case OP_CONSUMER_DELETE: s = ringbroker_consumer_delete(h, j->s1, j->s2); break;
    case OP_CONSUMER_INFO: s = ringbroker_consumer_info(h, j->s1, j->s2, &j->out.consumer); break;
    case OP_EXCHANGE_DECLARE: s = ringbroker_exchange_declare(h, j->config); break;
    case OP_EXCHANGE_DELETE: s = ringbroker_exchange_delete(h, j->s1, j->flag1); break;
    case OP_EXCHANGE_BIND:
      s = ringbroker_exchange_bind(h, j->s1, j->s2, j->s3, j->args, j->args_len);
      break;
    case OP_QUEUE_DECLARE: s = ringbroker_queue_declare(h, j->config, &j->out.queue); break;
    case OP_QUEUE_DELETE:
      s = ringbroker_queue_delete(h, j->s1, j->flag1, j->flag2, &j->out.count);
      break;
    case OP_QUEUE_PURGE: s = ringbroker_queue_purge(h, j->s1, &j->out.count); break;
    case OP_QUEUE_INFO: s = ringbroker_queue_info(h, j->s1, &j->out.queue); break;
    case OP_QUEUE_BIND:
      s = ringbroker_queue_bind(h, j->s1, j->s2, j->s3, j->args, j->args_len);
      break;
    case OP_QUEUE_UNBIND:
      s = ringbroker_queue_unbind(h, j->s1, j->s2, j->s3, j->args, j->args_len);
      break;
    case OP_SUBSCRIBE: s = ringbroker_subscribe(h, j->s1, j->s2, &j->consumer); break;
    case OP_STREAM_CONSUME:
      s = ringbroker_stream_consume(h, j->s1, j->s2, j->config, &j->consumer);
      break;
    case OP_QUEUE_CONSUME: s = ringbroker_queue_consume(h, j->s1, j->config, &j->consumer); break;
  }
  j->status = s;
  /* The message is this (pool) thread's: copy it before the thread runs another job. */
  if (s != RINGBROKER_OK) j->error = strdup(ringbroker_last_error_message());
}

static napi_value wrap_broker(napi_env env, ringbroker_t *h) {
  broker_t *b = calloc(1, sizeof *b);
  napi_value ext;
  if (!b) {
    ringbroker_close(h);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  b->h = h;
  b->env = env;
  b->refs = 1;
  ext = tagged_external(env, b, finalize_broker, &BROKER_TAG);
  if (!ext) {
    ringbroker_close(h);
    free(b);
  }
  return ext;
}

static napi_value wrap_consumer(napi_env env, ringbroker_consumer_t *c);

static napi_value job_value(napi_env env, job_t *j) {
  napi_value v, undefined;
  napi_get_undefined(env, &undefined);
  switch (j->op) {
    case OP_OPEN:
    case OP_CONNECT: {
      v = wrap_broker(env, j->handle);
      j->handle = NULL;
      return v;
    }
    case OP_SUBSCRIBE:
    case OP_STREAM_CONSUME:
    case OP_QUEUE_CONSUME:
      v = wrap_consumer(env, j->consumer);
      j->consumer = NULL;
      return v;
    case OP_STREAM_INFO:
      napi_create_object(env, &v);
      napi_set_named_property(env, v, "partitions", num(env, j->out.stream.partitions));
      napi_set_named_property(env, v, "records", num(env, (double)j->out.stream.records));
      napi_set_named_property(env, v, "bytes", num(env, (double)j->out.stream.bytes));
      return v;
    case OP_CONSUMER_INFO:
      napi_create_object(env, &v);
      napi_set_named_property(env, v, "partitions", num(env, j->out.consumer.partitions));
      napi_set_named_property(env, v, "pending", num(env, (double)j->out.consumer.pending));
      napi_set_named_property(env, v, "assigned", num(env, j->out.consumer.assigned));
      return v;
    case OP_QUEUE_DECLARE:
    case OP_QUEUE_INFO:
      napi_create_object(env, &v);
      napi_set_named_property(env, v, "messages", num(env, (double)j->out.queue.messages));
      napi_set_named_property(env, v, "unacked", num(env, (double)j->out.queue.unacked));
      napi_set_named_property(env, v, "consumers", num(env, (double)j->out.queue.consumers));
      return v;
    case OP_QUEUE_DELETE:
    case OP_QUEUE_PURGE:
      return num(env, (double)j->out.count);
    default:
      return undefined;
  }
}

static void job_free(job_t *j) {
  ringbroker_config_free(j->config);
  if (j->consumer) ringbroker_consumer_free(j->consumer);
  if (j->handle) ringbroker_close(j->handle);
  arena_free(&j->ar);
  free(j->error);
  free(j);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  if (j->b) {
    j->b->jobs--;
    if (j->op == OP_CLOSE) j->b->h = NULL; /* freed by ringbroker_close, OK or not */
  }
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  if (status != napi_ok) {
    napi_reject_deferred(env, j->deferred,
                         make_error(env, RINGBROKER_INTERNAL, "the call was cancelled"));
  } else if (j->status != RINGBROKER_OK) {
    napi_reject_deferred(env, j->deferred, make_error(env, j->status, j->error));
  } else {
    napi_value v = job_value(env, j);
    if (v) {
      napi_resolve_deferred(env, j->deferred, v);
    } else {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
      napi_reject_deferred(env, j->deferred, e);
    }
  }
  napi_delete_async_work(env, j->work);
  if (j->b) broker_unref(j->b);
  job_free(j);
  napi_close_handle_scope(env, scope);
}

static job_t *job_new(napi_env env, enum op op, broker_t *b) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) napi_throw_error(env, NULL, "out of memory");
  if (j) {
    j->op = op;
    j->b = b;
  }
  return j;
}

/* Queues `j` and returns its Promise; frees it and returns NULL on failure. */
static napi_value job_start(napi_env env, job_t *j) {
  napi_value promise, name;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    job_free(j);
    return NULL;
  }
  if (napi_create_string_utf8(env, "ringbroker", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_async_work(env, NULL, name, job_execute, job_complete, j, &j->work) !=
          napi_ok) {
    job_free(j);
    return NULL;
  }
  if (j->b) {
    j->b->jobs++;
    j->b->refs++;
  }
  napi_queue_async_work(env, j->work);
  return promise;
}

/* open(config) => Promise<broker> */
static napi_value js_open(napi_env env, napi_callback_info info) {
  ARGS(1);
  job_t *j = job_new(env, OP_OPEN, NULL);
  if (!j) return NULL;
  if (!get_config(env, argv[0], &j->config)) {
    job_free(j);
    return NULL;
  }
  return job_start(env, j);
}

/* connect(url, config | null) => Promise<broker> */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  ARGS(2);
  job_t *j = job_new(env, OP_CONNECT, NULL);
  if (!j) return NULL;
  j->s1 = get_string(env, argv[0], &j->ar, false, "url");
  if (j->s1) get_config(env, argv[1], &j->config);
  return job_start(env, j);
}

/* brokerClose(broker) => Promise: stops the completion watch, then closes the handle
 * on the thread pool (an embedded broker syncs and stops its shards). */
static napi_value js_broker_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  if (b->jobs > 0) {
    napi_throw(env, make_error(env, RINGBROKER_INVALID_ARGUMENT,
                               "calls are still running on the broker"));
    return NULL;
  }
  job_t *j = job_new(env, OP_CLOSE, b);
  if (!j) return NULL;
  b->closing = true;
  if (b->polling) {
    b->polling = false;
    uv_poll_stop(&b->poll);
    uv_close((uv_handle_t *)&b->poll, broker_poll_closed);
    napi_delete_reference(env, b->on_completions);
    b->on_completions = NULL;
    napi_async_destroy(env, b->actx);
  }
  return job_start(env, j);
}

/* A job on an open broker with up to three strings (`nstr` of them, the ones after
 * the first `optional_from` may be null) and optionally a config at `config_at`. */
static napi_value broker_job(napi_env env, napi_callback_info info, enum op op, int nstr,
                             int optional_from, int config_at) {
  size_t argc = 6;
  napi_value argv[6];
  NAPI_OK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t need = 1 + (size_t)nstr + (config_at >= 0 ? 1 : 0);
  if (argc < need) return throw_type(env, "missing arguments");
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  job_t *j = job_new(env, op, b);
  if (!j) return NULL;
  char **slots[3] = {&j->s1, &j->s2, &j->s3};
  for (int i = 0; i < nstr; i++) {
    bool optional = i >= optional_from;
    *slots[i] = get_string(env, argv[1 + i], &j->ar, optional, "a name");
    if (!*slots[i] && !optional) return job_start(env, j);
  }
  if (config_at >= 0 && !get_config(env, argv[config_at], &j->config)) return job_start(env, j);
  return job_start(env, j);
}

#define BROKER_JOB(fn, op, nstr, optional_from, config_at)        \
  static napi_value fn(napi_env env, napi_callback_info info) {  \
    return broker_job(env, info, op, nstr, optional_from, config_at); \
  }

BROKER_JOB(js_stream_create, OP_STREAM_CREATE, 0, 0, 1)
BROKER_JOB(js_stream_update, OP_STREAM_UPDATE, 0, 0, 1)
BROKER_JOB(js_stream_delete, OP_STREAM_DELETE, 1, 1, -1)
BROKER_JOB(js_stream_info, OP_STREAM_INFO, 1, 1, -1)
BROKER_JOB(js_consumer_create, OP_CONSUMER_CREATE, 1, 1, 2)
BROKER_JOB(js_consumer_delete, OP_CONSUMER_DELETE, 2, 2, -1)
BROKER_JOB(js_consumer_info, OP_CONSUMER_INFO, 2, 2, -1)
BROKER_JOB(js_exchange_declare, OP_EXCHANGE_DECLARE, 0, 0, 1)
BROKER_JOB(js_queue_declare, OP_QUEUE_DECLARE, 0, 0, 1)
BROKER_JOB(js_queue_purge, OP_QUEUE_PURGE, 1, 1, -1)
BROKER_JOB(js_queue_info, OP_QUEUE_INFO, 1, 1, -1)
/* subscribe(broker, pattern, group | null) */
BROKER_JOB(js_subscribe, OP_SUBSCRIBE, 2, 1, -1)
/* streamConsume(broker, stream, durableName | null, config | null) */
BROKER_JOB(js_stream_consume, OP_STREAM_CONSUME, 2, 1, 3)
/* queueConsume(broker, queue, config | null) */
BROKER_JOB(js_queue_consume, OP_QUEUE_CONSUME, 1, 1, 2)

/* exchangeDelete(broker, name, ifUnused); queueDelete(broker, name, ifUnused, ifEmpty) */
static napi_value delete_job(napi_env env, napi_callback_info info, enum op op) {
  ARGS(4);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  job_t *j = job_new(env, op, b);
  if (!j) return NULL;
  j->s1 = get_string(env, argv[1], &j->ar, false, "name");
  j->flag1 = get_bool(env, argv[2]);
  j->flag2 = get_bool(env, argv[3]);
  return job_start(env, j);
}

static napi_value js_exchange_delete(napi_env env, napi_callback_info info) {
  return delete_job(env, info, OP_EXCHANGE_DELETE);
}

static napi_value js_queue_delete(napi_env env, napi_callback_info info) {
  return delete_job(env, info, OP_QUEUE_DELETE);
}

/* queueBind/queueUnbind/exchangeBind(broker, a, b, routingKey, arguments | null) */
static napi_value bind_job(napi_env env, napi_callback_info info, enum op op) {
  ARGS(5);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  job_t *j = job_new(env, op, b);
  if (!j) return NULL;
  j->s1 = get_string(env, argv[1], &j->ar, false, "a name");
  if (j->s1) j->s2 = get_string(env, argv[2], &j->ar, false, "a name");
  if (j->s2) j->s3 = get_string(env, argv[3], &j->ar, true, "routingKey");
  if (j->s2) get_headers(env, argv[4], &j->ar, &j->args, &j->args_len);
  return job_start(env, j);
}

static napi_value js_queue_bind(napi_env env, napi_callback_info info) {
  return bind_job(env, info, OP_QUEUE_BIND);
}

static napi_value js_queue_unbind(napi_env env, napi_callback_info info) {
  return bind_job(env, info, OP_QUEUE_UNBIND);
}

static napi_value js_exchange_bind(napi_env env, napi_callback_info info) {
  return bind_job(env, info, OP_EXCHANGE_BIND);
}

/* ------------------------------------------------------------------------------ */
/* Publishing (non-blocking: fire and forget, or answered through completions)    */

/* publish(broker, subject, reply | null, data) */
static napi_value js_publish(napi_env env, napi_callback_info info) {
  ARGS(4);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  arena_t ar = {0};
  const uint8_t *data;
  size_t len;
  /* The hot path: a subject that fits SUBJECT_STACK bytes (every valid one does) is
   * read in one call into this frame; a longer one, or not a string, takes
   * get_string (which says what is wrong, or lets the library refuse the length). */
  char stack[SUBJECT_STACK + 2];
  size_t subject_len = 0;
  char *subject = NULL;
  if (napi_get_value_string_utf8(env, argv[1], stack, sizeof stack, &subject_len) == napi_ok &&
      subject_len <= SUBJECT_STACK) {
    subject = refuse_nul(env, stack, subject_len, "subject") ? NULL : stack;
  } else {
    subject = get_string(env, argv[1], &ar, false, "subject");
  }
  char *reply = subject ? get_string(env, argv[2], &ar, true, "reply") : NULL;
  bool ok = subject && get_bytes(env, argv[3], &data, &len);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (ok && !pending) {
    ringbroker_status s = ringbroker_publish(b->h, subject, reply, data, len);
    if (s != RINGBROKER_OK) throw_status(env, s);
  }
  arena_free(&ar);
  return NULL;
}

/* publishBatch(broker, [[subject, reply | null, headers | null, data], ...]) */
static napi_value js_publish_batch(napi_env env, napi_callback_info info) {
  ARGS(2);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  uint32_t n = 0;
  if (!get_array_length(env, argv[1], &n)) return NULL;
  arena_t ar = {0};
  ringbroker_subject_msg *msgs = arena_alloc(&ar, (n ? n : 1) * sizeof *msgs);
  for (uint32_t i = 0; msgs && i < n; i++) {
    napi_value item, f[4];
    if (!get_element(env, argv[1], i, &item)) goto done;
    for (uint32_t k = 0; k < 4; k++)
      if (!get_element(env, item, k, &f[k])) goto done;
    msgs[i].subject = get_string(env, f[0], &ar, false, "subject");
    if (!msgs[i].subject) goto done;
    msgs[i].reply = get_string(env, f[1], &ar, true, "reply");
    if (!get_headers(env, f[2], &ar, (ringbroker_header **)&msgs[i].headers, &msgs[i].headers_len))
      goto done;
    if (!get_bytes(env, f[3], &msgs[i].payload, &msgs[i].payload_len)) goto done;
  }
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (msgs && !pending) {
    ringbroker_status s = ringbroker_publish_batch(b->h, msgs, n);
    if (s != RINGBROKER_OK) throw_status(env, s);
  }
done:
  arena_free(&ar);
  return NULL;
}

/* requestAsync(broker, subject, data, timeoutMs, token) */
static napi_value js_request_async(napi_env env, napi_callback_info info) {
  ARGS(5);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  arena_t ar = {0};
  const uint8_t *data;
  size_t len;
  int64_t timeout_ms = 0, token = 0;
  char *subject = get_string(env, argv[1], &ar, false, "subject");
  if (subject && get_bytes(env, argv[2], &data, &len) && get_i64(env, argv[3], &timeout_ms) &&
      get_i64(env, argv[4], &token)) {
    ringbroker_status s =
        ringbroker_request_async(b->h, subject, data, len, timeout_ms, (uint64_t)token);
    if (s != RINGBROKER_OK) throw_status(env, s);
  }
  arena_free(&ar);
  return NULL;
}

/* respond(broker, msgRef, data) */
static napi_value js_respond(napi_env env, napi_callback_info info) {
  ARGS(3);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  msg_ref_t *m = msg_of(env, argv[1]);
  const uint8_t *data;
  size_t len;
  if (!m || !get_bytes(env, argv[2], &data, &len)) return NULL;
  ringbroker_status s = ringbroker_respond(b->h, m->msg, data, len);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

/* Records from [[subject, key | null, headers | null, data], ...] into `ar`. */
static ringbroker_record *get_records(napi_env env, napi_value v, arena_t *ar, uint32_t *n) {
  if (!get_array_length(env, v, n)) return NULL;
  ringbroker_record *r = arena_alloc(ar, (*n ? *n : 1) * sizeof *r);
  for (uint32_t i = 0; r && i < *n; i++) {
    napi_value item, f[4];
    if (!get_element(env, v, i, &item)) return NULL;
    for (uint32_t k = 0; k < 4; k++)
      if (!get_element(env, item, k, &f[k])) return NULL;
    r[i].subject = get_string(env, f[0], ar, false, "subject");
    if (!r[i].subject) return NULL;
    if (!get_bytes(env, f[1], &r[i].key, &r[i].key_len)) return NULL;
    if (!get_headers(env, f[2], ar, (ringbroker_header **)&r[i].headers, &r[i].headers_len))
      return NULL;
    if (!get_bytes(env, f[3], &r[i].payload, &r[i].payload_len)) return NULL;
  }
  return r;
}

/* Queue messages from [[exchange, routingKey, headers | null, data, priority,
 * persistent, expirationMs], ...] into `ar`. */
static ringbroker_queue_msg *get_queue_msgs(napi_env env, napi_value v, arena_t *ar,
                                            uint32_t *n) {
  if (!get_array_length(env, v, n)) return NULL;
  ringbroker_queue_msg *m = arena_alloc(ar, (*n ? *n : 1) * sizeof *m);
  for (uint32_t i = 0; m && i < *n; i++) {
    napi_value item, f[7];
    if (!get_element(env, v, i, &item)) return NULL;
    for (uint32_t k = 0; k < 7; k++)
      if (!get_element(env, item, k, &f[k])) return NULL;
    m[i].exchange = get_string(env, f[0], ar, false, "exchange");
    m[i].routing_key = m[i].exchange ? get_string(env, f[1], ar, false, "routingKey") : NULL;
    if (!m[i].routing_key) return NULL;
    if (!get_headers(env, f[2], ar, (ringbroker_header **)&m[i].headers, &m[i].headers_len))
      return NULL;
    if (!get_bytes(env, f[3], &m[i].payload, &m[i].payload_len)) return NULL;
    int64_t priority = 0, expiration = 0;
    if (!get_i64(env, f[4], &priority) || !get_i64(env, f[6], &expiration)) return NULL;
    if (priority < 0 || priority > 255 || expiration < 0) {
      napi_throw(env, make_error(env, RINGBROKER_INVALID_ARGUMENT,
                                 "priority must be 0 to 255 and expirationMs not negative"));
      return NULL;
    }
    m[i].priority = (uint8_t)priority;
    m[i].persistent = get_bool(env, f[5]);
    m[i].expiration_ms = (uint64_t)expiration;
  }
  return m;
}

/* streamPublish(broker, records, token | -1): async (token >= 0) or fire and forget. */
static napi_value js_stream_publish(napi_env env, napi_callback_info info) {
  ARGS(3);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  arena_t ar = {0};
  uint32_t n = 0;
  int64_t token = -1;
  ringbroker_record *r = get_records(env, argv[1], &ar, &n);
  if (r && get_i64(env, argv[2], &token)) {
    ringbroker_status s = token >= 0
                              ? ringbroker_stream_publish_async(b->h, r, n, (uint64_t)token)
                              : ringbroker_stream_publish_nowait(b->h, r, n);
    if (s != RINGBROKER_OK) throw_status(env, s);
  }
  arena_free(&ar);
  return NULL;
}

/* exchangePublish(broker, msgs, mandatory, token | -1) */
static napi_value js_exchange_publish(napi_env env, napi_callback_info info) {
  ARGS(4);
  broker_t *b = broker_of(env, argv[0], true);
  if (!b) return NULL;
  arena_t ar = {0};
  uint32_t n = 0;
  int64_t token = -1;
  ringbroker_queue_msg *m = get_queue_msgs(env, argv[1], &ar, &n);
  int mandatory = get_bool(env, argv[2]);
  if (m && get_i64(env, argv[3], &token)) {
    ringbroker_status s =
        token >= 0 ? ringbroker_exchange_publish_async(b->h, m, n, mandatory, (uint64_t)token)
                   : ringbroker_exchange_publish_nowait(b->h, m, n, mandatory);
    if (s != RINGBROKER_OK) throw_status(env, s);
  }
  arena_free(&ar);
  return NULL;
}

/* ------------------------------------------------------------------------------ */
/* Consumers                                                                      */

typedef struct consumer {
  ringbroker_consumer_t *c; /* NULL once closed */
  napi_env env;
  uv_poll_t poll;
  bool poll_init, polling;
  napi_ref on_ready;
  napi_async_context actx;
  int refs; /* the JavaScript external, and the poll handle while initialised */
  ringbroker_msg_t *batch[FETCH_BATCH_MAX];
} consumer_t;

static void consumer_unref(consumer_t *c) {
  if (--c->refs == 0) free(c);
}

static void consumer_poll_closed(uv_handle_t *handle) {
  consumer_unref(handle->data);
}

/* Frees the consumer and stops its watch; idempotent. */
static void consumer_close(napi_env env, consumer_t *c) {
  if (c->poll_init) {
    c->poll_init = false;
    c->polling = false;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, consumer_poll_closed);
    if (env) {
      napi_delete_reference(env, c->on_ready);
      napi_async_destroy(env, c->actx);
    }
    c->on_ready = NULL;
  }
  if (c->c) {
    ringbroker_consumer_free(c->c);
    c->c = NULL;
  }
}

static void finalize_consumer(napi_env env, void *data, void *hint) {
  (void)hint;
  (void)env;
  consumer_t *c = data;
  /* Only reached once JavaScript dropped every reference: close() already ran, the
   * consumer was never set up (the ready callback keeps a set-up one alive), or the
   * environment is being torn down. No Node-API call here: only native cleanup. */
  consumer_close(NULL, c);
  consumer_unref(c);
}

static napi_value wrap_consumer(napi_env env, ringbroker_consumer_t *rc) {
  consumer_t *c = calloc(1, sizeof *c);
  napi_value ext;
  if (!c) {
    ringbroker_consumer_free(rc);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  c->c = rc;
  c->env = env;
  c->refs = 1;
  ext = tagged_external(env, c, finalize_consumer, &CONSUMER_TAG);
  if (!ext) {
    ringbroker_consumer_free(rc);
    free(c);
  }
  return ext;
}

static consumer_t *consumer_of(napi_env env, napi_value v) {
  consumer_t *c = untag(env, v, &CONSUMER_TAG, "consumer");
  if (!c) return NULL;
  if (!c->c) {
    napi_throw(env, make_error(env, RINGBROKER_SHUTTING_DOWN, "the consumer is closed"));
    return NULL;
  }
  return c;
}

static void on_consumer_readable(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  consumer_t *c = poll->data;
  if (!c->c || !c->on_ready) return;
  napi_handle_scope scope;
  napi_open_handle_scope(c->env, &scope);
  call_js(c->env, c->actx, c->on_ready, 0, NULL);
  napi_close_handle_scope(c->env, scope);
}

/* consumerSetup(consumer, onReady): prepares the watch on the consumer's fd
 * (started by consumerWatch). */
static napi_value js_consumer_setup(napi_env env, napi_callback_info info) {
  ARGS(2);
  consumer_t *c = consumer_of(env, argv[0]);
  if (!c) return NULL;
  if (c->poll_init) return throw_type(env, "consumer already set up");
  int fd = -1;
  ringbroker_status s = ringbroker_consumer_fd(c->c, &fd);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  uv_loop_t *loop;
  NAPI_OK(env, napi_get_uv_event_loop(env, &loop));
  if (!async_context(env, "ringbroker:consumer", &c->actx)) return throw_type(env, "async context");
  NAPI_OK(env, napi_create_reference(env, argv[1], 1, &c->on_ready));
  if (uv_poll_init(loop, &c->poll, fd) != 0) return throw_type(env, "uv_poll_init failed");
  c->poll.data = c;
  c->poll_init = true;
  c->refs++;
  uv_unref((uv_handle_t *)&c->poll);
  return NULL;
}

/* consumerWatch(consumer, watching, keepAlive): starts or stops the fd watch, and
 * whether it keeps the loop alive (while something awaits a message). */
static napi_value js_consumer_watch(napi_env env, napi_callback_info info) {
  ARGS(3);
  consumer_t *c = consumer_of(env, argv[0]);
  if (!c) return NULL;
  if (!c->poll_init) return throw_type(env, "consumer not set up");
  bool watch = get_bool(env, argv[1]);
  if (watch && !c->polling) uv_poll_start(&c->poll, UV_READABLE, on_consumer_readable);
  if (!watch && c->polling) uv_poll_stop(&c->poll);
  c->polling = watch;
  if (get_bool(env, argv[2]))
    uv_ref((uv_handle_t *)&c->poll);
  else
    uv_unref((uv_handle_t *)&c->poll);
  return NULL;
}

/* consumerClose(consumer): idempotent. */
static napi_value js_consumer_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  consumer_t *c = untag(env, argv[0], &CONSUMER_TAG, "consumer");
  if (!c) return NULL;
  consumer_close(env, c);
  return NULL;
}

/* Whether js_fetch packs `v` (see there): a subject message without headers and with
 * a payload of at most PACK_PAYLOAD_MAX bytes. */
static bool packable(const ringbroker_msg_view_t *v) {
  return v->kind == RINGBROKER_MSG_SUBJECT && v->header_count == 0 &&
         v->payload_len <= PACK_PAYLOAD_MAX;
}

/* fetch(consumer, max, broker, owner, meta) => [count, bytes, others] without waiting
 * (fewer than `max`: the fd is armed). Throws the consumer's end (NOT_FOUND,
 * SHUTTING_DOWN, DISCONNECTED, ...) once nothing is left.
 *
 * The common message, a small subject message without headers (packable), costs no
 * JavaScript object here: its subject, reply and payload are copied, in that order, to
 * one Buffer `bytes` for the whole batch, and its engine message freed. `meta` (a
 * Uint32Array of at least 4 * max) gets 4 numbers per message: subject length, reply
 * length (PACK_NO_REPLY: none), payload length, and 0 / PACK_NEW_SUBJECT /
 * PACK_SAME_SUBJECT (a subject equal to the previous packed message's is not copied
 * again). lib/index.js makes the Messages of packed ones; any other message i is made
 * here, as `others[i]` (`others` is undefined when there is none). Each of the two
 * passes reads the messages' views; nothing is freed before the second. */
static napi_value js_fetch(napi_env env, napi_callback_info info) {
  ARGS(5);
  consumer_t *c = consumer_of(env, argv[0]);
  if (!c) return NULL;
  int64_t max = 0;
  if (!get_i64(env, argv[1], &max)) return NULL;
  if (max < 1) max = 1;
  if (max > FETCH_BATCH_MAX) max = FETCH_BATCH_MAX;
  napi_typedarray_type meta_type;
  size_t meta_len = 0;
  void *meta_data = NULL;
  if (napi_get_typedarray_info(env, argv[4], &meta_type, &meta_len, &meta_data, NULL, NULL) !=
          napi_ok ||
      meta_type != napi_uint32_array || meta_len < 4 * (size_t)max) {
    return throw_type(env, "meta must be a Uint32Array of 4 * max numbers");
  }
  uint32_t *meta = meta_data;
  size_t n = 0;
  ringbroker_status s = ringbroker_try_fetch(c->c, c->batch, (size_t)max, &n);
  if (s != RINGBROKER_OK && n == 0) return throw_status(env, s);

  /* Pass 1: what is packed, and how many bytes it takes. */
  size_t total = 0, others = 0;
  const char *last = NULL;
  size_t last_len = 0;
  for (size_t i = 0; i < n; i++) {
    ringbroker_msg_view_t v;
    uint32_t *e = &meta[4 * i];
    e[0] = e[1] = e[2] = e[3] = 0;
    if (ringbroker_msg_view(c->batch[i], &v) != RINGBROKER_OK || !packable(&v)) {
      others++;
      continue;
    }
    bool same = last && v.subject_len == last_len && memcmp(last, v.subject, last_len) == 0;
    if (!same) {
      last = v.subject;
      last_len = v.subject_len;
      total += v.subject_len;
    }
    total += (v.reply ? v.reply_len : 0) + v.payload_len;
    e[0] = same ? 0 : (uint32_t)v.subject_len;
    e[1] = v.reply ? (uint32_t)v.reply_len : PACK_NO_REPLY;
    e[2] = (uint32_t)v.payload_len;
    e[3] = same ? PACK_SAME_SUBJECT : PACK_NEW_SUBJECT;
  }

  napi_value out, count, bytes, rest;
  void *base = NULL;
  napi_get_undefined(env, &rest);
  if (napi_create_array_with_length(env, 3, &out) != napi_ok ||
      napi_create_uint32(env, (uint32_t)n, &count) != napi_ok ||
      napi_create_buffer(env, total, &base, &bytes) != napi_ok ||
      (others && napi_create_array_with_length(env, n, &rest) != napi_ok)) {
    for (size_t i = 0; i < n; i++) ringbroker_msg_free(c->batch[i]);
    return NULL;
  }

  /* Pass 2: copy and free the packed ones, make the others. */
  uint8_t *at = base;
  for (size_t i = 0; i < n; i++) {
    const uint32_t *e = &meta[4 * i];
    if (e[3] == 0) {
      napi_value m = make_message(env, c->batch[i], argv[2], argv[3]);
      if (!m) {
        for (size_t k = i + 1; k < n; k++) ringbroker_msg_free(c->batch[k]);
        return NULL;
      }
      napi_set_element(env, rest, (uint32_t)i, m);
      continue;
    }
    ringbroker_msg_view_t v;
    ringbroker_msg_view(c->batch[i], &v); /* succeeded in pass 1: same message */
    if (e[3] == PACK_NEW_SUBJECT) {
      memcpy(at, v.subject, v.subject_len);
      at += v.subject_len;
    }
    if (v.reply && v.reply_len) {
      memcpy(at, v.reply, v.reply_len);
      at += v.reply_len;
    }
    if (v.payload_len) {
      memcpy(at, v.payload, v.payload_len);
      at += v.payload_len;
    }
    ringbroker_msg_free(c->batch[i]);
  }
  napi_set_element(env, out, 0, count);
  napi_set_element(env, out, 1, bytes);
  napi_set_element(env, out, 2, rest);
  return out;
}

/* ack(consumer, msgRef), commit(consumer, msgRef) */
static napi_value js_ack(napi_env env, napi_callback_info info) {
  ARGS(2);
  consumer_t *c = consumer_of(env, argv[0]);
  msg_ref_t *m = c ? msg_of(env, argv[1]) : NULL;
  if (!m) return NULL;
  ringbroker_status s = ringbroker_ack(c->c, m->msg);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

static napi_value js_commit(napi_env env, napi_callback_info info) {
  ARGS(2);
  consumer_t *c = consumer_of(env, argv[0]);
  msg_ref_t *m = c ? msg_of(env, argv[1]) : NULL;
  if (!m) return NULL;
  ringbroker_status s = ringbroker_commit(c->c, m->msg);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

/* ackBatch(consumer, [msgRef, ...]) */
static napi_value js_ack_batch(napi_env env, napi_callback_info info) {
  ARGS(2);
  consumer_t *c = consumer_of(env, argv[0]);
  if (!c) return NULL;
  uint32_t n = 0;
  if (!get_array_length(env, argv[1], &n)) return NULL;
  if (n == 0) return NULL;
  const ringbroker_msg_t **msgs = malloc(n * sizeof *msgs);
  if (!msgs) return throw_type(env, "out of memory");
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    msg_ref_t *m = get_element(env, argv[1], i, &v) ? msg_of(env, v) : NULL;
    if (!m) {
      free(msgs);
      return NULL;
    }
    msgs[i] = m->msg;
  }
  ringbroker_status s = ringbroker_ack_batch(c->c, msgs, n);
  free(msgs);
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

/* nack(consumer, msgRef, delayMs, requeue) */
static napi_value js_nack(napi_env env, napi_callback_info info) {
  ARGS(4);
  consumer_t *c = consumer_of(env, argv[0]);
  msg_ref_t *m = c ? msg_of(env, argv[1]) : NULL;
  int64_t delay = 0;
  if (!m || !get_i64(env, argv[2], &delay)) return NULL;
  if (delay < 0 || delay > UINT32_MAX) {
    napi_throw(env, make_error(env, RINGBROKER_INVALID_ARGUMENT, "delay out of range"));
    return NULL;
  }
  ringbroker_status s = ringbroker_nack(c->c, m->msg, (uint32_t)delay, get_bool(env, argv[3]));
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

/* queueAck(consumer, tag, multiple), queueNack(consumer, tag, multiple, requeue) */
static napi_value js_queue_ack(napi_env env, napi_callback_info info) {
  ARGS(3);
  consumer_t *c = consumer_of(env, argv[0]);
  int64_t tag = 0;
  if (!c || !get_i64(env, argv[1], &tag)) return NULL;
  ringbroker_status s = ringbroker_queue_ack(c->c, (uint64_t)tag, get_bool(env, argv[2]));
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

static napi_value js_queue_nack(napi_env env, napi_callback_info info) {
  ARGS(4);
  consumer_t *c = consumer_of(env, argv[0]);
  int64_t tag = 0;
  if (!c || !get_i64(env, argv[1], &tag)) return NULL;
  ringbroker_status s = ringbroker_queue_nack(c->c, (uint64_t)tag, get_bool(env, argv[2]),
                                              get_bool(env, argv[3]));
  if (s != RINGBROKER_OK) return throw_status(env, s);
  return NULL;
}

/* ------------------------------------------------------------------------------ */
/* Module                                                                         */

/* setup(makeError, Message) */
static napi_value js_setup(napi_env env, napi_callback_info info) {
  ARGS(2);
  addon_t *a = addon_of(env);
  if (a->make_error) napi_delete_reference(env, a->make_error);
  if (a->message_ctor) napi_delete_reference(env, a->message_ctor);
  NAPI_OK(env, napi_create_reference(env, argv[0], 1, &a->make_error));
  NAPI_OK(env, napi_create_reference(env, argv[1], 1, &a->message_ctor));
  return NULL;
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  (void)info;
  return str_n(env, ringbroker_version(), strlen(ringbroker_version()));
}

static napi_value js_abi_version(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, ringbroker_abi_version());
}

static napi_value js_status_name(napi_env env, napi_callback_info info) {
  ARGS(1);
  int64_t status = 0;
  if (!get_i64(env, argv[0], &status)) return NULL;
  const char *name = ringbroker_status_name((ringbroker_status)status);
  return str_n(env, name, strlen(name));
}

static void finalize_addon(napi_env env, void *data, void *hint) {
  (void)hint;
  addon_t *a = data;
  if (a->make_error) napi_delete_reference(env, a->make_error);
  if (a->message_ctor) napi_delete_reference(env, a->message_ctor);
  free(a);
}

static napi_value init(napi_env env, napi_value exports) {
  if (ringbroker_abi_version() != RINGBROKER_ABI_VERSION) {
    napi_throw_error(env, NULL, "libringbroker's ABI version differs from the header's");
    return NULL;
  }
  addon_t *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  NAPI_OK(env, napi_set_instance_data(env, a, finalize_addon, NULL));
#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
  napi_property_descriptor fns[] = {
      FN("setup", js_setup),
      FN("version", js_version),
      FN("abiVersion", js_abi_version),
      FN("statusName", js_status_name),
      FN("messagesHeld", js_messages_held),
      FN("msgHeaders", js_msg_headers),
      FN("open", js_open),
      FN("connect", js_connect),
      FN("brokerSetup", js_broker_setup),
      FN("brokerRef", js_broker_ref),
      FN("brokerClose", js_broker_close),
      FN("isEmbedded", js_is_embedded),
      FN("publish", js_publish),
      FN("publishBatch", js_publish_batch),
      FN("requestAsync", js_request_async),
      FN("respond", js_respond),
      FN("streamPublish", js_stream_publish),
      FN("exchangePublish", js_exchange_publish),
      FN("streamCreate", js_stream_create),
      FN("streamUpdate", js_stream_update),
      FN("streamDelete", js_stream_delete),
      FN("streamInfo", js_stream_info),
      FN("consumerCreate", js_consumer_create),
      FN("consumerDelete", js_consumer_delete),
      FN("consumerInfo", js_consumer_info),
      FN("exchangeDeclare", js_exchange_declare),
      FN("exchangeDelete", js_exchange_delete),
      FN("exchangeBind", js_exchange_bind),
      FN("queueDeclare", js_queue_declare),
      FN("queueDelete", js_queue_delete),
      FN("queuePurge", js_queue_purge),
      FN("queueInfo", js_queue_info),
      FN("queueBind", js_queue_bind),
      FN("queueUnbind", js_queue_unbind),
      FN("subscribe", js_subscribe),
      FN("streamConsume", js_stream_consume),
      FN("queueConsume", js_queue_consume),
      FN("consumerSetup", js_consumer_setup),
      FN("consumerWatch", js_consumer_watch),
      FN("consumerClose", js_consumer_close),
      FN("fetch", js_fetch),
      FN("ack", js_ack),
      FN("ackBatch", js_ack_batch),
      FN("commit", js_commit),
      FN("nack", js_nack),
      FN("queueAck", js_queue_ack),
      FN("queueNack", js_queue_nack),
  };
#undef FN
  NAPI_OK(env, napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
