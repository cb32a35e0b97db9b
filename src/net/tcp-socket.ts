/**
 * A Node socket over a connected TCP descriptor this thread owns (a handed-off connection, or
 * one a native socket gives up: src/net/native-socket.ts), built as cheaply as Node allows.
 */
import net from 'node:net';
import { directRead, markDirect } from './direct-read';

/**
 * Node's TCP handle class. `new net.Socket({ fd })` first asks what the descriptor is (four system
 * calls: ioctl, fstat, getsockname, getsockopt); a handed-off descriptor is always a connected TCP
 * socket, so open it as one. Where the binding is not there, the plain way.
 */
interface TcpHandle {
  open(fd: number): number;
  close(): void;
  getAsyncId(): number;
  useUserBuffer(buffer: Buffer): void;
  onread: unknown;
}

const tcpWrap = ((): { TCP: new (type: number) => TcpHandle; constants: { SOCKET: number } } | null => {
  try {
    const b = (process as unknown as { binding(name: string): unknown }).binding('tcp_wrap') as { TCP?: unknown; constants?: { SOCKET?: unknown } };
    return typeof b?.TCP === 'function' && typeof b.constants?.SOCKET === 'number' ? (b as never) : null;
  } catch {
    return null;
  }
})();

/**
 * The options of a handed-off socket, with every key that net.Socket and its streams' states
 * look up present (absent ones as undefined, the others at the values they would get anyway).
 * A lookup of a key an object lacks walks its prototype chain, and in stream code that every
 * kind of stream goes through such a lookup is megamorphic and missed the stub cache on each
 * connection; found on the object, it is a plain field load.
 */
function socketOptions(handle: unknown): net.SocketConstructorOpts {
  return {
    handle, fd: undefined, readable: true, writable: true, allowHalfOpen: true, noDelay: true, keepAlive: undefined,
    keepAliveInitialDelay: undefined, onread: directRead(), signal: undefined, blockList: undefined, pauseOnCreate: undefined,
    manualStart: undefined, objectMode: false, readableObjectMode: false, writableObjectMode: false, highWaterMark: undefined,
    readableHighWaterMark: undefined, writableHighWaterMark: undefined, encoding: undefined, defaultEncoding: undefined,
    emitClose: false, autoDestroy: true, decodeStrings: false, construct: undefined, destroy: undefined, final: undefined,
    read: undefined, write: undefined, writev: undefined, captureRejections: undefined,
  } as unknown as net.SocketConstructorOpts;
}

/**
 * What net.Socket's constructor does with a `handle`, an `onread` buffer, `noDelay` and
 * `allowHalfOpen`, done to a socket made without options: Node's own keys for it, read once from a
 * socket made the usual way, and its read callback. A socket made with options copies them
 * (`{ ...options }`) and its streams look each one up; made without, it is several times
 * cheaper to build (measured in docs/benchmarks.md). Null where this runtime's sockets have
 * other keys: then sockets are made with their options, as before.
 */
const ATTACH = ((): { asyncId: symbol; buffer: symbol; bufferCb: symbol; noDelay: symbol; owner: symbol; onStreamRead: unknown } | null => {
  if (!tcpWrap) return null;
  try {
    const handle = new tcpWrap.TCP(tcpWrap.constants.SOCKET);
    const probe = new net.Socket({ handle, manualStart: true, noDelay: true, onread: directRead() } as net.SocketConstructorOpts);
    const own = new Map(Object.getOwnPropertySymbols(probe).map((k) => [k.description, k]));
    const owner = Object.getOwnPropertySymbols(handle).find((k) => k.description === 'owner_symbol');
    const keys = {
      asyncId: own.get('async_id_symbol'), buffer: own.get('kBuffer'), bufferCb: own.get('kBufferCb'),
      noDelay: own.get('kSetNoDelay'), owner, onStreamRead: handle.onread,
    };
    const p = probe as unknown as Record<symbol, unknown>;
    const h = handle as unknown as Record<symbol, unknown>;
    const ok = keys.asyncId !== undefined && keys.buffer !== undefined && keys.bufferCb !== undefined && keys.noDelay !== undefined
      && owner !== undefined && typeof keys.onStreamRead === 'function' && typeof handle.useUserBuffer === 'function'
      && p[keys.buffer] === directRead().buffer && p[keys.bufferCb] === directRead().callback && p[keys.noDelay] === true
      && h[owner] === probe && p[keys.asyncId] === handle.getAsyncId();
    probe.destroy();
    return ok ? (keys as { asyncId: symbol; buffer: symbol; bufferCb: symbol; noDelay: symbol; owner: symbol; onStreamRead: unknown }) : null;
  } catch {
    return null;
  }
})();

/** A socket over `handle` (open), reading through the thread's buffer, as the constructor would make it. */
function attachedSocket(handle: TcpHandle, keys: NonNullable<typeof ATTACH>): net.Socket {
  const socket = new net.Socket();
  const s = socket as unknown as Record<symbol, unknown> & { allowHalfOpen: boolean; _handle: unknown; _sockname: unknown };
  const { buffer, callback } = directRead();
  s.allowHalfOpen = true;
  s[keys.buffer] = buffer;
  s[keys.bufferCb] = callback;
  s[keys.noDelay] = true; // the descriptor has TCP_NODELAY from its listener
  s._handle = handle;
  s[keys.asyncId] = handle.getAsyncId();
  s._sockname = null;
  (handle as unknown as Record<symbol, unknown>)[keys.owner] = socket;
  handle.onread = keys.onStreamRead;
  handle.useUserBuffer(buffer);
  socket.read(0); // starts reading, as the constructor does
  return socket;
}

/**
 * A socket that owns `fd`. noDelay: the descriptor has TCP_NODELAY from its listener, so
 * serveConnection's setNoDelay costs nothing. It reads through the thread's buffer
 * (src/net/direct-read.ts): HTTP/1 takes the bytes from there, the rest reads it as a stream.
 */
export function socketFor(fd: number): net.Socket {
  if (tcpWrap) {
    const handle = new tcpWrap.TCP(tcpWrap.constants.SOCKET);
    if (handle.open(fd) === 0) {
      return markDirect(ATTACH !== null ? attachedSocket(handle, ATTACH) : new net.Socket(socketOptions(handle)));
    }
    handle.close(); // it never took the descriptor
  }
  return markDirect(new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true, noDelay: true, onread: directRead() } as net.SocketConstructorOpts));
}
