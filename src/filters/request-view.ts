/**
 * The protocol-neutral view of a request that every filter and route sees.
 * Codecs fill it; nothing here touches a socket.
 */
import type { Direction } from '../config/config';
import type { OriginalDst } from '../workers/messages';

export type RequestProtocol = 'http1' | 'http2' | 'grpc' | 'dubbo';

export interface Peer {
  address: string;
  port: number;
  /** mTLS identity, once TLS termination lands. */
  identity?: string;
  app?: string;
}

export interface RequestView {
  readonly protocol: RequestProtocol;
  readonly direction: Direction;
  readonly listener: string;
  readonly source: Peer;
  /** The connection's original destination; null when it was not redirected. */
  readonly destination: OriginalDst | null;
  /** HTTP: Host / :authority without the port; gRPC: package.Service; Dubbo: interface. */
  readonly service: string;
  /** HTTP: the request method; gRPC and Dubbo: the RPC method. */
  readonly method: string;
  /** HTTP: the path without query; gRPC: /package.Service/Method. */
  readonly path: string;
  /** A request header (HTTP) or attachment (Dubbo), by lower-case name. */
  header(name: string): string | undefined;
}

/** Host header value without port, lower case; IPv6 literals lose their brackets. */
export function hostOnly(authority: string): string {
  if (authority.charCodeAt(0) === 91 /* [ */) {
    const end = authority.indexOf(']');
    return (end > 0 ? authority.slice(1, end) : authority).toLowerCase();
  }
  const colon = authority.indexOf(':');
  return (colon < 0 ? authority : authority.slice(0, colon)).toLowerCase();
}

/** Path part of a request target (origin-form or absolute-form), without the query. */
export function pathOf(target: string): string {
  let start = 0;
  if (target.charCodeAt(0) !== 47 /* / */) {
    const scheme = target.indexOf('://');
    if (scheme > 0) {
      // the authority ends at the first '/', '?' or '#'; no path after it means '/'
      let i = scheme + 3;
      for (; i < target.length; i++) {
        const c = target.charCodeAt(i);
        if (c === 47 || c === 63 /* ? */ || c === 35 /* # */) break;
      }
      if (i >= target.length || target.charCodeAt(i) !== 47) return '/';
      start = i;
    }
  }
  const q = target.indexOf('?', start);
  return q < 0 ? (start === 0 ? target : target.slice(start)) : target.slice(start, q);
}
