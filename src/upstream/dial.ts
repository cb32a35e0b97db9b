/**
 * The one place Sluice opens a connection to an upstream: every pool (HTTP/1, HTTP/2, Dubbo)
 * and the opaque TCP proxy dial here, so that what every upstream connection needs (mTLS
 * origination, name lookups and their failures) is written once.
 *
 * An endpoint written as a name is looked up on every dial (the system resolver, as Node's
 * net.connect does). A failed lookup is not a refused connection: the caller can tell them
 * apart (`dialFailure`), and it is logged, once per interval per name with a count.
 */
import net from 'node:net';
import { LogEvery } from '../log';
import { directRead, markDirect } from '../net/direct-read';
import type { OutboundTls, TlsRuntime } from '../tls/tls-runtime';

export type DialFailure = 'dns_failed' | 'connect_failed';

const LOOKUP_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EAI_NODATA', 'ENODATA']);

/** A connect error that is a failed name lookup. */
export function isDnsFailure(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | null;
  return !!e && (e.syscall === 'getaddrinfo' || (e.code !== undefined && LOOKUP_ERRORS.has(e.code)));
}

export function dialFailure(err: unknown): DialFailure {
  return isDnsFailure(err) ? 'dns_failed' : 'connect_failed';
}

/** Per name: lookups that failed. Bounded: names come from the config and registries, but never trust a count. */
const lookupLogs = new Map<string, LogEvery>();
const MAX_LOOKUP_LOGS = 1024;

function noteLookupFailure(host: string, err: NodeJS.ErrnoException): void {
  let l = lookupLogs.get(host);
  if (!l) {
    if (lookupLogs.size >= MAX_LOOKUP_LOGS) lookupLogs.delete(lookupLogs.keys().next().value as string);
    l = new LogEvery('upstream name lookup failed');
    lookupLogs.set(host, l);
  }
  l.note({ host, code: err.code });
}

export interface DialOptions {
  /** Keep the socket writable after the peer's FIN (opaque TCP passes half-closes on). */
  allowHalfOpen?: boolean;
  /**
   * Leave as mTLS with the thread's workload identity (src/tls/tls-runtime.ts): the socket's
   * 'connect' then comes after the handshake and the peer's identity check. `alpn`: the protocols
   * offered (h2 between sidecars for HTTP/2 pools). `group`: the pool it serves (retirement).
   */
  tls?: { runtime: TlsRuntime; spec: OutboundTls; alpn?: readonly string[]; group?: string } | null;
  /**
   * The socket (plaintext, or the TLS socket's decrypted side) reads through the thread's buffer
   * (src/net/direct-read.ts), for a caller that takes its bytes with setReadSink; until it does,
   * the socket reads as a stream.
   */
  direct?: boolean;
}

/**
 * Opens a connection to `host:port` (Nagle off). The socket is returned at once: bytes written
 * before it connects wait in it. Errors come as the socket's own 'error' events; a failed
 * lookup is also logged here.
 */
export function dial(host: string, port: number, opts: DialOptions = {}): net.Socket {
  const t = opts.tls;
  const socket = t
    ? t.runtime.connect(host, port, t.spec, t.alpn, opts.allowHalfOpen === true, t.group, opts.direct === true)
    : opts.direct === true
      ? markDirect(net.connect({ host, port, noDelay: true, allowHalfOpen: opts.allowHalfOpen === true, onread: directRead() } as net.NetConnectOpts))
      : net.connect({ host, port, noDelay: true, allowHalfOpen: opts.allowHalfOpen === true });
  if (net.isIP(host) === 0) {
    const tcp = (socket as unknown as { rawSocket?: net.Socket }).rawSocket ?? socket;
    tcp.once('lookup', (err: Error | null) => { if (err) noteLookupFailure(host, err as NodeJS.ErrnoException); });
  }
  return socket;
}
