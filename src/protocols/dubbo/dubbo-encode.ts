/**
 * Encoders for Dubbo 2 frames with Hessian2 bodies: calls (tests, probes), responses, error responses,
 * heartbeats, and localReply() for calls Sluice refuses or cannot complete.
 *
 * Wire format matched (apache/dubbo):
 * - header: ExchangeCodec.encodeRequest / encodeResponse. Requests: flag = 0x80 | serialization id,
 *   | 0x40 when two-way, | 0x20 for events; status byte 0. Responses: flag = serialization id, | 0x20 for
 *   heartbeat responses; status byte = Response status. Then the 8-byte id and the 4-byte body length.
 * - call body: DubboCodec.encodeRequestData: writeUTF(dubbo version), writeUTF(path), writeUTF(version),
 *   writeUTF(method), writeUTF(parameter types descriptor), writeObject(each argument),
 *   writeAttachments(map) (a Java HashMap: Hessian2 'H' key value ... 'Z').
 * - OK response body: DubboCodec.encodeResponseData: writeByte(response type) (Hessian2ObjectOutput.writeByte
 *   writes a Hessian2 int), then the value or the Throwable, then, for protocol versions 2.0.2 ..
 *   2.0.99 (Version.isSupportResponseAttachment), the attachments with "dubbo" -> "2.0.2" added.
 * - non-OK response body: ExchangeCodec.encodeResponse: `out.writeUTF(res.getErrorMessage())`, a Hessian2
 *   string (or 'N' for null) and nothing else. This is what localReply writes.
 * - heartbeat: HeaderExchangeHandler / HeartbeatTimerTask send an event request whose data is null, encoded
 *   by encodeEventData as Hessian2 'N'; the answer is an event response, status OK, body 'N'
 *   (CodecSupport.isHeartBeat compares the payload with the serialized null).
 * - readonly event: HeaderExchangeServer.sendChannelReadOnlyEvent, on a provider's graceful shutdown: an event
 *   request, one-way, whose data is Request.READONLY_EVENT ("R"), encoded by encodeEventData as the Hessian2
 *   string "R" (01 52). The consumer's HeaderExchangeHandler.handlerEvent marks the channel read-only
 *   (channel.readonly) and sends no more calls on it; nothing is answered.
 *
 * Strings are written the way Java's Hessian2Output.writeString does: chunks of at most 0x8000 UTF-16 units
 * ('R' for non-final chunks, never ending a chunk on a high surrogate), the final chunk as [x00-x1f],
 * [x30-x33] b0 or 'S' b1 b0; each unit encoded on its own in 1-3 bytes (CESU-8). Arguments, response values
 * and exceptions are written by hessian.js (its `{ $class, $ }` conventions for Java types).
 */
import {
  DUBBO_HEADER_LENGTH, DUBBO_MAGIC_HIGH, DUBBO_MAGIC_LOW, DubboResponseType, DubboStatus, FLAG_EVENT, FLAG_REQUEST, FLAG_TWOWAY,
  SERIALIZATION_HESSIAN2,
} from './dubbo-frame';
import { invalidOption } from './dubbo-errors';
import { newEncoder, type HessianValue } from './hessian-js';

/** A request id: a bigint, a non-negative safe integer, or the two 32-bit halves of a DubboHeader. */
export type DubboId = bigint | number | { readonly idHi: number; readonly idLo: number };

/** Dubbo protocol version written by current Dubbo releases (Version.DEFAULT_DUBBO_PROTOCOL_VERSION). */
export const DEFAULT_DUBBO_VERSION = '2.0.2';

const TWO_32 = 0x1_0000_0000;
const NULL_BODY = Buffer.from([0x4e]);

// ---- header ---------------------------------------------------------------------------------------

function idParts(id: DubboId): [number, number] {
  if (typeof id === 'number') {
    if (!Number.isSafeInteger(id) || id < 0) throw invalidOption(`request id must be a non-negative safe integer, got ${id}`);
    return [Math.floor(id / TWO_32), id % TWO_32];
  }
  if (typeof id === 'bigint') {
    const u = BigInt.asUintN(64, id);
    return [Number(u >> 32n), Number(u & 0xffff_ffffn)];
  }
  return [id.idHi >>> 0, id.idLo >>> 0];
}

/** A whole frame: header (flag, status, id, body length) followed by `body`. */
export function encodeFrame(flag: number, status: number, id: DubboId, body: Buffer): Buffer {
  const [hi, lo] = idParts(id);
  const frame = Buffer.allocUnsafe(DUBBO_HEADER_LENGTH + body.length);
  frame[0] = DUBBO_MAGIC_HIGH;
  frame[1] = DUBBO_MAGIC_LOW;
  frame[2] = flag & 0xff;
  frame[3] = status & 0xff;
  frame.writeUInt32BE(hi, 4);
  frame.writeUInt32BE(lo, 8);
  frame.writeUInt32BE(body.length, 12);
  body.copy(frame, DUBBO_HEADER_LENGTH);
  return frame;
}

// ---- a minimal Hessian2 writer (strings, ints, null, string maps) -----------------------------------

class Hessian2Writer {
  private parts: Buffer[] = [];

  bytes(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  null(): this {
    return this.bytes(NULL_BODY);
  }

  int(v: number): this {
    let b: Buffer;
    if (v >= -0x10 && v <= 0x2f) b = Buffer.from([0x90 + v]);
    else if (v >= -0x800 && v <= 0x7ff) b = Buffer.from([0xc8 + (v >> 8), v & 0xff]);
    else if (v >= -0x40000 && v <= 0x3ffff) b = Buffer.from([0xd4 + (v >> 16), (v >> 8) & 0xff, v & 0xff]);
    else {
      b = Buffer.allocUnsafe(5);
      b[0] = 0x49;
      b.writeInt32BE(v | 0, 1);
    }
    return this.bytes(b);
  }

  string(s: string | null): this {
    if (s === null) return this.null();
    let length = s.length;
    let offset = 0;
    while (length > 0x8000) {
      let sub = 0x8000;
      const tail = s.charCodeAt(offset + sub - 1);
      if (tail >= 0xd800 && tail <= 0xdbff) sub--;
      this.bytes(Buffer.from([0x52, sub >> 8, sub & 0xff]));
      this.bytes(cesu8(s, offset, offset + sub));
      length -= sub;
      offset += sub;
    }
    if (length <= 0x1f) this.bytes(Buffer.from([length]));
    else if (length <= 0x3ff) this.bytes(Buffer.from([0x30 + (length >> 8), length & 0xff]));
    else this.bytes(Buffer.from([0x53, length >> 8, length & 0xff]));
    return this.bytes(cesu8(s, offset, offset + length));
  }

  /** A Java HashMap<String, String> as Hessian2 writes it: 'H' (key value)* 'Z'. */
  stringMap(entries: Iterable<[string, string]>): this {
    this.bytes(Buffer.from([0x48]));
    for (const [k, v] of entries) this.string(k).string(v);
    return this.bytes(Buffer.from([0x5a]));
  }

  finish(): Buffer {
    return this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts);
  }
}

/** UTF-16 units of s[start, end) each encoded in 1-3 bytes, as Hessian2Output.printString does. */
function cesu8(s: string, start: number, end: number): Buffer {
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (s.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return Buffer.from(start === 0 && end === s.length ? s : s.slice(start, end), 'latin1');
  const out = Buffer.allocUnsafe((end - start) * 3);
  let p = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) out[p++] = c;
    else if (c < 0x800) {
      out[p++] = 0xc0 | (c >> 6);
      out[p++] = 0x80 | (c & 0x3f);
    } else {
      out[p++] = 0xe0 | (c >> 12);
      out[p++] = 0x80 | ((c >> 6) & 0x3f);
      out[p++] = 0x80 | (c & 0x3f);
    }
  }
  return out.subarray(0, p);
}

/** The Hessian2 bytes of one string (or 'N' for null), as Java writes it. */
export function hessian2String(s: string | null): Buffer {
  return new Hessian2Writer().string(s).finish();
}

function entriesOf(a: Readonly<Record<string, string>> | ReadonlyMap<string, string> | undefined): [string, string][] {
  if (a === undefined) return [];
  if (a instanceof Map) return [...(a as ReadonlyMap<string, string>).entries()];
  return Object.entries(a as Record<string, string>);
}

function hessianValues(values: readonly HessianValue[]): Buffer {
  if (values.length === 0) return Buffer.alloc(0);
  const enc = newEncoder();
  for (const v of values) enc.write(v);
  return enc.get();
}

function checkSerialization(serialization: number): void {
  if (serialization !== SERIALIZATION_HESSIAN2) {
    throw invalidOption(`only Hessian2 (serialization id 2) bodies can be encoded, got ${serialization}`);
  }
}

// ---- calls ------------------------------------------------------------------------------------------

export interface DubboCallSpec {
  id: DubboId;
  /** Default true (a call that expects an answer). */
  twoWay?: boolean;
  /** Default "2.0.2". */
  dubboVersion?: string;
  /** Service path (interface name). */
  service: string;
  /** Service version; default "0.0.0" (DubboInvoker's default); null writes Hessian2 null. */
  version?: string | null;
  method: string;
  /** Concatenated JVM descriptors, one per argument (see javaNamesToDescriptor). Default ''. */
  paramTypes?: string;
  /** Arguments in hessian.js form. */
  args?: readonly HessianValue[];
  /** Attachments (Dubbo 2: strings). Written in iteration order. */
  attachments?: Readonly<Record<string, string>> | ReadonlyMap<string, string>;
  /** Must be 2 (Hessian2), the default. */
  serialization?: number;
}

/** Body of a call (DubboCodec.encodeRequestData). */
export function encodeRequestBody(spec: Omit<DubboCallSpec, 'id' | 'twoWay' | 'serialization'>): Buffer {
  const w = new Hessian2Writer()
    .string(spec.dubboVersion ?? DEFAULT_DUBBO_VERSION)
    .string(spec.service)
    .string(spec.version === undefined ? '0.0.0' : spec.version)
    .string(spec.method)
    .string(spec.paramTypes ?? '');
  w.bytes(hessianValues(spec.args ?? []));
  w.stringMap(entriesOf(spec.attachments));
  return w.finish();
}

/** A whole call frame. */
export function encodeRequest(spec: DubboCallSpec): Buffer {
  const serialization = spec.serialization ?? SERIALIZATION_HESSIAN2;
  checkSerialization(serialization);
  const flag = FLAG_REQUEST | (spec.twoWay === false ? 0 : FLAG_TWOWAY) | serialization;
  return encodeFrame(flag, 0, spec.id, encodeRequestBody(spec));
}

// ---- responses --------------------------------------------------------------------------------------

/**
 * Version.isSupportResponseAttachment: protocol versions 2.0.2 .. 2.0.99 (as ints 2000200 .. 2009900)
 * carry response attachments. Version.getIntVersion: each dot-separated part's leading digits, two decimal
 * places per part, times 100 when there are exactly three parts; unparsable -> 1.0.0 (10000).
 */
export function isSupportResponseAttachment(version: string | null | undefined): boolean {
  if (!version) return false;
  const v = intVersion(version);
  return v >= 2000200 && v <= 2009900;
}

function intVersion(version: string): number {
  const parts = version.split('.');
  let v = 0;
  for (let i = 0; i < parts.length; i++) {
    const digits = /^[0-9]*/.exec(parts[i])![0];
    if (digits.length > 0) {
      const n = Number(digits);
      if (n > 0x7fff_ffff) return 10000; // Integer.parseInt would throw
      v = javaIntCast(v + n * 10 ** ((parts.length - i - 1) * 2)); // `int += double` in Java
    }
  }
  return parts.length === 3 ? Math.imul(v, 100) : v;
}

/** Java's (int) cast of a double: truncate, saturate at the int range. */
function javaIntCast(x: number): number {
  if (x >= 0x7fff_ffff) return 0x7fff_ffff;
  if (x <= -0x8000_0000) return -0x8000_0000;
  return Math.trunc(x);
}

export interface DubboResultSpec {
  id: DubboId;
  /** The returned value (hessian.js form). undefined or null: a null result. */
  value?: HessianValue;
  /** A Throwable in hessian.js form, e.g. { $class: 'java.lang.RuntimeException', $: { detailMessage: 'x' } }. */
  exception?: HessianValue;
  attachments?: Readonly<Record<string, string>> | ReadonlyMap<string, string>;
  /**
   * The dubbo version of the request being answered (Dubbo echoes it): the _WITH_ATTACHMENTS forms are used
   * for 2.0.2 .. 2.0.99. Default "2.0.2".
   */
  requestDubboVersion?: string;
  serialization?: number;
}

/** Body of an OK response (DubboCodec.encodeResponseData). */
export function encodeResultBody(spec: Omit<DubboResultSpec, 'id' | 'serialization'>): Buffer {
  const attach = isSupportResponseAttachment(spec.requestDubboVersion ?? DEFAULT_DUBBO_VERSION);
  const w = new Hessian2Writer();
  if (spec.exception !== undefined && spec.exception !== null) {
    w.int(attach ? DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS : DubboResponseType.WITH_EXCEPTION);
    w.bytes(hessianValues([spec.exception]));
  } else if (spec.value === undefined || spec.value === null) {
    w.int(attach ? DubboResponseType.NULL_VALUE_WITH_ATTACHMENTS : DubboResponseType.NULL_VALUE);
  } else {
    w.int(attach ? DubboResponseType.VALUE_WITH_ATTACHMENTS : DubboResponseType.VALUE);
    w.bytes(hessianValues([spec.value]));
  }
  if (attach) {
    const map = new Map(entriesOf(spec.attachments));
    map.set('dubbo', DEFAULT_DUBBO_VERSION); // result.getObjectAttachments().put(DUBBO_VERSION_KEY, ...)
    w.stringMap(map);
  }
  return w.finish();
}

/** A whole OK response frame carrying a value, a null or an exception. */
export function encodeResponse(spec: DubboResultSpec): Buffer {
  const serialization = spec.serialization ?? SERIALIZATION_HESSIAN2;
  checkSerialization(serialization);
  return encodeFrame(serialization, DubboStatus.OK, spec.id, encodeResultBody(spec));
}

/** A non-OK response: the status byte, and the message as one Hessian2 string (null: 'N'). */
export function encodeErrorResponse(id: DubboId, status: number, message: string | null, serialization = SERIALIZATION_HESSIAN2): Buffer {
  checkSerialization(serialization);
  if (!Number.isInteger(status) || status < 0 || status > 0xff || status === DubboStatus.OK) {
    throw invalidOption(`an error response needs a status byte other than OK (20), got ${status}`);
  }
  return encodeFrame(serialization, status, id, hessian2String(message));
}

/**
 * The answer Sluice sends for a call it refuses or cannot complete (rate limited, denied, no route,
 * upstream failed, frame refused): a response with `status` (a DubboStatus other than OK) and `message`,
 * exactly as a Dubbo provider answers a failed call, so the caller's Dubbo client raises an error instead
 * of waiting for its timeout. The body is always Hessian2 (the only serialization encoded here), so the
 * header says 2 whatever `serialization` the call used: a header must name the body's real serialization,
 * and every Dubbo client can read Hessian2.
 */
export function localReply(id: DubboId, status: number, message: string, serialization: number = SERIALIZATION_HESSIAN2): Buffer {
  return encodeErrorResponse(id, status, message, SERIALIZATION_HESSIAN2);
}

// ---- heartbeats -------------------------------------------------------------------------------------

/** Heartbeat request: event + request (+ two-way) flags, body Hessian2 null. */
export function encodeHeartbeatRequest(id: DubboId, twoWay = true): Buffer {
  const flag = FLAG_REQUEST | (twoWay ? FLAG_TWOWAY : 0) | FLAG_EVENT | SERIALIZATION_HESSIAN2;
  return encodeFrame(flag, 0, id, NULL_BODY);
}

/** Request.READONLY_EVENT: the data of the event a provider sends to each consumer when it shuts down. */
export const READONLY_EVENT = 'R';
const READONLY_BODY = Buffer.from([0x01, 0x52]); // Hessian2 compact string "R"

/**
 * The READONLY event (HeaderExchangeServer.sendChannelReadOnlyEvent): request + event flags, one-way, body the
 * Hessian2 string "R". A Dubbo consumer stops sending new calls on the connection and keeps waiting for the
 * answers to the calls it already sent.
 */
export function encodeReadonlyEvent(id: DubboId): Buffer {
  return encodeFrame(FLAG_REQUEST | FLAG_EVENT | SERIALIZATION_HESSIAN2, 0, id, READONLY_BODY);
}

/** Heartbeat response: event flag, status OK, body Hessian2 null. */
export function encodeHeartbeatResponse(id: DubboId): Buffer {
  return encodeFrame(FLAG_EVENT | SERIALIZATION_HESSIAN2, DubboStatus.OK, id, NULL_BODY);
}
