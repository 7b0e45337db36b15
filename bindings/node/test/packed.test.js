// The packed receive (the addon's js_fetch, lib/index.js's Consumer): a small subject
// message without headers is copied into one Buffer per batch and made a Message in
// JavaScript; any other message is made by the addon. Mixed in one batch, both kinds
// must come out in order and look alike. Embedded and remote.
'use strict';

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const rb = require('..');
const { startDaemon, openBroker, nextMessage, sleep } = require('./helpers');

const PACK_PAYLOAD_MAX = 16 << 10; // the addon's PACK_PAYLOAD_MAX

let daemon;
before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

async function take(consumer, count) {
  const got = [];
  while (got.length < count) got.push(await nextMessage(consumer));
  return got;
}

for (const mode of ['embedded', 'remote']) {
  describe(`packed receive, ${mode}`, () => {
    let b;
    before(async () => {
      b = await openBroker(mode, daemon.url);
    });
    after(async () => {
      await b?.close();
    });

    it('keeps order, contents and the shape of a Message in a mixed batch', async () => {
      const s = `pk.${mode}`;
      const sub = await b.subscribe(`${s}.>`);
      const big = Buffer.alloc(PACK_PAYLOAD_MAX + 1, 0x42);
      const edge = Buffer.alloc(PACK_PAYLOAD_MAX, 0x43);
      const sent = [
        { subject: `${s}.a`, data: 'one' },
        { subject: `${s}.a`, data: 'two', reply: 'reply.one' }, // same subject: not copied twice
        { subject: `${s}.b`, data: 'three', headers: [['h', 'v']] }, // made by the addon
        { subject: `${s}.a`, data: big }, // too big to pack: made by the addon
        { subject: `${s}.b`, data: '' },
        { subject: `${s}.a`, data: edge }, // the largest packed
        { subject: `${s}.é`, data: 'ünïcode', reply: 'reply.twö' },
      ];
      b.publishBatch(sent);
      await sleep(300); // all in the engine's buffer: one fetch takes them together
      const got = await take(sub, sent.length);
      assert.deepEqual(got.map((m) => [m.kind, m.subject, m.reply, m.data.toString('latin1')]),
        sent.map((x) => ['subject', x.subject, x.reply,
          Buffer.isBuffer(x.data) ? x.data.toString('latin1') : Buffer.from(x.data).toString('latin1')]));
      assert.deepEqual(got[2].headers, [['h', Buffer.from('v')]]);
      for (const m of got) {
        assert.ok(m instanceof rb.Message && Buffer.isBuffer(m.data));
        if (m !== got[2]) assert.deepEqual(m.headers, []);
        assert.equal(m.headerCount, m === got[2] ? 1 : 0);
        assert.deepEqual(Object.keys(m), ['data', 'subject', 'kind', 'reply']);
      }
      sub.close();
    });

    it('gives each packed message a range of its own, writable and lasting', async () => {
      const s = `pk.own.${mode}`;
      const sub = await b.subscribe(s);
      b.publishBatch([{ subject: s, data: 'aaaa' }, { subject: s, data: 'bbbb' }]);
      const [m1, m2] = await take(sub, 2);
      m1.data.fill(0x7a);
      assert.equal(m1.text, 'zzzz');
      assert.equal(m2.text, 'bbbb', 'a write to one message reached the next');
      assert.equal(m1.data.length, 4);
      sub.close();
    });

    it('answers a packed request and refuses to acknowledge one', async () => {
      const s = `pk.rr.${mode}`;
      const service = await b.subscribe(s);
      const replies = (async () => {
        const req = await nextMessage(service);
        assert.equal(req.text, 'ping');
        assert.throws(() => req.ack(), rb.WrongKindError);
        req.respond(`pong:${req.text}`);
      })();
      const reply = await b.request(s, 'ping', { timeout: 5000 });
      await replies;
      assert.equal(reply.text, 'pong:ping');
      b.publish(s, 'no reply');
      const plain = await nextMessage(service);
      assert.throws(() => plain.respond('x'), rb.InvalidArgumentError);
      service.close();
    });

    it('takes many small messages in batches, none lost or reordered', async () => {
      const s = `pk.many.${mode}`;
      const sub = await b.subscribe(s);
      const count = 3000;
      for (let i = 0; i < count; i += 100) {
        b.publishBatch(Array.from({ length: 100 }, (_, k) => ({ subject: s, data: String(i + k) })));
        await sleep(1);
      }
      const got = await take(sub, count);
      assert.deepEqual(got.map((m) => Number(m.text)), Array.from({ length: count }, (_, i) => i));
      sub.close();
    });
  });
}
