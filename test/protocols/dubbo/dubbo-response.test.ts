/**
 * Response view: status, error message, response types with and without attachments, values and
 * exceptions decoded on demand, heartbeats; bodies written by our encoder and by hessian.js.
 */
import t from 'tap';
import {
  DubboFrame, DubboResponse, DubboResponseType, DubboStatus, decodeFrame, encodeErrorResponse,
  encodeHeartbeatResponse, encodeResponse, localReply,
} from '../../../src/protocols/dubbo';
import { bytes, frame, hjs, hmap, i, pojo, s } from './fixtures';

const view = (raw: Buffer) => DubboResponse.fromFrame(decodeFrame(raw) as DubboFrame);

const VALUES: unknown[] = [
  'hello', 'x'.repeat(40000), 0, -262145, { $class: 'long', $: 2 ** 50 }, 1.5, true, new Date(1700000000000), Buffer.alloc(5000, 1),
  [1, 'a', null], { k: 'v', n: [1, 2] }, pojo('org.apache.dubbo.demo.User', { name: 'ann', age: 3, friends: [pojo('org.apache.dubbo.demo.User', { name: 'bob', age: 4, friends: null })] }),
];

t.test('values, with attachments (dubbo 2.0.2) and without (older protocol versions)', async (t) => {
  for (const value of VALUES) {
    const expected = new (require('hessian.js').DecoderV2)(hjs(value)).read();
    const v = view(encodeResponse({ id: 9, value, attachments: { trace: 't1' } }));
    t.equal(v.status, DubboStatus.OK);
    t.ok(v.isOk);
    t.equal(v.responseType(), DubboResponseType.VALUE_WITH_ATTACHMENTS);
    t.notOk(v.isException());
    t.ok(v.hasAttachments());
    t.same(v.value(), expected);
    t.equal(v.exception(), undefined);
    t.same(v.attachments(), new Map([['trace', 't1'], ['dubbo', '2.0.2']]));
    t.equal(v.attachment('dubbo'), '2.0.2');

    const old = view(encodeResponse({ id: 9, value, attachments: { trace: 't1' }, requestDubboVersion: '2.0.0' }));
    t.equal(old.responseType(), DubboResponseType.VALUE);
    t.notOk(old.hasAttachments());
    t.same(old.value(), expected);
    t.equal(old.attachments().size, 0);
  }
});

t.test('null values and exceptions', async (t) => {
  const nul = view(encodeResponse({ id: 1, value: null }));
  t.equal(nul.responseType(), DubboResponseType.NULL_VALUE_WITH_ATTACHMENTS);
  t.equal(nul.value(), null);
  t.same(nul.attachments(), new Map([['dubbo', '2.0.2']]));
  t.equal(view(encodeResponse({ id: 1, requestDubboVersion: '1.0.0' })).responseType(), DubboResponseType.NULL_VALUE);

  const exception = { $class: 'java.lang.IllegalStateException', $: { detailMessage: 'boom', cause: null } };
  const ex = view(encodeResponse({ id: 1, exception, attachments: { a: 'b' } }));
  t.equal(ex.responseType(), DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS);
  t.ok(ex.isException());
  t.equal(ex.value(), undefined);
  const decoded = ex.exception() as { message?: string; name?: string };
  t.match(decoded, { message: /boom/ }, 'hessian.js turns a *Exception class into an Error');
  t.match(ex.exception(true), { $class: 'java.lang.IllegalStateException' }, 'withType keeps the class');
  t.equal(ex.attachment('a'), 'b');
  const oldEx = view(encodeResponse({ id: 1, exception, requestDubboVersion: '2.0.1' }));
  t.equal(oldEx.responseType(), DubboResponseType.WITH_EXCEPTION);
  t.match(oldEx.exception(), { message: /boom/ });
});

t.test('a response body written by hessian.js (independent of our encoder)', async (t) => {
  const body = hjs(4, pojo('a.Result', { code: 200, data: ['x'] }), { $class: 'java.util.HashMap', $: new Map([['dubbo', '2.0.2'], ['k', 'v']]) });
  const v = view(frame(0x02, 20, 77n, body));
  t.equal(v.frame.id, 77n);
  t.same(v.value(), { code: 200, data: ['x'] });
  t.same(v.attachments(), new Map([['dubbo', '2.0.2'], ['k', 'v']]));
});

t.test('error responses: status byte and message', async (t) => {
  const e = view(encodeErrorResponse(5n, DubboStatus.SERVICE_ERROR, 'Failed to invoke remote method'));
  t.equal(e.status, 70);
  t.notOk(e.isOk);
  t.equal(e.errorMessage(), 'Failed to invoke remote method');
  t.equal(e.attachments().size, 0, 'no attachments on error responses');
  t.throws(() => e.responseType(), { code: 'ERR_DUBBO_BAD_BODY', message: /status 70/ });
  t.equal(view(encodeErrorResponse(5n, DubboStatus.SERVER_ERROR, null)).errorMessage(), null);
  t.equal(view(localReply(5n, DubboStatus.SERVICE_NOT_FOUND, '中文 message')).errorMessage(), '中文 message');
  t.equal(view(encodeResponse({ id: 1, value: 'x' })).errorMessage(), null, 'an OK response has no error message');
});

t.test('heartbeat responses', async (t) => {
  const hb = view(encodeHeartbeatResponse(12));
  t.ok(hb.isEvent);
  t.ok(hb.isHeartbeat);
  t.equal(hb.attachments().size, 0);
  t.throws(() => hb.responseType(), { code: 'ERR_DUBBO_BAD_BODY', message: /event/ });
  t.notOk(view(encodeResponse({ id: 1, value: 1 })).isHeartbeat);
});

t.test('bad bodies are ERR_DUBBO_BAD_BODY', async (t) => {
  t.throws(() => view(frame(2, 20, 1n, bytes(i(9)))).responseType(), { code: 'ERR_DUBBO_BAD_BODY', message: /unknown response type 9/ });
  t.throws(() => view(frame(2, 20, 1n, bytes(s('1')))).responseType(), { code: 'ERR_DUBBO_BAD_BODY' });
  t.throws(() => view(frame(2, 20, 1n, bytes())).value(), { code: 'ERR_DUBBO_BAD_BODY' });
  t.throws(() => view(frame(2, 20, 1n, bytes(i(1), 0x79))).value(), { code: 'ERR_DUBBO_BAD_BODY' }, 'truncated value');
  t.throws(() => view(frame(2, 20, 1n, bytes(i(1), 0x57, i(1), 0x5a))).value(), { code: 'ERR_DUBBO_BAD_BODY', message: /does not decode/ }, 'a form hessian.js cannot build');
  const brokenMap = view(frame(2, 20, 1n, bytes(i(4), s('v'), 0x48, s('k'))));
  t.same(brokenMap.value(), 'v');
  const err = brokenMap.scanAttachments();
  t.equal(err?.code, 'ERR_DUBBO_BAD_BODY');
  t.equal(err?.header?.id, 1n);
  t.equal(err?.replyStatus, DubboStatus.BAD_RESPONSE, 'a bad upstream response is answered downstream as BAD_RESPONSE');
  t.throws(() => brokenMap.attachment('k'), err!);
  t.throws(() => view(frame(2, 60, 1n, bytes(i(3)))).errorMessage(), { code: 'ERR_DUBBO_BAD_BODY' });
  t.same(view(frame(2, 20, 1n, bytes(i(5), hmap([['a', 'b']])))).attachments(), new Map([['a', 'b']]));
});

t.test('misuse: requests and non-Hessian2 bodies', async (t) => {
  t.throws(() => DubboResponse.fromFrame(decodeFrame(frame(0xc2, 0, 1n, bytes(0x4e))) as DubboFrame), { code: 'ERR_DUBBO_INVALID_OPTION' });
  const kryo = decodeFrame(frame(8, 20, 1n, bytes(0x4e)), 0, { maxBodyBytes: 10, serializationMask: 1 << 8 }) as DubboFrame;
  t.throws(() => DubboResponse.fromFrame(kryo), { code: 'ERR_DUBBO_SERIALIZATION' });
});

t.test('withAttachments: edits the map, keeps the value and the id; adds a map only where the consumer reads one', async (t) => {
  const value = { k: 'v', n: [1, 2] };
  const expected = new (require('hessian.js').DecoderV2)(hjs(value)).read();
  const id = { idHi: 7, idLo: 0xfffffff0 };
  const withMap = view(encodeResponse({ id, value, attachments: { trace: 't1', drop: 'x', keep: 'k' } }));
  const edited = view(withMap.withAttachments([['trace', 't2'], ['added', 'a']], ['drop'], '2.0.2')!);
  t.equal(edited.frame.idHi, 7);
  t.equal(edited.frame.idLo, 0xfffffff0);
  t.equal(edited.responseType(), DubboResponseType.VALUE_WITH_ATTACHMENTS);
  t.same(edited.value(), expected, 'the value is copied as it was');
  t.same(edited.attachments(), new Map([['keep', 'k'], ['dubbo', '2.0.2'], ['trace', 't2'], ['added', 'a']]));
  t.equal(withMap.withAttachments([], [], '2.0.0')!.length > 0, true, 'a map already there is edited whatever the version');

  // no map: the _WITH_ATTACHMENTS form, for a 2.0.2 .. 2.0.99 consumer only
  const noMap = view(encodeResponse({ id: 5, value, requestDubboVersion: '2.0.0' }));
  t.equal(noMap.withAttachments([['x-a', '1']], [], '2.0.0'), null, 'a 2.0.0 consumer would not read a map');
  t.equal(noMap.withAttachments([['x-a', '1']], [], '2.5.3'), null);
  const added = view(noMap.withAttachments([['x-a', '1']], [], '2.0.2')!);
  t.equal(added.responseType(), DubboResponseType.VALUE_WITH_ATTACHMENTS);
  t.same(added.value(), expected);
  t.same(added.attachments(), new Map([['x-a', '1']]));

  const nul = view(view(encodeResponse({ id: 5, requestDubboVersion: '1.0.0' })).withAttachments([['x', 'y']], [], '2.0.2')!);
  t.equal(nul.responseType(), DubboResponseType.NULL_VALUE_WITH_ATTACHMENTS);
  t.equal(nul.value(), null);
  t.same(nul.attachments(), new Map([['x', 'y']]));

  const exception = { $class: 'java.lang.IllegalStateException', $: { detailMessage: 'boom', cause: null } };
  const ex = view(view(encodeResponse({ id: 5, exception, requestDubboVersion: '2.0.0' })).withAttachments([['x', 'y']], [], '2.0.2')!);
  t.equal(ex.responseType(), DubboResponseType.WITH_EXCEPTION_WITH_ATTACHMENTS);
  t.match(ex.exception(), { message: /boom/ });
  t.same(ex.attachments(), new Map([['x', 'y']]));

  t.equal(view(encodeErrorResponse(5, DubboStatus.SERVICE_ERROR, 'no')).withAttachments([['x', 'y']], [], '2.0.2'), null, 'an error status has no attachments');
  t.equal(view(encodeHeartbeatResponse(5)).withAttachments([['x', 'y']], [], '2.0.2'), null, 'nor an event');
});
