/**
 * The authz filter: every request (routed or not) meets the policy before anything else acts on
 * it. Denied: the exchange's DENIED local reply, which each protocol renders in its own form.
 * Shadow-denied: counted, noted in the access log, logged (sampled), and let through.
 */
import { CONTINUE, STOP, type Filter, type FilterStatus, type RequestContext } from '../../exchange/filter';
import { DENIED } from '../../exchange/outcome';
import type { RequestView } from '../../exchange/request-view';
import type { Stats } from '../../stats/stats';
import { DEFAULT_ALLOW, DEFAULT_DENY, type Policy } from './policy';

export const AUTHZ_ALLOWED = 'sluice_authz_allowed_total';
export const AUTHZ_DENIED = 'sluice_authz_denied_total';
export const AUTHZ_SHADOW_DENIED = 'sluice_authz_shadow_denied_total';

/** At most one shadow line per rule and worker in this time; the line says how many it stands for. */
export const SHADOW_LOG_INTERVAL_MS = 1000;

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
    const s = this.slots.get(d.rule)!;
    if (d.denied) {
      this.stats.inc(s.denied);
      ctx.note('authz', 'denied');
      ctx.note('authzRule', d.rule);
      ctx.reply(DENIED);
      return STOP;
    }
    this.stats.inc(s.allowed);
    if (d.shadowRule !== null) {
      this.stats.inc(this.slots.get(d.shadowRule)!.shadowDenied);
      ctx.note('authz', 'shadow_denied');
      ctx.note('authzRule', d.shadowRule);
      this.sample(ctx.view, d.shadowRule);
    }
    return CONTINUE;
  }

  private sample(v: RequestView, rule: string): void {
    const now = this.now();
    let last = this.lastLine.get(rule);
    if (last === undefined) this.lastLine.set(rule, (last = { at: -Infinity, count: 0 }));
    last.count++;
    if (now - last.at < SHADOW_LOG_INTERVAL_MS) return;
    this.shadowLog({
      rule, requests: last.count, protocol: v.protocol, direction: v.direction, listener: v.listener,
      source: v.source.address, principal: v.source.principal, service: v.service, method: v.method, path: v.path,
    }, 'authorization: would deny (shadow mode), let through');
    last.at = now;
    last.count = 0;
  }
}
