/**
 * The mirror filter with real clients and real upstreams: a copy of each matching request (or a
 * share of them) reaches the mirror cluster with its body, the client gets the primary's answer,
 * and a mirror that never reads or never answers costs the request nothing but a dropped copy;
 * for HTTP/1.1 (curl), HTTP/2 (curl), gRPC (@grpc/grpc-js) and Dubbo (dubbo-remoting).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import t from 'tap';
import { httpUpstream, ROOT, run, startSluice, stats, waitFor, type RunningSluice, type Upstream } from '../../helpers/harness';
import { Consumer, rawProvider, str, waitEvent, type Provider } from '../../integration/dubbo-peers';

interface Seen { method: string; url: string; body: string }
const primarySeen: Seen[] = [];
const shadowSeen: Seen[] = [];
const shadowGrpc: string[] = [];
let stuckConnections = 0;

function recorder(into: Seen[], answer: string): http.RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      into.push({ method: req.method ?? '', url: req.url ?? '', body: Buffer.concat(chunks).toString('latin1') });
      res.setHeader('content-length', answer.length);
      res.end(answer);
    });
  };
}

const PROTO = path.join(ROOT, 'test', 'fixtures', 'echo.proto');
type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, Function>;
function echo(): Ctor & { service: grpc.ServiceDefinition } {
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, defaults: true });
  return (grpc.loadPackageDefinition(def) as unknown as { sluice: { test: { Echo: Ctor & { service: grpc.ServiceDefinition } } } }).sluice.test.Echo;
}
async function grpcServer(tag: string, record?: string[]): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(echo().service, {
    Unary(call: grpc.ServerUnaryCall<{ message: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      record?.push(call.request.message);
      cb(null, { message: `${tag}:${call.request.message}`, index: 0, via: '' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { server, port };
}

const ups: Upstream[] = [];
let stuck: net.Server;
let grpcs: grpc.Server[] = [];
let primary: Provider;
let shadow: Provider;
let s: RunningSluice;

t.before(async () => {
  const p = await httpUpstream(recorder(primarySeen, 'primary\n'));
  const m = await httpUpstream(recorder(shadowSeen, 'shadow\n'));
  ups.push(p, m);
  // a mirror that accepts connections and then never reads nor answers
  stuck = net.createServer((sock) => { stuckConnections++; sock.on('error', () => {}); sock.pause(); });
  stuck.listen(0, '127.0.0.1');
  await once(stuck, 'listening');
  const g1 = await grpcServer('primary');
  const g2 = await grpcServer('shadow', shadowGrpc);
  grpcs = [g1.server, g2.server];
  primary = await rawProvider();
  shadow = await rawProvider();
  const ep = (port: number) => `127.0.0.1:${port}`;
  s = await startSluice({
    listeners: [
      { name: 'web', address: '127.0.0.1:0', cluster: 'primary' },
      { name: 'grpc', address: '127.0.0.1:0', cluster: 'grpc-primary' },
      { name: 'rpc', address: '127.0.0.1:0', cluster: 'providers' },
    ],
    routes: [
      { name: 'all', match: { path: { prefix: '/all' } }, action: { cluster: 'primary' }, mirror: { cluster: 'shadow' } },
      { name: 'half', match: { path: { prefix: '/half' } }, action: { cluster: 'primary' }, mirror: { cluster: 'shadow', percent: 50 } },
      { name: 'none', match: { path: { prefix: '/none' } }, action: { cluster: 'primary' }, mirror: { cluster: 'shadow', percent: 0 } },
      { name: 'stuck', match: { path: { prefix: '/stuck' } }, action: { cluster: 'primary' }, mirror: { cluster: 'stuck' } },
      { name: 'grpc', match: { listener: 'grpc' }, action: { cluster: 'grpc-primary' }, mirror: { cluster: 'grpc-shadow' } },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { cluster: 'providers' }, mirror: { cluster: 'dubbo-shadow' } },
    ],
    clusters: [
      { name: 'primary', protocol: 'http1', endpoints: [ep(p.port)] },
      { name: 'shadow', protocol: 'http1', endpoints: [ep(m.port)] },
      { name: 'stuck', protocol: 'http1', endpoints: [ep((stuck.address() as AddressInfo).port)] },
      { name: 'grpc-primary', protocol: 'http2', endpoints: [ep(g1.port)] },
      { name: 'grpc-shadow', protocol: 'http2', endpoints: [ep(g2.port)] },
      { name: 'providers', endpoints: [ep(primary.port)] },
      { name: 'dubbo-shadow', endpoints: [ep(shadow.port)] },
    ],
    http: { requestTimeoutMs: 3000 },
  });
});

t.teardown(async () => {
  await s?.stop();
  for (const u of ups) await u.close();
  stuck?.close();
  for (const g of grpcs) g.forceShutdown();
  await primary?.close();
  await shadow?.close();
});

const stat = async (name: string) => (await stats(s.admin)).get(name) ?? 0;

t.test('HTTP/1.1: the copy carries the method, path and body; the client gets the primary answer', async (t) => {
  const n = shadowSeen.length;
  const get = await run('curl', ['-sS', `http://127.0.0.1:${s.port('web')}/all/get`]);
  t.equal(get.stdout, 'primary\n');
  const post = await run('curl', ['-sS', '--data-binary', 'hello mirror', `http://127.0.0.1:${s.port('web')}/all/post`]);
  t.equal(post.stdout, 'primary\n');
  await waitFor(() => shadowSeen.length >= n + 2, 5000, 'two copies at the mirror');
  t.same(shadowSeen.slice(n), [
    { method: 'GET', url: '/all/get', body: '' },
    { method: 'POST', url: '/all/post', body: 'hello mirror' },
  ]);
  t.equal(await stat('sluice_mirror_rq_total{cluster="shadow"}'), 2);
});

t.test('HTTP/2 client: mirrored too', async (t) => {
  const n = shadowSeen.length;
  const r = await run('curl', ['-sS', '--http2-prior-knowledge', '--data-binary', 'over h2', `http://127.0.0.1:${s.port('web')}/all/h2`]);
  t.equal(r.stdout, 'primary\n');
  await waitFor(() => shadowSeen.length > n, 5000, 'the copy');
  t.same(shadowSeen[n], { method: 'POST', url: '/all/h2', body: 'over h2' });
});

t.test('percent: a share of the requests, none at 0', async (t) => {
  const n = shadowSeen.length;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const get = (p: string) => new Promise<void>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: s.port('web'), path: p, agent }, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject);
  });
  for (let i = 0; i < 20; i++) await get('/none');
  for (let i = 0; i < 200; i++) await get('/half');
  await waitFor(async () => (await stat('sluice_mirror_rq_total{cluster="shadow"}')) > 0, 2000, 'stats');
  await new Promise((r) => setTimeout(r, 200));
  const copies = shadowSeen.slice(n);
  t.equal(copies.filter((c) => c.url === '/none').length, 0, 'percent 0: no copy');
  const half = copies.filter((c) => c.url === '/half').length;
  t.ok(half >= 60 && half <= 140, `percent 50: ${half} of 200 copied`);
});

t.test('a mirror that never reads nor answers: the request is not held, the copy is dropped', async (t) => {
  const before = await stat('sluice_mirror_rq_dropped_total{cluster="stuck"}');
  const body = Buffer.alloc(2 << 20, 'x');
  const n = primarySeen.length;
  // a body larger than the mirror may hold: the copy is given up, the request goes on
  const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: s.port('web'), method: 'POST', path: '/stuck/big', agent: false, headers: { 'content-length': body.length } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('error', reject);
    req.end(body);
  });
  t.same(r, { status: 200, body: 'primary\n' });
  t.equal(primarySeen[n]?.body.length, body.length, 'the primary got the whole body');
  t.ok(stuckConnections > 0, 'the mirror was dialled');
  await waitFor(async () => (await stat('sluice_mirror_rq_dropped_total{cluster="stuck"}')) > before, 5000, 'the dropped copy counted');
  // a small request: the copy waits on the mirror until the route timeout, the request does not
  const small = await run('curl', ['-sS', '-m', '2', `http://127.0.0.1:${s.port('web')}/stuck/small`]);
  t.equal(small.stdout, 'primary\n', 'answered while the mirror says nothing');
});

t.test('gRPC: the call is mirrored, the client gets the primary answer', async (t) => {
  const Echo = echo();
  const client = new Echo(`127.0.0.1:${s.port('grpc')}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const res = await new Promise<{ message?: string }>((resolve, reject) => {
    client.Unary({ message: 'twice' }, (err: grpc.ServiceError | null, r: { message?: string }) => (err ? reject(err) : resolve(r)));
  });
  t.equal(res.message, 'primary:twice');
  await waitFor(() => shadowGrpc.includes('twice'), 5000, 'the copy at the gRPC mirror');
  t.pass('mirrored');
});

t.test('Dubbo: the call frame is mirrored, the consumer gets the primary answer', async (t) => {
  const c = await Consumer.connect(s.port('rpc'));
  t.teardown(() => c.close());
  const copied = waitEvent(shadow.events, 'call', 5000, (_conn: unknown, m: string) => m === 'greet');
  const a = await c.call('greet', [str('bob')]);
  t.match(a, { status: 20, value: /^0:greet:bob$/ }, 'from the primary provider');
  await copied;
  t.equal(shadow.conns[0].calls.filter((m) => m === 'greet').length, 1, 'one copy at the mirror provider');
  t.equal(primary.conns[0].calls.filter((m) => m === 'greet').length, 1, 'one call at the primary');
});
