/**
 * Stats: counters, gauges and histograms in shared memory, named once here.
 *
 * A series is a Prometheus series string, e.g. `sluice_upstream_rq_total{cluster="a"}`.
 * The main thread allocates one slot per series (append-only, so a slot never
 * changes meaning across config reloads) and ships the list of series with the
 * config; workers resolve the slots they need once per config and then only do
 * `Atomics.add` on the hot path.
 *
 * A histogram is a run of consecutive slots, allocated together:
 *
 *   base + 0 .. base + B-1   requests that fell in bucket i (≤ le[i], > le[i-1]), not cumulative
 *   base + B                 requests above the last bound (+Inf)
 *   base + B + 1             sum of the observed values, in millionths (µs for seconds)
 *
 * An observation is two Atomics.add (its bucket and the sum). /stats makes the buckets cumulative
 * and takes `_count` from the +Inf bucket, so a scrape never shows a count that disagrees with
 * its buckets, and every worker's observations add up like counters do.
 */
import type { SharedState } from '../shared/shared-state';
import { declareRegion, type SharedMemory } from '../shared/shared-memory';

export const MAX_COUNTERS = 1 << 16;
/** Workers that get a gauge row of their own; more than that share the common counters. */
export const GAUGE_ROWS = 32;

/** Counters and the common part of each gauge; slot i is the series registry.keys[i]. */
const COUNTERS = declareRegion({ name: 'stats.counters', kind: 'bigint64', count: MAX_COUNTERS });
/** Row r holds one worker's share of every gauge, so that its share can be dropped when it dies. */
const GAUGE_ROW_SHARES = declareRegion({ name: 'stats.gauge_rows', kind: 'bigint64', count: GAUGE_ROWS * MAX_COUNTERS });
/** The threadId holding gauge row r, 0 when free. */
const GAUGE_ROW_OWNER = declareRegion({ name: 'stats.gauge_row_owner', kind: 'int32', count: GAUGE_ROWS });

/** The stats regions of a thread's shared memory. */
export function counters(memory: SharedMemory): BigInt64Array {
  return memory.region(COUNTERS);
}

/** Worker: take a free gauge row for this thread; -1 when all are taken. */
export function claimGaugeRow(shared: SharedState, threadId: number): number {
  const owner = shared.memory.region(GAUGE_ROW_OWNER);
  for (let r = 0; r < GAUGE_ROWS; r++) {
    if (Atomics.compareExchange(owner, r, 0, threadId) === 0) return r;
  }
  return -1;
}

/** The gauge row a thread holds, -1 when none. */
export function gaugeRowOf(shared: SharedState, threadId: number): number {
  const owner = shared.memory.region(GAUGE_ROW_OWNER);
  for (let r = 0; r < GAUGE_ROWS; r++) if (Atomics.load(owner, r) === threadId) return r;
  return -1;
}

/** Main thread, once a worker is gone: drop its share of every gauge and free its row. */
export function releaseGaugeRow(shared: SharedState, threadId: number): boolean {
  const owner = shared.memory.region(GAUGE_ROW_OWNER);
  const rows = shared.memory.region(GAUGE_ROW_SHARES);
  for (let r = 0; r < GAUGE_ROWS; r++) {
    if (Atomics.load(owner, r) !== threadId) continue;
    rows.fill(0n, r * MAX_COUNTERS, (r + 1) * MAX_COUNTERS);
    Atomics.store(owner, r, 0);
    return true;
  }
  return false;
}

/** A gauge's value: the common part plus every row's share. */
export function gaugeValue(shared: SharedState, slot: number): bigint {
  const rows = shared.memory.region(GAUGE_ROW_SHARES);
  let v = Atomics.load(counters(shared.memory), slot);
  for (let r = 0; r < GAUGE_ROWS; r++) v += Atomics.load(rows, r * MAX_COUNTERS + slot);
  return v;
}

export const PROTOCOLS = ['http1', 'http2', 'grpc', 'tls', 'dubbo', 'tcp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
export const RESPONSE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** Protocols made of requests (or calls), which get durations and byte counts. */
export const REQUEST_PROTOCOLS = ['http1', 'http2', 'grpc', 'dubbo'] as const;
export type RequestProtocol = (typeof REQUEST_PROTOCOLS)[number];
/** Upper bounds of the duration buckets, in seconds (Prometheus `le`). */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;
/** gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED); anything else counts as 2 (UNKNOWN). */
export const GRPC_STATUS_COUNT = 17;
export const LOGS = ['access', 'process'] as const;

type Kind = 'counter' | 'gauge' | 'histogram';
/**
 * How a family is labelled, and so when its series are allocated: at start (none, protocol, ...),
 * per listener or cluster of a config, or `route`: per route that uses the filter counting it
 * (labels `route` and what else the filter adds), as its module's routeSeries lists them; `rule`:
 * per rule of a filter's top-level section (label `rule`), as its module's configSeries lists them;
 * `explicit`: series its module lists for a config (src/tls/tls-stats.ts).
 */
type By = 'none' | 'explicit' | 'listener' | 'cluster' | 'protocol' | 'listener_protocol' | 'protocol_class' | 'cluster_class' | 'request_protocol' | 'grpc_status' | 'log' | 'route' | 'rule'
  // per registry of the config (src/registry/stats.ts registrySeries), and by skip reason
  | 'registry' | 'registry_reason';
export interface Family { name: string; kind: Kind; help: string; by: By; buckets?: readonly number[] }

/** Every stat of the core. Filters declare theirs (declareFamilies); tests assert these full names. */
export const FAMILIES: Family[] = [
  { name: 'sluice_downstream_cx_total', kind: 'counter', by: 'listener', help: 'Connections accepted' },
  { name: 'sluice_downstream_cx_active', kind: 'gauge', by: 'listener', help: 'Connections open now' },
  { name: 'sluice_downstream_cx_protocol_total', kind: 'counter', by: 'listener_protocol', help: 'Connections by detected protocol' },
  { name: 'sluice_downstream_cx_sniff_timeout_total', kind: 'counter', by: 'listener', help: 'Connections that said nothing within tcp.sniffTimeoutMs, or only bytes that cannot be HTTP within http.headerTimeoutMs (opaque TCP)' },
  { name: 'sluice_downstream_cx_header_timeout_total', kind: 'counter', by: 'listener', help: 'Connections closed because their first bytes, which may still become an HTTP request, did not complete one within http.headerTimeoutMs' },
  { name: 'sluice_downstream_cx_refused_total', kind: 'counter', by: 'listener', help: 'Connections closed because they spoke no protocol the listener takes (protocol: http or dubbo, opaque: refuse)' },
  { name: 'sluice_downstream_protocol_error_total', kind: 'counter', by: 'protocol', help: 'Connections or requests refused for malformed input' },
  { name: 'sluice_downstream_rq_total', kind: 'counter', by: 'protocol', help: 'Requests received' },
  { name: 'sluice_downstream_rq_active', kind: 'gauge', by: 'protocol', help: 'Requests in flight' },
  { name: 'sluice_downstream_rq_xx_total', kind: 'counter', by: 'protocol_class', help: 'Responses sent, by class (gRPC: by the class of the grpc-status mapped to HTTP; a response cut off mid-way counts in none)' },
  { name: 'sluice_downstream_rq_grpc_status_total', kind: 'counter', by: 'grpc_status', help: 'gRPC calls by the grpc-status the client got (1 CANCELLED when the client went away first; calls cut off by the upstream count in none)' },
  { name: 'sluice_downstream_rq_duration_seconds', kind: 'histogram', by: 'request_protocol', buckets: DURATION_BUCKETS, help: 'Time from the start of a request to the end of its response, in seconds' },
  { name: 'sluice_downstream_rq_rx_bytes_total', kind: 'counter', by: 'request_protocol', help: 'Request body bytes received from clients (Dubbo: request frames)' },
  { name: 'sluice_downstream_rq_tx_bytes_total', kind: 'counter', by: 'request_protocol', help: 'Response body bytes from upstreams sent to clients (Dubbo: response frames)' },
  { name: 'sluice_downstream_rq_no_route_total', kind: 'counter', by: 'protocol', help: 'Requests with no route' },
  { name: 'sluice_downstream_rq_timeout_total', kind: 'counter', by: 'protocol', help: 'Requests that hit a header or idle timeout' },
  { name: 'sluice_upstream_cx_total', kind: 'counter', by: 'cluster', help: 'Upstream connections opened' },
  { name: 'sluice_upstream_cx_active', kind: 'gauge', by: 'cluster', help: 'Upstream connections open now' },
  { name: 'sluice_upstream_cx_connect_fail_total', kind: 'counter', by: 'cluster', help: 'Upstream connect failures' },
  { name: 'sluice_upstream_rq_total', kind: 'counter', by: 'cluster', help: 'Requests sent upstream' },
  { name: 'sluice_upstream_rq_active', kind: 'gauge', by: 'cluster', help: 'Upstream requests in flight' },
  { name: 'sluice_upstream_rq_xx_total', kind: 'counter', by: 'cluster_class', help: 'Upstream responses, by class (gRPC: by the class of the grpc-status mapped to HTTP; a response cut off mid-way counts in none)' },
  { name: 'sluice_upstream_rq_timeout_total', kind: 'counter', by: 'cluster', help: 'Upstream requests that timed out' },
  { name: 'sluice_upstream_rq_reset_total', kind: 'counter', by: 'cluster', help: 'Upstream responses cut off by the upstream' },
  { name: 'sluice_upstream_rq_pending_overflow_total', kind: 'counter', by: 'cluster', help: 'Requests refused because the pending queue was full' },
  { name: 'sluice_upstream_cx_replaced_total', kind: 'counter', by: 'cluster', help: 'Multiplexed upstream connections taken out of use because they stopped answering (calls timed out, heartbeat unanswered)' },
  { name: 'sluice_upstream_rq_retry_total', kind: 'counter', by: 'cluster', help: 'Attempts after the first (retries), by the cluster of the failed attempt' },
  { name: 'sluice_upstream_rq_retry_active', kind: 'gauge', by: 'cluster', help: 'Requests in flight that are being retried (what a retry budget measures)' },
  { name: 'sluice_cluster_endpoints', kind: 'gauge', by: 'cluster', help: 'Endpoints the cluster has now: its config list, or the list that replaced it (admin API, registry)' },
  { name: 'sluice_cluster_endpoint_updates_total', kind: 'counter', by: 'cluster', help: 'Times the cluster\'s endpoint list was replaced or returned to the config\'s, without a config reload' },
  { name: 'sluice_upstream_rq_moved_total', kind: 'counter', by: 'cluster', help: 'Calls moved off an upstream connection that stopped answering, before they were written to it' },
  { name: 'sluice_worker_restarts_total', kind: 'counter', by: 'none', help: 'Workers that died and were replaced' },
  { name: 'sluice_downstream_cx_overflow_total', kind: 'counter', by: 'listener', help: 'Connections closed at once because the process was at its file descriptor budget' },
  { name: 'sluice_handoff_failed_total', kind: 'counter', by: 'none', help: 'Connections the main thread could not hand to a worker' },
  { name: 'sluice_handoff_requeued_total', kind: 'counter', by: 'none', help: 'Connections queued for a worker that died before it took them, handed to another' },
  { name: 'sluice_config_reload_total', kind: 'counter', by: 'none', help: 'Configs applied after startup' },
  { name: 'sluice_config_reload_failed_total', kind: 'counter', by: 'none', help: 'Configs refused' },
  { name: 'sluice_capture_active', kind: 'gauge', by: 'none', help: '1 when transparent capture (original destination recovery) is available' },
  { name: 'sluice_log_lines_dropped_total', kind: 'counter', by: 'log', help: 'Log lines dropped because the destination did not take them (buffer full, destination gone, or still held when the drain ended)' },
];

const FAMILY = new Map(FAMILIES.map((f) => [f.name, f]));

/**
 * Stats a module declares for itself (a filter's, in its own folder). Called when the module
 * loads, before any registry is made: every thread loads the same modules, so every thread
 * knows the same families.
 */
export function declareFamilies(list: readonly Family[]): void {
  for (const f of list) {
    if (FAMILY.has(f.name)) continue;
    FAMILIES.push(f);
    FAMILY.set(f.name, f);
  }
}

export function series(name: string, labels?: Record<string, string>): string {
  if (!labels) return name;
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`);
  return `${name}{${parts.join(',')}}`;
}

/** The series of a histogram's first bucket: where its run of slots starts. */
function firstBucket(name: string, buckets: readonly number[], labels?: Record<string, string>): string {
  return series(`${name}_bucket`, { ...labels, le: String(buckets[0]) });
}

interface HistogramSeries { name: string; labels: Record<string, string>; base: number; buckets: readonly number[] }

/** Main thread: the append-only list of series. */
export class StatsRegistry {
  readonly keys: string[] = [];
  private readonly index = new Map<string, number>();
  /** Histograms by the slot their run starts at. */
  private readonly histograms = new Map<number, HistogramSeries>();

  constructor() {
    for (const f of FAMILIES) {
      if (f.by === 'none') this.add(f.name);
      if (f.by === 'protocol') for (const p of PROTOCOLS) this.add(series(f.name, { protocol: p }));
      if (f.by === 'protocol_class') for (const p of PROTOCOLS) for (const c of RESPONSE_CLASSES) this.add(series(f.name, { protocol: p, class: c }));
      if (f.by === 'grpc_status') for (let c = 0; c < GRPC_STATUS_COUNT; c++) this.add(series(f.name, { grpc_status: String(c) }));
      if (f.by === 'log') for (const l of LOGS) this.add(series(f.name, { log: l }));
      if (f.by === 'request_protocol') {
        for (const p of REQUEST_PROTOCOLS) {
          if (f.kind === 'histogram') this.addHistogram(f, { protocol: p });
          else this.add(series(f.name, { protocol: p }));
        }
      }
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

  /** A histogram's slots: one per bucket, +Inf, then the sum, consecutive. */
  private addHistogram(f: Family, labels: Record<string, string>): void {
    const buckets = f.buckets!;
    const base = this.keys.length;
    const keys = [
      ...buckets.map((le) => series(`${f.name}_bucket`, { ...labels, le: String(le) })),
      series(`${f.name}_bucket`, { ...labels, le: '+Inf' }),
      series(`${f.name}_sum`, labels),
    ];
    keys.forEach((k, i) => {
      if (this.add(k) !== base + i) throw new Error(`histogram ${k} is not in one run of slots`);
    });
    this.histograms.set(base, { name: f.name, labels, base, buckets });
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
    const values = counters(shared.memory);
    const byFamily = new Map<string, string[]>();
    const linesOf = (fam: string) => {
      let lines = byFamily.get(fam);
      if (!lines) byFamily.set(fam, (lines = []));
      return lines;
    };
    for (let i = 0; i < this.keys.length; i++) {
      const h = this.histograms.get(i);
      if (h) {
        renderHistogram(h, shared, linesOf(h.name));
        i += h.buckets.length + 1; // past +Inf and the sum
        continue;
      }
      const key = this.keys[i];
      const brace = key.indexOf('{');
      const fam = brace < 0 ? key : key.slice(0, brace);
      linesOf(fam).push(`${key} ${isGaugeSeries(key) ? gaugeValue(shared, i) : Atomics.load(values, i)}`);
    }
    let out = '';
    for (const [fam, lines] of byFamily) {
      const f = FAMILY.get(fam);
      if (f) out += `# HELP ${fam} ${f.help}\n# TYPE ${fam} ${f.kind}\n`;
      out += lines.join('\n') + '\n';
    }
    return out;
  }
}

function renderHistogram(h: HistogramSeries, shared: SharedState, out: string[]): void {
  const values = counters(shared.memory);
  let cumulative = 0n;
  const b = h.buckets.length;
  for (let i = 0; i <= b; i++) {
    cumulative += Atomics.load(values, h.base + i);
    out.push(`${series(`${h.name}_bucket`, { ...h.labels, le: i < b ? String(h.buckets[i]) : '+Inf' })} ${cumulative}`);
  }
  const sum = Number(Atomics.load(values, h.base + b + 1)) / 1e6;
  out.push(`${series(`${h.name}_sum`, h.labels)} ${sum}`);
  out.push(`${series(`${h.name}_count`, h.labels)} ${cumulative}`);
}

/** Any thread: resolve series once, bump them on the hot path. */
export function isGaugeSeries(key: string): boolean {
  const brace = key.indexOf('{');
  return FAMILY.get(brace < 0 ? key : key.slice(0, brace))?.kind === 'gauge';
}

/** One histogram's run of slots; observe() is two Atomics.add. A missing histogram (base -1) ignores everything. */
export class Histogram {
  constructor(private readonly counters: BigInt64Array, readonly base: number, private readonly buckets: readonly number[]) {}

  observe(v: number): void {
    if (this.base < 0) return;
    const b = this.buckets;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    Atomics.add(this.counters, this.base + i, 1n);
    Atomics.add(this.counters, this.base + b.length + 1, BigInt(Math.round(v * 1e6)));
  }
}

/** What a finished request adds to, per protocol; resolved once per Stats. */
interface RequestSlots { duration: Histogram; rx: number; tx: number }

/** gRPC status → the HTTP status it is charged as (Envoy's table): OK 200, UNAVAILABLE 503, ... */
const GRPC_TO_HTTP = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

export function httpStatusOfGrpc(code: number): number {
  return GRPC_TO_HTTP[code] ?? 500;
}

/** The grpc-status in a flat field list (name, value, ...), as a code 0-16; -1 when there is none. */
export function grpcStatusIn(fields: readonly string[] | null): number {
  if (!fields) return -1;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i];
    if (name.length === 11 && name.toLowerCase() === 'grpc-status') {
      const v = fields[i + 1];
      const code = /^\d{1,3}$/.test(v) ? Number(v) : 2;
      return code < GRPC_STATUS_COUNT ? code : 2;
    }
  }
  return -1;
}

/** A protocol's request counters, resolved once per config. */
export interface ProtocolStats {
  rqTotal: number; rqActive: number; protocolError: number; noRoute: number; timeout: number;
  /** Indexed by status / 100. */
  rqClass: number[];
}

export class Stats {
  private readonly index: Map<string, number>;
  /** 1 where the slot is a gauge this thread keeps in its own row. */
  private readonly rowed: Uint8Array;
  private readonly gauges: Uint8Array;
  private readonly base: number;
  private requestSlots: Record<RequestProtocol, RequestSlots> | null = null;
  private grpcSlots: number[] | null = null;
  private readonly counters: BigInt64Array;
  private readonly gaugeRows: BigInt64Array;

  /** `row`: the worker's gauge row (claimGaugeRow), or -1 to write gauges in common. */
  constructor(private readonly shared: SharedState, keys: readonly string[], readonly row = -1) {
    this.counters = counters(shared.memory);
    this.gaugeRows = shared.memory.region(GAUGE_ROW_SHARES);
    this.index = new Map(keys.map((k, i) => [k, i]));
    this.gauges = Uint8Array.from(keys, (k) => (isGaugeSeries(k) ? 1 : 0));
    this.rowed = row >= 0 ? this.gauges : new Uint8Array(keys.length);
    this.base = row >= 0 ? row * MAX_COUNTERS : 0;
  }

  /** The shared memory these stats live in (other shared state of the same thread is found from it). */
  get memory(): SharedMemory {
    return this.shared.memory;
  }

  /** Slot of a series; -1 if unknown (then inc/dec are no-ops, never a crash). */
  slot(name: string, labels?: Record<string, string>): number {
    return this.index.get(series(name, labels)) ?? -1;
  }

  /** A histogram family's series with these labels (without `le`). */
  histogram(name: string, labels?: Record<string, string>): Histogram {
    const buckets = FAMILY.get(name)?.buckets ?? [0];
    return new Histogram(this.counters, this.index.get(firstBucket(name, buckets, labels)) ?? -1, buckets);
  }

  /** A request (or RPC) is over: its duration and body bytes, counted for its protocol. */
  requestDone(protocol: RequestProtocol, seconds: number, rxBytes: number, txBytes: number): void {
    const r = (this.requestSlots ??= this.resolveRequestSlots())[protocol];
    r.duration.observe(seconds);
    if (rxBytes > 0) this.add(r.rx, rxBytes);
    if (txBytes > 0) this.add(r.tx, txBytes);
  }

  /** A gRPC call ended with this status (0-16) as the client saw it. */
  grpcStatus(code: number): void {
    const slots = (this.grpcSlots ??= Array.from({ length: GRPC_STATUS_COUNT }, (_, c) => this.slot('sluice_downstream_rq_grpc_status_total', { grpc_status: String(c) })));
    this.inc(slots[code] ?? slots[2]);
  }

  private resolveRequestSlots(): Record<RequestProtocol, RequestSlots> {
    const of = (protocol: RequestProtocol): RequestSlots => ({
      duration: this.histogram('sluice_downstream_rq_duration_seconds', { protocol }),
      rx: this.slot('sluice_downstream_rq_rx_bytes_total', { protocol }),
      tx: this.slot('sluice_downstream_rq_tx_bytes_total', { protocol }),
    });
    return { http1: of('http1'), http2: of('http2'), grpc: of('grpc'), dubbo: of('dubbo') };
  }
  inc(slot: number): void {
    if (slot < 0) return;
    if (this.rowed[slot] === 1) Atomics.add(this.gaugeRows, this.base + slot, 1n);
    else Atomics.add(this.counters, slot, 1n);
  }

  add(slot: number, by: number): void {
    if (slot < 0) return;
    if (this.rowed[slot] === 1) Atomics.add(this.gaugeRows, this.base + slot, BigInt(by));
    else Atomics.add(this.counters, slot, BigInt(by));
  }

  dec(slot: number): void {
    if (slot < 0) return;
    if (this.rowed[slot] === 1) Atomics.sub(this.gaugeRows, this.base + slot, 1n);
    else Atomics.sub(this.counters, slot, 1n);
  }

  set(slot: number, v: number): void {
    if (slot >= 0) Atomics.store(this.counters, slot, BigInt(v));
  }

  /** The value as /stats shows it: a gauge summed over every row. */
  get(slot: number): number {
    if (slot < 0) return 0;
    return Number(this.gauges[slot] === 1 ? gaugeValue(this.shared, slot) : Atomics.load(this.counters, slot));
  }
}
