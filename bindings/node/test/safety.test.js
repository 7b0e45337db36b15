// What JavaScript cannot do to the engine's memory through the binding, each in a
// child process (a failure here used to crash the process): writing into msg.data
// of records read from sealed, read-only segments, and passing one kind of handle
// where the addon expects another.
'use strict';

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { tmpDir, runNode, EXIT_MS } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);

describe('engine memory is never writable from JavaScript', () => {
  it('writes into msg.data of records from read-only segments', async () => {
    const run = await runNode([fixture('write-data.js'), tmpDir()]);
    assert.equal(run.signal, null, `killed by ${run.signal} (${EXIT_MS} ms bound)\n${run.stdout}${run.stderr}`);
    assert.equal(run.code, 0, run.stderr);
    const f = JSON.parse(run.stdout);
    assert.equal(f.written, 200, 'each record\'s data took the write');
    assert.ok(f.segments > 1, `the records span ${f.segments} segment(s): none was sealed`);
    assert.equal(f.storedIntact, true, 'the stored records are unchanged');
  });
});

describe('handles are checked by kind', () => {
  it('refuses a consumer, broker or message where another kind is expected', async () => {
    const run = await runNode([fixture('confusion.js'), tmpDir()]);
    assert.equal(run.signal, null, `killed by ${run.signal}\n${run.stdout}${run.stderr}`);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(run.stdout.trim().split('\n'), [
      'msgHeaders(consumer): TypeError not a received message',
      'msgHeaders(broker): TypeError not a received message',
      'isEmbedded(consumer): TypeError not a broker',
      'isEmbedded(msg): TypeError not a broker',
      'fetch(broker): TypeError not a consumer',
      'fetch(msg): TypeError not a consumer',
      'fetch(consumer, 8, meta of 4): TypeError meta must be a Uint32Array of 4 * max numbers',
      'fetch(consumer, 1, Int32Array): TypeError meta must be a Uint32Array of 4 * max numbers',
      'ack(consumer, consumer): TypeError not a received message',
      'ack(consumer, broker): TypeError not a received message',
      'consumerClose(msg): TypeError not a consumer',
      'consumerClose(broker): TypeError not a consumer',
      'respond(msg, msg): TypeError not a broker',
      'msgHeaders(msg): ok',
      'isEmbedded(broker): ok',
      'consumerClose(consumer): ok',
      'closed',
    ]);
  });
});
