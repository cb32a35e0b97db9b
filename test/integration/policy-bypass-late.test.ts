/**
 * Ways past a deny route found after the first round of hardening, each closed:
 * - a client silent past tcp.sniffTimeoutMs that then sends a request: the upstream is dialled
 *   and held, and the first to speak decides; a client that speaks first is recognised;
 * - gRPC: `service` is the gRPC service, so a rule on the host is written on `authority`, which
 *   every HTTP request (gRPC included) has;
 * - segment parameters (`/admin;x/secret` is `/admin/secret` to a servlet container): routes
 *   match the path without them;
 * - a Dubbo generic call ($invoke) is routed by the method it invokes.
 * A server that speaks first (a banner) still gets opaque TCP.
 */
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { encodeRequest } from '../../src/protocols/dubbo';
import { H2Client, requestFields } from '../helpers/h2-frames';
import { startSluice, type RunningSluice } from '../helpers/harness';

interface Seen { url: string; host: string | undefined; xfh: string | undefined }
const seen: Seen[] = [];
const upstream = http.createServer((req, res) => {
  seen.push({ url: req.url ?? '', host: req.headers.host, xfh: req.headers['x-forwarded-host'] as string | undefined });
  req.resume();
  req.on('end', () => { res.writeHead(200, { 'content-length': 3 }); res.end('ok\n'); });
});

/** Dubbo calls the provider got, as `<service>#<method>(<first argument>)`. */
const calls: string[] = [];
const provider = net.createServer((sock) => {
  let buf = Buffer.alloc(0);
  sock.on('error', () => sock.destroy());
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
      const f = buf.subarray(0, 16 + buf.readUInt32BE(12));
      buf = buf.subarray(f.length);
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const { hessian } = require('../protocols/dubbo/fixtures');
      const dec = new hessian.DecoderV2(f.subarray(16));
      dec.read();
      const service = dec.read();
      dec.read();
      const method = dec.read();
      const desc = String(dec.read());
      const first = desc.length > 0 ? dec.read() : undefined;
      calls.push(`${service}#${method}(${String(first)})`);
    }
  });
});

let sluice: RunningSluice;
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.before(async () => {
  upstream.listen(0, '127.0.0.1');
  provider.listen(0, '127.0.0.1');
  await Promise.all([once(upstream, 'listening'), once(provider, 'listening')]);
  sluice = await startSluice({
    listeners: [
      { name: 'app', address: '127.0.0.1:0', cluster: 'web' },
      { name: 'dubbo', address: '127.0.0.1:0', cluster: 'providers' },
    ],
    routes: [
      { name: 'deny-admin', match: { path: { prefix: '/admin/' } }, action: { directResponse: { status: 403, body: 'denied\n' } } },
      { name: 'deny-admin-host', match: { authority: 'admin.internal' }, action: { directResponse: { status: 403, body: 'denied host\n' } } },
      { name: 'deny-delete', match: { protocol: 'dubbo', method: 'deleteAll' }, action: { directResponse: { status: 403, body: 'denied' } } },
    ],
    clusters: [
      { name: 'web', protocol: 'http1', endpoints: [`127.0.0.1:${(upstream.address() as net.AddressInfo).port}`] },
      { name: 'providers', endpoints: [`127.0.0.1:${(provider.address() as net.AddressInfo).port}`] },
    ],
    tcp: { sniffTimeoutMs: 200 },
  });
});

t.teardown(async () => {
  await sluice.stop();
  upstream.close();
  upstream.closeAllConnections();
  provider.close();
});

async function raw(port: number, parts: Array<string | Buffer | number>): Promise<string> {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  let data = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => { data += d; });
  s.on('error', () => {});
  for (const p of parts) {
    if (typeof p === 'number') await delay(p);
    else s.write(typeof p === 'string' ? Buffer.from(p, 'latin1') : p);
  }
  await delay(300);
  s.destroy();
  return data;
}

t.test('a client silent for tcp.sniffTimeoutMs, then HTTP: recognised, and denied', async (t) => {
  const n = seen.length;
  const data = await raw(sluice.port('app'), [400, 'GET /admin/secret HTTP/1.1\r\nHost: a\r\n\r\n']);
  t.match(data, /^HTTP\/1\.1 403 /, 'the deny route answered');
  t.same(seen.slice(n), [], 'nothing reached the upstream');
});

t.test('a client silent for tcp.sniffTimeoutMs, then Dubbo: recognised, and denied', async (t) => {
  const n = calls.length;
  const data = await raw(sluice.port('dubbo'), [400, encodeRequest({ id: 1, service: 'com.example.Svc', method: 'deleteAll' })]);
  t.equal(Buffer.from(data, 'latin1')[3], 40, 'a Dubbo error response (status 40) from the deny route');
  t.same(calls.slice(n), [], 'nothing reached the provider');
});

t.test('HTTP/2 with a gRPC content-type: a rule on the authority still applies', async (t) => {
  const n = seen.length;
  const c = await H2Client.connect(sluice.port('app'));
  await c.handshake();
  const r = await c.result(c.request(requestFields('POST', '/x', [['content-type', 'application/grpc']], 'admin.internal'), ''));
  c.destroy();
  t.equal(r.headers.get('grpc-status'), '7', 'PERMISSION_DENIED from the deny route');
  t.same(seen.slice(n), [], `nothing reached the upstream (status ${r.status})`);
});

t.test('a segment with parameters: /admin;x/secret meets the rule for /admin/', async (t) => {
  const n = seen.length;
  const data = await raw(sluice.port('app'), ['GET /admin;x/secret HTTP/1.1\r\nHost: a\r\n\r\n']);
  t.match(data, /^HTTP\/1\.1 403 /);
  t.same(seen.slice(n), [], 'nothing reached the upstream');
});

t.test('a Dubbo generic call is routed by the method it invokes', async (t) => {
  const n = calls.length;
  const generic = encodeRequest({
    id: 2, service: 'com.example.Svc', method: '$invoke', paramTypes: 'Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;',
    args: [{ $class: 'java.lang.String', $: 'deleteAll' }, { $class: '[java.lang.String', $: [] }, { $class: '[java.lang.Object', $: [] }] as never,
  });
  const data = await raw(sluice.port('dubbo'), [generic]);
  t.equal(Buffer.from(data, 'latin1')[3], 40, 'a Dubbo error response from the deny route');
  t.same(calls.slice(n), [], 'nothing reached the provider');
});

t.test('a server that speaks first still gets its opaque connection after the sniff timeout', async (t) => {
  const banner = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.write('220 ready\r\n');
    sock.on('data', (d: Buffer) => sock.end(`250 ${d.toString('latin1')}`));
  });
  banner.listen(0, '127.0.0.1');
  await once(banner, 'listening');
  t.teardown(() => banner.close());
  const s2 = await startSluice({
    listeners: [{ name: 'smtp', address: '127.0.0.1:0', cluster: 'mail' }],
    clusters: [{ name: 'mail', endpoints: [`127.0.0.1:${(banner.address() as net.AddressInfo).port}`] }],
    tcp: { sniffTimeoutMs: 100 },
  });
  t.teardown(() => s2.stop());
  const c = net.connect(s2.port('smtp'), '127.0.0.1');
  c.setEncoding('latin1');
  let got = '';
  c.on('data', (d: string) => {
    got += d;
    // after the banner the client speaks what may look like an HTTP method: the connection is opaque by then
    if (got === '220 ready\r\n') c.write('GET /admin/secret HTTP/1.1\r\n\r\n');
  });
  await once(c, 'close');
  t.equal(got, '220 ready\r\n250 GET /admin/secret HTTP/1.1\r\n\r\n', 'banner first, then bytes both ways');
});
