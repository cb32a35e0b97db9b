/**
 * Bytes a connection holds for the end of a turn of the event loop (turn-end.ts), sent in one
 * write system call: an HTTP/1 response or local reply, the request sent upstream, Dubbo frames
 * on either side. Held here rather than in a corked socket: a corked socket keeps an object of
 * its own per write, and its uncork goes through Node's Writable (writev, a write request, a
 * tick after the write) even when the kernel takes everything at once.
 *
 *   push(head string) ─┐
 *   push(body)  ───────┼─▶ turn's end ─▶ plaintext socket, Node holds nothing for it?
 *   push(…)     ───────┘     yes: copied into one buffer of the thread, write(2) on the descriptor;
 *                                 what the kernel did not take is copied and goes to socket.write
 *                            no (TLS, bytes queued in Node): socket.write of one buffer (or corked, when large)
 *
 * Order: everything that writes to the socket or ends it goes through the owner, which sends
 * what is held first (`flushTo`), so nothing written before can come after, nor the reverse. The
 * direct write happens only when Node holds nothing for the socket (src/net/lent-write.ts
 * `directFd`), so it cannot pass bytes Node still has to send.
 *
 * Errors: a write(2) that fails (a reset, a closed peer) leaves the bytes to `socket.write`,
 * which meets the same error and reports it as the socket's 'error' and 'close', as before.
 * Backpressure: `write` holds up to the socket's high-water mark; past it, what is held goes now
 * and the result is `socket.write`'s (false only when Node queued bytes, and then 'drain' follows).
 */
import { Buffer } from 'node:buffer';
import { nextTick } from 'node:process';
import type net from 'node:net';
import { atTurnEnd, type TurnEnd } from './turn-end';
import { fdOf, writableNow, writeFd } from '../net/lent-write';
import { copyOf } from '../net/direct-read';

/** Held bytes up to this are copied into one buffer; beyond it they go corked. */
export const CONCAT_MAX_BYTES = 64 * 1024;

/** Where the turn's held bytes of one socket are copied for their write(2): used within flushTo only. */
const STAGING = Buffer.allocUnsafeSlow(CONCAT_MAX_BYTES);

/** A held piece: bytes the holder owns, or a head as a latin1 string (no Buffer made for it). */
type Piece = Buffer | string;

type Latin1Writable = Buffer & { latin1Write(s: string, offset: number, length: number): number };

function copyInto(dst: Buffer, off: number, p: Piece): number {
  if (typeof p === 'string') return off + (dst as Latin1Writable).latin1Write(p, off, p.length);
  return off + p.copy(dst, off);
}

/** `first` and `more` copied one after the other into `dst` from 0; returns the bytes copied. */
function gather(dst: Buffer, first: Piece, more: readonly Piece[] | null): number {
  let off = copyInto(dst, 0, first);
  if (more !== null) for (let i = 0; i < more.length; i++) off = copyInto(dst, off, more[i]);
  return off;
}

function toBuffer(p: Piece): Buffer {
  return typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
}

export class HeldWrites {
  private first: Piece | null = null;
  private more: Piece[] | null = null;
  private bytes = 0;
  /** The owner is queued for this turn's end. */
  private queued = false;
  /** write() holds until the turn's end (holdTurn), rather than writing at once. */
  private holdingTurn = false;
  /** The descriptor of `fdSocket` (-1: none), looked up once: it is a native getter. */
  private fd = -1;
  private fdSocket: net.Socket | null = null;

  /**
   * `owner.atTurnEnd` is queued with the first bytes of each turn; it sends them (endTurn).
   * Without an owner, the instance is its own (a subclass that is a TurnEnd: SocketWrites).
   */
  private readonly owner: TurnEnd;
  constructor(owner?: TurnEnd) {
    this.owner = owner ?? (this as unknown as TurnEnd);
  }

  /** Something is held. */
  get holding(): boolean {
    return this.first !== null;
  }

  /** Holds `p` until the turn's end (or the next flushTo). */
  push(p: Piece): void {
    if (this.first === null) {
      this.first = p;
      if (!this.queued) { this.queued = true; atTurnEnd(this.owner); }
    } else {
      (this.more ??= []).push(p);
    }
    this.bytes += p.length;
  }

  /** From now until the turn's end, `write` holds what it is given. */
  holdTurn(): void {
    this.holdingTurn = true;
    if (!this.queued) { this.queued = true; atTurnEnd(this.owner); }
  }

  /**
   * Writes `p` to `s`: held when holding for the turn, else at once (after anything held). The
   * result is what `socket.write` would say: false when more than the socket's high-water mark
   * waits in Node, and then 'drain' follows.
   */
  write(s: net.Socket, p: Piece): boolean {
    if (!this.holdingTurn) {
      if (this.first !== null) this.flushTo(s);
      return typeof p === 'string' ? s.write(p, 'latin1') : s.write(p);
    }
    this.push(p);
    return this.sendIfFull(s);
  }

  /**
   * Writes `parts` to `s` together: held when holding for the turn, else corked into one writev
   * (after anything held). The result is the last write's, as `write`'s.
   */
  writeAll(s: net.Socket, parts: readonly Piece[]): boolean {
    if (this.holdingTurn) {
      for (let i = 0; i < parts.length; i++) this.push(parts[i]);
      return this.sendIfFull(s);
    }
    if (this.first !== null) this.flushTo(s);
    s.cork();
    let ok = true;
    for (let i = 0; i < parts.length; i++) ok = s.write(parts[i], 'latin1');
    s.uncork();
    return ok;
  }

  /** Held bytes past the socket's high-water mark (with what Node holds) go now; else true. */
  private sendIfFull(s: net.Socket): boolean {
    if (this.bytes + s.writableLength < s.writableHighWaterMark) return true;
    return this.sendHeld(s);
  }

  /** The turn's end, from the owner's atTurnEnd: what is held goes, and write() writes at once again. */
  endTurn(s: net.Socket, cb?: () => void): boolean {
    this.queued = false;
    this.holdingTurn = false;
    return this.flushTo(s, cb);
  }

  /**
   * Writes what is held to `s` (dropped if `s` can no longer be written), `cb` after the last byte;
   * false when nothing was held.
   */
  flushTo(s: net.Socket, cb?: () => void): boolean {
    if (this.first === null) return false;
    this.sendHeld(s, cb);
    return true;
  }

  /** Sends what is held; `socket.write`'s result (true when the kernel took it all). */
  private sendHeld(s: net.Socket, cb?: () => void): boolean {
    const first = this.first!;
    const more = this.more;
    const bytes = this.bytes;
    this.first = null;
    this.more = null;
    this.bytes = 0;
    if (s.destroyed || s.writableEnded) return true;
    let fd = -1;
    if (writableNow(s)) {
      if (this.fdSocket !== s) { this.fdSocket = s; this.fd = fdOf(s); }
      fd = this.fd;
    }
    if (fd >= 0 && (bytes <= CONCAT_MAX_BYTES || (more === null && typeof first !== 'string'))) {
      // one write(2) of everything held; only what the kernel did not take is handed to Node
      let data: Buffer;
      let staged = false;
      if (more === null && typeof first !== 'string') {
        data = first;
      } else {
        gather(STAGING, first, more);
        data = STAGING;
        staged = true;
      }
      const n = writeFd(s, fd, data, bytes);
      if (n === bytes) {
        if (cb) nextTick(cb);
        return true;
      }
      const rest = staged ? copyOf(data.subarray(n, bytes)) : data.subarray(n, bytes);
      return s.write(rest, cb);
    }
    if (more === null) return typeof first === 'string' ? s.write(first, 'latin1', cb) : s.write(first, cb);
    if (bytes <= CONCAT_MAX_BYTES) {
      const buf = Buffer.allocUnsafe(bytes);
      gather(buf, first, more);
      return s.write(buf, cb);
    }
    s.cork();
    s.write(toBuffer(first));
    const last = more.length - 1;
    for (let i = 0; i < last; i++) s.write(toBuffer(more[i]));
    const ok = s.write(toBuffer(more[last]), cb);
    s.uncork();
    return ok;
  }
}

/**
 * The held writes of one socket that writes nothing else at the turn's end: an HTTP/1 connection,
 * either side. Everything that writes to the socket goes through `send`/`sendAll`, or takes the
 * socket from `out`, which sends what is held first.
 */
export class SocketWrites extends HeldWrites implements TurnEnd {
  /** Replaced only when the connection's native socket becomes a Node socket (an upgrade). */
  constructor(public socket: net.Socket) {
    super();
  }

  /** @internal the turn's end: what is held goes (dropped if the socket is gone). */
  atTurnEnd(): void {
    this.endTurn(this.socket);
  }

  /** Writes to the socket (held when holding for the turn); `socket.write`'s result. */
  send(bytes: Buffer | string): boolean {
    return this.write(this.socket, bytes);
  }

  /** Writes `parts` together (held when holding for the turn, else one writev). */
  sendAll(parts: readonly Buffer[]): boolean {
    return this.writeAll(this.socket, parts);
  }

  /** The socket, to write to or end directly: what is held goes first. */
  get out(): net.Socket {
    if (this.holding) this.flushTo(this.socket);
    return this.socket;
  }
}
