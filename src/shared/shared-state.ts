/**
 * The one SharedArrayBuffer that the main thread and every worker share.
 *
 *   ┌──────────────── control (Int32 × 16) ─────────────────┐
 *   │ 0 config seq (odd while being written) │ 1 config len │ 2 draining │ ...
 *   ├──────────────── fd ownership (Int32 × MAX_FD) ─────────┤
 *   │ slot[fd] = connection token while main holds the fd,   │
 *   │ -token once a worker claimed it, 0 free                │
 *   ├──────────────── counters (BigInt64 × MAX_COUNTERS) ─────┤
 *   │ monotonic counters and gauges, Atomics.add from any    │
 *   │ thread; names live in the stats registry               │
 *   ├──────────────── gauge rows (BigInt64 × ROWS × MAX_COUNTERS)
 *   │ a worker's share of each gauge, in its own row, so the  │
 *   │ main thread can zero what a dead worker left behind     │
 *   ├──────────────── config mailbox (bytes) ─────────────────┤
 *   │ the latest config, msgpackr-packed, behind a seqlock   │
 *   ├──────────────── endpoint mailbox (bytes) ───────────────┤
 *   │ endpoint lists that replace the config's, by cluster   │
 *   │ (upstream/endpoint-directory.ts)                       │
 *   └────────────────────────────────────────────────────────┘
 *
 * Every worker, including one started after a crash, reads the latest config
 * from the mailbox, so nobody has to remember to re-send it.
 */
import { pack, unpack } from 'msgpackr';
import { SluiceError } from '../errors';
import { ENDPOINT_CONTROL_WORDS, ENDPOINT_MAILBOX_BYTES } from '../upstream/endpoint-directory';

export const MAX_FD = 1 << 20;
export const MAX_COUNTERS = 1 << 16;
export const CONFIG_BYTES = 8 << 20;
/** Workers that get a gauge row of their own; more than that share the common counters. */
export const GAUGE_ROWS = 32;

const CONTROL_WORDS = 16 + GAUGE_ROWS;
/** control[ROW_OWNER + r]: the threadId holding gauge row r, 0 free. */
const ROW_OWNER = 16;
const C_CONFIG_SEQ = 0;
const C_CONFIG_LEN = 1;
const C_DRAINING = 2;
const C_CLOSING_IDLE = 3;

const FD_OFFSET = CONTROL_WORDS * 4;
const COUNTER_OFFSET = FD_OFFSET + MAX_FD * 4; // multiple of 8
const ROWS_OFFSET = COUNTER_OFFSET + MAX_COUNTERS * 8;
const CONFIG_OFFSET = ROWS_OFFSET + GAUGE_ROWS * MAX_COUNTERS * 8;
const ENDPOINTS_OFFSET = CONFIG_OFFSET + CONFIG_BYTES;
/** control[C_ENDPOINTS .. +2]: the endpoint mailbox's seq and length (upstream/endpoint-directory.ts). */
const C_ENDPOINTS = 4;
const TOTAL = ENDPOINTS_OFFSET + ENDPOINT_MAILBOX_BYTES;

export class SharedState {
  readonly buffer: SharedArrayBuffer;
  readonly control: Int32Array;
  readonly fdSlots: Int32Array;
  readonly counters: BigInt64Array;
  readonly gaugeRows: BigInt64Array;
  private readonly configBytes: Uint8Array;
  /** The endpoint mailbox: its control words and bytes, read and written by upstream/endpoint-directory.ts. */
  readonly endpointControl: Int32Array;
  readonly endpointBytes: Uint8Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(TOTAL);
    if (this.buffer.byteLength !== TOTAL) throw new SluiceError('ERR_SHARED_LAYOUT', 'shared memory layout mismatch');
    this.control = new Int32Array(this.buffer, 0, CONTROL_WORDS);
    this.fdSlots = new Int32Array(this.buffer, FD_OFFSET, MAX_FD);
    this.counters = new BigInt64Array(this.buffer, COUNTER_OFFSET, MAX_COUNTERS);
    this.gaugeRows = new BigInt64Array(this.buffer, ROWS_OFFSET, GAUGE_ROWS * MAX_COUNTERS);
    this.configBytes = new Uint8Array(this.buffer, CONFIG_OFFSET, CONFIG_BYTES);
    this.endpointControl = new Int32Array(this.buffer, C_ENDPOINTS * 4, ENDPOINT_CONTROL_WORDS);
    this.endpointBytes = new Uint8Array(this.buffer, ENDPOINTS_OFFSET, ENDPOINT_MAILBOX_BYTES);
  }

  // ── fd ownership ──────────────────────────────────────────────────────────

  /** Main thread, right after dup(): the number is not open anywhere else, so a plain store is safe. */
  offerFd(fd: number, token: number): boolean {
    if (fd < 0 || fd >= MAX_FD) return false;
    Atomics.store(this.fdSlots, fd, token);
    return true;
  }

  /** Worker: take the fd if main still offers it under this token. */
  claimFd(fd: number, token: number): boolean {
    return Atomics.compareExchange(this.fdSlots, fd, token, -token) === token;
  }

  /** Main thread, after a task failed: take the fd back if no worker claimed it. True means main must close it. */
  reclaimFd(fd: number, token: number): boolean {
    return Atomics.compareExchange(this.fdSlots, fd, token, 0) === token;
  }

  /** Worker, just before it closes a claimed fd. */
  releaseFd(fd: number, token: number): void {
    Atomics.compareExchange(this.fdSlots, fd, -token, 0);
  }

  // ── gauge rows ───────────────────────────────────────────────────────────

  /** Worker: take a free gauge row for this thread; -1 when all are taken. */
  claimGaugeRow(threadId: number): number {
    for (let r = 0; r < GAUGE_ROWS; r++) {
      if (Atomics.compareExchange(this.control, ROW_OWNER + r, 0, threadId) === 0) return r;
    }
    return -1;
  }

  /** Main thread, once a worker is gone: drop its share of every gauge and free its row. */
  releaseGaugeRow(threadId: number): boolean {
    for (let r = 0; r < GAUGE_ROWS; r++) {
      if (Atomics.load(this.control, ROW_OWNER + r) !== threadId) continue;
      this.gaugeRows.fill(0n, r * MAX_COUNTERS, (r + 1) * MAX_COUNTERS);
      Atomics.store(this.control, ROW_OWNER + r, 0);
      return true;
    }
    return false;
  }

  /** A gauge's value: the common part plus every row's share. */
  gauge(slot: number): bigint {
    let v = Atomics.load(this.counters, slot);
    for (let r = 0; r < GAUGE_ROWS; r++) v += Atomics.load(this.gaugeRows, r * MAX_COUNTERS + slot);
    return v;
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
