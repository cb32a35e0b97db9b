/**
 * Child processes for the load benchmarks: start in the foreground, find by pid, measure CPU and
 * memory from /proc, stop by pid. Nothing here ever signals a process it did not start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

/** Clock ticks per second for /proc/<pid>/stat utime and stime (USER_HZ; 100 on Linux x86-64 and arm64). */
export const CLK_TCK = 100;

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** The last 16 KiB of stdout and stderr, for error reports. */
  output(): string;
  /** Lines that look like errors (pino level error/fatal, or plain text mentioning an error), all output long. */
  errorLines(): { count: number; first: string; last: string };
  exited: Promise<number | null>;
  alive(): boolean;
}

const started = new Set<Child>();

/** Starts a program in the foreground; its pid is written to `pidFile` when given. */
export function startChild(name: string, cmd: string, args: string[], opts: { pidFile?: string; env?: NodeJS.ProcessEnv; stdin?: boolean } = {}): Child {
  const proc = spawn(cmd, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  if (proc.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  let out = '';
  const errs = { count: 0, first: '', last: '' };
  const partial = ['', ''];
  const keep = (i: number) => (d: Buffer) => {
    const text = d.toString('utf8');
    out = (out + text).slice(-16384);
    const lines = (partial[i] + text).split('\n');
    partial[i] = lines.pop()!.slice(-65536);
    for (const l of lines) {
      if (/"level":(50|60)/.test(l) || (!l.startsWith('{') && /error/i.test(l))) {
        errs.count++;
        if (!errs.first) errs.first = l.slice(0, 2000);
        errs.last = l.slice(0, 2000);
      }
    }
  };
  proc.stdout!.on('data', keep(0));
  proc.stderr!.on('data', keep(1));
  let done = false;
  const exited = once(proc, 'exit').then(([code, signal]) => { done = true; return (code as number | null) ?? (signal ? -1 : null); });
  const child: Child = { name, proc, pid: proc.pid, output: () => out, errorLines: () => ({ ...errs }), exited, alive: () => !done };
  started.add(child);
  exited.then(() => started.delete(child), () => started.delete(child));
  if (opts.pidFile) writeFileSync(opts.pidFile, `${proc.pid}\n`);
  return child;
}

/** `bash -c 'ulimit -n …; exec prog args'`, so the pid is the program's own. */
export function withOpenFileLimit(limit: number, cmd: string, args: string[]): [string, string[]] {
  // an unprivileged container may cap the hard limit below `limit`: take the hard limit then
  const script = `ulimit -n ${limit} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`;
  return ['bash', ['-c', script, cmd, ...args]];
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopChild(child: Child, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child.alive()) return;
  try { process.kill(child.pid, signal); } catch { /* already gone */ }
  const timer = new Promise<'timeout'>((r) => { const t = setTimeout(() => r('timeout'), graceMs); t.unref(); });
  if (await Promise.race([child.exited.then(() => 'exited' as const), timer]) === 'timeout') {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
    await child.exited;
  }
}

/** Stops every child this process started that still runs (SIGTERM, then SIGKILL), by pid. */
export async function stopAllStarted(graceMs = 5000): Promise<void> {
  await Promise.all([...started].map((c) => stopChild(c, graceMs)));
}

/** Short-lived programs (wrk, h2load) run by exec(): known here so an interrupted run can stop them. */
const transient = new Set<number>();
export function trackPid(pid: number | undefined): void { if (pid !== undefined) transient.add(pid); }
export function untrackPid(pid: number | undefined): void { if (pid !== undefined) transient.delete(pid); }

/**
 * Last resort (exit, Ctrl-C): SIGKILL every process this one started and still runs, with its
 * descendants (nginx's workers outlive a killed master otherwise), all by pid.
 */
export function killAllStartedSync(): void {
  const roots = [...[...started].filter((c) => c.alive()).map((c) => c.pid), ...transient];
  const pids = new Set<number>();
  for (const r of roots) for (const p of processTree(r)) pids.add(p);
  for (const p of pids) {
    try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
  }
}

interface ProcStat { pid: number; ppid: number; ticks: number; systemTicks: number }

function readStat(pid: number): ProcStat | null {
  let s: string;
  try { s = readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return null; }
  // comm may contain spaces and parentheses: fields start after the last ')'
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15
  return { pid, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), systemTicks: Number(f[12]) };
}

/** `pid` and all its descendants (nginx and haproxy workers are children of their master). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (!st) continue;
    let l = children.get(st.ppid);
    if (!l) children.set(st.ppid, (l = []));
    l.push(st.pid);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop()!;
    out.push(p);
    for (const c of children.get(p) ?? []) todo.push(c);
  }
  return out;
}

/**
 * CPU time (user + system, all threads) of a process tree, in microseconds. For a process,
 * /proc/<pid>/stat already sums every thread, live or exited.
 */
export function treeCpuMicros(pid: number): number {
  return treeCpu(pid).total;
}

/**
 * The same, and its part in the kernel (system time: the system calls, the network stack they
 * run, the scheduler), in microseconds. The kernel's accounting splits one precise total by
 * sampling, so the part is good to a few per cent over a run of seconds.
 */
export function treeCpu(pid: number): { total: number; system: number } {
  let ticks = 0;
  let systemTicks = 0;
  for (const p of processTree(pid)) {
    const st = readStat(p);
    if (!st) continue;
    ticks += st.ticks;
    systemTicks += st.systemTicks;
  }
  return { total: (ticks * 1e6) / CLK_TCK, system: (systemTicks * 1e6) / CLK_TCK };
}

/**
 * CPU time of one thread, in microseconds: the scheduler's own nanosecond count
 * (/proc/<pid>/task/<tid>/schedstat) where the kernel keeps it, else utime + stime in ticks.
 * For the main thread of a process, tid = pid.
 */
export function threadCpuMicros(pid: number, tid = pid): number {
  try {
    const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    if (Number.isFinite(ns) && ns > 0) return ns / 1000;
  } catch { /* no schedstat: fall back to ticks */ }
  try {
    const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** VmRSS of a process tree, in KiB. */
export function treeRssKiB(pid: number): number {
  let kib = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) kib += Number(m[1]);
    } catch { /* exited */ }
  }
  return kib;
}

/** A port that was free a moment ago (bind to 0, read, close). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export async function freePorts(n: number): Promise<number[]> {
  // hold them all at once so the same port is not returned twice
  const srvs = await Promise.all(Array.from({ length: n }, async () => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return s;
  }));
  const ports = srvs.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(srvs.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** One HTTP/1.1 GET without keep-alive; status 0 on a connection error. */
export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: 0, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.setTimeout(timeoutMs, () => req.destroy());
  });
}

/** Polls `fn` every 50 ms until it is truthy; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs: number, child?: Child): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (child && !child.alive()) throw new Error(`${child.name} exited while waiting for ${what}\n${child.output().trim().slice(-1500)}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${child ? `\n${child.output().trim().slice(-1500)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until GET url answers 200. */
export function waitHttp200(url: string, timeoutMs: number, child?: Child): Promise<boolean> {
  return waitFor(`200 from ${url}`, async () => (await httpGet(url, 1000)).status === 200, timeoutMs, child);
}
