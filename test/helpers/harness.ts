/**
 * Test harness: a real Sluice (in this process, or as a child process), real
 * upstream servers on port 0, real clients run as programs. Everything binds to
 * loopback or to addresses inside network namespaces the test made itself.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { buildConfig } from '../../src/config/config';
import { Sluice } from '../../src/main/sluice';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BIN = path.join(ROOT, 'bin', 'sluice.js');

/**
 * The admin token of every Sluice a test starts through withTestDefaults, and the file (0600)
 * that holds it: POST requests to the admin API must carry it (see adminPost).
 */
export const ADMIN_TOKEN = 'sluice-test-admin-token-0123456789abcdef';
export const ADMIN_TOKEN_FILE = path.join(os.tmpdir(), `sluice-test-admin-${process.pid}`, 'token');

function adminTokenFile(): string {
  if (!existsSync(ADMIN_TOKEN_FILE)) {
    mkdirSync(path.dirname(ADMIN_TOKEN_FILE), { recursive: true, mode: 0o700 });
    writeFileSync(ADMIN_TOKEN_FILE, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    process.once('exit', () => rmSync(path.dirname(ADMIN_TOKEN_FILE), { recursive: true, force: true }));
  }
  return ADMIN_TOKEN_FILE;
}

/** `authorization` header for POST requests to the admin API. */
export const ADMIN_AUTH = `Bearer ${ADMIN_TOKEN}`;

/** A config document with every listener and the admin on port 0 unless given, the admin with the test token. */
export function withTestDefaults(doc: Record<string, unknown>): Record<string, unknown> {
  return {
    admin: { address: '127.0.0.1:0', tokenFile: adminTokenFile() },
    workers: { threads: 2 },
    ...doc,
  };
}

export interface RunningSluice {
  sluice: Sluice;
  admin: string;
  port(listener: string): number;
  stop(): Promise<void>;
}

export async function startSluice(doc: Record<string, unknown>, opts: { configPath?: string; watchIntervalMs?: number } = {}): Promise<RunningSluice> {
  const config = buildConfig(withTestDefaults(doc), 'test config');
  const sluice = await Sluice.start({ config, configPath: opts.configPath, watchIntervalMs: opts.watchIntervalMs ?? 100, debugEndpoints: true });
  const a = sluice.adminAddress()!;
  return {
    sluice,
    admin: `http://127.0.0.1:${a.port}`,
    port: (name) => sluice.listenerAddress(name)!.port,
    stop: () => sluice.stop(1000, 0),
  };
}

/** One worker (every connection reads through the same buffer), listener `app` to the cluster `web` at `upstreamPort`; stopped at the test's end. */
export async function oneWorkerSluice(t: { teardown(fn: () => unknown): void }, upstreamPort: number): Promise<RunningSluice> {
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${upstreamPort}`] }],
  });
  t.teardown(() => s.stop());
  return s;
}

export function writeConfig(doc: Record<string, unknown>, dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-test-'))): string {
  const file = path.join(dir, 'sluice.yaml');
  writeFileSync(file, YAML.stringify(doc));
  return file;
}

export interface ChildSluice {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * Sluice as its own process, through the real CLI. `unread`: stdout and stderr are read only up
 * to the "sluice started" line, then never again (pipes nobody reads); a test may read them
 * later through `proc.stdout` / `proc.stderr`.
 */
export function spawnSluice(
  args: string[],
  opts: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv; netns?: string; unread?: boolean; wrap?: string[] } = {},
): ChildSluice {
  // `wrap`: a command that runs Sluice (prlimit --nofile=N:N --, say)
  const node = [...(opts.wrap ?? []), process.execPath, BIN, ...args];
  const cmd = opts.netns ? 'ip' : node[0];
  const argv = opts.netns ? ['netns', 'exec', opts.netns, ...node] : node.slice(1);
  const proc = spawn(cmd, argv, {
    env: { ...process.env, SLUICE_DEBUG_ENDPOINTS: '1', ...opts.env },
    uid: opts.uid,
    gid: opts.gid,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const onData = (d: Buffer) => {
    out += d;
    if (opts.unread && /"msg":"sluice started"\}\n/.test(out)) {
      for (const s of [proc.stdout!, proc.stderr!]) { s.removeListener('data', onData); s.pause(); }
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  return { proc, output: () => out, exited };
}

export interface Upstream {
  server: http.Server | http2.Http2Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** An HTTP/1.1 server on 127.0.0.1:0 (or the given host). */
export async function httpUpstream(handler: http.RequestListener, host = '127.0.0.1'): Promise<Upstream> {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 30_000;
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    server, port, url: `http://${host}:${port}`,
    close: () => new Promise((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}

/** An h2c server on 127.0.0.1:0. */
export async function h2Upstream(onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void, host = '127.0.0.1'): Promise<Upstream> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => { sessions.add(s); s.on('close', () => sessions.delete(s)); });
  server.on('stream', onStream);
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    server, port, url: `http://${host}:${port}`,
    close: () => new Promise((r) => { for (const s of sessions) s.destroy(); server.close(() => r()); }),
  };
}

export interface ExecResult { code: number | null; stdout: string; stderr: string }

/** Runs a program (curl, h2load, ...) with a hard time limit. */
export function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Polls until `fn` returns a truthy value; fails after `timeoutMs`. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** GET an admin path (or any URL) without keep-alive. */
export async function get(url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${url} timed out`)));
  });
}

/** POST to an admin path with the test token (ADMIN_TOKEN), or with `auth` instead (null: none). */
export function adminPost(admin: string, pathname: string, body = '', auth: string | null = ADMIN_AUTH): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return adminRequest(admin, 'POST', pathname, body, auth);
}

/** Any method to an admin path, with the test token unless `auth` says otherwise (null: none). */
export async function adminRequest(admin: string, method: string, pathname: string, body = '', auth: string | null = ADMIN_AUTH): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/yaml' };
    if (auth !== null) headers.authorization = auth;
    const req = http.request(`${admin}${pathname}`, { method, agent: false, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${admin}${pathname} timed out`)));
    req.end(body);
  });
}

export function parseStats(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

/** Parses /stats into series → value. */
export async function stats(admin: string): Promise<Map<string, number>> {
  return parseStats((await get(`${admin}/stats`)).body);
}

/** Open file descriptors of a process (this one by default). */
export function openFds(pid: number | 'self' = 'self'): number {
  return require('node:fs').readdirSync(`/proc/${pid}/fd`).length;
}

/** The descriptor count of process `pid` once it stops changing (the same for about half a second). */
export async function settledFds(pid: number): Promise<number> {
  let last = -1;
  let same = 0;
  return waitFor(() => {
    const n = openFds(pid);
    same = n === last ? same + 1 : 0;
    last = n;
    return same >= 25 ? n : 0;
  }, 20_000, 'a steady descriptor count');
}

/** Asserts that process `pid` comes back to within `margin` descriptors of `baseline` (waiting up to 20 s). */
export async function fdsBackTo(t: { ok(v: boolean, msg: string): unknown }, pid: number, baseline: number, what: string, margin = 2): Promise<void> {
  const n = await waitFor(() => {
    const c = openFds(pid);
    return c <= baseline + margin ? c : 0;
  }, 20_000, `descriptor count back within ${margin} of ${baseline}`).catch(() => openFds(pid));
  t.ok(n <= baseline + margin, `${what}: ${n} open descriptors, baseline ${baseline}`);
}
