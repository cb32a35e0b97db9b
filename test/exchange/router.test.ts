/**
 * The router with real ClusterRuntimes and hand-made request views: every match kind,
 * first match wins, label subsets (the seed example), and the fallbacks when nothing matches.
 * Also the filter chain's stop / resume contract the router sits at the end of.
 */
import t from 'tap';
import { buildConfig, type ListenerConfig } from '../../src/config/config';
import { labelsKey } from '../../src/config/match';
import { type RequestView } from '../../src/exchange/request-view';
import { Router, type Route, type RouteTarget } from '../../src/exchange/router';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { ClusterRuntime } from '../../src/upstream/cluster';

type Doc = Record<string, unknown>;

interface ViewInit {
  protocol?: RequestView['protocol'];
  direction?: RequestView['direction'];
  listener?: string;
  destination?: RequestView['destination'];
  service?: string;
  authority?: string;
  method?: string;
  path?: string;
  headers?: Record<string, string>;
}

/** A plain object implementing RequestView, as a codec would fill it. */
function view(init: ViewInit = {}): RequestView {
  const headers = init.headers ?? {};
  return {
    protocol: init.protocol ?? 'http1',
    direction: init.direction ?? 'outbound',
    listener: init.listener ?? 'outbound',
    source: { address: '10.0.0.9', port: 40000 },
    destination: init.destination ?? null,
    service: init.service ?? 'api.local',
    authority: init.authority ?? (init.protocol === 'dubbo' ? '' : init.service ?? 'api.local'),
    method: init.method ?? 'GET',
    path: init.path ?? '/',
    header: (name) => headers[name],
    headerValues: (name) => (headers[name] === undefined ? [] : [headers[name]]),
  };
}

const LISTENERS = [
  { name: 'outbound', address: '127.0.0.1:15001', direction: 'outbound', capture: true },
  { name: 'inbound', address: '127.0.0.1:15006', direction: 'inbound', capture: true },
  { name: 'app', address: '127.0.0.1:9001', cluster: 'web' },
  { name: 'bare', address: '127.0.0.1:9002' },
];
const CLUSTERS = [
  { name: 'web', endpoints: ['127.0.0.1:8080'] },
  {
    name: 'X',
    endpoints: [
      { address: '127.0.0.1:9101', labels: { group: 'Group_1' } },
      { address: '127.0.0.1:9102', labels: { group: 'Group_2' } },
      { address: '127.0.0.1:9103', labels: { group: 'Group_2', zone: 'b' } },
      '127.0.0.1:9104',
    ],
  },
];

/** A router over a validated config: routes are given; every route needs the bare listener served. */
function makeRouter(routes: Doc[], extra: Doc = {}) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: LISTENERS,
    clusters: CLUSTERS,
    routes: [...routes, { match: { listener: 'bare', path: { exact: '/__never__' } }, action: { directResponse: { status: 418 } } }],
    ...extra,
  });
  const registry = new StatsRegistry();
  for (const c of config.clusters) registry.addCluster(c.name);
  const stats = new Stats(new SharedState(), registry.keys);
  const clusters = new Map(config.clusters.map((c) => [c.name, new ClusterRuntime(c, stats)]));
  const listeners = new Map<string, ListenerConfig>(config.listeners.map((l) => [l.name, l]));
  const router = new Router(config.routes, clusters, listeners, config.http.requestTimeoutMs);
  const route = (v: RequestView): string | null => router.resolve(v)?.name ?? null;
  return { router, clusters, route };
}

/** The cluster target of a route that has one. */
function clusterOf(route: Route) {
  const t = route.target as Extract<RouteTarget, { kind: 'cluster' }>;
  return t.target;
}

/** One direct-response route per name, matching `match`. */
const named = (name: string, match: Doc): Doc => ({ name, match, action: { directResponse: { status: 200, body: name } } });

t.test('service: exact, prefix, regex; case-insensitive', async (t) => {
  const { route } = makeRouter([
    named('exact', { service: 'Api.Local' }),
    named('exact-form', { service: { exact: 'pkg.Greeter' } }),
    named('prefix', { service: { prefix: 'Pay.' } }),
    named('regex', { service: { regex: 'orders\\.v[0-9]+' } }),
  ]);
  t.equal(route(view({ service: 'api.local' })), 'exact');
  t.equal(route(view({ service: 'API.LOCAL' })), 'exact', 'a gRPC or Dubbo service keeps its case');
  t.equal(route(view({ service: 'api.local2' })), null);
  t.equal(route(view({ service: 'api.loca' })), null);
  t.equal(route(view({ service: 'pkg.Greeter' })), 'exact-form', 'a mixed-case gRPC service matches its own spelling');
  t.equal(route(view({ service: 'pkg.greeter' })), 'exact-form');
  t.equal(route(view({ service: 'pay.svc.cluster.local' })), 'prefix');
  t.equal(route(view({ service: 'PAY.x' })), 'prefix');
  t.equal(route(view({ service: 'pa' })), null);
  t.equal(route(view({ service: 'orders.v12' })), 'regex');
  t.equal(route(view({ service: 'Orders.V2' })), 'regex');
  t.equal(route(view({ service: 'orders.v2.evil' })), null, 'a regex matches the whole value');
  t.equal(route(view({ service: 'my-orders.v2' })), null, 'anchored at the start too');
});

t.test('path: exact, prefix, regex; case-sensitive, whole value', async (t) => {
  const { route } = makeRouter([
    named('exact', { path: { exact: '/a' } }),
    named('prefix', { path: { prefix: '/api/' } }),
    named('regex', { path: { regex: '/users/[0-9]+' } }),
    named('alt', { path: { regex: '/x|/y' } }),
  ]);
  t.equal(route(view({ path: '/a' })), 'exact');
  t.equal(route(view({ path: '/a/' })), null);
  t.equal(route(view({ path: '/A' })), null);
  t.equal(route(view({ path: '/api/v1/things' })), 'prefix');
  t.equal(route(view({ path: '/api' })), null);
  t.equal(route(view({ path: '/users/42' })), 'regex');
  t.equal(route(view({ path: '/users/42/x' })), null);
  t.equal(route(view({ path: '/x' })), 'alt');
  t.equal(route(view({ path: '/x/z' })), null, 'an alternation stays inside the anchors');
});

t.test('method: one or a list', async (t) => {
  const { route } = makeRouter([
    named('post', { method: 'POST' }),
    named('put-or-delete', { method: ['PUT', 'DELETE'] }),
  ]);
  t.equal(route(view({ method: 'POST' })), 'post');
  t.equal(route(view({ method: 'PUT' })), 'put-or-delete');
  t.equal(route(view({ method: 'DELETE' })), 'put-or-delete');
  t.equal(route(view({ method: 'GET' })), null);
  t.equal(route(view({ method: 'post' })), null, 'methods are case-sensitive');
});

t.test('headers: exact, prefix, regex, present true and false', async (t) => {
  const { route } = makeRouter([
    named('plain', { headers: { Type: 'transfer' } }),
    named('exact', { headers: { 'x-mode': { exact: 'fast' } } }),
    named('prefix', { headers: { 'x-tenant': { prefix: 'acme-' } } }),
    named('regex', { headers: { 'x-version': { regex: 'v[2-3]' } } }),
    named('absent', { headers: { 'x-debug': { present: false }, 'x-want-absent': 'yes' } }),
    named('present', { headers: { 'x-debug': { present: true } } }),
    named('both', { headers: { 'x-a': '1', 'x-b': '2' } }),
  ]);
  t.equal(route(view({ headers: { type: 'transfer' } })), 'plain', 'config header names are matched lower-case');
  t.equal(route(view({ headers: { type: 'Transfer' } })), null, 'values are case-sensitive');
  t.equal(route(view({ headers: { 'x-mode': 'fast' } })), 'exact');
  t.equal(route(view({ headers: { 'x-mode': 'faster' } })), null);
  t.equal(route(view({ headers: { 'x-tenant': 'acme-1' } })), 'prefix');
  t.equal(route(view({ headers: { 'x-tenant': 'acm' } })), null);
  t.equal(route(view({ headers: { 'x-version': 'v3' } })), 'regex');
  t.equal(route(view({ headers: { 'x-version': 'v33' } })), null);
  t.equal(route(view({ headers: { 'x-want-absent': 'yes' } })), 'absent');
  t.equal(route(view({ headers: { 'x-want-absent': 'yes', 'x-debug': '' } })), 'present', 'an empty value is present');
  t.equal(route(view({ headers: { 'x-debug': '1' } })), 'present');
  t.equal(route(view({ headers: { 'x-a': '1', 'x-b': '2' } })), 'both');
  t.equal(route(view({ headers: { 'x-a': '1' } })), null, 'every header of a route must match');
  t.equal(route(view()), null);
});

t.test('direction, listener, protocol', async (t) => {
  const { route } = makeRouter([
    named('in', { direction: 'inbound' }),
    named('app-listener', { listener: 'app' }),
    named('grpc', { protocol: 'grpc' }),
    named('dubbo', { protocol: 'dubbo' }),
  ]);
  t.equal(route(view({ direction: 'inbound', listener: 'inbound' })), 'in');
  t.equal(route(view({ listener: 'app' })), 'app-listener');
  t.equal(route(view({ protocol: 'grpc' })), 'grpc');
  t.equal(route(view({ protocol: 'dubbo' })), 'dubbo');
  t.equal(route(view({ protocol: 'http2' })), null);
});

t.test('all conditions of a route must hold; first match wins', async (t) => {
  const { route } = makeRouter([
    named('narrow', { service: 'api.local', path: { prefix: '/pay' }, method: 'POST', headers: { type: 'transfer' }, direction: 'outbound' }),
    named('wide', { path: { prefix: '/pay' } }),
    named('wider', { path: { prefix: '/' } }),
    named('never', { path: { prefix: '/pay' } }),
  ]);
  t.equal(route(view({ method: 'POST', path: '/pay/1', headers: { type: 'transfer' } })), 'narrow');
  t.equal(route(view({ method: 'GET', path: '/pay/1', headers: { type: 'transfer' } })), 'wide');
  t.equal(route(view({ method: 'POST', path: '/pay/1', headers: { type: 'transfer' }, direction: 'inbound', listener: 'inbound' })), 'wide');
  t.equal(route(view({ path: '/other' })), 'wider');
  const { route: r2 } = makeRouter([named('first', {}), named('second', {})]);
  t.equal(r2(view()), 'first', 'an empty match matches everything');
});

t.test('the seed example: header type=transfer → cluster X, group Group_2 endpoints only', async (t) => {
  const { router, clusters } = makeRouter([
    { name: 'transfer', match: { headers: { type: 'transfer' } }, action: { cluster: 'X', labels: { group: 'Group_2' }, timeoutMs: 2000 } },
    { name: 'rest', match: { service: 'x.local' }, action: { cluster: 'X' } },
  ]);
  const pickFrom = (v: RequestView, n: number) => {
    const route = router.resolve(v)!;
    const target = clusterOf(route);
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const ep = target.cluster!.pick(target.subset)!;
      seen.set(ep.key, (seen.get(ep.key) ?? 0) + 1);
    }
    return { route, target, seen };
  };
  const http = pickFrom(view({ service: 'x.local', headers: { type: 'transfer' } }), 100);
  t.equal(http.route.name, 'transfer');
  t.equal(http.target.cluster, clusters.get('X'));
  t.equal(http.route.timeoutMs, 2000);
  t.equal(http.target.subset, labelsKey({ group: 'Group_2' }));
  t.same([...http.seen.keys()].sort(), ['127.0.0.1:9102', '127.0.0.1:9103'], 'only the Group_2 endpoints');
  t.same([...http.seen.values()], [50, 50], 'spread evenly between them');
  // the same rule, a Dubbo call with attachment type=transfer
  const dubbo = pickFrom(view({ protocol: 'dubbo', service: 'com.acme.TransferService', method: 'transfer', path: '', headers: { type: 'transfer' } }), 20);
  t.equal(dubbo.route.name, 'transfer');
  t.same([...dubbo.seen.keys()].sort(), ['127.0.0.1:9102', '127.0.0.1:9103']);
  // without the header: every endpoint of X, with the default request timeout
  const rest = pickFrom(view({ service: 'x.local' }), 40);
  t.equal(rest.route.name, 'rest');
  t.equal(rest.route.timeoutMs, 15_000);
  t.same([...rest.seen.keys()].sort(), ['127.0.0.1:9101', '127.0.0.1:9102', '127.0.0.1:9103', '127.0.0.1:9104']);
});

t.test('label keys do not depend on the order labels are written in', async (t) => {
  t.equal(labelsKey({ zone: 'b', group: 'Group_2' }), labelsKey({ group: 'Group_2', zone: 'b' }));
  t.equal(labelsKey(undefined), '');
  const { router } = makeRouter([{ match: {}, action: { cluster: 'X', labels: { zone: 'b', group: 'Group_2' } } }]);
  const target = clusterOf(router.resolve(view())!);
  for (let i = 0; i < 5; i++) t.equal(target.cluster!.pick(target.subset)!.key, '127.0.0.1:9103');
});

t.test('no route matched: passthrough, listener cluster, or nothing', async (t) => {
  const { router, clusters } = makeRouter([named('only', { path: { exact: '/only' } })]);
  const dst = { address: '10.1.1.1', port: 80 };
  const out = router.resolve(view({ listener: 'outbound', path: '/x', destination: dst }));
  t.match(out, { name: 'passthrough', target: { kind: 'passthrough' }, timeoutMs: 15_000 }, 'capture listener with an original destination');
  t.match(router.resolve(view({ listener: 'inbound', direction: 'inbound', path: '/x', destination: dst })), { target: { kind: 'passthrough' } });
  t.equal(router.resolve(view({ listener: 'outbound', path: '/x', destination: null })), null, 'not redirected: nowhere to pass it to');
  const app = router.resolve(view({ listener: 'app', path: '/x', destination: dst }))!;
  t.match(app, { name: 'listener_default', target: { kind: 'cluster', target: { subset: '' } }, timeoutMs: 15_000 });
  t.equal(clusterOf(app).cluster, clusters.get('web'));
  t.equal(router.resolve(view({ listener: 'bare', path: '/x', destination: null })), null, 'explicit listener without a cluster');
  t.equal(router.resolve(view({ listener: 'app', path: '/only' }))?.name, 'only', 'routes still come first');
  // a capture listener that also names a cluster: redirected traffic passes through, the rest goes to the cluster
  const { router: both } = makeRouter([], {
    listeners: [...LISTENERS.filter((l) => l.name !== 'outbound'), { name: 'outbound', address: '127.0.0.1:15001', capture: true, cluster: 'web' }],
  });
  t.match(both.resolve(view({ listener: 'outbound', destination: dst })), { target: { kind: 'passthrough' } });
  t.match(both.resolve(view({ listener: 'outbound' })), { name: 'listener_default', target: { kind: 'cluster' } });
});

t.test('route actions: direct response, passthrough, timeouts', async (t) => {
  const { router } = makeRouter([
    { name: 'dr', match: { path: { exact: '/dr' } }, action: { directResponse: { status: 503, body: 'down\n' } } },
    { name: 'dr-empty', match: { path: { exact: '/dr0' } }, action: { directResponse: { status: 204 } } },
    { name: 'pt', match: { path: { exact: '/pt' } }, action: { passthrough: true, timeoutMs: 123 } },
  ]);
  t.match(router.resolve(view({ path: '/dr' })), { name: 'dr', target: { kind: 'direct', status: 503, body: 'down\n' } });
  t.match(router.resolve(view({ path: '/dr0' })), { name: 'dr-empty', target: { kind: 'direct', status: 204, body: '' } });
  t.match(router.resolve(view({ path: '/pt' })), { name: 'pt', target: { kind: 'passthrough' }, timeoutMs: 123 });
  const { router: unnamed } = makeRouter([{ match: {}, action: { passthrough: true } }]);
  t.equal(unnamed.resolve(view())?.name, 'routes[0]', 'an unnamed route is named by its index');
});

t.test('authority: the host of every HTTP request, gRPC included; never a Dubbo call', async (t) => {
  const { route } = makeRouter([named('host', { authority: 'Admin.Internal' })]);
  t.equal(route(view({ service: 'admin.internal' })), 'host', 'HTTP: the same as service');
  t.equal(route(view({ protocol: 'grpc', service: 'pkg.Svc', authority: 'admin.internal' })), 'host', 'gRPC: service is the gRPC service, authority the host');
  t.equal(route(view({ protocol: 'grpc', service: 'admin.internal', authority: 'public.test' })), null);
  t.equal(route(view({ protocol: 'dubbo', service: 'admin.internal', authority: '' })), null, 'a Dubbo call has no authority');
});

t.test('with registries: unrouted outbound requests go to their discovered service, where the listener allows', async (t) => {
  const build = (discovery: { dubbo: boolean; spring: boolean; balanceCaptured: boolean } | null, routes: Doc[] = []) => {
    const config = buildConfig({
      admin: { address: '127.0.0.1:0' }, listeners: LISTENERS, clusters: CLUSTERS, routes,
      registries: [{ name: 'zk', type: 'zookeeper', address: '127.0.0.1:2181' }],
    });
    const stats = new Stats(new SharedState(), new StatsRegistry().keys);
    const clusters = new Map(config.clusters.map((c) => [c.name, new ClusterRuntime(c, stats)]));
    const listeners = new Map<string, ListenerConfig>(config.listeners.map((l) => [l.name, l]));
    return new Router(config.routes, clusters, listeners, config.http.requestTimeoutMs, [], discovery);
  };
  const target = (r: Route | null) => (r?.target.kind === 'discover' ? `${r.target.service}:${r.target.fallback}` : r?.name ?? null);
  const dst = { address: '10.0.0.7', port: 20880 };
  const all = build({ dubbo: true, spring: true, balanceCaptured: true });
  t.equal(target(all.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', destination: dst }))), 'dubbo:passthrough', 'captured Dubbo call: discovered, falling back to its original destination');
  t.equal(target(all.resolve(view({ service: 'orders', destination: dst }))), 'spring:passthrough', 'captured HTTP request: by its host');
  t.equal(target(all.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', listener: 'bare' }))), 'dubbo:fail', 'an explicit listener without a cluster: discovered, no fallback');
  t.equal(target(all.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', listener: 'app' }))), 'listener_default', 'a listener with a cluster keeps it');
  t.equal(target(all.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', listener: 'outbound' }))), null, 'the capture port dialled directly (no original destination): no route, as before');
  t.equal(target(all.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', direction: 'inbound', listener: 'inbound', destination: dst }))), 'passthrough', 'inbound: to the local application');
  const kept = build({ dubbo: true, spring: true, balanceCaptured: false });
  t.equal(target(kept.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', destination: dst }))), 'passthrough', 'balanceCaptured false: the application\'s choice');
  t.equal(target(kept.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', listener: 'bare' }))), 'dubbo:fail', 'explicit listeners still discover');
  const dubboOnly = build({ dubbo: true, spring: false, balanceCaptured: true });
  t.equal(target(dubboOnly.resolve(view({ service: 'orders', destination: dst }))), 'passthrough', 'no registry serves spring: HTTP passes through');
  const routed = build({ dubbo: true, spring: true, balanceCaptured: true }, [{ name: 'keep', match: { service: 'com.acme.A' }, action: { passthrough: true } }]);
  t.equal(target(routed.resolve(view({ protocol: 'dubbo', service: 'com.acme.A', destination: dst }))), 'keep', 'a matching route wins');
  t.equal(target(routed.resolve(view({ protocol: 'dubbo', service: 'com.acme.B', destination: dst }))), 'dubbo:passthrough');
  t.equal(target(build(null).resolve(view({ protocol: 'dubbo', service: 'com.acme.A', destination: dst }))), 'passthrough', 'without registries: as before');
});
