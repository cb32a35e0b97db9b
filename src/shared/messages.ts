/**
 * Everything that crosses between the main thread and the workers, typed in one place.
 *
 *   main ──connections─────▶ worker   (shared-memory queues in batches, src/shared/handoff.ts)
 *   main ──WorkerPing──────▶ worker   (piscina task at start: resolves once the worker has booted)
 *   main ──ConfigSnapshot──▶ all      (shared-memory mailbox, read by seq number)
 *   main ──ControlMessage──▶ all      (BroadcastChannel: drain, close-idle)
 */
import type { SluiceConfig } from '../config/config';

export interface OriginalDst {
  address: string;
  port: number;
}

/** The piscina task a worker answers once it has booted (its hand-off queue is then taken). */
export interface WorkerPing {
  ping: true;
}

export interface ConfigSnapshot {
  version: number;
  config: SluiceConfig;
  /** Stat series, index = shared counter slot. */
  statKeys: string[];
}

/**
 * `drain`: tell every client to go elsewhere (HTTP/1 `connection: close` on the next response,
 * HTTP/2 GOAWAY, Dubbo READONLY) while still serving; `close-idle`: the drain period is over,
 * connections with nothing in flight close. `stall` (tests, debug endpoints only): the worker with
 * that threadId blocks its event loop for `ms`, as a worker stuck in a long computation would, and
 * says `stalling` first. `config`: a new config was published; workers load it now rather than at their
 * next connection (a port that became strict retires its plaintext connections).
 */
export type ControlMessage = { type: 'drain' } | { type: 'close-idle' } | { type: 'config' }
  | { type: 'stall'; threadId: number; ms: number } | { type: 'stalling'; threadId: number };

export const CONTROL_CHANNEL = 'sluice-control';

/** Per-method RPC stats deltas travel on a channel of their own, beside the control channel. */
export function rpcChannelName(control: string): string {
  return `${control}:rpc`;
}
