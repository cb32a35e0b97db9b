/**
 * Logs whose reader does not keep up, with the real CLI: stdout (the access log) and stderr (the
 * process log) are pipes this test stops reading. Memory stays bounded, lines that do not fit
 * are dropped and counted, SIGTERM still ends the process within the drain time, and lines held
 * for a slow reader are written before the process exits.
 */
import { readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import {
  adminPost, get, httpUpstream, run, spawnSluice, stats, withTestDefaults, writeConfig, type ChildSluice,
} from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';

const DRAIN_MS = 5000;

function rssMiB(pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  return kb / 1024;
}

/** The exit code, or 'running' if the process has not exited within `ms` (a failure, not a measurement). */
async function exitWithin(child: ChildSluice, ms: number): Promise<number | null | 'running'> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([child.exited, new Promise<'running'>((res) => { timer = setTimeout(() => res('running'), ms); })]);
  clearTimeout(timer);
  return r;
}

/** `n` HTTP/1 requests to `path` through the proxy with h2load; returns how many succeeded. */
async function load(port: number, n: number, path = '/'): Promise<number> {
  const r = await run('h2load', ['-n', String(n), '-c', '8', '--h1', `http://127.0.0.1:${port}${path}`], 120_000);
  return Number(/(\d+) succeeded/.exec(r.stdout)?.[1] ?? 0);
}

async function start(t: Test, accessLog: Record<string, unknown>): Promise<{ child: ChildSluice; admin: string; port: number }> {
  const up = await httpUpstream((req, res) => { res.setHeader('content-length', 2); res.end('ok'); });
  const file = writeConfig(withTestDefaults({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    accessLog: { enabled: true, path: 'stdout', ...accessLog },
    drain: { periodMs: 0, timeoutMs: DRAIN_MS }, // no drain period: the exit itself is what is measured
  }));
  const child = spawnSluice(['start', '--config', file], { unread: true });
  t.teardown(async () => {
    if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
    await child.exited;
    await up.close();
  });
  const started = await sluiceStarted(child);
  return { child, admin: started.admin, port: started.ports.app };
}

t.test('stdout and stderr nobody reads: bounded memory, counted drops, and SIGTERM still exits', async (t) => {
  const { child, admin, port } = await start(t, { bufferBytes: 256 << 10 });
  const pid = child.proc.pid!;
  // a long path makes each access log line ~2.3 KB: 40 000 of them are ~90 MB nobody reads
  const path = `/${'p'.repeat(2000)}`;
  t.equal(await load(port, 10_000, path), 10_000, 'warm-up load');
  const before = rssMiB(pid);
  for (let i = 0; i < 4; i++) t.equal(await load(port, 10_000, path), 10_000, `load ${i + 1} of 4`);
  const after = rssMiB(pid);
  // held lines would be ~90 MB; the heap's own growth under this load reached 44 MiB on a busy
  // machine (GC lag, not lines), so the bound sits between the two
  t.ok(after - before < 60, `RSS grew ${(after - before).toFixed(1)} MiB over 40 000 unread lines of 2.3 KB (${before.toFixed(0)} → ${after.toFixed(0)} MiB)`);
  const st = await stats(admin);
  const dropped = st.get('sluice_log_lines_dropped_total{log="access"}') ?? 0;
  // all but what the pipe and two 256 KiB buffers hold
  t.ok(dropped >= 50_000 - 1000, `access log lines dropped and counted: ${dropped}`);
  t.ok(dropped <= 50_000, 'no more than there were lines');

  // fill stderr too: each refused config logs every one of its 3000 issues (~100 KB a line)
  const bad = Array.from({ length: 3000 }, (_, i) => `bogus_field_number_${i}: 1`).join('\n');
  for (let i = 0; i < 20; i++) t.equal((await adminPost(admin, '/config', bad)).status, 400);
  t.equal((await get(`http://127.0.0.1:${port}/`)).body, 'ok', 'still serving');
  t.ok(((await stats(admin)).get('sluice_log_lines_dropped_total{log="process"}') ?? 0) > 0, 'process log lines dropped and counted');

  child.proc.kill('SIGTERM');
  t.equal(await exitWithin(child, DRAIN_MS), 0, `exits 0 within the drain time (${DRAIN_MS} ms)`);
});

t.test('lines held for a slow reader are written before the process exits', async (t) => {
  const { child, admin, port } = await start(t, { bufferBytes: 16 << 20 });
  // ~1.5 MB of lines: far more than the pipe holds, far less than the buffers
  const n = 5000;
  t.equal(await load(port, n), n);
  t.equal((await stats(admin)).get('sluice_log_lines_dropped_total{log="access"}'), 0, 'nothing dropped');
  let out = '';
  child.proc.stdout!.setEncoding('utf8');
  child.proc.kill('SIGTERM');
  // the reader comes back only now
  child.proc.stdout!.on('data', (d: string) => { out += d; });
  child.proc.stdout!.resume();
  t.equal(await exitWithin(child, DRAIN_MS), 0, 'exits 0 within the drain time');
  await new Promise<void>((r) => (child.proc.stdout!.readableEnded ? r() : child.proc.stdout!.once('end', () => r())));
  const lines = out.split('\n').filter(Boolean);
  const requests = lines.filter((l) => { try { return JSON.parse(l).path === '/'; } catch { return false; } });
  t.equal(requests.length, n, 'one whole line for every request');
  t.equal(lines.length, requests.length, 'and nothing else, no line broken or mixed with another');
});
