/**
 * Opaque TCP: bytes both ways, half-closes passed on, backpressure by pipe.
 * Used for anything Sluice does not speak, and for server-speaks-first protocols.
 *
 * A client that said nothing within tcp.sniffTimeoutMs may be waiting for a server's banner
 * (MySQL, SMTP) or may only be slow. The upstream is dialled at once (`held`), but nothing flows
 * until someone speaks: the upstream first, and it is opaque TCP from then on; the client first,
 * and its bytes are recognised like any first bytes (an HTTP request or a Dubbo call meets its
 * routes, and this upstream connection is dropped unused; `release()` or `drop()`).
 */
import type net from 'node:net';
import { dial, type DialOptions } from '../../upstream/dial';
import type { Stats } from '../../stats/stats';
import type { ClusterStats } from '../../upstream/cluster';

export interface TcpTarget {
  host: string;
  port: number;
  cstats: ClusterStats;
}

export interface TcpProxyOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Hold both directions until release(); the upstream's first bytes release it themselves (then onServerFirst). */
  held?: boolean;
  onServerFirst?: () => void;
  /** Leave as mTLS (a captured destination that is a mesh peer). */
  tls?: DialOptions['tls'];
}

export interface TcpProxy {
  /** Start carrying bytes (held mode: the client spoke first, and it is opaque after all); `first`: client bytes read that could not be put back. */
  release(first?: Buffer | null): void;
  /** Give the upstream connection up before anything flowed; the client's socket is left alone. */
  drop(): void;
}

export function proxyTcp(
  down: net.Socket,
  target: TcpTarget,
  stats: Stats,
  opts: TcpProxyOptions,
  /** Bytes already read from `down` that could not be put back (it had ended). */
  early: Buffer | null = null,
): TcpProxy {
  stats.inc(target.cstats.cxTotal);
  const up = dial(target.host, target.port, { allowHalfOpen: true, tls: opts.tls });
  let connected = false;
  let held = opts.held === true;
  let flowing = false;
  let dropped = false;
  const timer = setTimeout(() => { if (!connected) up.destroy(new Error('connect timeout')); }, opts.connectTimeoutMs);
  const closeBoth = () => { down.destroy(); up.destroy(); };
  const flow = () => {
    if (flowing || dropped || !connected || held) return;
    flowing = true;
    if (early) up.write(early);
    down.pipe(up);
    up.pipe(down);
    down.resume();
  };
  const onServerFirst = (d: Buffer) => {
    if (!held || dropped) return;
    held = false;
    opts.onServerFirst?.();
    up.pause();
    up.unshift(d);
    flow();
  };
  up.once('connect', () => {
    connected = true;
    clearTimeout(timer);
    stats.inc(target.cstats.cxActive);
    if (held) up.once('data', onServerFirst);
    flow();
  });
  up.on('error', () => {
    if (!connected) stats.inc(target.cstats.cxConnectFail);
    if (!dropped) closeBoth();
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
    if (dropped) return;
    // held: the upstream gave up before anyone spoke; the client's connection goes with it
    onClose(up, down, hadError || !connected || held);
  });
  const onDownError = () => { if (!dropped) closeBoth(); };
  const onDownClose = (hadError: boolean) => { if (!dropped) onClose(down, up, hadError); };
  const onIdle = () => { if (!dropped) closeBoth(); };
  down.on('error', onDownError);
  down.on('close', onDownClose);
  down.setTimeout(opts.idleTimeoutMs, onIdle);
  return {
    release: (first) => {
      if (!held || dropped) return;
      held = false;
      if (first) early = early ? Buffer.concat([early, first]) : first;
      up.removeListener('data', onServerFirst);
      flow();
    },
    drop: () => {
      if (dropped) return;
      dropped = true;
      clearTimeout(timer);
      down.removeListener('error', onDownError);
      down.removeListener('close', onDownClose);
      down.setTimeout(0);
      up.destroy();
    },
  };
}
