/**
 * Accepted connections go from the main thread to the workers through shared memory, in
 * batches, without a message or a task per connection.
 *
 *   main thread                                              worker (row r)
 *   accept batch (native) ─▶ for each: pick the live row
 *     with the fewest open connections ─▶ offer slot[fd]
 *     = token ─▶ entry at ring[r][prod]                      waitAsync(prod[r]) wakes, then for
 *   end of batch: prod[r] += n, Atomics.notify(prod[r]) ──▶    each entry up to prod:
 *                                                            claim slot (token → -token), or skip
 *                                                            ─▶ serve ─▶ closed: slot → 0,
 *                                                            done[r] += 1, Atomics.notify(wake)
 *
 *   per row, in handoff.rows (Int32 × ROW_WORDS):  0 prod (main writes) │ 1 owner threadId
 *                                                  16 cons (worker writes) │ 17 done (worker writes)
 *   handoff.ring (Int32 × ROWS × RING × ENTRY_WORDS): 0 fd │ 1 token │ 2 listener │ 3 listener
 *       stat slot │ 4 attempt │ 5 dst family (0 none, 4, 6) │ 6 dst port │ 7..10 dst address bytes │
 *       11 local port (the listener's bound port; 0 when not known, as on capture listeners) │
 *       12 peer family (4, 6; 0 not known) │ 13 peer port │ 14..17 peer address bytes (as accept saw it)
 *   handoff.done (Int32 × ROWS × MAX_LISTENERS): connections of listener l that row r finished
 *   handoff.wake (Int32): bumped on every finished connection; the main thread waits on it
 *       only while it has something to wait for (a drain, connections waiting for room)
 *
 * The main thread counts what it sent to each row (`assigned`); a row's open connections are
 * assigned − done. A worker that dies: every entry in [cons, prod) whose slot still holds its
 * token is taken back (compare-and-swap, so a worker that claimed it first keeps it), then the
 * row is dropped: everything else it had was closed by Node with the thread. No message and no
 * count ever has to arrive from a thread that is gone.
 */
import { ipv6Groups } from '../net/cidr';
import type { OriginalDst } from './messages';
import { FdOwnership } from './fd-ownership';
import { declareRegion, type SharedMemory } from './shared-memory';

/** Rows: one per worker thread (workers.threads is at most 256), and room for replacements. */
export const HANDOFF_ROWS = 272;
/** Entries per row: connections queued for one worker and not yet taken. */
export const RING = 1024;
export const ENTRY_WORDS = 18;
/** A peer in an entry: family (4, 6; 0 unknown), port, four words of address as in the sockaddr. */
export const PEER_WORDS = 6;
/** Listeners ever opened (by name, append-only) in one process. */
export const MAX_LISTENERS = 1024;

const ROW_WORDS = 32;
const R_PROD = 0;
const R_OWNER = 1;
const R_CONS = 16;
const R_DONE = 17;

const E_FD = 0;
const E_TOKEN = 1;
const E_LISTENER = 2;
const E_SLOT = 3;
const E_ATTEMPT = 4;
const E_FAMILY = 5;
const E_PORT = 6;
const E_ADDR = 7;
const E_LOCAL_PORT = 11;
const E_PEER = 12;

/** Atomics.waitAsync (V8, Node ≥ 16), missing from the ES2022 typings. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs?: number): { async: boolean; value: Promise<unknown> | string };
}).waitAsync;

const ROWS = declareRegion({ name: 'handoff.rows', kind: 'int32', count: HANDOFF_ROWS * ROW_WORDS });
const RINGS = declareRegion({ name: 'handoff.ring', kind: 'int32', count: HANDOFF_ROWS * RING * ENTRY_WORDS });
const DONE = declareRegion({ name: 'handoff.done', kind: 'int32', count: HANDOFF_ROWS * MAX_LISTENERS });
const WAKE = declareRegion({ name: 'handoff.wake', kind: 'int32', count: 1 });

/** What a worker receives: a descriptor it now owns. */
export interface Claimed {
  fd: number;
  token: number;
  listener: number;
  slot: number;
  dst: OriginalDst | null;
  /** The port it was accepted on, as the main thread knows it (no getsockname in the worker); 0: not known. */
  localPort: number;
  /** The peer as accept saw it (a client that resets at once still has one); null: not known. */
  peer: { address: string; port: number } | null;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The address an entry carries, as text. */
export function formatDst(family: number, words: ArrayLike<number>, port: number): OriginalDst | null {
  if (family !== 4 && family !== 6) return null;
  if (family === 4 && LITTLE_ENDIAN) {
    // the word holds the address's bytes in memory order: the first is its low byte here
    const w = words[0];
    return { address: `${w & 255}.${(w >>> 8) & 255}.${(w >>> 16) & 255}.${w >>> 24}`, port };
  }
  const bytes = new Uint8Array(Int32Array.from({ length: 4 }, (_, i) => words[i]).buffer); // the sockaddr's bytes, in order
  if (family === 4) return { address: `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`, port };
  return { address: formatIPv6(bytes), port };
}

/** The peer of an entry's PEER_WORDS at `at`, as Node's remoteAddress/remotePort would say; null when not known. */
function peerOf(ring: Int32Array, at: number): { address: string; port: number } | null {
  return formatDst(ring[at], ring.subarray(at + 2, at + 6), ring[at + 1]);
}

/** RFC 5952 text of 16 bytes, as inet_ntop writes it (IPv4-mapped as ::ffff:a.b.c.d). */
export function formatIPv6(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  return ipv6Groups(groups);
}

/** A connection the main thread took back from a dead worker's queue: untouched, not a byte read. */
export interface Returned {
  fd: number;
  listener: number;
  slot: number;
  attempt: number;
  family: number;
  port: number;
  addr: Int32Array;
  localPort: number;
  /** PEER_WORDS words, or null. */
  peer: Int32Array | null;
}

/** Main thread: the sending side of every row. */
export class HandoffSender {
  private readonly rows: Int32Array;
  private readonly ring: Int32Array;
  private readonly done: Int32Array;
  private readonly wake: Int32Array;
  private readonly fds: FdOwnership;
  /** Per row: connections sent and not taken back; per row and listener, the same. */
  private readonly assigned = new Int32Array(HANDOFF_ROWS);
  private readonly assignedBy = new Int32Array(HANDOFF_ROWS * MAX_LISTENERS);
  /** Main's copy of each row's prod (it is the only writer). */
  private readonly prod = new Int32Array(HANDOFF_ROWS);
  /** Rows with an owner, as last scanned. */
  private live: number[] = [];
  /** Rows given entries since the last flush. */
  private readonly touched = new Set<number>();
  private token = 0;
  private next = 0;

  constructor(memory: SharedMemory, fds: FdOwnership, private readonly maxPerRow = Infinity) {
    this.rows = memory.region(ROWS);
    this.ring = memory.region(RINGS);
    this.done = memory.region(DONE);
    this.wake = memory.region(WAKE);
    this.fds = fds;
  }

  /** Rows a worker owns now (call when workers come or go). */
  refresh(): number[] {
    const live: number[] = [];
    for (let r = 0; r < HANDOFF_ROWS; r++) if (Atomics.load(this.rows, r * ROW_WORDS + R_OWNER) !== 0) live.push(r);
    this.live = live;
    return live;
  }

  /** Threads owning a row, by row. */
  owners(): Map<number, number> {
    const m = new Map<number, number>();
    for (let r = 0; r < HANDOFF_ROWS; r++) {
      const o = Atomics.load(this.rows, r * ROW_WORDS + R_OWNER);
      if (o !== 0) m.set(r, o);
    }
    return m;
  }

  /** Open connections of a row: sent and neither finished nor taken back. */
  private open(r: number): number {
    return (this.assigned[r] - Atomics.load(this.rows, r * ROW_WORDS + R_DONE)) | 0;
  }

  /** Every row's open connections. */
  get outstanding(): number {
    let n = 0;
    for (const r of this.live) n += this.open(r);
    return n;
  }

  /** Open connections of one listener, over every row. */
  outstandingOf(listener: number): number {
    let n = 0;
    for (const r of this.live) n += (this.assignedBy[r * MAX_LISTENERS + listener] - Atomics.load(this.done, r * MAX_LISTENERS + listener)) | 0;
    return n;
  }

  /**
   * Queue one connection for the live row with the fewest open connections (ties in turn).
   * False when no row can take it (none live, all at maxPerRow, or all rings full): the
   * caller keeps the descriptor. `listener`: the caller's index of the listener; `slot`: the
   * stat slot of `sluice_downstream_cx_total{listener}`, how a worker finds it in its config;
   * `attempt`: 0, or 1 once a dead worker's queue gave it back; the dst address is the four
   * words at addr[at] (IPv4 in the first); `localPort`: the port it was accepted on, 0 if not known.
   */
  send(fd: number, listener: number, slot: number, attempt: number, family: number, port: number, addr: Int32Array, at: number, localPort = 0, peer: Int32Array | null = null, peerAt = 0): boolean {
    let live = this.live;
    if (live.length === 0) live = this.refresh();
    let best = -1;
    let bestOpen = Infinity;
    const n = live.length;
    for (let k = 0; k < n; k++) {
      const r = live[(this.next + k) % n];
      const open = this.open(r);
      if (open >= bestOpen || open >= this.maxPerRow) continue;
      const base = r * ROW_WORDS;
      if (((this.prod[r] - Atomics.load(this.rows, base + R_CONS)) | 0) >= RING) continue;
      best = r;
      bestOpen = open;
    }
    if (best < 0) return false;
    this.next = (this.next + 1) % (n || 1);
    this.token = this.token >= 0x7ffffffe ? 1 : this.token + 1;
    const token = this.token;
    this.fds.offer(fd, token);
    const e = (best * RING + (this.prod[best] & (RING - 1))) * ENTRY_WORDS;
    const ring = this.ring;
    ring[e + E_FD] = fd;
    ring[e + E_TOKEN] = token;
    ring[e + E_LISTENER] = listener;
    ring[e + E_SLOT] = slot;
    ring[e + E_ATTEMPT] = attempt;
    ring[e + E_FAMILY] = family;
    ring[e + E_PORT] = port;
    ring[e + E_LOCAL_PORT] = localPort;
    if (peer !== null) for (let k = 0; k < PEER_WORDS; k++) ring[e + E_PEER + k] = peer[peerAt + k];
    else ring[e + E_PEER] = 0;
    if (family !== 0) {
      ring[e + E_ADDR] = addr[at];
      ring[e + E_ADDR + 1] = addr[at + 1];
      ring[e + E_ADDR + 2] = addr[at + 2];
      ring[e + E_ADDR + 3] = addr[at + 3];
    }
    this.prod[best] = (this.prod[best] + 1) | 0;
    this.assigned[best] = (this.assigned[best] + 1) | 0;
    const by = best * MAX_LISTENERS + listener;
    this.assignedBy[by] = (this.assignedBy[by] + 1) | 0;
    this.touched.add(best);
    return true;
  }

  /** Publish what send() queued and wake those workers: one store and one notify per row. */
  flush(): void {
    for (const r of this.touched) {
      Atomics.store(this.rows, r * ROW_WORDS + R_PROD, this.prod[r]);
      Atomics.notify(this.rows, r * ROW_WORDS + R_PROD);
    }
    this.touched.clear();
  }

  /**
   * A worker is gone: take back every queued connection it had not claimed, then free its row.
   * What it had claimed was closed with it. Returns the connections main holds again.
   */
  release(row: number): Returned[] {
    const base = row * ROW_WORDS;
    this.flush();
    const back: Returned[] = [];
    const prod = this.prod[row];
    for (let i = Atomics.load(this.rows, base + R_CONS); i !== prod; i = (i + 1) | 0) {
      const e = (row * RING + (i & (RING - 1))) * ENTRY_WORDS;
      const fd = this.ring[e + E_FD];
      if (!this.fds.reclaim(fd, this.ring[e + E_TOKEN])) continue; // claimed: its worker had it
      back.push({
        fd, listener: this.ring[e + E_LISTENER], slot: this.ring[e + E_SLOT], attempt: this.ring[e + E_ATTEMPT],
        family: this.ring[e + E_FAMILY], port: this.ring[e + E_PORT], addr: this.ring.slice(e + E_ADDR, e + E_ADDR + 4),
        localPort: this.ring[e + E_LOCAL_PORT], peer: this.ring.slice(e + E_PEER, e + E_PEER + PEER_WORDS),
      });
    }
    this.assigned[row] = 0;
    this.assignedBy.fill(0, row * MAX_LISTENERS, (row + 1) * MAX_LISTENERS);
    this.done.fill(0, row * MAX_LISTENERS, (row + 1) * MAX_LISTENERS);
    this.prod[row] = 0;
    Atomics.store(this.rows, base + R_PROD, 0);
    Atomics.store(this.rows, base + R_CONS, 0);
    Atomics.store(this.rows, base + R_DONE, 0);
    Atomics.store(this.rows, base + R_OWNER, 0); // last: the row is free for a new worker
    this.refresh();
    return back;
  }

  /** Resolves at the next finished connection (or after `ms`): the main thread waits only when it must. */
  nextDone(ms: number): Promise<unknown> {
    const seen = Atomics.load(this.wake, 0);
    const w = waitAsync(this.wake, 0, seen, ms);
    return w.async ? (w.value as Promise<unknown>) : Promise.resolve();
  }
}

/** A worker's side: its row, the loop that takes connections, and their end. */
export class HandoffInbox {
  private readonly rows: Int32Array;
  private readonly ring: Int32Array;
  private readonly done: Int32Array;
  private readonly wake: Int32Array;
  private readonly fds: FdOwnership;
  private readonly base: number;
  private cons = 0;
  private stopped = false;

  private constructor(memory: SharedMemory, readonly row: number) {
    this.rows = memory.region(ROWS);
    this.ring = memory.region(RINGS);
    this.done = memory.region(DONE);
    this.wake = memory.region(WAKE);
    this.fds = new FdOwnership(memory);
    this.base = row * ROW_WORDS;
    this.cons = Atomics.load(this.rows, this.base + R_CONS);
  }

  /** Take a free row for this thread; null when every row is taken. */
  static claim(memory: SharedMemory, threadId: number): HandoffInbox | null {
    const rows = memory.region(ROWS);
    for (let r = 0; r < HANDOFF_ROWS; r++) {
      if (Atomics.compareExchange(rows, r * ROW_WORDS + R_OWNER, 0, threadId) === 0) return new HandoffInbox(memory, r);
    }
    return null;
  }

  /**
   * Take connections as the main thread queues them, for as long as the thread lives. `serve`
   * gets each claimed descriptor and must call finished() once for it, whatever happens; an
   * exception it throws is logged by `onError` and finishes that connection only.
   */
  start(serve: (c: Claimed) => void, onError: (err: unknown, c: Claimed) => void): void {
    const run = (): void => {
      while (!this.stopped) {
        const prod = Atomics.load(this.rows, this.base + R_PROD);
        if (this.cons === prod) {
          const w = waitAsync(this.rows, this.base + R_PROD, prod);
          if (w.async) { void (w.value as Promise<unknown>).then(run); return; }
          continue; // it moved meanwhile
        }
        while (this.cons !== prod && !this.stopped) {
          const e = (this.row * RING + (this.cons & (RING - 1))) * ENTRY_WORDS;
          this.cons = (this.cons + 1) | 0;
          this.take(e, serve, onError);
        }
        Atomics.store(this.rows, this.base + R_CONS, this.cons);
      }
    };
    run();
  }

  private take(e: number, serve: (c: Claimed) => void, onError: (err: unknown, c: Claimed) => void): void {
    const ring = this.ring;
    const fd = ring[e + E_FD];
    const token = ring[e + E_TOKEN];
    const listener = ring[e + E_LISTENER];
    if (!this.fds.claim(fd, token)) { this.count(listener); return; } // main took it back
    const family = ring[e + E_FAMILY];
    const c: Claimed = {
      fd, token, listener, slot: ring[e + E_SLOT],
      dst: family === 0 ? null : formatDst(family, ring.subarray(e + E_ADDR, e + E_ADDR + 4), ring[e + E_PORT]),
      localPort: ring[e + E_LOCAL_PORT],
      peer: peerOf(ring, e + E_PEER),
    };
    try {
      serve(c);
    } catch (err) {
      onError(err, c);
    }
  }

  /** The connection is over (its socket closed, or it could not be served). */
  finished(c: Claimed): void {
    this.fds.release(c.fd, c.token);
    this.count(c.listener);
  }

  private count(listener: number): void {
    Atomics.add(this.done, this.row * MAX_LISTENERS + listener, 1);
    Atomics.add(this.rows, this.base + R_DONE, 1);
    Atomics.add(this.wake, 0, 1);
    Atomics.notify(this.wake, 0);
  }

  /** Stop taking connections (tests: a worker that stalls, or dies, after the one being served). */
  stop(): void {
    this.stopped = true;
  }
}
