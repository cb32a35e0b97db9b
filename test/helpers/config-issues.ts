/**
 * Config validation as tests see it: the issues a document is refused with, and an assertion that
 * it is refused with exactly one, at a path, saying what is wrong.
 */
import type { Test } from 'tap';
import { buildConfig } from '../../src/config/config';
import { ConfigError, type ConfigIssue } from '../../src/errors';

export type Doc = Record<string, unknown>;

export function issuesOf(doc: Doc): ConfigIssue[] {
  try { buildConfig(doc); } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a ConfigError, but the config was accepted');
}

export function refuses(t: Test, doc: Doc, path: string, msg: RegExp): void {
  const issues = issuesOf(doc);
  t.same(issues.map((i) => i.path), [path], `one issue, at ${path}: ${JSON.stringify(issues)}`);
  t.match(issues[0]?.message ?? '', msg);
}
