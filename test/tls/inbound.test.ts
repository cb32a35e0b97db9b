/**
 * Inbound mTLS termination with real certificates (made by the openssl command) and real clients:
 * curl --cert, openssl s_client, @grpc/grpc-js over TLS, a dubbo-remoting consumer over TLS.
 * What a user sees: the application gets the caller's identity in x-forwarded-client-cert (a
 * forged one replaced or removed), strict refuses plaintext, permissive serves both, and a
 * certificate from another CA, an expired one or one without a SPIFFE ID is refused, counted by
 * reason.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { h2Upstream, httpUpstream, ROOT, run, startSluice, stats, waitFor } from '../helpers/harness';
import { xfccProvider } from './tls-peers';
import { TestPki, type Workload } from '../helpers/certs';
import { Consumer, str } from '../integration/dubbo-peers';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const ca = pki.ca('mesh');
const otherCa = pki.ca('other');
const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
const caller = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
const foreign = pki.issue(otherCa, 'spiffe://cluster.local/ns/web/sa/frontend');
const expired = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend', { notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
const noSpiffe = pki.issue(ca, undefined, { dns: ['frontend.web.svc'] });
const XFCC = 'By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/web/sa/frontend';

const tlsDoc = (mode: string) => ({ certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode } });

async function app() {
  return httpUpstream((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ xfcc: req.headers['x-forwarded-client-cert'] ?? null, path: req.url }));
  });
}

function curl(port: number, w: Workload | null, extra: string[] = []) {
  const certArgs = w ? ['--cert', w.certFile, '--key', w.keyFile] : [];
  return run('curl', ['-sS', '--http1.1', '-k', '--max-time', '10', ...certArgs, ...extra, `https://127.0.0.1:${port}/hello`, '-H', 'x-forwarded-client-cert: By=forged;URI=spiffe://cluster.local/ns/admin/sa/root']);
}

t.test('strict: mTLS callers reach the app with their identity; plaintext and bad certificates are refused, by reason', async (t) => {
  const up = await app();
  const s = await startSluice({
    tls: tlsDoc('strict'),
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const port = s.port('in');

  const ok = await curl(port, caller);
  t.equal(ok.code, 0, ok.stderr);
  t.same(JSON.parse(ok.stdout), { xfcc: XFCC, path: '/hello' }, 'the forged header is replaced by the verified identity');

  const plain = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`]);
  t.not(plain.code, 0, 'plaintext gets no answer');
  t.equal(plain.stdout, '');
  for (const [w, reason] of [[null, 'no_client_cert'], [foreign, 'not_chained'], [expired, 'expired'], [noSpiffe, 'no_spiffe_id']] as const) {
    const r = await curl(port, w);
    t.not(r.code, 0, `${reason}: refused`);
    t.notMatch(r.stdout, /xfcc/, `${reason}: nothing reached the app`);
  }
  const m = await waitFor(async () => {
    const m = await stats(s.admin);
    return (m.get('sluice_tls_inbound_refused_total{listener="in",reason="no_spiffe_id"}') ?? 0) >= 1 ? m : null;
  });
  t.equal(m.get('sluice_tls_inbound_plaintext_refused_total{listener="in"}'), 1);
  t.equal(m.get('sluice_tls_inbound_refused_total{listener="in",reason="no_client_cert"}'), 1);
  t.equal(m.get('sluice_tls_inbound_refused_total{listener="in",reason="not_chained"}'), 1);
  t.equal(m.get('sluice_tls_inbound_refused_total{listener="in",reason="expired"}'), 1);
  t.equal(m.get('sluice_tls_inbound_handshake_total{listener="in"}'), 1);

  // an independent client: openssl s_client, an HTTP/1.1 request typed into the TLS session
  const sc = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-cert', caller.certFile, '-key', caller.keyFile, '-CAfile', caller.caFile, '-quiet', '-alpn', 'http/1.1'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  sc.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  sc.stdin.write('GET /via-openssl HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n');
  await Promise.race([once(sc, 'exit'), new Promise((r) => setTimeout(r, 10_000))]);
  sc.kill();
  t.match(out, /HTTP\/1\.1 200/);
  t.match(out, JSON.stringify({ xfcc: XFCC, path: '/via-openssl' }));
});

t.test('tls.cipherSuites: what is configured is what is negotiated (openssl s_client)', async (t) => {
  const up = await app();
  const s = await startSluice({
    tls: { ...tlsDoc('strict'), cipherSuites: ['TLS_CHACHA20_POLY1305_SHA256'] },
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const sc = (suites: string) => run('sh', ['-c', `echo | openssl s_client -connect 127.0.0.1:${s.port('in')} -cert ${caller.certFile} -key ${caller.keyFile} -ciphersuites ${suites} 2>&1`]);
  const ok = await sc('TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256');
  t.match(ok.stdout, /Cipher is TLS_CHACHA20_POLY1305_SHA256/);
  const none = await sc('TLS_AES_128_GCM_SHA256');
  t.notMatch(none.stdout, /Cipher is TLS_AES_128_GCM_SHA256/, 'a suite not configured is not negotiated');
  t.match(none.stdout, /handshake failure|no shared cipher|alert/);
});

t.test('permissive: plaintext and mTLS on one port; a plaintext caller cannot claim an identity', async (t) => {
  const up = await app();
  const s = await startSluice({
    tls: tlsDoc('permissive'),
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const port = s.port('in');
  const plain = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/hello`, '-H', 'x-forwarded-client-cert: By=x;URI=spiffe://cluster.local/ns/admin/sa/root']);
  t.equal(plain.code, 0, plain.stderr);
  t.same(JSON.parse(plain.stdout), { xfcc: null, path: '/hello' }, 'the forged header is removed');
  const m = await curl(port, caller);
  t.same(JSON.parse(m.stdout), { xfcc: XFCC, path: '/hello' });
  // a bad certificate is refused in permissive mode too: permissive means plaintext or mTLS, not unchecked TLS
  const f = await curl(port, foreign);
  t.not(f.code, 0);
  const st = await stats(s.admin);
  t.equal(st.get('sluice_tls_inbound_plaintext_total{listener="in"}'), 1);
  t.equal(st.get('sluice_tls_inbound_handshake_total{listener="in"}'), 1);
});

t.test('mode per port: tls.inbound.ports overrides the listener, and a reload switches it', async (t) => {
  const up = await app();
  const doc = (ports: Record<string, string>) => ({
    tls: { ...tlsDoc('strict'), inbound: { mode: 'strict', ports } },
    listeners: [{ name: 'in', address: `127.0.0.1:${port}`, direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const s = await startSluice(doc({ [String(port)]: 'disabled' }));
  t.teardown(async () => { await s.stop(); await up.close(); });
  const plain = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/p`]);
  t.equal(plain.code, 0, 'disabled on this port: plaintext served');
  const { buildConfig } = await import('../../src/config/config');
  const { withTestDefaults } = await import('../helpers/harness');
  await s.sluice.applyConfig(buildConfig(withTestDefaults(doc({})), 'reload'));
  const after = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/p`]);
  t.not(after.code, 0, 'after the reload the port is strict');
  const m = await curl(port, caller);
  t.same(JSON.parse(m.stdout).xfcc, XFCC);
});

t.test('gRPC over mTLS (grpc-js, ALPN h2): the identity reaches the service as metadata', async (t) => {
  const def = protoLoader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const srv = new grpc.Server();
  srv.addService(pkg.sluice.test.Echo.service, {
    Unary(call: any, cb: any) { cb(null, { message: String(call.metadata.get('x-forwarded-client-cert')[0] ?? 'none'), index: 0, via: '' }); },
  });
  const gport = await new Promise<number>((res, rej) => srv.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  const s = await startSluice({
    tls: tlsDoc('strict'),
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'grpc' }],
    clusters: [{ name: 'grpc', protocol: 'http2', endpoints: [`127.0.0.1:${gport}`] }],
  });
  t.teardown(async () => { await s.stop(); srv.forceShutdown(); });
  const creds = grpc.credentials.createSsl(Buffer.from(caller.ca), Buffer.from(caller.key), Buffer.from(caller.cert), { checkServerIdentity: () => undefined });
  const client = new pkg.sluice.test.Echo(`127.0.0.1:${s.port('in')}`, creds);
  t.teardown(() => client.close());
  const reply = await new Promise<any>((res, rej) => client.Unary({ message: 'hi' }, (e: Error | null, r: unknown) => (e ? rej(e) : res(r))));
  t.equal(reply.message, XFCC);
  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_cx_protocol_total{listener="in",protocol="tls"}'), 1);
  t.equal(st.get('sluice_downstream_cx_protocol_total{listener="in",protocol="http2"}'), 1);
});

t.test('a client that offers h2 and http/1.1 (curl --cert, as it comes): served whatever the application speaks', async (t) => {
  const h1 = await httpUpstream((req, res) => res.end(`HTTP/${req.httpVersion} ${req.headers['x-forwarded-client-cert'] ?? 'none'}`));
  const h2 = await h2Upstream((stream, headers) => { stream.respond({ ':status': 200 }); stream.end(`h2 ${headers['x-forwarded-client-cert'] ?? 'none'}`); });
  const s = await startSluice({
    tls: tlsDoc('strict'),
    listeners: [
      { name: 'auto', address: '127.0.0.1:0', direction: 'inbound', cluster: 'h1app' },
      { name: 'h2', address: '127.0.0.1:0', direction: 'inbound', cluster: 'h2app' },
    ],
    clusters: [
      { name: 'h1app', endpoints: [`127.0.0.1:${h1.port}`] },
      { name: 'h2app', protocol: 'http2', endpoints: [`127.0.0.1:${h2.port}`] },
    ],
  });
  t.teardown(async () => { await s.stop(); await h1.close(); await h2.close(); });
  const curlAny = (port: number, extra: string[] = []) => run('curl', ['-sS', '-k', '--max-time', '10', '--cert', caller.certFile, '--key', caller.keyFile,
    '-w', '\n%{http_version} %{http_code}', ...extra, `https://127.0.0.1:${port}/hello`]);
  const a = await curlAny(s.port('auto'));
  t.equal(a.code, 0, a.stderr);
  t.equal(a.stdout, `HTTP/1.1 ${XFCC}\n1.1 200`, 'upstream protocol auto: HTTP/1.1 is chosen, and the HTTP/1.1 application answers');
  const b = await curlAny(s.port('h2'));
  t.equal(b.stdout, `h2 ${XFCC}\n2 200`, 'a listener whose upstream speaks HTTP/2: h2 is chosen');
  const c = await curlAny(s.port('auto'), ['--http2']);
  t.equal(c.stdout, `HTTP/1.1 ${XFCC}\n1.1 200`, 'curl --http2 offers both too');
  const only = tls.connect({ host: '127.0.0.1', port: s.port('auto'), cert: caller.cert, key: caller.key, ca: caller.ca, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  await once(only, 'secureConnect');
  t.equal(only.alpnProtocol, 'h2', 'a client that offers h2 alone still gets it');
  only.destroy();
});

t.test('Dubbo over mTLS (dubbo-remoting consumer on a TLS socket): the identity is an attachment', async (t) => {
  const prov = await xfccProvider();
  const s = await startSluice({
    tls: tlsDoc('strict'),
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound', cluster: 'dubbo' }],
    clusters: [{ name: 'dubbo', endpoints: [`127.0.0.1:${prov.port}`] }],
  });
  t.teardown(async () => { await s.stop(); prov.close(); });
  const sock = tls.connect({ host: '127.0.0.1', port: s.port('in'), cert: caller.cert, key: caller.key, ca: caller.ca, checkServerIdentity: () => undefined });
  await once(sock, 'secureConnect');
  const c = new Consumer(sock, true);
  t.teardown(() => sock.destroy());
  const a = await c.call('transfer', [str('x')], { 'x-forwarded-client-cert': 'forged' });
  t.equal(a.status, 20, a.error ?? 'ok');
  t.equal(a.value, XFCC);
  // plaintext Dubbo on the strict port: refused, the consumer sees the connection close
  const plain = await Consumer.connect(s.port('in'));
  const p = await plain.call('transfer', [str('x')], {}, 5000);
  t.equal(p.status, -1, 'closed without an answer');
});
