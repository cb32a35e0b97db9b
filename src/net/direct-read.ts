/**
 * Reads that bypass Node's Readable stream. A socket made with `directRead()` as its `onread`
 * option has libuv read into one buffer shared by every such socket of the thread, and the bytes
 * go straight to the socket's sink: no read buffer allocated and freed per read, no
 * `Readable.push`, no `nextTick` per chunk.
 *
 *   libuv read ─▶ READ_BUFFER ─▶ onDirectRead ─┬─ sink set:   sink.onRead(view)   (view valid during the call only)
 *                                              └─ no sink:    push(copy)          (a plain Readable: 'data', pipe, read())
 *
 * The view is overwritten by the next read of any socket of the thread: a sink keeps nothing of
 * it past the call without copying (a body chunk forwarded with socket.write may be held by libuv
 * when the write does not complete at once: large ones are written with src/net/lent-write.ts,
 * which copies only what the socket did not take; small ones are copied). With no sink the
 * socket is an ordinary stream (one copy per read, in place of Node's own allocation), which is
 * what HTTP/2, Dubbo and opaque TCP use. A TLS socket made over such a socket takes its handle over
 * (the ciphertext no longer comes here); its own decrypted reads come through here once it has
 * `adoptDirectRead()`: then each TLS record's plaintext is one read (TLS 1.3 records hold up to
 * 16 KiB), and after a sink stops reading, the rest of what one TCP read decrypted still comes.
 *
 * Backpressure: `pause()` and `resume()` of a direct socket stop and restart the handle's reads
 * (Node does that for sockets with a user buffer); a sink may also return false to stop reading.
 * End of stream and errors come as the socket's usual 'end', 'error' and 'close'.
 */
import { Buffer } from 'node:buffer';
import net from 'node:net';

/**
 * Bytes one read may bring: 256 KiB, one buffer per thread. Node's own reads take 64 KiB; a large
 * body streamed through takes a quarter of the reads (and callbacks, and writes) with this, and
 * a small read costs the same in either.
 */
export const READ_BUFFER_BYTES = 256 * 1024;

const READ_BUFFER = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);

/** The thread's read buffer: a native socket (src/net/native-socket.ts) reads into it too. */
export function threadReadBuffer(): Buffer {
  return READ_BUFFER;
}

export interface ReadSink {
  /** Bytes read; `bytes` is valid only during the call. False stops reading (resume() restarts it). */
  onRead(bytes: Buffer): boolean;
}

/**
 * On a socket made with `directRead()`: its sink, or null (its Readable side). Absent on any other
 * socket. A native socket (src/net/native-socket.ts) has one too: its reads go only to a sink.
 */
export const SINK = Symbol('readSink');
type DirectSocket = net.Socket & { [SINK]?: ReadSink | null };

/** Called by Node with the socket as `this` (lib/internal/stream_base_commons.js, onStreamRead). */
function onDirectRead(this: DirectSocket, n: number, buf: Buffer): boolean {
  const sink = this[SINK];
  if (sink) return sink.onRead(buf.subarray(0, n));
  return this.push(copyOf(buf, n));
}

const OPTION = Object.freeze({ buffer: READ_BUFFER, callback: onDirectRead as (n: number, buf: Buffer) => boolean });

/** The `onread` option for a socket that reads through the thread's buffer. */
export function directRead(): { readonly buffer: Buffer; readonly callback: (n: number, buf: Buffer) => boolean } {
  return OPTION;
}

/** Marks a socket made with `directRead()` (the option leaves no public trace on the socket). */
export function markDirect(socket: net.Socket): net.Socket {
  (socket as DirectSocket)[SINK] = null;
  return socket;
}

export function isDirect(socket: net.Socket): boolean {
  return (socket as DirectSocket)[SINK] !== undefined;
}

/**
 * Sends the socket's reads to `sink`, or (null) back to its Readable side. Bytes already in the
 * Readable buffer go to the sink first, so nothing is lost or reordered by the switch.
 */
export function setReadSink(socket: net.Socket, sink: ReadSink | null): void {
  const s = socket as DirectSocket;
  if (s[SINK] === undefined) return;
  s[SINK] = sink;
  if (sink !== null && s.readableLength > 0) {
    let c: Buffer | null;
    while ((c = s.read() as Buffer | null) !== null) sink.onRead(c);
  }
}

/** Bytes read while the socket's reader changed (inside a sink's onRead): to its sink now, or its Readable side. */
export function deliverRead(socket: net.Socket, bytes: Buffer): boolean {
  const sink = (socket as DirectSocket)[SINK];
  return sink ? sink.onRead(bytes) : socket.push(copyOf(bytes));
}

/** A copy of the first `n` bytes of `buf` that owns its memory (small ones share Node's pool). */
export function copyOf(buf: Buffer, n: number = buf.length): Buffer {
  const c = Buffer.allocUnsafe(n);
  buf.copy(c, 0, 0, n);
  return c;
}

/**
 * Node's own keys for a socket's `onread` buffer and callback (lib/internal/stream_base_commons.js),
 * read once from a socket made with the option; null where this runtime has other ones.
 */
const USER_BUFFER_KEYS = ((): { buffer: symbol; callback: symbol } | null => {
  const probe = new net.Socket({ onread: OPTION } as net.SocketConstructorOpts);
  const keys = new Map(Object.getOwnPropertySymbols(probe).map((s) => [s.description, s]));
  const buffer = keys.get('kBuffer');
  const callback = keys.get('kBufferCb');
  const own = probe as unknown as Record<symbol, unknown>;
  return buffer && callback && own[buffer] === READ_BUFFER && own[callback] === onDirectRead ? { buffer, callback } : null;
})();

/**
 * Makes an open socket read through the thread's buffer, as `directRead()` does for a socket
 * being made. For a TLS socket over a socket of Sluice's own (inbound termination, upstream mTLS):
 * Node takes `onread` only on a TLS socket that makes its own TCP connection, yet its TLS wrap
 * hands decrypted bytes to whatever buffer its reader gives, as any stream handle does. False
 * (and the socket left as it is, a stream) where the runtime offers no way to.
 */
export function adoptDirectRead(socket: net.Socket): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Buffer) => void } | null })._handle;
  if (USER_BUFFER_KEYS === null || typeof handle?.useUserBuffer !== 'function') return false;
  const own = socket as unknown as Record<symbol, unknown>;
  own[USER_BUFFER_KEYS.buffer] = READ_BUFFER;
  own[USER_BUFFER_KEYS.callback] = onDirectRead;
  handle.useUserBuffer(READ_BUFFER);
  markDirect(socket);
  return true;
}
