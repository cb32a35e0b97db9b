/**
 * The `alarms` section (docs/configuration.md, "Alarms"): rules on the sidecar's own signals that
 * raise an alarm (log line, metrics, webhook) and may switch on a protective action for a while.
 *
 *   alarms:
 *     - name: orders-errors
 *       signal: { kind: error_ratio, cluster: orders }   # request_rate | error_ratio | latency_p99_ms | cpu_usage
 *       above: 0.2                                      # or, for request_rate, baselineFactor: 3
 *       windowMs: 10000
 *       forMs: 0
 *       webhook: http://127.0.0.1:9999/hook
 *       action: { kind: degrade_route, route: orders, forMs: 60000 }
 */
import type { ConfigIssue } from '../errors';
import { isObj } from '../filters/route-checks';
import { REQUEST_PROTOCOLS } from '../stats/stats';

export const SIGNAL_KINDS = ['request_rate', 'error_ratio', 'latency_p99_ms', 'cpu_usage'] as const;
export type SignalKind = (typeof SIGNAL_KINDS)[number];
export const ACTION_KINDS = ['tighten_rate_limit', 'open_breaker', 'degrade_route'] as const;
export type ActionKind = (typeof ACTION_KINDS)[number];
/** At most this many alarms (each samples its signal every second on the main thread). */
export const MAX_ALARMS = 256;
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 2000;
export const DEFAULT_FACTOR = 0.5;

const name = { type: 'string', pattern: '^[a-zA-Z0-9_.:-]{1,128}$' };
const forMs = { type: 'integer', minimum: 1000, maximum: 86_400_000, default: 60_000 };

const alarmSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'signal'],
  properties: {
    name,
    signal: {
      type: 'object',
      additionalProperties: false,
      required: ['kind'],
      properties: {
        kind: { enum: [...SIGNAL_KINDS] },
        /** request_rate, error_ratio: one cluster's upstream requests; absent: every request the sidecar received. */
        cluster: { type: 'string', minLength: 1 },
        /** latency_p99_ms: one protocol's requests; absent: all of them. */
        protocol: { enum: [...REQUEST_PROTOCOLS] },
        /** request_rate with baselineFactor: the time constant of the learned baseline (an exponential average). */
        baselineMs: { type: 'integer', minimum: 1000, maximum: 86_400_000, default: 300_000 },
      },
    },
    /** The threshold: the alarm holds while the signal is above it. */
    above: { type: 'number', minimum: 0 },
    /** request_rate only, instead of above: the alarm holds while the rate is above this multiple of its learned baseline. */
    baselineFactor: { type: 'number', exclusiveMinimum: 1, maximum: 1_000_000 },
    /** error_ratio, latency_p99_ms: fewer requests than this in the window: no value (the alarm does not hold). */
    minRequests: { type: 'integer', minimum: 1, maximum: 1_000_000_000, default: 10 },
    windowMs: { type: 'integer', minimum: 1000, maximum: 3_600_000, default: 10_000 },
    /** How long the signal must stay above before the alarm fires. */
    forMs: { type: 'integer', minimum: 0, maximum: 86_400_000, default: 0 },
    /** POSTed a JSON body when the alarm fires and when it resolves. */
    webhook: { type: 'string', pattern: '^https?://' },
    /** Default 2000. */
    webhookTimeoutMs: { type: 'integer', minimum: 100, maximum: 60_000 },
    action: {
      type: 'object',
      additionalProperties: false,
      required: ['kind'],
      properties: {
        kind: { enum: [...ACTION_KINDS] },
        /** tighten_rate_limit: the rule (rateLimits[].name) and what its rate is multiplied by. */
        rateLimit: name,
        /** Default 0.5. */
        factor: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
        /** open_breaker: the cluster whose requests are refused as circuit_open. */
        cluster: { type: 'string', minLength: 1 },
        /** degrade_route: the route (routes[].name) that answers with its fallback. */
        route: { type: 'string', minLength: 1 },
        /** The action holds at least this long after the alarm fires, and until the alarm resolves. */
        forMs,
      },
    },
  },
};

export const alarmsSchema = { type: 'array', items: alarmSchema, default: [] };

export interface AlarmAction {
  readonly kind: ActionKind;
  readonly rateLimit?: string;
  readonly factor?: number;
  readonly cluster?: string;
  readonly route?: string;
  readonly forMs: number;
}

export interface AlarmConfig {
  readonly name: string;
  readonly signal: { readonly kind: SignalKind; readonly cluster?: string; readonly protocol?: string; readonly baselineMs: number };
  readonly above?: number;
  readonly baselineFactor?: number;
  readonly minRequests: number;
  readonly windowMs: number;
  readonly forMs: number;
  readonly webhook?: string;
  readonly webhookTimeoutMs?: number;
  readonly action?: AlarmAction;
}

/** What an action acts on, as a key of the overrides table (overrides.ts). */
export function actionTarget(a: AlarmAction): string {
  if (a.kind === 'tighten_rate_limit') return `rateLimit\t${a.rateLimit}`;
  if (a.kind === 'open_breaker') return `cluster\t${a.cluster}`;
  return `route\t${a.route}`;
}

const NEEDS: Record<ActionKind, 'rateLimit' | 'cluster' | 'route'> = { tighten_rate_limit: 'rateLimit', open_breaker: 'cluster', degrade_route: 'route' };

/** Checks the schema cannot express, on the whole document; paths are absolute. */
export function alarmIssues(doc: Readonly<Record<string, unknown>>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const list = doc.alarms;
  if (!Array.isArray(list)) return issues;
  if (list.length > MAX_ALARMS) issues.push({ path: '/alarms', message: `has ${list.length} alarms, more than ${MAX_ALARMS}` });
  const namesOf = (key: string) => new Set((Array.isArray(doc[key]) ? doc[key] as unknown[] : []).flatMap((x, i) => {
    if (!isObj(x)) return [];
    if (typeof x.name === 'string') return [x.name];
    return key === 'routes' ? [`routes[${i}]`] : [];
  }));
  const known = { rateLimit: namesOf('rateLimits'), cluster: namesOf('clusters'), route: namesOf('routes') };
  const seen = new Map<string, number>();
  list.forEach((a, i) => {
    if (!isObj(a)) return;
    const p = `/alarms/${i}`;
    if (typeof a.name === 'string') {
      const before = seen.get(a.name);
      if (before !== undefined) issues.push({ path: `${p}/name`, message: `duplicate alarm name "${a.name}" (also /alarms/${before})` });
      else seen.set(a.name, i);
    }
    const s = isObj(a.signal) ? a.signal : {};
    const thresholds = (a.above !== undefined ? 1 : 0) + (a.baselineFactor !== undefined ? 1 : 0);
    if (thresholds !== 1) issues.push({ path: p, message: `needs exactly one of above, baselineFactor (has ${thresholds})` });
    if (a.baselineFactor !== undefined && s.kind !== 'request_rate') issues.push({ path: `${p}/baselineFactor`, message: 'only a request_rate signal has a baseline' });
    if (s.cluster !== undefined && s.kind !== 'request_rate' && s.kind !== 'error_ratio') {
      issues.push({ path: `${p}/signal/cluster`, message: 'only request_rate and error_ratio are measured per cluster' });
    }
    if (typeof s.cluster === 'string' && !known.cluster.has(s.cluster)) issues.push({ path: `${p}/signal/cluster`, message: `unknown cluster "${s.cluster}"` });
    if (s.protocol !== undefined && s.kind !== 'latency_p99_ms') issues.push({ path: `${p}/signal/protocol`, message: 'only latency_p99_ms is measured per protocol' });
    if (s.kind === 'error_ratio' && typeof a.above === 'number' && a.above > 1) issues.push({ path: `${p}/above`, message: 'an error ratio is at most 1' });
    if (s.kind === 'cpu_usage' && typeof a.above === 'number' && a.above > 1) issues.push({ path: `${p}/above`, message: 'CPU usage is a share of the cores, at most 1' });
    if (a.webhookTimeoutMs !== undefined && a.webhook === undefined) issues.push({ path: `${p}/webhookTimeoutMs`, message: 'needs a webhook' });
    if (typeof a.webhook === 'string') {
      try { new URL(a.webhook); } catch { issues.push({ path: `${p}/webhook`, message: 'is not a valid URL' }); }
    }
    const act = a.action;
    if (!isObj(act) || typeof act.kind !== 'string' || !(act.kind in NEEDS)) return;
    const need = NEEDS[act.kind as ActionKind];
    for (const k of ['rateLimit', 'cluster', 'route', 'factor'] as const) {
      if (act[k] !== undefined && k !== need && !(k === 'factor' && act.kind === 'tighten_rate_limit')) {
        issues.push({ path: `${p}/action/${k}`, message: `is not a field of a ${act.kind} action` });
      }
    }
    const target = act[need];
    if (target === undefined) issues.push({ path: `${p}/action`, message: `a ${act.kind} action needs ${need}` });
    else if (typeof target === 'string' && !known[need].has(target)) {
      const where = need === 'rateLimit' ? 'rate limit' : need;
      issues.push({ path: `${p}/action/${need}`, message: `unknown ${where} "${target}"` });
    }
    if (act.kind === 'tighten_rate_limit' && Array.isArray(doc.filters) && !doc.filters.includes('ratelimit')) {
      issues.push({ path: `${p}/action`, message: 'needs the ratelimit filter in filters' });
    }
  });
  return issues;
}
