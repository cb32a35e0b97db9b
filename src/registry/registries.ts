/**
 * The registries of a config, and the services subscribed in them. Main thread only: the data
 * path subscribes a service on its first request, touches it on every request, and publishes
 * each 'change' of a subscription to the workers.
 *
 *   data path ──subscribe(kind, service)──▶ Registries ──watch──▶ ZooKeeperRegistry × registries[]
 *             ◀──Subscription (endpoints, ready, stale, 'change')◀──list / stale per registry──┘
 *
 * Idle services: `touch()` is one store; a sweep every quarter of registry.idleUnsubscribeMs
 * notes which subscriptions were touched since the last sweep and unsubscribes those untouched
 * for idleUnsubscribeMs (give or take a quarter). Services of registry.subscribeAtStart are
 * subscribed in the constructor and never idle out.
 */
import type { RegistriesConfig, ServiceKind } from './config';
import { SERVICE_KINDS, serviceNameProblem } from './config';
import { GlobalRegistryStats, MemoryStats, RegistryStats, type StatsSink } from './stats';
import { Subscription } from './subscription';
import { RegistryError, realClock, type Clock, type Logger } from './types';
import { ZooKeeperRegistry, type ZooKeeperRegistryStatus } from './zookeeper-registry';

export interface RegistriesDeps {
  /** The main thread's Stats (after registrySeries() was added to its registry). */
  stats?: StatsSink;
  /** The process log (src/log.ts `log`). */
  log?: Logger;
  clock?: Clock;
}

export interface SubscriptionStatus {
  kind: ServiceKind;
  service: string;
  endpoints: number;
  version: number;
  stale: boolean;
  held: boolean;
  pinned: boolean;
}

const SWEEP_MIN_MS = 10;
const SWEEP_MAX_MS = 60_000;

export class Registries {
  private readonly registries: ZooKeeperRegistry[] = [];
  private readonly subs = new Map<string, Subscription>();
  private readonly clock: Clock;
  private readonly global: GlobalRegistryStats;
  private sweepTimer: unknown = null;
  private closed = false;

  constructor(private readonly config: RegistriesConfig, deps: RegistriesDeps = {}) {
    const stats = deps.stats ?? new MemoryStats();
    // the process log is loaded only when no logger is given: tools and tests run without it
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const log = deps.log ?? (require('../log') as { log: Logger }).log;
    this.clock = deps.clock ?? realClock;
    this.global = new GlobalRegistryStats(stats);
    for (const rc of config.registries) {
      const name = rc.name;
      const sink = {
        list: (key: string, endpoints: Parameters<Subscription['setList']>[1]) => this.subs.get(key)?.setList(name, endpoints),
        stale: (key: string, stale: boolean) => this.subs.get(key)?.setStale(name, stale),
      };
      this.registries.push(new ZooKeeperRegistry(rc, sink, new RegistryStats(stats, name), log, this.clock));
    }
    for (const kind of SERVICE_KINDS) {
      for (const service of config.registry.subscribeAtStart[kind]) this.open(kind, service, true);
    }
    const idle = config.registry.idleUnsubscribeMs;
    if (idle > 0) this.scheduleSweep(Math.min(SWEEP_MAX_MS, Math.max(SWEEP_MIN_MS, Math.floor(idle / 4))));
  }

  /**
   * The subscription of a service, made on its first call: endpoints as soon as its `ready`
   * resolves, and a 'change' event whenever they change. Counts as a use (touch()).
   * Throws RegistryError: ERR_REGISTRY_BAD_SERVICE, ERR_REGISTRY_NO_REGISTRY, ERR_REGISTRY_FULL, ERR_REGISTRY_CLOSED.
   */
  subscribe(kind: ServiceKind, service: string): Subscription {
    const sub = this.subs.get(`${kind}:${service}`) ?? this.open(kind, service, false);
    sub.used = true;
    return sub;
  }

  /** The subscription if there is one; no subscribing. */
  get(kind: ServiceKind, service: string): Subscription | undefined {
    return this.subs.get(`${kind}:${service}`);
  }

  /** Marks a service used, keeping it subscribed; false when it is not subscribed. Prefer Subscription.touch(). */
  touch(kind: ServiceKind, service: string): boolean {
    const sub = this.subs.get(`${kind}:${service}`);
    if (sub) sub.used = true;
    return sub !== undefined;
  }

  /** Drops a subscription now (pinned ones too); false when there was none. */
  unsubscribe(kind: ServiceKind, service: string): boolean {
    const sub = this.subs.get(`${kind}:${service}`);
    if (!sub) return false;
    this.drop(sub);
    return true;
  }

  subscriptions(): Subscription[] {
    return [...this.subs.values()];
  }

  status(): { registries: ZooKeeperRegistryStatus[]; subscriptions: SubscriptionStatus[] } {
    return {
      registries: this.registries.map((r) => r.status()),
      subscriptions: [...this.subs.values()].map((s) => ({
        kind: s.kind, service: s.service, endpoints: s.endpoints.length, version: s.version, stale: s.stale, held: s.held, pinned: s.pinned,
      })),
    };
  }

  /** Ends every session and subscription; pending `ready` promises fail with ERR_REGISTRY_CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer !== null) this.clock.clearTimeout(this.sweepTimer);
    for (const sub of [...this.subs.values()]) this.drop(sub);
    for (const r of this.registries) r.close();
  }

  private open(kind: ServiceKind, service: string, pinned: boolean): Subscription {
    if (this.closed) throw new RegistryError('ERR_REGISTRY_CLOSED', 'the registries are closed');
    if (!SERVICE_KINDS.includes(kind)) throw new RegistryError('ERR_REGISTRY_BAD_SERVICE', `unknown kind of service "${String(kind)}"`);
    const problem = serviceNameProblem(service);
    if (problem) throw new RegistryError('ERR_REGISTRY_BAD_SERVICE', `service name ${JSON.stringify(service)} ${problem}`);
    const regs = this.registries.filter((r) => r.kinds.has(kind));
    if (regs.length === 0) throw new RegistryError('ERR_REGISTRY_NO_REGISTRY', `no registry serves ${kind} services`);
    const s = this.config.registry;
    // a caller can name any host or interface: the subscriptions (watches, memory) stay bounded
    if (this.subs.size >= s.maxServices) {
      this.global.sink.inc(this.global.refused);
      throw new RegistryError('ERR_REGISTRY_FULL', `registry.maxServices (${s.maxServices}) services are subscribed already`);
    }
    const sub = new Subscription(kind, service, {
      registries: regs.map((r) => r.name),
      zeroInstanceHoldMs: s.zeroInstanceHoldMs,
      firstListTimeoutMs: s.firstListTimeoutMs,
      pinned,
      clock: this.clock,
      stats: this.global,
    });
    this.subs.set(sub.key, sub);
    for (const r of regs) r.watch(sub.key, kind, service);
    return sub;
  }

  private drop(sub: Subscription): void {
    if (this.subs.get(sub.key) !== sub) return;
    this.subs.delete(sub.key);
    for (const r of this.registries) if (r.kinds.has(sub.kind)) r.unwatch(sub.key);
    sub.close();
  }

  private scheduleSweep(every: number): void {
    this.sweepTimer = this.clock.setTimeout(() => {
      this.sweepTimer = null;
      if (this.closed) return;
      const now = this.clock.now();
      const idle = this.config.registry.idleUnsubscribeMs;
      for (const sub of [...this.subs.values()]) {
        if (sub.used) { sub.used = false; sub.lastUsed = now; continue; }
        if (!sub.pinned && now - sub.lastUsed >= idle) this.drop(sub);
      }
      this.scheduleSweep(every);
    }, every);
  }
}
