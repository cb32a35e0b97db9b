/**
 * Downstream connections served on a native socket (src/net/native-socket.ts) and, when they turn
 * out not to be plain HTTP/1, promoted to a Node socket (src/worker/connection.ts, asNodeSocket;
 * Http1Session.nodeSocket for an upgrade). Everything here is seen from outside, through a real
 * Sluice: raw sockets on loopback and real clients. Each scenario runs twice, on a Sluice with
 * native sockets and on one started with SLUICE_NATIVE_SOCKETS=0 (every connection a Node socket,
 * as before), and the client must see the same bytes and the same end (FIN or reset) from both,
 * besides what the scenario itself requires.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { TestPki } from '../helpers/certs';
import { adminPost, httpUpstream, openFds, run, settledFds, spawnSluice, startSluice, stats, waitFor, withTestDefaults, writeConfig, type RunningSluice, type Upstream } from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';

const MiB = 1 << 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ── upstreams ───────────────────────────────────────────────────────────────

/** Bodies the upstream received, by request id (header x-id), with whether they ended or were aborted. */
const received = new Map<string, { bytes: number; ended: boolean; aborted: boolean; sent: () => number }>();
const BIG = randomBytes(32 * MiB);
/** Requests to /hang: answered never (their connections go when the test ends). */
const hanging = new Set<import('node:http').ServerResponse>();

async function webUpstream(): Promise<Upstream> {
  return httpUpstream((req, res) => {
    const id = String(req.headers['x-id'] ?? '');
    let sent = 0;
    const rec = { bytes: 0, ended: false, aborted: false, sent: () => sent };
    if (id) received.set(id, rec);
    const parts: Buffer[] = [];
    if (req.url === '/hang') { hanging.add(res); res.on('close', () => hanging.delete(res)); req.resume(); return; }
    if (req.url === '/upload-slow') {
      // reads nothing for a while: the request body backs up into Sluice, which stops reading the client
      req.pause();
      setTimeout(() => req.resume(), 300);
    }
    req.on('data', (d: Buffer) => { parts.push(d); rec.bytes += d.length; });
    req.on('aborted', () => { rec.aborted = true; });
    req.on('error', () => { rec.aborted = true; });
    res.on('error', () => {});
    req.on('end', () => {
      rec.ended = true;
      const url = req.url ?? '';
      /** Writes `n` bytes, `piece(at)` at a time, to the response, each piece after the last was taken: `sent` is what Sluice let through. */
      const pump = (n: number, piece: (at: number) => Buffer): void => {
        const more = (): void => {
          while (sent < n) {
            const p = piece(sent);
            sent += p.length;
            if (!res.write(p)) { res.once('drain', more); return; }
          }
          res.end();
        };
        more();
      };
      const mb = (dflt: string) => Number(new URL(url, 'http://a').searchParams.get('mb') ?? dflt) * MiB;
      if (url.startsWith('/big')) {
        const n = mb('8');
        res.writeHead(200, { 'content-length': String(n), date: 'x' });
        pump(n, (at) => BIG.subarray(at, Math.min(n, at + 64 * 1024)));
        return;
      }
      if (url.startsWith('/gen')) {
        // as much as Sluice takes, up to mb= MiB of one repeated piece
        const n = mb('8');
        res.writeHead(200, { 'content-length': String(n), date: 'x' });
        pump(n, (at) => BIG.subarray(0, Math.min(n - at, 64 * 1024)));
        return;
      }
      if (url.startsWith('/chunked-big')) {
        // no length: chunked towards the client
        const n = mb('4');
        res.writeHead(200, { date: 'x' });
        pump(n, (at) => BIG.subarray(at, Math.min(n, at + 50_000)));
        return;
      }
      if (url === '/headers') {
        const h = Object.entries(req.headers).filter(([k]) => k !== 'x-id').sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(';');
        res.writeHead(200, { 'content-length': String(Buffer.byteLength(h)), date: 'x' });
        res.end(h);
        return;
      }
      const body = Buffer.concat(parts);
      const text = `${req.method} ${url} len=${body.length} sha=${sha(body).slice(0, 16)} body=${body.toString('latin1').slice(0, 64)}`;
      res.writeHead(200, { 'content-length': String(Buffer.byteLength(text)), date: 'x' });
      res.end(text);
    });
  });
}

/** Answers an upgrade request with 101, then echoes every byte prefixed by nothing; it ends when its client does. */
async function upgradeUpstream() {
  const state = { afterUpgrade: [] as Buffer[], closed: 0, ended: 0, sockets: new Set<net.Socket>() };
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    state.sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => { state.closed++; state.sockets.delete(sock); });
    let head = Buffer.alloc(0);
    let switched = false;
    const got: Buffer[] = [];
    state.afterUpgrade.push(Buffer.alloc(0));
    const idx = state.afterUpgrade.length - 1;
    sock.on('data', (d: Buffer) => {
      if (switched) {
        got.push(d);
        state.afterUpgrade[idx] = Buffer.concat(got);
        if (d.toString('latin1').includes('BYE-UP')) { sock.destroy(); return; }
        sock.write(d);
        return;
      }
      head = Buffer.concat([head, d]);
      for (;;) {
        const at = head.indexOf('\r\n\r\n');
        if (at < 0) return;
        const line = head.subarray(0, head.indexOf('\r\n')).toString('latin1');
        const rest = head.subarray(at + 4);
        head = rest;
        if (line.startsWith('GET /ws-bigno ')) {
          // an ordinary answer of 4 MiB, and the connection goes on as HTTP/1.1
          sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${6 * MiB}\r\n\r\n`), BIG.subarray(0, 6 * MiB)]));
          continue;
        }
        if (line.startsWith('GET /ws-no ')) {
          // declined: an ordinary answer, and the connection goes on as HTTP/1.1
          sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno');
          continue;
        }
        switched = true;
        if (line.startsWith('GET /ws-big ')) {
          // 2 MiB of tunnel bytes in the same write as the 101, then the echo
          sock.write(Buffer.concat([Buffer.from('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n'), BIG.subarray(0, 2 * MiB)]));
          if (rest.length) { got.push(rest); state.afterUpgrade[idx] = Buffer.concat(got); sock.write(rest); }
          return;
        }
        // /ws-rest: the upstream's first tunnel bytes in the same segment as its 101
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n${line.startsWith('GET /ws-rest ') ? 'HELLO-FROM-UP' : ''}`);
        if (rest.length) { got.push(rest); state.afterUpgrade[idx] = Buffer.concat(got); sock.write(rest); }
        return;
      }
    });
    sock.on('end', () => { state.ended++; sock.end(); });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port, state,
    close: () => new Promise<void>((r) => { for (const s of state.sockets) s.destroy(); server.close(() => r()); }),
  };
}

/** A TLS echo server (reached through Sluice as opaque bytes: TLS is not terminated on these listeners). */
async function tlsUpstream(pki: TestPki) {
  const ca = pki.ca();
  const w = pki.issue(ca, 'spiffe://cluster.local/ns/default/sa/up', { dns: ['localhost'] } as never);
  const server = tls.createServer({ cert: w.cert, key: w.key }, (s) => { s.on('error', () => {}); s.pipe(s); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, ca: w.ca, close: () => new Promise<void>((r) => server.close(() => r())) };
}

// ── the two Sluices ─────────────────────────────────────────────────────────

interface Pair { native: RunningSluice; node: RunningSluice }
let sl: Pair;
let web: Upstream;
let ws: Awaited<ReturnType<typeof upgradeUpstream>>;
let tup: Awaited<ReturnType<typeof tlsUpstream>>;
const pki = new TestPki();

function config() {
  return {
    workers: { threads: 1 },
    listeners: [
      { name: 'app', address: '127.0.0.1:0', cluster: 'web' },
      { name: 'strict', address: '127.0.0.1:0', cluster: 'web', protocol: 'http' },
      { name: 'ws', address: '127.0.0.1:0', cluster: 'ws' },
      { name: 'tlsp', address: '127.0.0.1:0', cluster: 'tlsup' },
    ],
    clusters: [
      { name: 'web', protocol: 'http1', endpoints: [`127.0.0.1:${web.port}`] },
      { name: 'ws', endpoints: [`127.0.0.1:${ws.port}`] },
      { name: 'tlsup', endpoints: [`127.0.0.1:${tup.port}`] },
    ],
    tcp: { sniffTimeoutMs: 300 },
    http: { headerTimeoutMs: 2000 },
  };
}

t.before(async () => {
  web = await webUpstream();
  ws = await upgradeUpstream();
  tup = await tlsUpstream(pki);
  sl = await bothWays(config());
});

/**
 * Two Sluices on `doc`: one with native sockets, one with Node sockets only (worker threads take
 * a copy of the environment when they are made, so SLUICE_NATIVE_SOCKETS=0 is set only while
 * the second one starts).
 */
async function bothWays(doc: Record<string, unknown>): Promise<Pair> {
  const native = await startSluice(doc);
  const was = process.env.SLUICE_NATIVE_SOCKETS;
  process.env.SLUICE_NATIVE_SOCKETS = '0';
  try {
    return { native, node: await startSluice(doc) };
  } catch (err) {
    await native.stop();
    throw err;
  } finally {
    if (was === undefined) delete process.env.SLUICE_NATIVE_SOCKETS; else process.env.SLUICE_NATIVE_SOCKETS = was;
  }
}

t.teardown(async () => {
  await sl?.native.stop();
  await sl?.node.stop();
  await web?.close();
  await ws?.close();
  await tup?.close();
  pki.cleanup();
});

// ── a raw client ────────────────────────────────────────────────────────────

interface Seen {
  data: Buffer;
  /** The server's FIN came (a clean end). */
  fin: boolean;
  /** The connection was reset (or some other error), or 'timeout'. */
  error: string | null;
}

type Step = string | Buffer | { gap: number } | { shut: true } | { reset: true } | { until: (got: Buffer) => boolean };

/**
 * One connection: the steps in order (bytes written, pauses that only split segments, a
 * half-close, a reset, a wait for some bytes to have come), then everything the server sends
 * until the connection is over (bounded: 15 s; then `error` is 'timeout').
 */
function converse(port: number, steps: Step[], opts: { slow?: boolean; trickle?: boolean } = {}): Promise<Seen> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    c.setNoDelay(true);
    const parts: Buffer[] = [];
    let fin = false;
    let error: string | null = null;
    let wake: (() => void) | null = null;
    let since = 0;
    c.on('data', (d: Buffer) => {
      parts.push(d);
      wake?.();
      since += d.length;
      if (opts.trickle && !c.isPaused()) {
        // trickle: 15 ms without reading after every read (a few MiB a second): Sluice's writes back up most of the time
        c.pause();
        setTimeout(() => c.resume(), 15);
      }
      // slow: stops reading for 400 ms at the first bytes, then 10 ms every MiB (the response backs up into Sluice)
      if (opts.slow && (parts.length === 1 || since >= MiB)) {
        const ms = parts.length === 1 ? 400 : 10;
        since = 0;
        c.pause();
        setTimeout(() => c.resume(), ms);
      }
    });
    c.on('end', () => { fin = true; c.end(); wake?.(); });
    c.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; wake?.(); });
    const timer = setTimeout(() => { error = 'timeout'; c.destroy(); }, 15_000);
    c.on('close', () => { clearTimeout(timer); resolve({ data: Buffer.concat(parts), fin, error }); });
    c.on('connect', async () => {
      for (const s of steps) {
        if (c.destroyed) return;
        if (typeof s === 'string' || Buffer.isBuffer(s)) {
          await new Promise<void>((r) => c.write(s, () => r()));
        } else if ('gap' in s) {
          await sleep(s.gap);
        } else if ('shut' in s) {
          c.end();
        } else if ('reset' in s) {
          c.resetAndDestroy();
          return;
        } else {
          const until = s.until;
          while (!until(Buffer.concat(parts)) && !c.destroyed && !fin) await new Promise<void>((r) => { wake = r; });
          wake = null;
        }
      }
    });
  });
}

/** Bytes as latin1 text (the upstream sends a fixed `date`, so two runs give the same bytes). */
function text(b: Buffer): string {
  return b.toString('latin1');
}

/** Runs `steps` on listener `listener` of both Sluices; asserts they gave the client the same and returns the native one's. */
async function same(t: Test, listener: string, steps: Step[] | (() => Step[]), what: string, opts: { slow?: boolean; trickle?: boolean } = {}): Promise<Seen> {
  const mk = () => (typeof steps === 'function' ? steps() : steps);
  const [a, b] = await Promise.all([converse(sl.native.port(listener), mk(), opts), converse(sl.node.port(listener), mk(), opts)]);
  t.equal(text(a.data), text(b.data), `${what}: the same bytes with native sockets as with Node sockets`);
  t.equal(a.fin, b.fin, `${what}: the same end (FIN ${a.fin}) with native sockets as with Node sockets`);
  t.equal(a.error === null, b.error === null, `${what}: reset/error alike (native ${a.error}, node ${b.error})`);
  return a;
}

function bytewise(s: string, n: number, gap = 3): Step[] {
  const out: Step[] = [];
  for (let i = 0; i < Math.min(n, s.length); i++) { out.push(s[i]); out.push({ gap }); }
  out.push(s.slice(n));
  return out;
}

const GET = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: a\r\n${extra}\r\n`;
const OK_BODY = (path: string) => `GET ${path} len=0 sha=e3b0c44298fc1c14 body=`;

// ── slow bytes ──────────────────────────────────────────────────────────────

t.test('the request line one byte at a time: answered whole, then the FIN', async (t) => {
  const req = GET('/slow', 'connection: close\r\n');
  const r = await same(t, 'app', bytewise(req, 30), 'bytewise');
  t.match(text(r.data), /^HTTP\/1\.1 200 /);
  t.ok(text(r.data).endsWith(OK_BODY('/slow')), 'the whole answer');
  t.ok(r.fin && r.error === null, 'then a clean end');
  const h = await same(t, 'strict', bytewise(req, 30), 'bytewise, http listener');
  t.ok(text(h.data).endsWith(OK_BODY('/slow')), 'on an http listener too');
});

t.test('the head split in two at every position of its first 8 bytes, on both kinds of listener', async (t) => {
  for (const l of ['app', 'strict']) {
    for (let k = 1; k <= 8; k++) {
      const req = GET(`/split${k}`, 'connection: close\r\n');
      const r = await same(t, l, [req.slice(0, k), { gap: 30 }, req.slice(k)], `${l}: split at ${k}`);
      t.ok(text(r.data).startsWith('HTTP/1.1 200 ') && text(r.data).endsWith(OK_BODY(`/split${k}`)) && r.fin, `${l}: split at ${k} answered whole`);
    }
  }
});

t.test('a POST body trickled, with content-length and chunked', async (t) => {
  const body = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const head = `POST /post HTTP/1.1\r\nHost: a\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  const steps: Step[] = [head];
  for (let i = 0; i < body.length; i += 3) steps.push({ gap: 5 }, body.slice(i, i + 3));
  const r = await same(t, 'app', steps, 'trickled body');
  t.ok(text(r.data).endsWith(`POST /post len=${body.length} sha=${sha(Buffer.from(body)).slice(0, 16)} body=${body}`), 'the upstream got the body whole');
  const chead = 'POST /chunked HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n';
  const chunked = `5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`;
  const r2 = await same(t, 'app', [chead.slice(0, 3), { gap: 20 }, chead.slice(3), ...bytewise(chunked, chunked.length, 2)], 'trickled chunked body');
  t.ok(text(r2.data).endsWith('POST /chunked len=11 sha=b94d27b9934d3e08 body=hello world'), 'the chunked body whole');
});

t.test('pipelined requests split at odd places', async (t) => {
  const all = GET('/p1') + `POST /p2 HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\n\r\nwxyz` + GET('/p3', 'connection: close\r\n');
  for (const cut of [[1, 40], [5, 17, 60, 61], [2, 3, 4, 5, 6, 7], [all.length - 1]]) {
    const steps: Step[] = [];
    let at = 0;
    for (const c of cut) { steps.push(all.slice(at, c), { gap: 15 }); at = c; }
    steps.push(all.slice(at));
    const r = await same(t, 'app', steps, `cut at ${cut.join(',')}`);
    const s = text(r.data);
    t.equal(s.match(/HTTP\/1\.1 200 /g)?.length, 3, `cut at ${cut.join(',')}: three answers`);
    t.ok(s.indexOf('GET /p1 ') < s.indexOf('POST /p2 len=4') && s.indexOf('POST /p2 len=4') < s.indexOf('GET /p3 '), 'in order');
    t.ok(r.fin, 'then the end');
  }
});

// ── what follows a whole request in the first read ──────────────────────────

t.test('a whole request and, in the same segment, garbage / the HTTP/2 preface / a second request', async (t) => {
  const garbage = await same(t, 'app', [GET('/g') + '\x00\x01\x02 not http at all\r\n\r\n'], 'request + garbage');
  t.match(text(garbage.data), /^HTTP\/1\.1 200 [^]*GET \/g len=0/, 'the request is answered');
  t.match(text(garbage.data), /HTTP\/1\.1 400 /, 'the garbage refused');
  const h2 = await same(t, 'app', [GET('/h') + 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'], 'request + h2 preface');
  t.match(text(h2.data), /^HTTP\/1\.1 200 [^]*GET \/h len=0/, 'the request is answered');
  const two = await same(t, 'app', [GET('/one') + GET('/two', 'connection: close\r\n')], 'two requests');
  t.match(text(two.data), /GET \/one len=0[^]*GET \/two len=0/, 'both answered, in order');
  t.ok(two.fin);
});

// ── half-closes ─────────────────────────────────────────────────────────────

t.test('a request then a half-close at once: the whole response, then the FIN', async (t) => {
  for (let i = 0; i < 5; i++) {
    const r = await same(t, 'app', [GET(`/hc${i}`), { shut: true }], `half-close ${i}`);
    t.ok(text(r.data).startsWith('HTTP/1.1 200 ') && text(r.data).endsWith(OK_BODY(`/hc${i}`)), 'the whole answer');
    t.ok(r.fin && r.error === null, 'then a clean end');
  }
  // one read of request and FIN together, with a response larger than the socket buffers
  const big = await same(t, 'app', [GET('/big?mb=6'), { shut: true }], 'half-close, big answer');
  const at = big.data.indexOf('\r\n\r\n');
  t.equal(big.data.length - at - 4, 6 * MiB, 'every byte of the big answer');
  t.equal(sha(big.data.subarray(at + 4)), sha(BIG.subarray(0, 6 * MiB)), 'as the upstream sent it');
  t.ok(big.fin, 'then the end');
});

t.test('a FIN before any byte, and a FIN in the middle of a head', async (t) => {
  for (const l of ['app', 'strict']) {
    const r = await same(t, l, [{ shut: true }], `${l}: FIN first`);
    t.equal(r.data.length, 0, `${l}: nothing sent back`);
    t.ok(r.fin || r.error !== null, `${l}: and the connection ends`);
    for (const partial of ['GE', 'GET /x HT', 'GET /x HTTP/1.1\r\nHost: a\r\n']) {
      const p = await same(t, l, [partial, { gap: 20 }, { shut: true }], `${l}: FIN after ${JSON.stringify(partial)}`);
      t.ok(p.fin || p.error !== null, `${l}: FIN after ${JSON.stringify(partial)}: the connection ends`);
      t.notMatch(text(p.data), /HTTP\/1\.1 200/, 'nothing is forwarded as a request');
    }
  }
});

t.test('opaque first bytes (passed through to the upstream as they are), alone, cut, and followed by a FIN at once', async (t) => {
  for (const [what, steps] of [
    ['binary', ['\x00\x01\x02binary\r\n\r\n', { until: (b: Buffer) => b.length > 0 }, { shut: true }]],
    ['binary then FIN at once', ['\x00\x01\x02binary\r\n\r\n', { shut: true }]],
    ['QUIT line', ['QUIT\r\n', { shut: true }]],
    ['a token cut before its CRLF', ['QUIT', { gap: 30 }, '\r\n', { shut: true }]],
    ['a dubbo magic byte alone, then not dubbo', ['\xda', { gap: 30 }, '\x00xx', { shut: true }]],
  ] as [string, Step[]][]) {
    const r = await same(t, 'app', steps.map((x) => (typeof x === 'string' ? Buffer.from(x, 'latin1') : x)), what);
    t.ok(r.fin || r.error !== null, `${what}: the connection ends`);
    t.notMatch(text(r.data), /GET|POST/, `${what}: nothing answered as a request of the client's`);
  }
});

// ── slow and vanishing clients ──────────────────────────────────────────────

async function healthy(t: Test, s: RunningSluice, what: string): Promise<void> {
  const r = await converse(s.port('app'), [GET('/after', 'connection: close\r\n')]);
  t.ok(text(r.data).endsWith(OK_BODY('/after')) && r.fin, `${what}: the next client is served`);
  await waitFor(async () => (await stats(s.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'no connection left open')
    .then(() => t.pass(`${what}: open-connection gauge back to 0`), (e) => t.fail(String(e)));
  const st = await stats(s.admin);
  t.equal(st.get('sluice_worker_restarts_total') ?? 0, 0, `${what}: no worker restarted`);
}

t.test('a client that never reads a large response, then resets', async (t) => {
  for (const [name, s] of [['native', sl.native], ['node', sl.node]] as const) {
    const c = net.connect({ port: s.port('app'), host: '127.0.0.1' });
    c.on('error', () => {});
    c.pause();
    await once(c, 'connect');
    const id = `unread-${name}`;
    c.write(GET('/gen?mb=160', `x-id: ${id}\r\n`));
    // the response backs up: the upstream has sent megabytes and then cannot send more
    let last = -1;
    let same = 0;
    await waitFor(() => {
      const n = received.get(id)?.sent() ?? -1;
      same = n === last ? same + 1 : 0;
      last = n;
      return n > 2 * MiB && same >= 25;
    }, 15_000, `${name}: the response to back up`).catch((e) => t.fail(String(e)));
    // what the kernel buffers on the way can hold (tcp_rmem/tcp_wmem maxima, both connections) is far below 160 MiB
    t.ok(last < 100 * MiB, `${name}: the upstream is held back (${last} bytes sent of 160 MiB)`);
    c.resetAndDestroy();
    await once(c, 'close');
    await healthy(t, s, `${name}: after the reset with the response backed up`);
  }
});

t.test('a reset during the request body', async (t) => {
  for (const [name, s] of [['native', sl.native], ['node', sl.node]] as const) {
    const id = `rst-${name}`;
    const r = await converse(s.port('app'), [
      `POST /upload HTTP/1.1\r\nHost: a\r\nx-id: ${id}\r\ncontent-length: ${4 * MiB}\r\n\r\n`,
      randomBytes(256 * 1024),
      { gap: 10 },
      randomBytes(256 * 1024),
      { reset: true },
    ]);
    await waitFor(() => received.get(id)?.aborted || received.get(id)?.ended, 10_000, `${name}: the upstream request to end`).catch(() => undefined);
    const rec = received.get(id);
    t.ok(rec !== undefined && !(rec.ended && rec.bytes === 4 * MiB), `${name}: the upstream never got a whole body (${JSON.stringify(rec)})`);
    await healthy(t, s, `${name}: after a reset mid-body`);
  }
});

// ── upgrades ────────────────────────────────────────────────────────────────

const UPGRADE = 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n';
const SWITCHED = 'HTTP/1.1 101 ';
const after101 = (b: Buffer) => { const at = b.indexOf('\r\n\r\n'); return at < 0 ? '' : text(b.subarray(at + 4)); };

t.test('upgrade: bytes in the same segment as the request reach the upstream, then both ways; the client\'s close closes the upstream', async (t) => {
  const closedBefore = ws.state.closed;
  const r = await same(t, 'ws', [
    `${UPGRADE}EARLY-BYTES`,
    { until: (b) => after101(b).includes('EARLY-BYTES') },
    'ping-1',
    { until: (b) => after101(b).includes('ping-1') },
    Buffer.alloc(300 * 1024, 'z'),
    { until: (b) => after101(b).length >= 'EARLY-BYTESping-1'.length + 300 * 1024 },
    { shut: true },
  ], 'upgrade + echo');
  t.ok(text(r.data).startsWith(SWITCHED), 'switched');
  t.equal(after101(r.data), `EARLY-BYTESping-1${'z'.repeat(300 * 1024)}`, 'the early bytes, then the rest, echoed in order');
  t.ok(r.fin, 'the client\'s FIN went through and the upstream\'s came back');
  await waitFor(() => ws.state.closed >= closedBefore + 2, 10_000, 'both upstream connections closed')
    .then(() => t.pass('the upstream side closed'), (e) => t.fail(String(e)));
});

t.test('upgrade: bytes sent after the request but before the 101; the upstream\'s close closes the client', async (t) => {
  const r = await same(t, 'ws', [UPGRADE, 'AFTER', { until: (b) => after101(b).includes('AFTER') }, 'BYE-UP'], 'upgrade, upstream closes');
  t.ok(text(r.data).startsWith(SWITCHED), 'switched');
  t.ok(after101(r.data).startsWith('AFTER'), 'the bytes that followed the request reached the upstream');
  t.ok(r.fin || r.error !== null, 'the upstream going away ends the client\'s connection');
  const r2 = await same(t, 'ws', [UPGRADE + 'X', { shut: true }], 'upgrade then half-close at once');
  t.ok(text(r2.data).startsWith(SWITCHED), 'switched');
  t.equal(after101(r2.data), 'X', 'the byte echoed');
  t.ok(r2.fin, 'then the end');
});

t.test('upgrade after a keep-alive request on the same connection', async (t) => {
  const r = await same(t, 'ws', [GET('/first'), { until: (b) => b.includes('101') || text(b).includes('\r\n\r\n') }, `${UPGRADE}Q`, { until: (b) => text(b).endsWith('Q') }, { shut: true }], 'request then upgrade');
  t.ok(text(r.data).includes(SWITCHED), 'switched');
});

// ── what gets promoted ──────────────────────────────────────────────────────

t.test('HTTP/2 with prior knowledge on an auto listener', async (t) => {
  for (const [name, s] of [['native', sl.native], ['node', sl.node]] as const) {
    const u = `http://127.0.0.1:${s.port('app')}`;
    const r = await run('curl', ['-sS', '--http2-prior-knowledge', '--max-time', '10', `${u}/h2`]);
    t.equal(r.code, 0, `${name}: curl succeeded (${r.stderr})`);
    t.equal(r.stdout, OK_BODY('/h2'), `${name}: curl's request answered over HTTP/2`);
    const n = await run('nghttp', ['-t', '10', `${u}/h2a`, `${u}/h2b`, `${u}/h2c`]);
    t.equal(n.code, 0, `${name}: nghttp succeeded (${n.stderr})`);
    // concurrent streams: their answers come in any order
    const bodies = ['/h2a', '/h2b', '/h2c'].map(OK_BODY);
    t.ok(n.stdout.length === bodies.join('').length && bodies.every((b) => n.stdout.includes(b)), `${name}: three streams over one connection (${n.stdout})`);
  }
  // the preface in pieces: the first read says only "PRI"
  const p = await same(t, 'app', ['PRI', { gap: 30 }, ' * HTTP/2.0\r\n\r\nSM\r\n\r\n', '\x00\x00\x00\x04\x00\x00\x00\x00\x00', { until: (b) => b.length >= 9 }, { shut: true }], 'h2 preface in pieces');
  t.ok(p.data.length >= 9 && p.data[3] === 0x04, 'the server\'s SETTINGS came');
});

t.test('TLS through an auto listener (opaque): handshake and bytes both ways', async (t) => {
  for (const [name, s] of [['native', sl.native], ['node', sl.node]] as const) {
    const c = tls.connect({ port: s.port('tlsp'), host: '127.0.0.1', ca: tup.ca, servername: 'localhost', rejectUnauthorized: false });
    c.on('error', () => {});
    await once(c, 'secureConnect');
    const payload = randomBytes(200 * 1024);
    const got: Buffer[] = [];
    let n = 0;
    c.on('data', (d: Buffer) => { got.push(d); n += d.length; });
    c.write(payload);
    await waitFor(() => n >= payload.length, 10_000, `${name}: the echo`).catch(() => undefined);
    t.equal(sha(Buffer.concat(got)), sha(payload), `${name}: the payload echoed through the TLS tunnel`);
    c.end();
    await once(c, 'close');
  }
  const r = await run('sh', ['-c', `(printf 'hello-tls'; sleep 2) | timeout 10 openssl s_client -connect 127.0.0.1:${sl.native.port('tlsp')} -quiet -no_ign_eof -servername localhost 2>/dev/null; true`]);
  t.match(r.stdout, /hello-tls/, 'openssl s_client through the native listener: echoed');
});

t.test('a silent client past the sniff timeout, then a request', async (t) => {
  const r = await same(t, 'app', [{ gap: 700 }, GET('/late', 'connection: close\r\n')], 'silent then GET on auto');
  t.ok(text(r.data).endsWith(OK_BODY('/late')), 'answered as HTTP after the sniff timeout');
  const h = await same(t, 'strict', [{ gap: 700 }, 'GE', { gap: 30 }, GET('/late2', 'connection: close\r\n').slice(2)], 'silent then GET on http');
  t.ok(text(h.data).endsWith(OK_BODY('/late2')), 'on an http listener too, within the header timeout');
});

// ── smuggling basics ────────────────────────────────────────────────────────

t.test('request smuggling basics are refused alike', async (t) => {
  const cases: [string, string][] = [
    ['CL+TE', 'POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['two CLs', 'POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['TE not chunked', 'POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['bare LF', 'GET /x\nHost: a\r\nContent-Length: 5\r\n\r\nhello'],
  ];
  for (const [name, req] of cases) {
    for (const split of [0, 3]) {
      const steps: Step[] = split ? [req.slice(0, split), { gap: 20 }, req.slice(split)] : [req];
      const r = await same(t, 'app', steps, `${name}${split ? ' (split)' : ''}`);
      t.match(text(r.data), /^HTTP\/1\.1 400 /, `${name}: 400`);
      t.notMatch(text(r.data), /smuggled/, `${name}: nothing smuggled`);
    }
  }
});

// ── backpressure both ways ──────────────────────────────────────────────────

/** The responses at the front of `b`, in order: [head, body] each (content-length or chunked framing). */
function responses(b: Buffer): { head: string; body: Buffer }[] {
  const out: { head: string; body: Buffer }[] = [];
  let pos = 0;
  while (pos < b.length) {
    const he = b.indexOf('\r\n\r\n', pos);
    if (he < 0) break;
    const head = b.subarray(pos, he).toString('latin1');
    let at = he + 4;
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (cl) {
      out.push({ head, body: b.subarray(at, at + Number(cl[1])) });
      pos = at + Number(cl[1]);
    } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      const parts: Buffer[] = [];
      for (;;) {
        const le = b.indexOf('\r\n', at);
        if (le < 0) return out;
        const size = parseInt(b.subarray(at, le).toString('latin1'), 16);
        if (!(size > 0)) { at = le + 4; break; }
        parts.push(b.subarray(le + 2, le + 2 + size));
        at = le + 2 + size + 2;
      }
      out.push({ head, body: Buffer.concat(parts) });
      pos = at;
    } else {
      out.push({ head, body: Buffer.alloc(0) });
      pos = at;
    }
  }
  return out;
}

t.test('pipelined requests past the header limit in one write: reads stop and start again, every request answered in order', async (t) => {
  const n = 2500;
  let all = '';
  for (let i = 0; i < n - 1; i++) all += `GET /q${i} HTTP/1.1\r\nHost: a\r\n\r\n`;
  all += GET(`/q${n - 1}`, 'connection: close\r\n');
  t.ok(all.length > 65536, `${all.length} bytes pipelined, past http.maxHeaderBytes`);
  const r = await same(t, 'app', [all], 'a pipelined burst');
  const rs = responses(r.data);
  t.equal(rs.length, n, 'every request answered');
  t.ok(rs.every((x, i) => x.body.toString('latin1') === OK_BODY(`/q${i}`)), 'each with its own answer, in order');
  t.ok(r.fin, 'then the end');
});

t.test('pipelined large responses to a slow reader: every byte, in order', async (t) => {
  const req = (i: number, last = false) => GET(`/big?mb=${i % 2 ? 3 : 1}&i=${i}`, last ? 'connection: close\r\n' : '');
  const steps = [req(0) + req(1) + req(2) + req(3, true)];
  const r = await same(t, 'app', steps, 'four big answers, slow reader', { slow: true });
  const rs = responses(r.data);
  t.equal(rs.length, 4, 'four answers');
  t.ok(rs.every((x, i) => sha(x.body) === sha(BIG.subarray(0, (i % 2 ? 3 : 1) * MiB))), 'each body as the upstream sent it');
  // chunk sizes follow the reads, so only the bodies are compared
  for (const [name, s] of [['native', sl.native], ['node', sl.node]] as const) {
    const c = await converse(s.port('app'), [GET('/chunked-big?mb=6', 'connection: close\r\n')], { slow: true });
    const cr = responses(c.data);
    t.equal(cr.length, 1, `${name}: one chunked answer`);
    t.equal(sha(cr[0]?.body ?? Buffer.alloc(0)), sha(BIG.subarray(0, 6 * MiB)), `${name}: the chunked body whole, read slowly`);
    t.ok(c.fin && c.error === null, `${name}: then the end`);
  }
});

t.test('a large upload to an upstream that reads late: the body whole', async (t) => {
  const body = randomBytes(6 * MiB);
  const head = `POST /upload-slow HTTP/1.1\r\nHost: a\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  const pieces: Step[] = [head];
  for (let i = 0; i < body.length; i += 2 * MiB) pieces.push(body.subarray(i, i + 2 * MiB));
  const r = await same(t, 'app', pieces, 'a 6 MiB upload');
  t.ok(text(r.data).includes(`POST /upload-slow len=${body.length} sha=${sha(body).slice(0, 16)} body=`), 'the upstream got it whole');
});

t.test('the upstream sees the same request headers from a native connection', async (t) => {
  const r = await same(t, 'app', [GET('/headers', 'connection: close\r\nx-a: 1\r\n')], 'headers');
  t.match(text(r.data), /host=a/);
});

t.test('a head that stops halfway: 408 after the header timeout, alike', async (t) => {
  const r = await same(t, 'app', ['GET /stall HTTP/1.1\r\nHo'], 'stalled head');
  t.match(text(r.data), /^HTTP\/1\.1 408 /, '408');
  t.ok(r.fin || r.error !== null, 'then the end');
});

// ── more upgrades ───────────────────────────────────────────────────────────

t.test('upgrade: the upstream\'s first bytes in the segment of its 101', async (t) => {
  const up = UPGRADE.replace('/ws ', '/ws-rest ');
  const r = await same(t, 'ws', [up, { until: (b) => text(b).includes('HELLO-FROM-UP') }, 'abc', { until: (b) => text(b).endsWith('abc') }, { shut: true }], 'rest with the 101');
  t.equal(after101(r.data), 'HELLO-FROM-UPabc', 'the upstream\'s bytes, then the echo');
  t.ok(r.fin, 'then the end');
});

t.test('upgrade: 2 MiB of the upstream\'s bytes with its 101, to a client that reads slowly', async (t) => {
  const up = UPGRADE.replace('/ws ', '/ws-big ');
  const r = await same(t, 'ws', [up, { until: (b) => b.length >= 2 * MiB + 60 && b.subarray(b.indexOf('\r\n\r\n') + 4).length >= 2 * MiB }, { shut: true }], 'a big rest with the 101', { slow: true });
  const at = r.data.indexOf('\r\n\r\n');
  t.ok(text(r.data).startsWith(SWITCHED), 'switched');
  t.equal(sha(r.data.subarray(at + 4)), sha(BIG.subarray(0, 2 * MiB)), 'every byte the upstream sent after its 101, in order');
});

t.test('upgrade pipelined behind a 6 MiB answer read slowly: the answer, the 101, the tunnel, in order', async (t) => {
  const first = 'GET /ws-bigno HTTP/1.1\r\nHost: a\r\n\r\n';
  const total = (b: Buffer) => { const at = b.indexOf('\r\n\r\n'); const at2 = at < 0 || b.length < at + 4 + 6 * MiB ? -1 : b.indexOf('\r\n\r\n', at + 4 + 6 * MiB); return at2 < 0 ? '' : text(b.subarray(at2 + 4)); };
  // read slowly: when the answer's last bytes come from the upstream, Sluice's socket is full, and
  // what it holds of them is still held when the 101 comes and the connection goes to a Node socket
  const r = await same(t, 'ws', [`${first}${UPGRADE}EARLY`, { until: (b) => total(b).endsWith('EARLY') }, 'LATER', { until: (b) => total(b).endsWith('EARLYLATER') }, { shut: true }], 'answer, then upgrade', { trickle: true });
  const at = r.data.indexOf('\r\n\r\n');
  t.match(text(r.data.subarray(0, at)), /^HTTP\/1\.1 200 /, 'the ordinary answer first');
  t.equal(sha(r.data.subarray(at + 4, at + 4 + 6 * MiB)), sha(BIG.subarray(0, 6 * MiB)), 'its body whole');
  t.ok(text(r.data.subarray(at + 4 + 6 * MiB)).startsWith(SWITCHED), 'then the 101');
  t.equal(total(r.data), 'EARLYLATER', 'then the tunnel, both pieces echoed');
  t.ok(r.fin, 'then the end');
});

t.test('upgrade declined twice on a keep-alive connection, then accepted', async (t) => {
  const no = UPGRADE.replace('/ws ', '/ws-no ');
  const r = await same(t, 'ws', [
    no, { until: (b) => text(b).endsWith('no') },
    no, { until: (b) => (text(b).match(/\r\n\r\nno/g)?.length ?? 0) === 2 },
    `${UPGRADE}late`, { until: (b) => text(b).endsWith('late') },
    'more', { until: (b) => text(b).endsWith('latemore') },
    { shut: true },
  ], 'declined, declined, accepted');
  t.equal(text(r.data).match(/HTTP\/1\.1 200 /g)?.length, 2, 'two ordinary answers');
  t.ok(text(r.data).includes(SWITCHED), 'then switched');
  t.ok(text(r.data).endsWith('latemore'), 'and the tunnel carries bytes');
  t.ok(r.fin);
});

t.test('upgrade: a burst far past the header limit right behind the request', async (t) => {
  const burst = randomBytes(400 * 1024);
  const r = await same(t, 'ws', [Buffer.concat([Buffer.from(UPGRADE), burst]), { until: (b) => b.length >= burst.length + 60 && b.subarray(b.indexOf('\r\n\r\n') + 4).length >= burst.length }, { shut: true }], 'upgrade + 400 KiB');
  const at = r.data.indexOf('\r\n\r\n');
  t.ok(text(r.data).startsWith(SWITCHED), 'switched');
  t.equal(sha(r.data.subarray(at + 4)), sha(burst), 'the burst echoed whole and in order');
});

// ── a relay that splits what a real client sends first ───────────────────────

/**
 * A TCP relay on 127.0.0.1:0 to `target`: the first bytes a client sends go on cut at `cuts`
 * (each piece after the last is written, and a pause that only keeps them in separate segments),
 * everything after as it comes, both ways, half-closes included.
 */
async function splittingRelay(t: Test, target: number, cuts: number[]): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    down.setNoDelay(true);
    const up = net.connect({ port: target, host: '127.0.0.1', allowHalfOpen: true });
    up.setNoDelay(true);
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    up.pipe(down);
    down.once('data', async (first: Buffer) => {
      down.pause(); // what follows waits in the socket until the pieces are written
      let at = 0;
      for (const c of cuts) {
        if (c >= first.length) break;
        await new Promise<void>((r) => up.write(first.subarray(at, c), () => r()));
        await sleep(30);
        at = c;
      }
      up.write(first.subarray(at));
      down.pipe(up);
      down.resume();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

t.test('inbound mTLS (permissive) on a native listener: the ClientHello whole, or cut after 1 and 5 bytes', async (t) => {
  const ca = pki.ca('mesh');
  const server = pki.issue(ca, 'spiffe://cluster.local/ns/shop/sa/orders');
  const caller = pki.issue(ca, 'spiffe://cluster.local/ns/web/sa/frontend');
  const doc = {
    ...config(),
    tls: { certFile: server.certFile, keyFile: server.keyFile, caFile: server.caFile, inbound: { mode: 'permissive' } },
    listeners: [{ name: 'app', address: '127.0.0.1:0', direction: 'inbound', cluster: 'web' }],
  };
  const { native, node } = await bothWays(doc);
  t.teardown(() => native.stop());
  t.teardown(() => node.stop());
  const ask = (port: number, path: string) => new Promise<string>((resolve) => {
    const c = tls.connect({ port, host: '127.0.0.1', cert: caller.cert, key: caller.key, ca: caller.ca, rejectUnauthorized: false });
    let out = '';
    c.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    c.on('error', (e) => { out += `ERROR ${String(e)}`; });
    c.on('secureConnect', () => c.write(`${GET(path, 'connection: close\r\n')}`));
    c.on('close', () => resolve(out));
    c.setTimeout(10_000, () => c.destroy());
  });
  for (const cuts of [[], [1], [5], [1, 2, 3]]) {
    for (const [name, s] of [['native', native], ['node', node]] as const) {
      const port = cuts.length ? await splittingRelay(t, s.port('app'), cuts) : s.port('app');
      const out = await ask(port, `/mtls${cuts.join('-')}`);
      t.ok(out.startsWith('HTTP/1.1 200 ') && out.endsWith(OK_BODY(`/mtls${cuts.join('-')}`)), `${name}, cut at [${cuts}]: answered inside mTLS (${out.slice(0, 80)})`);
    }
    // plaintext on the same port, with its request line cut the same way
    const port = cuts.length ? await splittingRelay(t, native.port('app'), cuts) : native.port('app');
    const plain = await converse(port, [GET(`/plain${cuts.join('-')}`, 'connection: close\r\n')]);
    t.ok(text(plain.data).endsWith(OK_BODY(`/plain${cuts.join('-')}`)), `native, plaintext cut at [${cuts}]: answered`);
  }
});

t.test('HTTP/2 with prior knowledge, its preface cut by a relay: curl and nghttp are served', async (t) => {
  for (const cuts of [[1], [3, 10], [14], [24]]) {
    const port = await splittingRelay(t, sl.native.port('app'), cuts);
    const r = await run('curl', ['-sS', '--http2-prior-knowledge', '--max-time', '10', `http://127.0.0.1:${port}/cut`]);
    t.equal(r.stdout, OK_BODY('/cut'), `curl, preface cut at [${cuts}] (${r.stderr})`);
  }
});

t.test('Expect: 100-continue, a body after the interim answer, and a half-close right after a body', async (t) => {
  const head = 'POST /expect HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n';
  const r = await same(t, 'app', [head, { until: (b) => text(b).includes('100 Continue') || text(b).includes(' 200 ') }, 'hello'], '100-continue');
  t.match(text(r.data), /^HTTP\/1\.1 100 /, 'the interim answer first');
  t.ok(text(r.data).endsWith('POST /expect len=5 sha=2cf24dba5fb0a30e body=hello'), 'then the answer to the whole body');
  const p = await same(t, 'app', ['POST /shut HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello', { shut: true }], 'POST then half-close');
  t.ok(text(p.data).endsWith('POST /shut len=5 sha=2cf24dba5fb0a30e body=hello') && p.fin, 'answered whole, then the end');
  // the head and a 1 MiB body in one write: the first read is a request and a quarter of its body
  const body = randomBytes(MiB);
  const one = await same(t, 'app', [Buffer.concat([Buffer.from(`POST /one HTTP/1.1\r\nHost: a\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`), body])], 'head and body in one write');
  t.ok(text(one.data).includes(`POST /one len=${body.length} sha=${sha(body).slice(0, 16)} `), 'the body whole');
});

t.test('a client that resets while its request waits on the upstream: the upstream request is given up', async (t) => {
  for (const [name, s] of [['native', sl.native], ['node', sl.node]] as const) {
    for (const shut of [false, true]) {
      const before = hanging.size;
      const c = net.connect({ port: s.port('app'), host: '127.0.0.1', allowHalfOpen: true });
      c.on('error', () => {});
      await once(c, 'connect');
      c.write(GET('/hang'));
      if (shut) c.end();
      await waitFor(() => hanging.size > before, 10_000, 'the request to reach the upstream');
      const res = [...hanging].at(-1)!;
      const gone = once(res, 'close');
      c.resetAndDestroy();
      if (!shut) {
        // the reset is seen at once on a connection that is still read
        const ok = await Promise.race([gone.then(() => true), sleep(10_000).then(() => false)]);
        t.ok(ok, `${name}: the upstream request is closed after the client's reset`);
      } else {
        // a half-closed client is no longer read (nor was it with Node sockets): the reset is seen
        // when the late answer is written, and the connection must close then (the gauge below)
        res.end('late');
      }
      await waitFor(async () => (await stats(s.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'closed')
        .then(() => t.pass(`${name}${shut ? ' (half-closed)' : ''}: the connection is closed in Sluice`), (e) => t.fail(String(e)));
    }
  }
});

// ── an upgrade whose client is gone by the time the 101 comes ───────────────

/**
 * The client sends an upgrade request and far more than a head's worth of bytes behind it (so
 * Sluice stops reading it), then resets; only then does the upstream answer 101. Sluice must
 * give the tunnel up quietly, as it does with Node sockets: both sides closed, nothing counted
 * open, and no internal error in its log. A separate Sluice process, so that its log can be read.
 */
t.test('upgrade: the client resets before its 101 comes: closed quietly, no internal error logged', async (t) => {
  for (const [name, env] of [['native', {}], ['node', { SLUICE_NATIVE_SOCKETS: '0' }]] as const) {
    let go: (() => void) | null = null;
    let upClosed = false;
    const up = net.createServer((sock) => {
      sock.on('error', () => {});
      sock.on('close', () => { upClosed = true; });
      let head = '';
      const onData = (d: Buffer) => {
        head += d.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        sock.removeListener('data', onData);
        go = () => sock.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nFROM-UP');
        sock.on('data', (e: Buffer) => sock.write(e));
      };
      sock.on('data', onData);
    });
    up.listen(0, '127.0.0.1');
    await once(up, 'listening');
    t.teardown(() => new Promise<void>((r) => up.close(() => r())));
    const file = writeConfig(withTestDefaults({
      workers: { threads: 1 },
      listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'ws' }],
      clusters: [{ name: 'ws', endpoints: [`127.0.0.1:${(up.address() as AddressInfo).port}`] }],
      drain: { periodMs: 0, timeoutMs: 1000 },
    }));
    const child = spawnSluice(['start', '--config', file], { env: { ...env } });
    t.teardown(async () => { if (child.proc.exitCode === null) { child.proc.kill('SIGKILL'); await child.exited; } });
    const started = await sluiceStarted(child);
    const c = net.connect({ port: started.ports.app, host: '127.0.0.1' });
    c.on('error', () => {});
    await once(c, 'connect');
    c.write(Buffer.concat([Buffer.from(UPGRADE), Buffer.alloc(MiB, 'e')]));
    await waitFor(() => go, 10_000, `${name}: the upgrade request at the upstream`);
    await sleep(300); // not a proof: lets Sluice read past the head limit and stop reading the client
    c.resetAndDestroy();
    await once(c, 'close');
    go!();
    await waitFor(() => upClosed, 10_000, `${name}: the upstream side to close`)
      .then(() => t.pass(`${name}: the upstream side of the tunnel is closed`), (e) => t.fail(String(e)));
    await waitFor(async () => (await stats(started.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'closed')
      .then(() => t.pass(`${name}: no connection counted open`), (e) => t.fail(String(e)));
    // a clean stop writes out every log line before the process exits
    child.proc.kill('SIGTERM');
    await child.exited;
    const errors = child.output().split('\n').filter((l) => /"level":50/.test(l));
    t.same(errors.map((l) => l.slice(0, 300)), [], `${name}: no error in the log`);
  }
});

// ── authorization by source address, and a client that resets at once ───────

/**
 * A deny rule on the caller's address must hold however the caller leaves: a request followed at
 * once by a reset (its response unwanted, its side effects not) must not reach the upstream from
 * a denied address. Sent whole (a native socket's first read) and cut after two bytes (the
 * connection goes on as a Node socket), on a Sluice with native sockets and on one without.
 */
t.test('authorization: a request from a denied address, then a reset at once, never reaches the upstream', async (t) => {
  const doc = { ...config(), authorization: [{ name: 'no-loopback-1', action: 'deny', sourceRanges: ['127.0.0.1'] }] };
  const { native, node } = await bothWays(doc);
  t.teardown(() => native.stop());
  t.teardown(() => node.stop());
  for (const [name, s] of [['native', native], ['node', node]] as const) {
    const plain = await converse(s.port('app'), [GET('/denied', 'connection: close\r\n')]);
    t.match(text(plain.data), /^HTTP\/1\.1 403 /, `${name}: an ordinary request from 127.0.0.1 is denied`);
    for (const cut of [0, 2]) {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const id = `deny-${name}-${cut}-${i}`;
        ids.push(id);
        const req = `POST /side-effect HTTP/1.1\r\nHost: a\r\nx-id: ${id}\r\ncontent-length: 2\r\n\r\nhi`;
        await converse(s.port('app'), cut ? [req.slice(0, cut), { gap: 20 }, req.slice(cut), { reset: true }] : [req, { reset: true }]);
      }
      // every one of those connections is over in Sluice before the upstream is asked what it got
      await waitFor(async () => (await stats(s.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'closed').catch(() => undefined);
      const through = ids.filter((id) => received.has(id));
      t.equal(through.length, 0, `${name}, request ${cut ? `cut after ${cut} bytes` : 'whole'}, then a reset: ${through.length} of 20 reached the upstream from a denied address`);
    }
  }
});

// ── the worker or Sluice going away with native connections open ─────────────

/** Connections in every state a native socket can be in, on `s`; each resolves when the client sees its end. */
async function openEveryKind(s: RunningSluice): Promise<{ name: string; done: Promise<Seen> }[]> {
  const port = s.port('app');
  const kinds: { name: string; done: Promise<Seen> }[] = [
    { name: 'idle keep-alive', done: converse(port, [GET('/idle'), { until: (b) => text(b).endsWith(OK_BODY('/idle')) }, { until: () => false }]) },
    { name: 'half a head', done: converse(port, ['GET /half HTTP/1.1\r\nHo', { until: () => false }]) },
    { name: 'silent', done: converse(port, [{ until: () => false }]) },
    { name: 'waiting on the upstream', done: converse(port, [GET('/hang'), { until: () => false }]) },
    { name: 'half-closed, waiting on the upstream', done: converse(port, [GET('/hang'), { shut: true }, { until: () => false }]) },
    { name: 'response backed up', done: converse(port, [GET('/big?mb=16'), { until: () => false }], { slow: true }) },
    { name: 'tunnel', done: converse(s.port('ws'), [UPGRADE, { until: (b) => text(b).includes(SWITCHED) }, { until: () => false }]) },
  ];
  // every one of them has reached its state: each is counted open
  await waitFor(async () => {
    const st = await stats(s.admin);
    return (st.get('sluice_downstream_cx_active{listener="app"}') ?? 0) >= kinds.length - 1 && (st.get('sluice_downstream_cx_active{listener="ws"}') ?? 0) >= 1;
  }, 10_000, 'every connection open').catch(() => undefined);
  await sleep(300); // not a proof: lets the slow reader's response back up
  return kinds;
}

t.test('a worker killed with native connections in every state: each client sees its end, the next is served', async (t) => {
  const s = await startSluice({ ...config(), http: { headerTimeoutMs: 20_000 }, tcp: { sniffTimeoutMs: 20_000 } });
  t.teardown(() => s.stop());
  // warm-up: everything made lazily exists before the baseline
  await converse(s.port('app'), [GET('/warm', 'connection: close\r\n')]);
  const before = await settledFds(process.pid);
  const kinds = await openEveryKind(s);
  const kill = (await adminPost(s.admin, '/debug/kill_worker')).status;
  t.equal(kill, 200, 'kill_worker accepted');
  for (const k of kinds) {
    const r = await k.done;
    t.not(r.error, 'timeout', `${k.name}: the client sees its connection end`);
  }
  const next = await converse(s.port('app'), [GET('/next', 'connection: close\r\n')]);
  t.ok(text(next.data).endsWith(OK_BODY('/next')), 'a new connection is served by the new worker');
  for (const res of hanging) res.destroy();
  const after = await waitFor(() => { const n = openFds(); return n <= before + 4 ? n : 0; }, 20_000, 'descriptors back').catch(() => openFds());
  t.ok(after <= before + 4, `descriptors: ${after} after, ${before} before`);
});

t.test('Sluice stopped with native connections in every state: each client sees its end', async (t) => {
  const s = await startSluice({ ...config(), http: { headerTimeoutMs: 20_000 }, tcp: { sniffTimeoutMs: 20_000 } });
  const kinds = await openEveryKind(s);
  await s.stop();
  for (const k of kinds) {
    const r = await k.done;
    t.not(r.error, 'timeout', `${k.name}: the client sees its connection end`);
  }
  for (const res of hanging) res.destroy();
});

t.test('h2load: HTTP/1.1 keep-alive, one request per connection, and h2c, through the native listener', async (t) => {
  const u = `http://127.0.0.1:${sl.native.port('app')}/load`;
  for (const [what, args, n] of [
    ['HTTP/1.1, 30 connections', ['--h1', '-n', '3000', '-c', '30'], 3000],
    ['HTTP/1.1, one request per connection', ['--h1', '-n', '500', '-c', '500'], 500],
    ['h2c, 4 streams at a time', ['-n', '2000', '-c', '20', '-m', '4'], 2000],
  ] as const) {
    const r = await run('h2load', [...args, u], 60_000);
    t.match(r.stdout, new RegExp(`requests: ${n} total, ${n} started, ${n} done, ${n} succeeded, 0 failed, 0 errored, 0 timeout`), `${what}: every request succeeded`);
    t.match(r.stdout, new RegExp(`status codes: ${n} 2xx`), `${what}: all 2xx`);
  }
  await waitFor(async () => (await stats(sl.native.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'closed')
    .then(() => t.pass('open-connection gauge back to 0'), (e) => t.fail(String(e)));
  t.equal((await stats(sl.native.admin)).get('sluice_worker_restarts_total') ?? 0, 0, 'no worker restarted');
});

// ── many short connections ──────────────────────────────────────────────────

t.test('2000 short connections of every kind: no descriptor left, the gauge back to 0', async (t) => {
  const s = sl.native;
  const port = s.port('app');
  const strict = s.port('strict');
  const kinds: ((i: number) => Promise<unknown>)[] = [
    (i) => converse(port, [GET(`/m${i}`, 'connection: close\r\n')]),
    (i) => converse(port, [GET(`/k${i}`), { until: (b) => text(b).endsWith(OK_BODY(`/k${i}`)) }, { shut: true }]),
    () => converse(port, [{ shut: true }]),
    () => converse(port, ['GE', { reset: true }]),
    () => converse(strict, ['GET /x HTTP/1.1\r\nHo', { shut: true }]),
    () => converse(port, [GET('/big?mb=1'), { until: (b) => b.length > 1000 }, { reset: true }]),
    () => converse(port, ['\x16\x03\x01\x00\x05hello', { shut: true }]),
    () => converse(strict, [{ reset: true }]),
  ];
  const round = async (n: number, base: number) => {
    let next = 0;
    const lane = async () => { for (let i = next++; i < n; i = next++) await kinds[i % kinds.length](base + i); };
    await Promise.all(Array.from({ length: 16 }, lane));
  };
  await round(64, 0); // every kind once, and the upstream pool warmed
  await waitFor(async () => (await stats(s.admin)).get('sluice_downstream_cx_active{listener="app"}') === 0, 10_000, 'warm-up closed');
  const before = await settledFds(process.pid);
  const started = Date.now();
  await round(2000, 1000);
  t.comment(`2000 connections in ${Date.now() - started} ms`); // bounded by each connection's own 15 s limit, not asserted
  await waitFor(async () => {
    const st = await stats(s.admin);
    return st.get('sluice_downstream_cx_active{listener="app"}') === 0 && st.get('sluice_downstream_cx_active{listener="strict"}') === 0;
  }, 15_000, 'open-connection gauges back to 0').then(() => t.pass('open-connection gauges back to 0'), (e) => t.fail(String(e)));
  const after = await settledFds(process.pid);
  t.ok(after <= before + 8, `descriptors: ${after} after, ${before} before`);
  t.equal((await stats(s.admin)).get('sluice_worker_restarts_total') ?? 0, 0, 'no worker restarted');
});
