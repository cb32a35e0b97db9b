/**
 * Deadlines of one duration, for every connection of a thread, on one timer. A connection that
 * must do something within `ms` (say its first bytes) is put at the tail of the list for that
 * duration; as every entry has the same duration, the list stays in the order its entries fall
 * due, and one Node timer, armed for the head, serves all of them:
 *
 *   add ─▶ tail (due = now + ms)          timer fires ─▶ every entry due from the head: onDue()
 *   cancel ─▶ unlinked (O(1))                          ─▶ re-armed for the new head, if any
 *
 * Most entries are cancelled before they are due (the first bytes of a connection come within a
 * millisecond), so a connection costs two pointer updates here, not a Timeout object, a
 * timer-list insertion and a clearTimeout. The timer fires about once per `ms` under steady
 * load; an entry is never served early, and at most about a millisecond late.
 *
 * Entries are the callers' own objects (no wrapper allocated): whatever implements `Deadline`.
 * A cancelled entry keeps no reference into the list, and the list none to it.
 */
import { log } from '../log';

export interface Deadline {
  /** performance.now() when due; NaN when not in a list. */
  dueAt: number;
  prevDue: Deadline | null;
  nextDue: Deadline | null;
  dueList: DeadlineList | null;
  onDue(): void;
}

export class DeadlineList {
  private head: Deadline | null = null;
  private tail: Deadline | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly ms: number) {}

  add(d: Deadline): void {
    if (d.dueList !== null) d.dueList.cancel(d);
    d.dueAt = performance.now() + this.ms;
    d.dueList = this;
    d.nextDue = null;
    d.prevDue = this.tail;
    if (this.tail === null) this.head = d;
    else this.tail.nextDue = d;
    this.tail = d;
    if (this.timer === null) this.arm(d.dueAt);
  }

  cancel(d: Deadline): void {
    if (d.dueList !== this) return;
    const p = d.prevDue;
    const n = d.nextDue;
    if (p === null) this.head = n; else p.nextDue = n;
    if (n === null) this.tail = p; else n.prevDue = p;
    d.prevDue = d.nextDue = d.dueList = null;
    d.dueAt = NaN;
    // the timer stays armed: it finds the list empty, or a later head, and re-arms for that
  }

  get size(): number {
    let n = 0;
    for (let d = this.head; d !== null; d = d.nextDue) n++;
    return n;
  }

  private arm(at: number): void {
    // ceil: Node fires a timer at its whole milliseconds, never before them
    this.timer = setTimeout(fire, Math.max(1, Math.ceil(at - performance.now())), this);
    this.timer.unref();
  }

  /** @internal the timer's callback */
  fire(): void {
    this.timer = null;
    const now = performance.now();
    let d: Deadline | null;
    while ((d = this.head) !== null && d.dueAt <= now) {
      this.cancel(d);
      try {
        d.onDue();
      } catch (err) {
        // a bug of ours in one connection's handler: the others' deadlines still come
        log.error({ err }, 'deadline handler failed');
      }
    }
    if (this.head !== null) this.arm(this.head.dueAt);
  }
}

function fire(list: DeadlineList): void {
  list.fire();
}

/** This thread's deadline lists, by duration. */
const lists = new Map<number, DeadlineList>();

export function deadlineList(ms: number): DeadlineList {
  let l = lists.get(ms);
  if (l === undefined) {
    l = new DeadlineList(ms);
    lists.set(ms, l);
  }
  return l;
}
