/**
 * The project's own N-API addon (native/sluice-net.c): original destination,
 * dup and close of a descriptor. Node 20 cannot move a socket to a worker
 * thread, so the main thread duplicates the accepted descriptor and a worker
 * wraps the duplicate.
 */
import path from 'node:path';

export interface NativeNet {
  originalDst(fd: number): { address: string; port: number; family: 4 | 6 } | null;
  dup(fd: number): number;
  close(fd: number): void;
  /** RLIMIT_NOFILE, the soft limit raised to min(hard, max) first. */
  fdLimit(max: number): { soft: number; hard: number };
}

let cached: NativeNet | null | undefined;
let loadError: Error | null = null;

export function loadNative(): NativeNet | null {
  if (cached !== undefined) return cached;
  const candidates = [
    path.join(__dirname, '..', '..', '..', 'build', 'Release', 'sluice_net.node'),
    path.join(__dirname, '..', '..', 'build', 'Release', 'sluice_net.node'),
  ];
  for (const file of candidates) {
    try {
      cached = require(file) as NativeNet;
      return cached;
    } catch (err) {
      loadError = err as Error;
    }
  }
  cached = null;
  return cached;
}

export function nativeLoadError(): Error | null {
  return loadError;
}
