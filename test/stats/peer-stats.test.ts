/**
 * The main thread's table of inbound traffic by peer identity: a bounded label set (listed
 * principals, none, other) whose counters never go back, and the plaintext callers remembered
 * most recent first, at most as many as configured.
 */
import t from 'tap';
import { PeerStatsTable } from '../../src/stats/peer-stats';

function table(topPrincipals: number, plaintextCallers = 3) {
  const tb = new PeerStatsTable(`peer-stats-test-${Math.random()}`, () => ({ topPrincipals, plaintextCallers }));
  t.teardown(() => tb.close());
  return tb;
}

function series(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^sluice_tls_inbound_peer_rq_total\{principal="([^"]*)",transport="([^"]*)"\} (\d+)$/.exec(line);
    if (m) out[`${m[1]}/${m[2]}`] = Number(m[3]);
  }
  return out;
}

const c = (rq: number, cx = 1) => ({ cx, rq });

t.test('the busiest principals fill the list; the rest are other; none is plaintext', async (t) => {
  const tb = table(2);
  tb.merge({ principals: { a: c(5), b: c(1), d: c(9), none: c(4) }, callers: {} });
  t.same(series(tb.render()), { 'none/plaintext': 4, 'other/mtls': 1, 'd/mtls': 9, 'a/mtls': 5 });
});

t.test('a listed principal stays; other never goes back when a place is filled later', async (t) => {
  const tb = table(2);
  tb.merge({ principals: { a: c(5) }, callers: {} });
  t.same(series(tb.render()), { 'none/plaintext': 0, 'other/mtls': 0, 'a/mtls': 5 });
  tb.merge({ principals: { b: c(3), d: c(2) }, callers: {} });
  // b takes the free place (it came after the last scrape: other never showed it); d is other
  t.same(series(tb.render()), { 'none/plaintext': 0, 'other/mtls': 2, 'a/mtls': 5, 'b/mtls': 3 });
  tb.merge({ principals: { d: c(100), a: c(1) }, callers: {} });
  t.same(series(tb.render()), { 'none/plaintext': 0, 'other/mtls': 102, 'a/mtls': 6, 'b/mtls': 3 }, 'the list is full: d stays in other');
});

t.test('a principal that other already showed keeps its past in other when it is listed', async (t) => {
  let top = 1;
  const tb = new PeerStatsTable('peer-stats-test-raise', () => ({ topPrincipals: top, plaintextCallers: 3 }));
  t.teardown(() => tb.close());
  tb.merge({ principals: { a: c(3), b: c(1) }, callers: {} });
  t.same(series(tb.render()), { 'none/plaintext': 0, 'other/mtls': 1, 'a/mtls': 3 });
  top = 2; // a reload raised tls.peerStats.topPrincipals
  tb.merge({ principals: { b: c(2) }, callers: {} });
  t.same(series(tb.render()), { 'none/plaintext': 0, 'other/mtls': 1, 'a/mtls': 3, 'b/mtls': 3 }, 'b listed with all it did; other does not go back');
});

t.test('topPrincipals 0: every principal is other', async (t) => {
  const tb = table(0);
  tb.merge({ principals: { a: c(2), b: c(3) }, callers: {} });
  t.same(series(tb.render()), { 'none/plaintext': 0, 'other/mtls': 5 });
});

t.test('plaintext callers: summed over workers, most recent first, the least recent forgotten', async (t) => {
  const tb = table(2, 3);
  const d = (listener: string, first: number, last: number, cx: number, rq: number) => ({ listener, first, last, cx, rq });
  tb.merge({ principals: {}, callers: { '10.0.0.1': d('in', 1000, 2000, 1, 5), '10.0.0.2': d('in', 1500, 1500, 1, 1) } });
  tb.merge({ principals: {}, callers: { '10.0.0.1': d('in', 900, 1800, 1, 2), '10.0.0.3': d('in', 3000, 3000, 1, 0) } });
  t.same(tb.plaintextCallers(), [
    { address: '10.0.0.3', listener: 'in', firstSeen: new Date(3000).toISOString(), lastSeen: new Date(3000).toISOString(), connections: 1, requests: 0 },
    { address: '10.0.0.1', listener: 'in', firstSeen: new Date(900).toISOString(), lastSeen: new Date(2000).toISOString(), connections: 2, requests: 7 },
    { address: '10.0.0.2', listener: 'in', firstSeen: new Date(1500).toISOString(), lastSeen: new Date(1500).toISOString(), connections: 1, requests: 1 },
  ]);
  tb.merge({ principals: {}, callers: { '10.0.0.4': d('in', 4000, 4000, 1, 1) } });
  t.same(tb.plaintextCallers().map((x) => x.address), ['10.0.0.4', '10.0.0.3', '10.0.0.1'], 'at most 3: the least recently seen went');
});
