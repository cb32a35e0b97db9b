/**
 * The control loop of adaptive limiting. It runs in one place (the main thread), every
 * `intervalMs`, and writes each interface's admitted concurrency into shared memory, where every
 * worker's filter reads it.
 *
 *   CPU usage u (cpu-usage.ts) ─▶ U ← U + α(u − U)                          smoothed
 *   per interface, from the shared counters: calls completed n_i, call time b_i (Σ latency)
 *     cost_i  ← EWMA( u·cores·Δt · (b_i / Σb) / n_i )                       CPU per call (when u ≥ 0.1, n_i ≥ 3)
 *     lat_i   = b_i / n_i;  base_i: follows lat_i down fast, up slowly, never while overloaded
 *   R = Σ n_i·lat_i / Σ n_i·(base_i + bufferMs)                             latency gradient⁻¹
 *
 *   overloaded   U > target  or  R > latencyTolerance
 *       g = max(1 − maxStepDown, min(target / U, latencyTolerance / R))
 *       the first interface in shed order whose limit is above its floor:
 *         limit ← max(floor, g · (limit, or its concurrency now when it had none))
 *   relaxed      U < target − hysteresis  and  R < 0.8 · latencyTolerance
 *       the last limited interface in shed order (the most important one held back):
 *         limit ← limit · min(1 + maxStepUp, target / U) + 0.1
 *         no limit again once limit > 2 · peak concurrency + 1 (it no longer binds)
 *   otherwise    hold
 *
 *   shed order: shedFirst, then normal, then critical; within a class, higher cost first.
 *   floor: 0 (shed entirely), critical: criticalMinLimit.
 *
 * One interface moves per tick, by a bounded step, and nothing moves inside the band between
 * target − hysteresis and target: that is what keeps it from oscillating. See
 * docs/configuration.md (`adaptiveLimit`) for why a gradient on CPU and latency and not a PID.
 */
import type { CpuSource } from './cpu-usage';
import {
  CLASS_CRITICAL, CLASS_NAMES, C_ARRIVED, C_COMPLETED, C_LATENCY_US, C_REFUSED, C_SHADOW_REFUSED, COUNTS, type InterfaceTable,
} from './interface-table';

export interface ControllerOptions {
  /** CPU usage to stay under, a share of the cores (0.8). */
  readonly targetUtilization: number;
  readonly hysteresis: number;
  readonly intervalMs: number;
  /** Weight of a new CPU sample in the smoothed usage. */
  readonly smoothing: number;
  readonly maxStepDown: number;
  readonly maxStepUp: number;
  /** Latency over baseline (+ buffer) that counts as overload; 0: CPU only. */
  readonly latencyTolerance: number;
  readonly latencyBufferMs: number;
  readonly criticalMinLimit: number;
}

export type LoopState = 'overloaded' | 'holding' | 'relaxed' | 'idle';

interface RowState {
  readonly row: number;
  name: string;
  cls: number;
  prev: number[];
  /** CPU ms per call. */
  cost: number;
  lat: number;
  base: number;
  conc: number;
  peak: number;
  limit: number;
  /** Per second, over the last tick. */
  arrivedRate: number;
  refusedRate: number;
  shadowRefusedRate: number;
  completedRate: number;
  /** Since this thread first saw the row. */
  totals: { arrived: number; refused: number; shadowRefused: number; completed: number };
  lastActive: number;
}

export interface InterfaceView {
  name: string;
  class: string;
  limit: number | null;
  inflight: number;
  costMs: number;
  latencyMs: number;
  baselineMs: number;
  concurrency: number;
  arrivedPerSecond: number;
  admittedPerSecond: number;
  refusedPerSecond: number;
  shadowRefusedPerSecond: number;
  refused: number;
  shadowRefused: number;
  completed: number;
}

export interface ControllerView {
  state: LoopState;
  cpu: { source: string; cores: number; usage: number | null; smoothed: number | null; target: number };
  latencyRatio: number | null;
  interfaces: InterfaceView[];
}

/** Interfaces with no call for this long do not count as demand. */
const ACTIVE_MS = 2000;
const ADDITIVE_STEP = 0.1;
const MIN_USAGE_FOR_COST = 0.1;
const MIN_CALLS_FOR_COST = 3;

const ewma = (old: number, v: number, a: number) => (Number.isNaN(old) ? v : old + a * (v - old));
const wrap = (now: number, before: number) => (now - before) >>> 0;

export class AdaptiveController {
  private readonly rows = new Map<number, RowState>();
  private usage: number | null = null;
  private smoothed: number | null = null;
  private ratio: number | null = null;
  private last = NaN;
  state: LoopState = 'idle';

  constructor(private readonly table: InterfaceTable, private cpu: CpuSource, private opts: ControllerOptions) {}

  /** A reloaded config: new options (and CPU source); learned costs and limits are kept. */
  configure(opts: ControllerOptions, cpu?: CpuSource): void {
    this.opts = opts;
    if (cpu) { this.cpu = cpu; this.usage = this.smoothed = null; }
  }

  tick(now: number): void {
    const o = this.opts;
    const dt = Number.isNaN(this.last) ? o.intervalMs : now - this.last;
    this.last = now;
    if (dt <= 0) return;
    const u = this.cpu.sample(now);
    if (u !== null) {
      this.usage = u;
      this.smoothed = this.smoothed === null ? u : ewma(this.smoothed, u, o.smoothing);
      this.table.publishUsage(u, this.smoothed);
    }
    const wasOverloaded = this.state === 'overloaded';
    // per interface: what happened since the last tick
    const ticks: Array<{ r: RowState; n: number; busy: number }> = [];
    let totalBusy = 0;
    for (const row of this.table.rows()) {
      const r = this.rowState(row);
      const base = row * COUNTS;
      const c = this.table.counts;
      const now5 = [Atomics.load(c, base), Atomics.load(c, base + 1), Atomics.load(c, base + 2), Atomics.load(c, base + 3), Atomics.load(c, base + 4)];
      const d = now5.map((v, i) => wrap(v, r.prev[i]));
      r.prev = now5;
      r.cls = this.table.classOf(row);
      const perSec = 1000 / dt;
      r.arrivedRate = d[C_ARRIVED] * perSec;
      r.refusedRate = d[C_REFUSED] * perSec;
      r.shadowRefusedRate = d[C_SHADOW_REFUSED] * perSec;
      r.completedRate = d[C_COMPLETED] * perSec;
      r.totals.arrived += d[C_ARRIVED];
      r.totals.refused += d[C_REFUSED];
      r.totals.shadowRefused += d[C_SHADOW_REFUSED];
      r.totals.completed += d[C_COMPLETED];
      if (d[C_ARRIVED] > 0) r.lastActive = now;
      const busy = d[C_LATENCY_US] / 1000;
      const inflight = Atomics.load(this.table.inflight, row);
      r.conc = ewma(r.conc, busy / dt, 0.5);
      r.peak = Math.max(r.peak * 0.95, r.conc, inflight);
      if (d[C_COMPLETED] > 0) {
        ticks.push({ r, n: d[C_COMPLETED], busy });
        totalBusy += busy;
      }
    }
    // costs and baselines
    const cpuMs = u !== null ? u * this.cpu.cores * dt : null;
    let num = 0;
    let den = 0;
    for (const { r, n, busy } of ticks) {
      const lat = busy / n;
      r.lat = ewma(r.lat, lat, 0.3);
      if (Number.isNaN(r.base) || lat < r.base) r.base = ewma(r.base, lat, 0.5);
      else if (!wasOverloaded) r.base = ewma(r.base, lat, 0.02);
      // an interval in which the application hardly ran (starved by its neighbours) or this
      // interface hardly completed says nothing of what a call costs
      if (cpuMs !== null && totalBusy > 0 && u! >= MIN_USAGE_FOR_COST && n >= MIN_CALLS_FOR_COST) {
        r.cost = ewma(r.cost, (cpuMs * busy) / totalBusy / n, wasOverloaded ? 0.05 : 0.2);
      }
      num += n * lat;
      den += n * (r.base + o.latencyBufferMs);
    }
    this.ratio = den > 0 ? num / den : null;
    if (this.smoothed === null) { this.state = 'idle'; return; }
    const U = this.smoothed;
    const R = this.ratio ?? 0;
    const latencyHigh = o.latencyTolerance > 0 && R > o.latencyTolerance;
    const latencyLow = o.latencyTolerance <= 0 || R < 0.8 * o.latencyTolerance;
    if (U > o.targetUtilization || latencyHigh) {
      this.state = 'overloaded';
      let g = U > 0 ? o.targetUtilization / U : 1;
      if (latencyHigh) g = Math.min(g, o.latencyTolerance / R);
      this.shrink(now, Math.min(1, Math.max(1 - o.maxStepDown, g)));
    } else if (U < o.targetUtilization - o.hysteresis && latencyLow) {
      this.state = 'relaxed';
      this.grow(Math.min(1 + o.maxStepUp, U > 0 ? o.targetUtilization / U : Infinity));
    } else {
      this.state = 'holding';
    }
  }

  /** Shed order: shedFirst, normal, critical; the costlier first within a class. */
  private ordered(): RowState[] {
    return [...this.rows.values()].sort((a, b) => a.cls - b.cls || (b.cost || 0) - (a.cost || 0) || b.lat - a.lat);
  }

  private floor(r: RowState): number {
    return r.cls === CLASS_CRITICAL ? this.opts.criticalMinLimit : 0;
  }

  private shrink(now: number, g: number): void {
    for (const r of this.ordered()) {
      if (now - r.lastActive > ACTIVE_MS) continue;
      const floor = this.floor(r);
      if (!Number.isNaN(r.limit) && r.limit <= floor) continue;
      const from = Number.isNaN(r.limit) ? Math.max(r.conc, Atomics.load(this.table.inflight, r.row), 1) : r.limit;
      let next = Math.max(floor, from * g);
      if (next < 0.02) next = 0;
      this.setLimit(r, next);
      return;
    }
  }

  private grow(g: number): void {
    const order = this.ordered();
    for (let i = order.length - 1; i >= 0; i--) {
      const r = order[i];
      if (Number.isNaN(r.limit)) continue;
      const next = r.limit * g + ADDITIVE_STEP;
      this.setLimit(r, next > 2 * r.peak + 1 ? NaN : next);
      return;
    }
  }

  private setLimit(r: RowState, limit: number): void {
    r.limit = limit;
    this.table.setLimit(r.row, limit);
  }

  /** Every limit lifted (adaptive limiting switched off). */
  liftAll(): void {
    for (const r of this.rows.values()) this.setLimit(r, NaN);
    this.state = 'idle';
  }

  private rowState(row: number): RowState {
    let r = this.rows.get(row);
    if (!r) {
      const c = this.table.counts;
      r = {
        row, name: this.table.nameOf(row) ?? `row${row}`, cls: this.table.classOf(row),
        prev: Array.from({ length: COUNTS }, (_, i) => Atomics.load(c, row * COUNTS + i)),
        cost: NaN, lat: NaN, base: NaN, conc: NaN, peak: 0, limit: this.table.limit(row),
        arrivedRate: 0, refusedRate: 0, shadowRefusedRate: 0, completedRate: 0,
        totals: { arrived: 0, refused: 0, shadowRefused: 0, completed: 0 }, lastActive: -Infinity,
      };
      this.rows.set(row, r);
    }
    return r;
  }

  view(): ControllerView {
    const num = (x: number, d = 3) => (Number.isFinite(x) ? Number(x.toFixed(d)) : 0);
    return {
      state: this.state,
      cpu: {
        source: this.cpu.describe, cores: this.cpu.cores, target: this.opts.targetUtilization,
        usage: this.usage === null ? null : num(this.usage), smoothed: this.smoothed === null ? null : num(this.smoothed),
      },
      latencyRatio: this.ratio === null ? null : num(this.ratio),
      interfaces: this.ordered().map((r) => ({
        name: r.name,
        class: CLASS_NAMES[r.cls] ?? 'normal',
        limit: Number.isNaN(r.limit) ? null : num(r.limit),
        inflight: Atomics.load(this.table.inflight, r.row),
        costMs: num(r.cost),
        latencyMs: num(r.lat),
        baselineMs: num(r.base),
        concurrency: num(r.conc),
        arrivedPerSecond: num(r.arrivedRate, 1),
        admittedPerSecond: num(r.arrivedRate - r.refusedRate, 1),
        refusedPerSecond: num(r.refusedRate, 1),
        shadowRefusedPerSecond: num(r.shadowRefusedRate, 1),
        refused: r.totals.refused,
        shadowRefused: r.totals.shadowRefused,
        completed: r.totals.completed,
      })),
    };
  }
}
