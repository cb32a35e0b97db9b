/**
 * The filters' config: the `filters` list and each filter's route sections (fault, split,
 * requestHeaders/responseHeaders). One test per rule that a bad value is refused with its path,
 * and that the good forms load.
 */
import t from 'tap';
import { type Doc, refuses } from '../helpers/config-issues';
import { buildConfig } from '../../src/config/config';
import { DEFAULT_FILTERS } from '../../src/filters';


function base(extra: Doc = {}): Doc {
  return {
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [
      { name: 'web', endpoints: ['127.0.0.1:8080'] },
      { name: 'orders', endpoints: [{ address: '127.0.0.1:8081', labels: { version: 'v1' } }, { address: '127.0.0.1:8082', labels: { version: 'v2' } }] },
    ],
    ...extra,
  };
}

/** One route with these sections (and an action of its own, or to web). */
const route = (r: Doc, extra: Doc = {}) => base({ routes: [{ action: { cluster: 'web' }, ...r }], ...extra });



t.test('filters: the default chain, names known, each once', async (t) => {
  t.same(DEFAULT_FILTERS, ['authz', 'ratelimit', 'adaptive', 'headers', 'fault', 'split', 'mirror', 'retry']);
  t.same(buildConfig(base()).filters, ['authz', 'ratelimit', 'adaptive', 'headers', 'fault', 'split', 'mirror', 'retry']);
  t.same(buildConfig(base({ filters: ['fault'] })).filters, ['fault']);
  t.same(buildConfig(base({ filters: [] })).filters, []);
  refuses(t, base({ filters: ['fault', 'nope'] }), '/filters/1', /must be one of authz, ratelimit, adaptive, headers, fault, split, mirror, retry/);
  refuses(t, base({ filters: ['fault', 'fault'] }), '/filters', /duplicate/);
  refuses(t, base({ filters: 'fault' }), '/filters', /must be array/);
});

t.test('fault: the good forms, defaults filled', async (t) => {
  const c = buildConfig(route({ fault: { abort: { status: 503, grpcStatus: 14, dubboStatus: 70 }, delay: { ms: 200, percent: 0.5 } } }));
  t.same((c.routes[0] as unknown as Doc).fault, { abort: { status: 503, percent: 100, grpcStatus: 14, dubboStatus: 70 }, delay: { ms: 200, percent: 0.5 } });
  t.ok(buildConfig(route({ fault: { delay: { ms: 1, percent: 0 } } })));
});

t.test('fault: refused values, each with its path', async (t) => {
  refuses(t, route({ fault: {} }), '/routes/0/fault', /must not be empty/);
  refuses(t, route({ fault: { abort: {} } }), '/routes/0/fault/abort/status', /is required/);
  refuses(t, route({ fault: { abort: { status: 199 } } }), '/routes/0/fault/abort/status', /must be >= 200/);
  refuses(t, route({ fault: { abort: { status: 600 } } }), '/routes/0/fault/abort/status', /must be <= 599/);
  refuses(t, route({ fault: { abort: { status: 503.5 } } }), '/routes/0/fault/abort/status', /must be integer/);
  refuses(t, route({ fault: { abort: { status: 503, percent: 100.1 } } }), '/routes/0/fault/abort/percent', /must be <= 100/);
  refuses(t, route({ fault: { abort: { status: 503, percent: -1 } } }), '/routes/0/fault/abort/percent', /must be >= 0/);
  refuses(t, route({ fault: { abort: { status: 503, percent: '10%' } } }), '/routes/0/fault/abort/percent', /must be number/);
  refuses(t, route({ fault: { abort: { status: 503, grpcStatus: 17 } } }), '/routes/0/fault/abort/grpcStatus', /must be <= 16/);
  refuses(t, route({ fault: { abort: { status: 503, grpcStatus: -1 } } }), '/routes/0/fault/abort/grpcStatus', /must be >= 0/);
  refuses(t, route({ fault: { abort: { status: 503, dubboStatus: 20 } } }), '/routes/0/fault/abort/dubboStatus', /must be one of 30, 31, 40/);
  refuses(t, route({ fault: { abort: { status: 503, dubboStatus: 41 } } }), '/routes/0/fault/abort/dubboStatus', /must be one of/);
  refuses(t, route({ fault: { abort: { status: 503, code: 1 } } }), '/routes/0/fault/abort/code', /is not a known field/);
  refuses(t, route({ fault: { delay: {} } }), '/routes/0/fault/delay/ms', /is required/);
  refuses(t, route({ fault: { delay: { ms: 0 } } }), '/routes/0/fault/delay/ms', /must be >= 1/);
  refuses(t, route({ fault: { delay: { ms: 86_400_001 } } }), '/routes/0/fault/delay/ms', /must be <= 86400000/);
  refuses(t, route({ fault: { delay: { ms: 10, percent: 101 } } }), '/routes/0/fault/delay/percent', /must be <= 100/);
  refuses(t, route({ fault: { latency: { ms: 10 } } }), '/routes/0/fault/latency', /is not a known field/);
});

const V1V2 = [{ cluster: 'orders', labels: { version: 'v1' }, weight: 90 }, { cluster: 'orders', labels: { version: 'v2' }, weight: 10 }];

t.test('split: the good forms', async (t) => {
  const c = buildConfig(route({ action: { split: V1V2, hashOn: { header: 'x-user' }, timeoutMs: 500 } }));
  t.same(c.routes[0].action, { split: V1V2, hashOn: { header: 'x-user' }, timeoutMs: 500 });
  t.ok(buildConfig(route({ action: { split: [{ cluster: 'web', weight: 1 }] } })), 'one entry, a whole cluster');
});

t.test('split: refused values, each with its path', async (t) => {
  refuses(t, route({ action: { cluster: 'web', split: V1V2 } }), '/routes/0/action', /exactly one of cluster, passthrough: true, directResponse, split \(has 2\)/);
  refuses(t, route({ action: { split: [] } }), '/routes/0/action/split', /fewer than 1 items/);
  refuses(t, route({ action: { split: { cluster: 'web', weight: 1 } } }), '/routes/0/action/split', /must be array/);
  refuses(t, route({ action: { split: [{ weight: 1 }] } }), '/routes/0/action/split/0/cluster', /is required/);
  refuses(t, route({ action: { split: [{ cluster: 'web' }] } }), '/routes/0/action/split/0/weight', /is required/);
  refuses(t, route({ action: { split: [V1V2[0], { ...V1V2[1], weight: 0 }] } }), '/routes/0/action/split/1/weight', /must be >= 1/);
  refuses(t, route({ action: { split: [V1V2[0], { ...V1V2[1], weight: -5 }] } }), '/routes/0/action/split/1/weight', /must be >= 1/);
  refuses(t, route({ action: { split: [{ ...V1V2[0], weight: 2.5 }] } }), '/routes/0/action/split/0/weight', /must be integer/);
  refuses(t, route({ action: { split: [{ cluster: 'nope', weight: 1 }] } }), '/routes/0/action/split/0/cluster', /unknown cluster "nope"/);
  refuses(t, route({ action: { split: [V1V2[0], { ...V1V2[1], labels: { version: 'v3' } }] } }), '/routes/0/action/split/1/labels', /no endpoint of cluster "orders" has these labels/);
  refuses(t, route({ action: { split: [{ cluster: 'web', weight: 1, zone: 'a' }] } }), '/routes/0/action/split/0/zone', /is not a known field/);
  refuses(t, route({ action: { split: V1V2, labels: { version: 'v1' } } }), '/routes/0/action/labels', /needs a cluster/);
  refuses(t, route({ action: { cluster: 'web', hashOn: { header: 'x-user' } } }), '/routes/0/action/hashOn', /needs split/);
  refuses(t, route({ action: { split: V1V2, hashOn: {} } }), '/routes/0/action/hashOn/header', /is required/);
  refuses(t, route({ action: { split: V1V2, hashOn: { header: 'x user' } } }), '/routes/0/action/hashOn/header', /is not a valid header name/);
  refuses(t, route({ action: { split: V1V2, hashOn: { header: 'x-user', cookie: 'u' } } }), '/routes/0/action/hashOn/cookie', /is not a known field/);
  refuses(t, route({ action: { split: V1V2 } }, { filters: ['headers', 'fault'] }), '/routes/0/action/split', /needs the split filter in filters/);
});

t.test('headers: the good forms', async (t) => {
  const c = buildConfig(route({
    requestHeaders: { set: { 'X-Env': 'prod', 'x-empty': '', 'x-spaced': 'a  b\tc' }, remove: ['x-debug'] },
    responseHeaders: { remove: ['server', 'x-powered-by'] },
  }));
  t.same((c.routes[0] as unknown as Doc).responseHeaders, { remove: ['server', 'x-powered-by'] });
});

t.test('headers: refused names and values, each with its path', async (t) => {
  for (const key of ['requestHeaders', 'responseHeaders']) {
    const p = `/routes/0/${key}`;
    refuses(t, route({ [key]: {} }), p, /must not be empty/);
    refuses(t, route({ [key]: { set: {} } }), `${p}/set`, /must not be empty/);
    refuses(t, route({ [key]: { remove: [] } }), `${p}/remove`, /fewer than 1 items/);
    refuses(t, route({ [key]: { add: { a: 'b' } } }), `${p}/add`, /is not a known field/);
    refuses(t, route({ [key]: { set: { 'x-n': 1 } } }), `${p}/set/x-n`, /must be string/);
    refuses(t, route({ [key]: { remove: [1] } }), `${p}/remove/0`, /must be string/);
    refuses(t, route({ [key]: { set: { 'bad name': 'v' } } }), `${p}/set/bad name`, /is not a valid header name/);
    refuses(t, route({ [key]: { set: { ':path': '/x' } } }), `${p}/set/:path`, /is not a valid header name/);
    refuses(t, route({ [key]: { set: { 'a/b': 'v' } } }), `${p}/set/a~1b`, /is not a valid header name/);
    refuses(t, route({ [key]: { remove: ['x-ok', 'x(bad)'] } }), `${p}/remove/1`, /is not a valid header name/);
    refuses(t, route({ [key]: { set: { Host: 'evil' } } }), `${p}/set/Host`, /host is written by Sluice and cannot be edited/);
    refuses(t, route({ [key]: { remove: ['Content-Length'] } }), `${p}/remove/0`, /content-length is written by Sluice/);
    for (const name of ['transfer-encoding', 'connection', 'keep-alive', 'te', 'upgrade', 'proxy-connection']) {
      refuses(t, route({ [key]: { set: { [name]: 'x' } } }), `${p}/set/${name}`, /is written by Sluice/);
    }
    for (const value of ['a\r\nx-injected: 1', 'a\nb', 'a\rb', 'a\u0000b', 'a\u0007b', ' lead', 'trail\t', 'caf\u00e9', 'a\u007fb']) {
      refuses(t, route({ [key]: { set: { 'x-v': value } } }), `${p}/set/x-v`, /printable ASCII without CR, LF, NUL/);
    }
    refuses(t, route({ [key]: { set: { 'X-A': '1', 'x-a': '2' } } }), `${p}/set/x-a`, /names the same header as set\/X-A/);
    refuses(t, route({ [key]: { set: { 'x-a': '1' }, remove: ['X-A'] } }), `${p}/remove/0`, /names the same header as set\/x-a/);
    refuses(t, route({ [key]: { remove: ['x-a', 'x-a'] } }), `${p}/remove/1`, /names the same header as remove\/0/);
  }
});
