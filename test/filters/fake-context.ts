/**
 * What filter unit tests run on: a RequestContext that records what the filter asked for, a fake
 * clock for ctx.after, a scripted random, and real Stats over a registry that holds the filters'
 * families (so tests read counters by their full series names).
 */
import type { FilterEnv, HeaderOps, LocalReply, RequestContext, RetryPolicy, UpstreamTarget } from '../../src/exchange/filter';
import type { RequestView } from '../../src/exchange/request-view';
import { FILTER_MODULES, filterSeries } from '../../src/filters';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry, series } from '../../src/stats/stats';
import { ClusterRuntime } from '../../src/upstream/cluster';
import type { SluiceConfig } from '../../src/config/config';

/** A clock that moves only when the test says so. */
export class FakeClock {
  now = 0;
  private timers: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];
  after(ms: number, fn: () => void): { cancel(): void } {
    const t = { at: this.now + ms, fn, cancelled: false };
    this.timers.push(t);
    return { cancel: () => { t.cancelled = true; } };
  }
  /** Runs every timer due by now + ms, in time order. */
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => !t.cancelled && t.at <= until).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.now = due.at;
      this.timers.splice(this.timers.indexOf(due), 1);
      due.fn();
    }
    this.now = until;
  }
  get pending(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }
}

export function view(protocol: RequestView['protocol'] = 'http1', headers: Record<string, string> = {}): RequestView {
  return {
    protocol, direction: 'outbound', listener: 'app', source: { address: '127.0.0.1', port: 40000 }, destination: null,
    service: 'orders', authority: protocol === 'dubbo' ? '' : 'orders', method: 'GET', path: '/', header: (n) => headers[n],
    headerValues: (n) => (headers[n] === undefined ? [] : [headers[n]]),
  };
}

/** A request's context: what the filter did is in the fields. */
export class FakeContext implements RequestContext {
  replies: LocalReply[] = [];
  resumes = 0;
  target: UpstreamTarget | null = null;
  requestEdits: HeaderOps[] = [];
  responseEdits: HeaderOps[] = [];
  notes: Record<string, string | number> = {};
  /** The request ended (a reply, or the client left): timers no longer fire. */
  ended = false;
  private readonly handles: Array<{ cancel(): void }> = [];

  constructor(readonly view: RequestView, private readonly clock = new FakeClock(), readonly routeName: string | null = 'r') {}

  reply(r: LocalReply): void { if (!this.ended) { this.replies.push(r); this.end(); } }
  resume(): void { this.resumes++; }
  setTarget(t: UpstreamTarget): void { this.target = t; }
  editRequest(ops: HeaderOps): void { this.requestEdits.push(ops); }
  editResponse(ops: HeaderOps): void { this.responseEdits.push(ops); }
  mirror(): void { throw new Error('not used by these filters'); }
  setRetryPolicy(_p: RetryPolicy): void { throw new Error('not used by these filters'); }
  after(ms: number, fn: () => void): void { this.handles.push(this.clock.after(ms, () => { if (!this.ended) fn(); })); }
  note(k: string, v: string | number): void { this.notes[k] = v; }
  /** The exchange is over: its timers are cleared, as the exchange clears them. */
  end(): void { this.ended = true; for (const h of this.handles) h.cancel(); }
}

/** A random that returns these values in turn (then the last one again). */
export function scripted(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

/** Stats and clusters for a validated config, with the filters' per-route series allocated as the main thread does. */
export function envFor(config: SluiceConfig, random: () => number = Math.random): FilterEnv & { stats: Stats; value(name: string, labels?: Record<string, string>): number } {
  const registry = new StatsRegistry();
  for (const c of config.clusters) registry.addCluster(c.name);
  for (const f of filterSeries(config)) registry.add(series(f.name, f.labels));
  const shared = new SharedState();
  const stats = new Stats(shared, registry.keys);
  const clusters = new Map(config.clusters.map((c) => [c.name, new ClusterRuntime(c, stats)]));
  // what the main thread publishes with the config (shared slots of rate limits)
  const data: Record<string, unknown> = {};
  for (const m of FILTER_MODULES) if (m.main) data[m.name] = m.main(shared.memory).publish(config as unknown as Readonly<Record<string, unknown>>);
  return {
    config: config as unknown as Readonly<Record<string, unknown>>, stats, clusters, random, memory: shared.memory, data,
    value: (name, labels) => stats.get(stats.slot(name, labels)),
  };
}
