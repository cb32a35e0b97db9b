import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { SharedState } from '../../src/shared/shared-state';
import { DURATION_BUCKETS, grpcStatusIn, httpStatusOfGrpc, Stats, StatsRegistry } from '../../src/stats/stats';
import { parseStats as parse, run } from '../helpers/harness';

t.test('a histogram lives in shared slots: observations of every thread add up', async (t) => {
  const shared = new SharedState();
  const registry = new StatsRegistry();
  // two workers, each with its own gauge row, and the main thread
  const a = new Stats(new SharedState(shared.handle), registry.keys, 0);
  const b = new Stats(new SharedState(shared.handle), registry.keys, 1);
  a.requestDone('http1', 0.0003, 100, 1000);
  a.requestDone('http1', 0.003, 0, 0);
  b.requestDone('http1', 0.7, 50, 7);
  b.requestDone('http1', 100, 0, 0); // above the last bound
  b.requestDone('grpc', 0.02, 9, 14);
  const m = parse(registry.render(shared));
  const h = (le: string) => m.get(`sluice_downstream_rq_duration_seconds_bucket{protocol="http1",le="${le}"}`);
  t.equal(h('0.0005'), 1, '0.3 ms in the first bucket');
  t.equal(h('0.0025'), 1);
  t.equal(h('0.005'), 2, 'buckets are cumulative');
  t.equal(h('0.5'), 2, '0.7 s is above 0.5');
  t.equal(h('1'), 3);
  t.equal(h('60'), 3, '100 s is above the last bound');
  t.equal(h('+Inf'), 4);
  t.equal(m.get('sluice_downstream_rq_duration_seconds_count{protocol="http1"}'), 4, '_count is the +Inf bucket');
  t.equal(m.get('sluice_downstream_rq_duration_seconds_sum{protocol="http1"}'), 100.7033, 'the sum in seconds');
  t.equal(m.get('sluice_downstream_rq_rx_bytes_total{protocol="http1"}'), 150);
  t.equal(m.get('sluice_downstream_rq_tx_bytes_total{protocol="http1"}'), 1007);
  t.equal(m.get('sluice_downstream_rq_duration_seconds_count{protocol="grpc"}'), 1);
  t.equal(m.get('sluice_downstream_rq_duration_seconds_count{protocol="dubbo"}'), 0);
  t.equal([...m.keys()].filter((k) => k.startsWith('sluice_downstream_rq_duration_seconds_bucket{protocol="http1"')).length, DURATION_BUCKETS.length + 1);
});

t.test('64-bit slots added through their 32-bit words: carries, borrows and values past an int32 are exact', async (t) => {
  const shared = new SharedState();
  const registry = new StatsRegistry();
  registry.addCluster('c');
  const a = new Stats(new SharedState(shared.handle), registry.keys, 0);
  const b = new Stats(new SharedState(shared.handle), registry.keys, 1);
  const main = new Stats(shared, registry.keys);
  const total = main.slot('sluice_upstream_rq_total', { cluster: 'c' });
  main.set(total, 2 ** 32 - 2);
  a.inc(total);
  b.inc(total); // the low word wraps: the carry goes to the high word
  a.add(total, 2 ** 31 - 1);
  t.equal(main.get(total), 2 ** 32 + 2 ** 31 - 1, 'carried into the high word');
  b.add(total, 5 * 2 ** 32 + 3); // past an int32: the BigInt path
  t.equal(main.get(total), 6 * 2 ** 32 + 2 ** 31 + 2);
  const active = main.slot('sluice_upstream_rq_active', { cluster: 'c' });
  a.dec(active); // a gauge share below zero: a borrow from the high word
  a.dec(active);
  b.inc(active);
  t.equal(main.get(active), -1, 'a gauge summed over rows, one of them negative');
  for (let i = 0; i < 3; i++) a.inc(active);
  t.equal(main.get(active), 2, 'back above zero: the borrow is given back');
  const m = parse(registry.render(shared));
  t.equal(m.get('sluice_upstream_rq_total{cluster="c"}'), 6 * 2 ** 32 + 2 ** 31 + 2, '/stats shows the same');
  t.equal(m.get('sluice_upstream_rq_active{cluster="c"}'), 2);
  const sum = main.slot('sluice_downstream_rq_duration_seconds_sum', { protocol: 'dubbo' });
  main.set(sum, 2 ** 32 - 1);
  a.requestDone('dubbo', 0.000002, 0, 0); // 2 µs: the sum's low word wraps
  a.requestDone('dubbo', 3000, 0, 0); // 3e9 µs does not fit an int32
  t.equal(main.get(sum), 2 ** 32 + 1 + 3e9, 'the histogram sum, in µs, past 2^32');
});

t.test('a histogram is a run of consecutive slots: its buckets, +Inf, then the sum', async (t) => {
  const registry = new StatsRegistry();
  const base = registry.keys.indexOf('sluice_downstream_rq_duration_seconds_bucket{protocol="http2",le="0.0005"}');
  t.ok(base >= 0);
  t.equal(registry.keys[base + DURATION_BUCKETS.length], 'sluice_downstream_rq_duration_seconds_bucket{protocol="http2",le="+Inf"}');
  t.equal(registry.keys[base + DURATION_BUCKETS.length + 1], 'sluice_downstream_rq_duration_seconds_sum{protocol="http2"}');
  const shared = new SharedState();
  const s = new Stats(shared, registry.keys);
  t.equal(s.histogram('sluice_downstream_rq_duration_seconds', { protocol: 'http2' }).base, base);
  t.equal(s.histogram('sluice_no_such_thing', { protocol: 'http2' }).base, -1, 'unknown: a histogram that ignores observations');
  s.histogram('sluice_no_such_thing').observe(1);
});

t.test('gRPC statuses: counted by code, charged to HTTP classes as Envoy maps them', async (t) => {
  const shared = new SharedState();
  const registry = new StatsRegistry();
  const s = new Stats(shared, registry.keys, 0);
  s.grpcStatus(0);
  s.grpcStatus(14);
  s.grpcStatus(14);
  s.grpcStatus(99); // no such code: UNKNOWN
  const m = parse(registry.render(shared));
  t.equal(m.get('sluice_downstream_rq_grpc_status_total{grpc_status="0"}'), 1);
  t.equal(m.get('sluice_downstream_rq_grpc_status_total{grpc_status="14"}'), 2);
  t.equal(m.get('sluice_downstream_rq_grpc_status_total{grpc_status="2"}'), 1);
  t.same([0, 1, 2, 4, 5, 8, 12, 13, 14, 16].map(httpStatusOfGrpc), [200, 499, 500, 504, 404, 429, 501, 500, 503, 401]);
  t.equal(grpcStatusIn(['content-type', 'application/grpc', 'grpc-status', '5', 'grpc-message', 'x']), 5);
  t.equal(grpcStatusIn(['Grpc-Status', '0']), 0, 'HTTP/1 trailers keep their case');
  t.equal(grpcStatusIn(['grpc-status', 'OK']), 2, 'not a number: UNKNOWN');
  t.equal(grpcStatusIn(['grpc-status', '17']), 2, 'beyond 16: UNKNOWN');
  t.equal(grpcStatusIn(['grpc-message', 'x']), -1);
  t.equal(grpcStatusIn(null), -1);
});

t.test('the exposition of every family passes promtool check metrics', async (t) => {
  const shared = new SharedState();
  const registry = new StatsRegistry();
  registry.addListener('app');
  registry.addCluster('web');
  const s = new Stats(shared, registry.keys, 0);
  s.requestDone('http2', 0.01, 10, 10);
  s.grpcStatus(3);
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-stats-')), 'stats.txt');
  const text = registry.render(shared);
  writeFileSync(file, text);
  const r = await run('sh', ['-c', `promtool check metrics < '${file}'`]);
  t.equal(r.stdout + r.stderr, '', 'no lint problems');
  t.equal(r.code, 0);
  t.match(text, '# TYPE sluice_downstream_rq_duration_seconds histogram\n');
  t.match(text, '# TYPE sluice_log_lines_dropped_total counter\nsluice_log_lines_dropped_total{log="access"} 0\nsluice_log_lines_dropped_total{log="process"} 0\n');
});
