/**
 * A downstream connection served without a Node socket: the project's addon keeps its descriptor
 * in the worker's epoll set (one per thread, polled from the worker's loop), reads into the
 * thread's buffer and calls `onEvent`; writes are one send(2) each, from JS. A new connection
 * that is plain HTTP/1.1 costs no TCP handle, no Duplex stream state, no write requests and no
 * close callbacks (docs/benchmarks.md, "Plain HTTP/1.1 downstream connections without a Node
 * socket").
 *
 *   fd ─▶ NativeSocket ─ first read ─┬─ plainly HTTP/1 ─▶ Http1Session reads and writes it as it is
 *                                    └─ anything else (TLS, HTTP/2, Dubbo, opaque, a partial
 *                                       first read, a silent client) ─▶ promote(): a net.Socket
 *                                       over the same descriptor, with its listeners, its sink,
 *                                       what it holds unwritten and its end
 *   an HTTP/1 upgrade (101) ─▶ promote(), and the tunnel pipes Node sockets as before
 *
 * It is the part of net.Socket that the HTTP/1 session, the sniffer and the held writes use
 * (src/worker/held-writes.ts, src/net/lent-write.ts), with the same meaning: write() is false
 * past the high-water mark and 'drain' follows; end() sends the FIN once what is queued is out
 * ('finish'); a socket whose both sides are over is destroyed; destroy() closes the descriptor at
 * once and 'close' (after 'error', if any) comes on the next tick. Reads go only to a sink
 * (src/net/direct-read.ts), valid during the call; a sink returning false pauses reading.
 */
import { nextTick } from 'node:process';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { CONN_READ, CONN_WRITABLE, CONN_WRITE, loadNative, type Connection, type NativeNet } from './native';
import { SINK, setReadSink, threadReadBuffer, type ReadSink } from './direct-read';
import { socketFor } from './tcp-socket';
import { log } from '../log';

/** -errno of a read that found nothing. */
const EAGAIN = -os.constants.errno.EAGAIN;

/** What write() takes before it says false (net.Socket's default). */
const HIGH_WATER_MARK = 16 * 1024;
/** Queued pieces up to this are joined into one send. */
const JOIN_MAX = 64 * 1024;

type Native = Required<Pick<NativeNet, 'connInit' | 'connOpen' | 'connEvents' | 'connClose' | 'connWrite' | 'shutdownWrite' | 'peerAddress' | 'localAddress'>> & Pick<NativeNet, 'connRead'>;

const native = ((): Native | null => {
  const n = loadNative();
  if (!n || typeof n.connInit !== 'function' || typeof n.connOpen !== 'function' || typeof n.connEvents !== 'function'
    || typeof n.connClose !== 'function' || typeof n.connWrite !== 'function' || typeof n.shutdownWrite !== 'function'
    || typeof n.peerAddress !== 'function') return null;
  return n as Native;
})();

/** SLUICE_NATIVE_SOCKETS=0 serves every connection with a Node socket, as before (for comparison). */
const enabled = native !== null && process.env.SLUICE_NATIVE_SOCKETS !== '0';
let initialised = false;

/** Own symbol keys of any emitter: not the owner's state, so not carried over by promote(). */
const EMITTER_KEYS = new Set(Object.getOwnPropertySymbols(new EventEmitter()));

/** Where latin1 heads are written for their send(2) (within write() only). */
const STAGING = Buffer.allocUnsafeSlow(JOIN_MAX);
type Latin1Writable = Buffer & { latin1Write(s: string, offset: number, length: number): number };

function onEvent(this: NativeSocket, code: number): void {
  try {
    this.onEvent(code);
  } catch (err) {
    // a bug of ours in whatever read or wrote: lose this connection, never the worker
    log.error({ err }, 'native socket event');
    this.destroy();
  }
}

function systemError(errno: number, syscall: string): NodeJS.ErrnoException {
  let code: string;
  try { code = getSystemErrorName(errno); } catch { code = `E${-errno}`; }
  const err = new Error(`${syscall} ${code}`) as NodeJS.ErrnoException;
  err.errno = errno;
  err.code = code;
  err.syscall = syscall;
  return err;
}

function streamError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function emitClose(s: NativeSocket, err: Error | null): void {
  if (err !== null && s.listenerCount('error') > 0) s.emit('error', err);
  s.emit('close', err !== null);
}

function emitDrain(s: NativeSocket): void {
  if (!s.destroyed) s.emit('drain');
}

function emitFinish(s: NativeSocket): void {
  s.emit('finish');
}

type WriteCb = (err?: Error | null) => void;

export class NativeSocket extends EventEmitter {
  [SINK]: ReadSink | null = null;
  destroyed = false;
  writableEnded = false;
  writableFinished = false;
  readableEnded = false;
  writableCorked = 0;
  /** Bytes written and not yet taken by the kernel. */
  writableLength = 0;
  readonly writableHighWaterMark = HIGH_WATER_MARK;
  readonly connecting = false;
  readonly readableLength = 0;
  readonly encrypted = false;
  /** Bytes the kernel did not take yet, in order; null when none. */
  private queue: Buffer[] | null = null;
  /** Write callbacks waiting for the queue to empty. */
  private callbacks: WriteCb[] | null = null;
  private needDrain = false;
  private paused = false;
  /** What the addon polls for (CONN_READ | CONN_WRITE). */
  private polling = CONN_READ;
  /** destroySoon() came before the end was sent. */
  private destroyAtFinish = false;
  private peer: { address: string; port: number; family: 4 | 6 } | null | undefined = undefined;
  private local: { address: string; port: number; family: 4 | 6 } | null | undefined = undefined;
  private readonly handle: Connection;
  /** The Node socket this one became (promote()): a destroy() that still reaches this one goes to it. */
  private successor: net.Socket | null = null;

  /** A native socket over `fd` (which it owns from now on), or null where the addon cannot serve one. */
  static open(fd: number): NativeSocket | null {
    if (!enabled) return null;
    if (!initialised) {
      native!.connInit(threadReadBuffer(), onEvent);
      initialised = true;
    }
    return new NativeSocket(fd);
  }

  private constructor(readonly fd: number) {
    super();
    this.handle = native!.connOpen(fd, this);
  }

  // ── events from the addon ───────────────────────────────────────────────

  /** @internal */
  onEvent(code: number): void {
    if (this.destroyed) return;
    if (code > 0) {
      const sink = this[SINK];
      if (sink === null) { this.destroy(streamError('ERR_SLUICE_NO_READER', 'bytes read with no reader')); return; }
      if (!sink.onRead(threadReadBuffer().subarray(0, code)) && !this.destroyed) this.pause();
      return;
    }
    if (code === CONN_WRITABLE) { this.flush(); return; }
    if (code === 0) {
      this.readableEnded = true;
      this.setPolling();
      this.emit('end');
      if (this.writableFinished && !this.destroyed) this.destroy();
      return;
    }
    this.destroy(systemError(code, 'read'));
  }

  // ── reading ─────────────────────────────────────────────────────────────

  /**
   * Read what has arrived already, without waiting for the epoll set to report it. Called once
   * the reader is in place: a new connection's request is usually there by the time the worker
   * takes it, and this spares a round through the set. Nothing there yet: the set reports it.
   */
  readNow(): void {
    if (this.destroyed || this.paused || this.readableEnded || this[SINK] === null || native!.connRead === undefined) return;
    const code = native!.connRead(this.handle, 0);
    if (code !== EAGAIN) onEvent.call(this, code);
  }

  pause(): this {
    if (!this.paused) { this.paused = true; this.setPolling(); }
    return this;
  }

  resume(): this {
    if (this.paused) { this.paused = false; this.setPolling(); }
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  private setPolling(): void {
    if (this.destroyed) return;
    const want = (this.paused || this.readableEnded ? 0 : CONN_READ) | (this.queue !== null ? CONN_WRITE : 0);
    if (want === this.polling) return;
    this.polling = want;
    const r = native!.connEvents(this.handle, want);
    if (r < 0) this.destroy(systemError(r, 'epoll_ctl'));
  }

  // ── writing ─────────────────────────────────────────────────────────────

  write(data: Buffer | Uint8Array | string, encoding?: BufferEncoding | WriteCb, cb?: WriteCb): boolean {
    if (typeof encoding === 'function') { cb = encoding; encoding = undefined; }
    if (this.destroyed || this.writableEnded) {
      const err = this.destroyed ? streamError('ERR_STREAM_DESTROYED', 'Cannot call write after a stream was destroyed')
        : streamError('ERR_STREAM_WRITE_AFTER_END', 'write after end');
      if (cb) nextTick(cb, err);
      if (!this.destroyed) this.destroy(err);
      return false;
    }
    if (this.queue === null && this.writableCorked === 0) {
      // nothing before it: one send now, and only what the kernel did not take is kept
      let bytes: Buffer | Uint8Array;
      let len: number;
      let staged = false;
      if (typeof data === 'string') {
        if ((encoding === 'latin1' || encoding === 'binary' || encoding === 'ascii') && data.length <= JOIN_MAX) {
          len = (STAGING as Latin1Writable).latin1Write(data, 0, data.length);
          bytes = STAGING;
          staged = true;
        } else {
          bytes = Buffer.from(data, encoding ?? 'utf8');
          len = bytes.length;
        }
      } else {
        bytes = data;
        len = data.length;
      }
      if (len === 0) { if (cb) nextTick(cb, null); return true; }
      const n = native!.connWrite(this.fd, bytes, len);
      if (n < 0) { this.fail(n, 'write', cb); return false; }
      if (n === len) { if (cb) nextTick(cb, null); return true; }
      const rest = staged ? Buffer.from(bytes.subarray(n, len)) : Buffer.from(bytes.buffer, bytes.byteOffset + n, len - n);
      this.enqueue(rest, cb);
      this.setPolling();
    } else {
      this.enqueue(typeof data === 'string' ? Buffer.from(data, encoding ?? 'utf8')
        : Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length), cb);
    }
    if (this.writableLength < HIGH_WATER_MARK) return true;
    this.needDrain = true;
    return false;
  }

  private enqueue(b: Buffer, cb: WriteCb | undefined): void {
    if (b.length > 0) {
      (this.queue ??= []).push(b);
      this.writableLength += b.length;
    }
    if (cb) (this.callbacks ??= []).push(cb);
  }

  /** A failed send: the socket is destroyed with its error, which comes as 'error' and to `cb`. */
  private fail(errno: number, syscall: string, cb?: WriteCb): void {
    const err = systemError(errno, syscall);
    if (cb) nextTick(cb, err);
    this.destroy(err);
  }

  cork(): void {
    this.writableCorked++;
  }

  uncork(): void {
    if (this.writableCorked === 0) return;
    if (--this.writableCorked === 0 && this.queue !== null && !this.destroyed) this.flush();
  }

  /** Sends what is queued, as far as the kernel takes it; then callbacks, 'drain', the end. */
  private flush(): void {
    while (this.queue !== null) {
      const q = this.queue;
      let data: Buffer;
      let pieces = 1;
      if (q.length === 1 || q[0].length >= JOIN_MAX) {
        data = q[0];
      } else {
        let total = q[0].length;
        while (pieces < q.length && total + q[pieces].length <= JOIN_MAX) total += q[pieces++].length;
        data = pieces === 1 ? q[0] : Buffer.concat(q.slice(0, pieces), total);
      }
      const n = native!.connWrite(this.fd, data, data.length);
      if (n < 0) { this.fail(n, 'write'); return; }
      this.writableLength -= n;
      if (n < data.length) {
        q.splice(0, pieces, data.subarray(n));
        this.setPolling();
        return;
      }
      q.splice(0, pieces);
      if (q.length === 0) this.queue = null;
    }
    this.setPolling();
    const cbs = this.callbacks;
    this.callbacks = null;
    if (cbs !== null) for (const cb of cbs) nextTick(cb, null);
    // on the next tick, as Node's: a writer that was just told false (a corked batch flushed
    // within its own write) pauses first, and is resumed after
    if (this.needDrain) { this.needDrain = false; nextTick(emitDrain, this); }
    if (this.writableEnded && !this.writableFinished && !this.destroyed) this.finishWrite();
  }

  end(cb?: () => void): this {
    if (cb) this.once('finish', cb);
    if (this.writableEnded || this.destroyed) return this;
    this.writableEnded = true;
    if (this.writableCorked > 0) this.writableCorked = 0;
    if (this.queue !== null) this.flush();
    else this.finishWrite();
    return this;
  }

  /** Everything written is in the kernel and the end was asked for: the FIN goes. */
  private finishWrite(): void {
    if (this.queue !== null || this.writableFinished) return;
    this.writableFinished = true;
    native!.shutdownWrite(this.fd); // ENOTCONN after a reset: 'close' tells the rest
    nextTick(emitFinish, this);
    if (this.destroyAtFinish || this.readableEnded) this.destroy();
  }

  /** Ends the socket, and destroys it once what is written has gone (at once if it has). */
  destroySoon(): void {
    if (this.destroyed) return;
    if (this.writableFinished) { this.destroy(); return; }
    this.destroyAtFinish = true;
    this.end();
  }

  destroy(err?: Error | null): this {
    if (this.destroyed) {
      if (this.successor !== null && !this.successor.destroyed) this.successor.destroy(err ?? undefined);
      return this;
    }
    this.destroyed = true;
    this.writableEnded = true;
    this.queue = null;
    this.writableLength = 0;
    native!.connClose(this.handle, 1);
    const cbs = this.callbacks;
    this.callbacks = null;
    if (cbs !== null) {
      const e = err ?? streamError('ERR_STREAM_DESTROYED', 'Cannot call write after a stream was destroyed');
      for (const cb of cbs) nextTick(cb, e);
    }
    nextTick(emitClose, this, err ?? null);
    return this;
  }

  // ── what Node sockets also answer ───────────────────────────────────────

  setNoDelay(): this {
    return this; // the descriptor has TCP_NODELAY from its listener
  }

  setKeepAlive(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  get remoteAddress(): string | undefined {
    return this.peerOf()?.address;
  }

  get remotePort(): number | undefined {
    return this.peerOf()?.port;
  }

  get remoteFamily(): string | undefined {
    const p = this.peerOf();
    return p ? (p.family === 4 ? 'IPv4' : 'IPv6') : undefined;
  }

  get localAddress(): string | undefined {
    return this.localOf()?.address;
  }

  get localPort(): number | undefined {
    return this.localOf()?.port;
  }

  private peerOf(): { address: string; port: number; family: 4 | 6 } | null {
    if (this.peer === undefined) this.peer = this.destroyed ? null : native!.peerAddress(this.fd);
    return this.peer;
  }

  private localOf(): { address: string; port: number; family: 4 | 6 } | null {
    if (this.local === undefined) {
      try { this.local = this.destroyed ? null : native!.localAddress(this.fd); } catch { this.local = null; }
    }
    return this.local;
  }

  /**
   * The connection goes on as a Node socket over the same descriptor: what needs a stream (a
   * TLS handshake, HTTP/2, Dubbo, opaque bytes, an upgraded connection's tunnel). Everything
   * the owner put on this socket comes along: its listeners, its symbol-keyed fields (the
   * hand-off entry, the sniffer or session), its sink, a pause, bytes not yet sent and an end
   * asked for. This socket is dead afterwards and emits nothing more. Bytes already read are the
   * caller's to give to the new socket (deliverRead).
   */
  promote(): net.Socket {
    if (this.destroyed) throw new Error('promote() of a destroyed native socket');
    native!.connClose(this.handle, 0);
    this.destroyed = true;
    const s = socketFor(this.fd);
    this.successor = s;
    for (const name of this.eventNames()) {
      for (const l of this.rawListeners(name)) (s as EventEmitter).on(name, l as (...args: unknown[]) => void);
    }
    const own = this as unknown as Record<symbol, unknown>;
    const to = s as unknown as Record<symbol, unknown>;
    for (const k of Object.getOwnPropertySymbols(this)) if (k !== SINK && !EMITTER_KEYS.has(k)) to[k] = own[k];
    setReadSink(s, this[SINK]);
    this[SINK] = null;
    if (this.paused) s.pause();
    const q = this.queue;
    const cbs = this.callbacks;
    this.queue = null;
    this.callbacks = null;
    if (q !== null) for (const b of q) s.write(b);
    if (cbs !== null) for (const cb of cbs) s.write(EMPTY, cb);
    if (this.writableFinished) s.end();
    else if (this.writableEnded) (this.destroyAtFinish ? s.destroySoon() : s.end());
    this.removeAllListeners();
    return s;
  }
}

const EMPTY = Buffer.alloc(0);

/** A native socket over `fd` where it can be had, else the Node socket it would be promoted to. */
export function downstreamSocket(fd: number): net.Socket {
  return (NativeSocket.open(fd) as unknown as net.Socket | null) ?? socketFor(fd);
}

export function isNative(s: unknown): s is NativeSocket {
  return s instanceof NativeSocket;
}
