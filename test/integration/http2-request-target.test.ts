/**
 * The request pseudo-headers of HTTP/2 (RFC 9113 8.3.1) held to their syntax
 * (RFC 3986, RFC 9110), through both kinds of upstream: an h2 one, and an
 * HTTP/1.1 one that gets `:method :path` as its request line and `:authority`
 * as its Host field. A request that does not fit is a stream error, RST_STREAM
 * PROTOCOL_ERROR, counted as a protocol error; it never reaches either upstream
 * (the HTTP/1 upstream is a raw socket that records every octet it gets), and
 * the same connection goes on serving. Requests that do fit, however unusual,
 * arrive exactly as sent.
 */
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { once } from 'node:events';
import t, { type Test } from 'tap';
import { ErrorCode, H2Client, describeResult, errorName, headersFrame, hpack, type Field } from '../helpers/h2-frames';
import { h2Upstream, startSluice, stats, type RunningSluice, type Upstream } from '../helpers/harness';

const WAIT = 8000;
const ERRORS = 'sluice_downstream_protocol_error_total{protocol="http2"}';

// ── upstreams ────────────────────────────────────────────────────────────────

/** What the h2 upstream got, by x-case. */
const h2Seen = new Map<string, http2.IncomingHttpHeaders>();
/** Every request head the HTTP/1 upstream got, as raw latin1 text. */
const h1Heads: string[] = [];

function onH2(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  h2Seen.set(String(headers['x-case'] ?? ''), headers);
  stream.on('error', () => {});
  stream.respond({ ':status': 200 });
  stream.end('ok');
}

/** An HTTP/1.1 server that is only a socket: records each head as it came, answers 200 "ok", keeps the connection. */
async function rawH1Upstream(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        h1Heads.push(buf.slice(0, end));
        buf = buf.slice(end + 4);
        sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

let up2: Upstream;
let up1: { port: number; close(): Promise<void> };
let sluice: RunningSluice;

t.before(async () => {
  up2 = await h2Upstream(onH2);
  up1 = await rawH1Upstream();
  sluice = await startSluice({
    workers: { threads: 1 },
    listeners: [
      { name: 'h2', address: '127.0.0.1:0', cluster: 'up2' },
      { name: 'h1', address: '127.0.0.1:0', cluster: 'up1' },
    ],
    clusters: [
      { name: 'up2', protocol: 'http2', endpoints: [`127.0.0.1:${up2.port}`] },
      { name: 'up1', protocol: 'http1', endpoints: [`127.0.0.1:${up1.port}`] },
    ],
  });
});
t.teardown(async () => {
  await sluice?.stop();
  await up2?.close();
  await up1?.close();
});

// ── cases ────────────────────────────────────────────────────────────────────

const upstreams = ['h2', 'h1'] as const;
type Via = typeof upstreams[number];

function reached(via: Via, tag: string): boolean {
  return via === 'h2' ? h2Seen.has(tag) : h1Heads.some((h) => h.includes(`\r\nx-case: ${tag}\r\n`) || h.endsWith(`\r\nx-case: ${tag}`));
}

/** A request's fields with one pseudo-header replaced (or removed, with null) and extra fields after. */
function request(tag: string, change: Partial<Record<':method' | ':scheme' | ':path' | ':authority', string | null>>,
  extra: ReadonlyArray<readonly [string, string]> = []): Field[] {
  const base: Record<string, string | null> = { ':method': 'GET', ':scheme': 'http', ':path': `/target/${tag}`, ':authority': 'sluice.test', ...change };
  const out: Field[] = [];
  for (const [k, v] of Object.entries(base)) if (v !== null) out.push([k, v]);
  return [...out, ['x-case', tag], ...extra];
}

interface Bad { name: string; fields: (tag: string) => Field[] }

const badPaths: Array<[string, string]> = [
  ['a space', '/a b'],
  ['a space, then what looks like a version', '/x HTTP/1.1'],
  ['a tab', '/a\tb'],
  ['a control character (0x01)', '/a\x01b'],
  ['DEL (0x7f)', '/a\x7fb'],
  ['an octet above 0x7f (0xe9)', '/caf\xe9'],
  ['a fragment ("#")', '/a#top'],
  ['no leading "/"', 'target/x'],
  ['absolute-form', 'http://sluice.test/x'],
  ['"*" with GET (OPTIONS only)', '*'],
];

const bad: Bad[] = [
  ...badPaths.map(([what, path]) => ({ name: `:path with ${what}: ${JSON.stringify(path)}`, fields: (tag: string) => request(tag, { ':path': path }) })),
  ...['GE T', 'GET\x01', 'G(ET', 'GET/', 'G\xc9T', ''].map((m) => ({ name: `:method that is not a token: ${JSON.stringify(m)}`, fields: (tag: string) => request(tag, { ':method': m }) })),
  ...['1http', 'ht tp', 'http:', 'ht/tp', '+http'].map((s) => ({ name: `:scheme that is not a scheme: ${JSON.stringify(s)}`, fields: (tag: string) => request(tag, { ':scheme': s }) })),
  ...['user@sluice.test', 'user:secret@sluice.test', '@sluice.test', ''].map((a) => ({
    name: `:authority ${a ? 'with userinfo' : 'empty'}: ${JSON.stringify(a)}`, fields: (tag: string) => request(tag, { ':authority': a }),
  })),
  ...['sluice test', 'sluice.test/x', 'sluice.test?x', 'sluice\xe9.test'].map((a) => ({
    name: `:authority that is no host[:port]: ${JSON.stringify(a)}`, fields: (tag: string) => request(tag, { ':authority': a }),
  })),
  { name: 'no :authority, host with userinfo', fields: (tag) => request(tag, { ':authority': null }, [['host', 'user@sluice.test']]) },
  { name: 'host that differs from :authority', fields: (tag) => request(tag, {}, [['host', 'elsewhere.test']]) },
  { name: 'two host fields', fields: (tag) => request(tag, { ':authority': null }, [['host', 'sluice.test'], ['host', 'elsewhere.test']]) },
];

async function open(t: Test, via: Via): Promise<H2Client> {
  const c = await H2Client.connect(sluice.port(via));
  t.teardown(() => c.destroy());
  await c.handshake(undefined, WAIT);
  return c;
}

for (const [i, b] of bad.entries()) {
  t.test(`refused: ${b.name}`, async (t) => {
    for (const via of upstreams) {
      const tag = `bad-${i}-${via}`;
      const c = await open(t, via);
      const before = (await stats(sluice.admin)).get(ERRORS) ?? 0;
      const id = c.newStreamId();
      c.send(headersFrame(id, hpack(b.fields(tag)), { endStream: true }));
      const r = await c.result(id, WAIT);
      t.ok(r.rst === ErrorCode.PROTOCOL_ERROR && r.status === null && !r.goaway,
        `${via} upstream: RST_STREAM PROTOCOL_ERROR on the stream, the connection goes on (got ${describeResult(r)})`);
      const next = await c.get('/target/after', [['x-case', `${tag}-after`]], WAIT);
      t.ok(next.status === 200 && next.body === 'ok' && !c.goaway, `${via} upstream: the next request on the connection gets 200 (got ${describeResult(next)})`);
      t.notOk(reached(via, tag), `${via} upstream: never saw the request`);
      t.ok(reached(via, `${tag}-after`), `${via} upstream: saw the next one`);
      t.equal(((await stats(sluice.admin)).get(ERRORS) ?? 0) - before, 1, `${via} upstream: one protocol error counted`);
    }
  });
}

// ── what must still pass, as sent (the path in its canonical form: http.normalizePath) ──

interface Good { name: string; method?: string; path: string; forwarded?: string; authority?: string | null; extra?: Array<[string, string]>; host: string }

const good: Good[] = [
  {
    name: 'every pchar, pct-encodings and a query with "/" and "?"', path: "/a%20b/%7E:@!$&'()*+,;=-._~?q=/x?y&z=%41",
    forwarded: "/a%20b/~:@!$&'()*+,;=-._~?q=/x?y&z=%41", host: 'sluice.test',
  },
  {
    // what HTTP/1 takes in a request-target, HTTP/2 takes too: clients send these raw in queries
    name: 'visible ASCII that RFC 3986 would escape, in the path and the query', path: '/a|b{c}[d]^e?q={"x":[1]}|`<>^',
    host: 'sluice.test',
  },
  { name: 'a method that is any token', method: 'PURGE', path: '/purge', host: 'sluice.test' },
  { name: 'an authority with a port', path: '/port', authority: 'sluice.test:8080', host: 'sluice.test:8080' },
  { name: 'an IPv6 literal authority', path: '/v6', authority: '[::1]:8080', host: '[::1]:8080' },
  { name: 'host only, no :authority', path: '/host-only', authority: null, extra: [['host', 'sluice.test']], host: 'sluice.test' },
  { name: 'host equal to :authority but for case', path: '/host-case', extra: [['host', 'SLUICE.test']], host: 'sluice.test' },
];

for (const [i, g] of good.entries()) {
  t.test(`accepted: ${g.name}`, async (t) => {
    for (const via of upstreams) {
      const tag = `good-${i}-${via}`;
      const method = g.method ?? 'GET';
      const c = await open(t, via);
      const id = c.newStreamId();
      c.send(headersFrame(id, hpack(request(tag, { ':method': method, ':path': g.path, ':authority': g.authority === undefined ? 'sluice.test' : g.authority }, g.extra)), { endStream: true }));
      const r = await c.result(id, WAIT);
      t.ok(r.status === 200 && r.body === 'ok', `${via} upstream: 200 "ok" (got ${describeResult(r)}${r.rst !== null ? ` ${errorName(r.rst)}` : ''})`);
      if (via === 'h2') {
        const h = h2Seen.get(tag);
        t.equal(h?.[':path'], g.forwarded ?? g.path, 'h2 upstream: :path as sent');
        t.equal(h?.[':method'], method, 'h2 upstream: :method as sent');
      } else {
        const head = h1Heads.find((h) => h.includes(`\r\nx-case: ${tag}`)) ?? '';
        const lines = head.split('\r\n');
        t.equal(lines[0], `${method} ${g.forwarded ?? g.path} HTTP/1.1`, 'h1 upstream: the request line');
        t.equal(lines.find((l) => l.toLowerCase().startsWith('host:'))?.slice(5).trim(), g.host, 'h1 upstream: the Host field');
      }
    }
  });
}
