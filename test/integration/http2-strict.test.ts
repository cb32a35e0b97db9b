/**
 * Downstream HTTP/2 (h2c prior knowledge) held to RFC 9113 (and RFC 7541 for
 * HPACK): hand-made frames over a raw TCP socket to a running Sluice, and the
 * exact answer checked. Connection errors must bring GOAWAY with the RFC's
 * error code and then a close; stream errors RST_STREAM with the code on that
 * stream, and the connection must go on serving. After every case a fresh
 * connection still gets 200 (the worker survived).
 *
 * Where the RFC leaves a choice, both outcomes pass:
 *   - 3.4: after an invalid preface the GOAWAY may be omitted;
 *   - 4.2: an oversized DATA frame may be a stream or a connection error;
 *   - 5.1.2: a stream over the concurrency limit gets PROTOCOL_ERROR or REFUSED_STREAM;
 *   - 6.9: a flow-control violation may be a stream or a connection error;
 *   - 8.1.1: a malformed request gets RST_STREAM PROTOCOL_ERROR, or a 4xx response.
 * RFC 9113 5.4.1 also lets an endpoint treat any stream error as a connection
 * error. A proxy should not: one bad request would take every other request on
 * the connection down with it. STREAM_ERRORS_MAY_ESCALATE turns that allowance on.
 */
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import t, { type Test } from 'tap';
import {
  ErrorCode, Flag, FrameType, H2Client, Setting, continuationFrame, dataFrame, describeResult, errorName, frame,
  goawayFrame, headersFrame, hpack, hpackIndexed, hpackInt, hpackLiteral, pingFrame, priorityFrame, requestFields,
  rstStreamFrame, settingsFrame, windowUpdateFrame, type Field, type StreamResult,
} from '../helpers/h2-frames';
import { h2Upstream, startSluice, stats, waitFor, type RunningSluice, type Upstream } from '../helpers/harness';

const STREAM_ERRORS_MAY_ESCALATE = false;
/** Every wait on Sluice is bounded by this. */
const WAIT = 8000;
const MAX_WINDOW = 2 ** 31 - 1;

// ── upstream: answers 200 "ok" once the request has fully arrived ───────────
// /hold/*    held until released (or the end of the case)
// /nobody/*  held, and its body never read (so no flow-control credit comes back)

interface Seen { path: string; tag: string; headers: http2.IncomingHttpHeaders; body: string; complete: boolean; closed: boolean }
const seen: Seen[] = [];
const held = new Map<string, http2.ServerHttp2Stream>();

function answer(stream: http2.ServerHttp2Stream): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end('ok');
}

/** Answers every held upstream stream whose path starts with `prefix`. */
function release(prefix = ''): void {
  for (const [path, stream] of held) {
    if (!path.startsWith(prefix)) continue;
    held.delete(path);
    answer(stream);
  }
}

function onUpstream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  const path = String(headers[':path']);
  const rec: Seen = { path, tag: String(headers['x-case'] ?? ''), headers, body: '', complete: false, closed: false };
  seen.push(rec);
  stream.on('error', () => {});
  stream.on('close', () => { rec.closed = true; });
  if (path.startsWith('/nobody/')) { stream.pause(); held.set(path, stream); return; }
  stream.setEncoding('latin1');
  stream.on('data', (d: string) => { rec.body += d; });
  stream.on('end', () => {
    rec.complete = !stream.destroyed && !stream.aborted;
    if (path.startsWith('/hold/')) held.set(path, stream);
    else answer(stream);
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
  release();
  await sluice?.stop();
  await up?.close();
});

// ── helpers ─────────────────────────────────────────────────────────────────

async function open(t: Test, handshake = true): Promise<H2Client> {
  const c = await H2Client.connect(port);
  t.teardown(() => c.destroy());
  if (handshake) await c.handshake(undefined, WAIT);
  return c;
}

/** One request with Node's own client on a new connection. */
function nodeGet(path: string): Promise<{ status: number; body: string; error: string }> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    let status = 0;
    let body = '';
    let error = '';
    const timer = setTimeout(() => { error = `no answer in ${WAIT} ms`; session.destroy(); }, WAIT);
    const req = session.request({ ':path': path }, { endStream: true });
    req.setEncoding('utf8');
    req.on('response', (h) => { status = Number(h[':status']); });
    req.on('data', (d: string) => { body += d; });
    req.on('error', (err) => { error = err.message; });
    req.on('close', () => { clearTimeout(timer); session.close(); resolve({ status, body, error }); });
  });
}

async function stillServes(t: Test, what: string): Promise<void> {
  const r = await nodeGet('/fresh');
  t.equal(r.status, 200, `${what}: a new connection still gets 200${r.error ? ` (${r.error})` : ''}`);
}

/** A case: its own connection(s); held upstream streams released after; a fresh connection checked last. */
function h2case(name: string, fn: (t: Test) => Promise<void>): void {
  t.test(name, async (t) => {
    t.teardown(() => release());
    await fn(t);
    await stillServes(t, name);
  });
}

async function expectConnectionError(t: Test, c: H2Client, code: number, what: string, opts: { goawayOptional?: boolean } = {}): Promise<void> {
  const end = await c.ended(WAIT);
  if (end.goaway) {
    t.equal(errorName(end.goaway.code), errorName(code), `${what}: GOAWAY ${errorName(code)}${end.goaway.debug ? ` ("${end.goaway.debug}")` : ''}`);
  } else if (opts.goawayOptional && end.closed) {
    t.pass(`${what}: connection closed without GOAWAY (allowed here)`);
  } else {
    t.fail(`${what}: expected GOAWAY ${errorName(code)}, got ${end.closed ? 'a close without GOAWAY' : 'no GOAWAY'}; frames: ${c.summary()}`);
  }
  t.ok(end.closed, `${what}: the connection is closed${end.closed ? '' : ` (still open after ${WAIT} ms)`}`);
}

/** The next request on the same connection gets 200: the connection outlived the stream error. */
async function expectUsable(t: Test, c: H2Client, what: string): Promise<void> {
  const r = await c.get('/after', [['x-case', 'after']], WAIT);
  t.ok(r.status === 200 && r.endStream && r.rst === null && r.body === 'ok' && !c.goaway,
    `${what}: the next request on the same connection gets 200 "ok" (got ${describeResult(r)})`);
}

/**
 * A stream error with one of `codes` on stream `id`, then the connection still works.
 * `connectionErrorOk`: the RFC allows a connection error with the same code here.
 */
async function expectStreamError(t: Test, c: H2Client, id: number, codes: number[], what: string,
  opts: { connectionErrorOk?: boolean } = {}): Promise<void> {
  const r = await c.result(id, WAIT);
  const names = codes.map(errorName).join(' or ');
  if (r.rst !== null) {
    t.ok(codes.includes(r.rst), `${what}: RST_STREAM ${names} on stream ${id} (got ${errorName(r.rst)})`);
    await expectUsable(t, c, what);
    return;
  }
  if (r.goaway && (opts.connectionErrorOk || STREAM_ERRORS_MAY_ESCALATE)) {
    t.ok(codes.includes(r.goaway.code), `${what}: a connection error, GOAWAY ${names} (got ${errorName(r.goaway.code)})`);
    const end = await c.ended(WAIT);
    t.ok(end.closed, `${what}: the connection is closed after the GOAWAY`);
    return;
  }
  t.fail(`${what}: expected RST_STREAM ${names} on stream ${id}, got ${describeResult(r)}; frames: ${c.summary()}`);
}

function rejectedAsMalformed(r: StreamResult): boolean {
  if (r.status !== null) return r.status >= 400 && r.status < 500;
  if (r.rst === ErrorCode.PROTOCOL_ERROR) return true;
  return STREAM_ERRORS_MAY_ESCALATE && r.goaway?.code === ErrorCode.PROTOCOL_ERROR;
}

const fields = (method: string, path: string, tag: string, extra: ReadonlyArray<readonly [string, string]> = []) =>
  requestFields(method, path, [['x-case', tag], ...extra]);

/** Opens a stream whose request has fully arrived while the upstream holds the response. */
function openHeld(c: H2Client, tag: string): number {
  const id = c.newStreamId();
  c.send(headersFrame(id, hpack(fields('GET', `/hold/${tag}`, tag)), { endStream: true }));
  return id;
}

// ── the valid path ──────────────────────────────────────────────────────────

h2case('a valid exchange: SETTINGS both ways, GET, PING, padding, priority, CONTINUATION, Huffman, dynamic table', async (t) => {
  const c = await open(t);
  t.equal(c.frames[0]?.type, FrameType.SETTINGS, 'the server\'s preface is a SETTINGS frame (3.4)');
  await c.until(() => c.settingsAcks > 0, WAIT, 'SETTINGS ACK').catch(() => {});
  t.ok(c.settingsAcks > 0, 'our SETTINGS is acknowledged (6.5.3)');

  // static-table entries: :method GET, :scheme http, :path /
  const id1 = c.newStreamId();
  c.send(headersFrame(id1, Buffer.concat([hpackIndexed(2), hpackIndexed(6), hpackIndexed(4),
    hpackLiteral(':authority', 'sluice.test'), hpackLiteral('x-case', 'valid-indexed')]), { endStream: true }));
  const r1 = await c.result(id1, WAIT);
  t.equal(r1.status, 200, `GET / (indexed fields): 200 (${describeResult(r1)})`);
  t.equal(r1.body, 'ok');
  t.ok(r1.endStream && r1.rst === null, 'the response ends with END_STREAM');
  t.equal(seen.find((s) => s.tag === 'valid-indexed')?.path, '/', 'the upstream got GET /');

  const opaque = randomBytes(8);
  c.send(pingFrame(opaque));
  const ack = await c.frame((f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0, 'PING ACK', WAIT).catch(() => null);
  t.ok(ack, 'PING is answered with a PING ACK (6.7)');
  t.same(ack?.payload, opaque, 'the PING ACK carries the same 8 octets');
  t.equal(ack?.streamId, 0);

  // padded HEADERS with the PRIORITY flag, body in padded DATA frames
  const id2 = c.newStreamId();
  c.send(
    headersFrame(id2, hpack(fields('POST', '/valid/post', 'valid-post', [['content-length', '11']])), { padLength: 7, priority: { dependsOn: 0, weight: 200 } }),
    dataFrame(id2, 'hello ', { padLength: 3 }),
    dataFrame(id2, 'world', { endStream: true, padLength: 0 }),
  );
  const r2 = await c.result(id2, WAIT);
  t.equal(r2.status, 200, `POST with padding and priority: 200 (${describeResult(r2)})`);
  const post = seen.find((s) => s.tag === 'valid-post');
  t.equal(post?.body, 'hello world', 'the upstream got the body without the padding');
  t.equal(post?.complete, true, 'and a complete request');

  // one field block over HEADERS and two CONTINUATION frames
  const block = hpack(fields('GET', '/valid/split', 'valid-split', [['x-long', 'b'.repeat(100)]]));
  const id3 = c.newStreamId();
  c.send(
    headersFrame(id3, block.subarray(0, 10), { endStream: true, endHeaders: false }),
    continuationFrame(id3, block.subarray(10, 30), false),
    continuationFrame(id3, block.subarray(30), true),
  );
  const r3 = await c.result(id3, WAIT);
  t.equal(r3.status, 200, `HEADERS + CONTINUATION: 200 (${describeResult(r3)})`);
  t.equal(seen.find((s) => s.tag === 'valid-split')?.headers['x-long'], 'b'.repeat(100), 'the split field arrived whole');

  // Huffman-coded literals, one of them added to the dynamic table, then referenced by index
  const id4 = c.newStreamId();
  c.send(headersFrame(id4, Buffer.concat([
    hpack(fields('GET', '/valid/huffman', 'valid-huffman', [['te', 'trailers']]), { huffman: true }),
    hpackLiteral('x-dyn', 'from-the-table', { indexing: 'incremental', huffman: true }),
  ]), { endStream: true }));
  const r4 = await c.result(id4, WAIT);
  t.equal(r4.status, 200, `Huffman literals and te: trailers: 200 (${describeResult(r4)})`);
  t.equal(seen.find((s) => s.tag === 'valid-huffman')?.headers['x-dyn'], 'from-the-table');
  const id5 = c.newStreamId();
  c.send(headersFrame(id5, Buffer.concat([hpack(fields('GET', '/valid/indexed', 'valid-dynamic')), hpackIndexed(62)]), { endStream: true }));
  const r5 = await c.result(id5, WAIT);
  t.equal(r5.status, 200, `a field from the dynamic table: 200 (${describeResult(r5)})`);
  t.equal(seen.find((s) => s.tag === 'valid-dynamic')?.headers['x-dyn'], 'from-the-table', 'dynamic table index 62 resolved');

  t.equal(c.hpackError, null, 'every response field block decodes');
  t.equal(c.goaway, null, 'no GOAWAY');
});

// ── preface ─────────────────────────────────────────────────────────────────

h2case('an invalid connection preface closes the connection (3.4)', async (t) => {
  const c = await open(t, false);
  c.send(Buffer.from('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n', 'latin1'), settingsFrame());
  const end = await c.ended(WAIT);
  t.ok(end.closed, `the connection is closed (received ${JSON.stringify(c.raw.subarray(0, 60).toString('latin1'))})`);
  if (end.goaway) t.equal(errorName(end.goaway.code), 'PROTOCOL_ERROR', 'a GOAWAY, if sent, says PROTOCOL_ERROR');
});

h2case('a first frame other than SETTINGS is a connection error PROTOCOL_ERROR (3.4)', async (t) => {
  const c = await open(t, false);
  c.send(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), pingFrame(Buffer.alloc(8)));
  await expectConnectionError(t, c, ErrorCode.PROTOCOL_ERROR, 'PING before SETTINGS', { goawayOptional: true });
});

// ── connection errors, one connection each ─────────────────────────────────

interface ConnCase { name: string; code: number; send: (c: H2Client) => Buffer[] | Promise<Buffer[]> }

const connCases: ConnCase[] = [
  {
    name: 'HEADERS larger than SETTINGS_MAX_FRAME_SIZE (4.2)', code: ErrorCode.FRAME_SIZE_ERROR,
    send: (c) => {
      const max = c.setting(Setting.MAX_FRAME_SIZE, 16384);
      const block = hpack(fields('GET', '/too-big', 'too-big', [['x-big', 'a'.repeat(max)]]));
      return [headersFrame(c.newStreamId(), block, { endStream: true })];
    },
  },
  { name: 'SETTINGS with a length not a multiple of 6 (6.5)', code: ErrorCode.FRAME_SIZE_ERROR, send: () => [frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5))] },
  { name: 'SETTINGS on stream 1 (6.5)', code: ErrorCode.PROTOCOL_ERROR, send: () => [settingsFrame([[Setting.ENABLE_PUSH, 0]], { streamId: 1 })] },
  { name: 'SETTINGS ACK with a payload (6.5)', code: ErrorCode.FRAME_SIZE_ERROR, send: () => [frame(FrameType.SETTINGS, Flag.ACK, 0, Buffer.alloc(6))] },
  { name: 'SETTINGS_ENABLE_PUSH = 2 (6.5.2)', code: ErrorCode.PROTOCOL_ERROR, send: () => [settingsFrame([[Setting.ENABLE_PUSH, 2]])] },
  { name: 'SETTINGS_INITIAL_WINDOW_SIZE = 2^31 (6.5.2)', code: ErrorCode.FLOW_CONTROL_ERROR, send: () => [settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 2 ** 31]])] },
  { name: 'SETTINGS_MAX_FRAME_SIZE = 100 (6.5.2)', code: ErrorCode.PROTOCOL_ERROR, send: () => [settingsFrame([[Setting.MAX_FRAME_SIZE, 100]])] },
  { name: 'SETTINGS_MAX_FRAME_SIZE = 2^24 (6.5.2)', code: ErrorCode.PROTOCOL_ERROR, send: () => [settingsFrame([[Setting.MAX_FRAME_SIZE, 2 ** 24]])] },
  {
    name: 'SETTINGS_INITIAL_WINDOW_SIZE that takes an open stream\'s window past 2^31-1 (6.9.2)', code: ErrorCode.FLOW_CONTROL_ERROR,
    send: (c) => {
      // the server's send window for our stream starts at our initial window, 65535 (we never changed it),
      // and nothing has been sent on it yet: the upstream holds the response
      const id = openHeld(c, 'window-settings');
      return [windowUpdateFrame(id, MAX_WINDOW - 65535), settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 65536]])];
    },
  },
  {
    name: 'one SETTINGS frame whose INITIAL_WINDOW_SIZE entries pass through a value that overflows a window, then come back (6.5.3, 6.9.2)',
    code: ErrorCode.FLOW_CONTROL_ERROR,
    send: (c) => {
      // the entries are processed in order (6.5.3): the second one overflows, whatever the third says
      const id = openHeld(c, 'window-settings-through');
      return [windowUpdateFrame(id, MAX_WINDOW - 65535), settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 65535], [Setting.INITIAL_WINDOW_SIZE, 65536], [Setting.INITIAL_WINDOW_SIZE, 65535]])];
    },
  },
  { name: 'PING with length 7 (6.7)', code: ErrorCode.FRAME_SIZE_ERROR, send: () => [frame(FrameType.PING, 0, 0, Buffer.alloc(7))] },
  { name: 'PING on stream 1 (6.7)', code: ErrorCode.PROTOCOL_ERROR, send: () => [frame(FrameType.PING, 0, 1, Buffer.alloc(8))] },
  { name: 'HEADERS on stream 0 (6.2)', code: ErrorCode.PROTOCOL_ERROR, send: () => [headersFrame(0, hpack(fields('GET', '/s0', 's0')), { endStream: true })] },
  { name: 'HEADERS on an even stream id (5.1.1)', code: ErrorCode.PROTOCOL_ERROR, send: () => [headersFrame(2, hpack(fields('GET', '/even', 'even')), { endStream: true })] },
  {
    name: 'HEADERS on a stream id lower than one already opened (5.1.1)', code: ErrorCode.PROTOCOL_ERROR,
    send: async (c) => {
      c.send(headersFrame(5, hpack(fields('GET', '/five', 'five')), { endStream: true }));
      await c.result(5, WAIT);
      return [headersFrame(3, hpack(fields('GET', '/three', 'three')), { endStream: true })];
    },
  },
  {
    name: 'HEADERS with padding as long as its payload (6.2)', code: ErrorCode.PROTOCOL_ERROR,
    send: () => {
      const block = hpack(fields('GET', '/pad', 'pad-headers'));
      return [frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM | Flag.PADDED, 1, Buffer.concat([Buffer.from([block.length + 1]), block]))];
    },
  },
  { name: 'CONTINUATION without a HEADERS before it (6.10)', code: ErrorCode.PROTOCOL_ERROR, send: () => [continuationFrame(1, hpack(fields('GET', '/c', 'cont')), true)] },
  {
    name: 'HEADERS without END_HEADERS, then a PING (4.3)', code: ErrorCode.PROTOCOL_ERROR,
    send: () => {
      const block = hpack(fields('GET', '/interleaved', 'interleaved'));
      return [headersFrame(1, block.subarray(0, 8), { endStream: true, endHeaders: false }), pingFrame(Buffer.alloc(8))];
    },
  },
  {
    name: 'HEADERS without END_HEADERS, then CONTINUATION on another stream (4.3)', code: ErrorCode.PROTOCOL_ERROR,
    send: () => {
      const block = hpack(fields('GET', '/other-stream', 'other-stream'));
      return [headersFrame(1, block.subarray(0, 8), { endStream: true, endHeaders: false }), continuationFrame(3, block.subarray(8), true)];
    },
  },
  {
    name: 'HEADERS without END_HEADERS, then a frame of an unknown type (5.5)', code: ErrorCode.PROTOCOL_ERROR,
    send: () => {
      const block = hpack(fields('GET', '/ext-in-block', 'ext-in-block'));
      return [headersFrame(1, block.subarray(0, 8), { endStream: true, endHeaders: false }), frame(0xfa, 0, 1, Buffer.from('x')), continuationFrame(1, block.subarray(8), true)];
    },
  },
  { name: 'DATA on stream 0 (6.1)', code: ErrorCode.PROTOCOL_ERROR, send: () => [dataFrame(0, 'x')] },
  { name: 'DATA on an idle stream (5.1)', code: ErrorCode.PROTOCOL_ERROR, send: () => [dataFrame(99, 'x', { endStream: true })] },
  {
    name: 'DATA with a pad length as long as its payload (6.1)', code: ErrorCode.PROTOCOL_ERROR,
    send: (c) => {
      const id = c.newStreamId();
      return [headersFrame(id, hpack(fields('POST', '/nobody/pad', 'pad-data'))), frame(FrameType.DATA, Flag.PADDED, id, Buffer.from([4, 0x61, 0x62, 0x63]))];
    },
  },
  { name: 'WINDOW_UPDATE with increment 0 on stream 0 (6.9)', code: ErrorCode.PROTOCOL_ERROR, send: () => [windowUpdateFrame(0, 0)] },
  { name: 'WINDOW_UPDATE with length 3 (6.9)', code: ErrorCode.FRAME_SIZE_ERROR, send: () => [frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 1]))] },
  { name: 'WINDOW_UPDATE that takes the connection window past 2^31-1 (6.9.1)', code: ErrorCode.FLOW_CONTROL_ERROR, send: () => [windowUpdateFrame(0, MAX_WINDOW)] },
  { name: 'RST_STREAM on stream 0 (6.4)', code: ErrorCode.PROTOCOL_ERROR, send: () => [rstStreamFrame(0, ErrorCode.CANCEL)] },
  { name: 'RST_STREAM on an idle stream (6.4)', code: ErrorCode.PROTOCOL_ERROR, send: () => [rstStreamFrame(5, ErrorCode.CANCEL)] },
  {
    name: 'RST_STREAM with length 3 (6.4)', code: ErrorCode.FRAME_SIZE_ERROR,
    send: (c) => [frame(FrameType.RST_STREAM, 0, openHeld(c, 'rst-size'), Buffer.from([0, 0, 8]))],
  },
  {
    name: 'PUSH_PROMISE from the client (8.4)', code: ErrorCode.PROTOCOL_ERROR,
    send: (c) => {
      const id = openHeld(c, 'push');
      const promised = Buffer.alloc(4);
      promised.writeUInt32BE(2);
      return [frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, id, Buffer.concat([promised, hpack(fields('GET', '/pushed', 'pushed'))]))];
    },
  },
];

for (const cc of connCases) {
  h2case(cc.name, async (t) => {
    const c = await open(t);
    c.send(...await cc.send(c));
    await expectConnectionError(t, c, cc.code, cc.name);
  });
}

// ── stream errors: the stream is reset, the connection carries on ──────────

/** `bodyOpen`: the stream's request body is still coming (else the request has ended and the upstream holds the response). */
interface StreamCase { name: string; codes: number[]; connectionErrorOk?: boolean; bodyOpen?: boolean; send: (c: H2Client, id: number) => Buffer[] }

const streamCases: StreamCase[] = [
  {
    name: 'WINDOW_UPDATE with increment 0 on an open stream (6.9)', codes: [ErrorCode.PROTOCOL_ERROR], connectionErrorOk: true,
    send: (_c, id) => [windowUpdateFrame(id, 0)],
  },
  {
    name: 'WINDOW_UPDATE that takes a stream window past 2^31-1 (6.9.1)', codes: [ErrorCode.FLOW_CONTROL_ERROR],
    send: (_c, id) => [windowUpdateFrame(id, MAX_WINDOW)],
  },
  {
    name: 'PRIORITY with length 4 (6.3)', codes: [ErrorCode.FRAME_SIZE_ERROR],
    send: (_c, id) => [frame(FrameType.PRIORITY, 0, id, Buffer.from([0, 0, 0, 0]))],
  },
  {
    name: 'PRIORITY that makes a stream depend on itself (5.3.1)', codes: [ErrorCode.PROTOCOL_ERROR],
    send: (_c, id) => [priorityFrame(id, { dependsOn: id, weight: 16 })],
  },
  {
    name: 'DATA after END_STREAM, on a half-closed stream (5.1)', codes: [ErrorCode.STREAM_CLOSED],
    send: (_c, id) => [dataFrame(id, 'late')],
  },
  {
    name: 'DATA larger than SETTINGS_MAX_FRAME_SIZE (4.2)', codes: [ErrorCode.FRAME_SIZE_ERROR], connectionErrorOk: true, bodyOpen: true,
    send: (c, id) => [dataFrame(id, Buffer.alloc(c.setting(Setting.MAX_FRAME_SIZE, 16384) + 1, 0x61))],
  },
];

for (const sc of streamCases) {
  h2case(sc.name, async (t) => {
    const c = await open(t);
    const tag = `stream-case-${streamCases.indexOf(sc)}`;
    let id: number;
    if (sc.bodyOpen) {
      id = c.newStreamId();
      c.send(headersFrame(id, hpack(fields('POST', `/nobody/${tag}`, tag))));
    } else {
      id = openHeld(c, tag);
    }
    c.send(...sc.send(c, id));
    await expectStreamError(t, c, id, sc.codes, sc.name, { connectionErrorOk: sc.connectionErrorOk });
    const rec = seen.find((s) => s.tag === tag);
    if (rec) {
      await waitFor(() => rec.closed, WAIT, 'the upstream stream to close').catch(() => {});
      t.ok(rec.closed, `${sc.name}: the upstream stream was cancelled too`);
    }
  });
}

h2case('HEADERS with a priority that makes the stream depend on itself (5.3.1)', async (t) => {
  const c = await open(t);
  const id = c.newStreamId();
  c.send(headersFrame(id, hpack(fields('GET', '/self-dep', 'self-dep')), { endStream: true, priority: { dependsOn: id, weight: 16 } }));
  await expectStreamError(t, c, id, [ErrorCode.PROTOCOL_ERROR], 'self-dependent HEADERS');
  t.notOk(seen.some((s) => s.tag === 'self-dep' && s.complete), 'the upstream did not get it as a complete request');
});

// ── HPACK decoding errors: COMPRESSION_ERROR (RFC 9113 4.3, RFC 7541) ───────

const hpackCases: Array<{ name: string; block: (c: H2Client) => Buffer }> = [
  { name: 'indexed field with index 0 (7541 6.1)', block: () => Buffer.from([0x80]) },
  { name: 'indexed field far beyond both tables (7541 2.3.3)', block: () => Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]) },
  { name: 'index 62 with an empty dynamic table (7541 2.3.3)', block: () => hpackIndexed(62) },
  { name: 'an integer longer than any table (7541 5.1)', block: () => Buffer.from([0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]) },
  {
    name: 'table size update above SETTINGS_HEADER_TABLE_SIZE (7541 6.3)',
    block: (c) => Buffer.concat([hpackInt(c.setting(Setting.HEADER_TABLE_SIZE, 4096) + 1, 5, 0x20), hpack(fields('GET', '/tsu', 'tsu'))]),
  },
  { name: 'table size update after a field (7541 4.2)', block: () => Buffer.concat([hpack(fields('GET', '/tsu2', 'tsu2')), Buffer.from([0x20])]) },
  { name: 'Huffman string containing EOS (7541 5.2)', block: () => Buffer.from([0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, 0x61]) },
  { name: 'Huffman padding longer than 7 bits (7541 5.2)', block: () => Buffer.from([0x00, 0x82, 0x1f, 0xff, 0x01, 0x61]) },
  { name: 'Huffman padding that is not the EOS prefix (7541 5.2)', block: () => Buffer.from([0x00, 0x81, 0x18, 0x01, 0x61]) },
  { name: 'string longer than the field block', block: () => Buffer.concat([hpack(fields('GET', '/trunc', 'trunc')), Buffer.from([0x00, 0x0a, 0x61, 0x62, 0x63])]) },
];

for (const hc of hpackCases) {
  h2case(`HPACK: ${hc.name}`, async (t) => {
    const c = await open(t);
    c.send(headersFrame(c.newStreamId(), hc.block(c), { endStream: true }));
    await expectConnectionError(t, c, ErrorCode.COMPRESSION_ERROR, hc.name);
  });
}

// ── malformed requests (8.1.1): RST_STREAM PROTOCOL_ERROR or a 4xx, never forwarded ──

interface Malformed { name: string; send: (id: number, tag: string) => Buffer[]; hasBody?: boolean }

const get = (tag: string, extra: ReadonlyArray<readonly [string, string]> = []): Field[] => fields('GET', `/malformed/${tag}`, tag, extra);
const only = (list: Field[]) => (id: number) => [headersFrame(id, hpack(list), { endStream: true })];

const malformed: Malformed[] = [
  { name: 'an upper-case field name (8.2.1)', send: (id, tag) => only(get(tag, [['X-Upper', 'v']]))(id) },
  { name: 'a field name with a space (8.2.1)', send: (id, tag) => only(get(tag, [['x bad', 'v']]))(id) },
  ...['connection: keep-alive', 'proxy-connection: keep-alive', 'keep-alive: timeout=5', 'transfer-encoding: chunked', 'upgrade: h2c'].map((h) => ({
    name: `connection-specific field "${h}" (8.2.2)`,
    send: (id: number, tag: string) => only(get(tag, [h.split(': ') as [string, string]]))(id),
  })),
  { name: 'te: gzip (8.2.2)', send: (id, tag) => only(get(tag, [['te', 'gzip']]))(id) },
  { name: 'no :method (8.3.1)', send: (id, tag) => only([[':scheme', 'http'], [':path', `/malformed/${tag}`], [':authority', 'sluice.test'], ['x-case', tag]])(id) },
  { name: 'no :path (8.3.1)', send: (id, tag) => only([[':method', 'GET'], [':scheme', 'http'], [':authority', 'sluice.test'], ['x-case', tag]])(id) },
  { name: 'no :scheme (8.3.1)', send: (id, tag) => only([[':method', 'GET'], [':path', `/malformed/${tag}`], [':authority', 'sluice.test'], ['x-case', tag]])(id) },
  { name: 'an empty :path (8.3.1)', send: (id, tag) => only([[':method', 'GET'], [':scheme', 'http'], [':path', ''], [':authority', 'sluice.test'], ['x-case', tag]])(id) },
  {
    name: 'a pseudo-header after a regular field (8.3)',
    send: (id, tag) => only([[':method', 'GET'], [':scheme', 'http'], [':path', `/malformed/${tag}`], ['x-case', tag], [':authority', 'sluice.test']])(id),
  },
  {
    name: 'a duplicated pseudo-header (8.3.1)',
    send: (id, tag) => only([[':method', 'GET'], [':scheme', 'http'], [':path', `/malformed/${tag}`], [':path', '/again'], [':authority', 'sluice.test'], ['x-case', tag]])(id),
  },
  {
    name: 'an unknown pseudo-header :foo (8.3)',
    send: (id, tag) => only([[':method', 'GET'], [':scheme', 'http'], [':path', `/malformed/${tag}`], [':foo', 'bar'], [':authority', 'sluice.test'], ['x-case', tag]])(id),
  },
  {
    name: 'a response pseudo-header :status in a request (8.3)',
    send: (id, tag) => only([[':method', 'GET'], [':scheme', 'http'], [':path', `/malformed/${tag}`], [':status', '200'], [':authority', 'sluice.test'], ['x-case', tag]])(id),
  },
  { name: 'a field value with CR (8.2.1)', send: (id, tag) => only(get(tag, [['x-bad', 'a\rb']]))(id) },
  { name: 'a field value with LF (8.2.1)', send: (id, tag) => only(get(tag, [['x-bad', 'a\nb']]))(id) },
  { name: 'a field value with NUL (8.2.1)', send: (id, tag) => only(get(tag, [['x-bad', 'a\0b']]))(id) },
  {
    name: 'a pseudo-header in trailers (8.1)', hasBody: true,
    send: (id, tag) => [
      headersFrame(id, hpack(fields('POST', `/malformed/${tag}`, tag))),
      dataFrame(id, 'abc'),
      headersFrame(id, hpack([[':path', '/trailer'], ['x-trailer', '1']]), { endStream: true }),
    ],
  },
  {
    name: 'a second HEADERS without END_STREAM (8.1)', hasBody: true,
    send: (id, tag) => [
      headersFrame(id, hpack(fields('POST', `/malformed/${tag}`, tag))),
      dataFrame(id, 'abc'),
      headersFrame(id, hpack([['x-trailer', '1']])),
      dataFrame(id, 'def', { endStream: true }),
    ],
  },
  {
    name: 'content-length: 5 with 3 octets of DATA (8.1.1)', hasBody: true,
    send: (id, tag) => [headersFrame(id, hpack(fields('POST', `/malformed/${tag}`, tag, [['content-length', '5']]))), dataFrame(id, 'abc', { endStream: true })],
  },
  {
    name: 'content-length: 1 with 5 octets of DATA (8.1.1)', hasBody: true,
    send: (id, tag) => [headersFrame(id, hpack(fields('POST', `/malformed/${tag}`, tag, [['content-length', '1']]))), dataFrame(id, 'abcde', { endStream: true })],
  },
];

for (const [i, m] of malformed.entries()) {
  h2case(`malformed request: ${m.name}`, async (t) => {
    const c = await open(t);
    const tag = `malformed-${i}`;
    const id = c.newStreamId();
    c.send(...m.send(id, tag));
    const r = await c.result(id, WAIT);
    const ok = rejectedAsMalformed(r);
    t.ok(ok, `${m.name}: RST_STREAM PROTOCOL_ERROR or a 4xx response (got ${describeResult(r)})`);
    if (ok && !r.goaway) await expectUsable(t, c, m.name);
    if (m.hasBody) t.notOk(seen.some((s) => s.tag === tag && s.complete), `${m.name}: the upstream never got it as a complete request`);
    else t.notOk(seen.some((s) => s.tag === tag), `${m.name}: not forwarded upstream`);
  });
}

// ── flow control ────────────────────────────────────────────────────────────

h2case('DATA beyond the stream\'s flow-control window: FLOW_CONTROL_ERROR (6.9)', async (t) => {
  const c = await open(t);
  const streamWindow = c.setting(Setting.INITIAL_WINDOW_SIZE, 65535);
  const maxFrame = c.setting(Setting.MAX_FRAME_SIZE, 16384);
  const id = c.newStreamId();
  const total = streamWindow + 256 * 1024;
  const out = [headersFrame(id, hpack(fields('POST', '/nobody/window', 'window')))];
  for (let sent = 0; sent < total; sent += maxFrame) out.push(dataFrame(id, Buffer.alloc(Math.min(maxFrame, total - sent), 0x61)));
  await c.write(Buffer.concat(out));
  // The RFC lets the server say so on the stream or on the connection. A server that
  // granted credit (WINDOW_UPDATE) for all of it was owed nothing, and passes too.
  const outcome = await c.until(() => {
    const s = c.stream(id);
    if (s.rst !== null) return { kind: 'stream', code: s.rst };
    if (c.goaway) return { kind: 'connection', code: c.goaway.code };
    if (c.closed) return { kind: 'closed', code: -1 };
    if (streamWindow + s.windowUpdates >= total && 65535 + c.connWindowUpdates >= total) return { kind: 'credit', code: -1 };
    return null;
  }, WAIT, 'FLOW_CONTROL_ERROR').catch(() => ({ kind: 'nothing', code: -1 }));
  if (outcome.kind === 'credit') {
    t.pass('the server granted window for every octet sent: no violation to report');
  } else {
    t.ok(outcome.code === ErrorCode.FLOW_CONTROL_ERROR && outcome.kind !== 'closed',
      `${total} octets against a ${streamWindow}-octet window: RST_STREAM or GOAWAY FLOW_CONTROL_ERROR (got ${outcome.kind}${outcome.code >= 0 ? ` ${errorName(outcome.code)}` : ''}; frames: ${c.summary()})`);
  }
  if (outcome.kind === 'stream') await expectUsable(t, c, 'after the flow-control stream error');
  if (outcome.kind === 'connection') t.ok((await c.ended(WAIT)).closed, 'the connection is closed after the GOAWAY');
  t.notOk(seen.some((s) => s.tag === 'window' && s.complete), 'the upstream never got it as a complete request');
});

// ── the client going away, and frames to ignore ─────────────────────────────

h2case('GOAWAY from the client: the stream in flight still completes (6.8)', async (t) => {
  const c = await open(t);
  const id = openHeld(c, 'goaway');
  await waitFor(() => held.has('/hold/goaway'), WAIT, 'the upstream to get the request');
  c.send(goawayFrame(0, ErrorCode.NO_ERROR));
  const opaque = randomBytes(8);
  c.send(pingFrame(opaque));
  const ack = await c.frame((f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0 && f.payload.equals(opaque), 'PING ACK after our GOAWAY', WAIT).catch(() => null);
  t.ok(ack, 'PING still answered after the client\'s GOAWAY (the GOAWAY has been read)');
  release('/hold/goaway');
  const r = await c.result(id, WAIT);
  t.ok(r.status === 200 && r.body === 'ok' && r.endStream && r.rst === null, `the held stream completes with 200 "ok" (got ${describeResult(r)})`);
});

h2case('unknown frame types, flags and settings are ignored (4.1, 5.5, 6.5.2)', async (t) => {
  const c = await open(t);
  c.send(frame(0xfa, 0xff, 0, Buffer.from('hello extension')));
  const acks = c.settingsAcks;
  c.send(settingsFrame([[0x7f7f, 12345]]));
  await c.until(() => c.settingsAcks > acks, WAIT, 'SETTINGS ACK').catch(() => {});
  t.ok(c.settingsAcks > acks, 'a SETTINGS with an unknown identifier is acknowledged');
  const opaque = randomBytes(8);
  c.send(pingFrame(opaque, { flags: 0xfe }));
  const ack = await c.frame((f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0 && f.payload.equals(opaque), 'PING ACK', WAIT).catch(() => null);
  t.ok(ack, 'a PING with unknown flags set is answered');
  // an extension frame on an open stream, unknown flags on HEADERS and DATA
  const id = c.newStreamId();
  c.send(
    frame(FrameType.HEADERS, Flag.END_HEADERS | 0x40 | 0x10, id, hpack(fields('POST', '/unknown', 'unknown'))),
    frame(0xfa, 0, id, Buffer.from('ignore me')),
    frame(FrameType.DATA, Flag.END_STREAM | 0x20, id, Buffer.from('body')),
  );
  const r = await c.result(id, WAIT);
  t.ok(r.status === 200 && r.endStream, `the request around them gets 200 (got ${describeResult(r)})`);
  t.equal(seen.find((s) => s.tag === 'unknown')?.body, 'body', 'and its body arrived intact');
  await expectUsable(t, c, 'after unknown frames');
});

// ── abuse ───────────────────────────────────────────────────────────────────

h2case('CONTINUATION flood: the connection ends, memory stays bounded', async (t) => {
  const c = await open(t);
  const maxFrame = c.setting(Setting.MAX_FRAME_SIZE, 16384);
  const parts = [hpack(fields('GET', '/flood', 'flood'))];
  for (let size = 0, i = 0; size < 2 * 1024 * 1024; i++) {
    const f = hpackLiteral(`x-flood-${i}`, 'f'.repeat(1000));
    parts.push(f);
    size += f.length;
  }
  const block = Buffer.concat(parts);
  const rss0 = process.memoryUsage().rss;
  const id = c.newStreamId();
  const framesOut = [headersFrame(id, block.subarray(0, maxFrame), { endStream: true, endHeaders: false })];
  for (let off = maxFrame; off < block.length; off += maxFrame) framesOut.push(continuationFrame(id, block.subarray(off, off + maxFrame), false));
  let written = 0;
  for (let i = 0; i < framesOut.length && !c.closed && !c.goaway; i += 4) {
    const chunk = Buffer.concat(framesOut.slice(i, i + 4));
    if (!await c.write(chunk)) break;
    written += chunk.length;
  }
  const end = await c.ended(WAIT);
  t.ok(end.closed, `Sluice ends the connection (${written} octets written before it did${end.goaway ? `, GOAWAY ${errorName(end.goaway.code)}` : ''}; frames: ${c.summary()})`);
  const grown = process.memoryUsage().rss - rss0;
  t.ok(grown < 64 * 1024 * 1024, `memory stays bounded (rss grew ${(grown / 1048576).toFixed(1)} MiB)`);
  t.notOk(seen.some((s) => s.tag === 'flood'), 'nothing forwarded upstream');
});

h2case('rapid reset (CVE-2023-44487): 2000 streams opened and cancelled at once', async (t) => {
  const c = await open(t);
  const N = 2000;
  const deadline = Date.now() + 20_000;
  let sent = 0;
  while (sent < N && !c.closed && !c.goaway && Date.now() < deadline) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 50 && sent < N; i++, sent++) {
      const id = c.newStreamId();
      batch.push(headersFrame(id, hpack(fields('GET', `/rapid/${sent}`, 'rapid')), { endStream: true }), rstStreamFrame(id, ErrorCode.CANCEL));
    }
    if (!await c.write(Buffer.concat(batch))) break;
  }
  if (!c.goaway && !c.closed) {
    const opaque = randomBytes(8);
    c.send(pingFrame(opaque));
    await c.until(() => c.goaway || c.closed || c.frames.some((f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0 && f.payload.equals(opaque)),
      WAIT, 'PING ACK, GOAWAY or close').catch(() => {});
  }
  const pingAcked = c.frames.some((f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0);
  if (c.goaway) {
    t.pass(`Sluice ended the connection: GOAWAY ${errorName(c.goaway.code)} after ${(c.goaway.lastStreamId + 1) / 2} streams (${sent} sent)`);
  } else {
    t.ok(pingAcked && !c.closed, `all ${sent} sent and the connection stayed healthy: PING answered (frames: ${c.summary(4)})`);
  }
  c.destroy();
  await waitFor(async () => {
    const st = await stats(sluice.admin);
    return st.get('sluice_downstream_rq_active{protocol="http2"}') === 0 && st.get('sluice_upstream_rq_active{cluster="up"}') === 0;
  }, WAIT, 'no request active downstream or upstream').catch((err: Error) => t.fail(err.message));
  // Each stream that reaches the upstream before its reset is work the attacker gets for free.
  // Streams reset in the same read need not reach it at all; a reset budget per connection
  // bounds the rest. A budget of 1000 (nghttp2's default) would let half of these through.
  const forwarded = seen.filter((s) => s.tag === 'rapid').length;
  t.comment(`rapid reset: ${sent} streams sent, ${forwarded} reached the upstream`);
  t.ok(forwarded <= N / 4, `the upstream saw far fewer than ${sent} requests: ${forwarded} (at most ${N / 4} allowed)`);
});

h2case('SETTINGS_MAX_CONCURRENT_STREAMS: one stream too many is refused (5.1.2)', async (t) => {
  const c = await open(t);
  const limit = c.serverSettings.get(Setting.MAX_CONCURRENT_STREAMS);
  if (limit === undefined) {
    t.fail('Sluice advertises no SETTINGS_MAX_CONCURRENT_STREAMS: every client may open streams without bound');
    return;
  }
  if (limit > 5000) {
    t.pass('one stream over the limit', { skip: `SETTINGS_MAX_CONCURRENT_STREAMS is ${limit}: too many to open in a bounded test` });
    return;
  }
  const ids: number[] = [];
  const batch: Buffer[] = [];
  for (let i = 0; i < limit; i++) {
    const id = c.newStreamId();
    ids.push(id);
    batch.push(headersFrame(id, hpack(fields('GET', `/hold/mcs/${i}`, 'mcs')), { endStream: true }));
  }
  await c.write(Buffer.concat(batch));
  const extra = c.newStreamId();
  c.send(headersFrame(extra, hpack(fields('GET', '/hold/mcs/extra', 'mcs-extra')), { endStream: true }));
  const r = await c.result(extra, WAIT);
  const refusedOnStream = r.rst === ErrorCode.REFUSED_STREAM || r.rst === ErrorCode.PROTOCOL_ERROR;
  t.ok(refusedOnStream || (STREAM_ERRORS_MAY_ESCALATE && r.goaway?.code === ErrorCode.PROTOCOL_ERROR),
    `stream ${limit + 1} of a limit of ${limit}: RST_STREAM REFUSED_STREAM or PROTOCOL_ERROR (got ${describeResult(r)})`);
  const early = ids.filter((id) => c.stream(id).rst !== null || c.stream(id).ended);
  t.equal(early.length, 0, `none of the first ${limit} streams was answered or reset early`);
  t.notOk(seen.some((s) => s.tag === 'mcs-extra'), 'the refused stream never reached the upstream');
  if (!refusedOnStream) return;
  // the held ones are real requests: let them all complete on the same connection
  await waitFor(() => seen.filter((s) => s.tag === 'mcs' && held.has(s.path)).length === limit, WAIT * 2, `all ${limit} held at the upstream`)
    .catch((err: Error) => t.fail(err.message));
  release('/hold/mcs/');
  await c.until(() => ids.every((id) => c.stream(id).ended || c.stream(id).rst !== null) || c.closed, WAIT * 2, 'every held stream to end').catch(() => {});
  const ok = ids.filter((id) => c.stream(id).ended && c.stream(id).rst === null).length;
  t.equal(ok, limit, `all ${limit} streams within the limit complete`);
  await expectUsable(t, c, 'after the refused stream');
});

// ── the end ─────────────────────────────────────────────────────────────────

t.test('after everything above: Sluice still serves, and its worker never died', async (t) => {
  await stillServes(t, 'the end');
  const st = await stats(sluice.admin);
  t.equal(st.get('sluice_worker_restarts_total'), 0, 'no worker restarts');
});
