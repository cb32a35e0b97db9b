/**
 * The lazy request view against a full hessian.js decode: calls written by hessian.js (as dubbo-js
 * writes them) and by our encoder, over many argument types; Java-shaped bodies assembled by hand;
 * every way a body can be bad is ERR_DUBBO_BAD_BODY.
 */
import t from 'tap';
import { SluiceError } from '../../../src/errors';
import {
  DubboFrame, DubboFrameDecoder, DubboProtocolError, DubboRequest, FLAG_REQUEST, FLAG_TWOWAY, countParamTypes,
  decodeFrame, descriptorToJavaNames, encodeRequest, encodeRequestBody, javaNamesToDescriptor,
} from '../../../src/protocols/dubbo';
import { bytes, frame, hjs, hjsCallBody, hjsDecodeCall, hmap, i, pojo, s } from './fixtures';

const ATTACHMENTS = new Map<string, unknown>([
  ['path', 'org.apache.dubbo.demo.DemoService'], ['interface', 'org.apache.dubbo.demo.DemoService'],
  ['version', '1.0.0'], ['group', 'Group_2'], ['type', 'transfer'], ['timeout', '3000'],
  ['remote.application', 'demo-consumer'], ['unicode', 'é中😀'],
]);

const user = (name: string, age: number) => pojo('org.apache.dubbo.demo.User', { name, age, tags: ['a', 'b'], created: new Date(1700000000000) });

interface Case {
  name: string;
  desc: string;
  args: unknown[];
}

const CASES: Case[] = [
  { name: 'no arguments', desc: '', args: [] },
  { name: 'one short string', desc: 'Ljava/lang/String;', args: ['world'] },
  { name: 'strings: empty, 31, 32, 1023, 1024, 32768, 32769 and 70000 chars', desc: 'Ljava/lang/String;'.repeat(8), args: [0, 31, 32, 1023, 1024, 32768, 32769, 70000].map((n) => 'x'.repeat(n)) },
  { name: 'unicode strings (CESU-8 surrogates, chunk boundary on a pair)', desc: 'Ljava/lang/String;'.repeat(3), args: ['héllo 中文 😀', '中'.repeat(33000), 'a'.repeat(0x7fff) + '😀'] },
  { name: 'ints at every compact-form boundary', desc: 'I'.repeat(16), args: [-16, 47, -17, 48, -2048, 2047, -2049, 2048, -262144, 262143, -262145, 262144, 2 ** 31 - 1, -(2 ** 31), 0, 1] },
  { name: 'longs at every compact-form boundary', desc: 'J'.repeat(14), args: [-8, 15, -9, 16, -2048, 2047, -2049, 2048, -262144, 262143, -262145, 262144, 2 ** 31, 2 ** 53 - 1].map((n) => ({ $class: 'long', $: n })) },
  { name: 'doubles in every form', desc: 'D'.repeat(9), args: [0, 1, -128, 127, 32767, -32768, 1.5, 0.001, 1e300].map((n) => ({ $class: 'double', $: n })) },
  { name: 'booleans, null, dates', desc: 'ZZLjava/lang/Object;Ljava/util/Date;Ljava/util/Date;', args: [true, false, null, new Date(60000 * 28000000), new Date(1700000000123)] },
  { name: 'binary (compact, medium, chunked)', desc: '[B[B[B[B', args: [Buffer.alloc(0), Buffer.alloc(15, 1), Buffer.alloc(1000, 2), Buffer.alloc(20000, 3)] },
  { name: 'lists and typed arrays', desc: 'Ljava/util/List;[I[Ljava/lang/String;Ljava/util/List;', args: [[1, 'two', null, [3]], { $class: '[int', $: [1, 2, 3] }, { $class: '[java.lang.String', $: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] }, []] },
  { name: 'maps (untyped and typed)', desc: 'Ljava/util/Map;Ljava/util/Map;', args: [{ a: 1, b: { c: [1, 2] } }, { $class: 'com.alibaba.fastjson.JSONObject', $: { k: 'v' } }] },
  { name: 'POJOs with the class definition reused across arguments', desc: 'Lorg/apache/dubbo/demo/User;Lorg/apache/dubbo/demo/User;Ljava/util/List;', args: [user('ann', 30), user('bob', 40), [user('cy', 50), pojo('org.apache.dubbo.demo.Team', { lead: user('di', 60), size: 3 })]] },
  { name: 'generic $invoke', desc: 'Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;', args: ['sayHello', { $class: '[java.lang.String', $: ['java.lang.String'] }, { $class: '[java.lang.Object', $: ['world'] }] },
];

t.test('lazy view equals a full hessian.js decode, for calls written by hessian.js', async (t) => {
  for (const c of CASES) {
    const body = hjsCallBody({ service: 'org.apache.dubbo.demo.DemoService', version: '1.0.0', method: 'sayHello', desc: c.desc, args: c.args, attachments: ATTACHMENTS });
    const full = hjsDecodeCall(body, countParamTypes(c.desc));
    const f = decodeFrame(frame(0xc2, 0, 11n, body)) as DubboFrame;
    const v = DubboRequest.fromFrame(f);
    t.same([v.dubboVersion, v.service, v.version, v.method, v.paramTypes], [full.dubboVersion, full.service, full.version, full.method, full.desc], `${c.name}: leading strings`);
    t.same(v.attachments(), full.attachments, `${c.name}: attachments`);
    t.equal(v.group, 'Group_2', `${c.name}: group`);
    t.equal(v.attachment('type'), 'transfer');
    t.equal(v.attachment('absent'), undefined);
    t.equal(v.argumentCount(), c.args.length);
    t.same(v.arguments(), full.args, `${c.name}: arguments`);
    t.equal(v.arguments(), v.arguments(), 'decoded once');
  }
});

t.test('our encoder writes the same bytes as hessian.js, and the view reads them back', async (t) => {
  for (const c of CASES) {
    const attachments = new Map([...ATTACHMENTS].map(([k, v]) => [k, String(v)]));
    const ours = encodeRequestBody({ service: 'svc.Api', version: '2.1', method: 'call', paramTypes: c.desc, args: c.args, attachments });
    const ref = hjsCallBody({ service: 'svc.Api', version: '2.1', method: 'call', desc: c.desc, args: c.args, attachments });
    t.ok(ours.equals(ref), `${c.name}: same body bytes`);
    const raw = encodeRequest({ id: 2n ** 63n + 5n, service: 'svc.Api', version: '2.1', method: 'call', paramTypes: c.desc, args: c.args, attachments });
    const frames: DubboFrame[] = [];
    const d = new DubboFrameDecoder({ onFrame: (f) => frames.push(f), onError: (e) => t.fail(e.message) });
    d.push(raw);
    const v = DubboRequest.fromFrame(frames[0]);
    t.equal(frames[0].id, 2n ** 63n + 5n);
    t.same([v.service, v.version, v.method, v.paramTypes], ['svc.Api', '2.1', 'call', c.desc]);
    t.same(v.attachments(), attachments);
    t.same(v.arguments(), hjsDecodeCall(ref, c.args.length).args);
  }
});

t.test('class definitions and references shared by arguments', async (t) => {
  const shared = { k: 'v' };
  const args = [user('a', 1), user('b', 2), shared, shared];
  const body = hjsCallBody({ service: 's', method: 'm', desc: 'LU;LU;Ljava/util/Map;Ljava/util/Map;', args, attachments: new Map([['group', 'g']]) });
  t.equal(body.filter((b) => b === 0x43).length >= 1, true);
  t.ok(body.includes(Buffer.from([0x60])), 'second User written as a compact instance of the first definition');
  t.ok(body.includes(0x51), 'second map written as a reference');
  const v = DubboRequest.fromBody(body);
  t.equal(v.group, 'g');
  t.same(v.arguments(), hjsDecodeCall(body, 4).args);
});

t.test('a Java-shaped call assembled by hand (the forms Hessian2Output writes)', async (t) => {
  // DubboCodec.encodeRequestData for a call with an entity argument that holds a nested entity whose class
  // definition is written in the middle of the outer instance, a typed empty ArrayList, two
  // ConcurrentHashMaps (the second by type reference), and attachments with a null value.
  const body = bytes(
    s('2.0.2'), s('com.example.zone.ProxyInterface'), s('0.0.0'), s('unitTestByUnit'),
    s('Ljava/lang/String;Lcom/example/zone/Entity;Ljava/util/List;Ljava/util/Map;'),
    s('0'),
    0x43, s('com.example.zone.Entity'), i(4), s('inner'), s('name'), s('list'), s('map'),
    0x60,
    0x43, s('com.example.zone.Inner'), i(2), s('host'), s('unit'),
    0x61, s('127.0.0.1'), s('Gz01'),
    0x4e,
    0x70, s('java.util.ArrayList'),
    0x48, s('xx'), 0x4d, s('java.util.concurrent.ConcurrentHashMap'), s('xx'), s('yy'), 0x5a, 0x5a,
    0x70, i(0),
    0x4d, i(1), s('yy'), s('yy'), 0x5a,
    hmap([['remote.flag_code', null], ['group', 'Gz01'], ['interface', 'com.example.zone.ProxyInterface'], ['timeout', '3000'], ['path', 'com.example.zone.ProxyInterface']]),
  );
  const v = DubboRequest.fromBody(body);
  t.same([v.dubboVersion, v.service, v.version, v.method], ['2.0.2', 'com.example.zone.ProxyInterface', '0.0.0', 'unitTestByUnit']);
  t.same(v.parameterTypeNames(), ['java.lang.String', 'com.example.zone.Entity', 'java.util.List', 'java.util.Map']);
  t.same(v.attachments(), new Map([['group', 'Gz01'], ['interface', 'com.example.zone.ProxyInterface'], ['timeout', '3000'], ['path', 'com.example.zone.ProxyInterface']]));
  t.equal(v.attachment('remote.flag_code'), undefined, 'a null attachment reads as absent');
  const args = v.arguments();
  t.equal(args.length, 4);
  t.equal(args[0], '0');
  t.same(args[1], { inner: { host: '127.0.0.1', unit: 'Gz01' }, name: null, list: [], map: { xx: { xx: 'yy' } } });
});

t.test('leading strings: null version, dubbox int, unusual but valid forms', async (t) => {
  const nullVersion = bytes(s('2.0.2'), s('a.B'), 0x4e, s('m'), s(''), hmap([['group', 'g']]));
  const v = DubboRequest.fromBody(nullVersion);
  t.equal(v.version, '', 'null service version reads as empty');
  t.equal(v.group, 'g');
  t.equal(v.argumentCount(), 0);

  const dubbox = bytes(s('2.8.4'), s('a.B'), s('1.0'), s('m'), i(-1), s('I'), i(7), hmap([['k', 'v']]));
  const x = DubboRequest.fromBody(dubbox);
  t.same([x.method, x.paramTypes, x.attachment('k')], ['m', 'I', 'v'], "dubbox's -1 before the descriptor is skipped");
  t.same(x.arguments(), [7]);

  const chunked = bytes(s('2.0.2'), 0x52, 0x00, 0x02, 'a.', 0x01, 'B', s(''), s('m'), s(''), hmap([]));
  t.equal(DubboRequest.fromBody(chunked).service, 'a.B', 'a chunked service name');

  const noAttachments = bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s('I'), i(1));
  t.equal(DubboRequest.fromBody(noAttachments).attachments().size, 0, 'body ending after the arguments: no attachments');
  const nullAttachments = bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s('I'), i(1), 0x4e);
  t.equal(DubboRequest.fromBody(nullAttachments).attachments().size, 0, 'null attachments');
  const typedAttachments = bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s(''), 0x4d, s('java.util.TreeMap'), s('group'), s('t'), 0x5a);
  t.equal(DubboRequest.fromBody(typedAttachments).group, 't', "a typed ('M') attachments map");
  const trailing = Buffer.concat([bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s(''), hmap([['group', 'z']])), bytes(0x40, 0x40)]);
  t.equal(DubboRequest.fromBody(trailing).group, 'z', 'bytes after the attachments are ignored, as Dubbo does');
});

t.test('attachment values that are not strings (Dubbo 3 object attachments, dubbo-js timeout)', async (t) => {
  const body = hjsCallBody({
    service: 's', method: 'm', desc: '', args: [],
    attachments: new Map<string, unknown>([['timeout', 5000], ['retry', true], ['weight', { $class: 'double', $: 1.5 }], ['big', { $class: 'long', $: 2 ** 40 }],
      ['nothing', null], ['list', [1]], ['obj', pojo('x.Y', { a: 1 })], ['group', 'g']]),
  });
  const v = DubboRequest.fromBody(body);
  t.same(v.attachments(), new Map([['timeout', '5000'], ['retry', 'true'], ['weight', '1.5'], ['big', String(2 ** 40)], ['group', 'g']]));
});

t.test('descriptors', async (t) => {
  const table: Array<[string, number, string[] | null]> = [
    ['', 0, []],
    ['I', 1, ['int']],
    ['ZBCDFIJS', 8, ['boolean', 'byte', 'char', 'double', 'float', 'int', 'long', 'short']],
    ['[[I', 1, ['int[][]']],
    ['Ljava/lang/String;', 1, ['java.lang.String']],
    ['[Ljava/lang/String;I[J', 3, ['java.lang.String[]', 'int', 'long[]']],
    ['Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;', 3, ['java.lang.String', 'java.lang.String[]', 'java.lang.Object[]']],
    ['L;', -1, null],
    ['Ljava/lang/String', -1, null],
    ['X', -1, null],
    ['[', -1, null],
    ['I,J', -1, null],
    ['['.repeat(256) + 'I', -1, null],
    ['Lcom/x/Outer$Inner_2;', 1, ['com.x.Outer$Inner_2']],
    // what Java's ReflectUtils.DESC_PATTERN would not take as one class name: Java counts other types in it
    ['Lx.I.Ljava/util/Map;', -1, null],
    ['Ljava/lang/String;Lx.Z;', -1, null],
    ['Lcom//x;', -1, null],
    ['L/x;', -1, null],
    ['Lx/;', -1, null],
    ['L1x;', -1, null],
    ['Lx y;', -1, null],
    ['Lcaf\u00e9;', -1, null],
  ];
  for (const [desc, n, names] of table) {
    t.equal(countParamTypes(desc), n, `count ${JSON.stringify(desc.slice(0, 30))}`);
    t.same(descriptorToJavaNames(desc), names, `names ${JSON.stringify(desc.slice(0, 30))}`);
    if (names) t.equal(javaNamesToDescriptor(names), desc, 'and back');
  }
});

t.test('bad bodies: ERR_DUBBO_BAD_BODY, thrown by the accessor that needs the bytes, or returned by scanAttachments', async (t) => {
  const good = hjsCallBody({ service: 'a.B', method: 'm', desc: 'Ljava/lang/String;I', args: ['x', 5], attachments: new Map([['group', 'g']]) });
  const leading = hjsCallBody({ service: 'a.B', method: 'm', desc: 'Ljava/lang/String;I', args: [], attachments: null }).length - 1;
  for (let n = 0; n < leading; n++) {
    t.throws(() => DubboRequest.fromBody(good.subarray(0, n)), { code: 'ERR_DUBBO_BAD_BODY' }, `leading strings cut at ${n}`);
  }
  for (let n = leading; n < good.length; n++) {
    const v = DubboRequest.fromBody(good.subarray(0, n));
    const err = v.scanAttachments();
    if (n === leading + hjs('x', 5).length) {
      t.equal(err, null, 'cut right after the arguments: no attachments, not an error');
      continue;
    }
    t.ok(err instanceof DubboProtocolError && err.code === 'ERR_DUBBO_BAD_BODY', `cut at ${n}: ${err?.message}`);
    t.equal(v.scanAttachments(), err, 'the same error again');
    t.throws(() => v.attachment('group'), err!);
    t.throws(() => v.group, err!);
    t.throws(() => v.arguments(), err!);
  }

  t.throws(() => DubboRequest.fromBody(bytes(s('2.0.2'), i(5))), { code: 'ERR_DUBBO_BAD_BODY', message: /expected string/ }, 'service is not a string');
  const badDesc = DubboRequest.fromBody(bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s('Lfoo'), hmap([])));
  t.equal(badDesc.paramTypes, 'Lfoo');
  t.throws(() => badDesc.attachments(), { code: 'ERR_DUBBO_BAD_BODY', message: /descriptor/ });
  t.throws(() => badDesc.parameterTypeNames(), { code: 'ERR_DUBBO_BAD_BODY' });
  t.throws(() => badDesc.argumentCount(), { code: 'ERR_DUBBO_BAD_BODY' });
  const tooFewArgs = DubboRequest.fromBody(bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s('II'), i(1)));
  t.equal(tooFewArgs.scanAttachments()?.code, 'ERR_DUBBO_BAD_BODY', 'fewer arguments than the descriptor says');
  const notAMap = DubboRequest.fromBody(bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s(''), 0x79, 0x4e));
  t.match(notAMap.scanAttachments()?.message, /expected map/);

  // structurally valid, but hessian.js cannot build it (variable-length list): attachments work, arguments throw
  const varList = DubboRequest.fromBody(bytes(s('2.0.2'), s('a.B'), s(''), s('m'), s('Ljava/util/List;'), 0x57, i(1), 0x5a, hmap([['group', 'g']])));
  t.equal(varList.group, 'g');
  t.throws(() => varList.arguments(), { code: 'ERR_DUBBO_BAD_BODY', message: /arguments do not decode/ });
});

t.test('errors from a frame carry its header; misuse is a SluiceError', async (t) => {
  const f = decodeFrame(frame(FLAG_REQUEST | FLAG_TWOWAY | 2, 0, 321n, bytes(s('2.0.2'), i(1)))) as DubboFrame;
  try {
    DubboRequest.fromFrame(f);
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof DubboProtocolError);
    t.equal((e as DubboProtocolError).header?.id, 321n, 'the caller can answer call 321');
    t.equal((e as DubboProtocolError).replyStatus, 40);
  }
  const fastjson = decodeFrame(frame(FLAG_REQUEST | FLAG_TWOWAY | 6, 0, 1n, Buffer.from('{}')), 0, { maxBodyBytes: 100, serializationMask: 1 << 6 }) as DubboFrame;
  t.throws(() => DubboRequest.fromFrame(fastjson), { code: 'ERR_DUBBO_SERIALIZATION' });
  const response = decodeFrame(frame(2, 20, 1n, bytes(0x92))) as DubboFrame;
  t.throws(() => DubboRequest.fromFrame(response), { code: 'ERR_DUBBO_INVALID_OPTION' });
  const event = decodeFrame(frame(0xe2, 0, 1n, bytes(0x4e))) as DubboFrame;
  const err = t.throws(() => DubboRequest.fromFrame(event)) as unknown;
  t.ok(err instanceof SluiceError && !(err instanceof DubboProtocolError), 'a heartbeat is not a call: caller bug, not peer error');
});
