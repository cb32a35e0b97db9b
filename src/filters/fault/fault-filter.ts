/**
 * Fault injection: a route's `fault` section delays a share of its requests, answers a share of
 * them itself (an abort), or both (the delay first, then the abort).
 *
 *   onRequest ─▶ delay? ─ yes ─▶ STOP; after(ms) ─▶ abort? ─ yes ─▶ reply(fault_abort)
 *       │                                              └─ no ──▶ resume()
 *       └─ no ─▶ abort? ─ yes ─▶ reply(fault_abort)
 *                  └─ no ──▶ CONTINUE
 *
 * A delay holds the request with a timer of the exchange, never the worker; a client that leaves
 * during it ends the exchange, and the timer with it. An abort is a LocalReply: each protocol
 * renders it in its own form (an HTTP status, a gRPC status, a Dubbo status byte), so nothing
 * here knows which protocol it answers.
 */
import { CONTINUE, STOP, type Filter, type FilterEnv, type FilterStatus, type LocalReply, type RequestContext } from '../../exchange/filter';
import type { Stats } from '../../stats/stats';

export const FAULT_ABORTS = 'sluice_fault_aborts_total';
export const FAULT_DELAYS = 'sluice_fault_delays_total';

/** A route's `fault` section, as the schema leaves it (defaults filled). */
export interface FaultConfig {
  readonly abort?: { readonly status: number; readonly percent: number; readonly grpcStatus?: number; readonly dubboStatus?: number };
  readonly delay?: { readonly ms: number; readonly percent: number };
}

/** One route's fault section, compiled: the reply built once, the stat slots resolved once. */
export interface FaultState {
  readonly abort: { readonly reply: LocalReply; readonly percent: number } | null;
  readonly delay: { readonly ms: number; readonly percent: number } | null;
  readonly abortSlot: number;
  readonly delaySlot: number;
}

export const FAULT_ABORT_BODY = 'fault filter abort\n';

export function compileFault(f: FaultConfig, routeName: string, stats: Stats): FaultState {
  let abort: FaultState['abort'] = null;
  if (f.abort) {
    const a = f.abort;
    const reply: LocalReply = { status: a.status, reason: 'fault_abort', body: FAULT_ABORT_BODY };
    if (a.grpcStatus !== undefined) reply.grpcStatus = a.grpcStatus;
    if (a.dubboStatus !== undefined) reply.dubboStatus = a.dubboStatus;
    abort = { reply: Object.freeze(reply), percent: a.percent };
  }
  return {
    abort,
    delay: f.delay ? { ms: f.delay.ms, percent: f.delay.percent } : null,
    abortSlot: stats.slot(FAULT_ABORTS, { route: routeName }),
    delaySlot: stats.slot(FAULT_DELAYS, { route: routeName }),
  };
}

export class FaultFilter implements Filter<FaultState> {
  readonly name = 'fault';
  private readonly stats: Stats;
  private readonly random: () => number;

  constructor(env: FilterEnv) {
    this.stats = env.stats;
    this.random = env.random;
  }

  compileRoute(route: Readonly<Record<string, unknown>>, routeName: string): FaultState | null {
    const f = route.fault as FaultConfig | undefined;
    return f ? compileFault(f, routeName, this.stats) : null;
  }

  onRequest(ctx: RequestContext, s: FaultState): FilterStatus {
    const delay = s.delay !== null && this.hit(s.delay.percent);
    const abort = s.abort !== null && this.hit(s.abort.percent);
    if (delay) {
      this.stats.inc(s.delaySlot);
      ctx.note('fault', abort ? 'delay+abort' : 'delay');
      ctx.after(s.delay!.ms, abort ? () => this.abort(ctx, s) : () => ctx.resume());
      return STOP;
    }
    if (abort) {
      ctx.note('fault', 'abort');
      this.abort(ctx, s);
      return STOP;
    }
    return CONTINUE;
  }

  private abort(ctx: RequestContext, s: FaultState): void {
    this.stats.inc(s.abortSlot);
    ctx.reply(s.abort!.reply);
  }

  /** Whether this request is in the `percent` share (0-100, fractions allowed); no draw at 0 or 100. */
  private hit(percent: number): boolean {
    if (percent >= 100) return true;
    if (percent <= 0) return false;
    return this.random() * 100 < percent;
  }
}
