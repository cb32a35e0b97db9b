/**
 * The owner of one downstream connection: sniff its protocol from the first
 * bytes, then hand it to the matching session (HTTP/1, HTTP/2) or to the
 * opaque TCP proxy. Sniffing reads in paused mode and unshifts every byte back
 * in the same tick, so the codec sees the stream from its first byte.
 */
import type net from 'node:net';
import { MAX_SNIFF_BYTES, mayBeRouted, sniff, type Sniffed } from '../codecs/sniff';
import { PROTOCOLS, type Protocol } from '../stats/stats';
import type { LocalReply } from '../filters/filter';
import type { RouteTarget } from '../filters/router';
import type { ClusterStats, Endpoint } from '../upstream/cluster';
import type { OriginalDst } from './messages';
import type { CompiledConfig, ListenerRuntime, WorkerRuntime } from './runtime';
import { proxyTcp } from './tcp-proxy';
import { Http1Session } from './http1-session';
import { serveHttp2 } from './http2-session';
import { DubboSession } from './dubbo-session';

export interface ConnectionInfo {
  listener: ListenerRuntime;
  dst: OriginalDst | null;
  /** When the client's first byte arrived (performance.now()): the HTTP header timeout counts from it. */
  firstByteAt?: number;
}

/** Where opaque bytes (and unrouted requests) go: original destination, local app, or the listener's cluster. */
export function passthroughTarget(cfg: CompiledConfig, info: ConnectionInfo): { host: string; port: number; cstats: ClusterStats } | null {
  const l = info.listener.config;
  if (l.capture && info.dst) {
    if (l.direction === 'inbound') return { host: cfg.config.inbound.applicationAddress, port: info.dst.port, cstats: cfg.inboundStats };
    return { host: info.dst.address, port: info.dst.port, cstats: cfg.passthroughStats };
  }
  if (l.cluster !== undefined) {
    const c = cfg.clusters.get(l.cluster);
    const ep = c?.pick('');
    if (c && ep) return { host: ep.host, port: ep.port, cstats: c.stats };
  }
  return null;
}

export interface UpstreamChoice {
  host: string;
  port: number;
  /** `host:port`, the pool key. */
  key: string;
  cstats: ClusterStats;
  /** The cluster endpoint, or null for the original destination / local app. */
  endpoint: Endpoint | null;
}

const NO_HEALTHY_UPSTREAM: LocalReply = { status: 503, reason: 'no_healthy_upstream', body: 'no healthy upstream\n' };
const NO_ROUTE: LocalReply = { status: 404, reason: 'no_route', body: 'no route\n' };

/**
 * Where a routed request goes, whatever its protocol: an endpoint of the route's cluster
 * (avoiding `avoid` when there is a choice), or the connection's passthrough target.
 * A local reply when there is neither.
 */
export function chooseUpstream(
  cfg: CompiledConfig, info: ConnectionInfo, target: Exclude<RouteTarget, { kind: 'direct' }>, avoid?: Endpoint,
): UpstreamChoice | LocalReply {
  if (target.kind === 'cluster') {
    const ep = target.cluster.pick(target.labelsKey, avoid);
    if (!ep) return NO_HEALTHY_UPSTREAM;
    return { host: ep.host, port: ep.port, key: ep.key, cstats: target.cluster.stats, endpoint: ep };
  }
  const t = passthroughTarget(cfg, info);
  if (!t) return NO_ROUTE;
  return { host: t.host, port: t.port, key: `${t.host}:${t.port}`, cstats: t.cstats, endpoint: null };
}

export function isLocalReply(c: UpstreamChoice | LocalReply): c is LocalReply {
  return (c as LocalReply).status !== undefined;
}

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
  const target = passthroughTarget(cfg, info);
  if (!target) {
    socket.destroy();
    return;
  }
  proxyTcp(socket, target, cfg.stats, { connectTimeoutMs: cfg.config.tcp.connectTimeoutMs, idleTimeoutMs: cfg.config.tcp.idleTimeoutMs }, early);
}
