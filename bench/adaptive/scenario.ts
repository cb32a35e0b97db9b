/**
 * The overload scenario shared by bench/adaptive/overload.ts and its integration test: an
 * application (app.ts) with a cheap and an expensive interface, pinned to one core and measured by
 * a cgroup v2 of its own; Sluice in front of it on an inbound listener; an open-loop load
 * (loadgen.ts); the controller's state polled from GET /protection while the load runs.
 *
 *   core 1: the application (taskset), its own cgroup (adaptiveLimit.cpu.cgroup, cores: 1)
 *   core 0: Sluice (one worker) and the load generator
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import YAML from 'yaml';
import { freePorts, httpGet, startChild, stopChild, waitFor, waitHttp200, type Child } from '../lib/procs';
import type { LoadSpec, Summary } from './loadgen';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SLUICE_BIN = path.join(ROOT, 'bin', 'sluice.js');
const UNIFIED = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((d) => existsSync(path.join(d, 'cgroup.procs')) && existsSync(path.join(d, 'cpu.stat')));

export interface App { child: Child; port: number; cgroup: string | null; stop(): Promise<void> }

/** taskset when there are cores to pin to, else the command as is. */
function pinned(core: number | null, cmd: string, args: string[]): [string, string[]] {
  return core !== null && existsSync('/usr/bin/taskset') && os.availableParallelism() > core ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args];
}

export const APP_CORE = os.availableParallelism() > 1 ? 1 : null;
export const PROXY_CORE = os.availableParallelism() > 1 ? 0 : null;

/** The application, in a cgroup of its own when cgroup v2 can be written (root). */
export async function startApp(name: string, cheapMs: number, costlyMs: number): Promise<App> {
  const [cmd, args] = pinned(APP_CORE, process.execPath, [path.join(__dirname, 'app.js'), String(cheapMs), String(costlyMs)]);
  const child = startChild('app', cmd, args);
  let cgroup: string | null = null;
  if (UNIFIED) {
    try {
      cgroup = path.join(UNIFIED, name);
      mkdirSync(cgroup, { recursive: true });
      writeFileSync(path.join(cgroup, 'cgroup.procs'), String(child.pid));
    } catch { cgroup = null; }
  }
  const port = await waitFor('the application\'s port', () => /"port":(\d+)/.exec(child.output())?.[1], 10_000, child);
  return {
    child, port: Number(port), cgroup,
    stop: async () => {
      await stopChild(child, 2000);
      if (cgroup) {
        for (let i = 0; i < 20; i++) {
          try { rmdirSync(cgroup); break; } catch { await new Promise((r) => setTimeout(r, 50)); }
        }
      }
    },
  };
}

export interface Proxy { child: Child; port: number; admin: string; stop(): Promise<void> }

/** Sluice on an inbound listener in front of the application; `adaptive`: the adaptiveLimit section (null: off). */
export async function startProxy(app: App, adaptive: Record<string, unknown> | null): Promise<Proxy> {
  const [port, adminPort] = await freePorts(2);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-adaptive-'));
  const cpu = app.cgroup ? { cgroup: app.cgroup, cores: 1 } : {};
  const doc = {
    admin: { address: `127.0.0.1:${adminPort}`, tokenFile: path.join(dir, 'token') },
    workers: { threads: 1 },
    listeners: [{ name: 'in', address: `127.0.0.1:${port}`, direction: 'inbound', cluster: 'app' }],
    clusters: [{ name: 'app', endpoints: [`127.0.0.1:${app.port}`] }],
    http: { requestTimeoutMs: 10_000 },
    ...(adaptive ? { adaptiveLimit: { enabled: true, cpu, ...adaptive } } : {}),
  };
  const file = path.join(dir, 'sluice.yaml');
  writeFileSync(file, YAML.stringify(doc));
  const [cmd, args] = pinned(PROXY_CORE, process.execPath, [SLUICE_BIN, 'start', '--config', file]);
  const child = startChild('sluice', cmd, args, { env: { ...process.env, SLUICE_LOG_LEVEL: 'warn' } });
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitHttp200(`${admin}/ready`, 15_000, child);
  return { child, port, admin, stop: () => stopChild(child, 3000) };
}

/** One point of the controller over time (GET /protection), beside what the clients saw. */
export interface Sample {
  t: number;
  usage: number | null;
  state: string;
  /** Per path: the interface's limit (null: none), admitted and refused per second. */
  paths: Record<string, { limit: number | null; admitted: number; refused: number; inflight: number }>;
}

export interface Bucket { t: number; paths: Record<string, { sent: number; ok: number; refused: number; failed: number }> }

export interface LoadResult { summary: Record<string, Summary>; buckets: Bucket[]; samples: Sample[] }

/** The load, through `proxy`, with /protection polled every `spec.bucketMs` when `poll` is given. */
export async function runLoad(spec: LoadSpec, poll: string | null): Promise<LoadResult> {
  const [cmd, args] = pinned(PROXY_CORE, process.execPath, [path.join(__dirname, 'loadgen.js'), JSON.stringify(spec)]);
  const child = startChild('loadgen', cmd, args);
  const buckets: Bucket[] = [];
  const samples: Sample[] = [];
  let summary: Record<string, Summary> | null = null;
  const lines = readline.createInterface({ input: child.proc.stdout! });
  lines.on('line', (l) => {
    try {
      const m = JSON.parse(l) as { done?: boolean; t?: number; paths: never };
      if (m.done) summary = m.paths; else buckets.push(m as unknown as Bucket);
    } catch { /* not ours */ }
  });
  const t0 = performance.now();
  let polling = poll !== null;
  const poller = (async () => {
    while (polling) {
      const r = await httpGet(`${poll}/protection`, 1000);
      if (r.status === 200) {
        const a = (JSON.parse(r.body) as { adaptive: { cpu?: { smoothed: number | null }; state?: string; interfaces?: Array<{ name: string; limit: number | null; admittedPerSecond: number; refusedPerSecond: number; inflight: number }> } }).adaptive;
        const paths: Sample['paths'] = {};
        for (const i of a.interfaces ?? []) {
          const p = i.name.replace(/^GET /, '');
          paths[p] = { limit: i.limit, admitted: i.admittedPerSecond, refused: i.refusedPerSecond, inflight: i.inflight };
        }
        samples.push({ t: Math.round(performance.now() - t0), usage: a.cpu?.smoothed ?? null, state: a.state ?? 'off', paths });
      }
      await new Promise((r) => setTimeout(r, spec.bucketMs));
    }
  })();
  const code = await child.exited;
  polling = false;
  await poller;
  if (!summary) throw new Error(`the load generator exited (${code}) without a summary\n${child.output().slice(-1500)}`);
  return { summary, buckets, samples };
}

/** CPU usage of the application's cgroup over a run, for the plot of the run without adaptive limiting. */
export function cgroupUsageSampler(cgroup: string | null, intervalMs: number): { stop(): Array<{ t: number; usage: number }> } {
  const out: Array<{ t: number; usage: number }> = [];
  if (!cgroup) return { stop: () => out };
  const read = () => {
    try { return Number(/usage_usec (\d+)/.exec(readFileSync(path.join(cgroup, 'cpu.stat'), 'utf8'))![1]); } catch { return NaN; }
  };
  const t0 = performance.now();
  let last = { at: t0, usec: read() };
  const timer = setInterval(() => {
    const at = performance.now();
    const usec = read();
    out.push({ t: Math.round(at - t0), usage: (usec - last.usec) / ((at - last.at) * 1000) });
    last = { at, usec };
  }, intervalMs);
  return { stop: () => { clearInterval(timer); return out; } };
}

/** Leftover cgroups of runs that were killed (their names start with `prefix`), removed when empty. */
export function removeStaleCgroups(prefix: string): void {
  if (!UNIFIED) return;
  for (const d of readdirSync(UNIFIED)) if (d.startsWith(prefix)) { try { rmdirSync(path.join(UNIFIED, d)); } catch { /* in use */ } }
}
