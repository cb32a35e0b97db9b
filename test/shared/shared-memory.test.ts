import path from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { CACHE_LINE, layoutOf, RegionRegistry, SharedMemory, type Region, type RegionSpec } from '../../src/shared/shared-memory';
import { SharedState } from '../../src/shared/shared-state';
import { FdOwnership } from '../../src/shared/fd-ownership';
import { counters } from '../../src/stats/stats';

const SPECS: RegionSpec[] = [
  { name: 'limits.tokens', kind: 'bigint64', count: 3 },
  { name: 'health.hosts', kind: 'int32', count: 5 },
  { name: 'a.bytes', kind: 'uint8', count: 7 },
  { name: 'page', kind: 'float64', count: 2, align: 4096 },
];

function registryOf(specs: RegionSpec[]): { registry: RegionRegistry; regions: Region[] } {
  const registry = new RegionRegistry();
  return { registry, regions: specs.map((s) => registry.declare(s)) };
}

t.test('the layout does not depend on the order regions were declared in', async (t) => {
  const tables = [SPECS, [...SPECS].reverse(), [SPECS[2], SPECS[0], SPECS[3], SPECS[1]]].map((specs) => registryOf(specs).registry.layout());
  t.same(tables[1], tables[0]);
  t.same(tables[2], tables[0]);
  // by name, each at the next multiple of its alignment
  t.same(tables[0].regions.map((r) => [r.name, r.offset]), [
    ['a.bytes', 0],
    ['health.hosts', 64],
    ['limits.tokens', 128],
    ['page', 4096],
  ]);
  t.equal(tables[0].bytes, 4096 + 64, 'the total is rounded up to a cache line');
});

t.test('every region starts on its alignment: a cache line by default, more when asked', async (t) => {
  const { registry } = registryOf([
    { name: 'b', kind: 'uint8', count: 1 },
    { name: 'c', kind: 'bigint64', count: 1 },
    { name: 'd', kind: 'int32', count: 1, align: 4 },
    { name: 'e', kind: 'uint8', count: 1, align: 1 },
    { name: 'f', kind: 'int32', count: 1, align: 8192 },
  ]);
  const table = registry.layout();
  for (const r of table.regions) {
    t.equal(r.offset % r.align, 0, `${r.name} at ${r.offset} is aligned to ${r.align}`);
  }
  t.same(table.regions.map((r) => r.align), [CACHE_LINE, CACHE_LINE, 4, 1, 8192]);
  t.same(table.regions.map((r) => r.offset), [0, 64, 72, 76, 8192], 'a region that asks for less packs tightly');
  const bad = (spec: RegionSpec) => t.throws(() => new RegionRegistry().declare(spec), { code: 'ERR_SHARED_REGION_SPEC' }, JSON.stringify(spec));
  bad({ name: 'x', kind: 'int32', count: 1, align: 2 }); // below the element size
  bad({ name: 'x', kind: 'bigint64', count: 1, align: 4 });
  bad({ name: 'x', kind: 'uint8', count: 1, align: 48 }); // not a power of two
  bad({ name: 'x', kind: 'uint8', count: 0 });
  bad({ name: 'x', kind: 'uint8', count: 1.5 });
  bad({ name: 'Bad Name', kind: 'uint8', count: 1 });
  bad({ name: 'x', kind: 'int16' as 'int32', count: 1 });
  bad({ name: 'x', kind: 'bigint64', count: 2 ** 28 }); // 2 GiB
});

t.test('a region is declared once: the same shape again is the same region, another shape is an error', async (t) => {
  const registry = new RegionRegistry();
  const a = registry.declare({ name: 'x', kind: 'int32', count: 4 });
  t.equal(registry.declare({ name: 'x', kind: 'int32', count: 4 }), a);
  t.throws(() => registry.declare({ name: 'x', kind: 'int32', count: 5 }), { code: 'ERR_SHARED_REGION_CONFLICT', message: /"x" is declared twice/ });
  t.throws(() => layoutOf([a, a]), { code: 'ERR_SHARED_REGION_CONFLICT' });
});

t.test('a region declared after the layout was made is refused at once', async (t) => {
  const registry = new RegionRegistry();
  registry.declare({ name: 'early', kind: 'int32', count: 1 });
  SharedMemory.create(registry);
  t.throws(() => registry.declare({ name: 'late', kind: 'int32', count: 1 }), { code: 'ERR_SHARED_REGION_LATE', message: /"late"/ });
  t.ok(registry.declare({ name: 'early', kind: 'int32', count: 1 }), 'declaring an existing one again is fine');
});

t.test('attach by name: another declaration order, a subset of the regions, the same memory', async (t) => {
  const main = registryOf(SPECS);
  const memory = SharedMemory.create(main.registry);
  // a "worker" that imported the modules in another order, and not all of them
  const other = registryOf([SPECS[3], SPECS[1]]);
  const attached = SharedMemory.attach(memory.handle);
  const [page, hosts] = other.regions;
  attached.region(hosts as Region<'int32'>)[4] = 42;
  (attached.region(page as Region<'float64'>))[1] = 2.5;
  t.equal(memory.region(main.regions[1] as Region<'int32'>)[4], 42, 'written through one view, read through the other');
  t.equal(memory.region(main.regions[3] as Region<'float64'>)[1], 2.5);
  t.equal(attached.region(hosts), attached.region(hosts), 'one view per region and thread');
  t.equal(attached.region(page).buffer as unknown, memory.buffer as unknown, 'same buffer');
});

t.test('a region the table lacks is a loud error naming it; so is one of another shape', async (t) => {
  const memory = SharedMemory.create(registryOf(SPECS).registry);
  const missing = new RegionRegistry().declare({ name: 'limiter.state', kind: 'int32', count: 8 });
  t.throws(() => memory.region(missing), { code: 'ERR_SHARED_REGION_MISSING', message: /no region "limiter\.state" \(it has: a\.bytes, health\.hosts, limits\.tokens, page\)/ });
  const resized = new RegionRegistry().declare({ name: 'health.hosts', kind: 'int32', count: 6 });
  t.throws(() => memory.region(resized), { code: 'ERR_SHARED_REGION_MISMATCH', message: /int32 × 5 in the layout table but int32 × 6 here/ });
  const retyped = new RegionRegistry().declare({ name: 'health.hosts', kind: 'uint32', count: 5 });
  t.throws(() => memory.region(retyped), { code: 'ERR_SHARED_REGION_MISMATCH' });
});

t.test('a handle whose table does not describe its buffer is refused', async (t) => {
  const memory = SharedMemory.create(registryOf(SPECS).registry);
  const { buffer, layout } = memory.handle;
  t.throws(() => SharedMemory.attach({ buffer: new SharedArrayBuffer(64), layout }), { code: 'ERR_SHARED_LAYOUT', message: /64 bytes but its layout says/ });
  const overlapping = { ...layout, regions: layout.regions.map((r, i) => (i === 1 ? { ...r, offset: 0 } : r)) };
  t.throws(() => SharedMemory.attach({ buffer, layout: overlapping }), { code: 'ERR_SHARED_LAYOUT', message: /misplaced/ });
  const pastEnd = { ...layout, regions: [...layout.regions, { name: 'z', kind: 'int32' as const, count: 1 << 20, align: 64, offset: 8192 }] };
  t.throws(() => SharedMemory.attach({ buffer, layout: pastEnd }), { code: 'ERR_SHARED_LAYOUT', message: /past the buffer/ });
  t.throws(() => SharedMemory.attach({ buffer: new ArrayBuffer(8) as unknown as SharedArrayBuffer, layout }), { code: 'ERR_SHARED_LAYOUT' });
});

t.test('a worker thread attaches with what workerData carries, whatever it imported first', async (t) => {
  const main = registryOf(SPECS);
  const memory = SharedMemory.create(main.registry);
  const mod = path.join(__dirname, '..', '..', 'src', 'shared', 'shared-memory.js');
  // the worker declares only two of the regions, in its own order, then writes through them
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { declareRegion, SharedMemory } = require(${JSON.stringify(mod)});
    const tokens = declareRegion({ name: 'limits.tokens', kind: 'bigint64', count: 3 });
    const hosts = declareRegion({ name: 'health.hosts', kind: 'int32', count: 5 });
    const m = SharedMemory.attach(workerData);
    Atomics.store(m.region(tokens), 2, 7n);
    Atomics.store(m.region(hosts), 0, 9);
    let missing = '';
    try { m.region(declareRegion({ name: 'breaker.state', kind: 'int32', count: 1 })); } catch (e) { missing = e.code; }
    parentPort.postMessage(missing);
  `;
  const w = new Worker(code, { eval: true, workerData: memory.handle });
  const reply = await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  await w.terminate();
  t.equal(reply, 'ERR_SHARED_REGION_MISSING', 'the worker is told loudly about a region the main thread never laid out');
  t.equal(Atomics.load(memory.region(main.regions[0] as Region<'bigint64'>), 2), 7n);
  t.equal(Atomics.load(memory.region(main.regions[1] as Region<'int32'>), 0), 9);
});

t.test("Sluice's own regions: control, config mailbox, fd ownership, stats, all in one table", async (t) => {
  const shared = new SharedState();
  const names = shared.handle.layout.regions.map((r) => r.name);
  for (const n of ['config.mailbox', 'control', 'fd.owner', 'stats.counters', 'stats.gauge_row_owner', 'stats.gauge_rows']) {
    t.ok(names.includes(n), `${n} is laid out`);
  }
  t.same(names, [...names].sort(), 'in name order');
  const worker = new SharedState(shared.handle);
  shared.publishConfig({ hello: 'world' });
  t.same(worker.readConfig(), { seq: 2, value: { hello: 'world' } }, 'the config mailbox is shared');
  shared.draining = true;
  t.equal(worker.draining, true, 'and the control flags');
  const main = new FdOwnership(shared.memory);
  const other = new FdOwnership(worker.memory);
  t.ok(main.offer(5, 11));
  t.ok(other.claim(5, 11), 'a worker claims what main offered');
  t.notOk(main.reclaim(5, 11), 'then main cannot take it back');
  other.release(5, 11);
  t.equal(main.peek(5), 0);
  Atomics.add(counters(shared.memory), 3, 5n);
  t.equal(Atomics.load(counters(worker.memory), 3), 5n, 'and the counters');
});
