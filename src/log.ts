/**
 * The process log (JSON lines on stderr), and the sink that it and the access log write through.
 *
 * A log must never stop the proxy, nor keep it from exiting:
 *
 *   pino ─▶ LogSink.write(line) ─▶ bounded buffer ─▶ writeSync(fd), never blocking
 *                                    full: the line is dropped and counted
 *
 * - Pipes and sockets are in non-blocking mode. Node's own stdout/stderr streams put them there;
 *   touching them once in the main thread does it for every thread, since all share the
 *   descriptor. A destination nobody reads answers EAGAIN, and the lines wait in the buffer.
 * - Nothing waits in the libuv thread pool: a write stuck there (SonicBoom's asynchronous mode)
 *   holds its thread, and a worker, or the process at exit, waits for it forever.
 * - Several threads write to the same pipe, so a write carries whole lines and at most PIPE_BUF
 *   bytes, which a pipe takes atomically: lines from different workers never interleave.
 * - On the way out, every sink of a thread writes what it holds, waiting at most a given time in
 *   all for a slow reader (drainLogs in a worker, flushLogs in the main thread); whatever is left
 *   then is counted as dropped. A worker is asked to do so just before it is stopped
 *   (worker/log-flush.ts), since a terminated thread runs no code of its own.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isMainThread } from 'node:worker_threads';
import pino from 'pino';

/** Bytes the kernel writes to a pipe in one piece (POSIX minimum, Linux's value). */
const PIPE_BUF = 4096;
/** Regular files take bigger writes; O_APPEND keeps each one whole. */
const FILE_WRITE = 64 << 10;
/** How soon to try again when the destination was full. */
const RETRY_MS = 20;
/** Step of the bounded wait while draining. */
const DRAIN_STEP_MS = 5;

if (isMainThread) {
  // Node's stdio streams set O_NONBLOCK on pipes and sockets (a TTY or a file is left as it is).
  void process.stdout;
  void process.stderr;
}

export interface LogSinkOptions {
  /** Most bytes held while the destination is not taking them; past it, lines are dropped. */
  maxBufferBytes: number;
  /** Lines wait up to this long to be written together; 0 writes each line at once. */
  batchMs: number;
  /** Called with the number of lines dropped (buffer full, destination gone, drain time over). */
  onDrop?: (lines: number) => void;
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** This thread's sinks that may still hold lines. */
const sinks = new Set<LogSink>();

export class LogSink {
  readonly openError: Error | null = null;
  dropped = 0;
  private readonly fd: number;
  /** A file opened here, closed with the sink (not stdout or stderr). */
  private readonly ownsFd: boolean;
  /** Most bytes one write carries: PIPE_BUF for pipes, sockets and terminals, more for files. */
  private readonly writeLimit: number;
  private onDrop: ((lines: number) => void) | undefined;
  private lines: string[] = [];
  private sizes: number[] = [];
  /** Index of the first line not yet written. */
  private head = 0;
  /** Bytes held, including `rest`. */
  private held = 0;
  /** The tail of a batch the destination took only part of: it goes first. */
  private rest: Buffer | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** The destination is gone (EPIPE, EBADF), or the sink closed: every line from now on is dropped. */
  private dead = false;
  /** No more lines will come: release the sink once what it holds is written. */
  private closing = false;

  /**
   * `dest`: 'stdout', 'stderr', or a file path (appended to; its directory is created).
   * A file that cannot be opened gives a sink that drops every line, with `openError` set.
   */
  constructor(dest: string, private readonly opts: LogSinkOptions) {
    this.onDrop = opts.onDrop;
    let fd = -1;
    this.ownsFd = dest !== 'stdout' && dest !== 'stderr';
    try {
      if (dest === 'stdout') fd = 1;
      else if (dest === 'stderr') fd = 2;
      else {
        fs.mkdirSync(path.dirname(dest), { recursive: true });
        // O_NONBLOCK: a FIFO with no reader fails here (ENXIO) instead of blocking the open
        const c = fs.constants;
        fd = fs.openSync(dest, c.O_WRONLY | c.O_APPEND | c.O_CREAT | c.O_NONBLOCK, 0o644);
      }
    } catch (err) {
      this.openError = err as Error;
      this.dead = true;
    }
    this.fd = fd;
    if (!this.dead) sinks.add(this);
    let isFile = false;
    try { isFile = fd >= 0 && fs.fstatSync(fd).isFile(); } catch { /* closed stdio: writes will say so */ }
    this.writeLimit = isFile ? FILE_WRITE : PIPE_BUF;
  }

  /** Where dropped lines are counted; a sink made before the counters were known gets it later. */
  countDrops(fn: (lines: number) => void): void {
    this.onDrop = fn;
  }

  /** Bytes waiting to be written. */
  get pendingBytes(): number {
    return this.held;
  }

  /** pino's destination interface: one call per line (newline included). */
  write(line: string): boolean {
    const n = Buffer.byteLength(line);
    if (this.dead || this.held + n > this.opts.maxBufferBytes) {
      this.drop(1);
      return true;
    }
    this.lines.push(line);
    this.sizes.push(n);
    this.held += n;
    if (this.opts.batchMs === 0 || this.held >= this.writeLimit) this.writeOut();
    else this.schedule(this.opts.batchMs);
    return true;
  }

  /** Writes what the destination takes now, without waiting. pino calls this from `logger.flush()`. */
  flush(cb?: (err?: Error) => void): void {
    this.writeOut();
    cb?.();
  }

  /**
   * Writes what is held, waiting for a slow reader until `deadline` (Date.now() time); what is
   * left then is dropped. Blocks the calling thread: for a thread about to end.
   */
  drainUntil(deadline: number): void {
    while (!this.writeOut()) {
      const left = deadline - Date.now();
      if (left <= 0) { this.dropHeld(); return; }
      Atomics.wait(sleepCell, 0, 0, Math.min(DRAIN_STEP_MS, left));
    }
  }

  /** Like drainUntil(), without blocking. */
  async drainAsync(deadline: number): Promise<void> {
    while (!this.writeOut() && Date.now() < deadline) await new Promise((r) => setTimeout(r, DRAIN_STEP_MS));
    if (!this.writeOut()) this.dropHeld();
  }

  /**
   * No more lines will come: what is held is written as the destination takes it (retrying, as
   * before), then a file of our own is closed.
   */
  close(): void {
    this.closing = true;
    if (this.writeOut()) this.release();
  }

  private release(): void {
    sinks.delete(this);
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.ownsFd && this.fd >= 0 && !this.dead) {
      try { fs.closeSync(this.fd); } catch { /* already gone */ }
    }
    this.dead = true;
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.writeOut() && this.closing) this.release();
    }, ms);
    this.timer.unref();
  }

  /** True when nothing is left. On EAGAIN the rest waits for a retry. */
  private writeOut(): boolean {
    while (this.rest !== null || this.head < this.lines.length) {
      if (this.dead) { this.dropHeld(); return true; }
      let buf: Buffer;
      let taken = 0;
      if (this.rest !== null) {
        buf = this.rest;
      } else {
        let bytes = this.sizes[this.head];
        let end = this.head + 1;
        while (end < this.lines.length && bytes + this.sizes[end] <= this.writeLimit) bytes += this.sizes[end++];
        buf = Buffer.from(end - this.head === 1 ? this.lines[this.head] : this.lines.slice(this.head, end).join(''));
        taken = end - this.head;
      }
      let n: number;
      try {
        n = fs.writeSync(this.fd, buf);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          this.schedule(RETRY_MS);
          return false;
        }
        // EPIPE (the reader left), EBADF...: nothing will be written here again
        this.dead = true;
        this.dropHeld();
        return true;
      }
      if (taken > 0) this.consume(taken);
      this.held -= n;
      this.rest = n < buf.length ? buf.subarray(n) : null;
    }
    this.compact();
    return true;
  }

  private consume(k: number): void {
    for (let i = 0; i < k; i++) this.lines[this.head + i] = '';
    this.head += k;
    if (this.head > 1024 && this.head * 2 > this.lines.length) this.compact();
  }

  private compact(): void {
    if (this.head === 0) return;
    this.lines = this.lines.slice(this.head);
    this.sizes = this.sizes.slice(this.head);
    this.head = 0;
  }

  private dropHeld(): void {
    // the tail of a partly written batch may end several lines
    let n = this.lines.length - this.head;
    if (this.rest !== null) for (const b of this.rest) if (b === 0x0a) n++;
    this.lines = [];
    this.sizes = [];
    this.head = 0;
    this.rest = null;
    this.held = 0;
    if (n > 0) this.drop(n);
  }

  private drop(n: number): void {
    this.dropped += n;
    this.onDrop?.(n);
  }
}

/** The process log's sink: lines go out at once; a stderr nobody reads holds at most this much. */
const processLogSink = new LogSink('stderr', { maxBufferBytes: 256 << 10, batchMs: 0 });

export const log = pino({ base: { pid: process.pid }, level: process.env.SLUICE_LOG_LEVEL ?? 'info' }, processLogSink);

/** Where this thread counts process log lines it had to drop (sluice_log_lines_dropped_total{log="process"}). */
export function countProcessLogDrops(fn: (lines: number) => void): void {
  processLogSink.countDrops(fn);
}

/**
 * A worker about to be stopped: every sink of this thread writes what it holds, waiting for a
 * slow reader at most `ms` in all (blocking); what is left is counted as dropped.
 */
export function drainLogs(ms: number): void {
  const deadline = Date.now() + ms;
  for (const s of [...sinks]) s.drainUntil(deadline);
}

/** The main thread on its way out: like drainLogs, without blocking the event loop. */
export async function flushLogs(ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (const s of [...sinks]) await s.drainAsync(deadline);
}

/**
 * A warning that can come once per connection under overload: logged at its first occurrence,
 * then at most once per interval with the count of occurrences since, never once per event.
 */
export class LogEvery {
  private count = 0;
  private timer: NodeJS.Timeout | null = null;
  private last = 0;

  constructor(private readonly msg: string, private readonly intervalMs = 10_000) {}

  private fields: Record<string, unknown> = {};

  note(fields: Record<string, unknown> = {}): void {
    this.count++;
    this.fields = fields;
    const now = Date.now();
    if (this.timer) return;
    if (now - this.last >= this.intervalMs) {
      this.flush(fields);
      return;
    }
    this.timer = setTimeout(() => { this.timer = null; this.flush(fields); }, this.intervalMs - (now - this.last));
    this.timer.unref();
  }

  /** Log the occurrences counted since the last line now (at a stop, say). */
  flush(fields: Record<string, unknown> = this.fields): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.count === 0) return;
    log.warn({ ...fields, count: this.count, intervalMs: this.intervalMs }, this.msg);
    this.count = 0;
    this.last = Date.now();
  }
}
