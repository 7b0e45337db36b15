// What the examples share: loading the binding and opening a broker from the
// command line. `node example.js` runs on an embedded broker in a temporary
// directory; `node example.js --url ringbroker://127.0.0.1:7070` uses a ringbrokerd.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** The binding: the installed `ringbroker` package, else this checkout's bindings/node. */
function ringbroker() {
  try {
    return require('ringbroker');
  } catch {
    return require(path.join(__dirname, '..', '..', 'bindings', 'node'));
  }
}

/** The --url argument, or undefined. */
function urlArgument(argv = process.argv.slice(2)) {
  const at = argv.indexOf('--url');
  if (at === -1) return undefined;
  const url = argv[at + 1];
  if (!url) throw new Error('--url needs a value: ringbroker://HOST:PORT');
  return url;
}

/**
 * Opens the broker the command line asks for: connected to --url, or embedded in a
 * temporary directory removed at exit.
 */
async function brokerFromArgs() {
  const rb = ringbroker();
  const url = urlArgument();
  if (url) return rb.connect(url);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbroker-example-'));
  process.on('exit', () => fs.rmSync(dataDir, { recursive: true, force: true }));
  return rb.open({ dataDir, shards: 2, pinToCores: false });
}

/** Runs `main`, printing an error and exiting 1 if it fails. */
function run(main) {
  main().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}

module.exports = { ringbroker, brokerFromArgs, run };
