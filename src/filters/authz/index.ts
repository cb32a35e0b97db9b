/**
 * The `authz` filter: identity allow and deny lists, the top-level `authorization` section.
 *
 *   authorization:
 *     - name: no-untrusted
 *       action: deny                          # deny | allow
 *       principals: ["cluster.local/ns/untrusted/*"]
 *     - name: payments-only
 *       action: allow
 *       namespaces: [payments]
 *       sourceRanges: [10.0.0.0/8, "fd00::/8"]
 *       service: api.payments                 # and any field of a route's match
 *       path: { prefix: /v1/ }
 *       mode: shadow                          # enforce (default) | shadow
 *
 * Deny wins over allow; when some allow rule is enforced, a request must match one. See
 * policy.ts for the decision and authz-filter.ts for what a denied request gets.
 */
import type { ConfigIssue } from '../../errors';
import { matchProperties } from '../../config/match-schema';
import { log } from '../../log';
import { parseCidr } from '../../net/cidr';
import type { FilterModule } from '../module';
import { checkMatch, isObj, listenerNamesOf } from '../route-checks';
import { AUTHZ_ALLOWED, AUTHZ_DENIED, AUTHZ_SHADOW_DENIED, AuthzFilter } from './authz-filter';
import { DEFAULT_ALLOW, DEFAULT_DENY, Policy, patternProblem, ruleName, type AuthorizationRule } from './policy';

export type { AuthorizationRule } from './policy';

const patterns = { type: 'array', items: { type: 'string' }, minItems: 1 };

/** The caller's identity and address, as a rule matches them (authorization, rate limits). */
export const callerProperties = {
  /** The caller's SPIFFE ID without `spiffe://`: exact, `prefix*`, `*suffix`, or `*` (any caller with one). */
  principals: patterns,
  /** The namespace of the caller's SPIFFE ID (`<td>/ns/<namespace>/sa/<sa>`), same patterns. */
  namespaces: patterns,
  /** The caller's address: CIDR ranges or single addresses, IPv4 and IPv6. */
  sourceRanges: { type: 'array', items: { type: 'string' }, minItems: 1 },
};

const ruleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['action'],
  properties: {
    /** The rule's name in stats and logs; `authorization[<index>]` when not given. */
    name: { type: 'string', pattern: '^[a-zA-Z0-9_.:-]{1,128}$' },
    action: { enum: ['allow', 'deny'] },
    /** `shadow`: decides and counts as if enforced, logs (sampled), and lets the request through. */
    mode: { enum: ['enforce', 'shadow'], default: 'enforce' },
    ...callerProperties,
    ...matchProperties,
  },
};

const RESERVED = new Set([DEFAULT_ALLOW, DEFAULT_DENY]);

function checkPatterns(issues: ConfigIssue[], path: string, list: unknown, what: 'principal' | 'namespace'): void {
  if (!Array.isArray(list)) return;
  list.forEach((p, j) => {
    if (typeof p !== 'string') return;
    const problem = patternProblem(p);
    if (problem) { issues.push({ path: `${path}/${j}`, message: problem }); return; }
    if (what === 'principal' && /^spiffe:\/\//i.test(p)) {
      issues.push({ path: `${path}/${j}`, message: `is written without spiffe:// (${p.slice(9)})` });
    }
    if (what === 'namespace' && p.includes('/')) issues.push({ path: `${path}/${j}`, message: 'is a namespace name, without /' });
  });
}

/**
 * The checks of a rule's match fields and caller fields (callerProperties) the schema cannot
 * express. `p` is the path of the section that holds them.
 */
export function checkCallerMatch(issues: ConfigIssue[], p: string, r: Readonly<Record<string, unknown>>, doc: Readonly<Record<string, unknown>>, listeners: ReadonlySet<string>): void {
  checkPatterns(issues, `${p}/principals`, r.principals, 'principal');
  checkPatterns(issues, `${p}/namespaces`, r.namespaces, 'namespace');
  if (Array.isArray(r.sourceRanges)) {
    r.sourceRanges.forEach((s, j) => {
      if (typeof s !== 'string') return;
      try { parseCidr(s); } catch (err) { issues.push({ path: `${p}/sourceRanges/${j}`, message: (err as Error).message }); }
    });
  }
  checkMatch(issues, p, r, listeners);
  if (r.path !== undefined && isObj(doc.http) && (doc.http.normalizePath === false || doc.http.mergeSlashes === false)) {
    issues.push({
      path: `${p}/path`,
      message: 'needs http.normalizePath and http.mergeSlashes on: without them /./admin, /%61dmin or //admin reach the upstream\'s /admin past a rule written for /admin',
    });
  }
}

function checkAuthorization(doc: Readonly<Record<string, unknown>>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const rules = doc.authorization;
  if (!Array.isArray(rules)) return issues;
  const listeners = listenerNamesOf(doc);
  const names = new Map<string, number>();
  rules.forEach((r, i) => {
    if (!isObj(r)) return;
    const p = `/authorization/${i}`;
    const name = ruleName(r, i);
    if (RESERVED.has(name)) issues.push({ path: `${p}/name`, message: `"${name}" is the name of a decision no rule made; choose another` });
    const before = names.get(name);
    if (before !== undefined) issues.push({ path: `${p}/name`, message: `duplicate rule name "${name}" (also /authorization/${before})` });
    else names.set(name, i);
    checkCallerMatch(issues, p, r, doc, listeners);
  });
  if (rules.length > 0) {
    const filters = Array.isArray(doc.filters) ? doc.filters : null;
    if (filters !== null && !filters.includes('authz')) {
      issues.push({ path: '/authorization', message: 'needs the authz filter in filters (without it no rule would be enforced)' });
    } else if (filters !== null && filters[0] !== 'authz') {
      issues.push({ path: '/filters', message: 'must list authz first: a request is authorized before any other filter acts on it' });
    }
  }
  return issues;
}

export const AUTHZ_MODULE: FilterModule = {
  name: 'authz',
  configSchema: {
    /** Authorization rules, in order. Deny wins over allow; with any allow rule enforced, a request must match one. */
    authorization: { type: 'array', items: ruleSchema, default: [] },
  },
  checkConfig: checkAuthorization,
  stats: [
    { name: AUTHZ_ALLOWED, kind: 'counter', by: 'rule', help: 'Requests authorization let through, by the allow rule that matched (default_allow: no allow rule is enforced and no deny rule matched)' },
    { name: AUTHZ_DENIED, kind: 'counter', by: 'rule', help: 'Requests authorization refused, by the deny rule that matched (default_deny: allow rules are enforced and none matched)' },
    { name: AUTHZ_SHADOW_DENIED, kind: 'counter', by: 'rule', help: 'Requests let through that shadow-mode rules would have refused, by the rule that would have refused them' },
  ],
  configSeries(config) {
    const rules = Array.isArray(config.authorization) ? (config.authorization as Array<{ name?: string }>) : [];
    if (rules.length === 0) return [];
    const names = [...rules.map((r, i) => ruleName(r, i)), DEFAULT_ALLOW, DEFAULT_DENY];
    return names.flatMap((rule) => [AUTHZ_ALLOWED, AUTHZ_DENIED, AUTHZ_SHADOW_DENIED].map((name) => ({ name, labels: { rule } })));
  },
  create: (env) => new AuthzFilter(
    Policy.compile((env.config.authorization as AuthorizationRule[] | undefined) ?? []),
    env.stats,
    (fields, msg) => log.info(fields, msg),
  ),
};
