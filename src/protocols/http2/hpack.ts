/**
 * HPACK (RFC 7541): header compression for HTTP/2. Pure: bytes in, header lists out, and back.
 *
 * A header block is a run of field representations; the first byte of each says which:
 *
 *   1xxxxxxx  indexed field                      index (7-bit prefix), name and value from a table
 *   01xxxxxx  literal, incremental indexing      name index (6-bit prefix) or 0 + name string,
 *                                                value string; the field is added to the dynamic table
 *   0000xxxx  literal, without indexing          name index (4-bit prefix) or 0 + name string, value
 *   0001xxxx  literal, never indexed             same, and intermediaries must not index it either
 *   001xxxxx  dynamic table size update          new maximum size (5-bit prefix); only at block start
 *
 *   integer: the prefix bits; if all ones, the rest follows in 7-bit groups, least significant
 *   first, with the high bit set on every byte but the last.
 *   string:  H (1 bit: Huffman coded) + length (7-bit prefix integer), then that many bytes.
 *
 *   index space:  1 .. 61   static table (RFC 7541 Appendix A)
 *                 62 ..     dynamic table, newest entry first
 *
 * Strings are latin1 both ways: one byte is one char. An entry's size is name.length +
 * value.length + 32. The tables keep the strings they were given, so an indexed field costs two
 * array reads, no decoding.
 */
import { SluiceError } from '../../errors';
import { huffmanDecode } from './huffman';

/** A malformed header block: the connection must end with GOAWAY COMPRESSION_ERROR. */
export class HpackError extends SluiceError {
  declare readonly code: 'ERR_HPACK';
  constructor(message: string) {
    super('ERR_HPACK', message);
    this.name = 'HpackError';
  }
}

// prettier-ignore
const STATIC_TABLE: readonly (readonly [string, string])[] = [
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
/** Number of static entries; dynamic indices start after it. */
export const STATIC_TABLE_LENGTH = 61;
const STATIC_NAMES: string[] = ['', ...STATIC_TABLE.map((e) => e[0])];
const STATIC_VALUES: string[] = ['', ...STATIC_TABLE.map((e) => e[1])];

/** The static table as [name, value] pairs, index 1 first (for tests and tools). */
export function staticTable(): [string, string][] {
  return STATIC_TABLE.map((e) => [e[0], e[1]]);
}

/** The HTTP/2 default of SETTINGS_HEADER_TABLE_SIZE. */
export const DEFAULT_TABLE_SIZE = 4096;
/** Default header list limit of the decoder (RFC 9113 §6.5.2 size: name + value + 32 per field). */
export const DEFAULT_MAX_LIST_SIZE = 65536;
/** The largest dynamic table the encoder will use, whatever the peer allows. */
export const ENCODER_MAX_TABLE_SIZE = 4096;
const MAX_INT = 0x7fffffff;
const ENTRY_OVERHEAD = 32;

/**
 * The dynamic table: a ring over two arrays, addressed by absolute insertion number. The entry
 * inserted as number `seq` lives in slot seq & mask; entries first .. next-1 are live, the newest
 * (next-1) has HPACK index 62.
 */
class DynamicTable {
  names: string[];
  values: string[];
  mask: number;
  first = 0;
  next = 0;
  size = 0;
  maxSize: number;
  /** Called with the absolute number of each entry as it is evicted (the encoder's index upkeep). */
  onEvict: ((seq: number, name: string, value: string) => void) | null = null;

  constructor(maxSize: number) {
    this.maxSize = maxSize;
    this.names = new Array<string>(16).fill('');
    this.values = new Array<string>(16).fill('');
    this.mask = 15;
  }

  get length(): number {
    return this.next - this.first;
  }

  add(name: string, value: string): void {
    const entrySize = name.length + value.length + ENTRY_OVERHEAD;
    // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
    if (entrySize > this.maxSize) {
      while (this.next > this.first) this.evictOldest();
      return;
    }
    while (this.size + entrySize > this.maxSize) this.evictOldest();
    if (this.next - this.first > this.mask) this.grow();
    const slot = this.next & this.mask;
    this.names[slot] = name;
    this.values[slot] = value;
    this.next++;
    this.size += entrySize;
  }

  setMaxSize(maxSize: number): void {
    this.maxSize = maxSize;
    while (this.size > maxSize) this.evictOldest();
  }

  private evictOldest(): void {
    const seq = this.first++;
    const slot = seq & this.mask;
    const name = this.names[slot];
    const value = this.values[slot];
    this.size -= name.length + value.length + ENTRY_OVERHEAD;
    this.names[slot] = '';
    this.values[slot] = '';
    if (this.onEvict !== null) this.onEvict(seq, name, value);
  }

  private grow(): void {
    const cap = (this.mask + 1) * 2;
    const names = new Array<string>(cap).fill('');
    const values = new Array<string>(cap).fill('');
    const mask = cap - 1;
    for (let seq = this.first; seq < this.next; seq++) {
      names[seq & mask] = this.names[seq & this.mask];
      values[seq & mask] = this.values[seq & this.mask];
    }
    this.names = names;
    this.values = values;
    this.mask = mask;
  }

  /** [name, value] pairs, newest (index 62) first. */
  entries(): [string, string][] {
    const out: [string, string][] = [];
    for (let seq = this.next - 1; seq >= this.first; seq--) out.push([this.names[seq & this.mask], this.values[seq & this.mask]]);
    return out;
  }
}

function checkSize(what: string, n: number, max = 0xffffffff): void {
  if (!Number.isInteger(n) || n < 0 || n > max) throw new RangeError(`${what} must be an integer from 0 to ${max}, got ${n}`);
}

// ---------------------------------------------------------------------------------------------
// decoding

/** Where the last readInt/readString stopped (one per thread; decoding is synchronous). */
let gPos = 0;

/**
 * The continuation bytes of an integer whose prefix was all ones (`prefixMax`); p is the first of
 * them. Strict: at most 2^31 - 1, and no trailing zero groups (a longer encoding than needed).
 */
function readIntTail(src: Uint8Array, p: number, end: number, prefixMax: number): number {
  let value = prefixMax;
  let mul = 1;
  for (;;) {
    if (p >= end) throw new HpackError('truncated integer');
    const b = src[p++];
    if (b === 0 && mul !== 1) throw new HpackError('integer encoded with more bytes than needed');
    value += (b & 0x7f) * mul;
    if (value > MAX_INT) throw new HpackError('integer overflow');
    if ((b & 0x80) === 0) break;
    mul *= 128;
    if (mul > 2 ** 28) throw new HpackError('integer overflow');
  }
  gPos = p;
  return value;
}

function readString(src: Buffer, p: number, end: number): string {
  if (p >= end) throw new HpackError('truncated string');
  const b = src[p++];
  let len = b & 0x7f;
  if (len === 0x7f) {
    len = readIntTail(src, p, end, 0x7f);
    p = gPos;
  }
  if (len > end - p) throw new HpackError('truncated string');
  const stop = p + len;
  gPos = stop;
  if ((b & 0x80) !== 0) {
    const s = huffmanDecode(src, p, stop);
    if (s === null) throw new HpackError('bad Huffman code');
    return s;
  }
  if (len <= 6) {
    let s = '';
    for (; p < stop; p++) s += String.fromCharCode(src[p]);
    return s;
  }
  return (src as unknown as { latin1Slice(start: number, end: number): string }).latin1Slice(p, stop);
}

export class HpackDecoder {
  /** Set by decode(): the last block was over maxListSize or maxCount (decode returned null). */
  tooLarge = false;
  private readonly maxTableSize: number;
  private readonly maxListSize: number;
  private readonly table: DynamicTable;

  /**
   * maxTableSize: the SETTINGS_HEADER_TABLE_SIZE we advertise (4096 default): the largest size
   * update the peer may send. maxListSize: RFC 9113 header list size (sum of name + value + 32),
   * default DEFAULT_MAX_LIST_SIZE (64 KiB). The dynamic table starts at 4096 bytes, the size the
   * peer's encoder starts with, and follows the peer's size updates (each at most maxTableSize).
   */
  constructor(maxTableSize = DEFAULT_TABLE_SIZE, maxListSize = DEFAULT_MAX_LIST_SIZE) {
    checkSize('maxTableSize', maxTableSize);
    if (maxListSize !== Infinity) checkSize('maxListSize', maxListSize, Number.MAX_SAFE_INTEGER);
    this.maxTableSize = maxTableSize;
    this.maxListSize = maxListSize;
    // The peer's encoder starts at the protocol default of 4096 (RFC 9113 §6.5.2) whatever we
    // advertise: until it has our SETTINGS it may fill 4096 bytes, and afterwards it moves to
    // another size only with a size update, which must then be within maxTableSize. Starting at
    // maxTableSize instead would evict entries a peer that has not seen our SETTINGS yet still uses.
    this.table = new DynamicTable(DEFAULT_TABLE_SIZE);
  }

  /**
   * Decodes one complete header block (HEADERS + CONTINUATION payloads already joined) into a flat
   * [name0, value0, name1, value1, ...] in wire order. Throws HpackError on malformed input. Over
   * maxListSize or maxCount fields it decodes the rest (the table stays in sync), returns null and
   * sets tooLarge.
   */
  decode(block: Buffer | Uint8Array, maxCount = Infinity): string[] | null {
    const src = Buffer.isBuffer(block) ? block : Buffer.from(block.buffer, block.byteOffset, block.byteLength);
    const end = src.length;
    const t = this.table;
    const maxList = this.maxListSize;
    const out: string[] = [];
    let p = 0;
    let listSize = 0;
    let count = 0;
    let over = false;
    this.tooLarge = false;

    // Size updates: only before the first field, and at most two: the smallest size since the last
    // block, then the final one (RFC 7541 §4.2).
    for (let updates = 0; p < end && (src[p] & 0xe0) === 0x20; updates++) {
      if (updates === 2) throw new HpackError('more than two dynamic table size updates');
      let size = src[p++] & 0x1f;
      if (size === 0x1f) {
        size = readIntTail(src, p, end, 0x1f);
        p = gPos;
      }
      if (size > this.maxTableSize) throw new HpackError(`dynamic table size update to ${size}, over the ${this.maxTableSize} allowed`);
      t.setMaxSize(size);
    }

    while (p < end) {
      const b = src[p++];
      let name: string;
      let value: string;
      if ((b & 0x80) !== 0) {
        let idx = b & 0x7f;
        if (idx === 0x7f) {
          idx = readIntTail(src, p, end, 0x7f);
          p = gPos;
        }
        if (idx <= STATIC_TABLE_LENGTH) {
          if (idx === 0) throw new HpackError('index 0');
          name = STATIC_NAMES[idx];
          value = STATIC_VALUES[idx];
        } else {
          const seq = t.next - (idx - STATIC_TABLE_LENGTH);
          if (seq < t.first) throw new HpackError(`index ${idx} past the end of the table`);
          name = t.names[seq & t.mask];
          value = t.values[seq & t.mask];
        }
      } else {
        let idx: number;
        let prefixMax: number;
        const indexing = (b & 0x40) !== 0;
        if (indexing) {
          prefixMax = 0x3f;
        } else if ((b & 0x20) !== 0) {
          throw new HpackError('dynamic table size update after the first field');
        } else {
          prefixMax = 0x0f;
        }
        idx = b & prefixMax;
        if (idx === prefixMax) {
          idx = readIntTail(src, p, end, prefixMax);
          p = gPos;
        }
        if (idx === 0) {
          name = readString(src, p, end);
          p = gPos;
        } else if (idx <= STATIC_TABLE_LENGTH) {
          name = STATIC_NAMES[idx];
        } else {
          const seq = t.next - (idx - STATIC_TABLE_LENGTH);
          if (seq < t.first) throw new HpackError(`name index ${idx} past the end of the table`);
          name = t.names[seq & t.mask];
        }
        value = readString(src, p, end);
        p = gPos;
        if (indexing) t.add(name, value);
      }
      if (!over) {
        listSize += name.length + value.length + ENTRY_OVERHEAD;
        if (listSize > maxList || ++count > maxCount) over = true;
        else out.push(name, value);
      }
    }
    if (over) {
      this.tooLarge = true;
      return null;
    }
    return out;
  }

  /** Current dynamic table size in bytes (entry sizes summed). */
  get tableSize(): number {
    return this.table.size;
  }

  /** Current maximum dynamic table size (the last size update, or the initial size). */
  get tableMaxSize(): number {
    return this.table.maxSize;
  }

  /** The dynamic table, newest (index 62) first. For tests and debugging; allocates. */
  tableEntries(): [string, string][] {
    return this.table.entries();
  }
}

// ---------------------------------------------------------------------------------------------
// encoding

/** How a literal field is sent: Cookie and Path are decided by the value's length. */
const enum Indexing { Incremental, Without, Never, Cookie, Path }

/** Fields the encoder sends "never indexed" (RFC 7541 §7.1.3): credentials. */
const NEVER_INDEX = ['authorization', 'proxy-authorization', 'set-cookie'];
/** Cookies up to this length may be indexed (guessing a short value is cheap anyway, §7.1.3). */
const COOKIE_INDEX_MAX = 20;
/** Fields whose values change from request to request: indexing them only evicts useful entries. */
const NO_INDEX = [
  'content-length', 'date', 'age', 'etag', 'expires', 'last-modified', 'if-modified-since', 'if-none-match',
  'if-unmodified-since', 'range', 'content-range', 'content-md5', 'retry-after',
  'x-request-id', 'x-correlation-id', 'traceparent', 'tracestate', 'uber-trace-id', 'sw8', 'x-amzn-trace-id',
  'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'b3', 'x-cloud-trace-context', 'x-datadog-trace-id',
  'x-datadog-parent-id', 'grpc-timeout', 'x-envoy-expected-rq-timeout-ms', 'x-envoy-attempt-count',
];
/** Longer :path values are taken as unique (query strings, ids) and not indexed. */
const PATH_INDEX_MAX = 64;

interface NameInfo {
  /** First static index of the name, 0 if it has none. */
  index: number;
  /** value → static index, for the static entries that have values. */
  values: Map<string, number> | null;
  mode: Indexing;
}
/** Every name the encoder knows something about: one lookup per field gives all of it. */
const NAME_INFO = new Map<string, NameInfo>();
const nameInfo = (name: string): NameInfo => {
  let e = NAME_INFO.get(name);
  if (e === undefined) NAME_INFO.set(name, (e = { index: 0, values: null, mode: Indexing.Incremental }));
  return e;
};
for (let i = STATIC_TABLE_LENGTH; i >= 1; i--) {
  const e = nameInfo(STATIC_NAMES[i]);
  e.index = i;
  if (STATIC_VALUES[i] !== '') (e.values ??= new Map()).set(STATIC_VALUES[i], i);
}
for (const name of NEVER_INDEX) nameInfo(name).mode = Indexing.Never;
for (const name of NO_INDEX) nameInfo(name).mode = Indexing.Without;
nameInfo('cookie').mode = Indexing.Cookie;
nameInfo(':path').mode = Indexing.Path;

interface NameEntry {
  /** Absolute number of the newest entry with this name, -1 if none is left. */
  newest: number;
  /** value → absolute number of its entry. */
  values: Map<string, number>;
}

/** One scratch buffer per thread: encode() is synchronous and copies its result out. */
let scratch = Buffer.allocUnsafe(4096);

function ensure(p: number, need: number): Buffer {
  if (p + need > scratch.length) {
    const next = Buffer.allocUnsafe(Math.max(scratch.length * 2, p + need));
    scratch.copy(next, 0, 0, p);
    scratch = next;
  }
  return scratch;
}

function writeInt(buf: Buffer, p: number, flags: number, prefixMax: number, value: number): number {
  if (value < prefixMax) {
    buf[p++] = flags | value;
    return p;
  }
  buf[p++] = flags | prefixMax;
  value -= prefixMax;
  while (value >= 128) {
    buf[p++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  buf[p++] = value;
  return p;
}

/** A raw (not Huffman) string literal. Chars above U+00FF are written as their low byte, like latin1. */
function writeString(buf: Buffer, p: number, s: string): number {
  const len = s.length;
  p = writeInt(buf, p, 0, 0x7f, len);
  if (len <= 16) {
    for (let i = 0; i < len; i++) buf[p + i] = s.charCodeAt(i);
    return p + len;
  }
  return p + (buf as unknown as { latin1Write(s: string, offset: number): number }).latin1Write(s, p);
}

export class HpackEncoder {
  private readonly table = new DynamicTable(DEFAULT_TABLE_SIZE);
  private readonly byName = new Map<string, NameEntry>();
  /** Smallest size set since the last block, or -1: a size update is due at the next block. */
  private pendingMin = -1;

  constructor() {
    this.table.onEvict = (seq, name, value) => {
      const e = this.byName.get(name);
      if (e === undefined) return;
      if (e.values.get(value) === seq) e.values.delete(value);
      if (e.newest === seq) e.newest = -1;
      if (e.newest === -1 && e.values.size === 0) this.byName.delete(name);
    };
  }

  /**
   * The peer's SETTINGS_HEADER_TABLE_SIZE. The encoder uses min(n, ENCODER_MAX_TABLE_SIZE) and
   * signals a change with size updates at the start of the next block (the smallest size in
   * between first, RFC 7541 §4.2).
   */
  setPeerMaxTableSize(n: number): void {
    checkSize('peer header table size', n);
    const size = Math.min(n, ENCODER_MAX_TABLE_SIZE);
    if (size === this.table.maxSize) return;
    this.pendingMin = this.pendingMin < 0 ? size : Math.min(this.pendingMin, size);
    this.table.setMaxSize(size);
  }

  /**
   * Encodes a flat [name, value, ...] list (names lowercase) into a header block: a fresh Buffer.
   * Static and dynamic table hits become indexed fields; other fields are literals with raw
   * strings, added to the dynamic table unless sensitive (never indexed), variable (not indexed)
   * or larger than half the table.
   */
  encode(fields: readonly string[]): Buffer {
    const t = this.table;
    let buf = ensure(0, 12);
    let p = 0;
    if (this.pendingMin >= 0) {
      if (this.pendingMin < t.maxSize) p = writeInt(buf, p, 0x20, 0x1f, this.pendingMin);
      p = writeInt(buf, p, 0x20, 0x1f, t.maxSize);
      this.pendingMin = -1;
    }
    const indexMax = t.maxSize >>> 1;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i];
      const value = fields[i + 1];
      buf = ensure(p, name.length + value.length + 18);
      const info = NAME_INFO.get(name);
      if (info !== undefined && info.values !== null) {
        const si = info.values.get(value);
        if (si !== undefined) {
          p = writeInt(buf, p, 0x80, 0x7f, si);
          continue;
        }
      }
      const dyn = this.byName.get(name);
      if (dyn !== undefined) {
        const seq = dyn.values.get(value);
        if (seq !== undefined) {
          p = writeInt(buf, p, 0x80, 0x7f, STATIC_TABLE_LENGTH + t.next - seq);
          continue;
        }
      }
      let mode = info === undefined ? Indexing.Incremental : info.mode;
      if (mode === Indexing.Cookie) mode = value.length > COOKIE_INDEX_MAX ? Indexing.Never : Indexing.Incremental;
      else if (mode === Indexing.Path) mode = value.length > PATH_INDEX_MAX ? Indexing.Without : Indexing.Incremental;
      if (mode === Indexing.Incremental && name.length + value.length + ENTRY_OVERHEAD > indexMax) mode = Indexing.Without;
      const nameIdx = info !== undefined && info.index !== 0 ? info.index
        : dyn !== undefined && dyn.newest >= 0 ? STATIC_TABLE_LENGTH + t.next - dyn.newest : 0;
      if (mode === Indexing.Incremental) p = writeInt(buf, p, 0x40, 0x3f, nameIdx);
      else p = writeInt(buf, p, mode === Indexing.Never ? 0x10 : 0x00, 0x0f, nameIdx);
      if (nameIdx === 0) p = writeString(buf, p, name);
      p = writeString(buf, p, value);
      if (mode === Indexing.Incremental) this.insert(name, value);
    }
    const out = Buffer.allocUnsafe(p);
    // a loop beats Buffer#copy's fixed cost for the few bytes of a block that hits the table
    if (p <= 48) for (let k = 0; k < p; k++) out[k] = buf[k];
    else buf.copy(out, 0, 0, p);
    return out;
  }

  private insert(name: string, value: string): void {
    const t = this.table;
    const seq = t.next;
    t.add(name, value);
    // an entry larger than the whole table is not added (never the case below indexMax)
    if (t.next === seq) return;
    let e = this.byName.get(name);
    if (e === undefined) this.byName.set(name, (e = { newest: seq, values: new Map() }));
    e.newest = seq;
    e.values.set(value, seq);
  }

  /** Current dynamic table size in bytes. */
  get tableSize(): number {
    return this.table.size;
  }

  /** The size the encoder's table is limited to (min of the peer's setting and 4096). */
  get tableMaxSize(): number {
    return this.table.maxSize;
  }

  /** The dynamic table, newest (index 62) first. For tests and debugging; allocates. */
  tableEntries(): [string, string][] {
    return this.table.entries();
  }
}
