/**
 * Adaptive limiting under real overload, the scenario of bench/adaptive/overload.ts (bounded,
 * under 60 s): an application with a cheap and an expensive interface on one core, offered about
 * 3× its capacity. With adaptive limiting on, the cheap interface keeps its success rate and its
 * p99 near the unloaded one while the expensive one is shed; with it off, both collapse.
 *
 * Named `.alone.ts`, not `.test.ts`: what it measures is the machine's CPU, so it runs by itself
 * after the rest of the suite (scripts/run-tests.js), not beside another test file.
 */
import t from 'tap';
import { DEFAULTS, runOverload } from '../../bench/adaptive/overload';

/** An unloaded cheap call's p99 above this says the machine, not the application, set the pace. */
const STARVED_P99_MS = 100;

t.test('overload at 3× capacity: the cheap interface is kept, the expensive one shed; off, both collapse', async (t) => {
  const r = await runOverload({ ...DEFAULTS, onSeconds: 10, offSeconds: 8, warmupSeconds: 4, baselineSeconds: 5 });
  const [base, on, off] = [r.baseline.summary, r.on.summary, r.off.summary];
  t.comment(`unloaded p99 cheap ${base['/cheap'].p99Ms.toFixed(1)} ms, costly ${base['/costly'].p99Ms.toFixed(1)} ms`);
  t.comment(`ON  cheap ${(on['/cheap'].successRate * 100).toFixed(2)}% p99 ${on['/cheap'].p99Ms.toFixed(1)} ms; costly ${(on['/costly'].successRate * 100).toFixed(1)}% ok, ${on['/costly'].refused} refused`);
  t.comment(`OFF cheap ${(off['/cheap'].successRate * 100).toFixed(2)}% p99 ${off['/cheap'].p99Ms.toFixed(1)} ms; costly ${(off['/costly'].successRate * 100).toFixed(1)}% p99 ${off['/costly'].p99Ms.toFixed(1)} ms`);
  t.comment(`the application's share of its core while saturated: ${r.offCoreShare.toFixed(2)}`);
  const share = (x: { refused: number; sent: number }) => x.refused / x.sent;
  // whatever the machine does: the expensive interface is shed first, and the cheap one fares
  // better with the limiter than without
  t.ok(share(on['/costly']) > 0.3, `on: the costly interface is shed (${on['/costly'].refused} of ${on['/costly'].sent})`);
  t.ok(share(on['/costly']) > share(on['/cheap']) + 0.3, 'on: the costly interface far more than the cheap one');
  t.ok(on['/cheap'].successRate > off['/cheap'].successRate, 'the cheap interface answers more with the limiter than without');
  if (!(r.offCoreShare >= 0.6)) {
    // other processes of a shared machine held the application's core: its latency is theirs
    t.pass(`latency claims not checked: the application had ${(r.offCoreShare * 100).toFixed(0)}% of its core when saturated, the machine is too busy`, { skip: true });
    return;
  }
  if (!(base['/cheap'].p99Ms <= STARVED_P99_MS)) {
    // a cheap call costs a fraction of a millisecond: an unloaded p99 this high means the machine
    // starved the application while the limiter learned its baseline, and then every signal is noise
    t.pass(`latency claims not checked: the unloaded cheap p99 was ${base['/cheap'].p99Ms.toFixed(0)} ms (over ${STARVED_P99_MS} ms), the machine is too busy`, { skip: true });
    return;
  }
  t.ok(base['/cheap'].successRate >= 0.99, 'unloaded: the cheap interface answers');
  t.ok(on['/cheap'].successRate > 0.99, 'on: the cheap interface keeps over 99% success');
  t.equal(on['/cheap'].refused, 0, 'on: no cheap call refused');
  // single p99s are noisy on a shared machine: 3× the unloaded value, or, when the unloaded run
  // itself was quicker than the machine is now, a tenth of what the same load does without the limiter
  const bound = 3 * base['/cheap'].p99Ms;
  t.ok(on['/cheap'].p99Ms <= bound || on['/cheap'].p99Ms * 10 <= off['/cheap'].p99Ms,
    `on: cheap p99 ${on['/cheap'].p99Ms.toFixed(1)} ms within 3× unloaded (${bound.toFixed(1)} ms)`);
  t.ok(on['/costly'].successRate + share(on['/costly']) > 0.97, 'on: what is not refused is served');
  // off: both collapse
  for (const p of ['/cheap', '/costly']) {
    t.ok(off[p].successRate < 0.9 || off[p].p99Ms > 10 * base[p].p99Ms,
      `off: ${p} collapses (${(off[p].successRate * 100).toFixed(1)}% ok, p99 ${off[p].p99Ms} ms)`);
  }
  t.ok(off['/cheap'].p99Ms > 3 * on['/cheap'].p99Ms || off['/cheap'].successRate < 0.99, 'off: the cheap interface is worse than with the limiter');
});
