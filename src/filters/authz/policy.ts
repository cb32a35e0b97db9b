/**
 * Authorization rules compiled into one policy, and the decision for a request.
 *
 *   enforced deny rules ── one matches ──▶ DENIED (by it)
 *          │ none
 *   enforced allow rules ─ none exist ───▶ ALLOWED (default_allow)
 *          │ some exist: one matches ────▶ ALLOWED (by it)
 *          └───────────── none matches ──▶ DENIED (default_deny)
 *
 * Shadow rules take no part in that decision. For a request it allows, the same walk is made
 * with the shadow rules counted as enforced: if that walk refuses it, the request is
 * "shadow-denied" by the rule that would have refused it (a shadow deny rule, or default_deny when
 * shadow allow rules are the only allow rules and none matches). Enforcing every shadow rule later
 * refuses exactly what was shadow-denied, with the same rule names.
 *
 * A rule matches when all its conditions hold (an item of a list: any of them). Identity
 * conditions (principals, namespaces) never hold for a request without a principal (plaintext):
 * an allow rule by identity refuses such requests, a deny rule by identity lets them through.
 */
import type { HeaderMatch, RouteConfig, StringMatch } from '../../config/config';
import { allOf, matchTests, stringMatcher, type Matcher, type ViewTest } from '../../exchange/router';
import type { Peer, RequestView } from '../../exchange/request-view';
import type { ConnectionView } from '../../exchange/filter';
import { inRange, parseCidr, parseIp, type CidrRange, type IpAddress } from '../../net/cidr';

/** One entry of `authorization`, as the schema leaves it (defaults filled). */
type MatchFields = RouteConfig['match'];
export interface AuthorizationRule extends MatchFields {
  name?: string;
  action: 'allow' | 'deny';
  mode: 'enforce' | 'shadow';
  principals?: string[];
  namespaces?: string[];
  sourceRanges?: string[];
}

/** The rule names of decisions no rule of the config made. */
export const DEFAULT_ALLOW = 'default_allow';
export const DEFAULT_DENY = 'default_deny';

/** The name a rule counts and logs under. */
export function ruleName(r: { name?: unknown }, i: number): string {
  return typeof r.name === 'string' ? r.name : `authorization[${i}]`;
}

/**
 * What is wrong with a principal or namespace pattern, or null: exact, `prefix*`, `*suffix`, or
 * `*` (any; only a request that has one).
 */
export function patternProblem(p: string): string | null {
  if (p.length === 0) return 'must not be empty';
  const stars = p.split('*').length - 1;
  if (stars === 0 || p === '*') return null;
  if (stars > 1 || (p[0] !== '*' && p[p.length - 1] !== '*')) {
    return `"${p}" is not a pattern Sluice knows: one * at the start (*suffix) or the end (prefix*), or * alone`;
  }
  return null;
}

export function compilePattern(p: string): Matcher {
  if (p === '*') return (v) => v.length > 0;
  if (p.endsWith('*')) { const s = p.slice(0, -1); return (v) => v.startsWith(s); }
  if (p.startsWith('*')) { const s = p.slice(1); return (v) => v.endsWith(s); }
  return (v) => v === p;
}

function anyOf(patterns: readonly string[]): Matcher {
  const ms = patterns.map(compilePattern);
  if (ms.length === 1) return ms[0];
  return (v) => { for (const m of ms) if (m(v)) return true; return false; };
}

/**
 * The namespace of a principal of the form `<trust-domain>/ns/<namespace>/sa/<service-account>`
 * (SPIFFE IDs of Istio and Sluice); undefined for any other form, which then matches no
 * `namespaces` condition.
 */
export function namespaceOf(principal: string): string | undefined {
  const parts = principal.split('/');
  if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa' || parts[0] === '' || parts[2] === '' || parts[4] === '') return undefined;
  return parts[2];
}

/** Each connection's peer is parsed once. */
const parsedPeers = new WeakMap<Peer, IpAddress | null>();
function peerIp(p: Peer): IpAddress | null {
  let ip = parsedPeers.get(p);
  if (ip === undefined) { ip = parseIp(p.address); parsedPeers.set(p, ip); }
  return ip;
}

/** The items of a comma-separated list value, trimmed (RFC 9110 §5.6.1); empty ones dropped. */
function listItems(v: string): string[] {
  return v.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
}

/**
 * A header condition of an authorization rule. A field sent twice, or a list in one value
 * (`x-env: dev, prod`, which HTTP holds equal to two fields), can be read by the upstream as any
 * one of its values or items, or all of them joined. So a deny rule's condition holds if any of
 * those readings matches, and an allow rule's only if every value and every item of a value that
 * holds a comma matches. Repeating a field, or listing, can then neither slip past a deny rule nor
 * borrow an allow rule's match for a value it does not meet.
 */
function headerTest(action: 'allow' | 'deny'): (name: string, m: HeaderMatch) => ViewTest {
  return (name, m) => {
    if (typeof m === 'object' && 'present' in m) {
      const want = m.present;
      return (view) => (view.headerValues(name).length > 0) === want;
    }
    const sm = stringMatcher(m as string | StringMatch);
    if (action === 'deny') {
      return (view) => {
        const vs = view.headerValues(name);
        for (const v of vs) {
          if (sm(v)) return true;
          if (v.includes(',')) for (const item of listItems(v)) if (sm(item)) return true;
        }
        return vs.length > 1 && sm(vs.join(', '));
      };
    }
    return (view) => {
      const vs = view.headerValues(name);
      if (vs.length === 0) return false;
      for (const v of vs) {
        if (!sm(v)) return false;
        if (v.includes(',')) for (const item of listItems(v)) if (!sm(item)) return false;
      }
      return true;
    };
  };
}

export interface CompiledRule {
  readonly name: string;
  readonly action: 'allow' | 'deny';
  readonly shadow: boolean;
  readonly test: ViewTest;
  /** The rule on a connection carried as opaque bytes, which has no request (see `connectionTest`). */
  readonly connectionTest: ConnectionTest;
}

type ConnectionTest = (c: ConnectionView) => boolean;

/** The conditions on who is calling: the caller's identity and address. */
function callerTests(r: AuthorizationRule): ConnectionTest[] {
  const tests: ConnectionTest[] = [];
  if (r.principals) {
    const m = anyOf(r.principals);
    tests.push((v) => { const p = v.source.principal; return p !== undefined && m(p); });
  }
  if (r.namespaces) {
    const m = anyOf(r.namespaces);
    tests.push((v) => {
      const p = v.source.principal;
      if (p === undefined) return false;
      const ns = namespaceOf(p);
      return ns !== undefined && m(ns);
    });
  }
  if (r.sourceRanges) {
    const ranges: CidrRange[] = r.sourceRanges.map(parseCidr);
    // a caller whose address is not known (it cannot be read) is in a deny rule's ranges and
    // in no allow rule's: not knowing an address must not get a request past a rule on it
    const unknown = r.action === 'deny';
    tests.push((v) => {
      const ip = peerIp(v.source);
      if (ip === null) return unknown;
      for (const range of ranges) if (inRange(ip, range)) return true;
      return false;
    });
  }
  return tests;
}

/** Whether a rule has a condition on the request itself (a connection carried as opaque bytes has none). */
function aboutRequests(r: AuthorizationRule): boolean {
  return r.protocol !== undefined || r.service !== undefined || r.authority !== undefined || r.method !== undefined
    || r.path !== undefined || (r.headers !== undefined && Object.keys(r.headers).length > 0);
}

const never: ConnectionTest = () => false;

/**
 * A rule on a connection carried as opaque bytes: its listener, direction and caller are known,
 * and it has no request, so a condition on the request (protocol, service, authority, method,
 * path, headers) never holds for it, as a condition on the principal never holds for a plaintext
 * request (Envoy's network RBAC reads its HTTP-only permissions the same way). Rules on who calls
 * (`deny principals: [...]`, `allow sourceRanges: [...]`) hold for every connection; a deny rule
 * about requests leaves opaque connections alone, and an allow rule about requests admits none.
 */
function connectionTest(r: AuthorizationRule): ConnectionTest {
  if (aboutRequests(r)) return never;
  const tests: ConnectionTest[] = [];
  if (r.listener !== undefined) { const l = r.listener; tests.push((v) => v.listener === l); }
  if (r.direction !== undefined) { const d = r.direction; tests.push((v) => v.direction === d); }
  tests.push(...callerTests(r));
  // a test of a connection's fields reads a request view as well (it has them all)
  return allOf(tests) as (c: ConnectionView) => boolean;
}

export function compileRule(r: AuthorizationRule, i: number): CompiledRule {
  // the route match fields first (cheap ones lead), then identity and address
  const tests: ViewTest[] = [...matchTests(r, headerTest(r.action)), ...callerTests(r)];
  return { name: ruleName(r, i), action: r.action, shadow: r.mode === 'shadow', test: allOf(tests), connectionTest: connectionTest(r) };
}

export interface Decision {
  /** Whether the request is refused. */
  readonly denied: boolean;
  /** The rule that decided (its name, or default_allow / default_deny). */
  readonly rule: string;
  /** For an allowed request: the rule that would have refused it with the shadow rules enforced; else null. */
  readonly shadowRule: string | null;
}

const onRequest = (r: CompiledRule, v: RequestView): boolean => r.test(v);
const onConnection = (r: CompiledRule, c: ConnectionView): boolean => r.connectionTest(c);

export class Policy {
  private readonly deny: CompiledRule[];
  private readonly allow: CompiledRule[];
  private readonly shadowDeny: CompiledRule[];
  private readonly shadowAllow: CompiledRule[];
  private readonly defaultDeny: Decision = Object.freeze({ denied: true, rule: DEFAULT_DENY, shadowRule: null });

  constructor(readonly rules: readonly CompiledRule[]) {
    this.deny = rules.filter((r) => !r.shadow && r.action === 'deny');
    this.allow = rules.filter((r) => !r.shadow && r.action === 'allow');
    this.shadowDeny = rules.filter((r) => r.shadow && r.action === 'deny');
    this.shadowAllow = rules.filter((r) => r.shadow && r.action === 'allow');
  }

  static compile(rules: readonly AuthorizationRule[]): Policy {
    return new Policy(rules.map(compileRule));
  }

  get empty(): boolean {
    return this.rules.length === 0;
  }

  decide(view: RequestView): Decision {
    return this.walk(view, onRequest);
  }

  /** The decision for a connection carried as opaque bytes: every rule as `connectionTest` reads it. */
  decideConnection(conn: ConnectionView): Decision {
    return this.walk(conn, onConnection);
  }

  private walk<V>(v: V, test: (r: CompiledRule, v: V) => boolean): Decision {
    for (const r of this.deny) if (test(r, v)) return this.decision(true, r.name, null);
    let allowedBy = DEFAULT_ALLOW;
    if (this.allow.length > 0) {
      let hit: CompiledRule | null = null;
      for (const r of this.allow) if (test(r, v)) { hit = r; break; }
      if (hit === null) return this.defaultDeny;
      allowedBy = hit.name;
    }
    return this.decision(false, allowedBy, this.shadowDecision(v, test, allowedBy === DEFAULT_ALLOW));
  }

  /** With the shadow rules enforced too, the rule that would refuse an allowed request; null if none. */
  private shadowDecision<V>(v: V, test: (r: CompiledRule, v: V) => boolean, noAllowRuleMatched: boolean): string | null {
    for (const r of this.shadowDeny) if (test(r, v)) return r.name;
    // an enforced allow rule that matched still allows; else shadow allow rules form the list
    if (noAllowRuleMatched && this.shadowAllow.length > 0) {
      for (const r of this.shadowAllow) if (test(r, v)) return null;
      return DEFAULT_DENY;
    }
    return null;
  }

  private decision(denied: boolean, rule: string, shadowRule: string | null): Decision {
    return { denied, rule, shadowRule };
  }
}
