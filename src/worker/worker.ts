/**
 * Piscina worker entry. Each task is one connection: claim the descriptor the
 * main thread offered, wrap it in a socket, serve it, and resolve when it
 * closes. Once the fd is ours the task never rejects: failures of a connection
 * are that connection's business.
 */
import net from 'node:net';
import { BroadcastChannel, threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import { SharedState } from '../shared/shared-state';
import type { SharedMemoryHandle } from '../shared/shared-memory';
import { FdOwnership } from '../shared/fd-ownership';
import { claimGaugeRow } from '../stats/stats';
import { CONTROL_CHANNEL, rpcChannelName, type ConnectionTask, type ControlMessage } from '../shared/messages';
import { WorkerRuntime } from './runtime';
import { serveConnection } from './connection';
import { log } from '../log';
import { loadNative } from '../net/native';

const data = workerData as { shared: SharedMemoryHandle; control?: string };
const shared = new SharedState(data.shared);
const fds = new FdOwnership(shared.memory);
// gauges this worker raises live in its own row: if it dies, the main thread zeroes them
const rt = new WorkerRuntime(shared, claimGaugeRow(shared, threadId), rpcChannelName(data.control ?? CONTROL_CHANNEL));
const native = loadNative();
if (shared.draining) rt.draining = true;
if (shared.closingIdle) rt.closingIdle = true;

const control = new BroadcastChannel(data.control ?? CONTROL_CHANNEL);
control.onmessage = (ev) => {
  const msg = (ev as unknown as { data: ControlMessage }).data;
  if (msg.type === 'drain') rt.drain();
  else if (msg.type === 'close-idle') rt.closeIdle();
};
// the channel must not keep an otherwise idle worker alive
(control as unknown as { unref(): void }).unref();

export default function handle(task: ConnectionTask): Promise<void> {
  if (task.fd < 0) return Promise.resolve(); // start-up ping: this worker has booted
  if (!fds.claim(task.fd, task.token)) return Promise.resolve(); // main took it back
  return new Promise<void>((resolve) => {
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd: task.fd, readable: true, writable: true, allowHalfOpen: true });
    } catch (err) {
      // The fd is ours now and no handle holds it: close it here, or nobody will.
      log.error({ err, fd: task.fd }, 'cannot wrap handed-off descriptor');
      try { native?.close(task.fd); } catch { /* already gone */ }
      fds.release(task.fd, task.token);
      resolve();
      return;
    }
    socket.once('close', () => {
      fds.release(task.fd, task.token);
      resolve();
    });
    try {
      const cfg = rt.current();
      const listener = cfg.listeners.get(task.listener);
      if (!listener) { socket.destroy(); return; }
      serveConnection(rt, socket, { listener, dst: task.dst });
    } catch (err) {
      log.error({ err }, 'connection setup failed');
      socket.destroy();
    }
  });
}
