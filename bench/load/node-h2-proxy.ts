/**
 * The floor for any proxy built on node:http2: h2c in, h2c out, one thread, no routing, no
 * filters, no stats. Only for the http2 scenario's `--node-floor` baseline.
 *
 *   node dist/bench/load/node-h2-proxy.js LISTEN_PORT UPSTREAM_PORT
 */
import http2 from 'node:http2';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
if (!(listenPort > 0) || !(upstreamPort > 0)) {
  process.stderr.write('usage: node-h2-proxy LISTEN_PORT UPSTREAM_PORT\n');
  process.exit(2);
}

let up = http2.connect(`http://127.0.0.1:${upstreamPort}`);
const reconnect = () => { up = http2.connect(`http://127.0.0.1:${upstreamPort}`); up.on('close', reconnect); up.on('error', () => {}); };
up.on('close', reconnect);
up.on('error', () => {});

const server = http2.createServer();
server.on('stream', (down, h) => {
  const req = up.request({ ':method': h[':method'], ':path': h[':path'], ':authority': h[':authority'], ':scheme': 'http' }, { endStream: true });
  req.on('response', (rh) => {
    const out: http2.OutgoingHttpHeaders = { ':status': rh[':status'] };
    if (rh['content-type']) out['content-type'] = rh['content-type'];
    if (!down.destroyed) down.respond(out);
  });
  req.on('data', (d: Buffer) => { if (!down.destroyed) down.write(d); });
  req.on('end', () => { if (!down.destroyed) down.end(); });
  req.on('error', () => down.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  down.on('error', () => req.close());
});
server.listen(listenPort, '127.0.0.1');
