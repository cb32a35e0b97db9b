/**
 * Peers for the filter integration tests: upstreams of every protocol that say which version
 * answered and what request headers (metadata, attachments) they saw, and the clients that drive
 * them (curl for HTTP/1 and HTTP/2, @grpc/grpc-js, a dubbo-remoting consumer).
 *
 * Every upstream answers with the response headers `x-up: <version>` and `x-remove-me: please`
 * (gRPC: initial metadata; Dubbo: response attachments, to consumers that read them), so that
 * response edits can be seen adding and removing.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { encodeResponse } from '../../src/protocols/dubbo';
import { h2Upstream, httpUpstream, ROOT, run, type Upstream } from '../helpers/harness';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const protocol: any = require('dubbo-remoting/lib/protocol');

/** What an HTTP upstream answers: its version and the request headers it got. */
export interface Seen { version: string; headers: Record<string, string | string[] | undefined> }

const UP_HEADERS = (version: string): Record<string, string> => ({ 'x-up': version, 'x-remove-me': 'please' });

/** An upstream that counts the requests it answered, in all and by the caller's x-user. */
export type Versioned = Upstream & { requests: number; users: Map<string, number> };

function counting(up: Upstream, tally: { requests: number; users: Map<string, number> }): Versioned {
  Object.defineProperty(up, 'requests', { get: () => tally.requests });
  return Object.assign(up, { users: tally.users }) as Versioned;
}

export async function http1Versioned(version: string): Promise<Versioned> {
  const tally = { requests: 0, users: new Map<string, number>() };
  const up = await httpUpstream((req, res) => {
    tally.requests++;
    const user = req.headers['x-user'];
    if (typeof user === 'string') tally.users.set(user, (tally.users.get(user) ?? 0) + 1);
    req.resume();
    req.on('end', () => {
      for (const [k, v] of Object.entries(UP_HEADERS(version))) res.setHeader(k, v);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ version, headers: req.headers } satisfies Seen));
    });
  });
  return counting(up, tally);
}

export async function h2Versioned(version: string): Promise<Versioned> {
  const tally = { requests: 0, users: new Map<string, number>() };
  const up = await h2Upstream((stream, headers) => {
    tally.requests++;
    const user = headers['x-user'];
    if (typeof user === 'string') tally.users.set(user, (tally.users.get(user) ?? 0) + 1);
    stream.resume();
    stream.on('end', () => {
      if (stream.destroyed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/json', ...UP_HEADERS(version) });
      const h: Record<string, string | string[] | undefined> = {};
      for (const [k, v] of Object.entries(headers)) if (!k.startsWith(':')) h[k] = v as string;
      stream.end(JSON.stringify({ version, headers: h } satisfies Seen));
    });
  });
  return counting(up, tally);
}

export interface CurlResult { code: number | null; status: number; headers: Record<string, string>; body: string; ms: number }

/**
 * curl (HTTP/1.1, or h2c prior knowledge), status, response headers (lower case) and body. One
 * request per call: curl 7.88 fails every request after the first on a reused prior-knowledge
 * connection (error 16), against any HTTP/2 server; many HTTP/2 requests go through h2load.
 */
export async function curl(url: string, opts: { h2?: boolean; headers?: Record<string, string>; maxTime?: number; from?: string } = {}): Promise<CurlResult> {
  const args = ['-sS', '-D', '-', ...(opts.h2 ? ['--http2-prior-knowledge'] : ['--http1.1'])];
  // `from`: the source address of the connection (a loopback address other than 127.0.0.1, say)
  if (opts.from !== undefined) args.push('--interface', opts.from);
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
  if (opts.maxTime !== undefined) args.push('--max-time', String(opts.maxTime));
  args.push(url);
  const t0 = performance.now();
  const r = await run('curl', args);
  const ms = performance.now() - t0;
  const cut = r.stdout.indexOf('\r\n\r\n');
  const head = cut >= 0 ? r.stdout.slice(0, cut) : '';
  const lines = head.split('\r\n');
  const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { code: r.code, status, headers, body: cut >= 0 ? r.stdout.slice(cut + 4) : '', ms };
}

// ── gRPC ──────────────────────────────────────────────────────────────────────

interface EchoRequest { message: string; count: number; failCode: number }
interface EchoReply { message: string; index: number; via: string }
type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, Function>;

export function loadEcho(): Ctor & { service: grpc.ServiceDefinition } {
  const def = protoLoader.loadSync(path.join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: false, longs: Number, defaults: true });
  return (grpc.loadPackageDefinition(def) as any).sluice.test.Echo;
}

/**
 * A gRPC Echo server whose Unary answers `<version>|<metadata it got, as JSON>`, with initial
 * metadata x-up and x-remove-me.
 */
export async function grpcVersioned(version: string): Promise<{ port: number; close(): void }> {
  const server = new grpc.Server();
  server.addService(loadEcho().service, {
    Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(UP_HEADERS(version))) md.set(k, v);
      call.sendMetadata(md);
      cb(null, { message: `${version}|${JSON.stringify(call.metadata.getMap())}`, index: 0, via: '' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return { port, close: () => server.forceShutdown() };
}

export interface UnaryResult {
  err: grpc.ServiceError | null;
  version: string | undefined;
  /** The metadata the server saw. */
  seen: Record<string, unknown> | undefined;
  headers: grpc.Metadata | null;
  status: grpc.StatusObject;
  ms: number;
}

export function unary(client: grpc.Client & Record<string, Function>, md: Record<string, string> = {}): Promise<UnaryResult> {
  const meta = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) meta.set(k, v);
  const t0 = performance.now();
  return new Promise((resolve) => {
    let headers: grpc.Metadata | null = null;
    let status: grpc.StatusObject | null = null;
    let result: { err: grpc.ServiceError | null; reply?: EchoReply } | null = null;
    const done = () => {
      if (!result || !status) return;
      const msg = result.reply?.message;
      const bar = msg ? msg.indexOf('|') : -1;
      resolve({
        err: result.err, version: bar > 0 ? msg!.slice(0, bar) : undefined, seen: bar > 0 ? JSON.parse(msg!.slice(bar + 1)) : undefined,
        headers, status, ms: performance.now() - t0,
      });
    };
    const call = client.Unary({ message: 'hi' }, meta, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, reply?: EchoReply) => { result = { err, reply }; done(); }) as grpc.ClientUnaryCall;
    call.on('metadata', (m) => { headers = m; });
    call.on('status', (s) => { status = s; done(); });
  });
}

// ── Dubbo ─────────────────────────────────────────────────────────────────────

/** A Dubbo call as a provider below sees it: its id and what dubbo-remoting decoded. */
export interface ProviderCall { id: { idHi: number; idLo: number }; method: string; props: Record<string, string> }

/**
 * A Dubbo provider: frames split here, calls decoded by dubbo-remoting (an independent codec),
 * heartbeats answered, each call answered with the frame `answer` returns.
 */
export async function dubboProvider(answer: (call: ProviderCall) => Buffer): Promise<{ port: number; calls: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const state = { calls: 0 };
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
        const frame = buf.subarray(0, 16 + buf.readUInt32BE(12));
        buf = buf.subarray(frame.length);
        const id = { idHi: frame.readUInt32BE(4), idLo: frame.readUInt32BE(8) };
        if ((frame[2] & 0x20) !== 0) { // heartbeat
          if ((frame[2] & 0x40) !== 0) sock.write(Buffer.concat([Buffer.from([0xda, 0xbb, 0x22, 20]), frame.subarray(4, 12), Buffer.from([0, 0, 0, 1, 0x4e])]));
          continue;
        }
        const msg = protocol.decode(frame, {});
        if (msg.packetType !== 'request') continue;
        state.calls++;
        sock.write(answer({ id, method: msg.data.methodName, props: msg.data.requestProps ?? {} }));
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    get calls() { return state.calls; },
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

/**
 * A Dubbo provider answering `<version>:<method>:<attachments it got, as JSON>`. To consumers of a
 * dubbo version that reads response attachments (2.0.2 .. 2.0.99) the answer carries x-up and
 * x-remove-me.
 */
export function dubboVersioned(version: string): Promise<{ port: number; calls: number; close(): Promise<void> }> {
  return dubboProvider(({ id, method, props }) => encodeResponse({
    id, value: `${version}:${method}:${JSON.stringify(props)}`, attachments: UP_HEADERS(version), requestDubboVersion: props.dubbo,
  }));
}

/** A Dubbo answer as the provider above writes it. */
export function parseDubbo(value: unknown): { version: string; method: string; attachments: Record<string, string> } | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^([^:]+):([^:]+):(.*)$/.exec(value);
  return m ? { version: m[1], method: m[2], attachments: JSON.parse(m[3]) } : undefined;
}
