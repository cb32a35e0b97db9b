/**
 * Slots in shared memory found by a string key, claimed by whichever thread needs one first.
 * Cluster limits and breakers keep their state in such slots: every worker that meets the same
 * key (a cluster, an endpoint of a cluster, an interface) finds the same slot, so the state is
 * the sidecar's, not a worker's. Keys come from the config and from requests (endpoints a
 * registry lists, interfaces callers name), so they cannot all be laid out up front.
 *
 *   keys   Int32 × N     0 empty │ -1 being claimed or freed │ -2 freed │ hash (never 0, -1, -2) once claimed
 *   names  Uint8 × N·K   the key's UTF-8 bytes, truncated to K-1, NUL-terminated: for the admin
 *                        view, and to tell apart two keys with the same hash
 *   used   Int32 × N     the sweep epoch in which a thread last found the slot
 *   meta   Int32 × 2     [0] the lock that claims and frees take │ [1] the sweep epoch
 *
 * Open addressing with linear probing. Finding a key takes no lock: it probes from the key's hash,
 * past freed slots, to the key or to an empty slot. Claiming takes the lock (a compare-and-swap;
 * a thread that cannot get it within a few spins gets no slot this time, and its caller goes
 * unprotected, as when the table is full), probes again under it, and writes the name before the
 * hash, so a reader never sees a hash without its name; a reader that meets -1 waits a few spins.
 *
 * Slots can be freed (`sweep`, the main thread's): keys come and go (endpoints of a registry,
 * pods that restart with new addresses, rules a reload replaced), and a table that only grew would
 * fill, and leave every key after that unprotected. A slot no thread has found for `idleSweeps`
 * sweeps, whose owner says its state is that of a new slot (a closed breaker, say), is reset and
 * marked freed; a claim takes the first freed or empty slot of its probe. A thread's cache of
 * key → slot is checked against the slot's hash at each use, so a slot freed and claimed for
 * another key is never used for the old one.
 */
import { declareRegion, type Region, type SharedMemory } from '../shared/shared-memory';

export const NAME_BYTES = 128;
const EMPTY = 0;
const CLAIMING = -1;
const FREED = -2;
const SPINS = 1000;
const LOCK = 0;
const EPOCH = 1;

export interface KeyedSlotsSpec {
  /** Region names are `<name>.keys`, `<name>.names`, `<name>.used` and `<name>.meta`. */
  name: string;
  slots: number;
}

/** The regions of one table; declared at import by the module that owns the table. */
export class KeyedSlotsLayout {
  readonly keys: Region<'int32'>;
  readonly names: Region<'uint8'>;
  readonly used: Region<'int32'>;
  readonly meta: Region<'int32'>;
  constructor(readonly spec: KeyedSlotsSpec) {
    this.keys = declareRegion({ name: `${spec.name}.keys`, kind: 'int32', count: spec.slots });
    this.names = declareRegion({ name: `${spec.name}.names`, kind: 'uint8', count: spec.slots * NAME_BYTES });
    this.used = declareRegion({ name: `${spec.name}.used`, kind: 'int32', count: spec.slots });
    this.meta = declareRegion({ name: `${spec.name}.meta`, kind: 'int32', count: 2 });
  }
}

/** FNV-1a over the UTF-16 code units, kept off 0, -1 and -2 (empty, claiming, freed). */
export function keyHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h |= 0;
  return h === EMPTY || h === CLAIMING || h === FREED ? 1 : h;
}

interface Cached { readonly slot: number; readonly hash: number }

/** What slotWaiting() sleeps on: a word nothing ever notifies. */
const NAP = new Int32Array(new SharedArrayBuffer(4));

/** What a sweep asks of the table's owner about a slot. */
export interface SlotOwner {
  /** Whether the slot's state is that of a new slot (nothing would be lost by freeing it). */
  idle(slot: number): boolean;
  /** Gives the slot the state of a new one (it is freed next, and claimed afresh). */
  reset(slot: number): void;
}

/** One thread's view of a table, with a cache of the keys it found. */
export class KeyedSlots {
  private readonly keys: Int32Array;
  private readonly names: Uint8Array;
  private readonly used: Int32Array;
  private readonly meta: Int32Array;
  private readonly n: number;
  private readonly cache = new Map<string, Cached>();
  /** The last claim found the lock taken throughout (not the table full). */
  private busy = false;

  constructor(memory: SharedMemory, readonly layout: KeyedSlotsLayout) {
    this.keys = memory.region(layout.keys);
    this.names = memory.region(layout.names);
    this.used = memory.region(layout.used);
    this.meta = memory.region(layout.meta);
    this.n = layout.spec.slots;
  }

  /** The slot of `key`, claimed if new; -1 when the table is full (or its lock stayed taken). */
  slot(key: string): number {
    const hit = this.cache.get(key);
    if (hit !== undefined && Atomics.load(this.keys, hit.slot) === hit.hash) {
      this.used[hit.slot] = this.meta[EPOCH];
      return hit.slot;
    }
    const h = keyHash(key);
    const name = encodeName(key);
    this.busy = false;
    let s = this.find(h, name);
    if (s < 0) s = this.claim(h, name);
    if (s >= 0) {
      this.used[s] = this.meta[EPOCH];
      // the cache is this thread's, bounded like the table
      if (this.cache.size >= this.n) this.cache.clear();
      this.cache.set(key, { slot: s, hash: h });
    }
    return s;
  }

  /**
   * slot(), waiting out a lock that another thread holds (it may have been descheduled in the
   * middle of a claim) for up to `maxMs`, 1 ms at a time: for a caller that keeps the answer, where
   * one busy moment must not leave it without a slot for good. It blocks the thread, so it is for
   * compiling a config, not for a request's path. -1 when the table is full, or still busy.
   */
  slotWaiting(key: string, maxMs = 1000): number {
    let s = this.slot(key);
    for (let waited = 0; s < 0 && this.busy && waited < maxMs; waited++) {
      Atomics.wait(NAP, 0, 0, 1);
      s = this.slot(key);
    }
    return s;
  }

  /** The slot of `key` if some thread claimed it, else -1 (claims nothing). */
  lookup(key: string): number {
    const hit = this.cache.get(key);
    if (hit !== undefined && Atomics.load(this.keys, hit.slot) === hit.hash) return hit.slot;
    return this.find(keyHash(key), encodeName(key));
  }

  /** Probes for a claimed slot of the key: its index, or -1 (an empty slot ends the probe). */
  private find(h: number, name: Uint8Array): number {
    const keys = this.keys;
    const n = this.n;
    let i = (h >>> 0) % n;
    for (let probe = 0; probe < n; probe++, i = i + 1 === n ? 0 : i + 1) {
      let k = Atomics.load(keys, i);
      for (let spin = 0; k === CLAIMING && spin < SPINS; spin++) k = Atomics.load(keys, i);
      if (k === EMPTY) return -1;
      if (k === h && this.sameName(i, name)) return i;
      // a claim or free not finished (its thread descheduled): probe on; a claim of this very key
      // is found by the claim's own probe, under the lock
    }
    return -1;
  }

  /** Claims a slot for the key under the lock (or finds the one another thread claimed meanwhile). */
  private claim(h: number, name: Uint8Array): number {
    if (!this.lock()) { this.busy = true; return -1; }
    try {
      const found = this.find(h, name);
      if (found >= 0) return found;
      const keys = this.keys;
      const n = this.n;
      let i = (h >>> 0) % n;
      for (let probe = 0; probe < n; probe++, i = i + 1 === n ? 0 : i + 1) {
        const k = Atomics.load(keys, i);
        if (k !== EMPTY && k !== FREED) continue;
        Atomics.store(keys, i, CLAIMING);
        this.names.fill(0, i * NAME_BYTES, (i + 1) * NAME_BYTES);
        this.names.set(name, i * NAME_BYTES);
        Atomics.store(keys, i, h);
        return i;
      }
      return -1;
    } finally {
      this.unlock();
    }
  }

  private lock(): boolean {
    for (let spin = 0; spin < SPINS; spin++) {
      if (Atomics.compareExchange(this.meta, LOCK, 0, 1) === 0) return true;
    }
    return false;
  }

  private unlock(): void {
    Atomics.store(this.meta, LOCK, 0);
  }

  /**
   * Main thread, now and then: starts a new epoch, and frees each slot that no thread has found
   * for `idleSweeps` epochs and that its owner calls idle. Returns how many it freed; 0 when
   * another thread held the lock (the next sweep tries again).
   */
  sweep(owner: SlotOwner, idleSweeps: number): number {
    const epoch = Atomics.add(this.meta, EPOCH, 1) + 1;
    if (!this.lock()) return 0;
    let freed = 0;
    try {
      const keys = this.keys;
      for (let i = 0; i < this.n; i++) {
        const k = Atomics.load(keys, i);
        if (k === EMPTY || k === CLAIMING || k === FREED) continue;
        if (epoch - this.used[i] < idleSweeps || !owner.idle(i)) continue;
        // readers that meet -1 probe on; a thread that found the slot just now sees the hash gone at its next use
        if (Atomics.compareExchange(keys, i, k, CLAIMING) !== k) continue;
        owner.reset(i);
        this.names.fill(0, i * NAME_BYTES, (i + 1) * NAME_BYTES);
        Atomics.store(keys, i, FREED);
        freed++;
      }
      // a freed slot followed by an empty one ends no probe that needs it: empty again, so misses stay short
      for (let i = this.n - 1, next = Atomics.load(keys, 0); i >= 0; i--) {
        const k = Atomics.load(keys, i);
        if (k === FREED && next === EMPTY) Atomics.store(keys, i, EMPTY);
        next = Atomics.load(keys, i);
      }
    } finally {
      this.unlock();
    }
    return freed;
  }

  private sameName(i: number, name: Uint8Array): boolean {
    const at = i * NAME_BYTES;
    for (let j = 0; j < name.length; j++) if (this.names[at + j] !== name[j]) return false;
    return true;
  }

  /** Every claimed slot and its key (as stored: truncated past NAME_BYTES - 1 bytes). */
  *entries(): Generator<[number, string]> {
    for (let i = 0; i < this.n; i++) {
      const k = Atomics.load(this.keys, i);
      if (k !== EMPTY && k !== CLAIMING && k !== FREED) yield [i, this.nameOf(i)];
    }
  }

  /** The key of a claimed slot, as stored. */
  nameOf(i: number): string {
    const at = i * NAME_BYTES;
    let end = at;
    while (end < at + NAME_BYTES && this.names[end] !== 0) end++;
    return dec.decode(this.names.slice(at, end));
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The key's bytes as stored, with the terminating NUL (compared as a whole, so a prefix never matches). */
function encodeName(key: string): Uint8Array {
  const b = enc.encode(key);
  const len = Math.min(b.length, NAME_BYTES - 1);
  const out = new Uint8Array(len + 1);
  out.set(b.subarray(0, len));
  return out;
}
