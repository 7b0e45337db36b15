#!/usr/bin/env node
// The package's install step: builds libringbroker.a from this checkout
// (`cargo build --release -p ringbroker-ffi` at the repository root), then the addon
// with the node-gyp bundled in npm, against the headers installed with this Node
// (`--nodedir`), so nothing is downloaded. Run by `npm install` in bindings/node.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const packageDir = path.resolve(__dirname, '..');
const repoRoot = path.resolve(packageDir, '..', '..');

function run(command, args, cwd) {
  console.log(`> ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { cwd, stdio: 'inherit' });
  if (result.error) throw result.error;
  if (result.status !== 0) {
    console.error(`ringbroker: ${command} failed (exit ${result.status})`);
    process.exit(result.status || 1);
  }
}

// Node's install prefix: the folder holding bin/node and include/node.
const nodeDir = path.resolve(path.dirname(process.execPath), '..');
if (!fs.existsSync(path.join(nodeDir, 'include', 'node', 'node_api.h'))) {
  console.error(`ringbroker: Node's headers are not in ${nodeDir}/include/node; ` +
    'install Node with its headers (the official tarballs have them)');
  process.exit(1);
}

// npm sets npm_config_node_gyp for lifecycle scripts; otherwise use npm's own copy.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(nodeDir, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter(Boolean);
const nodeGyp = candidates.find((p) => fs.existsSync(p));
if (!nodeGyp) {
  console.error('ringbroker: node-gyp not found (it comes with npm)');
  process.exit(1);
}

if (!fs.existsSync(path.join(repoRoot, 'ffi', 'Cargo.toml'))) {
  console.error('ringbroker: this package builds from the ringbroker repository only ' +
    `(no ffi/Cargo.toml at ${repoRoot})`);
  process.exit(1);
}
run('cargo', ['build', '--release', '-p', 'ringbroker-ffi'], repoRoot);
run(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`], packageDir);
