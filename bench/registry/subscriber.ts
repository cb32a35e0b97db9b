/**
 * One subscriber, in a process of its own so its memory is its own:
 *   node --expose-gc dist/bench/registry/subscriber.js <connectString> <subscriptions> <interfaces>
 * Subscribes `subscriptions` of the `interfaces` scale interfaces (spread evenly), waits for every
 * first list, and prints one JSON line; then waits for a line on stdin before it exits, so the
 * parent can read ZooKeeper's watch counts while the subscriptions are held.
 */
import { Registries, validateRegistryConfig } from '../../src/registry';
import { MemoryStats } from '../../src/registry/stats';
import { scaleInterface } from '../../test/helpers/zookeeper';

const gc = (globalThis as { gc?: () => void }).gc;

function memory(): { heapUsedMb: number; rssMb: number; externalMb: number } {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  const mb = (n: number) => Math.round((n / 1048576) * 10) / 10;
  return { heapUsedMb: mb(m.heapUsed), rssMb: mb(m.rss), externalMb: mb(m.external) };
}

async function main(): Promise<void> {
  const [connect, nText, totalText] = process.argv.slice(2);
  const n = Number(nText);
  const total = Number(totalText);
  if (!gc) throw new Error('run with --expose-gc');
  const { config } = validateRegistryConfig({
    registries: [{ name: 'zk', type: 'zookeeper', address: connect, sessionTimeoutMs: 60_000 }],
    registry: { firstListTimeoutMs: 600_000, idleUnsubscribeMs: 0 },
  });
  const stats = new MemoryStats();
  const quiet = { info: () => {}, warn: (f: Record<string, unknown>, m: string) => process.stderr.write(`${m} ${JSON.stringify(f)}\n`) };
  const before = memory();
  const registries = new Registries(config, { stats, log: quiet });
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const subs = Array.from({ length: n }, (_, i) => registries.subscribe('dubbo', scaleInterface(Math.floor((i * total) / Math.max(n, 1)))));
  await Promise.all(subs.map((s) => s.ready));
  const readyMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const after = memory();
  const status = registries.status().registries[0];
  const endpoints = subs.reduce((a, s) => a + s.endpoints.length, 0);
  process.stdout.write(`${JSON.stringify({
    subscriptions: status.services,
    endpoints,
    watches: status.watches,
    sessionId: status.sessionId,
    readyMs: Math.round(readyMs),
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    before,
    after,
    heapPerSubscriptionKb: n ? Math.round(((after.heapUsedMb - before.heapUsedMb) * 1024 / n) * 10) / 10 : 0,
  })}\n`);
  process.stdin.once('data', () => { void registries.close().then(() => process.exit(0)); });
}

main().catch((err) => { console.error(err); process.exit(1); });
