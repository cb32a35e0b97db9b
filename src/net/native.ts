/**
 * The project's own N-API addon (native/sluice-net.c): listening and accepting on the main
 * thread without a Node socket, the original destination of each connection, and the few
 * descriptor calls Node cannot make. Node 20 cannot move a socket to a worker thread, so the
 * main thread accepts the descriptor and a worker wraps it.
 */
import path from 'node:path';

/** Words per accepted connection in an acceptor's batch (see native/sluice-net.c). */
export const ACCEPT_ENTRY_WORDS = 14;
/** Where an entry's peer starts: family (4, 6; 0 unknown), port, four words of address (PEER_WORDS in all). */
export const ACCEPT_PEER = 8;
/** Entry flags: the dst family in the low byte; dst may be one of our own addresses; dst unreadable. */
export const ACCEPT_OWN_CHECK = 0x100;
export const ACCEPT_DST_ERROR = 0x200;

/** A listening socket being accepted from; opaque. */
export type Acceptor = { readonly __acceptor: unique symbol };

export interface NativeNet {
  originalDst(fd: number): { address: string; port: number; family: 4 | 6 } | null;
  dup(fd: number): number;
  close(fd: number): void;
  /** RLIMIT_NOFILE, the soft limit raised to min(hard, max) first. */
  fdLimit(max: number): { soft: number; hard: number };
  /** A listening socket on a numeric address: non-blocking, CLOEXEC, SO_REUSEADDR, "::" dual-stack. */
  listen(ip: string, port: number, backlog: number): number;
  localAddress(fd: number): { address: string; port: number; family: 4 | 6 };
  /**
   * Accept on `fd` from the main loop, natively. After each batch (accept4 until EAGAIN or the
   * batch is full) `onBatch(n, refused, status)` runs once: n entries of ACCEPT_ENTRY_WORDS in
   * `batch`; `refused` connections closed at once at the descriptor limit; status -errno when
   * accepting failed (-EMFILE: stopped, call acceptResume later).
   */
  acceptStart(fd: number, batch: Int32Array, capture: boolean, onBatch: (n: number, refused: number, status: number) => void): Acceptor;
  acceptResume(a: Acceptor): boolean;
  /** Stop accepting and close the listening socket. */
  acceptStop(a: Acceptor): void;
  closeMany(fds: Int32Array, n: number): void;
  /**
   * SSL_CTX_set_num_tickets on the SSL_CTX at `ctx` (its address in hex, as Node shows a
   * SecureContext's `context._external`); false where it could not. Absent from older builds.
   */
  tlsSetNumTickets?(ctx: string, n: number): boolean;
  /**
   * The SSL_CTX at `ctx` sends stateful tickets and keeps its sessions in the process's store
   * (`slots` sessions, fixed by the first call, shared by every thread), given back only to a
   * context registered with the same `sidCtx`; false where it could not. Absent from older builds.
   */
  tlsServerSessions?(ctx: string, sidCtx: Uint8Array, slots: number): boolean;
  /** Node sets its own session callbacks on a context with each TLS socket it makes of it: ours again, on a context tlsServerSessions took. */
  tlsServerSessionsRearm?(ctx: string): boolean;
  /**
   * One write(2) of `bytes[0, n)` on `fd` (retried on EINTR): the count the kernel took, 0 when
   * it took nothing (EAGAIN or an error). Absent from older builds.
   */
  writeSome?(fd: number, bytes: Uint8Array, n: number): number;
  /**
   * Downstream connections without a Node socket (src/net/native-socket.ts). connInit, once per
   * thread: the buffer reads go into, and the function each event calls with the owner as `this`
   * and one code (bytes read, 0 at the end of the stream, CONN_WRITABLE, or -errno).
   */
  connInit?(buffer: Uint8Array, onEvent: (code: number) => void): void;
  /** Polls `fd` for reading in this thread's loop; events call onEvent on `owner`. */
  connOpen?(fd: number, owner: object): Connection;
  /** Polls for CONN_READ | CONN_WRITE, or (0) nothing; 0 or -errno. */
  connEvents?(c: Connection, events: number): number;
  /**
   * One read(2) now, without waiting for an event: what onEvent would get (bytes in the buffer,
   * 0 at the end, -errno), or -EAGAIN when nothing has arrived yet. Absent from older builds.
   */
  connRead?(c: Connection, unused: 0): number;
  /** No more events; the descriptor closed (closeFd 1) or left open for a Node socket (0). */
  connClose?(c: Connection, closeFd: number): void;
  /** One send(2) of bytes[0, n) (no SIGPIPE): the count taken, 0 on EAGAIN, -errno on an error. */
  connWrite?(fd: number, bytes: Uint8Array, n: number): number;
  /** shutdown(SHUT_WR): 0 or -errno. */
  shutdownWrite?(fd: number): number;
  /**
   * Turns off the idle-time measurement Node sets on this thread's event loop (one epoll_pwait
   * with no timeout before every wait): true when it was on. Absent from older builds.
   */
  loopIdleTimeOff?(): boolean;
  /**
   * The calling thread between SCHED_OTHER and SCHED_BATCH (true: OTHER → BATCH, false: BATCH →
   * OTHER; any other policy is left): 1 changed, 0 left as it was, -errno refused. Absent from older builds.
   */
  schedBatch?(on: boolean): number;
  /** The calling thread's name, as top -H and /proc show it (15 bytes kept). Absent from older builds. */
  threadName?(name: string): void;
  /** getpeername; null when the peer is gone. */
  peerAddress?(fd: number): { address: string; port: number; family: 4 | 6 } | null;
}

/** A connection polled by the addon; opaque. */
export type Connection = { readonly __connection: unique symbol };
export const CONN_READ = 1;
export const CONN_WRITE = 2;
/** The event code for "writable" (reads bring n >= 0, errors -errno). */
export const CONN_WRITABLE = -65536;

const REQUIRED: (keyof NativeNet)[] = ['originalDst', 'dup', 'close', 'fdLimit', 'listen', 'localAddress', 'acceptStart', 'acceptResume', 'acceptStop', 'closeMany'];

let cached: NativeNet | null | undefined;
let loadError: Error | null = null;

export function loadNative(): NativeNet | null {
  if (cached !== undefined) return cached;
  const candidates = [
    path.join(__dirname, '..', '..', '..', 'build', 'Release', 'sluice_net.node'),
    path.join(__dirname, '..', '..', 'build', 'Release', 'sluice_net.node'),
  ];
  for (const file of candidates) {
    try {
      const mod = require(file) as NativeNet;
      const missing = REQUIRED.filter((k) => typeof mod[k] !== 'function');
      if (missing.length) {
        loadError = new Error(`${file} is an older build without ${missing.join(', ')}: run npm install`);
        continue;
      }
      cached = mod;
      return cached;
    } catch (err) {
      loadError = err as Error;
    }
  }
  cached = null;
  return cached;
}

export function nativeLoadError(): Error | null {
  return loadError;
}

/**
 * Sluice's threads wait without Node's idle-time measurement (see loopIdleTimeOff in the addon):
 * one system call fewer each time a thread goes to sleep. SLUICE_LOOP_IDLE_TIME=1 keeps it, for
 * whoever reads performance.eventLoopUtilization() inside Sluice (a profiler, a --require'd agent).
 * Call once per thread, at its start. True when it was turned off.
 */
export function quietLoop(): boolean {
  if (process.env.SLUICE_LOOP_IDLE_TIME === '1') return false;
  const n = loadNative();
  return n !== null && typeof n.loopIdleTimeOff === 'function' && n.loopIdleTimeOff();
}

/**
 * The main thread under SCHED_BATCH (workers.mainThreadScheduling: batch): when it wakes for a
 * listening socket it does not preempt the thread on its CPU, and runs when a CPU is free or at
 * that thread's next turn, so under load it finds several connections queued per wake-up instead
 * of one; on a CPU with nothing to do it runs at once, as before (docs/benchmarks.md). Only a
 * thread in the default policy is changed. 1: changed (threads started from now on inherit it,
 * so each worker calls workerScheduling()), 0: left as it was (another policy, or no addon),
 * -errno: refused.
 */
export function mainThreadBatch(): number {
  const n = loadNative();
  return n !== null && typeof n.schedBatch === 'function' ? n.schedBatch(true) : 0;
}

/** A worker started by a main thread that mainThreadBatch() changed: back to the default policy. */
export function workerScheduling(mainBatched: boolean): number {
  const n = loadNative();
  return mainBatched && n !== null && typeof n.schedBatch === 'function' ? n.schedBatch(false) : 0;
}

/** Names the calling thread (top -H, /proc/<pid>/task/<tid>/comm); nothing without the addon. */
export function nameThread(name: string): void {
  const n = loadNative();
  if (n !== null && typeof n.threadName === 'function') {
    try { n.threadName(name); } catch { /* a name is a convenience: never a reason to fail */ }
  }
}
