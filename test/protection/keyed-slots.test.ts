/**
 * Keyed slots in shared memory: claims, finding keys past freed slots, sweeps that free what no
 * thread used for a while, caches that never hand out a slot freed and claimed for another key,
 * and real threads claiming while the main thread sweeps (no key ever holds two slots, no slot
 * two keys). Then the breakers' sweep: an endpoint that left frees its breaker; an open one is
 * kept while it holds its target open.
 */
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { KeyedSlots, KeyedSlotsLayout, keyHash, type SlotOwner } from '../../src/protection/keyed-slots';
import { BreakerTable, ClusterBreakers, breakerSlots, OPEN, REFUSE, type BreakerConfig } from '../../src/protection/breaker';

const SMALL = new KeyedSlotsLayout({ name: 'test.keyed_slots.small', slots: 8 });
const RACE = new KeyedSlotsLayout({ name: 'test.keyed_slots.race', slots: 16 });
const HELD = new KeyedSlotsLayout({ name: 'test.keyed_slots.held', slots: 8 });

const everyoneIdle: SlotOwner = { idle: () => true, reset: () => {} };

/** Every claimed slot's key, checking no key holds two slots. */
function claimed(t: { notOk(v: unknown, m: string): void }, v: KeyedSlots): Map<string, number> {
  const out = new Map<string, number>();
  for (const [s, k] of v.entries()) {
    t.notOk(out.has(k), `${k} holds one slot only`);
    out.set(k, s);
  }
  return out;
}

t.test('a full table gives no slot; a sweep frees what was not used for idleSweeps sweeps, and only what its owner calls idle', async (t) => {
  const shared = new SharedState();
  const a = new KeyedSlots(shared.memory, SMALL);
  const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
  const slots = keys.map((k) => a.slot(k));
  t.same(new Set(slots).size, 8, 'eight keys, eight slots');
  t.equal(a.slot('k8'), -1, 'the ninth finds the table full');
  t.same(keys.map((k) => a.slot(k)), slots, 'each key finds its own slot again');

  t.equal(a.sweep(everyoneIdle, 2), 0, 'first sweep: everything was used in the epoch before');
  a.slot('k0'); // used in epoch 1
  const kept = slots[5];
  const owner: SlotOwner = { idle: (s) => s !== kept, reset: () => {} };
  t.equal(a.sweep(owner, 2), 6, 'second sweep: all but the one used since, and the one its owner holds');
  const left = claimed(t, a);
  t.same([...left.keys()].sort(), ['k0', 'k5']);
  t.equal(a.lookup('k3'), -1, 'a freed key is gone');
  t.equal(a.slot('k8'), a.lookup('k8'), 'and a new key gets a slot');
  t.ok(a.slot('k8') >= 0);
});

t.test('a thread\'s cache never hands out a slot freed and then claimed for another key', async (t) => {
  const shared = new SharedState();
  const a = new KeyedSlots(shared.memory, SMALL); // one thread's view
  const b = new KeyedSlots(shared.memory, SMALL); // another's
  const main = new KeyedSlots(shared.memory, SMALL);
  const old = a.slot('endpoint-1');
  main.sweep(everyoneIdle, 1);
  main.sweep(everyoneIdle, 1);
  t.equal(main.lookup('endpoint-1'), -1, 'freed');
  // a key whose probe starts at the freed slot
  let other = 'endpoint-2';
  for (let i = 0; (keyHash(other) >>> 0) % 8 !== old; i++) other = `endpoint-2-${i}`;
  const taken = b.slot(other);
  t.equal(taken, old, 'the other thread claims the freed slot for another key');
  const again = a.slot('endpoint-1');
  t.not(again, taken, 'the first thread, asking for its old key, gets a slot of its own');
  t.equal(main.nameOf(again), 'endpoint-1');
  t.equal(main.nameOf(taken), other);
  claimed(t, main);
});

t.test('keys are found past freed slots in their probe, and after freed slots become empty again', async (t) => {
  const shared = new SharedState();
  const a = new KeyedSlots(shared.memory, SMALL);
  let round = 0;
  // many rounds of claims and sweeps over more keys than slots: every claimed key is found where it is
  for (; round < 200; round++) {
    const live = new Set<string>();
    for (let j = 0; j < 6; j++) {
      const k = `r${(round * 7 + j * 13) % 23}`;
      if (a.slot(k) >= 0) live.add(k);
    }
    const idle = new Set([...a.entries()].filter(([, k]) => !live.has(k) || (round + k.length) % 3 === 0).map(([s]) => s));
    a.sweep({ idle: (s) => idle.has(s), reset: () => {} }, 1);
    const now = claimed(t, a);
    for (const [k, s] of now) if (a.lookup(k) !== s) { t.fail(`round ${round}: ${k} not found at its slot`); return; }
  }
  t.equal(round, 200);
});

t.test('threads claiming while the main thread sweeps: one slot per key, one key per slot', async (t) => {
  const shared = new SharedState();
  const main = new KeyedSlots(shared.memory, RACE);
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const { SharedState } = require(${JSON.stringify(require.resolve('../../src/shared/shared-state'))});
    const { KeyedSlots, KeyedSlotsLayout } = require(${JSON.stringify(require.resolve('../../src/protection/keyed-slots'))});
    const memory = new SharedState(workerData.handle).memory;
    const layout = new KeyedSlotsLayout({ name: 'test.keyed_slots.race', slots: 16 });
    const v = new KeyedSlots(memory, layout);
    const meta = memory.region(layout.meta);
    let bad = 0, got = 0, checked = 0;
    const end = Date.now() + 800;
    for (let i = 0; i < 5000000 && (i % 1024 !== 0 || Date.now() < end); i++) {
      const k = 'key-' + ((i * 7919 + workerData.seed) % 24);
      const epoch = Atomics.load(meta, 1), lock = Atomics.load(meta, 0);
      const s = v.slot(k);
      if (s < 0) continue;
      got++;
      const name = v.nameOf(s);
      // with no sweep running or begun meanwhile, the slot handed out holds this key. (A sweep may
      // free a slot a thread has just found: its caller's next use finds another; see keyed-slots.ts.)
      if (lock !== 0 || Atomics.load(meta, 0) !== 0 || Atomics.load(meta, 1) !== epoch) continue;
      checked++;
      if (name !== k) bad++;
    }
    parentPort.postMessage({ bad, got, checked });
  `;
  const run = (seed: number) => new Promise<{ bad: number; got: number; checked: number }>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { handle: shared.handle, seed } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  const done = Promise.all([run(1), run(2), run(3)]);
  let sweeps = 0;
  let stop = false;
  void done.finally(() => { stop = true; });
  while (!stop && sweeps < 5000) {
    main.sweep(everyoneIdle, 1);
    sweeps++;
    claimed(t, main);
    await new Promise((r) => setImmediate(r));
  }
  const results = await done;
  t.ok(sweeps > 10, `the main thread swept ${sweeps} times meanwhile`);
  for (const r of results) {
    t.equal(r.bad, 0, 'no thread was handed a slot that held another key');
    t.ok(r.got > 0 && r.checked > 0, `each got slots (${r.got}; ${r.checked} checked with no sweep meanwhile)`);
  }
  claimed(t, main);
});

t.test('breakers: an endpoint that left frees its breaker after the idle sweeps; an open breaker is kept while it holds', async (t) => {
  const cfg: BreakerConfig = { errorRatio: 0.5, slowCallMs: 100, slowCallRatio: 0.5, minimumRequests: 2, windowMs: 1000, buckets: 4, openMs: 60_000, halfOpenRequests: 1, mode: 'enforce' };
  const shared = new SharedState();
  const stats = new Stats(shared, new StatsRegistry().keys);
  const clock = { now: 1_000_000 };
  const worker = new BreakerTable(shared.memory, () => clock.now);
  const main = new BreakerTable(shared.memory, () => clock.now);
  const b = new ClusterBreakers(worker, 'web', 'endpoint', cfg, stats, breakerSlots(stats, 'web', 'endpoint'));
  const gone = b.slotOf('10.0.0.1:80');
  const failing = b.slotOf('10.0.0.2:80');
  for (let i = 0; i < 2; i++) { const tk = b.admit(failing); b.record(failing, tk, 'failure', 1, 'x'); }
  t.equal(b.state(failing), OPEN);
  t.equal(main.list().length, 2);
  for (let i = 0; i < 3; i++) main.sweep(2);
  t.same(main.list().map((v) => [v.target, v.state]), [['10.0.0.2:80', 'open']], 'the unused closed breaker is freed; the open one holds its target open');
  clock.now += 60_001;
  main.sweep(2);
  t.same(main.list(), [], 'once its open period is over and nothing asked, it goes too');
  const again = b.slotOf('10.0.0.2:80');
  t.ok(again >= 0);
  t.not(b.admit(again), REFUSE, 'the endpoint, back, starts with a closed breaker');
  t.same(main.list().map((v) => [v.target, v.state, v.opened]), [['10.0.0.2:80', 'closed', 0]], 'with a fresh state');
  t.not(gone, -1);
});

t.test('a lock held by a thread that is descheduled: slot() gives up, slotWaiting() (what cluster limits use) waits it out', async (t) => {
  const shared = new SharedState();
  const main = new KeyedSlots(shared.memory, HELD);
  // another thread takes the claims' lock and keeps it 100 ms, as one descheduled in a claim would
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const { SharedState } = require(${JSON.stringify(require.resolve('../../src/shared/shared-state'))});
    const { KeyedSlotsLayout } = require(${JSON.stringify(require.resolve('../../src/protection/keyed-slots'))});
    const memory = new SharedState(workerData.handle).memory;
    const meta = memory.region(new KeyedSlotsLayout({ name: 'test.keyed_slots.held', slots: 8 }).meta);
    Atomics.store(meta, 0, 1);
    parentPort.postMessage('held');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    Atomics.store(meta, 0, 0);
  `;
  const w = new Worker(code, { eval: true, workerData: { handle: shared.handle } });
  const exited = new Promise((resolve) => w.once('exit', resolve));
  await new Promise((resolve) => w.once('message', resolve));
  t.equal(main.slot('cluster-a'), -1, 'slot() while the lock is held: none, this time');
  const started = Date.now();
  const s = main.slotWaiting('cluster-b');
  t.ok(s >= 0, `slotWaiting() gets a slot once the lock is free (${s}, after ${Date.now() - started} ms)`);
  t.equal(main.nameOf(s), 'cluster-b', 'the slot holds the key');
  await exited;
  t.ok(main.slot('cluster-a') >= 0, 'and slot() gets one after');
});

t.test('a full table: slotWaiting() answers -1 at once', async (t) => {
  const shared = new SharedState();
  const a = new KeyedSlots(shared.memory, SMALL);
  for (let i = 0; i < 8; i++) a.slot(`k${i}`);
  const started = Date.now();
  t.equal(a.slotWaiting('one-more'), -1, 'no slot');
  t.ok(Date.now() - started < 500, 'without waiting for a lock nobody holds');
});
