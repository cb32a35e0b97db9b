/**
 * Per-cluster limits that hold for the whole sidecar (clusters[].circuitBreaker), Envoy's circuit
 * breaker thresholds: connections open to the cluster's endpoints, requests waiting for a
 * connection, requests in flight, retries in flight.
 *
 *   protection.limits.keys/names   the cluster's slot, found by its name (keyed-slots.ts)
 *   protection.limits.total        Int32 × SLOTS × 4   in use now, across every thread:
 *                                  [slot*4 + CONNECTIONS | PENDING | REQUESTS | RETRIES]
 *   protection.limits.rows         Int32 × GAUGE_ROWS × SLOTS × 4   each worker's share of total
 *
 * A slot is taken with Atomics.add and given back at once when the count was already at the limit,
 * so the limit is never passed, whatever the number of workers (two racing for the last place may
 * both be refused; neither is over). Each worker also counts its share in its own row: when a
 * worker dies with requests in flight, the main thread takes its share off the totals
 * (releaseShares), or the cluster would stay full for ever.
 *
 * The slot is the cluster's name: a reload keeps the counts (they are facts about connections and
 * requests in flight, whatever the new limits say), and a request that started under the old
 * config gives back what it took to the same counters.
 *
 * `mode: shadow`: a request over a limit is counted (…_shadow_overflow_total) and a line logged
 * (at most one per 10 s), and it goes on.
 */
import { GAUGE_ROWS } from '../stats/stats';
import type { Stats } from '../stats/stats';
import { LogEvery } from '../log';
import type { SharedMemory } from '../shared/shared-memory';
import { declareRegion } from '../shared/shared-memory';
import { KeyedSlots, KeyedSlotsLayout } from './keyed-slots';

export const LIMIT_SLOTS = 1024;
export const CONNECTIONS = 0;
export const PENDING = 1;
export const REQUESTS = 2;
export const RETRIES = 3;
const KINDS = 4;
export const LIMIT_NAMES = ['connections', 'pending', 'requests', 'retries'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

const LAYOUT = new KeyedSlotsLayout({ name: 'protection.limits', slots: LIMIT_SLOTS });
const TOTAL = declareRegion({ name: 'protection.limits.total', kind: 'int32', count: LIMIT_SLOTS * KINDS });
const ROWS = declareRegion({ name: 'protection.limits.rows', kind: 'int32', count: GAUGE_ROWS * LIMIT_SLOTS * KINDS });

export type Mode = 'enforce' | 'shadow';

/** Envoy's defaults. */
export const DEFAULT_LIMITS = Object.freeze({ maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 });

export interface LimitsConfig {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
  mode: Mode;
}

/** One thread's view of the limits' shared memory. */
export class LimitsTable {
  readonly slots: KeyedSlots;
  readonly total: Int32Array;
  private readonly rows: Int32Array;

  /** `row`: this worker's gauge row, -1 on the main thread (which never dies alone). */
  constructor(memory: SharedMemory, readonly row: number) {
    this.slots = new KeyedSlots(memory, LAYOUT);
    this.total = memory.region(TOTAL);
    this.rows = memory.region(ROWS);
  }

  /** The counts of one cluster now: [connections, pending, requests, retries]; null when it never had a slot. */
  counts(cluster: string): number[] | null {
    const s = this.slots.lookup(cluster);
    if (s < 0) return null;
    return [0, 1, 2, 3].map((k) => Atomics.load(this.total, s * KINDS + k));
  }

  /** Take one of `kind` in slot `s`; over `max`, give it back unless `force` (shadow). Returns whether it was within the limit. */
  take(s: number, kind: number, max: number, force: boolean): boolean {
    const i = s * KINDS + kind;
    const before = Atomics.add(this.total, i, 1);
    if (before >= max && !force) {
      Atomics.sub(this.total, i, 1);
      return false;
    }
    if (this.row >= 0) Atomics.add(this.rows, this.row * LIMIT_SLOTS * KINDS + i, 1);
    return before < max;
  }

  give(s: number, kind: number): void {
    const i = s * KINDS + kind;
    Atomics.sub(this.total, i, 1);
    if (this.row >= 0) Atomics.sub(this.rows, this.row * LIMIT_SLOTS * KINDS + i, 1);
  }
}

/**
 * Main thread, once a worker is gone: what its row says it held comes off the totals, and the row
 * is cleared for the next worker that gets it.
 */
export function releaseShares(memory: SharedMemory, row: number): void {
  if (row < 0 || row >= GAUGE_ROWS) return;
  const total = memory.region(TOTAL);
  const rows = memory.region(ROWS);
  const base = row * LIMIT_SLOTS * KINDS;
  for (let i = 0; i < LIMIT_SLOTS * KINDS; i++) {
    const held = Atomics.exchange(rows, base + i, 0);
    if (held !== 0) Atomics.sub(total, i, held);
  }
}

/** The series of the limits' counters for one cluster. */
export interface LimitSlots {
  overflow: number[];
  shadow: number[];
}

export function limitSlots(stats: Stats, cluster: string): LimitSlots {
  return {
    overflow: LIMIT_NAMES.map((limit) => stats.slot('sluice_circuit_breaker_overflow_total', { cluster, limit })),
    shadow: LIMIT_NAMES.map((limit) => stats.slot('sluice_circuit_breaker_shadow_overflow_total', { cluster, limit })),
  };
}

const shadowLog = new LogEvery('circuit breaker (shadow): a request over a cluster limit was let through');
const overflowLog = new LogEvery('circuit breaker: requests refused over a cluster limit');

/** One cluster's limits, for one config on one thread. */
export class ClusterLimits {
  private readonly max: number[];
  private readonly shadowMode: boolean;
  /** -1: the table was full when this cluster first came; then nothing is limited. */
  private readonly slot: number;

  constructor(private readonly table: LimitsTable, readonly cluster: string, config: LimitsConfig,
    private readonly stats: Stats, private readonly counters: LimitSlots) {
    this.max = [config.maxConnections, config.maxPendingRequests, config.maxRequests, config.maxRetries];
    this.shadowMode = config.mode === 'shadow';
    // kept for the config's life: a lock another thread held just then must not leave the cluster unlimited
    this.slot = table.slots.slotWaiting(cluster);
  }

  /**
   * One more of `kind` (CONNECTIONS, ...): false when the limit refuses it (never in shadow mode).
   * Every true needs a release(). `count` false: a refusal is not counted yet (the caller may wait
   * rather than refuse; it calls overflowed() when it does refuse).
   */
  acquire(kind: number, count = true): boolean {
    if (this.slot < 0) return true;
    if (this.table.take(this.slot, kind, this.max[kind], this.shadowMode)) return true;
    if (this.shadowMode) {
      this.stats.inc(this.counters.shadow[kind]);
      shadowLog.note({ cluster: this.cluster, limit: LIMIT_NAMES[kind], max: this.max[kind] });
      return true;
    }
    if (count) this.overflowed(kind);
    return false;
  }

  /** A request refused over the limit of `kind`: counted, and logged at most every 10 s. */
  overflowed(kind: number): void {
    this.stats.inc(this.counters.overflow[kind]);
    overflowLog.note({ cluster: this.cluster, limit: LIMIT_NAMES[kind], max: this.max[kind] });
  }

  release(kind: number): void {
    if (this.slot >= 0) this.table.give(this.slot, kind);
  }
}
