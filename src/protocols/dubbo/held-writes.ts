/**
 * Frames a Dubbo connection holds for the end of a turn of the event loop (turn-end.ts), sent in
 * one write system call: one frame as it is; a few small ones copied into one buffer (a corked
 * socket keeps an object of its own per write, more than copying a few KiB costs; in the bench the
 * two measure the same); large ones corked, so the socket writes them with one writev, uncopied.
 */
import type net from 'node:net';
import { atTurnEnd, type TurnEnd } from '../../worker/turn-end';

/** Held bytes up to this are copied into one buffer; beyond it they go corked. */
export const CONCAT_MAX_BYTES = 64 * 1024;

export class HeldWrites {
  private bufs: Buffer[] = [];
  private bytes = 0;

  /** `owner.atTurnEnd` is queued with the first frame of each turn; it sends them (flushTo). */
  constructor(private readonly owner: TurnEnd) {}

  push(buf: Buffer): void {
    if (this.bufs.length === 0) atTurnEnd(this.owner);
    this.bufs.push(buf);
    this.bytes += buf.length;
  }

  /**
   * Writes what is held to `s` (dropped if `s` can no longer be written), `cb` after the last byte;
   * false when nothing was held.
   */
  flushTo(s: net.Socket, cb?: () => void): boolean {
    const bufs = this.bufs;
    if (bufs.length === 0) return false;
    const bytes = this.bytes;
    this.bufs = [];
    this.bytes = 0;
    if (s.destroyed || s.writableEnded) return true;
    if (bufs.length === 1) {
      s.write(bufs[0], cb);
    } else if (bytes <= CONCAT_MAX_BYTES) {
      s.write(Buffer.concat(bufs, bytes), cb);
    } else {
      s.cork();
      const last = bufs.length - 1;
      for (let i = 0; i < last; i++) s.write(bufs[i]);
      s.write(bufs[last], cb);
      s.uncork();
    }
    return true;
  }
}
