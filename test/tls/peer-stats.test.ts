/**
 * Who is not on mTLS yet, and who is: on a permissive port, requests and connections are counted
 * by the caller's SPIFFE ID (a bounded label set: the busiest principals, then other; none for
 * plaintext), and GET /plaintext-callers lists the plaintext callers by source address. Real
 * clients: curl with client certificates, curl in plaintext from two loopback addresses.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { get, httpUpstream, run, startSluice, stats, waitFor } from '../helpers/harness';
import { TestPki, type Workload } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const frontend = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const batch = pki.issue(ca, 'spiffe://cluster.local/ns/jobs/sa/batch');
const stranger = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/other');

t.test('stats by peer identity and the plaintext callers of a permissive port', async (t) => {
  const app = await httpUpstream((req, res) => res.end('ok'));
  const s = await startSluice({
    // one worker: its deltas reach the main thread in the order the requests were made
    workers: { threads: 1 },
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'permissive' }, peerStats: { topPrincipals: 2, plaintextCallers: 10 } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${app.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await app.close(); });
  const port = s.port('in');
  const none = await get(`${s.admin}/plaintext-callers`);
  t.same(JSON.parse(none.body), { enabled: true, callers: [] });

  const mtls = async (w: Workload, n: number) => {
    for (let i = 0; i < n; i++) {
      const r = await run('curl', ['-sS', '--http1.1', '-k', '--max-time', '10', '--cert', w.certFile, '--key', w.keyFile, `https://127.0.0.1:${port}/`]);
      t.equal(r.stdout, 'ok', r.stderr);
    }
  };
  await mtls(frontend, 3);
  await mtls(batch, 2);
  await mtls(stranger, 1);
  const started = Date.now();
  const plain = async (from: string, n: number) => {
    // n requests on one keep-alive connection
    const urls = Array.from({ length: n }, () => `http://127.0.0.1:${port}/`);
    const r = await run('curl', ['-sS', '--max-time', '10', '--interface', from, ...urls]);
    t.equal(r.stdout, 'ok'.repeat(n), r.stderr);
  };
  await plain('127.0.0.1', 2);
  await plain('127.0.0.2', 1);

  const callers = await waitFor(async () => {
    const c = JSON.parse((await get(`${s.admin}/plaintext-callers`)).body).callers as Array<Record<string, unknown>>;
    return c.reduce((n, x) => n + (x.requests as number), 0) === 3 ? c : null;
  }, 10_000, 'the plaintext requests listed');
  t.match(callers, [
    { address: '127.0.0.2', listener: 'in', connections: 1, requests: 1 },
    { address: '127.0.0.1', listener: 'in', connections: 1, requests: 2 },
  ], 'most recent first');
  t.equal(callers.length, 2);
  for (const c of callers) {
    t.ok(Date.parse(c.lastSeen as string) >= started - 1000 && Date.parse(c.firstSeen as string) <= Date.parse(c.lastSeen as string), 'times of first and last sight');
  }

  const m = await stats(s.admin);
  const rq = (p: string, tr: string) => m.get(`sluice_tls_inbound_peer_rq_total{principal="${p}",transport="${tr}"}`);
  const cx = (p: string, tr: string) => m.get(`sluice_tls_inbound_peer_cx_total{principal="${p}",transport="${tr}"}`);
  t.equal(rq('cluster.local/ns/web/sa/frontend', 'mtls'), 3);
  t.equal(rq('cluster.local/ns/jobs/sa/batch', 'mtls'), 2);
  t.equal(rq('cluster.local/ns/web/sa/other', 'mtls'), undefined, 'beyond topPrincipals: no series of its own');
  t.equal(rq('other', 'mtls'), 1, 'counted as other');
  t.equal(rq('none', 'plaintext'), 3);
  t.equal(cx('cluster.local/ns/web/sa/frontend', 'mtls'), 3);
  t.equal(cx('none', 'plaintext'), 2);
  const peerSeries = [...m.keys()].filter((k) => k.startsWith('sluice_tls_inbound_peer_rq_total'));
  t.equal(peerSeries.length, 4, 'a bounded label set: two principals, other, none');

  const file = path.join(pki.root, 'stats.txt');
  writeFileSync(file, (await get(`${s.admin}/stats`)).body);
  const check = await run('sh', ['-c', `promtool check metrics < '${file}'`]);
  t.equal(check.code, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);
});
