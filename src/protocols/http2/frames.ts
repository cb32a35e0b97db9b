/**
 * HTTP/2 frames (RFC 9113, section 4): constants and the builders for the
 * frames Sluice sends. Every frame starts with the same 9-byte header:
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-----------------------------------------------+---------------+
 *  |                 Length (24)                   |   Type (8)    |
 *  +---------------+-+-------------------------------------------+-+
 *  |   Flags (8)   |R|          Stream Identifier (31)             |
 *  +---------------+-+---------------------------------------------+
 *  |                     Frame Payload (Length)                  ...
 *  +---------------------------------------------------------------+
 */

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME_HEADER = 9;

export const enum FrameType {
  DATA = 0x0, HEADERS = 0x1, PRIORITY = 0x2, RST_STREAM = 0x3, SETTINGS = 0x4,
  PUSH_PROMISE = 0x5, PING = 0x6, GOAWAY = 0x7, WINDOW_UPDATE = 0x8, CONTINUATION = 0x9,
}

export const enum Flag {
  END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY = 0x20,
}

/** Error codes (RFC 9113, section 7). */
export const enum H2Error {
  NO_ERROR = 0x0, PROTOCOL_ERROR = 0x1, INTERNAL_ERROR = 0x2, FLOW_CONTROL_ERROR = 0x3, SETTINGS_TIMEOUT = 0x4,
  STREAM_CLOSED = 0x5, FRAME_SIZE_ERROR = 0x6, REFUSED_STREAM = 0x7, CANCEL = 0x8, COMPRESSION_ERROR = 0x9,
  CONNECT_ERROR = 0xa, ENHANCE_YOUR_CALM = 0xb, INADEQUATE_SECURITY = 0xc, HTTP_1_1_REQUIRED = 0xd,
}

export const enum Setting {
  HEADER_TABLE_SIZE = 0x1, ENABLE_PUSH = 0x2, MAX_CONCURRENT_STREAMS = 0x3, INITIAL_WINDOW_SIZE = 0x4,
  MAX_FRAME_SIZE = 0x5, MAX_HEADER_LIST_SIZE = 0x6,
}

export const DEFAULT_WINDOW = 65_535;
export const DEFAULT_MAX_FRAME = 16_384;
export const MAX_FRAME_LIMIT = 16_777_215;
export const MAX_WINDOW = 2 ** 31 - 1;

export function writeHeader(buf: Buffer, off: number, length: number, type: number, flags: number, streamId: number): void {
  buf[off] = length >>> 16;
  buf[off + 1] = (length >>> 8) & 0xff;
  buf[off + 2] = length & 0xff;
  buf[off + 3] = type;
  buf[off + 4] = flags;
  buf.writeUInt32BE(streamId, off + 5);
}

export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER);
  writeHeader(b, 0, length, type, flags, streamId);
  return b;
}

export function settingsFrame(settings: ReadonlyArray<readonly [number, number]>): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER + settings.length * 6);
  writeHeader(b, 0, settings.length * 6, FrameType.SETTINGS, 0, 0);
  let o = FRAME_HEADER;
  for (const [id, value] of settings) { b.writeUInt16BE(id, o); b.writeUInt32BE(value, o + 2); o += 6; }
  return b;
}

export const SETTINGS_ACK = frameHeader(0, FrameType.SETTINGS, Flag.ACK, 0);

export function pingAck(payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER + 8);
  writeHeader(b, 0, 8, FrameType.PING, Flag.ACK, 0);
  payload.copy(b, FRAME_HEADER, 0, 8);
  return b;
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER + 4);
  writeHeader(b, 0, 4, FrameType.RST_STREAM, 0, streamId);
  b.writeUInt32BE(code, FRAME_HEADER);
  return b;
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER + 4);
  writeHeader(b, 0, 4, FrameType.WINDOW_UPDATE, 0, streamId);
  b.writeUInt32BE(increment, FRAME_HEADER);
  return b;
}

export function goawayFrame(lastStreamId: number, code: number, debug = ''): Buffer {
  const d = Buffer.from(debug, 'latin1');
  const b = Buffer.allocUnsafe(FRAME_HEADER + 8 + d.length);
  writeHeader(b, 0, 8 + d.length, FrameType.GOAWAY, 0, 0);
  b.writeUInt32BE(lastStreamId, FRAME_HEADER);
  b.writeUInt32BE(code, FRAME_HEADER + 4);
  d.copy(b, FRAME_HEADER + 8);
  return b;
}

/**
 * A header block as one HEADERS frame, or HEADERS and CONTINUATION frames
 * when it is larger than the peer's SETTINGS_MAX_FRAME_SIZE.
 */
export function headersFrames(streamId: number, block: Buffer, endStream: boolean, maxFrame: number): Buffer {
  const es = endStream ? Flag.END_STREAM : 0;
  if (block.length <= maxFrame) {
    const b = Buffer.allocUnsafe(FRAME_HEADER + block.length);
    writeHeader(b, 0, block.length, FrameType.HEADERS, es | Flag.END_HEADERS, streamId);
    block.copy(b, FRAME_HEADER);
    return b;
  }
  const frames = Math.ceil(block.length / maxFrame);
  const b = Buffer.allocUnsafe(frames * FRAME_HEADER + block.length);
  let o = 0;
  for (let i = 0, src = 0; i < frames; i++, src += maxFrame) {
    const n = Math.min(maxFrame, block.length - src);
    const last = i === frames - 1;
    writeHeader(b, o, n, i === 0 ? FrameType.HEADERS : FrameType.CONTINUATION, (i === 0 ? es : 0) | (last ? Flag.END_HEADERS : 0), streamId);
    block.copy(b, o + FRAME_HEADER, src, src + n);
    o += FRAME_HEADER + n;
  }
  return b;
}
