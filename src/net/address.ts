import { isIP } from 'node:net';

export interface HostPort {
  host: string;
  port: number;
}

/**
 * `host:port`, `[v6]:port`; host may be a name. Throws with a message fit for a config error.
 * Host names are returned in lower case, IPv6 literals in their canonical form, so that two
 * spellings of one address compare equal.
 */
export function parseAddress(value: string): HostPort {
  let host: string;
  let portText: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0 || value[end + 1] !== ':') throw new Error(`"${value}" is not host:port ([v6]:port for IPv6)`);
    host = value.slice(1, end);
    portText = value.slice(end + 2);
    if (isIP(host) !== 6) throw new Error(`"${host}" is not an IPv6 address`);
    host = canonicalIPv6(host);
  } else {
    const colon = value.lastIndexOf(':');
    if (colon < 0) throw new Error(`"${value}" has no port (host:port, or [v6]:port for IPv6)`);
    if (value.indexOf(':') !== colon) throw new Error(`"${value}" is not host:port (write IPv6 as [v6]:port)`);
    if (colon === 0) throw new Error(`"${value}" has no host`);
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    checkHost(host);
    host = host.toLowerCase();
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) throw new Error(`"${portText}" is not a port (0-65535)`);
  return { host, port: Number(portText) };
}

/** A host without port: IPv4, IPv6 (bare, no brackets) or a DNS name. Throws like parseAddress. */
export function parseHost(value: string): string {
  if (isIP(value) === 6) return canonicalIPv6(value);
  checkHost(value);
  return value.toLowerCase();
}

function checkHost(host: string): void {
  if (!/^[a-zA-Z0-9_.-]+$/.test(host) || host.length > 253) throw new Error(`"${host}" is not a host name or IPv4 address`);
  // all digits and dots is meant as IPv4: 300.1.2.3 or 10.1 would otherwise pass as a "name"
  if (/^[\d.]+$/.test(host) && isIP(host) !== 4) throw new Error(`"${host}" is not an IPv4 address`);
}

function canonicalIPv6(host: string): string {
  const zone = host.indexOf('%');
  if (zone >= 0) return host.slice(0, zone).toLowerCase() + host.slice(zone);
  try {
    return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase();
  }
}

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
