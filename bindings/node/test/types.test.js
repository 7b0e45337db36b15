// index.d.ts and the module agree: every name the declarations export exists, every
// export of the module is declared, and the public methods of Broker, Consumer,
// QueueConsumer and Message are the ones declared.
'use strict';

const { it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const rb = require('..');

const dts = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');

function declaredMembers(className) {
  const start = dts.indexOf(`export class ${className} `);
  assert.notEqual(start, -1, `class ${className} is declared`);
  const body = dts.slice(dts.indexOf('{', start) + 1, dts.indexOf('\n}', start));
  const names = new Set();
  for (const m of body.matchAll(/^ {2}(?:static |readonly )?([A-Za-z]\w*)\??\s*[(<:]/gm)) names.add(m[1]);
  names.delete('constructor');
  return names;
}

function runtimeMembers(cls) {
  const names = new Set();
  for (const name of Object.getOwnPropertyNames(cls.prototype)) {
    if (name !== 'constructor' && !name.startsWith('_')) names.add(name);
  }
  for (const name of Object.getOwnPropertyNames(cls)) {
    if (!['length', 'name', 'prototype'].includes(name) && typeof cls[name] === 'function') names.add(name);
  }
  return names;
}

it('declares every export and nothing else', () => {
  const declared = new Set([...dts.matchAll(/^export (?:class|function|const|type|interface) (\w+)/gm)].map((m) => m[1]));
  const types = new Set([...dts.matchAll(/^export (?:type|interface) (\w+)/gm)].map((m) => m[1]));
  for (const name of declared) if (!types.has(name)) assert.ok(name in rb, `${name} is declared but not exported`);
  for (const name of Object.keys(rb)) assert.ok(declared.has(name), `${name} is exported but not declared`);
});

it('declares the public methods of each class', () => {
  const extra = { Consumer: ['done'], Message: ['kind', 'data', 'subject', 'reply', 'key', 'partition', 'offset',
    'timestamp', 'deliveryCount', 'routingKey', 'exchange', 'queue', 'deliveryTag', 'redelivered', 'priority', 'persistent'] };
  for (const [name, cls] of [['Broker', rb.Broker], ['Consumer', rb.Consumer], ['QueueConsumer', rb.QueueConsumer], ['Message', rb.Message]]) {
    const declared = declaredMembers(name);
    const runtime = runtimeMembers(cls);
    for (const member of extra[name] ?? []) runtime.add(member);
    assert.deepEqual([...declared].sort(), [...runtime].sort(), `${name}'s members`);
  }
});
