/**
 * Token buckets as GCRA (the generic cell rate algorithm): one word per bucket, the theoretical
 * arrival time (TAT) of the next request in nanoseconds of the process's monotonic clock, updated
 * with a compare-and-swap so that every worker shares one limit.
 *
 *   interval  T   = 1 s / rate (or 1 min / rate)
 *   capacity  τ   = burst × T
 *   admit at now:  next = max(TAT, now) + T;  admitted iff next − now ≤ τ, then TAT := next
 *   refused:       wait = next − now − τ until a token is back (retry-after)
 *   tokens now:    (τ − max(TAT − now, 0)) / T
 *
 * A word of 0 is a full bucket: a slot is reset by storing 0. A refused request leaves the word
 * as it was, so a refused request costs the bucket nothing.
 */

/** The monotonic clock every thread of the process shares (performance.now() alone has a per-thread origin), in ns. */
const ORIGIN_NS = Number(process.hrtime.bigint()) - performance.now() * 1e6;
export function monotonicNs(): number {
  return ORIGIN_NS + performance.now() * 1e6;
}

/** A time this thread read from performance.now() (ms), on the shared clock (ns). */
export function sharedNs(performanceMs: number): number {
  return ORIGIN_NS + performanceMs * 1e6;
}

export interface Rate {
  /** Nanoseconds between two requests at the sustained rate. */
  readonly intervalNs: number;
  /** Nanoseconds of credit a full bucket holds (burst × interval). */
  readonly capacityNs: number;
}

/**
 * A TAT runs at most this far ahead of the clock, so that it always fits the signed 64-bit word
 * (30 years: only a burst of more than 30 years' worth of the rate is cut to it).
 */
const MAX_CAPACITY_NS = 1e18;

export function rateOf(perSecond: number | undefined, perMinute: number | undefined, burst: number): Rate {
  const intervalNs = perSecond !== undefined ? 1e9 / perSecond : 60e9 / perMinute!;
  return { intervalNs, capacityNs: Math.min(burst * intervalNs, MAX_CAPACITY_NS) };
}

/**
 * Take one token from the bucket at `words[i]`. Returns 0 when admitted, else the nanoseconds
 * until a token is back (> 0).
 */
export function take(words: BigInt64Array, i: number, r: Rate, now: number): number {
  for (;;) {
    const old = Atomics.load(words, i);
    const tat = Number(old);
    const next = (tat > now ? tat : now) + r.intervalNs;
    const over = next - now - r.capacityNs;
    if (over > 0) return over;
    if (Atomics.compareExchange(words, i, old, BigInt(Math.ceil(next))) === old) return 0;
  }
}

/** Give back a token taken for a request that another rule then refused. */
export function giveBack(words: BigInt64Array, i: number, r: Rate): void {
  for (;;) {
    const old = Atomics.load(words, i);
    const tat = Number(old) - r.intervalNs;
    if (Atomics.compareExchange(words, i, old, BigInt(Math.max(0, Math.ceil(tat)))) === old) return;
  }
}

/** Tokens in the bucket now (fractional), for the admin view. */
export function tokens(words: BigInt64Array, i: number, r: Rate, now: number): number {
  const tat = Number(Atomics.load(words, i));
  const used = tat > now ? tat - now : 0;
  return Math.max(0, (r.capacityNs - used) / r.intervalNs);
}
