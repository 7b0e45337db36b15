// TypeScript declarations of the `ringbroker` package (bindings/node). The guide is
// docs/node.md; the C API underneath is include/ringbroker.h.

/// <reference types="node" />

/** A payload, key or header value: strings are sent as UTF-8. */
export type Data = string | Buffer | ArrayBufferView | ArrayBuffer;

/** Headers: an object, a Map or [name, value] pairs (names may repeat in pairs). */
export type Headers = Record<string, Data> | Map<string, Data> | Array<[string, Data]>;

/** Options of open(): an embedded broker. */
export interface OpenOptions {
  /** Its directory (created if missing; locked, so one broker per directory). */
  dataDir: string;
  /** Shards (default: one per core). */
  shards?: number;
  /** Pin each shard's thread to a core (default true). */
  pinToCores?: boolean;
  /**
   * How long an idle shard spins before it sleeps, in microseconds, 0 to 1000000
   * (default 0). Trades CPU, and the throughput of what shares the cores, for latency.
   */
  idleSpinUs?: number;
}

/** Options of connect(): a connection to a ringbrokerd. */
export interface ConnectOptions {
  authToken?: string;
  clientName?: string;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Re-make a dropped connection and its subscriptions (default true). */
  reconnect?: boolean;
}

/** Options every consumer takes. */
export interface ConsumerOptions {
  /** Received messages buffered before the reader takes them, at most (default 1024). */
  highWaterMark?: number;
  /** Runs consumer.onMessage(callback); its Promise is consumer.done. */
  callback?: (msg: Message) => unknown;
}

export interface SubscribeOptions extends ConsumerOptions {
  /** A queue group: each message goes to one member of the group. */
  queue?: string;
}

export interface StreamDefinition {
  name: string;
  /** Subject patterns the stream captures. */
  subjects: string | string[];
  partitions?: number;
  /** 'always' | 'none' | 'batch:<max_delay_ms>:<max_bytes>' */
  durability?: string;
  maxRecords?: number;
  maxBytes?: number;
  maxAgeMs?: number;
  maxRecordBytes?: number;
  dedupWindowMs?: number;
  deadLetter?: string;
  segmentBytesMax?: number;
}

/** How a stream consumer delivers (durable definitions and ephemeral consumers). */
export interface ConsumerSettings {
  /** 'all' | 'new' | 'offset:<n>' | 'time:<unix_ms>' */
  deliver?: string;
  filter?: string;
  /** 'explicit' | 'none' */
  ack?: string;
  ackWaitMs?: number;
  maxDeliver?: number;
  maxAckPending?: number;
  heartbeatTimeoutMs?: number;
}

export interface ConsumerDefinition extends ConsumerSettings {
  /** The durable consumer's name. */
  durable: string;
}

/** consume(): `{ durable }` joins a durable consumer's group; settings alone start an ephemeral one. */
export type ConsumeOptions = ConsumerOptions & ({ durable: string } | (ConsumerSettings & { durable?: undefined }));

export interface ExchangeDefinition {
  name: string;
  kind: 'direct' | 'fanout' | 'topic' | 'headers';
  durable?: boolean;
}

export interface QueueDefinition {
  name: string;
  durable?: boolean;
  exclusive?: boolean;
  autoDelete?: boolean;
  messageTtlMs?: number;
  expiresMs?: number;
  maxLength?: number;
  maxLengthBytes?: number;
  overflow?: 'drop-head' | 'reject-publish';
  deadLetterExchange?: string;
  deadLetterRoutingKey?: string;
  maxPriority?: number;
}

export interface QueueConsumeOptions extends ConsumerOptions {
  /** Unacknowledged deliveries at most (default 100). */
  prefetch?: number;
  noAck?: boolean;
}

export interface StreamInfo { partitions: number; records: number; bytes: number; }
export interface ConsumerInfo { partitions: number; pending: number; assigned: number; }
export interface QueueInfo { messages: number; unacked: number; consumers: number; }

/** Where a stream record was stored. */
export interface PublishResult { partition: number; offset: number; duplicate: boolean; }
/** How many queues an exchange publish reached. */
export interface Confirm { queues: number; }

export interface SubjectMessageInput { subject: string; data?: Data; reply?: string; headers?: Headers; }
export interface RecordInput { subject: string; data?: Data; key?: Data; headers?: Headers; }
export interface QueueMessageInput {
  exchange: string;
  routingKey: string;
  data?: Data;
  headers?: Headers;
  /** 0 to 255, for queues with maxPriority. */
  priority?: number;
  persistent?: boolean;
  expirationMs?: number;
}

export interface ExchangePublishOptions {
  headers?: Headers;
  priority?: number;
  persistent?: boolean;
  expirationMs?: number;
  /** Reaching no queue rejects with UnroutableError. */
  mandatory?: boolean;
}

export interface BindOptions {
  /** What a headers exchange matches ({ 'x-match': 'all' | 'any', ...headers }). */
  arguments?: Headers;
}

/**
 * A received message. `data` is a copy of the payload (one copy, made on receipt),
 * the caller's to keep and to write: JavaScript has no read-only Buffer, and the
 * engine's memory may be read-only or shared between subscribers. The engine's
 * message is freed once the Message is garbage-collected; `data` outlives it. A small
 * subject message without headers has its `data` in a Buffer shared by the messages
 * of one receive (its own range of it, as pooled Buffers share a slab).
 */
export class Message {
  private constructor();
  readonly kind: 'subject' | 'stream' | 'queue';
  readonly data: Buffer;
  /** Subject messages and stream records: the subject; queue deliveries: the routing key. */
  readonly subject: string;
  /** Subject messages: where a reply goes. */
  readonly reply?: string;
  /** Stream records. */
  readonly key?: Buffer;
  readonly partition?: number;
  readonly offset?: number;
  /** Stream records: milliseconds since the Unix epoch, when stored. */
  readonly timestamp?: number;
  readonly deliveryCount?: number;
  /** Queue deliveries. */
  readonly routingKey?: string;
  readonly exchange?: string;
  readonly queue?: string;
  readonly deliveryTag?: number;
  readonly redelivered?: boolean;
  readonly priority?: number;
  readonly persistent?: boolean;
  /** The payload as UTF-8. */
  readonly text: string;
  /** The headers in order (copied on first use). */
  readonly headers: Array<[string, Buffer]>;
  /** The payload parsed as JSON. */
  json<T = unknown>(): T;
  /** The first header called `name`, as UTF-8. */
  header(name: string): string | undefined;
  /** Answers this request. */
  respond(data?: Data): void;
  /** Acknowledges this stream record or queue delivery. */
  ack(): void;
  /** Stream records: again after `delay` ms; queue deliveries: requeued (default) or rejected. */
  nack(options?: { requeue?: boolean; delay?: number }): void;
  /** Queue deliveries: rejected without requeue. */
  reject(): void;
  /** Stream records: acknowledges its partition up to this record. */
  commit(): void;
}

/** A subscription or consumer: an async iterator of messages, with callbacks. */
export class Consumer implements AsyncIterableIterator<Message> {
  protected constructor();
  readonly broker: Broker;
  /** True once it ended. */
  readonly closed: boolean;
  /** Messages received and not yet taken. */
  readonly buffered: number;
  /** The onMessage() loop the `callback` option started. */
  done: Promise<void> | undefined;
  next(): Promise<IteratorResult<Message, undefined>>;
  return(): Promise<IteratorResult<Message, undefined>>;
  [Symbol.asyncIterator](): this;
  /** Calls `callback` for each message, one at a time; settles when the consumer ends. */
  onMessage(callback: (msg: Message) => unknown): Promise<void>;
  /** Stops receiving; pending next() calls resolve done. */
  close(): void;
  ack(msg: Message): void;
  ackAll(msgs: Message[]): void;
  nack(msg: Message, options?: { requeue?: boolean; delay?: number }): void;
  commit(msg: Message): void;
}

export class Subscription extends Consumer {}
export class StreamConsumer extends Consumer {}
export class QueueConsumer extends Consumer {
  ackTag(deliveryTag: number, options?: { multiple?: boolean }): void;
  nackTag(deliveryTag: number, options?: { multiple?: boolean; requeue?: boolean }): void;
}

/** A broker handle, embedded or connected; the same methods either way. */
export class Broker {
  private constructor();
  static open(options: OpenOptions): Promise<Broker>;
  static connect(url: string, options?: ConnectOptions): Promise<Broker>;
  readonly embedded: boolean;
  readonly closed: boolean;

  publish(subject: string, data?: Data, options?: { reply?: string; headers?: Headers }): void;
  publishBatch(messages: SubjectMessageInput[]): void;
  subscribe(pattern: string, options?: SubscribeOptions): Promise<Subscription>;
  request(subject: string, data?: Data, options?: { timeout?: number }): Promise<Message>;
  respond(msg: Message, data?: Data): void;

  createStream(definition: StreamDefinition): Promise<void>;
  updateStream(definition: StreamDefinition): Promise<void>;
  deleteStream(name: string): Promise<void>;
  streamInfo(name: string): Promise<StreamInfo>;
  streamPublish(subject: string, data?: Data, options?: { key?: Data; headers?: Headers }): Promise<PublishResult>;
  streamPublishBatch(records: RecordInput[]): Promise<PublishResult[]>;
  streamPublishNowait(records: RecordInput[]): void;
  createConsumer(stream: string, definition: ConsumerDefinition): Promise<void>;
  deleteConsumer(stream: string, name: string): Promise<void>;
  consumerInfo(stream: string, name: string): Promise<ConsumerInfo>;
  consume(stream: string, options?: ConsumeOptions): Promise<StreamConsumer>;

  declareExchange(definition: ExchangeDefinition): Promise<void>;
  deleteExchange(name: string, options?: { ifUnused?: boolean }): Promise<void>;
  bindExchange(destination: string, source: string, routingKey?: string, options?: BindOptions): Promise<void>;
  declareQueue(definition: QueueDefinition): Promise<QueueInfo>;
  deleteQueue(name: string, options?: { ifUnused?: boolean; ifEmpty?: boolean }): Promise<number>;
  purgeQueue(name: string): Promise<number>;
  queueInfo(name: string): Promise<QueueInfo>;
  bindQueue(queue: string, exchange: string, routingKey?: string, options?: BindOptions): Promise<void>;
  unbindQueue(queue: string, exchange: string, routingKey?: string, options?: BindOptions): Promise<void>;
  exchangePublish(exchange: string, routingKey: string, data?: Data, options?: ExchangePublishOptions): Promise<Confirm>;
  exchangePublishBatch(messages: QueueMessageInput[], options?: { mandatory?: boolean }): Promise<Confirm[]>;
  exchangePublishNowait(messages: QueueMessageInput[], options?: { mandatory?: boolean }): void;
  consumeQueue(queue: string, options?: QueueConsumeOptions): Promise<QueueConsumer>;

  /** Ends consumers and pending requests, waits for publishes, closes. Idempotent. */
  close(): Promise<void>;
}

/** Starts an embedded broker. */
export function open(options: OpenOptions): Promise<Broker>;
/** Connects to a ringbrokerd at 'ringbroker://host[:port]'. */
export function connect(url: string, options?: ConnectOptions): Promise<Broker>;
/** The library's version. */
export const version: string;
/** The C ABI version the addon was built against. */
export const abiVersion: number;
/** Received messages JavaScript still holds (engine memory not yet freed). */
export function messagesHeld(): number;

/** Status numbers by name, as include/ringbroker.h defines them. */
export const STATUSES: Readonly<Record<string, number>>;
/** The status name ("NOT_FOUND") of a number, or "UNKNOWN". */
export function statusName(status: number): string;
/** The error for a status: its subclass of RingbrokerError. */
export function errorFor(status: number, message?: string): RingbrokerError;

/** Every error for a ringbroker status; `code` is `ERR_RINGBROKER_<STATUS NAME>`. */
export class RingbrokerError extends Error {
  constructor(message: string, status?: number);
  readonly status: number;
  readonly code: string;
  /** Batch publishes: every item's outcome. */
  results?: Array<PublishResult | Confirm | { error: RingbrokerError }>;
}
export class MalformedError extends RingbrokerError {}
export class FrameTooLargeError extends RingbrokerError {}
export class UnknownOpError extends RingbrokerError {}
export class OutOfStateError extends RingbrokerError {}
export class VersionUnsupportedError extends RingbrokerError {}
export class AuthFailedError extends RingbrokerError {}
export class NotFoundError extends RingbrokerError {}
export class AlreadyExistsError extends RingbrokerError {}
export class InvalidArgumentError extends RingbrokerError {}
export class NoRespondersError extends RingbrokerError {}
export class TimeoutError extends RingbrokerError {}
export class BackpressureError extends RingbrokerError {}
export class ShuttingDownError extends RingbrokerError {}
export class RefusedError extends RingbrokerError {}
export class LockedError extends RingbrokerError {}
export class UnroutableError extends RingbrokerError {}
export class SlowConsumerError extends RingbrokerError {}
export class IdleTimeoutError extends RingbrokerError {}
export class InternalError extends RingbrokerError {}
export class IdInUseError extends RingbrokerError {}
export class DisconnectedError extends RingbrokerError {}
export class WouldBlockError extends RingbrokerError {}
export class WrongKindError extends RingbrokerError {}

/** The error classes and helpers above, as one object. */
export const errors: {
  STATUSES: typeof STATUSES;
  statusName: typeof statusName;
  errorFor: typeof errorFor;
  RingbrokerError: typeof RingbrokerError;
  [name: string]: unknown;
};
