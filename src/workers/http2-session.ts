/**
 * Downstream HTTP/2 (h2c prior knowledge, gRPC included). Node's HTTP/2 stack
 * does the framing; each stream runs through the filter chain and goes to an
 * upstream HTTP/2 session (the default: captured HTTP/2 stays HTTP/2) or, for
 * clusters that say `protocol: http1`, to an HTTP/1.1 connection.
 *
 *   stream ─▶ filter chain ─▶ Http2Pool session.request() ─▶ upstream (h2)
 *                        └──▶ Http1Pool connection ─────────▶ upstream (h1)
 *
 * Trailers (gRPC status) are carried end to end; resets are passed on as resets
 * in both directions, so a cut-off response or upload is never mistaken for a
 * complete one. Requests that surely never reached an upstream (it could not be
 * connected, or it refused the stream) are tried again, up to MAX_ATTEMPTS.
 *
 * This is the hot path, and Node's HTTP/2 streams cost far more than our code.
 * Each exchange adds as little as it can: stream listeners are module-level
 * functions that find their exchange through a symbol on the stream (no
 * closures per stream), header objects are forwarded without copies (Node
 * copies them anyway), trailers are waited for only when they can come, idle
 * connections are found by a sweep instead of Node's per-frame session timer,
 * and Node 20's costly AsyncResource#bind() is replaced (see below).
 */
import { AsyncResource } from 'node:async_hooks';
import http2 from 'node:http2';
import type net from 'node:net';
import { Readable, addAbortSignal } from 'node:stream';
import type { Http1Head } from '../codecs/http1/http1-decoder';
import { chunkParts, isHopByHop, lastChunk, type Framing } from '../codecs/http1/http1-encoder';
import type { LocalReply } from '../filters/filter';
import { hostOnly, pathOf, type Peer, type RequestView, type RequestProtocol } from '../filters/request-view';
import type { RouteTarget } from '../filters/router';
import type { ClusterStats, Endpoint } from '../upstream/cluster';
import { poolLimits, type AcquireError, type Http1Connection, type Http1ResponseSink } from '../upstream/http1-pool';
import type { UpstreamSession } from '../upstream/http2-pool';
import { chooseUpstream, isLocalReply, type ConnectionInfo } from './connection';
import type { CompiledConfig, WorkerRuntime } from './runtime';

const {
  HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE,
  NGHTTP2_REFUSED_STREAM,
} = http2.constants;

/**
 * Node 20's AsyncResource#bind() wraps both accessors of the deprecated `asyncResource`
 * property (DEP0172) with util.deprecate() on every call, and deprecate() sets the
 * prototype of each function it makes: slow in itself and bad for V8's caches
 * (nodejs/node#58218, fixed in later release lines by nodejs/node#58928).
 * ClientHttp2Session#request() binds once per stream, and on this path that cost
 * about a fifth of a worker's CPU. Where the slow form is present, bind() is
 * replaced by the same function without the deprecate() wrappers: same async
 * scope, `this`, `length` and `asyncResource`; only the one-time warning on
 * reading `asyncResource` is gone.
 */
export function installFastAsyncResourceBind(): boolean {
  const proto = AsyncResource.prototype as unknown as { bind: (fn: unknown, thisArg?: unknown) => unknown };
  if (proto.bind.name === 'fastBind') return false;
  const probe = new AsyncResource('SluiceProbe').bind(() => {});
  const get = Object.getOwnPropertyDescriptor(probe, 'asyncResource')?.get;
  if (!get || Object.getPrototypeOf(get) === Function.prototype) return false; // nothing to fix here
  proto.bind = function fastBind(this: AsyncResource, fn: unknown, thisArg?: unknown): unknown {
    if (typeof fn !== 'function') {
      throw Object.assign(new TypeError(`The "fn" argument must be of type function. Received ${typeof fn}`), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    const f = fn as (...args: unknown[]) => unknown;
    const resource = this;
    const bound = thisArg === undefined
      ? function (this: unknown, ...args: unknown[]) { return resource.runInAsyncScope(f, this, ...args); }
      : resource.runInAsyncScope.bind(resource, f, thisArg);
    let self = resource;
    Object.defineProperties(bound, {
      length: { configurable: true, enumerable: false, value: f.length, writable: false },
      asyncResource: { configurable: true, enumerable: true, get: () => self, set: (v: AsyncResource) => { self = v; } },
    });
    return bound;
  };
  return true;
}
installFastAsyncResourceBind();

/** Tries per request when an upstream cannot be reached or refuses the stream before it was processed. */
const MAX_ATTEMPTS = 3;

/** HTTP status → gRPC status, as gRPC's own HTTP mapping has it. */
function grpcStatusFor(status: number): number {
  switch (status) {
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
  }
}

function isGrpc(contentType: unknown): boolean {
  return typeof contentType === 'string' && contentType.startsWith('application/grpc');
}

class Http2View implements RequestView {
  readonly service: string;
  readonly method: string;
  readonly path: string;
  constructor(readonly protocol: RequestProtocol, private readonly info: ConnectionInfo, private readonly peer: Peer,
    private readonly headers: http2.IncomingHttpHeaders) {
    const path = pathOf(String(headers[HTTP2_HEADER_PATH] ?? '/'));
    this.path = path;
    if (protocol === 'grpc') {
      // /package.Service/Method
      const slash = path.indexOf('/', 1);
      this.service = slash > 0 ? path.slice(1, slash) : path.slice(1);
      this.method = slash > 0 ? path.slice(slash + 1) : '';
    } else {
      this.service = hostOnly(String(headers[HTTP2_HEADER_AUTHORITY] ?? headers.host ?? ''));
      this.method = String(headers[HTTP2_HEADER_METHOD] ?? '');
    }
  }
  get direction() { return this.info.listener.config.direction; }
  get listener() { return this.info.listener.config.name; }
  get destination() { return this.info.dst; }
  get source(): Peer { return this.peer; }
  header(name: string): string | undefined {
    const v = this.headers[name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : String(v);
  }
}

/** A downstream connection: where it came from, and how many streams it has open now. */
interface DownSession {
  readonly info: ConnectionInfo;
  readonly peer: Peer;
  readonly session: http2.ServerHttp2Session;
  active: number;
  /** When `active` last fell to 0 (performance.now()). */
  idleSince: number;
}

/** The connection being handed to the HTTP/2 server, for its 'session' event (emitted synchronously). */
let pending: { info: ConnectionInfo; peer: Peer } | null = null;
const downSessions = new WeakMap<http2.Http2Session, DownSession>();
const servers = new WeakMap<WorkerRuntime, http2.Http2Server>();

function serverFor(rt: WorkerRuntime): http2.Http2Server {
  let server = servers.get(rt);
  if (server) return server;
  const http = rt.current().config.http;
  server = http2.createServer({
    maxHeaderListPairs: http.maxHeaders,
    maxSendHeaderBlockLength: http.maxHeaderBytes,
    settings: { maxHeaderListSize: http.maxHeaderBytes, maxConcurrentStreams: 1000, enablePush: false },
    // MB a session may buffer before Node refuses new streams on it (Node's default is 10)
    maxSessionMemory: 32,
  });
  // A connection is idle when it has had no stream for http.idleTimeoutMs (Envoy's meaning). A sweep
  // finds those; Node's session timer would be re-armed by every frame, several times per request.
  const live = new Set<DownSession>();
  const sweep = setInterval(() => {
    const limit = rt.current().config.http.idleTimeoutMs;
    const now = performance.now();
    for (const d of live) if (d.active === 0 && now - d.idleSince >= limit && !d.session.closed) d.session.close();
  }, Math.max(50, Math.min(1000, http.idleTimeoutMs / 4)));
  sweep.unref();
  server.on('session', (session: http2.ServerHttp2Session) => {
    if (pending) {
      const d: DownSession = { info: pending.info, peer: pending.peer, session, active: 0, idleSince: performance.now() };
      downSessions.set(session, d);
      live.add(d);
      session.on('close', () => live.delete(d));
    }
    const drainer = { drain: () => { if (!session.closed) session.close(); } };
    rt.connections.add(drainer);
    session.on('close', () => rt.connections.delete(drainer));
    session.on('error', () => session.destroy());
    if (rt.draining) session.close();
  });
  server.on('stream', (stream, headers) => {
    const d = downSessions.get(stream.session as http2.ServerHttp2Session);
    if (!d) { reset(stream); return; }
    try {
      new Http2Exchange(rt, rt.current(), d, stream, headers).start();
    } catch (err) {
      rt.logError(err as Error, 'http2 stream');
      reset(stream);
    }
  });
  server.on('sessionError', () => {});
  servers.set(rt, server);
  return server;
}

export function serveHttp2(rt: WorkerRuntime, socket: net.Socket, info: ConnectionInfo): void {
  // without this, sockets the client left stay in CLOSE_WAIT
  socket.allowHalfOpen = false;
  const server = serverFor(rt);
  // once per connection, while the socket is surely open (the access log may ask after it closed)
  pending = { info, peer: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 } };
  try {
    server.emit('connection', socket);
  } finally {
    pending = null;
  }
}

const FAILED = new Error('reset by sluice');
/** An AbortError: Node resets a stream destroyed with one with CANCEL; Node exports no way to build one. */
const CANCELLED: Error = (() => {
  const ac = new AbortController();
  ac.abort();
  const r = new Readable({ read() {} });
  r.on('error', () => {});
  addAbortSignal(ac.signal, r);
  return r.errored ?? new Error('cancelled');
})();

/**
 * Resets a stream: RST_STREAM with INTERNAL_ERROR, or CANCEL when we give up on it.
 * Not close(code): on a stream whose writable side is open, Node's close() ends
 * that side first, so the peer gets END_STREAM, a clean end of a message that was
 * cut off, and the RST_STREAM after it (if at all) comes too late to matter.
 */
function reset(s: http2.Http2Stream, cancel = false): void {
  if (!s.destroyed) s.destroy(cancel ? CANCELLED : FAILED);
}

/**
 * True when a stream's 'end' came from END_STREAM. Node also pushes an end into
 * the readable side of a stream it destroys (RST_STREAM received, session or
 * socket gone), and that end must not pass for a complete message.
 */
function endedCleanly(s: http2.Http2Stream): boolean {
  return !s.destroyed && !s.aborted;
}

/** h2 request headers → the flat HTTP/1 list, pseudo-headers and connection-specific fields left out. */
function toFlat(headers: http2.IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name of Object.keys(headers)) {
    if (name.charCodeAt(0) === 58 /* : */ || isHopByHop(name)) continue;
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      if (name === 'set-cookie') for (const x of v) out.push(name, x);
      else out.push(name, v.join(name === 'cookie' ? '; ' : ', '));
    } else {
      out.push(name, String(v));
    }
  }
  return out;
}

/** Response headers for HTTP/2: names lower-cased, connection-specific fields dropped. */
function fromFlat(status: number, flat: readonly string[], tokens: readonly string[], via: string): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = { [HTTP2_HEADER_STATUS]: status };
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i].toLowerCase();
    if (isHopByHop(name) && name !== 'content-length') continue;
    if (tokens.includes(name)) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = flat[i + 1];
    else if (Array.isArray(prev)) prev.push(flat[i + 1]);
    else out[name] = [String(prev), flat[i + 1]];
  }
  if (via) out.via = out.via ? `${out.via}, ${via}` : via;
  return out;
}

// ── stream listeners ─────────────────────────────────────────────────────────
// Shared by every exchange: `this` is the stream, the exchange hangs off it.

const kExchange = Symbol('sluice.http2.exchange');
const kUpSession = Symbol('sluice.http2.upstreamSession');
type DownStream = http2.ServerHttp2Stream & { [kExchange]: Http2Exchange };
type UpStream = http2.ClientHttp2Stream & { [kExchange]: Http2Exchange; [kUpSession]: UpstreamSession };

function noop(): void {}
function onDownClose(this: DownStream): void { this[kExchange].onDownstreamClose(); }
function onDownData(this: DownStream, d: Buffer): void { this[kExchange].onRequestData(d); }
function onDownEnd(this: DownStream): void { this[kExchange].onRequestEnd(); }
function onDownDrain(this: DownStream): void { this[kExchange].onDownstreamDrain(); }
function onDownWantTrailers(this: DownStream): void { this[kExchange].sendTrailers(); }
function onUpResponse(this: UpStream, h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void { this[kExchange].onUpResponse(this, h); }
function onUpTrailers(this: UpStream, t: http2.IncomingHttpHeaders): void { const x = this[kExchange]; if (x.up === this) x.trailers = t; }
function onUpData(this: UpStream, d: Buffer): void { this[kExchange].onUpData(this, d); }
function onUpEnd(this: UpStream): void { this[kExchange].onUpEnd(this); }
function onUpClose(this: UpStream): void { this[kUpSession].release(); this[kExchange].onUpClose(this); }
function onUpDrain(this: UpStream): void { this[kExchange].onUpstreamDrain(); }

// The priority fields are Node's defaults. Given, they spare request() adding them to its copy of
// the options, which costs it several microseconds a stream on Node 20.
const REQUEST_END = { endStream: true, weight: 16, parent: 0, exclusive: false };
const REQUEST_BODY = { endStream: false, weight: 16, parent: 0, exclusive: false };
const RESPOND_END = { endStream: true };
const RESPOND_BODY = { endStream: false };
const RESPOND_TRAILERS = { endStream: false, waitForTrailers: true };

class Http2Exchange implements Http1ResponseSink {
  private readonly view: Http2View;
  private readonly protocol: RequestProtocol;
  private readonly start0: number;
  private readonly via: string;
  /** The client said `te: trailers` (every gRPC client does). */
  private readonly acceptsTrailers: boolean;
  private target: RouteTarget | null = null;
  private cstats: ClusterStats | null = null;
  private endpoint: Endpoint | null = null;
  private upstreamKey = '';
  private timer: NodeJS.Timeout | null = null;
  private upstreamActive = false;
  private responded = false;
  private finished = false;
  private status = 0;
  private reason: string | undefined = undefined;
  private bytesIn = 0;
  private bytesOut = 0;
  private attempts = 0;
  /** The request had no body, or its body has fully arrived. */
  private requestEnded: boolean;
  private bodyHooked = false;
  private viaAdded = false;
  /** The downstream stream is paused until the upstream drains (request body). */
  private downPaused = false;
  /** What is paused until the downstream drains (response body): the h2 upstream stream or the h1 socket. */
  private pausedUp: http2.ClientHttp2Stream | net.Socket | null = null;
  // h2 upstream
  up: http2.ClientHttp2Stream | null = null;
  trailers: http2.IncomingHttpHeaders | null = null;
  // h1 upstream
  private conn: Http1Connection | null = null;
  private reqFraming: Framing = { kind: 'none' };

  private readonly info: ConnectionInfo;

  constructor(
    private readonly rt: WorkerRuntime,
    private readonly cfg: CompiledConfig,
    private readonly down: DownSession,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
  ) {
    const info = down.info;
    this.info = info;
    this.protocol = isGrpc(headers[HTTP2_HEADER_CONTENT_TYPE]) ? 'grpc' : 'http2';
    this.view = new Http2View(this.protocol, info, down.peer, headers);
    this.start0 = cfg.accessLog.enabled ? performance.now() : 0;
    this.via = cfg.config.http.via;
    const te = headers.te;
    this.acceptsTrailers = typeof te === 'string' && te.includes('trailers');
    this.requestEnded = stream.readableEnded || stream.endAfterHeaders;
  }

  private get pstats() { return this.cfg.protocol(this.protocol); }

  start(): void {
    const { stats } = this.cfg;
    stats.inc(this.pstats.rqTotal);
    stats.inc(this.pstats.rqActive);
    const s = this.stream as DownStream;
    s[kExchange] = this;
    s.on('close', onDownClose);
    this.down.active++;
    s.on('error', noop);
    this.cfg.chain.run(this.view, (reply, target) => (reply ? this.localReply(reply) : this.route(target!)));
  }

  private route(target: RouteTarget): void {
    this.target = target;
    if (target.kind === 'direct') { this.localReply({ status: target.status, reason: 'direct_response', body: target.body }); return; }
    this.timer = setTimeout(() => this.onTimeout(), target.timeoutMs);
    this.connect();
  }

  private connect(avoid?: Endpoint): void {
    const target = this.target!;
    if (target.kind === 'direct') return;
    const choice = chooseUpstream(this.cfg, this.info, target, avoid);
    if (isLocalReply(choice)) { this.localReply(choice); return; }
    this.endpoint = choice.endpoint;
    this.cstats = choice.cstats;
    this.upstreamKey = choice.key;
    const { host, port } = choice;
    const upstreamProtocol = target.kind === 'cluster' && target.cluster.config.protocol === 'http1' ? 'http1' : 'http2';
    this.attempts++;
    if (upstreamProtocol === 'http2') this.forwardH2(host, port);
    else this.forwardH1(host, port);
  }

  private countUpstream(): void {
    this.upstreamActive = true;
    if (this.endpoint) this.endpoint.active++;
    this.cfg.stats.inc(this.cstats!.rqTotal);
    this.cfg.stats.inc(this.cstats!.rqActive);
  }

  private upstreamDone(): void {
    if (!this.upstreamActive) return;
    this.upstreamActive = false;
    this.cfg.stats.dec(this.cstats!.rqActive);
    if (this.endpoint) this.endpoint.active--;
  }

  /** Another attempt is allowed after a connect failure (another endpoint) or a refused stream (not processed). */
  private mayRetry(refused: boolean): boolean {
    const t = this.target;
    return t !== null && t.kind === 'cluster' && this.attempts < MAX_ATTEMPTS && this.bytesIn === 0
      && (refused || t.cluster.endpoints.length > 1);
  }

  // ── HTTP/2 upstream ──────────────────────────────────────────────────────

  private forwardH2(host: string, port: number): void {
    const t = this.target;
    const connectTimeoutMs = t?.kind === 'cluster' ? t.cluster.config.connectTimeoutMs : this.cfg.config.tcp.connectTimeoutMs;
    const us = this.rt.pools.http2(host, port, this.upstreamKey).acquire(this.cstats!, connectTimeoutMs, this.cfg.config.http.upstreamIdleTimeoutMs);
    // Node's request() copies the headers and rejects connection-specific ones; nghttp2 never lets them in from a client
    const out = this.headers;
    if (this.via && !this.viaAdded) {
      this.viaAdded = true;
      const prev = out.via;
      out.via = prev === undefined ? this.via : `${String(prev)}, ${this.via}`;
    }
    let up: UpStream;
    try {
      up = us.session.request(out, this.requestEnded ? REQUEST_END : REQUEST_BODY) as UpStream;
    } catch {
      us.release();
      this.failBeforeResponse('upstream_connect_failed');
      return;
    }
    up[kExchange] = this;
    up[kUpSession] = us;
    this.up = up;
    this.countUpstream();
    up.on('response', onUpResponse);
    up.on('data', onUpData);
    up.on('end', onUpEnd);
    up.on('error', noop);
    up.on('close', onUpClose);
    if (!this.requestEnded && !this.bodyHooked) {
      this.bodyHooked = true;
      this.stream.on('data', onDownData);
      this.stream.on('end', onDownEnd);
    }
  }

  onUpResponse(up: http2.ClientHttp2Stream, h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
    if (this.finished || this.up !== up) return;
    const status = Number(h[HTTP2_HEADER_STATUS]);
    if (status < 200) return;
    this.status = status;
    this.responded = true;
    // Node hands us a fresh object and respond() copies it again: add to it in place
    const via = this.via;
    if (via) { const prev = h.via; h.via = prev === undefined ? via : `${String(prev)}, ${via}`; }
    const endNow = up.endAfterHeaders;
    // waiting for trailers costs a round through JS and a frame; do it only when trailers can come
    const trailers = !endNow && (this.acceptsTrailers || h.trailer !== undefined || isGrpc(h[HTTP2_HEADER_CONTENT_TYPE]));
    try {
      this.stream.respond(h, endNow ? RESPOND_END : trailers ? RESPOND_TRAILERS : RESPOND_BODY);
    } catch { reset(this.stream); }
    if (trailers) {
      up.on('trailers', onUpTrailers);
      this.stream.on('wantTrailers', onDownWantTrailers);
    }
    if (endNow) this.finish();
  }

  sendTrailers(): void {
    // none came: Node sends an empty DATA frame with END_STREAM
    this.stream.sendTrailers(this.trailers ?? {});
  }

  onUpData(up: http2.ClientHttp2Stream, d: Buffer): void {
    if (this.up !== up) return;
    this.bytesOut += d.length;
    if (!this.stream.write(d) && this.pausedUp === null) {
      this.pausedUp = up;
      up.pause();
      this.stream.once('drain', onDownDrain);
    }
  }

  onDownstreamDrain(): void {
    const p = this.pausedUp;
    this.pausedUp = null;
    p?.resume();
  }

  onUpEnd(up: http2.ClientHttp2Stream): void {
    // Node also ends the readable side of a stream that was reset or whose session died;
    // only an end that came with END_STREAM after a response is complete ('close' handles the rest)
    if (this.finished || this.up !== up || !this.responded || !endedCleanly(up)) return;
    if (!this.stream.destroyed) this.stream.end();
    this.finish();
  }

  onUpClose(up: UpStream): void {
    if (this.finished || this.up !== up) return;
    this.up = null;
    const rst = up.rstCode;
    const us = up[kUpSession];
    if (!this.responded) {
      // safe to send again only if the upstream surely did not process it: never connected, or refused
      const refused = rst === NGHTTP2_REFUSED_STREAM;
      const neverConnected = !us.connected;
      if ((refused || neverConnected) && this.mayRetry(refused)) {
        this.upstreamDone();
        this.connect(neverConnected ? this.endpoint ?? undefined : undefined);
        return;
      }
      this.failBeforeResponse(neverConnected || us.session.destroyed ? 'upstream_connect_failed' : 'upstream_reset');
      return;
    }
    // cut off mid-response: reset the client's stream too
    this.cfg.stats.inc(this.cstats!.rqReset);
    this.reason = 'upstream_reset';
    reset(this.stream);
    this.finish();
  }

  // ── request body, either upstream ───────────────────────────────────────

  onRequestData(d: Buffer): void {
    this.bytesIn += d.length;
    const up = this.up;
    if (up !== null) {
      if (!up.write(d) && !this.downPaused) {
        this.downPaused = true;
        this.stream.pause();
        up.once('drain', onUpDrain);
      }
      return;
    }
    const conn = this.conn;
    if (conn === null) return; // the upstream is gone; the exchange is ending
    const sock = conn.socket;
    let ok: boolean;
    if (this.reqFraming.kind === 'chunked') { const p = chunkParts(d); sock.write(p[0]); sock.write(p[1]); ok = sock.write(p[2]); }
    else ok = sock.write(d);
    if (!ok && !this.downPaused) {
      this.downPaused = true;
      this.stream.pause();
      sock.once('drain', () => this.onUpstreamDrain());
    }
  }

  onUpstreamDrain(): void {
    this.downPaused = false;
    this.stream.resume();
  }

  onRequestEnd(): void {
    // a client that reset its stream or dropped the connection must not look like a complete upload
    if (!endedCleanly(this.stream)) return;
    this.requestEnded = true;
    if (this.up !== null) { this.up.end(); return; }
    const conn = this.conn;
    if (conn === null) return;
    if (this.reqFraming.kind === 'chunked') conn.socket.write(lastChunk(null));
    conn.requestDone = true;
  }

  private failBeforeResponse(reason: 'upstream_connect_failed' | 'upstream_reset'): void {
    if (reason === 'upstream_reset') this.cfg.stats.inc(this.cstats!.rqReset);
    this.localReply({ status: 503, reason, body: reason === 'upstream_reset' ? 'upstream reset before response\n' : 'upstream connect failed\n' });
  }

  // ── HTTP/1.1 upstream ────────────────────────────────────────────────────

  private forwardH1(host: string, port: number): void {
    const limits = poolLimits(this.cfg.config, this.target?.kind === 'cluster' ? this.target.cluster.config : undefined);
    const pool = this.rt.pools.http1(host, port, this.upstreamKey, limits);
    this.stream.pause();
    pool.acquire((err, conn) => this.onAcquired(err, conn), limits, this.cstats!);
  }

  private onAcquired(err: AcquireError | null, conn: Http1Connection | null): void {
    if (this.finished) { conn?.abandon(); return; }
    if (err || !conn) {
      const t = this.target!;
      if (err !== 'overflow' && t.kind === 'cluster' && t.cluster.endpoints.length > 1 && this.attempts < MAX_ATTEMPTS) { this.connect(this.endpoint ?? undefined); return; }
      this.localReply(err === 'overflow'
        ? { status: 503, reason: 'overflow', body: 'upstream overflow\n' }
        : { status: 503, reason: 'upstream_connect_failed', body: 'upstream connect failed\n' });
      return;
    }
    this.conn = conn;
    this.countUpstream();
    const h = this.headers;
    const method = String(h[HTTP2_HEADER_METHOD]);
    conn.start(this, method);
    const endStream = this.requestEnded;
    const cl = h['content-length'];
    this.reqFraming = endStream ? { kind: cl !== undefined ? 'length' : 'none', length: 0 } as Framing
      : cl !== undefined && /^\d+$/.test(String(cl)) ? { kind: 'length', length: Number(cl) } : { kind: 'chunked' };
    let head = `${method} ${String(h[HTTP2_HEADER_PATH])} HTTP/1.1\r\nhost: ${String(h[HTTP2_HEADER_AUTHORITY] ?? h.host ?? this.upstreamKey)}\r\n`;
    const flat = toFlat(h);
    for (let i = 0; i < flat.length; i += 2) {
      if (flat[i] === 'te' || flat[i] === 'host' || flat[i] === 'via') continue;
      head += `${flat[i]}: ${flat[i + 1]}\r\n`;
    }
    const via = this.via;
    if (via) head += `via: ${h.via ? `${String(h.via)}, ` : ''}${via}\r\n`;
    else if (h.via) head += `via: ${String(h.via)}\r\n`;
    if (this.reqFraming.kind === 'length') head += `content-length: ${this.reqFraming.length}\r\n`;
    else if (this.reqFraming.kind === 'chunked') head += 'transfer-encoding: chunked\r\n';
    conn.socket.write(head + '\r\n', 'latin1');
    if (endStream) { conn.requestDone = true; return; }
    if (!this.bodyHooked) {
      this.bodyHooked = true;
      this.stream.on('data', onDownData);
      this.stream.on('end', onDownEnd);
    }
    this.stream.resume();
  }

  onResponseHead(h: Http1Head): void {
    if (h.status < 200 || this.finished) return;
    this.status = h.status;
    this.responded = true;
    const noBody = this.headers[HTTP2_HEADER_METHOD] === 'HEAD' || h.status === 204 || h.status === 304;
    const out = fromFlat(h.status, h.headers, h.connectionTokens, this.via);
    const trailers = !noBody && (this.acceptsTrailers || out.trailer !== undefined || isGrpc(out[HTTP2_HEADER_CONTENT_TYPE]));
    try {
      this.stream.respond(out, noBody ? RESPOND_END : trailers ? RESPOND_TRAILERS : RESPOND_BODY);
    } catch { reset(this.stream); }
    if (trailers) this.stream.on('wantTrailers', onDownWantTrailers);
  }

  onResponseBody(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    if (this.stream.destroyed) return;
    if (!this.stream.write(chunk) && this.conn && this.pausedUp === null) {
      const sock = this.conn.socket;
      this.pausedUp = sock;
      sock.pause();
      this.stream.once('drain', onDownDrain);
    }
  }

  onResponseEnd(trailers: string[] | null): void {
    if (trailers) {
      const t: http2.IncomingHttpHeaders = {};
      for (let i = 0; i < trailers.length; i += 2) t[trailers[i].toLowerCase()] = trailers[i + 1];
      this.trailers = t;
    }
    // the pool may hand this connection to the next request now: it must not stay paused on our account
    const paused = this.pausedUp;
    if (paused !== null) { this.pausedUp = null; paused.resume(); }
    const conn = this.conn;
    this.conn = null;
    if (conn && !conn.requestDone) conn.abandon();
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
    this.finish();
  }

  onUpstreamError(kind: 'reset' | 'protocol'): void {
    this.conn = null;
    this.pausedUp = null;
    if (this.finished) return;
    this.cfg.stats.inc(this.cstats!.rqReset);
    if (!this.responded) {
      this.localReply(kind === 'protocol'
        ? { status: 502, reason: 'upstream_reset', body: 'upstream sent an invalid response\n' }
        : { status: 503, reason: 'upstream_reset', body: 'upstream connection reset before response\n' });
      return;
    }
    this.reason = 'upstream_reset';
    reset(this.stream);
    this.finish();
  }

  // ── common ───────────────────────────────────────────────────────────────

  private onTimeout(): void {
    this.timer = null;
    if (this.finished) return;
    if (this.cstats) this.cfg.stats.inc(this.cstats.rqTimeout);
    this.dropUpstream();
    if (!this.responded) { this.localReply({ status: 504, reason: 'upstream_timeout', body: 'upstream request timeout\n' }); return; }
    this.reason = 'upstream_timeout';
    reset(this.stream);
    this.finish();
  }

  onDownstreamClose(): void {
    const d = this.down;
    if (--d.active === 0) d.idleSince = performance.now();
    if (this.finished) return;
    this.dropUpstream();
    this.finish();
  }

  private dropUpstream(): void {
    const up = this.up;
    this.up = null;
    if (up) reset(up, true);
    const conn = this.conn;
    this.conn = null;
    this.pausedUp = null;
    conn?.abandon();
  }

  private localReply(r: LocalReply): void {
    if (this.finished) return;
    this.dropUpstream();
    this.status = r.status;
    this.reason = r.reason;
    // the router says no_route itself; counted here so every path to a 404 counts once
    if (r.reason === 'no_route') this.cfg.stats.inc(this.pstats.noRoute);
    const s = this.stream;
    if (!s.destroyed && !s.headersSent) {
      try {
        if (this.protocol === 'grpc') {
          s.respond({
            [HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusFor(r.status)),
            'grpc-message': encodeURIComponent((r.body ?? r.reason).trim()), 'x-sluice-reason': r.reason,
          }, RESPOND_END);
        } else {
          const body = Buffer.from(r.body ?? '', 'utf8');
          s.respond({ [HTTP2_HEADER_STATUS]: r.status, 'content-type': 'text/plain', 'content-length': body.length, 'x-sluice-reason': r.reason });
          s.end(body);
        }
      } catch { reset(s); }
    }
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const { stats } = this.cfg;
    const ps = this.pstats;
    stats.dec(ps.rqActive);
    const cls = (this.status / 100) | 0;
    if (this.status) stats.inc(ps.rqClass[cls]);
    if (this.cstats && this.upstreamActive && this.responded) stats.inc(this.cstats.rqClass[cls]);
    this.upstreamDone();
    if (this.cfg.accessLog.enabled) {
      const v = this.view;
      this.cfg.accessLog.write({
        protocol: this.protocol, direction: v.direction, listener: v.listener, method: v.method, path: v.path, service: v.service,
        status: this.status, reason: this.reason, route: this.target?.route, upstream: this.upstreamKey || undefined,
        bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs: Math.round((performance.now() - this.start0) * 1000) / 1000,
        source: v.source.address,
      });
    }
  }
}
