/**
 * Main thread: the listening sockets and the hand-off of each accepted
 * connection to a worker.
 *
 *   accept (paused) ─▶ originalDst(fd) ─▶ dup(fd) ─▶ destroy own socket (close, no FIN)
 *        ─▶ offer slot[dup] = token ─▶ pool.run({fd: dup, token, listener, dst})
 *   task rejected (worker died) ─▶ reclaim slot: still ours? close(dup) : the worker had it
 *
 * A connection that was not redirected reports the listener's own address as its
 * original destination; that is "no original destination", never a target.
 */
import net from 'node:net';
import type { ListenerConfig, SluiceConfig } from '../config/config';
import { SluiceError } from '../errors';
import { log } from '../log';
import { parseAddress } from '../net/address';
import type { SharedState } from '../shared/shared-state';
import type { NativeNet } from './native';
import type { ConnectionTask, OriginalDst } from '../workers/messages';

export interface TaskRunner {
  run(task: ConnectionTask): Promise<unknown>;
}

/** Serves a connection on the main thread when no hand-off is possible (no addon). */
export type LocalServe = (socket: net.Socket, listener: string, dst: OriginalDst | null) => void;

function plain(ip: string | undefined): string {
  if (!ip) return '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

export class Listeners {
  private readonly servers = new Map<string, { server: net.Server; config: ListenerConfig }>();
  private token = 0;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  handoffFailed = 0;

  constructor(
    private readonly shared: SharedState,
    private readonly runner: TaskRunner,
    private readonly native: NativeNet | null,
    private readonly localServe: LocalServe,
    private readonly onHandoffFailed: () => void,
  ) {}

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
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.onConnection(entry.config, socket));
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

  private onConnection(l: ListenerConfig, socket: net.Socket): void {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    let dst: OriginalDst | null = null;
    if (l.capture && this.native && fd >= 0) {
      try {
        const d = this.native.originalDst(fd);
        if (d && !(plain(d.address) === plain(socket.localAddress) && d.port === socket.localPort)) {
          dst = { address: d.address, port: d.port };
        }
      } catch (err) {
        log.warn({ err, listener: l.name }, 'cannot read original destination');
      }
    }
    if (!this.native || fd < 0) {
      this.localServe(socket, l.name, dst);
      return;
    }
    let dupFd: number;
    try {
      dupFd = this.native.dup(fd);
    } catch (err) {
      log.error({ err }, 'dup failed; connection dropped');
      this.onHandoffFailed();
      socket.destroy();
      return;
    }
    socket.destroy();
    this.token = this.token >= 0x7ffffffe ? 1 : this.token + 1;
    const token = this.token;
    if (!this.shared.offerFd(dupFd, token)) {
      log.error({ fd: dupFd }, 'descriptor beyond the ownership table; connection dropped');
      this.onHandoffFailed();
      this.native.close(dupFd);
      return;
    }
    this.inFlight++;
    this.runner.run({ fd: dupFd, token, listener: l.name, dst }).then(
      () => this.taskDone(),
      (err) => {
        // The worker died or never ran the task. Close the fd only if no worker claimed it:
        // after a claim, the dying worker's sockets are closed by Node and the number may be reused.
        if (this.shared.reclaimFd(dupFd, token)) {
          try { this.native!.close(dupFd); } catch { /* already gone */ }
          this.onHandoffFailed();
        }
        log.debug({ err: (err as Error).message }, 'connection task ended with an error');
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
    const closing = [...this.servers.values()].map((e) => new Promise<void>((r) => e.server.close(() => r())));
    this.servers.clear();
    await Promise.all(closing);
  }
}
