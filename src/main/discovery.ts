/**
 * The main thread's side of service discovery: the registries of the config, the services the
 * workers asked for, and their lists published to every worker through the endpoint mailbox.
 *
 *   worker ──DiscoveryRequest (registry channel)──▶ Discovery.request ──▶ Registries.subscribe
 *   Subscription ready / 'change' ──▶ mailbox entry `<kind>/<service>` ──▶ control 'endpoints' ──▶ workers
 *   Subscription 'closed' (idle) ──▶ entry removed: workers drop the cluster and its pools
 *   registry.touch words (set by requests) ──▶ Subscription.touch()  (a pump, every idle/8)
 *
 * A service's entry is published once its first list came (or firstListTimeoutMs passed, as
 * `timeout`), then on every change; stale lists keep serving (the module says so in its gauge).
 * A config whose registries changed gets new Registries: the services in use are subscribed
 * there again and keep their last list until the new one comes.
 */
import type { EndpointConfig, SluiceConfig } from '../config/config';
import { log } from '../log';
import { Registries, registrySeries, type RegistryEndpoint, type Subscription } from '../registry';
import type { ServiceKind } from '../registry/config';
import { LogEvery } from '../log';
import type { DiscoveryRefusal } from '../shared/messages';
import type { Stats } from '../stats/stats';
import { discoveredName, type DiscoveredList, type EndpointDirectory } from '../upstream/endpoint-directory';
import { TOUCH_SLOTS } from '../upstream/discovered';

/** What Discovery needs of the process around it (Sluice). */
export interface DiscoveryHost {
  readonly directory: EndpointDirectory;
  /** The registry.touch region. */
  readonly touch: Int32Array;
  /** Stats knowing every series added so far. */
  stats(): Stats;
  /** Adds series (a registry's) to the stats registry. */
  addSeries(keys: readonly string[]): void;
  /** A discovered service's cluster series, shipped to the workers before its list. */
  addCluster(name: string): void;
  /** Publishes the mailbox now and tells the workers to read it. */
  wake(): void;
  /** Tells the workers that `service` will not be subscribed, so that the requests held for it go on now. */
  refuse(kind: ServiceKind, service: string, why: DiscoveryRefusal['why']): void;
}

/** A service the workers use, and the subscription that feeds it. */
interface Service {
  readonly name: string;
  readonly kind: ServiceKind;
  readonly service: string;
  sub: Subscription;
  readonly touch: number;
  /** What the workers have: nothing yet, a list, or the word that no registry answered. */
  state: 'pending' | DiscoveredList['state'];
  /** The current subscription gave its first list (or timed out): its changes are published. */
  live: boolean;
  /** When the service was first asked for (performance.now()), until its first publish. */
  askedAt: number;
}

/** A registry endpoint as a cluster endpoint: Dubbo's weight as it is (0 takes no calls while others have weight). */
function toEndpoint(e: RegistryEndpoint): EndpointConfig {
  return { address: e.address, labels: e.labels as Record<string, string>, weight: e.weight };
}

export class Discovery {
  private registries: Registries | null = null;
  private readonly services = new Map<string, Service>();
  /** registries and registry sections of the config in force, to see whether a reload changes them. */
  private key = '';
  private readonly freeTouch: number[] = [];
  private nextTouch = 1;
  private pump: NodeJS.Timeout | null = null;
  private closed = false;
  /** The previous config's registries are closing: their subscriptions' 'closed' is no unsubscription. */
  private reloading = false;
  private readonly refused = new LogEvery('registry: a service could not be subscribed');

  constructor(private readonly host: DiscoveryHost, config: SluiceConfig) {
    this.apply(config);
  }

  /** A worker needs `service`: subscribe it (once), or tell the workers again where its list is. */
  request(kind: ServiceKind, service: string): void {
    if (this.closed || !this.registries) return;
    const name = discoveredName(kind, service);
    const have = this.services.get(name);
    if (have) {
      // published already: the asking worker had not read the mailbox yet
      if (have.state !== 'pending') this.host.wake();
      return;
    }
    let sub: Subscription;
    try {
      sub = this.registries.subscribe(kind, service);
    } catch (err) {
      // a bad name, a kind no registry serves, or registry.maxServices reached: the held requests
      // go on at once, as without a registry
      this.refused.note({ kind, service: service.slice(0, 200), err: (err as Error).message });
      this.host.refuse(kind, service, (err as { code?: string }).code === 'ERR_REGISTRY_FULL' ? 'full' : 'not_a_service');
      return;
    }
    this.track(sub);
  }

  /** The services subscribed now, for the admin API. */
  list(): Array<{ name: string; state: string; sub: Subscription }> {
    return [...this.services.values()].map((s) => ({ name: s.name, state: s.state, sub: s.sub }));
  }

  status(): ReturnType<Registries['status']>['registries'] {
    return this.registries?.status().registries ?? [];
  }

  /** A new config: nothing happens unless its registries or registry settings changed. */
  apply(config: SluiceConfig): void {
    if (this.closed) return;
    const { balanceCaptured: _b, cluster: _c, ...settings } = config.registry;
    const key = JSON.stringify([config.registries, settings]);
    if (key === this.key) return;
    this.key = key;
    // the old sessions end first: the module's gauges are per registry name, and the new ones set them again
    const old = this.registries;
    this.registries = null;
    this.reloading = true;
    try { if (old) void old.close(); } finally { this.reloading = false; }
    this.startPump(config.registry.idleUnsubscribeMs);
    if (config.registries.length > 0) {
      this.host.addSeries(registrySeries(config.registries));
      this.registries = new Registries(config, { stats: this.host.stats(), log });
    }
    for (const s of [...this.services.values()]) {
      let sub: Subscription | null = null;
      try { sub = this.registries?.subscribe(s.kind, s.service) ?? null; } catch { sub = null; }
      if (!sub) { this.untrack(s); continue; }
      // the last list keeps serving until the new subscription's first one
      this.attach(s, sub);
    }
    for (const sub of this.registries?.subscriptions() ?? []) {
      if (!this.services.has(discoveredName(sub.kind, sub.service))) this.track(sub);
    }
    this.host.wake();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pump) clearInterval(this.pump);
    this.refused.flush();
    const r = this.registries;
    this.registries = null;
    await r?.close();
  }

  private track(sub: Subscription): void {
    const name = discoveredName(sub.kind, sub.service);
    const touch = this.freeTouch.pop() ?? this.nextTouch++;
    if (touch >= TOUCH_SLOTS) {
      // registry.maxServices is below TOUCH_SLOTS: only a reload racing the idle sweep gets here
      log.warn({ service: name }, `registry: more than ${TOUCH_SLOTS - 1} services at once; this one is not used`);
      this.registries?.unsubscribe(sub.kind, sub.service);
      this.host.refuse(sub.kind, sub.service, 'full');
      return;
    }
    Atomics.store(this.host.touch, touch, 0);
    const s: Service = { name, kind: sub.kind, service: sub.service, sub, touch, state: 'pending', live: false, askedAt: performance.now() };
    this.services.set(name, s);
    this.host.addCluster(name);
    this.attach(s, sub);
  }

  /** Feeds `s` from `sub` (a new subscription, or one that replaces the previous config's). */
  private attach(s: Service, sub: Subscription): void {
    s.sub = sub;
    s.live = false;
    sub.on('change', () => { if (s.sub === sub && s.live) this.publish(s, 'ready'); });
    sub.on('closed', () => { if (!this.reloading && !this.closed && s.sub === sub && this.services.get(s.name) === s) this.untrack(s); });
    sub.ready.then(
      () => { if (s.sub === sub) { s.live = true; this.publish(s, 'ready'); } },
      (err: { code?: string }) => {
        if (s.sub !== sub || err.code !== 'ERR_REGISTRY_TIMEOUT') return;
        // no registry answered: the workers fall back (or fail) at once from now; a list that comes later is published
        s.live = true;
        if (s.state === 'pending') this.publish(s, 'timeout');
      },
    );
  }

  private publish(s: Service, state: DiscoveredList['state']): void {
    if (this.services.get(s.name) !== s) return;
    const first = s.state === 'pending';
    s.state = state;
    const list: DiscoveredList = { kind: s.kind, service: s.service, state, touch: s.touch, endpoints: s.sub.endpoints.map(toEndpoint) };
    try {
      this.host.directory.set(s.name, list);
    } catch (err) {
      log.error({ service: s.name, err: (err as Error).message }, 'registry: the endpoint mailbox cannot take this list; the previous one stays');
      return;
    }
    this.host.wake();
    const st = this.host.stats();
    st.set(st.slot('sluice_cluster_endpoints', { cluster: s.name }), list.endpoints.length);
    st.inc(st.slot('sluice_cluster_endpoint_updates_total', { cluster: s.name }));
    if (first) {
      log.info({ service: s.name, endpoints: list.endpoints.length, state, ms: Math.round(performance.now() - s.askedAt) }, 'registry: service subscribed');
    }
  }

  private untrack(s: Service): void {
    this.services.delete(s.name);
    this.host.directory.set(s.name, null);
    Atomics.store(this.host.touch, s.touch, 0);
    this.freeTouch.push(s.touch);
    const st = this.host.stats();
    st.set(st.slot('sluice_cluster_endpoints', { cluster: s.name }), 0);
    this.host.wake();
    log.info({ service: s.name }, 'registry: service unsubscribed');
  }

  /** Requests set their service's touch word; the subscriptions learn of it here. */
  private startPump(idleMs: number): void {
    if (this.pump) { clearInterval(this.pump); this.pump = null; }
    if (idleMs <= 0) return;
    this.pump = setInterval(() => {
      for (const s of this.services.values()) if (Atomics.exchange(this.host.touch, s.touch, 0) !== 0) s.sub.touch();
    }, Math.min(1000, Math.max(5, Math.floor(idleMs / 8))));
    this.pump.unref();
  }
}
