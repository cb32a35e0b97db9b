/**
 * The authz filter: every request (routed or not) meets the policy before anything else acts on
 * it. Denied: the exchange's DENIED local reply, which each protocol renders in its own form.
 * Shadow-denied: counted, noted in the access log, logged (sampled), and let through.
 */
import { CONTINUE, STOP, type ConnectionView, type Filter, type FilterStatus, type RequestContext } from '../../exchange/filter';
import { DENIED } from '../../exchange/outcome';
import type { RequestView } from '../../exchange/request-view';
import type { Stats } from '../../stats/stats';
import { DEFAULT_ALLOW, DEFAULT_DENY, type Decision, type Policy } from './policy';

export const AUTHZ_ALLOWED = 'sluice_authz_allowed_total';
export const AUTHZ_DENIED = 'sluice_authz_denied_total';
export const AUTHZ_SHADOW_DENIED = 'sluice_authz_shadow_denied_total';

/** At most one shadow line per rule and worker in this time; the line says how many it stands for. */
export const SHADOW_LOG_INTERVAL_MS = 1000;

const SHADOW_LINE = 'authorization: would deny (shadow mode), let through';

interface RuleSlots { allowed: number; denied: number; shadowDenied: number }

export type ShadowLogger = (fields: Record<string, unknown>, msg: string) => void;

export class AuthzFilter implements Filter<null> {
  readonly name = 'authz';
  /** Runs on every request when there are rules; with none it is in no chain at all. */
  readonly global: boolean;
  private readonly slots = new Map<string, RuleSlots>();
  private readonly lastLine = new Map<string, { at: number; count: number }>();

  constructor(
    private readonly policy: Policy,
    private readonly stats: Stats,
    private readonly shadowLog: ShadowLogger,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.global = !policy.empty;
    for (const name of [...policy.rules.map((r) => r.name), DEFAULT_ALLOW, DEFAULT_DENY]) {
      this.slots.set(name, {
        allowed: stats.slot(AUTHZ_ALLOWED, { rule: name }),
        denied: stats.slot(AUTHZ_DENIED, { rule: name }),
        shadowDenied: stats.slot(AUTHZ_SHADOW_DENIED, { rule: name }),
      });
    }
  }

  onRequest(ctx: RequestContext): FilterStatus {
    const d = this.policy.decide(ctx.view);
    this.count(d);
    if (d.denied) {
      ctx.note('authz', 'denied');
      ctx.note('authzRule', d.rule);
      ctx.reply(DENIED);
      return STOP;
    }
    if (d.shadowRule !== null) {
      ctx.note('authz', 'shadow_denied');
      ctx.note('authzRule', d.shadowRule);
      this.sample(ctx.view, d.shadowRule);
    }
    return CONTINUE;
  }

  /**
   * A connection carried as opaque bytes counts as one request of its own: refused, it is closed
   * before it reaches an upstream, and a line is logged (sampled as shadow lines are).
   */
  onConnection(conn: ConnectionView): boolean {
    const d = this.policy.decideConnection(conn);
    this.count(d);
    if (d.denied) this.sample(conn, d.rule, 'authorization: opaque connection denied');
    else if (d.shadowRule !== null) this.sample(conn, d.shadowRule);
    return !d.denied;
  }

  private count(d: Decision): void {
    const s = this.slots.get(d.rule)!;
    this.stats.inc(d.denied ? s.denied : s.allowed);
    if (d.shadowRule !== null) this.stats.inc(this.slots.get(d.shadowRule)!.shadowDenied);
  }

  private sample(v: RequestView | ConnectionView, rule: string, msg = SHADOW_LINE): void {
    const now = this.now();
    const key = msg === SHADOW_LINE ? rule : `${msg} ${rule}`;
    let last = this.lastLine.get(key);
    if (last === undefined) this.lastLine.set(key, (last = { at: -Infinity, count: 0 }));
    last.count++;
    if (now - last.at < SHADOW_LOG_INTERVAL_MS) return;
    this.shadowLog({
      rule, requests: last.count, direction: v.direction, listener: v.listener, source: v.source.address, principal: v.source.principal,
      ...('protocol' in v ? { protocol: v.protocol, service: v.service, method: v.method, path: v.path } : { protocol: 'tcp' }),
    }, msg);
    last.at = now;
    last.count = 0;
  }
}
