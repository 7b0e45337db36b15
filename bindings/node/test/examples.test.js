// The programs in examples/node run to completion, embedded (the default) and
// against a ringbrokerd (--url), and print what they promise.
'use strict';

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { REPO_ROOT, startDaemon } = require('./helpers');

const RUN_MS = 30000;
const EXAMPLES = {
  'task-queue.js': ['producer: 10 tasks queued', 'failed, requeued', 'done (redelivered)', 'all 10 tasks done'],
  'topic-routing.js': ['published log.eu.error to 2 queue(s)', 'published log.us.info to 0 queue(s)',
    'example-errors: [log.us.error] timeout on us-2', 'example-eu: [log.eu.info] eu-1 started', 'routing done'],
  'request-reply.js': ['orders: apple: accepted', 'orders: pear: refused', 'ERR_RINGBROKER_NO_RESPONDERS', 'services stopped'],
  'consumer-group.js': ['published 40 payments', 'every account in order', 'ledger: 4 partitions', 'group done'],
};

function runExample(file, args) {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'examples', 'node', file), ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

let daemon;
before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

for (const [file, lines] of Object.entries(EXAMPLES)) {
  describe(file, () => {
    for (const mode of ['embedded', 'remote']) {
      it(mode, async () => {
        const run = await runExample(file, mode === 'remote' ? ['--url', daemon.url] : []);
        assert.equal(run.signal, null, `did not finish in ${RUN_MS} ms:\n${run.out}`);
        assert.equal(run.code, 0, run.out);
        for (const line of lines) assert.ok(run.out.includes(line), `missing "${line}" in:\n${run.out}`);
      });
    }
  });
}
