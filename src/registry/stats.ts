/**
 * The registries' stats, declared once in the style of src/stats/stats.ts FAMILIES. The
 * integration appends REGISTRY_FAMILIES to FAMILIES (for HELP, TYPE and gauge handling) and adds
 * `registrySeries(config)` to the StatsRegistry when a config is applied; the registries then
 * write through the main thread's Stats (Stats fits `StatsSink` as it is).
 */
import type { RegistryConfig } from './config';
import { declareFamilies } from '../stats/stats';

type Kind = 'counter' | 'gauge';
type By = 'none' | 'registry' | 'registry_reason';
export interface RegistryFamily { name: string; kind: Kind; help: string; by: By }

export const SKIP_REASONS = ['malformed', 'unsupported'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export const REGISTRY_FAMILIES: readonly RegistryFamily[] = [
  { name: 'sluice_registry_connected', kind: 'gauge', by: 'registry', help: '1 while Sluice has a live session with the registry' },
  { name: 'sluice_registry_subscriptions', kind: 'gauge', by: 'registry', help: 'Services subscribed in the registry now' },
  { name: 'sluice_registry_subscribe_total', kind: 'counter', by: 'registry', help: 'Services subscribed (on first use, or at start)' },
  { name: 'sluice_registry_unsubscribe_total', kind: 'counter', by: 'registry', help: 'Services unsubscribed (idle for registry.idleUnsubscribeMs, or dropped)' },
  { name: 'sluice_registry_watches', kind: 'gauge', by: 'registry', help: 'Paths Sluice watches in the registry now, counting watches left behind by unsubscribed services until they fire or the session is replaced' },
  { name: 'sluice_registry_watch_events_total', kind: 'counter', by: 'registry', help: 'Watch notifications received' },
  { name: 'sluice_registry_reads_total', kind: 'counter', by: 'registry', help: 'Lists read (child lists and instance data)' },
  { name: 'sluice_registry_errors_total', kind: 'counter', by: 'registry', help: 'Registry errors: failed reads, lost connections, expired sessions, unanswered probes' },
  { name: 'sluice_registry_sessions_expired_total', kind: 'counter', by: 'registry', help: 'Sessions the registry expired (every list is re-read in a new one)' },
  { name: 'sluice_registry_stale_services', kind: 'gauge', by: 'registry', help: 'Subscribed services whose list may be out of date (registry unreachable, or not yet re-read after a reconnect); their last known endpoints keep serving' },
  { name: 'sluice_registry_entries_skipped_total', kind: 'counter', by: 'registry_reason', help: 'Registry entries skipped: malformed (bad URL or JSON, no port) or unsupported (another protocol); each entry once per subscription' },
  { name: 'sluice_registry_endpoints', kind: 'gauge', by: 'registry', help: 'Endpoints the registry lists now for the subscribed services' },
  { name: 'sluice_registry_updates_total', kind: 'counter', by: 'none', help: 'Endpoint list changes published to the data path' },
  { name: 'sluice_registry_zero_instance_held', kind: 'gauge', by: 'none', help: 'Services whose change to an empty list is held back now (registry.zeroInstanceHoldMs)' },
  { name: 'sluice_registry_zero_instance_protected_total', kind: 'counter', by: 'none', help: 'Changes to an empty list that were held back' },
  { name: 'sluice_registry_subscriptions_refused_total', kind: 'counter', by: 'none', help: 'New services not subscribed because registry.maxServices were subscribed already (their calls went on as without a registry)' },
  { name: 'sluice_registry_ready_timeout_total', kind: 'counter', by: 'none', help: 'Subscriptions whose first list did not come within registry.firstListTimeoutMs' },
];

// every thread that loads the registry module knows the families (HELP, TYPE, which are gauges)
declareFamilies(REGISTRY_FAMILIES);

/** What the registries need of a stats object; src/stats/stats.ts `Stats` fits it. */
export interface StatsSink {
  slot(name: string, labels?: Record<string, string>): number;
  inc(slot: number): void;
  add(slot: number, by: number): void;
  dec(slot: number): void;
  set(slot: number, v: number): void;
  get(slot: number): number;
}

export function seriesKey(name: string, labels?: Record<string, string>): string {
  if (!labels) return name;
  return `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`).join(',')}}`;
}

/** Every series of a config: add them to the StatsRegistry before the registries start. */
export function registrySeries(registries: readonly Pick<RegistryConfig, 'name'>[]): string[] {
  const out: string[] = [];
  for (const f of REGISTRY_FAMILIES) {
    if (f.by === 'none') out.push(f.name);
    for (const r of registries) {
      if (f.by === 'registry') out.push(seriesKey(f.name, { registry: r.name }));
      if (f.by === 'registry_reason') for (const reason of SKIP_REASONS) out.push(seriesKey(f.name, { registry: r.name, reason }));
    }
  }
  return out;
}

/** One registry's slots, resolved once. */
export class RegistryStats {
  readonly connected: number;
  readonly subscriptions: number;
  readonly subscribe: number;
  readonly unsubscribe: number;
  readonly watches: number;
  readonly watchEvents: number;
  readonly reads: number;
  readonly errors: number;
  readonly sessionsExpired: number;
  readonly stale: number;
  readonly endpoints: number;
  readonly skipped: Record<SkipReason, number>;

  constructor(readonly sink: StatsSink, registry: string) {
    const s = (n: string) => sink.slot(n, { registry });
    this.connected = s('sluice_registry_connected');
    this.subscriptions = s('sluice_registry_subscriptions');
    this.subscribe = s('sluice_registry_subscribe_total');
    this.unsubscribe = s('sluice_registry_unsubscribe_total');
    this.watches = s('sluice_registry_watches');
    this.watchEvents = s('sluice_registry_watch_events_total');
    this.reads = s('sluice_registry_reads_total');
    this.errors = s('sluice_registry_errors_total');
    this.sessionsExpired = s('sluice_registry_sessions_expired_total');
    this.stale = s('sluice_registry_stale_services');
    this.endpoints = s('sluice_registry_endpoints');
    this.skipped = {
      malformed: sink.slot('sluice_registry_entries_skipped_total', { registry, reason: 'malformed' }),
      unsupported: sink.slot('sluice_registry_entries_skipped_total', { registry, reason: 'unsupported' }),
    };
  }
}

/** The slots not tied to one registry. */
export class GlobalRegistryStats {
  readonly updates: number;
  readonly held: number;
  readonly protected: number;
  readonly readyTimeout: number;
  readonly refused: number;
  constructor(readonly sink: StatsSink) {
    this.refused = sink.slot('sluice_registry_subscriptions_refused_total');
    this.updates = sink.slot('sluice_registry_updates_total');
    this.held = sink.slot('sluice_registry_zero_instance_held');
    this.protected = sink.slot('sluice_registry_zero_instance_protected_total');
    this.readyTimeout = sink.slot('sluice_registry_ready_timeout_total');
  }
}

/** A StatsSink of plain numbers, for running the registries without shared memory (tools, tests). */
export class MemoryStats implements StatsSink {
  private readonly index = new Map<string, number>();
  readonly values: number[] = [];
  readonly keys: string[] = [];

  slot(name: string, labels?: Record<string, string>): number {
    const key = seriesKey(name, labels);
    let i = this.index.get(key);
    if (i === undefined) {
      i = this.keys.length;
      this.index.set(key, i);
      this.keys.push(key);
      this.values.push(0);
    }
    return i;
  }

  inc(slot: number): void { if (slot >= 0) this.values[slot]++; }
  add(slot: number, by: number): void { if (slot >= 0) this.values[slot] += by; }
  dec(slot: number): void { if (slot >= 0) this.values[slot]--; }
  set(slot: number, v: number): void { if (slot >= 0) this.values[slot] = v; }
  get(slot: number): number { return slot >= 0 ? this.values[slot] : 0; }

  /** The value of a series by name, 0 when it was never touched. */
  value(name: string, labels?: Record<string, string>): number {
    const i = this.index.get(seriesKey(name, labels));
    return i === undefined ? 0 : this.values[i];
  }
}
