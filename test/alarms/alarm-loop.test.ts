/**
 * The alarm loop on a fake clock over real shared stats: it samples the counters workers add to,
 * POSTs its webhook (faked here), sets and clears the override words workers read, keeps an
 * unchanged alarm's state across a reload, and shows it all in its views.
 */
import t from 'tap';
import { AlarmLoop } from '../../src/alarms/alarm-loop';
import { attachOverrides, FACTOR_UNIT } from '../../src/alarms/overrides';
import { buildConfig, type SluiceConfig } from '../../src/config/config';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';

function configOf(alarms: unknown[]): SluiceConfig {
  return buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'orders' }],
    clusters: [{ name: 'orders', endpoints: ['127.0.0.1:8080'] }],
    routes: [{ name: 'orders', match: {}, action: { cluster: 'orders' } }],
    rateLimits: [{ name: 'api', requestsPerSecond: 100 }],
    alarms,
  });
}

function setup() {
  const registry = new StatsRegistry();
  registry.addCluster('orders');
  const shared = new SharedState();
  const stats = new Stats(shared, registry.keys);
  const clock = { now: 1_000_000 };
  const posts: Array<{ url: string; body: Record<string, unknown> }> = [];
  // the loop's own timer never fires during a test: ticks are driven by hand
  const loop = new AlarmLoop(shared.memory, () => stats, {
    intervalMs: 2e9,
    now: () => clock.now,
    post: async (url, body) => { posts.push({ url, body: JSON.parse(body) }); },
  });
  t.teardown(() => loop.stop());
  const calls = (n: number, failed: number) => {
    stats.add(stats.slot('sluice_upstream_rq_total', { cluster: 'orders' }), n);
    stats.add(stats.slot('sluice_upstream_rq_xx_total', { cluster: 'orders', class: '5xx' }), failed);
  };
  const tick = () => { clock.now += 1000; loop.tick(); };
  return { loop, clock, posts, calls, tick, shared };
}

const errors = (action: unknown, extra: Record<string, unknown> = {}) => ({
  name: 'orders-errors', signal: { kind: 'error_ratio', cluster: 'orders' }, above: 0.2, windowMs: 2000,
  webhook: 'http://127.0.0.1:1/hook', action, ...extra,
});

t.test('fires from the shared counters: webhook, metrics, override word on; resolves, then off after forMs', async (t) => {
  const { loop, posts, calls, tick, shared } = setup();
  const config = configOf([errors({ kind: 'degrade_route', route: 'orders', forMs: 3000 })]);
  const table = loop.publish(config.alarms);
  loop.apply(config.alarms);
  const o = attachOverrides(shared.memory, table);
  const word = o.wordOf('route', 'orders');
  t.ok(word >= 0, 'the route has a word');
  t.equal(o.wordOf('route', 'other'), -1, 'a target no alarm names has none');
  tick();
  calls(50, 0); tick();
  t.equal(Atomics.load(o.view, word), 0);
  calls(50, 40); tick();
  t.equal(Atomics.load(o.view, word), 1, 'degraded');
  t.equal(posts.length, 1);
  t.match(posts[0], { url: 'http://127.0.0.1:1/hook', body: { alarm: 'orders-errors', state: 'firing', threshold: 0.2, action: { kind: 'degrade_route', route: 'orders', forMs: 3000 } } });
  t.equal(posts[0].body.value, 0.4);
  t.match(loop.render(), /sluice_alarm_firing\{alarm="orders-errors"\} 1\n/);
  t.match(loop.render(), /sluice_alarm_actions_total\{alarm="orders-errors",action="degrade_route"\} 1\n/);
  const v = loop.view();
  t.match(v.alarms[0], { name: 'orders-errors', state: 'firing', value: 0.4, threshold: 0.2, actionActive: true });
  t.equal(v.actions.length, 1);
  // traffic refused before the upstream: no calls, no value, resolved; the action holds for forMs
  tick();
  tick();
  t.equal(posts.length, 2);
  t.match(posts[1].body, { state: 'resolved', alarm: 'orders-errors' });
  t.equal(Atomics.load(o.view, word), 1, 'held until forMs passed');
  tick();
  t.equal(Atomics.load(o.view, word), 0, 'off 3 s after it fired');
  t.match(loop.render(), /sluice_alarm_firing\{alarm="orders-errors"\} 0\n/);
  t.same(loop.view().actions, []);
});

t.test('tighten_rate_limit writes the factor; a reload that keeps the alarm keeps its state, one that changes it switches its action off', async (t) => {
  const { loop, calls, tick, shared } = setup();
  const config = configOf([errors({ kind: 'tighten_rate_limit', rateLimit: 'api', factor: 0.25, forMs: 60_000 })]);
  let o = attachOverrides(shared.memory, loop.publish(config.alarms));
  loop.apply(config.alarms);
  tick();
  calls(20, 20); tick();
  const word = o.wordOf('rateLimit', 'api');
  t.equal(Atomics.load(o.view, word), 0.25 * FACTOR_UNIT);
  // the same alarm in a new config (another alarm added): still firing, still tightened
  const again = configOf([...config.alarms, { name: 'cpu', signal: { kind: 'cpu_usage' }, above: 0.99 }]);
  o = attachOverrides(shared.memory, loop.publish(again.alarms));
  loop.apply(again.alarms);
  t.equal(o.wordOf('rateLimit', 'api'), word, 'the target keeps its word');
  t.equal(Atomics.load(o.view, word), 0.25 * FACTOR_UNIT);
  t.match(loop.view().alarms[0], { state: 'firing', actionActive: true });
  // changed rule: a new state, the action off
  const changed = configOf([{ ...errors({ kind: 'tighten_rate_limit', rateLimit: 'api', factor: 0.25, forMs: 60_000 }), above: 0.3 }]);
  loop.publish(changed.alarms);
  loop.apply(changed.alarms);
  t.equal(Atomics.load(o.view, word), 0);
  t.match(loop.view().alarms[0], { state: 'ok', actionActive: false, fired: 0 });
  // no alarms: the word is freed and cleared
  loop.publish([]);
  loop.apply([]);
  t.equal(loop.render(), '');
});

t.test('a failing webhook is counted and logged, never thrown', async (t) => {
  const registry = new StatsRegistry();
  registry.addCluster('orders');
  const shared = new SharedState();
  const stats = new Stats(shared, registry.keys);
  let now = 0;
  const loop = new AlarmLoop(shared.memory, () => stats, { intervalMs: 2e9, now: () => now, post: () => Promise.reject(new Error('connection refused')) });
  t.teardown(() => loop.stop());
  const config = configOf([errors(undefined)]);
  loop.publish(config.alarms);
  loop.apply(config.alarms);
  now += 1000; loop.tick();
  stats.add(stats.slot('sluice_upstream_rq_total', { cluster: 'orders' }), 20);
  stats.add(stats.slot('sluice_upstream_rq_xx_total', { cluster: 'orders', class: '5xx' }), 20);
  now += 1000; loop.tick();
  await new Promise((r) => setImmediate(r));
  t.match(loop.render(), /sluice_alarm_webhook_failures_total\{alarm="orders-errors"\} 1\n/);
  t.same((loop.view().alarms[0] as { webhook: unknown }).webhook, { origin: 'http://127.0.0.1:1', sent: 1, failed: 1 }, 'the URL\'s origin only');
});
