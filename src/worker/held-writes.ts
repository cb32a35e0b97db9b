/**
 * Bytes a connection holds for the end of a turn of the event loop (turn-end.ts), sent in one
 * write system call: a local HTTP/1 reply, Dubbo frames on either side. One buffer goes as it is
 * (the common case: nothing allocated to hold it); a few small ones are copied into one buffer (a
 * corked socket keeps an object of its own per write, more than copying a few KiB costs; in the
 * bench the two measure the same); large ones are corked, so the socket writes them with one
 * writev, uncopied.
 */
import type net from 'node:net';
import { atTurnEnd, type TurnEnd } from './turn-end';

/** Held bytes up to this are copied into one buffer; beyond it they go corked. */
export const CONCAT_MAX_BYTES = 64 * 1024;

export class HeldWrites {
  private first: Buffer | null = null;
  private more: Buffer[] | null = null;
  private bytes = 0;

  /** `owner.atTurnEnd` is queued with the first buffer of each turn; it sends them (flushTo). */
  constructor(private readonly owner: TurnEnd) {}

  /** Something is held. */
  get holding(): boolean {
    return this.first !== null;
  }

  push(buf: Buffer): void {
    if (this.first === null) {
      this.first = buf;
      atTurnEnd(this.owner);
    } else {
      (this.more ??= []).push(buf);
    }
    this.bytes += buf.length;
  }

  /**
   * Writes what is held to `s` (dropped if `s` can no longer be written), `cb` after the last byte;
   * false when nothing was held.
   */
  flushTo(s: net.Socket, cb?: () => void): boolean {
    const first = this.first;
    if (first === null) return false;
    const more = this.more;
    const bytes = this.bytes;
    this.first = null;
    this.more = null;
    this.bytes = 0;
    if (s.destroyed || s.writableEnded) return true;
    if (more === null) {
      s.write(first, cb);
    } else if (bytes <= CONCAT_MAX_BYTES) {
      more.unshift(first);
      s.write(Buffer.concat(more, bytes), cb);
    } else {
      s.cork();
      s.write(first);
      const last = more.length - 1;
      for (let i = 0; i < last; i++) s.write(more[i]);
      s.write(more[last], cb);
      s.uncork();
    }
    return true;
  }
}
