/**
 * Hessian2Reader: stepping over every Hessian2 form ends exactly where hessian.js (the reference) ends;
 * forms hessian.js never writes are checked against hand-assembled bytes; every malformed input is a
 * DubboProtocolError ERR_DUBBO_BAD_BODY and nothing else.
 */
import t, { type Test } from 'tap';
import { DubboProtocolError } from '../../../src/protocols/dubbo/dubbo-errors';
import { Hessian2Reader, MAX_DEPTH } from '../../../src/protocols/dubbo/hessian2-reader';
import { bytes, hessian, hjs, i, pojo, s } from './fixtures';

/** Steps over one value at 0; returns where the reader stopped. */
function skipEnd(buf: Buffer): number {
  const r = new Hessian2Reader(buf);
  r.skipValue();
  return r.pos;
}

/** Expects stepping over `buf` (as one value, or `count` values) to fail with ERR_DUBBO_BAD_BODY only. */
function badBody(t: Test, buf: Buffer, what: string, count = 1): void {
  try {
    const r = new Hessian2Reader(buf);
    for (let k = 0; k < count; k++) r.skipValue();
    t.fail(`${what}: expected ERR_DUBBO_BAD_BODY, stepped over it to ${r.pos}`);
  } catch (e) {
    t.ok(e instanceof DubboProtocolError && e.code === 'ERR_DUBBO_BAD_BODY', `${what}: ${(e as Error).message}`);
  }
}

const ints = [0, 1, -1, -16, 47, -17, 48, -2048, 2047, -2049, 2048, -262144, 262143, -262145, 262144, 2 ** 31 - 1, -(2 ** 31)];
const longs = [0, -8, 15, -9, 16, -2048, 2047, -2049, 2048, -262144, 262143, -262145, 262144, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, 2 ** 53 - 1, -(2 ** 53 - 1)];
const doubles = [0, 1, -1, 127, -128, 128, -129, 32767, -32768, 32768, -32769, 1.5, 0.001, -12.345, 1e300, -1e-300, Math.PI, 2 ** 40];
const longString = (n: number, unit = 'a') => unit.repeat(n);

const values: Array<[string, unknown]> = [
  ['null', null], ['true', true], ['false', false],
  ...ints.map((n): [string, unknown] => [`int ${n}`, n]),
  ...longs.map((n): [string, unknown] => [`long ${n}`, { $class: 'long', $: n }]),
  ['long max (8 bytes)', { $class: 'long', $: '9223372036854775807' }],
  ['long min (8 bytes)', { $class: 'long', $: '-9223372036854775808' }],
  ...doubles.map((n): [string, unknown] => [`double ${n}`, { $class: 'double', $: n }]),
  ['date in minutes', new Date(60000 * 27000000)], ['date in ms', new Date(1700000000123)], ['date epoch', new Date(0)],
  ...[0, 1, 31, 32, 1023, 1024, 0x7fff, 0x8000, 0x8001, 70000].map((n): [string, unknown] => [`ascii string of ${n}`, longString(n)]),
  ['latin-1 string', 'héllo wörld ñ'], ['CJK string', '你好，世界'.repeat(10)], ['emoji (surrogate pairs, CESU-8)', '😀 ok 🎉'],
  ['long CJK string (chunked)', longString(40000, '中')],
  ['chunk boundary on a surrogate pair', longString(0x7fff) + '😀' + longString(10)],
  ...[0, 1, 15, 16, 1023, 1024, 4093, 4094, 10000, 70000].map((n): [string, unknown] => [`binary of ${n}`, Buffer.alloc(n, 7)]),
  ['empty list', []], ['short list', [1, 'two', null]], ['8-element list', [1, 2, 3, 4, 5, 6, 7, 8]],
  ['typed int array', { $class: '[int', $: [1, 2, 3] }], ['typed string list (long)', { $class: '[java.lang.String', $: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] }],
  ['nested lists', [[[], [[1]]], [['x']]]],
  ['map', { a: 1, b: 'two', c: [3], d: { e: null } }], ['empty map', {}],
  ['ES Map with non-string keys', new Map<unknown, unknown>([[1, 'one'], [true, [2]], ['k', 'v']])],
  ['typed map (M)', { $class: 'com.alibaba.fastjson.JSONObject', $: { x: 1 } }],
  ['pojo', pojo('com.example.User', { name: 'n', age: 42, tags: ['a'], boss: null })],
  ['pojo nesting pojos of one class', pojo('com.example.Node', { v: 1, next: pojo('com.example.Node', { v: 2, next: pojo('com.example.Node', { v: 3, next: null }) }) })],
  ['list of pojos (class definition reused)', [pojo('com.example.P', { a: 1 }), pojo('com.example.P', { a: 2 }), pojo('com.example.Q', { b: 'x' })]],
  ['pojo without fields', pojo('com.example.Empty', {})],
];

t.test('stepping over ends where hessian.js ends, for every form hessian.js writes', async (t) => {
  for (const [name, v] of values) {
    const buf = Buffer.concat([hjs(v), bytes(0x4e)]); // a trailing value must not be touched
    const d = new hessian.DecoderV2(buf);
    d.read();
    t.equal(skipEnd(buf), d.position(), name);
  }
});

t.test('references (Q) and class definitions persist across values of one reader', async (t) => {
  const shared = { k: 'v' };
  const p = pojo('com.example.P', { a: 1 });
  const buf = hjs([shared, shared], p, pojo('com.example.P', { a: 2 }), shared);
  t.ok(buf.includes(0x51), 'hessian.js wrote a ref');
  const r = new Hessian2Reader(buf);
  for (let k = 0; k < 4; k++) r.skipValue();
  t.equal(r.pos, buf.length);
  t.ok(r.atEnd());
  t.equal(r.peek(), -1);

  // 17 classes: the 17th instance needs the 'O' int form (compact form holds 16)
  const classes = Array.from({ length: 18 }, (_, k) => pojo(`com.example.C${k}`, { f: k }));
  const many = hjs(...classes, ...classes);
  const r2 = new Hessian2Reader(many);
  for (let k = 0; k < 36; k++) r2.skipValue();
  t.equal(r2.pos, many.length);
  t.ok(many.includes(0x4f), "'O' form present");
});

t.test('forms hessian.js does not write, assembled by hand', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['typed variable-length list (x55)', bytes(0x55, s('java.util.LinkedList'), i(1), s('x'), 0x5a)],
    ['untyped variable-length list (x57)', bytes(0x57, i(1), 0x57, 0x5a, 0x5a)],
    ['typed fixed list with a type reference', bytes(0x57, 0x72, s('[int'), i(1), i(2), 0x71, i(0), i(3), 0x5a)],
    ['V with type and int length', bytes(0x56, s('[string'), i(9), ...Array(9).fill(s('a')))],
    ['x58 untyped list with length', bytes(0x58, i(2), 0x4e, 0x4e)],
    ['typed map M then a second M by type reference', bytes(0x57,
      0x4d, s('java.util.concurrent.ConcurrentHashMap'), s('xx'), s('yy'), 0x5a,
      0x4d, i(0), s('yy'), s('yy'), 0x5a, 0x5a)],
    ['string chunk R then compact final chunk', bytes(0x52, 0x00, 0x03, 'abc', 0x02, 'de')],
    ['string chunk R then medium final chunk', bytes(0x52, 0x00, 0x01, 'a', 0x30, 0x20, 'b'.repeat(32))],
    ['string chunk R, R, then S', bytes(0x52, 0x00, 0x01, 'a', 0x52, 0x00, 0x01, 'b', 0x53, 0x00, 0x01, 'c')],
    ['binary chunk A then compact final', bytes(0x41, 0x00, 0x02, 1, 2, 0x23, 1, 2, 3)],
    ['binary chunk A then x34 form', bytes(0x41, 0x00, 0x01, 9, 0x34, 0x02, 1, 2)],
    ['binary B', bytes(0x42, 0x00, 0x03, 1, 2, 3)],
    ['4-byte UTF-8 counts as two units', bytes(0x03, 0xf0, 0x9f, 0x98, 0x80, 'x')],
    ['long as int (x59)', bytes(0x59, 0, 0, 1, 0)],
    ['double as byte, short, mills', bytes(0x57, 0x5d, 0x80, 0x5e, 0x80, 0x00, 0x5f, 0, 0, 0x30, 0x39, 0x5a)],
    ['dates J and K', bytes(0x57, 0x4a, 0, 0, 0, 0, 0, 0, 0, 1, 0x4b, 0, 0, 0, 1, 0x5a)],
    ['class definition nested inside an object field', bytes(
      0x43, s('com.example.Outer'), i(2), s('inner'), s('n'),
      0x60, 0x43, s('com.example.Inner'), i(1), s('v'), 0x61, i(5), i(6))],
    ['object by O int form', bytes(0x43, s('A'), i(1), s('f'), 0x4f, i(0), 0x4e)],
    ['class definition with no fields', bytes(0x43, s('E'), i(0), 0x60)],
    ['empty untyped map', bytes(0x48, 0x5a)],
    ['map with non-string keys', bytes(0x48, i(1), s('a'), 0x54, 0x4e, 0x5a)],
    ['reference to the list holding it', bytes(0x79, 0x51, i(0))],
  ];
  for (const [name, buf] of cases) {
    t.equal(skipEnd(Buffer.concat([buf, bytes(0x4e)])), buf.length, name);
  }
});

t.test('nesting: MAX_DEPTH containers are fine, one more is a bad body (no stack overflow)', async (t) => {
  t.equal(MAX_DEPTH, 512);
  const deep = (n: number) => Buffer.concat([Buffer.alloc(n, 0x79), bytes(0x4e)]);
  t.equal(skipEnd(deep(MAX_DEPTH)), MAX_DEPTH + 1);
  badBody(t, deep(MAX_DEPTH + 1), 'one level too deep');
  badBody(t, Buffer.alloc(1_000_000, 0x57), 'a million nested variable lists');
  badBody(t, Buffer.alloc(1_000_000, 0x48), 'a million nested maps');
});

t.test('malformed input is ERR_DUBBO_BAD_BODY, never another exception', async (t) => {
  for (const tag of [0x40, 0x45, 0x47, 0x50]) badBody(t, bytes(tag), `reserved tag 0x${tag.toString(16)}`);
  badBody(t, bytes(0x5a), 'Z outside a container');
  badBody(t, bytes(), 'empty input');
  badBody(t, bytes(0x48, s('k'), 0x5a), 'map ended at a value position');
  badBody(t, bytes(0x79, 0x5a), 'Z inside a fixed-length list');
  badBody(t, bytes(0x51, i(0)), 'reference with nothing to refer to');
  badBody(t, bytes(0x79, 0x51, i(1)), 'reference past the last list');
  badBody(t, bytes(0x60), 'object of an undefined class');
  badBody(t, bytes(0x4f, i(-1)), 'negative class index');
  badBody(t, bytes(0x4f, s('x')), 'class index not an int');
  badBody(t, bytes(0x71, i(0), 0x4e), 'type reference with no types');
  badBody(t, bytes(0x58, i(-1)), 'negative list length');
  badBody(t, bytes(0x58, i(100), 0x4e), 'list length beyond the body');
  badBody(t, bytes(0x43, i(1), i(0)), 'class name not a string');
  badBody(t, bytes(0x43, s('A'), i(1), i(0)), 'field name not a string');
  badBody(t, bytes(0x43, s('A'), i(1000), s('f')), 'field count beyond the body');
  badBody(t, bytes(0x57, 0x43, s('A'), i(0), 0x5a), 'class definition not followed by a value');
  badBody(t, bytes(0x02, 0x80, 0x41), 'UTF-8 continuation byte as a lead byte');
  badBody(t, bytes(0x01, 0xf8, 0x80, 0x80, 0x80, 0x80), 'invalid lead byte 0xf8');
  badBody(t, bytes(0x01, 0xf0, 0x9f, 0x98, 0x80), '4-byte sequence where one unit is left');
  badBody(t, bytes(0x52, 0x00, 0x01, 'a', 0x4e), 'string chunk followed by a non-string');
  badBody(t, bytes(0x41, 0x00, 0x01, 1, 0x4e), 'binary chunk followed by a non-binary');
  badBody(t, bytes(0x02, 0xe4, 0xbd), '3-byte char cut short');

  // every proper prefix of real values
  for (const [name, v] of values) {
    const full = hjs(v);
    if (full.length > 200) continue;
    for (let n = 0; n < full.length; n++) {
      try {
        const r = new Hessian2Reader(full.subarray(0, n));
        r.skipValue();
        t.fail(`${name}: prefix of ${n} bytes accepted`);
      } catch (e) {
        if (!(e instanceof DubboProtocolError)) throw e;
      }
    }
  }
  t.pass('every proper prefix of every small value refused with a DubboProtocolError');
});

t.test('typed reads: strings, ints, scalars as strings, string maps', async (t) => {
  const strs = ['', 'a', longString(31), longString(32), longString(1024), longString(70000), 'héllo', '😀', longString(0x7fff) + '😀', '中'.repeat(40000)];
  for (const str of strs) {
    const r = new Hessian2Reader(hjs(str));
    t.equal(r.readStringOrNull(), str, `string of ${str.length} units`);
  }
  t.equal(new Hessian2Reader(bytes(0x4e)).readStringOrNull(), null);
  t.equal(new Hessian2Reader(bytes(0x52, 0x00, 0x02, 'ab', 0x01, 'c')).readStringOrNull(), 'abc');
  t.equal(new Hessian2Reader(bytes(0x04, 0xf0, 0x9f, 0x98, 0x80, 0xe4, 0xb8, 0xad, 'x')).readStringOrNull(), '😀中x', '4-byte UTF-8 decoded to a surrogate pair');
  t.throws(() => new Hessian2Reader(i(5)).readStringOrNull(), { code: 'ERR_DUBBO_BAD_BODY' });

  for (const n of ints) t.equal(new Hessian2Reader(hjs(n)).readInt(), n, `int ${n}`);
  t.throws(() => new Hessian2Reader(s('1')).readInt(), { code: 'ERR_DUBBO_BAD_BODY' });

  const scalar = (buf: Buffer) => new Hessian2Reader(buf).readScalarAsString();
  t.equal(scalar(hjs('x')), 'x');
  t.equal(scalar(hjs(5000)), '5000');
  t.equal(scalar(hjs(true)), 'true');
  t.equal(scalar(hjs(false)), 'false');
  for (const n of longs) t.equal(scalar(hjs({ $class: 'long', $: n })), String(n), `long ${n}`);
  t.equal(scalar(hjs({ $class: 'long', $: '9223372036854775807' })), '9223372036854775807');
  for (const n of doubles) t.equal(scalar(hjs({ $class: 'double', $: n })), String(n), `double ${n}`);
  t.equal(scalar(hjs(null)), undefined);
  t.equal(scalar(hjs([1])), undefined);
  t.equal(scalar(hjs(new Date(0))), undefined);

  const into = new Map<string, string>();
  const map = bytes(0x48, s('a'), s('1'), s('b'), i(2), i(7), s('int key skipped'), s('c'), 0x79, i(1), s('c'), s('3'),
    s('d'), s('x'), s('d'), 0x4e, s('e'), 0x48, 0x5a, 0x5a);
  const r = new Hessian2Reader(map);
  r.readStringMap(into);
  t.equal(r.pos, map.length);
  t.same([...into], [['a', '1'], ['b', '2'], ['c', '3']], 'later duplicates win; null and structured values are absent');

  const typed = new Map<string, string>();
  new Hessian2Reader(bytes(0x4d, s('java.util.TreeMap'), s('k'), s('v'), 0x5a)).readStringMap(typed);
  t.same([...typed], [['k', 'v']]);
  const none = new Map<string, string>();
  new Hessian2Reader(bytes(0x4e)).readStringMap(none);
  t.equal(none.size, 0);
  t.throws(() => new Hessian2Reader(bytes(0x79)).readStringMap(new Map()), { code: 'ERR_DUBBO_BAD_BODY' });
  t.throws(() => new Hessian2Reader(bytes(0x48, s('k'), s('v'))).readStringMap(new Map()), { code: 'ERR_DUBBO_BAD_BODY' }, 'unterminated');
});

t.test('short strings come from a per-thread table: never another string than the bytes say', async (t) => {
  // 5000 distinct short strings through a 1024-slot table: many collisions and evictions
  const strs = Array.from({ length: 5000 }, (_, k) => `k${k.toString(36)}${'x'.repeat(k % 50)}`);
  const bufs = strs.map((str) => hjs(str));
  let wrong = 0;
  for (let round = 0; round < 3; round++) {
    for (let k = 0; k < strs.length; k++) {
      const j = (k * 7919 + round * 13) % strs.length;
      if (new Hessian2Reader(bufs[j]).readStringOrNull() !== strs[j]) wrong++;
    }
  }
  t.equal(wrong, 0);
  // same length, same hash inputs except one byte
  t.equal(new Hessian2Reader(s('group')).readStringOrNull(), 'group');
  t.equal(new Hessian2Reader(s('grouq')).readStringOrNull(), 'grouq');
  t.equal(new Hessian2Reader(s('group')).readStringOrNull(), 'group');
});
