// A task queue with acknowledgements: a producer publishes tasks to a durable queue
// (each publish resolves once the queue has it), two workers take one task at a time
// (prefetch 1) and acknowledge it when done; a task that fails the first time is
// nacked, requeued and done on its redelivery.
//
//   node examples/node/task-queue.js [--url ringbroker://127.0.0.1:7070]
'use strict';

const { brokerFromArgs, run } = require('./common');

const TASKS = 10;

run(async () => {
  const broker = await brokerFromArgs();
  await broker.declareQueue({ name: 'example-tasks', durable: true });
  await broker.purgeQueue('example-tasks');

  const confirms = [];
  for (let i = 1; i <= TASKS; i++) {
    // The default exchange ('') routes to the queue named by the routing key.
    confirms.push(broker.exchangePublish('', 'example-tasks', JSON.stringify({ id: i, work: `resize image ${i}` }),
      { persistent: true, mandatory: true }));
  }
  await Promise.all(confirms);
  console.log(`producer: ${TASKS} tasks queued`);

  const done = new Set();
  let failedOnce = false;
  const worker = async (name) => {
    const tasks = await broker.consumeQueue('example-tasks', { prefetch: 1 });
    for await (const msg of tasks) {
      const task = msg.json();
      if (task.id === 3 && !failedOnce) {
        failedOnce = true;
        console.log(`${name}: task ${task.id} failed, requeued`);
        msg.nack({ requeue: true });
        continue;
      }
      await new Promise((resolve) => setTimeout(resolve, 5)); // the work
      msg.ack();
      done.add(task.id);
      console.log(`${name}: task ${task.id} done${msg.redelivered ? ' (redelivered)' : ''}`);
      if (done.size === TASKS) break;
    }
  };
  const workers = [worker('worker-a'), worker('worker-b')];
  await Promise.race(workers);
  await broker.close(); // ends the other worker's iterator
  await Promise.all(workers);
  console.log(`all ${done.size} tasks done`);
});
