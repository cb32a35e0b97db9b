/**
 * The main thread: config, listeners, the worker pool, admin. It accepts and
 * hands off; workers do the data path.
 *
 *                 main thread                                          worker threads (piscina)
 *   listeners ─▶ accept natively, original dst ─▶ queue in shared memory ─▶ sniff ▶ codec ▶ filters ▶ upstream
 *   admin, config watch, stats render              (a batch, one notify)  ▲
 *                 └──── SharedArrayBuffer: hand-off queues, fd slots, counters, config mailbox ────┘
 */
import { readdirSync, watchFile, unwatchFile } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BroadcastChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { loadConfigFile, type EndpointConfig, type SluiceConfig } from '../config/config';
import { AdminServer } from './admin-server';
import { AppProber, type AppProbe } from './app-probes';
import { ConfigError, SluiceError } from '../errors';
import { log } from '../log';
import { formatAddress } from '../net/address';
import { Listeners } from './listeners';
import { loadNative, mainThreadBatch, nativeLoadError, quietLoop } from '../net/native';
import { SharedState } from '../shared/shared-state';
import { MAX_FD } from '../shared/fd-ownership';
import { gaugeRowOf, releaseGaugeRow, StatsRegistry, Stats, series } from '../stats/stats';
import { FILTER_MODULES, filterSeries } from '../filters';
import type { FilterMain } from '../filters/module';
import { AdaptiveLoop } from '../filters/adaptive/adaptive-loop';
import { AlarmLoop } from '../alarms/alarm-loop';
import { clusterLimitSeries, protectionSeries, releaseShares, sweepBreakersPeriodically } from '../protection';
import {
  CONTROL_CHANNEL, peerChannelName, registryChannelName, rpcChannelName, type ConfigSnapshot, type ControlMessage, type DiscoveryRefusal, type DiscoveryRequest, type WorkerPing,
} from '../shared/messages';
import { Discovery } from './discovery';
import { TOUCH_REGION } from '../upstream/discovered';
import { RpcStatsTable } from '../stats/rpc-stats';
import { DEFAULT_PEER_LIMITS, PeerStatsTable } from '../stats/peer-stats';
import { WorkerRuntime } from '../worker/runtime';
import { EndpointDirectory } from '../upstream/endpoint-directory';
import { serveConnection } from '../worker/connection';
import { flushWorkerLogs } from '../worker/log-flush';
import { CertSource } from '../tls/cert-source';
import { IdentityMailbox } from '../tls/identity-mailbox';
import { tlsSeries } from '../tls/tls-stats';

export interface StartOptions {
  config: SluiceConfig;
  /** Watched for changes when given. */
  configPath?: string;
  /** Poll interval for the config file. */
  watchIntervalMs?: number;
  /** Allow POST /debug/kill_worker (tests). */
  debugEndpoints?: boolean;
  /** What POST /drain does; the CLI exits after the drain. Default: stop(). */
  onStopRequest?: () => void;
  /** Serve GET /ready (and nothing else) here too, e.g. 0.0.0.0:15020 for kubelet probes. */
  healthAddress?: string;
  /** The application's probes (SLUICE_APP_PROBES), answered on the health address under /app-health/. */
  appProbes?: ReadonlyMap<string, AppProbe>;
}

let instances = 0;

/** Descriptors kept free beyond the connections: admin requests, config reads, log files, name lookups. */
const FD_HEADROOM = 32;

/**
 * How many connections may be open at once with `limit` descriptors: what is left after the
 * ones open now (listeners, workers, the process's own), and two per connection (the client's
 * and, usually, one upstream). Infinity when the limit or the open count is unknown.
 */
export function connectionBudget(limit: number): number {
  if (!Number.isFinite(limit)) return Infinity;
  let open: number;
  try { open = readdirSync('/proc/self/fd').length; } catch { return Infinity; }
  return Math.max(1, Math.floor((limit - open - FD_HEADROOM) / 2));
}

export class Sluice {
  readonly shared = new SharedState();
  /** Endpoint lists that replace a cluster's config list (admin API, registries), published to every worker. */
  private readonly endpointDirectory = new EndpointDirectory(this.shared.memory);
  readonly registry = new StatsRegistry();
  /** Adaptive limiting's measurements and control loop, for every worker (src/filters/adaptive). */
  readonly adaptive = new AdaptiveLoop(this.shared.memory);
  /** The workload identity: files watched, or pushed by POST /certs; published to every worker. */
  readonly certs = new CertSource(new IdentityMailbox(this.shared.memory), () => this.stats, () => {
    this.control.postMessage({ type: 'identity' } satisfies ControlMessage);
    this.localRuntime?.identityChanged();
  });
  private statsView: Stats;
  /** Alarms on the sidecar's own signals and the actions they switch on (src/alarms). */
  readonly alarms = new AlarmLoop(this.shared.memory, () => this.stats);
  private readonly stopBreakerSweep: () => void;
  /** Filters' main-thread parts (shared slots their rules own across reloads), by filter name. */
  private readonly filterMains = new Map<string, FilterMain>(
    FILTER_MODULES.flatMap((m) => (m.main ? [[m.name, m.main(this.shared.memory)] as const] : [])),
  );
  private statsKeys = 0;
  private readonly pool: Piscina;
  private readonly listeners: Listeners;
  private readonly admin: AdminServer;
  /**
   * BroadcastChannel names are process-wide: one per instance, or stopping one Sluice (tests run
   * several in a process) would drain the workers of every other.
   */
  private readonly controlName = `${CONTROL_CHANNEL}:${++instances}`;
  private readonly control = new BroadcastChannel(this.controlName);
  /** Workers ask for services a request needs here (DiscoveryRequest). */
  private readonly registryRequests = new BroadcastChannel(registryChannelName(this.controlName));
  /** Registries, and the services the workers use from them. */
  readonly discovery: Discovery;
  /** The last config snapshot published: republished with more stat series when a service is discovered. */
  private snapshot: ConfigSnapshot | null = null;
  /** Per interface and method RPC stats, summed from the workers' deltas. */
  readonly rpcStats = new RpcStatsTable(rpcChannelName(this.controlName));
  /** Inbound traffic by the caller's identity, and the plaintext callers seen recently. */
  readonly peerStats = new PeerStatsTable(peerChannelName(this.controlName), () => this.config.tls?.peerStats ?? DEFAULT_PEER_LIMITS);
  private localRuntime: WorkerRuntime | null = null;
  private config: SluiceConfig;
  private version = 0;
  private readonly threads: number;
  private stopping: Promise<void> | null = null;
  /** Every listener accepts and every worker booted: /ready may say so. */
  private started = false;
  readonly captureAvailable: boolean;
  /** RLIMIT_NOFILE after raising the soft limit to the hard one (Infinity when unknown). */
  readonly fdLimit: number;

  private constructor(private readonly opts: StartOptions) {
    this.config = opts.config;
    this.statsView = new Stats(this.shared, this.registry.keys);
    this.publish(opts.config);
    this.countEndpoints();
    this.discovery = new Discovery({
      directory: this.endpointDirectory,
      touch: this.shared.memory.region(TOUCH_REGION),
      stats: () => this.stats,
      addSeries: (keys) => { for (const k of keys) this.addSeries(k); },
      addCluster: (name) => this.addClusterSeries(name),
      wake: () => {
        this.endpointDirectory.flush();
        this.control.postMessage({ type: 'endpoints' } satisfies ControlMessage);
        this.localRuntime?.endpointsChanged();
      },
      refuse: (kind, service, why) => {
        // every DiscoveryClient listens on the channel, the main thread's own runtime's too
        this.registryRequests.postMessage({ type: 'refused', kind, service, why } satisfies DiscoveryRefusal);
      },
    }, opts.config);
    this.registryRequests.onmessage = (ev) => {
      const msg = (ev as unknown as { data: DiscoveryRequest }).data;
      if (msg?.type === 'subscribe' && (msg.kind === 'dubbo' || msg.kind === 'spring') && typeof msg.service === 'string') {
        this.discovery.request(msg.kind, msg.service);
      }
    };
    const native = loadNative();
    quietLoop(); // no idle-time measurement on this thread's loop: a system call fewer per wake-up
    this.captureAvailable = native !== null;
    this.fdLimit = typeof native?.fdLimit === 'function' ? native.fdLimit(MAX_FD).soft : Infinity;
    if (!native) {
      log.warn({ err: nativeLoadError()?.message }, 'native addon not loaded: transparent capture is off, connections are served on the main thread');
    } else if (opts.config.tls && typeof native.tlsSetNumTickets !== 'function') {
      // it loads, but predates tlsSetNumTickets: inbound TLS then sends OpenSSL's two session tickets per full handshake
      log.warn('the native addon is an older build: inbound TLS sends two session tickets per full handshake instead of one (rebuild it: npm install, or npx node-gyp rebuild)');
    } else if (opts.config.tls && typeof native.tlsServerSessions !== 'function') {
      // it loads, but predates tlsServerSessions: inbound sessions then travel encrypted in the tickets
      log.warn('the native addon is an older build: inbound TLS sessions are kept in stateless tickets, about 100 µs more per handshake (rebuild it: npm install, or npx node-gyp rebuild)');
    }
    this.threads = opts.config.workers.threads || Math.max(1, os.availableParallelism());
    // before the workers start: they inherit the policy, and each puts itself back (worker.ts)
    const batched = opts.config.workers.mainThreadScheduling === 'batch' ? mainThreadBatch() : 0;
    if (batched < 0) log.warn({ errno: -batched }, 'the main thread could not take the SCHED_BATCH policy (workers.mainThreadScheduling): it keeps its own');
    this.pool = new Piscina({
      filename: path.join(__dirname, '..', 'worker', 'worker.js'),
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: Infinity, // piscina skips its idle timer; a huge number would overflow setTimeout
      // connections do not go through piscina (src/shared/handoff.ts); its tasks are the start-up
      // ping and the log flush
      // with atomics, an idle worker's event loop stops: timers and idle sockets freeze
      atomics: 'disabled',
      workerData: { shared: this.shared.handle, control: this.controlName, mainBatched: batched === 1 },
      // a small new space: what a worker keeps resident between collections (docs/benchmarks.md)
      resourceLimits: { maxYoungGenerationSizeMb: opts.config.workers.youngGenerationMb },
    });
    this.stopBreakerSweep = sweepBreakersPeriodically(this.shared.memory);
    // A dead Worker reports threadId -1 and piscina hands out a new wrapper per event, so
    // remember the ids of live workers and, when one goes, free the rows of those gone.
    const threadIds = new Set<number>();
    const liveThreads = () => new Set(this.pool.threads.map((w) => w.threadId).filter((id) => id >= 0));
    this.pool.on('workerCreate', (worker: { id: number }) => {
      threadIds.add(worker.id);
      // a worker that replaces a dead one takes the connections that waited for it
      this.listeners.workersChanged(liveThreads());
    });
    this.pool.on('workerDestroy', () => {
      // its share of the in-flight gauges went with it; what was queued for it and never
      // claimed goes to another worker
      setImmediate(() => {
        const live = liveThreads();
        this.listeners.workersChanged(live);
        for (const id of threadIds) {
          if (live.has(id)) continue;
          threadIds.delete(id);
          const row = gaugeRowOf(this.shared, id);
          this.adaptive.workerGone(row);
          // the cluster limits it held (requests, connections in flight) go back with its gauges
          releaseShares(this.shared.memory, row);
          releaseGaugeRow(this.shared, id);
        }
      });
      if (this.stopping) return;
      // piscina starts a replacement; the dead worker's connections are gone with it
      this.stats.inc(this.stats.slot('sluice_worker_restarts_total'));
      log.error('a worker exited; its connections were closed and a new worker replaces it');
    });
    this.pool.on('error', (err) => log.error({ err }, 'worker pool error'));
    this.listeners = new Listeners(
      this.shared,
      native,
      (socket, listener, dst) => this.serveLocally(socket, listener, dst),
      {
        handoffFailed: () => this.stats.inc(this.stats.slot('sluice_handoff_failed_total')),
        overflow: (name) => this.stats.inc(this.stats.slot('sluice_downstream_cx_overflow_total', { listener: name })),
        requeued: () => this.stats.inc(this.stats.slot('sluice_handoff_requeued_total')),
      },
      {
        slotOf: (name) => this.stats.slot('sluice_downstream_cx_total', { listener: name }),
        maxPerWorker: opts.config.workers.maxConnectionsPerWorker,
      },
    );
    this.admin = new AdminServer(this, { debugEndpoints: opts.debugEndpoints === true, appProbes: opts.appProbes?.size ? new AppProber(opts.appProbes) : undefined });
  }

  static async start(opts: StartOptions): Promise<Sluice> {
    const s = new Sluice(opts);
    try {
      s.stats.set(s.stats.slot('sluice_capture_active'), s.captureAvailable ? 1 : 0);
      s.certs.applyConfig(opts.config.tls);
      s.certs.refreshGauge();
      await s.admin.listen(opts.config.admin.address);
      await s.workersBooted();
      await s.listeners.apply(opts.config);
      if (opts.healthAddress) await s.admin.listenHealth(opts.healthAddress);
      s.listeners.budget = connectionBudget(s.fdLimit);
      s.started = true;
    } catch (err) {
      await s.stop(0);
      throw err;
    }
    if (opts.configPath) s.watch(opts.configPath, opts.watchIntervalMs ?? 500);
    // the bound addresses, not the configured ones: port 0 means "any", and whoever started us wants to know which
    const bound = (a: { address: string; port: number } | null, fallback: string) => (a ? formatAddress(a.address, a.port) : fallback);
    const listeners = Object.fromEntries(opts.config.listeners.map((l) => [l.name, bound(s.listenerAddress(l.name), l.address)]));
    const health = opts.healthAddress ? bound(s.admin.healthAddress(), opts.healthAddress) : undefined;
    log.info({ listeners, admin: bound(s.adminAddress(), opts.config.admin.address), health, workers: s.threads, capture: s.captureAvailable }, 'sluice started');
    return s;
  }

  /**
   * Stats resolved against every series registered so far. A Stats object indexes the series it
   * was built with; listeners and clusters add series on each publish, so rebuild when that grew.
   */
  get stats(): Stats {
    if (this.statsKeys !== this.registry.keys.length) {
      this.statsView = new Stats(this.shared, this.registry.keys);
      this.statsKeys = this.registry.keys.length;
    }
    return this.statsView;
  }

  /**
   * Resolves once every worker has loaded and answered a no-op task (fd -1). Until then a
   * connection would sit in a worker's queue for as long as the thread takes to boot; better
   * to open the listeners only when connections can be served, and to fail start-up loudly if a
   * worker cannot boot at all. The balancer gives each of these concurrent pings an idle worker.
   */
  private async workersBooted(): Promise<void> {
    await Promise.all(Array.from({ length: this.threads }, () => this.pool.run({ ping: true } satisfies WorkerPing)));
  }

  get currentConfig(): SluiceConfig {
    return this.config;
  }

  get configVersion(): number {
    return this.version;
  }

  get draining(): boolean {
    return this.shared.draining;
  }

  /** Why /ready says no (`starting`, `draining`, `workers starting`), or null when ready. */
  notReady(): string | null {
    if (this.shared.draining) return 'draining';
    if (!this.started) return 'starting';
    // a worker that died is being replaced: connections queue until it serves
    if (this.pool.threads.length < this.threads) return 'workers starting';
    return null;
  }

  listenerAddress(name: string) {
    return this.listeners.address(name);
  }

  adminAddress() {
    return this.admin.address();
  }

  get activeConnections(): number {
    return this.listeners.active;
  }

  /**
   * The open-connection gauge, from the listeners' count (what was handed to workers minus what
   * they finished; a dead worker's share goes with it). Written before every render of /stats.
   */
  refreshConnectionGauge(): void {
    const stats = this.stats;
    for (const [name, open] of this.listeners.openByListener()) stats.set(stats.slot('sluice_downstream_cx_active', { listener: name }), open);
    this.certs.refreshGauge();
  }

  private publish(config: SluiceConfig): void {
    for (const l of config.listeners) this.registry.addListener(l.name);
    for (const c of config.clusters) this.registry.addCluster(c.name);
    this.registry.addCluster('original_dst');
    this.registry.addCluster('inbound_local');
    for (const f of filterSeries(config)) this.registry.add(series(f.name, f.labels));
    for (const k of tlsSeries(config)) this.registry.add(k);
    for (const k of protectionSeries(config)) this.registry.add(k);
    const filterData: Record<string, unknown> = {};
    for (const [name, main] of this.filterMains) filterData[name] = main.publish(config as unknown as Readonly<Record<string, unknown>>);
    filterData.alarms = this.alarms.publish(config.alarms ?? []);
    const snap: ConfigSnapshot = { version: ++this.version, config, statKeys: this.registry.keys, filterData };
    this.snapshot = snap;
    this.shared.publishConfig(snap);
    this.adaptive.apply(config.adaptiveLimit);
    this.alarms.apply(config.alarms ?? []);
  }

  /** A stat series, unless the shared counters are full (then it is not counted; logged once). */
  private addSeries(key: string): boolean {
    try {
      this.registry.add(key);
      return true;
    } catch (err) {
      if (!this.seriesFull) log.warn({ err: (err as Error).message }, 'stat series are full: new ones are not counted');
      this.seriesFull = true;
      return false;
    }
  }

  private seriesFull = false;

  /**
   * A discovered service's cluster series, shipped to the workers with the config they have (a
   * snapshot of the same version: they keep their routes and take the new series).
   */
  private addClusterSeries(name: string): void {
    const before = this.registry.keys.length;
    try {
      this.registry.addCluster(name);
      for (const k of clusterLimitSeries(name)) this.registry.add(k);
    } catch (err) {
      if (!this.seriesFull) log.warn({ err: (err as Error).message }, 'stat series are full: new ones are not counted');
      this.seriesFull = true;
    }
    if (this.registry.keys.length === before || !this.snapshot) return;
    this.snapshot = { ...this.snapshot, statKeys: this.registry.keys };
    this.shared.publishConfig(this.snapshot);
  }

  /**
   * Replaces one cluster's endpoints without a config reload: routes, filters and warm
   * connections stay, every worker uses the new list from its next request. `null`: back to the
   * config's list. The list holds until the next call, or until a config without the cluster.
   * Returns the list's version (0 when back to the config's).
   */
  setEndpoints(cluster: string, endpoints: EndpointConfig[] | null): number {
    if (this.stopping) throw new SluiceError('ERR_DRAINING', 'draining: endpoint changes are refused');
    const c = this.config.clusters.find((x) => x.name === cluster);
    if (!c) throw new SluiceError('ERR_UNKNOWN_CLUSTER', `no cluster "${cluster}"`);
    const version = this.endpointDirectory.set(cluster, endpoints);
    this.endpointDirectory.flush();
    this.stats.inc(this.stats.slot('sluice_cluster_endpoint_updates_total', { cluster }));
    this.stats.set(this.stats.slot('sluice_cluster_endpoints', { cluster }), (endpoints ?? c.endpoints).length);
    return version;
  }

  /** The admin view GET /protection: each protection filter's part under its key (`rateLimits`). */
  protection(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const m of FILTER_MODULES) {
      const main = this.filterMains.get(m.name);
      if (main?.protection && m.protectionKey) out[m.protectionKey] = main.protection(this.stats);
    }
    return out;
  }

  /** A cluster's endpoints in force, and where they come from. */
  endpointsOf(cluster: string): { source: 'config' | 'api'; version: number; endpoints: EndpointConfig[] } | undefined {
    const c = this.config.clusters.find((x) => x.name === cluster);
    if (!c) return undefined;
    const replaced = this.endpointDirectory.get(cluster);
    return replaced ? { source: 'api', ...replaced } : { source: 'config', version: 0, endpoints: c.endpoints };
  }

  /** Replace the config as a whole or not at all. */
  async applyConfig(config: SluiceConfig): Promise<void> {
    // a config applied while draining would reopen the listeners the drain just closed
    if (this.stopping) throw new SluiceError('ERR_DRAINING', 'draining: config changes are refused');
    const previous = this.config;
    // a config whose identity files do not hold a valid identity is refused as a whole
    this.certs.applyConfig(config.tls);
    this.publish(config);
    try {
      await this.listeners.apply(config);
      if (config.admin.address !== previous.admin.address) log.warn('admin address changes take effect on restart');
    } catch (err) {
      this.publish(previous);
      await this.listeners.apply(previous).catch(() => {});
      throw err;
    }
    this.config = config;
    this.endpointDirectory.retain(new Set(config.clusters.map((c) => c.name)));
    this.endpointDirectory.flush();
    this.discovery.apply(config);
    this.countEndpoints();
    this.stats.inc(this.stats.slot('sluice_config_reload_total'));
    this.control.postMessage({ type: 'config' } satisfies ControlMessage);
    this.localRuntime?.current();
    log.info({ version: this.version }, 'config applied');
  }

  private countEndpoints(): void {
    for (const c of this.config.clusters) {
      this.stats.set(this.stats.slot('sluice_cluster_endpoints', { cluster: c.name }), this.endpointsOf(c.name)!.endpoints.length);
    }
  }

  /** Count and log a refused config; the last good one keeps serving. */
  configRefused(err: unknown): void {
    this.stats.inc(this.stats.slot('sluice_config_reload_failed_total'));
    log.error({ err: err instanceof ConfigError ? err.message : String(err) }, 'config refused; the previous config keeps serving');
  }

  private watch(file: string, intervalMs: number): void {
    let busy = Promise.resolve();
    watchFile(file, { interval: intervalMs, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size) return;
      busy = busy.then(async () => {
        try {
          await this.applyConfig(loadConfigFile(file));
        } catch (err) {
          this.configRefused(err);
        }
      });
    });
    this.unwatch = () => unwatchFile(file);
  }

  private unwatch: () => void = () => {};

  private serveLocally(socket: import('node:net').Socket, listenerName: string, dst: { address: string; port: number } | null): void {
    this.localRuntime ??= new WorkerRuntime(this.shared, -1, rpcChannelName(this.controlName), registryChannelName(this.controlName), peerChannelName(this.controlName));
    const rt = this.localRuntime;
    const listener = rt.current().listeners.get(listenerName);
    if (!listener) { socket.destroy(); return; }
    serveConnection(rt, socket, { listener, dst });
  }

  requestStop(): void {
    if (this.opts.onStopRequest) this.opts.onStopRequest();
    else void this.stop();
  }

  /** Test hook: end a worker thread abruptly, as a crash would. */
  killWorker(): boolean {
    const w = this.pool.threads[0];
    if (!w) return false;
    void w.terminate();
    return true;
  }

  /**
   * Test hook: block the event loop of the worker killWorker() would end, for `ms` (it takes no
   * connection meanwhile). Resolves true once that worker says it is blocking, false if it does
   * not within a second.
   */
  stallWorker(ms: number): Promise<boolean> {
    const w = this.pool.threads[0];
    if (!w || w.threadId < 0) return Promise.resolve(false);
    const id = w.threadId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.control.removeEventListener('message', onMessage); resolve(false); }, 1000);
      const onMessage = (ev: Event) => {
        const msg = (ev as unknown as { data: ControlMessage }).data;
        if (msg.type !== 'stalling' || msg.threadId !== id) return;
        clearTimeout(timer);
        this.control.removeEventListener('message', onMessage);
        resolve(true);
      };
      this.control.addEventListener('message', onMessage);
      this.control.postMessage({ type: 'stall', threadId: id, ms } satisfies ControlMessage);
    });
  }

  /**
   * Graceful stop, in two parts. For `periodMs` the listeners keep accepting while every client
   * is told to go elsewhere (HTTP/1 responses carry `connection: close`, HTTP/2 connections get
   * a two-step GOAWAY, Dubbo consumers READONLY) and /ready answers 503. Then the listeners
   * close, connections with nothing in flight close, and the rest get up to `drainTimeoutMs` to
   * finish before the workers stop.
   */
  stop(drainTimeoutMs = this.config.drain.timeoutMs, periodMs = this.config.drain.periodMs): Promise<void> {
    this.stopping ??= (async () => {
      this.unwatch();
      this.certs.stop();
      this.adaptive.stop();
      this.alarms.stop();
      this.stopBreakerSweep();
      // /ready says no from now on, so the endpoint is taken out of service; until that has
      // propagated, clients keep coming: they are served and told to go elsewhere
      this.shared.draining = true;
      this.control.postMessage({ type: 'drain' } satisfies ControlMessage);
      this.localRuntime?.drain();
      if (periodMs > 0) {
        log.info({ periodMs }, 'draining: still accepting for the drain period');
        await new Promise<void>((r) => { setTimeout(r, periodMs); });
      }
      await this.listeners.closeAll();
      this.shared.closingIdle = true;
      this.control.postMessage({ type: 'close-idle' } satisfies ControlMessage);
      this.localRuntime?.closeIdle();
      if (this.listeners.active > 0 && drainTimeoutMs > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.listeners.idle(), new Promise<void>((r) => { timer = setTimeout(r, drainTimeoutMs); })]);
        clearTimeout(timer);
      }
      if (this.listeners.active > 0) log.warn({ open: this.listeners.active }, 'drain timeout: closing remaining connections');
      await flushWorkerLogs(this.pool); // a stopped worker would lose the log lines it holds
      await this.pool.destroy().catch(() => {});
      this.listeners.abandon(); // anything still queued for a worker is closed here
      await this.discovery.close();
      this.registryRequests.close();
      this.localRuntime?.discovery.close();
      this.control.close();
      this.rpcStats.close();
      this.peerStats.close();
      await this.admin.close();
      if (this.started) log.info('sluice stopped');
    })();
    return this.stopping;
  }
}
