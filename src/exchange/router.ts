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
import { compileMatchRegex, labelsKey } from '../config/match';
import type { ClusterRuntime } from '../upstream/cluster';
import type { Filter, UpstreamTarget } from './filter';
import type { LocalReply } from './outcome';
import type { RequestView } from './request-view';
import { compileFallback, type CompiledFallback } from '../protection/fallback';
import type { Overrides } from '../alarms/overrides';

/** What a route does with a request. */
export type RouteTarget =
  | { kind: 'cluster'; target: UpstreamTarget }
  | { kind: 'passthrough'; target: UpstreamTarget }
  /** `reply`: the local reply made once (frozen), for protocols without a form of their own for a 2xx. */
  | { kind: 'direct'; status: number; body: string; reply: LocalReply }
  /**
   * No route matched an outbound request to a service a registry may list: its providers are
   * looked up by name (src/upstream/discovered.ts). Without any, `fallback` says what happens:
   * `passthrough` to the original destination (capture), or `fail` (an explicit listener).
   */
  | { kind: 'discover'; service: 'dubbo' | 'spring'; fallback: 'passthrough' | 'fail'; target: UpstreamTarget };

/** Which requests go to services found in a registry (from config.registries and config.registry). */
export interface RouterDiscovery {
  readonly dubbo: boolean;
  readonly spring: boolean;
  /** Captured calls too, not only those of explicit listeners without a cluster. */
  readonly balanceCaptured: boolean;
}

/** A filter of the chain with its compiled part of one route (null for a global filter on a route that does not configure it). */
export interface RouteFilter {
  readonly filter: Filter;
  readonly state: unknown;
}

/** A matched route: where the request goes, in how long, through which filters. */
export interface Route {
  readonly name: string;
  readonly target: RouteTarget;
  readonly timeoutMs: number;
  /** The filters this route's requests run through, in chain order. */
  readonly filters: readonly RouteFilter[];
  /** What the route answers instead of a refusal (routes[].fallback). */
  readonly fallback?: CompiledFallback | null;
  /** Its word in the alarms' overrides (src/alarms/overrides.ts): non-zero while an alarm's action degrades it; absent or -1: no alarm names it. */
  readonly degradedAt?: number;
  readonly overrides?: Int32Array;
}

export type Matcher = (v: string) => boolean;
export type ViewTest = (view: RequestView) => boolean;
/** How a `headers` entry of a match becomes a test (routes: headerMatcher). */
export type HeaderTestFactory = (name: string, m: HeaderMatch) => ViewTest;

export function stringMatcher(m: string | StringMatch): Matcher {
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

/** A route's header test: on the value the view gives (a repeated field's values joined, in every protocol). */
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

interface CompiledRoute {
  test: ViewTest;
  route: Route;
}

const always: ViewTest = () => true;

/**
 * The tests of a match (a route's `match`, or an authorization rule's match fields), cheapest
 * first: a request usually fails on listener, direction or protocol. Header names are given as
 * written; they compare without case.
 */
export function matchTests(m: RouteConfig['match'], header: HeaderTestFactory = headerMatcher): ViewTest[] {
  const tests: ViewTest[] = [];
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
  if (m.authority !== undefined) { const s = serviceMatcher(m.authority); tests.push((v) => s(v.authority)); }
  if (m.path !== undefined) { const p = stringMatcher(m.path); tests.push((v) => p(v.path)); }
  for (const [name, hm] of Object.entries(m.headers ?? {})) tests.push(header(name.toLowerCase(), hm));
  return tests;
}

/** One test that passes when all of `tests` do (none: always). */
export function allOf(tests: readonly ViewTest[]): ViewTest {
  if (tests.length === 0) return always;
  if (tests.length === 1) return tests[0];
  const list = [...tests];
  const n = list.length;
  return (v) => { for (let j = 0; j < n; j++) if (!list[j](v)) return false; return true; };
}

export class Router {
  private readonly routes: CompiledRoute[];
  /** Per listener: the route when nothing matched (a listener with a cluster), if any. */
  private readonly listenerDefault = new Map<string, Route>();
  private readonly captureListeners = new Set<string>();
  private readonly passthrough: Route;
  /** The global filters alone: what a request meets when no route matched, or on a fallback route. */
  readonly globalFilters: readonly RouteFilter[];
  /** Routes to services found in a registry: [dubbo, spring] × [captured, explicit listener]; null where not served. */
  private readonly discoverRoutes: { dubbo: [Route | null, Route | null]; spring: [Route | null, Route | null] } | null = null;

  constructor(
    routes: readonly RouteConfig[],
    clusters: ReadonlyMap<string, ClusterRuntime>,
    listeners: ReadonlyMap<string, ListenerConfig>,
    private readonly defaultTimeoutMs: number,
    private readonly filters: readonly Filter[] = [],
    discovery: RouterDiscovery | null = null,
    private readonly overrides: Overrides | null = null,
  ) {
    this.globalFilters = filters.filter((f) => f.global).map((filter) => ({ filter, state: null }));
    this.routes = routes.map((r, i) => this.compile(r, i, clusters));
    const passthrough: UpstreamTarget = { kind: 'passthrough', cluster: null, subset: '' };
    this.passthrough = { name: 'passthrough', target: { kind: 'passthrough', target: passthrough }, timeoutMs: defaultTimeoutMs, filters: this.globalFilters };
    if (discovery) {
      const route = (service: 'dubbo' | 'spring', fallback: 'passthrough' | 'fail'): Route => ({
        name: 'discovered', target: { kind: 'discover', service, fallback, target: passthrough }, timeoutMs: defaultTimeoutMs, filters: this.globalFilters,
      });
      const both = (service: 'dubbo' | 'spring', on: boolean): [Route | null, Route | null] =>
        (on ? [discovery.balanceCaptured ? route(service, 'passthrough') : null, route(service, 'fail')] : [null, null]);
      this.discoverRoutes = { dubbo: both('dubbo', discovery.dubbo), spring: both('spring', discovery.spring) };
    }
    for (const [name, l] of listeners) {
      const cluster = l.cluster !== undefined ? clusters.get(l.cluster) : undefined;
      if (cluster) {
        this.listenerDefault.set(name, {
          name: 'listener_default', target: { kind: 'cluster', target: { kind: 'cluster', cluster, subset: '' } }, timeoutMs: defaultTimeoutMs, filters: this.globalFilters,
        });
      }
      if (l.capture) this.captureListeners.add(name);
    }
  }

  private compile(r: RouteConfig, i: number, clusters: ReadonlyMap<string, ClusterRuntime>): CompiledRoute {
    const test = allOf(matchTests(r.match));

    const name = r.name ?? `routes[${i}]`;
    const timeoutMs = r.action.timeoutMs ?? this.defaultTimeoutMs;
    let target: RouteTarget;
    if (r.action.directResponse) {
      const { status, body = '' } = r.action.directResponse;
      target = { kind: 'direct', status, body, reply: Object.freeze({ status, reason: 'direct_response', body }) };
    } else if (r.action.cluster !== undefined) {
      target = { kind: 'cluster', target: clusterTarget(clusters, r.action.cluster, r.action.labels, name) };
    } else {
      // a split (or a passthrough): the split filter picks the cluster per request
      target = { kind: 'passthrough', target: { kind: 'passthrough', cluster: null, subset: '' } };
    }
    const routeFilters: RouteFilter[] = [];
    for (const filter of this.filters) {
      const state = filter.compileRoute ? filter.compileRoute(r as unknown as Record<string, unknown>, name) : null;
      if (state !== null || filter.global) routeFilters.push({ filter, state });
    }
    const degradedAt = this.overrides?.wordOf('route', name) ?? -1;
    const route: Route = { name, target, timeoutMs, filters: routeFilters, fallback: r.fallback ? compileFallback(r.fallback) : null, degradedAt, overrides: this.overrides?.view };
    return { test, route };
  }

  /**
   * The first matching route; else, on a capture listener with an original destination,
   * passthrough; else the listener's cluster. null = no route. The order is the one opaque
   * TCP follows too (passthroughTarget in worker/connection.ts).
   */
  resolve(view: RequestView): Route | null {
    const routes = this.routes;
    for (let i = 0; i < routes.length; i++) if (routes[i].test(view)) return routes[i].route;
    const captured = view.destination !== null && this.captureListeners.has(view.listener);
    // an outbound request no route claims goes to its service's providers when a registry lists them
    const d = this.discoverRoutes;
    if (d !== null && view.direction === 'outbound') {
      const pair = view.protocol === 'dubbo' ? d.dubbo : d.spring;
      if (captured) {
        if (pair[0]) return pair[0];
      } else if (pair[1] && !this.captureListeners.has(view.listener) && !this.listenerDefault.has(view.listener)) {
        return pair[1];
      }
    }
    if (captured) return this.passthrough;
    return this.listenerDefault.get(view.listener) ?? null;
  }
}

/** A cluster (and a label subset of it) as a target; the subset is prepared once. */
export function clusterTarget(clusters: ReadonlyMap<string, ClusterRuntime>, clusterName: string, labels: Readonly<Record<string, string>> | undefined, routeName: string): UpstreamTarget {
  const cluster = clusters.get(clusterName);
  if (!cluster) throw new Error(`route ${routeName}: unknown cluster "${clusterName}" (config validation missed it)`);
  const subset = labelsKey(labels);
  cluster.prepareSubset(subset, labels);
  return { kind: 'cluster', cluster, subset };
}
