/**
 * Everything that crosses between the main thread and the workers, typed in one place.
 *
 *   main ──ConnectionTask──▶ worker   (piscina task; resolves when the connection closes)
 *   main ──ConfigSnapshot──▶ all      (shared-memory mailbox, read by seq number)
 *   main ──ControlMessage──▶ all      (BroadcastChannel: drain, close-idle)
 */
import type { SluiceConfig } from '../config/config';

export interface OriginalDst {
  address: string;
  port: number;
}

export interface ConnectionTask {
  fd: number;
  /** Identifies this hand-off in the fd ownership slot. */
  token: number;
  listener: string;
  /** Recovered original destination, or null when the connection was not redirected. */
  dst: OriginalDst | null;
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
 * connections with nothing in flight close.
 */
export type ControlMessage = { type: 'drain' } | { type: 'close-idle' };

export const CONTROL_CHANNEL = 'sluice-control';

/** Per-method RPC stats deltas travel on a channel of their own, beside the control channel. */
export function rpcChannelName(control: string): string {
  return `${control}:rpc`;
}
