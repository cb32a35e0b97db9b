/**
 * Load generators run as programs (wrk, h2load) and their output parsed into one shape.
 */
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { trackPid, untrackPid } from './procs';

export interface LoadResult {
  /** Requests that completed (any status). */
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Responses that were not 2xx (wrk: not 2xx or 3xx). */
  non2xx: number;
  /** Connect, read, write errors and timeouts, failed or errored streams. */
  errors: number;
  raw: string;
}

export interface ExecResult { code: number | null; stdout: string; stderr: string; timedOut: boolean }

/** Runs a program with a hard time limit (SIGKILL to that child only). */
export function exec(cmd: string, args: string[], timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      untrackPid(child.pid);
      const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: unknown }) | null;
      const code = !e ? 0 : typeof e.code === 'number' ? e.code : null;
      resolve({ code, stdout, stderr, timedOut: !!e?.killed });
    });
    trackPid(child.pid);
  });
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function wrkTime(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(v);
  if (!m) throw new Error(`wrk: cannot read time "${v}"`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

export function parseWrk(out: string): LoadResult {
  const done = /(\d+) requests in ([\d.]+)(us|ms|s|m|h)/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out);
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  if (!done || !rps || !p50 || !p99) throw new Error(`wrk: unexpected output:\n${out}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return {
    requests: Number(done[1]),
    seconds: wrkTime(`${done[2]}${done[3]}`) / 1000,
    rps: Number(rps[1]),
    p50Ms: wrkTime(p50[1]),
    p99Ms: wrkTime(p99[1]),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    errors,
    raw: out,
  };
}

/** wrk with the latency distribution; the run is bounded by its own -d plus a margin. */
export async function wrk(url: string, opts: { threads: number; connections: number; seconds: number; headers?: string[]; script?: string }): Promise<LoadResult> {
  const headers = (opts.headers ?? []).flatMap((h) => ['-H', h]);
  const script = opts.script ? ['-s', opts.script] : [];
  const r = await exec('wrk', [`-t${opts.threads}`, `-c${opts.connections}`, `-d${opts.seconds}s`, '--latency', '--timeout', '5s', ...headers, ...script, url],
    opts.seconds * 1000 + 20_000);
  if (r.code !== 0) throw new Error(`wrk exited ${r.timedOut ? 'after its time limit' : `with ${r.code}`}: ${r.stderr}${r.stdout}`);
  return parseWrk(r.stdout);
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/**
 * h2load over h2c with prior knowledge. Latency percentiles come from its per-request log
 * (start µs, status, duration µs), since h2load itself prints only min/max/mean.
 */
export async function h2load(url: string, opts: { requests: number; clients: number; streams: number; logFile: string; timeoutMs: number }): Promise<LoadResult> {
  rmSync(opts.logFile, { force: true });
  const r = await exec('h2load', ['-n', String(opts.requests), '-c', String(opts.clients), '-m', String(opts.streams),
    '-t', '1', `--log-file=${opts.logFile}`, url], opts.timeoutMs);
  const out = r.stdout + r.stderr;
  if (r.code !== 0 && !/requests:/.test(out)) throw new Error(`h2load exited ${r.timedOut ? 'after its time limit' : `with ${r.code}`}: ${out}`);
  const fin = /finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req\/s/.exec(out);
  const rq = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!fin || !rq || !codes) throw new Error(`h2load: unexpected output:\n${out}`);
  let lines: string[] = [];
  try { lines = readFileSync(opts.logFile, 'utf8').split('\n'); } catch { /* no log: no percentiles */ }
  const lat = new Float64Array(lines.length);
  let n = 0;
  for (const l of lines) {
    const f = l.split('\t');
    if (f.length >= 3) lat[n++] = Number(f[2]) / 1000;
  }
  const sorted = lat.subarray(0, n).sort();
  rmSync(opts.logFile, { force: true });
  const done = Number(rq[3]);
  return {
    requests: done,
    seconds: wrkTime(`${fin[1]}${fin[2]}`) / 1000,
    rps: Number(fin[3]),
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    non2xx: Number(codes[2]) + Number(codes[3]) + Number(codes[4]),
    // "failed" also counts 4xx/5xx answers; errored, timed out and never finished are the errors
    errors: Number(rq[6]) + Number(rq[7]) + (Number(rq[1]) - done),
    raw: out,
  };
}
