/**
 * CPU used by the protected application, as a share of the CPU it may use.
 *
 *   cgroup v2 (a pod or container):  usage = Δ cpu.stat usage_usec / (Δ wall µs × cores)
 *                                    cores = cpu.max quota / period, else the CPUs of
 *                                    cpuset.cpus.effective, else the CPUs online
 *   no cgroup v2 cpu.stat (a host):  usage = 1 − Δ(idle + iowait) / Δ(all) of /proc/stat's cpu line
 *
 * `adaptiveLimit.cpu.cores` replaces the cores a cgroup would give (a cgroup without a quota whose
 * processes are pinned with taskset). Readers take file text so tests give their own.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type ReadText = (file: string) => string | null;

const readText: ReadText = (file) => {
  try { return readFileSync(file, 'utf8'); } catch { return null; }
};

/** usage_usec of a cgroup v2 cpu.stat, or null. */
export function parseCpuStat(text: string | null): number | null {
  if (text === null) return null;
  const m = /^usage_usec (\d+)$/m.exec(text);
  return m ? Number(m[1]) : null;
}

/** Cores a cgroup v2 cpu.max allows (`quota period`; `max period`: no quota, null). */
export function parseCpuMax(text: string | null): number | null {
  if (text === null) return null;
  const [q, p] = text.trim().split(/\s+/);
  if (q === 'max' || q === undefined) return null;
  const quota = Number(q);
  const period = Number(p ?? 100000);
  return quota > 0 && period > 0 ? quota / period : null;
}

/** How many CPUs a cpuset list names (`0-3,6`), or null. */
export function parseCpuList(text: string | null): number | null {
  if (text === null || text.trim() === '') return null;
  let n = 0;
  for (const part of text.trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    if (!Number.isInteger(a)) return null;
    n += b === undefined ? 1 : b - a + 1;
  }
  return n > 0 ? n : null;
}

/** The busy and total jiffies of /proc/stat's first line (`cpu ...`). */
export function parseProcStat(text: string | null): { busy: number; total: number } | null {
  if (text === null) return null;
  const line = /^cpu\s+(.+)$/m.exec(text);
  if (!line) return null;
  const f = line[1].trim().split(/\s+/).map(Number);
  if (f.length < 4 || f.some((x) => !Number.isFinite(x))) return null;
  // user nice system idle iowait irq softirq steal (guest is inside user)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3] + (f[4] ?? 0);
  return { busy: total - idle, total };
}

export interface CpuSource {
  /** `cgroup <dir>` or `host /proc/stat`: what is measured, for the admin view. */
  readonly describe: string;
  readonly cores: number;
  /** Usage since the previous call, a share of `cores` (may pass 1 a little: accounting is not exact); null on the first call or a read failure. */
  sample(nowMs: number): number | null;
}

export interface CpuOptions {
  /** A cgroup v2 directory; default /sys/fs/cgroup. */
  cgroup?: string;
  cores?: number;
  read?: ReadText;
  procStat?: string;
}

/** The cgroup's cpu.stat if it has one, else the host's /proc/stat. */
export function openCpuSource(opts: CpuOptions = {}): CpuSource {
  const read = opts.read ?? readText;
  const dir = opts.cgroup ?? '/sys/fs/cgroup';
  const statFile = path.join(dir, 'cpu.stat');
  if (parseCpuStat(read(statFile)) !== null) {
    const cores = opts.cores
      ?? parseCpuMax(read(path.join(dir, 'cpu.max')))
      ?? parseCpuList(read(path.join(dir, 'cpuset.cpus.effective')))
      ?? os.availableParallelism();
    let last: { at: number; usec: number } | null = null;
    return {
      describe: `cgroup ${dir}`,
      cores,
      sample(nowMs) {
        const usec = parseCpuStat(read(statFile));
        if (usec === null) return null;
        const prev = last;
        last = { at: nowMs, usec };
        if (prev === null || nowMs <= prev.at) return null;
        return (usec - prev.usec) / ((nowMs - prev.at) * 1000 * cores);
      },
    };
  }
  const file = opts.procStat ?? '/proc/stat';
  let last: { busy: number; total: number } | null = null;
  return {
    describe: `host ${file}`,
    cores: opts.cores ?? os.availableParallelism(),
    sample() {
      const s = parseProcStat(read(file));
      if (s === null) return null;
      const prev = last;
      last = s;
      if (prev === null || s.total <= prev.total) return null;
      return (s.busy - prev.busy) / (s.total - prev.total);
    },
  };
}
