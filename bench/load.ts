/**
 * Load scenarios: the same traffic straight to the upstream and through Sluice, nginx and haproxy,
 * in one run, so every number is read beside its baseline.
 *
 *   node dist/bench/load.js [--quick] [--scenario NAME[,NAME]] [--threads N] [--node-floor] [--out FILE]
 *
 * Scenarios: http1-keepalive, http1-single-connection, http1-new-connection, http1-c1000, http1-upload,
 * http1-download, http2, memory-idle, dubbo-header, dubbo-attachment, and filter variants (http1-fault0,
 * http1-mirror100, http1-adaptive, ...). http1-new-connection is one request per connection (`Connection: close`): CPU per
 * connection of each proxy and its ratio to nginx's and haproxy's, system calls per connection, and
 * for Sluice the main thread's own CPU and calls per connection (what accepting and handing off costs);
 * http1-new-connection-c1 is the same one connection at a time, where every thread sleeps and wakes
 * for each connection.
 * http1-c1000 is keep-alive with 1000 connections; http1-upload and http1-download carry 10 MiB bodies
 * (CPU per MiB). The dubbo scenarios compare direct and Sluice (nginx and haproxy do not speak Dubbo);
 * dubbo-header adds haproxy in `mode tcp` in front of the same provider, and write system calls per
 * call of Sluice and haproxy (strace, a pass of its own). The load is bench/load/dubbo-load.ts against
 * bench/load/dubbo-provider.ts (see bench/lib/configs.ts). After the scenarios, one table puts the rows
 * of the data path (new connections, keep-alive c50 and c1000, large bodies, idle memory, h2c, Dubbo
 * writes) side by side for Sluice, nginx and haproxy with the ratios.
 * Besides throughput and latency it reports each proxy's CPU time per request (user + system of
 * the proxy's process tree, read from /proc), which is steadier than throughput on a shared machine.
 * --node-floor adds a minimal node:http2 proxy to the http2 scenario: the floor for any proxy built
 * on node:http2 (Sluice's HTTP/2 path is); and to http1-keepalive, http1-new-connection and
 * http1-ratelimited the floor of Sluice's design for HTTP/1.1 (bench/load/h1-floor.ts: native
 * accept on the main thread, the hand-off to a worker thread, Node sockets, nothing else).
 * Results: a table on stdout and JSON in bench/results/latest.json.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { h2load, wrk, type LoadResult } from './lib/clients';
import { BIG_BODY_BYTES, BIG_DOWNLOAD, BIG_FILE, BIG_UPLOAD, BODY, proxyHaproxy, proxyNginx, sluiceConfig, upstreamNginx, type Ports } from './lib/configs';
import { dubboCall, dubboLoad, DUBBO_FRAME_BYTES, type DubboLoadResult } from './load/dubbo-load';
import {
  freePorts, httpGet, killAllStartedSync, processTree, startChild, stopAllStarted, stopChild, threadCpuMicros, treeCpu, treeRssKiB,
  waitFor, withOpenFileLimit, type Child,
} from './lib/procs';
import { countSyscalls, syscallTool, writeCalls } from './lib/syscalls';

const ROOT = path.resolve(__dirname, '..', '..');
const SLUICE_BIN = path.join(ROOT, 'bin', 'sluice.js');
const IDLE_CLIENT = path.join(__dirname, 'load', 'idle-client.js');
const NODE_H2_PROXY = path.join(__dirname, 'load', 'node-h2-proxy.js');
const HTTP2_PROXY_BASELINE = path.join(__dirname, 'load', 'http2-proxy-baseline.js');
const H1_FLOOR = path.join(__dirname, 'load', 'h1-floor.js');
const DUBBO_PROVIDER = path.join(__dirname, 'load', 'dubbo-provider.js');
const RESULTS = path.join(ROOT, 'bench', 'results');
const NGINX = '/usr/sbin/nginx';
const HAPROXY = '/usr/sbin/haproxy';

export const SCENARIOS = [
  'http1-keepalive', 'http1-single-connection', 'http1-new-connection', 'http2', 'memory-idle', 'dubbo-header', 'dubbo-attachment',
  'http1-fault0', 'http1-mirror100', 'http1-adaptive', 'http2-fault0', 'http2-mirror100', 'dubbo-fault0', 'dubbo-mirror100',
  'http1-ratelimit', 'http1-ratelimited', 'http1-upload', 'http1-download', 'http1-c1000', 'http1-new-connection-c1',
] as const;
export type ScenarioName = typeof SCENARIOS[number];
type TargetName = 'direct' | 'sluice' | 'nginx' | 'haproxy' | 'node-http2' | 'http2-proxy' | 'node-h1-floor';
/**
 * What a target is asked to serve: HTTP/1.1, h2c, or Dubbo routed on the interface or on an
 * attachment; `-fault0` / `-mirror100`: the same through Sluice's filter-variant listeners.
 */
type Kind = 'h1' | 'h2' | DubboKind | 'h1-fault0' | 'h1-mirror100' | 'h1-adaptive' | 'h2-fault0' | 'h2-mirror100' | 'h1-ratelimit' | 'h1-ratelimited';
type DubboKind = 'dubbo-header' | 'dubbo-attachment' | 'dubbo-fault0' | 'dubbo-mirror100';
/** The value each Dubbo provider port answers with (its name), so a row shows who answered. */
const DUBBO_VALUE: Record<DubboKind, string> = { 'dubbo-header': 'plain', 'dubbo-attachment': 'group2', 'dubbo-fault0': 'plain', 'dubbo-mirror100': 'plain' };
const TARGETS: TargetName[] = ['direct', 'sluice', 'nginx', 'haproxy'];

export interface Options { quick: boolean; scenarios: ScenarioName[]; threads: number; out: string; nodeFloor: boolean }

export interface Row {
  scenario: ScenarioName;
  target: TargetName;
  /** What the target does in this scenario, when it is not the obvious. */
  note?: string;
  requests?: number;
  rps?: number;
  p50Ms?: number;
  p99Ms?: number;
  /** Proxy process tree CPU per completed request; for `direct`, the upstream's own. */
  cpuUsPerReq?: number;
  /** The part of cpuUsPerReq spent in the kernel (system time). */
  sysUsPerReq?: number;
  rpsRatio?: number;
  p50DiffMs?: number;
  non2xx?: number;
  errors?: number;
  /** memory-idle */
  connections?: number;
  rssBeforeKiB?: number;
  rssAfterKiB?: number;
  kibPerConnection?: number;
  /** Sluice only: upstream connections opened during the measurement, and open at its end. */
  upstreamCxOpened?: number;
  upstreamCxActive?: number;
  /** http1-new-connection: the proxy's CPU per connection over nginx's and haproxy's in the same run. */
  cpuVsNginx?: number;
  cpuVsHaproxy?: number;
  /** http1-new-connection: system calls per connection (every thread of the process tree), from a second pass. */
  syscallsPerConn?: number;
  /** Sluice, http1-new-connection: the main thread's own CPU and system calls per connection. */
  mainCpuUsPerConn?: number;
  mainSyscallsPerConn?: number;
  /** http1-upload, http1-download: CPU per MiB of body carried, and MiB/s. */
  cpuUsPerMiB?: number;
  mibPerSecond?: number;
  /** dubbo-header: write-family system calls (WRITE_CALLS) per call, both directions, counted by strace in a pass of their own. */
  writesPerCall?: number;
  /** dubbo-header, Sluice: write and writev calls per call from /proc/PID/io (syscw) in a pass with nothing attached. */
  writesPerCallUntraced?: number;
  error?: string;
}

export interface Report {
  date: string;
  node: string;
  cpus: number;
  commit: string;
  machine: string;
  loadAverageAtStart: number[];
  /** Load average when each scenario started. */
  loadAverageByScenario?: Record<string, number[]>;
  /** How system calls were counted (perf or strace), when a scenario counted them. */
  syscallTool?: string | null;
  quick: boolean;
  sluiceThreads: number;
  versions: Record<string, string>;
  rows: Row[];
  /** Things that looked wrong in Sluice during the run: non-2xx, errors, counters, crashes. */
  sluiceProblems: string[];
  targets: Record<string, string>;
}

export function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, scenarios: [...SCENARIOS], threads: 1, out: path.join(RESULTS, 'latest.json'), nodeFloor: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
    if (a === '--quick') o.quick = true;
    else if (a === '--node-floor') o.nodeFloor = true;
    else if (a === '--scenario' || a.startsWith('--scenario=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : val();
      const names = v.split(',').map((s) => s.trim()).filter(Boolean);
      for (const n of names) if (!(SCENARIOS as readonly string[]).includes(n)) throw new Error(`unknown scenario "${n}" (one of ${SCENARIOS.join(', ')})`);
      o.scenarios = names as ScenarioName[];
    } else if (a === '--threads' || a.startsWith('--threads=')) {
      const n = Number(a.includes('=') ? a.slice(a.indexOf('=') + 1) : val());
      if (!(n === 1 || n === 2)) throw new Error('--threads must be 1 or 2');
      o.threads = n;
    } else if (a === '--out' || a.startsWith('--out=')) {
      o.out = path.resolve(a.includes('=') ? a.slice(a.indexOf('=') + 1) : val());
    } else throw new Error(`unknown option ${a}`);
  }
  return o;
}

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim() || 'unknown';
  } catch {
    return 'unknown';
  }
}

function firstLine(cmd: string, args: string[]): string {
  try {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim()) ?? 'unknown';
  } catch { return 'unknown'; }
}

/** Waits until an HTTP/1.1 GET answers 200 with the upstream's body (so the proxy really forwards). */
function waitForwarding(url: string, timeoutMs: number, child?: Child): Promise<boolean> {
  return waitFor(`200 with the upstream body from ${url}`, async () => {
    const r = await httpGet(url, 1000);
    return r.status === 200 && r.body === BODY;
  }, timeoutMs, child);
}

/** One h2c GET with prior knowledge; true on a 200 with the expected body. */
function h2Get(url: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = http2.connect(url);
    const timer = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.on('error', () => { clearTimeout(timer); s.destroy(); resolve(false); });
    const req = s.request({ ':path': '/' });
    let status = 0;
    let body = '';
    req.on('response', (h) => { status = Number(h[':status']); });
    req.setEncoding('utf8');
    req.on('data', (d) => { body += d; });
    req.on('end', () => { clearTimeout(timer); s.close(); resolve(status === 200 && body === BODY); });
    req.on('error', () => { clearTimeout(timer); s.destroy(); resolve(false); });
    req.end();
  });
}

// ---- the stack ---------------------------------------------------------------------------------

interface Stack {
  dir: string;
  ports: Ports;
  upstream: Child;
  sluice?: Child;
  nginx?: Child;
  haproxy?: Child;
  sluiceAdmin: string;
  nodeFloor?: { child: Child; port: number };
  /** --node-floor: bench/load/h1-floor.ts, a minimal HTTP/1.1 proxy on Sluice's design, and its refusing port. */
  h1Floor?: { child: Child; port: number; refusePort: number };
  http2Proxy?: { child: Child; port: number };
  dubboProvider?: Child;
  /** `target/h1`, `target/h2` or `target/dubbo` → why that proxy cannot be measured with that protocol. */
  broken: Map<string, string>;
}

/** The last lines of a process's output, short enough for a report. */
function tail(out: string, max = 1500): string {
  const t = out.trim();
  return t.length <= max ? t : `…${t.slice(-max)}`;
}

async function startNginx(name: string, dir: string, conf: string): Promise<Child> {
  const file = path.join(dir, `${name}.conf`);
  writeFileSync(file, conf);
  // -e: the error log before the config is read; the pid file is the `pid` directive (same pid)
  return startChild(name, NGINX, ['-p', dir, '-c', file, '-e', path.join(dir, `${name}-error.log`)]);
}

function startSluice(dir: string, ports: Ports, threads: number, name = 'sluice', h2 = true, dubbo = false, variants = true): Child {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, sluiceConfig(ports, threads, { h2, dubbo, variants }));
  // SLUICE_BENCH_NODE_ARGS: node options for Sluice alone, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  // (profiles of the main thread and of every worker); NODE_OPTIONS refuses --cpu-prof
  const nodeArgs = (process.env.SLUICE_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const [cmd, args] = withOpenFileLimit(65536, process.execPath, [...nodeArgs, SLUICE_BIN, 'start', '--config', file]);
  return startChild(name, cmd, args, { pidFile: path.join(dir, `${name}.pid`) });
}

async function startStack(dir: string, opts: Options): Promise<Stack> {
  const [up1, up2, sluiceH1, sluiceH2, sluiceAdmin, nginxH1, nginxH2, haproxyH1, haproxyH2,
    dubboPlain, dubboGroup2, sluiceDubboHeader, sluiceDubboAttachment,
    up3, up4, dubboShadow, sluiceH1Fault0, sluiceH1Mirror, sluiceH2Fault0, sluiceH2Mirror, sluiceDubboFault0, sluiceDubboMirror,
    sluiceH1RateLimit, sluiceH1RateLimited, sluiceH1Adaptive, haproxyDubbo, nginxH1RateLimited, haproxyH1RateLimited] = await freePorts(28);
  const ports: Ports = {
    up1, up2, sluiceH1, sluiceH2, sluiceAdmin, nginxH1, nginxH2, haproxyH1, haproxyH2,
    dubboPlain, dubboGroup2, sluiceDubboHeader, sluiceDubboAttachment,
    up3, up4, dubboShadow, sluiceH1Fault0, sluiceH1Mirror, sluiceH2Fault0, sluiceH2Mirror, sluiceDubboFault0, sluiceDubboMirror,
    sluiceH1RateLimit, sluiceH1RateLimited, sluiceH1Adaptive, haproxyDubbo, nginxH1RateLimited, haproxyH1RateLimited,
  };
  const dubbo = opts.scenarios.some((s) => s.startsWith('dubbo-'));
  if (opts.scenarios.some((s) => s === 'http1-upload' || s === 'http1-download')) {
    writeFileSync(path.join(dir, BIG_FILE), Buffer.alloc(BIG_BODY_BYTES, 'b'), { mode: 0o644 });
    // nginx's worker (user nobody) must reach the file in the temp dir (0700 as made)
    chmodSync(dir, 0o711);
  }
  const upstream = await startNginx('upstream', dir, upstreamNginx(dir, ports));
  const stack: Stack = { dir, ports, upstream, sluiceAdmin: `http://127.0.0.1:${sluiceAdmin}`, broken: new Map() };
  await waitForwarding(`http://127.0.0.1:${up1}/`, 10_000, upstream);
  await waitFor('h2c upstream', () => h2Get(`http://127.0.0.1:${up2}`), 10_000, upstream);
  if (dubbo) {
    stack.dubboProvider = startChild('dubbo-provider', process.execPath,
      [DUBBO_PROVIDER, `${DUBBO_VALUE['dubbo-header']}:${dubboPlain}`, `${DUBBO_VALUE['dubbo-attachment']}:${dubboGroup2}`, `shadow:${dubboShadow}`]);
    const dp = stack.dubboProvider;
    await waitFor('Dubbo provider', async () => await dubboCall('127.0.0.1', dubboPlain, 1000) === DUBBO_VALUE['dubbo-header'], 10_000, dp);
  }
  stack.sluice = startSluice(dir, ports, opts.threads, 'sluice', true, dubbo);
  stack.nginx = await startNginx('nginx-proxy', dir, proxyNginx(dir, ports));
  const hcfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(hcfg, proxyHaproxy(ports));
  // -db: stay in the foreground, one process; -p: pid file in the temp dir
  stack.haproxy = startChild('haproxy', HAPROXY, ['-db', '-f', hcfg, '-p', path.join(dir, 'haproxy.pid')]);
  if (opts.nodeFloor) {
    const [port] = await freePorts(1);
    const child = startChild('node-http2', process.execPath, [NODE_H2_PROXY, String(port), String(up2)]);
    stack.nodeFloor = { child, port };
    const [port2] = await freePorts(1);
    stack.http2Proxy = { child: startChild('http2-proxy', process.execPath, [HTTP2_PROXY_BASELINE, String(port2), String(ports.up1)]), port: port2 };
    const [port3, refusePort] = await freePorts(2);
    stack.h1Floor = { child: startChild('node-h1-floor', process.execPath, [H1_FLOOR, String(port3), String(refusePort), String(ports.up1)]), port: port3, refusePort };
  }
  // a proxy that fails to answer is reported in its rows; the others still run
  const checks: [TargetName, boolean, Child, () => Promise<unknown>, string?][] = [
    ['sluice', false, stack.sluice, () => waitForwarding(`http://127.0.0.1:${sluiceH1}/`, 20_000, stack.sluice)],
    ['sluice', true, stack.sluice, () => waitFor('Sluice h2c', () => h2Get(`http://127.0.0.1:${sluiceH2}`), 10_000, stack.sluice)],
    ['nginx', false, stack.nginx, () => waitForwarding(`http://127.0.0.1:${nginxH1}/`, 10_000, stack.nginx)],
    ['nginx', true, stack.nginx, () => waitFor('nginx h2c', () => h2Get(`http://127.0.0.1:${nginxH2}`), 10_000, stack.nginx)],
    ['haproxy', false, stack.haproxy, () => waitForwarding(`http://127.0.0.1:${haproxyH1}/`, 10_000, stack.haproxy)],
    ['haproxy', true, stack.haproxy, () => waitFor('haproxy h2c', () => h2Get(`http://127.0.0.1:${haproxyH2}`), 10_000, stack.haproxy)],
  ];
  if (dubbo) {
    // both routes must pick the provider port they name before anything is measured
    const dubboReady = async () => await dubboCall('127.0.0.1', sluiceDubboHeader, 1000) === DUBBO_VALUE['dubbo-header']
      && await dubboCall('127.0.0.1', sluiceDubboAttachment, 1000) === DUBBO_VALUE['dubbo-attachment'];
    checks.push(['sluice', false, stack.sluice, () => waitFor('Sluice Dubbo routes', dubboReady, 10_000, stack.sluice), 'dubbo']);
    const haproxyReady = async () => await dubboCall('127.0.0.1', haproxyDubbo, 1000) === DUBBO_VALUE['dubbo-header'];
    checks.push(['haproxy', false, stack.haproxy, () => waitFor('haproxy Dubbo (mode tcp)', haproxyReady, 10_000, stack.haproxy), 'dubbo']);
  }
  if (stack.nodeFloor) {
    const nf = stack.nodeFloor;
    checks.push(['node-http2', true, nf.child, () => waitFor('node-http2 h2c', () => h2Get(`http://127.0.0.1:${nf.port}`), 10_000, nf.child)]);
  }
  if (stack.h1Floor) {
    const f = stack.h1Floor;
    checks.push(['node-h1-floor', false, f.child, () => waitForwarding(`http://127.0.0.1:${f.port}/`, 10_000, f.child)]);
  }
  if (stack.http2Proxy) {
    const hp = stack.http2Proxy;
    checks.push(['http2-proxy', true, hp.child, () => waitFor('http2-proxy h2c', () => h2Get(`http://127.0.0.1:${hp.port}`), 10_000, hp.child)]);
  }
  for (const [t, h2, child, check, kind] of checks) {
    try { await check(); } catch (err) {
      stack.broken.set(`${t}/${kind ?? (h2 ? 'h2' : 'h1')}`, `not ready: ${(err as Error).message.split('\n')[0]}; last error line: ${child.errorLines().last || tail(child.output(), 500)}`);
    }
  }
  return stack;
}

function targetOf(stack: Stack, t: TargetName, kind: Kind): { url: string; proc: Child | undefined } {
  const p = stack.ports;
  const h2 = kind.startsWith('h2');
  if (kind.startsWith('dubbo-')) {
    const header = kind !== 'dubbo-attachment';
    if (t === 'direct') return { url: `dubbo://127.0.0.1:${header ? p.dubboPlain : p.dubboGroup2}`, proc: stack.dubboProvider };
    const port = { 'dubbo-header': p.sluiceDubboHeader, 'dubbo-attachment': p.sluiceDubboAttachment, 'dubbo-fault0': p.sluiceDubboFault0, 'dubbo-mirror100': p.sluiceDubboMirror }[kind as DubboKind];
    if (t === 'sluice') return { url: `dubbo://127.0.0.1:${port}`, proc: stack.sluice };
    // haproxy in mode tcp, in front of the provider the dubbo-header route goes to
    if (t === 'haproxy' && kind === 'dubbo-header') return { url: `dubbo://127.0.0.1:${p.haproxyDubbo}`, proc: stack.haproxy };
    return { url: '', proc: undefined };
  }
  if (t === 'sluice' && kind !== 'h1' && kind !== 'h2') {
    const port = {
      'h1-fault0': p.sluiceH1Fault0, 'h1-mirror100': p.sluiceH1Mirror, 'h1-adaptive': p.sluiceH1Adaptive, 'h2-fault0': p.sluiceH2Fault0, 'h2-mirror100': p.sluiceH2Mirror,
      'h1-ratelimit': p.sluiceH1RateLimit, 'h1-ratelimited': p.sluiceH1RateLimited,
    }[kind as 'h1-fault0'];
    return { url: `http://127.0.0.1:${port}/`, proc: stack.sluice };
  }
  if (t === 'node-h1-floor') {
    const f = stack.h1Floor;
    if (!f || (kind !== 'h1' && kind !== 'h1-ratelimited')) return { url: '', proc: undefined };
    return { url: `http://127.0.0.1:${kind === 'h1' ? f.port : f.refusePort}/`, proc: f.child };
  }
  if (kind === 'h1-ratelimited' && (t === 'nginx' || t === 'haproxy')) {
    const port = t === 'nginx' ? p.nginxH1RateLimited : p.haproxyH1RateLimited;
    return { url: `http://127.0.0.1:${port}/`, proc: t === 'nginx' ? stack.nginx : stack.haproxy };
  }
  switch (t) {
    case 'direct': return { url: `http://127.0.0.1:${h2 ? p.up2 : p.up1}/`, proc: stack.upstream };
    case 'sluice': return { url: `http://127.0.0.1:${h2 ? p.sluiceH2 : p.sluiceH1}/`, proc: stack.sluice };
    case 'nginx': return { url: `http://127.0.0.1:${h2 ? p.nginxH2 : p.nginxH1}/`, proc: stack.nginx };
    case 'haproxy': return { url: `http://127.0.0.1:${h2 ? p.haproxyH2 : p.haproxyH1}/`, proc: stack.haproxy };
    case 'node-http2': return { url: `http://127.0.0.1:${stack.nodeFloor?.port ?? 0}/`, proc: stack.nodeFloor?.child };
    case 'http2-proxy': return { url: `http://127.0.0.1:${stack.http2Proxy?.port ?? 0}/`, proc: stack.http2Proxy?.child };
  }
}

// ---- Sluice's own counters, to catch what the load tools do not show ----------------------------

const WATCHED = [
  /sluice_downstream_rq_xx_total\{.*class="(4xx|5xx)"/,
  /sluice_upstream_rq_xx_total\{.*class="(4xx|5xx)"/,
  /sluice_upstream_rq_(timeout|reset|pending_overflow)_total/,
  /sluice_upstream_cx_connect_fail_total/,
  /sluice_downstream_protocol_error_total/,
  /sluice_downstream_rq_(no_route|timeout)_total/,
  /sluice_worker_restarts_total/,
  /sluice_handoff_failed_total/,
  // the load here is all HTTP: a connection sniffed as anything else skipped the HTTP path
  /sluice_downstream_cx_protocol_total\{.*protocol="(tcp|tls|dubbo)"/,
  // the dubbo scenarios: calls Sluice refused or could not complete
  /sluice_downstream_rq_(rate_limited|overflow)_total/,
];

/** The soft open-file limit of a process, from /proc ('?' when unreadable). */
function openFileLimit(pid: number): string {
  try {
    return /^Max open files\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] ?? '?';
  } catch { return '?'; }
}

async function sluiceStats(admin: string): Promise<Map<string, number> | null> {
  const r = await httpGet(`${admin}/stats`, 5000);
  if (r.status !== 200) return null;
  const m = new Map<string, number>();
  for (const line of r.body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

function upstreamCx(row: Row, cluster: string, before: Map<string, number> | null, after: Map<string, number> | null): void {
  if (!before || !after) return;
  const total = `sluice_upstream_cx_total{cluster="${cluster}"}`;
  row.upstreamCxOpened = (after.get(total) ?? 0) - (before.get(total) ?? 0);
  row.upstreamCxActive = after.get(`sluice_upstream_cx_active{cluster="${cluster}"}`) ?? 0;
}

/** Watched series that moved. `silentConnections`: connections expected to close without a byte (sniffed as tcp). */
function statsDelta(before: Map<string, number> | null, after: Map<string, number> | null, silentConnections = 0, dubbo = false, refusedByDesign = false): string[] {
  if (!before || !after) return [];
  const out: string[] = [];
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d === 0 || !WATCHED.some((re) => re.test(k))) continue;
    if (dubbo && k.startsWith('sluice_downstream_cx_protocol_total') && k.includes('protocol="dubbo"')) continue;
    if (refusedByDesign && k.startsWith('sluice_downstream_rq_xx_total') && k.includes('class="4xx"')) continue;
    if (silentConnections && d <= silentConnections && /protocol="tcp"/.test(k)) continue;
    out.push(`${k} +${d}`);
  }
  return out;
}

/** Error lines a Sluice child wrote (pino level ≥ 50, or anything not JSON that mentions an error). */
function sluiceLogErrors(child: Child | undefined, label: string, problems: string[]): void {
  const e = child?.errorLines();
  if (e?.count) problems.push(`${label} logged ${e.count} error lines; the first: ${e.first}${e.count > 1 ? `\n  the last: ${e.last}` : ''}`);
}

// ---- scenarios ---------------------------------------------------------------------------------

interface Ctx { opts: Options; stack: Stack; rows: Row[]; problems: string[] }

type Driver = (url: string, warm: boolean) => Promise<LoadResult>;

/**
 * wrk opens one connection before its run to check the address and closes it without sending
 * anything; Sluice rightly sniffs that one as (empty) opaque TCP.
 */
const WRK_PROBE_CONNECTIONS = 1;

async function measure(
  ctx: Ctx, scenario: ScenarioName, kind: Kind, drive: Driver, notes: Partial<Record<TargetName, string>> = {},
  targets = TARGETS, silentConnections = 0, refusedByDesign = false,
): Promise<void> {
  let direct: Row | undefined;
  const dubbo = kind.startsWith('dubbo-');
  for (const t of targets) {
    const { url, proc } = targetOf(ctx.stack, t, kind);
    const row: Row = { scenario, target: t, note: notes[t] };
    ctx.rows.push(row);
    const broken = ctx.stack.broken.get(`${t}/${dubbo ? 'dubbo' : kind}`);
    if (!proc || !proc.alive() || broken) {
      row.error = broken ?? `${t} is not running${proc ? `: ${tail(proc.output())}` : ''}`;
      if (t === 'sluice') ctx.problems.push(`${scenario}: Sluice could not be measured: ${row.error}`);
      continue;
    }
    try {
      await drive(url, true);
      const before = t === 'sluice' ? await sluiceStats(ctx.stack.sluiceAdmin) : null;
      const cpu0 = treeCpu(proc.pid);
      const r = await drive(url, false);
      const cpu1 = treeCpu(proc.pid);
      Object.assign(row, {
        requests: r.requests, rps: r.rps, p50Ms: r.p50Ms, p99Ms: r.p99Ms, non2xx: r.non2xx, errors: r.errors,
        cpuUsPerReq: r.requests > 0 ? (cpu1.total - cpu0.total) / r.requests : undefined,
        sysUsPerReq: r.requests > 0 ? (cpu1.system - cpu0.system) / r.requests : undefined,
      });
      if (t === 'direct') direct = row;
      else if (direct?.rps && direct.p50Ms !== undefined) {
        row.rpsRatio = r.rps / direct.rps;
        row.p50DiffMs = r.p50Ms - direct.p50Ms;
      }
      if (t === 'sluice') {
        const after = await sluiceStats(ctx.stack.sluiceAdmin);
        upstreamCx(row, kind.startsWith('h2') ? 'up_h2' : kind.startsWith('h1') ? 'up_h1' : kind === 'dubbo-attachment' ? 'dubbo_groups' : 'dubbo_plain', before, after);
        row.note = [row.note, `upstream cx: ${row.upstreamCxOpened} opened, ${row.upstreamCxActive} open`].filter(Boolean).join('; ');
        if (kind.endsWith('-mirror100')) mirrorCopies(ctx, row, kind.startsWith('h2') ? 'shadow_h2' : kind.startsWith('h1') ? 'shadow_h1' : 'dubbo_shadow', before, after, r.requests);
        const d = statsDelta(before, after, silentConnections, dubbo, refusedByDesign);
        if (refusedByDesign) rateLimited(ctx, row, before, after, r);
        else if (r.non2xx || r.errors) ctx.problems.push(`${scenario}: ${r.non2xx} non-2xx responses and ${r.errors} errors through Sluice (load tool output follows)\n${r.raw.trim()}`);
        if (d.length) ctx.problems.push(`${scenario}: Sluice counters moved: ${d.join(', ')}`);
        if (!proc.alive()) ctx.problems.push(`${scenario}: Sluice exited during the run: ${tail(proc.output(), 4000)}`);
      }
    } catch (err) {
      row.error = (err as Error).message.slice(0, 2000);
      if (t === 'sluice') ctx.problems.push(`${scenario}: ${row.error}${proc.alive() ? '' : `; Sluice exited: ${tail(proc.output(), 4000)}`}`);
    }
  }
}

/** A mirror scenario: every request must have sent one copy, none given up. */
function mirrorCopies(ctx: Ctx, row: Row, cluster: string, before: Map<string, number> | null, after: Map<string, number> | null, requests: number): void {
  if (!before || !after) return;
  const d = (n: string) => (after.get(`${n}{cluster="${cluster}"}`) ?? 0) - (before.get(`${n}{cluster="${cluster}"}`) ?? 0);
  const sent = d('sluice_mirror_rq_total');
  const dropped = d('sluice_mirror_rq_dropped_total');
  row.note = `${row.note}; mirror copies to ${cluster}: ${sent} sent, ${dropped} given up`;
  // copies are counted when made; the last few of the run may still be in flight when the stats are read
  if (dropped > 0 || sent < requests) ctx.problems.push(`${row.scenario}: ${sent} mirror copies for ${requests} requests, ${dropped} given up`);
}

/** A scenario where Sluice refuses every request: all of them 429, counted by the rule, none upstream. */
function rateLimited(ctx: Ctx, row: Row, before: Map<string, number> | null, after: Map<string, number> | null, r: LoadResult): void {
  if (!before || !after) return;
  const refused = 'sluice_ratelimit_refused_total{rule="bench-always"}';
  const n = (after.get(refused) ?? 0) - (before.get(refused) ?? 0);
  const upstream = (after.get('sluice_upstream_rq_total{cluster="up_h1"}') ?? 0) - (before.get('sluice_upstream_rq_total{cluster="up_h1"}') ?? 0);
  row.note = `${row.note}; ${n} refused by the rule, ${upstream} sent upstream`;
  if (r.errors || r.non2xx < r.requests || n < r.requests || upstream > 0) {
    ctx.problems.push(`${row.scenario}: ${r.requests} requests, ${r.non2xx} non-2xx, ${r.errors} errors, ${n} refused by the rule, ${upstream} sent upstream`);
  }
}

/** HTTP/1.1 keep-alive through a rate limit that matches every request: never refusing, or refusing all. */
async function http1RateLimit(ctx: Ctx, scenario: 'http1-ratelimit' | 'http1-ratelimited'): Promise<void> {
  const seconds = ctx.opts.quick ? 3 : 10;
  const refusing = scenario === 'http1-ratelimited';
  const how = refusing ? 'rate limit: every request refused (429)' : 'rate limit: matches every request, never refuses';
  // nginx's limit_req and haproxy's stick table refuse the same load, for the refused ÷ proxied ratio of each
  const notes = refusing ? { sluice: how, nginx: 'limit_req, every request but one a minute refused (429)', haproxy: 'stick table, every request but one a minute refused (429)' } : { sluice: how };
  await measure(ctx, scenario, refusing ? 'h1-ratelimited' : 'h1-ratelimit', (url, warm) => wrk(url, { threads: 1, connections: 50, seconds: warm ? 1 : seconds }),
    notes, refusing ? withH1Floor(ctx, ['sluice', 'nginx', 'haproxy']) : ['sluice'], WRK_PROBE_CONNECTIONS, refusing);
}

/** The targets, and the HTTP/1.1 floor of Sluice's design where --node-floor started it. */
function withH1Floor(ctx: Ctx, targets: TargetName[]): TargetName[] {
  return ctx.stack.h1Floor ? [...targets, 'node-h1-floor'] : targets;
}

async function http1KeepAlive(ctx: Ctx): Promise<void> {
  const seconds = ctx.opts.quick ? 3 : 10;
  await measure(ctx, 'http1-keepalive', 'h1', (url, warm) => wrk(url, { threads: 1, connections: 50, seconds: warm ? 1 : seconds }),
    {}, withH1Floor(ctx, TARGETS), WRK_PROBE_CONNECTIONS);
}

/** Each proxy's CPU (per request, or per MiB where measured) over nginx's and haproxy's in the same run. */
function cpuRatios(ctx: Ctx, scenario: ScenarioName): void {
  const rows = ctx.rows.filter((r) => r.scenario === scenario && !r.error);
  const cpu = (r: Row | undefined) => r?.cpuUsPerMiB ?? r?.cpuUsPerReq;
  const nginx = cpu(rows.find((r) => r.target === 'nginx'));
  const haproxy = cpu(rows.find((r) => r.target === 'haproxy'));
  for (const r of rows) {
    const c = cpu(r);
    if (r.target === 'direct' || c === undefined) continue;
    if (nginx) r.cpuVsNginx = c / nginx;
    if (haproxy) r.cpuVsHaproxy = c / haproxy;
  }
}

/** HTTP/1.1 keep-alive with 1000 connections (wrk c1000): CPU per request beside nginx's and haproxy's. */
async function http1C1000(ctx: Ctx): Promise<void> {
  const seconds = ctx.opts.quick ? 3 : 10;
  await measure(ctx, 'http1-c1000', 'h1', (url, warm) => wrk(url, { threads: 1, connections: 1000, seconds: warm ? 2 : seconds }),
    {}, TARGETS, WRK_PROBE_CONNECTIONS);
  cpuRatios(ctx, 'http1-c1000');
}

/** Connections of the large-body scenarios, each with one 10 MiB body at a time. */
const BIG_CONNECTIONS = 8;

/**
 * 10 MiB bodies over keep-alive connections: POSTed to the upstream, which reads and discards them
 * (http1-upload), or served by it (http1-download). CPU per MiB of body carried.
 */
async function http1BigBodies(ctx: Ctx, scenario: 'http1-upload' | 'http1-download'): Promise<void> {
  const seconds = ctx.opts.quick ? 3 : 10;
  const mib = BIG_BODY_BYTES / 2 ** 20;
  let script: string | undefined;
  if (scenario === 'http1-upload') {
    script = path.join(ctx.stack.dir, 'upload.lua');
    writeFileSync(script, `wrk.method = "POST"\nwrk.body = string.rep("u", ${BIG_BODY_BYTES})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`);
  }
  const how = scenario === 'http1-upload' ? `POST of ${mib} MiB, the upstream discards it` : `GET of ${mib} MiB from the upstream`;
  await measure(ctx, scenario, 'h1', (url, warm) => wrk(new URL(scenario === 'http1-upload' ? BIG_UPLOAD : BIG_DOWNLOAD, url).toString(), { threads: 1, connections: BIG_CONNECTIONS, seconds: warm ? 1 : seconds, script }),
    { direct: how }, TARGETS, WRK_PROBE_CONNECTIONS);
  // wrk stops in the middle of bodies: each of its connections may leave one upload short, which
  // Sluice rightly counts as a protocol error (a body cut off by the client's close)
  const cut = new RegExp(`^${scenario}: Sluice counters moved: sluice_downstream_protocol_error_total\\{protocol="http1"\\} \\+(\\d+)$`);
  for (let i = ctx.problems.length - 1; i >= 0; i--) {
    const m = cut.exec(ctx.problems[i]);
    if (m && Number(m[1]) <= BIG_CONNECTIONS) ctx.problems.splice(i, 1);
  }
  for (const r of ctx.rows.filter((x) => x.scenario === scenario && !x.error)) {
    if (r.cpuUsPerReq !== undefined) r.cpuUsPerMiB = r.cpuUsPerReq / mib;
    if (r.rps !== undefined) r.mibPerSecond = r.rps * mib;
  }
  cpuRatios(ctx, scenario);
}

async function http1SingleConnection(ctx: Ctx): Promise<void> {
  const seconds = ctx.opts.quick ? 2 : 5;
  await measure(ctx, 'http1-single-connection', 'h1', (url, warm) => wrk(url, { threads: 1, connections: 1, seconds: warm ? 1 : seconds }),
    {}, TARGETS, WRK_PROBE_CONNECTIONS);
}

/** HTTP/1.1 keep-alive through a filter-variant listener of Sluice (the base scenario gives the baselines). */
async function http1Variant(ctx: Ctx, scenario: 'http1-fault0' | 'http1-mirror100' | 'http1-adaptive'): Promise<void> {
  const seconds = ctx.opts.quick ? 3 : 10;
  const kind = ({ 'http1-fault0': 'h1-fault0', 'http1-mirror100': 'h1-mirror100', 'http1-adaptive': 'h1-adaptive' } as const)[scenario];
  const how = {
    'http1-fault0': 'fault: abort and delay at 0 %',
    'http1-mirror100': 'mirror: a copy of every request to a second upstream',
    'http1-adaptive': 'adaptive limiting on an inbound listener, measuring, never refusing',
  }[scenario];
  await measure(ctx, scenario, kind, (url, warm) => wrk(url, { threads: 1, connections: 50, seconds: warm ? 1 : seconds }),
    { sluice: how }, ['sluice'], WRK_PROBE_CONNECTIONS);
}

async function http2Variant(ctx: Ctx, scenario: 'http2-fault0' | 'http2-mirror100'): Promise<void> {
  const n = ctx.opts.quick ? 20_000 : 100_000;
  const logFile = path.join(ctx.stack.dir, 'h2load.log');
  const kind = scenario === 'http2-fault0' ? 'h2-fault0' : 'h2-mirror100';
  const how = scenario === 'http2-fault0' ? 'fault: abort and delay at 0 %' : 'mirror: a copy of every request to a second h2c upstream';
  await measure(ctx, scenario, kind,
    (url, warm) => h2load(url, { requests: warm ? 5000 : n, clients: 10, streams: 10, logFile, timeoutMs: 90_000 }), { sluice: how }, ['sluice']);
}

async function http2Scenario(ctx: Ctx): Promise<void> {
  const n = ctx.opts.quick ? 20_000 : 100_000;
  const logFile = path.join(ctx.stack.dir, 'h2load.log');
  await measure(ctx, 'http2', 'h2',
    (url, warm) => h2load(url, { requests: warm ? 5000 : n, clients: 10, streams: 10, logFile, timeoutMs: 90_000 }),
    {
      direct: 'h2c upstream', sluice: 'h2c → h2c upstream', nginx: 'h2c → HTTP/1.1 upstream (nginx cannot proxy HTTP/2)', haproxy: 'h2c → h2c upstream',
      'node-http2': 'h2c → h2c, a bare node:http2 proxy',
      'http2-proxy': 'h2c → HTTP/1.1 upstream, node:http2 server + the http2-proxy library',
    },
    ctx.opts.nodeFloor ? [...TARGETS, 'node-http2', 'http2-proxy'] : TARGETS);
}

/** Clients that each open a connection, send one request with `Connection: close`, and start again. */
const NEWCX_CONNECTIONS = 20;

type NewConnectionScenario = 'http1-new-connection' | 'http1-new-connection-c1';

/**
 * One request per connection. Two passes per target: CPU with nothing attached (process tree,
 * and for Sluice its main thread alone, tid = pid), then a shorter one with the system call
 * counter attached. Ratios are to nginx's and haproxy's CPU per connection in the same run.
 * `connections`: wrk's clients, each opening its next connection when the last one is over
 * (http1-new-connection-c1: one at a time, where every thread sleeps and wakes per connection,
 * the way a sidecar in front of a lightly loaded service sees new connections).
 */
async function http1NewConnection(ctx: Ctx, scenario: NewConnectionScenario, connections: number): Promise<void> {
  const seconds = ctx.opts.quick ? 3 : 10;
  const countSeconds = ctx.opts.quick ? 2 : 4;
  const drive = (url: string, secs: number) => wrk(url, { threads: 1, connections, seconds: secs, headers: ['Connection: close'] });
  const rows: Row[] = [];
  const tool = syscallTool();
  for (const t of withH1Floor(ctx, TARGETS)) {
    const { url, proc } = targetOf(ctx.stack, t, 'h1');
    const row: Row = { scenario, target: t };
    ctx.rows.push(row);
    rows.push(row);
    const broken = ctx.stack.broken.get(`${t}/h1`);
    if (!proc || !proc.alive() || broken) {
      row.error = broken ?? `${t} is not running`;
      if (t === 'sluice') ctx.problems.push(`${scenario}: Sluice could not be measured: ${row.error}`);
      continue;
    }
    try {
      await drive(url, 1);
      const before = t === 'sluice' ? await sluiceStats(ctx.stack.sluiceAdmin) : null;
      const cpu0 = treeCpu(proc.pid);
      const main0 = threadCpuMicros(proc.pid);
      const r = await drive(url, seconds);
      const cpu1 = treeCpu(proc.pid);
      const main1 = threadCpuMicros(proc.pid);
      Object.assign(row, {
        requests: r.requests, rps: r.rps, p50Ms: r.p50Ms, p99Ms: r.p99Ms, non2xx: r.non2xx, errors: r.errors,
        cpuUsPerReq: r.requests > 0 ? (cpu1.total - cpu0.total) / r.requests : undefined,
        sysUsPerReq: r.requests > 0 ? (cpu1.system - cpu0.system) / r.requests : undefined,
      });
      if (t === 'sluice' || t === 'node-h1-floor') row.mainCpuUsPerConn = r.requests > 0 ? (main1 - main0) / r.requests : undefined;
      if (t === 'sluice') {
        const after = await sluiceStats(ctx.stack.sluiceAdmin);
        // when its time is up wrk closes every connection it has, some just opened and still
        // silent: those are (empty) opaque TCP, up to one per client, besides the probe
        const d = statsDelta(before, after, connections + WRK_PROBE_CONNECTIONS);
        const key = 'sluice_downstream_cx_total{listener="h1"}';
        const accepted = (after?.get(key) ?? 0) - (before?.get(key) ?? 0);
        row.note = `${accepted} connections accepted`;
        if (r.non2xx || r.errors) ctx.problems.push(`${scenario}: ${r.non2xx} non-2xx responses and ${r.errors} errors through Sluice\n${r.raw.trim()}`);
        if (d.length) ctx.problems.push(`${scenario}: Sluice counters moved: ${d.join(', ')}`);
      }
      if (tool) {
        const pids = processTree(proc.pid);
        const { count, result } = await countSyscalls(pids, path.join(ctx.stack.dir, 'syscalls.txt'), () => drive(url, countSeconds));
        if (result.requests > 0) {
          row.syscallsPerConn = count.total / result.requests;
          if (t === 'sluice' && count.tool === 'perf') row.mainSyscallsPerConn = (count.byTid.get(proc.pid) ?? 0) / result.requests;
        }
      }
      if (t === 'sluice' && !proc.alive()) ctx.problems.push(`${scenario}: Sluice exited during the run: ${tail(proc.output(), 4000)}`);
    } catch (err) {
      row.error = (err as Error).message.slice(0, 2000);
      if (t === 'sluice') ctx.problems.push(`${scenario}: ${row.error}`);
    }
  }
  const direct = rows.find((r) => r.target === 'direct' && !r.error);
  const nginx = rows.find((r) => r.target === 'nginx' && !r.error)?.cpuUsPerReq;
  const haproxy = rows.find((r) => r.target === 'haproxy' && !r.error)?.cpuUsPerReq;
  for (const r of rows) {
    if (r.error || r.target === 'direct' || r.cpuUsPerReq === undefined) continue;
    if (nginx) r.cpuVsNginx = r.cpuUsPerReq / nginx;
    if (haproxy) r.cpuVsHaproxy = r.cpuUsPerReq / haproxy;
    if (direct?.rps && direct.p50Ms !== undefined && r.rps !== undefined && r.p50Ms !== undefined) {
      r.rpsRatio = r.rps / direct.rps;
      r.p50DiffMs = r.p50Ms - direct.p50Ms;
    }
  }
}

/** Dubbo calls in flight, over this many connections (a consumer's few multiplexed connections). */
const DUBBO_INFLIGHT = 64;
const DUBBO_CONNECTIONS = 4;

async function dubboScenario(ctx: Ctx, scenario: DubboKind): Promise<void> {
  const seconds = ctx.opts.quick ? 2 : 5;
  const answered = new Map<string, DubboLoadResult>();
  const drive: Driver = async (url, warm) => {
    const r = await dubboLoad({ host: '127.0.0.1', port: Number(new URL(url).port), connections: DUBBO_CONNECTIONS, inflight: DUBBO_INFLIGHT, seconds: warm ? 1 : seconds });
    if (!warm) answered.set(url, r);
    return r;
  };
  const how = {
    'dubbo-header': 'route on the interface (service) only',
    'dubbo-attachment': 'route on attachment type=transfer → endpoints labelled group=Group_2',
    'dubbo-fault0': 'route on the interface, fault: abort and delay at 0 %',
    'dubbo-mirror100': 'route on the interface, mirror: a copy of every call to a second provider',
  }[scenario];
  const variant = scenario === 'dubbo-fault0' || scenario === 'dubbo-mirror100';
  const header = scenario === 'dubbo-header';
  await measure(ctx, scenario, scenario, drive, { direct: 'provider, no proxy', sluice: how, haproxy: 'mode tcp: bytes relayed, no routing' },
    variant ? ['sluice'] : header ? ['direct', 'sluice', 'haproxy'] : ['direct', 'sluice']);
  if (header) await dubboWrites(ctx, scenario);
  const want = DUBBO_VALUE[scenario];
  for (const row of ctx.rows.filter((r) => r.scenario === scenario && !r.error)) {
    const r = answered.get(targetOf(ctx.stack, row.target, scenario).url);
    if (!r) continue;
    const who = Object.entries(r.values).map(([v, n]) => `${v} ×${n}`).join(', ');
    row.note = [row.note, `${DUBBO_FRAME_BYTES}-byte calls, ${DUBBO_INFLIGHT} in flight over ${DUBBO_CONNECTIONS} connections, answered by ${who || 'nobody'}`,
      r.firstError ? `first error: ${r.firstError}` : ''].filter(Boolean).join('; ');
    const wrong = Object.keys(r.values).filter((v) => v !== want);
    if (row.target === 'sluice' && wrong.length) ctx.problems.push(`${scenario}: calls through Sluice were answered by ${wrong.join(', ')}, not only by ${want}`);
  }
}

/** Write system calls per task (every thread) so far: `syscw` of /proc/PID/io (write, writev; not send*). */
function writeSyscallsOf(pid: number): number {
  try {
    return Number(/^syscw:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? NaN);
  } catch { return NaN; }
}

/**
 * Write system calls per Dubbo call (both directions, the proxy's whole process), the load as in
 * the scenario: counted by strace (every write-family call by name) in a pass of its own, for Sluice
 * and haproxy; for Sluice also from /proc/PID/io in a pass with nothing attached (strace stops the
 * process at every call, which slows it and lets more calls gather per read).
 */
async function dubboWrites(ctx: Ctx, scenario: DubboKind): Promise<void> {
  const seconds = ctx.opts.quick ? 2 : 4;
  for (const row of ctx.rows.filter((r) => r.scenario === scenario && !r.error && (r.target === 'sluice' || r.target === 'haproxy'))) {
    const { url, proc } = targetOf(ctx.stack, row.target, scenario);
    if (!proc?.alive()) continue;
    const load = () => dubboLoad({ host: '127.0.0.1', port: Number(new URL(url).port), connections: DUBBO_CONNECTIONS, inflight: DUBBO_INFLIGHT, seconds });
    try {
      if (row.target === 'sluice') {
        const w0 = writeSyscallsOf(proc.pid);
        const r = await load();
        const w1 = writeSyscallsOf(proc.pid);
        if (r.requests > 0 && Number.isFinite(w1 - w0)) row.writesPerCallUntraced = (w1 - w0) / r.requests;
      }
      const { count, result } = await countSyscalls(processTree(proc.pid), path.join(ctx.stack.dir, 'syscalls.txt'), load, true);
      if (result.requests > 0) row.writesPerCall = writeCalls(count) / result.requests;
    } catch (err) {
      row.note = [row.note, `write system calls not counted: ${(err as Error).message.split('\n')[0]}`].join('; ');
    }
  }
}

const IDLE_CONNECTIONS = 10_000;

async function memoryIdle(ctx: Ctx, who: TargetName[]): Promise<void> {
  for (const t of who) {
    let { url, proc } = targetOf(ctx.stack, t, 'h1');
    let admin = ctx.stack.sluiceAdmin;
    const row: Row = { scenario: 'memory-idle', target: t };
    ctx.rows.push(row);
    let client: Child | undefined;
    let fresh: Child | undefined;
    try {
      if (t === 'sluice') {
        // a Sluice of its own, so that what ran before (heap grown, garbage to reuse) does not
        // change the answer
        const [h1, adm] = await freePorts(2);
        fresh = startSluice(ctx.stack.dir, { ...ctx.stack.ports, sluiceH1: h1, sluiceAdmin: adm }, ctx.opts.threads, 'sluice-idle', false, false, false);
        url = `http://127.0.0.1:${h1}/`;
        admin = `http://127.0.0.1:${adm}`;
        proc = fresh;
        await waitForwarding(url, 20_000, fresh);
        row.note = 'a fresh Sluice';
      }
      if (!proc || !proc.alive()) throw new Error(`${t} is not running`);
      // warm: the same request path, then let those connections go
      await wrk(url, { threads: 1, connections: 50, seconds: 1 });
      await new Promise((r) => setTimeout(r, 500));
      const before = treeRssKiB(proc.pid);
      const statsBefore = t === 'sluice' ? await sluiceStats(admin) : null;
      const port = Number(new URL(url).port);
      const [cmd, args] = withOpenFileLimit(65536, process.execPath, [IDLE_CLIENT, '127.0.0.1', String(port), String(IDLE_CONNECTIONS), '100', '60000']);
      client = startChild('idle-client', cmd, args, { stdin: true });
      const lines: Record<string, unknown>[] = [];
      let partial = '';
      client.proc.stdout!.on('data', (d: Buffer) => {
        partial += d.toString('utf8');
        let i;
        while ((i = partial.indexOf('\n')) >= 0) {
          const l = partial.slice(0, i);
          partial = partial.slice(i + 1);
          try { lines.push(JSON.parse(l)); } catch { /* not ours */ }
        }
      });
      const c = client;
      const ready = await waitFor('idle connections', () => lines.find((l) => l.event === 'ready'), 70_000, c);
      // let the proxy settle (timers armed, buffers released) before reading its memory
      await new Promise((r) => setTimeout(r, 1000));
      const after = treeRssKiB(proc.pid);
      c.proc.stdin!.write('status\n');
      const status = await waitFor('idle client status', () => lines.find((l) => l.event === 'status'), 10_000, c) as Record<string, number | string | object>;
      const open = Number(status.open);
      const idle = Number(status.idle);
      Object.assign(row, {
        connections: idle, rssBeforeKiB: before, rssAfterKiB: after,
        kibPerConnection: idle > 0 ? (after - before) / idle : undefined,
        errors: Number(status.errors), non2xx: Object.entries(status.statuses as Record<string, number>).filter(([k]) => k[0] !== '2').reduce((a, [, v]) => a + v, 0),
        note: [row.note, `${open} open at the end, ${status.closedByPeer} closed by the proxy, ${ready.ms} ms to open`].filter(Boolean).join('; '),
      });
      if (t === 'sluice') {
        const statsAfter = await sluiceStats(admin);
        upstreamCx(row, 'up_h1', statsBefore, statsAfter);
        const d = statsDelta(statsBefore, statsAfter);
        if (d.length) ctx.problems.push(`memory-idle: Sluice counters moved: ${d.join(', ')}`);
        // past its descriptor budget (two descriptors per connection: the client's and an upstream's)
        // Sluice closes new connections at once and counts them; a process whose open-file limit
        // cannot be raised to 65536 (a container's hard limit) reaches it before 10,000
        const overflowKey = 'sluice_downstream_cx_overflow_total{listener="h1"}';
        const overflow = (statsAfter?.get(overflowKey) ?? 0) - (statsBefore?.get(overflowKey) ?? 0);
        if (overflow > 0) {
          row.note += `; ${overflow} closed at once at Sluice's descriptor budget (open-file limit ${openFileLimit(proc.pid)}, two descriptors per connection)`;
        }
        const unexplained = IDLE_CONNECTIONS - idle - overflow;
        if (unexplained > 0 || Number(status.errors) > overflow || row.non2xx) {
          ctx.problems.push(`memory-idle: only ${idle} of ${IDLE_CONNECTIONS} connections idle through Sluice (${overflow} at its descriptor budget); statuses ${JSON.stringify(status.statuses)}, errors ${status.errors} (${status.firstError}), closed by Sluice ${status.closedByPeer}`);
        }
        if (statsAfter) {
          const active = statsAfter.get('sluice_downstream_cx_active{listener="h1"}');
          row.note += `; Sluice downstream cx active ${active}; upstream cx: ${row.upstreamCxOpened} opened, ${row.upstreamCxActive} open`;
        }
      }
      c.proc.stdin!.write('close\n');
      await Promise.race([c.exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (t === 'sluice' && !proc.alive()) ctx.problems.push(`memory-idle: Sluice exited: ${tail(proc.output(), 4000)}`);
    } catch (err) {
      row.error = (err as Error).message.slice(0, 2000);
      if (t === 'sluice') ctx.problems.push(`memory-idle: ${row.error}`);
    } finally {
      if (client) await stopChild(client, 2000);
      if (fresh) {
        sluiceLogErrors(fresh, 'memory-idle: Sluice', ctx.problems);
        await stopChild(fresh, 5000);
      }
    }
  }
}

// ---- output ------------------------------------------------------------------------------------

const fmt = (v: number | undefined, digits: number) => (v === undefined || Number.isNaN(v) ? '-' : v.toFixed(digits));

export function formatTable(report: Report): string {
  const out: string[] = [];
  const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
  const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);
  for (const sc of SCENARIOS) {
    const rows = report.rows.filter((r) => r.scenario === sc);
    const w = rows.some((r) => r.target.length > 10) ? 15 : 11;
    if (!rows.length) continue;
    out.push('', `## ${sc}`);
    if (sc === 'memory-idle') {
      out.push(`${pad('target', w)}${lpad('conns', 7)}${lpad('RSS before', 12)}${lpad('RSS after', 12)}${lpad('KiB/conn', 10)}  notes`);
      for (const r of rows) {
        if (r.error) { out.push(`${pad(r.target, w)}  ERROR: ${r.error.split('\n')[0]}`); continue; }
        out.push(`${pad(r.target, w)}${lpad(String(r.connections ?? '-'), 7)}${lpad(`${r.rssBeforeKiB} KiB`, 12)}${lpad(`${r.rssAfterKiB} KiB`, 12)}${lpad(fmt(r.kibPerConnection, 2), 10)}  ${r.note ?? ''}`);
      }
      continue;
    }
    if (sc === 'http1-new-connection' || sc === 'http1-new-connection-c1') {
      out.push(`${pad('target', w)}${lpad('conn/s', 9)}${lpad('p50 ms', 9)}${lpad('p99 ms', 9)}${lpad('CPU µs/conn', 13)}${lpad('kernel', 8)}${lpad('× nginx', 9)}${lpad('× haproxy', 11)}${lpad('syscalls/conn', 15)}${lpad('main µs/conn', 14)}${lpad('main calls/conn', 17)}${lpad('errors', 8)}  notes`);
      for (const r of rows) {
        if (r.error) { out.push(`${pad(r.target, w)}  ERROR: ${r.error.split('\n')[0]}`); continue; }
        const cpu = r.target === 'direct' ? `(${fmt(r.cpuUsPerReq, 1)})` : fmt(r.cpuUsPerReq, 1);
        out.push(`${pad(r.target, w)}${lpad(fmt(r.rps, 0), 9)}${lpad(fmt(r.p50Ms, 3), 9)}${lpad(fmt(r.p99Ms, 3), 9)}${lpad(cpu, 13)}${lpad(fmt(r.sysUsPerReq, 1), 8)}${lpad(fmt(r.cpuVsNginx, 2), 9)}${lpad(fmt(r.cpuVsHaproxy, 2), 11)}${lpad(fmt(r.syscallsPerConn, 1), 15)}${lpad(fmt(r.mainCpuUsPerConn, 1), 14)}${lpad(fmt(r.mainSyscallsPerConn, 1), 17)}${lpad(String((r.non2xx ?? 0) + (r.errors ?? 0)), 8)}  ${r.note ?? ''}`);
      }
      continue;
    }
    if (sc === 'http1-upload' || sc === 'http1-download') {
      out.push(`${pad('target', w)}${lpad('req/s', 9)}${lpad('MiB/s', 9)}${lpad('p50 ms', 9)}${lpad('CPU µs/MiB', 12)}${lpad('× nginx', 9)}${lpad('× haproxy', 11)}${lpad('non2xx', 8)}${lpad('errors', 8)}  notes`);
      for (const r of rows) {
        if (r.error) { out.push(`${pad(r.target, w)}  ERROR: ${r.error.split('\n')[0]}`); continue; }
        const cpu = r.target === 'direct' ? `(${fmt(r.cpuUsPerMiB, 1)})` : fmt(r.cpuUsPerMiB, 1);
        out.push(`${pad(r.target, w)}${lpad(fmt(r.rps, 1), 9)}${lpad(fmt(r.mibPerSecond, 0), 9)}${lpad(fmt(r.p50Ms, 2), 9)}${lpad(cpu, 12)}${lpad(fmt(r.cpuVsNginx, 2), 9)}${lpad(fmt(r.cpuVsHaproxy, 2), 11)}${lpad(String(r.non2xx ?? '-'), 8)}${lpad(String(r.errors ?? '-'), 8)}  ${r.note ?? ''}`);
      }
      continue;
    }
    out.push(`${pad('target', w)}${lpad('req/s', 10)}${lpad('p50 ms', 9)}${lpad('p99 ms', 9)}${lpad('CPU µs/req', 12)}${lpad('kernel', 8)}${lpad('× direct', 10)}${lpad('p50 +ms', 9)}${lpad('non2xx', 8)}${lpad('errors', 8)}  notes`);
    for (const r of rows) {
      if (r.error) { out.push(`${pad(r.target, w)}  ERROR: ${r.error.split('\n')[0]}`); continue; }
      const cpu = r.target === 'direct' ? `(${fmt(r.cpuUsPerReq, 1)})` : fmt(r.cpuUsPerReq, 1);
      out.push(`${pad(r.target, w)}${lpad(fmt(r.rps, 0), 10)}${lpad(fmt(r.p50Ms, 3), 9)}${lpad(fmt(r.p99Ms, 3), 9)}${lpad(cpu, 12)}${lpad(fmt(r.sysUsPerReq, 1), 8)}${lpad(r.target === 'direct' ? '1.00' : fmt(r.rpsRatio, 2), 10)}${lpad(r.target === 'direct' ? '0' : fmt(r.p50DiffMs, 3), 9)}${lpad(String(r.non2xx ?? '-'), 8)}${lpad(String(r.errors ?? '-'), 8)}  ${r.note ?? ''}`);
    }
  }
  out.push(...issueTable(report));
  const rowOf = (sc: ScenarioName, t: TargetName) => report.rows.find((r) => r.scenario === sc && r.target === t && !r.error);
  const cpuOf = (sc: ScenarioName) => rowOf(sc, 'sluice')?.cpuUsPerReq;
  const base = cpuOf('http1-keepalive');
  const limited = cpuOf('http1-ratelimit');
  const refused = cpuOf('http1-ratelimited');
  if (base !== undefined && (limited !== undefined || refused !== undefined)) {
    out.push('', '## rate limits against http1-keepalive (Sluice CPU µs/req, same run)');
    if (limited !== undefined) out.push(`a rule that matches, never refusing: ${fmt(limited, 1)} against ${fmt(base, 1)}: ${fmt(limited - base, 2)} µs more (target ≤ 3)`);
    if (refused !== undefined) out.push(`a refused request: ${fmt(refused, 1)} against a proxied ${fmt(base, 1)}: ${fmt(refused / base, 3)} of it (target ≤ 0.25)`);
    for (const t of ['nginx', 'haproxy', 'node-h1-floor'] as const) {
      const own = rowOf('http1-ratelimited', t)?.cpuUsPerReq;
      const proxied = rowOf('http1-keepalive', t)?.cpuUsPerReq;
      if (own !== undefined && proxied !== undefined) out.push(`  ${t}, the same load: a refused request ${fmt(own, 1)} against its proxied ${fmt(proxied, 1)}: ${fmt(own / proxied, 3)} of it`);
    }
    const floorRefused = rowOf('http1-ratelimited', 'node-h1-floor')?.cpuUsPerReq;
    if (refused !== undefined && floorRefused !== undefined) {
      out.push(`  the floor of Sluice's design answering 429 (node-h1-floor): ${fmt(floorRefused, 1)}, ${fmt(floorRefused / base, 3)} of Sluice's proxied request`);
    }
    const kernel = (['sluice', 'nginx', 'haproxy', 'node-h1-floor'] as const).map((t) => [t, rowOf('http1-ratelimited', t)?.sysUsPerReq] as const)
      .filter(([, v]) => v !== undefined);
    if (kernel.length) {
      out.push(`  in the kernel (one read and one write per refusal): ${kernel.map(([t, v]) => `${t} ${fmt(v, 1)}`).join(', ')} µs; a quarter of Sluice's proxied request is ${fmt(base / 4, 1)} µs`);
    }
  }
  out.push('', 'CPU µs/req: user+system time of the proxy process tree (master and workers) per completed request;',
    'for direct, in parentheses, the upstream nginx\'s own (dubbo: the provider\'s). p50 +ms: p50 minus direct p50.',
    'dubbo: req/s are calls/s; non2xx counts calls answered with a status other than OK.',
    'http1-new-connection: one request per connection (Connection: close; -c1: one connection at a time); CPU µs/conn as above, per connection; × nginx, × haproxy:',
    'that CPU over theirs in this run; syscalls/conn: every thread of the process tree, counted in a second pass',
    `(${report.syscallTool ?? 'no counter available'}); main: Sluice's main thread alone (accept and hand-off).`,
    'kernel: the part of the CPU column spent in the kernel (system time).');
  return out.join('\n');
}

/** One line per row of the data-path table (issue 13): Sluice, nginx and haproxy in this run, and the ratios. */
function issueTable(report: Report): string[] {
  const get = (sc: ScenarioName, t: TargetName, v: (r: Row) => number | undefined) => {
    const r = report.rows.find((x) => x.scenario === sc && x.target === t && !x.error);
    return r ? v(r) : undefined;
  };
  const lines: Array<[string, ScenarioName, (r: Row) => number | undefined, number, string]> = [
    ['a new connection per request, CPU µs per connection', 'http1-new-connection', (r) => r.cpuUsPerReq, 1, '≤ 2 × nginx'],
    ['the same, one connection at a time (wrk -c1)', 'http1-new-connection-c1', (r) => r.cpuUsPerReq, 1, ''],
    ['HTTP/1.1 keep-alive c50, CPU µs per request', 'http1-keepalive', (r) => r.cpuUsPerReq, 1, '≤ 1.5 × nginx'],
    ['HTTP/1.1 keep-alive c1000, CPU µs per request', 'http1-c1000', (r) => r.cpuUsPerReq, 1, '≤ 1.5 × nginx'],
    [`${BIG_BODY_BYTES / 2 ** 20} MiB upload, CPU µs per MiB`, 'http1-upload', (r) => r.cpuUsPerMiB, 0, '≤ 1.2 × nginx'],
    [`${BIG_BODY_BYTES / 2 ** 20} MiB download, CPU µs per MiB`, 'http1-download', (r) => r.cpuUsPerMiB, 0, '≤ 1.2 × nginx'],
    ['idle keep-alive connection, KiB resident', 'memory-idle', (r) => r.kibPerConnection, 2, '≤ 4 KiB'],
    ['h2c, h2load c10 m10, CPU µs per request', 'http2', (r) => r.cpuUsPerReq, 1, ''],
    ['Dubbo, write system calls per call (haproxy: mode tcp)', 'dubbo-header', (r) => r.writesPerCall, 3, '≤ 0.5'],
  ];
  const out: string[] = [];
  const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
  const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);
  for (const [what, sc, v, digits, target] of lines) {
    const [s, n, h] = (['sluice', 'nginx', 'haproxy'] as const).map((t) => get(sc, t, v));
    if (s === undefined && n === undefined && h === undefined) continue;
    if (!out.length) {
      out.push('', '## the data path beside nginx and haproxy (same run)',
        `${pad('work', 56)}${lpad('Sluice', 9)}${lpad('nginx', 9)}${lpad('haproxy', 9)}${lpad('÷ nginx', 9)}${lpad('÷ haproxy', 11)}  target`);
    }
    out.push(`${pad(what, 56)}${lpad(fmt(s, digits), 9)}${lpad(fmt(n, digits), 9)}${lpad(fmt(h, digits), 9)}` +
      `${lpad(s !== undefined && n ? fmt(s / n, 2) : '-', 9)}${lpad(s !== undefined && h ? fmt(s / h, 2) : '-', 11)}  ${target}`);
  }
  const floorLines: string[] = [];
  for (const [what, sc] of [['a new connection per request', 'http1-new-connection'], ['HTTP/1.1 keep-alive c50', 'http1-keepalive']] as const) {
    const f = get(sc, 'node-h1-floor', (r) => r.cpuUsPerReq);
    const n = get(sc, 'nginx', (r) => r.cpuUsPerReq);
    const s = get(sc, 'sluice', (r) => r.cpuUsPerReq);
    if (f === undefined) continue;
    floorLines.push(`  ${what}: ${fmt(f, 1)} µs${n ? `, ${fmt(f / n, 2)} × nginx` : ''}${s ? `; Sluice ÷ the floor ${fmt(s / f, 2)}` : ''}`);
  }
  if (floorLines.length) out.push('(the floor of Sluice\'s design, node-h1-floor: native accept, hand-off to a worker thread, Node sockets, nothing else)', ...floorLines);
  const untraced = get('dubbo-header', 'sluice', (r) => r.writesPerCallUntraced);
  if (untraced !== undefined) out.push(`(Sluice, Dubbo: ${fmt(untraced, 3)} write and writev calls per call with nothing attached, from /proc/PID/io)`);
  return out;
}

// ---- main --------------------------------------------------------------------------------------

export async function main(argv: string[]): Promise<number> {
  let opts: Options;
  try { opts = parseArgs(argv); } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\nusage: node dist/bench/load.js [--quick] [--scenario ${SCENARIOS.join('|')}] [--threads 1|2] [--node-floor] [--out FILE]\n`);
    return 2;
  }
  for (const [name, bin] of [['nginx', NGINX], ['haproxy', HAPROXY]]) {
    if (!existsSync(bin)) { process.stderr.write(`bench: ${name} not found at ${bin}\n`); return 2; }
  }
  const report: Report = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.availableParallelism(),
    commit: commit(),
    machine: `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} CPUs, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg().map((v) => Math.round(v * 100) / 100),
    quick: opts.quick,
    sluiceThreads: opts.threads,
    versions: {
      nginx: firstLine(NGINX, ['-v']),
      haproxy: firstLine(HAPROXY, ['-v']),
      wrk: firstLine('wrk', ['-v']),
      h2load: firstLine('h2load', ['--version']),
    },
    rows: [],
    sluiceProblems: [],
    targets: {
      upstream: 'nginx, worker_processes 1, return 200 with a 100-byte body (HTTP/1.1 port and h2c port)',
      'node-http2': 'bench/load/node-h2-proxy.ts: node:http2 server + one node:http2 client session, nothing else (only with --node-floor)',
      'http2-proxy': 'bench/load/http2-proxy-baseline.ts: node:http2 server + http2-proxy to the HTTP/1.1 upstream, keep-alive agent (only with --node-floor)',
      'node-h1-floor': 'bench/load/h1-floor.ts: the floor of Sluice\'s design for HTTP/1.1: the main thread accepts with the addon and posts each batch of descriptors to one worker thread, which relays each request to an idle keep-alive upstream connection with Node sockets, or answers a constant 429 (http1-keepalive, http1-new-connection, http1-ratelimited; only with --node-floor)',
      sluice: `node bin/sluice.js start, workers.threads ${opts.threads} (plus the main thread that accepts), explicit listeners, cluster protocol auto, access log off, tcp.sniffTimeoutMs 5000`,
      nginx: 'worker_processes 1, upstream keepalive 256, proxy_http_version 1.1, access_log off',
      haproxy: 'nbthread 1, -db (one process), http-reuse always, h2: proto h2 on bind and server',
      'dubbo-provider': 'bench/load/dubbo-provider.ts: one node process, two ports, answers every call with a small string (its name); load from bench/load/dubbo-load.ts (dubbo scenarios only)',
    },
  };
  process.stdout.write(`Sluice load benchmarks  ${report.date}\n` +
    `node ${report.node}  CPUs ${report.cpus}  commit ${report.commit}  load average ${report.loadAverageAtStart.join(' ')}\n` +
    `${report.machine}\nSluice workers.threads: ${opts.threads}${opts.quick ? '  (quick)' : ''}\n` +
    `${report.versions.nginx} | ${report.versions.haproxy} | ${report.versions.wrk} | ${report.versions.h2load}\n`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-'));
  const onSignal = () => {
    process.stdout.write('\ninterrupted: stopping what this run started\n');
    killAllStartedSync();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', killAllStartedSync);
  let stack: Stack | undefined;
  const t0 = Date.now();
  const ctx = { opts, rows: report.rows, problems: report.sluiceProblems } as Omit<Ctx, 'stack'> & { stack?: Stack };
  try {
    stack = await startStack(dir, opts);
    ctx.stack = stack;
    const c = ctx as Ctx;
    const steps: Record<ScenarioName, () => Promise<void>> = {
      'http1-keepalive': () => http1KeepAlive(c),
      'http1-single-connection': () => http1SingleConnection(c),
      'http1-new-connection': () => http1NewConnection(c, 'http1-new-connection', NEWCX_CONNECTIONS),
      'http1-new-connection-c1': () => http1NewConnection(c, 'http1-new-connection-c1', 1),
      'http2': () => http2Scenario(c),
      // nginx as a baseline; haproxy is left out: it needs two fds per connection and the
      // machine's hard limit (20000) keeps it under 10,000 connections
      'memory-idle': () => memoryIdle(c, opts.quick ? ['sluice'] : ['sluice', 'nginx']),
      'dubbo-header': () => dubboScenario(c, 'dubbo-header'),
      'dubbo-attachment': () => dubboScenario(c, 'dubbo-attachment'),
      'http1-fault0': () => http1Variant(c, 'http1-fault0'),
      'http1-adaptive': () => http1Variant(c, 'http1-adaptive'),
      'http1-mirror100': () => http1Variant(c, 'http1-mirror100'),
      'http2-fault0': () => http2Variant(c, 'http2-fault0'),
      'http2-mirror100': () => http2Variant(c, 'http2-mirror100'),
      'dubbo-fault0': () => dubboScenario(c, 'dubbo-fault0'),
      'dubbo-mirror100': () => dubboScenario(c, 'dubbo-mirror100'),
      'http1-ratelimit': () => http1RateLimit(c, 'http1-ratelimit'),
      'http1-ratelimited': () => http1RateLimit(c, 'http1-ratelimited'),
      'http1-c1000': () => http1C1000(c),
      'http1-upload': () => http1BigBodies(c, 'http1-upload'),
      'http1-download': () => http1BigBodies(c, 'http1-download'),
    };
    report.loadAverageByScenario = {};
    if (opts.scenarios.some((sc) => sc === 'http1-new-connection' || sc === 'http1-new-connection-c1')) report.syscallTool = syscallTool();
    for (const sc of opts.scenarios) {
      const s0 = Date.now();
      report.loadAverageByScenario[sc] = os.loadavg().map((v) => Math.round(v * 100) / 100);
      process.stdout.write(`running ${sc}…`);
      await steps[sc]();
      process.stdout.write(` ${((Date.now() - s0) / 1000).toFixed(1)} s\n`);
    }
    if (stack.sluice && !stack.sluice.alive()) report.sluiceProblems.push(`Sluice exited before the end of the run: ${tail(stack.sluice.output(), 4000)}`);
  } catch (err) {
    report.sluiceProblems.push(`run aborted: ${tail((err as Error).message, 3000)}`);
  } finally {
    sluiceLogErrors(stack?.sluice, 'Sluice', report.sluiceProblems);
    // every child started, including those of a stack that failed half-way
    await stopAllStarted(5000);
    rmSync(dir, { recursive: true, force: true });
  }

  process.stdout.write(`${formatTable(report)}\n`);
  if (report.sluiceProblems.length) {
    process.stdout.write(`\nSluice problems seen during the run:\n${report.sluiceProblems.map((p) => `- ${p}`).join('\n')}\n`);
  } else {
    process.stdout.write('\nSluice: no errors, no non-2xx responses, no worker restarts during the run.\n');
  }
  process.stdout.write(`total ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  mkdirSync(path.dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`results: ${path.relative(process.cwd(), opts.out) || opts.out}\n`);
  return report.rows.some((r) => r.error) ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
}
