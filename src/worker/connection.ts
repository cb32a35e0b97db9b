/**
 * The owner of one downstream connection: sniff its protocol from the first
 * bytes, then hand it to the matching session (HTTP/1, HTTP/2) or to the
 * opaque TCP proxy. Sniffing reads in paused mode and unshifts every byte back
 * in the same tick, so the codec sees the stream from its first byte.
 */
import type net from 'node:net';
import { MAX_SNIFF_BYTES, mayBeRouted, sniff, type Sniffed } from '../protocols/sniff';
import { PROTOCOLS, type Protocol } from '../stats/stats';
import type { CompiledConfig, ConnectionInfo, WorkerRuntime } from './runtime';
import { proxyTcp } from '../protocols/tcp/tcp-proxy';
import { Http1Session } from '../protocols/http1/http1-session';
import { serveHttp2 } from '../protocols/http2/http2-session';
import { DubboSession } from '../protocols/dubbo/dubbo-session';


export function serveConnection(rt: WorkerRuntime, socket: net.Socket, info: ConnectionInfo): void {
  const cfg = rt.current();
  const { stats } = cfg;
  // the open-connection gauge is kept by the main thread (listeners.ts): it outlives a dead worker
  stats.inc(info.listener.cxTotal);
  socket.on('error', () => socket.destroy());
  socket.setNoDelay(true);
  const l = info.listener.config;

  // a port known to carry opaque (often server-speaks-first) traffic: nothing to wait for
  const declaredOpaque = l.protocol === 'tcp'
    || (l.protocol === 'auto' && l.opaque === 'passthrough' && info.dst !== null && cfg.opaquePorts.has(info.dst.port));
  if (declaredOpaque || l.protocol === 'dubbo') {
    const verdict = declaredOpaque ? 'tcp' : 'dubbo';
    stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf(verdict)]);
    dispatch(rt, cfg, socket, info, verdict, null);
    return;
  }

  let decided = false;
  const chunks: Buffer[] = [];
  let length = 0;
  const decide = (verdict: Exclude<Sniffed, 'more'> | 'refuse', early: Buffer | null = null) => {
    if (decided) return;
    decided = true;
    clearTimeout(timer);
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    const now = rt.current();
    const accepted = verdict === 'http1' || verdict === 'http2'
      || (l.protocol === 'auto' && (verdict === 'dubbo' || l.opaque === 'passthrough'));
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
   * Before the first byte: a client that stays silent for tcp.sniffTimeoutMs is opaque (a
   * server-speaks-first protocol), or, on an `http` listener, has http.headerTimeoutMs to begin.
   * After it: bytes that may still become a request (HTTP, or Dubbo's first magic byte) wait
   * under http.headerTimeoutMs, from the first byte, and are then refused, never passed on: a
   * slow client must not skip the routes, and a slowloris must not hold the connection longer
   * than an HTTP one could.
   */
  const onTimeout = () => {
    if (length === 0) {
      if (l.protocol === 'http') {
        rt.current().stats.inc(info.listener.cxHeaderTimeout);
        decide('refuse');
        return;
      }
      rt.current().stats.inc(info.listener.sniffTimeout);
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
  socket.once('close', () => clearTimeout(timer));
  socket.on('readable', onReadable);
  socket.once('end', onEnd);
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
  if (!target) {
    socket.destroy();
    return;
  }
  proxyTcp(socket, target, cfg.stats, { connectTimeoutMs: cfg.config.tcp.connectTimeoutMs, idleTimeoutMs: cfg.config.tcp.idleTimeoutMs }, early);
}
