/**
 * System calls made by a set of processes while something runs, counted per thread.
 *
 *   perf stat -e raw_syscalls:sys_enter --per-thread -x, -p PID,PID… -o FILE   (a tracepoint
 *   counter: a few hundred ns per call, the only cost) ─ SIGINT when the load is done ─ parse
 *
 * Where perf cannot count (no perf, no tracepoint access), `strace -c -f` is the fallback: it
 * stops the traced program at every call, so it gives the count and nothing else; the CPU
 * numbers of a run are always taken in a pass with nothing attached.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { trackPid, untrackPid } from './procs';

export interface SyscallCount {
  tool: 'perf' | 'strace';
  total: number;
  /** perf only: per thread id. */
  byTid: Map<number, number>;
  /** strace only: per call name, the top ones. */
  byName?: Map<string, number>;
}

let perfWorks: boolean | undefined;

function havePerf(): boolean {
  if (perfWorks === undefined) {
    const r = spawnSync('perf', ['stat', '-x,', '-e', 'raw_syscalls:sys_enter', '--', 'true'], { encoding: 'utf8', timeout: 10_000 });
    perfWorks = r.status === 0 && /raw_syscalls:sys_enter/.test(r.stderr ?? '') && !/not supported|<not counted>/.test(r.stderr ?? '');
  }
  return perfWorks;
}

function haveStrace(): boolean {
  return spawnSync('strace', ['-V'], { timeout: 5000 }).status === 0;
}

/** The tool this machine can count with, or null. */
export function syscallTool(): 'perf' | 'strace' | null {
  return havePerf() ? 'perf' : haveStrace() ? 'strace' : null;
}

/**
 * Counts the system calls of `pids` (every thread of each) while `during` runs. `byName`: counts per
 * call name are needed (strace only: perf counts the tracepoint, not which call).
 */
export async function countSyscalls<T>(pids: number[], file: string, during: () => Promise<T>, byName = false): Promise<{ count: SyscallCount; result: T }> {
  const tool = byName ? (haveStrace() ? 'strace' : null) : syscallTool();
  if (!tool) throw new Error(`${byName ? 'strace' : 'neither perf nor strace'} cannot count system calls here`);
  rmSync(file, { force: true });
  const args = tool === 'perf'
    ? ['stat', '-e', 'raw_syscalls:sys_enter', '--per-thread', '-x,', '-o', file, '-p', pids.join(',')]
    : ['-c', '-f', '-o', file, ...pids.flatMap((p) => ['-p', String(p)])];
  const proc = spawn(tool, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  trackPid(proc.pid);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString('utf8'); });
  // both attach within a few ms; give them time so the first calls of the load are counted
  await new Promise((r) => setTimeout(r, tool === 'perf' ? 300 : 1000));
  let result: T;
  try {
    result = await during();
  } finally {
    const exited = once(proc, 'exit');
    proc.kill('SIGINT');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    untrackPid(proc.pid);
  }
  let text = '';
  try { text = readFileSync(file, 'utf8'); } catch { throw new Error(`${tool} wrote no counts: ${err.trim().slice(-500)}`); }
  rmSync(file, { force: true });
  return { count: tool === 'perf' ? parsePerf(text) : parseStrace(text), result };
}

/** `comm-tid,count,unit,event,…` per thread; `<not counted>` for a thread that never ran. */
export function parsePerf(text: string): SyscallCount {
  const byTid = new Map<number, number>();
  let total = 0;
  for (const line of text.split('\n')) {
    const f = line.split(',');
    if (f.length < 4 || f[3] !== 'raw_syscalls:sys_enter') continue;
    const tid = Number(/-(\d+)$/.exec(f[0])?.[1]);
    const n = Number(f[1]);
    if (!Number.isFinite(n)) continue;
    total += n;
    if (Number.isFinite(tid)) byTid.set(tid, (byTid.get(tid) ?? 0) + n);
  }
  return { tool: 'perf', total, byTid };
}

/** The summary table of `strace -c`: `% time  seconds  usecs/call  calls  errors  syscall`. */
export function parseStrace(text: string): SyscallCount {
  const byName = new Map<string, number>();
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (!m || m[2] === 'total') continue;
    byName.set(m[2], Number(m[1]));
    total += Number(m[1]);
  }
  return { tool: 'strace', total, byTid: new Map(), byName };
}

/** The system calls that write to a descriptor (a socket, a pipe, an eventfd). */
export const WRITE_CALLS = ['write', 'writev', 'pwrite64', 'pwritev', 'send', 'sendto', 'sendmsg', 'sendmmsg'];

/** How many of the calls counted by name were writes (WRITE_CALLS). */
export function writeCalls(c: SyscallCount): number {
  let n = 0;
  for (const name of WRITE_CALLS) n += c.byName?.get(name) ?? 0;
  return n;
}
