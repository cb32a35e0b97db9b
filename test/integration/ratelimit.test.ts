/**
 * Rate limits end to end, with real clients of every protocol: curl (HTTP/1.1 and h2c), node's
 * http agent, @grpc/grpc-js, a dubbo-remoting consumer, and raw sockets for pipelining.
 *
 * Checked: each protocol's refusal (429 with retry-after and x-sluice-reason, RESOURCE_EXHAUSTED,
 * Dubbo status 100) and that nothing refused reaches an upstream; that a limit cannot be walked
 * around by the case of a header's name, by repeating a header, by switching between HTTP/1 and
 * HTTP/2, or by pipelining; per-key limits and their eviction, by header and by Dubbo attachment;
 * shadow mode against enforce mode on the same traffic; a reload that keeps a rule's bucket (and
 * one that changes the rule and does not); bad configs refused with their paths; GET /protection.
 */
import * as grpc from '@grpc/grpc-js';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { adminPost, get, startSluice, stats, waitFor, withTestDefaults, type RunningSluice } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { curl, dubboVersioned, grpcVersioned, h2Versioned, http1Versioned, loadEcho, unary } from './filter-peers';
import YAML from 'yaml';

const once1 = { requestsPerMinute: 1, burst: 1 };

async function peers() {
  const h1 = await http1Versioned('h1');
  const h2 = await h2Versioned('h2');
  const g = await grpcVersioned('g');
  const d = await dubboVersioned('d');
  return { h1, h2, g, d, close: async () => { await h1.close(); await h2.close(); g.close(); await d.close(); } };
}
type Peers = Awaited<ReturnType<typeof peers>>;

function config(p: Peers, rateLimits: unknown[]) {
  return {
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web1', endpoints: [`127.0.0.1:${p.h1.port}`] },
      { name: 'web2', endpoints: [`127.0.0.1:${p.h2.port}`] },
      { name: 'grpc', endpoints: [`127.0.0.1:${p.g.port}`] },
      { name: 'dubbo', endpoints: [`127.0.0.1:${p.d.port}`] },
    ],
    routes: [
      { name: 'h1', match: { protocol: 'http1' }, action: { cluster: 'web1' } },
      { name: 'h2', match: { protocol: 'http2' }, action: { cluster: 'web2' } },
      { name: 'grpc', match: { protocol: 'grpc' }, action: { cluster: 'grpc' } },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { cluster: 'dubbo' } },
    ],
    rateLimits,
  };
}

const counter = async (s: RunningSluice, name: string, rule: string) => (await stats(s.admin)).get(`${name}{rule="${rule}"}`) ?? 0;

/** Statuses of pipelined HTTP/1 requests written in one go on one connection. */
async function pipelined(port: number, requests: string[]): Promise<number[]> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  await once(sock, 'connect');
  let buf = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => { buf += d; });
  sock.write(requests.join(''));
  const statuses = () => [...buf.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
  await waitFor(() => statuses().length >= requests.length, 5000, `${requests.length} responses`);
  sock.destroy();
  return statuses();
}

t.test('every protocol: a refusal in its own form, and nothing refused reaches the upstream', async (t) => {
  const p = await peers();
  const s = await startSluice(config(p, [
    { name: 'h1', match: { protocol: 'http1', path: { prefix: '/one' } }, ...once1 },
    { name: 'h2', match: { protocol: 'http2', path: { prefix: '/one' } }, ...once1 },
    { name: 'grpc', match: { protocol: 'grpc' }, ...once1 },
    { name: 'dubbo', match: { protocol: 'dubbo', method: 'transfer' }, ...once1 },
  ]));
  t.teardown(async () => { await s.stop(); await p.close(); });
  const base = `http://127.0.0.1:${s.port('app')}`;

  t.equal((await curl(`${base}/one`)).status, 200);
  const r1 = await curl(`${base}/one`);
  t.equal(r1.status, 429, 'HTTP/1.1: 429');
  t.equal(r1.headers['x-sluice-reason'], 'rate_limited');
  t.ok(Number(r1.headers['retry-after']) >= 59 && Number(r1.headers['retry-after']) <= 60, `retry-after ${r1.headers['retry-after']}`);
  t.equal(r1.body, 'rate limited\n');
  t.equal(p.h1.requests, 1, 'the upstream saw the admitted request only');

  t.equal((await curl(`${base}/one`, { h2: true })).status, 200);
  const r2 = await curl(`${base}/one`, { h2: true });
  t.equal(r2.status, 429, 'HTTP/2: 429');
  t.equal(r2.headers['x-sluice-reason'], 'rate_limited');
  t.ok(Number(r2.headers['retry-after']) >= 59, `retry-after ${r2.headers['retry-after']}`);
  t.equal(p.h2.requests, 1);

  const Echo = loadEcho();
  const client = new Echo(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  t.equal((await unary(client)).status.code, grpc.status.OK);
  const g = await unary(client);
  t.equal(g.status.code, grpc.status.RESOURCE_EXHAUSTED, 'gRPC: RESOURCE_EXHAUSTED');
  t.equal(g.status.metadata.get('x-sluice-reason')[0], 'rate_limited');
  t.equal((await stats(s.admin)).get('sluice_upstream_rq_total{cluster="grpc"}'), 1, 'one gRPC call upstream');

  const c = await Consumer.connect(s.port('app'));
  t.teardown(() => c.close());
  const ok = await c.call('transfer', [str('a')]);
  t.equal(ok.status, 20, 'Dubbo: the first call is answered');
  const d = await c.call('transfer', [str('a')]);
  t.equal(d.status, 100, 'Dubbo: SERVER_THREADPOOL_EXHAUSTED');
  t.match(d.error, /rate_limited/);
  t.equal((await c.call('other', [str('a')])).status, 20, 'another method is not limited, on the same connection');
  t.equal(p.d.calls, 2);

  for (const rule of ['h1', 'h2', 'grpc', 'dubbo']) {
    t.equal(await counter(s, 'sluice_ratelimit_admitted_total', rule), 1, `${rule}: one admitted`);
    t.equal(await counter(s, 'sluice_ratelimit_refused_total', rule), 1, `${rule}: one refused`);
  }
});

t.test('holes: header case, repeated headers, HTTP/1 against HTTP/2, pipelining, attachments', async (t) => {
  const p = await peers();
  const s = await startSluice(config(p, [
    { name: 'free', match: { headers: { 'x-tier': 'free' } }, ...once1 },
    { name: 'svc', match: { path: { prefix: '/svc' } }, ...once1 },
    { name: 'pipe', match: { path: { prefix: '/pipe' } }, requestsPerMinute: 1, burst: 2 },
    { name: 'user', match: { path: { prefix: '/user' } }, key: { header: 'X-User' }, maxKeys: 2, ...once1 },
    { name: 'dubbo-user', match: { protocol: 'dubbo' }, key: { header: 'x-user' }, ...once1 },
    { name: 'by-caller', match: { path: { prefix: '/caller' } }, key: 'caller', ...once1 },
  ]));
  t.teardown(async () => { await s.stop(); await p.close(); });
  const port = s.port('app');
  const base = `http://127.0.0.1:${port}`;

  // a header condition: the name in any case, the value in any repetition
  t.equal((await curl(`${base}/t`, { headers: { 'X-TIER': 'free' } })).status, 200);
  t.equal((await curl(`${base}/t`, { headers: { 'x-Tier': 'free' } })).status, 429, 'the case of the name does not matter');
  const rep = await pipelined(port, ['GET /t HTTP/1.1\r\nhost: a\r\nx-tier: paid\r\nx-tier: free\r\n\r\n']);
  t.same(rep, [429], 'free as the second of two fields is limited');
  const list = await pipelined(port, ['GET /t HTTP/1.1\r\nhost: a\r\nx-tier: paid, free\r\n\r\n']);
  t.same(list, [429], 'free as an item of a list is limited');
  t.equal((await curl(`${base}/t`, { h2: true, headers: { 'x-tier': 'free' } })).status, 429, 'over HTTP/2 too');

  // one bucket for HTTP/1 and HTTP/2
  t.equal((await curl(`${base}/svc`)).status, 200);
  t.equal((await curl(`${base}/svc`, { h2: true })).status, 429, 'HTTP/2 after HTTP/1: the same bucket');
  t.equal((await curl(`${base}/./svc`)).status, 429, 'a path spelled otherwise: the same bucket');

  // pipelined requests each take a token
  const before = p.h1.requests;
  const statuses = await pipelined(port, Array.from({ length: 5 }, () => 'GET /pipe HTTP/1.1\r\nhost: a\r\n\r\n'));
  t.same(statuses, [200, 200, 429, 429, 429], 'burst 2 of 5 pipelined requests');
  t.equal(p.h1.requests - before, 2, 'two reached the upstream');

  // per key: the header's name in any case, each key its bucket, the least recently used one evicted
  t.equal((await curl(`${base}/user`, { headers: { 'x-user': 'a' } })).status, 200);
  t.equal((await curl(`${base}/user`, { headers: { 'X-USER': 'a' } })).status, 429, 'a, with the name in capitals');
  t.equal((await curl(`${base}/user`, { headers: { 'x-user': 'b' } })).status, 200, 'b has its own bucket');
  t.equal((await curl(`${base}/user`, { headers: { 'x-user': 'b' } })).status, 429);
  t.equal((await curl(`${base}/user`)).status, 200, 'no x-user: the bucket of requests without one');
  t.equal((await curl(`${base}/user`)).status, 429, 'leaving the header out does not escape the limit');
  t.equal((await curl(`${base}/user`, { headers: { 'x-user': 'a' } })).status, 200, 'maxKeys 2: a was evicted for the keyless bucket');
  const view = JSON.parse((await get(`${s.admin}/protection`)).body);
  t.match(view.rateLimits.find((r: { name: string }) => r.name === 'user'), { key: { header: 'X-User' }, maxKeys: 2, keys: 2 });

  // per caller: the source address, whatever the headers say
  t.equal((await curl(`${base}/caller`, { from: '127.0.0.1' })).status, 200);
  t.equal((await curl(`${base}/caller`, { from: '127.0.0.1', headers: { 'x-forwarded-for': '10.9.9.9' } })).status, 429, 'x-forwarded-for changes nothing');
  t.equal((await curl(`${base}/caller`, { from: '127.0.0.2' })).status, 200, 'another address, another bucket');

  // Dubbo attachments as keys
  const c = await Consumer.connect(port);
  t.teardown(() => c.close());
  t.equal((await c.call('pay', [str('x')], { 'x-user': 'a' })).status, 20);
  t.equal((await c.call('pay', [str('x')], { 'x-user': 'a' })).status, 100);
  t.equal((await c.call('pay', [str('x')], { 'x-user': 'b' })).status, 20, 'another attachment value, another bucket');
});

/** `n` requests one after another on one keep-alive connection; their statuses. */
async function sequential(port: number, path: string, n: number): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path, agent }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); }).on('error', reject);
    }));
  }
  agent.destroy();
  return out;
}

t.test('shadow mode counts what enforce refuses and lets it through; a reload keeps the bucket', async (t) => {
  const p = await peers();
  const rule = (name: string, mode: string, extra: Record<string, unknown> = {}) => ({ name, match: { path: { prefix: `/${name}` } }, requestsPerMinute: 1, burst: 5, mode, ...extra });
  const s = await startSluice(config(p, [rule('e', 'enforce'), rule('s', 'shadow')]));
  t.teardown(async () => { await s.stop(); await p.close(); });
  const port = s.port('app');

  const e = await sequential(port, '/e', 20);
  const before = p.h1.requests;
  const sh = await sequential(port, '/s', 20);
  t.equal(e.filter((x) => x === 429).length, 15, 'enforce: 15 of 20 refused');
  t.same(sh, Array(20).fill(200), 'shadow: all 20 served');
  t.equal(p.h1.requests - before, 20, 'and all reached the upstream');
  t.equal(await counter(s, 'sluice_ratelimit_shadow_refused_total', 's'), 15, 'counted as the 15 enforce refused');
  t.equal(await counter(s, 'sluice_ratelimit_admitted_total', 's'), await counter(s, 'sluice_ratelimit_admitted_total', 'e'));
  t.equal(await counter(s, 'sluice_ratelimit_refused_total', 's'), 0);

  const view = JSON.parse((await get(`${s.admin}/protection`)).body);
  t.match(view, { rateLimits: [
    { name: 'e', mode: 'enforce', requestsPerMinute: 1, burst: 5, admitted: 5, refused: 15, shadowRefused: 0 },
    { name: 's', mode: 'shadow', admitted: 5, refused: 0, shadowRefused: 15 },
  ] });
  t.ok(view.rateLimits[0].tokens < 0.1, `no token left: ${view.rateLimits[0].tokens}`);

  const post = async (rules: unknown[]) => adminPost(s.admin, '/config', YAML.stringify(withTestDefaults(config(p, rules))));
  // enforce → shadow: the empty bucket stays empty, the request goes through and is counted
  t.equal((await post([rule('e', 'shadow'), rule('s', 'shadow')])).status, 200);
  t.same(await sequential(port, '/e', 1), [200], 'shadow now: let through');
  t.equal(await counter(s, 'sluice_ratelimit_shadow_refused_total', 'e'), 1, 'and counted as refused: the bucket was kept');
  // back to enforce, with another rule added before it: still the same bucket
  t.equal((await post([rule('x', 'enforce'), rule('e', 'enforce'), rule('s', 'shadow')])).status, 200);
  t.same(await sequential(port, '/e', 1), [429], 'enforce again: refused');
  // a changed rule starts full
  t.equal((await post([rule('e', 'enforce', { burst: 6 })])).status, 200);
  t.same(await sequential(port, '/e', 7), [200, 200, 200, 200, 200, 200, 429], 'burst 6: a new bucket');
});

t.test('a bad rateLimits section is refused with the path of each bad field; the old config serves on', async (t) => {
  const p = await peers();
  const s = await startSluice(config(p, [{ name: 'ok', ...once1, match: { path: { prefix: '/ok' } } }]));
  t.teardown(async () => { await s.stop(); await p.close(); });
  const bad = withTestDefaults(config(p, [
    { name: 'a', requestsPerSecond: 1, requestsPerMinute: 1 },
    { name: 'b', requestsPerSecond: -1, mode: 'dry' },
    { name: 'c', requestsPerSecond: 1, maxKeys: 3, match: { listener: 'nope', headers: { 'x-a': { regex: '(' } } } },
    { name: 'a', requestsPerSecond: 1, key: { header: 'x y' } },
  ]));
  const r = await adminPost(s.admin, '/config', YAML.stringify(bad));
  t.equal(r.status, 400);
  const issues = (JSON.parse(r.body) as { issues: Array<{ path: string; message: string }> }).issues;
  t.same(issues.map((i) => i.path).sort(), [
    '/rateLimits/0', '/rateLimits/1/mode', '/rateLimits/1/requestsPerSecond', '/rateLimits/2/match/headers/x-a/regex',
    '/rateLimits/2/match/listener', '/rateLimits/2/maxKeys', '/rateLimits/3/key/header', '/rateLimits/3/name',
  ], JSON.stringify(issues));
  const port = s.port('app');
  t.same(await sequential(port, '/ok', 2), [200, 429], 'the old rule holds');
});
