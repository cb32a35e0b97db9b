/**
 * The `adaptive` filter: adaptive limiting, the top-level `adaptiveLimit` section.
 *
 *   adaptiveLimit:
 *     enabled: true
 *     mode: enforce                 # enforce | shadow
 *     targetUtilization: 0.8        # CPU share of the application's cores to stay under
 *     critical:  [{ path: { prefix: /pay } }]         # shed last, never below criticalMinLimit
 *     shedFirst: [{ service: com.example.Reports }]   # shed before any other
 *     cpu: { cgroup: /sys/fs/cgroup, cores: 2 }
 *
 *   main thread (adaptive-loop.ts)                       workers (adaptive-filter.ts)
 *   every intervalMs: CPU sample, per interface       ┌▶ a call: its interface's row; in flight < limit?
 *   cost and latency, control loop (controller.ts) ───┘  admit / refuse 503 overloaded; on completion
 *              └──── interface-table.ts: rows, in-flight counts, limits, counters (shared) ────┘
 */
import type { ConfigIssue } from '../../errors';
import { matchProperties } from '../../config/match-schema';
import type { RouteConfig } from '../../config/config';
import { allOf, matchTests, type ViewTest } from '../../exchange/router';
import { log } from '../../log';
import type { FilterModule } from '../module';
import { checkMatch, isObj, listenerNamesOf } from '../route-checks';
import { ADAPTIVE_REFUSED, ADAPTIVE_SHADOW_REFUSED, AdaptiveFilter } from './adaptive-filter';
import { InterfaceTable, MAX_INTERFACES } from './interface-table';
import type { ControllerOptions } from './controller';

const { headers: _headers, ...interfaceMatch } = matchProperties;
const interfaceList = {
  type: 'array',
  items: { type: 'object', additionalProperties: false, minProperties: 1, properties: interfaceMatch },
  default: [],
};

export const adaptiveSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: {
    enabled: { type: 'boolean', default: false },
    mode: { enum: ['enforce', 'shadow'], default: 'enforce' },
    targetUtilization: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.8 },
    hysteresis: { type: 'number', minimum: 0, maximum: 0.5, default: 0.05 },
    intervalMs: { type: 'integer', minimum: 50, maximum: 5000, default: 200 },
    smoothing: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.5 },
    maxStepDown: { type: 'number', exclusiveMinimum: 0, maximum: 0.9, default: 0.5 },
    maxStepUp: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.25 },
    latencyTolerance: { anyOf: [{ const: 0 }, { type: 'number', minimum: 1.1 }], default: 3 },
    latencyBufferMs: { type: 'number', minimum: 0, default: 2 },
    criticalMinLimit: { type: 'number', minimum: 0, default: 1 },
    maxInterfaces: { type: 'integer', minimum: 1, maximum: MAX_INTERFACES - 1, default: 64 },
    directions: { type: 'array', items: { enum: ['inbound', 'outbound'] }, minItems: 1, uniqueItems: true, default: ['inbound'] },
    cpu: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        cgroup: { type: 'string', minLength: 1, default: '/sys/fs/cgroup' },
        cores: { type: 'number', exclusiveMinimum: 0 },
      },
    },
    critical: interfaceList,
    shedFirst: interfaceList,
  },
};

type InterfaceMatch = RouteConfig['match'];

export interface AdaptiveLimitConfig extends ControllerOptions {
  readonly enabled: boolean;
  readonly mode: 'enforce' | 'shadow';
  readonly maxInterfaces: number;
  readonly directions: readonly ('inbound' | 'outbound')[];
  readonly cpu: { readonly cgroup: string; readonly cores?: number };
  readonly critical: readonly InterfaceMatch[];
  readonly shedFirst: readonly InterfaceMatch[];
}

function checkAdaptive(doc: Readonly<Record<string, unknown>>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const a = doc.adaptiveLimit;
  if (!isObj(a)) return issues;
  const listeners = listenerNamesOf(doc);
  for (const key of ['critical', 'shedFirst'] as const) {
    const list = a[key];
    if (Array.isArray(list)) list.forEach((m, i) => { if (isObj(m)) checkMatch(issues, `/adaptiveLimit/${key}/${i}`, m, listeners); });
  }
  if (typeof a.cpu === 'object' && a.cpu !== null && typeof (a.cpu as { cgroup?: unknown }).cgroup === 'string' && !(a.cpu as { cgroup: string }).cgroup.startsWith('/')) {
    issues.push({ path: '/adaptiveLimit/cpu/cgroup', message: 'must be an absolute path (a cgroup v2 directory)' });
  }
  if (typeof a.hysteresis === 'number' && typeof a.targetUtilization === 'number' && a.hysteresis >= a.targetUtilization) {
    issues.push({ path: '/adaptiveLimit/hysteresis', message: `must be below targetUtilization (${a.targetUtilization}): the loop would never admit more` });
  }
  if (a.enabled === true && Array.isArray(doc.filters) && !doc.filters.includes('adaptive')) {
    issues.push({ path: '/adaptiveLimit/enabled', message: 'needs the adaptive filter in filters (without it no call would be limited)' });
  }
  return issues;
}

/** One test for a list of matches: any of them. */
export function anyMatch(list: readonly InterfaceMatch[]): ViewTest {
  const tests = list.map((m) => allOf(matchTests(m)));
  if (tests.length === 0) return () => false;
  return (v) => tests.some((t) => t(v));
}

export const ADAPTIVE_MODULE: FilterModule = {
  name: 'adaptive',
  configSchema: {
    /** Adaptive limiting: keeps the application under a CPU target, shedding its costliest interfaces first. */
    adaptiveLimit: adaptiveSchema,
  },
  checkConfig: checkAdaptive,
  stats: [
    { name: ADAPTIVE_REFUSED, kind: 'counter', by: 'none', help: 'Calls adaptive limiting refused (503 overloaded, gRPC RESOURCE_EXHAUSTED, Dubbo 100); per interface in sluice_adaptive_interface_requests_total' },
    { name: ADAPTIVE_SHADOW_REFUSED, kind: 'counter', by: 'none', help: 'Calls let through that adaptive limiting in shadow mode would have refused' },
  ],
  create(env) {
    const a = env.config.adaptiveLimit as AdaptiveLimitConfig | undefined;
    if (!a?.enabled) return { name: 'adaptive' };
    return new AdaptiveFilter(new InterfaceTable(env.stats.memory), {
      mode: a.mode,
      directions: new Set(a.directions),
      maxInterfaces: a.maxInterfaces,
      critical: anyMatch(a.critical),
      shedFirst: anyMatch(a.shedFirst),
    }, env.stats, (fields, msg) => log.info(fields, msg), env.random);
  },
};
