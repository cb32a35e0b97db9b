/**
 * Deadlines that cost no timer object each: every request has a route timeout, and almost none
 * fires. A Node Timeout per request is an object with async-hook bookkeeping, put in and taken out
 * of a timer list; here a request links itself (no allocation) into the list of its duration, and
 * one Node timer per duration waits for the earliest deadline of that list.
 *
 *   lists by duration:  15000 ─▶ [x1 at t+15000] ⇄ [x2 at t'+15000] ⇄ …   one setTimeout for the head
 *                        2000 ─▶ [x7 at u+2000] ⇄ …                       another for its head
 *
 * Entries of one list share a duration, so appending keeps the list in deadline order; taking one
 * out is unlinking. The timer of a list is armed when an entry joins an unarmed list, and left
 * running when entries leave: when it fires it ends the entries that are due, and is armed again
 * for the new head (or not, if the list is empty). A deadline fires no earlier than a setTimeout
 * of the same duration would, and at most 1 ms later. Like a request's own Timeout did, the timer
 * keeps the thread alive only while the list holds a request (unref'd when it empties).
 */
import { performance } from 'node:perf_hooks';

/** What can be put in a list: an object that carries its own links (see Exchange). */
export interface Timed {
  dlPrev: Timed | null;
  dlNext: Timed | null;
  /** performance.now() at which it is due; meaningful while dlList is set. */
  dlAt: number;
  dlList: DeadlineList | null;
  /** Called once when due, after it left the list. */
  onDeadline(): void;
}

export class DeadlineList {
  private head: Timed | null = null;
  private tail: Timed | null = null;
  private timer: NodeJS.Timeout | null = null;
  private refed = false;
  private readonly fire = (): void => this.expire();

  constructor(readonly ms: number) {}

  add(t: Timed, now: number): void {
    t.dlAt = now + this.ms;
    t.dlList = this;
    t.dlNext = null;
    t.dlPrev = this.tail;
    if (this.tail) this.tail.dlNext = t; else this.head = t;
    this.tail = t;
    if (this.timer === null) { this.timer = setTimeout(this.fire, this.ms); this.refed = true; }
    else if (!this.refed) { this.timer.ref(); this.refed = true; }
  }

  remove(t: Timed): void {
    if (t.dlList !== this) return;
    const { dlPrev: p, dlNext: n } = t;
    if (p) p.dlNext = n; else this.head = n;
    if (n) n.dlPrev = p; else this.tail = p;
    t.dlPrev = t.dlNext = null;
    t.dlList = null;
    if (this.head === null && this.refed) { this.timer?.unref(); this.refed = false; }
  }

  /** Entries in the list (tests). */
  get size(): number {
    let n = 0;
    for (let t = this.head; t; t = t.dlNext) n++;
    return n;
  }

  private expire(): void {
    this.timer = null;
    this.refed = false;
    const now = performance.now();
    let t = this.head;
    // a deadline set after this timer was armed is later than the timer: stop at the first not due
    while (t !== null && t.dlAt <= now) {
      this.remove(t);
      t.onDeadline();
      t = this.head;
    }
    // onDeadline may have armed the timer again (an entry added to this list meanwhile)
    if (this.head !== null && this.timer === null) {
      this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(this.head.dlAt - now)));
      this.refed = true;
    }
  }
}

/** This thread's lists, one per duration (routes have few distinct timeouts). */
const lists = new Map<number, DeadlineList>();

/** Put `t` in the list of `ms`, due `ms` after `now` (performance.now(), read by the caller; it must not be in a list already). */
export function addDeadline(t: Timed, ms: number, now: number): void {
  let l = lists.get(ms);
  if (l === undefined) lists.set(ms, (l = new DeadlineList(ms)));
  l.add(t, now);
}

/** Take `t` out of its list, if it is in one. */
export function clearDeadline(t: Timed): void {
  t.dlList?.remove(t);
}
