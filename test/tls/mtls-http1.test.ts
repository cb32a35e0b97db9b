/**
 * HTTP/1.1 through two sidecars over mTLS, A originating and B terminating, with what the mTLS
 * path does per request in view: A's pool reads the decrypted response without a Readable stream
 * (onread on the TLS socket), B writes each response as one TLS record. Large bodies both ways,
 * a slow reader (backpressure through both sidecars), pipelined requests, and a direct TLS
 * client whose resumed session still carries its identity.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { get, httpUpstream, run, startSluice, stats } from '../helpers/harness';
import { TestPki } from '../helpers/certs';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const idA = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const idB = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const idC = pki.issue(ca, 'spiffe://cluster.local/ns/bench/sa/client');
const XFCC_A = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/web/sa/frontend';
const XFCC_C = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/bench/sa/client';

const BIG = randomBytes(3 * 1024 * 1024 + 17);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function pair(t: Test) {
  const app = await httpUpstream((req, res) => {
    if (req.url === '/big') { res.setHeader('content-type', 'application/octet-stream'); res.end(BIG); return; }
    if (req.method === 'POST') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (d: Buffer) => { h.update(d); n += d.length; });
      req.on('end', () => res.end(`${n} ${h.digest('hex')}`));
      return;
    }
    res.end(`${req.url} ${req.headers['x-forwarded-client-cert']}`);
  });
  const tlsOf = (w: typeof idA, mode: string) => ({ certFile: w.certFile, keyFile: w.keyFile, caFile: w.caFile, inbound: { mode } });
  const b = await startSluice({
    workers: { threads: 1 },
    tls: tlsOf(idB, 'strict'),
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${app.port}`] }],
  });
  const a = await startSluice({
    workers: { threads: 1 },
    tls: tlsOf(idA, 'disabled'),
    listeners: [{ name: 'out', address: '127.0.0.1:0', cluster: 'b' }],
    clusters: [{ name: 'b', endpoints: [`127.0.0.1:${b.port('in')}`], tls: { mode: 'mutual', principals: ['cluster.local/ns/shop/sa/orders'] } }],
  });
  t.teardown(async () => { await a.stop(); await b.stop(); await app.close(); });
  return { a, b, app };
}

t.test('large bodies both ways over mTLS arrive intact, also to a client that reads slowly', async (t) => {
  const { a } = await pair(t);
  const url = `http://127.0.0.1:${a.port('out')}`;
  for (const [how, args] of [['a fast reader', []], ['a reader at 1 MB/s (both sidecars hold the rest back)', ['--limit-rate', '1M']]] as const) {
    const file = `${pki.root}/big.out`;
    const r = await run('curl', ['-s', ...args, '-o', file, '-w', '%{http_code} %{size_download}', `${url}/big`], 60_000);
    t.equal(r.stdout, `200 ${BIG.length}`, `${how}: the whole body`);
    const got = await run('sha256sum', [file]);
    t.equal(got.stdout.split(' ')[0], sha(BIG), `${how}: the same bytes as the application sent`);
  }
  const bodyFile = `${pki.root}/body.in`;
  writeFileSync(bodyFile, BIG);
  const post = await run('curl', ['-s', '--data-binary', `@${bodyFile}`, '-H', 'content-type: application/octet-stream', `${url}/upload`], 60_000);
  t.equal(post.stdout, `${BIG.length} ${sha(BIG)}`, 'a 3 MiB request body reached the application whole');
  const after = await get(`${url}/after`);
  t.equal(after.body, `/after ${XFCC_A}`, 'the pooled connection still serves requests after the large bodies');
});

t.test('pipelined requests over mTLS are answered in order, each with the caller\'s identity', async (t) => {
  const { a } = await pair(t);
  const s = net.connect(a.port('out'), '127.0.0.1');
  t.teardown(() => s.destroy());
  await once(s, 'connect');
  const paths = ['/p/1', '/p/2', '/p/3', '/p/4', '/p/5'];
  s.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nhost: app\r\n\r\n`).join(''));
  let text = '';
  const bodies: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${bodies.length} responses: ${text}`)), 10_000);
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      for (;;) {
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) break;
        const len = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? NaN);
        if (text.length < end + 4 + len) break;
        t.match(text.slice(0, 12), 'HTTP/1.1 200');
        bodies.push(text.slice(end + 4, end + 4 + len));
        text = text.slice(end + 4 + len);
      }
      if (bodies.length === paths.length) { clearTimeout(timer); resolve(); }
    });
  });
  t.same(bodies, paths.map((p) => `${p} ${XFCC_A}`));
});

t.test('a direct TLS client: full and resumed handshakes both carry its identity to the application', async (t) => {
  const { b } = await pair(t);
  let session: Buffer | undefined;
  const once1 = async (): Promise<{ body: string; reused: boolean }> => {
    const s = tls.connect({ host: '127.0.0.1', port: b.port('in'), cert: idC.cert, key: idC.key, ca: idC.ca, session, checkServerIdentity: () => undefined });
    s.on('session', (x: Buffer) => { session = x; });
    await once(s, 'secureConnect');
    const reused = s.isSessionReused();
    s.write('GET /who HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n');
    let text = '';
    s.on('data', (d: Buffer) => { text += d.toString('latin1'); });
    await once(s, 'close');
    return { body: text.slice(text.indexOf('\r\n\r\n') + 4), reused };
  };
  const first = await once1();
  t.equal(first.reused, false);
  t.equal(first.body, `/who ${XFCC_C}`);
  t.ok(session, 'a session ticket came');
  const second = await once1();
  t.equal(second.reused, true, 'the session was resumed');
  t.equal(second.body, `/who ${XFCC_C}`, 'the resumed connection has the identity of the first');
  const m = await stats(b.admin);
  t.equal(m.get('sluice_tls_inbound_resumed_total{listener="in"}'), 1);
});
