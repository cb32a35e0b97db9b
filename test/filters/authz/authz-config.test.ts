/**
 * The `authorization` section: the good forms load with their defaults; each bad value is refused
 * with its path and a message that says what is wrong.
 */
import t from 'tap';
import { type Doc, refuses } from '../../helpers/config-issues';
import { buildConfig } from '../../../src/config/config';


const base = (extra: Doc = {}): Doc => ({
  admin: { address: '127.0.0.1:0' },
  listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
  clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
  ...extra,
});
const rules = (...r: Doc[]) => base({ authorization: r });



t.test('the good forms load, with mode enforce by default', async (t) => {
  const c = buildConfig(rules(
    { action: 'deny', principals: ['cluster.local/ns/untrusted/*'] },
    { name: 'lan', action: 'allow', mode: 'shadow', namespaces: ['payments', '*-prod'], sourceRanges: ['10.0.0.0/8', '::1', 'fd00::/8'] },
    { name: 'api', action: 'allow', listener: 'app', direction: 'inbound', protocol: 'grpc', service: { prefix: 'pay.' }, method: ['Get'], path: { regex: '/pay\\..*' }, headers: { 'x-t': { present: true } } },
  ));
  t.same(c.authorization[0], { action: 'deny', mode: 'enforce', principals: ['cluster.local/ns/untrusted/*'] });
  t.equal(c.authorization[1].mode, 'shadow');
  t.same(buildConfig(base()).authorization, [], 'none by default');
});

t.test('action and mode: known values only', async (t) => {
  refuses(t, rules({ action: 'reject' }), '/authorization/0/action', /must be one of allow, deny/);
  refuses(t, rules({ principals: ['a'] }), '/authorization/0/action', /is required/);
  refuses(t, rules({ action: 'deny', mode: 'dry-run' }), '/authorization/0/mode', /must be one of enforce, shadow/);
  refuses(t, rules({ action: 'deny', principal: ['a'] }), '/authorization/0/principal', /is not a known field/);
});

t.test('principal and namespace patterns', async (t) => {
  refuses(t, rules({ action: 'deny', principals: ['a*b*'] }), '/authorization/0/principals/0', /not a pattern Sluice knows: one \* at the start \(\*suffix\) or the end \(prefix\*\), or \* alone/);
  refuses(t, rules({ action: 'deny', principals: ['ok', 'cluster.local/ns/*/sa/api'] }), '/authorization/0/principals/1', /not a pattern/);
  refuses(t, rules({ action: 'deny', principals: [''] }), '/authorization/0/principals/0', /must not be empty/);
  refuses(t, rules({ action: 'deny', principals: [] }), '/authorization/0/principals', /must NOT have fewer than 1 items/);
  refuses(t, rules({ action: 'deny', principals: ['spiffe://cluster.local/ns/a/sa/b'] }), '/authorization/0/principals/0', /without spiffe:\/\/ \(cluster\.local\/ns\/a\/sa\/b\)/);
  refuses(t, rules({ action: 'deny', namespaces: ['**'] }), '/authorization/0/namespaces/0', /not a pattern/);
  refuses(t, rules({ action: 'deny', namespaces: ['ns/payments'] }), '/authorization/0/namespaces/0', /a namespace name, without \//);
});

t.test('source ranges', async (t) => {
  refuses(t, rules({ action: 'deny', sourceRanges: ['10.0.0.0/8', '10.0.0.0/40'] }), '/authorization/0/sourceRanges/1', /prefix length must be 0-32/);
  refuses(t, rules({ action: 'deny', sourceRanges: ['10.1.0.0/8'] }), '/authorization/0/sourceRanges/0', /bits set past the \/8 prefix \(the range is 10\.0\.0\.0\/8\)/);
  refuses(t, rules({ action: 'deny', sourceRanges: ['localhost'] }), '/authorization/0/sourceRanges/0', /not an IPv4 or IPv6 address/);
  refuses(t, rules({ action: 'deny', sourceRanges: ['2001:db8::/129'] }), '/authorization/0/sourceRanges/0', /0-128/);
});

t.test('the match fields are checked as a route\'s are', async (t) => {
  refuses(t, rules({ action: 'deny', listener: 'nope' }), '/authorization/0/listener', /unknown listener "nope"/);
  refuses(t, rules({ action: 'deny', path: { regex: '(' } }), '/authorization/0/path/regex', /not a valid regular expression/);
  refuses(t, rules({ action: 'deny', headers: { 'bad name': 'x' } }), '/authorization/0/headers/bad name', /not a valid header name/);
  refuses(t, rules({ action: 'deny', path: '/admin' }), '/authorization/0/path', /must be object/);
  refuses(t, rules({ action: 'deny', protocol: 'tcp' }), '/authorization/0/protocol', /must be one of http1, http2, grpc, dubbo/);
});

t.test('names: unique, not a default decision\'s', async (t) => {
  refuses(t, rules({ name: 'a', action: 'deny' }, { name: 'a', action: 'allow' }), '/authorization/1/name', /duplicate rule name "a" \(also \/authorization\/0\)/);
  refuses(t, rules({ name: 'default_deny', action: 'deny' }), '/authorization/0/name', /name of a decision no rule made/);
  refuses(t, rules({ name: 'has space', action: 'deny' }), '/authorization/0/name', /must match pattern/);
});

t.test('the filter must be listed, and first', async (t) => {
  refuses(t, base({ authorization: [{ action: 'deny' }], filters: ['fault'] }), '/authorization', /needs the authz filter in filters/);
  refuses(t, base({ authorization: [{ action: 'deny' }], filters: ['fault', 'authz'] }), '/filters', /must list authz first/);
  t.ok(buildConfig(base({ authorization: [{ action: 'deny' }], filters: ['authz', 'fault'] })));
  t.ok(buildConfig(base({ filters: ['fault'] })), 'without rules, the filter need not be listed');
});

t.test('path rules need paths normalised as the upstream will read them', async (t) => {
  refuses(t, rules({ action: 'deny', path: { prefix: '/admin' } }, {}), '/authorization/1/action', /is required/);
  refuses(t, base({ authorization: [{ action: 'deny', path: { prefix: '/admin' } }], http: { normalizePath: false } }), '/authorization/0/path', /needs http.normalizePath and http.mergeSlashes on/);
  refuses(t, base({ authorization: [{ action: 'deny', path: { prefix: '/admin' } }], http: { mergeSlashes: false } }), '/authorization/0/path', /needs http.normalizePath/);
  t.ok(buildConfig(base({ authorization: [{ action: 'deny', method: 'DELETE' }], http: { normalizePath: false } })), 'rules without a path are not affected');
});
