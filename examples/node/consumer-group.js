// A consumer group over a keyed stream: payments keyed by account go to 4
// partitions (one account, one partition, in order); two members of the durable
// consumer "ledger" share the partitions, acknowledge what they applied, and each
// account's payments are applied in the order they were published.
//
//   node examples/node/consumer-group.js [--url ringbroker://127.0.0.1:7070]
'use strict';

const { brokerFromArgs, run } = require('./common');

const ACCOUNTS = ['acc-1', 'acc-2', 'acc-3', 'acc-4', 'acc-5'];
const PAYMENTS = 40;

run(async () => {
  const broker = await brokerFromArgs();
  await broker.deleteStream('example-payments').catch(() => {}); // a fresh stream each run
  await broker.createStream({ name: 'example-payments', subjects: ['example.payments.>'], partitions: 4, durability: 'always' });
  await broker.createConsumer('example-payments', { durable: 'ledger', deliver: 'all', ackWaitMs: 30000 });
  const members = [await broker.consume('example-payments', { durable: 'ledger' }),
    await broker.consume('example-payments', { durable: 'ledger' })];

  const records = [];
  for (let i = 0; i < PAYMENTS; i++) {
    const account = ACCOUNTS[i % ACCOUNTS.length];
    records.push({ subject: 'example.payments.in', key: account, data: JSON.stringify({ account, seq: i, cents: 100 + i }) });
  }
  const stored = await broker.streamPublishBatch(records);
  console.log(`published ${stored.length} payments to partitions ${[...new Set(stored.map((r) => r.partition))].sort().join(',')}`);

  const lastSeq = new Map();
  const applied = [0, 0];
  let total = 0;
  let finish;
  const allApplied = new Promise((resolve) => { finish = resolve; });
  const member = (i) => members[i].onMessage((msg) => {
    const { account, seq } = msg.json();
    if (lastSeq.has(account) && lastSeq.get(account) > seq) throw new Error(`${account} out of order`);
    lastSeq.set(account, seq);
    msg.ack();
    applied[i]++;
    if (++total === PAYMENTS) finish();
  });
  const loops = [member(0), member(1)];
  await allApplied;
  console.log(`member 1 applied ${applied[0]}, member 2 applied ${applied[1]}; every account in order`);
  const info = await broker.consumerInfo('example-payments', 'ledger');
  console.log(`ledger: ${info.partitions} partitions, ${info.assigned} assigned`);
  members.forEach((m) => m.close());
  await Promise.all(loops);
  await broker.deleteStream('example-payments');
  await broker.close();
  console.log('group done');
});
