/**
 * Worker entry (a piscina worker). Connections do not come as piscina tasks: at start the worker
 * takes a row of the hand-off queues in shared memory (src/shared/handoff.ts) and, as the main
 * thread queues connections there, claims each descriptor, wraps it in a socket and serves it.
 * The only piscina tasks are the start-up ping (this module's default export) and the log flush.
 *
 *   load ─▶ attach shared memory, claim a gauge row and a hand-off row ─▶ wait on the row
 *   woken ─▶ for each entry: claim the fd (CAS) ─▶ a socket over it ─▶ serveConnection
 *            (on an `http` or `auto` listener a native one, src/net/native-socket.ts, which becomes
 *            a net.Socket only if the connection is not plain HTTP/1.1; else a net.Socket)
 *   socket closed ─▶ release the fd slot, count the connection finished (the main thread's
 *   open-connection count and its drain read that)
 *
 * Failures of a connection are that connection's business: nothing here throws past it.
 */
import type net from 'node:net';
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
import { loadNative, nameThread, quietLoop, workerScheduling } from '../net/native';
import { socketFor } from '../net/tcp-socket';
import { downstreamSocket, isNative } from '../net/native-socket';

const data = workerData as { shared: SharedMemoryHandle; control?: string; mainBatched?: boolean };
const shared = new SharedState(data.shared);
// gauges this worker raises live in its own row: if it dies, the main thread zeroes them
const rt = new WorkerRuntime(shared, claimGaugeRow(shared, threadId), rpcChannelName(data.control ?? CONTROL_CHANNEL),
  registryChannelName(data.control ?? CONTROL_CHANNEL), peerChannelName(data.control ?? CONTROL_CHANNEL));
const native = loadNative();
quietLoop(); // no idle-time measurement on this thread's loop: a system call fewer per wake-up
// a worker serves requests: it keeps the default policy even when the main thread that started it is batch
workerScheduling(data.mainBatched === true);
nameThread('sluice-worker');
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

const inbox = HandoffInbox.claim(shared.memory, threadId);
if (!inbox) log.error({ threadId }, 'no free hand-off row: this worker gets no connections');

/** The hand-off entry a socket was made from: its one 'close' listener finds it here (no closure per connection). */
const CLAIMED = Symbol('claimed');
type HandedSocket = net.Socket & { [CLAIMED]: Claimed };

function onHandedClose(this: HandedSocket): void {
  inbox!.finished(this[CLAIMED]);
}

/** A listener whose connections are sniffed and may turn out HTTP/1.1 (an `http` or `auto` one). */
function mayBePlainHttp1(l: ListenerRuntime): boolean {
  const p = l.config.protocol;
  return p === 'http' || p === 'auto';
}

function serve(c: Claimed): void {
  let socket: net.Socket;
  const listener = listenerAt(rt.current(), c.slot);
  try {
    // a connection that may be plain HTTP/1.1 starts without a Node socket (src/net/native-socket.ts)
    socket = listener && mayBePlainHttp1(listener) ? downstreamSocket(c.fd) : socketFor(c.fd);
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
    if (!listener) { socket.destroy(); return; }
    serveConnection(rt, socket, { listener, dst: c.dst, localPort: c.localPort || undefined, peer: c.peer ?? undefined });
    // its reader is in place: what the client sent already is read now, not at the next turn
    if (isNative(socket)) socket.readNow();
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
