// Request-reply between two services: "inventory" answers stock questions on a
// subject (two instances in a queue group share the requests), "orders" asks before
// accepting each order. Each service has its own broker handle; embedded, both
// handles are one in-process broker, with --url two connections to the daemon.
//
//   node examples/node/request-reply.js [--url ringbroker://127.0.0.1:7070]
'use strict';

const { brokerFromArgs, ringbroker, run } = require('./common');

const STOCK = { apple: 3, pear: 0, plum: 12 };

async function inventoryService(broker, instance) {
  return broker.subscribe('example.inventory.check', {
    queue: 'inventory',
    callback: (msg) => {
      const { item } = msg.json();
      msg.respond(JSON.stringify({ item, stock: STOCK[item] ?? 0, instance }));
    },
  });
}

async function ordersService(broker) {
  for (const item of ['apple', 'pear', 'plum']) {
    const reply = await broker.request('example.inventory.check', JSON.stringify({ item }), { timeout: 2000 });
    const { stock, instance } = reply.json();
    console.log(`orders: ${item}: ${stock > 0 ? 'accepted' : 'refused'} (stock ${stock}, asked inventory-${instance})`);
  }
  try {
    await broker.request('example.shipping.quote', '{}', { timeout: 2000 });
  } catch (err) {
    if (!(err instanceof ringbroker().NoRespondersError)) throw err;
    console.log(`orders: shipping is not running (${err.code})`);
  }
}

run(async () => {
  const inventoryBroker = await brokerFromArgs();
  const url = process.argv.includes('--url');
  const ordersBroker = url ? await brokerFromArgs() : inventoryBroker;
  const instances = [await inventoryService(inventoryBroker, 1), await inventoryService(inventoryBroker, 2)];
  await ordersService(ordersBroker);
  if (ordersBroker !== inventoryBroker) await ordersBroker.close();
  await inventoryBroker.close(); // ends the inventory subscriptions
  await Promise.all(instances.map((s) => s.done));
  console.log('services stopped');
});
