/**
 * Config: YAML in, validated against the schema (every error with its path),
 * checked for cross references, defaults filled, frozen.
 */
import { readFileSync } from 'node:fs';
import Ajv, { type ErrorObject } from 'ajv';
import YAML from 'yaml';
import { configSchema } from './schema';
import { ConfigError, type ConfigIssue } from '../errors';
import { parseAddress, type HostPort } from '../net/address';

export type Direction = 'inbound' | 'outbound';
export type StringMatch = { exact: string } | { prefix: string } | { regex: string };
export type HeaderMatch = string | StringMatch | { present: boolean };

export interface ListenerConfig {
  name: string;
  address: string;
  direction: Direction;
  capture: boolean;
  cluster?: string;
}

export interface RouteConfig {
  name?: string;
  match: {
    listener?: string;
    direction?: Direction;
    protocol?: 'http1' | 'http2' | 'grpc';
    service?: string | StringMatch;
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
}

export interface SluiceConfig {
  admin: { address: string };
  workers: { threads: number; maxConnectionsPerWorker: number };
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
  };
  tcp: { sniffTimeoutMs: number; connectTimeoutMs: number; idleTimeoutMs: number };
  accessLog: { enabled: boolean; path: string; sampleRate: number };
  drain: { timeoutMs: number };
  logLevel: string;
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

function schemaIssues(errors: ErrorObject[]): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    // anyOf failures repeat every branch's complaint; the anyOf line itself is the clearer one
    if (e.keyword !== 'anyOf' && errors.some((o) => o.keyword === 'anyOf' && e.instancePath === o.instancePath)) continue;
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
    } else if (e.keyword === 'anyOf') {
      message = 'has the wrong shape';
    }
    const key = `${path}\u0000${message}`;
    if (!seen.has(key)) { seen.add(key); out.push({ path, message }); }
  }
  return out;
}

function checkAddress(issues: ConfigIssue[], path: string, value: string, needPort = true): HostPort | undefined {
  try {
    const a = parseAddress(value);
    if (needPort && a.port === 0 && !path.startsWith('/listeners') && !path.startsWith('/admin')) {
      issues.push({ path, message: 'needs a port other than 0' });
    }
    return a;
  } catch (err) {
    issues.push({ path, message: (err as Error).message });
    return undefined;
  }
}

function checkRegex(issues: ConfigIssue[], path: string, m: unknown): void {
  if (m && typeof m === 'object' && 'regex' in m) {
    try { new RegExp((m as { regex: string }).regex); } catch (err) {
      issues.push({ path: `${path}/regex`, message: `is not a valid regular expression: ${(err as Error).message}` });
    }
  }
}

/** Checks that the schema cannot express: references, duplicates, addresses, regexes. */
function semanticIssues(c: SluiceConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  checkAddress(issues, '/admin/address', c.admin.address);
  const clusterNames = new Set<string>();
  c.clusters.forEach((cl, i) => {
    if (clusterNames.has(cl.name)) issues.push({ path: `/clusters/${i}/name`, message: `duplicate cluster name "${cl.name}"` });
    clusterNames.add(cl.name);
    if (cl.endpoints.length === 0) issues.push({ path: `/clusters/${i}/endpoints`, message: 'must list at least one endpoint' });
    cl.endpoints.forEach((ep, j) => checkAddress(issues, `/clusters/${i}/endpoints/${j}/address`, ep.address));
  });
  const listenerNames = new Set<string>();
  const listenerAddrs = new Map<string, number>();
  c.listeners.forEach((l, i) => {
    if (listenerNames.has(l.name)) issues.push({ path: `/listeners/${i}/name`, message: `duplicate listener name "${l.name}"` });
    listenerNames.add(l.name);
    const a = checkAddress(issues, `/listeners/${i}/address`, l.address);
    if (a && a.port !== 0) {
      const key = `${a.host}:${a.port}`;
      if (listenerAddrs.has(key)) issues.push({ path: `/listeners/${i}/address`, message: `same address as /listeners/${listenerAddrs.get(key)}` });
      listenerAddrs.set(key, i);
    }
    if (l.cluster !== undefined && !clusterNames.has(l.cluster)) {
      issues.push({ path: `/listeners/${i}/cluster`, message: `unknown cluster "${l.cluster}"` });
    }
    if (!l.capture && l.cluster === undefined && !c.routes.some((r) => r.match.listener === l.name || r.match.listener === undefined)) {
      issues.push({ path: `/listeners/${i}`, message: 'an explicit (non-capture) listener needs a cluster or a route' });
    }
  });
  c.routes.forEach((r, i) => {
    const p = `/routes/${i}`;
    const a = r.action;
    const kinds = [a.cluster !== undefined, a.passthrough === true, a.directResponse !== undefined].filter(Boolean).length;
    if (kinds !== 1) issues.push({ path: `${p}/action`, message: 'needs exactly one of cluster, passthrough, directResponse' });
    if (a.cluster !== undefined && !clusterNames.has(a.cluster)) {
      issues.push({ path: `${p}/action/cluster`, message: `unknown cluster "${a.cluster}"` });
    }
    if (a.labels && a.cluster === undefined) issues.push({ path: `${p}/action/labels`, message: 'needs a cluster' });
    if (a.labels && a.cluster !== undefined) {
      const cl = c.clusters.find((x) => x.name === a.cluster);
      const want = Object.entries(a.labels);
      if (cl && !cl.endpoints.some((ep) => want.every(([k, v]) => ep.labels[k] === v))) {
        issues.push({ path: `${p}/action/labels`, message: `no endpoint of cluster "${a.cluster}" has these labels` });
      }
    }
    if (r.match.listener !== undefined && !listenerNames.has(r.match.listener)) {
      issues.push({ path: `${p}/match/listener`, message: `unknown listener "${r.match.listener}"` });
    }
    checkRegex(issues, `${p}/match/path`, r.match.path);
    checkRegex(issues, `${p}/match/service`, r.match.service);
    for (const [h, m] of Object.entries(r.match.headers ?? {})) checkRegex(issues, `${p}/match/headers/${h}`, m);
  });
  return issues;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

/** Validate a parsed document. Throws ConfigError listing every problem. */
export function buildConfig(doc: unknown, source = 'config'): SluiceConfig {
  const raw = structuredClone(doc ?? {});
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ path: '', message: 'must be a mapping' }], source);
  }
  if (!validateSchema(raw)) throw new ConfigError(schemaIssues(validateSchema.errors ?? []), source);
  const c = raw as unknown as SluiceConfig;
  for (const cl of c.clusters) {
    cl.endpoints = cl.endpoints.map((ep) => (typeof ep === 'string' ? { address: ep, labels: {}, weight: 1 } : ep));
  }
  const issues = semanticIssues(c);
  if (issues.length) throw new ConfigError(issues, source);
  return deepFreeze(c);
}

export function parseConfigText(text: string, source = 'config'): SluiceConfig {
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  if (docs.length > 1) throw new ConfigError([{ path: '', message: 'must be a single YAML document' }], source);
  const doc = docs[0];
  if (doc && doc.errors.length) {
    throw new ConfigError(doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message}` })), source);
  }
  return buildConfig(doc ? doc.toJS({ maxAliasCount: 100 }) : {}, source);
}

export function loadConfigFile(file: string): SluiceConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot read: ${(err as Error).message}` }], file);
  }
  return parseConfigText(text, file);
}

export function defaultConfig(): SluiceConfig {
  return parseConfigText(DEFAULT_CONFIG_YAML, 'embedded default config');
}
