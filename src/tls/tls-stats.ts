/**
 * Stats of link encryption, declared once. Per listener and per cluster families are allocated
 * with the listeners and clusters; those with a `reason` are listed here for a config.
 */
import { declareFamilies, series, type Stats } from '../stats/stats';
import { REFUSAL_REASONS } from './identity';
import { PEER_REFUSALS, type PeerRefusal } from './tls-runtime';

declareFamilies([
  { name: 'sluice_tls_inbound_handshake_total', kind: 'counter', by: 'listener', help: 'Inbound mTLS handshakes completed with an accepted client identity' },
  { name: 'sluice_tls_inbound_resumed_total', kind: 'counter', by: 'listener', help: 'Inbound mTLS handshakes that resumed a session' },
  { name: 'sluice_tls_inbound_refused_total', kind: 'counter', by: 'explicit', help: 'Inbound TLS connections refused, by reason (no client certificate, another CA, expired, no SPIFFE ID, ...)' },
  { name: 'sluice_tls_inbound_plaintext_total', kind: 'counter', by: 'listener', help: 'Plaintext connections served on a permissive port (callers that still need mTLS before the port can be strict)' },
  { name: 'sluice_tls_inbound_plaintext_refused_total', kind: 'counter', by: 'listener', help: 'Plaintext connections refused on a strict port' },
  { name: 'sluice_tls_inbound_plaintext_retired_total', kind: 'counter', by: 'listener', help: 'Plaintext connections retired (closed once their requests in flight completed) because their port became strict' },
  { name: 'sluice_tls_inbound_retired_total', kind: 'counter', by: 'listener', help: 'mTLS connections retired (told to go elsewhere after their requests in flight) because the identity or trust bundle they were made with was replaced (tls.retirement)' },
  { name: 'sluice_tls_outbound_retired_total', kind: 'counter', by: 'none', help: 'Upstream mTLS connections retired (drained with their pool) after a rotation (tls.retirement) or a change of the peer identities expected' },
  { name: 'sluice_tls_retire_forced_total', kind: 'counter', by: 'none', help: 'Retired connections (downstream or upstream) still open at tls.retirement.timeoutMs, closed then' },
  { name: 'sluice_tls_outbound_handshake_total', kind: 'counter', by: 'cluster', help: 'Upstream mTLS handshakes completed with an accepted peer identity' },
  { name: 'sluice_tls_outbound_resumed_total', kind: 'counter', by: 'cluster', help: 'Upstream mTLS handshakes that resumed a session' },
  { name: 'sluice_tls_outbound_refused_total', kind: 'counter', by: 'explicit', help: 'Upstream mTLS connections given up, by reason (peer identity not expected, another CA, ...)' },
  { name: 'sluice_tls_cert_rotations_total', kind: 'counter', by: 'none', help: 'Workload identities installed (the first one included)' },
  { name: 'sluice_tls_cert_refused_total', kind: 'counter', by: 'explicit', help: 'Workload identities refused (files or POST /certs), by reason; the one in force keeps serving' },
  { name: 'sluice_tls_cert_expiry_seconds', kind: 'gauge', by: 'none', help: 'Seconds until the workload certificate in force expires (-1: no identity installed)' },
]);

/** The series with a reason label, for a config's listeners and clusters. */
export function tlsSeries(config: { listeners: ReadonlyArray<{ name: string }>; clusters: ReadonlyArray<{ name: string }> }): string[] {
  const out: string[] = [];
  for (const l of config.listeners) for (const r of PEER_REFUSALS) out.push(series('sluice_tls_inbound_refused_total', { listener: l.name, reason: r }));
  for (const c of [...config.clusters.map((x) => x.name), 'original_dst']) {
    for (const r of PEER_REFUSALS) out.push(series('sluice_tls_outbound_refused_total', { cluster: c, reason: r }));
  }
  for (const r of REFUSAL_REASONS) out.push(series('sluice_tls_cert_refused_total', { reason: r }));
  return out;
}

/** Slots of one listener's refusal counters, by reason. */
export function refusalSlots(stats: Stats, label: 'listener' | 'cluster', name: string): Record<PeerRefusal, number> {
  const fam = label === 'listener' ? 'sluice_tls_inbound_refused_total' : 'sluice_tls_outbound_refused_total';
  return Object.fromEntries(PEER_REFUSALS.map((r) => [r, stats.slot(fam, { [label]: name, reason: r })])) as Record<PeerRefusal, number>;
}
