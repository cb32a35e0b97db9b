/**
 * What on-demand subscription saves: a sidecar that calls 20 Dubbo interfaces against one that
 * subscribes to all of them, in a registry of 10,000 interfaces × 48 providers.
 *
 *   npx tsc -p . && node dist/bench/registry/subscriptions.js [--interfaces N] [--providers N] [--called N]
 *
 * Starts its own ZooKeeper (Debian's package, as the tests do) on a free loopback port, writes
 * the providers in multi-ops, then runs each subscriber in a process of its own (0: the
 * baseline of an empty Registries; `called`; every interface) and reports its time to the
 * first lists, CPU, heap and RSS, and the watches ZooKeeper counts for it. Results:
 * bench/registry/results/latest.json. Nothing here is asserted; budgets live in the report.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseWchc, populateDubbo, startZooKeeper, ZkWriter } from '../../test/helpers/zookeeper';

const ROOT = path.resolve(__dirname, '..', '..', '..');

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

function commit(): string {
  try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim(); } catch { return 'unknown'; }
}

async function runSubscriber(connect: string, n: number, total: number, fourLetter: (w: string) => Promise<string>): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, ['--expose-gc', path.join(__dirname, 'subscriber.js'), connect, String(n), String(total)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  const result = JSON.parse(line) as Record<string, unknown>;
  const mntr = await fourLetter('mntr');
  result.zkWatchCount = Number(/zk_watch_count\s+(\d+)/.exec(mntr)?.[1] ?? -1);
  result.zkWchcPaths = result.sessionId ? (parseWchc(await fourLetter('wchc')).get(String(result.sessionId)) ?? []).length : 0;
  child.stdin!.write('exit\n');
  await once(child, 'exit');
  return result;
}

async function main(): Promise<void> {
  const interfaces = arg('interfaces', 10_000);
  const providers = arg('providers', 48);
  const called = arg('called', 20);
  const zk = await startZooKeeper({ heapMb: 3072 });
  const writer = await ZkWriter.connect(zk.connectString, { sessionTimeoutMs: 120_000 });
  try {
    const t0 = Date.now();
    const nodes = await populateDubbo(writer, interfaces, providers);
    const writeMs = Date.now() - t0;
    process.stdout.write(`wrote ${nodes} nodes in ${writeMs} ms\n`);
    const runs: Record<string, Record<string, unknown>> = {};
    for (const n of [0, called, interfaces]) {
      const r = await runSubscriber(zk.connectString, n, interfaces, zk.fourLetter);
      runs[`subscribe${n}`] = r;
      process.stdout.write(`${String(n).padStart(6)} subscriptions: ready ${r.readyMs} ms, cpu ${r.cpuMs} ms, heap ${(r.after as { heapUsedMb: number }).heapUsedMb} MB, rss ${(r.after as { rssMb: number }).rssMb} MB, ` +
        `${r.endpoints} endpoints, watches ${r.watches} (ZooKeeper: ${r.zkWatchCount}, wchc lists ${r.zkWchcPaths})\n`);
    }
    const report = {
      date: new Date().toISOString(), node: process.version, cpus: os.availableParallelism(), loadAverage: os.loadavg(), commit: commit(),
      registry: { interfaces, providersPerInterface: providers, nodes, writeMs },
      runs,
    };
    const out = path.join(ROOT, 'bench', 'registry', 'results', 'latest.json');
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`node ${process.version}, ${os.availableParallelism()} CPUs, commit ${report.commit}; results: ${path.relative(process.cwd(), out)}\n`);
  } finally {
    await zk.destroy();
    writer.close();
  }
}

main().catch((err) => { console.error(err); process.exitCode = 1; });
