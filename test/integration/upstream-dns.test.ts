/**
 * An endpoint whose name does not resolve is not a refused connection: every protocol says so
 * with its own reason (`upstream_dns_failed`), and the log names the endpoint once per interval
 * with a count, however many requests fail. `.invalid` never resolves (RFC 6761).
 */
import net from 'node:net';
import t from 'tap';
import { h2Upstream, run, spawnSluice, withTestDefaults, writeConfig, type ChildSluice } from '../helpers/harness';
import { sluiceStarted } from '../helpers/netns';
import { Consumer, str } from './dubbo-peers';

const NAME = 'no-such-host.sluice-test.invalid';

function killIfRunning(child: ChildSluice): Promise<unknown> {
  if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  return child.exited;
}

t.test('a name that does not resolve: its own reason for every protocol, logged once per interval', async (t) => {
  const h2 = await h2Upstream((stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  t.teardown(() => h2.close());
  const file = writeConfig(withTestDefaults({
    listeners: [
      { name: 'web', address: '127.0.0.1:0', cluster: 'named' },
      { name: 'grpcish', address: '127.0.0.1:0', cluster: 'named-h2' },
      { name: 'rpc', address: '127.0.0.1:0', cluster: 'named' },
      { name: 'raw', address: '127.0.0.1:0', cluster: 'named', protocol: 'tcp' },
    ],
    // a slow resolver must answer before the connect timeout does
    clusters: [
      { name: 'named', protocol: 'http1', connectTimeoutMs: 30_000, endpoints: [`${NAME}:8080`] },
      { name: 'named-h2', protocol: 'http2', connectTimeoutMs: 30_000, endpoints: [`${NAME}:8080`] },
    ],
    tcp: { connectTimeoutMs: 30_000 },
  }));
  const child = spawnSluice(['start', '--config', file]);
  t.teardown(() => killIfRunning(child));
  const { ports } = await sluiceStarted(child);

  for (let i = 0; i < 3; i++) {
    const r = await run('curl', ['-sS', '-o', '/dev/null', '-D', '-', `http://127.0.0.1:${ports.web}/x`], 40_000);
    t.match(r.stdout, /^HTTP\/1\.1 503 /, 'HTTP/1: 503');
    t.match(r.stdout, /x-sluice-reason: upstream_dns_failed/i, 'HTTP/1: reason upstream_dns_failed');
  }
  const h = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-D', '-', `http://127.0.0.1:${ports.grpcish}/x`], 40_000);
  t.match(h.stdout, /^HTTP\/2 503/, 'HTTP/2 to an h2 cluster: 503');
  t.match(h.stdout, /x-sluice-reason: upstream_dns_failed/i, 'HTTP/2: reason upstream_dns_failed');

  const c = await Consumer.connect(ports.rpc);
  const a = await c.call('hello', [str('x')]);
  c.close();
  t.equal(a.status, 70, 'Dubbo: SERVICE_ERROR');
  t.match(String(a.error), /upstream_dns_failed/, 'Dubbo: the message names the reason');

  const raw = net.connect(ports.raw, '127.0.0.1');
  raw.on('error', () => {});
  raw.write('\x00opaque');
  await new Promise((r) => raw.on('close', r));
  t.pass('opaque TCP: the connection is closed');

  const lines = child.output().split('\n').filter((l) => l.includes('upstream name lookup failed'));
  t.ok(lines.length >= 1, 'logged');
  t.ok(lines.length <= 2, `once per interval, not once per request (${lines.length} lines for 6 failures)`);
  t.match(lines[0], new RegExp(`"host":"${NAME.replace(/\./g, '\\.')}"`), 'the line names the endpoint');
  t.notMatch(child.output(), /upstream_connect_failed/, 'never called a connect failure');
});
