/**
 * What adaptive limiting shares between the main thread (which measures and decides) and the
 * workers (which admit or refuse): one row per interface, found by the hash of its name.
 *
 *   adaptive.keys     Int32 × MAX   FNV-1a hash of the interface's name, 0 free; claimed by CAS
 *   adaptive.meta     Int32 × MAX×2 [name length (0 until written), class]
 *   adaptive.names    Uint8 × MAX×NAME_BYTES   the name, UTF-8, cut at NAME_BYTES
 *   adaptive.inflight Int32 × MAX   calls admitted (or let through in shadow mode) and not yet complete
 *   adaptive.inflight_shares  Int32 × GAUGE_ROWS×MAX   each worker's part of those (by its gauge
 *                                   row), taken off the total when the worker dies with calls in flight
 *   adaptive.limits   Int32 × MAX   admitted concurrency × 1000, written by the controller; -1 none
 *   adaptive.counts   Int32 × MAX×C arrived, refused, shadow refused, completed, latency µs:
 *                                   wrapping counters, read as differences modulo 2^32
 *   adaptive.system   Int32 × 8     [0] rows claimed, [1] CPU usage ‰ (last sample), [2] ‰ smoothed
 *
 * Row 0 is `other`: calls of interfaces beyond the bound (adaptiveLimit.maxInterfaces). Workers
 * write the counters with Atomics.add; the limits are a single Int32 each, so a worker never reads
 * half of one.
 */
import { declareRegion, type SharedMemory } from '../../shared/shared-memory';
import { GAUGE_ROWS } from '../../stats/stats';

export const MAX_INTERFACES = 256;
export const NAME_BYTES = 96;
export const OTHER_ROW = 0;
export const OTHER_NAME = 'other';

export const C_ARRIVED = 0;
export const C_REFUSED = 1;
export const C_SHADOW_REFUSED = 2;
export const C_COMPLETED = 3;
export const C_LATENCY_US = 4;
export const COUNTS = 5;

/** How an interface is shed: shedFirst before normal, normal before critical (critical keeps a floor). */
export const CLASS_SHED_FIRST = 0;
export const CLASS_NORMAL = 1;
export const CLASS_CRITICAL = 2;
export const CLASS_NAMES = ['shed_first', 'normal', 'critical'] as const;

export const NO_LIMIT = -1;

const KEYS = declareRegion({ name: 'adaptive.keys', kind: 'int32', count: MAX_INTERFACES });
const META = declareRegion({ name: 'adaptive.meta', kind: 'int32', count: MAX_INTERFACES * 2 });
const NAMES = declareRegion({ name: 'adaptive.names', kind: 'uint8', count: MAX_INTERFACES * NAME_BYTES });
const INFLIGHT = declareRegion({ name: 'adaptive.inflight', kind: 'int32', count: MAX_INTERFACES });
const SHARES = declareRegion({ name: 'adaptive.inflight_shares', kind: 'int32', count: GAUGE_ROWS * MAX_INTERFACES });
const LIMITS = declareRegion({ name: 'adaptive.limits', kind: 'int32', count: MAX_INTERFACES });
const COUNTERS = declareRegion({ name: 'adaptive.counts', kind: 'int32', count: MAX_INTERFACES * COUNTS });
const SYSTEM = declareRegion({ name: 'adaptive.system', kind: 'int32', count: 8 });

const S_CLAIMED = 0;
const S_USAGE = 1;
const S_USAGE_SMOOTHED = 2;

/** FNV-1a over UTF-16 code units; never 0 (0 marks a free row). */
export function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h === 0 ? 1 : h;
}

export class InterfaceTable {
  readonly keys: Int32Array;
  readonly meta: Int32Array;
  readonly names: Uint8Array;
  readonly inflight: Int32Array;
  readonly shares: Int32Array;
  readonly limits: Int32Array;
  readonly counts: Int32Array;
  readonly system: Int32Array;

  constructor(memory: SharedMemory) {
    this.keys = memory.region(KEYS);
    this.meta = memory.region(META);
    this.names = memory.region(NAMES);
    this.inflight = memory.region(INFLIGHT);
    this.shares = memory.region(SHARES);
    this.limits = memory.region(LIMITS);
    this.counts = memory.region(COUNTERS);
    this.system = memory.region(SYSTEM);
    // row 0 (other) is claimed by whoever gets here first; its name is fixed
    if (Atomics.compareExchange(this.keys, OTHER_ROW, 0, hashName(OTHER_NAME)) === 0) {
      this.writeName(OTHER_ROW, OTHER_NAME, CLASS_NORMAL);
      for (let i = 0; i < MAX_INTERFACES; i++) Atomics.store(this.limits, i, NO_LIMIT);
    }
  }

  /**
   * The row of an interface: found, or claimed while fewer than `bound` are (row 0 is `other`).
   * Two names with the same 32-bit hash share a row.
   */
  rowOf(name: string, cls: number, bound: number): number {
    const h = hashName(name);
    const start = 1 + ((h >>> 0) % (MAX_INTERFACES - 1));
    for (let n = 0; n < MAX_INTERFACES - 1; n++) {
      const i = 1 + ((start - 1 + n) % (MAX_INTERFACES - 1));
      const k = Atomics.load(this.keys, i);
      if (k === h) return i;
      if (k !== 0) continue;
      // a free row ends the probe: the name is not in the table
      if (Atomics.add(this.system, S_CLAIMED, 1) >= Math.min(bound, MAX_INTERFACES - 1)) {
        Atomics.sub(this.system, S_CLAIMED, 1);
        return OTHER_ROW;
      }
      const was = Atomics.compareExchange(this.keys, i, 0, h);
      if (was === 0) {
        this.writeName(i, name, cls);
        return i;
      }
      Atomics.sub(this.system, S_CLAIMED, 1);
      if (was === h) return i; // another thread claimed it for the same name
    }
    return OTHER_ROW;
  }

  private writeName(row: number, name: string, cls: number): void {
    const bytes = Buffer.from(name, 'utf8').subarray(0, NAME_BYTES);
    this.names.set(bytes, row * NAME_BYTES);
    Atomics.store(this.meta, row * 2 + 1, cls);
    Atomics.store(this.meta, row * 2, bytes.length);
  }

  /** A worker with this gauge row is gone: its calls in flight will never complete. */
  releaseShares(gaugeRow: number): void {
    if (gaugeRow < 0 || gaugeRow >= GAUGE_ROWS) return;
    for (let i = 0; i < MAX_INTERFACES; i++) {
      const n = Atomics.exchange(this.shares, gaugeRow * MAX_INTERFACES + i, 0);
      if (n !== 0) Atomics.sub(this.inflight, i, n);
    }
  }

  setClass(row: number, cls: number): void {
    if (row !== OTHER_ROW && Atomics.load(this.meta, row * 2 + 1) !== cls) Atomics.store(this.meta, row * 2 + 1, cls);
  }

  classOf(row: number): number {
    return Atomics.load(this.meta, row * 2 + 1);
  }

  /** The name of a row, or null while it is free or being written. */
  nameOf(row: number): string | null {
    const len = Atomics.load(this.meta, row * 2);
    if (len === 0) return null;
    return Buffer.from(this.names.subarray(row * NAME_BYTES, row * NAME_BYTES + len)).toString('utf8');
  }

  /** Rows in use (their names written). */
  rows(): number[] {
    const out: number[] = [];
    for (let i = 0; i < MAX_INTERFACES; i++) if (Atomics.load(this.meta, i * 2) > 0) out.push(i);
    return out;
  }

  count(row: number, c: number): number {
    return Atomics.load(this.counts, row * COUNTS + c);
  }

  /** Admitted concurrency of a row (NaN: none). */
  limit(row: number): number {
    const v = Atomics.load(this.limits, row);
    return v < 0 ? NaN : v / 1000;
  }

  setLimit(row: number, limit: number): void {
    Atomics.store(this.limits, row, Number.isFinite(limit) ? Math.max(0, Math.min(2 ** 31 - 1, Math.round(limit * 1000))) : NO_LIMIT);
  }

  publishUsage(usage: number, smoothed: number): void {
    Atomics.store(this.system, S_USAGE, Math.round(usage * 1000));
    Atomics.store(this.system, S_USAGE_SMOOTHED, Math.round(smoothed * 1000));
  }

  /** The last CPU usage sample, as a share of the cores (what every worker reads). */
  get usage(): number {
    return Atomics.load(this.system, S_USAGE) / 1000;
  }

  get smoothedUsage(): number {
    return Atomics.load(this.system, S_USAGE_SMOOTHED) / 1000;
  }
}
