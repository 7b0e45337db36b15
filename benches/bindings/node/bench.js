// The Node program of benches/bindings (started by ./run; the contract is the top
// comment of ../run.sh): from one Node process, the ringbroker binding (embedded, and
// connected to RINGBROKER_URL) against nats.js on NATS_URL and amqplib on AMQP_URL.
//
// Workloads, 64-byte payloads, each bounded by BENCH_SECONDS and a count cap:
//   pubsub-64B         one subscriber, then one publisher (their own connections to a
//                      server); single-message publishes, yielding to the event loop
//                      every YIELD_EVERY; then flush and wait until everything arrived
//                      or IDLE_MS passed with nothing new. msgs/s = received / (first
//                      publish -> last receive); what was lost is reported, not hidden.
//   request-reply-64B  an echo responder in this process (its own connection), one
//                      requester awaiting each request in turn; p50/p99 of every
//                      request's latency, msgs/s = requests / elapsed.
//   publish-batch-64B  ringbroker only: pubsub-64B with publishBatch() of BATCH.
// Each measurement starts with a short warm-up that is not counted (payloads carry a
// marker byte: warm-up 0, measured 1), has an overall deadline, and closes every
// connection it opened, so the process exits by itself.
//
// stdout: one JSON object per measurement; everything else goes to stderr.
// BENCH_FILTER (optional, for trying things out): a regular expression; only the
// measurements whose "client workload" matches it run.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { once } = require('node:events');
const { performance } = require('node:perf_hooks');
const { setImmediate: nextTurn, setTimeout: sleep } = require('node:timers/promises');

const rb = require(path.join(__dirname, '..', '..', '..', 'bindings', 'node'));

const SECONDS = Number(process.env.BENCH_SECONDS) > 0 ? Number(process.env.BENCH_SECONDS) : 5;
const PAYLOAD_BYTES = 64;
const PUBSUB_CAP = 3_000_000;
const REQUEST_CAP = 100_000;
const YIELD_EVERY = 256; // publishes between turns of the event loop
const BATCH = 256; // messages per publishBatch()
const IDLE_MS = 2000; // waiting for the rest: give up after this long with nothing new
const REQUEST_TIMEOUT_MS = 1000;
const REQUEST_ERRORS_MAX = 10;
const WARMUP_MESSAGES = 20_000;
const WARMUP_REQUESTS = 1000;
const WARMUP_MS = 500;
// One measurement may take this long in all (setup, warm-up, run, drain, close).
const MEASUREMENT_DEADLINE_MS = SECONDS * 1000 * 2 + 30_000;
const CLOSE_DEADLINE_MS = 15_000;

const log = (...args) => console.error('bench-node:', ...args);

function payload(marker) {
  const buf = Buffer.alloc(PAYLOAD_BYTES, 0x61);
  buf[0] = marker;
  return buf;
}
const WARM = payload(0);
const MEASURED = payload(1);

/** Rejects after `ms` if `promise` has not settled by then. */
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// What publish() tells the loop: sent; sent, but wait for drained() before the next;
// refused (not sent: yield, then try again).
const SENT = 0;
const SENT_WAIT = 1;
const REFUSED = 2;

// ------------------------------------------------------------------------------------
// Systems. Each opens a context (its connections) per measurement, and offers:
//   subscribe(ctx, subject, onData, { batch })  -> async stop()
//   publish(ctx, subject, buf)                   -> SENT | SENT_WAIT | REFUSED
//   publishBatch(ctx, items)                     -> SENT | REFUSED (ringbroker only)
//   drained(ctx), flush(ctx)                     -> Promise
//   serveEcho(ctx, subject)                      -> async stop()
//   request(ctx, subject, buf, timeoutMs)        -> Promise (the reply)
//   close(ctx)                                   -> Promise

function ringbrokerSystem(name, url) {
  return {
    name,
    batch: true,
    async open() {
      if (!url) {
        const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rb-bench-node-'));
        const ctx = { dataDir, brokers: [] };
        // Shards: the default (one per core). Pinned only if BENCH_PIN_TO_CORES=true
        // (benches/bindings/run.sh sets it, default false): this process's own thread
        // shares the cores with the shards (pinned, request-reply p99 was ten times
        // worse on a busy 2-core machine).
        const b = await rb.open({ dataDir, pinToCores: process.env.BENCH_PIN_TO_CORES === 'true' });
        ctx.brokers.push(b);
        ctx.pub = b;
        ctx.sub = b;
        return ctx;
      }
      // Publisher (requester) and subscriber (responder): a connection each.
      const ctx = { brokers: [] };
      ctx.pub = await rb.connect(url, { reconnect: false, clientName: 'bench-node-pub' });
      ctx.brokers.push(ctx.pub);
      ctx.sub = await rb.connect(url, { reconnect: false, clientName: 'bench-node-sub' });
      ctx.brokers.push(ctx.sub);
      return ctx;
    },
    async subscribe(ctx, subject, onData, { batch = false } = {}) {
      // The binding's receive path is its async iterator (onMessage/callback add an
      // await per message); a batch consumer gets a larger buffer to fetch into.
      const sub = await ctx.sub.subscribe(subject, { highWaterMark: batch ? 16384 : 1024 });
      const loop = (async () => {
        for await (const msg of sub) onData(msg.data);
      })().catch((err) => log(`${name}: subscription ended: ${err.message}`));
      return async () => {
        sub.close();
        await loop;
      };
    },
    publish(ctx, subject, buf) {
      try {
        ctx.pub.publish(subject, buf);
        return SENT;
      } catch (err) {
        if (err instanceof rb.BackpressureError) return REFUSED;
        throw err;
      }
    },
    publishBatch(ctx, items) {
      try {
        ctx.pub.publishBatch(items);
        return SENT;
      } catch (err) {
        if (err instanceof rb.BackpressureError) return REFUSED;
        throw err;
      }
    },
    async drained() {},
    // publish() is fire and forget: nothing to flush (no flush call in the API).
    async flush() {},
    async serveEcho(ctx, subject) {
      const sub = await ctx.sub.subscribe(subject);
      const loop = (async () => {
        for await (const msg of sub) msg.respond(msg.data);
      })().catch((err) => log(`${name}: responder ended: ${err.message}`));
      return async () => {
        sub.close();
        await loop;
      };
    },
    request(ctx, subject, buf, timeout) {
      return ctx.pub.request(subject, buf, { timeout });
    },
    async close(ctx) {
      for (const b of ctx.brokers) await b.close();
      if (ctx.dataDir) fs.rmSync(ctx.dataDir, { recursive: true, force: true });
    },
  };
}

function natsSystem(url) {
  const nats = require('nats');
  return {
    name: 'nats',
    batch: false,
    async open() {
      const ctx = { conns: [] };
      ctx.pub = await nats.connect({ servers: url, name: 'bench-node-pub' });
      ctx.conns.push(ctx.pub);
      ctx.sub = await nats.connect({ servers: url, name: 'bench-node-sub' });
      ctx.conns.push(ctx.sub);
      return ctx;
    },
    async subscribe(ctx, subject, onData) {
      // A callback subscription: nats.js's fastest receive path.
      const sub = ctx.sub.subscribe(subject, {
        callback: (err, msg) => {
          if (err) log(`nats: subscription: ${err.message}`);
          else onData(msg.data);
        },
      });
      await ctx.sub.flush(); // the server has the SUB before anything is published
      return async () => sub.unsubscribe();
    },
    publish(ctx, subject, buf) {
      ctx.pub.publish(subject, buf);
      return SENT;
    },
    async drained() {},
    async flush(ctx) {
      await ctx.pub.flush();
    },
    async serveEcho(ctx, subject) {
      const sub = ctx.sub.subscribe(subject, {
        callback: (err, msg) => {
          if (err) log(`nats: responder: ${err.message}`);
          else msg.respond(msg.data);
        },
      });
      await ctx.sub.flush();
      return async () => sub.unsubscribe();
    },
    request(ctx, subject, buf, timeout) {
      return ctx.pub.request(subject, buf, { timeout });
    },
    async close(ctx) {
      for (const nc of ctx.conns) await nc.close();
    },
  };
}

function rabbitmqSystem(url) {
  const amqp = require('amqplib');
  const REPLY_TO = 'amq.rabbitmq.reply-to';
  const opened = async (ctx, label) => {
    // TCP_NODELAY, as nats.js and the ringbroker client set it (amqplib leaves Nagle on
    // unless asked; with it on, a request waits for the previous segment's ACK), and a
    // bound on connecting (it has none by default).
    const conn = await amqp.connect(url, { noDelay: true, timeout: 10_000 });
    conn.on('error', (err) => log(`rabbitmq ${label} connection: ${err.message}`));
    ctx.conns.push(conn);
    const ch = await conn.createChannel();
    ch.on('error', (err) => log(`rabbitmq ${label} channel: ${err.message}`));
    return ch;
  };
  return {
    name: 'rabbitmq',
    batch: false,
    async open() {
      const ctx = { conns: [], pending: new Map(), nextId: 1, replies: false };
      ctx.pubCh = await opened(ctx, 'pub');
      ctx.subCh = await opened(ctx, 'sub');
      return ctx;
    },
    async subscribe(ctx, _subject, onData) {
      // An exclusive auto-delete server-named queue, reached through the default
      // exchange by its name; consumed without acknowledgements.
      const { queue } = await ctx.subCh.assertQueue('', { exclusive: true, autoDelete: true });
      ctx.queue = queue;
      const { consumerTag } = await ctx.subCh.consume(queue, (msg) => {
        if (msg) onData(msg.content);
      }, { noAck: true });
      return async () => {
        await ctx.subCh.cancel(consumerTag);
      };
    },
    publish(ctx, _subject, buf) {
      // false: the channel's buffer is full; wait for 'drain' before the next.
      return ctx.pubCh.sendToQueue(ctx.queue, buf) ? SENT : SENT_WAIT;
    },
    drained(ctx) {
      return once(ctx.pubCh, 'drain');
    },
    async flush() {},
    async serveEcho(ctx, subject) {
      await ctx.subCh.assertQueue(subject, { exclusive: true, autoDelete: true });
      const { consumerTag } = await ctx.subCh.consume(subject, (msg) => {
        if (!msg) return;
        ctx.subCh.sendToQueue(msg.properties.replyTo, msg.content,
          { correlationId: msg.properties.correlationId });
      }, { noAck: true });
      return async () => {
        await ctx.subCh.cancel(consumerTag);
      };
    },
    async request(ctx, subject, buf, timeout) {
      if (!ctx.replies) {
        // Direct reply-to: consume the pseudo-queue (noAck) before the first request.
        await ctx.pubCh.consume(REPLY_TO, (msg) => {
          if (!msg) return;
          const waiter = ctx.pending.get(msg.properties.correlationId);
          if (!waiter) return;
          ctx.pending.delete(msg.properties.correlationId);
          clearTimeout(waiter.timer);
          waiter.resolve(msg);
        }, { noAck: true });
        ctx.replies = true;
      }
      const id = String(ctx.nextId++);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          ctx.pending.delete(id);
          reject(new Error(`rabbitmq: no reply within ${timeout} ms`));
        }, timeout);
        ctx.pending.set(id, { resolve, timer });
        ctx.pubCh.sendToQueue(subject, buf, { replyTo: REPLY_TO, correlationId: id });
      });
    },
    async close(ctx) {
      for (const { timer } of ctx.pending.values()) clearTimeout(timer);
      ctx.pending.clear();
      for (const conn of ctx.conns) await conn.close();
    },
  };
}

// ------------------------------------------------------------------------------------
// Workloads

/** Waits until `done()` or `idleMs` without progress (`progressAt()` is the last). */
async function settle(done, progressAt, idleMs, abort) {
  while (!done() && !abort.aborted && performance.now() - progressAt() < idleMs) await sleep(5);
}

/** Publishes `count` messages (or until `until`), yielding every YIELD_EVERY. */
async function publishLoop(sys, ctx, subject, buf, { count, until, batch, abort, onFirst }) {
  let sent = 0;
  let refused = 0;
  const items = batch ? Array.from({ length: BATCH }, () => ({ subject, data: buf })) : null;
  if (onFirst) onFirst();
  while (sent < count && !abort.aborted && performance.now() < until) {
    if (batch) {
      const n = Math.min(BATCH, count - sent);
      const r = sys.publishBatch(ctx, n === BATCH ? items : items.slice(0, n));
      if (r === REFUSED) refused++;
      else sent += n;
    } else {
      const end = Math.min(count, sent + YIELD_EVERY);
      while (sent < end) {
        const r = sys.publish(ctx, subject, buf);
        if (r === REFUSED) {
          refused++;
          break;
        }
        sent++;
        if (r === SENT_WAIT) await sys.drained(ctx);
      }
    }
    await nextTurn();
  }
  return { sent, refused };
}

async function pubsub(sys, ctx, subject, abort, { batch }) {
  let warmReceived = 0;
  let received = 0;
  let lastAt = 0;
  const stop = await sys.subscribe(ctx, subject, (data) => {
    if (data[0] === 1) {
      received++;
      lastAt = performance.now();
    } else {
      warmReceived++;
    }
  }, { batch });
  try {
    // Warm-up, not counted: until it all arrived, or 300 ms passed with nothing new.
    const warm = await publishLoop(sys, ctx, subject, WARM,
      { count: WARMUP_MESSAGES, until: performance.now() + WARMUP_MS, batch, abort });
    await sys.flush(ctx);
    let warmSeen = -1;
    let warmAt = performance.now();
    await settle(() => warmReceived >= warm.sent, () => {
      if (warmReceived !== warmSeen) {
        warmSeen = warmReceived;
        warmAt = performance.now();
      }
      return warmAt;
    }, 300, abort);

    let firstAt = 0;
    const until = performance.now() + SECONDS * 1000;
    const { sent, refused } = await publishLoop(sys, ctx, subject, MEASURED,
      { count: PUBSUB_CAP, until, batch, abort, onFirst: () => { firstAt = performance.now(); } });
    await sys.flush(ctx);
    const publishedAt = performance.now();
    await settle(() => received >= sent, () => Math.max(lastAt, publishedAt), IDLE_MS, abort);
    log(`${sys.name}: published ${sent} in ${((publishedAt - firstAt) / 1000).toFixed(2)} s` +
      `${refused ? ` (${refused} calls refused: backpressure, retried)` : ''}, ` +
      `received ${received}, the last at ${((lastAt - firstAt) / 1000).toFixed(2)} s`);
    const elapsed = (lastAt - firstAt) / 1000;
    return {
      msgs_per_s: received > 0 && elapsed > 0 ? received / elapsed : 0,
      p50_us: null,
      p99_us: null,
      sent,
      received,
    };
  } finally {
    await stop();
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function requestReply(sys, ctx, subject, abort) {
  const stop = await sys.serveEcho(ctx, subject);
  try {
    const warmUntil = performance.now() + WARMUP_MS;
    for (let i = 0; i < WARMUP_REQUESTS && performance.now() < warmUntil && !abort.aborted; i++) {
      await sys.request(ctx, subject, WARM, REQUEST_TIMEOUT_MS);
    }
    const latencies = new Float64Array(REQUEST_CAP);
    let sent = 0;
    let received = 0;
    let errors = 0;
    const started = performance.now();
    const until = started + SECONDS * 1000;
    while (sent < REQUEST_CAP && !abort.aborted) {
      const t0 = performance.now();
      if (t0 >= until) break;
      sent++;
      try {
        await sys.request(ctx, subject, MEASURED, REQUEST_TIMEOUT_MS);
        latencies[received++] = performance.now() - t0;
      } catch (err) {
        if (++errors === 1) log(`${sys.name}: request failed: ${err.message}`);
        if (errors >= REQUEST_ERRORS_MAX) {
          log(`${sys.name}: ${errors} failed requests: stopping`);
          break;
        }
      }
    }
    const elapsed = (performance.now() - started) / 1000;
    if (errors) log(`${sys.name}: ${errors} of ${sent} requests failed`);
    const sorted = latencies.subarray(0, received).sort();
    const us = (ms) => (ms === null ? null : Math.round(ms * 10000) / 10);
    return {
      msgs_per_s: elapsed > 0 ? received / elapsed : 0,
      p50_us: us(percentile(sorted, 50)),
      p99_us: us(percentile(sorted, 99)),
      sent,
      received,
    };
  } finally {
    await stop();
  }
}

const WORKLOADS = [
  { name: 'pubsub-64B', run: (sys, ctx, subject, abort) => pubsub(sys, ctx, subject, abort, { batch: false }) },
  { name: 'request-reply-64B', run: requestReply },
  { name: 'publish-batch-64B', batchOnly: true, run: (sys, ctx, subject, abort) => pubsub(sys, ctx, subject, abort, { batch: true }) },
];

// ------------------------------------------------------------------------------------
// Main

let measurementId = 0;

/** Opens the system's connections, runs one workload within the deadline, closes. */
async function measure(sys, workload) {
  const abort = { aborted: false };
  const subject = `bench.node.${process.pid}.${++measurementId}`;
  let ctx;
  try {
    const opening = sys.open();
    ctx = await within(opening, 30_000, `${sys.name}: connecting`).catch((err) => {
      // Connected too late, if ever: closed as soon as it is.
      opening.then((late) => sys.close(late), () => {}).catch(() => {});
      throw err;
    });
    const result = await within(workload.run(sys, ctx, subject, abort), MEASUREMENT_DEADLINE_MS,
      `${sys.name} ${workload.name}`);
    return result;
  } finally {
    abort.aborted = true;
    if (ctx) {
      await within(sys.close(ctx), CLOSE_DEADLINE_MS, `${sys.name}: closing`)
        .catch((err) => log(err.message));
    }
  }
}

async function main() {
  const systems = [ringbrokerSystem('ringbroker-embedded', null)];
  const urlOf = (name) => (process.env[name] || '').trim();
  if (urlOf('RINGBROKER_URL')) systems.push(ringbrokerSystem('ringbroker-remote', urlOf('RINGBROKER_URL')));
  if (urlOf('NATS_URL')) systems.push(natsSystem(urlOf('NATS_URL')));
  if (urlOf('AMQP_URL')) systems.push(rabbitmqSystem(urlOf('AMQP_URL')));
  log(`node ${process.version}, ringbroker ${rb.version}, ${SECONDS} s per measurement, ` +
    `systems: ${systems.map((s) => s.name).join(', ')}`);

  const filter = process.env.BENCH_FILTER ? new RegExp(process.env.BENCH_FILTER) : null;
  let ok = 0;
  let failed = 0;
  for (const sys of systems) {
    for (const workload of WORKLOADS) {
      if (workload.batchOnly && !sys.batch) continue;
      if (filter && !filter.test(`${sys.name} ${workload.name}`)) continue;
      try {
        const r = await measure(sys, workload);
        const row = {
          client: sys.name,
          workload: workload.name,
          msgs_per_s: Math.round(r.msgs_per_s * 10) / 10,
          p50_us: r.p50_us,
          p99_us: r.p99_us,
          sent: r.sent,
          received: r.received,
        };
        process.stdout.write(`${JSON.stringify(row)}\n`);
        log(`${sys.name} ${workload.name}: ${Math.round(r.msgs_per_s)} msgs/s, ` +
          `sent ${r.sent}, received ${r.received}` +
          (r.p99_us !== null ? `, p50 ${r.p50_us} us, p99 ${r.p99_us} us` : ''));
        ok++;
      } catch (err) {
        failed++;
        log(`${sys.name} ${workload.name} failed: ${err.stack || err.message}`);
      }
    }
  }
  log(`${ok} measurements, ${failed} failed`);
  return ok > 0 ? 0 : 1;
}

main().then((code) => {
  process.exitCode = code;
  // Everything is closed: the process should exit by itself now. If something still
  // holds the event loop, say so and leave anyway (an unref'd timer keeps nothing
  // alive by itself).
  setTimeout(() => {
    log('still running 10 s after closing every connection: exiting');
    process.exit(code);
  }, 10_000).unref();
}, (err) => {
  log(`fatal: ${err.stack || err.message}`);
  process.exit(1);
});
