/**
 * Routes: `match` then `action`, the same rule language for every protocol.
 * Compiled once per config; matching walks the list in order, first match wins.
 *
 * Matching runs per request, so everything that can be decided at compile time is:
 * regexes are built once, service patterns are lower-cased once, the cheap equality
 * tests run before string and regex tests, and each listener's fallback target is
 * computed up front (no allocation on the request path).
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
type ViewTest = (view: RequestView) => boolean;

/**
 * A route regex matches the whole value (like Envoy's `safe_regex`), not a substring.
 * Config validation compiles with this same function, so what loads also compiles here.
 */
export function compileMatchRegex(source: string, ignoreCase = false): RegExp {
  // compiled alone first: `a)|(b` is invalid, but wrapped it compiles and escapes the anchors
  const flags = ignoreCase ? 'i' : '';
  new RegExp(source, flags);
  return new RegExp(`^(?:${source})$`, flags);
}

function stringMatcher(m: string | StringMatch): Matcher {
  if (typeof m === 'string') return (v) => v === m;
  if ('exact' in m) { const s = m.exact; return (v) => v === s; }
  if ('prefix' in m) { const s = m.prefix; return (v) => v.startsWith(s); }
  const re = compileMatchRegex(m.regex);
  return (v) => re.test(v);
}

/** Service names (host, authority, interface) compare case-insensitively. */
function serviceMatcher(m: string | StringMatch): Matcher {
  if (typeof m === 'string' || 'exact' in m) {
    const s = (typeof m === 'string' ? m : m.exact).toLowerCase();
    return (v) => v.length === s.length && (v === s || v.toLowerCase() === s);
  }
  if ('prefix' in m) { const s = m.prefix.toLowerCase(); return (v) => v.length >= s.length && v.toLowerCase().startsWith(s); }
  const re = compileMatchRegex(m.regex, true);
  return (v) => re.test(v);
}

function headerMatcher(name: string, m: HeaderMatch): ViewTest {
  if (typeof m === 'object' && 'present' in m) {
    const want = m.present;
    return (view) => (view.header(name) !== undefined) === want;
  }
  const sm = stringMatcher(m);
  return (view) => {
    const v = view.header(name);
    return v !== undefined && sm(v);
  };
}

/** The subset key of a label set: the same labels in any order give the same key. */
export function labelsKey(labels: Record<string, string> | undefined): string {
  if (!labels) return '';
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(',');
}

interface CompiledRoute {
  name: string;
  test: ViewTest;
  target: RouteTarget;
}

const always: ViewTest = () => true;

export class Router implements FilterFactory {
  readonly name = 'router';
  private readonly routes: CompiledRoute[];
  private readonly filter: StreamFilter;
  /** Per listener: the target when no route matched (cluster listener), if any. */
  private readonly listenerDefault = new Map<string, RouteTarget>();
  private readonly captureListeners = new Set<string>();
  private readonly passthrough: RouteTarget;

  constructor(
    routes: readonly RouteConfig[],
    clusters: ReadonlyMap<string, ClusterRuntime>,
    listeners: ReadonlyMap<string, ListenerConfig>,
    private readonly defaultTimeoutMs: number,
  ) {
    this.routes = routes.map((r, i) => this.compile(r, i, clusters));
    this.passthrough = { kind: 'passthrough', timeoutMs: defaultTimeoutMs, route: 'passthrough' };
    for (const [name, l] of listeners) {
      const cluster = l.cluster !== undefined ? clusters.get(l.cluster) : undefined;
      if (cluster) this.listenerDefault.set(name, { kind: 'cluster', cluster, labelsKey: '', timeoutMs: defaultTimeoutMs, route: 'listener_default' });
      if (l.capture) this.captureListeners.add(name);
    }
    this.filter = { onRequest: (ctx) => this.onRequest(ctx) };
  }

  private compile(r: RouteConfig, i: number, clusters: ReadonlyMap<string, ClusterRuntime>): CompiledRoute {
    // cheapest first: a route usually fails on listener, direction or protocol
    const tests: ViewTest[] = [];
    const m = r.match;
    if (m.listener !== undefined) { const l = m.listener; tests.push((v) => v.listener === l); }
    if (m.direction !== undefined) { const d = m.direction; tests.push((v) => v.direction === d); }
    if (m.protocol !== undefined) { const p = m.protocol; tests.push((v) => v.protocol === p); }
    if (m.method !== undefined) {
      if (typeof m.method === 'string') { const one = m.method; tests.push((v) => v.method === one); } else {
        const list = [...m.method];
        tests.push((v) => list.includes(v.method));
      }
    }
    if (m.service !== undefined) { const s = serviceMatcher(m.service); tests.push((v) => s(v.service)); }
    if (m.path !== undefined) { const p = stringMatcher(m.path); tests.push((v) => p(v.path)); }
    for (const [name, hm] of Object.entries(m.headers ?? {})) tests.push(headerMatcher(name.toLowerCase(), hm));

    const name = r.name ?? `routes[${i}]`;
    const timeoutMs = r.action.timeoutMs ?? this.defaultTimeoutMs;
    let target: RouteTarget;
    if (r.action.directResponse) {
      target = { kind: 'direct', status: r.action.directResponse.status, body: r.action.directResponse.body ?? '', route: name };
    } else if (r.action.cluster !== undefined) {
      const cluster = clusters.get(r.action.cluster);
      if (!cluster) throw new Error(`route ${name}: unknown cluster "${r.action.cluster}" (config validation missed it)`);
      const key = labelsKey(r.action.labels);
      cluster.prepareSubset(key, r.action.labels);
      target = { kind: 'cluster', cluster, labelsKey: key, timeoutMs, route: name };
    } else {
      target = { kind: 'passthrough', timeoutMs, route: name };
    }
    let test: ViewTest;
    if (tests.length === 0) test = always;
    else if (tests.length === 1) test = tests[0];
    else {
      const n = tests.length;
      test = (v) => { for (let j = 0; j < n; j++) if (!tests[j](v)) return false; return true; };
    }
    return { name, test, target };
  }

  create(): StreamFilter {
    return this.filter;
  }

  /**
   * The first matching route's target; else, on a capture listener with an original
   * destination, passthrough; else the listener's cluster. null = no route. The order is
   * the one opaque TCP follows too (passthroughTarget in worker/connection.ts).
   */
  resolve(view: RequestView): RouteTarget | null {
    const routes = this.routes;
    for (let i = 0; i < routes.length; i++) if (routes[i].test(view)) return routes[i].target;
    if (view.destination && this.captureListeners.has(view.listener)) return this.passthrough;
    return this.listenerDefault.get(view.listener) ?? null;
  }

  private onRequest(ctx: FilterContext): FilterStatus {
    const target = this.resolve(ctx.view);
    if (!target) {
      ctx.reply({ status: 404, reason: 'no_route', body: 'no route\n' });
      return STOP;
    }
    (ctx as StreamContext).target = target;
    return CONTINUE;
  }
}
