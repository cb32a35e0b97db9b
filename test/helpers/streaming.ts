/**
 * For the body-streaming tests: Sluice in its own process (through the real CLI)
 * so that its resident memory can be watched from /proc, and clients the test
 * can stop and continue by pid.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { run, spawnSluice, waitFor, writeConfig } from './harness';

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Samples a process's RSS until stopped; reports the peak. */
export function watchRss(pid: number): { stop(): number } {
  let peak = rssBytes(pid);
  const timer = setInterval(() => { try { peak = Math.max(peak, rssBytes(pid)); } catch { /* exited */ } }, 25);
  return { stop: () => { clearInterval(timer); try { peak = Math.max(peak, rssBytes(pid)); } catch { /* exited */ } return peak; } };
}

export const MB = (n: number) => `${(n / (1 << 20)).toFixed(1)} MB`;

/** A program we started, with its pid, so that the test can stop and continue it. */
export function spawnClient(cmd: string, args: string[], timeoutMs: number): { pid: number; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const done = once(p, 'exit').then(([code]) => { clearTimeout(timer); return { code: code as number | null, stdout, stderr }; });
  return { pid: p.pid!, done };
}

export interface Proxy { port: number; pid: number }

/** Sluice through the real CLI, in its own process, in front of `upstreamPort`. */
export async function startChild(t: Test, upstreamPort: number, protocol: 'auto' | 'http1' | 'http2' = 'auto'): Promise<Proxy> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-stream-'));
  const cfgFile = writeConfig({
    admin: { address: '127.0.0.1:0' },
    workers: { threads: 2 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', protocol, endpoints: [`127.0.0.1:${upstreamPort}`] }],
    http: { requestTimeoutMs: 120_000 },
  }, dir);
  const child = spawnSluice(['start', '--config', cfgFile]);
  t.teardown(async () => {
    if (child.proc.exitCode === null) { child.proc.kill('SIGTERM'); await child.exited; }
    rmSync(dir, { recursive: true, force: true });
  });
  const started = await waitFor(() => child.output().split('\n').map((l) => { try { return JSON.parse(l); } catch { return null; } })
    .find((j) => j?.msg === 'sluice started'), 20_000, 'sluice to start');
  const port = Number(String(started.listeners.app).split(':').pop());
  // warm both workers, the pool and the JIT before the baseline is taken
  const h2 = protocol === 'http2' ? ['--http2-prior-knowledge'] : [];
  for (let i = 0; i < 4; i++) t.equal((await run('curl', ['-sS', ...h2, `http://127.0.0.1:${port}/warm`])).stdout, 'warm');
  return { port, pid: child.proc.pid! };
}

/** A client to stop once, partway through a download. */
export interface Stall { after: number; ms: number; client: { pid: number } | null; done: boolean }

/**
 * Writes `size` bytes to `out` in 1 MiB chunks, with backpressure. Once `stall.after` bytes are
 * out, the client the test started is stopped (SIGSTOP) for `stall.ms`, once per Stall.
 */
export function pumpStalling(out: NodeJS.WritableStream, size: number, stall: Stall): void {
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  let sent = 0;
  const pump = (): void => {
    while (sent < size) {
      const n = Math.min(chunk.length, size - sent);
      sent += n;
      if (!stall.done && sent >= stall.after && stall.client) {
        stall.done = true;
        const pid = stall.client.pid;
        process.kill(pid, 'SIGSTOP');
        setTimeout(() => { try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ } }, stall.ms);
      }
      if (!out.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { out.once('drain', pump); return; }
    }
    out.end();
  };
  pump();
}

/** Reads `s` in bursts: after every `every` bytes it stops for `ms`, so that its sender's writes back up meanwhile. */
export function readInBursts(s: { on(event: 'data', f: (d: Buffer) => void): unknown; pause(): unknown; resume(): unknown }, every: number, ms: number): void {
  let since = 0;
  s.on('data', (d: Buffer) => {
    since += d.length;
    if (since >= every) {
      since = 0;
      s.pause();
      setTimeout(() => s.resume(), ms);
    }
  });
}
