/**
 * Peers for the mTLS tests: a Dubbo provider that answers every call with the
 * x-forwarded-client-cert attachment the sidecar gave it ('none' without one).
 */
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { remoting, str } from '../integration/dubbo-peers';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const protocol: any = require('dubbo-remoting/lib/protocol');

/** `delayMs`: how long each answer takes (a call in flight for that long). */
export async function xfccProvider(delayMs = 0): Promise<{ port: number; calls: () => number; close(): void }> {
  let calls = 0;
  const server = net.createServer((sock) => {
    const enc = remoting.encoder({});
    enc.pipe(sock);
    let buf = Buffer.alloc(0);
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
        const frame = buf.subarray(0, 16 + buf.readUInt32BE(12));
        buf = buf.subarray(frame.length);
        const msg = protocol.decode(frame, {});
        if (msg.packetType !== 'request') continue;
        calls++;
        const answer = () => enc.writeResponse(msg, { appResponse: str(String(msg.data.requestProps?.['x-forwarded-client-cert'] ?? 'none')), isError: false });
        if (delayMs > 0) setTimeout(answer, delayMs); else answer();
      }
    });
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, calls: () => calls, close: () => server.close() };
}
