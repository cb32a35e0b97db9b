/**
 * Holds many idle HTTP/1.1 keep-alive connections open (memory-idle scenario).
 *
 *   node dist/bench/load/idle-client.js HOST PORT COUNT WINDOW TIMEOUT_MS
 *
 * Opens COUNT connections, at most WINDOW of them waiting for their answer at once; each sends one
 * GET, reads the whole response and then stays open, silent. Prints one JSON line when all are
 * idle (or TIMEOUT_MS passed), then answers commands read from stdin, one per line:
 *   status   one JSON line: how many are open, how many the peer closed
 *   close    close every connection, print a last JSON line, exit
 * Exits by itself after TIMEOUT_MS × 4 whatever happens.
 */
import net from 'node:net';
import readline from 'node:readline';

const [host, portS, countS, windowS, timeoutS] = process.argv.slice(2);
const port = Number(portS);
const count = Number(countS);
const window = Number(windowS);
const timeoutMs = Number(timeoutS);
if (!host || !(port > 0) || !(count > 0) || !(window > 0) || !(timeoutMs > 0)) {
  process.stderr.write('usage: idle-client HOST PORT COUNT WINDOW TIMEOUT_MS\n');
  process.exit(2);
}

const REQUEST = Buffer.from(`GET /idle HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: sluice-bench-idle\r\n\r\n`);
const sockets = new Set<net.Socket>();
const statuses: Record<string, number> = {};
let opened = 0;
let idle = 0;
let inFlight = 0;
let errors = 0;
let closedByPeer = 0;
let firstError = '';
let closing = false;
const t0 = Date.now();

function finishedResponse(buf: string): boolean {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(buf.slice(0, end));
  if (cl) return Buffer.byteLength(buf, 'latin1') >= end + 4 + Number(cl[1]);
  return /\r\n0\r\n\r\n$/.test(buf); // chunked
}

function openOne(): void {
  opened++;
  inFlight++;
  const s = net.connect(port, host);
  let buf = '';
  let answered = false;
  const done = () => { if (!answered) { answered = true; inFlight--; pump(); } };
  s.setNoDelay(true);
  s.on('connect', () => s.write(REQUEST));
  s.on('data', (d) => {
    if (answered) return;
    buf += d.toString('latin1');
    if (finishedResponse(buf)) {
      const st = /^HTTP\/1\.\d (\d{3})/.exec(buf)?.[1] ?? '???';
      statuses[st] = (statuses[st] ?? 0) + 1;
      idle++;
      buf = '';
      done();
    }
  });
  s.on('error', (err) => {
    errors++;
    if (!firstError) firstError = `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`;
  });
  s.on('close', () => {
    sockets.delete(s);
    if (answered && !closing) { closedByPeer++; idle--; }
    done();
  });
  sockets.add(s);
}

let reported = false;
function report(event: string): void {
  process.stdout.write(`${JSON.stringify({ event, opened, idle, open: sockets.size, closedByPeer, errors, firstError, statuses, ms: Date.now() - t0 })}\n`);
}

function pump(): void {
  while (inFlight < window && opened < count && Date.now() - t0 < timeoutMs) openOne();
  if (!reported && inFlight === 0 && (opened >= count || Date.now() - t0 >= timeoutMs)) {
    reported = true;
    report('ready');
  }
}

const guard = setTimeout(() => {
  if (!reported) { reported = true; report('ready'); }
}, timeoutMs);
guard.unref();
setTimeout(() => { report('exit-timeout'); process.exit(3); }, timeoutMs * 4).unref();

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'status') report('status');
  else if (cmd === 'close') {
    closing = true;
    for (const s of sockets) s.destroy();
    report('closed');
    process.exit(0);
  }
});
process.stdin.on('end', () => { closing = true; for (const s of sockets) s.destroy(); process.exit(0); });

pump();
