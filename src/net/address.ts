import { isIP } from 'node:net';

export interface HostPort {
  host: string;
  port: number;
}

/** `host:port`, `[v6]:port`; host may be a name. Throws with a message fit for a config error. */
export function parseAddress(value: string): HostPort {
  let host: string;
  let portText: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0 || value[end + 1] !== ':') throw new Error(`"${value}" is not host:port ([v6]:port for IPv6)`);
    host = value.slice(1, end);
    portText = value.slice(end + 2);
    if (isIP(host) !== 6) throw new Error(`"${host}" is not an IPv6 address`);
  } else {
    const colon = value.lastIndexOf(':');
    if (colon <= 0 || value.indexOf(':') !== colon) throw new Error(`"${value}" is not host:port ([v6]:port for IPv6)`);
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    if (!/^[a-zA-Z0-9.-]+$/.test(host)) throw new Error(`"${host}" is not a host name or IPv4 address`);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) throw new Error(`"${portText}" is not a port (0-65535)`);
  return { host, port: Number(portText) };
}

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
