import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import net from 'node:net';
import { encodeRequest } from '../../src/protocols/dubbo';
import { get, httpUpstream, startSluice, waitFor } from '../helpers/harness';

t.test('one JSON line per request, written without waiting for a full buffer', async (t) => {
  const up = await httpUpstream((req, res) => { res.statusCode = req.url === '/missing' ? 404 : 200; res.end('hello'); });
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-access-')), 'access.log');
  const s = await startSluice({
    listeners: [{ name: 'app', address: '127.0.0.1:0', cluster: 'web' }],
    clusters: [{ name: 'web', endpoints: [`127.0.0.1:${up.port}`] }],
    accessLog: { enabled: true, path: file },
  });
  t.teardown(async () => { await s.stop(); await up.close(); });
  const base = `http://127.0.0.1:${s.port('app')}`;
  t.equal((await get(`${base}/ok?x=1`)).status, 200);
  t.equal((await get(`${base}/missing`)).status, 404);
  // two short lines are far below the write buffer: the periodic flush must bring them out
  const lines = await waitFor(() => {
    if (!existsSync(file)) return null;
    const l = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    return l.length >= 2 ? l : null;
  }, 10_000, 'two access log lines');
  const recs = lines.map((l) => JSON.parse(l));
  const ok = recs.find((r) => r.path === '/ok');
  const missing = recs.find((r) => r.path === '/missing');
  t.ok(ok && missing, 'a line for each request');
  t.match(ok, {
    protocol: 'http1', direction: 'outbound', listener: 'app', method: 'GET', path: '/ok', service: '127.0.0.1',
    status: 200, upstream: `127.0.0.1:${up.port}`, bytesOut: 5, source: '127.0.0.1',
  });
  t.type(ok.durationMs, 'number');
  t.type(ok.time, 'string');
  t.equal(missing.status, 404);
});

t.test('a Dubbo call gets its line too: interface, method, status, duration', async (t) => {
  // nothing listens on the endpoint: the call is answered by Sluice with SERVICE_ERROR (70)
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const deadPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'sluice-access-')), 'access.log');
  const s = await startSluice({
    listeners: [{ name: 'rpc', address: '127.0.0.1:0', cluster: 'pay' }],
    clusters: [{ name: 'pay', endpoints: [`127.0.0.1:${deadPort}`] }],
    accessLog: { enabled: true, path: file },
  });
  t.teardown(() => s.stop());
  const sock = net.connect(s.port('rpc'), '127.0.0.1');
  t.teardown(() => sock.destroy());
  let got = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
  sock.write(encodeRequest({ id: 7, service: 'com.bank.PayService', version: '1.0.0', method: 'transfer', args: [] }));
  await waitFor(() => got.length >= 16, 10_000, 'the Dubbo answer');
  t.equal(got[3], 70, 'answered with SERVICE_ERROR');
  const rec = await waitFor(() => {
    if (!existsSync(file)) return null;
    const line = readFileSync(file, 'utf8').split('\n').find((l) => l.includes('"dubbo"'));
    return line ? JSON.parse(line) : null;
  }, 10_000, 'the Dubbo access log line');
  t.match(rec, { protocol: 'dubbo', listener: 'rpc', service: 'com.bank.PayService', method: 'transfer', status: 70 });
  t.type(rec.durationMs, 'number');
});
