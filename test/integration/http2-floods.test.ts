/**
 * Downstream HTTP/2 against floods: frames a client can send in a loop without
 * asking for any real work (the "HTTP/2 DoS" family of 2019, CVE-2019-9511..9518,
 * and the CONTINUATION flood of 2024). Each case sends hand-made frames over a
 * raw socket to a running Sluice, bounded in count and time, and checks what the
 * client sees: GOAWAY ENHANCE_YOUR_CALM, then a close. Memory is measured only
 * loosely (this process holds Sluice's workers too). After every case a fresh
 * connection still gets 200, and the worker never dies.
 *
 * The bounds themselves are in src/protocols/http2/http2-connection.ts; the cases
 * stay well past them, so a change of a bound within reason does not break them.
 * Legitimate traffic near the bounds (a large header list in many CONTINUATION
 * frames) must keep working, and is checked here too.
 */
import http2 from 'node:http2';
import t, { type Test } from 'tap';
import {
  ErrorCode, H2Client, Setting, continuationFrame, dataFrame, describeResult, errorName, headersFrame, hpack,
  pingFrame, priorityFrame, requestFields, settingsAck, settingsFrame, windowUpdateFrame,
} from '../helpers/h2-frames';
import { h2Upstream, startSluice, stats, waitFor, type RunningSluice, type Upstream } from '../helpers/harness';

/** Every wait on Sluice is bounded by this. */
const WAIT = 8000;
/** No flood case writes for longer than this. */
const FLOOD_MS = 15_000;
const MiB = 1024 * 1024;
/** rss may grow this much during a flood: a wide bound, for this process holds the test, Sluice and its worker. */
const RSS_BOUND = 96 * MiB;

// ── upstream: records what it gets; answers 200 "ok", /big/<KiB> with that many KiB ──

interface Seen { path: string; tag: string; headers: http2.IncomingHttpHeaders; complete: boolean }
const seen: Seen[] = [];

function onUpstream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  const path = String(headers[':path']);
  const rec: Seen = { path, tag: String(headers['x-case'] ?? ''), headers, complete: false };
  seen.push(rec);
  stream.on('error', () => {});
  if (path.startsWith('/nobody/')) { stream.pause(); return; }
  stream.resume();
  stream.on('end', () => {
    rec.complete = true;
    if (stream.destroyed || stream.closed) return;
    const big = /^\/big\/(\d+)$/.exec(path);
    stream.respond({ ':status': 200 });
    if (!big) { stream.end('ok'); return; }
    const chunk = Buffer.alloc(64 * 1024, 0x62);
    let left = Number(big[1]) * 1024;
    const more = (): void => {
      while (left > 0 && !stream.destroyed) {
        left -= chunk.length;
        if (left <= 0) { stream.end(chunk); return; }
        if (!stream.write(chunk)) { stream.once('drain', more); return; }
      }
    };
    more();
  });
}

let up: Upstream;
let sluice: RunningSluice;
let port = 0;

t.before(async () => {
  up = await h2Upstream(onUpstream);
  sluice = await startSluice({
    workers: { threads: 1 }, // one worker: every connection of this file lands on it, so a crash shows
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'up' }],
    clusters: [{ name: 'up', protocol: 'http2', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  port = sluice.port('app');
});
t.teardown(async () => {
  await sluice?.stop();
  await up?.close();
});

// ── helpers ─────────────────────────────────────────────────────────────────

async function open(t: Test): Promise<H2Client> {
  const c = await H2Client.connect(port);
  t.teardown(() => c.destroy());
  await c.handshake(undefined, WAIT);
  return c;
}

const fields = (method: string, path: string, tag: string, extra: ReadonlyArray<readonly [string, string]> = []) =>
  requestFields(method, path, [['x-case', tag], ...extra]);

function nodeGet(path: string): Promise<{ status: number; error: string }> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    let status = 0;
    let error = '';
    const timer = setTimeout(() => { error = `no answer in ${WAIT} ms`; session.destroy(); }, WAIT);
    const req = session.request({ ':path': path }, { endStream: true });
    req.on('response', (h) => { status = Number(h[':status']); });
    req.on('data', () => {});
    req.on('error', (err) => { error = err.message; });
    req.on('close', () => { clearTimeout(timer); session.close(); resolve({ status, error }); });
  });
}

function h2case(name: string, fn: (t: Test) => Promise<void>): void {
  t.test(name, async (t) => {
    await fn(t);
    const r = await nodeGet('/fresh');
    t.equal(r.status, 200, `${name}: a new connection still gets 200${r.error ? ` (${r.error})` : ''}`);
  });
}

/** rss now, after a collection when the test runs with --expose-gc. */
function rss(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss;
}

interface FloodResult { frames: number; ms: number; grown: number }

/**
 * Writes `batch` (holding `perBatch` frames) again and again, each write waited for, until
 * Sluice answers with GOAWAY or closes, `maxFrames` are out, or FLOOD_MS pass.
 */
async function flood(c: H2Client, batch: Buffer, perBatch: number, maxFrames: number): Promise<FloodResult> {
  const rss0 = rss();
  const t0 = Date.now();
  let frames = 0;
  while (frames < maxFrames && !c.goaway && !c.closed && Date.now() - t0 < FLOOD_MS) {
    if (!await c.write(batch)) break;
    frames += perBatch;
  }
  return { frames, ms: Date.now() - t0, grown: rss() - rss0 };
}

/** One frame repeated `n` times. */
const times = (f: Buffer, n: number): Buffer => Buffer.concat(Array.from({ length: n }, () => f));

async function expectCalm(t: Test, c: H2Client, what: string, r: FloodResult): Promise<void> {
  const end = await c.ended(WAIT);
  t.comment(`${what}: ${r.frames} frames written in ${r.ms} ms; rss grew ${(r.grown / MiB).toFixed(1)} MiB`);
  t.equal(end.goaway ? errorName(end.goaway.code) : 'no GOAWAY', 'ENHANCE_YOUR_CALM',
    `${what}: GOAWAY ENHANCE_YOUR_CALM${end.goaway?.debug ? ` ("${end.goaway.debug}")` : ''} (frames: ${c.summary(4)})`);
  t.ok(end.closed, `${what}: the connection is closed`);
  t.ok(r.grown < RSS_BOUND, `${what}: memory stays bounded (rss grew ${(r.grown / MiB).toFixed(1)} MiB)`);
}

// ── header blocks ───────────────────────────────────────────────────────────

h2case('empty CONTINUATION frames: GOAWAY ENHANCE_YOUR_CALM long before memory grows', async (t) => {
  const c = await open(t);
  const id = c.newStreamId();
  c.send(headersFrame(id, hpack(fields('GET', '/flood/empty-continuation', 'empty-continuation')), { endStream: true, endHeaders: false }));
  const r = await flood(c, times(continuationFrame(id, Buffer.alloc(0), false), 10_000), 10_000, 2_000_000);
  await expectCalm(t, c, 'empty CONTINUATION flood', r);
  t.notOk(seen.some((s) => s.tag === 'empty-continuation'), 'nothing reached the upstream');
});

h2case('one-octet CONTINUATION frames: a header block in more pieces than any sender needs ends the connection', async (t) => {
  const c = await open(t);
  const id = c.newStreamId();
  // a real header block, cut into one-octet pieces: 2000 frames, far under the header list limit in octets
  const block = hpack(fields('GET', '/flood/tiny-continuation', 'tiny-continuation', [['x-pad', 'p'.repeat(2000)]]));
  const out = [headersFrame(id, block.subarray(0, 1), { endStream: true, endHeaders: false })];
  for (let i = 1; i < block.length; i++) out.push(continuationFrame(id, block.subarray(i, i + 1), i === block.length - 1));
  const r = await flood(c, Buffer.concat(out), out.length, out.length);
  await expectCalm(t, c, `${out.length} one-octet CONTINUATION frames`, r);
  t.notOk(seen.some((s) => s.tag === 'tiny-continuation'), 'nothing reached the upstream');
});

h2case('a 60 KiB header list in hundreds of CONTINUATION frames, written in pieces, still gets through', async (t) => {
  const c = await open(t);
  const limit = c.setting(Setting.MAX_HEADER_LIST_SIZE, 65536);
  t.ok(limit >= 62 * 1024, `SETTINGS_MAX_HEADER_LIST_SIZE is ${limit}`);
  const extra: Array<[string, string]> = [];
  for (let i = 0; i < 60; i++) extra.push([`x-big-${String(i).padStart(2, '0')}`, String(i % 10).repeat(990)]);
  const list = fields('GET', '/large-headers', 'large-headers', extra);
  const size = list.reduce((n, [k, v]) => n + k.length + v.length + 32, 0);
  t.ok(size > 60 * 1024 && size <= limit, `the header list is ${size} octets (RFC 9113 size), over 60 KiB and within the limit`);
  const block = hpack(list);
  const piece = 128;
  const id = c.newStreamId();
  const out = [headersFrame(id, block.subarray(0, piece), { endStream: true, endHeaders: false })];
  for (let off = piece; off < block.length; off += piece) out.push(continuationFrame(id, block.subarray(off, off + piece), off + piece >= block.length));
  t.ok(out.length > 400, `${out.length} frames for one header block`);
  for (let i = 0; i < out.length; i += 64) {
    if (!await c.write(Buffer.concat(out.slice(i, i + 64)))) break;
  }
  const r = await c.result(id, WAIT);
  t.ok(r.status === 200 && r.body === 'ok' && r.endStream && !c.goaway, `200 "ok" (got ${describeResult(r)}; frames: ${c.summary(4)})`);
  const got = seen.find((s) => s.tag === 'large-headers');
  t.ok(got && extra.every(([k, v]) => got.headers[k] === v), 'the upstream got all 60 large fields intact');
  // the same block again at full frame size, on the same connection: nothing was used up
  const id2 = c.newStreamId();
  const max = c.setting(Setting.MAX_FRAME_SIZE, 16384);
  const again = hpack(fields('GET', '/large-headers-2', 'large-headers-2', extra));
  const out2 = [headersFrame(id2, again.subarray(0, max), { endStream: true, endHeaders: false })];
  for (let off = max; off < again.length; off += max) out2.push(continuationFrame(id2, again.subarray(off, off + max), off + max >= again.length));
  c.send(...out2);
  const r2 = await c.result(id2, WAIT);
  t.equal(r2.status, 200, `the same list in ${out2.length} full frames: 200 (${describeResult(r2)})`);
});

// ── frames that carry nothing ───────────────────────────────────────────────

h2case('empty DATA frames without END_STREAM on an open stream: GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const c = await open(t);
  const id = c.newStreamId();
  c.send(headersFrame(id, hpack(fields('POST', '/nobody/empty-data', 'empty-data'))));
  const r = await flood(c, times(dataFrame(id, Buffer.alloc(0)), 10_000), 10_000, 2_000_000);
  await expectCalm(t, c, 'empty DATA flood', r);
  t.notOk(seen.some((s) => s.tag === 'empty-data' && s.complete), 'the upstream never got a complete request');
});

h2case('DATA frames of padding only: as empty as empty DATA', async (t) => {
  const c = await open(t);
  const id = c.newStreamId();
  c.send(headersFrame(id, hpack(fields('POST', '/nobody/padding-data', 'padding-data'))));
  const r = await flood(c, times(dataFrame(id, Buffer.alloc(0), { padLength: 16 }), 10_000), 10_000, 2_000_000);
  await expectCalm(t, c, 'padding-only DATA flood', r);
});

h2case('empty HEADERS frames, each a new malformed stream: reset at first, then GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const c = await open(t);
  const N = 5000;
  const out: Buffer[] = [];
  for (let i = 0; i < N; i++) out.push(headersFrame(c.newStreamId(), Buffer.alloc(0), { endStream: true }));
  const r = await flood(c, Buffer.concat(out), N, N);
  await expectCalm(t, c, `${N} empty HEADERS`, r);
  const resets = [...c.streams.values()].filter((s) => s.rst === ErrorCode.PROTOCOL_ERROR).length;
  t.ok(resets > 0 && resets < N, `the first ones were reset one by one (RST_STREAM PROTOCOL_ERROR on ${resets}), not all ${N}`);
});

// ── control frames that ask for nothing ─────────────────────────────────────

/** `frames`: what one round of the flood sends (after any set-up it does itself). */
interface ControlFlood { name: string; frames: (c: H2Client) => Promise<Buffer[]> | Buffer[] }

const controlFloods: ControlFlood[] = [
  { name: 'WINDOW_UPDATE of 1 on the connection, over and over', frames: () => [windowUpdateFrame(0, 1)] },
  {
    name: 'WINDOW_UPDATE of 1 on an open stream that has nothing to send',
    frames: (c) => {
      const id = c.newStreamId();
      c.send(headersFrame(id, hpack(fields('POST', '/nobody/wu-stream', 'wu-stream'))));
      return [windowUpdateFrame(id, 1)];
    },
  },
  {
    name: 'WINDOW_UPDATE of 0 on a closed stream (ignored, by the RFC)',
    frames: async (c) => {
      const r = await c.get('/wu-closed', [['x-case', 'wu-closed']], WAIT);
      if (r.status !== 200) throw new Error(`GET before the flood: ${describeResult(r)}`);
      return [windowUpdateFrame(1, 0)];
    },
  },
  { name: 'PRIORITY frames', frames: () => [priorityFrame(3, { dependsOn: 0, weight: 16 })] },
  { name: 'SETTINGS frames, acknowledged and read', frames: () => [settingsFrame([[Setting.ENABLE_PUSH, 0]])] },
  { name: 'SETTINGS ACK frames for SETTINGS never sent', frames: () => [settingsAck()] },
  {
    name: 'SETTINGS that move INITIAL_WINDOW_SIZE back and forth while 50 streams are open',
    frames: (c) => {
      for (let i = 0; i < 50; i++) c.send(headersFrame(c.newStreamId(), hpack(fields('POST', `/nobody/settings-${i}`, 'settings-window'))));
      return [settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 65536]]), settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 65535]])];
    },
  },
];

for (const cf of controlFloods) {
  h2case(`flood: ${cf.name}`, async (t) => {
    const c = await open(t);
    const round = await cf.frames(c);
    // one write of 5000 rounds: far past the bound, and too little to fill the socket buffers,
    // so only a bound on the frames themselves can end the connection
    const rounds = 5000;
    const r = await flood(c, times(Buffer.concat(round), rounds), rounds * round.length, rounds * round.length);
    await expectCalm(t, c, cf.name, r);
  });
}

h2case('one SETTINGS frame with 1000 entries: GOAWAY ENHANCE_YOUR_CALM, not 1000 updates', async (t) => {
  const c = await open(t);
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < 1000; i++) pairs.push([Setting.INITIAL_WINDOW_SIZE, 65535 + (i & 1)]);
  c.send(settingsFrame(pairs));
  await expectCalm(t, c, 'SETTINGS with 1000 entries', { frames: 1, ms: 0, grown: 0 });
});

// ── replies the client does not read ────────────────────────────────────────

/**
 * Floods with the client's socket paused (it reads nothing), until Sluice counts a
 * connection-level protocol error, then reads again: what was queued, then GOAWAY.
 */
async function floodUnread(t: Test, c: H2Client, batch: Buffer, perBatch: number, maxFrames: number): Promise<FloodResult> {
  const key = 'sluice_downstream_protocol_error_total{protocol="http2"}';
  const before = (await stats(sluice.admin)).get(key) ?? 0;
  c.socket.pause();
  const rss0 = rss();
  const t0 = Date.now();
  let frames = 0;
  let counted = false;
  while (frames < maxFrames && Date.now() - t0 < FLOOD_MS) {
    if (!await c.write(batch, 2000)) break;
    frames += perBatch;
    // Sluice ends the socket a second after its GOAWAY: read again soon after it counted the flood
    if (((await stats(sluice.admin)).get(key) ?? 0) > before) { counted = true; break; }
  }
  if (!counted) {
    await waitFor(async () => ((await stats(sluice.admin)).get(key) ?? 0) > before, WAIT, 'Sluice to count the flood').catch(() => {});
  }
  const grown = rss() - rss0;
  c.socket.resume();
  t.comment(`read again after ${frames} frames`);
  return { frames, ms: Date.now() - t0, grown };
}

h2case('PING frames whose ACKs are never read: GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const c = await open(t);
  const r = await floodUnread(t, c, times(pingFrame(Buffer.alloc(8)), 10_000), 10_000, 3_000_000);
  await expectCalm(t, c, 'unread PING ACKs', r);
});

h2case('DATA on closed streams whose RST_STREAM replies are never read: GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const c = await open(t);
  // stream 2001 is the highest opened: 1..1999 count as closed, and DATA on them gets RST_STREAM(STREAM_CLOSED)
  const r0 = await c.result(c.request(fields('GET', '/rst-replies', 'rst-replies')), WAIT);
  t.equal(r0.status, 200, 'stream 1');
  c.send(headersFrame(2001, hpack(fields('GET', '/rst-replies-2', 'rst-replies')), { endStream: true }));
  const r1 = await c.result(2001, WAIT);
  t.equal(r1.status, 200, 'stream 2001');
  const out: Buffer[] = [];
  for (let id = 3; id < 2001; id += 2) out.push(dataFrame(id, 'x', { endStream: true }));
  const r = await floodUnread(t, c, Buffer.concat(out), out.length, 3_000_000);
  await expectCalm(t, c, 'unread RST_STREAM replies', r);
});

h2case('requests whose responses are never read, windows wide open (CVE-2019-9517): GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const c = await H2Client.connect(port);
  t.teardown(() => c.destroy());
  await c.handshake([[Setting.ENABLE_PUSH, 0], [Setting.INITIAL_WINDOW_SIZE, 2 ** 31 - 1]], WAIT);
  c.send(windowUpdateFrame(0, 2 ** 31 - 1 - 65535));
  const key = 'sluice_downstream_protocol_error_total{protocol="http2"}';
  const before = (await stats(sluice.admin)).get(key) ?? 0;
  const counted = async (): Promise<boolean> => ((await stats(sluice.admin)).get(key) ?? 0) > before;
  c.socket.pause();
  const rss0 = rss();
  const t0 = Date.now();
  // a response far larger than the socket buffers fills them; Sluice holds the rest back
  c.request(fields('GET', '/big/65536', 'unread-big'));
  const N = 20_000;
  let sent = 0;
  while (sent < N && Date.now() - t0 < FLOOD_MS) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 500; i++) batch.push(headersFrame(c.newStreamId(), hpack(fields('GET', '/unread', 'unread')), { endStream: true }));
    if (!await c.write(Buffer.concat(batch), 2000)) break;
    sent += batch.length;
    // every request is a round trip to the upstream: let the batch land before the next
    await waitFor(async () => seen.filter((s) => s.tag === 'unread').length >= sent || await counted(), WAIT, 'the batch to reach the upstream')
      .catch(() => {});
    if (await counted()) break;
  }
  await waitFor(counted, WAIT, 'Sluice to count the flood').catch(() => {});
  const grown = rss() - rss0;
  c.socket.resume();
  const forwarded = seen.filter((s) => s.tag === 'unread').length;
  await expectCalm(t, c, 'unread responses', { frames: sent, ms: Date.now() - t0, grown });
  t.ok(forwarded < N, `Sluice stopped taking requests: ${forwarded} of ${sent} reached the upstream`);
});

// ── the end ─────────────────────────────────────────────────────────────────

t.test('after every flood: Sluice still serves, and its worker never died', async (t) => {
  const r = await nodeGet('/the-end');
  t.equal(r.status, 200, 'a new connection gets 200');
  const st = await stats(sluice.admin);
  t.equal(st.get('sluice_worker_restarts_total'), 0, 'no worker restarts');
  t.ok((st.get('sluice_downstream_protocol_error_total{protocol="http2"}') ?? 0) > 0, 'the floods were counted as protocol errors');
});
