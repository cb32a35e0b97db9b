/**
 * Dubbo 2 framing: header constants, header parsing, and an incremental frame splitter. Pure: bytes in,
 * frames out, no sockets. Body contents are read by the views (dubbo-request.ts, dubbo-response.ts).
 *
 * Frame = 16-byte header + body (`body length` bytes, serialized with the header's serialization id):
 *
 *   byte  0          1          2          3          4 .............................. 11   12 ....... 15
 *       +----------+----------+----------+----------+-----------------------------------+---------------+
 *       | magic hi | magic lo |   flag   |  status  |   request id (uint64, big endian) |  body length  |
 *       |   0xda   |   0xbb   |          |          |                                   | (uint32, BE)  |
 *       +----------+----------+----------+----------+-----------------------------------+---------------+
 *
 *   flag:   bit 7      bit 6      bit 5      bits 4..0
 *         +----------+----------+----------+---------------------+
 *         | request  | two-way  |  event   | serialization id    |   request 0x80, two-way 0x40,
 *         +----------+----------+----------+---------------------+   event (heartbeat) 0x20, id mask 0x1f
 *
 *   status: responses only (20 OK, 30 client timeout, ... see DubboStatus); 0 in requests.
 *   id:     chosen by the caller, echoed in the response; a proxy that multiplexes rewrites it (rewriteId).
 *
 * Matches ExchangeCodec.java (apache/dubbo, dubbo-remoting-api): HEADER_LENGTH 16, MAGIC 0xdabb,
 * FLAG_REQUEST 0x80, FLAG_TWOWAY 0x40, FLAG_EVENT 0x20, SERIALIZATION_MASK 0x1f, id = bytes2long(header, 4),
 * len = bytes2int(header, 12) checked against the payload limit (default 8 MiB) before the body is read.
 *
 * Contract (after MOSN's xprotocol dubbo codec): matchDubbo() for sniffing, decodeFrame() returning a frame,
 * null for "need more bytes" or an error value, and DubboFrameDecoder, a stateful splitter for a connection.
 */
import { DubboErrorCode, DubboProtocolError, invalidOption } from './dubbo-errors';

export const DUBBO_HEADER_LENGTH = 16;
export const DUBBO_MAGIC = 0xdabb;
export const DUBBO_MAGIC_HIGH = 0xda;
export const DUBBO_MAGIC_LOW = 0xbb;

export const FLAG_REQUEST = 0x80;
export const FLAG_TWOWAY = 0x40;
export const FLAG_EVENT = 0x20;
export const SERIALIZATION_MASK = 0x1f;

/** Serialization ids (CodecSupport / the Serialization SPI of Dubbo). Only Hessian2 bodies are read here. */
export const SERIALIZATION_HESSIAN2 = 2;

/** Response type values (DubboCodec.java). */
export const DubboResponseType = {
  WITH_EXCEPTION: 0,
  VALUE: 1,
  NULL_VALUE: 2,
  WITH_EXCEPTION_WITH_ATTACHMENTS: 3,
  VALUE_WITH_ATTACHMENTS: 4,
  NULL_VALUE_WITH_ATTACHMENTS: 5,
} as const;
export type DubboResponseType = (typeof DubboResponseType)[keyof typeof DubboResponseType];

/** Response status byte (Response.java). */
export const DubboStatus = {
  OK: 20,
  CLIENT_TIMEOUT: 30,
  SERVER_TIMEOUT: 31,
  BAD_REQUEST: 40,
  BAD_RESPONSE: 50,
  SERVICE_NOT_FOUND: 60,
  SERVICE_ERROR: 70,
  SERVER_ERROR: 80,
  CLIENT_ERROR: 90,
  SERVER_THREADPOOL_EXHAUSTED_ERROR: 100,
} as const;
export type DubboStatus = (typeof DubboStatus)[keyof typeof DubboStatus];

/** Dubbo's own default payload limit (Constants.DEFAULT_PAYLOAD = 8 MiB). */
export const DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024;

const TWO_32 = 0x1_0000_0000;

/**
 * Header fields of a frame, as received. Ids: `idHi`/`idLo` are the two unsigned 32-bit halves (cheap,
 * always present); `id` is the whole id as an unsigned 64-bit bigint (computed on first use); `safeId` is
 * the id as a plain number when it is at most 2^53 - 1 (every id a Java or Go client really uses), else -1.
 * Java writes the id as a signed long; read here as unsigned, the bytes are the same.
 */
export class DubboHeader {
  readonly isRequest: boolean;
  readonly twoWay: boolean;
  readonly isEvent: boolean;
  /** flag & 0x1f */
  readonly serialization: number;
  /** Response status byte (0 in requests). */
  readonly status: number;
  readonly idHi: number;
  readonly idLo: number;
  readonly bodyLength: number;
  private _id: bigint | undefined;

  constructor(flag: number, status: number, idHi: number, idLo: number, bodyLength: number) {
    this.isRequest = (flag & FLAG_REQUEST) !== 0;
    this.twoWay = (flag & FLAG_TWOWAY) !== 0;
    this.isEvent = (flag & FLAG_EVENT) !== 0;
    this.serialization = flag & SERIALIZATION_MASK;
    this.status = status;
    this.idHi = idHi;
    this.idLo = idLo;
    this.bodyLength = bodyLength;
    this._id = undefined;
  }

  get id(): bigint {
    if (this._id === undefined) this._id = (BigInt(this.idHi) << 32n) | BigInt(this.idLo);
    return this._id;
  }

  get safeId(): number {
    return this.idHi <= 0x1f_ffff ? this.idHi * TWO_32 + this.idLo : -1;
  }
}

/** A whole frame. `raw` is header + body (forward it as is); `body` is a view of raw after the header. */
export class DubboFrame extends DubboHeader {
  readonly raw: Buffer;
  private _body: Buffer | undefined;

  constructor(raw: Buffer, flag: number, status: number, idHi: number, idLo: number, bodyLength: number) {
    super(flag, status, idHi, idLo, bodyLength);
    this.raw = raw;
    this._body = undefined;
  }

  get body(): Buffer {
    if (this._body === undefined) this._body = this.raw.subarray(DUBBO_HEADER_LENGTH);
    return this._body;
  }
}

/** Big-endian uint32 at o (the caller knows 4 bytes are there): several times cheaper than readUInt32BE. */
function u32(buf: Buffer, o: number): number {
  return buf[o] * 0x100_0000 + ((buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]);
}

/** Parses the 16 header bytes at `offset` (no checks; the caller knows 16 bytes are there). */
export function parseHeader(buf: Buffer, offset = 0): DubboHeader {
  return new DubboHeader(buf[offset + 2], buf[offset + 3], u32(buf, offset + 4), u32(buf, offset + 8), u32(buf, offset + 12));
}

/** Sniffing: 'dubbo' on 0xda 0xbb, 'more' while fewer than 2 bytes decide nothing, else 'no'. */
export function matchDubbo(buf: Buffer, offset = 0): 'dubbo' | 'more' | 'no' {
  const n = buf.length - offset;
  if (n <= 0) return 'more';
  if (buf[offset] !== DUBBO_MAGIC_HIGH) return 'no';
  if (n < 2) return 'more';
  return buf[offset + 1] === DUBBO_MAGIC_LOW ? 'dubbo' : 'no';
}

// ---- ids ---------------------------------------------------------------------------------------

/**
 * Writes a new request id into a frame's header, in place (bytes 4..11 of `raw`). A DubboFrame object keeps
 * the id it was decoded with (idHi/idLo/id): keep it as the caller's id while the upstream sees the new one.
 */
export function rewriteId(raw: Buffer, id: bigint | number): void {
  if (typeof id === 'number') {
    if (!Number.isSafeInteger(id) || id < 0) throw invalidOption(`request id must be a non-negative safe integer, got ${id}`);
    rewriteIdParts(raw, Math.floor(id / TWO_32), id % TWO_32);
    return;
  }
  const u = BigInt.asUintN(64, id);
  rewriteIdParts(raw, Number(u >> 32n), Number(u & 0xffff_ffffn));
}

/** Writes a new request id given as two unsigned 32-bit halves (the cheapest form). */
export function rewriteIdParts(raw: Buffer, idHi: number, idLo: number): void {
  raw[4] = idHi >>> 24;
  raw[5] = idHi >>> 16;
  raw[6] = idHi >>> 8;
  raw[7] = idHi;
  raw[8] = idLo >>> 24;
  raw[9] = idLo >>> 16;
  raw[10] = idLo >>> 8;
  raw[11] = idLo;
}

// ---- limits ------------------------------------------------------------------------------------

export interface DubboDecoderOptions {
  /** Largest body accepted, from the header, before buffering (default 8 MiB, Dubbo's own default). */
  maxBodyBytes?: number;
  /** Serialization ids accepted (default [2], Hessian2 only). */
  serializations?: readonly number[];
}

/** Validated, frozen decoder options. Build once with dubboLimits() and share. */
export interface DubboLimits {
  readonly maxBodyBytes: number;
  /** Bit i set: serialization id i accepted. */
  readonly serializationMask: number;
}

/** Validates options eagerly; throws SluiceError ERR_DUBBO_INVALID_OPTION on a bad value. */
export function dubboLimits(options: DubboDecoderOptions = {}): DubboLimits {
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 0 || maxBodyBytes > 0xffff_ffff) {
    throw invalidOption(`maxBodyBytes must be an integer in [0, 4294967295], got ${String(maxBodyBytes)}`);
  }
  const ids = options.serializations ?? [SERIALIZATION_HESSIAN2];
  if (!Array.isArray(ids) || ids.length === 0) throw invalidOption('serializations must be a non-empty array of ids');
  let mask = 0;
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id > SERIALIZATION_MASK) {
      throw invalidOption(`serialization ids are integers in [0, 31], got ${String(id)}`);
    }
    mask |= 1 << id;
  }
  return Object.freeze({ maxBodyBytes, serializationMask: mask >>> 0 });
}

export const DEFAULT_LIMITS: DubboLimits = dubboLimits();

/**
 * Checks the header at `offset`. Returns the whole frame length (header + body) when the 16 header bytes
 * are there and acceptable, 0 when fewer than 16 bytes are there and the magic so far is right, or the
 * error. The body limit is checked here, from the header alone: nothing needs to be buffered to refuse.
 */
export function checkHeader(buf: Buffer, offset: number, limits: DubboLimits): number | DubboProtocolError {
  const n = buf.length - offset;
  if (n >= 1 && buf[offset] !== DUBBO_MAGIC_HIGH) return badMagic(buf[offset], -1);
  if (n >= 2 && buf[offset + 1] !== DUBBO_MAGIC_LOW) return badMagic(buf[offset], buf[offset + 1]);
  if (n < DUBBO_HEADER_LENGTH) return 0;
  const flag = buf[offset + 2];
  const bodyLength = u32(buf, offset + 12);
  if ((limits.serializationMask & (1 << (flag & SERIALIZATION_MASK))) === 0) {
    const h = parseHeader(buf, offset);
    return new DubboProtocolError(DubboErrorCode.SERIALIZATION,
      `serialization id ${h.serialization} is not accepted (id ${h.id}, ${h.isRequest ? 'request' : 'response'})`, h);
  }
  if (bodyLength > limits.maxBodyBytes) {
    const h = parseHeader(buf, offset);
    // Wording of ExchangeCodec.checkPayload, which Dubbo clients log.
    return new DubboProtocolError(DubboErrorCode.PAYLOAD_TOO_LARGE,
      `Data length too large: ${bodyLength}, max payload: ${limits.maxBodyBytes} (id ${h.id})`, h);
  }
  return DUBBO_HEADER_LENGTH + bodyLength;
}

function badMagic(b0: number, b1: number): DubboProtocolError {
  const got = b1 < 0 ? hex(b0) : `${hex(b0)} ${hex(b1)}`;
  return new DubboProtocolError(DubboErrorCode.BAD_MAGIC, `bad Dubbo magic: expected da bb, got ${got}`);
}

function hex(b: number): string {
  return b.toString(16).padStart(2, '0');
}

/**
 * Stateless decode of one frame at `offset`: the frame (raw is a zero-copy subarray of buf), null when
 * more bytes are needed, or the error (returned, not thrown).
 */
export function decodeFrame(buf: Buffer, offset = 0, limits: DubboLimits = DEFAULT_LIMITS): DubboFrame | DubboProtocolError | null {
  const total = checkHeader(buf, offset, limits);
  if (typeof total !== 'number') return total;
  if (total === 0 || buf.length - offset < total) return null;
  return frameAt(slice(buf, offset, total));
}

/** buf[offset, offset + total) without a new view when that is all of buf (subarray is not free). */
function slice(buf: Buffer, offset: number, total: number): Buffer {
  return offset === 0 && total === buf.length ? buf : buf.subarray(offset, offset + total);
}

function frameAt(raw: Buffer): DubboFrame {
  return new DubboFrame(raw, raw[2], raw[3], u32(raw, 4), u32(raw, 8), raw.length - DUBBO_HEADER_LENGTH);
}

// ---- incremental splitter ------------------------------------------------------------------------

export interface DubboFrameHandler {
  /** A whole frame. `frame.raw` may share memory with pushed chunks; do not mutate those after push. */
  onFrame(frame: DubboFrame): void;
  /** The stream is broken: answer `err.header` (if any and a two-way request), then close the connection. */
  onError(err: DubboProtocolError): void;
}

/**
 * Splits a byte stream into frames. Frames wholly inside one pushed chunk are zero-copy subarrays of it;
 * a frame spread over several chunks is copied once, when its last byte arrives (bytes are held as the
 * chunks that were pushed, so memory held is what the peer actually sent, never what a header announced).
 *
 * Errors are reported once, through onError, and kill the decoder: later pushes are ignored. Handlers
 * must not throw; if one does, the exception propagates out of push() and the decoder is destroyed.
 */
export class DubboFrameDecoder {
  private readonly handler: DubboFrameHandler;
  private readonly limits: DubboLimits;
  private parts: Buffer[] = [];
  private partsLength = 0;
  /** Length of the frame being gathered in parts, 0 while its header is incomplete. */
  private frameLength = 0;
  private dead = false;

  constructor(handler: DubboFrameHandler, options: DubboDecoderOptions | DubboLimits = {}) {
    this.handler = handler;
    this.limits = isLimits(options) ? options : dubboLimits(options);
  }

  /** True after an error or destroy(): no further frames will be reported. */
  get destroyed(): boolean {
    return this.dead;
  }

  /** Bytes held while waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.partsLength;
  }

  /** Drops buffered bytes and ignores all further input. */
  destroy(): void {
    this.dead = true;
    this.parts = [];
    this.partsLength = 0;
    this.frameLength = 0;
  }

  push(chunk: Buffer): void {
    if (this.dead || chunk.length === 0) return;
    if (this.partsLength === 0) {
      this.scan(chunk);
      return;
    }
    this.parts.push(chunk);
    this.partsLength += chunk.length;
    if (this.frameLength === 0) {
      // the held header is still incomplete: check what we have (at most 16 bytes are copied)
      const head = Buffer.concat(this.parts, Math.min(this.partsLength, DUBBO_HEADER_LENGTH));
      const total = checkHeader(head, 0, this.limits);
      if (typeof total !== 'number') return this.fail(total);
      if (total === 0) return;
      this.frameLength = total;
    }
    if (this.partsLength < this.frameLength) return;
    const total = this.frameLength;
    const last = this.parts[this.parts.length - 1];
    const rest = this.partsLength - total; // < last.length: the frame was incomplete before `last`
    const raw = Buffer.concat(this.parts, total);
    this.parts = [];
    this.partsLength = 0;
    this.frameLength = 0;
    this.emit(frameAt(raw));
    if (rest > 0 && !this.dead) this.scan(last.subarray(last.length - rest));
  }

  private scan(buf: Buffer): void {
    let off = 0;
    const limits = this.limits;
    while (off < buf.length) {
      const total = checkHeader(buf, off, limits);
      if (typeof total !== 'number') return this.fail(total);
      if (total === 0 || buf.length - off < total) {
        this.parts.push(off === 0 ? buf : buf.subarray(off));
        this.partsLength = buf.length - off;
        this.frameLength = total;
        return;
      }
      const raw = slice(buf, off, total);
      off += total;
      this.emit(frameAt(raw));
      if (this.dead) return;
    }
  }

  private emit(frame: DubboFrame): void {
    try {
      this.handler.onFrame(frame);
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  private fail(err: DubboProtocolError): void {
    this.destroy();
    this.handler.onError(err);
  }
}

function isLimits(o: DubboDecoderOptions | DubboLimits): o is DubboLimits {
  return Object.isFrozen(o) && typeof (o as DubboLimits).serializationMask === 'number';
}

/**
 * A heartbeat: an event frame whose body is the serialized null (Hessian2 'N'), as CodecSupport.isHeartBeat
 * checks. Other events (Dubbo's READONLY_EVENT "R" from a provider that is shutting down) are not heartbeats.
 */
export function isHeartbeat(frame: DubboFrame): boolean {
  return frame.isEvent && frame.bodyLength === 1 && frame.raw[DUBBO_HEADER_LENGTH] === 0x4e;
}

/**
 * A READONLY event (Request.READONLY_EVENT): an event request whose body is the Hessian2 string "R", sent by a
 * provider that is shutting down (HeaderExchangeHandler.handlerEvent compares the decoded data with "R").
 */
export function isReadonlyEvent(frame: DubboFrame): boolean {
  return frame.isEvent && frame.isRequest && frame.bodyLength === 2 && frame.raw[DUBBO_HEADER_LENGTH] === 0x01 && frame.raw[DUBBO_HEADER_LENGTH + 1] === 0x52;
}
