/**
 * Spring Cloud Zookeeper instances: Curator's service discovery writes one node per instance,
 * `/services/<name>/<id>`, whose data is the instance as JSON:
 *
 *   { "name": "orders", "id": "3f1c…", "address": "10.0.0.9", "port": 8080, "sslPort": null,
 *     "payload": { "@class": "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
 *                  "id": "orders-1", "name": "orders", "metadata": { "zone": "a", "instance_status": "UP" } },
 *     "registrationTimeUTC": 1700000000000, "serviceType": "DYNAMIC", "enabled": true, "uriSpec": {…} }
 *
 * An instance serves when `enabled` is not false (Curator 4+) and its `instance_status`
 * metadata is absent or UP (Spring Cloud Zookeeper's OUT_OF_SERVICE, as its own load balancer
 * filters it). The plain port is the one used. An instance with only `sslPort` is skipped
 * (`unsupported`, counted): the requests Sluice balances over a Spring service are the plaintext
 * HTTP it sees (an application speaking TLS itself passes through as opaque TCP), and Sluice
 * does not originate TLS to a registry instance, so a plaintext request there could only fail.
 * Metadata become labels (numbers and booleans as text).
 */
import { hostPort } from './dubbo-url';

export interface SpringInstance {
  id: string;
  name: string;
  host: string;
  port: number;
  serving: boolean;
  labels: Record<string, string>;
}

export type SpringParse = { ok: true; value: SpringInstance } | { ok: false; reason: 'malformed' | 'unsupported'; detail: string };

const HOST = /^[A-Za-z0-9_.-]+$/;

function portOf(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 65535 ? v : undefined;
}

export function parseSpringInstance(id: string, data: Buffer | undefined): SpringParse {
  if (!data || data.length === 0) return { ok: false, reason: 'malformed', detail: 'no data' };
  let doc: unknown;
  try {
    doc = JSON.parse(data.toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed', detail: 'not JSON' };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { ok: false, reason: 'malformed', detail: 'not a JSON object' };
  const o = doc as Record<string, unknown>;
  let host = typeof o.address === 'string' ? o.address.trim() : '';
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '' || !(HOST.test(host) || /^[0-9a-fA-F:.]+$/.test(host) && host.includes(':'))) {
    return { ok: false, reason: 'malformed', detail: `address ${JSON.stringify(o.address)} is not a host` };
  }
  const port = portOf(o.port);
  const sslPort = portOf(o.sslPort);
  if (o.port != null && port === undefined) return { ok: false, reason: 'malformed', detail: `port ${JSON.stringify(o.port)} is not a port` };
  if (o.sslPort != null && sslPort === undefined) return { ok: false, reason: 'malformed', detail: `sslPort ${JSON.stringify(o.sslPort)} is not a port` };
  if (port === undefined && sslPort === undefined) return { ok: false, reason: 'malformed', detail: 'no port nor sslPort' };
  if (port === undefined) return { ok: false, reason: 'unsupported', detail: `only sslPort ${sslPort}: Sluice sends plaintext HTTP to registry instances` };
  const labels: Record<string, string> = {};
  const payload = o.payload;
  const metadata = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>).metadata : undefined;
  if (typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata)) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v === 'string') labels[k] = v;
      else if (typeof v === 'number' || typeof v === 'boolean') labels[k] = String(v);
    }
  }
  const status = labels.instance_status;
  const serving = o.enabled !== false && (status === undefined || status.toUpperCase() === 'UP');
  return {
    ok: true,
    value: {
      id: typeof o.id === 'string' ? o.id : id,
      name: typeof o.name === 'string' ? o.name : '',
      host: host.toLowerCase(),
      port: port!,
      serving,
      labels,
    },
  };
}

export function springAddress(i: SpringInstance): string {
  return hostPort(i.host, i.port);
}
