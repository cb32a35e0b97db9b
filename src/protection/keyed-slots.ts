/**
 * Slots in shared memory found by a string key, claimed by whichever thread needs one first.
 * Cluster limits and breakers keep their state in such slots: every worker that meets the same
 * key (a cluster, an endpoint of a cluster, an interface) finds the same slot, so the state is
 * the sidecar's, not a worker's. Keys come from the config and from requests (endpoints a
 * registry lists, interfaces callers name), so they cannot all be laid out up front.
 *
 *   keys   Int32 × N     0 empty │ -1 being claimed │ hash (never 0 or -1) once claimed
 *   names  Uint8 × N·K   the key's UTF-8 bytes, truncated to K-1, NUL-terminated: for the admin
 *                        view, and to tell apart two keys with the same hash
 *
 * Open addressing with linear probing. A claim is a compare-and-swap of 0 → -1, the name
 * written, then the hash stored; a reader that meets -1 waits a few spins for the hash (the claim
 * is a few stores) and, if it never comes (the claiming thread was descheduled), gets no slot this
 * time rather than claim a second slot for what may be the same key. Slots are never freed: the table is a bound
 * (when full, a new key gets no slot and its caller goes unprotected; the owner counts that).
 */
import { declareRegion, type Region, type SharedMemory } from '../shared/shared-memory';

export const NAME_BYTES = 128;
const CLAIMING = -1;
const SPINS = 1000;

export interface KeyedSlotsSpec {
  /** Region names are `<name>.keys` and `<name>.names`. */
  name: string;
  slots: number;
}

/** The regions of one table; declared at import by the module that owns the table. */
export class KeyedSlotsLayout {
  readonly keys: Region<'int32'>;
  readonly names: Region<'uint8'>;
  constructor(readonly spec: KeyedSlotsSpec) {
    this.keys = declareRegion({ name: `${spec.name}.keys`, kind: 'int32', count: spec.slots });
    this.names = declareRegion({ name: `${spec.name}.names`, kind: 'uint8', count: spec.slots * NAME_BYTES });
  }
}

/** FNV-1a over the UTF-16 code units, kept off 0 and -1 (empty and claiming). */
export function keyHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h |= 0;
  return h === 0 || h === CLAIMING ? 1 : h;
}

/** One thread's view of a table, with a cache of the keys it found. */
export class KeyedSlots {
  private readonly keys: Int32Array;
  private readonly names: Uint8Array;
  private readonly n: number;
  private readonly cache = new Map<string, number>();

  constructor(memory: SharedMemory, readonly layout: KeyedSlotsLayout) {
    this.keys = memory.region(layout.keys);
    this.names = memory.region(layout.names);
    this.n = layout.spec.slots;
  }

  /** The slot of `key`, claimed if new; -1 when the table is full. */
  slot(key: string): number {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit;
    const s = this.find(key, true);
    if (s >= 0) {
      // the cache is this thread's, bounded like the table
      if (this.cache.size >= this.n) this.cache.clear();
      this.cache.set(key, s);
    }
    return s;
  }

  /** The slot of `key` if some thread claimed it, else -1 (claims nothing). */
  lookup(key: string): number {
    return this.cache.get(key) ?? this.find(key, false);
  }

  private find(key: string, claim: boolean): number {
    const h = keyHash(key);
    const name = encodeName(key);
    const keys = this.keys;
    const n = this.n;
    let i = (h >>> 0) % n;
    for (let probe = 0; probe < n; probe++, i = i + 1 === n ? 0 : i + 1) {
      let k = Atomics.load(keys, i);
      if (k === 0) {
        if (!claim) return -1;
        if (Atomics.compareExchange(keys, i, 0, CLAIMING) === 0) {
          this.names.set(name, i * NAME_BYTES);
          Atomics.store(keys, i, h);
          return i;
        }
        k = Atomics.load(keys, i);
      }
      for (let spin = 0; k === CLAIMING && spin < SPINS; spin++) k = Atomics.load(keys, i);
      // a claim not finished yet (its thread descheduled): no slot this time, rather than a second one for the same key
      if (k === CLAIMING) return -1;
      if (k === h && this.sameName(i, name)) return i;
    }
    return -1;
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
      if (k !== 0 && k !== CLAIMING) yield [i, this.nameOf(i)];
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
