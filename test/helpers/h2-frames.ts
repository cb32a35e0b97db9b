/**
 * Raw HTTP/2 for conformance tests: a frame writer, a small HPACK encoder
 * (literals, raw or Huffman, plus any hand-made bytes), a complete HPACK
 * decoder for what the server sends (RFC 7541: static and dynamic table,
 * Huffman), and a client that reads frames off a plain socket and lets a test
 * await "a frame like this", "this stream's outcome" or "the connection ended",
 * every wait bounded.
 *
 * Frame layout (RFC 9113 section 4.1):
 *
 *   +-----------------------------------------------+
 *   |                 Length (24)                   |
 *   +---------------+---------------+---------------+
 *   |   Type (8)    |   Flags (8)   |
 *   +-+-------------+---------------+-------------------------------+
 *   |R|                 Stream Identifier (31)                      |
 *   +=+=============================================================+
 *   |                   Frame Payload (0...)                      ...
 *   +---------------------------------------------------------------+
 *
 * Independent of src/protocols/http2 on purpose: the suite checks that code.
 */
import net from 'node:net';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FrameType = {
  DATA: 0x0, HEADERS: 0x1, PRIORITY: 0x2, RST_STREAM: 0x3, SETTINGS: 0x4,
  PUSH_PROMISE: 0x5, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8, CONTINUATION: 0x9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export const ErrorCode = {
  NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, INTERNAL_ERROR: 0x2, FLOW_CONTROL_ERROR: 0x3, SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5, FRAME_SIZE_ERROR: 0x6, REFUSED_STREAM: 0x7, CANCEL: 0x8, COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa, ENHANCE_YOUR_CALM: 0xb, INADEQUATE_SECURITY: 0xc, HTTP_1_1_REQUIRED: 0xd,
} as const;

export const Setting = {
  HEADER_TABLE_SIZE: 0x1, ENABLE_PUSH: 0x2, MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5, MAX_HEADER_LIST_SIZE: 0x6,
} as const;

export function errorName(code: number): string {
  for (const [k, v] of Object.entries(ErrorCode)) if (v === code) return k;
  return `0x${code.toString(16)}`;
}

export function typeName(type: number): string {
  for (const [k, v] of Object.entries(FrameType)) if (v === type) return k;
  return `0x${type.toString(16)}`;
}

// ── frames ───────────────────────────────────────────────────────────────────

const EMPTY = Buffer.alloc(0);

/** One frame; the length field is the payload's length (give a payload of the wrong size to test size checks). */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId >>> 0, 5);
  payload.copy(out, 9);
  return out;
}

export function settingsFrame(pairs: Array<[number, number]> = [], opts: { ack?: boolean; streamId?: number } = {}): Buffer {
  const p = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([id, value], i) => { p.writeUInt16BE(id, i * 6); p.writeUInt32BE(value >>> 0, i * 6 + 2); });
  return frame(FrameType.SETTINGS, opts.ack ? Flag.ACK : 0, opts.streamId ?? 0, p);
}

export const settingsAck = (): Buffer => frame(FrameType.SETTINGS, Flag.ACK, 0);

export function pingFrame(data: Buffer, opts: { ack?: boolean; streamId?: number; flags?: number } = {}): Buffer {
  return frame(FrameType.PING, opts.flags ?? (opts.ack ? Flag.ACK : 0), opts.streamId ?? 0, data);
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code >>> 0);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment >>> 0);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

export function goawayFrame(lastStreamId: number, code: number, debug = ''): Buffer {
  const d = Buffer.from(debug, 'latin1');
  const p = Buffer.alloc(8 + d.length);
  p.writeUInt32BE(lastStreamId >>> 0);
  p.writeUInt32BE(code >>> 0, 4);
  d.copy(p, 8);
  return frame(FrameType.GOAWAY, 0, 0, p);
}

export interface Priority { dependsOn: number; weight: number; exclusive?: boolean }

function priorityFields(p: Priority): Buffer {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(((p.exclusive ? 0x80000000 : 0) | p.dependsOn) >>> 0);
  b[4] = p.weight - 1;
  return b;
}

export function priorityFrame(streamId: number, p: Priority): Buffer {
  return frame(FrameType.PRIORITY, 0, streamId, priorityFields(p));
}

/** A padded payload: Pad Length, then the content, then `padLength` zero octets. */
function padded(content: Buffer, padLength: number): Buffer {
  return Buffer.concat([Buffer.from([padLength]), content, Buffer.alloc(padLength)]);
}

export interface HeadersOpts { endStream?: boolean; endHeaders?: boolean; padLength?: number; priority?: Priority }

export function headersFrame(streamId: number, block: Buffer, opts: HeadersOpts = {}): Buffer {
  let flags = (opts.endStream ? Flag.END_STREAM : 0) | (opts.endHeaders === false ? 0 : Flag.END_HEADERS);
  let content = block;
  if (opts.priority) { flags |= Flag.PRIORITY; content = Buffer.concat([priorityFields(opts.priority), content]); }
  if (opts.padLength !== undefined) { flags |= Flag.PADDED; content = padded(content, opts.padLength); }
  return frame(FrameType.HEADERS, flags, streamId, content);
}

export function continuationFrame(streamId: number, block: Buffer, endHeaders: boolean): Buffer {
  return frame(FrameType.CONTINUATION, endHeaders ? Flag.END_HEADERS : 0, streamId, block);
}

export function dataFrame(streamId: number, data: Buffer | string, opts: { endStream?: boolean; padLength?: number } = {}): Buffer {
  const d = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  let flags = opts.endStream ? Flag.END_STREAM : 0;
  let content = d;
  if (opts.padLength !== undefined) { flags |= Flag.PADDED; content = padded(d, opts.padLength); }
  return frame(FrameType.DATA, flags, streamId, content);
}

// ── HPACK (RFC 7541) ─────────────────────────────────────────────────────────

/** The static table (RFC 7541 Appendix A), index 1..61. */
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''],
  ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
  ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''],
  ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''],
  ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
  ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
];

/**
 * Code lengths of the HPACK Huffman code (RFC 7541 Appendix B) for symbols 0..255 and EOS (256).
 * The code is canonical (shorter codes first, then by symbol), so the lengths fix every code.
 */
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];
const EOS = 256;
const HUFFMAN_CODES: number[] = new Array(257);
/** Per code length: code → symbol. */
const HUFFMAN_DECODE: Array<Map<number, number>> = Array.from({ length: 31 }, () => new Map());
(() => {
  const order = [...HUFFMAN_LENGTHS.keys()].sort((a, b) => HUFFMAN_LENGTHS[a] - HUFFMAN_LENGTHS[b] || a - b);
  let code = 0;
  let len = HUFFMAN_LENGTHS[order[0]];
  order.forEach((sym, i) => {
    if (i > 0) { code = (code + 1) * 2 ** (HUFFMAN_LENGTHS[sym] - len); len = HUFFMAN_LENGTHS[sym]; }
    HUFFMAN_CODES[sym] = code;
    HUFFMAN_DECODE[len].set(code, sym);
  });
})();

export function huffmanEncode(s: Buffer): Buffer {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const byte of s) {
    const len = HUFFMAN_LENGTHS[byte];
    acc = acc * 2 ** len + HUFFMAN_CODES[byte];
    bits += len;
    while (bits >= 8) {
      const shift = 2 ** (bits - 8);
      out.push(Math.floor(acc / shift) & 0xff);
      acc %= shift;
      bits -= 8;
    }
  }
  if (bits > 0) out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) & 0xff); // padded with the EOS prefix (all ones)
  return Buffer.from(out);
}

export function huffmanDecode(b: Buffer): Buffer {
  const out: number[] = [];
  let code = 0;
  let len = 0;
  for (const byte of b) {
    for (let i = 7; i >= 0; i--) {
      code = code * 2 + ((byte >> i) & 1);
      len++;
      if (len > 30) throw new Error('hpack: invalid Huffman code');
      const sym = HUFFMAN_DECODE[len].get(code);
      if (sym === undefined) continue;
      if (sym === EOS) throw new Error('hpack: EOS in a Huffman string');
      out.push(sym);
      code = 0;
      len = 0;
    }
  }
  if (len > 7 || code !== 2 ** len - 1) throw new Error('hpack: bad Huffman padding');
  return Buffer.from(out);
}

/** An HPACK integer with an N-bit prefix; `high` holds the representation's pattern bits of the first octet. */
export function hpackInt(value: number, prefixBits: number, high = 0): Buffer {
  const max = 2 ** prefixBits - 1;
  if (value < max) return Buffer.from([high | value]);
  const out = [high | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) | 0x80); v = Math.floor(v / 128); }
  out.push(v);
  return Buffer.from(out);
}

/** A string literal: raw octets (latin1, so any byte can be sent) or Huffman-coded. */
export function hpackString(s: string, huffman = false): Buffer {
  const raw = Buffer.from(s, 'latin1');
  const body = huffman ? huffmanEncode(raw) : raw;
  return Buffer.concat([hpackInt(body.length, 7, huffman ? 0x80 : 0), body]);
}

export type Indexing = 'without' | 'incremental' | 'never';

/** A literal field with a literal name (section 6.2), by default "without indexing", raw strings. */
export function hpackLiteral(name: string, value: string, opts: { indexing?: Indexing; huffman?: boolean } = {}): Buffer {
  const first = opts.indexing === 'incremental' ? 0x40 : opts.indexing === 'never' ? 0x10 : 0x00;
  return Buffer.concat([Buffer.from([first]), hpackString(name, opts.huffman), hpackString(value, opts.huffman)]);
}

/** An indexed field (section 6.1): 0x80 | index. */
export const hpackIndexed = (index: number): Buffer => hpackInt(index, 7, 0x80);

/** A header list → field block: pairs become literals without indexing; Buffers go in as they are. */
export type Field = readonly [string, string] | Buffer;
export function hpack(fields: readonly Field[], opts: { huffman?: boolean } = {}): Buffer {
  return Buffer.concat(fields.map((f) => (Buffer.isBuffer(f) ? f : hpackLiteral(f[0], f[1], { huffman: opts.huffman }))));
}

/** The decoder for the server's field blocks; throws on any decoding error. */
export class HpackDecoder {
  private readonly table: Array<[string, string]> = []; // newest first
  private size = 0;
  constructor(private maxSize = 4096, private readonly limit = 4096) {}

  private entry(index: number): [string, string] {
    if (index === 0) throw new Error('hpack: index 0');
    if (index <= STATIC_TABLE.length) return [...STATIC_TABLE[index - 1]] as [string, string];
    const e = this.table[index - STATIC_TABLE.length - 1];
    if (!e) throw new Error(`hpack: index ${index} out of range`);
    return [e[0], e[1]];
  }

  private add(name: string, value: string): void {
    const size = name.length + value.length + 32;
    this.table.unshift([name, value]);
    this.size += size;
    this.evict();
  }

  private evict(): void {
    while (this.size > this.maxSize && this.table.length) {
      const [n, v] = this.table.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }

  decode(block: Buffer): Array<[string, string]> {
    let pos = 0;
    const int = (prefixBits: number): number => {
      if (pos >= block.length) throw new Error('hpack: truncated integer');
      const max = 2 ** prefixBits - 1;
      let v = block[pos++] & max;
      if (v < max) return v;
      let m = 1;
      for (;;) {
        if (pos >= block.length) throw new Error('hpack: truncated integer');
        const b = block[pos++];
        v += (b & 0x7f) * m;
        m *= 128;
        if (v > 2 ** 31) throw new Error('hpack: integer too large');
        if ((b & 0x80) === 0) return v;
      }
    };
    const str = (): string => {
      if (pos >= block.length) throw new Error('hpack: truncated string');
      const huff = (block[pos] & 0x80) !== 0;
      const len = int(7);
      if (pos + len > block.length) throw new Error('hpack: truncated string');
      const raw = block.subarray(pos, pos + len);
      pos += len;
      return (huff ? huffmanDecode(raw) : raw).toString('latin1');
    };
    const out: Array<[string, string]> = [];
    while (pos < block.length) {
      const b = block[pos];
      if (b & 0x80) {
        out.push(this.entry(int(7)));
      } else if (b & 0x40) {
        const idx = int(6);
        const name = idx ? this.entry(idx)[0] : str();
        const value = str();
        this.add(name, value);
        out.push([name, value]);
      } else if (b & 0x20) {
        if (out.length) throw new Error('hpack: table size update after a field');
        const size = int(5);
        if (size > this.limit) throw new Error('hpack: table size update above the limit');
        this.maxSize = size;
        this.evict();
      } else {
        const idx = int(4);
        const name = idx ? this.entry(idx)[0] : str();
        out.push([name, str()]);
      }
    }
    return out;
  }
}

// ── client ───────────────────────────────────────────────────────────────────

export interface Frame { type: number; flags: number; streamId: number; payload: Buffer }
export interface GoAway { lastStreamId: number; code: number; debug: string }

/** What a DATA or HEADERS frame carries once its padding (and a HEADERS frame's priority fields) are taken off. */
export function frameContent(f: Frame): Buffer {
  const p = f.payload;
  let off = 0;
  let end = p.length;
  if (f.flags & Flag.PADDED) { end -= p[0]; off = 1; }
  if (f.type === FrameType.HEADERS && (f.flags & Flag.PRIORITY)) off += 5;
  return p.subarray(off, Math.max(off, end));
}

export interface HeaderBlock { streamId: number; block: Buffer; endStream: boolean }

/** Joins a HEADERS frame and its CONTINUATION frames into one header block. */
export class HeaderBlocks {
  private open: { streamId: number; parts: Buffer[]; endStream: boolean } | null = null;

  /** Feeds a HEADERS or CONTINUATION frame; returns the block once its END_HEADERS came. */
  push(f: Frame): HeaderBlock | null {
    if (f.type === FrameType.HEADERS) {
      this.open = { streamId: f.streamId, parts: [frameContent(f)], endStream: (f.flags & Flag.END_STREAM) !== 0 };
    } else if (this.open && this.open.streamId === f.streamId) {
      this.open.parts.push(f.payload);
    } else {
      return null;
    }
    if (!(f.flags & Flag.END_HEADERS)) return null;
    const b = this.open;
    this.open = null;
    return { streamId: b.streamId, block: Buffer.concat(b.parts), endStream: b.endStream };
  }
}

export interface StreamState {
  /** Decoded field blocks in order: response headers (maybe 1xx first), then trailers. */
  blocks: Array<Array<[string, string]>>;
  data: Buffer[];
  /** END_STREAM seen from the server. */
  ended: boolean;
  /** RST_STREAM error code from the server, if any. */
  rst: number | null;
  /** The server's WINDOW_UPDATE increments for this stream. */
  windowUpdates: number;
}

export interface StreamResult {
  status: number | null;
  headers: Map<string, string>;
  body: string;
  endStream: boolean;
  rst: number | null;
  goaway: GoAway | null;
  closed: boolean;
  timedOut: boolean;
}

export function describeResult(r: StreamResult): string {
  const parts: string[] = [];
  if (r.status !== null) parts.push(`status ${r.status}`);
  if (r.endStream) parts.push('END_STREAM');
  if (r.rst !== null) parts.push(`RST_STREAM ${errorName(r.rst)}`);
  if (r.goaway) parts.push(`GOAWAY ${errorName(r.goaway.code)}`);
  if (r.closed) parts.push('connection closed');
  if (r.timedOut) parts.push('timed out');
  return parts.join(', ') || 'nothing';
}

export interface ConnectionEnd { goaway: GoAway | null; closed: boolean }

export class TimeoutError extends Error {}

/** A raw HTTP/2 client connection: writes whatever it is told, reads and records every frame. */
export class H2Client {
  readonly frames: Frame[] = [];
  /** Every octet received (first 64 KiB), for replies that are not HTTP/2 at all. */
  raw: Buffer = Buffer.alloc(0);
  closed = false;
  goaway: GoAway | null = null;
  hpackError: Error | null = null;
  /** The server's settings, latest values; `serverSettingsSeen` once its first SETTINGS arrived. */
  readonly serverSettings = new Map<number, number>();
  serverSettingsSeen = false;
  /** SETTINGS ACKs received (for our SETTINGS frames). */
  settingsAcks = 0;
  /** The server's WINDOW_UPDATE increments on stream 0. */
  connWindowUpdates = 0;
  readonly streams = new Map<number, StreamState>();
  private nextId = 1;
  private autoAck = false;
  private pending: Buffer = Buffer.alloc(0);
  private readonly blocks = new HeaderBlocks();
  private readonly decoder = new HpackDecoder();
  private readonly waiters = new Set<() => void>();

  static connect(port: number, host = '127.0.0.1'): Promise<H2Client> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host);
      socket.once('connect', () => { socket.removeListener('error', reject); resolve(new H2Client(socket)); });
      socket.once('error', reject);
    });
  }

  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {}); // a reset ends the connection like a close; 'close' follows
    socket.on('close', () => { this.closed = true; this.notify(); });
  }

  /** Sends bytes now (ignored once the connection is gone). */
  send(...bufs: Buffer[]): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs));
  }

  /**
   * Sends bytes and resolves true once the socket took them; false if the connection is gone,
   * or if it did not take them within `timeoutMs` (a peer that stopped reading).
   */
  write(buf: Buffer, timeoutMs = 8000): Promise<boolean> {
    if (this.closed || this.socket.destroyed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.socket.write(buf, (err) => { clearTimeout(timer); resolve(!err); });
    });
  }

  /** Preface and SETTINGS, then waits for the server's SETTINGS and acknowledges it (and any later one). */
  async handshake(settings: Array<[number, number]> = [[Setting.ENABLE_PUSH, 0]], timeoutMs = 8000): Promise<void> {
    this.send(PREFACE, settingsFrame(settings));
    await this.until(() => this.serverSettingsSeen || this.closed, timeoutMs, 'the server\'s SETTINGS');
    if (!this.serverSettingsSeen) throw new Error(`connection closed before the server's SETTINGS; frames: ${this.summary()}`);
    this.autoAck = true;
    this.send(settingsAck());
  }

  setting(id: number, dflt: number): number {
    return this.serverSettings.get(id) ?? dflt;
  }

  newStreamId(): number {
    const id = this.nextId;
    this.nextId += 2;
    return id;
  }

  destroy(): void {
    this.socket.destroy();
  }

  stream(id: number): StreamState {
    let s = this.streams.get(id);
    if (!s) { s = { blocks: [], data: [], ended: false, rst: null, windowUpdates: 0 }; this.streams.set(id, s); }
    return s;
  }

  /** Resolves with the first truthy value of `check`, tried now, after every frame and on close. */
  until<T>(check: () => T | null | undefined | false, timeoutMs: number, what: string): Promise<T> {
    const first = check();
    if (first) return Promise.resolve(first);
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const v = check();
        if (!v) return;
        this.waiters.delete(waiter);
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}; received: ${this.summary()}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** The first frame (received so far or later) matching `pred`. */
  frame(pred: (f: Frame) => boolean, what: string, timeoutMs = 8000): Promise<Frame> {
    return this.until(() => this.frames.find(pred), timeoutMs, what);
  }

  /** Waits for the connection to close (GOAWAY, if any, comes before). Never rejects. */
  async ended(timeoutMs = 8000): Promise<ConnectionEnd> {
    await this.until(() => this.closed, timeoutMs, 'the connection to close').catch(() => {});
    return { goaway: this.goaway, closed: this.closed };
  }

  /** Waits for GOAWAY or close, whichever comes first. Never rejects. */
  async goawayOrClose(timeoutMs = 8000): Promise<ConnectionEnd> {
    await this.until(() => this.goaway || this.closed, timeoutMs, 'GOAWAY or close').catch(() => {});
    return { goaway: this.goaway, closed: this.closed };
  }

  /**
   * How a stream ended: END_STREAM, RST_STREAM, or the connection going away
   * (GOAWAY that leaves it out, or close). Never rejects: `timedOut` says so.
   */
  async result(id: number, timeoutMs = 8000): Promise<StreamResult> {
    const done = () => {
      const s = this.streams.get(id);
      return (s && (s.ended || s.rst !== null)) || this.closed || (this.goaway !== null && this.goaway.lastStreamId < id);
    };
    let timedOut = false;
    await this.until(done, timeoutMs, `the end of stream ${id}`).catch(() => { timedOut = true; });
    const s = this.stream(id);
    const headers = new Map<string, string>();
    for (const [n, v] of s.blocks.find((b) => !b.some(([k, val]) => k === ':status' && val.startsWith('1'))) ?? []) {
      headers.set(n, headers.has(n) ? `${headers.get(n)}, ${v}` : v);
    }
    const st = headers.get(':status');
    return {
      status: st === undefined ? null : Number(st),
      headers,
      body: Buffer.concat(s.data).toString('latin1'),
      endStream: s.ended,
      rst: s.rst,
      goaway: this.goaway,
      closed: this.closed,
      timedOut,
    };
  }

  /** A request on a new stream: the given fields (or GET `path`), optional body. Returns the stream id. */
  request(fields: readonly Field[], body?: string | Buffer): number {
    const id = this.newStreamId();
    const block = hpack(fields);
    if (body === undefined) { this.send(headersFrame(id, block, { endStream: true })); return id; }
    this.send(headersFrame(id, block), dataFrame(id, body, { endStream: true }));
    return id;
  }

  /** GET `path` on a new stream and wait for its outcome. */
  async get(path: string, extra: ReadonlyArray<readonly [string, string]> = [], timeoutMs = 8000): Promise<StreamResult> {
    return this.result(this.request(requestFields('GET', path, extra)), timeoutMs);
  }

  /** The frames received so far, for failure messages. */
  summary(max = 12): string {
    const fs = this.frames.slice(-max).map((f) => {
      let s = `${typeName(f.type)}(${f.streamId}${f.flags ? `, flags 0x${f.flags.toString(16)}` : ''})`;
      if (f.type === FrameType.RST_STREAM && f.payload.length === 4) s += ` ${errorName(f.payload.readUInt32BE(0))}`;
      if (f.type === FrameType.GOAWAY && f.payload.length >= 8) s += ` ${errorName(f.payload.readUInt32BE(4))} "${f.payload.subarray(8).toString('latin1')}"`;
      return s;
    });
    const more = this.frames.length > max ? `${this.frames.length - max} more, ` : '';
    return `[${more}${fs.join(', ')}]${this.closed ? ' then close' : ''}${this.frames.length === 0 && this.raw.length ? ` raw ${JSON.stringify(this.raw.subarray(0, 80).toString('latin1'))}` : ''}`;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private onData(d: Buffer): void {
    if (this.raw.length < 65536) this.raw = Buffer.concat([this.raw, d.subarray(0, 65536 - this.raw.length)]);
    this.pending = this.pending.length ? Buffer.concat([this.pending, d]) : d;
    while (this.pending.length >= 9) {
      const len = this.pending.readUIntBE(0, 3);
      if (this.pending.length < 9 + len) break;
      const f: Frame = {
        type: this.pending[3],
        flags: this.pending[4],
        streamId: this.pending.readUInt32BE(5) & 0x7fffffff,
        payload: Buffer.from(this.pending.subarray(9, 9 + len)),
      };
      this.pending = this.pending.subarray(9 + len);
      this.frames.push(f);
      this.onFrame(f);
    }
    this.notify();
  }

  private onFrame(f: Frame): void {
    const p = f.payload;
    switch (f.type) {
      case FrameType.SETTINGS:
        if (f.flags & Flag.ACK) { this.settingsAcks++; break; }
        for (let i = 0; i + 6 <= p.length; i += 6) this.serverSettings.set(p.readUInt16BE(i), p.readUInt32BE(i + 2));
        if (this.autoAck) this.send(settingsAck());
        this.serverSettingsSeen = true;
        break;
      case FrameType.HEADERS:
      case FrameType.CONTINUATION: {
        const b = this.blocks.push(f);
        if (b) this.endBlock(b);
        break;
      }
      case FrameType.DATA: {
        const s = this.stream(f.streamId);
        s.data.push(frameContent(f));
        if (f.flags & Flag.END_STREAM) s.ended = true;
        break;
      }
      case FrameType.RST_STREAM:
        if (p.length === 4) this.stream(f.streamId).rst = p.readUInt32BE(0);
        break;
      case FrameType.GOAWAY:
        if (p.length >= 8) this.goaway = { lastStreamId: p.readUInt32BE(0) & 0x7fffffff, code: p.readUInt32BE(4), debug: p.subarray(8).toString('latin1') };
        break;
      case FrameType.WINDOW_UPDATE:
        if (p.length === 4) {
          const inc = p.readUInt32BE(0) & 0x7fffffff;
          if (f.streamId === 0) this.connWindowUpdates += inc;
          else this.stream(f.streamId).windowUpdates += inc;
        }
        break;
      default:
        break;
    }
  }

  private endBlock(b: HeaderBlock): void {
    const s = this.stream(b.streamId);
    try {
      s.blocks.push(this.decoder.decode(b.block));
    } catch (err) {
      this.hpackError ??= err as Error;
    }
    if (b.endStream) s.ended = true;
  }
}

/** The fields of a plain request: pseudo-headers first, then `extra`. */
export function requestFields(method: string, path: string, extra: ReadonlyArray<readonly [string, string]> = [], authority = 'sluice.test'): Array<readonly [string, string]> {
  return [[':method', method], [':scheme', 'http'], [':path', path], [':authority', authority], ...extra];
}
