/**
 * Main thread: the listening sockets and the hand-off of each accepted connection to a worker.
 *
 *   listening fd ─ readable (libuv poll, in the addon) ─▶ accept4 until EAGAIN, SO_ORIGINAL_DST
 *     of each (capture listeners) ─▶ onBatch(n): one JS call per batch, no Node socket
 *   for each: over the descriptor budget? close at once, counted : queue it for the worker with
 *     the fewest open connections (shared memory, src/shared/handoff.ts); no room anywhere: hold
 *     it until a worker has room ─▶ end of batch: one notify per worker that got some
 *   worker died ─▶ its queued, unclaimed connections (compare-and-swap on the ownership slot):
 *     handed to another worker once, closed if that fails too or when stopping
 *
 * Open connections are counted here, from what the main thread sent to each worker minus what
 * that worker finished; a worker that dies takes its count with it (everything it had was closed
 * with the thread), so the count never drifts and never waits for a message from a dead thread.
 *
 * A connection that was not redirected reports the listener's own address as its original
 * destination; that is "no original destination", never a target.
 *
 * Without the addon (another OS), listeners are Node servers and connections are served on the
 * main thread (`localServe`), without transparent capture.
 */
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import os from 'node:os';
import type { ListenerConfig, SluiceConfig } from '../config/config';
import { SluiceError } from '../errors';
import { LogEvery, log } from '../log';
import { parseAddress } from '../net/address';
import type { SharedState } from '../shared/shared-state';
import { FdOwnership, MAX_FD } from '../shared/fd-ownership';
import { formatDst, HandoffSender, MAX_LISTENERS, PEER_WORDS, type Returned } from '../shared/handoff';
import { ACCEPT_DST_ERROR, ACCEPT_ENTRY_WORDS, ACCEPT_OWN_CHECK, ACCEPT_PEER, type Acceptor, type NativeNet } from '../net/native';
import type { OriginalDst } from '../shared/messages';

/** Serves a connection on the main thread when no hand-off is possible (no addon). */
export type LocalServe = (socket: net.Socket, listener: string, dst: OriginalDst | null) => void;

function plain(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

function isLocalAddress(ip: string): boolean {
  if (ip.startsWith('127.') || ip === '::1') return true;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (plain(a.address) === ip) return true;
  }
  return false;
}

/**
 * Whether an original destination is this listener itself. A connection that was not
 * redirected reports the address it reached; one that was sent to our own port on another
 * local address (pod IP:15001, redirected to 127.0.0.1:15001) would, if dialled, come back
 * to us. Either way it is "no original destination". (The addon makes the first check itself
 * and flags the second, ACCEPT_OWN_CHECK, for isLocalAddress here.)
 */
export function isOwnAddress(dst: { address: string; port: number }, local: { address?: string; port?: number }, boundHost: string): boolean {
  if (dst.port !== local.port) return false;
  const ip = plain(dst.address);
  if (ip === plain(local.address)) return true;
  const wildcard = boundHost === '0.0.0.0' || boundHost === '::' || boundHost === '';
  return wildcard && isLocalAddress(ip);
}

/** What the main thread counts about connections, beside the open-connection gauge (openByListener). */
export interface ListenerEvents {
  /** A connection the main thread could not hand to any worker and closed. */
  handoffFailed(): void;
  /** A connection closed at once: the process is at its descriptor budget. */
  overflow(listener: string): void;
  /** A connection a dead worker never took, handed to another. */
  requeued?(): void;
}

export interface ListenerOptions {
  /** The stat slot that names a listener to a worker (`sluice_downstream_cx_total{listener}`). */
  slotOf(listener: string): number;
  /** workers.maxConnectionsPerWorker */
  maxPerWorker?: number;
}

/**
 * Refusals past the descriptor budget: one warning per interval with the count, not one per
 * connection (a flood of them is exactly when a log must not cost a line each).
 */
const refusedAtLimit = new LogEvery('at the file descriptor limit: new connections are closed at once');
const acceptFailed = new LogEvery('accepting a connection failed');
const dstUnreadable = new LogEvery('cannot read original destination');

/** Entries per native batch: what one readable event takes before the JS call. */
const BATCH = 64;
/** How long accepting pauses when even the spare descriptor is gone (EMFILE), before trying again. */
const EMFILE_PAUSE_MS = 100;
const EMFILE = 24;
const ENFILE = 23;

interface NativeListener {
  kind: 'native';
  config: ListenerConfig;
  index: number;
  slot: number;
  acceptor: Acceptor;
  batch: Int32Array;
  address: net.AddressInfo;
  resumeTimer: NodeJS.Timeout | null;
}

interface NodeListener {
  kind: 'node';
  config: ListenerConfig;
  index: number;
  server: net.Server;
}

type OpenListener = NativeListener | NodeListener;

export class Listeners {
  private readonly servers = new Map<string, OpenListener>();
  /** Listener name → index in the hand-off counts; append-only, like stat series. */
  private readonly indexOf = new Map<string, number>();
  private readonly names: string[] = [];
  private readonly sender: HandoffSender | null;
  /** Connections that no worker could take yet, oldest first; main holds their descriptors. */
  private pending: Returned[] = [];
  private readonly pendingBy = new Int32Array(MAX_LISTENERS);
  /** Connections served on the main thread (no addon), by listener. */
  private readonly localBy = new Int32Array(MAX_LISTENERS);
  private localOpen = 0;
  private idleWaiters: Array<() => void> = [];
  private waiting = false;
  private stopping = false;
  private readonly toClose = new Int32Array(BATCH);
  /**
   * Open connections allowed at once, from the descriptor limit (Sluice.start sets it): each
   * needs one descriptor, and most one more upstream. Past it a new connection is closed at
   * once instead of taking the process to EMFILE, where accepts stall and clients hang.
   */
  budget = Infinity;

  constructor(
    shared: SharedState,
    private readonly native: NativeNet | null,
    private readonly localServe: LocalServe,
    private readonly events: ListenerEvents,
    private readonly opts: ListenerOptions,
  ) {
    this.sender = native ? new HandoffSender(shared.memory, new FdOwnership(shared.memory), opts.maxPerWorker ?? Infinity) : null;
  }

  /** Open connections: queued for or served by a worker, waiting for one, or served here. */
  get active(): number {
    return (this.sender?.outstanding ?? 0) + this.pending.length + this.localOpen;
  }

  /** Open connections by listener name, every listener ever opened: the open-connection gauge. */
  openByListener(): Array<[string, number]> {
    return this.names.map((name, i) => [name, (this.sender?.outstandingOf(i) ?? 0) + this.pendingBy[i] + this.localBy[i]]);
  }

  address(name: string): net.AddressInfo | null {
    const l = this.servers.get(name);
    if (!l) return null;
    if (l.kind === 'native') return l.address;
    const a = l.server.address();
    return a && typeof a === 'object' ? a : null;
  }

  /** Make the set of listening sockets match the config: open new, close removed, keep the rest. */
  async apply(config: SluiceConfig): Promise<void> {
    const wanted = new Map(config.listeners.map((l) => [l.name, l]));
    for (const [name, entry] of this.servers) {
      const w = wanted.get(name);
      if (!w || w.address !== entry.config.address) {
        this.closeOne(entry);
        this.servers.delete(name);
      } else {
        entry.config = w;
      }
    }
    const opened: string[] = [];
    try {
      for (const l of config.listeners) {
        if (this.servers.has(l.name)) continue;
        this.servers.set(l.name, await this.open(l));
        opened.push(l.name);
      }
    } catch (err) {
      for (const name of opened) { const e = this.servers.get(name); if (e) this.closeOne(e); this.servers.delete(name); }
      throw err;
    }
  }

  private indexFor(name: string): number {
    let i = this.indexOf.get(name);
    if (i === undefined) {
      i = this.names.length;
      if (i >= MAX_LISTENERS) throw new SluiceError('ERR_LISTEN', `more than ${MAX_LISTENERS} listener names in one process`);
      this.names.push(name);
      this.indexOf.set(name, i);
    }
    return i;
  }

  private async open(l: ListenerConfig): Promise<OpenListener> {
    const { host, port } = parseAddress(l.address);
    const index = this.indexFor(l.name);
    const fail = (code: string) => new SluiceError('ERR_LISTEN', `listener "${l.name}" cannot listen on ${l.address}: ${code}`);
    if (!this.native) return this.openNode(l, host, port, index, fail);
    let ip = host;
    if (net.isIP(host) === 0) {
      try { ip = (await lookup(host)).address; } catch (err) { throw fail((err as NodeJS.ErrnoException).code ?? (err as Error).message); }
    }
    let fd: number;
    try {
      fd = this.native.listen(ip, port, 4096);
    } catch (err) {
      throw fail((err as NodeJS.ErrnoException).code ?? (err as Error).message);
    }
    const bound = this.native.localAddress(fd);
    const batch = new Int32Array(BATCH * ACCEPT_ENTRY_WORDS);
    const entry: NativeListener = {
      kind: 'native', config: l, index, slot: this.opts.slotOf(l.name), batch, resumeTimer: null,
      address: { address: bound.address, port: bound.port, family: bound.family === 6 ? 'IPv6' : 'IPv4' },
      acceptor: null as unknown as Acceptor,
    };
    try {
      entry.acceptor = this.native.acceptStart(fd, batch, l.capture === true, (n, refused, status) => this.onBatch(entry, n, refused, status));
    } catch (err) {
      this.native.close(fd);
      throw fail((err as NodeJS.ErrnoException).code ?? (err as Error).message);
    }
    return entry;
  }

  private openNode(l: ListenerConfig, host: string, port: number, index: number, fail: (code: string) => Error): Promise<OpenListener> {
    const entry: NodeListener = { kind: 'node', config: l, index, server: null as unknown as net.Server };
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.onLocalConnection(entry, socket));
    entry.server = server;
    server.maxConnections = Infinity;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(fail(err.code ?? err.message)));
      server.listen({ host, port, backlog: 4096 }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => log.error({ err, listener: l.name }, 'listener error'));
        resolve(entry);
      });
    });
  }

  private closeOne(entry: OpenListener): void {
    if (entry.kind === 'node') { entry.server.close(); return; }
    if (entry.resumeTimer) clearTimeout(entry.resumeTimer);
    this.native!.acceptStop(entry.acceptor);
  }

  /** One batch of accepted connections from the addon: the whole per-connection work of the main thread. */
  private onBatch(l: NativeListener, n: number, refused: number, status: number): void {
    const name = l.config.name;
    if (refused > 0) {
      for (let i = 0; i < refused; i++) {
        this.events.overflow(name);
        refusedAtLimit.note({ listener: name, open: this.active, budget: this.budget, why: 'EMFILE' });
      }
    }
    if (status < 0) {
      if (status === -EMFILE || status === -ENFILE) {
        // not even the spare descriptor is left: pause, or the readable socket would spin
        if (!l.resumeTimer && this.servers.get(name) === l) {
          l.resumeTimer = setTimeout(() => { l.resumeTimer = null; if (this.servers.get(name) === l) this.native!.acceptResume(l.acceptor); }, EMFILE_PAUSE_MS);
        }
      } else {
        acceptFailed.note({ listener: name, errno: -status });
      }
    }
    if (n === 0) return;
    const sender = this.sender!;
    if (this.pending.length) this.sendPending();
    const b = l.batch;
    let open = this.active;
    let closing = 0;
    // what a worker would otherwise ask getsockname for; a capture listener's connections may
    // have been sent to it under another address (TPROXY), so theirs is left for the worker to read
    const localPort = l.config.capture === true ? 0 : l.address.port;
    for (let i = 0; i < n; i++) {
      const o = i * ACCEPT_ENTRY_WORDS;
      const fd = b[o];
      if (open >= this.budget || fd >= MAX_FD) {
        this.toClose[closing++] = fd;
        if (fd >= MAX_FD) {
          log.error({ fd }, 'descriptor beyond the ownership table; connection dropped');
          this.events.handoffFailed();
        } else {
          this.events.overflow(name);
          refusedAtLimit.note({ listener: name, open, budget: this.budget, why: 'budget' });
        }
        continue;
      }
      const flags = b[o + 1];
      let family = flags & 0xff;
      if (flags & ACCEPT_DST_ERROR) {
        dstUnreadable.note({ listener: name, errno: b[o + 7] });
      } else if (flags & ACCEPT_OWN_CHECK) {
        const dst = formatDst(family, b.subarray(o + 3, o + 7), b[o + 2]);
        if (dst && isLocalAddress(plain(dst.address))) family = 0;
      }
      open++;
      if (!sender.send(fd, l.index, l.slot, 0, family, b[o + 2], b, o + 3, localPort, b, o + ACCEPT_PEER)) {
        this.hold({
          fd, listener: l.index, slot: l.slot, attempt: 0, family, port: b[o + 2], addr: b.slice(o + 3, o + 7), localPort,
          peer: b.slice(o + ACCEPT_PEER, o + ACCEPT_PEER + PEER_WORDS),
        });
      }
    }
    sender.flush();
    if (closing) this.native!.closeMany(this.toClose, closing);
  }

  /** No worker can take it now: keep it (main holds the descriptor) until one can. */
  private hold(c: Returned): void {
    this.pending.push(c);
    this.pendingBy[c.listener]++;
    this.waitForRoom();
  }

  /** Hand held connections to workers, oldest first, as far as they have room. */
  private sendPending(): void {
    const sender = this.sender!;
    let i = 0;
    for (; i < this.pending.length; i++) {
      const c = this.pending[i];
      if (!sender.send(c.fd, c.listener, c.slot, c.attempt, c.family, c.port, c.addr, 0, c.localPort)) break;
      this.pendingBy[c.listener]--;
    }
    if (i > 0) {
      this.pending = this.pending.slice(i);
      sender.flush();
    }
  }

  /**
   * Workers changed (one started, or some died). `live`: the threads alive now. The queue of a
   * dead worker is taken back: what it never claimed goes to another worker once, or is closed.
   */
  workersChanged(live: ReadonlySet<number>): void {
    const sender = this.sender;
    if (!sender) return;
    for (const [row, owner] of sender.owners()) {
      if (live.has(owner)) continue;
      let handed = 0;
      let closed = 0;
      for (const c of sender.release(row)) {
        if (c.attempt === 0 && !this.stopping) {
          handed++;
          this.events.requeued?.();
          c.attempt = 1;
          if (!sender.send(c.fd, c.listener, c.slot, 1, c.family, c.port, c.addr, 0, c.localPort, c.peer, 0)) this.hold(c);
        } else {
          closed++;
          this.drop(c);
        }
      }
      if (handed || (closed && !this.stopping)) {
        log.warn({ threadId: owner, handed, closed }, 'a worker was lost before it took connections queued for it: handed to another worker, or closed if they had been handed on once already');
      }
    }
    sender.refresh();
    sender.flush();
    if (this.pending.length) this.sendPending();
    this.checkIdle();
  }

  /** Close a connection main holds and cannot hand off: counted, exactly once (main owns it). */
  private drop(c: Returned): void {
    try { this.native!.close(c.fd); } catch { /* already gone */ }
    this.events.handoffFailed();
  }

  /** Connections wait (pending, or idle() waiters): wake at each connection a worker finishes. */
  private waitForRoom(): void {
    if (this.waiting || !this.sender) return;
    if (this.pending.length === 0 && this.idleWaiters.length === 0) return;
    this.waiting = true;
    void this.sender.nextDone(1000).then(() => {
      this.waiting = false;
      if (this.pending.length) this.sendPending();
      this.checkIdle();
      this.waitForRoom();
    });
  }

  private onLocalConnection(l: NodeListener, socket: net.Socket): void {
    if (this.active >= this.budget) {
      socket.destroy();
      this.events.overflow(l.config.name);
      refusedAtLimit.note({ listener: l.config.name, open: this.active, budget: this.budget, why: 'budget' });
      return;
    }
    this.localOpen++;
    this.localBy[l.index]++;
    socket.once('close', () => {
      this.localOpen--;
      this.localBy[l.index]--;
      this.checkIdle();
    });
    this.localServe(socket, l.config.name, null);
  }

  private checkIdle(): void {
    if (this.idleWaiters.length && this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves when every accepted connection has closed. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((r) => {
      this.idleWaiters.push(r);
      this.waitForRoom();
    });
  }

  /** Stop accepting. Open connections are not touched. */
  async closeAll(): Promise<void> {
    this.stopping = true;
    refusedAtLimit.flush();
    for (const entry of this.servers.values()) this.closeOne(entry);
    this.servers.clear();
  }

  /**
   * The workers are gone (the pool was destroyed): whatever was still queued for them or
   * waiting for one is closed here; what they had claimed went with them.
   */
  abandon(): void {
    this.stopping = true;
    this.workersChanged(new Set());
    for (const c of this.pending.splice(0)) { this.pendingBy[c.listener]--; this.drop(c); }
    this.checkIdle();
  }
}
