/**
 * The ratelimit filter: each rule whose match holds takes a token from its bucket (the rule's,
 * or its key's) in shared memory, so a limit holds for the whole sidecar whatever the number of
 * workers. The first enforced rule without a token refuses the request: the exchange's
 * RATE_LIMITED local reply (HTTP 429 with retry-after, gRPC RESOURCE_EXHAUSTED, Dubbo
 * SERVER_THREADPOOL_EXHAUSTED), and the tokens the request took from rules before it are given
 * back. A shadow rule without a token counts and logs (sampled) what it would have refused, and
 * lets the request through; it takes tokens exactly as an enforced rule does, so it refuses
 * (in its counters) what enforcing would.
 *
 * A refused request allocates little: the reply for each retry-after value is made once, and no
 * upstream is touched.
 */
import { CONTINUE, STOP, type Filter, type FilterStatus, type LocalReply, type RequestContext } from '../../exchange/filter';
import type { RequestView } from '../../exchange/request-view';
import type { ViewTest } from '../../exchange/router';
import type { Stats } from '../../stats/stats';
import { giveBack, monotonicNs, sharedNs, take, type Rate } from './gcra';
import { slotOf } from './key-table';
import { FACTOR_UNIT } from '../../alarms/overrides';

export const RL_ADMITTED = 'sluice_ratelimit_admitted_total';
export const RL_REFUSED = 'sluice_ratelimit_refused_total';
export const RL_SHADOW_REFUSED = 'sluice_ratelimit_shadow_refused_total';

/** At most one shadow line per rule and worker in this time; the line says how many it stands for. */
export const SHADOW_LOG_INTERVAL_MS = 1000;

/** One rule, compiled for a worker. */
export interface CompiledLimit {
  readonly name: string;
  readonly shadow: boolean;
  readonly test: ViewTest;
  readonly rate: Rate;
  /** Its word in the bucket region (no key). */
  readonly word: number;
  /** The key a request counts under; null: one bucket for the rule. */
  readonly keyOf: ((v: RequestView) => string) | null;
  readonly keyBase: number;
  readonly keySize: number;
  /** Its word in the alarms' overrides (src/alarms/overrides.ts): a factor on its rate while an alarm tightens it; -1: no alarm names it. */
  readonly overrideAt: number;
}

export interface LimitMemory {
  readonly buckets: BigInt64Array;
  readonly tags: Int32Array;
  readonly keyWords: BigInt64Array;
  readonly overrides: Int32Array;
}

export type ShadowLogger = (fields: Record<string, unknown>, msg: string) => void;

/** The local reply for a wait, one per whole number of seconds (made once). */
const replies: LocalReply[] = [];
export function rateLimitedReply(waitNs: number): LocalReply {
  const s = Math.max(1, Math.ceil(waitNs / 1e9));
  return (replies[s] ??= Object.freeze({ status: 429, reason: 'rate_limited', body: 'rate limited\n', grpcStatus: 8, dubboStatus: 100, retryAfter: s }));
}

interface RuleState {
  readonly limit: CompiledLimit;
  readonly admitted: number;
  readonly refused: number;
  readonly shadowRefused: number;
  /** Shadow refusals since the last line, and when it was logged. */
  pending: number;
  lastLine: number;
  /** The rate last taken at (the rule's, or tightened by an alarm), and the factor that made it. */
  rate: Rate;
  factor: number;
}

export class RateLimitFilter implements Filter<null> {
  readonly name = 'ratelimit';
  readonly global: boolean;
  private readonly rules: RuleState[];
  /** The rules that admitted the request being decided, and their slots (onRequest is synchronous: one scratch per filter). */
  private readonly takenRule: Int32Array;
  private readonly takenSlot: Int32Array;

  constructor(
    limits: readonly CompiledLimit[],
    private readonly memory: LimitMemory,
    private readonly stats: Stats,
    private readonly shadowLog: ShadowLogger,
    private readonly now: () => number = monotonicNs,
  ) {
    this.global = limits.length > 0;
    this.rules = limits.map((limit) => ({
      limit,
      admitted: stats.slot(RL_ADMITTED, { rule: limit.name }),
      refused: stats.slot(RL_REFUSED, { rule: limit.name }),
      shadowRefused: stats.slot(RL_SHADOW_REFUSED, { rule: limit.name }),
      pending: 0,
      lastLine: -Infinity,
      rate: limit.rate,
      factor: 0,
    }));
    this.takenRule = new Int32Array(limits.length);
    this.takenSlot = new Int32Array(limits.length);
  }

  onRequest(ctx: RequestContext): FilterStatus {
    const v = ctx.view;
    const rules = this.rules;
    let now = -1;
    let taken = 0;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      const l = r.limit;
      if (!l.test(v)) continue;
      // the request's start, taken by the exchange anyway: reading the clock again costs more than the bucket
      if (now < 0) now = ctx.startMs !== undefined ? sharedNs(ctx.startMs) : this.now();
      let words: BigInt64Array;
      let slot: number;
      if (l.keyOf === null) {
        words = this.memory.buckets;
        slot = l.word;
      } else {
        words = this.memory.keyWords;
        slot = slotOf(this.memory.tags, words, l.keyBase, l.keySize, l.keyOf(v));
      }
      if (l.overrideAt >= 0) this.tighten(r, Atomics.load(this.memory.overrides, l.overrideAt));
      const wait = take(words, slot, r.rate, now);
      if (wait === 0) {
        this.takenRule[taken] = i;
        this.takenSlot[taken++] = slot;
        continue;
      }
      if (l.shadow) {
        this.stats.inc(r.shadowRefused);
        ctx.note('rateLimitShadow', l.name);
        this.sample(r, v, now);
        continue;
      }
      for (let j = 0; j < taken; j++) {
        const t = rules[this.takenRule[j]];
        giveBack(t.limit.keyOf === null ? this.memory.buckets : this.memory.keyWords, this.takenSlot[j], t.rate);
      }
      this.stats.inc(r.refused);
      ctx.note('rateLimit', l.name);
      ctx.reply(rateLimitedReply(wait));
      return STOP;
    }
    for (let j = 0; j < taken; j++) this.stats.inc(rules[this.takenRule[j]].admitted);
    return CONTINUE;
  }

  /** An alarm's factor on the rule's rate (millionths; 0: none): the interval grows, the burst in requests stays. */
  private tighten(r: RuleState, factor: number): void {
    if (factor === r.factor) return;
    r.factor = factor;
    const base = r.limit.rate;
    r.rate = factor <= 0 ? base : { intervalNs: (base.intervalNs * FACTOR_UNIT) / factor, capacityNs: (base.capacityNs * FACTOR_UNIT) / factor };
  }

  private sample(r: RuleState, v: RequestView, nowNs: number): void {
    r.pending++;
    if (nowNs - r.lastLine < SHADOW_LOG_INTERVAL_MS * 1e6) return;
    this.shadowLog({
      rule: r.limit.name, requests: r.pending, protocol: v.protocol, direction: v.direction, listener: v.listener,
      source: v.source.address, principal: v.source.principal, service: v.service, method: v.method, path: v.path,
    }, 'rate limit: would refuse (shadow mode), let through');
    r.lastLine = nowNs;
    r.pending = 0;
  }
}
