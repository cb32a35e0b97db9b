/**
 * Config validation: the embedded default, defaults, freezing, and one test per rule that a
 * bad value is refused with its path. Pure: no sockets, no files except through parseConfigText.
 */
import t, { type Test } from 'tap';
import { buildConfig, defaultConfig, DEFAULT_CONFIG_YAML, parseConfigText, type SluiceConfig } from '../../src/config/config';
import { ConfigError, type ConfigIssue } from '../../src/errors';
import { DEFAULT_FILTERS } from '../../src/filters';

type Doc = Record<string, unknown>;

/** A valid base: one explicit listener on a cluster with labelled endpoints. */
function base(extra: Doc = {}): Doc {
  return {
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{
      name: 'web',
      endpoints: ['127.0.0.1:8080', { address: '127.0.0.1:8081', labels: { group: 'Group_2' } }],
    }],
    ...extra,
  };
}

function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a ConfigError, but the config was accepted');
}

/** The document is refused, with exactly one issue, at `path`, whose message matches `msg`. */
function refuses(t: Test, doc: Doc, path: string, msg: RegExp): void {
  const issues = issuesOf(() => buildConfig(doc));
  t.same(issues.map((i) => i.path), [path], `one issue, at ${path}: ${JSON.stringify(issues)}`);
  t.match(issues[0]?.message ?? '', msg);
}

t.test('embedded default config', async (t) => {
  const c = defaultConfig();
  t.same(c.admin, { address: '127.0.0.1:15000' });
  t.same(c.listeners.map((l) => [l.name, l.address, l.direction, l.capture]), [
    ['outbound', '0.0.0.0:15001', 'outbound', true],
    ['inbound', '0.0.0.0:15006', 'inbound', true],
  ]);
  t.equal(c.inbound.applicationAddress, '127.0.0.1');
  t.same(c.routes, []);
  t.same(c.clusters, []);
  t.match(DEFAULT_CONFIG_YAML, /15001/);
});

t.test('an empty document gets every default', async (t) => {
  const c = buildConfig({});
  t.same(c, {
    admin: { address: '127.0.0.1:15000' },
    workers: { threads: 0, maxConnectionsPerWorker: 100_000, youngGenerationMb: 8, mainThreadScheduling: 'batch' },
    listeners: [
      { name: 'outbound', address: '0.0.0.0:15001', direction: 'outbound', capture: true, protocol: 'auto', opaque: 'passthrough' },
      { name: 'inbound', address: '0.0.0.0:15006', direction: 'inbound', capture: true, protocol: 'auto', opaque: 'passthrough' },
    ],
    routes: [],
    clusters: [],
    inbound: { applicationAddress: '127.0.0.1' },
    http: {
      maxHeaderBytes: 65536, maxHeaders: 100, headerTimeoutMs: 10_000, idleTimeoutMs: 300_000,
      requestTimeoutMs: 15_000, upstreamIdleTimeoutMs: 60_000, via: '1.1 sluice',
      normalizePath: true, mergeSlashes: true, escapedSlashes: 'reject',
    },
    tcp: { sniffTimeoutMs: 1000, opaquePorts: [25, 587, 3306, 4444, 5432, 6379, 9300, 11211], connectTimeoutMs: 5000, idleTimeoutMs: 3_600_000 },
    dubbo: {
      maxBodyBytes: 8 * 1024 * 1024, serializations: [2], maxCallsPerConnection: 1000,
      upstreamProbeAfterMs: 1000, upstreamProbeTimeoutMs: 2000, upstreamMaxConsecutiveTimeouts: 3,
    },
    accessLog: { enabled: false, path: 'stdout', sampleRate: 1, bufferBytes: 1 << 20 },
    drain: { periodMs: 5000, timeoutMs: 15_000 },
    filters: [...DEFAULT_FILTERS],
    logLevel: 'info',
    authorization: [],
    rateLimits: [],
    alarms: [],
    adaptiveLimit: {
      enabled: false, mode: 'enforce', targetUtilization: 0.8, hysteresis: 0.05, intervalMs: 200, smoothing: 0.5, maxStepDown: 0.5,
      maxStepUp: 0.25, latencyTolerance: 3, latencyBufferMs: 2, criticalMinLimit: 1, maxInterfaces: 64, directions: ['inbound'],
      cpu: { cgroup: '/sys/fs/cgroup' }, critical: [], shedFirst: [],
    },
    registries: [],
    registry: {
      subscribeAtStart: { dubbo: [], spring: [] }, idleUnsubscribeMs: 600_000, zeroInstanceHoldMs: 60_000, firstListTimeoutMs: 5000, maxServices: 10_000, dubboWarmup: true,
      balanceCaptured: true, cluster: { lbPolicy: 'round_robin', connectTimeoutMs: 5000, maxConnectionsPerEndpoint: 1024, maxPendingRequests: 1024 },
    },
  });
  t.same(parseConfigText(''), c, 'an empty file is the same as {}');
});

t.test('nested defaults: listeners, clusters, endpoints, routes', async (t) => {
  const c = buildConfig(base({
    routes: [{ match: { path: { prefix: '/x' } }, action: { directResponse: { status: 200 } } }],
  }));
  t.same(c.listeners[0], { name: 'app', address: '127.0.0.1:9001', direction: 'outbound', capture: false, cluster: 'web', protocol: 'auto', opaque: 'passthrough' });
  const cl = c.clusters[0];
  t.equal(cl.protocol, 'auto');
  t.equal(cl.lbPolicy, 'round_robin');
  t.equal(cl.connectTimeoutMs, 5000);
  t.equal(cl.maxConnectionsPerEndpoint, 1024);
  t.equal(cl.maxPendingRequests, 1024);
  t.same(cl.endpoints, [
    { address: '127.0.0.1:8080', labels: {}, weight: 1 },
    { address: '127.0.0.1:8081', labels: { group: 'Group_2' }, weight: 1 },
  ], 'string and mapping endpoints both get labels {} and weight 1');
  t.same(c.routes[0].action.directResponse, { status: 200, body: '' });
});

t.test('the result is deeply frozen, and the input is not touched', async (t) => {
  const doc = base();
  const before = JSON.stringify(doc);
  const c: SluiceConfig = buildConfig(doc);
  t.equal(JSON.stringify(doc), before, 'input unchanged (no defaults written into it)');
  t.ok(Object.isFrozen(c));
  t.ok(Object.isFrozen(c.http));
  t.ok(Object.isFrozen(c.listeners));
  t.ok(Object.isFrozen(c.listeners[0]));
  t.ok(Object.isFrozen(c.clusters[0].endpoints[1].labels));
  t.throws(() => { (c.http as { via: string }).via = 'x'; }, TypeError);
  t.throws(() => { (c.clusters as unknown[]).push({}); }, TypeError);
  t.throws(() => { (c.clusters[0].endpoints[1].labels as Record<string, string>).group = 'x'; }, TypeError);
});

t.test('ConfigError has a stable code and lists every path in its message', async (t) => {
  try {
    buildConfig({ bogus: 1 }, 'my.yaml');
    t.fail('accepted');
  } catch (err) {
    t.ok(err instanceof ConfigError);
    t.equal((err as ConfigError).code, 'ERR_CONFIG_INVALID');
    t.match((err as Error).message, /^my\.yaml is invalid:\n {2}\/bogus: is not a known field$/);
  }
});

t.test('unknown fields, top-level and nested', async (t) => {
  refuses(t, base({ bogus: true }), '/bogus', /not a known field/);
  refuses(t, base({ http: { maxHeaderBytes: 65536, viaa: 'x' } }), '/http/viaa', /not a known field/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web', port: 1 }] }), '/listeners/0/port', /not a known field/);
  refuses(t, base({
    clusters: [{ name: 'web', endpoints: [{ address: '127.0.0.1:8080', lables: { a: 'b' } }] }],
  }), '/clusters/0/endpoints/0/lables', /not a known field/);
  refuses(t, base({ routes: [{ match: { host: 'x' }, action: { passthrough: true } }] }), '/routes/0/match/host', /not a known field/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web', protocol: 'grpc' }] }), '/listeners/0/protocol', /must be one of auto, http, dubbo, tcp/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web', opaque: 'drop' }] }), '/listeners/0/opaque', /must be one of passthrough, refuse/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web', protocol: 'tcp', opaque: 'refuse' }] }), '/listeners/0/opaque', /would refuse every connection/);
  refuses(t, base({ http: { escapedSlashes: 'decode' } }), '/http/escapedSlashes', /must be one of reject, keep, unescape/);
  refuses(t, base({ http: { normalizePath: 'yes' } }), '/http/normalizePath', /must be boolean/);
  refuses(t, base({ routes: [{ match: { path: { suffix: '/x' } }, action: { passthrough: true } }] }), '/routes/0/match/path/suffix', /not a known field/);
});

t.test('wrong types', async (t) => {
  refuses(t, base({ workers: { threads: 'two' } }), '/workers/threads', /must be integer/);
  refuses(t, base({ workers: { threads: 1.5 } }), '/workers/threads', /must be integer/);
  refuses(t, base({ workers: { youngGenerationMb: 0 } }), '/workers/youngGenerationMb', />= 1/);
  refuses(t, base({ workers: { mainThreadScheduling: 'fifo' } }), '/workers/mainThreadScheduling', /must be one of|allowed/);
  refuses(t, base({ http: 'fast' }), '/http', /must be object/);
  refuses(t, base({ listeners: { name: 'app' } }), '/listeners', /must be array/);
  refuses(t, base({ accessLog: { enabled: 'yes' } }), '/accessLog/enabled', /must be boolean/);
  refuses(t, base({ clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080', 8081] }] }), '/clusters/0/endpoints/1', /must be a string or a mapping/);
  refuses(t, base({ clusters: [{ name: 'web', endpoints: [{ address: '127.0.0.1:8080', weight: 'heavy' }] }] }), '/clusters/0/endpoints/0/weight', /must be integer/);
  refuses(t, base({ routes: [{ match: { service: 42 }, action: { passthrough: true } }] }), '/routes/0/match/service', /must be a string or a mapping/);
  refuses(t, base({ routes: [{ match: { headers: { type: 5 } }, action: { passthrough: true } }] }), '/routes/0/match/headers/type', /must be a string or a mapping/);
  refuses(t, base({ routes: [{ match: { method: [] }, action: { passthrough: true } }] }), '/routes/0/match/method', /fewer than 1/);
});

t.test('ranges and required fields', async (t) => {
  refuses(t, base({ accessLog: { sampleRate: 2 } }), '/accessLog/sampleRate', /<= 1/);
  refuses(t, base({ accessLog: { bufferBytes: 100 } }), '/accessLog/bufferBytes', />= 4096/);
  refuses(t, base({ accessLog: { bufferBytes: 2 ** 31 } }), '/accessLog/bufferBytes', /<= 1073741824/);
  refuses(t, base({ accessLog: { bufferBytes: 1.5e4 + 0.5 } }), '/accessLog/bufferBytes', /must be integer/);
  refuses(t, base({ admin: { address: '127.0.0.1:0', tokenFile: '' } }), '/admin/tokenFile', /fewer than 1/);
  refuses(t, base({ admin: { address: '127.0.0.1:0', tokenFile: 7 } }), '/admin/tokenFile', /must be string/);
  refuses(t, base({ tcp: { sniffTimeoutMs: 0 } }), '/tcp/sniffTimeoutMs', />= 1/);
  refuses(t, base({ http: { maxHeaderBytes: 10 } }), '/http/maxHeaderBytes', />= 1024/);
  refuses(t, base({ routes: [{ action: { directResponse: { status: 99 } } }] }), '/routes/0/action/directResponse/status', />= 200/);
  refuses(t, base({ routes: [{ match: {} }] }), '/routes/0/action', /is required/);
  refuses(t, base({ listeners: [{ address: '127.0.0.1:9001', cluster: 'web' }] }), '/listeners/0/name', /is required/);
  refuses(t, base({ clusters: [{ name: 'web' }] }), '/clusters/0/endpoints', /is required/);
  refuses(t, base({ listeners: [{ name: 'has space', address: '127.0.0.1:9001', cluster: 'web' }] }), '/listeners/0/name', /pattern/);
  refuses(t, base({ routes: [{ match: { path: {} }, action: { passthrough: true } }] }), '/routes/0/match/path', /must not be empty/);
  refuses(t, base({ routes: [{ match: { path: { exact: '/a', prefix: '/b' } }, action: { passthrough: true } }] }), '/routes/0/match/path', /exactly one field/);
});

t.test('bad enum values', async (t) => {
  refuses(t, base({ logLevel: 'loud' }), '/logLevel', /must be one of fatal, error, warn, info, debug, trace, silent/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web', direction: 'sideways' }] }), '/listeners/0/direction', /must be one of inbound, outbound/);
  refuses(t, base({ clusters: [{ name: 'web', lbPolicy: 'random', endpoints: ['127.0.0.1:8080'] }] }), '/clusters/0/lbPolicy', /round_robin, least_request/);
  refuses(t, base({ clusters: [{ name: 'web', protocol: 'http3', endpoints: ['127.0.0.1:8080'] }] }), '/clusters/0/protocol', /auto, http1, http2/);
  refuses(t, base({ routes: [{ match: { protocol: 'smtp' }, action: { passthrough: true } }] }), '/routes/0/match/protocol', /http1, http2, grpc, dubbo/);
});

t.test('address forms', async (t) => {
  const ep = (address: unknown) => base({ clusters: [{ name: 'web', endpoints: [address] }] });
  const epObj = (address: unknown) => base({ clusters: [{ name: 'web', endpoints: [{ address }] }] });
  refuses(t, ep('127.0.0.1'), '/clusters/0/endpoints/0', /has no port/);
  refuses(t, ep('127.0.0.1:'), '/clusters/0/endpoints/0', /is not a port/);
  refuses(t, ep('127.0.0.1:65536'), '/clusters/0/endpoints/0', /"65536" is not a port/);
  refuses(t, ep('127.0.0.1:http'), '/clusters/0/endpoints/0', /is not a port/);
  refuses(t, ep('127.0.0.1:0'), '/clusters/0/endpoints/0', /other than 0/);
  refuses(t, ep(':8080'), '/clusters/0/endpoints/0', /has no host/);
  refuses(t, ep('300.1.2.3:80'), '/clusters/0/endpoints/0', /not an IPv4 address/);
  refuses(t, ep('bad host:80'), '/clusters/0/endpoints/0', /not a host name/);
  refuses(t, epObj('::1:8080'), '/clusters/0/endpoints/0/address', /IPv6 as \[v6\]:port/);
  refuses(t, epObj('[::1]'), '/clusters/0/endpoints/0/address', /not host:port/);
  refuses(t, epObj('[::g]:80'), '/clusters/0/endpoints/0/address', /not an IPv6 address/);
  refuses(t, epObj('[1:2:3:4:5:6:7:8:9]:80'), '/clusters/0/endpoints/0/address', /not an IPv6 address/);
  refuses(t, base({ admin: { address: 'localhost' } }), '/admin/address', /has no port/);
  refuses(t, base({ listeners: [{ name: 'app', address: '0.0.0.0:99999', cluster: 'web' }] }), '/listeners/0/address', /is not a port/);
  refuses(t, base({ inbound: { applicationAddress: '127.0.0.1:8080' } }), '/inbound/applicationAddress', /without port/);
  // and the good forms
  const c = buildConfig(base({
    admin: { address: '[::1]:0' },
    clusters: [{ name: 'web', endpoints: ['[::1]:80', 'Svc.NS.svc.cluster.local:8080', '10.0.0.1:65535'] }],
    inbound: { applicationAddress: '::1' },
  }));
  t.equal(c.clusters[0].endpoints.length, 3);
});

t.test('duplicates: listener names, cluster names, listener addresses', async (t) => {
  refuses(t, base({
    listeners: [
      { name: 'app', address: '127.0.0.1:9001', cluster: 'web' },
      { name: 'app', address: '127.0.0.1:9002', cluster: 'web' },
    ],
  }), '/listeners/1/name', /duplicate listener name "app"/);
  refuses(t, base({
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }, { name: 'web', endpoints: ['127.0.0.1:8081'] }],
  }), '/clusters/1/name', /duplicate cluster name "web"/);
  refuses(t, base({
    listeners: [
      { name: 'a', address: '127.0.0.1:9001', cluster: 'web' },
      { name: 'b', address: '127.0.0.1:9001', cluster: 'web' },
    ],
  }), '/listeners/1/address', /clashes with \/listeners\/0\/address/);
  refuses(t, base({
    listeners: [
      { name: 'a', address: '0.0.0.0:9001', cluster: 'web' },
      { name: 'b', address: '127.0.0.1:9001', cluster: 'web' },
    ],
  }), '/listeners/1/address', /clashes/, );
  refuses(t, base({
    listeners: [
      { name: 'a', address: '[::1]:9001', cluster: 'web' },
      { name: 'b', address: '[0:0:0:0:0:0:0:1]:9001', cluster: 'web' },
    ],
  }), '/listeners/1/address', /clashes/);
  refuses(t, base({
    admin: { address: '127.0.0.1:15000' },
    listeners: [{ name: 'a', address: '0.0.0.0:15000', cluster: 'web' }],
  }), '/listeners/0/address', /clashes with \/admin\/address/);
  // port 0 is "any free port": never a clash; different ports or hosts are fine
  const c = buildConfig(base({
    listeners: [
      { name: 'a', address: '127.0.0.1:0', cluster: 'web' },
      { name: 'b', address: '127.0.0.1:0', cluster: 'web' },
      { name: 'c', address: '127.0.0.1:9001', cluster: 'web' },
      { name: 'd', address: '127.0.0.2:9001', cluster: 'web' },
    ],
  }));
  t.equal(c.listeners.length, 4);
});

t.test('route actions need exactly one of cluster, passthrough, directResponse', async (t) => {
  refuses(t, base({ routes: [{ action: {} }] }), '/routes/0/action', /exactly one .*has 0/);
  refuses(t, base({ routes: [{ action: { passthrough: false } }] }), '/routes/0/action', /exactly one .*has 0/);
  refuses(t, base({ routes: [{ action: { cluster: 'web', passthrough: true } }] }), '/routes/0/action', /exactly one .*has 2/);
  refuses(t, base({ routes: [{ action: { cluster: 'web', directResponse: { status: 200 } } }] }), '/routes/0/action', /has 2/);
  refuses(t, base({ routes: [{ action: { passthrough: true, directResponse: { status: 200 } } }] }), '/routes/0/action', /has 2/);
  for (const action of [{ cluster: 'web' }, { passthrough: true }, { directResponse: { status: 204 } }]) {
    t.equal(buildConfig(base({ routes: [{ action }] })).routes.length, 1, JSON.stringify(action));
  }
});

t.test('references: unknown cluster in a route or a listener, unknown listener, labels', async (t) => {
  refuses(t, base({ routes: [{ action: { cluster: 'nope' } }] }), '/routes/0/action/cluster', /unknown cluster "nope"/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'nope' }] }), '/listeners/0/cluster', /unknown cluster "nope"/);
  refuses(t, base({ routes: [{ match: { listener: 'nope' }, action: { cluster: 'web' } }] }), '/routes/0/match/listener', /unknown listener "nope"/);
  refuses(t, base({ routes: [{ action: { cluster: 'web', labels: { group: 'Group_9' } } }] }), '/routes/0/action/labels', /no endpoint of cluster "web" has these labels/);
  refuses(t, base({ routes: [{ action: { cluster: 'web', labels: { group: 'Group_2', zone: 'a' } } }] }), '/routes/0/action/labels', /no endpoint/);
  refuses(t, base({ routes: [{ action: { passthrough: true, labels: { group: 'Group_2' } } }] }), '/routes/0/action/labels', /needs a cluster/);
  t.equal(buildConfig(base({ routes: [{ action: { cluster: 'web', labels: { group: 'Group_2' } } }] })).routes.length, 1);
});

t.test('invalid regexes, wherever a regex may be', async (t) => {
  const route = (match: Doc) => base({ routes: [{ match, action: { passthrough: true } }] });
  refuses(t, route({ path: { regex: '/a(' } }), '/routes/0/match/path/regex', /not a valid regular expression/);
  refuses(t, route({ service: { regex: '[a-' } }), '/routes/0/match/service/regex', /not a valid regular expression/);
  refuses(t, route({ headers: { 'x-id': { regex: '*' } } }), '/routes/0/match/headers/x-id/regex', /not a valid regular expression/);
  // a source that compiles alone but not as a whole-value match must be refused as well
  refuses(t, route({ path: { regex: 'a)|(b' } }), '/routes/0/match/path/regex', /not a valid regular expression/);
  refuses(t, route({ headers: { 'bad name': 'x' } }), '/routes/0/match/headers/bad name', /not a valid header name/);
});

t.test('clusters need endpoints; explicit listeners need a cluster or a route', async (t) => {
  refuses(t, base({ clusters: [{ name: 'web', endpoints: [] }] }), '/clusters/0/endpoints', /at least one endpoint/);
  refuses(t, base({ listeners: [{ name: 'app', address: '127.0.0.1:9001' }] }), '/listeners/0', /needs a cluster or a route/);
  // a route for another listener, or for the other direction, does not serve it
  refuses(t, base({
    listeners: [{ name: 'app', address: '127.0.0.1:9001' }, { name: 'cap', address: '127.0.0.1:9002', capture: true }],
    routes: [{ match: { listener: 'cap' }, action: { passthrough: true } }],
  }), '/listeners/0', /needs a cluster or a route/);
  refuses(t, base({
    listeners: [{ name: 'app', address: '127.0.0.1:9001' }],
    routes: [{ match: { direction: 'inbound' }, action: { passthrough: true } }],
  }), '/listeners/0', /needs a cluster or a route/);
  // served: by a route for it, or by a route for every listener
  for (const match of [{ listener: 'app' }, {}, { direction: 'outbound', path: { prefix: '/' } }]) {
    const c = buildConfig(base({ listeners: [{ name: 'app', address: '127.0.0.1:9001' }], routes: [{ match, action: { cluster: 'web' } }] }));
    t.equal(c.listeners[0].cluster, undefined, JSON.stringify(match));
  }
  // capture listeners need neither
  t.ok(buildConfig(base({ listeners: [{ name: 'cap', address: '127.0.0.1:9001', capture: true }] })));
  // with a registry, an explicit listener finds providers by service name
  const zk = [{ name: 'zk', type: 'zookeeper', address: '127.0.0.1:2181' }];
  t.equal(buildConfig(base({ listeners: [{ name: 'app', address: '127.0.0.1:9001' }], registries: zk })).listeners[0].cluster, undefined);
});

t.test('registries and registry: the fixed names, defaults, and every rule with its path', async (t) => {
  const c = buildConfig(base({ registries: [{ name: 'zk', type: 'zookeeper', address: '127.0.0.1:2181' }] }));
  t.same(c.registries, [{ name: 'zk', type: 'zookeeper', address: '127.0.0.1:2181', sessionTimeoutMs: 30_000, kinds: ['dubbo', 'spring'], dubboRoot: '/dubbo', springRoot: '/services' }]);
  t.equal(c.registry.balanceCaptured, true);
  t.equal(c.registry.firstListTimeoutMs, 5000);
  t.ok(Object.isFrozen(c.registries[0]));
  refuses(t, base({ registries: [{ name: 'zk', type: 'zookeeper', address: 'a:1,,b' }] }), '/registries/0/address', /empty server/);
  refuses(t, base({ registries: [{ name: 'zk', type: 'consul', address: 'a:1' }] }), '/registries/0/type', /must be one of zookeeper/);
  refuses(t, base({ registries: [{ name: 'zk', type: 'zookeeper' }] }), '/registries/0/address', /is required/);
  refuses(t, base({ registries: [{ name: 'zk', type: 'zookeeper', address: 'a', auth: { digest: 'x' } }] }), '/registries/0/auth/digest', /user:password/);
  refuses(t, base({ registries: [{ name: 'zk', type: 'zookeeper', address: 'a' }, { name: 'zk', type: 'zookeeper', address: 'b' }] }), '/registries/1/name', /duplicate registry name/);
  refuses(t, base({ registry: { subscribeAtStart: { dubbo: ['com.acme.A'] } } }), '/registry/subscribeAtStart/dubbo/0', /no registry serves dubbo/);
  refuses(t, base({ registry: { balanceCaptured: 'yes' } }), '/registry/balanceCaptured', /boolean/);
  refuses(t, base({ registry: { cluster: { lbPolicy: 'random' } } }), '/registry/cluster/lbPolicy', /must be one of round_robin, least_request/);
  refuses(t, base({ registry: { cluster: { connectTimeoutMs: 0 } } }), '/registry/cluster/connectTimeoutMs', />= 1/);
  refuses(t, base({ registry: { firstListTimeoutMs: 0 } }), '/registry/firstListTimeoutMs', />= 1/);
});

t.test('YAML: syntax errors, several documents, not a mapping', async (t) => {
  const yamlIssues = issuesOf(() => parseConfigText('admin: {address: 127.0.0.1:1\nlisteners: [\n', 'bad.yaml'));
  t.ok(yamlIssues.length >= 1);
  t.equal(yamlIssues[0].path, '');
  t.match(yamlIssues[0].message, /^YAML: /);
  t.same(issuesOf(() => parseConfigText('a: 1\nb: 1\na: 2\n')).map((i) => i.path), [''], 'duplicate keys are a YAML error');
  t.match(issuesOf(() => parseConfigText('a: 1\nb: 1\na: 2\n'))[0].message, /unique/);
  const multi = issuesOf(() => parseConfigText('logLevel: info\n---\nlogLevel: warn\n'));
  t.same(multi, [{ path: '', message: 'must be a single YAML document (found 2, separated by ---)' }]);
  t.same(issuesOf(() => parseConfigText('- a\n- b\n')), [{ path: '', message: 'must be a mapping' }]);
  t.same(issuesOf(() => parseConfigText('just a string\n')), [{ path: '', message: 'must be a mapping' }]);
  // an alias bomb is refused as a config error, not thrown as something else
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 0; i < 8; i++) bomb.push(`${'b'.repeat(i + 1)}: &${'b'.repeat(i + 1)} [*${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}, *${i === 0 ? 'a' : 'b'.repeat(i)}]`);
  const bombIssues = issuesOf(() => parseConfigText(bomb.join('\n')));
  t.equal(bombIssues[0].path, '');
  t.match(bombIssues[0].message, /^YAML: /);
  // a document given as an object that cannot be copied
  t.same(issuesOf(() => buildConfig({ f: () => 1 })).map((i) => i.path), ['']);
});

t.test('a full YAML config parses to what it says', async (t) => {
  const c = parseConfigText(`
admin: { address: 127.0.0.1:15000 }
workers: { threads: 2 }
listeners:
  - { name: outbound, address: 0.0.0.0:15001, direction: outbound, capture: true }
  - { name: inbound,  address: 0.0.0.0:15006, direction: inbound,  capture: true }
  - { name: app, address: 127.0.0.1:9001, cluster: web }
routes:
  - name: transfer
    match: { headers: { type: transfer }, path: { prefix: /pay }, method: [POST], service: api.local, direction: outbound }
    action: { cluster: web, labels: { group: Group_2 }, timeoutMs: 2000 }
clusters:
  - name: web
    protocol: auto
    lbPolicy: round_robin
    endpoints: [ 127.0.0.1:8080, { address: 127.0.0.1:8081, labels: { group: Group_2 } } ]
http: { maxHeaderBytes: 65536, maxHeaders: 100, headerTimeoutMs: 10000, idleTimeoutMs: 300000, requestTimeoutMs: 15000, upstreamIdleTimeoutMs: 60000, via: "1.1 sluice" }
tcp: { sniffTimeoutMs: 100, connectTimeoutMs: 5000, idleTimeoutMs: 3600000 }
accessLog: { enabled: false, path: stdout, sampleRate: 1 }
drain: { timeoutMs: 15000 }
`);
  t.equal(c.workers.threads, 2);
  t.equal(c.listeners.length, 3);
  t.same(c.routes[0].match.headers, { type: 'transfer' });
  t.same(c.routes[0].action, { cluster: 'web', labels: { group: 'Group_2' }, timeoutMs: 2000 });
  t.same(c.clusters[0].endpoints[1], { address: '127.0.0.1:8081', labels: { group: 'Group_2' }, weight: 1 });
});

t.test('several errors in one document are all reported, in path order', async (t) => {
  const issues = issuesOf(() => parseConfigText(`
logLevel: loud
bogus: 1
listeners:
  - { name: app, address: 127.0.0.1, cluster: web }
  - { name: app, address: 127.0.0.1:9002, cluster: nope }
clusters:
  - { name: web, endpoints: [127.0.0.1:8080, 127.0.0.1:70000] }
  - { name: empty, endpoints: [] }
routes:
  - match: { path: { regex: "(" } }
    action: { cluster: web, passthrough: true }
  - action: { cluster: web, labels: { group: none } }
`));
  t.same(issues.map((i) => i.path), [
    '/bogus',
    '/clusters/0/endpoints/1',
    '/clusters/1/endpoints',
    '/listeners/0/address',
    '/listeners/1/cluster',
    '/listeners/1/name',
    '/logLevel',
    '/routes/0/action',
    '/routes/0/match/path/regex',
    '/routes/1/action/labels',
  ], JSON.stringify(issues, null, 1));
  t.equal(issues.length, 10);
});

t.test('a schema error does not hide a reference error elsewhere, nor cascade into its own', async (t) => {
  const issues = issuesOf(() => buildConfig(base({
    clusters: [{ name: 'web', lbPolicy: 'nope', endpoints: ['127.0.0.1:8080'] }],
    routes: [{ action: { cluster: 'missing' } }],
  })));
  t.same(issues.map((i) => i.path), ['/clusters/0/lbPolicy', '/routes/0/action/cluster']);
  // two problems in one endpoint: both; an address of the wrong type: one complaint, not two
  const two = issuesOf(() => buildConfig(base({ clusters: [{ name: 'web', endpoints: [{ address: 'x', port: 80 }] }] })));
  t.same(two.map((i) => i.path), ['/clusters/0/endpoints/0/address', '/clusters/0/endpoints/0/port']);
  const one = issuesOf(() => buildConfig(base({ clusters: [{ name: 'web', endpoints: [{ address: 8080 }] }] })));
  t.same(one, [{ path: '/clusters/0/endpoints/0/address', message: 'must be string' }]);
});
