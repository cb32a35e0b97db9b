/**
 * Every way found to get a request past a deny route, tried with raw sockets against a running
 * Sluice: each now meets the route (403), is refused (400, GOAWAY, a closed connection), or
 * times out, and the upstream never sees a byte of it. Routes deny the path prefix /admin and
 * the host admin.internal; the upstream records every connection and every request it gets.
 */
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import { encodeRequest } from '../../src/protocols/dubbo';
import { H2Client, PREFACE, ErrorCode, headersFrame, hpack, requestFields, settingsFrame, type StreamResult } from '../helpers/h2-frames';
import { startSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';

// ── upstream ────────────────────────────────────────────────────────────────

interface Seen { method: string; url: string; host: string | undefined }
const seen: Seen[] = [];
let upstreamConnections = 0;
const upstream = http.createServer((req, res) => {
  seen.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host });
  req.resume();
  req.on('end', () => {
    // bodies end with a newline: Raw counts responses by status lines at the start of a line
    if (req.url === '/ws') { res.writeHead(200, { 'content-length': 3 }); res.end('no\n'); return; }
    // an endpoint that switches protocols unasked (a status taken from the request, say); what
    // follows on the connection is read as HTTP/1 requests again
    if (req.url === '/switch') { req.socket.write('HTTP/1.1 101 Switching Protocols\r\n\r\n'); return; }
    res.writeHead(200, { 'content-length': 3 });
    res.end('ok\n');
  });
});
upstream.on('connection', () => { upstreamConnections++; });
upstream.keepAliveTimeout = 30_000;

/**
 * An upstream that takes any `Upgrade: h2c` (as lenient servers do, without looking for
 * HTTP2-Settings in Connection) and serves HTTP/2 behind the 101. It records what it gets either way.
 */
const h2cSeen: string[] = [];
const h2Behind = http2.createServer();
h2Behind.on('stream', (s, h) => { h2cSeen.push(`h2 ${String(h[':path'])}`); s.respond({ ':status': 200 }); s.end('ok\n'); });
const lenient = http.createServer((req, res) => {
  h2cSeen.push(`h1 ${req.url} http2-settings=${req.headers['http2-settings'] ?? 'none'}`);
  res.writeHead(200, { 'content-length': 3 });
  res.end('ok\n');
});
lenient.on('upgrade', (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => {
  h2cSeen.push(`upgrade ${req.url} ${String(req.headers.upgrade)}`);
  if (String(req.headers.upgrade).toLowerCase() !== 'h2c') { sock.destroy(); return; }
  sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
  if (head.length) sock.unshift(head);
  h2Behind.emit('connection', sock);
});

let sluice: RunningSluice;

t.before(async () => {
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const up = `127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
  lenient.listen(0, '127.0.0.1');
  await once(lenient, 'listening');
  sluice = await startSluice({
    listeners: [
      { name: 'app', address: '127.0.0.1:0', cluster: 'web' },
      { name: 'strict', address: '127.0.0.1:0', cluster: 'web', opaque: 'refuse' },
      { name: 'httponly', address: '127.0.0.1:0', cluster: 'web', protocol: 'http' },
      { name: 'dubboonly', address: '127.0.0.1:0', cluster: 'web', protocol: 'dubbo' },
      { name: 'h2c', address: '127.0.0.1:0', cluster: 'lenient' },
    ],
    routes: [
      { name: 'deny-admin', match: { path: { prefix: '/admin' } }, action: { directResponse: { status: 403, body: 'denied\n' } } },
      { name: 'deny-admin-host', match: { service: 'admin.internal' }, action: { directResponse: { status: 403, body: 'denied host\n' } } },
      // any item of x-tenant equal to "blocked": one field or several, one protocol or the other
      { name: 'deny-tenant', match: { headers: { 'x-tenant': { regex: '(.*, )?blocked(, .*)?' } } }, action: { directResponse: { status: 403, body: 'denied tenant\n' } } },
    ],
    clusters: [
      { name: 'web', protocol: 'http1', endpoints: [up] },
      { name: 'lenient', protocol: 'http1', endpoints: [`127.0.0.1:${(lenient.address() as net.AddressInfo).port}`] },
    ],
    tcp: { sniffTimeoutMs: 200 },
    http: { headerTimeoutMs: 1000 },
  });
});

t.teardown(async () => {
  await sluice.stop();
  upstream.close();
  upstream.closeAllConnections();
  lenient.close();
  lenient.closeAllConnections();
});

/** Run a case and check that the upstream saw nothing of it. */
async function untouched(t: Test, what: string, fn: () => Promise<void>): Promise<void> {
  const before = { conns: upstreamConnections, reqs: seen.length };
  await fn();
  // the worker may still be dialling: a connection it opened would show up within this time
  await new Promise((r) => setTimeout(r, 50));
  t.equal(upstreamConnections, before.conns, `${what}: no upstream connection`);
  t.same(seen.slice(before.reqs), [], `${what}: no request reached the upstream`);
}

// ── a raw client ────────────────────────────────────────────────────────────

class Raw {
  data = '';
  closed = false;
  readonly done: Promise<void>;
  constructor(readonly s: net.Socket) {
    s.setEncoding('latin1');
    s.on('data', (d: string) => { this.data += d; });
    s.on('error', () => {});
    this.done = new Promise((r) => s.on('close', () => { this.closed = true; r(); }));
  }
  static async open(port: number): Promise<Raw> {
    const s = net.connect(port, '127.0.0.1');
    await once(s, 'connect');
    return new Raw(s);
  }
  send(x: string | Buffer): void { if (!this.s.destroyed) this.s.write(typeof x === 'string' ? Buffer.from(x, 'latin1') : x); }
  /** Waits until `n` complete HTTP/1 responses arrived (or the connection closed). */
  async responses(n: number, ms = 5000): Promise<number[]> {
    await waitFor(() => this.closed || (this.data.match(/^HTTP\/1\.1 \d{3}/gm) ?? []).length >= n, ms, `${n} response(s); got ${JSON.stringify(this.data.slice(0, 200))}`);
    return (this.data.match(/^HTTP\/1\.1 (\d{3})/gm) ?? []).map((l) => Number(l.slice(9)));
  }
  async closedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.done.then(() => true), new Promise<boolean>((res) => { timer = setTimeout(() => res(false), ms); })]);
    clearTimeout(timer);
    return r;
  }
  destroy(): void { this.s.destroy(); }
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function h1(port: number, request: string): Promise<number[]> {
  const c = await Raw.open(port);
  try {
    c.send(request);
    return await c.responses(1);
  } finally {
    c.destroy();
  }
}

async function h2(port: number, fields: ReadonlyArray<readonly [string, string]>): Promise<StreamResult> {
  const c = await H2Client.connect(port);
  try {
    await c.handshake();
    return await c.result(c.request(fields));
  } finally {
    c.destroy();
  }
}

const stat = async (name: string) => (await stats(sluice.admin)).get(name) ?? 0;

// ── 1. detection ────────────────────────────────────────────────────────────

t.test('leading empty lines are skipped, not taken for opaque bytes', async (t) => {
  const port = sluice.port('app');
  await untouched(t, 'one CRLF', async () => {
    t.same(await h1(port, '\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n'), [403]);
  });
  await untouched(t, 'two requests behind one CRLF', async () => {
    const c = await Raw.open(port);
    c.send('\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n');
    t.same(await c.responses(2), [403, 403]);
    c.destroy();
  });
  await untouched(t, 'four CRLFs', async () => {
    t.same(await h1(port, '\r\n\r\n\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n'), [403]);
  });
});

t.test('a pause longer than the sniff timeout inside the method or the preface', async (t) => {
  const port = sluice.port('app');
  await untouched(t, 'pause inside the method token', async () => {
    const c = await Raw.open(port);
    c.send('G');
    await delay(400); // twice tcp.sniffTimeoutMs
    c.send('ET /admin HTTP/1.1\r\nHost: a\r\n\r\n');
    t.same(await c.responses(1), [403]);
    c.destroy();
  });
  await untouched(t, 'pause after a leading CRLF', async () => {
    const c = await Raw.open(port);
    c.send('\r\n');
    await delay(400);
    c.send('GET /admin HTTP/1.1\r\nHost: a\r\n\r\n');
    t.same(await c.responses(1), [403]);
    c.destroy();
  });
  await untouched(t, 'pause inside the HTTP/2 preface', async () => {
    const c = await H2Client.connect(port);
    c.socket.write(PREFACE.subarray(0, 9));
    await delay(400);
    const send = c.send.bind(c);
    let first = true;
    c.send = (...bufs: Buffer[]) => {
      if (first) { first = false; bufs[0] = bufs[0].subarray(9); }
      send(...bufs);
    };
    await c.handshake();
    const r = await c.result(c.request(requestFields('GET', '/admin')));
    t.equal(r.status, 403);
    c.destroy();
  });
});

t.test('methods and separators that lenient servers accept go through the HTTP decoder', async (t) => {
  const port = sluice.port('app');
  const cases: Array<[string, string, number]> = [
    ['lowercase method', 'get /admin HTTP/1.1\r\nHost: a\r\n\r\n', 403],
    ['unknown method', 'FROB /admin HTTP/1.1\r\nHost: a\r\n\r\n', 403],
    ['a method longer than any known', `${'X'.repeat(40)} /admin HTTP/1.1\r\nHost: a\r\n\r\n`, 403],
    ['tab after the method', 'GET\t/admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
    ['vertical tab', 'GET\x0b/admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
    ['unit separator', 'GET\x1f/admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
    ['a CR inside the request line', 'GET\r/admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
    ['a leading space', ' GET /admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
    ['a leading bare LF', '\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
  ];
  for (const [name, req, want] of cases) {
    await untouched(t, name, async () => { t.same(await h1(port, req), [want], name); });
  }
});

t.test('a slowloris is timed out from its first byte', async (t) => {
  const port = sluice.port('app');
  const before = await stat('sluice_downstream_rq_timeout_total{protocol="http1"}');
  await untouched(t, 'one byte every 100 ms', async () => {
    const c = await Raw.open(port);
    const req = 'GET /public HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n\r\n';
    let sent = 0;
    const started = Date.now();
    while (sent < req.length && !c.closed && Date.now() - started < 5000) {
      c.send(req[sent++]);
      await delay(100);
    }
    t.equal(await c.closedWithin(2000), true, 'closed');
    t.ok(sent < req.length, `closed before the request was complete (${sent} of ${req.length} bytes)`);
    t.match(c.data, /^HTTP\/1\.1 408 /, 'answered 408');
  });
  t.ok(await stat('sluice_downstream_rq_timeout_total{protocol="http1"}') > before, 'counted as an HTTP/1 header timeout');

  const hdrBefore = await stat('sluice_downstream_cx_header_timeout_total{listener="app"}');
  await untouched(t, 'a method prefix and then nothing', async () => {
    const c = await Raw.open(port);
    c.send('GE');
    t.equal(await c.closedWithin(3000), true, 'closed after http.headerTimeoutMs');
  });
  t.equal(await stat('sluice_downstream_cx_header_timeout_total{listener="app"}'), hdrBefore + 1, 'counted');
});

t.test('a pause after Dubbo\'s first magic byte: refused, not passed on as opaque bytes', async (t) => {
  // as opaque TCP the rest of this call would reach the provider past every Dubbo route
  const call = encodeRequest({ id: 1, service: 'com.example.AdminService', method: 'get' });
  const before = await stat('sluice_downstream_cx_header_timeout_total{listener="app"}');
  await untouched(t, 'da, a pause, then the rest of the frame', async () => {
    const c = await Raw.open(sluice.port('app'));
    c.send(call.subarray(0, 1));
    t.equal(await c.closedWithin(3000), true, 'closed after http.headerTimeoutMs');
    c.send(call.subarray(1));
  });
  t.equal(await stat('sluice_downstream_cx_header_timeout_total{listener="app"}'), before + 1, 'counted as a header timeout');
});

t.test('unrecognised traffic on a listener that refuses it', async (t) => {
  const refusedBefore = await stat('sluice_downstream_cx_refused_total{listener="strict"}');
  await untouched(t, 'binary bytes', async () => {
    const c = await Raw.open(sluice.port('strict'));
    c.send(Buffer.from([0, 1, 2, 3]));
    t.equal(await c.closedWithin(3000), true);
  });
  await untouched(t, 'a silent client', async () => {
    const c = await Raw.open(sluice.port('strict'));
    t.equal(await c.closedWithin(3000), true, 'closed after the sniff timeout');
  });
  await untouched(t, 'TLS, which this listener does not terminate', async () => {
    const c = await Raw.open(sluice.port('strict'));
    c.send(Buffer.from('160301002e010000', 'hex'));
    t.equal(await c.closedWithin(3000), true);
  });
  t.equal(await stat('sluice_downstream_cx_refused_total{listener="strict"}'), refusedBefore + 3, 'each counted');
  // HTTP still works there
  t.same(await h1(sluice.port('strict'), 'GET /public HTTP/1.1\r\nHost: a\r\n\r\n'), [200]);
});

t.test('protocol: http and protocol: dubbo listeners take nothing else', async (t) => {
  await untouched(t, 'Dubbo magic on an http listener', async () => {
    const c = await Raw.open(sluice.port('httponly'));
    c.send(Buffer.from('dabbc20000000000000000010000000a', 'hex'));
    t.equal(await c.closedWithin(3000), true);
  });
  await untouched(t, 'silence on an http listener', async () => {
    const c = await Raw.open(sluice.port('httponly'));
    t.equal(await c.closedWithin(3000), true, 'closed after http.headerTimeoutMs');
  });
  await untouched(t, 'HTTP on a dubbo listener', async () => {
    const c = await Raw.open(sluice.port('dubboonly'));
    c.send('GET /admin HTTP/1.1\r\nHost: a\r\n\r\n');
    t.equal(await c.closedWithin(3000), true);
    t.notMatch(c.data, /HTTP\/1/, 'no HTTP answer');
  });
  t.same(await h1(sluice.port('httponly'), 'GET /public HTTP/1.1\r\nHost: a\r\n\r\n'), [200], 'HTTP/1 on the http listener');
  const r = await h2(sluice.port('httponly'), requestFields('GET', '/public'));
  t.equal(r.status, 200, 'HTTP/2 on the http listener');
});

t.test('an invalid HTTP/2 preface gets GOAWAY, not an HTTP/1 answer', async (t) => {
  for (const bad of ['PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ']) {
    await untouched(t, JSON.stringify(bad), async () => {
      const c = await H2Client.connect(sluice.port('app'));
      c.socket.write(Buffer.concat([Buffer.from(bad, 'latin1'), settingsFrame()]));
      const end = await c.goawayOrClose();
      t.equal(end.goaway?.code, ErrorCode.PROTOCOL_ERROR, 'GOAWAY PROTOCOL_ERROR');
      t.notMatch(c.raw.toString('latin1'), /HTTP\/1/, 'no HTTP/1 reply');
      c.destroy();
    });
  }
});

// ── 2-4. the authority and the path ─────────────────────────────────────────

t.test('absolute-form: routed and forwarded by the target\'s authority', async (t) => {
  const port = sluice.port('app');
  await untouched(t, 'absolute URI naming the denied host', async () => {
    t.same(await h1(port, 'GET http://admin.internal/x HTTP/1.1\r\nHost: public.test\r\n\r\n'), [403]);
  });
  const n = seen.length;
  t.same(await h1(port, 'GET http://public.test/x?y=1 HTTP/1.1\r\nHost: admin.internal\r\n\r\n'), [200]);
  t.same(seen.slice(n), [{ method: 'GET', url: '/x?y=1', host: 'public.test' }], 'origin-form and the routed host went upstream');
  await untouched(t, 'absolute URI with userinfo', async () => {
    t.same(await h1(port, 'GET http://u@public.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n'), [400]);
  });
});

t.test('paths are normalised before routing and forwarded normalised', async (t) => {
  const port = sluice.port('app');
  for (const p of ['/./admin', '//admin', '/%61dmin', '/%2e%2e/admin', '/x/../admin', '/x/%2E%2E/admin', '/.//admin/']) {
    await untouched(t, `HTTP/1 ${p}`, async () => { t.same(await h1(port, `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`), [403], p); });
    await untouched(t, `HTTP/2 ${p}`, async () => { t.equal((await h2(port, requestFields('GET', p))).status, 403, p); });
  }
  // /;x/admin: a servlet container drops the parameters and merges the slashes, and serves /admin
  for (const p of ['/admin%2Fx', '/x%2F..%2Fadmin', '/public/..;/admin', '/;x/admin', '/a%zz', '/x\\..\\admin']) {
    await untouched(t, `HTTP/1 ${p}`, async () => { t.same(await h1(port, `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`), [400], p); });
    await untouched(t, `HTTP/2 ${p}`, async () => { refused(t, await h2(port, requestFields('GET', p)), p); });
  }
  const n = seen.length;
  t.same(await h1(port, 'GET /public/./x/%7e%41?q=%2F HTTP/1.1\r\nHost: a\r\n\r\n'), [200]);
  t.equal((await h2(port, requestFields('GET', '/public//y/../z'))).status, 200);
  t.same(seen.slice(n).map((s) => s.url), ['/public/x/~A?q=%2F', '/public/z'], 'the normalised path went upstream');
});

t.test('hosts are validated and matched in one canonical form', async (t) => {
  const port = sluice.port('app');
  for (const host of ['a.test evil.test', 'user@evil.test', 'x@admin.internal', 'a.test,evil.test', '%61dmin.internal', 'admin..internal']) {
    await untouched(t, `Host: ${host}`, async () => { t.same(await h1(port, `GET /x HTTP/1.1\r\nHost: ${host}\r\n\r\n`), [400], host); });
    await untouched(t, `:authority ${host}`, async () => { refused(t, await h2(port, requestFields('GET', '/x', [], host)), host); });
  }
  for (const host of ['admin.internal.', 'ADMIN.Internal', 'admin.internal:8080', 'admin.internal.:80']) {
    await untouched(t, `Host: ${host}`, async () => { t.same(await h1(port, `GET /x HTTP/1.1\r\nHost: ${host}\r\n\r\n`), [403], host); });
    await untouched(t, `:authority ${host}`, async () => { t.equal((await h2(port, requestFields('GET', '/x', [], host))).status, 403, host); });
  }
  await untouched(t, 'host beside :authority naming another host', async () => {
    refused(t, await h2(port, requestFields('GET', '/x', [['host', 'admin.internal']], 'public.test')), 'host beside :authority');
  });
  const n = seen.length;
  t.same(await h1(port, 'GET /x HTTP/1.1\r\nHost: Public.Test.\r\n\r\n'), [200]);
  t.same(seen.slice(n).map((s) => s.host), ['public.test'], 'the canonical host went upstream');
});

function describeOutcome(r: StreamResult): string {
  return `status ${r.status}, rst ${r.rst}, goaway ${r.goaway?.code}`;
}

/** HTTP/2 refuses a malformed request with a stream error (the codec) or a 400 (the target rules): either way, not served. */
function refused(t: Test, r: StreamResult, what: string): void {
  t.ok(r.status === 400 || r.rst === ErrorCode.PROTOCOL_ERROR, `${what}: refused (${describeOutcome(r)})`);
}

t.test('a header field sent twice reads the same to a route in HTTP/1 and HTTP/2: its values joined', async (t) => {
  const port = sluice.port('app');
  // before: HTTP/1 gave a route the first value only, so `ok` then `blocked` passed a route that
  // HTTP/2 (joining) denied, and the application read "ok, blocked"
  for (const [what, fields] of [
    ['blocked then ok', 'X-Tenant: blocked\r\nX-Tenant: ok\r\n'],
    ['ok then blocked', 'X-Tenant: ok\r\nx-tenant: blocked\r\n'],
    ['one field, listed', 'X-Tenant: ok, blocked\r\n'],
    ['three fields', 'X-Tenant: a\r\nX-Tenant: blocked\r\nX-Tenant: c\r\n'],
  ] as const) {
    await untouched(t, `HTTP/1 ${what}`, async () => { t.same(await h1(port, `GET /x HTTP/1.1\r\nHost: a.test\r\n${fields}\r\n`), [403], `HTTP/1 ${what}`); });
    const h2Fields = fields.split('\r\n').filter((l) => l).map((l) => ['x-tenant', l.slice(l.indexOf(':') + 2)] as [string, string]);
    await untouched(t, `HTTP/2 ${what}`, async () => { t.equal((await h2(port, requestFields('GET', '/x', h2Fields))).status, 403, `HTTP/2 ${what}`); });
  }
  t.same(await h1(port, 'GET /x HTTP/1.1\r\nHost: a.test\r\nX-Tenant: ok\r\nX-Tenant: unblocked\r\n\r\n'), [200], 'no item equal to blocked: served');
});

t.test('HTTP/2 → HTTP/1: a :path no request line can carry is refused', async (t) => {
  const port = sluice.port('app');
  for (const p of ['/a b', '/a\tb', '/a\x7f', '/x?a b']) {
    await untouched(t, JSON.stringify(p), async () => {
      refused(t, await h2(port, requestFields('GET', p)), JSON.stringify(p));
    });
  }
});

// ── 6. upgrades ─────────────────────────────────────────────────────────────

t.test('an upgrade the upstream declines leaves the connection serving requests', async (t) => {
  const c = await Raw.open(sluice.port('app'));
  c.send('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n');
  t.same(await c.responses(1), [200], 'declined with a plain 200');
  t.match(c.data, /\r\n\r\nno\n/);
  c.send('GET /next HTTP/1.1\r\nHost: a\r\n\r\n');
  t.same(await c.responses(2, 3000), [200, 200], 'the next request on the same connection is answered');
  t.equal(c.closed, false);
  c.destroy();
  // and a request pipelined right behind the upgrade request
  const d = await Raw.open(sluice.port('app'));
  d.send('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n');
  t.same(await d.responses(2, 3000), [200, 200]);
  d.destroy();
});

t.test('an h2c upgrade is not forwarded: no tunnel of HTTP/2 requests past the routes', async (t) => {
  for (const connection of ['Upgrade', 'Upgrade, HTTP2-Settings']) {
    h2cSeen.length = 0;
    const c = await Raw.open(sluice.port('h2c'));
    c.send(`GET /public HTTP/1.1\r\nHost: a\r\nConnection: ${connection}\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`);
    t.same(await c.responses(1), [200], `${connection}: answered as a plain request`);
    // what a client sends after the 101 it hoped for
    const admin = hpack([[':method', 'GET'], [':scheme', 'http'], [':path', '/admin/secret'], [':authority', 'a']]);
    c.send(Buffer.concat([PREFACE, settingsFrame(), headersFrame(3, admin, { endStream: true })]));
    t.equal(await c.closedWithin(3000), true, `${connection}: the preface is no HTTP/1 request: closed`);
    t.same(h2cSeen, ['h1 /public http2-settings=none'], `${connection}: no upgrade, no HTTP2-Settings, nothing behind it reached the upstream`);
    c.destroy();
  }
});

t.test('a 101 the request did not ask for is no tunnel', async (t) => {
  const n = seen.length;
  const c = await Raw.open(sluice.port('app'));
  c.send('GET /switch HTTP/1.1\r\nHost: a\r\n\r\n');
  t.same(await c.responses(1), [502], 'an invalid response');
  t.match(c.data, /x-sluice-reason: upstream_reset/);
  c.send('GET /admin HTTP/1.1\r\nHost: a\r\n\r\n');
  const statuses = await c.responses(2, 2000).catch((err: Error) => err.message);
  t.same(seen.slice(n).map((x) => x.url), ['/switch'], 'nothing else reached the upstream');
  t.same(statuses, [502, 403], 'the next request meets the routes');
  c.destroy();
  const started = Date.now();
  const r = await h2(sluice.port('app'), requestFields('GET', '/switch'));
  t.equal(r.status, 502, 'HTTP/2 → HTTP/1: an invalid response');
  t.ok(Date.now() - started < 5000, `answered at once, not at a timeout (${Date.now() - started} ms)`);
});
