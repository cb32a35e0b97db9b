/**
 * One ZooKeeper ensemble: the session, the watches, and the lists read under them.
 *
 *   subscribe ─▶ ServiceWatch ─▶ PathWatch per path ─▶ read queue (≤ READ_CONCURRENCY in flight)
 *                  dubbo:  <root>/<interface>/providers, <root>/<interface>/configurators   (children)
 *                  spring: <root>/<name> (children), <root>/<name>/<id> per instance           (data)
 *   watch fires ─▶ that path is read again (a read in flight is read again once it ends)
 *   every read of a service's paths done ─▶ endpoints ─▶ sink.list(key, endpoints)
 *
 * A path that does not exist gets an existence watch, so a service registered later is seen.
 *
 * Sessions. One client, created on the first subscription and closed when none is left.
 * - Connection lost: every service is stale (its last list keeps serving); the client library
 *   reconnects and re-registers its watches within the session; then every path is read again
 *   and each service is fresh once all of its paths were.
 * - Session expired, or the server stopped answering (a probe every third of the session timeout,
 *   unanswered for two thirds of it; the library itself never notices a silent server): the client
 *   is replaced by a new one and every path is read there.
 * - Unsubscribed services leave their watches at the server: ZooKeeper 3.4's protocol, the one the
 *   client speaks, cannot remove a watch. They fire at most once and are not re-armed. When they
 *   are a quarter of the watches (or all of them), the client is replaced, which ends the session
 *   and with it every watch it held; the new session watches only what is still subscribed.
 */
import type { RegistryConfig, ServiceKind } from './config';
import { registryConnection } from './config';
import {
  applyOverrides, hostPort, javaUrlEncode, parseOverrideNode, parseProviderNode, providerEnabled, providerWeight,
  sortOverrides, type DubboUrl, type ParseResult,
} from './dubbo-url';
import { parseSpringInstance, springAddress, type SpringParse } from './spring-instance';
import type { RegistryStats, SkipReason, StatsSink } from './stats';
import { LogEveryTo, type Clock, type Logger, type RegistryEndpoint } from './types';
import { ZkClient, ZK_CONNECTION_LOSS, ZK_NO_NODE, ZK_SESSION_EXPIRED, type ZkError, type ZkWatcher } from './zk-client';

/** Reads in flight at once: a reconnect with thousands of subscriptions must not flood the ensemble. */
const READ_CONCURRENCY = 256;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 30_000;
/** Unsubscriptions come in bursts (the idle sweep): one session replacement for a burst. */
const SWAP_DELAY_MS = 200;
const AUTH_FAILED_RETRY_MS = 5000;
const INTERN_MAX = 200_000;
const INTERN_MAX_LENGTH = 64;

export interface RegistrySink {
  /** The service's current list in this registry (empty when it has none, or is not registered). */
  list(key: string, endpoints: readonly RegistryEndpoint[]): void;
  stale(key: string, stale: boolean): void;
}

type Mode = 'children' | 'data';

class PathWatch {
  /** undefined: never read; null: the node does not exist. */
  value: string[] | Buffer | null | undefined = undefined;
  reading = false;
  dirty = false;
  queued = false;
  closed = false;
  /** The client whose session holds a watch of ours on this path. */
  armed: ZkClient | null = null;
  readEpoch = -1;
  retries = 0;
  retryTimer: unknown = null;
  watchClient: ZkClient | null = null;
  watchFn: ZkWatcher | null = null;
  constructor(readonly path: string, readonly mode: Mode, readonly owner: ServiceWatch, readonly instanceId = '') {}
}

class ServiceWatch {
  readonly primary: PathWatch[];
  /** Spring: one data watch per instance node. */
  readonly instances = new Map<string, PathWatch>();
  stale = true;
  closed = false;
  endpointCount = 0;
  /** Entries already counted as skipped (each once per subscription). */
  readonly skippedSeen = new Set<string>();
  /**
   * Dubbo: what each provider node gave, kept while the node is listed: its endpoint (null when
   * skipped or disabled), built under the overrides named by `overrides`. An unchanged provider
   * keeps its endpoint object, so an unchanged list is the same objects and no change at all.
   */
  providerCache = new Map<string, { endpoint: RegistryEndpoint | null; overrides: string }>();
  overrideCache = new Map<string, ParseResult<DubboUrl> | null>();
  /** Spring: each instance's data and the endpoint it gave (null: skipped or not serving). */
  instanceCache = new Map<string, { data: Buffer; endpoint: RegistryEndpoint | null }>();

  constructor(readonly key: string, readonly kind: ServiceKind, readonly service: string, paths: string[]) {
    this.primary = paths.map((p) => new PathWatch(p, 'children', this));
  }

  *pathWatches(): Iterable<PathWatch> {
    yield* this.primary;
    yield* this.instances.values();
  }
}

export interface ZooKeeperRegistryStatus {
  name: string;
  connected: boolean;
  sessionId: string | null;
  services: number;
  staleServices: number;
  watches: number;
  lingeringWatches: number;
}

export class ZooKeeperRegistry {
  readonly name: string;
  readonly source: string;
  readonly kinds: ReadonlySet<ServiceKind>;
  private readonly servers: string;
  private readonly chroot: string;
  private client: ZkClient | null = null;
  private connected = false;
  /** Bumped at each (re)connection: a path read in an older epoch must be read again. */
  private epoch = 0;
  private readonly services = new Map<string, ServiceWatch>();
  private readonly queue: PathWatch[] = [];
  private active = 0;
  private armedCount = 0;
  private lingering = 0;
  private staleCount = 0;
  private endpointCount = 0;
  private swapTimer: unknown = null;
  private probeTimer: unknown = null;
  private probeSince: number | null = null;
  private connectTimer: unknown = null;
  private closed = false;
  private readonly readErrors: LogEveryTo;
  private readonly skippedLog: LogEveryTo;
  private readonly connectionLog: LogEveryTo;

  constructor(
    readonly config: RegistryConfig,
    private readonly sink: RegistrySink,
    private readonly stats: RegistryStats,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    this.name = config.name;
    this.source = `zookeeper:${config.name}`;
    this.kinds = new Set(config.kinds);
    const c = registryConnection(config);
    this.servers = c.servers;
    this.chroot = c.chroot;
    this.readErrors = new LogEveryTo(log, clock, 'registry read failed; the last list keeps serving');
    this.skippedLog = new LogEveryTo(log, clock, 'registry entry skipped');
    this.connectionLog = new LogEveryTo(log, clock, 'registry connection lost; the last lists keep serving (stale)');
  }

  private get sinkStats(): StatsSink {
    return this.stats.sink;
  }

  /** The ZooKeeper paths a service is read from (its primary paths). */
  pathsOf(kind: ServiceKind, service: string): string[] {
    if (kind === 'dubbo') {
      const base = `${this.config.dubboRoot.replace(/\/$/, '')}/${javaUrlEncode(service)}`;
      return [`${base}/providers`, `${base}/configurators`];
    }
    return [`${this.config.springRoot.replace(/\/$/, '')}/${service}`];
  }

  watch(key: string, kind: ServiceKind, service: string): void {
    if (this.closed || this.services.has(key)) return;
    const sw = new ServiceWatch(key, kind, service, this.pathsOf(kind, service));
    this.services.set(key, sw);
    this.staleCount++;
    this.sinkStats.inc(this.stats.subscribe);
    this.gauges();
    if (!this.client) this.replaceClient();
    else for (const pw of sw.primary) this.schedule(pw);
  }

  unwatch(key: string): void {
    const sw = this.services.get(key);
    if (!sw) return;
    this.services.delete(key);
    sw.closed = true;
    if (sw.stale) this.staleCount--;
    this.endpointCount -= sw.endpointCount;
    for (const pw of sw.pathWatches()) this.closePath(pw);
    this.sinkStats.inc(this.stats.unsubscribe);
    this.gauges();
    this.maybeSwap();
  }

  status(): ZooKeeperRegistryStatus {
    return {
      name: this.name,
      connected: this.connected,
      sessionId: this.client && this.connected ? this.client.sessionId() : null,
      services: this.services.size,
      staleServices: this.staleCount,
      watches: this.armedCount,
      lingeringWatches: this.lingering,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const sw of this.services.values()) for (const pw of sw.pathWatches()) this.closePath(pw);
    this.services.clear();
    this.staleCount = 0;
    this.endpointCount = 0;
    this.clearTimer('swapTimer');
    this.clearTimer('connectTimer');
    this.stopProbe();
    this.client?.close();
    this.client = null;
    this.connected = false;
    this.armedCount = 0;
    this.lingering = 0;
    this.gauges();
    this.readErrors.flush();
    this.skippedLog.flush();
    this.connectionLog.flush();
  }

  // ── the session ──────────────────────────────────────────────────────────

  /** A new client (and session) for what is subscribed now; none when nothing is. */
  private replaceClient(): void {
    const old = this.client;
    this.client = null;
    old?.close();
    this.connected = false;
    this.stopProbe();
    this.clearTimer('swapTimer');
    this.clearTimer('connectTimer');
    this.queue.length = 0;
    this.active = 0;
    this.armedCount = 0;
    this.lingering = 0;
    for (const sw of this.services.values()) {
      for (const pw of sw.pathWatches()) {
        pw.reading = false;
        pw.dirty = false;
        pw.queued = false;
        pw.armed = null;
        this.clearRetry(pw);
      }
    }
    if (this.services.size > 0 && !this.closed) {
      const client = new ZkClient({ servers: this.servers, chroot: this.chroot, sessionTimeoutMs: this.config.sessionTimeoutMs, digest: this.config.auth?.digest });
      this.client = client;
      client.on('connected', () => this.onConnected(client));
      client.on('disconnected', () => this.onDisconnected(client));
      client.on('expired', () => this.onExpired(client));
      client.on('authFailed', () => this.onAuthFailed(client));
      this.epoch++;
      for (const sw of this.services.values()) for (const pw of sw.pathWatches()) this.schedule(pw);
      client.connect();
      this.startConnectWatchdog(client);
    }
    this.gauges();
  }

  private onConnected(client: ZkClient): void {
    if (client !== this.client) return;
    this.clearTimer('connectTimer');
    this.connected = true;
    this.epoch++;
    this.log.info({ registry: this.name, sessionId: client.sessionId(), sessionTimeoutMs: client.sessionTimeoutMs() }, 'registry connected');
    this.connectionLog.flush();
    // the library re-registered its watches (SetWatches); read every list again all the same,
    // since what changed while we were away is known only by reading
    for (const sw of this.services.values()) for (const pw of sw.pathWatches()) if (!pw.reading) this.schedule(pw);
    this.startProbe(client);
    this.gauges();
    this.maybeSwap();
  }

  private onDisconnected(client: ZkClient): void {
    if (client !== this.client) return;
    this.lost('connection lost', {});
    this.startConnectWatchdog(client);
  }

  /**
   * The client library retries connecting for ever, but waits for ever too on a server that
   * accepted the connection and never answers the handshake (one still starting, a frozen one).
   * Without a session for twice the session timeout (by then the server has expired the old one;
   * a reconnection before that learns so from the server), start over with a new client.
   */
  private startConnectWatchdog(client: ZkClient): void {
    this.clearTimer('connectTimer');
    const ms = Math.max(2 * this.config.sessionTimeoutMs, this.config.sessionTimeoutMs + 5000);
    this.connectTimer = this.clock.setTimeout(() => {
      this.connectTimer = null;
      if (client !== this.client || this.connected || this.closed) return;
      this.sinkStats.inc(this.stats.errors);
      this.connectionLog.note({ registry: this.name, why: `no session for ${ms} ms; starting over with a new client` });
      this.replaceClient();
    }, ms);
  }

  private onExpired(client: ZkClient): void {
    if (client !== this.client) return;
    this.sinkStats.inc(this.stats.sessionsExpired);
    this.lost('session expired', {});
    this.replaceClient();
  }

  private onAuthFailed(client: ZkClient): void {
    if (client !== this.client) return;
    this.lost('authentication failed', {});
    this.clock.setTimeout(() => { if (this.client === client) this.replaceClient(); }, AUTH_FAILED_RETRY_MS);
  }

  private lost(why: string, fields: Record<string, unknown>): void {
    this.sinkStats.inc(this.stats.errors);
    this.connectionLog.note({ registry: this.name, why, ...fields });
    this.connected = false;
    this.stopProbe();
    for (const sw of this.services.values()) this.setStale(sw, true);
    this.gauges();
  }

  /**
   * A server that stops answering without closing the connection is not noticed by the client
   * library: an `exists` every third of the session timeout, unanswered for two thirds of it,
   * replaces the client, as ZooKeeper's own Java client gives up on a connection after its
   * read timeout.
   */
  private startProbe(client: ZkClient): void {
    this.stopProbe();
    const every = Math.max(100, Math.floor(client.sessionTimeoutMs() / 3));
    const tick = () => {
      this.probeTimer = null;
      if (client !== this.client || !this.connected) return;
      const now = this.clock.now();
      if (this.probeSince !== null) {
        if (now - this.probeSince >= 2 * every) {
          this.lost('no answer to a probe', { waitedMs: now - this.probeSince });
          this.replaceClient();
          return;
        }
      } else {
        const since = (this.probeSince = now);
        void client.exists('/').then(() => { if (this.probeSince === since) this.probeSince = null; });
      }
      this.probeTimer = this.clock.setTimeout(tick, every);
    };
    this.probeTimer = this.clock.setTimeout(tick, every);
  }

  private stopProbe(): void {
    this.clearTimer('probeTimer');
    this.probeSince = null;
  }

  /** Replace the session once the watches left behind by unsubscribed services are many enough. */
  private maybeSwap(): void {
    if (this.swapTimer !== null || this.closed) return;
    const live = this.armedCount - this.lingering;
    if (this.services.size > 0 && (this.lingering === 0 || this.lingering < Math.max(1, Math.ceil(live / 4)) || !this.connected)) return;
    this.swapTimer = this.clock.setTimeout(() => {
      this.swapTimer = null;
      const stillLive = this.armedCount - this.lingering;
      if (this.services.size === 0 || (this.connected && this.lingering > 0 && this.lingering >= Math.max(1, Math.ceil(stillLive / 4)))) {
        this.log.info({ registry: this.name, services: this.services.size, lingeringWatches: this.lingering }, 'registry session replaced to drop the watches of unsubscribed services');
        this.replaceClient();
      }
    }, SWAP_DELAY_MS);
  }

  // ── reading ──────────────────────────────────────────────────────────────

  private schedule(pw: PathWatch): void {
    if (pw.closed) return;
    if (pw.reading) { pw.dirty = true; return; }
    if (pw.queued) return;
    this.clearRetry(pw);
    pw.queued = true;
    this.queue.push(pw);
    this.pump();
  }

  private pump(): void {
    while (this.active < READ_CONCURRENCY && this.queue.length > 0 && this.client) {
      const pw = this.queue.shift()!;
      pw.queued = false;
      if (pw.closed) continue;
      pw.reading = true;
      this.active++;
      void this.read(pw, this.client);
    }
  }

  private watcherFor(pw: PathWatch, client: ZkClient): ZkWatcher {
    if (pw.watchClient !== client || !pw.watchFn) {
      pw.watchClient = client;
      pw.watchFn = () => this.onWatchEvent(pw, client);
    }
    return pw.watchFn;
  }

  private onWatchEvent(pw: PathWatch, client: ZkClient): void {
    if (client !== this.client) return;
    this.sinkStats.inc(this.stats.watchEvents);
    this.setArmed(pw, null);
    if (pw.closed) return;
    this.schedule(pw);
  }

  private async read(pw: PathWatch, client: ZkClient): Promise<void> {
    const watcher = this.watcherFor(pw, client);
    let value: string[] | Buffer | null | undefined;
    let error: ZkError | undefined;
    let watched = false;
    if (pw.mode === 'children') {
      for (let attempt = 0; attempt < 3 && value === undefined && !error; attempt++) {
        const r = await client.getChildren(pw.path, watcher);
        if (r.ok) { value = r.value; watched = true; break; }
        if (r.error.code !== ZK_NO_NODE) { error = r.error; break; }
        const e = await client.exists(pw.path, watcher);
        if (!e.ok) error = e.error;
        else if (!e.value) { value = null; watched = true; }
        // else: created in between; read it again
      }
      if (value === undefined && !error) error = { code: ZK_NO_NODE, message: 'the node keeps appearing and going' };
    } else {
      const r = await client.getData(pw.path, watcher);
      if (r.ok) { value = r.value; watched = true; } else if (r.error.code === ZK_NO_NODE) value = null;
      else error = r.error;
    }
    if (client !== this.client) return; // the session was replaced meanwhile: this answer is void
    this.active--;
    pw.reading = false;
    this.sinkStats.inc(this.stats.reads);
    if (watched) this.setArmed(pw, client);
    if (pw.closed) { this.pump(); this.maybeSwap(); return; }
    if (error) {
      this.onReadError(pw, error);
    } else {
      pw.value = value;
      pw.readEpoch = this.connected ? this.epoch : -1;
      pw.retries = 0;
      this.updated(pw);
    }
    if (pw.dirty) { pw.dirty = false; this.schedule(pw); }
    this.pump();
  }

  private onReadError(pw: PathWatch, error: ZkError): void {
    const lost = error.code === ZK_CONNECTION_LOSS || error.code === ZK_SESSION_EXPIRED;
    if (!lost) {
      this.sinkStats.inc(this.stats.errors);
      this.readErrors.note({ registry: this.name, path: pw.path, code: error.code, error: error.message });
    }
    // connection trouble: the reconnection reads everything again; other errors are retried
    if (lost && !this.connected) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(pw.retries++, 10));
    pw.retryTimer = this.clock.setTimeout(() => { pw.retryTimer = null; this.schedule(pw); }, delay);
  }

  private setArmed(pw: PathWatch, client: ZkClient | null): void {
    if ((pw.armed === null) === (client === null)) { pw.armed = client; return; }
    pw.armed = client;
    const d = client ? 1 : -1;
    this.armedCount += d;
    if (pw.closed) this.lingering += d;
    this.sinkStats.set(this.stats.watches, this.armedCount);
  }

  private closePath(pw: PathWatch): void {
    if (pw.closed) return;
    pw.closed = true;
    this.clearRetry(pw);
    if (pw.armed) this.lingering++;
  }

  private clearRetry(pw: PathWatch): void {
    if (pw.retryTimer !== null) { this.clock.clearTimeout(pw.retryTimer); pw.retryTimer = null; }
  }

  // ── lists ────────────────────────────────────────────────────────────────

  private updated(pw: PathWatch): void {
    const sw = pw.owner;
    if (sw.kind === 'spring' && pw === sw.primary[0]) this.syncInstances(sw);
    for (const p of sw.pathWatches()) if (p.value === undefined) return; // not every path read yet
    this.publish(sw);
  }

  /** Spring: one data watch per instance node, following the children of the service's node. */
  private syncInstances(sw: ServiceWatch): void {
    const dir = sw.primary[0];
    const ids = new Set(Array.isArray(dir.value) ? dir.value : []);
    for (const [id, pw] of sw.instances) {
      if (!ids.has(id)) { this.closePath(pw); sw.instances.delete(id); }
    }
    for (const id of ids) {
      if (sw.instances.has(id)) continue;
      const pw = new PathWatch(`${dir.path}/${id}`, 'data', sw, id);
      sw.instances.set(id, pw);
      this.schedule(pw);
    }
  }

  private skip(sw: ServiceWatch, entry: string, reason: SkipReason, detail: string): void {
    if (sw.skippedSeen.has(entry)) return;
    sw.skippedSeen.add(entry);
    this.sinkStats.inc(this.stats.skipped[reason]);
    this.skippedLog.note({ registry: this.name, kind: sw.kind, service: sw.service, reason, detail, entry: entry.length > 300 ? `${entry.slice(0, 300)}…` : entry });
  }

  private publish(sw: ServiceWatch): void {
    const endpoints = sw.kind === 'dubbo' ? this.dubboEndpoints(sw) : this.springEndpoints(sw);
    this.endpointCount += endpoints.length - sw.endpointCount;
    sw.endpointCount = endpoints.length;
    this.sinkStats.set(this.stats.endpoints, this.endpointCount);
    this.sink.list(sw.key, endpoints);
    if (sw.stale && this.connected) {
      let fresh = true;
      for (const p of sw.pathWatches()) if (p.readEpoch !== this.epoch) { fresh = false; break; }
      if (fresh) this.setStale(sw, false);
    }
  }

  private setStale(sw: ServiceWatch, stale: boolean): void {
    if (sw.stale === stale || sw.closed) return;
    sw.stale = stale;
    this.staleCount += stale ? 1 : -1;
    this.sinkStats.set(this.stats.stale, this.staleCount);
    this.sink.stale(sw.key, stale);
  }

  private dubboEndpoints(sw: ServiceWatch): RegistryEndpoint[] {
    const [providersPw, configuratorsPw] = sw.primary;
    const providers = Array.isArray(providersPw.value) ? providersPw.value : [];
    const overrideNodes = Array.isArray(configuratorsPw.value) ? configuratorsPw.value : [];
    const overrides: DubboUrl[] = [];
    const oc = new Map<string, ParseResult<DubboUrl> | null>();
    for (const name of overrideNodes) {
      const r = sw.overrideCache.get(name) ?? parseOverrideNode(name);
      oc.set(name, r);
      if (r === null) continue;
      if (r.ok) overrides.push(r.value);
      else this.skip(sw, name, r.reason, r.detail);
    }
    sw.overrideCache = oc;
    const overridesKey = overrideNodes.join('\n');
    const sorted = sortOverrides(overrides);
    const out: RegistryEndpoint[] = [];
    const pc = new Map<string, { endpoint: RegistryEndpoint | null; overrides: string }>();
    for (const name of providers) {
      let entry = sw.providerCache.get(name);
      if (!entry || entry.overrides !== overridesKey) entry = { endpoint: this.dubboEndpoint(sw, name, sorted), overrides: overridesKey };
      pc.set(name, entry);
      if (entry.endpoint) out.push(entry.endpoint);
    }
    sw.providerCache = pc;
    return out;
  }

  private dubboEndpoint(sw: ServiceWatch, name: string, overrides: DubboUrl[]): RegistryEndpoint | null {
    const r = parseProviderNode(name, this.intern);
    if (!r.ok) { this.skip(sw, name, r.reason, r.detail); return null; }
    const url = applyOverrides(r.value, overrides);
    if (!providerEnabled(url)) return null;
    const labels = url.params; // this parse's own object (or the copy applyOverrides made)
    labels.group ??= '';
    labels.version ??= '';
    return Object.freeze({
      address: this.intern(hostPort(url.host, url.port)),
      weight: providerWeight(url),
      labels: Object.freeze(labels),
      source: this.source,
      id: `${url.protocol}://${hostPort(url.host, url.port)}/${url.path}`,
    });
  }

  private springEndpoints(sw: ServiceWatch): RegistryEndpoint[] {
    const out: RegistryEndpoint[] = [];
    const ic = new Map<string, { data: Buffer; endpoint: RegistryEndpoint | null }>();
    for (const [id, pw] of sw.instances) {
      if (pw.value === null || pw.value === undefined) continue; // gone since the list was read
      const data = pw.value as Buffer;
      let entry = sw.instanceCache.get(id);
      if (!entry || !entry.data.equals(data)) entry = { data, endpoint: this.springEndpoint(sw, id, data) };
      ic.set(id, entry);
      if (entry.endpoint) out.push(entry.endpoint);
    }
    sw.instanceCache = ic;
    return out;
  }

  private springEndpoint(sw: ServiceWatch, id: string, data: Buffer): RegistryEndpoint | null {
    const r: SpringParse = parseSpringInstance(id, data);
    if (!r.ok) { this.skip(sw, `${id}:${data.toString('utf8')}`, r.reason, r.detail); return null; }
    if (!r.value.serving) return null;
    return Object.freeze({ address: springAddress(r.value), weight: 1, labels: Object.freeze(r.value.labels), source: this.source, id: r.value.id });
  }

  /**
   * One copy of each short string the providers repeat (parameter names, most values, hosts):
   * 48 providers × thousands of interfaces say `side=provider` a great many times. Bounded: past
   * INTERN_MAX strings, new ones are kept as they come. A flat copy is stored, so the pool does not
   * hold on to the decoded URL a value was cut from.
   */
  private readonly internPool = new Map<string, string>();
  private readonly intern = (s: string): string => {
    if (s.length > INTERN_MAX_LENGTH) return s;
    const hit = this.internPool.get(s);
    if (hit !== undefined) return hit;
    if (this.internPool.size >= INTERN_MAX) return s;
    const flat = Buffer.from(s, 'utf8').toString('utf8');
    this.internPool.set(flat, flat);
    return flat;
  };

  private gauges(): void {
    const s = this.sinkStats;
    s.set(this.stats.connected, this.connected ? 1 : 0);
    s.set(this.stats.subscriptions, this.services.size);
    s.set(this.stats.stale, this.staleCount);
    s.set(this.stats.watches, this.armedCount);
    s.set(this.stats.endpoints, this.endpointCount);
  }

  private clearTimer(which: 'swapTimer' | 'probeTimer' | 'connectTimer'): void {
    if (this[which] !== null) { this.clock.clearTimeout(this[which]); this[which] = null; }
  }
}

