/** Shared by the registry tests: a Registries on real Stats, a log that keeps its lines, waits on events. */
import { SharedState } from '../../src/shared/shared-state';
import { Stats, StatsRegistry } from '../../src/stats/stats';
import { Registries, registrySeries, validateRegistryConfig, type Subscription } from '../../src/registry';
import type { Logger } from '../../src/registry/types';

export interface Line { level: string; msg: string; fields: Record<string, unknown> }

export function memoryLog(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  return {
    lines,
    info: (fields, msg) => { lines.push({ level: 'info', msg, fields }); },
    warn: (fields, msg) => { lines.push({ level: 'warn', msg, fields }); },
  };
}

export interface TestRegistries {
  registries: Registries;
  stats: Stats;
  log: Logger & { lines: Line[] };
  /** A stat's value by name and labels. */
  stat(name: string, labels?: Record<string, string>): number;
  render(): string;
}

/** Registries from a config document (validated and defaulted like a config file), on real shared-memory Stats. */
export function makeRegistries(doc: Record<string, unknown>): TestRegistries {
  const { config, issues } = validateRegistryConfig(structuredClone(doc));
  if (issues.length) throw new Error(`test config invalid: ${JSON.stringify(issues)}`);
  const statsRegistry = new StatsRegistry();
  for (const key of registrySeries(config.registries)) statsRegistry.add(key);
  const shared = new SharedState();
  const stats = new Stats(shared, statsRegistry.keys);
  const log = memoryLog();
  const registries = new Registries(config, { stats, log });
  return {
    registries, stats, log,
    stat: (name, labels) => stats.get(stats.slot(name, labels)),
    render: () => statsRegistry.render(shared),
  };
}

/** Resolves when `sub` emits `event` and `pred` holds (checked at once too); rejects after `ms`. */
export function waitFor(sub: Subscription, what: string, pred: (s: Subscription) => boolean, ms = 5000, event = 'change'): Promise<number> {
  const start = Date.now();
  if (pred(sub)) return Promise.resolve(0);
  return new Promise((resolve, reject) => {
    const onEvent = () => { if (pred(sub)) { done(); resolve(Date.now() - start); } };
    const timer = setTimeout(() => { done(); reject(new Error(`timed out after ${ms} ms waiting for ${what}; endpoints now: ${sub.endpoints.map((e) => e.address).join(' ')}`)); }, ms);
    const done = () => { clearTimeout(timer); sub.off(event, onEvent); sub.off('stale', onEvent); sub.off('held', onEvent); };
    sub.on(event, onEvent);
    sub.on('stale', onEvent);
    sub.on('held', onEvent);
  });
}

export const addresses = (s: Subscription) => s.endpoints.map((e) => e.address).sort();

import net from 'node:net';
import { once } from 'node:events';

/**
 * A loopback TCP proxy in front of ZooKeeper, to take the registry's connection away while the
 * server (and every other client) goes on: `cut()` closes its connections and refuses new ones,
 * `blackhole()` keeps them open and forwards nothing (a server that stopped answering),
 * `restore()` forwards again.
 */
export class TcpProxy {
  mode: 'pass' | 'refuse' | 'blackhole' = 'pass';
  private readonly server: net.Server;
  private readonly conns = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: number) {
    this.server = net.createServer((down) => {
      if (this.mode === 'refuse') { down.destroy(); return; }
      const up = net.connect(this.target, '127.0.0.1');
      this.conns.add(down);
      this.conns.add(up);
      const forward = (from: net.Socket, to: net.Socket) => from.on('data', (d) => { if (this.mode === 'pass') to.write(d); });
      forward(down, up);
      forward(up, down);
      const end = () => { down.destroy(); up.destroy(); this.conns.delete(down); this.conns.delete(up); };
      down.on('close', end);
      up.on('close', end);
      down.on('error', end);
      up.on('error', end);
    });
  }

  async listen(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  cut(): void {
    this.mode = 'refuse';
    for (const c of this.conns) c.destroy();
  }

  blackhole(): void {
    this.mode = 'blackhole';
  }

  restore(): void {
    const wasBlackhole = this.mode === 'blackhole';
    this.mode = 'pass';
    // connections opened during the blackhole carry a half-done handshake: start over
    if (wasBlackhole) for (const c of this.conns) c.destroy();
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    this.server.close();
    await once(this.server, 'close');
  }
}
