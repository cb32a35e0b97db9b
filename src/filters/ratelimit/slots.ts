/**
 * The shared memory of rate limits, and who owns which part of it. The main thread gives each
 * rule of a config its slots when it publishes the config (RateLimitSlots.publish): a rule the
 * reload left unchanged (same name, match, rate, burst, key and maxKeys; its mode may change)
 * keeps its slots, so its bucket state survives the reload. A new rule gets slots reset to full.
 *
 *   ratelimit.buckets   (BigInt64 × MAX_RULES × STRIDE)  rule r's GCRA word at r × STRIDE: one
 *                                                        cache line each, so workers taking tokens
 *                                                        of different rules never share a line
 *   ratelimit.key_tags  (Int32 × KEY_SLOTS)              per-key tables (key-table.ts): a rule with
 *   ratelimit.key_words (BigInt64 × KEY_SLOTS)           `key` owns maxKeys consecutive slots
 *
 * Slots freed by a reload are reused last (a worker may still finish a request under the old
 * config for a moment; it then touches a slot nobody else uses yet).
 */
import { log } from '../../log';
import { declareRegion, type SharedMemory } from '../../shared/shared-memory';

export const MAX_RULES = 256;
/** BigInt64 words per cache line. */
export const STRIDE = 8;
/** Per-key slots for all rules together (the sum of their maxKeys). */
export const KEY_SLOTS = 1 << 17;

export const BUCKETS = declareRegion({ name: 'ratelimit.buckets', kind: 'bigint64', count: MAX_RULES * STRIDE });
export const KEY_TAGS = declareRegion({ name: 'ratelimit.key_tags', kind: 'int32', count: KEY_SLOTS });
export const KEY_WORDS = declareRegion({ name: 'ratelimit.key_words', kind: 'bigint64', count: KEY_SLOTS });

/** Where one rule's state lives, as published with the config (plain data). */
export interface RuleSlots {
  /** Index of its word in ratelimit.buckets. */
  readonly word: number;
  /** With a key: its first slot in the key tables, and how many (maxKeys); else -1 and 0. */
  readonly keyBase: number;
  readonly keySize: number;
}

/** A rule's identity for keeping state: everything that decides its buckets, not its mode. */
export function ruleIdentity(rule: Readonly<Record<string, unknown>>): string {
  const { mode: _mode, ...rest } = rule;
  return stableJson(rest);
}

export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

interface Range { base: number; size: number }

/** Main thread: the slots of every rule of the config in force. */
export class RateLimitSlots {
  private held = new Map<string, RuleSlots>();
  /** Bucket words never used first, then freed ones in the order they were freed. */
  private readonly freeWords: number[] = Array.from({ length: MAX_RULES }, (_, i) => i * STRIDE);
  /** Free ranges of the key tables, by base. */
  private freeKeys: Range[] = [{ base: 0, size: KEY_SLOTS }];
  private readonly buckets: BigInt64Array;
  private readonly tags: Int32Array;
  private readonly keyWords: BigInt64Array;

  constructor(memory: SharedMemory) {
    this.buckets = memory.region(BUCKETS);
    this.tags = memory.region(KEY_TAGS);
    this.keyWords = memory.region(KEY_WORDS);
  }

  /**
   * The slots of these rules (validated: at most MAX_RULES, maxKeys summing to at most
   * KEY_SLOTS), in their order. Rules that are gone free theirs.
   */
  publish(rules: ReadonlyArray<Readonly<Record<string, unknown>>>, maxKeysOf: (r: Readonly<Record<string, unknown>>) => number): RuleSlots[] {
    const ids = rules.map(ruleIdentity);
    const next = new Map<string, RuleSlots>();
    ids.forEach((id) => { const s = this.held.get(id); if (s) next.set(id, s); });
    for (const [id, s] of this.held) if (!next.has(id)) this.free(s);
    const fresh: Array<[string, number]> = [];
    ids.forEach((id, i) => { if (!next.has(id)) fresh.push([id, maxKeysOf(rules[i])]); });
    for (const [id, keys] of fresh) {
      const word = this.freeWords.shift()!;
      Atomics.store(this.buckets, word, 0n);
      let keyBase = -1;
      if (keys > 0) {
        keyBase = this.takeKeys(keys);
        if (keyBase < 0) {
          // the free space is in pieces: lay every key table out again (their keys start afresh)
          log.warn('rate limit key tables are fragmented: every per-key rule starts with empty tables');
          for (const [oid, s] of [...next]) {
            if (s.keySize === 0) continue;
            next.set(oid, { ...s, keyBase: -2 });
          }
          this.freeKeys = [{ base: 0, size: KEY_SLOTS }];
          for (const [oid, s] of [...next]) if (s.keyBase === -2) next.set(oid, { ...s, keyBase: this.takeKeys(s.keySize) });
          keyBase = this.takeKeys(keys);
        }
      }
      next.set(id, { word, keyBase, keySize: keys > 0 ? keys : 0 });
    }
    this.held = next;
    return ids.map((id) => next.get(id)!);
  }

  private free(s: RuleSlots): void {
    this.freeWords.push(s.word);
    if (s.keySize === 0) return;
    this.freeKeys.push({ base: s.keyBase, size: s.keySize });
    this.freeKeys.sort((a, b) => a.base - b.base);
    const merged: Range[] = [];
    for (const r of this.freeKeys) {
      const last = merged[merged.length - 1];
      if (last && last.base + last.size === r.base) last.size += r.size;
      else merged.push({ ...r });
    }
    this.freeKeys = merged;
  }

  /** First fit; the range is emptied. -1 when no free range is large enough. */
  private takeKeys(size: number): number {
    const i = this.freeKeys.findIndex((r) => r.size >= size);
    if (i < 0) return -1;
    const r = this.freeKeys[i];
    const base = r.base;
    if (r.size === size) this.freeKeys.splice(i, 1);
    else { r.base += size; r.size -= size; }
    this.tags.fill(0, base, base + size);
    this.keyWords.fill(0n, base, base + size);
    return base;
  }
}
