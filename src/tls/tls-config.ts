/**
 * The `tls` section of the config, `listeners[].tls` and `clusters[].tls`: schema, types, and
 * the checks the schema cannot express. Names fixed by the issue that introduced them:
 *
 *   tls:
 *     certFile, keyFile, caFile          the workload identity (watched; or pushed by POST /certs)
 *     retirement: { onCertificateChange, onTrustBundleChange, timeoutMs }
 *     inbound:  { mode: strict | permissive | disabled, ports: { <port>: mode } }
 *     outbound: { mode: mutual | disabled, destinations: [ CIDR | { cidr, ports } ], principals }
 *   listeners[].tls: { mode }            this inbound listener's mode (ports still override)
 *   clusters[].tls:  { mode: mutual, principals: [...] }
 */
import { BlockList, isIP } from 'node:net';
import tls from 'node:tls';
import type { ConfigIssue } from '../errors';

export type InboundMode = 'strict' | 'permissive' | 'disabled';
const MODES = ['strict', 'permissive', 'disabled'];

/** Principal patterns: exact, `prefix*`, `*suffix`, or `*`. */
const principals = { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 };

export const tlsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    /** PEM: the workload certificate first, then any intermediates. Watched, with keyFile and caFile. */
    certFile: { type: 'string', minLength: 1 },
    keyFile: { type: 'string', minLength: 1 },
    /** PEM trust bundle: one or more CA certificates (the old and the new CA during a CA rotation). */
    caFile: { type: 'string', minLength: 1 },
    /** How often the three files are looked at (a Kubernetes secret's atomic symlink swap included). */
    watchIntervalMs: { type: 'integer', minimum: 50, maximum: 3_600_000, default: 1000 },
    /**
     * The cipher suites offered and accepted, OpenSSL names (TLS 1.3: TLS_AES_128_GCM_SHA256, ...).
     * Each must be one this runtime's OpenSSL can negotiate, or the config is refused: a suite
     * OpenSSL does not know (TLS_SM4_GCM_SM3 on Node 20) would otherwise be dropped silently and
     * another one negotiated. Default: OpenSSL's.
     */
    cipherSuites: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1, uniqueItems: true },
    /** A TLS handshake (inbound or outbound) that takes longer is cut off. */
    handshakeTimeoutMs: { type: 'integer', minimum: 1, maximum: 600_000, default: 10_000 },
    /**
     * Connections made under an old policy: which changes retire them (gracefully: HTTP/1
     * `connection: close` after the response in flight, HTTP/2 GOAWAY, Dubbo READONLY; upstream
     * pools drained), and how long they get before they are closed.
     */
    retirement: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** A new workload certificate (or key) retires connections made with the old one. */
        onCertificateChange: { type: 'boolean', default: false },
        /** A new trust bundle retires connections whose peers were checked against the old one. */
        onTrustBundleChange: { type: 'boolean', default: false },
        /** The cap: a retired connection still open this long after its retirement is closed. */
        timeoutMs: { type: 'integer', minimum: 0, maximum: 3_600_000, default: 30_000 },
      },
    },
    /** Inbound traffic by the caller's identity (GET /stats) and the plaintext callers seen recently (GET /plaintext-callers). */
    peerStats: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** Principals with series of their own; the others are counted as principal="other". */
        topPrincipals: { type: 'integer', minimum: 0, maximum: 1000, default: 20 },
        /** Plaintext callers (source addresses) remembered, the least recently seen forgotten first. */
        plaintextCallers: { type: 'integer', minimum: 0, maximum: 100_000, default: 256 },
      },
    },
    inbound: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        mode: { enum: MODES, default: 'permissive' },
        /** By destination port (the original destination, else the listener's port): that port's mode. */
        ports: { type: 'object', additionalProperties: { enum: MODES }, default: {} },
      },
    },
    outbound: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        /** `mutual`: captured connections to `destinations` leave as mTLS. */
        mode: { enum: ['mutual', 'disabled'], default: 'disabled' },
        destinations: {
          type: 'array',
          default: [],
          items: {
            anyOf: [
              { type: 'string' },
              {
                type: 'object',
                additionalProperties: false,
                required: ['cidr'],
                properties: {
                  cidr: { type: 'string' },
                  ports: { type: 'array', items: { type: 'integer', minimum: 1, maximum: 65535 }, minItems: 1, uniqueItems: true },
                },
              },
            ],
          },
        },
        /** The SPIFFE IDs (without spiffe://) a captured peer may have; any identity of the bundle when absent. */
        principals,
      },
    },
  },
} as const;

export const listenerTlsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['mode'],
  properties: { mode: { enum: MODES } },
} as const;

export const clusterTlsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['mode'],
  properties: {
    mode: { enum: ['mutual', 'disabled'] },
    /** The SPIFFE IDs (without spiffe://) the cluster's endpoints may have; any identity of the bundle when absent. */
    principals,
  },
} as const;

export type Destination = string | { cidr: string; ports?: number[] };

export interface TlsConfig {
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  watchIntervalMs: number;
  handshakeTimeoutMs: number;
  cipherSuites?: string[];
  retirement: { onCertificateChange: boolean; onTrustBundleChange: boolean; timeoutMs: number };
  peerStats: { topPrincipals: number; plaintextCallers: number };
  inbound: { mode: InboundMode; ports: Record<string, InboundMode> };
  outbound: { mode: 'mutual' | 'disabled'; destinations: Destination[]; principals?: string[] };
}

export interface ClusterTls { mode: 'mutual' | 'disabled'; principals?: string[] }

/**
 * Why this runtime cannot negotiate a cipher suite, or null when it can. Each suite is tried
 * alone in a secure context, so a list never hides one OpenSSL would drop.
 */
export function cipherSuiteProblem(name: string): string | null {
  if (!/^[A-Za-z0-9_-]+$/.test(name)) return `"${name}" is not one cipher suite name (list each suite on its own)`;
  try {
    tls.createSecureContext({ ciphers: name });
    return null;
  } catch {
    const sm = /SM4|SM3|SM2/i.test(name)
      ? ` (national cryptography: this runtime's OpenSSL ${process.versions.openssl} has SM3 and SM4 as algorithms but no TLS suite using them, and cannot load SM2 certificates; see docs/configuration.md#national-cryptography-sm2-sm3-sm4)`
      : '';
    return `"${name}" is not a cipher suite this runtime's OpenSSL ${process.versions.openssl} can negotiate${sm}`;
  }
}

/** `10.0.0.0/8`, `10.1.2.3` (a /32), `fd00::/8`: address and prefix, or why not. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | string {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const v = isIP(address);
  if (v === 0) return `"${text}" is not an address range (e.g. 10.0.0.0/8 or fd00::/8)`;
  const max = v === 4 ? 32 : 128;
  const p = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(p) || Number(p) > max) return `"${text}": the prefix length must be 0 to ${max}`;
  return { address, prefix: Number(p), family: v === 4 ? 'ipv4' : 'ipv6' };
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Checks of `tls`, `listeners[].tls` and `clusters[].tls` the schema cannot make. */
export function tlsIssues(c: Record<string, unknown>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const t = c.tls;
  if (isObj(t)) {
    const files = ['certFile', 'keyFile', 'caFile'].filter((k) => t[k] !== undefined);
    if (files.length > 0 && files.length < 3) {
      for (const k of ['certFile', 'keyFile', 'caFile']) {
        if (t[k] === undefined) issues.push({ path: `/tls/${k}`, message: `is required with ${files.join(' and ')} (the three files name one identity)` });
      }
    }
    if (Array.isArray(t.cipherSuites)) {
      t.cipherSuites.forEach((name, i) => {
        if (typeof name !== 'string' || name === '') return;
        const why = cipherSuiteProblem(name);
        if (why) issues.push({ path: `/tls/cipherSuites/${i}`, message: why });
      });
    }
    if (isObj(t.inbound) && isObj(t.inbound.ports)) {
      for (const port of Object.keys(t.inbound.ports)) {
        if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
          issues.push({ path: `/tls/inbound/ports/${port}`, message: 'is not a port (1-65535)' });
        }
      }
    }
    if (isObj(t.outbound) && Array.isArray(t.outbound.destinations)) {
      t.outbound.destinations.forEach((d, i) => {
        const text = typeof d === 'string' ? d : isObj(d) && typeof d.cidr === 'string' ? d.cidr : undefined;
        if (text === undefined) return;
        const r = parseCidr(text);
        if (typeof r === 'string') issues.push({ path: `/tls/outbound/destinations/${i}${typeof d === 'string' ? '' : '/cidr'}`, message: r });
      });
      if (t.outbound.mode === 'mutual' && t.outbound.destinations.length === 0) {
        issues.push({ path: '/tls/outbound/destinations', message: 'mode mutual needs the destinations that are mesh peers' });
      }
    }
  }
  const hasTls = isObj(t);
  if (Array.isArray(c.listeners)) {
    c.listeners.forEach((l, i) => {
      if (!isObj(l) || !isObj(l.tls)) return;
      if (l.direction !== 'inbound') issues.push({ path: `/listeners/${i}/tls`, message: 'only inbound listeners terminate mTLS' });
      else if (!hasTls && l.tls.mode !== 'disabled') issues.push({ path: `/listeners/${i}/tls`, message: 'needs the tls section (the identity to serve)' });
      if (l.protocol === 'tcp' && l.tls.mode === 'strict') issues.push({ path: `/listeners/${i}/tls/mode`, message: 'strict needs protocol detection (protocol: tcp never looks at the bytes)' });
    });
  }
  if (Array.isArray(c.clusters)) {
    c.clusters.forEach((cl, i) => {
      if (isObj(cl) && isObj(cl.tls) && cl.tls.mode === 'mutual' && !hasTls) {
        issues.push({ path: `/clusters/${i}/tls`, message: 'mode mutual needs the tls section (the identity to present)' });
      }
    });
  }
  return issues;
}

/** Compiled outbound destinations: does a captured connection to this address and port go out as mTLS? */
export class MeshDestinations {
  private readonly rules: Array<{ list: BlockList; ports: ReadonlySet<number> | null }> = [];

  constructor(list: readonly Destination[]) {
    for (const d of list) {
      const r = parseCidr(typeof d === 'string' ? d : d.cidr);
      if (typeof r === 'string') continue; // refused by tlsIssues
      const bl = new BlockList();
      bl.addSubnet(r.address, r.prefix, r.family);
      this.rules.push({ list: bl, ports: typeof d === 'string' || !d.ports ? null : new Set(d.ports) });
    }
  }

  matches(address: string, port: number): boolean {
    const v = isIP(address);
    if (v === 0) return false;
    const family = v === 4 ? 'ipv4' : 'ipv6';
    for (const r of this.rules) {
      if (r.ports && !r.ports.has(port)) continue;
      if (r.list.check(address, family)) return true;
    }
    return false;
  }
}
