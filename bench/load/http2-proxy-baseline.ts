/**
 * The http2-proxy library as a baseline for the http2 scenario (`--node-floor`): a node:http2
 * server whose requests http2-proxy forwards to the HTTP/1.1 upstream with keep-alive. One
 * thread, no routing, no stats: what the stack's HTTP/2 proxy helper costs on its own.
 *
 *   node dist/bench/load/http2-proxy-baseline.js LISTEN_PORT UPSTREAM_HTTP1_PORT
 */
import http from 'node:http';
import http2 from 'node:http2';
import proxy from 'http2-proxy';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
if (!(listenPort > 0) || !(upstreamPort > 0)) {
  process.stderr.write('usage: http2-proxy-baseline LISTEN_PORT UPSTREAM_HTTP1_PORT\n');
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const server = http2.createServer();
server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
  proxy.web(req, res, { hostname: '127.0.0.1', port: upstreamPort, onReq: async (_r, options) => http.request({ ...options, agent }) }, (err) => {
    if (err && !res.headersSent) { res.statusCode = 502; res.end(); }
  });
});
server.listen(listenPort, '127.0.0.1');
