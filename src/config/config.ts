/**
 * Config: YAML in, validated against the schema (every error with its path),
 * checked for cross references, defaults filled, frozen.
 */
import { readFileSync } from 'node:fs';
import Ajv, { type ErrorObject } from 'ajv';
import YAML from 'yaml';
import { configSchema, endpointList } from './schema';
import { ConfigError, type ConfigIssue } from '../errors';
import { isIP } from 'node:net';
import { parseAddress, parseHost, type HostPort } from '../net/address';
import { DEFAULT_FILTERS, FILTER_MODULES } from '../filters';
import type { MirrorConfig } from '../filters/mirror';
import type { RetryConfig } from '../filters/retry';
import type { AuthorizationRule } from '../filters/authz';
import type { RateLimitRule } from '../filters/ratelimit';
import type { AdaptiveLimitConfig } from '../filters/adaptive';
import { checkMatch } from '../filters/route-checks';
import { registryConfigIssues, type RegistryConfig, type RegistrySettings } from '../registry/config';
import { tlsIssues, type ClusterTls, type InboundMode, type TlsConfig } from '../tls/tls-config';
import { circuitBreakerIssues, fallbackIssues, type CircuitBreakerConfig, type FallbackConfig } from '../protection/config';
import { alarmIssues, type AlarmConfig } from '../alarms/config';

export type Direction = 'inbound' | 'outbound';
export type StringMatch = { exact: string } | { prefix: string } | { regex: string };
export type HeaderMatch = string | StringMatch | { present: boolean };

export interface ListenerConfig {
  name: string;
  address: string;
  direction: Direction;
  capture: boolean;
  cluster?: string;
  protocol: 'auto' | 'http' | 'dubbo' | 'tcp';
  opaque: 'passthrough' | 'refuse';
  tls?: { mode: InboundMode };
}

/** Filters add sections of their own to a route (`fault`, ...) and to its action (`split`, ...); each filter reads its own. */
export interface RouteConfig {
  name?: string;
  match: {
    listener?: string;
    direction?: Direction;
    protocol?: 'http1' | 'http2' | 'grpc' | 'dubbo';
    service?: string | StringMatch;
    authority?: string | StringMatch;
    method?: string | string[];
    path?: StringMatch;
    headers?: Record<string, HeaderMatch>;
  };
  action: {
    cluster?: string;
    labels?: Record<string, string>;
    passthrough?: boolean;
    directResponse?: { status: number; body: string };
    timeoutMs?: number;
  };
  /** Filter sections: each filter module validates and reads its own (see src/filters/). */
  mirror?: MirrorConfig;
  retry?: RetryConfig;
  /** What the route answers instead of a refusal (src/protection/config.ts). */
  fallback?: FallbackConfig;
}

export interface EndpointConfig {
  address: string;
  labels: Record<string, string>;
  weight: number;
}

export interface ClusterConfig {
  name: string;
  protocol: 'auto' | 'http1' | 'http2';
  lbPolicy: 'round_robin' | 'least_request';
  connectTimeoutMs: number;
  maxConnectionsPerEndpoint: number;
  maxPendingRequests: number;
  endpoints: EndpointConfig[];
  tls?: ClusterTls;
  /** Absent only on clusters Sluice builds itself (a registry's): then Envoy's default limits. */
  circuitBreaker?: CircuitBreakerConfig;
}

export interface SluiceConfig {
  admin: { address: string; tokenFile?: string };
  workers: { threads: number; maxConnectionsPerWorker: number; youngGenerationMb: number; mainThreadScheduling: 'batch' | 'normal' };
  listeners: ListenerConfig[];
  routes: RouteConfig[];
  clusters: ClusterConfig[];
  inbound: { applicationAddress: string };
  http: {
    maxHeaderBytes: number;
    maxHeaders: number;
    headerTimeoutMs: number;
    idleTimeoutMs: number;
    requestTimeoutMs: number;
    upstreamIdleTimeoutMs: number;
    via: string;
    normalizePath: boolean;
    mergeSlashes: boolean;
    escapedSlashes: 'reject' | 'keep' | 'unescape';
  };
  tcp: { sniffTimeoutMs: number; opaquePorts: number[]; connectTimeoutMs: number; idleTimeoutMs: number };
  dubbo: {
    maxBodyBytes: number; serializations: number[]; maxCallsPerConnection: number;
    upstreamProbeAfterMs: number; upstreamProbeTimeoutMs: number; upstreamMaxConsecutiveTimeouts: number;
  };
  accessLog: { enabled: boolean; path: string; sampleRate: number; bufferBytes: number };
  filters: string[];
  /** Authorization rules (src/filters/authz), in order; deny wins over allow. */
  authorization: AuthorizationRule[];
  /** Rate limits (src/filters/ratelimit), shared by every worker. */
  rateLimits: RateLimitRule[];
  /** Adaptive limiting (src/filters/adaptive): admitted concurrency per interface, driven by CPU and latency. */
  adaptiveLimit: AdaptiveLimitConfig;
  /** Alarms (src/alarms): rules on the sidecar's own signals, and the actions they switch on. */
  alarms: AlarmConfig[];
  drain: { periodMs: number; timeoutMs: number };
  logLevel: string;
  /** ZooKeeper ensembles that list Dubbo providers and Spring Cloud instances (src/registry/). */
  registries: RegistryConfig[];
  registry: RegistrySettings;
  /** Absent: no identity, TLS passes through as opaque TCP. */
  tls?: TlsConfig;
}

/** The config Sluice runs with when no file is given: capture in and out, pass everything through. */
export const DEFAULT_CONFIG_YAML = `# Sluice default config: transparent capture, everything passed through.
admin:
  address: 127.0.0.1:15000
listeners:
  - name: outbound
    address: 0.0.0.0:15001
    direction: outbound
    capture: true
  - name: inbound
    address: 0.0.0.0:15006
    direction: inbound
    capture: true
inbound:
  applicationAddress: 127.0.0.1
`;

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
const validateSchema = ajv.compile(configSchema);
const validateEndpoints = ajv.compile({ type: 'object', additionalProperties: false, required: ['endpoints'], properties: { endpoints: endpointList } });

function formatIssue(e: ErrorObject): ConfigIssue {
  let path = e.instancePath;
  let message = e.message ?? 'is invalid';
  if (e.keyword === 'additionalProperties') {
    path = `${path}/${(e.params as { additionalProperty: string }).additionalProperty}`;
    message = 'is not a known field';
  } else if (e.keyword === 'required') {
    path = `${path}/${(e.params as { missingProperty: string }).missingProperty}`;
    message = 'is required';
  } else if (e.keyword === 'enum') {
    message = `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map(String).join(', ')}`;
  } else if (e.keyword === 'minProperties' || e.keyword === 'maxProperties') {
    const limit = (e.params as { limit: number }).limit;
    message = limit === 1 && e.keyword === 'maxProperties' ? 'must have exactly one field' : e.keyword === 'minProperties' && limit === 1 ? 'must not be empty' : message;
  }
  return { path, message };
}

/**
 * Ajv errors → issues. An `anyOf` failure comes with every branch's complaints; when the
 * value's type picks one branch (an endpoint written as a mapping, say), that branch's own
 * errors are the useful ones (`/clusters/0/endpoints/1/weight: must be integer`); when no
 * branch takes the value's type, one line says which types would do.
 */
function schemaIssues(errors: ErrorObject[]): ConfigIssue[] {
  const anyOfs = errors.filter((e) => e.keyword === 'anyOf');
  const owner = new Map<ErrorObject, ErrorObject>();
  for (const e of errors) {
    let best: ErrorObject | undefined;
    for (const a of anyOfs) {
      if (a === e || !e.schemaPath.startsWith(`${a.schemaPath}/`)) continue;
      if (e.instancePath !== a.instancePath && !e.instancePath.startsWith(`${a.instancePath}/`)) continue;
      if (!best || a.schemaPath.length > best.schemaPath.length) best = a;
    }
    if (best) owner.set(e, best);
  }
  const expand = (e: ErrorObject): ConfigIssue[] => {
    if (e.keyword !== 'anyOf') return [formatIssue(e)];
    const branches = new Map<string, ErrorObject[]>();
    for (const [sub, a] of owner) {
      if (a !== e) continue;
      const branch = sub.schemaPath.slice(e.schemaPath.length + 1).split('/')[0];
      let list = branches.get(branch);
      if (!list) branches.set(branch, (list = []));
      list.push(sub);
    }
    const wrongType = (list: ErrorObject[]) => list.some((x) => x.keyword === 'type' && x.instancePath === e.instancePath);
    const fitting = [...branches.values()].filter((list) => !wrongType(list));
    if (fitting.length === 1) return fitting[0].flatMap(expand);
    const types = new Set<string>();
    for (const list of branches.values()) {
      for (const x of list) if (x.keyword === 'type' && x.instancePath === e.instancePath) types.add(String((x.params as { type: string }).type));
    }
    const kinds = [...types].map((t) => (t === 'object' ? 'a mapping' : t === 'array' ? 'a list' : `a ${t}`));
    return [{ path: e.instancePath, message: kinds.length ? `must be ${kinds.join(' or ')}` : 'has the wrong shape' }];
  };
  const out: ConfigIssue[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (owner.has(e)) continue;
    for (const issue of expand(e)) {
      const key = `${issue.path}\u0000${issue.message}`;
      if (!seen.has(key)) { seen.add(key); out.push(issue); }
    }
  }
  return out;
}

// ── checks the schema cannot express ───────────────────────────────────────
// They run on the document as the schema left it, valid or not, so that one pass
// reports everything; each check looks only at values of the right type and leaves
// the rest to the schema's own complaint.

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const list = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
const str = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined);

function checkAddress(issues: ConfigIssue[], path: string, value: unknown, allowPortZero: boolean): HostPort | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    const a = parseAddress(value);
    if (!allowPortZero && a.port === 0) issues.push({ path, message: 'needs a port other than 0' });
    return a;
  } catch (err) {
    issues.push({ path, message: (err as Error).message });
    return undefined;
  }
}

/** Two listening addresses that cannot both be bound: same port, and same host or a wildcard. */
function addressesClash(a: HostPort, b: HostPort): boolean {
  if (a.port !== b.port || a.port === 0) return false;
  if (a.host === b.host || a.host === '::' || b.host === '::') return true;
  // 0.0.0.0 takes every IPv4 address (and names, which usually resolve to one), not IPv6 ones
  return (a.host === '0.0.0.0' && isIP(b.host) !== 6) || (b.host === '0.0.0.0' && isIP(a.host) !== 6);
}

function endpointLabels(ep: unknown): Obj {
  return isObj(ep) && isObj(ep.labels) ? ep.labels : {};
}

function semanticIssues(c: Obj): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const bound: Array<{ path: string; addr: HostPort }> = [];
  const bind = (path: string, addr: HostPort | undefined) => {
    if (!addr) return;
    const other = bound.find((b) => addressesClash(b.addr, addr));
    if (other) issues.push({ path, message: `clashes with ${other.path} (same port)` });
    else bound.push({ path, addr });
  };
  if (isObj(c.admin)) bind('/admin/address', checkAddress(issues, '/admin/address', c.admin.address, true));
  if (isObj(c.inbound) && typeof c.inbound.applicationAddress === 'string') {
    try { parseHost(c.inbound.applicationAddress); } catch (err) {
      issues.push({ path: '/inbound/applicationAddress', message: `${(err as Error).message} (a host without port)` });
    }
  }

  const clusters = new Map<string, Obj>();
  list(c.clusters).forEach((cl, i) => {
    if (!isObj(cl)) return;
    const name = str(cl.name);
    if (name !== undefined) {
      if (clusters.has(name)) issues.push({ path: `/clusters/${i}/name`, message: `duplicate cluster name "${name}"` });
      else clusters.set(name, cl);
    }
    if (Array.isArray(cl.endpoints) && cl.endpoints.length === 0) {
      issues.push({ path: `/clusters/${i}/endpoints`, message: 'must list at least one endpoint' });
    }
    list(cl.endpoints).forEach((ep, j) => {
      if (typeof ep === 'string') checkAddress(issues, `/clusters/${i}/endpoints/${j}`, ep, false);
      else if (isObj(ep)) checkAddress(issues, `/clusters/${i}/endpoints/${j}/address`, ep.address, false);
    });
  });

  const routes = list(c.routes).filter(isObj);
  const listenerNames = new Set<string>();
  list(c.listeners).forEach((l, i) => {
    if (!isObj(l)) return;
    const name = str(l.name);
    if (name !== undefined) {
      if (listenerNames.has(name)) issues.push({ path: `/listeners/${i}/name`, message: `duplicate listener name "${name}"` });
      listenerNames.add(name);
    }
    bind(`/listeners/${i}/address`, checkAddress(issues, `/listeners/${i}/address`, l.address, true));
    if (l.protocol === 'tcp' && l.opaque === 'refuse') {
      issues.push({ path: `/listeners/${i}/opaque`, message: 'refuse would refuse every connection of a protocol: tcp listener' });
    }
    const cluster = str(l.cluster);
    if (cluster !== undefined && !clusters.has(cluster)) {
      issues.push({ path: `/listeners/${i}/cluster`, message: `unknown cluster "${cluster}"` });
    }
    // with a registry, an explicit listener's calls find their providers by service name
    if (l.capture !== true && l.cluster === undefined && name !== undefined && list(c.registries).length === 0) {
      // a route serves this listener if nothing in its match rules the listener out
      const served = routes.some((r) => {
        const m = isObj(r.match) ? r.match : {};
        return (m.listener === undefined || m.listener === name) && (m.direction === undefined || m.direction === (l.direction ?? 'outbound'));
      });
      if (!served) issues.push({ path: `/listeners/${i}`, message: 'an explicit (non-capture) listener needs a cluster or a route that can match it' });
    }
  });

  // a filter's action key that says where a request goes (split) stands beside cluster, passthrough, directResponse
  const targetModules = FILTER_MODULES.filter((m) => m.targetKey !== undefined);
  const targetNames = ['cluster', 'passthrough: true', 'directResponse', ...targetModules.map((m) => m.targetKey!)].join(', ');
  const listed = new Set(Array.isArray(c.filters) ? c.filters.map(String) : DEFAULT_FILTERS);
  list(c.routes).forEach((r, i) => {
    if (!isObj(r)) return;
    const p = `/routes/${i}`;
    // each filter checks its own sections of the route
    // (a section of a filter that is not listed is checked too, and has no effect: leaving a filter
    // out of `filters` switches it off everywhere, its sections left in place)
    for (const m of FILTER_MODULES) {
      for (const issue of m.checkRoute?.(r, clusters) ?? []) issues.push({ path: `${p}${issue.path}`, message: issue.message });
    }
    if (isObj(r.action)) {
      const a = r.action;
      const kinds = [a.cluster !== undefined, a.passthrough === true, a.directResponse !== undefined, ...targetModules.map((m) => a[m.targetKey!] !== undefined)]
        .filter(Boolean).length;
      if (kinds !== 1) {
        issues.push({ path: `${p}/action`, message: `needs exactly one of ${targetNames} (has ${kinds})` });
      }
      for (const m of targetModules) {
        if (a[m.targetKey!] !== undefined && !listed.has(m.name)) {
          issues.push({ path: `${p}/action/${m.targetKey}`, message: `needs the ${m.name} filter in filters` });
        }
      }
      const cluster = str(a.cluster);
      const cl = cluster !== undefined ? clusters.get(cluster) : undefined;
      if (cluster !== undefined && !cl) issues.push({ path: `${p}/action/cluster`, message: `unknown cluster "${cluster}"` });
      if (a.labels !== undefined && a.cluster === undefined) issues.push({ path: `${p}/action/labels`, message: 'needs a cluster' });
      if (isObj(a.labels) && cl && Array.isArray(cl.endpoints)) {
        const want = Object.entries(a.labels);
        if (!cl.endpoints.some((ep) => { const have = endpointLabels(ep); return want.every(([k, v]) => have[k] === v); })) {
          issues.push({ path: `${p}/action/labels`, message: `no endpoint of cluster "${cluster}" has these labels` });
        }
      }
    }
    if (isObj(r.match)) checkMatch(issues, `${p}/match`, r.match, listenerNames);
    for (const issue of fallbackIssues(r)) issues.push({ path: `${p}${issue.path}`, message: issue.message });
  });
  issues.push(...circuitBreakerIssues(c.clusters));
  issues.push(...alarmIssues(c));
  // each filter checks its own top-level sections
  for (const m of FILTER_MODULES) issues.push(...(m.checkConfig?.(c) ?? []));
  issues.push(...registryConfigIssues(c));
  issues.push(...tlsIssues(c));
  return issues;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

/** A semantic issue inside a value the schema already refused adds nothing. */
function coveredBy(issue: ConfigIssue, schema: ConfigIssue[]): boolean {
  return schema.some((s) => issue.path === s.path || issue.path.startsWith(`${s.path}/`));
}

/** Issues in path order (list items by index), so a long report reads top to bottom. */
function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  const key = (p: string) => p.split('/');
  return issues
    .map((issue, i) => ({ issue, i, k: key(issue.path) }))
    .sort((a, b) => {
      for (let j = 0; j < Math.min(a.k.length, b.k.length); j++) {
        const x = a.k[j];
        const y = b.k[j];
        if (x === y) continue;
        const nx = /^\d+$/.test(x);
        const ny = /^\d+$/.test(y);
        if (nx && ny) return Number(x) - Number(y);
        return x < y ? -1 : 1;
      }
      return a.k.length - b.k.length || a.i - b.i;
    })
    .map((e) => e.issue);
}

/** Validate a parsed document. Throws ConfigError listing every problem. */
export function buildConfig(doc: unknown, source = 'config'): SluiceConfig {
  let raw: unknown;
  try {
    raw = structuredClone(doc ?? {});
  } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot be copied: ${(err as Error).message}` }], source);
  }
  if (!isObj(raw)) throw new ConfigError([{ path: '', message: 'must be a mapping' }], source);
  const issues = validateSchema(raw) ? [] : schemaIssues(validateSchema.errors ?? []);
  const schemaOnly = issues.slice();
  for (const issue of semanticIssues(raw)) if (!coveredBy(issue, schemaOnly)) issues.push(issue);
  if (issues.length) throw new ConfigError(sortIssues(issues), source);
  const c = raw as unknown as SluiceConfig;
  for (const cl of c.clusters) cl.endpoints = normaliseEndpoints(cl.endpoints as unknown[]);
  return deepFreeze(c);
}

function normaliseEndpoints(list: unknown[]): EndpointConfig[] {
  return list.map((ep) => {
    if (typeof ep === 'string') return { address: ep, labels: {}, weight: 1 };
    const e = ep as Partial<EndpointConfig> & { address: string };
    return { address: e.address, labels: e.labels ?? {}, weight: e.weight ?? 1 };
  });
}

/**
 * A cluster's new endpoint list, as the admin API takes it: `{ endpoints: [...] }` with entries
 * written as in `clusters[].endpoints`. An empty list is allowed (the cluster then has no
 * endpoint, and its requests get 503). Throws ConfigError listing every problem with its path.
 */
export function parseEndpointList(doc: unknown, source = 'endpoints'): EndpointConfig[] {
  let raw: unknown;
  try { raw = structuredClone(doc); } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot be copied: ${(err as Error).message}` }], source);
  }
  if (!isObj(raw)) throw new ConfigError([{ path: '', message: 'must be a mapping with an endpoints list' }], source);
  const issues = validateEndpoints(raw) ? [] : schemaIssues(validateEndpoints.errors ?? []);
  const schemaOnly = issues.slice();
  list(raw.endpoints).forEach((ep, j) => {
    const path = typeof ep === 'string' ? `/endpoints/${j}` : `/endpoints/${j}/address`;
    const found: ConfigIssue[] = [];
    checkAddress(found, path, typeof ep === 'string' ? ep : isObj(ep) ? ep.address : undefined, false);
    for (const issue of found) if (!coveredBy(issue, schemaOnly)) issues.push(issue);
  });
  if (issues.length) throw new ConfigError(sortIssues(issues), source);
  return normaliseEndpoints(raw.endpoints as unknown[]);
}

/** One YAML (or JSON) document as plain data; every YAML problem a ConfigError. */
export function parseDocument(text: string, source: string): unknown {
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  if (docs.length > 1) {
    throw new ConfigError([{ path: '', message: `must be a single YAML document (found ${docs.length}, separated by ---)` }], source);
  }
  const doc = docs[0];
  if (doc && doc.errors.length) {
    throw new ConfigError(doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message}` })), source);
  }
  try {
    return doc ? doc.toJS({ maxAliasCount: 100 }) : {};
  } catch (err) {
    throw new ConfigError([{ path: '', message: `YAML: ${(err as Error).message}` }], source);
  }
}

export function parseConfigText(text: string, source = 'config'): SluiceConfig {
  return buildConfig(parseDocument(text, source), source);
}

export function loadConfigFile(file: string): SluiceConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new ConfigError([{ path: '', message: `cannot read the config file: ${why}` }], file);
  }
  return parseConfigText(text, file);
}

export function defaultConfig(): SluiceConfig {
  return parseConfigText(DEFAULT_CONFIG_YAML, 'embedded default config');
}
