/**
 * The `rateLimits` section: the good forms load with their defaults; each bad value is refused
 * with its path and a message that says what is wrong.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import { KEY_SLOTS } from '../../../src/filters/ratelimit/slots';
import { refuses, type Doc } from '../../helpers/config-issues';

const base = (extra: Doc = {}): Doc => ({
  admin: { address: '127.0.0.1:0' },
  listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
  clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
  ...extra,
});
const rules = (...r: Doc[]) => base({ rateLimits: r });

t.test('the good forms load, with mode enforce and an empty match by default', async (t) => {
  const c = buildConfig(rules(
    { name: 'all', requestsPerSecond: 100 },
    { name: 'api', match: { listener: 'app', direction: 'inbound', protocol: 'grpc', service: { prefix: 'pay.' }, method: ['Get'], path: { prefix: '/pay' }, headers: { 'x-t': 'a' } }, requestsPerMinute: 30, burst: 5, mode: 'shadow' },
    { name: 'per-user', requestsPerSecond: 10, key: { header: 'X-User' }, maxKeys: 100 },
    { name: 'per-caller', requestsPerSecond: 10, key: 'caller', match: { principals: ['cluster.local/ns/a/*'], sourceRanges: ['10.0.0.0/8'] } },
  ));
  t.same(c.rateLimits[0], { name: 'all', requestsPerSecond: 100, match: {}, mode: 'enforce' });
  t.equal(c.rateLimits[1].mode, 'shadow');
  t.same(c.rateLimits[2].key, { header: 'X-User' });
  t.equal(c.rateLimits[3].key, 'caller');
  t.same(buildConfig(base()).rateLimits, [], 'none by default');
  t.ok(buildConfig(base()).filters.includes('ratelimit'), 'the filter is in the default chain');
});

t.test('a rate: exactly one of per second and per minute, positive', async (t) => {
  refuses(t, rules({ name: 'a' }), '/rateLimits/0', /exactly one of requestsPerSecond, requestsPerMinute \(has 0\)/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, requestsPerMinute: 60 }), '/rateLimits/0', /exactly one .* \(has 2\)/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 0 }), '/rateLimits/0/requestsPerSecond', /must be > 0/);
  refuses(t, rules({ name: 'a', requestsPerMinute: -1 }), '/rateLimits/0/requestsPerMinute', /must be > 0/);
  refuses(t, rules({ name: 'a', requestsPerSecond: '10' }), '/rateLimits/0/requestsPerSecond', /must be number/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 10, burst: 0 }), '/rateLimits/0/burst', /must be >= 1/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 10, burst: 1.5 }), '/rateLimits/0/burst', /must be integer/);
});

t.test('name, mode and unknown fields', async (t) => {
  refuses(t, rules({ requestsPerSecond: 1 }), '/rateLimits/0/name', /is required/);
  refuses(t, rules({ name: 'a b', requestsPerSecond: 1 }), '/rateLimits/0/name', /must match pattern/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1 }, { name: 'a', requestsPerSecond: 2 }), '/rateLimits/1/name', /duplicate rule name "a" \(also \/rateLimits\/0\)/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, mode: 'dry-run' }), '/rateLimits/0/mode', /must be one of enforce, shadow/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, rps: 3 }), '/rateLimits/0/rps', /is not a known field/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, service: 'x' }), '/rateLimits/0/service', /is not a known field/);
});

t.test('match: the route match language and the caller, checked like a route', async (t) => {
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { listener: 'nope' } }), '/rateLimits/0/match/listener', /unknown listener "nope"/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { path: { regex: '(' } } }), '/rateLimits/0/match/path/regex', /not a valid regular expression/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { headers: { 'bad name': 'x' } } }), '/rateLimits/0/match/headers/bad name', /not a valid header name/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { sourceRanges: ['10.0.0.0/33'] } }), '/rateLimits/0/match/sourceRanges/0', /.+/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { principals: ['a*b*'] } }), '/rateLimits/0/match/principals/0', /not a pattern/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { direction: 'sideways' } }), '/rateLimits/0/match/direction', /must be one of inbound, outbound/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, match: { cluster: 'web' } }), '/rateLimits/0/match/cluster', /is not a known field/);
  refuses(t, { ...rules({ name: 'a', requestsPerSecond: 1, match: { path: { prefix: '/admin' } } }), http: { normalizePath: false } },
    '/rateLimits/0/match/path', /needs http.normalizePath and http.mergeSlashes on/);
});

t.test('key and maxKeys', async (t) => {
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, key: 'source' }), '/rateLimits/0/key', /must be one of caller/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, key: { header: 'x', attachment: 'y' } }), '/rateLimits/0/key/attachment', /is not a known field/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, key: { header: 'a b' } }), '/rateLimits/0/key/header', /not a valid header name/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, maxKeys: 10 }), '/rateLimits/0/maxKeys', /needs a key/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, key: 'caller', maxKeys: 0 }), '/rateLimits/0/maxKeys', /must be >= 1/);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, key: 'caller', maxKeys: KEY_SLOTS + 1 }), '/rateLimits/0/maxKeys', /must be <= /);
  refuses(t, rules({ name: 'a', requestsPerSecond: 1, key: 'caller', maxKeys: KEY_SLOTS }, { name: 'b', requestsPerSecond: 1, key: 'caller' }),
    '/rateLimits', new RegExp(`maxKeys add up to ${KEY_SLOTS + 1024}, more than the ${KEY_SLOTS} key slots`));
});

t.test('the filter must be in the chain', async (t) => {
  refuses(t, { ...rules({ name: 'a', requestsPerSecond: 1 }), filters: ['authz', 'headers'] }, '/rateLimits', /needs the ratelimit filter in filters/);
  t.ok(buildConfig({ ...base(), filters: ['headers'] }), 'no rules: the filter may be left out');
});
