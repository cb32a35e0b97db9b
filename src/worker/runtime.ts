/**
 * What a worker keeps: the compiled config (rebuilt when the shared mailbox
 * has a newer one), upstream pools (kept across configs), stats, access log.
 * Nothing here is tied to a thread: the main thread builds one too when it has
 * to serve connections itself.
 */
import { attachOverrides } from '../alarms/overrides';
import type { EndpointConfig, ListenerConfig, SluiceConfig } from '../config/config';
import { Router } from '../exchange/router';
import type { ExchangeEnv } from '../exchange/exchange';
import type { Peer, RequestView } from '../exchange/request-view';
import { createFilters } from '../filters';
import type { SharedState } from '../shared/shared-state';
import type { SharedMemory } from '../shared/shared-memory';
import { PROTOCOLS, RESPONSE_CLASSES, Stats, type Protocol, type ProtocolStats } from '../stats/stats';
import { ClusterRuntime, clusterStats, type ClusterStats } from '../upstream/cluster';
import { principalsKey, UpstreamPools } from '../upstream/upstream-pools';
import { EndpointReader, isDiscoveredList, isDiscoveredName } from '../upstream/endpoint-directory';
import { DiscoveredCluster, DiscoveryClient, TOUCH_REGION, type DiscoveryResult } from '../upstream/discovered';
import type { ConfigSnapshot, OriginalDst } from '../shared/messages';
import { AccessLog } from '../stats/access-log';
import { log } from '../log';
import { RpcStatsCollector } from '../stats/rpc-stats';
import { PeerStatsCollector } from '../stats/peer-stats';
import { IdentityMailbox } from '../tls/identity-mailbox';
import { TlsRuntime, type Generation, type OutboundTls, type PeerRefusal } from '../tls/tls-runtime';
import type net from 'node:net';
import { MeshDestinations, type InboundMode } from '../tls/tls-config';
import { refusalSlots } from '../tls/tls-stats';
import type { ConnectionView, Filter, HeaderOps } from '../exchange/filter';
import { ConnectionList, type Listed } from './connection-list';


export interface ListenerRuntime {
  config: ListenerConfig;
  cxTotal: number;
  cxActive: number;
  sniffTimeout: number;
  /** Bytes that may still become an HTTP request did not complete within http.headerTimeoutMs. */
  cxHeaderTimeout: number;
  /** Not a protocol the listener takes (opaque: refuse, protocol: http). */
  cxRefused: number;
  /** Indexed like PROTOCOLS. */
  cxProtocol: number[];
  tlsHandshake: number;
  tlsResumed: number;
  tlsPlaintext: number;
  tlsPlaintextRefused: number;
  tlsPlaintextRetired: number;
  tlsRetired: number;
  tlsRefused: Record<PeerRefusal, number>;
}

/** A connection a worker serves: its listener, and where it was going. */
export interface ConnectionInfo {
  listener: ListenerRuntime;
  dst: OriginalDst | null;
  /** When the client's first byte arrived (performance.now()): the HTTP header timeout counts from it. */
  firstByteAt?: number;
  /** The local port it was accepted on (explicit listeners' per-port mTLS modes). */
  localPort?: number;
  /** mTLS was terminated on this connection: the caller's SPIFFE ID (without spiffe://) and ours. */
  principal?: string;
  ownId?: string;
  /**
   * The peer's address as accepted: by the main thread's accept (src/shared/handoff.ts), so a
   * client that resets at once still has its address (getpeername would fail, and a rule on
   * source addresses would have nothing to match); a TLS socket over it reports the same.
   */
  peer?: { address: string; port: number };
  /** What every request of this connection gets done to its headers (src/tls/xfcc.ts); set by the connection owner. */
  identityEdits?: HeaderOps | null;
  /** mTLS: the identity (ours and the trust bundle) the handshake was made with, for retirement after a rotation. */
  tlsGen?: Generation;
  /** The socket the session reads (the TLS socket on mTLS): retirement's time cap closes it. */
  socket?: net.Socket;
  /** Inbound, on a port with mTLS on (strict or permissive): requests are counted by the caller's identity. */
  countPeer?: boolean;
}

/**
 * Who is calling on a connection: the peer the TLS layer saw (inside a terminated connection),
 * else the socket's, with the principal its mTLS proved.
 */
export function callerOf(socket: net.Socket, info: ConnectionInfo): Peer {
  return { address: info.peer?.address ?? socket.remoteAddress ?? '', port: info.peer?.port ?? socket.remotePort ?? 0, principal: info.principal };
}

export type UpstreamDialTls = { runtime: TlsRuntime; spec: OutboundTls } | null;

export class CompiledConfig implements ExchangeEnv {
  readonly clusters = new Map<string, ClusterRuntime>();
  /** Services found in a registry, by cluster name (`dubbo/<interface>`, `spring/<name>`): not the config's, no route names them. */
  readonly discovered = new Map<string, DiscoveredCluster>();
  readonly listeners = new Map<string, ListenerRuntime>();
  readonly router: Router;
  /** The global filters that decide on connections carried as opaque bytes (admitConnection). */
  private readonly connectionFilters: readonly Filter[];
  readonly protocolStats = new Map<Protocol, ProtocolStats>();
  /** Stats for traffic sent to original destinations and to the local application. */
  readonly passthroughStats: ClusterStats;
  /** Original destination ports that skip protocol detection. */
  readonly opaquePorts: ReadonlySet<number>;
  readonly inboundStats: ClusterStats;
  readonly accessLog: AccessLog;
  /** mTLS origination per cluster (clusters[].tls.mode mutual); absent: plaintext. */
  private readonly clusterTls = new Map<string, OutboundTls>();
  /** Captured outbound destinations that are mesh peers (tls.outbound), and how to reach them. */
  private readonly meshDestinations: MeshDestinations | null;
  private readonly meshTls: OutboundTls | null;

  /** The endpoint mailbox's sequence number this config's clusters reflect. */
  endpointSeq = 0;

  /** The config snapshot's version: a snapshot of the same version only adds stat series. */
  version = 0;
  /** Where requests for services a registry lists find them (the worker's DiscoveryClient). */
  discovery: DiscoveryClient | null = null;
  /** Inbound traffic by the caller's identity (the worker's collector). */
  peerStats: PeerStatsCollector | null = null;

  /**
   * `endpoints`: the lists that replace the config's, by cluster (endpoint-directory.ts).
   * `seq` and `stats` move on when a snapshot of the same config only adds stat series.
   */
  constructor(
    public seq: number, readonly config: SluiceConfig, public stats: Stats,
    readonly pools: UpstreamPools, readonly rpcStats: RpcStatsCollector | null, previous?: CompiledConfig,
    endpoints?: (cluster: string) => readonly EndpointConfig[] | undefined,
    shared?: { memory: SharedMemory; filterData?: Readonly<Record<string, unknown>> },
  ) {
    // before clusters and routes are compiled: they look up the words alarms' actions set
    const overrides = attachOverrides(shared?.memory, shared?.filterData?.alarms);
    for (const c of config.clusters) this.clusters.set(c.name, new ClusterRuntime(c, stats, Math.random, endpoints?.(c.name)));
    const lmap = new Map<string, ListenerConfig>();
    for (const l of config.listeners) {
      lmap.set(l.name, l);
      this.listeners.set(l.name, {
        config: l,
        cxTotal: stats.slot('sluice_downstream_cx_total', { listener: l.name }),
        cxActive: stats.slot('sluice_downstream_cx_active', { listener: l.name }),
        sniffTimeout: stats.slot('sluice_downstream_cx_sniff_timeout_total', { listener: l.name }),
        cxHeaderTimeout: stats.slot('sluice_downstream_cx_header_timeout_total', { listener: l.name }),
        cxRefused: stats.slot('sluice_downstream_cx_refused_total', { listener: l.name }),
        cxProtocol: PROTOCOLS.map((p) => stats.slot('sluice_downstream_cx_protocol_total', { listener: l.name, protocol: p })),
        tlsHandshake: stats.slot('sluice_tls_inbound_handshake_total', { listener: l.name }),
        tlsResumed: stats.slot('sluice_tls_inbound_resumed_total', { listener: l.name }),
        tlsPlaintext: stats.slot('sluice_tls_inbound_plaintext_total', { listener: l.name }),
        tlsPlaintextRefused: stats.slot('sluice_tls_inbound_plaintext_refused_total', { listener: l.name }),
        tlsPlaintextRetired: stats.slot('sluice_tls_inbound_plaintext_retired_total', { listener: l.name }),
        tlsRetired: stats.slot('sluice_tls_inbound_retired_total', { listener: l.name }),
        tlsRefused: refusalSlots(stats, 'listener', l.name),
      });
    }
    for (const p of PROTOCOLS) {
      this.protocolStats.set(p, {
        rqTotal: stats.slot('sluice_downstream_rq_total', { protocol: p }),
        rqActive: stats.slot('sluice_downstream_rq_active', { protocol: p }),
        protocolError: stats.slot('sluice_downstream_protocol_error_total', { protocol: p }),
        noRoute: stats.slot('sluice_downstream_rq_no_route_total', { protocol: p }),
        timeout: stats.slot('sluice_downstream_rq_timeout_total', { protocol: p }),
        rqClass: [-1, ...RESPONSE_CLASSES.map((c) => stats.slot('sluice_downstream_rq_xx_total', { protocol: p, class: c }))],
      });
    }
    const t = config.tls;
    const outbound = (name: string, principals: readonly string[] | undefined): OutboundTls => {
      const refused = refusalSlots(stats, 'cluster', name);
      const done = stats.slot('sluice_tls_outbound_handshake_total', { cluster: name });
      const resumed = stats.slot('sluice_tls_outbound_resumed_total', { cluster: name });
      return {
        principals: principals ?? null, handshakeTimeoutMs: t?.handshakeTimeoutMs ?? 10_000,
        onHandshake: (r) => { stats.inc(done); if (r) stats.inc(resumed); },
        onRefused: (r) => stats.inc(refused[r]),
      };
    };
    for (const c of config.clusters) if (c.tls?.mode === 'mutual') this.clusterTls.set(c.name, outbound(c.name, c.tls.principals));
    const meshOn = t !== undefined && t.outbound.mode === 'mutual';
    this.meshDestinations = meshOn ? new MeshDestinations(t.outbound.destinations) : null;
    this.meshTls = meshOn ? outbound('original_dst', t.outbound.principals) : null;
    this.opaquePorts = new Set(config.tcp.opaquePorts);
    this.passthroughStats = clusterStats(stats, 'original_dst');
    this.inboundStats = clusterStats(stats, 'inbound_local');
    const filters = createFilters(config.filters, {
      config: config as unknown as Readonly<Record<string, unknown>>, stats, clusters: this.clusters, random: Math.random,
      memory: shared?.memory, data: shared?.filterData,
    });
    const kinds = new Set(config.registries.flatMap((r) => r.kinds));
    const discovery = kinds.size === 0 ? null : { dubbo: kinds.has('dubbo'), spring: kinds.has('spring'), balanceCaptured: config.registry.balanceCaptured };
    this.router = new Router(config.routes, this.clusters, lmap, config.http.requestTimeoutMs, filters, discovery, overrides);
    this.connectionFilters = filters.filter((f) => f.global === true && f.onConnection !== undefined);
    const same = previous && JSON.stringify(previous.config.accessLog) === JSON.stringify(config.accessLog);
    this.accessLog = same ? previous.accessLog : new AccessLog(config.accessLog, stats);
    if (!same) previous?.accessLog.close();
  }

  /**
   * The mTLS mode of an inbound connection: tls.inbound.ports by destination port (the original
   * destination's, else the listener's own), then the listener's tls.mode, then tls.inbound.mode.
   * Outbound listeners, and configs without a tls section: disabled (TLS passes through).
   */
  inboundMode(l: ListenerConfig, dst: OriginalDst | null, localPort: number): InboundMode {
    const t = this.config.tls;
    if (!t || l.direction !== 'inbound') return 'disabled';
    const port = dst ? dst.port : localPort;
    return t.inbound.ports[String(port)] ?? l.tls?.mode ?? t.inbound.mode;
  }

  /**
   * Whether a connection about to be carried as opaque bytes may be: the global filters that
   * decide on connections (authorization) each have their say; a refused one reaches no upstream.
   */
  admitConnection(conn: ConnectionView): boolean {
    const fs = this.connectionFilters;
    for (let i = 0; i < fs.length; i++) if (!fs[i].onConnection!(conn)) return false;
    return true;
  }

  /** How an upstream connection to a cluster (or, null, to the passthrough target) must leave: mTLS or plaintext. */
  upstreamTls(cluster: ClusterRuntime | null, view: Pick<RequestView, 'listener' | 'destination'>): OutboundTls | null {
    if (cluster) return this.clusterTls.get(cluster.config.name) ?? null;
    if (!this.meshDestinations) return null;
    const l = this.listeners.get(view.listener)?.config;
    const dst = view.destination;
    if (!l || !l.capture || l.direction !== 'outbound' || !dst) return null;
    return this.meshDestinations.matches(dst.address, dst.port) ? this.meshTls : null;
  }

  /** The expected principals of every mTLS pool this config may use (pool keys write them so). */
  upstreamPrincipals(): Set<string> {
    const out = new Set<string>();
    for (const o of this.clusterTls.values()) out.add(principalsKey(o));
    if (this.meshTls) out.add(principalsKey(this.meshTls));
    return out;
  }

  protocol(p: Protocol): ProtocolStats {
    return this.protocolStats.get(p)!;
  }

  /** Every endpoint key some cluster of this config (or a discovered service) uses now. */
  endpointKeys(): Set<string> {
    const keys = new Set<string>();
    for (const c of this.clusters.values()) for (const e of c.endpoints) keys.add(e.key);
    for (const d of this.discovered.values()) for (const e of d.cluster.endpoints) keys.add(e.key);
    return keys;
  }

  /** The target of a request to a service a registry may list (ExchangeEnv.discover). */
  discover(view: RequestView, kind: 'dubbo' | 'spring', done: (r: DiscoveryResult) => void): DiscoveryResult | undefined {
    if (!this.discovery) return { miss: 'timeout', detail: 'no registry client on this thread' };
    if (kind === 'dubbo') return this.discovery.lookup(this, kind, view.service, view.header('group'), view.header('version'), done);
    return this.discovery.lookup(this, kind, view.authority, undefined, undefined, done);
  }

  /**
   * Where a request or opaque bytes go without a cluster of their own: the original destination
   * (outbound capture), the local application at the original port (inbound capture), else an
   * endpoint of the listener's cluster.
   */
  passthrough(view: Pick<RequestView, 'listener' | 'destination'>): { host: string; port: number; cstats: ClusterStats; tls: OutboundTls | null } | null {
    const l = this.listeners.get(view.listener)?.config;
    if (!l) return null;
    const dst = view.destination;
    if (l.capture && dst) {
      if (l.direction === 'inbound') return { host: this.config.inbound.applicationAddress, port: dst.port, cstats: this.inboundStats, tls: null };
      return { host: dst.address, port: dst.port, cstats: this.passthroughStats, tls: this.upstreamTls(null, view) };
    }
    if (l.cluster !== undefined) {
      const c = this.clusters.get(l.cluster);
      const ep = c?.pick('');
      if (c && ep) return { host: ep.host, port: ep.port, cstats: c.stats, tls: this.clusterTls.get(c.config.name) ?? null };
    }
    return null;
  }

  /** What dial needs for an upstream connection that leaves as mTLS. */
  dialTls(spec: OutboundTls | null): UpstreamDialTls {
    return spec && this.pools.tls ? { runtime: this.pools.tls, spec } : null;
  }
}

/** What the drain asks of a downstream connection (its links in the worker's list of them are its own fields). */
export interface DrainableConnection extends Listed {
  /** Tell the client to go elsewhere (after the response in flight, or at once where the protocol can). */
  drain(): void;
  /** Close now if nothing is in flight; otherwise once it is done. */
  closeIdle(): void;
  /** The connection it serves (which listener, where to, with which identity): for retirement on a policy change. */
  readonly info?: ConnectionInfo;
}

export class WorkerRuntime {
  readonly pools: UpstreamPools;
  /** This thread's TLS: the identity in force, termination, origination. */
  readonly tls: TlsRuntime;
  private compiled: CompiledConfig | null = null;
  private statKeysLength = -1;
  private stats: Stats | null = null;
  /** Open downstream connections, for drain. */
  readonly connections = new ConnectionList<DrainableConnection>();
  /** Clients are being told to go elsewhere; connections still serve. */
  draining = false;
  /** The drain period is over: a connection closes as soon as it has nothing in flight. */
  closingIdle = false;

  /** Per interface and method counts of RPC protocols, sent to the main thread. */
  readonly rpcStats: RpcStatsCollector | null;
  /** Inbound traffic by the caller's identity, and plaintext callers, sent to the main thread. */
  readonly peerStats: PeerStatsCollector | null;

  /**
   * `gaugeRow`: this thread's row for gauges (a worker's), -1 on the main thread.
   * `rpcChannel`: where per-method RPC stats go (the main thread's RpcStatsTable); `peerChannel`:
   * where counts by peer identity go (its PeerStatsTable).
   */
  constructor(readonly shared: SharedState, private readonly gaugeRow = -1, rpcChannel?: string, registryChannel?: string, peerChannel?: string) {
    this.rpcStats = rpcChannel ? new RpcStatsCollector(rpcChannel, 'dubbo') : null;
    this.peerStats = peerChannel ? new PeerStatsCollector(peerChannel) : null;
    this.tls = new TlsRuntime(new IdentityMailbox(shared.memory), (err) => log.error({ err: err.message }, 'the workload identity cannot be loaded here; the previous one keeps serving'));
    this.pools = new UpstreamPools(() => this.current().stats, this.tls);
    this.endpoints = new EndpointReader(shared.memory);
    this.discovery = new DiscoveryClient(shared.memory.region(TOUCH_REGION), registryChannel, () => this.current());
  }

  /** Asks the main thread for services a request needs, and holds those requests until their lists come. */
  readonly discovery: DiscoveryClient;

  /** Endpoint lists that replace the config's, read from the shared mailbox. */
  private readonly endpoints: EndpointReader;

  /** The latest config and endpoints; cheap when nothing changed (two atomic loads). */
  current(): CompiledConfig {
    const c = this.compiled;
    if (c && c.seq === this.shared.configSeq) {
      if (c.endpointSeq !== this.endpoints.seq) this.applyEndpoints(c);
      return c;
    }
    const snap = this.shared.readConfig<ConfigSnapshot>();
    if (!snap) throw new Error('no config published');
    if (!this.stats || snap.value.statKeys.length !== this.statKeysLength) {
      this.stats = new Stats(this.shared, snap.value.statKeys, this.gaugeRow);
      this.statKeysLength = snap.value.statKeys.length;
    }
    if (c && c.version === snap.value.version) {
      // the same config with more stat series (a discovered service's): routes stay as they are
      c.seq = snap.seq;
      c.stats = this.stats;
      if (c.endpointSeq !== this.endpoints.seq) this.applyEndpoints(c);
      return c;
    }
    const seq = this.endpoints.seq;
    this.endpoints.poll();
    const next = new CompiledConfig(snap.seq, snap.value.config, this.stats, this.pools, this.rpcStats, c ?? undefined,
      (name) => this.endpoints.endpoints(name), { memory: this.shared.memory, filterData: snap.value.filterData });
    next.version = snap.value.version;
    next.discovery = this.discovery;
    next.peerStats = this.peerStats;
    for (const [name, list] of this.endpoints.discovered()) next.discovered.set(name, new DiscoveredCluster(name, list, next.config, next.stats));
    next.endpointSeq = seq;
    this.compiled = next;
    if (c) {
      this.leaveUnused(c.endpointKeys(), next);
      this.retirePlaintext(c, next);
      this.retireExpectations(c, next);
    }
    this.discovery.settle(next);
    return next;
  }

  /**
   * A port that became strict: plaintext connections accepted under the old mode are retired once
   * what is in flight on them is done (HTTP/1 `connection: close` after the response, HTTP/2
   * GOAWAY, Dubbo READONLY then close), never cut; their clients reconnect, and meet the new mode.
   */
  private retirePlaintext(prev: CompiledConfig, next: CompiledConfig): void {
    if (!next.config.tls) return;
    const retired: DrainableConnection[] = [];
    for (const conn of this.connections) {
      const i = conn.info;
      if (!i || i.principal !== undefined) continue;
      const l = next.listeners.get(i.listener.config.name)?.config;
      const was = prev.listeners.get(i.listener.config.name)?.config;
      if (!l || !was) continue;
      const port = i.localPort ?? 0;
      if (next.inboundMode(l, i.dst, port) === 'strict' && prev.inboundMode(was, i.dst, port) !== 'strict') {
        next.stats.inc(next.listeners.get(l.name)!.tlsPlaintextRetired);
        conn.closeIdle();
        retired.push(conn);
      }
    }
    this.capRetirement(next, retired, []);
  }

  /**
   * A reload that changed the identities some upstream peers must have: mTLS pools that expect
   * principals no cluster (or tls.outbound) of the new config expects are drained, so no request
   * goes on a connection checked against the old expectation.
   */
  private retireExpectations(prev: CompiledConfig, next: CompiledConfig): void {
    const keep = next.upstreamPrincipals();
    const before = prev.upstreamPrincipals();
    if (before.size === keep.size && [...before].every((p) => keep.has(p))) return;
    const groups = this.pools.retireTls((p) => !keep.has(p));
    if (groups.size === 0) return;
    const sockets = this.tls.openOutbound((o) => groups.has(o.group));
    next.stats.add(next.stats.slot('sluice_tls_outbound_retired_total'), sockets.length);
    this.capRetirement(next, [], sockets);
  }

  /**
   * A new identity was published (a rotation of the certificate or of the trust bundle). Where
   * tls.retirement asks for it, connections made with the old one are retired: downstream ones are
   * told to go elsewhere after what is in flight (HTTP/1 `connection: close` on the next response,
   * HTTP/2 GOAWAY, Dubbo READONLY) and upstream pools holding such connections are drained; new
   * connections use the new identity; tls.retirement.timeoutMs later what is left is closed.
   */
  identityChanged(): void {
    let cfg: CompiledConfig;
    try { cfg = this.current(); } catch { return; }
    const r = cfg.config.tls?.retirement;
    const gen = this.tls.current();
    if (!r || !gen || (!r.onCertificateChange && !r.onTrustBundleChange)) return;
    const stale = (g: Generation) => g !== gen && (
      (r.onCertificateChange && (g.certPem !== gen.certPem || g.keyPem !== gen.keyPem)) || (r.onTrustBundleChange && g.caPem !== gen.caPem));
    const retired: DrainableConnection[] = [];
    for (const conn of this.connections) {
      const g = conn.info?.tlsGen;
      if (!g || !stale(g)) continue;
      const l = cfg.listeners.get(conn.info!.listener.config.name);
      if (l) cfg.stats.inc(l.tlsRetired);
      conn.drain();
      retired.push(conn);
    }
    const sockets = this.tls.openOutbound((o) => stale(o.gen));
    if (sockets.length > 0) {
      this.pools.retireTls(() => true);
      cfg.stats.add(cfg.stats.slot('sluice_tls_outbound_retired_total'), sockets.length);
    }
    this.capRetirement(cfg, retired, sockets);
  }

  /** Retirement's time cap: what is still open of `conns` and `sockets` after tls.retirement.timeoutMs is closed, and counted. */
  private capRetirement(cfg: CompiledConfig, conns: DrainableConnection[], sockets: net.Socket[]): void {
    if (conns.length === 0 && sockets.length === 0) return;
    const timer = setTimeout(() => {
      let forced = 0;
      for (const c of conns) {
        const s = c.info?.socket;
        if (this.connections.has(c) && s && !s.destroyed) { s.destroy(); forced++; }
      }
      for (const s of sockets) if (!s.destroyed) { s.destroy(); forced++; }
      if (forced === 0) return;
      const stats = this.compiled?.stats ?? cfg.stats;
      stats.add(stats.slot('sluice_tls_retire_forced_total'), forced);
      log.warn({ connections: forced }, 'retired connections still open at tls.retirement.timeoutMs: closed');
    }, cfg.config.tls?.retirement.timeoutMs ?? 30_000);
    timer.unref();
  }

  /** Lists that changed in the mailbox replace those of the clusters in force; routes stay. */
  private applyEndpoints(c: CompiledConfig): void {
    c.endpointSeq = this.endpoints.seq;
    const gone = new Set<string>();
    let found = false;
    for (const [name, list] of this.endpoints.poll()) {
      if (isDiscoveredName(name)) {
        const d = c.discovered.get(name);
        if (list === null || !isDiscoveredList(list)) {
          if (d) { c.discovered.delete(name); for (const e of d.cluster.endpoints) gone.add(e.key); }
        } else if (d) {
          for (const key of d.update(list)) gone.add(key);
        } else {
          c.discovered.set(name, new DiscoveredCluster(name, list, c.config, this.freshStats(c)));
          found = true;
        }
        continue;
      }
      const cluster = c.clusters.get(name);
      if (cluster && (list === null || !isDiscoveredList(list))) for (const key of cluster.setEndpoints(list)) gone.add(key);
    }
    if (gone.size) this.leaveUnused(gone, c);
    if (found) this.discovery.settle(c);
  }

  /**
   * The stats to build a new discovered cluster with: the main thread adds its series to the
   * snapshot before it publishes its list, but this worker may have read the config before that.
   */
  private freshStats(c: CompiledConfig): Stats {
    if (c.seq !== this.shared.configSeq) {
      const snap = this.shared.readConfig<ConfigSnapshot>();
      if (snap && snap.value.version === c.version && snap.value.statKeys.length !== this.statKeysLength) {
        this.stats = new Stats(this.shared, snap.value.statKeys, this.gaugeRow);
        this.statKeysLength = snap.value.statKeys.length;
        c.seq = snap.seq;
        c.stats = this.stats;
      }
    }
    return c.stats;
  }

  /** The main thread says the mailbox has lists that requests wait for: read it now. */
  endpointsChanged(): void {
    try {
      this.current();
    } catch (err) {
      this.logError(err as Error, 'endpoints');
    }
  }

  /** Pools of endpoints in `maybe` that no cluster of `c` uses any more are given up. */
  private leaveUnused(maybe: Set<string>, c: CompiledConfig): void {
    const used = c.endpointKeys();
    for (const key of maybe) if (!used.has(key)) this.pools.leave(key);
  }

  /** A bug of ours surfaced on a connection: logged, and only that connection is lost. */
  logError(err: Error, where: string): void {
    log.error({ err, where }, 'internal error on a connection');
  }

  /** The drain begins: every connection tells its client to go elsewhere, and keeps serving. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    for (const c of [...this.connections]) c.drain();
    this.compiled?.accessLog.flush();
    this.rpcStats?.flush();
    this.peerStats?.flush();
  }

  /** The drain period is over: connections with nothing in flight close, and so do idle upstream connections. */
  closeIdle(): void {
    this.drain();
    if (this.closingIdle) return;
    this.closingIdle = true;
    for (const c of [...this.connections]) c.closeIdle();
    this.pools.closeIdle();
    this.compiled?.accessLog.flush();
    this.rpcStats?.flush();
    this.peerStats?.flush();
  }
}
