/**
 * The addon's writeSome(fd, bytes, n): one write(2) on a socket's descriptor, as the held writes
 * use it (src/net/lent-write.ts). What the kernel took arrives in order; a full socket buffer is
 * 0, not an error; a reset peer is 0, not a throw (socket.write of the rest reports the error);
 * bad arguments are refused by name.
 */
import { once } from 'node:events';
import net from 'node:net';
import t, { type Test } from 'tap';
import { loadNative } from '../../src/net/native';

const native = loadNative();
const writeSome = native?.writeSome;

/** A connected pair on 127.0.0.1: `ours` (its descriptor is written to directly) and the peer. */
async function pair(t: Test): Promise<{ ours: net.Socket; fd: number; peer: net.Socket }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [[ours]] = await Promise.all([accepted, once(peer, 'connect')]);
  t.teardown(() => { ours.destroy(); peer.destroy(); });
  ours.on('error', () => {});
  peer.on('error', () => {});
  const fd = (ours as unknown as { _handle: { fd: number } })._handle.fd;
  return { ours, fd, peer };
}

/** Reads from `peer` until `n` bytes came (fails the test after 10 s). */
function readBytes(peer: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes in 10 s`)), 10_000);
    const onData = (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= n) { clearTimeout(timer); peer.off('data', onData); resolve(Buffer.concat(parts)); }
    };
    peer.on('data', onData);
    peer.resume();
  });
}

t.test('the addon has writeSome', async (t) => {
  t.ok(native, 'the addon loads');
  t.type(writeSome, 'function');
});

t.test('what the kernel took arrives, in order', { skip: !writeSome }, async (t) => {
  const { fd, peer } = await pair(t);
  const head = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello+unsent tail', 'latin1');
  const n = head.indexOf('+');
  t.equal(writeSome!(fd, head, n), n, 'all of the first n bytes taken');
  t.equal((await readBytes(peer, n)).toString('latin1'), head.subarray(0, n).toString('latin1'), 'exactly those bytes, nothing past n');
});

t.test('a full socket buffer is 0, and everything taken before it arrives', { skip: !writeSome }, async (t) => {
  const { fd, peer } = await pair(t);
  peer.pause();
  const chunk = Buffer.alloc(64 * 1024);
  let sent = 0;
  let zero = false;
  for (let i = 0; i < 4096 && !zero; i++) {
    chunk.fill(i & 0xff);
    const k = writeSome!(fd, chunk, chunk.length);
    if (k === 0) zero = true;
    else {
      sent += k;
      if (k < chunk.length) { zero = writeSome!(fd, chunk, chunk.length) === 0; break; }
    }
  }
  t.ok(zero, `the kernel stopped taking bytes after ${sent}: 0, no throw`);
  const got = await readBytes(peer, sent);
  t.equal(got.length, sent, 'every byte taken arrives');
  // chunk i was filled with i & 0xff: a byte in the wrong place shows as a wrong fill
  let bad = -1;
  for (let off = 0; off < sent && bad < 0; off += 4096) if (got[off] !== (Math.floor(off / chunk.length) & 0xff)) bad = off;
  t.equal(bad, -1, 'in order');
});

t.test('a peer that reset: 0, not a throw', { skip: !writeSome }, async (t) => {
  const { fd, peer, ours } = await pair(t);
  const closed = new Promise<void>((resolve) => ours.once('close', () => resolve())); // not once(): it rejects on 'error'
  peer.resetAndDestroy();
  const bytes = Buffer.alloc(1024, 1);
  let last = -1;
  // the first write after a RST may still be taken; the ones after it meet the reset
  for (let i = 0; i < 50 && last !== 0; i++) {
    last = writeSome!(fd, bytes, bytes.length);
    if (last !== 0) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(last, 0, 'a write on a reset connection took nothing');
  // Node's own write meets the error and closes the socket, as the held writes rely on
  const err = await new Promise<NodeJS.ErrnoException | null | undefined>((resolve) => ours.write(bytes, resolve));
  t.match(err?.code, /^(EPIPE|ECONNRESET)$/, 'socket.write of the rest reports it');
  await closed;
});

t.test('bad arguments are refused', { skip: !writeSome }, async (t) => {
  const { fd } = await pair(t);
  const b = Buffer.alloc(8);
  t.throws(() => writeSome!(fd, b, 9), { code: 'ERR_INVALID_ARG' }, 'n past the bytes');
  t.throws(() => writeSome!(-1, b, 1), { code: 'ERR_INVALID_ARG' }, 'a negative descriptor');
  t.throws(() => writeSome!(fd, new Uint16Array(4) as unknown as Uint8Array, 1), { code: 'ERR_INVALID_ARG' }, 'not bytes');
  t.throws(() => (writeSome as unknown as (fd: number) => number)(fd), { code: 'ERR_INVALID_ARG' }, 'missing arguments');
});
