/**
 * The adaptive filter, as a worker runs it: each inbound call is counted against its interface's
 * row in shared memory and admitted while the interface's in-flight calls (all workers) are under
 * the limit the controller wrote. Refused: the OVERLOADED local reply (HTTP 503, gRPC
 * RESOURCE_EXHAUSTED, Dubbo SERVER_THREADPOOL_EXHAUSTED). Shadow mode: decided and counted the
 * same, logged (sampled), let through.
 *
 * A limit with a fraction (0.4, 2.5) admits the call that would take the in-flight count past its
 * whole part with the fraction as probability: an interface can be held to a share of one call's
 * worth of the application, down to none.
 */
import { CONTINUE, STOP, type Completion, type Filter, type FilterStatus, type RequestContext } from '../../exchange/filter';
import { OVERLOADED } from '../../exchange/outcome';
import type { RequestView } from '../../exchange/request-view';
import type { ViewTest } from '../../exchange/router';
import type { Stats } from '../../stats/stats';
import {
  CLASS_CRITICAL, CLASS_NORMAL, CLASS_SHED_FIRST, COUNTS, C_ARRIVED, C_COMPLETED, C_LATENCY_US, C_REFUSED, C_SHADOW_REFUSED,
  MAX_INTERFACES, NAME_BYTES, type InterfaceTable,
} from './interface-table';

export const ADAPTIVE_REFUSED = 'sluice_adaptive_refused_total';
export const ADAPTIVE_SHADOW_REFUSED = 'sluice_adaptive_shadow_refused_total';

/** At most one shadow line per worker in this time; the line says how many it stands for. */
export const SHADOW_LOG_INTERVAL_MS = 1000;
/** Interfaces a worker remembers (name → row); past that, it looks each up in the shared table. */
const CACHE_MAX = 4096;

export interface AdaptiveFilterOptions {
  readonly mode: 'enforce' | 'shadow';
  readonly directions: ReadonlySet<string>;
  readonly maxInterfaces: number;
  readonly critical: ViewTest;
  readonly shedFirst: ViewTest;
}

/** The interface a call belongs to: `service/method` for gRPC and Dubbo, `METHOD path` for HTTP. */
export function interfaceName(v: RequestView): string {
  const name = v.protocol === 'grpc' || v.protocol === 'dubbo' ? `${v.service}/${v.method}` : `${v.method} ${v.path}`;
  return name.length > NAME_BYTES ? name.slice(0, NAME_BYTES) : name;
}

interface Entry { row: number; cls: number }

export class AdaptiveFilter implements Filter<null> {
  readonly name = 'adaptive';
  readonly global = true;
  private readonly cache = new Map<string, Map<string, Entry>>();
  private cached = 0;
  /** Calls admitted (or let through) and not complete, with their row. */
  private readonly admitted = new Map<RequestView, number>();
  /** Where this worker's part of each interface's in-flight count starts (-1: none kept, the main thread). */
  private readonly share: number;
  private readonly refusedSlot: number;
  private readonly shadowSlot: number;
  private lastLine = -Infinity;
  private unlogged = 0;

  constructor(
    private readonly table: InterfaceTable,
    private readonly opts: AdaptiveFilterOptions,
    private readonly stats: Stats,
    private readonly shadowLog: (fields: Record<string, unknown>, msg: string) => void,
    private readonly random: () => number = Math.random,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.share = stats.row >= 0 ? stats.row * MAX_INTERFACES : -1;
    this.refusedSlot = stats.slot(ADAPTIVE_REFUSED);
    this.shadowSlot = stats.slot(ADAPTIVE_SHADOW_REFUSED);
  }

  /**
   * The interface's row, found without building its name: by method then path (HTTP), or by
   * service then method (gRPC, Dubbo), each a string the view already holds.
   */
  private entry(v: RequestView): Entry {
    const rpc = v.protocol === 'grpc' || v.protocol === 'dubbo';
    const outer = rpc ? v.service : v.method;
    const inner = rpc ? v.method : v.path;
    let byInner = this.cache.get(outer);
    let e = byInner?.get(inner);
    if (e === undefined) {
      const cls = this.opts.critical(v) ? CLASS_CRITICAL : this.opts.shedFirst(v) ? CLASS_SHED_FIRST : CLASS_NORMAL;
      const row = this.table.rowOf(interfaceName(v), cls, this.opts.maxInterfaces);
      this.table.setClass(row, cls);
      e = { row, cls };
      if (this.cached < CACHE_MAX) {
        if (byInner === undefined) this.cache.set(outer, (byInner = new Map()));
        byInner.set(inner, e);
        this.cached++;
      }
    }
    return e;
  }

  onRequest(ctx: RequestContext): FilterStatus {
    const v = ctx.view;
    if (!this.opts.directions.has(v.direction)) return CONTINUE;
    const t = this.table;
    const row = this.entry(v).row;
    Atomics.add(t.counts, row * COUNTS + C_ARRIVED, 1);
    const limit = Atomics.load(t.limits, row);
    const before = Atomics.add(t.inflight, row, 1);
    if (limit >= 0 && (before + 1) * 1000 > limit && !(before * 1000 < limit && this.random() * 1000 < limit - before * 1000)) {
      if (this.opts.mode === 'enforce') {
        Atomics.sub(t.inflight, row, 1);
        Atomics.add(t.counts, row * COUNTS + C_REFUSED, 1);
        this.stats.inc(this.refusedSlot);
        ctx.note('adaptive', 'overloaded');
        ctx.reply(OVERLOADED);
        return STOP;
      }
      Atomics.add(t.counts, row * COUNTS + C_SHADOW_REFUSED, 1);
      this.stats.inc(this.shadowSlot);
      ctx.note('adaptive', 'shadow_overloaded');
      this.sample(v, row, before, limit);
    }
    if (this.share >= 0) Atomics.add(t.shares, this.share + row, 1);
    this.admitted.set(v, row);
    return CONTINUE;
  }

  onComplete(c: Completion): void {
    const row = this.admitted.get(c.view);
    if (row === undefined) return;
    this.admitted.delete(c.view);
    const t = this.table;
    Atomics.sub(t.inflight, row, 1);
    if (this.share >= 0) Atomics.sub(t.shares, this.share + row, 1);
    Atomics.add(t.counts, row * COUNTS + C_COMPLETED, 1);
    Atomics.add(t.counts, row * COUNTS + C_LATENCY_US, Math.round(c.durationMs * 1000));
  }

  private sample(v: RequestView, row: number, inflight: number, limit: number): void {
    this.unlogged++;
    const now = this.now();
    if (now - this.lastLine < SHADOW_LOG_INTERVAL_MS) return;
    this.shadowLog({
      interface: this.table.nameOf(row), requests: this.unlogged, inflight, limit: limit / 1000,
      protocol: v.protocol, listener: v.listener, source: v.source.address,
    }, 'adaptive limit: would refuse (shadow mode), let through');
    this.lastLine = now;
    this.unlogged = 0;
  }
}
