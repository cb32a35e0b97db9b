/**
 * Discovery through Sluice, end to end: a real ZooKeeper, real Dubbo providers (raw sockets,
 * dubbo-remoting bodies) registered as Dubbo registers them, a dubbo-remoting consumer calling
 * through an explicit listener that names no cluster.
 *
 *   npx tsc -p . && node dist/bench/registry/through-sluice.js [--quick] [--interfaces N] [--changes N]
 *
 * Measures, per the targets:
 * - first call: the latency of the first call to an interface not subscribed yet (held until
 *   ZooKeeper answered and the list reached the worker), beside a warm call to the same interface;
 *   and the part of it after the registry's answer reached the main thread (its list published
 *   to the workers) until the consumer had the provider's answer;
 * - provider change: a provider registered while calls flow, until its first call; a provider
 *   whose node is removed, until its last call.
 * Results: bench/registry/results/through-sluice.json. Nothing is asserted.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig } from '../../src/config/config';
import { Sluice } from '../../src/main/sluice';
import { withTestDefaults } from '../../test/helpers/harness';
import { CreateMode, dubboProviderNode, startZooKeeper, ZkWriter } from '../../test/helpers/zookeeper';
import { Consumer, rawProvider, str, type Provider } from '../../test/integration/dubbo-peers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const quick = process.argv.includes('--quick');
function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

function commit(): string {
  try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim(); } catch { return 'unknown'; }
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] * 10) / 10 : NaN;
};
const summary = (xs: number[]) => ({ n: xs.length, p50: pct(xs, 50), p90: pct(xs, 90), max: pct(xs, 100) });

async function main(): Promise<void> {
  const interfaces = arg('interfaces', quick ? 20 : 200);
  const changes = arg('changes', quick ? 3 : 20);
  const zk = await startZooKeeper();
  const writer = await ZkWriter.connect(zk.connectString, { sessionTimeoutMs: 60_000 });
  const providers: Provider[] = await Promise.all(Array.from({ length: 4 }, () => rawProvider()));
  const iface = (i: number) => `com.acme.bench.Service${String(i).padStart(4, '0')}`;
  const register = async (name: string, p: Provider) => {
    const node = `/dubbo/${name}/providers/${dubboProviderNode('127.0.0.1', p.port, name, { version: '1.0.0' })}`;
    await writer.create(node, undefined, CreateMode.EPHEMERAL);
    return node;
  };
  for (let i = 0; i < interfaces; i++) {
    await writer.mkdirp(`/dubbo/${iface(i)}/providers`);
    for (const p of providers) await register(iface(i), p);
  }
  const config = buildConfig(withTestDefaults({
    listeners: [{ name: 'dubbo', address: '127.0.0.1:0', protocol: 'dubbo' }],
    registries: [{ name: 'zk', type: 'zookeeper', address: zk.connectString }],
    logLevel: 'warn',
  }), 'bench');
  const sluice = await Sluice.start({ config });
  // when the registry's answer reached the main thread: the first publish of each service's list
  const answeredAt = new Map<string, number>();
  const d = sluice.discovery as unknown as { publish(s: { name: string }, state: string): void };
  const publish = d.publish.bind(d);
  d.publish = (s, state) => { if (!answeredAt.has(s.name)) answeredAt.set(s.name, performance.now()); publish(s, state); };
  const consumer = await Consumer.connect(sluice.listenerAddress('dubbo')!.port);
  try {
    // first calls, each to an interface not subscribed yet, then a warm call to the same one
    const first: number[] = [];
    const afterAnswer: number[] = [];
    const warm: number[] = [];
    for (let i = 0; i < interfaces; i++) {
      const sig = `${iface(i)}:1.0.0`;
      let t0 = performance.now();
      const a = await consumer.call('get', [str('first')], {}, 20_000, sig);
      const end = performance.now();
      first.push(end - t0);
      afterAnswer.push(end - (answeredAt.get(`dubbo/${iface(i)}`) ?? NaN));
      if (a.status !== 20) throw new Error(`first call to ${iface(i)}: ${JSON.stringify(a)}`);
      t0 = performance.now();
      await consumer.call('get', [str('warm')], {}, 20_000, sig);
      warm.push(performance.now() - t0);
    }

    // provider changes while calls flow (one call every 2 ms) on interface 0
    const sig = `${iface(0)}:1.0.0`;
    let stop = false;
    let failed = 0;
    let calls = 0;
    const load = (async () => {
      while (!stop) {
        const r = await consumer.call('get', [str('load')], {}, 20_000, sig);
        calls++;
        if (r.status !== 20) failed++;
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const joined: number[] = [];
    const left: number[] = [];
    for (let k = 0; k < changes; k++) {
      const p = await rawProvider();
      let firstCall = 0;
      let lastCall = 0;
      p.events.on('call', () => { lastCall = Date.now(); firstCall ||= lastCall; });
      const t0 = Date.now();
      const node = await register(iface(0), p);
      for (let w = 0; !firstCall && w < 500; w++) await new Promise((r) => setTimeout(r, 10));
      joined.push(firstCall ? firstCall - t0 : NaN);
      await new Promise((r) => setTimeout(r, 200));
      const t1 = Date.now();
      await writer.remove(node);
      await new Promise((r) => setTimeout(r, 1500));
      left.push(Math.max(0, lastCall - t1));
      await p.close();
    }
    stop = true;
    await load;

    const report = {
      date: new Date().toISOString(), node: process.version, cpus: os.availableParallelism(), loadAverage: os.loadavg(), commit: commit(),
      setup: { interfaces, providersPerInterface: providers.length, workers: 2, changes },
      firstCallMs: summary(first),
      firstCallAnsweredAfterRegistryAnswerMs: summary(afterAnswer),
      warmCallMs: summary(warm),
      providerJoinedToFirstCallMs: summary(joined),
      providerRemovedToLastCallMs: summary(left),
      callsDuringChanges: calls,
      failedCallsDuringChanges: failed,
    };
    const out = path.join(ROOT, 'bench', 'registry', 'results', quick ? 'through-sluice-quick.json' : 'through-sluice.json');
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
    const f = (s: ReturnType<typeof summary>) => `p50 ${s.p50} ms, p90 ${s.p90} ms, max ${s.max} ms (n=${s.n})`;
    process.stdout.write([
      `first call to an interface not subscribed yet: ${f(report.firstCallMs)}`,
      `  of which after the registry's answer:        ${f(report.firstCallAnsweredAfterRegistryAnswerMs)}`,
      `warm call to the same interface:               ${f(report.warmCallMs)}`,
      `provider registered → its first call:          ${f(report.providerJoinedToFirstCallMs)}`,
      `provider removed → its last call:              ${f(report.providerRemovedToLastCallMs)}`,
      `calls during the changes: ${calls}, failed: ${failed}`,
      `node ${process.version}, ${report.cpus} CPUs, commit ${report.commit}; results: ${path.relative(process.cwd(), out)}`,
      '',
    ].join('\n'));
  } finally {
    consumer.close();
    await sluice.stop(0, 0);
    for (const p of providers) await p.close();
    writer.close();
    await zk.destroy();
  }
}

main().catch((err) => { console.error(err); process.exitCode = 1; });
