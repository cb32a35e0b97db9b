/**
 * Question: what does circuit breaking add to every request on the proxy's hot path, against the
 * nothing it cost before?
 *
 *   node dist/bench/micro/protection.bench.js [--quick]
 *
 * Per request, the exchange takes and gives back a requests and a pending place of its cluster
 * (always: Envoy's default limits hold for every cluster), and, where the cluster has breakers,
 * asks the endpoint's breaker and records the answer, and the interface's (a key built from the
 * service and method, looked up in this thread's cache of slots). Each is timed alone, on one
 * thread (no contention), batch of 100 per sample, wall clock and CPU time.
 */
import os from 'node:os';
import { Bench } from 'tinybench';
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { BreakerTable, ClusterBreakers, breakerSlots } from '../../src/protection/breaker';
import { ClusterLimits, LimitsTable, limitSlots, PENDING, REQUESTS } from '../../src/protection/cluster-limits';
import { commit, cpuNow } from '../lib/run-info';

const BATCH = 100;
let sink = 0;

function tasks(): Array<[string, () => void]> {
  const shared = new SharedState();
  const stats = new Stats(shared, new StatsRegistry().keys, 0);
  const limits = new ClusterLimits(new LimitsTable(shared.memory, 0), 'web', { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3, mode: 'enforce' }, stats, limitSlots(stats, 'web'));
  const cfg = { errorRatio: 0.5, slowCallRatio: 1, minimumRequests: 20, windowMs: 10_000, buckets: 10, openMs: 30_000, halfOpenRequests: 3, mode: 'enforce' as const };
  const table = new BreakerTable(shared.memory);
  const ep = new ClusterBreakers(table, 'web', 'endpoint', cfg, stats, breakerSlots(stats, 'web', 'endpoint'));
  const iface = new ClusterBreakers(table, 'web', 'interface', cfg, stats, breakerSlots(stats, 'web', 'interface'));
  const service = 'com.example.TransferService';
  const methods = ['transfer', 'balance', 'history', 'refund'];
  let k = 0;
  return [
    ['nothing (before)', () => { sink++; }],
    ['cluster limits: requests + pending, take and give back', () => {
      if (limits.acquire(REQUESTS) && limits.acquire(PENDING)) { limits.release(PENDING); limits.release(REQUESTS); sink++; }
    }],
    ['endpoint breaker: admit + record (closed)', () => {
      const s = ep.slotOf('10.0.0.1:8080');
      ep.record(s, ep.admit(s), 'success', 1, '');
      sink += s;
    }],
    ['interface breaker: key, admit + record (closed)', () => {
      const s = iface.slotOf(`${service} ${methods[k++ & 3]}`);
      iface.record(s, iface.admit(s), 'success', 1, '');
      sink += s;
    }],
  ];
}

async function run(quick: boolean, cpuClock: boolean) {
  const bench = new Bench({ time: quick ? 300 : 1000, warmupTime: quick ? 100 : 250, throws: true, ...(cpuClock ? { now: cpuNow } : {}) });
  for (const [name, fn] of tasks()) bench.add(name, () => { for (let i = 0; i < BATCH; i++) fn(); });
  await bench.run();
  return bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`${t.name}: ${r.state}`);
    return { task: t.name, ns: (r.latency.mean * 1e6) / BATCH, rme: r.latency.rme };
  });
}

export async function main(argv: string[] = []): Promise<Array<{ task: string; nsPerOp: number; cpuNsPerOp: number }>> {
  const quick = argv.includes('--quick');
  const wall = await run(quick, false);
  const cpu = await run(quick, true);
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out('\n## micro: circuit breaking per request');
  out(`node ${process.version}  CPUs ${os.availableParallelism()}  commit ${commit()}  load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  out(`${'task'.padEnd(52)}${'wall ns'.padStart(10)}${'±%'.padStart(7)}${'CPU ns'.padStart(10)}`);
  const results = wall.map((w, i) => ({ task: w.task, nsPerOp: w.ns, cpuNsPerOp: cpu[i].ns, rme: w.rme }));
  for (const r of results) out(`${r.task.padEnd(52)}${r.nsPerOp.toFixed(0).padStart(10)}${r.rme.toFixed(1).padStart(7)}${r.cpuNsPerOp.toFixed(0).padStart(10)}`);
  if (sink === 0.5) out('');
  return results;
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => { console.error(err); process.exitCode = 1; });
}
