/**
 * The addon's schedBatch() on real threads, each a worker thread of this test so the test's own
 * main thread keeps its policy: the policy each one reads from /proc/thread-self/stat after
 * every call, and what the call returns.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { loadNative } from '../../src/net/native';

const SCHED_OTHER = 0;
const SCHED_BATCH = 3;

const native = loadNative();
const usable = native !== null && typeof native.schedBatch === 'function';

/** Runs `steps` (calls of schedBatch) in a new thread: after each, its return and the thread's policy. */
function inThread(steps: boolean[]): Promise<{ policyAtStart: number; results: Array<{ returned: number; policy: number }> }> {
  const nativePath = path.resolve(__dirname, '..', '..', 'src', 'net', 'native.js');
  const code = `
    const fs = require('node:fs');
    const { parentPort, workerData } = require('node:worker_threads');
    const native = require(workerData.nativePath).loadNative();
    const policy = () => { const s = fs.readFileSync('/proc/thread-self/stat', 'latin1'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[41 - 3]); };
    const policyAtStart = policy();
    const results = workerData.steps.map((on) => ({ returned: native.schedBatch(on), policy: policy() }));
    parentPort.postMessage({ policyAtStart, results });
  `;
  const w = new Worker(code, { eval: true, workerData: { nativePath, steps } });
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

t.test('schedBatch moves a thread between the default policy and SCHED_BATCH', { skip: !usable && 'addon without schedBatch' }, async (t) => {
  const first = await inThread([true, true, false, false]);
  t.equal(first.policyAtStart, SCHED_OTHER, 'a new thread starts in the default policy');
  t.same(first.results[0], { returned: 1, policy: SCHED_BATCH }, 'true: changed to SCHED_BATCH');
  t.same(first.results[1], { returned: 1, policy: SCHED_BATCH }, 'true again: still batch, and still reported as made batch by the addon');
  t.same(first.results[2], { returned: 1, policy: SCHED_OTHER }, 'false: back to the default policy');
  t.same(first.results[3], { returned: 0, policy: SCHED_OTHER }, 'false again: left as it is');

  // another thread: schedBatch(true) there is not "already ours" (that was the first thread)
  const second = await inThread([false, true]);
  t.same(second.results[0], { returned: 0, policy: SCHED_OTHER }, 'false on a default thread: left as it is');
  t.same(second.results[1], { returned: 1, policy: SCHED_BATCH }, 'true on another thread: changed');
});

t.test('bad arguments are refused with a type error', { skip: !usable && 'addon without schedBatch' }, async (t) => {
  t.throws(() => (native!.schedBatch as unknown as (x?: unknown) => number)(), { code: 'ERR_INVALID_ARG' });
  t.throws(() => (native!.schedBatch as unknown as (x?: unknown) => number)('yes'), { code: 'ERR_INVALID_ARG' });
  t.throws(() => (native!.threadName as unknown as (x?: unknown) => void)(7), { code: 'ERR_INVALID_ARG' });
});
