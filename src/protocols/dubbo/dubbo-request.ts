/**
 * Lazy view of a Dubbo 2 call (a request frame's Hessian2 body), as DubboCodec.encodeRequestData writes it
 * (apache/dubbo dubbo-rpc-dubbo DubboCodec.java; read back by DecodeableRpcInvocation.decode):
 *
 *   string  dubbo protocol version   e.g. "2.0.2"                  -> dubboVersion
 *   string  service path             the interface name            -> service
 *   string  service version          null when the call has none   -> version ('' for null)
 *   string  method name                                            -> method
 *   [int]   -1                       dubbox (dangdang) only, skipped
 *   string  parameter types          JVM descriptors, e.g. "Ljava/lang/String;I[J" -> paramTypes
 *   value*  arguments                one Hessian2 value per descriptor
 *   map     attachments              Map<String, String> ('H' ... 'Z'); may be absent or null
 *
 * The five leading strings are read when the view is built (cheap: a few short ASCII runs). The
 * attachments sit behind the arguments: reaching them steps over the arguments with Hessian2Reader,
 * building nothing. Arguments are decoded (by hessian.js) only when arguments() is called.
 *
 * Errors: fromFrame/fromBody and every method that reads past the leading strings (attachment,
 * attachments, group, parameterTypeNames, argumentCount, arguments) throw DubboProtocolError with code
 * ERR_DUBBO_BAD_BODY for a body Dubbo could not have written, and nothing else. scanAttachments() is the
 * non-throwing way in: it returns the error as a value, and once it returned null the attachment
 * accessors cannot throw.
 */
import { SluiceError } from '../../errors';
import { DUBBO_HEADER_LENGTH, DubboFrame, DubboHeader, SERIALIZATION_HESSIAN2 } from './dubbo-frame';
import { DubboErrorCode, DubboProtocolError, ERR_DUBBO_INVALID_OPTION } from './dubbo-errors';
import { Hessian2Reader } from './hessian2-reader';
import { newDecoder } from './hessian-js';
import { encodeFrame, hessian2String } from './dubbo-encode';

/** Hessian2 untyped map start and end. */
const MAP_START = Buffer.from([0x48]);
const MAP_END = Buffer.from([0x5a]);

export class DubboRequest {
  /** The frame this view reads, when built with fromFrame. */
  readonly frame: DubboFrame | null;
  readonly header: DubboHeader | null;
  /** Bytes holding the body (the frame's raw bytes when built from a frame), and where the body starts. */
  private readonly buf: Buffer;
  private readonly bodyStart: number;
  /** Dubbo protocol version written by the caller (e.g. "2.0.2"); '' when null. */
  readonly dubboVersion: string;
  /** Service path: the interface name, e.g. "org.apache.dubbo.demo.DemoService". */
  readonly service: string;
  /** Service version; '' when the caller sent none (null). */
  readonly version: string;
  readonly method: string;
  /** Parameter types as sent: concatenated JVM descriptors ('' for no arguments). */
  readonly paramTypes: string;

  private readonly argsStart: number;
  private argsEnd = -1;
  private attachmentMap: Map<string, string> | null = null;
  private scanError: DubboProtocolError | null = null;
  private args: unknown[] | null = null;

  private constructor(buf: Buffer, bodyStart: number, frame: DubboFrame | null, header: DubboHeader | null) {
    this.frame = frame;
    this.header = header;
    this.buf = buf;
    this.bodyStart = bodyStart;
    const r = new Hessian2Reader(buf, bodyStart, buf.length, header);
    this.dubboVersion = r.readStringOrNull() ?? '';
    this.service = r.readStringOrNull() ?? '';
    this.version = r.readStringOrNull() ?? '';
    this.method = r.readStringOrNull() ?? '';
    const tag = r.peek();
    if ((tag >= 0x80 && tag <= 0xd7) || tag === 0x49) r.readInt(); // dubbox writes an int (-1) here
    this.paramTypes = r.readStringOrNull() ?? '';
    this.argsStart = r.pos;
  }

  /**
   * View of a request frame. Throws DubboProtocolError ERR_DUBBO_BAD_BODY when the leading strings are
   * not readable, ERR_DUBBO_SERIALIZATION when the body is not Hessian2. A frame that is not a call (a
   * response or an event) is a caller bug: SluiceError ERR_DUBBO_INVALID_OPTION.
   */
  static fromFrame(frame: DubboFrame): DubboRequest {
    if (!frame.isRequest || frame.isEvent) {
      throw new SluiceError(ERR_DUBBO_INVALID_OPTION, `DubboRequest.fromFrame needs a call, got a ${frame.isRequest ? 'request event' : 'response'}`);
    }
    if (frame.serialization !== SERIALIZATION_HESSIAN2) {
      throw new DubboProtocolError(DubboErrorCode.SERIALIZATION,
        `cannot read a body with serialization id ${frame.serialization} (only Hessian2, id 2)`, frame);
    }
    return new DubboRequest(frame.raw, DUBBO_HEADER_LENGTH, frame, frame);
  }

  /** View of a Hessian2 request body alone (header optional, used in errors). Throws like fromFrame. */
  static fromBody(body: Buffer, header: DubboHeader | null = null): DubboRequest {
    return new DubboRequest(body, 0, null, header);
  }

  /** The Hessian2 body. */
  get body(): Buffer {
    return this.frame !== null ? this.frame.body : this.buf;
  }

  /**
   * The method the provider runs. A generic call (`$invoke` / `$invokeAsync`, GenericService)
   * names it in its first argument, a string; routes must see that one, not `$invoke`, or a rule
   * denying a method is walked around by calling it generically. Throws like attachment() when
   * that argument is not readable.
   */
  get invokedMethod(): string {
    if (this.invoked !== null) return this.invoked;
    let m = this.method;
    if ((m === '$invoke' || m === '$invokeAsync') && this.paramTypes.startsWith('Ljava/lang/String;')) {
      const r = new Hessian2Reader(this.buf, this.argsStart, this.buf.length, this.header);
      m = r.readStringOrNull() ?? m;
    }
    this.invoked = m;
    return m;
  }

  private invoked: string | null = null;

  /** The `group` attachment (routing: service group), or undefined. Throws like attachment(). */
  get group(): string | undefined {
    return this.attachment('group');
  }

  /**
   * One attachment. Values that are strings come back as they are; ints, longs, doubles and booleans as
   * their decimal text; null or structured values (lists, maps, objects) as undefined.
   * Throws DubboProtocolError ERR_DUBBO_BAD_BODY when the body cannot be stepped through.
   */
  attachment(name: string): string | undefined {
    return this.attachments().get(name);
  }

  /** All attachments (see attachment() for values). Computed once. Throws like attachment(). */
  attachments(): ReadonlyMap<string, string> {
    if (this.attachmentMap !== null) return this.attachmentMap;
    const err = this.scanAttachments();
    if (err !== null) throw err;
    return this.attachmentMap!;
  }

  /**
   * Steps over the arguments and reads the attachments, once. Returns the error as a value (and then
   * every attachment accessor throws it), or null (and then none of them throws).
   */
  scanAttachments(): DubboProtocolError | null {
    if (this.attachmentMap !== null) return null;
    if (this.scanError !== null) return this.scanError;
    try {
      const count = countParamTypes(this.paramTypes);
      if (count < 0) {
        throw new DubboProtocolError(DubboErrorCode.BAD_BODY, `bad parameter types descriptor ${JSON.stringify(this.paramTypes.slice(0, 200))}`, this.header);
      }
      const r = new Hessian2Reader(this.buf, this.argsStart, this.buf.length, this.header);
      for (let i = 0; i < count; i++) r.skipValue();
      this.argsEnd = r.pos;
      const map = new Map<string, string>();
      // Dubbo always writes the map; an old or minimal client may end the body after the arguments.
      if (!r.atEnd()) r.readStringMap(map);
      this.attachmentMap = map;
      return null;
    } catch (err) {
      if (!(err instanceof DubboProtocolError)) throw err;
      this.scanError = err;
      return err;
    }
  }

  /**
   * The call's frame with its attachments changed: `set` entries replace or add, `remove` names
   * go; every other entry (structured values included) is copied as it was, and the arguments
   * are not touched. The id is the frame's. Throws like attachment() on a body that cannot be read.
   */
  withAttachments(set: ReadonlyArray<readonly [string, string]>, remove: readonly string[]): Buffer {
    const err = this.scanAttachments();
    if (err !== null) throw err;
    const header = this.frame;
    if (header === null) throw new SluiceError(ERR_DUBBO_INVALID_OPTION, 'withAttachments needs a request built from a frame');
    const drop = new Set<string>(remove);
    for (const [k] of set) drop.add(k);
    const r = new Hessian2Reader(this.buf, this.argsEnd, this.buf.length, this.header);
    const kept = r.atEnd() ? [] : r.mapEntries();
    const parts: Buffer[] = [this.buf.subarray(this.bodyStart, this.argsEnd), MAP_START];
    for (const e of kept) if (e.key === null || !drop.has(e.key)) parts.push(this.buf.subarray(e.start, e.end));
    for (const [k, v] of set) parts.push(hessian2String(k), hessian2String(v));
    parts.push(MAP_END);
    const body = Buffer.concat(parts);
    return encodeFrame(header.raw[2], header.raw[3], header, body);
  }

  /** Parameter types as Java names ("java.lang.String", "int", "long[]"). Throws on a bad descriptor. */
  parameterTypeNames(): string[] {
    const names = descriptorToJavaNames(this.paramTypes);
    if (names === null) {
      throw new DubboProtocolError(DubboErrorCode.BAD_BODY, `bad parameter types descriptor ${JSON.stringify(this.paramTypes.slice(0, 200))}`, this.header);
    }
    return names;
  }

  /** Number of arguments (one per parameter type). Throws on a bad descriptor. */
  argumentCount(): number {
    const n = countParamTypes(this.paramTypes);
    if (n < 0) return this.parameterTypeNames().length; // throws the descriptor error
    return n;
  }

  /**
   * The arguments, fully decoded by hessian.js (plain JS values; with `withType`, hessian.js's
   * `{ $class, $ }` wrappers). Decoded once and cached per `withType`; the same array is returned again.
   * Throws DubboProtocolError ERR_DUBBO_BAD_BODY when the arguments do not decode. hessian.js cannot read
   * the variable-length list forms (0x55, 0x57) that Java writes only for iterators; those throw too.
   */
  arguments(withType = false): unknown[] {
    if (!withType && this.args !== null) return this.args;
    const err = this.scanAttachments();
    if (err !== null) throw err;
    const count = countParamTypes(this.paramTypes);
    const values: unknown[] = [];
    try {
      const d = newDecoder(this.buf.subarray(this.argsStart, this.argsEnd));
      for (let i = 0; i < count; i++) values.push(d.read(withType));
    } catch (e) {
      throw new DubboProtocolError(DubboErrorCode.BAD_BODY, `arguments do not decode: ${(e as Error)?.message ?? String(e)}`, this.header);
    }
    if (!withType) this.args = values;
    return values;
  }
}

// ---- JVM descriptors ---------------------------------------------------------------------------------

const PRIMITIVES: Record<string, string> = {
  Z: 'boolean', B: 'byte', C: 'char', D: 'double', F: 'float', I: 'int', J: 'long', S: 'short', V: 'void',
};

/** Characters of a class name in a descriptor: 1 may start an identifier, 2 may continue one. */
const IDENT = new Uint8Array(128);
for (const c of '_$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ') IDENT[c.charCodeAt(0)] = 1;
for (const c of '0123456789') IDENT[c.charCodeAt(0)] = 2;

/** `ident ( "/" ident )*` with ident = [_$a-zA-Z][_$a-zA-Z0-9]*, between start and end. */
function isClassName(desc: string, start: number, end: number): boolean {
  let first = true;
  for (let i = start; i < end; i++) {
    const c = desc.charCodeAt(i);
    if (c === 0x2f /* / */) {
      if (first) return false;
      first = true;
      continue;
    }
    const k = c < 128 ? IDENT[c] : 0;
    if (k === 0 || (first && k !== 1)) return false;
    first = false;
  }
  return !first;
}

/**
 * Number of types in a JVM descriptor list ("Ljava/lang/String;I[J" is 3), or -1 when it is not one:
 * each type is `[`* then a primitive letter (ZBCDFIJSV) or `L` class name `;`, the class name being
 * identifiers of ASCII letters, digits, `_` and `$` joined by `/`.
 *
 * Exactly the grammar of ReflectUtils.DESC_PATTERN, and for a reason: Java Dubbo (2.6, 2.7) counts
 * a call's arguments by finding that pattern in the descriptor, skipping what does not match, and
 * reads the attachments after that many values. A looser rule here would count differently on a
 * descriptor such as `Lx.I.Ljava/util/Map;` (1 type here, `I` and `Map` there), so that Sluice took
 * an argument for the attachments and the provider read another map, with another `path`.
 */
export function countParamTypes(desc: string): number {
  let n = 0;
  let i = 0;
  const len = desc.length;
  while (i < len) {
    let c = desc.charCodeAt(i);
    let dims = 0;
    while (c === 0x5b /* [ */) {
      if (++dims > 255) return -1; // the JVM's limit
      if (++i >= len) return -1;
      c = desc.charCodeAt(i);
    }
    if (c === 0x4c /* L */) {
      const semi = desc.indexOf(';', i + 1);
      if (semi < 0 || !isClassName(desc, i + 1, semi)) return -1;
      i = semi + 1;
    } else if (c === 0x5a || c === 0x42 || c === 0x43 || c === 0x44 || c === 0x46 || c === 0x49 || c === 0x4a || c === 0x53 || c === 0x56) {
      i++;
    } else {
      return -1;
    }
    n++;
  }
  return n;
}

/** Java type names of a descriptor list ("Ljava/lang/String;[I" -> ["java.lang.String", "int[]"]), or null. */
export function descriptorToJavaNames(desc: string): string[] | null {
  if (countParamTypes(desc) < 0) return null;
  const names: string[] = [];
  let i = 0;
  while (i < desc.length) {
    let dims = 0;
    while (desc[i] === '[') {
      dims++;
      i++;
    }
    let name: string;
    if (desc[i] === 'L') {
      const semi = desc.indexOf(';', i + 1);
      name = desc.slice(i + 1, semi).replace(/\//g, '.');
      i = semi + 1;
    } else {
      name = PRIMITIVES[desc[i]];
      i++;
    }
    names.push(name + '[]'.repeat(dims));
  }
  return names;
}

/** JVM descriptor list for Java type names ("java.lang.String", "int", "long[]"), the inverse of the above. */
export function javaNamesToDescriptor(names: readonly string[]): string {
  const byName: Record<string, string> = {};
  for (const [k, v] of Object.entries(PRIMITIVES)) byName[v] = k;
  let out = '';
  for (let name of names) {
    while (name.endsWith('[]')) {
      out += '[';
      name = name.slice(0, -2);
    }
    out += byName[name] ?? `L${name.replace(/\./g, '/')};`;
  }
  return out;
}
