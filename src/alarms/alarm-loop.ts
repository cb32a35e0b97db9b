/**
 * Alarms on the main thread: one timer samples every alarm's signal each second from the shared
 * stats (counters and histograms every worker adds to) or the CPU source, steps its state
 * (evaluator.ts), and on a change logs, counts, POSTs the webhook and switches its action in the
 * overrides every worker reads (overrides.ts).
 *
 *   main thread (this file)                                    workers
 *   every intervalMs: sample ─▶ AlarmState.step ─▶ events      ratelimit filter: rate × factor
 *     fired/resolved: log, metrics, webhook POST (async)       exchange: route degraded ─▶ fallback
 *     actions in force ─▶ alarms.overrides (shared) ──────────▶ cluster forced open ─▶ circuit_open
 */
import { log } from '../log';
import type { SharedMemory } from '../shared/shared-memory';
import { openCpuSource, type CpuSource } from '../filters/adaptive/cpu-usage';
import { stableJson } from '../filters/ratelimit/slots';
import { DURATION_BUCKETS, REQUEST_PROTOCOLS, RESPONSE_CLASSES, series, type Stats } from '../stats/stats';
import { actionTarget, DEFAULT_FACTOR, DEFAULT_WEBHOOK_TIMEOUT_MS, type AlarmConfig } from './config';
import { AlarmState, type AlarmEvent, type Sample } from './evaluator';
import { FACTOR_UNIT, OverrideSlots, type OverrideTable } from './overrides';

/** Webhook POSTs in flight at once; more are dropped (and counted as failed). */
const MAX_WEBHOOKS_IN_FLIGHT = 64;

export interface AlarmLoopOptions {
  intervalMs?: number;
  now?: () => number;
  cpu?: () => CpuSource;
  post?: (url: string, body: string, timeoutMs: number) => Promise<void>;
}

interface Entry {
  readonly id: string;
  readonly state: AlarmState;
  webhookFailures: number;
  webhookSent: number;
}

const FAMILIES: ReadonlyArray<readonly [string, 'gauge' | 'counter', string]> = [
  ['sluice_alarm_firing', 'gauge', '1 while the alarm fires'],
  ['sluice_alarm_value', 'gauge', 'The alarm\'s signal over its window (NaN: no value yet)'],
  ['sluice_alarm_fired_total', 'counter', 'Times the alarm fired, since this process started'],
  ['sluice_alarm_action_active', 'gauge', '1 while the alarm\'s action is in force'],
  ['sluice_alarm_actions_total', 'counter', 'Times the alarm switched its action on'],
  ['sluice_alarm_webhook_failures_total', 'counter', 'Webhook POSTs that failed (error, timeout, status not 2xx, or too many in flight)'],
];

async function postJson(url: string, body: string, timeoutMs: number): Promise<void> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(timeoutMs) });
  await res.arrayBuffer().catch(() => undefined);
  if (res.status < 200 || res.status > 299) throw new Error(`webhook answered ${res.status}`);
}

export class AlarmLoop {
  private entries = new Map<string, Entry>();
  private readonly slots: OverrideSlots;
  private timer: NodeJS.Timeout | null = null;
  private cpu: CpuSource | null = null;
  /** Override words this loop set, and to what. */
  private written = new Map<number, number>();
  private inFlight = 0;
  private readonly now: () => number;
  private readonly post: NonNullable<AlarmLoopOptions['post']>;
  readonly intervalMs: number;

  constructor(memory: SharedMemory, private readonly stats: () => Stats, private readonly opts: AlarmLoopOptions = {}) {
    this.slots = new OverrideSlots(memory);
    this.now = opts.now ?? Date.now;
    this.post = opts.post ?? postJson;
    this.intervalMs = opts.intervalMs ?? 1000;
  }

  /** The override words of a config's action targets (published with it, before apply()). */
  publish(alarms: readonly AlarmConfig[]): OverrideTable {
    return this.slots.publish(alarms.flatMap((a) => (a.action ? [actionTarget(a.action)] : [])));
  }

  /** A config was published: alarms whose rule did not change keep their state. */
  apply(alarms: readonly AlarmConfig[]): void {
    const next = new Map<string, Entry>();
    for (const a of alarms) {
      const id = stableJson(a);
      const old = this.entries.get(a.name);
      next.set(a.name, old && old.id === id ? old : { id, state: new AlarmState(a, DURATION_BUCKETS), webhookFailures: 0, webhookSent: 0 });
    }
    for (const [name, e] of this.entries) {
      if (next.get(name) === e) continue;
      if (e.state.stop()) log.info({ alarm: name, action: e.state.config.action?.kind }, 'alarm: action switched off (the alarm was changed or removed)');
    }
    this.entries = next;
    if (alarms.some((a) => a.signal.kind === 'cpu_usage')) this.cpu ??= (this.opts.cpu ?? (() => openCpuSource()))();
    this.writeOverrides();
    if (alarms.length === 0) { this.stop(); return; }
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round: sample, step, act. Public for tests. */
  tick(): void {
    const now = this.now();
    const stats = this.stats();
    const cpu = this.cpu?.sample(now) ?? NaN;
    for (const [name, e] of this.entries) {
      let events: AlarmEvent[];
      try {
        events = e.state.step(this.sample(e.state.config, stats, now, cpu));
      } catch (err) {
        log.error({ err, alarm: name }, 'alarm: sampling failed');
        continue;
      }
      for (const ev of events) this.report(e, ev, now);
    }
    this.writeOverrides();
  }

  private sample(c: AlarmConfig, stats: Stats, at: number, cpu: number): Sample {
    const get = (n: string, l?: Record<string, string>) => stats.get(stats.slot(n, l));
    const cluster = c.signal.cluster;
    switch (c.signal.kind) {
      case 'request_rate':
        return { at, a: cluster ? get('sluice_upstream_rq_total', { cluster }) : sumOver((protocol) => get('sluice_downstream_rq_total', { protocol })), b: 0 };
      case 'error_ratio':
        if (cluster) {
          return {
            at, b: get('sluice_upstream_rq_total', { cluster }),
            a: get('sluice_upstream_rq_xx_total', { cluster, class: '5xx' }) + get('sluice_upstream_rq_timeout_total', { cluster }) + get('sluice_upstream_rq_reset_total', { cluster }),
          };
        }
        return {
          at,
          a: sumOver((protocol) => get('sluice_downstream_rq_xx_total', { protocol, class: '5xx' })),
          b: sumOver((protocol) => RESPONSE_CLASSES.reduce((n, cls) => n + get('sluice_downstream_rq_xx_total', { protocol, class: cls }), 0)),
        };
      case 'latency_p99_ms': {
        const buckets = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
        for (const protocol of REQUEST_PROTOCOLS) {
          if (c.signal.protocol !== undefined && c.signal.protocol !== protocol) continue;
          const h = stats.histogram('sluice_downstream_rq_duration_seconds', { protocol });
          if (h.base < 0) continue;
          for (let i = 0; i < buckets.length; i++) buckets[i] += stats.get(h.base + i);
        }
        return { at, a: 0, b: 0, buckets };
      }
      case 'cpu_usage':
        return { at, a: cpu, b: 0 };
    }
  }

  private report(e: Entry, ev: AlarmEvent, now: number): void {
    const c = e.state.config;
    const action = c.action ? actionTarget(c.action).replace('\t', ' ') : undefined;
    switch (ev.type) {
      case 'fired':
        log.warn({ alarm: c.name, signal: c.signal.kind, value: ev.value, threshold: ev.threshold, action }, 'alarm firing');
        this.webhook(e, { alarm: c.name, state: 'firing', value: ev.value, threshold: ev.threshold, at: new Date(now).toISOString(), action: this.actionJson(c) });
        break;
      case 'resolved':
        log.info({ alarm: c.name, signal: c.signal.kind, value: ev.value, threshold: ev.threshold }, 'alarm resolved');
        this.webhook(e, { alarm: c.name, state: 'resolved', value: ev.value, threshold: ev.threshold, at: new Date(now).toISOString(), action: this.actionJson(c) });
        break;
      case 'action_on':
        log.warn({ alarm: c.name, action, until: new Date(e.state.actionUntil).toISOString() }, 'alarm: action switched on');
        break;
      case 'action_off':
        log.info({ alarm: c.name, action }, 'alarm: action switched off');
        break;
    }
  }

  private actionJson(c: AlarmConfig): unknown {
    if (!c.action) return null;
    const { kind, rateLimit, factor, cluster, route, forMs } = c.action;
    return { kind, ...(rateLimit !== undefined ? { rateLimit, factor: factor ?? DEFAULT_FACTOR } : {}), ...(cluster !== undefined ? { cluster } : {}), ...(route !== undefined ? { route } : {}), forMs };
  }

  /** Fire and forget, bounded: a slow or dead webhook never holds the loop. */
  private webhook(e: Entry, body: Record<string, unknown>): void {
    const url = e.state.config.webhook;
    if (!url) return;
    if (this.inFlight >= MAX_WEBHOOKS_IN_FLIGHT) {
      e.webhookFailures++;
      log.warn({ alarm: body.alarm, state: body.state }, 'alarm webhook: too many POSTs in flight, this one is dropped');
      return;
    }
    this.inFlight++;
    e.webhookSent++;
    this.post(url, JSON.stringify(body), e.state.config.webhookTimeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS)
      .catch((err: unknown) => {
        e.webhookFailures++;
        log.warn({ alarm: body.alarm, state: body.state, err: err instanceof Error ? err.message : String(err) }, 'alarm webhook POST failed');
      })
      .finally(() => { this.inFlight--; });
  }

  /** The override words of the actions in force; the words of actions no longer in force go back to 0. */
  private writeOverrides(): void {
    const want = new Map<number, number>();
    for (const e of this.entries.values()) {
      const a = e.state.config.action;
      if (!a || !e.state.actionActive) continue;
      const w = this.slots.wordOf(actionTarget(a));
      if (w < 0) continue;
      const v = a.kind === 'tighten_rate_limit' ? Math.max(1, Math.round((a.factor ?? DEFAULT_FACTOR) * FACTOR_UNIT)) : 1;
      const before = want.get(w);
      want.set(w, before === undefined ? v : Math.min(before, v));
    }
    const view = this.slots.view;
    for (const [w] of this.written) if (!want.has(w)) Atomics.store(view, w, 0);
    for (const [w, v] of want) Atomics.store(view, w, v);
    this.written = want;
  }

  /** GET /alarms: each alarm and the actions in force. */
  view(): { alarms: unknown[]; actions: unknown[] } {
    const now = this.now();
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    const alarms: unknown[] = [];
    const actions: unknown[] = [];
    for (const e of this.entries.values()) {
      const s = e.state;
      const c = s.config;
      alarms.push({
        name: c.name, signal: c.signal, state: s.firing ? 'firing' : 'ok', value: s.value, threshold: s.threshold(now),
        ...(s.baseline !== null ? { baseline: s.baseline } : {}),
        since: iso(s.since), windowMs: c.windowMs, forMs: c.forMs, fired: s.fired,
        action: this.actionJson(c), actionActive: s.actionActive, actionUntil: s.actionActive ? iso(s.actionUntil) : null,
        // the origin only: a webhook's path or query often carries its token
        webhook: c.webhook ? { origin: new URL(c.webhook).origin, sent: e.webhookSent, failed: e.webhookFailures } : undefined,
      });
      if (s.actionActive && c.action) {
        actions.push({ alarm: c.name, ...(this.actionJson(c) as object), since: iso(s.since), until: s.firing ? 'the alarm resolves' : iso(s.actionUntil), earliestEnd: iso(s.actionUntil) });
      }
    }
    return { alarms, actions };
  }

  render(): string {
    if (this.entries.size === 0) return '';
    const lines = new Map<string, string[]>(FAMILIES.map(([n]) => [n, []]));
    const put = (name: string, value: number, labels: Record<string, string>) => lines.get(name)!.push(`${series(name, labels)} ${value}`);
    for (const e of this.entries.values()) {
      const s = e.state;
      const l = { alarm: s.config.name };
      put('sluice_alarm_firing', s.firing ? 1 : 0, l);
      put('sluice_alarm_value', s.value ?? NaN, l);
      put('sluice_alarm_fired_total', s.fired, l);
      put('sluice_alarm_webhook_failures_total', e.webhookFailures, l);
      if (s.config.action) {
        const la = { ...l, action: s.config.action.kind };
        put('sluice_alarm_action_active', s.actionActive ? 1 : 0, la);
        put('sluice_alarm_actions_total', s.actions, la);
      }
    }
    let out = '';
    for (const [name, kind, help] of FAMILIES) out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n${lines.get(name)!.join('\n')}\n`;
    return out;
  }
}

function sumOver(f: (protocol: string) => number): number {
  let n = 0;
  for (const p of REQUEST_PROTOCOLS) n += f(p);
  return n;
}
