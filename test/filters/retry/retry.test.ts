/**
 * The retry filter with real clients and real upstreams: what a route's policy retries (an
 * answer's status, a reset, a per-try timeout), only where the request can be repeated, on another
 * endpoint, within the retry budget; for HTTP/1.1 (curl and Node's client), HTTP/2 (curl), gRPC
 * (@grpc/grpc-js) and Dubbo (dubbo-remoting). Each cluster pairs a failing endpoint with a good
 * one, so a request that is not retried fails about half the time.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import t from 'tap';
import { h2Upstream, httpUpstream, ROOT, run, startSluice, stats, type RunningSluice, type Upstream } from '../../helpers/harness';
import { Consumer, rawProvider, str, type Provider } from '../../integration/dubbo-peers';

/** What the good HTTP upstream received: method, path and body. */
const goodSeen: Array<{ method: string; url: string; body: string }> = [];
let badHits = 0;
let hangHits = 0;
let resetHits = 0;

const ups: Upstream[] = [];
let hang: net.Server;
let resetter: net.Server;
let grpcBad: grpc.Server;
let grpcGood: grpc.Server;
let silent: Provider;
let answering: Provider;
let s: RunningSluice;

const PROTO = path.join(ROOT, 'test', 'fixtures', 'echo.proto');
type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, Function>;
function echo(): Ctor & { service: grpc.ServiceDefinition } {
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, defaults: true });
  return (grpc.loadPackageDefinition(def) as unknown as { sluice: { test: { Echo: Ctor & { service: grpc.ServiceDefinition } } } }).sluice.test.Echo;
}

async function grpcServer(fail: boolean): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(echo().service, {
    Unary(call: grpc.ServerUnaryCall<{ message: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      if (fail) cb(Object.assign(new Error('down'), { code: grpc.status.UNAVAILABLE }) as grpc.ServiceError);
      else cb(null, { message: `echo:${call.request.message}`, index: 0, via: '' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { server, port };
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

t.before(async () => {
  const good = await httpUpstream((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => { goodSeen.push({ method: req.method ?? '', url: req.url ?? '', body }); res.setHeader('content-length', 3); res.end('ok\n'); });
  });
  const bad = await httpUpstream((req, res) => { badHits++; req.resume(); req.on('end', () => { res.statusCode = 503; res.setHeader('content-length', 5); res.end('busy\n'); }); });
  const good2 = await h2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok2\n'); });
  const bad2 = await h2Upstream((stream) => { stream.respond({ ':status': 503 }); stream.end('busy\n'); });
  ups.push(good, bad, good2, bad2);
  hang = net.createServer((sock) => { hangHits++; sock.on('error', () => {}); sock.resume(); });
  resetter = net.createServer((sock) => { resetHits++; sock.on('error', () => {}); sock.once('data', () => sock.resetAndDestroy()); });
  const [hangPort, resetPort] = await Promise.all([listen(hang), listen(resetter)]);
  const gb = await grpcServer(true);
  const gg = await grpcServer(false);
  grpcBad = gb.server;
  grpcGood = gg.server;
  silent = await rawProvider({ silentOn: () => true });
  answering = await rawProvider();
  const ep = (p: number) => `127.0.0.1:${p}`;
  s = await startSluice({
    listeners: [
      { name: 'web', address: '127.0.0.1:0', cluster: 'flaky' },
      { name: 'grpc', address: '127.0.0.1:0', cluster: 'grpc' },
      { name: 'rpc', address: '127.0.0.1:0', cluster: 'providers' },
    ],
    routes: [
      { name: 'r503', match: { path: { exact: '/r503' } }, action: { cluster: 'flaky' }, retry: { on: ['503'], attempts: 2 } },
      { name: 'post', match: { path: { exact: '/post' } }, action: { cluster: 'flaky' }, retry: { on: ['503'], attempts: 2 } },
      { name: 'post-idem', match: { path: { exact: '/post-idem' } }, action: { cluster: 'flaky' }, retry: { on: ['503'], attempts: 2, idempotent: true } },
      { name: 'none', match: { path: { exact: '/none' } }, action: { cluster: 'flaky' } },
      { name: 'hang', match: { path: { exact: '/hang' } }, action: { cluster: 'hanging' }, retry: { on: ['timeout'], attempts: 2, perTryTimeoutMs: 600 } },
      { name: 'reset', match: { path: { exact: '/reset' } }, action: { cluster: 'resetting' }, retry: { on: ['reset'], attempts: 2 } },
      { name: 'budget', match: { path: { exact: '/budget' } }, action: { cluster: 'flaky' }, retry: { on: ['503'], attempts: 2, budget: { percent: 0, minConcurrency: 0 } } },
      { name: 'h2', match: { path: { exact: '/h2' } }, action: { cluster: 'flaky-h2' }, retry: { on: ['gateway-error'], attempts: 2 } },
      { name: 'grpc', match: { listener: 'grpc' }, action: { cluster: 'grpc' }, retry: { on: ['unavailable'], attempts: 2, idempotent: true } },
      { name: 'dubbo-idem', match: { protocol: 'dubbo', method: 'idem' }, action: { cluster: 'providers' }, retry: { on: ['timeout'], attempts: 2, perTryTimeoutMs: 300, idempotent: true } },
      { name: 'dubbo-once', match: { protocol: 'dubbo', method: 'once' }, action: { cluster: 'providers', timeoutMs: 600 }, retry: { on: ['timeout'], attempts: 2, perTryTimeoutMs: 300 } },
    ],
    clusters: [
      { name: 'flaky', protocol: 'http1', endpoints: [ep(bad.port), ep(good.port)] },
      { name: 'flaky-h2', protocol: 'http2', endpoints: [ep(bad2.port), ep(good2.port)] },
      { name: 'hanging', protocol: 'http1', endpoints: [ep(hangPort), ep(good.port)] },
      { name: 'resetting', protocol: 'http1', endpoints: [ep(resetPort), ep(good.port)] },
      { name: 'grpc', protocol: 'http2', endpoints: [ep(gb.port), ep(gg.port)] },
      { name: 'providers', endpoints: [ep(silent.port), ep(answering.port)] },
    ],
    workers: { threads: 1 },
  });
});

t.teardown(async () => {
  await s?.stop();
  for (const u of ups) await u.close();
  hang?.close();
  resetter?.close();
  grpcBad?.forceShutdown();
  grpcGood?.forceShutdown();
  await silent?.close();
  await answering?.close();
});

function request(port: number, method: string, p: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, agent: false, headers: body ? { 'content-length': Buffer.byteLength(body) } : {} }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function statuses(n: number, method: string, p: string, body?: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await request(s.port('web'), method, p, body)).status);
  return out;
}

const stat = async (name: string) => (await stats(s.admin)).get(name) ?? 0;

t.test('an answer the policy names (503) is tried again on the other endpoint', async (t) => {
  const before = await stat('sluice_upstream_rq_retry_total{cluster="flaky"}');
  const got = await statuses(10, 'GET', '/r503');
  t.same(got, Array(10).fill(200), 'every GET answered 200');
  t.ok(await stat('sluice_upstream_rq_retry_total{cluster="flaky"}') > before, 'retries counted');
  const curl = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${s.port('web')}/r503`]);
  t.equal(curl.stdout, '200', 'curl too');
  const none = await statuses(10, 'GET', '/none');
  t.ok(none.includes(503), 'without a policy the 503 reaches the client');
});

t.test('only a request that can be repeated: POST is retried where the route says it is idempotent', async (t) => {
  const post = await statuses(10, 'POST', '/post', 'the-body');
  t.ok(post.includes(503), 'a POST is not retried by default');
  const n = goodSeen.length;
  const idem = await statuses(10, 'POST', '/post-idem', 'the-body');
  t.same(idem, Array(10).fill(200), 'with idempotent: true, every POST is answered');
  t.same(goodSeen.slice(n).map((g) => g.body), Array(10).fill('the-body'), 'each retried POST carried its whole body');
});

t.test('a per-try timeout gives the attempt up and tries the other endpoint', async (t) => {
  const before = hangHits;
  const got = await statuses(6, 'GET', '/hang');
  t.same(got, Array(6).fill(200));
  t.ok(hangHits > before, 'the hanging endpoint was tried');
});

t.test('a reset before any answer is tried again', async (t) => {
  const before = resetHits;
  const got = await statuses(6, 'GET', '/reset');
  t.same(got, Array(6).fill(200));
  t.ok(resetHits > before, 'the resetting endpoint was tried');
});

t.test('the retry budget: no retry beyond the share of requests in flight', async (t) => {
  const before = await stat('sluice_retry_budget_exhausted_total{cluster="flaky"}');
  const got = await statuses(10, 'GET', '/budget');
  t.ok(got.includes(503), 'with a budget of 0 nothing is retried');
  t.ok(await stat('sluice_retry_budget_exhausted_total{cluster="flaky"}') > before, 'counted');
});

t.test('HTTP/2 client, HTTP/2 cluster: gateway errors retried', async (t) => {
  for (let i = 0; i < 6; i++) {
    const r = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '-', '-w', ' %{http_code}', `http://127.0.0.1:${s.port('web')}/h2`]);
    t.equal(r.stdout, 'ok2\n 200', `request ${i}`);
  }
});

t.test('gRPC: UNAVAILABLE in a trailers-only answer is retried on an idempotent route', async (t) => {
  const Echo = echo();
  const client = new Echo(`127.0.0.1:${s.port('grpc')}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  for (let i = 0; i < 6; i++) {
    const r = await new Promise<{ err: grpc.ServiceError | null; res: { message?: string } | null }>((resolve) => {
      client.Unary({ message: `m${i}` }, (err: grpc.ServiceError | null, res: { message?: string } | null) => resolve({ err, res }));
    });
    t.equal(r.err, null, `call ${i}: ${r.err?.message ?? 'ok'}`);
    t.equal(r.res?.message, `echo:m${i}`);
  }
});

t.test('Dubbo: a timed-out call is retried only where the route says it is idempotent', async (t) => {
  const c = await Consumer.connect(s.port('rpc'));
  t.teardown(() => c.close());
  for (let i = 0; i < 4; i++) {
    const a = await c.call('idem', [str(`i${i}`)]);
    t.equal(a.status, 20, `idempotent call ${i} answered (${a.error ?? ''})`);
  }
  const seen: number[] = [];
  for (let i = 0; i < 4; i++) seen.push((await c.call('once', [str(`o${i}`)])).status);
  t.ok(seen.includes(31), `a call that is not idempotent is not retried after it was sent: statuses ${seen.join(',')}`);
});
