/**
 * Authorization end to end, with real clients of every protocol: curl (HTTP/1.1 and h2c), node's
 * http2 client, @grpc/grpc-js, a dubbo-remoting consumer, and raw sockets for what real clients
 * will not send. Source addresses differ by binding the client to another loopback address
 * (127.0.0.3, 127.0.0.9); gRPC goes through a byte relay bound to that address, since grpc-js
 * cannot choose its source address.
 *
 * Checked: what a denied request gets in each protocol's form; that nothing denied reaches an
 * upstream, whatever spelling, repetition or ordering carries it (normalised paths, header case,
 * repeated headers, Dubbo attachments against the service path, HTTP/1 pipelining after a denied
 * request, HTTP/2 streams after a denied one); that what is allowed is served; the counters by
 * rule; hot reload on a kept-alive connection; and shadow mode: the same traffic all served,
 * counted exactly as enforcing refused it.
 *
 * Principals are not set on plaintext connections: rules by principal, over mTLS from client
 * sidecars and direct mTLS clients, are in test/tls/authz-principals.test.ts.
 */
import * as grpc from '@grpc/grpc-js';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { adminPost, h2Upstream, httpUpstream, startSluice, stats, waitFor, withTestDefaults } from '../helpers/harness';
import { encodeRequest } from '../../src/protocols/dubbo';
import { Consumer, SERVICE, str } from './dubbo-peers';
import { curl, dubboVersioned, loadEcho } from './filter-peers';

const ADMIN_SERVICE = 'com.example.AdminService';

// ── upstreams that record what reached them ─────────────────────────────────

const h1Seen: string[] = [];
const h2Seen: string[] = [];
let grpcCalls = 0;

interface Peers {
  h1: number; h2: number; grpc: number; dubbo: { port: number; calls: number; close(): Promise<void> };
  close(): Promise<void>;
}

async function peers(): Promise<Peers> {
  const h1 = await httpUpstream((req, res) => {
    h1Seen.push(req.url ?? '');
    req.resume();
    req.on('end', () => { res.setHeader('content-length', 3); res.end('ok\n'); });
  });
  const h2 = await h2Upstream((stream, headers) => {
    h2Seen.push(String(headers[':path']));
    stream.resume();
    stream.on('end', () => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end('ok\n'); } });
  });
  const server = new grpc.Server();
  server.addService(loadEcho().service, {
    Unary(_call: unknown, cb: grpc.sendUnaryData<{ message: string; index: number; via: string }>) { grpcCalls++; cb(null, { message: 'ok', index: 0, via: '' }); },
  });
  const grpcPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  const dubbo = await dubboVersioned('d');
  return {
    h1: h1.port, h2: h2.port, grpc: grpcPort, dubbo,
    close: async () => { await h1.close(); await h2.close(); server.forceShutdown(); await dubbo.close(); },
  };
}

/** Rules in the order of the example: deny lists first, an allow list by address last. */
function rules(mode: 'enforce' | 'shadow') {
  return [
    { name: 'block-dot3', action: 'deny', sourceRanges: ['127.0.0.3'] },
    { name: 'no-admin', action: 'deny', path: { prefix: '/admin' } },
    { name: 'no-prod', action: 'deny', headers: { 'x-env': 'prod' } },
    { name: 'no-admin-service', action: 'deny', protocol: 'dubbo', service: ADMIN_SERVICE },
    { name: 'no-delete-all', action: 'deny', protocol: 'dubbo', method: 'deleteAll' },
    { name: 'loopback', action: 'allow', sourceRanges: ['127.0.0.0/29', '::1'] },
  ].map((r) => ({ ...r, mode }));
}
const RULES = ['block-dot3', 'no-admin', 'no-prod', 'no-admin-service', 'no-delete-all', 'loopback', 'default_allow', 'default_deny'];

function config(p: Peers, mode: 'enforce' | 'shadow', log: string, extra: Array<Record<string, unknown>> = []) {
  return {
    listeners: [{ name: 'app', address: '127.0.0.1:0' }],
    clusters: [
      { name: 'web1', endpoints: [`127.0.0.1:${p.h1}`] },
      { name: 'web2', endpoints: [`127.0.0.1:${p.h2}`] },
      { name: 'grpc', endpoints: [`127.0.0.1:${p.grpc}`] },
      { name: 'dubbo', endpoints: [`127.0.0.1:${p.dubbo.port}`] },
    ],
    routes: [
      { name: 'h1', match: { protocol: 'http1' }, action: { cluster: 'web1' } },
      { name: 'h2', match: { protocol: 'http2' }, action: { cluster: 'web2' } },
      { name: 'grpc', match: { protocol: 'grpc' }, action: { cluster: 'grpc' } },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { cluster: 'dubbo' } },
    ],
    authorization: [...extra, ...rules(mode)],
    accessLog: { enabled: true, path: log },
  };
}

// ── clients ─────────────────────────────────────────────────────────────────

/** A byte relay on 127.0.0.1 whose connections to Sluice come from `from`: for clients that cannot bind. */
async function relay(from: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const up = net.connect({ port, host: '127.0.0.1', localAddress: from });
    for (const s of [c, up]) { socks.add(s); s.on('close', () => socks.delete(s)); s.on('error', () => { c.destroy(); up.destroy(); }); }
    c.pipe(up);
    up.pipe(c);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => { for (const s of socks) s.destroy(); server.close(() => r()); }),
  };
}

interface GrpcResult { code: number; details: string; reason: string | undefined }

async function grpcCall(port: number, md: Record<string, string> = {}, from?: string): Promise<GrpcResult> {
  const r = from !== undefined ? await relay(from, port) : null;
  const Echo = loadEcho();
  const client = new Echo(`127.0.0.1:${r ? r.port : port}`, grpc.credentials.createInsecure());
  const meta = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) meta.set(k, v);
  try {
    return await new Promise<GrpcResult>((resolve) => {
      const call = client.Unary({ message: 'hi' }, meta, { deadline: Date.now() + 10_000 }, () => {}) as grpc.ClientUnaryCall;
      call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, reason: s.metadata.get('x-sluice-reason')[0] as string | undefined }));
    });
  } finally {
    client.close();
    await r?.close();
  }
}

/** A raw HTTP/1 connection from `from`; responses split by their framing (content-length). */
class RawH1 {
  private buf = '';
  closed = false;
  constructor(readonly s: net.Socket) {
    s.setEncoding('latin1');
    s.on('data', (d: string) => { this.buf += d; });
    s.on('error', () => {});
    s.on('close', () => { this.closed = true; });
  }
  static async open(port: number, from = '127.0.0.1'): Promise<RawH1> {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from });
    await once(s, 'connect');
    return new RawH1(s);
  }
  send(x: string): void { this.s.write(Buffer.from(x, 'latin1')); }
  /** The statuses of the complete responses so far. */
  statuses(): number[] {
    const out: number[] = [];
    let rest = this.buf;
    for (;;) {
      const end = rest.indexOf('\r\n\r\n');
      if (end < 0) break;
      const head = rest.slice(0, end);
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (rest.length < end + 4 + len) break;
      out.push(Number(head.slice(9, 12)));
      rest = rest.slice(end + 4 + len);
    }
    return out;
  }
  /** Waits for `n` responses, or for the connection to close. */
  async responses(n: number): Promise<number[]> {
    await waitFor(() => this.closed || this.statuses().length >= n, 5000, `${n} responses; got ${JSON.stringify(this.buf.slice(0, 300))}`);
    return this.statuses();
  }
  get text(): string { return this.buf; }
  destroy(): void { this.s.destroy(); }
}

async function rawOnce(port: number, request: string, from?: string): Promise<number> {
  const c = await RawH1.open(port, from);
  try {
    c.send(request);
    return (await c.responses(1))[0] ?? 0;
  } finally { c.destroy(); }
}

const get = (p: string, extra = '') => `GET ${p} HTTP/1.1\r\nhost: app.test\r\n${extra}\r\n`;

/** One request on its own HTTP/2 session (node's client), to see the status and x-sluice-reason. */
async function h2Request(port: number, headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number; reason: string | undefined; body: string }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  try {
    return await h2On(session, headers, body);
  } finally { session.close(); }
}

function h2On(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number; reason: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': body === undefined ? 'GET' : 'POST', ...headers }, { endStream: body === undefined });
    let status = 0;
    let reason: string | undefined;
    let text = '';
    req.setEncoding('utf8');
    req.on('response', (h) => { status = Number(h[':status']); reason = h['x-sluice-reason'] as string | undefined; });
    req.on('data', (d: string) => { text += d; });
    req.on('end', () => resolve({ status, reason, body: text }));
    req.on('error', reject);
    if (body !== undefined) req.end(body);
  });
}

// ── the run ─────────────────────────────────────────────────────────────────

t.test('authorization on every protocol', async (t) => {
  const p = await peers();
  const log = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-authz-')), 'access.log');
  const s = await startSluice(config(p, 'enforce', log));
  const port = s.port('app');
  const base = `http://127.0.0.1:${port}`;
  t.teardown(async () => { await s.stop(); await p.close(); });
  const counters = async () => {
    const st = await stats(s.admin);
    const out: Record<string, number> = {};
    for (const rule of RULES) {
      for (const k of ['allowed', 'denied', 'shadow_denied']) out[`${k} ${rule}`] = st.get(`sluice_authz_${k}_total{rule="${rule}"}`) ?? 0;
    }
    return out;
  };
  const delta = (a: Record<string, number>, b: Record<string, number>, kind: string) => {
    const out: Record<string, number> = {};
    for (const rule of RULES) { const d = b[`${kind} ${rule}`] - a[`${kind} ${rule}`]; if (d) out[rule] = d; }
    return out;
  };

  /**
   * The same traffic for enforce and shadow mode: per protocol, allowed, denied by a deny rule
   * (path, header, address) and outside the allow list (127.0.0.9). Returns what each client saw.
   */
  async function traffic(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const h1 = async (what: string, p: string, opts: { headers?: Record<string, string>; from?: string } = {}) => {
      const r = await curl(`${base}${p}`, opts);
      out[`h1 ${what}`] = `${r.status} ${r.headers['x-sluice-reason'] ?? ''}`.trim();
    };
    const h2 = async (what: string, p: string, opts: { headers?: Record<string, string>; from?: string } = {}) => {
      const r = await curl(`${base}${p}`, { ...opts, h2: true });
      out[`h2 ${what}`] = `${r.status} ${r.headers['x-sluice-reason'] ?? ''}`.trim();
    };
    for (const [f, name] of [[h1, 'h1'], [h2, 'h2']] as const) {
      void name;
      await f('allowed', '/ok');
      await f('from .2', '/ok', { from: '127.0.0.2' });
      await f('path', '/admin/users');
      await f('header', '/ok', { headers: { 'X-Env': 'prod' } });
      await f('from .3', '/ok', { from: '127.0.0.3' });
      await f('from .9', '/ok', { from: '127.0.0.9' });
    }
    const g = async (what: string, md: Record<string, string>, from?: string) => {
      const r = await grpcCall(port, md, from);
      out[`grpc ${what}`] = `${r.code} ${r.reason ?? ''}`.trim();
    };
    await g('allowed', {});
    await g('from .2', {}, '127.0.0.2');
    await g('header', { 'x-env': 'prod' });
    await g('from .3', {}, '127.0.0.3');
    await g('from .9', {}, '127.0.0.9');
    const d = async (what: string, from: string, method = 'transfer', props: Record<string, string> = {}, service?: string) => {
      const c = await Consumer.connect(port, { from });
      try {
        const a = await c.call(method, [str('x')], props, 10_000, service === undefined ? undefined : `${service}:1.0.0`);
        out[`dubbo ${what}`] = a.status === 20 ? '20' : `${a.status} ${a.error ?? ''}`;
      } finally { c.close(); }
    };
    await d('allowed', '127.0.0.1');
    await d('from .2', '127.0.0.2');
    await d('attachment', '127.0.0.1', 'transfer', { 'x-env': 'prod' });
    await d('service', '127.0.0.1', 'transfer', {}, ADMIN_SERVICE);
    await d('from .3', '127.0.0.3');
    await d('from .9', '127.0.0.9');
    return out;
  }

  let enforcedDenials: Record<string, number> = {};

  await t.test('enforce: each protocol refuses in its own form, serves the rest, counts by rule', async (t) => {
    const before = await counters();
    const reached = { h1: h1Seen.length, h2: h2Seen.length, grpc: grpcCalls, dubbo: p.dubbo.calls };
    const out = await traffic();
    const dubboDenied = /^70 .*sluice: denied: access denied/;
    t.match(out, {
      'h1 allowed': '200', 'h1 from .2': '200', 'h1 path': '403 denied', 'h1 header': '403 denied', 'h1 from .3': '403 denied', 'h1 from .9': '403 denied',
      'h2 allowed': '200', 'h2 from .2': '200', 'h2 path': '403 denied', 'h2 header': '403 denied', 'h2 from .3': '403 denied', 'h2 from .9': '403 denied',
      'grpc allowed': '0', 'grpc from .2': '0', 'grpc header': '7 denied', 'grpc from .3': '7 denied', 'grpc from .9': '7 denied',
      'dubbo allowed': '20', 'dubbo from .2': '20', 'dubbo attachment': dubboDenied, 'dubbo service': dubboDenied, 'dubbo from .3': dubboDenied, 'dubbo from .9': dubboDenied,
    });
    t.same({ h1: h1Seen.length - reached.h1, h2: h2Seen.length - reached.h2, grpc: grpcCalls - reached.grpc, dubbo: p.dubbo.calls - reached.dubbo },
      { h1: 2, h2: 2, grpc: 2, dubbo: 2 }, 'only the allowed requests reached the upstreams');
    const after = await counters();
    enforcedDenials = delta(before, after, 'denied');
    t.same(enforcedDenials, { 'block-dot3': 4, 'no-admin': 2, 'no-prod': 4, 'no-admin-service': 1, default_deny: 4 });
    t.same(delta(before, after, 'allowed'), { loopback: 8 });
    t.same(delta(before, after, 'shadow_denied'), {});
  });

  await t.test('a denied HTTP/1 request: the 403 body and the access log line', async (t) => {
    const r = await curl(`${base}/admin`);
    t.equal(r.status, 403);
    t.equal(r.body, 'access denied\n', 'no rule name for the caller');
    const rec = await waitFor(() => {
      if (!existsSync(log)) return null;
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      return lines.find((l) => l.path === '/admin' && l.protocol === 'http1') ?? null;
    }, 10_000, 'the access log line');
    t.match(rec, { status: 403, reason: 'denied', authz: 'denied', authzRule: 'no-admin', route: 'h1' });
    t.notOk('upstream' in rec, 'no upstream was chosen');
    const g = await grpcCall(port, { 'x-env': 'prod' });
    t.same([g.code, g.details], [grpc.status.PERMISSION_DENIED, 'access denied'], 'gRPC: the status and its message');
  });

  await t.test('HTTP/1: spellings of /admin, header case and repetition, absolute form', async (t) => {
    const before = h1Seen.length;
    const attempts: Array<[string, string]> = [
      ['dot segment', get('/./admin')],
      ['double slash', get('//admin')],
      ['encoded letter', get('/%61dmin')],
      ['dot-dot', get('/ok/../admin')],
      ['encoded dot segment', get('/%2e/admin')],
      ['encoded slash', get('/ok%2f..%2fadmin')],
      ['backslash escape', get('/ok%5c..%5cadmin')],
      ['absolute form', 'GET http://app.test/admin HTTP/1.1\r\nhost: app.test\r\n\r\n'],
      ['absolute form, dot segment', 'GET http://app.test/x/../admin HTTP/1.1\r\nhost: app.test\r\n\r\n'],
      ['header name in capitals', get('/ok', 'X-ENV: prod\r\n')],
      ['header value with white space around', get('/ok', 'x-env: \t prod \t\r\n')],
      ['header repeated, the second prod', get('/ok', 'x-env: dev\r\nx-env: prod\r\n')],
      ['header repeated, the first prod', get('/ok', 'x-env: prod\r\nX-Env: dev\r\n')],
      ['header as a list in one line', get('/ok', 'x-env: dev, prod\r\n')],
    ];
    for (const [what, req] of attempts) {
      const status = await rawOnce(port, req);
      t.ok(status === 403 || status === 400, `${what}: ${status}`);
    }
    // a request head that arrives a few bytes at a time is decided when it is whole, not before
    const slow = await RawH1.open(port);
    const head = get('/admin/slow', 'x-other: 1\r\n');
    for (let i = 0; i < head.length; i += 3) { slow.send(head.slice(i, i + 3)); await new Promise((r) => setTimeout(r, 2)); }
    t.same(await slow.responses(1), [403], 'slow bytes: denied');
    slow.destroy();
    t.same(h1Seen.slice(before), [], 'the upstream saw none of them');
    t.equal(await rawOnce(port, get('/public/admin')), 200, 'a path that only contains admin is served');
    t.equal(await rawOnce(port, get('/ok', 'x-env: production\r\n')), 200, 'exact means exact');
  });

  await t.test('HTTP/1 pipelining: requests after a denied one get their own decision', async (t) => {
    const before = h1Seen.length;
    const c = await RawH1.open(port);
    t.teardown(() => c.destroy());
    c.send([get('/admin'), get('/ok?1'), get('/ok?2', 'x-env: prod\r\n'), get('/ok?3'), get('/admin/x'), get('/ok?4')].join(''));
    t.same(await c.responses(6), [403, 200, 403, 200, 403, 200], 'each answered, in order');
    t.same(h1Seen.slice(before), ['/ok?1', '/ok?3', '/ok?4'], 'only the allowed ones reached the upstream, each once');
    t.notOk(c.closed, 'the connection serves on');
  });

  await t.test('HTTP/1 pipelining: the body of a denied request is never read as requests', async (t) => {
    const before = h1Seen.length;
    const smuggled = get('/admin/smuggled');
    const chunk = (b: string) => `${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
    for (const [what, req] of [
      ['content-length', `POST /admin HTTP/1.1\r\nhost: app.test\r\ncontent-length: ${smuggled.length}\r\n\r\n${smuggled}`],
      ['chunked', `POST /admin HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n${chunk(smuggled)}`],
    ] as const) {
      const c = await RawH1.open(port);
      c.send(req + get('/ok?after'));
      const statuses = await c.responses(2);
      // the 403 says connection: close and the connection ends: the request after it was never read
      t.equal(statuses[0], 403, `${what}: denied`);
      t.match(c.text, /\r\nconnection: close\r\n/i, `${what}: the client is told the connection ends`);
      await waitFor(() => c.closed, 5000, 'the close');
      t.same(statuses, [403], `${what}: nothing else answered`);
      c.destroy();
    }
    t.same(h1Seen.slice(before), [], 'the upstream saw neither the smuggled request nor the one after');
  });

  await t.test('HTTP/2: streams after a denied one, on one session; spellings; repeated fields', async (t) => {
    const before = h2Seen.length;
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    t.teardown(() => session.close());
    const seq = [];
    seq.push(await h2On(session, { ':path': '/admin' }));
    seq.push(await h2On(session, { ':path': '/ok?1' }));
    seq.push(await h2On(session, { ':path': '/admin' }, 'a body that keeps coming after the 403'));
    seq.push(await h2On(session, { ':path': '/ok?2' }));
    t.same(seq.map((r) => `${r.status} ${r.reason ?? ''}`.trim()), ['403 denied', '200', '403 denied', '200']);
    // interleaved: 40 streams at once, every other one denied
    const many = await Promise.all(Array.from({ length: 40 }, (_, i) => h2On(session, { ':path': i % 2 ? `/ok?m${i}` : `/admin/m${i}` })));
    t.same(many.map((r) => r.status), Array.from({ length: 40 }, (_, i) => (i % 2 ? 200 : 403)));
    for (const [what, headers] of [
      ['dot segment', { ':path': '/./admin' }],
      ['double slash', { ':path': '//admin' }],
      ['encoded letter', { ':path': '/%61dmin' }],
      ['dot-dot', { ':path': '/ok/../admin' }],
      ['repeated field', { ':path': '/ok', 'x-env': ['dev', 'prod'] }],
      ['field in capitals is lower case on the wire', { ':path': '/ok', 'X-Env': 'prod' }],
    ] as const) {
      const r = await h2On(session, headers as http2.OutgoingHttpHeaders);
      t.ok(r.status === 403 || r.status === 400, `${what}: ${r.status}`);
    }
    const served = h2Seen.slice(before);
    t.equal(served.length, 22, 'the 2 + 20 allowed streams, no other');
    t.ok(served.every((u) => u.startsWith('/ok?')), 'none denied');
    const after = await h2Request(port, { ':path': '/ok?after' });
    t.equal(after.status, 200, 'a new session is served too');
  });

  await t.test('Dubbo: one connection, denied and allowed calls in turn; the path attachment cannot stand for another service', async (t) => {
    const c = await Consumer.connect(port);
    t.teardown(() => c.close());
    const calls = p.dubbo.calls;
    const results = [
      await c.call('transfer', [str('a')], { 'x-env': 'prod' }),
      await c.call('transfer', [str('b')]),
      await c.call('transfer', [str('c')], {}, 10_000, `${ADMIN_SERVICE}:1.0.0`),
      await c.call('transfer', [str('d')]),
    ];
    t.same(results.map((r) => r.status), [70, 20, 70, 20]);
    t.equal(p.dubbo.calls - calls, 2, 'the provider ran the two allowed calls');
    // a provider dispatches on the path attachment over the service path before the arguments
    // dubbo-remoting writes the path attachment itself: this call is written by Sluice's own encoder
    const sneaky = await c.callRaw(encodeRequest({ id: 77, service: SERVICE, method: 'transfer', attachments: { path: ADMIN_SERVICE } }), 77);
    t.equal(sneaky.status, 40, 'a call naming two services is refused');
    t.equal(p.dubbo.calls - calls, 2, 'and never reaches the provider');
    // a generic call ($invoke) names the method it runs in its first argument
    const generic = await c.callRaw(encodeRequest({
      id: 78, service: SERVICE, method: '$invoke', paramTypes: 'Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;',
      args: [{ $class: 'java.lang.String', $: 'deleteAll' }, { $class: '[java.lang.String', $: [] }, { $class: '[java.lang.Object', $: [] }] as never,
    }), 78);
    t.equal(generic.status, 70, 'a generic call of a denied method is denied');
    t.equal(p.dubbo.calls - calls, 2, 'and never reaches the provider');
    t.equal((await stats(s.admin)).get('sluice_authz_denied_total{rule="no-delete-all"}'), 1);
    const concurrent = await Promise.all(Array.from({ length: 20 }, (_, i) => c.call('transfer', [str(`m${i}`)], i % 2 ? {} : { 'x-env': 'prod' })));
    t.same(concurrent.map((r) => r.status), Array.from({ length: 20 }, (_, i) => (i % 2 ? 20 : 70)), 'multiplexed: each call its own answer');
    t.equal(p.dubbo.calls - calls, 12);
  });

  await t.test('hot reload: a kept-alive connection meets the new rules at its next request', async (t) => {
    const c = await RawH1.open(port);
    t.teardown(() => c.destroy());
    c.send(get('/ok?before'));
    t.same(await c.responses(1), [200]);
    const reloads = (await stats(s.admin)).get('sluice_config_reload_total') ?? 0;
    const next = withTestDefaults(config(p, 'enforce', log, [{ name: 'no-ok', action: 'deny', path: { prefix: '/ok' } }]));
    const r = await adminPost(s.admin, '/config', JSON.stringify(next));
    t.equal(r.status, 200, r.body);
    await waitFor(async () => (await stats(s.admin)).get('sluice_config_reload_total') === reloads + 1, 10_000, 'the reload');
    c.send(get('/ok?after'));
    t.same(await c.responses(2), [200, 403], 'the same connection, the new rule');
    t.equal((await stats(s.admin)).get('sluice_authz_denied_total{rule="no-ok"}'), 1);
    const bad = await adminPost(s.admin, '/config', JSON.stringify(withTestDefaults({ ...config(p, 'enforce', log), authorization: [{ action: 'deny', sourceRanges: ['10.0.0.1/8'] }] })));
    t.equal(bad.status, 400, 'a bad range is refused');
    t.match(bad.body, /authorization\/0\/sourceRanges\/0/);
    c.send(get('/ok?still'));
    t.same(await c.responses(3), [200, 403, 403], 'and the last good rules serve on');
    const back = await adminPost(s.admin, '/config', JSON.stringify(withTestDefaults(config(p, 'enforce', log))));
    t.equal(back.status, 200);
    await waitFor(async () => (await stats(s.admin)).get('sluice_config_reload_total') === reloads + 2, 10_000, 'the reload back');
    c.send(get('/ok?back'));
    t.same(await c.responses(4), [200, 403, 403, 200]);
  });

  await t.test('shadow: the same traffic is all served, and counted as enforcing refused it', async (t) => {
    const reloads = (await stats(s.admin)).get('sluice_config_reload_total') ?? 0;
    const r = await adminPost(s.admin, '/config', JSON.stringify(withTestDefaults(config(p, 'shadow', log))));
    t.equal(r.status, 200, r.body);
    await waitFor(async () => (await stats(s.admin)).get('sluice_config_reload_total') === reloads + 1, 10_000, 'the reload');
    const before = await counters();
    const reached = { h1: h1Seen.length, h2: h2Seen.length, grpc: grpcCalls, dubbo: p.dubbo.calls };
    const out = await traffic();
    for (const [what, got] of Object.entries(out)) {
      const ok = what.startsWith('h') ? '200' : what.startsWith('grpc') ? '0' : '20';
      t.equal(got, ok, `${what}: served`);
    }
    t.same({ h1: h1Seen.length - reached.h1, h2: h2Seen.length - reached.h2, grpc: grpcCalls - reached.grpc, dubbo: p.dubbo.calls - reached.dubbo },
      { h1: 6, h2: 6, grpc: 5, dubbo: 6 }, 'every request reached its upstream');
    const after = await counters();
    t.same(delta(before, after, 'shadow_denied'), enforcedDenials, 'shadow-denied by rule = denied by rule when enforced');
    t.same(delta(before, after, 'denied'), {});
    t.same(delta(before, after, 'allowed'), { default_allow: 23 }, 'every request allowed; no allow rule is enforced');
    const noted = await waitFor(() => {
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const shadowed = lines.filter((l) => l.authz === 'shadow_denied');
      return shadowed.length >= 15 ? shadowed : null;
    }, 10_000, 'the shadow-denied access log lines');
    t.equal(noted.length, 15, 'one line per shadow-denied request');
    t.ok(noted.every((l) => l.status === 200 || l.status === 20 || (l.protocol === 'grpc' && l.status === 200)), 'each served by its upstream');
    t.same([...new Set(noted.map((l) => l.authzRule))].sort(), Object.keys(enforcedDenials).sort());
  });
});

t.test('a listener bound to ::1: IPv6 sources meet IPv6 ranges', async (t: Test) => {
  const up = await httpUpstream((req, res) => { req.resume(); req.on('end', () => { res.setHeader('content-length', 3); res.end('ok\n'); }); });
  const s = await startSluice({
    listeners: [{ name: 'v6', address: '[::1]:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    authorization: [{ name: 'v6-loopback', action: 'deny', sourceRanges: ['::1/128'] }],
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const r = await curl(`http://[::1]:${s.port('v6')}/x`);
  t.equal(r.status, 403);
  t.equal((await stats(s.admin)).get('sluice_authz_denied_total{rule="v6-loopback"}'), 1);
});
