/**
 * Access log: one JSON line per request, through pino. Off by default: a line
 * costs a few µs of CPU on the request's worker, which is a tenth of the
 * per-request budget; turn it on, or sample it, where the lines are worth that.
 * pino's asynchronous destination buffers lines and writes them in batches, so
 * the request never waits for the disk.
 */
import pino, { type Logger } from 'pino';

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
}

/** Buffered lines reach the file at least this often, however quiet the proxy. */
const FLUSH_INTERVAL_MS = 1000;

export class AccessLog {
  private readonly logger: Logger | null;
  private readonly timer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: { enabled: boolean; path: string; sampleRate: number }) {
    this.logger = opts.enabled
      ? pino(
          { base: null, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime },
          pino.destination({ dest: opts.path === 'stdout' ? 1 : opts.path, sync: false, minLength: 4096, mkdir: true }),
        )
      : null;
    if (this.logger) {
      const logger = this.logger;
      this.timer = setInterval(() => logger.flush(), FLUSH_INTERVAL_MS);
      this.timer.unref();
    }
  }

  /** A config without this log replaced it: write what is buffered and stop the timer. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.logger?.flush();
  }

  get enabled(): boolean {
    return this.logger !== null;
  }

  write(r: AccessRecord): void {
    if (!this.logger) return;
    if (this.opts.sampleRate < 1 && Math.random() >= this.opts.sampleRate) return;
    this.logger.info(r);
  }

  flush(): void {
    this.logger?.flush();
  }
}
