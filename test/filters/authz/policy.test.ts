/**
 * The authorization decision on request views: principals (exact, prefix, suffix, any), namespaces
 * taken from the principal, source ranges, the route match fields, deny over allow, the allow
 * list, requests without a principal (plaintext), repeated headers, and shadow rules. The views
 * here carry a principal as the TLS transport will set it (an end-to-end test with real
 * certificates belongs with the TLS termination).
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import type { RequestView } from '../../../src/exchange/request-view';
import { Policy, namespaceOf, patternProblem, type AuthorizationRule } from '../../../src/filters/authz/policy';

interface ViewInit {
  principal?: string;
  address?: string;
  protocol?: RequestView['protocol'];
  direction?: 'inbound' | 'outbound';
  listener?: string;
  service?: string;
  method?: string;
  path?: string;
  headers?: Record<string, string[]>;
}

function view(v: ViewInit = {}): RequestView {
  const headers = v.headers ?? {};
  const protocol = v.protocol ?? 'http1';
  return {
    protocol, direction: v.direction ?? 'inbound', listener: v.listener ?? 'inbound',
    source: { address: v.address ?? '10.1.2.3', port: 40000, ...(v.principal !== undefined ? { principal: v.principal } : {}) },
    destination: null, service: v.service ?? 'api.payments', authority: protocol === 'dubbo' ? '' : v.service ?? 'api.payments',
    method: v.method ?? 'GET', path: v.path ?? '/', header: (n) => headers[n]?.join(', '), headerValues: (n) => headers[n] ?? [],
  };
}

/** The rules as a config loads them (validated, defaults filled), compiled. */
function policy(rules: Array<Record<string, unknown>>): Policy {
  const c = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'inbound', address: '127.0.0.1:9001', direction: 'inbound', capture: true }],
    authorization: rules,
  });
  return Policy.compile(c.authorization as AuthorizationRule[]);
}

const decide = (p: Policy, v: ViewInit) => { const d = p.decide(view(v)); return `${d.denied ? 'deny' : 'allow'}:${d.rule}${d.shadowRule ? ` shadow:${d.shadowRule}` : ''}`; };

const API = 'cluster.local/ns/payments/sa/api';
const UNTRUSTED = 'cluster.local/ns/untrusted/sa/bot';

t.test('principals: exact, prefix*, *suffix and * (any caller that has one)', async (t) => {
  const p = policy([
    { name: 'exact', action: 'deny', principals: [API], path: { prefix: '/exact' } },
    { name: 'prefix', action: 'deny', principals: ['cluster.local/ns/untrusted/*'] },
    { name: 'suffix', action: 'deny', principals: ['*/sa/legacy'] },
    { name: 'any', action: 'deny', principals: ['*'], path: { prefix: '/anonymous-only' } },
  ]);
  t.equal(decide(p, { principal: API, path: '/exact' }), 'deny:exact');
  t.equal(decide(p, { principal: `${API}x`, path: '/exact' }), 'allow:default_allow', 'exact is exact');
  t.equal(decide(p, { principal: UNTRUSTED }), 'deny:prefix');
  t.equal(decide(p, { principal: 'cluster.local/ns/untrustedx/sa/bot' }), 'allow:default_allow', 'the prefix ends at the / written');
  t.equal(decide(p, { principal: 'other.domain/ns/x/sa/legacy' }), 'deny:suffix');
  t.equal(decide(p, { principal: API, path: '/anonymous-only' }), 'deny:any');
  t.equal(decide(p, { path: '/anonymous-only' }), 'allow:default_allow', '* needs a principal: a plaintext request has none');
});

t.test('namespaces come from <td>/ns/<ns>/sa/<sa> only', async (t) => {
  t.equal(namespaceOf(API), 'payments');
  t.equal(namespaceOf('cluster.local/ns/a/sa/b/extra'), undefined);
  t.equal(namespaceOf('cluster.local/ns//sa/b'), undefined);
  t.equal(namespaceOf('cluster.local/x/a/sa/b'), undefined);
  t.equal(namespaceOf('ns/a/sa/b'), undefined);
  const p = policy([{ name: 'payments', action: 'allow', namespaces: ['payments', 'pay-*'] }]);
  t.equal(decide(p, { principal: API }), 'allow:payments');
  t.equal(decide(p, { principal: 'cluster.local/ns/pay-eu/sa/api' }), 'allow:payments');
  t.equal(decide(p, { principal: UNTRUSTED }), 'deny:default_deny');
  t.equal(decide(p, { principal: 'cluster.local/ns/untrusted/sa/x/ns/payments/sa/api' }), 'deny:default_deny', 'a second /ns/ segment names no namespace');
  t.equal(decide(p, {}), 'deny:default_deny', 'no principal, no namespace');
});

t.test('a request without a principal: refused by an allow-by-identity list, not caught by a deny-by-identity rule', async (t) => {
  const allow = policy([{ name: 'mesh', action: 'allow', principals: ['cluster.local/*'] }]);
  t.equal(decide(allow, { principal: API }), 'allow:mesh');
  t.equal(decide(allow, {}), 'deny:default_deny');
  const deny = policy([{ name: 'no-untrusted', action: 'deny', namespaces: ['untrusted'] }]);
  t.equal(decide(deny, { principal: UNTRUSTED }), 'deny:no-untrusted');
  t.equal(decide(deny, {}), 'allow:default_allow', 'plaintext is not caught: pair it with an allow list, or strict mTLS');
});

t.test('source ranges, IPv4 and IPv6, mapped addresses included', async (t) => {
  const p = policy([
    { name: 'blocked', action: 'deny', sourceRanges: ['10.9.0.0/16', '2001:db8:bad::/48'] },
    { name: 'inside', action: 'allow', sourceRanges: ['10.0.0.0/8', 'fd00::/8', '127.0.0.1'] },
  ]);
  t.equal(decide(p, { address: '10.1.2.3' }), 'allow:inside');
  t.equal(decide(p, { address: '::ffff:10.1.2.3' }), 'allow:inside');
  t.equal(decide(p, { address: '10.9.1.1' }), 'deny:blocked', 'deny wins over a wider allow');
  t.equal(decide(p, { address: '::ffff:10.9.1.1' }), 'deny:blocked');
  t.equal(decide(p, { address: 'fd12::1' }), 'allow:inside');
  t.equal(decide(p, { address: '2001:db8:bad::1' }), 'deny:blocked');
  t.equal(decide(p, { address: '2001:db8:bad:1::1' }), 'deny:blocked', 'a /48 spans the fourth group');
  t.equal(decide(p, { address: '2001:db8:bae::1' }), 'deny:default_deny');
  t.equal(decide(p, { address: '192.0.2.1' }), 'deny:default_deny');
  t.equal(decide(p, { address: '127.0.0.1' }), 'allow:inside');
  t.equal(decide(p, { address: '127.0.0.2' }), 'deny:default_deny');
  t.equal(decide(p, { address: '' }), 'deny:blocked', 'an address that cannot be read is in a deny rule\'s ranges, and in no allow rule\'s');
});

t.test('a caller whose address is not known: caught by a deny rule on addresses, never let in by an allow rule on them', async (t) => {
  const denyOnly = policy([{ name: 'blocked', action: 'deny', sourceRanges: ['127.0.0.1'] }]);
  t.equal(decide(denyOnly, { address: '10.1.2.3' }), 'allow:default_allow', 'another address passes');
  t.equal(decide(denyOnly, { address: '' }), 'deny:blocked', 'not knowing the address does not get past the deny rule');
  t.equal(decide(denyOnly, { address: 'not an address' }), 'deny:blocked');
  const allowOnly = policy([{ name: 'inside', action: 'allow', sourceRanges: ['0.0.0.0/0', '::/0'] }]);
  t.equal(decide(allowOnly, { address: '192.0.2.1' }), 'allow:inside');
  t.equal(decide(allowOnly, { address: '' }), 'deny:default_deny', 'an allow rule on addresses does not hold for an unknown one');
});

t.test('the route match fields, all of them ANDed with identity', async (t) => {
  const p = policy([
    { name: 'admin-from-ops', action: 'allow', namespaces: ['ops'], path: { prefix: '/admin' } },
    { name: 'public', action: 'allow', path: { regex: '/(public|health)(/.*)?' } },
    { name: 'grpc-read', action: 'allow', protocol: 'grpc', service: 'pay.Ledger', method: ['Get', 'List'] },
    { name: 'dubbo', action: 'allow', protocol: 'dubbo', service: { prefix: 'com.example.' }, headers: { tenant: { present: true } } },
    { name: 'no-delete', action: 'deny', method: 'DELETE', direction: 'inbound' },
  ]);
  t.equal(decide(p, { principal: 'cluster.local/ns/ops/sa/x', path: '/admin/users' }), 'allow:admin-from-ops');
  t.equal(decide(p, { principal: API, path: '/admin/users' }), 'deny:default_deny');
  t.equal(decide(p, { path: '/public/x' }), 'allow:public');
  t.equal(decide(p, { path: '/publicx' }), 'deny:default_deny', 'a regex matches the whole path');
  t.equal(decide(p, { path: '/health', method: 'DELETE' }), 'deny:no-delete');
  t.equal(decide(p, { path: '/health', method: 'DELETE', direction: 'outbound' }), 'allow:public');
  t.equal(decide(p, { protocol: 'grpc', service: 'pay.Ledger', method: 'Get', path: '/pay.Ledger/Get' }), 'allow:grpc-read');
  t.equal(decide(p, { protocol: 'grpc', service: 'PAY.LEDGER', method: 'List', path: '/PAY.LEDGER/List' }), 'allow:grpc-read', 'services compare without case, as routes do');
  t.equal(decide(p, { protocol: 'grpc', service: 'pay.Ledger', method: 'Delete', path: '/pay.Ledger/Delete' }), 'deny:default_deny');
  t.equal(decide(p, { protocol: 'dubbo', service: 'com.example.Transfer', method: 'pay', headers: { tenant: ['a'] } }), 'allow:dubbo');
  t.equal(decide(p, { protocol: 'dubbo', service: 'com.example.Transfer', method: 'pay' }), 'deny:default_deny');
});

t.test('a repeated header: any value trips a deny rule, every value must meet an allow rule', async (t) => {
  const p = policy([
    { name: 'no-prod', action: 'deny', headers: { 'x-env': 'prod' } },
    { name: 'tenant-a', action: 'allow', headers: { 'X-Tenant': { prefix: 'a-' } } },
  ]);
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1'] } }), 'allow:tenant-a');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1', 'a-2'] } }), 'allow:tenant-a', 'every value meets it');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1', 'b-2'] } }), 'deny:default_deny', 'one value does not');
  t.equal(decide(p, { headers: { 'x-tenant': ['b-2', 'a-1'] } }), 'deny:default_deny');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1'], 'x-env': ['dev', 'prod'] } }), 'deny:no-prod', 'the second value');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1'], 'x-env': ['prod', 'dev'] } }), 'deny:no-prod', 'the first value');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1'], 'x-env': ['dev, prod'] } }), 'deny:no-prod', 'an item of a list value');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1'], 'x-env': ['dev,,prod '] } }), 'deny:no-prod', 'items are trimmed');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1, b-2'] } }), 'deny:default_deny', 'the value meets the prefix, its second item does not');
  t.equal(decide(p, { headers: { 'x-tenant': ['a-1, a-2'] } }), 'allow:tenant-a');
  const joined = policy([{ name: 'no-pair', action: 'deny', headers: { 'x-env': 'dev, prod' } }]);
  t.equal(decide(joined, { headers: { 'x-env': ['dev', 'prod'] } }), 'deny:no-pair', 'the values joined, as a server that joins them reads them');
});

t.test('deny wins, allow lists, first matching rule names the decision', async (t) => {
  const p = policy([
    { name: 'allow-all-mesh', action: 'allow', principals: ['cluster.local/*'] },
    { name: 'deny-untrusted', action: 'deny', namespaces: ['untrusted'] },
    { name: 'allow-api', action: 'allow', principals: [API] },
  ]);
  t.equal(decide(p, { principal: UNTRUSTED }), 'deny:deny-untrusted', 'a deny rule later in the list still wins');
  t.equal(decide(p, { principal: API }), 'allow:allow-all-mesh', 'the first allow rule that matches');
  t.equal(decide(policy([{ action: 'deny' }]), {}), 'deny:authorization[0]', 'a rule without conditions matches everything; unnamed, by index');
  t.equal(decide(policy([{ action: 'allow' }, { action: 'deny', path: { exact: '/x' } }]), { path: '/x' }), 'deny:authorization[1]');
});

t.test('shadow rules: the enforced decision stands; the one with shadow rules enforced is reported', async (t) => {
  const p = policy([
    { name: 'enforced-deny', action: 'deny', path: { prefix: '/never' } },
    { name: 'try-deny', action: 'deny', mode: 'shadow', namespaces: ['untrusted'] },
    { name: 'try-allow', action: 'allow', mode: 'shadow', namespaces: ['payments'] },
  ]);
  t.equal(decide(p, { principal: UNTRUSTED, path: '/never' }), 'deny:enforced-deny', 'enforced rules still enforce');
  t.equal(decide(p, { principal: UNTRUSTED }), 'allow:default_allow shadow:try-deny');
  t.equal(decide(p, { principal: API }), 'allow:default_allow', 'matches the shadow allow list');
  t.equal(decide(p, { principal: 'cluster.local/ns/other/sa/x' }), 'allow:default_allow shadow:default_deny', 'outside the shadow allow list');
  t.equal(decide(p, {}), 'allow:default_allow shadow:default_deny');
  // with an enforced allow list, a shadow allow rule changes nothing the enforced list allowed
  const q = policy([
    { name: 'mesh', action: 'allow', principals: ['cluster.local/*'] },
    { name: 'narrower', action: 'allow', mode: 'shadow', namespaces: ['payments'] },
  ]);
  t.equal(decide(q, { principal: UNTRUSTED }), 'allow:mesh');
  t.equal(decide(q, {}), 'deny:default_deny');
});

t.test('shadow mode decides as enforcing would: the same requests, the same rule names', async (t) => {
  const rules = [
    { name: 'no-untrusted', action: 'deny', namespaces: ['untrusted'] },
    { name: 'no-delete', action: 'deny', method: 'DELETE' },
    { name: 'mesh', action: 'allow', principals: ['cluster.local/*'] },
    { name: 'lan', action: 'allow', sourceRanges: ['10.0.0.0/8'] },
  ];
  const enforce = policy(rules);
  const shadow = policy(rules.map((r) => ({ ...r, mode: 'shadow' })));
  const cases: ViewInit[] = [];
  for (const principal of [undefined, API, UNTRUSTED, 'other/x']) {
    for (const address of ['10.1.1.1', '192.0.2.1', '::ffff:10.2.2.2']) {
      for (const method of ['GET', 'DELETE']) cases.push({ ...(principal ? { principal } : {}), address, method });
    }
  }
  let refused = 0;
  for (const c of cases) {
    const e = enforce.decide(view(c));
    const s = shadow.decide(view(c));
    t.equal(s.denied, false, 'shadow lets everything through');
    t.equal(s.shadowRule, e.denied ? e.rule : null, `${JSON.stringify(c)}: ${e.denied ? e.rule : 'allowed'}`);
    if (e.denied) refused++;
  }
  t.ok(refused > 0 && refused < cases.length, `${refused} of ${cases.length} refused when enforced`);
});

t.test('patterns: what is and is not one', async (t) => {
  for (const ok of ['a', '*', 'a*', '*a', 'cluster.local/ns/x/*', '*/sa/y']) t.equal(patternProblem(ok), null, ok);
  for (const bad of ['', 'a*b', 'a*b*', '*a*', '**', 'a**']) t.not(patternProblem(bad), null, bad);
});

t.test('a connection carried as opaque bytes: rules on who calls hold, conditions on requests never do', async (t) => {
  const conn = (c: { principal?: string; address?: string; listener?: string; direction?: 'inbound' | 'outbound' } = {}) => {
    const d = p.decideConnection({
      direction: c.direction ?? 'inbound', listener: c.listener ?? 'inbound',
      source: { address: c.address ?? '10.1.2.3', port: 40000, ...(c.principal !== undefined ? { principal: c.principal } : {}) },
    });
    return `${d.denied ? 'deny' : 'allow'}:${d.rule}${d.shadowRule ? ` shadow:${d.shadowRule}` : ''}`;
  };
  let p = policy([
    { name: 'untrusted', action: 'deny', principals: ['cluster.local/ns/untrusted/*'] },
    { name: 'bad-net', action: 'deny', sourceRanges: ['192.0.2.0/24'], direction: 'inbound' },
    { name: 'no-admin', action: 'deny', path: { prefix: '/admin' } },
    { name: 'no-prod', action: 'deny', headers: { 'x-env': 'prod' } },
    { name: 'dubbo-only', action: 'deny', protocol: 'dubbo', sourceRanges: ['10.0.0.0/8'] },
  ]);
  t.equal(conn({ principal: UNTRUSTED }), 'deny:untrusted', 'a deny rule by identity refuses the connection');
  t.equal(conn({ address: '192.0.2.7' }), 'deny:bad-net', 'a deny rule by address refuses it');
  t.equal(conn({ address: '192.0.2.7', direction: 'outbound' }), 'allow:default_allow', 'the rule\'s direction holds');
  t.equal(conn({ principal: API }), 'allow:default_allow', 'deny rules about requests (path, headers, protocol) leave it alone');
  t.equal(decide(p, { protocol: 'dubbo', address: '10.9.9.9' }), 'deny:dubbo-only', 'the same rule still refuses requests');

  p = policy([
    { name: 'payments', action: 'allow', namespaces: ['payments'] },
    { name: 'health', action: 'allow', sourceRanges: ['10.0.0.0/8'], path: { prefix: '/healthz' } },
    { name: 'ops', action: 'allow', listener: 'inbound', sourceRanges: ['198.51.100.0/24'] },
  ]);
  t.equal(conn({ principal: API }), 'allow:payments', 'an allow rule by identity admits the connection');
  t.equal(conn({ address: '10.1.2.3' }), 'deny:default_deny', 'an allow rule about requests admits no connection');
  t.equal(conn({ address: '198.51.100.4' }), 'allow:ops');
  t.equal(conn({ address: '198.51.100.4', listener: 'other' }), 'deny:default_deny', 'the rule\'s listener holds');

  p = policy([
    { name: 'try-untrusted', action: 'deny', mode: 'shadow', principals: ['cluster.local/ns/untrusted/*'] },
    { name: 'try-path', action: 'deny', mode: 'shadow', path: { prefix: '/' } },
  ]);
  t.equal(conn({ principal: UNTRUSTED }), 'allow:default_allow shadow:try-untrusted', 'shadow rules decide as if enforced, and let it through');
  t.equal(conn({ principal: API }), 'allow:default_allow');
});
