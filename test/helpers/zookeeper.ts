/**
 * A real ZooKeeper server for tests: Debian's `zookeeper` package (scripts/install-test-deps.sh),
 * started as `java ... QuorumPeerMain <cfg>` on a free loopback port with a data directory of
 * its own, stopped by its pid. A JVM takes seconds to start: share one server per test file.
 *
 *   const zk = await startZooKeeper();        // zk.connectString, zk.port, zk.pid
 *   await zk.fourLetter('wchp');              // four-letter words are all enabled
 *   await zk.stop(); await zk.start();        // same port, same data: sessions survive
 *   await zk.destroy();                       // stop and remove the data directory
 *
 * Plus a writer client (node-zookeeper-client, the library the registry uses) for creating
 * nodes the way Dubbo and Spring Cloud do.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const JAR = '/usr/share/java/zookeeper.jar';

export function zookeeperInstalled(): boolean {
  return existsSync(JAR) && existsSync('/usr/bin/java');
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

export interface ZooKeeperServer {
  readonly port: number;
  readonly connectString: string;
  readonly dataDir: string;
  readonly pid: number | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** SIGSTOP / SIGCONT: a server that keeps its connections open and answers nothing. */
  freeze(): void;
  thaw(): void;
  destroy(): Promise<void>;
  fourLetter(word: string): Promise<string>;
}

export interface ZooKeeperOptions {
  heapMb?: number;
  tickTimeMs?: number;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) try { c.kill('SIGKILL'); } catch { /* gone */ }
});

export async function startZooKeeper(opts: ZooKeeperOptions = {}): Promise<ZooKeeperServer> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-zk-'));
  const dataDir = path.join(dir, 'data');
  const cfg = path.join(dir, 'zoo.cfg');
  const tick = opts.tickTimeMs ?? 200;
  writeFileSync(cfg, [
    `tickTime=${tick}`,
    `dataDir=${dataDir}`,
    `clientPort=${port}`,
    'clientPortAddress=127.0.0.1',
    'admin.enableServer=false',
    '4lw.commands.whitelist=*',
    // session timeouts the tests ask for: 1 s and up
    `minSessionTimeout=${Math.max(2 * tick, 1000)}`,
    'maxSessionTimeout=120000',
    'maxClientCnxns=0',
    'snapCount=1000000',
    '',
  ].join('\n'));
  let child: ChildProcess | null = null;
  // A guardian per server: it kills the JVM and removes its directory once this process is gone,
  // however it went (a test killed at its timeout runs no exit handler), by waiting for its
  // stdin pipe to close.
  let guardian: ChildProcess | null = null;
  const dismissGuardian = () => { guardian?.kill('SIGKILL'); guardian = null; };

  const fourLetter = (word: string): Promise<string> => new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.setTimeout(5000, () => s.destroy(new Error(`${word}: no answer`)));
    s.on('connect', () => s.write(word));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });

  const server: ZooKeeperServer = {
    port,
    connectString: `127.0.0.1:${port}`,
    dataDir,
    get pid() { return child?.pid; },
    async start() {
      if (child) return;
      const log = openSync(path.join(dir, 'server.log'), 'a');
      child = spawn('java', [
        `-Xmx${opts.heapMb ?? 512}m`, '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Xshare:auto',
        '-Dzookeeper.forceSync=no', '-Djute.maxbuffer=8388608',
        '-cp', JAR, 'org.apache.zookeeper.server.quorum.QuorumPeerMain', cfg,
      ], { stdio: ['ignore', log, log] });
      closeSync(log);
      live.add(child);
      guardian = spawn('/bin/sh', ['-c', 'cat >/dev/null; kill -CONT "$0" 2>/dev/null; kill -KILL "$0" 2>/dev/null; sleep 1; rm -rf "$1"', String(child.pid), dir], { stdio: ['pipe', 'ignore', 'ignore'] });
      guardian.unref();
      (guardian.stdin as unknown as { unref(): void }).unref();
      const c = child;
      c.once('exit', () => { live.delete(c); if (child === c) child = null; });
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (!child) throw new Error(`ZooKeeper exited at start; see ${path.join(dir, 'server.log')}`);
        try {
          if ((await fourLetter('ruok')) === 'imok') {
            // serving, not just listening: a standalone server answers `srvr` once its database is loaded
            if ((await fourLetter('srvr')).includes('Mode: standalone')) return;
          }
        } catch { /* not listening yet */ }
        if (Date.now() > deadline) throw new Error('ZooKeeper did not start within 60 s');
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      dismissGuardian(); // first: once the JVM is gone its pid may be reused
      const c = child;
      if (!c || c.exitCode !== null) { child = null; return; }
      c.kill('SIGCONT');
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await once(c, 'exit');
      clearTimeout(t);
      child = null;
    },
    freeze() { child?.kill('SIGSTOP'); },
    thaw() { child?.kill('SIGCONT'); },
    async destroy() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
    fourLetter,
  };
  await server.start();
  return server;
}

/** Paths watched per session, from `wchc`: { '0x1000…': ['/dubbo/a/providers', …] }. */
export function parseWchc(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of text.split('\n')) {
    if (/^0x[0-9a-f]+$/i.test(line.trim())) { current = []; out.set(line.trim(), current); continue; }
    if (current && line.trim().startsWith('/')) current.push(line.trim());
  }
  return out;
}

/** Sessions watching each path, from `wchp`: { '/dubbo/a/providers': ['0x1000…'] }. */
export function parseWchp(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t.startsWith('/')) { current = []; out.set(t, current); continue; }
    if (current && /^0x[0-9a-f]+$/i.test(t)) current.push(t);
  }
  return out;
}

// ── a writer, as Dubbo providers and Spring Cloud instances write ───────────

/* eslint-disable @typescript-eslint/no-require-imports */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const zk = require('node-zookeeper-client') as any;

export const CreateMode = { PERSISTENT: 0, EPHEMERAL: 1 } as const;

export interface ZkOp { op: 'create'; path: string; data?: Buffer; mode?: number; acl?: unknown[] }
export interface ZkDel { op: 'remove'; path: string }

/** A promise-based writer client with its own session (close() ends it: its ephemeral nodes go). */
export class ZkWriter {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly client: any;

  private constructor(connectString: string, sessionTimeout: number, digest?: string) {
    this.client = zk.createClient(connectString, { sessionTimeout, spinDelay: 100 });
    if (digest) this.client.addAuthInfo('digest', Buffer.from(digest));
  }

  static async connect(connectString: string, opts: { sessionTimeoutMs?: number; digest?: string } = {}): Promise<ZkWriter> {
    const w = new ZkWriter(connectString, opts.sessionTimeoutMs ?? 10_000, opts.digest);
    const connected = once(w.client, 'connected');
    w.client.connect();
    await Promise.race([connected, new Promise((_, reject) => setTimeout(() => reject(new Error('writer: no connection')), 20_000))]);
    return w;
  }

  sessionId(): string {
    return `0x${BigInt(`0x${(this.client.getSessionId() as Buffer).toString('hex')}`).toString(16)}`;
  }

  /** Every call fails after 10 s rather than hang a test (the library can wait for ever on a bad connection). */
  private call<T>(fn: string, ...args: unknown[]): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`writer ${fn}(${String(args[0])}): no answer in 10 s`)), 10_000);
      this.client[fn](...args, (err: Error | null, ...res: unknown[]) => {
        clearTimeout(timer);
        if (err) reject(err); else resolve(res[0] as T);
      });
    });
  }

  mkdirp(p: string): Promise<string> {
    return this.call('mkdirp', p);
  }

  create(p: string, data?: Buffer, mode: number = CreateMode.PERSISTENT, acl?: unknown[]): Promise<string> {
    return acl ? this.call('create', p, data ?? null, acl, mode) : this.call('create', p, data ?? null, mode);
  }

  remove(p: string): Promise<void> {
    return this.call('remove', p, -1);
  }

  setData(p: string, data: Buffer): Promise<void> {
    return this.call('setData', p, data, -1);
  }

  children(p: string): Promise<string[]> {
    return this.call('getChildren', p);
  }

  /** One multi-op (all or nothing). */
  multi(ops: Array<ZkOp | ZkDel>): Promise<void> {
    const tx = this.client.transaction();
    for (const o of ops) {
      if (o.op === 'create') {
        if (o.acl) tx.create(o.path, o.data ?? null, o.acl, o.mode ?? CreateMode.PERSISTENT);
        else tx.create(o.path, o.data ?? null, o.mode ?? CreateMode.PERSISTENT);
      } else tx.remove(o.path, -1);
    }
    return new Promise((resolve, reject) => tx.commit((err: Error | null) => (err ? reject(err) : resolve())));
  }

  close(): void {
    this.client.close();
  }
}

/** Digest ACL for a user: ZooKeeper's `digest` id is user:base64(sha1(user:password)). */
export function digestAcl(user: string, password: string): unknown[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const id = `${user}:${crypto.createHash('sha1').update(`${user}:${password}`).digest('base64')}`;
  return [new zk.ACL(zk.Permission.ALL, new zk.Id('digest', id))];
}

/** A Dubbo provider URL as a provider node's name (URL-encoded once, as Dubbo's URL.encode does). */
export function dubboProviderNode(host: string, port: number, iface: string, params: Record<string, string | number>): string {
  const q = Object.entries({ anyhost: 'true', application: 'demo-provider', dubbo: '2.0.2', generic: 'false', interface: iface, side: 'provider', timestamp: '1700000000000', ...params })
    .map(([k, v]) => `${k}=${v}`).join('&');
  return encodeJava(`dubbo://${host}:${port}/${iface}?${q}`);
}

export function encodeJava(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, '+').replace(/[!'()~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** A Spring Cloud Zookeeper (Curator) instance document. */
export function springInstance(name: string, id: string, address: string, port: number | null, metadata: Record<string, string> = {}, extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({
    name, id, address, port, sslPort: null,
    payload: { '@class': 'org.springframework.cloud.zookeeper.discovery.ZookeeperInstance', id: `${name}-1`, name, metadata },
    registrationTimeUTC: 1700000000000, serviceType: 'DYNAMIC',
    uriSpec: { parts: [{ value: 'scheme', variable: true }, { value: '://', variable: false }, { value: 'address', variable: true }, { value: ':', variable: false }, { value: 'port', variable: true }] },
    ...extra,
  }));
}

/** Waits until `fn` returns a truthy value; fails with `what` after `ms`. */
export async function until<T>(what: string, fn: () => T | Promise<T>, ms = 10_000, stepMs = 20): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) { last = err; }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** The interface names populateDubbo writes: com.acme.scale.Service00000 … */
export const scaleInterface = (i: number) => `com.acme.scale.Service${String(i).padStart(5, '0')}`;

/**
 * `interfaces` Dubbo interfaces with `providers` providers each, as Dubbo writes them (providers
 * ephemeral, of the writer's session), in multi-ops of about `batchOps` operations, `inFlight`
 * of them at once. Returns the number of nodes created.
 */
export async function populateDubbo(w: ZkWriter, interfaces: number, providers: number, opts: { batchOps?: number; inFlight?: number } = {}): Promise<number> {
  const batchOps = opts.batchOps ?? 1000;
  const inFlight = opts.inFlight ?? 8;
  await w.mkdirp('/dubbo');
  let created = 0;
  let next = 0;
  const perInterface = providers + 2;
  const batchInterfaces = Math.max(1, Math.floor(batchOps / perInterface));
  const worker = async () => {
    while (next < interfaces) {
      const from = next;
      const to = Math.min(interfaces, from + batchInterfaces);
      next = to;
      const ops: ZkOp[] = [];
      for (let i = from; i < to; i++) {
        const iface = scaleInterface(i);
        ops.push({ op: 'create', path: `/dubbo/${iface}` }, { op: 'create', path: `/dubbo/${iface}/providers` });
        for (let p = 0; p < providers; p++) {
          const host = `10.${(p >> 8) & 255}.${p & 255}.${(i % 250) + 1}`;
          const node = dubboProviderNode(host, 20880, iface, {
            application: `app-${i % 97}`, methods: 'create,get,list,update,delete', revision: '1.4.2', timeout: 3000,
            version: '1.0.0', weight: 100, pid: 1000 + p, release: '2.7.23',
          });
          ops.push({ op: 'create', path: `/dubbo/${iface}/providers/${node}`, mode: CreateMode.EPHEMERAL });
        }
      }
      await w.multi(ops);
      created += ops.length;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return created;
}
