/**
 * Checks that several filters' route sections share: the document is read as the schema left
 * it (valid or not), so each helper looks only at values of the type it expects.
 */
import type { ConfigIssue } from '../errors';

export type Obj = Readonly<Record<string, unknown>>;
export const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);

/** An HTTP field name (RFC 9110 token); Dubbo attachment keys are held to the same rule. */
export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** A JSON pointer segment for a mapping key. */
export function pointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** `cluster` names a cluster and, with `labels`, some endpoint of it has them all. */
export function checkClusterRef(
  issues: ConfigIssue[], path: string, cluster: unknown, labels: unknown, clusters: ReadonlyMap<string, Obj>,
): void {
  if (typeof cluster !== 'string') return;
  const cl = clusters.get(cluster);
  if (!cl) { issues.push({ path: `${path}/cluster`, message: `unknown cluster "${cluster}"` }); return; }
  if (!isObj(labels) || !Array.isArray(cl.endpoints)) return;
  const want = Object.entries(labels);
  const has = cl.endpoints.some((ep) => {
    const have = isObj(ep) && isObj(ep.labels) ? ep.labels : {};
    return want.every(([k, v]) => have[k] === v);
  });
  if (!has) issues.push({ path: `${path}/labels`, message: `no endpoint of cluster "${cluster}" has these labels` });
}
