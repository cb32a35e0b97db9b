/**
 * Who owns a handed-off descriptor: one slot per fd number in shared memory, taken with
 * compare-and-swap by whichever side gets there first.
 *
 *   slot[fd] =  token   the main thread offered it and still holds it
 *              -token   a worker claimed it (and closes it)
 *               0       free
 *
 * Closing by fd number without this check could close a new, unrelated connection that reused
 * the number after the one we meant was closed by its owner.
 */
import { declareRegion, type SharedMemory } from './shared-memory';

/** Descriptors beyond this cannot be handed off (the process's limit is raised at most to it). */
export const MAX_FD = 1 << 20;

const FD_OWNER = declareRegion({ name: 'fd.owner', kind: 'int32', count: MAX_FD });

export class FdOwnership {
  private readonly slots: Int32Array;

  constructor(memory: SharedMemory) {
    this.slots = memory.region(FD_OWNER);
  }

  /** Main thread, right after accept: the number is not open anywhere else, so a plain store is safe. */
  offer(fd: number, token: number): boolean {
    if (fd < 0 || fd >= MAX_FD) return false;
    Atomics.store(this.slots, fd, token);
    return true;
  }

  /** Worker: take the fd if main still offers it under this token. */
  claim(fd: number, token: number): boolean {
    return Atomics.compareExchange(this.slots, fd, token, -token) === token;
  }

  /** Main thread: take the fd back if no worker claimed it. True means main holds it again (and must close or re-offer it). */
  reclaim(fd: number, token: number): boolean {
    return Atomics.compareExchange(this.slots, fd, token, 0) === token;
  }

  /** Worker, just before it closes a claimed fd. */
  release(fd: number, token: number): void {
    Atomics.compareExchange(this.slots, fd, -token, 0);
  }

  /** The slot's value (tests, diagnostics). */
  peek(fd: number): number {
    return Atomics.load(this.slots, fd);
  }
}
