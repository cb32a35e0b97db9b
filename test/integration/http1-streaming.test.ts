/**
 * Bodies stream through Sluice with backpressure: a 1 GiB upload and a 1 GiB download, with
 * Sluice in its own process (through the real CLI) so that its resident memory can be watched
 * from /proc while the bytes go through. Each side stalls for a while in the middle of the
 * transfer; a proxy that buffered instead of pausing its other side would grow by hundreds of MB.
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { httpUpstream, run } from '../helpers/harness';
import { MB, pumpStalling, rssBytes, spawnClient, startChild, watchRss, type Stall } from '../helpers/streaming';

const GiB = 1 << 30;
const STALL_AFTER = 64 << 20;
const STALL_MS = 1500;
const MAX_GROWTH = 150 << 20;

t.test('1 GiB upload (curl -T, Content-Length; then 512 MiB chunked) to an upstream that stalls: every byte arrives, memory stays flat', async (t) => {
  let stalls = 0;
  const up = await httpUpstream((req, res) => {
    if (req.url !== '/up') { res.end('warm'); return; }
    // counts the body; stops reading for a while partway through
    let n = 0;
    let stalled = false;
    req.on('data', (d: Buffer) => {
      n += d.length;
      if (!stalled && n >= STALL_AFTER) {
        stalled = true;
        stalls++;
        req.pause();
        setTimeout(() => req.resume(), STALL_MS);
      }
    });
    req.on('end', () => res.end(String(n)));
  });
  t.teardown(() => up.close());
  const sluice = await startChild(t, up.port);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-upload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'upload.bin');
  writeFileSync(file, '');
  truncateSync(file, GiB); // sparse: reading it costs no disk

  const base0 = rssBytes(sluice.pid);
  const rss = watchRss(sluice.pid);
  const t0 = Date.now();
  const r = await run('curl', ['-sS', '--fail', '-T', file, `http://127.0.0.1:${sluice.port}/up`], 60_000);
  const ms = Date.now() - t0;
  const peak = rss.stop();
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, String(GiB), 'the upstream counted every byte');
  t.equal(stalls, 1, 'the upstream did stall');
  t.comment(`upload: ${ms} ms (${STALL_MS} ms of it stalled); Sluice RSS ${MB(base0)} → peak ${MB(peak)}`);
  t.ok(peak - base0 < MAX_GROWTH, `RSS grew by ${MB(peak - base0)} (limit ${MB(MAX_GROWTH)})`);

  // the same from a pipe: curl sends it chunked, Sluice re-chunks it towards the upstream
  // (half the size, to keep the file's run time in bounds on a busy machine)
  const HALF = GiB / 2;
  const base1 = rssBytes(sluice.pid);
  const rss1 = watchRss(sluice.pid);
  const t1 = Date.now();
  const c = await run('sh', ['-c', `head -c ${HALF} /dev/zero | curl -sS --fail -T - http://127.0.0.1:${sluice.port}/up`], 60_000);
  const ms1 = Date.now() - t1;
  const peak1 = rss1.stop();
  t.equal(c.code, 0, c.stderr);
  t.equal(c.stdout, String(HALF), 'chunked: the upstream counted every byte');
  t.equal(stalls, 2, 'the upstream did stall');
  t.comment(`chunked upload: ${ms1} ms (${STALL_MS} ms of it stalled); Sluice RSS ${MB(base1)} → peak ${MB(peak1)}`);
  t.ok(peak1 - base1 < MAX_GROWTH, `chunked: RSS grew by ${MB(peak1 - base1)} (limit ${MB(MAX_GROWTH)})`);
});

t.test('1 GiB download to a client that stalls: every byte arrives, memory stays flat', async (t) => {
  // the client stops reading for a while (SIGSTOP to the curl this test started)
  const stall: Stall = { after: STALL_AFTER, ms: STALL_MS, client: null, done: false };
  const up = await httpUpstream((req, res) => {
    if (req.url !== '/down') { res.end('warm'); return; }
    res.writeHead(200, { 'content-length': String(GiB), 'content-type': 'application/octet-stream' });
    pumpStalling(res, GiB, stall);
  });
  t.teardown(() => up.close());
  const sluice = await startChild(t, up.port);

  const base0 = rssBytes(sluice.pid);
  const rss = watchRss(sluice.pid);
  const t0 = Date.now();
  const c = spawnClient('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download}', `http://127.0.0.1:${sluice.port}/down`], 60_000);
  stall.client = c;
  t.teardown(() => { try { process.kill(c.pid, 'SIGCONT'); } catch { /* gone */ } });
  const r = await c.done;
  const ms = Date.now() - t0;
  const peak = rss.stop();
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, String(GiB), 'the client got every byte');
  t.ok(stall.done, 'the client did stall');
  t.comment(`download: ${ms} ms (${STALL_MS} ms of it stalled); Sluice RSS ${MB(base0)} → peak ${MB(peak)}`);
  t.ok(peak - base0 < MAX_GROWTH, `RSS grew by ${MB(peak - base0)} (limit ${MB(MAX_GROWTH)})`);
});
