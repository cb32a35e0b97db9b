/**
 * Certificate rotation as a Kubernetes secret volume does it (new files in a new directory, then
 * an atomic rename of the `..data` symlink) and through POST /certs, under bounded load from
 * mTLS clients (new connections and kept-alive ones): not one request fails, every new handshake
 * after a rotation gets the new certificate, and a bad rotation is refused while the old identity
 * keeps serving.
 */
import https from 'node:https';
import { mkdirSync, renameSync, symlinkSync, copyFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { adminPost, get, httpUpstream, startSluice, stats, waitFor } from '../helpers/harness';
import { servedSerial, TestPki, type Workload } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const caller = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');

/** A directory laid out like a mounted secret: cert.pem -> ..data/cert.pem, ..data -> ..<version>. */
class SecretVolume {
  private n = 0;
  constructor(readonly dir: string) { mkdirSync(dir, { recursive: true }); }
  file(name: string): string { return path.join(this.dir, name); }
  /** Writes a new version and swaps ..data to it in one rename. */
  publish(w: Workload, keyFrom: Workload = w): void {
    const version = `..v${++this.n}`;
    const vdir = path.join(this.dir, version);
    mkdirSync(vdir);
    copyFileSync(w.certFile, path.join(vdir, 'cert.pem'));
    copyFileSync(keyFrom.keyFile, path.join(vdir, 'key.pem'));
    copyFileSync(w.caFile, path.join(vdir, 'ca.pem'));
    const tmp = path.join(this.dir, '..data_tmp');
    symlinkSync(version, tmp);
    renameSync(tmp, path.join(this.dir, '..data'));
    if (this.n === 1) for (const f of ['cert.pem', 'key.pem', 'ca.pem']) symlinkSync(path.join('..data', f), path.join(this.dir, f));
  }
}

t.test('10 rotations by symlink swap and one refused, under load: zero failed requests', async (t) => {
  const up = await httpUpstream((req, res) => res.end('ok'));
  const vol = new SecretVolume(path.join(pki.root, 'secret'));
  const versions = Array.from({ length: 11 }, () => pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders'));
  vol.publish(versions[0]);
  const s = await startSluice({
    tls: { certFile: vol.file('cert.pem'), keyFile: vol.file('key.pem'), caFile: vol.file('ca.pem'), watchIntervalMs: 50, inbound: { mode: 'strict' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const port = s.port('in');
  const serialOf = async () => JSON.parse((await get(`${s.admin}/certs`)).body).identity.serial as string;
  t.equal(await serialOf(), new (await import('node:crypto')).X509Certificate(versions[0].cert).serialNumber);

  // bounded load: 4 clients, each at most 2000 requests and 60 s, half on new connections
  let stop = false;
  const failures: string[] = [];
  let done = 0;
  const deadline = Date.now() + 60_000;
  const keep = new https.Agent({ keepAlive: true, maxSockets: 2, cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  const fresh = new https.Agent({ keepAlive: false, cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  const one = (agent: https.Agent) => new Promise<void>((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => { if (res.statusCode !== 200 || body !== 'ok') failures.push(`${res.statusCode} ${body}`); resolve(); });
    });
    req.on('error', (err) => { failures.push(err.message); resolve(); });
  });
  const loops = [keep, keep, fresh, fresh].map(async (agent) => {
    for (let i = 0; i < 2000 && !stop && Date.now() < deadline; i++) { await one(agent); done++; }
  });

  for (let v = 1; v <= 10; v++) {
    await waitFor(() => done >= v * 10 || null, 20_000, 'requests between rotations');
    vol.publish(versions[v]);
    const want = new (await import('node:crypto')).X509Certificate(versions[v].cert).serialNumber;
    await waitFor(async () => (await serialOf()) === want || null, 10_000, `rotation ${v} installed`);
    t.equal(await servedSerial(port, caller), want, `rotation ${v}: a new handshake gets the new certificate`);
    if (v === 5) {
      // a secret written with the wrong key: refused, the identity in force keeps serving
      const before = await serialOf();
      vol.publish(versions[6], versions[7]);
      await waitFor(async () => ((await stats(s.admin)).get('sluice_tls_cert_refused_total{reason="key_mismatch"}') ?? 0) >= 1 || null, 10_000, 'the bad rotation refused');
      t.equal(await serialOf(), before, 'the bad rotation did not replace the identity');
      t.equal(await servedSerial(port, caller), before);
      t.match(JSON.parse((await get(`${s.admin}/certs`)).body).lastRefusal, { reason: 'key_mismatch', source: 'file' });
    }
  }
  await waitFor(() => done >= 120 || null, 20_000, 'requests after the last rotation');
  stop = true;
  await Promise.all(loops);
  keep.destroy();
  t.same(failures, [], `no request failed (${done} requests)`);
  const m = await stats(s.admin);
  t.equal(m.get('sluice_tls_cert_rotations_total'), 11);
  t.ok((m.get('sluice_tls_cert_expiry_seconds') ?? 0) > 3600);
});

t.test('POST /certs installs an identity held in memory; a bad one is refused with the reason', async (t) => {
  const up = await httpUpstream((req, res) => res.end(String(req.headers['x-forwarded-client-cert'])));
  const s = await startSluice({
    tls: { inbound: { mode: 'strict' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  t.same(JSON.parse((await get(`${s.admin}/certs`)).body).installed, false);
  // no identity yet: an mTLS caller is refused, counted as such
  const early = tls.connect({ host: '127.0.0.1', port: s.port('in'), cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  await new Promise<void>((resolve) => { early.on('error', () => {}); early.once('close', () => resolve()); });
  // the worker counts the refusal as it closes: the client may hear the close first
  const refusedNoIdentity = async () => (await stats(s.admin)).get('sluice_tls_inbound_refused_total{listener="in",reason="no_identity"}') ?? 0;
  await waitFor(async () => (await refusedNoIdentity()) >= 1, 5000, 'the refusal counted');
  t.equal(await refusedNoIdentity(), 1);

  const w = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/pushed');
  const ok = await adminPost(s.admin, '/certs', JSON.stringify({ cert: w.cert, key: w.key, ca: w.ca }));
  t.equal(ok.status, 200, ok.body);
  t.match(JSON.parse(ok.body), { installed: true, source: 'api', identity: { id: 'cluster.local/ns/shop/sa/pushed' } });
  const r = await new Promise<string>((resolve, reject) => {
    https.get({ host: '127.0.0.1', port: s.port('in'), path: '/', cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined, agent: false }, (res) => {
      let b = ''; res.on('data', (d) => { b += d; }); res.on('end', () => resolve(b));
    }).on('error', reject);
  });
  t.equal(r, 'By=spiffe://cluster.local/ns/shop/sa/pushed;URI=spiffe://cluster.local/ns/web/sa/frontend');

  const noId = pki.issue(ca, undefined, { dns: ['x.example'] });
  const bad = await adminPost(s.admin, '/certs', JSON.stringify({ cert: noId.cert, key: noId.key, ca: noId.ca }));
  t.equal(bad.status, 400);
  t.match(JSON.parse(bad.body), { error: 'ERR_TLS_NO_SPIFFE_ID', reason: 'no_spiffe_id' });
  const other = pki.issue(pki.ca('other'), 'spiffe://cluster.local/ns/shop/sa/x');
  const unchained = await adminPost(s.admin, '/certs', JSON.stringify({ cert: other.cert, key: other.key, ca: w.ca }));
  t.match(JSON.parse(unchained.body), { reason: 'not_chained' });
  const unauth = await adminPost(s.admin, '/certs', JSON.stringify({ cert: w.cert, key: w.key, ca: w.ca }), null);
  t.equal(unauth.status, 401, 'a push needs the admin token');
  t.match(JSON.parse((await get(`${s.admin}/certs`)).body), { source: 'api', identity: { id: 'cluster.local/ns/shop/sa/pushed' } });
  const m = await stats(s.admin);
  t.equal(m.get('sluice_tls_cert_refused_total{reason="no_spiffe_id"}'), 1);
  t.equal(m.get('sluice_tls_cert_refused_total{reason="not_chained"}'), 1);
});

t.test('a config whose identity files are bad is refused at start and at reload, with the path', async (t) => {
  const w = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/b');
  const other = pki.issue(ca, 'spiffe://cluster.local/ns/a/sa/c');
  const doc = { tls: { certFile: w.certFile, keyFile: other.keyFile, caFile: w.caFile }, listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }], clusters: [{ name: 'app', endpoints: ['127.0.0.1:1'] }] };
  try {
    await startSluice(doc);
    t.fail('started');
  } catch (err) {
    t.match((err as Error).message, /\/tls\/keyFile: the private key \(keyFile\) is not the key of the certificate/);
  }
});
