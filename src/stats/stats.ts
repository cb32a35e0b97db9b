/**
 * Stats: counters and gauges in shared memory, named once here.
 *
 * A series is a Prometheus series string, e.g. `sluice_upstream_rq_total{cluster="a"}`.
 * The main thread allocates one slot per series (append-only, so a slot never
 * changes meaning across config reloads) and ships the list of series with the
 * config; workers resolve the slots they need once per config and then only do
 * `Atomics.add` on the hot path.
 */
import type { SharedState } from '../shared/shared-state';
import { MAX_COUNTERS } from '../shared/shared-state';

export const PROTOCOLS = ['http1', 'http2', 'grpc', 'tls', 'dubbo', 'tcp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
export const RESPONSE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

type Kind = 'counter' | 'gauge';
interface Family { name: string; kind: Kind; help: string; by: 'none' | 'listener' | 'cluster' | 'protocol' | 'listener_protocol' | 'protocol_class' | 'cluster_class' }

/** Every stat Sluice has. Tests assert these full names. */
export const FAMILIES: readonly Family[] = [
  { name: 'sluice_downstream_cx_total', kind: 'counter', by: 'listener', help: 'Connections accepted' },
  { name: 'sluice_downstream_cx_active', kind: 'gauge', by: 'listener', help: 'Connections open now' },
  { name: 'sluice_downstream_cx_protocol_total', kind: 'counter', by: 'listener_protocol', help: 'Connections by detected protocol' },
  { name: 'sluice_downstream_cx_sniff_timeout_total', kind: 'counter', by: 'listener', help: 'Connections that said nothing within tcp.sniffTimeoutMs, or only bytes that cannot be HTTP within http.headerTimeoutMs (opaque TCP)' },
  { name: 'sluice_downstream_cx_header_timeout_total', kind: 'counter', by: 'listener', help: 'Connections closed because their first bytes, which may still become an HTTP request, did not complete one within http.headerTimeoutMs' },
  { name: 'sluice_downstream_cx_refused_total', kind: 'counter', by: 'listener', help: 'Connections closed because they spoke no protocol the listener takes (protocol: http or dubbo, opaque: refuse)' },
  { name: 'sluice_downstream_protocol_error_total', kind: 'counter', by: 'protocol', help: 'Connections or requests refused for malformed input' },
  { name: 'sluice_downstream_rq_total', kind: 'counter', by: 'protocol', help: 'Requests received' },
  { name: 'sluice_downstream_rq_active', kind: 'gauge', by: 'protocol', help: 'Requests in flight' },
  { name: 'sluice_downstream_rq_xx_total', kind: 'counter', by: 'protocol_class', help: 'Responses sent, by class' },
  { name: 'sluice_downstream_rq_no_route_total', kind: 'counter', by: 'protocol', help: 'Requests with no route' },
  { name: 'sluice_downstream_rq_timeout_total', kind: 'counter', by: 'protocol', help: 'Requests that hit a header or idle timeout' },
  { name: 'sluice_upstream_cx_total', kind: 'counter', by: 'cluster', help: 'Upstream connections opened' },
  { name: 'sluice_upstream_cx_active', kind: 'gauge', by: 'cluster', help: 'Upstream connections open now' },
  { name: 'sluice_upstream_cx_connect_fail_total', kind: 'counter', by: 'cluster', help: 'Upstream connect failures' },
  { name: 'sluice_upstream_rq_total', kind: 'counter', by: 'cluster', help: 'Requests sent upstream' },
  { name: 'sluice_upstream_rq_active', kind: 'gauge', by: 'cluster', help: 'Upstream requests in flight' },
  { name: 'sluice_upstream_rq_xx_total', kind: 'counter', by: 'cluster_class', help: 'Upstream responses, by class' },
  { name: 'sluice_upstream_rq_timeout_total', kind: 'counter', by: 'cluster', help: 'Upstream requests that timed out' },
  { name: 'sluice_upstream_rq_reset_total', kind: 'counter', by: 'cluster', help: 'Upstream responses cut off by the upstream' },
  { name: 'sluice_upstream_rq_pending_overflow_total', kind: 'counter', by: 'cluster', help: 'Requests refused because the pending queue was full' },
  { name: 'sluice_upstream_cx_replaced_total', kind: 'counter', by: 'cluster', help: 'Multiplexed upstream connections taken out of use because they stopped answering (calls timed out, heartbeat unanswered)' },
  { name: 'sluice_upstream_rq_moved_total', kind: 'counter', by: 'cluster', help: 'Calls moved off an upstream connection that stopped answering, before they were written to it' },
  { name: 'sluice_worker_restarts_total', kind: 'counter', by: 'none', help: 'Workers that died and were replaced' },
  { name: 'sluice_handoff_failed_total', kind: 'counter', by: 'none', help: 'Connections the main thread could not hand to a worker' },
  { name: 'sluice_config_reload_total', kind: 'counter', by: 'none', help: 'Configs applied after startup' },
  { name: 'sluice_config_reload_failed_total', kind: 'counter', by: 'none', help: 'Configs refused' },
  { name: 'sluice_capture_active', kind: 'gauge', by: 'none', help: '1 when transparent capture (original destination recovery) is available' },
];

const FAMILY = new Map(FAMILIES.map((f) => [f.name, f]));

export function series(name: string, labels?: Record<string, string>): string {
  if (!labels) return name;
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`);
  return `${name}{${parts.join(',')}}`;
}

/** Main thread: the append-only list of series. */
export class StatsRegistry {
  readonly keys: string[] = [];
  private readonly index = new Map<string, number>();

  constructor() {
    for (const f of FAMILIES) {
      if (f.by === 'none') this.add(f.name);
      if (f.by === 'protocol') for (const p of PROTOCOLS) this.add(series(f.name, { protocol: p }));
      if (f.by === 'protocol_class') for (const p of PROTOCOLS) for (const c of RESPONSE_CLASSES) this.add(series(f.name, { protocol: p, class: c }));
    }
  }

  add(key: string): number {
    let i = this.index.get(key);
    if (i === undefined) {
      i = this.keys.length;
      if (i >= MAX_COUNTERS) throw new Error(`more than ${MAX_COUNTERS} stat series`);
      this.keys.push(key);
      this.index.set(key, i);
    }
    return i;
  }

  addListener(name: string): void {
    for (const f of FAMILIES) {
      if (f.by === 'listener') this.add(series(f.name, { listener: name }));
      if (f.by === 'listener_protocol') for (const p of PROTOCOLS) this.add(series(f.name, { listener: name, protocol: p }));
    }
  }

  addCluster(name: string): void {
    for (const f of FAMILIES) {
      if (f.by === 'cluster') this.add(series(f.name, { cluster: name }));
      if (f.by === 'cluster_class') for (const c of RESPONSE_CLASSES) this.add(series(f.name, { cluster: name, class: c }));
    }
  }

  /** Prometheus text exposition, summed across workers by construction. */
  render(shared: SharedState): string {
    const byFamily = new Map<string, string[]>();
    this.keys.forEach((key, i) => {
      const brace = key.indexOf('{');
      const fam = brace < 0 ? key : key.slice(0, brace);
      let lines = byFamily.get(fam);
      if (!lines) byFamily.set(fam, (lines = []));
      lines.push(`${key} ${isGaugeSeries(key) ? shared.gauge(i) : Atomics.load(shared.counters, i)}`);
    });
    let out = '';
    for (const [fam, lines] of byFamily) {
      const f = FAMILY.get(fam);
      if (f) out += `# HELP ${fam} ${f.help}\n# TYPE ${fam} ${f.kind}\n`;
      out += lines.join('\n') + '\n';
    }
    return out;
  }
}

/** Any thread: resolve series once, bump them on the hot path. */
export function isGaugeSeries(key: string): boolean {
  const brace = key.indexOf('{');
  return FAMILY.get(brace < 0 ? key : key.slice(0, brace))?.kind === 'gauge';
}

export class Stats {
  private readonly index: Map<string, number>;
  /** 1 where the slot is a gauge this thread keeps in its own row. */
  private readonly rowed: Uint8Array;
  private readonly gauges: Uint8Array;
  private readonly base: number;

  /** `row`: the worker's gauge row (SharedState.claimGaugeRow), or -1 to write gauges in common. */
  constructor(private readonly shared: SharedState, keys: readonly string[], row = -1) {
    this.index = new Map(keys.map((k, i) => [k, i]));
    this.gauges = Uint8Array.from(keys, (k) => (isGaugeSeries(k) ? 1 : 0));
    this.rowed = row >= 0 ? this.gauges : new Uint8Array(keys.length);
    this.base = row >= 0 ? row * MAX_COUNTERS : 0;
  }

  /** Slot of a series; -1 if unknown (then inc/dec are no-ops, never a crash). */
  slot(name: string, labels?: Record<string, string>): number {
    return this.index.get(series(name, labels)) ?? -1;
  }

  inc(slot: number): void {
    if (slot < 0) return;
    if (this.rowed[slot] === 1) Atomics.add(this.shared.gaugeRows, this.base + slot, 1n);
    else Atomics.add(this.shared.counters, slot, 1n);
  }

  add(slot: number, by: number): void {
    if (slot < 0) return;
    if (this.rowed[slot] === 1) Atomics.add(this.shared.gaugeRows, this.base + slot, BigInt(by));
    else Atomics.add(this.shared.counters, slot, BigInt(by));
  }

  dec(slot: number): void {
    if (slot < 0) return;
    if (this.rowed[slot] === 1) Atomics.sub(this.shared.gaugeRows, this.base + slot, 1n);
    else Atomics.sub(this.shared.counters, slot, 1n);
  }

  set(slot: number, v: number): void {
    if (slot >= 0) Atomics.store(this.shared.counters, slot, BigInt(v));
  }

  /** The value as /stats shows it: a gauge summed over every row. */
  get(slot: number): number {
    if (slot < 0) return 0;
    return Number(this.gauges[slot] === 1 ? this.shared.gauge(slot) : Atomics.load(this.shared.counters, slot));
  }
}
