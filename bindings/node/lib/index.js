// ringbroker for Node.js: the Broker class over the C API (embedded or connected to a
// ringbrokerd), consumers as async iterators, publishes as Promises.
//
// Owns: the JavaScript side of every handle: tokens of asynchronous publishes and
// requests mapped onto Promises, each consumer's bounded buffer (its high-water mark)
// and the rule that a watch keeps the process alive only while something awaits it.
// Never: blocks the event loop (src/addon.c runs the calls that may wait on the
// thread pool), buffers without a bound, or keeps the process alive after close().
'use strict';

const path = require('node:path');
const util = require('node:util');
const errors = require('./errors');

const { errorFor, ShuttingDownError, InvalidArgumentError, WrongKindError } = errors;

// The addon, built by `npm install` (scripts/build.js) into build/Release.
const native = require(path.join(__dirname, '..', 'build', 'Release', 'ringbroker.node'));

/** Messages taken from a consumer per fetch at most. */
const FETCH_BATCH_MAX = 256;
// native.fetch's packing; equal to the addon's PACK_* constants.
const PACK_NO_REPLY = 0xffffffff;
const PACK_NEW_SUBJECT = 1;
/** Default bound on received messages a consumer buffers before the reader takes them. */
const HIGH_WATER_MARK_DEFAULT = 1024;
/** Bound on a consumer's buffer, whatever the caller asks. */
const HIGH_WATER_MARK_MAX = 1 << 20;
/** How long close() waits for asynchronous publishes still to be answered. */
const CLOSE_DRAIN_MS = 10000;
/** Default timeout of request(). */
const REQUEST_TIMEOUT_MS_DEFAULT = 5000;

const kBroker = Symbol('broker');
const kConsumer = Symbol('consumer');

// ------------------------------------------------------------------------------------
// Argument conversion

/** Bytes of a payload, key or header value: a string (UTF-8), Buffer or TypedArray. */
function toBytes(data) {
  if (data === undefined || data === null) return null;
  if (typeof data === 'string') return Buffer.from(data);
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('data must be a string, a Buffer, a TypedArray or an ArrayBuffer');
}

/** Headers as [[name, bytes], ...] from an object, a Map or an array of pairs. */
function toHeaders(headers) {
  if (headers === undefined || headers === null) return null;
  const pairs = Array.isArray(headers) ? headers
    : headers instanceof Map ? [...headers] : Object.entries(headers);
  return pairs.map(([name, value]) => [String(name), toBytes(value) ?? Buffer.alloc(0)]);
}

function snakeCase(key) {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** A C API config ([[key, value], ...]) from camelCase options; arrays join with ','. */
function toConfig(options) {
  const pairs = [];
  for (const [key, value] of Object.entries(options ?? {})) {
    if (value === undefined || value === null) continue;
    const text = Array.isArray(value) ? value.join(',') : String(value);
    pairs.push([snakeCase(key), text]);
  }
  return pairs;
}

function checkName(value, what) {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`${what} must be a non-empty string`);
  }
  return value;
}

function highWaterMark(options) {
  const hwm = options.highWaterMark ?? HIGH_WATER_MARK_DEFAULT;
  if (!Number.isInteger(hwm) || hwm < 1 || hwm > HIGH_WATER_MARK_MAX) {
    throw new InvalidArgumentError(`highWaterMark must be an integer from 1 to ${HIGH_WATER_MARK_MAX}`);
  }
  return hwm;
}

/** Splits the binding's own options from the ones passed to the C API's config. */
function consumerOptions(options = {}) {
  const { highWaterMark: _h, callback, ...config } = options;
  return { hwm: highWaterMark(options), callback, config };
}

// ------------------------------------------------------------------------------------
// Messages

/**
 * A received message: a subject message (`kind` "subject"), a stream record
 * ("stream") or a queue delivery ("queue"). `data` is the payload copied once into
 * memory of its own, the caller's to keep and to write: JavaScript has no read-only
 * Buffer, and the engine's memory may be read-only (records read from sealed segments
 * are mapped read-only) or shared (one subject message's payload is every
 * subscriber's). The engine's message is freed once the Message is garbage-collected
 * (at once for a subject message without headers); `data` stays valid after that.
 * Fields that do not apply to the kind are absent.
 */
/**
 * The engine message behind `msg`, for acknowledging: subject messages have none that
 * can be acknowledged (those without headers keep none at all).
 */
function refOf(msg) {
  if (msg === null || typeof msg !== 'object') {
    throw new InvalidArgumentError('expected a received message');
  }
  if (msg.kind === 'subject') {
    throw new WrongKindError('a subject message is not acknowledged');
  }
  return msg._ref;
}

class Message {
  constructor(broker, consumer) {
    this[kBroker] = broker;
    this[kConsumer] = consumer;
  }

  /** The payload decoded as UTF-8. */
  get text() {
    return this.data.toString('utf8');
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.text);
  }

  /** The headers in order, as [name, value Buffer] pairs (copied on first use). */
  get headers() {
    if (this.headerCount === 0) return [];
    const value = native.msgHeaders(this._ref);
    Object.defineProperty(this, 'headers', { value, enumerable: false });
    return value;
  }

  /** The first header called `name`, decoded as UTF-8, or undefined. */
  header(name) {
    const found = this.headers.find(([n]) => n === name);
    return found ? found[1].toString('utf8') : undefined;
  }

  /** Answers this request (a subject message with a reply subject) with `data`. */
  respond(data) {
    const broker = this[kBroker];
    if (!broker) throw new InvalidArgumentError('this message has no reply subject to answer');
    broker.respond(this, data);
  }

  /** Acknowledges this stream record or queue delivery. */
  ack() {
    this.#consumer().ack(this);
  }

  /**
   * Stream records: delivered again after `delay` ms. Queue deliveries: back to the
   * queue (`requeue`, the default) or dead-lettered / dropped.
   */
  nack({ requeue = true, delay = 0 } = {}) {
    this.#consumer().nack(this, { requeue, delay });
  }

  /** Queue deliveries: rejects it without requeueing (dead-lettered or dropped). */
  reject() {
    this.#consumer().nack(this, { requeue: false, delay: 0 });
  }

  /** Stream records: acknowledges every record of its partition up to this one. */
  commit() {
    this.#consumer().commit(this);
  }

  /** console.log shows the message's fields, not its links to broker and consumer. */
  [util.inspect.custom](depth, options, inspect) {
    return `Message ${inspect(Object.fromEntries(Object.entries(this)), options)}`;
  }

  #consumer() {
    const consumer = this[kConsumer];
    if (!consumer) throw new WrongKindError('a request\'s reply is not acknowledged');
    refOf(this);
    return consumer;
  }
}

/**
 * A subject message without headers (and a payload of at most 16 KiB) as a receive
 * packs it (the addon's js_fetch): made here from the batch's bytes, it holds nothing
 * of the engine's. Its `data` is its own range of one Buffer shared by the messages
 * of one receive (as Node's pooled Buffers share a slab).
 */
class PackedSubjectMessage extends Message {
  constructor(broker, consumer, subject, reply, data) {
    super(broker, consumer);
    this.data = data;
    this.subject = subject;
    this.kind = 'subject';
    this.reply = reply;
  }

  get headerCount() {
    return 0;
  }
}

// ------------------------------------------------------------------------------------
// Consumers

/**
 * What subscribe(), consume() and consumeQueue() return: an async iterator of
 * Messages (`for await (const msg of consumer)`), with callbacks through onMessage().
 * At most `highWaterMark` received messages wait in it; past that it stops taking
 * them from the engine until the reader catches up.
 */
class Consumer {
  #ext;
  #broker;
  #hwm;
  #meta = new Uint32Array(4 * FETCH_BATCH_MAX); // written by native.fetch
  #buffer = [];
  #head = 0;
  #waiters = [];
  #watching = false;
  #keepAlive = false;
  #ended = false;
  #error = null;

  constructor(broker, ext, hwm) {
    this.#broker = broker;
    this.#ext = ext;
    this.#hwm = hwm;
    /** Settles when an onMessage() loop started by the `callback` option ends. */
    this.done = undefined;
    native.consumerSetup(ext, () => this.#pump());
    this.#pump();
  }

  /** The broker it came from. */
  get broker() {
    return this.#broker;
  }

  /** True once it ended (closed, its broker closed, or the engine ended it). */
  get closed() {
    return this.#ended;
  }

  /** Messages received and not yet taken by the reader. */
  get buffered() {
    return this.#buffer.length - this.#head;
  }

  // Takes messages from the engine until the buffer is full or the engine has none
  // (then the fd is armed and watched).
  #pump() {
    while (!this.#ended) {
      const room = this.#hwm - this.buffered;
      if (room <= 0) {
        this.#watch(false);
        return;
      }
      const want = Math.min(room, FETCH_BATCH_MAX);
      let got;
      try {
        got = native.fetch(this.#ext, want, this.#broker, this, this.#meta);
      } catch (err) {
        this.#end(err);
        return;
      }
      // [count, bytes, others]: see the addon's js_fetch. Packed messages are made
      // here, the others came made.
      const count = got[0];
      const bytes = got[1];
      const others = got[2];
      const meta = this.#meta;
      const broker = this.#broker;
      let pos = 0;
      let subject;
      for (let i = 0; i < count; i++) {
        const k = 4 * i;
        const packed = meta[k + 3];
        let m;
        if (packed === 0) {
          m = others[i];
        } else {
          if (packed === PACK_NEW_SUBJECT) {
            subject = bytes.toString('utf8', pos, pos + meta[k]);
            pos += meta[k];
          }
          let reply;
          const replyLen = meta[k + 1];
          if (replyLen !== PACK_NO_REPLY) {
            reply = bytes.toString('utf8', pos, pos + replyLen);
            pos += replyLen;
          }
          const end = pos + meta[k + 2];
          m = new PackedSubjectMessage(broker, this, subject, reply, bytes.subarray(pos, end));
          pos = end;
        }
        const waiter = this.#waiters.shift();
        if (waiter) waiter.resolve({ value: m, done: false });
        else this.#buffer.push(m);
      }
      if (count < want) {
        this.#watch(true);
        return;
      }
    }
  }

  #watch(on) {
    const keepAlive = on && this.#waiters.length > 0;
    if (this.#ended || (on === this.#watching && keepAlive === this.#keepAlive)) return;
    this.#watching = on;
    this.#keepAlive = keepAlive;
    native.consumerWatch(this.#ext, on, keepAlive);
  }

  #take() {
    const m = this.#buffer[this.#head];
    this.#buffer[this.#head++] = undefined;
    if (this.#head === this.#buffer.length) {
      this.#buffer = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#buffer.length) {
      this.#buffer = this.#buffer.slice(this.#head);
      this.#head = 0;
    }
    return m;
  }

  /** The async iterator protocol: the next message, or done once it ended. */
  next() {
    if (this.buffered > 0) {
      const m = this.#take();
      if (!this.#watching && !this.#ended && this.buffered <= this.#hwm >> 1) this.#pump();
      return Promise.resolve({ value: m, done: false });
    }
    if (this.#ended) {
      const error = this.#error;
      this.#error = null;
      return error ? Promise.reject(error) : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#watch(this.#watching);
    });
  }

  /** Ends iteration early (a `break` in `for await`): closes the consumer. */
  return() {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /**
   * Calls `callback(msg)` for each message, one at a time (a returned Promise is
   * awaited before the next). Resolves when the consumer ends; rejects with the
   * callback's error (closing the consumer) or the engine's.
   */
  async onMessage(callback) {
    if (typeof callback !== 'function') throw new TypeError('callback must be a function');
    for await (const msg of this) await callback(msg);
  }

  /**
   * Stops receiving: pending next() calls resolve done, buffered messages are
   * dropped (unacknowledged stream records and queue deliveries go back to the
   * engine for redelivery).
   */
  close() {
    this.#buffer = [];
    this.#head = 0;
    this.#end(null);
  }

  /** Ends it because its broker closes. */
  _shutdown() {
    this.close();
  }

  #end(err) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = err && !(err instanceof ShuttingDownError) ? err : null;
    this.#watching = false;
    native.consumerClose(this.#ext);
    this.#broker._forget(this);
    for (const waiter of this.#waiters.splice(0)) {
      if (this.#error) {
        waiter.reject(this.#error);
        this.#error = null;
      } else {
        waiter.resolve({ value: undefined, done: true });
      }
    }
  }

  /** Acknowledges one stream record or queue delivery this consumer received. */
  ack(msg) {
    native.ack(this.#ext, refOf(msg));
  }

  /** Acknowledges several messages (stream records in one request). */
  ackAll(msgs) {
    native.ackBatch(this.#ext, msgs.map(refOf));
  }

  /** Stream records: again after `delay` ms. Queue deliveries: requeued or rejected. */
  nack(msg, { requeue = true, delay = 0 } = {}) {
    native.nack(this.#ext, refOf(msg), delay, requeue);
  }

  /** Stream consumers: acknowledges every record of `msg`'s partition up to it. */
  commit(msg) {
    native.commit(this.#ext, refOf(msg));
  }
}

/** A subject subscription (Broker.subscribe). Its messages take no acknowledgement. */
class Subscription extends Consumer {}

/** A stream consumer (Broker.consume): a durable group's member, or ephemeral. */
class StreamConsumer extends Consumer {}

/** A queue consumer (Broker.consumeQueue). */
class QueueConsumer extends Consumer {
  #ext;

  constructor(broker, ext, hwm) {
    super(broker, ext, hwm);
    this.#ext = ext;
  }

  /** Acknowledges `deliveryTag` (and every earlier one with `multiple`). */
  ackTag(deliveryTag, { multiple = false } = {}) {
    native.queueAck(this.#ext, deliveryTag, multiple);
  }

  /** Rejects `deliveryTag` (and earlier ones with `multiple`), requeued by default. */
  nackTag(deliveryTag, { multiple = false, requeue = true } = {}) {
    native.queueNack(this.#ext, deliveryTag, multiple, requeue);
  }
}

// ------------------------------------------------------------------------------------
// Brokers

/**
 * A broker handle: embedded in this process (open()) or connected to a ringbrokerd
 * (connect()); every method behaves the same in both modes. Close it with close().
 */
class Broker {
  #ext;
  #closed = false;
  #closing = null;
  #pending = new Map();
  #publishes = 0;
  #nextToken = 1;
  #jobs = new Set();
  #consumers = new Set();
  #drained = null;

  /** Use open() or connect(). */
  constructor(ext) {
    this.#ext = ext;
    native.brokerSetup(ext, (list) => this.#onCompletions(list));
  }

  /** Starts an embedded broker: see the module's open(). */
  static open(options) {
    return open(options);
  }

  /** Connects to a ringbrokerd: see the module's connect(). */
  static connect(url, options) {
    return connect(url, options);
  }

  /** True for an embedded broker, false for a connection to a daemon. */
  get embedded() {
    this.#check();
    return native.isEmbedded(this.#ext);
  }

  /** True once close() was called. */
  get closed() {
    return this.#closed;
  }

  #check() {
    if (this.#closed) throw new ShuttingDownError('the broker is closed');
  }

  // Runs a call that may wait (on the thread pool); close() waits for it.
  #job(start) {
    this.#check();
    const promise = start();
    this.#jobs.add(promise);
    const forget = () => this.#jobs.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  #adopt(consumer, callback) {
    if (this.#closed) {
      consumer._shutdown();
      throw new ShuttingDownError('the broker was closed');
    }
    this.#consumers.add(consumer);
    if (callback !== undefined) consumer.done = consumer.onMessage(callback);
    return consumer;
  }

  /** @internal A consumer ended. */
  _forget(consumer) {
    this.#consumers.delete(consumer);
  }

  #track(entry) {
    const token = this.#nextToken++;
    this.#pending.set(token, entry);
    if (entry.kind !== 'request') this.#publishes++;
    if (this.#pending.size === 1) native.brokerRef(this.#ext, true);
    return token;
  }

  #untrack(token, entry) {
    this.#pending.delete(token);
    if (entry.kind !== 'request' && --this.#publishes === 0 && this.#drained) this.#drained();
    if (this.#pending.size === 0 && !this.#closing) native.brokerRef(this.#ext, false);
  }

  // [token, index, status, partition, offset, duplicate, queues, message, reply]
  #onCompletions(list) {
    for (const [token, index, status, partition, offset, duplicate, queues, message, reply] of list) {
      const entry = this.#pending.get(token);
      if (!entry) continue; // abandoned at close; its reply is collected with the array
      if (entry.kind === 'request') {
        this.#untrack(token, entry);
        if (status === 0) entry.resolve(reply);
        else entry.reject(errorFor(status, message));
        continue;
      }
      if (status === 0) {
        entry.results[index] = entry.kind === 'stream' ? { partition, offset, duplicate } : { queues };
      } else {
        const error = errorFor(status, message);
        entry.results[index] = { error };
        entry.error ??= error;
      }
      if (--entry.remaining > 0) continue;
      this.#untrack(token, entry);
      if (entry.error) {
        entry.error.results = entry.results;
        entry.reject(entry.error);
      } else {
        entry.resolve(entry.single ? entry.results[0] : entry.results);
      }
    }
  }

  // Starts an asynchronous publish: `build()` gives the items, `send(items, token)`
  // makes the C call. Every failure, argument errors included, rejects.
  #publishAsync(kind, single, build, send) {
    let items;
    try {
      this.#check();
      items = build();
    } catch (err) {
      return Promise.reject(err);
    }
    if (items.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      const entry = { kind, resolve, reject, results: new Array(items.length), remaining: items.length, single, error: null };
      const token = this.#track(entry);
      try {
        send(items, token);
      } catch (err) {
        this.#untrack(token, entry);
        reject(err);
      }
    });
  }

  // -- subjects --------------------------------------------------------------------

  /**
   * Publishes `data` on `subject` (fire and forget, at most once). `reply` names the
   * subject a responder answers to; `headers` travel with the message.
   */
  publish(subject, data, { reply, headers } = {}) {
    this.#check();
    if (headers) {
      native.publishBatch(this.#ext, [[subject, reply ?? null, toHeaders(headers), toBytes(data)]]);
    } else {
      native.publish(this.#ext, subject, reply ?? null, toBytes(data));
    }
  }

  /** Publishes several messages in one call ({ subject, data, reply?, headers? }). */
  publishBatch(messages) {
    this.#check();
    native.publishBatch(this.#ext, messages.map((m) =>
      [m.subject, m.reply ?? null, toHeaders(m.headers), toBytes(m.data)]));
  }

  /**
   * Subscribes to `pattern` (`*` one token, `>` the rest), in queue group `queue`
   * (one member of the group gets each message) if given. Resolves to a
   * Subscription; with `callback`, its onMessage(callback) runs (see `done`).
   */
  async subscribe(pattern, options = {}) {
    const { hwm, callback, config } = consumerOptions(options);
    const group = config.queue ?? null;
    const ext = await this.#job(() => native.subscribe(this.#ext, pattern, group));
    return this.#adopt(new Subscription(this, ext, hwm), callback);
  }

  /**
   * Sends a request and resolves to the first reply (a Message). Rejects with
   * NoRespondersError at once if nothing subscribes to `subject`, TimeoutError after
   * `timeout` ms (default 5000).
   */
  request(subject, data, { timeout = REQUEST_TIMEOUT_MS_DEFAULT } = {}) {
    try {
      this.#check();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const entry = { kind: 'request', resolve, reject };
      const token = this.#track(entry);
      try {
        native.requestAsync(this.#ext, subject, toBytes(data), timeout, token);
      } catch (err) {
        this.#untrack(token, entry);
        reject(err);
      }
    });
  }

  /** Answers request `msg` with `data` (same as msg.respond(data)). */
  respond(msg, data) {
    this.#check();
    if (msg._ref !== undefined) {
      native.respond(this.#ext, msg._ref, toBytes(data));
      return;
    }
    // A subject message without headers keeps no engine message (see the addon's
    // js_fetch and make_detached_message): its reply subject is all an answer needs.
    if (typeof msg.reply !== 'string' || msg.reply === '') {
      throw new InvalidArgumentError('the message has no reply subject');
    }
    native.publish(this.#ext, msg.reply, null, toBytes(data));
  }

  // -- streams ---------------------------------------------------------------------

  /**
   * Creates a stream (idempotent for the same definition): { name, subjects,
   * partitions, durability ('always' | 'none' | 'batch:<ms>:<bytes>'), maxRecords,
   * maxBytes, maxAgeMs, maxRecordBytes, dedupWindowMs, deadLetter, segmentBytesMax }.
   */
  async createStream(definition) {
    return this.#job(() => native.streamCreate(this.#ext, toConfig(definition)));
  }

  /** Changes a stream's retention, limits, dedup window or dead letter (whole definition). */
  async updateStream(definition) {
    return this.#job(() => native.streamUpdate(this.#ext, toConfig(definition)));
  }

  /** Deletes a stream, its records and consumers. */
  async deleteStream(name) {
    return this.#job(() => native.streamDelete(this.#ext, name));
  }

  /** A stream's figures: { partitions, records, bytes }. */
  async streamInfo(name) {
    return this.#job(() => native.streamInfo(this.#ext, name));
  }

  /**
   * Publishes a record to the stream whose subjects capture `subject`; resolves to
   * { partition, offset, duplicate } once stored under the stream's durability
   * policy. Records with one `key` keep their order in one partition; a `Msg-Id`
   * header deduplicates.
   */
  streamPublish(subject, data, { key, headers } = {}) {
    return this.#publishAsync('stream', true,
      () => [[subject, toBytes(key), toHeaders(headers), toBytes(data)]],
      (items, token) => native.streamPublish(this.#ext, items, token));
  }

  /**
   * Publishes records ({ subject, data, key?, headers? }) in one call; resolves to
   * their results in order. If any failed, rejects with the first error, whose
   * `results` holds every record's result ({ error } for the failed ones).
   */
  streamPublishBatch(records) {
    return this.#publishAsync('stream', false, () => records.map(recordItem),
      (items, token) => native.streamPublish(this.#ext, items, token));
  }

  /** Publishes records without learning their outcome (fire and forget). */
  streamPublishNowait(records) {
    this.#check();
    native.streamPublish(this.#ext, records.map(recordItem), -1);
  }

  /**
   * Creates a durable consumer on `stream`: { durable (its name), deliver ('all' |
   * 'new' | 'offset:<n>' | 'time:<unix_ms>'), filter, ack ('explicit' | 'none'),
   * ackWaitMs, maxDeliver, maxAckPending, heartbeatTimeoutMs }.
   */
  async createConsumer(stream, definition) {
    return this.#job(() => native.consumerCreate(this.#ext, stream, toConfig(definition)));
  }

  /** Deletes durable consumer `name` of `stream`. */
  async deleteConsumer(stream, name) {
    return this.#job(() => native.consumerDelete(this.#ext, stream, name));
  }

  /** A durable consumer's figures: { partitions, pending, assigned }. */
  async consumerInfo(stream, name) {
    return this.#job(() => native.consumerInfo(this.#ext, stream, name));
  }

  /**
   * Consumes `stream`: with { durable: name } joins that durable consumer's group
   * (members share the partitions); otherwise starts an ephemeral consumer from the
   * other options (deliver, filter, ack, ...: as createConsumer). Resolves to a
   * StreamConsumer.
   */
  async consume(stream, options = {}) {
    const { hwm, callback, config } = consumerOptions(options);
    const { durable, ...ephemeral } = config;
    if (durable !== undefined && Object.keys(ephemeral).length > 0) {
      throw new InvalidArgumentError('a durable consumer is defined by createConsumer(); join it with { durable } alone');
    }
    const ext = await this.#job(() => (durable !== undefined
      ? native.streamConsume(this.#ext, stream, checkName(durable, 'durable'), null)
      : native.streamConsume(this.#ext, stream, null, toConfig(ephemeral))));
    return this.#adopt(new StreamConsumer(this, ext, hwm), callback);
  }

  // -- exchanges and queues --------------------------------------------------------

  /** Declares an exchange: { name, kind ('direct' | 'fanout' | 'topic' | 'headers'), durable }. */
  async declareExchange(definition) {
    return this.#job(() => native.exchangeDeclare(this.#ext, toConfig(definition)));
  }

  /** Deletes an exchange (with ifUnused, only if nothing is bound to it). */
  async deleteExchange(name, { ifUnused = false } = {}) {
    return this.#job(() => native.exchangeDelete(this.#ext, name, ifUnused, false));
  }

  /** Binds exchange `destination` to exchange `source` with `routingKey`. */
  async bindExchange(destination, source, routingKey = '', { arguments: args } = {}) {
    return this.#job(() => native.exchangeBind(this.#ext, destination, source, routingKey, toHeaders(args)));
  }

  /**
   * Declares a queue (idempotent for the same definition): { name, durable,
   * exclusive, autoDelete, messageTtlMs, expiresMs, maxLength, maxLengthBytes,
   * overflow, deadLetterExchange, deadLetterRoutingKey, maxPriority }. Resolves to
   * its figures { messages, unacked, consumers }.
   */
  async declareQueue(definition) {
    return this.#job(() => native.queueDeclare(this.#ext, toConfig(definition)));
  }

  /** Deletes a queue; resolves to how many messages it held. */
  async deleteQueue(name, { ifUnused = false, ifEmpty = false } = {}) {
    return this.#job(() => native.queueDelete(this.#ext, name, ifUnused, ifEmpty));
  }

  /** Removes a queue's ready messages; resolves to how many. */
  async purgeQueue(name) {
    return this.#job(() => native.queuePurge(this.#ext, name));
  }

  /** A queue's figures: { messages, unacked, consumers }. */
  async queueInfo(name) {
    return this.#job(() => native.queueInfo(this.#ext, name));
  }

  /**
   * Binds `queue` to `exchange` with `routingKey`; `arguments` are what a headers
   * exchange matches ({ 'x-match': 'all' | 'any', ...headers }).
   */
  async bindQueue(queue, exchange, routingKey = '', { arguments: args } = {}) {
    return this.#job(() => native.queueBind(this.#ext, queue, exchange, routingKey, toHeaders(args)));
  }

  /** Removes the binding bindQueue() made with the same arguments. */
  async unbindQueue(queue, exchange, routingKey = '', { arguments: args } = {}) {
    return this.#job(() => native.queueUnbind(this.#ext, queue, exchange, routingKey, toHeaders(args)));
  }

  /**
   * Publishes to `exchange` ('' is the default exchange: routes to the queue named
   * by the routing key); resolves to { queues } once every queue it reached has it
   * (persistent copies synced). With `mandatory`, reaching no queue rejects with
   * UnroutableError.
   */
  exchangePublish(exchange, routingKey, data, options = {}) {
    return this.#publishAsync('exchange', true,
      () => [queueItem({ ...options, exchange, routingKey, data })],
      (items, token) => native.exchangePublish(this.#ext, items, Boolean(options.mandatory), token));
  }

  /**
   * Publishes several messages ({ exchange, routingKey, data, headers?, priority?,
   * persistent?, expirationMs? }) in one call; resolves to their { queues } in order
   * (rejects as streamPublishBatch does).
   */
  exchangePublishBatch(messages, { mandatory = false } = {}) {
    return this.#publishAsync('exchange', false, () => messages.map(queueItem),
      (items, token) => native.exchangePublish(this.#ext, items, mandatory, token));
  }

  /** Publishes without learning the confirms (fire and forget). */
  exchangePublishNowait(messages, { mandatory = false } = {}) {
    this.#check();
    native.exchangePublish(this.#ext, messages.map(queueItem), mandatory, -1);
  }

  /**
   * Consumes `queue`: { prefetch (unacknowledged deliveries at most, default 100),
   * noAck }. Resolves to a QueueConsumer.
   */
  async consumeQueue(queue, options = {}) {
    const { hwm, callback, config } = consumerOptions(options);
    const ext = await this.#job(() => native.queueConsume(this.#ext, queue, toConfig(config)));
    return this.#adopt(new QueueConsumer(this, ext, hwm), callback);
  }

  // -- closing ---------------------------------------------------------------------

  /**
   * Closes the broker: consumers end (their iterators finish), requests still
   * waiting reject with ShuttingDownError, asynchronous publishes are answered first
   * (up to 10 s), then the handle closes (an embedded broker syncs and stops).
   * Nothing of it keeps the process alive afterwards. Idempotent.
   */
  close() {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close() {
    this.#closed = true;
    for (const consumer of [...this.#consumers]) consumer._shutdown();
    for (const [token, entry] of [...this.#pending]) {
      if (entry.kind !== 'request') continue;
      this.#untrack(token, entry);
      entry.reject(new ShuttingDownError('the broker was closed before the reply came'));
    }
    await Promise.allSettled([...this.#jobs]);
    if (this.#publishes > 0) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, CLOSE_DRAIN_MS);
        this.#drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    try {
      await native.brokerClose(this.#ext);
    } finally {
      for (const [token, entry] of [...this.#pending]) {
        this.#pending.delete(token);
        entry.reject(new ShuttingDownError('the broker closed before the publish was answered'));
      }
    }
  }
}

function recordItem(r) {
  return [r.subject, toBytes(r.key), toHeaders(r.headers), toBytes(r.data)];
}

function queueItem(m) {
  const priority = m.priority ?? 0;
  const expirationMs = m.expirationMs ?? 0;
  return [m.exchange ?? '', m.routingKey ?? '', toHeaders(m.headers), toBytes(m.data),
    priority, Boolean(m.persistent), expirationMs];
}

// ------------------------------------------------------------------------------------
// Module

/**
 * Starts an embedded broker: { dataDir (required; created, and locked: one broker
 * per directory), shards (default one per core), pinToCores (default true) }.
 */
async function open(options = {}) {
  checkName(options.dataDir, 'dataDir');
  const ext = await native.open(toConfig(options));
  return new Broker(ext);
}

/**
 * Connects to a ringbrokerd at `url` ('ringbroker://host[:port]'): { authToken,
 * clientName, connectTimeoutMs, requestTimeoutMs, reconnect (default true) }.
 */
async function connect(url, options = {}) {
  checkName(url, 'url');
  const ext = await native.connect(url, toConfig(options));
  return new Broker(ext);
}

native.setup(errorFor, Message);

module.exports = {
  open,
  connect,
  Broker,
  Consumer,
  Subscription,
  StreamConsumer,
  QueueConsumer,
  Message,
  /** The library's version ("MAJOR.MINOR.PATCH"). */
  version: native.version(),
  /** The C ABI version the addon was built against. */
  abiVersion: native.abiVersion(),
  /**
   * Received messages whose engine memory JavaScript still holds (a Message or a
   * Buffer over its payload not yet garbage-collected).
   */
  messagesHeld: () => native.messagesHeld(),
  errors,
  ...errors,
};
