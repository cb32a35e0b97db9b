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
   * The socket's bytes (with `tls`, once decrypted) come to `onRead` rather than as 'data'
   * events. Each read lands in one buffer the thread's upstream sockets share and
   * `onRead` is given a copy of its own (which it may keep), with no `Readable` stream in
   * between: no per-read allocation of a 64 KiB buffer, no push, no tick. The socket still
   * emits 'end', 'error' and 'close', and pause()/resume() still stop and start reading.
   */
  onRead?: (bytes: Buffer) => void;
}

/** Where upstream reads land (see DialOptions.onRead): one per thread, copied out at once. */
let readBuffer: Buffer | null = null;
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Opens a connection to `host:port` (Nagle off). The socket is returned at once: bytes written
 * before it connects wait in it. Errors come as the socket's own 'error' events; a failed
 * lookup is also logged here.
 */
export function dial(host: string, port: number, opts: DialOptions = {}): net.Socket {
  const t = opts.tls;
  const onread = opts.onRead ? userRead(opts.onRead) : undefined;
  const socket = t
    ? t.runtime.connect(host, port, t.spec, t.alpn, opts.allowHalfOpen === true, t.group, onread)
    : net.connect({ host, port, noDelay: true, allowHalfOpen: opts.allowHalfOpen === true, onread });
  if (net.isIP(host) === 0) {
    const tcp = (socket as unknown as { rawSocket?: net.Socket }).rawSocket ?? socket;
    tcp.once('lookup', (err: Error | null) => { if (err) noteLookupFailure(host, err as NodeJS.ErrnoException); });
  }
  return socket;
}

function userRead(onRead: (bytes: Buffer) => void): net.OnReadOpts {
  const buffer = (readBuffer ??= Buffer.allocUnsafe(READ_BUFFER_BYTES));
  return {
    buffer,
    callback(n: number, buf: Uint8Array): boolean {
      const bytes = Buffer.allocUnsafe(n);
      bytes.set(n === buf.length ? buf : buf.subarray(0, n));
      onRead(bytes);
      return true;
    },
  };
}
