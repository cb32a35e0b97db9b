/**
 * Adaptive limiting end to end.
 *
 * 1. The refusal in each protocol's form, shadow mode and recovery, with real clients (curl,
 *    @grpc/grpc-js, a dubbo-remoting consumer) on an inbound listener. The CPU is read from a
 *    cgroup directory of the test's own (a cpu.stat file it advances), so the controller sees
 *    the application at 100% or at 0% when the test says: every interface is shed in turn, then
 *    admitted again.
 * 2. The overload scenario of bench/adaptive/overload.ts (bounded, under 60 s): an application
 *    with a cheap and an expensive interface on one core, offered about 3× its capacity. With
 *    adaptive limiting on, the cheap interface keeps its success rate and its p99 near the
 *    unloaded one while the expensive one is shed; with it off, both collapse.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { get, stats, startSluice, waitFor, withTestDefaults } from '../helpers/harness';
import { Consumer, str } from './dubbo-peers';
import { curl, dubboVersioned, grpcVersioned, http1Versioned, loadEcho, unary } from './filter-peers';
import { DEFAULTS, runOverload } from '../../bench/adaptive/overload';

/** A cgroup v2 directory as Sluice reads it: cpu.stat advanced at `usage` of one core, every 20 ms. */
function fakeCgroup() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-cgroup-'));
  let usec = 0;
  let last = performance.now();
  const state = { usage: 0 };
  const write = () => writeFileSync(path.join(dir, 'cpu.stat'), `usage_usec ${Math.round(usec)}\nuser_usec 0\nsystem_usec 0\n`);
  write();
  const timer = setInterval(() => {
    const now = performance.now();
    usec += (now - last) * 1000 * state.usage;
    last = now;
    write();
  }, 20);
  return { dir, state, stop: () => clearInterval(timer) };
}

t.test('refused in each protocol\'s form, shadow mode, recovery', async (t) => {
  const h1 = await http1Versioned('h1');
  const g = await grpcVersioned('g');
  const d = await dubboVersioned('d');
  const cg = fakeCgroup();
  const doc = (mode: 'enforce' | 'shadow') => ({
    listeners: [{ name: 'in', address: '127.0.0.1:0', direction: 'inbound' }],
    clusters: [
      { name: 'web', endpoints: [`127.0.0.1:${h1.port}`] },
      { name: 'grpc', endpoints: [`127.0.0.1:${g.port}`] },
      { name: 'dubbo', endpoints: [`127.0.0.1:${d.port}`] },
    ],
    routes: [
      { name: 'grpc', match: { protocol: 'grpc' }, action: { cluster: 'grpc' } },
      { name: 'dubbo', match: { protocol: 'dubbo' }, action: { cluster: 'dubbo' } },
      { name: 'web', match: {}, action: { cluster: 'web' } },
    ],
    adaptiveLimit: {
      enabled: true, mode, intervalMs: 50, latencyTolerance: 0, cpu: { cgroup: cg.dir, cores: 1 },
      critical: [{ path: { prefix: '/pay' } }],
    },
  });
  const s = await startSluice(doc('enforce'));
  const base = `http://127.0.0.1:${s.port('in')}`;
  const Echo = loadEcho();
  const client = new Echo(`127.0.0.1:${s.port('in')}`, grpc.credentials.createInsecure());
  const consumer = await Consumer.connect(s.port('in'));
  t.teardown(async () => {
    cg.stop();
    client.close();
    consumer.close();
    await s.stop();
    await h1.close();
    g.close();
    await d.close();
  });

  const protection = async () => JSON.parse((await get(`${s.admin}/protection`)).body).adaptive;
  const callAll = async () => ({
    h1: await curl(`${base}/orders`),
    pay: await curl(`${base}/pay`),
    grpc: await unary(client),
    dubbo: await consumer.call('transfer', [str('x')]),
  });

  // unloaded: everything passes, the interfaces are learned
  const ok = await callAll();
  t.equal(ok.h1.status, 200);
  t.equal(ok.grpc.status.code, grpc.status.OK);
  t.equal(ok.dubbo.status, 20);
  let view = await waitFor(async () => { const v = await protection(); return v.interfaces?.length >= 5 ? v : null; }, 5000, 'the interfaces in /protection');
  t.match(view, { enabled: true, mode: 'enforce', cpu: { source: `cgroup ${cg.dir}`, cores: 1, target: 0.8 } });
  t.same(view.interfaces.map((i: { name: string }) => i.name).sort(), ['GET /orders', 'GET /pay', 'com.example.TransferService/transfer', 'other', 'sluice.test.Echo/Unary']);
  t.equal(view.interfaces.find((i: { name: string }) => i.name === 'GET /pay').class, 'critical');

  await t.test('at 100% CPU every normal interface is shed; the critical one keeps its floor', async (t) => {
    cg.state.usage = 1;
    const refused = await waitFor(async () => {
      const r = await callAll();
      return r.h1.status === 503 && r.grpc.status.code !== grpc.status.OK && r.dubbo.status !== 20 ? r : null;
    }, 15_000, 'every normal interface refused');
    t.equal(refused.h1.headers['x-sluice-reason'], 'overloaded', 'HTTP: 503 with x-sluice-reason');
    t.equal(refused.h1.body, 'overloaded\n');
    t.equal(refused.grpc.status.code, grpc.status.RESOURCE_EXHAUSTED, 'gRPC: RESOURCE_EXHAUSTED');
    t.same(refused.grpc.status.metadata.get('x-sluice-reason'), ['overloaded']);
    t.equal(refused.dubbo.status, 100, 'Dubbo: SERVER_THREADPOOL_EXHAUSTED');
    t.equal(refused.pay.status, 200, 'the critical interface, alone in flight, is under its floor');
    view = await waitFor(async () => {
      await curl(`${base}/pay`);
      const v = await protection();
      return v.interfaces.find((i: { name: string }) => i.name === 'GET /pay').limit === 1 ? v : null;
    }, 5000, 'the critical interface at its floor');
    t.equal(view.state, 'overloaded');
    t.equal(view.interfaces.find((i: { name: string }) => i.name === 'GET /orders').limit, 0);
    t.equal(view.interfaces.find((i: { name: string }) => i.name === 'GET /pay').limit, 1);
    const st = await stats(s.admin);
    t.ok(st.get('sluice_adaptive_refused_total')! >= 3);
    t.equal(st.get('sluice_adaptive_interface_limit{interface="GET /orders",class="normal"}'), 0);
    t.equal(st.get('sluice_adaptive_interface_limit{interface="GET /pay",class="critical"}'), 1);
    t.ok(st.get('sluice_adaptive_interface_requests_total{interface="GET /orders",class="normal",decision="refused"}')! >= 1);
    t.equal(st.get('sluice_adaptive_overloaded'), 1);
    t.ok(st.get('sluice_adaptive_cpu_usage_ratio')! > 0.8);
  });

  await t.test('shadow mode (by reload): the same calls pass, counted as they would have been refused', async (t) => {
    const before = (await stats(s.admin)).get('sluice_adaptive_shadow_refused_total') ?? 0;
    const calls = d.calls;
    await s.sluice.applyConfig(buildConfig(withTestDefaults({ ...doc('shadow'), admin: s.sluice.currentConfig.admin })));
    const r = await callAll();
    t.equal(r.h1.status, 200);
    t.equal(r.grpc.status.code, grpc.status.OK);
    t.equal(r.dubbo.status, 20);
    t.equal(d.calls, calls + 1, 'the Dubbo call reached the provider');
    const st = await stats(s.admin);
    t.ok(st.get('sluice_adaptive_shadow_refused_total')! >= before + 3, `the three shed interfaces counted (${before} → ${st.get('sluice_adaptive_shadow_refused_total')}) ${JSON.stringify(await protection())}`);
    t.equal((await protection()).mode, 'shadow');
  });

  await t.test('when usage falls, limits rise and are lifted', async (t) => {
    await s.sluice.applyConfig(buildConfig(withTestDefaults({ ...doc('enforce'), admin: s.sluice.currentConfig.admin })));
    cg.state.usage = 0;
    // keep the interfaces active while they recover
    await waitFor(async () => {
      const r = await callAll();
      const v = await protection();
      return r.h1.status === 200 && r.grpc.status.code === grpc.status.OK && r.dubbo.status === 20
        && v.interfaces.every((i: { limit: number | null }) => i.limit === null);
    }, 20_000, 'every limit lifted');
    t.pass('every interface admitted, no limit left');
  });

  await t.test('switched off by reload: every limit lifted at once', async (t) => {
    cg.state.usage = 1;
    await waitFor(async () => (await curl(`${base}/orders`)).status === 503, 15_000, 'shed again');
    const off = doc('enforce');
    await s.sluice.applyConfig(buildConfig(withTestDefaults({ ...off, adaptiveLimit: { ...off.adaptiveLimit, enabled: false }, admin: s.sluice.currentConfig.admin })));
    const r = await callAll();
    t.equal(r.h1.status, 200);
    t.equal(r.grpc.status.code, grpc.status.OK);
    t.equal(r.dubbo.status, 20);
    t.same(await protection(), { enabled: false, mode: 'enforce' });
    t.notOk((await get(`${s.admin}/stats`)).body.includes('sluice_adaptive_interface_limit'), 'no per-interface series while off');
  });
});

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
