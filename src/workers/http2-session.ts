/**
 * Downstream HTTP/2 (h2c prior knowledge, gRPC included). Node's HTTP/2 stack
 * does the framing; each stream runs through the filter chain and goes to an
 * upstream HTTP/2 session (the default: captured HTTP/2 stays HTTP/2) or, for
 * clusters that say `protocol: http1`, to an HTTP/1.1 connection.
 *
 *   stream ─▶ filter chain ─▶ Http2Pool session.request() ─▶ upstream (h2)
 *                        └──▶ Http1Pool connection ─────────▶ upstream (h1)
 *
 * Trailers (gRPC status) are carried end to end; resets are passed on as resets,
 * so a cut-off response is never mistaken for a complete one.
 */
import http2 from 'node:http2';
import type net from 'node:net';
import type { Http1Head } from '../codecs/http1/http1-decoder';
import { chunkParts, isHopByHop, lastChunk, type Framing } from '../codecs/http1/http1-encoder';
import type { LocalReply } from '../filters/filter';
import { hostOnly, pathOf, type Peer, type RequestView, type RequestProtocol } from '../filters/request-view';
import type { RouteTarget } from '../filters/router';
import type { ClusterStats, Endpoint } from '../upstream/cluster';
import type { AcquireError, Http1Connection, Http1ResponseSink } from '../upstream/http1-pool';
import { passthroughTarget, type ConnectionInfo } from './connection';
import type { CompiledConfig, WorkerRuntime } from './runtime';

const {
  HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE,
  NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM,
} = http2.constants;

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

class Http2View implements RequestView {
  readonly service: string;
  readonly method: string;
  readonly path: string;
  constructor(readonly protocol: RequestProtocol, private readonly info: ConnectionInfo, private readonly peerOf: () => Peer,
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
  get source() { return this.peerOf(); }
  header(name: string): string | undefined {
    const v = this.headers[name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : String(v);
  }
}

let pendingInfo: ConnectionInfo | null = null;
const sessionInfo = new WeakMap<http2.Http2Session, ConnectionInfo>();
const servers = new WeakMap<WorkerRuntime, http2.Http2Server>();

function serverFor(rt: WorkerRuntime): http2.Http2Server {
  let server = servers.get(rt);
  if (server) return server;
  const http = rt.current().config.http;
  server = http2.createServer({
    maxHeaderListPairs: http.maxHeaders,
    maxSendHeaderBlockLength: http.maxHeaderBytes,
    settings: { maxHeaderListSize: http.maxHeaderBytes, maxConcurrentStreams: 1000, enablePush: false },
    // the whole session's buffered bytes; Node's default of 10 MB per session is generous for a proxy
    maxSessionMemory: 32,
  });
  server.on('session', (session: http2.ServerHttp2Session) => {
    if (pendingInfo) sessionInfo.set(session, pendingInfo);
    const drainer = { drain: () => { if (!session.closed) session.close(); } };
    rt.connections.add(drainer);
    session.on('close', () => rt.connections.delete(drainer));
    session.on('error', () => session.destroy());
    session.setTimeout(rt.current().config.http.idleTimeoutMs, () => session.close());
    if (rt.draining) session.close();
  });
  server.on('stream', (stream, headers) => {
    const info = sessionInfo.get(stream.session as http2.ServerHttp2Session);
    if (!info) { stream.close(NGHTTP2_INTERNAL_ERROR); return; }
    try {
      new Http2Exchange(rt, rt.current(), info, stream, headers).start();
    } catch (err) {
      rt.logError(err as Error, 'http2 stream');
      if (!stream.destroyed) stream.close(NGHTTP2_INTERNAL_ERROR);
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
  pendingInfo = info;
  try {
    server.emit('connection', socket);
  } finally {
    pendingInfo = null;
  }
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

class Http2Exchange implements Http1ResponseSink {
  private readonly view: Http2View;
  private readonly protocol: RequestProtocol;
  private readonly start0 = performance.now();
  private target: RouteTarget | null = null;
  private cstats: ClusterStats | null = null;
  private endpoint: Endpoint | null = null;
  private upstreamKey = '';
  private timer: NodeJS.Timeout | null = null;
  private upstreamActive = false;
  private responded = false;
  private finished = false;
  private status = 0;
  private reason: string | undefined;
  private bytesIn = 0;
  private bytesOut = 0;
  private attempts = 0;
  // h2 upstream
  private up: http2.ClientHttp2Stream | null = null;
  private trailers: http2.IncomingHttpHeaders | null = null;
  // h1 upstream
  private conn: Http1Connection | null = null;
  private reqFraming: Framing = { kind: 'none' };

  constructor(
    private readonly rt: WorkerRuntime,
    private readonly cfg: CompiledConfig,
    private readonly info: ConnectionInfo,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
  ) {
    const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
    this.protocol = typeof ct === 'string' && ct.startsWith('application/grpc') ? 'grpc' : 'http2';
    const sock = stream.session?.socket;
    this.view = new Http2View(this.protocol, info, () => ({ address: sock?.remoteAddress ?? '', port: sock?.remotePort ?? 0 }), headers);
  }

  private get pstats() { return this.cfg.protocol(this.protocol); }

  start(): void {
    const { stats } = this.cfg;
    stats.inc(this.pstats.rqTotal);
    stats.inc(this.pstats.rqActive);
    this.stream.on('close', () => this.onDownstreamClose());
    this.stream.on('error', () => {});
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
    let host: string;
    let port: number;
    let upstreamProtocol: 'http1' | 'http2' = 'http2';
    if (target.kind === 'cluster') {
      const ep = target.cluster.pick(target.labelsKey, avoid);
      if (!ep) { this.localReply({ status: 503, reason: 'no_healthy_upstream', body: 'no healthy upstream\n' }); return; }
      this.endpoint = ep;
      this.cstats = target.cluster.stats;
      host = ep.host; port = ep.port; this.upstreamKey = ep.key;
      if (target.cluster.config.protocol === 'http1') upstreamProtocol = 'http1';
    } else {
      const t = passthroughTarget(this.cfg, this.info);
      if (!t) {
        this.cfg.stats.inc(this.pstats.noRoute);
        this.localReply({ status: 404, reason: 'no_route', body: 'no route\n' });
        return;
      }
      this.cstats = t.cstats;
      host = t.host; port = t.port; this.upstreamKey = `${host}:${port}`;
    }
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

  // ── HTTP/2 upstream ──────────────────────────────────────────────────────

  private forwardH2(host: string, port: number): void {
    const connectTimeoutMs = this.target?.kind === 'cluster' ? this.target.cluster.config.connectTimeoutMs : this.cfg.config.tcp.connectTimeoutMs;
    const session = this.rt.pools.http2(host, port, this.upstreamKey).get(this.cstats!, connectTimeoutMs);
    const out: http2.OutgoingHttpHeaders = {};
    for (const name of Object.keys(this.headers)) {
      if (name === 'connection' || name === 'keep-alive' || name === 'proxy-connection' || name === 'transfer-encoding' || name === 'upgrade') continue;
      out[name] = this.headers[name];
    }
    const via = this.cfg.config.http.via;
    if (via) out.via = out.via ? `${out.via}, ${via}` : via;
    const endStream = this.stream.readableEnded || (this.stream as unknown as { endAfterHeaders: boolean }).endAfterHeaders;
    let up: http2.ClientHttp2Stream;
    try {
      up = session.request(out, { endStream });
    } catch {
      this.failBeforeResponse('upstream_connect_failed');
      return;
    }
    this.up = up;
    this.countUpstream();
    const connectedAtStart = !session.connecting;
    up.on('response', (h) => {
      if (this.finished) return;
      const status = Number(h[HTTP2_HEADER_STATUS]);
      if (status < 200) return;
      this.status = status;
      this.responded = true;
      const rh: http2.OutgoingHttpHeaders = { ...h };
      if (via) rh.via = rh.via ? `${rh.via}, ${via}` : via;
      const endNow = (up as unknown as { endAfterHeaders: boolean }).endAfterHeaders;
      try {
        this.stream.respond(rh, { endStream: endNow, waitForTrailers: !endNow });
      } catch { this.stream.close(NGHTTP2_INTERNAL_ERROR); }
      if (endNow) this.finish();
    });
    up.on('trailers', (t) => { this.trailers = t; });
    this.stream.on('wantTrailers', () => {
      this.stream.sendTrailers(this.trailers ?? {}); // none: Node sends an empty DATA frame with END_STREAM
    });
    up.on('data', (d: Buffer) => {
      this.bytesOut += d.length;
      if (!this.stream.write(d)) { up.pause(); this.stream.once('drain', () => up.resume()); }
    });
    up.on('end', () => {
      if (this.finished) return;
      if (!this.stream.destroyed && this.responded) this.stream.end();
      this.finish();
    });
    up.on('error', () => {});
    up.on('close', () => {
      if (this.finished) return;
      const rst = up.rstCode;
      if (!this.responded) {
        const neverConnected = !connectedAtStart && (session.destroyed && !up.sentHeaders || rst === NGHTTP2_REFUSED_STREAM);
        this.failBeforeResponse(neverConnected || session.destroyed ? 'upstream_connect_failed' : 'upstream_reset');
        return;
      }
      // cut off mid-response: reset the client's stream too
      this.cfg.stats.inc(this.cstats!.rqReset);
      this.reason = 'upstream_reset';
      if (!this.stream.destroyed) this.stream.close(rst || NGHTTP2_INTERNAL_ERROR);
      this.finish();
    });
    if (!endStream) {
      this.stream.on('data', (d: Buffer) => {
        this.bytesIn += d.length;
        if (!up.write(d)) { this.stream.pause(); up.once('drain', () => this.stream.resume()); }
      });
      this.stream.on('end', () => up.end());
    }
  }

  private failBeforeResponse(reason: 'upstream_connect_failed' | 'upstream_reset'): void {
    if (reason === 'upstream_reset') this.cfg.stats.inc(this.cstats!.rqReset);
    this.localReply({ status: 503, reason, body: reason === 'upstream_reset' ? 'upstream reset before response\n' : 'upstream connect failed\n' });
  }

  // ── HTTP/1.1 upstream ────────────────────────────────────────────────────

  private forwardH1(host: string, port: number): void {
    const c = this.cfg.config;
    const cluster = this.target?.kind === 'cluster' ? this.target.cluster.config : undefined;
    const limits = {
      maxConnections: cluster?.maxConnectionsPerEndpoint ?? 1024,
      maxPending: cluster?.maxPendingRequests ?? 1024,
      connectTimeoutMs: cluster?.connectTimeoutMs ?? c.tcp.connectTimeoutMs,
      idleTimeoutMs: c.http.upstreamIdleTimeoutMs,
      maxHeaderBytes: c.http.maxHeaderBytes,
      maxHeaders: c.http.maxHeaders,
    };
    const pool = this.rt.pools.http1(host, port, this.upstreamKey, limits);
    this.stream.pause();
    pool.acquire((err, conn) => this.onAcquired(err, conn), limits, this.cstats!);
  }

  private onAcquired(err: AcquireError | null, conn: Http1Connection | null): void {
    if (this.finished) { conn?.abandon(); return; }
    if (err || !conn) {
      const t = this.target!;
      if (err !== 'overflow' && t.kind === 'cluster' && t.cluster.endpoints.length > 1 && this.attempts < 3) { this.connect(this.endpoint ?? undefined); return; }
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
    const endStream = this.stream.readableEnded || (this.stream as unknown as { endAfterHeaders: boolean }).endAfterHeaders;
    const cl = h['content-length'];
    this.reqFraming = endStream ? { kind: cl !== undefined ? 'length' : 'none', length: 0 } as Framing
      : cl !== undefined && /^\d+$/.test(String(cl)) ? { kind: 'length', length: Number(cl) } : { kind: 'chunked' };
    let head = `${method} ${String(h[HTTP2_HEADER_PATH])} HTTP/1.1\r\nhost: ${String(h[HTTP2_HEADER_AUTHORITY] ?? h.host ?? this.upstreamKey)}\r\n`;
    const flat = toFlat(h);
    for (let i = 0; i < flat.length; i += 2) {
      if (flat[i] === 'te' || flat[i] === 'host') continue;
      head += `${flat[i]}: ${flat[i + 1]}\r\n`;
    }
    const via = this.cfg.config.http.via;
    if (via) head += `via: ${h.via ? `${String(h.via)}, ` : ''}${via}\r\n`;
    if (this.reqFraming.kind === 'length') head += `content-length: ${this.reqFraming.length}\r\n`;
    else if (this.reqFraming.kind === 'chunked') head += 'transfer-encoding: chunked\r\n';
    conn.socket.write(head + '\r\n', 'latin1');
    if (endStream) { conn.requestDone = true; return; }
    this.stream.on('data', (d: Buffer) => {
      if (!this.conn) return;
      this.bytesIn += d.length;
      const sock = this.conn.socket;
      let ok: boolean;
      if (this.reqFraming.kind === 'chunked') { const p = chunkParts(d); sock.write(p[0]); sock.write(p[1]); ok = sock.write(p[2]); }
      else ok = sock.write(d);
      if (!ok) { this.stream.pause(); sock.once('drain', () => this.stream.resume()); }
    });
    this.stream.on('end', () => {
      if (!this.conn) return;
      if (this.reqFraming.kind === 'chunked') this.conn.socket.write(lastChunk(null));
      this.conn.requestDone = true;
    });
    this.stream.resume();
  }

  onResponseHead(h: Http1Head): void {
    if (h.status < 200 || this.finished) return;
    this.status = h.status;
    this.responded = true;
    const noBody = this.headers[HTTP2_HEADER_METHOD] === 'HEAD' || h.status === 204 || h.status === 304;
    try {
      this.stream.respond(fromFlat(h.status, h.headers, h.connectionTokens, this.cfg.config.http.via), { endStream: noBody, waitForTrailers: !noBody });
    } catch { this.stream.close(NGHTTP2_INTERNAL_ERROR); }
    if (!noBody) {
      this.stream.on('wantTrailers', () => {
        this.stream.sendTrailers(this.trailers ?? {});
      });
    }
  }

  onResponseBody(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    if (this.stream.destroyed) return;
    if (!this.stream.write(chunk) && this.conn) {
      const up = this.conn.socket;
      up.pause();
      this.stream.once('drain', () => up.resume());
    }
  }

  onResponseEnd(trailers: string[] | null): void {
    if (trailers) {
      const t: http2.IncomingHttpHeaders = {};
      for (let i = 0; i < trailers.length; i += 2) t[trailers[i].toLowerCase()] = trailers[i + 1];
      this.trailers = t;
    }
    const conn = this.conn;
    this.conn = null;
    if (conn && !conn.requestDone) conn.abandon();
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
    this.finish();
  }

  onUpstreamError(kind: 'reset' | 'protocol'): void {
    this.conn = null;
    if (this.finished) return;
    this.cfg.stats.inc(this.cstats!.rqReset);
    if (!this.responded) {
      this.localReply(kind === 'protocol'
        ? { status: 502, reason: 'upstream_reset', body: 'upstream sent an invalid response\n' }
        : { status: 503, reason: 'upstream_reset', body: 'upstream connection reset before response\n' });
      return;
    }
    this.reason = 'upstream_reset';
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
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
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
    this.finish();
  }

  private onDownstreamClose(): void {
    if (this.finished) return;
    this.dropUpstream();
    this.finish();
  }

  private dropUpstream(): void {
    const up = this.up;
    this.up = null;
    if (up && !up.destroyed) up.close(NGHTTP2_CANCEL);
    const conn = this.conn;
    this.conn = null;
    conn?.abandon();
  }

  private localReply(r: LocalReply): void {
    if (this.finished) return;
    this.dropUpstream();
    this.status = r.status;
    this.reason = r.reason;
    const s = this.stream;
    if (!s.destroyed && !s.headersSent) {
      try {
        if (this.protocol === 'grpc') {
          s.respond({
            [HTTP2_HEADER_STATUS]: 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusFor(r.status)),
            'grpc-message': encodeURIComponent((r.body ?? r.reason).trim()), 'x-sluice-reason': r.reason,
          }, { endStream: true });
        } else {
          const body = Buffer.from(r.body ?? '', 'utf8');
          s.respond({ [HTTP2_HEADER_STATUS]: r.status, 'content-type': 'text/plain', 'content-length': body.length, 'x-sluice-reason': r.reason });
          s.end(body);
        }
      } catch { s.close(NGHTTP2_INTERNAL_ERROR); }
    }
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const { stats } = this.cfg;
    stats.dec(this.pstats.rqActive);
    const cls = (this.status / 100) | 0;
    if (this.status) stats.inc(this.pstats.rqClass[cls]);
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
