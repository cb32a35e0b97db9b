/**
 * The `ratelimit` filter: request rate limits shared by every worker, the top-level `rateLimits`
 * section.
 *
 *   rateLimits:
 *     - name: orders-api
 *       match: { service: orders, path: { prefix: /api/ } }   # the route match language, and
 *                                                           # principals, namespaces, sourceRanges
 *       requestsPerSecond: 300                             # or requestsPerMinute (exactly one)
 *       burst: 50                                          # default: one second's worth (at least 1)
 *       key: { header: x-user }                            # or `caller`; absent: one bucket
 *       maxKeys: 10000                                     # with key: keys held (LRU evicted)
 *       mode: enforce                                      # enforce (default) | shadow
 *
 * See gcra.ts for the buckets, key-table.ts for per-key tables, slots.ts for where they live in
 * shared memory and how a reload keeps them, ratelimit-filter.ts for what a request gets.
 */
import type { ConfigIssue } from '../../errors';
import { matchProperties } from '../../config/match-schema';
import type { RequestView } from '../../exchange/request-view';
import { log } from '../../log';
import type { SharedMemory } from '../../shared/shared-memory';
import type { Stats } from '../../stats/stats';
import { callerProperties, checkCallerMatch } from '../authz';
import { compileRule, type AuthorizationRule } from '../authz/policy';
import type { FilterMain, FilterModule } from '../module';
import { HEADER_NAME, isObj, listenerNamesOf } from '../route-checks';
import { monotonicNs, rateOf, tokens } from './gcra';
import { attachOverrides, type Overrides } from '../../alarms/overrides';
import { RateLimitFilter, RL_ADMITTED, RL_REFUSED, RL_SHADOW_REFUSED, type CompiledLimit } from './ratelimit-filter';
import { BUCKETS, KEY_SLOTS, KEY_TAGS, KEY_WORDS, MAX_RULES, RateLimitSlots, type RuleSlots } from './slots';

export const DEFAULT_MAX_KEYS = 1024;

/** One entry of `rateLimits`, as the schema leaves it (defaults filled). */
export interface RateLimitRule {
  name: string;
  match: Readonly<Record<string, unknown>>;
  requestsPerSecond?: number;
  requestsPerMinute?: number;
  burst?: number;
  key?: 'caller' | { header: string };
  maxKeys?: number;
  mode: 'enforce' | 'shadow';
}

const ruleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    /** The rule's name in stats, logs and GET /protection. */
    name: { type: 'string', pattern: '^[a-zA-Z0-9_.:-]{1,128}$' },
    /** Which requests the rule counts: the route match language and the caller's identity; empty: all. */
    match: { type: 'object', additionalProperties: false, properties: { ...matchProperties, ...callerProperties }, default: {} },
    requestsPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 1e9 },
    requestsPerMinute: { type: 'number', exclusiveMinimum: 0, maximum: 6e10 },
    /** Requests admitted at once after a quiet spell; default one second's worth of the rate (at least 1). */
    burst: { type: 'integer', minimum: 1, maximum: 1e9 },
    /** A bucket per value of a header (HTTP) or attachment (Dubbo), or per caller (principal, else address). */
    key: {
      anyOf: [
        { type: 'string', enum: ['caller'] },
        { type: 'object', additionalProperties: false, required: ['header'], properties: { header: { type: 'string' } } },
      ],
    },
    /** With key: the keys held at once; the least recently used one is evicted for a new one. */
    maxKeys: { type: 'integer', minimum: 1, maximum: KEY_SLOTS },
    /** `shadow`: decides and counts as if enforced, logs (sampled), and lets the request through. */
    mode: { enum: ['enforce', 'shadow'], default: 'enforce' },
  },
};

export function burstOf(r: RateLimitRule): number {
  if (r.burst !== undefined) return r.burst;
  const perSecond = r.requestsPerSecond ?? (r.requestsPerMinute ?? 0) / 60;
  return Math.max(1, Math.ceil(perSecond));
}

function maxKeysOf(r: Readonly<Record<string, unknown>>): number {
  if (r.key === undefined) return 0;
  return typeof r.maxKeys === 'number' ? r.maxKeys : DEFAULT_MAX_KEYS;
}

function checkRateLimits(doc: Readonly<Record<string, unknown>>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const rules = doc.rateLimits;
  if (!Array.isArray(rules)) return issues;
  const listeners = listenerNamesOf(doc);
  const names = new Map<string, number>();
  let keys = 0;
  rules.forEach((r, i) => {
    if (!isObj(r)) return;
    const p = `/rateLimits/${i}`;
    if (typeof r.name === 'string') {
      const before = names.get(r.name);
      if (before !== undefined) issues.push({ path: `${p}/name`, message: `duplicate rule name "${r.name}" (also /rateLimits/${before})` });
      else names.set(r.name, i);
    }
    const rates = (r.requestsPerSecond !== undefined ? 1 : 0) + (r.requestsPerMinute !== undefined ? 1 : 0);
    if (rates !== 1) issues.push({ path: p, message: `needs exactly one of requestsPerSecond, requestsPerMinute (has ${rates})` });
    if (r.maxKeys !== undefined && r.key === undefined) issues.push({ path: `${p}/maxKeys`, message: 'needs a key (without one the rule has a single bucket)' });
    if (isObj(r.key) && typeof r.key.header === 'string' && !HEADER_NAME.test(r.key.header)) {
      issues.push({ path: `${p}/key/header`, message: 'is not a valid header name' });
    }
    const k = maxKeysOf(r);
    if (Number.isInteger(k) && k <= KEY_SLOTS) keys += k;
    if (isObj(r.match)) checkCallerMatch(issues, `${p}/match`, r.match, doc, listeners);
  });
  if (rules.length > MAX_RULES) issues.push({ path: '/rateLimits', message: `has ${rules.length} rules, more than ${MAX_RULES}` });
  if (keys > KEY_SLOTS) {
    issues.push({ path: '/rateLimits', message: `the rules' maxKeys add up to ${keys}, more than the ${KEY_SLOTS} key slots shared memory holds (a rule with key and no maxKeys holds ${DEFAULT_MAX_KEYS})` });
  }
  if (rules.length > 0 && Array.isArray(doc.filters) && !doc.filters.includes('ratelimit')) {
    issues.push({ path: '/rateLimits', message: 'needs the ratelimit filter in filters (without it no limit would be applied)' });
  }
  return issues;
}

/** The value a keyed rule counts a request under. A header sent more than once: all its values, joined. */
function keyFunction(key: RateLimitRule['key']): ((v: RequestView) => string) | null {
  if (key === undefined) return null;
  if (key === 'caller') return (v) => v.source.principal ?? v.source.address;
  const name = key.header.toLowerCase();
  return (v) => {
    const vs = v.headerValues(name);
    return vs.length === 0 ? '' : vs.length === 1 ? vs[0] : vs.join(',');
  };
}

export function compileLimits(rules: readonly RateLimitRule[], slots: readonly RuleSlots[], overrides?: Overrides): CompiledLimit[] {
  return rules.map((r, i) => {
    const s = slots[i];
    if (!s) throw new Error(`rate limit "${r.name}" has no slots (the config was published without them)`);
    // header conditions as a deny rule reads them: a repeated field or a list matches if any value does
    const test = compileRule({ ...(r.match as object), action: 'deny', mode: 'enforce' } as AuthorizationRule, i).test;
    return {
      name: r.name, shadow: r.mode === 'shadow', test, rate: rateOf(r.requestsPerSecond, r.requestsPerMinute, burstOf(r)),
      word: s.word, keyOf: keyFunction(r.key), keyBase: s.keyBase, keySize: s.keySize, overrideAt: overrides?.wordOf('rateLimit', r.name) ?? -1,
    };
  });
}

/** Main thread: the slots of the rules, and the admin view. */
class RateLimitMain implements FilterMain {
  private readonly slots: RateLimitSlots;
  private rules: readonly RateLimitRule[] = [];
  private published: readonly RuleSlots[] = [];

  constructor(private readonly memory: SharedMemory) {
    this.slots = new RateLimitSlots(memory);
  }

  publish(config: Readonly<Record<string, unknown>>): RuleSlots[] {
    const rules = (config.rateLimits as RateLimitRule[] | undefined) ?? [];
    const out = this.slots.publish(rules as unknown as Array<Readonly<Record<string, unknown>>>, maxKeysOf);
    this.rules = rules;
    this.published = out;
    return out;
  }

  protection(stats: Stats): unknown {
    const buckets = this.memory.region(BUCKETS);
    const tags = this.memory.region(KEY_TAGS);
    const now = monotonicNs();
    return this.rules.map((r, i) => {
      const s = this.published[i];
      const burst = burstOf(r);
      const rate = rateOf(r.requestsPerSecond, r.requestsPerMinute, burst);
      const count = (name: string) => stats.get(stats.slot(name, { rule: r.name }));
      const out: Record<string, unknown> = {
        name: r.name, mode: r.mode,
        ...(r.requestsPerSecond !== undefined ? { requestsPerSecond: r.requestsPerSecond } : { requestsPerMinute: r.requestsPerMinute }),
        burst, admitted: count(RL_ADMITTED), refused: count(RL_REFUSED), shadowRefused: count(RL_SHADOW_REFUSED),
      };
      if (r.key === undefined) {
        out.tokens = Math.floor(tokens(buckets, s.word, rate, now) * 1000) / 1000;
      } else {
        let used = 0;
        for (let j = s.keyBase; j < s.keyBase + s.keySize; j++) if (Atomics.load(tags, j) !== 0) used++;
        out.key = r.key;
        out.maxKeys = s.keySize;
        out.keys = used;
      }
      return out;
    });
  }
}

export const RATELIMIT_MODULE: FilterModule = {
  name: 'ratelimit',
  configSchema: {
    /** Rate limits; every rule whose match holds must have a token for the request. */
    rateLimits: { type: 'array', items: ruleSchema, default: [] },
  },
  checkConfig: checkRateLimits,
  stats: [
    { name: RL_ADMITTED, kind: 'counter', by: 'rule', help: 'Requests a rate limit rule matched and had a token for' },
    { name: RL_REFUSED, kind: 'counter', by: 'rule', help: 'Requests a rate limit rule refused (no token)' },
    { name: RL_SHADOW_REFUSED, kind: 'counter', by: 'rule', help: 'Requests let through that a shadow-mode rate limit rule would have refused' },
  ],
  configSeries(config) {
    const rules = Array.isArray(config.rateLimits) ? (config.rateLimits as RateLimitRule[]) : [];
    return rules.flatMap((r) => [RL_ADMITTED, RL_REFUSED, RL_SHADOW_REFUSED].map((name) => ({ name, labels: { rule: r.name } })));
  },
  main: (memory) => new RateLimitMain(memory),
  protectionKey: 'rateLimits',
  create(env) {
    const rules = (env.config.rateLimits as RateLimitRule[] | undefined) ?? [];
    const memory = env.memory;
    if (rules.length > 0 && !memory) throw new Error('the ratelimit filter needs the shared memory');
    const slots = (env.data?.ratelimit as RuleSlots[] | undefined) ?? [];
    const overrides = attachOverrides(memory, env.data?.alarms);
    const limits = rules.length > 0 ? compileLimits(rules, slots, overrides) : [];
    const views = memory
      ? { buckets: memory.region(BUCKETS), tags: memory.region(KEY_TAGS), keyWords: memory.region(KEY_WORDS), overrides: overrides.view }
      : { buckets: new BigInt64Array(0), tags: new Int32Array(0), keyWords: new BigInt64Array(0), overrides: new Int32Array(1) };
    return new RateLimitFilter(limits, views, env.stats, (fields, msg) => log.info(fields, msg));
  },
};
