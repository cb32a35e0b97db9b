/**
 * The config of the registries, as a fragment of the Sluice config schema, with its defaults,
 * the checks a schema cannot express (each with its path), and the types it gives.
 *
 * The integration spreads `registryConfigSchema` into `configSchema.properties` and adds
 * `registryConfigIssues(doc)` to the semantic checks of src/config/config.ts. Until then
 * `validateRegistryConfig` checks the two sections alone, with the same rules and messages.
 *
 * ```yaml
 * registries:
 *   - name: zk-east                     # required; stats carry it as registry="zk-east"
 *     type: zookeeper                   # required; the only type so far
 *     address: zk1:2181,zk2:2181,zk3:2181/prod   # required; port defaults to 2181, /chroot optional
 *     sessionTimeoutMs: 30000
 *     auth: { digest: "sluice:secret" } # ZooKeeper digest auth (addauth digest user:password)
 *     kinds: [dubbo, spring]            # which services this ensemble is asked for
 *     dubboRoot: /dubbo                 # Dubbo's dubbo.registry.group, as a path
 *     springRoot: /services             # spring.cloud.zookeeper.discovery.root
 * registry:
 *   subscribeAtStart: { dubbo: [com.acme.OrderService], spring: [orders] }
 *   idleUnsubscribeMs: 600000           # 0: never
 *   zeroInstanceHoldMs: 60000           # 0: an empty list applies at once
 *   firstListTimeoutMs: 5000
 *   maxServices: 10000                 # services subscribed at once; more are refused, counted
 * ```
 */
import Ajv, { type ErrorObject } from 'ajv';
import type { ConfigIssue } from '../errors';
import { normaliseChroot, parseConnectionString } from './connection-string';

export type ServiceKind = 'dubbo' | 'spring';
export const SERVICE_KINDS: readonly ServiceKind[] = ['dubbo', 'spring'];

export interface RegistryConfig {
  name: string;
  type: 'zookeeper';
  address: string;
  chroot?: string;
  sessionTimeoutMs: number;
  auth?: { digest: string };
  kinds: ServiceKind[];
  dubboRoot: string;
  springRoot: string;
}

export interface RegistrySettings {
  subscribeAtStart: { dubbo: string[]; spring: string[] };
  idleUnsubscribeMs: number;
  zeroInstanceHoldMs: number;
  firstListTimeoutMs: number;
  /** At most this many services subscribed at once; a new service past it is not subscribed (its calls go on as without a registry). */
  maxServices: number;
  /** Captured outbound calls of a discovered service are balanced over its providers; false: they go where the application sent them. */
  balanceCaptured: boolean;
  /** How the cluster of a discovered service connects and balances (as clusters[] of the config). */
  cluster: DiscoveredClusterSettings;
}

export interface DiscoveredClusterSettings {
  lbPolicy: 'round_robin' | 'least_request';
  connectTimeoutMs: number;
  maxConnectionsPerEndpoint: number;
  maxPendingRequests: number;
}

/** The two config sections the registries read; a SluiceConfig with them fits. */
export interface RegistriesConfig {
  registries: readonly RegistryConfig[];
  registry: RegistrySettings;
}

const duration = (def: number, min = 1) => ({ type: 'integer', minimum: min, maximum: 86_400_000, default: def });
const zkPath = (def: string) => ({ type: 'string', minLength: 2, default: def });
const serviceList = { type: 'array', items: { type: 'string' }, default: [] };

/** Spread into configSchema.properties. */
export const registryConfigSchema = {
  registries: {
    type: 'array',
    default: [],
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'type', 'address'],
      properties: {
        name: { type: 'string', pattern: '^[a-zA-Z0-9_.-]{1,64}$' },
        type: { enum: ['zookeeper'] },
        /** host:port[,host:port...][/chroot]; checked by registryConfigIssues. */
        address: { type: 'string' },
        /** The chroot, when it is not written at the end of the address. */
        chroot: { type: 'string' },
        /** Asked of the ensemble; the server may grant less (its min/maxSessionTimeout). */
        sessionTimeoutMs: { type: 'integer', minimum: 1000, maximum: 3_600_000, default: 30_000 },
        auth: {
          type: 'object',
          additionalProperties: false,
          required: ['digest'],
          properties: { digest: { type: 'string' } },
        },
        kinds: { type: 'array', items: { enum: ['dubbo', 'spring'] }, minItems: 1, uniqueItems: true, default: ['dubbo', 'spring'] },
        dubboRoot: zkPath('/dubbo'),
        springRoot: zkPath('/services'),
      },
    },
  },
  registry: {
    type: 'object',
    additionalProperties: false,
    default: {},
    properties: {
      /** Subscribed when Sluice starts and never unsubscribed for being idle. */
      subscribeAtStart: {
        type: 'object',
        additionalProperties: false,
        default: {},
        properties: { dubbo: serviceList, spring: serviceList },
      },
      /** A service no request used for this long is unsubscribed; 0: never. */
      idleUnsubscribeMs: duration(600_000, 0),
      /** A change that would leave a service with no endpoint waits this long before it applies; 0: at once. */
      zeroInstanceHoldMs: duration(60_000, 0),
      /** A subscription's `ready` fails if no registry answered within this. */
      firstListTimeoutMs: duration(5000),
      /**
       * Services subscribed at once (subscribeAtStart included). The data path asks for any
       * Host or interface a caller names; past this, a new name is refused at once (counted,
       * logged): captured calls go where the application sent them, explicit listeners answer
       * 503 `registry_full`. Bounded by the touch words the workers share (65535).
       */
      maxServices: { type: 'integer', minimum: 1, maximum: 65535, default: 10_000 },
      /**
       * Captured outbound calls to a service a registry lists are balanced by Sluice over its
       * providers; false: they go to the address the application chose, as without a registry
       * (a route with `passthrough: true` does the same for the services it matches).
       */
      balanceCaptured: { type: 'boolean', default: true },
      /** The cluster each discovered service gets: settings as in clusters[]. */
      cluster: {
        type: 'object',
        additionalProperties: false,
        default: {},
        properties: {
          lbPolicy: { enum: ['round_robin', 'least_request'], default: 'round_robin' },
          connectTimeoutMs: duration(5000),
          maxConnectionsPerEndpoint: { type: 'integer', minimum: 1, maximum: 65536, default: 1024 },
          maxPendingRequests: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 1024 },
        },
      },
    },
  },
} as const;

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const list = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);

/**
 * A service name as the data path sees it (a Dubbo interface, an HTTP host): one ZooKeeper
 * path segment. Returns why it is not, or undefined.
 */
export function serviceNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > 255) return 'must be 1-255 characters';
  if (name === '.' || name === '..') return 'cannot be "." or ".."';
  // eslint-disable-next-line no-control-regex
  if (/[/\s\u0000-\u001f\u007f]/.test(name)) return 'cannot contain "/", spaces or control characters';
  return undefined;
}

/** The checks the schema cannot express, on the document as the schema left it. */
export function registryConfigIssues(doc: Obj): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const names = new Set<string>();
  const kinds = new Set<string>();
  list(doc.registries).forEach((r, i) => {
    if (!isObj(r)) return;
    const p = `/registries/${i}`;
    if (typeof r.name === 'string') {
      if (names.has(r.name)) issues.push({ path: `${p}/name`, message: `duplicate registry name "${r.name}"` });
      names.add(r.name);
    }
    for (const k of Array.isArray(r.kinds) ? r.kinds : SERVICE_KINDS) kinds.add(String(k));
    let chrootInAddress = false;
    if (typeof r.address === 'string') {
      try {
        chrootInAddress = parseConnectionString(r.address).chroot !== '' || r.address.includes('/');
      } catch (err) {
        issues.push({ path: `${p}/address`, message: (err as Error).message });
      }
    }
    if (typeof r.chroot === 'string') {
      if (chrootInAddress) issues.push({ path: `${p}/chroot`, message: 'is also written at the end of the address; give it once' });
      try { normaliseChroot(r.chroot); } catch (err) { issues.push({ path: `${p}/chroot`, message: (err as Error).message }); }
    }
    for (const key of ['dubboRoot', 'springRoot'] as const) {
      if (typeof r[key] !== 'string') continue;
      try {
        if (normaliseChroot(r[key] as string) === '') issues.push({ path: `${p}/${key}`, message: 'cannot be /' });
      } catch (err) {
        issues.push({ path: `${p}/${key}`, message: (err as Error).message.replace(/^chroot/, 'path') });
      }
    }
    if (isObj(r.auth) && typeof r.auth.digest === 'string') {
      const d = r.auth.digest;
      const colon = d.indexOf(':');
      if (colon <= 0 || colon === d.length - 1) issues.push({ path: `${p}/auth/digest`, message: 'must be user:password' });
    }
  });
  const reg = doc.registry;
  if (isObj(reg) && isObj(reg.subscribeAtStart)) {
    for (const kind of SERVICE_KINDS) {
      const seen = new Set<string>();
      list(reg.subscribeAtStart[kind]).forEach((s, j) => {
        if (typeof s !== 'string') return;
        const path = `/registry/subscribeAtStart/${kind}/${j}`;
        const problem = serviceNameProblem(s);
        if (problem) issues.push({ path, message: problem });
        else if (seen.has(s)) issues.push({ path, message: `lists "${s}" twice` });
        else if (!kinds.has(kind)) issues.push({ path, message: `no registry serves ${kind} services (registries[].kinds)` });
        seen.add(s);
      });
    }
    const atStart = SERVICE_KINDS.reduce((n, k) => n + list((reg.subscribeAtStart as Obj)[k]).length, 0);
    if (typeof reg.maxServices === 'number' && atStart > reg.maxServices) {
      issues.push({ path: '/registry/maxServices', message: `is ${reg.maxServices}, but registry.subscribeAtStart lists ${atStart} services` });
    }
  }
  return issues;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
const validateSections = ajv.compile({ type: 'object', additionalProperties: true, properties: registryConfigSchema });

function issueOf(e: ErrorObject): ConfigIssue {
  if (e.keyword === 'additionalProperties') {
    return { path: `${e.instancePath}/${(e.params as { additionalProperty: string }).additionalProperty}`, message: 'is not a known field' };
  }
  if (e.keyword === 'required') return { path: `${e.instancePath}/${(e.params as { missingProperty: string }).missingProperty}`, message: 'is required' };
  if (e.keyword === 'enum') return { path: e.instancePath, message: `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}` };
  return { path: e.instancePath, message: e.message ?? 'is invalid' };
}

/**
 * The `registries` and `registry` sections of a document: defaults filled in (in place, as the
 * config loader does), every problem with its path. Other sections are left alone.
 */
export function validateRegistryConfig(doc: Obj): { config: RegistriesConfig; issues: ConfigIssue[] } {
  const issues = validateSections(doc) ? [] : (validateSections.errors ?? []).map(issueOf);
  for (const issue of registryConfigIssues(doc)) {
    if (!issues.some((s) => issue.path === s.path || issue.path.startsWith(`${s.path}/`))) issues.push(issue);
  }
  return { config: doc as unknown as RegistriesConfig, issues };
}

/** The connection string and chroot a registry config resolves to. */
export function registryConnection(c: RegistryConfig): { servers: string; chroot: string } {
  const parsed = parseConnectionString(c.address);
  const chroot = parsed.chroot || (c.chroot !== undefined ? normaliseChroot(c.chroot) : '');
  return { servers: parsed.servers.map((s) => `${s.host}:${s.port}`).join(','), chroot };
}
