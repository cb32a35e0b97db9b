/**
 * The retry policy a route compiles to, without sockets: which failures and answers it retries,
 * for which requests, its backoff, and its budget against counters in shared memory.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import type { RequestContext, RetryPolicy } from '../../../src/exchange/filter';
import type { RequestView } from '../../../src/exchange/request-view';
import { createRetry } from '../../../src/filters/retry';
import { SharedState } from '../../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../../src/stats/stats';
import { ClusterRuntime } from '../../../src/upstream/cluster';

function setup(retry: Record<string, unknown>, random = () => 0.5) {
  const config = buildConfig({
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: ['127.0.0.1:8080', '127.0.0.1:8081'] }],
    routes: [{ name: 'r', match: {}, action: { cluster: 'c' }, retry }],
  });
  const registry = new StatsRegistry();
  registry.addCluster('c');
  const stats = new Stats(new SharedState(), registry.keys);
  const cluster = new ClusterRuntime(config.clusters[0], stats);
  const filter = createRetry({ config: config as unknown as Record<string, unknown>, stats, clusters: new Map([['c', cluster]]), random });
  const state = filter.compileRoute!(config.routes[0] as unknown as Record<string, unknown>, 'r')!;
  const policyFor = (protocol: RequestView['protocol'], method: string): RetryPolicy => {
    let p: RetryPolicy | null = null;
    const ctx = { view: { protocol, method } as RequestView, setRetryPolicy: (x: RetryPolicy) => { p = x; } } as unknown as RequestContext;
    filter.onRequest!(ctx, state);
    return p!;
  };
  return { stats, cluster, policyFor };
}

t.test('what `on` retries', async (t) => {
  const { policyFor } = setup({ on: ['connect-failure', 'refused-stream', 'reset', 'timeout', '5xx', 'unavailable', 409], attempts: 3 });
  const p = policyFor('http1', 'GET');
  t.equal(p.retries, 3);
  for (const k of ['connect_failed', 'dns_failed', 'refused', 'reset', 'stale', 'timeout'] as const) t.ok(p.retryOn(k), k);
  t.notOk(p.retryOn('overflow'));
  t.ok(p.retryOnStatus(500, -1));
  t.ok(p.retryOnStatus(503, -1));
  t.ok(p.retryOnStatus(409, -1), 'a status given as a number');
  t.notOk(p.retryOnStatus(404, -1));
  t.ok(p.retryOnStatus(200, 14), 'gRPC UNAVAILABLE');
  t.notOk(p.retryOnStatus(200, 13), 'gRPC INTERNAL not listed');
  t.notOk(p.retryOnStatus(200, 0));
  const g = setup({ on: ['gateway-error'] }).policyFor('http1', 'GET');
  t.same([502, 503, 504, 500].map((s) => g.retryOnStatus(s, -1)), [true, true, true, false]);
  t.equal(g.retries, 1, 'one retry by default');
});

t.test('only requests that can be repeated are retried after they were sent', async (t) => {
  const { policyFor } = setup({ on: ['reset', '503'] });
  t.equal(policyFor('http1', 'GET').neverSentOnly, false, 'GET');
  t.equal(policyFor('http2', 'PUT').neverSentOnly, false, 'PUT');
  const post = policyFor('http1', 'POST');
  t.equal(post.neverSentOnly, true, 'POST: only what never left');
  t.notOk(post.retryOnStatus(503, -1), 'a POST answered 503 is not sent again');
  t.equal(policyFor('grpc', 'Unary').neverSentOnly, true, 'gRPC calls are POSTs');
  t.equal(policyFor('dubbo', 'transfer').neverSentOnly, true, 'Dubbo calls are not retried after they were sent');
  const idem = setup({ on: ['reset', 'timeout'], idempotent: true }).policyFor;
  t.equal(idem('dubbo', 'transfer').neverSentOnly, false, 'unless the route says the call is idempotent');
  t.equal(idem('http1', 'POST').neverSentOnly, false);
});

t.test('backoff: full jitter under base * 2^(n-2), capped', async (t) => {
  let r = 0.999;
  const { policyFor } = setup({ on: ['reset'], attempts: 5, backoff: { baseMs: 10, maxMs: 50 } }, () => r);
  const p = policyFor('http1', 'GET');
  t.same([2, 3, 4, 5, 6].map((n) => p.backoffMs(n)), [9, 19, 39, 49, 49], 'just under the cap of each attempt');
  r = 0;
  t.same([2, 3, 4].map((n) => p.backoffMs(n)), [0, 0, 0], 'the jitter reaches 0');
  const none = setup({ on: ['reset'], backoff: { baseMs: 0 } }).policyFor('http1', 'GET');
  t.equal(none.backoffMs(2), 0);
});

t.test('the budget: retries in flight under a share of the requests in flight, counted in shared memory', async (t) => {
  const { stats, cluster, policyFor } = setup({ on: ['reset'], budget: { percent: 50, minConcurrency: 1 } });
  const p = policyFor('http1', 'GET');
  const s = cluster.stats;
  t.ok(p.admit(cluster), 'nothing retrying: the minimum admits one');
  stats.inc(s.rqRetryActive);
  t.notOk(p.admit(cluster), 'one retrying, nothing in flight: the minimum is used up');
  for (let i = 0; i < 4; i++) stats.inc(s.rqActive);
  t.ok(p.admit(cluster), '4 in flight: 50% allows 2');
  stats.inc(s.rqRetryActive);
  t.notOk(p.admit(cluster), '2 retrying of 4');
  t.equal(stats.get(stats.slot('sluice_retry_budget_exhausted_total', { cluster: 'c' })), 2, 'each refusal counted');
  t.notOk(p.admit(null), 'no cluster: no retry');
});

t.test('config: bad values are refused with their path', async (t) => {
  const refuse = (retry: unknown, path: string, msg: RegExp) => {
    t.match(errorOf(() => buildConfig({
      listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'c' }],
      clusters: [{ name: 'c', endpoints: ['127.0.0.1:8080'] }],
      routes: [{ match: {}, action: { cluster: 'c' }, retry }],
    })), { message: new RegExp(`${path}[\\s\\S]*${msg.source}`) }, path);
  };
  refuse({ on: [] }, '/routes/0/retry/on', /must NOT have fewer than 1 items/);
  refuse({ on: ['sometimes'] }, '/routes/0/retry/on/0', /must/);
  refuse({ on: ['reset'], attempts: 0 }, '/routes/0/retry/attempts', />= 1/);
  refuse({ on: ['reset'], attempts: 11 }, '/routes/0/retry/attempts', /<= 10/);
  refuse({ on: ['reset'], perTryTimeoutMs: 0 }, '/routes/0/retry/perTryTimeoutMs', />= 1/);
  refuse({ on: ['reset'], budget: { percent: 120 } }, '/routes/0/retry/budget/percent', /<= 100/);
  refuse({ attempts: 2 }, '/routes/0/retry/on', /is required/);
  refuse({ on: ['reset'], bogus: 1 }, '/routes/0/retry/bogus', /not a known field/);
});

function errorOf(fn: () => unknown): Error | undefined {
  try { fn(); } catch (e) { return e as Error; }
  return undefined;
}
