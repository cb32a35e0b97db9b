/**
 * Fuzzing (fast-check) of the frame decoder and the lazy views with random bytes and mutated valid frames
 * (flip, set, insert, delete, truncate, duplicate), pushed in random pieces. Only DubboProtocolError may
 * come out (through onError, or thrown by a view method); the decoder's contract holds (consecutive exact
 * frames, nothing after an error, never holding more than it was given).
 *
 * Each suite runs in a worker thread: a watchdog terminates a worker that reports no progress for 20 s
 * (a hang fails the test instead of stalling it), and resourceLimits cap its heap (a memory blow-up ends
 * the worker with ERR_WORKER_OUT_OF_MEMORY, which fails the test). Seeds are fixed so a failure replays;
 * set DUBBO_FUZZ_SEED to explore other inputs.
 */
import t from 'tap';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { FuzzJob, FuzzMessage, FuzzStats, Suite } from './fuzz-worker';

const SEED = Number(process.env.DUBBO_FUZZ_SEED ?? 20240611);
const STALL_MS = 20_000;
const HEAP_MB = 256;

function runSuite(suite: Suite, numRuns: number, seed: number): Promise<{ stats: FuzzStats | null; failure: string | null }> {
  return new Promise((resolve) => {
    const job: FuzzJob = { suite, numRuns, seed };
    const worker = new Worker(path.join(__dirname, 'fuzz-worker.js'), {
      workerData: job,
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: HEAP_MB, maxYoungGenerationSizeMb: 32 },
    });
    let settled = false;
    let watchdog = setTimeout(stalled, STALL_MS);
    function stalled() {
      finish(null, `no progress for ${STALL_MS} ms: a fuzz case hangs`);
      void worker.terminate();
    }
    function finish(stats: FuzzStats | null, failure: string | null) {
      if (settled) return;
      settled = true;
      clearTimeout(watchdog);
      resolve({ stats, failure });
    }
    worker.on('message', (m: FuzzMessage) => {
      clearTimeout(watchdog);
      watchdog = setTimeout(stalled, STALL_MS);
      if (m.type === 'done') finish(m.stats, m.failure);
    });
    worker.on('error', (err) => finish(null, `worker died: ${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`));
    worker.on('exit', (code) => finish(null, `worker exited with ${code} before finishing`));
    t.teardown(() => worker.terminate());
  });
}

t.test('random bytes into the decoder, the reader and the request view', async (t) => {
  const { stats, failure } = await runSuite('random-bytes', 4000, SEED);
  t.equal(failure, null, failure ?? 'no failure');
  if (!stats) return;
  t.equal(stats.runs, 4000);
  t.ok(stats.errors.ERR_DUBBO_BAD_MAGIC > 0, 'bad magic seen');
  t.ok(stats.errors.ERR_DUBBO_BAD_BODY > 0, 'bad bodies seen');
  t.ok(stats.frames > 0, 'plausible headers made frames');
  t.ok(stats.heapUsedMb < HEAP_MB, `heap ${stats.heapUsedMb} MiB`);
});

t.test('mutated streams of valid frames, headers included', async (t) => {
  const { stats, failure } = await runSuite('mutated-streams', 5000, SEED + 1);
  t.equal(failure, null, failure ?? 'no failure');
  if (!stats) return;
  t.equal(stats.runs, 5000);
  t.ok(stats.frames > 2000, `${stats.frames} frames decoded`);
  t.ok(stats.attachmentsRead > 500, `${stats.attachmentsRead} attachment maps read`);
  t.ok(stats.argumentsDecoded > 100, `${stats.argumentsDecoded} argument lists decoded`);
  t.ok((stats.errors.ERR_DUBBO_BAD_MAGIC ?? 0) + (stats.errors.ERR_DUBBO_SERIALIZATION ?? 0) + (stats.errors.ERR_DUBBO_PAYLOAD_TOO_LARGE ?? 0) > 0, 'header errors seen');
  t.ok(stats.maxBuffered <= 64 * 1024 + 16, 'never held more than a frame');
});

t.test('mutated bodies behind consistent headers: every mutation reaches the views', async (t) => {
  const { stats, failure } = await runSuite('mutated-bodies', 4000, SEED + 2);
  t.equal(failure, null, failure ?? 'no failure');
  if (!stats) return;
  t.equal(stats.runs, 4000);
  t.equal(stats.frames, 4000);
  t.ok(stats.errors.ERR_DUBBO_BAD_BODY > 500, `${stats.errors.ERR_DUBBO_BAD_BODY} bad bodies refused`);
  t.ok(stats.attachmentsRead > 50, `${stats.attachmentsRead} mutated calls still read`);
});
