/**
 * Downstream HTTP/2 (h2c prior knowledge, gRPC included) on Sluice's own HTTP/2 codec. Each
 * stream is an Exchange; its answer comes from an HTTP/2 upstream (the default: captured HTTP/2
 * stays HTTP/2) or, for clusters that say `protocol: http1`, an HTTP/1.1 one.
 *
 *   stream ─▶ Http2StreamDownstream ─▶ Exchange ─▶ attempts (HTTP/2 or HTTP/1 upstream)
 *   stream ◀── respond / writeData / trailers / reset ◀──┘
 *
 * Header lists pass through as the flat arrays the HPACK decoder made, with `via` added. Bodies
 * are passed on chunk by chunk; a chunk's flow-control window is given back to the sender only
 * once the other side has taken it, so a slow reader slows the writer down instead of filling
 * memory. Trailers (gRPC status) are carried end to end; resets are passed on as resets, so a
 * cut-off response or upload is never mistaken for a complete one.
 */
import type net from 'node:net';
import { H2Error } from './frames';
import { CONNECTION_WINDOW, Http2Connection, writeAll, type Http2ConnectionHost, type Http2Options, type Http2Stream, type Http2StreamHandler } from './http2-connection';
import { Exchange, type Downstream, type ResponseHead } from '../../exchange/exchange';
import type { HeaderOps } from '../../exchange/filter';
import { classifyHttpStatus, type LocalReply, type OutcomeClass } from '../../exchange/outcome';
import { type Peer, type RequestView, type RequestProtocol } from '../../exchange/request-view';
import { normalizeTarget, parseAuthority, type Authority, type PathPolicy, type Target } from '../http/http-target';
import { addVia, applyEdits, h1ResponseToH2, trailersToH2, type HttpRequestForm, type HttpResponseForm } from '../http/forms';
import { HTTP_UPSTREAMS } from '../http/http-upstreams';
import { ConnectionList, type Listed } from '../../worker/connection-list';
import { callerOf, type CompiledConfig, type ConnectionInfo, type DrainableConnection, type WorkerRuntime } from '../../worker/runtime';
import type { CompiledFallback } from '../../protection/fallback';

/**
 * Between the two GOAWAYs of a drain: long enough for every request a client sent before it saw
 * the first to arrive (Envoy's drain_timeout plays this part, 5 s by default).
 */
const DRAIN_GOAWAY_DELAY_MS = 1000;
/** Streams a client may have open on one connection. */
const MAX_CONCURRENT_STREAMS = 1000;

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

function isGrpc(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.startsWith('application/grpc');
}

class Http2View implements RequestView {
  readonly service: string;
  readonly method: string;
  constructor(readonly protocol: RequestProtocol, private readonly info: ConnectionInfo, private readonly peer: Peer,
    private readonly s: Http2Stream, readonly authority: string, readonly path: string) {
    if (protocol === 'grpc') {
      // /package.Service/Method
      const slash = path.indexOf('/', 1);
      this.service = slash > 0 ? path.slice(1, slash) : path.slice(1);
      this.method = slash > 0 ? path.slice(slash + 1) : '';
    } else {
      this.service = authority;
      this.method = s.method;
    }
  }
  get direction() { return this.info.listener.config.direction; }
  get listener() { return this.info.listener.config.name; }
  get destination() { return this.info.dst; }
  get source(): Peer { return this.peer; }
  header(name: string): string | undefined { return this.s.header(name); }
  headerValues(name: string): string[] { return this.s.headerValues(name); }
}

interface Http2Target {
  authority: Authority;
  target: Target;
}

/**
 * The authority and path a stream is routed on and forwarded with. `:authority` (or `host`
 * without it) must be a valid authority, and a `host` beside `:authority` must name the same
 * one (RFC 9113 §8.3.1): an upstream reading the other would be reached past the routes.
 */
function resolveTarget(s: Http2Stream, policy: PathPolicy): Http2Target | string {
  const a = parseAuthority(s.authority);
  if (!a) return 'an invalid :authority';
  const host = s.header('host');
  if (host !== undefined && host !== s.authority) {
    const h = parseAuthority(host);
    if (!h || h.canonical !== a.canonical) return 'host and :authority differ';
  }
  const t = normalizeTarget(s.path, policy);
  if (typeof t === 'string') return t;
  return { authority: a, target: t };
}

// ── downstream connections ───────────────────────────────────────────────────

const SERVER_OPTIONS = (cfg: CompiledConfig): Http2Options => ({
  maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
  initialWindow: 1 << 20,
  connectionWindow: CONNECTION_WINDOW,
  maxHeaderListSize: cfg.config.http.maxHeaderBytes,
  maxHeaderCount: cfg.config.http.maxHeaders,
});

/**
 * A downstream connection's entry in rt.connections. A class, not an object literal with a getter:
 * each such literal gets a hidden class of its own that points (through the getter's closure) at
 * its connection, from a transition tree in the old generation.
 */
class Http2DrainHandle implements DrainableConnection {
  connPrev: Listed | null = null;
  connNext: Listed | null = null;
  connList: ConnectionList<Listed> | null = null;
  constructor(private readonly d: Http2Downstream) {}
  drain(): void { this.d.drain(); }
  closeIdle(): void { this.d.conn.shutdown(); }
  get info(): ConnectionInfo { return this.d.info; }
}

/** A downstream connection: its socket, its codec, where it came from. */
class Http2Downstream implements Http2ConnectionHost, Listed {
  readonly conn: Http2Connection;
  // its links in this runtime's list of open HTTP/2 connections (live())
  connPrev: Listed | null = null;
  connNext: Listed | null = null;
  connList: ConnectionList<Listed> | null = null;
  readonly peer: Peer;
  private readonly drainer: DrainableConnection = new Http2DrainHandle(this);
  private drainTimer: NodeJS.Timeout | null = null;
  /** After our end (onEnd): destroys a socket whose client does not close its side. */
  private endTimer: NodeJS.Timeout | null = null;

  constructor(readonly rt: WorkerRuntime, readonly socket: net.Socket, readonly info: ConnectionInfo) {
    // the access log may ask after the socket closed
    this.peer = callerOf(socket, info);
    this.conn = new Http2Connection(true, this, SERVER_OPTIONS(rt.current()));
  }

  start(): void {
    const { socket, rt } = this;
    socket.allowHalfOpen = false;
    socket.on('data', (d: Buffer) => this.conn.receive(d));
    socket.on('drain', () => this.conn.onDrain());
    socket.once('close', () => {
      live(this.rt).delete(this);
      rt.connections.delete(this.drainer);
      if (this.drainTimer) clearTimeout(this.drainTimer);
      // cleared, not left to fire: for its second it would keep the closed connection alive
      if (this.endTimer) clearTimeout(this.endTimer);
      this.conn.destroy();
    });
    live(rt).add(this);
    rt.connections.add(this.drainer);
    // a connection opened during the drain period is told after its first stream (onStream):
    // a GOAWAY before any request would send a client round in circles
    if (rt.closingIdle) this.conn.shutdown();
  }

  /** The two-step GOAWAY (Http2Connection.drainGracefully); the final one DRAIN_GOAWAY_DELAY_MS later. */
  drain(): void {
    if (this.conn.drainNotified || this.conn.goingAway) return;
    this.conn.drainGracefully();
    this.drainTimer = setTimeout(() => { this.drainTimer = null; this.conn.shutdown(); }, DRAIN_GOAWAY_DELAY_MS);
    this.drainTimer.unref();
  }

  write(data: Buffer): boolean { return this.socket.write(data); }
  writeMany(data: Buffer[]): boolean { return writeAll(this.socket, data); }

  onStream(s: Http2Stream): void {
    const rt = this.rt;
    try {
      if (rt.draining) this.drain();
      new Http2StreamDownstream(rt.current(), this, s).start();
    } catch (err) {
      rt.logError(err as Error, 'http2 stream');
      this.conn.reset(s, H2Error.INTERNAL_ERROR);
    }
  }

  onEnd(): void {
    this.socket.end();
    // a client that does not close its side is not waited for
    if (this.endTimer !== null) return;
    this.endTimer = setTimeout(() => { this.endTimer = null; this.socket.destroy(); }, 1000);
    this.endTimer.unref();
  }

  onGoaway(): void {}
  onIdle(): void {}

  onProtocolError(): void {
    this.rt.current().stats.inc(this.rt.current().protocol('http2').protocolError);
  }
}

/**
 * Open downstream connections per runtime, swept for idle ones (no stream for http.idleTimeoutMs,
 * Envoy's meaning). A list linked through the connections, not a Set: a Set's old tables keep
 * closed connections alive for young collections (src/worker/connection-list.ts).
 */
const lives = new WeakMap<WorkerRuntime, ConnectionList<Http2Downstream>>();

function live(rt: WorkerRuntime): ConnectionList<Http2Downstream> {
  let set = lives.get(rt);
  if (set) return set;
  const s = new ConnectionList<Http2Downstream>();
  set = s;
  lives.set(rt, s);
  const { idleTimeoutMs, headerTimeoutMs } = rt.current().config.http;
  const sweep = setInterval(() => {
    const cfg = rt.current();
    const { idleTimeoutMs: idle, headerTimeoutMs: header } = cfg.config.http;
    const now = performance.now();
    for (const d of s) {
      const c = d.conn;
      // a client that started a header block (or the connection) and does not finish it: slowloris
      if (c.headersPendingSince > 0 && now - c.headersPendingSince >= header) {
        cfg.stats.inc(cfg.protocol('http2').timeout);
        c.fail(H2Error.NO_ERROR, 'header timeout');
      } else if (c.active === 0 && now - c.idleSince >= idle) c.shutdown();
    }
  }, Math.max(50, Math.min(1000, idleTimeoutMs / 4, headerTimeoutMs / 4)));
  sweep.unref();
  return s;
}

export function serveHttp2(rt: WorkerRuntime, socket: net.Socket, info: ConnectionInfo): void {
  new Http2Downstream(rt, socket, info).start();
}

// ── streams ──────────────────────────────────────────────────────────────────
// Shared by every stream: the downstream side is the stream's ctx.

const DOWN: Http2StreamHandler = {
  onResponse() {},
  onData(s, d, end) { (s.ctx as Http2StreamDownstream).x.onRequestBody(d, end); },
  onTrailers(s, f) { (s.ctx as Http2StreamDownstream).x.onRequestTrailers(f); },
  onReset(s) { (s.ctx as Http2StreamDownstream).x.onDownstreamGone(); },
  onWritable(s) { (s.ctx as Http2StreamDownstream).x.onDownstreamWritable(); },
  onClose() {},
};

/** One stream: the exchange's downstream side, in HTTP/2 form. */
class Http2StreamDownstream implements Downstream {
  readonly x: Exchange;
  readonly view: Http2View;
  readonly request: HttpRequestForm | null;
  readonly upstreams = HTTP_UPSTREAMS;
  private readonly conn: Http2Connection;
  private readonly resolved: Http2Target | string;
  private readonly via: string;
  /** The response has no body to send (HEAD, 204, 304 from an HTTP/1 upstream): its head ended the stream. */
  private noBody = false;

  get identityEdits(): HeaderOps | null { return this.down.info.identityEdits ?? null; }
  get countPeer(): boolean { return this.down.info.countPeer === true; }

  constructor(cfg: CompiledConfig, private readonly down: Http2Downstream, private readonly stream: Http2Stream) {
    this.conn = down.conn;
    const protocol: RequestProtocol = isGrpc(stream.contentType || undefined) ? 'grpc' : 'http2';
    const r = resolveTarget(stream, cfg.config.http);
    this.resolved = r;
    if (typeof r === 'string') {
      this.view = new Http2View(protocol, down.info, down.peer, stream, '', '');
      this.request = null;
    } else {
      this.view = new Http2View(protocol, down.info, down.peer, stream, r.authority.host, r.target.path);
      this.request = { kind: 'h2', stream, target: r.target, authority: r.authority };
    }
    this.via = cfg.config.http.via;
    this.x = new Exchange(cfg, this);
  }

  get requestEnded(): boolean {
    return this.stream.remoteEnded;
  }

  start(): void {
    const s = this.stream;
    s.ctx = this;
    s.handler = DOWN;
    if (typeof this.resolved === 'string') {
      this.x.refuse({ status: 400, reason: 'bad_request', body: `${this.resolved}\n` });
      return;
    }
    this.x.start();
  }

  consumed(n: number): void {
    if (n > 0) this.conn.consumed(this.stream, n);
  }

  pauseRequest(): void {}
  resumeRequest(): void {}

  respond(head: ResponseHead, end: boolean, edits: HeaderOps[] | null): void {
    const form = head.form as HttpResponseForm;
    let f: string[];
    if (form.kind === 'h2') {
      f = form.fields;
      addVia(f, this.via);
    } else {
      const h = form.head;
      f = h1ResponseToH2(h.status, h.headers, h.connectionTokens, this.via);
      // a response to HEAD, a 204 or a 304 has no body, whatever its head says
      if (this.stream.method === 'HEAD' || h.status === 204 || h.status === 304) { this.noBody = true; end = true; }
    }
    if (edits) f = applyEdits(f, edits);
    this.conn.respond(this.stream, f, end);
  }

  write(chunk: Buffer, end: boolean): boolean {
    if (this.noBody) return true;
    return this.conn.writeData(this.stream, chunk, end);
  }

  trailers(fields: string[]): void {
    if (this.noBody) return;
    this.conn.writeTrailers(this.stream, trailersToH2(fields));
  }

  abort(): void {
    if (!this.stream.closed) this.conn.reset(this.stream, H2Error.INTERNAL_ERROR);
  }

  localReply(r: LocalReply): number {
    const s = this.stream;
    const conn = this.conn;
    if (!s.closed && !s.headersSent) {
      if (this.view.protocol === 'grpc') {
        const fields = [
          ':status', '200', 'content-type', 'application/grpc', 'grpc-status', String(r.grpcStatus ?? grpcStatusFor(r.status)),
          'grpc-message', encodeURIComponent((r.body ?? r.reason).trim()), 'x-sluice-reason', r.reason,
        ];
        if (r.retryAfter !== undefined) fields.push('retry-after', String(r.retryAfter));
        conn.respond(s, fields, true);
      } else {
        const body = Buffer.from(r.body ?? '', 'utf8');
        const headOnly = s.method === 'HEAD';
        const fields = [':status', String(r.status), 'content-type', 'text/plain', 'content-length', String(body.length), 'x-sluice-reason', r.reason];
        if (r.retryAfter !== undefined) fields.push('retry-after', String(r.retryAfter));
        conn.respond(s, fields, headOnly);
        if (!headOnly) conn.writeData(s, body, true);
      }
    } else if (!s.closed) {
      conn.reset(s, H2Error.INTERNAL_ERROR);
    }
    return r.status;
  }

  fallback(f: CompiledFallback, reason: string): number | undefined {
    const s = this.stream;
    const conn = this.conn;
    if (this.view.protocol === 'grpc') {
      const g = f.grpc;
      if (!g) return undefined;
      if (!s.closed && !s.headersSent) {
        const fields = [':status', '200', 'content-type', 'application/grpc', 'grpc-status', String(g.status), 'x-sluice-fallback', reason];
        if (g.message) fields.push('grpc-message', encodeURIComponent(g.message));
        conn.respond(s, fields, true);
      }
      return 200;
    }
    const fb = f.http;
    if (!fb) return undefined;
    if (!s.closed && !s.headersSent) {
      const fields = [':status', String(fb.status)];
      let typed = false;
      for (const [k, v] of fb.headers) { if (k === 'content-type') typed = true; fields.push(k, v); }
      if (!typed) fields.push('content-type', 'text/plain');
      fields.push('content-length', String(fb.body.length), 'x-sluice-fallback', reason);
      const headOnly = s.method === 'HEAD';
      conn.respond(s, fields, headOnly);
      if (!headOnly) conn.writeData(s, fb.body, true);
    }
    return fb.status;
  }

  done(): void {
    // the answer is complete: the rest of the request is not wanted (RST_STREAM NO_ERROR after our end)
    const s = this.stream;
    if (!s.closed && !s.remoteEnded) this.conn.stopStream(s);
  }

  statusClass(status: number): number {
    return (status / 100) | 0;
  }

  classify(status: number): OutcomeClass {
    return classifyHttpStatus(status);
  }
}
