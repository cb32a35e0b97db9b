/**
 * One alarm's state from samples on a fake clock: each signal's window value, forMs, the action's
 * time, resolution, and the learned baseline of a request rate.
 */
import t from 'tap';
import type { AlarmConfig } from '../../src/alarms/config';
import { AlarmState, quantileMs, type AlarmEvent } from '../../src/alarms/evaluator';
import { DURATION_BUCKETS } from '../../src/stats/stats';

function alarm(over: Omit<Partial<AlarmConfig>, 'signal'> & { signal?: Partial<AlarmConfig['signal']> } = {}): AlarmConfig {
  const { signal, ...rest } = over;
  return {
    name: 'a', minRequests: 10, windowMs: 10_000, forMs: 0,
    ...rest,
    signal: { kind: 'error_ratio', baselineMs: 300_000, ...signal },
  } as AlarmConfig;
}

const types = (evs: AlarmEvent[]) => evs.map((e) => e.type);

/** Cumulative counts that grow by `calls` and `errors` each second, from `at`. */
function feeder(s: AlarmState, start = 0) {
  let at = start;
  let calls = 0;
  let errors = 0;
  return {
    get at() { return at; },
    step(callsPerS: number, errorsPerS: number) {
      at += 1000;
      calls += callsPerS;
      errors += errorsPerS;
      return s.step({ at, a: errors, b: calls });
    },
  };
}

t.test('error_ratio: fires when the window\'s ratio passes the threshold, resolves when it falls back', async (t) => {
  const s = new AlarmState(alarm({ above: 0.2, windowMs: 5000 }));
  const f = feeder(s);
  t.same(types(f.step(0, 0)), [], 'one sample: no value yet');
  t.equal(s.value, null);
  for (let i = 0; i < 5; i++) t.same(types(f.step(100, 0)), []);
  t.equal(s.value, 0);
  const fired = f.step(100, 100);
  // the window (5 s) now holds 500 calls, 100 failed
  t.equal(s.value, 0.2, 'exactly at the threshold does not fire');
  t.same(types(fired), []);
  const ev = f.step(100, 100);
  t.same(types(ev), ['fired']);
  t.match(ev[0], { type: 'fired', threshold: 0.2 });
  t.ok(s.firing);
  for (let i = 0; i < 2; i++) t.same(types(f.step(100, 0)), [], 'still above over the window');
  let resolved: AlarmEvent[] = [];
  for (let i = 0; i < 6 && resolved.length === 0; i++) resolved = f.step(100, 0);
  t.same(types(resolved), ['resolved']);
  t.notOk(s.firing);
  t.equal(s.fired, 1);
});

t.test('error_ratio: under minRequests in the window there is no value, and the alarm does not hold', async (t) => {
  const s = new AlarmState(alarm({ above: 0.1, minRequests: 50, windowMs: 3000 }));
  const f = feeder(s);
  f.step(0, 0);
  for (let i = 0; i < 5; i++) t.same(types(f.step(10, 10)), [], 'every call failed, but 30 calls < 50');
  t.equal(s.value, null);
  t.same(types(f.step(100, 100)), ['fired']);
});

t.test('forMs: the condition must hold that long before the alarm fires', async (t) => {
  const s = new AlarmState(alarm({ above: 0.5, forMs: 3000, windowMs: 2000 }));
  const f = feeder(s);
  f.step(0, 0);
  t.same(types(f.step(20, 20)), [], 'holds since now');
  t.same(types(f.step(20, 20)), []);
  t.same(types(f.step(20, 20)), []);
  t.same(types(f.step(20, 20)), ['fired'], '3 s after it began to hold');
  // a dip resets the hold
  const g = feeder(new AlarmState(alarm({ above: 0.5, forMs: 2000, windowMs: 1000 })));
  g.step(0, 0);
  t.same(types(g.step(20, 20)), []);
  t.same(types(g.step(20, 0)), []);
  t.same(types(g.step(20, 20)), []);
  t.same(types(g.step(20, 20)), []);
  t.same(types(g.step(20, 20)), ['fired']);
});

t.test('the action: on when the alarm fires, off once the alarm resolved and forMs passed since it fired', async (t) => {
  const s = new AlarmState(alarm({ above: 0.5, windowMs: 1000, action: { kind: 'degrade_route', route: 'r', forMs: 5000 } }));
  const f = feeder(s);
  f.step(0, 0);
  t.same(types(f.step(20, 20)), ['fired', 'action_on']);
  t.equal(s.actionUntil, f.at + 5000);
  t.same(types(f.step(20, 0)), ['resolved'], 'resolved after 1 s: the action holds');
  t.ok(s.actionActive);
  t.same(types(f.step(20, 0)), []);
  t.same(types(f.step(20, 0)), []);
  t.same(types(f.step(20, 0)), []);
  t.same(types(f.step(20, 0)), ['action_off'], '5 s after it fired');
  t.notOk(s.actionActive);
  // an alarm that keeps firing past forMs keeps its action until it resolves
  const k = new AlarmState(alarm({ above: 0.5, windowMs: 1000, action: { kind: 'open_breaker', cluster: 'c', forMs: 2000 } }));
  const g = feeder(k);
  g.step(0, 0);
  t.same(types(g.step(20, 20)), ['fired', 'action_on']);
  for (let i = 0; i < 5; i++) t.same(types(g.step(20, 20)), [], 'firing: the action holds past forMs');
  t.same(types(g.step(20, 0)), ['resolved', 'action_off'], 'off as soon as it resolves, forMs being over');
  t.equal(k.actions, 1);
});

t.test('no traffic (the action refuses it before the upstream) counts as back to normal', async (t) => {
  const s = new AlarmState(alarm({ above: 0.5, windowMs: 2000, action: { kind: 'degrade_route', route: 'r', forMs: 1000 } }));
  const f = feeder(s);
  f.step(0, 0);
  t.same(types(f.step(20, 20)), ['fired', 'action_on']);
  f.step(0, 0);
  t.same(types(f.step(0, 0)), ['resolved', 'action_off'], 'no calls in the window: no value');
});

t.test('request_rate: requests per second over the window', async (t) => {
  const s = new AlarmState(alarm({ signal: { kind: 'request_rate' }, above: 50, windowMs: 4000 }));
  let at = 0;
  let n = 0;
  s.step({ at, a: n, b: 0 });
  for (let i = 0; i < 4; i++) { at += 1000; n += 40; s.step({ at, a: n, b: 0 }); }
  t.equal(s.value, 40);
  at += 1000; n += 120;
  t.same(types(s.step({ at, a: n, b: 0 })), ['fired'], '(40 × 3 + 120) / 4 s = 60/s');
  t.equal(s.value, 60);
});

t.test('request_rate with baselineFactor: learns its baseline, fires at a multiple of it, not while learning', async (t) => {
  const s = new AlarmState(alarm({ signal: { kind: 'request_rate', baselineMs: 10_000 }, baselineFactor: 3, windowMs: 2000 }));
  let at = 0;
  let n = 0;
  const step = (perS: number) => { at += 1000; n += perS; return s.step({ at, a: n, b: 0 }); };
  s.step({ at, a: 0, b: 0 });
  t.same(types(step(100)), []);
  t.same(types(step(1000)), [], 'learning: no threshold yet');
  t.equal(s.threshold(at), null);
  for (let i = 0; i < 30; i++) step(100);
  t.ok(Math.abs(s.baseline! - 100) < 10, `baseline ${s.baseline} near 100/s`);
  t.same(types(step(250)), [], '175/s over 2 s: under 3×');
  t.same(types(step(500)), ['fired'], '375/s: over 3× the baseline');
  const b = s.baseline;
  step(2000);
  t.equal(s.baseline, b, 'not learned while firing');
});

t.test('latency_p99_ms: the 99th percentile of the window\'s histogram', async (t) => {
  const counts = new Array(DURATION_BUCKETS.length + 1).fill(0);
  // 98 fast calls (≤ 1 ms), 2 slow in (0.25 s, 0.5 s]
  counts[1] = 98;
  counts[DURATION_BUCKETS.indexOf(0.5)] = 2;
  const p99 = quantileMs(counts, DURATION_BUCKETS, 0.99)!;
  t.ok(p99 > 250 && p99 <= 500, `p99 ${p99} ms in the slow bucket`);
  t.equal(quantileMs(new Array(17).fill(0), DURATION_BUCKETS, 0.99), null);
  const s = new AlarmState(alarm({ signal: { kind: 'latency_p99_ms' }, above: 200, windowMs: 5000 }), DURATION_BUCKETS);
  const zero = new Array(DURATION_BUCKETS.length + 1).fill(0);
  s.step({ at: 0, a: 0, b: 0, buckets: zero });
  t.same(types(s.step({ at: 1000, a: 0, b: 0, buckets: counts })), ['fired']);
  t.ok(s.value! > 250);
});

t.test('cpu_usage: the mean of the window\'s samples; a failed read is no sample', async (t) => {
  const s = new AlarmState(alarm({ signal: { kind: 'cpu_usage' }, above: 0.8, windowMs: 3000 }));
  s.step({ at: 0, a: NaN, b: 0 });
  s.step({ at: 1000, a: 0.7, b: 0 });
  t.same(types(s.step({ at: 2000, a: 0.85, b: 0 })), [], 'mean 0.775');
  t.same(types(s.step({ at: 3000, a: 0.95, b: 0 })), ['fired'], 'mean 0.833');
  t.same(types(s.step({ at: 4000, a: NaN, b: 0 })), [], 'mean of the two readings left: 0.9');
  t.same(types(s.step({ at: 5000, a: 0.1, b: 0 })), ['resolved'], 'mean of 0.95 and 0.1');
});
