/**
 * A Hessian 2.0 reader that steps over values without building them, plus the few typed reads the
 * Dubbo views need (strings, ints, scalars as strings). Grammar (http://hessian.caucho.com/doc/hessian-serialization.html):
 *
 *   value   ::= null | binary | boolean | class-def value | date | double | int | list | long | map
 *             | object | ref | string
 *   null    ::= 'N'                                  boolean ::= 'T' | 'F'
 *   int     ::= 'I' b3 b2 b1 b0 | [x80-xbf] | [xc0-xcf] b0 | [xd0-xd7] b1 b0
 *   long    ::= 'L' b7..b0 | [xd8-xef] | [xf0-xff] b0 | [x38-x3f] b1 b0 | x59 b3 b2 b1 b0
 *   double  ::= 'D' b7..b0 | x5b | x5c | x5d b0 | x5e b1 b0 | x5f b3 b2 b1 b0
 *   date    ::= x4a b7..b0 | x4b b3 b2 b1 b0
 *   string  ::= x52 b1 b0 <utf8> string | 'S' b1 b0 <utf8> | [x00-x1f] <utf8> | [x30-x33] b0 <utf8>
 *   binary  ::= x41 b1 b0 <bytes> binary | 'B' b1 b0 <bytes> | [x20-x2f] <bytes> | [x34-x37] b0 <bytes>
 *   list    ::= x55 type value* 'Z' | 'V' type int value* | x57 value* 'Z' | x58 int value*
 *             | [x70-x77] type value* | [x78-x7f] value*
 *   map     ::= 'M' type (value value)* 'Z' | 'H' (value value)* 'Z'
 *   type    ::= string | int                         (int = index into the types seen so far)
 *   class-def ::= 'C' string int string*             (name, field count, field names)
 *   object  ::= 'O' int value* | [x60-x6f] value*    (int = index of a class-def; one value per field)
 *   ref     ::= x51 int                              (index of an earlier list, map or object)
 *
 * String lengths count UTF-16 units; the bytes are UTF-8 as Java writes it (CESU-8: a supplementary
 * character is two 3-byte surrogates). A 4-byte UTF-8 sequence (some non-Java writers) is accepted as two
 * units. Continuation bytes are not checked (Java's Hessian2Input does not check them either).
 *
 * Stepping over is iterative (an explicit stack, at most MAX_DEPTH containers deep), so hostile nesting
 * cannot overflow the JS stack. Class definitions, the type table and the reference count persist across
 * values read by one reader, as they do across the arguments of one Dubbo call. Every failure is a
 * DubboProtocolError ERR_DUBBO_BAD_BODY; no other exception escapes a reader method.
 */
import { isAscii } from 'node:buffer';
import type { DubboHeader } from './dubbo-frame';
import { DubboErrorCode, DubboProtocolError } from './dubbo-errors';

/** Deepest container nesting accepted (Java's own Hessian2Input overflows its stack long before this). */
export const MAX_DEPTH = 512;

// stack markers (fixed-length containers store their remaining value count, > 0)
const VAR_LIST = -1;
const MAP_KEY = -2;
const MAP_VALUE = -3;

/**
 * The container stack of skipValue, shared by every reader of this thread: skipValue runs to completion
 * without calling out, so no two uses overlap, and a typed array per reader would cost more than the
 * stepping itself on small bodies.
 */
const STACK = new Int32Array(MAX_DEPTH);

/** Size in bytes of the values whose size the tag alone gives (0: not such a value). */
const FIXED_SIZE = (() => {
  const t = new Uint8Array(256);
  const set = (from: number, to: number, n: number) => t.fill(n, from, to + 1);
  set(0x80, 0xbf, 1); set(0xc0, 0xcf, 2); set(0xd0, 0xd7, 3); // int compact forms
  set(0xd8, 0xef, 1); set(0xf0, 0xff, 2); set(0x38, 0x3f, 3); // long compact forms
  set(0x4e, 0x4e, 1); set(0x54, 0x54, 1); set(0x46, 0x46, 1); // N T F
  set(0x5b, 0x5c, 1); set(0x5d, 0x5d, 2); set(0x5e, 0x5e, 3); // double 0.0 1.0, byte, short
  set(0x49, 0x49, 5); set(0x59, 0x59, 5); set(0x5f, 0x5f, 5); set(0x4b, 0x4b, 5); // I, long as int, double mills, date minutes
  set(0x4c, 0x4c, 9); set(0x44, 0x44, 9); set(0x4a, 0x4a, 9); // L, D, date ms
  return t;
})();

/** Node's Buffer has latin1Slice (untyped); it is the cheapest way to turn ASCII bytes into a string. */
type LatinBuffer = Buffer & { latin1Slice(start: number, end: number): string };

/**
 * Short ASCII strings (service names, methods, versions, attachment keys and values) repeat from call to
 * call; turning bytes into a JS string is the dominant cost of the lazy views. A small direct-mapped table
 * per thread returns the string made last time for the same bytes (compared in full: a hash collision
 * only evicts). Memory is fixed: INTERN_SLOTS * INTERN_MAX bytes plus one string per slot.
 */
const INTERN_SLOTS = 1024;
const INTERN_MAX = 64;
const internBytes = new Uint8Array(INTERN_SLOTS * INTERN_MAX);
const internLen = new Uint8Array(INTERN_SLOTS);
const internStr: string[] = new Array<string>(INTERN_SLOTS).fill('');

/** The string of ASCII bytes buf[start, end), from the table when the same bytes were seen last time. */
function asciiString(buf: Buffer, start: number, end: number): string {
  const n = end - start;
  if (n === 0) return '';
  if (n > INTERN_MAX) return (buf as LatinBuffer).latin1Slice(start, end);
  let h = n;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i], 0x0100_0193);
  const slot = (h ^ (h >>> 15)) & (INTERN_SLOTS - 1);
  const base = slot * INTERN_MAX;
  if (internLen[slot] === n) {
    let i = 0;
    while (i < n && internBytes[base + i] === buf[start + i]) i++;
    if (i === n) return internStr[slot];
  }
  const str = (buf as LatinBuffer).latin1Slice(start, end);
  for (let i = 0; i < n; i++) internBytes[base + i] = buf[start + i];
  internLen[slot] = n;
  internStr[slot] = str;
  return str;
}

/** Bytes of a long string checked with the native isAscii before falling back to the per-char walk. */
const ASCII_PROBE_MIN = 512;

export class Hessian2Reader {
  readonly buf: Buffer;
  pos: number;
  readonly end: number;
  /** Header of the frame being read, attached to errors. */
  header: DubboHeader | null;
  /** Field count of each class definition seen, by definition index. */
  private readonly classFields: number[] = [];
  private typeCount = 0;
  private refCount = 0;

  constructor(buf: Buffer, start = 0, end = buf.length, header: DubboHeader | null = null) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    this.header = header;
  }

  fail(what: string, at = this.pos): never {
    throw new DubboProtocolError(DubboErrorCode.BAD_BODY, `bad Hessian2 body: ${what} at offset ${at}`, this.header);
  }

  atEnd(): boolean {
    return this.pos >= this.end;
  }

  /** Tag of the next value, or -1 at the end. */
  peek(): number {
    return this.pos < this.end ? this.buf[this.pos] : -1;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) this.fail('truncated value');
  }

  // ---- ints --------------------------------------------------------------------------------

  /** An int in any Hessian2 int form ('I' or compact). */
  readInt(): number {
    const buf = this.buf;
    if (this.pos >= this.end) this.fail('expected int, got end of body');
    const tag = buf[this.pos];
    if (tag >= 0x80 && tag <= 0xbf) {
      this.pos++;
      return tag - 0x90;
    }
    if (tag >= 0xc0 && tag <= 0xcf) {
      this.need(2);
      const v = ((tag - 0xc8) << 8) + buf[this.pos + 1];
      this.pos += 2;
      return v;
    }
    if (tag >= 0xd0 && tag <= 0xd7) {
      this.need(3);
      const v = ((tag - 0xd4) << 16) + (buf[this.pos + 1] << 8) + buf[this.pos + 2];
      this.pos += 3;
      return v;
    }
    if (tag === 0x49) {
      this.need(5);
      const v = buf.readInt32BE(this.pos + 1);
      this.pos += 5;
      return v;
    }
    return this.fail(`expected int, got tag 0x${tag.toString(16)}`);
  }

  /** A non-negative int no larger than `max` (a length, count or index). */
  private readCount(what: string, max: number): number {
    const at = this.pos;
    const n = this.readInt();
    if (n < 0 || n > max) this.fail(`${what} ${n} out of range`, at);
    return n;
  }

  // ---- strings -----------------------------------------------------------------------------

  /**
   * Steps over `units` UTF-16 units of UTF-8 text at pos. Returns true when every byte was ASCII
   * (then the text is exactly `units` bytes long).
   */
  private skipChars(units: number): boolean {
    const buf = this.buf;
    const end = this.end;
    let p = this.pos;
    if (units >= ASCII_PROBE_MIN && p + units <= end && isAscii(buf.subarray(p, p + units))) {
      this.pos = p + units;
      return true;
    }
    let ascii = true;
    while (units > 0) {
      if (p >= end) this.fail('truncated string');
      const c = buf[p];
      if (c < 0x80) {
        p++;
        units--;
        continue;
      }
      ascii = false;
      if (c < 0xc0) this.fail(`bad UTF-8 lead byte 0x${c.toString(16)}`, p);
      else if (c < 0xe0) p += 2;
      else if (c < 0xf0) p += 3;
      else if (c < 0xf8 && units >= 2) {
        p += 4;
        units--;
      } else this.fail(`bad UTF-8 lead byte 0x${c.toString(16)}`, p);
      units--;
    }
    if (p > end) this.fail('truncated string');
    this.pos = p;
    return ascii;
  }

  /** Length (in UTF-16 units) of the string chunk whose tag is at pos; advances past the length. */
  private chunkLength(tag: number): number {
    const buf = this.buf;
    if (tag <= 0x1f) {
      this.pos += 1;
      return tag;
    }
    if (tag >= 0x30 && tag <= 0x33) {
      this.need(2);
      const n = ((tag - 0x30) << 8) + buf[this.pos + 1];
      this.pos += 2;
      return n;
    }
    // 'S' or 'R'
    this.need(3);
    const n = (buf[this.pos + 1] << 8) + buf[this.pos + 2];
    this.pos += 3;
    return n;
  }

  private static isStringTag(tag: number): boolean {
    return tag <= 0x1f || (tag >= 0x30 && tag <= 0x33) || tag === 0x52 || tag === 0x53;
  }

  /** Steps over a string value whose tag (a string tag) is at pos. */
  private skipString(): void {
    for (;;) {
      if (this.pos >= this.end) this.fail('truncated string');
      const tag = this.buf[this.pos];
      if (!Hessian2Reader.isStringTag(tag)) this.fail(`expected string chunk, got tag 0x${tag.toString(16)}`);
      const units = this.chunkLength(tag);
      this.skipChars(units);
      if (tag !== 0x52) return;
    }
  }

  /** A string (any form, chunked too) or null ('N'). Anything else is a bad body. */
  readStringOrNull(): string | null {
    if (this.pos >= this.end) this.fail('expected string, got end of body');
    const tag = this.buf[this.pos];
    if (tag === 0x4e) {
      this.pos++;
      return null;
    }
    if (!Hessian2Reader.isStringTag(tag)) this.fail(`expected string, got tag 0x${tag.toString(16)}`);
    return this.readStringValue();
  }

  /** Reads a string whose first tag at pos is a string tag. */
  private readStringValue(): string {
    let out = '';
    for (;;) {
      if (this.pos >= this.end) this.fail('truncated string');
      const tag = this.buf[this.pos];
      if (!Hessian2Reader.isStringTag(tag)) this.fail(`expected string chunk, got tag 0x${tag.toString(16)}`);
      const units = this.chunkLength(tag);
      const start = this.pos;
      const text = this.skipChars(units)
        ? asciiString(this.buf, start, this.pos)
        : decodeUtf8(this.buf, start, this.pos);
      if (tag !== 0x52) return out === '' ? text : out + text;
      out += text;
    }
  }

  // ---- stepping over -----------------------------------------------------------------------

  /** Steps over a type (string, recorded in the type table, or an int index into it). */
  private skipType(): void {
    if (this.pos >= this.end) this.fail('expected type, got end of body');
    const tag = this.buf[this.pos];
    if (Hessian2Reader.isStringTag(tag)) {
      this.skipString();
      this.typeCount++;
      return;
    }
    this.readCount('type reference', this.typeCount - 1);
  }

  /** Steps over binary chunks whose first tag is at pos. */
  private skipBinary(): void {
    const buf = this.buf;
    for (;;) {
      if (this.pos >= this.end) this.fail('truncated binary');
      const tag = buf[this.pos];
      let len: number;
      if (tag >= 0x20 && tag <= 0x2f) {
        len = tag - 0x20;
        this.pos += 1;
      } else if (tag >= 0x34 && tag <= 0x37) {
        this.need(2);
        len = ((tag - 0x34) << 8) + buf[this.pos + 1];
        this.pos += 2;
      } else if (tag === 0x41 || tag === 0x42) {
        this.need(3);
        len = (buf[this.pos + 1] << 8) + buf[this.pos + 2];
        this.pos += 3;
      } else {
        return this.fail(`expected binary chunk, got tag 0x${tag.toString(16)}`);
      }
      this.need(len);
      this.pos += len;
      if (tag !== 0x41) return;
    }
  }

  /** Reads a class definition ('C' at pos): records its field count. */
  private readClassDef(): void {
    this.pos++;
    if (!Hessian2Reader.isStringTag(this.peek())) this.fail('class definition without a string name');
    this.skipString();
    const fields = this.readCount('field count', this.end - this.pos);
    for (let i = 0; i < fields; i++) {
      if (!Hessian2Reader.isStringTag(this.peek())) this.fail('class field name is not a string');
      this.skipString();
    }
    this.classFields.push(fields);
  }

  private push(depth: number, marker: number): number {
    if (depth >= MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`);
    STACK[depth] = marker;
    return depth + 1;
  }

  /** Steps over one value of any type, including everything nested in it. */
  skipValue(): void {
    const buf = this.buf;
    const end = this.end;
    let depth = 0;
    let afterDef = false;
    for (;;) {
      if (this.pos >= end) this.fail('truncated value');
      const tag = buf[this.pos];
      // true when this step finished a value (scalar, empty container, or a closed container)
      let done = true;

      const size = FIXED_SIZE[tag];
      if (size !== 0) {
        // null, booleans, ints, longs, doubles, dates: nothing nested, size known from the tag
        if (this.pos + size > end) this.fail('truncated value');
        this.pos += size;
      } else if (tag < 0x20) {
        // compact string: the common all-ASCII case inline, anything else through skipString
        const stop = this.pos + 1 + tag;
        let p = this.pos + 1;
        if (stop <= end) while (p < stop && buf[p] < 0x80) p++;
        if (p === stop) this.pos = stop;
        else this.skipString();
      } else if (tag === 0x5a /* Z */) {
        const top = depth > 0 ? STACK[depth - 1] : 0;
        if ((top !== VAR_LIST && top !== MAP_KEY) || afterDef) this.fail('unexpected end marker Z');
        this.pos++;
        depth--;
      } else if ((tag >= 0x30 && tag <= 0x33) || tag === 0x52 || tag === 0x53) {
        this.skipString();
      } else if (tag >= 0x70 && tag <= 0x7f) {
        // fixed-length list, typed [x70-x77] or untyped [x78-x7f]
        this.pos++;
        if (tag < 0x78) this.skipType();
        this.refCount++;
        const n = tag & 0x07;
        if (n > 0) {
          depth = this.push(depth, n);
          done = false;
        }
      } else if (tag >= 0x60 && tag <= 0x6f) {
        // object, compact class reference
        this.pos++;
        done = this.beginObject(tag - 0x60, depth);
        if (!done) depth++;
      } else if ((tag >= 0x20 && tag <= 0x2f) || (tag >= 0x34 && tag <= 0x37)) {
        this.skipBinary();
      } else {
        switch (tag) {
          case 0x41: // binary chunk
          case 0x42: // binary final chunk
            this.skipBinary();
            break;
          case 0x43: // class definition: not a value; a value follows
            this.readClassDef();
            afterDef = true;
            continue;
          case 0x4f: { // O int: object
            this.pos++;
            const ref = this.readCount('class reference', this.classFields.length - 1);
            done = this.beginObject(ref, depth);
            if (!done) depth++;
            break;
          }
          case 0x51: // Q int: reference to an earlier list, map or object
            this.pos++;
            this.readCount('reference', this.refCount - 1);
            break;
          case 0x48: // H: untyped map
            this.pos++;
            this.refCount++;
            depth = this.push(depth, MAP_KEY);
            done = false;
            break;
          case 0x4d: // M type: typed map
            this.pos++;
            this.skipType();
            this.refCount++;
            depth = this.push(depth, MAP_KEY);
            done = false;
            break;
          case 0x55: // typed variable-length list
            this.pos++;
            this.skipType();
            this.refCount++;
            depth = this.push(depth, VAR_LIST);
            done = false;
            break;
          case 0x57: // untyped variable-length list
            this.pos++;
            this.refCount++;
            depth = this.push(depth, VAR_LIST);
            done = false;
            break;
          case 0x56: // V type int: typed fixed-length list
          case 0x58: { // x58 int: untyped fixed-length list
            this.pos++;
            if (tag === 0x56) this.skipType();
            // every element takes at least one byte
            const n = this.readCount('list length', end - this.pos);
            this.refCount++;
            if (n > 0) {
              depth = this.push(depth, n);
              done = false;
            }
            break;
          }
          default: // 0x40, 0x45, 0x47, 0x50: reserved
            this.fail(`unknown tag 0x${tag.toString(16)}`);
        }
      }
      afterDef = false;
      if (!done) continue;
      // a value is complete: count it against the containers it sits in
      while (depth > 0) {
        const top = STACK[depth - 1];
        if (top > 1) {
          STACK[depth - 1] = top - 1;
          break;
        }
        if (top === 1) {
          depth--;
          continue;
        }
        if (top === MAP_KEY) STACK[depth - 1] = MAP_VALUE;
        else if (top === MAP_VALUE) STACK[depth - 1] = MAP_KEY;
        break; // VAR_LIST: wait for Z
      }
      if (depth === 0) return;
    }
  }

  /** Starts an object instance of class definition `ref`; false when it has fields to step over. */
  private beginObject(ref: number, depth: number): boolean {
    if (ref >= this.classFields.length) this.fail(`object of undefined class ${ref}`);
    this.refCount++;
    const fields = this.classFields[ref];
    if (fields === 0) return true;
    this.push(depth, fields);
    return false;
  }

  // ---- scalars as strings (attachment values) ----------------------------------------------

  /**
   * Reads a value as a string when it is a string, int, long, double or boolean (numbers in JS
   * decimal form); steps over anything else (null, lists, maps, objects, binary, dates) and returns
   * undefined.
   */
  readScalarAsString(): string | undefined {
    if (this.pos >= this.end) this.fail('expected value, got end of body');
    const buf = this.buf;
    const tag = buf[this.pos];
    if (Hessian2Reader.isStringTag(tag)) return this.readStringValue();
    if ((tag >= 0x80 && tag <= 0xd7) || tag === 0x49) return String(this.readInt());
    if (tag === 0x54 || tag === 0x46) {
      this.pos++;
      return tag === 0x54 ? 'true' : 'false';
    }
    if (tag >= 0xd8 && tag <= 0xef) {
      this.pos++;
      return String(tag - 0xe0);
    }
    if (tag >= 0xf0) {
      this.need(2);
      const v = ((tag - 0xf8) << 8) + buf[this.pos + 1];
      this.pos += 2;
      return String(v);
    }
    if (tag >= 0x38 && tag <= 0x3f) {
      this.need(3);
      const v = ((tag - 0x3c) << 16) + (buf[this.pos + 1] << 8) + buf[this.pos + 2];
      this.pos += 3;
      return String(v);
    }
    if (tag === 0x59) {
      this.need(5);
      const v = buf.readInt32BE(this.pos + 1);
      this.pos += 5;
      return String(v);
    }
    if (tag === 0x4c) {
      this.need(9);
      const v = buf.readBigInt64BE(this.pos + 1);
      this.pos += 9;
      return v.toString();
    }
    if (tag === 0x44 || (tag >= 0x5b && tag <= 0x5f)) {
      let v: number;
      if (tag === 0x44) {
        this.need(9);
        v = buf.readDoubleBE(this.pos + 1);
        this.pos += 9;
      } else if (tag === 0x5b || tag === 0x5c) {
        v = tag - 0x5b;
        this.pos += 1;
      } else if (tag === 0x5d) {
        this.need(2);
        v = buf.readInt8(this.pos + 1);
        this.pos += 2;
      } else if (tag === 0x5e) {
        this.need(3);
        v = buf.readInt16BE(this.pos + 1);
        this.pos += 3;
      } else {
        this.need(5);
        v = buf.readInt32BE(this.pos + 1) * 0.001;
        this.pos += 5;
      }
      return String(v);
    }
    this.skipValue();
    return undefined;
  }

  /**
   * Reads a map of string keys (Hessian 'H' or 'M', or null for an empty map) into `into`; entries
   * whose key is not a string or whose value is not a scalar (see readScalarAsString) are stepped over.
   * Later duplicates win, as in a Java HashMap.
   */
  /**
   * The entries of the map at the cursor, each with its key (null when the key is not a string)
   * and the byte range of the key and value together; the cursor ends after the map. An absent
   * map (N) has none.
   */
  mapEntries(): Array<{ key: string | null; start: number; end: number }> {
    const out: Array<{ key: string | null; start: number; end: number }> = [];
    if (this.pos >= this.end) this.fail('expected map, got end of body');
    const tag = this.buf[this.pos];
    if (tag === 0x4e) { this.pos++; return out; }
    if (tag !== 0x48 && tag !== 0x4d) this.fail(`expected map, got tag 0x${tag.toString(16)}`);
    this.pos++;
    if (tag === 0x4d) this.skipType();
    this.refCount++;
    for (;;) {
      if (this.pos >= this.end) this.fail('truncated map');
      const start = this.pos;
      const k = this.buf[this.pos];
      if (k === 0x5a) { this.pos++; return out; }
      let key: string | null = null;
      if (Hessian2Reader.isStringTag(k)) key = this.readStringValue();
      else this.skipValue();
      this.skipValue();
      out.push({ key, start, end: this.pos });
    }
  }

  readStringMap(into: Map<string, string>): void {
    if (this.pos >= this.end) this.fail('expected map, got end of body');
    const tag = this.buf[this.pos];
    if (tag === 0x4e) {
      this.pos++;
      return;
    }
    if (tag !== 0x48 && tag !== 0x4d) this.fail(`expected map, got tag 0x${tag.toString(16)}`);
    this.pos++;
    if (tag === 0x4d) this.skipType();
    this.refCount++;
    for (;;) {
      if (this.pos >= this.end) this.fail('truncated map');
      const k = this.buf[this.pos];
      if (k === 0x5a) {
        this.pos++;
        return;
      }
      if (Hessian2Reader.isStringTag(k)) {
        const key = this.readStringValue();
        const value = this.readScalarAsString();
        if (value !== undefined) into.set(key, value);
        else into.delete(key);
      } else {
        this.skipValue();
        this.skipValue();
      }
    }
  }
}

/**
 * Decodes UTF-8 (CESU-8 surrogates and 4-byte sequences both) between start and end, which skipChars
 * has already checked for lead bytes and length.
 */
function decodeUtf8(buf: Buffer, start: number, end: number): string {
  const units: number[] = [];
  let out = '';
  let p = start;
  while (p < end) {
    const c = buf[p];
    if (c < 0x80) {
      units.push(c);
      p += 1;
    } else if (c < 0xe0) {
      units.push(((c & 0x1f) << 6) | (buf[p + 1] & 0x3f));
      p += 2;
    } else if (c < 0xf0) {
      units.push(((c & 0x0f) << 12) | ((buf[p + 1] & 0x3f) << 6) | (buf[p + 2] & 0x3f));
      p += 3;
    } else {
      const cp = (((c & 0x07) << 18) | ((buf[p + 1] & 0x3f) << 12) | ((buf[p + 2] & 0x3f) << 6) | (buf[p + 3] & 0x3f)) - 0x10000;
      units.push(0xd800 + ((cp >> 10) & 0x3ff), 0xdc00 + (cp & 0x3ff));
      p += 4;
    }
    if (units.length >= 4096) {
      out += String.fromCharCode.apply(null, units);
      units.length = 0;
    }
  }
  return units.length > 0 ? out + String.fromCharCode.apply(null, units) : out;
}
