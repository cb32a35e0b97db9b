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
import type net from 'node:net';
import { MAX_SNIFF_BYTES, mayBeRouted, sniff, type Sniffed } from '../protocols/sniff';
import { PROTOCOLS, type Protocol } from '../stats/stats';
import type { CompiledConfig, ConnectionInfo, WorkerRuntime } from './runtime';
import { proxyTcp, type TcpProxy } from '../protocols/tcp/tcp-proxy';
import { Http1Session } from '../protocols/http1/http1-session';
import { serveHttp2 } from '../protocols/http2/http2-session';
import { DubboSession } from '../protocols/dubbo/dubbo-session';
import { identityEdits } from '../tls/xfcc';
import { LogEvery } from '../log';
import { deliverRead, isDirect, setReadSink } from '../net/direct-read';

const tlsRefusedLog = new LogEvery('inbound TLS connection refused');
const plaintextRefusedLog = new LogEvery('plaintext connection refused on a strict mTLS port');


/** A module-level listener: a closure here would keep the whole sniffing scope alive as long as the socket. */
function destroyOnError(this: net.Socket): void {
  this.destroy();
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
    dispatch(rt, cfg, socket, info, verdict, null);
    return;
  }

  let decided = false;
  const direct = isDirect(socket);
  const chunks: Buffer[] = [];
  let length = 0;
  /** Silent past tcp.sniffTimeoutMs: the upstream is dialled, and the first to speak decides. */
  let held: TcpProxy | null = null;
  /**
   * Sniffing is over: its timer and listeners go, and with them the last references to this
   * scope (its closures, the timer, the chunks), which an idle connection must not keep.
   */
  const stopSniffing = () => {
    decided = true;
    clearTimeout(timer);
    // reads go to the Readable side again, unless the session dispatched to takes them (HTTP/1)
    if (direct) setReadSink(socket, null);
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', onClose);
  };
  const decide = (verdict: Exclude<Sniffed, 'more'> | 'refuse', early: Buffer | null = null) => {
    if (decided) return;
    stopSniffing();
    const now = rt.current();
    if (mode !== 'disabled' && verdict !== 'refuse') {
      if (held !== null) { held.drop(); held = null; }
      if (verdict === 'tls') {
        now.stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf('tls')]);
        terminate(rt, now, socket, info);
        return;
      }
      if (mode === 'strict') {
        now.stats.inc(info.listener.tlsPlaintextRefused);
        plaintextRefusedLog.note({ listener: l.name, peer: socket.remoteAddress, port: info.dst?.port ?? socket.localPort, protocol: verdict });
        socket.destroy();
        return;
      }
      now.stats.inc(info.listener.tlsPlaintext);
      info.countPeer = true;
      rt.peerStats?.connection(l.name, null, socket.remoteAddress ?? '');
    }
    const accepted = verdict === 'http1' || verdict === 'http2'
      || (l.protocol === 'dubbo' && verdict === 'dubbo')
      || (l.protocol === 'auto' && (verdict === 'dubbo' || l.opaque === 'passthrough'));
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
  };

  /**
   * Silence past tcp.sniffTimeoutMs: a server-speaks-first protocol, or only a slow client. The
   * upstream is dialled now and held: if it speaks first, the connection is opaque TCP; if the
   * client does, its bytes are recognised as any first bytes are, so a request that waited out
   * the sniff timeout still meets its routes.
   */
  const holdForFirstSpeaker = (): boolean => {
    const now = rt.current();
    if (l.protocol !== 'auto' || l.opaque !== 'passthrough' || mode === 'strict') return false;
    const target = now.passthrough({ listener: l.name, destination: info.dst });
    // dialled before anyone speaks, so decided now; a client that speaks HTTP or Dubbo first meets the policy on each request
    if (!target) return false;
    if (!admitOpaque(now, socket, info)) { stopSniffing(); socket.destroy(); return true; }
    const c = now.config.tcp;
    held = proxyTcp(socket, target, now.stats, {
      connectTimeoutMs: c.connectTimeoutMs, idleTimeoutMs: c.idleTimeoutMs, held: true, tls: now.dialTls(target.tls),
      onServerFirst: () => {
        if (decided) return;
        // the server spoke first: whatever the client sent meanwhile goes to it as it is
        if (length > 0) { socket.unshift(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length)); chunks.length = 0; }
        stopSniffing();
        rt.current().stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf('tcp')]);
      },
    });
    return true;
  };

  /**
   * Before the first byte: a client that stays silent for tcp.sniffTimeoutMs is opaque (a
   * server-speaks-first protocol), or, on an `http` listener, has http.headerTimeoutMs to begin.
   * After it: bytes that may still become a request (HTTP, or Dubbo's first magic byte) wait
   * under http.headerTimeoutMs, from the first byte, and are then refused, never passed on: a
   * slow client must not skip the routes, and a slowloris must not hold the connection longer
   * than an HTTP one could.
   */
  const onTimeout = () => {
    if (length === 0) {
      if (mode === 'strict') {
        // a mesh peer's sidecar speaks first (its ClientHello): silence is not mTLS
        rt.current().stats.inc(info.listener.tlsPlaintextRefused);
        decide('refuse');
        return;
      }
      if (l.protocol === 'http') {
        rt.current().stats.inc(info.listener.cxHeaderTimeout);
        decide('refuse');
        return;
      }
      rt.current().stats.inc(info.listener.sniffTimeout);
      if (held === null && holdForFirstSpeaker()) return;
      decide('tcp');
      return;
    }
    const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length);
    chunks.length = 0;
    if (mayBeRouted(head)) {
      rt.current().stats.inc(info.listener.cxHeaderTimeout);
      decide('refuse');
      return;
    }
    rt.current().stats.inc(info.listener.sniffTimeout);
    socket.unshift(head);
    decide('tcp');
  };
  let timer = setTimeout(onTimeout, l.protocol === 'http' ? cfg.config.http.headerTimeoutMs : cfg.config.tcp.sniffTimeoutMs);

  const onReadable = () => {
    let chunk: Buffer | null;
    const first = length === 0;
    while ((chunk = socket.read()) !== null) { chunks.push(chunk); length += chunk.length; }
    if (length === 0) return;
    const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length);
    let v = sniff(head.length > MAX_SNIFF_BYTES ? head.subarray(0, MAX_SNIFF_BYTES) : head);
    if (v === 'more' && length >= MAX_SNIFF_BYTES) v = 'http1'; // cannot happen by sniff's bounds; the strict decoder decides
    if (v === 'more') {
      if (first) {
        info.firstByteAt = performance.now();
        clearTimeout(timer);
        timer = setTimeout(onTimeout, rt.current().config.http.headerTimeoutMs);
      }
      return;
    }
    if (first) clearTimeout(timer);
    if (info.firstByteAt === undefined) info.firstByteAt = performance.now();
    chunks.length = 0;
    socket.unshift(head);
    decide(v);
  };
  const onEnd = () => {
    // the client half-closed before saying enough: it cannot be a request any more
    if (length === 0) { decide('tcp'); return; }
    const head = Buffer.concat(chunks, length);
    chunks.length = 0;
    decide('tcp', head);
  };
  const onClose = () => clearTimeout(timer);
  socket.once('close', onClose);
  socket.on('readable', onReadable);
  socket.once('end', onEnd);
  /**
   * A socket that reads through the thread's buffer (src/net/direct-read.ts): first bytes that
   * decide HTTP/1 by themselves go straight to its session, with no copy and no stream. Anything
   * else (more bytes needed, another protocol, a held upstream) is pushed into the socket's
   * Readable side and recognised as above.
   */
  if (direct) {
    setReadSink(socket, {
      onRead(bytes: Buffer): boolean {
        if (!decided && held === null && length === 0
          && sniff(bytes.length > MAX_SNIFF_BYTES ? bytes.subarray(0, MAX_SNIFF_BYTES) : bytes) === 'http1') {
          decide('http1');
          if (socket.destroyed) return false;
        } else {
          setReadSink(socket, null);
        }
        return deliverRead(socket, bytes);
      },
    });
  }
}

/**
 * Authorization of a connection carried as opaque bytes (it has no request to decide on): its
 * listener, direction and caller. Refused: false, and the caller closes it.
 */
function admitOpaque(cfg: CompiledConfig, socket: net.Socket, info: ConnectionInfo): boolean {
  const l = info.listener.config;
  const source = { address: info.peer?.address ?? socket.remoteAddress ?? '', port: info.peer?.port ?? socket.remotePort ?? 0, principal: info.principal };
  return cfg.admitConnection({ direction: l.direction, listener: l.name, source });
}

/** Terminates inbound mTLS, then serves what is inside as a connection of its own, with the caller's identity. */
function terminate(rt: WorkerRuntime, cfg: CompiledConfig, socket: net.Socket, info: ConnectionInfo): void {
  const peer = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
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
