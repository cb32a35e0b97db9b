/**
 * Everything that crosses between the main thread and the workers, typed in one place.
 *
 *   main ──connections─────▶ worker   (shared-memory queues in batches, src/shared/handoff.ts)
 *   main ──WorkerPing──────▶ worker   (piscina task at start: resolves once the worker has booted)
 *   main ──ConfigSnapshot──▶ all      (shared-memory mailbox, read by seq number)
 *   main ──ControlMessage──▶ all      (BroadcastChannel: drain, close-idle, endpoints)
 *   main ──endpoint lists──▶ all      (shared-memory mailbox, src/upstream/endpoint-directory.ts)
 *   worker ─DiscoveryRequest─▶ main   (BroadcastChannel: subscribe a service a request needs)
 *   main ─DiscoveryRefusal─▶ workers  (same channel: it will not be subscribed)
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
  /** The config's version: the same when only statKeys grew (a worker then keeps its routes). */
  version: number;
  config: SluiceConfig;
  /** Stat series, index = shared counter slot. */
  statKeys: string[];
  /** What filters' main-thread parts publish with the config (shared slots their rules own), by filter name. */
  filterData?: Record<string, unknown>;
}

/**
 * `drain`: tell every client to go elsewhere (HTTP/1 `connection: close` on the next response,
 * HTTP/2 GOAWAY, Dubbo READONLY) while still serving; `close-idle`: the drain period is over,
 * connections with nothing in flight close. `stall` (tests, debug endpoints only): the worker with
 * that threadId blocks its event loop for `ms`, as a worker stuck in a long computation would, and
 * says `stalling` first. `endpoints`: the endpoint mailbox has lists that requests wait for (a
 * service's first list from a registry); a worker reads it now rather than at its next request.
 * `config`: a new config was published; workers load it now rather than at their next connection
 * (a port that became strict retires its plaintext connections). `identity`: a new workload
 * identity was published; workers build it now and retire connections made with the old one
 * where tls.retirement asks for it.
 */
export type ControlMessage = { type: 'drain' } | { type: 'close-idle' } | { type: 'endpoints' } | { type: 'config' } | { type: 'identity' }
  | { type: 'stall'; threadId: number; ms: number } | { type: 'stalling'; threadId: number };

/**
 * A worker asks the main thread to subscribe a service a request needs (src/upstream/discovered.ts):
 * a Dubbo interface, or the host of an HTTP request (a Spring Cloud service name). The answer is
 * the service's list in the endpoint mailbox, announced by a ControlMessage `endpoints`.
 */
export interface DiscoveryRequest {
  type: 'subscribe';
  kind: 'dubbo' | 'spring';
  service: string;
}

/** main → workers on the same channel: a service that will not be subscribed; its held requests go on now. */
export interface DiscoveryRefusal {
  type: 'refused';
  kind: 'dubbo' | 'spring';
  service: string;
  /** full: registry.maxServices reached (captured calls go where the application sent them); not_a_service: no registry can list it */
  why: 'full' | 'not_a_service';
}

/** Discovery requests travel on a channel of their own, beside the control channel. */
export function registryChannelName(control: string): string {
  return `${control}:registry`;
}

export const CONTROL_CHANNEL = 'sluice-control';

/** Inbound traffic by the caller's identity and plaintext callers (src/stats/peer-stats.ts) travel on a channel of their own. */
export function peerChannelName(control: string): string {
  return `${control}:peers`;
}

/** Per-method RPC stats deltas travel on a channel of their own, beside the control channel. */
export function rpcChannelName(control: string): string {
  return `${control}:rpc`;
}
