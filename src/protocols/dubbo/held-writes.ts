/**
 * Sending the frames a Dubbo connection held for the end of a turn of the event loop in one write
 * system call: one frame as it is; a few small ones copied into one buffer (a corked socket keeps
 * an object of its own per write, more than copying a few KiB costs); large ones corked, so the
 * socket writes them with one writev without a copy.
 */
import type net from 'node:net';

/** Held bytes up to this are copied into one buffer; beyond it they go corked. */
export const CONCAT_MAX_BYTES = 64 * 1024;

/** Writes `bufs` (`bytes` long in all) to `s` in one system call where the kernel takes them; `cb` after the last. */
export function writeHeld(s: net.Socket, bufs: Buffer[], bytes: number, cb?: () => void): void {
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
}
