/**
 * Shared memory that modules claim. A module that keeps state shared by every thread declares
 * the region it needs when it is imported; nobody else lists it, and nobody computes an offset
 * by hand.
 *
 *   any module, at import             main thread, at start                 a worker, at start
 *   ─────────────────────             ─────────────────────                 ──────────────────
 *   declareRegion({ name,       ──▶   SharedMemory.create():          ──▶   SharedMemory.attach(workerData)
 *     kind, count, align })           every region declared so far,         region(r): r.name looked up in
 *   returns a Region handle           sorted by name, each at the next      the table it was given, never
 *                                     multiple of its alignment;            recomputed, so what this thread
 *                                     new SharedArrayBuffer(bytes);         imported, and in which order,
 *                                     workerData: { buffer, layout }        does not matter
 *
 *   layout table (plain data, cloned into workerData)
 *   ┌──────────────────────────────────────────────────────────────────────────────────────┐
 *   │ bytes: total size                                                                    │
 *   │ regions: [{ name, kind, count, align, offset }, ...]   sorted by name, no overlap    │
 *   └──────────────────────────────────────────────────────────────────────────────────────┘
 *
 * Rules that keep it loud rather than subtly wrong:
 * - The same name declared twice with different shapes: ERR_SHARED_REGION_CONFLICT, at import.
 * - A region declared after the main thread laid the memory out (a module imported too late
 *   to be in the table): ERR_SHARED_REGION_LATE, at import.
 * - A region asked for that the table lacks: ERR_SHARED_REGION_MISSING, naming what it has.
 * - A table entry whose kind or count differs from this thread's declaration (main and worker
 *   run different code): ERR_SHARED_REGION_MISMATCH.
 *
 * Every region starts on a 64-byte boundary (a cache line) unless it asks for more, so two
 * regions written by different threads never share a line.
 */
import { SluiceError } from '../errors';

const KINDS = {
  uint8: Uint8Array,
  int32: Int32Array,
  uint32: Uint32Array,
  float64: Float64Array,
  bigint64: BigInt64Array,
  biguint64: BigUint64Array,
} as const;

export type RegionKind = keyof typeof KINDS;
export type RegionArray<K extends RegionKind> = InstanceType<(typeof KINDS)[K]>;

/** What a module declares. */
export interface RegionSpec<K extends RegionKind = RegionKind> {
  /** Lower case words joined by `.` or `_`, e.g. `stats.counters`; unique in the process. */
  name: string;
  kind: K;
  /** Elements, not bytes. */
  count: number;
  /** Bytes; a power of two, at least the element size. Default: 64 (a cache line). */
  align?: number;
}

/** A declared region: pass it to SharedMemory.region() to get its typed array. */
export interface Region<K extends RegionKind = RegionKind> {
  readonly name: string;
  readonly kind: K;
  readonly count: number;
  readonly align: number;
}

export interface LayoutEntry {
  name: string;
  kind: RegionKind;
  count: number;
  align: number;
  offset: number;
}

/** Names → offsets, as the main thread laid them out. Plain data: it travels in workerData. */
export interface LayoutTable {
  bytes: number;
  regions: LayoutEntry[];
}

/** What a worker needs to attach: the buffer and the table that describes it. */
export interface SharedMemoryHandle {
  buffer: SharedArrayBuffer;
  layout: LayoutTable;
}

export const CACHE_LINE = 64;
/** A bound against typos in a count (the buffer is allocated in full, up front). */
export const MAX_SHARED_BYTES = 1 << 30;
const NAME = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function sameShape(a: Region, b: Region): boolean {
  return a.kind === b.kind && a.count === b.count && a.align === b.align;
}

function describe(r: Region): string {
  return `${r.kind} × ${r.count}, aligned to ${r.align}`;
}

/** The regions of one process (the module-level `regions`), or of a test. */
export class RegionRegistry {
  private readonly declared = new Map<string, Region>();
  private laidOut: LayoutTable | null = null;

  declare<K extends RegionKind>(spec: RegionSpec<K>): Region<K> {
    const { name, kind, count } = spec;
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw new SluiceError('ERR_SHARED_REGION_SPEC', `shared region name "${name}" must be lower case words joined by "." or "_"`);
    }
    const ctor = KINDS[kind];
    if (!ctor) throw new SluiceError('ERR_SHARED_REGION_SPEC', `shared region "${name}": unknown kind "${kind}" (one of ${Object.keys(KINDS).join(', ')})`);
    if (!Number.isSafeInteger(count) || count < 1) {
      throw new SluiceError('ERR_SHARED_REGION_SPEC', `shared region "${name}": count must be a positive integer, not ${count}`);
    }
    const align = spec.align ?? Math.max(CACHE_LINE, ctor.BYTES_PER_ELEMENT);
    if (!Number.isSafeInteger(align) || align < ctor.BYTES_PER_ELEMENT || (align & (align - 1)) !== 0) {
      throw new SluiceError('ERR_SHARED_REGION_SPEC', `shared region "${name}": align must be a power of two of at least ${ctor.BYTES_PER_ELEMENT} bytes, not ${align}`);
    }
    if (count * ctor.BYTES_PER_ELEMENT > MAX_SHARED_BYTES) {
      throw new SluiceError('ERR_SHARED_REGION_SPEC', `shared region "${name}": ${count * ctor.BYTES_PER_ELEMENT} bytes is more than ${MAX_SHARED_BYTES}`);
    }
    const region: Region<K> = Object.freeze({ name, kind, count, align });
    const before = this.declared.get(name);
    if (before) {
      if (!sameShape(before, region)) {
        throw new SluiceError('ERR_SHARED_REGION_CONFLICT', `shared region "${name}" is declared twice: ${describe(before)}, and ${describe(region)}`);
      }
      return before as Region<K>;
    }
    if (this.laidOut) {
      throw new SluiceError('ERR_SHARED_REGION_LATE',
        `shared region "${name}" was declared after the shared memory was laid out: the module that declares it must be imported by the main thread before Sluice starts`);
    }
    this.declared.set(name, region);
    return region;
  }

  /** The region declared under this name in this thread, if any. */
  get(name: string): Region | undefined {
    return this.declared.get(name);
  }

  /**
   * Lay out every region declared so far: by name, each at the next multiple of its alignment.
   * The same declarations give the same table whatever order they were made in. After this, a
   * new declaration is an error (it could never be in the table workers get).
   */
  layout(): LayoutTable {
    const table = layoutOf([...this.declared.values()]);
    this.laidOut = table;
    return table;
  }
}

/** The table for a set of regions; pure, so tests can check it directly. */
export function layoutOf(list: readonly Region[]): LayoutTable {
  const sorted = [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const regions: LayoutEntry[] = [];
  let at = 0;
  for (const r of sorted) {
    if (regions.length && regions[regions.length - 1].name === r.name) {
      throw new SluiceError('ERR_SHARED_REGION_CONFLICT', `shared region "${r.name}" appears twice`);
    }
    const offset = alignUp(at, r.align);
    regions.push({ name: r.name, kind: r.kind, count: r.count, align: r.align, offset });
    at = offset + r.count * KINDS[r.kind].BYTES_PER_ELEMENT;
  }
  const bytes = alignUp(Math.max(at, CACHE_LINE), CACHE_LINE);
  if (bytes > MAX_SHARED_BYTES) throw new SluiceError('ERR_SHARED_TOO_LARGE', `shared regions need ${bytes} bytes, more than ${MAX_SHARED_BYTES}`);
  return { bytes, regions };
}

/** The process's regions: what `declareRegion` adds to and what the main thread lays out. */
export const regions = new RegionRegistry();

/** Called at module level: the region this module keeps in shared memory. */
export function declareRegion<K extends RegionKind>(spec: RegionSpec<K>): Region<K> {
  return regions.declare(spec);
}

/** One thread's view of the shared buffer: typed arrays by region name. */
export class SharedMemory {
  private readonly entries: Map<string, LayoutEntry>;
  private readonly views = new Map<string, RegionArray<RegionKind>>();

  private constructor(readonly buffer: SharedArrayBuffer, readonly layout: LayoutTable) {
    this.entries = new Map(layout.regions.map((e) => [e.name, e]));
  }

  /** Main thread: lay out every region declared so far and allocate the buffer. */
  static create(registry: RegionRegistry = regions): SharedMemory {
    const layout = registry.layout();
    return new SharedMemory(new SharedArrayBuffer(layout.bytes), layout);
  }

  /** Any thread: the buffer and table another thread created; the table is checked, not trusted blindly. */
  static attach(handle: SharedMemoryHandle): SharedMemory {
    const { buffer, layout } = handle ?? ({} as SharedMemoryHandle);
    if (!(buffer instanceof SharedArrayBuffer) || !layout || !Array.isArray(layout.regions)) {
      throw new SluiceError('ERR_SHARED_LAYOUT', 'shared memory handle needs { buffer: SharedArrayBuffer, layout: LayoutTable }');
    }
    if (buffer.byteLength !== layout.bytes) {
      throw new SluiceError('ERR_SHARED_LAYOUT', `shared memory is ${buffer.byteLength} bytes but its layout says ${layout.bytes}`);
    }
    let end = 0;
    for (const e of layout.regions) {
      const ctor = KINDS[e.kind];
      if (!ctor || e.offset < end || e.offset % ctor.BYTES_PER_ELEMENT !== 0 || e.offset % e.align !== 0) {
        throw new SluiceError('ERR_SHARED_LAYOUT', `shared region "${e.name}" is misplaced in the layout table (offset ${e.offset})`);
      }
      end = e.offset + e.count * ctor.BYTES_PER_ELEMENT;
      if (end > layout.bytes) throw new SluiceError('ERR_SHARED_LAYOUT', `shared region "${e.name}" ends past the buffer`);
    }
    return new SharedMemory(buffer, layout);
  }

  /** What a worker is given, in workerData. */
  get handle(): SharedMemoryHandle {
    return { buffer: this.buffer, layout: this.layout };
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The region's typed array, found by name in the table. Missing or differently shaped: a loud error. */
  region<K extends RegionKind>(r: Region<K>): RegionArray<K> {
    const cached = this.views.get(r.name);
    if (cached) return cached as RegionArray<K>;
    const e = this.entries.get(r.name);
    if (!e) {
      throw new SluiceError('ERR_SHARED_REGION_MISSING',
        `shared memory has no region "${r.name}" (it has: ${[...this.entries.keys()].join(', ') || 'none'}); ` +
        'the module that declares it must be imported by the main thread before Sluice starts');
    }
    if (e.kind !== r.kind || e.count !== r.count) {
      throw new SluiceError('ERR_SHARED_REGION_MISMATCH',
        `shared region "${r.name}" is ${e.kind} × ${e.count} in the layout table but ${r.kind} × ${r.count} here: main thread and worker run different code`);
    }
    const Ctor = KINDS[e.kind] as unknown as new (b: SharedArrayBuffer, offset: number, length: number) => RegionArray<K>;
    const view = new Ctor(this.buffer, e.offset, e.count);
    this.views.set(r.name, view);
    return view;
  }
}
