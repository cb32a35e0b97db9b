/**
 * What a micro benchmark prints about the run it is part of, and the CPU clock it may measure with.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/** The commit, read from .git without running git (SLUICE_COMMIT overrides). */
export function commit(): string {
  if (process.env.SLUICE_COMMIT) return process.env.SLUICE_COMMIT;
  try {
    let git = path.resolve(__dirname, '..', '..', '..', '.git');
    // a linked worktree: .git is a file naming its own git dir, whose refs live in the common one
    let common = git;
    if (statSync(git).isFile()) {
      git = path.resolve(path.dirname(git), readFileSync(git, 'utf8').trim().replace(/^gitdir: /, ''));
      common = path.resolve(git, readFileSync(path.join(git, 'commondir'), 'utf8').trim());
    }
    let head = readFileSync(path.join(git, 'HEAD'), 'utf8').trim();
    if (head.startsWith('ref: ')) {
      const ref = head.slice(5);
      try {
        head = readFileSync(path.join(common, ref), 'utf8').trim();
      } catch {
        const line = readFileSync(path.join(common, 'packed-refs'), 'utf8').split('\n').find((l) => l.endsWith(` ${ref}`));
        head = line ? line.split(' ')[0] : 'unknown';
      }
    }
    return head.slice(0, 12);
  } catch {
    return 'unknown';
  }
}

/** Process CPU time (user + system) in ms: tinybench's `now` when CPU time is measured. */
export function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
