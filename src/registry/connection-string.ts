/**
 * A ZooKeeper connection string, as every ZooKeeper client writes it:
 *
 *   host:port[,host:port...][/chroot]        e.g. zk1:2181,zk2:2181,zk3:2181/prod
 *
 * The port defaults to 2181. The chroot, if any, is a ZooKeeper path every other path is
 * relative to. IPv6 literals are refused: the client library splits a server on ':' and would
 * dial the wrong address; use a host name for an IPv6 ensemble.
 */

export interface ZkServer {
  host: string;
  port: number;
}

export interface ZkConnectionString {
  servers: ZkServer[];
  /** '' for none, else '/a/b' (no trailing slash). */
  chroot: string;
}

const HOST = /^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$/;
const IPV4ISH = /^[0-9.]+$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Throws with a message fit for a config error (it names what is wrong, not where). */
export function parseConnectionString(value: string): ZkConnectionString {
  const text = value.trim();
  if (text === '') throw new Error('is empty (host:port[,host:port...][/chroot])');
  const slash = text.indexOf('/');
  const hostList = slash < 0 ? text : text.slice(0, slash);
  const chroot = slash < 0 ? '' : normaliseChroot(text.slice(slash));
  const servers: ZkServer[] = [];
  for (const raw of hostList.split(',')) {
    const item = raw.trim();
    if (item === '') throw new Error(`"${value}" has an empty server (a stray comma?)`);
    if (item.startsWith('[') || item.split(':').length > 2) {
      throw new Error(`"${item}": IPv6 literals are not supported in a ZooKeeper address; use a host name`);
    }
    const colon = item.indexOf(':');
    const host = colon < 0 ? item : item.slice(0, colon);
    const portText = colon < 0 ? '2181' : item.slice(colon + 1);
    if (IPV4ISH.test(host) ? !IPV4.test(host) : !HOST.test(host)) throw new Error(`"${host}" is not a host name or IPv4 address`);
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new Error(`"${portText}" is not a port (1-65535)`);
    }
    servers.push({ host: host.toLowerCase(), port: Number(portText) });
  }
  const seen = new Set<string>();
  for (const s of servers) {
    const key = `${s.host}:${s.port}`;
    if (seen.has(key)) throw new Error(`lists ${key} twice`);
    seen.add(key);
  }
  return { servers, chroot };
}

/** '/a/b/' → '/a/b'; '/' → ''. Throws for what ZooKeeper would refuse as a path. */
export function normaliseChroot(path: string): string {
  if (!path.startsWith('/')) throw new Error(`chroot "${path}" must start with /`);
  const p = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  if (p === '/') return '';
  for (const part of p.slice(1).split('/')) {
    if (part === '' || part === '.' || part === '..') throw new Error(`chroot "${path}" has an empty, "." or ".." segment`);
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f-\u009f]/.test(part)) throw new Error(`chroot "${path}" has a control character`);
  }
  return p;
}

/** The string the client library takes. */
export function formatConnectionString(c: ZkConnectionString): string {
  return c.servers.map((s) => `${s.host}:${s.port}`).join(',') + c.chroot;
}
