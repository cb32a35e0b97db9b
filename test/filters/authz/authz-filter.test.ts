/**
 * The authz filter on a fake request context: the reply a denied request gets, the counters by
 * rule, the access log notes, shadow lines sampled per rule on a fake clock, and a filter with no
 * rules that is in no chain.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import { CONTINUE, STOP } from '../../../src/exchange/filter';
import type { RequestView } from '../../../src/exchange/request-view';
import { AuthzFilter, SHADOW_LOG_INTERVAL_MS } from '../../../src/filters/authz/authz-filter';
import { Policy, type AuthorizationRule } from '../../../src/filters/authz/policy';
import { createFilters } from '../../../src/filters';
import { FakeContext, envFor, view } from '../fake-context';

function setup(rules: Array<Record<string, unknown>>) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'] }],
    authorization: rules,
  });
  const env = envFor(config);
  const lines: Array<Record<string, unknown>> = [];
  let now = 0;
  const filter = new AuthzFilter(Policy.compile(config.authorization as AuthorizationRule[]), env.stats, (f) => lines.push(f), () => now);
  const count = (name: string, rule: string) => env.value(`sluice_authz_${name}_total`, { rule });
  return { filter, env, lines, count, advance: (ms: number) => { now += ms; } };
}

const from = (address: string, extra: Partial<RequestView> = {}): RequestView => ({ ...view('http1'), source: { address, port: 1 }, ...extra });

t.test('denied: DENIED reply, counted by rule, noted for the access log', async (t) => {
  const { filter, count } = setup([{ name: 'lan-only', action: 'allow', sourceRanges: ['10.0.0.0/8'] }, { name: 'no-9', action: 'deny', sourceRanges: ['10.9.0.0/16'] }]);
  const ctx = new FakeContext(from('10.9.0.1'));
  t.equal(filter.onRequest(ctx), STOP);
  t.same(ctx.replies, [{ status: 403, reason: 'denied', body: 'access denied\n', grpcStatus: 7 }]);
  t.same(ctx.notes, { authz: 'denied', authzRule: 'no-9' });
  const out = new FakeContext(from('192.0.2.1'));
  t.equal(filter.onRequest(out), STOP);
  t.same(out.notes, { authz: 'denied', authzRule: 'default_deny' });
  const ok = new FakeContext(from('10.1.0.1'));
  t.equal(filter.onRequest(ok), CONTINUE);
  t.same(ok.replies, []);
  t.same(ok.notes, {}, 'an allowed request gets no note');
  t.equal(count('denied', 'no-9'), 1);
  t.equal(count('denied', 'default_deny'), 1);
  t.equal(count('allowed', 'lan-only'), 1);
  t.equal(count('allowed', 'no-9'), 0);
  t.equal(count('shadow_denied', 'no-9'), 0);
});

t.test('shadow: let through, counted, noted, one line per rule per interval that says how many it stands for', async (t) => {
  const { filter, count, lines, advance } = setup([
    { name: 'try-a', action: 'deny', mode: 'shadow', sourceRanges: ['10.0.0.0/8'] },
    { name: 'try-b', action: 'deny', mode: 'shadow', sourceRanges: ['192.0.2.0/24'] },
  ]);
  for (let i = 0; i < 5; i++) {
    const ctx = new FakeContext(from('10.0.0.1'));
    t.equal(filter.onRequest(ctx), CONTINUE);
    t.same(ctx.notes, { authz: 'shadow_denied', authzRule: 'try-a' });
  }
  t.equal(filter.onRequest(new FakeContext(from('192.0.2.9'))), CONTINUE);
  t.equal(count('shadow_denied', 'try-a'), 5);
  t.equal(count('shadow_denied', 'try-b'), 1);
  t.equal(count('allowed', 'default_allow'), 6, 'each was allowed');
  t.equal(count('denied', 'try-a'), 0);
  t.same(lines.map((l) => [l.rule, l.requests, l.source]), [['try-a', 1, '10.0.0.1'], ['try-b', 1, '192.0.2.9']], 'the first of each rule at once, then quiet');
  advance(SHADOW_LOG_INTERVAL_MS);
  filter.onRequest(new FakeContext(from('10.0.0.2')));
  t.same(lines.slice(2).map((l) => [l.rule, l.requests, l.source]), [['try-a', 5, '10.0.0.2']], 'then one that stands for the 4 held back and itself');
  t.match(lines[0], { protocol: 'http1', direction: 'outbound', listener: 'app', service: 'orders', method: 'GET', path: '/' });
});

t.test('no rules: the filter is in no chain; with rules it runs on every request', async (t) => {
  const none = setup([]);
  t.equal(none.filter.global, false);
  const some = setup([{ action: 'deny', path: { exact: '/x' } }]);
  t.equal(some.filter.global, true);
  const config = buildConfig({ admin: { address: '127.0.0.1:0' }, authorization: [{ action: 'deny' }] });
  t.same(createFilters(config.filters, envFor(config)).filter((f) => f.global).map((f) => f.name), ['authz'], 'created from the config section');
});
