/**
 * Circuit breakers per endpoint and per interface (clusters[].circuitBreaker.endpoint / .interface),
 * shared by every worker.
 *
 *              failures or slow calls ≥ ratio            openMs passed: the next call
 *              over the window, ≥ minimumRequests        moves it (and is a trial)
 *   CLOSED ───────────────────────────────────▶ OPEN ─────────────────────────▶ HALF_OPEN
 *     ▲                                           ▲   a trial fails (or is slow)    │
 *     │                                           └─────────────────────────────────┤
 *     └──────────── halfOpenRequests trials succeeded ──────────────────────────────┘
 *
 * Every change of state goes through MOVING, taken by compare-and-swap: the one thread that wins
 * resets what the new state starts from (the trial counts, the window, the open deadline) before
 * the others can see the new state; they treat MOVING as open meanwhile.
 *
 * Memory (one slot per breaker, found by its key in protection.breakers.keys, keyed-slots.ts):
 *
 *   protection.breakers.state   Int32 × SLOTS × WORDS
 *     0 state │ 1 trials let through │ 2 trials that succeeded │ 3 opened │ 4 half-opened │ 5 closed
 *     6 refused │ 7 refused in shadow │ 8.. the window: BUCKETS_MAX × [epoch, calls, failures, slow]
 *   protection.breakers.until   Float64 × SLOTS   when an open breaker may half-open (Date.now() ms)
 *
 * The window is a ring of time buckets: the bucket of `now` is found by its epoch (the bucket's
 * number since the epoch, mod 2^30, + 1); a bucket whose epoch is stale is reset by whoever gets it
 * first with a compare-and-swap. Two threads racing at a bucket's turn may lose a call or two from
 * the count: a ratio over a window does not need more.
 *
 * Why shared rather than per worker: with N workers, per-worker breakers would each need the
 * minimum volume, so a failing endpoint would take N times as many failed calls to be noticed and
 * would be tried N times as often in half-open. Shared, the sidecar acts as one client.
 *
 * The key names the cluster, the scope, a fingerprint of the rule and the target (an endpoint's
 * `host:port`, an interface's `service method`): a reload that keeps a rule keeps its breakers'
 * state; a changed rule starts afresh.
 */
import { LogEvery, log } from '../log';
import { declareRegion, type SharedMemory } from '../shared/shared-memory';
import type { Stats } from '../stats/stats';
import type { Mode } from './cluster-limits';
import { KeyedSlots, KeyedSlotsLayout, keyHash } from './keyed-slots';

export const BREAKER_SLOTS = 4096;
/** How often the main thread frees breakers nothing consults (BreakerTable.sweep). */
export const BREAKER_SWEEP_MS = 60_000;
/** A breaker no call has consulted for this many sweeps (10 minutes) may be freed. */
export const BREAKER_IDLE_SWEEPS = 10;
export const BUCKETS_MAX = 20;
const WORDS = 8 + BUCKETS_MAX * 4;

export const CLOSED = 0;
export const OPEN = 1;
export const HALF_OPEN = 2;
const MOVING = 3;
export const STATE_NAMES = ['closed', 'open', 'half_open', 'open'] as const;

const W_STATE = 0;
const W_TRIALS = 1;
const W_TRIALS_OK = 2;
const W_OPENED = 3;
const W_HALF_OPENED = 4;
const W_CLOSED = 5;
const W_REFUSED = 6;
const W_SHADOW = 7;
const W_WINDOW = 8;
const EPOCH_MOD = 1 << 30;

const LAYOUT = new KeyedSlotsLayout({ name: 'protection.breakers', slots: BREAKER_SLOTS });
const STATE = declareRegion({ name: 'protection.breakers.state', kind: 'int32', count: BREAKER_SLOTS * WORDS });
const UNTIL = declareRegion({ name: 'protection.breakers.until', kind: 'float64', count: BREAKER_SLOTS });

export type Scope = 'endpoint' | 'interface';

export interface BreakerConfig {
  /** Failed calls over all calls in the window at which it opens (0-1]. */
  errorRatio: number;
  /** A call that took this long or longer is slow; absent: durations are not judged. */
  slowCallMs?: number;
  /** Slow calls over all calls in the window at which it opens (0-1]. */
  slowCallRatio: number;
  /** Calls in the window below which it never opens. */
  minimumRequests: number;
  windowMs: number;
  buckets: number;
  openMs: number;
  halfOpenRequests: number;
  mode: Mode;
}

/** What allow() decided for a call, to hand back to record(). */
export const REFUSE = -1;
/** Let through and not judged (shadow mode: enforce would have refused it). */
export const UNTRACKED = 0;
export const TRACKED = 1;
export const TRIAL = 2;

export type Result = 'success' | 'failure' | 'neutral';

export interface BreakerView {
  key: string;
  cluster: string;
  scope: string;
  rule: string;
  target: string;
  state: string;
  openUntil?: string;
  window: { calls: number; failures: number; slow: number };
  opened: number;
  halfOpened: number;
  closed: number;
  refused: number;
  shadowRefused: number;
}

/** One thread's view of the breakers' shared memory. */
export class BreakerTable {
  readonly slots: KeyedSlots;
  readonly words: Int32Array;
  readonly until: Float64Array;

  constructor(memory: SharedMemory, readonly now: () => number = Date.now) {
    this.slots = new KeyedSlots(memory, LAYOUT);
    this.words = memory.region(STATE);
    this.until = memory.region(UNTIL);
  }

  /**
   * Main thread, every BREAKER_SWEEP_MS: frees the slots of breakers no call has consulted for
   * BREAKER_IDLE_SWEEPS sweeps and that are not holding a target open (an endpoint that left, a
   * rule a reload replaced, an interface no caller names any more), so that the table does not
   * fill as endpoints come and go. A freed breaker that is needed again starts closed, as a new
   * one does. Returns how many were freed.
   */
  sweep(idleSweeps = BREAKER_IDLE_SWEEPS): number {
    const w = this.words;
    const now = this.now();
    return this.slots.sweep({
      idle: (s) => {
        const st = Atomics.load(w, s * WORDS + W_STATE);
        return st !== MOVING && !(st === OPEN && this.until[s] > now);
      },
      reset: (s) => {
        w.fill(0, s * WORDS, (s + 1) * WORDS);
        this.until[s] = 0;
      },
    }, idleSweeps);
  }

  /** Every breaker some thread created, with its state (the admin view). */
  list(): BreakerView[] {
    const out: BreakerView[] = [];
    const w = this.words;
    const now = this.now();
    for (const [s, key] of this.slots.entries()) {
      const [cluster, scope, rule, ...rest] = key.split('\t');
      const b = s * WORDS;
      const st = Atomics.load(w, b + W_STATE);
      const win = { calls: 0, failures: 0, slow: 0 };
      // the window as its last writer left it, whatever the rule's bucket length
      for (let i = 0; i < BUCKETS_MAX; i++) {
        const at = b + W_WINDOW + i * 4;
        if (Atomics.load(w, at) === 0) continue;
        win.calls += Atomics.load(w, at + 1);
        win.failures += Atomics.load(w, at + 2);
        win.slow += Atomics.load(w, at + 3);
      }
      const v: BreakerView = {
        key, cluster, scope, rule, target: rest.join('\t'), state: STATE_NAMES[st] ?? 'open', window: win,
        opened: Atomics.load(w, b + W_OPENED), halfOpened: Atomics.load(w, b + W_HALF_OPENED), closed: Atomics.load(w, b + W_CLOSED),
        refused: Atomics.load(w, b + W_REFUSED), shadowRefused: Atomics.load(w, b + W_SHADOW),
      };
      if (st === OPEN && this.until[s] > now) v.openUntil = new Date(this.until[s]).toISOString();
      out.push(v);
    }
    return out;
  }
}

/** The fingerprint of a rule in its breakers' keys: the same rule, the same breakers after a reload. */
export function ruleFingerprint(c: BreakerConfig): string {
  const ordered = [c.errorRatio, c.slowCallMs ?? null, c.slowCallRatio, c.minimumRequests, c.windowMs, c.buckets, c.openMs, c.halfOpenRequests, c.mode];
  return (keyHash(JSON.stringify(ordered)) >>> 0).toString(16);
}

export function breakerKey(cluster: string, scope: Scope, fingerprint: string, target: string): string {
  return `${cluster}\t${scope}\t${fingerprint}\t${target}`;
}

/** The series a cluster's breakers of one scope count in. */
export interface BreakerSlots { opened: number; halfOpened: number; closed: number; refused: number; shadowRefused: number; untracked: number }

export function breakerSlots(stats: Stats, cluster: string, scope: Scope): BreakerSlots {
  const l = { cluster, scope };
  return {
    opened: stats.slot('sluice_circuit_breaker_opened_total', l),
    halfOpened: stats.slot('sluice_circuit_breaker_half_opened_total', l),
    closed: stats.slot('sluice_circuit_breaker_closed_total', l),
    refused: stats.slot('sluice_circuit_breaker_refused_total', l),
    shadowRefused: stats.slot('sluice_circuit_breaker_shadow_refused_total', l),
    untracked: stats.slot('sluice_circuit_breaker_untracked_total', l),
  };
}

const shadowLog = new LogEvery('circuit breaker (shadow): a call an open breaker would refuse was let through');

/** The breakers of one cluster and scope, for one config on one thread. */
export class ClusterBreakers {
  private readonly fingerprint: string;
  private readonly bucketMs: number;
  private readonly slowMs: number;

  constructor(private readonly table: BreakerTable, readonly cluster: string, readonly scope: Scope, readonly config: BreakerConfig,
    private readonly stats: Stats, private readonly counters: BreakerSlots) {
    this.fingerprint = ruleFingerprint(config);
    this.bucketMs = Math.max(1, Math.floor(config.windowMs / config.buckets));
    this.shadow = config.mode === 'shadow';
    this.slowMs = config.slowCallMs ?? Infinity;
  }

  /** The slot of the breaker for `target` (created on first use); -1 when the table is full (then the call goes unjudged). */
  slotOf(target: string): number {
    const s = this.table.slots.slot(breakerKey(this.cluster, this.scope, this.fingerprint, target));
    if (s < 0) this.stats.inc(this.counters.untracked);
    return s;
  }

  readonly shadow: boolean;

  /**
   * Whether a call to the breaker in slot `s` may go ahead: a ticket for record(), or REFUSE (open,
   * or half-open with every trial place taken). Counts nothing: the caller may try another
   * endpoint, and says refused() when it refuses the call.
   */
  admit(s: number): number {
    if (s < 0) return UNTRACKED;
    const w = this.table.words;
    const b = s * WORDS;
    let st = Atomics.load(w, b + W_STATE);
    if (st === CLOSED) return TRACKED;
    if (st === OPEN && this.table.now() >= this.table.until[s]) {
      if (Atomics.compareExchange(w, b + W_STATE, OPEN, MOVING) === OPEN) {
        Atomics.store(w, b + W_TRIALS, 0);
        Atomics.store(w, b + W_TRIALS_OK, 0);
        Atomics.store(w, b + W_STATE, HALF_OPEN);
        Atomics.add(w, b + W_HALF_OPENED, 1);
        this.stats.inc(this.counters.halfOpened);
        log.info({ cluster: this.cluster, scope: this.scope, target: this.targetOf(s), shadow: this.shadow || undefined }, 'circuit breaker half-open: trial calls go through');
      }
      st = Atomics.load(w, b + W_STATE);
    }
    if (st === HALF_OPEN) {
      if (Atomics.add(w, b + W_TRIALS, 1) < this.config.halfOpenRequests) return TRIAL;
      Atomics.sub(w, b + W_TRIALS, 1);
    }
    return REFUSE;
  }

  /** A call the breaker in slot `s` refused: counted; REFUSE, or in shadow mode UNTRACKED (it goes ahead, unjudged). */
  refused(s: number, target: string): number {
    if (s < 0) return UNTRACKED;
    const w = this.table.words;
    const b = s * WORDS;
    if (this.shadow) {
      Atomics.add(w, b + W_SHADOW, 1);
      this.stats.inc(this.counters.shadowRefused);
      shadowLog.note({ cluster: this.cluster, scope: this.scope, target });
      return UNTRACKED;
    }
    Atomics.add(w, b + W_REFUSED, 1);
    this.stats.inc(this.counters.refused);
    return REFUSE;
  }

  /** The target part of slot `s`'s key, for log lines. */
  private targetOf(s: number): string {
    return this.table.slots.nameOf(s).split('\t').slice(3).join('\t');
  }

  /** The state of slot `s` now (CLOSED when there is no slot). */
  state(s: number): number {
    if (s < 0) return CLOSED;
    const st = Atomics.load(this.table.words, s * WORDS + W_STATE);
    return st === MOVING ? OPEN : st;
  }

  /** How a call that allow() let through ended. */
  record(s: number, ticket: number, result: Result, durationMs: number, target: string): void {
    if (s < 0 || ticket <= UNTRACKED) return;
    const w = this.table.words;
    const b = s * WORDS;
    const bad = result === 'failure' || (result === 'success' && durationMs >= this.slowMs);
    if (ticket === TRIAL) {
      if (Atomics.load(w, b + W_STATE) !== HALF_OPEN) return; // a trial of a half-open period that is over
      if (result === 'neutral') { Atomics.sub(w, b + W_TRIALS, 1); return; } // not judged: its place goes to another call
      if (bad) { this.trip(s, HALF_OPEN, target, 'a trial call failed'); return; }
      if (Atomics.add(w, b + W_TRIALS_OK, 1) + 1 < this.config.halfOpenRequests) return;
      if (Atomics.compareExchange(w, b + W_STATE, HALF_OPEN, MOVING) !== HALF_OPEN) return;
      for (let i = 0; i < BUCKETS_MAX; i++) Atomics.store(w, b + W_WINDOW + i * 4, 0);
      Atomics.store(w, b + W_STATE, CLOSED);
      Atomics.add(w, b + W_CLOSED, 1);
      this.stats.inc(this.counters.closed);
      log.info({ cluster: this.cluster, scope: this.scope, target, shadow: this.shadow || undefined }, 'circuit breaker closed: the trial calls succeeded');
      return;
    }
    if (result === 'neutral' || Atomics.load(w, b + W_STATE) !== CLOSED) return;
    const now = this.table.now();
    const n = this.config.buckets;
    const cur = (Math.floor(now / this.bucketMs) % EPOCH_MOD) + 1;
    const at = b + W_WINDOW + (cur % n) * 4;
    const e = Atomics.load(w, at);
    if (e !== cur && Atomics.compareExchange(w, at, e, cur) === e) {
      Atomics.store(w, at + 1, 0);
      Atomics.store(w, at + 2, 0);
      Atomics.store(w, at + 3, 0);
    }
    Atomics.add(w, at + 1, 1);
    if (result === 'failure') Atomics.add(w, at + 2, 1);
    if (durationMs >= this.slowMs) Atomics.add(w, at + 3, 1);
    if (!bad) return;
    let calls = 0;
    let failures = 0;
    let slow = 0;
    for (let i = 0; i < n; i++) {
      const p = b + W_WINDOW + i * 4;
      const pe = Atomics.load(w, p);
      if (pe === 0 || ((cur - pe + EPOCH_MOD) % EPOCH_MOD) >= n) continue;
      calls += Atomics.load(w, p + 1);
      failures += Atomics.load(w, p + 2);
      slow += Atomics.load(w, p + 3);
    }
    if (calls < this.config.minimumRequests) return;
    if (failures >= this.config.errorRatio * calls) this.trip(s, CLOSED, target, 'failure ratio', { calls, failures });
    else if (slow >= this.config.slowCallRatio * calls) this.trip(s, CLOSED, target, 'slow call ratio', { calls, slow });
  }

  private trip(s: number, from: number, target: string, why: string, window?: Record<string, number>): void {
    const w = this.table.words;
    const b = s * WORDS;
    if (Atomics.compareExchange(w, b + W_STATE, from, MOVING) !== from) return;
    this.table.until[s] = this.table.now() + this.config.openMs;
    Atomics.store(w, b + W_TRIALS, 0);
    Atomics.store(w, b + W_TRIALS_OK, 0);
    Atomics.store(w, b + W_STATE, OPEN);
    Atomics.add(w, b + W_OPENED, 1);
    this.stats.inc(this.counters.opened);
    log.warn({ cluster: this.cluster, scope: this.scope, target, why, ...window, openMs: this.config.openMs, shadow: this.shadow || undefined },
      this.shadow ? 'circuit breaker opened (shadow: calls still go through)' : 'circuit breaker opened');
  }
}
