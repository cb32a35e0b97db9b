/**
 * Endpoint lists that change on their own, without a new config: a registry (or the admin API)
 * replaces one cluster's list, and every worker uses it from its next request, with routes,
 * filters and connection pools left as they are.
 *
 *   main thread   EndpointDirectory.set(cluster, list | null) ──▶ mailbox (shared memory)
 *   workers       EndpointReader.poll() ──▶ the lists whose version changed
 *
 * The mailbox holds every list that replaces a config's, each packed on its own:
 *
 *   [u32 index length][index: msgpack [[cluster, version, offset, length], ...]][list][list]...
 *
 * A list is packed once, when it changes; a publish copies the packed lists into the mailbox
 * (one memcpy of the directory) behind a seqlock, like the config mailbox. A worker reads the
 * index and unpacks only the lists whose version it has not seen, so a change to one cluster
 * costs each worker that cluster's list, however many clusters there are. A worker started
 * later (a replaced one) reads the whole directory on its first request: nothing has to be
 * re-sent. Versions come from one counter, so a list set, cleared and set again is never
 * mistaken for the one before.
 *
 * Services found in a registry travel the same way, each as a cluster of its own named
 * `<kind>/<service>` (`dubbo/com.acme.Orders`, `spring/orders`; config cluster names cannot hold
 * a `/`), its list wrapped with what a worker needs to use it (DiscoveredList). Workers make
 * such clusters when they first see them, without a new config: routes are not compiled again.
 */
import { pack, unpack } from 'msgpackr';
import type { EndpointConfig } from '../config/config';
import { SluiceError } from '../errors';
import { declareRegion, type SharedMemory } from '../shared/shared-memory';

export const ENDPOINT_MAILBOX_BYTES = 32 << 20;
/** The mailbox's control words: [0] seq (odd while written), [1] length in bytes. */
export const ENDPOINT_CONTROL = declareRegion({ name: 'endpoints.control', kind: 'int32', count: 2 });
const MAILBOX = declareRegion({ name: 'endpoints.mailbox', kind: 'uint8', count: ENDPOINT_MAILBOX_BYTES });

/** The mailbox's arrays: the shared regions, or (tests) arrays of another size. */
export interface MailboxViews { control: Int32Array; bytes: Uint8Array }

function mailboxOf(m: SharedMemory | MailboxViews): MailboxViews {
  return 'region' in m ? { control: m.region(ENDPOINT_CONTROL), bytes: m.region(MAILBOX) } : m;
}

const SEQ = 0;
const LEN = 1;

/** A service a registry lists, as the main thread publishes it (src/main/discovery.ts). */
export interface DiscoveredList {
  readonly kind: 'dubbo' | 'spring';
  readonly service: string;
  /** `ready`: the registries answered (the list may be empty); `timeout`: none did within registry.firstListTimeoutMs. */
  readonly state: 'ready' | 'timeout';
  /** The word of the registry.touch region that requests of this service set (keeps it subscribed). */
  readonly touch: number;
  readonly endpoints: readonly EndpointConfig[];
}

/** What a directory entry holds: a list that replaces a config cluster's, or a discovered service. */
export type DirectoryValue = readonly EndpointConfig[] | DiscoveredList;

/** The cluster name of a discovered service. */
export function discoveredName(kind: 'dubbo' | 'spring', service: string): string {
  return `${kind}/${service}`;
}

/** Discovered clusters have a `/` in their name; config clusters cannot. */
export function isDiscoveredName(name: string): boolean {
  return name.includes('/');
}

export function isDiscoveredList(v: DirectoryValue): v is DiscoveredList {
  return !Array.isArray(v);
}

interface Entry { version: number; packed: Uint8Array; count: number }

/** The writer, on the main thread: the lists that replace the config's, by cluster. */
export class EndpointDirectory {
  private readonly entries = new Map<string, Entry>();
  private version = 0;
  private pending: NodeJS.Immediate | null = null;
  /** What a publish can take at most: the packed lists and a bound on the index. */
  private bound = 4 + 5;

  private readonly control: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(memory: SharedMemory | MailboxViews) {
    ({ control: this.control, bytes: this.bytes } = mailboxOf(memory));
  }

  /**
   * Replaces a cluster's endpoints (null: back to the config's list). Published at the end of
   * this turn of the event loop, so a registry that changes many lists at once publishes once;
   * `flush()` publishes now. Returns the list's version (0 when cleared).
   */
  set(cluster: string, endpoints: DirectoryValue | null): number {
    const old = this.entries.get(cluster);
    if (endpoints === null) {
      if (!old) return 0;
      this.entries.delete(cluster);
      this.bound -= entryBound(cluster, old.packed.length);
      this.schedule();
      return 0;
    }
    const packed = pack(endpoints);
    const bound = this.bound - (old ? entryBound(cluster, old.packed.length) : 0) + entryBound(cluster, packed.length);
    if (bound > this.bytes.length) {
      throw new SluiceError('ERR_ENDPOINTS_TOO_LARGE',
        `endpoint lists would take up to ${bound} bytes, more than the ${this.bytes.length} the mailbox has; "${cluster}" keeps its list`);
    }
    this.bound = bound;
    const version = ++this.version;
    this.entries.set(cluster, { version, packed, count: isDiscoveredList(endpoints) ? endpoints.endpoints.length : endpoints.length });
    this.schedule();
    return version;
  }

  /** The version and list of a cluster's entry, if one replaces the config's (or it is a discovered service). */
  get(cluster: string): { version: number; endpoints: EndpointConfig[] } | undefined {
    const e = this.entries.get(cluster);
    if (!e) return undefined;
    const v = unpack(e.packed) as DirectoryValue;
    return { version: e.version, endpoints: (isDiscoveredList(v) ? v.endpoints : v) as EndpointConfig[] };
  }

  /** Clusters whose list replaces the config's. */
  clusters(): string[] {
    return [...this.entries.keys()];
  }

  /** Drops the lists of clusters a new config no longer has (discovered services are not the config's to drop). */
  retain(names: ReadonlySet<string>): void {
    let changed = false;
    for (const [n, e] of [...this.entries]) {
      if (names.has(n) || isDiscoveredName(n)) continue;
      this.entries.delete(n);
      this.bound -= entryBound(n, e.packed.length);
      changed = true;
    }
    if (changed) this.schedule();
  }

  private schedule(): void {
    if (this.pending) return;
    this.pending = setImmediate(() => { this.pending = null; this.publish(); });
  }

  /** Publishes what is pending now; a worker's next request sees it. */
  flush(): void {
    if (!this.pending) return;
    clearImmediate(this.pending);
    this.pending = null;
    this.publish();
  }

  private publish(): void {
    const index: Array<[string, number, number, number]> = [];
    let offset = 0;
    for (const [name, e] of this.entries) {
      index.push([name, e.version, offset, e.packed.length]);
      offset += e.packed.length;
    }
    const head = pack(index);
    const total = 4 + head.length + offset; // within this.bound, checked by set()
    const seq = Atomics.add(this.control, SEQ, 1) + 1; // odd: writing
    new DataView(this.bytes.buffer, this.bytes.byteOffset, 4).setUint32(0, head.length);
    this.bytes.set(head, 4);
    let at = 4 + head.length;
    for (const e of this.entries.values()) { this.bytes.set(e.packed, at); at += e.packed.length; }
    Atomics.store(this.control, LEN, total);
    Atomics.store(this.control, SEQ, seq + 1); // even: stable
  }
}

/** The most one list takes in the mailbox: its bytes and its index entry (msgpack: name, three integers). */
function entryBound(name: string, packedLength: number): number {
  return packedLength + Buffer.byteLength(name) + 5 + 1 + 3 * 9;
}

/** What changed since the last poll: the lists now in force (null: back to the config's, or no longer discovered). */
export type EndpointChanges = Map<string, DirectoryValue | null>;

/** The reader, on each worker: the lists it has, and what changed since it last looked. */
export class EndpointReader {
  private seen = 0;
  private readonly lists = new Map<string, { version: number; endpoints: DirectoryValue }>();

  private readonly control: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(memory: SharedMemory | MailboxViews) {
    ({ control: this.control, bytes: this.bytes } = mailboxOf(memory));
  }

  /** The mailbox's sequence number: one atomic load, for the per-request check. */
  get seq(): number {
    return Atomics.load(this.control, SEQ);
  }

  /** The list that replaces a cluster's config list, if any. */
  endpoints(cluster: string): readonly EndpointConfig[] | undefined {
    const v = this.lists.get(cluster)?.endpoints;
    return v && !isDiscoveredList(v) ? v : undefined;
  }

  /** The discovered services read so far, by cluster name. */
  *discovered(): IterableIterator<[string, DiscoveredList]> {
    for (const [name, e] of this.lists) if (isDiscoveredList(e.endpoints)) yield [name, e.endpoints];
  }

  /** Reads the mailbox if it changed; returns the clusters whose list changed (empty when none). */
  poll(): EndpointChanges {
    for (;;) {
      const before = Atomics.load(this.control, SEQ);
      if (before === this.seen) return new Map();
      if (before & 1) continue;
      // copy the index and the lists not seen yet, then check nothing was written meanwhile
      const headLen = new DataView(this.bytes.buffer, this.bytes.byteOffset, 4).getUint32(0);
      const len = Atomics.load(this.control, LEN);
      if (4 + headLen > len) continue;
      let index: Array<[string, number, number, number]>;
      try {
        index = unpack(Buffer.from(this.bytes.subarray(4, 4 + headLen))) as Array<[string, number, number, number]>;
      } catch {
        continue; // torn by a concurrent write: read again
      }
      if (!Array.isArray(index)) continue;
      const base = 4 + headLen;
      const fresh: Array<[string, number, Buffer]> = [];
      for (const [name, version, offset, length] of index) {
        if (this.lists.get(name)?.version === version) continue;
        fresh.push([name, version, Buffer.from(this.bytes.subarray(base + offset, base + offset + length))]);
      }
      if (Atomics.load(this.control, SEQ) !== before) continue;
      this.seen = before;
      const changes: EndpointChanges = new Map();
      for (const [name, version, packed] of fresh) {
        const endpoints = unpack(packed) as DirectoryValue;
        this.lists.set(name, { version, endpoints });
        changes.set(name, endpoints);
      }
      const present = new Set(index.map((e) => e[0]));
      for (const name of [...this.lists.keys()]) {
        if (present.has(name)) continue;
        this.lists.delete(name);
        changes.set(name, null);
      }
      return changes;
    }
  }
}
