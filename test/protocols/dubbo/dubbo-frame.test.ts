/**
 * Dubbo framing: header parsing, the incremental splitter (split and coalesced input, zero copy), every
 * error code, the payload limit checked from the header before any buffering, serialization ids, id rewrite.
 */
import t from 'tap';
import { SluiceError } from '../../../src/errors';
import {
  DEFAULT_MAX_BODY_BYTES, DubboErrorCode, DubboFrame, DubboFrameDecoder, DubboProtocolError, DubboStatus,
  DUBBO_HEADER_LENGTH, FLAG_EVENT, FLAG_REQUEST, FLAG_TWOWAY, SERIALIZATION_HESSIAN2, SERIALIZATION_MASK,
  decodeFrame, dubboLimits, isHeartbeat, matchDubbo, parseHeader, rewriteId, rewriteIdParts,
  encodeHeartbeatRequest, encodeHeartbeatResponse,
} from '../../../src/protocols/dubbo';
import { frame, prng, split } from './fixtures';

const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

interface Run {
  frames: DubboFrame[];
  errors: DubboProtocolError[];
  afterError: number;
  d: DubboFrameDecoder;
}

function decoder(options: ConstructorParameters<typeof DubboFrameDecoder>[1] = {}): Run {
  const run: Run = { frames: [], errors: [], afterError: 0, d: undefined as unknown as DubboFrameDecoder };
  run.d = new DubboFrameDecoder({
    onFrame: (f) => {
      if (run.errors.length > 0) run.afterError++;
      run.frames.push(f);
    },
    onError: (e) => {
      if (!(e instanceof DubboProtocolError)) throw new Error('onError got something else than a DubboProtocolError');
      if (run.errors.length > 0) run.afterError++;
      run.errors.push(e);
    },
  }, options);
  return run;
}

const req = (id: bigint, body: Buffer, flag = FLAG_REQUEST | FLAG_TWOWAY | SERIALIZATION_HESSIAN2) => frame(flag, 0, id, body);
const rsp = (id: bigint, body: Buffer, status: number = DubboStatus.OK) => frame(SERIALIZATION_HESSIAN2, status, id, body);

t.test('constants are the ones ExchangeCodec and Response use', async (t) => {
  t.equal(DUBBO_HEADER_LENGTH, 16);
  t.same([FLAG_REQUEST, FLAG_TWOWAY, FLAG_EVENT, SERIALIZATION_MASK, SERIALIZATION_HESSIAN2], [0x80, 0x40, 0x20, 0x1f, 2]);
  t.same(DubboStatus, {
    OK: 20, CLIENT_TIMEOUT: 30, SERVER_TIMEOUT: 31, BAD_REQUEST: 40, BAD_RESPONSE: 50, SERVICE_NOT_FOUND: 60,
    SERVICE_ERROR: 70, SERVER_ERROR: 80, CLIENT_ERROR: 90, SERVER_THREADPOOL_EXHAUSTED_ERROR: 100,
  });
  t.equal(DEFAULT_MAX_BODY_BYTES, 8 * 1024 * 1024);
  t.same(DubboErrorCode, {
    BAD_MAGIC: 'ERR_DUBBO_BAD_MAGIC', SERIALIZATION: 'ERR_DUBBO_SERIALIZATION',
    PAYLOAD_TOO_LARGE: 'ERR_DUBBO_PAYLOAD_TOO_LARGE', BAD_BODY: 'ERR_DUBBO_BAD_BODY',
  });
});

t.test('header fields', async (t) => {
  const h = parseHeader(hex('da bb c2 00  00 00 00 00 00 00 00 2a  00 00 00 03'));
  t.same([h.isRequest, h.twoWay, h.isEvent, h.serialization, h.status, h.bodyLength], [true, true, false, 2, 0, 3]);
  t.equal(h.id, 42n);
  t.same([h.idHi, h.idLo, h.safeId], [0, 42, 42]);

  const oneWay = parseHeader(hex('da bb 82 00  00 00 00 01 00 00 00 02  00 00 00 00'));
  t.same([oneWay.isRequest, oneWay.twoWay, oneWay.isEvent], [true, false, false]);
  t.equal(oneWay.id, (1n << 32n) + 2n);
  t.same([oneWay.idHi, oneWay.idLo, oneWay.safeId], [1, 2, 2 ** 32 + 2]);

  const heartbeatRsp = parseHeader(hex('da bb 22 14  ff ff ff ff ff ff ff ff  00 00 00 01'));
  t.same([heartbeatRsp.isRequest, heartbeatRsp.twoWay, heartbeatRsp.isEvent, heartbeatRsp.status], [false, false, true, 20]);
  t.equal(heartbeatRsp.id, 2n ** 64n - 1n, 'a Java id of -1 reads as the unsigned 2^64-1: same bytes');
  t.same([heartbeatRsp.idHi, heartbeatRsp.idLo, heartbeatRsp.safeId], [0xffffffff, 0xffffffff, -1]);

  const edge = parseHeader(frame(0xc2, 0, 2n ** 53n - 1n, Buffer.alloc(0)));
  t.equal(edge.safeId, Number.MAX_SAFE_INTEGER, 'safeId is exact up to 2^53-1');
  t.equal(parseHeader(frame(0xc2, 0, 2n ** 53n, Buffer.alloc(0))).safeId, -1, 'and -1 beyond');

  const big = parseHeader(hex('da bb 02 14  00 00 00 00 00 00 00 01  ff ff ff ff'));
  t.equal(big.bodyLength, 0xffffffff, 'body length is unsigned (a negative Java int is a huge length)');
});

t.test('matchDubbo (sniffing contract)', async (t) => {
  t.equal(matchDubbo(Buffer.alloc(0)), 'more');
  t.equal(matchDubbo(hex('da')), 'more');
  t.equal(matchDubbo(hex('da bb')), 'dubbo');
  t.equal(matchDubbo(hex('da bc')), 'no');
  t.equal(matchDubbo(hex('16 03')), 'no');
  t.equal(matchDubbo(hex('00 da bb'), 1), 'dubbo');
});

t.test('decodeFrame: need more, then the frame, zero copy', async (t) => {
  const body = Buffer.from('abcdef');
  const f = req(9n, body);
  for (let n = 0; n < f.length; n++) t.equal(decodeFrame(f.subarray(0, n)), null, `${n} bytes: need more`);
  const got = decodeFrame(Buffer.concat([hex('ffff'), f, hex('da')]), 2);
  t.ok(got instanceof DubboFrame);
  const fr = got as DubboFrame;
  t.equal(fr.id, 9n);
  t.equal(fr.bodyLength, 6);
  t.same(fr.raw, f);
  t.same(fr.body, body);
  t.equal(fr.body.buffer, fr.raw.buffer, 'body is a view of raw');
  const bad = decodeFrame(hex('da bc'));
  t.ok(bad instanceof DubboProtocolError, 'errors are returned, not thrown');
  t.equal((bad as DubboProtocolError).code, 'ERR_DUBBO_BAD_MAGIC');
});

t.test('one frame, pushed one byte at a time', async (t) => {
  const f = req(77n, Buffer.from('hello dubbo'));
  const r = decoder();
  for (let k = 0; k < f.length; k++) {
    t.equal(r.frames.length, 0);
    r.d.push(f.subarray(k, k + 1));
  }
  t.equal(r.frames.length, 1);
  t.same(r.frames[0].raw, f);
  t.equal(r.frames[0].body.toString(), 'hello dubbo');
  t.equal(r.frames[0].id, 77n);
  t.equal(r.d.bufferedBytes, 0);
  t.equal(r.errors.length, 0);
});

t.test('many frames per push, and any split of them, give the same frames in order', async (t) => {
  const rnd = prng(7);
  const frames: Buffer[] = [];
  for (let k = 0; k < 60; k++) {
    const len = k % 10 === 0 ? 0 : Math.floor(rnd() * (k % 7 === 0 ? 5000 : 200));
    const body = Buffer.alloc(len, k);
    frames.push(k % 3 === 0 ? rsp(BigInt(k), body) : req(BigInt(k) << 40n, body));
  }
  const stream = Buffer.concat(frames);

  const whole = decoder();
  whole.d.push(stream);
  t.equal(whole.frames.length, 60, 'all frames of one push');
  t.same(whole.frames.map((f) => f.raw), frames);
  t.ok(whole.frames.every((f) => f.raw.buffer === stream.buffer), 'frames inside one chunk are zero-copy views of it');

  for (const maxChunk of [1, 3, 16, 17, 100, 4096]) {
    const r = decoder();
    for (const c of split(stream, rnd, maxChunk)) r.d.push(c);
    t.equal(r.frames.length, 60, `chunks of up to ${maxChunk} bytes`);
    t.ok(r.frames.every((f, k) => f.raw.equals(frames[k]) && f.id === (k % 3 === 0 ? BigInt(k) : BigInt(k) << 40n)));
    t.equal(r.d.bufferedBytes, 0);
    t.equal(r.errors.length, 0);
  }
});

t.test('a frame held across pushes keeps what was received, not what the header announced', async (t) => {
  const r = decoder();
  const header = frame(0xc2, 0, 1n, Buffer.alloc(0));
  header.writeUInt32BE(DEFAULT_MAX_BODY_BYTES, 12); // allowed: exactly the limit
  r.d.push(header);
  r.d.push(Buffer.alloc(1024));
  t.equal(r.d.bufferedBytes, 16 + 1024);
  t.equal(r.errors.length, 0);
  t.equal(r.frames.length, 0);
});

t.test('ERR_DUBBO_BAD_MAGIC: raised as soon as the wrong byte arrives; kills the decoder', async (t) => {
  const first = decoder();
  first.d.push(hex('de'));
  t.equal(first.errors.length, 1, 'one byte is enough');
  t.equal(first.errors[0].code, 'ERR_DUBBO_BAD_MAGIC');
  t.equal(first.errors[0].header, null);
  t.equal(first.errors[0].replyStatus, DubboStatus.BAD_REQUEST);
  t.ok(first.errors[0] instanceof SluiceError);

  const second = decoder();
  second.d.push(hex('da'));
  t.equal(second.errors.length, 0);
  second.d.push(hex('bc'));
  t.equal(second.errors.length, 1);
  t.match(second.errors[0].message, /expected da bb, got da bc/);

  // a good frame, then garbage: the good frame is delivered, then the error; nothing after
  const good = req(1n, Buffer.from('x'));
  const third = decoder();
  third.d.push(Buffer.concat([good, hex('47 45 54 20'), good]));
  t.equal(third.frames.length, 1);
  t.equal(third.errors.length, 1);
  t.ok(third.d.destroyed);
  third.d.push(good);
  t.equal(third.frames.length, 1, 'pushes after an error are ignored');
  t.equal(third.afterError, 0);

  // the second magic byte wrong in a frame gathered across pushes
  const fourth = decoder();
  fourth.d.push(good.subarray(0, 5));
  fourth.d.push(Buffer.concat([good.subarray(5), hex('da')]));
  t.equal(fourth.frames.length, 1);
  fourth.d.push(hex('00'));
  t.equal(fourth.errors.length, 1);
  t.equal(fourth.errors[0].code, 'ERR_DUBBO_BAD_MAGIC');
});

t.test('ERR_DUBBO_SERIALIZATION: only Hessian2 unless configured; the error carries the header', async (t) => {
  const fastjson = req(5n, Buffer.from('{}'), FLAG_REQUEST | FLAG_TWOWAY | 6);
  const r = decoder();
  r.d.push(fastjson);
  t.equal(r.frames.length, 0);
  t.equal(r.errors.length, 1);
  const e = r.errors[0];
  t.equal(e.code, 'ERR_DUBBO_SERIALIZATION');
  t.equal(e.header?.id, 5n, 'the id lets the caller answer that call');
  t.equal(e.header?.serialization, 6);
  t.equal(e.header?.twoWay, true);
  t.equal(e.replyStatus, DubboStatus.BAD_REQUEST);

  const fromUpstream = decoder();
  fromUpstream.d.push(frame(6, 20, 5n, Buffer.from('x')));
  t.equal(fromUpstream.errors[0].replyStatus, DubboStatus.BAD_RESPONSE, 'a bad response is answered downstream as BAD_RESPONSE');
  t.equal(fromUpstream.errors[0].status, 502);

  const hb = decoder();
  hb.d.push(frame(FLAG_REQUEST | FLAG_EVENT | 3, 0, 1n, Buffer.from([0x4e])));
  t.equal(hb.errors[0].code, 'ERR_DUBBO_SERIALIZATION', 'events are checked too');

  const allowed = decoder({ serializations: [2, 6] });
  allowed.d.push(Buffer.concat([fastjson, req(6n, Buffer.from('N'))]));
  t.equal(allowed.errors.length, 0);
  t.same(allowed.frames.map((f) => [f.serialization, f.id]), [[6, 5n], [2, 6n]]);

  const kryoOnly = decoder({ serializations: [8] });
  kryoOnly.d.push(req(1n, Buffer.from('N')));
  t.equal(kryoOnly.errors[0]?.code, 'ERR_DUBBO_SERIALIZATION', 'a configured set replaces the default');
});

t.test('ERR_DUBBO_PAYLOAD_TOO_LARGE: from the header alone, before buffering', async (t) => {
  const huge = frame(0xc2, 0, 1234n, Buffer.alloc(0));
  huge.writeUInt32BE(100 * 1024 * 1024, 12);
  const r = decoder();
  r.d.push(huge);
  t.equal(r.errors.length, 1, 'raised at once, on the header');
  const e = r.errors[0];
  t.equal(e.code, 'ERR_DUBBO_PAYLOAD_TOO_LARGE');
  t.equal(e.header?.id, 1234n);
  t.equal(e.header?.bodyLength, 100 * 1024 * 1024);
  t.equal(e.status, 413);
  t.equal(e.replyStatus, DubboStatus.BAD_REQUEST);
  t.match(e.message, /Data length too large: 104857600, max payload: 8388608/);
  t.equal(r.d.bufferedBytes, 0, 'nothing held');
  r.d.push(Buffer.alloc(65536));
  t.equal(r.d.bufferedBytes, 0, 'and nothing buffered afterwards');

  // header split over pushes: raised on its 16th byte
  const split16 = decoder();
  split16.d.push(huge.subarray(0, 10));
  t.equal(split16.errors.length, 0);
  split16.d.push(huge.subarray(10, 15));
  t.equal(split16.errors.length, 0);
  split16.d.push(huge.subarray(15, 16));
  t.equal(split16.errors.length, 1);
  t.equal(split16.errors[0].code, 'ERR_DUBBO_PAYLOAD_TOO_LARGE');

  // after good frames in the same chunk
  const mixed = decoder();
  mixed.d.push(Buffer.concat([req(1n, Buffer.from('ab')), huge, Buffer.alloc(100)]));
  t.equal(mixed.frames.length, 1);
  t.equal(mixed.errors[0].code, 'ERR_DUBBO_PAYLOAD_TOO_LARGE');

  // a configured limit: the limit itself passes, one more byte does not
  const small = decoder({ maxBodyBytes: 1024 });
  small.d.push(req(1n, Buffer.alloc(1024)));
  t.equal(small.frames.length, 1);
  small.d.push(req(2n, Buffer.alloc(1025)));
  t.equal(small.errors[0]?.code, 'ERR_DUBBO_PAYLOAD_TOO_LARGE');
  t.equal(small.errors[0]?.header?.id, 2n);

  const limits = dubboLimits({ maxBodyBytes: 0 });
  t.ok(decodeFrame(req(1n, Buffer.alloc(0)), 0, limits) instanceof DubboFrame, 'maxBodyBytes 0 allows empty bodies');
  t.equal((decodeFrame(req(1n, Buffer.alloc(1)), 0, limits) as DubboProtocolError).code, 'ERR_DUBBO_PAYLOAD_TOO_LARGE');
});

t.test('options are validated at construction', async (t) => {
  const handler = { onFrame() {}, onError() {} };
  for (const bad of [-1, 1.5, 2 ** 32, Number.NaN, '10' as unknown as number]) {
    t.throws(() => new DubboFrameDecoder(handler, { maxBodyBytes: bad }), { code: 'ERR_DUBBO_INVALID_OPTION' }, `maxBodyBytes ${String(bad)}`);
  }
  for (const bad of [[], [32], [-1], ['2'], [1.5]] as unknown as number[][]) {
    t.throws(() => new DubboFrameDecoder(handler, { serializations: bad }), { code: 'ERR_DUBBO_INVALID_OPTION', message: /serialization/ }, `serializations ${JSON.stringify(bad)}`);
  }
  t.doesNotThrow(() => new DubboFrameDecoder(handler, { maxBodyBytes: 0xffffffff, serializations: [0, 31] }));
  const limits = dubboLimits({ maxBodyBytes: 10 });
  t.ok(Object.isFrozen(limits));
  t.equal(limits.serializationMask, 1 << 2);
  const shared = decoder(limits);
  shared.d.push(req(1n, Buffer.alloc(11)));
  t.equal(shared.errors[0]?.code, 'ERR_DUBBO_PAYLOAD_TOO_LARGE', 'prebuilt limits can be shared by decoders');
});

t.test('a handler that throws: the exception propagates and the decoder is destroyed', async (t) => {
  let calls = 0;
  const d = new DubboFrameDecoder({
    onFrame: () => {
      calls++;
      throw new Error('bug in a handler');
    },
    onError: () => {},
  });
  const two = Buffer.concat([req(1n, Buffer.from('a')), req(2n, Buffer.from('b'))]);
  t.throws(() => d.push(two), /bug in a handler/);
  t.equal(calls, 1);
  t.ok(d.destroyed);
  d.push(two);
  t.equal(calls, 1);
});

t.test('destroy() from inside onFrame stops delivery', async (t) => {
  const seen: bigint[] = [];
  const d: DubboFrameDecoder = new DubboFrameDecoder({
    onFrame: (f) => {
      seen.push(f.id);
      d.destroy();
    },
    onError: () => t.fail('no error expected'),
  });
  d.push(Buffer.concat([req(1n, Buffer.from('a')), req(2n, Buffer.from('b'))]));
  t.same(seen, [1n]);
  t.equal(d.bufferedBytes, 0);
});

t.test('rewriteId: in place, 8 bytes at offset 4, nothing else', async (t) => {
  const original = req(0x0102030405060708n, Buffer.from('body'));
  const raw = Buffer.from(original);
  rewriteId(raw, 99n);
  t.same(raw.subarray(4, 12), hex('00 00 00 00 00 00 00 63'));
  t.same(raw.subarray(0, 4), original.subarray(0, 4));
  t.same(raw.subarray(12), original.subarray(12));
  t.equal((decodeFrame(raw) as DubboFrame).id, 99n);

  rewriteId(raw, 2 ** 40 + 5);
  t.equal((decodeFrame(raw) as DubboFrame).id, 2n ** 40n + 5n);
  rewriteId(raw, -1n);
  t.same(raw.subarray(4, 12), hex('ff ff ff ff ff ff ff ff'), 'a negative Java long keeps its bytes');
  rewriteIdParts(raw, 0x11223344, 0xaabbccdd);
  t.same(raw.subarray(4, 12), hex('11 22 33 44 aa bb cc dd'));

  // a frame decoded from a chunk: rewriting its raw rewrites what gets forwarded
  const r = decoder();
  r.d.push(original);
  rewriteId(r.frames[0].raw, 7);
  t.equal((decodeFrame(r.frames[0].raw) as DubboFrame).id, 7n);

  t.throws(() => rewriteId(raw, -1), { code: 'ERR_DUBBO_INVALID_OPTION' });
  t.throws(() => rewriteId(raw, 2 ** 53), { code: 'ERR_DUBBO_INVALID_OPTION' });
  t.throws(() => rewriteId(raw, 1.5), { code: 'ERR_DUBBO_INVALID_OPTION' });
});

t.test('isHeartbeat: an event with a null body', async (t) => {
  const hbReq = decodeFrame(encodeHeartbeatRequest(3)) as DubboFrame;
  const hbRsp = decodeFrame(encodeHeartbeatResponse(3)) as DubboFrame;
  t.ok(isHeartbeat(hbReq));
  t.ok(isHeartbeat(hbRsp));
  const readonlyEvent = decodeFrame(frame(FLAG_REQUEST | FLAG_EVENT | 2, 0, 4n, Buffer.from([0x01, 0x52]))) as DubboFrame;
  t.notOk(isHeartbeat(readonlyEvent), 'the READONLY event ("R") is not a heartbeat');
  t.notOk(isHeartbeat(decodeFrame(req(1n, Buffer.from([0x4e]))) as DubboFrame), 'not an event');
});
