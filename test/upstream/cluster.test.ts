/**
 * Load balancing in ClusterRuntime: round robin, smooth weighted round robin, least request
 * (power of two choices), label subsets with their own state, and `avoid` on retry.
 */
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { ClusterRuntime, type Endpoint } from '../../src/upstream/cluster';

function cluster(def: Record<string, unknown>, random?: () => number): ClusterRuntime {
  const config = buildConfig({
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', ...def }],
  });
  const registry = new StatsRegistry();
  registry.addCluster('c');
  return new ClusterRuntime(config.clusters[0], new Stats(new SharedState(), registry.keys), random);
}

function count(c: ClusterRuntime, n: number, subset = '', avoid?: Endpoint): Map<string, number> {
  const seen = new Map<string, number>();
  for (const ep of c.endpoints) seen.set(ep.key, 0);
  for (let i = 0; i < n; i++) {
    const ep = c.pick(subset, avoid)!;
    seen.set(ep.key, seen.get(ep.key)! + 1);
  }
  return seen;
}

const port = (ep: Endpoint | undefined) => ep?.port;

t.test('endpoints: address, key, labels and weight defaults', async (t) => {
  const c = cluster({ endpoints: ['127.0.0.1:8080', { address: '[::1]:8081', labels: { g: 'a' }, weight: 3 }, { address: 'Svc.Local:80' }] });
  t.same(c.endpoints.map((e) => [e.host, e.port, e.key, e.labels, e.weight, e.active]), [
    ['127.0.0.1', 8080, '127.0.0.1:8080', {}, 1, 0],
    ['::1', 8081, '::1:8081', { g: 'a' }, 3, 0],
    ['svc.local', 80, 'svc.local:80', {}, 1, 0],
  ]);
  t.ok(c.stats.rqTotal >= 0, 'stat slots resolved for the cluster');
});

t.test('round robin spreads evenly, visiting every endpoint once per cycle', async (t) => {
  const c = cluster({ endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] });
  for (let cycle = 0; cycle < 10; cycle++) {
    const ports = [port(c.pick('')), port(c.pick('')), port(c.pick(''))];
    t.same([...ports].sort(), [1, 2, 3], `cycle ${cycle}: ${ports}`);
  }
  t.same([...count(c, 300).values()], [100, 100, 100]);
});

t.test('round robin starts where `random` says (workers do not all start on the first)', async (t) => {
  const eps = ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'];
  t.equal(port(cluster({ endpoints: eps }, () => 0).pick('')), 1);
  t.equal(port(cluster({ endpoints: eps }, () => 0.5).pick('')), 2);
  t.equal(port(cluster({ endpoints: eps }, () => 0.99999).pick('')), 3);
});

t.test('smooth weighted round robin: exact proportions per cycle, spread out', async (t) => {
  const c = cluster({
    endpoints: [{ address: '127.0.0.1:1', weight: 5 }, { address: '127.0.0.1:2', weight: 1 }, { address: '127.0.0.1:3', weight: 1 }],
  });
  const seq = Array.from({ length: 7 }, () => port(c.pick('')));
  t.same(seq, [1, 1, 2, 1, 3, 1, 1], 'the nginx sequence for 5:1:1');
  for (let cycle = 0; cycle < 5; cycle++) t.same([...count(c, 7).values()], [5, 1, 1], `cycle ${cycle}`);
  const c2 = cluster({
    endpoints: [{ address: '127.0.0.1:1', weight: 3 }, { address: '127.0.0.1:2', weight: 2 }, '127.0.0.1:3'],
  });
  t.same([...count(c2, 600).values()], [300, 200, 100], 'a string endpoint weighs 1');
  // never the same endpoint twice in a row when its weight is at most the others' sum
  const c3 = cluster({ endpoints: [{ address: '127.0.0.1:1', weight: 2 }, { address: '127.0.0.1:2', weight: 2 }, { address: '127.0.0.1:3', weight: 1 }] });
  let prev: number | undefined;
  for (let i = 0; i < 50; i++) {
    const p = port(c3.pick(''));
    t.not(p, prev, `pick ${i}`);
    prev = p;
  }
});

t.test('label subsets balance on their own, without skewing each other', async (t) => {
  const c = cluster({
    endpoints: [
      { address: '127.0.0.1:1', labels: { g: 'a' } },
      { address: '127.0.0.1:2', labels: { g: 'a' } },
      { address: '127.0.0.1:3', labels: { g: 'b' } },
      { address: '127.0.0.1:4', labels: { g: 'b' } },
    ],
  });
  c.prepareSubset('g=a', { g: 'a' });
  c.prepareSubset('g=none', { g: 'none' });
  t.same(c.subsetEndpoints('g=a').map((e) => e.port), [1, 2]);
  const all = new Map<number, number>();
  const sub = new Map<number, number>();
  for (let i = 0; i < 400; i++) {
    // interleaved: one pick from the subset, one from the whole cluster
    const a = port(c.pick('g=a'))!;
    sub.set(a, (sub.get(a) ?? 0) + 1);
    const b = port(c.pick(''))!;
    all.set(b, (all.get(b) ?? 0) + 1);
  }
  t.same([...sub.entries()].sort(), [[1, 200], [2, 200]]);
  t.same([...all.entries()].sort(), [[1, 100], [2, 100], [3, 100], [4, 100]]);
  t.equal(c.pick('g=none'), undefined, 'an empty subset has nothing to pick');
});

t.test('weighted subsets keep exact proportions while the whole cluster is used too', async (t) => {
  const c = cluster({
    endpoints: [
      { address: '127.0.0.1:1', labels: { g: 'a' }, weight: 3 },
      { address: '127.0.0.1:2', labels: { g: 'a' }, weight: 1 },
      { address: '127.0.0.1:3', weight: 4 },
    ],
  });
  c.prepareSubset('g=a', { g: 'a' });
  const sub = new Map<number, number>();
  for (let i = 0; i < 40; i++) {
    const p = port(c.pick('g=a'))!;
    sub.set(p, (sub.get(p) ?? 0) + 1);
    c.pick('');
  }
  t.same([...sub.entries()].sort(), [[1, 30], [2, 10]]);
});

t.test('least_request prefers the endpoint with fewer active requests', async (t) => {
  const two = cluster({ lbPolicy: 'least_request', endpoints: ['127.0.0.1:1', '127.0.0.1:2'] });
  two.endpoints[0].active = 3;
  two.endpoints[1].active = 1;
  t.same([...count(two, 100).values()], [0, 100], 'with two endpoints both are always compared');
  two.endpoints[1].active = 7;
  t.same([...count(two, 100).values()], [100, 0]);
  two.endpoints[0].active = 2;
  two.endpoints[1].active = 2;
  const even = count(two, 400);
  t.ok(even.get('127.0.0.1:1')! > 100 && even.get('127.0.0.1:2')! > 100, `ties are broken at random: ${[...even.values()]}`);

  // with more endpoints, two random choices: the busiest is never picked, the idlest most often
  const four = cluster({ lbPolicy: 'least_request', endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3', '127.0.0.1:4'] });
  [0, 4, 8, 12].forEach((a, i) => { four.endpoints[i].active = a; });
  const seen = count(four, 1200);
  t.equal(seen.get('127.0.0.1:4'), 0, 'the busiest endpoint loses every comparison');
  const [idle, low, mid] = [seen.get('127.0.0.1:1')!, seen.get('127.0.0.1:2')!, seen.get('127.0.0.1:3')!];
  t.ok(idle > low && low > mid, `idle ${idle} > ${low} > ${mid}`);
});

t.test('least_request: every pair is sampled, the comparison decides (deterministic random)', async (t) => {
  // random() returns these in turn; with 3 endpoints the two draws map to distinct indexes
  const draws = [0.1, 0.9, 0.9, 0.1, 0.5, 0.0];
  let k = 0;
  const c = cluster({ lbPolicy: 'least_request', endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] }, () => draws[k++ % draws.length]);
  c.endpoints[0].active = 5;
  c.endpoints[1].active = 0;
  c.endpoints[2].active = 1;
  k = 0; // the constructor's round-robin start used a draw
  t.equal(port(c.pick('')), 3, 'endpoints 1 and 3: 3 has fewer');
  t.equal(port(c.pick('')), 3, 'endpoints 3 and 1: same answer whichever is drawn first');
  t.equal(port(c.pick('')), 2, 'endpoints 2 and 1: 2 is idle');
});

t.test('least_request weighs by weight: (active + 1) / weight', async (t) => {
  const c = cluster({ lbPolicy: 'least_request', endpoints: [{ address: '127.0.0.1:1', weight: 4 }, '127.0.0.1:2'] });
  c.endpoints[0].active = 2; // (2+1)/4 = 0.75 against (0+1)/1 = 1
  c.endpoints[1].active = 0;
  t.same([...count(c, 50).values()], [50, 0]);
  c.endpoints[0].active = 4; // 5/4 > 1
  t.same([...count(c, 50).values()], [0, 50]);
});

t.test('pick(subset, avoid) avoids the failed endpoint when there is a choice', async (t) => {
  const rr = cluster({ endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] });
  for (const bad of rr.endpoints) {
    const seen = count(rr, 90, '', bad);
    t.equal(seen.get(bad.key), 0, `round robin never returns ${bad.key}`);
    t.equal([...seen.values()].reduce((a, b) => a + b), 90);
  }
  const wrr = cluster({ endpoints: [{ address: '127.0.0.1:1', weight: 10 }, { address: '127.0.0.1:2', weight: 1 }, { address: '127.0.0.1:3', weight: 1 }] });
  t.equal(count(wrr, 60, '', wrr.endpoints[0]).get('127.0.0.1:1'), 0, 'weighted: even the heaviest endpoint is avoided');
  const lr = cluster({ lbPolicy: 'least_request', endpoints: ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'] });
  lr.endpoints[1].active = 100;
  lr.endpoints[2].active = 100;
  t.equal(count(lr, 60, '', lr.endpoints[0]).get('127.0.0.1:1'), 0, 'least_request: the idle but failed endpoint is avoided');
  const one = cluster({ endpoints: ['127.0.0.1:1'] });
  t.equal(one.pick('', one.endpoints[0]), one.endpoints[0], 'no choice: the only endpoint');
  const labelled = cluster({ endpoints: [{ address: '127.0.0.1:1', labels: { g: 'a' } }, { address: '127.0.0.1:2', labels: { g: 'a' } }, '127.0.0.1:3'] });
  labelled.prepareSubset('g=a', { g: 'a' });
  t.same([...count(labelled, 20, 'g=a', labelled.endpoints[0]).entries()], [['127.0.0.1:1', 0], ['127.0.0.1:2', 20], ['127.0.0.1:3', 0]], 'avoiding stays inside the subset');
});

t.test('weight 0 (a Dubbo provider weighed out) takes nothing while another has weight; all 0 share alike', async (t) => {
  const c = cluster({ endpoints: ['127.0.0.1:1'] });
  c.setEndpoints([
    { address: '127.0.0.1:1', labels: { group: 'a' }, weight: 0 },
    { address: '127.0.0.1:2', labels: { group: 'a' }, weight: 100 },
    { address: '127.0.0.1:3', labels: { group: 'b' }, weight: 0 },
    { address: '127.0.0.1:4', labels: { group: 'b' }, weight: 0 },
  ]);
  c.prepareSubsetWhere('a', (l) => l.group === 'a');
  c.prepareSubsetWhere('b', (l) => l.group === 'b');
  const a = count(c, 20, 'a');
  t.same([a.get('127.0.0.1:1'), a.get('127.0.0.1:2')], [0, 20], 'only the provider with weight');
  const b = count(c, 20, 'b');
  t.same([b.get('127.0.0.1:3'), b.get('127.0.0.1:4')], [10, 10], 'all zero: round robin over both');
  // a subset chosen by a test follows the endpoints as they change
  c.setEndpoints([{ address: '127.0.0.1:5', labels: { group: 'a' }, weight: 1 }]);
  t.same(count(c, 3, 'a').get('127.0.0.1:5'), 3);
  t.same(c.subsetEndpoints('b'), []);
});
