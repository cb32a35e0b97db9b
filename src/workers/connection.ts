/**
 * The owner of one downstream connection: sniff its protocol from the first
 * bytes, then hand it to the matching session (HTTP/1, HTTP/2) or to the
 * opaque TCP proxy. Sniffing reads in paused mode and unshifts every byte back
 * in the same tick, so the codec sees the stream from its first byte.
 */
import type net from 'node:net';
import { sniff, type Sniffed } from '../codecs/sniff';
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
}

const MAX_SNIFF_BYTES = 64;

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

  let decided = false;
  const decide = (verdict: Exclude<Sniffed, 'more'>, early: Buffer | null = null) => {
    if (decided) return;
    decided = true;
    clearTimeout(timer);
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    const proto: Protocol = verdict;
    stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf(proto)]);
    dispatch(rt, rt.current(), socket, info, verdict, early);
  };

  // a port known to carry opaque (often server-speaks-first) traffic: nothing to wait for
  const l = info.listener.config;
  if (l.protocol === 'tcp' || (info.dst !== null && cfg.opaquePorts.has(info.dst.port))) {
    decided = true;
    stats.inc(info.listener.cxProtocol[PROTOCOLS.indexOf('tcp')]);
    dispatch(rt, cfg, socket, info, 'tcp', null);
    return;
  }

  const chunks: Buffer[] = [];
  let length = 0;
  const onReadable = () => {
    let chunk: Buffer | null;
    while ((chunk = socket.read()) !== null) { chunks.push(chunk); length += chunk.length; }
    if (length === 0) return;
    const head = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length);
    const v = sniff(head.subarray(0, MAX_SNIFF_BYTES));
    if (v === 'more' && length < MAX_SNIFF_BYTES) return;
    chunks.length = 0;
    socket.unshift(head);
    decide(v === 'more' ? 'tcp' : v);
  };
  const onEnd = () => {
    // the client half-closed before saying enough: whatever it sent goes through as opaque bytes
    decide('tcp', length ? Buffer.concat(chunks, length) : null);
  };
  const timer = setTimeout(() => {
    stats.inc(info.listener.sniffTimeout);
    if (length) socket.unshift(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length));
    decide('tcp');
  }, cfg.config.tcp.sniffTimeoutMs);
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
