/**
 * clusters[].circuitBreaker and routes[].fallback: their defaults, and every bad value refused with
 * its path.
 */
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { ConfigError, type ConfigIssue } from '../../src/errors';

type Doc = Record<string, unknown>;

function doc(cluster: Doc = {}, route: Doc = {}): Doc {
  return {
    admin: { address: '127.0.0.1:0' },
    listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: ['127.0.0.1:8080'], ...cluster }],
    routes: [{ match: {}, action: { cluster: 'web' }, ...route }],
  };
}

function issuesOf(d: Doc): ConfigIssue[] {
  try {
    buildConfig(d);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  return [];
}

t.test('defaults: Envoy\'s limits, enforce, no breaker; a fallback answers for every refusal reason', async (t) => {
  const c = buildConfig(doc({}, { fallback: { http: {} } }));
  t.same(c.clusters[0].circuitBreaker, { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3, mode: 'enforce' });
  t.same(c.routes[0].fallback, { on: ['rate_limited', 'overloaded', 'circuit_open', 'overflow', 'no_healthy_upstream', 'degraded'], http: { status: 200, headers: {}, body: '' } });
  const b = buildConfig(doc({ circuitBreaker: { endpoint: {} } })).clusters[0].circuitBreaker!.endpoint;
  t.same(b, { errorRatio: 0.5, minimumRequests: 20, windowMs: 10_000, buckets: 10, openMs: 30_000, halfOpenRequests: 3 });
});

t.test('bad circuitBreaker values are refused with their paths', async (t) => {
  const cases: Array<[Doc, string[]]> = [
    [{ circuitBreaker: { maxRequests: -1 } }, ['/clusters/0/circuitBreaker/maxRequests']],
    [{ circuitBreaker: { maxConnections: 1.5, maxRetries: 'x' } }, ['/clusters/0/circuitBreaker/maxConnections', '/clusters/0/circuitBreaker/maxRetries']],
    [{ circuitBreaker: { mode: 'dry-run' } }, ['/clusters/0/circuitBreaker/mode']],
    [{ circuitBreaker: { limit: 3 } }, ['/clusters/0/circuitBreaker/limit']],
    [{ circuitBreaker: { endpoint: { errorRatio: 0 } } }, ['/clusters/0/circuitBreaker/endpoint/errorRatio']],
    [{ circuitBreaker: { endpoint: { errorRatio: 1.5 } } }, ['/clusters/0/circuitBreaker/endpoint/errorRatio']],
    [{ circuitBreaker: { interface: { buckets: 21 } } }, ['/clusters/0/circuitBreaker/interface/buckets']],
    [{ circuitBreaker: { interface: { windowMs: 500, buckets: 20 } } }, ['/clusters/0/circuitBreaker/interface/buckets']],
    [{ circuitBreaker: { interface: { slowCallRatio: 0.5 } } }, ['/clusters/0/circuitBreaker/interface/slowCallRatio']],
    [{ circuitBreaker: { interface: { halfOpenRequests: 0, openMs: 0, minimumRequests: 0 } } },
      ['/clusters/0/circuitBreaker/interface/halfOpenRequests', '/clusters/0/circuitBreaker/interface/minimumRequests', '/clusters/0/circuitBreaker/interface/openMs']],
    [{ circuitBreaker: { endpoint: { mode: 'off' } } }, ['/clusters/0/circuitBreaker/endpoint/mode']],
  ];
  for (const [cluster, paths] of cases) {
    const issues = issuesOf(doc(cluster));
    t.same(issues.map((i) => i.path).sort(), [...paths].sort(), `${JSON.stringify(cluster)}: ${JSON.stringify(issues)}`);
  }
  t.same(issuesOf(doc({ circuitBreaker: { mode: 'shadow', endpoint: { slowCallMs: 200, slowCallRatio: 0.8 }, interface: { mode: 'enforce' } } })), [], 'a valid one');
});

t.test('bad fallback values are refused with their paths', async (t) => {
  const cases: Array<[Doc, string[]]> = [
    [{ fallback: {} }, ['/routes/0/fallback']],
    [{ fallback: { on: ['overflow'] } }, ['/routes/0/fallback']],
    [{ fallback: { on: ['denied'], http: {} } }, ['/routes/0/fallback/on/0']],
    [{ fallback: { on: [], http: {} } }, ['/routes/0/fallback/on']],
    [{ fallback: { http: { status: 99 } } }, ['/routes/0/fallback/http/status']],
    [{ fallback: { http: { headers: { 'content-length': '3' } } } }, ['/routes/0/fallback/http/headers/content-length']],
    [{ fallback: { http: { headers: { 'bad name': 'x' } } } }, ['/routes/0/fallback/http/headers/bad name']],
    [{ fallback: { http: { headers: { 'x-a': 'line\nbreak' } } } }, ['/routes/0/fallback/http/headers/x-a']],
    [{ fallback: { http: { headers: { 'x-a': 1 } } } }, ['/routes/0/fallback/http/headers/x-a']],
    [{ fallback: { grpc: { status: 0 } } }, ['/routes/0/fallback/grpc/status']],
    [{ fallback: { grpc: { message: 'x' } } }, ['/routes/0/fallback/grpc/status']],
    [{ fallback: { dubbo: {} } }, ['/routes/0/fallback/dubbo/value']],
    [{ fallback: { dubbo: { value: 1, type: 'x' } } }, ['/routes/0/fallback/dubbo/type']],
    [{ fallback: { http: {}, cache: true } }, ['/routes/0/fallback/cache']],
  ];
  for (const [route, paths] of cases) {
    const issues = issuesOf(doc({}, route));
    t.same(issues.map((i) => i.path).sort(), [...paths].sort(), `${JSON.stringify(route)}: ${JSON.stringify(issues)}`);
  }
  t.same(issuesOf(doc({}, { fallback: { dubbo: { value: { a: [1, 'x', null, { b: true }] } }, grpc: { status: 14 } } })), [], 'a nested Dubbo value');
  t.same(issuesOf(doc({}, { fallback: { dubbo: { value: null } } })), [], 'a null Dubbo value');
});
