/**
 * What one keep-alive connection's requests share on the way in, attacked from outside: the
 * resolved Host and target reused while a request repeats the last one's, Connection-token lists
 * shared by messages with one token, the strings of common field names and values, the methods
 * a response decoder expects, and reads paused and resumed only by the session. Every request
 * must be routed, forwarded and refused on its own bytes, whatever came before it on the
 * connection, and malformed input must be refused as strictly after good requests as before.
 */
import { once } from 'node:events';
import net from 'node:net';
import type http from 'node:http';
import t, { type Test } from 'tap';
import { httpUpstream, startSluice, type RunningSluice, type Upstream } from '../helpers/harness';

interface Seen { who: string; method: string; url: string; raw: string[]; body: string }

/** An upstream that answers with its name, the request line and the fields and body it received (latin1). */
async function echoUpstream(t: Test, who: string, log: Seen[]): Promise<Upstream> {
  const up = await httpUpstream((req: http.IncomingMessage, res: http.ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const seen: Seen = { who, method: req.method!, url: req.url!, raw: req.rawHeaders, body: Buffer.concat(parts).toString('latin1') };
      log.push(seen);
      const body = Buffer.from(JSON.stringify(seen), 'latin1');
      res.setHeader('content-type', 'application/json');
      // a HEAD gets the length a GET would have, and no body: the response decoder must know the method
      res.setHeader('content-length', body.length);
      res.end(body);
    });
  });
  t.teardown(() => up.close());
  return up;
}

interface Stack { s: RunningSluice; log: Seen[]; port: number }

async function stack(t: Test, http: Record<string, unknown> = {}, more: Record<string, unknown> = {}): Promise<Stack> {
  const log: Seen[] = [];
  const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((w) => echoUpstream(t, w, log)));
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [
      { name: 'app', address: '127.0.0.1:0', cluster: 'c' },
      { name: 'limited', address: '127.0.0.1:0', cluster: 'c' },
    ],
    clusters: [
      { name: 'a', endpoints: [`127.0.0.1:${a.port}`] },
      { name: 'b', endpoints: [`127.0.0.1:${b.port}`] },
      { name: 'c', endpoints: [`127.0.0.1:${c.port}`] },
    ],
    routes: [
      { name: 'tenant-gold', match: { headers: { 'x-tenant': 'gold' } }, action: { cluster: 'a' } },
      { name: 'service-b', match: { service: 'b.example' }, action: { cluster: 'b' } },
      { name: 'path-gold', match: { path: { prefix: '/gold/' } }, action: { cluster: 'a' } },
    ],
    rateLimits: [{ name: 'refuse-all', match: { listener: 'limited' }, requestsPerMinute: 1, burst: 1 }],
    ...(Object.keys(http).length ? { http } : {}),
    ...more,
  });
  t.teardown(() => s.stop());
  return { s, log, port: s.port('app') };
}

interface Reply { status: number; head: string; headers: Map<string, string>; body: string }

/** Reads whole responses (content-length framed, or bodiless) off a socket as they come. */
class Reader {
  private buf = Buffer.alloc(0);
  private waiting: (() => void) | null = null;
  closed = false;
  constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.waiting?.(); });
    sock.on('close', () => { this.closed = true; this.waiting?.(); });
    sock.on('error', () => {});
  }

  /** The next response, or null when the connection closed first (fails the test after `ms`). */
  async next(headOnly = false, ms = 5000): Promise<Reply | null> {
    const deadline = Date.now() + ms;
    for (;;) {
      const r = this.take(headOnly);
      if (r) return r;
      if (this.closed) return null;
      if (Date.now() > deadline) throw new Error(`no whole response in ${ms} ms; have ${JSON.stringify(this.buf.toString('latin1'))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiting = () => { clearTimeout(timer); this.waiting = null; resolve(); };
      });
    }
  }

  private take(headOnly: boolean): Reply | null {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const head = this.buf.subarray(0, end).toString('latin1');
    const lines = head.split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) { const i = l.indexOf(':'); headers.set(l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()); }
    const n = headOnly ? 0 : Number(headers.get('content-length') ?? 0);
    if (this.buf.length < end + 4 + n) return null;
    const body = this.buf.subarray(end + 4, end + 4 + n).toString('latin1');
    this.buf = this.buf.subarray(end + 4 + n);
    return { status, head, headers, body };
  }

  get rest(): number { return this.buf.length; }
}

async function connect(t: Test, port: number): Promise<Reader> {
  const c = net.connect({ port, host: '127.0.0.1', noDelay: true });
  await once(c, 'connect');
  t.teardown(() => c.destroy());
  return new Reader(c);
}

/** One request on the connection, its response. */
async function ask(r: Reader, raw: string, headOnly = false): Promise<Reply | null> {
  r.sock.write(Buffer.from(raw, 'latin1'));
  return r.next(headOnly);
}

function seen(reply: Reply | null): Seen {
  if (!reply || reply.status !== 200) throw new Error(`not proxied: ${reply ? reply.head : 'closed'}`);
  return JSON.parse(reply.body) as Seen;
}

/** The values of a field the upstream received, by its name in any case. */
function fieldsOf(s: Seen, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.raw.length; i += 2) if (s.raw[i].toLowerCase() === name) out.push(s.raw[i + 1]);
  return out;
}

t.test('one keep-alive connection: each request is routed and forwarded on its own Host and target', async (t) => {
  const { port } = await stack(t);
  const r = await connect(t, port);
  const go = async (target: string, host: string | null, want: string, url: string, hostSent?: string) => {
    const reply = await ask(r, `GET ${target} HTTP/1.1\r\n${host === null ? '' : `Host: ${host}\r\n`}\r\n`);
    const s = seen(reply);
    t.equal(s.who, want, `${target} with Host ${host} goes to ${want}`);
    t.equal(s.url, url, `${target} with Host ${host} is forwarded as ${url}`);
    if (hostSent !== undefined) t.same(fieldsOf(s, 'host'), [hostSent], `and with Host ${hostSent}`);
  };
  await go('/x', 'b.example', 'b', '/x', 'b.example');
  await go('/x', 'b.example', 'b', '/x', 'b.example');
  await go('/x', 'B.Example', 'b', '/x', 'b.example');
  await go('/x', 'b.example.', 'b', '/x', 'b.example');
  await go('/x', 'b.example:8080', 'b', '/x', 'b.example:8080');
  await go('/x', 'c.example', 'c', '/x', 'c.example');
  await go('/gold/x', 'c.example', 'a', '/gold/x');
  await go('/gold/../x', 'c.example', 'c', '/x');
  await go('/gold/x', 'c.example', 'a', '/gold/x');
  await go('/gold/%2e%2e/x', 'c.example', 'c', '/x');
  await go('/gold/x?q=1', 'c.example', 'a', '/gold/x?q=1');
  await go('http://b.example/x', 'c.example', 'b', '/x', 'b.example');
  await go('/x', 'c.example', 'c', '/x', 'c.example');
  await go('http://c.example/gold/y', 'b.example', 'a', '/gold/y', 'c.example');
  await go('/gold/y', 'b.example', 'b', '/gold/y', 'b.example');
  await go('/gold/y', 'c.example', 'a', '/gold/y', 'c.example');
  // a Host that cannot be made canonical is refused each time it comes, and the next request is served
  for (let i = 0; i < 2; i++) {
    const bad = await ask(r, 'GET /x HTTP/1.1\r\nHost: b.example..\r\n\r\n');
    t.equal(bad?.status, 400, 'an invalid Host is refused');
    t.match(bad?.body, /invalid Host/, 'with its reason');
  }
  await go('/x', 'b.example', 'b', '/x', 'b.example');
  const bad = await ask(r, 'GET /a/%2f/b HTTP/1.1\r\nHost: b.example\r\n\r\n');
  t.equal(bad?.status, 400, 'an escaped slash is refused after the same Host was served');
  await go('/x', 'b.example', 'b', '/x', 'b.example');
  // HTTP/1.0 without Host: routed on the target alone
  const h10 = await ask(r, 'GET /gold/z HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
  t.equal(seen(h10).who, 'a', 'HTTP/1.0 without Host, by its path');
  await go('/z', 'b.example', 'b', '/z', 'b.example');
});

t.test('header fields that differ only in case or whitespace route the same; values are compared as sent', async (t) => {
  const { port } = await stack(t);
  const r = await connect(t, port);
  const cases: Array<[string, string]> = [
    ['X-Tenant: gold', 'a'], ['x-tenant:gold', 'a'], ['X-TENANT:\t gold \t', 'a'], ['x-tenant: Gold', 'c'],
    ['x-tenant: gold ', 'a'], ['X-tenant:   gold', 'a'], ['x-tenant: gol', 'c'], ['x-tenant: golden', 'c'], ['X-Tenant: gold', 'a'],
  ];
  for (const [field, want] of cases) {
    const s = seen(await ask(r, `GET /t HTTP/1.1\r\nHost: c.example\r\n${field}\r\n\r\n`));
    t.equal(s.who, want, `${JSON.stringify(field)} goes to ${want}`);
    t.same(fieldsOf(s, 'x-tenant'), [field.slice(field.indexOf(':') + 1).trim()], 'forwarded without its surrounding whitespace');
  }
  // two values are tested joined ("gold, silver"), as HTTP/2 gives them: neither order is "gold"
  const two = seen(await ask(r, 'GET /t HTTP/1.1\r\nHost: c.example\r\nX-TENANT: gold\r\nx-tenant: silver\r\n\r\n'));
  t.equal(two.who, 'c', 'two x-tenant fields are tested joined, not by the first');
  const two2 = seen(await ask(r, 'GET /t HTTP/1.1\r\nHost: c.example\r\nx-tenant: silver\r\nX-TENANT: gold\r\n\r\n'));
  t.equal(two2.who, 'c', 'nor by the last');
  t.equal(seen(await ask(r, 'GET /t HTTP/1.1\r\nHost: c.example\r\nX-Tenant: gold\r\n\r\n')).who, 'a', 'one gold on the same connection still routes to a');
});

t.test('Connection tokens name the fields dropped for their own message only', async (t) => {
  const { port } = await stack(t);
  const r = await connect(t, port);
  let s = seen(await ask(r, 'GET /1 HTTP/1.1\r\nHost: c.example\r\nConnection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: 1\r\n\r\n'));
  t.same(fieldsOf(s, 'x-secret'), [], 'a field named by a second Connection header is not forwarded');
  t.same(fieldsOf(s, 'x-kept'), ['1'], 'the others are');
  s = seen(await ask(r, 'GET /2 HTTP/1.1\r\nHost: c.example\r\nX-Secret: 2\r\n\r\n'));
  t.same(fieldsOf(s, 'x-secret'), ['2'], 'the next request without it keeps the field');
  s = seen(await ask(r, 'GET /3 HTTP/1.1\r\nHost: c.example\r\nConnection: Keep-Alive, x-other\r\nX-Other: 1\r\nX-Secret: 3\r\n\r\n'));
  t.same(fieldsOf(s, 'x-other'), [], 'a token after keep-alive in one header is honoured');
  t.same(fieldsOf(s, 'x-secret'), ['3'], 'and no token of an earlier message is');
  s = seen(await ask(r, 'GET /4 HTTP/1.1\r\nHost: c.example\r\nConnection: x-first, keep-alive\r\nX-First: 1\r\nX-Other: 4\r\n\r\n'));
  t.same(fieldsOf(s, 'x-first'), [], 'a token before keep-alive is honoured');
  t.same(fieldsOf(s, 'x-other'), ['4'], 'the previous message\'s token is not');
  s = seen(await ask(r, 'GET /5 HTTP/1.1\r\nHost: c.example\r\nConnection: keep-alive\r\nX-First: 5\r\n\r\n'));
  t.same(fieldsOf(s, 'x-first'), ['5'], 'keep-alive alone names nothing');
  s = seen(await ask(r, 'GET /6 HTTP/1.1\r\nHost: c.example\r\nConnection: upgrade\r\nX-First: 6\r\n\r\n'));
  t.same(fieldsOf(s, 'x-first'), ['6'], 'upgrade alone (without Upgrade) names nothing else');
  t.same(fieldsOf(s, 'connection'), [], 'Connection itself is not forwarded');
  const last = await ask(r, 'GET /7 HTTP/1.1\r\nHost: c.example\r\nconnection: CLOSE, x-foo\r\nX-Foo: 1\r\nX-First: 7\r\n\r\n');
  s = seen(last);
  t.same(fieldsOf(s, 'x-foo'), [], 'a token after close is honoured');
  t.same(fieldsOf(s, 'x-first'), ['7'], 'and no earlier one');
  t.equal(last!.headers.get('connection'), 'close', 'close in any case ends the connection');
  t.equal(await r.next(), null, 'which closes');
});

t.test('common field names and values in any spelling, and bytes beyond ASCII, forwarded as sent', async (t) => {
  const { port, log } = await stack(t);
  const r = await connect(t, port);
  let s = seen(await ask(r, 'GET /n HTTP/1.1\r\nHOST: B.example\r\nuser-agent: ua\r\nUser-Agent: UA\r\nACCEPT: */*\r\nDate: d\r\nserver: s\r\n\r\n'));
  t.equal(s.who, 'b', 'HOST in capitals is the Host');
  t.same(fieldsOf(s, 'user-agent'), ['ua', 'UA'], 'both user-agent fields, in order');
  t.same(s.raw.filter((_, i) => i % 2 === 0 && ['user-agent', 'accept', 'date', 'server'].includes(s.raw[i].toLowerCase())),
    ['user-agent', 'User-Agent', 'ACCEPT', 'Date', 'server'], 'names forwarded as they were spelled');
  s = seen(await ask(r, 'POST /n HTTP/1.1\r\nhOsT: c.example\r\nContent-LENGTH: 3\r\n\r\nabc'));
  t.equal(s.body, 'abc', 'Content-LENGTH frames the body');
  s = seen(await ask(r, 'POST /n HTTP/1.1\r\nHost: c.example\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n'));
  t.equal(s.body, 'xyz', 'Chunked in another case is chunked');
  s = seen(await ask(r, 'GET /n HTTP/1.1\r\nHost: c.example\r\nX-Val: keep-aliv\xe9\r\nX-Close: close\r\nX-Chunked: chunked\r\nX-High: \xff\x80caf\xe9\r\nConnection: Keep-Alive\r\n\r\n'));
  t.same(fieldsOf(s, 'x-val'), ['keep-aliv\xe9'], 'a value one byte away from a common one, byte for byte');
  t.same(fieldsOf(s, 'x-high'), ['\xff\x80caf\xe9'], 'bytes above 0x7f, byte for byte');
  t.same(fieldsOf(s, 'x-close'), ['close'], 'close in another field means nothing');
  s = seen(await ask(r, 'GET /n HTTP/1.1\r\nHost: c.example\r\nX-Val: Keep-alive\r\n\r\n'));
  t.same(fieldsOf(s, 'x-val'), ['Keep-alive'], 'a common value in another case, as sent');
  t.notOk(r.closed, 'the connection is still open');
  t.equal(log.length, 5, 'five requests reached upstreams');
});

/** Malformed requests, each sent on a connection that has just served a good one. */
const MALFORMED: Array<[string, string, number]> = [
  ['obs-fold', 'GET /m HTTP/1.1\r\nHost: c.example\r\nX-A: 1\r\n  folded\r\n\r\n', 400],
  ['obs-fold of Host', 'GET /m HTTP/1.1\r\nHost: c.example\r\n\tb.example\r\n\r\n', 400],
  ['a bare CR in a value', 'GET /m HTTP/1.1\r\nHost: c.example\r\nX-A: a\rb\r\n\r\n', 400],
  ['a bare CR after Host', 'GET /m HTTP/1.1\r\nHost: c.example\rX-A: 1\r\n\r\n', 400],
  ['a bare LF', 'GET /m HTTP/1.1\r\nHost: c.example\nX-A: 1\r\n\r\n', 400],
  ['NUL in a value', 'GET /m HTTP/1.1\r\nHost: c.example\r\nX-A: a\x00b\r\n\r\n', 400],
  ['NUL in Connection', 'GET /m HTTP/1.1\r\nHost: c.example\r\nConnection: keep-alive\x00\r\n\r\n', 400],
  ['a high byte in a field name', 'GET /m HTTP/1.1\r\nHost: c.example\r\nX-\xe9: 1\r\n\r\n', 400],
  ['a high byte in Host\'s name', 'GET /m HTTP/1.1\r\nHos\xf4: c.example\r\n\r\n', 400],
  ['space before the colon', 'GET /m HTTP/1.1\r\nHost : c.example\r\n\r\n', 400],
  ['two Content-Length', 'POST /m HTTP/1.1\r\nHost: c.example\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nab', 400],
  ['two equal Content-Length in one field', 'POST /m HTTP/1.1\r\nHost: c.example\r\nContent-Length: 1, 1\r\n\r\nab', 400],
  ['Content-Length and Transfer-Encoding', 'POST /m HTTP/1.1\r\nHost: c.example\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
  ['Transfer-Encoding twice', 'POST /m HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n', 400],
  ['Transfer-Encoding chunked twice in one field', 'POST /m HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n', 501],
  ['Transfer-Encoding with a tab after it', 'POST /m HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n', 400],
  ['two Host', 'GET /m HTTP/1.1\r\nHost: c.example\r\nhost: b.example\r\n\r\n', 400],
  ['no Host', 'GET /m HTTP/1.1\r\nX-A: 1\r\n\r\n', 400],
  ['a line over the header limit', `GET /m HTTP/1.1\r\nHost: c.example\r\nX-Long: ${'a'.repeat(2100)}\r\n\r\n`, 431],
  ['more fields than the limit', `GET /m HTTP/1.1\r\nHost: c.example\r\n${Array.from({ length: 40 }, (_, i) => `X-F${i}: ${i}\r\n`).join('')}\r\n`, 431],
];

t.test('malformed requests after good ones on the same connection: refused, never forwarded', async (t) => {
  const { port, log } = await stack(t, { maxHeaderBytes: 2048, maxHeaders: 32 });
  for (const [what, raw, status] of MALFORMED) {
    const r = await connect(t, port);
    const before = log.length;
    const good = seen(await ask(r, 'GET /good HTTP/1.1\r\nHost: c.example\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n'));
    t.equal(good.who, 'c', `${what}: the good request before it is served`);
    const reply = await ask(r, raw);
    t.equal(reply?.status, status, `${what}: ${status}`);
    t.equal(reply?.headers.get('connection'), 'close', `${what}: connection: close`);
    t.equal(await r.next(), null, `${what}: the connection closes`);
    t.equal(log.length, before + 1, `${what}: only the good request reached an upstream`);
  }
});

t.test('pipelined requests split at every byte boundary: each routed and framed on its own bytes', async (t) => {
  const { port, log } = await stack(t, { maxHeaderBytes: 4096 });
  const raw = 'GET /gold/1 HTTP/1.1\r\nHOST: c.example\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n'
    + 'POST /2 HTTP/1.1\r\nhost: B.Example\r\ncontent-length: 5\r\nX-Drop: 2\r\n\r\nhello'
    + 'POST /3 HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: chunked\r\nX-Tenant:gold\r\n\r\n2\r\nhi\r\n0\r\n\r\n'
    + 'GET /gold/1 HTTP/1.1\r\nHost: c.example\r\nConnection: close\r\n\r\n';
  const bytes = Buffer.from(raw, 'latin1');
  let bad = 0;
  const offsets = Array.from({ length: bytes.length - 1 }, (_, i) => i + 1);
  const one = async (at: number) => {
    const c = net.connect({ port, host: '127.0.0.1', noDelay: true });
    await once(c, 'connect');
    const r = new Reader(c);
    c.write(bytes.subarray(0, at));
    await new Promise((resolve) => setImmediate(resolve));
    c.write(bytes.subarray(at));
    const got: Seen[] = [];
    for (let i = 0; i < 4; i++) { const reply = await r.next(); if (reply?.status === 200) got.push(JSON.parse(reply.body) as Seen); }
    const ok = got.length === 4
      && got[0].who === 'a' && got[0].url === '/gold/1' && fieldsOf(got[0], 'x-drop').length === 0
      && got[1].who === 'b' && got[1].body === 'hello' && fieldsOf(got[1], 'x-drop')[0] === '2'
      && got[2].who === 'a' && got[2].body === 'hi'
      && got[3].who === 'a' && (await r.next()) === null;
    if (!ok) { bad++; if (bad < 4) t.fail(`split at ${at}: ${JSON.stringify(got.map((g) => [g.who, g.url, g.body]))}`); }
    c.destroy();
  };
  for (let i = 0; i < offsets.length; i += 8) await Promise.all(offsets.slice(i, i + 8).map(one));
  t.equal(bad, 0, `every one of ${offsets.length} splits answered all four requests right`);
  t.equal(log.length, offsets.length * 4, 'and nothing else reached an upstream');
});

t.test('HEAD and GET on one upstream connection, one at a time and pipelined: each response framed by its own method', async (t) => {
  const { port } = await stack(t);
  const r = await connect(t, port);
  for (let i = 0; i < 3; i++) {
    const head = await ask(r, 'HEAD /h HTTP/1.1\r\nHost: c.example\r\n\r\n', true);
    t.equal(head?.status, 200, 'HEAD answered');
    t.ok(Number(head?.headers.get('content-length')) > 0, 'with the length a GET would have');
    const get = seen(await ask(r, 'GET /g HTTP/1.1\r\nHost: c.example\r\n\r\n'));
    t.equal(get.url, '/g', 'the GET after it gets its own body');
  }
  r.sock.write('HEAD /h1 HTTP/1.1\r\nHost: c.example\r\n\r\nGET /g1 HTTP/1.1\r\nHost: c.example\r\n\r\nHEAD /h2 HTTP/1.1\r\nHost: c.example\r\n\r\nGET /g2 HTTP/1.1\r\nHost: c.example\r\n\r\n');
  t.equal((await r.next(true))?.status, 200, 'pipelined HEAD');
  t.equal(seen(await r.next()).url, '/g1', 'pipelined GET after it');
  t.equal((await r.next(true))?.status, 200, 'second HEAD');
  t.equal(seen(await r.next()).url, '/g2', 'second GET');
  t.equal(r.rest, 0, 'nothing more');
});

t.test('pipelined beyond the header limit: the session pauses the reads and resumes them, proxied and refused alike', async (t) => {
  const { s, port, log } = await stack(t, { maxHeaderBytes: 1024 });
  const n = 60;
  const proxied = await connect(t, port);
  proxied.sock.write(Array.from({ length: n }, (_, i) => `GET /p${i} HTTP/1.1\r\nHost: c.example\r\nX-Pad: ${'p'.repeat(40)}\r\n\r\n`).join(''));
  for (let i = 0; i < n; i++) {
    const reply = await proxied.next();
    if (seen(reply).url !== `/p${i}`) { t.fail(`response ${i} out of order`); break; }
  }
  t.equal(log.length, n, `${n} pipelined requests (about 4 KiB) all proxied in order`);
  const refused = await connect(t, s.port('limited'));
  refused.sock.write(Array.from({ length: n }, (_, i) => `GET /r${i} HTTP/1.1\r\nHost: c.example\r\nX-Pad: ${'r'.repeat(40)}\r\n\r\n`).join(''));
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) statuses.push((await refused.next())?.status ?? 0);
  t.equal(statuses.filter((x) => x === 429).length + statuses.filter((x) => x === 200).length, n, `${n} pipelined requests all answered`);
  t.ok(statuses.filter((x) => x === 429).length >= n - 1, 'refused by the rate limit');
  t.notOk(refused.closed, 'the connection stays open');
  const after = await ask(refused, 'GET /after HTTP/1.1\r\nHost: c.example\r\n\r\n');
  t.equal(after?.status, 429, 'and reads the next request');
  // a refused request with a body: answered, and the connection closes (its body is not read past)
  const body = await connect(t, s.port('limited'));
  const withBody = await ask(body, 'POST /b HTTP/1.1\r\nHost: c.example\r\nContent-Length: 5\r\n\r\nhello');
  t.equal(withBody?.status, 429, 'a refused POST');
  t.equal(withBody?.headers.get('connection'), 'close', 'says close');
  t.equal(await body.next(), null, 'and closes');
});

t.test('the idle timeout: requests keep a connection open, silence closes it', async (t) => {
  const { port } = await stack(t, { idleTimeoutMs: 400 });
  const r = await connect(t, port);
  let last = 0;
  for (let i = 0; i < 8; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 250));
    t.equal(seen(await ask(r, `GET /k${i} HTTP/1.1\r\nHost: c.example\r\n\r\n`)).url, `/k${i}`, `request ${i}, ${i * 250} ms in`);
    last = Date.now();
  }
  t.notOk(r.closed, 'requests every 250 ms kept the connection open for 2 s (idle timeout 400 ms)');
  t.equal(await r.next(false, 5000), null, 'silence closes it, without a reply');
  // timers never fire early: the bound holds however loaded the machine is
  t.ok(Date.now() - last >= 380, `closed ${Date.now() - last} ms after the last request (idleTimeoutMs 400)`);
});

t.test('a tunnel (101) answers to tcp.idleTimeoutMs, not to http.idleTimeoutMs', async (t) => {
  const up = net.createServer((sock) => {
    let head = '';
    const onHead = (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      sock.removeListener('data', onHead);
      sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
      sock.on('data', (e) => sock.write(e));
    };
    sock.on('data', onHead);
    sock.on('error', () => {});
  });
  up.listen(0, '127.0.0.1');
  await once(up, 'listening');
  t.teardown(() => up.close());
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'ws' }],
    clusters: [{ name: 'ws', endpoints: [`127.0.0.1:${(up.address() as net.AddressInfo).port}`] }],
    http: { idleTimeoutMs: 300 },
    tcp: { idleTimeoutMs: 1500 },
  });
  t.teardown(() => s.stop());
  const c = net.connect({ port: s.port('app'), host: '127.0.0.1' });
  await once(c, 'connect');
  t.teardown(() => c.destroy());
  let got = '';
  let closedAt = 0;
  c.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  c.on('close', () => { closedAt = Date.now(); });
  c.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n');
  const until = async (cond: () => boolean, ms: number) => { const end = Date.now() + ms; while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20)); };
  await until(() => got.includes('\r\n\r\n'), 3000);
  t.match(got, /^HTTP\/1.1 101 /, 'switched');
  await new Promise((resolve) => setTimeout(resolve, 900));
  t.equal(closedAt, 0, 'three times http.idleTimeoutMs later the tunnel is still open');
  c.write('ping');
  await until(() => got.endsWith('ping'), 3000);
  t.ok(got.endsWith('ping'), 'and carries bytes');
  const last = Date.now();
  await until(() => closedAt !== 0, 6000);
  t.ok(closedAt !== 0, 'then tcp.idleTimeoutMs closes it');
  t.ok(closedAt - last >= 1400, `${closedAt - last} ms after its last bytes (tcp.idleTimeoutMs 1500)`);
});

t.test('upstream connections: reused while requests come, closed by http.upstreamIdleTimeoutMs once idle, never while busy', async (t) => {
  const IDLE_MS = 500;
  // each upstream connection: when it opened and closed (by the proxy: the upstream never closes first)
  const conns: { opened: number; closed: number }[] = [];
  let delayMs = 0;
  let answeredAt = 0;
  const up = await httpUpstream((req, res) => {
    const answer = () => { res.setHeader('content-length', 2); res.end('ok'); answeredAt = Date.now(); };
    if (delayMs > 0) setTimeout(answer, delayMs); else answer();
  });
  t.teardown(() => up.close());
  (up.server as http.Server).on('connection', (sock: net.Socket) => {
    const c = { opened: Date.now(), closed: 0 };
    conns.push(c);
    sock.on('close', () => { c.closed = Date.now(); });
  });
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'up' }],
    clusters: [{ name: 'up', endpoints: [`127.0.0.1:${up.port}`] }],
    http: { upstreamIdleTimeoutMs: IDLE_MS },
  });
  t.teardown(() => s.stop());
  const r = await connect(t, s.port('app'));
  const get = async (path: string) => (await ask(r, `GET ${path} HTTP/1.1\r\nHost: up.example\r\n\r\n`))?.status;
  const until = async (cond: () => boolean, ms: number) => { const end = Date.now() + ms; while (!cond() && Date.now() < end) await new Promise((res) => setTimeout(res, 20)); };

  for (let i = 0; i < 6; i++) {
    if (i > 0) await new Promise((res) => setTimeout(res, 300));
    t.equal(await get(`/k${i}`), 200, `request ${i}, ${i * 300} ms in`);
  }
  t.equal(conns.length, 1, 'requests every 300 ms share one upstream connection for 1.5 s (idle timeout 500 ms)');
  t.equal(conns[0].closed, 0, 'and it stayed open');
  await until(() => conns[0].closed !== 0, 10_000);
  t.not(conns[0].closed, 0, 'silence closes it');
  // from the moment the upstream sent its last answer (the proxy read it later): timers never
  // fire early, so the bound holds however loaded the machine is
  t.ok(conns[0].closed - answeredAt >= IDLE_MS - 2, `closed ${conns[0].closed - answeredAt} ms after the last answer left the upstream (upstreamIdleTimeoutMs ${IDLE_MS})`);
  t.notOk(r.closed, 'the client connection is not affected');

  // an exchange waiting on a slow upstream is not idle: three idle timeouts go by, the answer comes
  delayMs = IDLE_MS * 3;
  t.equal(await get('/slow'), 200, 'a slow answer arrives');
  t.equal(conns.length, 2, 'on a new upstream connection');
  t.equal(conns[1].closed, 0, 'which the idle timeout left alone while it was busy');
  delayMs = 0;
  t.equal(await get('/after'), 200, 'and which serves the next request');
  t.equal(conns.length, 2, 'reused');
  await until(() => conns[1].closed !== 0, 10_000);
  t.not(conns[1].closed, 0, 'then closes once idle');
});
