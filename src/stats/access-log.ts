/**
 * Access log: one JSON line per request, through pino. Off by default: a line
 * costs a few µs of CPU on the request's worker, which is a tenth of the
 * per-request budget; turn it on, or sample it, where the lines are worth that.
 *
 * Lines are batched and written without blocking (see LogSink in ../log): the
 * request never waits for the destination, a destination that nobody reads
 * holds at most `accessLog.bufferBytes` per thread, and lines beyond that are
 * dropped and counted in sluice_log_lines_dropped_total{log="access"}. Before a
 * worker is stopped it writes the lines it holds, waiting at most LOG_FLUSH_MS for a
 * slow reader (log-flush.ts); what is still held then is counted as dropped.
 */
import pino, { type Logger } from 'pino';
import { countProcessLogDrops, LogSink, log } from '../log';
import type { Stats } from './stats';

export interface AccessRecord {
  protocol: string;
  direction: string;
  listener: string;
  method: string;
  path: string;
  service: string;
  status: number;
  reason?: string;
  route?: string;
  upstream?: string;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  source: string;
  /** The caller's SPIFFE ID (without spiffe://) on an mTLS connection; absent on plaintext ones. */
  principal?: string;
  /** Attempts at an upstream, when there was more than one. */
  attempts?: number;
  /** What filters noted (a fault injected, a mirror, a split's choice). */
  [note: string]: string | number | undefined;
}

export interface AccessLogOptions {
  enabled: boolean;
  path: string;
  sampleRate: number;
  bufferBytes: number;
}

/** Buffered lines are written at least this often, however quiet the proxy. */
const FLUSH_INTERVAL_MS = 1000;

export class AccessLog {
  private readonly logger: Logger | null;
  private readonly sink: LogSink | null;

  /** `stats`: where dropped lines (this log's and this thread's process log's) are counted. */
  constructor(private readonly opts: AccessLogOptions, stats?: Stats) {
    const dropped = stats ? stats.slot('sluice_log_lines_dropped_total', { log: 'access' }) : -1;
    if (stats) {
      const processDropped = stats.slot('sluice_log_lines_dropped_total', { log: 'process' });
      countProcessLogDrops((n) => stats.add(processDropped, n));
    }
    if (!opts.enabled) {
      this.logger = null;
      this.sink = null;
      return;
    }
    this.sink = new LogSink(opts.path, {
      maxBufferBytes: opts.bufferBytes,
      batchMs: FLUSH_INTERVAL_MS,
      onDrop: stats ? (n) => stats.add(dropped, n) : undefined,
    });
    if (this.sink.openError) log.error({ err: this.sink.openError.message, path: opts.path }, 'cannot open the access log: its lines are dropped');
    this.logger = pino({ base: null, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime }, this.sink);
  }

  /** A config without this log replaced it: write what is held and release the file. */
  close(): void {
    this.sink?.close();
  }

  get enabled(): boolean {
    return this.logger !== null;
  }

  write(r: AccessRecord): void {
    if (!this.logger) return;
    if (this.opts.sampleRate < 1 && Math.random() >= this.opts.sampleRate) return;
    this.logger.info(r);
  }

  /** Writes what is held now, as far as the destination takes it (never waits). */
  flush(): void {
    this.sink?.flush();
  }
}
