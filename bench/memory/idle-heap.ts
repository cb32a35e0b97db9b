/**
 * What an idle keep-alive connection keeps alive in a worker: the live JavaScript heap per
 * connection, from heap snapshots (which collect the garbage first), and by class. Unlike the
 * resident size (memory-idle in bench/load.ts), which also counts heap the collector has not
 * given back and moves with the timing of collections, this number is the same run after run.
 *
 *   node dist/bench/memory/idle-heap.js [--connections N]      (default 5000)
 *
 * Sluice (one worker) forwards to an HTTP upstream in this process; after 1 s of wrk -c50 a first
 * snapshot is taken, then N connections each send one GET, read the answer and stay open
 * (bench/load/idle-client.ts), and a second snapshot is taken. Printed: live heap per
 * connection, the classes that grew, and the resident size per connection beside it.
 */
import { readFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { wrk } from '../lib/clients';
import { freePorts, httpGet, startChild, stopChild, treeRssKiB, waitFor, withOpenFileLimit } from '../lib/procs';
import { commit } from '../lib/run-info';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const argv = process.argv.slice(2);
const at = argv.indexOf('--connections');
const N = at >= 0 ? Number(argv[at + 1]) : 5000;
if (!(N > 0 && N <= 15000)) {
  process.stderr.write('usage: node dist/bench/memory/idle-heap.js [--connections 1..15000]\n');
  process.exit(2);
}

interface Snapshot { total: number; byClass: Map<string, { count: number; bytes: number }> }

/** Live bytes by class (objects by constructor, closures by name, the rest by node type). */
function readSnapshot(file: string): Snapshot {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  const meta = snap.snapshot.meta;
  const nf = meta.node_fields.length;
  const types: string[] = meta.node_types[0];
  const T = meta.node_fields.indexOf('type');
  const NAME = meta.node_fields.indexOf('name');
  const SIZE = meta.node_fields.indexOf('self_size');
  const nodes: number[] = snap.nodes;
  const strings: string[] = snap.strings;
  const byClass = new Map<string, { count: number; bytes: number }>();
  let total = 0;
  for (let i = 0; i < nodes.length; i += nf) {
    const type = types[nodes[i + T]];
    const name = strings[nodes[i + NAME]];
    // the shared-memory and native buffers are no connection's; counted apart by the resident size
    if (name === 'system / JSArrayBufferData') continue;
    const key = type === 'object' ? name : type === 'closure' ? `closure ${name || '(anonymous)'}` : `(${type})`;
    const c = byClass.get(key) ?? { count: 0, bytes: 0 };
    c.count++;
    c.bytes += nodes[i + SIZE];
    byClass.set(key, c);
    total += nodes[i + SIZE];
  }
  return { total, byClass };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-idle-heap-'));
  const [sluicePort, adminPort] = await freePorts(2);
  const body = 'x'.repeat(100);
  const upstream = http.createServer((_req, res) => res.end(body));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const upPort = (upstream.address() as { port: number }).port;
  const config = path.join(dir, 'sluice.yaml');
  writeFileSync(config, [
    `admin: { address: 127.0.0.1:${adminPort} }`,
    'workers: { threads: 1 }',
    'tcp: { sniffTimeoutMs: 5000 }',
    `listeners: [ { name: web, address: 127.0.0.1:${sluicePort}, cluster: up } ]`,
    `clusters: [ { name: up, endpoints: [ 127.0.0.1:${upPort} ] } ]`,
    '',
  ].join('\n'));
  const preload = path.join(__dirname, 'heap-snapshot-preload.js');
  const [cmd, args] = withOpenFileLimit(65536, process.execPath, ['-r', preload, path.join(ROOT, 'bin', 'sluice.js'), 'start', '--config', config]);
  const sluice = startChild('sluice', cmd, args, { env: { ...process.env, SLUICE_HEAP_DIR: dir } });
  let idle: ReturnType<typeof startChild> | null = null;
  try {
    await waitFor('sluice ready', async () => (await httpGet(`http://127.0.0.1:${adminPort}/ready`).catch(() => ({ status: 0 }))).status === 200, 30_000, sluice);
    await wrk(`http://127.0.0.1:${sluicePort}/`, { threads: 1, connections: 50, seconds: 1 });
    await new Promise((r) => setTimeout(r, 500));
    const snapshot = async (n: number): Promise<Snapshot> => {
      writeFileSync(path.join(dir, `take-${n}`), '');
      const done = await waitFor(`heap snapshot ${n}`, () => {
        const f = ['1', '2', '3', '4'].map((t) => path.join(dir, `done-${t}-${n}`)).find((x) => existsSync(x));
        return f ?? null;
      }, 120_000, sluice);
      const thread = path.basename(done).split('-')[1];
      return readSnapshot(path.join(dir, `worker-${thread}-${n}.heapsnapshot`));
    };
    const before = await snapshot(0);
    const rssBefore = treeRssKiB(sluice.pid);
    const [icmd, iargs] = withOpenFileLimit(N + 1024, process.execPath, [path.join(ROOT, 'dist', 'bench', 'load', 'idle-client.js'), '127.0.0.1', String(sluicePort), String(N), '100', '60000']);
    idle = startChild('idle-client', icmd, iargs, { stdin: true });
    const ready = await waitFor('idle connections', () => {
      const line = idle!.output().split('\n').find((l) => l.includes('"event":"ready"'));
      return line ? JSON.parse(line) as { idle: number; errors: number; firstError: string } : null;
    }, 90_000, idle);
    await new Promise((r) => setTimeout(r, 1000));
    const rssAfter = treeRssKiB(sluice.pid);
    const after = await snapshot(1);
    const per = (b: number) => (b / ready.idle).toFixed(0);
    process.stdout.write(`idle-heap: Node ${process.version}, ${os.cpus().length} CPUs, commit ${commit()}, ${new Date().toISOString()}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
    process.stdout.write(`${ready.idle} idle connections (${ready.errors} errors${ready.errors ? `: ${ready.firstError}` : ""})\n`);
    process.stdout.write(`live heap per idle connection: ${per(after.total - before.total)} bytes (worker heap ${(before.total / 1048576).toFixed(1)} → ${(after.total / 1048576).toFixed(1)} MiB)\n`);
    process.stdout.write(`resident size per idle connection: ${per((rssAfter - rssBefore) * 1024)} bytes (moves with the collector's timing)\n`);
    const rows = [...after.byClass].map(([k, a]) => {
      const b = before.byClass.get(k) ?? { count: 0, bytes: 0 };
      return { k, count: a.count - b.count, bytes: a.bytes - b.bytes };
    }).filter((r) => r.bytes > 0).sort((x, y) => y.bytes - x.bytes).slice(0, 20);
    process.stdout.write('\n| class | per connection: objects | bytes |\n| --- | ---: | ---: |\n');
    for (const r of rows) process.stdout.write(`| ${r.k} | ${(r.count / ready.idle).toFixed(2)} | ${per(r.bytes)} |\n`);
  } finally {
    if (idle) { idle.proc.stdin?.end('close\n'); await stopChild(idle, 2000); }
    await stopChild(sluice, 2000, 'SIGKILL');
    upstream.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`idle-heap: ${(err as Error).message}\n`);
  process.exit(1);
});
