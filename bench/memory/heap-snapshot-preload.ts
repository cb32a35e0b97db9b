/**
 * Loaded into Sluice with `node -r` by bench/memory/idle-heap.ts: in each worker thread, when the
 * file `<SLUICE_HEAP_DIR>/take-<n>` appears, writes a heap snapshot of that worker to
 * `<dir>/worker-<threadId>-<n>.heapsnapshot` and then `<dir>/done-<threadId>-<n>`. A snapshot
 * collects the garbage first, so it holds only what is live.
 */
import { existsSync, closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
import { isMainThread, threadId } from 'node:worker_threads';

const dir = process.env.SLUICE_HEAP_DIR;
if (!isMainThread && dir) {
  let n = 0;
  let busy = false;
  const timer = setInterval(() => {
    if (busy || !existsSync(path.join(dir, `take-${n}`))) return;
    busy = true;
    const s = new Session();
    s.connect();
    const fd = openSync(path.join(dir, `worker-${threadId}-${n}.heapsnapshot`), 'w');
    s.on('HeapProfiler.addHeapSnapshotChunk', (m) => writeSync(fd, m.params.chunk));
    s.post('HeapProfiler.takeHeapSnapshot', {}, () => {
      closeSync(fd);
      s.disconnect();
      writeFileSync(path.join(dir, `done-${threadId}-${n}`), '');
      n++;
      busy = false;
    });
  }, 200);
  timer.unref();
}
