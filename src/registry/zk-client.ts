/**
 * The one file that touches the ZooKeeper client library (node-zookeeper-client): a typed,
 * promise-based view of the few calls the registry makes, so the library can be replaced here
 * alone. Errors come back as values with ZooKeeper's own codes, never thrown.
 *
 * What the library does for us: connects to one of the servers (in random order, trying the
 * next one after sessionTimeout / servers), keeps the session alive with pings, sends the digest
 * credentials on every connection, and after a reconnect within the session re-registers every
 * watch it holds (SetWatches, with the last zxid seen, so changes made meanwhile fire at once).
 * What it does not do, and the registry does on top: notice a server that stopped answering
 * without closing the connection (it never checks its pings are answered), and start a new
 * session after expiry.
 */
import { EventEmitter } from 'node:events';

export const ZK_OK = 0;
export const ZK_CONNECTION_LOSS = -4;
export const ZK_NO_NODE = -101;
export const ZK_NO_AUTH = -102;
export const ZK_NODE_EXISTS = -110;
export const ZK_SESSION_EXPIRED = -112;

export interface ZkEvent {
  /** 1 created, 2 deleted, 3 data changed, 4 children changed. */
  type: number;
  path: string;
}
export type ZkWatcher = (event: ZkEvent) => void;

export interface ZkError {
  code: number;
  message: string;
}

export type ZkResult<T> = { ok: true; value: T } | { ok: false; error: ZkError };

interface LibException { getCode(): number; message: string; name?: string }
interface LibEvent { getType(): number; getPath(): string }
type LibWatcher = (e: LibEvent) => void;
interface LibClient extends EventEmitter {
  connect(): void;
  close(): void;
  addAuthInfo(scheme: string, auth: Buffer): void;
  connectionManager: LibConnectionManager;
  getSessionId(): Buffer;
  getSessionTimeout(): number;
  getChildren(path: string, watcher: LibWatcher | undefined, cb: (err: LibException | null, children: string[]) => void): void;
  getData(path: string, watcher: LibWatcher | undefined, cb: (err: LibException | null, data: Buffer | null) => void): void;
  exists(path: string, watcher: LibWatcher | undefined, cb: (err: LibException | null, stat: unknown) => void): void;
}
/** The library's connection manager, reached only to end a connection it would keep waiting on. */
interface LibConnectionManager { state: number; socket?: { destroy(): void } }
const LIB_STATE_CLOSED = -2;
/** After close(): how long the library gets to end the session before its socket is destroyed. */
const CLOSE_GRACE_MS = 2000;

interface LibModule {
  createClient(connectionString: string, options: { sessionTimeout: number; spinDelay: number; retries: number }): LibClient;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const lib = require('node-zookeeper-client') as LibModule;

function errorOf(err: LibException): ZkError {
  const code = typeof err.getCode === 'function' ? err.getCode() : -1;
  return { code, message: err.message || String(err) };
}

export interface ZkClientOptions {
  /** host:port,host:port — without chroot. */
  servers: string;
  /** '' or '/a/b'. */
  chroot: string;
  sessionTimeoutMs: number;
  /** "user:password" for ZooKeeper digest auth. */
  digest?: string;
  /** Longest random pause before trying the servers again after each of them failed. */
  spinDelayMs?: number;
}

/**
 * Events: 'connected' (a session is live: new, or resumed after a reconnect), 'disconnected'
 * (the connection was lost; the session may still live), 'expired' (the session is over: this
 * client is done), 'authFailed'. Each may repeat except 'expired'.
 */
export class ZkClient extends EventEmitter {
  private readonly client: LibClient;
  private closed = false;

  constructor(readonly options: ZkClientOptions) {
    super();
    this.client = lib.createClient(options.servers + options.chroot, {
      sessionTimeout: options.sessionTimeoutMs,
      spinDelay: options.spinDelayMs ?? 1000,
      retries: 0,
    });
    if (options.digest) this.client.addAuthInfo('digest', Buffer.from(options.digest));
    this.client.on('connected', () => { if (!this.closed) this.emit('connected'); });
    this.client.on('connectedReadOnly', () => { if (!this.closed) this.emit('connected'); });
    this.client.on('disconnected', () => { if (!this.closed) this.emit('disconnected'); });
    this.client.on('expired', () => { if (!this.closed) this.emit('expired'); });
    this.client.on('authenticationFailed', () => { if (!this.closed) this.emit('authFailed'); });
  }

  connect(): void {
    this.client.connect();
  }

  /**
   * Ends the session (the server drops its watches) and stops reconnecting. Events stop at once.
   * A connection whose server never answers (the library would wait on it for ever) is destroyed
   * after a grace period.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try { this.client.close(); } catch { /* already closed */ }
    const cm = this.client.connectionManager;
    setTimeout(() => {
      if (cm && cm.state !== LIB_STATE_CLOSED) try { cm.socket?.destroy(); } catch { /* gone */ }
    }, CLOSE_GRACE_MS).unref();
  }

  /** The session id as ZooKeeper's four-letter words print it (`0x` and hex, no leading zeros). */
  sessionId(): string {
    try {
      return `0x${BigInt(`0x${this.client.getSessionId().toString('hex')}`).toString(16)}`;
    } catch {
      return '0x0';
    }
  }

  /** The timeout the server granted (the one asked for, before the first connection). */
  sessionTimeoutMs(): number {
    return this.client.getSessionTimeout() || this.options.sessionTimeoutMs;
  }

  /** Children of a node, and a child watch when `watcher` is given. NO_NODE sets no watch. */
  getChildren(path: string, watcher?: ZkWatcher): Promise<ZkResult<string[]>> {
    return new Promise((resolve) => {
      this.client.getChildren(path, wrap(watcher), (err, children) => {
        resolve(err ? { ok: false, error: errorOf(err) } : { ok: true, value: children ?? [] });
      });
    });
  }

  /** A node's data, and a data watch when `watcher` is given (it also fires when the node goes). */
  getData(path: string, watcher?: ZkWatcher): Promise<ZkResult<Buffer>> {
    return new Promise((resolve) => {
      this.client.getData(path, wrap(watcher), (err, data) => {
        resolve(err ? { ok: false, error: errorOf(err) } : { ok: true, value: data ?? Buffer.alloc(0) });
      });
    });
  }

  /** Whether a node exists; with `watcher`, an existence watch (fires when it is created or goes). */
  exists(path: string, watcher?: ZkWatcher): Promise<ZkResult<boolean>> {
    return new Promise((resolve) => {
      this.client.exists(path, wrap(watcher), (err, stat) => {
        resolve(err ? { ok: false, error: errorOf(err) } : { ok: true, value: stat != null });
      });
    });
  }
}

/**
 * The library keeps one watcher per function and path, so a given ZkWatcher must always map to
 * the same library function: re-reading a list with the same watcher then re-arms one watch.
 */
const wrapped = new WeakMap<ZkWatcher, LibWatcher>();
function wrap(watcher: ZkWatcher | undefined): LibWatcher | undefined {
  if (!watcher) return undefined;
  let fn = wrapped.get(watcher);
  if (!fn) {
    fn = (e: LibEvent) => watcher({ type: e.getType(), path: e.getPath() });
    wrapped.set(watcher, fn);
  }
  return fn;
}
