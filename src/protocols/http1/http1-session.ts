/**
 * A downstream HTTP/1.x connection: decode requests, run each as an Exchange, write each
 * response back. One request at a time; pipelined requests wait in the decoder until the
 * response before them is complete.
 *
 *   socket ─▶ Http1Decoder ─▶ Http1Downstream ─▶ Exchange ─▶ attempts (HTTP/1 or HTTP/2 upstream)
 *   socket ◀──── Http1Downstream (framing, local replies) ◀──────┘
 *
 * Bodies stream in both directions with backpressure: a slow reader pauses the socket at the
 * other end, so memory stays flat whatever the body size.
 */
import { performance } from 'node:perf_hooks';
import type net from 'node:net';
import { Http1Decoder, type Http1Handler, type Http1Head } from './http1-decoder';
import { cachedLocalReply, chunkParts, encodeFallback, encodeLocalReply, encodeResponseHead, lastChunk, relayIncludedBody, relayResponseHead, type Framing } from './http1-encoder';
import type { ProtocolError } from '../../errors';
import { Exchange, type Downstream, type ResponseHead } from '../../exchange/exchange';
import type { HeaderOps } from '../../exchange/filter';
import { classifyHttpStatus, type LocalReply, type OutcomeClass } from '../../exchange/outcome';
import { type Peer, type RequestView } from '../../exchange/request-view';
import { normalizeTarget, parseAuthority, splitAbsolute, type Authority, type PathPolicy, type Target } from '../http/http-target';
import { applyEdits, fieldOf, h2ResponseToH1, type HttpRequestForm, type HttpResponseForm } from '../http/forms';
import { HTTP_UPSTREAMS } from '../http/http-upstreams';
import { callerOf, type ConnectionInfo, type WorkerRuntime } from '../../worker/runtime';
import { SocketWrites } from '../../worker/held-writes';
import type { CompiledFallback } from '../../protection/fallback';
import { copyOf, isDirect, setReadSink } from '../../net/direct-read';
import { isNative } from '../../net/native-socket';
import { LENT_WRITE_MIN, writeLent } from '../../net/lent-write';
import { addDeadline, clearDeadline, type DeadlineList, type Timed } from '../../exchange/deadlines';
import type { ConnectionList, Listed } from '../../worker/connection-list';

class Http1View implements RequestView {
  readonly protocol = 'http1' as const;
  readonly method: string;
  readonly authority: string;
  constructor(private readonly session: Http1Session, readonly head: Http1Head, readonly service: string, readonly path: string) {
    this.method = head.method;
    this.authority = service;
  }
  get direction() { return this.session.info.listener.config.direction; }
  get listener() { return this.session.info.listener.config.name; }
  get destination() { return this.session.info.dst; }
  get source(): Peer { return this.session.peer(); }
  /**
   * A field sent more than once reads as its values joined (`, `; `; ` for cookie), as the HTTP/2
   * view gives it (RFC 9110 §5.3), so a route or a rate limit key sees the same value whichever
   * protocol carried the request.
   */
  header(name: string): string | undefined {
    const h = this.head.headers;
    let out: string | undefined;
    for (let i = 0; i < h.length; i += 2) {
      if (h[i].length === name.length && h[i].toLowerCase() === name) {
        out = out === undefined ? h[i + 1] : `${out}${name === 'cookie' ? '; ' : ', '}${h[i + 1]}`;
      }
    }
    return out;
  }
  headerValues(name: string): string[] {
    const h = this.head.headers;
    const out: string[] = [];
    for (let i = 0; i < h.length; i += 2) {
      if (h[i].length === name.length && h[i].toLowerCase() === name) out.push(h[i + 1]);
    }
    return out;
  }
}

interface Http1Target {
  authority: Authority;
  target: Target;
}

/** Where a downstream socket's shared listeners find their session. */
const SESSION = Symbol('http1Session');
type OwnedSocket = net.Socket & { [SESSION]?: Http1Session };

/**
 * The authority and path a request is routed on, which are also what is forwarded: an
 * absolute-form target's authority wins over Host (RFC 9112 §3.2.2), and goes upstream as
 * Host with the origin-form rest. A reason string when the request is refused.
 */
function resolveTarget(head: Http1Head, policy: PathPolicy): Http1Target | string {
  let authority = head.host;
  let rest = head.target;
  const c = rest.charCodeAt(0);
  if (c !== 47 /* / */ && rest !== '*') {
    const abs = splitAbsolute(rest);
    if (!abs) return 'an unsupported request target';
    if (abs.authority === '') return 'an absolute-form target without a host';
    authority = abs.authority;
    rest = abs.rest;
  }
  const a = parseAuthority(authority);
  if (!a) return authority === head.host ? 'an invalid Host header' : 'an invalid authority in the request target';
  const t = normalizeTarget(rest, policy);
  if (typeof t === 'string') return t;
  return { authority: a, target: t };
}

export class Http1Session implements Http1Handler, Timed {
  private decoder!: Http1Decoder;
  private current: Http1Downstream | null = null;
  private headerTimer: NodeJS.Timeout | null = null;
  private draining = false;
  private clientEnded = false;
  /** We are ending the connection: input is no longer parsed. */
  private closing = false;
  private peerCache: Peer | null = null;
  /**
   * The last request's Host and target and what they resolved to: the requests of a keep-alive
   * connection nearly always repeat both, and resolving is a pure function of the two strings
   * and the path policy, so an equal pair reuses the result (refusals are not kept).
   */
  private lastHost = '';
  private lastTarget = '';
  private lastPolicy: PathPolicy | null = null;
  private lastResolved: Http1Target | null = null;
  /** The decoder's header limit (the config the connection started with): past it, pipelined bytes stop the reads. */
  private maxHeaderBytes = 0;
  /** The session paused the socket (backpressure, pipelined bytes): only then does it need a resume(). */
  private readPaused = false;
  /**
   * The idle timeout, checked lazily: reads and finished exchanges only bump `activity`, and a
   * check every quarter of the timeout closes the connection after four quiet checks in a row
   * (so between 1 and 1.25 times the timeout after the last activity). A socket timeout
   * (socket.setTimeout) would move a timer in Node's lists on every read and every write. The
   * check is the session's entry in the thread's deadline list of that quarter
   * (src/exchange/deadlines.ts: one Node timer per duration), not a Timeout of its own: a
   * connection that lives for one request links itself in and out, and allocates nothing.
   */
  private idleCheckMs = 0;
  dlPrev: Timed | null = null;
  dlNext: Timed | null = null;
  dlAt = 0;
  dlList: DeadlineList | null = null;
  /** Its links in the worker's list of open connections (src/worker/connection-list.ts). */
  connPrev: Listed | null = null;
  connNext: Listed | null = null;
  connList: ConnectionList<Listed> | null = null;
  private activity = 0;
  private checkedActivity = 0;
  private quietChecks = 0;
  /** The socket reads through the thread's buffer (src/net/direct-read.ts). */
  private direct = false;
  /**
   * What is written to the socket in this turn of the event loop, sent at its end in one write:
   * local replies (replyAtTurnEnd), and responses written while a batch holds (holdTurn).
   */
  readonly writes: SocketWrites;
  closed = false;

  constructor(readonly rt: WorkerRuntime, public socket: net.Socket, readonly info: ConnectionInfo) {
    this.writes = new SocketWrites(socket);
  }

  start(): void {
    const http = this.rt.current().config.http;
    this.maxHeaderBytes = http.maxHeaderBytes;
    this.decoder = new Http1Decoder('request', this, { maxHeaderBytes: http.maxHeaderBytes, maxHeaders: http.maxHeaders });
    const s = this.socket as OwnedSocket;
    // shared listeners that find the session on the socket: no closures per connection
    s[SESSION] = this;
    // a socket that reads through the thread's buffer gives its bytes to onRead; others emit 'data'
    this.direct = isDirect(s);
    if (this.direct) setReadSink(s, this);
    else s.on('data', Http1Session.onSocketData);
    s.on('end', Http1Session.onSocketEnd);
    s.on('close', Http1Session.onSocketClose);
    // one listener for the connection's life: the exchange that paused its upstream resumes it
    s.on('drain', Http1Session.onSocketDrain);
    this.startIdleTimer(http.idleTimeoutMs);
    this.rt.connections.add(this);
    if (this.rt.draining) this.draining = true;
    if (this.rt.closingIdle) this.closeIdle();
  }

  private static onSocketData(this: OwnedSocket, d: Buffer): void { this[SESSION]!.onData(d); }
  private static onSocketEnd(this: OwnedSocket): void { this[SESSION]!.onEnd(); }
  private static onSocketClose(this: OwnedSocket): void { this[SESSION]!.onClose(); }
  private static onSocketDrain(this: OwnedSocket): void { this[SESSION]!.current?.x.onDownstreamWritable(); }

  /**
   * The connection as a Node socket (an upgrade's tunnel pipes streams): a native socket is
   * promoted (src/net/native-socket.ts), with what the turn held for it sent first; null when
   * the client is gone.
   */
  nodeSocket(): net.Socket | null {
    const s = this.out; // what the turn held goes first: its write may find the client gone
    if (s.destroyed) return null;
    if (!isNative(s)) return s;
    const n = s.promote();
    this.socket = n;
    this.writes.socket = n;
    this.info.socket = n;
    return n;
  }

  /** Bytes the decoder holds after an upgrade request (sent before the 101 came back). */
  takeRemainder(): Buffer {
    return this.decoder.takeRemainder();
  }

  peer(): Peer {
    const i = this.info;
    return (this.peerCache ??= callerOf(this.socket, i));
  }

  // ── downstream socket ────────────────────────────────────────────────────

  /** @internal Bytes in the thread's read buffer (src/net/direct-read.ts), valid during this call only. */
  onRead(bytes: Buffer): boolean {
    this.onData(bytes);
    return true; // backpressure pauses the socket (pause() stops the handle's reads)
  }

  private onData(d: Buffer): void {
    this.activity++;
    if (this.closing) return;
    try {
      this.decoder.push(d, this.direct);
      // pipelined requests queue in the decoder; stop reading once a head's worth is waiting
      if (this.decoder.bufferedBytes > this.maxHeaderBytes) this.pauseReads();
      this.headerPending();
    } catch (err) {
      // a bug of ours, not the peer's: lose this connection, never the worker
      this.rt.logError(err as Error, 'http1 session');
      this.destroy();
    }
  }

  /** @internal Stop reading the socket until resumeReads(). */
  pauseReads(): void {
    this.readPaused = true;
    this.socket.pause();
  }

  /** @internal Read again (a no-op unless the session paused the socket: a resume() costs a few calls per request). */
  resumeReads(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    this.socket.resume();
  }

  /** Where a request is routed and forwarded, or why it is refused; the previous request's answer when it names the same Host and target. */
  resolve(head: Http1Head, policy: PathPolicy): Http1Target | string {
    if (head.host === this.lastHost && head.target === this.lastTarget && policy === this.lastPolicy && this.lastResolved !== null) return this.lastResolved;
    const r = resolveTarget(head, policy);
    if (typeof r !== 'string') {
      this.lastHost = head.host;
      this.lastTarget = head.target;
      this.lastPolicy = policy;
      this.lastResolved = r;
    }
    return r;
  }

  private onEnd(): void {
    this.clientEnded = true;
    if (this.closing) return;
    // An incomplete request (head or body) gets its answer through onError. With a response in
    // flight, requests pipelined before the FIN are still served, then the connection closes.
    if (this.current || !this.decoder.idle) this.decoder.end();
    if (!this.current && this.decoder.idle) this.closeSoon();
  }

  private onClose(): void {
    this.closed = true;
    this.clearHeaderTimer();
    this.stopIdleTimer();
    this.rt.connections.delete(this);
    this.current?.x.onDownstreamGone();
  }

  private startIdleTimer(ms: number): void {
    if (!(ms > 0)) return;
    this.idleCheckMs = Math.max(1, Math.ceil(ms / IDLE_CHECKS));
    addDeadline(this, this.idleCheckMs, performance.now());
  }

  /** @internal The connection is no longer HTTP/1 (a tunnel) or is gone: no idle checks. */
  stopIdleTimer(): void {
    this.idleCheckMs = 0;
    clearDeadline(this);
  }

  /** @internal A quarter of the idle timeout went by (the session's deadline). */
  onDeadline(): void {
    if (this.idleCheckMs === 0 || this.closed) return;
    try {
      if (this.activity !== this.checkedActivity) {
        this.checkedActivity = this.activity;
        this.quietChecks = 0;
      } else if (++this.quietChecks >= IDLE_CHECKS) {
        this.quietChecks = 0;
        this.onIdle();
        if (this.closed || this.idleCheckMs === 0) return;
      }
      addDeadline(this, this.idleCheckMs, performance.now());
    } catch (err) {
      // a bug of ours: lose this connection, never the worker (the list's other entries still run)
      this.rt.logError(err as Error, 'http1 idle check');
      this.destroy();
    }
  }

  private onIdle(): void {
    const d = this.current;
    if (d && !d.x.finished) return; // a request in flight has its own timeout
    if (d) {
      // answered, but the client stopped sending the rest of its request body
      const cfg = this.rt.current();
      cfg.stats.inc(cfg.protocol('http1').timeout);
    }
    this.destroy();
  }

  /**
   * The header timeout runs from the first byte of a request to the end of its head. Between
   * requests a keep-alive connection is governed by the idle timeout alone.
   */
  private headerPending(): void {
    if (this.headerTimer || this.current || this.closing || this.decoder.idle) return;
    let ms = this.rt.current().config.http.headerTimeoutMs;
    const first = this.info.firstByteAt;
    if (first !== undefined) {
      // the first request's head began while the protocol was being recognised
      this.info.firstByteAt = undefined;
      ms = Math.max(1, ms - (performance.now() - first));
    }
    this.headerTimer = setTimeout(onHeaderTimeout, ms, this);
  }

  /** @internal */
  headerTimeout(): void {
    this.headerTimer = null;
    if (this.current || this.closed || this.closing || this.decoder.idle) return;
    const cfg = this.rt.current();
    cfg.stats.inc(cfg.protocol('http1').timeout);
    this.writeErrorAndClose(408, 'request header timeout\n');
  }

  private clearHeaderTimer(): void {
    if (this.headerTimer) { clearTimeout(this.headerTimer); this.headerTimer = null; }
  }

  closeSoon(): void {
    this.closing = true;
    this.clearHeaderTimer();
    if (this.closed) return;
    this.out.end();
    this.socket.destroySoon?.();
  }

  /**
   * Closes a plain TCP connection with nothing left to read at once, as nginx does: when what
   * was written is all in the kernel, close() sends it and then the FIN, with no shutdown
   * request, no 'finish' and no wait for another turn. Anything still queued in the socket
   * (a client slow to read) takes the usual way, end() and then destroy.
   */
  private closeNow(): void {
    this.closing = true;
    this.clearHeaderTimer();
    if (this.closed) return;
    const s = this.out; // the response held for the turn's end goes now (into the kernel, when it takes it all)
    if (s.writableLength === 0 && !s.writableEnded) { s.destroy(); return; }
    s.end();
    s.destroySoon?.();
  }

  /** The next response says `connection: close`; an idle connection stays open for the client's next request. */
  drain(): void {
    this.draining = true;
  }

  closeIdle(): void {
    this.draining = true;
    if (!this.current && this.decoder.idle) this.closeSoon();
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /**
   * A reply of Sluice's own goes out with the others of this turn of the event loop (turn-end.ts).
   * Held in `writes`, not in the socket (a corked socket buffers each write in an object of its
   * own), so everything that writes to the socket or ends it goes through `writes` or `out`, which
   * sends it first.
   */
  replyAtTurnEnd(bytes: Buffer): void {
    this.writes.push(bytes);
  }

  /** The socket to write to or end: what is held for the end of the turn goes first. */
  get out(): net.Socket {
    return this.writes.out;
  }

  /** Resets the connection, after what was written already (a reply held for the turn end included). */
  destroy(): void {
    this.out.destroy();
  }

  private writeErrorAndClose(status: number, body: string): void {
    this.out.write(encodeLocalReply(status, 'bad_request', body, true));
    this.closeSoon();
  }

  // ── decoder events ───────────────────────────────────────────────────────

  onHead(head: Http1Head): void {
    this.clearHeaderTimer();
    const d = new Http1Downstream(this, head);
    this.current = d;
    d.start();
  }

  onBody(chunk: Buffer): void {
    // a view of the shared read buffer: whoever keeps it (a write libuv holds, a retry's copy) copies it
    this.current?.x.onRequestBody(chunk, false, this.direct);
  }

  onMessageEnd(trailers: string[] | null): boolean {
    const d = this.current;
    if (!d) return true;
    d.requestDone = true;
    if (trailers !== null && trailers.length > 0) d.x.onRequestTrailers(trailers);
    else d.x.onRequestEnd();
    if (d.x.finished && this.current === d) {
      this.current = null;
      const more = this.afterExchange(d);
      if (more && !d.tunnel) this.decoder.cancelUpgrade();
      return more;
    }
    return this.current === null; // hold pipelined requests until this response is done
  }

  onError(err: ProtocolError): void {
    const cfg = this.rt.current();
    cfg.stats.inc(cfg.protocol('http1').protocolError);
    const d = this.current;
    if (d && d.x.responseStarted) { this.destroy(); return; }
    // the request turned out malformed (body framing): its upstream side is given up quietly
    this.current = null;
    d?.x.onDownstreamGone();
    this.writeErrorAndClose(err.status, `${err.message}\n`);
  }

  /** Called when an exchange is over (its response written, or given up). */
  exchangeFinished(d: Http1Downstream): void {
    if (this.current !== d) return;
    this.activity++;
    if (d.tunnel) {
      // the bytes are the tunnel's now; no more requests on this connection
      this.current = null;
      this.closing = true;
      this.clearHeaderTimer();
      return;
    }
    if (!d.requestDone) {
      // the rest of the request body still has to be read past, even if backpressure paused us
      this.resumeReads();
      return;
    }
    this.current = null;
    if (this.afterExchange(d)) {
      this.resumeReads();
      // an upgrade the upstream declined: the next request follows on the same connection
      this.decoder.cancelUpgrade();
      this.decoder.resume();
      this.headerPending();
    }
  }

  /** Decides whether the connection serves another request; closes it when not. */
  private afterExchange(d: Http1Downstream): boolean {
    if (d.closeAfter || this.draining || (this.clientEnded && this.decoder.idle)) {
      // the client said this request was its last, or ended, and sent nothing past it: nothing
      // is left to read, so the connection closes once the response is in the kernel
      if (this.direct && this.decoder.idle && (!d.view.head.keepAlive || this.clientEnded)) this.closeNow();
      else this.closeSoon();
      return false;
    }
    return !this.closed;
  }
}

/** The framing of a response not begun yet (shared: a framing is replaced, never changed). */
const NO_FRAMING: Framing = Object.freeze({ kind: 'none' });
const EMPTY = Buffer.alloc(0);

function onHeaderTimeout(session: Http1Session): void {
  session.headerTimeout();
}

/** Quiet checks in a row that make a connection idle (one every idleTimeoutMs / IDLE_CHECKS). */
const IDLE_CHECKS = 4;

/** A tunnel's socket, idle past tcp.idleTimeoutMs. */
function destroyOnTimeout(this: net.Socket): void {
  this.destroy();
}

/** One request on the connection: the exchange's downstream side, in HTTP/1 form. */
class Http1Downstream implements Downstream {
  readonly x: Exchange;
  readonly view: Http1View;
  private requestForm: HttpRequestForm | null = null;
  readonly upstreams = HTTP_UPSTREAMS;
  private readonly resolved: Http1Target | string;
  private outFraming: Framing = NO_FRAMING;
  /** Body bytes the head was written with (respond): left out of the body as it is handed over. */
  private bodyAhead = 0;
  /** The request's end was decoded (onMessageEnd). */
  requestDone = false;
  closeAfter = false;
  /** 101: the connection is now a tunnel to the upstream. */
  tunnel = false;

  get identityEdits(): HeaderOps | null { return this.session.info.identityEdits ?? null; }
  get countPeer(): boolean { return this.session.info.countPeer === true; }

  constructor(private readonly session: Http1Session, private readonly head: Http1Head) {
    const cfg = session.rt.current();
    const r = session.resolve(head, cfg.config.http);
    this.resolved = r;
    if (typeof r === 'string') this.view = new Http1View(session, head, '', '');
    else this.view = new Http1View(session, head, r.authority.host, r.target.path);
    this.x = new Exchange(cfg, this);
  }

  /** Made when an attempt or a mirror asks for it: a request answered locally never needs it. */
  get request(): HttpRequestForm | null {
    const r = this.resolved;
    if (typeof r === 'string') return null;
    return (this.requestForm ??= { kind: 'h1', head: this.head, target: r.target, authority: r.authority });
  }

  /** No body follows the head: the request is whole already. */
  get requestEnded(): boolean {
    return !this.head.chunked && this.head.contentLength <= 0;
  }

  start(): void {
    if (this.head.upgrade && this.head.method === 'CONNECT') {
      this.x.refuse({ status: 501, reason: 'no_route', body: 'CONNECT is not supported\n' });
      return;
    }
    if (typeof this.resolved === 'string') {
      this.x.refuse({ status: 400, reason: 'bad_request', body: `${this.resolved}\n` });
      return;
    }
    this.x.start();
  }

  consumed(): void {}

  pauseRequest(): void {
    this.session.pauseReads();
  }

  resumeRequest(): void {
    this.session.resumeReads();
  }

  informational(form: unknown): void {
    // 100 Continue and friends go to a client that speaks HTTP/1.1
    const h = (form as Http1Head);
    if (this.head.versionMinor !== 1 || typeof h.status !== 'number') return;
    this.session.writes.send(encodeResponseHead({
      status: h.status, reason: h.reason, headers: h.headers, connectionTokens: h.connectionTokens, framing: { kind: 'none' }, via: '',
    }));
  }

  respond(head: ResponseHead, end: boolean, edits: HeaderOps[] | null): void {
    const form = head.form as HttpResponseForm;
    const via = this.session.rt.current().config.http.via;
    let reason: string;
    let headers: readonly string[];
    let tokens: readonly string[];
    let contentLength: number;
    if (form.kind === 'h1') {
      const h = form.head;
      reason = h.reason;
      headers = h.headers;
      tokens = h.connectionTokens;
      contentLength = h.contentLength;
    } else {
      const c = h2ResponseToH1(form.fields);
      reason = REASONS[head.status] ?? 'Unknown';
      headers = c.headers;
      tokens = [];
      contentLength = end ? 0 : c.contentLength;
    }
    if (edits) headers = applyEdits(headers, edits);
    const status = head.status;
    const noBody = this.head.method === 'HEAD' || status === 204 || status === 304 || status === 101;
    const v11 = this.head.versionMinor === 1;
    let framing: Framing;
    if (noBody) framing = { kind: 'none' };
    else if (contentLength >= 0) framing = { kind: 'length', length: contentLength };
    else if (v11) framing = { kind: 'chunked' };
    else framing = { kind: 'close' };
    this.outFraming = framing;
    this.closeAfter = framing.kind === 'close' || !this.head.keepAlive || this.session.isDraining;
    let connection: 'close' | 'keep-alive' | undefined;
    if (this.closeAfter) connection = 'close';
    else if (!v11) connection = 'keep-alive';
    const upgrade = status === 101 ? this.view.header('upgrade') ?? fieldOf(headers, 'upgrade') : undefined;
    const session = this.session;
    // the upstream's head as it came, where that is byte for byte what encodeResponseHead would write
    const relayed = form.kind === 'h1' && form.raw !== null && edits === null && framing.kind === 'length' && connection === undefined && upgrade === undefined
      ? relayResponseHead(form.raw, form.head, via, contentLength, LENT_WRITE_MIN - 1) : null;
    if (relayed !== null) {
      // with a small body that came in the same read: written now, left out when it is handed over
      if (relayIncludedBody()) this.bodyAhead = contentLength;
      session.writes.send(relayed);
      return;
    }
    session.writes.send(encodeResponseHead({
      status, reason, headers, connectionTokens: tokens, framing, via, connection, upgrade,
      keepLength: noBody && status !== 204 && form.kind === 'h1' ? contentLength : undefined,
    }));
    if (end && framing.kind === 'chunked') session.writes.send(lastChunk(null));
  }

  write(chunk: Buffer, end: boolean): boolean {
    const session = this.session;
    if (this.bodyAhead > 0) {
      const n = Math.min(this.bodyAhead, chunk.length);
      this.bodyAhead -= n;
      chunk = n === chunk.length ? EMPTY : chunk.subarray(n);
    }
    let ok = true;
    if (chunk.length > 0) {
      if (this.outFraming.kind === 'chunked') ok = session.writes.sendAll(chunkParts(chunk));
      else if (this.outFraming.kind !== 'none') ok = session.writes.send(chunk);
    }
    if (end && this.outFraming.kind === 'chunked') ok = session.writes.send(lastChunk(null)) && ok;
    return ok;
  }

  /**
   * A chunk valid during this call only: a large one with length framing goes out now (after
   * what the turn held for the socket), copied only where the socket does not take it whole
   * (src/net/lent-write.ts); anything else is copied and written as usual.
   */
  writeLent(chunk: Buffer, end: boolean): boolean {
    // the body written with the head (respond): nothing of it to copy
    if (this.bodyAhead >= chunk.length) return this.write(chunk, end);
    if (this.outFraming.kind !== 'length' || chunk.length < LENT_WRITE_MIN) return this.write(copyOf(chunk), end);
    return writeLent(this.session.out, chunk); // after what is held for the socket
  }

  trailers(fields: string[]): void {
    if (this.outFraming.kind === 'chunked') this.session.writes.send(lastChunk(fields));
  }

  abort(): void {
    this.session.destroy();
  }

  localReply(r: LocalReply): number {
    // a request body we did not read yet would have to be read past, and a client that
    // waits for 100-continue never sends it: close rather than guess. A request without a body
    // is complete at its head (the decoder reports its end right after this), so it keeps the connection.
    const h = this.head;
    const bodyLeft = !this.requestDone && (h.chunked || h.contentLength > 0);
    this.closeAfter = bodyLeft || !h.keepAlive || this.session.isDraining;
    this.session.replyAtTurnEnd(cachedLocalReply(r, this.closeAfter, h.method === 'HEAD'));
    return r.status;
  }

  fallback(f: CompiledFallback, reason: string): number | undefined {
    const fb = f.http;
    if (!fb) return undefined;
    const h = this.head;
    const bodyLeft = !this.requestDone && (h.chunked || h.contentLength > 0);
    this.closeAfter = bodyLeft || !h.keepAlive || this.session.isDraining;
    this.session.replyAtTurnEnd(encodeFallback(fb.status, fb.headers, fb.body, reason, this.closeAfter, h.method === 'HEAD'));
    return fb.status;
  }

  batch(start: boolean): void {
    // what the batch writes goes out at the end of the turn, with the other sockets' answers
    if (start) this.session.writes.holdTurn();
  }

  upgrade(up: net.Socket, rest: Buffer): void {
    const session = this.session;
    this.closeAfter = true;
    this.tunnel = true;
    session.exchangeFinished(this);
    const down = session.nodeSocket();
    if (down === null) {
      // the client is gone (a reset before the 101): there is nothing to tunnel to
      up.destroy();
      return;
    }
    down.removeAllListeners('data');
    down.removeAllListeners('end');
    setReadSink(down, null); // the tunnel reads the socket as a stream
    session.stopIdleTimer(); // the tunnel's idle timeout is the socket's own (below)
    // bytes the client sent after its upgrade request, held by the stopped decoder, go first
    const early = session.takeRemainder();
    if (early.length) up.write(early);
    if (rest.length) down.write(rest);
    down.setTimeout(session.rt.current().config.tcp.idleTimeoutMs);
    down.on('timeout', destroyOnTimeout);
    up.pipe(down);
    down.pipe(up);
    // a clean close lets what is already written drain (pipe passed the FIN on); a reset does not
    up.on('close', (hadError: boolean) => (hadError ? down.destroy() : down.destroySoon()));
    down.on('close', (hadError: boolean) => (hadError ? up.destroy() : up.destroySoon()));
    up.resume();
    down.resume();
  }

  done(): void {
    if (this.tunnel) return; // upgrade() takes it from here
    if (!this.session.closed) this.session.exchangeFinished(this);
  }

  statusClass(status: number): number {
    return (status / 100) | 0;
  }

  classify(status: number): OutcomeClass {
    return classifyHttpStatus(status);
  }
}

const REASONS: Record<number, string> = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 206: 'Partial Content', 301: 'Moved Permanently', 302: 'Found',
  303: 'See Other', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect', 400: 'Bad Request',
  401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 413: 'Content Too Large',
  429: 'Too Many Requests', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
