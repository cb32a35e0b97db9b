/**
 * Adaptive limiting end to end.
 *
 * 1. The refusal in each protocol's form, shadow mode and recovery, with real clients (curl,
 *    @grpc/grpc-js, a dubbo-remoting consumer) on an inbound listener. The CPU is read from a
 *    cgroup directory of the test's own (a cpu.stat file it advances), so the controller sees
 *    the application at 100% or at 0% when the test says: every interface is shed in turn, then
 *    admitted again.
 *
 * The overload scenario is test/integration/adaptive-overload.alone.ts: it needs the machine to
 * itself, and runs after the rest of the suite (scripts/run-tests.js).
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
    // both keep arriving: the controller moves only interfaces called recently, one per tick, in shed order
    view = await waitFor(async () => {
      await curl(`${base}/orders`);
      await curl(`${base}/pay`);
      const v = await protection();
      const limit = (name: string) => v.interfaces.find((i: { name: string }) => i.name === name).limit;
      return limit('GET /orders') === 0 && limit('GET /pay') === 1 ? v : null;
    }, 10_000, 'the normal interface shed and the critical one at its floor');
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
