/**
 * Main thread: the listening sockets and the hand-off of each accepted
 * connection to a worker.
 *
 *   accept (paused) ─▶ originalDst(fd) ─▶ dup(fd) ─▶ destroy own socket (close, no FIN)
 *        ─▶ offer slot[dup] = token ─▶ pool.run({fd: dup, token, listener, dst})
 *   task rejected (worker died) ─▶ reclaim slot: still ours? hand it off once more (or close(dup)
 *                                   when that fails too, or when stopping) : the worker had it
 *
 * The open-connection gauge is kept here: a task settles on the main thread even when the
 * worker that ran it died, so the count never drifts.
 *
 * A connection that was not redirected reports the listener's own address as its
 * original destination; that is "no original destination", never a target.
 */
import net from 'node:net';
import os from 'node:os';
import type { ListenerConfig, SluiceConfig } from '../config/config';
import { SluiceError } from '../errors';
import { LogEvery, log } from '../log';
import { parseAddress } from '../net/address';
import type { SharedState } from '../shared/shared-state';
import { FdOwnership, MAX_FD } from '../shared/fd-ownership';
import type { NativeNet } from '../net/native';
import type { ConnectionTask, OriginalDst } from '../shared/messages';

export interface TaskRunner {
  run(task: ConnectionTask): Promise<unknown>;
}

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
 * to us. Either way it is "no original destination".
 */
export function isOwnAddress(dst: { address: string; port: number }, local: { address?: string; port?: number }, boundHost: string): boolean {
  if (dst.port !== local.port) return false;
  const ip = plain(dst.address);
  if (ip === plain(local.address)) return true;
  const wildcard = boundHost === '0.0.0.0' || boundHost === '::' || boundHost === '';
  return wildcard && isLocalAddress(ip);
}

/**
 * What the main thread counts about connections. The open-connection gauge lives here, not in
 * the workers: a worker that dies cannot take back what it added, but its tasks still settle here.
 */
export interface ListenerEvents {
  opened(listener: string): void;
  closed(listener: string): void;
  handoffFailed(): void;
  /** A connection closed at once: the process is at its descriptor budget. */
  overflow(listener: string): void;
}

/**
 * Refusals past the descriptor budget: one warning per interval with the count, not one per
 * connection (a flood of them is exactly when a log must not cost a line each).
 */
const refusedAtLimit = new LogEvery('at the file descriptor limit: new connections are closed at once');

export class Listeners {
  private readonly servers = new Map<string, { server: net.Server; config: ListenerConfig }>();
  private token = 0;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private stopping = false;
  private readonly fds: FdOwnership;
  /**
   * Open connections allowed at once, from the descriptor limit (Sluice.start sets it): each
   * needs one descriptor, and most one more upstream. Past it a new connection is closed at
   * once instead of taking the process to EMFILE, where accepts stall and clients hang.
   */
  budget = Infinity;

  constructor(
    private readonly shared: SharedState,
    private readonly runner: TaskRunner,
    private readonly native: NativeNet | null,
    private readonly localServe: LocalServe,
    private readonly events: ListenerEvents,
  ) {
    this.fds = new FdOwnership(shared.memory);
  }

  /** Open connections handed to workers and not yet closed. */
  get active(): number {
    return this.inFlight;
  }

  address(name: string): net.AddressInfo | null {
    const a = this.servers.get(name)?.server.address();
    return a && typeof a === 'object' ? a : null;
  }

  /** Make the set of listening sockets match the config: open new, close removed, keep the rest. */
  async apply(config: SluiceConfig): Promise<void> {
    const wanted = new Map(config.listeners.map((l) => [l.name, l]));
    for (const [name, entry] of this.servers) {
      const w = wanted.get(name);
      if (!w || w.address !== entry.config.address) {
        entry.server.close();
        this.servers.delete(name);
      } else {
        entry.config = w;
      }
    }
    const opened: string[] = [];
    try {
      for (const l of config.listeners) {
        if (this.servers.has(l.name)) continue;
        await this.open(l);
        opened.push(l.name);
      }
    } catch (err) {
      for (const name of opened) { this.servers.get(name)?.server.close(); this.servers.delete(name); }
      throw err;
    }
  }

  private open(l: ListenerConfig): Promise<void> {
    const { host, port } = parseAddress(l.address);
    const entry = { server: null as unknown as net.Server, config: l };
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.onConnection(entry.config, socket, entry.server));
    entry.server = server;
    server.maxConnections = Infinity;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(new SluiceError('ERR_LISTEN', `listener "${l.name}" cannot listen on ${l.address}: ${err.code ?? err.message}`));
      });
      server.listen({ host, port, backlog: 4096 }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => log.error({ err, listener: l.name }, 'listener error'));
        this.servers.set(l.name, entry);
        resolve();
      });
    });
  }

  /** Close a connection we cannot serve: at once, counted, logged once per interval. */
  private refuse(l: ListenerConfig, socket: net.Socket, why: string): void {
    socket.destroy();
    this.events.overflow(l.name);
    refusedAtLimit.note({ listener: l.name, open: this.inFlight, budget: this.budget, why });
  }

  private onConnection(l: ListenerConfig, socket: net.Socket, server: net.Server): void {
    if (this.inFlight >= this.budget) { this.refuse(l, socket, 'budget'); return; }
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    let dst: OriginalDst | null = null;
    if (l.capture && this.native && fd >= 0) {
      try {
        const d = this.native.originalDst(fd);
        const bound = server.address();
        const boundHost = bound && typeof bound === 'object' ? bound.address : '';
        if (d && !isOwnAddress(d, { address: socket.localAddress, port: socket.localPort }, boundHost)) {
          dst = { address: d.address, port: d.port };
        }
      } catch (err) {
        log.warn({ err, listener: l.name }, 'cannot read original destination');
      }
    }
    if (!this.native || fd < 0) {
      this.events.opened(l.name);
      this.inFlight++;
      socket.once('close', () => { this.events.closed(l.name); this.taskDone(); });
      this.localServe(socket, l.name, dst);
      return;
    }
    let dupFd: number;
    try {
      dupFd = this.native.dup(fd);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EMFILE' || code === 'ENFILE') { this.refuse(l, socket, code); return; }
      log.error({ err }, 'dup failed; connection dropped');
      this.events.handoffFailed();
      socket.destroy();
      return;
    }
    socket.destroy();
    if (dupFd >= MAX_FD) {
      log.error({ fd: dupFd }, 'descriptor beyond the ownership table; connection dropped');
      this.events.handoffFailed();
      this.native.close(dupFd);
      return;
    }
    this.inFlight++;
    this.events.opened(l.name);
    this.handOff(dupFd, l.name, dst, 0);
  }

  /**
   * Offer the descriptor under a fresh token and run it as a task. If the task fails and no
   * worker claimed the fd (its worker died with the task still queued), the connection is
   * untouched, not a byte read: give it once more to a live worker. Closing it is for when that
   * fails too, or when we are stopping.
   */
  private handOff(fd: number, listener: string, dst: OriginalDst | null, attempt: number): void {
    this.token = this.token >= 0x7ffffffe ? 1 : this.token + 1;
    const token = this.token;
    this.fds.offer(fd, token);
    let task: Promise<unknown>;
    try {
      task = this.runner.run({ fd, token, listener, dst });
    } catch (err) {
      task = Promise.reject(err);
    }
    task.then(
      () => { this.events.closed(listener); this.taskDone(); },
      (err) => {
        // After a claim the fd is the worker's: Node closed it with the worker, and the number
        // may already belong to a new connection. Only an unclaimed fd is still ours.
        if (this.fds.reclaim(fd, token)) {
          if (attempt === 0 && !this.stopping) {
            log.warn({ err: (err as Error).message, listener }, 'worker lost before it took a connection; handing it to another');
            this.handOff(fd, listener, dst, 1);
            return;
          }
          try { this.native!.close(fd); } catch { /* already gone */ }
          this.events.handoffFailed();
        }
        log.debug({ err: (err as Error).message }, 'connection task ended with an error');
        this.events.closed(listener);
        this.taskDone();
      },
    );
  }

  private taskDone(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Resolves when every handed-off connection has closed. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Stop accepting. Open connections are not touched. */
  async closeAll(): Promise<void> {
    this.stopping = true;
    refusedAtLimit.flush();
    const closing = [...this.servers.values()].map((e) => new Promise<void>((r) => e.server.close(() => r())));
    this.servers.clear();
    await Promise.all(closing);
  }
}
