/**
 * The headers filter end to end: fields set and removed as the upstream sees them and as the
 * client sees the response, on HTTP/1.1 and HTTP/2 (curl; each also to an upstream of the other
 * version, so that the edits meet every form conversion), gRPC metadata (@grpc/grpc-js) and Dubbo
 * attachments (dubbo-remoting), the response's attachments included for consumers that read them.
 */
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { startSluice } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { curl, dubboVersioned, grpcVersioned, h2Versioned, http1Versioned, loadEcho, parseDubbo, unary, type Seen } from './filter-peers';

const requestHeaders = { set: { 'X-Env': 'prod', 'x-replaced': 'new' }, remove: ['x-debug'] };
const responseHeaders = { set: { 'x-served-by': 'sluice' }, remove: ['X-Remove-Me'] };
const edits = { requestHeaders, responseHeaders };
/** What the client sends: one field removed, one replaced (twice, in another case), one kept. */
const sent = { 'x-debug': '1', 'x-replaced': 'old', 'X-Replaced': 'older', 'x-keep': 'k' };

t.test('headers: requests and responses edited on HTTP/1, HTTP/2, gRPC and Dubbo', async (t) => {
  const h1 = await http1Versioned('h1');
  const h2 = await h2Versioned('h2');
  const g = await grpcVersioned('g');
  const d = await dubboVersioned('d');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web1', endpoints: [`127.0.0.1:${h1.port}`] },
      { name: 'web1-only', protocol: 'http1', endpoints: [`127.0.0.1:${h1.port}`] },
      { name: 'web2', endpoints: [`127.0.0.1:${h2.port}`] },
      { name: 'web2-only', protocol: 'http2', endpoints: [`127.0.0.1:${h2.port}`] },
      { name: 'grpc', endpoints: [`127.0.0.1:${g.port}`] },
      { name: 'dubbo', endpoints: [`127.0.0.1:${d.port}`] },
    ],
    routes: [
      { name: 'h1-to-h2', match: { protocol: 'http1', path: { prefix: '/cross' } }, action: { cluster: 'web2-only' }, ...edits },
      { name: 'h1', match: { protocol: 'http1' }, action: { cluster: 'web1' }, ...edits },
      { name: 'h2-to-h1', match: { protocol: 'http2', path: { prefix: '/cross' } }, action: { cluster: 'web1-only' }, ...edits },
      { name: 'h2', match: { protocol: 'http2' }, action: { cluster: 'web2' }, ...edits },
      { name: 'grpc', match: { protocol: 'grpc' }, action: { cluster: 'grpc' }, ...edits },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { cluster: 'dubbo' }, ...edits },
    ],
  });
  const base = `http://127.0.0.1:${s.port('app')}`;
  const client = new (loadEcho())(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  let consumer: Consumer | null = null;
  t.teardown(async () => {
    client.close();
    consumer?.close();
    await s.stop();
    await h1.close();
    await h2.close();
    g.close();
    await d.close();
  });

  const cases = [
    { name: 'HTTP/1 to HTTP/1', path: '/same', h2: false, version: 'h1' },
    { name: 'HTTP/1 to HTTP/2', path: '/cross', h2: false, version: 'h2' },
    { name: 'HTTP/2 to HTTP/2', path: '/same', h2: true, version: 'h2' },
    { name: 'HTTP/2 to HTTP/1', path: '/cross', h2: true, version: 'h1' },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      // curl sends a header given twice (in two cases) as two fields
      const r = await curl(`${base}${c.path}`, { h2: c.h2, headers: sent });
      t.equal(r.status, 200);
      const seen = JSON.parse(r.body) as Seen;
      t.equal(seen.version, c.version, 'the upstream of the route');
      t.equal(seen.headers['x-env'], 'prod', 'set');
      t.equal(seen.headers['x-replaced'], 'new', 'set replaces every field of the name, whatever its case');
      t.equal(seen.headers['x-debug'], undefined, 'removed');
      t.equal(seen.headers['x-keep'], 'k', 'others untouched');
      t.equal(r.headers['x-served-by'], 'sluice', 'response: set');
      t.equal(r.headers['x-remove-me'], undefined, 'response: removed');
      t.equal(r.headers['x-up'], c.version, 'response: others untouched');
    });
  }

  t.test('gRPC metadata', async (t) => {
    const r = await unary(client, { 'x-debug': '1', 'x-replaced': 'old', 'x-keep': 'k' });
    t.equal(r.status.code, grpc.status.OK);
    t.match(r.seen, { 'x-env': 'prod', 'x-replaced': 'new', 'x-keep': 'k' });
    t.notOk(r.seen && 'x-debug' in r.seen, 'removed');
    t.same(r.headers?.get('x-served-by'), ['sluice'], 'response metadata: set');
    t.same(r.headers?.get('x-remove-me'), [], 'response metadata: removed');
    t.same(r.headers?.get('x-up'), ['g']);
  });

  t.test('Dubbo attachments, the response\'s too for a consumer that reads them', async (t) => {
    // connected now: a client silent for tcp.sniffTimeoutMs is taken for a server-speaks-first one
    consumer = await Consumer.connect(s.port('app'));
    const a = await consumer.call('hello', [str('x')], { 'x-debug': '1', 'x-replaced': 'old', 'x-keep': 'k', dubbo: '2.0.2' });
    t.equal(a.status, 20);
    const seen = parseDubbo(a.value)!;
    t.match(seen.attachments, { 'x-env': 'prod', 'x-replaced': 'new', 'x-keep': 'k', path: 'com.example.TransferService' });
    t.notOk('x-debug' in seen.attachments, 'removed');
    t.match(a.props, { 'x-served-by': 'sluice', 'x-up': 'd', dubbo: '2.0.2' }, 'response attachments: set, others untouched');
    t.notOk(a.props && 'x-remove-me' in a.props, 'response attachments: removed');

    // a consumer of a dubbo version without response attachments gets none, edited or not
    const old = await consumer.call('hello', [str('y')], { 'x-debug': '1' });
    t.equal(old.status, 20);
    t.equal(parseDubbo(old.value)?.attachments['x-env'], 'prod', 'its request is edited all the same');
    t.equal(old.props, undefined, 'no response attachments for dubbo 5.3.0 (what dubbo-remoting writes)');
  });
});
