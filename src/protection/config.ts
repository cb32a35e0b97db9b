/**
 * The config sections of circuit breaking and degradation: `clusters[].circuitBreaker` and
 * `routes[].fallback` (docs/configuration.md, "Circuit breaking" and "Fallback"). Defaults are
 * written here once; checks the schema cannot express report the path of every bad field.
 */
import type { ConfigIssue } from '../errors';
import { DEFAULT_LIMITS, type Mode } from './cluster-limits';
import { BUCKETS_MAX, type BreakerConfig } from './breaker';

const mode = { enum: ['enforce', 'shadow'] };
const count = (def: number) => ({ type: 'integer', minimum: 0, maximum: 1_000_000, default: def });
const ratio = (def: number) => ({ type: 'number', exclusiveMinimum: 0, maximum: 1, default: def });

const breakerSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    errorRatio: ratio(0.5),
    slowCallMs: { type: 'integer', minimum: 1, maximum: 86_400_000 },
    /** Default 1 (every call slow); needs slowCallMs. */
    slowCallRatio: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    minimumRequests: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 20 },
    windowMs: { type: 'integer', minimum: 100, maximum: 3_600_000, default: 10_000 },
    buckets: { type: 'integer', minimum: 1, maximum: BUCKETS_MAX, default: 10 },
    openMs: { type: 'integer', minimum: 1, maximum: 86_400_000, default: 30_000 },
    halfOpenRequests: { type: 'integer', minimum: 1, maximum: 1000, default: 3 },
    /** Default: the circuitBreaker's mode. */
    mode,
  },
};

export const circuitBreakerSchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: {
    maxConnections: count(DEFAULT_LIMITS.maxConnections),
    maxPendingRequests: count(DEFAULT_LIMITS.maxPendingRequests),
    maxRequests: count(DEFAULT_LIMITS.maxRequests),
    maxRetries: count(DEFAULT_LIMITS.maxRetries),
    mode: { ...mode, default: 'enforce' },
    endpoint: breakerSchema,
    interface: breakerSchema,
  },
};

export interface CircuitBreakerConfig {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
  mode: Mode;
  endpoint?: Omit<BreakerConfig, 'mode'> & { mode?: Mode };
  interface?: Omit<BreakerConfig, 'mode'> & { mode?: Mode };
}

/** The reasons a fallback answers for, unless the route says which. */
export const FALLBACK_REASONS = ['rate_limited', 'overloaded', 'circuit_open', 'overflow', 'no_healthy_upstream', 'degraded'] as const;
export type FallbackReason = (typeof FALLBACK_REASONS)[number];

/** What a Dubbo fallback may return: a value Hessian2 carries and a stub returns as is. */
const dubboValue: Record<string, unknown> = {
  anyOf: [
    { type: 'null' }, { type: 'string' }, { type: 'number' }, { type: 'boolean' },
    { type: 'array', items: { $ref: '#/definitions/dubboValue' } },
    { type: 'object', additionalProperties: { $ref: '#/definitions/dubboValue' } },
  ],
};

export const fallbackSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    on: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: [...FALLBACK_REASONS] }, default: [...FALLBACK_REASONS] },
    http: {
      type: 'object',
      additionalProperties: false,
      properties: {
        status: { type: 'integer', minimum: 200, maximum: 599, default: 200 },
        headers: { type: 'object', additionalProperties: { type: 'string' }, default: {} },
        body: { type: 'string', default: '' },
      },
    },
    grpc: {
      type: 'object',
      additionalProperties: false,
      required: ['status'],
      properties: {
        /** A gRPC status other than OK: an OK answer would need a response message of the method's type. */
        status: { type: 'integer', minimum: 1, maximum: 16 },
        message: { type: 'string', default: '' },
      },
    },
    dubbo: {
      type: 'object',
      additionalProperties: false,
      required: ['value'],
      properties: { value: { $ref: '#/definitions/dubboValue' } },
    },
  },
};

export const protectionDefinitions = { dubboValue };

export interface FallbackConfig {
  on: FallbackReason[];
  http?: { status: number; headers: Record<string, string>; body: string };
  grpc?: { status: number; message: string };
  dubbo?: { value: unknown };
}

/** Header names a fallback may not set: framing is Sluice's, and the reason header says what happened. */
const RESERVED_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'x-sluice-reason']);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);

/** A route's fallback: what the schema cannot say. Paths relative to the route. */
export function fallbackIssues(route: Obj): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const f = route.fallback;
  if (!isObj(f)) return issues;
  if (f.http === undefined && f.grpc === undefined && f.dubbo === undefined) {
    issues.push({ path: '/fallback', message: 'needs at least one of http, grpc, dubbo (the answer for requests of that protocol)' });
  }
  if (isObj(f.http) && isObj(f.http.headers)) {
    for (const [k, v] of Object.entries(f.http.headers)) {
      const p = `/fallback/http/headers/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      if (!TOKEN.test(k)) issues.push({ path: p, message: 'is not a valid header name' });
      else if (RESERVED_HEADERS.has(k.toLowerCase()) || k.startsWith(':')) issues.push({ path: p, message: 'is set by Sluice and cannot be configured' });
      if (typeof v === 'string' && !FIELD_VALUE.test(v)) issues.push({ path: p, message: 'has a character a header value cannot hold' });
    }
  }
  return issues;
}

/** A cluster's circuitBreaker: what the schema cannot say. Paths absolute. */
export function circuitBreakerIssues(clusters: unknown): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!Array.isArray(clusters)) return issues;
  clusters.forEach((c, i) => {
    if (!isObj(c) || !isObj(c.circuitBreaker)) return;
    for (const scope of ['endpoint', 'interface'] as const) {
      const b = c.circuitBreaker[scope];
      if (!isObj(b)) continue;
      const p = `/clusters/${i}/circuitBreaker/${scope}`;
      const windowMs = typeof b.windowMs === 'number' ? b.windowMs : 10_000;
      const buckets = typeof b.buckets === 'number' ? b.buckets : 10;
      if (Number.isInteger(windowMs) && Number.isInteger(buckets) && windowMs / buckets < 50) {
        issues.push({ path: `${p}/buckets`, message: `${buckets} buckets over windowMs ${windowMs} are shorter than 50 ms each` });
      }
      if (b.slowCallRatio !== undefined && b.slowCallMs === undefined) {
        issues.push({ path: `${p}/slowCallRatio`, message: 'needs slowCallMs (what a slow call is)' });
      }
    }
  });
  return issues;
}
