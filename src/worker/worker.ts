/**
 * Worker entry (a piscina worker). Connections do not come as piscina tasks: at start the worker
 * takes a row of the hand-off queues in shared memory (src/shared/handoff.ts) and, as the main
 * thread queues connections there, claims each descriptor, wraps it in a socket and serves it.
 * The only piscina tasks are the start-up ping (this module's default export) and the log flush.
 *
 *   load ─▶ attach shared memory, claim a gauge row and a hand-off row ─▶ wait on the row
 *   woken ─▶ for each entry: claim the fd (CAS) ─▶ new net.Socket({ fd }) ─▶ serveConnection
 *   socket closed ─▶ release the fd slot, count the connection finished (the main thread's
 *   open-connection count and its drain read that)
 *
 * Failures of a connection are that connection's business: nothing here throws past it.
 */
import net from 'node:net';
import { BroadcastChannel, threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import { SharedState } from '../shared/shared-state';
import type { SharedMemoryHandle } from '../shared/shared-memory';
import { HandoffInbox, type Claimed } from '../shared/handoff';
import { claimGaugeRow } from '../stats/stats';
import { CONTROL_CHANNEL, peerChannelName, registryChannelName, rpcChannelName, type ControlMessage, type WorkerPing } from '../shared/messages';
import { WorkerRuntime, type CompiledConfig, type ListenerRuntime } from './runtime';
import { serveConnection } from './connection';
import { log } from '../log';
import { loadNative } from '../net/native';
import { directRead, markDirect } from '../net/direct-read';

const data = workerData as { shared: SharedMemoryHandle; control?: string };
const shared = new SharedState(data.shared);
// gauges this worker raises live in its own row: if it dies, the main thread zeroes them
const rt = new WorkerRuntime(shared, claimGaugeRow(shared, threadId), rpcChannelName(data.control ?? CONTROL_CHANNEL),
  registryChannelName(data.control ?? CONTROL_CHANNEL), peerChannelName(data.control ?? CONTROL_CHANNEL));
const native = loadNative();
if (shared.draining) rt.draining = true;
if (shared.closingIdle) rt.closingIdle = true;

const control = new BroadcastChannel(data.control ?? CONTROL_CHANNEL);
control.onmessage = (ev) => {
  const msg = (ev as unknown as { data: ControlMessage }).data;
  if (msg.type === 'drain') rt.drain();
  else if (msg.type === 'close-idle') rt.closeIdle();
  else if (msg.type === 'endpoints') rt.endpointsChanged();
  else if (msg.type === 'config') rt.current();
  else if (msg.type === 'identity') rt.identityChanged();
  else if (msg.type === 'stall' && msg.threadId === threadId) {
    control.postMessage({ type: 'stalling', threadId } satisfies ControlMessage);
    const until = Date.now() + msg.ms;
    while (Date.now() < until) { /* a worker stuck in a long computation: it takes no connection */ }
  }
};
// the channel must not keep an otherwise idle worker alive
(control as unknown as { unref(): void }).unref();

/** Listeners of a config by the stat slot the main thread names them with. */
const bySlot = new WeakMap<CompiledConfig, Map<number, ListenerRuntime>>();

function listenerAt(cfg: CompiledConfig, slot: number): ListenerRuntime | undefined {
  let m = bySlot.get(cfg);
  if (!m) {
    m = new Map();
    for (const l of cfg.listeners.values()) m.set(l.cxTotal, l);
    bySlot.set(cfg, m);
  }
  return m.get(slot);
}

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
function socketFor(fd: number): net.Socket {
  if (tcpWrap) {
    const handle = new tcpWrap.TCP(tcpWrap.constants.SOCKET);
    if (handle.open(fd) === 0) {
      return markDirect(ATTACH !== null ? attachedSocket(handle, ATTACH) : new net.Socket(socketOptions(handle)));
    }
    handle.close(); // it never took the descriptor
  }
  return markDirect(new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true, noDelay: true, onread: directRead() } as net.SocketConstructorOpts));
}

const inbox = HandoffInbox.claim(shared.memory, threadId);
if (!inbox) log.error({ threadId }, 'no free hand-off row: this worker gets no connections');

/** The hand-off entry a socket was made from: its one 'close' listener finds it here (no closure per connection). */
const CLAIMED = Symbol('claimed');
type HandedSocket = net.Socket & { [CLAIMED]: Claimed };

function onHandedClose(this: HandedSocket): void {
  inbox!.finished(this[CLAIMED]);
}

function serve(c: Claimed): void {
  let socket: net.Socket;
  try {
    socket = socketFor(c.fd);
  } catch (err) {
    // The fd is ours now and no handle holds it: close it here, or nobody will.
    log.error({ err, fd: c.fd }, 'cannot wrap handed-off descriptor');
    try { native?.close(c.fd); } catch { /* already gone */ }
    inbox!.finished(c);
    return;
  }
  (socket as HandedSocket)[CLAIMED] = c;
  socket.on('close', onHandedClose);
  try {
    const listener = listenerAt(rt.current(), c.slot);
    if (!listener) { socket.destroy(); return; }
    serveConnection(rt, socket, { listener, dst: c.dst, localPort: c.localPort || undefined });
  } catch (err) {
    log.error({ err }, 'connection setup failed');
    socket.destroy();
  }
}

inbox?.start(serve, (err) => log.error({ err }, 'connection hand-off failed'));

/** The start-up ping: this worker has booted and takes connections. */
export default function handle(_task: WorkerPing): Promise<void> {
  return Promise.resolve();
}
