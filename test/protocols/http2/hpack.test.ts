/**
 * HPACK (RFC 7541): the Huffman table, every example of Appendix C, strict rejection of malformed
 * blocks (HpackError and nothing else, also under fuzzing), encode → decode round trips with the
 * dynamic tables in sync, the header list limits, the encoder's indexing choices, and both
 * directions against Node's nghttp2 over real sockets.
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import {
  DEFAULT_MAX_LIST_SIZE, ENCODER_MAX_TABLE_SIZE, HpackDecoder, HpackEncoder, HpackError, staticTable,
} from '../../../src/protocols/http2/hpack';
import { EOS, HUFFMAN_CODES, HUFFMAN_LENGTHS, huffmanDecode, huffmanEncode } from '../../../src/protocols/http2/huffman';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Pairs from a flat list, for readable failure output. */
function pairs(list: readonly string[] | null): [string, string][] | null {
  if (list === null) return null;
  const out: [string, string][] = [];
  for (let i = 0; i < list.length; i += 2) out.push([list[i], list[i + 1]]);
  return out;
}

/** An HPACK integer, written independently of the encoder under test. */
function int(flags: number, prefixBits: number, value: number): number[] {
  const max = 2 ** prefixBits - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) | 0x80); v = Math.floor(v / 128); }
  out.push(v);
  return out;
}
const rawStr = (s: string): number[] => [...int(0, 7, s.length), ...Buffer.from(s, 'latin1')];
const huffStr = (s: string): number[] => { const h = huffmanEncode(s); return [...int(0x80, 7, h.length), ...h]; };

function throwsHpack(t: Test, fn: () => unknown, message: RegExp, what: string): void {
  let err: unknown = null;
  try { fn(); } catch (e) { err = e; }
  t.ok(err instanceof HpackError, `${what}: throws HpackError (got ${err === null ? 'no error' : String(err)})`);
  if (err instanceof HpackError) {
    t.equal(err.code, 'ERR_HPACK', `${what}: code`);
    t.match(err.message, message, `${what}: message`);
  }
}

// -------------------------------------------------------------------------------------------------

t.test('Huffman code table (RFC 7541 Appendix B)', async (t) => {
  t.equal(HUFFMAN_CODES.length, 257, '256 octets and EOS');
  t.equal(HUFFMAN_LENGTHS.length, 257);
  let minLen = 99;
  let maxLen = 0;
  let kraft = 0n;
  for (let sym = 0; sym <= EOS; sym++) {
    const len = HUFFMAN_LENGTHS[sym];
    minLen = Math.min(minLen, len);
    maxLen = Math.max(maxLen, len);
    if (HUFFMAN_CODES[sym] >= 2 ** len) t.fail(`code of ${sym} does not fit its length`);
    kraft += 1n << BigInt(30 - len);
  }
  t.equal(minLen, 5, 'shortest code: 5 bits');
  t.equal(maxLen, 30, 'longest code: 30 bits');
  t.equal(kraft, 1n << 30n, 'Kraft sum is exactly 1: a complete prefix code');

  // canonical: in (length, symbol) order each code is the previous + 1, shifted to the new length
  const order = [...Array(257).keys()].sort((a, b) => HUFFMAN_LENGTHS[a] - HUFFMAN_LENGTHS[b] || a - b);
  let code = 0;
  let prevLen = HUFFMAN_LENGTHS[order[0]];
  let bad = 0;
  for (let i = 0; i < order.length; i++) {
    const sym = order[i];
    const len = HUFFMAN_LENGTHS[sym];
    if (i > 0) code = (code + 1) * 2 ** (len - prevLen);
    if (HUFFMAN_CODES[sym] !== code) { bad++; t.fail(`symbol ${sym}: code ${HUFFMAN_CODES[sym].toString(16)}, canonical ${code.toString(16)}`); }
    prevLen = len;
  }
  t.equal(bad, 0, 'every code is the canonical one');
  t.equal(HUFFMAN_CODES[EOS], 0x3fffffff, 'EOS is 30 ones');

  // spot checks against the RFC's rows
  t.same([HUFFMAN_CODES[48], HUFFMAN_LENGTHS[48]], [0x0, 5], "'0'");
  t.same([HUFFMAN_CODES[97], HUFFMAN_LENGTHS[97]], [0x3, 5], "'a'");
  t.same([HUFFMAN_CODES[0], HUFFMAN_LENGTHS[0]], [0x1ff8, 13], 'symbol 0');
  t.same([HUFFMAN_CODES[255], HUFFMAN_LENGTHS[255]], [0x3ffffee, 26], 'symbol 255');
});

t.test('Huffman strings: RFC examples, every octet, random round trips, bad padding', async (t) => {
  const examples: [string, string][] = [
    ['www.example.com', 'f1e3 c2e5 f23a 6ba0 ab90 f4ff'],
    ['no-cache', 'a8eb 1064 9cbf'],
    ['custom-key', '25a8 49e9 5ba9 7d7f'],
    ['custom-value', '25a8 49e9 5bb8 e8b4 bf'],
    ['302', '6402'],
    ['private', 'aec3 771a 4b'],
    ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff'],
    ['https://www.example.com', '9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3'],
    ['foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1',
      '94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07'],
  ];
  for (const [text, code] of examples) {
    t.equal(huffmanEncode(text).toString('hex'), hex(code).toString('hex'), `encode ${text}`);
    const b = hex(code);
    t.equal(huffmanDecode(b, 0, b.length), text, `decode ${text}`);
  }
  for (let c = 0; c < 256; c++) {
    const s = String.fromCharCode(c) + 'x' + String.fromCharCode(255 - c);
    const e = huffmanEncode(s);
    if (huffmanDecode(e, 0, e.length) !== s) t.fail(`octet ${c} does not round-trip`);
  }
  const all = String.fromCharCode(...Array(256).keys());
  const e = huffmanEncode(all);
  t.equal(huffmanDecode(e, 0, e.length), all, 'all 256 octets in one string');
  t.equal(huffmanDecode(Buffer.alloc(0), 0, 0), '', 'empty string');

  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 200 }), (codes) => {
    const s = String.fromCharCode(...codes);
    const enc = huffmanEncode(s);
    return huffmanDecode(enc, 0, enc.length) === s;
  }), { numRuns: 2000 });

  // 'a' = 00011: then padding
  t.equal(huffmanDecode(Buffer.from([0x1f]), 0, 1), 'a', "'a' + 3 one bits of padding");
  t.equal(huffmanDecode(Buffer.from([0x18]), 0, 1), null, 'padding of zeros');
  t.equal(huffmanDecode(Buffer.from([0x1e]), 0, 1), null, 'padding 110: not all ones');
  t.equal(huffmanDecode(Buffer.from([0x1f, 0xff]), 0, 2), null, 'padding of 11 bits');
  t.equal(huffmanDecode(Buffer.from([0xff]), 0, 1), null, 'a whole byte of padding');
  t.equal(huffmanDecode(Buffer.from([0xff, 0xff, 0xff, 0xfc]), 0, 4), null, 'EOS (30 ones) then 00');
  t.equal(huffmanDecode(Buffer.from([0x1f, 0xff, 0xff, 0xff, 0xfe]), 0, 5), null, "'a', then EOS inside");
  // 'a' + the 28-bit code of symbol 2 (fffffe2) + 7 ones of padding: 5 + 28 + 7 = 40 bits
  const s2 = huffmanEncode('a\x02');
  t.equal(s2.length, 5);
  t.equal(huffmanDecode(s2, 0, 5), 'a\x02', 'a 28-bit code across byte boundaries');
});

t.test('static table (RFC 7541 Appendix A)', async (t) => {
  const st = staticTable();
  t.equal(st.length, 61);
  t.same(st[0], [':authority', '']);
  t.same(st[1], [':method', 'GET']);
  t.same(st[15], ['accept-encoding', 'gzip, deflate']);
  t.same(st[31], ['cookie', '']);
  t.same(st[54], ['set-cookie', '']);
  t.same(st[60], ['www-authenticate', '']);
  const d = new HpackDecoder();
  t.same(d.decode(Buffer.from([0xbd])), ['www-authenticate', ''], 'index 61');
  t.same(d.decode(Buffer.from([0x88, 0x8e])), [':status', '200', ':status', '500']);
});

// -------------------------------------------------------------------------------------------------
// RFC 7541 Appendix C

type Step = { block: string; fields: [string, string][]; table: [string, string][]; size: number };

function runSteps(t: Test, d: HpackDecoder, steps: Step[], label: string): void {
  steps.forEach((s, i) => {
    const out = d.decode(hex(s.block));
    t.same(pairs(out), s.fields, `${label}.${i + 1}: header list`);
    t.same(d.tableEntries(), s.table, `${label}.${i + 1}: dynamic table`);
    t.equal(d.tableSize, s.size, `${label}.${i + 1}: table size`);
  });
}

t.test('C.2 literal and indexed field representations', async (t) => {
  let d = new HpackDecoder();
  runSteps(t, d, [{
    block: '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572',
    fields: [['custom-key', 'custom-header']], table: [['custom-key', 'custom-header']], size: 55,
  }], 'C.2.1');
  d = new HpackDecoder();
  runSteps(t, d, [{ block: '040c 2f73 616d 706c 652f 7061 7468', fields: [[':path', '/sample/path']], table: [], size: 0 }], 'C.2.2');
  d = new HpackDecoder();
  runSteps(t, d, [{ block: '1008 7061 7373 776f 7264 0673 6563 7265 74', fields: [['password', 'secret']], table: [], size: 0 }], 'C.2.3');
  d = new HpackDecoder();
  runSteps(t, d, [{ block: '82', fields: [[':method', 'GET']], table: [], size: 0 }], 'C.2.4');
});

const REQ1: [string, string][] = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']];
const REQ2: [string, string][] = [...REQ1, ['cache-control', 'no-cache']];
const REQ3: [string, string][] = [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']];
const REQ_TABLES: [string, string][][] = [
  [[':authority', 'www.example.com']],
  [['cache-control', 'no-cache'], [':authority', 'www.example.com']],
  [['custom-key', 'custom-value'], ['cache-control', 'no-cache'], [':authority', 'www.example.com']],
];
const C3 = ['8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', '8286 84be 5808 6e6f 2d63 6163 6865',
  '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'];
const C4 = ['8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', '8286 84be 5886 a8eb 1064 9cbf',
  '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'];

t.test('C.3 requests without Huffman, C.4 with Huffman', async (t) => {
  for (const [label, blocks] of [['C.3', C3], ['C.4', C4]] as const) {
    runSteps(t, new HpackDecoder(), blocks.map((block, i) => ({
      block, fields: [REQ1, REQ2, REQ3][i], table: REQ_TABLES[i], size: [57, 110, 164][i],
    })), label);
  }
  // our encoder makes the same choices as the RFC's for these requests, with raw strings: C.3 exactly
  const e = new HpackEncoder();
  [REQ1, REQ2, REQ3].forEach((req, i) => {
    t.equal(e.encode(req.flat()).toString('hex'), hex(C3[i]).toString('hex'), `encoder reproduces C.3.${i + 1}`);
    t.same(e.tableEntries(), REQ_TABLES[i], `encoder table after C.3.${i + 1}`);
  });
});

const DATE1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const DATE2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const LOC = 'https://www.example.com';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RES: [string, string][][] = [
  [[':status', '302'], ['cache-control', 'private'], ['date', DATE1], ['location', LOC]],
  [[':status', '307'], ['cache-control', 'private'], ['date', DATE1], ['location', LOC]],
  [[':status', '200'], ['cache-control', 'private'], ['date', DATE2], ['location', LOC], ['content-encoding', 'gzip'], ['set-cookie', COOKIE]],
];
const RES_TABLES: [string, string][][] = [
  [['location', LOC], ['date', DATE1], ['cache-control', 'private'], [':status', '302']],
  [[':status', '307'], ['location', LOC], ['date', DATE1], ['cache-control', 'private']],
  [['set-cookie', COOKIE], ['content-encoding', 'gzip'], ['date', DATE2]],
];
const C5 = [
  '4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d',
  '4803 3330 37c1 c0bf',
  '88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31',
];
const C6 = [
  '4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3',
  '4883 640e ffc1 c0bf',
  '88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
];

t.test('C.5 responses without Huffman, C.6 with Huffman: table of 256, eviction', async (t) => {
  for (const [label, blocks] of [['C.5', C5], ['C.6', C6]] as const) {
    // We advertise 256; the peer's encoder starts at 4096 and moves to 256 with a size update
    // (3f e1 01 = 256), here sent as a block of its own.
    const d = new HpackDecoder(256);
    t.same(d.decode(hex('3fe101')), [], `${label}: size update alone is a valid (empty) block`);
    t.equal(d.tableMaxSize, 256);
    runSteps(t, d, blocks.map((block, i) => ({ block, fields: RES[i], table: RES_TABLES[i], size: [222, 222, 215][i] })), label);
  }
  // the same sequence with the size update at the start of the first block
  const d = new HpackDecoder(256);
  t.same(pairs(d.decode(Buffer.concat([hex('3fe101'), hex(C6[0])]))), RES[0]);
  t.equal(d.tableSize, 222);
  // without the update the table stays at 4096 and nothing is evicted: the size update matters
  const d2 = new HpackDecoder(256);
  d2.decode(hex(C5[0]));
  d2.decode(hex(C5[1]));
  t.equal(d2.tableEntries().length, 5, 'no eviction at 4096');
});

// -------------------------------------------------------------------------------------------------
// malformed input

t.test('malformed blocks throw HpackError', async (t) => {
  const d = () => new HpackDecoder();
  const B = (...bytes: number[]) => Buffer.from(bytes);
  throwsHpack(t, () => d().decode(B(0x80)), /index 0/, 'indexed field 0');
  throwsHpack(t, () => d().decode(B(0xbe)), /past the end/, 'index 62, empty dynamic table');
  throwsHpack(t, () => d().decode(B(...int(0x80, 7, 1000))), /past the end/, 'index 1000');
  throwsHpack(t, () => d().decode(B(0x7e, ...rawStr('v'))), /past the end/, 'literal with name index 62, empty table');
  throwsHpack(t, () => d().decode(B(0x0f, 0x30, ...rawStr('v'))), /past the end/, 'literal without indexing, name index 63');
  throwsHpack(t, () => d().decode(B(0x1f, 0x30, ...rawStr('v'))), /past the end/, 'never indexed, name index 63');
  {
    const dec = d();
    dec.decode(B(0x40, ...rawStr('a'), ...rawStr('b')));
    t.same(dec.decode(B(0xbe)), ['a', 'b'], 'index 62 after one insertion');
    throwsHpack(t, () => dec.decode(B(0xbf)), /past the end/, 'index 63 with one entry');
  }

  // integers: 2^31 - 1 is the largest; more, and encodings longer than needed, are refused
  throwsHpack(t, () => d().decode(B(...int(0x80, 7, 2 ** 31 - 1))), /past the end/, 'index 2^31 - 1 decodes as an integer');
  throwsHpack(t, () => d().decode(B(...int(0x80, 7, 2 ** 31))), /overflow/, 'index 2^31');
  throwsHpack(t, () => d().decode(B(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), /overflow/, 'huge index');
  throwsHpack(t, () => d().decode(B(0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01)), /overflow/, 'long run of zero groups');
  throwsHpack(t, () => d().decode(B(0xff, 0x80, 0x00)), /more bytes than needed/, 'index 127 with a trailing zero group');
  throwsHpack(t, () => d().decode(B(0x3f, 0x81, 0x80, 0x00)), /more bytes than needed/, 'size update 32 padded with zero groups');
  throwsHpack(t, () => d().decode(B(0x40, 0x7f, 0x80, 0x80, 0x00)), /more bytes than needed/, 'string length with zero groups');
  t.same(d().decode(B(0x3f, 0x00)), [], 'size update to 31 (prefix full, one zero byte) is minimal and valid');
  {
    const dec = d();
    t.same(dec.decode(B(0x3f, 0x80, 0x01)), [], 'size update to 31 + 128 (a zero group before the last) is valid');
    t.equal(dec.tableMaxSize, 159);
  }
  throwsHpack(t, () => d().decode(B(0xff)), /truncated integer/, 'integer cut after the prefix');
  throwsHpack(t, () => d().decode(B(0xff, 0x80)), /truncated integer/, 'integer cut after a continuation byte');

  // strings
  throwsHpack(t, () => d().decode(B(0x40)), /truncated string/, 'literal with no name');
  throwsHpack(t, () => d().decode(B(0x40, ...rawStr('name'))), /truncated string/, 'literal with no value');
  throwsHpack(t, () => d().decode(B(0x40, 0x05, 0x61, 0x62)), /truncated string/, 'name shorter than its length');
  throwsHpack(t, () => d().decode(B(0x04, 0x7f, 0xff, 0xff, 0xff, 0x07)), /truncated string/, 'value length 2^31 - 1 in a short block');
  throwsHpack(t, () => d().decode(B(0x04, 0x85, 0x1f)), /truncated string/, 'Huffman value shorter than its length');

  // Huffman
  throwsHpack(t, () => d().decode(B(0x04, 0x81, 0x18)), /Huffman/, "'a' padded with zeros");
  throwsHpack(t, () => d().decode(B(0x04, 0x82, 0x1f, 0xff)), /Huffman/, 'padding longer than 7 bits');
  throwsHpack(t, () => d().decode(B(0x04, 0x81, 0xff)), /Huffman/, 'a byte of padding only');
  throwsHpack(t, () => d().decode(B(0x04, 0x84, 0xff, 0xff, 0xff, 0xff)), /Huffman/, 'EOS in a value');
  throwsHpack(t, () => d().decode(B(0x40, 0x85, 0x1f, 0xff, 0xff, 0xff, 0xfe, ...rawStr('v'))), /Huffman/, "EOS after 'a' in a name");
  t.same(d().decode(B(0x04, 0x81, 0x1f)), [':path', 'a'], "'a' with 3 bits of padding is fine");

  // size updates
  throwsHpack(t, () => d().decode(B(...int(0x20, 5, 4097))), /over the 4096/, 'size update over 4096');
  throwsHpack(t, () => new HpackDecoder(256).decode(B(...int(0x20, 5, 257))), /over the 256/, 'size update over 256');
  throwsHpack(t, () => d().decode(B(0x82, 0x20)), /after the first field/, 'size update after a field');
  throwsHpack(t, () => d().decode(B(0x20, 0x82, 0x3f, 0xe1, 0x1f)), /after the first field/, 'second update after a field');
  throwsHpack(t, () => d().decode(B(0x20, 0x21, 0x22, 0x82)), /more than two/, 'three size updates');
  {
    const dec = d();
    t.same(dec.decode(B(0x20, 0x3f, 0xe1, 0x1f, 0x82)), [':method', 'GET'], 'two size updates at the start (0, then 4096)');
    t.equal(dec.tableMaxSize, 4096);
    const big = new HpackDecoder(65536);
    t.same(big.decode(B(...int(0x20, 5, 65536))), [], 'update up to what we advertised');
    t.equal(big.tableMaxSize, 65536);
  }

  t.same(d().decode(Buffer.alloc(0)), [], 'an empty block is valid');
  t.same(d().decode(new Uint8Array([0x82, 0x84])), [':method', 'GET', ':path', '/'], 'a plain Uint8Array');
  const inner = Buffer.from([0xff, 0xff, 0x82, 0x86, 0xff]);
  t.same(d().decode(inner.subarray(2, 4)), [':method', 'GET', ':scheme', 'http'], 'a view into a larger buffer');
  t.throws(() => new HpackDecoder(-1), RangeError, 'negative table size refused');
  t.throws(() => new HpackDecoder(4096, 1.5), RangeError, 'fractional list size refused');
});

// -------------------------------------------------------------------------------------------------
// fuzzing: only HpackError may come out

function guardedDecode(d: HpackDecoder, block: Uint8Array, maxCount?: number): 'ok' | 'null' | 'error' {
  try {
    const r = d.decode(block, maxCount);
    if (r === null) {
      if (!d.tooLarge) throw new Error('null without tooLarge');
      return 'null';
    }
    if (!Array.isArray(r) || r.length % 2 !== 0 || r.some((s) => typeof s !== 'string')) throw new Error(`bad result ${String(r)}`);
    return 'ok';
  } catch (err) {
    if (err instanceof HpackError && err.code === 'ERR_HPACK') return 'error';
    throw err;
  }
}

const TYPICAL_REQUEST = [
  ':method', 'GET', ':scheme', 'http', ':authority', 'orders.default.svc.cluster.local', ':path', '/api/v1/orders/12345?expand=items',
  'user-agent', 'curl/8.5.0', 'accept', 'application/json', 'x-request-id', '7f3c9a2e-1b4d-4c1a-9d2e-0a1b2c3d4e5f',
  'type', 'transfer', 'authorization', 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc', 'cookie', 'session=1',
];

function fuzzSeeds(): Buffer[] {
  const seeds = [...C3, ...C4, ...C5, ...C6].map(hex);
  seeds.push(hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'), hex('1008 7061 7373 776f 7264 0673 6563 7265 74'));
  seeds.push(hex('3fe101'), hex('203fe11f82'), Buffer.from([0x82, 0xbe, 0xbf]));
  seeds.push(Buffer.from([0x40, ...huffStr('x-huff'), ...huffStr('value with \xff and \x00'), 0x10, ...huffStr('n'), ...huffStr('v'.repeat(130))]));
  const e = new HpackEncoder();
  seeds.push(e.encode(TYPICAL_REQUEST), e.encode(TYPICAL_REQUEST));
  seeds.push(e.encode([':status', '200', 'x-long', 'z'.repeat(300), 'content-length', '12']));
  return seeds;
}

type Mutation =
  | { k: 'flip'; at: number; bit: number }
  | { k: 'set'; at: number; v: number }
  | { k: 'insert'; at: number; data: Uint8Array }
  | { k: 'delete'; at: number; n: number }
  | { k: 'truncate'; at: number }
  | { k: 'dupe'; at: number; n: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0x00, 0x20, 0x3f, 0x40, 0x7f, 0x80, 0xbe, 0xff)) }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 6 }) }),
  fc.record({ k: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ k: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ k: fc.constant('dupe' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 24 }) }),
);

function mutate(buf: Buffer, muts: Mutation[]): Buffer {
  let b = Buffer.from(buf);
  for (const m of muts) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    switch (m.k) {
      case 'flip': b[at] ^= 1 << m.bit; break;
      case 'set': b[at] = m.v; break;
      case 'insert': b = Buffer.concat([b.subarray(0, at), m.data, b.subarray(at)]); break;
      case 'delete': b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]); break;
      case 'truncate': b = b.subarray(0, at); break;
      case 'dupe': b = Buffer.concat([b.subarray(0, at + m.n), b.subarray(at)]); break;
    }
  }
  return b;
}

t.test('fuzz: random bytes and mutated valid blocks give a list, null or HpackError', async (t) => {
  const seeds = fuzzSeeds();
  const counts = { ok: 0, null: 0, error: 0 };
  const limits = fc.record({
    table: fc.constantFrom(0, 256, 4096),
    list: fc.constantFrom(Infinity, DEFAULT_MAX_LIST_SIZE, 120),
    count: fc.constantFrom(undefined, 3),
    preload: fc.boolean(),
  });
  const run = (lim: { table: number; list: number; count: number | undefined; preload: boolean }, block: Uint8Array) => {
    const d = new HpackDecoder(lim.table, lim.list);
    // a table with entries, so that dynamic indices sometimes hit
    if (lim.preload) guardedDecode(d, seeds[seeds.length - 3]);
    const r = guardedDecode(d, block, lim.count);
    counts[r]++;
    // whatever happened, a decoder that did not fail must still decode a valid next block
    if (r !== 'error') {
      const again = guardedDecode(d, Buffer.from([0x82, 0x84]));
      if (again === 'error') throw new Error('a good block failed after a good one');
    }
  };
  const params = { numRuns: 20_000, seed: 7541, interruptAfterTimeLimit: 12_000, markInterruptAsFailure: false };
  fc.assert(fc.property(limits, fc.uint8Array({ maxLength: 80 }), (lim, bytes) => { run(lim, bytes); }), params);
  fc.assert(fc.property(limits, fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 5 }),
    (lim, k, muts) => { run(lim, mutate(seeds[k], muts)); }), params);
  t.ok(counts.ok > 1000, `valid results seen (${counts.ok})`);
  t.ok(counts.error > 1000, `HpackErrors seen (${counts.error})`);
  t.ok(counts.null > 10, `over-limit nulls seen (${counts.null})`);
});

// -------------------------------------------------------------------------------------------------
// round trips

const COMMON: [string, string[]][] = [
  [':method', ['GET', 'POST', 'PUT']], [':path', ['/', '/index.html', '/api/v1/orders', '/a'.repeat(40)]],
  [':authority', ['api.local', 'orders.default.svc.cluster.local:8080']], [':scheme', ['http', 'https']],
  [':status', ['200', '404', '503']], ['accept-encoding', ['gzip, deflate', 'gzip, br']], ['user-agent', ['curl/8.5.0', 'h2load nghttp2/1.59.0']],
  ['content-type', ['application/json', 'application/grpc']], ['authorization', ['Bearer abc', 'Basic Zm9vOmJhcg==']],
  ['cookie', ['a=1', 'session=' + 's'.repeat(40)]], ['set-cookie', ['id=1; Path=/']], ['content-length', ['0', '123']],
  ['x-request-id', ['1', '2']], ['type', ['transfer']], ['te', ['trailers']],
];

const latin1 = (max: number) => fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: max }).map((a) => String.fromCharCode(...a));
const fieldArb: fc.Arbitrary<[string, string]> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...COMMON).chain(([n, vs]) => fc.tuple(fc.constant(n), fc.oneof(fc.constantFrom(...vs), latin1(12)))) },
  { weight: 2, arbitrary: fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/), latin1(30)) },
  { weight: 1, arbitrary: fc.tuple(latin1(8), fc.oneof(latin1(200), fc.nat(5000).map((n) => 'v'.repeat(n)))) },
);

t.test('round trips: random header lists over many blocks, tables in sync, eviction', async (t) => {
  let blocks = 0;
  let bytes = 0;
  fc.assert(fc.property(
    fc.constantFrom(0, 32, 64, 100, 256, 1024, 4096, 65536),
    fc.array(fc.record({
      fields: fc.array(fieldArb, { maxLength: 24 }),
      repeat: fc.boolean(),
      resize: fc.option(fc.nat(70_000), { freq: 6 }),
    }), { minLength: 1, maxLength: 16 }),
    (advertised, seq) => {
      const d = new HpackDecoder(advertised, Infinity);
      const e = new HpackEncoder();
      e.setPeerMaxTableSize(advertised);
      let prev: string[] = [];
      for (const step of seq) {
        if (step.resize !== null) e.setPeerMaxTableSize(Math.min(step.resize, advertised));
        const list = step.repeat && prev.length ? prev : step.fields.flat();
        const block = e.encode(list);
        blocks++;
        bytes += block.length;
        const out = d.decode(block);
        if (JSON.stringify(out) !== JSON.stringify(list)) throw new Error(`decoded ${JSON.stringify(out)} for ${JSON.stringify(list)}`);
        if (JSON.stringify(d.tableEntries()) !== JSON.stringify(e.tableEntries())) throw new Error('dynamic tables differ');
        if (d.tableSize !== e.tableSize || d.tableMaxSize !== e.tableMaxSize) throw new Error('table sizes differ');
        if (e.tableSize > e.tableMaxSize || e.tableMaxSize > Math.min(advertised, ENCODER_MAX_TABLE_SIZE)) throw new Error('encoder table over its limit');
        prev = list;
      }
    }), { numRuns: 400, seed: 42, interruptAfterTimeLimit: 12_000, markInterruptAsFailure: false });
  t.ok(blocks > 1000, `${blocks} blocks, ${bytes} bytes round-tripped`);
});

t.test('encoder: repeated requests shrink, sensitive and variable fields stay out of the table', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  const first = e.encode(TYPICAL_REQUEST);
  const second = e.encode(TYPICAL_REQUEST);
  t.same(d.decode(first), TYPICAL_REQUEST);
  t.same(d.decode(second), TYPICAL_REQUEST);
  t.ok(first.length > 150, `first block ${first.length} bytes`);
  // x-request-id (name literal + value) and authorization (never indexed) are sent again; the rest
  // are one byte each
  const rest = 1 + 1 + 12 + 1 + 36 + 2 + 1 + 35;
  t.ok(second.length <= 8 + rest, `repeat block ${second.length} bytes (first ${first.length})`);
  const names = e.tableEntries().map(([n]) => n);
  t.notOk(names.includes('authorization'), 'authorization not indexed');
  t.notOk(names.includes('x-request-id'), 'x-request-id not indexed');
  t.ok(names.includes('cookie'), 'a short cookie is indexed');
  t.ok(names.includes('user-agent') && names.includes(':authority') && names.includes(':path') && names.includes('type'), 'the stable fields are indexed');

  // representation bytes: authorization (static name 23) never indexed = 0001 1111, then 23 - 15 = 8
  const auth = new HpackEncoder().encode(['authorization', 'Bearer x']);
  t.same([...auth.subarray(0, 2)], [0x1f, 0x08], 'authorization: never indexed, static name 23');
  const cl = new HpackEncoder().encode(['content-length', '42']);
  t.same([...cl.subarray(0, 2)], [0x0f, 0x0d], 'content-length: without indexing, static name 28');
  const longCookie = new HpackEncoder();
  const lc = longCookie.encode(['cookie', 'sid=' + 'c'.repeat(60)]);
  t.same([...lc.subarray(0, 2)], [0x1f, 0x11], 'a long cookie: never indexed, static name 32');
  t.equal(longCookie.tableSize, 0);
  const longPath = new HpackEncoder();
  longPath.encode([':path', '/search?q=' + 'x'.repeat(80)]);
  t.equal(longPath.tableSize, 0, 'a long :path is not indexed');
  const huge = new HpackEncoder();
  huge.encode(['x-forwarded-client-cert', 'y'.repeat(3000)]);
  t.equal(huge.tableSize, 0, 'a field larger than half the table is not indexed');
  const custom = new HpackEncoder();
  custom.encode(['x-custom', 'a', 'x-custom', 'b']);
  t.same(custom.tableEntries(), [['x-custom', 'b'], ['x-custom', 'a']]);
  const b = custom.encode(['x-custom', 'c']);
  t.same([...b.subarray(0, 1)], [0x40 | 62], 'a new value of an indexed name refers to the newest entry by index');

  // returns fresh buffers: a later encode does not change an earlier result
  const e2 = new HpackEncoder();
  const a1 = e2.encode([':path', '/one']);
  const copy = Buffer.from(a1);
  e2.encode([':path', '/two', 'x', 'y'.repeat(5000)]);
  t.same(a1, copy, 'earlier result untouched');
});

t.test('encoder: table size changes are signalled at the start of the next block', async (t) => {
  const e = new HpackEncoder();
  const d = new HpackDecoder(4096);
  d.decode(e.encode(['x-a', '1', 'x-b', '2']));
  t.equal(e.tableSize, 2 * 36);
  e.setPeerMaxTableSize(65536);
  t.equal(e.tableMaxSize, 4096, 'a larger peer table is not used beyond 4096: no update');
  t.equal(e.encode([':method', 'GET'])[0], 0x82, 'no size update emitted');
  e.setPeerMaxTableSize(0);
  e.setPeerMaxTableSize(4096);
  const b = e.encode(['x-c', '3']);
  t.same([...b.subarray(0, 4)], [0x20, 0x3f, 0xe1, 0x1f], 'smallest size (0) first, then the final 4096');
  t.same(d.decode(b), ['x-c', '3']);
  t.same(d.tableEntries(), [['x-c', '3']], 'the decoder emptied its table at 0');
  t.same(e.tableEntries(), d.tableEntries());
  e.setPeerMaxTableSize(100);
  const b2 = e.encode(['x-d', '4']);
  t.same([...b2.subarray(0, 2)], [0x3f, 100 - 31], 'one update to 100');
  d.decode(b2);
  t.equal(d.tableMaxSize, 100);
  t.throws(() => e.setPeerMaxTableSize(-1), RangeError);
});

t.test('tooLarge: over maxListSize or maxCount returns null; the next block decodes right', async (t) => {
  const e = new HpackEncoder();
  // the limit is crossed at the second field; three more fields are added to the table after it
  const big = [':method', 'GET', 'x-one', 'a'.repeat(40), 'x-two', 'b'.repeat(40), 'x-three', 'c', 'x-four', 'd'];
  const next = ['x-one', 'a'.repeat(40), 'x-two', 'b'.repeat(40), 'x-three', 'c', 'x-four', 'd'];
  const block1 = e.encode(big);
  const block2 = e.encode(next);
  t.same([...block2], [0xc1, 0xc0, 0xbf, 0xbe], 'second block: four indexed fields');

  const d1 = new HpackDecoder(4096, 50);
  t.equal(d1.decode(block1), null, 'over maxListSize at the second field');
  t.equal(d1.tooLarge, true);
  t.same(d1.tableEntries(), [['x-four', 'd'], ['x-three', 'c'], ['x-two', 'b'.repeat(40)], ['x-one', 'a'.repeat(40)]],
    'every field after the limit was still added to the table');
  t.same(d1.decode(block2, 10), null, 'the next block is over the limit too');
  t.same(new HpackDecoder(4096, 50).decode(Buffer.from([0x82])), [':method', 'GET'], 'a small block is not');

  const size = big.reduce((sum, v, i) => sum + v.length + (i % 2 ? 32 : 0), 0);
  const d2 = new HpackDecoder(4096, size - 1);
  t.equal(d2.decode(block1), null, 'one byte over maxListSize');
  const d3 = new HpackDecoder(4096, size);
  t.same(d3.decode(block1), big, 'exactly maxListSize is allowed');

  const d4 = new HpackDecoder();
  t.equal(d4.decode(block1, 1), null, '5 fields, maxCount 1');
  t.equal(d4.tooLarge, true);
  t.same(d4.decode(block2), next, 'next block decodes with the table in sync');
  t.equal(d4.tooLarge, false, 'tooLarge cleared by the next decode');
  t.same(new HpackDecoder().decode(block1, 5), big, 'maxCount 5 is enough');
  t.equal(new HpackDecoder().decode(block1, 4), null, 'maxCount 4 is not');
  t.equal(new HpackDecoder().decode(Buffer.from([0x82]), 0), null, 'maxCount 0');

  // the default list limit is 64 KiB
  const e2 = new HpackEncoder();
  const d5 = new HpackDecoder();
  t.equal(d5.decode(e2.encode(['x-big', 'z'.repeat(DEFAULT_MAX_LIST_SIZE)])), null, 'over the default 64 KiB');
  t.same(d5.decode(e2.encode(['a', 'b'])), ['a', 'b']);
});

t.test('eviction: oldest first, an entry larger than the table empties it', async (t) => {
  const d = new HpackDecoder();
  const lit = (n: string, v: string) => [0x40, ...rawStr(n), ...rawStr(v)];
  // size update to 100, then entries of 32 + 2 + 30 = 64 and 32 + 2 + 2 = 36: exactly 100
  t.same(d.decode(Buffer.from([...int(0x20, 5, 100), ...lit('x1', 'a'.repeat(30)), ...lit('x2', 'bb')])), ['x1', 'a'.repeat(30), 'x2', 'bb']);
  t.equal(d.tableSize, 100, 'an entry that fills the table exactly fits');
  t.same(d.tableEntries(), [['x2', 'bb'], ['x1', 'a'.repeat(30)]]);
  d.decode(Buffer.from(lit('x3', 'c')));
  t.same(d.tableEntries(), [['x3', 'c'], ['x2', 'bb']], 'the oldest entry went');
  t.equal(d.tableSize, 71);
  // the new entry's name refers to the entry it evicts (RFC 7541 §4.4): the name must survive
  t.same(d.decode(Buffer.from([...int(0x40, 6, 63), ...rawStr('d'.repeat(40))])), ['x2', 'd'.repeat(40)], 'name taken from an entry the insertion evicts');
  t.same(d.tableEntries(), [['x2', 'd'.repeat(40)]], 'both old entries evicted to make room');
  t.equal(d.tableSize, 74);
  d.decode(Buffer.from(lit('x4', 'e'.repeat(67))));
  t.same(d.tableEntries(), [], 'an entry of 101 bytes empties the table and is not added');
  t.equal(d.tableSize, 0);
  t.same(d.decode(Buffer.from([0x20])), [], 'size update to 0');
  d.decode(Buffer.from(lit('x5', '')));
  t.same(d.tableEntries(), [], 'nothing fits in a table of 0');
  throwsHpack(t, () => d.decode(Buffer.from([0xbe])), /past the end/, 'index 62 in an empty table');
});

// -------------------------------------------------------------------------------------------------
// against nghttp2 (node:http2), over real sockets

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const T_DATA = 0x0, T_HEADERS = 0x1, T_SETTINGS = 0x4, T_GOAWAY = 0x7, T_CONTINUATION = 0x9;
const F_END_STREAM = 0x1, F_ACK = 0x1, F_END_HEADERS = 0x4, F_PADDED = 0x8, F_PRIORITY = 0x20;
const MAX_FRAME = 16384;

interface Frame { type: number; flags: number; stream: number; payload: Buffer }

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** HEADERS and as many CONTINUATION frames as the block needs. */
function headerFrames(stream: number, block: Buffer, endStream: boolean): Buffer {
  const out: Buffer[] = [];
  for (let off = 0; off < block.length || off === 0; off += MAX_FRAME) {
    const part = block.subarray(off, off + MAX_FRAME);
    const last = off + MAX_FRAME >= block.length;
    const first = off === 0;
    out.push(frame(first ? T_HEADERS : T_CONTINUATION, (last ? F_END_HEADERS : 0) | (first && endStream ? F_END_STREAM : 0), stream, part));
    if (block.length === 0) break;
  }
  return Buffer.concat(out);
}

/** Splits bytes into frames; joins HEADERS + CONTINUATION into whole blocks. */
class FrameReader {
  private buf = Buffer.alloc(0);
  private block: { stream: number; flags: number; parts: Buffer[] } | null = null;
  constructor(private readonly onFrame: (f: Frame) => void, private readonly onBlock: (stream: number, flags: number, block: Buffer) => void) {}
  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const f: Frame = { type: this.buf[3], flags: this.buf[4], stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) };
      this.buf = this.buf.subarray(9 + len);
      this.onFrame(f);
      if (f.type === T_HEADERS) {
        let p = f.payload;
        let pad = 0;
        if (f.flags & F_PADDED) { pad = p[0]; p = p.subarray(1); }
        if (f.flags & F_PRIORITY) p = p.subarray(5);
        p = p.subarray(0, p.length - pad);
        this.block = { stream: f.stream, flags: f.flags, parts: [p] };
      } else if (f.type === T_CONTINUATION && this.block) {
        this.block.parts.push(f.payload);
      } else {
        continue;
      }
      if (f.flags & F_END_HEADERS && this.block) {
        const b = this.block;
        this.block = null;
        this.onBlock(b.stream, b.flags, Buffer.concat(b.parts));
      }
    }
  }
}

/** Deterministic PRNG (mulberry32): the same requests on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let r = Math.imul(a ^ (a >>> 15), 1 | a);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

const LATIN1_VALUE = 'caf\xe9 \xbd \xff\x80 na\xefve';

/** Varied request headers (regular ones only, lowercase, as a node client or our encoder sends them). */
function requestHeaders(i: number, rnd: () => number): [string, string][] {
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];
  const h: [string, string][] = [];
  h.push(['user-agent', pick(['curl/8.5.0', 'h2load nghttp2/1.59.0', 'grpc-java-netty/1.60.0'])]);
  h.push(['accept', pick(['*/*', 'application/json', 'text/html,application/xhtml+xml;q=0.9'])]);
  if (rnd() < 0.7) h.push(['accept-encoding', pick(['gzip, deflate', 'gzip, br'])]);
  h.push(['x-request-id', `${i.toString(16).padStart(8, '0')}-1b4d-4c1a-9d2e-${Math.floor(rnd() * 1e12)}`]);
  if (rnd() < 0.5) h.push(['type', pick(['transfer', 'query'])]);
  if (rnd() < 0.4) h.push(['authorization', `Bearer ${Math.floor(rnd() * 1e15).toString(36)}`]);
  if (rnd() < 0.3) h.push(['cookie', rnd() < 0.5 ? 'a=1' : `session=${'s'.repeat(30)}${i}`]);
  if (rnd() < 0.3) h.push(['x-latin1', LATIN1_VALUE]);
  if (rnd() < 0.3) h.push(['x-multi', 'one'], ['x-multi', 'two'], ['x-multi', String(i)]);
  if (rnd() < 0.2) h.push(['x-long', 'L'.repeat(200 + Math.floor(rnd() * 3000))]);
  if (i % 17 === 5) for (let k = 0; k < 80; k++) h.push([`x-h-${k}`, `value-${k}-${i % 3}`]);
  if (i % 23 === 7) h.push(['x-big-1', 'A'.repeat(9000)], ['x-big-2', 'B'.repeat(9000)], ['x-big-3', 'C'.repeat(4000)]);
  return h;
}

function regular(list: string[]): [string, string][] {
  return (pairs(list) ?? []).filter(([n]) => !n.startsWith(':'));
}

async function listen(server: net.Server | http2.Http2Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

t.test('oracle: node:http2 client → raw server, HpackDecoder reads what nghttp2 encoded', async (t) => {
  const decoder = new HpackDecoder();
  const encoder = new HpackEncoder();
  const decoded = new Map<number, string[]>();
  const problems: string[] = [];
  let continuations = 0;
  const server = net.createServer((sock) => {
    let prefaceSeen = Buffer.alloc(0);
    const reader = new FrameReader((f) => {
      if (f.type === T_CONTINUATION) continuations++;
      if (f.type === T_SETTINGS && !(f.flags & F_ACK)) sock.write(frame(T_SETTINGS, F_ACK, 0));
    }, (stream, _flags, block) => {
      let list: string[] | null;
      try {
        list = decoder.decode(block);
      } catch (err) {
        problems.push(`stream ${stream}: ${(err as Error).message}`);
        sock.destroy();
        return;
      }
      if (list === null) { problems.push(`stream ${stream}: too large`); sock.destroy(); return; }
      decoded.set(stream, list);
      // answer with our encoder: echo the regular fields back under x-echo-* names
      const res = [':status', '200', 'x-stream', String(stream), 'x-fields', String(list.length / 2)];
      for (const [n, v] of regular(list).slice(0, 20)) res.push(`x-echo-${n}`, v);
      sock.write(headerFrames(stream, encoder.encode(res), true));
    });
    sock.on('data', (chunk: Buffer) => {
      if (prefaceSeen.length < PREFACE.length) {
        const need = PREFACE.length - prefaceSeen.length;
        prefaceSeen = Buffer.concat([prefaceSeen, chunk.subarray(0, need)]);
        chunk = chunk.subarray(need);
        if (prefaceSeen.length === PREFACE.length && !prefaceSeen.equals(PREFACE)) { problems.push('bad preface'); sock.destroy(); return; }
      }
      if (chunk.length) reader.push(chunk);
    });
    sock.on('error', () => {});
    sock.write(frame(T_SETTINGS, 0, 0));
  });
  const port = await listen(server);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', (err) => problems.push(`client: ${err.message}`));
  t.teardown(() => { client.destroy(); });

  const rnd = prng(1);
  const N = 40;
  for (let i = 0; i < N; i++) {
    const fields = requestHeaders(i, rnd);
    const method = i % 5 === 3 ? 'DELETE' : 'GET';
    const path = i % 7 === 2 ? `/search?q=${'x'.repeat(120)}&i=${i}` : `/api/v1/orders/${i % 4}`;
    const headers: http2.OutgoingHttpHeaders = { ':method': method, ':path': path };
    for (const [n, v] of fields) {
      const cur = headers[n];
      headers[n] = cur === undefined ? v : Array.isArray(cur) ? [...cur, v] : [String(cur), v];
    }
    const req = client.request(headers, { endStream: true });
    const [resHeaders, , raw] = await Promise.race([
      once(req, 'response') as Promise<[http2.IncomingHttpHeaders, number, string[]]>,
      once(req, 'close').then(() => { throw new Error(`request ${i} closed without a response: ${problems.join('; ')}`); }),
    ]);
    req.resume();
    if (!req.closed) await once(req, 'close');
    const stream = Number(resHeaders['x-stream']);
    const list = decoded.get(stream);
    if (!list) { t.fail(`request ${i}: nothing decoded`); break; }
    const pseudo = Object.fromEntries((pairs(list) ?? []).filter(([n]) => n.startsWith(':')));
    t.same(pseudo, { ':method': method, ':path': path, ':scheme': 'http', ':authority': `127.0.0.1:${port}` }, `request ${i}: pseudo-headers`);
    t.same(regular(list), fields, `request ${i}: regular fields in wire order`);
    // our encoder's response, as nghttp2 decoded it
    const rawPairs = pairs(raw) ?? [];
    const expected: [string, string][] = [[':status', '200'], ['x-stream', String(stream)], ['x-fields', String(list.length / 2)],
      ...regular(list).slice(0, 20).map(([n, v]) => [`x-echo-${n}`, v] as [string, string])];
    t.same(rawPairs, expected, `request ${i}: our response block as nghttp2 decoded it`);
  }
  t.same(problems, [], 'no decode errors');
  t.ok(decoder.tableSize > 0, `nghttp2 used the dynamic table (${decoder.tableEntries().length} entries)`);
  t.equal(decoded.size, N, 'every block decoded');
  t.ok(continuations > 0, `blocks over 16 KiB came in HEADERS + CONTINUATION (${continuations} CONTINUATION frames)`);
});

t.test('oracle: HpackEncoder → node:http2 server, with the server changing its table size', async (t) => {
  const seen = new Map<number, string[]>();
  const sessions: http2.ServerHttp2Session[] = [];
  // server table size by request number: changes take effect for the requests after
  const resizeAt = new Map<number, number>([[15, 0], [30, 4096], [42, 100], [50, 65536]]);
  const server = http2.createServer({ settings: { headerTableSize: 256 }, maxHeaderListPairs: 256 });
  server.on('session', (s) => { sessions.push(s); s.on('error', () => {}); });
  server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, raw: string[]) => {
    const i = Number(headers['x-i']);
    seen.set(i, raw);
    const size = resizeAt.get(i);
    if (size !== undefined) stream.session?.settings({ headerTableSize: size });
    stream.respond({ ':status': 200, 'x-i': String(i), 'content-type': 'text/plain', 'x-echo-ua': String(headers['user-agent']), 'x-latin1': LATIN1_VALUE }, { endStream: true });
  });
  const port = await listen(server);
  t.teardown(() => { for (const s of sessions) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });

  const encoder = new HpackEncoder();
  const decoder = new HpackDecoder();
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  t.teardown(() => { sock.destroy(); });
  await once(sock, 'connect');
  let settingsSeen = 0;
  const tableSizes: number[] = [];
  const responses = new Map<number, string[]>();
  const problems: string[] = [];
  let waiter: (() => void) | null = null;
  const wake = () => { const w = waiter; waiter = null; w?.(); };
  const reader = new FrameReader((f) => {
    if (f.type === T_SETTINGS && !(f.flags & F_ACK)) {
      for (let o = 0; o + 6 <= f.payload.length; o += 6) {
        if (f.payload.readUInt16BE(o) === 0x1) {
          const v = f.payload.readUInt32BE(o + 2);
          tableSizes.push(v);
          encoder.setPeerMaxTableSize(v);
        }
      }
      sock.write(frame(T_SETTINGS, F_ACK, 0));
      settingsSeen++;
      wake();
    } else if (f.type === T_GOAWAY) {
      problems.push(`GOAWAY error ${f.payload.readUInt32BE(4)}`);
      wake();
    } else if (f.type === T_DATA) {
      // none expected: responses end on HEADERS
    }
  }, (stream, _flags, block) => {
    try {
      const list = decoder.decode(block);
      if (list) responses.set(stream, list);
      else problems.push(`response ${stream} too large`);
    } catch (err) {
      problems.push(`response ${stream}: ${(err as Error).message}`);
    }
    wake();
  });
  sock.on('data', (c: Buffer) => reader.push(c));
  sock.on('close', () => { problems.push('socket closed'); wake(); });
  const until = async (cond: () => boolean, what: string) => {
    const deadline = Date.now() + 10_000;
    while (!cond() && problems.length === 0) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => { waiter = r; setTimeout(r, 1000); });
    }
  };

  sock.write(Buffer.concat([PREFACE, frame(T_SETTINGS, 0, 0)]));
  await until(() => settingsSeen >= 1, 'the server SETTINGS');
  t.same(tableSizes, [256], 'server advertised 256');
  t.equal(encoder.tableMaxSize, 256);

  const rnd = prng(2);
  const N = 60;
  const encoderSizes = new Map<number, number>();
  let bigBlocks = 0;
  for (let i = 0; i < N && problems.length === 0; i++) {
    const stream = 2 * i + 1;
    const method = ['GET', 'POST', 'PUT', 'GET'][i % 4];
    const path = i % 9 === 4 ? `/search?q=${'y'.repeat(100)}&i=${i}` : `/api/v1/orders/${i % 3}`;
    const list: string[] = [':method', method, ':scheme', 'http', ':authority', 'orders.local', ':path', path, 'x-i', String(i)];
    for (const [n, v] of requestHeaders(i, rnd)) list.push(n, v);
    const block = encoder.encode(list);
    if (block.length > MAX_FRAME) bigBlocks++;
    encoderSizes.set(i, encoder.tableMaxSize);
    sock.write(headerFrames(stream, block, true));
    const settingsBefore = settingsSeen;
    await until(() => responses.has(stream), `response ${i}`);
    if (resizeAt.has(i)) await until(() => settingsSeen > settingsBefore, `SETTINGS after request ${i}`);
    if (problems.length) break;
    const raw = seen.get(i);
    t.same(pairs(raw ?? null), pairs(list), `request ${i} (encoder table ${encoderSizes.get(i)}): nghttp2 saw the fields in order`);
    const res = pairs(responses.get(stream) ?? null) ?? [];
    t.same(res.filter(([n]) => n !== 'date'), [[':status', '200'], ['x-i', String(i)], ['content-type', 'text/plain'],
      ['x-echo-ua', list[list.indexOf('user-agent') + 1]], ['x-latin1', LATIN1_VALUE]], `response ${i}: decoded nghttp2's block`);
    t.equal(res.filter(([n]) => n === 'date').length, 1, `response ${i}: date`);
  }
  t.same(problems, [], 'no errors, no GOAWAY');
  t.same(tableSizes, [256, 0, 4096, 100, 65536], 'every table size change arrived');
  t.equal(encoderSizes.get(10), 256);
  t.equal(encoderSizes.get(20), 0, 'encoder at 0 after the server went to 0');
  t.equal(encoderSizes.get(35), 4096);
  t.equal(encoderSizes.get(45), 100);
  t.equal(encoderSizes.get(55), 4096, 'a 64 KiB peer table is used up to 4096');
  t.ok(decoder.tableSize > 0, 'nghttp2 indexed response fields in our decoder table');
  t.ok(bigBlocks > 0, `${bigBlocks} blocks over 16 KiB sent as HEADERS + CONTINUATION`);
});
