/**
 * Writing bytes that are only lent: a view of the worker's read buffer (src/net/direct-read.ts),
 * valid until the next read of any socket of the thread. `socket.write` would do for bytes the
 * kernel takes at once, but when it takes only part, libuv keeps a pointer to the rest and sends
 * it later, from a buffer the next read overwrites. Whether the kernel takes all of it is known
 * only after the write, and by then libuv holds the pointer. So a large body chunk is written
 * here with write(2) on the socket's descriptor: what the kernel took is gone, and only what it
 * did not take is copied and queued on the socket as usual.
 *
 *   lent bytes ≥ LENT_WRITE_MIN, nothing queued ─▶ write(2) ─┬─ all taken: no copy, nothing held
 *                                                             └─ the rest:  socket.write(copy of the rest)
 *   anything else (small, queued, corked, TLS)   ─▶ socket.write(copy)
 *
 * The copy that was made of every body chunk allocated fresh memory outside V8's heap per read,
 * and V8 starts a full collection each time that memory grows by 64 MB ("external memory
 * pressure"): a quarter of a large body's CPU went there, and more to faulting the fresh pages in.
 *
 * Order is kept: the direct write happens only when Node holds nothing for the socket (no byte
 * queued or in flight, not corked, connected), so nothing written before can come after it.
 * Errors (EAGAIN aside, a reset or a closed peer) leave the bytes to `socket.write`, which meets
 * the same error and reports it as the socket's 'error', as before.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { copyOf, isDirect } from './direct-read';
import { loadNative } from './native';
import { isNative } from './native-socket';

/**
 * write(2) through the project's addon where it has it: `fs.writeSync` costs about three times
 * as much around the same system call (a request object, trace checks, validation in JS), and
 * there are two such writes per proxied request.
 */
const writeSome = loadNative()?.writeSome ?? null;

/** Lent chunks from this size up are written at once; smaller ones are copied and go with the turn's other writes. */
export const LENT_WRITE_MIN = 16 * 1024;

type Handle = { fd?: number };
type Refreshable = { _handle?: Handle | null; _unrefTimer?: () => void };

/**
 * Node holds nothing for `s` (no byte queued or in flight, not corked, connected, not ended), and
 * `s` is a plaintext socket of this thread (made with direct reads, not encrypted: a TLS socket's
 * handle has a descriptor too, and bytes written to it would bypass the encryption). Bytes
 * written to its descriptor now come after everything written to the socket before, and before
 * anything written after.
 */
export function writableNow(s: net.Socket): boolean {
  return s.writableLength === 0 && s.writableCorked === 0 && !s.connecting && !s.destroyed && !s.writableEnded && isDirect(s) && (s as net.Socket & { encrypted?: boolean }).encrypted !== true;
}

/** The descriptor of a socket for which `writableNow` holds, or -1. */
export function fdOf(s: net.Socket): number {
  if (isNative(s)) return s.fd;
  const fd = (s as net.Socket & Refreshable)._handle?.fd;
  return fd !== undefined && fd >= 0 ? fd : -1;
}

/** The descriptor to write `s`'s next bytes to at once (see writableNow), or -1. */
export function directFd(s: net.Socket): number {
  return writableNow(s) ? fdOf(s) : -1;
}

/**
 * write(2) of `bytes[0, len)` on `fd` (from `directFd(s)`): the count the kernel took, 0 when it
 * took nothing (EAGAIN: its buffer is full; a reset or a closed peer: `socket.write` of the same
 * bytes meets the error and reports it as the socket's 'error', as it always did). A write keeps
 * the socket's idle timeout away, as `socket.write` does.
 */
export function writeFd(s: net.Socket, fd: number, bytes: Buffer, len: number): number {
  let n = 0;
  if (writeSome !== null) {
    n = writeSome(fd, bytes, len);
  } else {
    try {
      n = fs.writeSync(fd, bytes, 0, len);
    } catch {
      n = 0;
    }
  }
  if (n > 0) (s as net.Socket & Refreshable)._unrefTimer?.();
  return n;
}

/**
 * Writes `bytes`, valid during this call only, to `s`; the result is `socket.write`'s (false:
 * more is queued than the socket's high-water mark, 'drain' follows). The caller has flushed
 * whatever it held for the socket (the turn's held writes) if it wants the direct path.
 */
export function writeLent(s: net.Socket, bytes: Buffer): boolean {
  if (bytes.length >= LENT_WRITE_MIN) {
    const fd = directFd(s);
    if (fd >= 0) {
      const n = writeFd(s, fd, bytes, bytes.length);
      if (n === bytes.length) return true;
      return s.write(copyOf(bytes.subarray(n)));
    }
  }
  return s.write(copyOf(bytes));
}
