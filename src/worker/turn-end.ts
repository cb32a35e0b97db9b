/**
 * Work put off to the end of this turn of the worker's event loop: one setImmediate for all of it,
 * run after every socket that was readable in this turn has been read.
 *
 *   poll: socket A readable ─▶ reply (held) ─┐
 *         socket B readable ─▶ reply (held) ─┼─▶ check (setImmediate): write A, write B, …
 *         socket C readable ─▶ reply (held) ─┘
 *
 * A reply written at once wakes its reader, and on a busy machine the reader takes the CPU from
 * the worker at every write (the scheduler's wake-up preemption): one context switch per reply.
 * Replies written back to back at the end of the turn wake each reader once and let the worker
 * finish its turn first. What a connection holds is in its HeldWrites (held-writes.ts).
 */
import { log } from '../log';

export interface TurnEnd {
  /** Runs once, at the end of the turn in which it was queued. Must not throw (a throw is logged). */
  atTurnEnd(): void;
}

let queued: TurnEnd[] = [];
let spare: TurnEnd[] = [];
let scheduled = false;

function schedule(): void {
  if (!scheduled) {
    scheduled = true;
    setImmediate(runTurnEnd);
  }
}

function runTurnEnd(): void {
  scheduled = false;
  const list = queued;
  queued = spare;
  for (let i = 0; i < list.length; i++) {
    try {
      list[i].atTurnEnd();
    } catch (err) {
      // a bug of ours: the others of the turn still run, and the worker lives
      log.error({ err, where: 'turn end' }, 'internal error on a connection');
    }
  }
  list.length = 0;
  spare = list;
}

/** Queues `t` for the end of this turn; the caller queues it at most once per turn. */
export function atTurnEnd(t: TurnEnd): void {
  schedule();
  queued.push(t);
}
