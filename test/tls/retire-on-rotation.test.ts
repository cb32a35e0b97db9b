/**
 * Retirement of connections made under an old identity (tls.retirement), seen from outside at
 * the moment of rotation. A (frontend's sidecar) originates mTLS to B (orders' sidecar); direct
 * mTLS clients reach B on a listener of their own, so that `ss` tells A's upstream connections
 * apart. Under bounded load through A and straight to B:
 *
 *   - B's certificate rotates: B's connections made with the old one finish what is in flight
 *     (a slow request completes, with `connection: close`), new handshakes get the new
 *     certificate, an idle connection that never speaks again is closed at the cap;
 *   - A's certificate rotates: A's pool connections made with it are drained and replaced;
 *   - A's expected principals change by reload: connections checked against the old
 *     expectation are drained and replaced;
 *   - and 100 rotations in a row under light load;
 *   - HTTP/2 and Dubbo clients of B: a GOAWAY and the READONLY event, the stream and the call in
 *     flight complete, then the connections close.
 *
 * Not one request fails throughout.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { buildConfig } from '../../src/config/config';
import { adminPost, h2Upstream, httpUpstream, run, startSluice, stats, waitFor, withTestDefaults, type RunningSluice } from '../helpers/harness';
import { servedSerial, TestPki, type Workload } from '../helpers/certs';
import { Consumer, str } from '../integration/dubbo-peers';
import { xfccProvider } from './tls-peers';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const orders = [pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders'), pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders')];
const frontend = [pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend'), pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend')];
const caller = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/direct');
const serialOf = (w: Workload) => new X509Certificate(w.cert).serialNumber;
const CAP_MS = 1500;
const retirement = { onCertificateChange: true, onTrustBundleChange: true, timeoutMs: CAP_MS };

async function install(s: RunningSluice, w: Workload): Promise<void> {
  const r = await adminPost(s.admin, '/certs', JSON.stringify({ cert: w.cert, key: w.key, ca: w.ca }));
  if (r.status !== 200) throw new Error(`POST /certs: ${r.status} ${r.body}`);
}

/** Local ports of the established client-side connections to `port` (as `ss` sees them). */
async function clientPorts(port: number): Promise<Set<number>> {
  const r = await run('ss', ['-tnH', 'state', 'established', `( dport = :${port} )`]);
  const out = new Set<number>();
  for (const line of r.stdout.split('\n')) {
    const local = line.trim().split(/\s+/)[2];
    if (local) out.add(Number(local.slice(local.lastIndexOf(':') + 1)));
  }
  return out;
}

/** Bounded load: one sequential loop per entry of `requests`, each at most `max` requests and `ms`; a request answers its failure or null. */
function load(requests: Array<() => Promise<string | null>>, max: number, ms: number) {
  const failures: string[] = [];
  let done = 0;
  let stop = false;
  const deadline = Date.now() + ms;
  const all = Promise.all(requests.map(async (one) => {
    for (let i = 0; i < max && !stop && Date.now() < deadline; i++) {
      const failure = await one();
      if (failure !== null) failures.push(failure);
      done++;
    }
  }));
  return {
    failures,
    get done() { return done; },
    async stop() { stop = true; await all; },
  };
}

function getVia(agent: http.Agent, port: number, path: string, mod: typeof http | typeof https = http): Promise<string | null> {
  return new Promise((resolve) => {
    const req = mod.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve(res.statusCode === 200 && b === `ok ${path}` ? null : `${path}: ${res.statusCode} ${b}`));
    });
    req.on('error', (e) => resolve(`${path}: ${e.message}`));
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  });
}

async function setup(t: Test) {
  const app = await httpUpstream((req, res) => setTimeout(() => res.end(`ok ${req.url}`), req.url === '/slow' ? 800 : 0));
  const b = await startSluice({
    tls: { inbound: { mode: 'strict' }, retirement },
    listeners: [
      { name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' },
      { name: 'direct', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' },
    ],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${app.port}`] }],
  });
  await install(b, orders[0]);
  const aDoc = (principals: string[]) => ({
    tls: { inbound: { mode: 'disabled' }, retirement },
    listeners: [{ name: 'out', address: `127.0.0.1:${aPort}`, cluster: 'b' }],
    clusters: [{ name: 'b', endpoints: [`127.0.0.1:${b.port('in')}`], tls: { mode: 'mutual', principals } }],
  });
  let aPort = 0;
  const a = await startSluice(aDoc(['cluster.local/ns/shop/sa/orders']));
  aPort = a.port('out');
  await install(a, frontend[0]);
  t.teardown(async () => { await a.stop(); await b.stop(); await app.close(); });
  const plain = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const direct = new https.Agent({ keepAlive: true, maxSockets: 2, cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  t.teardown(() => { plain.destroy(); direct.destroy(); });
  return {
    a, b, aDoc, plain, direct,
    viaA: (path: string) => getVia(plain, a.port('out'), path),
    toB: (path: string) => getVia(direct, b.port('direct'), path, https),
  };
}

t.test('rotations under load: old connections finish and go, new ones use the new identity, the cap closes the idle', async (t) => {
  const { a, b, aDoc, direct, viaA, toB } = await setup(t);
  const l = load([() => viaA('/a'), () => viaA('/a'), () => toB('/b'), () => toB('/b')], 3000, 90_000);
  await waitFor(() => l.done >= 40 || null, 20_000, 'load running');

  // an idle mTLS connection that never speaks again, and a slow request in flight at the rotation
  const idle = tls.connect({ host: '127.0.0.1', port: b.port('direct'), cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  await once(idle, 'secureConnect');
  idle.write('GET /idle HTTP/1.1\r\nhost: orders\r\n\r\n');
  await once(idle, 'data');
  let idleClosedAt = 0;
  idle.on('close', () => { idleClosedAt = Date.now(); });
  idle.on('error', () => {});
  const slow = new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: b.port('direct'), path: '/slow', agent: direct }, (res) => {
      let body = ''; res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }));
    }).on('error', reject);
  });
  await new Promise((r) => setTimeout(r, 200));
  const aUpstreamBefore = await clientPorts(b.port('in'));
  t.ok(aUpstreamBefore.size >= 1, 'A holds connections to B');

  // B rotates
  const rotatedB = Date.now();
  await install(b, orders[1]);
  const s = await slow;
  t.same(s, { status: 200, body: 'ok /slow', connection: 'close' }, 'the request in flight completed, and its connection was told to close');
  t.equal(await servedSerial(b.port('direct'), caller), serialOf(orders[1]), 'a new handshake gets the new certificate');
  await waitFor(() => idleClosedAt || null, CAP_MS + 3000, 'the idle connection closed at the cap');
  t.ok(idleClosedAt - rotatedB >= CAP_MS - 100, `closed by the cap, not before (${idleClosedAt - rotatedB} ms)`);
  const mb = await stats(b.admin);
  t.ok((mb.get('sluice_tls_inbound_retired_total{listener="in"}') ?? 0) >= 1, 'A\'s connections to B retired');
  t.ok((mb.get('sluice_tls_inbound_retired_total{listener="direct"}') ?? 0) >= 2, 'direct clients\' connections retired');
  t.ok((mb.get('sluice_tls_retire_forced_total') ?? 0) >= 1, 'the idle one counted as closed at the cap');
  await waitFor(async () => {
    const now = await clientPorts(b.port('in'));
    return [...aUpstreamBefore].every((p) => !now.has(p)) || null;
  }, 5000, 'A\'s connections made before B\'s rotation gone');

  // A rotates: its pool connections made with the old certificate are drained and replaced
  await waitFor(async () => (await clientPorts(b.port('in'))).size >= 1 || null, 5000, 'A connected to B again');
  const beforeA = await clientPorts(b.port('in'));
  const doneBeforeA = l.done;
  await install(a, frontend[1]);
  await waitFor(async () => {
    const now = await clientPorts(b.port('in'));
    return [...beforeA].every((p) => !now.has(p)) && l.done > doneBeforeA + 20 ? now : null;
  }, CAP_MS + 5000, 'A\'s connections made with its old certificate gone, requests still served');
  const ma = await stats(a.admin);
  t.ok((ma.get('sluice_tls_outbound_retired_total') ?? 0) >= 1, 'A counted its retired upstream connections');

  // A's expected principals change by reload: connections checked against the old expectation go
  const beforeReload = await clientPorts(b.port('in'));
  const doneBeforeReload = l.done;
  await a.sluice.applyConfig(buildConfig(withTestDefaults(aDoc(['cluster.local/ns/shop/*'])), 'principals'));
  await waitFor(async () => {
    const now = await clientPorts(b.port('in'));
    return [...beforeReload].every((p) => !now.has(p)) && l.done > doneBeforeReload + 20 ? now : null;
  }, CAP_MS + 5000, 'connections checked against the old principals gone, requests still served');
  t.ok(((await stats(a.admin)).get('sluice_tls_outbound_retired_total') ?? 0) > (ma.get('sluice_tls_outbound_retired_total') ?? 0), 'and counted them');

  await l.stop();
  idle.destroy();
  t.same(l.failures, [], `no request failed (${l.done} requests)`);
});

t.test('100 rotations of B under light load: zero failed requests', async (t) => {
  const { b, viaA, toB } = await setup(t);
  const l = load([() => viaA('/a'), () => toB('/b')], 20_000, 120_000);
  await waitFor(() => l.done >= 20 || null, 20_000, 'load running');
  const deadline = Date.now() + 90_000;
  let rotations = 0;
  for (let i = 1; i <= 100 && Date.now() < deadline; i++) {
    await install(b, orders[i % 2]);
    rotations++;
    const at = l.done;
    await waitFor(() => l.done >= at + 2 || null, 10_000, `requests after rotation ${i}`);
  }
  await l.stop();
  t.equal(rotations, 100, 'every rotation done within the time bound');
  t.same(l.failures, [], `no request failed (${l.done} requests across ${rotations} rotations)`);
  const m = await stats(b.admin);
  t.equal(m.get('sluice_tls_cert_rotations_total'), 101);
  t.ok((m.get('sluice_tls_inbound_retired_total{listener="in"}') ?? 0) >= 50, 'A\'s connections were retired at the rotations');
});

t.test('HTTP/2 and Dubbo connections made with the old certificate: GOAWAY and READONLY, what is in flight completes', async (t) => {
  const h2app = await h2Upstream((stream, headers) => {
    setTimeout(() => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end(`ok ${headers[':path']}`); } }, headers[':path'] === '/slow' ? 800 : 0);
  });
  const prov = await xfccProvider(800);
  const b = await startSluice({
    tls: { inbound: { mode: 'strict' }, retirement },
    listeners: [
      { name: 'h2', address: '127.0.0.1:0', direction: 'inbound', cluster: 'h2app' },
      { name: 'dubbo', address: '127.0.0.1:0', direction: 'inbound', cluster: 'prov' },
    ],
    clusters: [{ name: 'h2app', protocol: 'http2', endpoints: [`127.0.0.1:${h2app.port}`] }, { name: 'prov', endpoints: [`127.0.0.1:${prov.port}`] }],
  });
  t.teardown(async () => { await b.stop(); await h2app.close(); prov.close(); });
  await install(b, orders[0]);

  const session = http2.connect(`https://127.0.0.1:${b.port('h2')}`, { cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  session.on('error', () => {});
  let goaway = false;
  session.on('goaway', () => { goaway = true; });
  const sessionClosed = once(session, 'close');
  const h2get = (path: string) => new Promise<string>((resolve) => {
    const req = session.request({ ':path': path });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => resolve(body));
    req.on('error', (e) => resolve(`error ${e.message}`));
    req.end();
  });
  t.equal(await h2get('/first'), 'ok /first');

  const sock = tls.connect({ host: '127.0.0.1', port: b.port('dubbo'), cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  await once(sock, 'secureConnect');
  const consumer = new Consumer(sock, true);
  t.teardown(() => { session.destroy(); consumer.close(); });

  const slowH2 = h2get('/slow');
  const slowDubbo = consumer.call('transfer', [str('x')]);
  await new Promise((r) => setTimeout(r, 200));
  const rotated = Date.now();
  await install(b, orders[1]);

  t.equal(await slowH2, 'ok /slow', 'the HTTP/2 stream in flight completed');
  await waitFor(() => goaway || null, 5000, 'a GOAWAY');
  const d = await slowDubbo;
  t.equal(d.status, 20, 'the Dubbo call in flight was answered');
  await waitFor(() => consumer.closed || null, CAP_MS + 3000, 'the Dubbo connection closed');
  t.same(consumer.log.filter((e) => e === 'readonly' || e === 'close' || e.startsWith('answer')), ['readonly', 'answer 1000', 'close'],
    'READONLY first, then the answer of the call in flight, then the close');
  await Promise.race([sessionClosed, new Promise((_, reject) => setTimeout(() => reject(new Error('the HTTP/2 session did not close')), CAP_MS + 3000))]);
  t.ok(Date.now() - rotated < CAP_MS + 1500, 'the HTTP/2 session closed (GOAWAY, then its streams done)');
  t.equal(await servedSerial(b.port('h2'), caller), serialOf(orders[1]), 'a new connection gets the new certificate');
  const m = await stats(b.admin);
  t.equal(m.get('sluice_tls_inbound_retired_total{listener="h2"}'), 1);
  t.equal(m.get('sluice_tls_inbound_retired_total{listener="dubbo"}'), 1);
});

t.test('what retires is what the config names: a new certificate alone keeps connections, a new trust bundle retires them', async (t) => {
  const app = await httpUpstream((req, res) => res.end(`ok ${req.url}`));
  const b = await startSluice({
    tls: { inbound: { mode: 'strict' }, retirement: { onCertificateChange: false, onTrustBundleChange: true, timeoutMs: CAP_MS } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${app.port}`] }],
  });
  t.teardown(async () => { await b.stop(); await app.close(); });
  await install(b, orders[0]);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  t.teardown(() => agent.destroy());
  const one = () => new Promise<{ port: number; connection: string | undefined }>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: b.port('in'), path: '/', agent }, (res) => {
      const port = res.socket.localPort ?? 0;
      res.resume();
      res.on('end', () => resolve({ port, connection: res.headers.connection }));
    }).on('error', reject);
  });
  const first = await one();
  await install(b, orders[1]);
  // proving a negative: give every worker time to hear of the new identity (it retires nothing)
  await new Promise((r) => setTimeout(r, 300));
  const afterCert = await one();
  t.same(afterCert, { port: first.port, connection: undefined }, 'a new certificate alone: the connection is kept');
  // a CA rotation begins: the bundle gains a second CA
  const other = readFileSync(path.join(pki.ca('next'), 'ca.pem'), 'utf8');
  const r = await adminPost(b.admin, '/certs', JSON.stringify({ cert: orders[1].cert, key: orders[1].key, ca: orders[1].ca + other }));
  t.equal(r.status, 200, 'the bundle with two CAs installed');
  await waitFor(async () => ((await stats(b.admin)).get('sluice_tls_inbound_retired_total{listener="in"}') ?? 0) >= 1 || null, 5000, 'the retirement counted');
  const afterBundle = await one();
  t.same(afterBundle, { port: first.port, connection: 'close' }, 'a new bundle: the connection is told to close after its next response');
  const next = await one();
  t.not(next.port, first.port, 'the next request is on a new connection');
  t.equal((await stats(b.admin)).get('sluice_tls_inbound_retired_total{listener="in"}'), 1);
});
