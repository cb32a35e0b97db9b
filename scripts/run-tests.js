#!/usr/bin/env node
'use strict';
// Runs tap over the compiled tests and ends with one plain summary line
// ("tests: N passed, N failed"), which CI systems read regardless of runner.
const { spawn } = require('node:child_process');
const path = require('node:path');

const tap = path.join(__dirname, '..', 'node_modules', '.bin', 'tap');
const child = spawn(tap, process.argv.slice(2), { stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (d) => {
  process.stdout.write(d);
  tail = (tail + d.toString('utf8')).slice(-4096);
});
child.on('exit', (code, signal) => {
  const m = /#\s*\{\s*total:\s*(\d+)(?:,\s*pass:\s*(\d+))?(?:,\s*fail:\s*(\d+))?(?:,\s*skip:\s*(\d+))?/.exec(tail);
  if (m) {
    const skip = m[4] ? `, ${m[4]} skipped` : '';
    process.stdout.write(`\ntests: ${m[2] ?? 0} passed, ${m[3] ?? 0} failed${skip}\n`);
  } else {
    process.stdout.write('\ntests: no summary from tap\n');
    process.exit(1);
  }
  process.exit(signal ? 1 : code ?? 1);
});
