/**
 * gRPC through Sluice with @grpc/grpc-js on both ends (h2c, insecure): the four
 * call shapes, metadata both ways, error statuses carried in trailers, and the
 * statuses Sluice itself answers with (UNAVAILABLE, UNIMPLEMENTED).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { EventEmitter, once } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import t from 'tap';
import { h2Upstream, ROOT, startSluice, stats, waitFor } from '../helpers/harness';

const PROTO = path.join(ROOT, 'test', 'fixtures', 'echo.proto');

interface EchoRequest { message: string; count: number; failCode: number }
interface EchoReply { message: string; index: number; via: string }

type Ctor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => grpc.Client & Record<string, Function>;

function loadEcho(): { Echo: Ctor & { service: grpc.ServiceDefinition }; Unrouted: Ctor & { service: grpc.ServiceDefinition } } {
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { sluice: { test: Record<string, Ctor & { service: grpc.ServiceDefinition }> } };
  return { Echo: pkg.sluice.test.Echo, Unrouted: pkg.sluice.test.Unrouted };
}

/** Metadata the server answers with: what the client sent, echoed back. */
function echoMeta(md: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  out.set('x-echo-client', String(md.get('x-client')[0] ?? ''));
  const bin = md.get('x-trace-bin')[0];
  if (bin) out.set('x-echo-trace-bin', bin as Buffer);
  return out;
}

function trailerMeta(label: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('x-trailer', label);
  return md;
}

function failure(code: number, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: trailerMeta('failed') }) as grpc.ServiceError;
}

async function echoServer(): Promise<{ port: number; server: grpc.Server; events: EventEmitter }> {
  const events = new EventEmitter();
  const { Echo } = loadEcho();
  const server = new grpc.Server();
  server.addService(Echo.service, {
    Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) {
      call.sendMetadata(echoMeta(call.metadata));
      const via = String(call.metadata.get('via')[0] ?? '');
      if (call.request.failCode) { cb(failure(call.request.failCode, `no such thing: ${call.request.message}`)); return; }
      cb(null, { message: `echo:${call.request.message}`, index: 0, via }, trailerMeta('unary'));
    },
    ServerStream(call: grpc.ServerWritableStream<EchoRequest, EchoReply>) {
      call.sendMetadata(echoMeta(call.metadata));
      if (call.request.count < 0) {
        // one message, then wait for the client to go away
        call.on('cancelled', () => events.emit('cancelled', call.request.message));
        call.write({ message: 'first', index: 0, via: '' });
        return;
      }
      for (let i = 0; i < call.request.count; i++) call.write({ message: `${call.request.message}#${i}`, index: i, via: '' });
      if (call.request.failCode) { call.emit('error', failure(call.request.failCode, 'stream broke after the messages')); return; }
      call.end(trailerMeta('server-stream'));
    },
    ClientStream(call: grpc.ServerReadableStream<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) {
      const parts: string[] = [];
      call.on('data', (m: EchoRequest) => parts.push(m.message));
      call.on('end', () => cb(null, { message: parts.join(','), index: parts.length, via: '' }, trailerMeta('client-stream')));
    },
    Bidi(call: grpc.ServerDuplexStream<EchoRequest, EchoReply>) {
      call.sendMetadata(echoMeta(call.metadata));
      let i = 0;
      call.on('data', (m: EchoRequest) => call.write({ message: m.message.toUpperCase(), index: i++, via: '' }));
      call.on('end', () => call.end(trailerMeta('bidi')));
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { port, server, events };
}

async function closedPort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const deadline = (ms = 10_000) => ({ deadline: Date.now() + ms });

function unary(client: grpc.Client & Record<string, Function>, req: Partial<EchoRequest>, md = new grpc.Metadata(), method = 'Unary'):
  Promise<{ err: grpc.ServiceError | null; reply: EchoReply | undefined; headers: grpc.Metadata | null; status: grpc.StatusObject | null }> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | null = null;
    let status: grpc.StatusObject | null = null;
    let result: { err: grpc.ServiceError | null; reply: EchoReply | undefined } | null = null;
    const done = () => { if (result && status) resolve({ ...result, headers, status }); };
    const call = client[method](req, md, deadline(), (err: grpc.ServiceError | null, reply?: EchoReply) => { result = { err, reply }; done(); }) as grpc.ClientUnaryCall;
    call.on('metadata', (m) => { headers = m; });
    call.on('status', (s) => { status = s; done(); });
  });
}

t.test('gRPC through Sluice: unary, server/client/bidi streaming, metadata, error statuses', async (t) => {
  const { Echo, Unrouted } = loadEcho();
  const up = await echoServer();
  const dead = await closedPort();
  const s = await startSluice({
    listeners: [
      { name: 'app', address: '127.0.0.1:0', cluster: 'echo' },
      { name: 'routed', address: '127.0.0.1:0' },
      { name: 'dead', address: '127.0.0.1:0', cluster: 'dead' },
    ],
    routes: [{ match: { listener: 'routed', service: 'sluice.test.Echo' }, action: { cluster: 'echo' } }],
    clusters: [
      { name: 'echo', protocol: 'auto', endpoints: [`127.0.0.1:${up.port}`] },
      { name: 'dead', endpoints: [`127.0.0.1:${dead}`] },
    ],
  });
  const clients: grpc.Client[] = [];
  const client = <C extends Ctor>(C: C, listener: string) => {
    const c = new C(`127.0.0.1:${s.port(listener)}`, grpc.credentials.createInsecure());
    clients.push(c);
    return c;
  };
  t.teardown(async () => {
    for (const c of clients) c.close();
    await s.stop();
    up.server.forceShutdown();
  });
  const echo = client(Echo, 'app');

  t.test('unary with metadata both ways', async (t) => {
    const md = new grpc.Metadata();
    md.set('x-client', 'abc');
    md.set('x-trace-bin', Buffer.from([0, 1, 2, 255]));
    const r = await unary(echo, { message: 'hi' }, md);
    t.equal(r.err, null);
    t.same(r.reply, { message: 'echo:hi', index: 0, via: '1.1 sluice' }, 'reply, and the server saw via');
    t.same(r.headers?.get('x-echo-client'), ['abc'], 'initial metadata');
    t.same(r.headers?.get('x-echo-trace-bin'), [Buffer.from([0, 1, 2, 255])], 'binary metadata');
    t.equal(r.status?.code, grpc.status.OK);
    t.same(r.status?.metadata.get('x-trailer'), ['unary'], 'trailing metadata');
  });

  t.test('a large unary message crosses flow-control windows both ways', async (t) => {
    const big = 'z'.repeat(1_000_000);
    const r = await unary(echo, { message: big });
    t.equal(r.err, null);
    t.equal(r.reply?.message.length, big.length + 5);
  });

  t.test('an error status set by the server arrives through the trailers', async (t) => {
    const r = await unary(echo, { message: 'thing-7', failCode: grpc.status.NOT_FOUND });
    t.equal(r.err?.code, grpc.status.NOT_FOUND);
    t.equal(r.err?.details, 'no such thing: thing-7');
    t.same(r.err?.metadata.get('x-trailer'), ['failed'], 'error trailers carry metadata');
    t.same(r.headers?.get('x-echo-client'), [''], 'headers came before the error');
  });

  t.test('server streaming', async (t) => {
    const call = echo.ServerStream({ message: 'm', count: 50 }, deadline()) as grpc.ClientReadableStream<EchoReply>;
    const got: EchoReply[] = [];
    call.on('data', (m: EchoReply) => got.push(m));
    const [st] = await once(call, 'status') as [grpc.StatusObject];
    t.equal(st.code, grpc.status.OK);
    t.equal(got.length, 50);
    t.same(got.map((m) => m.index), Array.from({ length: 50 }, (_, i) => i), 'in order');
    t.equal(got[49].message, 'm#49');
    t.same(st.metadata.get('x-trailer'), ['server-stream']);
  });

  t.test('server streaming that fails after some messages', async (t) => {
    const call = echo.ServerStream({ message: 'f', count: 3, failCode: grpc.status.RESOURCE_EXHAUSTED }, deadline()) as grpc.ClientReadableStream<EchoReply>;
    const got: EchoReply[] = [];
    call.on('data', (m: EchoReply) => got.push(m));
    const [st, err] = await new Promise<[grpc.StatusObject, grpc.ServiceError | null]>((resolve) => {
      let error: grpc.ServiceError | null = null;
      call.on('error', (e: grpc.ServiceError) => { error = e; });
      call.on('status', (s: grpc.StatusObject) => setImmediate(() => resolve([s, error])));
    });
    t.equal(got.length, 3, 'the messages before the failure arrived');
    t.equal(st.code, grpc.status.RESOURCE_EXHAUSTED);
    t.equal(err?.details, 'stream broke after the messages');
    t.equal(err?.code, grpc.status.RESOURCE_EXHAUSTED, 'the client sees the error');
  });

  t.test('a client that cancels a call cancels it upstream too', async (t) => {
    const call = echo.ServerStream({ message: 'to-cancel', count: -1 }, deadline()) as grpc.ClientReadableStream<EchoReply>;
    const cancelledUpstream = once(up.events, 'cancelled');
    const [first] = await once(call, 'data') as [EchoReply];
    t.equal(first.message, 'first');
    const statusP = new Promise<grpc.StatusObject>((resolve) => { call.on('error', () => {}); call.on('status', resolve); });
    call.cancel();
    t.equal((await statusP).code, grpc.status.CANCELLED);
    const [which] = await cancelledUpstream as [string];
    t.equal(which, 'to-cancel', 'the upstream server saw the cancellation');
  });

  t.test('client streaming', async (t) => {
    const r = await new Promise<{ err: grpc.ServiceError | null; reply?: EchoReply; status?: grpc.StatusObject }>((resolve) => {
      let out: { err: grpc.ServiceError | null; reply?: EchoReply } | null = null;
      let status: grpc.StatusObject | undefined;
      const call = echo.ClientStream(deadline(), (err: grpc.ServiceError | null, reply?: EchoReply) => { out = { err, reply }; if (status) resolve({ ...out, status }); }) as grpc.ClientWritableStream<EchoRequest>;
      call.on('status', (st) => { status = st; if (out) resolve({ ...out, status }); });
      for (let i = 0; i < 20; i++) call.write({ message: `p${i}`, count: 0, failCode: 0 });
      call.end();
    });
    t.equal(r.err, null);
    t.equal(r.reply?.index, 20);
    t.equal(r.reply?.message, Array.from({ length: 20 }, (_, i) => `p${i}`).join(','));
    t.same(r.status?.metadata.get('x-trailer'), ['client-stream']);
  });

  t.test('bidi streaming, message by message', async (t) => {
    const md = new grpc.Metadata();
    md.set('x-client', 'bidi-client');
    const call = echo.Bidi(md, deadline()) as grpc.ClientDuplexStream<EchoRequest, EchoReply>;
    const headersP = once(call, 'metadata');
    call.write({ message: 'first', count: 0, failCode: 0 });
    const [headers] = await headersP as [grpc.Metadata];
    t.same(headers.get('x-echo-client'), ['bidi-client']);
    // ping-pong: each reply comes back before the next message is sent, so nothing is buffered whole
    const [first] = await once(call, 'data') as [EchoReply];
    t.same(first, { message: 'FIRST', index: 0, via: '' });
    for (let i = 1; i <= 20; i++) {
      call.write({ message: `msg${i}`, count: 0, failCode: 0 });
      const [m] = await once(call, 'data') as [EchoReply];
      t.equal(m.message, `MSG${i}`);
      t.equal(m.index, i);
    }
    const statusP = once(call, 'status');
    call.end();
    call.resume();
    const [st] = await statusP as [grpc.StatusObject];
    t.equal(st.code, grpc.status.OK);
    t.same(st.metadata.get('x-trailer'), ['bidi']);
  });

  t.test('a route by gRPC service works; an unrouted service gets UNIMPLEMENTED', async (t) => {
    const routed = await unary(client(Echo, 'routed'), { message: 'r' });
    t.equal(routed.err, null);
    t.equal(routed.reply?.message, 'echo:r');
    const r = await unary(client(Unrouted, 'routed'), { message: 'x' });
    t.equal(r.err?.code, grpc.status.UNIMPLEMENTED, `got ${r.err?.code} ${r.err?.details}`);
    t.match(r.err?.details, /no route/);
    t.same(r.err?.metadata.get('x-sluice-reason'), ['no_route']);
  });

  t.test('a cluster whose endpoint refuses connections: UNAVAILABLE, not a hang', async (t) => {
    // the call's deadline is 10 s: a hang would end in DEADLINE_EXCEEDED, not UNAVAILABLE
    const deadClient = client(Echo, 'dead');
    for (let i = 0; i < 2; i++) {
      const r = await unary(deadClient, { message: 'x' });
      t.equal(r.err?.code, grpc.status.UNAVAILABLE, `got ${r.err?.code} ${r.err?.details}`);
      t.same(r.err?.metadata.get('x-sluice-reason'), ['upstream_connect_failed']);
    }
  });

  t.test('counters', async (t) => {
    const st = await waitFor(async () => {
      const m = await stats(s.admin);
      return m.get('sluice_downstream_rq_active{protocol="grpc"}') === 0 ? m : null;
    }, 5000, 'no gRPC request in flight');
    // unary ×3, server-stream ×3 (one cancelled), client-stream, bidi, routed, unrouted, refused ×2
    t.equal(st.get('sluice_downstream_rq_total{protocol="grpc"}'), 12);
    t.equal(st.get('sluice_downstream_rq_total{protocol="http2"}'), 0, 'gRPC is not counted as plain http2');
    // counted by grpc-status, each charged to the class of its HTTP mapping (Envoy's), not as HTTP 200
    const g = (code: number) => st.get(`sluice_downstream_rq_grpc_status_total{grpc_status="${code}"}`) ?? 0;
    t.equal(g(grpc.status.OK), 6, 'unary ×2, server-stream, client-stream, bidi, routed');
    t.equal(g(grpc.status.NOT_FOUND), 1, 'the unary error');
    t.equal(g(grpc.status.RESOURCE_EXHAUSTED), 1, 'the server stream that failed');
    t.equal(g(grpc.status.CANCELLED), 1, 'the server stream the client cancelled');
    t.equal(g(grpc.status.UNIMPLEMENTED), 1, 'no route');
    t.equal(g(grpc.status.UNAVAILABLE), 2, 'upstream refused');
    t.equal(st.get('sluice_downstream_rq_xx_total{protocol="grpc",class="2xx"}'), 6, 'only the OK calls are 2xx');
    t.equal(st.get('sluice_downstream_rq_xx_total{protocol="grpc",class="4xx"}'), 3, 'NOT_FOUND 404, RESOURCE_EXHAUSTED 429, CANCELLED 499');
    t.equal(st.get('sluice_downstream_rq_xx_total{protocol="grpc",class="5xx"}'), 3, 'UNIMPLEMENTED 501, UNAVAILABLE 503 ×2');
    t.equal(st.get('sluice_upstream_rq_total{cluster="echo"}'), 9);
    t.equal(st.get('sluice_upstream_rq_xx_total{cluster="echo",class="2xx"}'), 6);
    t.equal(st.get('sluice_upstream_rq_xx_total{cluster="echo",class="4xx"}'), 3);
    t.equal(st.get('sluice_upstream_rq_active{cluster="echo"}'), 0);
    t.ok((st.get('sluice_upstream_cx_connect_fail_total{cluster="dead"}') ?? 0) >= 1);
    t.equal(st.get('sluice_downstream_rq_no_route_total{protocol="grpc"}'), 1);
  });
});

t.test('a gRPC upstream that dies mid-stream: the client sees an error status, never OK', async (t) => {
  const { Echo } = loadEcho();
  // a bare h2 server speaking gRPC framing: headers, one message, then the connection is gone
  const up = await h2Upstream((stream) => {
    stream.on('error', () => {});
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    const msg = Buffer.from([0x0a, 0x03, 0x6f, 0x6e, 0x65]); // EchoReply { message: "one" }
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
    stream.write(frame, () => setImmediate(() => stream.session?.destroy()));
  });
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'raw' }],
    clusters: [{ name: 'raw', endpoints: [`127.0.0.1:${up.port}`] }],
  });
  const c = new Echo(`127.0.0.1:${s.port('app')}`, grpc.credentials.createInsecure());
  t.teardown(async () => { c.close(); await s.stop(); await up.close(); });
  const call = c.ServerStream({ message: 'x', count: 5 }, deadline()) as grpc.ClientReadableStream<EchoReply>;
  const got: string[] = [];
  call.on('data', (m: EchoReply) => got.push(m.message));
  call.on('error', () => {});
  const st = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  t.same(got, ['one'], 'the message before the failure arrived');
  t.not(st.code, grpc.status.OK, `status ${st.code}: ${st.details}`);
  t.not(st.code, grpc.status.CANCELLED, 'not reported as if the client had cancelled');
  t.not(st.code, grpc.status.DEADLINE_EXCEEDED, 'not a hang');
});
