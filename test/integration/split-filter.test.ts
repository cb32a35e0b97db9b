/**
 * The split filter end to end, with real clients on HTTP/1.1 (curl), HTTP/2 (h2load), gRPC
 * (@grpc/grpc-js) and Dubbo (dubbo-remoting): 90/10 over many requests within a tolerance, as the
 * versions themselves counted them and as Sluice counts them per entry; pinned by a header
 * (metadata, attachment) so that one caller always reaches the same version, the same one
 * whatever protocol it speaks; the access log note.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { run, startSluice, stats, waitFor } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { dubboVersioned, grpcVersioned, h2Versioned, http1Versioned, loadEcho, parseDubbo, unary } from './filter-peers';

const N = 600;
/** v2's share of N at 10%: 60 expected, a standard deviation of about 7; this is more than 4 either way. */
const inTolerance = (v2: number) => v2 >= 30 && v2 <= 90;
const USERS = 100;

const split = (cluster: string) => [
  { cluster, labels: { version: 'v1' }, weight: 90 },
  { cluster, labels: { version: 'v2' }, weight: 10 },
];
const labelled = (ports: number[]) => ports.map((p, i) => ({ address: `127.0.0.1:${p}`, labels: { version: `v${i + 1}` } }));

/** curl with many HTTP/1.1 requests on one connection; `groups`: the headers of each group of URLs (`--next` between groups). Returns the bodies. */
async function curlMany(url: string, groups: Array<{ headers: Record<string, string>; count: number }>): Promise<string[]> {
  const args: string[] = [];
  groups.forEach((g, i) => {
    if (i > 0) args.push('--next');
    args.push('-sS', '-w', '\\n', '--http1.1');
    for (const [k, v] of Object.entries(g.headers)) args.push('-H', `${k}: ${v}`);
    for (let j = 0; j < g.count; j++) args.push(url);
  });
  const r = await run('curl', args, 120_000);
  if (r.code !== 0) throw new Error(`curl failed (${r.code}): ${r.stderr.slice(0, 300)}`);
  return r.stdout.split('\n').filter(Boolean);
}

/** `n` HTTP/2 requests with h2load (prior knowledge); fails unless every one got a 2xx. */
async function h2load(t: Test, url: string, n: number, headers: Record<string, string> = {}): Promise<void> {
  const args = ['-n', String(n), '-c', '1', '-m', '10'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  const r = await run('h2load', [...args, url], 60_000);
  if (r.code !== 0 || !new RegExp(`status codes: ${n} 2xx`).test(r.stdout)) t.fail(`h2load: ${r.stdout.slice(-400)} ${r.stderr.slice(0, 300)}`);
}

const versionOf = (body: string) => (JSON.parse(body) as { version: string }).version;

t.test('split: weighted and pinned, on HTTP/1, HTTP/2, gRPC and Dubbo', async (t) => {
  const h1 = [await http1Versioned('v1'), await http1Versioned('v2')];
  const h2 = [await h2Versioned('v1'), await h2Versioned('v2')];
  const g = [await grpcVersioned('v1'), await grpcVersioned('v2')];
  const d = [await dubboVersioned('v1'), await dubboVersioned('v2')];
  const log = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-split-')), 'access.log');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web1', endpoints: labelled(h1.map((u) => u.port)) },
      { name: 'web2', endpoints: labelled(h2.map((u) => u.port)) },
      { name: 'grpc', endpoints: labelled(g.map((u) => u.port)) },
      { name: 'dubbo', endpoints: labelled(d.map((u) => u.port)) },
    ],
    routes: [
      { name: 'h1-pinned', match: { protocol: 'http1', path: { prefix: '/pinned' } }, action: { split: split('web1'), hashOn: { header: 'x-user' } } },
      { name: 'h1', match: { protocol: 'http1' }, action: { split: split('web1') } },
      { name: 'h2-pinned', match: { protocol: 'http2', path: { prefix: '/pinned' } }, action: { split: split('web2'), hashOn: { header: 'x-user' } } },
      { name: 'h2', match: { protocol: 'http2' }, action: { split: split('web2') } },
      { name: 'grpc-pinned', match: { protocol: 'grpc', headers: { 'x-user': { present: true } } }, action: { split: split('grpc'), hashOn: { header: 'x-user' } } },
      { name: 'grpc', match: { protocol: 'grpc' }, action: { split: split('grpc') } },
      { name: 'dubbo-pinned', match: { protocol: 'dubbo', method: 'pinned' }, action: { split: split('dubbo'), hashOn: { header: 'x-user' } } },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { split: split('dubbo') } },
    ],
    accessLog: { enabled: true, path: log, sampleRate: 1 },
  });
  const base = `http://127.0.0.1:${s.port('app')}`;
  const client = new (loadEcho())(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  let consumer: Consumer | null = null;
  t.teardown(async () => {
    client.close();
    consumer?.close();
    await s.stop();
    for (const u of [...h1, ...h2]) await u.close();
    for (const u of g) u.close();
    for (const u of d) await u.close();
  });
  /** The version each user reached, per protocol, for the cross-protocol check. */
  const pinned: Record<string, Map<string, string>> = {};
  const series = (route: string, cluster: string, v: string) => `sluice_split_rq_total{route="${route}",cluster="${cluster}",subset="version=${v}"}`;

  async function checkCounts(t: Test, route: string, cluster: string, versions: string[]) {
    const v2 = versions.filter((v) => v === 'v2').length;
    t.equal(versions.filter((v) => v === 'v1').length + v2, N, 'every request answered by v1 or v2');
    t.ok(inTolerance(v2), `v2 answered ${v2} of ${N}`);
    const st = await stats(s.admin);
    t.equal(st.get(series(route, cluster, 'v2')), v2, 'counted per entry');
    t.equal(st.get(series(route, cluster, 'v1')), N - v2);
  }

  /** `byUser`: each user's versions, in order; each user on one version, both versions in use. */
  function checkPinned(t: Test, proto: string, byUser: Map<string, string[]>) {
    const moved = [...byUser].filter(([, vs]) => new Set(vs).size !== 1).map(([u]) => u);
    t.same(moved, [], 'every user on one version for all its requests');
    const one = new Map([...byUser].map(([u, vs]) => [u, vs[0]]));
    const v2 = [...one.values()].filter((v) => v === 'v2').length;
    t.ok(v2 > 0 && v2 < USERS / 3, `${v2} of ${USERS} users on v2`);
    pinned[proto] = one;
  }

  const users = Array.from({ length: USERS }, (_, i) => `user-${i}`);

  t.test(`http1: 90/10 over ${N} requests`, async (t) => {
    const bodies = await curlMany(`${base}/any`, [{ headers: {}, count: N }]);
    await checkCounts(t, 'h1', 'web1', bodies.map(versionOf));
    t.same([h1[0].requests, h1[1].requests], [N - bodies.map(versionOf).filter((v) => v === 'v2').length, bodies.map(versionOf).filter((v) => v === 'v2').length], 'as the versions counted them');
  });

  t.test('http1: pinned by x-user', async (t) => {
    const bodies = await curlMany(`${base}/pinned`, users.map((u) => ({ headers: { 'x-user': u }, count: 3 })));
    checkPinned(t, 'http1', new Map(users.map((u, i) => [u, bodies.slice(i * 3, i * 3 + 3).map(versionOf)])));
  });

  t.test(`http2: 90/10 over ${N} requests`, async (t) => {
    await h2load(t, `${base}/any`, N);
    // who answered, by the versions' own count
    await checkCounts(t, 'h2', 'web2', [...Array(h2[0].requests).fill('v1'), ...Array(h2[1].requests).fill('v2')]);
  });

  t.test('http2: pinned by x-user', async (t) => {
    for (let i = 0; i < USERS; i += 10) await Promise.all(users.slice(i, i + 10).map((u) => h2load(t, `${base}/pinned`, 3, { 'x-user': u })));
    const byUser = new Map(users.map((u) => [u, [
      ...Array(h2[0].users.get(u) ?? 0).fill('v1'), ...Array(h2[1].users.get(u) ?? 0).fill('v2'),
    ]]));
    t.same([...byUser.values()].map((vs) => vs.length), Array(USERS).fill(3), 'three requests of each user answered');
    checkPinned(t, 'http2', byUser);
  });

  t.test(`gRPC: 90/10 over ${N} calls, and pinned by x-user metadata`, async (t) => {
    const versions: string[] = [];
    for (let i = 0; i < N; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => unary(client)));
      for (const r of batch) versions.push(r.version ?? `failed: ${r.status.code} ${r.status.details}`);
    }
    await checkCounts(t, 'grpc', 'grpc', versions);
    const byUser = new Map<string, string[]>();
    for (const u of users) {
      const rs = await Promise.all([0, 1, 2].map(() => unary(client, { 'x-user': u })));
      byUser.set(u, rs.map((r) => r.version ?? 'failed'));
    }
    checkPinned(t, 'grpc', byUser);
  });

  t.test(`Dubbo: 90/10 over ${N} calls, and pinned by the x-user attachment`, async (t) => {
    consumer = await Consumer.connect(s.port('app'));
    const c = consumer;
    const answers = await Promise.all(Array.from({ length: N }, (_, i) => c.call('any', [str(String(i))])));
    await checkCounts(t, 'dubbo', 'dubbo', answers.map((a) => parseDubbo(a.value)?.version ?? `failed: ${a.status}`));
    const byUser = new Map<string, string[]>();
    for (const u of users) {
      const as = await Promise.all([0, 1, 2].map(() => c.call('pinned', [str(u)], { 'x-user': u })));
      byUser.set(u, as.map((a) => parseDubbo(a.value)?.version ?? 'failed'));
    }
    checkPinned(t, 'dubbo', byUser);
  });

  t.test('one user reaches the same version whatever protocol it speaks', async (t) => {
    const protos = Object.keys(pinned);
    t.same(protos.sort(), ['dubbo', 'grpc', 'http1', 'http2']);
    const differ = users.filter((u) => new Set(protos.map((p) => pinned[p].get(u))).size !== 1);
    t.same(differ, [], 'the hash of a value and the weights decide, not the protocol');
  });

  t.test('the access log names the entry a split chose', async (t) => {
    const rec = await waitFor(() => {
      if (!existsSync(log)) return null;
      const line = readFileSync(log, 'utf8').split('\n').find((l) => l.includes('"route":"h1-pinned"'));
      return line ? JSON.parse(line) : null;
    }, 10_000, 'an access log line of h1-pinned');
    t.match(rec, { route: 'h1-pinned', status: 200, split: /^web1\{version=v[12]\}$/ });
    const port = rec.split === 'web1{version=v1}' ? h1[0].port : h1[1].port;
    t.equal(rec.upstream, `127.0.0.1:${port}`, 'the upstream is the chosen subset\'s endpoint');
  });
});
