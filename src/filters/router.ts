/**
 * Routes: `match` then `action`, the same rule language for every protocol.
 * Compiled once per config; matching walks the list in order, first match wins.
 */
import type { HeaderMatch, ListenerConfig, RouteConfig, StringMatch } from '../config/config';
import type { ClusterRuntime } from '../upstream/cluster';
import { CONTINUE, STOP, type FilterContext, type FilterFactory, type FilterStatus, type StreamFilter } from './filter';
import type { StreamContext } from './chain';
import type { RequestView } from './request-view';

export type RouteTarget =
  | { kind: 'cluster'; cluster: ClusterRuntime; labelsKey: string; timeoutMs: number; route: string }
  | { kind: 'passthrough'; timeoutMs: number; route: string }
  | { kind: 'direct'; status: number; body: string; route: string };

type Matcher = (v: string) => boolean;

function stringMatcher(m: string | StringMatch, lower = false): Matcher {
  if (typeof m === 'string') { const s = lower ? m.toLowerCase() : m; return (v) => v === s; }
  if ('exact' in m) { const s = lower ? m.exact.toLowerCase() : m.exact; return (v) => v === s; }
  if ('prefix' in m) { const s = lower ? m.prefix.toLowerCase() : m.prefix; return (v) => v.startsWith(s); }
  const re = new RegExp(`^(?:${m.regex})$`);
  return (v) => re.test(v);
}

function headerMatcher(name: string, m: HeaderMatch): (view: RequestView) => boolean {
  if (typeof m === 'object' && 'present' in m) {
    const want = m.present;
    return (view) => (view.header(name) !== undefined) === want;
  }
  const sm = stringMatcher(m as string | StringMatch);
  return (view) => {
    const v = view.header(name);
    return v !== undefined && sm(v);
  };
}

export function labelsKey(labels: Record<string, string> | undefined): string {
  if (!labels) return '';
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(',');
}

interface CompiledRoute {
  name: string;
  test: (view: RequestView) => boolean;
  target: RouteTarget;
}

export class Router implements FilterFactory {
  readonly name = 'router';
  private readonly routes: CompiledRoute[];
  private readonly filter: StreamFilter;

  constructor(
    routes: readonly RouteConfig[],
    private readonly clusters: ReadonlyMap<string, ClusterRuntime>,
    private readonly listeners: ReadonlyMap<string, ListenerConfig>,
    private readonly defaultTimeoutMs: number,
  ) {
    this.routes = routes.map((r, i) => this.compile(r, i, clusters));
    this.filter = { onRequest: (ctx) => this.onRequest(ctx) };
  }

  private compile(r: RouteConfig, i: number, clusters: ReadonlyMap<string, ClusterRuntime>): CompiledRoute {
    const tests: Array<(view: RequestView) => boolean> = [];
    const m = r.match;
    if (m.listener !== undefined) { const l = m.listener; tests.push((v) => v.listener === l); }
    if (m.direction !== undefined) { const d = m.direction; tests.push((v) => v.direction === d); }
    if (m.protocol !== undefined) { const p = m.protocol; tests.push((v) => v.protocol === p); }
    if (m.service !== undefined) { const s = stringMatcher(m.service, true); tests.push((v) => s(v.service)); }
    if (m.method !== undefined) {
      const set = new Set(Array.isArray(m.method) ? m.method : [m.method]);
      tests.push((v) => set.has(v.method));
    }
    if (m.path !== undefined) { const p = stringMatcher(m.path); tests.push((v) => p(v.path)); }
    for (const [name, hm] of Object.entries(m.headers ?? {})) tests.push(headerMatcher(name.toLowerCase(), hm));

    const name = r.name ?? `routes[${i}]`;
    const timeoutMs = r.action.timeoutMs ?? this.defaultTimeoutMs;
    let target: RouteTarget;
    if (r.action.directResponse) {
      target = { kind: 'direct', status: r.action.directResponse.status, body: r.action.directResponse.body, route: name };
    } else if (r.action.cluster !== undefined) {
      const cluster = clusters.get(r.action.cluster)!; // validated at load
      const key = labelsKey(r.action.labels);
      cluster.prepareSubset(key, r.action.labels);
      target = { kind: 'cluster', cluster, labelsKey: key, timeoutMs, route: name };
    } else {
      target = { kind: 'passthrough', timeoutMs, route: name };
    }
    const test = tests.length === 0 ? () => true : (v: RequestView) => { for (const t of tests) if (!t(v)) return false; return true; };
    return { name, test, target };
  }

  create(): StreamFilter {
    return this.filter;
  }

  /** First matching route's target, or the listener's default. null = no route. */
  resolve(view: RequestView, listenerCluster: ClusterRuntime | undefined): RouteTarget | null {
    for (const r of this.routes) if (r.test(view)) return r.target;
    if (listenerCluster) return { kind: 'cluster', cluster: listenerCluster, labelsKey: '', timeoutMs: this.defaultTimeoutMs, route: 'listener_default' };
    const l = this.listeners.get(view.listener);
    if (l?.capture && view.destination) return { kind: 'passthrough', timeoutMs: this.defaultTimeoutMs, route: 'passthrough' };
    return null;
  }

  private onRequest(ctx: FilterContext): FilterStatus {
    const sc = ctx as StreamContext;
    const l = this.listeners.get(ctx.view.listener);
    const lc = l?.cluster !== undefined ? this.clusters.get(l.cluster) : undefined;
    const target = this.resolve(ctx.view, lc);
    if (!target) {
      ctx.reply({ status: 404, reason: 'no_route', body: 'no route\n' });
      return STOP;
    }
    sc.target = target;
    return CONTINUE;
  }
}
