/**
 * The owner of one downstream connection: sniff its protocol from the first
 * bytes, then hand it to the matching session (HTTP/1, HTTP/2) or to the
 * opaque TCP proxy. Sniffing reads in paused mode and unshifts every byte back
 * in the same tick, so the codec sees the stream from its first byte. A socket
 * that reads through the worker's buffer (src/net/direct-read.ts) whose first
 * read is plainly HTTP/1 skips all that: the session gets those bytes as they are.
 *
 * On an inbound listener with mTLS on (tls.inbound, src/tls/), a connection that begins
 * `16 03` is terminated here, in the worker, and what comes out of it is sniffed again as if it
 * were a new connection (HTTP/1, HTTP/2, gRPC, Dubbo, or opaque), carrying the caller's identity:
 *
 *   raw ─sniff─▶ tls ─▶ TLSSocket (client cert required, checked) ─▶ serveConnection(inner) ─sniff─▶ codec
 *            └─▶ plaintext: strict refuses (counted); permissive serves it (counted); disabled: as before
 */
import { performance } from 'node:perf_hooks';
import type net from 'node:net';
import { MAX_SNIFF_BYTES, mayBeRouted, sniff, type Sniffed } from '../protocols/sniff';
import { PROTOCOLS } from '../stats/stats';
import { callerOf, type CompiledConfig, type ConnectionInfo, type WorkerRuntime } from './runtime';
import type { ListenerConfig } from '../config/config';
import type { InboundMode } from '../tls/tls-config';
import { addDeadline, clearDeadline, type DeadlineList, type Timed } from '../exchange/deadlines';
import { log } from '../log';
import { proxyTcp, type TcpProxy } from '../protocols/tcp/tcp-proxy';
import { Http1Session } from '../protocols/http1/http1-session';
import { serveHttp2 } from '../protocols/http2/http2-session';
import { DubboSession } from '../protocols/dubbo/dubbo-session';
import { identityEdits } from '../tls/xfcc';
import { LogEvery } from '../log';
import { isNative } from '../net/native-socket';
import { deliverRead, isDirect, setReadSink, type ReadSink } from '../net/direct-read';

const tlsRefusedLog = new LogEvery('inbound TLS connection refused');
const plaintextRefusedLog = new LogEvery('plaintext connection refused on a strict mTLS port');


/** A module-level listener: a closure here would keep the whole sniffing scope alive as long as the socket. */
function destroyOnError(this: net.Socket): void {
  this.destroy();
}

/**
 * The connection as a Node socket: a native one (src/net/native-socket.ts) is promoted, for
 * whatever needs a stream (TLS, HTTP/2, Dubbo, opaque bytes, a client that has not said enough).
 */
function asNodeSocket(socket: net.Socket, info: ConnectionInfo): net.Socket {
  if (!isNative(socket)) return socket;
  const s = socket.promote();
  info.socket = s;
  return s;
}

export function serveConnection(rt: WorkerRuntime, socket: net.Socket, info: ConnectionInfo): void {
  const cfg = rt.current();
  const { stats } = cfg;
  /** Inside a TLS connection this worker terminated: counted once, as the connection it came in. */
  const inner = info.principal !== undefined;
  // the open-connection gauge is kept by the main thread (listeners.ts): it outlives a dead worker
  if (!inner) stats.inc(info.listener.cxTotal);
  socket.on('error', destroyOnError);
  socket.setNoDelay(true);
  info.socket = socket;
  const l = info.listener.config;
  // the main thread names the port it accepted on (handoff.ts); getsockname only where it could not
  if (!inner && info.localPort === undefined) info.localPort = socket.localPort ?? 0;
  const mode = inner ? 'disabled' : cfg.inboundMode(l, info.dst, info.localPort ?? 0);
  if (!inner) info.identityEdits = identityEdits(l.direction, undefined, undefined);

  // a port known to carry opaque (often server-speaks-first) traffic: nothing to wait for
  const declaredOpaque = l.protocol === 'tcp'
    || (l.protocol === 'auto' && l.opaque === 'passthrough' && info.dst !== null && cfg.opaquePorts.has(info.dst.port));
  // strict: every connection must be TLS, so every one is looked at; permissive: a declared
  // Dubbo listener still has to tell TLS from Dubbo
  const skipDetection = mode === 'strict' ? false : mode === 'permissive' ? declaredOpaque : declaredOpaque || l.protocol === 'dubbo';
  if (skipDetection) {
    const verdict = declaredOpaque ? 'tcp' : 'dubbo';
    stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf(verdict)]);
    dispatch(rt, cfg, asNodeSocket(socket, info), info, verdict, null);
    return;
  }

  const sniffer = new Sniffer(rt, socket, info, mode);
  (socket as SniffedSocket)[SNIFFER] = sniffer;
  addDeadline(sniffer, l.protocol === 'http' ? cfg.config.http.headerTimeoutMs : cfg.config.tcp.sniffTimeoutMs, performance.now());
  // module-level listeners that find the sniffer on the socket: no closures per connection
  socket.on('close', onSniffClose);
  socket.on('end', onSniffEnd);
  if (sniffer.direct) setReadSink(socket, sniffer);
  // a direct socket's reads come to the sniffer's onRead; its Readable side is listened to
  // only once bytes go there (a first read that is not plainly HTTP/1)
  else sniffer.listenReadable();
}

const SNIFFER = Symbol('sniffer');
type SniffedSocket = net.Socket & { [SNIFFER]?: Sniffer | null };

function onSniffReadable(this: SniffedSocket): void { this[SNIFFER]?.onReadable(); }
function onSniffEnd(this: SniffedSocket): void { this[SNIFFER]?.onEnd(); }
function onSniffClose(this: SniffedSocket): void {
  const s = this[SNIFFER];
  if (s) clearDeadline(s);
}

/**
 * Recognition of one connection's protocol from its first bytes, then the hand-off to its
 * session. One object per connection (no closures): its socket's listeners find it through
 * SNIFFER, the thread's deadline list for that duration (src/exchange/deadlines.ts: one timer
 * per duration, shared with the route timeouts) holds it for the sniff or header timeout,
 * and a socket that reads through the thread's buffer gives it its reads (it is their sink).
 */
class Sniffer implements Timed, ReadSink {
  dlPrev: Timed | null = null;
  dlNext: Timed | null = null;
  dlAt = 0;
  dlList: DeadlineList | null = null;
  decided = false;
  readonly direct: boolean;
  /** The socket has onSniffReadable: only then is it taken off (a Readable's removeListener('readable') costs a nextTick). */
  private readableOn = false;
  private readonly l: ListenerConfig;
  private chunks: Buffer[] = [];
  private length = 0;
  /** Silent past tcp.sniffTimeoutMs: the upstream is dialled, and the first to speak decides. */
  private held: TcpProxy | null = null;

  constructor(
    private readonly rt: WorkerRuntime, private socket: net.Socket, private readonly info: ConnectionInfo,
    private readonly mode: InboundMode,
  ) {
    this.l = info.listener.config;
    this.direct = isDirect(socket);
  }

  /**
   * Sniffing is over: its deadline, reader and listeners go, and with them the last references
   * to this object (the chunks, the held upstream), which an idle connection must not keep. The
   * listeners are taken off, not left to find no sniffer: a third listener for 'end' or 'close'
   * grows the emitter's array to 19 slots, about 300 bytes more per idle connection.
   */
  private stop(): void {
    this.decided = true;
    clearDeadline(this);
    const socket = this.socket as SniffedSocket;
    socket[SNIFFER] = null;
    // reads go to the Readable side again, unless the session dispatched to takes them (HTTP/1)
    if (this.direct) setReadSink(socket, null);
    if (this.readableOn) { this.readableOn = false; socket.removeListener('readable', onSniffReadable); }
    socket.removeListener('end', onSniffEnd);
    socket.removeListener('close', onSniffClose);
  }

  /** From here on the connection needs a stream: a native socket becomes a Node socket (its sink, listeners and this sniffer come along). */
  private promote(): net.Socket {
    this.socket = asNodeSocket(this.socket, this.info);
    return this.socket;
  }

  listenReadable(): void {
    if (this.readableOn) return;
    this.readableOn = true;
    this.socket.on('readable', onSniffReadable);
  }

  decide(verdict: Exclude<Sniffed, 'more'> | 'refuse', early: Buffer | null = null): void {
    if (this.decided) return;
    this.stop();
    if (verdict !== 'http1' && verdict !== 'refuse') this.promote();
    const { rt, socket, info, l, mode } = this;
    const now = rt.current();
    if (mode !== 'disabled' && verdict !== 'refuse') {
      if (this.held !== null) { this.held.drop(); this.held = null; }
      if (verdict === 'tls') {
        now.stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf('tls')]);
        terminate(rt, now, socket, info);
        return;
      }
      if (mode === 'strict') {
        now.stats.inc(info.listener.tlsPlaintextRefused);
        plaintextRefusedLog.note({ listener: l.name, peer: callerOf(socket, info).address, port: info.dst?.port ?? socket.localPort, protocol: verdict });
        socket.destroy();
        return;
      }
      now.stats.inc(info.listener.tlsPlaintext);
      info.countPeer = true;
      rt.peerStats?.connection(l.name, null, callerOf(socket, info).address);
    }
    const accepted = verdict === 'http1' || verdict === 'http2'
      || (l.protocol === 'dubbo' && verdict === 'dubbo')
      || (l.protocol === 'auto' && (verdict === 'dubbo' || l.opaque === 'passthrough'));
    const held = this.held;
    this.held = null;
    if (held !== null) {
      if (accepted && (verdict === 'tcp' || verdict === 'tls')) {
        // the client spoke first, and not a protocol with routes: opaque after all, on the connection already made
        now.stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf(verdict)]);
        held.release(early);
        return;
      }
      held.drop();
    }
    if (verdict === 'refuse' || !accepted) {
      // not a protocol this listener takes: nothing of it reaches an upstream
      now.stats.inc(info.listener.cxRefused);
      socket.destroy();
      return;
    }
    now.stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf(verdict)]);
    dispatch(rt, now, socket, info, verdict, early);
  }

  /**
   * Silence past tcp.sniffTimeoutMs: a server-speaks-first protocol, or only a slow client. The
   * upstream is dialled now and held: if it speaks first, the connection is opaque TCP; if the
   * client does, its bytes are recognised as any first bytes are, so a request that waited out
   * the sniff timeout still meets its routes.
   */
  private holdForFirstSpeaker(): boolean {
    const { rt, l, socket, info } = this;
    const now = rt.current();
    if (l.protocol !== 'auto' || l.opaque !== 'passthrough' || this.mode === 'strict') return false;
    const target = now.passthrough({ listener: l.name, destination: info.dst });
    // dialled before anyone speaks, so decided now; a client that speaks HTTP or Dubbo first meets the policy on each request
    if (!target) return false;
    if (!admitOpaque(now, socket, info)) { this.stop(); socket.destroy(); return true; }
    const c = now.config.tcp;
    this.held = proxyTcp(this.promote(), target, now.stats, {
      connectTimeoutMs: c.connectTimeoutMs, idleTimeoutMs: c.idleTimeoutMs, held: true, tls: now.dialTls(target.tls),
      onServerFirst: () => {
        if (this.decided) return;
        // the server spoke first: whatever the client sent meanwhile goes to it as it is
        if (this.length > 0) { this.socket.unshift(this.head()); }
        this.stop();
        this.held = null;
        rt.current().stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf('tcp')]);
      },
    });
    return true;
  }

  /** The bytes read so far, as one buffer; the chunks are let go. */
  private head(): Buffer {
    const { chunks } = this;
    const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, this.length);
    chunks.length = 0;
    return head;
  }

  /**
   * Before the first byte: a client that stays silent for tcp.sniffTimeoutMs is opaque (a
   * server-speaks-first protocol), or, on an `http` listener, has http.headerTimeoutMs to begin.
   * After it: bytes that may still become a request (HTTP, or Dubbo's first magic byte) wait
   * under http.headerTimeoutMs, from the first byte, and are then refused, never passed on: a
   * slow client must not skip the routes, and a slowloris must not hold the connection longer
   * than an HTTP one could.
   */
  onDeadline(): void {
    if (this.decided || this.socket.destroyed) return;
    try {
      this.timedOut();
    } catch (err) {
      // a bug of ours: lose this connection, never the worker
      log.error({ err }, 'sniff timeout');
      this.socket.destroy();
    }
  }

  private timedOut(): void {
    const { rt, info, l, mode } = this;
    if (this.length === 0) {
      if (mode === 'strict') {
        // a mesh peer's sidecar speaks first (its ClientHello): silence is not mTLS
        rt.current().stats.inc(info.listener.tlsPlaintextRefused);
        this.decide('refuse');
        return;
      }
      if (l.protocol === 'http') {
        rt.current().stats.inc(info.listener.cxHeaderTimeout);
        this.decide('refuse');
        return;
      }
      rt.current().stats.inc(info.listener.sniffTimeout);
      if (this.held === null && this.holdForFirstSpeaker()) return;
      this.decide('tcp');
      return;
    }
    const head = this.head();
    if (mayBeRouted(head)) {
      rt.current().stats.inc(info.listener.cxHeaderTimeout);
      this.decide('refuse');
      return;
    }
    rt.current().stats.inc(info.listener.sniffTimeout);
    this.socket.unshift(head);
    this.decide('tcp');
  }

  onReadable(): void {
    const { socket, chunks, info } = this;
    let chunk: Buffer | null;
    const first = this.length === 0;
    while ((chunk = socket.read()) !== null) { chunks.push(chunk); this.length += chunk.length; }
    if (this.length === 0) return;
    const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, this.length);
    let v = sniff(head.length > MAX_SNIFF_BYTES ? head.subarray(0, MAX_SNIFF_BYTES) : head);
    if (v === 'more' && this.length >= MAX_SNIFF_BYTES) v = 'http1'; // cannot happen by sniff's bounds; the strict decoder decides
    if (v === 'more') {
      if (first) {
        info.firstByteAt = performance.now();
        clearDeadline(this);
        addDeadline(this, this.rt.current().config.http.headerTimeoutMs, info.firstByteAt);
      }
      return;
    }
    if (info.firstByteAt === undefined) info.firstByteAt = performance.now();
    chunks.length = 0;
    socket.unshift(head);
    this.decide(v);
  }

  /** The client half-closed before saying enough: it cannot be a request any more. */
  onEnd(): void {
    if (this.length === 0) { this.decide('tcp'); return; }
    this.decide('tcp', Buffer.concat(this.chunks, this.length));
  }

  /**
   * A read of a socket that reads through the thread's buffer (src/net/direct-read.ts): first
   * bytes that decide HTTP/1 by themselves go straight to its session, with no copy and no
   * stream; first bytes of a TLS handshake on a port that terminates TLS are pushed into the
   * Readable side, where the TLS socket takes them, and decided at once. Anything else (more
   * bytes needed, another protocol, a held upstream) is pushed into the socket's Readable side
   * and recognised as above.
   */
  onRead(bytes: Buffer): boolean {
    let socket = this.socket;
    const v = !this.decided && this.held === null && this.length === 0
      ? sniff(bytes.length > MAX_SNIFF_BYTES ? bytes.subarray(0, MAX_SNIFF_BYTES) : bytes) : 'more';
    if (v === 'http1') {
      this.decide('http1');
      if (socket.destroyed) return false;
      return deliverRead(socket, bytes);
    }
    socket = this.promote();
    if (v === 'tls' && this.mode !== 'disabled') {
      // a ClientHello to terminate: it waits in the Readable side, which the TLS socket made over
      // this one reads first; no 'readable' turn, read and unshift to decide what is decided here
      setReadSink(socket, null);
      deliverRead(socket, bytes);
      this.info.firstByteAt = performance.now();
      this.decide('tls');
      return true;
    } else {
      setReadSink(socket, null);
      if (!this.decided) this.listenReadable();
    }
    return deliverRead(socket, bytes);
  }
}

/**
 * Authorization of a connection carried as opaque bytes (it has no request to decide on): its
 * listener, direction and caller. Refused: false, and the caller closes it.
 */
function admitOpaque(cfg: CompiledConfig, socket: net.Socket, info: ConnectionInfo): boolean {
  const l = info.listener.config;
  return cfg.admitConnection({ direction: l.direction, listener: l.name, source: callerOf(socket, info) });
}

/** Terminates inbound mTLS, then serves what is inside as a connection of its own, with the caller's identity. */
function terminate(rt: WorkerRuntime, cfg: CompiledConfig, socket: net.Socket, info: ConnectionInfo): void {
  const peer = info.peer ?? { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
  const lr = info.listener;
  const upstream = lr.config.cluster !== undefined ? cfg.clusters.get(lr.config.cluster) : undefined;
  rt.tls.terminate(socket, cfg.config.tls?.handshakeTimeoutMs ?? 10_000, (r) => {
    const now = rt.current();
    if (!r.ok) {
      now.stats.inc(lr.tlsRefused[r.reason]);
      tlsRefusedLog.note({ listener: lr.config.name, peer: peer.address, reason: r.reason, detail: r.message });
      return;
    }
    now.stats.inc(lr.tlsHandshake);
    if (r.resumed) now.stats.inc(lr.tlsResumed);
    rt.peerStats?.connection(lr.config.name, r.principal, peer.address);
    serveConnection(rt, r.socket, {
      listener: lr, dst: info.dst, principal: r.principal, ownId: r.ownId, peer, localPort: info.localPort,
      identityEdits: identityEdits(lr.config.direction, r.principal, r.ownId), tlsGen: r.gen, countPeer: true,
    });
  }, upstream?.config.protocol === 'http2');
}

function dispatch(
  rt: WorkerRuntime, cfg: CompiledConfig, socket: net.Socket, info: ConnectionInfo,
  verdict: Exclude<Sniffed, 'more'>, early: Buffer | null,
): void {
  if (verdict === 'http1') {
    new Http1Session(rt, socket, info).start();
    return;
  }
  if (verdict === 'http2') {
    serveHttp2(rt, socket, info);
    return;
  }
  if (verdict === 'dubbo') {
    new DubboSession(rt, socket, info).start();
    return;
  }
  // TLS passes through as opaque TCP until its termination lands.
  const target = cfg.passthrough({ listener: info.listener.config.name, destination: info.dst });
  if (!target || !admitOpaque(cfg, socket, info)) {
    socket.destroy();
    return;
  }
  proxyTcp(socket, target, cfg.stats, { connectTimeoutMs: cfg.config.tcp.connectTimeoutMs, idleTimeoutMs: cfg.config.tcp.idleTimeoutMs, tls: cfg.dialTls(target.tls) }, early);
}
