/**
 * The breaker's state machine on a fake clock, and the cluster limits' counters, in shared memory
 * as workers use them: no sockets.
 */
import t from 'tap';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { BreakerTable, ClusterBreakers, breakerSlots, CLOSED, HALF_OPEN, OPEN, REFUSE, TRACKED, TRIAL, UNTRACKED, type BreakerConfig } from '../../src/protection/breaker';
import { ClusterLimits, LimitsTable, limitSlots, releaseShares, REQUESTS } from '../../src/protection/cluster-limits';

const cfg: BreakerConfig = { errorRatio: 0.5, slowCallMs: 100, slowCallRatio: 0.5, minimumRequests: 4, windowMs: 1000, buckets: 4, openMs: 500, halfOpenRequests: 2, mode: 'enforce' };

function setup(c: Partial<BreakerConfig> = {}) {
  const shared = new SharedState();
  const stats = new Stats(shared, new StatsRegistry().keys);
  const clock = { now: 1_000_000 };
  const table = new BreakerTable(shared.memory, () => clock.now);
  const b = new ClusterBreakers(table, 'web', 'endpoint', { ...cfg, ...c }, stats, breakerSlots(stats, 'web', 'endpoint'));
  return { shared, stats, clock, table, b };
}

function call(b: ClusterBreakers, s: number, result: 'success' | 'failure' | 'neutral', ms = 1): number {
  const ticket = b.admit(s);
  if (ticket !== REFUSE) b.record(s, ticket, result, ms, 'x');
  return ticket;
}

t.test('opens at the ratio with the minimum volume, refuses while open, half-opens, closes after its trials', async (t) => {
  const { b, clock, table } = setup();
  const s = b.slotOf('10.0.0.1:80');
  t.equal(call(b, s, 'failure'), TRACKED);
  t.equal(call(b, s, 'failure'), TRACKED);
  t.equal(call(b, s, 'failure'), TRACKED);
  t.equal(b.state(s), CLOSED, 'below the minimum volume: closed');
  call(b, s, 'success');
  t.equal(b.state(s), CLOSED, 'a success does not trip it');
  call(b, s, 'failure');
  t.equal(b.state(s), OPEN, '4 of 5 failed: open');
  t.equal(b.admit(s), REFUSE);
  clock.now += 499;
  t.equal(b.admit(s), REFUSE, 'still open before openMs');
  clock.now += 1;
  const t1 = b.admit(s);
  const t2 = b.admit(s);
  t.equal(t1, TRIAL);
  t.equal(t2, TRIAL);
  t.equal(b.state(s), HALF_OPEN);
  t.equal(b.admit(s), REFUSE, 'only halfOpenRequests trials at once');
  b.record(s, t1, 'neutral', 1, 'x');
  const t3 = b.admit(s);
  t.equal(t3, TRIAL, 'a trial not judged (the client left) gives its place back');
  b.record(s, t2, 'success', 1, 'x');
  t.equal(b.state(s), HALF_OPEN);
  b.record(s, t3, 'success', 1, 'x');
  t.equal(b.state(s), CLOSED, 'both trials succeeded: closed');
  t.equal(call(b, s, 'failure'), TRACKED, 'closed with a fresh window: one failure does not reopen it');
  t.equal(b.state(s), CLOSED);
  t.match(table.list()[0], { cluster: 'web', scope: 'endpoint', target: '10.0.0.1:80', state: 'closed', opened: 1, halfOpened: 1, closed: 1, refused: 0 });
});

t.test('a slow or failed trial opens it again; a late record of an earlier period is ignored', async (t) => {
  const { b, clock } = setup();
  const s = b.slotOf('a');
  const early = b.admit(s);
  for (let i = 0; i < 4; i++) call(b, s, 'failure');
  t.equal(b.state(s), OPEN);
  b.record(s, early, 'failure', 1, 'x');
  clock.now += 500;
  const trial = b.admit(s);
  t.equal(trial, TRIAL);
  b.record(s, trial, 'success', 150, 'x');
  t.equal(b.state(s), OPEN, 'a slow trial counts as failed');
  t.equal(b.admit(s), REFUSE);
});

t.test('the window slides: old failures leave it', async (t) => {
  const { b, clock } = setup();
  const s = b.slotOf('a');
  for (let i = 0; i < 3; i++) call(b, s, 'failure');
  clock.now += 1500;
  for (let i = 0; i < 3; i++) call(b, s, 'success');
  call(b, s, 'failure');
  t.equal(b.state(s), CLOSED, '1 failure of 4 in the window');
  call(b, s, 'failure');
  call(b, s, 'failure');
  t.equal(b.state(s), OPEN, '3 of 6 in the window');
});

t.test('slow calls open it by their own ratio', async (t) => {
  const { b } = setup({ errorRatio: 1 });
  const s = b.slotOf('a');
  for (let i = 0; i < 3; i++) call(b, s, 'success', 5);
  for (let i = 0; i < 3; i++) call(b, s, 'success', 200);
  t.equal(b.state(s), OPEN);
});

t.test('shadow mode: refused() lets the call through untracked and counts it', async (t) => {
  const { b, table } = setup({ mode: 'shadow' });
  const s = b.slotOf('a');
  for (let i = 0; i < 4; i++) call(b, s, 'failure');
  t.equal(b.state(s), OPEN);
  t.equal(b.admit(s), REFUSE, 'it decides as enforce would');
  t.equal(b.refused(s, 'a'), UNTRACKED, 'and lets the call through');
  t.match(table.list()[0], { state: 'open', refused: 0, shadowRefused: 1 }, 'counted as a shadow refusal');
});

t.test('breakers are shared: another thread\'s view of the same memory sees the same state', async (t) => {
  const { shared, b, clock } = setup();
  const other = new ClusterBreakers(new BreakerTable(shared.memory, () => clock.now), 'web', 'endpoint', cfg, new Stats(shared, []), breakerSlots(new Stats(shared, []), 'web', 'endpoint'));
  const s = b.slotOf('a');
  for (let i = 0; i < 4; i++) call(i % 2 ? b : other, s, 'failure');
  t.equal(other.slotOf('a'), s, 'the same slot for the same key');
  t.equal(other.admit(s), REFUSE);
  const changed = new ClusterBreakers(new BreakerTable(shared.memory, () => clock.now), 'web', 'endpoint', { ...cfg, openMs: 1 }, new Stats(shared, []), breakerSlots(new Stats(shared, []), 'web', 'endpoint'));
  t.not(changed.slotOf('a'), s, 'another rule: another breaker');
});

t.test('cluster limits: never over the limit, shadow lets through, a dead worker\'s share goes back', async (t) => {
  const shared = new SharedState();
  const stats = new Stats(shared, []);
  const w1 = new LimitsTable(shared.memory, 3);
  const w2 = new LimitsTable(shared.memory, 4);
  const cfgL = { maxConnections: 1, maxPendingRequests: 1, maxRequests: 3, maxRetries: 1, mode: 'enforce' as const };
  const a = new ClusterLimits(w1, 'c', cfgL, stats, limitSlots(stats, 'c'));
  const b = new ClusterLimits(w2, 'c', cfgL, stats, limitSlots(stats, 'c'));
  t.ok(a.acquire(REQUESTS));
  t.ok(a.acquire(REQUESTS));
  t.ok(b.acquire(REQUESTS));
  t.notOk(b.acquire(REQUESTS), 'the 4th across two workers is refused');
  t.notOk(a.acquire(REQUESTS));
  t.same(w1.counts('c'), [0, 0, 3, 0]);
  const shadow = new ClusterLimits(w2, 'c', { ...cfgL, mode: 'shadow' }, stats, limitSlots(stats, 'c'));
  t.ok(shadow.acquire(REQUESTS), 'shadow: over the limit, let through');
  t.same(w1.counts('c'), [0, 0, 4, 0]);
  shadow.release(REQUESTS);
  // worker 1 dies holding two
  releaseShares(shared.memory, 3);
  t.same(w1.counts('c'), [0, 0, 1, 0], 'its two places went back');
  t.ok(b.acquire(REQUESTS));
  b.release(REQUESTS);
  b.release(REQUESTS);
  t.same(w2.counts('c'), [0, 0, 0, 0]);
});
