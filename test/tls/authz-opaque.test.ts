/**
 * Authorization of connections Sluice carries as opaque bytes (a protocol it does not speak, a
 * `protocol: tcp` listener, a server-speaks-first client): a rule about who calls (principals,
 * namespaces, source ranges) holds for them as for requests, so a denied caller cannot reach the
 * application by speaking something that is not HTTP or Dubbo. Real sockets: clients bound to
 * other loopback addresses, mTLS clients with certificates made here, and an upstream that greets
 * first and echoes, counting the connections that reach it.
 *
 * Checked from outside: a refused connection is closed with no byte of the upstream and the
 * upstream never sees it; an allowed one is carried; deny rules about requests (a path, a header)
 * leave opaque connections alone; an allow list by identity admits a TLS caller it names and
 * refuses plaintext; the counters by rule; shadow rules count and let through.
 */
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { adminPost, startSluice, stats, waitFor, withTestDefaults, type RunningSluice } from '../helpers/harness';
import { TestPki, type Workload } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const frontend = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const evil = pki.issue(ca, 'spiffe://cluster.local/ns/untrusted/sa/evil');

/** An upstream that greets each connection with `hi\n` and echoes what it reads; counts connections. */
async function greeter(t: Test): Promise<{ port: number; connections: () => number }> {
  let n = 0;
  const srv = net.createServer((s) => { n++; s.on('error', () => {}); s.write('hi\n'); s.pipe(s); });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return { port: (srv.address() as AddressInfo).port, connections: () => n };
}

interface Seen { got: string; closed: boolean }

/**
 * Connects (from `from`, or over mTLS as `w`), sends `send` unless null (null: says nothing, a
 * server-speaks-first client), and gathers what comes back until the socket closes or 1.5 s pass.
 */
async function talk(port: number, opts: { from?: string; w?: Workload; send: Buffer | null }): Promise<Seen> {
  const s: net.Socket = opts.w
    ? tls.connect({ host: '127.0.0.1', port, cert: opts.w.cert, key: opts.w.key, ca: server.ca, checkServerIdentity: () => undefined })
    : net.connect({ host: '127.0.0.1', port, localAddress: opts.from ?? '127.0.0.1' });
  let got = '';
  s.on('data', (d) => { got += d.toString('latin1'); });
  s.on('error', () => {});
  await once(s, opts.w ? 'secureConnect' : 'connect');
  if (opts.send) s.write(opts.send);
  const closed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 1500);
    s.once('close', () => { clearTimeout(timer); resolve(true); });
    // an echo has come back: enough to know the bytes were carried
    s.on('data', () => { if (opts.send && got.includes(opts.send.toString('latin1'))) { clearTimeout(timer); resolve(false); } });
  });
  s.destroy();
  return { got, closed };
}

/** Bytes no codec of Sluice takes for a request: carried as opaque TCP. */
const OPAQUE = Buffer.from([0x00, 0x01, 0x7f, 0xfe, 0x0a]);

const counter = async (s: RunningSluice, series: string, rule: string) => (await stats(s.admin)).get(`${series}{rule="${rule}"}`) ?? 0;

t.test('plaintext: rules on the caller\'s address hold for opaque connections, rules about requests do not', async (t) => {
  const up = await greeter(t);
  const s = await startSluice({
    listeners: [
      { name: 'raw', address: '127.0.0.1:0', cluster: 'app', protocol: 'tcp' },
      { name: 'auto', address: '127.0.0.1:0', cluster: 'app' },
    ],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
    tcp: { sniffTimeoutMs: 150 },
    authorization: [
      { name: 'block-dot3', action: 'deny', sourceRanges: ['127.0.0.3'] },
      { name: 'no-admin', action: 'deny', path: { prefix: '/admin' } },
      { name: 'no-prod', action: 'deny', headers: { 'x-env': 'prod' } },
      { name: 'only-raw-from-dot5', action: 'deny', listener: 'raw', sourceRanges: ['127.0.0.5'] },
    ],
  });
  t.teardown(() => s.stop());

  for (const listener of ['raw', 'auto']) {
    const before = up.connections();
    const ok = await talk(s.port(listener), { from: '127.0.0.2', send: OPAQUE });
    t.same(ok, { got: `hi\n${OPAQUE.toString('latin1')}`, closed: false }, `${listener}: an allowed caller is carried`);
    t.equal(up.connections(), before + 1);
    const denied = await talk(s.port(listener), { from: '127.0.0.3', send: OPAQUE });
    t.same(denied, { got: '', closed: true }, `${listener}: a denied caller is closed with nothing of the upstream`);
    t.equal(up.connections(), before + 1, `${listener}: the upstream never saw the denied connection`);
  }
  t.equal(await counter(s, 'sluice_authz_denied_total', 'block-dot3'), 2);

  // a client that says nothing is taken for a server-speaks-first one: decided before the upstream is dialled
  const before = up.connections();
  const silent = await talk(s.port('auto'), { from: '127.0.0.3', send: null });
  t.same(silent, { got: '', closed: true }, 'a silent denied caller is closed at the sniff timeout');
  t.equal(up.connections(), before, 'and no upstream connection was made for it');
  const greeted = await talk(s.port('auto'), { from: '127.0.0.2', send: null });
  t.same(greeted, { got: 'hi\n', closed: false }, 'a silent allowed caller gets the server\'s greeting');
  t.equal(await counter(s, 'sluice_authz_denied_total', 'block-dot3'), 3);

  // the listener condition of a rule holds
  t.same((await talk(s.port('raw'), { from: '127.0.0.5', send: OPAQUE })).closed, true, 'denied on the listener the rule names');
  t.same((await talk(s.port('auto'), { from: '127.0.0.5', send: OPAQUE })).closed, false, 'carried on another');
  t.equal(await counter(s, 'sluice_authz_denied_total', 'no-admin'), 0, 'deny rules about requests refused no connection');
  t.equal(await counter(s, 'sluice_authz_denied_total', 'no-prod'), 0);

  // HTTP on the same listener still meets the request rules
  const r = await fetch(`http://127.0.0.1:${s.port('auto')}/admin`).catch((e: Error) => e);
  t.ok(!(r instanceof Error) && r.status === 403, 'an HTTP request for /admin is still refused by its rule');
});

t.test('mTLS: a denied identity cannot reach the application by speaking opaque bytes inside TLS', async (t) => {
  const up = await greeter(t);
  const doc = (mode: 'enforce' | 'shadow') => ({
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'permissive' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
    authorization: [
      { name: 'no-untrusted', action: 'deny', mode, principals: ['cluster.local/ns/untrusted/*'] },
      { name: 'web-only', action: 'allow', mode, namespaces: ['web'] },
    ],
  });
  const s = await startSluice(doc('enforce'));
  t.teardown(() => s.stop());
  const port = s.port('in');

  const before = up.connections();
  const ok = await talk(port, { w: frontend, send: OPAQUE });
  t.same(ok, { got: `hi\n${OPAQUE.toString('latin1')}`, closed: false }, 'an allowed identity is carried');
  const denied = await talk(port, { w: evil, send: OPAQUE });
  t.same(denied, { got: '', closed: true }, 'a denied identity is closed, nothing of the upstream');
  const plain = await talk(port, { from: '127.0.0.2', send: OPAQUE });
  t.same(plain, { got: '', closed: true }, 'a plaintext caller has no identity: the allow list refuses it');
  t.equal(up.connections(), before + 1, 'only the allowed connection reached the application');
  t.equal(await counter(s, 'sluice_authz_denied_total', 'no-untrusted'), 1);
  t.equal(await counter(s, 'sluice_authz_denied_total', 'default_deny'), 1);
  t.equal(await counter(s, 'sluice_authz_allowed_total', 'web-only'), 1);

  // shadow: the same callers, all carried, counted as enforcing refused them
  const reloads = (await stats(s.admin)).get('sluice_config_reload_total') ?? 0;
  const r = await adminPost(s.admin, '/config', JSON.stringify(withTestDefaults(doc('shadow'))));
  t.equal(r.status, 200, r.body);
  await waitFor(async () => (await stats(s.admin)).get('sluice_config_reload_total') === reloads + 1, 10_000, 'the reload');
  const shadowBefore = await counter(s, 'sluice_authz_shadow_denied_total', 'no-untrusted');
  const e = await talk(port, { w: evil, send: OPAQUE });
  t.same(e, { got: `hi\n${OPAQUE.toString('latin1')}`, closed: false }, 'shadow: a denied identity is carried');
  t.equal(await counter(s, 'sluice_authz_shadow_denied_total', 'no-untrusted'), shadowBefore + 1, 'and counted under the rule that would refuse it');
  const p = await talk(port, { from: '127.0.0.2', send: OPAQUE });
  t.equal(p.closed, false, 'shadow: plaintext carried');
  t.ok(await counter(s, 'sluice_authz_shadow_denied_total', 'default_deny') >= 1, 'and counted as default_deny');
});
