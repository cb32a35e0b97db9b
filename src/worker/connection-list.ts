/**
 * The worker's open downstream connections (for the drain and for retirement), as a list whose
 * links are fields of the connections themselves: adding and removing one allocates nothing and
 * leaves no reference to it anywhere once it is out.
 *
 *   head ─▶ [c1] ⇄ [c2] ⇄ [c3] ◀─ tail        remove(c2): c1 ⇄ c3, c2's links cleared
 *
 * Why not a Set: a Set's hash table keeps its entries until it is rebuilt, and with a connection
 * per request it is rebuilt every few dozen connections. A table that has lived long enough to
 * be in V8's old generation is rebuilt in the old generation too, and the table it replaces keeps
 * pointing at the connections that were open then until the next full collection. Every young
 * collection treats those pointers as roots, so those connections' sockets, sessions and
 * decoders were copied twice and promoted after they had closed (about 1.6 KB per connection,
 * and a full collection about once a second under that load: docs/benchmarks.md, "A new
 * connection per request: what outlived its connection"). Unlinked, a closed connection is
 * referenced by nothing and dies young.
 */

/** What a list holds: an object that carries its own links (as the deadline lists' entries do). */
export interface Listed {
  connPrev: Listed | null;
  connNext: Listed | null;
  /** The list it is in, or null. */
  connList: ConnectionList<Listed> | null;
}

export class ConnectionList<T extends Listed> implements Iterable<T> {
  private head: T | null = null;
  private tail: T | null = null;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Puts `c` at the end (moved here if it was in another list; nothing if it is in this one). */
  add(c: T): void {
    if (c.connList === (this as ConnectionList<Listed>)) return;
    c.connList?.delete(c);
    c.connList = this as ConnectionList<Listed>;
    c.connNext = null;
    c.connPrev = this.tail;
    if (this.tail !== null) this.tail.connNext = c; else this.head = c;
    this.tail = c;
    this.count++;
  }

  /** Takes `c` out and clears its links; false if it was not in this list. */
  delete(c: T): boolean {
    if (c.connList !== (this as ConnectionList<Listed>)) return false;
    const p = c.connPrev as T | null;
    const n = c.connNext as T | null;
    if (p !== null) p.connNext = n; else this.head = n;
    if (n !== null) n.connPrev = p; else this.tail = p;
    c.connPrev = c.connNext = null;
    c.connList = null;
    this.count--;
    return true;
  }

  has(c: T): boolean {
    return c.connList === (this as ConnectionList<Listed>);
  }

  /**
   * In the order they were added. The one being visited may take itself out (as closing does);
   * connections added meanwhile are visited too. Callers that close others while iterating take a
   * copy first (`[...list]`).
   */
  *[Symbol.iterator](): Iterator<T> {
    let c = this.head;
    while (c !== null) {
      const next = c.connNext as T | null;
      yield c;
      // still in: its next as it is now (one added meanwhile); taken out: the next it had
      c = c.connList === (this as ConnectionList<Listed>) ? (c.connNext as T | null) : next;
    }
  }
}
