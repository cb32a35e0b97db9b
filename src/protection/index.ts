/**
 * Circuit breaking and degradation: what a cluster's requests must pass (its limits across every
 * worker, its endpoints' and interfaces' breakers) and what a route answers instead of a refusal
 * (its fallback). The exchange asks; the state lives in shared memory (cluster-limits.ts,
 * breaker.ts), and each thread attaches to it once (attachProtection).
 */
import type { ClusterConfig } from '../config/config';
import type { SharedMemory } from '../shared/shared-memory';
import { declareFamilies, series, type Family, type Stats } from '../stats/stats';
import { BREAKER_SWEEP_MS, BreakerTable, ClusterBreakers, breakerSlots, ruleFingerprint, type BreakerConfig, type Scope } from './breaker';
import { log } from '../log';
import { ClusterLimits, DEFAULT_LIMITS, LIMIT_NAMES, LimitsTable, limitSlots } from './cluster-limits';
import type { CircuitBreakerConfig } from './config';
import { overridesOf } from '../alarms/overrides';

export { CONNECTIONS, PENDING, REQUESTS, RETRIES, ClusterLimits, releaseShares } from './cluster-limits';
export { ClusterBreakers, REFUSE, UNTRACKED, TRACKED, TRIAL, type Result } from './breaker';

export const PROTECTION_FAMILIES: readonly Family[] = [
  { name: 'sluice_circuit_breaker_overflow_total', kind: 'counter', by: 'explicit', help: 'Requests refused (or connections not opened, retries not made) over a cluster limit, by limit: connections, pending, requests, retries' },
  { name: 'sluice_circuit_breaker_shadow_overflow_total', kind: 'counter', by: 'explicit', help: 'Requests over a cluster limit in shadow mode, let through; by limit' },
  { name: 'sluice_circuit_breaker_opened_total', kind: 'counter', by: 'explicit', help: 'Breakers that opened, by cluster and scope (endpoint, interface)' },
  { name: 'sluice_circuit_breaker_half_opened_total', kind: 'counter', by: 'explicit', help: 'Open breakers that began letting trial calls through' },
  { name: 'sluice_circuit_breaker_closed_total', kind: 'counter', by: 'explicit', help: 'Half-open breakers that closed after their trial calls succeeded' },
  { name: 'sluice_circuit_breaker_refused_total', kind: 'counter', by: 'explicit', help: 'Calls an open breaker refused (an endpoint breaker: calls that found every endpoint open)' },
  { name: 'sluice_circuit_breaker_shadow_refused_total', kind: 'counter', by: 'explicit', help: 'Calls an open breaker in shadow mode would have refused, let through' },
  { name: 'sluice_circuit_breaker_untracked_total', kind: 'counter', by: 'explicit', help: 'Calls not judged by a breaker because the breaker table was full' },
  { name: 'sluice_fallback_total', kind: 'counter', by: 'explicit', help: 'Refused requests answered with their route\'s fallback, by route and reason' },
];
declareFamilies(PROTECTION_FAMILIES);

export interface ProtectionTables { readonly limits: LimitsTable; readonly breakers: BreakerTable }

/** This thread's views of the tables, by the shared memory they live in (tests run several Sluices in a process). */
const tablesByBuffer = new WeakMap<SharedArrayBuffer, ProtectionTables>();

/** The tables in `memory`, as a thread with gauge row `row` (-1 on the main thread) uses them. */
export function protectionTables(memory: SharedMemory, row = -1): ProtectionTables {
  let t = tablesByBuffer.get(memory.buffer);
  if (!t || t.limits.row !== row) {
    t = { limits: new LimitsTable(memory, row), breakers: new BreakerTable(memory) };
    tablesByBuffer.set(memory.buffer, t);
  }
  return t;
}

const SCOPES: readonly Scope[] = ['endpoint', 'interface'];

/**
 * Main thread: every BREAKER_SWEEP_MS, frees the breakers nothing has consulted for a while
 * (BreakerTable.sweep). The timer does not keep the process alive; the returned function stops it.
 */
export function sweepBreakersPeriodically(memory: SharedMemory): () => void {
  const timer = setInterval(() => {
    const freed = protectionTables(memory).breakers.sweep();
    if (freed > 0) log.info({ freed }, 'circuit breakers no call consulted for a while were freed');
  }, BREAKER_SWEEP_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** What a cluster's requests pass, for one config on one thread. */
export interface ClusterProtection {
  readonly limits: ClusterLimits;
  readonly endpoint: ClusterBreakers | null;
  readonly iface: ClusterBreakers | null;
  /** Its word in the alarms' overrides: non-zero while an alarm's action holds it open; -1: no alarm names it. */
  readonly forcedOpenAt: number;
  readonly overrides: Int32Array | null;
}

/** A cluster's circuitBreaker with its defaults (a cluster from a registry has none: Envoy's defaults). */
export function circuitBreakerOf(c: ClusterConfig): CircuitBreakerConfig {
  return c.circuitBreaker ?? { ...DEFAULT_LIMITS, mode: 'enforce' };
}

export function breakerConfig(cb: CircuitBreakerConfig, scope: Scope): BreakerConfig | null {
  const b = scope === 'endpoint' ? cb.endpoint : cb.interface;
  if (!b) return null;
  return { ...b, slowCallRatio: b.slowCallRatio ?? 1, mode: b.mode ?? cb.mode };
}

/** A cluster's protection on this thread, in the shared memory its stats live in. */
export function clusterProtection(c: ClusterConfig, stats: Stats): ClusterProtection {
  const t = protectionTables(stats.memory, stats.row);
  const cb = circuitBreakerOf(c);
  const limits = new ClusterLimits(t.limits, c.name, cb, stats, limitSlots(stats, c.name));
  const make = (scope: Scope) => {
    const b = breakerConfig(cb, scope);
    return b ? new ClusterBreakers(t.breakers, c.name, scope, b, stats, breakerSlots(stats, c.name, scope)) : null;
  };
  const o = overridesOf(stats.memory);
  const forcedOpenAt = o.wordOf('cluster', c.name);
  return { limits, endpoint: make('endpoint'), iface: make('interface'), forcedOpenAt, overrides: forcedOpenAt >= 0 ? o.view : null };
}

/** A cluster's limit series; a cluster found in a registry gets them when it is found. */
export function clusterLimitSeries(cluster: string): string[] {
  return LIMIT_NAMES.flatMap((limit) => [
    series('sluice_circuit_breaker_overflow_total', { cluster, limit }),
    series('sluice_circuit_breaker_shadow_overflow_total', { cluster, limit }),
  ]);
}

/** The series to register for a config (main thread, before it publishes). */
export function protectionSeries(config: { clusters: readonly ClusterConfig[]; routes: ReadonlyArray<{ name?: string; fallback?: { on: readonly string[] } }> }): string[] {
  const out: string[] = [];
  for (const c of config.clusters) {
    out.push(...clusterLimitSeries(c.name));
    const cb = circuitBreakerOf(c);
    for (const scope of SCOPES) {
      if (!breakerConfig(cb, scope)) continue;
      for (const f of ['opened', 'half_opened', 'closed', 'refused', 'shadow_refused', 'untracked']) {
        out.push(series(`sluice_circuit_breaker_${f}_total`, { cluster: c.name, scope }));
      }
    }
  }
  config.routes.forEach((r, i) => {
    if (!r.fallback) return;
    for (const reason of r.fallback.on) out.push(series('sluice_fallback_total', { route: r.name ?? `routes[${i}]`, reason }));
  });
  return out;
}

/**
 * The admin view (GET /protection): each cluster's limits and what is in use now, and each breaker
 * of the rules in force with its state and counts (breakers of rules a reload replaced are left
 * out: nothing consults them any more).
 */
export function protectionView(memory: SharedMemory, config: { clusters: readonly ClusterConfig[] }): { clusterLimits: unknown[]; breakers: unknown[] } {
  const t = protectionTables(memory);
  const clusterLimits = config.clusters.map((c) => {
    const cb = circuitBreakerOf(c);
    const inUse = t.limits.counts(c.name) ?? [0, 0, 0, 0];
    return {
      cluster: c.name,
      mode: cb.mode,
      connections: { max: cb.maxConnections, inUse: inUse[0] },
      pendingRequests: { max: cb.maxPendingRequests, inUse: inUse[1] },
      requests: { max: cb.maxRequests, inUse: inUse[2] },
      retries: { max: cb.maxRetries, inUse: inUse[3] },
    };
  });
  const current = new Map<string, { mode: string }>();
  for (const c of config.clusters) {
    const cb = circuitBreakerOf(c);
    for (const scope of SCOPES) {
      const b = breakerConfig(cb, scope);
      if (b) current.set(`${c.name}\t${scope}\t${ruleFingerprint(b)}`, { mode: b.mode });
    }
  }
  const breakers = t.breakers.list()
    .filter((b) => current.has(`${b.cluster}\t${b.scope}\t${b.rule}`))
    .map((b) => {
      const { key: _key, rule: _rule, ...rest } = b;
      return { ...rest, mode: current.get(`${b.cluster}\t${b.scope}\t${b.rule}`)!.mode };
    })
    .sort((a, b) => (a.cluster + a.scope + a.target < b.cluster + b.scope + b.target ? -1 : 1));
  return { clusterLimits, breakers };
}

const STATE_VALUE: Record<string, number> = { closed: 0, open: 1, half_open: 2 };

/**
 * Per breaker series for /stats, from the breakers of the rules in force (as the admin view lists
 * them): its state, and its own counts. Bounded by the breaker table (BREAKER_SLOTS).
 */
export function renderBreakers(memory: SharedMemory, config: { clusters: readonly ClusterConfig[] }): string {
  const list = protectionView(memory, config).breakers as Array<{ cluster: string; scope: string; target: string; state: string; opened: number; refused: number; shadowRefused: number }>;
  if (list.length === 0) return '';
  const families: Array<[string, string, string, (b: (typeof list)[number]) => number]> = [
    ['sluice_circuit_breaker_state', 'gauge', 'Each breaker of the rules in force: 0 closed, 1 open, 2 half-open', (b) => STATE_VALUE[b.state] ?? 1],
    ['sluice_circuit_breaker_target_opened_total', 'counter', 'Times each breaker opened', (b) => b.opened],
    ['sluice_circuit_breaker_target_refused_total', 'counter', 'Calls each breaker refused', (b) => b.refused],
    ['sluice_circuit_breaker_target_shadow_refused_total', 'counter', 'Calls each breaker in shadow mode would have refused', (b) => b.shadowRefused],
  ];
  let out = '';
  for (const [name, kind, help, value] of families) {
    out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n`;
    for (const b of list) out += `${series(name, { cluster: b.cluster, scope: b.scope, target: b.target })} ${value(b)}\n`;
  }
  return out;
}
