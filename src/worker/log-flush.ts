/**
 * The last thing a worker does before it is stopped: write the log lines it holds.
 *
 * A terminated worker runs no code of its own, so whatever its access log still held would be
 * lost without a word. Just before the pool is destroyed, the main thread runs this module as a
 * task on every worker (piscina loads it by file name beside the connection handler):
 *
 *   main: flushWorkerLogs(pool) ──task──▶ each worker: drainLogs(LOG_FLUSH_MS), answers its threadId
 *         until every thread has answered, or LOG_FLUSH_MS + 1 s have passed ──▶ pool.destroy()
 *
 * A worker waits at most LOG_FLUSH_MS for a slow reader; what is left then is counted as dropped.
 */
import { threadId } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import { drainLogs } from '../log';

/** How long a worker may wait, in all, for a slow reader of its lines before it is stopped. */
export const LOG_FLUSH_MS = 1000;

/** Worker side (a piscina task): write what this thread's logs hold. */
export default function flushThisWorker(): number {
  drainLogs(LOG_FLUSH_MS);
  return threadId;
}

/** Main thread: every worker of `pool` writes what its logs hold; resolves when all have, or in bounded time. */
export async function flushWorkerLogs(pool: Piscina): Promise<void> {
  const want = new Set(pool.threads.map((w) => w.threadId));
  const deadline = Date.now() + LOG_FLUSH_MS + 1000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((r) => { timer = setTimeout(() => r(null), LOG_FLUSH_MS + 1000); });
  // the balancer gives concurrent tasks to idle workers first; a worker still busy with a
  // connection may get two, so ask again for the threads that did not answer
  while (want.size > 0 && Date.now() < deadline) {
    const tasks = [...want].map(() => pool.run(null, { filename: __filename }).catch(() => -1) as Promise<number>);
    const ids = await Promise.race([Promise.all(tasks), timeout]);
    if (ids === null) break;
    for (const id of ids) want.delete(id);
  }
  clearTimeout(timer);
}
