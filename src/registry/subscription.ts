/**
 * One subscribed service as the data path sees it: the endpoints every registry lists for it,
 * merged in config order, with zero-instance protection and the stale flag.
 *
 * Events (the data path republishes to workers on 'change'):
 *   'change' (sub)          the endpoint list changed (`endpoints`, `version`)
 *   'stale'  (sub, stale)   the list may be out of date (a registry lost its session), or is fresh again
 *   'held'   (sub, held)    a change to an empty list is being held back, or no longer
 *   'closed' (sub)          unsubscribed (idle, or dropped); subscribe again for a new one
 */
import { EventEmitter } from 'node:events';
import type { ServiceKind } from './config';
import { dubboMatches } from './dubbo-url';
import type { GlobalRegistryStats } from './stats';
import { RegistryError, type Clock, type RegistryEndpoint } from './types';

const EMPTY: readonly RegistryEndpoint[] = Object.freeze([]);

interface Part {
  endpoints: readonly RegistryEndpoint[] | null;
  stale: boolean;
}

export interface SubscriptionOptions {
  registries: readonly string[];
  zeroInstanceHoldMs: number;
  firstListTimeoutMs: number;
  pinned: boolean;
  clock: Clock;
  stats: GlobalRegistryStats;
}

export class Subscription extends EventEmitter {
  readonly key: string;
  /** Frozen; replaced as a whole on every change. */
  endpoints: readonly RegistryEndpoint[] = EMPTY;
  /** Bumped on every change of `endpoints`. */
  version = 0;
  /** True until every registry answered, and while any of them cannot vouch for its part. */
  stale = true;
  /** A change to an empty list is being held back (registry.zeroInstanceHoldMs). */
  held = false;
  closed = false;
  /** Subscribed at start: never unsubscribed for being idle. */
  readonly pinned: boolean;
  /**
   * Resolves once every registry answered (the list may be empty: none registered), or at
   * registry.firstListTimeoutMs if at least one did (the rest stay stale); else fails with
   * ERR_REGISTRY_TIMEOUT, and the subscription goes on waiting ('change' tells when it comes).
   */
  readonly ready: Promise<Subscription>;

  /** Set by touch(), cleared by the idle sweep. */
  used = false;
  lastUsed: number;

  private readonly parts = new Map<string, Part>();
  private readyDone = false;
  private resolveReady!: (s: Subscription) => void;
  private rejectReady!: (e: Error) => void;
  private readyTimer: unknown;
  private holdTimer: unknown = null;

  constructor(readonly kind: ServiceKind, readonly service: string, private readonly opts: SubscriptionOptions) {
    super();
    this.key = `${kind}:${service}`;
    this.pinned = opts.pinned;
    this.lastUsed = opts.clock.now();
    for (const r of opts.registries) this.parts.set(r, { endpoints: null, stale: true });
    this.ready = new Promise<Subscription>((resolve, reject) => { this.resolveReady = resolve; this.rejectReady = reject; });
    this.ready.catch(() => { /* a caller that never awaits it must not see an unhandled rejection */ });
    this.readyTimer = opts.clock.setTimeout(() => this.readyTimeout(), opts.firstListTimeoutMs);
  }

  /** The data path calls this for every request it sends with this list: one store, no clock. */
  touch(): void {
    this.used = true;
  }

  /** Dubbo: the providers a call of this group and version may go to (Dubbo's own matching rule). */
  dubboProviders(group: string | undefined, version: string | undefined): RegistryEndpoint[] {
    return this.endpoints.filter((e) => dubboMatches(e.labels, { group, version }));
  }

  // ── fed by Registries ────────────────────────────────────────────────────

  /** @internal A registry's current list for this service. */
  setList(registry: string, endpoints: readonly RegistryEndpoint[]): void {
    const part = this.parts.get(registry);
    if (!part || this.closed) return;
    part.endpoints = endpoints;
    this.recompute();
    if (!this.readyDone && [...this.parts.values()].every((p) => p.endpoints !== null)) this.settleReady();
  }

  /** @internal */
  setStale(registry: string, stale: boolean): void {
    const part = this.parts.get(registry);
    if (!part || this.closed) return;
    part.stale = stale;
    this.updateStale();
  }

  /** @internal */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.opts.clock.clearTimeout(this.readyTimer);
    if (this.held) this.release();
    if (!this.readyDone) {
      this.readyDone = true;
      this.rejectReady(new RegistryError('ERR_REGISTRY_CLOSED', `${this.key}: unsubscribed before its first list came`));
    }
    this.emit('closed', this);
  }

  private readyTimeout(): void {
    if (this.readyDone || this.closed) return;
    if ([...this.parts.values()].some((p) => p.endpoints !== null)) { this.settleReady(); return; }
    this.readyDone = true;
    this.opts.stats.sink.inc(this.opts.stats.readyTimeout);
    this.rejectReady(new RegistryError('ERR_REGISTRY_TIMEOUT',
      `${this.key}: no registry (${this.opts.registries.join(', ')}) answered within ${this.opts.firstListTimeoutMs} ms`));
  }

  private settleReady(): void {
    this.readyDone = true;
    this.opts.clock.clearTimeout(this.readyTimer);
    this.resolveReady(this);
  }

  private updateStale(): void {
    let stale = false;
    for (const p of this.parts.values()) if (p.stale || p.endpoints === null) { stale = true; break; }
    if (stale === this.stale) return;
    this.stale = stale;
    this.emit('stale', this, stale);
  }

  private recompute(): void {
    const merged: RegistryEndpoint[] = [];
    for (const p of this.parts.values()) if (p.endpoints) merged.push(...p.endpoints);
    const hold = this.opts.zeroInstanceHoldMs;
    if (merged.length === 0 && this.endpoints.length > 0 && hold > 0) {
      if (!this.held) {
        this.held = true;
        const s = this.opts.stats;
        s.sink.inc(s.held);
        s.sink.inc(s.protected);
        this.holdTimer = this.opts.clock.setTimeout(() => {
          this.holdTimer = null;
          this.release();
          this.apply(this.merged());
        }, hold);
        this.emit('held', this, true);
      }
    } else {
      if (this.held) this.release();
      this.apply(merged);
    }
    this.updateStale();
  }

  private merged(): RegistryEndpoint[] {
    const out: RegistryEndpoint[] = [];
    for (const p of this.parts.values()) if (p.endpoints) out.push(...p.endpoints);
    return out;
  }

  private release(): void {
    if (this.holdTimer !== null) { this.opts.clock.clearTimeout(this.holdTimer); this.holdTimer = null; }
    this.held = false;
    this.opts.stats.sink.dec(this.opts.stats.held);
    this.emit('held', this, false);
  }

  /**
   * Registries hand out the same endpoint object for as long as what it was made from is
   * unchanged, so a list of the same objects in the same order is no change.
   */
  private apply(list: RegistryEndpoint[]): void {
    const cur = this.endpoints;
    if (this.version > 0 && cur.length === list.length && list.every((e, i) => e === cur[i])) return;
    const first = this.version === 0;
    this.endpoints = Object.freeze(list);
    this.version++;
    if (!first || list.length > 0) this.opts.stats.sink.inc(this.opts.stats.updates);
    this.emit('change', this);
  }
}
