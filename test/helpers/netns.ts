/**
 * Network namespaces for capture tests: each test makes its own (unique name),
 * wires it with veth pairs, installs iptables rules inside it, runs programs in
 * it, and deletes it in teardown. Nothing touches the host's own namespace.
 *
 *   client ns ── veth ── sluice ns (lo: sluice, upstreams; iptables nat REDIRECT)
 *
 * Also: reading the bound addresses from a child Sluice's "sluice started" line,
 * since children listen on port 0 (or on fixed ports inside a namespace).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { BIN, run, waitFor, type ChildSluice, type ExecResult } from './harness';

const live = new Set<string>();
let seq = 0;

// Last resort if a test process dies before its teardown ran: no namespace outlives it.
process.once('exit', () => {
  for (const name of live) {
    try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }); } catch { /* gone */ }
  }
});

export interface Netns {
  readonly name: string;
  /** Runs a program inside the namespace (as root) with a hard time limit. */
  exec(cmd: string, args: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Runs a command and fails loudly if it does not exit 0 (setup steps). */
  must(cmd: string, args: string[]): Promise<string>;
  /** Deletes the namespace; every process started in it must be gone first. */
  destroy(): Promise<void>;
}

/** A fresh namespace with `lo` up. Names are unique per process and call (`sl<pid>x<n>`). */
export async function createNetns(tag = 'ns'): Promise<Netns> {
  const name = `sl${process.pid}${tag}${++seq}`;
  await mustRun('ip', ['netns', 'add', name]);
  live.add(name);
  const ns: Netns = {
    name,
    exec: (cmd, args, timeoutMs = 30_000) => run('ip', ['netns', 'exec', name, cmd, ...args], timeoutMs),
    must: (cmd, args) => mustRun('ip', ['netns', 'exec', name, cmd, ...args]),
    destroy: async () => {
      if (!live.delete(name)) return;
      await run('ip', ['netns', 'del', name]);
    },
  };
  await ns.must('ip', ['link', 'set', 'lo', 'up']);
  return ns;
}

async function mustRun(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, 20_000);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** A veth pair between two namespaces, addressed in one /24 and up on both ends. */
export async function vethPair(a: Netns, addrA: string, b: Netns, addrB: string): Promise<{ ifA: string; ifB: string }> {
  const n = ++seq;
  const ifA = `va${process.pid % 100000}x${n}`.slice(0, 15);
  const ifB = `vb${process.pid % 100000}x${n}`.slice(0, 15);
  await a.must('ip', ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  await a.must('ip', ['addr', 'add', `${addrA}/24`, 'dev', ifA]);
  await b.must('ip', ['addr', 'add', `${addrB}/24`, 'dev', ifB]);
  await a.must('ip', ['link', 'set', ifA, 'up']);
  await b.must('ip', ['link', 'set', ifB, 'up']);
  return { ifA, ifB };
}

export interface NsProcess {
  proc: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  /** SIGKILL by pid, then wait for the exit. */
  kill(): Promise<void>;
}

/**
 * A node script inside a namespace. `ip netns exec` execs the program, so the pid is node's own.
 * With a uid, setpriv drops to it after joining the namespace (joining needs root).
 */
export function nodeInNetns(ns: Netns, args: string[], opts: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv } = {}): NsProcess {
  const drop = opts.uid !== undefined
    ? ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.gid ?? opts.uid}`, '--clear-groups']
    : [];
  const proc = spawn('ip', ['netns', 'exec', ns.name, ...drop, process.execPath, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const exited = once(proc, 'exit').then(([code]) => code as number | null);
  return {
    proc,
    output: () => out,
    exited,
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Sluice through the real CLI inside a namespace, as `uid`/`gid`. The harness's spawnSluice passes
 * uid/gid to spawn(), which makes `ip netns exec` itself run unprivileged and fail (setns: EPERM);
 * here `ip` runs as root and setpriv drops privileges after it joined the namespace.
 */
export function spawnSluiceInNetns(ns: Netns, args: string[], opts: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv } = {}): ChildSluice & NsProcess {
  const p = nodeInNetns(ns, [BIN, ...args], { ...opts, env: { SLUICE_DEBUG_ENDPOINTS: '1', ...opts.env } });
  return p;
}

export interface StartedSluice {
  /** Admin base URL, e.g. http://127.0.0.1:15000 */
  admin: string;
  adminPort: number;
  /** Bound port of each listener, by name. */
  ports: Record<string, number>;
}

/** Waits for a child Sluice's "sluice started" log line and returns the addresses it bound. */
export async function sluiceStarted(child: { output(): string; proc: ChildProcess }, timeoutMs = 30_000): Promise<StartedSluice> {
  return waitFor(() => {
    if (child.proc.exitCode !== null) throw new Error(`sluice exited with ${child.proc.exitCode} before it started:\n${child.output()}`);
    for (const line of child.output().split('\n')) {
      if (!line.includes('"sluice started"')) continue;
      const rec = JSON.parse(line) as { listeners: Record<string, string>; admin: string };
      const portOf = (a: string) => Number(a.slice(a.lastIndexOf(':') + 1));
      const ports: Record<string, number> = {};
      for (const [name, a] of Object.entries(rec.listeners)) ports[name] = portOf(a);
      const adminPort = portOf(rec.admin);
      return { admin: `http://127.0.0.1:${adminPort}`, adminPort, ports };
    }
    return null;
  }, timeoutMs, 'the "sluice started" log line');
}

/** Parses Prometheus text (for /stats fetched with curl inside a namespace). */
export { parseStats } from './harness';
