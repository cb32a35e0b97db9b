/**
 * routes[].fallback end to end: a request refused over a cluster limit, by an open breaker, or
 * for want of a healthy endpoint gets its route's fallback instead of the error. curl (HTTP/1.1
 * and HTTP/2) sees the configured status, headers and body; @grpc/grpc-js sees the configured
 * status and message; a dubbo-remoting consumer gets the configured value as a normal return (null,
 * a string, a number, a boolean, a map). A reason the route does not list gets the error as it is,
 * and a request that was not refused never sees the fallback.
 */
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { adminRequest, startSluice, stats } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { curl, loadEcho, unary } from './filter-peers';
import { dubboSwitchable, grpcSwitchable, httpSwitchable } from './protection-peers';

t.test('fallback on HTTP/1.1, HTTP/2, gRPC and Dubbo', async (t) => {
  const up = await httpSwitchable();
  const g = await grpcSwitchable();
  const d = await dubboSwitchable();
  t.teardown(async () => { up.close(); g.close(); await d.close(); });
  const closed = { maxRequests: 0 };
  const httpFallback = { http: { status: 200, headers: { 'content-type': 'application/json', 'x-degraded': 'yes' }, body: '{"items":[]}' } };
  const dubboRoute = (method: string, value: unknown) => ({ match: { protocol: 'dubbo', method }, action: { cluster: 'dubbo-closed' }, fallback: { dubbo: { value } } });
  const s = await startSluice({
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web', endpoints: [`127.0.0.1:${up.port}`] },
      { name: 'web-closed', endpoints: [`127.0.0.1:${up.port}`], circuitBreaker: closed },
      { name: 'web-empty', endpoints: [`127.0.0.1:${up.port}`] },
      { name: 'grpc-closed', endpoints: [`127.0.0.1:${g.port}`], circuitBreaker: closed },
      { name: 'dubbo-closed', endpoints: [`127.0.0.1:${d.port}`], circuitBreaker: closed },
      { name: 'dubbo', endpoints: [`127.0.0.1:${d.port}`] },
    ],
    routes: [
      { name: 'degraded', match: { path: { prefix: '/fb' } }, action: { cluster: 'web-closed' }, fallback: httpFallback },
      { name: 'only-open', match: { path: { prefix: '/only-open' } }, action: { cluster: 'web-closed' }, fallback: { on: ['circuit_open'], ...httpFallback } },
      { name: 'empty', match: { path: { prefix: '/empty' } }, action: { cluster: 'web-empty' }, fallback: { http: { status: 503, body: 'come back later\n' } } },
      { name: 'healthy', match: { path: { prefix: '/ok' } }, action: { cluster: 'web' }, fallback: httpFallback },
      { name: 'grpc', match: { protocol: 'grpc' }, action: { cluster: 'grpc-closed' }, fallback: { grpc: { status: 5, message: 'nothing here today' } } },
      dubboRoute('nullValue', null),
      dubboRoute('stringValue', 'degraded'),
      dubboRoute('numberValue', 42),
      dubboRoute('doubleValue', 2.5),
      dubboRoute('boolValue', true),
      dubboRoute('mapValue', { code: 0, items: [], note: 'degraded' }),
      { name: 'dubbo-http-only', match: { protocol: 'dubbo', method: 'httpOnly' }, action: { cluster: 'dubbo-closed' }, fallback: httpFallback },
      { match: { protocol: 'dubbo' }, action: { cluster: 'dubbo' } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;

  for (const h2 of [false, true]) {
    const r = await curl(`${base}/fb`, { h2 });
    const name = h2 ? 'HTTP/2' : 'HTTP/1.1';
    t.equal(r.status, 200, `${name}: the fallback's status`);
    t.equal(r.headers['content-type'], 'application/json', `${name}: its content-type`);
    t.equal(r.headers['x-degraded'], 'yes', `${name}: its header`);
    t.equal(r.headers['x-sluice-fallback'], 'overflow', `${name}: what it stands in for`);
    t.equal(r.body, '{"items":[]}', `${name}: its body`);
  }
  const notListed = await curl(`${base}/only-open`);
  t.equal(notListed.status, 503, 'a reason the route does not list: the error as it is');
  t.equal(notListed.headers['x-sluice-reason'], 'overflow');
  const ok = await curl(`${base}/ok`);
  t.equal(ok.status, 200);
  t.equal(ok.body, 'upstream 200\n', 'not refused: the upstream\'s answer');
  t.equal(ok.headers['x-sluice-fallback'], undefined);

  // no endpoint at all
  const put = await adminRequest(s.admin, 'PUT', '/clusters/web-empty/endpoints', JSON.stringify({ endpoints: [] }));
  t.equal(put.status, 200, put.body);
  const empty = await curl(`${base}/empty`);
  t.equal(empty.status, 503);
  t.equal(empty.body, 'come back later\n');
  t.equal(empty.headers['x-sluice-fallback'], 'no_healthy_upstream');

  const Echo = loadEcho();
  const client = new Echo(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const gr = await unary(client);
  t.equal(gr.status.code, 5, 'gRPC: the fallback\'s status');
  t.equal(gr.status.details, 'nothing here today', 'gRPC: its message');
  t.equal(g.hits, 0);

  const c = await Consumer.connect(s.port('app'));
  t.teardown(() => c.close());
  const answers = {
    nullValue: await c.call('nullValue', [str('a')]),
    stringValue: await c.call('stringValue', [str('a')]),
    numberValue: await c.call('numberValue', [str('a')]),
    doubleValue: await c.call('doubleValue', [str('a')]),
    boolValue: await c.call('boolValue', [str('a')]),
    mapValue: await c.call('mapValue', [str('a')]),
  };
  for (const [m, a] of Object.entries(answers)) {
    t.equal(a.status, 20, `Dubbo ${m}: an OK response`);
    t.equal(a.error, undefined, `Dubbo ${m}: no error`);
  }
  t.equal(answers.nullValue.value, null);
  t.equal(answers.stringValue.value, 'degraded');
  t.equal(answers.numberValue.value, 42);
  t.equal(answers.doubleValue.value, 2.5);
  t.equal(answers.boolValue.value, true);
  t.same(answers.mapValue.value, { code: 0, items: [], note: 'degraded' });
  const noDubbo = await c.call('httpOnly', [str('a')]);
  t.equal(noDubbo.status, 100, 'a fallback with nothing for Dubbo: the refusal (overflow: SERVER_THREADPOOL_EXHAUSTED)');
  const normal = await c.call('other', [str('a')]);
  t.equal(normal.value, 'up', 'a call that was not refused: the provider\'s answer');
  t.equal(d.hits, 1, 'only that one reached the provider');

  const st = await stats(s.admin);
  t.equal(st.get('sluice_fallback_total{route="degraded",reason="overflow"}'), 2);
  t.equal(st.get('sluice_fallback_total{route="empty",reason="no_healthy_upstream"}'), 1);
  t.equal(st.get('sluice_fallback_total{route="grpc",reason="overflow"}'), 1);
  t.equal(st.get('sluice_fallback_total{route="only-open",reason="circuit_open"}'), 0);
  t.equal(st.get('sluice_circuit_breaker_overflow_total{cluster="web-closed",limit="requests"}'), 3);
});

t.test('a rate limit\'s refusal gets the route\'s fallback; the rule still counts it', async (t) => {
  const up = await httpSwitchable();
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    // one request a minute: the second is refused
    rateLimits: [{ name: 'tight', match: { path: { prefix: '/limited' } }, requestsPerMinute: 1, burst: 1 }],
    routes: [
      { name: 'limited', match: { path: { prefix: '/limited' } }, action: { cluster: 'web' }, fallback: { http: { status: 200, body: 'cached answer\n' } } },
    ],
  });
  t.teardown(() => s.stop());
  const base = `http://127.0.0.1:${s.port('app')}`;
  const first = await curl(`${base}/limited`);
  t.not(first.headers['x-sluice-fallback'], 'rate_limited', 'the first request is admitted and proxied');
  const second = await curl(`${base}/limited`);
  t.equal(second.status, 200, 'refused by the limit: the fallback\'s status, not 429');
  t.equal(second.body, 'cached answer\n');
  t.equal(second.headers['x-sluice-fallback'], 'rate_limited');
  const m = await stats(s.admin);
  t.equal(m.get('sluice_ratelimit_refused_total{rule="tight"}'), 1, 'the refusal is counted by its rule');
  t.equal(m.get('sluice_fallback_total{route="limited",reason="rate_limited"}'), 1, 'and the fallback by its route');
});
