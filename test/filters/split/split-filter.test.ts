/**
 * The split filter on a fake request context: weighted choice by a scripted random, the share
 * over many requests, pinning by a header (same value, same entry; a change of weights moves only
 * the callers between the old and the new boundary), the target it sets (a prepared label
 * subset), the access log note and the per-entry counter by its full name.
 */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';
import { CONTINUE } from '../../../src/exchange/filter';
import { SplitFilter, hashPoint } from '../../../src/filters/split/split-filter';
import { FakeContext, envFor, scripted, view } from '../fake-context';

const CLUSTERS = [
  {
    name: 'orders',
    endpoints: [
      { address: '127.0.0.1:8081', labels: { version: 'v1' } },
      { address: '127.0.0.1:8082', labels: { version: 'v1' } },
      { address: '127.0.0.1:8083', labels: { version: 'v2' } },
    ],
  },
  { name: 'legacy', endpoints: ['127.0.0.1:9090'] },
];

function setup(action: Record<string, unknown>, random: () => number = () => { throw new Error('no draw expected'); }) {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'legacy' }],
    clusters: CLUSTERS,
    routes: [{ name: 'r', action }],
  });
  const env = envFor(config, random);
  const filter = new SplitFilter(env);
  const state = filter.compileRoute(config.routes[0] as unknown as Record<string, unknown>, 'r')!;
  /** Runs one request; returns `cluster{subset}` of its target. */
  const pick = (headers: Record<string, string> = {}, protocol: 'http1' | 'dubbo' = 'http1') => {
    const c = new FakeContext(view(protocol, headers));
    if (filter.onRequest(c, state) !== CONTINUE) throw new Error('split never stops a request');
    return { key: `${c.target!.cluster!.name}{${c.target!.subset}}`, ctx: c };
  };
  const count = (cluster: string, subset: string) => env.value('sluice_split_rq_total', { route: 'r', cluster, subset });
  return { filter, state, pick, count };
}

const V1V2 = [
  { cluster: 'orders', labels: { version: 'v1' }, weight: 90 },
  { cluster: 'orders', labels: { version: 'v2' }, weight: 10 },
];

t.test('weighted choice: the random point falls in an entry\'s range', async (t) => {
  const s = setup({ split: V1V2 }, scripted(0, 0.899, 0.9, 0.999));
  t.same([0, 1, 2, 3].map(() => s.pick().key), ['orders{version=v1}', 'orders{version=v1}', 'orders{version=v2}', 'orders{version=v2}']);
  t.equal(s.count('orders', 'version=v1'), 2);
  t.equal(s.count('orders', 'version=v2'), 2);
});

t.test('the target is a label subset of the cluster, prepared once', async (t) => {
  const s = setup({ split: V1V2 }, scripted(0.95));
  const { ctx } = s.pick();
  t.equal(ctx.target!.kind, 'cluster');
  t.equal(ctx.target!.subset, 'version=v2');
  t.same(ctx.target!.cluster!.subsetEndpoints('version=v2').map((e) => e.key), ['127.0.0.1:8083']);
  t.equal(ctx.notes.split, 'orders{version=v2}', 'the access log names the choice');
  t.same(ctx.replies, []);
});

t.test('entries of different clusters, a whole cluster (no labels), three ways', async (t) => {
  const s = setup({ split: [{ cluster: 'orders', labels: { version: 'v1' }, weight: 1 }, { cluster: 'legacy', weight: 2 }, { cluster: 'orders', weight: 1 }] },
    scripted(0.2, 0.3, 0.74, 0.75, 0.99));
  t.same([0, 1, 2, 3, 4].map(() => s.pick().key), ['orders{version=v1}', 'legacy{}', 'legacy{}', 'orders{}', 'orders{}']);
  const { ctx } = s.pick();
  t.equal(ctx.notes.split, 'orders', 'a whole cluster is noted by its name');
  t.equal(s.count('legacy', ''), 2);
  t.equal(s.count('orders', ''), 3);
});

t.test('90/10 over many requests, at random', async (t) => {
  const s = setup({ split: V1V2 }, Math.random);
  const n = 20_000;
  let v2 = 0;
  for (let i = 0; i < n; i++) if (s.pick().key === 'orders{version=v2}') v2++;
  t.ok(Math.abs(v2 / n - 0.1) < 0.015, `v2 share ${v2 / n}`);
  t.equal(s.count('orders', 'version=v2'), v2);
  t.equal(s.count('orders', 'version=v1'), n - v2);
});

t.test('hashOn: one caller always gets the same entry; callers spread by weight', async (t) => {
  const s = setup({ split: V1V2, hashOn: { header: 'X-User' } });
  const first = new Map<string, string>();
  for (let u = 0; u < 5000; u++) first.set(`user-${u}`, s.pick({ 'x-user': `user-${u}` }).key);
  const moved = [...first].filter(([u, k]) => s.pick({ 'x-user': u }).key !== k).map(([u]) => u);
  t.same(moved, [], 'every caller again on its entry');
  const v2 = [...first.values()].filter((k) => k === 'orders{version=v2}').length;
  t.ok(Math.abs(v2 / 5000 - 0.1) < 0.02, `callers on v2: ${v2 / 5000}`);
  t.equal(s.pick({ 'x-user': 'user-7' }, 'dubbo').key, first.get('user-7'), 'the same value as a Dubbo attachment gets the same entry');
});

t.test('hashOn: a request without the header is split at random', async (t) => {
  const s = setup({ split: V1V2, hashOn: { header: 'x-user' } }, scripted(0.95, 0.05));
  t.equal(s.pick().key, 'orders{version=v2}');
  t.equal(s.pick().key, 'orders{version=v1}');
});

t.test('hashOn: a change of weights moves only the callers between the boundaries', async (t) => {
  const before = setup({ split: V1V2, hashOn: { header: 'x-user' } });
  const after = setup({ split: [{ ...V1V2[0], weight: 80 }, { ...V1V2[1], weight: 20 }], hashOn: { header: 'x-user' } });
  let moved = 0;
  for (let u = 0; u < 5000; u++) {
    const h = { 'x-user': `u${u}` };
    const a = before.pick(h).key;
    const b = after.pick(h).key;
    if (a === 'orders{version=v2}' && b !== a) t.fail(`u${u} left v2`);
    if (a !== b) moved++;
  }
  t.ok(Math.abs(moved / 5000 - 0.1) < 0.02, `moved ${moved / 5000}, about the 10% between 80 and 90`);
});

t.test('the hash is stable: the same value has the same point in every version', async (t) => {
  // pinned: a changed hash would move every pinned caller on upgrade
  t.equal(hashPoint(''), 0.6689221884589642);
  t.equal(hashPoint('user-1'), 0.4670340372249484);
  t.equal(hashPoint('user-2'), 0.1986513624433428);
  for (const v of ['', 'a', 'user-1', 'é']) t.ok(hashPoint(v) >= 0 && hashPoint(v) < 1);
});

t.test('a route without split does not meet the filter', async (t) => {
  const s = setup({ cluster: 'legacy' });
  t.equal(s.state, null);
});
