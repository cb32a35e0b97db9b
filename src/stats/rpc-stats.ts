/**
 * RPC stats per interface and method: calls, calls by status, duration histogram (seconds).
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
import { DURATION_BUCKETS, series } from './stats';
export const MAX_RPC_SERIES = 2000;
const FLUSH_MS = 1000;

export interface RpcCell {
  calls: number;
  /** status → calls */
  statuses: Record<string, number>;
  /** one count per bucket, plus +Inf last */
  buckets: number[];
  /** seconds */
  sum: number;
}

export type RpcDelta = Record<string, RpcCell>;

interface RpcMessage { type: 'rpc-delta'; protocol: string; delta: RpcDelta }

function key(iface: string, method: string): string {
  return `${iface}\u0000${method}`;
}

const OTHER = key('other', 'other');

function emptyCell(): RpcCell {
  return { calls: 0, statuses: {}, buckets: new Array(DURATION_BUCKETS.length + 1).fill(0), sum: 0 };
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

  /**
   * `status`: the response status (Dubbo: 20 OK, 31 timeout...), or 'oneway' for a call with no response.
   * `seconds`: from the call's arrival to its response.
   */
  record(iface: string, method: string, status: number | string, seconds: number): void {
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
    while (b < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[b]) b++;
    cell.buckets[b]++;
    cell.sum += seconds;
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
      cell.sum += d.sum;
    }
  }

  render(): string {
    let out = '';
    for (const [protocol, table] of this.cells) {
      if (table.size === 0) continue;
      const p = `sluice_${protocol}`;
      let calls = `# HELP ${p}_rq_total Calls by interface and method\n# TYPE ${p}_rq_total counter\n`;
      let statuses = `# HELP ${p}_rq_status_total Calls by interface, method and response status\n# TYPE ${p}_rq_status_total counter\n`;
      const h = `${p}_rq_duration_seconds`;
      let hist = `# HELP ${h} Call duration in seconds, from request to response\n# TYPE ${h} histogram\n`;
      for (const [k, cell] of table) {
        const [iface, method] = k.split('\u0000');
        const labels = { interface: iface, method };
        calls += `${series(`${p}_rq_total`, labels)} ${cell.calls}\n`;
        for (const [s, n] of Object.entries(cell.statuses)) statuses += `${series(`${p}_rq_status_total`, { ...labels, status: s })} ${n}\n`;
        let cumulative = 0;
        DURATION_BUCKETS.forEach((le, i) => {
          cumulative += cell.buckets[i];
          hist += `${series(`${h}_bucket`, { ...labels, le: String(le) })} ${cumulative}\n`;
        });
        cumulative += cell.buckets[DURATION_BUCKETS.length];
        hist += `${series(`${h}_bucket`, { ...labels, le: '+Inf' })} ${cumulative}\n`;
        hist += `${series(`${h}_sum`, labels)} ${Math.round(cell.sum * 1e6) / 1e6}\n`;
        hist += `${series(`${h}_count`, labels)} ${cell.calls}\n`;
      }
      out += calls + statuses + hist;
    }
    return out;
  }

  close(): void {
    this.channel.close();
  }
}
