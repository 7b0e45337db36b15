// Shared by the tests: temporary directories, a ringbrokerd on an ephemeral loopback
// port (started and stopped by pid), bounded waits, and opening a broker in either
// mode. Every wait here has a deadline.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const rb = require('..');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const DAEMON = process.env.RINGBROKERD ?? path.join(REPO_ROOT, 'target', 'debug', 'ringbrokerd');
const DAEMON_START_MS = 15000;
const WAIT_MS = 10000;

const made = [];

/** A fresh temporary directory, removed when the process exits. */
function tmpDir(prefix = 'rb-node-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}
process.on('exit', () => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Starts `ringbrokerd` on 127.0.0.1 with an ephemeral port; resolves to
 * { url, pid, stop() } once it printed its URL. stop() kills it by pid and waits.
 */
function startDaemon() {
  if (!fs.existsSync(DAEMON)) {
    throw new Error(`${DAEMON} is missing: run cargo build -p ringbrokerd`);
  }
  const dataDir = tmpDir('rb-node-daemon-');
  const child = spawn(DAEMON, ['--data-dir', dataDir, '--listen', '127.0.0.1:0',
    '--admin', 'off', '--shards', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited = false;
  const exitedPromise = new Promise((resolve) => child.once('exit', () => {
    exited = true;
    resolve();
  }));
  const stop = async () => {
    if (!exited) {
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => { if (!exited) process.kill(child.pid, 'SIGKILL'); }, 5000);
      await exitedPromise;
      clearTimeout(timer);
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop().then(() => reject(new Error(`ringbrokerd did not start:\n${output}`)));
    }, DAEMON_START_MS);
    const look = (chunk) => {
      output += chunk;
      const found = /ringbroker:\/\/127\.0\.0\.1:\d+/.exec(output);
      if (found) {
        clearTimeout(timer);
        resolve({ url: found[0], pid: child.pid, stop });
      }
    };
    child.stdout.setEncoding('utf8').on('data', look);
    child.stderr.setEncoding('utf8').on('data', look);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ringbrokerd exited (${code}):\n${output}`));
    });
  });
}

/** Rejects with a timeout error if `promise` does not settle within `ms`. */
function within(promise, ms = WAIT_MS, what = 'the operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The next message of `consumer`, within `ms`. */
async function nextMessage(consumer, ms = WAIT_MS) {
  const result = await within(consumer.next(), ms, 'a message');
  if (result.done) throw new Error('the consumer ended');
  return result.value;
}

/** Opens an embedded broker (mode "embedded") or connects to `url` ("remote"). */
function openBroker(mode, url) {
  if (mode === 'embedded') return rb.open({ dataDir: tmpDir(), shards: 2, pinToCores: false });
  return rb.connect(url, { reconnect: false });
}

/** How long a child process run by runNode() may take before it is killed. */
const EXIT_MS = 20000;

/** Runs `node args...`; resolves to { code, signal, stdout, stderr, ms }, killing it
 * (by its pid) past EXIT_MS. */
function runNode(args, env = {}) {
  const started = Date.now();
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = {
  REPO_ROOT, DAEMON, WAIT_MS, EXIT_MS, tmpDir, startDaemon, within, nextMessage, openBroker, sleep,
  runNode,
};
