/**
 * HTTP/1.1 edge cases through a real Sluice, as a client sees them: malformed input, limits,
 * timeouts, upstream failures, pipelining, 100-continue, HTTP/1.0, bodiless responses and
 * hop-by-hop headers. Raw `net` sockets where exact bytes matter, curl where a real client is natural.
 */
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { httpUpstream, run, startSluice, stats, waitFor, type RunningSluice, type Upstream } from '../helpers/harness';

// ── a raw client that parses what comes back ───────────────────────────────────

interface Parsed {
  status: number;
  statusLine: string;
  headers: Map<string, string[]>;
  body: Buffer;
}

function header(r: Parsed, name: string): string | undefined {
  return r.headers.get(name)?.join(', ');
}

/** Parses one response from the front of `buf`; null when more bytes are needed. */
function parseResponse(buf: Buffer, noBody: boolean, closed: boolean): { res: Parsed; used: number } | null {
  const he = buf.indexOf('\r\n\r\n');
  if (he < 0) return null;
  const lines = buf.subarray(0, he).toString('latin1').split('\r\n');
  const statusLine = lines[0];
  const status = Number(statusLine.split(' ')[1]);
  const headers = new Map<string, string[]>();
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    const k = l.slice(0, c).toLowerCase();
    headers.set(k, [...(headers.get(k) ?? []), l.slice(c + 1).trim()]);
  }
  let pos = he + 4;
  const res: Parsed = { status, statusLine, headers, body: Buffer.alloc(0) };
  if (noBody || status < 200 || status === 204 || status === 304) return { res, used: pos };
  const te = headers.get('transfer-encoding')?.join(',');
  const cl = headers.get('content-length')?.[0];
  if (te === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const le = buf.indexOf('\r\n', pos);
      if (le < 0) return null;
      const size = parseInt(buf.subarray(pos, le).toString('latin1'), 16);
      if (size === 0) {
        const end = buf.indexOf('\r\n\r\n', le);
        if (end !== le) { if (end < 0) return null; pos = end + 4; } else pos = le + 4;
        if (pos > buf.length) return null;
        break;
      }
      if (buf.length < le + 2 + size + 2) return null;
      parts.push(buf.subarray(le + 2, le + 2 + size));
      pos = le + 2 + size + 2;
    }
    res.body = Buffer.concat(parts);
    return { res, used: pos };
  }
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < pos + n) return null;
    res.body = buf.subarray(pos, pos + n);
    return { res, used: pos + n };
  }
  if (!closed) return null; // read until close
  res.body = buf.subarray(pos);
  return { res, used: buf.length };
}

class RawConn {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  closed = false;
  closedAt = 0;
  readonly socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.poke(); });
    socket.on('error', () => { /* a reset counts as closed */ });
    socket.on('close', () => { this.closed = true; this.closedAt = Date.now(); this.poke(); });
  }

  static async open(port: number): Promise<RawConn> {
    const s = net.connect({ host: '127.0.0.1', port });
    await once(s, 'connect');
    return new RawConn(s);
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private next(deadline: number, what: string): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.wake = null; reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`)); }, left);
      this.wake = () => { clearTimeout(timer); resolve(); };
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits for one complete response and consumes it. */
  async response(opts: { noBody?: boolean; timeoutMs?: number } = {}): Promise<Parsed> {
    const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
    for (;;) {
      const p = parseResponse(this.buf, opts.noBody ?? false, this.closed);
      if (p) { this.buf = this.buf.subarray(p.used); return p.res; }
      if (this.closed) throw new Error(`connection closed before a complete response; got ${JSON.stringify(this.buf.toString('latin1').slice(0, 300))}`);
      await this.next(deadline, 'a response');
    }
  }

  /** Waits for the peer to close; returns the bytes left unread. */
  async untilClosed(timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) await this.next(deadline, 'the connection to close');
    return this.buf.toString('latin1');
  }

  get unread(): number { return this.buf.length; }

  peek(): string { return this.buf.toString('latin1'); }

  destroy(): void { this.socket.destroy(); }
}

/** One exchange on a fresh connection: send the bytes, read one response, expect the connection to close. */
async function sendRaw(port: number, bytes: string): Promise<{ res: Parsed; closed: boolean }> {
  const c = await RawConn.open(port);
  try {
    c.write(bytes);
    const res = await c.response();
    await c.untilClosed();
    return { res, closed: c.closed };
  } finally {
    c.destroy();
  }
}

async function counter(admin: string, series: string): Promise<number> {
  return (await stats(admin)).get(series) ?? 0;
}

/** An upstream that reads each request head and answers with `respond`; keeps the connection otherwise. */
async function rawUpstream(respond: (head: string, socket: net.Socket) => void): Promise<{ port: number; heads: string[]; close(): Promise<void> }> {
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let he = buf.indexOf('\r\n\r\n'); he >= 0; he = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, he + 4);
        buf = buf.slice(he + 4);
        heads.push(head);
        respond(head, s);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    heads,
    close: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

/** A port on loopback that nothing listens on. */
async function deadPort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A few requests first, so that a worker starting up on a loaded machine is not what a test measures. */
async function warm(url: string): Promise<void> {
  for (let i = 0; i < 4; i++) await run('curl', ['-sS', '-o', '/dev/null', url], 30_000);
}

/** curl -i: status and headers of the final response, and the body. */
async function curl(args: string[], timeoutMs = 20_000) {
  const r = await run('curl', ['-sS', '-i', ...args], timeoutMs);
  const blocks = r.stdout.split('\r\n\r\n');
  // skip interim (1xx) heads
  let i = 0;
  while (i < blocks.length - 1 && /^HTTP\/1\.1 1\d\d /.test(blocks[i])) i++;
  const headLines = (blocks[i] ?? '').split('\r\n');
  const headers = new Map<string, string>();
  for (const l of headLines.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers.set(l.slice(0, c).toLowerCase(), l.slice(c + 1).trim());
  }
  return { code: r.code, stderr: r.stderr, status: Number(headLines[0]?.split(' ')[1] ?? 0), headers, body: blocks.slice(i + 1).join('\r\n\r\n') };
}

// ── upstreams and the proxy under test ─────────────────────────────────────────

t.test('HTTP/1.1 error paths and edge cases', async (t) => {
  // `spy` counts everything that reaches it: malformed requests must never get there.
  let spyRequests = 0;
  let spyConnections = 0;
  const spy = await httpUpstream((req, res) => { spyRequests++; res.end('spy saw it\n'); });
  spy.server.on('connection', () => { spyConnections++; });

  const delays: Record<string, number> = { 1: 150, 2: 0, 3: 50 };
  const hang = { head: false, closed: false };
  const web = await httpUpstream((req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/web/pipe/')) {
      const n = url.slice('/web/pipe/'.length);
      setTimeout(() => res.end(`response ${n}`), delays[n] ?? 0);
      return;
    }
    if (url === '/web/len') { res.setHeader('content-length', 11); res.end('hello world'); return; }
    if (url === '/web/chunked') { res.write('a'); res.write('b'); res.end('c'); return; }
    if (url === '/web/204') { res.writeHead(204, { 'x-kind': 'no-content' }); res.end(); return; }
    if (url === '/web/304') { res.writeHead(304, { etag: '"v1"', 'content-length': '11' }); res.end(); return; }
    if (url === '/web/hang-body') {
      hang.head = true;
      req.on('close', () => { hang.closed = true; });
      req.resume();
      return;
    }
    if (url === '/web/echo') {
      let n = 0;
      req.on('data', (d: Buffer) => { n += d.length; });
      req.on('end', () => res.end(`got ${n} bytes, expect=${req.headers.expect ?? ''}`));
      return;
    }
    res.end(`web ${req.method} ${url}`);
  });

  web.server.on('upgrade', (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => {
    sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
    if (head.length) sock.write(`echo:${head}`);
    sock.on('data', (d) => sock.write(`echo:${d}`));
    sock.on('end', () => sock.end('bye'));
  });

  // `slow` accepts and reads but never answers
  const slowSockets = new Set<net.Socket>();
  const slow = net.createServer((s) => { slowSockets.add(s); s.on('error', () => s.destroy()); s.on('close', () => slowSockets.delete(s)); s.resume(); });
  slow.listen(0, '127.0.0.1');
  await once(slow, 'listening');

  // `cut` starts a response and dies in the middle of it
  const cut = await rawUpstream((head, s) => {
    const path = head.split(' ')[1];
    if (path === '/cut/len') {
      s.write(`HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n${'x'.repeat(30_000)}`, () => s.destroy());
    } else if (path === '/cut/chunked') {
      s.write(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4000\r\n${'y'.repeat(0x4000)}\r\n100\r\n${'z'.repeat(0x80)}`, () => s.destroy());
    } else {
      s.destroy(); // /cut/nothing: closes without a byte
    }
  });

  // `raw` echoes the request head it got and adds hop-by-hop fields to its response
  const raw = await rawUpstream((head, s) => {
    const body = Buffer.from(head, 'latin1');
    s.write(
      'HTTP/1.1 200 OK\r\n' +
      `Content-Length: ${body.length}\r\n` +
      'Connection: keep-alive, X-Resp-Hop\r\n' +
      'X-Resp-Hop: secret\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'TE: trailers\r\n' +
      'Upgrade: h2c\r\n' +
      'X-End: end-to-end\r\n' +
      'Via: 1.1 upstream-proxy\r\n' +
      '\r\n',
    );
    s.write(body);
  });

  // `early` answers 413 once the request body is well under way, and stops reading it
  const earlySockets = new Set<net.Socket>();
  const early = net.createServer((sock) => {
    earlySockets.add(sock);
    sock.on('close', () => earlySockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let got = 0;
    let answered = false;
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got < 1 << 20 || answered) return;
      answered = true;
      sock.pause();
      // long enough for Sluice to run into backpressure first, which is the case that matters
      setTimeout(() => sock.write('HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large'), 300);
    });
  });
  early.listen(0, '127.0.0.1');
  await once(early, 'listening');

  const dead = await deadPort();
  const up = (u: Upstream | { port: number }) => `127.0.0.1:${u.port}`;
  const s = await startSluice({
    listeners: [
      { name: 'app', address: '127.0.0.1:0' },
      { name: 'spy', address: '127.0.0.1:0', cluster: 'spy' },
    ],
    routes: [
      { name: 'dead', match: { path: { prefix: '/dead' } }, action: { cluster: 'dead' } },
      { name: 'slow', match: { path: { prefix: '/slow' } }, action: { cluster: 'slow', timeoutMs: 300 } },
      { name: 'cut', match: { path: { prefix: '/cut' } }, action: { cluster: 'cut' } },
      { name: 'web', match: { path: { prefix: '/web' } }, action: { cluster: 'web' } },
      { name: 'raw', match: { path: { prefix: '/raw' } }, action: { cluster: 'raw' } },
      { name: 'early', match: { path: { prefix: '/early' } }, action: { cluster: 'early' } },
    ],
    clusters: [
      { name: 'spy', endpoints: [up(spy)] },
      { name: 'dead', endpoints: [`127.0.0.1:${dead}`] },
      { name: 'slow', endpoints: [`127.0.0.1:${(slow.address() as AddressInfo).port}`] },
      { name: 'cut', endpoints: [up(cut)] },
      { name: 'web', endpoints: [up(web)] },
      { name: 'raw', endpoints: [up(raw)] },
      { name: 'early', endpoints: [`127.0.0.1:${(early.address() as AddressInfo).port}`] },
    ],
  });
  t.teardown(async () => {
    await s.stop();
    for (const x of [...slowSockets, ...earlySockets]) x.destroy();
    await Promise.all([spy.close(), web.close(), cut.close(), raw.close(), new Promise((r) => slow.close(r)), new Promise((r) => early.close(r))]);
  });
  const app = s.port('app');
  const base = `http://127.0.0.1:${app}`;
  await warm(base);

  await t.test('malformed requests get 400 (or 505) and a closed connection, and never reach the upstream', async (t) => {
    const series = 'sluice_downstream_protocol_error_total{protocol="http1"}';
    const before = await counter(s.admin, series);
    const cases: Array<[string, string, number[]]> = [
      ['two spaces in the request line', 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n', [400]],
      ['garbage after the version', 'GET / HTTP/1.1 x\r\nHost: a\r\n\r\n', [400]],
      ['space before the colon', 'GET / HTTP/1.1\r\nHost : a\r\n\r\n', [400]],
      ['obs-fold', 'GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n', [400]],
      ['Content-Length not a number', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n1', [400]],
      ['Content-Length negative', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n', [400]],
      ['two different Content-Lengths', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', [400]],
      ['Content-Length and Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', [400]],
      ['HTTP/1.1 without Host', 'GET / HTTP/1.1\r\n\r\n', [400]],
      ['HTTP/0.9 request line', 'GET /x\r\n\r\n', [400, 505]],
      ['HTTP/2.0 in an h1 request line', 'GET / HTTP/2.0\r\nHost: a\r\n\r\n', [400, 505]],
      ['HTTP/1.2', 'GET / HTTP/1.2\r\nHost: a\r\n\r\n', [400, 505]],
      ['bare LF smuggling', 'GET /x\nHost: a\r\nContent-Length: 5\r\n\r\nhello', [400]],
    ];
    for (const [name, bytes, statuses] of cases) {
      const { res, closed } = await sendRaw(s.port('spy'), bytes);
      t.ok(statuses.includes(res.status), `${name}: status ${res.status} is one of ${statuses}`);
      t.equal(header(res, 'connection'), 'close', `${name}: says connection: close`);
      t.ok(closed, `${name}: connection closed`);
    }
    t.equal(spyRequests, 0, 'the upstream saw no request');
    t.equal(spyConnections, 0, 'the upstream saw no connection');
    t.equal(await counter(s.admin, series), before + cases.length, 'one protocol error per case');
    // and the same listener does forward a well-formed request, so the zero above means something
    const ok = await sendRaw(s.port('spy'), 'GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    t.equal(ok.res.status, 200);
    t.equal(ok.res.body.toString(), 'spy saw it\n');
    t.equal(spyRequests, 1);
  });

  await t.test('upstream connect refused → 503 upstream_connect_failed', async (t) => {
    const r = await curl([`${base}/dead/x`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.status, 503);
    t.equal(r.headers.get('x-sluice-reason'), 'upstream_connect_failed');
    t.equal(await counter(s.admin, 'sluice_upstream_cx_connect_fail_total{cluster="dead"}'), 1);
  });

  await t.test('upstream that never answers → 504 upstream_timeout after the route timeout', async (t) => {
    const r = await curl([`${base}/slow/x`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.status, 504);
    t.equal(r.headers.get('x-sluice-reason'), 'upstream_timeout');
    t.equal(await counter(s.admin, 'sluice_upstream_rq_timeout_total{cluster="slow"}'), 1);
    await waitFor(() => slowSockets.size === 0, 5000, 'the abandoned upstream connection to close');
  });

  await t.test('no route → 404 no_route', async (t) => {
    const r = await curl([`${base}/nowhere`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.status, 404);
    t.equal(r.headers.get('x-sluice-reason'), 'no_route');
    t.equal(r.headers.get('connection'), undefined, 'a local reply to a request without a body keeps the connection');
    const two = await run('curl', ['-sS', '-v', '-o', '/dev/null', '-o', '/dev/null', `${base}/nowhere`, `${base}/nowhere`]);
    t.match(two.stderr, /Re-using existing connection/);
  });

  await t.test('upstream dies mid-response: the client sees the response cut off', async (t) => {
    const series = 'sluice_upstream_rq_reset_total{cluster="cut"}';
    const before = await counter(s.admin, series);
    const len = await run('curl', ['-sS', '-o', '/dev/null', `${base}/cut/len`]);
    t.equal(len.code, 18, 'curl: partial file');
    t.match(len.stderr, /transfer closed with \d+ bytes remaining to read/);
    const chunked = await run('curl', ['-sS', '-o', '/dev/null', `${base}/cut/chunked`]);
    t.equal(chunked.code, 18, 'curl: partial file');
    t.match(chunked.stderr, /transfer closed with outstanding read data remaining/);
    t.equal(await counter(s.admin, series), before + 2);
    // closed before a single response byte: a local reply, not a hang
    const nothing = await curl([`${base}/cut/nothing`]);
    t.equal(nothing.status, 503);
    t.equal(nothing.headers.get('x-sluice-reason'), 'upstream_reset');
    t.equal(await counter(s.admin, series), before + 3);
  });

  await t.test('pipelined requests in one write are answered in order on one upstream connection', async (t) => {
    const cx = 'sluice_upstream_cx_total{cluster="web"}';
    const cxBefore = await counter(s.admin, cx);
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write(['1', '2', '3'].map((n) => `GET /web/pipe/${n} HTTP/1.1\r\nHost: a\r\n\r\n`).join(''));
    for (const n of ['1', '2', '3']) {
      const r = await c.response();
      t.equal(r.status, 200);
      t.equal(r.body.toString(), `response ${n}`);
    }
    t.notOk(c.closed, 'connection kept');
    t.equal(await counter(s.admin, cx) - cxBefore, 1, 'one upstream connection served all three');
  });

  await t.test('pipelined requests followed by a half-close are all answered, then the connection closes', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write(['1', '2', '3'].map((n) => `GET /web/pipe/${n} HTTP/1.1\r\nHost: a\r\n\r\n`).join(''));
    c.socket.end();
    for (const n of ['1', '2', '3']) t.equal((await c.response()).body.toString(), `response ${n}`);
    t.equal(await c.untilClosed(), '');
  });

  await t.test('a client that half-closes in the middle of its request body gets 400, and the upstream request is dropped', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write('POST /web/hang-body HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789');
    await waitFor(() => hang.head, 5000, 'the upstream to get the request head');
    c.socket.end();
    const r = await c.response();
    t.equal(r.status, 400);
    await c.untilClosed();
    await waitFor(() => hang.closed, 5000, 'the upstream request to be dropped');
  });

  await t.test('an upstream that answers before reading the whole body: the client gets the answer and keeps its connection', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    const total = 32 << 20;
    c.write(`POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: ${total}\r\n\r\n`);
    const reply = c.response();
    reply.catch(() => {});
    // the whole body goes out with backpressure: Sluice must read it past once the answer came
    const chunk = Buffer.alloc(64 << 10, 0x61);
    const deadline = Date.now() + 20_000;
    for (let sent = 0; sent < total; sent += chunk.length) {
      if (!c.socket.write(chunk)) {
        const drained = await new Promise<boolean>((resolve) => {
          const done = (v: boolean) => { clearTimeout(timer); c.socket.off('drain', onDrain); c.socket.off('close', onClose); resolve(v); };
          const onDrain = () => done(true);
          const onClose = () => done(true);
          const timer = setTimeout(() => done(false), Math.max(0, deadline - Date.now()));
          c.socket.on('drain', onDrain);
          c.socket.on('close', onClose);
        });
        if (!drained) throw new Error(`upload stalled after ${sent} of ${total} bytes: Sluice stopped reading`);
        if (c.closed) break;
      }
    }
    const r = await reply;
    t.equal(r.status, 413);
    t.equal(r.body.toString(), 'too large');
    c.write('GET /web/len HTTP/1.1\r\nHost: a\r\n\r\n');
    t.equal((await c.response({ timeoutMs: 20_000 })).body.toString(), 'hello world', 'the same connection serves the next request');
  });

  await t.test('Expect: 100-continue with curl', async (t) => {
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-h1-')), 'body');
    writeFileSync(file, 'b'.repeat(200_000));
    const r = await run('curl', ['-sS', '-v', '-H', 'Expect: 100-continue', '--data-binary', `@${file}`, `${base}/web/echo`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, 'got 200000 bytes, expect=100-continue');
    t.match(r.stderr, /< HTTP\/1\.1 100 Continue/, 'the 100 Continue reached curl');
  });

  await t.test('HTTP/1.0 client without keep-alive gets its response and a close', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write('GET /web/len HTTP/1.0\r\n\r\n');
    const r = await c.response();
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'hello world');
    t.equal(header(r, 'connection'), 'close');
    t.equal(await c.untilClosed(), '', 'nothing after the response');
    // a body the upstream sent chunked reaches an HTTP/1.0 client as bytes until close
    const c2 = await RawConn.open(app);
    t.teardown(() => c2.destroy());
    c2.write('GET /web/chunked HTTP/1.0\r\n\r\n');
    const rest = await c2.untilClosed();
    const p = parseResponse(Buffer.from(rest, 'latin1'), false, true)!;
    t.equal(p.res.status, 200);
    t.equal(header(p.res, 'transfer-encoding'), undefined, 'no chunked framing towards HTTP/1.0');
    t.equal(p.res.body.toString(), 'abc');
    // HTTP/1.0 with keep-alive keeps the connection
    const c3 = await RawConn.open(app);
    t.teardown(() => c3.destroy());
    c3.write('GET /web/len HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const k1 = await c3.response();
    t.equal(header(k1, 'connection'), 'keep-alive');
    c3.write('GET /web/len HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const k2 = await c3.response();
    t.equal(k2.body.toString(), 'hello world');
    t.notOk(c3.closed);
  });

  await t.test('HEAD, 204 and 304 carry no body and the connection stays usable', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write(
      'HEAD /web/len HTTP/1.1\r\nHost: a\r\n\r\n' +
      'GET /web/204 HTTP/1.1\r\nHost: a\r\n\r\n' +
      'GET /web/304 HTTP/1.1\r\nHost: a\r\n\r\n' +
      'GET /web/len HTTP/1.1\r\nHost: a\r\n\r\n',
    );
    const head = await c.response({ noBody: true });
    t.equal(head.status, 200);
    t.equal(header(head, 'content-length'), '11', 'HEAD keeps the length of the body it did not send');
    const nc = await c.response({ noBody: true });
    t.equal(nc.status, 204);
    t.equal(header(nc, 'x-kind'), 'no-content');
    t.equal(header(nc, 'content-length'), undefined);
    t.equal(header(nc, 'transfer-encoding'), undefined);
    const nm = await c.response({ noBody: true });
    t.equal(nm.status, 304);
    t.equal(header(nm, 'etag'), '"v1"');
    // had any of the three above carried a body, these bytes would not start a status line
    const get = await c.response();
    t.equal(get.statusLine, 'HTTP/1.1 200 OK');
    t.equal(get.body.toString(), 'hello world');
    t.equal(c.unread, 0);
    c.write('GET /web/len HTTP/1.1\r\nHost: a\r\n\r\n');
    t.equal((await c.response()).body.toString(), 'hello world', 'keep-alive continues');
    t.notOk(c.closed);
  });

  await t.test('HEAD answered by Sluice itself (no route, dead upstream) carries no body either', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write('HEAD /nowhere HTTP/1.1\r\nHost: a\r\n\r\nHEAD /dead HTTP/1.1\r\nHost: a\r\n\r\nGET /web/len HTTP/1.1\r\nHost: a\r\n\r\n');
    const nr = await c.response({ noBody: true });
    t.equal(nr.status, 404);
    t.equal(header(nr, 'x-sluice-reason'), 'no_route');
    t.equal(header(nr, 'content-length'), String('no route\n'.length), 'the length of the body a GET would get');
    const dead = await c.response({ noBody: true });
    t.equal(dead.status, 503);
    t.equal(header(dead, 'x-sluice-reason'), 'upstream_connect_failed');
    // a body after either HEAD reply would be read here as the next status line
    const get = await c.response();
    t.equal(get.statusLine, 'HTTP/1.1 200 OK');
    t.equal(get.body.toString(), 'hello world');
    t.equal(c.unread, 0);
    t.notOk(c.closed);
  });

  await t.test('pipelined local replies and proxied answers in one write come back whole and in order', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    // local replies go out at the end of the worker's turn: several in one turn, and one behind a proxied answer
    c.write([
      'GET /nowhere/1', 'GET /nowhere/2', 'GET /web/pipe/2', 'GET /nowhere/3', 'HEAD /nowhere/4', 'GET /web/len',
    ].map((l) => `${l} HTTP/1.1\r\nHost: a\r\n\r\n`).join(''));
    for (let i = 0; i < 2; i++) t.equal((await c.response()).body.toString(), 'no route\n');
    t.equal((await c.response()).body.toString(), 'response 2');
    const nr = await c.response();
    t.equal(nr.status, 404);
    t.equal(nr.body.toString(), 'no route\n');
    t.equal((await c.response({ noBody: true })).status, 404);
    t.equal((await c.response()).body.toString(), 'hello world');
    t.equal(c.unread, 0);
    t.notOk(c.closed);
  });

  await t.test('a local reply sent before the request body turns out malformed reaches the client before the reset', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    // one write: the head is refused (no route, before any body), then the chunk size is not hex
    c.write('POST /nowhere HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
    const r = await c.response();
    t.equal(r.status, 404);
    t.equal(header(r, 'x-sluice-reason'), 'no_route');
    t.equal(header(r, 'connection'), 'close', 'the body was never read');
    await c.untilClosed();
  });

  await t.test('Upgrade: after 101 the connection is a tunnel both ways', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    // bytes right behind the upgrade request belong to the new protocol
    c.write('GET /web/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly');
    const r = await c.response({ noBody: true });
    t.equal(r.status, 101);
    t.equal(header(r, 'upgrade'), 'echo');
    const wanted = (s: string) => waitFor(() => c.peek().includes(s), 5000, JSON.stringify(s));
    await wanted('echo:early');
    c.write('ping');
    await wanted('echo:ping');
    t.notOk(c.closed, 'the tunnel stays open');
    c.socket.end();
    t.equal(await c.untilClosed(), 'echo:earlyecho:pingbye', 'half-close passed through both ways');
  });

  await t.test('hop-by-hop headers are dropped both ways; via is added or appended; Host is kept', async (t) => {
    const c = await RawConn.open(app);
    t.teardown(() => c.destroy());
    c.write(
      'GET /raw/h HTTP/1.1\r\n' +
      'Host: svc.example:8080\r\n' +
      'Connection: keep-alive, X-Secret\r\n' +
      'Keep-Alive: timeout=5\r\n' +
      'TE: trailers\r\n' +
      'Upgrade: websocket\r\n' +
      'Proxy-Connection: keep-alive\r\n' +
      'X-Secret: hop\r\n' +
      'X-Keep: end-to-end\r\n' +
      'Via: 1.0 fred\r\n' +
      '\r\n',
    );
    const r = await c.response();
    t.equal(r.status, 200);
    const seen = r.body.toString('latin1').split('\r\n').slice(1).filter(Boolean);
    const names = seen.map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    const value = (n: string) => seen.filter((l) => l.toLowerCase().startsWith(`${n}:`)).map((l) => l.slice(n.length + 1).trim());
    for (const hop of ['connection', 'keep-alive', 'te', 'upgrade', 'proxy-connection', 'x-secret', 'transfer-encoding']) {
      t.notOk(names.includes(hop), `request: ${hop} not forwarded`);
    }
    t.same(value('host'), ['svc.example:8080'], 'request: Host preserved');
    t.same(value('x-keep'), ['end-to-end']);
    t.same(value('via'), ['1.0 fred, 1.1 sluice'], 'request: via appended');
    for (const hop of ['x-resp-hop', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'transfer-encoding']) {
      t.equal(header(r, hop), undefined, `response: ${hop} not forwarded`);
    }
    t.not(header(r, 'connection') ?? '', /x-resp-hop/i);
    t.equal(header(r, 'x-end'), 'end-to-end');
    t.equal(header(r, 'via'), '1.1 upstream-proxy, 1.1 sluice', 'response: via appended');
    // and without a via of its own, a request gets one
    const plain = await run('curl', ['-sS', `${base}/raw/plain`]);
    t.match(plain.stdout, /\r\nvia: 1\.1 sluice\r\n/i);
    t.match(plain.stdout, new RegExp(`\r\nhost: 127\\.0\\.0\\.1:${app}\r\n`, 'i'), 'curl\'s Host kept');
  });
});

t.test('limits and timeouts', async (t) => {
  let seen = 0;
  const upstream = await httpUpstream((req, res) => {
    seen++;
    if (req.url === '/slow') setTimeout(() => res.end('slow ok'), 1600);
    else res.end('ok');
  });
  const s: RunningSluice = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    routes: [{ match: { path: { prefix: '/direct' } }, action: { directResponse: { status: 200, body: 'direct\n' } } }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${upstream.port}`] }],
    http: { maxHeaderBytes: 2048, maxHeaders: 10, headerTimeoutMs: 300, idleTimeoutMs: 1000 },
  });
  t.teardown(async () => { await s.stop(); await upstream.close(); });
  const port = s.port('app');
  await warm(`http://127.0.0.1:${port}/direct`);

  await t.test('header section over http.maxHeaderBytes → 431 and close', async (t) => {
    const errors = 'sluice_downstream_protocol_error_total{protocol="http1"}';
    const before = await counter(s.admin, errors);
    const ok = await sendRaw(port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(1500)}\r\nConnection: close\r\n\r\n`);
    t.equal(ok.res.status, 200, 'a head under the limit passes');
    const big = await sendRaw(port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(3000)}\r\n\r\n`);
    t.equal(big.res.status, 431);
    t.equal(header(big.res, 'connection'), 'close');
    t.ok(big.closed);
    // a head that never ends is refused as soon as it is too large, not at the header timeout
    const c = await RawConn.open(port);
    t.teardown(() => c.destroy());
    c.write(`GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'b'.repeat(1000)}`);
    c.write('b'.repeat(1000));
    c.write('b'.repeat(1000));
    const r = await c.response();
    t.equal(r.status, 431);
    await c.untilClosed();
    t.equal(await counter(s.admin, errors), before + 2);
    t.equal(seen, 1, 'only the request under the limit reached the upstream');
  });

  await t.test('more than http.maxHeaders fields → 431 and close', async (t) => {
    const fields = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');
    const ok = await sendRaw(port, `GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n${fields(8)}\r\n`);
    t.equal(ok.res.status, 200, '10 fields pass');
    const many = await sendRaw(port, `GET / HTTP/1.1\r\nHost: a\r\n${fields(10)}\r\n`);
    t.equal(many.res.status, 431, '11 fields do not');
    t.ok(many.closed);
  });

  await t.test('half a head within http.headerTimeoutMs → 408 and close', async (t) => {
    const timeouts = 'sluice_downstream_rq_timeout_total{protocol="http1"}';
    const before = await counter(s.admin, timeouts);
    const upBefore = seen;
    const c = await RawConn.open(port);
    t.teardown(() => c.destroy());
    c.write('GET / HTTP/1.1\r\nHost: a\r\n');
    const r = await c.response();
    t.equal(r.status, 408);
    t.equal(header(r, 'connection'), 'close');
    await c.untilClosed();
    t.equal(await counter(s.admin, timeouts), before + 1);
    t.equal(seen, upBefore);
  });

  await t.test('an idle keep-alive connection is closed by http.idleTimeoutMs, not by the header timeout', async (t) => {
    const c = await RawConn.open(port);
    t.teardown(() => c.destroy());
    c.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    const r = await c.response();
    const answered = Date.now();
    t.equal(r.status, 200);
    t.equal(header(r, 'connection'), undefined, 'keep-alive');
    t.equal(await c.untilClosed(15_000), '', 'closed without a reply');
    // timers never fire early, so this bound holds however loaded the machine is
    t.ok(c.closedAt - answered >= 900, `closed after ${c.closedAt - answered} ms idle (idleTimeoutMs 1000, headerTimeoutMs 300)`);
  });

  await t.test('a client that waits for 100-continue after a final answer is closed by the idle timeout', async (t) => {
    const c = await RawConn.open(port);
    t.teardown(() => c.destroy());
    c.write('POST /direct HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n');
    const r = await c.response();
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'direct\n');
    t.equal(header(r, 'connection'), 'close', 'the body was never read, so the connection will not be reused');
    t.equal(await c.untilClosed(15_000), '');
  });

  await t.test('the idle timeout still applies after a request that took longer than it', async (t) => {
    const c = await RawConn.open(port);
    t.teardown(() => c.destroy());
    c.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
    const r = await c.response();
    t.equal(r.body.toString(), 'slow ok', 'a request in flight is not cut by the idle timeout');
    t.equal(await c.untilClosed(15_000), '', 'then the idle connection is closed');
  });
});
