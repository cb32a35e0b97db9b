/**
 * LogSink against a real pipe (a FIFO): a reader that stops reading makes the sink hold lines up
 * to its bound and drop (and count) the rest, never block; lines are written whole when the
 * reader comes back; draining waits for the reader at most until its deadline.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { LogSink } from '../src/log';
import { waitFor } from './helpers/harness';

/** A FIFO with a non-blocking reader end that the test reads when it wants to. */
function fifo(): { path: string; read(): string; close(): void } {
  const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-log-')), 'pipe');
  execFileSync('mkfifo', [p]);
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const buf = Buffer.alloc(1 << 20);
  return {
    path: p,
    read() {
      let out = '';
      for (;;) {
        let n = 0;
        try { n = fs.readSync(fd, buf); } catch (err) { if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break; throw err; }
        if (n === 0) break;
        out += buf.toString('utf8', 0, n);
      }
      return out;
    },
    close() { fs.closeSync(fd); },
  };
}

const line = (i: number) => `${JSON.stringify({ i, pad: 'x'.repeat(80) })}\n`;

t.test('a reader that stops: bounded, dropped lines counted, whole lines once it reads again', async (t) => {
  const pipe = fifo();
  t.teardown(() => pipe.close());
  const drops: number[] = [];
  const max = 64 << 10;
  const sink = new LogSink(pipe.path, { maxBufferBytes: max, batchMs: 0, onDrop: (n) => drops.push(n) });
  t.teardown(() => sink.close());
  const n = 10_000;
  for (let i = 0; i < n; i++) sink.write(line(i)); // ~1 MB; the pipe takes 64 KiB
  t.ok(sink.pendingBytes <= max, `held ${sink.pendingBytes} bytes, at most ${max}`);
  t.ok(sink.dropped > 0, `dropped ${sink.dropped}`);
  t.equal(drops.reduce((a, b) => a + b, 0), sink.dropped, 'every drop reported to the counter');

  // the reader comes back: what was held is written by the retry timer
  let got = '';
  await waitFor(() => { got += pipe.read(); return sink.pendingBytes === 0; }, 10_000, 'the held lines to be written');
  got += pipe.read();
  const lines = got.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { i: number });
  t.equal(lines.length + sink.dropped, n, 'every line was written whole or counted as dropped');
  const ids = lines.map((l) => l.i);
  t.same(ids, [...ids].sort((a, b) => a - b), 'in order');
});

t.test('draining waits for the reader until the deadline, then drops what is left and counts it', async (t) => {
  const pipe = fifo();
  t.teardown(() => pipe.close());
  const sink = new LogSink(pipe.path, { maxBufferBytes: 1 << 20, batchMs: 0 });
  t.teardown(() => sink.close());
  for (let i = 0; i < 2000; i++) sink.write(line(i)); // ~200 KB: more than the pipe holds
  const held = sink.pendingBytes;
  t.ok(held > 0, 'lines are held');
  t.equal(sink.dropped, 0);
  sink.drainUntil(Date.now() + 50); // nobody reads
  t.equal(sink.pendingBytes, 0, 'nothing held after the deadline');
  t.ok(sink.dropped > 0, `${sink.dropped} lines dropped and counted`);
  const written = pipe.read().split('\n').filter(Boolean).length;
  t.equal(written + sink.dropped, 2000, 'written or counted, none lost without a word');
});

t.test('a destination that is gone: lines are dropped and counted, nothing throws', async (t) => {
  const pipe = fifo();
  const sink = new LogSink(pipe.path, { maxBufferBytes: 1 << 20, batchMs: 0 });
  t.teardown(() => sink.close());
  pipe.close(); // the only reader leaves: EPIPE
  sink.write(line(1));
  sink.write(line(2));
  t.equal(sink.dropped, 2);
  t.equal(sink.pendingBytes, 0);
});

t.test('a file that cannot be opened gives a sink that drops and says why', async (t) => {
  const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-log-')), 'pipe');
  execFileSync('mkfifo', [p]); // a FIFO nobody reads: opening it must not block
  const sink = new LogSink(p, { maxBufferBytes: 1 << 20, batchMs: 0 });
  t.match(sink.openError, { code: 'ENXIO' });
  sink.write(line(1));
  t.equal(sink.dropped, 1);
});
