/**
 * The protocol-neutral view of a request that every filter and route sees.
 * Codecs fill it; nothing here touches a socket.
 */
import type { Direction } from '../config/config';
import type { OriginalDst } from '../shared/messages';

export type RequestProtocol = 'http1' | 'http2' | 'grpc' | 'dubbo';

export interface Peer {
  address: string;
  port: number;
  /**
   * The caller's verified identity (the SPIFFE ID of its mTLS certificate, without the
   * `spiffe://` scheme: `cluster.local/ns/<ns>/sa/<sa>`); absent on plaintext connections.
   */
  principal?: string;
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
  /** HTTP and gRPC: the host the request names (Host / :authority, canonical, without the port); Dubbo: ''. */
  readonly authority: string;
  /** HTTP: the request method; gRPC and Dubbo: the RPC method. */
  readonly method: string;
  /** HTTP: the path without query; gRPC: /package.Service/Method. */
  readonly path: string;
  /** A request header (HTTP) or attachment (Dubbo), by lower-case name. */
  header(name: string): string | undefined;
  /**
   * Every value of a request header, in the order received (empty when absent): a field sent more
   * than once has several (Dubbo attachments have at most one). Policy that must not be walked
   * around by repeating a field (authorization) looks at each.
   */
  headerValues(name: string): readonly string[];
}
