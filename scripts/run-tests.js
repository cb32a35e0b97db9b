#!/usr/bin/env node
'use strict';
// Runs tap over the compiled tests and ends with one plain summary line
// ("tests: N passed, N failed"), which CI systems read regardless of runner.
//
// Two passes: every dist/test/**/*.test.js (two files at a time, .taprc), then the tests named
// *.alone.js one at a time with nothing beside them (they measure the machine's CPU: the
// adaptive limiter's overload scenario). Arguments, when given, go to the first pass only and
// the second is skipped (running one file by hand).
const { spawn } = require('node:child_process');
const { readdirSync, statSync } = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const tap = path.join(root, 'node_modules', '.bin', 'tap');

function aloneTests(dir) {
  const out = [];
  let names = [];
  try { names = readdirSync(dir); } catch { return out; }
  for (const n of names) {
    const p = path.join(dir, n);
    if (statSync(p).isDirectory()) out.push(...aloneTests(p));
    else if (n.endsWith('.alone.js')) out.push(path.relative(root, p));
  }
  return out.sort();
}

/** One tap run; resolves with its exit code and its summary counts (null when tap printed none). */
function runTap(args) {
  return new Promise((resolve) => {
    const child = spawn(tap, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let tail = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      tail = (tail + d.toString('utf8')).slice(-4096);
    });
    child.on('exit', (code, signal) => {
      const m = /#\s*\{\s*total:\s*(\d+)(?:,\s*pass:\s*(\d+))?(?:,\s*fail:\s*(\d+))?(?:,\s*skip:\s*(\d+))?/.exec(tail);
      const counts = m ? { pass: Number(m[2] ?? 0), fail: Number(m[3] ?? 0), skip: Number(m[4] ?? 0) } : null;
      resolve({ code: signal ? 1 : code ?? 1, counts });
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  const runs = [await runTap(args)];
  const alone = args.length === 0 ? aloneTests(path.join(root, 'dist', 'test')) : [];
  if (alone.length > 0) runs.push(await runTap(['--jobs', '1', ...alone]));
  if (runs.some((r) => r.counts === null)) {
    process.stdout.write('\ntests: no summary from tap\n');
    process.exit(1);
  }
  const sum = (k) => runs.reduce((n, r) => n + r.counts[k], 0);
  const skip = sum('skip') ? `, ${sum('skip')} skipped` : '';
  process.stdout.write(`\ntests: ${sum('pass')} passed, ${sum('fail')} failed${skip}\n`);
  process.exit(runs.every((r) => r.code === 0) ? 0 : 1);
}

main();
