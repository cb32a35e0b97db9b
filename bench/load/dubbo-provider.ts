/**
 * A minimal, fast Dubbo 2 provider for the load benchmarks: answers every two-way call with the
 * same small string value (its name), answers heartbeats, ignores one-way calls. Nothing is
 * decoded beyond the frame header: the answer is encoded once by encodeResponse and each reply is
 * a copy with the caller's id written in, so the provider costs as little CPU as it can.
 *
 *   node dist/bench/load/dubbo-provider.js NAME:PORT [NAME:PORT ...]
 *
 * Prints one JSON line {"event":"ready","ports":{NAME:PORT}} once every port listens. A malformed
 * frame closes that connection only.
 */
import net from 'node:net';
import {
  DubboFrameDecoder, encodeHeartbeatResponse, encodeResponse, rewriteIdParts, type DubboFrame,
} from '../../src/protocols/dubbo';

function serve(name: string, port: number): Promise<void> {
  // the protocol version the load client writes (2.0.2): the answer carries attachments, as Dubbo's
  const template = encodeResponse({ id: 0, value: name, requestDubboVersion: '2.0.2' });
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    let out: Buffer[] = [];
    const decoder = new DubboFrameDecoder({
      onFrame(frame: DubboFrame) {
        if (!frame.isRequest || !frame.twoWay) return;
        if (frame.isEvent) {
          out.push(encodeHeartbeatResponse(frame));
          return;
        }
        const reply = Buffer.allocUnsafe(template.length);
        template.copy(reply);
        rewriteIdParts(reply, frame.idHi, frame.idLo);
        out.push(reply);
      },
      onError() {
        socket.destroy();
      },
    });
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      if (out.length === 0 || socket.destroyed) return;
      // one write per chunk read: the replies to a burst of calls leave in one segment
      socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
      out = [];
    });
    socket.on('error', () => socket.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => resolve());
  });
}

async function main(): Promise<void> {
  const specs = process.argv.slice(2).map((a) => {
    const m = /^([A-Za-z0-9_.-]+):(\d+)$/.exec(a);
    if (!m || !(Number(m[2]) > 0)) throw new Error(`bad NAME:PORT "${a}"`);
    return { name: m[1], port: Number(m[2]) };
  });
  if (!specs.length) throw new Error('usage: dubbo-provider NAME:PORT [NAME:PORT ...]');
  await Promise.all(specs.map((s) => serve(s.name, s.port)));
  process.stdout.write(`${JSON.stringify({ event: 'ready', ports: Object.fromEntries(specs.map((s) => [s.name, s.port])) })}\n`);
}

main().catch((err) => {
  process.stderr.write(`dubbo-provider: ${(err as Error).message}\n`);
  process.exit(2);
});
