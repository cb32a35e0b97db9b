/**
 * The adaptive filter on a fake request context: calls counted against their interface's row,
 * refused with OVERLOADED once the interface's calls in flight reach its limit (a fraction as a
 * probability), shadow mode counting the same and letting through, outbound calls untouched,
 * critical and shedFirst classes written to the table, a dead worker's calls in flight released, and
 * the config checks with their paths.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import { CONTINUE, STOP, type Completion } from '../../../src/exchange/filter';
import type { RequestView } from '../../../src/exchange/request-view';
import { createFilters } from '../../../src/filters';
import { AdaptiveFilter } from '../../../src/filters/adaptive/adaptive-filter';
import {
  CLASS_CRITICAL, CLASS_NORMAL, CLASS_SHED_FIRST, COUNTS, C_ARRIVED, C_COMPLETED, C_LATENCY_US, C_REFUSED, C_SHADOW_REFUSED, InterfaceTable,
} from '../../../src/filters/adaptive/interface-table';
import { SharedState } from '../../../src/shared/shared-state';
import { Stats } from '../../../src/stats/stats';
import { FakeContext, envFor, scripted, view } from '../fake-context';

function setup(adaptiveLimit: Record<string, unknown>, random: () => number = () => 0.99) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    adaptiveLimit: { enabled: true, ...adaptiveLimit },
  });
  const env = envFor(config, random);
  const filter = createFilters(config.filters, env).find((f) => f.name === 'adaptive') as AdaptiveFilter;
  const table = new InterfaceTable(env.stats.memory);
  return { filter, env, table };
}

const inbound = (path: string, extra: Partial<RequestView> = {}): RequestView => ({ ...view('http1'), direction: 'inbound', path, ...extra });
const done = (v: RequestView, durationMs: number): Completion => ({
  view: v, routeName: null, outcome: 'success', status: 200, grpcStatus: -1, durationMs, bytesIn: 0, bytesOut: 0,
  endpoint: undefined, cluster: null, attempts: 1, reason: undefined,
});

t.test('admitted under the limit, refused at it: OVERLOADED, counted, noted', async (t) => {
  const { filter, env, table } = setup({});
  const a = inbound('/costly');
  t.equal(filter.onRequest(new FakeContext(a)), CONTINUE, 'no limit yet');
  const row = table.rowOf('GET /costly', CLASS_NORMAL, 64);
  t.equal(table.nameOf(row), 'GET /costly');
  t.equal(Atomics.load(table.inflight, row), 1);
  table.setLimit(row, 1);
  const b = new FakeContext(inbound('/costly'));
  t.equal(filter.onRequest(b), STOP);
  t.same(b.replies, [{ status: 503, reason: 'overloaded', body: 'overloaded\n', grpcStatus: 8, dubboStatus: 100 }]);
  t.same(b.notes, { adaptive: 'overloaded' });
  t.equal(Atomics.load(table.inflight, row), 1, 'a refused call is not in flight');
  t.equal(env.value('sluice_adaptive_refused_total'), 1);
  filter.onComplete(done(b.view, 0)); // a refused call completes too: nothing to undo
  filter.onComplete(done(a, 12.5));
  t.equal(Atomics.load(table.inflight, row), 0);
  t.equal(table.count(row, C_ARRIVED), 2);
  t.equal(table.count(row, C_REFUSED), 1);
  t.equal(table.count(row, C_COMPLETED), 1);
  t.equal(table.count(row, C_LATENCY_US), 12500);
  t.equal(filter.onRequest(new FakeContext(inbound('/costly'))), CONTINUE, 'room again');
  const cheap = new FakeContext(inbound('/cheap'));
  t.equal(filter.onRequest(cheap), CONTINUE, 'another interface has its own limit');
});

t.test('a limit with a fraction admits the next call with that probability; 0 admits none', async (t) => {
  const { filter, table } = setup({}, scripted(0.3, 0.5, 0.1));
  const row = table.rowOf('GET /x', CLASS_NORMAL, 64);
  table.setLimit(row, 0.4);
  t.equal(filter.onRequest(new FakeContext(inbound('/x'))), CONTINUE, '0.3 < 0.4');
  t.equal(filter.onRequest(new FakeContext(inbound('/x'))), STOP, 'one in flight: over 0.4 whatever the draw');
  table.setLimit(row, 0);
  t.equal(filter.onRequest(new FakeContext(inbound('/y'))), CONTINUE);
  const y = table.rowOf('GET /y', CLASS_NORMAL, 64);
  Atomics.store(table.inflight, y, 0);
  table.setLimit(y, 0);
  t.equal(filter.onRequest(new FakeContext(inbound('/y'))), STOP, 'limit 0: shed entirely');
});

t.test('shadow mode: counted as refused, let through, in flight, logged once a second', async (t) => {
  const { filter, env, table } = setup({ mode: 'shadow' });
  const lines: Array<Record<string, unknown>> = [];
  (filter as unknown as { shadowLog: (f: Record<string, unknown>) => void }).shadowLog = (f) => lines.push(f);
  const row = table.rowOf('GET /s', CLASS_NORMAL, 64);
  table.setLimit(row, 0);
  for (let i = 0; i < 3; i++) {
    const ctx = new FakeContext(inbound('/s'));
    t.equal(filter.onRequest(ctx), CONTINUE);
    t.same(ctx.notes, { adaptive: 'shadow_overloaded' });
  }
  t.equal(Atomics.load(table.inflight, row), 3);
  t.equal(table.count(row, C_SHADOW_REFUSED), 3);
  t.equal(env.value('sluice_adaptive_shadow_refused_total'), 3);
  t.equal(env.value('sluice_adaptive_refused_total'), 0);
  t.equal(lines.length, 1, 'sampled');
  t.match(lines[0], { interface: 'GET /s', requests: 1, limit: 0 });
});

t.test('outbound calls are not limited unless directions says so', async (t) => {
  const { filter, table } = setup({});
  const before = table.rows().length;
  t.equal(filter.onRequest(new FakeContext({ ...view('http1'), path: '/out' })), CONTINUE);
  t.equal(table.rows().length, before, 'no row for an outbound call');
  const both = setup({ directions: ['inbound', 'outbound'] });
  both.filter.onRequest(new FakeContext({ ...view('http1'), path: '/out' }));
  t.ok(both.table.nameOf(both.table.rowOf('GET /out', CLASS_NORMAL, 64)));
});

t.test('interfaces: gRPC and Dubbo by service/method, classes from critical and shedFirst', async (t) => {
  const { filter, table } = setup({
    critical: [{ path: { prefix: '/pay' } }, { protocol: 'dubbo', service: 'com.example.Pay' }],
    shedFirst: [{ method: 'report' }],
  });
  filter.onRequest(new FakeContext(inbound('/pay/now')));
  filter.onRequest(new FakeContext(inbound('/x', { protocol: 'dubbo', service: 'com.example.Pay', method: 'charge' })));
  filter.onRequest(new FakeContext(inbound('/y', { protocol: 'grpc', service: 'pkg.Reports', method: 'report' })));
  t.equal(table.classOf(table.rowOf('GET /pay/now', 0, 64)), CLASS_CRITICAL);
  t.equal(table.classOf(table.rowOf('com.example.Pay/charge', 0, 64)), CLASS_CRITICAL);
  t.equal(table.classOf(table.rowOf('pkg.Reports/report', 0, 64)), CLASS_SHED_FIRST);
});

t.test('interfaces beyond maxInterfaces share the row "other"', async (t) => {
  const { filter, table } = setup({ maxInterfaces: 2 });
  for (const p of ['/a', '/b', '/c', '/d']) filter.onRequest(new FakeContext(inbound(p)));
  const names = table.rows().map((r) => table.nameOf(r)).sort();
  t.same(names, ['GET /a', 'GET /b', 'other']);
  t.equal(table.count(0, C_ARRIVED), 2);
});

t.test('disabled: a filter in no chain', async (t) => {
  const config = buildConfig({ admin: { address: '127.0.0.1:0' }, listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }], clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }] });
  const f = createFilters(config.filters, envFor(config)).find((x) => x.name === 'adaptive')!;
  t.notOk(f.global);
  t.notOk(f.onRequest);
  t.same(config.adaptiveLimit, {
    enabled: false, mode: 'enforce', targetUtilization: 0.8, hysteresis: 0.05, intervalMs: 200, smoothing: 0.5, maxStepDown: 0.5, maxStepUp: 0.25,
    latencyTolerance: 3, latencyBufferMs: 2, criticalMinLimit: 1, maxInterfaces: 64, directions: ['inbound'], cpu: { cgroup: '/sys/fs/cgroup' },
    critical: [], shedFirst: [],
  }, 'the defaults');
});

t.test('bad config: every field refused with its path', async (t) => {
  const base = { admin: { address: '127.0.0.1:0' }, listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }], clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }] };
  const refused = (adaptiveLimit: unknown, extra: Record<string, unknown> = {}) => {
    try { buildConfig({ ...base, adaptiveLimit, ...extra }); return ''; } catch (err) { return (err as Error).message; }
  };
  t.match(refused({ mode: 'block' }), '/adaptiveLimit/mode');
  t.match(refused({ targetUtilization: 1.5 }), '/adaptiveLimit/targetUtilization');
  t.match(refused({ targetUtilization: 0 }), '/adaptiveLimit/targetUtilization');
  t.match(refused({ intervalMs: 10 }), '/adaptiveLimit/intervalMs');
  t.match(refused({ maxInterfaces: 1000 }), '/adaptiveLimit/maxInterfaces');
  t.match(refused({ latencyTolerance: 0.5 }), '/adaptiveLimit/latencyTolerance');
  t.match(refused({ cpu: { cores: 0 } }), '/adaptiveLimit/cpu/cores');
  t.match(refused({ cpu: { cgroup: 'relative/dir' } }), '/adaptiveLimit/cpu/cgroup');
  t.match(refused({ hysteresis: 0.3, targetUtilization: 0.2 }), '/adaptiveLimit/hysteresis');
  t.match(refused({ critical: [{ path: { regex: '(' } }] }), '/adaptiveLimit/critical/0/path');
  t.match(refused({ shedFirst: [{ listener: 'nope' }] }), '/adaptiveLimit/shedFirst/0/listener');
  t.match(refused({ critical: [{ headers: { a: 'b' } }] }), '/adaptiveLimit/critical/0');
  t.match(refused({ critical: [{}] }), '/adaptiveLimit/critical/0');
  t.match(refused({ surprise: 1 }), '/adaptiveLimit');
  t.match(refused({ enabled: true }, { filters: ['authz'] }), '/adaptiveLimit/enabled');
  t.equal(refused({ enabled: true, critical: [{ path: { prefix: '/pay' } }] }), '');
});

t.test('a worker that dies with calls in flight: its share leaves the in-flight count', async (t) => {
  const { env } = setup({});
  const config = env.config as unknown as { adaptiveLimit: Record<string, unknown> };
  const shared = new SharedState(env.stats.memory);
  const worker = new Stats(shared, [], 3);
  const filter = createFilters(['adaptive'], { config: config as unknown as Record<string, unknown>, stats: worker, clusters: new Map(), random: () => 0.99 })[0] as AdaptiveFilter;
  const table = new InterfaceTable(env.stats.memory);
  const a = inbound('/held');
  const b = inbound('/held');
  filter.onRequest(new FakeContext(a));
  filter.onRequest(new FakeContext(b));
  filter.onComplete(done(a, 1));
  const row = table.rowOf('GET /held', CLASS_NORMAL, 64);
  t.equal(Atomics.load(table.inflight, row), 1);
  table.releaseShares(2);
  t.equal(Atomics.load(table.inflight, row), 1, 'another worker\'s row: nothing changes');
  table.releaseShares(3);
  t.equal(Atomics.load(table.inflight, row), 0, 'the dead worker\'s call is no longer in flight');
});
