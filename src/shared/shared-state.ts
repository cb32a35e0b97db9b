/**
 * The one SharedArrayBuffer that the main thread and every worker share, and the two regions
 * this module keeps in it: the control words and the config mailbox.
 *
 * Each region is declared by the module that uses it (src/shared/shared-memory.ts lays them
 * out, by name, each on a cache line of its own); no module knows another's offset. Today:
 *
 *   ┌──────────────── config.mailbox (Uint8 × CONFIG_BYTES) ─ shared-state.ts ──┐
 *   │ the latest config, msgpackr-packed, behind the seqlock in control         │
 *   ├──────────────── control (Int32 × 8) ─────────────────── shared-state.ts ──┤
 *   │ 0 config seq (odd while being written) │ 1 config len │ 2 draining │     │
 *   │ 3 closing idle │ 4..7 free                                                │
 *   ├──────────────── fd.owner (Int32 × MAX_FD) ───────────── fd-ownership.ts ──┤
 *   │ slot[fd] = connection token while main holds the fd,                      │
 *   │ -token once a worker claimed it, 0 free                                   │
 *   ├──────────────── stats.counters (BigInt64 × MAX_COUNTERS) ──── stats.ts ───┤
 *   │ monotonic counters and gauges, Atomics.add from any thread; names live    │
 *   │ in the stats registry                                                     │
 *   ├──────────────── stats.gauge_row_owner (Int32 × GAUGE_ROWS) ── stats.ts ───┤
 *   │ the threadId holding gauge row r, 0 free                                  │
 *   ├──────────────── stats.gauge_rows (BigInt64 × GAUGE_ROWS × MAX_COUNTERS) ──┤
 *   │ a worker's share of each gauge, in its own row, so the main thread can    │
 *   │ zero what a dead worker left behind                                       │
 *   └───────────────────────────────────────────────────────────────────────────┘
 *
 * Every worker, including one started after a crash, reads the latest config from the
 * mailbox, so nobody has to remember to re-send it.
 */
import { pack, unpack } from 'msgpackr';
import { SluiceError } from '../errors';
import { declareRegion, SharedMemory, type SharedMemoryHandle } from './shared-memory';

export const CONFIG_BYTES = 8 << 20;

const CONTROL = declareRegion({ name: 'control', kind: 'int32', count: 8 });
const MAILBOX = declareRegion({ name: 'config.mailbox', kind: 'uint8', count: CONFIG_BYTES });

const C_CONFIG_SEQ = 0;
const C_CONFIG_LEN = 1;
const C_DRAINING = 2;
const C_CLOSING_IDLE = 3;

export class SharedState {
  readonly memory: SharedMemory;
  private readonly control: Int32Array;
  private readonly configBytes: Uint8Array;

  /**
   * No argument: the main thread lays out every region declared so far and creates the buffer.
   * A handle (workerData) or a SharedMemory: attach to one that exists.
   */
  constructor(from?: SharedMemory | SharedMemoryHandle) {
    this.memory = from instanceof SharedMemory ? from : from ? SharedMemory.attach(from) : SharedMemory.create();
    this.control = this.memory.region(CONTROL);
    this.configBytes = this.memory.region(MAILBOX);
  }

  /** The buffer and its layout table: what a worker gets in workerData. */
  get handle(): SharedMemoryHandle {
    return this.memory.handle;
  }

  // ── flags ────────────────────────────────────────────────────────────────

  get draining(): boolean {
    return Atomics.load(this.control, C_DRAINING) === 1;
  }

  set draining(v: boolean) {
    Atomics.store(this.control, C_DRAINING, v ? 1 : 0);
  }

  /** The drain period is over: idle connections close (a worker started now must know too). */
  get closingIdle(): boolean {
    return Atomics.load(this.control, C_CLOSING_IDLE) === 1;
  }

  set closingIdle(v: boolean) {
    Atomics.store(this.control, C_CLOSING_IDLE, v ? 1 : 0);
  }

  // ── config mailbox (single writer: the main thread) ──────────────────────

  get configSeq(): number {
    return Atomics.load(this.control, C_CONFIG_SEQ);
  }

  publishConfig(value: unknown): number {
    const bytes = pack(value);
    if (bytes.length > CONFIG_BYTES) {
      throw new SluiceError('ERR_CONFIG_TOO_LARGE', `config packs to ${bytes.length} bytes, more than ${CONFIG_BYTES}`);
    }
    const seq = Atomics.add(this.control, C_CONFIG_SEQ, 1) + 1; // odd: writing
    this.configBytes.set(bytes, 0);
    Atomics.store(this.control, C_CONFIG_LEN, bytes.length);
    Atomics.store(this.control, C_CONFIG_SEQ, seq + 1); // even: stable
    return seq + 1;
  }

  /** Returns the latest config and its sequence number, or null if none was published yet. */
  readConfig<T>(): { seq: number; value: T } | null {
    for (;;) {
      const before = Atomics.load(this.control, C_CONFIG_SEQ);
      if (before === 0) return null;
      if (before & 1) continue;
      const len = Atomics.load(this.control, C_CONFIG_LEN);
      const copy = Buffer.from(this.configBytes.subarray(0, len));
      if (Atomics.load(this.control, C_CONFIG_SEQ) !== before) continue;
      return { seq: before, value: unpack(copy) as T };
    }
  }
}
