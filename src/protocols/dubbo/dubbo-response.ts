/**
 * Lazy view of a Dubbo 2 response frame. Body layouts (apache/dubbo DubboCodec.encodeResponseData and
 * ExchangeCodec.encodeResponse; read back by DecodeableRpcResult.decode):
 *
 *   status OK (20), not an event:
 *     int     response type (written with writeByte, which Hessian2ObjectOutput writes as an int)
 *               0 RESPONSE_WITH_EXCEPTION                      value: the Throwable
 *               1 RESPONSE_VALUE                               value: the result
 *               2 RESPONSE_NULL_VALUE                          (nothing)
 *               3 RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS     value, then the attachments map
 *               4 RESPONSE_VALUE_WITH_ATTACHMENTS              value, then the attachments map
 *               5 RESPONSE_NULL_VALUE_WITH_ATTACHMENTS         the attachments map
 *     (the _WITH_ATTACHMENTS forms are written when the request's dubbo version is 2.0.2 .. 2.0.99)
 *   status not OK:
 *     string  error message (writeUTF; null possible)
 *   event (heartbeat response): the event data, Hessian2 null 'N' for a heartbeat.
 *
 * Errors: every method that reads the body throws DubboProtocolError ERR_DUBBO_BAD_BODY on a body Dubbo
 * could not have written, and nothing else.
 */
import { SluiceError } from '../../errors';
import { DUBBO_HEADER_LENGTH, DubboFrame, DubboResponseType, DubboStatus, SERIALIZATION_HESSIAN2, isHeartbeat } from './dubbo-frame';
import { DubboErrorCode, DubboProtocolError, ERR_DUBBO_INVALID_OPTION } from './dubbo-errors';
import { Hessian2Reader } from './hessian2-reader';
import { newDecoder } from './hessian-js';
import { encodeFrame, hessian2String, isSupportResponseAttachment } from './dubbo-encode';

/** Hessian2 untyped map start and end. */
const MAP_START = Buffer.from([0x48]);
const MAP_END = Buffer.from([0x5a]);

export class DubboResponse {
  readonly frame: DubboFrame;
  /** Status byte of the header. */
  readonly status: number;
  readonly isEvent: boolean;
  private type = -1;
  private valueStart = -1;
  private attachmentMap: Map<string, string> | null = null;
  private scanError: DubboProtocolError | null = null;

  private constructor(frame: DubboFrame) {
    this.frame = frame;
    this.status = frame.status;
    this.isEvent = frame.isEvent;
  }

  /**
   * View of a response frame (nothing of the body is read yet). A request frame is a caller bug
   * (SluiceError ERR_DUBBO_INVALID_OPTION); a non-Hessian2 body throws DubboProtocolError
   * ERR_DUBBO_SERIALIZATION.
   */
  static fromFrame(frame: DubboFrame): DubboResponse {
    if (frame.isRequest) throw new SluiceError(ERR_DUBBO_INVALID_OPTION, 'DubboResponse.fromFrame needs a response frame, got a request');
    if (frame.serialization !== SERIALIZATION_HESSIAN2) {
      throw new DubboProtocolError(DubboErrorCode.SERIALIZATION,
        `cannot read a body with serialization id ${frame.serialization} (only Hessian2, id 2)`, frame);
    }
    return new DubboResponse(frame);
  }

  get isOk(): boolean {
    return this.status === DubboStatus.OK;
  }

  get isHeartbeat(): boolean {
    return isHeartbeat(this.frame);
  }

  private fail(message: string): never {
    throw new DubboProtocolError(DubboErrorCode.BAD_BODY, message, this.frame);
  }

  /** Error message of a non-OK response (null when the sender wrote null); null for an OK one. */
  errorMessage(): string | null {
    if (this.isOk) return null;
    const raw = this.frame.raw;
    return new Hessian2Reader(raw, DUBBO_HEADER_LENGTH, raw.length, this.frame).readStringOrNull();
  }

  /** Response type (DubboResponseType) of an OK, non-event response. Throws on anything else. */
  responseType(): DubboResponseType {
    if (this.type >= 0) return this.type as DubboResponseType;
    if (!this.isOk || this.isEvent) this.fail(`no response type: ${this.isEvent ? 'event' : `status ${this.status}`}`);
    const raw = this.frame.raw;
    const r = new Hessian2Reader(raw, DUBBO_HEADER_LENGTH, raw.length, this.frame);
    const t = r.readInt();
    if (t < 0 || t > 5) this.fail(`unknown response type ${t}`);
    this.type = t;
    this.valueStart = r.pos;
    return t as DubboResponseType;
  }

  /** True for an OK response that carries an exception (types 0 and 3). */
  isException(): boolean {
    const t = this.responseType();
    return t === DubboResponseType.WITH_EXCEPTION || t === DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS;
  }

  /** True when the response type carries an attachments map (types 3, 4, 5). */
  hasAttachments(): boolean {
    return this.responseType() >= DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS;
  }

  /**
   * The returned value, decoded by hessian.js: null for the NULL_VALUE types, undefined when the call
   * ended with an exception (see exception()).
   */
  value(withType = false): unknown {
    const t = this.responseType();
    if (t === DubboResponseType.NULL_VALUE || t === DubboResponseType.NULL_VALUE_WITH_ATTACHMENTS) return null;
    if (t === DubboResponseType.WITH_EXCEPTION || t === DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS) return undefined;
    return this.decodeValue(withType);
  }

  /** The exception object (hessian.js decoding of the Java Throwable), or undefined when there is none. */
  exception(withType = false): unknown {
    return this.isException() ? this.decodeValue(withType) : undefined;
  }

  private decodeValue(withType: boolean): unknown {
    const raw = this.frame.raw;
    // step over it first: proves the value is well formed and bounds what hessian.js gets to read
    const r = new Hessian2Reader(raw, this.valueStart, raw.length, this.frame);
    r.skipValue();
    try {
      return newDecoder(raw.subarray(this.valueStart, r.pos)).read(withType);
    } catch (e) {
      return this.fail(`response value does not decode: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  /** One attachment (see DubboRequest.attachment for value conversion); undefined if none. */
  attachment(name: string): string | undefined {
    return this.attachments().get(name);
  }

  /** Attachments of an OK response (empty map for the types without them and for errors/events). */
  attachments(): ReadonlyMap<string, string> {
    if (this.attachmentMap !== null) return this.attachmentMap;
    const err = this.scanAttachments();
    if (err !== null) throw err;
    return this.attachmentMap!;
  }

  /**
   * The response frame with its attachments changed (`set` entries replace or add, `remove` names
   * go, every other entry is copied as it was, the value is not touched), or null when this
   * response cannot carry attachments: an answer that is not OK (its body is an error message),
   * an event, or a response without attachments to a call whose dubbo version predates response
   * attachments (only 2.0.2 .. 2.0.99 consumers read them: Dubbo writes the _WITH_ATTACHMENTS types
   * for those alone). A response without attachments gets its type's _WITH_ATTACHMENTS form.
   * Throws DubboProtocolError ERR_DUBBO_BAD_BODY on a body that cannot be stepped through.
   */
  withAttachments(set: ReadonlyArray<readonly [string, string]>, remove: readonly string[], requestDubboVersion: string): Buffer | null {
    if (!this.isOk || this.isEvent) return null;
    const t = this.responseType();
    const raw = this.frame.raw;
    const r = new Hessian2Reader(raw, this.valueStart, raw.length, this.frame);
    if (t !== DubboResponseType.NULL_VALUE && t !== DubboResponseType.NULL_VALUE_WITH_ATTACHMENTS) r.skipValue();
    const valueEnd = r.pos;
    let type: number = t;
    let kept: Array<{ key: string | null; start: number; end: number }> = [];
    if (t >= DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS) {
      kept = r.mapEntries();
    } else {
      if (!isSupportResponseAttachment(requestDubboVersion)) return null;
      type = t + 3; // WITH_EXCEPTION → _WITH_ATTACHMENTS, VALUE → ..., NULL_VALUE → ...
    }
    const drop = new Set<string>(remove);
    for (const [k] of set) drop.add(k);
    // the type is a compact Hessian2 int (0x90 + n), as Java writes 0..5
    const parts: Buffer[] = [Buffer.from([0x90 + type]), raw.subarray(this.valueStart, valueEnd), MAP_START];
    for (const e of kept) if (e.key === null || !drop.has(e.key)) parts.push(raw.subarray(e.start, e.end));
    for (const [k, v] of set) parts.push(hessian2String(k), hessian2String(v));
    parts.push(MAP_END);
    return encodeFrame(raw[2], raw[3], this.frame, Buffer.concat(parts));
  }

  /** Reads the attachments once; returns the error as a value instead of throwing. */
  scanAttachments(): DubboProtocolError | null {
    if (this.attachmentMap !== null) return null;
    if (this.scanError !== null) return this.scanError;
    const map = new Map<string, string>();
    try {
      if (this.isOk && !this.isEvent) {
        const t = this.responseType();
        if (t >= DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS) {
          const raw = this.frame.raw;
          const r = new Hessian2Reader(raw, this.valueStart, raw.length, this.frame);
          if (t !== DubboResponseType.NULL_VALUE_WITH_ATTACHMENTS) r.skipValue();
          r.readStringMap(map);
        }
      }
    } catch (err) {
      if (!(err instanceof DubboProtocolError)) throw err;
      this.scanError = err;
      return err;
    }
    this.attachmentMap = map;
    return null;
  }
}
