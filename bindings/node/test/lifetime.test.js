// Lifetimes: a process exits by itself once its broker is closed (iterators,
// callbacks, requests and consumers pending at close end cleanly, and no uv handle
// of the binding keeps the loop alive), embedded and remote; and under --expose-gc,
// messages released by JavaScript free the engine's memory (messagesHeld() drops to
// zero once the Message objects are collected, a kept payload Buffer, being a copy,
// holds no engine message and stays intact, and the RSS falls back).
'use strict';

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startDaemon, tmpDir, runNode, EXIT_MS } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);

let daemon;
before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

describe('the process exits by itself after close', () => {
  for (const mode of ['embedded', 'remote']) {
    it(mode, async () => {
      const env = mode === 'remote' ? { RINGBROKER_URL: daemon.url } : {};
      const run = await runNode([fixture('exits.js'), tmpDir()], env);
      assert.equal(run.signal, null, `killed after ${EXIT_MS} ms: it did not exit\n${run.stdout}${run.stderr}`);
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stdout.trim().split('\n');
      assert.deepEqual(lines.sort(), ['callbacks ended', 'closed', 'consumer done=true',
        'iterator ended', 'request ERR_RINGBROKER_SHUTTING_DOWN'].sort());
    });
  }
});

describe('released messages free engine memory', () => {
  it('after garbage collection (--expose-gc)', async (t) => {
    const run = await runNode(['--expose-gc', fixture('finalizers.js'), tmpDir()]);
    assert.equal(run.code, 0, run.stderr);
    const f = JSON.parse(run.stdout);
    t.diagnostic(run.stdout.trim());
    assert.equal(f.start, 0);
    assert.equal(f.whileHeld, 256, 'each received message is held');
    assert.equal(f.afterRelease, 1, 'only the kept Message\'s engine message stays');
    assert.equal(f.keptMessageIntact, true, 'the kept Message reads its payload');
    assert.equal(f.keptHeaderIntact, true, 'the kept Message reads its header');
    assert.equal(f.afterAll, 0, 'every message freed, the kept payload Buffer\'s included');
    assert.equal(f.plainHeld, 0, 'a subject message without headers holds no engine message');
    assert.equal(f.plainIntact, true, 'and reads its payload');
    assert.equal(f.keptDataIntact, true, 'a kept payload Buffer outlives its engine message');
    // The payloads were 64 MiB; at least a quarter of it must come back.
    assert.ok(f.rssHeld - f.rssReleased > f.payloadBytes / 4,
      `RSS ${f.rssHeld} while held, ${f.rssReleased} after release`);
  });
});
