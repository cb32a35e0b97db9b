/**
 * A multiplexed Dubbo upstream connection that stops answering is replaced, and the calls that were
 * still waiting in Sluice (not written to it) move to a healthy connection. Real Sluice (one worker,
 * so every client shares the same upstream connection), real consumers (dubbo-remoting), and
 * providers that misbehave on one connection while a new connection works: one on raw sockets that
 * stops reading in the middle of a frame or never answers, and dubbo-remoting 2.1.4 itself, whose
 * decoder dies silently on a body it cannot read and leaves the connection open and unread.
 */
import { EventEmitter, once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { encodeFrame, hessian2String } from '../../src/protocols/dubbo';
import { startSluice, stats, waitFor, type RunningSluice } from '../helpers/harness';
import { Consumer, rawProvider, remoting, str, waitEvent } from './dubbo-peers';

const CLUSTER = 'cluster="c"';
const counter = async (s: RunningSluice, name: string) => (await stats(s.admin)).get(`${name}{${CLUSTER}}`) ?? 0;

function sluiceFor(port: number, extra: Record<string, unknown> = {}): Promise<RunningSluice> {
  return startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${port}`] }],
    ...extra,
  });
}

/** An argument of 8 MiB of nulls, as dubbo-remoting writes an Object[] (the frame stays under the 8 MiB limit). */
const nulls8MiB = () => ({ $class: '[java.lang.Object', $: new Array(8 * 1024 * 1024 - 1024).fill(null) });

t.test('a provider connection that stops reading in the middle of an 8 MiB call is replaced; the calls queued behind it move', async (t) => {
  // connection 0 stops reading at the header of the first large frame; connection 1 works. The kernel
  // buffers take a few MiB of the 8 MiB (Linux's tcp_wmem allows 4 MiB), the rest waits in Sluice's socket
  const p = await rawProvider({ stallOn: (len, c) => c.index === 0 && len > 1024 * 1024 });
  const s = await sluiceFor(p.port, { http: { requestTimeoutMs: 8000 } });
  const clients = await Promise.all(Array.from({ length: 10 }, () => Consumer.connect(s.port('app'))));
  const uploader = await Consumer.connect(s.port('app'));
  t.teardown(async () => { for (const c of [...clients, uploader]) c.close(); await s.stop(); await p.close(); });

  for (const c of clients) t.equal((await c.call('hello', [str('warm')])).status, 20);
  t.equal(p.conns.length, 1, 'every client shares one upstream connection');

  const big = uploader.call('upload', [nulls8MiB()], {}, 30_000);
  await waitEvent(p.events, 'stalled', 20_000);

  // every other client calls now; the consumer-side timeout is the bound
  const later = await Promise.all(clients.map((c, i) => c.call('hello', [str(`later${i}`)], {}, 15_000)));
  for (let i = 0; i < later.length; i++) {
    t.same(later[i], { status: 20, value: `1:hello:later${i}` }, `client ${i}: answered, by the replacement connection`);
  }
  // the uploader's own connection was paused behind its call: it reads again and is served
  t.same(await uploader.call('hello', [str('next')], {}, 15_000), { status: 20, value: '1:hello:next' });

  // the call that was written to the stuck connection cannot move: it times out, then that connection closes
  const b = await big;
  t.equal(b.status, 31, 'the 8 MiB call: SERVER_TIMEOUT');
  t.match(b.error, /upstream_timeout/);
  // (the provider does not read that socket any more, so it cannot see the close: Sluice's gauge can)
  await waitFor(async () => (await counter(s, 'sluice_upstream_cx_active')) === 1, 10_000, 'the stuck connection to close');
  t.pass('the stuck connection is closed once its call has timed out');
  t.equal(p.conns.length, 2, 'one replacement, no more');
  t.equal(await counter(s, 'sluice_upstream_cx_replaced_total'), 1, 'the replacement is counted');
  t.ok(await counter(s, 'sluice_upstream_rq_moved_total') >= 1, 'calls that waited in Sluice were moved');
});

/**
 * dubbo-remoting's provider side, wired as its users wire it: the socket piped into its decoder, its
 * encoder piped into the socket. A body hessian.js cannot read kills the decoder without an 'error'
 * (DubboDecoder._destroy never calls back), the pipe stops, and the connection stays open, unread.
 */
async function remotingProvider() {
  const decoders: Array<{ dead: boolean }> = [];
  const deaths = new EventEmitter();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const index = decoders.length;
    const state = { dead: false };
    decoders.push(state);
    const enc = remoting.encoder({});
    const dec = remoting.decoder({});
    enc.pipe(sock);
    sock.pipe(dec);
    dec.on('error', () => { /* a provider logs it and goes on; it is never emitted here */ });
    dec.on('close', () => { state.dead = true; deaths.emit('dead', index); });
    dec.on('heartbeat', (hb: any) => enc.writeHeartbeatAck(hb));
    dec.on('request', (req: any) => enc.writeResponse(req, { appResponse: str(`${index}:${req.data.methodName}:${req.data.args[0]}`), isError: false }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    decoders,
    deaths,
    close: () => new Promise<void>((r) => { for (const x of sockets) x.destroy(); server.close(() => r()); }),
  };
}

/** A call whose one argument is 8 MiB of nulls in a variable-length list (0x57 ... 'Z'), which hessian.js cannot read. */
function nullListCall(id: number): Buffer {
  const n = 8 * 1024 * 1024 - 1024;
  const list = Buffer.alloc(n + 2, 0x4e);
  list[0] = 0x57;
  list[n + 1] = 0x5a;
  const body = Buffer.concat([
    hessian2String('2.0.2'), hessian2String('com.example.TransferService'), hessian2String('1.0.0'),
    hessian2String('upload'), hessian2String('Ljava/util/List;'), list, Buffer.from([0x48, 0x5a]),
  ]);
  return encodeFrame(0xc2, 0, id, body);
}

t.test('dubbo-remoting 2.1.4 stops reading a connection after an 8 MiB argument of nulls it cannot decode: replaced', async (t) => {
  const p = await remotingProvider();
  const s = await sluiceFor(p.port, { http: { requestTimeoutMs: 5000 } });
  const clients = await Promise.all(Array.from({ length: 10 }, () => Consumer.connect(s.port('app'))));
  const uploader = await Consumer.connect(s.port('app'));
  t.teardown(async () => { for (const c of [...clients, uploader]) c.close(); await s.stop(); await p.close(); });
  for (const c of clients) t.equal((await c.call('hello', [str('warm')])).status, 20);
  t.equal(p.decoders.length, 1);

  const big = uploader.callRaw(nullListCall(7), 7, 30_000);
  await waitEvent(p.deaths, 'dead', 20_000);

  // calls sent now reach a socket nobody reads: once written they cannot move, but none is left hanging
  const first = await Promise.all(clients.map((c, i) => c.call('hello', [str(`first${i}`)], {}, 15_000)));
  for (let i = 0; i < first.length; i++) {
    const a = first[i];
    t.ok(a.status === 31 || (a.status === 20 && a.value === `1:hello:first${i}`), `client ${i}: answered (${JSON.stringify(a)})`);
  }
  t.equal((await big).status, 31, 'the call the provider choked on: SERVER_TIMEOUT');

  // the silent connection was found out and replaced: every later call succeeds, on the new connection
  const later = await Promise.all(clients.map((c, i) => c.call('hello', [str(`later${i}`)], {}, 15_000)));
  for (let i = 0; i < later.length; i++) t.same(later[i], { status: 20, value: `1:hello:later${i}` }, `client ${i} after the replacement`);
  t.equal(await counter(s, 'sluice_upstream_cx_replaced_total'), 1, 'the replacement is counted');
  t.equal(p.decoders.length, 2);
});

t.test('consecutive timeouts on a connection that still answers heartbeats replace it', async (t) => {
  // connection 0 reads calls and answers heartbeats but never answers a call (a provider that runs one
  // connection's calls in order, stuck behind the first)
  const p = await rawProvider({ silentOn: (c) => c.index === 0 });
  const s = await sluiceFor(p.port, { http: { requestTimeoutMs: 300 } });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await p.close(); });
  for (const m of ['a', 'b', 'c']) {
    const a = await c.call(m, [str('x')]);
    t.equal(a.status, 31, `call ${m}: SERVER_TIMEOUT`);
  }
  t.same(await c.call('d', [str('x')]), { status: 20, value: '1:d:x' }, 'after 3 timeouts in a row the next call goes to a new connection');
  t.equal(await counter(s, 'sluice_upstream_cx_replaced_total'), 1);
  await waitFor(() => p.conns[0].closed, 5000, 'the replaced connection to close');
  t.pass('the replaced connection, with nothing pending, is closed');
});

t.test('timeouts with answers in between, and slow calls while heartbeats are answered, replace nothing', async (t) => {
  const p = await rawProvider({ silentOn: (_c, m) => m === 'hang', holdMethod: 'hold' });
  const s = await sluiceFor(p.port, {
    http: { requestTimeoutMs: 300 },
    routes: [{ match: { method: 'hold' }, action: { cluster: 'c', timeoutMs: 20_000 } }],
    dubbo: { upstreamProbeAfterMs: 200, upstreamProbeTimeoutMs: 200 },
  });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await p.close(); });
  for (let i = 0; i < 4; i++) {
    t.equal((await c.call('hang', [str('x')])).status, 31);
    t.equal((await c.call('hello', [str('x')])).status, 20);
  }
  // a call held far longer than probeAfterMs + probeTimeoutMs: probes go out and are answered
  const held = c.call('hold', [str('h')]);
  await waitEvent(p.events, 'heartbeat', 10_000, () => p.conns[0].heartbeats >= 3);
  p.release();
  t.same(await held, { status: 20, value: '0:hold:h' });
  t.equal(p.conns.length, 1, 'still the first connection');
  t.equal(await counter(s, 'sluice_upstream_cx_replaced_total'), 0);
});
