/** Shapes shared by the registry module and the data path that uses it. */
import { SluiceError } from '../errors';

/** One endpoint a registry lists; `address` and `weight` read like a cluster endpoint in the config. */
export interface RegistryEndpoint {
  /** `host:port`, `[v6]:port` for IPv6. */
  readonly address: string;
  /** Dubbo: the provider's weight (100 by default, 0 takes no traffic while others have more); Spring: 1. */
  readonly weight: number;
  /** Dubbo: every URL parameter (`group` and `version` always, '' when absent); Spring: the instance metadata. */
  readonly labels: Readonly<Record<string, string>>;
  /** `zookeeper:<registry name>`. */
  readonly source: string;
  /** Dubbo: the provider URL as decoded; Spring: the instance id. For humans (admin dumps, logs). */
  readonly id: string;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real time; timers never keep the process alive on their own. */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** What the registries log through; a pino logger fits. */
export interface Logger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export type RegistryErrorCode =
  | 'ERR_REGISTRY_TIMEOUT'       // no registry answered within registry.firstListTimeoutMs
  | 'ERR_REGISTRY_CLOSED'        // the registries were closed, or the subscription dropped, first
  | 'ERR_REGISTRY_BAD_SERVICE'   // a service name that cannot be a ZooKeeper path segment
  | 'ERR_REGISTRY_NO_REGISTRY'   // no configured registry serves this kind of service
  | 'ERR_REGISTRY_FULL';         // registry.maxServices services are subscribed already

export class RegistryError extends SluiceError {
  constructor(code: RegistryErrorCode, message: string) {
    super(code, message);
    this.name = 'RegistryError';
  }
}

/**
 * A warning that can repeat for every read under trouble: logged at its first occurrence, then
 * at most once per interval with the count since (src/log.ts LogEvery, but through the logger
 * and clock it is given, so tests see its lines).
 */
export class LogEveryTo {
  private count = 0;
  private last = -Infinity;
  private timer: unknown = null;
  private fields: Record<string, unknown> = {};

  constructor(private readonly log: Logger, private readonly clock: Clock, private readonly msg: string, private readonly intervalMs = 10_000) {}

  note(fields: Record<string, unknown>): void {
    this.count++;
    this.fields = fields;
    if (this.timer !== null) return;
    const wait = this.last + this.intervalMs - this.clock.now();
    if (wait <= 0) this.flush();
    else this.timer = this.clock.setTimeout(() => { this.timer = null; this.flush(); }, wait);
  }

  flush(): void {
    if (this.timer !== null) { this.clock.clearTimeout(this.timer); this.timer = null; }
    if (this.count === 0) return;
    this.log.warn({ ...this.fields, count: this.count, intervalMs: this.intervalMs }, this.msg);
    this.count = 0;
    this.last = this.clock.now();
  }
}
