/**
 * HTTP/2 cleartext (prior knowledge) through Sluice: to an h2c upstream, to an
 * HTTP/1.1 upstream, resets, local failure replies and counters. Clients are
 * curl, h2load and Node's own HTTP/2 client (for exact control of framing).
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { H2Client, headersFrame, hpack, requestFields } from '../helpers/h2-frames';
import { h2Upstream, httpUpstream, run, startSluice, stats, waitFor } from '../helpers/harness';

const { NGHTTP2_INTERNAL_ERROR } = http2.constants;

interface H2Result {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
  trailers: http2.IncomingHttpHeaders | null;
  /** The stream ended with END_STREAM (not a reset). */
  ended: boolean;
  rstCode: number;
  error: Error | null;
}

/**
 * One request on its own h2c session. `body` chunks are written one by one;
 * content-length is sent only if the caller puts it in `headers`.
 */
function h2request(port: number, headers: http2.OutgoingHttpHeaders, body: Array<string | Buffer> = [], timeoutMs = 10_000): Promise<H2Result> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    const res: H2Result = { status: 0, headers: {}, body: '', trailers: null, ended: false, rstCode: 0, error: null };
    const req = session.request({ ':path': '/', ...headers }, { endStream: body.length === 0 });
    const timer = setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), timeoutMs);
    req.setEncoding('utf8');
    req.on('response', (h) => { res.status = Number(h[':status']); res.headers = h; });
    req.on('trailers', (tr) => { res.trailers = tr; });
    req.on('data', (d: string) => { res.body += d; });
    req.on('end', () => { res.ended = true; });
    req.on('error', (err) => { res.error = err; });
    req.on('close', () => {
      clearTimeout(timer);
      res.rstCode = req.rstCode ?? 0;
      session.close();
      resolve(res);
    });
    if (body.length) {
      for (const chunk of body) req.write(chunk);
      req.end();
    }
  });
}

/** A port on 127.0.0.1 where nothing listens (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => { s += d; });
    stream.on('end', () => resolve(s));
    stream.on('error', reject);
  });
}

t.test('h2c prior knowledge to an h2c upstream (protocol auto): curl GET, POST, h2load', async (t) => {
  const up = await h2Upstream((stream, headers) => {
    readAll(stream).then((body) => {
      if (stream.destroyed) return;
      stream.respond({
        ':status': 200,
        'content-type': 'text/plain',
        'x-upstream': 'h2',
        'x-seen-via': String(headers.via),
        'x-seen-method': String(headers[':method']),
      });
      stream.end(`${headers[':method']} ${headers[':path']} body=${body}`);
    }, () => {});
  });
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', protocol: 'auto', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const base = `http://127.0.0.1:${s.port('app')}`;

  const get = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', `${base}/hello?x=1`]);
  t.equal(get.code, 0, get.stderr);
  t.match(get.stdout, /^HTTP\/2 200 ?\r\n/);
  t.match(get.stdout, /\r\nx-upstream: h2\r\n/);
  t.match(get.stdout, /\r\nx-seen-via: 1\.1 sluice\r\n/, 'the upstream saw via');
  t.match(get.stdout, /\r\nvia: 1\.1 sluice\r\n/, 'the client sees via on the response');
  t.match(get.stdout, /\r\n\r\nGET \/hello\?x=1 body=$/);

  const post = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', '--data-binary', 'payload-123', `${base}/submit`]);
  t.equal(post.code, 0, post.stderr);
  t.match(post.stdout, /^HTTP\/2 200 ?\r\n/);
  t.match(post.stdout, /\r\nx-seen-method: POST\r\n/);
  t.match(post.stdout, /\r\n\r\nPOST \/submit body=payload-123$/);

  // a body larger than a window, in both directions
  const big = 'b'.repeat(300_000);
  const r = await h2request(s.port('app'), { ':method': 'POST', ':path': '/big' }, [big.slice(0, 100_000), big.slice(100_000)]);
  t.equal(r.status, 200);
  t.equal(r.body, `POST /big body=${big}`);
  t.ok(r.ended);

  const load = await run('h2load', ['-n', '2000', '-c', '4', '-m', '10', `${base}/load`], 60_000);
  t.equal(load.code, 0, load.stderr);
  const m = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(load.stdout);
  t.ok(m, load.stdout);
  t.equal(Number(m?.[2]), 2000, 'all requests succeeded');
  t.match(load.stdout, /status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx/);
});

t.test('h2 downstream to an HTTP/1.1 upstream (protocol http1)', async (t) => {
  const up = await httpUpstream((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const seen = `cl=${req.headers['content-length'] ?? '-'} te=${req.headers['transfer-encoding'] ?? '-'} via=${req.headers.via} host=${req.headers.host}`;
      if (req.url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum', 'x-seen': seen });
        res.write('part1,');
        res.write('part2');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return;
      }
      res.setHeader('x-seen', seen);
      res.setHeader('x-upstream', 'h1');
      res.end(`${req.method} ${req.url} body=${body}`);
    });
  });
  const s = await startSluice({
    workers: { threads: 1 }, // one worker: starts faster, and nothing here needs two
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'legacy' }],
    clusters: [{ name: 'legacy', protocol: 'http1', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const base = `http://127.0.0.1:${s.port('app')}`;
  const port = s.port('app');

  const get = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', `${base}/a?b=c`]);
  t.equal(get.code, 0, get.stderr);
  t.match(get.stdout, /^HTTP\/2 200 ?\r\n/);
  t.match(get.stdout, /\r\nx-upstream: h1\r\n/);
  t.match(get.stdout, /\r\nvia: 1\.1 sluice\r\n/);
  t.match(get.stdout, new RegExp(`\\r\\nx-seen: cl=- te=- via=1\\.1 sluice host=127\\.0\\.0\\.1:${port}\\r\\n`));
  t.notMatch(get.stdout, /\r\n(connection|keep-alive|transfer-encoding):/i, 'no connection-specific headers in h2');
  t.match(get.stdout, /\r\n\r\nGET \/a\?b=c body=$/);

  const post = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', '--data-binary', 'hello-h1', `${base}/post`]);
  t.equal(post.code, 0, post.stderr);
  t.match(post.stdout, /\r\nx-seen: cl=8 te=- /, 'content-length passed on');
  t.match(post.stdout, /\r\n\r\nPOST \/post body=hello-h1$/);

  // no content-length from the h2 client: the h1 request goes out chunked
  const chunked = await h2request(port, { ':method': 'POST', ':path': '/nolen' }, ['one,', 'two,', 'three']);
  t.equal(chunked.status, 200);
  t.match(chunked.headers['x-seen'], /^cl=- te=chunked /);
  t.equal(chunked.body, 'POST /nolen body=one,two,three');
  t.ok(chunked.ended);

  // content-length given and the body in several DATA frames
  const withLen = await h2request(port, { ':method': 'PUT', ':path': '/len', 'content-length': '9' }, ['abc', 'def', 'ghi']);
  t.equal(withLen.status, 200);
  t.match(withLen.headers['x-seen'], /^cl=9 te=- /);
  t.equal(withLen.body, 'PUT /len body=abcdefghi');

  // chunked response with trailers from the h1 upstream: trailers arrive as h2 trailers
  const tr = await h2request(port, { ':method': 'GET', ':path': '/trailers' });
  t.equal(tr.status, 200);
  t.equal(tr.body, 'part1,part2');
  t.ok(tr.ended, 'clean end');
  t.same(tr.trailers && tr.trailers['x-checksum'], 'abc123', 'trailer arrives');
  t.equal(tr.headers['transfer-encoding'], undefined);

  const cr = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', `${base}/trailers`]);
  t.equal(cr.code, 0, cr.stderr);
  t.match(cr.stdout, /part1,part2/);
  t.match(cr.stdout, /part1,part2x-checksum: abc123\r\n$/, 'curl prints the trailer after the body');
});

t.test('an upstream that resets mid-response gives the client a stream error, not a clean end', async (t) => {
  const up = await h2Upstream((stream, headers) => {
    stream.on('error', () => {}); // our own reset surfaces here too
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.write('partial-');
    const path = headers[':path'];
    // Node's close() right after a write sends the DATA, then RST_STREAM
    if (path === '/rst-stream') { stream.close(NGHTTP2_INTERNAL_ERROR); return; }
    // later, cut once the first bytes have gone out, so the client has a response in hand
    // (a later close() would send END_STREAM first: Node ends the writable side before the reset)
    stream.write('data', () => setImmediate(() => {
      if (path === '/destroy-session') stream.session?.destroy();
      else stream.destroy(new Error('upstream gives up'));
    }));
  });
  const s = await startSluice({
    workers: { threads: 1 }, // one worker: starts faster, and nothing here needs two
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const port = s.port('app');

  for (const path of ['/rst-stream', '/destroy-stream', '/destroy-session']) {
    const r = await h2request(port, { ':path': path });
    t.equal(r.status, 200, `${path}: the response had started`);
    t.equal(r.ended, false, `${path}: no clean end`);
    t.not(r.rstCode, 0, `${path}: the stream was reset (rst ${r.rstCode})`);
    t.ok(r.error, `${path}: the client sees a stream error`);
  }
  const c = await run('curl', ['-sS', '--http2-prior-knowledge', `http://127.0.0.1:${port}/rst-stream`]);
  t.not(c.code, 0, 'curl fails on the reset stream');
  t.match(c.stderr, /stream|INTERNAL_ERROR|RST/i);
  const st = await stats(s.admin);
  t.ok((st.get('sluice_upstream_rq_reset_total{cluster="web"}') ?? 0) >= 4, 'resets counted');
});

t.test('a client that gives up mid-upload: the upstream never sees a complete request', async (t) => {
  // what each upstream saw of a request: its body, and whether it ended cleanly or was aborted
  type Seen = { path: string; body: string; complete: boolean };
  const seen: Seen[] = [];
  const waiters: Array<() => void> = [];
  const record = (x: Seen) => { seen.push(x); for (const w of waiters.splice(0)) w(); };
  const gotFirstChunk: Array<() => void> = [];
  const h2up = await h2Upstream((stream, headers) => {
    let body = '';
    let complete = false;
    stream.on('error', () => {});
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => { body += d; gotFirstChunk.shift()?.(); });
    // END_STREAM is where a server acts on an upload; a reset after it comes too late
    stream.on('end', () => { complete = !stream.destroyed && !stream.aborted; });
    stream.on('close', () => record({ path: String(headers[':path']), body, complete }));
  });
  const h1up = await httpUpstream((req, res) => {
    let body = '';
    let complete = false;
    req.setEncoding('utf8');
    req.on('data', (d: string) => { body += d; gotFirstChunk.shift()?.(); });
    req.on('end', () => { complete = true; res.end('done'); });
    req.on('close', () => record({ path: String(req.url), body, complete }));
  });
  const s = await startSluice({
    workers: { threads: 1 }, // one worker: starts faster, and nothing here needs two
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    routes: [
      { match: { path: { prefix: '/h2' } }, action: { cluster: 'h2' } },
      { match: { path: { prefix: '/h1' } }, action: { cluster: 'h1' } },
    ],
    clusters: [
      { name: 'h2', endpoints: [`127.0.0.1:${h2up.port}`] },
      { name: 'h1', protocol: 'http1', endpoints: [`127.0.0.1:${h1up.port}`] },
    ],
  });
  t.teardown(async () => { await s.stop(); await h2up.close(); await h1up.close(); });

  for (const path of ['/h2/rst', '/h2/drop', '/h1/rst', '/h1/drop']) {
    const session = http2.connect(`http://127.0.0.1:${s.port('app')}`);
    session.on('error', () => {});
    const req = session.request({ ':method': 'POST', ':path': path }, { endStream: false });
    req.on('error', () => {});
    const first = new Promise<void>((r) => gotFirstChunk.push(r));
    req.write('part-one;');
    await first;
    const upstreamDone = new Promise<void>((r) => waiters.push(r));
    // a real reset: RST_STREAM with no END_STREAM before it, or the connection gone
    if (path.endsWith('/rst')) req.destroy(new Error('client gives up'));
    else session.destroy();
    await upstreamDone;
    const x = seen.find((e) => e.path === path);
    t.ok(x, `${path}: the upstream saw the request`);
    t.equal(x?.body, 'part-one;', `${path}: the bytes sent so far arrived`);
    t.equal(x?.complete, false, `${path}: and it was not taken for a complete upload`);
    session.destroy();
  }
});

t.test('local failure replies for plain h2: no route, refused, timeout', async (t) => {
  const silent = await h2Upstream(() => { /* never answers */ });
  const refused = await closedPort();
  const s = await startSluice({
    workers: { threads: 1 }, // one worker: starts faster, and nothing here needs two
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    routes: [
      { match: { path: { prefix: '/refused' } }, action: { cluster: 'dead' } },
      { match: { path: { prefix: '/slow' } }, action: { cluster: 'silent', timeoutMs: 300 } },
    ],
    clusters: [
      { name: 'dead', endpoints: [`127.0.0.1:${refused}`] },
      { name: 'silent', endpoints: [`127.0.0.1:${silent.port}`] },
    ],
  });
  t.teardown(async () => { await s.stop(); await silent.close(); });
  const port = s.port('app');

  const nr = await h2request(port, { ':path': '/nowhere' });
  t.equal(nr.status, 404);
  t.equal(nr.headers['x-sluice-reason'], 'no_route');
  t.ok(nr.ended);

  const rf = await h2request(port, { ':path': '/refused' });
  t.equal(rf.status, 503);
  t.equal(rf.headers['x-sluice-reason'], 'upstream_connect_failed');
  t.ok(rf.ended);

  const started = Date.now();
  const to = await h2request(port, { ':path': '/slow' });
  t.equal(to.status, 504);
  t.equal(to.headers['x-sluice-reason'], 'upstream_timeout');
  t.ok(Date.now() - started < 8000, 'answered by the route timeout, not the client timeout');

  const c = await run('curl', ['-sS', '--http2-prior-knowledge', '-D', '-', `http://127.0.0.1:${port}/refused/x`]);
  t.match(c.stdout, /^HTTP\/2 503 ?\r\n/);
  t.match(c.stdout, /\r\nx-sluice-reason: upstream_connect_failed\r\n/);

  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_rq_no_route_total{protocol="http2"}'), 1);
  t.equal(st.get('sluice_upstream_rq_timeout_total{cluster="silent"}'), 1);
  t.ok((st.get('sluice_upstream_cx_connect_fail_total{cluster="dead"}') ?? 0) >= 1);
  // the session to the silent upstream stays usable: the timed-out stream was cancelled, not the session
  await waitFor(async () => (await stats(s.admin)).get('sluice_upstream_rq_active{cluster="silent"}') === 0, 5000, 'upstream rq_active back to 0');
});

t.test('upstream sessions: retry past a dead endpoint, the peer stream limit, idle close', async (t) => {
  const held: http2.ServerHttp2Stream[] = [];
  let release: (() => void) | null = null;
  const sessions = new Set<http2.Http2Session>();
  // the upstream allows 2 streams per connection; /hold/* requests wait until 6 are in
  const up = await h2Upstream((stream, headers) => {
    sessions.add(stream.session!);
    const path = String(headers[':path']);
    const answer = (st: http2.ServerHttp2Stream) => { if (!st.destroyed) { st.respond({ ':status': 200 }); st.end(`ok ${path}`); } };
    if (!path.startsWith('/hold/')) { answer(stream); return; }
    held.push(stream);
    if (held.length === 6) { for (const st of held) answer(st); release?.(); }
  });
  (up.server as http2.Http2Server).updateSettings({ maxConcurrentStreams: 2 });
  const dead = await closedPort();
  const s = await startSluice({
    workers: { threads: 1 }, // one worker: starts faster, and nothing here needs two
    http: { upstreamIdleTimeoutMs: 300 },
    listeners: [
      { name: 'app', address: '127.0.0.1:0', cluster: 'live' },
      { name: 'mixed', address: '127.0.0.1:0', cluster: 'mixed' },
    ],
    clusters: [
      { name: 'live', endpoints: [`127.0.0.1:${up.port}`] },
      { name: 'mixed', endpoints: [`127.0.0.1:${dead}`, `127.0.0.1:${up.port}`] },
    ],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });

  // round robin sends every other request to the dead endpoint: each is retried on the live one
  for (let i = 0; i < 6; i++) {
    const r = await h2request(s.port('mixed'), { ':path': `/mixed/${i}` });
    t.equal(r.status, 200, `request ${i} answered by the live endpoint (${r.headers['x-sluice-reason'] ?? ''})`);
  }

  // one client connection: one worker. Warm its session (SETTINGS received), then 6 at once:
  // with 2 streams per upstream connection that needs 3 connections, or the held requests never complete
  const session = http2.connect(`http://127.0.0.1:${s.port('app')}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const one = (path: string) => new Promise<{ status: number; body: string }>((resolve) => {
    const req = session.request({ ':path': path });
    let body = '';
    let status = 0;
    req.setEncoding('utf8');
    req.on('response', (h) => { status = Number(h[':status']); });
    req.on('data', (d: string) => { body += d; });
    req.on('error', () => {});
    req.on('close', () => resolve({ status, body }));
  });
  t.equal((await one('/warm')).status, 200);
  const before = sessions.size;
  const released = new Promise<void>((r) => { release = r; });
  const results = await Promise.all(Array.from({ length: 6 }, (_, i) => one(`/hold/${i}`)));
  await released;
  t.same(results.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
  t.equal(results[5].body, 'ok /hold/5');
  t.ok(sessions.size - before >= 2, `more upstream connections opened at the peer's limit (${sessions.size - before} new)`);

  // idle sessions close after http.upstreamIdleTimeoutMs
  await waitFor(async () => {
    const m = await stats(s.admin);
    return m.get('sluice_upstream_cx_active{cluster="live"}') === 0 && m.get('sluice_upstream_cx_active{cluster="mixed"}') === 0;
  }, 10_000, 'idle upstream sessions closed');
  const st = await stats(s.admin);
  // pools are per endpoint, shared by both clusters here: a connection counts for the cluster that opened it
  const cx = (st.get('sluice_upstream_cx_total{cluster="live"}') ?? 0) + (st.get('sluice_upstream_cx_total{cluster="mixed"}') ?? 0);
  t.ok(cx >= 3, `upstream connections opened: ${cx}`);
  t.equal(st.get('sluice_upstream_cx_active{cluster="mixed"}'), 0);
  t.ok((st.get('sluice_upstream_cx_connect_fail_total{cluster="mixed"}') ?? 0) >= 1, 'the dead endpoint was tried');
  t.equal(st.get('sluice_downstream_rq_xx_total{protocol="http2",class="5xx"}'), 0, 'no request failed');
});

t.test('an idle client connection is closed after http.idleTimeoutMs; a slow stream keeps it open', async (t) => {
  const up = await h2Upstream((stream, headers) => {
    stream.on('error', () => {});
    const delay = headers[':path'] === '/slow' ? 900 : 0;
    setTimeout(() => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end('late but fine'); } }, delay);
  });
  const s = await startSluice({
    workers: { threads: 1 }, // one worker: starts faster, and nothing here needs two
    http: { idleTimeoutMs: 300 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const session = http2.connect(`http://127.0.0.1:${s.port('app')}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  let streamDone = false;
  let goawayDuringStream = false;
  const goaway = new Promise<void>((r) => session.once('goaway', () => { goawayDuringStream = !streamDone; r(); }));
  const closed = new Promise<void>((r) => session.once('close', () => r()));
  // a stream open three times the idle timeout: the connection is not idle meanwhile
  const req = session.request({ ':path': '/slow' });
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => { body += d; });
  const [h] = await once(req, 'response') as [http2.IncomingHttpHeaders];
  await once(req, 'end');
  streamDone = true;
  t.equal(h[':status'], 200);
  t.equal(body, 'late but fine');
  t.equal(goawayDuringStream, false, 'no GOAWAY while the stream was open');
  // then nothing: Sluice sends GOAWAY and the connection ends (the test's own timeout bounds this)
  await goaway;
  await closed;
  t.pass('idle connection closed by Sluice');
});

t.test('counters for h2 and gRPC-looking requests', async (t) => {
  const up = await h2Upstream((stream, headers) => {
    if (String(headers['content-type']).startsWith('application/grpc')) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end();
      return;
    }
    stream.respond({ ':status': headers[':path'] === '/missing' ? 404 : 200 });
    stream.end('ok');
  });
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const port = s.port('app');
  for (let i = 0; i < 3; i++) t.equal((await h2request(port, { ':path': `/ok/${i}` })).status, 200);
  t.equal((await h2request(port, { ':path': '/missing' })).status, 404);
  const g = await h2request(port, { ':method': 'POST', ':path': '/pkg.Svc/Call', 'content-type': 'application/grpc', te: 'trailers' }, [Buffer.from([0, 0, 0, 0, 0])]);
  t.equal(g.status, 200);
  t.equal(g.trailers?.['grpc-status'], '0');

  const st = await waitFor(async () => {
    const m = await stats(s.admin);
    return m.get('sluice_downstream_rq_active{protocol="http2"}') === 0 && m.get('sluice_downstream_rq_active{protocol="grpc"}') === 0 ? m : null;
  }, 5000, 'requests finished');
  t.equal(st.get('sluice_downstream_rq_total{protocol="http2"}'), 4);
  t.equal(st.get('sluice_downstream_rq_total{protocol="grpc"}'), 1);
  t.equal(st.get('sluice_downstream_rq_xx_total{protocol="http2",class="2xx"}'), 3);
  t.equal(st.get('sluice_downstream_rq_xx_total{protocol="http2",class="4xx"}'), 1);
  t.equal(st.get('sluice_downstream_rq_xx_total{protocol="grpc",class="2xx"}'), 1);
  t.equal(st.get('sluice_upstream_rq_total{cluster="web"}'), 5);
  t.equal(st.get('sluice_upstream_rq_xx_total{cluster="web",class="2xx"}'), 4);
  t.equal(st.get('sluice_upstream_rq_xx_total{cluster="web",class="4xx"}'), 1);
  t.ok((st.get('sluice_upstream_cx_total{cluster="web"}') ?? 0) <= 2, 'upstream sessions are shared, not one per request');
  t.equal(st.get('sluice_downstream_cx_protocol_total{listener="app",protocol="http2"}'), 5);
});

t.test('an upstream that answers before reading the upload: the client gets the response and is told to stop sending', async (t) => {
  // h1: answers at once and never reads the body; h2: answers, then resets the request side with NO_ERROR
  const h1 = await httpUpstream((req, res) => { res.end('early'); });
  const h2 = await h2Upstream((stream) => {
    stream.respond({ ':status': 200, 'content-length': '5' });
    stream.end('early');
  });
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'h1', address: '127.0.0.1:0', cluster: 'h1' }, { name: 'h2', address: '127.0.0.1:0', cluster: 'h2' }],
    clusters: [
      { name: 'h1', protocol: 'http1', endpoints: [`127.0.0.1:${h1.port}`] },
      { name: 'h2', protocol: 'http2', endpoints: [`127.0.0.1:${h2.port}`] },
    ],
    http: { requestTimeoutMs: 5000 },
  });
  t.teardown(async () => { await s.stop(); await h1.close(); await h2.close(); });
  // four times the 1 MiB stream window: without the stop, the upload would stall until the route timeout
  const body = Array.from({ length: 64 }, () => Buffer.alloc(64 * 1024, 0x61));
  for (const name of ['h1', 'h2']) {
    const t0 = Date.now();
    const r = await h2request(s.port(name), { ':method': 'POST', ':path': '/upload' }, body, 8000);
    t.equal(r.status, 200, `${name}: status`);
    t.equal(r.body, 'early', `${name}: body`);
    t.ok(r.ended, `${name}: the response ended cleanly (END_STREAM)`);
    t.equal(r.rstCode, 0, `${name}: no error code (RST_STREAM NO_ERROR at most)`);
    t.ok(Date.now() - t0 < 4000, `${name}: done long before the 5 s route timeout (${Date.now() - t0} ms)`);
  }
  const st = await stats(s.admin);
  t.equal(st.get('sluice_upstream_rq_timeout_total{cluster="h1"}') ?? 0, 0);
  t.equal(st.get('sluice_upstream_rq_timeout_total{cluster="h2"}') ?? 0, 0);
});

t.test('http.headerTimeoutMs: a header block (or a connection start) that never completes is closed', async (t) => {
  const up = await h2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', protocol: 'http2', endpoints: [`127.0.0.1:${up.port}`] }],
    http: { headerTimeoutMs: 300 },
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const port = s.port('app');
  // HEADERS without END_HEADERS, and no CONTINUATION ever
  const slow = await H2Client.connect(port);
  t.teardown(() => slow.destroy());
  await slow.handshake();
  slow.send(headersFrame(1, hpack(requestFields('GET', '/')), { endStream: true, endHeaders: false }));
  const end = await slow.ended(5000);
  t.ok(end.closed, 'connection closed');
  t.equal(end.goaway?.code, 0, 'GOAWAY NO_ERROR first');
  // the preface and nothing more: no SETTINGS
  const mute = await H2Client.connect(port);
  t.teardown(() => mute.destroy());
  mute.send(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'));
  t.ok((await mute.ended(5000)).closed, 'a connection that never sends SETTINGS is closed too');
  // a connection that finished its header blocks is not affected, however long it stays
  const ok = await H2Client.connect(port);
  t.teardown(() => ok.destroy());
  await ok.handshake();
  t.equal((await ok.get('/a')).status, 200);
  await new Promise((r) => setTimeout(r, 800));
  t.equal((await ok.get('/b')).status, 200, 'still served after several header timeouts');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_downstream_rq_timeout_total{protocol="http2"}'), 2);
  t.equal(st.get('sluice_downstream_protocol_error_total{protocol="http2"}') ?? 0, 0, 'a slow client is not a protocol error');
});
