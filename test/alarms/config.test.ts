/**
 * The `alarms` section: defaults, and every bad value refused with its path.
 */
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { issuesOf, type Doc } from '../helpers/config-issues';

function doc(alarms: unknown[]): Doc {
  return {
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    routes: [{ name: 'orders', match: {}, action: { cluster: 'web' } }, { match: {}, action: { cluster: 'web' } }],
    rateLimits: [{ name: 'api', requestsPerSecond: 10 }],
    alarms,
  };
}

t.test('defaults', async (t) => {
  const c = buildConfig(doc([{ name: 'e', signal: { kind: 'error_ratio', cluster: 'web' }, above: 0.2, action: { kind: 'tighten_rate_limit', rateLimit: 'api' } }]));
  t.same(c.alarms[0], {
    name: 'e', signal: { kind: 'error_ratio', cluster: 'web', baselineMs: 300_000 }, above: 0.2, minRequests: 10, windowMs: 10_000, forMs: 0,
    action: { kind: 'tighten_rate_limit', rateLimit: 'api', forMs: 60_000 },
  });
  t.same(buildConfig(doc([])).alarms, []);
  t.same(buildConfig({ ...doc([]), alarms: undefined }).alarms, [], 'absent: none');
  // a route without a name is named by its place, as in stats
  t.equal(buildConfig(doc([{ name: 'x', signal: { kind: 'cpu_usage' }, above: 0.9, action: { kind: 'degrade_route', route: 'routes[1]' } }])).alarms[0].action?.route, 'routes[1]');
});

t.test('bad alarms are refused with their paths', async (t) => {
  const ok = { name: 'a', signal: { kind: 'error_ratio' }, above: 0.5 };
  const cases: Array<[unknown[], string[]]> = [
    [[{ ...ok, signal: { kind: 'nope' } }], ['/alarms/0/signal/kind']],
    [[{ ...ok, above: undefined }], ['/alarms/0']],
    [[{ ...ok, baselineFactor: 3 }], ['/alarms/0', '/alarms/0/baselineFactor']],
    [[{ ...ok, above: 2 }], ['/alarms/0/above']],
    [[{ ...ok, signal: { kind: 'cpu_usage' }, above: 1.5 }], ['/alarms/0/above']],
    [[{ ...ok, signal: { kind: 'error_ratio', cluster: 'nope' } }], ['/alarms/0/signal/cluster']],
    [[{ ...ok, signal: { kind: 'cpu_usage', cluster: 'web' } }], ['/alarms/0/signal/cluster']],
    [[{ ...ok, signal: { kind: 'error_ratio', protocol: 'http1' } }], ['/alarms/0/signal/protocol']],
    [[{ ...ok, windowMs: 10 }], ['/alarms/0/windowMs']],
    [[{ ...ok, forMs: -1 }], ['/alarms/0/forMs']],
    [[{ ...ok, webhook: 'ftp://x' }], ['/alarms/0/webhook']],
    [[{ ...ok, webhookTimeoutMs: 500 }], ['/alarms/0/webhookTimeoutMs']],
    [[ok, ok], ['/alarms/1/name']],
    [[{ ...ok, action: { kind: 'explode' } }], ['/alarms/0/action/kind']],
    [[{ ...ok, action: { kind: 'tighten_rate_limit', rateLimit: 'nope' } }], ['/alarms/0/action/rateLimit']],
    [[{ ...ok, action: { kind: 'tighten_rate_limit', rateLimit: 'api', factor: 1 } }], ['/alarms/0/action/factor']],
    [[{ ...ok, action: { kind: 'open_breaker', cluster: 'nope' } }], ['/alarms/0/action/cluster']],
    [[{ ...ok, action: { kind: 'degrade_route', route: 'nope' } }], ['/alarms/0/action/route']],
    [[{ ...ok, action: { kind: 'degrade_route' } }], ['/alarms/0/action']],
    [[{ ...ok, action: { kind: 'degrade_route', route: 'orders', cluster: 'web' } }], ['/alarms/0/action/cluster']],
    [[{ ...ok, action: { kind: 'open_breaker', cluster: 'web', forMs: 10 } }], ['/alarms/0/action/forMs']],
  ];
  for (const [alarms, paths] of cases) {
    const got = issuesOf(doc(alarms)).map((i) => i.path);
    for (const p of paths) t.ok(got.includes(p), `${JSON.stringify(alarms)}: ${p} in ${JSON.stringify(got)}`);
    t.ok(got.length > 0);
  }
  const d = doc([{ ...ok, action: { kind: 'tighten_rate_limit', rateLimit: 'api' } }]);
  d.filters = ['authz'];
  t.ok(issuesOf(d).some((i) => i.path === '/alarms/0/action' && /ratelimit filter/.test(i.message)), 'tightening needs the ratelimit filter');
});
