/**
 * Sluice's HTTP/2 upstream side (src/protocols/http2/http2-pool.ts, the h2 half of
 * src/protocols/http2/http2-session.ts, on src/protocols/http2/http2-connection.ts)
 * against an h2c upstream that misbehaves or does something unusual.
 *
 *   node:http2 client ──h2c──▶ Sluice (listener app → cluster up, protocol http2) ──h2c──▶ FakeH2Server
 *   (or the raw H2Client                                                                  (hand-made frames,
 *    where exact frames matter)                                                            everything recorded)
 *
 * The fake upstream is written here, frame by frame, so it can break the
 * protocol on purpose: it sends its SETTINGS, acknowledges Sluice's, decodes
 * the request HEADERS with the helper's HPACK decoder, records every frame and
 * counts connections and concurrently open streams per connection; each test
 * decides what it answers. One worker thread, so one client connection and
 * its upstream connections live on the same worker and counts are exact.
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { startSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';
import {
  ErrorCode, Flag, FrameType, H2Client, HpackDecoder, PREFACE, Setting, dataFrame, describeResult, errorName, frame,
  continuationFrame, goawayFrame, headersFrame, hpack, rstStreamFrame, settingsAck, settingsFrame, typeName, windowUpdateFrame,
  HeaderBlocks, frameContent, type Field, type Frame, type GoAway, type HeaderBlock,
} from '../helpers/h2-frames';

// ── a hand-made h2c upstream ─────────────────────────────────────────────────

const DEFAULT_WINDOW = 65_535;
const MAX_FRAME = 16_384;

class FakeStream {
  readonly data: Buffer[] = [];
  remoteEnded = false;
  localEnded = false;
  /** RST_STREAM code received from Sluice. */
  rstReceived: number | null = null;
  rstSent = false;
  /** Window Sluice has granted us for this stream. */
  sendWindow: number;
  /** Sum of Sluice's WINDOW_UPDATE increments for this stream. */
  windowUpdates = 0;
  /** What Sluice may still send us on this stream (our initial window + our grants - its DATA). */
  recvWindow: number;
  constructor(readonly id: number, sendWindow: number, recvWindow: number) { this.sendWindow = sendWindow; this.recvWindow = recvWindow; }
  get body(): Buffer { return Buffer.concat(this.data); }
  get open(): boolean {
    return !this.rstSent && this.rstReceived === null && !(this.remoteEnded && this.localEnded);
  }
}

interface UpRequest {
  conn: FakeConn;
  id: number;
  fields: Array<[string, string]>;
  path: string;
}

class FakeConn {
  readonly frames: Frame[] = [];
  readonly streams = new Map<number, FakeStream>();
  /** Sluice's SETTINGS, latest values. */
  readonly settings = new Map<number, number>();
  /** SETTINGS ACKs from Sluice (for ours). */
  settingsAcks = 0;
  goaway: GoAway | null = null;
  closed = false;
  /** Connection send window Sluice has granted us. */
  connWindow = DEFAULT_WINDOW;
  /** Sum of Sluice's WINDOW_UPDATE increments on stream 0. */
  connWindowUpdates = 0;
  /** Most streams open at once on this connection. */
  maxOpen = 0;
  /** DATA we sent beyond a window Sluice granted (must stay 0). */
  overSent = 0;
  /** What Sluice may still send us on the connection. */
  recvWindow = DEFAULT_WINDOW;
  /**
   * Our SETTINGS_INITIAL_WINDOW_SIZE as Sluice applies it: the default until its ACK of our
   * SETTINGS (what it sent before had the default window, RFC 9113 6.9.2), ours after.
   */
  ourInitialWindow = DEFAULT_WINDOW;
  /** DATA bytes Sluice sent beyond a window we granted (must stay 0). */
  overReceived = 0;
  /** Frames from Sluice longer than the 16 KiB SETTINGS_MAX_FRAME_SIZE we left at its default (must stay 0). */
  oversize = 0;
  /** Each request or trailer field block: its first octet, and whether Sluice had acknowledged our SETTINGS before it. */
  readonly blocks: Array<{ id: number; first: number; afterAck: boolean }> = [];
  hpackError: Error | null = null;
  prefaceOk: boolean | null = null;
  private pending: Buffer = Buffer.alloc(0);
  private prefaceLeft = PREFACE.length;
  private readonly assembler = new HeaderBlocks();
  private readonly decoder = new HpackDecoder();

  constructor(readonly server: FakeH2Server, readonly socket: net.Socket, readonly index: number) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => { this.closed = true; server.notify(); });
    this.send(settingsFrame(server.settings));
  }

  send(...bufs: Buffer[]): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
  }

  get openStreams(): number {
    let n = 0;
    for (const s of this.streams.values()) if (s.open) n++;
    return n;
  }

  /** Response (or trailer) HEADERS: pairs become literals, Buffers go in as they are. */
  respond(id: number, fields: readonly Field[], endStream = false): void {
    this.send(headersFrame(id, hpack(fields), { endStream }));
    if (endStream) this.stream(id).localEnded = true;
  }

  /** One DATA frame as it is (no window check: for small bodies). */
  data(id: number, body: Buffer | string, endStream = false): void {
    const s = this.stream(id);
    const n = typeof body === 'string' ? Buffer.byteLength(body, 'latin1') : body.length;
    if (n > s.sendWindow || n > this.connWindow) this.overSent += n;
    s.sendWindow -= n;
    this.connWindow -= n;
    this.send(dataFrame(id, body, { endStream }));
    if (endStream) s.localEnded = true;
  }

  /** WINDOW_UPDATE: Sluice may send `n` more octets on the stream (id > 0) or the connection (0). */
  grant(id: number, n: number): void {
    if (n <= 0) return;
    if (id === 0) this.recvWindow += n; else this.stream(id).recvWindow += n;
    this.send(windowUpdateFrame(id, n));
  }

  rst(id: number, code: number): void {
    this.stream(id).rstSent = true;
    this.send(rstStreamFrame(id, code));
  }

  /**
   * A large body in DATA frames of at most 16 KiB, never beyond the windows Sluice
   * granted (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATEs); waits for more window when both are not open.
   */
  async sendBody(id: number, body: Buffer, endStream: boolean, timeoutMs = 20_000): Promise<void> {
    const s = this.stream(id);
    let off = 0;
    const deadline = Date.now() + timeoutMs;
    while (off < body.length) {
      const room = Math.min(s.sendWindow, this.connWindow, MAX_FRAME, body.length - off);
      if (room <= 0) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no window from Sluice after ${off} of ${body.length} bytes (stream ${s.sendWindow}, connection ${this.connWindow})`);
        await this.server.until(() => (s.sendWindow > 0 && this.connWindow > 0) || this.closed || !s.open, left,
          `window for stream ${id} after ${off} bytes`);
        if (this.closed || !s.open) throw new Error(`stream ${id} ended while sending its body (at ${off} bytes): ${this.summary()}`);
        continue;
      }
      const last = off + room === body.length;
      this.data(id, body.subarray(off, off + room), last && endStream);
      off += room;
    }
  }

  stream(id: number): FakeStream {
    let s = this.streams.get(id);
    if (!s) {
      s = new FakeStream(id, this.settings.get(Setting.INITIAL_WINDOW_SIZE) ?? DEFAULT_WINDOW, this.ourInitialWindow);
      this.streams.set(id, s);
    }
    return s;
  }

  /** The RST_STREAM code Sluice sent for a stream, or null. */
  rstFromSluice(id: number): number | null {
    return this.streams.get(id)?.rstReceived ?? null;
  }

  summary(max = 12): string {
    const fs = this.frames.slice(-max).map((f) => {
      let s = `${typeName(f.type)}(${f.streamId}${f.flags ? `, flags 0x${f.flags.toString(16)}` : ''})`;
      if (f.type === FrameType.RST_STREAM && f.payload.length === 4) s += ` ${errorName(f.payload.readUInt32BE(0))}`;
      if (f.type === FrameType.GOAWAY && f.payload.length >= 8) s += ` ${errorName(f.payload.readUInt32BE(4))}`;
      return s;
    });
    return `conn ${this.index}: [${fs.join(', ')}]${this.closed ? ' then close' : ''}`;
  }

  private onData(d: Buffer): void {
    let buf = this.pending.length ? Buffer.concat([this.pending, d]) : d;
    if (this.prefaceLeft > 0) {
      const start = PREFACE.length - this.prefaceLeft;
      const n = Math.min(this.prefaceLeft, buf.length);
      if (buf.compare(PREFACE, start, start + n, 0, n) !== 0) { this.prefaceOk = false; this.socket.destroy(); return; }
      this.prefaceLeft -= n;
      buf = buf.subarray(n);
      if (this.prefaceLeft === 0) this.prefaceOk = true;
    }
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (len > MAX_FRAME) { this.oversize++; }
      if (buf.length < 9 + len) break;
      const f: Frame = { type: buf[3], flags: buf[4], streamId: buf.readUInt32BE(5) & 0x7fffffff, payload: Buffer.from(buf.subarray(9, 9 + len)) };
      buf = buf.subarray(9 + len);
      this.frames.push(f);
      this.onFrame(f);
    }
    this.pending = Buffer.from(buf);
    this.server.notify();
  }

  private onFrame(f: Frame): void {
    const p = f.payload;
    switch (f.type) {
      case FrameType.SETTINGS: {
        if (f.flags & Flag.ACK) {
          if (this.settingsAcks++ === 0) {
            const ours = this.server.settings.find(([k]) => k === Setting.INITIAL_WINDOW_SIZE)?.[1] ?? DEFAULT_WINDOW;
            for (const s of this.streams.values()) s.recvWindow += ours - this.ourInitialWindow;
            this.ourInitialWindow = ours;
          }
          break;
        }
        for (let i = 0; i + 6 <= p.length; i += 6) {
          const id = p.readUInt16BE(i);
          const value = p.readUInt32BE(i + 2);
          if (id === Setting.INITIAL_WINDOW_SIZE) {
            const delta = value - (this.settings.get(id) ?? DEFAULT_WINDOW);
            for (const s of this.streams.values()) s.sendWindow += delta;
          }
          this.settings.set(id, value);
        }
        this.send(settingsAck());
        break;
      }
      case FrameType.HEADERS:
      case FrameType.CONTINUATION: {
        const b = this.assembler.push(f);
        if (b) this.endBlock(b);
        break;
      }
      case FrameType.DATA: {
        const s = this.stream(f.streamId);
        const end = (f.flags & Flag.END_STREAM) !== 0;
        s.recvWindow -= p.length;
        this.recvWindow -= p.length;
        if (s.recvWindow < 0 || this.recvWindow < 0) this.overReceived += p.length;
        s.data.push(frameContent(f));
        if (end) s.remoteEnded = true;
        if (this.server.opts.autoGrant !== undefined && p.length > 0) {
          // give the window back as soon as the data is in (a reader that keeps up)
          this.grant(0, p.length);
          if (!end) this.grant(f.streamId, p.length);
        }
        if (end) this.server.onBodyEnd(this, s);
        break;
      }
      case FrameType.RST_STREAM:
        if (p.length === 4) this.stream(f.streamId).rstReceived = p.readUInt32BE(0);
        break;
      case FrameType.GOAWAY:
        if (p.length >= 8) this.goaway = { lastStreamId: p.readUInt32BE(0) & 0x7fffffff, code: p.readUInt32BE(4), debug: p.subarray(8).toString('latin1') };
        break;
      case FrameType.WINDOW_UPDATE: {
        if (p.length !== 4) break;
        const inc = p.readUInt32BE(0) & 0x7fffffff;
        if (f.streamId === 0) { this.connWindow += inc; this.connWindowUpdates += inc; } else {
          const s = this.stream(f.streamId);
          s.sendWindow += inc;
          s.windowUpdates += inc;
        }
        break;
      }
      case FrameType.PING:
        if ((f.flags & Flag.ACK) === 0) this.send(frame(FrameType.PING, Flag.ACK, 0, p));
        break;
      default:
    }
  }

  private endBlock(b: HeaderBlock): void {
    let fields: Array<[string, string]>;
    try {
      fields = this.decoder.decode(b.block);
    } catch (err) {
      this.hpackError ??= err as Error;
      return;
    }
    const id = b.streamId;
    this.blocks.push({ id, first: b.block.length ? b.block[0] : -1, afterAck: this.settingsAcks > 0 });
    const s = this.stream(id);
    if (b.endStream) s.remoteEnded = true;
    if (this.server.requests.some((r) => r.conn === this && r.id === id)) { // request trailers
      if (b.endStream) this.server.onBodyEnd(this, s);
      return;
    }
    this.maxOpen = Math.max(this.maxOpen, this.openStreams);
    const req: UpRequest = { conn: this, id, fields, path: fields.find(([n]) => n === ':path')?.[1] ?? '' };
    this.server.requests.push(req);
    if (this.server.opts.autoGrant) this.grant(id, this.server.opts.autoGrant);
    try {
      this.server.onRequest(req);
    } catch (err) {
      this.server.errors.push(err as Error);
    }
  }
}

interface FakeOpts {
  /** Our SETTINGS (default: MAX_CONCURRENT_STREAMS 100). */
  settings?: Array<[number, number]>;
  /** Grant this much stream window on each request's HEADERS, and give back every DATA frame's window at once. */
  autoGrant?: number;
  /** Called when a request's body has fully arrived. */
  onBody?: (r: UpRequest, body: Buffer) => void;
}

class FakeH2Server {
  readonly conns: FakeConn[] = [];
  readonly requests: UpRequest[] = [];
  /** Exceptions from onRequest (a test's own mistake), reported at the end. */
  readonly errors: Error[] = [];
  port = 0;
  private readonly server: net.Server;
  private readonly waiters = new Set<() => void>();

  readonly settings: Array<[number, number]>;

  constructor(public onRequest: (r: UpRequest) => void, readonly opts: FakeOpts) {
    this.settings = opts.settings ?? [[Setting.MAX_CONCURRENT_STREAMS, 100]];
    this.server = net.createServer((socket) => {
      this.conns.push(new FakeConn(this, socket, this.conns.length));
      this.notify();
    });
  }

  static async start(onRequest: (r: UpRequest) => void, opts: FakeOpts = {}): Promise<FakeH2Server> {
    const s = new FakeH2Server(onRequest, opts);
    s.server.listen(0, '127.0.0.1');
    await once(s.server, 'listening');
    s.port = (s.server.address() as AddressInfo).port;
    return s;
  }

  /** A request's body (or trailers) ended. */
  onBodyEnd(conn: FakeConn, s: FakeStream): void {
    const r = this.requests.find((q) => q.conn === conn && q.id === s.id);
    if (r && this.opts.onBody) {
      try { this.opts.onBody(r, s.body); } catch (err) { this.errors.push(err as Error); }
    }
  }

  notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** The first truthy value of `check`, tried now and after every read, accept and close. */
  until<T>(check: () => T | null | undefined | false, timeoutMs: number, what: string): Promise<T> {
    const first = check();
    if (first) return Promise.resolve(first);
    return new Promise((resolve, reject) => {
      const waiter = (): void => {
        const v = check();
        if (!v) return;
        this.waiters.delete(waiter);
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; upstream saw: ${this.summary()}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  requestsTo(path: string): UpRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  summary(): string {
    return this.conns.map((c) => c.summary()).join('; ') || 'no connection';
  }

  close(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

// ── the client side ──────────────────────────────────────────────────────────

interface H2Result {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders | null;
  /** The stream ended with END_STREAM (not a reset). */
  ended: boolean;
  rstCode: number;
  error: Error | null;
}

interface RequestOpts {
  method?: string;
  headers?: http2.OutgoingHttpHeaders;
  /** Written chunk by chunk. */
  body?: Buffer[];
  timeoutMs?: number;
}

/** One request on an open node:http2 session; resolves when the stream closes, however. */
function request(session: http2.ClientHttp2Session, path: string, opts: RequestOpts = {}): Promise<H2Result> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve) => {
    const res: H2Result = { status: 0, headers: {}, body: Buffer.alloc(0), trailers: null, ended: false, rstCode: 0, error: null };
    const chunks: Buffer[] = [];
    const body = opts.body ?? [];
    const req = session.request({ ':path': path, ':method': opts.method ?? 'GET', ...opts.headers }, { endStream: body.length === 0 });
    const timer = setTimeout(() => { res.error = new Error(`${path}: no end within ${timeoutMs} ms`); req.close(http2.constants.NGHTTP2_CANCEL); }, timeoutMs);
    req.on('response', (h) => { res.status = Number(h[':status']); res.headers = h; });
    req.on('trailers', (h) => { res.trailers = h; });
    req.on('data', (d: Buffer) => { chunks.push(d); });
    req.on('end', () => { res.ended = true; });
    req.on('error', (err) => { res.error ??= err; });
    req.on('close', () => {
      clearTimeout(timer);
      res.rstCode = req.rstCode ?? 0;
      res.body = Buffer.concat(chunks);
      resolve(res);
    });
    if (body.length) {
      for (const c of body) req.write(c);
      req.end();
    }
  });
}

function describe(r: H2Result): string {
  return `status ${r.status}, reason ${String(r.headers['x-sluice-reason'])}, ended ${r.ended}, rstCode ${r.rstCode}, body ${JSON.stringify(r.body.subarray(0, 80).toString('latin1'))}${r.error ? `, error ${r.error.message}` : ''}`;
}

interface Setup {
  up: FakeH2Server;
  sluice: RunningSluice;
  port: number;
  session: http2.ClientHttp2Session;
  /** A counter or gauge of cluster `up` from /stats. */
  counter(name: string): Promise<number>;
}

async function setup(t: Test, onRequest: (r: UpRequest) => void, opts: FakeOpts & { doc?: Record<string, unknown> } = {}): Promise<Setup> {
  const up = await FakeH2Server.start(onRequest, opts);
  const sluice = await startSluice({
    workers: { threads: 1 }, // one worker: its pool sees every request, connection counts are exact
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'up' }],
    clusters: [{ name: 'up', protocol: 'http2', endpoints: [`127.0.0.1:${up.port}`] }],
    ...opts.doc,
  });
  const port = sluice.port('app');
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(async () => {
    session.destroy();
    await up.close();
    await sluice.stop();
    if (up.errors.length) throw up.errors[0];
  });
  return {
    up, sluice, port, session,
    counter: async (name) => (await stats(sluice.admin)).get(`${name}{cluster="up"}`) ?? NaN,
  };
}

/** Waits until a counter reaches `value` (stats are shared memory; the wait only covers the admin round trip). */
async function counterIs(s: Setup, name: string, value: number): Promise<number> {
  let last = NaN;
  await waitFor(async () => (last = await s.counter(name)) === value, 5000, `${name} = ${value}`).catch(() => {});
  return last;
}

const OK: Field[] = [[':status', '200'], ['content-type', 'text/plain']];

// ── the cases ────────────────────────────────────────────────────────────────

t.test('malformed response headers: 502 upstream_reset, a stream error only, the connection keeps serving', async (t) => {
  const bad: Record<string, Field[]> = {
    '/upper': [[':status', '200'], ['X-Upper', 'yes']],
    '/connection': [[':status', '200'], ['connection', 'close']],
    '/nostatus': [['content-type', 'text/plain']],
    '/status2000': [[':status', '2000']],
  };
  const s = await setup(t, (r) => {
    const fields = bad[r.path];
    if (fields) { r.conn.respond(r.id, fields, true); return; }
    r.conn.respond(r.id, [...OK, ['content-length', '4']]);
    r.conn.data(r.id, 'good', true);
  });

  for (const [path, fields] of Object.entries(bad)) {
    const r = await request(s.session, path);
    t.equal(r.status, 502, `${path}: ${describe(r)}`);
    t.equal(r.headers['x-sluice-reason'], 'upstream_reset', `${path}: reason`);
    t.ok(r.ended, `${path}: the local reply ends cleanly`);
    const req = s.up.requestsTo(path)[0];
    t.ok(req, `${path}: the upstream got the request`);
    if (req) {
      const code = await s.up.until(() => req.conn.rstFromSluice(req.id) ?? false, 5000, `RST_STREAM for ${path}`).catch(() => null);
      t.equal(code, ErrorCode.PROTOCOL_ERROR, `${path} (${fields.map((f) => (Buffer.isBuffer(f) ? 'bytes' : f.join(': '))).join(', ')}): Sluice reset the upstream stream with PROTOCOL_ERROR`);
    }
  }

  const good = await request(s.session, '/good');
  t.equal(good.status, 200, describe(good));
  t.equal(good.body.toString(), 'good');
  t.ok(good.ended);
  t.equal(s.up.conns.length, 1, 'every request went over the one upstream connection: a malformed response is a stream error');
  t.equal(s.up.conns[0].goaway, null, 'no GOAWAY to the upstream');
  t.equal(s.up.requests.length, 5, 'no request was sent twice');
  t.equal(await counterIs(s, 'sluice_upstream_rq_reset_total', 4), 4, 'sluice_upstream_rq_reset_total counts the four malformed responses');
});

t.test('content-length 10 but END_STREAM after 4 bytes: the client\'s stream is reset, never ended cleanly', async (t) => {
  const s = await setup(t, (r) => {
    r.conn.respond(r.id, [...OK, ['content-length', '10']]);
    if (r.path === '/short-one-frame') {
      r.conn.data(r.id, 'abcd', true);
    } else {
      // the 4 bytes go on to the client before the short end shows
      r.conn.data(r.id, 'abcd');
      setTimeout(() => r.conn.data(r.id, '', true), 50);
    }
  });

  // the raw client sees exactly what Sluice sends (node:http2 would itself reset a short body)
  const c = await H2Client.connect(s.port);
  t.teardown(() => c.destroy());
  await c.handshake();
  for (const path of ['/short-one-frame', '/short-two-frames']) {
    const r = await c.get(path);
    t.equal(r.status, 200, `${path}: ${describeResult(r)}`);
    t.equal(r.headers.get('content-length'), '10', `${path}: the head was passed on as it came`);
    t.notOk(r.endStream, `${path}: no END_STREAM to the client`);
    t.not(r.rst, null, `${path}: the client's stream is reset (${describeResult(r)})`);
    t.notOk(r.timedOut, `${path}: the stream ended`);
  }

  const viaNode = await request(s.session, '/short-two-frames');
  t.notOk(viaNode.ended, `node:http2 does not see a clean end: ${describe(viaNode)}`);
  t.not(viaNode.rstCode, 0, 'node:http2 sees a reset');
  t.equal(s.up.conns.length, 1, 'a stream error: the upstream connection stays');
  t.equal(await counterIs(s, 'sluice_upstream_rq_reset_total', 3), 3, 'counted as upstream resets');
});

t.test('RST_STREAM(NO_ERROR) after the whole content-length is a complete response; without content-length it is a reset', async (t) => {
  const s = await setup(t, (r) => {
    const withLength = r.path === '/rst-with-length';
    r.conn.respond(r.id, withLength ? [...OK, ['content-length', '4']] : OK);
    r.conn.data(r.id, 'done');
    setTimeout(() => r.conn.rst(r.id, ErrorCode.NO_ERROR), 50);
  });

  const c = await H2Client.connect(s.port);
  t.teardown(() => c.destroy());
  await c.handshake();
  const whole = await c.get('/rst-with-length');
  t.equal(whole.status, 200, describeResult(whole));
  t.equal(whole.body, 'done');
  t.ok(whole.endStream, `content-length 4 and 4 bytes came: the client gets END_STREAM (${describeResult(whole)})`);
  t.equal(whole.rst, null, 'and no reset');

  const cut = await c.get('/rst-without-length');
  t.equal(cut.status, 200, describeResult(cut));
  t.notOk(cut.endStream, `no content-length: the end is unknown, no END_STREAM (${describeResult(cut)})`);
  t.not(cut.rst, null, 'the client\'s stream is reset');

  const a = await request(s.session, '/rst-with-length');
  t.ok(a.ended, `node:http2: a complete response (${describe(a)})`);
  t.equal(a.rstCode, 0);
  t.equal(a.body.toString(), 'done');
  const b = await request(s.session, '/rst-without-length');
  t.notOk(b.ended, `node:http2: not a clean end (${describe(b)})`);
  t.not(b.rstCode, 0, 'node:http2 sees a reset');
  t.equal(await counterIs(s, 'sluice_upstream_rq_reset_total', 2), 2, 'only the cut-off responses count as resets');
});

t.test('RST_STREAM(REFUSED_STREAM) is retried: the client gets the retry\'s 200', async (t) => {
  const s = await setup(t, (r) => {
    const attempt = r.conn.server.requestsTo(r.path).length;
    if (attempt === 1) { r.conn.rst(r.id, ErrorCode.REFUSED_STREAM); return; }
    r.conn.respond(r.id, [...OK, ['x-attempt', String(attempt)]]);
    r.conn.data(r.id, 'second try', true);
  });
  const r = await request(s.session, '/refused');
  t.equal(r.status, 200, describe(r));
  t.equal(r.headers['x-attempt'], '2');
  t.equal(r.body.toString(), 'second try');
  t.ok(r.ended);
  t.equal(s.up.requestsTo('/refused').length, 2, 'the upstream saw the request twice');
  t.equal(await counterIs(s, 'sluice_upstream_rq_reset_total', 0), 0, 'a refused stream is no reset of a response');
});

t.test('GOAWAY(last_stream_id 0) right after the request: retried on a new connection', async (t) => {
  const s = await setup(t, (r) => {
    if (r.conn.index === 0) { r.conn.send(goawayFrame(0, ErrorCode.NO_ERROR, 'going')); return; }
    r.conn.respond(r.id, OK);
    r.conn.data(r.id, `conn ${r.conn.index}`, true);
  });
  const r = await request(s.session, '/goaway');
  t.equal(r.status, 200, describe(r));
  t.equal(r.body.toString(), 'conn 1', 'answered on the second connection');
  t.ok(r.ended);
  t.equal(s.up.conns.length, 2, 'the upstream saw 2 connections');
  t.equal(s.up.requestsTo('/goaway').length, 2);
  await s.up.until(() => s.up.conns[0].closed, 5000, 'Sluice to close the connection it was sent GOAWAY on');
  t.ok(s.up.conns[0].closed, 'the first connection is closed once it has no streams');

  const again = await request(s.session, '/goaway');
  t.equal(again.status, 200, describe(again));
  t.equal(again.body.toString(), 'conn 1', 'the next request reuses the new connection');
  t.equal(s.up.conns.length, 2);
});

t.test('HPACK garbage in the response: GOAWAY COMPRESSION_ERROR upstream, 5xx to the client', async (t) => {
  const s = await setup(t, (r) => {
    if (r.conn.index === 0) { r.conn.send(headersFrame(r.id, Buffer.from([0x80]), { endStream: true })); return; }
    r.conn.respond(r.id, OK);
    r.conn.data(r.id, 'fresh', true);
  });
  const r = await request(s.session, '/garbage');
  t.ok(r.status === 502 || r.status === 503, `5xx: ${describe(r)}`);
  t.equal(r.headers['x-sluice-reason'], 'upstream_reset');
  t.ok(r.ended, 'the local reply ends cleanly');
  const conn0 = s.up.conns[0];
  await s.up.until(() => conn0.goaway, 5000, 'GOAWAY').catch(() => {});
  t.equal(conn0.goaway && errorName(conn0.goaway.code), 'COMPRESSION_ERROR', `GOAWAY COMPRESSION_ERROR: ${conn0.summary()}`);
  await s.up.until(() => conn0.closed, 5000, 'the connection to close').catch(() => {});
  t.ok(conn0.closed, 'Sluice closed the connection');

  const next = await request(s.session, '/after');
  t.equal(next.status, 200, `the next request works on a new connection: ${describe(next)}`);
  t.equal(next.body.toString(), 'fresh');
  t.equal(s.up.conns.length, 2);
});

t.test('PUSH_PROMISE from the upstream: GOAWAY PROTOCOL_ERROR, 5xx to the client', async (t) => {
  const s = await setup(t, (r) => {
    if (r.conn.index === 0) {
      const promised = Buffer.alloc(4);
      promised.writeUInt32BE(2);
      const block = hpack([[':method', 'GET'], [':scheme', 'http'], [':path', '/pushed'], [':authority', 'up']]);
      r.conn.send(frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, r.id, Buffer.concat([promised, block])));
      return;
    }
    r.conn.respond(r.id, OK);
    r.conn.data(r.id, 'fresh', true);
  });
  const r = await request(s.session, '/push');
  t.ok(r.status >= 500 && r.status <= 503, `5xx: ${describe(r)}`);
  t.equal(r.headers['x-sluice-reason'], 'upstream_reset');
  const conn0 = s.up.conns[0];
  await s.up.until(() => conn0.goaway, 5000, 'GOAWAY').catch(() => {});
  t.equal(conn0.goaway && errorName(conn0.goaway.code), 'PROTOCOL_ERROR', `GOAWAY PROTOCOL_ERROR: ${conn0.summary()}`);
  t.equal(conn0.settings.get(Setting.ENABLE_PUSH), 0, 'Sluice had said SETTINGS_ENABLE_PUSH = 0');

  const next = await request(s.session, '/after');
  t.equal(next.status, 200, `the next request works on a new connection: ${describe(next)}`);
  t.equal(s.up.conns.length, 2);
});

t.test('SETTINGS_MAX_CONCURRENT_STREAMS = 1: a second concurrent request opens a second connection', async (t) => {
  const held: UpRequest[] = [];
  const s = await setup(t, (r) => { held.push(r); }, { settings: [[Setting.MAX_CONCURRENT_STREAMS, 1]] });
  const answerAll = (): void => {
    for (const r of held.splice(0)) {
      r.conn.respond(r.id, OK);
      r.conn.data(r.id, `conn ${r.conn.index} stream ${r.id}`, true);
    }
  };
  t.teardown(answerAll);

  const a = request(s.session, '/hold-a');
  // the first request is on the upstream and Sluice has acknowledged the limit
  await s.up.until(() => s.up.requests.length >= 1 && s.up.conns[0].settingsAcks >= 1, 5000, 'request a and the SETTINGS ACK');
  const b = request(s.session, '/hold-b');
  await s.up.until(() => s.up.requests.length >= 2, 5000, 'request b at the upstream while a is held').catch((err: Error) => t.fail(err.message));
  const open = s.up.conns.map((c) => c.openStreams);
  answerAll();
  const [ra, rb] = await Promise.all([a, b]);
  t.equal(ra.status, 200, describe(ra));
  t.equal(rb.status, 200, describe(rb));
  t.equal(s.up.conns.length, 2, `two connections (streams open per connection while held: ${open.join(', ')})`);
  t.same(s.up.conns.map((c) => c.maxOpen), [1, 1], 'never more than 1 stream open on a connection');
  t.equal(ra.body.toString(), 'conn 0 stream 1');
  t.equal(rb.body.toString(), 'conn 1 stream 1');
  t.equal(await counterIs(s, 'sluice_upstream_cx_total', 2), 2, 'sluice_upstream_cx_total');
});

t.test('an upstream that never answers: 504 upstream_timeout after the route timeout, RST_STREAM(CANCEL) upstream', async (t) => {
  const s = await setup(t, () => {}, {
    doc: { routes: [{ name: 'all', match: { path: { prefix: '/' } }, action: { cluster: 'up', timeoutMs: 500 } }] },
  });
  const started = Date.now();
  const r = await request(s.session, '/silent');
  t.equal(r.status, 504, describe(r));
  t.equal(r.headers['x-sluice-reason'], 'upstream_timeout');
  t.ok(r.ended);
  t.ok(Date.now() - started >= 450, 'not before the route timeout');
  const req = s.up.requestsTo('/silent')[0];
  t.ok(req, 'the upstream got the request');
  const code = req ? await s.up.until(() => req.conn.rstFromSluice(req.id) ?? false, 5000, 'RST_STREAM').catch(() => null) : null;
  t.equal(code, ErrorCode.CANCEL, `the upstream stream was reset with CANCEL: ${s.up.summary()}`);
  t.equal(await counterIs(s, 'sluice_upstream_rq_timeout_total', 1), 1, 'sluice_upstream_rq_timeout_total');
  t.equal(s.up.conns[0].goaway, null, 'the connection stays');
});

t.test('a large response within Sluice\'s advertised windows arrives whole', async (t) => {
  // 1 MiB would fit Sluice's 1 MiB initial stream window with no WINDOW_UPDATE at all: send 3 MiB so it must grant more
  const SIZE = 3 << 20;
  const body = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i++) body[i] = (i * 31 + (i >>> 12)) & 0xff;
  let sending: Promise<void> = Promise.resolve();
  const s = await setup(t, (r) => {
    r.conn.respond(r.id, [[':status', '200'], ['content-type', 'application/octet-stream'], ['content-length', String(SIZE)]]);
    sending = r.conn.sendBody(r.id, body, true);
  });
  const r = await request(s.session, '/big', { timeoutMs: 30_000 });
  const sent = await sending.then(() => null, (err: Error) => err);
  t.equal(sent, null, 'the upstream could send everything within the windows Sluice granted');
  t.equal(r.status, 200, describe(r));
  t.ok(r.ended);
  t.equal(r.body.length, SIZE, 'every byte arrived');
  t.ok(r.body.equals(body), 'in order and unchanged');
  const conn = s.up.conns[0];
  t.equal(conn.overSent, 0, 'the upstream never sent beyond a window');
  const initial = conn.settings.get(Setting.INITIAL_WINDOW_SIZE) ?? DEFAULT_WINDOW;
  const st = conn.streams.get(s.up.requests[0].id)!;
  t.ok(initial + st.windowUpdates >= SIZE, `stream window granted (${initial} + ${st.windowUpdates}) covers the body`);
  t.ok(DEFAULT_WINDOW + conn.connWindowUpdates >= SIZE, `connection window granted (${DEFAULT_WINDOW} + ${conn.connWindowUpdates}) covers the body`);
  t.equal(conn.goaway, null, 'no GOAWAY');
  t.equal(st.rstReceived, null, 'no RST_STREAM');
});

// ── more unusual upstreams ───────────────────────────────────────────────────

t.test('HEAD: content-length without DATA is a complete response, not a short body', async (t) => {
  const s = await setup(t, (r) => {
    const method = r.fields.find(([n]) => n === ':method')?.[1];
    if (method !== 'HEAD') { r.conn.respond(r.id, [...OK, ['content-length', '4']]); r.conn.data(r.id, 'body', true); return; }
    if (r.path === '/head-refused') { r.conn.rst(r.id, ErrorCode.REFUSED_STREAM); return; }
    if (r.path === '/head-end-in-headers') {
      // what Node's HTTP/2 server does: the head says the GET body's length, END_STREAM on HEADERS
      r.conn.respond(r.id, [...OK, ['content-length', '1234']], true);
    } else {
      r.conn.respond(r.id, [...OK, ['content-length', '1234']]);
      r.conn.data(r.id, '', true);
    }
  });
  for (const path of ['/head-end-in-headers', '/head-empty-data']) {
    const r = await request(s.session, path, { method: 'HEAD' });
    t.equal(r.status, 200, `${path}: ${describe(r)}`);
    t.equal(r.headers['content-length'], '1234', `${path}: the GET body's length passed on`);
    t.ok(r.ended, `${path}: ended cleanly`);
    t.equal(r.body.length, 0, `${path}: no body`);
  }
  const get = await request(s.session, '/head-end-in-headers');
  t.equal(get.status, 200, `GET still works: ${describe(get)}`);
  t.equal(await counterIs(s, 'sluice_upstream_rq_reset_total', 0), 0, 'no upstream resets');

  // Sluice's own reply to a HEAD (here: the upstream refused it every time) has no body either
  const local = await request(s.session, '/head-refused', { method: 'HEAD' });
  t.equal(local.status, 503, `local reply to HEAD: ${describe(local)}`);
  t.equal(local.headers['x-sluice-reason'], 'upstream_reset');
  t.ok(local.ended, 'ended cleanly: no DATA on a HEAD response');
  t.equal(local.rstCode, 0);
});

t.test('an upstream that refuses every attempt: retried a bounded number of times, then 503 upstream_reset', async (t) => {
  const s = await setup(t, (r) => r.conn.rst(r.id, ErrorCode.REFUSED_STREAM));
  const r = await request(s.session, '/always-refused');
  t.equal(r.status, 503, describe(r));
  t.equal(r.headers['x-sluice-reason'], 'upstream_reset');
  t.ok(r.ended);
  t.equal(s.up.requestsTo('/always-refused').length, 3, 'three tries in all (MAX_ATTEMPTS), not one more');
  t.equal(s.up.conns.length, 1, 'the connection is healthy: the retries reuse it');
});

t.test('GOAWAY(last_stream_id 1) with streams 1 and 3 open: 1 finishes on the old connection, 3 is retried on a new one', async (t) => {
  const held: UpRequest[] = [];
  const s = await setup(t, (r) => {
    if (r.conn.index > 0) { r.conn.respond(r.id, OK); r.conn.data(r.id, `conn ${r.conn.index} stream ${r.id}`, true); return; }
    held.push(r);
  });
  const a = request(s.session, '/first');
  await s.up.until(() => held.length === 1, 5000, 'request 1');
  const b = request(s.session, '/second');
  await s.up.until(() => held.length === 2, 5000, 'request 2 on the same connection');
  t.same(held.map((r) => r.id), [1, 3], 'streams 1 and 3 of connection 0');
  const conn0 = s.up.conns[0];
  conn0.send(goawayFrame(1, ErrorCode.NO_ERROR, 'graceful'));
  // stream 3 was never processed: Sluice retries it elsewhere while stream 1 is still open here
  await s.up.until(() => s.up.requestsTo('/second').length === 2, 5000, 'the retry of stream 3');
  t.notOk(conn0.closed, 'the old connection stays while stream 1 is open');
  conn0.respond(1, OK);
  conn0.data(1, 'conn 0 stream 1', true);
  const [ra, rb] = await Promise.all([a, b]);
  t.equal(ra.status, 200, describe(ra));
  t.equal(ra.body.toString(), 'conn 0 stream 1', 'stream 1 completed on the connection that sent GOAWAY');
  t.equal(rb.status, 200, describe(rb));
  t.equal(rb.body.toString(), 'conn 1 stream 1', 'stream 3 retried on a new connection');
  await s.up.until(() => conn0.closed, 5000, 'Sluice to close the old connection once stream 1 ended').catch(() => {});
  t.ok(conn0.closed, 'the old connection is closed once it has no streams');
  t.equal(s.up.conns.length, 2);
});

t.test('SETTINGS_HEADER_TABLE_SIZE 0: request headers carry a table size update and stay decodable', async (t) => {
  const s = await setup(t, (r) => {
    r.conn.respond(r.id, OK);
    r.conn.data(r.id, r.fields.filter(([n]) => n === 'x-repeated').map(([, v]) => v).join(','), true);
  }, { settings: [[Setting.MAX_CONCURRENT_STREAMS, 100], [Setting.HEADER_TABLE_SIZE, 0]] });
  for (let i = 0; i < 4; i++) {
    const r = await request(s.session, '/table', { headers: { 'x-repeated': 'the same value every time', 'x-other': `n${i}` } });
    t.equal(r.status, 200, describe(r));
    t.equal(r.body.toString(), 'the same value every time', `request ${i}: the upstream decoded the field`);
  }
  const conn = s.up.conns[0];
  t.equal(conn.hpackError, null, 'every block decoded');
  const firstAfterAck = conn.blocks.find((b) => b.afterAck);
  t.ok(firstAfterAck, 'a block after Sluice acknowledged our SETTINGS');
  // RFC 7541 4.2: a dynamic table size update (001xxxxx) to 0 starts the first block after the change
  // (after it the decoder's table is 0 bytes: a reference to a dynamic entry would fail to decode)
  t.equal(firstAfterAck?.first, 0x20, 'it starts with a size update to 0');
});

t.test('request body and large headers toward an upstream with a zero initial window and 16 KiB frames', async (t) => {
  const bodies = new Map<string, Buffer>();
  const s = await setup(t, () => {}, {
    settings: [[Setting.MAX_CONCURRENT_STREAMS, 100], [Setting.INITIAL_WINDOW_SIZE, 0]],
    autoGrant: 4096,
    onBody: (r, body) => {
      bodies.set(r.path, body);
      const big = r.fields.find(([n]) => n === 'x-big')?.[1] ?? '';
      r.conn.respond(r.id, OK);
      r.conn.data(r.id, `${body.length} ${big.length}`, true);
    },
  });
  const SIZE = 300_000;
  const body = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i++) body[i] = (i * 7 + (i >>> 8)) & 0xff;
  const chunks = [body.subarray(0, 100_000), body.subarray(100_000, 250_000), body.subarray(250_000)];
  const big = 'v'.repeat(30_000);
  const r = await request(s.session, '/upload', { method: 'POST', headers: { 'content-length': String(SIZE), 'x-big': big }, body: chunks, timeoutMs: 20_000 });
  t.equal(r.status, 200, describe(r));
  t.equal(r.body.toString(), `${SIZE} ${big.length}`, 'the upstream got the whole body and the 30 KB header');
  t.ok(bodies.get('/upload')?.equals(body), 'the body arrived unchanged');
  const conn = s.up.conns[0];
  t.equal(conn.overReceived, 0, 'Sluice never sent DATA beyond a window the upstream granted');
  t.equal(conn.oversize, 0, 'no frame longer than SETTINGS_MAX_FRAME_SIZE (the 30 KB header went in CONTINUATION frames)');
  t.ok(conn.frames.some((f) => f.type === FrameType.CONTINUATION), 'CONTINUATION used');

  // no content-length: the same body, ended by END_STREAM
  const r2 = await request(s.session, '/upload-chunked', { method: 'POST', body: chunks, timeoutMs: 20_000 });
  t.equal(r2.status, 200, describe(r2));
  t.ok(bodies.get('/upload-chunked')?.equals(body), 'the body arrived unchanged');
  t.equal(conn.overReceived, 0);
});

t.test('the upstream connection closes before or during a response', async (t) => {
  const s = await setup(t, (r) => {
    if (r.path === '/reset-before') { r.conn.socket.resetAndDestroy(); return; }
    if (r.path === '/close-during') {
      r.conn.respond(r.id, [...OK, ['content-length', '100']]);
      r.conn.data(r.id, 'partial');
      r.conn.socket.end();
      return;
    }
    r.conn.respond(r.id, OK);
    r.conn.data(r.id, `conn ${r.conn.index}`, true);
  });
  const before = await request(s.session, '/reset-before');
  t.equal(before.status, 503, describe(before));
  t.equal(before.headers['x-sluice-reason'], 'upstream_reset');
  const ok1 = await request(s.session, '/ok');
  t.equal(ok1.status, 200, `a new connection after the reset: ${describe(ok1)}`);
  t.equal(ok1.body.toString(), 'conn 1');

  const during = await request(s.session, '/close-during');
  t.equal(during.status, 200, describe(during));
  t.notOk(during.ended, `cut off: not a clean end (${describe(during)})`);
  t.not(during.rstCode, 0, 'the client\'s stream is reset');
  const ok2 = await request(s.session, '/ok');
  t.equal(ok2.status, 200, describe(ok2));
  t.equal(ok2.body.toString(), 'conn 2');
  t.equal(await counterIs(s, 'sluice_upstream_rq_reset_total', 2), 2);
});

t.test('response head over HEADERS + CONTINUATION, a 1xx first, and trailers', async (t) => {
  const s = await setup(t, (r) => {
    r.conn.respond(r.id, [[':status', '103'], ['link', '</x.css>; rel=preload']]);
    const block = hpack([[':status', '200'], ['content-type', 'text/plain'], ['x-long', 'l'.repeat(3000)]]);
    r.conn.send(headersFrame(r.id, block.subarray(0, 10), { endHeaders: false }), continuationFrame(r.id, block.subarray(10, 1000), false),
      continuationFrame(r.id, block.subarray(1000), true));
    r.conn.data(r.id, 'body');
    r.conn.respond(r.id, [['x-checksum', 'abc']], true);
  });
  const r = await request(s.session, '/split');
  t.equal(r.status, 200, describe(r));
  t.equal(r.headers['x-long'], 'l'.repeat(3000));
  t.equal(r.body.toString(), 'body');
  t.ok(r.ended);
  t.equal(r.trailers?.['x-checksum'], 'abc', 'trailers passed on');
});

t.test('a burst before the upstream\'s SETTINGS(MAX_CONCURRENT_STREAMS 1): streams refused over the limit are retried', async (t) => {
  const held: UpRequest[] = [];
  const s = await setup(t, (r) => {
    // a strict server: streams over its limit are refused, the rest held until three are in
    if (r.conn.openStreams > 1) { r.conn.rst(r.id, ErrorCode.REFUSED_STREAM); return; }
    held.push(r);
    if (held.length === 3) for (const h of held.splice(0)) { h.conn.respond(h.id, OK); h.conn.data(h.id, h.path, true); }
  }, { settings: [[Setting.MAX_CONCURRENT_STREAMS, 1]] });
  t.teardown(() => { for (const h of held.splice(0)) { h.conn.respond(h.id, OK); h.conn.data(h.id, h.path, true); } });
  const rs = await Promise.all(['/b1', '/b2', '/b3'].map((p) => request(s.session, p)));
  rs.forEach((r, i) => {
    t.equal(r.status, 200, `/b${i + 1}: ${describe(r)}`);
    t.equal(r.body.toString(), `/b${i + 1}`);
  });
  t.ok(s.up.conns.length >= 2 && s.up.conns.length <= 3, `one connection per concurrent stream once the limit is known (${s.up.conns.length})`);
});

t.test('a client that stops reading holds the upstream to one stream window, and resets leak no connection window', async (t) => {
  const s = await setup(t, (r) => {
    r.conn.respond(r.id, [[':status', '200'], ['content-type', 'application/octet-stream']]);
    r.conn.sendBody(r.id, Buffer.alloc(2 << 20, 0x61), true).catch(() => {});
  });
  const c = await H2Client.connect(s.port);
  t.teardown(() => c.destroy());
  await c.handshake(); // and never a WINDOW_UPDATE: this client reads nothing beyond its first 64 KiB
  const ROUNDS = 20; // 20 × 1 MiB in flight and dropped: more than the 16 MiB connection window
  let stalled = 0;
  let granted = 0;
  let initial = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const id = c.request([[':method', 'GET'], [':scheme', 'http'], [':path', `/r${i}`], [':authority', 'x']]);
    const req = await s.up.until(() => s.up.requestsTo(`/r${i}`)[0], 5000, `request ${i}`);
    const st = req.conn.stream(req.id);
    const ok = await s.up.until(() => st.sendWindow <= 0, 5000, `round ${i}: the stream window to be used up`).then(() => true, (err: Error) => {
      t.fail(`${err.message} (connection window ${req.conn.connWindow})`);
      return false;
    });
    if (!ok) break;
    stalled++;
    granted = Math.max(granted, st.windowUpdates);
    initial = req.conn.settings.get(Setting.INITIAL_WINDOW_SIZE) ?? DEFAULT_WINDOW;
    c.send(rstStreamFrame(id, ErrorCode.CANCEL));
    await s.up.until(() => st.rstReceived !== null, 5000, `round ${i}: RST_STREAM upstream`).catch(() => {});
    t.equal(st.rstReceived, ErrorCode.CANCEL, `round ${i}: the client's reset went upstream as CANCEL`);
  }
  t.equal(stalled, ROUNDS, 'every round could use a whole stream window');
  // Sluice may give back what the client took (its first 64 KiB), never more: the rest waits in one stream window
  t.ok(granted <= DEFAULT_WINDOW, `stream window granted beyond the initial ${initial}: ${granted} (at most the client's 64 KiB)`);
  t.equal(s.up.conns.length, 1, 'all on one upstream connection');
});
