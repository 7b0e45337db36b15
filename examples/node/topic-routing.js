// Topic routing: log lines published to a topic exchange reach the queues whose
// binding patterns match their routing keys (`*` one word, `#` any number).
//
//   node examples/node/topic-routing.js [--url ringbroker://127.0.0.1:7070]
'use strict';

const { brokerFromArgs, run } = require('./common');

run(async () => {
  const broker = await brokerFromArgs();
  await broker.declareExchange({ name: 'example-logs', kind: 'topic' });
  await broker.declareQueue({ name: 'example-errors' });
  await broker.declareQueue({ name: 'example-eu' });
  await broker.purgeQueue('example-errors');
  await broker.purgeQueue('example-eu');
  await broker.bindQueue('example-errors', 'example-logs', 'log.*.error');
  await broker.bindQueue('example-eu', 'example-logs', 'log.eu.#');

  const lines = [
    ['log.eu.error', 'disk full on eu-1'],
    ['log.us.error', 'timeout on us-2'],
    ['log.eu.info', 'eu-1 started'],
    ['log.us.info', 'us-2 started'],
  ];
  for (const [key, text] of lines) {
    const { queues } = await broker.exchangePublish('example-logs', key, text);
    console.log(`published ${key} to ${queues} queue(s)`);
  }

  for (const [queue, expected] of [['example-errors', 2], ['example-eu', 2]]) {
    const consumer = await broker.consumeQueue(queue);
    let seen = 0;
    for await (const msg of consumer) {
      console.log(`${queue}: [${msg.routingKey}] ${msg.text}`);
      msg.ack();
      if (++seen === expected) break;
    }
  }
  for (const queue of ['example-errors', 'example-eu']) await broker.deleteQueue(queue);
  await broker.deleteExchange('example-logs');
  await broker.close();
  console.log('routing done');
});
