/**
 * Two Sluices on loopback, as two pods' sidecars: A originates mTLS to a cluster with
 * `tls.mode: mutual`, B terminates it in front of the application. A relay between them records
 * every byte on the wire: HTTP/1.1, HTTP/2 and Dubbo calls arrive with A's identity, and the
 * recorded bytes hold no request line, no HTTP/2 preface and no Dubbo magic. New connections from
 * A resume their TLS session; a peer whose identity the cluster does not expect is refused.
 */
import http2 from 'node:http2';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { get, h2Upstream, httpUpstream, startSluice, stats, waitFor } from '../helpers/harness';
import { xfccProvider } from './tls-peers';
import { TestPki } from '../helpers/certs';
import { Consumer, str } from '../integration/dubbo-peers';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const idA = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const idB = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const XFCC = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/web/sa/frontend';

/** A TCP relay that records what passes A → B and can cut every connection. */
async function relay(to: number): Promise<{ port: number; bytes(): Buffer; cut(): void; close(): void }> {
  const seen: Buffer[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(to, '127.0.0.1');
    socks.add(down); socks.add(up);
    down.on('data', (d: Buffer) => seen.push(Buffer.from(d)));
    down.pipe(up); up.pipe(down);
    const end = () => { down.destroy(); up.destroy(); socks.delete(down); socks.delete(up); };
    down.on('error', end); up.on('error', end); down.on('close', end); up.on('close', end);
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    bytes: () => Buffer.concat(seen),
    cut: () => { for (const s of socks) s.destroy(); },
    close: () => { for (const s of socks) s.destroy(); server.close(); },
  };
}

t.test('HTTP/1.1, HTTP/2 and Dubbo from A to B are encrypted on the wire and arrive with A\'s identity', async (t) => {
  const app1 = await httpUpstream((req, res) => res.end(`h1 ${req.url} ${req.headers['x-forwarded-client-cert']}`));
  const app2 = await h2Upstream((stream, headers) => { stream.respond({ ':status': 200 }); stream.end(`h2 ${headers[':path']} ${headers['x-forwarded-client-cert']}`); });
  const prov = await xfccProvider();
  const tlsOf = (w: typeof idA, mode: string) => ({ certFile: w.certFile, keyFile: w.keyFile, caFile: w.caFile, inbound: { mode } });
  const b = await startSluice({
    tls: tlsOf(idB, 'strict'),
    listeners: [
      { name: 'in1', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app1' },
      { name: 'in2', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app2' },
      { name: 'ind', address: '127.0.0.1:0', direction: 'inbound', cluster: 'prov' },
    ],
    clusters: [
      { name: 'app1', endpoints: [`127.0.0.1:${app1.port}`] },
      { name: 'app2', protocol: 'http2', endpoints: [`127.0.0.1:${app2.port}`] },
      { name: 'prov', endpoints: [`127.0.0.1:${prov.port}`] },
    ],
  });
  const r1 = await relay(b.port('in1'));
  const r2 = await relay(b.port('in2'));
  const rd = await relay(b.port('ind'));
  const principals = ['cluster.local/ns/shop/*'];
  const a = await startSluice({
    // one worker: a TLS session is cached per worker thread, and the resumption below must meet it
    workers: { threads: 1 },
    tls: tlsOf(idA, 'disabled'),
    listeners: [
      { name: 'out1', address: '127.0.0.1:0', cluster: 'b1' },
      { name: 'out2', address: '127.0.0.1:0', cluster: 'b2' },
      { name: 'outd', address: '127.0.0.1:0', cluster: 'bd' },
    ],
    clusters: [
      { name: 'b1', endpoints: [`127.0.0.1:${r1.port}`], tls: { mode: 'mutual', principals } },
      { name: 'b2', endpoints: [`127.0.0.1:${r2.port}`], tls: { mode: 'mutual', principals } },
      { name: 'bd', endpoints: [`127.0.0.1:${rd.port}`], tls: { mode: 'mutual', principals } },
    ],
  });
  t.teardown(async () => {
    await a.stop(); await b.stop(); r1.close(); r2.close(); rd.close();
    await app1.close(); await app2.close(); prov.close();
  });

  const h1 = await get(`http://127.0.0.1:${a.port('out1')}/orders/1`);
  t.equal(h1.status, 200);
  t.equal(h1.body, `h1 /orders/1 ${XFCC}`);

  const client = http2.connect(`http://127.0.0.1:${a.port('out2')}`);
  t.teardown(() => client.close());
  const h2body = await new Promise<string>((resolve, reject) => {
    const req = client.request({ ':path': '/orders/2' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; });
    req.on('end', () => resolve(body));
    req.on('error', reject);
    req.end();
  });
  t.equal(h2body, `h2 /orders/2 ${XFCC}`);

  const consumer = await Consumer.connect(a.port('outd'));
  t.teardown(() => consumer.sock.destroy());
  const d = await consumer.call('transfer', [str('x')]);
  t.equal(d.value, XFCC);

  for (const [name, r] of [['http/1.1', r1], ['http/2', r2], ['dubbo', rd]] as const) {
    const wire = r.bytes();
    t.ok(wire.length > 200, `${name}: bytes went through the relay`);
    t.equal(wire[0], 0x16, `${name}: a TLS handshake record first`);
    t.equal(wire.indexOf('GET /orders'), -1, `${name}: no plaintext request line`);
    t.equal(wire.indexOf('PRI * HTTP/2.0'), -1, `${name}: no HTTP/2 preface`);
    // the magic with a two-way Hessian2 request's flag byte: two bytes alone turn up in ciphertext by chance
    t.equal(wire.indexOf(Buffer.from([0xda, 0xbb, 0xc2])), -1, `${name}: no Dubbo request header`);
    t.equal(wire.indexOf('transfer'), -1, `${name}: no method name`);
  }
  const sb = await stats(b.admin);
  t.equal(sb.get('sluice_downstream_cx_protocol_total{listener="in2",protocol="http2"}'), 1, 'HTTP/2 inside TLS (ALPN h2 between sidecars)');
  t.equal(sb.get('sluice_downstream_cx_protocol_total{listener="ind",protocol="dubbo"}'), 1);

  // a new connection from A resumes its session with B (on any of B's workers: they share ticket keys)
  r1.cut();
  await waitFor(async () => (await get(`http://127.0.0.1:${a.port('out1')}/again`)).status === 200 || null, 5000, 'a request after the cut');
  const sa = await waitFor(async () => {
    const m = await stats(a.admin);
    return (m.get('sluice_tls_outbound_resumed_total{cluster="b1"}') ?? 0) >= 1 ? m : null;
  }, 5000, 'a resumed session');
  t.ok((sa.get('sluice_tls_outbound_handshake_total{cluster="b1"}') ?? 0) >= 2);
  const sb2 = await stats(b.admin);
  t.ok((sb2.get('sluice_tls_inbound_resumed_total{listener="in1"}') ?? 0) >= 1, 'B saw the resumption');
});

t.test('a peer whose SPIFFE ID the cluster does not expect is refused (503, as a connect failure), counted', async (t) => {
  const app = await httpUpstream((req, res) => res.end('reached'));
  const b = await startSluice({
    tls: { certFile: idB.certFile, keyFile: idB.keyFile, caFile: idB.caFile, inbound: { mode: 'strict' } },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${app.port}`] }],
  });
  const a = await startSluice({
    tls: { certFile: idA.certFile, keyFile: idA.keyFile, caFile: idA.caFile },
    listeners: [{ name: 'out', address: '127.0.0.1:0', cluster: 'b' }],
    clusters: [{ name: 'b', endpoints: [`127.0.0.1:${b.port('in')}`], tls: { mode: 'mutual', principals: ['cluster.local/ns/payments/sa/ledger'] } }],
  });
  t.teardown(async () => { await a.stop(); await b.stop(); await app.close(); });
  const r = await get(`http://127.0.0.1:${a.port('out')}/x`);
  t.equal(r.status, 503);
  t.equal(r.headers['x-sluice-reason'], 'upstream_connect_failed');
  t.notMatch(r.body, /reached/);
  const m = await stats(a.admin);
  t.ok((m.get('sluice_tls_outbound_refused_total{cluster="b",reason="principal_mismatch"}') ?? 0) >= 1);
});
