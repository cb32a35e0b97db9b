/**
 * Work put off to the end of this turn of the worker's event loop: one setImmediate for all of it,
 * run after every socket that was readable in this turn has been read.
 *
 *   poll: socket A readable ─▶ reply (corked) ─┐
 *         socket B readable ─▶ reply (corked) ─┼─▶ check (setImmediate): uncork A, uncork B, …
 *         socket C readable ─▶ reply (corked) ─┘
 *
 * A reply written at once wakes its reader, and on a busy machine the reader takes the CPU from
 * the worker at every write (the scheduler's wake-up preemption): one context switch per reply.
 * Replies written back to back at the end of the turn wake each reader once and let the worker
 * finish its turn first.
 */
import { log } from '../log';

export interface TurnEnd {
  /** Runs once, at the end of the turn in which it was queued. Must not throw (a throw is logged). */
  atTurnEnd(): void;
}

let queued: TurnEnd[] = [];
let spare: TurnEnd[] = [];
let scheduled = false;

/** Sockets corked until the end of this turn (see `corkUntilTurnEnd`). */
const kCorkedForTurn = Symbol('sluice.corkedForTurn');
type Corkable = { cork(): void; uncork(): void; destroyed: boolean; writableEnded: boolean; [kCorkedForTurn]?: boolean };
let corked: Corkable[] = [];
let spareCorked: Corkable[] = [];

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
  // after the held replies, which may have gone into a corked socket
  const socks = corked;
  corked = spareCorked;
  for (let i = 0; i < socks.length; i++) {
    const s = socks[i];
    try {
      flushTurnCork(s); // a no-op if flushed already, or listed twice
    } catch (err) {
      log.error({ err, where: 'turn end' }, 'internal error on a connection');
    }
  }
  socks.length = 0;
  spareCorked = socks;
}

/** Queues `t` for the end of this turn; the caller queues it at most once per turn. */
export function atTurnEnd(t: TurnEnd): void {
  schedule();
  queued.push(t);
}

/**
 * Holds what is written to `s` from now until the end of this turn, then writes it in one go
 * (one writev): a proxied response or request goes out after every socket readable in this turn
 * was read, as local replies do, rather than waking its reader in the middle of the turn.
 * Writing, ending or destroying the socket meanwhile keeps the order: end() flushes what is
 * held first, destroy() drops it as it would drop any unsent bytes.
 */
export function corkUntilTurnEnd(s: Corkable): void {
  if (s[kCorkedForTurn] === true) return;
  s[kCorkedForTurn] = true;
  s.cork();
  schedule();
  corked.push(s);
}

/**
 * Sends now what `s` holds for the end of this turn (corkUntilTurnEnd), so that what follows can
 * be written at once after it: a large body chunk goes out as it is read, not held. No-op when
 * the socket is not corked for the turn.
 */
export function flushTurnCork(s: Corkable): void {
  if (s[kCorkedForTurn] !== true) return;
  s[kCorkedForTurn] = false;
  // a socket ended meanwhile was flushed by end(); a destroyed one has nobody to write to
  if (s.destroyed || s.writableEnded) return;
  s.uncork();
}
