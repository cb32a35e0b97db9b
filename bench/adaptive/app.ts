/**
 * The protected application of the overload benchmark: one Node HTTP server (one thread, so one
 * core is its whole capacity) with a cheap interface and an expensive one, both pure CPU.
 *
 *   node dist/bench/adaptive/app.js <cheapMs> <costlyMs>     prints {"port": N} once listening
 *
 *   GET /cheap    burns cheapMs of CPU (default 0.2)
 *   GET /costly   burns costlyMs of CPU (default 12)
 */
import http from 'node:http';

const cheapMs = Number(process.argv[2] ?? 0.2);
const costlyMs = Number(process.argv[3] ?? 12);

function burn(ms: number): number {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) x += Math.sqrt(x + 1);
  return x;
}

const server = http.createServer((req, res) => {
  const ms = req.url === '/costly' ? costlyMs : req.url === '/cheap' ? cheapMs : -1;
  if (ms < 0) { res.writeHead(404); res.end(); return; }
  burn(ms);
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 });
  res.end('ok\n');
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as { port: number }).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
