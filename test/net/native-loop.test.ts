/**
 * quietLoop() (src/net/native.ts): a thread's event loop without Node's idle-time measurement,
 * which costs one epoll_pwait with no timeout before every wait. What a user can see of it is
 * the metric itself: performance.eventLoopUtilization() stops counting idle time in that thread,
 * and only in that thread. SLUICE_LOOP_IDLE_TIME=1 leaves the measurement on. Each case runs in a
 * child process, so the switch is never thrown in the test runner's own loop.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { loadNative } from '../../src/net/native';
import { ROOT } from '../helpers/harness';

const run = promisify(execFile);
const native = loadNative();
const usable = native !== null && typeof native.loopIdleTimeOff === 'function';
const NATIVE = JSON.stringify(path.join(ROOT, 'dist', 'src', 'net', 'native.js'));

/** In a child: this thread's idle ms over a 300 ms sleep, then a worker's, after quietLoop() in the given thread(s). */
const CHILD = `
const { performance } = require('node:perf_hooks');
const { Worker } = require('node:worker_threads');
const { quietLoop } = require(${NATIVE});
const idleOver = (ms) => new Promise((resolve) => { const a = performance.eventLoopUtilization(); setTimeout(() => resolve(performance.eventLoopUtilization(a).idle), ms); });
(async () => {
  const where = process.argv[1];
  const mainOff = where === 'main' || where === 'both' ? quietLoop() : null;
  const mainIdle = await idleOver(300);
  const w = new Worker(\`
    const { parentPort } = require('node:worker_threads');
    const { performance } = require('node:perf_hooks');
    const off = \${where === 'worker' || where === 'both'} ? require(\${JSON.stringify(${NATIVE})}).quietLoop() : null;
    const a = performance.eventLoopUtilization();
    setTimeout(() => parentPort.postMessage({ off, idle: performance.eventLoopUtilization(a).idle }), 300);
  \`, { eval: true });
  const worker = await new Promise((resolve) => w.once('message', resolve));
  await w.terminate();
  process.stdout.write(JSON.stringify({ mainOff, mainIdle, workerOff: worker.off, workerIdle: worker.idle }));
})();
`;

async function child(where: string, env: Record<string, string> = {}): Promise<{ mainOff: boolean | null; mainIdle: number; workerOff: boolean | null; workerIdle: number }> {
  const { stdout } = await run(process.execPath, ['-e', CHILD, where], { env: { ...process.env, ...env }, timeout: 20_000 });
  return JSON.parse(stdout);
}

t.test('the addon can turn the measurement off', { skip: !usable && 'the addon is an older build' }, async (t) => {
  t.ok(usable);
});

t.test('off in the main thread: no idle time counted there, and a worker still counts its own', { skip: !usable }, async (t) => {
  const r = await child('main');
  t.equal(r.mainOff, true, 'it was on, and is off');
  t.equal(r.mainIdle, 0, 'a 300 ms wait counted as no idle time');
  t.ok(r.workerIdle > 150, `the worker's loop still measures (${r.workerIdle.toFixed(0)} ms idle)`);
});

t.test('off in a worker: its own loop only', { skip: !usable }, async (t) => {
  const r = await child('worker');
  t.equal(r.workerOff, true);
  t.equal(r.workerIdle, 0, "the worker's wait counted as no idle time");
  t.ok(r.mainIdle > 150, `the main thread still measures (${r.mainIdle.toFixed(0)} ms idle)`);
});

t.test('SLUICE_LOOP_IDLE_TIME=1 leaves it on everywhere', { skip: !usable }, async (t) => {
  const r = await child('both', { SLUICE_LOOP_IDLE_TIME: '1' });
  t.equal(r.mainOff, false);
  t.equal(r.workerOff, false);
  t.ok(r.mainIdle > 150, `main measures (${r.mainIdle.toFixed(0)} ms idle)`);
  t.ok(r.workerIdle > 150, `the worker measures (${r.workerIdle.toFixed(0)} ms idle)`);
});

t.test('twice in one thread: the second call finds it off already', { skip: !usable }, async (t) => {
  const { stdout } = await run(process.execPath, ['-e', `const { quietLoop } = require(${NATIVE}); process.stdout.write(JSON.stringify([quietLoop(), quietLoop()]));`]);
  t.same(JSON.parse(stdout), [true, false]);
});
