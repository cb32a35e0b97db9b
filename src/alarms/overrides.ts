/**
 * How an alarm's action reaches the data path of every worker: one word per target in shared
 * memory, written by the main thread (alarm-loop.ts), read with one Atomics.load by the code that
 * enforces it.
 *
 *   alarms.overrides   Int32 × MAX_TARGETS
 *     a route's word      1: degraded (the exchange refuses its requests as `degraded`: its fallback answers)
 *     a cluster's word    1: forced open (its requests are refused as `circuit_open`)
 *     a rate limit's word the factor its rate is multiplied by, in millionths; 0: none
 *
 * Which word is whose: the main thread gives a word to every target some alarm's action names
 * (`route\tname`, `cluster\tname`, `rateLimit\tname`) and publishes the table with the config
 * (filterData.alarms). A target keeps its word across reloads while an alarm names it; a target
 * no alarm names has none, and costs its requests nothing. Words freed by a reload are reused
 * last (a worker may still finish a request under the old config for a moment).
 */
import { declareRegion, type SharedMemory } from '../shared/shared-memory';

export const MAX_TARGETS = 1024;
export const OVERRIDES = declareRegion({ name: 'alarms.overrides', kind: 'int32', count: MAX_TARGETS });
export const FACTOR_UNIT = 1_000_000;

/** What the workers get with the config: target key → word. */
export interface OverrideTable { readonly words: Readonly<Record<string, number>> }

/** Main thread: the words of the targets of a config's alarms. */
export class OverrideSlots {
  private held = new Map<string, number>();
  private readonly free: number[] = Array.from({ length: MAX_TARGETS }, (_, i) => i);
  readonly view: Int32Array;

  constructor(memory: SharedMemory) {
    this.view = memory.region(OVERRIDES);
  }

  publish(targets: Iterable<string>): OverrideTable {
    const want = new Set(targets);
    const next = new Map<string, number>();
    for (const [k, w] of this.held) {
      if (want.has(k)) next.set(k, w);
      else { Atomics.store(this.view, w, 0); this.free.push(w); }
    }
    for (const k of want) {
      if (next.has(k)) continue;
      const w = this.free.shift();
      if (w === undefined) break; // bounded by validation (MAX_ALARMS < MAX_TARGETS)
      Atomics.store(this.view, w, 0);
      next.set(k, w);
    }
    this.held = next;
    return { words: Object.fromEntries(next) };
  }

  wordOf(key: string): number {
    return this.held.get(key) ?? -1;
  }
}

/** A worker's lookups in the table published with its config. */
export interface Overrides {
  readonly view: Int32Array;
  /** The word of `kind\tname`, or -1 (no alarm acts on it). */
  wordOf(kind: 'route' | 'cluster' | 'rateLimit', name: string): number;
}

const NONE: Overrides = { view: new Int32Array(1), wordOf: () => -1 };
const current = new WeakMap<SharedArrayBuffer, Overrides>();

/** A worker took a config: its table, for the code that compiles routes, clusters and limits. */
export function attachOverrides(memory: SharedMemory | undefined, data: unknown): Overrides {
  if (!memory || !memory.has(OVERRIDES.name)) return NONE;
  const words = (data as OverrideTable | undefined)?.words ?? {};
  const o: Overrides = { view: memory.region(OVERRIDES), wordOf: (kind, name) => words[`${kind}\t${name}`] ?? -1 };
  current.set(memory.buffer, o);
  return o;
}

/** The table of the config this thread last took, for code made outside it (a cluster a registry found). */
export function overridesOf(memory: SharedMemory): Overrides {
  return current.get(memory.buffer) ?? NONE;
}
