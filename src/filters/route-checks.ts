/**
 * Checks that several filters' route sections share: the document is read as the schema left
 * it (valid or not), so each helper looks only at values of the type it expects.
 */
import { compileMatchRegex } from '../config/match';
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

function checkRegex(issues: ConfigIssue[], path: string, m: unknown): void {
  if (!isObj(m) || typeof m.regex !== 'string') return;
  try { compileMatchRegex(m.regex); } catch (err) {
    issues.push({ path: `${path}/regex`, message: `is not a valid regular expression: ${(err as Error).message}` });
  }
}

/**
 * The checks of the route match language the schema cannot express, on a section that holds its
 * fields (a route's `match`, an authorization rule): the listener named exists, regexes compile,
 * header names are tokens. `path` is the section's.
 */
export function checkMatch(issues: ConfigIssue[], path: string, m: Obj, listenerNames: ReadonlySet<string>): void {
  if (typeof m.listener === 'string' && !listenerNames.has(m.listener)) {
    issues.push({ path: `${path}/listener`, message: `unknown listener "${m.listener}"` });
  }
  checkRegex(issues, `${path}/path`, m.path);
  checkRegex(issues, `${path}/service`, m.service);
  checkRegex(issues, `${path}/authority`, m.authority);
  if (isObj(m.headers)) {
    for (const [h, hm] of Object.entries(m.headers)) {
      const hp = `${path}/headers/${pointer(h)}`;
      if (!HEADER_NAME.test(h)) issues.push({ path: hp, message: 'is not a valid header name' });
      checkRegex(issues, hp, hm);
    }
  }
}

/** The names of the listeners a document declares (its default list when it names none). */
export function listenerNamesOf(doc: Obj): Set<string> {
  const out = new Set<string>();
  if (Array.isArray(doc.listeners)) for (const l of doc.listeners) if (isObj(l) && typeof l.name === 'string') out.add(l.name);
  return out;
}
