/**
 * Inbound traffic by the caller's identity, and the plaintext callers seen recently: what an
 * operator reads before turning a port from permissive to strict.
 *
 * Principals and addresses are not known in advance, so, like the RPC stats, each worker counts
 * in a table of its own and sends what changed to the main thread about once a second; the main
 * thread adds it up, renders the counters and answers GET /plaintext-callers.
 *
 *   worker: connection() / request() ─▶ PeerStatsCollector ──delta (BroadcastChannel, 1 s)──▶ PeerStatsTable
 *                                                                      ├─▶ /stats  sluice_tls_inbound_peer_{cx,rq}_total
 *                                                                      └─▶ GET /plaintext-callers
 *
 * Bounded label set: at most `topPrincipals` principals are listed, chosen at each scrape, while
 * places are free, among those not listed yet by most requests; once listed, a principal stays,
 * so no series goes away. principal="other" sums the principals not listed (a principal listed
 * after other showed its traffic leaves that past in other, so other never goes back);
 * principal="none" is plaintext (no identity). The main thread keeps at most MAX_TRACKED
 * unlisted principals; beyond that their traffic goes straight to other.
 */
import { BroadcastChannel } from 'node:worker_threads';
import { series } from './stats';

const FLUSH_MS = 1000;
/** Distinct principals (or addresses) one worker sends in one delta; beyond: other / dropped. */
const MAX_DELTA_KEYS = 1024;
/** Unlisted principals the main thread keeps counts of. */
export const MAX_TRACKED = 10_000;
export const NONE = 'none';
export const OTHER = 'other';

interface Counts { cx: number; rq: number }
interface CallerDelta { listener: string; first: number; last: number; cx: number; rq: number }

interface PeerMessage {
  type: 'peer-delta';
  principals: Record<string, Counts>;
  callers: Record<string, CallerDelta>;
}

/** Worker side. */
export class PeerStatsCollector {
  private principals = new Map<string, Counts>();
  private callers = new Map<string, CallerDelta>();
  private readonly channel: BroadcastChannel;
  private readonly timer: NodeJS.Timeout;

  constructor(channelName: string, private readonly now: () => number = Date.now) {
    this.channel = new BroadcastChannel(channelName);
    (this.channel as unknown as { unref(): void }).unref();
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** An inbound connection accepted: over mTLS with `principal`, or plaintext (null) from `address`. */
  connection(listener: string, principal: string | null, address: string): void {
    this.count(principal ?? NONE).cx++;
    if (principal === null) { const c = this.caller(listener, address); if (c) c.cx++; }
  }

  /** An inbound request or RPC done; `principal` undefined: plaintext. */
  request(listener: string, principal: string | undefined, address: string): void {
    this.count(principal ?? NONE).rq++;
    if (principal === undefined) { const c = this.caller(listener, address); if (c) c.rq++; }
  }

  private count(principal: string): Counts {
    let c = this.principals.get(principal);
    if (!c) {
      const k = this.principals.size >= MAX_DELTA_KEYS ? OTHER : principal;
      c = this.principals.get(k);
      if (!c) this.principals.set(k, (c = { cx: 0, rq: 0 }));
    }
    return c;
  }

  private caller(listener: string, address: string): CallerDelta | null {
    const now = this.now();
    let c = this.callers.get(address);
    if (!c) {
      if (this.callers.size >= MAX_DELTA_KEYS) return null;
      this.callers.set(address, (c = { listener, first: now, last: now, cx: 0, rq: 0 }));
    }
    c.last = now;
    c.listener = listener;
    return c;
  }

  flush(): void {
    if (this.principals.size === 0 && this.callers.size === 0) return;
    const msg: PeerMessage = { type: 'peer-delta', principals: Object.fromEntries(this.principals), callers: Object.fromEntries(this.callers) };
    this.principals = new Map();
    this.callers = new Map();
    this.channel.postMessage(msg);
  }

  close(): void {
    this.flush();
    clearInterval(this.timer);
    this.channel.close();
  }
}

export interface PlaintextCaller {
  address: string;
  listener: string;
  firstSeen: string;
  lastSeen: string;
  connections: number;
  requests: number;
}

export interface PeerStatsLimits { topPrincipals: number; plaintextCallers: number }
/** tls.peerStats's defaults (the schema says them too). */
export const DEFAULT_PEER_LIMITS: PeerStatsLimits = Object.freeze({ topPrincipals: 20, plaintextCallers: 256 });

/** Main thread: the sums. */
export class PeerStatsTable {
  /** Listed principals (and none, other): rendered, never removed. */
  private readonly listed = new Map<string, Counts>([[NONE, { cx: 0, rq: 0 }], [OTHER, { cx: 0, rq: 0 }]]);
  /** Not listed yet: candidates at the next scrape; `shown`: what other has already rendered of them. */
  private readonly unlisted = new Map<string, Counts & { shown: Counts }>();
  /** By address, least recently seen first (a Map keeps insertion order: a caller seen again moves to the end). */
  private readonly callers = new Map<string, { listener: string; first: number; last: number; cx: number; rq: number }>();
  private readonly channel: BroadcastChannel;

  constructor(channelName: string, private readonly limits: () => PeerStatsLimits) {
    this.channel = new BroadcastChannel(channelName);
    this.channel.onmessage = (ev) => {
      const m = (ev as unknown as { data: PeerMessage }).data;
      if (m && m.type === 'peer-delta') this.merge(m);
    };
    (this.channel as unknown as { unref(): void }).unref();
  }

  merge(m: Pick<PeerMessage, 'principals' | 'callers'>): void {
    const other = this.listed.get(OTHER)!;
    for (const [p, d] of Object.entries(m.principals)) {
      let c = this.listed.get(p) ?? this.unlisted.get(p);
      if (c) { c.cx += d.cx; c.rq += d.rq; continue; }
      if (this.unlisted.size < MAX_TRACKED) { this.unlisted.set(p, { cx: d.cx, rq: d.rq, shown: { cx: 0, rq: 0 } }); continue; }
      other.cx += d.cx;
      other.rq += d.rq;
    }
    const max = this.limits().plaintextCallers;
    for (const [address, d] of Object.entries(m.callers)) {
      const c = this.callers.get(address);
      if (c) {
        this.callers.delete(address);
        c.last = Math.max(c.last, d.last);
        c.first = Math.min(c.first, d.first);
        c.cx += d.cx;
        c.rq += d.rq;
        c.listener = d.listener;
        this.callers.set(address, c);
      } else {
        this.callers.set(address, { ...d });
      }
    }
    while (this.callers.size > max) this.callers.delete(this.callers.keys().next().value as string);
  }

  /**
   * Unlisted principals with the most requests fill the free places of the list. One that other
   * already showed leaves its past in other, so that other never goes back.
   */
  private promote(): void {
    const free = this.limits().topPrincipals - (this.listed.size - 2);
    if (free <= 0 || this.unlisted.size === 0) return;
    const other = this.listed.get(OTHER)!;
    const best = [...this.unlisted].sort((a, b) => b[1].rq - a[1].rq || b[1].cx - a[1].cx).slice(0, free);
    for (const [p, c] of best) {
      this.unlisted.delete(p);
      other.cx += c.shown.cx;
      other.rq += c.shown.rq;
      this.listed.set(p, { cx: c.cx, rq: c.rq });
    }
  }

  render(): string {
    this.promote();
    // what unlisted principals did so far belongs to other until they are listed
    const other = { ...this.listed.get(OTHER)! };
    for (const c of this.unlisted.values()) { other.cx += c.cx; other.rq += c.rq; c.shown = { cx: c.cx, rq: c.rq }; }
    let cx = '# HELP sluice_tls_inbound_peer_cx_total Inbound connections by the caller\'s SPIFFE ID (none: plaintext; other: principals beyond tls.peerStats.topPrincipals)\n# TYPE sluice_tls_inbound_peer_cx_total counter\n';
    let rq = '# HELP sluice_tls_inbound_peer_rq_total Inbound requests and RPCs by the caller\'s SPIFFE ID (none: plaintext; other: principals beyond tls.peerStats.topPrincipals)\n# TYPE sluice_tls_inbound_peer_rq_total counter\n';
    for (const [p, c0] of this.listed) {
      const c = p === OTHER ? other : c0;
      const labels = { principal: p, transport: p === NONE ? 'plaintext' : 'mtls' };
      cx += `${series('sluice_tls_inbound_peer_cx_total', labels)} ${c.cx}\n`;
      rq += `${series('sluice_tls_inbound_peer_rq_total', labels)} ${c.rq}\n`;
    }
    return cx + rq;
  }

  /** The plaintext callers seen recently, the most recent first. */
  plaintextCallers(): PlaintextCaller[] {
    const out: PlaintextCaller[] = [];
    const list = [...this.callers].sort((a, b) => b[1].last - a[1].last);
    for (const [address, c] of list) {
      out.push({ address, listener: c.listener, firstSeen: new Date(c.first).toISOString(), lastSeen: new Date(c.last).toISOString(), connections: c.cx, requests: c.rq });
    }
    return out;
  }

  close(): void {
    this.channel.close();
  }
}
