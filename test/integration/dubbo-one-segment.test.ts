/**
 * Dubbo frames are held to the end of the turn and written together (held-writes.ts), on both
 * sides. A consumer that sends many two-way calls, one-way calls and a heartbeat in one segment
 * and half-closes right behind them: every call reaches the provider, every answer and the
 * heartbeat's answer come back before the connection closes.
 */
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { startSluice } from '../helpers/harness';
import { rawProvider, SERVICE, str } from './dubbo-peers';

const Request = require('dubbo-remoting/lib/protocol/request');
const Invocation = require('dubbo-remoting/lib/protocol/invocation');

function frame(id: number, method: string, twoWay: boolean): Buffer {
  const req = new Request(id);
  req.isTwoWay = twoWay;
  req.data = new Invocation({ methodName: method, args: [str(`a${id}`)], attachments: { dubbo: '2.0.2', path: SERVICE, version: '1.0.0' } });
  return req.encode({ codecType: 'hessian2' });
}

function heartbeat(id: number): Buffer {
  const req = new Request(id);
  req.isTwoWay = true;
  req.isEvent = true;
  req.data = null;
  return req.encode({ codecType: 'hessian2' });
}

t.test('calls, one-way calls and a heartbeat in one segment, then a half-close: all of it goes through, answers before the close', async (t) => {
  const p = await rawProvider();
  const s = await startSluice({
    workers: { threads: 1 },
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'c' }],
    clusters: [{ name: 'c', endpoints: [`127.0.0.1:${p.port}`] }],
  });
  t.teardown(async () => { await s.stop(); await p.close(); });
  const parts: Buffer[] = [];
  for (let i = 1; i <= 40; i++) parts.push(frame(i, i % 4 === 0 ? 'notify' : 'hello', i % 4 !== 0));
  parts.push(heartbeat(1000));
  const c = net.connect({ port: s.port('app'), host: '127.0.0.1', allowHalfOpen: true });
  await once(c, 'connect');
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  c.end(Buffer.concat(parts));
  await once(c, 'end');
  const all = Buffer.concat(got);
  const answers: string[] = [];
  for (let at = 0; at + 16 <= all.length;) {
    const len = all.readUInt32BE(at + 12);
    const id = Number(all.readBigUInt64BE(at + 4));
    answers.push(`${(all[at + 2] & 0x20) !== 0 ? 'event' : 'answer'} ${id} ${all[at + 3]}`);
    at += 16 + len;
  }
  const want = [...Array.from({ length: 40 }, (_, k) => k + 1).filter((i) => i % 4 !== 0).map((i) => `answer ${i} 20`), 'event 1000 20'];
  t.same([...answers].sort(), [...want].sort(), 'every two-way call and the heartbeat answered, nothing for the one-way calls');
  const calls = p.conns.flatMap((x) => x.calls);
  t.equal(calls.filter((m) => m === 'hello').length, 30, 'every two-way call reached the provider');
  t.equal(calls.filter((m) => m === 'notify').length, 10, 'every one-way call reached the provider');
  c.destroy();
});
