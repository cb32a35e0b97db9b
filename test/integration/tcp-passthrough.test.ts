/**
 * Opaque TCP through an explicit listener with a cluster (no capture): bytes
 * Sluice does not speak are proxied byte for byte both ways, server-speaks-
 * first protocols work (the sniff gives up after tcp.sniffTimeoutMs), half-
 * closes are carried, and TLS and Dubbo pass through as opaque bytes until
 * their codecs land. Each connection is counted by the protocol it showed.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { run, startSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';

type Behaviour = (s: net.Socket) => void;

/** A TCP server on 127.0.0.1:0 whose per-connection behaviour the current test sets. */
async function tcpUpstream() {
  let behaviour: Behaviour = (s) => s.pipe(s);
  const server = net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); behaviour(s); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  return {
    port: (server.address() as AddressInfo).port,
    set(b: Behaviour) { behaviour = b; },
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

/** Connects through the proxy; collects everything until the connection closes. */
function client(port: number, opts: { allowHalfOpen?: boolean } = {}) {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: opts.allowHalfOpen ?? false });
  const chunks: Buffer[] = [];
  let ended = false;
  let error: NodeJS.ErrnoException | null = null;
  s.on('data', (d: Buffer) => chunks.push(d));
  s.on('end', () => { ended = true; });
  s.on('error', (e) => { error = e; });
  const closed = once(s, 'close').then(() => ({ data: Buffer.concat(chunks), ended, error }));
  return { s, received: () => Buffer.concat(chunks), closed };
}

let up: Awaited<ReturnType<typeof tcpUpstream>>;
let s: RunningSluice;
let port: number;

t.before(async () => {
  up = await tcpUpstream();
  s = await startSluice({
    listeners: [{ name: 'tcp', address: '127.0.0.1:0', cluster: 'backend' }],
    clusters: [{ name: 'backend', endpoints: [`127.0.0.1:${up.port}`] }],
    tcp: { sniffTimeoutMs: 100 },
    http: { headerTimeoutMs: 500 },
  });
  port = s.port('tcp');
});

t.teardown(async () => { await s?.stop(); await up?.close(); });

async function protocolCount(protocol: string): Promise<number> {
  return (await stats(s.admin)).get(`sluice_downstream_cx_protocol_total{listener="tcp",protocol="${protocol}"}`) ?? 0;
}

t.test('opaque bytes go through byte for byte, both ways, with backpressure', async (t) => {
  const toUpstream = Buffer.concat([Buffer.from([0x00, 0xff, 0x13, 0x37]), randomBytes(2 << 20)]);
  const toClient = randomBytes(3 << 20);
  let upstreamGot: Promise<Buffer> = Promise.resolve(Buffer.alloc(0));
  up.set((sock) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    upstreamGot = once(sock, 'end').then(() => Buffer.concat(chunks));
    sock.end(toClient);
  });
  const before = await protocolCount('tcp');
  const c = client(port);
  c.s.end(toUpstream);
  const r = await c.closed;
  t.equal(r.error, null);
  t.ok(r.data.equals(toClient), `client received the upstream's ${toClient.length} bytes exactly (got ${r.data.length})`);
  const got = await upstreamGot;
  t.ok(got.equals(toUpstream), `upstream received the client's ${toUpstream.length} bytes exactly (got ${got.length})`);
  t.equal(await protocolCount('tcp'), before + 1, 'counted as tcp');
});

t.test('server speaks first: a banner reaches a client that has said nothing', async (t) => {
  up.set((sock) => {
    sock.write('220 banner.test ESMTP ready\r\n');
    sock.setEncoding('latin1');
    let buf = '';
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.includes('QUIT\r\n')) sock.end('221 bye\r\n');
    });
  });
  const before = await protocolCount('tcp');
  const c = client(port);
  await waitFor(() => c.received().toString('latin1') === '220 banner.test ESMTP ready\r\n', 10_000, 'the banner');
  c.s.write('QUIT\r\n');
  const r = await c.closed;
  t.equal(r.data.toString('latin1'), '220 banner.test ESMTP ready\r\n221 bye\r\n');
  t.equal(r.ended, true, 'closed with a FIN, not a reset');
  t.equal(await protocolCount('tcp'), before + 1, 'silence until the sniff timeout: tcp');
});

t.test('a client-first text protocol line passes at once', async (t) => {
  // "HELO x\r\n" is a token, a space: it could be a request line, so it goes to the HTTP decoder;
  // "QUIT\r\n" (a token and CRLF) is no request line anywhere: opaque at once
  up.set((sock) => {
    sock.setEncoding('latin1');
    sock.once('data', (d: string) => sock.end(`250 got ${d}`));
  });
  const before = await protocolCount('tcp');
  const c = client(port);
  c.s.write('QUIT\r\n');
  const r = await c.closed;
  t.equal(r.data.toString('latin1'), '250 got QUIT\r\n');
  t.equal(await protocolCount('tcp'), before + 1);
});

t.test('bytes that may still become an HTTP request never pass as opaque', async (t) => {
  // "HELO" fits a method token: it waits under http.headerTimeoutMs, then the connection is
  // closed; passing it on after the sniff timeout would let a slow request skip the routes
  let reached = 0;
  up.set((sock) => { reached++; sock.destroy(); });
  const hdrBefore = (await stats(s.admin)).get('sluice_downstream_cx_header_timeout_total{listener="tcp"}') ?? 0;
  const c = client(port);
  c.s.write('HELO');
  const r = await c.closed;
  t.equal(r.data.length, 0, 'no answer');
  t.equal(reached, 0, 'nothing reached the upstream');
  t.equal((await stats(s.admin)).get('sluice_downstream_cx_header_timeout_total{listener="tcp"}'), hdrBefore + 1, 'counted');
});

t.test('half-close: the client ends its side, the upstream still answers, then closes', async (t) => {
  let upstreamSawEnd = false;
  up.set((sock) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => {
      upstreamSawEnd = true;
      // answer only after the client's FIN arrived, from a later tick
      setImmediate(() => sock.end(`answer to ${Buffer.concat(chunks).toString('latin1')}`));
    });
  });
  const c = client(port, { allowHalfOpen: true });
  c.s.write('\x01question');
  c.s.end();
  const r = await c.closed;
  t.equal(upstreamSawEnd, true, 'the FIN reached the upstream');
  t.equal(r.data.toString('latin1'), 'answer to \x01question', 'the answer came back after the client half-closed');
  t.equal(r.ended, true, 'then the upstream\'s FIN');
  t.equal(r.error, null);
});

t.test('a client that half-closes without sending anything', async (t) => {
  up.set((sock) => {
    sock.resume();
    sock.on('end', () => sock.end('nothing asked, nothing owed'));
  });
  const c = client(port, { allowHalfOpen: true });
  await once(c.s, 'connect');
  c.s.end();
  const r = await c.closed;
  t.equal(r.data.toString('latin1'), 'nothing asked, nothing owed');
});

t.test('TLS passes through as opaque bytes: a real handshake with the upstream', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-tls-'));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const gen = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-subj', '/CN=upstream.test', '-days', '1', '-keyout', key, '-out', cert]);
  t.equal(gen.code, 0, `certificate generated ${gen.stderr.slice(-200)}`);
  const tlsServer = tls.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (sock) => {
    sock.on('error', () => {});
    sock.end(`hello ${sock.servername ?? 'nobody'} over ${sock.getProtocol()}`);
  });
  tlsServer.listen(0, '127.0.0.1');
  await once(tlsServer, 'listening');
  t.teardown(() => { tlsServer.close(); });
  const tlsPort = (tlsServer.address() as AddressInfo).port;
  // the cluster endpoint is the plain TCP upstream; route TLS there by splicing it to the TLS server
  up.set((sock) => {
    const to = net.connect(tlsPort, '127.0.0.1');
    to.on('error', () => sock.destroy());
    sock.pipe(to);
    to.pipe(sock);
  });
  const before = await protocolCount('tls');
  const c = tls.connect({ port, host: '127.0.0.1', servername: 'upstream.test', ca: readFileSync(cert) });
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(d));
  const [err] = await Promise.race([once(c, 'end').then(() => [null]), once(c, 'error')]);
  t.equal(err, null, 'handshake and read without error');
  t.equal(c.authorized, true, 'the upstream\'s certificate verified end to end: Sluice did not touch the bytes');
  t.match(Buffer.concat(chunks).toString(), /^hello upstream\.test over TLSv1\.3$/);
  c.destroy();
  t.equal(await protocolCount('tls'), before + 1, 'counted as tls');
});

t.test('raw ClientHello-looking bytes are echoed unchanged and counted', async (t) => {
  up.set((sock) => sock.pipe(sock));
  // (Dubbo is proxied as Dubbo now: test/integration/dubbo-proxy.test.ts)
  const cases: Array<[string, Buffer]> = [
    ['tls', Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03]), randomBytes(189)])],
  ];
  for (const [protocol, bytes] of cases) {
    const before = await protocolCount(protocol);
    const c = client(port);
    c.s.write(bytes);
    await waitFor(() => c.received().length >= bytes.length, 10_000, `${protocol} echo`);
    t.ok(c.received().equals(bytes), `${protocol}: the same ${bytes.length} bytes came back`);
    c.s.end();
    await c.closed;
    t.equal(await protocolCount(protocol), before + 1, `counted as ${protocol}`);
  }
  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_cx_protocol_total{listener="tcp",protocol="http1"}'), 0, 'nothing mistaken for HTTP/1');
  t.equal(st.get('sluice_downstream_cx_protocol_total{listener="tcp",protocol="http2"}'), 0, 'nothing mistaken for HTTP/2');
});

t.test('the upstream going away cuts the client off', async (t) => {
  up.set((sock) => { sock.once('data', () => sock.destroy()); });
  const c = client(port);
  c.s.write('\x00bye');
  const r = await c.closed;
  t.equal(r.data.length, 0, 'nothing came back');
});
