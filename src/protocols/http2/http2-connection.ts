/**
 * One HTTP/2 connection (RFC 9113), either end: frames in, frames out, stream
 * states, flow control both ways, and every check the RFC asks of a receiver.
 * It owns no socket: the host gives it bytes (`receive`) and a `write`
 * function, and tells it when the socket drains. Frames produced while one
 * batch of input is handled go out in one write.
 *
 *   socket ─▶ receive() ─▶ frame loop ─▶ HPACK ─▶ checks ─▶ host.onStream / stream.handler
 *   socket ◀─ write()  ◀── flush (once per tick) ◀── respond/request/writeData/writeTrailers
 *
 * Receive windows are given back as the stream's owner consumes data
 * (`consumed`), so a slow reader holds the peer to one window per stream:
 * that is the backpressure of a proxied body. Send windows queue data per
 * stream until WINDOW_UPDATE opens them.
 *
 * Peer misbehaviour is answered, never thrown: a stream error resets that
 * stream, a connection error sends GOAWAY and ends the connection. Every frame
 * a peer can send in a loop without asking for real work is bounded, and past
 * the bound the connection ends with GOAWAY ENHANCE_YOUR_CALM:
 *
 *   flood                                        bound (per connection)
 *   HEADERS + CONTINUATION (CVE-2024-27316 kin)  512 frames and maxHeaderListSize + 1 KiB
 *                                                (+ 9 octets a frame) per header block
 *   empty DATA/HEADERS/CONTINUATION (9518)       10 in a row that carry and end nothing
 *   PRIORITY (9513)                              100 per stream opened, +100
 *   WINDOW_UPDATE, tiny or zero (9511)           5 + 2 × (streams opened + 10 × DATA frames sent)
 *   SETTINGS (9515, CVE-2020-11080)              32 entries a frame; 100 frames + 1 per stream opened
 *   streams reset or refused (44487, 9514)       200 more than the streams that ended cleanly
 *   replies not read: PING/SETTINGS ACK,         1000 queued while the socket does not drain
 *     RST_STREAM (9512, 9515, 9514)
 *   any frames not read (9517)                   10000 queued while the socket does not drain
 *
 * The ratios are Envoy's (max_inbound_priority_frames_per_stream,
 * max_inbound_window_update_frames_per_data_frame_sent, max_outbound_frames,
 * max_outbound_control_frames); the CONTINUATION count is the one Envoy gives
 * nghttp2. None needs a clock.
 */
import { HpackDecoder, HpackEncoder, HpackError } from './hpack';
import {
  DEFAULT_MAX_FRAME, DEFAULT_WINDOW, FRAME_HEADER, Flag, FrameType, H2Error, MAX_FRAME_LIMIT, MAX_WINDOW, PREFACE, SETTINGS_ACK,
  Setting, frameHeader, goawayFrame, headersFrames, pingAck, rstStreamFrame, settingsFrame, windowUpdateFrame,
} from './frames';
import { checkRequest, checkResponse, checkTrailers, type RequestHead } from './fields';

export interface Http2StreamHandler {
  /** Client: the final response head (1xx are skipped). */
  onResponse(s: Http2Stream, fields: string[], status: number, endStream: boolean): void;
  /** A body chunk (possibly empty when only END_STREAM came). Give the window back with `consumed`. */
  onData(s: Http2Stream, data: Buffer, endStream: boolean): void;
  /** Trailers: the end of the peer's side. */
  onTrailers(s: Http2Stream, fields: string[]): void;
  /**
   * The stream ended abnormally: reset by the peer (`remote`), by a check of
   * ours, or with its connection. After this, nothing more comes.
   */
  onReset(s: Http2Stream, code: number, remote: boolean): void;
  /** The stream can take more data after a write returned false. */
  onWritable(s: Http2Stream): void;
  /** Both sides ended cleanly; the stream is gone. */
  onClose(s: Http2Stream): void;
}

export interface Http2ConnectionHost {
  /** Bytes for the socket. Returns false when the socket's buffer is full: call `onDrain` on 'drain'. */
  write(data: Buffer): boolean;
  /** The same for a list, in one writev (large batches: copying them into one buffer costs more). */
  writeMany(data: Buffer[]): boolean;
  /** Server: a new, well-formed request. Set `s.handler` before returning. */
  onStream(s: Http2Stream): void;
  /** Nothing more will be written: close the socket once `write`'s data is out. */
  onEnd(code: number, reason: string): void;
  /** The peer sent GOAWAY. */
  onGoaway(lastStreamId: number, code: number): void;
  /** The number of open streams fell to zero. */
  onIdle(): void;
  /** The peer broke the protocol: a stream was reset (`stream`) or the connection is ending, with this code. */
  onProtocolError(code: number, reason: string, stream: boolean): void;
}

export interface Http2Options {
  /** Concurrent streams the peer may open (server), advertised. */
  maxConcurrentStreams: number;
  /** Stream receive window, advertised as SETTINGS_INITIAL_WINDOW_SIZE. */
  initialWindow: number;
  /** Connection receive window. */
  connectionWindow: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE, and the limit of a header block. */
  maxHeaderListSize: number;
  /** Most fields in one header section. */
  maxHeaderCount: number;
}

/**
 * The connection receive window Sluice advertises. Memory is bounded by the stream windows
 * (each stream holds at most one window of data its other side has not taken); the connection
 * window is set high so that streams whose readers stall cannot use it up and freeze the other
 * streams of a shared connection.
 */
export const CONNECTION_WINDOW = 1 << 30;

/**
 * Replies to the peer's frames (SETTINGS ACK, PING ACK, RST_STREAM) that may pile up while the
 * socket does not drain; beyond that the peer is sending them without reading ours.
 */
const MAX_CONTROL_WHILE_FULL = 1000;
/**
 * Frames of any kind queued while the socket does not drain. Data waits for its stream's
 * writer (one chunk per stream at most), so only a peer that keeps asking without reading
 * (requests whose responses it never takes) gets near this.
 */
const MAX_OUTBOUND_WHILE_FULL = 10_000;
/**
 * Frames one header block may take (HEADERS and its CONTINUATIONs). Senders fill frames up to
 * SETTINGS_MAX_FRAME_SIZE, so the largest header list Sluice can be configured for (1 MiB) takes
 * 65 of 16 KiB; 512 is what Envoy allows nghttp2, and lets a 60 KiB list come in 128-octet pieces.
 */
const MAX_HEADER_BLOCK_FRAMES = 512;
/**
 * Payload a header block may have beyond SETTINGS_MAX_HEADER_LIST_SIZE: HPACK encodes a field in
 * fewer octets than the 32 the list size adds for it, but for padding and table size updates.
 */
const HEADER_BLOCK_SLACK = 1024;
/** Frames in a row that carry nothing and end nothing (Envoy allows 1; a careless writer may send a few). */
const MAX_EMPTY_FRAMES = 10;
/** PRIORITY frames allowed per stream opened (and for the connection itself). */
const PRIORITY_PER_STREAM = 100;
/** WINDOW_UPDATE frames allowed per DATA frame sent. */
const WINDOW_UPDATES_PER_DATA = 10;
/** SETTINGS frames (ACKs included) allowed beyond one per stream opened. */
const SETTINGS_ALLOWANCE = 100;
/** Entries in one SETTINGS frame (nghttp2's default since CVE-2020-11080; a peer needs 7 at most). */
const MAX_SETTINGS_ENTRIES = 32;
/** Data buffered for the socket above which writes report backpressure. */
const SOCKET_HIGH_WATER = 256 * 1024;
/** Streams a peer may reset before their end beyond those it lets finish (rapid reset). */
const RESET_ALLOWANCE = 200;
/** Recently reset stream ids remembered, whose late frames are dropped quietly. */
const RECENT_RESETS = 64;

const EMPTY = Buffer.alloc(0);
const NO_HANDLER: Http2StreamHandler = {
  onResponse() {}, onData() {}, onTrailers() {}, onReset() {}, onWritable() {}, onClose() {},
};

/** Writes a list to a socket in one writev. */
export function writeAll(socket: { cork(): void; uncork(): void; write(b: Buffer): boolean }, data: Buffer[]): boolean {
  socket.cork();
  let ok = true;
  for (let i = 0; i < data.length; i++) ok = socket.write(data[i]);
  socket.uncork();
  return ok;
}

export class Http2Stream implements RequestHead {
  handler: Http2StreamHandler = NO_HANDLER;
  /** The owner's object (the proxy exchange). */
  ctx: unknown = null;
  // request head (server side) — see RequestHead
  method = '';
  scheme = '';
  path = '';
  authority = '';
  contentLength = -1;
  contentType = '';
  te = '';
  /** Request fields (server) or response fields (client). */
  fields: string[] = [];
  status = 0;
  /** Client: a response to HEAD has no body whatever content-length says. */
  noBody = false;

  remoteEnded = false;
  localEnded = false;
  /** Headers sent (response or request). */
  headersSent = false;
  gotHeaders = false;
  closed = false;
  sendWindow: number;
  recvWindow: number;
  /** Bytes consumed but not yet given back to the peer. */
  recvUnacked = 0;
  received = 0;
  /** Data waiting for send window. */
  pending: Buffer[] | null = null;
  pendingBytes = 0;
  pendingEnd = false;
  pendingTrailers: string[] | null = null;
  /** The owner asked to hear when the stream is writable again. */
  wantWritable = false;
  /** Reset with NO_ERROR once our end is sent, if the peer has not ended (a reply that does not need the rest of the request). */
  stopAfterEnd = false;

  constructor(readonly id: number, readonly conn: Http2Connection, sendWindow: number, recvWindow: number) {
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }

  header(name: string): string | undefined {
    const f = this.fields;
    let out: string | undefined;
    for (let i = 0; i < f.length; i += 2) {
      if (f[i] === name) out = out === undefined ? f[i + 1] : `${out}${name === 'cookie' ? '; ' : ', '}${f[i + 1]}`;
    }
    return out;
  }

  headerValues(name: string): string[] {
    const f = this.fields;
    const out: string[] = [];
    for (let i = 0; i < f.length; i += 2) if (f[i] === name) out.push(f[i + 1]);
    return out;
  }
}

export class Http2Connection {
  readonly streams = new Map<number, Http2Stream>();
  /** Open streams. */
  active = 0;
  /** Highest stream id the peer opened (server) / we opened (client). */
  lastPeerStream = 0;
  private nextId = 1;
  /** GOAWAY was sent or received: no new streams. */
  goingAway = false;
  /** The first GOAWAY of a graceful drain was sent; streams are still taken until the final one. */
  drainNotified = false;
  /** performance.now() when `active` last fell to 0. */
  idleSince = performance.now();
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS. */
  peerMaxStreams = 100;
  closed = false;
  /** The peer's first SETTINGS arrived. */
  settled = false;
  /**
   * Server: since when (performance.now()) a header block, or the preface and first SETTINGS,
   * has been arriving without being complete; 0 when nothing is pending. For http.headerTimeoutMs.
   */
  headersPendingSince = 0;

  private readonly decoder: HpackDecoder;
  private readonly encoder = new HpackEncoder();
  private buf: Buffer = EMPTY;
  private prefaceLeft: number;
  private firstFrame = true;
  // header block being assembled (HEADERS + CONTINUATION)
  private hbStream = 0;
  private hbChunks: Buffer[] = [];
  /** Field block octets of the block so far. */
  private hbLength = 0;
  /** Frames of the block so far, and their octets, frame headers and padding included. */
  private hbFrames = 0;
  private hbBytes = 0;
  private readonly hbBudget: number;
  private hbEndStream = false;
  /** The HEADERS frame of the block gave the stream a dependency on itself (a stream error, after decoding). */
  private hbSelfDependent = false;
  // flow control
  private sendWindow = DEFAULT_WINDOW;
  private recvWindow = DEFAULT_WINDOW;
  private recvUnacked = 0;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_MAX_FRAME;
  /** Streams with data waiting for send window, in order. */
  private readonly blocked = new Set<Http2Stream>();
  /** Streams waiting for the socket to drain. */
  private readonly waiting = new Set<Http2Stream>();
  private socketFull = false;
  private controlWhileFull = 0;
  private outWhileFull = 0;
  // flood accounting (see the table at the top)
  /** Streams opened on this connection, by either side. */
  private opened = 0;
  private dataFramesSent = 0;
  private emptyRun = 0;
  private priorityFrames = 0;
  private windowUpdates = 0;
  private settingsFrames = 0;
  // output batching
  private out: Buffer[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  private readonly flushBound = (): void => this.flush();
  private resetAllowance = RESET_ALLOWANCE;
  /** Consumed bytes after which the connection window is topped up. */
  private readonly connUpdateAt: number;
  /** Streams opened by the read being parsed, not yet given to the host. */
  private undispatched: Http2Stream[] = [];
  private readonly recentResets: number[] = [];

  constructor(readonly isServer: boolean, private readonly host: Http2ConnectionHost, private readonly opts: Http2Options) {
    this.decoder = new HpackDecoder(4096, opts.maxHeaderListSize);
    this.connUpdateAt = Math.min(opts.connectionWindow >>> 1, 4 << 20);
    this.hbBudget = opts.maxHeaderListSize + HEADER_BLOCK_SLACK + FRAME_HEADER * MAX_HEADER_BLOCK_FRAMES;
    this.prefaceLeft = isServer ? PREFACE.length : 0;
    if (isServer) this.headersPendingSince = performance.now();
    const settings: Array<[number, number]> = [
      [Setting.INITIAL_WINDOW_SIZE, opts.initialWindow],
      [Setting.MAX_HEADER_LIST_SIZE, opts.maxHeaderListSize],
    ];
    if (isServer) settings.unshift([Setting.MAX_CONCURRENT_STREAMS, opts.maxConcurrentStreams]);
    else settings.unshift([Setting.ENABLE_PUSH, 0], [Setting.MAX_CONCURRENT_STREAMS, 0]);
    if (!isServer) this.queue(PREFACE);
    this.queue(settingsFrame(settings));
    if (opts.connectionWindow > DEFAULT_WINDOW) {
      this.queue(windowUpdateFrame(0, opts.connectionWindow - DEFAULT_WINDOW));
      this.recvWindow = opts.connectionWindow;
    }
  }

  // ── output ───────────────────────────────────────────────────────────────

  /** Queues `frames` frames (0 for the payload of a DATA frame whose header was queued apart). */
  private queue(b: Buffer, frames = 1): void {
    // after the end (GOAWAY already written), handlers of the streams being reset may still answer: dropped
    if (this.closed) return;
    if (this.socketFull && frames > 0 && (this.outWhileFull += frames) > MAX_OUTBOUND_WHILE_FULL) {
      this.fail(H2Error.ENHANCE_YOUR_CALM, 'frames not read');
      return;
    }
    this.push(b);
  }

  private push(b: Buffer): void {
    this.out.push(b);
    this.outBytes += b.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flushBound);
    }
  }

  /** Writes what is queued now (normally done once per tick). */
  flush(): void {
    this.flushScheduled = false;
    const out = this.out;
    if (out.length === 0) return;
    this.out = [];
    const n = this.outBytes;
    this.outBytes = 0;
    const ok = out.length === 1 ? this.host.write(out[0])
      : n > 65536 ? this.host.writeMany(out) : this.host.write(Buffer.concat(out, n));
    if (!ok) this.socketFull = true;
    // streams told to wait because this batch was large: the socket took it, no 'drain' will come
    else if (this.waiting.size > 0) this.onDrain();
  }

  /** The socket drained: streams that were told to wait may write again. */
  onDrain(): void {
    this.socketFull = false;
    this.controlWhileFull = 0;
    this.outWhileFull = 0;
    if (this.waiting.size === 0) return;
    const list = [...this.waiting];
    this.waiting.clear();
    for (const s of list) {
      if (!s.closed && s.wantWritable && s.pendingBytes === 0) { s.wantWritable = false; s.handler.onWritable(s); }
    }
  }

  // ── input ────────────────────────────────────────────────────────────────

  receive(chunk: Buffer): void {
    if (this.closed) return;
    let buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let off = 0;
    if (this.prefaceLeft > 0) {
      const start = PREFACE.length - this.prefaceLeft;
      const n = Math.min(this.prefaceLeft, buf.length);
      if (buf.compare(PREFACE, start, start + n, 0, n) !== 0) { this.fail(H2Error.PROTOCOL_ERROR, 'invalid connection preface'); return; }
      this.prefaceLeft -= n;
      off = n;
      if (this.prefaceLeft > 0) { this.buf = EMPTY; return; }
    }
    const maxFrame = DEFAULT_MAX_FRAME;
    while (buf.length - off >= FRAME_HEADER) {
      const length = (buf[off] << 16) | (buf[off + 1] << 8) | buf[off + 2];
      if (length > maxFrame) { this.fail(H2Error.FRAME_SIZE_ERROR, 'frame larger than SETTINGS_MAX_FRAME_SIZE'); return; }
      if (buf.length - off < FRAME_HEADER + length) break;
      const type = buf[off + 3];
      const flags = buf[off + 4];
      const id = buf.readUInt32BE(off + 5) & 0x7fffffff;
      const payload = buf.subarray(off + FRAME_HEADER, off + FRAME_HEADER + length);
      off += FRAME_HEADER + length;
      this.frame(type, flags, id, payload);
      if (this.closed) return;
    }
    this.dispatch();
    if (off === buf.length) this.buf = EMPTY;
    else {
      buf = buf.subarray(off);
      // a small remainder is copied so the big chunk it came from can be freed
      this.buf = buf.length < 1024 ? Buffer.from(buf) : buf;
    }
  }

  private frame(type: number, flags: number, id: number, p: Buffer): void {
    if (this.firstFrame) {
      this.firstFrame = false;
      if (type !== FrameType.SETTINGS || (flags & Flag.ACK) !== 0) { this.fail(H2Error.PROTOCOL_ERROR, 'first frame is not SETTINGS'); return; }
    }
    if (this.hbStream !== 0 && (type !== FrameType.CONTINUATION || id !== this.hbStream)) {
      this.fail(H2Error.PROTOCOL_ERROR, 'header block interrupted'); return;
    }
    switch (type) {
      case FrameType.DATA: this.onDataFrame(flags, id, p); break;
      case FrameType.HEADERS: this.onHeadersFrame(flags, id, p); break;
      case FrameType.PRIORITY: this.onPriority(id, p); break;
      case FrameType.RST_STREAM: this.onRstStream(id, p); break;
      case FrameType.SETTINGS: this.onSettings(flags, id, p); break;
      case FrameType.PUSH_PROMISE: this.fail(H2Error.PROTOCOL_ERROR, 'PUSH_PROMISE not allowed'); break;
      case FrameType.PING: this.onPing(flags, id, p); break;
      case FrameType.GOAWAY: this.onGoaway(id, p); break;
      case FrameType.WINDOW_UPDATE: this.onWindowUpdate(id, p); break;
      case FrameType.CONTINUATION: this.onContinuation(flags, id, p); break;
      default: // unknown frame types are ignored (RFC 9113 4.1)
    }
  }

  /** True for a stream id the peer could not have used yet. */
  private isIdle(id: number): boolean {
    // clients open odd ids; Sluice never pushes, so even ids are never used
    if ((id & 1) === 0) return true;
    return this.isServer ? id > this.lastPeerStream : id >= this.nextId;
  }

  private onDataFrame(flags: number, id: number, p: Buffer): void {
    if (id === 0) { this.fail(H2Error.PROTOCOL_ERROR, 'DATA on stream 0'); return; }
    let data = p;
    if (flags & Flag.PADDED) {
      if (p.length < 1 || p[0] >= p.length) { this.fail(H2Error.PROTOCOL_ERROR, 'invalid padding'); return; }
      data = p.subarray(1, p.length - p[0]);
    }
    const end = (flags & Flag.END_STREAM) !== 0;
    if (!this.emptyFrame(data.length === 0 && !end)) return;
    // the whole frame counts against the connection window, padding included
    this.recvWindow -= p.length;
    if (this.recvWindow < 0) { this.fail(H2Error.FLOW_CONTROL_ERROR, 'connection window exceeded'); return; }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.isIdle(id)) { this.fail(H2Error.PROTOCOL_ERROR, 'DATA on idle stream'); return; }
      this.giveBack(null, p.length);
      if (!this.recentResets.includes(id)) this.rst(id, H2Error.STREAM_CLOSED, true);
      return;
    }
    if (s.remoteEnded || !s.gotHeaders) {
      this.giveBack(null, p.length);
      this.streamError(s, s.remoteEnded ? H2Error.STREAM_CLOSED : H2Error.PROTOCOL_ERROR);
      return;
    }
    s.recvWindow -= p.length;
    if (s.recvWindow < 0) { this.giveBack(null, p.length); this.streamError(s, H2Error.FLOW_CONTROL_ERROR); return; }
    // padding is consumed at once
    if (p.length !== data.length) this.giveBack(s, p.length - data.length);
    s.received += data.length;
    if (s.contentLength >= 0 && !s.noBody && (s.received > s.contentLength || (end && s.received !== s.contentLength))) {
      this.giveBack(null, data.length);
      this.streamError(s, H2Error.PROTOCOL_ERROR);
      return;
    }
    // nothing to pass on (padding only, or an empty frame): the owner hears of data, not of frames
    if (data.length === 0 && !end) return;
    if (s.handler === NO_HANDLER) this.dispatch();
    if (end) s.remoteEnded = true;
    s.handler.onData(s, data, end);
    if (end) this.maybeClose(s);
  }

  private onHeadersFrame(flags: number, id: number, p: Buffer): void {
    if (id === 0) { this.fail(H2Error.PROTOCOL_ERROR, 'HEADERS on stream 0'); return; }
    let start = 0;
    let end = p.length;
    if (flags & Flag.PADDED) {
      if (p.length < 1) { this.fail(H2Error.FRAME_SIZE_ERROR, 'HEADERS too short'); return; }
      const pad = p[0];
      start = 1;
      end = p.length - pad;
    }
    if (flags & Flag.PRIORITY) start += 5;
    if (end < start) { this.fail(H2Error.PROTOCOL_ERROR, 'invalid padding'); return; }
    if ((flags & Flag.PRIORITY) && (p.readUInt32BE(start - 5) & 0x7fffffff) === id) {
      // a stream depending on itself: a stream error, but the block must still be decoded
      this.hbSelfDependent = true;
    }
    const fragment = p.subarray(start, end);
    const endHeaders = (flags & Flag.END_HEADERS) !== 0;
    if (!this.emptyFrame(fragment.length === 0 && !endHeaders)) return;
    this.hbEndStream = (flags & Flag.END_STREAM) !== 0;
    if (endHeaders) { this.headerBlock(id, fragment); return; }
    this.hbStream = id;
    this.hbChunks = fragment.length > 0 ? [Buffer.from(fragment)] : [];
    this.hbLength = fragment.length;
    this.hbFrames = 1;
    this.hbBytes = FRAME_HEADER + p.length;
    if (this.isServer) this.headersPendingSince = performance.now();
  }

  private onContinuation(flags: number, id: number, p: Buffer): void {
    if (this.hbStream === 0 || id !== this.hbStream) { this.fail(H2Error.PROTOCOL_ERROR, 'unexpected CONTINUATION'); return; }
    const endHeaders = (flags & Flag.END_HEADERS) !== 0;
    if (!this.emptyFrame(p.length === 0 && !endHeaders)) return;
    // a block larger than any header list we accept, or cut into more pieces than any sender
    // needs: no point buffering it (CONTINUATION flood); frame headers count, so empty frames do too
    this.hbBytes += FRAME_HEADER + p.length;
    if (++this.hbFrames > MAX_HEADER_BLOCK_FRAMES) { this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many CONTINUATION frames'); return; }
    if (this.hbBytes > this.hbBudget) { this.fail(H2Error.ENHANCE_YOUR_CALM, 'header block too large'); return; }
    if (p.length > 0) {
      this.hbChunks.push(Buffer.from(p));
      this.hbLength += p.length;
    }
    if (endHeaders) {
      const block = Buffer.concat(this.hbChunks, this.hbLength);
      this.hbStream = 0;
      this.hbChunks = [];
      this.headersPendingSince = 0;
      this.headerBlock(id, block);
    }
  }

  private headerBlock(id: number, block: Buffer): void {
    let fields: string[] | null;
    try {
      fields = this.decoder.decode(block, this.opts.maxHeaderCount);
    } catch (err) {
      if (err instanceof HpackError) { this.fail(H2Error.COMPRESSION_ERROR, err.message); return; }
      throw err;
    }
    const endStream = this.hbEndStream;
    const selfDependent = this.hbSelfDependent;
    this.hbSelfDependent = false;
    const s = this.streams.get(id);
    if (s !== undefined) {
      if (selfDependent) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
      this.moreHeaders(s, fields, endStream);
      return;
    }
    if (!this.isServer) {
      // a client opens every stream itself: headers for an unknown one are late frames of a reset stream, or an error
      if (this.isIdle(id)) this.fail(H2Error.PROTOCOL_ERROR, 'HEADERS on idle stream');
      return;
    }
    if ((id & 1) === 0 || id <= this.lastPeerStream) {
      if (this.recentResets.includes(id)) return;
      this.fail(H2Error.PROTOCOL_ERROR, (id & 1) === 0 ? 'even stream id from client' : 'stream id not increasing');
      return;
    }
    this.lastPeerStream = id;
    this.opened++;
    if (this.goingAway) return; // after our GOAWAY: ignored, the client retries it elsewhere
    if (selfDependent) { this.refuse(id, H2Error.PROTOCOL_ERROR); return; }
    if (this.active >= this.opts.maxConcurrentStreams) { this.refuse(id, H2Error.REFUSED_STREAM); return; }
    const st = new Http2Stream(id, this, this.peerInitialWindow, this.opts.initialWindow);
    st.gotHeaders = true;
    this.streams.set(id, st);
    this.active++;
    if (fields === null) {
      // over the header list limits: 431, and the rest of the request is not wanted
      st.remoteEnded = endStream;
      this.respond(st, [':status', '431', 'content-length', '0'], true);
      this.stopStream(st);
      return;
    }
    st.fields = fields;
    const bad = checkRequest(fields, st);
    if (bad !== null) { this.streamError(st, H2Error.PROTOCOL_ERROR, bad); return; }
    if (endStream) {
      st.remoteEnded = true;
      if (st.contentLength > 0) { this.streamError(st, H2Error.PROTOCOL_ERROR); return; }
    }
    // handed on once this read is parsed: a stream the same read resets never reaches an upstream
    this.undispatched.push(st);
  }

  /** Hands the streams opened by the current read to the host, except those already gone. */
  private dispatch(): void {
    const list = this.undispatched;
    if (list.length === 0) return;
    this.undispatched = [];
    for (let i = 0; i < list.length; i++) if (!list[i].closed) this.host.onStream(list[i]);
  }

  /** HEADERS on a stream we know: a client's response, 1xx, or trailers either way. */
  private moreHeaders(s: Http2Stream, fields: string[] | null, endStream: boolean): void {
    if (s.remoteEnded) { this.streamError(s, H2Error.STREAM_CLOSED); return; }
    if (fields === null) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
    if (!this.isServer && !s.gotHeaders) {
      const r = checkResponse(fields);
      if (r.error !== null) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
      if (r.status < 200) {
        if (endStream || r.status === 101) this.streamError(s, H2Error.PROTOCOL_ERROR);
        return;
      }
      s.gotHeaders = true;
      s.status = r.status;
      s.fields = fields;
      if (s.noBody || r.status === 204 || r.status === 304) { s.noBody = true; s.contentLength = -1; } else s.contentLength = r.contentLength;
      if (endStream) {
        s.remoteEnded = true;
        if (s.contentLength > 0) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
      }
      s.handler.onResponse(s, fields, r.status, endStream);
      if (endStream) this.maybeClose(s);
      return;
    }
    // trailers
    if (!endStream || checkTrailers(fields) !== null) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
    if (s.contentLength >= 0 && !s.noBody && s.received !== s.contentLength) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
    if (s.handler === NO_HANDLER) this.dispatch();
    s.remoteEnded = true;
    s.handler.onTrailers(s, fields);
    this.maybeClose(s);
  }

  private onPriority(id: number, p: Buffer): void {
    if (id === 0) { this.fail(H2Error.PROTOCOL_ERROR, 'PRIORITY on stream 0'); return; }
    // Sluice keeps no priority tree, so a PRIORITY frame costs little, but it asks for nothing either
    if (++this.priorityFrames > PRIORITY_PER_STREAM * (1 + this.opened)) { this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many PRIORITY frames'); return; }
    if (p.length !== 5) { this.rstOrStreamError(id, H2Error.FRAME_SIZE_ERROR); return; }
    if ((p.readUInt32BE(0) & 0x7fffffff) === id) this.rstOrStreamError(id, H2Error.PROTOCOL_ERROR);
  }

  private rstOrStreamError(id: number, code: number): void {
    const s = this.streams.get(id);
    if (s) this.streamError(s, code); else this.rst(id, code, true);
  }

  private onRstStream(id: number, p: Buffer): void {
    if (id === 0) { this.fail(H2Error.PROTOCOL_ERROR, 'RST_STREAM on stream 0'); return; }
    if (p.length !== 4) { this.fail(H2Error.FRAME_SIZE_ERROR, 'RST_STREAM length'); return; }
    if (this.isIdle(id)) { this.fail(H2Error.PROTOCOL_ERROR, 'RST_STREAM on idle stream'); return; }
    const s = this.streams.get(id);
    if (!s) return;
    const code = p.readUInt32BE(0);
    if (code === H2Error.NO_ERROR && !this.isServer && s.gotHeaders && !s.remoteEnded && s.contentLength >= 0 && s.received === s.contentLength) {
      // Node's HTTP/2 server ends a response whose last DATA waited for window with RST_STREAM(NO_ERROR)
      // instead of END_STREAM. Every byte its content-length promised has come: it is complete.
      s.remoteEnded = true;
      s.handler.onData(s, EMPTY, true);
      if (!s.closed) { this.remove(s); s.handler.onClose(s); }
      return;
    }
    if (this.isServer && !s.localEnded && --this.resetAllowance < 0) {
      this.terminate(s, code, true);
      this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many streams reset');
      return;
    }
    this.terminate(s, code, true);
  }

  private onSettings(flags: number, id: number, p: Buffer): void {
    if (id !== 0) { this.fail(H2Error.PROTOCOL_ERROR, 'SETTINGS on a stream'); return; }
    if (++this.settingsFrames > SETTINGS_ALLOWANCE + this.opened) { this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many SETTINGS frames'); return; }
    if (flags & Flag.ACK) {
      if (p.length !== 0) this.fail(H2Error.FRAME_SIZE_ERROR, 'SETTINGS ACK with payload');
      return;
    }
    if (p.length % 6 !== 0) { this.fail(H2Error.FRAME_SIZE_ERROR, 'SETTINGS length'); return; }
    if (p.length > 6 * MAX_SETTINGS_ENTRIES) { this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many settings in one frame'); return; }
    // INITIAL_WINDOW_SIZE changes every open stream: applied once per frame, not once per entry
    let windowTo = -1;
    let windowMax = -1;
    for (let o = 0; o < p.length; o += 6) {
      const key = p.readUInt16BE(o);
      const value = p.readUInt32BE(o + 2);
      switch (key) {
        case Setting.HEADER_TABLE_SIZE: this.encoder.setPeerMaxTableSize(value); break;
        case Setting.ENABLE_PUSH:
          if (value > 1 || (!this.isServer && value !== 0)) { this.fail(H2Error.PROTOCOL_ERROR, 'invalid ENABLE_PUSH'); return; }
          break;
        case Setting.MAX_CONCURRENT_STREAMS: this.peerMaxStreams = value; break;
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW) { this.fail(H2Error.FLOW_CONTROL_ERROR, 'INITIAL_WINDOW_SIZE too large'); return; }
          windowTo = value;
          if (value > windowMax) windowMax = value;
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME || value > MAX_FRAME_LIMIT) { this.fail(H2Error.PROTOCOL_ERROR, 'invalid MAX_FRAME_SIZE'); return; }
          this.peerMaxFrame = value;
          break;
        default: // unknown settings are ignored
      }
    }
    if (windowTo >= 0 && (windowTo !== this.peerInitialWindow || windowMax !== this.peerInitialWindow)) {
      // the windows are checked at the largest value the frame set, as if applied entry by entry
      const grow = windowMax - this.peerInitialWindow;
      const delta = windowTo - this.peerInitialWindow;
      this.peerInitialWindow = windowTo;
      for (const s of this.streams.values()) {
        if (s.sendWindow + grow > MAX_WINDOW) { this.fail(H2Error.FLOW_CONTROL_ERROR, 'stream window overflow'); return; }
        s.sendWindow += delta;
      }
      if (delta > 0) this.unblock();
    }
    if (!this.settled) { this.settled = true; if (this.hbStream === 0) this.headersPendingSince = 0; }
    this.control(SETTINGS_ACK);
  }

  private onPing(flags: number, id: number, p: Buffer): void {
    if (id !== 0) { this.fail(H2Error.PROTOCOL_ERROR, 'PING on a stream'); return; }
    if (p.length !== 8) { this.fail(H2Error.FRAME_SIZE_ERROR, 'PING length'); return; }
    if ((flags & Flag.ACK) === 0) this.control(pingAck(p));
  }

  private onGoaway(id: number, p: Buffer): void {
    if (id !== 0) { this.fail(H2Error.PROTOCOL_ERROR, 'GOAWAY on a stream'); return; }
    if (p.length < 8) { this.fail(H2Error.FRAME_SIZE_ERROR, 'GOAWAY length'); return; }
    const last = p.readUInt32BE(0) & 0x7fffffff;
    const code = p.readUInt32BE(4);
    this.goingAway = true;
    // streams we opened past `last` were never processed: refused, safe to retry
    for (const s of [...this.streams.values()]) {
      const ours = this.isServer ? (s.id & 1) === 0 : (s.id & 1) === 1;
      if (ours && s.id > last) this.terminate(s, H2Error.REFUSED_STREAM, true);
    }
    this.host.onGoaway(last, code);
    if (this.active === 0) this.end(H2Error.NO_ERROR, 'GOAWAY received');
  }

  private onWindowUpdate(id: number, p: Buffer): void {
    if (p.length !== 4) { this.fail(H2Error.FRAME_SIZE_ERROR, 'WINDOW_UPDATE length'); return; }
    // credit is wanted for data we send: a peer granting it frame after frame for nothing is flooding
    if (++this.windowUpdates > 5 + 2 * (this.opened + WINDOW_UPDATES_PER_DATA * this.dataFramesSent)) {
      this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many WINDOW_UPDATE frames');
      return;
    }
    const inc = p.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (inc === 0) { this.fail(H2Error.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0'); return; }
      this.sendWindow += inc;
      if (this.sendWindow > MAX_WINDOW) { this.fail(H2Error.FLOW_CONTROL_ERROR, 'connection window overflow'); return; }
      this.unblock();
      return;
    }
    const s = this.streams.get(id);
    if (!s) {
      if (this.isIdle(id)) this.fail(H2Error.PROTOCOL_ERROR, 'WINDOW_UPDATE on idle stream');
      return;
    }
    if (inc === 0) { this.streamError(s, H2Error.PROTOCOL_ERROR); return; }
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) { this.streamError(s, H2Error.FLOW_CONTROL_ERROR); return; }
    if (s.pendingBytes > 0 || s.pendingTrailers || s.pendingEnd) this.drainStream(s);
  }

  /** A reply to a peer's frame; a peer that sends them without reading ours is cut off. */
  private control(b: Buffer): void {
    if (this.socketFull && ++this.controlWhileFull > MAX_CONTROL_WHILE_FULL) {
      this.fail(H2Error.ENHANCE_YOUR_CALM, 'control frames not read');
      return;
    }
    this.queue(b);
  }

  // ── flow control, receive side ──────────────────────────────────────────

  /** The owner has passed on `n` bytes of this stream's data: the peer may send that much more. */
  consumed(s: Http2Stream, n: number): void {
    if (n > 0) this.giveBack(s, n);
  }

  private giveBack(s: Http2Stream | null, n: number): void {
    this.recvUnacked += n;
    if (this.recvUnacked >= this.connUpdateAt) {
      this.queue(windowUpdateFrame(0, this.recvUnacked));
      this.recvWindow += this.recvUnacked;
      this.recvUnacked = 0;
    }
    if (s === null || s.remoteEnded || s.closed) return;
    s.recvUnacked += n;
    if (s.recvUnacked >= this.opts.initialWindow >>> 1) {
      this.queue(windowUpdateFrame(s.id, s.recvUnacked));
      s.recvWindow += s.recvUnacked;
      s.recvUnacked = 0;
    }
  }

  // ── sending ──────────────────────────────────────────────────────────────

  /** Server: the response head. */
  respond(s: Http2Stream, fields: readonly string[], endStream: boolean): void {
    if (s.closed || s.headersSent) return;
    s.headersSent = true;
    this.queue(headersFrames(s.id, this.encoder.encode(fields), endStream, this.peerMaxFrame));
    if (endStream) this.localEnd(s);
  }

  /** Client: opens a stream. Null when the connection takes no more streams. */
  request(fields: readonly string[], endStream: boolean, handler: Http2StreamHandler, ctx: unknown): Http2Stream | null {
    if (this.closed || this.goingAway || this.nextId > MAX_WINDOW) return null;
    const id = this.nextId;
    this.nextId += 2;
    const s = new Http2Stream(id, this, this.peerInitialWindow, this.opts.initialWindow);
    s.handler = handler;
    s.ctx = ctx;
    s.headersSent = true;
    this.streams.set(id, s);
    this.active++;
    this.opened++;
    this.queue(headersFrames(id, this.encoder.encode(fields), endStream, this.peerMaxFrame));
    if (endStream) s.localEnded = true;
    return s;
  }

  /** Stream ids this client connection has left. */
  get idsLeft(): number { return Math.max(0, (MAX_WINDOW - this.nextId) >>> 1); }

  /**
   * Body data. Returns false when the caller should wait for `onWritable`:
   * the data is queued for flow control, or the socket is full.
   */
  writeData(s: Http2Stream, data: Buffer, endStream: boolean): boolean {
    if (s.closed || s.localEnded || s.pendingEnd) return false;
    if (s.pendingBytes > 0) {
      s.pending!.push(data);
      s.pendingBytes += data.length;
      if (endStream) s.pendingEnd = true;
      s.wantWritable = true;
      return false;
    }
    const sent = this.sendData(s, data, endStream);
    if (sent < data.length || (endStream && !s.localEnded)) {
      s.pending = [data.subarray(sent)];
      s.pendingBytes = data.length - sent;
      s.pendingEnd = endStream;
      this.blocked.add(s);
      s.wantWritable = true;
      return false;
    }
    if (this.socketFull || this.outBytes > SOCKET_HIGH_WATER) {
      s.wantWritable = true;
      this.waiting.add(s);
      return false;
    }
    return true;
  }

  /** Trailers end the stream, after any data still waiting for window. */
  writeTrailers(s: Http2Stream, fields: readonly string[]): void {
    if (s.closed || s.localEnded || s.pendingEnd) return;
    if (s.pendingBytes > 0) { s.pendingTrailers = fields.slice(); s.pendingEnd = true; return; }
    this.queue(headersFrames(s.id, this.encoder.encode(fields), true, this.peerMaxFrame));
    this.localEnd(s);
  }

  /** Sends as much of `data` as the windows allow; returns how much. */
  private sendData(s: Http2Stream, data: Buffer, endStream: boolean): number {
    const max = this.peerMaxFrame;
    let off = 0;
    const total = data.length;
    while (off < total) {
      const room = Math.min(this.sendWindow, s.sendWindow, max, total - off);
      if (room <= 0) return off;
      const last = off + room === total;
      const flags = last && endStream ? Flag.END_STREAM : 0;
      this.dataFramesSent++;
      this.queue(frameHeader(room, FrameType.DATA, flags, s.id));
      this.queue(off === 0 && last ? data : data.subarray(off, off + room), 0);
      this.sendWindow -= room;
      s.sendWindow -= room;
      off += room;
    }
    if (endStream) {
      if (total === 0) { this.dataFramesSent++; this.queue(frameHeader(0, FrameType.DATA, Flag.END_STREAM, s.id)); }
      this.localEnd(s);
    }
    return off;
  }

  private unblock(): void {
    for (const s of this.blocked) {
      if (this.sendWindow <= 0) break;
      this.drainStream(s);
    }
  }

  private drainStream(s: Http2Stream): void {
    const pending = s.pending;
    while (pending !== null && pending.length > 0) {
      const head = pending[0];
      const isLast = pending.length === 1;
      const endHere = isLast && s.pendingEnd && s.pendingTrailers === null;
      const sent = this.sendData(s, head, endHere);
      s.pendingBytes -= sent;
      if (sent < head.length || (endHere && !s.localEnded)) { pending[0] = head.subarray(sent); return; }
      pending.shift();
    }
    if (s.pendingTrailers !== null) {
      const t = s.pendingTrailers;
      s.pendingTrailers = null;
      this.queue(headersFrames(s.id, this.encoder.encode(t), true, this.peerMaxFrame));
      this.localEnd(s);
    } else if (s.pendingEnd && !s.localEnded) {
      this.sendData(s, EMPTY, true);
    }
    s.pending = null;
    s.pendingBytes = 0;
    this.blocked.delete(s);
    if (s.wantWritable && !s.closed) {
      if (this.socketFull || this.outBytes > SOCKET_HIGH_WATER) { this.waiting.add(s); return; }
      s.wantWritable = false;
      s.handler.onWritable(s);
    }
  }

  private localEnd(s: Http2Stream): void {
    s.localEnded = true;
    if (s.remoteEnded) { this.maybeClose(s); return; }
    if (s.stopAfterEnd) this.stopStream(s);
  }

  /**
   * Our side is complete and we do not want the rest of the peer's: reset with
   * NO_ERROR once our end is out (RFC 9113 8.1), or as soon as it is.
   */
  stopStream(s: Http2Stream): void {
    if (s.closed) return;
    if (!s.localEnded) { s.stopAfterEnd = true; return; }
    if (s.remoteEnded) { this.maybeClose(s); return; }
    this.rst(s.id, H2Error.NO_ERROR);
    this.remove(s);
    // it ended as far as its owner is concerned: the response went out whole
    s.handler.onClose(s);
  }

  /** Resets a stream from our side (the owner gives up on it); its handler hears nothing more. */
  reset(s: Http2Stream, code: number): void {
    if (s.closed) return;
    this.rst(s.id, code);
    this.remove(s);
  }

  /** `reply`: the reset answers a frame of the peer's, and counts as a reply it must read. */
  private rst(id: number, code: number, reply = false): void {
    this.recentResets.push(id);
    if (this.recentResets.length > RECENT_RESETS) this.recentResets.shift();
    if (reply) this.control(rstStreamFrame(id, code)); else this.queue(rstStreamFrame(id, code));
  }

  /**
   * A stream the peer got reset or refused. Like a stream it resets itself, it spends the reset
   * allowance: a peer that sends nothing but bad or surplus requests is cut off.
   */
  private chargeReset(): boolean {
    if (!this.isServer || --this.resetAllowance >= 0) return true;
    this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many streams reset');
    return false;
  }

  /** A new stream refused before it was made. */
  private refuse(id: number, code: number): void {
    this.rst(id, code, true);
    this.chargeReset();
  }

  /** A stream error found by our checks: reset it and tell its owner. */
  private streamError(s: Http2Stream, code: number, reason = 'stream error'): void {
    if (s.closed) return;
    this.host.onProtocolError(code, reason, true);
    this.rst(s.id, code, true);
    this.terminate(s, code, false);
    this.chargeReset();
  }

  /** Frames that carry nothing and end nothing: a few in a row are harmless, a run of them is a flood. */
  private emptyFrame(empty: boolean): boolean {
    if (!empty) { this.emptyRun = 0; return true; }
    if (++this.emptyRun <= MAX_EMPTY_FRAMES) return true;
    this.fail(H2Error.ENHANCE_YOUR_CALM, 'too many empty frames');
    return false;
  }

  private terminate(s: Http2Stream, code: number, remote: boolean): void {
    if (s.closed) return;
    this.remove(s);
    s.handler.onReset(s, code, remote);
  }

  private maybeClose(s: Http2Stream): void {
    if (s.closed || !s.remoteEnded || !s.localEnded) return;
    if (this.isServer) this.resetAllowance = Math.min(RESET_ALLOWANCE, this.resetAllowance + 1);
    this.remove(s);
    s.handler.onClose(s);
  }

  private remove(s: Http2Stream): void {
    s.closed = true;
    s.pending = null;
    s.pendingBytes = 0;
    this.blocked.delete(s);
    this.waiting.delete(s);
    if (this.streams.delete(s.id) && --this.active === 0) {
      this.idleSince = performance.now();
      if (this.goingAway && !this.closed) { this.end(H2Error.NO_ERROR, 'drained'); return; }
      this.host.onIdle();
    }
  }

  // ── connection end ───────────────────────────────────────────────────────

  /**
   * The first of two GOAWAYs (RFC 9113 §6.8): one that still takes every stream (2^31-1), so
   * requests already on their way are not refused; the client opens no new streams after it.
   * The host sends the final one (shutdown(), naming the last stream that arrived) a while
   * later. Not on the PING round trip alone: a client sends its PING ACK ahead of HEADERS it
   * had queued (nghttp2 writes control frames first), and those would be refused.
   */
  drainGracefully(): void {
    if (!this.isServer) { this.shutdown(); return; }
    if (this.closed || this.goingAway || this.drainNotified) return;
    this.drainNotified = true;
    this.push(goawayFrame(0x7fffffff, H2Error.NO_ERROR));
  }

  /** Graceful: GOAWAY, streams already open finish, then the connection ends. */
  shutdown(): void {
    if (this.closed || this.goingAway) return;
    this.goingAway = true;
    this.push(goawayFrame(this.isServer ? this.lastPeerStream : 0, H2Error.NO_ERROR));
    if (this.active === 0) this.end(H2Error.NO_ERROR, 'shutdown');
  }

  /** A connection error (or, with NO_ERROR, a close of our own): GOAWAY with its code, every stream reset. */
  fail(code: number, reason: string): void {
    if (this.closed) return;
    if (code !== H2Error.NO_ERROR) this.host.onProtocolError(code, reason, false);
    // past any bound on queued frames: the GOAWAY is the one frame that must go out
    this.push(goawayFrame(this.isServer ? this.lastPeerStream : 0, code, reason));
    this.end(code, reason);
  }

  private end(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.goingAway = true;
    this.hbChunks = [];
    this.hbStream = 0;
    // nothing is pending any more: the host's header timer must not count this connection as slow
    this.headersPendingSince = 0;
    this.flush();
    const list = [...this.streams.values()];
    for (const s of list) this.terminate(s, code === H2Error.NO_ERROR ? H2Error.CANCEL : code, false);
    this.host.onEnd(code, reason);
  }

  /** The socket closed under us: every open stream is reset. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.goingAway = true;
    this.out = [];
    this.outBytes = 0;
    for (const s of [...this.streams.values()]) this.terminate(s, H2Error.CANCEL, false);
  }
}
