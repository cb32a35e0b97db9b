/**
 * Encoders: exact bytes of what Dubbo's ExchangeCodec/DubboCodec write (worked out by hand from the Java
 * source), Hessian2 strings identical to hessian.js's (which follows Hessian2Output), and what the views
 * and hessian.js read back.
 */
import t from 'tap';
import {
  DubboFrame, DubboRequest, DubboStatus, decodeFrame, encodeErrorResponse, encodeFrame, encodeHeartbeatRequest,
  encodeHeartbeatResponse, encodeReadonlyEvent, encodeRequest, encodeResponse, hessian2String, isHeartbeat, isReadonlyEvent,
  isSupportResponseAttachment, localReply, parseHeader,
} from '../../../src/protocols/dubbo';
import { hessian } from './fixtures';

const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

t.test('localReply: ExchangeCodec.encodeResponse for a non-OK status, byte for byte', async (t) => {
  // flag 0x02 (response, Hessian2), status 60, id 7, length 12, body: writeUTF("no provider") = 0x0b + 11 bytes
  t.same(localReply(7n, DubboStatus.SERVICE_NOT_FOUND, 'no provider'),
    hex('da bb 02 3c  00 00 00 00 00 00 00 07  00 00 00 0c  0b 6e 6f 20 70 72 6f 76 69 64 65 72'));
  // the id as given by a decoded header (its two halves) and as a number
  const h = parseHeader(hex('da bb c2 00  12 34 56 78 9a bc de f0  00 00 00 00'));
  t.same(localReply(h, DubboStatus.SERVER_THREADPOOL_EXHAUSTED_ERROR, '').subarray(0, 16),
    hex('da bb 02 64  12 34 56 78 9a bc de f0  00 00 00 01'));
  t.same(localReply(2 ** 40, 30, 'x').subarray(4, 12), hex('00 00 01 00 00 00 00 00'));
  // a call made with another serialization is still answered in Hessian2, and says so
  t.equal(localReply(1n, 40, 'bad').readUInt8(2), 0x02);
  t.equal(localReply(1n, 40, 'bad', 6).readUInt8(2), 0x02);
  // a long message is chunked like Hessian2Output.writeString (medium form up to 1023 units)
  const long = localReply(1n, 70, 'e'.repeat(1000));
  t.same(long.subarray(16, 18), hex('33 e8'));
  t.equal(long.readUInt32BE(12), 1002);

  for (const status of [DubboStatus.OK, -1, 256, 1.5]) {
    t.throws(() => localReply(1n, status, 'x'), { code: 'ERR_DUBBO_INVALID_OPTION' }, `status ${status} refused`);
  }
  t.throws(() => localReply(-1, 40, 'x'), { code: 'ERR_DUBBO_INVALID_OPTION' });
  t.same(encodeErrorResponse(3, 80, null).subarray(12), hex('00 00 00 01 4e'), 'a null message is N');
  t.throws(() => encodeErrorResponse(3, 80, 'x', 6), { code: 'ERR_DUBBO_INVALID_OPTION' });
});

t.test('heartbeats: event flag, body Hessian2 null', async (t) => {
  t.same(encodeHeartbeatRequest(1), hex('da bb e2 00  00 00 00 00 00 00 00 01  00 00 00 01  4e'));
  t.same(encodeHeartbeatRequest(1, false), hex('da bb a2 00  00 00 00 00 00 00 00 01  00 00 00 01  4e'));
  t.same(encodeHeartbeatResponse(1), hex('da bb 22 14  00 00 00 00 00 00 00 01  00 00 00 01  4e'));
  t.ok(isHeartbeat(decodeFrame(encodeHeartbeatRequest(2n ** 64n - 1n)) as DubboFrame));
});

t.test('READONLY event: one-way event request, data the Hessian2 string "R" (sendChannelReadOnlyEvent)', async (t) => {
  // flag 0xa2: request 0x80 | event 0x20 | Hessian2, no two-way bit; body writeObject("R") = 01 52
  t.same(encodeReadonlyEvent(9), hex('da bb a2 00  00 00 00 00 00 00 00 09  00 00 00 02  01 52'));
  const f = decodeFrame(encodeReadonlyEvent(9)) as DubboFrame;
  t.ok(isReadonlyEvent(f));
  t.notOk(isHeartbeat(f), 'not a heartbeat: nothing is answered');
  t.equal(new hessian.DecoderV2(f.body).read(), 'R', 'the event data reads back as "R"');
  t.notOk(isReadonlyEvent(decodeFrame(encodeHeartbeatRequest(9, false)) as DubboFrame), 'a heartbeat is not a readonly event');
  // an event response carrying "R" is not the request a provider sends
  t.notOk(isReadonlyEvent(decodeFrame(encodeFrame(0x22, 20, 9, Buffer.from([0x01, 0x52]))) as DubboFrame));
  // dubbo-remoting, as a consumer, reads it as an event ("heartbeat" packet) whose data is "R"
  const Request = require('dubbo-remoting/lib/protocol/request');
  const got = Request.decode(encodeReadonlyEvent(9));
  t.same([got.packetType, got.data, got.packetId], ['heartbeat', 'R', 9]);
});

t.test('requests: header flags and a body hessian.js reads as DecodeableRpcInvocation does', async (t) => {
  const raw = encodeRequest({
    id: 42, service: 'org.apache.dubbo.demo.DemoService', version: '1.0.0', method: 'sayHello',
    paramTypes: 'Ljava/lang/String;', args: ['world'], attachments: { path: 'org.apache.dubbo.demo.DemoService', group: 'g' },
  });
  t.same(raw.subarray(0, 12), hex('da bb c2 00  00 00 00 00 00 00 00 2a'));
  t.equal(raw.readUInt32BE(12), raw.length - 16);
  const d = new hessian.DecoderV2(raw.subarray(16));
  t.same([d.read(), d.read(), d.read(), d.read(), d.read(), d.read(), d.read()],
    ['2.0.2', 'org.apache.dubbo.demo.DemoService', '1.0.0', 'sayHello', 'Ljava/lang/String;', 'world', { path: 'org.apache.dubbo.demo.DemoService', group: 'g' }]);
  t.equal(d.position(), raw.length - 16, 'nothing else in the body');
  t.same(raw.subarray(16, 22), hex('05 32 2e 30 2e 32'), 'dubbo version "2.0.2" as a compact string');
  t.equal(raw[raw.length - 1], 0x5a, "attachments end with the map terminator 'Z'");

  t.equal(encodeRequest({ id: 1, service: 's', method: 'm', twoWay: false })[2], 0x82, 'one-way');
  const defaults = DubboRequest.fromBody(encodeRequest({ id: 1, service: 's', method: 'm' }).subarray(16));
  t.same([defaults.dubboVersion, defaults.version, defaults.paramTypes, defaults.attachments().size], ['2.0.2', '0.0.0', '', 0]);
  t.equal(DubboRequest.fromBody(encodeRequest({ id: 1, service: 's', method: 'm', version: null }).subarray(16)).version, '');
  t.throws(() => encodeRequest({ id: 1, service: 's', method: 'm', serialization: 6 }), { code: 'ERR_DUBBO_INVALID_OPTION' });
  const mapAttachments = DubboRequest.fromBody(encodeRequest({ id: 1, service: 's', method: 'm', attachments: new Map([['b', '2'], ['a', '1']]) }).subarray(16));
  t.same([...mapAttachments.attachments()], [['b', '2'], ['a', '1']], 'a Map is written in its order');
});

t.test('responses: DubboCodec.encodeResponseData byte layout', async (t) => {
  // RESPONSE_VALUE_WITH_ATTACHMENTS (4, int 0x94), value "ok", then H "dubbo" "2.0.2" Z
  t.same(encodeResponse({ id: 1, value: 'ok' }),
    Buffer.concat([hex('da bb 02 14  00 00 00 00 00 00 00 01  00 00 00 12'), hex('94 02 6f 6b 48 05 64 75 62 62 6f 05 32 2e 30 2e 32 5a')]));
  // protocol 2.0.0: RESPONSE_VALUE (1, 0x91) and no attachments
  t.same(encodeResponse({ id: 1, value: 'ok', requestDubboVersion: '2.0.0' }).subarray(12), hex('00 00 00 04  91 02 6f 6b'));
  // RESPONSE_NULL_VALUE (2, 0x92)
  t.same(encodeResponse({ id: 1, value: null, requestDubboVersion: '2.0.0' }).subarray(16), hex('92'));
  t.same(encodeResponse({ id: 1, value: undefined, requestDubboVersion: '2.0.0' }).subarray(16), hex('92'));
  // RESPONSE_WITH_EXCEPTION (0, 0x90) + the Throwable as an object
  const ex = encodeResponse({ id: 1, exception: { $class: 'java.lang.RuntimeException', $: { detailMessage: 'x' } }, requestDubboVersion: '2.0.0' });
  t.equal(ex[16], 0x90);
  t.equal(ex[17], 0x43, 'class definition of the exception follows');
  // the attachments carry "dubbo" -> "2.0.2", overriding a caller's value as Java's put() does
  const dec = new hessian.DecoderV2(encodeResponse({ id: 1, value: 1, attachments: { dubbo: '9', k: 'v' } }).subarray(16));
  t.same([dec.read(), dec.read(), dec.read()], [4, 1, { dubbo: '2.0.2', k: 'v' }]);
  t.throws(() => encodeResponse({ id: 1, serialization: 3 }), { code: 'ERR_DUBBO_INVALID_OPTION' });
});

t.test('Version.isSupportResponseAttachment', async (t) => {
  const table: Array<[string | null | undefined, boolean]> = [
    ['2.0.2', true], ['2.0.99', true], ['2.0.10', true], ['2.0.2-SNAPSHOT', true],
    ['2.0.1', false], ['2.0.0', false], ['2.0.100', false], ['2.6.2', false], ['2.7.0', false], ['3.0.0', false],
    ['1.0.0', false], ['', false], [null, false], [undefined, false], ['garbage', false], ['2.0.99999999999', false],
  ];
  for (const [v, expected] of table) t.equal(isSupportResponseAttachment(v), expected, String(v));
});

t.test('Hessian2 strings: same bytes as hessian.js writeString, for every form and chunking', async (t) => {
  const strings = ['', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(1023), 'x'.repeat(1024), 'x'.repeat(0x8000), 'x'.repeat(0x8001),
    'x'.repeat(70000), 'é', 'é'.repeat(40000), '中文', '😀', 'a'.repeat(0x7fff) + '😀' + 'b', '😀'.repeat(0x4001), '\u0000\u007f\u0080\u07ff\u0800\uffff'];
  for (const str of strings) {
    const enc = new hessian.EncoderV2();
    enc.writeString(str);
    t.ok(hessian2String(str).equals(enc.get()), `${str.length} units ${JSON.stringify(str.slice(0, 8))}`);
  }
  t.same(hessian2String(null), hex('4e'));
});

t.test('encodeFrame: header fields round-trip through parseHeader', async (t) => {
  const f = encodeFrame(0xe2, 0, { idHi: 0xffffffff, idLo: 1 }, Buffer.from('abc'));
  const h = parseHeader(f);
  t.same([h.isRequest, h.twoWay, h.isEvent, h.serialization, h.idHi, h.idLo, h.bodyLength], [true, true, true, 2, 0xffffffff, 1, 3]);
  t.same(f.subarray(16), Buffer.from('abc'));
});
