/**
 * Opaque TCP: bytes both ways, half-closes passed on, backpressure by pipe.
 * Used for anything Sluice does not speak, and for server-speaks-first protocols.
 */
import type net from 'node:net';
import { dial } from '../../upstream/dial';
import type { Stats } from '../../stats/stats';
import type { ClusterStats } from '../../upstream/cluster';

export interface TcpTarget {
  host: string;
  port: number;
  cstats: ClusterStats;
}

export function proxyTcp(
  down: net.Socket,
  target: TcpTarget,
  stats: Stats,
  opts: { connectTimeoutMs: number; idleTimeoutMs: number },
  /** Bytes already read from `down` that could not be put back (it had ended). */
  early: Buffer | null = null,
): void {
  stats.inc(target.cstats.cxTotal);
  const up = dial(target.host, target.port, { allowHalfOpen: true });
  let connected = false;
  const timer = setTimeout(() => { if (!connected) up.destroy(new Error('connect timeout')); }, opts.connectTimeoutMs);
  const closeBoth = () => { down.destroy(); up.destroy(); };
  up.once('connect', () => {
    connected = true;
    clearTimeout(timer);
    stats.inc(target.cstats.cxActive);
    if (early) up.write(early);
    down.pipe(up);
    up.pipe(down);
    down.resume();
  });
  up.on('error', () => {
    if (!connected) stats.inc(target.cstats.cxConnectFail);
    closeBoth();
  });
  // A side that closed cleanly (FIN after all its data) has had its end passed on by
  // pipe(); once the other side's writes flush there is nothing left to carry.
  // A side that closed abruptly takes the other with it, so the peer sees a reset.
  const onClose = (closed: net.Socket, other: net.Socket, hadError: boolean) => {
    if (other.destroyed) return;
    if (hadError || !closed.readableEnded) { other.destroy(); return; }
    if (other.writableFinished) other.destroy();
    else other.once('finish', () => other.destroy());
  };
  up.on('close', (hadError: boolean) => {
    clearTimeout(timer);
    if (connected) stats.dec(target.cstats.cxActive);
    onClose(up, down, hadError || !connected);
  });
  down.on('error', closeBoth);
  down.on('close', (hadError: boolean) => onClose(down, up, hadError));
  down.setTimeout(opts.idleTimeoutMs, closeBoth);
}
