/**
 * The fault filter end to end, with real clients: an abort as each protocol renders it (HTTP/1
 * and HTTP/2 status with x-sluice-reason, a gRPC status mapped or given, a Dubbo status byte
 * mapped or given), a delay (the answer comes from the upstream, no sooner than the delay; no
 * upper bound is asserted), a client that leaves during a delay (the request ends there, nothing
 * reaches the upstream),
 * the counters by route and the access log's note.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { run, startSluice, stats, waitFor } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { curl, dubboVersioned, grpcVersioned, h2Versioned, http1Versioned, loadEcho, parseDubbo, unary } from './filter-peers';

const DELAY = 300;

t.test('fault: abort and delay on HTTP/1, HTTP/2, gRPC and Dubbo', async (t) => {
  const h1 = await http1Versioned('h1');
  const h2 = await h2Versioned('h2');
  const g = await grpcVersioned('g');
  const d = await dubboVersioned('d');
  let h1Requests = 0;
  h1.server.on('request', () => { h1Requests++; });
  let h2Requests = 0;
  h2.server.on('stream', () => { h2Requests++; });
  const log = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-fault-')), 'access.log');
  const abort503 = { abort: { status: 503, percent: 100 } };
  const delay = { delay: { ms: DELAY, percent: 100 } };
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web1', endpoints: [`127.0.0.1:${h1.port}`] },
      { name: 'web2', endpoints: [`127.0.0.1:${h2.port}`] },
      { name: 'grpc', endpoints: [`127.0.0.1:${g.port}`] },
      { name: 'dubbo', endpoints: [`127.0.0.1:${d.port}`] },
    ],
    routes: [
      { name: 'h1-abort', match: { protocol: 'http1', path: { prefix: '/abort' } }, action: { cluster: 'web1' }, fault: abort503 },
      { name: 'h1-delay', match: { protocol: 'http1', path: { prefix: '/delay' } }, action: { cluster: 'web1' }, fault: delay },
      { name: 'h1-both', match: { protocol: 'http1', path: { prefix: '/both' } }, action: { cluster: 'web1' }, fault: { delay: { ms: DELAY }, abort: { status: 500 } } },
      { name: 'h1-never', match: { protocol: 'http1', path: { prefix: '/never' } }, action: { cluster: 'web1' }, fault: { abort: { status: 503, percent: 0 } } },
      { name: 'h2-abort', match: { protocol: 'http2', path: { prefix: '/abort' } }, action: { cluster: 'web2' }, fault: { abort: { status: 429 } } },
      { name: 'h2-delay', match: { protocol: 'http2', path: { prefix: '/delay' } }, action: { cluster: 'web2' }, fault: delay },
      { name: 'h2-gone', match: { protocol: 'http2', path: { prefix: '/gone' } }, action: { cluster: 'web2' }, fault: { delay: { ms: 1500 } } },
      { name: 'grpc-abort', match: { protocol: 'grpc', headers: { 'x-fault': 'abort' } }, action: { cluster: 'grpc' }, fault: abort503 },
      { name: 'grpc-code', match: { protocol: 'grpc', headers: { 'x-fault': 'code' } }, action: { cluster: 'grpc' }, fault: { abort: { status: 503, grpcStatus: 8 } } },
      { name: 'grpc-delay', match: { protocol: 'grpc', headers: { 'x-fault': 'delay' } }, action: { cluster: 'grpc' }, fault: delay },
      { name: 'grpc', match: { protocol: 'grpc' }, action: { cluster: 'grpc' } },
      { name: 'dubbo-abort', match: { protocol: 'dubbo', method: 'abort' }, action: { cluster: 'dubbo' }, fault: abort503 },
      { name: 'dubbo-code', match: { protocol: 'dubbo', method: 'abortCode' }, action: { cluster: 'dubbo' }, fault: { abort: { status: 503, dubboStatus: 100 } } },
      { name: 'dubbo-bad', match: { protocol: 'dubbo', method: 'abortBad' }, action: { cluster: 'dubbo' }, fault: { abort: { status: 400 } } },
      { name: 'dubbo-delay', match: { protocol: 'dubbo', method: 'delay' }, action: { cluster: 'dubbo' }, fault: delay },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { cluster: 'dubbo' } },
    ],
    accessLog: { enabled: true, path: log },
  });
  const base = `http://127.0.0.1:${s.port('app')}`;
  const Echo = loadEcho();
  const client = new Echo(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  let consumer: Consumer | null = null;
  t.teardown(async () => {
    client.close();
    consumer?.close();
    await s.stop();
    await h1.close();
    await h2.close();
    g.close();
    await d.close();
  });
  const counter = async (name: string, route: string) => (await stats(s.admin)).get(`${name}{route="${route}"}`);

  t.test('HTTP/1: abort is the status with x-sluice-reason, the upstream never asked', async (t) => {
    const before = h1Requests;
    const r = await curl(`${base}/abort`);
    t.equal(r.status, 503);
    t.equal(r.headers['x-sluice-reason'], 'fault_abort');
    t.equal(r.body, 'fault filter abort\n');
    t.equal(h1Requests, before, 'nothing reached the upstream');
    t.equal(await counter('sluice_fault_aborts_total', 'h1-abort'), 1);
    t.equal(await counter('sluice_fault_delays_total', 'h1-abort'), 0);
  });

  t.test('HTTP/1: percent 0 never aborts', async (t) => {
    const r = await curl(`${base}/never`);
    t.equal(r.status, 200);
    t.equal(JSON.parse(r.body).version, 'h1');
    t.equal(await counter('sluice_fault_aborts_total', 'h1-never'), 0);
  });

  t.test('HTTP/1: delay, then the upstream answers', async (t) => {
    const r = await curl(`${base}/delay`);
    t.equal(r.status, 200);
    t.equal(JSON.parse(r.body).version, 'h1');
    t.ok(r.ms >= DELAY, `took ${r.ms.toFixed(0)} ms, at least ${DELAY}`);
    t.equal(await counter('sluice_fault_delays_total', 'h1-delay'), 1);
  });

  t.test('HTTP/1: delay then abort', async (t) => {
    const before = h1Requests;
    const r = await curl(`${base}/both`);
    t.equal(r.status, 500);
    t.equal(r.headers['x-sluice-reason'], 'fault_abort');
    t.ok(r.ms >= DELAY, `answered after ${r.ms.toFixed(0)} ms`);
    t.equal(h1Requests, before, 'the upstream never asked');
    t.equal(await counter('sluice_fault_delays_total', 'h1-both'), 1);
    t.equal(await counter('sluice_fault_aborts_total', 'h1-both'), 1);
  });

  t.test('HTTP/2: a client that leaves during the delay ends the request there', async (t) => {
    const before = h2Requests;
    const r = await curl(`${base}/gone`, { h2: true, maxTime: 0.2 });
    t.equal(r.code, 28, 'curl gave up (timeout) and closed its connection');
    // the exchange ends with the client, not when the delay is over
    await waitFor(async () => (await stats(s.admin)).get('sluice_downstream_rq_active{protocol="http2"}') === 0, 1000, 'no HTTP/2 request in flight');
    // and nothing may happen when the delay (1.5 s) would have ended
    await new Promise((r) => setTimeout(r, 1600));
    t.equal(h2Requests, before, 'the upstream never asked');
    t.equal(await counter('sluice_fault_delays_total', 'h2-gone'), 1);
  });

  t.test('HTTP/2: abort and delay', async (t) => {
    const a = await curl(`${base}/abort`, { h2: true });
    t.equal(a.status, 429);
    t.equal(a.headers['x-sluice-reason'], 'fault_abort');
    t.equal(a.body, 'fault filter abort\n');
    const r = await curl(`${base}/delay`, { h2: true });
    t.equal(r.status, 200);
    t.equal(JSON.parse(r.body).version, 'h2');
    t.ok(r.ms >= DELAY, `took ${r.ms.toFixed(0)} ms`);
    t.equal(await counter('sluice_fault_aborts_total', 'h2-abort'), 1);
    t.equal(await counter('sluice_fault_delays_total', 'h2-delay'), 1);
  });

  t.test('gRPC: abort as gRPC\'s mapping of the status, or the status given; delay', async (t) => {
    const mapped = await unary(client, { 'x-fault': 'abort' });
    t.equal(mapped.status.code, grpc.status.UNAVAILABLE, '503 is UNAVAILABLE');
    t.match(mapped.status.details, /fault filter abort/);
    t.same(mapped.status.metadata.get('x-sluice-reason'), ['fault_abort']);
    const code = await unary(client, { 'x-fault': 'code' });
    t.equal(code.status.code, grpc.status.RESOURCE_EXHAUSTED, 'grpcStatus: 8');
    const late = await unary(client, { 'x-fault': 'delay' });
    t.equal(late.status.code, grpc.status.OK);
    t.equal(late.version, 'g');
    t.ok(late.ms >= DELAY, `took ${late.ms.toFixed(0)} ms`);
    const st = await stats(s.admin);
    t.equal(st.get('sluice_fault_aborts_total{route="grpc-abort"}'), 1);
    t.equal(st.get('sluice_fault_aborts_total{route="grpc-code"}'), 1);
    t.equal(st.get('sluice_fault_delays_total{route="grpc-delay"}'), 1);
    t.equal(st.get('sluice_downstream_rq_grpc_status_total{grpc_status="14"}'), 1);
    t.equal(st.get('sluice_downstream_rq_grpc_status_total{grpc_status="8"}'), 1);
  });

  t.test('Dubbo: abort as the mapped status byte, or the one given; delay', async (t) => {
    // connected now: a client silent for tcp.sniffTimeoutMs is taken for a server-speaks-first one
    consumer = await Consumer.connect(s.port('app'));
    const calls = d.calls;
    const mapped = await consumer!.call('abort', [str('x')]);
    t.equal(mapped.status, 70, '503: SERVICE_ERROR, as the Dubbo side maps a 5xx');
    t.match(mapped.error, /fault_abort/);
    t.equal((await consumer!.call('abortCode', [str('x')])).status, 100, 'dubboStatus: 100');
    t.equal((await consumer!.call('abortBad', [str('x')])).status, 40, '400: BAD_REQUEST');
    t.equal(d.calls, calls, 'no call reached the provider');
    const t0 = performance.now();
    const late = await consumer!.call('delay', [str('x')]);
    const ms = performance.now() - t0;
    t.equal(late.status, 20);
    t.equal(parseDubbo(late.value)?.method, 'delay');
    t.ok(ms >= DELAY, `took ${ms.toFixed(0)} ms`);
    const st = await stats(s.admin);
    t.equal(st.get('sluice_fault_aborts_total{route="dubbo-abort"}'), 1);
    t.equal(st.get('sluice_fault_aborts_total{route="dubbo-code"}'), 1);
    t.equal(st.get('sluice_fault_aborts_total{route="dubbo-bad"}'), 1);
    t.equal(st.get('sluice_fault_delays_total{route="dubbo-delay"}'), 1);
  });

  t.test('the access log notes what the fault did', async (t) => {
    const recs = await waitFor(() => {
      if (!existsSync(log)) return null;
      const l = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((x) => JSON.parse(x));
      return l.some((r) => r.route === 'dubbo-delay') && l.some((r) => r.route === 'h2-gone') ? l : null;
    }, 10_000, 'the access log lines');
    t.match(recs.find((r) => r.route === 'h1-abort'), { fault: 'abort', status: 503, reason: 'fault_abort' });
    t.match(recs.find((r) => r.route === 'h1-delay'), { fault: 'delay', status: 200 });
    t.match(recs.find((r) => r.route === 'h1-both'), { fault: 'delay+abort', status: 500, reason: 'fault_abort' });
    t.match(recs.find((r) => r.route === 'h2-gone'), { fault: 'delay', protocol: 'http2' });
    t.match(recs.find((r) => r.route === 'dubbo-code'), { fault: 'abort', status: 100, reason: 'fault_abort' });
    t.notOk('fault' in recs.find((r) => r.route === 'h1-never'), 'a request the fault left alone has no note');
  });
});

t.test('the route timeout runs from when the filters let the request go, whatever set its target before', async (t) => {
  // split before fault: the target is set, then the request is held; a body that ends during the
  // hold must not start the route's timeout (it would answer 504 with no upstream ever asked)
  const up = await http1Versioned('h1');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    filters: ['split', 'fault'],
    routes: [{ name: 'held', action: { split: [{ cluster: 'web', weight: 1 }], timeoutMs: 100 }, fault: { delay: { ms: DELAY } } }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const url = `http://127.0.0.1:${s.port('app')}/x`;
  for (const body of [[], ['--data-binary', 'hello']]) {
    const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...body, url]);
    t.equal(r.stdout, '200', body.length ? 'POST: its body ended during the delay' : 'GET');
  }
  t.equal(up.requests, 2);
});
