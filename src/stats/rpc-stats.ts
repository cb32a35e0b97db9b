/**
 * RPC stats per interface and method: calls, calls by status, latency histogram.
 *
 * Which interfaces and methods exist is not known in advance (any that a caller
 * names), so these series cannot have fixed slots in shared memory. Each worker
 * counts in a table of its own and sends what changed to the main thread about
 * once a second (and when it drains); the main thread adds the deltas up and
 * renders them with the other stats. A worker that dies loses at most its last
 * second of these counts. The number of interface × method pairs is capped;
 * pairs beyond the cap are counted under interface="other", method="other".
 *
 *   worker: record() ─▶ RpcStatsCollector ──delta (BroadcastChannel, 1 s)──▶ RpcStatsTable ─▶ /stats
 */
import { BroadcastChannel } from 'node:worker_threads';
import { series } from './stats';

/** Upper bounds of the latency buckets, in ms (Prometheus `le`). */
export const LATENCY_BUCKETS_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000] as const;
export const MAX_RPC_SERIES = 2000;
const FLUSH_MS = 1000;

export interface RpcCell {
  calls: number;
  /** status → calls */
  statuses: Record<string, number>;
  /** one count per bucket, plus +Inf last */
  buckets: number[];
  sumMs: number;
}

export type RpcDelta = Record<string, RpcCell>;

interface RpcMessage { type: 'rpc-delta'; protocol: string; delta: RpcDelta }

function key(iface: string, method: string): string {
  return `${iface}\u0000${method}`;
}

const OTHER = key('other', 'other');

function emptyCell(): RpcCell {
  return { calls: 0, statuses: {}, buckets: new Array(LATENCY_BUCKETS_MS.length + 1).fill(0), sumMs: 0 };
}

/** Worker side: counts, and sends deltas to the main thread. */
export class RpcStatsCollector {
  private delta = new Map<string, RpcCell>();
  private readonly known = new Set<string>();
  private readonly channel: BroadcastChannel;
  private readonly timer: NodeJS.Timeout;

  constructor(channelName: string, private readonly protocol: string) {
    this.channel = new BroadcastChannel(channelName);
    (this.channel as unknown as { unref(): void }).unref();
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** `status`: the response status (Dubbo: 20 OK, 31 timeout...), or 'oneway' for a call with no response. */
  record(iface: string, method: string, status: number | string, ms: number): void {
    let k = key(iface, method);
    if (!this.known.has(k)) {
      if (this.known.size >= MAX_RPC_SERIES) k = OTHER;
      else this.known.add(k);
    }
    let cell = this.delta.get(k);
    if (!cell) this.delta.set(k, (cell = emptyCell()));
    cell.calls++;
    const s = String(status);
    cell.statuses[s] = (cell.statuses[s] ?? 0) + 1;
    let b = 0;
    while (b < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[b]) b++;
    cell.buckets[b]++;
    cell.sumMs += ms;
  }

  flush(): void {
    if (this.delta.size === 0) return;
    const delta: RpcDelta = Object.fromEntries(this.delta);
    this.delta = new Map();
    this.channel.postMessage({ type: 'rpc-delta', protocol: this.protocol, delta } satisfies RpcMessage);
  }

  close(): void {
    this.flush();
    clearInterval(this.timer);
    this.channel.close();
  }
}

/** Main thread: the sums, rendered as Prometheus text. */
export class RpcStatsTable {
  private readonly cells = new Map<string, Map<string, RpcCell>>();
  private readonly channel: BroadcastChannel;

  constructor(channelName: string) {
    this.channel = new BroadcastChannel(channelName);
    this.channel.onmessage = (ev) => {
      const m = (ev as unknown as { data: RpcMessage }).data;
      if (m && m.type === 'rpc-delta') this.merge(m.protocol, m.delta);
    };
    (this.channel as unknown as { unref(): void }).unref();
  }

  merge(protocol: string, delta: RpcDelta): void {
    let table = this.cells.get(protocol);
    if (!table) this.cells.set(protocol, (table = new Map()));
    for (const [k0, d] of Object.entries(delta)) {
      // several workers may each have seen their own first MAX_RPC_SERIES pairs: cap the sum too
      const k = table.has(k0) || table.size < MAX_RPC_SERIES ? k0 : OTHER;
      let cell = table.get(k);
      if (!cell) table.set(k, (cell = emptyCell()));
      cell.calls += d.calls;
      for (const [s, n] of Object.entries(d.statuses)) cell.statuses[s] = (cell.statuses[s] ?? 0) + n;
      d.buckets.forEach((n, i) => { cell!.buckets[i] += n; });
      cell.sumMs += d.sumMs;
    }
  }

  render(): string {
    let out = '';
    for (const [protocol, table] of this.cells) {
      if (table.size === 0) continue;
      const p = `sluice_${protocol}`;
      let calls = `# HELP ${p}_rq_total Calls by interface and method\n# TYPE ${p}_rq_total counter\n`;
      let statuses = `# HELP ${p}_rq_status_total Calls by interface, method and response status\n# TYPE ${p}_rq_status_total counter\n`;
      let hist = `# HELP ${p}_rq_time_ms Call latency in ms, from request to response\n# TYPE ${p}_rq_time_ms histogram\n`;
      for (const [k, cell] of table) {
        const [iface, method] = k.split('\u0000');
        const labels = { interface: iface, method };
        calls += `${series(`${p}_rq_total`, labels)} ${cell.calls}\n`;
        for (const [s, n] of Object.entries(cell.statuses)) statuses += `${series(`${p}_rq_status_total`, { ...labels, status: s })} ${n}\n`;
        let cumulative = 0;
        LATENCY_BUCKETS_MS.forEach((le, i) => {
          cumulative += cell.buckets[i];
          hist += `${series(`${p}_rq_time_ms_bucket`, { ...labels, le: String(le) })} ${cumulative}\n`;
        });
        cumulative += cell.buckets[LATENCY_BUCKETS_MS.length];
        hist += `${series(`${p}_rq_time_ms_bucket`, { ...labels, le: '+Inf' })} ${cumulative}\n`;
        hist += `${series(`${p}_rq_time_ms_sum`, labels)} ${Math.round(cell.sumMs * 1000) / 1000}\n`;
        hist += `${series(`${p}_rq_time_ms_count`, labels)} ${cell.calls}\n`;
      }
      out += calls + statuses + hist;
    }
    return out;
  }

  close(): void {
    this.channel.close();
  }
}
