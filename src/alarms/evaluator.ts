/**
 * One alarm's state, driven by samples of its signal (pure: the clock is passed in).
 *
 *   every second: a sample of cumulative counts (or a gauge) ─▶ the window's value
 *
 *     request_rate    Δrequests / Δt                                     (requests per second)
 *     error_ratio     Δerrors / Δrequests, none under minRequests
 *     latency_p99_ms  the 99th percentile of the window's duration histogram (linear within a bucket), none under minRequests
 *     cpu_usage       mean of the window's CPU samples (share of the cores)
 *
 *   holds: value > threshold (request_rate with baselineFactor: value > factor × baseline, once
 *   the baseline has been learned for baselineMs; the baseline is an exponential average of the
 *   window's rate with time constant baselineMs, not updated while the alarm fires)
 *
 *            holds for forMs                         no longer holds (or no value)
 *   OK ───────────────────────────▶ FIRING ───────────────────────────────────────▶ OK
 *                                     │ action on, until: firing ended and action.forMs passed since it fired
 */
import type { AlarmConfig } from './config';

/** One sample: cumulative counters (a, b), histogram buckets, or a gauge (a). */
export interface Sample {
  readonly at: number;
  readonly a: number;
  readonly b: number;
  readonly buckets?: readonly number[];
}

export type AlarmEvent =
  | { type: 'fired'; value: number; threshold: number }
  | { type: 'resolved'; value: number | null; threshold: number }
  | { type: 'action_on' }
  | { type: 'action_off' };

/** A histogram's p-quantile from per-bucket counts (not cumulative; the last one is +Inf), bounds in seconds; in ms. */
export function quantileMs(counts: readonly number[], bounds: readonly number[], q: number): number | null {
  let total = 0;
  for (const c of counts) total += c;
  if (total <= 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] <= 0) continue;
    if (seen + counts[i] >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1] * 1000;
      const lo = i === 0 ? 0 : bounds[i - 1];
      return (lo + (bounds[i] - lo) * ((rank - seen) / counts[i])) * 1000;
    }
    seen += counts[i];
  }
  return bounds[bounds.length - 1] * 1000;
}

export class AlarmState {
  private samples: Sample[] = [];
  firing = false;
  /** When the condition began to hold (null: it does not). */
  holdingSince: number | null = null;
  /** When the alarm last fired, or resolved. */
  since: number | null = null;
  value: number | null = null;
  actionActive = false;
  /** The earliest the action may end (fired + action.forMs). */
  actionUntil = 0;
  baseline: number | null = null;
  private baselineFrom = 0;
  fired = 0;
  actions = 0;

  constructor(public config: AlarmConfig, readonly bounds: readonly number[] = []) {}

  /** The threshold now (request_rate with baselineFactor: factor × learned baseline; null while learning). */
  threshold(now: number): number | null {
    const c = this.config;
    if (c.baselineFactor === undefined) return c.above ?? null;
    if (this.baseline === null || now - this.baselineFrom < c.signal.baselineMs) return null;
    return c.baselineFactor * this.baseline;
  }

  /** A new sample: returns what changed. */
  step(s: Sample): AlarmEvent[] {
    const c = this.config;
    this.samples.push(s);
    // keep the newest sample at or before the window's start, and those after it
    const from = s.at - c.windowMs;
    let cut = 0;
    while (cut + 1 < this.samples.length && this.samples[cut + 1].at <= from) cut++;
    if (cut > 0) this.samples.splice(0, cut);
    const value = this.windowValue();
    this.value = value;
    const now = s.at;
    const threshold = this.threshold(now);
    // a rate over a learned baseline: at least one request a second, or noise would fire it
    const holds = value !== null && threshold !== null && value > threshold && (c.baselineFactor === undefined || value >= 1);
    // the baseline learns from normal traffic only: a surge must not become the new normal
    if (c.baselineFactor !== undefined && value !== null && !holds && !this.firing) {
      if (this.baseline === null) { this.baseline = value; this.baselineFrom = now; } else {
        const dt = now - (this.samples[this.samples.length - 2]?.at ?? now);
        this.baseline += (value - this.baseline) * (1 - Math.exp(-dt / c.signal.baselineMs));
      }
    }
    const out: AlarmEvent[] = [];
    if (holds) {
      this.holdingSince ??= now;
      if (!this.firing && now - this.holdingSince >= c.forMs) {
        this.firing = true;
        this.since = now;
        this.fired++;
        out.push({ type: 'fired', value: value!, threshold: threshold! });
        if (c.action) {
          this.actionUntil = now + c.action.forMs;
          if (!this.actionActive) { this.actionActive = true; this.actions++; out.push({ type: 'action_on' }); }
        }
      }
    } else {
      this.holdingSince = null;
      if (this.firing) {
        this.firing = false;
        this.since = now;
        out.push({ type: 'resolved', value, threshold: threshold ?? c.above ?? 0 });
      }
    }
    if (this.actionActive && !this.firing && now >= this.actionUntil) {
      this.actionActive = false;
      out.push({ type: 'action_off' });
    }
    return out;
  }

  /** Ends the action now (the alarm was removed by a reload); whether it was on. */
  stop(): boolean {
    const was = this.actionActive;
    this.actionActive = false;
    return was;
  }

  private windowValue(): number | null {
    const ss = this.samples;
    if (ss.length < 2) return null;
    const first = ss[0];
    const last = ss[ss.length - 1];
    const dt = last.at - first.at;
    if (dt <= 0) return null;
    const c = this.config;
    switch (c.signal.kind) {
      case 'request_rate':
        return Math.max(0, last.a - first.a) / (dt / 1000);
      case 'error_ratio': {
        const total = last.b - first.b;
        if (total < c.minRequests || total <= 0) return null;
        return Math.min(1, Math.max(0, last.a - first.a) / total);
      }
      case 'latency_p99_ms': {
        if (!last.buckets || !first.buckets) return null;
        const counts = last.buckets.map((v, i) => Math.max(0, v - (first.buckets![i] ?? 0)));
        let total = 0;
        for (const n of counts) total += n;
        if (total < c.minRequests) return null;
        return quantileMs(counts, this.bounds, 0.99);
      }
      case 'cpu_usage': {
        // a gauge: the mean of the samples after the window's start
        let sum = 0;
        let n = 0;
        for (let i = 1; i < ss.length; i++) if (Number.isFinite(ss[i].a)) { sum += ss[i].a; n++; }
        return n > 0 ? sum / n : null;
      }
    }
  }
}
