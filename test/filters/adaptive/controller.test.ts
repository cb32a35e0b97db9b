/**
 * The adaptive controller on a simulated application and a fake clock: the application is one
 * core, each interface has a CPU cost per call and an offered rate; what the limits admit sets
 * the CPU usage the fake CPU source reports and the latency the counters record. Checked: the
 * costliest interface is shed first and the cheap one never; usage settles under the target
 * without oscillating; critical and shedFirst change the order; limits lift when load falls.
 */
import t from 'tap';
import { AdaptiveController, type ControllerOptions } from '../../../src/filters/adaptive/controller';
import type { CpuSource } from '../../../src/filters/adaptive/cpu-usage';
import {
  CLASS_CRITICAL, CLASS_NORMAL, CLASS_SHED_FIRST, COUNTS, C_ARRIVED, C_COMPLETED, C_LATENCY_US, C_REFUSED, InterfaceTable,
} from '../../../src/filters/adaptive/interface-table';
import { SharedState } from '../../../src/shared/shared-state';

const OPTIONS: ControllerOptions = {
  targetUtilization: 0.8, hysteresis: 0.05, intervalMs: 200, smoothing: 0.5, maxStepDown: 0.5, maxStepUp: 0.25,
  latencyTolerance: 0, latencyBufferMs: 2, criticalMinLimit: 1,
};

interface Iface { name: string; costMs: number; rate: number; cls: number; row?: number }

/** An application of one core serving what the limits admit, and the controller that watches it. */
function simulate(ifaces: Iface[], opts: Partial<ControllerOptions> = {}) {
  const table = new InterfaceTable(new SharedState().memory);
  let usage = 0;
  const cpu: CpuSource = { describe: 'fake', cores: 1, sample: () => usage };
  const controller = new AdaptiveController(table, cpu, { ...OPTIONS, ...opts });
  for (const i of ifaces) i.row = table.rowOf(i.name, i.cls, 64);
  let now = 0;
  const history: Array<{ usage: number; limits: number[]; admitted: number[] }> = [];
  const step = () => {
    const dt = 0.2;
    // what each limit admits: a limit L holds L calls in flight, each for its latency, which
    // stretches as the core fills (1 / (1 − ρ)); the ρ where both agree, by bisection
    const stretchOf = (r: number) => 1 / Math.max(0.02, 1 - Math.min(r, 0.98));
    const admittedAt = (r: number) => ifaces.map((i) => {
      const L = table.limit(i.row!);
      return Number.isNaN(L) ? i.rate : Math.min(i.rate, L / ((i.costMs * stretchOf(r)) / 1000));
    });
    const load = (a: number[]) => a.reduce((s, x, j) => s + (x * ifaces[j].costMs) / 1000, 0);
    let lo = 0;
    let hi = 10;
    for (let k = 0; k < 50; k++) {
      const mid = (lo + hi) / 2;
      if (load(admittedAt(mid)) > mid) lo = mid; else hi = mid;
    }
    const rho = lo;
    const admitted = admittedAt(rho);
    // a saturated core is busy all the time; the queue grows without bound
    usage = Math.min(1, rho);
    const stretch = 1 / Math.max(0.02, 1 - Math.min(rho, 0.98));
    ifaces.forEach((i, j) => {
      const base = i.row! * COUNTS;
      const served = rho > 1 ? admitted[j] / rho : admitted[j];
      Atomics.add(table.counts, base + C_ARRIVED, Math.round(i.rate * dt));
      Atomics.add(table.counts, base + C_REFUSED, Math.round((i.rate - admitted[j]) * dt));
      Atomics.add(table.counts, base + C_COMPLETED, Math.round(served * dt));
      Atomics.add(table.counts, base + C_LATENCY_US, Math.round(served * dt * i.costMs * stretch * 1000));
    });
    now += 200;
    controller.tick(now);
    history.push({ usage, limits: ifaces.map((i) => table.limit(i.row!)), admitted });
  };
  return { table, controller, history, run: (seconds: number) => { for (let k = 0; k < seconds * 5; k++) step(); } };
}

const cheap = (rate: number, cls = CLASS_NORMAL): Iface => ({ name: 'GET /cheap', costMs: 0.2, rate, cls });
const costly = (rate: number, cls = CLASS_NORMAL): Iface => ({ name: 'GET /costly', costMs: 15, rate, cls });

t.test('at 3× capacity the costly interface is shed, the cheap one is not, usage settles under the target', async (t) => {
  // capacity: one core; offered: 3 cores (2.7 costly, 0.3 cheap)
  const ifaces = [cheap(1500), costly(180)];
  const sim = simulate(ifaces);
  sim.run(20);
  const last = sim.history.slice(-25);
  t.ok(last.every((h) => Number.isNaN(h.limits[0])), 'the cheap interface is never limited');
  t.ok(last.every((h) => h.limits[1] >= 0 && h.limits[1] < 5), `the costly one is held to a few calls (${last.at(-1)!.limits[1]})`);
  const mean = last.reduce((s, h) => s + h.usage, 0) / last.length;
  t.ok(mean > 0.6 && mean < 0.85, `usage settles near the target (mean ${mean.toFixed(3)})`);
  const spread = Math.max(...last.map((h) => h.usage)) - Math.min(...last.map((h) => h.usage));
  t.ok(spread < 0.25, `without oscillating (spread ${spread.toFixed(3)})`);
  t.ok(last.every((h) => h.admitted[0] === 1500), 'every cheap call is admitted');
  const v = sim.controller.view();
  t.equal(v.interfaces[0].name, 'GET /costly', 'the view lists the costliest first');
  t.ok(v.interfaces[0].costMs > 20 * v.interfaces[1].costMs, `costs learned apart (${v.interfaces[0].costMs} ms vs ${v.interfaces[1].costMs} ms)`);
});

t.test('when load falls, limits rise by bounded steps and are lifted', async (t) => {
  const ifaces = [cheap(1500), costly(180)];
  const sim = simulate(ifaces);
  sim.run(15);
  const held = sim.table.limit(ifaces[1].row!);
  t.ok(Number.isFinite(held), 'limited under overload');
  ifaces[1].rate = 10;
  sim.run(1);
  const after1s = sim.table.limit(ifaces[1].row!);
  t.ok(Number.isNaN(after1s) || after1s <= held * 1.25 ** 5 + 0.5 + 1e-9, 'each step is bounded');
  sim.run(30);
  t.ok(Number.isNaN(sim.table.limit(ifaces[1].row!)), 'no limit once it no longer binds');
  t.equal(sim.controller.state, 'relaxed');
});

t.test('critical is shed last: a cheap normal interface goes before a costly critical one, which keeps its floor', async (t) => {
  const ifaces = [cheap(3000), costly(180, CLASS_CRITICAL)];
  const sim = simulate(ifaces);
  sim.run(20);
  const first = sim.history.findIndex((h) => h.limits.some((l) => !Number.isNaN(l)));
  t.ok(first >= 0, 'something was limited');
  t.ok(!Number.isNaN(sim.history[first].limits[0]) && Number.isNaN(sim.history[first].limits[1]), 'the normal interface first');
  t.equal(sim.table.limit(ifaces[0].row!), 0, 'then shed entirely');
  t.ok(sim.table.limit(ifaces[1].row!) >= 1, 'the critical one never below criticalMinLimit');
});

t.test('shedFirst goes before a costlier normal interface', async (t) => {
  const ifaces = [cheap(3000, CLASS_SHED_FIRST), costly(180)];
  const sim = simulate(ifaces);
  sim.run(3);
  const first = sim.history.findIndex((h) => h.limits.some((l) => !Number.isNaN(l)));
  t.ok(!Number.isNaN(sim.history[first].limits[0]) && Number.isNaN(sim.history[first].limits[1]), 'the shedFirst interface first');
});

t.test('under the target nothing is limited; in the band nothing moves', async (t) => {
  const ifaces = [cheap(500), costly(30)];
  const sim = simulate(ifaces);
  sim.run(10);
  t.ok(sim.history.every((h) => h.limits.every((l) => Number.isNaN(l))), 'no limit at 0.55 usage');
  t.equal(sim.controller.state, 'relaxed');
  ifaces[1].rate = 45; // 0.1 + 0.675: inside the band under the target
  sim.run(3);
  t.equal(sim.controller.state, 'holding');
  t.ok(sim.history.slice(-10).every((h) => h.limits.every((l) => Number.isNaN(l))));
});

t.test('latency over its baseline counts as overload when CPU does not show it', async (t) => {
  const table = new InterfaceTable(new SharedState().memory);
  const cpu: CpuSource = { describe: 'fake', cores: 1, sample: () => 0.3 };
  const c = new AdaptiveController(table, cpu, { ...OPTIONS, latencyTolerance: 3 });
  const row = table.rowOf('svc/Slow', CLASS_NORMAL, 64);
  let now = 0;
  const tick = (latencyMs: number) => {
    Atomics.add(table.counts, row * COUNTS + C_ARRIVED, 100);
    Atomics.add(table.counts, row * COUNTS + C_COMPLETED, 100);
    Atomics.add(table.counts, row * COUNTS + C_LATENCY_US, 100 * latencyMs * 1000);
    Atomics.store(table.inflight, row, 20);
    c.tick((now += 200));
  };
  for (let i = 0; i < 10; i++) tick(5);
  t.equal(c.state, 'relaxed');
  for (let i = 0; i < 3; i++) tick(60);
  t.equal(c.state, 'overloaded', 'latency 60 ms over a 5 ms baseline');
  t.ok(table.limit(row) < 20, `limited (${table.limit(row)})`);
  t.ok(c.view().interfaces[0].baselineMs < 8, 'the baseline did not follow the overload');
});

t.test('liftAll removes every limit', async (t) => {
  const ifaces = [cheap(1500), costly(180)];
  const sim = simulate(ifaces);
  sim.run(5);
  t.ok(Number.isFinite(sim.table.limit(ifaces[1].row!)));
  sim.controller.liftAll();
  t.ok(Number.isNaN(sim.table.limit(ifaces[1].row!)));
});
