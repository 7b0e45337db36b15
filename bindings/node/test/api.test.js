// Every API call of the binding and its error paths, run twice: on an embedded
// broker and against a ringbrokerd this file starts (and stops by pid) on an
// ephemeral loopback port. Names carry the mode so both runs stay apart.
'use strict';

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const rb = require('..');
const { startDaemon, openBroker, nextMessage, within, tmpDir, sleep } = require('./helpers');

let daemon;
before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

function rejectsWith(promise, cls, code) {
  return assert.rejects(promise, (err) => {
    assert.ok(err instanceof cls, `${err.name}: ${err.message} is not a ${cls.name}`);
    assert.ok(err instanceof rb.RingbrokerError);
    assert.equal(err.code, code);
    return true;
  });
}

/**
 * Occupies every libuv pool thread for a while (CPU-bound pbkdf2 jobs queued ahead),
 * so that a binding job queued next runs only after the caller's next synchronous
 * statements; resolves when the pool is free again.
 */
function occupyThreadPool() {
  const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  const jobs = [];
  for (let i = 0; i < threads; i++) {
    jobs.push(new Promise((resolve, reject) => crypto.pbkdf2('p', 's', 100000, 32, 'sha256',
      (err) => (err ? reject(err) : resolve()))));
  }
  return Promise.all(jobs);
}

function throwsWith(fn, cls, code) {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof cls, `${err.name}: ${err.message} is not a ${cls.name}`);
    assert.equal(err.code, code);
    return true;
  });
}

for (const mode of ['embedded', 'remote']) {
  describe(`${mode} broker`, () => {
    let b;
    const n = (base) => `${base}-${mode}`;
    before(async () => {
      b = await openBroker(mode, daemon.url);
    });
    after(async () => {
      await b?.close();
    });

    it('reports its mode', () => {
      assert.equal(b.embedded, mode === 'embedded');
      assert.equal(b.closed, false);
    });

    it('publishes and subscribes with wildcards, headers and replies', async () => {
      const sub = await b.subscribe(`n.${mode}.>`);
      b.publish(`n.${mode}.a`, 'one');
      b.publish(`n.${mode}.b`, Buffer.from('two'), { reply: 'answers.here', headers: { trace: 't1' } });
      b.publish(`n.${mode}.c`, new Uint16Array([1, 2]));
      const one = await nextMessage(sub);
      assert.equal(one.kind, 'subject');
      assert.equal(one.subject, `n.${mode}.a`);
      assert.equal(one.text, 'one');
      assert.ok(Buffer.isBuffer(one.data));
      assert.deepEqual(one.headers, []);
      const two = await nextMessage(sub);
      assert.equal(two.reply, 'answers.here');
      assert.equal(two.header('trace'), 't1');
      assert.equal(two.header('missing'), undefined);
      const three = await nextMessage(sub);
      assert.equal(three.data.length, 4);
      throwsWith(() => one.ack(), rb.WrongKindError, 'ERR_RINGBROKER_WRONG_KIND');
      throwsWith(() => one.nack(), rb.WrongKindError, 'ERR_RINGBROKER_WRONG_KIND');
      assert.equal(sub.buffered, 0);
      sub.close();
      assert.equal(sub.closed, true);
      assert.deepEqual(await sub.next(), { value: undefined, done: true });
    });

    it('gives each subscriber its own writable copy of the payload', async () => {
      const s1 = await b.subscribe(`copy.${mode}`);
      const s2 = await b.subscribe(`copy.${mode}`);
      b.publish(`copy.${mode}`, 'hello');
      const m1 = await nextMessage(s1);
      m1.data[0] = 0x4a; // 'J'
      assert.equal(m1.text, 'Jello');
      const m2 = await nextMessage(s2);
      assert.equal(m2.text, 'hello', 'one subscriber\'s write reached another\'s message');
      s1.close();
      s2.close();
    });

    it('publishes batches whole or not at all', async () => {
      const sub = await b.subscribe(`nb.${mode}.*`);
      b.publishBatch([
        { subject: `nb.${mode}.x`, data: 'a' },
        { subject: `nb.${mode}.x`, data: 'b', headers: [['k', 'v']] },
        { subject: `nb.${mode}.x`, data: 'c', reply: 'r.1' },
      ]);
      const got = [];
      for (let i = 0; i < 3; i++) got.push(await nextMessage(sub));
      assert.deepEqual(got.map((m) => m.text), ['a', 'b', 'c']);
      assert.equal(got[1].header('k'), 'v');
      assert.equal(got[2].reply, 'r.1');
      throwsWith(() => b.publishBatch([{ subject: `nb.${mode}.x`, data: 'd' }, { subject: 'bad subject', data: 'e' }]),
        rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      throwsWith(() => b.publish('bad subject', 'x'), rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      // A NUL would cut the subject short in C; around the 1024 bytes publish() reads
      // on its stack, the library's own refusals.
      for (const subject of [`nb.${mode}.a\0b`, '', 'a'.repeat(1025), 'a'.repeat(5000)]) {
        throwsWith(() => b.publish(subject, 'x'), rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      }
      throwsWith(() => b.publishBatch([{ subject: `nb.${mode}.\0`, data: 'x' }]),
        rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      assert.throws(() => b.publish(42, 'x'), TypeError);
      b.publish('a'.repeat(1024), 'x'); // the longest subject
      assert.throws(() => b.publish(`nb.${mode}.x`, 42), TypeError);
      await assert.rejects(within(sub.next(), 200), /took over/);
      sub.close();
    });

    it('shares a queue group: each message reaches one member', async () => {
      const members = [await b.subscribe(`g.${mode}.work`, { queue: 'pool' }),
        await b.subscribe(`g.${mode}.work`, { queue: 'pool' })];
      const count = 40;
      for (let i = 0; i < count; i++) b.publish(`g.${mode}.work`, String(i));
      const seen = [];
      const deadline = Date.now() + 10000;
      while (seen.length < count && Date.now() < deadline) {
        for (const m of members) {
          while (m.buffered > 0) seen.push((await m.next()).value.text);
        }
        await sleep(10);
      }
      assert.equal(seen.length, count);
      assert.equal(new Set(seen).size, count, 'no message went to two members');
      members.forEach((m) => m.close());
    });

    it('answers requests through callbacks and rejects with typed errors', async () => {
      const svc = await b.subscribe(`svc.${mode}.echo`, {
        queue: 'echoers',
        callback: (msg) => msg.respond(Buffer.concat([Buffer.from('echo:'), msg.data])),
      });
      const reply = await b.request(`svc.${mode}.echo`, 'hi', { timeout: 5000 });
      assert.equal(reply.text, 'echo:hi');
      assert.equal(reply.kind, 'subject');
      throwsWith(() => reply.ack(), rb.WrongKindError, 'ERR_RINGBROKER_WRONG_KIND');
      assert.throws(() => reply.respond('x'), rb.InvalidArgumentError);
      const many = await Promise.all([1, 2, 3].map((i) => b.request(`svc.${mode}.echo`, String(i))));
      assert.deepEqual(many.map((m) => m.text), ['echo:1', 'echo:2', 'echo:3']);
      await rejectsWith(b.request(`svc.${mode}.nobody`, 'x', { timeout: 5000 }),
        rb.NoRespondersError, 'ERR_RINGBROKER_NO_RESPONDERS');
      await rejectsWith(b.request(`svc.${mode}.bad subject`, 'x'),
        rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      await rejectsWith(b.request(`svc.${mode}.echo`, 'x', { timeout: -1 }),
        rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      svc.close();
      await svc.done;
      // A subscriber that never answers: the request times out.
      const mute = await b.subscribe(`svc.${mode}.mute`);
      await rejectsWith(b.request(`svc.${mode}.mute`, 'x', { timeout: 100 }),
        rb.TimeoutError, 'ERR_RINGBROKER_TIMEOUT');
      mute.close();
    });

    it('ends a callback loop with the callback\'s error', async () => {
      const sub = await b.subscribe(`cb.${mode}.x`, {
        callback: () => { throw new Error('boom'); },
      });
      b.publish(`cb.${mode}.x`, 'x');
      await assert.rejects(within(sub.done), /boom/);
      assert.equal(sub.closed, true);
    });

    it('defines, publishes to and consumes streams', async () => {
      const name = n('orders');
      const def = { name, subjects: [`orders.${mode}.>`], partitions: 2, durability: 'always' };
      await b.createStream(def);
      await b.createStream(def); // idempotent
      await rejectsWith(b.createStream({ ...def, partitions: 3 }), rb.AlreadyExistsError, 'ERR_RINGBROKER_ALREADY_EXISTS');
      await assert.rejects(b.createStream({ name: n('bad'), subjects: ['bad.>'], colour: 'red' }),
        (err) => err instanceof rb.InvalidArgumentError && /colour/.test(err.message));
      await b.updateStream({ ...def, maxRecords: 100000 });

      const first = await b.streamPublish(`orders.${mode}.eu`, 'r0', { key: 'k', headers: { 'Msg-Id': 'id-1' } });
      assert.equal(first.duplicate, false);
      const again = await b.streamPublish(`orders.${mode}.eu`, 'r0', { key: 'k', headers: { 'Msg-Id': 'id-1' } });
      assert.equal(again.duplicate, true);
      const batch = await b.streamPublishBatch([
        { subject: `orders.${mode}.eu`, data: 'r1', key: 'k' },
        { subject: `orders.${mode}.eu`, data: 'r2', key: Buffer.from('k') },
      ]);
      assert.equal(batch.length, 2);
      assert.equal(batch[0].partition, first.partition);
      assert.equal(batch[1].offset, batch[0].offset + 1);
      assert.equal(batch[0].offset, first.offset + 1);
      b.streamPublishNowait([{ subject: `orders.${mode}.eu`, data: 'r3', key: 'k' }]);
      assert.deepEqual(await b.streamPublishBatch([]), []);
      await rejectsWith(b.streamPublish(`nostream.${mode}.x`, 'x'), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await rejectsWith(b.streamPublish('bad subject', 'x'), rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');

      const info = await b.streamInfo(name);
      assert.equal(info.partitions, 2);
      await rejectsWith(b.streamInfo(n('missing')), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');

      await b.createConsumer(name, { durable: 'billing', ackWaitMs: 60000, deliver: 'all' });
      const billing = await b.consume(name, { durable: 'billing' });
      const got = [];
      while (got.length < 4) got.push(await nextMessage(billing));
      assert.deepEqual(got.map((m) => m.text), ['r0', 'r1', 'r2', 'r3']);
      const [r0] = got;
      assert.equal(r0.kind, 'stream');
      assert.equal(r0.key.toString(), 'k');
      assert.equal(r0.deliveryCount, 1);
      assert.equal(r0.subject, `orders.${mode}.eu`);
      assert.ok(r0.timestamp > Date.now() - 60000);
      assert.equal(r0.header('Msg-Id'), 'id-1');
      r0.nack({ delay: 0 });
      got[1].ack();
      billing.ackAll([got[2]]);
      const again0 = await nextMessage(billing);
      assert.equal(again0.text, 'r0');
      assert.equal(again0.deliveryCount, 2);
      again0.commit();
      billing.commit(got[3]);
      const cinfo = await b.consumerInfo(name, 'billing');
      assert.equal(cinfo.partitions, 2);
      assert.equal(typeof cinfo.pending, 'number');
      billing.close();
      throwsWith(() => got[3].ack(), rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');

      const replay = await b.consume(name, { deliver: 'all', ack: 'none' });
      const replayed = [];
      while (replayed.length < 4) replayed.push((await nextMessage(replay)).text);
      assert.deepEqual(replayed, ['r0', 'r1', 'r2', 'r3']);
      replay.close();

      await rejectsWith(b.consume(n('missing'), { durable: 'billing' }), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await rejectsWith(b.consume(name, { durable: 'billing', deliver: 'all' }), rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      await rejectsWith(b.consumerInfo(name, 'nobody'), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await b.deleteConsumer(name, 'billing');
      await rejectsWith(b.deleteConsumer(name, 'billing'), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await b.deleteStream(name);
      await rejectsWith(b.deleteStream(name), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await assert.rejects(b.consume(name, { highWaterMark: 0 }), rb.InvalidArgumentError);
    });

    it('routes through exchanges to queues, with acks, nacks and rejects', async () => {
      const ex = n('events');
      const q = n('jobs');
      await b.declareExchange({ name: ex, kind: 'topic' });
      await rejectsWith(b.declareExchange({ name: ex, kind: 'fanout' }), rb.AlreadyExistsError, 'ERR_RINGBROKER_ALREADY_EXISTS');
      const declared = await b.declareQueue({ name: q, maxPriority: 5 });
      assert.deepEqual(declared, { messages: 0, unacked: 0, consumers: 0 });
      await b.bindQueue(q, ex, 'jobs.#');
      assert.deepEqual(await b.exchangePublish(ex, 'jobs.eu', 'j1', { priority: 3, persistent: true, mandatory: true }), { queues: 1 });
      const confirms = await b.exchangePublishBatch([
        { exchange: ex, routingKey: 'jobs.us', data: 'j2', headers: { h: '1' } },
        { exchange: ex, routingKey: 'jobs.us', data: 'j3', expirationMs: 60000 },
      ], { mandatory: true });
      assert.deepEqual(confirms, [{ queues: 1 }, { queues: 1 }]);
      await rejectsWith(b.exchangePublish(ex, 'nowhere', 'x', { mandatory: true }), rb.UnroutableError, 'ERR_RINGBROKER_UNROUTABLE');
      assert.deepEqual(await b.exchangePublish(ex, 'nowhere', 'x'), { queues: 0 });
      await assert.rejects(b.exchangePublish(ex, 'jobs.x', 'x', { priority: 300 }), rb.InvalidArgumentError);
      b.exchangePublishNowait([{ exchange: ex, routingKey: 'jobs.eu', data: 'j4' }]);

      const jobs = await b.consumeQueue(q, { prefetch: 1 });
      const d1 = await nextMessage(jobs);
      assert.equal(d1.kind, 'queue');
      assert.equal(d1.text, 'j1');
      assert.equal(d1.priority, 3);
      assert.equal(d1.persistent, true);
      assert.equal(d1.exchange, ex);
      assert.equal(d1.queue, q);
      assert.equal(d1.routingKey, 'jobs.eu');
      throwsWith(() => d1.nack({ delay: 5 }), rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
      throwsWith(() => d1.commit(), rb.WrongKindError, 'ERR_RINGBROKER_WRONG_KIND');
      d1.nack({ requeue: true });
      const again = await nextMessage(jobs);
      assert.equal(again.text, 'j1');
      assert.equal(again.redelivered, true);
      jobs.ackTag(again.deliveryTag);
      const d2 = await nextMessage(jobs);
      assert.equal(d2.text, 'j2');
      assert.equal(d2.header('h'), '1');
      d2.ack();
      const d3 = await nextMessage(jobs);
      d3.reject();
      const d4 = await nextMessage(jobs);
      assert.equal(d4.text, 'j4');
      jobs.nackTag(d4.deliveryTag, { requeue: true });
      const d4b = await nextMessage(jobs);
      jobs.ackTag(d4b.deliveryTag, { multiple: true });
      const info = await b.queueInfo(q);
      assert.equal(info.messages, 0);
      assert.equal(info.consumers, 1);
      jobs.close();

      await b.unbindQueue(q, ex, 'jobs.#');
      assert.deepEqual(await b.exchangePublish(ex, 'jobs.eu', 'lost'), { queues: 0 });
      const fan = n('fan');
      await b.declareExchange({ name: fan, kind: 'fanout' });
      await b.bindExchange(ex, fan, '');
      await b.bindQueue(q, ex, 'x.#');
      assert.deepEqual(await b.exchangePublish(fan, 'x.y', 'via-fanout'), { queues: 1 });
      await b.exchangePublish('', q, 'direct', { mandatory: true });
      assert.equal(await b.purgeQueue(q), 2);
      await rejectsWith(b.deleteExchange(ex, { ifUnused: true }), rb.RefusedError, 'ERR_RINGBROKER_REFUSED');
      await b.exchangePublish('', q, 'left');
      assert.equal(await b.deleteQueue(q), 1);
      await rejectsWith(b.queueInfo(q), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await rejectsWith(b.consumeQueue(q), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await rejectsWith(b.bindQueue(q, ex, 'a'), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await b.deleteExchange(fan);
      await b.deleteExchange(ex);
      await rejectsWith(b.deleteExchange(ex), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
      await rejectsWith(b.purgeQueue(q), rb.NotFoundError, 'ERR_RINGBROKER_NOT_FOUND');
    });

    it('binds with the header arguments as they were when bindQueue() was called', async () => {
      const hx = n('hx');
      await b.declareExchange({ name: hx, kind: 'headers' });
      const bind = async (call, q, value) => {
        const pool = occupyThreadPool();
        const bytes = new Uint8Array(Buffer.from(value));
        const p = call(q, hx, '', { arguments: { 'x-match': 'all', color: bytes } });
        bytes.set(Buffer.from('XXX')); // the caller reuses its buffer once the call returned
        await Promise.all([p, pool]);
      };
      const q = n('hq');
      await b.declareQueue({ name: q });
      await bind((...a) => b.bindQueue(...a), q, 'red');
      assert.deepEqual(await b.exchangePublish(hx, '', 'x', { headers: { color: 'red' } }), { queues: 1 });
      assert.deepEqual(await b.exchangePublish(hx, '', 'x', { headers: { color: 'XXX' } }), { queues: 0 });
      await bind((...a) => b.unbindQueue(...a), q, 'red');
      assert.deepEqual(await b.exchangePublish(hx, '', 'x', { headers: { color: 'red' } }), { queues: 0 });
      await b.deleteQueue(q);
      await b.deleteExchange(hx);
    });

    it('ends pending iterators and requests cleanly on close', async () => {
      const other = await openBroker(mode, daemon.url);
      const sub = await other.subscribe(`close.${mode}.idle.>`);
      const responder = await other.subscribe(`close.${mode}.svc`);
      const pendingNext = sub.next();
      const pendingRequest = other.request(`close.${mode}.svc`, 'x', { timeout: 60000 });
      pendingRequest.catch(() => {}); // observed below, after close
      await other.createStream({ name: n('closing'), subjects: [`closing.${mode}.>`], durability: 'none' });
      const publishes = [];
      for (let i = 0; i < 50; i++) publishes.push(other.streamPublish(`closing.${mode}.x`, String(i)));
      await within(other.close());
      assert.deepEqual(await pendingNext, { value: undefined, done: true });
      await rejectsWith(pendingRequest, rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      const settled = await Promise.allSettled(publishes);
      assert.ok(settled.every((s) => s.status === 'fulfilled'), 'publishes are answered before close');
      assert.equal(responder.closed, true);
      assert.equal(other.closed, true);
      await other.close(); // idempotent
      throwsWith(() => other.publish('a', 'b'), rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      throwsWith(() => other.embedded, rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      await rejectsWith(other.subscribe('a'), rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      await rejectsWith(other.request('a', 'b'), rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      await rejectsWith(other.streamPublish('a', 'b'), rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      await rejectsWith(other.streamInfo('a'), rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
    });

    it('closes consumers that a close overtook', async () => {
      const other = await openBroker(mode, daemon.url);
      const late = other.subscribe(`late.${mode}.x`);
      const closing = other.close();
      await rejectsWith(late, rb.ShuttingDownError, 'ERR_RINGBROKER_SHUTTING_DOWN');
      await closing;
    });
  });
}

describe('opening and connecting', () => {
  it('refuses a second broker on one directory', async () => {
    const dir = tmpDir();
    const first = await rb.open({ dataDir: dir, shards: 1, pinToCores: false });
    await rejectsWith(rb.open({ dataDir: dir, shards: 1, pinToCores: false }), rb.LockedError, 'ERR_RINGBROKER_LOCKED');
    await first.close();
    const again = await rb.Broker.open({ dataDir: dir, shards: 1, pinToCores: false });
    await again.close();
  });

  it('takes idleSpinUs within its bound', async () => {
    const spinning = await rb.open({ dataDir: tmpDir(), shards: 1, pinToCores: false, idleSpinUs: 50 });
    await spinning.close();
    await rejectsWith(rb.open({ dataDir: tmpDir(), shards: 1, pinToCores: false, idleSpinUs: 1000001 }),
      rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
  });

  it('names bad options and unreachable daemons', async () => {
    await assert.rejects(rb.open({}), rb.InvalidArgumentError);
    await assert.rejects(rb.open({ dataDir: tmpDir(), colour: 'red' }),
      (err) => err instanceof rb.InvalidArgumentError && /colour/.test(err.message));
    await rejectsWith(rb.connect('ringbroker://127.0.0.1:1', { connectTimeoutMs: 2000 }),
      rb.DisconnectedError, 'ERR_RINGBROKER_DISCONNECTED');
    await rejectsWith(rb.connect('http://example'), rb.InvalidArgumentError, 'ERR_RINGBROKER_INVALID_ARGUMENT');
    await assert.rejects(rb.connect(''), rb.InvalidArgumentError);
    const remote = await rb.Broker.connect(daemon.url, { clientName: 'api-test' });
    assert.equal(remote.embedded, false);
    await remote.close();
  });

  it('exposes versions and status names', () => {
    assert.match(rb.version, /^\d+\.\d+\.\d+$/);
    assert.equal(rb.abiVersion, 1);
    assert.equal(rb.statusName(7), 'NOT_FOUND');
    assert.equal(rb.statusName(12345), 'UNKNOWN');
    const err = rb.errorFor(11, 'slow');
    assert.ok(err instanceof rb.TimeoutError);
    assert.equal(err.code, 'ERR_RINGBROKER_TIMEOUT');
    assert.equal(err.status, 11);
    assert.equal(err.name, 'TimeoutError');
    assert.equal(rb.errorFor(999, '').code, 'ERR_RINGBROKER_UNKNOWN');
  });
});
