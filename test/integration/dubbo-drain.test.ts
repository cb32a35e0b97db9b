/**
 * Drain, as Dubbo providers do it on shutdown: every downstream Dubbo connection gets a READONLY
 * event (an event request whose data is "R", one-way), so the consumer sends no new calls on it;
 * calls already received are answered; then the connection closes. Real Sluice, real consumers
 * (dubbo-remoting, reacting to "R" as Dubbo's HeaderExchangeHandler does), POST /drain.
 */
import t from 'tap';
import { adminPost, startSluice, waitFor } from '../helpers/harness';
import { Consumer, rawProvider, str, waitEvent } from './dubbo-peers';

function closed(c: Consumer, ms: number): Promise<unknown> {
  return c.closed ? Promise.resolve() : waitEvent(c.events, 'close', ms);
}

/** A provider that holds calls of method `hold`, and Sluice in front of it with long drain and request timeouts. */
async function providerAndSluice(extra: Record<string, unknown> = {}) {
  const p = await rawProvider({ holdMethod: 'hold' });
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${p.port}`] }],
    http: { requestTimeoutMs: 30_000 },
    drain: { timeoutMs: 30_000 },
    ...extra,
  });
  return { p, s };
}

t.test('POST /drain: READONLY event to every consumer, calls in flight answered, then each connection closes', async (t) => {
  const { p, s } = await providerAndSluice();
  const busy = await Consumer.connect(s.port('app'));
  const idle = await Consumer.connect(s.port('app'));
  // a consumer that does not answer heartbeats still gets closed, a little later
  const mute = await Consumer.connect(s.port('app'), { answerHeartbeats: false });
  t.teardown(async () => { for (const c of [busy, idle, mute]) c.close(); await s.stop(); await p.close(); });

  // (each worker has its own provider connection: the answer starts with that connection's index)
  t.match(await idle.call('hello', [str('i')]), { status: 20, value: /^\d:hello:i$/ });
  t.match(await mute.call('hello', [str('m')]), { status: 20, value: /^\d:hello:m$/ });
  const held = busy.call('hold', [str('h')]);
  await waitEvent(p.events, 'call', 10_000, (_c: unknown, m: string) => m === 'hold');

  // READONLY goes out when the drain begins, at the start of drain.periodMs
  t.equal((await adminPost(s.admin, '/drain')).status, 202);
  await waitEvent(busy.events, 'readonly', 10_000);
  t.notOk(busy.closed, 'the connection with a call in flight stays open');

  await closed(idle, 10_000);
  t.same(idle.log, ['answer 1000', 'readonly', 'heartbeat', 'close'], 'idle: READONLY, then closed once it answered the heartbeat behind it');
  await closed(mute, 10_000);
  t.same(mute.log, ['answer 1000', 'readonly', 'heartbeat', 'close'], 'a consumer that does not answer heartbeats is closed too');

  t.notOk(busy.closed, 'still open while its call is in flight');
  p.release();
  t.match(await held, { status: 20, value: /^\d:hold:h$/ }, 'the call received before the drain is answered');
  await closed(busy, 10_000);
  t.same(busy.log, ['readonly', 'heartbeat', 'answer 1000', 'close'], 'READONLY first, the answer, then the close');
});

t.test('calls pipelined in one segment, answered together while the connection drains: every answer reaches its caller before the close', async (t) => {
  const { p, s } = await providerAndSluice({ workers: { threads: 1 } });
  const c = await Consumer.connect(s.port('app'));
  t.teardown(async () => { c.close(); await s.stop(); await p.close(); });
  const n = 200;
  // every call in one write of the consumer's socket
  c.sock.cork();
  const answers = Array.from({ length: n }, (_, i) => c.call('hold', [str(`a${i}`)]));
  await new Promise((r) => setImmediate(r));
  c.sock.uncork();
  await waitFor(() => p.held() === n || null, 10_000, `${n} calls at the provider`);

  t.equal((await adminPost(s.admin, '/drain')).status, 202);
  await waitEvent(c.events, 'readonly', 10_000);
  // the provider answers them all at once: Sluice reads them in a few reads and answers each read in one write;
  // the last answer is also the moment the draining connection closes
  p.release();
  const got = await Promise.all(answers);
  let right = 0;
  for (let i = 0; i < n; i++) if (got[i].status === 20 && new RegExp(`^\\d:hold:a${i}$`).test(String(got[i].value))) right++;
  t.equal(right, n, 'every call answered with its own result');
  await closed(c, 10_000);
  t.same(c.log.filter((e) => !e.startsWith('answer')), ['readonly', 'heartbeat', 'close'], 'READONLY first, then the answers, then the close');
  t.equal(c.log.filter((e) => e.startsWith('answer')).length, n, `${n} answers before the close`);
  t.equal(c.log.at(-1), 'close');
});
