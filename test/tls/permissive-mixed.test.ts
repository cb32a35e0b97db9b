/**
 * A permissive port takes plaintext and mTLS at once. Plaintext HTTP/1 reads through the worker's
 * shared buffer; TLS connections are sniffed through the same buffer, then read by TLS. Both at
 * once, with bodies, over HTTP/1 and HTTP/2: every body arrives whole, and only the mTLS callers
 * carry an identity.
 */
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { h2Upstream, httpUpstream, startSluice } from '../helpers/harness';
import { TestPki } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const caller = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** One POST over `sock` (plaintext or TLS), answered with connection: close; the body of the answer. */
function post(sock: net.Socket, path: string, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    sock.on('data', (d: Buffer) => { text += d.toString('latin1'); });
    sock.on('error', () => {});
    sock.on('close', () => resolve(text.slice(text.indexOf('\r\n\r\n') + 4)));
    sock.write(`POST ${path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n`);
    sock.end(body);
  });
}

t.test('plaintext and mTLS callers at once on a permissive port, HTTP/1 and HTTP/2, with bodies', async (t) => {
  const up = await httpUpstream((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (d: Buffer) => { h.update(d); n += d.length; });
    req.on('end', () => res.end(`${req.url} ${n} ${h.digest('hex')} ${req.headers['x-forwarded-client-cert'] ?? '-'}`));
  });
  // HTTP/2 callers go on as HTTP/2: their port leads to an HTTP/2 app
  const up2 = await h2Upstream((stream, headers) => {
    const h = createHash('sha256');
    let n = 0;
    stream.on('data', (d: Buffer) => { h.update(d); n += d.length; });
    stream.on('end', () => { stream.respond({ ':status': 200 }); stream.end(`${headers[':path']} ${n} ${h.digest('hex')} ${headers['x-forwarded-client-cert'] ?? '-'}`); });
  });
  const s = await startSluice({
    workers: { threads: 1 },
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'permissive' } },
    listeners: [
      { name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' },
      { name: 'in2', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app2' },
    ],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }, { name: 'app2', endpoints: [`127.0.0.1:${up2.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); await up2.close(); });
  const port = s.port('in');
  const xfcc = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/web/sa/frontend';
  const bodies = Array.from({ length: 12 }, (_, i) => randomBytes(5000 + i * 90_001));
  const tlsOpts = { host: '127.0.0.1', port, cert: caller.cert, key: caller.key, rejectUnauthorized: false };
  const plain = bodies.map((b, i) => post(net.connect({ port, host: '127.0.0.1' }), `/plain-${i}`, b));
  const mtls = bodies.map((b, i) => post(tls.connect({ ...tlsOpts, ALPNProtocols: ['http/1.1'] }), `/mtls-${i}`, b));
  const h2 = http2.connect(`https://127.0.0.1:${s.port('in2')}`, { ...tlsOpts, port: s.port('in2'), ALPNProtocols: ['h2'] });
  h2.on('error', () => {});
  const overH2 = bodies.map((b, i) => new Promise<string>((resolve) => {
    const st = h2.request({ ':method': 'POST', ':path': `/h2-${i}` });
    let text = '';
    st.setEncoding('latin1');
    st.on('data', (d: string) => { text += d; });
    st.on('close', () => resolve(text));
    st.end(b);
  }));
  const [p, m, h] = await Promise.all([Promise.all(plain), Promise.all(mtls), Promise.all(overH2)]);
  h2.close();
  for (let i = 0; i < bodies.length; i++) {
    const d = `${bodies[i].length} ${sha(bodies[i])}`;
    t.equal(p[i], `/plain-${i} ${d} -`, `plaintext ${i}: whole, no identity`);
    t.equal(m[i], `/mtls-${i} ${d} ${xfcc}`, `mTLS HTTP/1 ${i}: whole, with the caller's identity`);
    t.equal(h[i], `/h2-${i} ${d} ${xfcc}`, `mTLS HTTP/2 ${i}: whole, with the caller's identity`);
  }
});
