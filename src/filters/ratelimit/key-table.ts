/**
 * Per-key buckets: a rule with `key` owns a range of fixed-size slots in shared memory, one per
 * key it can hold (`maxKeys`). A key's 32-bit hash picks where it may live: WINDOW consecutive
 * slots from hash mod maxKeys (wrapping in the range). A slot is a tag (the hash; 0 = free) and a
 * GCRA word (gcra.ts).
 *
 *   range of rule r:  base ─▶ ┌─────┬─────┬─────┬─────┬─────┬─────┬─────┐
 *                     tags    │ h_a │  0  │ h_c │ h_b │ ... │     │     │   Int32
 *                     words   │ TAT │  0  │ TAT │ TAT │ ... │     │     │   BigInt64
 *                             └─────┴─────┴─────┴─────┴─────┴─────┴─────┘
 *                               key k looks at slots (h_k + 0 .. WINDOW−1) mod maxKeys
 *
 * A key not in its window takes a free slot of it, else the slot whose TAT is oldest: the key
 * that was used least recently (a TAT is at least its key's last admitted request, and a TAT in
 * the past is a full bucket, so evicting it forgets nothing). Two keys of the same hash share a
 * bucket (they are limited together, never less). Two threads claiming one slot for different
 * keys at once: one wins the tag, the other looks again.
 */
/** Slots a key may live in. */
export const WINDOW = 8;

/** FNV-1a over the key's UTF-16 code units; never 0 (0 marks a free slot). */
export function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h |= 0;
  return h === 0 ? 1 : h;
}

/** The slot of `key` in a range (claimed when it had none). */
export function slotOf(tags: Int32Array, words: BigInt64Array, base: number, size: number, key: string): number {
  const h = keyHash(key);
  const start = (h >>> 0) % size;
  const window = size < WINDOW ? size : WINDOW;
  for (let attempt = 0; attempt < 4; attempt++) {
    let victim = -1;
    let victimTag = 0;
    let victimTat = Infinity;
    for (let k = 0; k < window; k++) {
      let j = start + k;
      if (j >= size) j -= size;
      const i = base + j;
      const tag = Atomics.load(tags, i);
      if (tag === h) return i;
      if (victimTat === -1) continue;
      if (tag === 0) { victim = i; victimTag = 0; victimTat = -1; continue; }
      const tat = Number(Atomics.load(words, i));
      if (tat < victimTat) { victim = i; victimTag = tag; victimTat = tat; }
    }
    if (Atomics.compareExchange(tags, victim, victimTag, h) === victimTag) {
      Atomics.store(words, victim, 0n);
      return victim;
    }
  }
  // the window changed under us four times (heavy churn of new keys): share the first slot
  return base + start;
}
