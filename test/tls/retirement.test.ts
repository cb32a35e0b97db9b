/**
 * permissive → strict by config reload, with requests in flight: mTLS callers see no failure;
 * plaintext connections opened under the old mode finish the request they have in flight, get
 * `connection: close`, and are retired, not cut; a new plaintext connection is refused.
 */
import http from 'node:http';
import https from 'node:https';
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { httpUpstream, startSluice, stats, waitFor, withTestDefaults } from '../helpers/harness';
import { TestPki } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const caller = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');

t.test('permissive → strict → permissive: plaintext retired after its request in flight, mTLS untouched', async (t) => {
  const up = await httpUpstream((req, res) => {
    const delay = req.url === '/slow' ? 1500 : 0;
    setTimeout(() => res.end(`done ${req.url}`), delay);
  });
  const doc = (mode: string) => ({
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode } },
    listeners: [{ name: 'in', address: `127.0.0.1:${port}`, direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  let port = 0;
  const s = await startSluice(doc('permissive'));
  port = s.port('in');
  t.teardown(async () => { await s.stop(); await up.close(); });

  // mTLS load throughout (bounded: at most 400 requests), counting failures
  const agent = new https.Agent({ keepAlive: true, maxSockets: 2, cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  t.teardown(() => agent.destroy());
  const failures: string[] = [];
  let stop = false;
  let mtlsDone = 0;
  const mtls = (async () => {
    for (let i = 0; i < 400 && !stop; i++) {
      await new Promise<void>((resolve) => {
        https.get({ host: '127.0.0.1', port, path: '/m', agent }, (res) => {
          let b = ''; res.on('data', (d) => { b += d; });
          res.on('end', () => { if (b !== 'done /m') failures.push(b); mtlsDone++; resolve(); });
        }).on('error', (e) => { failures.push(e.message); resolve(); });
      });
    }
  })();

  // a plaintext keep-alive connection with a slow request in flight when the port becomes strict
  const plainAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => plainAgent.destroy());
  const first = await new Promise<{ status: number; body: string }>((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/first', agent: plainAgent }, (res) => {
      let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
  });
  t.equal(first.body, 'done /first');
  let closed = false;
  const slow = new Promise<{ status: number; body: string; connection: string | undefined }>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/slow', agent: plainAgent }, (res) => {
      res.socket.once('close', () => { closed = true; });
      let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, connection: res.headers.connection }));
    });
    req.on('error', reject);
  });
  await new Promise((r) => setTimeout(r, 300)); // the slow request is in flight
  await s.sluice.applyConfig(buildConfig(withTestDefaults(doc('strict')), 'reload'));
  const r = await slow;
  t.equal(r.status, 200, 'the request in flight completed');
  t.equal(r.body, 'done /slow');
  t.equal(r.connection, 'close', 'and the connection was told to close');
  await waitFor(() => closed || null, 5000, 'the plaintext connection closed');
  const m = await waitFor(async () => {
    const m = await stats(s.admin);
    return (m.get('sluice_tls_inbound_plaintext_retired_total{listener="in"}') ?? 0) >= 1 ? m : null;
  }, 5000, 'retirement counted');
  t.ok(m);
  const refused = await new Promise<string>((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/after', agent: false }, () => resolve('answered')).on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? 'error'));
  });
  t.not(refused, 'answered', 'a new plaintext connection is refused on the strict port');

  await s.sluice.applyConfig(buildConfig(withTestDefaults(doc('permissive')), 'reload back'));
  const back = await new Promise<string>((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/back', agent: false }, (res) => { let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve(b)); }).on('error', (e) => resolve(e.message));
  });
  t.equal(back, 'done /back', 'rolled back to permissive: plaintext served again');
  await waitFor(() => mtlsDone >= 50 || null, 20_000, 'mTLS requests across the changes');
  stop = true;
  await mtls;
  t.same(failures, [], `no mTLS request failed (${mtlsDone})`);
});
