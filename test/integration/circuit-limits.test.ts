/**
 * Cluster limits (clusters[].circuitBreaker) end to end with real clients and upstreams: maxRequests
 * holds across 4 workers (the 6th concurrent request of a cluster with maxRequests 5 is refused and
 * counted), a worker that dies gives its places back, maxConnections makes HTTP/1.1 requests wait
 * for a connection, maxRetries stops retries.
 */
import t from 'tap';
import { startSluice, stats, waitFor } from '../helpers/harness';
import { curl } from './filter-peers';
import { httpSwitchable, protection, sleep } from './protection-peers';

t.test('maxRequests holds across 4 workers: the 6th concurrent request is refused with overflow and counted', async (t) => {
  const up = await httpSwitchable();
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 4 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'slow' }],
    clusters: [{ name: 'slow', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { maxRequests: 5 } }],
  });
  t.teardown(() => s.stop());
  const url = `http://127.0.0.1:${s.port('app')}/`;
  up.mode = 'hold';
  // five requests, each on a connection of its own: the dispatcher spreads them over the workers
  const first = Array.from({ length: 5 }, () => curl(url, { maxTime: 20 }));
  await waitFor(() => up.held === 5, 10_000, 'five requests held by the upstream');
  const inUse = (await protection(s.admin)).clusterLimits.find((c) => c.cluster === 'slow')!.requests;
  t.same(inUse, { max: 5, inUse: 5 }, '/protection: five of five requests in use');
  const sixth = await curl(url, { maxTime: 10 });
  t.equal(sixth.status, 503, 'the 6th is refused');
  t.equal(sixth.headers['x-sluice-reason'], 'overflow');
  t.equal(up.hits, 5, 'the 6th never reached the upstream');
  up.mode = 'ok';
  up.release();
  const done = await Promise.all(first);
  t.same(done.map((r) => r.status), [200, 200, 200, 200, 200], 'the five held ones complete');
  const after = await curl(url, { maxTime: 10 });
  t.equal(after.status, 200, 'with the requests done, a new one passes');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_circuit_breaker_overflow_total{cluster="slow",limit="requests"}'), 1, 'one overflow counted');
  const back = (await protection(s.admin)).clusterLimits.find((c) => c.cluster === 'slow')!.requests;
  t.same(back, { max: 5, inUse: 0 }, 'every request gave its place back');
});

t.test('a worker that dies holding requests gives its places back', async (t) => {
  const up = await httpSwitchable();
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'slow' }],
    clusters: [{ name: 'slow', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { maxRequests: 2 } }],
  });
  t.teardown(() => s.stop());
  const url = `http://127.0.0.1:${s.port('app')}/`;
  up.mode = 'hold';
  const held = [curl(url, { maxTime: 20 }), curl(url, { maxTime: 20 })];
  await waitFor(() => up.held === 2, 10_000, 'two requests held');
  t.equal((await curl(url, { maxTime: 10 })).headers['x-sluice-reason'], 'overflow', 'full');
  t.ok(s.sluice.killWorker());
  const gone = await Promise.all(held);
  t.ok(gone.every((r) => r.status !== 200), 'the held requests died with their worker');
  await waitFor(async () => (await protection(s.admin)).clusterLimits[0].requests.inUse === 0, 10_000, 'the dead worker\'s places back');
  up.mode = 'ok';
  up.release();
  const r = await waitFor(async () => { const x = await curl(url, { maxTime: 10 }); return x.status === 200 ? x : null; }, 10_000, 'a request through the new worker');
  t.equal(r.status, 200);
});

t.test('maxConnections bounds HTTP/1.1 connections (requests wait for one); maxRetries 0 stops retries and counts them', async (t) => {
  const up = await httpSwitchable();
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'narrow', protocol: 'http1', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { maxConnections: 2 } },
      { name: 'noretry', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: { maxRetries: 0 } },
    ],
    routes: [
      { match: { path: { prefix: '/retry' } }, action: { cluster: 'noretry' }, retry: { on: ['5xx'], attempts: 2, backoff: { baseMs: 0 } } },
      { match: {}, action: { cluster: 'narrow' } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  up.mode = 'hold';
  const four = Array.from({ length: 4 }, () => curl(`${base}/x`, { maxTime: 20 }));
  await waitFor(() => up.held === 2, 10_000, 'two requests at the upstream');
  await sleep(300);
  t.equal(up.held, 2, 'the other two wait for a connection');
  t.match((await protection(s.admin)).clusterLimits.find((c) => c.cluster === 'narrow'), { connections: { max: 2, inUse: 2 } }, '/protection: two of two connections');
  t.equal(up.connections, 2);
  up.mode = 'ok';
  up.release();
  t.same((await Promise.all(four)).map((r) => r.status), [200, 200, 200, 200], 'all four served');
  t.equal(up.connections, 2, 'over the two connections');

  up.mode = 'fail';
  const hits = up.hits;
  const r = await curl(`${base}/retry`);
  t.equal(r.status, 503);
  t.equal(up.hits, hits + 1, 'no retry');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_circuit_breaker_overflow_total{cluster="noretry",limit="retries"}'), 1);
  t.equal(st.get('sluice_circuit_breaker_overflow_total{cluster="narrow",limit="connections"}'), 0, 'waiting for a connection is no overflow');
});
