/**
 * A subscription on a fake clock, fed as registries feed it: merging registries, zero-instance
 * protection, `ready` and its timeout, the stale flag, change events only for changes.
 */
import t from 'tap';
import { GlobalRegistryStats, MemoryStats } from '../../src/registry/stats';
import { Subscription } from '../../src/registry/subscription';
import type { Clock, RegistryEndpoint } from '../../src/registry/types';

class FakeClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;
  now(): number { return this.t; }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void { this.timers = this.timers.filter((x) => x.id !== h); }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const first = this.timers[0];
      if (!first || first.at > end) break;
      this.timers.shift();
      this.t = first.at;
      first.fn();
    }
    this.t = end;
  }
}

const ep = (address: string, source = 'zookeeper:a'): RegistryEndpoint => Object.freeze({ address, weight: 100, labels: Object.freeze({ group: '', version: '' }), source, id: address });

function setup(registries = ['a'], hold = 1000, firstList = 500) {
  const clock = new FakeClock();
  const stats = new MemoryStats();
  const sub = new Subscription('dubbo', 'com.acme.X', {
    registries, zeroInstanceHoldMs: hold, firstListTimeoutMs: firstList, pinned: false, clock, stats: new GlobalRegistryStats(stats),
  });
  const changes: number[] = [];
  sub.on('change', (s: Subscription) => changes.push(s.endpoints.length));
  return { clock, stats, sub, changes };
}

t.test('one registry: ready with the first list, change events only for changes', async (t) => {
  const { sub, changes, stats } = setup();
  t.equal(sub.stale, true, 'stale until the first list');
  const a = ep('10.0.0.1:1');
  const b = ep('10.0.0.2:1');
  sub.setList('a', [a, b]);
  sub.setStale('a', false);
  t.equal(await sub.ready, sub);
  t.equal(sub.stale, false);
  t.same(changes, [2]);
  sub.setList('a', [a, b]);
  t.same(changes, [2], 'the same endpoint objects: no change');
  sub.setList('a', [a]);
  t.same(changes, [2, 1]);
  t.equal(sub.version, 2);
  t.equal(stats.value('sluice_registry_updates_total'), 2);
});

t.test('two registries: merged in order; ready waits for both, or resolves at the timeout if one answered', async (t) => {
  const { sub, clock } = setup(['a', 'b']);
  sub.setList('a', [ep('10.0.0.1:1')]);
  sub.setStale('a', false);
  let resolved = false;
  void sub.ready.then(() => { resolved = true; });
  await Promise.resolve();
  t.equal(resolved, false, 'b has not answered');
  clock.advance(500);
  await sub.ready;
  t.equal(sub.stale, true, 'b cannot vouch for its part');
  sub.setList('b', [ep('10.0.0.9:1', 'zookeeper:b')]);
  sub.setStale('b', false);
  t.same(sub.endpoints.map((e) => `${e.source} ${e.address}`), ['zookeeper:a 10.0.0.1:1', 'zookeeper:b 10.0.0.9:1']);
  t.equal(sub.stale, false);
  sub.setStale('a', true);
  t.equal(sub.stale, true, 'any registry stale: the subscription is');
});

t.test('ready fails with ERR_REGISTRY_TIMEOUT when no registry answered, and the list still comes later', async (t) => {
  const { sub, clock, stats, changes } = setup(['a', 'b']);
  clock.advance(499);
  clock.advance(1);
  await t.rejects(sub.ready, { code: 'ERR_REGISTRY_TIMEOUT', message: 'dubbo:com.acme.X: no registry (a, b) answered within 500 ms' });
  t.equal(stats.value('sluice_registry_ready_timeout_total'), 1);
  sub.setList('a', [ep('10.0.0.1:1')]);
  t.same(changes, [1]);
});

t.test('zero-instance protection: held for the hold time, then applied; a list in time cancels it; 0 turns it off', async (t) => {
  const { sub, clock, stats, changes } = setup(['a'], 1000);
  const a = ep('10.0.0.1:1');
  sub.setList('a', [a]);
  sub.setList('a', []);
  t.equal(sub.held, true);
  t.same(sub.endpoints, [a], 'the last list keeps serving');
  t.equal(stats.value('sluice_registry_zero_instance_held'), 1);
  clock.advance(999);
  t.equal(sub.endpoints.length, 1);
  sub.setList('a', []);
  clock.advance(1);
  t.equal(sub.held, false);
  t.equal(sub.endpoints.length, 0, 'applied after the hold (a repeated empty list does not restart it)');
  t.equal(stats.value('sluice_registry_zero_instance_held'), 0);
  t.same(changes, [1, 0]);

  sub.setList('a', []);
  t.equal(sub.held, false, 'nothing to protect when there was nothing');
  sub.setList('a', [a]);
  sub.setList('a', []);
  clock.advance(500);
  const b = ep('10.0.0.2:1');
  sub.setList('a', [b]);
  t.equal(sub.held, false);
  t.same(sub.endpoints, [b]);
  clock.advance(5000);
  t.same(sub.endpoints, [b], 'the cancelled hold never applies');
  t.equal(stats.value('sluice_registry_zero_instance_protected_total'), 2);

  const off = setup(['a'], 0);
  off.sub.setList('a', [a]);
  off.sub.setList('a', []);
  t.equal(off.sub.endpoints.length, 0, 'hold 0: at once');
});

t.test('closing: ready fails with ERR_REGISTRY_CLOSED if pending, a hold is released, no more events', async (t) => {
  const { sub, stats } = setup(['a'], 1000);
  let closed = 0;
  sub.on('closed', () => closed++);
  sub.close();
  await t.rejects(sub.ready, { code: 'ERR_REGISTRY_CLOSED' });
  t.equal(closed, 1);
  const held = setup(['a'], 1000);
  held.sub.setList('a', [ep('10.0.0.1:1')]);
  held.sub.setList('a', []);
  t.equal(held.stats.value('sluice_registry_zero_instance_held'), 1);
  held.sub.close();
  t.equal(held.stats.value('sluice_registry_zero_instance_held'), 0);
  held.sub.setList('a', [ep('10.0.0.2:1')]);
  t.equal(held.sub.endpoints[0].address, '10.0.0.1:1', 'a closed subscription takes no more lists');
  void stats;
});

t.test('touch is a flag; dubboProviders applies Dubbo\'s rule to the labels', async (t) => {
  const { sub } = setup();
  t.equal(sub.used, false);
  sub.touch();
  t.equal(sub.used, true);
  const g = (address: string, group: string, version: string): RegistryEndpoint => ({ address, weight: 1, labels: { group, version }, source: 's', id: address });
  sub.setList('a', [g('1:1', 'a', '1'), g('2:1', 'b', '1'), g('3:1', '', '')]);
  t.same(sub.dubboProviders('a', '1').map((e) => e.address), ['1:1']);
  t.same(sub.dubboProviders('*', '*').map((e) => e.address), ['1:1', '2:1', '3:1']);
  t.same(sub.dubboProviders(undefined, undefined).map((e) => e.address), ['3:1']);
});
