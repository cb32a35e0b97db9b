/**
 * Services found in a registry, as a worker uses them: one cluster per service, made when the
 * worker first reads the service's list from the endpoint mailbox, and a client that asks the
 * main thread to subscribe a service the first time a request needs it.
 *
 *   request (no route) ─▶ lookup(kind, service) ─ known ─▶ its cluster (Dubbo: the call's group/version subset)
 *                              │ unknown
 *                              ├─▶ DiscoveryRequest on the registry channel ──▶ main: Registries.subscribe
 *                              └─ held ◀── control 'endpoints' (the mailbox has the list) ◀── main publishes
 *                                   or registry.firstListTimeoutMs (+ a grace) passes: a miss
 *
 * Every request sent to a discovered service sets its word in the registry.touch region (one
 * store); the main thread reads and clears the words and keeps the services that were used
 * subscribed (src/main/discovery.ts). A service unsubscribed for being idle leaves the mailbox;
 * its cluster goes and the pools of its providers are given up.
 */
import { BroadcastChannel } from 'node:worker_threads';
import type { ClusterConfig, SluiceConfig } from '../config/config';
import { dubboMatches } from '../registry/dubbo-url';
import { serviceNameProblem } from '../registry/config';
import { declareRegion } from '../shared/shared-memory';
import type { DiscoveryRefusal, DiscoveryRequest } from '../shared/messages';
import type { Stats } from '../stats/stats';
import { ClusterRuntime } from './cluster';
import type { DiscoveredList } from './endpoint-directory';
import { discoveredName } from './endpoint-directory';
import { isIP } from 'node:net';

/** Touch words, one per discovered service (the main thread hands them out; 0 is never used). */
export const TOUCH_SLOTS = 1 << 16;
export const TOUCH_REGION = declareRegion({ name: 'registry.touch', kind: 'int32', count: TOUCH_SLOTS });

/** How long past registry.firstListTimeoutMs a worker waits for the main thread's word before giving up on its own. */
const GRACE_MS = 1000;

/** A discovered service's cluster on one worker. */
export class DiscoveredCluster {
  readonly cluster: ClusterRuntime;
  state: DiscoveredList['state'];

  constructor(readonly name: string, list: DiscoveredList, config: SluiceConfig, stats: Stats) {
    const c = config.registry.cluster;
    const cc: ClusterConfig = {
      name, protocol: 'auto', lbPolicy: c.lbPolicy, connectTimeoutMs: c.connectTimeoutMs,
      maxConnectionsPerEndpoint: c.maxConnectionsPerEndpoint, maxPendingRequests: c.maxPendingRequests, endpoints: [],
    };
    this.cluster = new ClusterRuntime(cc, stats, Math.random, list.endpoints);
    this.state = list.state;
    this.touch = list.touch;
    this.kind = list.kind;
  }

  readonly touch: number;
  readonly kind: DiscoveredList['kind'];

  /** A new list; returns the pool keys no longer in it. */
  update(list: DiscoveredList): string[] {
    this.state = list.state;
    return this.cluster.setEndpoints(list.endpoints);
  }
}

/** What a lookup found: a target, or why there is none. */
export type DiscoveryResult =
  | { readonly cluster: ClusterRuntime; readonly subset: string }
  | { readonly miss: 'timeout' | 'no_provider' | 'not_a_service' | 'full'; readonly detail: string };

/** What a lookup needs of the config in force (a worker's CompiledConfig). */
export interface DiscoveredSource {
  readonly config: SluiceConfig;
  readonly discovered: ReadonlyMap<string, DiscoveredCluster>;
}

interface Pending {
  waiters: Array<(refused?: DiscoveryResult) => void>;
  timer: NodeJS.Timeout;
}

/** How long a worker answers a refused service's requests itself before asking the main thread again. */
const REFUSED_MS = 1000;
/** Refused names remembered at once (a caller may name many): past this the memory is cleared. */
const REFUSED_MAX = 4096;

/** A worker's side of on-demand subscription. */
export class DiscoveryClient {
  private readonly pending = new Map<string, Pending>();
  private readonly channel: BroadcastChannel | null;
  /** Services the main thread will not subscribe: name → [result, until (ms)]. */
  private readonly refused = new Map<string, readonly [DiscoveryResult, number]>();

  constructor(private readonly touchWords: Int32Array, channelName: string | undefined, private readonly current: () => DiscoveredSource) {
    this.channel = channelName ? new BroadcastChannel(channelName) : null;
    // the channel must not keep an idle worker alive
    (this.channel as unknown as { unref?(): void } | null)?.unref?.();
    if (this.channel) this.channel.onmessage = (ev) => this.onRefusal((ev as unknown as { data: DiscoveryRefusal }).data);
  }

  /**
   * The target of a request to `service` (a Dubbo interface, or an HTTP host for `spring`):
   * at once when the service's list is known (the result), else undefined and `done` later,
   * once the list came or the wait is over. `done` is never called when a result is returned.
   */
  lookup(src: DiscoveredSource, kind: 'dubbo' | 'spring', service: string, group: string | undefined, version: string | undefined,
    done: (r: DiscoveryResult) => void): DiscoveryResult | undefined {
    const problem = kind === 'spring' && isIP(service) !== 0 ? 'is an address' : serviceNameProblem(service);
    if (problem) return { miss: 'not_a_service', detail: `${JSON.stringify(service.slice(0, 100))} ${problem}` };
    const name = discoveredName(kind, service);
    const known = src.discovered.get(name);
    if (known) return this.use(known, kind, service, group, version);
    if (this.refused.size > 0) {
      const r = this.refused.get(name);
      if (r && r[1] > performance.now()) return r[0];
      if (r) this.refused.delete(name);
    }
    let p = this.pending.get(name);
    if (!p) {
      const wait = src.config.registry.firstListTimeoutMs + GRACE_MS;
      const timer = setTimeout(() => this.expire(name), wait);
      timer.unref(); // the held request's socket keeps the thread alive, not this
      p = { waiters: [], timer };
      this.pending.set(name, p);
      this.channel?.postMessage({ type: 'subscribe', kind, service } satisfies DiscoveryRequest);
    }
    p.waiters.push((refused) => {
      const d = this.current().discovered.get(name);
      done(d ? this.use(d, kind, service, group, version)
        : refused ?? { miss: 'timeout', detail: `no registry answered for ${kind} service ${service} in time` });
    });
    return undefined;
  }

  /** The mailbox was read: requests waiting for a service whose list is now known go on. */
  settle(src: DiscoveredSource): void {
    if (this.pending.size === 0) return;
    for (const [name, p] of [...this.pending]) {
      if (!src.discovered.has(name)) continue;
      this.pending.delete(name);
      clearTimeout(p.timer);
      for (const w of p.waiters) w();
    }
  }

  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.channel?.close();
  }

  private expire(name: string, refused?: DiscoveryResult): void {
    const p = this.pending.get(name);
    if (!p) return;
    this.pending.delete(name);
    clearTimeout(p.timer);
    for (const w of p.waiters) w(refused);
  }

  /** The main thread will not subscribe a service: its held requests go on now, and so do the next second's. */
  private onRefusal(m: DiscoveryRefusal | undefined): void {
    if (m?.type !== 'refused' || typeof m.service !== 'string') return;
    const name = discoveredName(m.kind, m.service);
    const r: DiscoveryResult = m.why === 'full'
      ? { miss: 'full', detail: `${m.kind} service ${m.service} not subscribed: registry.maxServices services are subscribed already` }
      : { miss: 'not_a_service', detail: `no registry can list ${m.kind} service ${m.service}` };
    if (this.refused.size >= REFUSED_MAX) this.refused.clear();
    this.refused.set(name, [r, performance.now() + REFUSED_MS]);
    this.expire(name, r);
  }

  private use(d: DiscoveredCluster, kind: 'dubbo' | 'spring', service: string, group: string | undefined, version: string | undefined): DiscoveryResult {
    Atomics.store(this.touchWords, d.touch, 1);
    if (d.state === 'timeout') return { miss: 'timeout', detail: `no registry answered for ${kind} service ${service} within registry.firstListTimeoutMs` };
    const c = d.cluster;
    let subset = '';
    if (kind === 'dubbo') {
      // Dubbo's rule: only providers of the call's own group and version
      const g = group ?? '';
      const v = version ?? '';
      subset = `\u0001dubbo\u0000${g}\u0000${v}`;
      c.prepareSubsetWhere(subset, (labels) => dubboMatches(labels, { group: g, version: v }));
    }
    if (c.subsetEndpoints(subset).length === 0) {
      const what = kind === 'dubbo' ? `no provider of ${service} (group "${group ?? ''}", version "${version ?? ''}")` : `no instance of ${service}`;
      return { miss: 'no_provider', detail: `${what} in the registry` };
    }
    return { cluster: c, subset };
  }
}
