/**
 * The endpoint mailbox: what the writer sets is what every reader gets, each reader unpacks only
 * the lists it has not seen, a cleared list comes back as null, and a reader that starts late
 * gets the whole directory. Then ClusterRuntime.setEndpoints: subsets rebuilt, objects of
 * endpoints that stay kept (their in-flight count stays true), removed keys reported.
 */
import t from 'tap';
import type { ClusterConfig, EndpointConfig } from '../../src/config/config';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { ClusterRuntime } from '../../src/upstream/cluster';
import { ENDPOINT_CONTROL, EndpointDirectory, EndpointReader } from '../../src/upstream/endpoint-directory';

const eps = (n: number, port = 8000, labels: Record<string, string> = {}): EndpointConfig[] =>
  Array.from({ length: n }, (_, i) => ({ address: `10.0.${Math.floor(i / 250)}.${i % 250}:${port}`, labels, weight: 1 }));

t.test('the mailbox: set, read by every reader, only changes unpacked, clear, late readers', async (t) => {
  const shared = new SharedState();
  const dir = new EndpointDirectory(shared.memory);
  const r1 = new EndpointReader(shared.memory);
  t.same([...r1.poll()], [], 'nothing published: nothing changes');

  dir.set('a', eps(3));
  dir.set('b', eps(2, 9000));
  t.same([...r1.poll()], [], 'not published before the end of the turn');
  dir.flush();
  const first = r1.poll();
  t.same([...first.keys()].sort(), ['a', 'b']);
  t.same(first.get('a'), eps(3));
  t.same(r1.endpoints('b'), eps(2, 9000));
  t.same([...r1.poll()], [], 'read once');

  dir.set('b', eps(5, 9000));
  dir.flush();
  const second = r1.poll();
  t.same([...second.keys()], ['b'], 'only the list that changed');
  t.equal((second.get('b') as unknown[]).length, 5);

  dir.set('a', null);
  dir.flush();
  const third = r1.poll();
  t.same([...third.entries()], [['a', null]], 'cleared: back to the config list');
  t.equal(r1.endpoints('a'), undefined);

  dir.set('a', eps(3));
  dir.flush();
  t.same([...r1.poll().keys()], ['a'], 'set again after a clear: seen as new even with the same content');

  const late = new EndpointReader(shared.memory);
  const all = late.poll();
  t.same([...all.keys()].sort(), ['a', 'b'], 'a reader started later gets every list');
  t.equal((all.get('b') as unknown[]).length, 5);

  dir.retain(new Set(['b']));
  dir.flush();
  t.same([...r1.poll().entries()], [['a', null]], 'a cluster the config dropped is dropped');
  t.same(dir.clusters(), ['b']);
  t.equal(dir.get('b')!.endpoints.length, 5);
});

t.test('many changes in one turn publish once', async (t) => {
  const shared = new SharedState();
  const dir = new EndpointDirectory(shared.memory);
  const seq0 = Atomics.load(shared.memory.region(ENDPOINT_CONTROL), 0);
  for (let i = 0; i < 100; i++) dir.set(`c${i}`, eps(2));
  await new Promise((r) => setImmediate(r));
  t.equal(Atomics.load(shared.memory.region(ENDPOINT_CONTROL), 0) - seq0, 2, 'one publish (seq +2) for 100 changes');
  const r = new EndpointReader(shared.memory);
  t.equal(r.poll().size, 100);
});

t.test('a list too large for the mailbox is refused when set; the lists in force stay', async (t) => {
  const control = new Int32Array(new SharedArrayBuffer(8));
  const bytes = new Uint8Array(new SharedArrayBuffer(4096));
  const dir = new EndpointDirectory({ control, bytes });
  dir.set('a', eps(2));
  dir.flush();
  t.throws(() => dir.set('b', eps(500)), { code: 'ERR_ENDPOINTS_TOO_LARGE' });
  t.throws(() => dir.set('a', eps(500)), { code: 'ERR_ENDPOINTS_TOO_LARGE' });
  t.same(dir.clusters(), ['a'], 'b was not taken');
  // fill it close to the brim with lists that fit: every publish succeeds
  let i = 0;
  for (;;) {
    try { dir.set(`c${i++}`, eps(3)); } catch { break; }
  }
  t.doesNotThrow(() => dir.flush(), 'what set() took always publishes');
  t.equal(control[0] % 2, 0, 'the seqlock is left even');
  const r = new EndpointReader({ control, bytes });
  const got = r.poll();
  t.equal((got.get('a') as unknown[]).length, 2, 'a keeps its list');
  t.equal(got.size, dir.clusters().length);
});

t.test('setEndpoints: subsets rebuilt, surviving endpoints keep their objects, removed keys reported', async (t) => {
  const reg = new StatsRegistry();
  reg.addCluster('c');
  const stats = new Stats(new SharedState(), reg.keys);
  const config: ClusterConfig = {
    name: 'c', protocol: 'auto', lbPolicy: 'round_robin', connectTimeoutMs: 1000, maxConnectionsPerEndpoint: 10, maxPendingRequests: 10,
    endpoints: [
      { address: '127.0.0.1:1', labels: { v: '1' }, weight: 1 },
      { address: '127.0.0.1:2', labels: { v: '2' }, weight: 1 },
    ],
  };
  const c = new ClusterRuntime(config, stats, () => 0);
  c.prepareSubset('v2', { v: '2' });
  const kept = c.endpoints[1];
  kept.active = 3;
  const gone = c.setEndpoints([
    { address: '127.0.0.1:2', labels: { v: '2' }, weight: 1 },
    { address: '127.0.0.1:3', labels: { v: '2' }, weight: 1 },
    { address: '127.0.0.1:4', labels: { v: '1' }, weight: 1 },
  ]);
  t.same(gone, ['127.0.0.1:1']);
  t.equal(c.endpoints[0], kept, 'the endpoint that stayed is the same object');
  t.equal(c.endpoints[0].active, 3, 'with its requests in flight');
  t.same(c.subsetEndpoints('v2').map((e) => e.key), ['127.0.0.1:2', '127.0.0.1:3'], 'the subset follows the new list');
  const picked = new Set(Array.from({ length: 6 }, () => c.pick('v2')!.key));
  t.same([...picked].sort(), ['127.0.0.1:2', '127.0.0.1:3'], 'picks come from the new subset');

  c.setEndpoints([{ address: '127.0.0.1:2', labels: { v: '3' }, weight: 1 }]);
  t.not(c.endpoints[0], kept, 'new labels: a new endpoint object');
  t.same(c.subsetEndpoints('v2'), [], 'the subset is empty');
  t.equal(c.pick('v2'), undefined, 'nothing to pick');
  t.same(c.setEndpoints(null), [], 'back to the config list');
  t.same(c.endpoints.map((e) => e.key), ['127.0.0.1:1', '127.0.0.1:2']);
});
