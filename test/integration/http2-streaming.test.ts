/**
 * HTTP/2 bodies stream through Sluice under flow control: a 256 MiB upload to
 * an upstream that stops reading for a while, and a 256 MiB download to a
 * client that stops reading (curl, SIGSTOPped). Sluice gives a sender window
 * back only as the other side takes the data, so its memory must stay flat; a
 * proxy that kept crediting windows would buffer hundreds of MB.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { h2Upstream, run, startSluice, stats } from '../helpers/harness';
import { MB, pumpStalling, rssBytes, spawnClient, startChild, watchRss, type Stall } from '../helpers/streaming';

const SIZE = 256 << 20;
const STALL_AFTER = 32 << 20;
const STALL_MS = 1500;
const MAX_GROWTH = 120 << 20;

t.test('256 MiB h2 upload to an upstream that stalls: every byte arrives, memory stays flat', async (t) => {
  let stalls = 0;
  const up = await h2Upstream((stream, headers) => {
    if (headers[':path'] !== '/up') { stream.respond({ ':status': 200 }); stream.end('warm'); return; }
    let n = 0;
    let stalled = false;
    stream.on('data', (d: Buffer) => {
      n += d.length;
      if (!stalled && n >= STALL_AFTER) {
        stalled = true;
        stalls++;
        stream.pause();
        setTimeout(() => stream.resume(), STALL_MS);
      }
    });
    stream.on('end', () => { stream.respond({ ':status': 200 }); stream.end(String(n)); });
  });
  t.teardown(() => up.close());
  const sluice = await startChild(t, up.port, 'http2');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-h2-upload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'upload.bin');
  writeFileSync(file, '');
  truncateSync(file, SIZE);

  const base = rssBytes(sluice.pid);
  const rss = watchRss(sluice.pid);
  const t0 = Date.now();
  const r = await run('curl', ['-sS', '--fail', '--http2-prior-knowledge', '-T', file, `http://127.0.0.1:${sluice.port}/up`], 90_000);
  const ms = Date.now() - t0;
  const peak = rss.stop();
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, String(SIZE), 'the upstream counted every byte');
  t.equal(stalls, 1, 'the upstream did stall');
  t.comment(`h2 upload: ${ms} ms (${STALL_MS} ms of it stalled); Sluice RSS ${MB(base)} → peak ${MB(peak)}`);
  t.ok(peak - base < MAX_GROWTH, `RSS grew by ${MB(peak - base)} (limit ${MB(MAX_GROWTH)})`);
});

t.test('256 MiB h2 download to a client that stalls: every byte arrives, memory stays flat', async (t) => {
  const stall: Stall = { after: STALL_AFTER, ms: STALL_MS, client: null, done: false };
  const up = await h2Upstream((stream, headers) => {
    if (headers[':path'] !== '/down') { stream.respond({ ':status': 200 }); stream.end('warm'); return; }
    stream.respond({ ':status': 200, 'content-length': String(SIZE), 'content-type': 'application/octet-stream' });
    pumpStalling(stream, SIZE, stall);
  });
  t.teardown(() => up.close());
  const sluice = await startChild(t, up.port, 'http2');

  const base = rssBytes(sluice.pid);
  const rss = watchRss(sluice.pid);
  const t0 = Date.now();
  const c = spawnClient('curl', ['-sS', '--fail', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{size_download}',
    `http://127.0.0.1:${sluice.port}/down`], 90_000);
  stall.client = c;
  t.teardown(() => { try { process.kill(c.pid, 'SIGCONT'); } catch { /* gone */ } });
  const r = await c.done;
  const ms = Date.now() - t0;
  const peak = rss.stop();
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, String(SIZE), 'the client got every byte');
  t.ok(stall.done, 'the client did stall');
  t.comment(`h2 download: ${ms} ms (${STALL_MS} ms of it stalled); Sluice RSS ${MB(base)} → peak ${MB(peak)}`);
  t.ok(peak - base < MAX_GROWTH, `RSS grew by ${MB(peak - base)} (limit ${MB(MAX_GROWTH)})`);
});

t.test('clients that stop reading do not freeze other streams on the shared upstream connection', async (t) => {
  const big = Buffer.alloc(2 << 20, 1);
  // an upstream that lets Sluice's streams buffer (Node's default would refuse new streams first)
  const srv = http2.createServer({ maxSessionMemory: 1000 });
  srv.on('stream', (st, h) => { st.on('error', () => {}); st.respond({ ':status': 200 }); st.end(h[':path'] === '/small' ? 'small' : big); });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  const s = await startSluice({
    workers: { threads: 1 },
    http: { requestTimeoutMs: 8000 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', protocol: 'http2', endpoints: [`127.0.0.1:${port}`] }],
  });
  const url = `http://127.0.0.1:${s.port('app')}`;
  const clients: http2.ClientHttp2Session[] = [];
  t.teardown(async () => { for (const c of clients) c.destroy(); await s.stop(); srv.close(); });
  // 24 clients each hold 2 MiB responses they never read: 24 × 1 MiB stream windows of the one upstream connection
  const started: Promise<unknown>[] = [];
  for (let i = 0; i < 24; i++) {
    const c = http2.connect(url);
    c.on('error', () => {});
    clients.push(c);
    const r = c.request({ ':path': '/big' });
    r.on('error', () => {});
    started.push(once(r, 'response'));
  }
  await Promise.all(started);
  const c = http2.connect(url);
  clients.push(c);
  const r = c.request({ ':path': '/small' });
  // the stalled streams hold their windows until the 8 s route timeout; this must not wait for that
  const giveUp = setTimeout(() => r.close(http2.constants.NGHTTP2_CANCEL), 4000);
  let body = '';
  r.setEncoding('utf8');
  r.on('data', (d: string) => { body += d; });
  r.on('error', () => {});
  await once(r, 'close');
  clearTimeout(giveUp);
  t.equal(body, 'small', 'the other stream got its whole response');
  t.equal(r.rstCode, 0, 'without being cancelled');
  const st = await stats(s.admin);
  t.equal(st.get('sluice_upstream_cx_total{cluster="c"}'), 1, 'all on one shared upstream connection');
});
